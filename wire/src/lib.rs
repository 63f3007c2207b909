//! Wire types shared by several dipc crates.
//!
//! This crate is the vocabulary of dipc: the identifiers (keys, ids, nodes),
//! the object record the referee keeps, the messages of the two protocols that
//! cross crate boundaries, and the frame codec that carries them:
//!
//! * [`referee`]: node (and `dipc` CLI) <-> referee, over TCP;
//! * [`local`]: libsysv <-> node daemon, over a Unix socket;
//! * [`frame`]: one frame = a postcard-encoded header plus an optional raw
//!   payload (page data, message bodies) that is never serialised or copied
//!   by the encoder of the header.
//!
//! The node-to-node (peer) protocol lives in the node crate, because only
//! nodes speak it.
//!
//! It may depend on serde/postcard only: no I/O, no async runtime, so libsysv
//! (which starts no threads) can use it. Every decoder returns an error on
//! truncated or garbage input and never panics; `tests/decode.rs` checks
//! round trips and garbage with proptest.
#![forbid(unsafe_code)]

pub mod frame;
pub mod ids;
pub mod local;
pub mod referee;

pub use frame::{Frame, FrameError, MAX_FRAME};
pub use ids::*;

/// Encode a protocol message with postcard.
pub fn encode<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    // Serialising our own message types into a Vec cannot fail: they contain
    // no maps with non-string keys and no custom serialisers that error.
    postcard::to_stdvec(msg).unwrap_or_default()
}

/// Decode a protocol message, rejecting trailing bytes.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    let (msg, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| FrameError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Decode(format!(
            "{} trailing bytes after message",
            rest.len()
        )));
    }
    Ok(msg)
}
