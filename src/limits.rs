//! Limits that protect the daemon and PHP from too many or too eager clients.
//!
//! - [`Slots`]: client sockets in total, counted from `accept` until the
//!   socket closes (or, for a WebSocket connection, until its close event has
//!   reached PHP), so sockets still in their handshake and connections
//!   together stay within `websocket.max_connections` and the open-files
//!   limit less [`DESCRIPTOR_RESERVE`]; unfinished handshakes per peer
//!   address (`limits.max_handshakes_per_ip`); and connections per client
//!   address (`websocket.max_connections_per_ip`). IPv6 addresses count per
//!   `limits.ipv6_prefix` block ([`ip_key`]).
//! - [`OriginPolicy`]: which `Origin`s may connect (exact, or `*.` wildcard
//!   subdomains); a refused one gets 403 and never reaches PHP.
//! - [`TokenBucket`]: the per-connection inbound message rate.
//!
//! ```text
//! accept ──admit(peer)──▶ Slot ──head_received──▶ claim_client(ip) ──▶ connection … close event
//!   │ no socket left: 503 at once          │ its peer has too many unfinished: 429 at once
//!   └ answered at once; the socket lingers ≤ 2 s so the answer is read, at most
//!     MAX_LINGERING_REFUSALS at a time; past that, written once and closed at once
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Descriptors kept back from client sockets for everything else: listeners,
/// the runtime, admin and HTTP-control clients, control-socket clients,
/// refusals being answered, Redis, a managed php-fpm's pipes. The FastCGI
/// pool's `fpm.pool_size` connections are kept back on top of it.
pub const DESCRIPTOR_RESERVE: u64 = 256;

/// Sockets refused at `accept` that may stay open at once (at most 2 s each)
/// while their 503 or 429 is delivered; past it a refused socket gets one
/// non-blocking write of its answer and is closed at once.
pub const MAX_LINGERING_REFUSALS: usize = 32;

/// Why a client socket or handshake was refused by a connection limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every client socket is taken (`websocket.max_connections`, or the
    /// open-files limit less the reserve): 503 at `accept`.
    Total,
    /// The peer address has `limits.max_handshakes_per_ip` sockets that have
    /// not yet sent their request: 429 at `accept`.
    Handshakes,
    /// `websocket.max_connections_per_ip` reached for this client (429).
    PerIp,
}

impl Refusal {
    /// The label of `ws2fcgi_handshakes_refused_total`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Total => "max_connections",
            Self::Handshakes => "max_handshakes_per_ip",
            Self::PerIp => "max_connections_per_ip",
        }
    }
}

/// The limits [`Slots`] enforce; all of them change on reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLimits {
    /// Client sockets at most: sockets in their handshake plus connections.
    pub sockets: usize,
    /// Connections per client address (after the trusted-proxy rules); 0: no limit.
    pub per_ip: u32,
    /// Sockets per peer address that have not yet sent their request; 0: no limit.
    pub handshakes_per_ip: u32,
    /// IPv6 addresses are counted per block of this prefix length.
    pub ipv6_prefix: u8,
}

/// The address a per-address limit counts `ip` under: IPv4 as it is (an
/// IPv4-mapped IPv6 address counts as its IPv4 address), IPv6 as its
/// `ipv6_prefix` block, since one host or site commonly holds a whole /64.
///
/// ```
/// use std::net::IpAddr;
/// use ws2fcgi::limits::ip_key;
/// let key = |s: &str| ip_key(s.parse::<IpAddr>().unwrap(), 64).to_string();
/// assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
/// assert_eq!(key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::");
/// assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
/// assert_eq!(key("192.0.2.7"), "192.0.2.7");
/// ```
pub fn ip_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let host_bits = 128u32.saturating_sub(u32::from(ipv6_prefix));
                let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

/// Counts per address key.
#[derive(Debug, Default)]
struct PerKey(Mutex<HashMap<IpAddr, u32>>);

impl PerKey {
    /// Counts one more for `key` unless it already has `max`.
    fn take(&self, key: IpAddr, max: u32) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key).or_insert(0);
        if *n >= max {
            if *n == 0 {
                map.remove(&key);
            }
            return false;
        }
        *n += 1;
        true
    }

    fn give(&self, key: IpAddr) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&key);
            }
        }
    }

    fn sum(&self) -> usize {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.values().map(|n| *n as usize).sum()
    }
}

#[derive(Debug)]
struct Counts {
    /// Client sockets holding a [`Slot`].
    total: AtomicUsize,
    /// Sockets per peer key that have not sent their request yet.
    handshakes: PerKey,
    /// Connections per client key.
    per_ip: PerKey,
    /// Refused sockets still open to deliver their answer.
    lingering: AtomicUsize,
    max_total: AtomicUsize,
    max_per_ip: AtomicU32,
    max_handshakes_per_ip: AtomicU32,
    ipv6_prefix: AtomicU8,
}

/// The client-socket counters; cheap to clone.
#[derive(Debug, Clone)]
pub struct Slots(Arc<Counts>);

/// One client socket's place under the limits; given back when dropped (when
/// the socket closes, or after a connection's close event reached PHP).
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Counts>,
    /// The peer key counted in `handshakes` until the request arrives.
    handshake: Option<IpAddr>,
    /// The client key counted in `per_ip`.
    client: Option<IpAddr>,
}

/// A refused socket allowed to stay open while its answer goes out.
#[derive(Debug)]
pub struct Lingering(Arc<Counts>);

impl Slots {
    /// Counters enforcing `limits`.
    pub fn new(limits: SlotLimits) -> Self {
        let slots = Self(Arc::new(Counts {
            total: AtomicUsize::new(0),
            handshakes: PerKey::default(),
            per_ip: PerKey::default(),
            lingering: AtomicUsize::new(0),
            max_total: AtomicUsize::new(0),
            max_per_ip: AtomicU32::new(0),
            max_handshakes_per_ip: AtomicU32::new(0),
            ipv6_prefix: AtomicU8::new(64),
        }));
        slots.set_limits(limits);
        slots
    }

    /// Changes the limits (a reload); sockets already over them stay.
    pub fn set_limits(&self, limits: SlotLimits) {
        let c = &self.0;
        c.max_total.store(limits.sockets, Ordering::Release);
        c.max_per_ip.store(limits.per_ip, Ordering::Release);
        c.max_handshakes_per_ip
            .store(limits.handshakes_per_ip, Ordering::Release);
        c.ipv6_prefix.store(limits.ipv6_prefix, Ordering::Release);
    }

    /// Takes a slot for a socket just accepted from `peer`: the address its
    /// unfinished handshakes are counted against, `None` for peers exempt from
    /// that count (a trusted proxy, a Unix-socket peer).
    pub fn admit(&self, peer: Option<IpAddr>) -> Result<Slot, Refusal> {
        let counts = &self.0;
        let max_handshakes = counts.max_handshakes_per_ip.load(Ordering::Acquire);
        let handshake = match peer {
            Some(peer) if max_handshakes > 0 => {
                let key = ip_key(peer, counts.ipv6_prefix.load(Ordering::Acquire));
                if !counts.handshakes.take(key, max_handshakes) {
                    return Err(Refusal::Handshakes);
                }
                Some(key)
            }
            _ => None,
        };
        let max_total = counts.max_total.load(Ordering::Acquire);
        let taken = counts
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_total).then_some(n + 1)
            });
        if taken.is_err() {
            if let Some(key) = handshake {
                counts.handshakes.give(key);
            }
            return Err(Refusal::Total);
        }
        Ok(Slot {
            counts: counts.clone(),
            handshake,
            client: None,
        })
    }

    /// A refused socket may stay open to get its answer, unless
    /// [`MAX_LINGERING_REFUSALS`] already do.
    pub fn linger(&self) -> Option<Lingering> {
        self.0
            .lingering
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_LINGERING_REFUSALS).then_some(n + 1)
            })
            .ok()
            .map(|_| Lingering(self.0.clone()))
    }

    /// Client sockets at most now.
    pub fn limit(&self) -> usize {
        self.0.max_total.load(Ordering::Acquire)
    }

    /// Client sockets holding a slot now: handshakes and connections.
    pub fn in_use(&self) -> usize {
        self.0.total.load(Ordering::Acquire)
    }

    /// Sockets counted as unfinished handshakes of their peer now.
    pub fn handshakes(&self) -> usize {
        self.0.handshakes.sum()
    }
}

impl Slot {
    /// The socket's request arrived: it no longer counts as an unfinished
    /// handshake of its peer.
    pub fn head_received(&mut self) {
        if let Some(key) = self.handshake.take() {
            self.counts.handshakes.give(key);
        }
    }

    /// Counts the connection for its client address (after the trusted-proxy
    /// rules), or refuses it when that address has its maximum.
    pub fn claim_client(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        self.head_received();
        let max = self.counts.max_per_ip.load(Ordering::Acquire);
        if max == 0 || self.client.is_some() {
            return Ok(());
        }
        let key = ip_key(ip, self.counts.ipv6_prefix.load(Ordering::Acquire));
        if !self.counts.per_ip.take(key, max) {
            return Err(Refusal::PerIp);
        }
        self.client = Some(key);
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.head_received();
        self.counts.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(key) = self.client {
            self.counts.per_ip.give(key);
        }
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        self.0.lingering.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Which `Origin` headers may open a connection.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    exact: Vec<String>,
    /// `(scheme, suffix)` from `scheme://*.suffix`: matches any subdomain of suffix.
    wildcard: Vec<(String, String)>,
}

impl OriginPolicy {
    /// Builds a policy from `websocket.allowed_origins`; an empty list allows every origin.
    ///
    /// ```
    /// use ws2fcgi::limits::OriginPolicy;
    /// let p = OriginPolicy::new(&["https://example.com".into(), "https://*.example.org".into()]).unwrap();
    /// assert!(p.allows(Some("https://example.com")));
    /// assert!(p.allows(Some("https://chat.example.org")));
    /// assert!(!p.allows(Some("https://example.org")));
    /// assert!(!p.allows(Some("https://evil.com")));
    /// assert!(p.allows(None)); // non-browser clients send no Origin
    /// ```
    pub fn new(allowed: &[String]) -> Result<Self, String> {
        let mut policy = Self::default();
        for origin in allowed {
            let origin = origin.trim_end_matches('/').to_ascii_lowercase();
            let Some((scheme, host)) = origin.split_once("://") else {
                return Err(format!("`{origin}` is not scheme://host[:port]"));
            };
            if host.is_empty() || host.contains('/') {
                return Err(format!("`{origin}` is not scheme://host[:port]"));
            }
            match host.strip_prefix("*.") {
                Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => policy
                    .wildcard
                    .push((scheme.to_owned(), format!(".{suffix}"))),
                Some(_) => return Err(format!("`{origin}`: a wildcard needs a domain after `*.`")),
                None if host.contains('*') => {
                    return Err(format!(
                        "`{origin}`: `*` is only allowed as the first label"
                    ));
                }
                None => policy.exact.push(origin),
            }
        }
        Ok(policy)
    }

    /// Is a handshake with this `Origin` (or none) allowed?
    pub fn allows(&self, origin: Option<&str>) -> bool {
        if self.exact.is_empty() && self.wildcard.is_empty() {
            return true;
        }
        let Some(origin) = origin else {
            // Browsers always send Origin; its absence means a non-browser
            // client, which Origin checks cannot restrict anyway.
            return true;
        };
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.exact.contains(&origin) {
            return true;
        }
        let Some((scheme, host)) = origin.split_once("://") else {
            return false;
        };
        self.wildcard.iter().any(|(s, suffix)| {
            s == scheme && host.len() > suffix.len() && host.ends_with(suffix.as_str())
        })
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            tokens: burst,
            last: Instant::now(),
            rate,
            burst,
        }
    }

    /// Takes one token at `now`; false when the bucket is empty.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(sockets: usize, per_ip: u32, handshakes_per_ip: u32) -> SlotLimits {
        SlotLimits {
            sockets,
            per_ip,
            handshakes_per_ip,
            ipv6_prefix: 64,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A socket admitted and its request read, as the gateway does.
    fn connection(slots: &Slots, client: &str) -> Result<Slot, Refusal> {
        let mut slot = slots.admit(None)?;
        slot.claim_client(ip(client))?;
        Ok(slot)
    }

    #[test]
    fn slots_enforce_total_and_per_ip() {
        let slots = Slots::new(limits(3, 2, 0));
        let s1 = connection(&slots, "10.0.0.1").unwrap();
        let _s2 = connection(&slots, "10.0.0.1").unwrap();
        assert_eq!(connection(&slots, "10.0.0.1").unwrap_err(), Refusal::PerIp);
        assert_eq!(slots.in_use(), 2, "a refused slot is given back");
        let _s3 = connection(&slots, "10.0.0.2").unwrap();
        assert_eq!(connection(&slots, "10.0.0.2").unwrap_err(), Refusal::Total);
        drop(s1);
        assert_eq!(slots.in_use(), 2);
        connection(&slots, "10.0.0.1").expect("released slot is free again");
    }

    #[test]
    fn unfinished_handshakes_count_per_peer_until_the_request_arrives() {
        let slots = Slots::new(limits(10, 0, 2));
        let peer = Some(ip("192.0.2.1"));
        let mut h1 = slots.admit(peer).unwrap();
        let h2 = slots.admit(peer).unwrap();
        assert_eq!(slots.admit(peer).unwrap_err(), Refusal::Handshakes);
        assert_eq!(slots.in_use(), 2, "a refusal takes no socket");
        slots.admit(Some(ip("192.0.2.2"))).expect("another peer");
        slots.admit(None).expect("an exempt peer (a trusted proxy)");
        h1.head_received();
        assert_eq!(slots.handshakes(), 1);
        let h3 = slots.admit(peer).expect("h1 is no longer a handshake");
        drop((h2, h3));
        assert_eq!(slots.handshakes(), 0);
        assert_eq!(slots.in_use(), 1, "h1 still holds its socket");
        drop(h1);
        assert_eq!(slots.in_use(), 0);
    }

    #[test]
    fn a_full_house_gives_the_handshake_count_back() {
        let slots = Slots::new(limits(1, 0, 5));
        let _only = slots.admit(Some(ip("192.0.2.1"))).unwrap();
        assert_eq!(
            slots.admit(Some(ip("192.0.2.9"))).unwrap_err(),
            Refusal::Total
        );
        assert_eq!(slots.handshakes(), 1);
    }

    #[test]
    fn ipv6_counts_per_prefix_and_mapped_ipv4_as_ipv4() {
        assert_eq!(ip_key(ip("2001:db8::1"), 64), ip("2001:db8::"));
        assert_eq!(ip_key(ip("2001:db8:0:0:ffff::1"), 64), ip("2001:db8::"));
        assert_ne!(ip_key(ip("2001:db8:0:1::1"), 64), ip("2001:db8::"));
        assert_eq!(ip_key(ip("2001:db8:0:1::1"), 48), ip("2001:db8::"));
        assert_eq!(ip_key(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(ip_key(ip("2001:db8:ffff::1"), 32), ip("2001:db8::"));
        assert_eq!(ip_key(ip("::ffff:10.1.2.3"), 64), ip("10.1.2.3"));
        assert_eq!(ip_key(ip("10.1.2.3"), 64), ip("10.1.2.3"));
        assert_eq!(ip_key(ip("::1"), 64), ip("::"), "loopback is its /64");

        let slots = Slots::new(limits(10, 2, 0));
        let _a = connection(&slots, "2001:db8:1:2::a").unwrap();
        let _b = connection(&slots, "2001:db8:1:2:ffff::b").unwrap();
        assert_eq!(
            connection(&slots, "2001:db8:1:2::c").unwrap_err(),
            Refusal::PerIp,
            "one /64 is one client"
        );
        connection(&slots, "2001:db8:1:3::c").expect("another /64");
        let _m = connection(&slots, "::ffff:192.0.2.1").unwrap();
        let _v4 = connection(&slots, "192.0.2.1").unwrap();
        assert_eq!(
            connection(&slots, "192.0.2.1").unwrap_err(),
            Refusal::PerIp,
            "a mapped address is its IPv4 address"
        );
    }

    #[test]
    fn refusals_linger_up_to_their_cap() {
        let slots = Slots::new(limits(1, 0, 0));
        let held: Vec<_> = (0..MAX_LINGERING_REFUSALS)
            .map(|_| slots.linger().expect("room to linger"))
            .collect();
        assert!(slots.linger().is_none());
        drop(held);
        assert!(slots.linger().is_some());
    }

    #[test]
    fn origin_patterns() {
        let p = OriginPolicy::new(&["https://Example.com/".into(), "http://*.local.test".into()])
            .unwrap();
        assert!(p.allows(Some("https://example.com")));
        assert!(p.allows(Some("http://a.b.local.test")));
        assert!(!p.allows(Some("https://a.local.test")), "scheme must match");
        assert!(!p.allows(Some("http://evillocal.test")));
        assert!(!p.allows(Some("null")));
        assert!(OriginPolicy::new(&["example.com".into()]).is_err());
        assert!(OriginPolicy::new(&["https://a.*.com".into()]).is_err());
        assert!(OriginPolicy::new(&[]).unwrap().allows(Some("https://any")));
    }

    #[test]
    fn bucket_refills_at_its_rate() {
        let mut bucket = TokenBucket::new(10.0, 2.0);
        let t0 = Instant::now();
        assert!(bucket.take(t0));
        assert!(bucket.take(t0));
        assert!(!bucket.take(t0));
        assert!(bucket.take(t0 + Duration::from_millis(100)));
        assert!(!bucket.take(t0 + Duration::from_millis(100)));
        // Never more than the burst, however long it rested.
        let later = t0 + Duration::from_secs(60);
        assert!(bucket.take(later) && bucket.take(later) && !bucket.take(later));
    }
}
