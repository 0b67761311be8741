//! What nodes say to each other through Redis: pure encode and decode.
//!
//! Every pub/sub message is one envelope: a publish (on `<prefix>:bus`), or a
//! request or its reply (on `<prefix>:node:<node_id>`). A compact binary
//! layout, so a binary payload travels exactly, without base64, and a node
//! decodes the bus's traffic cheaply. Integers are big-endian; `str8`/`str16`
//! are UTF-8 text after a `u8`/`u16` length; `rest` is every remaining byte.
//!
//! ```text
//! envelope = "WS" version:u8(=2) type:u8 origin:str8 body
//! type 'P' publish  channel:str16 n:u16 except:str8{n} kind:u8 payload:rest
//! type 'Q' request  id:u64 op:u8 …
//!     op 1 send     n:u16 conn:str8{n} kind:u8 payload:rest
//!     op 2 join     conn:str8 channel:str16
//!     op 3 leave    conn:str8 channel:str16
//!     op 4 close    conn:str8 code:u16 reason:str8
//!     op 5 meta     conn:str8 n:u16 (key:str8 set:u8 [value:str16 if set=1]){n}
//! type 'R' reply    id:u64 outcome:u8 (0 count:u32 | 1 flag:u8 | 2 error:str16)
//! kind: 0 text (payload must be UTF-8), 1 binary
//! ```
//!
//! `except` and a publish's ids are public ids (`<node>.<40 hex>`); a
//! request's `conn` ids are the target node's local 40-hex ids. On Redis an
//! envelope is followed by its seal (`seal.rs`: a sequence number and an
//! HMAC); [`decode`] takes the envelope without it.

use bytes::Bytes;

use crate::frame::Kind;

/// The first bytes of every envelope.
const MAGIC: &[u8; 2] = b"WS";
/// The layout's version; a node refuses others. 2: sealed (`seal.rs`).
pub const VERSION: u8 = 2;

/// Why bytes are not an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes end before a field does.
    #[error("envelope cut short in `{0}`")]
    Truncated(&'static str),
    /// Not starting with "WS".
    #[error("not an envelope (bad magic)")]
    BadMagic,
    /// A version this node does not speak.
    #[error("envelope version {0} (this node speaks {VERSION})")]
    Version(u8),
    /// An unknown type, op, kind or outcome byte.
    #[error("unknown `{field}` {value}")]
    Unknown {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u8,
    },
    /// A text field, or a text payload, that is not UTF-8.
    #[error("`{0}` is not UTF-8")]
    NotUtf8(&'static str),
    /// Bytes after the last field of a body without a payload.
    #[error("{0} bytes after the envelope")]
    Trailing(usize),
    /// A field too long for its length prefix (encoding only).
    #[error("`{0}` too long for an envelope")]
    TooLong(&'static str),
}

/// One message between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The node that sent it.
    pub origin: String,
    /// What it says.
    pub body: Body,
}

/// The three kinds of envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Deliver to the channel's members on the receiving node, but `except`.
    Publish {
        /// The channel.
        channel: String,
        /// Public ids left out.
        except: Vec<String>,
        /// Text or binary.
        kind: Kind,
        /// The message.
        payload: Bytes,
    },
    /// Run `op` on the receiving node and reply to `origin`.
    Request {
        /// Matches the reply to the request.
        id: u64,
        /// What to do.
        op: Op,
    },
    /// The outcome of request `id`.
    Reply {
        /// The request's id.
        id: u64,
        /// What happened.
        outcome: Outcome,
    },
}

/// A control operation on connections of the receiving node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Queue a message to these connections.
    Send {
        /// Local ids.
        conns: Vec<String>,
        /// Text or binary.
        kind: Kind,
        /// The message.
        payload: Bytes,
    },
    /// Add a connection to a channel.
    Join {
        /// Local id.
        conn: String,
        /// The channel.
        channel: String,
    },
    /// Remove a connection from a channel.
    Leave {
        /// Local id.
        conn: String,
        /// The channel.
        channel: String,
    },
    /// Close a connection.
    Close {
        /// Local id.
        conn: String,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Set (`Some`) or delete (`None`) metadata entries.
    Meta {
        /// Local id.
        conn: String,
        /// The changes, keys canonical.
        set: Vec<(String, Option<String>)>,
    },
}

/// What a request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `send`: connections reached.
    Count(u32),
    /// `join`, `leave`, `meta`: found; `close`: closed.
    Flag(bool),
    /// Refused (e.g. too many metadata entries).
    Error(String),
}

/// Encodes an envelope; fails only when a field is longer than its length prefix allows.
pub fn encode(envelope: &Envelope) -> Result<Vec<u8>, WireError> {
    let payload_len = match &envelope.body {
        Body::Publish { payload, .. } => payload.len(),
        Body::Request {
            op: Op::Send { payload, .. },
            ..
        } => payload.len(),
        _ => 0,
    };
    // Room for the seal too, which the publisher appends.
    let mut out = Writer(Vec::with_capacity(64 + payload_len + super::seal::TRAILER));
    out.0.extend_from_slice(MAGIC);
    out.u8(VERSION);
    match &envelope.body {
        Body::Publish { .. } => out.u8(b'P'),
        Body::Request { .. } => out.u8(b'Q'),
        Body::Reply { .. } => out.u8(b'R'),
    }
    out.str8(&envelope.origin, "origin")?;
    match &envelope.body {
        Body::Publish {
            channel,
            except,
            kind,
            payload,
        } => {
            out.str16(channel, "channel")?;
            out.list(except, "except")?;
            out.kind(*kind);
            out.0.extend_from_slice(payload);
        }
        Body::Request { id, op } => {
            out.0.extend_from_slice(&id.to_be_bytes());
            match op {
                Op::Send {
                    conns,
                    kind,
                    payload,
                } => {
                    out.u8(1);
                    out.list(conns, "conn")?;
                    out.kind(*kind);
                    out.0.extend_from_slice(payload);
                }
                Op::Join { conn, channel } | Op::Leave { conn, channel } => {
                    out.u8(if matches!(op, Op::Join { .. }) { 2 } else { 3 });
                    out.str8(conn, "conn")?;
                    out.str16(channel, "channel")?;
                }
                Op::Close { conn, code, reason } => {
                    out.u8(4);
                    out.str8(conn, "conn")?;
                    out.0.extend_from_slice(&code.to_be_bytes());
                    out.str8(reason, "reason")?;
                }
                Op::Meta { conn, set } => {
                    out.u8(5);
                    out.str8(conn, "conn")?;
                    out.count(set.len(), "meta")?;
                    for (key, value) in set {
                        out.str8(key, "meta key")?;
                        match value {
                            None => out.u8(0),
                            Some(v) => {
                                out.u8(1);
                                out.str16(v, "meta value")?;
                            }
                        }
                    }
                }
            }
        }
        Body::Reply { id, outcome } => {
            out.0.extend_from_slice(&id.to_be_bytes());
            match outcome {
                Outcome::Count(n) => {
                    out.u8(0);
                    out.0.extend_from_slice(&n.to_be_bytes());
                }
                Outcome::Flag(b) => {
                    out.u8(1);
                    out.u8(u8::from(*b));
                }
                Outcome::Error(message) => {
                    out.u8(2);
                    out.str16(message, "error")?;
                }
            }
        }
    }
    Ok(out.0)
}

/// The origin node of an envelope, without decoding the rest (a node skips its own).
pub fn peek_origin(bytes: &[u8]) -> Result<&str, WireError> {
    let mut r = Reader(bytes);
    r.header()?;
    r.str8("origin")
}

/// Decodes one envelope. Every byte is checked; nothing is trusted.
///
/// ```
/// use ws2fcgi::cluster::wire::{decode, encode, Body, Envelope, Outcome};
/// let reply = Envelope { origin: "a".into(), body: Body::Reply { id: 7, outcome: Outcome::Flag(true) } };
/// assert_eq!(decode(&encode(&reply).unwrap()).unwrap(), reply);
/// assert!(decode(b"WS\x02R").is_err());
/// ```
pub fn decode(bytes: &[u8]) -> Result<Envelope, WireError> {
    let mut r = Reader(bytes);
    let kind = r.header()?;
    let origin = r.str8("origin")?.to_owned();
    let body = match kind {
        b'P' => {
            let channel = r.str16("channel")?.to_owned();
            let except = r.list("except")?;
            let kind = r.kind()?;
            let payload = r.payload(kind)?;
            Body::Publish {
                channel,
                except,
                kind,
                payload,
            }
        }
        b'Q' => {
            let id = r.u64("id")?;
            let op = match r.u8("op")? {
                1 => {
                    let conns = r.list("conn")?;
                    let kind = r.kind()?;
                    let payload = r.payload(kind)?;
                    Op::Send {
                        conns,
                        kind,
                        payload,
                    }
                }
                op @ (2 | 3) => {
                    let conn = r.str8("conn")?.to_owned();
                    let channel = r.str16("channel")?.to_owned();
                    r.end()?;
                    if op == 2 {
                        Op::Join { conn, channel }
                    } else {
                        Op::Leave { conn, channel }
                    }
                }
                4 => {
                    let conn = r.str8("conn")?.to_owned();
                    let code = r.u16("code")?;
                    let reason = r.str8("reason")?.to_owned();
                    r.end()?;
                    Op::Close { conn, code, reason }
                }
                5 => {
                    let conn = r.str8("conn")?.to_owned();
                    let n = r.u16("meta")?;
                    let mut set = Vec::with_capacity(usize::from(n).min(r.0.len()));
                    for _ in 0..n {
                        let key = r.str8("meta key")?.to_owned();
                        let value = match r.u8("meta set")? {
                            0 => None,
                            1 => Some(r.str16("meta value")?.to_owned()),
                            value => {
                                return Err(WireError::Unknown {
                                    field: "meta set",
                                    value,
                                });
                            }
                        };
                        set.push((key, value));
                    }
                    r.end()?;
                    Op::Meta { conn, set }
                }
                value => return Err(WireError::Unknown { field: "op", value }),
            };
            Body::Request { id, op }
        }
        b'R' => {
            let id = r.u64("id")?;
            let outcome = match r.u8("outcome")? {
                0 => Outcome::Count(r.u32("count")?),
                1 => Outcome::Flag(r.u8("flag")? != 0),
                2 => Outcome::Error(r.str16("error")?.to_owned()),
                value => {
                    return Err(WireError::Unknown {
                        field: "outcome",
                        value,
                    });
                }
            };
            r.end()?;
            Body::Reply { id, outcome }
        }
        value => {
            return Err(WireError::Unknown {
                field: "type",
                value,
            });
        }
    };
    Ok(Envelope { origin, body })
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, b: u8) {
        self.0.push(b);
    }

    fn count(&mut self, n: usize, field: &'static str) -> Result<(), WireError> {
        let n = u16::try_from(n).map_err(|_| WireError::TooLong(field))?;
        self.0.extend_from_slice(&n.to_be_bytes());
        Ok(())
    }

    fn str8(&mut self, s: &str, field: &'static str) -> Result<(), WireError> {
        let n = u8::try_from(s.len()).map_err(|_| WireError::TooLong(field))?;
        self.0.push(n);
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn str16(&mut self, s: &str, field: &'static str) -> Result<(), WireError> {
        self.count(s.len(), field)?;
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn list(&mut self, items: &[String], field: &'static str) -> Result<(), WireError> {
        self.count(items.len(), field)?;
        items.iter().try_for_each(|item| self.str8(item, field))
    }

    fn kind(&mut self, kind: Kind) {
        self.u8(match kind {
            Kind::Text => 0,
            Kind::Binary => 1,
        });
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated(field));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn header(&mut self) -> Result<u8, WireError> {
        if self.take(2, "magic")? != MAGIC {
            return Err(WireError::BadMagic);
        }
        match self.u8("version")? {
            VERSION => self.u8("type"),
            other => Err(WireError::Version(other)),
        }
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        let mut a = [0; 4];
        a.copy_from_slice(self.take(4, field)?);
        Ok(u32::from_be_bytes(a))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8, field)?);
        Ok(u64::from_be_bytes(a))
    }

    fn text(&mut self, n: usize, field: &'static str) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.take(n, field)?).map_err(|_| WireError::NotUtf8(field))
    }

    fn str8(&mut self, field: &'static str) -> Result<&'a str, WireError> {
        let n = self.u8(field)?;
        self.text(usize::from(n), field)
    }

    fn str16(&mut self, field: &'static str) -> Result<&'a str, WireError> {
        let n = self.u16(field)?;
        self.text(usize::from(n), field)
    }

    fn list(&mut self, field: &'static str) -> Result<Vec<String>, WireError> {
        let n = self.u16(field)?;
        // Each item takes at least its length byte: never reserve more than the input could fill.
        let mut items = Vec::with_capacity(usize::from(n).min(self.0.len()));
        for _ in 0..n {
            items.push(self.str8(field)?.to_owned());
        }
        Ok(items)
    }

    fn kind(&mut self) -> Result<Kind, WireError> {
        match self.u8("kind")? {
            0 => Ok(Kind::Text),
            1 => Ok(Kind::Binary),
            value => Err(WireError::Unknown {
                field: "kind",
                value,
            }),
        }
    }

    /// The rest of the input; a text payload must be UTF-8.
    fn payload(&mut self, kind: Kind) -> Result<Bytes, WireError> {
        let rest = std::mem::take(&mut self.0);
        if kind == Kind::Text && std::str::from_utf8(rest).is_err() {
            return Err(WireError::NotUtf8("payload"));
        }
        Ok(Bytes::copy_from_slice(rest))
    }

    fn end(&self) -> Result<(), WireError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Envelope> {
        let id = "a".repeat(40);
        let bodies = vec![
            Body::Publish {
                channel: "room:1".into(),
                except: vec![format!("node-b.{id}"), format!("node-c.{id}")],
                kind: Kind::Text,
                payload: Bytes::from_static("héllo".as_bytes()),
            },
            Body::Publish {
                channel: "bin".into(),
                except: vec![],
                kind: Kind::Binary,
                payload: Bytes::from_static(b"\x00\xff\x80WS\x02P"),
            },
            Body::Publish {
                channel: "empty".into(),
                except: vec![],
                kind: Kind::Text,
                payload: Bytes::new(),
            },
            Body::Request {
                id: u64::MAX,
                op: Op::Send {
                    conns: vec![id.clone(), id.clone()],
                    kind: Kind::Binary,
                    payload: Bytes::from_static(b"\xfe\xfd"),
                },
            },
            Body::Request {
                id: 1,
                op: Op::Join {
                    conn: id.clone(),
                    channel: "room".into(),
                },
            },
            Body::Request {
                id: 2,
                op: Op::Leave {
                    conn: id.clone(),
                    channel: "room".into(),
                },
            },
            Body::Request {
                id: 3,
                op: Op::Close {
                    conn: id.clone(),
                    code: 4000,
                    reason: "bye".into(),
                },
            },
            Body::Request {
                id: 4,
                op: Op::Meta {
                    conn: id,
                    set: vec![("user".into(), Some("42".into())), ("x".into(), None)],
                },
            },
            Body::Reply {
                id: 5,
                outcome: Outcome::Count(3),
            },
            Body::Reply {
                id: 6,
                outcome: Outcome::Flag(false),
            },
            Body::Reply {
                id: 7,
                outcome: Outcome::Error("more than 64 metadata entries".into()),
            },
        ];
        bodies
            .into_iter()
            .map(|body| Envelope {
                origin: "node-a".into(),
                body,
            })
            .collect()
    }

    /// `SEED_DIR=fuzz/corpus/cluster_wire cargo test --lib write_fuzz_seeds`
    /// refreshes the fuzz target's seed corpus from these samples.
    #[test]
    fn write_fuzz_seeds() {
        let Some(dir) = std::env::var_os("SEED_DIR") else {
            return;
        };
        for (i, envelope) in samples().iter().enumerate() {
            let path = std::path::Path::new(&dir).join(format!("sample-{i}"));
            std::fs::write(path, encode(envelope).unwrap()).unwrap();
        }
    }

    #[test]
    fn every_envelope_round_trips_exactly() {
        for envelope in samples() {
            let bytes = encode(&envelope).unwrap();
            assert_eq!(decode(&bytes).unwrap(), envelope);
            assert_eq!(peek_origin(&bytes).unwrap(), "node-a");
        }
    }

    #[test]
    fn every_cut_short_envelope_is_refused() {
        for envelope in samples() {
            let bytes = encode(&envelope).unwrap();
            let payload_len = match &envelope.body {
                Body::Publish { payload, .. }
                | Body::Request {
                    op: Op::Send { payload, .. },
                    ..
                } => payload.len(),
                _ => 0,
            };
            // Cutting into the payload gives a shorter payload, not an error.
            for cut in 0..bytes.len() - payload_len {
                assert!(
                    decode(&bytes[..cut]).is_err(),
                    "{envelope:?} cut at {cut} decoded"
                );
            }
        }
    }

    #[test]
    fn bad_input_says_why() {
        assert_eq!(decode(b"XX\x01P"), Err(WireError::BadMagic));
        assert_eq!(decode(b"WS\x01P"), Err(WireError::Version(1)));
        assert_eq!(
            decode(b"WS\x02Z\x00"),
            Err(WireError::Unknown {
                field: "type",
                value: b'Z'
            })
        );
        assert_eq!(
            decode(b"WS\x02P\x02\xff\xfe"),
            Err(WireError::NotUtf8("origin"))
        );
        // A text payload that is not UTF-8.
        assert_eq!(
            decode(b"WS\x02P\x01a\x00\x01c\x00\x00\x00\xff"),
            Err(WireError::NotUtf8("payload"))
        );
        assert_eq!(
            decode(b"WS\x02P\x01a\x00\x01c\x00\x00\x07"),
            Err(WireError::Unknown {
                field: "kind",
                value: 7
            })
        );
        let mut reply = encode(&Envelope {
            origin: "a".into(),
            body: Body::Reply {
                id: 1,
                outcome: Outcome::Flag(true),
            },
        })
        .unwrap();
        reply.push(0);
        assert_eq!(decode(&reply), Err(WireError::Trailing(1)));
        // A count far beyond the input allocates nothing large and fails.
        assert_eq!(
            decode(b"WS\x02P\x01a\x00\x01c\xff\xff"),
            Err(WireError::Truncated("except"))
        );
    }

    #[test]
    fn oversized_fields_are_refused_when_encoding() {
        let envelope = Envelope {
            origin: "x".repeat(300),
            body: Body::Reply {
                id: 1,
                outcome: Outcome::Count(0),
            },
        };
        assert_eq!(encode(&envelope), Err(WireError::TooLong("origin")));
    }
}
