//! The real binary under a service manager's protocols, without systemd:
//! its notifications reach a `NOTIFY_SOCKET` the test binds (readiness once
//! it serves, reloading and ready again on SIGHUP, stopping on SIGTERM, the
//! watchdog's keep-alives, nothing from the php-fpm it manages), and it
//! serves on sockets passed in as systemd's socket activation passes them
//! (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`) instead of binding.
mod support;

use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

/// A fake service manager: the datagram socket `NOTIFY_SOCKET` names.
struct Manager {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    /// Keep-alives seen while waiting for other messages.
    watchdogs: usize,
}

impl Manager {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        Self {
            socket,
            path,
            watchdogs: 0,
        }
    }

    /// The next message that is not `WATCHDOG=1` (counted), 15 s at most.
    fn next(&mut self, daemon: &Process) -> String {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = self.socket.recv(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "no notification within 15 s ({e}); stderr:\n{}",
                    daemon.stderr()
                )
            });
            let message = String::from_utf8(buf[..n].to_vec()).expect("UTF-8");
            // php-fpm's own notifications would say "Ready to handle
            // connections" or "Processes active: …": it must not talk to us.
            for line in message.lines() {
                if let Some(status) = line.strip_prefix("STATUS=") {
                    assert!(
                        ["serving", "reloading", "draining", "stopping"]
                            .iter()
                            .any(|ours| status.starts_with(ours)),
                        "a notification that is not the daemon's: {message:?}"
                    );
                }
            }
            if message == "WATCHDOG=1" {
                self.watchdogs += 1;
                continue;
            }
            return message;
        }
    }
}

/// The value of `NAME=` in a notification.
fn field<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
}

fn monotonic_usec() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000
}

// Multi-threaded: the manager's blocking reads must not stop the client's task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reloading_stopping_and_the_watchdog_reach_the_manager() {
    let dir = tempfile::tempdir().unwrap();
    let mut manager = Manager::bind(dir.path());
    let config = dir.path().join("ws2fcgi.toml");
    let write = |level: &str| {
        std::fs::write(
            &config,
            format!(
                "listen = [\"127.0.0.1:0\"]\nscript = \"{}\"\n[log]\nlevel = \"{level}\"\n\
                 [fpm]\naddress = \"managed\"\npool_size = 1\n\
                 [fpm.managed]\nrun_dir = \"{}\"\n",
                script("echo.php").display(),
                dir.path().join("fpm").display()
            ),
        )
        .unwrap()
    };
    write("info");
    let mut daemon = Process::spawn(&["--config".as_ref(), config.as_os_str()], |cmd| {
        cmd.env("NOTIFY_SOCKET", &manager.path)
            // Keep-alives every 100 ms.
            .env("WATCHDOG_USEC", "200000");
    });

    let ready = manager.next(&daemon);
    assert_eq!(field(&ready, "READY"), Some("1"), "{ready:?}");
    let status = field(&ready, "STATUS").unwrap();
    assert!(status.starts_with("serving: 127.0.0.1:"), "{ready:?}");
    // Ready means serving: a client gets through at once.
    daemon.wait_listening();
    let mut ws = connect(&daemon.url("/")).await;
    assert!(recv_text(&mut ws).await.starts_with("hello "));

    // SIGHUP: reloading (with the monotonic time), then ready again.
    let before = monotonic_usec();
    write("debug");
    daemon.signal("HUP");
    let reloading = manager.next(&daemon);
    assert_eq!(field(&reloading, "RELOADING"), Some("1"), "{reloading:?}");
    let at: u64 = field(&reloading, "MONOTONIC_USEC")
        .expect("MONOTONIC_USEC")
        .parse()
        .unwrap();
    assert!(
        before <= at && at <= monotonic_usec(),
        "{before} {at} {reloading:?}"
    );
    let again = manager.next(&daemon);
    assert_eq!(field(&again, "READY"), Some("1"), "{again:?}");
    assert_eq!(
        field(&again, "STATUS"),
        Some("serving; configuration reloaded")
    );

    // A refused reload is ready again too, and says why.
    std::fs::write(&config, "listen = 5\n").unwrap();
    daemon.signal("HUP");
    assert_eq!(field(&manager.next(&daemon), "RELOADING"), Some("1"));
    let refused = manager.next(&daemon);
    assert_eq!(field(&refused, "READY"), Some("1"), "{refused:?}");
    assert!(
        field(&refused, "STATUS")
            .unwrap()
            .starts_with("serving; reload refused, the old configuration stays: "),
        "{refused:?}"
    );
    send_text(&mut ws, "still here").await;
    assert_eq!(recv_text(&mut ws).await, "still here");

    // Keep-alives while it runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    manager
        .socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 64];
    while manager.watchdogs < 3 {
        if let Ok(n) = manager.socket.recv(&mut buf) {
            assert_eq!(&buf[..n], b"WATCHDOG=1");
            manager.watchdogs += 1;
        }
        assert!(std::time::Instant::now() < deadline, "too few keep-alives");
    }
    manager
        .socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();

    // The client answers the daemon's close.
    let client = tokio::spawn(async move { recv_close(&mut ws).await });
    daemon.signal("TERM");
    let stopping = manager.next(&daemon);
    assert_eq!(field(&stopping, "STOPPING"), Some("1"), "{stopping:?}");
    assert_eq!(field(&stopping, "STATUS"), Some("draining 1 connection"));
    let close = client.await.unwrap().expect("a close frame");
    assert_eq!(u16::from(close.code), 1001);
    let status = daemon.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}\n{}", daemon.stderr());
}

#[tokio::test]
async fn without_a_manager_it_runs_as_before() {
    // An unusable NOTIFY_SOCKET is a start-up error naming it.
    let mut daemon = Process::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--fpm",
            "127.0.0.1:9",
            "--script",
            "/srv/ws.php",
        ],
        |cmd| {
            cmd.env("NOTIFY_SOCKET", "relative/path");
        },
    );
    let status = daemon.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(1), "{}", daemon.stderr());
    assert!(
        daemon
            .stderr()
            .contains("NOTIFY_SOCKET=relative/path: neither an absolute path"),
        "{}",
        daemon.stderr()
    );
}

/// Makes `fd` inheritable or not.
fn inherit(fd: &impl std::os::fd::AsFd, yes: bool) {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let flags = if yes {
        FdFlag::empty()
    } else {
        FdFlag::FD_CLOEXEC
    };
    fcntl(fd, FcntlArg::F_SETFD(flags)).expect("F_SETFD");
}

/// The binary started as systemd starts a socket-activated service: the
/// inheritable fds `fds` moved to 3, 4, … and `LISTEN_PID` set to the
/// daemon's own pid by a shell that then executes it.
fn activated(fds: &[i32], names: &str, args: &[&std::ffi::OsStr]) -> Process {
    // Through fds 200 and up first, so that an fd already at 3 or 4 is not
    // overwritten before it is moved.
    let mut lift = String::new();
    let mut close = String::new();
    let mut place = String::new();
    for (i, fd) in fds.iter().enumerate() {
        lift.push_str(&format!("{}<&{fd} ", 200 + i));
        close.push_str(&format!("{fd}<&- "));
        place.push_str(&format!("{}<&{} {}<&- ", 3 + i, 200 + i, 200 + i));
    }
    let script = format!(
        "exec {lift}; exec {close}; exec {place}; \
         export LISTEN_PID=$$ LISTEN_FDS={} LISTEN_FDNAMES={names}; exec \"$0\" \"$@\"",
        fds.len()
    );
    // bash: dash refuses fd numbers above 9.
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_ws2fcgi"))
        .args(args);
    Process::launch(command, |_| {})
}

#[tokio::test]
async fn passed_sockets_are_served_instead_of_binding() {
    let fpm = Fpm::start(1);
    let dir = tempfile::tempdir().unwrap();
    let websocket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let control_path = dir.path().join("control.sock");
    let control = std::os::unix::net::UnixListener::bind(&control_path).unwrap();
    // `listen` names an address in use: binding it would fail.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = dir.path().join("ws2fcgi.toml");
    std::fs::write(
        &config,
        format!(
            "listen = [\"{}\"]\nscript = \"{}\"\n[fpm]\naddress = \"unix:{}\"\npool_size = 1\n\
             [control]\nsocket = \"{}\"\n",
            taken.local_addr().unwrap(),
            script("echo.php").display(),
            fpm.socket.display(),
            control_path.display()
        ),
    )
    .unwrap();
    inherit(&websocket, true);
    inherit(&control, true);
    let mut daemon = activated(
        &[websocket.as_raw_fd(), control.as_raw_fd()],
        "websocket:control",
        &["--config".as_ref(), config.as_os_str()],
    );
    inherit(&websocket, false);
    inherit(&control, false);
    let passed_addr = websocket.local_addr().unwrap();
    // Only the daemon holds them now.
    drop((websocket, control));

    daemon.wait_listening();
    assert_eq!(daemon.addr, passed_addr);
    let mut ws = connect(&daemon.url("/")).await;
    assert!(recv_text(&mut ws).await.starts_with("hello "));
    send_text(&mut ws, "through a passed socket").await;
    assert_eq!(recv_text(&mut ws).await, "through a passed socket");

    // The passed control socket is served.
    let mut control = tokio::net::UnixStream::connect(&control_path)
        .await
        .expect("the control socket accepts");
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    control
        .write_all(b"{\"op\":\"publish\",\"channel\":\"nobody\",\"data\":\"x\"}\n")
        .await
        .unwrap();
    let mut reply = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::BufReader::new(&mut control).read_line(&mut reply),
    )
    .await
    .expect("a reply within 10 s")
    .unwrap();
    assert_eq!(reply.trim(), r#"{"ok":true,"delivered":0}"#);
    assert!(daemon.stderr().contains("socket activation"));

    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}\n{}", daemon.stderr());
    // The socket unit owns the file: it stays.
    assert!(control_path.exists());
}

#[tokio::test]
async fn a_passed_fd_that_is_not_a_listening_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("not-a-socket")).unwrap();
    let unbound = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    use std::os::fd::AsFd as _;
    for (fd, says) in [
        (file.as_fd(), "fd 3, which is not a socket"),
        (
            unbound.as_fd(),
            "fd 3 (websocket): not listening (Accept=no in the socket unit)",
        ),
    ] {
        inherit(&fd, true);
        let mut daemon = activated(
            &[fd.as_raw_fd()],
            "websocket",
            &[
                "--fpm".as_ref(),
                "127.0.0.1:9".as_ref(),
                "--script".as_ref(),
                "/srv/ws.php".as_ref(),
            ],
        );
        inherit(&fd, false);
        let status = daemon.wait_exit(Duration::from_secs(15)).await;
        assert_eq!(status.code(), Some(1), "{}", daemon.stderr());
        assert!(
            daemon.stderr().contains(says),
            "{says}:\n{}",
            daemon.stderr()
        );
    }
}

/// A socket named `tls` is a TLS listener (plain HTTP on it is told so), and
/// needs `[tls]`: without a tls:// address in `listen` the start stops.
#[tokio::test]
async fn a_passed_socket_named_tls_speaks_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let with_tls = dir.path().join("tls.toml");
    let without = dir.path().join("plain.toml");
    let common = "script = \"/srv/ws.php\"\n[fpm]\naddress = \"127.0.0.1:9\"\n";
    std::fs::write(
        &with_tls,
        format!(
            "listen = [\"tls://{}\"]\n{common}[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            taken.local_addr().unwrap(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    std::fs::write(
        &without,
        format!("listen = [\"{}\"]\n{common}", taken.local_addr().unwrap()),
    )
    .unwrap();

    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    inherit(&refused, true);
    let mut daemon = activated(
        &[refused.as_raw_fd()],
        "tls",
        &["--config".as_ref(), without.as_os_str()],
    );
    inherit(&refused, false);
    let status = daemon.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(1), "{}", daemon.stderr());
    assert!(
        daemon
            .stderr()
            .contains("a `tls` socket needs a tls:// address"),
        "{}",
        daemon.stderr()
    );

    let passed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    inherit(&passed, true);
    let mut daemon = activated(
        &[passed.as_raw_fd()],
        "tls",
        &["--config".as_ref(), with_tls.as_os_str()],
    );
    inherit(&passed, false);
    let addr = passed.local_addr().unwrap();
    drop(passed);
    daemon.wait_listening();
    assert_eq!(daemon.addr, addr);
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("answered and closed within 10 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("this port speaks TLS"), "{answer}");
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}\n{}", daemon.stderr());
}

/// docs/operations.md shows the unit the package ships, word for word.
#[test]
fn the_documented_unit_is_the_shipped_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
    let unit = std::fs::read_to_string(root.join("packaging/deb/ws2fcgi.service")).unwrap();
    let shipped = &unit[unit.find("[Unit]").expect("a [Unit] section")..];
    let after = docs
        .find("(`packaging/deb/ws2fcgi.service`)")
        .expect("operations.md names the unit file");
    let block = &docs[after..];
    let start = block.find("```ini\n").expect("an ini block") + "```ini\n".len();
    let end = start + block[start..].find("```\n").expect("the block's end");
    assert_eq!(
        &block[start..end],
        shipped,
        "docs/operations.md's unit differs from packaging/deb/ws2fcgi.service"
    );
}

/// `systemd-analyze verify` finds nothing to say about the shipped units,
/// with `ExecStart=` pointing at the binary under test (verify checks that
/// it exists; tests/deb/install-test verifies the installed units as they
/// are). Skipped, saying so, where systemd-analyze is missing (scripts/test
/// installs it).
#[test]
fn systemd_analyze_verify_passes_on_the_units() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed (apt-get install systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(root.join("packaging/deb/ws2fcgi.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/ws2fcgi "));
    let unit = unit.replace("/usr/bin/ws2fcgi", env!("CARGO_BIN_EXE_ws2fcgi"));
    std::fs::write(dir.path().join("ws2fcgi.service"), unit).unwrap();
    std::fs::copy(
        root.join("packaging/deb/ws2fcgi.socket"),
        dir.path().join("ws2fcgi.socket"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("ws2fcgi.service"))
        .arg(dir.path().join("ws2fcgi.socket"))
        .output()
        .expect("run systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    // An unknown or misspelt setting is only a warning: none is allowed.
    assert_eq!(said, "", "systemd-analyze verify complained");
}
