//! The real binary while it starts: signals that come early.

mod support;

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

/// Waits until the process runs its own code: it blocks or handles SIGHUP
/// (`main`'s first instruction holds it), or, for a binary that does
/// neither, 1 ms after Rust's runtime set SIGPIPE to ignored (right before
/// `main`). Before that the dynamic loader runs, and no program can handle a
/// signal there.
fn wait_until_main(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut runtime_seen: Option<Instant> = None;
    loop {
        let hup = bit(Signal::SIGHUP);
        if signal_mask(pid, "SigBlk") & hup != 0 || signal_mask(pid, "SigCgt") & hup != 0 {
            return;
        }
        if signal_mask(pid, "SigIgn") & bit(Signal::SIGPIPE) != 0 {
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
/// exit 129, before the handlers were installed first), the daemon serves,
/// and the reload it asked for happens once it does.
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
    let mut fatal = Vec::new();
    for round in 0..20u64 {
        let mut daemon = Process::spawn(&args, |_| {});
        wait_until_main(daemon.pid());
        // Busy-waits rather than sleeps: the delays are finer than a timer tick.
        let delay = Duration::from_micros(round * 500);
        let at = Instant::now();
        while at.elapsed() < delay {
            std::hint::spin_loop();
        }
        let pid = Pid::from_raw(daemon.pid() as i32);
        kill(pid, Signal::SIGHUP).expect("send SIGHUP");
        if let Err(status) = daemon.listening_or_exit() {
            fatal.push(format!("{delay:?}: {status}"));
            continue;
        }
        let mut ws = connect(&daemon.url("/")).await;
        assert!(recv_text(&mut ws).await.starts_with("hello"));
        poll_until(
            Duration::from_secs(10),
            "the reload SIGHUP asked for",
            || daemon.stderr().contains("SIGHUP received").then_some(()),
        )
        .await;
        close(ws).await;
        daemon.signal("TERM");
        let status = daemon.wait_exit(Duration::from_secs(20)).await;
        assert!(status.success(), "{status}: {}", daemon.stderr());
    }
    assert!(
        fatal.is_empty(),
        "SIGHUP ended {} of 20 starts: {}",
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
    for delay_ms in [0, 5, 20] {
        let mut daemon = Process::spawn(&args, |_| {});
        wait_until_main(daemon.pid());
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
