//! The node crate's error type.

use std::path::PathBuf;

/// Everything that can stop the node daemon or fail one of its operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot listen for peers on {addr}: {source}")]
    ListenPeers {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the local socket {path}: {source}")]
    LocalSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("referee {addr} refused this node: {reason}")]
    Refused { addr: String, reason: String },
    #[error("referee {addr}: {source}")]
    Referee {
        addr: String,
        #[source]
        source: dipc_transport_tcp::Error,
    },
    /// The peer-link transport asked for cannot be used.
    #[error("transport: {reason}")]
    Transport { reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
