//! The peer-protocol fuzz target as a stable test.
//!
//! The body of the cargo-fuzz target `peer_msgs` (`fuzz/src/peer.rs`) is
//! compiled in here and fed every kept crash input
//! (`fuzz/regressions/peer_msgs/`) and a few seconds of seeded random
//! inputs: fresh bytes and mutations of valid peer frames. It decodes them
//! as the node does after a handshake (envelope, then `PeerReq`,
//! `PeerResp` or `PeerMsg`) and checks round trips. `DIPC_FUZZ_SEED` picks
//! another seed.

#[path = "../../fuzz/src/driver.rs"]
#[allow(dead_code)]
mod driver;
#[path = "../../fuzz/src/peer.rs"]
mod peer;

use std::time::Duration;

use dipc_dsm::coherence::CohMsg;
use dipc_dsm::ipc::{Caller, ProcId};
use dipc_node::peer::{PeerMsg, PeerReq, PeerResp};
use dipc_transport_tcp::Head;
use dipc_wire::Frame;
use dipc_wire::local::SemBuf;

fn with_head<T: serde::Serialize>(head: Head, body: &T) -> Vec<u8> {
    let mut h = dipc_wire::encode(&head);
    h.extend(dipc_wire::encode(body));
    h
}

fn seeds() -> Vec<Vec<u8>> {
    let caller = Caller {
        proc_: ProcId { node: 1, pid: 7 },
        uid: 1000,
        gid: 100,
    };
    let headers = vec![
        with_head(Head::Notify, &PeerMsg::Hello { node: 3 }),
        with_head(
            Head::Notify,
            &PeerMsg::Coh(CohMsg::Data {
                seg: 5,
                unit: 1,
                excl: true,
                acks: 2,
            }),
        ),
        with_head(
            Head::Call(9),
            &PeerReq::SemOp {
                id: 4,
                caller,
                token: 1,
                sops: vec![SemBuf {
                    num: 0,
                    op: -1,
                    flg: 0,
                }],
                timeout_ns: None,
                now: 5,
            },
        ),
        with_head(
            Head::Call(10),
            &PeerReq::MsgSnd {
                id: 4,
                caller,
                token: 2,
                mtype: 1,
                text: b"abc"[..].into(),
                flags: 0,
                now: 5,
            },
        ),
        with_head(
            Head::Reply(9),
            &PeerResp::Msg {
                mtype: 1,
                text: vec![0; 8].into(),
            },
        ),
        with_head(Head::Reply(10), &PeerResp::Values(vec![1, 2, 3])),
    ];
    let framed: Vec<Vec<u8>> = headers
        .iter()
        .map(|h| {
            Frame {
                header: h.clone().into(),
                payload: vec![7u8; 16].into(),
            }
            .to_bytes()
        })
        .collect();
    headers.into_iter().chain(framed).collect()
}

#[test]
fn peer_messages_decode_without_panics_and_round_trip() {
    let n = driver::run(
        env!("CARGO_MANIFEST_DIR"),
        "peer_msgs",
        &seeds(),
        peer::peer_msgs,
        Duration::from_secs(3),
        200_000,
    );
    eprintln!("peer_msgs: {n} random cases");
}
