//! Who the client really is when a reverse proxy (nginx) stands in front.
//!
//! `X-Forwarded-For` and `X-Forwarded-Proto` are believed only when the
//! connection comes from a trusted proxy (`trusted_proxies`: CIDR blocks, and
//! `"unix"` for peers on a Unix listener). The client address is then the
//! right-most `X-Forwarded-For` entry that is not itself a trusted proxy (as
//! nginx's `real_ip_recursive on`), and `X-Forwarded-Proto: https` sets
//! `HTTPS=on`. From anyone else these headers change nothing (they still
//! reach PHP as `HTTP_X_FORWARDED_*`, as any header does). A client on a
//! `tls://` listener is `HTTPS=on` whatever it sends.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use hyper::HeaderMap;
use ipnet::IpNet;
use serde::Deserialize;

use crate::event::ClientInfo;

/// One entry of `trusted_proxies`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trusted {
    /// An address block, `127.0.0.1/32`, `10.0.0.0/8`, `::1/128` (a bare address means one host).
    Net(IpNet),
    /// Every peer on a Unix-socket listener.
    Unix,
}

impl FromStr for Trusted {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "unix" {
            return Ok(Self::Unix);
        }
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Self::Net(net.trunc()));
        }
        s.parse::<IpAddr>()
            .map(|ip| Self::Net(IpNet::from(ip)))
            .map_err(|_| format!("`{s}` is not an address, a CIDR block, or \"unix\""))
    }
}

impl<'de> Deserialize<'de> for Trusted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

fn trusts(list: &[Trusted], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    list.iter().any(|t| match t {
        Trusted::Net(net) => net.contains(&ip),
        Trusted::Unix => false,
    })
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) compare as IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Where a connection came from, before any header is considered.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    /// A TCP peer, and the listener's own address.
    Tcp {
        /// The peer.
        remote: SocketAddr,
        /// The listener's address.
        local: Option<SocketAddr>,
        /// Over TLS (a `tls://` listener): HTTPS=on.
        tls: bool,
    },
    /// A peer on a Unix-socket listener.
    Unix,
}

/// The address a socket's unfinished handshake is counted against
/// (`limits.max_handshakes_per_ip`). Before its request is read only the
/// socket's own peer is known, so that is the address: never an
/// `X-Forwarded-For` entry. A trusted proxy and a Unix-socket peer carry many
/// clients and are not counted (`None`).
pub fn handshake_peer(origin: Origin, trusted: &[Trusted]) -> Option<IpAddr> {
    match origin {
        Origin::Tcp { remote, .. } if !trusts(trusted, remote.ip()) => Some(canonical(remote.ip())),
        Origin::Tcp { .. } | Origin::Unix => None,
    }
}

/// Works out [`ClientInfo`] from the socket and, for trusted proxies, the forwarding headers.
pub fn client_info(origin: Origin, headers: &HeaderMap, trusted: &[Trusted]) -> ClientInfo {
    let (mut info, from_proxy) = match origin {
        Origin::Tcp { remote, local, tls } => (
            ClientInfo {
                remote_ip: canonical(remote.ip()),
                remote_port: remote.port(),
                https: tls,
                local,
            },
            trusts(trusted, remote.ip()),
        ),
        Origin::Unix => (
            ClientInfo {
                remote_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                remote_port: 0,
                https: false,
                local: None,
            },
            trusted.contains(&Trusted::Unix),
        ),
    };
    if !from_proxy {
        return info;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| parse_forwarded_ip(item.trim()))
        .collect();
    let client = forwarded
        .iter()
        .rev()
        .find(|ip| !trusts(trusted, **ip))
        .or(forwarded.first());
    if let Some(ip) = client {
        info.remote_ip = canonical(*ip);
        info.remote_port = 0;
    }
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    if let Some(proto) = proto {
        // A proxy that reached us over TLS cannot make the client's scheme plain.
        info.https |= proto.eq_ignore_ascii_case("https") || proto.eq_ignore_ascii_case("wss");
    }
    info
}

/// An `X-Forwarded-For` item: `1.2.3.4`, `1.2.3.4:5678`, `::1` or `[::1]:5678`.
fn parse_forwarded_ip(item: &str) -> Option<IpAddr> {
    item.parse::<IpAddr>()
        .ok()
        .or_else(|| item.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    fn tcp(ip: &str) -> Origin {
        Origin::Tcp {
            remote: SocketAddr::new(ip.parse().unwrap(), 40000),
            local: None,
            tls: false,
        }
    }

    fn list(items: &[&str]) -> Vec<Trusted> {
        items.iter().map(|i| i.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peers_cannot_forge_addresses() {
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
        ]);
        let info = client_info(tcp("203.0.113.9"), &h, &list(&["127.0.0.1"]));
        assert_eq!(info.remote_ip, "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(info.remote_port, 40000);
        assert!(!info.https);
    }

    #[test]
    fn trusted_proxy_forwards_client_and_scheme() {
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2"),
            ("x-forwarded-proto", "https"),
        ]);
        let info = client_info(tcp("127.0.0.1"), &h, &list(&["127.0.0.0/8", "10.0.0.0/8"]));
        assert_eq!(info.remote_ip, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert!(info.https);
    }

    #[test]
    fn unix_peers_are_trusted_only_when_listed() {
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            client_info(Origin::Unix, &h, &[]).remote_ip,
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            client_info(Origin::Unix, &h, &list(&["unix"])).remote_ip,
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn handshakes_count_against_the_socket_peer_unless_it_is_a_proxy() {
        let proxies = list(&["127.0.0.1", "unix"]);
        assert_eq!(
            handshake_peer(tcp("203.0.113.9"), &proxies),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(
            handshake_peer(tcp("::ffff:203.0.113.9"), &proxies),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(handshake_peer(tcp("127.0.0.1"), &proxies), None);
        assert_eq!(handshake_peer(tcp("::ffff:127.0.0.1"), &proxies), None);
        assert_eq!(handshake_peer(Origin::Unix, &[]), None);
    }

    #[test]
    fn mapped_v6_and_ports_are_understood() {
        let h = headers(&[("x-forwarded-for", "[2001:db8::1]:4711")]);
        let info = client_info(tcp("::ffff:127.0.0.1"), &h, &list(&["127.0.0.1"]));
        assert_eq!(info.remote_ip, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert!("nonsense".parse::<Trusted>().is_err());
    }
}
