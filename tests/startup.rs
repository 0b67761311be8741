//! The real binary while it starts: signals that come early, and Unix socket
//! paths that are in use, stale, or must never be reachable with a looser
//! mode than configured.

mod support;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::*;

/// A signal mask line of /proc/PID/status (`SigBlk`, `SigIgn`, `SigCgt`).
fn signal_mask(pid: u32, line: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let value = status
                .lines()
                .find_map(|l| l.strip_prefix(line)?.strip_prefix(":"))?;
            u64::from_str_radix(value.trim(), 16).ok()
        })
        .unwrap_or(0)
}

fn bit(signal: Signal) -> u64 {
    1 << (signal as u32 - 1)
}

/// Does any thread of `pid` keep SIGHUP blocked? A binary that holds its
/// signals from `main`'s first line spawns its runtime threads while they
/// are held, and they keep them blocked.
fn holds_signals(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(Result::ok).any(|task| {
        let tid = task.file_name().to_string_lossy().into_owned();
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
            .ok()
            .and_then(|status| {
                let mask = status.lines().find_map(|l| l.strip_prefix("SigBlk:"))?;
                u64::from_str_radix(mask.trim(), 16).ok()
            })
            .is_some_and(|mask| mask & bit(Signal::SIGHUP) != 0)
    })
}

/// Whether `pid` has exec'd the daemon. Until then it is the test's own
/// child inside `posix_spawn`, which blocks every signal until it sets the
/// mask it was asked for, just before `exec`: that mask must not be taken for
/// the daemon's own.
fn is_the_daemon(pid: u32) -> bool {
    let daemon = Path::new(env!("CARGO_BIN_EXE_ws2fcgi"));
    let daemon = daemon
        .canonicalize()
        .unwrap_or_else(|_| daemon.to_path_buf());
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == daemon)
}

/// Waits until the process runs its own code. A binary that `holds` its
/// signals shows it exactly: SIGHUP blocked (`main`'s first line) or
/// handled. One that does not shows nothing there; for it, 1 ms after
/// Rust's runtime set SIGPIPE to ignored (right before `main`) stands in.
/// Before that the dynamic loader runs, where no program can handle a
/// signal.
fn wait_until_main(pid: u32, holds: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut runtime_seen: Option<Instant> = None;
    loop {
        let hup = bit(Signal::SIGHUP);
        if !is_the_daemon(pid) {
            // Still the test's child, before `exec`.
        } else if signal_mask(pid, "SigBlk") & hup != 0 || signal_mask(pid, "SigCgt") & hup != 0 {
            return;
        } else if !holds && signal_mask(pid, "SigIgn") & bit(Signal::SIGPIPE) != 0 {
            let seen = *runtime_seen.get_or_insert_with(Instant::now);
            if seen.elapsed() >= Duration::from_millis(1) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "ws2fcgi never reached main");
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// SIGHUP 0 to 10 ms into the start, 20 times: never fatal (it was, with
/// exit 129, before the handlers were installed first), never lost (it was
/// when it came while tokio registered its handler), the daemon serves, and
/// the reload it asked for happens once it does.
#[tokio::test]
async fn a_sighup_during_the_start_is_kept_and_never_fatal() {
    let fpm = Fpm::start(1);
    let fpm_arg = format!("unix:{}", fpm.socket.display());
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--fpm",
        &fpm_arg,
        "--fpm-pool-size",
        "1",
        "--script",
        &script("echo.php").display().to_string(),
    ];
    let holds = {
        let daemon = Process::start(&args);
        holds_signals(daemon.pid())
    };
    let mut fatal = Vec::new();
    for round in 0..20u64 {
        let mut daemon = Process::spawn(&args, |_| {});
        wait_until_main(daemon.pid(), holds);
        // Busy-waits rather than sleeps: the delays are finer than a timer tick.
        let delay = Duration::from_micros(round * 500);
        let at = Instant::now();
        while at.elapsed() < delay {
            std::hint::spin_loop();
        }
        let pid = Pid::from_raw(daemon.pid() as i32);
        kill(pid, Signal::SIGHUP).expect("send SIGHUP");
        // Not ended before it listens, nor after; and not lost: the reload runs.
        if let Err(status) = daemon.listening_or_exit() {
            fatal.push(format!("{delay:?}: {status}"));
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let outcome = loop {
            if let Some(status) = daemon.try_wait() {
                break Err(status.to_string());
            }
            if daemon.stderr().contains("SIGHUP received") {
                break Ok(());
            }
            if Instant::now() > deadline {
                break Err("lost: no reload within 10 s".to_string());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if let Err(what) = outcome {
            fatal.push(format!("{delay:?}: {what}"));
            continue;
        }
        let mut ws = connect(&daemon.url("/")).await;
        assert!(recv_text(&mut ws).await.starts_with("hello"));
        close(ws).await;
        daemon.signal("TERM");
        let status = daemon.wait_exit(Duration::from_secs(20)).await;
        assert!(status.success(), "{status}: {}", daemon.stderr());
    }
    assert!(
        fatal.is_empty(),
        "SIGHUP ended or was lost in {} of 20 starts: {}",
        fatal.len(),
        fatal.join(", ")
    );
}

/// Processes whose command line mentions `needle` (a unique temp path), alive.
fn processes_mentioning(needle: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()? == "Z"))
                .unwrap_or(true);
            !zombie && String::from_utf8_lossy(&cmdline).contains(needle)
        })
        .collect()
}

/// SIGTERM while a managed php-fpm starts: the daemon exits 0 and leaves no
/// php-fpm behind.
#[tokio::test]
async fn a_sigterm_during_the_start_leaves_no_php_fpm_behind() {
    let run = tempfile::tempdir().unwrap();
    let run_dir = run.path().join("fpm");
    let run_dir_arg = run_dir.display().to_string();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--fpm",
        "managed",
        "--fpm-pool-size",
        "1",
        "--fpm-run-dir",
        &run_dir_arg,
        "--script",
        &script("echo.php").display().to_string(),
    ];
    let holds = {
        let mut daemon = Process::start(&args);
        let holds = holds_signals(daemon.pid());
        daemon.signal("TERM");
        daemon.wait_exit(Duration::from_secs(20)).await;
        holds
    };
    for delay_ms in [0, 5, 20] {
        let mut daemon = Process::spawn(&args, |_| {});
        wait_until_main(daemon.pid(), holds);
        std::thread::sleep(Duration::from_millis(delay_ms));
        kill(Pid::from_raw(daemon.pid() as i32), Signal::SIGTERM).expect("send SIGTERM");
        let status = daemon.wait_exit(Duration::from_secs(20)).await;
        assert!(status.success(), "{status}: {}", daemon.stderr());
        poll_until(Duration::from_secs(10), "no php-fpm left", || {
            processes_mentioning(&run_dir_arg).is_empty().then_some(())
        })
        .await;
    }
}

/// A plain Unix listener that never accepts, its backlog full: a connect to
/// it fails with EAGAIN, as with a live daemon too busy to accept.
struct BusyListener {
    _listener: socket2::Socket,
    _queued: Vec<socket2::Socket>,
}

impl BusyListener {
    fn bind(path: &Path) -> Self {
        use socket2::{Domain, SockAddr, Socket, Type};
        let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        listener.bind(&SockAddr::unix(path).unwrap()).unwrap();
        listener.listen(0).unwrap();
        let mut queued = Vec::new();
        loop {
            let client = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
            client.set_nonblocking(true).unwrap();
            match client.connect(&SockAddr::unix(path).unwrap()) {
                Ok(()) => queued.push(client),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("connect: {e}"),
            }
            assert!(queued.len() < 1000, "the backlog never filled");
        }
        Self {
            _listener: listener,
            _queued: queued,
        }
    }
}

fn inode(path: &Path) -> u64 {
    std::fs::symlink_metadata(path)
        .expect("the socket file")
        .ino()
}

/// A live daemon too busy to accept (connect: EAGAIN) keeps its socket: a
/// second one refuses to start, naming the path, and the file is untouched.
/// (Before, any failed connect counted as stale: the file was unlinked.)
#[tokio::test]
async fn a_busy_live_socket_is_not_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let listen = dir.path().join("ws.sock");
    let control = dir.path().join("control.sock");
    let _busy_listen = BusyListener::bind(&listen);
    let _busy_control = BusyListener::bind(&control);
    let listen_arg = format!("unix:{}", listen.display());
    let control_arg = control.display().to_string();
    let common = [
        "--fpm",
        "unix:/nonexistent/fpm.sock",
        "--script",
        "/nonexistent/ws.php",
    ];
    for (path, flags) in [
        (&listen, ["--listen", listen_arg.as_str()]),
        (&control, ["--control", control_arg.as_str()]),
    ] {
        let before = inode(path);
        let mut args = vec!["--listen", "127.0.0.1:0"];
        if flags[0] == "--listen" {
            args.clear();
        }
        args.extend(flags);
        args.extend(common);
        let mut daemon = Process::spawn(&args, |_| {});
        let status = daemon.wait_exit(Duration::from_secs(20)).await;
        let log = daemon.stderr();
        assert_eq!(status.code(), Some(1), "{log}");
        assert!(log.contains(&path.display().to_string()), "{log}");
        assert!(log.contains("in use"), "{log}");
        assert_eq!(inode(path), before, "the live socket file was replaced");
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "no temporary socket left: {names:?}");
}

/// A stale socket file (no listener) is replaced, and the new socket is
/// never seen with another mode than `listen_mode`: it is bound under a
/// temporary name, given its mode, made to listen, and only then put at its
/// path. (Before, it was bound at its path with the umask's mode, listened,
/// and was chmod-ed after: connectable by anyone for that moment.)
#[tokio::test]
async fn a_stale_socket_is_replaced_and_never_seen_with_a_looser_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ws.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind the stale socket"));
    let stale = inode(&path);
    let config = dir.path().join("ws2fcgi.toml");
    std::fs::write(&config, "listen_mode = \"0600\"\n").unwrap();
    let fpm = Fpm::start(1);
    let fpm_arg = format!("unix:{}", fpm.socket.display());
    let unix_arg = format!("unix:{}", path.display());
    let args = [
        "--config",
        &config.display().to_string(),
        "--listen",
        "127.0.0.1:0",
        "--listen",
        &unix_arg,
        "--fpm",
        &fpm_arg,
        "--script",
        &script("echo.php").display().to_string(),
    ];
    let mut daemon = Process::spawn(&args, |_| {});
    // Watch the path from the first moment until the daemon listens.
    let mut seen = 0;
    loop {
        if let Ok(meta) = std::fs::symlink_metadata(&path)
            && meta.ino() != stale
        {
            assert_eq!(
                meta.permissions().mode() & 0o777,
                0o600,
                "seen with a looser mode"
            );
            seen += 1;
        }
        if daemon.stderr().contains("accepting WebSocket clients") {
            break;
        }
        assert!(daemon.try_wait().is_none(), "exited: {}", daemon.stderr());
        std::thread::sleep(Duration::from_micros(100));
    }
    daemon.wait_listening();
    eprintln!("the new socket was seen {seen} times while the daemon started");
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    tokio::net::UnixStream::connect(&path)
        .await
        .expect("the new socket accepts");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "the socket and the config, no temporary name: {names:?}"
    );
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(20)).await.success());
    assert!(!path.exists(), "removed at exit");
}
