//! TLS of `tls://` listeners: the certificate, its reload, and what PHP
//! learns of a TLS client.
//!
//! rustls with the ring provider, TLS 1.2 and 1.3 with rustls's default
//! (safe) cipher suites, ALPN `http/1.1`. The server's configuration is
//! built from `[tls]` by [`server_config`] — when a configuration is
//! validated (start, `check-config`, SIGHUP), so a certificate that cannot
//! be used is refused before it could replace a good one — and kept in a
//! [`Certs`] that every new TLS handshake reads; a reload swaps it without
//! touching the connections that exist.
//!
//! What a TLS connection tells PHP ([`Session`], see docs/protocol.md):
//!
//! ```text
//! HTTPS=on  REQUEST_SCHEME=https  SSL_PROTOCOL=TLSv1.3  SSL_CLIENT_VERIFY=NONE|SUCCESS
//! with a client certificate:  SSL_CLIENT_S_DN=CN=alice,O=Example  SSL_CLIENT_I_DN=CN=Example CA
//!                             SSL_CLIENT_SERIAL=1A2B…  SSL_CLIENT_CERT=-----BEGIN CERTIFICATE-----…
//! ```

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConnection, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};

use crate::config::{ClientAuth, ConfigError, TlsConfig};

/// The ALPN protocol offered: WebSocket handshakes are HTTP/1.1 (RFC 6455).
pub const ALPN: &[u8] = b"http/1.1";

/// The TLS configuration every new handshake uses; swapped on reload.
#[derive(Default)]
pub struct Certs(ArcSwapOption<ServerConfig>);

impl Certs {
    /// The configuration in force; `None` when there is no `tls://` listener.
    pub fn current(&self) -> Option<Arc<ServerConfig>> {
        self.0.load_full()
    }

    /// Puts `config` in force for the handshakes that start from now on.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        self.0.store(Some(config));
    }
}

/// A server configuration built from `[tls]`, and what to log about it.
pub struct Loaded {
    /// For the acceptor.
    pub config: Arc<ServerConfig>,
    /// The server certificate's subject (RFC 2253).
    pub subject: String,
    /// Its `notAfter`, as text.
    pub not_after: String,
    /// Is it valid now (between `notBefore` and `notAfter`)?
    pub valid_now: bool,
}

impl Loaded {
    /// Logs what was loaded; a certificate out of its validity is a warning
    /// (clients will refuse it), not an error.
    pub fn log(&self, what: &str) {
        if self.valid_now {
            tracing::info!(subject = %self.subject, not_after = %self.not_after, "{what}");
        } else {
            tracing::warn!(subject = %self.subject, not_after = %self.not_after,
                "{what}; it is not valid now (expired or not yet valid): clients will refuse it");
        }
    }
}

fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.into(),
    }
}

/// Reads `[tls]`'s files and builds the server's configuration; the error
/// names the setting whose file is wrong and why.
pub fn server_config(tls: &TlsConfig) -> Result<Loaded, ConfigError> {
    let cert_path = tls
        .cert
        .as_deref()
        .ok_or_else(|| invalid("tls.cert", "a tls:// listener needs a certificate (PEM)"))?;
    let key_path = tls
        .key
        .as_deref()
        .ok_or_else(|| invalid("tls.key", "a tls:// listener needs a private key (PEM)"))?;
    let chain = read_certs("tls.cert", cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        invalid(
            "tls.key",
            format!("{}: {}", key_path.display(), pem_error(&e, "PRIVATE KEY")),
        )
    })?;
    let (subject, not_after, valid_now) = describe(&chain[0]).ok_or_else(|| {
        invalid(
            "tls.cert",
            format!(
                "{}: the first certificate cannot be read",
                cert_path.display()
            ),
        )
    })?;
    // ring: it builds with a C compiler alone. rustls 0.23.48 marks it
    // deprecated for lacking post-quantum key exchange (X25519MLKEM768),
    // which only the aws-lc-rs provider has; X25519 and the NIST curves are
    // what ring offers, and are safe today.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| invalid("tls", e.to_string()))?;
    let builder = match (tls.client_auth, tls.client_ca.as_deref()) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(invalid(
                "tls.client_ca",
                "client certificates (tls.client_auth) are verified against tls.client_ca: give its PEM file",
            ));
        }
        (auth, Some(ca_path)) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certs("tls.client_ca", ca_path)? {
                roots
                    .add(ca)
                    .map_err(|e| invalid("tls.client_ca", format!("{}: {e}", ca_path.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier
                .build()
                .map_err(|e| invalid("tls.client_ca", format!("{}: {e}", ca_path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        invalid(
            "tls.key",
            format!(
                "{} and {} do not make a usable pair: {e}",
                key_path.display(),
                cert_path.display()
            ),
        )
    })?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        subject,
        not_after,
        valid_now,
    })
}

/// The certificates of a PEM file, at least one.
fn read_certs(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            invalid(
                setting,
                format!("{}: {}", path.display(), pem_error(&e, "CERTIFICATE")),
            )
        })?;
    if certs.is_empty() {
        return Err(invalid(
            setting,
            format!(
                "{}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

fn pem_error(e: &rustls::pki_types::pem::Error, wanted: &str) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => format!("no PEM {wanted} in it"),
        other => format!("not readable PEM ({other:?})"),
    }
}

/// Subject, `notAfter` and whether it is valid now, of a certificate.
fn describe(der: &[u8]) -> Option<(String, String, bool)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some((
        rfc2253(cert.subject()),
        cert.validity().not_after.to_string(),
        cert.validity().is_valid(),
    ))
}

/// What PHP learns of a TLS connection (see the module's table).
#[derive(Debug)]
pub struct Session {
    /// `TLSv1.2` or `TLSv1.3`.
    pub protocol: &'static str,
    /// The client's certificate, when it presented one (it verified: rustls
    /// refuses the handshake of one that does not).
    pub client: Option<ClientCert>,
}

impl Session {
    /// Of a finished handshake.
    pub fn of(conn: &ServerConnection) -> Self {
        let protocol = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        };
        let client = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| ClientCert::from_der(leaf));
        Self { protocol, client }
    }

    /// `SSL_CLIENT_VERIFY`'s value.
    pub fn verify(&self) -> &'static str {
        if self.client.is_some() {
            "SUCCESS"
        } else {
            "NONE"
        }
    }
}

/// A verified client certificate, in the forms nginx's `$ssl_client_*` give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// Subject, RFC 2253.
    pub subject: String,
    /// Issuer, RFC 2253.
    pub issuer: String,
    /// Serial number, upper-case hex.
    pub serial: String,
    /// The certificate, PEM.
    pub pem: String,
}

impl ClientCert {
    /// From the certificate's DER; `None` if it cannot be parsed.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(Self {
            subject: rfc2253(cert.subject()),
            issuer: rfc2253(cert.issuer()),
            serial: serial_hex(cert.tbs_certificate.raw_serial()),
            pem: pem(der),
        })
    }
}

/// A serial number as OpenSSL (and so nginx's `$ssl_client_serial`) prints
/// it: its magnitude's bytes in upper-case hex, without DER's sign byte.
///
/// ```
/// # use ws2fcgi::tls::serial_hex;
/// assert_eq!(serial_hex(&[0x00, 0x9f, 0x01]), "9F01");
/// assert_eq!(serial_hex(&[0x00]), "00");
/// ```
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    raw[start..].iter().map(|b| format!("{b:02X}")).collect()
}

/// A DER certificate as PEM, 64 characters a line, each line ending in `\n`.
fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(body.len() + body.len() / 64 + 64);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A name in RFC 2253's string form, as OpenSSL's `XN_FLAG_RFC2253` (and so
/// nginx's `$ssl_client_s_dn`): the last RDN first, `,` between RDNs, `+`
/// inside one, special characters escaped, a value that is not a string as
/// `#` and its hex.
fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<_> = name.iter_rdn().collect();
    let mut out = String::new();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attr.attr_type();
            match x509_parser::objects::oid2abbrev(oid, registry) {
                Ok("Email") => out.push_str("emailAddress"),
                Ok(short) => out.push_str(short),
                Err(_) => out.push_str(&oid.to_id_string()),
            }
            out.push('=');
            match attr.as_str() {
                Ok(value) => escape_value(value, &mut out),
                Err(_) => {
                    out.push('#');
                    for b in attr.as_slice() {
                        out.push_str(&format!("{b:02X}"));
                    }
                }
            }
        }
    }
    out
}

/// RFC 2253 §2.4: `,+"\<>;` escaped anywhere, `#` and space at the start
/// and space at the end escaped.
fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_as_rfc_2253_says() {
        let mut out = String::new();
        escape_value("#Smith, \"J\"+co; <x> ", &mut out);
        assert_eq!(out, "\\#Smith\\, \\\"J\\\"\\+co\\; \\<x\\>\\ ");
        out.clear();
        escape_value("plain", &mut out);
        assert_eq!(out, "plain");
    }

    #[test]
    fn pem_lines_are_64_characters() {
        let text = pem(&[7u8; 100]);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(*lines.last().unwrap(), "-----END CERTIFICATE-----");
        assert!(text.ends_with('\n'));
    }
}
