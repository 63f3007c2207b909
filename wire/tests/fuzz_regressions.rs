//! The wire fuzz targets as stable tests.
//!
//! The bodies of the cargo-fuzz targets `frame`, `referee_msgs` and
//! `local_msgs` (`fuzz/src/wire.rs`) are compiled in here and fed every
//! kept crash input (`fuzz/regressions/<target>/`) and a few seconds of
//! seeded random inputs: fresh bytes and mutations of valid encodings. So
//! the decoders' "no panic, round trips hold" properties are checked on
//! every `cargo test`, without nightly. `DIPC_FUZZ_SEED` picks another seed.

#[path = "../../fuzz/src/driver.rs"]
#[allow(dead_code)]
mod driver;
#[path = "../../fuzz/src/wire.rs"]
mod wire;

use std::time::Duration;

use dipc_wire::local::{self, LocalFrame, SemBuf, SemCtlCmd};
use dipc_wire::referee::{self, Caller, Member};
use dipc_wire::{Frame, Kind, ObjectRecord, Params, Perm, ShmMode};

const BUDGET: Duration = Duration::from_secs(3);
const MAX_CASES: u64 = 200_000;

fn record() -> ObjectRecord {
    ObjectRecord {
        key: 0x1234,
        id: dipc_wire::DIPC_ID_BIT | 3,
        kind: Kind::Shm,
        home: 2,
        params: Params::Shm {
            size: 8192,
            unit: 4096,
            mode: ShmMode::Page,
            quantum_us: 0,
            prefetch: 8,
        },
        perm: Perm {
            uid: 1,
            gid: 2,
            cuid: 1,
            cgid: 2,
            mode: 0o640,
        },
        ctime: 77,
        removed: false,
    }
}

fn referee_seeds() -> Vec<Vec<u8>> {
    let member = Member {
        node: 1,
        name: "n".into(),
        listen: "127.0.0.1:1".into(),
        transport: "tcp".into(),
        up: true,
        last_seen_ms: 5,
    };
    let mut v = vec![
        dipc_wire::encode(&referee::Request::Join {
            name: "node-0".into(),
            listen: "127.0.0.1:7001".into(),
            transport: "tcp".into(),
            hosted: vec![record()],
            incarnation: 7,
        }),
        dipc_wire::encode(&referee::Request::Get {
            key: 5,
            flags: 0o1600,
            params: Params::Sem { nsems: 3 },
            caller: Caller {
                uid: 0,
                gid: 0,
                pid: 9,
            },
            now: 1,
        }),
        dipc_wire::encode(&referee::Response::Record(record())),
        dipc_wire::encode(&referee::Response::Joined {
            node: 1,
            heartbeat_ms: 100,
            down_after_ms: 500,
            members: vec![member.clone()],
            was_down: true,
        }),
        dipc_wire::encode(&referee::Event::NodeUp(member)),
        dipc_wire::encode(&referee::Response::Err {
            errno: 2,
            message: "no".into(),
        }),
    ];
    let framed: Vec<Vec<u8>> = v
        .iter()
        .map(|h| Frame::new(&(), h.clone().into()).to_bytes())
        .collect();
    v.extend(framed);
    v
}

fn local_seeds() -> Vec<Vec<u8>> {
    let reqs = [
        local::Request::Hello { version: 1 },
        local::Request::ShmGet {
            key: 1,
            size: 4096,
            flags: 0o1600,
            unit: Some(4096),
            mode: Some(ShmMode::Segment),
            quantum_us: Some(1000),
            prefetch: None,
        },
        local::Request::MsgSnd {
            id: 5,
            mtype: 1,
            text: b"hello"[..].into(),
            flags: 0,
        },
        local::Request::SemOp {
            id: 6,
            sops: vec![SemBuf {
                num: 0,
                op: -1,
                flg: 0x1000,
            }],
            timeout_ns: Some(5),
        },
        local::Request::SemCtl {
            id: 6,
            cmd: SemCtlCmd::SetAll {
                values: vec![1, 2, 3],
            },
        },
    ];
    let resps = [
        local::Response::Hello {
            version: 1,
            node: 2,
        },
        local::Response::Msg {
            mtype: 3,
            text: vec![1; 40].into(),
        },
        local::Response::Values(vec![1, 2]),
        local::Response::Err(22),
    ];
    let mut v: Vec<Vec<u8>> = reqs.iter().map(dipc_wire::encode).collect();
    v.extend(resps.iter().map(dipc_wire::encode));
    v.extend(reqs.iter().map(|r| r.frame().to_bytes()));
    v.extend(resps.iter().map(|r| r.frame().to_bytes()));
    v
}

fn frame_seeds() -> Vec<Vec<u8>> {
    let mut two = Frame::new(&7u32, vec![9u8; 30].into()).to_bytes();
    two.extend(Frame::msg(&local::Request::Cancel).to_bytes());
    let mut v = Vec::new();
    for pick in [0u8, 1, 2, 3, 0x13, 0xff] {
        let mut s = vec![pick];
        s.extend(&two);
        v.push(s);
    }
    v
}

fn run(target: &str, seeds: &[Vec<u8>], body: fn(&[u8])) {
    let n = driver::run(
        env!("CARGO_MANIFEST_DIR"),
        target,
        seeds,
        body,
        BUDGET,
        MAX_CASES,
    );
    eprintln!("{target}: {n} random cases");
}

#[test]
fn frame_codec_never_panics_and_is_split_independent() {
    run("frame", &frame_seeds(), wire::frame);
}

#[test]
fn referee_messages_decode_without_panics_and_round_trip() {
    run("referee_msgs", &referee_seeds(), wire::referee_msgs);
}

#[test]
fn local_messages_decode_without_panics_and_round_trip() {
    run("local_msgs", &local_seeds(), wire::local_msgs);
}

/// The body's own checks can fail: a decoder that stopped consuming
/// exactly one frame would be caught (guards against a body that checks
/// nothing).
#[test]
fn frame_body_sees_a_valid_frame() {
    let f = Frame::new(&1u8, vec![2u8; 10].into());
    let bytes = f.to_bytes();
    let mut input = vec![3u8];
    input.extend(&bytes);
    wire::frame(&input);
    assert_eq!(Frame::from_slice(&bytes, dipc_wire::MAX_FRAME), Ok(f));
}
