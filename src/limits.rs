//! Limits that protect the daemon and PHP from too many or too eager clients.
//!
//! - [`Slots`]: connections in total and per client IP, counted from the
//!   handshake (before PHP) to the connection's end; a refused handshake gets
//!   503 (total) or 429 (per IP) and never reaches PHP.
//! - [`OriginPolicy`]: which `Origin`s may connect (exact, or `*.` wildcard
//!   subdomains); a refused one gets 403 and never reaches PHP.
//! - [`TokenBucket`]: the per-connection inbound message rate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Why a handshake was refused by a connection limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `websocket.max_connections` reached (503).
    Total,
    /// `websocket.max_connections_per_ip` reached for this address (429).
    PerIp,
}

#[derive(Debug)]
struct Counts {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    max_total: AtomicUsize,
    max_per_ip: AtomicU32,
}

/// The connection counters; cheap to clone.
#[derive(Debug, Clone)]
pub struct Slots(Arc<Counts>);

/// One taken slot; released when dropped (when the connection ends).
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Counts>,
    ip: Option<IpAddr>,
}

impl Slots {
    /// At most `max_total` connections, `max_per_ip` per address (0: no per-address limit).
    pub fn new(max_total: usize, max_per_ip: u32) -> Self {
        Self(Arc::new(Counts {
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            max_total: AtomicUsize::new(max_total),
            max_per_ip: AtomicU32::new(max_per_ip),
        }))
    }

    /// Changes the limits (a reload); connections already over them stay.
    pub fn set_limits(&self, max_total: usize, max_per_ip: u32) {
        self.0.max_total.store(max_total, Ordering::Release);
        self.0.max_per_ip.store(max_per_ip, Ordering::Release);
    }

    /// Takes a slot for a client at `ip`, or says which limit is reached.
    pub fn acquire(&self, ip: IpAddr) -> Result<Slot, Refusal> {
        let counts = &self.0;
        let max_total = counts.max_total.load(Ordering::Acquire);
        let max_per_ip = counts.max_per_ip.load(Ordering::Acquire);
        let taken = counts
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_total).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(Refusal::Total);
        }
        let mut slot = Slot {
            counts: counts.clone(),
            ip: None,
        };
        if max_per_ip > 0 {
            let mut per_ip = counts.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= max_per_ip {
                if *n == 0 {
                    per_ip.remove(&ip);
                }
                return Err(Refusal::PerIp); // `slot` drops and gives the total back
            }
            *n += 1;
            slot.ip = Some(ip);
        }
        Ok(slot)
    }

    /// Connections holding a slot now.
    pub fn in_use(&self) -> usize {
        self.0.total.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut per_ip = self.counts.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
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

    #[test]
    fn slots_enforce_total_and_per_ip() {
        let slots = Slots::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = slots.acquire(a).unwrap();
        let _s2 = slots.acquire(a).unwrap();
        assert_eq!(slots.acquire(a).unwrap_err(), Refusal::PerIp);
        assert_eq!(slots.in_use(), 2, "a refused slot is given back");
        let _s3 = slots.acquire(b).unwrap();
        assert_eq!(slots.acquire(b).unwrap_err(), Refusal::Total);
        drop(s1);
        assert_eq!(slots.in_use(), 2);
        slots.acquire(a).expect("released slot is free again");
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
