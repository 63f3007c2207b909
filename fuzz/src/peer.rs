//! Fuzz body for what a node decodes from a peer after the handshake: a
//! frame whose header is the transport's envelope (`rpc::Head`) followed by
//! a `PeerReq` (calls), `PeerResp` (replies) or `PeerMsg` (notifications).
//!
//! Shared by the cargo-fuzz target `peer_msgs` and, through `#[path]`, by
//! the stable regression test `node/tests/fuzz_regressions.rs`. It decodes
//! the way `dipc_transport_tcp::rpc`'s reader does (head, then the body with
//! no trailing bytes) and checks round trips of whatever decodes.
//!
//! The handshake messages (`dipc_transport_tcp::auth`) are private to the
//! transport; they are exercised on real sockets by `dipc/tests/badinput.rs`
//! and by the transport's own tests instead.

use dipc_node::peer::{PeerMsg, PeerReq, PeerResp};
use dipc_transport_tcp::Head;
use dipc_wire::Frame;

/// Decode a frame's header as the peer protocol; round trips must hold.
pub fn peer_msgs(data: &[u8]) {
    header(data);
    if let Ok(f) = Frame::from_slice(data, dipc_wire::MAX_FRAME) {
        header(&f.header);
    }
}

fn header(h: &[u8]) {
    let Ok((head, body)) = postcard::take_from_bytes::<Head>(h) else {
        return;
    };
    match head {
        Head::Call(_) => round_trip::<PeerReq>(body),
        Head::Reply(_) => round_trip::<PeerResp>(body),
        Head::Notify => round_trip::<PeerMsg>(body),
        // A part of a larger message: no body (the reader refuses one).
        Head::Part { .. } => {}
    }
    // Whatever the head says, no body type may panic on these bytes.
    round_trip::<PeerReq>(body);
    round_trip::<PeerResp>(body);
    round_trip::<PeerMsg>(body);
}

fn round_trip<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = dipc_wire::decode::<T>(data) {
        let again = dipc_wire::decode::<T>(&dipc_wire::encode(&v))
            .unwrap_or_else(|e| panic!("{v:?} does not decode after encoding: {e}"));
        assert_eq!(v, again);
    }
}
