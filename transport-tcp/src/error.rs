//! The crate's one error type.
//!
//! Every variant names the peer (its name when known, always its address)
//! and what went wrong, so that the `Display` of an error is a message a
//! user can act on ("127.0.0.1:7100 refused the connection: authentication
//! failed: wrong cluster secret") without reading logs.

use std::time::Duration;

use dipc_wire::FrameError;

/// Errors of connections, the handshake and RPC.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket operation failed (`what` says which, and with whom).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The peer refused us during the handshake and said why.
    #[error("{peer} refused the connection: {reason}")]
    Refused { peer: String, reason: String },
    /// The peer failed our checks during the handshake (wrong secret, wrong
    /// cluster, wrong protocol version); we refused it.
    #[error("refused {peer}: {reason}")]
    AuthFailed { peer: String, reason: String },
    /// A bounded wait ran out.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    /// The connection is gone (peer closed, or closed after an error).
    #[error("connection to {peer} is closed")]
    Closed { peer: String },
    /// A frame could not be encoded or decoded.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer broke the protocol (unexpected message, frame cut short).
    #[error("protocol error with {peer}: {reason}")]
    Protocol { peer: String, reason: String },
    /// TLS settings that cannot be used (unreadable or mismatched files,
    /// an address that cannot be checked against a certificate).
    #[error("TLS setup: {what}: {reason}")]
    TlsConfig { what: String, reason: String },
    /// Too much is queued for sending: the peer does not read fast enough
    /// (or at all). Nothing was queued.
    #[error(
        "send queue to {peer} is full ({frames} frames, {bytes} bytes waiting): the peer is not reading"
    )]
    Backlog {
        peer: String,
        frames: usize,
        bytes: usize,
    },
}

impl Error {
    /// True for errors that retrying the same connection cannot fix: the
    /// peer refused us, or we refused it (wrong cluster, secret, version,
    /// TLS certificate, TLS on one side only), or our TLS settings cannot
    /// be used.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::Refused { .. } | Error::AuthFailed { .. } | Error::TlsConfig { .. }
        )
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
