//! Decoding never panics and always gives back what was encoded.
//!
//! For every message type of `dipc_wire::referee` and `dipc_wire::local`
//! (and the id types inside them): arbitrary values round-trip through
//! `encode`/`decode` and through a `Frame`; every strict prefix of an
//! encoding is an error (postcard encodings are prefix-free, so a truncated
//! message can never pass for a shorter one); arbitrary bytes either fail
//! or decode to a value that itself round-trips. For `Frame`: round trips,
//! byte-by-byte arrival, back-to-back frames, oversize and malformed
//! lengths, and garbage.

use bytes::{BufMut, Bytes, BytesMut};
use dipc_wire::local::{self, LocalFrame};
use dipc_wire::referee;
use dipc_wire::{
    Frame, FrameError, Kind, MAX_FRAME, ObjectRecord, Params, Perm, ShmMode, decode, encode,
};
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

// ---------------------------------------------------------------- strategies

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Shm), Just(Kind::Msg), Just(Kind::Sem)]
}

fn shm_mode() -> impl Strategy<Value = ShmMode> {
    prop_oneof![Just(ShmMode::Page), Just(ShmMode::Segment)]
}

prop_compose! {
    fn perm()(uid in any::<u32>(), gid in any::<u32>(), cuid in any::<u32>(),
              cgid in any::<u32>(), mode in any::<u32>()) -> Perm {
        Perm { uid, gid, cuid, cgid, mode }
    }
}

fn params() -> impl Strategy<Value = Params> {
    prop_oneof![
        (
            any::<u64>(),
            any::<u32>(),
            shm_mode(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(size, unit, mode, quantum_us, prefetch)| Params::Shm {
                size,
                unit,
                mode,
                quantum_us,
                prefetch
            }),
        (any::<u64>(), any::<u32>()).prop_map(|(qbytes, msgmax)| Params::Msg { qbytes, msgmax }),
        any::<u32>().prop_map(|nsems| Params::Sem { nsems }),
    ]
}

prop_compose! {
    fn record()(key in any::<i32>(), id in any::<i32>(), kind in kind(), home in any::<u32>(),
                params in params(), perm in perm(), ctime in any::<i64>(),
                removed in any::<bool>()) -> ObjectRecord {
        ObjectRecord { key, id, kind, home, params, perm, ctime, removed }
    }
}

prop_compose! {
    fn caller()(uid in any::<u32>(), gid in any::<u32>(), pid in any::<i32>()) -> referee::Caller {
        referee::Caller { uid, gid, pid }
    }
}

prop_compose! {
    fn member()(node in any::<u32>(), name in text(), listen in text(), transport in text(),
                up in any::<bool>(), last_seen_ms in any::<u64>()) -> referee::Member {
        referee::Member { node, name, listen, transport, up, last_seen_ms }
    }
}

prop_compose! {
    fn object_status()(record in record(), available in any::<bool>()) -> referee::ObjectStatus {
        referee::ObjectStatus { record, available }
    }
}

prop_compose! {
    fn cluster_status()(cluster in text(),
                        members in prop::collection::vec(member(), 0..3),
                        objects in prop::collection::vec(object_status(), 0..3),
                        lost in prop::collection::vec(
                            (any::<i32>(), prop::collection::vec((any::<u64>(), any::<u64>()), 0..3),
                             any::<bool>()), 0..2))
                        -> referee::ClusterStatus {
        let lost = lost
            .into_iter()
            .map(|(id, ranges, home_down)| referee::LostPages {
                id,
                count: ranges.len() as u64,
                ranges,
                home_down,
            })
            .collect();
        referee::ClusterStatus { cluster, members, objects, lost }
    }
}

fn referee_request() -> impl Strategy<Value = referee::Request> {
    use referee::Request as R;
    prop_oneof![
        (
            text(),
            text(),
            text(),
            prop::collection::vec(record(), 0..3),
            any::<u64>()
        )
            .prop_map(|(name, listen, transport, hosted, incarnation)| R::Join {
                name,
                listen,
                transport,
                hosted,
                incarnation
            }),
        Just(R::Heartbeat),
        (any::<i32>(), any::<i32>(), params(), caller(), any::<i64>()).prop_map(
            |(key, flags, params, caller, now)| R::Get {
                key,
                flags,
                params,
                caller,
                now
            }
        ),
        any::<i32>().prop_map(|id| R::Lookup { id }),
        (kind(), any::<i32>()).prop_map(|(kind, key)| R::LookupKey { kind, key }),
        (any::<i32>(), any::<bool>())
            .prop_map(|(id, still_attached)| R::Remove { id, still_attached }),
        any::<i32>().prop_map(|id| R::Destroyed { id }),
        (any::<i32>(), perm()).prop_map(|(id, perm)| R::SetPerm { id, perm }),
        Just(R::Status),
    ]
}

fn referee_response() -> impl Strategy<Value = referee::Response> {
    use referee::Response as R;
    prop_oneof![
        (
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(member(), 0..3),
            any::<bool>()
        )
            .prop_map(
                |(node, heartbeat_ms, down_after_ms, members, was_down)| R::Joined {
                    node,
                    heartbeat_ms,
                    down_after_ms,
                    members,
                    was_down
                }
            ),
        Just(R::Ok),
        record().prop_map(R::Record),
        cluster_status().prop_map(R::Status),
        (any::<i32>(), text()).prop_map(|(errno, message)| R::Err { errno, message }),
    ]
}

fn referee_event() -> impl Strategy<Value = referee::Event> {
    use referee::Event as E;
    prop_oneof![
        (any::<i32>(), any::<i32>(), kind()).prop_map(|(id, key, kind)| E::ObjectGone {
            id,
            key,
            kind
        }),
        member().prop_map(E::NodeUp),
        any::<u32>().prop_map(|node| E::NodeDown { node }),
    ]
}

fn local_request() -> impl Strategy<Value = local::Request> {
    use local::Request as R;
    prop_oneof![
        any::<u32>().prop_map(|version| R::Hello { version }),
        (
            any::<i32>(),
            any::<u64>(),
            any::<i32>(),
            any::<Option<u32>>(),
            proptest::option::of(shm_mode()),
            any::<Option<u32>>(),
            any::<Option<u32>>()
        )
            .prop_map(
                |(key, size, flags, unit, mode, quantum_us, prefetch)| R::ShmGet {
                    key,
                    size,
                    flags,
                    unit,
                    mode,
                    quantum_us,
                    prefetch
                }
            ),
        (any::<i32>(), any::<bool>()).prop_map(|(id, readonly)| R::ShmAt { id, readonly }),
        (any::<i32>(), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
            |(id, addr, len, readonly)| R::ShmRegister {
                id,
                addr,
                len,
                readonly
            }
        ),
        any::<i32>().prop_map(|id| R::ShmAbort { id }),
        any::<u64>().prop_map(|addr| R::ShmDt { addr }),
        any::<i32>().prop_map(|id| R::ShmStat { id }),
        (any::<i32>(), any::<u32>(), any::<u32>(), any::<u32>())
            .prop_map(|(id, uid, gid, mode)| R::ShmSet { id, uid, gid, mode }),
        any::<i32>().prop_map(|id| R::ShmRmid { id }),
        (any::<i32>(), any::<i32>()).prop_map(|(key, flags)| R::MsgGet { key, flags }),
        (
            any::<i32>(),
            any::<i64>(),
            prop::collection::vec(any::<u8>(), 0..64),
            any::<i32>()
        )
            .prop_map(|(id, mtype, text, flags)| R::MsgSnd {
                id,
                mtype,
                text: text.into(),
                flags
            }),
        (any::<i32>(), any::<u64>(), any::<i64>(), any::<i32>()).prop_map(
            |(id, maxsize, msgtyp, flags)| R::MsgRcv {
                id,
                maxsize,
                msgtyp,
                flags
            }
        ),
        (any::<i32>(), msg_ctl_cmd()).prop_map(|(id, cmd)| R::MsgCtl { id, cmd }),
        (any::<i32>(), any::<i32>(), any::<i32>()).prop_map(|(key, nsems, flags)| R::SemGet {
            key,
            nsems,
            flags
        }),
        (
            any::<i32>(),
            prop::collection::vec(any::<(u16, i16, i16)>(), 0..8),
            any::<Option<u64>>()
        )
            .prop_map(|(id, sops, timeout_ns)| R::SemOp {
                id,
                sops: sops
                    .into_iter()
                    .map(|(num, op, flg)| local::SemBuf { num, op, flg })
                    .collect(),
                timeout_ns
            }),
        (any::<i32>(), sem_ctl_cmd()).prop_map(|(id, cmd)| R::SemCtl { id, cmd }),
        Just(R::IpcLimits),
        Just(R::Cancel),
    ]
}

fn msg_ctl_cmd() -> impl Strategy<Value = local::MsgCtlCmd> {
    use local::MsgCtlCmd as C;
    prop_oneof![
        Just(C::Stat),
        any::<(u32, u32, u32, u64)>().prop_map(|(uid, gid, mode, qbytes)| C::Set {
            uid,
            gid,
            mode,
            qbytes
        }),
        Just(C::Rmid),
    ]
}

fn sem_ctl_cmd() -> impl Strategy<Value = local::SemCtlCmd> {
    use local::SemCtlCmd as C;
    prop_oneof![
        any::<i32>().prop_map(|semnum| C::GetVal { semnum }),
        any::<(i32, i32)>().prop_map(|(semnum, val)| C::SetVal { semnum, val }),
        any::<i32>().prop_map(|semnum| C::GetPid { semnum }),
        any::<i32>().prop_map(|semnum| C::GetNcnt { semnum }),
        any::<i32>().prop_map(|semnum| C::GetZcnt { semnum }),
        Just(C::GetAll),
        prop::collection::vec(any::<u16>(), 0..8).prop_map(|values| C::SetAll { values }),
        Just(C::Stat),
        any::<(u32, u32, u32)>().prop_map(|(uid, gid, mode)| C::Set { uid, gid, mode }),
        Just(C::Rmid),
    ]
}

prop_compose! {
    fn shm_stat()(key in any::<i32>(), perm in perm(), segsz in any::<u64>(),
                  times in any::<(i64, i64, i64)>(), cpid in any::<i32>(), lpid in any::<i32>(),
                  nattch in any::<u64>()) -> local::ShmStat {
        let (atime, dtime, ctime) = times;
        local::ShmStat { key, perm, segsz, atime, dtime, ctime, cpid, lpid, nattch }
    }
}

fn local_response() -> impl Strategy<Value = local::Response> {
    use local::Response as R;
    prop_oneof![
        (any::<u32>(), any::<u32>()).prop_map(|(version, node)| R::Hello { version, node }),
        Just(R::Ok),
        any::<i32>().prop_map(R::Err),
        any::<i32>().prop_map(R::Id),
        (any::<u64>(), any::<u32>()).prop_map(|(size, unit)| R::ShmAttach { size, unit }),
        shm_stat().prop_map(R::ShmStat),
        (any::<i64>(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(mtype, text)| {
            R::Msg {
                mtype,
                text: text.into(),
            }
        }),
        (
            any::<i32>(),
            perm(),
            any::<(i64, i64, i64)>(),
            any::<(u64, u64, u64)>(),
            any::<(i32, i32)>()
        )
            .prop_map(
                |(key, perm, (stime, rtime, ctime), (cbytes, qnum, qbytes), (lspid, lrpid))| {
                    R::MsgStat(local::MsgStat {
                        key,
                        perm,
                        stime,
                        rtime,
                        ctime,
                        cbytes,
                        qnum,
                        qbytes,
                        lspid,
                        lrpid,
                    })
                }
            ),
        (any::<i32>(), perm(), any::<(i64, i64, u64)>()).prop_map(
            |(key, perm, (otime, ctime, nsems))| R::SemStat(local::SemStat {
                key,
                perm,
                otime,
                ctime,
                nsems
            })
        ),
        any::<i32>().prop_map(R::Value),
        prop::collection::vec(any::<u16>(), 0..8).prop_map(R::Values),
        any::<[u64; 9]>().prop_map(|l| R::Limits(local::IpcLimits {
            msgmax: l[0],
            msgmnb: l[1],
            msgmni: l[2],
            semmsl: l[3],
            semopm: l[4],
            semvmx: l[5],
            semaem: l[6],
            semmni: l[7],
            semmns: l[8],
        })),
    ]
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

// ------------------------------------------------------------------ checks

/// `value` survives encode/decode, and inside a frame with `payload`.
fn round_trip<T>(value: &T, payload: &Bytes) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let enc = encode(value);
    prop_assert_eq!(&decode::<T>(&enc).map_err(fail)?, value);
    let frame = Frame::new(value, payload.clone());
    let back = Frame::from_slice(&frame.to_bytes(), MAX_FRAME).map_err(fail)?;
    prop_assert_eq!(&back.decode::<T>().map_err(fail)?, value);
    prop_assert_eq!(&back.payload, payload);
    Ok(())
}

/// Every strict prefix of an encoding is rejected (and does not panic);
/// so is the encoding with a byte appended.
fn truncations_fail<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + std::fmt::Debug,
{
    let enc = encode(value);
    for k in 0..enc.len() {
        prop_assert!(
            decode::<T>(&enc[..k]).is_err(),
            "prefix of {} bytes of {:?} decoded",
            k,
            value
        );
    }
    let mut longer = enc.clone();
    longer.push(0);
    prop_assert!(decode::<T>(&longer).is_err());
    Ok(())
}

/// Arbitrary bytes: an error, or a value that round-trips.
fn garbage<T>(raw: &[u8]) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = decode::<T>(raw) {
        prop_assert_eq!(decode::<T>(&encode(&v)).map_err(fail)?, v);
    }
    Ok(())
}

fn fail(e: FrameError) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// The local protocol's messages in their frames: a message text is the
/// payload; a payload after any other message is refused.
fn local_round_trip<T>(value: &T, payload: &Bytes) -> Result<(), TestCaseError>
where
    T: LocalFrame + PartialEq + std::fmt::Debug,
{
    let wire = Frame::from_slice(&value.frame().to_bytes(), MAX_FRAME).map_err(fail)?;
    prop_assert_eq!(&T::from_frame(&wire).map_err(fail)?, value);
    let mut extra = wire.clone();
    extra.payload = payload.clone();
    match T::from_frame(&extra) {
        // No payload, or a message with a text taking it as its text.
        Ok(v) if payload.is_empty() && value.text().is_none() => prop_assert_eq!(&v, value),
        Ok(v) => {
            prop_assert!(value.text().is_some());
            prop_assert_eq!(v.text(), Some(payload));
        }
        Err(_) => prop_assert!(value.text().is_none() && !payload.is_empty()),
    }
    Ok(())
}

macro_rules! message_tests {
    ($($name:ident: $ty:ty = $strategy:expr, $round_trip:ident;)*) => {$(
        mod $name {
            use super::*;
            proptest! {
                #[test]
                fn round_trips(v in $strategy, p in bytes(300)) {
                    $round_trip::<$ty>(&v, &p)?;
                }

                #[test]
                fn truncated_is_an_error(v in $strategy) {
                    truncations_fail::<$ty>(&v)?;
                }

                #[test]
                fn garbage_does_not_panic(raw in prop::collection::vec(any::<u8>(), 0..200)) {
                    garbage::<$ty>(&raw)?;
                }

                #[test]
                fn mutated_does_not_panic(v in $strategy, at in any::<prop::sample::Index>(),
                                          byte in any::<u8>()) {
                    let mut enc = encode(&v);
                    if !enc.is_empty() {
                        let i = at.index(enc.len());
                        enc[i] = byte;
                    }
                    garbage::<$ty>(&enc)?;
                }
            }
        }
    )*};
}

message_tests! {
    referee_request: referee::Request = referee_request(), round_trip;
    referee_response: referee::Response = referee_response(), round_trip;
    referee_event: referee::Event = referee_event(), round_trip;
    referee_member: referee::Member = member(), round_trip;
    referee_cluster_status: referee::ClusterStatus = cluster_status(), round_trip;
    referee_caller: referee::Caller = caller(), round_trip;
    local_request: local::Request = local_request(), local_round_trip;
    local_response: local::Response = local_response(), local_round_trip;
    local_shm_stat: local::ShmStat = shm_stat(), round_trip;
    object_record: ObjectRecord = record(), round_trip;
}

// ------------------------------------------------------------------ frames

fn frame() -> impl Strategy<Value = Frame> {
    (bytes(64), bytes(2000)).prop_map(|(header, payload)| Frame { header, payload })
}

proptest! {
    #[test]
    fn frame_round_trips(f in frame()) {
        let mut buf = BytesMut::new();
        f.encode_into(&mut buf);
        prop_assert_eq!(buf.len(), f.wire_len());
        let mut head = f.encode_head();
        head.extend_from_slice(&f.payload);
        prop_assert_eq!(&head[..], &buf[..]);
        let got = Frame::decode_from(&mut buf, MAX_FRAME).map_err(fail)?;
        prop_assert_eq!(got, Some(f));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn frames_arriving_in_pieces(frames in prop::collection::vec(frame(), 1..5),
                                 chunk in 1usize..700) {
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode_into(&mut wire);
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(f) = Frame::decode_from(&mut buf, MAX_FRAME).map_err(fail)? {
                got.push(f);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn truncated_frame_is_incomplete_or_error(f in frame(), at in any::<prop::sample::Index>()) {
        let wire = f.to_bytes();
        let cut = at.index(wire.len());
        let mut buf = BytesMut::from(&wire[..cut]);
        prop_assert_eq!(Frame::decode_from(&mut buf, MAX_FRAME), Ok(None));
        prop_assert!(Frame::from_slice(&wire[..cut], MAX_FRAME).is_err());
    }

    #[test]
    fn frame_garbage_does_not_panic(raw in prop::collection::vec(any::<u8>(), 0..300),
                                    max in prop_oneof![Just(64usize), Just(4096), Just(MAX_FRAME)]) {
        let mut buf = BytesMut::from(&raw[..]);
        let mut consumed = 0;
        loop {
            let before = buf.len();
            match Frame::decode_from(&mut buf, max) {
                Ok(Some(f)) => {
                    // What was taken is exactly prefix + header + payload.
                    prop_assert_eq!(before - buf.len(), f.wire_len());
                    prop_assert!(f.wire_len() <= max);
                    consumed += f.wire_len();
                }
                Ok(None) | Err(_) => break,
            }
        }
        prop_assert!(consumed <= raw.len());
        let _ = Frame::from_slice(&raw, max);
    }

    #[test]
    fn oversized_length_is_refused(len in (MAX_FRAME as u32 - 3)..=u32::MAX) {
        let mut buf = BytesMut::new();
        buf.put_u32_le(len);
        buf.put_u32_le(0);
        let r = Frame::decode_from(&mut buf, MAX_FRAME);
        prop_assert!(matches!(r, Err(FrameError::TooLarge { .. })), "{:?}", r);
    }

    #[test]
    fn header_longer_than_frame_is_refused(total in 4u32..1000, extra in 1u32..1000) {
        let mut buf = BytesMut::new();
        buf.put_u32_le(total);
        buf.put_u32_le(total - 4 + extra);
        buf.put_bytes(0, total as usize);
        let r = Frame::decode_from(&mut buf, MAX_FRAME);
        prop_assert!(matches!(r, Err(FrameError::BadHeaderLen { .. })), "{:?}", r);
    }
}

#[test]
fn frame_shorter_than_its_header_field_is_refused() {
    for total in 0u32..4 {
        let mut buf = BytesMut::new();
        buf.put_u32_le(total);
        buf.put_bytes(0, 8);
        assert!(
            matches!(
                Frame::decode_from(&mut buf, MAX_FRAME),
                Err(FrameError::BadHeaderLen { .. })
            ),
            "total {total}"
        );
    }
}

#[test]
fn empty_frame_round_trips() {
    let f = Frame::default();
    assert_eq!(f.wire_len(), 8);
    assert_eq!(Frame::from_slice(&f.to_bytes(), MAX_FRAME), Ok(f));
}

#[test]
fn trailing_bytes_after_a_frame_are_refused() {
    let mut wire = Frame::msg(&referee::Request::Heartbeat).to_bytes();
    wire.push(0);
    assert!(Frame::from_slice(&wire, MAX_FRAME).is_err());
}

/// `dipc_wire::byte_buf` (the peer protocol's message texts) writes one
/// byte string: the same bytes postcard gives a plain `Vec<u8>` (a
/// sequence of `u8`), and it decodes back into a `Vec<u8>` or a `Bytes`,
/// also at 64 KiB.
#[test]
fn byte_buf_texts_encode_as_a_plain_byte_sequence() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Ours {
        mtype: i64,
        #[serde(with = "dipc_wire::byte_buf")]
        text: Vec<u8>,
    }
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Shared {
        mtype: i64,
        #[serde(with = "dipc_wire::byte_buf")]
        text: Bytes,
    }
    #[derive(serde::Serialize)]
    struct Plain {
        mtype: i64,
        text: Vec<u8>,
    }
    for len in [0usize, 1, 127, 128, 8192, 65536] {
        let text: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
        let ours = Ours {
            mtype: 3,
            text: text.clone(),
        };
        let plain = Plain {
            mtype: 3,
            text: text.clone(),
        };
        let bytes = dipc_wire::encode(&ours);
        assert_eq!(bytes, dipc_wire::encode(&plain), "{len} bytes");
        assert_eq!(dipc_wire::decode::<Ours>(&bytes), Ok(ours));
        let shared = dipc_wire::decode::<Shared>(&bytes).expect("decode as Bytes");
        assert_eq!(shared.text, text);
    }
}

/// The local protocol's message texts are the frame's payload: the
/// header stays a few bytes whatever the text, and the decoded text is a
/// view of the buffer the frame was read into, not a copy.
#[test]
fn local_message_texts_are_the_payload_and_are_not_copied() {
    for len in [0usize, 1, 8192, 65536] {
        let text: Bytes = (0..len)
            .map(|i| (i * 7 % 256) as u8)
            .collect::<Vec<u8>>()
            .into();
        let resp = local::Response::Msg {
            mtype: 3,
            text: text.clone(),
        };
        let frame = resp.frame();
        assert!(
            frame.header.len() < 16,
            "{len} bytes: header {}",
            frame.header.len()
        );
        assert_eq!(frame.payload, text);
        let wire = frame.to_bytes();
        let received = Frame::from_vec(wire, MAX_FRAME).expect("frame");
        let back = local::Response::from_frame(&received).expect("decode");
        let local::Response::Msg { text: got, .. } = &back else {
            panic!("{back:?}");
        };
        assert_eq!(got, &text);
        if len > 0 {
            assert_eq!(got.as_ptr(), received.payload.as_ptr(), "text copied");
        }
        let req = local::Request::MsgSnd {
            id: 1,
            mtype: 2,
            text: text.clone(),
            flags: 0,
        };
        let back = local::Request::from_frame(&req.frame()).expect("decode");
        assert_eq!(back, req);
    }
}
