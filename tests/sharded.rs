//! Issue 15, goal 3 — a core per shard (`runtime = "sharded"`) and the
//! broadcast fan-out's `fanout_delay`.
//!
//! Real php-fpm (`tests/php/echo.php`, `tests/php/control.php`), the daemon
//! in-process on 127.0.0.1:0. The other suites run in the sharded runtime
//! too (`WS2FCGI_RUNTIME=sharded`, a part of `scripts/test`); these check
//! what only sharding has: several shards serving at once, the pool split
//! among them, and broadcasts woken once per shard.

#[allow(dead_code)]
mod control_support;
mod support;

use std::time::Duration;

use futures_util::future::join_all;
use ws2fcgi::config::RuntimeKind;

use control_support::{Setup, expect_text};
use support::{Daemon, Fpm, read_until_end, recv_text, send_text};

/// Members read until `end`; each must get exactly `sent`, in order.
async fn publish_and_check(setup: &Setup, members: usize, messages: usize) {
    let mut joined = Vec::with_capacity(members);
    for _ in 0..members / 25 {
        joined.extend(join_all((0..25).map(|_| setup.member("join=room"))).await);
    }
    let mut control = setup.control().await;
    assert_eq!(control.presence("room").await.len(), members);
    let readers: Vec<_> = joined
        .into_iter()
        .map(|(ws, id)| read_until_end(ws, id))
        .collect();
    let sent: Vec<String> = (0..messages).map(|i| format!("message {i:03}")).collect();
    for text in &sent {
        assert_eq!(control.publish("room", text).await, members as u64);
    }
    assert_eq!(control.publish("room", "end").await, members as u64);
    for reader in readers {
        let (id, got) = reader.await.expect("reader task");
        assert_eq!(got, sent, "member {id} got a different sequence");
    }
}

/// Two shards, 200 members spread over them by the kernel's accepts: every
/// publish reaches every member once and in order, with the members' writers
/// woken by their shards' lanes, at once and after a held `fanout_delay`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_every_member_of_every_shard_in_order() {
    for delay in [Duration::ZERO, Duration::from_millis(5)] {
        let setup = Setup::start(4, |config| {
            config.runtime = RuntimeKind::Sharded;
            config.shards = 2;
            config.fpm.pool_size = 4;
            config.fanout_delay = delay;
        })
        .await;
        assert_eq!(setup.daemon.ctx.fpm.shares().len(), 2, "the pool is split");
        publish_and_check(&setup, 200, 50).await;
        setup.daemon.shutdown().await;
    }
}

/// `fanout_delay` on the shared runtime: one lane on the runtime, the same
/// guarantees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delay_on_the_shared_runtime_keeps_every_message_in_order() {
    let setup = Setup::start(4, |config| {
        config.runtime = RuntimeKind::Shared;
        config.fpm.pool_size = 4;
        config.fanout_delay = Duration::from_millis(20);
    })
    .await;
    assert_eq!(setup.daemon.ctx.fpm.shares().len(), 1, "one pool");
    publish_and_check(&setup, 100, 30).await;
    setup.daemon.shutdown().await;
}

/// 32 clients at once echo through PHP on two shards with two FastCGI
/// connections each (`fpm.pool_size` 4 split in two); none waits for another
/// shard's connections, none is refused, and the shutdown drains them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shard_echoes_through_its_share_of_the_pool() {
    let fpm = Fpm::start(4);
    let mut config = support::config(fpm.addr(), "echo.php");
    config.runtime = RuntimeKind::Sharded;
    config.shards = 2;
    config.fpm.pool_size = 4;
    let daemon = Daemon::start(config).await;
    let url = daemon.url("/");
    let clients = (0..32).map(|c| {
        let url = url.clone();
        async move {
            let mut ws = support::connect(&url).await;
            assert!(
                recv_text(&mut ws).await.starts_with("hello "),
                "the open's answer"
            );
            for i in 0..20 {
                let text = format!("client {c} message {i}");
                send_text(&mut ws, &text).await;
                expect_text(&mut ws, &text, "the echo").await;
            }
            support::close(ws).await;
        }
    });
    join_all(clients).await;
    assert_eq!(daemon.ctx.fpm.shares().len(), 2);
    let ctx = daemon.ctx.clone();
    support::poll_until(
        Duration::from_secs(30),
        "every close event finished",
        || (ctx.hub.connection_count() == 0 && ctx.fpm.busy_count() == 0).then_some(()),
    )
    .await;
    daemon.shutdown().await;
}
