//! The small HTTP/1 server behind the daemon's own endpoints: the admin
//! listener and the HTTP control endpoint.
//!
//! One task accepts; each connection is served by hyper in its own task, with
//! a bound on how long a client may take to send a request head (past it the
//! connection is closed without an answer). Each request carries the address
//! its connection came in on ([`LocalAddr`]). Accept errors (out of file
//! descriptors) pause instead of spinning.

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

/// Serves `handler` on `listener` until the task set is aborted; `name`
/// labels the log lines; `head_timeout` is read for each new connection.
pub fn spawn<H, F>(
    listener: TcpListener,
    name: &'static str,
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
        loop {
            let (stream, _) = match listener.accept().await {
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
            while clients.try_join_next().is_some() {}
        }
    });
}
