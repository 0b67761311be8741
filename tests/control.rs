//! Issue 3 — PHP pushes through the control socket: channels, presence,
//! close, malformed input, slow consumers, socket permissions and the HTTP
//! endpoint.
//!
//! Every test runs a real php-fpm whose handler, `tests/php/control.php`,
//! pushes with the real PHP client (`php/Ws2fcgi.php`), and the daemon
//! in-process on 127.0.0.1:0 with its control socket in a temp directory.
//! Helpers are in `tests/control_support/`.

mod control_support;
mod support;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use futures_util::SinkExt;
use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use control_support::{
    Control, Deadline, Setup, Stalled, expect_quiet, expect_text, http, http_exchange, members,
    php_call,
};
use support::{
    read_until_end, read_until_end_counting, recv_binary, recv_close, recv_text, send_text,
};

/// An id in the daemon's format that no connection has.
const NOBODY: &str = "0000000000000000000000000000000000000000";

fn ids(members: &[(String, Value)]) -> Vec<&str> {
    members.iter().map(|(id, _)| id.as_str()).collect()
}

fn sorted(mut list: Vec<&str>) -> Vec<&str> {
    list.sort();
    list
}

/// A message published from one member's handler reaches all 200 members of
/// the channel exactly once and in publish order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_publish_reaches_200_members_once_and_in_order() {
    const MEMBERS: usize = 200;
    const MESSAGES: usize = 20;
    let setup = Setup::start(8, |_| {}).await;
    let mut members = Vec::with_capacity(MEMBERS);
    for _ in 0..MEMBERS / 20 {
        members.extend(join_all((0..20).map(|_| setup.member("join=room"))).await);
    }
    let mut control = setup.control().await;
    assert_eq!(control.presence("room").await.len(), MEMBERS);

    let (mut sender, _) = members.remove(0);
    let readers: Vec<_> = members
        .into_iter()
        .map(|(ws, id)| read_until_end(ws, id))
        .collect();
    let sent: Vec<String> = (0..MESSAGES).map(|i| format!("message {i:02}")).collect();
    for text in &sent {
        send_text(&mut sender, text).await;
    }
    // The sender is a member too; once it has all 20, all 20 were published.
    for text in &sent {
        expect_text(&mut sender, text, "the sender").await;
    }
    assert_eq!(control.publish("room", "end").await, MEMBERS as u64);
    expect_text(&mut sender, "end", "the sender").await;
    for reader in readers {
        let (id, got) = reader.await.expect("reader task");
        assert_eq!(got, sent, "member {id} got a different sequence");
    }
    let stats = control.stats().await;
    assert!(
        stats["publishes"].as_u64() >= Some(MESSAGES as u64 + 1),
        "{stats}"
    );
}

/// `except` leaves out the sender, or a list of connections, whether PHP or
/// the test publishes.
#[tokio::test]
async fn except_leaves_out_one_connection_or_a_list() {
    let setup = Setup::start(4, |_| {}).await;
    let mut control = setup.control().await;
    let (mut a, ida) = setup.member("join=room").await;
    let (mut b, idb) = setup.member("join=room").await;
    let (mut c, idc) = setup.member("join=room").await;

    let answer = php_call(
        &mut a,
        "publish",
        json!({"channel": "room", "data": "not for a", "except": "$self"}),
    )
    .await;
    assert_eq!(answer, json!({"result": 2}));
    expect_text(&mut b, "not for a", "b").await;
    expect_text(&mut c, "not for a", "c").await;
    expect_quiet(&mut control, &mut a, &ida, "a, the sender").await;

    let answer = php_call(
        &mut a,
        "publish",
        json!({"channel": "room", "data": "only b", "except": ["$self", idc]}),
    )
    .await;
    assert_eq!(answer, json!({"result": 1}));
    expect_text(&mut b, "only b", "b").await;
    expect_quiet(&mut control, &mut a, &ida, "a, excepted").await;
    expect_quiet(&mut control, &mut c, &idc, "c, excepted").await;

    // From the control socket: one id, then a list.
    let reply = control
        .ok(&json!({"op": "publish", "channel": "room", "data": "not for c", "except": idc}))
        .await;
    assert_eq!(reply, json!({"ok": true, "delivered": 2}));
    expect_text(&mut a, "not for c", "a").await;
    expect_text(&mut b, "not for c", "b").await;
    expect_quiet(&mut control, &mut c, &idc, "c, excepted").await;
    let reply = control
        .ok(&json!({"op": "publish", "channel": "room", "data": "only c", "except": [ida, idb, NOBODY]}))
        .await;
    assert_eq!(reply["delivered"], 1);
    expect_text(&mut c, "only c", "c").await;
    expect_quiet(&mut control, &mut a, &ida, "a, excepted").await;
    expect_quiet(&mut control, &mut b, &idb, "b, excepted").await;
}

/// `send` reaches one connection or a list, from the socket and from PHP;
/// ids that are not (or no longer) connected count for nothing.
#[tokio::test]
async fn send_to_one_and_to_a_list() {
    let setup = Setup::start(4, |_| {}).await;
    let mut control = setup.control().await;
    let (mut a, ida) = setup.member("").await;
    let (mut b, idb) = setup.member("").await;
    let (mut c, idc) = setup.member("").await;

    assert_eq!(control.send(json!(idb), "to b").await, 1);
    expect_text(&mut b, "to b", "b").await;
    assert_eq!(control.send(json!([idb, idc]), "to b and c").await, 2);
    expect_text(&mut b, "to b and c", "b").await;
    expect_text(&mut c, "to b and c", "c").await;
    assert_eq!(
        control
            .send(json!([idc, NOBODY, "not-an-id"]), "to c")
            .await,
        1
    );
    expect_text(&mut c, "to c", "c").await;
    // A connection listed twice still gets the message once.
    assert_eq!(control.send(json!([idc, idc]), "once").await, 1);
    expect_text(&mut c, "once", "c").await;
    expect_quiet(&mut control, &mut c, &idc, "c, listed twice").await;
    expect_quiet(&mut control, &mut a, &ida, "a, not addressed").await;

    // From a handler, through the PHP client.
    let answer = php_call(&mut a, "send", json!({"to": idb, "data": "from a"})).await;
    assert_eq!(answer, json!({"result": 1}));
    expect_text(&mut b, "from a", "b").await;
    let request =
        json!({"call": "send", "args": {"to": [idb, idc, "$self"], "data": "from a to all"}});
    send_text(&mut a, &request.to_string()).await;
    // The push is queued while the handler runs, so it comes before the answer.
    expect_text(&mut a, "from a to all", "a").await;
    expect_text(&mut a, r#"{"result":3}"#, "a").await;
    expect_text(&mut b, "from a to all", "b").await;
    expect_text(&mut c, "from a to all", "c").await;
    for (ws, id, who) in [
        (&mut a, &ida, "a"),
        (&mut b, &idb, "b"),
        (&mut c, &idc, "c"),
    ] {
        expect_quiet(&mut control, ws, id, who).await;
    }
}

/// Channels joined and left by headers and by the socket are the same
/// channels: presence and deliveries agree whichever way membership changed.
#[tokio::test]
async fn join_and_leave_by_header_and_by_socket_agree() {
    let setup = Setup::start(4, |_| {}).await;
    let mut control = setup.control().await;
    let (mut a, ida) = setup.member("join=room,other").await;
    let (mut b, idb) = setup.member("").await;

    // Joined by X-WS-Join on open.
    assert_eq!(ids(&control.presence("room").await), [ida.as_str()]);
    assert_eq!(control.publish("room", "1").await, 1);
    expect_text(&mut a, "1", "a").await;

    // Left through the socket: no more deliveries; the other channel stays.
    let reply = control
        .ok(&json!({"op": "leave", "conn": ida, "channel": "room"}))
        .await;
    assert_eq!(reply, json!({"ok": true, "found": true}));
    assert!(control.presence("room").await.is_empty());
    assert_eq!(ids(&control.presence("other").await), [ida.as_str()]);
    assert_eq!(control.publish("room", "2").await, 0);
    expect_quiet(&mut control, &mut a, &ida, "a, left").await;

    // Joined through the socket: deliveries start.
    for id in [&ida, &idb] {
        control
            .ok(&json!({"op": "join", "conn": id, "channel": "room"}))
            .await;
    }
    assert_eq!(
        ids(&control.presence("room").await),
        sorted(vec![&ida, &idb])
    );
    assert_eq!(control.publish("room", "3").await, 2);
    expect_text(&mut a, "3", "a").await;
    expect_text(&mut b, "3", "b").await;

    // Left by X-WS-Leave: applied before the answer reaches the client.
    let request = json!({"call": "leave-header", "args": {"channel": "room"}});
    send_text(&mut a, &request.to_string()).await;
    expect_text(&mut a, "left room", "a").await;
    assert_eq!(ids(&control.presence("room").await), [idb.as_str()]);
    assert_eq!(control.publish("room", "4").await, 1);
    expect_text(&mut b, "4", "b").await;
    expect_quiet(&mut control, &mut a, &ida, "a, left by header").await;

    // Joined and left through the PHP client, from handlers.
    let answer = php_call(&mut a, "join", json!({"conn": "$self", "channel": "room"})).await;
    assert_eq!(
        answer,
        json!({"result": true}),
        "join says the connection was found"
    );
    let answer = php_call(&mut b, "presence", json!({"channel": "room"})).await;
    assert_eq!(
        ids(&members(&answer["result"])),
        sorted(vec![&ida, &idb]),
        "PHP sees the same members"
    );
    php_call(&mut b, "leave", json!({"conn": "$self", "channel": "room"})).await;
    assert_eq!(ids(&control.presence("room").await), [ida.as_str()]);
    assert_eq!(control.publish("room", "5").await, 1);
    expect_text(&mut a, "5", "a").await;
    expect_quiet(&mut control, &mut b, &idb, "b, left through PHP").await;

    // Unknown connections are not an error.
    let reply = control
        .ok(&json!({"op": "join", "conn": NOBODY, "channel": "room"}))
        .await;
    assert_eq!(reply["found"], false);
    assert_eq!(control.presence("room").await.len(), 1);
    let answer = php_call(&mut a, "join", json!({"conn": NOBODY, "channel": "room"})).await;
    assert_eq!(
        answer,
        json!({"result": false}),
        "the PHP client's join: not found"
    );

    // A connection that ends leaves all its channels, and they disappear.
    support::close(a).await;
    let deadline = Deadline::new("a's channels to disappear");
    while !(control.presence("room").await.is_empty() && control.presence("other").await.is_empty())
    {
        deadline.tick().await;
    }
    assert_eq!(control.stats().await["channels"], 0);
}

/// Presence lists every member with the metadata set by X-WS-Meta-* on open
/// and by the meta op (null deletes); PHP sees the same values.
#[tokio::test]
async fn presence_lists_each_members_metadata() {
    let setup = Setup::start(4, |_| {}).await;
    let mut control = setup.control().await;
    let (mut a, ida) = setup
        .member("join=room&meta_user=alice&meta_role=admin")
        .await;
    let (mut b, idb) = setup.member("join=room&meta_user=bob").await;
    let (_c, _) = setup.member("meta_user=carol").await;

    let mut expected = vec![
        (ida.clone(), json!({"user": "alice", "role": "admin"})),
        (idb.clone(), json!({"user": "bob"})),
    ];
    expected.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(control.presence("room").await, expected);

    // The meta op: set, overwrite, delete with null; numbers become strings.
    let reply = control
        .ok(&json!({"op": "meta", "conn": ida, "set": {"typing": "yes", "role": null, "Level": 3}}))
        .await;
    assert_eq!(reply, json!({"ok": true, "found": true}));
    let reply = control
        .ok(&json!({"op": "meta", "conn": NOBODY, "set": {"x": "1"}}))
        .await;
    assert_eq!(reply["found"], false);
    let presence = control.presence("room").await;
    let meta_a = &presence.iter().find(|(id, _)| *id == ida).expect("a").1;
    assert_eq!(
        meta_a,
        &json!({"user": "alice", "typing": "yes", "level": "3"})
    );

    // PHP's next event of a sees the same metadata.
    send_text(&mut a, &json!({"call": "meta-env"}).to_string()).await;
    let env: Value = serde_json::from_str(&recv_text(&mut a).await).expect("JSON");
    assert_eq!(
        env,
        json!({"WS_META_LEVEL": "3", "WS_META_TYPING": "yes", "WS_META_USER": "alice"})
    );

    // The PHP client's meta, from b's handler.
    let answer = php_call(
        &mut b,
        "meta",
        json!({"conn": "$self", "set": {"mood": "happy", "user": null}}),
    )
    .await;
    assert_eq!(
        answer,
        json!({"result": true}),
        "meta says the connection was found"
    );
    let presence = control.presence("room").await;
    let meta_b = &presence.iter().find(|(id, _)| *id == idb).expect("b").1;
    assert_eq!(meta_b, &json!({"mood": "happy"}));

    // The PHP client's presence gives exactly what the socket gives.
    let answer = php_call(&mut b, "presence", json!({"channel": "room"})).await;
    assert_eq!(members(&answer["result"]), presence);
}

/// close through the socket gives the client its code and reason and PHP a
/// close event with them; closing or sending to a gone id is not an error.
#[tokio::test]
async fn close_reaches_the_client_and_php() {
    let setup = Setup::start(4, |_| {}).await;
    let mut control = setup.control().await;
    let (mut a, ida) = setup.member("join=room").await;
    let (mut b, idb) = setup.member("join=room").await;
    let (mut c, idc) = setup.member("").await;

    let reply = control
        .ok(&json!({"op": "close", "conn": ida, "code": 4000, "reason": "kicked"}))
        .await;
    assert_eq!(reply, json!({"ok": true, "closed": true}));
    let frame = recv_close(&mut a).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 4000);
    assert_eq!(frame.reason.as_str(), "kicked");
    let event = setup.log.close_of(&ida).await;
    assert_eq!(event["WS_CLOSE_CODE"], "4000", "{event}");
    assert_eq!(event["WS_CLOSE_REASON"], "kicked", "{event}");

    // Gone, unknown or malformed ids: closed false, delivered 0.
    for conn in [ida.as_str(), NOBODY, "not-an-id"] {
        let reply = control
            .ok(&json!({"op": "close", "conn": conn, "code": 4000}))
            .await;
        assert_eq!(reply, json!({"ok": true, "closed": false}), "{conn}");
    }
    assert_eq!(control.send(json!(ida), "late").await, 0);
    assert_eq!(control.send(json!([ida, idb]), "one of two").await, 1);
    expect_text(&mut b, "one of two", "b").await;
    assert_eq!(ids(&control.presence("room").await), [idb.as_str()]);
    assert_eq!(setup.log.closes_of(&ida).len(), 1, "one close event");

    // From a handler, through the PHP client.
    let answer = php_call(
        &mut b,
        "close",
        json!({"conn": idc, "code": 4001, "reason": "by php"}),
    )
    .await;
    assert_eq!(answer, json!({"result": true}));
    let frame = recv_close(&mut c).await.expect("c close frame");
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4001, "by php")
    );
    assert_eq!(setup.log.close_of(&idc).await["WS_CLOSE_CODE"], "4001");
    let answer = php_call(&mut b, "close", json!({"conn": ida})).await;
    assert_eq!(answer, json!({"result": false}));

    // Without a code: 1000.
    control.ok(&json!({"op": "close", "conn": idb})).await;
    let frame = recv_close(&mut b).await.expect("b close frame");
    assert_eq!(u16::from(frame.code), 1000);
    assert_eq!(setup.log.close_of(&idb).await["WS_CLOSE_CODE"], "1000");
}

/// Every malformed request gets `{"ok":false,"error":…}` and the next line on
/// the same connection still works; pipelined requests are answered in order.
#[tokio::test]
async fn malformed_requests_are_refused_and_the_connection_stays_usable() {
    const LIMIT: usize = 2048;
    let setup = Setup::start(2, |c| c.control.max_line_bytes = LIMIT).await;
    let (mut a, ida) = setup.member("join=room").await;
    let mut control = setup.control().await;
    let good = json!({"op": "presence", "channel": "room"});
    let long_channel = "x".repeat(201);
    let long_reason = "r".repeat(124);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // Not JSON, or not an object.
        (b"not json".to_vec(), "expected"),
        (br#"{"op":"publish","channel":"room""#.to_vec(), "EOF"),
        (b"[1,2]".to_vec(), ""),
        (b"null".to_vec(), ""),
        (br#""stats""#.to_vec(), ""),
        (
            b"{\"op\":\"publish\",\"channel\":\"room\",\"data\":\"\xff\"}".to_vec(),
            "",
        ),
        // Unknown op.
        (br#"{"op":"fly"}"#.to_vec(), "fly"),
        (br#"{"op":""}"#.to_vec(), "unknown variant"),
        (
            br#"{"op":"PUBLISH","channel":"room","data":"x"}"#.to_vec(),
            "PUBLISH",
        ),
        // Missing fields.
        (br#"{"channel":"room","data":"x"}"#.to_vec(), "op"),
        (br#"{"op":"publish","channel":"room"}"#.to_vec(), "data"),
        (br#"{"op":"publish","data":"x"}"#.to_vec(), "channel"),
        (br#"{"op":"send","data":"x"}"#.to_vec(), "to"),
        (br#"{"op":"join","channel":"room"}"#.to_vec(), "conn"),
        (br#"{"op":"leave","conn":"x"}"#.to_vec(), "channel"),
        (br#"{"op":"close"}"#.to_vec(), "conn"),
        (br#"{"op":"meta","conn":"x"}"#.to_vec(), "set"),
        (br#"{"op":"presence"}"#.to_vec(), "channel"),
        // Wrong field types.
        (br#"{"op":5}"#.to_vec(), ""),
        (
            br#"{"op":"publish","channel":5,"data":"x"}"#.to_vec(),
            "invalid type",
        ),
        (
            br#"{"op":"publish","channel":"room","data":["x"]}"#.to_vec(),
            "invalid type",
        ),
        (
            br#"{"op":"publish","channel":"room","data":"x","binary":"yes"}"#.to_vec(),
            "invalid type",
        ),
        (
            br#"{"op":"publish","channel":"room","data":"x","except":5}"#.to_vec(),
            "",
        ),
        (br#"{"op":"send","to":5,"data":"x"}"#.to_vec(), ""),
        (br#"{"op":"send","to":[5],"data":"x"}"#.to_vec(), ""),
        (
            br#"{"op":"close","conn":"x","code":"4000"}"#.to_vec(),
            "invalid type",
        ),
        (
            br#"{"op":"close","conn":"x","code":4000,"reason":7}"#.to_vec(),
            "invalid type",
        ),
        (
            br#"{"op":"meta","conn":"x","set":["user"]}"#.to_vec(),
            "invalid type",
        ),
        (
            br#"{"op":"meta","conn":"x","set":{"user":[1]}}"#.to_vec(),
            "must be a string",
        ),
        // Unknown fields.
        (br#"{"op":"stats","extra":1}"#.to_vec(), "extra"),
        (
            br#"{"op":"publish","channel":"room","data":"x","chanel":"typo"}"#.to_vec(),
            "chanel",
        ),
        (
            br#"{"op":"send","to":"x","data":"x","except":"y"}"#.to_vec(),
            "except",
        ),
        // Bad base64 with binary:true.
        (
            br#"{"op":"publish","channel":"room","data":"not base64!","binary":true}"#.to_vec(),
            "base64",
        ),
        (
            br#"{"op":"send","to":"x","data":"QQ","binary":true}"#.to_vec(),
            "base64",
        ),
        // Bad close codes and reasons.
        (br#"{"op":"close","conn":"x","code":1006}"#.to_vec(), "1006"),
        (br#"{"op":"close","conn":"x","code":1005}"#.to_vec(), "1005"),
        (br#"{"op":"close","conn":"x","code":999}"#.to_vec(), "999"),
        (br#"{"op":"close","conn":"x","code":5000}"#.to_vec(), "5000"),
        (
            br#"{"op":"close","conn":"x","code":70000}"#.to_vec(),
            "invalid value",
        ),
        (
            br#"{"op":"close","conn":"x","code":-1}"#.to_vec(),
            "invalid value",
        ),
        (
            json!({"op": "close", "conn": "x", "code": 4000, "reason": long_reason})
                .to_string()
                .into_bytes(),
            "reason",
        ),
        // Bad channel names.
        (
            br#"{"op":"publish","channel":"","data":"x"}"#.to_vec(),
            "empty",
        ),
        (
            br#"{"op":"publish","channel":"a,b","data":"x"}"#.to_vec(),
            "comma",
        ),
        (
            br#"{"op":"publish","channel":"a\nb","data":"x"}"#.to_vec(),
            "control character",
        ),
        (
            json!({"op": "publish", "channel": long_channel, "data": "x"})
                .to_string()
                .into_bytes(),
            "longer than",
        ),
        (
            br#"{"op":"join","conn":"x","channel":""}"#.to_vec(),
            "empty",
        ),
        (
            br#"{"op":"leave","conn":"x","channel":"a,b"}"#.to_vec(),
            "comma",
        ),
        (br#"{"op":"presence","channel":""}"#.to_vec(), "empty"),
        // Bad metadata names.
        (
            br#"{"op":"meta","conn":"x","set":{"a b":"1"}}"#.to_vec(),
            "metadata name",
        ),
        (
            br#"{"op":"meta","conn":"x","set":{"":"1"}}"#.to_vec(),
            "metadata name",
        ),
    ];
    for (line, needle) in &cases {
        let error = control.refused(line).await;
        assert!(
            error.contains(needle),
            "{:?}: error {error:?} does not mention {needle:?}",
            String::from_utf8_lossy(line)
        );
        let reply = control.ok(&good).await;
        assert_eq!(ids(&members(&reply["members"])), [ida.as_str()]);
    }

    // An oversize line is refused and skipped to its newline; the next line
    // works, whether it comes in a later write or in the same one.
    let overhead = json!({"op": "publish", "channel": "room", "data": ""})
        .to_string()
        .len();
    let line_of = |len: usize| {
        json!({"op": "publish", "channel": "room", "data": "x".repeat(len - overhead)}).to_string()
    };
    let huge = line_of(10 * 1024);
    let error = control.refused(huge.as_bytes()).await;
    assert!(error.contains(&LIMIT.to_string()), "{error}");
    control.ok(&good).await;
    control
        .write_raw(format!("{huge}\n{good}\n").as_bytes())
        .await;
    assert_eq!(control.reply().await["ok"], false);
    assert_eq!(control.reply().await["ok"], true);
    control.refused(line_of(LIMIT + 1).as_bytes()).await;
    // A line of exactly the limit is fine.
    let at_limit = line_of(LIMIT);
    assert_eq!(at_limit.len(), LIMIT);
    control.write_raw(format!("{at_limit}\n").as_bytes()).await;
    assert_eq!(control.reply().await, json!({"ok": true, "delivered": 1}));
    assert_eq!(recv_text(&mut a).await.len(), LIMIT - overhead);

    // Blank lines get no reply, and a blank line after a request does not
    // hold back that request's reply.
    control
        .write_raw(format!("\n  \r\n\n{good}\n").as_bytes())
        .await;
    assert!(control.reply().await["members"].is_array());
    assert!(control.stats().await["connections"].is_number());
    control.write_raw(format!("{good}\n\n").as_bytes()).await;
    assert!(control.reply().await["members"].is_array());
    assert!(control.stats().await["connections"].is_number());

    // Pipelining: 100 requests in one write, 100 replies in order.
    let mut batch = String::new();
    for i in 0..100 {
        batch += &match i % 3 {
            0 => json!({"op": "publish", "channel": "room", "data": format!("p{i}")}),
            1 => json!({"op": format!("op{i}")}),
            _ => good.clone(),
        }
        .to_string();
        batch.push('\n');
    }
    control.write_raw(batch.as_bytes()).await;
    for i in 0..100 {
        let reply = control.reply().await;
        match i % 3 {
            0 => assert_eq!(reply, json!({"ok": true, "delivered": 1}), "reply {i}"),
            1 => {
                assert_eq!(reply["ok"], false, "reply {i}: {reply}");
                let error = reply["error"].as_str().unwrap_or_default();
                assert!(error.contains(&format!("`op{i}`")), "reply {i}: {reply}");
            }
            _ => assert!(reply["members"].is_array(), "reply {i}: {reply}"),
        }
    }
    for i in (0..100).step_by(3) {
        expect_text(&mut a, &format!("p{i}"), "a").await;
    }

    // None of the refused requests reached the client.
    expect_quiet(&mut control, &mut a, &ida, "a").await;

    // A last line cut off by the client's disconnect is never run.
    let mut cut = setup.control().await;
    cut.write_raw(br#"{"op":"publish","channel":"room","data":"cut off"}"#)
        .await;
    assert_eq!(cut.finish().await, b"", "no reply to an unterminated line");
    expect_quiet(&mut control, &mut a, &ida, "a").await;
}

/// A binary publish (base64 with "binary":true) reaches clients as a binary
/// message, byte for byte, from the socket and from PHP.
#[tokio::test]
async fn binary_publish_arrives_byte_exact() {
    let setup = Setup::start(2, |_| {}).await;
    let mut control = setup.control().await;
    let (mut a, _) = setup.member("join=room").await;
    let (mut b, idb) = setup.member("join=room").await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);

    let bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let reply = control
        .ok(&json!({"op": "publish", "channel": "room", "data": b64(&bytes), "binary": true}))
        .await;
    assert_eq!(reply["delivered"], 2);
    assert_eq!(recv_binary(&mut a).await, bytes);
    assert_eq!(recv_binary(&mut b).await, bytes);

    let reply = control
        .ok(&json!({"op": "send", "to": idb, "data": b64(b"\x00\xff\xfe"), "binary": true}))
        .await;
    assert_eq!(reply["delivered"], 1);
    assert_eq!(recv_binary(&mut b).await, b"\x00\xff\xfe");

    let reply = control
        .ok(&json!({"op": "publish", "channel": "room", "data": "", "binary": true}))
        .await;
    assert_eq!(reply["delivered"], 2);
    assert_eq!(recv_binary(&mut a).await, b"");
    assert_eq!(recv_binary(&mut b).await, b"");

    // From a handler: the PHP client's publish(binary: true).
    let from_php: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
    a.send(Message::binary(from_php.clone()))
        .await
        .expect("send");
    assert_eq!(recv_binary(&mut a).await, from_php);
    assert_eq!(recv_binary(&mut b).await, from_php);

    // And text stays text.
    assert_eq!(control.publish("room", "plain").await, 2);
    assert_eq!(recv_text(&mut a).await, "plain");
}

/// A client that stops reading is cut off with 1008 once its queue is full,
/// while the others receive every message, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_cut_off_and_the_others_get_everything() {
    const READERS: usize = 3;
    const SIZE: usize = 4096;
    const MAX: usize = 5000;
    const LAG: usize = 8;
    let setup = Setup::start(2, |c| c.websocket.outbound_queue_bytes = 64 * 1024).await;
    let mut control = setup.control().await;
    let stalled = Stalled::connect(
        setup.daemon.addr,
        &format!("/?{}&join=room", setup.log.query()),
    )
    .await;
    let mut readers = Vec::new();
    let mut progress = Vec::new();
    for _ in 0..READERS {
        let (ws, id) = setup.member("join=room").await;
        let count = Arc::new(AtomicUsize::new(0));
        progress.push(count.clone());
        readers.push(read_until_end_counting(ws, id, count));
    }
    assert_eq!(control.presence("room").await.len(), READERS + 1);

    let message = |i: usize| format!("{i:06}{}", "x".repeat(SIZE - 6));
    let mut sent = 0;
    let mut cut_at = None;
    while sent < MAX && cut_at.is_none_or(|at| sent < at + 100) {
        // The readers are fast consumers by construction: never more than
        // LAG messages (half their queue) behind, however busy the machine.
        let deadline = Deadline::new(format!("the readers to reach message {sent}"));
        while progress
            .iter()
            .any(|n| n.load(Ordering::Relaxed) + LAG < sent)
        {
            deadline.tick().await;
        }
        let delivered = control.publish("room", &message(sent)).await;
        sent += 1;
        match delivered as usize {
            n if n == READERS + 1 => assert!(cut_at.is_none(), "delivered again after cut-off"),
            READERS => {
                cut_at.get_or_insert(sent);
            }
            n => panic!("message {sent} delivered to {n}: a reader was cut off"),
        }
    }
    let cut_at =
        cut_at.unwrap_or_else(|| panic!("{sent} messages of {SIZE} bytes never overflowed"));
    assert_eq!(control.publish("room", "end").await, READERS as u64);
    for reader in readers {
        let (id, got) = reader.await.expect("reader task");
        assert_eq!(got.len(), sent, "reader {id} missed messages");
        for (i, text) in got.iter().enumerate() {
            assert_eq!(
                text[..6],
                format!("{i:06}"),
                "reader {id}: message {i} out of order"
            );
            assert_eq!(text.len(), SIZE);
        }
    }
    let stats = control.stats().await;
    assert!(stats["slow_consumers"].as_u64() >= Some(1), "{stats}");
    let event = setup.log.close_of(&stalled.id).await;
    assert_eq!(event["WS_CLOSE_CODE"], "1008", "{event}");
    assert_eq!(event["WS_CLOSE_REASON"], "slow consumer", "{event}");
    let presence = control.presence("room").await;
    assert!(
        !ids(&presence).contains(&stalled.id.as_str()),
        "the slow consumer (cut off after {cut_at} messages) left the channel"
    );
}

/// The control socket gets the configured mode (and group); a stale socket
/// file is replaced at start; a live one (another daemon's) is an error.
#[tokio::test]
async fn control_socket_permissions_stale_and_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gid = nix::unistd::getgid().as_raw();
    for (mode, bits) in [("0600", 0o600), ("0660", 0o660)] {
        let path = dir.path().join(format!("{mode}.sock"));
        let config = ws2fcgi::config::ControlConfig {
            socket: Some(path.clone()),
            mode: mode.into(),
            group: Some(gid.to_string()),
            ..Default::default()
        };
        let _listener = ws2fcgi::control::bind(&path, &config)
            .await
            .expect("bind control socket");
        let meta = std::fs::metadata(&path).expect("socket file");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o7777, bits, "mode {mode}");
        assert_eq!(meta.gid(), gid);
    }
    assert_eq!(ws2fcgi::config::ControlConfig::default().mode, "0660");

    // Through a running daemon, as configured: 0600, and it answers.
    let fpm = support::Fpm::start(1);
    let path = dir.path().join("daemon.sock");
    let mut config = support::config(fpm.addr(), "control.php");
    config.control.socket = Some(path.clone());
    config.control.mode = "0600".into();
    // A crashed daemon's socket file is in the way.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind stale"));
    assert!(path.exists(), "the stale file stays");
    let daemon = support::Daemon::start_with(config.clone(), None).await;
    let mode = std::fs::metadata(&path)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let mut control = Control::connect(&path).await;
    assert_eq!(control.stats().await["connections"], 0);

    // A second daemon on the same path is refused; the first keeps serving.
    let err = ws2fcgi::control::bind(&path, &config.control)
        .await
        .expect_err("a live control socket must not be taken over");
    assert!(
        matches!(err, ws2fcgi::control::SetupError::Bind { .. }),
        "{err}"
    );
    assert_eq!(control.stats().await["ok"], true);
    let mut another = Control::connect(&path).await;
    another.stats().await;
    daemon.shutdown().await;
}

/// The HTTP endpoint takes the socket's requests as POST bodies, with and
/// without a bearer token, and refuses what it must with the right status.
#[tokio::test]
async fn http_endpoint_with_and_without_token() {
    const TOKEN: &str = "s3cret-t0ken";
    let setup = Setup::start_http(2, |c| {
        c.control.http_token = Some(TOKEN.into());
        c.control.max_line_bytes = 2048;
    })
    .await;
    let addr = setup.http.expect("http endpoint");
    let mut control = setup.control().await;
    let (mut a, ida) = setup.member("join=room").await;
    let publish = br#"{"channel":"room","data":"over http"}"#;

    for token in [None, Some("wrong"), Some("s3cret-t0ke"), Some("")] {
        let reply = http(addr, "POST", "/publish", token, publish).await;
        assert_eq!(reply.status, 401, "token {token:?}: {}", reply.body);
        assert!(
            reply.has_header("www-authenticate", "Bearer"),
            "{}",
            reply.head
        );
        assert_eq!(reply.json()["ok"], false);
    }
    // Unauthenticated requests learn nothing about paths or methods.
    assert_eq!(http(addr, "GET", "/nope", None, b"").await.status, 401);
    expect_quiet(&mut control, &mut a, &ida, "a, after refused publishes").await;

    let token = Some(TOKEN);
    let reply = http(addr, "POST", "/publish", token, publish).await;
    assert_eq!(
        (reply.status, reply.json()),
        (200, json!({"ok": true, "delivered": 1}))
    );
    expect_text(&mut a, "over http", "a").await;
    let body = json!({"op": "publish", "channel": "room", "data": "via /"}).to_string();
    let reply = http(addr, "POST", "/", token, body.as_bytes()).await;
    assert_eq!(
        (reply.status, reply.json()),
        (200, json!({"ok": true, "delivered": 1}))
    );
    expect_text(&mut a, "via /", "a").await;
    let body = json!({"to": ida, "data": "sent"}).to_string();
    let reply = http(addr, "POST", "/send", token, body.as_bytes()).await;
    assert_eq!(reply.json()["delivered"], 1);
    expect_text(&mut a, "sent", "a").await;
    let reply = http(addr, "POST", "/presence", token, br#"{"channel":"room"}"#).await;
    assert_eq!(ids(&members(&reply.json()["members"])), [ida.as_str()]);
    let reply = http(addr, "POST", "/stats", token, b"{}").await;
    assert_eq!(reply.json()["connections"], 1);

    let reply = http(addr, "POST", "/nope", token, publish).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    let reply = http(addr, "GET", "/publish", token, b"").await;
    assert_eq!(reply.status, 405, "{}", reply.body);
    assert!(reply.has_header("allow", "POST"), "{}", reply.head);
    let big = json!({"channel": "room", "data": "x".repeat(4096)}).to_string();
    let reply = http(addr, "POST", "/publish", token, big.as_bytes()).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(reply.json()["ok"], false);
    for (path, body, needle) in [
        ("/publish", "not json", "expected"),
        ("/publish", r#"{"channel":"room"}"#, "data"),
        (
            "/publish",
            r#"{"op":"send","to":"x","data":"x"}"#,
            "differs",
        ),
        ("/publish", r#"{"channel":"","data":"x"}"#, "empty"),
        ("/", r#"{"op":"fly"}"#, "fly"),
        ("/", r#"{"channel":"room","data":"x"}"#, "op"),
        ("/close", r#"{"conn":"x","code":1006}"#, "1006"),
        ("/stats", r#"{"extra":1}"#, "extra"),
    ] {
        let reply = http(addr, "POST", path, token, body.as_bytes()).await;
        let shown = body;
        assert_eq!(reply.status, 400, "{path} {shown}: {}", reply.body);
        let json = reply.json();
        assert_eq!(json["ok"], false, "{path} {shown}");
        let error = json["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(needle),
            "{path} {shown}: {error:?} lacks {needle:?}"
        );
    }
    expect_quiet(&mut control, &mut a, &ida, "a, after refused requests").await;

    // Without a token configured, no header is needed.
    let open = Setup::start_http(1, |_| {}).await;
    let reply = http(open.http.expect("http"), "POST", "/publish", None, publish).await;
    assert_eq!(
        (reply.status, reply.json()),
        (200, json!({"ok": true, "delivered": 0}))
    );
}

/// The HTTP endpoint refuses, with and without a token, what a web page
/// could make a browser send (a cross-site POST, or any request after DNS
/// rebinding): no or another `Host`, an `Origin`, a type other than JSON. A
/// slow body gets 408 and a slow head a closed connection; requests of a
/// program on the machine still work.
#[tokio::test]
async fn http_endpoint_refuses_what_a_browser_could_send() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const TOKEN: &str = "s3cret-t0ken";
    let body = r#"{"channel":"room","data":"over http"}"#;
    for token in [None, Some(TOKEN)] {
        let setup = Setup::start_http(1, |c| {
            c.control.http_token = token.map(Into::into);
            c.control.http_timeout = Duration::from_secs(1);
        })
        .await;
        let addr = setup.http.expect("http endpoint");
        let port = addr.port();
        let mut control = setup.control().await;
        let (mut a, ida) = setup.member("join=room").await;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = |headers: &str| {
            format!(
                "POST /publish HTTP/1.1\r\n{headers}{auth}Content-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            )
        };
        let ours = format!("Host: {addr}\r\n");
        let json = "Content-Type: application/json\r\n";
        for (headers, status, needle) in [
            (json.to_owned(), 400, "Host"),
            (format!("Host: evil\"x\r\n{json}"), 400, "Host"),
            // DNS rebinding: the attacker's name, resolved to 127.0.0.1.
            (
                format!("Host: attacker.example:{port}\r\n{json}"),
                421,
                "Host",
            ),
            (
                format!("Host: localhost.attacker.example:{port}\r\n{json}"),
                421,
                "Host",
            ),
            (
                format!("Host: 127.0.0.1:{}\r\n{json}", port ^ 1),
                421,
                "Host",
            ),
            (
                format!("{ours}{json}Origin: https://attacker.example\r\n"),
                403,
                "Origin",
            ),
            (format!("{ours}{json}Origin: null\r\n"), 403, "Origin"),
            (
                format!("{ours}{json}Origin: http://{addr}\r\n"),
                403,
                "Origin",
            ),
            // What a form or a simple fetch() can send without a preflight.
            (ours.clone(), 415, "application/json"),
            (
                format!("{ours}Content-Type: text/plain\r\n"),
                415,
                "application/json",
            ),
            (
                format!("{ours}Content-Type: application/x-www-form-urlencoded\r\n"),
                415,
                "application/json",
            ),
            (
                format!("{ours}Content-Type: multipart/form-data; boundary=x\r\n"),
                415,
                "application/json",
            ),
        ] {
            let reply = http_exchange(addr, request(&headers).as_bytes()).await;
            assert_eq!(
                reply.status, status,
                "token {token:?}, {headers:?}: {}",
                reply.body
            );
            let error = reply.json()["error"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(error.contains(needle), "{headers:?}: {error}");
        }
        expect_quiet(&mut control, &mut a, &ida, "a, after refused requests").await;

        // A program on the machine: the endpoint's address, or loopback by name.
        for host in [
            addr.to_string(),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ] {
            let headers =
                format!("Host: {host}\r\nContent-Type: application/json; charset=utf-8\r\n");
            let reply = http_exchange(addr, request(&headers).as_bytes()).await;
            assert_eq!(
                (reply.status, reply.json()),
                (200, json!({"ok": true, "delivered": 1})),
                "Host: {host}"
            );
            expect_text(&mut a, "over http", &host).await;
        }

        // A body that stops halfway: 408 after control.http_timeout, and the
        // connection is closed.
        let half = format!(
            "POST /publish HTTP/1.1\r\n{ours}{json}{auth}Content-Length: {}\r\n\r\n{}",
            body.len(),
            &body[..10]
        );
        let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
        slow.write_all(half.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer))
            .await
            .expect("408 and a close within 10 s")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("body not received within 1s"), "{answer}");
        // A head that stops halfway: the connection is closed unanswered.
        let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"POST /publish HTTP/1.1\r\nHost: ")
            .await
            .expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer))
            .await
            .expect("a close within 10 s")
            .expect("read");
        assert_eq!(String::from_utf8_lossy(&answer), "");
        expect_quiet(&mut control, &mut a, &ida, "a, after slow requests").await;
    }
}

/// Handlers call the control socket while every php-fpm worker is busy, and
/// nothing deadlocks: 2 workers, 2 pooled connections, 10 clients whose
/// every message is published by its handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_publish_while_every_worker_is_busy() {
    const CLIENTS: usize = 10;
    const EACH: usize = 5;
    let setup = Setup::start(2, |c| c.fpm.pool_size = 2).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(setup.member("join=room").await);
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(k, (mut ws, id))| {
            tokio::spawn(async move {
                for j in 0..EACH {
                    send_text(&mut ws, &format!("{k}:{j}")).await;
                }
                let mut got = Vec::new();
                for _ in 0..CLIENTS * EACH {
                    got.push(recv_text(&mut ws).await);
                }
                (id, got)
            })
        })
        .collect();
    for task in tasks {
        let (id, got) = task.await.expect("client task");
        for k in 0..CLIENTS {
            let from_k: Vec<&str> = got
                .iter()
                .map(String::as_str)
                .filter(|m| m.starts_with(&format!("{k}:")))
                .collect();
            let expected: Vec<String> = (0..EACH).map(|j| format!("{k}:{j}")).collect();
            assert_eq!(from_k, expected, "{id}: messages of client {k}");
        }
    }
    let mut control = setup.control().await;
    let stats = control.stats().await;
    assert_eq!(stats["messages_in"], CLIENTS * EACH, "{stats}");
}
