//! [`RdmaConn`] as a [`Transport`] of `dipc-transport-tcp`, so that
//! `dipc_transport_tcp::rpc()` (calls with bounded waits, notifications,
//! per-link FIFO, bounded queues) runs over RDMA unchanged.
//!
//! Errors are mapped onto transport-tcp's variants so that callers of
//! `rpc()` cannot tell the transports apart by their errors: a clean close
//! is `Closed`, bounded waits are `Timeout`, a dead peer or failed work
//! request is `Io` (connection reset / aborted) naming the peer and the
//! RDMA cause.

use std::io::ErrorKind;
use std::sync::Arc;

use dipc_transport_tcp::{FrameSink, FrameSource, PeerInfo, Transport};
use dipc_wire::Frame;

use crate::conn::{RdmaConn, RdmaSender};
use crate::error::Error;

type TcpError = dipc_transport_tcp::Error;

impl Error {
    /// The same failure as transport-tcp's error (see the module doc).
    pub fn into_tcp(self) -> TcpError {
        let io = |kind: ErrorKind, e: &Error, peer: &str| TcpError::Io {
            what: format!("RDMA link with {peer}"),
            source: std::io::Error::new(kind, e.to_string()),
        };
        match self {
            Error::Closed { peer } => TcpError::Closed { peer },
            Error::Timeout { what, after } => TcpError::Timeout { what, after },
            Error::Frame(f) => TcpError::Frame(f),
            Error::Protocol { peer, reason } => TcpError::Protocol { peer, reason },
            Error::Control(c) => Arc::try_unwrap(c).unwrap_or_else(|c| TcpError::Io {
                what: "RDMA control connection".into(),
                source: std::io::Error::other(c.to_string()),
            }),
            ref e @ Error::PeerGone { ref peer, .. } => io(ErrorKind::ConnectionReset, e, peer),
            ref e @ Error::Completion { ref peer, .. } => io(ErrorKind::ConnectionAborted, e, peer),
            e => TcpError::Io {
                what: "RDMA".into(),
                source: std::io::Error::other(e.to_string()),
            },
        }
    }
}

impl From<Error> for TcpError {
    fn from(e: Error) -> Self {
        e.into_tcp()
    }
}

/// The sending half of an [`RdmaConn`] under `rpc()`.
#[derive(Debug)]
pub struct RdmaSink(RdmaSender);

/// The receiving half of an [`RdmaConn`] under `rpc()` (dropping it closes
/// the connection, like dropping the `RdmaConn`).
#[derive(Debug)]
pub struct RdmaSource(RdmaConn);

impl Transport for RdmaConn {
    type Sink = RdmaSink;
    type Source = RdmaSource;

    fn split(self) -> (RdmaSink, RdmaSource, PeerInfo) {
        let peer = self.peer().clone();
        (RdmaSink(self.sender()), RdmaSource(self), peer)
    }
}

impl FrameSink for RdmaSink {
    async fn send_batch(&mut self, frames: &mut Vec<Frame>) -> Result<(), TcpError> {
        self.0.send_many(frames).await.map_err(Error::into_tcp)
    }

    async fn shutdown(&mut self) {
        self.0.close();
    }
}

impl FrameSource for RdmaSource {
    async fn recv(&mut self) -> Result<Option<Frame>, TcpError> {
        self.0.recv().await.map_err(Error::into_tcp)
    }
}
