//! The `ws2fcgi.v1` subprotocol: what a client that offered it is sent, and
//! the positions it gives in its handshake (docs/protocol.md, "The ws2fcgi.v1
//! subprotocol").
//!
//! Every message to such a client is one header line, `\n`, then the data;
//! the opcode is the data's. The header is compact JSON, or empty for a
//! message to this connection only:
//!
//! ```text
//! \n<data>                                      for this connection only
//! {"c":"room"}\n<data>                          a publication, channel without history
//! {"c":"room","o":13,"e":"9f2c01ab"}\n<data>    a publication at offset 13 of epoch 9f2c01ab
//! {"t":"connected","id":…,"hb":30,"recovered":…,"channels":{…},"lost":[…]}\n   first message
//! {"t":"joined","c":"room","o":13,"e":"…"}\n    joined after the open
//! {"t":"left","c":"room"}\n                     left
//! {"t":"skip","c":"room","o":13,"e":"…"}\n      left out of publication 13 (`except`)
//! {"t":"hb"}\n                                  heartbeat
//! ```
//!
//! A publication's frame is encoded once per publish and shared by every
//! member that speaks `ws2fcgi.v1` (and kept by the channel's history); the
//! raw frame for the others is encoded once too, only if one of them is a
//! member. The handshake token `ws2fcgi.since.<base64url of JSON>` carries the
//! client's positions: `{"room":[13,"9f2c01ab"],…}`; [`parse_since`] reads
//! it, and is fuzzed.

use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::frame::{self, Kind};

/// The subprotocol's name.
pub const PROTOCOL: &str = "ws2fcgi.v1";
/// The prefix of the handshake token carrying the client's positions.
pub const SINCE_PREFIX: &str = "ws2fcgi.since.";
/// Most positions one handshake may give; more is refused (400).
pub const MAX_POSITIONS: usize = 256;
/// Longest `ws2fcgi.since.` token (its base64 part).
pub const MAX_SINCE_LEN: usize = 32 * 1024;
/// Longest epoch a client may give.
pub const MAX_EPOCH_LEN: usize = 64;

/// Where a channel's history stands: the offset of a publication under the
/// channel's epoch (an opaque string that changes whenever the channel's
/// history was lost). Offset 0: before the first publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// 1, 2, 3… per channel and epoch.
    pub offset: u64,
    /// The channel's epoch.
    pub epoch: Arc<str>,
}

/// One publication on its way to a channel's members, encoded lazily: as a
/// raw frame and as a `ws2fcgi.v1` frame, each plain and compressed
/// (permessage-deflate, `deflate.rs`), each at most once, whatever the
/// number of members: a publication to members that negotiated compression
/// is compressed once and the frame shared.
pub struct Publication<'a> {
    /// The channel.
    pub channel: &'a str,
    /// Text or binary.
    pub kind: Kind,
    /// The message.
    pub data: &'a [u8],
    /// Its place in the channel's history, when the channel keeps one.
    pub position: Option<Position>,
    raw: OnceLock<Bytes>,
    framed: OnceLock<(Bytes, usize)>,
    raw_deflated: OnceLock<Bytes>,
    framed_deflated: OnceLock<Bytes>,
}

impl<'a> Publication<'a> {
    /// A publication of `data` to `channel`, at `position` if it has one.
    pub fn new(channel: &'a str, kind: Kind, data: &'a [u8], position: Option<Position>) -> Self {
        Self {
            channel,
            kind,
            data,
            position,
            raw: OnceLock::new(),
            framed: OnceLock::new(),
            raw_deflated: OnceLock::new(),
            framed_deflated: OnceLock::new(),
        }
    }

    /// The frame for a member: `ws2fcgi.v1` or raw, compressed when the
    /// member negotiated compression and the message is at least
    /// `deflate_min` bytes (`None`: not negotiated).
    pub fn for_member(
        &self,
        v1: bool,
        deflate_min: Option<usize>,
        stats: &crate::deflate::Stats,
    ) -> &Bytes {
        let deflate = deflate_min.is_some_and(|min| self.data.len() >= min);
        match (v1, deflate) {
            (false, false) => self.raw(),
            (true, false) => self.framed(),
            (false, true) => self
                .raw_deflated
                .get_or_init(|| crate::deflate::frame(self.kind, &[self.data], stats)),
            (true, true) => self.framed_deflated.get_or_init(|| {
                let header = publication_header(self.channel, self.position.as_ref());
                crate::deflate::frame(self.kind, &[header.as_bytes(), b"\n", self.data], stats)
            }),
        }
    }

    /// The frame for a client without the subprotocol: the data alone.
    pub fn raw(&self) -> &Bytes {
        self.raw.get_or_init(|| frame::data(self.kind, self.data))
    }

    /// The frame for a `ws2fcgi.v1` client.
    pub fn framed(&self) -> &Bytes {
        &self.framed_with_start().0
    }

    /// The `ws2fcgi.v1` frame and where its data starts in it.
    pub fn framed_with_start(&self) -> &(Bytes, usize) {
        self.framed.get_or_init(|| {
            let header = publication_header(self.channel, self.position.as_ref());
            let (frame, payload_at) =
                frame::data_parts(self.kind, &[header.as_bytes(), b"\n", self.data]);
            (frame, payload_at + header.len() + 1)
        })
    }
}

fn publication_header(channel: &str, position: Option<&Position>) -> String {
    let channel = Value::from(channel);
    match position {
        None => format!(r#"{{"c":{channel}}}"#),
        Some(p) => format!(
            r#"{{"c":{channel},"o":{},"e":{}}}"#,
            p.offset,
            Value::from(&*p.epoch)
        ),
    }
}

/// A message for one connection only (PHP's reply, a control `send`).
///
/// ```
/// use ws2fcgi::frame::Kind;
/// assert_eq!(&ws2fcgi::v1::direct(Kind::Text, b"hi")[..], b"\x81\x03\nhi");
/// ```
pub fn direct(kind: Kind, data: &[u8]) -> Bytes {
    frame::data_parts(kind, &[b"\n", data]).0
}

/// [`direct`], compressed (permessage-deflate).
pub fn direct_deflated(kind: Kind, data: &[u8], stats: &crate::deflate::Stats) -> Bytes {
    crate::deflate::frame(kind, &[b"\n", data], stats)
}

fn control(header: &Value) -> Bytes {
    frame::data_parts(Kind::Text, &[header.to_string().as_bytes(), b"\n"]).0
}

/// What the open did to one channel, for the `connected` message.
pub struct Joined<'a> {
    /// The channel.
    pub channel: &'a str,
    /// Where the client stands in it once this message is read (the
    /// position it gave, when recovered), if the channel keeps history.
    pub position: Option<Position>,
}

fn position_value(position: Option<&Position>) -> Value {
    match position {
        None => json!({}),
        Some(p) => json!({"o": p.offset, "e": &*p.epoch}),
    }
}

/// The first message: the connection's id, the heartbeat interval, the
/// channels joined in the open and those that could not be recovered.
pub fn connected(
    id: &str,
    heartbeat_secs: u64,
    recovered: bool,
    channels: &[Joined<'_>],
    lost: &[&str],
) -> Bytes {
    let channels: serde_json::Map<String, Value> = channels
        .iter()
        .map(|j| (j.channel.to_owned(), position_value(j.position.as_ref())))
        .collect();
    control(&json!({
        "t": "connected",
        "id": id,
        "hb": heartbeat_secs,
        "recovered": recovered,
        "channels": channels,
        "lost": lost,
    }))
}

/// The connection joined `channel` after its open.
pub fn joined(channel: &str, position: Option<&Position>) -> Bytes {
    let mut header = json!({"t": "joined", "c": channel});
    if let (Some(p), Some(map)) = (position, header.as_object_mut()) {
        map.insert("o".into(), p.offset.into());
        map.insert("e".into(), Value::from(&*p.epoch));
    }
    control(&header)
}

/// A publication at `position` that this connection was left out of
/// (`except`): its position moves on, so the next one is no gap.
pub fn skip(channel: &str, position: &Position) -> Bytes {
    control(&json!({"t": "skip", "c": channel, "o": position.offset, "e": &*position.epoch}))
}

/// The connection left `channel`.
pub fn left(channel: &str) -> Bytes {
    control(&json!({"t": "left", "c": channel}))
}

/// The heartbeat, sent when nothing else was for a heartbeat interval.
pub fn heartbeat() -> Bytes {
    static HEARTBEAT: OnceLock<Bytes> = OnceLock::new();
    HEARTBEAT
        .get_or_init(|| frame::data(Kind::Text, b"{\"t\":\"hb\"}\n"))
        .clone()
}

/// Why a `ws2fcgi.since.` token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinceError {
    /// Longer than [`MAX_SINCE_LEN`].
    #[error("the ws2fcgi.since token is longer than {MAX_SINCE_LEN} bytes")]
    TooLong,
    /// Not base64url.
    #[error("the ws2fcgi.since token is not base64url")]
    Base64,
    /// Not a JSON object of `"channel": [offset, "epoch"]`.
    #[error("the ws2fcgi.since token is not a JSON object of \"channel\": [offset, \"epoch\"]")]
    Shape,
    /// More than [`MAX_POSITIONS`] channels.
    #[error("the ws2fcgi.since token gives more than {MAX_POSITIONS} positions")]
    TooMany,
    /// A channel name the daemon would refuse.
    #[error("the ws2fcgi.since token names an invalid channel: {0}")]
    Channel(String),
}

/// Reads the positions of a `ws2fcgi.since.` token (without its prefix).
///
/// ```
/// let positions = ws2fcgi::v1::parse_since("eyJyb29tIjpbMTMsImFiIl19").unwrap();
/// assert_eq!(positions[0].0, "room");
/// assert_eq!(positions[0].1.offset, 13);
/// assert_eq!(&*positions[0].1.epoch, "ab");
/// ```
pub fn parse_since(token: &str) -> Result<Vec<(String, Position)>, SinceError> {
    if token.len() > MAX_SINCE_LEN {
        return Err(SinceError::TooLong);
    }
    let json = URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| SinceError::Base64)?;
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&json) else {
        return Err(SinceError::Shape);
    };
    if map.len() > MAX_POSITIONS {
        return Err(SinceError::TooMany);
    }
    map.into_iter()
        .map(|(channel, value)| {
            crate::response::check_channel(&channel).map_err(SinceError::Channel)?;
            let Value::Array(pair) = value else {
                return Err(SinceError::Shape);
            };
            match pair.as_slice() {
                [Value::Number(offset), Value::String(epoch)]
                    if offset.is_u64() && !epoch.is_empty() && epoch.len() <= MAX_EPOCH_LEN =>
                {
                    let offset = offset.as_u64().ok_or(SinceError::Shape)?;
                    let epoch = Arc::from(epoch.as_str());
                    Ok((channel, Position { offset, epoch }))
                }
                _ => Err(SinceError::Shape),
            }
        })
        .collect()
}

/// What a client's `Sec-WebSocket-Protocol` offers: `ws2fcgi.v1`, and its
/// `ws2fcgi.since.` token if any (the first one).
pub fn offer<'h>(protocols: impl Iterator<Item = &'h str>) -> (bool, Option<&'h str>) {
    let mut v1 = false;
    let mut since = None;
    for p in protocols.flat_map(|v| v.split(',')).map(str::trim) {
        if p == PROTOCOL {
            v1 = true;
        } else if let Some(token) = p.strip_prefix(SINCE_PREFIX) {
            since = since.or(Some(token));
        }
    }
    (v1, since)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(frame: &Bytes) -> &[u8] {
        let len = usize::from(frame[1] & 0x7f);
        assert!(len < 126, "short frames only here");
        &frame[2..]
    }

    #[test]
    fn a_publication_is_its_header_line_then_the_data() {
        let epoch: Arc<str> = Arc::from("ab\"c");
        let p = Publication::new(
            "room",
            Kind::Text,
            b"hi",
            Some(Position { offset: 13, epoch }),
        );
        assert_eq!(
            payload(p.framed()),
            br#"{"c":"room","o":13,"e":"ab\"c"}
hi"#
        );
        let (frame, at) = p.framed_with_start();
        assert_eq!(&frame[*at..], b"hi");
        assert_eq!(&p.raw()[..], b"\x81\x02hi");
        let bare = Publication::new("a\u{e9}", Kind::Binary, &[0, 1], None);
        assert_eq!(bare.framed()[0], 0x82);
        assert_eq!(
            payload(bare.framed()),
            "{\"c\":\"a\u{e9}\"}\n\0\x01".as_bytes()
        );
    }

    #[test]
    fn control_messages_are_one_json_line() {
        let epoch: Arc<str> = Arc::from("e1");
        let pos = Position { offset: 4, epoch };
        let c = connected(
            "id1",
            30,
            true,
            &[
                Joined {
                    channel: "room",
                    position: Some(pos.clone()),
                },
                Joined {
                    channel: "lobby",
                    position: None,
                },
            ],
            &["news"],
        );
        let text = std::str::from_utf8(payload(&c)).unwrap();
        assert_eq!(
            text,
            "{\"t\":\"connected\",\"id\":\"id1\",\"hb\":30,\"recovered\":true,\"channels\":{\"room\":{\"o\":4,\"e\":\"e1\"},\"lobby\":{}},\"lost\":[\"news\"]}\n"
        );
        assert_eq!(
            payload(&joined("room", Some(&pos))),
            b"{\"t\":\"joined\",\"c\":\"room\",\"o\":4,\"e\":\"e1\"}\n"
        );
        assert_eq!(payload(&left("room")), b"{\"t\":\"left\",\"c\":\"room\"}\n");
        assert_eq!(
            payload(&skip("room", &pos)),
            b"{\"t\":\"skip\",\"c\":\"room\",\"o\":4,\"e\":\"e1\"}\n"
        );
        assert_eq!(payload(&heartbeat()), b"{\"t\":\"hb\"}\n");
    }

    #[test]
    fn since_tokens_are_checked() {
        let token = |json: &str| URL_SAFE_NO_PAD.encode(json);
        assert_eq!(parse_since(&token(r#"{}"#)), Ok(vec![]));
        assert_eq!(
            parse_since(&token(r#"{"a":[1,"e"],"b":[0,"f"]}"#))
                .unwrap()
                .len(),
            2
        );
        for bad in [
            r#"[]"#,
            r#"{"a":1}"#,
            r#"{"a":[-1,"e"]}"#,
            r#"{"a":[1.5,"e"]}"#,
            r#"{"a":[1,""]}"#,
            r#"{"a":[1,"e",3]}"#,
        ] {
            assert_eq!(parse_since(&token(bad)), Err(SinceError::Shape), "{bad}");
        }
        assert!(matches!(
            parse_since(&token(r#"{"":[1,"e"]}"#)),
            Err(SinceError::Channel(_))
        ));
        assert_eq!(parse_since("!!"), Err(SinceError::Base64));
        let many: String = (0..=MAX_POSITIONS)
            .map(|i| format!("\"c{i}\":[1,\"e\"]"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            parse_since(&token(&format!("{{{many}}}"))),
            Err(SinceError::TooMany)
        );
    }

    #[test]
    fn the_offer_is_read_across_headers() {
        let (v1, since) = offer(["chat, ws2fcgi.v1", "ws2fcgi.since.abc"].into_iter());
        assert!(v1);
        assert_eq!(since, Some("abc"));
        assert_eq!(offer(["chat"].into_iter()), (false, None));
    }
}
