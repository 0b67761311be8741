//! The public contract between ws2fcgi, PHP and WebSocket clients.
//!
//! Every name that PHP code or an operator sees — CGI variables, directive
//! response headers, close codes — lives here as a documented constant, so the
//! code and `docs/protocol.md` can be checked against one list. Changing a value
//! here is a breaking change for every PHP application built on ws2fcgi.

/// The CGI variable naming the event: [`EVENT_OPEN`], [`EVENT_MESSAGE`] or [`EVENT_CLOSE`].
pub const VAR_EVENT: &str = "WS_EVENT";
/// The connection's opaque id, unique for the daemon's life.
pub const VAR_CONNECTION_ID: &str = "WS_CONNECTION_ID";
/// `text` or `binary`, on message events.
pub const VAR_MESSAGE_TYPE: &str = "WS_MESSAGE_TYPE";
/// The close code, on close events.
pub const VAR_CLOSE_CODE: &str = "WS_CLOSE_CODE";
/// The close reason, on close events.
pub const VAR_CLOSE_REASON: &str = "WS_CLOSE_REASON";
/// Prefix of the per-connection metadata variables (`WS_META_USER`, …).
pub const VAR_META_PREFIX: &str = "WS_META_";
/// The control socket's path, when one is configured.
pub const VAR_CONTROL_SOCKET: &str = "WS_CONTROL_SOCKET";
/// The TLS version of a `tls://` connection (`TLSv1.2`, `TLSv1.3`).
pub const VAR_SSL_PROTOCOL: &str = "SSL_PROTOCOL";
/// On `tls://` connections: `SUCCESS` (a client certificate verified) or `NONE`.
pub const VAR_SSL_CLIENT_VERIFY: &str = "SSL_CLIENT_VERIFY";
/// The client certificate's subject, RFC 2253 (`CN=alice,O=Example`).
pub const VAR_SSL_CLIENT_S_DN: &str = "SSL_CLIENT_S_DN";
/// The client certificate's issuer, RFC 2253.
pub const VAR_SSL_CLIENT_I_DN: &str = "SSL_CLIENT_I_DN";
/// The client certificate's serial number, upper-case hex.
pub const VAR_SSL_CLIENT_SERIAL: &str = "SSL_CLIENT_SERIAL";
/// The client certificate, PEM.
pub const VAR_SSL_CLIENT_CERT: &str = "SSL_CLIENT_CERT";

/// `WS_EVENT` of the handshake event: PHP's status accepts or rejects the connection.
pub const EVENT_OPEN: &str = "open";
/// `WS_EVENT` of a data message from the client.
pub const EVENT_MESSAGE: &str = "message";
/// `WS_EVENT` of the last event of a connection.
pub const EVENT_CLOSE: &str = "close";

/// Pusher apps with a `script` (see `docs/protocol.md`, "Pusher events"):
/// the app's id.
pub const VAR_PUSHER_APP_ID: &str = "WS_PUSHER_APP_ID";
/// The Pusher connection's `socket_id`.
pub const VAR_PUSHER_SOCKET_ID: &str = "WS_PUSHER_SOCKET_ID";
/// The Pusher channel an event is about.
pub const VAR_PUSHER_CHANNEL: &str = "WS_PUSHER_CHANNEL";
/// A client event's name (`client-…`).
pub const VAR_PUSHER_EVENT: &str = "WS_PUSHER_EVENT";
/// The user: the presence member, else the user signed in with `pusher:signin`.
pub const VAR_PUSHER_USER_ID: &str = "WS_PUSHER_USER_ID";

/// `WS_EVENT` of a Pusher subscription PHP authorizes (`auth = "php"`).
pub const EVENT_SUBSCRIBE: &str = "subscribe";
/// `WS_EVENT` of a Pusher client event (`client-*`).
pub const EVENT_CLIENT_EVENT: &str = "client_event";
/// `WS_EVENT` of a user's first connection in a presence channel.
pub const EVENT_MEMBER_ADDED: &str = "member_added";
/// `WS_EVENT` of a user's last connection leaving a presence channel.
pub const EVENT_MEMBER_REMOVED: &str = "member_removed";
/// `WS_EVENT` of a Pusher channel's first subscriber.
pub const EVENT_CHANNEL_OCCUPIED: &str = "channel_occupied";
/// `WS_EVENT` of a Pusher channel's last subscriber leaving.
pub const EVENT_CHANNEL_VACATED: &str = "channel_vacated";
/// CONTENT_TYPE of a Pusher event's body (a client event's data, a presence `channel_data`).
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// `WS_MESSAGE_TYPE` of a text message.
pub const MESSAGE_TEXT: &str = "text";
/// `WS_MESSAGE_TYPE` of a binary message.
pub const MESSAGE_BINARY: &str = "binary";

/// CONTENT_TYPE of a text message's body.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";
/// CONTENT_TYPE of a binary message's body; also the response Content-Type
/// that makes ws2fcgi send PHP's body as a binary message.
pub const CONTENT_TYPE_BINARY: &str = "application/octet-stream";

/// Directive: join channels (comma-separated).
pub const HEADER_JOIN: &str = "x-ws-join";
/// Directive: leave channels (comma-separated).
pub const HEADER_LEAVE: &str = "x-ws-leave";
/// Directive prefix: `X-WS-Meta-<Name>: value` sets metadata, an empty value deletes it.
pub const HEADER_META_PREFIX: &str = "x-ws-meta-";
/// Directive: `X-WS-Close: <code> <reason>` closes the connection after the body is sent.
pub const HEADER_CLOSE: &str = "x-ws-close";
/// Every header whose lower-cased name starts with this is a directive and is
/// never forwarded to the client.
pub const HEADER_DIRECTIVE_PREFIX: &str = "x-ws-";

/// Close code PHP sees when the peer sent a close frame without a code (RFC 6455 §7.4.1).
pub const CLOSE_NO_STATUS: u16 = 1005;
/// Close code PHP sees when the peer vanished without a close frame (TCP reset, EOF, read error).
pub const CLOSE_VANISHED: u16 = 1006;
/// Reason PHP sees with [`CLOSE_VANISHED`].
pub const REASON_VANISHED: &str = "peer vanished";
/// Close code of the idle timeout: the peer stopped answering pings (IANA 3008 "Timeout").
pub const CLOSE_IDLE_TIMEOUT: u16 = 3008;
/// Reason sent and seen with [`CLOSE_IDLE_TIMEOUT`].
pub const REASON_IDLE_TIMEOUT: &str = "idle timeout";
/// Close code sent to every client and seen by PHP when the daemon shuts down.
pub const CLOSE_SHUTDOWN: u16 = 1001;
/// Reason sent and seen with [`CLOSE_SHUTDOWN`].
pub const REASON_SHUTDOWN: &str = "server shutdown";
/// Close code sent to every client and seen by PHP when a new process took
/// over the listening sockets (SIGUSR2): reconnect now, the new one serves.
pub const CLOSE_RESTART: u16 = 1012;
/// Reason sent and seen with [`CLOSE_RESTART`].
pub const REASON_RESTART: &str = "service restart";
/// Close code used when PHP closes a connection without naming a code.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code of a client that stopped reading and filled its outbound queue.
pub const CLOSE_SLOW_CONSUMER: u16 = 1008;
/// Reason sent and seen with [`CLOSE_SLOW_CONSUMER`].
pub const REASON_SLOW_CONSUMER: &str = "slow consumer";
/// Close code when PHP-FPM stays unreachable for a message event.
pub const CLOSE_UPSTREAM_FAILED: u16 = 1011;
/// Reason sent and seen with [`CLOSE_UPSTREAM_FAILED`].
pub const REASON_UPSTREAM_FAILED: &str = "php-fpm unavailable";
/// Close code of a message or frame over the size limit (RFC 6455 "Message Too Big").
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code of a protocol violation by the client.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code of a text message that is not UTF-8.
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// Close code of a policy violation (rate limit with `action = "close"`).
pub const CLOSE_POLICY: u16 = 1008;

/// The version PHP sees in SERVER_SOFTWARE (`ws2fcgi/<version>`).
pub const SERVER_SOFTWARE: &str = concat!("ws2fcgi/", env!("CARGO_PKG_VERSION"));

/// Is `code` one PHP (or a control client) may send in a close frame?
///
/// RFC 6455 §7.4: 1000–1003, 1007–1014 and the registered/private ranges
/// 3000–4999. 1004–1006 and 1015 are reserved and must never go on the wire.
pub fn is_sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_close_codes_are_not_sendable() {
        for code in [0, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
            assert!(!is_sendable_close_code(code), "{code}");
        }
        for code in [1000, 1001, 1008, 1011, 3008, 4000, 4999] {
            assert!(is_sendable_close_code(code), "{code}");
        }
    }
}
