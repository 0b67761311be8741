//! The `ws2fcgi` binary: parse flags, load and validate the configuration,
//! set up logging, bind (or take the sockets systemd or a predecessor passed),
//! and serve until SIGTERM or SIGINT; SIGHUP reloads; SIGUSR2 hands the
//! sockets to a new process and drains (`handover`). systemd is told how it
//! goes (`notify`).
//!
//! Exit codes: 0 after a clean shutdown, 64 (EX_USAGE) for a bad
//! configuration or flag, 1 when a socket cannot be bound or serving fails.
#![forbid(unsafe_code)]

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use std::sync::Arc;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};
use ws2fcgi::activation;
use ws2fcgi::cli::{Cli, Command};
use ws2fcgi::config::{Config, FpmAddr, ListenAddr, LogFormat, RuntimeKind};
use ws2fcgi::error_line::one_line;
use ws2fcgi::listen::{SocketFile, UnixPermissions};
use ws2fcgi::managed::ManagedFpm;
use ws2fcgi::notify::Notifier;
use ws2fcgi::secret::Secret;
use ws2fcgi::{Context, Listener, Listeners};

/// BSD's EX_USAGE: the configuration or command line is wrong.
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    // First of all: until their handlers exist, SIGHUP would end the daemon
    // (and orphan a managed php-fpm); held back, it waits for them.
    let held = ws2fcgi::signals::hold();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print and exit 0; a bad flag exits EX_USAGE.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("ws2fcgi: {}", ws2fcgi::cli::usage_error_line(&e));
            return ExitCode::from(EX_USAGE);
        }
    };
    if let Some(Command::CheckConfig { file }) = &cli.command {
        return check_config(file, cli.cluster_secret.as_ref());
    }
    let config = match cli.load_config().and_then(|c| c.validate().map(|()| c)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ws2fcgi: {}", one_line(&e));
            return ExitCode::from(EX_USAGE);
        }
    };
    let log_filter = init_tracing(&config);
    if let Err(e) = held {
        tracing::warn!(error = %e, "cannot hold signals back during the start");
    }
    // Sharded: the shards run connections on threads of their own
    // (`shard.rs`); this thread runs the rest (control, admin, cluster).
    let mut builder = match config.runtime {
        RuntimeKind::Shared => tokio::runtime::Builder::new_multi_thread(),
        RuntimeKind::Sharded => tokio::runtime::Builder::new_current_thread(),
    };
    if config.worker_threads > 0 && config.runtime == RuntimeKind::Shared {
        builder.worker_threads(config.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ws2fcgi: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(cli, config, log_filter)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, each cause once (the error types embed their source).
            tracing::error!("{}", one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Validates `file` as a start would. Flags are not applied, but a cluster
/// secret kept out of the file (`WS2FCGI_CLUSTER_SECRET`) is: without it a
/// remote `cluster.redis` would be refused.
fn check_config(file: &std::path::Path, cluster_secret: Option<&Secret>) -> ExitCode {
    let checked = Config::from_file(file).and_then(|mut c| {
        if let Some(secret) = cluster_secret {
            c.cluster.secret = Some(secret.clone());
        }
        c.validate()
    });
    match checked {
        Ok(()) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ws2fcgi: {}", one_line(&e));
            ExitCode::from(EX_USAGE)
        }
    }
}

type FilterHandle = reload::Handle<EnvFilter, Registry>;

/// Logging to stderr, human or JSON; returns the handle that changes the level on SIGHUP.
fn init_tracing(config: &Config) -> FilterHandle {
    let from_env = std::env::var_os("RUST_LOG").is_some();
    let filter = if from_env {
        EnvFilter::from_default_env()
    } else {
        EnvFilter::try_new(&config.log.level).unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let (filter, handle) = reload::Layer::new(filter);
    let json = config.log.format == LogFormat::Json;
    tracing_subscriber::registry()
        .with(filter)
        .with((!json).then(|| {
            fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
        }))
        .with(json.then(|| {
            fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(std::io::stderr)
        }))
        .init();
    handle
}

/// Sets the log level from `log.level`, unless RUST_LOG decides it.
fn log_level_setter(handle: FilterHandle) -> Box<dyn Fn(&str) + Send + Sync> {
    Box::new(move |level: &str| {
        if std::env::var_os("RUST_LOG").is_some() {
            return;
        }
        match EnvFilter::try_new(level) {
            Ok(filter) => {
                if let Err(e) = handle.reload(filter) {
                    tracing::warn!(error = %e, "log level not changed");
                }
            }
            Err(e) => tracing::warn!(error = %e, level, "invalid log.level; not changed"),
        }
    })
}

async fn serve(cli: Cli, mut config: Config, log_filter: FilterHandle) -> anyhow::Result<()> {
    let ws2fcgi::signals::Installed {
        hangup,
        mut stop,
        handover: usr2,
    } = ws2fcgi::signals::install().context("cannot install the signal handlers")?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        fpm = %config.fpm.address.as_ref().map(|a| a.to_string()).unwrap_or_default(),
        pool_size = config.fpm.pool_size,
        worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        runtime = ?config.runtime,
        "ws2fcgi starting"
    );
    let open_files = raise_open_files_limit();
    tracing::info!(open_files, "open-files limit (each client uses one)");
    let notify = Notifier::from_env().context("cannot notify the service manager")?;
    let mut passed = Passed::sort(activation::take()?, config.has_tls_listener())?;
    let mut listeners = Listeners::default();
    let mut unix_files = Vec::new();
    if passed.websocket.is_empty() {
        bind_websocket(&config, &mut listeners, &mut unix_files).await?;
    } else {
        tracing::info!(
            sockets = passed.websocket.len(),
            "socket activation: WebSocket listeners passed in; `listen` is not bound"
        );
        listeners.websocket = std::mem::take(&mut passed.websocket);
    }
    // A predecessor's control socket names the temporary path it was bound
    // at before it was put at `control.socket` (listen.rs): its path is ours.
    let from_predecessor = passed.handover.is_some();
    if let Some((listener, path)) = passed.control.take() {
        match &config.control.socket {
            Some(configured) if *configured == path => {}
            Some(_) if from_predecessor => {}
            configured => anyhow::bail!(
                "socket activation: the control socket passed in is {}, but `control.socket` is {}; \
                 set control.socket to the socket unit's path (PHP is told this path)",
                path.display(),
                configured
                    .as_ref()
                    .map_or_else(|| "unset".into(), |c| c.display().to_string()),
            ),
        }
        listeners.control = Some(listener);
    } else if let Some(path) = &config.control.socket {
        listeners.control = Some(
            ws2fcgi::control::bind(path, &config.control)
                .await
                .context("`control.socket`")?,
        );
        unix_files.extend(SocketFile::at(path).ok());
    }
    if let Some(listener) = passed.admin.take() {
        listeners.admin = Some(listener);
    } else if let Some(admin) = config.admin {
        let listener = tokio::net::TcpListener::bind(admin.0)
            .await
            .with_context(|| format!("`admin`: cannot listen for admin on {}", admin.0))?;
        if !admin.0.ip().is_loopback() {
            tracing::warn!(address = %admin.0, "admin listener is not on loopback; it has no authentication");
        }
        listeners.admin = Some(listener);
    }
    if let Some(listener) = passed.pusher_api.take() {
        listeners.pusher_api = Some(listener);
    } else if let Some(addr) = config.pusher.api_listen {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("`pusher.api_listen`: cannot listen for the Pusher HTTP API on {addr}")
        })?;
        listeners.pusher_api = Some(listener);
    }
    if let Some(listener) = passed.http_control.take() {
        listeners.http_control = Some(listener);
    } else if let Some(addr) = config.control.http {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("`control.http`: cannot listen for HTTP control on {addr}"))?;
        if !addr.ip().is_loopback() && config.control.http_token.is_none() {
            tracing::warn!(address = %addr, "HTTP control endpoint is not on loopback and has no token: anyone who reaches it can publish");
        }
        listeners.http_control = Some(listener);
    }
    let managed = if config.fpm.address == Some(FpmAddr::Managed) {
        if config.fpm.managed.user.is_none() && nix::unistd::Uid::effective().is_root() {
            tracing::warn!("managed php-fpm workers run as root; set fpm.managed.user");
        }
        let started = tokio::select! {
            started = ManagedFpm::start(&config.fpm.managed, config.fpm.pool_size) => started,
            // Dropping the start stops the php-fpm it started.
            () = stop.requested() => {
                notify.stopping("stopping before it served");
                remove_files(unix_files);
                return Ok(());
            }
        };
        let fpm = match started {
            Ok(fpm) => fpm,
            Err(e) => {
                remove_files(unix_files);
                return Err(e.into());
            }
        };
        config.fpm.address = Some(FpmAddr::Unix(fpm.socket().to_owned()));
        Some(fpm)
    } else {
        None
    };
    let sockets = handover_sockets(&listeners).context("cannot keep the sockets to hand over")?;
    let ctx = Arc::new(Context::new(config));
    if let Some(channel) = passed.handover.take() {
        // A SIGUSR2 handover: the predecessor's history before any client.
        let limit = history_limit(&ctx.config().history);
        let records = ws2fcgi::handover::from_predecessor(channel, limit).await;
        if !records.is_empty() {
            let channels = records.len();
            let publications = ctx.hub.import_history(records);
            tracing::info!(
                channels,
                publications,
                "handover: the old process's history is kept here"
            );
        }
    }
    let successor = tokio::spawn(hand_over_on_usr2(
        usr2,
        sockets,
        ctx.clone(),
        notify.clone(),
        managed.is_some(),
    ));
    let reloader = tokio::spawn(ws2fcgi::reload::on_hangup(
        cli,
        ctx.clone(),
        hangup,
        log_level_setter(log_filter),
        notify.clone(),
    ));
    let watchdog = tokio::spawn(notify.clone().keep_alive());
    if let Some(every) = notify.watchdog_interval() {
        tracing::info!(every = ?every, "sending the service manager's watchdog keep-alives");
    }
    let status = format!("serving: {}", describe(&listeners));
    let drain_ctx = ctx.clone();
    let shutdown = async move {
        // First polled once serve() has spawned every accept loop: serving.
        notify.ready(&status);
        tokio::select! {
            () = stop.requested() => {
                let connections = drain_ctx.hub.connection_count();
                let s = if connections == 1 { "" } else { "s" };
                notify.stopping(&format!("draining {connections} connection{s}"));
            }
            // The successor is systemd's main process now: nothing more to tell.
            () = drain_ctx.handover.cancelled() => {}
        }
    };
    let handed_over = ctx.clone();
    let result = ws2fcgi::serve(listeners, ctx, shutdown).await;
    watchdog.abort();
    reloader.abort();
    if handed_over.handed_over() {
        // Until the history is sent (a drain with nothing to drain ends first).
        let mut successor = successor;
        if tokio::time::timeout(HISTORY_SEND_WAIT, &mut successor)
            .await
            .is_err()
        {
            successor.abort();
        }
    } else {
        successor.abort();
    }
    if let Some(fpm) = managed {
        fpm.stop().await;
    }
    if handed_over.handed_over() {
        // The successor serves on these very files.
        drop(unix_files);
    } else {
        remove_files(unix_files);
    }
    result
}

/// Binds every `listen` address (the daemon was not passed WebSocket
/// listeners by its service manager).
async fn bind_websocket(
    config: &Config,
    listeners: &mut Listeners,
    unix_files: &mut Vec<SocketFile>,
) -> anyhow::Result<()> {
    let permissions = if config
        .listen
        .iter()
        .any(|a| matches!(a, ListenAddr::Unix(_)))
    {
        let mode = ws2fcgi::config::parse_mode("listen_mode", &config.listen_mode)?;
        UnixPermissions::resolve(mode, None, config.listen_group.as_deref())
            .map_err(|e| anyhow::anyhow!("`listen_group`: {e}"))?
    } else {
        UnixPermissions::default()
    };
    for addr in &config.listen {
        let listener = Listener::bind_with(addr, &permissions)
            .await
            .with_context(|| format!("`listen`: cannot listen on {addr}"))?;
        if let ListenAddr::Unix(path) = addr {
            unix_files.extend(SocketFile::at(path).ok());
        }
        listeners.websocket.push(listener);
    }
    Ok(())
}

/// Copies of every listening socket, named by role, for a SIGUSR2 handover.
fn handover_sockets(listeners: &Listeners) -> std::io::Result<ws2fcgi::handover::Sockets> {
    let mut sockets = ws2fcgi::handover::Sockets::default();
    for listener in &listeners.websocket {
        match listener {
            Listener::Tcp(l) => sockets.add("websocket", l)?,
            Listener::Unix(l, _) => sockets.add("websocket", l)?,
            Listener::Tls(l) => sockets.add("tls", l)?,
        }
    }
    if let Some(l) = &listeners.control {
        sockets.add("control", l)?;
    }
    if let Some(l) = &listeners.admin {
        sockets.add("admin", l)?;
    }
    if let Some(l) = &listeners.http_control {
        sockets.add("http-control", l)?;
    }
    if let Some(l) = &listeners.pusher_api {
        sockets.add("pusher-api", l)?;
    }
    Ok(sockets)
}

/// How long an old process waits, after its drain, to finish sending the
/// history to its successor.
const HISTORY_SEND_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The most a new process reads of a predecessor's history: what its own
/// `history.max_bytes` holds, twice over, and room for the records.
fn history_limit(history: &ws2fcgi::config::HistoryConfig) -> usize {
    history.max_bytes.saturating_mul(2).saturating_add(16 << 20)
}

/// On SIGUSR2: starts a new process with `sockets` and, once it is set up,
/// makes it systemd's main process, stops accepting, closes the control
/// gate, sends it the channels' history and begins this one's drain
/// (clients closed with 1012). A failed start is logged; this process
/// serves on.
async fn hand_over_on_usr2(
    mut usr2: tokio::signal::unix::Signal,
    sockets: ws2fcgi::handover::Sockets,
    ctx: Arc<Context>,
    notify: Notifier,
    managed: bool,
) {
    while usr2.recv().await.is_some() {
        if ctx.is_shutting_down() {
            tracing::info!("SIGUSR2 received while draining: ignored");
            continue;
        }
        if managed {
            tracing::error!(
                "SIGUSR2 received: a handover needs an external php-fpm (fpm.address), not                  fpm.address = \"managed\"; restart the service instead"
            );
            continue;
        }
        tracing::info!(
            sockets = sockets.len(),
            "SIGUSR2 received: handing the listening sockets to a new process"
        );
        notify.notify("STATUS=handing the listening sockets to a new process");
        match sockets.start_successor().await {
            Ok(successor) => {
                let pid = successor.pid;
                tracing::info!(
                    pid,
                    "handover: the new process is set up; this one stops accepting and drains (1012)"
                );
                notify.notify(&format!(
                    "MAINPID={pid}\nSTATUS=handed over to pid {pid}; draining"
                ));
                ctx.handover.cancel();
                // No control request runs here any more: the history is whole.
                ctx.control_gate.close().await;
                let records = ctx.hub.export_history();
                match successor.send_history(&records).await {
                    Ok(bytes) => tracing::info!(
                        pid,
                        channels = records.len(),
                        bytes,
                        "handover: history sent; the new process serves"
                    ),
                    Err(e) => {
                        tracing::warn!(pid, error = %e, "handover: the history was not sent")
                    }
                }
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "handover failed; this process serves on");
                notify.notify("STATUS=handover failed; serving");
            }
        }
    }
}

/// The sockets passed in by the service manager (or a predecessor), by role.
#[derive(Default)]
struct Passed {
    websocket: Vec<Listener>,
    control: Option<(tokio::net::UnixListener, std::path::PathBuf)>,
    admin: Option<tokio::net::TcpListener>,
    http_control: Option<tokio::net::TcpListener>,
    pusher_api: Option<tokio::net::TcpListener>,
    /// The predecessor waiting for `READY=1` (a SIGUSR2 handover).
    handover: Option<socket2::Socket>,
}

impl Passed {
    /// Sorts the passed sockets by their names; a role given twice, or a
    /// socket of the wrong kind for its role, is an error naming it. A `tls`
    /// socket needs `[tls]` loaded, which a `tls://` address in `listen` does.
    fn sort(sockets: Vec<activation::Passed>, tls_configured: bool) -> anyhow::Result<Self> {
        use activation::Role;
        let mut sorted = Self::default();
        for passed in sockets {
            let what = format!(
                "socket activation: the socket named `{}` ({})",
                passed.name,
                passed.describe()
            );
            let once = |taken: bool| {
                if taken {
                    anyhow::bail!("{what}: a second socket for this role; pass one")
                }
                Ok(())
            };
            let tcp = |p: activation::Passed| -> anyhow::Result<tokio::net::TcpListener> {
                if !p.is_tcp() {
                    anyhow::bail!("{what}: must be a TCP socket (ListenStream=IP:PORT)");
                }
                Ok(tokio::net::TcpListener::from_std(p.socket.into())?)
            };
            match passed.role {
                Role::WebSocket => {
                    let listener = match passed.path() {
                        Some(path) => Listener::Unix(
                            tokio::net::UnixListener::from_std(passed.socket.into())?,
                            path,
                        ),
                        None if passed.is_tcp() => {
                            Listener::Tcp(tokio::net::TcpListener::from_std(passed.socket.into())?)
                        }
                        None => anyhow::bail!("{what}: an unnamed Unix socket"),
                    };
                    sorted.websocket.push(listener);
                }
                Role::TlsWebSocket => {
                    if !tls_configured {
                        anyhow::bail!(
                            "{what}: a `tls` socket needs a tls:// address in `listen` and [tls] \
                             cert and key (the address itself is not bound)"
                        );
                    }
                    sorted.websocket.push(Listener::Tls(tcp(passed)?));
                }
                Role::Control => {
                    once(sorted.control.is_some())?;
                    let Some(path) = passed.path() else {
                        anyhow::bail!(
                            "{what}: must be a Unix socket with a path (ListenStream=/run/ws2fcgi/control.sock)"
                        );
                    };
                    let listener = tokio::net::UnixListener::from_std(passed.socket.into())?;
                    sorted.control = Some((listener, path));
                }
                Role::Admin => {
                    once(sorted.admin.is_some())?;
                    sorted.admin = Some(tcp(passed)?);
                }
                Role::HttpControl => {
                    once(sorted.http_control.is_some())?;
                    sorted.http_control = Some(tcp(passed)?);
                }
                Role::PusherApi => {
                    once(sorted.pusher_api.is_some())?;
                    sorted.pusher_api = Some(tcp(passed)?);
                }
                Role::Handover => {
                    once(sorted.handover.is_some())?;
                    sorted.handover = Some(passed.socket);
                }
            }
        }
        Ok(sorted)
    }
}

/// The bound sockets in one line, for `systemctl status`.
fn describe(listeners: &Listeners) -> String {
    let mut parts: Vec<String> = listeners.websocket.iter().map(Listener::describe).collect();
    if listeners.control.is_some() {
        parts.push("control socket".into());
    }
    if let Some(Ok(addr)) = listeners.admin.as_ref().map(|l| l.local_addr()) {
        parts.push(format!("admin {addr}"));
    }
    if let Some(Ok(addr)) = listeners.http_control.as_ref().map(|l| l.local_addr()) {
        parts.push(format!("http control {addr}"));
    }
    parts.join(", ")
}

/// Removes the daemon's Unix socket files at exit (those still its own).
fn remove_files(files: Vec<SocketFile>) {
    for file in files {
        file.remove();
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the limit in force.
fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-files limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-files limit");
            0
        }
    }
}
