//! What the channels' history does for the hub: the open of a `ws2fcgi.v1`
//! client that gives positions (sent what it missed, or told what was
//! lost), and the `history` control op, both read from the in-memory
//! history (`history.rs`) under the registry lock.

use std::time::Instant;

use super::{ConnHandle, Hub, add_member};
use crate::history::{History, Since, Stored};
use crate::v1::{self, Position};

/// What the open's joins did for a `ws2fcgi.v1` client (see [`Hub::open_joins`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Channels with a position given that could not be recovered.
    pub lost: Vec<String>,
    /// Publications sent because the client had missed them.
    pub replayed: usize,
}

/// The positions a `ws2fcgi.v1` client gave in its handshake.
#[derive(Clone, Copy)]
pub enum Positions<'a> {
    /// Read from its `ws2fcgi.since.` token (maybe none).
    Given(&'a [(String, Position)]),
    /// It gave a token that could not be read: every channel is lost.
    Unreadable,
}

/// The history's answer to a `history` request.
pub enum HistoryReply {
    /// The channel keeps no history (or none is kept on this node).
    None,
    /// Where the channel stands and the publications asked for.
    Publications(Position, Vec<Stored>),
    /// `since` is no longer covered, or names another epoch.
    Lost(Position),
}

impl Hub {
    /// The joins of a `ws2fcgi.v1` client's open answer: sends the
    /// `connected` message, then joins each channel; for each one the client
    /// gave a position in (`since`), sends what it missed first, or lists it
    /// as lost. All under the registry lock, so nothing published meanwhile
    /// is missed or sent twice.
    pub fn open_joins(
        &self,
        handle: &ConnHandle,
        public_id: &str,
        heartbeat_secs: u64,
        channels: &[String],
        positions: Positions<'_>,
    ) -> Recovery {
        let (since, unreadable) = match positions {
            Positions::Given(since) => (since, false),
            Positions::Unreadable => (&[][..], true),
        };
        let mut reg = self.lock();
        let reg = &mut *reg;
        let now = Instant::now();
        let mut recovery = Recovery::default();
        let mut joined = Vec::with_capacity(channels.len());
        let mut replay: Vec<Stored> = Vec::new();
        for channel in channels {
            if joined
                .iter()
                .any(|j: &v1::Joined<'_>| j.channel == channel.as_str())
            {
                continue;
            }
            let given = since.iter().find(|(c, _)| c == channel).map(|(_, p)| p);
            let history = reg.history.as_mut();
            if unreadable {
                recovery.lost.push(channel.clone());
                let top = history.and_then(|h| h.position(channel, now));
                joined.push(v1::Joined {
                    channel: channel.as_str(),
                    position: top,
                });
                continue;
            }
            let position = match (history, given) {
                (None, Some(_)) => {
                    recovery.lost.push(channel.clone());
                    None
                }
                (None, None) => None,
                (Some(history), given) => {
                    let top = history.position(channel, now);
                    match (given, &top) {
                        (Some(given), Some(_)) => match history.since(channel, given, now) {
                            Since::Covered(missed) => {
                                recovery.replayed += missed.len();
                                replay.extend(missed);
                                Some(given.clone())
                            }
                            Since::Lost => {
                                recovery.lost.push(channel.clone());
                                top
                            }
                        },
                        (Some(_), None) => {
                            recovery.lost.push(channel.clone());
                            None
                        }
                        (None, _) => top,
                    }
                }
            };
            joined.push(v1::Joined {
                channel: channel.as_str(),
                position,
            });
        }
        let recovered = !since.is_empty() && recovery.lost.is_empty();
        let lost: Vec<&str> = recovery.lost.iter().map(String::as_str).collect();
        handle.outbox.push(v1::connected(
            public_id,
            heartbeat_secs,
            recovered,
            &joined,
            &lost,
        ));
        let mut replayed = 0;
        for stored in replay {
            replayed += self.deliver(handle, &stored.frame, false);
        }
        self.stats.messages_out.inc_by(replayed as u64);
        for channel in channels {
            add_member(reg, &handle.id, channel, self.observer.as_deref());
        }
        recovery
    }

    /// The `history` control op: the newest `limit` publications of
    /// `channel`, or those after `since`.
    pub fn history(&self, channel: &str, limit: usize, since: Option<&Position>) -> HistoryReply {
        let mut reg = self.lock();
        let Some(history) = reg.history.as_mut() else {
            return HistoryReply::None;
        };
        let now = Instant::now();
        let Some((top, latest)) = history.latest(channel, limit, now) else {
            return HistoryReply::None;
        };
        match since {
            None => HistoryReply::Publications(top, latest),
            Some(since) => match history.since(channel, since, now) {
                Since::Covered(mut list) => {
                    list.truncate(limit);
                    HistoryReply::Publications(top, list)
                }
                Since::Lost => HistoryReply::Lost(top),
            },
        }
    }

    /// Drops expired history (run every [`Hub::history_sweep_interval`]).
    pub fn sweep_history(&self) {
        let mut reg = self.lock();
        let reg = &mut *reg;
        if let Some(history) = reg.history.as_mut() {
            let channels = &reg.channels;
            history.sweep(Instant::now(), |name| channels.contains_key(name));
        }
    }

    /// How often to sweep the history; `None` when none is kept here.
    pub fn history_sweep_interval(&self) -> Option<std::time::Duration> {
        self.lock().history.as_ref().map(History::sweep_interval)
    }

    /// Every channel's history kept here, for a SIGUSR2 handover (none
    /// without `[history]`, or in a cluster, where Redis keeps it).
    pub fn export_history(&self) -> Vec<crate::handover::history::Record> {
        self.lock()
            .history
            .as_mut()
            .map(|h| h.export(Instant::now()))
            .unwrap_or_default()
    }

    /// Takes the history a predecessor handed over (see
    /// [`History::import`]); returns the publications kept.
    pub fn import_history(&self, records: Vec<crate::handover::history::Record>) -> usize {
        self.lock()
            .history
            .as_mut()
            .map_or(0, |h| h.import(records, Instant::now()))
    }

    /// Kept publications and what they cost in bytes.
    pub fn history_size(&self) -> (usize, usize) {
        self.lock()
            .history
            .as_ref()
            .map_or((0, 0), |h| (h.len(), h.bytes()))
    }
}
