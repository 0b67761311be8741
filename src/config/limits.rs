//! `[limits]`: limits shared by every client (unfinished handshakes per
//! address, IPv6 grouping, the inbound byte budget).

use serde::Deserialize;

/// `[limits]`: limits across connections.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Sockets from one peer address that have not yet sent their handshake
    /// request, at most; past it a new socket from that address is answered
    /// 429 at once. Counted by the socket's own peer (a trusted proxy's and
    /// Unix-socket peers are not counted). 0 means no limit.
    #[serde(default = "default_max_handshakes_per_ip")]
    pub max_handshakes_per_ip: u32,
    /// IPv6 clients are counted per block of this prefix length (32 to 128)
    /// by every per-address limit; IPv4-mapped IPv6 addresses count as IPv4.
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// Bytes of client messages the daemon holds at most, all connections
    /// together; when spent, sockets that send more are not read until bytes
    /// are given back. Needs a restart.
    #[serde(default = "default_inbound_bytes")]
    pub inbound_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_handshakes_per_ip: default_max_handshakes_per_ip(),
            ipv6_prefix: default_ipv6_prefix(),
            inbound_bytes: default_inbound_bytes(),
        }
    }
}

fn default_max_handshakes_per_ip() -> u32 {
    64
}
fn default_ipv6_prefix() -> u8 {
    64
}
fn default_inbound_bytes() -> usize {
    64 * 1024 * 1024
}
