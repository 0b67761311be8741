//! The small HTTP/1 server behind the daemon's own endpoints: the admin
//! listener and the HTTP control endpoint.
//!
//! One task accepts; each connection is served by hyper in its own task, with
//! a bound on how long a client may take to send a request head. Accept errors
//! (out of file descriptors) pause instead of spinning.

use std::convert::Infallible;
use std::future::Future;
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

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `handler` on `listener` until the task set is aborted; `name`
/// labels the log lines.
pub fn spawn<H, F>(
    listener: TcpListener,
    name: &'static str,
    ctx: Arc<Context>,
    tasks: &mut JoinSet<()>,
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
            clients.spawn(async move {
                let service = service_fn(move |req| {
                    let answer = handler(ctx.clone(), req);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let mut builder = http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT);
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
