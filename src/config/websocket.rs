//! `[websocket]`: one connection's queues, message and frame sizes,
//! timeouts, handshake limits and rate limit.

use std::time::Duration;

use serde::Deserialize;

/// `[websocket]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Events of one connection waiting for PHP at most; when full the daemon
    /// stops reading that socket and TCP backpressure reaches the client.
    #[serde(default = "default_event_queue")]
    pub event_queue: usize,
    /// Bytes queued towards one client at most; past it the client is cut off
    /// as a slow consumer (close 1008).
    #[serde(default = "default_outbound_queue_bytes")]
    pub outbound_queue_bytes: usize,
    /// Bytes of one client's messages the daemon holds at most (read,
    /// being assembled, waiting for or in PHP); when full the daemon stops
    /// reading that socket. A connection with nothing queued may always
    /// receive one message of `max_message_size`.
    #[serde(default = "default_inbound_queue_bytes")]
    pub inbound_queue_bytes: usize,
    /// Largest message a client may send, in bytes (close 1009 past it).
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    /// Largest single frame a client may send, in bytes (close 1009 past it).
    #[serde(default = "default_max_frame_size")]
    pub max_frame_size: usize,
    /// Bytes read from a client socket per read call at most. The buffer
    /// exists only while read bytes wait to be parsed: idle connections hold none.
    #[serde(default = "default_read_buffer_size")]
    pub read_buffer_size: usize,
    /// How often to ping an idle client.
    #[serde(default = "default_ping_interval", with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A client silent for this long (no frame, no pong) is closed with 3008.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A client must send its whole handshake request within this time.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// After sending a close frame, how long to wait for the client's.
    #[serde(default = "default_close_timeout", with = "humantime_serde")]
    pub close_timeout: Duration,
    /// Client sockets at most: connections, counted until their close event
    /// has reached PHP, and sockets still in their handshake, counted from
    /// `accept`. 0 means the open-files limit less 256 and less
    /// `fpm.pool_size`, which is also the most any value gets. Past it a new
    /// socket is answered 503 at once.
    #[serde(default)]
    pub max_connections: usize,
    /// Connections per client address at most (after trusted-proxy rules);
    /// 0 means no limit. Past it handshakes get 429 before PHP.
    #[serde(default)]
    pub max_connections_per_ip: u32,
    /// Largest handshake request head (request line and headers), in bytes;
    /// at least 8192. Past it the client gets 431.
    #[serde(default = "default_max_handshake_bytes")]
    pub max_handshake_bytes: usize,
    /// Origins allowed to connect (`https://example.com`, `https://*.example.com`);
    /// empty allows all. Others get 403 before PHP.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Per-connection inbound message rate; no limit when absent.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Negotiate permessage-deflate (RFC 7692) with clients that offer it.
    #[serde(default = "default_compression")]
    pub compression: bool,
    /// Messages to clients smaller than this many bytes go uncompressed.
    #[serde(default = "default_compression_min_size")]
    pub compression_min_size: usize,
}

/// `[websocket.rate_limit]`: a token bucket per connection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Messages per second a client may send, sustained.
    pub messages_per_second: f64,
    /// Messages a client may send in a burst above the rate.
    pub burst: u32,
    /// What happens to a message over the limit.
    #[serde(default)]
    pub action: RateLimitAction,
    /// With `action = "drop"`, a text message sent to the client for each
    /// dropped message; empty sends nothing.
    #[serde(default = "default_rate_limit_notice")]
    pub notice: String,
}

/// What to do with a message over the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitAction {
    /// Drop it (PHP never sees it) and send the client `notice`.
    #[default]
    Drop,
    /// Close the connection with 1008.
    Close,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            event_queue: default_event_queue(),
            outbound_queue_bytes: default_outbound_queue_bytes(),
            inbound_queue_bytes: default_inbound_queue_bytes(),
            max_message_size: default_max_message_size(),
            max_frame_size: default_max_frame_size(),
            read_buffer_size: default_read_buffer_size(),
            ping_interval: default_ping_interval(),
            idle_timeout: default_idle_timeout(),
            handshake_timeout: default_handshake_timeout(),
            close_timeout: default_close_timeout(),
            max_connections: 0,
            max_connections_per_ip: 0,
            max_handshake_bytes: default_max_handshake_bytes(),
            allowed_origins: Vec::new(),
            rate_limit: None,
            compression: default_compression(),
            compression_min_size: default_compression_min_size(),
        }
    }
}

fn default_event_queue() -> usize {
    8
}
fn default_outbound_queue_bytes() -> usize {
    1024 * 1024
}
fn default_inbound_queue_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_max_message_size() -> usize {
    2 * 1024 * 1024
}
fn default_compression() -> bool {
    true
}
fn default_compression_min_size() -> usize {
    256
}
fn default_max_frame_size() -> usize {
    2 * 1024 * 1024
}
fn default_read_buffer_size() -> usize {
    16 * 1024
}
fn default_ping_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(75)
}
fn default_max_handshake_bytes() -> usize {
    16 * 1024
}
fn default_rate_limit_notice() -> String {
    r#"{"error":"rate limited"}"#.into()
}
fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_close_timeout() -> Duration {
    Duration::from_secs(5)
}
