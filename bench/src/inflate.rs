//! permessage-deflate for the load tool's clients (`--deflate`), without
//! teaching tungstenite the extension: a stream between the socket and
//! tungstenite that rewrites each compressed server frame (RSV1 set) into the
//! plain frame it stands for, so the client reads what an uncompressed
//! server would have sent, after paying the inflate a browser pays.
//!
//! The daemon compresses with `server_no_context_takeover` and never
//! fragments a compressed message, so each frame inflates on its own with a
//! fresh raw-deflate stream (RFC 7692 §7.2.2: the `00 00 ff ff` tail added
//! back). The server's HTTP answer passes through first. Bytes on the wire
//! are counted before the rewrite. Client frames go out as they are
//! (uncompressed, which the extension allows).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Largest inflated message accepted (the daemon's default max_message_size).
const MAX_INFLATED: usize = 2 * 1024 * 1024;

/// A client socket, inflating compressed frames when `--deflate` negotiated them.
pub struct Wire {
    tcp: TcpStream,
    /// Off: bytes pass through untouched.
    inflate: bool,
    /// The server's HTTP answer has been passed through: frames follow.
    upgraded: bool,
    /// Bytes read from the socket, not yet a whole frame.
    raw: Vec<u8>,
    /// Rewritten frames not yet handed to tungstenite.
    out: Vec<u8>,
    out_at: usize,
    wire_bytes: Arc<AtomicU64>,
}

impl Wire {
    /// Wraps `tcp`; `inflate` when the handshake offered permessage-deflate.
    pub fn new(tcp: TcpStream, inflate: bool, wire_bytes: Arc<AtomicU64>) -> Self {
        Self {
            tcp,
            inflate,
            upgraded: false,
            raw: Vec::new(),
            out: Vec::new(),
            out_at: 0,
            wire_bytes,
        }
    }

    /// Moves every whole frame of `raw` to `out`, inflated when compressed.
    fn rewrite(&mut self) -> io::Result<()> {
        if !self.upgraded {
            // The 101 and its headers go through as they are.
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Ok(());
            };
            self.out.extend(self.raw.drain(..end + 4));
            self.upgraded = true;
        }
        loop {
            let Some((head, len)) = frame_len(&self.raw) else {
                return Ok(());
            };
            if self.raw.len() < head + len {
                return Ok(());
            }
            let frame: Vec<u8> = self.raw.drain(..head + len).collect();
            if frame[0] & 0x40 == 0 {
                self.out.extend_from_slice(&frame);
                continue;
            }
            let data = inflate(&frame[head..])?;
            self.out.push(frame[0] & !0x40);
            match data.len() {
                n if n < 126 => self.out.push(n as u8),
                n if n < 65_536 => {
                    self.out.push(126);
                    self.out.extend_from_slice(&(n as u16).to_be_bytes());
                }
                n => {
                    self.out.push(127);
                    self.out.extend_from_slice(&(n as u64).to_be_bytes());
                }
            }
            self.out.extend_from_slice(&data);
        }
    }
}

/// A server frame's header length and payload length, once the header is in.
fn frame_len(bytes: &[u8]) -> Option<(usize, usize)> {
    let b1 = *bytes.get(1)?;
    let masked = if b1 & 0x80 != 0 { 4 } else { 0 };
    match b1 & 0x7f {
        126 => {
            let len = u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]);
            Some((4 + masked, usize::from(len)))
        }
        127 => {
            let ext: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
            Some((10 + masked, usize::try_from(u64::from_be_bytes(ext)).ok()?))
        }
        n => Some((2 + masked, usize::from(n))),
    }
}

/// One compressed message's payload, inflated (raw deflate, tail restored).
fn inflate(payload: &[u8]) -> io::Result<Vec<u8>> {
    let mut input = Vec::with_capacity(payload.len() + 4);
    input.extend_from_slice(payload);
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut inflater = Decompress::new(false);
    let mut out = Vec::with_capacity(payload.len() * 4 + 64);
    loop {
        let read = inflater.total_in() as usize;
        let status = inflater
            .decompress_vec(&input[read..], &mut out, FlushDecompress::Sync)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let done = inflater.total_in() as usize >= input.len();
        if done || status == Status::StreamEnd {
            return Ok(out);
        }
        if out.len() >= MAX_INFLATED {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "inflated message too large",
            ));
        }
        out.reserve(out.capacity().max(4096));
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.inflate {
            let before = buf.filled().len();
            let polled = Pin::new(&mut this.tcp).poll_read(cx, buf);
            let n = (buf.filled().len() - before) as u64;
            this.wire_bytes.fetch_add(n, Ordering::Relaxed);
            return polled;
        }
        loop {
            if this.out_at < this.out.len() {
                let n = (this.out.len() - this.out_at).min(buf.remaining());
                buf.put_slice(&this.out[this.out_at..this.out_at + n]);
                this.out_at += n;
                if this.out_at == this.out.len() {
                    this.out.clear();
                    this.out_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.tcp).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    let filled = read.filled();
                    this.wire_bytes
                        .fetch_add(filled.len() as u64, Ordering::Relaxed);
                    this.raw.extend_from_slice(filled);
                    this.rewrite()?;
                }
            }
        }
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_7692_example_inflates() {
        // RFC 7692 §7.2.3.1: "Hello" compressed, one unfragmented text frame.
        assert_eq!(
            inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).unwrap(),
            b"Hello"
        );
        assert_eq!(frame_len(&[0xc1, 0x07]), Some((2, 7)));
        assert_eq!(frame_len(&[0x81, 126, 1, 0]), Some((4, 256)));
        assert_eq!(frame_len(&[0x81]), None);
    }
}
