//! Starting and stopping the php-fpm master so that it never outlives the
//! daemon, whatever ends the daemon (SIGKILL, a crash, a panic).
//!
//! The master is started with a parent-death signal (`PR_SET_PDEATHSIG`):
//! when the daemon is gone the kernel sends it SIGTERM, php-fpm's "terminate
//! now", and it ends its workers before it exits (SIGKILL would leave the
//! workers running without it). The kernel ties the signal to the *thread*
//! that forked, so php-fpm must be started from a thread that lives as long
//! as the daemon: the thread that runs `main`'s `block_on` (the first start)
//! or a runtime worker thread (restarts by the supervisor task), never from
//! `spawn_blocking`, whose threads end when idle.
//!
//! Dropping a [`FpmChild`] that was not stopped (a start abandoned at
//! shutdown) also sends SIGTERM, for the same reason.

use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// How long php-fpm gets to end its workers after SIGTERM before SIGKILL.
const TERMINATE_GRACE: Duration = Duration::from_secs(2);

/// A running php-fpm master.
pub struct FpmChild(Child);

impl FpmChild {
    /// Starts `binary` with `args`, stdin closed, stdout and stderr shared
    /// with the daemon, and SIGTERM as its parent-death signal.
    pub fn spawn(binary: &Path, args: &[&std::ffi::OsStr]) -> io::Result<Self> {
        let mut cmd = Command::new(binary);
        cmd.args(args).stdin(Stdio::null());
        // php-fpm speaks sd_notify too (Debian builds it with systemd): it
        // would report its own readiness, and its pid as MAINPID, as ours.
        for name in crate::notify::SYSTEMD_VARIABLES {
            cmd.env_remove(name);
        }
        let parent = nix::unistd::getpid();
        // SAFETY: `pre_exec` runs the closure in the forked child before
        // exec, where only async-signal-safe calls are sound. It makes two
        // system calls (prctl, getppid) and builds an io::Error from an
        // errno, which does not allocate. There is no safe API for a
        // parent-death signal: std and tokio have none, and nix's
        // `set_pdeathsig` acts on the calling process, so it must run in the
        // child. One of the crate's three unsafe places (see lib.rs).
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
                // The daemon died between fork and prctl: no signal will come.
                if nix::unistd::getppid() != parent {
                    return Err(nix::errno::Errno::ESRCH.into());
                }
                Ok(())
            });
        }
        cmd.spawn().map(Self)
    }

    /// Its pid, while it has not been reaped.
    pub fn pid(&self) -> Option<Pid> {
        self.0
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw)
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.0.try_wait()
    }

    /// Waits for it to exit.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.0.wait().await
    }

    /// Sends `signal` to the master, if it still runs.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(pid, signal);
        }
    }

    /// Stops it: `first` (SIGQUIT: graceful, SIGTERM: now), waiting `grace`
    /// for it to exit; then SIGTERM, so it ends its workers; then SIGKILL.
    pub async fn stop(&mut self, first: Signal, grace: Duration) {
        self.signal(first);
        if tokio::time::timeout(grace, self.0.wait()).await.is_ok() {
            return;
        }
        tracing::warn!("managed php-fpm did not stop in time; terminating it");
        self.signal(Signal::SIGTERM);
        if tokio::time::timeout(TERMINATE_GRACE, self.0.wait())
            .await
            .is_err()
        {
            tracing::warn!("managed php-fpm did not terminate; killing it");
            let _ = self.0.kill().await;
        }
    }
}

impl Drop for FpmChild {
    fn drop(&mut self) {
        // SIGTERM, not tokio's kill_on_drop SIGKILL: php-fpm then ends its
        // workers. Tokio reaps the process in the background.
        self.signal(Signal::SIGTERM);
    }
}
