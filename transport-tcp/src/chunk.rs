//! Messages larger than one frame: cut into chunks on the way out, put
//! back together on the way in.
//!
//! A message whose payload is at most [`CHUNK`] bytes travels as one frame,
//! exactly as before. A larger one (a segment-mode segment moving whole)
//! travels as a run of *part* frames followed by its own frame:
//!
//! ```text
//! [Head::Part{total, offset: 0}      | payload[0 .. CHUNK]          ]
//! [Head::Part{total, offset: CHUNK}  | payload[CHUNK .. 2*CHUNK]    ]
//! ...
//! [the message's head and body       | payload[k*CHUNK .. total]    ]  (1..=CHUNK bytes)
//! ```
//!
//! The writer cuts a message only when it writes it, so its frames are
//! consecutive on the link (nothing else can come between them), and no
//! frame on the wire is larger than `CHUNK` plus a header: well under
//! `MAX_FRAME`, and a size every transport's rings handle (RDMA cuts frames
//! into slots anyway). Cutting copies nothing (`Bytes` slices).
//!
//! The reader checks every part against what came before, and refuses a
//! message at once (ending the connection) when
//!
//! * it announces more than the link's limit (`rpc_with`'s
//!   `max_message`): nothing is buffered beyond that, whatever the peer
//!   claims;
//! * a part is empty, is not where the previous one ended (out of order,
//!   repeated, missing), announces another total, or would go past it;
//! * the message's own frame does not carry exactly the rest (a missing
//!   end, or a frame of another message in the middle);
//! * the connection ends, or no frame comes for the write-stall bound,
//!   between two parts ([`mod@crate::rpc`] enforces that one).
//!
//! A message is handed to the application only when it is complete, so a
//! peer that dies in the middle of one leaves no partial message behind.
//!
//! The buffer a message is put together in is reused for the next large
//! message once the application has dropped the previous one: fresh memory
//! costs a page fault per page, more than the copy itself. So a connection
//! keeps the buffer of the largest message it received (at most the
//! limit) while it lives.

use bytes::{Bytes, BytesMut};
use dipc_wire::Frame;

use crate::rpc::Head;

/// Largest payload sent as one frame; larger payloads are cut into parts of
/// this size.
pub const CHUNK: usize = 4 * 1024 * 1024;

/// Append the frames that carry `frame` to `out`: `frame` itself if its
/// payload fits in one [`CHUNK`], else its parts and then `frame` with the
/// last piece of its payload.
pub(crate) fn split(frame: Frame, out: &mut Vec<Frame>) {
    split_at(frame, CHUNK, out)
}

fn split_at(frame: Frame, chunk: usize, out: &mut Vec<Frame>) {
    let total = frame.payload.len();
    if total <= chunk {
        out.push(frame);
        return;
    }
    let mut offset = 0;
    while total - offset > chunk {
        let head = Head::Part {
            total: total as u64,
            offset: offset as u64,
        };
        out.push(Frame {
            header: Bytes::from(dipc_wire::encode(&head)),
            payload: frame.payload.slice(offset..offset + chunk),
        });
        offset += chunk;
    }
    out.push(Frame {
        header: frame.header,
        payload: frame.payload.slice(offset..),
    });
}

/// The wire length of the largest frame [`split`] makes of `frame`.
pub(crate) fn largest_piece(frame: &Frame) -> usize {
    let last = match frame.payload.len() {
        0 => 0,
        n => n - (n - 1) / CHUNK * CHUNK,
    };
    dipc_wire::frame::PREFIX + frame.header.len() + last
}

/// The message being received in parts, if any.
#[derive(Debug)]
pub(crate) struct Reassembly {
    max: usize,
    partial: Option<Partial>,
    /// The last message put together here, to take its buffer back for
    /// the next one when nobody else holds it any more.
    spare: Option<Bytes>,
}

#[derive(Debug)]
struct Partial {
    buf: BytesMut,
    total: usize,
}

impl Reassembly {
    /// Accept messages of up to `max` payload bytes.
    pub(crate) fn new(max: usize) -> Self {
        Reassembly {
            max,
            partial: None,
            spare: None,
        }
    }

    /// `(received, total)` of the message in progress.
    pub(crate) fn in_progress(&self) -> Option<(usize, usize)> {
        self.partial.as_ref().map(|p| (p.buf.len(), p.total))
    }

    /// A part frame: `payload` is the piece of a `total`-byte payload
    /// starting at `offset`.
    pub(crate) fn part(&mut self, total: u64, offset: u64, payload: &[u8]) -> Result<(), String> {
        let total = usize::try_from(total).unwrap_or(usize::MAX);
        if total > self.max {
            return Err(format!(
                "a message of {total} payload bytes exceeds the limit of {} bytes",
                self.max
            ));
        }
        if payload.is_empty() {
            return Err(format!("an empty part at offset {offset}"));
        }
        let p = match &mut self.partial {
            Some(p) => p,
            None if offset == 0 => {
                // Bounded by `max`, checked above; filled as parts arrive.
                let buf = self
                    .spare
                    .take()
                    .and_then(|b| b.try_into_mut().ok())
                    .filter(|b| b.capacity() >= total)
                    .map(|mut b| {
                        b.clear();
                        b
                    })
                    .unwrap_or_else(|| BytesMut::with_capacity(total));
                self.partial.insert(Partial { buf, total })
            }
            None => {
                return Err(format!(
                    "a part at offset {offset} of a {total}-byte message whose start never came"
                ));
            }
        };
        if p.total != total {
            return Err(format!(
                "a part announces a {total}-byte message in the middle of a {}-byte one",
                p.total
            ));
        }
        if offset != p.buf.len() as u64 {
            return Err(format!(
                "a part at offset {offset} where offset {} was due (out of order)",
                p.buf.len()
            ));
        }
        if p.buf.len() + payload.len() >= total {
            return Err(format!(
                "parts reach {} of a {total}-byte message, leaving nothing for its end",
                p.buf.len() + payload.len()
            ));
        }
        p.buf.extend_from_slice(payload);
        Ok(())
    }

    /// A frame that is not a part: the whole payload of its message (its
    /// own if no parts came before it).
    pub(crate) fn finish(&mut self, payload: Bytes) -> Result<Bytes, String> {
        let Some(mut p) = self.partial.take() else {
            return Ok(payload);
        };
        let got = p.buf.len() + payload.len();
        if got != p.total {
            return Err(format!(
                "a {}-byte message ended after {got} bytes (an end is missing, or another \
                 message came in its middle)",
                p.total
            ));
        }
        p.buf.extend_from_slice(&payload);
        let whole = p.buf.freeze();
        self.spare = Some(whole.clone());
        Ok(whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Bytes {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn head_of(f: &Frame) -> Head {
        postcard::take_from_bytes::<Head>(&f.header)
            .expect("a head")
            .0
    }

    /// Feed frames to a reassembly as the reader does.
    fn feed(r: &mut Reassembly, frames: Vec<Frame>) -> Result<Vec<(Bytes, Bytes)>, String> {
        let mut out = Vec::new();
        for f in frames {
            match head_of(&f) {
                Head::Part { total, offset } => r.part(total, offset, &f.payload)?,
                _ => out.push((f.header.clone(), r.finish(f.payload)?)),
            }
        }
        Ok(out)
    }

    fn message(len: usize) -> Frame {
        Frame {
            header: Bytes::from(dipc_wire::encode(&Head::Notify)),
            payload: pattern(len),
        }
    }

    #[test]
    fn small_messages_are_one_frame_and_large_ones_round_trip() {
        for (len, chunk, pieces) in [
            (0, 8, 1),
            (8, 8, 1),
            (9, 8, 2),
            (16, 8, 2),
            (17, 8, 3),
            (100, 7, 15),
        ] {
            let m = message(len);
            let mut wire = Vec::new();
            split_at(m.clone(), chunk, &mut wire);
            assert_eq!(wire.len(), pieces, "{len} bytes in chunks of {chunk}");
            assert!(wire.iter().all(|f| f.payload.len() <= chunk));
            let last = wire.last().expect("a frame");
            assert_eq!(last.header, m.header, "the message's own frame comes last");
            assert!(len == 0 || !last.payload.is_empty());
            let mut r = Reassembly::new(len);
            let got = feed(&mut r, wire).expect("reassembles");
            assert_eq!(got, vec![(m.header.clone(), m.payload.clone())]);
            assert_eq!(r.in_progress(), None);
        }
    }

    #[test]
    fn largest_piece_is_the_message_frame_with_the_last_chunk() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5] {
            let m = message(len);
            let mut wire = Vec::new();
            split(m.clone(), &mut wire);
            let biggest = wire.iter().map(Frame::wire_len).max().expect("a frame");
            assert_eq!(largest_piece(&m), wire.last().expect("a frame").wire_len());
            assert!(biggest <= CHUNK + 64, "{len}: {biggest}");
        }
    }

    #[test]
    fn messages_follow_each_other() {
        let (a, b, c) = (message(20), message(3), message(9));
        let mut wire = Vec::new();
        for m in [a.clone(), b.clone(), c.clone()] {
            split_at(m, 4, &mut wire);
        }
        let mut r = Reassembly::new(64);
        let got: Vec<Bytes> = feed(&mut r, wire)
            .expect("reassembles")
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        assert_eq!(got, vec![a.payload, b.payload, c.payload]);
    }

    fn parts(len: usize, chunk: usize) -> Vec<Frame> {
        let mut wire = Vec::new();
        split_at(message(len), chunk, &mut wire);
        wire
    }

    fn refused(frames: Vec<Frame>, max: usize, want: &str) {
        let err = feed(&mut Reassembly::new(max), frames).expect_err(want);
        assert!(err.contains(want), "{err:?} does not say {want:?}");
    }

    #[test]
    fn bad_sequences_are_refused_with_a_reason() {
        // Out of order: the second and third parts swapped.
        let mut w = parts(40, 8);
        w.swap(1, 2);
        refused(w, 64, "out of order");
        // A part repeated.
        let mut w = parts(40, 8);
        w.insert(1, w[0].clone());
        refused(w, 64, "out of order");
        // The first part missing.
        let mut w = parts(40, 8);
        w.remove(0);
        refused(w, 64, "start never came");
        // A message larger than the limit: refused at its first part.
        refused(parts(40, 8), 39, "exceeds the limit");
        // The end missing: another message's frame comes instead.
        let mut w = parts(40, 8);
        w.pop();
        w.push(message(3));
        refused(w, 64, "ended after");
        // The end missing: a new message starts instead.
        let mut w = parts(40, 8);
        w.pop();
        w.extend(parts(40, 8));
        refused(w, 64, "out of order");
        // Parts that already cover the whole message.
        let mut w = parts(16, 8);
        let last = w.pop().expect("a frame");
        let head = Head::Part {
            total: 16,
            offset: 8,
        };
        w.push(Frame {
            header: Bytes::from(dipc_wire::encode(&head)),
            payload: last.payload,
        });
        refused(w, 64, "leaving nothing for its end");
        // Another total in the middle.
        let mut w = parts(40, 8);
        w[1].header = Bytes::from(dipc_wire::encode(&Head::Part {
            total: 41,
            offset: 8,
        }));
        refused(w, 64, "in the middle of a 40-byte one");
        // An empty part.
        let empty = Frame {
            header: Bytes::from(dipc_wire::encode(&Head::Part {
                total: 40,
                offset: 0,
            })),
            payload: Bytes::new(),
        };
        refused(vec![empty], 64, "empty part");
        // A claim of an enormous message is refused before any allocation.
        let mut r = Reassembly::new(1 << 20);
        let err = r.part(u64::MAX, 0, b"x").expect_err("too large");
        assert!(err.contains("exceeds the limit"), "{err}");
        assert_eq!(r.in_progress(), None);
    }

    #[test]
    fn a_buffer_is_reused_once_the_application_dropped_its_message() {
        let mut r = Reassembly::new(64);
        let first = feed(&mut r, parts(40, 8)).expect("first");
        let addr = first[0].1.as_ptr();
        // Still held: the next message gets a buffer of its own.
        let second = feed(&mut r, parts(40, 8)).expect("second");
        assert_ne!(second[0].1.as_ptr(), addr);
        assert_eq!(first[0].1, message(40).payload);
        let addr = second[0].1.as_ptr();
        drop((first, second));
        // Dropped: the buffer comes back, and the message is still right.
        let third = feed(&mut r, parts(33, 8)).expect("third");
        assert_eq!(third[0].1.as_ptr(), addr);
        assert_eq!(third[0].1, message(33).payload);
    }

    #[test]
    fn progress_is_reported_between_parts() {
        let mut r = Reassembly::new(64);
        let mut w = parts(20, 8).into_iter();
        let f = w.next().expect("a part");
        let Head::Part { total, offset } = head_of(&f) else {
            panic!("a part first")
        };
        r.part(total, offset, &f.payload).expect("first part");
        assert_eq!(r.in_progress(), Some((8, 20)));
    }
}
