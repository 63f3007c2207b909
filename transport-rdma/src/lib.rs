//! dipc's RDMA transport: frames between nodes over reliable-connected
//! verbs queue pairs.
//!
//! This is the "transport: rdma" box of DESIGN.md, the fast sibling of
//! `dipc-transport-tcp` with the same shape: [`connect`] / [`accept`] (or
//! [`establish`] on a control connection the node already has) give an
//! [`RdmaConn`] that sends and receives [`dipc_wire::Frame`]s, header plus
//! raw payload, so the node can use either transport.
//!
//! * [`config`]: `--rdma-device` (`auto` = first device with an ACTIVE
//!   port) and `--gid-index` style options, ring sizes, timeouts;
//! * [`proto`]: the protocol without I/O: connection data exchanged over
//!   the authenticated TCP control connection, cutting frames into ring
//!   slots, credits (on every message's immediate, and by RDMA WRITE of an
//!   ack word, so that credits never wait for credits);
//! * [`mod@conn`]: setup and the per-connection engine thread (SEND/RECV
//!   for small messages, RDMA WRITE with immediate for page-sized
//!   payloads, busy-poll then sleep on the completion channel, bounded
//!   waits, failures mapped to [`Error`]);
//! * [`mod@rpc`]: `RdmaConn` as a `dipc_transport_tcp::Transport`, so
//!   `dipc_transport_tcp::rpc()` runs over it; errors map onto
//!   transport-tcp's (`Closed`, `Timeout`, `Io`);
//! * `verbs`: the only unsafe code, a thin owning wrapper over libibverbs
//!   (via `rdma-sys`). Only memory it allocates itself is ever registered
//!   (staging and receive rings), never the memfd pages of a segment.
//!
//! Dependencies: `dipc-wire` (frames), `dipc-transport-tcp` (the
//! authenticated control connection), `rdma-sys` (bindgen bindings to the
//! system's libibverbs: building needs `libibverbs-dev librdmacm-dev
//! libclang-dev`; running needs `ibverbs-providers` and a device), tokio
//! for the async API. It knows nothing of nodes or coherence.
//!
//! Tests: unit tests (no device needed) cover connection data encoding and
//! validation, chunking and reassembly, credits, device choice and error
//! mapping. `tests/rxe.rs` runs real connections between two processes
//! (0 B to 4 MiB round trips, 10,000 small frames from four senders echoed
//! in order, a peer killed mid-transfer while sending and while receiving,
//! a peer that stops reading; `rpc()` over RDMA: 512 concurrent 4 KiB
//! calls, a peer killed with 40 calls pending, reconnect); without a
//! device each test says so and passes without running. `tests/vm.sh`
//! (and `scripts/vm-tests.sh`, with the node tests) runs them in the
//! soft-RoCE VM (`shared/rxe-vm`), where they run for real. `examples/latency.rs`
//! prints 4 KiB round-trip times.

pub mod config;
pub mod conn;
mod error;
pub mod proto;
pub mod rpc;
mod verbs;

pub use config::{DeviceChoice, RdmaConfig, Selected, choose_device, probe};
pub use conn::{RECV_QUEUE, RdmaConn, RdmaSender, SEND_QUEUE, accept, connect, establish};
pub use error::Error;
pub use rpc::{RdmaSink, RdmaSource};
pub use verbs::{DeviceInfo, PortInfo, devices};
