//! SIGHUP: reload the configuration without dropping a connection.
//!
//! The file is read again and the same command-line flags are applied on top;
//! a configuration that does not validate is refused with a log line and the
//! old one stays. A valid one is put in force for everything that starts from
//! then on (handshakes, events, limits, routes, log level); settings that need
//! a restart (sockets, the php-fpm address and pool size) keep their old
//! values, each named in a warning.

use std::sync::Arc;

use crate::cli::Cli;
use crate::config::{Config, FpmAddr};
use crate::context::Context;

/// Applies a reloaded configuration; `set_log_level` receives `log.level`.
pub fn apply(ctx: &Context, mut next: Config, set_log_level: &dyn Fn(&str)) {
    let current = ctx.config();
    // A managed php-fpm runs on the socket it was started with.
    if next.fpm.address == Some(FpmAddr::Managed) && current.fpm.address != Some(FpmAddr::Managed) {
        next.fpm.address = current.fpm.address.clone();
    }
    let level = next.log.level.clone();
    let kept = ctx.reload(next);
    for setting in &kept {
        tracing::warn!(
            setting,
            "reload: this setting needs a restart; the old value stays"
        );
    }
    set_log_level(&level);
    tracing::info!(kept = kept.len(), "configuration reloaded");
}

/// Reloads on every SIGHUP (`hangup`, see [`crate::signals`]) until the task
/// is aborted; a SIGHUP that came during the start reloads at once.
pub async fn on_hangup(
    cli: Cli,
    ctx: Arc<Context>,
    mut hangup: tokio::signal::unix::Signal,
    set_log_level: Box<dyn Fn(&str) + Send + Sync>,
) {
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading the configuration");
        match cli.load_config().and_then(|c| c.validate().map(|()| c)) {
            Ok(next) => apply(&ctx, next, &*set_log_level),
            // One line, like every record (the TOML error once took five).
            Err(e) => tracing::error!(
                error = %crate::error_line::one_line(&e),
                "reload refused; the old configuration stays"
            ),
        }
    }
}
