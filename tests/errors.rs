//! What a new user reads when start-up fails: the real binary (and
//! `check-config`) with each bad input prints one line that names the
//! setting or flag and says what to write instead, and exits 64 for a wrong
//! configuration, 1 when the system refuses (a socket that cannot be bound).
//!
//! Each case is one a user met: a cause printed twice, `expected usize`,
//! "unexpected argument '-3'", `InvalidClientConfig`, a five-line TOML error.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the binary with `args`; only errors are logged (`RUST_LOG=error`),
/// so a start that fails at binding prints nothing but the failure.
fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ws2fcgi"))
        .args(args)
        .env("RUST_LOG", "error")
        .env("NO_COLOR", "1")
        .env_remove("WS2FCGI_HTTP_CONTROL_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ws2fcgi")
}

/// The one line of stderr; panics (showing it all) unless there is exactly
/// one, and unless the exit code is `code`.
fn one_line(output: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "stderr:\n{stderr}");
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, not:\n{stderr}");
    lines[0].to_owned()
}

fn assert_says(line: &str, wanted: &[&str]) {
    for want in wanted {
        assert!(line.contains(want), "{want:?} missing from:\n{line}");
    }
}

/// A start up to the binding of sockets: flags that pass validation.
fn start_args(dir: &Path) -> Vec<String> {
    let script = dir.join("ws.php");
    std::fs::write(&script, "<?php\n").unwrap();
    vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--fpm".into(),
        format!("unix:{}", dir.join("fpm.sock").display()),
        "--script".into(),
        script.display().to_string(),
    ]
}

/// `cannot bind control socket …: No such file or directory (os error 2):
/// No such file or directory (os error 2)`: the error embeds its cause and
/// the printer walked the chain as well.
#[test]
fn a_control_socket_in_a_missing_directory_names_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("missing/control.sock");
    let mut args = start_args(dir.path());
    args.extend(["--control".into(), socket.display().to_string()]);
    let line = one_line(&run(&args), 1);
    assert_says(
        &line,
        &[
            "`control.socket`",
            &socket.display().to_string(),
            "check that the path and its directory exist",
        ],
    );
    assert_eq!(
        line.matches("No such file or directory").count(),
        1,
        "{line}"
    );
}

#[test]
fn a_port_in_use_names_the_setting_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut args = start_args(dir.path());
    args[1] = addr.clone();
    let line = one_line(&run(&args), 1);
    assert_says(
        &line,
        &[
            &format!("`listen`: cannot listen on {addr}"),
            "another process listens there",
        ],
    );
    assert_eq!(line.matches("Address already in use").count(), 1, "{line}");
}

/// Each type the configuration uses, wrong, in a file: `check-config` and a
/// start both print one line with the file's line, the setting and what it
/// takes (it said `expected usize`, over five lines).
#[test]
fn a_wrong_type_in_the_file_says_what_the_setting_takes() {
    let dir = tempfile::tempdir().unwrap();
    let base = "script = \"/srv/app/ws.php\"\n[fpm]\naddress = \"unix:/run/php.sock\"\n";
    for (bad, wanted) in [
        (
            "pool_size = \"eight\"",
            "line 4: `fpm.pool_size` must be a whole number ≥ 0, not the string \"eight\"",
        ),
        (
            "pool_size = -3",
            "line 4: `fpm.pool_size` must be a whole number ≥ 0, not -3",
        ),
        (
            "request_timeout = 30",
            "line 4: `fpm.request_timeout` must be a duration such as \"30s\", \"500ms\" or \"2m\", not 30",
        ),
        (
            "pool_sise = 3",
            "line 4: unknown setting `fpm.pool_sise`; did you mean `fpm.pool_size`?",
        ),
        (
            "[fpm.managed]\nmax_requests = 5000000000",
            "line 5: `fpm.managed.max_requests` must be a whole number from 0 to 4294967295",
        ),
        (
            "[websocket.rate_limit]\nmessages_per_second = \"fast\"\nburst = 1",
            "line 5: `websocket.rate_limit.messages_per_second` must be a number",
        ),
        (
            "[websocket.rate_limit]\nburst = 1",
            "line 4: `websocket.rate_limit.messages_per_second` is required",
        ),
        (
            "[control]\nhttp = true",
            "line 5: `control.http` must be an address such as \"127.0.0.1:8091\" (IP:PORT), not true",
        ),
        (
            "[log]\nformat = \"xml\"",
            "line 5: `log.format` must be one of \"human\", \"json\", not \"xml\"",
        ),
        (
            "managed = 3",
            "line 4: `fpm.managed` must be a table ([section], or { key = value }), not 3",
        ),
        (
            "[control]\nsocket = /run/ws2fcgi/control.sock",
            "line 5, column 10: not valid TOML: string values must be quoted",
        ),
    ] {
        let file = dir.path().join("ws2fcgi.toml");
        std::fs::write(&file, format!("{base}{bad}\n")).unwrap();
        let prefix = format!("ws2fcgi: invalid config file {}, ", file.display());
        let checked = one_line(&run(&["check-config".as_ref(), file.as_os_str()]), 64);
        assert!(checked.starts_with(&prefix), "{checked}");
        assert_says(&checked, &[wanted]);
        let started = one_line(&run(&["--config".as_ref(), file.as_os_str()]), 64);
        assert_eq!(started, checked, "a start says what check-config says");
    }
}

/// `--fpm-pool-size -3` said "unexpected argument '-3' found" (clap took
/// `-3` for a flag), then a usage block.
#[test]
fn a_negative_number_for_a_numeric_flag_is_a_bad_value() {
    for (flag, value, wanted) in [
        ("--fpm-pool-size", "-3", "must be a whole number ≥ 1"),
        ("--fpm-pool-size", "0", "must be a whole number ≥ 1"),
        ("--worker-threads", "-1", "must be a whole number ≥ 0"),
    ] {
        let line = one_line(&run(&[flag, value]), 64);
        assert_eq!(
            line,
            format!(
                "ws2fcgi: invalid value '{value}' for '{flag} <N>': {wanted}; see ws2fcgi --help"
            )
        );
    }
    let line = one_line(&run(&["--fpm-pool", "3"]), 64);
    assert_says(
        &line,
        &[
            "'--fpm-pool'",
            "a similar argument exists: '--fpm-pool-size'",
        ],
    );
}

/// A bad cluster URL said only `Redis URL did not parse - InvalidClientConfig`.
#[test]
fn a_bad_cluster_url_says_what_is_wrong_and_the_form() {
    let dir = tempfile::tempdir().unwrap();
    for (url, wanted) in [
        ("localhost:6379", "`localhost:6379` has no scheme"),
        ("http://redis:6379/", "`http://` is not a Redis URL"),
        (
            "redis://redis:6379/zero",
            "is not a usable Redis URL (the database, after the last '/', is not a number)",
        ),
    ] {
        let mut args = start_args(dir.path());
        args.extend(["--cluster".into(), url.into()]);
        let line = one_line(&run(&args), 64);
        assert_says(
            &line,
            &[
                "invalid setting `cluster.redis`",
                wanted,
                "redis://host:port/",
                "unix:///path/to/redis.sock",
            ],
        );
        assert!(!line.contains("InvalidClientConfig"), "{line}");
    }
}

#[test]
fn a_missing_config_file_is_one_line_with_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nowhere.toml");
    for args in [
        vec!["check-config".as_ref(), file.as_os_str()],
        vec!["--config".as_ref(), file.as_os_str()],
    ] {
        let line = one_line(&run(&args), 64);
        assert_says(
            &line,
            &[
                &format!("cannot read config file {}", file.display()),
                "check that the path and its directory exist",
            ],
        );
        assert_eq!(
            line.matches("No such file or directory").count(),
            1,
            "{line}"
        );
    }
}
