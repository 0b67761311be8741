//! Waking a broadcast's members once per shard, not once per member.
//!
//! Without it, [`super::Hub::publish`] queues the frame in each member's
//! outbox and wakes the member's task there and then: with members on other
//! threads, that is one cross-thread wake-up per member. With a fan-out
//! ([`super::Hub::set_fanout`]), the publish queues the frames under the
//! registry lock as before (so every member still sees the same order) but
//! only collects the members whose writers must be woken, by shard, and
//! sends each shard one list; the shard's [`Lane`], on the shard's own
//! thread, wakes them there. A member whose queue held frames already is
//! not listed: its writer has a wake coming or is writing.
//!
//! `fanout_delay` holds each list that long before the wake-ups, so a
//! member's writer finds several publishes queued and writes them in one
//! `sendmsg`: CPU per delivery for latency, at low rates. Frames are queued
//! at once, so a writer woken for other reasons (its own PHP answer, a
//! direct send) takes them early; the delay only bounds how late they go.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::ConnHandle;

/// Members whose writers a publish must wake, by shard.
#[derive(Default)]
pub(super) struct Wakes {
    by_shard: Vec<Vec<Arc<ConnHandle>>>,
}

impl Wakes {
    /// Notes that `handle`, on `shard`, must be woken.
    pub(super) fn add(&mut self, shard: usize, handle: &Arc<ConnHandle>) {
        if self.by_shard.len() <= shard {
            self.by_shard.resize_with(shard + 1, Vec::new);
        }
        self.by_shard[shard].push(handle.clone());
    }
}

/// The publishers' side: one channel to each shard's [`Lane`].
pub struct Fanout {
    lanes: Vec<mpsc::UnboundedSender<Vec<Arc<ConnHandle>>>>,
}

impl Fanout {
    /// A fan-out to `shards` lanes (at least one), each holding its wake-ups
    /// `delay` before waking; the lanes must be run on their shards.
    pub fn new(shards: usize, delay: Duration) -> (Self, Vec<Lane>) {
        let (lanes, runs) = (0..shards.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                (tx, Lane { rx, delay })
            })
            .unzip();
        (Self { lanes }, runs)
    }

    /// The lane of a member registered on `shard` (shards past the lanes,
    /// which a caller outside every shard could name, share the last).
    pub(super) fn lane_of(&self, shard: usize) -> usize {
        shard.min(self.lanes.len() - 1)
    }

    /// Sends each shard its list, once.
    pub(super) fn send(&self, wakes: Wakes) {
        for (shard, handles) in wakes.by_shard.into_iter().enumerate() {
            if handles.is_empty() {
                continue;
            }
            if let Err(mpsc::error::SendError(handles)) =
                self.lanes[self.lane_of(shard)].send(handles)
            {
                // The lane is gone (its shard stopped): wake from here.
                for handle in handles {
                    handle.outbox.wake();
                }
            }
        }
    }
}

/// One shard's end: wakes the writers publishes listed for it.
pub struct Lane {
    rx: mpsc::UnboundedReceiver<Vec<Arc<ConnHandle>>>,
    delay: Duration,
}

impl Lane {
    /// Runs until every [`Fanout`] sender is gone (the hub is dropped) or
    /// the task is aborted (the shard stops).
    pub async fn run(mut self) {
        while let Some(first) = self.rx.recv().await {
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            wake(first);
            // Everything that came meanwhile goes in the same turn.
            while let Ok(more) = self.rx.try_recv() {
                wake(more);
            }
        }
    }
}

fn wake(handles: Vec<Arc<ConnHandle>>) {
    for handle in handles {
        handle.outbox.wake();
    }
}
