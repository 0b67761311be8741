//! `tls://` listeners against real peers: a certificate authority made by
//! the test (rcgen), a rustls client that trusts only it, real php-fpm
//! running tests/php/env.php, and the real binary for SIGHUP and
//! `check-config`.
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use support::*;

/// A certificate authority of the test's own.
struct Ca {
    cert: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses), valid now
    /// unless `expired`, with subject CN=`cn`,O=ws2fcgi tests and `serial`.
    fn issue(&self, cn: &str, names: &[&str], serial: u64, expired: bool) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "ws2fcgi tests");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(SerialNumber::from(serial));
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued { cert, key }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    fn write(&self, path: &Path) {
        std::fs::write(path, self.cert.pem()).unwrap();
    }
}

struct Issued {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Issued {
    /// Writes the chain (this certificate, then `ca`'s) and the key.
    fn write(&self, ca: &Ca, cert: &Path, key: &Path) {
        std::fs::write(cert, format!("{}{}", self.cert.pem(), ca.cert.pem())).unwrap();
        std::fs::write(key, self.key.serialize_pem()).unwrap();
    }

    fn client_auth(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![self.cert.der().clone()],
            PrivateKeyDer::try_from(self.key.serialize_der()).unwrap(),
        )
    }
}

type TlsClient = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// Connects to `wss://name/path` at `addr`, trusting only `roots`,
/// presenting `client` when given; the WebSocket and the server's
/// certificate, or the error as text (with the rustls error when there is one).
async fn connect_tls(
    addr: SocketAddr,
    name: &str,
    path: &str,
    roots: &[CertificateDer<'static>],
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<(TlsClient, CertificateDer<'static>), String> {
    connect_tls_with(addr, name, path, roots, client, None).await
}

/// [`connect_tls`], with the socket's receive buffer set to `recv_buffer`.
async fn connect_tls_with(
    addr: SocketAddr,
    name: &str,
    path: &str,
    roots: &[CertificateDer<'static>],
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    recv_buffer: Option<u32>,
) -> Result<(TlsClient, CertificateDer<'static>), String> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    // ring, as the daemon (see src/tls.rs).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store);
    let mut config = match client {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let attempt = async {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let tcp = socket.connect(addr).await.map_err(|e| e.to_string())?;
        let tls = connector
            .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
            .await
            .map_err(|e| describe_io(&e))?;
        let (_, session) = tls.get_ref();
        assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]), "ALPN");
        let served = session.peer_certificates().unwrap()[0].clone();
        let url = format!("wss://{name}{path}");
        let (ws, _) = tokio_tungstenite::client_async(url, tls)
            .await
            .map_err(|e| format!("websocket: {e}"))?;
        Ok((ws, served))
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
}

/// An I/O error, with the rustls error inside it named.
fn describe_io(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => format!("tls: {tls:?}"),
        None => format!("io: {e}"),
    }
}

async fn recv_json(ws: &mut TlsClient) -> serde_json::Value {
    let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a message within 10 s")
        .expect("open")
        .expect("a message");
    match msg {
        Message::Text(text) => serde_json::from_str(&text).expect("json"),
        other => panic!("expected text, got {other:?}"),
    }
}

/// PHP's `$_SERVER` in its answer to the open event.
async fn server_vars(ws: &mut TlsClient) -> serde_json::Value {
    recv_json(ws).await["server"].clone()
}

/// Files of one test: the CA, the server's chain and key.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A daemon on a `tls://` listener with `issued` (signed by `ca`).
async fn tls_daemon(
    fpm: &Fpm,
    files: &Files,
    ca: &Ca,
    issued: &Issued,
    edit: impl FnOnce(&mut ws2fcgi::Config),
) -> Daemon {
    let mut config = fpm.config("env.php");
    config.listen = vec![ws2fcgi::config::ListenAddr::Tls(
        "127.0.0.1:0".parse().unwrap(),
    )];
    issued.write(ca, &files.path("cert.pem"), &files.path("key.pem"));
    config.tls.cert = Some(files.path("cert.pem"));
    config.tls.key = Some(files.path("key.pem"));
    edit(&mut config);
    Daemon::start(config).await
}

#[tokio::test]
async fn php_sees_https_and_messages_cross_tls_both_ways() {
    let fpm = Fpm::start(2);
    let files = Files::new();
    let ca = Ca::new("ws2fcgi test CA");
    let server = ca.issue("localhost", &["localhost", "127.0.0.1"], 1, false);
    let daemon = tls_daemon(&fpm, &files, &ca, &server, |_| {}).await;

    let (mut ws, served) = connect_tls(daemon.addr, "localhost", "/chat", &[ca.der()], None)
        .await
        .expect("a client that trusts the test's CA connects");
    assert_eq!(&served, server.cert.der());
    let vars = server_vars(&mut ws).await;
    assert_eq!(vars["HTTPS"], "on");
    assert_eq!(vars["REQUEST_SCHEME"], "https");
    assert_eq!(vars["SSL_PROTOCOL"], "TLSv1.3");
    assert_eq!(vars["SSL_CLIENT_VERIFY"], "NONE");
    assert!(vars.get("SSL_CLIENT_S_DN").is_none(), "{vars}");
    assert_eq!(vars["SERVER_PORT"], daemon.addr.port().to_string());

    // A message larger than a TLS record each way: rustls takes the
    // answer's frames in part and the writer flushes the rest.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    let answer = recv_json(&mut ws).await;
    let hex = answer["body_hex"].as_str().unwrap();
    assert_eq!(hex.len(), big.len() * 2);
    assert!(hex.starts_with("000102"), "{}", &hex[..16]);
    ws.send(Message::text("small")).await.unwrap();
    assert_eq!(recv_json(&mut ws).await["body_hex"], "736d616c6c");
    ws.close(None).await.unwrap();
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_still_gets_the_whole_answer() {
    let fpm = Fpm::start(1);
    let files = Files::new();
    let ca = Ca::new("ws2fcgi test CA");
    let server = ca.issue("localhost", &["localhost"], 8, false);
    let daemon = tls_daemon(&fpm, &files, &ca, &server, |config| {
        config.websocket.max_message_size = 4 << 20;
        config.websocket.max_frame_size = 4 << 20;
    })
    .await;
    let (mut ws, _) =
        connect_tls_with(daemon.addr, "localhost", "/", &[ca.der()], None, Some(4096))
            .await
            .expect("connects");
    let _ = server_vars(&mut ws).await;
    // PHP's answer (the message in hex, over 5 MB) is more than the
    // socket buffers hold while the client does not read: rustls is left
    // holding the end of it when the writer runs out of frames, and must
    // send it once the client reads again.
    let big = vec![0xab_u8; 2_600_000];
    ws.send(Message::binary(big)).await.unwrap();
    // Not a wait for readiness: the pause is the case (a client that
    // stopped reading while the daemon wrote).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answer = recv_json(&mut ws).await;
    assert_eq!(answer["body_hex"].as_str().unwrap().len(), 5_200_000);
    ws.send(Message::text("after")).await.unwrap();
    assert_eq!(recv_json(&mut ws).await["body_hex"], "6166746572");
    daemon.shutdown().await;
}

#[tokio::test]
async fn certificates_the_client_cannot_trust_are_refused() {
    let fpm = Fpm::start(2);
    let ca = Ca::new("ws2fcgi test CA");

    // Expired: the daemon serves it (and warns); the client refuses it.
    let files = Files::new();
    let expired = ca.issue("localhost", &["localhost"], 2, true);
    let daemon = tls_daemon(&fpm, &files, &ca, &expired, |_| {}).await;
    let err = connect_tls(daemon.addr, "localhost", "/", &[ca.der()], None)
        .await
        .expect_err("an expired certificate is refused");
    assert!(err.contains("Expired"), "{err}");
    daemon.shutdown().await;

    // For another name: refused under the name the client asked for, taken
    // under its own (the certificate itself is fine).
    let files = Files::new();
    let other = ca.issue("other.example", &["other.example"], 3, false);
    let daemon = tls_daemon(&fpm, &files, &ca, &other, |_| {}).await;
    let err = connect_tls(daemon.addr, "localhost", "/", &[ca.der()], None)
        .await
        .expect_err("a certificate for another name is refused");
    assert!(err.contains("NotValidForName"), "{err}");
    let (mut ws, _) = connect_tls(daemon.addr, "other.example", "/", &[ca.der()], None)
        .await
        .expect("the same certificate under its own name");
    assert_eq!(server_vars(&mut ws).await["HTTPS"], "on");

    // Signed by a CA the client does not know.
    let stranger = Ca::new("someone else");
    let err = connect_tls(daemon.addr, "other.example", "/", &[stranger.der()], None)
        .await
        .expect_err("an unknown issuer is refused");
    assert!(err.contains("UnknownIssuer"), "{err}");
    daemon.shutdown().await;
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_answered_closed_and_counted() {
    let fpm = Fpm::start(1);
    let files = Files::new();
    let ca = Ca::new("ws2fcgi test CA");
    let server = ca.issue("localhost", &["localhost"], 4, false);
    let daemon = tls_daemon(&fpm, &files, &ca, &server, |_| {}).await;

    let mut tcp = TcpStream::connect(daemon.addr).await.unwrap();
    tcp.write_all(b"GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("closed within 10 s")
        .expect("closed cleanly, not reset");
    let answer = String::from_utf8(answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with("this port speaks TLS: connect with https:// or wss://\n"));
    assert_eq!(
        metric(
            &daemon.metrics(),
            "ws2fcgi_tls_handshakes_failed_total{kind=\"plain_http\"}"
        ),
        1.0
    );
    drop(tcp);
    poll_until(Duration::from_secs(10), "its slot given back", || {
        (daemon.ctx.slots.in_use() == 0).then_some(())
    })
    .await;
    daemon.shutdown().await;
}

/// Reads until the daemon closes the socket (EOF or a reset), 20 s at most.
async fn closed_by_daemon(tcp: &mut TcpStream) {
    let mut sink = [0u8; 512];
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the daemon closes the socket");
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_timed_out_and_counted_against_its_address() {
    let fpm = Fpm::start(2);
    let files = Files::new();
    let ca = Ca::new("ws2fcgi test CA");
    let server = ca.issue("localhost", &["localhost"], 5, false);
    let daemon = tls_daemon(&fpm, &files, &ca, &server, |config| {
        config.websocket.handshake_timeout = Duration::from_secs(3);
        config.limits.max_handshakes_per_ip = 3;
    })
    .await;

    // Two that stall: one sends nothing, one the first bytes of a record.
    let mut silent = TcpStream::connect(daemon.addr).await.unwrap();
    let mut partial = TcpStream::connect(daemon.addr).await.unwrap();
    partial.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    poll_until(Duration::from_secs(10), "two unfinished handshakes", || {
        (daemon.ctx.slots.handshakes() == 2).then_some(())
    })
    .await;
    // Meanwhile a client's handshake goes through (the accept loop never
    // waits for one), and counts only until its request arrived.
    let (mut ws, _) = connect_tls(daemon.addr, "localhost", "/", &[ca.der()], None)
        .await
        .expect("served beside the stalled ones");
    assert_eq!(server_vars(&mut ws).await["HTTPS"], "on");
    assert_eq!(daemon.ctx.slots.handshakes(), 2);
    // A third stalls; a fourth is past max_handshakes_per_ip: closed at once.
    let mut third = TcpStream::connect(daemon.addr).await.unwrap();
    poll_until(
        Duration::from_secs(10),
        "three unfinished handshakes",
        || (daemon.ctx.slots.handshakes() == 3).then_some(()),
    )
    .await;
    let mut fourth = TcpStream::connect(daemon.addr).await.unwrap();
    closed_by_daemon(&mut fourth).await;
    assert_eq!(
        metric(
            &daemon.metrics(),
            "ws2fcgi_handshakes_refused_total{kind=\"max_handshakes_per_ip\"}"
        ),
        1.0
    );
    // websocket.handshake_timeout ends the stalled ones.
    for stalled in [&mut silent, &mut partial, &mut third] {
        closed_by_daemon(stalled).await;
    }
    poll_until(Duration::from_secs(10), "the timeouts counted", || {
        (metric(
            &daemon.metrics(),
            "ws2fcgi_tls_handshakes_failed_total{kind=\"timeout\"}",
        ) == 3.0)
            .then_some(())
    })
    .await;
    assert_eq!(daemon.ctx.slots.handshakes(), 0);
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(recv_json(&mut ws).await["body_hex"], "7374696c6c2068657265");
    daemon.shutdown().await;
}

#[tokio::test]
async fn client_certificates_reach_php_as_ssl_client_variables() {
    let fpm = Fpm::start(2);
    let ca = Ca::new("ws2fcgi test CA");
    let clients = Ca::new("ws2fcgi client CA");
    let server = ca.issue("localhost", &["localhost"], 6, false);
    let alice = clients.issue("alice", &[], 0x9f_1234, false);
    let stranger = Ca::new("someone else").issue("mallory", &[], 7, false);

    // Required: without a certificate, or with one of another CA, no connection.
    let files = Files::new();
    clients.write(&files.path("clients.pem"));
    let client_ca = files.path("clients.pem");
    let daemon = tls_daemon(&fpm, &files, &ca, &server, |config| {
        config.tls.client_ca = Some(client_ca.clone());
        config.tls.client_auth = ws2fcgi::config::ClientAuth::Required;
    })
    .await;
    connect_tls(daemon.addr, "localhost", "/", &[ca.der()], None)
        .await
        .expect_err("refused without a client certificate");
    connect_tls(
        daemon.addr,
        "localhost",
        "/",
        &[ca.der()],
        Some(stranger.client_auth()),
    )
    .await
    .expect_err("refused with a certificate of another CA");
    let (mut ws, _) = connect_tls(
        daemon.addr,
        "localhost",
        "/",
        &[ca.der()],
        Some(alice.client_auth()),
    )
    .await
    .expect("alice's certificate verifies");
    let vars = server_vars(&mut ws).await;
    assert_eq!(vars["SSL_CLIENT_VERIFY"], "SUCCESS");
    assert_eq!(vars["SSL_CLIENT_S_DN"], "CN=alice,O=ws2fcgi tests");
    assert_eq!(vars["SSL_CLIENT_I_DN"], "CN=ws2fcgi client CA");
    assert_eq!(vars["SSL_CLIENT_SERIAL"], "9F1234");
    assert_eq!(
        vars["SSL_CLIENT_CERT"].as_str().unwrap(),
        alice.cert.pem().replace("\r\n", "\n")
    );
    // The same forms as OpenSSL's (and so nginx's $ssl_client_*).
    std::fs::write(files.path("alice.pem"), alice.cert.pem()).unwrap();
    let openssl = std::process::Command::new("openssl")
        .args([
            "x509", "-noout", "-subject", "-issuer", "-serial", "-nameopt", "RFC2253", "-in",
        ])
        .arg(files.path("alice.pem"))
        .output()
        .expect("openssl");
    assert_eq!(
        String::from_utf8_lossy(&openssl.stdout),
        format!(
            "subject={}\nissuer={}\nserial={}\n",
            vars["SSL_CLIENT_S_DN"].as_str().unwrap(),
            vars["SSL_CLIENT_I_DN"].as_str().unwrap(),
            vars["SSL_CLIENT_SERIAL"].as_str().unwrap()
        )
    );
    poll_until(Duration::from_secs(10), "both refusals counted", || {
        (metric(
            &daemon.metrics(),
            "ws2fcgi_tls_handshakes_failed_total{kind=\"error\"}",
        ) == 2.0)
            .then_some(())
    })
    .await;
    daemon.shutdown().await;

    // Optional: without one PHP sees NONE, with one SUCCESS.
    let files = Files::new();
    clients.write(&files.path("clients.pem"));
    let client_ca = files.path("clients.pem");
    let daemon = tls_daemon(&fpm, &files, &ca, &server, |config| {
        config.tls.client_ca = Some(client_ca.clone());
        config.tls.client_auth = ws2fcgi::config::ClientAuth::Optional;
    })
    .await;
    let (mut ws, _) = connect_tls(daemon.addr, "localhost", "/", &[ca.der()], None)
        .await
        .expect("served without a certificate");
    let vars = server_vars(&mut ws).await;
    assert_eq!(vars["SSL_CLIENT_VERIFY"], "NONE");
    assert!(vars.get("SSL_CLIENT_S_DN").is_none(), "{vars}");
    let (mut ws, _) = connect_tls(
        daemon.addr,
        "localhost",
        "/",
        &[ca.der()],
        Some(alice.client_auth()),
    )
    .await
    .expect("served with a certificate");
    let vars = server_vars(&mut ws).await;
    assert_eq!(vars["SSL_CLIENT_VERIFY"], "SUCCESS");
    assert_eq!(vars["SSL_CLIENT_S_DN"], "CN=alice,O=ws2fcgi tests");
    daemon.shutdown().await;
}

/// A configuration file for the real binary on a `tls://` listener.
fn write_tls_config(files: &Files, fpm: &Fpm) -> PathBuf {
    let file = files.path("ws2fcgi.toml");
    std::fs::write(
        &file,
        format!(
            "listen = [\"tls://127.0.0.1:0\"]\nscript = \"{}\"\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\n\
             [fpm]\naddress = \"unix:{}\"\npool_size = 2\n",
            script("env.php").display(),
            files.path("cert.pem").display(),
            files.path("key.pem").display(),
            fpm.socket.display()
        ),
    )
    .unwrap();
    file
}

#[tokio::test]
async fn sighup_swaps_the_certificate_and_keeps_open_connections() {
    let fpm = Fpm::start(2);
    let files = Files::new();
    let ca = Ca::new("ws2fcgi test CA");
    let first = ca.issue("localhost", &["localhost"], 10, false);
    first.write(&ca, &files.path("cert.pem"), &files.path("key.pem"));
    let file = write_tls_config(&files, &fpm);
    let daemon = Process::start(&["--config".as_ref(), file.as_os_str()]);

    let (mut open, served) = connect_tls(daemon.addr, "localhost", "/", &[ca.der()], None)
        .await
        .expect("connects");
    assert_eq!(&served, first.cert.der());
    let _ = server_vars(&mut open).await;

    // A new certificate and key: new connections get it, the open one stays.
    let second = ca.issue("localhost", &["localhost"], 11, false);
    second.write(&ca, &files.path("cert.pem"), &files.path("key.pem"));
    daemon.signal("HUP");
    daemon.logged("TLS certificate reloaded").await;
    let (mut fresh, served) = connect_tls(daemon.addr, "localhost", "/", &[ca.der()], None)
        .await
        .expect("connects after the reload");
    assert_eq!(&served, second.cert.der(), "the new certificate");
    let _ = server_vars(&mut fresh).await;
    open.send(Message::text("hi")).await.unwrap();
    assert_eq!(recv_json(&mut open).await["body_hex"], "6869");

    // A broken one (a key that is not the certificate's, then no PEM at
    // all): refused, logged, and the one in force stays.
    let third = ca.issue("localhost", &["localhost"], 12, false);
    std::fs::write(files.path("cert.pem"), third.cert.pem()).unwrap();
    daemon.signal("HUP");
    let log = daemon.logged("reload refused").await;
    assert!(log.contains("tls.key"), "{log}");
    std::fs::write(files.path("cert.pem"), "not a certificate\n").unwrap();
    daemon.signal("HUP");
    poll_until(Duration::from_secs(10), "the second refusal", || {
        (daemon.stderr().matches("reload refused").count() == 2).then_some(())
    })
    .await;
    assert!(daemon.stderr().contains("tls.cert"), "{}", daemon.stderr());
    let (mut later, served) = connect_tls(daemon.addr, "localhost", "/", &[ca.der()], None)
        .await
        .expect("still served");
    assert_eq!(&served, second.cert.der(), "the certificate in force stays");
    let _ = server_vars(&mut later).await;
    for ws in [&mut open, &mut fresh] {
        ws.send(Message::text("ok")).await.unwrap();
        assert_eq!(recv_json(ws).await["body_hex"], "6f6b");
    }
}

#[tokio::test]
async fn check_config_and_start_refuse_an_unusable_certificate() {
    let fpm = Fpm::start(1);
    let files = Files::new();
    let ca = Ca::new("ws2fcgi test CA");
    ca.issue("localhost", &["localhost"], 20, false).write(
        &ca,
        &files.path("cert.pem"),
        &files.path("key.pem"),
    );
    let file = write_tls_config(&files, &fpm);
    let check = |expect_ok: bool, says: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ws2fcgi"))
            .arg("check-config")
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(if expect_ok { 0 } else { 64 }),
            "{stderr}"
        );
        assert!(stderr.contains(says), "{says}: {stderr}");
    };
    check(true, "");
    // A key of another certificate.
    std::fs::write(
        files.path("key.pem"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    check(false, "invalid setting `tls.key`");
    // A missing certificate file.
    std::fs::remove_file(files.path("cert.pem")).unwrap();
    check(false, "invalid setting `tls.cert`");
    let mut daemon = Process::spawn(&["--config".as_ref(), file.as_os_str()], |_| {});
    let status = daemon.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(64), "{}", daemon.stderr());
}
