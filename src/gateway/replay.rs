//! A socket whose first bytes were read already, for hyper: the direct
//! path (`direct.rs`) reads a new socket's first bytes to see whether it
//! serves them itself; when it does not, hyper gets the socket wrapped in
//! a [`Replay`], which hands those bytes back before anything more is read.
//!
//! ```text
//! read ─▶ [ bytes read by the direct path ] ─▶ then the socket itself
//! write ─▶ the socket (vectored, as it is)
//! ```
//!
//! After an upgrade, `transport::socket` takes the socket back out, with
//! whatever hyper did not read of the bytes replayed (normally nothing: one
//! read of hyper's takes them all).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A socket that first gives the bytes read from it before.
#[derive(Debug)]
pub struct Replay<S> {
    /// Read from the socket before, not yet handed on.
    read: Bytes,
    inner: S,
}

impl<S> Replay<S> {
    /// `inner`, whose reads begin with `read`.
    pub fn new(read: Bytes, inner: S) -> Self {
        Self { read, inner }
    }

    /// The socket, and what of the replayed bytes was not read yet (they
    /// come before anything the socket still holds).
    pub fn into_parts(self) -> (S, Bytes) {
        (self.inner, self.read)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read.is_empty() {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read[..n]);
            this.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn the_bytes_read_before_come_first_then_the_socket() {
        let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
        theirs.write_all(b" and the rest").await.unwrap();
        drop(theirs);
        let mut replay = Replay::new(Bytes::from_static(b"GET / HTTP/1.1"), ours);
        let mut got = Vec::new();
        replay.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"GET / HTTP/1.1 and the rest");
    }

    #[tokio::test]
    async fn a_small_read_takes_the_replay_in_pieces_and_keeps_the_rest() {
        let (ours, _theirs) = tokio::net::UnixStream::pair().unwrap();
        let mut replay = Replay::new(Bytes::from_static(b"abcdef"), ours);
        let mut two = [0u8; 2];
        assert_eq!(replay.read(&mut two).await.unwrap(), 2);
        assert_eq!(&two, b"ab");
        let (_socket, unread) = replay.into_parts();
        assert_eq!(unread, Bytes::from_static(b"cdef"), "not read yet: kept");
    }

    #[tokio::test]
    async fn writes_go_to_the_socket_as_they_are() {
        let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
        let mut replay = Replay::new(Bytes::from_static(b"unread"), ours);
        assert!(replay.is_write_vectored());
        let n = replay
            .write_vectored(&[IoSlice::new(b"HTTP/1.1 "), IoSlice::new(b"101")])
            .await
            .unwrap();
        assert_eq!(n, 12);
        replay.shutdown().await.unwrap();
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"HTTP/1.1 101");
    }
}
