//! `ws2fcgi.example.toml` must stay true to the code.
//!
//! The example file documents every setting with its default. These tests
//! parse and validate it, check that every default it shows is the daemon's
//! default, check that every setting the code knows appears in it (so a new
//! setting cannot go undocumented), and run `ws2fcgi check-config` on it and on
//! broken copies of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ws2fcgi::Config;
use ws2fcgi::config::{FpmAddr, ListenAddr};

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ws2fcgi.example.toml")
}

fn example_text() -> String {
    std::fs::read_to_string(example_path()).expect("read ws2fcgi.example.toml")
}

fn example() -> Config {
    let config = Config::from_file(&example_path()).expect("ws2fcgi.example.toml parses");
    config.validate().expect("ws2fcgi.example.toml is valid");
    config
}

/// Debug output of two values must match; the message says which part of the
/// example file to fix.
fn assert_same<T: std::fmt::Debug>(section: &str, example: &T, default: &T) {
    let (e, d) = (format!("{example:#?}"), format!("{default:#?}"));
    assert_eq!(
        e, d,
        "the defaults shown in [{section}] of ws2fcgi.example.toml differ from the code's \
         (left: the example file, right: Config::default())"
    );
}

#[test]
fn example_parses_and_validates() {
    example();
}

#[test]
fn example_shows_the_real_defaults() {
    let example = example();
    let default = Config::default();

    // Top level: the two example scripts are the only departures.
    assert_eq!(example.listen, default.listen, "listen");
    assert_eq!(
        example.listen,
        vec![ListenAddr::Tcp("127.0.0.1:8090".parse().unwrap())]
    );
    assert_eq!(example.script, Some(PathBuf::from("/srv/app/ws.php")));
    assert_eq!(default.script, None);
    assert_eq!(
        example.document_root, default.document_root,
        "document_root"
    );
    assert_eq!(
        example.trusted_proxies, default.trusted_proxies,
        "trusted_proxies"
    );
    assert!(
        example.routes.is_empty() && default.routes.is_empty(),
        "route"
    );

    assert_same("log", &example.log, &default.log);
    assert_same("websocket", &example.websocket, &default.websocket);
    assert_same("shutdown", &example.shutdown, &default.shutdown);

    // [fpm]: only `address` is set, since it is required.
    assert!(matches!(example.fpm.address, Some(FpmAddr::Unix(_))));
    assert_eq!(default.fpm.address, None);
    let mut fpm = example.fpm.clone();
    fpm.address = None;
    assert_same("fpm", &fpm, &default.fpm);

    // [control]: `socket` is set, as most deployments want one.
    assert_eq!(
        example.control.socket,
        Some(PathBuf::from("/run/ws2fcgi/control.sock"))
    );
    assert_eq!(default.control.socket, None);
    let mut control = example.control.clone();
    control.socket = None;
    assert_same("control", &control, &default.control);

    // Everything else, including settings added later, must be the default.
    let mut rest = example.clone();
    rest.script = None;
    rest.fpm.address = None;
    rest.control.socket = None;
    assert_same("any table", &rest, &default);
}

/// Every setting the code knows, as `section -> keys`, read from the field
/// names in `Config::default()`'s pretty Debug output (one field per line,
/// four spaces of indent per level; a struct-valued field opens a table).
fn settings_in_code() -> BTreeMap<String, Vec<String>> {
    let debug = format!("{:#?}", Config::default());
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut tables: Vec<String> = Vec::new();
    for line in debug.lines() {
        let indent = line.len() - line.trim_start().len();
        let depth = indent / 4;
        let Some((name, value)) = line.trim_start().split_once(": ") else {
            continue;
        };
        if depth == 0
            || name.is_empty()
            || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            continue;
        }
        tables.truncate(depth - 1);
        // serde renames the Vec<Route> field (and history's overrides) to
        // their TOML names.
        let name = match (depth, tables.last().map(String::as_str), name) {
            (1, _, "routes") => "route",
            (2, Some("history"), "channels") => "channel",
            (2, Some("pusher"), "apps") => "app",
            _ => name,
        };
        let opens_table = value
            .strip_suffix(" {")
            .is_some_and(|ty| ty.bytes().all(|b| b.is_ascii_alphanumeric()));
        if opens_table {
            tables.push(name.to_owned());
            settings.entry(tables.join(".")).or_default();
        } else {
            settings
                .entry(tables.join("."))
                .or_default()
                .push(name.to_owned());
        }
    }
    settings
}

/// The example file split by table header (`[fpm]`, `[fpm.managed]`); the
/// part before the first header is "". Commented-out lines are kept.
fn sections_in_example(text: &str) -> BTreeMap<String, String> {
    let mut sections = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed
            .strip_prefix('[')
            .and_then(|l| l.strip_suffix(']'))
            .filter(|n| !n.starts_with('['))
        {
            current = name.trim().to_owned();
            continue;
        }
        let body: &mut String = sections.entry(current.clone()).or_default();
        body.push_str(line);
        body.push('\n');
    }
    sections
}

/// Is `key` of `table` set or shown commented out in `section`: as
/// `# key = …`, or, for an optional sub-table, as `# [table.key]`?
fn documents(section: &str, table: &str, key: &str) -> bool {
    let header = if table.is_empty() {
        format!("[{key}]")
    } else {
        format!("[{table}.{key}]")
    };
    section.lines().any(|line| {
        let line = line.trim_start().trim_start_matches('#').trim_start();
        line.trim_end() == header
            || line.trim_end() == format!("[{header}]")
            || line
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
    })
}

#[test]
fn every_setting_is_documented() {
    let text = example_text();
    let sections = sections_in_example(&text);
    let settings = settings_in_code();
    assert!(
        settings.contains_key("fpm") && settings[""].contains(&"listen".to_string()),
        "could not read the settings from Config's Debug output: {settings:?}"
    );
    let mut missing = Vec::new();
    for (table, keys) in &settings {
        let Some(section) = sections.get(table.as_str()) else {
            missing.push(format!("[{table}]"));
            continue;
        };
        for key in keys {
            if key == "route" {
                continue; // an array of tables, checked below
            }
            if !documents(section, table, key) {
                let shown = if table.is_empty() {
                    key.clone()
                } else {
                    format!("{table}.{key}")
                };
                missing.push(shown);
            }
        }
    }
    if !text.contains("[[route]]") {
        missing.push("[[route]]".into());
    }
    assert!(
        missing.is_empty(),
        "ws2fcgi.example.toml does not document: {}",
        missing.join(", ")
    );
}

/// The example with every commented-out setting, table header and nested
/// comment uncommented (`# key = …`, `# [table]`, `# [[route]]`, `# # text`);
/// prose comments stay.
fn example_with_every_option() -> String {
    fn is_setting(line: &str) -> bool {
        let is_header = (line.starts_with('[') && line.ends_with(']')) || line.starts_with("# ");
        let key_len = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(0);
        is_header || (key_len > 0 && line[key_len..].starts_with(" = "))
    }
    let mut out = String::new();
    for line in example_text().lines() {
        match line.strip_prefix("# ") {
            Some(rest) if is_setting(rest.trim_end()) => out.push_str(rest),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[test]
fn every_commented_example_is_valid() {
    let text = example_with_every_option();
    let config = Config::from_toml(&text)
        .unwrap_or_else(|e| panic!("uncommented examples do not parse: {e}\n{text}"));
    config
        .validate()
        .unwrap_or_else(|e| panic!("uncommented examples are not valid: {e}"));
    assert_eq!(config.routes.len(), 2, "the two [[route]] examples");
    assert!(config.document_root.is_some(), "document_root");
    assert!(config.admin.is_some(), "admin");
    assert!(config.server_name.is_some(), "server_name");
    assert!(config.cluster.secret.is_some(), "cluster.secret");
    assert!(
        config.websocket.rate_limit.is_some(),
        "[websocket.rate_limit]"
    );
    assert!(config.control.http.is_some() && config.control.http_token.is_some());
    assert!(config.control.owner.is_some() && config.control.group.is_some());
    let managed = &config.fpm.managed;
    assert!(managed.binary.is_some() && managed.run_dir.is_some() && managed.user.is_some());
    assert_eq!(managed.php_admin_value.len(), 2, "php_admin_value");
    assert_eq!(managed.env.len(), 2, "env");
    assert_eq!(config.pusher.apps.len(), 1, "[[pusher.app]]");
    assert!(config.pusher.api_listen.is_some(), "pusher.api_listen");
}

fn check_config(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ws2fcgi"))
        .arg("check-config")
        .arg(path)
        .output()
        .expect("run ws2fcgi check-config")
}

#[test]
fn check_config_accepts_the_example() {
    let out = check_config(&example_path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn check_config_refuses_a_broken_copy_and_names_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = example_text();
    let cases = [
        // (what to replace, with what, what the error must name)
        ("pool_size = 8", "pool_size = 0", "fpm.pool_size"),
        (
            "worker_threads = 0",
            "worker_threads = 5000",
            "worker_threads",
        ),
        (
            "idle_timeout = \"75s\"",
            "idle_timeout = \"10s\"",
            "websocket.idle_timeout",
        ),
        (
            "\nmode = \"0660\"",
            "\nmode = \"rw-rw----\"",
            "control.mode",
        ),
        (
            "listen_mode = \"0660\"",
            "listen_mode = \"0999\"",
            "listen_mode",
        ),
        (
            "request_timeout = \"30s\"",
            "request_timeout = \"soon\"",
            "request_timeout",
        ),
        (
            "event_queue = 8",
            "event_queue = 8\neven_queue = 8",
            "even_queue",
        ),
    ];
    for (from, to, named) in cases {
        assert_eq!(
            text.matches(from).count(),
            1,
            "`{from}` should occur once in the example"
        );
        let path = dir.path().join("broken.toml");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write broken copy");
        let out = check_config(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{to}: stderr: {stderr}");
        assert!(
            stderr.contains(named),
            "{to}: `{named}` not named in: {stderr}"
        );
    }
}
