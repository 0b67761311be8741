//! The php-fpm the real binary starts itself (`--fpm managed`): its run
//! directory is private, its workers do not see the daemon's environment,
//! and it does not outlive the daemon.
//!
//! Each test runs the `ws2fcgi` binary with a real php-fpm. Tests that plant
//! a directory of another user need root (CI runs as root); as another user
//! they check what they can and say what they skipped.

mod support;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::*;

/// The daemon's arguments for a managed php-fpm running `env.php`, with
/// `run_dir` when given.
fn managed_args(run_dir: Option<&Path>, extra: &[&str]) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--fpm".into(),
        "managed".into(),
        "--fpm-pool-size".into(),
        "1".into(),
        "--script".into(),
        script("env.php").into(),
    ];
    if let Some(dir) = run_dir {
        args.push("--fpm-run-dir".into());
        args.push(dir.into());
    }
    args.extend(extra.iter().map(Into::into));
    args
}

/// No run directory from the environment: the daemon falls back to one of its own.
fn without_runtime_dirs(cmd: &mut std::process::Command) {
    cmd.env_remove("RUNTIME_DIRECTORY")
        .env_remove("XDG_RUNTIME_DIR");
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A directory as another local user would plant it where the daemon looks:
/// mode 0777, owned by `nobody` (when we are root), holding `php-fpm.conf`
/// as a symbolic link to `target`.
fn plant(dir: &Path, target: &Path) {
    std::fs::create_dir(dir).expect("plant the directory");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).expect("chmod 0777");
    std::os::unix::fs::symlink(target, dir.join("php-fpm.conf")).expect("plant the link");
    if is_root() {
        let nobody = nix::unistd::User::from_name("nobody")
            .ok()
            .flatten()
            .map_or(65534, |u| u.uid.as_raw());
        std::os::unix::fs::lchown(dir, Some(nobody), Some(nobody)).expect("chown nobody");
    }
}

/// The run directory named in the daemon's "managed php-fpm started" line.
fn run_dir_in_log(log: &str) -> PathBuf {
    let line = log
        .lines()
        .find(|l| l.contains("managed php-fpm started"))
        .unwrap_or_else(|| panic!("no start line in:\n{log}"));
    let socket = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("socket="))
        .expect("socket= in the start line");
    Path::new(socket).parent().expect("a directory").to_owned()
}

#[tokio::test]
async fn a_planted_run_directory_is_refused_and_nothing_is_written_through_it() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    std::fs::write(&target, "original").unwrap();
    let planted = tmp.path().join("planted");
    plant(&planted, &target);

    let mut daemon = Process::spawn(&managed_args(Some(&planted), &[]), |_| {});
    let status = daemon.wait_exit(Duration::from_secs(20)).await;
    let log = daemon.stderr();
    assert_eq!(status.code(), Some(1), "{log}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "original");
    assert!(
        std::fs::symlink_metadata(planted.join("php-fpm.conf"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the planted link is left as it was"
    );
    assert!(log.contains(&planted.display().to_string()), "{log}");
    if is_root() {
        assert!(
            log.contains("owned by nobody") || log.contains("owned by uid 65534"),
            "{log}"
        );
    } else {
        eprintln!("not root: the directory is ours, so only its mode 0777 is refused");
        assert!(log.contains("writable by its group or others"), "{log}");
    }
    assert!(
        log.contains("--fpm-run-dir"),
        "the error names the fix: {log}"
    );
}

#[tokio::test]
async fn the_fallback_run_directory_is_fresh_private_and_removed_at_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    std::fs::write(&target, "original").unwrap();
    // Where the daemon used to put its files: `$TMPDIR/ws2fcgi-<uid>`.
    let predictable = tmp
        .path()
        .join(format!("ws2fcgi-{}", nix::unistd::Uid::effective()));
    plant(&predictable, &target);

    let mut daemon = Process::spawn(&managed_args(None, &[]), |cmd| {
        without_runtime_dirs(cmd);
        cmd.env("TMPDIR", tmp.path());
    });
    daemon.wait_listening();
    let mut ws = connect(&daemon.url("/")).await;
    let answer: Value = serde_json::from_str(&recv_text(&mut ws).await).unwrap();
    assert_eq!(answer["server"]["WS_EVENT"], "open");

    assert_eq!(std::fs::read_to_string(&target).unwrap(), "original");
    let run_dir = run_dir_in_log(&daemon.stderr());
    assert_ne!(run_dir, predictable);
    assert_eq!(run_dir.parent(), Some(tmp.path()));
    let meta = std::fs::symlink_metadata(&run_dir).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o777, 0o700, "{}", run_dir.display());
    assert_eq!(meta.uid(), nix::unistd::Uid::effective().as_raw());

    close(ws).await;
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}: {}", daemon.stderr());
    assert!(!run_dir.exists(), "the fresh directory is removed at stop");
    assert!(
        predictable.exists(),
        "someone else's directory is left alone"
    );
}

#[tokio::test]
async fn php_sees_neither_the_daemons_token_nor_its_environment() {
    const TOKEN: &str = "t0ken-that-must-stay-in-ws2fcgi";
    let run = tempfile::tempdir().unwrap();
    let config = run.path().join("ws2fcgi.toml");
    std::fs::write(
        &config,
        "[fpm.managed.env]\nAPP_MODE = \"on; \\\"quoted\\\" $x\"\nFROM_DAEMON = \"$PASSED_ON\"\n",
    )
    .unwrap();
    let run_dir = run.path().join("fpm");
    let mut args = managed_args(Some(&run_dir), &[]);
    args.extend(["--config".into(), config.into()]);
    let mut daemon = Process::spawn(&args, |cmd| {
        cmd.env("WS2FCGI_HTTP_CONTROL_TOKEN", TOKEN)
            .env("SOME_SECRET", "not for php")
            .env("PASSED_ON", "chosen by the operator");
    });
    daemon.wait_listening();

    let mut ws = connect(&daemon.url("/")).await;
    let text = recv_text(&mut ws).await;
    assert!(!text.contains(TOKEN), "the token reached PHP: {text}");
    assert!(
        !text.contains("not for php"),
        "the environment reached PHP: {text}"
    );
    let answer: Value = serde_json::from_str(&text).unwrap();
    for (what, vars) in [
        ("$_SERVER", &answer["server"]),
        ("getenv()", &answer["env"]),
    ] {
        assert!(
            vars.get("WS2FCGI_HTTP_CONTROL_TOKEN").is_none(),
            "{what}: {vars}"
        );
        assert!(vars.get("SOME_SECRET").is_none(), "{what}: {vars}");
        assert!(
            vars["PATH"].as_str().is_some_and(|p| !p.is_empty()),
            "{what} keeps PATH: {vars}"
        );
        assert_eq!(vars["APP_MODE"], "on; \"quoted\" $x", "{what}: {vars}");
        assert_eq!(
            vars["FROM_DAEMON"], "chosen by the operator",
            "{what}: {vars}"
        );
    }
    close(ws).await;
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(20)).await.success());
}

/// The pid in a php-fpm pid file, once it is written.
async fn pid_in(file: &Path) -> i32 {
    poll_until(Duration::from_secs(10), "php-fpm's pid file", || {
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    })
    .await
}

/// Is `pid` a live process (not gone, not a zombie)?
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The children of `parent`, from /proc.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

#[tokio::test]
async fn killing_the_daemon_takes_its_php_fpm_and_workers_with_it() {
    let run = tempfile::tempdir().unwrap();
    let run_dir = run.path().join("fpm");
    let mut daemon = Process::spawn(&managed_args(Some(&run_dir), &[]), |_| {});
    daemon.wait_listening();
    let master = pid_in(&run_dir.join("php-fpm.pid")).await;
    let workers = poll_until(Duration::from_secs(10), "php-fpm's workers", || {
        // pool_size 1 + 2 spare children.
        let workers = children_of(master);
        (workers.len() == 3).then_some(workers)
    })
    .await;

    daemon.signal("KILL");
    daemon.wait_exit(Duration::from_secs(10)).await;
    poll_until(
        Duration::from_secs(10),
        "php-fpm's master and workers to end after the daemon was killed",
        || (!alive(master) && workers.iter().all(|&w| !alive(w))).then_some(()),
    )
    .await;
}
