//! Fuzz body for the referee's state machine, `dipc_referee::Registry`,
//! fed arbitrary requests from arbitrary origins and clock ticks.
//!
//! Shared by the cargo-fuzz target `registry` and, through `#[path]`, by
//! the stable regression test `referee/tests/fuzz_regressions.rs`.
//!
//! Checked after every input: the registry's own invariants
//! (`check_invariants`), that replaying every persisted write from the
//! initial snapshot gives the registry's snapshot (what a restart resumes
//! from), and that a registry restarted from that snapshot keeps its
//! invariants. Requests are either built from a small vocabulary (so that
//! keys, ids and nodes collide often) or decoded by postcard from raw
//! bytes, as the referee's server would decode them off the wire.

use arbitrary::{Arbitrary, Unstructured};
use dipc_referee::{Config, Origin, Registry, Snapshot};
use dipc_wire::referee::{Caller, Request};
use dipc_wire::{DIPC_ID_BIT, Kind, ObjectRecord, Params, Perm, ShmMode};

const MAX_STEPS: usize = 128;

#[derive(Debug, Arbitrary)]
enum ReqIn {
    Join {
        name: u8,
        hosted: Vec<RecIn>,
    },
    Heartbeat,
    Get {
        key: u8,
        flags: u16,
        params: ParamsIn,
        uid: u8,
    },
    Lookup {
        id: u8,
    },
    LookupKey {
        kind: u8,
        key: u8,
    },
    Remove {
        id: u8,
        still_attached: bool,
    },
    Destroyed {
        id: u8,
    },
    SetPerm {
        id: u8,
        uid: u8,
        mode: u16,
    },
    Status,
    /// Bytes decoded as a request, as off the wire.
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum ParamsIn {
    Shm { size: u32, unit: u8 },
    Msg { qbytes: u16 },
    Sem { nsems: u16 },
}

#[derive(Debug, Arbitrary)]
struct RecIn {
    key: u8,
    id: u8,
    params: ParamsIn,
    removed: bool,
}

#[derive(Debug, Arbitrary)]
enum StepIn {
    Request { origin: u8, req: ReqIn },
    Tick { advance_ms: u16 },
}

fn key(k: u8) -> i32 {
    i32::from(k % 6)
}

/// Mostly ids the registry hands out (small numbers), sometimes others.
fn id(i: u8) -> i32 {
    match i % 8 {
        7 => i32::from(i),
        _ => DIPC_ID_BIT | i32::from(i % 12),
    }
}

fn params(p: ParamsIn) -> Params {
    match p {
        ParamsIn::Shm { size, unit } => Params::Shm {
            size: u64::from(size % 100_000),
            unit: 1 << (u32::from(unit) % 16),
            mode: if unit & 0x80 != 0 {
                ShmMode::Segment
            } else {
                ShmMode::Page
            },
            quantum_us: u32::from(unit & 0x40) * 100,
            prefetch: u32::from(unit & 0x0f),
        },
        ParamsIn::Msg { qbytes } => Params::Msg {
            qbytes: u64::from(qbytes),
            msgmax: u32::from(qbytes),
        },
        ParamsIn::Sem { nsems } => Params::Sem {
            nsems: u32::from(nsems % 40_000),
        },
    }
}

fn caller(uid: u8) -> Caller {
    let uid = u32::from(uid % 3) * 1000;
    Caller {
        uid,
        gid: uid,
        pid: 42,
    }
}

fn request(r: ReqIn) -> Option<Request> {
    Some(match r {
        ReqIn::Join { name, hosted } => Request::Join {
            name: match name % 4 {
                3 => String::new(),
                n => format!("node-{n}"),
            },
            listen: format!("127.0.0.1:{}", 7000 + u16::from(name)),
            transport: "tcp".into(),
            hosted: hosted
                .into_iter()
                .take(8)
                .map(|h| {
                    let params = params(h.params);
                    ObjectRecord {
                        key: key(h.key),
                        id: id(h.id),
                        kind: params.kind(),
                        home: 0,
                        params,
                        perm: Perm {
                            mode: 0o600,
                            ..Perm::default()
                        },
                        ctime: 0,
                        removed: h.removed,
                    }
                })
                .collect(),
            // 0 (unknown) or one of two incarnations: restarts happen.
            incarnation: u64::from(name >> 2) % 3,
        },
        ReqIn::Heartbeat => Request::Heartbeat,
        ReqIn::Get {
            key: k,
            flags,
            params: p,
            uid,
        } => Request::Get {
            key: key(k),
            flags: i32::from(flags & 0o3777),
            params: params(p),
            caller: caller(uid),
            now: 1,
        },
        ReqIn::Lookup { id: i } => Request::Lookup { id: id(i) },
        ReqIn::LookupKey { kind, key: k } => Request::LookupKey {
            kind: match kind % 3 {
                0 => Kind::Shm,
                1 => Kind::Msg,
                _ => Kind::Sem,
            },
            key: key(k),
        },
        ReqIn::Remove {
            id: i,
            still_attached,
        } => Request::Remove {
            id: id(i),
            still_attached,
        },
        ReqIn::Destroyed { id: i } => Request::Destroyed { id: id(i) },
        ReqIn::SetPerm { id: i, uid, mode } => Request::SetPerm {
            id: id(i),
            perm: Perm {
                uid: u32::from(uid % 3) * 1000,
                gid: 0,
                cuid: 0,
                cgid: 0,
                mode: u32::from(mode),
            },
        },
        ReqIn::Status => Request::Status,
        ReqIn::Raw(bytes) => return dipc_wire::decode::<Request>(&bytes).ok(),
    })
}

/// A registry fed arbitrary requests and ticks.
pub fn registry(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let config = Config {
        cluster: "fuzz".into(),
        heartbeat_ms: 100,
        down_after_ms: 500,
    };
    let initial = Snapshot::default();
    let mut reg = Registry::new(config.clone(), initial.clone());
    let mut disk = initial;
    let mut now = 0u64;
    for _ in 0..MAX_STEPS {
        // An exhausted input still decodes (as zeros): stop there.
        if u.is_empty() {
            break;
        }
        let Ok(step) = StepIn::arbitrary(&mut u) else {
            break;
        };
        let out = match step {
            StepIn::Tick { advance_ms } => {
                now += u64::from(advance_ms);
                reg.tick(now)
            }
            StepIn::Request { origin, req } => {
                let Some(req) = request(req) else {
                    continue;
                };
                let from = match origin % 5 {
                    0 => Origin::Client,
                    n => Origin::Node(u32::from(n)),
                };
                reg.handle(now, from, req)
            }
        };
        disk.apply(&out.writes);
        if let Err(e) = reg.check_invariants() {
            panic!("registry invariant: {e}");
        }
        assert_eq!(
            reg.snapshot(),
            disk,
            "persisted writes do not rebuild the state"
        );
    }
    let restarted = Registry::new(config, disk);
    if let Err(e) = restarted.check_invariants() {
        panic!("registry invariant after a restart: {e}");
    }
}
