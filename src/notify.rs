//! Telling systemd how the daemon is doing (`Type=notify`), without
//! libsystemd: one Unix datagram per message to `$NOTIFY_SOCKET`, as
//! sd_notify(3) does.
//!
//! ```text
//! READY=1                              every listener bound, serving
//! STATUS=serving: 3 listeners          a line `systemctl status` shows
//! RELOADING=1                          SIGHUP received, reloading...
//! MONOTONIC_USEC=123456789             ...at this CLOCK_MONOTONIC time
//! READY=1                              ...and done (refused or applied)
//! STOPPING=1                           SIGTERM or SIGINT: draining
//! WATCHDOG=1                           every half WATCHDOG_USEC
//! ```
//!
//! `$NOTIFY_SOCKET` is a path, or an abstract name when it starts with `@`.
//! Without it every call does nothing, so the daemon runs the same outside
//! systemd. A failed send is logged once at debug level and otherwise
//! ignored: the daemon never stops serving because its supervisor went away.
//! The variables are not passed on: a managed php-fpm (built with systemd
//! support on Debian) would otherwise report its own readiness as ours
//! (see `managed/child.rs`).

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

/// The variables of the notification and socket-activation protocols, kept
/// from the daemon's children.
pub const SYSTEMD_VARIABLES: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// Sends notifications to the service manager, or nothing without one.
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct Notifier {
    target: Option<Arc<Target>>,
}

struct Target {
    socket: UnixDatagram,
    address: SocketAddr,
    /// Half the watchdog interval, when systemd asks for keep-alives.
    watchdog: Option<Duration>,
    /// Set after the first failed send: later failures are not logged.
    failed: std::sync::atomic::AtomicBool,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET` and `$WATCHDOG_USEC`/`$WATCHDOG_PID`; does
    /// nothing when `NOTIFY_SOCKET` is unset or empty. A value that is not
    /// a usable socket address is an error naming it.
    pub fn from_env() -> io::Result<Self> {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) else {
            return Ok(Self::default());
        };
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Self::to(&path, watchdog)
    }

    /// Notifications to the datagram socket `path` (`@name`: abstract);
    /// keep-alives every `watchdog` when given.
    pub fn to(path: &std::ffi::OsStr, watchdog: Option<Duration>) -> io::Result<Self> {
        let address = socket_address(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("NOTIFY_SOCKET={}: {e}", path.to_string_lossy()),
            )
        })?;
        let socket = UnixDatagram::unbound()?;
        Ok(Self {
            target: Some(Arc::new(Target {
                socket,
                address,
                watchdog,
                failed: Default::default(),
            })),
        })
    }

    /// Whether a service manager listens.
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state`, newline-separated `NAME=value` assignments.
    pub fn notify(&self, state: &str) {
        let Some(target) = &self.target else { return };
        if let Err(e) = target
            .socket
            .send_to_addr(state.as_bytes(), &target.address)
        {
            if !target
                .failed
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::debug!(error = %e, "cannot notify the service manager");
            }
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={status}"));
    }

    /// `RELOADING=1` with the monotonic time systemd wants beside it.
    pub fn reloading(&self) {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| {
                u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
                    + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1_000
            })
            .unwrap_or(0);
        self.notify(&format!(
            "RELOADING=1\nSTATUS=reloading the configuration\nMONOTONIC_USEC={now}"
        ));
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) {
        self.notify(&format!("STOPPING=1\nSTATUS={status}"));
    }

    /// How often [`Notifier::keep_alive`] sends `WATCHDOG=1`, if at all.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.target.as_ref().and_then(|t| t.watchdog)
    }

    /// Sends `WATCHDOG=1` every half `WATCHDOG_USEC` for as long as the
    /// runtime runs this task: a runtime that no longer schedules tasks
    /// stops the keep-alives, and systemd restarts the daemon. Runs until
    /// aborted (sending nothing without a watchdog).
    pub async fn keep_alive(self) {
        let Some(every) = self.watchdog_interval() else {
            return std::future::pending().await;
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.notify("WATCHDOG=1");
        }
    }
}

/// A `NOTIFY_SOCKET` value as a socket address: a path, or `@name` in the
/// abstract namespace.
fn socket_address(path: &std::ffi::OsStr) -> io::Result<SocketAddr> {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = path.as_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(name)
        }
        None if bytes.starts_with(b"/") => SocketAddr::from_pathname(path),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor an abstract name (@…)",
        )),
    }
}

/// Half of `WATCHDOG_USEC`, if it is set, positive, and meant for `pid`
/// (`WATCHDOG_PID`, when set, names the process it is for).
fn watchdog_interval(usec: Option<&str>, for_pid: Option<&str>, pid: u32) -> Option<Duration> {
    if let Some(for_pid) = for_pid {
        if for_pid.trim().parse::<u32>().ok() != Some(pid) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_half_the_interval_and_only_for_its_pid() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_interval(Some("30000000"), None, 7), half);
        assert_eq!(watchdog_interval(Some("30000000"), Some("7"), 7), half);
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
    }

    #[test]
    fn paths_and_abstract_names_are_addresses_anything_else_is_not() {
        use std::os::linux::net::SocketAddrExt as _;
        let path = socket_address("/run/systemd/notify".as_ref()).unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let abstract_name = socket_address("@/org/freedesktop/systemd1/notify".as_ref()).unwrap();
        assert_eq!(
            abstract_name.as_abstract_name(),
            Some(&b"/org/freedesktop/systemd1/notify"[..])
        );
        let err = socket_address("relative".as_ref()).unwrap_err();
        assert!(err.to_string().contains("absolute path"), "{err}");
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("ws2fcgi-notify-test-{}", std::process::id());
        let receiver =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let notifier = Notifier::to(format!("@{name}").as_ref(), None).unwrap();
        notifier.ready("serving");
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
    }

    #[test]
    fn without_a_manager_nothing_is_sent() {
        let notifier = Notifier::default();
        assert!(!notifier.is_active());
        notifier.ready("serving");
        assert_eq!(notifier.watchdog_interval(), None);
    }
}
