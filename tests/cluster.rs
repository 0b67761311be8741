//! Issue 7 — several nodes sharing channels through a real Redis: publish
//! across nodes (once, in order, byte-exact), send/close/join/leave/meta by id
//! across nodes, presence of every node, a crashed node's presence expiring
//! within `node_ttl`, and delivery resuming after Redis restarts.
//!
//! Every test runs its own redis-server on a free port, one php-fpm running
//! `tests/php/control.php`, and two or three nodes in-process (each its own
//! Context, listener, control socket and node id). Helpers are in
//! `tests/cluster_support/` and `tests/control_support/`.
#![cfg(feature = "cluster")]

#[allow(dead_code)]
mod control_support;
mod support;

mod cluster_support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use cluster_support::{NODE_TTL, Node, REQUEST_TIMEOUT, Redis};
use control_support::{Control, Deadline, expect_quiet, expect_text, members};
use support::{Client, EventLog, Fpm, recv_binary, recv_close, recv_text};

/// php-fpm workers for up to three nodes of three pooled connections each.
const WORKERS: usize = 10;

/// The ids in a presence reply, sorted.
async fn presence_ids(control: &mut Control, channel: &str) -> Vec<String> {
    control
        .presence(channel)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// Reads text messages until `last`; returns those before it.
async fn read_until(ws: &mut Client, last: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let text = recv_text(ws).await;
        if text == last {
            return got;
        }
        got.push(text);
    }
}

/// 100 messages published on node A reach every member on A, B and C exactly
/// once and in publish order; binary payloads arrive byte-exact; `except`
/// leaves out a member of another node; `delivered` counts A's members only;
/// a garbage message on the bus changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_on_one_node_reaches_every_node_once_and_in_order() {
    let redis = Redis::start();
    let fpm = Fpm::start(WORKERS);
    let log = EventLog::new();
    let a = Node::start(&fpm, &redis, "node-a").await;
    let b = Node::start(&fpm, &redis, "node-b").await;
    let c = Node::start(&fpm, &redis, "node-c").await;
    let mut members = Vec::new();
    for node in [&a, &b, &b, &c, &c, &c] {
        members.push(node.member(&log, "join=room").await);
    }
    let mut control = a.control().await;

    let sent: Vec<String> = (0..100).map(|i| format!("message {i:03}")).collect();
    for text in &sent {
        assert_eq!(
            control.publish("room", text).await,
            1,
            "delivered counts node A's members only"
        );
    }
    control.publish("room", "end").await;
    for (ws, id) in &mut members {
        assert_eq!(read_until(ws, "end").await, sent, "{id}");
    }

    // Binary, byte for byte.
    let bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
    control
        .ok(&json!({"op": "publish", "channel": "room", "data": data, "binary": true}))
        .await;
    for (ws, id) in &mut members {
        assert_eq!(recv_binary(ws).await, bytes, "{id}");
    }

    // `except` names a member of node B (and one of A).
    let except = json!([members[0].1, members[1].1]);
    let reply = control
        .ok(&json!({"op": "publish", "channel": "room", "data": "not for 0 and 1", "except": except}))
        .await;
    assert_eq!(reply["delivered"], 0);
    for (ws, id) in &mut members[2..] {
        expect_text(ws, "not for 0 and 1", id).await;
    }

    // A hostile publisher on the bus: every node ignores it and goes on.
    let mut conn = redis.conn().await;
    for garbage in [
        &b"garbage"[..],
        b"WS\x01P",
        b"WS\x01P\x06node-z\x00\x04room\x00\x00\x00\xff",
    ] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("ws2fcgi:bus")
            .arg(garbage)
            .query_async(&mut conn)
            .await
            .expect("PUBLISH");
    }

    // Nothing was delivered twice: a last publish from C is everyone's next message.
    let mut from_c = c.control().await;
    assert_eq!(from_c.publish("room", "last").await, 3);
    for (ws, id) in &mut members {
        expect_text(ws, "last", id).await;
    }
    let stats = |node: &Node| {
        let m = &node.ctx.metrics;
        (
            m.cluster_out.get(),
            m.cluster_in.get(),
            m.cluster_dropped.get(),
        )
    };
    let (out, _, dropped) = stats(&a);
    assert!(out >= 103, "A sent every publish: {out}");
    assert_eq!(dropped, 0);
    let (_, inbound, _) = stats(&b);
    assert!(inbound >= 103, "B received every publish: {inbound}");
    for node in [&a, &b, &c] {
        let reconnects = node.ctx.metrics.cluster_reconnects.get();
        assert_eq!(reconnects, 0, "{}: the link never dropped", node.id);
    }
}

/// send, close, join, leave and meta by id reach the node that holds the
/// connection; PHP sees the close event there; gone ids and unknown nodes
/// count as 0 / false without waiting for the request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_close_join_leave_meta_by_id_across_nodes() {
    let redis = Redis::start();
    let fpm = Fpm::start(WORKERS);
    let log = EventLog::new();
    let a = Node::start(&fpm, &redis, "node-a").await;
    let b = Node::start(&fpm, &redis, "node-b").await;
    let (mut x, idx) = b.member(&log, "").await;
    let (mut y, idy) = b.member(&log, "").await;
    let (mut z, idz) = a.member(&log, "").await;
    let mut control = a.control().await;
    let mut control_b = b.control().await;

    assert_eq!(control.send(json!(idx), "to x").await, 1);
    expect_text(&mut x, "to x", "x").await;
    let ghost = format!("ghost.{}", "0".repeat(40));
    let nobody_on_b = format!("node-b.{}", "0".repeat(40));
    let started = Instant::now();
    let to = json!([idx, idy, idz, idx, ghost, nobody_on_b, "not-an-id"]);
    assert_eq!(control.send(to, "to x, y and z").await, 3);
    assert!(
        started.elapsed() < REQUEST_TIMEOUT / 2,
        "an unknown node fails at once, not after cluster.request_timeout"
    );
    for (ws, id) in [(&mut x, &idx), (&mut y, &idy), (&mut z, &idz)] {
        expect_text(ws, "to x, y and z", id).await;
        expect_quiet(&mut control, ws, id, id).await;
    }

    // join, meta and leave on node B's connection, from node A.
    let reply = control
        .ok(&json!({"op": "join", "conn": idx, "channel": "extra"}))
        .await;
    assert_eq!(reply, json!({"ok": true, "found": true}));
    assert_eq!(control_b.publish("extra", "joined").await, 1);
    expect_text(&mut x, "joined", "x").await;
    let reply = control
        .ok(&json!({"op": "meta", "conn": idx, "set": {"User": "42", "n": 7}}))
        .await;
    assert_eq!(reply, json!({"ok": true, "found": true}));
    assert_eq!(
        control_b.presence("extra").await,
        vec![(idx.clone(), json!({"user": "42", "n": "7"}))]
    );
    let many: serde_json::Map<String, Value> =
        (0..70).map(|i| (format!("k{i}"), json!("v"))).collect();
    let reply = control
        .call(&json!({"op": "meta", "conn": idx, "set": many}))
        .await;
    assert_eq!(
        reply["ok"], false,
        "the remote node's refusal comes back: {reply}"
    );
    let reply = control
        .ok(&json!({"op": "leave", "conn": idx, "channel": "extra"}))
        .await;
    assert_eq!(reply, json!({"ok": true, "found": true}));
    assert_eq!(control_b.publish("extra", "nobody").await, 0);
    for op in ["join", "leave"] {
        let reply = control
            .ok(&json!({"op": op, "conn": ghost, "channel": "extra"}))
            .await;
        assert_eq!(reply["found"], false, "{op} {ghost}");
    }

    // close by id across nodes: the client gets the code, PHP the close event.
    let reply = control
        .ok(&json!({"op": "close", "conn": idx, "code": 4001, "reason": "from a"}))
        .await;
    assert_eq!(reply, json!({"ok": true, "closed": true}));
    let frame = recv_close(&mut x).await.expect("a close frame");
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4001, "from a")
    );
    let event = log.close_of(&idx).await;
    assert_eq!(event["WS_CLOSE_CODE"], "4001", "{event}");
    assert_eq!(event["WS_CLOSE_REASON"], "from a", "{event}");

    // Gone now: false and 0, and one close event only.
    let reply = control
        .ok(&json!({"op": "close", "conn": idx, "code": 4001}))
        .await;
    assert_eq!(reply["closed"], false);
    assert_eq!(control.send(json!(idx), "late").await, 0);
    assert_eq!(control.send(json!([idx, idy]), "one of two").await, 1);
    expect_text(&mut y, "one of two", "y").await;
    assert_eq!(log.closes_of(&idx).len(), 1);
}

/// presence lists the members of every node with their metadata, from any
/// node, and follows joins, leaves, metadata changes and disconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_lists_members_of_every_node() {
    let redis = Redis::start();
    let fpm = Fpm::start(WORKERS);
    let log = EventLog::new();
    let a = Node::start(&fpm, &redis, "node-a").await;
    let b = Node::start(&fpm, &redis, "node-b").await;
    let c = Node::start(&fpm, &redis, "node-c").await;
    let (_a1, ida1) = a.member(&log, "join=room&meta_user=alice").await;
    let (_b1, idb1) = b
        .member(&log, "join=room&meta_user=bob&meta_role=admin")
        .await;
    let (b2, idb2) = b.member(&log, "join=room").await;
    let (_c1, _) = c.member(&log, "join=elsewhere").await;

    let mut expected = vec![
        (ida1.clone(), json!({"user": "alice"})),
        (idb1.clone(), json!({"user": "bob", "role": "admin"})),
        (idb2.clone(), json!({})),
    ];
    expected.sort_by(|x, y| x.0.cmp(&y.0));
    for node in [&a, &b, &c] {
        let mut control = node.control().await;
        let deadline = Deadline::new(format!("presence on {} to list all three", node.id));
        while control.presence("room").await != expected {
            deadline.tick().await;
        }
    }

    // Changes on B show on A.
    let mut control = a.control().await;
    control
        .ok(&json!({"op": "meta", "conn": idb1, "set": {"role": null, "mood": "ok"}}))
        .await;
    support::close(b2).await;
    let expected = sorted(vec![ida1.clone(), idb1.clone()]);
    let deadline = Deadline::new("b2 to leave the presence and b1's meta to change");
    loop {
        let members = control.presence("room").await;
        let ids: Vec<String> = members.iter().map(|(id, _)| id.clone()).collect();
        let meta_b1 = members.iter().find(|(id, _)| *id == idb1).map(|(_, m)| m);
        if ids == expected && meta_b1 == Some(&json!({"user": "bob", "mood": "ok"})) {
            break;
        }
        deadline.tick().await;
    }
    let reply = control
        .ok(&json!({"op": "presence", "channel": "elsewhere"}))
        .await;
    assert_eq!(members(&reply["members"]).len(), 1);
}

/// A node that crashes (no cleanup) leaves the presence within `node_ttl`;
/// one that shuts down gracefully leaves it at once. The others keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_leaves_presence_within_node_ttl() {
    let redis = Redis::start();
    let fpm = Fpm::start(WORKERS);
    let log = EventLog::new();
    let a = Node::start(&fpm, &redis, "node-a").await;
    let b = Node::start(&fpm, &redis, "node-b").await;
    let c = Node::start(&fpm, &redis, "node-c").await;
    let (mut a1, ida1) = a.member(&log, "join=room").await;
    let (_b1, idb1) = b.member(&log, "join=room").await;
    let (_c1, idc1) = c.member(&log, "join=room").await;
    let mut control = a.control().await;
    let all = sorted(vec![ida1.clone(), idb1.clone(), idc1.clone()]);
    let deadline = Deadline::new("presence to list every node's member");
    while presence_ids(&mut control, "room").await != all {
        deadline.tick().await;
    }

    // Graceful: C deletes its keys as it stops.
    c.shutdown().await;
    let without_c = sorted(vec![ida1.clone(), idb1.clone()]);
    assert_eq!(presence_ids(&mut control, "room").await, without_c);

    // Crash: B's keys stay until they expire, at most node_ttl after its last refresh.
    let crashed = Instant::now();
    b.crash().await;
    // Generous for a loaded machine; a key that never expires fails anyway.
    let bound = NODE_TTL + Duration::from_secs(4);
    loop {
        let ids = presence_ids(&mut control, "room").await;
        if ids == [ida1.clone()] {
            break;
        }
        assert_eq!(ids, without_c, "nothing else changes meanwhile");
        assert!(
            crashed.elapsed() < bound,
            "B's member still listed {:?} after the crash",
            crashed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A still serves: its member, and requests for the dead node fail fast.
    assert_eq!(control.publish("room", "still here").await, 1);
    expect_text(&mut a1, "still here", "a1").await;
    let started = Instant::now();
    assert_eq!(control.send(json!(idb1), "to a dead node").await, 0);
    assert!(started.elapsed() < REQUEST_TIMEOUT / 2);
}

/// Redis stops and comes back on the same port: meanwhile every node serves
/// its local clients and replies at once; afterwards the nodes reconnect,
/// resubscribe and rewrite their presence, and delivery across nodes resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_redis_restarts() {
    let mut redis = Redis::start();
    let fpm = Fpm::start(WORKERS);
    let log = EventLog::new();
    let a = Node::start(&fpm, &redis, "node-a").await;
    let b = Node::start(&fpm, &redis, "node-b").await;
    let (mut a1, ida1) = a.member(&log, "join=room").await;
    let (mut b1, idb1) = b.member(&log, "join=room").await;
    let mut control = a.control().await;
    control.publish("room", "before").await;
    expect_text(&mut b1, "before", "b1").await;
    expect_text(&mut a1, "before", "a1").await;

    redis.stop();
    // Local service goes on, and replies come at once.
    let started = Instant::now();
    assert_eq!(control.publish("room", "during").await, 1);
    expect_text(&mut a1, "during", "a1").await;
    assert_eq!(control.send(json!(idb1), "lost").await, 0);
    assert_eq!(presence_ids(&mut control, "room").await, vec![ida1.clone()]);
    assert!(
        started.elapsed() < REQUEST_TIMEOUT / 2,
        "{:?}",
        started.elapsed()
    );

    redis.launch();
    // Publish probes until one reaches B (the links reconnect with a backoff).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut probe = 0;
    loop {
        probe += 1;
        control.publish("room", &format!("probe {probe}")).await;
        match tokio::time::timeout(Duration::from_millis(200), recv_text(&mut b1)).await {
            Ok(text) if text.starts_with("probe") => break,
            Ok(other) => panic!("b1 got {other:?}"),
            Err(_) => assert!(Instant::now() < deadline, "delivery did not resume"),
        }
    }
    // Order holds from here on: "after" follows the probes.
    control.publish("room", "after").await;
    let rest = read_until(&mut b1, "after").await;
    assert!(rest.iter().all(|t| t.starts_with("probe")), "{rest:?}");
    let probes = read_until(&mut a1, "after").await;
    assert_eq!(probes.len(), probe, "a1 got every probe, locally");

    // Presence is rewritten: A lists B's member again; B's id routes again.
    let both = sorted(vec![ida1.clone(), idb1.clone()]);
    let deadline = Deadline::new("presence to be rewritten after the restart");
    while presence_ids(&mut control, "room").await != both {
        deadline.tick().await;
    }
    assert_eq!(control.send(json!(idb1), "routed").await, 1);
    expect_text(&mut b1, "routed", "b1").await;
    for node in [&a, &b] {
        assert!(
            node.ctx.metrics.cluster_reconnects.get() >= 1,
            "{}",
            node.id
        );
    }
    assert!(
        a.ctx.metrics.cluster_dropped.get() >= 1,
        "the publish during the outage"
    );
}

/// The secret of the nodes in the tests below.
const SECRET: &str = "test-cluster-secret-0123456789";

/// A test's own subscription to the cluster's channels, to capture what the
/// nodes publish.
async fn tap(redis: &Redis, channels: &[&str]) -> redis::aio::PubSubStream {
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    for channel in channels {
        pubsub.subscribe(*channel).await.expect("SUBSCRIBE");
    }
    pubsub.into_on_message()
}

/// The next message the tap captured: its channel and bytes.
async fn captured(tap: &mut redis::aio::PubSubStream) -> (String, Vec<u8>) {
    use futures_util::StreamExt;
    let msg = tokio::time::timeout(Duration::from_secs(10), tap.next())
        .await
        .expect("a message on the tap within 10 s")
        .expect("the tap is open");
    (
        msg.get_channel_name().to_owned(),
        msg.get_payload_bytes().to_vec(),
    )
}

async fn publish_raw(redis: &Redis, channel: &str, bytes: &[u8]) {
    let mut conn = redis.conn().await;
    let _: i64 = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(bytes)
        .query_async(&mut conn)
        .await
        .expect("PUBLISH");
}

/// How many messages `node` refused, of `kind`.
fn rejected(node: &Node, kind: &'static str) -> u64 {
    let label = ws2fcgi::metrics::KindLabel { kind };
    node.ctx
        .metrics
        .cluster_rejected
        .get_or_create(&label)
        .get()
}

/// Polls until `node` has refused at least `count` messages of `kind`.
async fn wait_rejected(node: &Node, kind: &'static str, count: u64) {
    let deadline = Deadline::new(format!("{} to refuse {count} {kind} messages", node.id));
    while rejected(node, kind) < count {
        deadline.tick().await;
    }
}

/// With `cluster.secret`, whoever can PUBLISH on Redis but lacks the secret
/// can no longer close a connection or set its metadata: forged envelopes
/// (unsealed, sealed with another key, or sealed for another channel) and
/// captured ones published again (a publish, a metadata change rolled back)
/// change nothing and are counted; nodes sharing the secret work as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_envelopes_change_nothing_and_are_counted() {
    use ws2fcgi::cluster::seal::{Key, seal};
    use ws2fcgi::cluster::wire::{Body, Envelope, Op, encode};
    let redis = Redis::start();
    let fpm = Fpm::start(WORKERS);
    let log = EventLog::new();
    let secret = |c: &mut ws2fcgi::Config| c.cluster.secret = Some(SECRET.into());
    let a = Node::start_with(&fpm, &redis, "node-a", secret).await;
    let b = Node::start_with(&fpm, &redis, "node-b", secret).await;
    let (mut x, idx) = b.member(&log, "join=room&meta_user=alice").await;
    let local_x = idx.rsplit_once('.').expect("node.id").1.to_owned();
    let (bus, to_b) = ("ws2fcgi:bus", "ws2fcgi:node:node-b");
    let mut tap = tap(&redis, &[bus, to_b]).await;
    let mut control = a.control().await;
    let mut control_b = b.control().await;

    // The same secret: publishes and requests work, and the tap captures them.
    control.publish("room", "hello").await;
    expect_text(&mut x, "hello", "x").await;
    let hello = captured(&mut tap).await;
    assert_eq!(hello.0, bus);
    let meta = |user: &str| json!({"op": "meta", "conn": idx, "set": {"user": user}});
    control.ok(&meta("bob")).await;
    let meta_bob = captured(&mut tap).await;
    assert_eq!(meta_bob.0, to_b);
    control.ok(&meta("carol")).await;
    captured(&mut tap).await;
    let carol = vec![(idx.clone(), json!({"user": "carol"}))];
    assert_eq!(control_b.presence("room").await, carol);

    // Forgeries, by someone who can PUBLISH but has no secret.
    let envelope = |op| Envelope {
        origin: "node-a".into(),
        body: Body::Request { id: 1, op },
    };
    let close = encode(&envelope(Op::Close {
        conn: local_x.clone(),
        code: 4000,
        reason: "forged".into(),
    }))
    .expect("encode");
    let set_admin = encode(&envelope(Op::Meta {
        conn: local_x.clone(),
        set: vec![("user".into(), Some("admin".into()))],
    }))
    .expect("encode");
    let sealed = |key: &Key, channel: &str, bytes: &[u8]| {
        let mut bytes = bytes.to_vec();
        seal(key, channel, ws2fcgi::cluster::seal::now_ns(), &mut bytes);
        bytes
    };
    let wrong = Key::new(b"not-the-cluster-secret");
    let right = Key::new(SECRET.as_bytes());
    let publish = encode(&Envelope {
        origin: "node-a".into(),
        body: Body::Publish {
            channel: "room".into(),
            except: vec![],
            kind: ws2fcgi::frame::Kind::Text,
            payload: bytes::Bytes::from_static(b"forged"),
        },
    })
    .expect("encode");
    let forgeries = [
        (to_b, close.clone()),
        (to_b, sealed(&wrong, to_b, &close)),
        (to_b, sealed(&wrong, to_b, &set_admin)),
        // The right key, sealed for the bus: bound to its channel.
        (to_b, sealed(&right, bus, &set_admin)),
        (bus, sealed(&wrong, bus, &publish)),
    ];
    for (channel, bytes) in &forgeries {
        publish_raw(&redis, channel, bytes).await;
    }
    // Replays of genuine envelopes: the publish, and the metadata change
    // that carol's replaced.
    publish_raw(&redis, bus, &hello.1).await;
    publish_raw(&redis, to_b, &meta_bob.1).await;

    wait_rejected(&b, "unauthenticated", forgeries.len() as u64).await;
    wait_rejected(&b, "replayed", 2).await;
    expect_quiet(&mut control_b, &mut x, &idx, "x, after the forgeries").await;
    assert_eq!(
        control_b.presence("room").await,
        carol,
        "metadata unchanged"
    );
    assert_eq!(rejected(&a, "unauthenticated"), 0);

    // Still one cluster: a close by id from A reaches x.
    let reply = control
        .ok(&json!({"op": "close", "conn": idx, "code": 4001, "reason": "from a"}))
        .await;
    assert_eq!(reply, json!({"ok": true, "closed": true}));
    let frame = recv_close(&mut x).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 4001);
}

/// Nodes with different secrets do not accept each other's envelopes: a
/// publish does not cross, a request gets no answer, and both are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_different_secrets_ignore_each_other() {
    let redis = Redis::start();
    let fpm = Fpm::start(WORKERS);
    let log = EventLog::new();
    let with = |secret: &'static str| {
        move |c: &mut ws2fcgi::Config| {
            c.cluster.secret = Some(secret.into());
            c.cluster.request_timeout = Duration::from_millis(500);
        }
    };
    let a = Node::start_with(&fpm, &redis, "node-a", with(SECRET)).await;
    let b = Node::start_with(&fpm, &redis, "node-b", with("another-secret-0123456789")).await;
    let (mut x, idx) = b.member(&log, "join=room").await;
    let mut control = a.control().await;
    let mut control_b = b.control().await;

    assert_eq!(control.publish("room", "across").await, 0);
    wait_rejected(&b, "unauthenticated", 1).await;
    assert_eq!(
        control.send(json!(idx), "direct").await,
        0,
        "no answer from B"
    );
    wait_rejected(&b, "unauthenticated", 2).await;
    expect_quiet(&mut control_b, &mut x, &idx, "x").await;
    assert_eq!(a.ctx.metrics.cluster_in.get(), 0);
    assert_eq!(b.ctx.metrics.cluster_in.get(), 0);
}

/// `cluster.secret` is required unless Redis is on loopback or a Unix socket:
/// check-config and a start refuse without it (exit 64, naming the setting);
/// WS2FCGI_CLUSTER_SECRET supplies it.
#[test]
fn a_remote_redis_without_a_secret_is_refused() {
    use std::process::Command;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ws2fcgi.toml");
    let write = |redis: &str| {
        let text = format!(
            "script = \"/srv/app/ws.php\"\n[fpm]\naddress = \"unix:/run/php.sock\"\n\
             [cluster]\nredis = \"{redis}\"\n"
        );
        std::fs::write(&file, text).expect("write config");
    };
    let check = |secret: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ws2fcgi"));
        command.arg("check-config").arg(&file);
        command.env_remove("WS2FCGI_CLUSTER_SECRET");
        if let Some(secret) = secret {
            command.env("WS2FCGI_CLUSTER_SECRET", secret);
        }
        let out = command.output().expect("run check-config");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stderr)
    };
    // Never connected to: validation refuses before anything is bound.
    write("redis://redis.internal.example:6379/");
    let (code, stderr) = check(None);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("cluster.secret") && stderr.contains("WS2FCGI_CLUSTER_SECRET"),
        "{stderr}"
    );
    assert_eq!(check(Some(SECRET)).0, Some(0));
    let (code, stderr) = check(Some("short"));
    assert_eq!(code, Some(64));
    assert!(stderr.contains("cluster.secret"), "{stderr}");
    for local in ["redis://127.0.0.1:6379/", "redis+unix:///run/redis.sock"] {
        write(local);
        assert_eq!(check(None).0, Some(0), "{local}");
    }

    let out = Command::new(env!("CARGO_BIN_EXE_ws2fcgi"))
        .args(["--listen", "127.0.0.1:0", "--fpm", "unix:/run/php.sock"])
        .args(["--script", "/srv/app/ws.php"])
        .args(["--cluster", "redis://redis.internal.example:6379/"])
        .env_remove("WS2FCGI_CLUSTER_SECRET")
        .output()
        .expect("run ws2fcgi");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("cluster.secret"), "{stderr}");
}
