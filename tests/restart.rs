//! A restart that refuses no one: SIGUSR2 to the real binary under a
//! continuous connect loop. The old process hands its listening sockets to a
//! new one, closes its clients with 1012, delivers their close events to a
//! real php-fpm (recorded by `tests/php/record.php`), and exits 0; no
//! connection attempt meets a refusal, and clients reconnect to the new one.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use support::*;

/// The successor: not our child (the old process started it), so stopped
/// by pid when the test ends, however it ends.
struct Successor(u32);

impl Successor {
    fn alive(&self) -> bool {
        // A zombie (its parent gone, not reaped yet) has ended too.
        std::fs::read_to_string(format!("/proc/{}/stat", self.0))
            .is_ok_and(|stat| !stat.contains(") Z "))
    }

    fn signal(&self, name: &str) {
        let _ = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.0.to_string())
            .status();
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        if self.alive() {
            self.signal("KILL");
        }
    }
}

/// The pid in the old process's `handover: new process started pid=N`.
fn successor_pid(log: &str) -> Option<u32> {
    let line = log
        .lines()
        .find(|l| l.contains("handover: new process started"))?;
    let at = line.find(" pid=")? + " pid=".len();
    line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// Connects to `url` in a loop until `stop`; counts handshakes that got
/// their 101 and attempts that failed in any way (refused, reset, an HTTP
/// error), keeping the first failures' errors.
struct Churn {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Churn {
    fn start(url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (stop, accepted, failed, errors) = (
                stop.clone(),
                accepted.clone(),
                failed.clone(),
                errors.clone(),
            );
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let attempt = tokio::time::timeout(
                        Duration::from_secs(20),
                        tokio_tungstenite::connect_async(url.as_str()),
                    )
                    .await;
                    match attempt {
                        Ok(Ok((ws, _))) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            close(ws).await;
                        }
                        Ok(Err(e)) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.lock().unwrap().push(e.to_string());
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.lock().unwrap().push("no answer in 20 s".into());
                        }
                    }
                }
            }
        });
        Self {
            stop,
            accepted,
            failed,
            errors,
            task,
        }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("churn task");
        let errors = self.errors.lock().unwrap().clone();
        (
            self.accepted.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_hands_the_sockets_over_and_refuses_no_one() {
    const CLIENTS: usize = 20;
    let fpm = Fpm::start(4);
    let log = EventLog::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ws2fcgi.toml");
    std::fs::write(
        &file,
        format!(
            "listen = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nscript = \"{script}\"\n\
             [fpm]\naddress = \"unix:{socket}\"\npool_size = 4\n\
             [control]\nsocket = \"{control}\"\n",
            script = script("faults.php").display(),
            socket = fpm.socket.display(),
            control = dir.path().join("control.sock").display(),
        ),
    )
    .expect("write config");
    // The service manager's notification socket, as systemd's Type=notify gives it.
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
    notify.set_nonblocking(true).expect("non-blocking");
    let mut old = Process::spawn(
        &[
            "--config".to_owned(),
            file.display().to_string(),
            "--worker-threads".to_owned(),
            "1".to_owned(),
        ],
        |command| {
            command.env("NOTIFY_SOCKET", &notify_path);
        },
    );
    old.wait_listening();
    let admin = old.logged_address("serving /healthz and /metrics").await;

    // Clients of the old process, each waiting for its close code.
    let url = old.url(&format!("/?{}", log.query()));
    let mut ids = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..CLIENTS {
        let mut ws = connect(&url).await;
        let hello = recv_text(&mut ws).await;
        ids.push(hello.strip_prefix("hello ").expect("hello").to_owned());
        readers.push(tokio::spawn(async move {
            recv_close(&mut ws).await.map(|f| u16::from(f.code))
        }));
    }

    let churn = Churn::start(old.url("/"));
    poll_until(Duration::from_secs(30), "the connect loop to run", || {
        (churn.accepted() >= 20).then_some(())
    })
    .await;
    old.signal("USR2");

    for reader in readers {
        assert_eq!(reader.await.expect("reader"), Some(1012));
    }
    let status = old.wait_exit(Duration::from_secs(60)).await;
    let stderr = old.stderr();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    let successor = Successor(successor_pid(&stderr).unwrap_or_else(|| panic!("{stderr}")));
    assert!(successor.alive(), "the new process serves:\n{stderr}");
    assert!(
        stderr.contains("handover: told the old process that this one is set up"),
        "{stderr}"
    );
    // systemd is told the new main process, and never that the service stops.
    let mut told = String::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = notify.recv(&mut buf) {
        told.push_str(&String::from_utf8_lossy(&buf[..n]));
        told.push('\n');
    }
    assert!(
        told.contains(&format!("MAINPID={}", successor.0)),
        "notifications:\n{told}"
    );
    assert!(!told.contains("STOPPING=1"), "notifications:\n{told}");

    // PHP saw every old client's close event, with 1012.
    for id in &ids {
        let close = log.close_of(id).await;
        assert_eq!(close["WS_CLOSE_CODE"], "1012", "{close}");
    }

    // The loop goes on against the new process alone.
    let at_exit = churn.accepted();
    poll_until(
        Duration::from_secs(30),
        "connects to the new process",
        || (churn.accepted() >= at_exit + 20).then_some(()),
    )
    .await;
    let (accepted, failed, errors) = churn.finish().await;
    eprintln!("connect loop: {accepted} accepted, {failed} failed across the handover");
    assert_eq!(
        failed, 0,
        "refused or failed connects: {errors:?}\n{stderr}"
    );

    // A client reconnects to the new process, which runs its open event,
    // and the admin listener moved with it.
    let mut ws = connect(&url).await;
    let hello = recv_text(&mut ws).await;
    assert!(hello.starts_with("hello "), "{hello}");
    close(ws).await;
    let (status, _, body) = http_get(admin, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    // So did the control socket, still at its path.
    let mut control = tokio::net::UnixStream::connect(dir.path().join("control.sock"))
        .await
        .expect("the control socket serves");
    {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        control
            .write_all(b"{\"op\":\"publish\",\"channel\":\"none\",\"data\":\"x\"}\n")
            .await
            .expect("write");
        let mut reply = String::new();
        tokio::io::BufReader::new(&mut control)
            .read_line(&mut reply)
            .await
            .expect("read");
        assert!(reply.contains("\"ok\":true"), "{reply}");
    }

    successor.signal("TERM");
    poll_until(Duration::from_secs(30), "the new process to exit", || {
        (!successor.alive()).then_some(())
    })
    .await;
}

/// A new process that cannot start (its configuration went bad) leaves the
/// old one serving: nothing was closed, and a later SIGUSR2 can try again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_handover_leaves_the_old_process_serving() {
    let fpm = Fpm::start(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ws2fcgi.toml");
    let config = format!(
        "listen = [\"127.0.0.1:0\"]\nscript = \"{script}\"\n\
         [fpm]\naddress = \"unix:{socket}\"\npool_size = 1\n",
        script = script("faults.php").display(),
        socket = fpm.socket.display(),
    );
    std::fs::write(&file, &config).expect("write config");
    let mut old = Process::start(&["--config".to_owned(), file.display().to_string()]);
    let mut ws = connect(&old.url("/")).await;
    assert!(recv_text(&mut ws).await.starts_with("hello "));

    std::fs::write(&file, "listen = \"not a list\"\n").expect("break the config");
    old.signal("USR2");
    old.logged("handover failed; this process serves on").await;
    assert!(old.try_wait().is_none(), "the old process serves on");
    send_text(&mut ws, "still here").await;
    assert_eq!(recv_text(&mut ws).await, "still here");
    let mut again = connect(&old.url("/")).await;
    assert!(recv_text(&mut again).await.starts_with("hello "));
    close(again).await;
    close(ws).await;
}
