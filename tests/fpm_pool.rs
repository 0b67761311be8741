//! The FastCGI pool against a real php-fpm with fewer workers than pool slots.
mod support;

use std::time::Duration;

use support::*;

/// pool_size 8 against pm.max_children 2: idle keep-alive connections pin
/// both workers; a request on a third connection must not wait for them
/// until request_timeout. Every client gets its answers well before that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_pool_slots_than_workers_does_not_stall() {
    let fpm = Fpm::start(2);
    let mut config = config(fpm.addr(), "echo.php");
    config.fpm.pool_size = 8;
    config.fpm.request_timeout = Duration::from_secs(30);
    let daemon = Daemon::start(config).await;
    let mut clients = Vec::new();
    for i in 0..6 {
        let url = daemon.url("/");
        clients.push(tokio::spawn(async move {
            let mut ws = connect(&url).await;
            let _hello = recv_text(&mut ws).await;
            for j in 0..20 {
                let text = format!("{i}-{j}");
                send_text(&mut ws, &text).await;
                assert_eq!(recv_text(&mut ws).await, text);
            }
            ws
        }));
    }
    let all = async {
        let mut open = Vec::new();
        for c in clients {
            open.push(c.await.expect("client task"));
        }
        open
    };
    let open = tokio::time::timeout(Duration::from_secs(15), all)
        .await
        .expect("a request waited for a php-fpm worker pinned by an idle connection");
    drop(open);
    daemon.shutdown().await;
}
