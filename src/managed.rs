//! A php-fpm that ws2fcgi starts and supervises itself (`--fpm managed`).
//!
//! The embedded default for trying ws2fcgi with nothing set up: a pool config
//! is written to the run directory, php-fpm runs in the foreground as a child,
//! is restarted (with backoff) when it dies, and is stopped gracefully
//! (SIGQUIT, then SIGKILL after a grace period) when the daemon stops — after
//! the drain, so close events still reach PHP. Production setups usually point
//! `--fpm` at their own, dedicated PHP-FPM pool instead.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::sync::Notify;

use crate::config::ManagedFpmConfig;

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
    /// The run directory or the pool config could not be written.
    #[error("cannot prepare {path}: {source}")]
    Prepare {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
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
        let run_dir = config.run_dir.clone().unwrap_or_else(default_run_dir);
        let prepare = |path: &Path, source| ManagedError::Prepare {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(&run_dir).map_err(|e| prepare(&run_dir, e))?;
        let socket = run_dir.join("php-fpm.sock");
        let conf = run_dir.join("php-fpm.conf");
        let as_root = nix::unistd::Uid::effective().is_root();
        std::fs::write(
            &conf,
            pool_config(config, &run_dir, &socket, children, as_root),
        )
        .map_err(|e| prepare(&conf, e))?;
        let plan = Plan {
            binary,
            conf,
            socket: socket.clone(),
            as_root,
        };
        let child = launch(&plan).await?;
        tracing::info!(socket = %socket.display(), children, "managed php-fpm started");
        let stop = Arc::new(Notify::new());
        let supervisor = tokio::spawn(supervise(plan, child, stop.clone()));
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

fn pool_config(
    config: &ManagedFpmConfig,
    run_dir: &Path,
    socket: &Path,
    children: usize,
    as_root: bool,
) -> String {
    let user = match (&config.user, as_root) {
        (Some(user), _) => format!("user = {user}\ngroup = {user}\n"),
        (None, true) => "user = root\ngroup = root\n".to_string(),
        (None, false) => String::new(),
    };
    let mut ini = String::new();
    for (name, value) in &config.php_admin_value {
        ini.push_str(&format!("php_admin_value[{name}] = {value}\n"));
    }
    format!(
        "; Written by ws2fcgi at start; edits are overwritten.\n\
         [global]\n\
         error_log = /proc/self/fd/2\n\
         log_limit = 8192\n\
         daemonize = no\n\
         pid = {pid}\n\
         \n\
         [ws2fcgi]\n\
         {user}\
         listen = {socket}\n\
         listen.mode = {socket_mode}\n\
         {socket_group}\
         pm = static\n\
         pm.max_children = {children}\n\
         pm.max_requests = {max_requests}\n\
         clear_env = no\n\
         catch_workers_output = yes\n\
         decorate_workers_output = no\n\
         {ini}",
        pid = run_dir.join("php-fpm.pid").display(),
        socket = socket.display(),
        socket_mode = config.socket_mode,
        socket_group = config
            .socket_group
            .as_ref()
            .map(|g| format!("listen.group = {g}\n"))
            .unwrap_or_default(),
        max_requests = config.max_requests,
    )
}

async fn launch(plan: &Plan) -> Result<Child, ManagedError> {
    let _ = std::fs::remove_file(&plan.socket);
    let mut cmd = Command::new(&plan.binary);
    cmd.arg("--nodaemonize").arg("--fpm-config").arg(&plan.conf);
    if plan.as_root {
        cmd.arg("--allow-to-run-as-root");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
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
            let _ = child.kill().await;
            return Err(ManagedError::Start(format!(
                "socket {} not open after {START_TIMEOUT:?}",
                plan.socket.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn supervise(plan: Plan, mut child: Child, stop: Arc<Notify>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        tokio::select! {
            status = child.wait() => {
                tracing::error!(status = ?status.ok(), restart_in = ?backoff, "managed php-fpm exited; restarting");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.notified() => return,
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
                graceful_stop(&mut child).await;
                let _ = std::fs::remove_file(&plan.socket);
                return;
            }
        }
    }
}

async fn graceful_stop(child: &mut Child) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
        // SIGQUIT: php-fpm's graceful stop, running requests finish.
        let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!("managed php-fpm did not stop in time; killing it");
        let _ = child.kill().await;
    }
    tracing::info!("managed php-fpm stopped");
}

/// `$RUNTIME_DIRECTORY` (systemd), else `$XDG_RUNTIME_DIR/ws2fcgi`, else a
/// per-user directory under the temp dir.
pub fn default_run_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(dir).join("ws2fcgi");
    }
    std::env::temp_dir().join(format!("ws2fcgi-{}", nix::unistd::Uid::effective()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_config_has_the_socket_children_and_ini() {
        let mut config = ManagedFpmConfig::default();
        config
            .php_admin_value
            .insert("memory_limit".into(), "64M".into());
        let text = pool_config(
            &config,
            Path::new("/run/x"),
            Path::new("/run/x/php-fpm.sock"),
            6,
            true,
        );
        assert!(text.contains("listen = /run/x/php-fpm.sock"));
        assert!(text.contains("pm.max_children = 6"));
        assert!(text.contains("user = root"));
        assert!(text.contains("listen.mode = 0600"));
        assert!(text.contains("php_admin_value[memory_limit] = 64M"));
    }
}
