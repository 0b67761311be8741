//! `[tls]`: the certificate of `tls://` listeners and client certificates.

use std::path::PathBuf;

use serde::Deserialize;

/// `[tls]`: what `tls://` listeners present and ask of clients. Every
/// setting is re-read on SIGHUP (the files too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM: the server's certificate first, then the
    /// intermediates (as a CA's `fullchain.pem`).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The private key of the certificate, PEM (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// CA certificates, PEM, that client certificates are verified against.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Whether clients present a certificate: `none` (not asked),
    /// `optional` (asked; one that is presented must verify) or `required`.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// `tls.client_auth`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Clients are not asked for a certificate.
    #[default]
    None,
    /// Clients are asked; one without a certificate is served
    /// (`SSL_CLIENT_VERIFY=NONE`), one whose certificate does not verify is not.
    Optional,
    /// A client without a certificate that verifies is refused in the TLS handshake.
    Required,
}
