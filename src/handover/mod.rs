//! A restart that refuses no one: on SIGUSR2 the daemon starts a new process
//! of the binary at its own path, with the same flags, and hands it every
//! listening socket, the way systemd passes sockets (`activation.rs`). The
//! kernel keeps one queue per socket, shared by both processes, so no
//! connection attempt meets a closed port at any moment.
//!
//! ```text
//! old (serving)                          new (same path, same flags)
//! SIGUSR2
//!   spawn /bin/sh -c 'LISTEN_PID=$$ … exec "$0" "$@"' ws2fcgi FLAGS…
//!   fds 3.. = the listeners  ───────────▶ takes them (LISTEN_FDS, LISTEN_FDNAMES)
//!   fd 3+n  = `handover`                  binds nothing that was passed
//!   ◀───────────── READY=1 on `handover` ─ set up; accepts nothing yet
//! MAINPID=<new> to systemd ($NOTIFY_SOCKET)
//! stops accepting; closes the control gate
//! (gate.rs: no request runs here any more)
//!   the channels' history ─────────────▶ takes it (history.rs), then
//!   closes `handover`                     accepts: clients queued meanwhile
//! clients closed 1012 "service restart";  reconnect and recover from it
//! their close events reach PHP (the drain);
//! control clients' requests relayed to the new process; exits 0
//! ```
//!
//! The shell sets `LISTEN_PID` (and `WATCHDOG_PID` under a watchdog) to its
//! own pid, which `exec` keeps for the daemon: a variable for the new
//! process cannot be set between fork and exec without allocating. If the
//! new process exits or closes `handover` before `READY=1`, the old one logs
//! why and goes on serving; nothing was closed. A predecessor that sends no
//! history (an older version, or one without `[history]`) just closes
//! `handover`: the new process serves with an empty history.

pub mod gate;
pub mod history;

use std::io;
use std::os::fd::{AsFd, AsRawFd as _, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::ExitStatus;

use tokio::io::AsyncReadExt as _;

/// The first fd of the new process that gets a socket (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// At most this many sockets are handed over (as `activation.rs` takes).
const MAX_SOCKETS: usize = 63;

/// What the new process writes on `handover` once it serves.
const READY: &[u8] = b"READY=1\n";

/// Run by `/bin/sh -c` as the new process's first instructions: `$$` is the
/// shell's pid, which `exec` gives the daemon.
const SHIM: &str = "LISTEN_PID=$$; export LISTEN_PID; \
if [ -n \"$WATCHDOG_USEC\" ]; then WATCHDOG_PID=$$; export WATCHDOG_PID; fi; \
exec \"$0\" \"$@\"";

/// Why a handover did not happen (the old process goes on serving).
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The path of the running binary is unknown.
    #[error("cannot find the path of the running binary: {0}")]
    Binary(io::Error),
    /// The new process could not be started.
    #[error("cannot start the new process: {0}")]
    Spawn(io::Error),
    /// It exited before it served (a bad configuration, a socket it could not bind).
    #[error("the new process (pid {pid}) exited before it served: {status}")]
    Exited {
        /// Its pid.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
    },
    /// It closed the handover socket without saying it serves.
    #[error("the new process (pid {0}) closed the handover socket before it served")]
    Closed(u32),
    /// More sockets than a handover passes.
    #[error("{0} sockets: more than the {MAX_SOCKETS} a handover passes")]
    TooMany(usize),
    /// The handover socket failed.
    #[error("the handover socket: {0}")]
    Channel(io::Error),
}

/// The daemon's listening sockets, each with the name that tells the new
/// process its role (`activation.rs`): copies of the listeners' fds.
#[derive(Default)]
pub struct Sockets {
    named: Vec<(&'static str, OwnedFd)>,
}

impl Sockets {
    /// Keeps a copy of `socket` to hand over as `name`.
    pub fn add(&mut self, name: &'static str, socket: &impl AsFd) -> io::Result<()> {
        self.named
            .push((name, socket.as_fd().try_clone_to_owned()?));
        Ok(())
    }

    /// How many sockets are kept.
    pub fn len(&self) -> usize {
        self.named.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.named.is_empty()
    }

    /// Starts the new process with these sockets and waits until it is set
    /// up. The caller then stops accepting, sends it the history
    /// ([`Successor::send_history`]) and drains.
    pub async fn start_successor(&self) -> Result<Successor, HandoverError> {
        if self.named.len() > MAX_SOCKETS {
            return Err(HandoverError::TooMany(self.named.len()));
        }
        let binary = running_binary().map_err(HandoverError::Binary)?;
        // std makes both ends close-on-exec; ours never reaches the child.
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(HandoverError::Channel)?;
        let mut sources: Vec<RawFd> = self.named.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
        sources.push(theirs.as_raw_fd());
        let names: Vec<&str> = self
            .named
            .iter()
            .map(|(name, _)| *name)
            .chain(["handover"])
            .collect();
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(SHIM)
            .arg(&binary)
            .args(std::env::args_os().skip(1))
            .env("LISTEN_FDS", sources.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"))
            .env_remove("LISTEN_PID")
            .env_remove("WATCHDOG_PID");
        // SAFETY: `pre_exec` runs the closure in the forked child before
        // exec, where only async-signal-safe calls are sound: it calls
        // fcntl(F_DUPFD_CLOEXEC) and dup2 on fds the parent holds open for
        // the whole spawn (`self.named`, `theirs`), writes a fixed-size array
        // on the stack and builds io::Errors from errno, none of which
        // allocates. There is no safe API to give a child fds at chosen
        // numbers: std and tokio pass only stdin, stdout and stderr. One of
        // the crate's three unsafe places (see lib.rs).
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(move || place(&sources));
        }
        let mut child = command.spawn().map_err(HandoverError::Spawn)?;
        // Only the child holds its end now: its exit is our EOF.
        drop(theirs);
        let pid = child.id().unwrap_or(0);
        tracing::info!(pid, binary = %binary.display(), sockets = self.named.len(), "handover: new process started");
        ours.set_nonblocking(true).map_err(HandoverError::Channel)?;
        let mut ours = tokio::net::UnixStream::from_std(ours).map_err(HandoverError::Channel)?;
        let mut said = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            tokio::select! {
                read = ours.read(&mut buf) => match read {
                    Ok(0) => {
                        // Closed: ready, or gone; an exit is the better report.
                        return match tokio::time::timeout(
                            std::time::Duration::from_secs(1),
                            child.wait(),
                        )
                        .await
                        {
                            Ok(Ok(status)) => Err(HandoverError::Exited { pid, status }),
                            _ => Err(HandoverError::Closed(pid)),
                        };
                    }
                    Ok(n) => {
                        said.extend_from_slice(&buf[..n]);
                        if said.windows(READY.len()).any(|w| w == READY) {
                            // The child runs on; tokio reaps it if it ends first.
                            drop(child);
                            return Ok(Successor { pid, channel: ours });
                        }
                        if said.len() > 1024 {
                            return Err(HandoverError::Closed(pid));
                        }
                    }
                    Err(e) => return Err(HandoverError::Channel(e)),
                },
                status = child.wait() => {
                    return match status {
                        Ok(status) => Err(HandoverError::Exited { pid, status }),
                        Err(e) => Err(HandoverError::Channel(e)),
                    };
                }
            }
        }
    }
}

/// The new process, set up and waiting for the history on `handover`.
pub struct Successor {
    /// Its pid.
    pub pid: u32,
    channel: tokio::net::UnixStream,
}

impl Successor {
    /// Sends `records` (maybe none) and closes `handover`: the successor
    /// starts accepting once it has them. Call it after the control gate
    /// closed, so no publication of this process is missing from them.
    /// Returns the bytes sent.
    pub async fn send_history(mut self, records: &[history::Record]) -> io::Result<usize> {
        use tokio::io::AsyncWriteExt as _;
        let mut sent = 0;
        if !records.is_empty() {
            let bytes = history::encode(records);
            tokio::time::timeout(SEND_TIMEOUT, self.channel.write_all(&bytes))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "the successor does not read")
                })??;
            sent = bytes.len();
        }
        self.channel.shutdown().await?;
        Ok(sent)
    }
}

/// How long the old process tries to send the history.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long the new process waits for it (then serves without it).
const RECEIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// In the new process: tells the old one, on the socket it passed as
/// `handover`, that this one is set up, and reads the channels' history it
/// sends back (at most `limit` bytes) until it closes the socket. Nothing
/// is accepted before this returns. A history that is too large, garbled or
/// late is logged and left out: the process serves, and clients that
/// reconnect are told their channels were not recovered.
pub async fn from_predecessor(channel: socket2::Socket, limit: usize) -> Vec<history::Record> {
    use tokio::io::AsyncWriteExt as _;
    let std_stream = std::os::unix::net::UnixStream::from(OwnedFd::from(channel));
    let stream = std_stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(std_stream));
    let mut stream = match stream {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(error = %e, "handover: cannot use the socket to the old process");
            return Vec::new();
        }
    };
    if let Err(e) = stream.write_all(READY).await {
        tracing::warn!(error = %e, "handover: cannot tell the old process that this one is set up");
        return Vec::new();
    }
    tracing::info!(
        "handover: told the old process that this one is set up; waiting for its history"
    );
    let mut received = Vec::new();
    let read = tokio::time::timeout(
        RECEIVE_TIMEOUT,
        (&mut stream)
            .take(limit as u64 + 1)
            .read_to_end(&mut received),
    )
    .await;
    match read {
        Err(_) => tracing::warn!(
            after = ?RECEIVE_TIMEOUT,
            "handover: the old process sent no history in time; serving without it"
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "handover: reading the history failed; serving without it")
        }
        Ok(Ok(_)) if received.len() > limit => tracing::warn!(
            limit,
            "handover: the old process's history is larger than this one takes; serving without it"
        ),
        Ok(Ok(0)) => tracing::info!("handover: the old process sent no history"),
        Ok(Ok(n)) => match history::decode(bytes::Bytes::from(received)) {
            Ok(records) => {
                tracing::info!(
                    bytes = n,
                    channels = records.len(),
                    "handover: history received"
                );
                return records;
            }
            Err(e) => {
                tracing::warn!(error = %e, "handover: the history is garbled; serving without it")
            }
        },
    }
    Vec::new()
}

/// The path of the running binary: after an upgrade replaced the file, the
/// new binary at the same path (Linux names the old one `… (deleted)`).
fn running_binary() -> io::Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::env::current_exe()?;
    let bytes = path.as_os_str().as_bytes();
    Ok(match bytes.strip_suffix(b" (deleted)") {
        Some(kept) => PathBuf::from(std::ffi::OsStr::from_bytes(kept).to_owned()),
        None => path,
    })
}

/// In the forked child: `sources[i]` becomes fd `FIRST_FD + i`, without
/// close-on-exec. They are first copied above the target range, so placing
/// one never overwrites another still to be placed; the copies close at exec.
fn place(sources: &[RawFd]) -> io::Result<()> {
    let count = sources.len().min(MAX_SOCKETS);
    let above = FIRST_FD + count as RawFd;
    let mut high = [0 as RawFd; MAX_SOCKETS];
    for (slot, &fd) in high.iter_mut().zip(&sources[..count]) {
        // SAFETY: see `start_successor`: fcntl is async-signal-safe.
        #[allow(unsafe_code)]
        let copy = unsafe { nix::libc::fcntl(fd, nix::libc::F_DUPFD_CLOEXEC, above) };
        if copy < 0 {
            return Err(io::Error::last_os_error());
        }
        *slot = copy;
    }
    for (i, &copy) in high[..count].iter().enumerate() {
        // SAFETY: see `start_successor`: dup2 is async-signal-safe; the
        // target's close-on-exec is clear after it.
        #[allow(unsafe_code)]
        let placed = unsafe { nix::libc::dup2(copy, FIRST_FD + i as RawFd) };
        if placed < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_sets_the_pid_the_daemon_keeps() {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(SHIM)
            .arg("/bin/sh")
            .arg("-c")
            .arg("echo \"$LISTEN_PID $$ ${WATCHDOG_PID:-none}\"")
            .env_remove("WATCHDOG_USEC")
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let parts: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(parts.len(), 3, "{text}");
        assert_eq!(parts[0], parts[1], "LISTEN_PID is the exec'd process's pid");
        assert_eq!(parts[2], "none", "no watchdog, no WATCHDOG_PID");
    }
}
