//! The crate's one error type.
//!
//! Like transport-tcp's, every variant says what failed and with whom, so
//! that its `Display` is actionable without logs. The error is `Clone`
//! (sources are behind `Arc`) because one failure of a connection's engine
//! thread is reported to every pending and later `send`/`recv`.

use std::sync::Arc;
use std::time::Duration;

use dipc_wire::FrameError;

/// Errors of device discovery, connection setup and the data path.
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No usable RDMA device (none at all, the named one is missing, or it
    /// has no ACTIVE port).
    #[error("no usable RDMA device: {reason}")]
    NoDevice { reason: String },
    /// A verbs call failed (`what` says which).
    #[error("{what}: {source}")]
    Verbs {
        what: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A work request completed with an error status.
    #[error("{what} with {peer} failed: {status_text} (status {status}){hint}")]
    Completion {
        peer: String,
        what: &'static str,
        status: u32,
        status_text: String,
        hint: &'static str,
    },
    /// The peer went away without closing (process killed, host down):
    /// its control connection ended without a goodbye.
    #[error("peer {peer} is gone: {reason}")]
    PeerGone { peer: String, reason: String },
    /// The connection is closed (by us, or the peer closed it cleanly).
    #[error("RDMA connection to {peer} is closed")]
    Closed { peer: String },
    /// A bounded wait ran out.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    /// The control connection (authenticated TCP) failed.
    #[error("control connection: {0}")]
    Control(Arc<dipc_transport_tcp::Error>),
    /// A frame could not be encoded or decoded.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer broke the protocol.
    #[error("protocol error with {peer}: {reason}")]
    Protocol { peer: String, reason: String },
    /// Configuration that cannot work (bad option, peer's parameters out
    /// of range).
    #[error("RDMA configuration: {reason}")]
    Config { reason: String },
}

impl From<dipc_transport_tcp::Error> for Error {
    fn from(e: dipc_transport_tcp::Error) -> Self {
        Error::Control(Arc::new(e))
    }
}

/// `ibv_wc_status` values we give a hint for (from `<infiniband/verbs.h>`).
pub(crate) mod wc {
    pub const SUCCESS: u32 = 0;
    pub const LOC_LEN_ERR: u32 = 1;
    pub const LOC_PROT_ERR: u32 = 4;
    pub const WR_FLUSH_ERR: u32 = 5;
    pub const REM_ACCESS_ERR: u32 = 10;
    pub const REM_OP_ERR: u32 = 11;
    pub const RETRY_EXC_ERR: u32 = 12;
    pub const RNR_RETRY_EXC_ERR: u32 = 13;
}

impl Error {
    pub(crate) fn verbs(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Verbs {
            what: what.into(),
            source: Arc::new(source),
        }
    }

    /// Map a failed completion to an error, with a hint at the usual cause.
    pub(crate) fn completion(peer: &str, what: &'static str, status: u32, text: String) -> Self {
        let hint = match status {
            wc::RETRY_EXC_ERR => {
                ": the peer did not acknowledge in time (peer gone or unreachable)"
            }
            wc::RNR_RETRY_EXC_ERR => ": the peer had no receive posted (peer stalled)",
            wc::WR_FLUSH_ERR => ": the queue pair is in the error state",
            wc::REM_ACCESS_ERR => ": the peer refused access to its buffer (bad rkey or range)",
            wc::REM_OP_ERR | wc::LOC_LEN_ERR | wc::LOC_PROT_ERR => ": a local or remote bug",
            _ => "",
        };
        Error::Completion {
            peer: peer.to_string(),
            what,
            status,
            status_text: text,
            hint,
        }
    }

    /// True when the error means the peer is gone or unreachable (so the
    /// caller may reconnect or fall back to TCP), rather than a local bug.
    pub fn is_peer_failure(&self) -> bool {
        match self {
            Error::PeerGone { .. } | Error::Closed { .. } | Error::Timeout { .. } => true,
            Error::Completion { status, .. } => matches!(
                *status,
                wc::RETRY_EXC_ERR | wc::RNR_RETRY_EXC_ERR | wc::WR_FLUSH_ERR
            ),
            Error::Control(e) => matches!(
                **e,
                dipc_transport_tcp::Error::Closed { .. }
                    | dipc_transport_tcp::Error::Io { .. }
                    | dipc_transport_tcp::Error::Timeout { .. }
            ),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_exceeded_names_the_peer_and_the_cause() {
        let e = Error::completion(
            "\"n2\" at 10.0.0.2:7200",
            "RDMA WRITE",
            wc::RETRY_EXC_ERR,
            "transport retry counter exceeded".into(),
        );
        let s = e.to_string();
        assert!(s.contains("n2"), "{s}");
        assert!(s.contains("retry counter exceeded"), "{s}");
        assert!(s.contains("peer gone or unreachable"), "{s}");
        assert!(e.is_peer_failure());
    }

    #[test]
    fn flush_is_a_peer_failure_but_protection_errors_are_bugs() {
        let flush = Error::completion("p", "SEND", wc::WR_FLUSH_ERR, "flush".into());
        assert!(flush.is_peer_failure());
        assert!(flush.to_string().contains("error state"));
        let prot = Error::completion("p", "SEND", wc::LOC_PROT_ERR, "prot".into());
        assert!(!prot.is_peer_failure());
        let access = Error::completion("p", "RDMA WRITE", wc::REM_ACCESS_ERR, "x".into());
        assert!(access.to_string().contains("rkey"));
        assert!(!access.is_peer_failure());
    }

    #[test]
    fn control_errors_keep_their_meaning() {
        let closed: Error = dipc_transport_tcp::Error::Closed { peer: "p".into() }.into();
        assert!(closed.is_peer_failure());
        assert!(closed.to_string().starts_with("control connection: "));
        let refused: Error = dipc_transport_tcp::Error::Refused {
            peer: "p".into(),
            reason: "wrong cluster secret".into(),
        }
        .into();
        assert!(!refused.is_peer_failure());
        assert!(refused.to_string().contains("wrong cluster secret"));
    }

    #[test]
    fn errors_clone_with_their_source() {
        let e = Error::verbs(
            "register 4096 bytes",
            std::io::Error::from_raw_os_error(libc::ENOMEM),
        );
        let c = e.clone();
        assert_eq!(e.to_string(), c.to_string());
        assert!(std::error::Error::source(&c).is_some());
    }
}
