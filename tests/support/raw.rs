//! A WebSocket client made by hand over raw TCP, for hostile and silent
//! peers: it completes a real handshake, then writes whatever frame bytes a
//! test builds and reads the server's frames without ever answering them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A frame the server sent (servers never mask).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    /// FIN bit.
    pub fin: bool,
    /// RSV1 bit: compressed (permessage-deflate).
    pub rsv1: bool,
    /// Opcode, 0x0–0xF.
    pub opcode: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// The close code of a close frame with one.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 0x8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// The payload as text (lossy), for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// A raw client after a successful handshake.
pub struct RawClient {
    pub tcp: TcpStream,
    /// Bytes read but not yet parsed into frames.
    buf: Vec<u8>,
}

/// Sends a WebSocket handshake for `path_and_query` and waits (10 s at most)
/// for the 101; panics on any other answer.
pub async fn handshake(addr: SocketAddr, path_and_query: &str) -> RawClient {
    handshake_with(addr, path_and_query, "").await.0
}

/// As [`handshake`], with `extra` header lines (each ending in `\r\n`);
/// also returns the 101's head.
pub async fn handshake_with(
    addr: SocketAddr,
    path_and_query: &str,
    extra: &str,
) -> (RawClient, String) {
    handshake_then(addr, path_and_query, extra, &[]).await
}

/// As [`handshake_with`], sending `then` (client frames) in the same write
/// as the request, before the 101.
pub async fn handshake_then(
    addr: SocketAddr,
    path_and_query: &str,
    extra: &str,
    then: &[u8],
) -> (RawClient, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
    .into_bytes();
    request.extend_from_slice(then);
    tcp.write_all(&request).await.expect("send handshake");
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline.into(), tcp.read(&mut chunk))
            .await
            .expect("handshake answer within 10 s")
            .expect("read handshake answer");
        assert!(
            n > 0,
            "connection closed during the handshake: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "not a 101: {head}");
    let rest = buf.split_off(head_end);
    (RawClient { tcp, buf: rest }, head)
}

/// One client frame: FIN and opcode, masked with a fixed key when `mask`.
pub fn frame(fin: bool, opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    let mask_bit = if mask { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xffff {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if mask {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

impl RawClient {
    /// Writes raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("write frame");
    }

    /// The next whole frame from the server, or `None` at EOF (or a reset),
    /// within `limit`; panics when nothing complete arrives in time.
    pub async fn next_frame(&mut self, limit: Duration) -> Option<ServerFrame> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 16 * 1024];
            let read = tokio::time::timeout_at(deadline.into(), self.tcp.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("no frame or EOF from the server within {limit:?}"));
            match read {
                Ok(0) | Err(_) => {
                    assert!(
                        self.buf.is_empty(),
                        "connection ended inside a frame: {:?}",
                        self.buf
                    );
                    return None;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Every frame until the server ends the connection, within `limit`.
    pub async fn frames_until_eof(&mut self, limit: Duration) -> Vec<ServerFrame> {
        let deadline = Instant::now() + limit;
        let mut frames = Vec::new();
        while let Some(frame) = self
            .next_frame(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            frames.push(frame);
        }
        frames
    }
}

/// Parses one server frame from the front of `buf`.
fn parse_server_frame(buf: &[u8]) -> Option<(ServerFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "the server masked a frame");
    let (len, at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => (
            usize::try_from(u64::from_be_bytes(buf[2..10].try_into().unwrap())).unwrap(),
            10,
        ),
        126 | 127 => return None,
        n => (usize::from(n), 2),
    };
    if buf.len() < at + len {
        return None;
    }
    let frame = ServerFrame {
        fin: buf[0] & 0x80 != 0,
        rsv1: buf[0] & 0x40 != 0,
        opcode: buf[0] & 0x0f,
        payload: buf[at..at + len].to_vec(),
    };
    Some((frame, at + len))
}
