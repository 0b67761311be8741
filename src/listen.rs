//! Binding the daemon's sockets: TCP and Unix listeners.
//!
//! Binding happens in `main` (or a test) before [`crate::run`], so tests can
//! bind port 0 and temporary paths. A Unix socket file left behind by a crash
//! is replaced; one that a live process still accepts on is an error, so two
//! daemons never steal each other's socket.

use std::io;
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::config::ListenAddr;

/// A bound WebSocket listener.
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix stream socket (nginx in front).
    Unix(UnixListener, PathBuf),
}

/// An accepted client socket and where it came from.
pub enum Accepted {
    /// A TCP client.
    Tcp(TcpStream, std::net::SocketAddr),
    /// A local process (a proxy) on the Unix socket.
    Unix(UnixStream),
}

impl Listener {
    /// Binds `addr`.
    pub async fn bind(addr: &ListenAddr) -> io::Result<Self> {
        match addr {
            ListenAddr::Tcp(a) => TcpListener::bind(a).await.map(Self::Tcp),
            ListenAddr::Unix(path) => Ok(Self::Unix(bind_unix(path).await?, path.clone())),
        }
    }

    /// Accepts one client.
    pub async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Self::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                // Frames are written whole; never wait to coalesce.
                stream.set_nodelay(true)?;
                Ok(Accepted::Tcp(stream, peer))
            }
            Self::Unix(l, _) => Ok(Accepted::Unix(l.accept().await?.0)),
        }
    }

    /// The bound address, for logs (`127.0.0.1:41234`, `unix:/run/ws.sock`).
    pub fn describe(&self) -> String {
        match self {
            Self::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "tcp:?".into()),
            Self::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }

    /// The TCP address, when this is a TCP listener.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Self::Tcp(l) => l.local_addr().ok(),
            Self::Unix(..) => None,
        }
    }
}

/// Binds a Unix socket at `path`, replacing a stale socket file.
pub async fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running process", path.display()),
                ));
            }
            // Nobody accepts on it: a leftover from a crash.
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_socket_is_replaced_live_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let live = bind_unix(&path).await.unwrap();
        let err = bind_unix(&path).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(live); // the file stays behind, as after a crash
        assert!(path.exists());
        bind_unix(&path).await.expect("stale socket replaced");
    }
}
