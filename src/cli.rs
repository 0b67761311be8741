//! The command line. Every flag has a twin in the TOML file and wins over it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, FpmAddr, ListenAddr, LogFormat, Route};
use crate::secret::Secret;

/// WebSockets for plain PHP: every WebSocket event becomes one FastCGI request to PHP-FPM.
///
/// Example:
///   ws2fcgi --listen 127.0.0.1:8090 --fpm unix:/run/php/php8.2-fpm.sock \
///           --script /srv/app/ws.php --control /run/ws2fcgi/control.sock
#[derive(Debug, Clone, Parser)]
#[command(version, about, long_about, verbatim_doc_comment)]
pub struct Cli {
    /// TOML configuration file (see ws2fcgi.example.toml); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to accept WebSocket clients on: IP:PORT, tls://IP:PORT or unix:/path. Repeatable. [toml: listen]
    /// Default 127.0.0.1:8090.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<ListenAddr>,

    /// Certificate chain (PEM) of tls:// listeners, the server's certificate first. [toml: tls.cert]
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of that certificate. [toml: tls.key]
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// PHP-FPM's address: unix:/path, HOST:PORT, or `managed` (ws2fcgi starts its own). [toml: fpm.address]
    #[arg(long, value_name = "ADDR")]
    pub fpm: Option<FpmAddr>,

    /// The PHP script for every WebSocket path (absolute). [toml: script]
    #[arg(long, value_name = "PATH")]
    pub script: Option<PathBuf>,

    /// A path served by its own script: /chat=/srv/app/chat.php. Repeatable. [toml: `[[route]]` tables]
    #[arg(long, value_name = "PATH=SCRIPT")]
    pub route: Vec<Route>,

    /// DOCUMENT_ROOT for PHP; default: the script's directory. [toml: document_root]
    #[arg(long, value_name = "DIR")]
    pub document_root: Option<PathBuf>,

    /// What PHP sees as SERVER_NAME (NAME or NAME:PORT) instead of the client's Host. [toml: server_name]
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,

    /// A proxy whose X-Forwarded-For/-Proto are believed: CIDR, address, or unix. Repeatable. [toml: trusted_proxies]
    #[arg(long, value_name = "CIDR")]
    pub trusted_proxy: Vec<crate::proxy::Trusted>,

    /// Path of the control socket PHP pushes through. [toml: control.socket]
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,

    /// Address of the HTTP publish endpoint (POST /publish …); off by default. [toml: control.http]
    #[arg(long, value_name = "IP:PORT")]
    pub http_control: Option<std::net::SocketAddr>,

    /// Bearer token the HTTP publish endpoint requires. [toml: control.http_token]
    #[arg(
        long,
        value_name = "TOKEN",
        env = "WS2FCGI_HTTP_CONTROL_TOKEN",
        hide_env_values = true
    )]
    pub http_control_token: Option<Secret>,

    /// Run directory of the managed php-fpm (--fpm managed). [toml: fpm.managed.run_dir]
    #[arg(long, value_name = "DIR")]
    pub fpm_run_dir: Option<PathBuf>,

    /// Admin listener for /healthz and /metrics: IP:PORT, or PORT for 127.0.0.1:PORT. Off by default. [toml: admin]
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<crate::config::AdminAddr>,

    /// Keep-alive FastCGI connections at most (≤ pm.max_children). Default 8. [toml: fpm.pool_size]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = at_least_one)]
    pub fpm_pool_size: Option<usize>,

    /// Redis URL that makes this node one of a cluster (redis://host:port/); off by default. [toml: cluster.redis]
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,

    /// This node's id in the cluster: 1 to 32 of A-Z a-z 0-9 _ -. Default: the host name, '-', 6 random hex digits. [toml: cluster.node_id]
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,

    /// The secret every cluster node authenticates its messages with (the same on each). [toml: cluster.secret]
    #[arg(
        long,
        value_name = "SECRET",
        env = "WS2FCGI_CLUSTER_SECRET",
        hide_env_values = true
    )]
    pub cluster_secret: Option<Secret>,

    /// Threads that run connections; 0 (the default) for one per core. [toml: worker_threads]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = at_least_zero)]
    pub worker_threads: Option<usize>,

    /// shared (one work-stealing runtime, the default) or sharded (a thread per shard, each serving its own connections). [toml: runtime]
    #[arg(long, value_name = "KIND", env = "WS2FCGI_RUNTIME")]
    pub runtime: Option<crate::config::RuntimeKind>,

    /// Shards of --runtime sharded; 0 (the default) for one per core. [toml: shards]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = at_least_zero)]
    pub shards: Option<usize>,

    /// How long a broadcast waits before waking its members' writers, e.g. 5ms; 0 (the default): at once. [toml: fanout_delay]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub fanout_delay: Option<std::time::Duration>,

    /// Log format: human or json. [toml: log.format]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log filter, e.g. info or ws2fcgi=debug; RUST_LOG wins. [toml: log.level]
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// What to do instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Load and validate a configuration file, print the result, and exit (0 valid, 64 invalid).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

/// A flag's whole number ≥ 1. Negative numbers reach the parser
/// (`allow_negative_numbers`), so `-3` is refused for what it is rather than
/// taken for an unknown flag.
fn at_least_one(text: &str) -> Result<usize, String> {
    whole_number(text, 1)
}

/// A flag's whole number ≥ 0 (see [`at_least_one`]).
fn at_least_zero(text: &str) -> Result<usize, String> {
    whole_number(text, 0)
}

fn whole_number(text: &str, min: usize) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(format!("must be a whole number ≥ {min}")),
    }
}

/// A command-line error as one line: clap's message and tips, without the
/// usage block, and where to read more.
pub fn usage_error_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .collect();
    let message = parts.join("; ");
    format!(
        "{}; see ws2fcgi --help",
        message.strip_prefix("error: ").unwrap_or(&message)
    )
}

impl Cli {
    /// The configuration: the file (if any) with the flags applied on top. Not yet validated.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        self.apply(&mut config);
        Ok(config)
    }

    /// Applies the flags given to `config`.
    pub fn apply(&self, config: &mut Config) {
        if !self.listen.is_empty() {
            config.listen = self.listen.clone();
        }
        if let Some(cert) = &self.tls_cert {
            config.tls.cert = Some(cert.clone());
        }
        if let Some(key) = &self.tls_key {
            config.tls.key = Some(key.clone());
        }
        if let Some(fpm) = &self.fpm {
            config.fpm.address = Some(fpm.clone());
        }
        if let Some(n) = self.worker_threads {
            config.worker_threads = n;
        }
        if let Some(kind) = self.runtime {
            config.runtime = kind;
        }
        if let Some(n) = self.shards {
            config.shards = n;
        }
        if let Some(delay) = self.fanout_delay {
            config.fanout_delay = delay;
        }
        if let Some(script) = &self.script {
            config.script = Some(script.clone());
        }
        if !self.route.is_empty() {
            config.routes = self.route.clone();
        }
        if let Some(root) = &self.document_root {
            config.document_root = Some(root.clone());
        }
        if let Some(name) = &self.server_name {
            config.server_name = Some(name.clone());
        }
        if !self.trusted_proxy.is_empty() {
            config.trusted_proxies = self.trusted_proxy.clone();
        }
        if let Some(control) = &self.control {
            config.control.socket = Some(control.clone());
        }
        if let Some(addr) = self.http_control {
            config.control.http = Some(addr);
        }
        if let Some(token) = &self.http_control_token {
            config.control.http_token = Some(token.clone());
        }
        if let Some(dir) = &self.fpm_run_dir {
            config.fpm.managed.run_dir = Some(dir.clone());
        }
        if let Some(admin) = self.admin {
            config.admin = Some(admin);
        }
        if let Some(size) = self.fpm_pool_size {
            config.fpm.pool_size = size;
        }
        if let Some(url) = &self.cluster {
            config.cluster.redis = Some(url.clone());
        }
        if let Some(id) = &self.node_id {
            config.cluster.node_id = Some(id.clone());
        }
        if let Some(secret) = &self.cluster_secret {
            config.cluster.secret = Some(secret.clone());
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        if let Some(level) = &self.log_level {
            config.log.level = level.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_command_line_parses() {
        let cli = Cli::try_parse_from([
            "ws2fcgi",
            "--listen",
            "127.0.0.1:8090",
            "--fpm",
            "unix:/run/php/php8.2-fpm.sock",
            "--script",
            "/srv/app/ws.php",
            "--control",
            "/run/ws2fcgi/control.sock",
        ])
        .unwrap();
        let config = cli.load_config().unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.control.socket,
            Some(PathBuf::from("/run/ws2fcgi/control.sock"))
        );
    }

    #[test]
    fn secret_flags_are_applied_but_never_printed() {
        let cli = Cli::try_parse_from([
            "ws2fcgi",
            "--http-control-token",
            "token-7f3a9c",
            "--cluster-secret",
            "cluster-secret-0b8e4d2a",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(
            !shown.contains("token-7f3a9c") && !shown.contains("0b8e4d2a"),
            "{shown}"
        );
        let mut config = Config::default();
        cli.apply(&mut config);
        assert!(
            config
                .control
                .http_token
                .is_some_and(|t| t.matches(b"token-7f3a9c"))
        );
        assert_eq!(
            config.cluster.secret.as_ref().map(Secret::expose),
            Some("cluster-secret-0b8e4d2a")
        );
    }

    #[test]
    fn bad_flags_are_refused_with_a_reason() {
        let err = Cli::try_parse_from(["ws2fcgi", "--listen", "nowhere"]).unwrap_err();
        assert!(err.to_string().contains("unix:/path"), "{err}");
        let err = Cli::try_parse_from(["ws2fcgi", "--route", "chat.php"]).unwrap_err();
        assert!(err.to_string().contains("PATH=SCRIPT"), "{err}");
    }

    #[test]
    fn negative_numbers_are_bad_values_not_unknown_flags() {
        for (flag, value, want) in [
            ("--fpm-pool-size", "-3", "≥ 1"),
            ("--fpm-pool-size", "0", "≥ 1"),
            ("--fpm-pool-size", "eight", "≥ 1"),
            ("--worker-threads", "-1", "≥ 0"),
        ] {
            let err = Cli::try_parse_from(["ws2fcgi", flag, value]).unwrap_err();
            let line = usage_error_line(&err);
            assert_eq!(
                line,
                format!(
                    "invalid value '{value}' for '{flag} <N>': must be a whole number {want}; \
                     see ws2fcgi --help"
                )
            );
        }
        let cli = Cli::try_parse_from(["ws2fcgi", "--fpm-pool-size", "3", "--worker-threads", "0"])
            .unwrap();
        assert_eq!((cli.fpm_pool_size, cli.worker_threads), (Some(3), Some(0)));
    }

    #[test]
    fn usage_errors_are_one_line_with_clap_tips() {
        let err = Cli::try_parse_from(["ws2fcgi", "--fpm-pool", "3"]).unwrap_err();
        assert_eq!(
            usage_error_line(&err),
            "unexpected argument '--fpm-pool' found; \
             tip: a similar argument exists: '--fpm-pool-size'; see ws2fcgi --help"
        );
    }

    #[test]
    fn cluster_flags_set_their_twins() {
        let cli = Cli::try_parse_from([
            "ws2fcgi",
            "--cluster",
            "redis://127.0.0.1:6379/",
            "--node-id",
            "web-1",
        ])
        .unwrap();
        let config = cli.load_config().unwrap();
        assert_eq!(
            config.cluster.redis.as_deref(),
            Some("redis://127.0.0.1:6379/")
        );
        assert_eq!(config.cluster.node_id.as_deref(), Some("web-1"));
    }

    #[test]
    fn help_is_complete() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
