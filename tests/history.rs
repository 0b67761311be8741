//! Channel history and recovery on one node (`[history]`, the `ws2fcgi.v1`
//! subprotocol), against real php-fpm running `tests/php/control.php`: its
//! open answer is the connection id and joins the channels of `?join=`.

#[allow(dead_code)]
mod control_support;
mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use ws2fcgi::Config;
use ws2fcgi::config::ChannelHistory;

use control_support::Setup;
use support::{Client, recv, recv_text};

/// History for every channel: `size` publications, for a minute.
fn with_history(size: usize) -> impl FnOnce(&mut Config) {
    move |config: &mut Config| {
        config.history.size = size;
        config.history.ttl = Duration::from_secs(60);
        config.history.channels = vec![ChannelHistory {
            pattern: "plain:*".into(),
            size: Some(0),
            ttl: None,
        }];
    }
}

/// A `ws2fcgi.v1` message: its header (JSON, or `Null` when empty) and data.
#[derive(Debug)]
struct Framed {
    header: Value,
    data: Vec<u8>,
    binary: bool,
}

fn parse(msg: &Message) -> Framed {
    let (bytes, binary) = match msg {
        Message::Text(t) => (t.as_bytes().to_vec(), false),
        Message::Binary(b) => (b.to_vec(), true),
        other => panic!("expected a data message, got {other:?}"),
    };
    let at = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or_else(|| panic!("no header line in {:?}", String::from_utf8_lossy(&bytes)));
    let header = if at == 0 {
        Value::Null
    } else {
        serde_json::from_slice(&bytes[..at]).expect("header is JSON")
    };
    Framed {
        header,
        data: bytes[at + 1..].to_vec(),
        binary,
    }
}

async fn next(ws: &mut Client) -> Framed {
    parse(&recv(ws).await)
}

/// Connects offering ws2fcgi.v1 (and `since`, when given); returns the
/// client, the protocol the daemon selected and the `connected` header.
async fn connect_v1(setup: &Setup, query: &str, since: Option<Value>) -> (Client, Value) {
    let mut protocols = "ws2fcgi.v1".to_string();
    if let Some(since) = since {
        protocols += &format!(
            ", ws2fcgi.since.{}",
            URL_SAFE_NO_PAD.encode(since.to_string())
        );
    }
    let request = support::request(&setup.url(query), &[("Sec-WebSocket-Protocol", &protocols)]);
    let (mut ws, response) = support::connect_with(request).await;
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("ws2fcgi.v1")
    );
    let connected = next(&mut ws).await;
    assert_eq!(connected.header["t"], "connected", "{connected:?}");
    assert!(connected.data.is_empty());
    (ws, connected.header)
}

/// Reads the open's answer, which comes after what the client missed:
/// control.php answers with the id, a message for this connection only.
async fn open_answer(ws: &mut Client, connected: &Value) {
    let answer = next(ws).await;
    assert_eq!(answer.header, Value::Null, "{answer:?}");
    assert_eq!(answer.data, connected["id"].as_str().unwrap().as_bytes());
}

fn position(connected: &Value, channel: &str) -> (u64, String) {
    let p = &connected["channels"][channel];
    (
        p["o"].as_u64().expect("offset"),
        p["e"].as_str().expect("epoch").to_owned(),
    )
}

#[tokio::test]
async fn a_raw_client_sees_exactly_what_it_saw_before() {
    let setup = Setup::start(2, with_history(10)).await;
    let (mut ws, _id) = setup.member("join=room").await;
    let mut control = setup.control().await;
    let reply = control
        .ok(&json!({"op": "publish", "channel": "room", "data": "hi"}))
        .await;
    assert_eq!(reply["offset"], 1, "{reply}");
    assert_eq!(recv_text(&mut ws).await, "hi", "no header for a raw client");
    // And without a subprotocol offered, none is selected.
    let (_ws, response) = support::connect_with(support::request(&setup.url(""), &[])).await;
    assert!(response.headers().get("sec-websocket-protocol").is_none());
}

#[tokio::test]
async fn a_v1_client_gets_its_id_its_channels_and_framed_publications() {
    let setup = Setup::start(2, with_history(10)).await;
    let (mut ws, connected) = connect_v1(&setup, "join=room,plain:x", None).await;
    open_answer(&mut ws, &connected).await;
    assert_eq!(
        connected["recovered"], false,
        "nothing to recover: {connected}"
    );
    assert_eq!(connected["lost"], json!([]));
    assert_eq!(connected["hb"], 30);
    let (offset, epoch) = position(&connected, "room");
    assert_eq!(offset, 0);
    assert_eq!(
        connected["channels"]["plain:x"],
        json!({}),
        "no history there"
    );

    let mut control = setup.control().await;
    let reply = control
        .ok(&json!({"op": "publish", "channel": "room", "data": "one"}))
        .await;
    assert_eq!(
        (reply["offset"].as_u64(), reply["epoch"].as_str()),
        (Some(1), Some(&*epoch))
    );
    let p = next(&mut ws).await;
    assert_eq!(p.header, json!({"c": "room", "o": 1, "e": epoch}));
    assert_eq!(p.data, b"one");
    assert!(!p.binary);

    let reply = control
        .ok(&json!({"op": "publish", "channel": "plain:x", "data": "AAE=", "binary": true}))
        .await;
    assert!(reply.get("offset").is_none(), "{reply}");
    let p = next(&mut ws).await;
    assert_eq!(p.header, json!({"c": "plain:x"}));
    assert_eq!((p.data, p.binary), (vec![0, 1], true));

    let id = connected["id"].as_str().unwrap();
    control
        .ok(&json!({"op": "send", "to": id, "data": "just you"}))
        .await;
    let p = next(&mut ws).await;
    assert_eq!((p.header, p.data), (Value::Null, b"just you".to_vec()));

    control
        .ok(&json!({"op": "join", "conn": id, "channel": "news"}))
        .await;
    let p = next(&mut ws).await;
    assert_eq!(p.header["t"], "joined");
    assert_eq!(p.header["c"], "news");
    assert_eq!(p.header["o"], 0);
    control
        .ok(&json!({"op": "leave", "conn": id, "channel": "news"}))
        .await;
    assert_eq!(
        next(&mut ws).await.header,
        json!({"t": "left", "c": "news"})
    );
}

#[tokio::test]
async fn a_client_that_reconnects_gets_what_it_missed_then_live_ones_in_order() {
    let setup = Setup::start(2, with_history(100)).await;
    let mut control = setup.control().await;
    control
        .ok(&json!({"op": "publish", "channel": "room", "data": "before"}))
        .await;
    let (ws, connected) = connect_v1(&setup, "join=room", None).await;
    let (offset, epoch) = position(&connected, "room");
    assert_eq!(offset, 1, "the client starts at the channel's top");
    drop(ws);
    for i in 2..=6 {
        control
            .ok(&json!({"op": "publish", "channel": "room", "data": format!("m{i}")}))
            .await;
    }
    let (mut ws, connected) =
        connect_v1(&setup, "join=room", Some(json!({"room": [offset, epoch]}))).await;
    assert_eq!(connected["recovered"], true, "{connected}");
    assert_eq!(position(&connected, "room"), (1, epoch.clone()));
    for i in 2..=6u64 {
        let p = next(&mut ws).await;
        assert_eq!(p.header["o"], i);
        assert_eq!(p.data, format!("m{i}").as_bytes());
    }
    open_answer(&mut ws, &connected).await;
    control
        .ok(&json!({"op": "publish", "channel": "room", "data": "live"}))
        .await;
    let p = next(&mut ws).await;
    assert_eq!(
        (p.header["o"].as_u64(), p.data),
        (Some(7), b"live".to_vec())
    );
    let metrics = setup
        .daemon
        .ctx
        .metrics
        .render(&setup.daemon.ctx.snapshot());
    assert_eq!(
        support::metric(&metrics, "ws2fcgi_recovered_publications_total"),
        5.0
    );
    assert_eq!(
        support::metric(&metrics, r#"ws2fcgi_recoveries_total{outcome="recovered"}"#),
        1.0
    );
}

#[tokio::test]
async fn an_evicted_gap_or_another_epoch_is_lost_not_a_silent_gap() {
    let setup = Setup::start(2, with_history(3)).await;
    let (ws, connected) = connect_v1(&setup, "join=room,other", None).await;
    let (_, epoch) = position(&connected, "room");
    drop(ws);
    let mut control = setup.control().await;
    for i in 1..=5 {
        control
            .ok(&json!({"op": "publish", "channel": "room", "data": format!("m{i}")}))
            .await;
    }
    // Offsets 3..5 are kept; a client at 0 missed 1 and 2 for good.
    let since = json!({"room": [0, epoch], "other": [0, "not-its-epoch"]});
    let (mut ws, connected) = connect_v1(&setup, "join=room,other", Some(since)).await;
    assert_eq!(connected["recovered"], false);
    assert_eq!(connected["lost"], json!(["room", "other"]));
    assert_eq!(
        position(&connected, "room").0,
        5,
        "a lost channel starts at its top"
    );
    open_answer(&mut ws, &connected).await;
    control
        .ok(&json!({"op": "publish", "channel": "room", "data": "live"}))
        .await;
    let p = next(&mut ws).await;
    assert_eq!(
        (p.header["o"].as_u64(), p.data),
        (Some(6), b"live".to_vec()),
        "nothing replayed"
    );
    // Still covered from 2 on: recovered.
    let (mut ws, connected) =
        connect_v1(&setup, "join=room", Some(json!({"room": [3, epoch]}))).await;
    assert_eq!(connected["recovered"], true);
    assert_eq!(next(&mut ws).await.header["o"], 4);
}

#[tokio::test]
async fn publications_older_than_the_ttl_are_lost() {
    let setup = Setup::start(2, |config: &mut Config| {
        config.history.size = 100;
        config.history.ttl = Duration::from_millis(300);
    })
    .await;
    let (ws, connected) = connect_v1(&setup, "join=room", None).await;
    let (_, epoch) = position(&connected, "room");
    drop(ws);
    let mut control = setup.control().await;
    control
        .ok(&json!({"op": "publish", "channel": "room", "data": "old"}))
        .await;
    support::poll_until(Duration::from_secs(10), "the publication expires", || {
        (setup.daemon.ctx.hub.history_size().0 == 0).then_some(())
    })
    .await;
    let (_ws, connected) = connect_v1(&setup, "join=room", Some(json!({"room": [0, epoch]}))).await;
    assert_eq!(connected["lost"], json!(["room"]));
}

#[tokio::test]
async fn the_history_op_returns_the_newest_or_what_follows_a_position() {
    let setup = Setup::start(2, with_history(10)).await;
    let mut control = setup.control().await;
    for i in 1..=4 {
        control
            .ok(&json!({"op": "publish", "channel": "room", "data": format!("m{i}")}))
            .await;
    }
    control
        .ok(&json!({"op": "publish", "channel": "room", "data": "AP8=", "binary": true}))
        .await;
    let reply = control
        .ok(&json!({"op": "history", "channel": "room", "limit": 2}))
        .await;
    let epoch = reply["epoch"].as_str().unwrap().to_owned();
    assert_eq!(reply["offset"], 5);
    assert_eq!(
        reply["publications"],
        json!([{"offset": 4, "data": "m4"}, {"offset": 5, "data": "AP8=", "binary": true}])
    );
    let reply = control
        .ok(&json!({"op": "history", "channel": "room", "since": {"offset": 2, "epoch": epoch}}))
        .await;
    let offsets: Vec<u64> = reply["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [3, 4, 5]);
    let reply = control
        .ok(&json!({"op": "history", "channel": "room", "since": {"offset": 2, "epoch": "x"}}))
        .await;
    assert_eq!(reply["lost"], true);
    let reply = control
        .call(&json!({"op": "history", "channel": "plain:x"}))
        .await;
    assert_eq!(reply["ok"], false);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("keeps no history"),
        "{reply}"
    );
}

#[tokio::test]
async fn an_unreadable_since_token_reports_every_channel_joined_lost() {
    let setup = Setup::start(2, with_history(10)).await;
    for token in ["!!!", &URL_SAFE_NO_PAD.encode(r#"{"room":"x"}"#)] {
        let protocols = format!("ws2fcgi.v1, ws2fcgi.since.{token}");
        let request = support::request(
            &setup.url("join=room"),
            &[("Sec-WebSocket-Protocol", &protocols)],
        );
        // Accepted: refusing would have the client retry the same token forever.
        let (mut ws, _) = support::connect_with(request).await;
        let connected = next(&mut ws).await.header;
        assert_eq!(connected["recovered"], false, "{connected}");
        assert_eq!(connected["lost"], json!(["room"]), "no silent gap");
    }
    let metrics = setup
        .daemon
        .ctx
        .metrics
        .render(&setup.daemon.ctx.snapshot());
    assert_eq!(
        support::metric(
            &metrics,
            r#"ws2fcgi_recoveries_total{outcome="unreadable"}"#
        ),
        2.0
    );
}

#[tokio::test]
async fn a_v1_client_sees_a_heartbeat_every_ping_interval() {
    let setup = Setup::start(2, |config: &mut Config| {
        config.websocket.ping_interval = Duration::from_millis(300);
    })
    .await;
    let (mut ws, connected) = connect_v1(&setup, "", None).await;
    assert_eq!(connected["hb"], 1, "whole seconds, rounded up");
    open_answer(&mut ws, &connected).await;
    for _ in 0..2 {
        assert_eq!(next(&mut ws).await.header, json!({"t": "hb"}));
    }
}

#[tokio::test]
async fn php_reads_the_history_through_its_client() {
    let setup = Setup::start(2, with_history(10)).await;
    let mut control = setup.control().await;
    control
        .ok(&json!({"op": "publish", "channel": "room", "data": "first"}))
        .await;
    control
        .ok(&json!({"op": "publish", "channel": "room", "data": "Ymlu", "binary": true}))
        .await;
    let (mut ws, _id) = setup.member("").await;
    let answer =
        control_support::php_call(&mut ws, "history", json!({"channel": "room", "limit": 5})).await;
    let result = &answer["result"];
    assert_eq!(result["offset"], 2, "{answer}");
    assert_eq!(result["lost"], false);
    assert_eq!(
        result["publications"][0],
        json!({"offset": 1, "data": "first", "binary": false})
    );
    assert_eq!(
        result["publications"][1],
        json!({"offset": 2, "data": "bin", "binary": true}),
        "decoded for PHP"
    );
    let epoch = result["epoch"].clone();
    let answer = control_support::php_call(
        &mut ws,
        "history",
        json!({"channel": "room", "since": {"offset": 1, "epoch": epoch}}),
    )
    .await;
    assert_eq!(
        answer["result"]["publications"].as_array().map(Vec::len),
        Some(1)
    );
    let answer = control_support::php_call(&mut ws, "history", json!({"channel": "plain:x"})).await;
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("keeps no history"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_v1_member_left_out_by_except_is_told_the_offset_went_by() {
    let setup = Setup::start(2, with_history(10)).await;
    let (mut ws, connected) = connect_v1(&setup, "join=room,plain:x", None).await;
    open_answer(&mut ws, &connected).await;
    let (_, epoch) = position(&connected, "room");
    let id = connected["id"].as_str().unwrap();
    let mut control = setup.control().await;
    for channel in ["plain:x", "room"] {
        control
            .ok(&json!({"op": "publish", "channel": channel, "data": "x", "except": id}))
            .await;
    }
    control
        .ok(&json!({"op": "publish", "channel": "room", "data": "y"}))
        .await;
    // No history in plain:x, nothing to skip there.
    assert_eq!(
        next(&mut ws).await.header,
        json!({"t": "skip", "c": "room", "o": 1, "e": epoch})
    );
    let p = next(&mut ws).await;
    assert_eq!((p.header["o"].as_u64(), p.data), (Some(2), b"y".to_vec()));
}
