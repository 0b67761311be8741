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

/// Pending connections the kernel queues before `accept` (capped by
/// `net.core.somaxconn`). Rust's default of 128 makes a burst of clients wait
/// for SYN retransmits, seconds each.
pub const LISTEN_BACKLOG: i32 = 4096;

impl Listener {
    /// Binds `addr`.
    pub async fn bind(addr: &ListenAddr) -> io::Result<Self> {
        match addr {
            ListenAddr::Tcp(a) => bind_tcp(*a).map(Self::Tcp),
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

/// Binds a TCP listener with [`LISTEN_BACKLOG`].
pub fn bind_tcp(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

fn bind_unix_now(path: &Path) -> io::Result<UnixListener> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::unix(path)?)?;
    socket.listen(LISTEN_BACKLOG)?;
    let fd = std::os::fd::OwnedFd::from(socket);
    UnixListener::from_std(std::os::unix::net::UnixListener::from(fd))
}

/// Binds a Unix socket at `path` with [`LISTEN_BACKLOG`], replacing a stale socket file.
pub async fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    match bind_unix_now(path) {
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
            bind_unix_now(path)
        }
        Err(e) => Err(e),
    }
}

/// Gives a socket file its mode and, when named, owner and group (names or ids).
pub fn set_permissions(
    path: &Path,
    mode: u32,
    owner: Option<&str>,
    group: Option<&str>,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {:o}: {e}", mode))?;
    let uid = owner.map(lookup_user).transpose()?;
    let gid = group.map(lookup_group).transpose()?;
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(path, uid, gid).map_err(|e| format!("chown: {e}"))?;
    }
    Ok(())
}

/// A user name (through NSS) or a numeric uid.
pub fn lookup_user(name: &str) -> Result<u32, String> {
    if let Ok(uid) = name.parse() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(format!("no such user `{name}`")),
        Err(e) => Err(format!("looking up user `{name}`: {e}")),
    }
}

/// A group name (through NSS) or a numeric gid.
pub fn lookup_group(name: &str) -> Result<u32, String> {
    if let Ok(gid) = name.parse() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!("no such group `{name}`")),
        Err(e) => Err(format!("looking up group `{name}`: {e}")),
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
