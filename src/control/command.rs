//! Control requests: one JSON object per line, parsed into a [`Command`].
//!
//! Pure and synchronous, so every malformed input has a unit test and a fuzz
//! target. The wire format (see `docs/protocol.md#control-socket`):
//!
//! ```text
//! {"op":"publish","channel":"room","data":"hi","except":"<id>"|["<id>",…],"binary":false}
//! {"op":"send","to":"<id>"|["<id>",…],"data":"hi","binary":false}
//! {"op":"join","conn":"<id>","channel":"room"}      {"op":"leave",…}
//! {"op":"close","conn":"<id>","code":4000,"reason":"bye"}
//! {"op":"meta","conn":"<id>","set":{"user":"42","typing":null}}
//! {"op":"presence","channel":"room"}
//! {"op":"history","channel":"room","limit":50,"since":{"offset":10,"epoch":"…"}}
//! {"op":"stats"}
//! {"op":"pusher_publish","app":"1001","channels":["room"],"event":"e","data":"{…}","socket_id":"1.2"}
//! ```

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;

use crate::contract;
use crate::frame::Kind;
use crate::hub::ConnId;
use crate::response::{check_channel, check_close, meta_key};

/// Why a request line was refused; the message goes back as `{"ok":false,"error":…}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Not JSON, not an object, unknown op, missing or mistyped field (serde's words).
    #[error("{0}")]
    Malformed(String),
    /// Well-formed but not acceptable (bad channel name, close code, base64, id…).
    #[error("{0}")]
    Invalid(String),
    /// The line is longer than `control.max_line_bytes`.
    #[error("request longer than {0} bytes")]
    TooLong(usize),
}

/// One or several connection ids, as `"id"` or `["id", …]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(id) => vec![id],
            Self::Many(ids) => ids,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Wire {
    Publish {
        channel: String,
        data: String,
        #[serde(default)]
        except: Option<OneOrMany>,
        #[serde(default)]
        binary: bool,
    },
    Send {
        to: OneOrMany,
        data: String,
        #[serde(default)]
        binary: bool,
    },
    Join {
        conn: String,
        channel: String,
    },
    Leave {
        conn: String,
        channel: String,
    },
    Close {
        conn: String,
        #[serde(default = "normal_close")]
        code: u16,
        #[serde(default)]
        reason: String,
    },
    Meta {
        conn: String,
        set: serde_json::Map<String, serde_json::Value>,
    },
    Presence {
        channel: String,
    },
    History {
        channel: String,
        #[serde(default = "default_history_limit")]
        limit: usize,
        #[serde(default)]
        since: Option<WireSince>,
    },
    Stats {},
    #[serde(rename = "pusher_publish")]
    PusherPublish {
        app: String,
        channels: Vec<String>,
        event: String,
        data: String,
        #[serde(default)]
        socket_id: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSince {
    offset: u64,
    epoch: String,
}

/// Publications a `history` request returns when it names no `limit`.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;
/// Most publications one `history` request may return.
pub const MAX_HISTORY_LIMIT: usize = 10_000;

fn default_history_limit() -> usize {
    DEFAULT_HISTORY_LIMIT
}

fn normal_close() -> u16 {
    contract::CLOSE_NORMAL
}

/// A message's payload and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Text or binary.
    pub kind: Kind,
    /// The bytes (decoded from base64 for binary).
    pub data: Bytes,
}

/// A connection as a request names it: its id text, parsed when it is one.
///
/// Two forms: `<40 hex>` (a single node's ids) and `<node_id>.<40 hex>` (a
/// cluster's, see `docs/cluster.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The id as written.
    pub text: String,
    /// The node the id names, for the cluster form.
    pub node: Option<String>,
    /// The id on its node, when the text is an id of either form.
    pub id: Option<ConnId>,
}

/// A valid control request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Queue a message to every member of a channel but `except`.
    Publish {
        /// The channel.
        channel: String,
        /// The message.
        payload: Payload,
        /// Connections left out.
        except: Vec<Target>,
    },
    /// Queue a message to the listed connections.
    Send {
        /// The recipients.
        to: Vec<Target>,
        /// The message.
        payload: Payload,
    },
    /// Add a connection to a channel.
    Join {
        /// The connection.
        conn: Target,
        /// The channel.
        channel: String,
    },
    /// Remove a connection from a channel.
    Leave {
        /// The connection.
        conn: Target,
        /// The channel.
        channel: String,
    },
    /// Close a connection.
    Close {
        /// The connection.
        conn: Target,
        /// The close code sent to the client and seen by PHP.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// Set (`Some`) or delete (`None`) metadata entries; keys canonical.
    Meta {
        /// The connection.
        conn: Target,
        /// The changes.
        set: Vec<(String, Option<String>)>,
    },
    /// List a channel's members and their metadata.
    Presence {
        /// The channel.
        channel: String,
    },
    /// A channel's history: the newest `limit` publications, or at most
    /// `limit` of those after `since`.
    History {
        /// The channel.
        channel: String,
        /// At most this many, 1 to [`MAX_HISTORY_LIMIT`].
        limit: usize,
        /// Only those after this position.
        since: Option<crate::v1::Position>,
    },
    /// Counters.
    Stats,
    /// A Pusher event to channels of a Pusher app (`pusher/publish.rs`
    /// checks it when it runs: the limits are the configuration's).
    PusherPublish {
        /// The app id.
        app: String,
        /// The Pusher channels.
        channels: Vec<String>,
        /// The event name.
        event: String,
        /// The event's data, sent as a string.
        data: String,
        /// A connection left out.
        socket_id: Option<String>,
    },
}

impl Command {
    /// The op name, for logs and metrics.
    pub fn op(&self) -> &'static str {
        match self {
            Self::Publish { .. } => "publish",
            Self::Send { .. } => "send",
            Self::Join { .. } => "join",
            Self::Leave { .. } => "leave",
            Self::Close { .. } => "close",
            Self::Meta { .. } => "meta",
            Self::Presence { .. } => "presence",
            Self::History { .. } => "history",
            Self::Stats => "stats",
            Self::PusherPublish { .. } => "pusher_publish",
        }
    }
}

/// Parses one request line (without its newline).
///
/// ```
/// use ws2fcgi::control::command::{parse, Command};
/// let cmd = parse(br#"{"op":"presence","channel":"room"}"#).unwrap();
/// assert_eq!(cmd, Command::Presence { channel: "room".into() });
/// assert!(parse(b"{\"op\":\"fly\"}").is_err());
/// ```
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    match parse_publish(line) {
        Some(command) => command,
        None => parse_any(line),
    }
}

/// Parses any request line the general way: what [`parse`] does for every
/// line [`parse_publish`] does not take. Public for the fuzz target, which
/// checks that both ways agree.
#[doc(hidden)]
pub fn parse_any(line: &[u8]) -> Result<Command, CommandError> {
    let wire: Wire = serde_json::from_slice(line).map_err(malformed)?;
    validate(wire)
}

/// How a `publish` line starts when PHP's `json_encode`, or any encoder
/// writing the fields in the documented order, wrote it.
const PUBLISH_START: &[u8] = br#"{"op":"publish","#;

/// A `publish` request, read as a plain struct: serde reads an internally
/// tagged enum ([`Wire`]) by first collecting every field into a temporary
/// map to find `op`, then reading the variant from that map. A line that
/// starts with [`PUBLISH_START`] is known to be a publish, so its fields are
/// read straight into this struct instead.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishLine<'a> {
    #[serde(borrow)]
    op: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    channel: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: std::borrow::Cow<'a, str>,
    #[serde(default)]
    except: Option<OneOrMany>,
    #[serde(default)]
    binary: bool,
}

/// The quick way for the most frequent request: a `publish` line that
/// starts with [`PUBLISH_START`] and reads as a [`PublishLine`]. `None`
/// for every other line (and for one that does not read: [`parse_any`]
/// then gives the error), so the result is always what [`parse_any`] gives.
#[doc(hidden)]
pub fn parse_publish(line: &[u8]) -> Option<Result<Command, CommandError>> {
    if !line.starts_with(PUBLISH_START) {
        return None;
    }
    if let Some((channel, data)) = compact_publish(line) {
        return Some(validate(Wire::Publish {
            channel: channel.to_owned(),
            data: data.to_owned(),
            except: None,
            binary: false,
        }));
    }
    let publish: PublishLine = serde_json::from_slice(line).ok()?;
    if publish.op != "publish" {
        return None;
    }
    Some(validate(Wire::Publish {
        channel: publish.channel.into_owned(),
        data: publish.data.into_owned(),
        except: publish.except,
        binary: publish.binary,
    }))
}

/// Parses a request already decoded as JSON (the HTTP endpoint's bodies).
pub fn parse_value(value: serde_json::Value) -> Result<Command, CommandError> {
    let wire: Wire = serde_json::from_value(value).map_err(malformed)?;
    validate(wire)
}

fn malformed(e: serde_json::Error) -> CommandError {
    let text = e.to_string();
    // serde_json appends " at line 1 column N"; keep it, it helps with long lines.
    CommandError::Malformed(text)
}

fn invalid(message: impl Into<String>) -> CommandError {
    CommandError::Invalid(message.into())
}

fn validate(wire: Wire) -> Result<Command, CommandError> {
    Ok(match wire {
        Wire::Publish {
            channel,
            data,
            except,
            binary,
        } => {
            check_channel(&channel).map_err(invalid)?;
            Command::Publish {
                channel,
                payload: payload(data, binary)?,
                except: except
                    .map(OneOrMany::into_vec)
                    .unwrap_or_default()
                    .into_iter()
                    .map(target)
                    .collect(),
            }
        }
        Wire::Send { to, data, binary } => Command::Send {
            to: to.into_vec().into_iter().map(target).collect(),
            payload: payload(data, binary)?,
        },
        Wire::Join { conn, channel } => {
            check_channel(&channel).map_err(invalid)?;
            Command::Join {
                conn: target(conn),
                channel,
            }
        }
        Wire::Leave { conn, channel } => {
            check_channel(&channel).map_err(invalid)?;
            Command::Leave {
                conn: target(conn),
                channel,
            }
        }
        Wire::Close { conn, code, reason } => {
            check_close(code, &reason).map_err(invalid)?;
            Command::Close {
                conn: target(conn),
                code,
                reason,
            }
        }
        Wire::Meta { conn, set } => {
            let mut changes = Vec::with_capacity(set.len());
            for (key, value) in set {
                let key = meta_key(&key).map_err(invalid)?;
                let value = match value {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(s),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    serde_json::Value::Bool(b) => Some(b.to_string()),
                    _ => {
                        return Err(invalid(format!(
                            "meta value of `{key}` must be a string, number, boolean or null"
                        )));
                    }
                };
                if let Some(v) = &value
                    && v.len() > crate::response::MAX_META_VALUE_LEN
                {
                    return Err(invalid(format!(
                        "meta value of `{key}` is longer than {} bytes",
                        crate::response::MAX_META_VALUE_LEN
                    )));
                }
                changes.push((key, value));
            }
            Command::Meta {
                conn: target(conn),
                set: changes,
            }
        }
        Wire::Presence { channel } => {
            check_channel(&channel).map_err(invalid)?;
            Command::Presence { channel }
        }
        Wire::History {
            channel,
            limit,
            since,
        } => {
            check_channel(&channel).map_err(invalid)?;
            if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
                return Err(invalid(format!(
                    "`limit` must be between 1 and {MAX_HISTORY_LIMIT}"
                )));
            }
            let since = match since {
                None => None,
                Some(s) if s.epoch.is_empty() || s.epoch.len() > crate::v1::MAX_EPOCH_LEN => {
                    return Err(invalid(format!(
                        "`since.epoch` must be 1 to {} bytes",
                        crate::v1::MAX_EPOCH_LEN
                    )));
                }
                Some(s) => Some(crate::v1::Position {
                    offset: s.offset,
                    epoch: s.epoch.into(),
                }),
            };
            Command::History {
                channel,
                limit,
                since,
            }
        }
        Wire::Stats {} => Command::Stats,
        Wire::PusherPublish {
            app,
            channels,
            event,
            data,
            socket_id,
        } => Command::PusherPublish {
            app,
            channels,
            event,
            data,
            socket_id,
        },
    })
}

fn target(text: String) -> Target {
    let (node, id) = match crate::cluster::split_public_id(&text) {
        Some((node, id)) => (Some(node.to_owned()), Some(id)),
        None => (None, text.parse().ok()),
    };
    Target { text, node, id }
}

fn payload(data: String, binary: bool) -> Result<Payload, CommandError> {
    if binary {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.as_bytes())
            .map_err(|e| invalid(format!("`data` is not valid base64: {e}")))?;
        Ok(Payload {
            kind: Kind::Binary,
            data: Bytes::from(bytes),
        })
    } else {
        Ok(Payload {
            kind: Kind::Text,
            data: Bytes::from(data),
        })
    }
}

/// The strings of a line that is exactly
/// `{"op":"publish","channel":"…","data":"…"}`, without whitespace and with
/// no escape (`\`) or control character in either string, or `None`. Such
/// strings are their own JSON text, so a line of that shape needs no JSON
/// reader at all; every other line is left to serde.
fn compact_publish(line: &[u8]) -> Option<(&str, &str)> {
    let rest = line.strip_prefix(br#"{"op":"publish","channel":""#)?;
    let (channel, rest) = plain_string(rest)?;
    let rest = rest.strip_prefix(br#","data":""#)?;
    let (data, rest) = plain_string(rest)?;
    (rest == b"}").then_some((channel, data))
}

/// The text up to the next `"` and what follows that quote, when the text
/// is UTF-8 with no backslash and no control character (which JSON allows
/// in a string only escaped).
fn plain_string(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let end = memchr::memchr(b'"', bytes)?;
    let text = &bytes[..end];
    // No early exit: this form is vectorised.
    let unusual = text
        .iter()
        .fold(false, |seen, &b| seen | (b == b'\\') | (b < 0x20));
    if unusual {
        return None;
    }
    Some((std::str::from_utf8(text).ok()?, &bytes[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> String {
        parse(line.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn every_op_parses() {
        let id = "0".repeat(40);
        for line in [
            r#"{"op":"publish","channel":"room","data":"hi"}"#.to_string(),
            format!(r#"{{"op":"publish","channel":"room","data":"hi","except":"{id}"}}"#),
            format!(
                r#"{{"op":"publish","channel":"room","data":"aGk=","except":["{id}"],"binary":true}}"#
            ),
            format!(r#"{{"op":"send","to":"{id}","data":"hi"}}"#),
            format!(r#"{{"op":"send","to":["{id}","{id}"],"data":"hi"}}"#),
            format!(r#"{{"op":"join","conn":"{id}","channel":"room"}}"#),
            format!(r#"{{"op":"leave","conn":"{id}","channel":"room"}}"#),
            format!(r#"{{"op":"close","conn":"{id}","code":4000,"reason":"bye"}}"#),
            format!(r#"{{"op":"close","conn":"{id}"}}"#),
            format!(r#"{{"op":"meta","conn":"{id}","set":{{"user":"42","typing":null,"n":3}}}}"#),
            r#"{"op":"presence","channel":"room"}"#.to_string(),
            r#"{"op":"history","channel":"room"}"#.to_string(),
            r#"{"op":"history","channel":"room","limit":5,"since":{"offset":3,"epoch":"e"}}"#
                .to_string(),
            r#"{"op":"stats"}"#.to_string(),
        ] {
            parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }

    #[test]
    fn the_quick_publish_agrees_with_the_general_parser() {
        let id = "0123456789abcdef0123456789abcdef01234567";
        let taken = [
            r#"{"op":"publish","channel":"room","data":"hi"}"#.to_string(),
            r#"{"op":"publish","data":"hi","channel":"room","binary":false}"#.to_string(),
            r#"{"op":"publish","channel":"r\u00e9","data":"a\"b\\c\n","except":null}"#.to_string(),
            format!(
                r#"{{"op":"publish","channel":"room","data":"aGk=","except":["{id}","x"],"binary":true}}"#
            ),
            format!(r#"{{"op":"publish","channel":"room","data":"hi","except":"web-1.{id}"}}"#),
            // Taken, and refused as the general parser refuses them.
            r#"{"op":"publish","channel":"","data":"x"}"#.to_string(),
            r#"{"op":"publish","channel":"room","data":"***","binary":true}"#.to_string(),
        ];
        for line in &taken {
            let quick = parse_publish(line.as_bytes()).unwrap_or_else(|| panic!("{line}"));
            assert_eq!(quick, parse_any(line.as_bytes()), "{line}");
        }
        // Lines of the compact shape, and lines just off it: the quick way
        // gives the general way's answer or leaves them to it.
        let shapes: [&[u8]; 12] = [
            br#"{"op":"publish","channel":"room","data":"t=1;s=0;q=17;xxxx"}"#,
            br#"{"op":"publish","channel":"room","data":""}"#,
            br#"{"op":"publish","channel":"","data":"x"}"#,
            "{\"op\":\"publish\",\"channel\":\"r\u{e9}\",\"data\":\"\u{1f600}\"}".as_bytes(),
            br#"{"op":"publish","channel":"room","data":"a\/b"}"#,
            br#"{"op":"publish","channel":"room","data":"a\"}"#,
            b"{\"op\":\"publish\",\"channel\":\"room\",\"data\":\"a\x01b\"}",
            b"{\"op\":\"publish\",\"channel\":\"room\",\"data\":\"\xff\"}",
            br#"{"op":"publish","channel":"room","data":"hi"} "#,
            br#"{"op":"publish","channel":"room","data":"hi"}}"#,
            br#"{"op":"publish","channel":"room","data":"hi","binary":true}"#,
            br#"{"op":"publish","channel":"a,b","data":"hi"}"#,
        ];
        for line in shapes {
            let shown = String::from_utf8_lossy(line);
            if let Some(quick) = parse_publish(line) {
                assert_eq!(quick, parse_any(line), "{shown}");
            }
            assert_eq!(parse(line), parse_any(line), "{shown}");
        }
        assert_eq!(
            compact_publish(br#"{"op":"publish","channel":"room","data":"hi"}"#),
            Some(("room", "hi"))
        );
        for off in [
            &br#"{"op":"publish","channel":"room","data":"a\/b"}"#[..],
            b"{\"op\":\"publish\",\"channel\":\"room\",\"data\":\"a\tb\"}",
            br#"{"op":"publish","channel":"room","data":"hi"} "#,
            br#"{"op":"publish", "channel":"room","data":"hi"}"#,
        ] {
            assert_eq!(
                compact_publish(off),
                None,
                "{}",
                String::from_utf8_lossy(off)
            );
        }
        let left = [
            r#"{"channel":"room","op":"publish","data":"hi"}"#,
            r#"{"op":"send","to":"x","data":"hi"}"#,
            r#"{"op":"publish","channel":"room"}"#,
            r#"{"op":"publish","channel":"room","data":"hi","extra":1}"#,
            r#"{"op":"publish","channel":"room","data":"hi","op":"publish"}"#,
            r#"{"op":"publish","channel":5,"data":"x"}"#,
            r#"{"op":"publish","channel":"room","data":"hi"} trailing"#,
            r#"{"op":"publish","#,
        ];
        for line in left {
            assert_eq!(parse_publish(line.as_bytes()), None, "{line}");
            // The general way gives these their answer, as before.
            assert_eq!(parse(line.as_bytes()), parse_any(line.as_bytes()), "{line}");
        }
        assert!(
            err(r#"{"op":"publish","channel":"room","data":"hi","extra":1}"#).contains("extra")
        );
    }

    #[test]
    fn binary_is_base64() {
        let cmd = parse(br#"{"op":"send","to":"x","data":"/wA=","binary":true}"#).unwrap();
        let Command::Send { payload, to } = cmd else {
            panic!()
        };
        assert_eq!(payload.kind, Kind::Binary);
        assert_eq!(&payload.data[..], b"\xff\x00");
        assert_eq!(to[0].id, None, "x is not an id of ours");
        assert!(err(r#"{"op":"send","to":"x","data":"***","binary":true}"#).contains("base64"));
    }

    #[test]
    fn malformed_input_says_what_is_wrong() {
        assert!(err("not json").contains("expected"));
        assert!(err("[1,2]").contains("expected"));
        assert!(err(r#"{"op":"fly"}"#).contains("unknown variant"));
        assert!(err(r#"{"channel":"x"}"#).contains("op"));
        assert!(err(r#"{"op":"publish","channel":"room"}"#).contains("data"));
        assert!(err(r#"{"op":"history","channel":"room","limit":0}"#).contains("limit"));
        assert!(err(r#"{"op":"history","channel":"room","since":{"offset":1}}"#).contains("epoch"));
        assert!(
            err(r#"{"op":"history","channel":"room","since":{"offset":1,"epoch":""}}"#)
                .contains("since.epoch")
        );
        assert!(err(r#"{"op":"publish","channel":5,"data":"x"}"#).contains("invalid type"));
        assert!(err(r#"{"op":"stats","extra":1}"#).contains("extra"));
        assert!(err(r#"{"op":"publish","channel":"","data":"x"}"#).contains("empty"));
        assert!(err(r#"{"op":"close","conn":"x","code":1006}"#).contains("1006"));
        assert!(err(r#"{"op":"close","conn":"x","code":70000}"#).contains("invalid value"));
        assert!(err(r#"{"op":"meta","conn":"x","set":{"a b":"1"}}"#).contains("metadata name"));
        assert!(err(r#"{"op":"meta","conn":"x","set":{"a":[1]}}"#).contains("must be a string"));
    }

    #[test]
    fn targets_name_a_node_in_the_cluster_form() {
        let hex = "0123456789abcdef0123456789abcdef01234567";
        let bare = target(hex.into());
        assert_eq!(
            (bare.node, bare.id.map(|i| i.to_string())),
            (None, Some(hex.into()))
        );
        let public = target(format!("web-1.{hex}"));
        assert_eq!(public.node.as_deref(), Some("web-1"));
        assert_eq!(public.id.map(|i| i.to_string()), Some(hex.into()));
        for text in ["web 1.x", "x", &format!("a.b.{hex}"), &format!(".{hex}")] {
            let t = target(text.into());
            assert_eq!((t.node, t.id), (None, None), "{text}");
        }
    }

    #[test]
    fn meta_keys_are_canonical() {
        let cmd = parse(br#"{"op":"meta","conn":"x","set":{"User-Id":"7"}}"#).unwrap();
        let Command::Meta { set, .. } = cmd else {
            panic!()
        };
        assert_eq!(set, vec![("user_id".to_string(), Some("7".to_string()))]);
    }
}
