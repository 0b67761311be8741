//! A control client of the old process after a SIGUSR2 handover: its
//! requests run in the new process, which has the channels' history from the
//! moment the control gate closed (`handover/gate.rs`). The rest of the
//! connection is relayed, request by request, to a connection of this
//! process's own to the control socket, which only the new process accepts
//! from now on; the client gets its replies in order, as before. A PHP
//! worker's persistent connection keeps working this way.
//!
//! When the old process exits ([`Gate::leave`]) each relay stops taking
//! requests at a line boundary, passes on the replies still owed, and
//! closes: a request the client sent that got no reply did not run, in
//! either process, and may be sent again on a new connection.
//!
//! ```text
//! client ── lines ──▶ old: gate closed ── whole lines ──▶ control socket ──▶ new
//!        ◀─ replies ─                   ◀──── replies ───                ◀──
//! ```

use std::path::Path;

use tokio::io::{
    AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader, BufWriter,
};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::handover::gate::Gate;

/// Whole lines cut from a byte stream, as the control socket reads them:
/// blank lines dropped (they get no reply), a line over `max` replaced by
/// one that is over it too (so the new process refuses it the same way,
/// in its turn), a last line without its newline never passed on.
struct Lines {
    max: usize,
    partial: Vec<u8>,
    too_long: bool,
}

impl Lines {
    /// Appends the whole lines of `bytes` to `out`; returns how many.
    fn cut(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> u64 {
        let mut lines = 0;
        let mut rest = bytes;
        while let Some(at) = rest.iter().position(|&b| b == b'\n') {
            self.take(&rest[..at]);
            if self.too_long {
                out.resize(out.len() + self.max + 1, b' ');
                out.push(b'\n');
                lines += 1;
            } else if !self.partial.trim_ascii().is_empty() {
                out.extend_from_slice(&self.partial);
                out.push(b'\n');
                lines += 1;
            }
            self.partial.clear();
            self.too_long = false;
            rest = &rest[at + 1..];
        }
        self.take(rest);
        lines
    }

    fn take(&mut self, chunk: &[u8]) {
        if self.too_long {
            return;
        }
        if self.partial.len() + chunk.len() > self.max {
            self.too_long = true;
            self.partial.clear();
        } else {
            self.partial.extend_from_slice(chunk);
        }
    }
}

/// Requests relayed and not answered yet, at most: their replies fit in the
/// socket's buffer, so the new process never waits to write one while this
/// relay waits to write it a request.
const WINDOW: u64 = 512;

/// How long a relay that stopped reads and drops what its client still
/// sends, waiting for it to close.
const DISCARD_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Relays the client from `line` (read, not run) on, until the client
/// closes, the new process does, or [`Gate::leave`]. When the new process
/// cannot be reached, the client is closed without a reply to `line`: it
/// did not run.
pub async fn relay(
    line: &[u8],
    mut reader: BufReader<OwnedReadHalf>,
    mut writer: BufWriter<OwnedWriteHalf>,
    socket: Option<&Path>,
    gate: &Gate,
    max: usize,
) {
    // Every earlier reply first, in order.
    if writer.flush().await.is_err() {
        return;
    }
    let Some(path) = socket else {
        tracing::warn!(
            "control request after the handover, but no control socket path to relay it to; closing"
        );
        return;
    };
    let upstream = match UnixStream::connect(path).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "control request after the handover: the new process cannot be reached; closing");
            return;
        }
    };
    tracing::debug!("control client relayed to the new process");
    let (up_read, mut up_write) = upstream.into_split();
    let mut up_read = BufReader::new(up_read);
    let mut lines = Lines {
        max,
        partial: Vec::new(),
        too_long: false,
    };
    let mut out = Vec::with_capacity(line.len() + 1);
    let mut sent = lines.cut(line, &mut out) + lines.cut(b"\n", &mut out);
    let mut answered: u64 = 0;
    let mut taking = true;
    loop {
        if !out.is_empty() {
            if up_write.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
        if !taking && answered >= sent {
            break;
        }
        tokio::select! {
            () = gate.leaving(), if taking => taking = false,
            read = reader.fill_buf(), if taking && sent - answered < WINDOW => match read {
                Ok([]) | Err(_) => {
                    taking = false;
                    // The client is done: the new process answers what it has.
                    let _ = up_write.shutdown().await;
                }
                Ok(bytes) => {
                    let n = bytes.len();
                    sent += lines.cut(bytes, &mut out);
                    reader.consume(n);
                }
            },
            read = up_read.fill_buf() => match read {
                Ok([]) | Err(_) => break,
                Ok(bytes) => {
                    let n = bytes.len();
                    answered += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
                    let written = writer.write_all(bytes).await;
                    up_read.consume(n);
                    if written.is_err() {
                        break;
                    }
                    if up_read.buffer().is_empty() && writer.flush().await.is_err() {
                        break;
                    }
                }
            },
        }
    }
    // The replies, then the end of them; what the client sent meanwhile did
    // not run and is read and dropped until it closes, so that closing with
    // it unread (a reset) cannot cost the client the replies.
    let _ = writer.shutdown().await;
    let _ = tokio::time::timeout(DISCARD_FOR, async {
        let mut sink = [0u8; 4096];
        while let Ok(1..) = reader.read(&mut sink).await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(max: usize, chunks: &[&[u8]]) -> (u64, Vec<u8>) {
        let mut lines = Lines {
            max,
            partial: Vec::new(),
            too_long: false,
        };
        let mut out = Vec::new();
        let n = chunks.iter().map(|c| lines.cut(c, &mut out)).sum();
        (n, out)
    }

    #[test]
    fn whole_lines_pass_blank_ones_do_not_and_a_cut_off_one_never() {
        let (n, out) = cut(100, &[b"{\"op\":", b"\"stats\"}\n\n  \n{\"a\":1}\n{\"b\""]);
        assert_eq!(n, 2);
        assert_eq!(out, b"{\"op\":\"stats\"}\n{\"a\":1}\n");
    }

    #[test]
    fn a_line_over_the_limit_stays_over_it() {
        let (n, out) = cut(4, &[b"ok\n12345", b"678\nok\n"]);
        assert_eq!(n, 3);
        assert_eq!(out, b"ok\n     \nok\n");
    }
}
