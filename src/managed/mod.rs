//! A php-fpm that ws2fcgi starts and supervises itself (`--fpm managed`).
//!
//! The embedded default for trying ws2fcgi with nothing set up: a pool config
//! is written to a private run directory (`run_dir.rs`, rendered by
//! `pool.rs`), php-fpm runs in the foreground as a child that dies with the
//! daemon (`child.rs`), is restarted (with backoff) when it dies, and is
//! stopped gracefully (SIGQUIT, then SIGTERM, then SIGKILL) when the daemon
//! stops — after the drain, so close events still reach PHP. Production
//! setups usually point `--fpm` at their own, dedicated PHP-FPM pool instead.

mod child;
pub mod pool;
pub mod run_dir;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::Notify;

use crate::config::ManagedFpmConfig;
use child::FpmChild;
pub use run_dir::{RunDir, RunDirError};

/// How long php-fpm gets to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long php-fpm gets to finish running requests when stopped.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why the managed php-fpm could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ManagedError {
    /// No php-fpm binary was found.
    #[error(
        "no php-fpm binary found (looked for php-fpm* on PATH, in /usr/sbin and /usr/local/sbin); install php-fpm or set fpm.managed.binary"
    )]
    NoBinary,
    /// The run directory is unsafe or its files could not be written.
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// php-fpm did not start or did not open its socket in time.
    #[error("php-fpm did not start: {0}")]
    Start(String),
}

/// The supervised php-fpm; stop it with [`ManagedFpm::stop`].
pub struct ManagedFpm {
    socket: PathBuf,
    stop: Arc<Notify>,
    supervisor: tokio::task::JoinHandle<()>,
}

struct Plan {
    binary: PathBuf,
    conf: PathBuf,
    socket: PathBuf,
    as_root: bool,
}

impl ManagedFpm {
    /// Writes the pool config, starts php-fpm with `pool_size` workers plus
    /// `spare_children`, and waits for its socket.
    pub async fn start(config: &ManagedFpmConfig, pool_size: usize) -> Result<Self, ManagedError> {
        let children = pool_size + config.spare_children;
        let binary = match &config.binary {
            Some(binary) => binary.clone(),
            None => find_php_fpm().ok_or(ManagedError::NoBinary)?,
        };
        let run_dir = RunDir::prepare(config.run_dir.as_deref(), config.socket_group.as_deref())?;
        let socket = run_dir.path().join("php-fpm.sock");
        let as_root = nix::unistd::Uid::effective().is_root();
        let text = pool::render(config, run_dir.path(), &socket, children, as_root);
        let started = async {
            let conf = run_dir.write("php-fpm.conf", text.as_bytes())?;
            let plan = Plan {
                binary,
                conf,
                socket: socket.clone(),
                as_root,
            };
            let child = launch(&plan).await?;
            Ok::<_, ManagedError>((plan, child))
        };
        // On an error (or when this future is dropped) the child is stopped
        // and a fresh run directory removed, by their Drop.
        let (plan, child) = started.await?;
        tracing::info!(socket = %socket.display(), children, "managed php-fpm started");
        let stop = Arc::new(Notify::new());
        let supervisor = tokio::spawn(supervise(plan, run_dir, child, stop.clone()));
        Ok(Self {
            socket,
            stop,
            supervisor,
        })
    }

    /// The Unix socket php-fpm listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops php-fpm gracefully and waits for it.
    pub async fn stop(self) {
        self.stop.notify_one();
        let _ = self.supervisor.await;
    }
}

async fn launch(plan: &Plan) -> Result<FpmChild, ManagedError> {
    let _ = std::fs::remove_file(&plan.socket);
    let mut args = vec![
        "--nodaemonize".as_ref(),
        "--fpm-config".as_ref(),
        plan.conf.as_os_str(),
    ];
    if plan.as_root {
        args.push("--allow-to-run-as-root".as_ref());
    }
    let mut child = FpmChild::spawn(&plan.binary, &args)
        .map_err(|e| ManagedError::Start(format!("{}: {e}", plan.binary.display())))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if tokio::net::UnixStream::connect(&plan.socket).await.is_ok() {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(ManagedError::Start(format!(
                "php-fpm exited with {status} (its log is on ws2fcgi's stderr)"
            )));
        }
        if Instant::now() > deadline {
            child.stop(Signal::SIGTERM, STOP_GRACE).await;
            return Err(ManagedError::Start(format!(
                "socket {} not open after {START_TIMEOUT:?}",
                plan.socket.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn supervise(plan: Plan, run_dir: RunDir, mut child: FpmChild, stop: Arc<Notify>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        tokio::select! {
            status = child.wait() => {
                tracing::error!(status = ?status.ok(), restart_in = ?backoff, "managed php-fpm exited; restarting");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.notified() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                match launch(&plan).await {
                    Ok(next) => {
                        tracing::info!("managed php-fpm restarted");
                        child = next;
                    }
                    Err(e) => tracing::error!(error = %e, "managed php-fpm restart failed"),
                }
            }
            () = stop.notified() => {
                // SIGQUIT: php-fpm's graceful stop, running requests finish.
                child.stop(Signal::SIGQUIT, STOP_GRACE).await;
                tracing::info!("managed php-fpm stopped");
                break;
            }
        }
    }
    let _ = std::fs::remove_file(&plan.socket);
    drop(run_dir);
}

/// The newest `php-fpm*` on PATH, /usr/sbin or /usr/local/sbin.
pub fn find_php_fpm() -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path.split(':').chain(["/usr/sbin", "/usr/local/sbin"]);
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("php-fpm") && !n.ends_with(".conf"))
            })
            .collect();
        found.sort();
        if let Some(binary) = found.pop() {
            return Some(binary);
        }
    }
    None
}
