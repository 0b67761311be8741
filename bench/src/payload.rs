//! Broadcast payloads and what a receiver learns from them.
//!
//! Each published message carries its send time, its sender and its sequence
//! number, then padding up to the requested size: words drawn from a small
//! vocabulary, so that a compressed message shrinks about as chat text
//! does rather than as a run of one letter:
//!
//! ```text
//! t=<ns since the run's base Instant>;s=<sender>;q=<seq>;see you at the …
//! ```
//!
//! Sender and receivers live in this process, so one `Instant` base serves as
//! a shared clock. A receiver keeps a [`SeqTracker`] per sender to tell
//! in-order, skipped, late and duplicate deliveries apart.

/// What a receiver reads from a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Send time, nanoseconds since the run's base.
    pub sent_ns: u64,
    /// Which sender.
    pub sender: u32,
    /// The sender's sequence number, from 0.
    pub seq: u64,
}

/// Writes `stamp` and padding into `out` (cleared first), `size` bytes long
/// unless the stamp alone is longer.
///
/// ```
/// use ws2fcgi_bench::payload::{parse, write, Stamp};
/// let stamp = Stamp { sent_ns: 42, sender: 1, seq: 7 };
/// let mut out = String::new();
/// write(&mut out, stamp, 40);
/// assert_eq!(out.len(), 40);
/// assert!(out.starts_with("t=42;s=1;q=7;"));
/// assert_eq!(parse(&out), Some(stamp));
/// ```
pub fn write(out: &mut String, stamp: Stamp, size: usize) {
    use std::fmt::Write as _;
    const WORDS: [&str; 32] = [
        "the", "room", "is", "open", "see", "you", "at", "ten", "ok", "thanks", "for", "the",
        "update", "shipping", "order", "today", "meeting", "moved", "to", "friday", "coffee",
        "later", "sounds", "good", "can", "we", "talk", "about", "release", "notes", "yes", "no",
    ];
    out.clear();
    let _ = write!(
        out,
        "t={};s={};q={};",
        stamp.sent_ns, stamp.sender, stamp.seq
    );
    let stamp_len = out.len();
    let mut state = stamp
        .seq
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1);
    while out.len() < size {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        out.push_str(WORDS[(state >> 59) as usize]);
        out.push(' ');
    }
    out.truncate(size.max(stamp_len));
}

/// Reads a stamp back; `None` for anything else (greetings, sync probes,
/// errors). A `ws2fcgi.v1` header line before it is skipped.
pub fn parse(text: &str) -> Option<Stamp> {
    let text = text.split_once('\n').map_or(text, |(_, data)| data);
    let mut fields = text.splitn(4, ';');
    let mut field = |name: &str| fields.next()?.strip_prefix(name)?.parse::<u64>().ok();
    let sent_ns = field("t=")?;
    let sender = u32::try_from(field("s=")?).ok()?;
    let seq = field("q=")?;
    Some(Stamp {
        sent_ns,
        sender,
        seq,
    })
}

/// How one delivery relates to the ones before it from the same sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The next sequence number.
    InOrder,
    /// Ahead of the next one: this many were skipped (lost, or late).
    Skipped(u64),
    /// Behind the highest seen and not seen before: out of order.
    Late,
    /// Seen before.
    Duplicate,
}

/// Tracks one sender's sequence numbers at one receiver in 24 bytes.
///
/// A 128-bit window behind the highest number tells duplicates from late
/// arrivals; anything further behind counts as late.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    /// Highest sequence number seen plus one (0: none yet).
    next: u64,
    /// Bit i set: `next - 1 - i` was seen.
    window: u128,
}

impl SeqTracker {
    /// Notes `seq` and says how it arrived.
    pub fn observe(&mut self, seq: u64) -> Seen {
        if seq >= self.next {
            let skipped = seq - self.next;
            let shift = skipped + 1;
            self.window = if shift >= 128 {
                1
            } else {
                (self.window << shift) | 1
            };
            self.next = seq + 1;
            return if skipped == 0 {
                Seen::InOrder
            } else {
                Seen::Skipped(skipped)
            };
        }
        let behind = self.next - 1 - seq;
        if behind >= 128 {
            return Seen::Late;
        }
        let bit = 1u128 << behind;
        if self.window & bit != 0 {
            Seen::Duplicate
        } else {
            self.window |= bit;
            Seen::Late
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(0), Seen::InOrder);
        assert_eq!(t.observe(1), Seen::InOrder);
        assert_eq!(t.observe(4), Seen::Skipped(2));
        assert_eq!(t.observe(3), Seen::Late);
        assert_eq!(t.observe(3), Seen::Duplicate);
        assert_eq!(t.observe(1), Seen::Duplicate);
        assert_eq!(t.observe(2), Seen::Late);
        assert_eq!(t.observe(5), Seen::InOrder);
        assert_eq!(t.observe(1000), Seen::Skipped(994));
        assert_eq!(t.observe(999), Seen::Late);
        assert_eq!(t.observe(5), Seen::Late, "beyond the window");
    }

    #[test]
    fn first_delivery_may_skip() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(3), Seen::Skipped(3));
        assert_eq!(t.observe(0), Seen::Late);
    }

    #[test]
    fn foreign_text_is_not_a_stamp() {
        for text in [
            "",
            "hello 1",
            "sync",
            "t=1;s=2",
            "t=x;s=1;q=1;",
            "t=1;s=99999999999;q=1;",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
        assert!(parse("t=1;s=2;q=3;").is_some());
        assert!(parse("t=1;s=2;q=3").is_some());
    }
}
