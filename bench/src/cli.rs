//! The command line: one subcommand per mode; doc comments are the `--help`.
//!
//! Every mode is bounded twice: by a count (connections, messages, cycles,
//! requests) and by a `--duration` cap. The parameter structs are also
//! serialized into the JSON line, durations as seconds.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Serialize, Serializer};

use crate::pusher::PusherApp;

/// Load tool for ws2fcgi and any WebSocket server on this machine.
///
/// The human summary goes to stderr; with --json one JSON line per run goes to
/// stdout, so `ws2fcgi-bench … --json >> results.jsonl` collects only figures.
#[derive(Parser, Debug)]
#[command(name = "ws2fcgi-bench", version)]
pub struct Cli {
    /// Print one JSON line (mode, parameters, figures) on stdout after the summary.
    #[arg(long, global = true)]
    pub json: bool,
    /// Tokio worker threads [default: one per core].
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// What to measure.
    #[command(subcommand)]
    pub mode: Mode,
}

/// The measurements.
#[derive(Subcommand, Debug)]
pub enum Mode {
    /// Open N connections at R/s and hold them: connect rate, failures, server RSS per connection.
    Idle(IdleArgs),
    /// C connections each send a message and wait for its reply: round trips/s and latency.
    Echo(EchoArgs),
    /// N members of one channel, K senders at R msgs/s: deliveries/s, loss, delivery latency.
    Broadcast(BroadcastArgs),
    /// Connect, send one message, wait for the reply, close — repeatedly: cycles/s and errors.
    Churn(ChurnArgs),
    /// Pairs of Pusher clients relaying client events on private or presence channels.
    ClientEvents(ClientEventsArgs),
    /// Drive PHP-FPM directly over FastCGI: the raw capacity the bridge can at best approach.
    Fcgi(FcgiArgs),
    /// N clients connect at once and retry as ws2fcgi.js does until admitted;
    /// optionally then a signal (SIGUSR2) and every client's reconnect.
    Storm(StormArgs),
}

/// How to reach the WebSocket server; shared by every WebSocket mode.
#[derive(Args, Debug, Clone, Serialize)]
pub struct WsArgs {
    /// Server URL, ws:// on loopback only (127.0.0.0/8, ::1, localhost).
    #[arg(long)]
    pub url: String,
    /// Spread client sockets over source addresses 127.0.0.1..=127.0.0.N (IPv4 targets).
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u8).range(1..=250))]
    pub sources: u8,
    /// Read buffer per connection in bytes (tungstenite allocates it eagerly).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(256..))]
    pub read_buffer: u32,
    /// Give up on one TCP connect plus WebSocket handshake after this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub connect_timeout: Duration,
    /// Offer this subprotocol in every handshake (e.g. ws2fcgi.v1, whose
    /// header lines the receivers skip).
    #[arg(long)]
    pub subprotocol: Option<String>,
    /// Offer permessage-deflate and inflate what the server compressed
    /// (as a browser does), counting the bytes on the wire.
    #[arg(long)]
    pub deflate: bool,
}

/// `idle` parameters.
#[derive(Args, Debug, Serialize)]
pub struct IdleArgs {
    /// The server and how to connect to it.
    #[command(flatten)]
    #[serde(flatten)]
    pub ws: WsArgs,
    /// Connections to open.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub connections: u64,
    /// Connections opened per second (0: as fast as --concurrency allows).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// Server process whose RSS (VmRSS) is read before connecting and after holding.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// How long to hold the connections once open, before reading the RSS.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub hold: Duration,
    /// Cap on the opening phase.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
}

/// `echo` parameters.
#[derive(Args, Debug, Serialize)]
pub struct EchoArgs {
    /// The server and how to connect to it.
    #[command(flatten)]
    #[serde(flatten)]
    pub ws: WsArgs,
    /// Concurrent connections, one message in flight on each.
    #[arg(short = 'c', long, default_value_t = 8)]
    pub connections: u64,
    /// Text message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Stop after this many round trips in total.
    #[arg(long, default_value_t = 100_000_000)]
    pub count: u64,
    /// Cap on the measuring phase.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// A reply that takes longer than this ends its connection with an error.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub reply_timeout: Duration,
}

/// Where `broadcast` publishes from.
#[derive(Args, Debug, Serialize)]
#[group(required = true, multiple = false)]
pub struct PublishVia {
    /// Publish straight to the daemon's control socket (isolates the daemon from PHP).
    #[arg(long)]
    pub control: Option<PathBuf>,
    /// Publish through PHP: K of the N members send "pub:PAYLOAD" (bench/php/bench.php).
    #[arg(long)]
    pub via_php: bool,
    /// Publish through the Pusher HTTP API at http://HOST:PORT (signed;
    /// needs --pusher): `POST /apps/{id}/events`, --window keep-alive
    /// connections per sender.
    #[arg(long, value_name = "URL", requires = "pusher")]
    pub api: Option<String>,
}

/// `broadcast` parameters.
#[derive(Args, Debug, Serialize)]
pub struct BroadcastArgs {
    /// The server and how to connect to it.
    #[command(flatten)]
    #[serde(flatten)]
    pub ws: WsArgs,
    /// Channel members (connections to URL?channel=NAME). 0 with
    /// --control: publishes to a channel nobody joined, the cost of a
    /// control request alone.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub connections: u64,
    /// Another node of the same cluster: the members are split evenly over
    /// --url and every --also-url; publishing still happens on --url's node
    /// (its --control socket, or its members with --via-php). Repeatable.
    #[arg(long = "also-url", value_name = "URL")]
    pub also_urls: Vec<String>,
    /// Publishers (control-socket connections, or members with --via-php).
    #[arg(long, default_value_t = 1)]
    pub senders: u64,
    /// Messages per second per sender (0: as fast as the window allows).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Stop each sender after this many messages.
    #[arg(long, default_value_t = 10_000_000)]
    pub count: u64,
    /// Cap on the publishing phase.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// Where the messages are published from.
    #[command(flatten)]
    #[serde(flatten)]
    pub via: PublishVia,
    /// Channel name.
    #[arg(long, default_value = "bench")]
    pub channel: String,
    /// Members are Pusher clients of this app (`/app/{key}`, subscribed to
    /// --channel), published to with the control socket's `pusher_publish`
    /// or the HTTP API (--api).
    #[arg(long, value_name = "ID:KEY:SECRET", conflicts_with = "via_php")]
    pub pusher: Option<PusherApp>,
    /// Payload size in bytes (timestamp, sender, sequence, then padding).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Members opened per second while joining (0: as fast as --concurrency allows).
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Handshakes in flight at once while joining.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// Control-socket publishes in flight per sender (pipelining window);
    /// with --api, HTTP connections per sender.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub window: u32,
    /// After the last publish, wait at most this long for outstanding deliveries.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub drain: Duration,
    /// Server process whose CPU time (utime + stime, /proc/PID/stat) is read
    /// when publishing begins and when the deliveries are in: its CPU per
    /// delivery and per publish without the joins.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// `churn` parameters.
#[derive(Args, Debug, Serialize)]
pub struct ChurnArgs {
    /// The server and how to connect to it.
    #[command(flatten)]
    #[serde(flatten)]
    pub ws: WsArgs,
    /// Concurrent workers, each cycling one connection at a time.
    #[arg(short = 'c', long, default_value_t = 8)]
    pub connections: u64,
    /// Text message size in bytes.
    #[arg(long, default_value_t = 16)]
    pub size: usize,
    /// Stop after this many cycles in total.
    #[arg(long, default_value_t = 10_000_000)]
    pub count: u64,
    /// Cap on the measuring phase.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// A reply or close handshake that takes longer than this is an error.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub reply_timeout: Duration,
}

/// `client-events` parameters.
#[derive(Args, Debug, Serialize)]
pub struct ClientEventsArgs {
    /// The server and how to connect to it (the path is replaced by `/app/{key}`).
    #[command(flatten)]
    #[serde(flatten)]
    pub ws: WsArgs,
    /// The Pusher app the clients connect to; its secret signs their subscriptions.
    #[arg(long, value_name = "ID:KEY:SECRET")]
    pub pusher: PusherApp,
    /// Pairs of connections, each pair on its own channel, one event in flight.
    #[arg(short = 'c', long, default_value_t = 8)]
    pub pairs: u64,
    /// Presence channels (users `a<i>` and `b<i>`) instead of private ones.
    #[arg(long)]
    pub presence: bool,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Stop after this many round trips in total.
    #[arg(long, default_value_t = 100_000_000)]
    pub count: u64,
    /// Cap on the measuring phase.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// A relay that takes longer than this ends its pair with an error.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub reply_timeout: Duration,
}

/// `storm`: a reconnect storm, and a restart under it.
#[derive(Args, Debug, Clone, Serialize)]
pub struct StormArgs {
    /// The server and how to connect to it (give `--subprotocol ws2fcgi.v1`
    /// to be turned away with 1013 rather than 503, as ws2fcgi.js is).
    #[command(flatten)]
    #[serde(flatten)]
    pub ws: WsArgs,
    /// Clients, all connecting at once.
    #[arg(short = 'n', long, default_value_t = 10_000)]
    pub clients: u64,
    /// The window of the random wait before a reconnect after 1012 or a
    /// failure (ws2fcgi.js's minDelay).
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub min_delay: Duration,
    /// Once every client is admitted, send `--signal` to this pid and
    /// measure every client's reconnect (a restart by handover).
    #[arg(long)]
    pub signal_pid: Option<u32>,
    /// The signal's name for kill(1).
    #[arg(long, default_value = "USR2")]
    pub signal: String,
    /// Workers that connect and close in a loop during the restart,
    /// counting refused connects.
    #[arg(long, default_value_t = 8)]
    pub churn: u64,
    /// Cap on each phase (the storm, the restart).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
}

/// The WebSocket event an `fcgi` request describes.
#[derive(ValueEnum, Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FcgiEvent {
    /// WS_EVENT=open (GET, no body).
    Open,
    /// WS_EVENT=message (POST, the body).
    Message,
    /// WS_EVENT=close (GET, code 1000).
    Close,
}

/// `fcgi` parameters.
#[derive(Args, Debug, Serialize)]
pub struct FcgiArgs {
    /// PHP-FPM's address: unix:/path/fpm.sock, or host:port on loopback.
    #[arg(long)]
    pub fpm: String,
    /// SCRIPT_FILENAME, an absolute path.
    #[arg(long)]
    pub script: PathBuf,
    /// Concurrent keep-alive connections, one request in flight on each.
    #[arg(short = 'c', long, default_value_t = 8)]
    pub connections: u64,
    /// The event each request describes.
    #[arg(long, value_enum, default_value_t = FcgiEvent::Message)]
    pub event: FcgiEvent,
    /// The message body (message events).
    #[arg(long, default_value = "hello")]
    pub body: String,
    /// QUERY_STRING, as the handshake URL would carry it.
    #[arg(long, default_value = "")]
    pub query: String,
    /// WS_CONTROL_SOCKET to pass, as the daemon does when it has one.
    #[arg(long)]
    pub control_socket: Option<PathBuf>,
    /// Stop after this many requests in total.
    #[arg(long, default_value_t = 100_000_000)]
    pub count: u64,
    /// Cap on the measuring phase.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// A request unanswered after this long is an error.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub timeout: Duration,

    /// Open a new connection for every request instead of keeping each one
    /// alive: what keep-alive saves (the daemon always keeps connections alive)
    #[arg(long)]
    pub connection_per_request: bool,
}

/// Parses "10s", "500ms", "1.5s", "2m", "1h", "250us"; a bare number is seconds.
///
/// ```
/// use std::time::Duration;
/// use ws2fcgi_bench::cli::parse_duration;
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 10s or 500ms"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (ns, us, ms, s, m, h)"
            ));
        }
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("`{text}`: {e}"))
}

/// Serializes a duration as seconds, the unit of every duration in the JSON line.
pub fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn broadcast_needs_exactly_one_publisher_kind() {
        let base = ["b", "broadcast", "--url", "ws://127.0.0.1:1/"];
        assert!(Cli::try_parse_from(base).is_err());
        let both = [&base[..], &["--via-php", "--control", "/tmp/c.sock"]].concat();
        assert!(Cli::try_parse_from(both).is_err());
        let php = [&base[..], &["--via-php"]].concat();
        assert!(Cli::try_parse_from(php).is_ok());
        let nodes = [
            &base[..],
            &[
                "--via-php",
                "--also-url",
                "ws://127.0.0.1:2/",
                "--also-url",
                "ws://127.0.0.1:3/",
            ],
        ]
        .concat();
        let Mode::Broadcast(args) = Cli::try_parse_from(nodes).unwrap().mode else {
            panic!("broadcast")
        };
        assert_eq!(args.also_urls.len(), 2);
    }

    #[test]
    fn the_pusher_api_needs_a_pusher_app() {
        let base = ["b", "broadcast", "--url", "ws://127.0.0.1:1/"];
        let api = [&base[..], &["--api", "http://127.0.0.1:2"]].concat();
        assert!(Cli::try_parse_from(&api).is_err());
        let app = [&api[..], &["--pusher", "1:k:s"]].concat();
        assert!(Cli::try_parse_from(app).is_ok());
        let php = [&base[..], &["--via-php", "--pusher", "1:k:s"]].concat();
        assert!(Cli::try_parse_from(php).is_err());
    }
}
