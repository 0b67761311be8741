//! A client's socket after the upgrade, split in two.
//!
//! tungstenite parses what the client sends; it gets the socket's read half
//! wrapped in [`ReadSide`], whose *write* side does not touch the socket but
//! queues tungstenite's own frames (pongs, close replies) in the connection's
//! outbox. Every byte towards the client therefore goes through one writer,
//! [`Writer`], which sends pre-encoded frames — shared between all recipients
//! of a publish — with vectored writes. Reading and writing never wait for
//! each other.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream, tcp, unix};

use crate::hub::ConnHandle;
use crate::outbox::Signal;

/// Frames written per `writev` at most.
const MAX_IOVECS: usize = 64;

/// The read half of a client socket.
pub enum ReadHalf {
    /// TCP.
    Tcp(tcp::OwnedReadHalf),
    /// Unix stream socket.
    Unix(unix::OwnedReadHalf),
}

/// The write half of a client socket.
pub enum WriteHalf {
    /// TCP.
    Tcp(tcp::OwnedWriteHalf),
    /// Unix stream socket.
    Unix(unix::OwnedWriteHalf),
}

/// Splits an upgraded socket; `None` when it is neither TCP nor Unix.
pub fn split(upgraded: hyper::upgrade::Upgraded) -> Option<(ReadHalf, WriteHalf, Bytes)> {
    use hyper_util::rt::TokioIo;
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let (r, w) = parts.io.into_inner().into_split();
            return Some((ReadHalf::Tcp(r), WriteHalf::Tcp(w), parts.read_buf));
        }
        Err(upgraded) => upgraded,
    };
    match upgraded.downcast::<TokioIo<UnixStream>>() {
        Ok(parts) => {
            let (r, w) = parts.io.into_inner().into_split();
            Some((ReadHalf::Unix(r), WriteHalf::Unix(w), parts.read_buf))
        }
        Err(_) => None,
    }
}

/// What tungstenite reads from and "writes" to.
pub struct ReadSide {
    half: ReadHalf,
    handle: Arc<ConnHandle>,
}

impl ReadSide {
    /// Wraps a read half; tungstenite's writes go to `handle`'s outbox.
    pub fn new(half: ReadHalf, handle: Arc<ConnHandle>) -> Self {
        Self { half, handle }
    }
}

impl AsyncRead for ReadSide {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().half {
            ReadHalf::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Unix(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ReadSide {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.handle.outbox.push_control(Bytes::copy_from_slice(buf));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What one turn of the writer did.
#[derive(Debug)]
pub enum Wrote {
    /// Some bytes went out.
    Bytes,
    /// The outbox carried a signal to act on.
    Signal(Signal),
}

/// The only writer of a client socket.
pub struct Writer {
    half: WriteHalf,
    bytes_out: Counter,
    /// Frames taken from the outbox, the first possibly partly written.
    batch: VecDeque<Bytes>,
}

impl Writer {
    /// A writer with nothing pending, counting what it writes in `bytes_out`.
    pub fn new(half: WriteHalf, bytes_out: Counter) -> Self {
        Self {
            half,
            bytes_out,
            batch: VecDeque::new(),
        }
    }

    /// Waits for frames or a signal, then writes once. Cancel-safe: dropping
    /// it between turns loses nothing (the batch stays here, the signal in the outbox).
    pub async fn turn(&mut self, handle: &ConnHandle) -> io::Result<Wrote> {
        loop {
            if let Some(signal) = handle.outbox.take_signal() {
                return Ok(Wrote::Signal(signal));
            }
            if !self.batch.is_empty() || handle.outbox.drain_into(&mut self.batch, MAX_IOVECS) {
                if let Some(signal) = handle.outbox.take_signal() {
                    return Ok(Wrote::Signal(signal));
                }
                if !self.batch.is_empty() {
                    break;
                }
            }
            handle.outbox.wait().await;
        }
        // A client that stops reading blocks this write; a signal (slow
        // consumer, close request) must still get through at once.
        // `write_batch` is cancel-safe: a write either happened or did not.
        let n = loop {
            tokio::select! {
                biased;
                n = self.write_batch() => break n?,
                () = handle.outbox.wait() => {
                    if let Some(signal) = handle.outbox.take_signal() {
                        return Ok(Wrote::Signal(signal));
                    }
                }
            }
        };
        handle.outbox.written(n);
        Ok(Wrote::Bytes)
    }

    async fn write_batch(&mut self) -> io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let count = self.batch.len().min(MAX_IOVECS);
        for (slot, frame) in slices.iter_mut().zip(self.batch.iter()) {
            *slot = IoSlice::new(frame);
        }
        let n = match &mut self.half {
            WriteHalf::Tcp(w) => w.write_vectored(&slices[..count]).await?,
            WriteHalf::Unix(w) => w.write_vectored(&slices[..count]).await?,
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.bytes_out.inc_by(n as u64);
        let mut left = n;
        while left > 0 {
            let Some(front) = self.batch.front_mut() else {
                break;
            };
            if front.len() <= left {
                left -= front.len();
                self.batch.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
        if self.batch.is_empty() && self.batch.capacity() > MAX_IOVECS {
            self.batch = VecDeque::new();
        }
        Ok(n)
    }

    /// Writes everything queued (frames taken and still in the outbox), for
    /// the end of a connection. The caller bounds it with a timeout.
    pub async fn flush_all(&mut self, handle: &ConnHandle) -> io::Result<()> {
        loop {
            handle.outbox.drain_into(&mut self.batch, MAX_IOVECS);
            if self.batch.is_empty() {
                return self.shutdown().await;
            }
            let n = self.write_batch().await?;
            handle.outbox.written(n);
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match &mut self.half {
            WriteHalf::Tcp(w) => w.shutdown().await,
            WriteHalf::Unix(w) => w.shutdown().await,
        }
    }
}
