//! Why an event did not get an answer from PHP, and whether it certainly
//! never reached PHP (so it may be tried again).

use std::io;
use std::time::Duration;

use crate::fcgi::FcgiError;

/// Why an event did not get an answer from PHP.
#[derive(Debug, thiserror::Error)]
pub enum FpmError {
    /// PHP-FPM could not be reached: not running, socket missing, refused.
    /// The request never reached PHP.
    #[error("cannot connect to php-fpm at {addr}: {source}")]
    Connect {
        /// The configured address.
        addr: String,
        /// What connect said.
        source: io::Error,
    },
    /// Every pooled connection stayed busy for `fpm.queue_timeout`.
    /// The request never reached PHP.
    #[error("no free php-fpm connection within {0:?} (all {1} busy)")]
    PoolTimeout(Duration, usize),
    /// No file descriptor came free for a new connection within
    /// `fpm.queue_timeout` (the open-files limit is reached: EMFILE, ENFILE).
    /// The request never reached PHP.
    #[error(
        "no file descriptor free for a php-fpm connection within {0:?} (open-files limit reached)"
    )]
    NoDescriptor(Duration),
    /// PHP did not answer within `fpm.request_timeout`.
    #[error("php did not answer within {0:?}")]
    Timeout(Duration),
    /// The shutdown drain's deadline passed before a free connection was
    /// found (or before the event was started). The request never reached PHP.
    #[error("the shutdown drain's deadline passed before php-fpm could take the event")]
    DrainEnded,
    /// The shutdown drain's deadline passed while PHP ran the event.
    #[error("the shutdown drain's deadline passed while php ran the event")]
    DrainEndedInPhp,
    /// PHP-FPM closed the connection before the end of its answer (worker
    /// killed, crashed, or restarted mid-request).
    #[error("php-fpm closed the connection before the end of its answer")]
    Truncated,
    /// Reading or writing the FastCGI connection failed.
    #[error("i/o error talking to php-fpm: {0}")]
    Io(#[from] io::Error),
    /// PHP-FPM answered something that is not FastCGI.
    #[error("malformed FastCGI answer: {0}")]
    Protocol(#[from] FcgiError),
    /// PHP's output is larger than the headers and body limits allow.
    #[error("php's answer exceeds {0} bytes")]
    TooLarge(usize),
}

impl FpmError {
    /// True when the request certainly never reached PHP (safe to retry later).
    pub fn never_reached_php(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::PoolTimeout(..) | Self::NoDescriptor(_) | Self::DrainEnded
        )
    }

    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::PoolTimeout(..) => "pool_timeout",
            Self::NoDescriptor(_) => "no_descriptor",
            Self::Timeout(_) => "timeout",
            Self::DrainEnded | Self::DrainEndedInPhp => "drain_timeout",
            Self::Truncated => "truncated",
            Self::Io(_) => "io",
            Self::Protocol(_) => "protocol",
            Self::TooLarge(_) => "too_large",
        }
    }
}
