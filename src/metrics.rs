//! Prometheus metrics, in the text exposition format (`GET /metrics` on the
//! admin listener).
//!
//! Counters are updated where things happen (lock-free atomics); gauges that
//! describe current state (connections, channels, the FastCGI pool) are read
//! from their owners when scraped. The control socket's `stats` op reads the
//! same counters.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of per-event metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    /// `open`, `message` or `close`.
    pub event: &'static str,
}

/// Label of error metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// A short error kind (`connect`, `timeout`, `bad_response`, `origin`, …).
    pub kind: &'static str,
}

/// Label of outcome metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `delivered`, `failed` or `not_delivered` (see `drain::Outcome`).
    pub outcome: &'static str,
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    /// Events sent to PHP, by type.
    pub events: Family<EventLabel, Counter>,
    /// Events without a usable answer, by error kind.
    pub event_errors: Family<KindLabel, Counter>,
    /// Time from asking the pool for a php-fpm connection to having PHP's
    /// whole answer (waiting for a free connection included).
    pub fastcgi_seconds: Histogram,
    /// Handshakes refused before reaching PHP or by PHP, by reason.
    pub handshakes_refused: Family<KindLabel, Counter>,
    /// Connections closed by the daemon, by reason (idle, slow consumer, protocol, …).
    pub closes: Family<KindLabel, Counter>,
    /// TLS handshakes on `tls://` listeners that did not finish, by reason
    /// (`timeout`, `plain_http`, `error`).
    pub tls_handshakes_failed: Family<KindLabel, Counter>,
    /// Payload bytes received from clients.
    pub bytes_in: Counter,
    /// Bytes written to clients (frames, headers included).
    pub bytes_out: Counter,
    /// Connections accepted since start.
    pub connections_total: Counter,
    /// Messages received from clients.
    pub messages_in: Counter,
    /// Messages queued to clients (each recipient counts).
    pub messages_out: Counter,
    /// Publish operations (control socket, HTTP, cluster).
    pub publishes: Counter,
    /// Clients cut off for not reading.
    pub slow_consumers: Counter,
    /// Messages dropped by the inbound rate limit.
    pub rate_limited: Counter,
    /// Envelopes (publishes, requests, replies) this node sent to Redis.
    pub cluster_out: Counter,
    /// Envelopes from other nodes this node received from Redis.
    pub cluster_in: Counter,
    /// Envelopes for other nodes dropped: queue full, or Redis unreachable.
    pub cluster_dropped: Counter,
    /// Times the link to Redis came back after being lost.
    pub cluster_reconnects: Counter,
    /// Messages on the cluster's channels refused, by why: `malformed`,
    /// `unauthenticated` (MAC), `stale`, `replayed`, `misrouted`.
    pub cluster_rejected: Family<KindLabel, Counter>,
    /// Events waiting for PHP in per-connection queues, across all connections.
    pub events_queued: Gauge,
    /// Close events, by outcome (see `drain::Books`).
    pub close_events: Family<OutcomeLabel, Counter>,
    /// Messages of a connection that ended which PHP had not answered yet
    /// (queued, or in PHP), by outcome.
    pub messages_after_close: Family<OutcomeLabel, Counter>,
    /// Pusher channel events (occupied, vacated, member added/removed) for
    /// an app's script, by outcome (`pusher/channel_events.rs`).
    pub pusher_channel_events: Family<OutcomeLabel, Counter>,
    /// Bytes clients sent that the daemon holds (the inbound budget's own
    /// count, see `inbound.rs`).
    pub inbound_bytes: Gauge,
    /// Times a connection stopped reading, by what was full: its
    /// `connection` share or the whole `budget`.
    pub inbound_paused: Family<KindLabel, Counter>,
    /// Handshakes of `ws2fcgi.v1` clients that gave positions, by outcome:
    /// `recovered` (every channel caught up), `lost` (one or more not) or
    /// `unreadable` (a token that could not be read: all lost).
    pub recoveries: Family<OutcomeLabel, Counter>,
    /// Publications sent to clients because they had missed them.
    pub recovered_publications: Counter,
    /// permessage-deflate: messages compressed, bytes before and after, CPU
    /// time, and compressed messages received (see `deflate.rs`).
    pub compression: crate::deflate::Stats,
    connections: Gauge,
    client_sockets: Gauge,
    channels: Gauge,
    fpm_busy: Gauge,
    fpm_idle: Gauge,
    history_publications: Gauge,
    history_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What the scrape reads from the daemon's live state.
pub struct Snapshot {
    /// Open connections.
    pub connections: usize,
    /// Client sockets holding a slot: sockets in their handshake and connections.
    pub client_sockets: usize,
    /// Channels with members.
    pub channels: usize,
    /// FastCGI pool slots in use.
    pub fpm_busy: usize,
    /// Idle pooled FastCGI connections.
    pub fpm_idle: usize,
    /// Publications kept in this node's channel history.
    pub history_publications: usize,
    /// What they cost in bytes (counted against `history.max_bytes`).
    pub history_bytes: usize,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ws2fcgi");
        let m = Self {
            events: Family::default(),
            event_errors: Family::default(),
            // 0.25 ms … ~33 s
            fastcgi_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 18)),
            handshakes_refused: Family::default(),
            closes: Family::default(),
            tls_handshakes_failed: Family::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            connections_total: Counter::default(),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            publishes: Counter::default(),
            slow_consumers: Counter::default(),
            rate_limited: Counter::default(),
            cluster_out: Counter::default(),
            cluster_in: Counter::default(),
            cluster_dropped: Counter::default(),
            cluster_reconnects: Counter::default(),
            cluster_rejected: Family::default(),
            events_queued: Gauge::default(),
            close_events: Family::default(),
            messages_after_close: Family::default(),
            pusher_channel_events: Family::default(),
            inbound_bytes: Gauge::default(),
            inbound_paused: Family::default(),
            connections: Gauge::default(),
            client_sockets: Gauge::default(),
            channels: Gauge::default(),
            recoveries: Family::default(),
            recovered_publications: Counter::default(),
            compression: crate::deflate::Stats::default(),
            history_publications: Gauge::default(),
            history_bytes: Gauge::default(),
            fpm_busy: Gauge::default(),
            fpm_idle: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("events", "Events sent to PHP, by type", m.events.clone());
        r.register(
            "event_errors",
            "Events without a usable answer from PHP, by kind",
            m.event_errors.clone(),
        );
        r.register(
            "fastcgi_duration_seconds",
            "Time from asking for a php-fpm connection to having PHP's whole answer",
            m.fastcgi_seconds.clone(),
        );
        r.register(
            "handshakes_refused",
            "Handshakes refused, by reason",
            m.handshakes_refused.clone(),
        );
        r.register(
            "closes",
            "Connections closed by the daemon, by reason",
            m.closes.clone(),
        );
        r.register(
            "tls_handshakes_failed",
            "TLS handshakes that did not finish, by reason",
            m.tls_handshakes_failed.clone(),
        );
        r.register(
            "bytes_in",
            "Message bytes received from clients",
            m.bytes_in.clone(),
        );
        r.register("bytes_out", "Bytes written to clients", m.bytes_out.clone());
        r.register(
            "connections_accepted",
            "Connections accepted since start",
            m.connections_total.clone(),
        );
        r.register(
            "messages_in",
            "Messages received from clients",
            m.messages_in.clone(),
        );
        r.register(
            "messages_out",
            "Messages queued to clients (each recipient counts)",
            m.messages_out.clone(),
        );
        r.register("publishes", "Publish operations", m.publishes.clone());
        r.register(
            "slow_consumers",
            "Clients cut off because they stopped reading",
            m.slow_consumers.clone(),
        );
        r.register(
            "rate_limited_messages",
            "Client messages dropped or refused by the rate limit",
            m.rate_limited.clone(),
        );
        r.register(
            "cluster_messages_out",
            "Envelopes this node sent to the other nodes through Redis",
            m.cluster_out.clone(),
        );
        r.register(
            "cluster_messages_in",
            "Envelopes from other nodes received through Redis",
            m.cluster_in.clone(),
        );
        r.register(
            "cluster_dropped",
            "Envelopes for other nodes dropped (queue full or Redis unreachable)",
            m.cluster_dropped.clone(),
        );
        r.register(
            "cluster_redis_reconnects",
            "Times the link to Redis came back after being lost",
            m.cluster_reconnects.clone(),
        );
        r.register(
            "cluster_rejected",
            "Messages on the cluster's Redis channels refused (malformed, unauthenticated, stale, replayed, misrouted)",
            m.cluster_rejected.clone(),
        );
        r.register(
            "events_queued",
            "Events waiting for PHP in per-connection queues",
            m.events_queued.clone(),
        );
        r.register(
            "close_events",
            "Close events, by outcome: delivered, failed (reached php-fpm, no usable answer), not_delivered",
            m.close_events.clone(),
        );
        r.register(
            "messages_after_close",
            "Messages of a connection that ended which PHP had not answered yet (queued or in PHP), by outcome",
            m.messages_after_close.clone(),
        );
        r.register(
            "pusher_channel_events",
            "Pusher channel events for an app's script, by outcome: delivered, failed, not_delivered, dropped (queue full)",
            m.pusher_channel_events.clone(),
        );
        r.register(
            "inbound_bytes",
            "Bytes clients sent that the daemon holds: read, being assembled, or waiting for PHP",
            m.inbound_bytes.clone(),
        );
        r.register(
            "inbound_paused",
            "Times a connection stopped reading because its share or the inbound budget was full",
            m.inbound_paused.clone(),
        );
        r.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        r.register(
            "client_sockets",
            "Client sockets counted against max_connections: handshakes and connections",
            m.client_sockets.clone(),
        );
        r.register(
            "channels",
            "Channels with at least one member",
            m.channels.clone(),
        );
        r.register("fpm_busy", "FastCGI pool slots in use", m.fpm_busy.clone());
        r.register(
            "recoveries",
            "Handshakes of ws2fcgi.v1 clients that gave positions, by outcome (recovered, lost, unreadable)",
            m.recoveries.clone(),
        );
        r.register(
            "recovered_publications",
            "Publications sent to reconnecting clients because they had missed them",
            m.recovered_publications.clone(),
        );
        r.register(
            "history_publications",
            "Publications kept in this node's channel history",
            m.history_publications.clone(),
        );
        r.register(
            "history_bytes",
            "Bytes of channel history kept on this node (counted against history.max_bytes)",
            m.history_bytes.clone(),
        );
        let z = &m.compression;
        r.register(
            "compressions",
            "Messages compressed for clients (permessage-deflate); a publication counts once, whatever its members",
            z.compressions.clone(),
        );
        r.register(
            "compression_bytes_in",
            "Message bytes before compression",
            z.bytes_in.clone(),
        );
        r.register(
            "compression_bytes_out",
            "Message bytes after compression",
            z.bytes_out.clone(),
        );
        r.register(
            "compression_cpu_seconds",
            "CPU time spent compressing messages for clients",
            z.cpu_seconds.clone(),
        );
        r.register(
            "inflated_messages",
            "Compressed messages received from clients (permessage-deflate), inflated",
            z.inflated_messages.clone(),
        );
        r.register(
            "fpm_idle",
            "Idle keep-alive FastCGI connections",
            m.fpm_idle.clone(),
        );
        Self { registry, ..m }
    }

    /// Counts one event sent to PHP.
    pub fn event(&self, event: &'static str) {
        self.events.get_or_create(&EventLabel { event }).inc();
    }

    /// Counts an event error of `kind`.
    pub fn event_error(&self, kind: &'static str) {
        self.event_errors.get_or_create(&KindLabel { kind }).inc();
    }

    /// Counts a refused handshake.
    pub fn refused(&self, kind: &'static str) {
        self.handshakes_refused
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// Counts a TLS handshake that did not finish.
    pub fn tls_failed(&self, kind: &'static str) {
        self.tls_handshakes_failed
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// The counter of reading pauses for `kind` (`connection` or `budget`).
    pub fn inbound_paused(&self, kind: &'static str) -> Counter {
        self.inbound_paused
            .get_or_create(&KindLabel { kind })
            .clone()
    }

    /// Counts a handshake that gave positions: every channel `recovered`
    /// or not, and the publications sent for it.
    pub fn recovery(&self, recovered: bool, replayed: usize) {
        let outcome = if recovered { "recovered" } else { "lost" };
        self.recoveries
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        self.recovered_publications.inc_by(replayed as u64);
    }

    /// Counts a handshake whose `ws2fcgi.since.` token could not be read.
    pub fn recovery_unreadable(&self) {
        self.recoveries
            .get_or_create(&OutcomeLabel {
                outcome: "unreadable",
            })
            .inc();
    }

    /// Counts a connection the daemon closed for `kind`.
    pub fn closed(&self, kind: &'static str) {
        self.closes.get_or_create(&KindLabel { kind }).inc();
    }

    /// The text exposition, with gauges set from `now`.
    pub fn render(&self, now: &Snapshot) -> String {
        let set = |g: &Gauge, v: usize| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&self.connections, now.connections);
        set(&self.client_sockets, now.client_sockets);
        set(&self.channels, now.channels);
        set(&self.fpm_busy, now.fpm_busy);
        set(&self.fpm_idle, now.fpm_idle);
        set(&self.history_publications, now.history_publications);
        set(&self.history_bytes, now.history_bytes);
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.event("open");
        m.event_error("timeout");
        m.fastcgi_seconds.observe(0.002);
        m.messages_in.inc();
        let text = m.render(&Snapshot {
            connections: 3,
            client_sockets: 4,
            channels: 1,
            fpm_busy: 2,
            fpm_idle: 6,
            history_publications: 0,
            history_bytes: 0,
        });
        assert!(
            text.contains("ws2fcgi_events_total{event=\"open\"} 1"),
            "{text}"
        );
        assert!(text.contains("ws2fcgi_event_errors_total{kind=\"timeout\"} 1"));
        assert!(text.contains("ws2fcgi_connections 3"));
        assert!(text.contains("ws2fcgi_client_sockets 4"));
        assert!(text.contains("ws2fcgi_fastcgi_duration_seconds_bucket"));
        assert!(text.contains("ws2fcgi_messages_in_total 1"));
        assert!(text.ends_with("# EOF\n"));
    }
}
