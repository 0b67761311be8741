//! Sockets refused at `accept` (every slot taken, or too many unfinished
//! handshakes from one address): a fixed HTTP answer, a short linger so the
//! client reads it, and a log line at most every [`REFUSAL_LOG_EVERY`].

use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::task::TaskTracker;

use crate::context::Context;
use crate::limits::{Lingering, Refusal};

/// How long a socket refused at `accept` stays open to deliver its answer
/// (and read the request it may be sending, so closing does not reset it).
const REFUSAL_LINGER: Duration = Duration::from_secs(2);
/// Most request bytes read from a refused socket before it is closed.
const REFUSAL_READ_MAX: usize = 64 * 1024;
/// Refusals at `accept` are logged at most this often per listener; the
/// metrics count every one.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// The answer to a socket refused at `accept` because every socket is taken.
const ANSWER_FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: text/plain; charset=utf-8\r\nRetry-After: 5\r\nContent-Length: 21\r\n\
Connection: close\r\n\r\ntoo many connections\n";
/// The answer to a socket refused at `accept` because its address has
/// `limits.max_handshakes_per_ip` unfinished handshakes.
const ANSWER_HANDSHAKES: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\n\
Content-Type: text/plain; charset=utf-8\r\nRetry-After: 5\r\nContent-Length: 49\r\n\
Connection: close\r\n\r\ntoo many unfinished handshakes from this address\n";

/// Answers a socket refused at `accept` with its refusal and closes it,
/// lingering (within the cap) so the client reads the answer.
pub(super) fn refuse<S>(
    stream: S,
    refusal: Refusal,
    counted: Option<std::net::IpAddr>,
    ctx: &Context,
    tracker: &TaskTracker,
    refusals: &mut RefusalLog,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    ctx.metrics.refused(refusal.kind());
    refusals.note(refusal, counted, ctx);
    let answer = match refusal {
        Refusal::Handshakes => ANSWER_HANDSHAKES,
        Refusal::Total | Refusal::PerIp => ANSWER_FULL,
    };
    match ctx.slots.linger() {
        Some(lingering) => {
            tracker.spawn(answer_and_close(stream, answer, lingering));
        }
        None => {
            // Past the lingering cap: one non-blocking write (a fresh
            // socket's send buffer takes it whole), then closed at once.
            let mut stream = stream;
            let _ = stream.write_all(answer).now_or_never();
        }
    }
}

/// Writes a refusal and closes the socket, reading (and discarding) what
/// the client sends meanwhile so the close does not reset the connection
/// before the client read the answer; [`REFUSAL_LINGER`] at most.
async fn answer_and_close<S>(mut stream: S, answer: &'static [u8], _lingering: Lingering)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        stream.write_all(answer).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 2048];
        let mut read = 0;
        while read < REFUSAL_READ_MAX {
            match stream.read(&mut sink).await? {
                0 => break,
                n => read += n,
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, exchange).await;
}

/// Logs refusals at `accept` at most once every [`REFUSAL_LOG_EVERY`].
#[derive(Default)]
pub(super) struct RefusalLog {
    last: Option<Instant>,
    since: u64,
}

impl RefusalLog {
    pub(super) fn note(&mut self, refusal: Refusal, peer: Option<std::net::IpAddr>, ctx: &Context) {
        self.since += 1;
        if self.last.is_some_and(|t| t.elapsed() < REFUSAL_LOG_EVERY) {
            return;
        }
        let refused = std::mem::take(&mut self.since);
        self.last = Some(Instant::now());
        let peer = peer.map(|p| p.to_string()).unwrap_or_default();
        match refusal {
            Refusal::Handshakes => tracing::warn!(
                refused,
                %peer,
                "sockets refused with 429: limits.max_handshakes_per_ip reached"
            ),
            Refusal::Total | Refusal::PerIp => tracing::warn!(
                refused,
                in_use = ctx.slots.in_use(),
                "sockets refused with 503: max_connections reached (handshakes and connections)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ANSWER_FULL, ANSWER_HANDSHAKES};

    #[test]
    fn refusals_at_accept_are_whole_http_answers() {
        for answer in [ANSWER_FULL, ANSWER_HANDSHAKES] {
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut parsed = httparse::Response::new(&mut headers);
            let head = match parsed.parse(answer) {
                Ok(httparse::Status::Complete(n)) => n,
                other => panic!("{other:?}"),
            };
            let length: usize = parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .unwrap();
            assert_eq!(
                head + length,
                answer.len(),
                "{}",
                String::from_utf8_lossy(answer)
            );
        }
    }
}
