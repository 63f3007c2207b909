//! The frame codec.
//!
//! ```text
//! +----------------+----------------+------------------+-----------------+
//! | total_len: u32 | header_len: u32| header (postcard)| payload (raw)   |
//! +----------------+----------------+------------------+-----------------+
//!   little endian; total_len counts everything after itself
//! ```
//!
//! The payload carries page-sized data as is, so moving a page costs one
//! copy into the socket and none for serialisation.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest frame accepted by default (16 MiB of payload plus headers): big
/// enough for a 2 MiB coherence unit batch or a 64 KiB message, small enough
/// that a garbage length cannot make us allocate gigabytes.
pub const MAX_FRAME: usize = 16 * 1024 * 1024 + 64 * 1024;

/// Size of the fixed prefix (`total_len` + `header_len`).
pub const PREFIX: usize = 8;

/// Errors of the frame codec and of message decoding.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed frame: header length {header} exceeds frame length {total}")]
    BadHeaderLen { header: usize, total: usize },
    #[error("malformed message: {0}")]
    Decode(String),
}

/// One frame: a header (an encoded protocol message) and a raw payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    pub header: Bytes,
    pub payload: Bytes,
}

impl Frame {
    /// A frame whose header is `msg` and whose payload is `payload`.
    pub fn new<T: serde::Serialize>(msg: &T, payload: Bytes) -> Self {
        Frame {
            header: Bytes::from(crate::encode(msg)),
            payload,
        }
    }

    /// A frame without payload.
    pub fn msg<T: serde::Serialize>(msg: &T) -> Self {
        Self::new(msg, Bytes::new())
    }

    /// Decode the header as `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, FrameError> {
        crate::decode(&self.header)
    }

    /// Bytes this frame occupies on the wire.
    pub fn wire_len(&self) -> usize {
        PREFIX + self.header.len() + self.payload.len()
    }

    /// Append the encoded frame to `dst`.
    pub fn encode_into(&self, dst: &mut BytesMut) {
        dst.reserve(self.wire_len());
        dst.put_u32_le((4 + self.header.len() + self.payload.len()) as u32);
        dst.put_u32_le(self.header.len() as u32);
        dst.put_slice(&self.header);
        dst.put_slice(&self.payload);
    }

    /// The encoded prefix and header (without the payload), for vectored
    /// writes that send the payload from its own buffer.
    pub fn encode_head(&self) -> Vec<u8> {
        self.encode_head_with(self.payload.len())
    }

    /// [`Frame::encode_head`] for a payload of `payload_len` bytes sent
    /// from memory the frame does not hold (a caller's message text).
    pub fn encode_head_with(&self, payload_len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(PREFIX + self.header.len());
        v.extend_from_slice(&((4 + self.header.len() + payload_len) as u32).to_le_bytes());
        v.extend_from_slice(&(self.header.len() as u32).to_le_bytes());
        v.extend_from_slice(&self.header);
        v
    }

    /// The whole frame as one buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = BytesMut::new();
        self.encode_into(&mut b);
        b.to_vec()
    }

    /// Try to take one frame from the front of `src`.
    ///
    /// Returns `Ok(None)` when more bytes are needed (and reserves room for
    /// them), `Err` when the frame is malformed or larger than `max`; the
    /// connection must then be closed, since framing is lost.
    pub fn decode_from(src: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let total = u32::from_le_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if total + 4 > max {
            return Err(FrameError::TooLarge {
                len: total + 4,
                max,
            });
        }
        if total < 4 {
            return Err(FrameError::BadHeaderLen { header: 0, total });
        }
        if src.len() < 4 + total {
            src.reserve(4 + total - src.len());
            return Ok(None);
        }
        let header_len = u32::from_le_bytes([src[4], src[5], src[6], src[7]]) as usize;
        if header_len > total - 4 {
            return Err(FrameError::BadHeaderLen {
                header: header_len,
                total,
            });
        }
        src.advance(PREFIX);
        let header = src.split_to(header_len).freeze();
        let payload = src.split_to(total - 4 - header_len).freeze();
        Ok(Some(Frame { header, payload }))
    }

    /// Decode exactly one frame from a complete buffer.
    pub fn from_slice(buf: &[u8], max: usize) -> Result<Frame, FrameError> {
        Self::from_vec(buf.to_vec(), max)
    }

    /// [`Frame::from_slice`] taking the buffer: the header and payload are
    /// views of it, not copies.
    pub fn from_vec(buf: Vec<u8>, max: usize) -> Result<Frame, FrameError> {
        let mut b = BytesMut::from(Bytes::from(buf));
        match Self::decode_from(&mut b, max)? {
            Some(f) if b.is_empty() => Ok(f),
            Some(_) => Err(FrameError::Decode("trailing bytes after frame".into())),
            None => Err(FrameError::Decode("truncated frame".into())),
        }
    }
}
