//! Binding the daemon's sockets: TCP (plain or TLS) and Unix listeners.
//!
//! Binding happens in `main` (or a test) before [`crate::run`], so tests can
//! bind port 0 and temporary paths. A Unix socket is reachable only once its
//! mode and owner are final, and a socket file is replaced only when a
//! connect to it is refused (ECONNREFUSED: a crash's leftover). A live one,
//! even one whose backlog is full, or one that cannot be probed is an error,
//! so two daemons never steal each other's socket (see [`bind_unix`]).

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
    /// TCP whose clients speak TLS (`tls://`); the handshake is the gateway's.
    Tls(TcpListener),
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
    /// Binds `addr`; a Unix socket gets [`UnixPermissions::default`].
    pub async fn bind(addr: &ListenAddr) -> io::Result<Self> {
        Self::bind_with(addr, &UnixPermissions::default()).await
    }

    /// Binds `addr`; a Unix socket gets `permissions` (see [`bind_unix`]).
    pub async fn bind_with(addr: &ListenAddr, permissions: &UnixPermissions) -> io::Result<Self> {
        match addr {
            ListenAddr::Tcp(a) => bind_tcp(*a).map(Self::Tcp),
            ListenAddr::Unix(path) => Ok(Self::Unix(bind_unix(path, permissions)?, path.clone())),
            ListenAddr::Tls(a) => bind_tcp(*a).map(Self::Tls),
        }
    }

    /// Sets `TCP_NODELAY` (frames are written whole; never wait to
    /// coalesce) on a TCP listening socket, once, so that the sockets it
    /// accepts have it from the start: Linux copies a listener's TCP options
    /// to every socket it accepts, which saves a `setsockopt` per connection.
    /// Returns whether accepted sockets have it that way; when not (another
    /// system, or the call failed), [`accept`](Self::accept) must set it on
    /// each. A Unix listener needs nothing.
    pub fn set_nodelay_for_accepted(&self) -> bool {
        match self {
            Self::Tcp(l) | Self::Tls(l) => {
                cfg!(target_os = "linux") && socket2::SockRef::from(l).set_tcp_nodelay(true).is_ok()
            }
            Self::Unix(..) => true,
        }
    }

    /// Accepts one client; sets `TCP_NODELAY` on it unless
    /// `nodelay_inherited` (see [`set_nodelay_for_accepted`](Self::set_nodelay_for_accepted)).
    pub async fn accept(&self, nodelay_inherited: bool) -> io::Result<Accepted> {
        match self {
            Self::Tcp(l) | Self::Tls(l) => {
                let (stream, peer) = l.accept().await?;
                if !nodelay_inherited {
                    stream.set_nodelay(true)?;
                }
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
            Self::Tls(l) => l
                .local_addr()
                .map(|a| format!("tls://{a}"))
                .unwrap_or_else(|_| "tls:?".into()),
        }
    }

    /// The TCP address, when this is a TCP (or TLS) listener.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Self::Tcp(l) | Self::Tls(l) => l.local_addr().ok(),
            Self::Unix(..) => None,
        }
    }

    /// Do its clients speak TLS?
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }
}

/// A listening socket not tied to a runtime yet: a copy of it (a dup of
/// the descriptor, one open file) goes to each shard's thread, which makes
/// it a [`Listener`] of its own runtime (`shard.rs`). The kernel hands each
/// incoming connection to whichever shard accepts it first.
pub enum Portable {
    /// TCP.
    Tcp(std::net::TcpListener),
    /// A Unix stream socket and its path.
    Unix(std::os::unix::net::UnixListener, PathBuf),
    /// TCP whose clients speak TLS.
    Tls(std::net::TcpListener),
}

impl Listener {
    /// Takes the socket out of the current runtime (it stays non-blocking).
    pub fn into_portable(self) -> io::Result<Portable> {
        Ok(match self {
            Self::Tcp(l) => Portable::Tcp(l.into_std()?),
            Self::Unix(l, path) => Portable::Unix(l.into_std()?, path),
            Self::Tls(l) => Portable::Tls(l.into_std()?),
        })
    }
}

impl Portable {
    /// Another handle on the same listening socket.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            Self::Tcp(l) => Self::Tcp(l.try_clone()?),
            Self::Unix(l, path) => Self::Unix(l.try_clone()?, path.clone()),
            Self::Tls(l) => Self::Tls(l.try_clone()?),
        })
    }

    /// A listener of the runtime this is called in.
    pub fn into_listener(self) -> io::Result<Listener> {
        Ok(match self {
            Self::Tcp(l) => Listener::Tcp(TcpListener::from_std(l)?),
            Self::Unix(l, path) => Listener::Unix(UnixListener::from_std(l)?, path),
            Self::Tls(l) => Listener::Tls(TcpListener::from_std(l)?),
        })
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

/// Mode and owner a Unix socket file gets before anyone can connect to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixPermissions {
    /// File mode, e.g. 0o660.
    pub mode: u32,
    /// New owner; unchanged when `None`.
    pub uid: Option<u32>,
    /// New group; unchanged when `None`.
    pub gid: Option<u32>,
}

impl Default for UnixPermissions {
    /// Mode 0660, owner and group unchanged (`listen_mode`'s default).
    fn default() -> Self {
        Self {
            mode: 0o660,
            uid: None,
            gid: None,
        }
    }
}

impl UnixPermissions {
    /// `mode` with an owner and a group given by name or id.
    pub fn resolve(mode: u32, owner: Option<&str>, group: Option<&str>) -> Result<Self, String> {
        Ok(Self {
            mode,
            uid: owner.map(lookup_user).transpose()?,
            gid: group.map(lookup_group).transpose()?,
        })
    }

    /// chmod, then chown (without following a link).
    fn apply(&self, path: &Path) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let context =
            |what: String| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(self.mode))
            .map_err(context(format!("chmod {:o}", self.mode)))?;
        if self.uid.is_some() || self.gid.is_some() {
            std::os::unix::fs::lchown(path, self.uid, self.gid).map_err(context(format!(
                "chown to uid {} gid {}",
                self.uid.map_or("unchanged".into(), |u| u.to_string()),
                self.gid.map_or("unchanged".into(), |g| g.to_string()),
            )))?;
        }
        Ok(())
    }
}

/// What is at a Unix socket's path before it is bound.
#[derive(Debug, PartialEq, Eq)]
enum Existing {
    /// Nothing.
    Absent,
    /// A socket nobody listens on (connect: ECONNREFUSED): a crash's leftover.
    Stale,
}

/// Looks at `path`: nothing, or a stale socket; an error for anything else
/// (a live socket, a busy one, one that cannot be probed, not a socket).
fn probe(path: &Path) -> io::Result<Existing> {
    use socket2::{Domain, SockAddr, Socket, Type};
    use std::os::unix::fs::FileTypeExt;
    let in_use = |why: &str| {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            // main's error line adds what to do for AddrInUse.
            format!("in use by a running process ({why})"),
        )
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Absent),
        Err(e) => return Err(e),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket; remove it or choose another path",
            ));
        }
        Ok(_) => {}
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    // Non-blocking: a live daemon with a full backlog answers EAGAIN at once.
    socket.set_nonblocking(true)?;
    match socket.connect(&SockAddr::unix(path)?) {
        Ok(()) => Err(in_use("it accepts connections")),
        Err(e) => match nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
            nix::errno::Errno::ECONNREFUSED => Ok(Existing::Stale),
            nix::errno::Errno::ENOENT => Ok(Existing::Absent),
            nix::errno::Errno::EAGAIN | nix::errno::Errno::EINPROGRESS => {
                Err(in_use("it listens and its backlog is full"))
            }
            _ => Err(io::Error::new(
                e.kind(),
                format!(
                    "cannot tell whether a running process uses it (connect: {e}); remove it if none does"
                ),
            )),
        },
    }
}

/// Distinguishes the temporary names of listeners bound by one process.
static BIND_COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Binds a Unix socket at `path` with [`LISTEN_BACKLOG`] and `permissions`.
///
/// The socket is bound under a temporary name in the same directory, given
/// its mode and owner, made to listen, and only then put at `path`: nobody
/// can connect before its permissions are final (a bound socket refuses
/// connections until `listen`), and `path` never exists half set up. It is
/// put in place by a hard link when nothing is at `path` (which fails if
/// another process got there first), or renamed over a stale socket file. A
/// file that is not a socket, a live socket (even one whose backlog is
/// full) or one that cannot be probed is left alone and is an error.
pub fn bind_unix(path: &Path, permissions: &UnixPermissions) -> io::Result<UnixListener> {
    use socket2::{Domain, SockAddr, Socket, Type};
    // A path too long for a socket address is refused before anything else.
    SockAddr::unix(path)?;
    probe(path)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let n = BIND_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary = dir.join(format!(".ws2fcgi.{}.{n}", std::process::id()));
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    let address = SockAddr::unix(&temporary).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "the path is too long for the temporary name {}",
                temporary.display()
            ),
        )
    })?;
    if let Err(e) = socket.bind(&address) {
        if e.kind() != io::ErrorKind::AddrInUse {
            return Err(e);
        }
        // A leftover of a crashed process that had our pid.
        std::fs::remove_file(&temporary)?;
        socket.bind(&address)?;
    }
    let placed = permissions
        .apply(&temporary)
        .and_then(|()| socket.listen(LISTEN_BACKLOG))
        .and_then(|()| put_in_place(&temporary, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    let fd = std::os::fd::OwnedFd::from(socket);
    UnixListener::from_std(std::os::unix::net::UnixListener::from(fd))
}

/// Puts the listening socket `temporary` at `path`, never over a live one.
fn put_in_place(temporary: &Path, path: &Path) -> io::Result<()> {
    for _ in 0..3 {
        match probe(path)? {
            Existing::Absent => match std::fs::hard_link(temporary, path) {
                Ok(()) => return std::fs::remove_file(temporary),
                // Someone bound it since the probe: look again.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                // A file system without hard links.
                Err(_) => return std::fs::rename(temporary, path),
            },
            // Replaced in one step: the path never goes missing.
            Existing::Stale => return std::fs::rename(temporary, path),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "another process keeps binding the path",
    ))
}

/// A socket file this daemon created, removed at exit only if it is still
/// the same file (a successor may have replaced it).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// The socket file now at `path` (just bound).
    pub fn at(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path)?;
        Ok(Self {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Removes the file if it is still the one bound.
    pub fn remove(self) {
        use std::os::unix::fs::MetadataExt;
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                let _ = std::fs::remove_file(&self.path);
            }
            _ => {
                tracing::debug!(path = %self.path.display(), "socket file replaced; left in place")
            }
        }
    }
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
    use std::os::unix::fs::PermissionsExt as _;

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    /// Only `expected` is in `dir`: no temporary name left behind.
    fn only(dir: &Path, expected: &Path) {
        let names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(names, vec![expected.to_owned()]);
    }

    /// The `setsockopt` per accept is skipped on the promise that the
    /// kernel copies the listener's `TCP_NODELAY`: a socket accepted
    /// without it being set must have it, and one from a listener without
    /// it must not (so the check can fail).
    #[tokio::test]
    async fn accepted_sockets_inherit_the_listeners_nodelay() {
        async fn accept_one(listener: &Listener, inherited: bool) -> bool {
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let Accepted::Tcp(stream, _) = listener.accept(inherited).await.unwrap() else {
                panic!("a TCP listener accepted something else");
            };
            drop(client);
            stream.nodelay().unwrap()
        }
        let listener = Listener::Tcp(bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap());
        assert!(
            !accept_one(&listener, true).await,
            "TCP_NODELAY is off by default"
        );
        assert!(listener.set_nodelay_for_accepted());
        assert!(
            accept_one(&listener, true).await,
            "not copied from the listener"
        );
        let unix_dir = tempfile::tempdir().unwrap();
        let unix = Listener::Unix(
            bind_unix(&unix_dir.path().join("s.sock"), &UnixPermissions::default()).unwrap(),
            unix_dir.path().join("s.sock"),
        );
        assert!(unix.set_nodelay_for_accepted());
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_live_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let perms = UnixPermissions {
            mode: 0o600,
            ..Default::default()
        };
        let live = bind_unix(&path, &perms).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        only(dir.path(), &path);
        let err = bind_unix(&path, &perms).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(err.to_string().contains("in use"), "{err}");
        drop(live); // the file stays behind, as after a crash
        assert!(path.exists());
        let _again = bind_unix(
            &path,
            &UnixPermissions {
                mode: 0o640,
                ..perms
            },
        )
        .expect("stale socket replaced");
        assert_eq!(mode_of(&path), 0o640);
        only(dir.path(), &path);
        UnixStream::connect(&path)
            .await
            .expect("the new socket accepts");
    }

    #[test]
    fn a_busy_live_socket_is_refused_and_left_alone() {
        use socket2::{Domain, SockAddr, Socket, Type};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy.sock");
        let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        listener.bind(&SockAddr::unix(&path).unwrap()).unwrap();
        listener.listen(0).unwrap();
        // Never accepted: fill the backlog until a connect says EAGAIN.
        let mut queued = Vec::new();
        loop {
            let client = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
            client.set_nonblocking(true).unwrap();
            match client.connect(&SockAddr::unix(&path).unwrap()) {
                Ok(()) => queued.push(client),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("connect: {e}"),
            }
            assert!(queued.len() < 1000, "the backlog never filled");
        }
        let err = bind_unix(&path, &UnixPermissions::default()).unwrap_err();
        assert!(err.to_string().contains("backlog is full"), "{err}");
        only(dir.path(), &path);
        drop(queued);
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::write(&path, "keep me").unwrap();
        let err = bind_unix(&path, &UnixPermissions::default()).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    }

    #[tokio::test]
    async fn a_socket_file_is_removed_only_while_it_is_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let first = bind_unix(&path, &UnixPermissions::default()).unwrap();
        let ours = SocketFile::at(&path).unwrap();
        drop(first);
        // A successor replaced the stale file: it stays.
        let _second = bind_unix(&path, &UnixPermissions::default()).unwrap();
        ours.remove();
        assert!(path.exists());
        SocketFile::at(&path).unwrap().remove();
        assert!(!path.exists());
    }
}
