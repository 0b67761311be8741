//! The `ws2fcgi-bench` binary: parse flags, raise RLIMIT_NOFILE, run one mode
//! on a multi-threaded runtime, print the summary (stderr) and, with
//! `--json`, one JSON line (stdout).
//!
//! Exit codes: 0 when the run completed (failures are figures, not exit
//! codes), 64 (EX_USAGE) for a bad flag or a non-loopback target, 1 when the
//! run could not be set up (e.g. the control socket is unreachable).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use ws2fcgi_bench::UsageError;
use ws2fcgi_bench::cli::Cli;

/// BSD's EX_USAGE.
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Soft limit up to the hard limit: every connection is a descriptor.
    let nofile = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            eprintln!("ws2fcgi-bench: cannot raise RLIMIT_NOFILE: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft)
        }
    };
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ws2fcgi-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ws2fcgi_bench::run(cli.mode)) {
        Ok(report) => {
            eprintln!("{}", report.human);
            if cli.json {
                println!("{}", report.json_line(nofile, threads));
            }
            ExitCode::SUCCESS
        }
        Err(e) if e.is::<UsageError>() => {
            eprintln!("ws2fcgi-bench: {e}");
            ExitCode::from(EX_USAGE)
        }
        Err(e) => {
            eprintln!("ws2fcgi-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
