//! A process's CPU time, from `/proc/PID/stat`.

use std::io;

/// Clock ticks per second of `/proc/PID/stat`'s times (`USER_HZ`: 100 on
/// every Linux architecture the kernel exposes to user space).
pub const USER_HZ: f64 = 100.0;

/// User plus system CPU time of process `pid` (all its threads, the ended
/// ones too), in seconds, at 10 ms resolution.
pub fn cpu_secs(pid: u32) -> io::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path)?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / USER_HZ)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("unreadable {path}")))
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in ticks.
/// The command name (field 2) may hold spaces and parentheses, so fields
/// are counted after its last `)`.
///
/// ```
/// let stat = "42 (ws 2) fcgi) S 1 42 42 0 -1 0 10 0 0 0 150 25 0 0 20 0 3";
/// assert_eq!(ws2fcgi_bench::cpu::parse_cpu_ticks(stat), Some(175));
/// ```
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_cpu() {
        assert!(cpu_secs(std::process::id()).unwrap() >= 0.0);
    }

    #[test]
    fn malformed_stat_is_none() {
        assert_eq!(parse_cpu_ticks("42 (x) S 1"), None);
        assert_eq!(parse_cpu_ticks("no parenthesis"), None);
    }
}
