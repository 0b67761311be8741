//! Socket activation: listening sockets passed in by systemd (a
//! `ws2fcgi.socket` unit's `ListenStream=`) instead of bound by the daemon,
//! following sd_listen_fds(3).
//!
//! ```text
//! LISTEN_PID=<our pid>        the fds are for this process (else ignored)
//! LISTEN_FDS=3                fds 3, 4 and 5
//! LISTEN_FDNAMES=websocket:control:admin
//! ```
//!
//! Each socket's name (`FileDescriptorName=` in the socket unit) gives its
//! role: `control` is the control socket, `admin` the admin listener,
//! `http-control` the HTTP publish endpoint, `pusher-api` the Pusher HTTP
//! API's listener, `tls` a WebSocket listener whose clients speak TLS (with
//! `[tls]`); any other name (`websocket`, or the default, the socket unit's
//! own name) is a plain WebSocket listener. Every passed socket must be a
//! listening stream socket (TCP or Unix), but `handover`: the connected Unix
//! socket on which a predecessor handing its sockets over waits to hear that
//! this process serves (see `handover.rs`).
//! Inherited sockets get close-on-exec, so a managed php-fpm never holds
//! one.

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::path::PathBuf;

use socket2::{Domain, Socket, Type};

/// The first passed fd (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// More than any socket unit needs; a larger `LISTEN_FDS` is refused.
const MAX_FDS: usize = 64;

/// What a passed socket is for, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A WebSocket listener (`listen`).
    WebSocket,
    /// A WebSocket listener whose clients speak TLS (a `tls://` address of `listen`).
    TlsWebSocket,
    /// The control socket (`control.socket`).
    Control,
    /// The admin listener (`admin`).
    Admin,
    /// The HTTP publish endpoint (`control.http`).
    HttpControl,
    /// The Pusher HTTP API's own listener (`pusher.api_listen`).
    PusherApi,
    /// Not a listener: the predecessor's end of a SIGUSR2 handover, told
    /// `READY=1` once this process serves.
    Handover,
}

impl Role {
    /// The role a `FileDescriptorName=` names.
    pub fn of(name: &str) -> Self {
        match name {
            "control" => Self::Control,
            "admin" => Self::Admin,
            "http-control" => Self::HttpControl,
            "pusher-api" => Self::PusherApi,
            "handover" => Self::Handover,
            "tls" => Self::TlsWebSocket,
            _ => Self::WebSocket,
        }
    }
}

/// One passed listening socket.
#[derive(Debug)]
pub struct Passed {
    /// Its name (`unknown` when systemd gave none).
    pub name: String,
    /// Its role, from the name.
    pub role: Role,
    /// The socket: listening, stream, non-blocking, close-on-exec.
    pub socket: Socket,
}

impl Passed {
    /// The path of a Unix socket (`None` for TCP or an unnamed one).
    pub fn path(&self) -> Option<PathBuf> {
        self.socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| p.to_owned()))
    }

    /// Whether it is a TCP socket.
    pub fn is_tcp(&self) -> bool {
        matches!(self.socket.domain(), Ok(d) if d == Domain::IPV4 || d == Domain::IPV6)
    }

    /// Its address, for logs and errors.
    pub fn describe(&self) -> String {
        match (
            self.path(),
            self.socket.local_addr().ok().and_then(|a| a.as_socket()),
        ) {
            (Some(path), _) => format!("unix:{}", path.display()),
            (None, Some(addr)) => addr.to_string(),
            (None, None) => "an unnamed socket".into(),
        }
    }
}

/// Takes the sockets systemd passed to this process, if any: none when
/// `LISTEN_PID` is unset or names another process. Call once, before the
/// process opens files of its own; a second call finds nothing. An fd that
/// is not a listening stream socket, or a malformed variable, is an error
/// naming it.
pub fn take() -> io::Result<Vec<Passed>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    let Some(count) = parse(pid.as_deref(), fds.as_deref(), std::process::id())? else {
        return Ok(Vec::new());
    };
    if TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Ok(Vec::new());
    }
    let names = fd_names(names.as_deref(), count);
    let mut passed = Vec::with_capacity(count);
    for (i, name) in names.into_iter().enumerate() {
        let fd = FIRST_FD + RawFd::try_from(i).unwrap_or(RawFd::MAX - FIRST_FD);
        let socket = Socket::from(adopt(fd)?);
        let role = Role::of(&name);
        check(&socket, role).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("socket activation: fd {fd} ({name}): {e}"),
            )
        })?;
        passed.push(Passed { role, name, socket });
    }
    Ok(passed)
}

/// Set by the first [`take`] that found sockets: each fd gets one owner.
static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How many fds `LISTEN_FDS` passes to `pid`, or `None` when they are not
/// for this process.
fn parse(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    pid: u32,
) -> io::Result<Option<usize>> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    let Some(listen_pid) = listen_pid else {
        return Ok(None);
    };
    match listen_pid.trim().parse::<u32>() {
        Ok(p) if p == pid => {}
        Ok(_) => return Ok(None),
        Err(_) => return Err(invalid(format!("LISTEN_PID={listen_pid} is not a pid"))),
    }
    let Some(listen_fds) = listen_fds else {
        return Ok(None);
    };
    match listen_fds.trim().parse::<usize>() {
        Ok(0) => Ok(None),
        Ok(n) if n <= MAX_FDS => Ok(Some(n)),
        _ => Err(invalid(format!(
            "LISTEN_FDS={listen_fds} is not a count of sockets between 0 and {MAX_FDS}"
        ))),
    }
}

/// `LISTEN_FDNAMES` split at `:`; `unknown` for each fd when it is missing
/// or does not name every fd (as sd_listen_fds_with_names does).
fn fd_names(names: Option<&str>, count: usize) -> Vec<String> {
    let split: Vec<String> = names
        .map(|n| n.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    if split.len() == count {
        split
    } else {
        vec!["unknown".to_owned(); count]
    }
}

/// Takes ownership of the inherited fd `fd`, after checking through /proc
/// that it is open and a socket, and marks it close-on-exec.
#[allow(unsafe_code)]
fn adopt(fd: RawFd) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd as _;
    use std::os::unix::fs::FileTypeExt as _;
    let meta = std::fs::metadata(format!("/proc/self/fd/{fd}")).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("socket activation: LISTEN_FDS passes fd {fd}, which is not open: {e}"),
        )
    })?;
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket activation: LISTEN_FDS passes fd {fd}, which is not a socket"),
        ));
    }
    // SAFETY: `OwnedFd::from_raw_fd` needs an open fd that nothing else in
    // the process owns or will close. The fd is open (checked above: /proc
    // resolves it to a socket). Nothing else owns it: the service manager
    // passed fds FIRST_FD.. to this process (LISTEN_PID is our pid), no code
    // of ours opened them (an fd number in use is never handed out again
    // until closed, and nothing closes numbers it did not open), and [`take`]
    // adopts each at most once per process (TAKEN). There is no safe API to
    // take ownership of an inherited fd. One of the crate's three unsafe
    // places (see lib.rs).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    Ok(owned)
}

/// A listening stream socket (for [`Role::Handover`], a connected Unix
/// stream socket), made non-blocking.
fn check(socket: &Socket, role: Role) -> io::Result<()> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
    if socket.r#type()? != Type::STREAM {
        return Err(invalid(
            "not a stream socket (use ListenStream= in the socket unit)",
        ));
    }
    if role == Role::Handover {
        if socket.domain()? != Domain::UNIX || socket.is_listener()? {
            return Err(invalid("`handover` must be a connected Unix stream socket"));
        }
        return socket.set_nonblocking(true);
    }
    if !socket.is_listener()? {
        return Err(invalid("not listening (Accept=no in the socket unit)"));
    }
    match socket.domain()? {
        d if d == Domain::IPV4 || d == Domain::IPV6 || d == Domain::UNIX => {}
        _ => return Err(invalid("neither TCP nor a Unix socket")),
    }
    socket.set_nonblocking(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fds_are_ours_only_when_listen_pid_is_our_pid() {
        assert_eq!(parse(None, Some("2"), 7).unwrap(), None);
        assert_eq!(parse(Some("8"), Some("2"), 7).unwrap(), None);
        assert_eq!(parse(Some("7"), Some("2"), 7).unwrap(), Some(2));
        assert_eq!(parse(Some("7"), Some("0"), 7).unwrap(), None);
        assert_eq!(parse(Some("7"), None, 7).unwrap(), None);
        let err = parse(Some("seven"), Some("2"), 7).unwrap_err();
        assert!(err.to_string().contains("LISTEN_PID=seven"), "{err}");
        let err = parse(Some("7"), Some("1000"), 7).unwrap_err();
        assert!(err.to_string().contains("LISTEN_FDS=1000"), "{err}");
    }

    #[test]
    fn names_give_roles_and_missing_names_are_unknown() {
        assert_eq!(
            fd_names(Some("websocket:control:admin"), 3),
            ["websocket", "control", "admin"]
        );
        assert_eq!(fd_names(Some("control"), 2), ["unknown", "unknown"]);
        assert_eq!(fd_names(None, 1), ["unknown"]);
        assert_eq!(Role::of("control"), Role::Control);
        assert_eq!(Role::of("admin"), Role::Admin);
        assert_eq!(Role::of("http-control"), Role::HttpControl);
        assert_eq!(Role::of("tls"), Role::TlsWebSocket);
        assert_eq!(Role::of("pusher-api"), Role::PusherApi);
        assert_eq!(Role::of("handover"), Role::Handover);
        assert_eq!(Role::of("ws2fcgi.socket"), Role::WebSocket);
        assert_eq!(Role::of("unknown"), Role::WebSocket);
    }
}
