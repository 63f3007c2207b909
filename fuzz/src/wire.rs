//! Fuzz bodies for the decoders of `dipc-wire`: the frame codec and the
//! referee and local protocols.
//!
//! Shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`) and, through
//! `#[path]`, by the stable regression test `wire/tests/fuzz_regressions.rs`,
//! so the same properties run on every `cargo test` without nightly. Only
//! `dipc_wire` and `bytes` are used here, which both places have.
//!
//! The properties: no input panics a decoder; whatever decodes survives an
//! encode/decode round trip unchanged; the frame codec consumes exactly the
//! bytes of the frames it returns, whatever way the input is split.

use bytes::BytesMut;
use dipc_wire::local::LocalFrame;
use dipc_wire::{Frame, FrameError, local, referee};

/// Decode frames from `data`, first in one piece and then fed in chunks
/// whose sizes come from the input itself; both must give the same frames
/// and the same error.
///
/// The first byte picks the size limit (small limits exercise `TooLarge`).
pub fn frame(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let max = match pick % 4 {
        0 => dipc_wire::frame::PREFIX,
        1 => 64,
        2 => 4096,
        _ => dipc_wire::MAX_FRAME,
    };
    let whole = decode_all(rest, max, rest.len().max(1));
    let chunk = usize::from(pick >> 2).max(1);
    let split = decode_all(rest, max, chunk);
    assert_eq!(whole, split, "decoding depends on how the input is split");

    // `from_slice` agrees with the incremental decoder on a single frame.
    if let (frames, None) = &whole
        && frames.len() == 1
    {
        let used: usize = frames[0].wire_len();
        let one = Frame::from_slice(&rest[..used], max).expect("a frame that decoded");
        assert_eq!(one, frames[0]);
    }
    let _ = Frame::from_slice(rest, max);
}

/// Feed `data` to the incremental decoder `chunk` bytes at a time; returns
/// the frames in order and the error that stopped decoding, if any.
fn decode_all(data: &[u8], max: usize, chunk: usize) -> (Vec<Frame>, Option<FrameError>) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut consumed = 0usize;
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match Frame::decode_from(&mut buf, max) {
                Ok(Some(f)) => {
                    assert!(f.wire_len() <= max, "frame of {} > {max}", f.wire_len());
                    assert_eq!(before - buf.len(), f.wire_len(), "consumed != frame");
                    // Re-encoding gives back exactly the bytes consumed.
                    assert_eq!(
                        f.to_bytes(),
                        data[consumed..consumed + f.wire_len()],
                        "re-encoded frame differs"
                    );
                    consumed += f.wire_len();
                    frames.push(f);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) must not consume");
                    break;
                }
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

/// Decode `data` as `T`; if it decodes, its encoding decodes to the same
/// value.
pub fn round_trip<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = dipc_wire::decode::<T>(data) {
        let again = dipc_wire::decode::<T>(&dipc_wire::encode(&v))
            .unwrap_or_else(|e| panic!("{v:?} does not decode after encoding: {e}"));
        assert_eq!(v, again);
    }
}

/// Everything the referee protocol decodes: requests, responses, events,
/// also when the bytes come as a frame header.
pub fn referee_msgs(data: &[u8]) {
    round_trip::<referee::Request>(data);
    round_trip::<referee::Response>(data);
    round_trip::<referee::Event>(data);
    if let Ok(f) = Frame::from_slice(data, dipc_wire::MAX_FRAME) {
        let _ = f.decode::<referee::Request>();
        let _ = f.decode::<referee::Response>();
    }
}

/// Everything the local protocol decodes: requests and responses.
pub fn local_msgs(data: &[u8]) {
    round_trip::<local::Request>(data);
    round_trip::<local::Response>(data);
    if let Ok(f) = Frame::from_slice(data, dipc_wire::MAX_FRAME) {
        let _ = local::Request::from_frame(&f);
        let _ = local::Response::from_frame(&f);
    }
}
