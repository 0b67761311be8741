//! SIGHUP: reload the configuration without dropping a connection.
//!
//! The file is read again and the same command-line flags are applied on top;
//! a configuration that does not validate is refused with a log line and the
//! old one stays. A valid one is put in force for everything that starts from
//! then on (handshakes, events, limits, routes, log level); settings that need
//! a restart (sockets, the php-fpm address and pool size) keep their old
//! values, each named in a warning. A new value that does not fit one kept
//! (a `websocket.max_message_size` larger than the inbound budget in force)
//! refuses the whole reload, in one log line that says how to fix it.

use std::sync::Arc;

use crate::cli::Cli;
use crate::config::{Config, ConfigError, FpmAddr};
use crate::context::Context;

/// Applies a reloaded configuration; `set_log_level` receives `log.level`.
/// A configuration that does not fit the settings a reload keeps is
/// refused: nothing changes.
pub fn apply(
    ctx: &Context,
    mut next: Config,
    set_log_level: &dyn Fn(&str),
) -> Result<(), ConfigError> {
    let current = ctx.config();
    // A managed php-fpm runs on the socket it was started with.
    if next.fpm.address == Some(FpmAddr::Managed) && current.fpm.address != Some(FpmAddr::Managed) {
        next.fpm.address = current.fpm.address.clone();
    }
    fits_inbound_budget(&next, ctx.inbound.limit())?;
    let level = next.log.level.clone();
    let kept = ctx.reload(next)?;
    for setting in &kept {
        tracing::warn!(
            setting,
            "reload: this setting needs a restart; the old value stays"
        );
    }
    set_log_level(&level);
    tracing::info!(kept = kept.len(), "configuration reloaded");
    Ok(())
}

/// Does one message of the new `websocket.max_message_size` fit `budget`,
/// the inbound byte budget in force? `limits.inbound_bytes` needs a restart,
/// so a reload keeps the running budget whatever the file says; the file's
/// own pair was checked by [`Config::validate`] already.
fn fits_inbound_budget(next: &Config, budget: usize) -> Result<(), ConfigError> {
    let max = next.websocket.max_message_size;
    if max <= budget {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        setting: "websocket.max_message_size",
        message: format!(
            "{max} is more than limits.inbound_bytes in force ({budget}), which a reload keeps, \
             so one message would not fit the inbound budget; restart ws2fcgi to apply \
             limits.inbound_bytes = {}, or set websocket.max_message_size to at most {budget}",
            next.limits.inbound_bytes
        ),
    })
}

/// Reloads on every SIGHUP (`hangup`, see [`crate::signals`]) until the task
/// is aborted; a SIGHUP that came during the start reloads at once. The
/// service manager is told (`notify`): `RELOADING=1` before, `READY=1`
/// after, whether the new configuration was applied or refused.
pub async fn on_hangup(
    cli: Cli,
    ctx: Arc<Context>,
    mut hangup: tokio::signal::unix::Signal,
    set_log_level: Box<dyn Fn(&str) + Send + Sync>,
    notify: crate::notify::Notifier,
) {
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading the configuration");
        notify.reloading();
        let reloaded = cli
            .load_config()
            .and_then(|c| c.validate().map(|()| c))
            .and_then(|next| apply(&ctx, next, &*set_log_level));
        match reloaded {
            Ok(()) => notify.ready("serving; configuration reloaded"),
            Err(e) => {
                let error = crate::error_line::one_line(&e);
                // One line, like every record (the TOML error once took five).
                tracing::error!(%error, "reload refused; the old configuration stays");
                notify.ready(&format!(
                    "serving; reload refused, the old configuration stays: {error}"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_larger_than_the_budget_in_force_is_refused() {
        let mut next = Config::default();
        next.websocket.max_message_size = 1 << 20;
        next.limits.inbound_bytes = 4 << 20;
        fits_inbound_budget(&next, 1 << 20).expect("one message fits exactly");
        let err = fits_inbound_budget(&next, (1 << 20) - 1)
            .unwrap_err()
            .to_string();
        for says in [
            "websocket.max_message_size",
            "limits.inbound_bytes in force (1048575)",
            "restart ws2fcgi to apply limits.inbound_bytes = 4194304",
            "at most 1048575",
        ] {
            assert!(err.contains(says), "{says}: {err}");
        }
    }
}
