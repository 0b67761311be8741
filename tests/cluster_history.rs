//! Issue 11 — channel history in a cluster, kept in Redis: offsets in one
//! order on every node, recovery on another node after a node was killed
//! (SIGKILL, the real binary), after a restart, eviction and forged entries
//! reported lost, the `history` op, and Redis gone refusing the publish.
//!
//! Every test runs its own redis-server on a free port and php-fpm running
//! `tests/php/control.php` (its open answer is the connection id and joins
//! the channels of `?join=`). Helpers: `tests/cluster_support/`.
#![cfg(feature = "cluster")]

#[allow(dead_code)]
mod control_support;
mod support;

#[allow(dead_code)]
mod cluster_support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use ws2fcgi::Config;

use cluster_support::{Node, Redis};
use control_support::Control;
use support::{Client, EventLog, Fpm, Process, recv};

/// php-fpm workers for two nodes.
const WORKERS: usize = 8;

/// History for every channel: `size` publications, for a minute.
fn with_history(size: usize) -> impl FnOnce(&mut Config) {
    move |config: &mut Config| {
        config.history.size = size;
        config.history.ttl = Duration::from_secs(60);
    }
}

/// A `ws2fcgi.v1` message: its header (`Null` when empty) and data.
#[derive(Debug)]
struct Framed {
    header: Value,
    data: String,
}

async fn next(ws: &mut Client) -> Framed {
    let text = match recv(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    };
    let (header, data) = text.split_once('\n').expect("a header line");
    let header = if header.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(header).expect("header is JSON")
    };
    Framed {
        header,
        data: data.to_owned(),
    }
}

/// Connects to `url` offering ws2fcgi.v1 (and positions, when given);
/// returns the client and the `connected` header.
async fn connect_v1(url: &str, since: Option<Value>) -> (Client, Value) {
    let token = since.map(|since| URL_SAFE_NO_PAD.encode(since.to_string()));
    connect_v1_token(url, token.as_deref()).await
}

/// As [`connect_v1`], with the `ws2fcgi.since.` token as given.
async fn connect_v1_token(url: &str, token: Option<&str>) -> (Client, Value) {
    let mut protocols = "ws2fcgi.v1".to_string();
    if let Some(token) = token {
        protocols += &format!(", ws2fcgi.since.{token}");
    }
    let request = support::request(url, &[("Sec-WebSocket-Protocol", &protocols)]);
    let (mut ws, _) = support::connect_with(request).await;
    let connected = next(&mut ws).await;
    assert_eq!(connected.header["t"], "connected", "{connected:?}");
    (ws, connected.header)
}

/// Reads the open's answer (the connection id, for this connection only).
async fn open_answer(ws: &mut Client) {
    let answer = next(ws).await;
    assert_eq!(answer.header, Value::Null, "{answer:?}");
}

/// Reads a publication: (channel, offset, epoch, data).
async fn publication(ws: &mut Client) -> (String, u64, String, String) {
    let p = next(ws).await;
    (
        p.header["c"].as_str().expect("a publication").to_owned(),
        p.header["o"].as_u64().expect("an offset"),
        p.header["e"].as_str().expect("an epoch").to_owned(),
        p.data,
    )
}

fn position(connected: &Value, channel: &str) -> (u64, String) {
    let p = &connected["channels"][channel];
    (
        p["o"]
            .as_u64()
            .unwrap_or_else(|| panic!("offset in {connected}")),
        p["e"].as_str().expect("epoch").to_owned(),
    )
}

async fn publish(control: &mut Control, channel: &str, data: &str) -> Value {
    control
        .ok(&json!({"op": "publish", "channel": channel, "data": data}))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_from_two_nodes_come_in_one_order_everywhere() {
    let redis = Redis::start();
    let fpm = Fpm::start(WORKERS);
    let log = EventLog::new();
    let a = Node::start_with(&fpm, &redis, "node-a", with_history(100)).await;
    let b = Node::start_with(&fpm, &redis, "node-b", with_history(100)).await;
    let mut clients = Vec::new();
    for node in [&a, &a, &b, &b] {
        let (mut ws, connected) = connect_v1(&node.url(&log, "join=room"), None).await;
        assert_eq!(position(&connected, "room").0, 0, "{connected}");
        open_answer(&mut ws).await;
        clients.push(ws);
    }
    const EACH: usize = 30;
    let publisher = |node: &Node, name: &'static str| {
        let path = node.control.clone();
        tokio::spawn(async move {
            let mut control = Control::connect(&path).await;
            let mut offsets = Vec::new();
            for i in 0..EACH {
                let reply = publish(&mut control, "room", &format!("{name}{i}")).await;
                assert!(reply["delivered"].as_u64().unwrap() <= 2, "{reply}");
                offsets.push(reply["offset"].as_u64().expect("offset"));
            }
            offsets
        })
    };
    let (from_a, from_b) = tokio::join!(publisher(&a, "a"), publisher(&b, "b"));
    let mut offsets: Vec<u64> = from_a.unwrap().into_iter().chain(from_b.unwrap()).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (1..=2 * EACH as u64).collect::<Vec<_>>());

    let mut first: Option<Vec<String>> = None;
    for ws in &mut clients {
        let mut seen = Vec::new();
        let mut epoch = None;
        for offset in 1..=2 * EACH as u64 {
            let (channel, o, e, data) = publication(ws).await;
            assert_eq!((channel.as_str(), o), ("room", offset));
            assert_eq!(*epoch.get_or_insert(e.clone()), e, "one epoch");
            seen.push(data);
        }
        let order_a: Vec<&String> = seen.iter().filter(|d| d.starts_with('a')).collect();
        let expected: Vec<String> = (0..EACH).map(|i| format!("a{i}")).collect();
        assert_eq!(order_a, expected.iter().collect::<Vec<_>>());
        match &first {
            None => first = Some(seen),
            Some(first) => assert_eq!(&seen, first, "every member, either node, one order"),
        }
    }
}

/// A config file for the real binary as a cluster node with history.
fn node_config(dir: &std::path::Path, fpm: &Fpm, redis: &Redis, id: &str) -> std::path::PathBuf {
    let file = dir.join(format!("{id}.toml"));
    std::fs::write(
        &file,
        format!(
            "listen = [\"127.0.0.1:0\"]\nscript = \"{script}\"\n\
             [fpm]\naddress = \"unix:{fpm}\"\npool_size = 2\n\
             [control]\nsocket = \"{control}\"\n\
             [cluster]\nredis = \"{redis}\"\nnode_id = \"{id}\"\nnode_ttl = \"2s\"\n\
             [history]\nsize = 100\nttl = \"1m\"\n",
            script = support::script("control.php").display(),
            fpm = fpm.socket.display(),
            control = dir.join(format!("{id}.sock")).display(),
            redis = redis.url(),
        ),
    )
    .expect("write config");
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_a_killed_node_recovers_on_another() {
    let redis = Redis::start();
    let fpm = Fpm::start(WORKERS);
    let log = EventLog::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = node_config(dir.path(), &fpm, &redis, "node-a");
    let mut a = Process::start(&[
        "--config".as_ref(),
        file.as_os_str(),
        "--log-level".as_ref(),
        "warn,ws2fcgi=info".as_ref(),
    ] as &[&std::ffi::OsStr]);
    let b = Node::start_with(&fpm, &redis, "node-b", with_history(100)).await;
    let url_a = format!("ws://{}/?{}&join=room", a.addr, log.query());
    let (mut ws, connected) = connect_v1(&url_a, None).await;
    open_answer(&mut ws).await;
    let (_, epoch) = position(&connected, "room");

    let mut control_a = Control::connect(&dir.path().join("node-a.sock")).await;
    for i in 1..=3 {
        let reply = publish(&mut control_a, "room", &format!("m{i}")).await;
        assert_eq!(reply["offset"], i, "{reply}");
        assert_eq!(reply["delivered"], 1, "{reply}");
    }
    for i in 1..=3u64 {
        assert_eq!(
            publication(&mut ws).await,
            ("room".into(), i, epoch.clone(), format!("m{i}"))
        );
    }

    a.signal("KILL");
    a.wait_exit(Duration::from_secs(10)).await;
    drop(ws);
    let mut control_b = b.control().await;
    for i in 4..=6 {
        let reply = publish(&mut control_b, "room", &format!("m{i}")).await;
        assert_eq!(reply["offset"], i, "{reply}");
        assert_eq!(reply["epoch"], epoch.as_str(), "{reply}");
    }

    let since = json!({"room": [3, epoch]});
    let (mut ws, connected) = connect_v1(&b.url(&log, "join=room"), Some(since)).await;
    assert_eq!(connected["recovered"], true, "{connected}");
    assert_eq!(connected["lost"], json!([]), "{connected}");
    assert_eq!(position(&connected, "room"), (3, epoch.clone()));
    for i in 4..=6u64 {
        assert_eq!(
            publication(&mut ws).await,
            ("room".into(), i, epoch.clone(), format!("m{i}"))
        );
    }
    open_answer(&mut ws).await;
    publish(&mut control_b, "room", "m7").await;
    assert_eq!(
        publication(&mut ws).await,
        ("room".into(), 7, epoch.clone(), "m7".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_keeps_the_history_in_redis() {
    let redis = Redis::start();
    let fpm = Fpm::start(WORKERS);
    let log = EventLog::new();
    let node = Node::start_with(&fpm, &redis, "node-a", with_history(100)).await;
    let (mut ws, connected) = connect_v1(&node.url(&log, "join=room"), None).await;
    open_answer(&mut ws).await;
    let (_, epoch) = position(&connected, "room");
    let mut control = node.control().await;
    publish(&mut control, "room", "before").await;
    assert_eq!(publication(&mut ws).await.1, 1);
    drop(control);
    node.shutdown().await;
    drop(ws);

    let node = Node::start_with(&fpm, &redis, "node-a", with_history(100)).await;
    let mut control = node.control().await;
    let reply = publish(&mut control, "room", "while away").await;
    assert_eq!(
        (reply["offset"].as_u64(), reply["epoch"].as_str()),
        (Some(2), Some(epoch.as_str()))
    );
    let since = json!({"room": [1, epoch]});
    let (mut ws, connected) = connect_v1(&node.url(&log, "join=room"), Some(since)).await;
    assert_eq!(connected["recovered"], true, "{connected}");
    assert_eq!(
        publication(&mut ws).await,
        ("room".into(), 2, epoch.clone(), "while away".into())
    );
    open_answer(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_forged_or_other_epoch_is_lost_not_a_gap() {
    let redis = Redis::start();
    let fpm = Fpm::start(WORKERS);
    let log = EventLog::new();
    let node = Node::start_with(&fpm, &redis, "node-a", with_history(2)).await;
    let mut control = node.control().await;
    let mut epoch = String::new();
    for i in 1..=5 {
        epoch = publish(&mut control, "room", &format!("m{i}")).await["epoch"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    let url = node.url(&log, "join=room,other");
    // Size 2: 4 and 5 kept; a client at 2 missed 3.
    let (_ws, connected) = connect_v1(&url, Some(json!({"room": [2, epoch]}))).await;
    assert_eq!(connected["lost"], json!(["room"]), "{connected}");
    assert_eq!(connected["recovered"], false);
    assert_eq!(position(&connected, "room"), (5, epoch.clone()), "the top");
    // At 3: covered.
    let (mut ws, connected) = connect_v1(&url, Some(json!({"room": [3, epoch]}))).await;
    assert_eq!(connected["recovered"], true, "{connected}");
    assert_eq!(publication(&mut ws).await.1, 4);
    assert_eq!(publication(&mut ws).await.1, 5);
    // Another epoch, or a channel never published to: lost.
    let since = json!({"room": [5, "0123"], "other": [1, "abcd"]});
    let (_ws, connected) = connect_v1(&url, Some(since)).await;
    assert_eq!(connected["lost"], json!(["room", "other"]), "{connected}");
    assert_eq!(position(&connected, "other").0, 0, "a fresh record");
    // A token that cannot be read: every channel joined is lost.
    let (_ws, connected) = connect_v1_token(&url, Some("!!")).await;
    assert_eq!(connected["lost"], json!(["room", "other"]), "{connected}");
    assert_eq!(connected["recovered"], false);
    assert_eq!(position(&connected, "room"), (5, epoch.clone()));

    // An entry written into Redis by someone without cluster.secret.
    let mut conn = redis.conn().await;
    let top: u64 = redis::cmd("HINCRBY")
        .arg("ws2fcgi:history-meta:room")
        .arg("top")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(top, 6);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let _: String = redis::cmd("XADD")
        .arg("ws2fcgi:history:room")
        .arg("6-1")
        .arg("e")
        .arg(b"WS\x02Pforged".as_slice())
        .arg("t")
        .arg(&now_ms)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (_ws, connected) = connect_v1(&url, Some(json!({"room": [5, epoch]}))).await;
    assert_eq!(connected["lost"], json!(["room"]), "forged: {connected}");
    let reply = control
        .ok(&json!({"op": "history", "channel": "room", "since": {"offset": 5, "epoch": epoch}}))
        .await;
    assert_eq!(reply["lost"], true, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_op_reads_redis_and_redis_gone_fails_the_publish() {
    let mut redis = Redis::start();
    let fpm = Fpm::start(WORKERS);
    let a = Node::start_with(&fpm, &redis, "node-a", with_history(10)).await;
    let b = Node::start_with(&fpm, &redis, "node-b", with_history(10)).await;
    let mut control_a = a.control().await;
    let mut epoch = String::new();
    for i in 1..=3 {
        epoch = publish(&mut control_a, "room", &format!("m{i}")).await["epoch"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    let mut control_b = b.control().await;
    let latest = control_b
        .ok(&json!({"op": "history", "channel": "room", "limit": 2}))
        .await;
    assert_eq!(
        latest,
        json!({"ok": true, "epoch": epoch, "offset": 3, "publications": [
            {"offset": 2, "data": "m2"}, {"offset": 3, "data": "m3"}]})
    );
    let since = control_b
        .ok(&json!({"op": "history", "channel": "room", "since": {"offset": 1, "epoch": epoch}}))
        .await;
    assert_eq!(
        since["publications"].as_array().unwrap().len(),
        2,
        "{since}"
    );
    let other = control_b
        .ok(&json!({"op": "history", "channel": "room", "since": {"offset": 1, "epoch": "x"}}))
        .await;
    assert_eq!(other["lost"], true, "{other}");

    redis.stop();
    let reply = control_a
        .call(&json!({"op": "publish", "channel": "room", "data": "lost?"}))
        .await;
    assert_eq!(reply["ok"], false, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("history"),
        "{reply}"
    );
    // Recovery cannot read: the channel is reported lost, not a silent gap.
    let log = EventLog::new();
    let since = json!({"room": [3, epoch]});
    let (_ws, connected) = connect_v1(&a.url(&log, "join=room"), Some(since)).await;
    assert_eq!(connected["lost"], json!(["room"]), "{connected}");
    assert_eq!(connected["recovered"], false);
}

/// Clients reconnect with their positions, to one node then the other,
/// while a publisher keeps publishing: what each connection is sent
/// continues exactly where the client was (the read from Redis and the
/// publications held meanwhile meet without a gap or a duplicate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_while_publishing_has_no_gap_and_no_duplicate() {
    const TOTAL: u64 = 300;
    let redis = Redis::start();
    let fpm = Fpm::start(WORKERS);
    let log = EventLog::new();
    let a = Node::start_with(&fpm, &redis, "node-a", with_history(1000)).await;
    let b = Node::start_with(&fpm, &redis, "node-b", with_history(1000)).await;
    let (mut ws, connected) = connect_v1(&a.url(&log, "join=room"), None).await;
    let (mut at, epoch) = position(&connected, "room");
    assert_eq!(at, 0);
    let path = a.control.clone();
    let publisher = tokio::spawn(async move {
        let mut control = Control::connect(&path).await;
        for i in 1..=TOTAL {
            publish(&mut control, "room", &format!("m{i}")).await;
            if i % 4 == 0 {
                // Spread the publications over the reconnects.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let mut round = 0;
    while at < TOTAL {
        let mut read = 0;
        while read < 10 && at < TOTAL {
            let p = next(&mut ws).await;
            if p.header.is_null() {
                continue; // the open's answer
            }
            assert_eq!(p.header["o"], at + 1, "round {round}: {:?}", p.header);
            assert_eq!(p.header["e"], epoch.as_str());
            assert_eq!(p.data, format!("m{}", at + 1));
            at += 1;
            read += 1;
        }
        round += 1;
        let node = if round % 2 == 0 { &a } else { &b };
        let since = json!({"room": [at, epoch]});
        let (next_ws, connected) = connect_v1(&node.url(&log, "join=room"), Some(since)).await;
        assert_eq!(connected["recovered"], true, "{connected}");
        ws = next_ws;
    }
    publisher.await.expect("publisher");
    assert!(round >= 10, "{round} reconnects");
}

/// A `ws2fcgi.v1` client joined to a channel after its open (control `join`,
/// here from another node) is told where the channel stands, read from
/// Redis when its node has not delivered to that channel, so it can come
/// back with a position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_after_the_open_is_told_the_position() {
    let redis = Redis::start();
    let fpm = Fpm::start(WORKERS);
    let log = EventLog::new();
    let a = Node::start_with(&fpm, &redis, "node-a", with_history(100)).await;
    let b = Node::start_with(&fpm, &redis, "node-b", with_history(100)).await;
    let mut control = a.control().await;
    let mut epoch = String::new();
    for i in 1..=3 {
        epoch = publish(&mut control, "room", &format!("m{i}")).await["epoch"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    let mut clients = Vec::new();
    for expected in [3, 4] {
        let (mut ws, connected) = connect_v1(&b.url(&log, "join=lobby"), None).await;
        let id = connected["id"].as_str().unwrap().to_owned();
        open_answer(&mut ws).await;
        let reply = control
            .ok(&json!({"op": "join", "conn": id, "channel": "room"}))
            .await;
        assert_eq!(reply["found"], true, "{reply}");
        let joined = next(&mut ws).await.header;
        assert_eq!(
            joined,
            json!({"t": "joined", "c": "room", "o": expected, "e": epoch})
        );
        clients.push(ws);
        if expected == 3 {
            publish(&mut control, "room", "m4").await;
            assert_eq!(publication(&mut clients[0]).await.1, 4);
        }
    }
    publish(&mut control, "room", "m5").await;
    for ws in &mut clients {
        assert_eq!(
            publication(ws).await,
            ("room".into(), 5, epoch.clone(), "m5".into())
        );
    }
}
