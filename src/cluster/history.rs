//! Channel history in a cluster: kept in Redis, so offsets and epochs are
//! the same on every node and a client recovers on whichever node it
//! reconnects to.
//!
//! Per channel that keeps history (`[history]`'s policy):
//!
//! ```text
//! <prefix>:history:<channel>       a stream; entry id <offset>-1, fields
//!                                  e = the sealed envelope, t = publish time (ms);
//!                                  trimmed to `size` (MAXLEN), PEXPIRE ttl
//! <prefix>:history-meta:<channel>  a hash {epoch, top}; PEXPIRE max(ttl, 1 day)
//! ```
//!
//! (The meta key has a prefix of its own: channel names may contain `:`, so
//! `<channel>:meta` would be the stream of another channel.)
//!
//! A publish is one Lua script ([`PUBLISH_SCRIPT`]), atomic in Redis: it
//! gives the offset and PUBLISHes the publication on the bus in the same
//! step, so every node, the publishing one too, receives a channel's
//! publications in offset order, and delivers them in that order. The bus
//! message is `"WH" <offset> " " <epoch> " " <sealed envelope>`; the envelope
//! is sealed (`seal.rs`) for [`binding`] by the publishing node, so neither a
//! bus message nor a stream entry can be forged without `cluster.secret`.
//! Recovery and the `history` op read with [`READ_SCRIPT`], which also
//! creates a channel's record (a new epoch) when it has none, so a client
//! that joins a quiet channel is given a position it can come back with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{Client, ErrorKind, RedisError, ServerErrorKind, Value};
use sha1::{Digest, Sha1};
use tokio::sync::oneshot;

use super::link::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use super::seal::{self, MAX_AGE, Sequence};
use super::wire::{self, Body, Envelope};
use super::{Cluster, lock, random_u64};
use crate::config::Policy;
use crate::frame::Kind;
use crate::v1::Position;

/// The magic of a history publication on the bus.
pub const BUS_MAGIC: &[u8; 2] = b"WH";
/// How long a channel's record (epoch and top) outlives its last
/// publication at least: a client that was at the top of a quiet channel
/// still recovers (with nothing missed) after `ttl`.
pub const META_TTL_MIN: Duration = Duration::from_secs(24 * 3600);

/// The publish: creates the record if missing (a new epoch; an old stream
/// is dropped with it), takes the next offset, keeps the entry, refreshes
/// the expiries and PUBLISHes on the bus. Returns `{offset, epoch}`.
///
/// KEYS: stream, meta. ARGV: fresh epoch, size, ttl ms, meta ttl ms, now ms,
/// sealed envelope, bus channel.
pub const PUBLISH_SCRIPT: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'top', 0)
end
local top = redis.call('HINCRBY', KEYS[2], 'top', 1)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], top .. '-1', 'e', ARGV[6], 't', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[7], 'WH' .. top .. ' ' .. epoch .. ' ' .. ARGV[6])
return {top, epoch}
";

/// The read: the record (created if missing, as the publish would), and the
/// entries from offset `ARGV[3]` on (0: none), or the newest `ARGV[4]` (0: none).
/// Returns `{epoch, top, entries}`.
///
/// KEYS: stream, meta. ARGV: fresh epoch, meta ttl ms, from, latest.
pub const READ_SCRIPT: &str = r"
local m = redis.call('HMGET', KEYS[2], 'epoch', 'top')
if not m[1] then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', ARGV[1], 'top', 0)
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  m = {ARGV[1], '0'}
end
local entries = {}
if tonumber(ARGV[3]) > 0 then
  entries = redis.call('XRANGE', KEYS[1], ARGV[3] .. '-1', '+')
elseif tonumber(ARGV[4]) > 0 then
  entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[4])
end
return {m[1], tonumber(m[2]), entries}
";

/// Why history in Redis could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Redis did not answer, or refused.
    #[error("channel history in redis is unavailable: {0}")]
    Redis(String),
    /// Redis answered something the scripts never return.
    #[error("unexpected answer from redis: {0}")]
    Answer(&'static str),
}

/// One publication read back from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its offset.
    pub offset: u64,
    /// Text or binary.
    pub kind: Kind,
    /// The data.
    pub data: Bytes,
}

/// What a read found.
#[derive(Debug)]
pub struct Read {
    /// Where the channel stands.
    pub top: Position,
    /// The entries asked for, oldest first, or `None` when one of them is
    /// not a publication this cluster sealed (logged).
    pub entries: Option<Vec<Entry>>,
    /// The publish times (ms) of the entries, in the same order.
    times: Vec<u64>,
}

impl Read {
    /// The publish times (ms) of the entries, in their order.
    pub fn times(&self) -> &[u64] {
        &self.times
    }

    /// The entries after `since`, if the history still covers all of them
    /// (same epoch, none evicted, none older than `ttl`); `None`: lost.
    pub fn since(&self, since: &Position, ttl: Duration, now_ms: u64) -> Option<&[Entry]> {
        let entries = self.entries.as_deref()?;
        if since.epoch != self.top.epoch || since.offset > self.top.offset {
            return None;
        }
        let oldest = now_ms.saturating_sub(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let expected = since.offset + 1..=self.top.offset;
        let whole = entries.len() as u64 == self.top.offset - since.offset
            && entries.iter().zip(expected).all(|(e, o)| e.offset == o)
            && self.times.iter().all(|t| *t >= oldest);
        whole.then_some(entries)
    }
}

/// Where the history task of each node keeps its Redis connection.
pub(crate) struct Store {
    client: Option<Client>,
    conn: Mutex<Option<MultiplexedConnection>>,
    /// Reachable at the last try (`None`: not tried): logged once per change.
    reachable: Mutex<Option<bool>>,
    /// The `seq` of the seals of this node's history publications.
    sequence: Mutex<Sequence>,
    /// Publishes of this node waiting for their own bus delivery, by `seq`.
    waiting: Mutex<HashMap<u64, oneshot::Sender<usize>>>,
    publish_sha: String,
    read_sha: String,
}

impl Store {
    pub(crate) fn new(url: &str) -> Self {
        let client = match Client::open(url) {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::error!(error = %e, "cluster.redis is not usable: no channel history");
                None
            }
        };
        Self {
            client,
            conn: Mutex::default(),
            reachable: Mutex::default(),
            sequence: Mutex::default(),
            waiting: Mutex::default(),
            publish_sha: sha1_hex(PUBLISH_SCRIPT),
            read_sha: sha1_hex(READ_SCRIPT),
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, HistoryError> {
        if let Some(conn) = lock(&self.conn).clone() {
            return Ok(conn);
        }
        let client = self
            .client
            .as_ref()
            .ok_or(HistoryError::Answer("no redis client"))?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.failed(&e))?;
        *lock(&self.conn) = Some(conn.clone());
        Ok(conn)
    }

    /// Runs a script by its SHA1, loading it when Redis does not have it.
    async fn script(
        &self,
        sha: &str,
        text: &str,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<Value, HistoryError> {
        let mut conn = self.connection().await?;
        let call = |name: &str, first: &str| {
            let mut cmd = redis::cmd(name);
            cmd.arg(first).arg(keys.len()).arg(keys);
            for arg in args {
                cmd.arg(*arg);
            }
            cmd
        };
        let mut answer = call("EVALSHA", sha).query_async::<Value>(&mut conn).await;
        if let Err(e) = &answer
            && e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
        {
            answer = call("EVAL", text).query_async(&mut conn).await;
        }
        match answer {
            Ok(value) => {
                self.reached(true, &"");
                Ok(value)
            }
            Err(e) => Err(self.failed(&e)),
        }
    }

    fn failed(&self, e: &RedisError) -> HistoryError {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            lock(&self.conn).take();
        }
        self.reached(false, e);
        HistoryError::Redis(e.to_string())
    }

    fn reached(&self, ok: bool, error: &dyn std::fmt::Display) {
        let mut reachable = lock(&self.reachable);
        if *reachable == Some(ok) {
            return;
        }
        let before = reachable.replace(ok);
        if ok {
            if before.is_some() {
                tracing::info!("channel history in redis reachable again");
            }
        } else {
            tracing::error!(error = %error,
                "channel history in redis unavailable: publishes to channels with history fail, \
                 recovery reports them lost");
        }
    }

    /// A publication of this node arrived from the bus with `delivered`
    /// local members: tells the publish waiting for it.
    pub(crate) fn delivered(&self, seq: u64, delivered: usize) {
        if let Some(waiting) = lock(&self.waiting).remove(&seq) {
            let _ = waiting.send(delivered);
        }
    }
}

impl Cluster {
    /// The stream and meta keys of `channel`.
    fn history_keys(&self, channel: &str) -> (String, String) {
        (
            format!("{}:history:{channel}", self.prefix),
            format!("{}:history-meta:{channel}", self.prefix),
        )
    }

    /// What history seals are bound to (stream entries and bus messages alike).
    fn history_binding(&self) -> String {
        binding(&self.prefix)
    }

    /// Publishes to a channel that keeps history (`policy`): the offset and
    /// epoch come from Redis; every node, this one too, delivers it when it
    /// comes back on the bus. Returns its position and this node's members
    /// it was queued to (0 when its own delivery took longer than
    /// `cluster.request_timeout`).
    pub async fn publish_history(
        &self,
        channel: &str,
        kind: Kind,
        payload: &Bytes,
        except: Vec<String>,
        policy: Policy,
    ) -> Result<(Position, usize), HistoryError> {
        let envelope = Envelope {
            origin: self.node_id.clone(),
            body: Body::Publish {
                channel: channel.to_owned(),
                except,
                kind,
                payload: payload.clone(),
            },
        };
        let mut sealed = wire::encode(&envelope).map_err(|e| HistoryError::Redis(e.to_string()))?;
        let seq = lock(&self.history.sequence).next(seal::now_ns());
        seal::seal(&self.key, &self.history_binding(), seq, &mut sealed);
        let (tx, rx) = oneshot::channel();
        lock(&self.history.waiting).insert(seq, tx);
        let (stream, meta) = self.history_keys(channel);
        let epoch = new_epoch();
        let answer = self
            .history
            .script(
                &self.history.publish_sha,
                PUBLISH_SCRIPT,
                &[&stream, &meta],
                &[
                    epoch.as_bytes(),
                    policy.size.to_string().as_bytes(),
                    millis(policy.ttl).to_string().as_bytes(),
                    millis(policy.ttl.max(META_TTL_MIN)).to_string().as_bytes(),
                    now_ms().to_string().as_bytes(),
                    &sealed,
                    self.bus.as_bytes(),
                ],
            )
            .await;
        let position = match answer.and_then(|v| published(&v)) {
            Ok(position) => position,
            Err(e) => {
                lock(&self.history.waiting).remove(&seq);
                return Err(e);
            }
        };
        let delivered = tokio::time::timeout(self.request_timeout, rx).await;
        lock(&self.history.waiting).remove(&seq);
        let delivered = match delivered {
            Ok(Ok(n)) => n,
            _ => {
                tracing::debug!(
                    channel,
                    "own history publication not back from the bus in time"
                );
                0
            }
        };
        Ok((position, delivered))
    }

    /// Reads `channel`'s record and the entries from offset `from` on (0:
    /// none) or the newest `latest` (0: none).
    pub async fn read_history(
        &self,
        channel: &str,
        policy: Policy,
        from: u64,
        latest: usize,
    ) -> Result<Read, HistoryError> {
        let (stream, meta) = self.history_keys(channel);
        let epoch = new_epoch();
        let value = self
            .history
            .script(
                &self.history.read_sha,
                READ_SCRIPT,
                &[&stream, &meta],
                &[
                    epoch.as_bytes(),
                    millis(policy.ttl.max(META_TTL_MIN)).to_string().as_bytes(),
                    from.to_string().as_bytes(),
                    latest.to_string().as_bytes(),
                ],
            )
            .await?;
        let Value::Array(items) = value else {
            return Err(HistoryError::Answer("read: not an array"));
        };
        let [epoch, top, entries] = items.as_slice() else {
            return Err(HistoryError::Answer("read: not three items"));
        };
        let top = Position {
            offset: int(top).ok_or(HistoryError::Answer("read: top"))?,
            epoch: text(epoch).ok_or(HistoryError::Answer("read: epoch"))?,
        };
        let Value::Array(raw) = entries else {
            return Err(HistoryError::Answer("read: entries"));
        };
        let mut list = Vec::with_capacity(raw.len());
        let mut times = Vec::with_capacity(raw.len());
        let binding = self.history_binding();
        let mut forged = false;
        for item in raw {
            match self.entry(item, channel, &binding) {
                Ok((entry, at)) => {
                    list.push(entry);
                    times.push(at);
                }
                Err(problem) => {
                    tracing::error!(
                        channel,
                        stream,
                        problem,
                        "a history entry in redis was not sealed by this cluster: \
                         the channel is reported lost"
                    );
                    forged = true;
                    break;
                }
            }
        }
        if latest > 0 {
            list.reverse();
            times.reverse();
        }
        Ok(Read {
            top,
            entries: (!forged).then_some(list),
            times,
        })
    }

    /// One stream entry `[id, [field, value, …]]`, its seal checked (not its age).
    fn entry(
        &self,
        item: &Value,
        channel: &str,
        binding: &str,
    ) -> Result<(Entry, u64), &'static str> {
        let Value::Array(pair) = item else {
            return Err("not an entry");
        };
        let [id, fields] = pair.as_slice() else {
            return Err("not an entry");
        };
        let offset = text(id)
            .and_then(|id| id.strip_suffix("-1")?.parse().ok())
            .ok_or("bad entry id")?;
        let Value::Array(fields) = fields else {
            return Err("no fields");
        };
        let (mut sealed, mut at) = (None, None);
        for pair in fields.chunks(2) {
            match pair {
                [Value::BulkString(k), Value::BulkString(v)] if k == b"e" => sealed = Some(v),
                [Value::BulkString(k), v] if k == b"t" => at = text(v).and_then(|t| t.parse().ok()),
                _ => {}
            }
        }
        let sealed = sealed.ok_or("no envelope")?;
        let at = at.ok_or("no time")?;
        let (body, _seq) = seal::open(&self.key, binding, sealed).map_err(|_| "bad seal")?;
        match wire::decode(body).map(|e| e.body) {
            Ok(Body::Publish {
                channel: c,
                kind,
                payload,
                ..
            }) if c == channel => Ok((
                Entry {
                    offset,
                    kind,
                    data: payload,
                },
                at,
            )),
            Ok(_) => Err("not a publication of this channel"),
            Err(_) => Err("malformed envelope"),
        }
    }
}

/// Reads a channel's position for a `ws2fcgi.v1` client's join after its
/// open ([`crate::hub::TopReader`]), in a task of its own.
pub struct TopReader {
    ctx: std::sync::Weak<crate::context::Context>,
}

impl TopReader {
    /// The reader of `ctx`'s cluster (weak: the hub it is given to is `ctx`'s).
    pub fn new(ctx: &Arc<crate::context::Context>) -> Self {
        Self {
            ctx: Arc::downgrade(ctx),
        }
    }
}

impl crate::hub::TopReader for TopReader {
    fn keeps_history(&self, channel: &str) -> bool {
        self.ctx
            .upgrade()
            .is_some_and(|ctx| ctx.config().history.policy(channel).is_some())
    }

    fn read_top(&self, id: crate::hub::ConnId, channel: &str) {
        let ctx = self.ctx.clone();
        let name = channel.to_owned();
        let read = async move {
            let channel = name;
            let Some(ctx) = ctx.upgrade() else {
                return;
            };
            let policy = ctx.config().history.policy(&channel);
            let top = match (&ctx.cluster, policy) {
                (Some(cluster), Some(policy)) => cluster
                    .read_history(&channel, policy, 0, 0)
                    .await
                    .map(|read| read.top)
                    .map_err(
                        |e| tracing::debug!(channel, error = %e, "position not read for a join"),
                    )
                    .ok(),
                _ => None,
            };
            ctx.hub.join_release(&id, &channel, top);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(read);
            }
            Err(_) => tracing::error!(channel, "no runtime to read a channel's position"),
        }
    }
}

/// A history publication from the bus, opened: its position, origin, the
/// seal's `seq` and the envelope.
pub struct Incoming {
    /// Its place in the channel's history.
    pub position: Position,
    /// The `seq` of its seal (for the publishing node's waiting publish).
    pub seq: u64,
    /// The publication.
    pub envelope: Envelope,
}

/// What history seals are bound to: `<prefix>:history`.
pub fn binding(prefix: &str) -> String {
    format!("{prefix}:history")
}

/// Splits a bus message `"WH" <offset> " " <epoch> " " <sealed>`; `None`
/// when it is not one.
pub fn split_bus(bytes: &[u8]) -> Option<(u64, &str, &[u8])> {
    let rest = bytes.strip_prefix(BUS_MAGIC)?;
    let space = rest.iter().position(|&b| b == b' ')?;
    let offset = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
    let rest = &rest[space + 1..];
    let space = rest.iter().position(|&b| b == b' ')?;
    let epoch = std::str::from_utf8(&rest[..space]).ok()?;
    (!epoch.is_empty()).then_some((offset, epoch, &rest[space + 1..]))
}

/// Opens a history bus message: the MAC and the age of its seal (not the
/// replay order: a node's history publications reach Redis in the order the
/// scripts ran, not the order they were sealed; the receiver drops offsets
/// it already delivered instead).
pub fn open_bus(key: &seal::Key, prefix: &str, bytes: &[u8]) -> Result<Incoming, String> {
    let (offset, epoch, sealed) = split_bus(bytes).ok_or("not a history publication")?;
    let (body, seq) = seal::open(key, &binding(prefix), sealed).map_err(|e| e.to_string())?;
    let oldest = seal::now_ns().saturating_sub(u64::try_from(MAX_AGE.as_nanos()).unwrap_or(0));
    if seq < oldest {
        return Err("stale".into());
    }
    let envelope = wire::decode(body).map_err(|e| e.to_string())?;
    if !matches!(envelope.body, Body::Publish { .. }) {
        return Err("not a publication".into());
    }
    Ok(Incoming {
        position: Position {
            offset,
            epoch: Arc::from(epoch),
        },
        seq,
        envelope,
    })
}

/// The last offset delivered per channel, so a replayed (or repeated) bus
/// message is not delivered twice.
#[derive(Default)]
pub struct Delivered {
    last: HashMap<String, (Arc<str>, u64, u64)>,
}

impl Delivered {
    /// Remembers `position` of `channel` if it is new, and says how many
    /// offsets before it never came (`Some(0)`: none); `None`: not new.
    pub fn first_time(&mut self, channel: &str, position: &Position, now_ns: u64) -> Option<u64> {
        let mut missed = 0;
        match self.last.get_mut(channel) {
            Some((epoch, last, seen)) if *epoch == position.epoch => {
                if position.offset <= *last {
                    return None;
                }
                missed = position.offset - *last - 1;
                *last = position.offset;
                *seen = now_ns;
            }
            Some(record) => *record = (position.epoch.clone(), position.offset, now_ns),
            None => {
                self.last.insert(
                    channel.to_owned(),
                    (position.epoch.clone(), position.offset, now_ns),
                );
            }
        }
        Some(missed)
    }

    /// Forgets channels without a publication for [`MAX_AGE`] (a replay that
    /// old is refused as stale).
    pub fn prune(&mut self, now_ns: u64) {
        let oldest = now_ns.saturating_sub(u64::try_from(MAX_AGE.as_nanos()).unwrap_or(0));
        self.last.retain(|_, (_, _, seen)| *seen >= oldest);
    }
}

fn published(value: &Value) -> Result<Position, HistoryError> {
    match value {
        Value::Array(items) => match items.as_slice() {
            [top, epoch] => Ok(Position {
                offset: int(top).ok_or(HistoryError::Answer("publish: offset"))?,
                epoch: text(epoch).ok_or(HistoryError::Answer("publish: epoch"))?,
            }),
            _ => Err(HistoryError::Answer("publish: not two items")),
        },
        _ => Err(HistoryError::Answer("publish: not an array")),
    }
}

fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

fn text(value: &Value) -> Option<Arc<str>> {
    match value {
        Value::BulkString(b) => std::str::from_utf8(b).ok().map(Arc::from),
        Value::SimpleString(s) => Some(Arc::from(s.as_str())),
        _ => None,
    }
}

fn sha1_hex(text: &str) -> String {
    Sha1::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn new_epoch() -> String {
    format!("{:016x}", random_u64())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Milliseconds since 1970 by this machine's clock.
pub fn now_ms() -> u64 {
    seal::now_ns() / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_messages_split_and_open() {
        let key = seal::Key::new(b"k");
        let envelope = Envelope {
            origin: "a".into(),
            body: Body::Publish {
                channel: "room".into(),
                except: vec![],
                kind: Kind::Text,
                payload: Bytes::from_static(b"hi"),
            },
        };
        let mut sealed = wire::encode(&envelope).unwrap();
        seal::seal(&key, &binding("p"), seal::now_ns(), &mut sealed);
        let mut message = b"WH13 ab12 ".to_vec();
        message.extend_from_slice(&sealed);
        assert_eq!(split_bus(&message).map(|s| (s.0, s.1)), Some((13, "ab12")));
        let opened = open_bus(&key, "p", &message).unwrap();
        assert_eq!(opened.position.offset, 13);
        assert_eq!(opened.envelope, envelope);
        assert!(
            open_bus(&key, "other", &message).is_err(),
            "bound to the prefix"
        );
        assert!(open_bus(&seal::Key::new(b"x"), "p", &message).is_err());
        for bad in [&b"WS2 e x"[..], b"WH e x", b"WH1  x", b"WH1 e"] {
            assert!(split_bus(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_channel_is_delivered_once_per_offset() {
        let mut d = Delivered::default();
        let at = |offset, epoch: &str| Position {
            offset,
            epoch: Arc::from(epoch),
        };
        assert_eq!(d.first_time("c", &at(1, "e"), 0), Some(0));
        assert_eq!(d.first_time("c", &at(1, "e"), 0), None);
        assert_eq!(d.first_time("c", &at(2, "e"), 0), Some(0));
        assert_eq!(
            d.first_time("c", &at(5, "e"), 0),
            Some(2),
            "3 and 4 never came"
        );
        assert_eq!(
            d.first_time("c", &at(1, "f"), 0),
            Some(0),
            "a new epoch starts over"
        );
        let age = MAX_AGE.as_nanos() as u64;
        d.prune(age + 1);
        assert!(d.last.is_empty());
    }

    #[test]
    fn since_needs_every_entry_in_the_epoch_and_young_enough() {
        let entry = |offset| Entry {
            offset,
            kind: Kind::Text,
            data: Bytes::new(),
        };
        let read = Read {
            top: Position {
                offset: 5,
                epoch: Arc::from("e"),
            },
            entries: Some(vec![entry(4), entry(5)]),
            times: vec![1000, 2000],
        };
        let at = |offset, epoch: &str| Position {
            offset,
            epoch: Arc::from(epoch),
        };
        let ttl = Duration::from_secs(1);
        assert_eq!(read.since(&at(3, "e"), ttl, 1500).map(<[_]>::len), Some(2));
        assert!(read.since(&at(3, "e"), ttl, 2500).is_none(), "4 expired");
        assert!(read.since(&at(2, "e"), ttl, 1500).is_none(), "3 evicted");
        assert!(read.since(&at(3, "f"), ttl, 1500).is_none(), "epoch");
        assert!(read.since(&at(6, "e"), ttl, 1500).is_none(), "future");
    }
}
