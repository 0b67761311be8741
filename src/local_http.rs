//! The small HTTP/1 server behind the daemon's own endpoints: the admin
//! listener and the HTTP control endpoint.
//!
//! One task accepts; each connection is served by hyper in its own task, with
//! a bound on how long a client may take to send a request head, also between
//! requests on a kept-alive connection (past it the connection is closed
//! without an answer). Each request carries the address its connection came
//! in on ([`LocalAddr`]). Accept errors (out of file descriptors) pause
//! instead of spinning.
//!
//! Each endpoint serves at most `max_clients` connections at a time (the
//! admin listener 16, the HTTP control endpoint 64). Past it the endpoint
//! stops accepting: new connections wait in the kernel's listen queue,
//! holding no descriptor of the daemon, until a connection ends (an idle one
//! within its head timeout).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::context::Context;

/// How long a client of the admin listener may take to send a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A request extension: the local address its connection was accepted on
/// (the listener's own, or the interface's when it is bound to `0.0.0.0`).
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub SocketAddr);
/// Pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often, at most, an endpoint logs that it is at `max_clients`.
const FULL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Serves `handler` on `listener`, `max_clients` connections at a time, until
/// the task set is aborted (or, after a SIGUSR2 handover, stops accepting
/// and lets its clients finish); `name` labels the log lines; `head_timeout` is
/// read for each new connection.
pub fn spawn<H, F>(
    listener: TcpListener,
    name: &'static str,
    max_clients: usize,
    ctx: Arc<Context>,
    tasks: &mut JoinSet<()>,
    head_timeout: fn(&Context) -> Duration,
    handler: H,
) where
    H: Fn(Arc<Context>, Request<Incoming>) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tasks.spawn(async move {
        let mut clients = JoinSet::new();
        let room = Arc::new(Semaphore::new(max_clients));
        let mut full_logged: Option<std::time::Instant> = None;
        loop {
            let permit = match room.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    if full_logged.is_none_or(|t| t.elapsed() >= FULL_LOG_EVERY) {
                        full_logged = Some(std::time::Instant::now());
                        tracing::warn!(
                            endpoint = name,
                            max_clients,
                            "endpoint serves its maximum of connections; new ones wait"
                        );
                    }
                    match room.clone().acquire_owned().await {
                        Ok(permit) => permit,
                        Err(_) => return, // never closed
                    }
                }
            };
            while clients.try_join_next().is_some() {}
            let accepted = tokio::select! {
                // The successor accepts from now on; our clients finish.
                () = ctx.handover.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, _) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(endpoint = name, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let ctx = ctx.clone();
            let local = stream.local_addr().ok();
            clients.spawn(async move {
                let _permit = permit; // one of `max_clients`, until the connection ends
                let timeout = head_timeout(&ctx);
                let service = service_fn(move |mut req: Request<Incoming>| {
                    if let Some(local) = local {
                        req.extensions_mut().insert(LocalAddr(local));
                    }
                    let answer = handler(ctx.clone(), req);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let mut builder = http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(timeout);
                if let Err(e) = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(endpoint = name, error = %e, "connection failed");
                }
            });
        }
        drop(listener);
        while clients.join_next().await.is_some() {}
    });
}
