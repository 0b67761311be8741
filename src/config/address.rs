//! Addresses in the settings, each parsed from its string form: where
//! clients connect (`listen`: TCP, TLS or Unix), where PHP-FPM listens (`fpm.address`) and the
//! admin listener (`admin`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

/// Where the daemon accepts WebSocket clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address, `host:port`.
    Tcp(SocketAddr),
    /// A Unix stream socket, written `unix:/path` (for nginx in front).
    Unix(PathBuf),
    /// A TCP address whose clients speak TLS, `tls://host:port` (see `[tls]`).
    Tls(SocketAddr),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a path, e.g. unix:/run/ws2fcgi/ws.sock".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tls://") {
            return addr.parse::<SocketAddr>().map(Self::Tls).map_err(|_| {
                format!("`{s}`: tls:// needs ip:port after it, e.g. tls://0.0.0.0:443")
            });
        }
        s.parse::<SocketAddr>().map(Self::Tcp).map_err(|_| {
            format!("`{s}` is neither ip:port (e.g. 127.0.0.1:8090), tls://ip:port nor unix:/path")
        })
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Tls(addr) => write!(f, "tls://{addr}"),
        }
    }
}

/// Where PHP-FPM listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FpmAddr {
    /// `managed`: ws2fcgi starts and supervises its own php-fpm (see `[fpm.managed]`).
    Managed,
    /// `host:port`; the host is resolved at each connect.
    Tcp(String),
    /// `unix:/path`, PHP-FPM's usual `listen = /run/php/php8.2-fpm.sock`.
    Unix(PathBuf),
}

impl FromStr for FpmAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "managed" {
            return Ok(Self::Managed);
        }
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a path, e.g. unix:/run/php/php8.2-fpm.sock".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Self::Tcp(s.to_owned()))
            }
            _ => Err(format!(
                "`{s}` is neither unix:/path, host:port (e.g. 127.0.0.1:9000) nor managed"
            )),
        }
    }
}

impl std::fmt::Display for FpmAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Managed => write!(f, "managed"),
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The admin listener's address: `IP:PORT`, or a bare `PORT` meaning `127.0.0.1:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminAddr(pub SocketAddr);

impl FromStr for AdminAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(port) = s.parse::<u16>() {
            return Ok(Self(SocketAddr::from(([127, 0, 0, 1], port))));
        }
        s.parse()
            .map(Self)
            .map_err(|_| format!("`{s}` is neither IP:PORT nor a port number"))
    }
}

macro_rules! deserialize_from_str {
    ($ty:ty) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
deserialize_from_str!(ListenAddr);
deserialize_from_str!(FpmAddr);
deserialize_from_str!(AdminAddr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_or_say_why() {
        assert_eq!(
            "unix:/tmp/a.sock".parse::<ListenAddr>(),
            Ok(ListenAddr::Unix("/tmp/a.sock".into()))
        );
        assert!("localhost".parse::<ListenAddr>().is_err());
        assert_eq!(
            "php:9000".parse::<FpmAddr>(),
            Ok(FpmAddr::Tcp("php:9000".into()))
        );
        assert!("php".parse::<FpmAddr>().is_err());
        assert!("unix:".parse::<FpmAddr>().is_err());
    }
}
