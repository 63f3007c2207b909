//! The dipc referee: the cluster's name server and membership list.
//!
//! One referee runs per cluster (the "referee" box of DESIGN.md). It maps an
//! IPC key to its object (kind, cluster-wide id, home node, size/nsems/queue
//! limits, owner and mode) and serialises creation, so exactly one
//! `IPC_CREAT|IPC_EXCL` wins cluster-wide. Nodes join it with the cluster
//! name and secret, send heartbeats, and are told when objects disappear and
//! when peers come and go. It is off the data path: nodes cache lookups.
//!
//! It answers the [`dipc_wire::referee`] protocol:
//!
//! * from nodes: `Join`, `Heartbeat`, `Get` (find or create by key),
//!   `Lookup`/`LookupKey`, `Remove`, `Destroyed`, `SetPerm`, `Status`;
//! * from clients (the `dipc` command line): `Status`, `Lookup`, `LookupKey`;
//! * pushed to every joined node: `ObjectGone`, `NodeUp`, `NodeDown`.
//!
//! It stores object records, node names with their ids and addresses, and
//! two counters (next object number, next node id) in `registry.redb` in its
//! data directory; liveness is not stored.
//!
//! Layout, in the quinn-proto style:
//!
//! * [`registry`]: the referee as a pure state machine (no I/O, no clock, no
//!   threads), which decides everything;
//! * [`store`]: persistence of the registry's writes in redb;
//! * [`server`]: the thin tokio shell: accept, authenticate, feed requests to
//!   the registry in order, persist, answer, broadcast, tick.
//!
//! Dependencies: `dipc-wire` (the protocol), `dipc-transport-tcp` (framed,
//! authenticated connections and RPC), redb, tokio, tracing. Nothing of the
//! node, dsm or libsysv.
//!
//! Testing: the registry has deterministic unit tests for every errno and
//! lifecycle, and a proptest driving random request sequences while checking
//! invariants and that replaying the writes rebuilds the same state; the
//! store has round-trip and corruption tests; `tests/server.rs` runs a real
//! server on a loopback port, restarts it on the same data directory, and
//! checks that a peer with the wrong secret is refused.
#![forbid(unsafe_code)]

pub mod registry;
pub mod server;
pub mod store;

use std::path::PathBuf;

pub use registry::{Config, NodeEntry, Origin, Outcome, Registry, Snapshot, StoreOp};
pub use server::{Server, ServerConfig, bind, run};
pub use store::Store;

/// Errors of the referee.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot create the referee data directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the referee store {path}")]
    OpenStore {
        path: PathBuf,
        #[source]
        source: Box<redb::DatabaseError>,
    },
    #[error("referee store {path}: {op} failed")]
    Store {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("referee store {path} holds a bad {table} entry: {detail}")]
    Corrupt {
        path: PathBuf,
        table: &'static str,
        detail: String,
    },
    #[error("referee cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the referee's registry task stopped unexpectedly")]
    RegistryStopped,
}
