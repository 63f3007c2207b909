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

pub use bytes::Bytes;
pub use frame::{Frame, FrameError, MAX_FRAME};
pub use ids::*;

/// `#[serde(with = "dipc_wire::byte_buf")]` for a `Vec<u8>` field that can
/// be large (a message text): serialised as one byte string, which postcard
/// encodes exactly as a sequence of `u8` (a varint length, then the bytes)
/// but copies in one go instead of byte by byte through serde (for a
/// 64 KiB message, microseconds instead of a large share of a millisecond
/// at each of the four hops of a `msgsnd` or `msgrcv`).
pub mod byte_buf {
    use std::fmt;

    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    /// Into a `Vec<u8>` or anything made from one without a copy (`Bytes`).
    pub fn deserialize<'de, D: Deserializer<'de>, T: From<Vec<u8>>>(d: D) -> Result<T, D::Error> {
        d.deserialize_byte_buf(ByteBuf).map(T::from)
    }

    struct ByteBuf;

    impl<'de> Visitor<'de> for ByteBuf {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(b) = seq.next_element()? {
                v.push(b);
            }
            Ok(v)
        }
    }
}

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
