//! Start-up and reload errors, written for people: one line, each cause
//! once, and what to check for the common operating-system errors.
//!
//! The error types of the modules embed their cause in their own message
//! (`cannot bind control socket /x/c.sock: No such file or directory (os
//! error 2)`), so a log line that shows only the message is complete. Walking
//! the cause chain, as `{:#}` does, then repeats that cause; [`one_line`]
//! leaves out every cause a message before it already shows:
//!
//! ```
//! # use anyhow::Context as _;
//! let err = std::fs::read("/nowhere/x.toml")
//!     .context("cannot read /nowhere/x.toml")
//!     .unwrap_err();
//! assert_eq!(
//!     ws2fcgi::error_line::one_line(err.as_ref()),
//!     "cannot read /nowhere/x.toml: No such file or directory (os error 2); \
//!      check that the path and its directory exist"
//! );
//! ```

use std::error::Error;
use std::io::ErrorKind;

/// `error` and its causes on one line, each said once, with a hint when the
/// deepest I/O error is a common one.
pub fn one_line(error: &(dyn Error + 'static)) -> String {
    let mut line = String::new();
    let mut io_kind = None;
    let mut next = Some(error);
    while let Some(current) = next {
        let text = current
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !text.is_empty() && !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        next = current.source();
    }
    if let Some(hint) = io_kind.and_then(hint) {
        line.push_str("; ");
        line.push_str(hint);
    }
    line
}

/// What to check for an I/O error of this kind at start-up.
fn hint(kind: ErrorKind) -> Option<&'static str> {
    Some(match kind {
        ErrorKind::NotFound => "check that the path and its directory exist",
        ErrorKind::PermissionDenied => {
            "check the permissions of the path's directory for the user ws2fcgi runs as \
             (a port below 1024 needs root or CAP_NET_BIND_SERVICE)"
        }
        ErrorKind::AddrInUse => "another process listens there: stop it or choose another address",
        ErrorKind::AddrNotAvailable => "no network interface of this machine has that address",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot bind control socket {path}: {source}")]
    struct Embeds {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn a_cause_the_message_already_shows_is_said_once() {
        let err = anyhow::Error::new(Embeds {
            path: "/missing/c.sock".into(),
            source: std::io::Error::from_raw_os_error(2),
        })
        .context("`control.socket`");
        let line = one_line(err.as_ref());
        assert_eq!(
            line,
            "`control.socket`: cannot bind control socket /missing/c.sock: \
             No such file or directory (os error 2); check that the path and its directory exist"
        );
        assert_eq!(line.matches("os error 2").count(), 1);
    }

    #[test]
    fn causes_a_message_does_not_show_are_kept_and_lines_joined() {
        let err = anyhow::Error::new(std::io::Error::from_raw_os_error(98))
            .context("cannot listen on\n127.0.0.1:80");
        assert_eq!(
            one_line(err.as_ref()),
            "cannot listen on 127.0.0.1:80: Address already in use (os error 98); \
             another process listens there: stop it or choose another address"
        );
    }
}
