mod support;
use support::*;

#[tokio::test]
async fn echo_round_trip() {
    let fpm = Fpm::start(2);
    let daemon = Daemon::start(config(fpm.addr(), "echo.php")).await;
    let mut ws = connect(&daemon.url("/")).await;
    let hello = recv_text(&mut ws).await;
    assert!(hello.starts_with("hello "), "{hello}");
    send_text(&mut ws, "ping").await;
    assert_eq!(recv_text(&mut ws).await, "ping");
    daemon.shutdown().await;
}
