//! dipc's TCP transport: framed, authenticated, bounded connections.
//!
//! This is the "transport: tcp" box of DESIGN.md. It carries the referee
//! protocol (node <-> referee, `dipc` CLI <-> referee) and the node-to-node
//! protocol (page data as raw payloads) over tokio TCP streams:
//!
//! * [`Conn`] ([`conn`]): a `TcpStream` with `TCP_NODELAY` that exists only
//!   after the mutual challenge-response handshake of [`auth`] proved that
//!   the peer knows the cluster secret, and that reads and writes
//!   [`dipc_wire::Frame`]s without copying their payloads;
//! * [`rpc()`] ([`mod@rpc`]): calls with bounded waits and one-way
//!   notifications in both directions over one `Conn`, FIFO per
//!   connection, with backpressure on incoming messages;
//! * [`Transport`] ([`transport`]): what `rpc()` needs from a connection
//!   (a frame sink and a frame source); [`Conn`] implements it, and so does
//!   `dipc-transport-rdma`'s `RdmaConn`;
//! * [`Backoff`] ([`backoff`]): exponential backoff with jitter for
//!   reconnecting ([`Conn::connect_with_backoff`] uses it);
//! * [`TlsConfig`] ([`tls`]): optional mutual TLS 1.3 (rustls) under the
//!   handshake, set in [`Auth::tls`]; the connection is then TLS from its
//!   first byte, and a side with TLS refuses a side without it.
//!
//! A malformed frame ends the connection it came on, with a `warn!` naming
//! the peer and the reason, never the process; every wait has a time bound.
//!
//! Dependencies: `dipc-wire` (frames, postcard encoding), tokio, hmac/sha2
//! and getrandom for the handshake, rustls/tokio-rustls (ring) for TLS. It knows nothing of nodes, the referee
//! or the coherence protocol: message types are type parameters.
//!
//! Tests: `tests/handshake.rs`, `tests/rpc.rs` and `tests/malformed.rs` run
//! real sockets on 127.0.0.1 (successful and refused handshakes, timeouts,
//! calls both ways, ordering, large payloads, dead peers, garbage bytes sent
//! on a raw socket); unit tests cover the backoff and the server's side of
//! the handshake against clients the public API cannot produce (wrong
//! proof, other version). `tests/tls.rs` makes certificates with rcgen:
//! RPC over TLS, certificates of another CA or host, TLS on one side only.
#![forbid(unsafe_code)]

pub mod auth;
pub mod backoff;
pub mod chunk;
pub mod conn;
mod error;
pub mod rpc;
pub mod tls;
pub mod transport;

pub use auth::{Auth, PROTOCOL_VERSION};
pub use backoff::Backoff;
pub use conn::{Conn, PeerInfo, Role};
pub use error::Error;
pub use rpc::{Head, Incoming, Replier, RpcHandle, rpc, rpc_with};
pub use tls::TlsConfig;
pub use transport::{FrameSink, FrameSource, TcpSink, TcpSource, Transport};
