//! A process's resident memory, from `/proc/PID/status`.

use std::io;

/// VmRSS of process `pid` in bytes (`None` for this process).
pub fn vm_rss(pid: Option<u32>) -> io::Result<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".into(),
    };
    let status = std::fs::read_to_string(&path)?;
    parse_vm_rss(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no VmRSS in {path}")))
}

/// Finds `VmRSS:   1234 kB` in a status file and returns bytes.
///
/// ```
/// let status = "Name:\tws2fcgi\nVmRSS:\t    2048 kB\nThreads:\t3\n";
/// assert_eq!(ws2fcgi_bench::rss::parse_vm_rss(status), Some(2048 * 1024));
/// ```
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib = line.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_rss() {
        assert!(vm_rss(None).unwrap() > 0);
    }

    #[test]
    fn malformed_status_is_none() {
        assert_eq!(parse_vm_rss("VmRSS: lots\n"), None);
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }
}
