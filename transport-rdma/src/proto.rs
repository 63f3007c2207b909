//! The data-path protocol, without I/O: what crosses the control
//! connection at setup, how frames are cut into ring slots, and credits.
//!
//! # Rings and slots
//!
//! Each side registers a *receive ring* of `slots` slots of `slot_size`
//! bytes and posts one receive per slot, in order. Message number `n` (both
//! sides count the messages they send from 0) always lands in slot
//! `n % slots` of the peer's ring:
//!
//! * a small message is a SEND; it consumes the peer's next receive, whose
//!   buffer is slot `n % slots` because receives are consumed and re-posted
//!   in order;
//! * a chunk of a frame whose payload is page-sized or larger
//!   ([`WRITE_THRESHOLD`]) is an RDMA WRITE with immediate straight to the
//!   address of slot `n % slots` (the peer told us the ring's address and
//!   rkey); it consumes the same receive, whose completion tells the peer
//!   the slot is full.
//!
//! Every slot starts with an 8-byte [`ChunkHeader`] (length and flags); a
//! frame's wire encoding (`dipc_wire::Frame`, prefix + header + payload) is
//! cut into as many chunks as needed, so frames up to `MAX_FRAME` cross
//! rings of small slots.
//!
//! # Credits
//!
//! A sender may have at most `slots` messages that the peer has not yet
//! re-posted a receive for ([`Credits`]). The peer reports its re-post
//! count (a wrapping `u32`) in two ways: as the immediate value of every
//! message it sends (free, and it wakes a sleeping engine), and, when it
//! owes many credits, by an RDMA WRITE of the count into our *ack word*
//! (next to our ring; [`ConnData::ack_addr`]). The write consumes no
//! receive of ours and needs no credit, which is what makes the scheme
//! deadlock-free: credits flowing one way never wait for data or credits
//! flowing the other way (like TCP's ACKs, which travel whatever the
//! receive windows), so two peers that both send, each blocked on the
//! other, still make progress as soon as either application reads.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dipc_wire::{Frame, FrameError, MAX_FRAME};
use serde::{Deserialize, Serialize};

/// Frames whose payload is at least this long go by RDMA WRITE with
/// immediate; smaller ones by SEND.
pub const WRITE_THRESHOLD: usize = 4096;

/// Version of [`ConnData`] and of the slot format.
pub const RDMA_PROTOCOL_VERSION: u32 = 1;

/// Largest ring a peer may ask us to stage for (`slots * slot_size`).
pub const MAX_RING_BYTES: u64 = 256 * 1024 * 1024;

/// What each side tells the other over the authenticated control
/// connection before the queue pairs connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnData {
    pub version: u32,
    /// The GID (RoCE: an IPv4-mapped or IPv6 address) of the sender's port.
    pub gid: [u8; 16],
    /// The sender's LID (0 on RoCE).
    pub lid: u16,
    /// The sender's queue pair number (24 bits).
    pub qpn: u32,
    /// The first packet sequence number the sender will use (24 bits).
    pub psn: u32,
    /// The sender's active MTU (`ibv_mtu`: 1 = 256 ... 5 = 4096).
    pub mtu: u32,
    /// Address and rkey of the sender's receive ring.
    pub ring_addr: u64,
    pub ring_rkey: u32,
    /// Address of the sender's ack word (same rkey as the ring), where we
    /// RDMA WRITE our re-post count.
    pub ack_addr: u64,
    pub slots: u32,
    pub slot_size: u32,
}

/// Message header of the setup exchange on the control connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Setup {
    /// Our connection data.
    Hello(ConnData),
    /// Our queue pair is in RTS; data may flow.
    Ready,
    /// We cannot go on (device error, bad parameters); the reason.
    Abort(String),
}

impl ConnData {
    /// Check the peer's data before using it.
    pub fn validate(&self) -> Result<(), String> {
        if self.version != RDMA_PROTOCOL_VERSION {
            return Err(format!(
                "RDMA protocol version {} is not supported (this is {RDMA_PROTOCOL_VERSION})",
                self.version
            ));
        }
        if self.qpn >= 1 << 24 || self.psn >= 1 << 24 {
            return Err(format!(
                "queue pair number {:#x} or PSN {:#x} exceeds 24 bits",
                self.qpn, self.psn
            ));
        }
        if !(1..=5).contains(&self.mtu) {
            return Err(format!("unknown MTU code {}", self.mtu));
        }
        if self.slots < 4 || self.slots > 4096 {
            return Err(format!("{} ring slots (want 4..=4096)", self.slots));
        }
        if self.slot_size < 4096 || !self.slot_size.is_multiple_of(64) {
            return Err(format!(
                "slot size {} (want a multiple of 64, at least 4096)",
                self.slot_size
            ));
        }
        if u64::from(self.slots) * u64::from(self.slot_size) > MAX_RING_BYTES {
            return Err(format!(
                "ring of {} x {} bytes exceeds {MAX_RING_BYTES} bytes",
                self.slots, self.slot_size
            ));
        }
        Ok(())
    }

    /// The setup message carrying this data, as a frame.
    pub fn to_frame(&self) -> Frame {
        Frame::msg(&Setup::Hello(self.clone()))
    }
}

/// Flags of a [`ChunkHeader`].
pub const FIRST: u32 = 1;
pub const LAST: u32 = 2;

/// The first 8 bytes of every slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Bytes of frame data following the header.
    pub len: u32,
    pub flags: u32,
}

impl ChunkHeader {
    pub const SIZE: usize = 8;

    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.len.to_le_bytes());
        b[4..].copy_from_slice(&self.flags.to_le_bytes());
        b
    }

    pub fn decode(b: [u8; 8]) -> ChunkHeader {
        ChunkHeader {
            len: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            flags: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// One outgoing frame being cut into chunks.
#[derive(Debug)]
pub struct Outgoing {
    head: Vec<u8>,
    payload: Bytes,
    /// Bytes of `head ++ payload` already cut.
    done: usize,
    /// Send by RDMA WRITE with immediate (page data) rather than SEND.
    pub write: bool,
}

impl Outgoing {
    pub fn new(frame: &Frame) -> Result<Outgoing, FrameError> {
        let len = frame.wire_len();
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge {
                len,
                max: MAX_FRAME,
            });
        }
        Ok(Outgoing {
            head: frame.encode_head(),
            payload: frame.payload.clone(),
            done: 0,
            write: frame.payload.len() >= WRITE_THRESHOLD,
        })
    }

    fn total(&self) -> usize {
        self.head.len() + self.payload.len()
    }

    pub fn is_done(&self) -> bool {
        self.done >= self.total()
    }

    /// Cut the next chunk of at most `room` data bytes, handing its pieces
    /// (in order) to `put(offset_in_chunk, bytes)`; returns its header.
    pub fn next_chunk(&mut self, room: usize, mut put: impl FnMut(usize, &[u8])) -> ChunkHeader {
        let start = self.done;
        let end = (start + room).min(self.total());
        let mut at = 0;
        let h = self.head.len();
        if start < h {
            let piece = &self.head[start..end.min(h)];
            put(at, piece);
            at += piece.len();
        }
        if end > h {
            let piece = &self.payload[start.max(h) - h..end - h];
            put(at, piece);
        }
        let mut flags = 0;
        if start == 0 {
            flags |= FIRST;
        }
        if end == self.total() {
            flags |= LAST;
        }
        self.done = end;
        ChunkHeader {
            len: (end - start) as u32,
            flags,
        }
    }
}

/// Reassembles chunks into frames.
#[derive(Debug, Default)]
pub struct Reassembler {
    buf: Option<BytesMut>,
    /// Wire length of the frame being assembled.
    want: usize,
}

impl Reassembler {
    /// Feed one chunk (its header and data); returns a frame when `data`
    /// completed one. Any inconsistency is a protocol error: chunks arrive
    /// in order on a reliable connection, so it means a broken peer.
    pub fn feed(&mut self, h: ChunkHeader, data: &[u8]) -> Result<Option<Frame>, String> {
        if data.len() != h.len as usize {
            return Err(format!(
                "chunk header says {} bytes, {} given",
                h.len,
                data.len()
            ));
        }
        self.feed_with(h, |dst| {
            dst.copy_from_slice(data);
            Ok(())
        })
    }

    /// [`Reassembler::feed`], with the chunk's `h.len` data bytes copied
    /// by `fill` straight into the frame being assembled (from a ring
    /// slot: one copy from the adapter's memory to the frame's).
    pub fn feed_with(
        &mut self,
        h: ChunkHeader,
        fill: impl FnOnce(&mut [u8]) -> Result<(), String>,
    ) -> Result<Option<Frame>, String> {
        let len = h.len as usize;
        if h.flags & FIRST != 0 {
            if self.buf.is_some() {
                return Err("a new frame started before the last one ended".into());
            }
            if len < 4 {
                return Err("first chunk shorter than a frame prefix".into());
            }
            let mut buf = BytesMut::zeroed(len);
            fill(&mut buf[..])?;
            let total = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize + 4;
            if total > MAX_FRAME {
                return Err(format!("frame of {total} bytes exceeds {MAX_FRAME}"));
            }
            if len > total {
                return Err("chunks exceed the frame's length".into());
            }
            buf.reserve(total - len);
            self.want = total;
            self.buf = Some(buf);
        } else {
            let Some(buf) = self.buf.as_mut() else {
                return Err("continuation chunk without a first chunk".into());
            };
            let at = buf.len();
            if at + len > self.want {
                return Err("chunks exceed the frame's length".into());
            }
            buf.resize(at + len, 0);
            fill(&mut buf[at..])?;
        }
        let have = self.buf.as_ref().map_or(0, BytesMut::len);
        let complete = have == self.want;
        if (h.flags & LAST != 0) != complete {
            return Err(format!(
                "frame of {} bytes: last-chunk flag disagrees with {have} bytes received",
                self.want
            ));
        }
        if !complete {
            return Ok(None);
        }
        let mut bytes = self.buf.take().unwrap_or_default();
        match Frame::decode_from(&mut bytes, MAX_FRAME) {
            Ok(Some(f)) if bytes.is_empty() => Ok(Some(f)),
            Ok(_) => Err("frame length inconsistent with its chunks".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Send-side credit accounting for one connection.
#[derive(Debug, Clone)]
pub struct Credits {
    slots: u64,
    /// Messages we posted.
    pub sent: u64,
    /// Messages the peer has re-posted a receive for.
    acked: u64,
}

impl Credits {
    pub fn new(slots: u32) -> Credits {
        Credits {
            slots: u64::from(slots),
            sent: 0,
            acked: 0,
        }
    }

    /// Messages we may still post.
    pub fn available(&self) -> u64 {
        self.slots - (self.sent - self.acked)
    }

    pub fn may_send(&self) -> bool {
        self.available() >= 1
    }

    pub fn on_sent(&mut self) {
        self.sent += 1;
    }

    /// A re-post count from the peer, modulo 2^32 (from an immediate or
    /// the ack word; either may be older than the other, so the newest
    /// wins). It is widened against `sent`, which it can never exceed and
    /// never trail by 2^32 or more (at most `slots` are unacknowledged).
    pub fn on_ack(&mut self, count: u32) -> Result<(), String> {
        let behind = u64::from((self.sent as u32).wrapping_sub(count));
        if behind <= self.sent - self.acked {
            self.acked = self.sent - behind;
        } else if self.sent < 1 << 32 && u64::from(count) > self.sent {
            return Err(format!(
                "peer acknowledged {count} messages with {} sent",
                self.sent
            ));
        }
        // Otherwise older than what we know: a stale report.
        Ok(())
    }
}

/// How long the engine spins on the completion queue before it sleeps on
/// the completion channel, by default. DESIGN.md's measurements: a
/// sleeping wake-up costs tens of microseconds, so a short spin pays off
/// for back-to-back page transfers without burning a core when idle.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> ConnData {
        ConnData {
            version: RDMA_PROTOCOL_VERSION,
            gid: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 77, 0, 1],
            lid: 0,
            qpn: 0x11,
            psn: 0xabcdef,
            mtu: 3,
            ring_addr: 0x7f00_0000_1000,
            ring_rkey: 0x1234,
            ack_addr: 0x7f00_0040_1000,
            slots: 64,
            slot_size: 65536,
        }
    }

    #[test]
    fn conn_data_round_trips_through_a_frame() {
        let d = data();
        let f = d.to_frame();
        let bytes = f.to_bytes();
        let back = Frame::from_slice(&bytes, 4096).expect("frame");
        assert_eq!(back.decode::<Setup>().expect("decode"), Setup::Hello(d));
    }

    #[test]
    fn conn_data_garbage_and_truncation_are_errors() {
        let f = data().to_frame();
        for cut in 0..f.header.len() {
            assert!(
                dipc_wire::decode::<Setup>(&f.header[..cut]).is_err(),
                "cut {cut}"
            );
        }
        assert!(dipc_wire::decode::<Setup>(&[0xff; 40]).is_err());
    }

    #[test]
    fn validate_rejects_out_of_range_parameters() {
        assert_eq!(data().validate(), Ok(()));
        let bad = [
            ConnData {
                version: 2,
                ..data()
            },
            ConnData {
                qpn: 1 << 24,
                ..data()
            },
            ConnData {
                psn: 1 << 24,
                ..data()
            },
            ConnData { mtu: 0, ..data() },
            ConnData { mtu: 6, ..data() },
            ConnData { slots: 3, ..data() },
            ConnData {
                slot_size: 100,
                ..data()
            },
            ConnData {
                slots: 4096,
                slot_size: 1 << 20,
                ..data()
            },
        ];
        for d in bad {
            assert!(d.validate().is_err(), "{d:?}");
        }
    }

    #[test]
    fn chunk_header_round_trips() {
        let h = ChunkHeader {
            len: 65528,
            flags: FIRST | LAST,
        };
        assert_eq!(ChunkHeader::decode(h.encode()), h);
    }

    /// Cut `frame` into chunks of `room` bytes and reassemble it.
    fn cut_and_join(frame: &Frame, room: usize) -> (Frame, usize) {
        let mut out = Outgoing::new(frame).expect("outgoing");
        let mut r = Reassembler::default();
        let mut chunks = 0;
        loop {
            let mut slot = vec![0u8; room];
            let h = out.next_chunk(room, |at, b| slot[at..at + b.len()].copy_from_slice(b));
            chunks += 1;
            if let Some(f) = r.feed(h, &slot[..h.len as usize]).expect("feed") {
                assert!(out.is_done());
                return (f, chunks);
            }
            assert!(!out.is_done());
        }
    }

    fn pattern(len: usize) -> Bytes {
        (0..len)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    #[test]
    fn frames_survive_chunking_at_every_boundary() {
        for (payload, room) in [
            (0, 64),
            (10, 64),
            (4096, 65528),
            (4096, 100),
            (1 << 20, 65528),
            (300, 7),
        ] {
            let frame = Frame::new(&("page", 42u64), pattern(payload));
            let (back, chunks) = cut_and_join(&frame, room);
            assert_eq!(back, frame, "payload {payload}, room {room}");
            assert_eq!(chunks, frame.wire_len().div_ceil(room));
        }
    }

    #[test]
    fn page_payloads_go_by_write() {
        let small = Outgoing::new(&Frame::new(&1u8, pattern(4095))).expect("o");
        let page = Outgoing::new(&Frame::new(&1u8, pattern(4096))).expect("o");
        assert!(!small.write);
        assert!(page.write);
    }

    #[test]
    fn reassembler_rejects_broken_sequences() {
        let frame = Frame::new(&7u32, pattern(1000));
        let bytes = frame.to_bytes();
        let first = ChunkHeader {
            len: 500,
            flags: FIRST,
        };
        // Continuation without a first chunk.
        let mut r = Reassembler::default();
        assert!(
            r.feed(ChunkHeader { len: 10, flags: 0 }, &bytes[..10])
                .is_err()
        );
        // Two first chunks.
        let mut r = Reassembler::default();
        assert_eq!(r.feed(first, &bytes[..500]), Ok(None));
        assert!(r.feed(first, &bytes[..500]).is_err());
        // LAST too early.
        let mut r = Reassembler::default();
        assert!(
            r.feed(
                ChunkHeader {
                    len: 500,
                    flags: FIRST | LAST
                },
                &bytes[..500]
            )
            .is_err()
        );
        // Length disagreeing with data.
        let mut r = Reassembler::default();
        assert!(r.feed(first, &bytes[..400]).is_err());
        // More bytes than the frame.
        let mut r = Reassembler::default();
        let mut long = bytes.clone();
        long.extend_from_slice(&[0; 8]);
        assert!(
            r.feed(
                ChunkHeader {
                    len: long.len() as u32,
                    flags: FIRST | LAST
                },
                &long
            )
            .is_err()
        );
        // A huge announced length.
        let mut r = Reassembler::default();
        assert!(
            r.feed(
                ChunkHeader {
                    len: 4,
                    flags: FIRST
                },
                &u32::MAX.to_le_bytes()
            )
            .is_err()
        );
    }

    #[test]
    fn credits_count_in_flight_and_take_the_newest_ack() {
        let mut c = Credits::new(4);
        for _ in 0..4 {
            assert!(c.may_send());
            c.on_sent();
        }
        assert!(!c.may_send());
        c.on_ack(2).expect("ack");
        assert_eq!(c.available(), 2);
        // A stale report (an immediate older than the ack word) changes
        // nothing.
        c.on_ack(1).expect("stale ack");
        assert_eq!(c.available(), 2);
        c.on_ack(4).expect("ack");
        assert_eq!(c.available(), 4);
        // More than we sent is an error.
        assert!(c.on_ack(5).is_err());
        assert!(c.on_ack(4000).is_err());
    }

    #[test]
    fn credits_widen_across_the_32_bit_wrap() {
        let mut c = Credits::new(8);
        c.sent = u64::from(u32::MAX) + 5;
        c.acked = u64::from(u32::MAX) - 2;
        c.on_ack(3).expect("wrapped ack");
        assert_eq!(c.acked, u64::from(u32::MAX) + 4);
        assert_eq!(c.available(), 7);
        // The pre-wrap value is now stale.
        c.on_ack(u32::MAX).expect("stale");
        assert_eq!(c.available(), 7);
    }
}
