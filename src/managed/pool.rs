//! The managed php-fpm's configuration file, written at every start.
//!
//! The workers get a cleared environment (`clear_env = yes`): the daemon's
//! own (an HTTP control token in `WS2FCGI_HTTP_CONTROL_TOKEN`, credentials of
//! the service manager) would otherwise be in every request's `$_SERVER` and
//! `getenv()`. They keep [`PASSED_THROUGH`] and get what the operator lists
//! in `fpm.managed.env`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::config::ManagedFpmConfig;

/// Variables of the daemon's environment the workers keep, when set: where
/// programs are found, the temp dir and the locale.
pub const PASSED_THROUGH: [&str; 4] = ["PATH", "TMPDIR", "LANG", "LC_ALL"];

/// The pool file for `children` workers listening on `socket`.
pub fn render(
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
        let _ = writeln!(ini, "php_admin_value[{name}] = {value}");
    }
    let env = environment(&config.env, |name| std::env::var_os(name).is_some());
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
         clear_env = yes\n\
         {env}\
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

/// The pool's `env[…]` lines: [`PASSED_THROUGH`] variables that `is_set`
/// (copied by php-fpm from its own environment, `$NAME`), then the
/// operator's, which win. A value `$NAME` copies NAME from ws2fcgi's
/// environment; any other value is literal, quoted and escaped for
/// php-fpm's INI parser (`"`, `\` and `$` are escaped).
fn environment(configured: &BTreeMap<String, String>, is_set: impl Fn(&str) -> bool) -> String {
    let mut lines = String::new();
    for name in PASSED_THROUGH {
        if is_set(name) && !configured.contains_key(name) {
            let _ = writeln!(lines, "env[{name}] = ${name}");
        }
    }
    for (name, value) in configured {
        if crate::config::is_environment_reference(value) {
            let _ = writeln!(lines, "env[{name}] = {value}");
        } else {
            let escaped = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('$', "\\$");
            let _ = writeln!(lines, "env[{name}] = \"{escaped}\"");
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_has_the_socket_children_ini_and_a_cleared_environment() {
        let mut config = ManagedFpmConfig::default();
        config
            .php_admin_value
            .insert("memory_limit".into(), "64M".into());
        let text = render(
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
        assert!(text.contains("clear_env = yes\n"));
        assert!(!text.contains("clear_env = no"));
    }

    #[test]
    fn environment_passes_the_basics_and_quotes_the_operators_values() {
        let mut configured = BTreeMap::new();
        configured.insert("APP_ENV".to_string(), "on".to_string());
        configured.insert("ODD".to_string(), r#"a"b\c$d ${HOME};e"#.to_string());
        configured.insert("DATABASE_URL".to_string(), "$DATABASE_URL".to_string());
        configured.insert("LANG".to_string(), "C.UTF-8".to_string());
        let text = environment(&configured, |name| name != "LC_ALL");
        assert_eq!(
            text,
            "env[PATH] = $PATH\n\
             env[TMPDIR] = $TMPDIR\n\
             env[APP_ENV] = \"on\"\n\
             env[DATABASE_URL] = $DATABASE_URL\n\
             env[LANG] = \"C.UTF-8\"\n\
             env[ODD] = \"a\\\"b\\\\c\\$d \\${HOME};e\"\n"
        );
    }
}
