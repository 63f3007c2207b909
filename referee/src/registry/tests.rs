//! Deterministic tests of the registry state machine, and a proptest over
//! random request sequences.

use super::*;
use dipc_wire::ShmMode;
use dipc_wire::errno::{EACCES, EEXIST, EINVAL, ENOENT, ENOSPC, ENOTCONN, EPERM};

const ALICE: Caller = Caller {
    uid: 1000,
    gid: 100,
    pid: 11,
};
const BOB_SAME_GROUP: Caller = Caller {
    uid: 1001,
    gid: 100,
    pid: 12,
};
const EVE: Caller = Caller {
    uid: 2000,
    gid: 200,
    pid: 13,
};
const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};

fn config() -> Config {
    Config {
        cluster: "test".into(),
        heartbeat_ms: 100,
        down_after_ms: 1000,
    }
}

fn shm(size: u64) -> Params {
    Params::Shm {
        size,
        unit: 4096,
        mode: ShmMode::Page,
        quantum_us: 0,
        prefetch: 8,
    }
}

fn sem(nsems: u32) -> Params {
    Params::Sem { nsems }
}

fn msg() -> Params {
    Params::Msg {
        qbytes: 16384,
        msgmax: 8192,
    }
}

/// A registry with nodes "n1".."nN" joined at time 0.
fn cluster(n: usize) -> (Registry, Vec<NodeId>) {
    let mut reg = Registry::new(config(), Snapshot::default());
    let ids = (1..=n)
        .map(|i| join(&mut reg, 0, &format!("n{i}"), vec![]))
        .collect();
    (reg, ids)
}

fn join(reg: &mut Registry, now: u64, name: &str, hosted: Vec<ObjectRecord>) -> NodeId {
    let out = reg.join(
        now,
        name.into(),
        format!("{name}:7000"),
        "tcp".into(),
        hosted,
        0,
    );
    match out.response {
        Some(Response::Joined { node, .. }) => node,
        other => panic!("join {name}: {other:?}"),
    }
}

fn get(
    reg: &mut Registry,
    node: NodeId,
    key: Key,
    flags: i32,
    params: Params,
    c: Caller,
) -> Outcome {
    reg.handle(
        0,
        Origin::Node(node),
        Request::Get {
            key,
            flags,
            params,
            caller: c,
            now: 1234,
        },
    )
}

fn record(out: &Outcome) -> ObjectRecord {
    match &out.response {
        Some(Response::Record(r)) => r.clone(),
        other => panic!("expected a record, got {other:?}"),
    }
}

fn errno(out: &Outcome) -> i32 {
    match &out.response {
        Some(Response::Err { errno, .. }) => *errno,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn create(reg: &mut Registry, node: NodeId, key: Key, params: Params) -> ObjectRecord {
    record(&get(reg, node, key, IPC_CREAT | 0o600, params, ALICE))
}

fn call(reg: &mut Registry, node: NodeId, req: Request) -> Outcome {
    reg.handle(0, Origin::Node(node), req)
}

fn gone(out: &Outcome) -> Vec<ObjectId> {
    out.events
        .iter()
        .filter_map(|e| match e {
            Event::ObjectGone { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

fn replayed(initial: &Snapshot, outs: &[&Outcome]) -> Snapshot {
    let mut s = initial.clone();
    for o in outs {
        s.apply(&o.writes);
    }
    s
}

#[test]
fn create_lookup_remove() {
    let (mut reg, n) = cluster(2);
    let out = get(&mut reg, n[0], 77, IPC_CREAT | 0o640, shm(10000), ALICE);
    let rec = record(&out);
    assert!(dipc_wire::is_dipc_id(rec.id));
    assert_eq!(rec.key, 77);
    assert_eq!(rec.kind, Kind::Shm);
    assert_eq!(rec.home, n[0]);
    assert_eq!(rec.ctime, 1234);
    assert!(!rec.removed);
    assert_eq!(
        rec.perm,
        Perm {
            uid: 1000,
            gid: 100,
            cuid: 1000,
            cgid: 100,
            mode: 0o640
        }
    );
    assert!(out.events.is_empty());
    assert_eq!(
        out.writes,
        vec![
            StoreOp::PutMeta {
                next_id: 2,
                next_node: 3
            },
            StoreOp::PutObject(rec.clone())
        ]
    );

    // Found from another node, by key (no creation) and by id.
    let again = get(&mut reg, n[1], 77, 0, shm(0), ALICE);
    assert_eq!(record(&again), rec);
    assert!(again.writes.is_empty());
    let by_key = call(
        &mut reg,
        n[1],
        Request::LookupKey {
            kind: Kind::Shm,
            key: 77,
        },
    );
    assert_eq!(record(&by_key), rec);
    let by_id = call(&mut reg, n[1], Request::Lookup { id: rec.id });
    assert_eq!(record(&by_id), rec);

    let rm = call(
        &mut reg,
        n[1],
        Request::Remove {
            id: rec.id,
            still_attached: false,
        },
    );
    assert_eq!(rm.response, Some(Response::Ok));
    assert_eq!(
        rm.events,
        vec![Event::ObjectGone {
            id: rec.id,
            key: 77,
            kind: Kind::Shm
        }]
    );
    assert_eq!(rm.writes, vec![StoreOp::DeleteObject(rec.id)]);
    assert_eq!(
        errno(&call(&mut reg, n[0], Request::Lookup { id: rec.id })),
        EINVAL
    );
    assert_eq!(
        errno(&call(
            &mut reg,
            n[0],
            Request::LookupKey {
                kind: Kind::Shm,
                key: 77
            }
        )),
        ENOENT
    );
    assert_eq!(
        errno(&call(
            &mut reg,
            n[0],
            Request::Remove {
                id: rec.id,
                still_attached: false
            }
        )),
        EINVAL
    );
    reg.check_invariants().unwrap();
}

#[test]
fn ipc_private_always_creates() {
    let (mut reg, n) = cluster(1);
    let a = create(&mut reg, n[0], IPC_PRIVATE, msg());
    let b = record(&get(&mut reg, n[0], IPC_PRIVATE, 0o600, msg(), ALICE));
    let c = record(&get(
        &mut reg,
        n[0],
        IPC_PRIVATE,
        IPC_CREAT | IPC_EXCL | 0o600,
        msg(),
        ALICE,
    ));
    assert_ne!(a.id, b.id);
    assert_ne!(b.id, c.id);
    assert_ne!(a.id, c.id);
    assert_eq!(
        errno(&call(
            &mut reg,
            n[0],
            Request::LookupKey {
                kind: Kind::Msg,
                key: IPC_PRIVATE
            }
        )),
        ENOENT
    );
    assert_eq!(
        record(&call(&mut reg, n[0], Request::Lookup { id: b.id })),
        b
    );
    reg.check_invariants().unwrap();
}

#[test]
fn keys_are_per_kind() {
    let (mut reg, n) = cluster(1);
    let s = create(&mut reg, n[0], 5, shm(4096));
    let m = create(&mut reg, n[0], 5, msg());
    let e = create(&mut reg, n[0], 5, sem(1));
    assert_eq!((s.kind, m.kind, e.kind), (Kind::Shm, Kind::Msg, Kind::Sem));
    assert!(s.id != m.id && m.id != e.id && s.id != e.id);
    // EXCL on one kind does not see the others.
    assert_eq!(
        errno(&get(&mut reg, n[0], 5, IPC_CREAT | IPC_EXCL, msg(), ALICE)),
        EEXIST
    );
    call(
        &mut reg,
        n[0],
        Request::Remove {
            id: m.id,
            still_attached: false,
        },
    );
    assert_eq!(record(&get(&mut reg, n[0], 5, 0, shm(1), ALICE)).id, s.id);
    assert_eq!(errno(&get(&mut reg, n[0], 5, 0, msg(), ALICE)), ENOENT);
}

#[test]
fn lookup_errors() {
    let (mut reg, n) = cluster(1);
    assert_eq!(errno(&get(&mut reg, n[0], 9, 0o666, sem(1), ALICE)), ENOENT);
    let rec = create(&mut reg, n[0], 9, sem(4));
    assert_eq!(
        errno(&get(
            &mut reg,
            n[0],
            9,
            IPC_CREAT | IPC_EXCL | 0o600,
            sem(4),
            ALICE
        )),
        EEXIST
    );
    // IPC_EXCL without IPC_CREAT is ignored, as in Linux.
    assert_eq!(
        record(&get(&mut reg, n[0], 9, IPC_EXCL | 0o600, sem(4), ALICE)).id,
        rec.id
    );
    // nsems: more than the set has, or more than SEMMSL even for a lookup.
    assert_eq!(errno(&get(&mut reg, n[0], 9, 0, sem(5), ALICE)), EINVAL);
    assert_eq!(record(&get(&mut reg, n[0], 9, 0, sem(0), ALICE)).id, rec.id);
    assert_eq!(
        errno(&get(&mut reg, n[0], 9, 0, sem(SEMMSL + 1), ALICE)),
        EINVAL
    );
    // EEXIST is checked before the size.
    let seg = create(&mut reg, n[0], 10, shm(8192));
    assert_eq!(
        errno(&get(
            &mut reg,
            n[0],
            10,
            IPC_CREAT | IPC_EXCL,
            shm(1 << 40),
            ALICE
        )),
        EEXIST
    );
    assert_eq!(
        errno(&get(&mut reg, n[0], 10, IPC_CREAT, shm(8193), ALICE)),
        EINVAL
    );
    assert_eq!(
        record(&get(&mut reg, n[0], 10, IPC_CREAT, shm(8192), ALICE)).id,
        seg.id
    );
    assert_eq!(
        record(&get(&mut reg, n[0], 10, 0, shm(1), ALICE)).id,
        seg.id
    );
}

#[test]
fn permissions_follow_ipcperms() {
    let (mut reg, n) = cluster(1);
    // rw for owner, r for group, nothing for others.
    let rec = record(&get(&mut reg, n[0], 3, IPC_CREAT | 0o640, shm(4096), ALICE));
    let g = |reg: &mut Registry, flags, c| get(reg, n[0], 3, flags, shm(4096), c);
    assert_eq!(record(&g(&mut reg, 0o600, ALICE)).id, rec.id);
    assert_eq!(record(&g(&mut reg, 0o400, BOB_SAME_GROUP)).id, rec.id);
    assert_eq!(errno(&g(&mut reg, 0o600, BOB_SAME_GROUP)), EACCES);
    assert_eq!(errno(&g(&mut reg, 0o400, EVE)), EACCES);
    assert_eq!(errno(&g(&mut reg, 0o004, EVE)), EACCES);
    // Asking for nothing is always granted (shmget(key, 0, 0)).
    assert_eq!(record(&g(&mut reg, 0, EVE)).id, rec.id);
    assert_eq!(record(&g(&mut reg, 0o666, ROOT)).id, rec.id);
    // After IPC_SET, the new owner gets the user bits, the creator keeps them.
    let perm = Perm {
        uid: EVE.uid,
        gid: EVE.gid,
        ..rec.perm
    };
    call(&mut reg, n[0], Request::SetPerm { id: rec.id, perm });
    assert_eq!(record(&g(&mut reg, 0o600, EVE)).id, rec.id);
    assert_eq!(record(&g(&mut reg, 0o600, ALICE)).id, rec.id);
    // The owner's group now gives group bits to someone in gid 200.
    let carol = Caller {
        uid: 3000,
        gid: 200,
        pid: 5,
    };
    assert_eq!(record(&g(&mut reg, 0o040, carol)).id, rec.id);
    assert_eq!(errno(&g(&mut reg, 0o020, carol)), EACCES);
}

#[test]
fn ipcperms_matches_the_kernel_formula() {
    let perm = Perm {
        uid: 1,
        gid: 2,
        cuid: 3,
        cgid: 4,
        mode: 0o754,
    };
    let c = |uid, gid| Caller { uid, gid, pid: 0 };
    assert!(ipcperms(&perm, &c(1, 9), 0o700));
    assert!(ipcperms(&perm, &c(3, 9), 0o700));
    assert!(ipcperms(&perm, &c(5, 2), 0o050));
    assert!(!ipcperms(&perm, &c(5, 4), 0o020));
    assert!(ipcperms(&perm, &c(5, 9), 0o004));
    assert!(!ipcperms(&perm, &c(5, 9), 0o002));
    // The requested bits are spread: 0o002 from a user asks for the user's w bit.
    assert!(ipcperms(&perm, &c(1, 9), 0o002));
    // High flag bits (IPC_CREAT, IPC_EXCL, anything above) request nothing.
    assert!(ipcperms(
        &perm,
        &c(5, 9),
        IPC_CREAT | IPC_EXCL | 0o10000 | 0o004
    ));
}

#[test]
fn creation_errors() {
    let (mut reg, n) = cluster(1);
    assert_eq!(
        errno(&get(&mut reg, n[0], 1, IPC_CREAT, shm(0), ALICE)),
        EINVAL
    );
    assert_eq!(
        errno(&get(&mut reg, n[0], 1, IPC_CREAT, shm(u64::MAX), ALICE)),
        EINVAL
    );
    let bad_unit = Params::Shm {
        size: 4096,
        unit: 6000,
        mode: ShmMode::Page,
        quantum_us: 0,
        prefetch: 8,
    };
    assert_eq!(
        errno(&get(&mut reg, n[0], 1, IPC_CREAT, bad_unit, ALICE)),
        EINVAL
    );
    assert_eq!(
        errno(&get(&mut reg, n[0], 1, IPC_CREAT, sem(0), ALICE)),
        EINVAL
    );
    assert_eq!(
        errno(&get(&mut reg, n[0], 1, IPC_CREAT, sem(SEMMSL + 1), ALICE)),
        EINVAL
    );
    assert_eq!(
        errno(&get(&mut reg, n[0], IPC_PRIVATE, 0, shm(0), ALICE)),
        EINVAL
    );
    // Nothing was created or persisted by the failures.
    assert!(reg.snapshot().objects.is_empty());
    assert_eq!(reg.snapshot().next_id, 1);
    assert_eq!(
        record(&get(&mut reg, n[0], 1, IPC_CREAT, sem(SEMMSL), ALICE)).kind,
        Kind::Sem
    );
}

#[test]
fn enospc_after_32000_objects_of_a_kind() {
    let (mut reg, n) = cluster(1);
    for _ in 0..MAX_OBJECTS_PER_KIND {
        create(&mut reg, n[0], IPC_PRIVATE, msg());
    }
    assert_eq!(
        errno(&get(&mut reg, n[0], IPC_PRIVATE, IPC_CREAT, msg(), ALICE)),
        ENOSPC
    );
    assert_eq!(
        errno(&get(&mut reg, n[0], 44, IPC_CREAT, msg(), ALICE)),
        ENOSPC
    );
    // Other kinds are counted apart.
    create(&mut reg, n[0], 44, sem(1));
    // Freeing one makes room again.
    let id = *reg.snapshot().objects.keys().next().unwrap();
    call(
        &mut reg,
        n[0],
        Request::Remove {
            id,
            still_attached: false,
        },
    );
    create(&mut reg, n[0], 44, msg());
    assert_eq!(
        errno(&get(&mut reg, n[0], 45, IPC_CREAT, msg(), ALICE)),
        ENOSPC
    );
    reg.check_invariants().unwrap();
}

#[test]
fn concurrent_creates_of_one_key_have_one_winner() {
    let (mut reg, n) = cluster(5);
    // The shell applies requests in arrival order; any interleaving gives
    // one creator, the others EEXIST.
    let outs: Vec<Outcome> = [3, 0, 4, 1, 2]
        .iter()
        .map(|&i| {
            get(
                &mut reg,
                n[i],
                42,
                IPC_CREAT | IPC_EXCL | 0o666,
                shm(4096),
                ALICE,
            )
        })
        .collect();
    let winners: Vec<ObjectRecord> = outs
        .iter()
        .filter_map(|o| match &o.response {
            Some(Response::Record(r)) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(winners.len(), 1);
    assert_eq!(winners[0].home, n[3]);
    assert_eq!(
        outs.iter()
            .filter(|o| matches!(o.response, Some(Response::Err { errno: EEXIST, .. })))
            .count(),
        4
    );
    // Without EXCL everyone gets the same object.
    let ids: Vec<ObjectId> = (0..5)
        .map(|i| record(&get(&mut reg, n[i], 43, IPC_CREAT | 0o666, msg(), ALICE)).id)
        .collect();
    assert!(ids.iter().all(|&id| id == ids[0]));
    assert_eq!(reg.status(0).objects.len(), 2);
}

#[test]
fn ids_are_never_reused_and_keys_are() {
    let (mut reg, n) = cluster(2);
    let mut seen = BTreeSet::new();
    for round in 0..500 {
        let node = n[round % 2];
        let params = [shm(4096), msg(), sem(2)][round % 3];
        let rec = record(&get(
            &mut reg,
            node,
            7,
            IPC_CREAT | IPC_EXCL | 0o600,
            params,
            ALICE,
        ));
        assert!(seen.insert(rec.id), "id {} handed out twice", rec.id);
        let still = round % 4 == 0;
        call(
            &mut reg,
            node,
            Request::Remove {
                id: rec.id,
                still_attached: still,
            },
        );
        if still && rec.kind == Kind::Shm {
            assert_eq!(
                call(&mut reg, node, Request::Destroyed { id: rec.id }).response,
                Some(Response::Ok)
            );
        }
    }
    assert!(reg.snapshot().objects.is_empty());
    // Across a restart from the persisted snapshot too.
    let mut reg = Registry::new(config(), reg.snapshot());
    let a = join(&mut reg, 0, "n1", vec![]);
    assert_eq!(a, n[0]);
    let rec = create(&mut reg, a, 7, msg());
    assert!(!seen.contains(&rec.id));
}

#[test]
fn removed_but_attached_segment_lifecycle() {
    let (mut reg, n) = cluster(2);
    let seg = create(&mut reg, n[0], 8, shm(4096));
    let rm = call(
        &mut reg,
        n[0],
        Request::Remove {
            id: seg.id,
            still_attached: true,
        },
    );
    assert_eq!(rm.response, Some(Response::Ok));
    assert_eq!(gone(&rm), vec![seg.id]);
    let marked = ObjectRecord {
        removed: true,
        ..seg.clone()
    };
    assert_eq!(rm.writes, vec![StoreOp::PutObject(marked.clone())]);
    // The key is free, the id still attaches.
    assert_eq!(
        errno(&call(
            &mut reg,
            n[1],
            Request::LookupKey {
                kind: Kind::Shm,
                key: 8
            }
        )),
        ENOENT
    );
    assert_eq!(
        errno(&get(&mut reg, n[1], 8, 0o600, shm(4096), ALICE)),
        ENOENT
    );
    assert_eq!(
        record(&call(&mut reg, n[1], Request::Lookup { id: seg.id })),
        marked
    );
    let fresh = create(&mut reg, n[1], 8, shm(4096));
    assert_ne!(fresh.id, seg.id);
    // A second IPC_RMID while attached changes nothing.
    let again = call(
        &mut reg,
        n[0],
        Request::Remove {
            id: seg.id,
            still_attached: true,
        },
    );
    assert_eq!(again.response, Some(Response::Ok));
    assert!(again.writes.is_empty() && again.events.is_empty());
    // Destroying a live segment is refused.
    assert_eq!(
        errno(&call(&mut reg, n[1], Request::Destroyed { id: fresh.id })),
        EINVAL
    );
    // The last detach.
    let d = call(&mut reg, n[0], Request::Destroyed { id: seg.id });
    assert_eq!(d.response, Some(Response::Ok));
    assert_eq!(gone(&d), vec![seg.id]);
    assert_eq!(d.writes, vec![StoreOp::DeleteObject(seg.id)]);
    assert_eq!(
        errno(&call(&mut reg, n[0], Request::Lookup { id: seg.id })),
        EINVAL
    );
    // Repeated after a reconnect: harmless.
    assert_eq!(
        call(&mut reg, n[0], Request::Destroyed { id: seg.id }).response,
        Some(Response::Ok)
    );
    // The new segment with the same key is untouched.
    assert_eq!(
        record(&call(
            &mut reg,
            n[0],
            Request::LookupKey {
                kind: Kind::Shm,
                key: 8
            }
        )),
        fresh
    );
    // msg/sem have no attachments: Remove deletes whatever the flag says.
    let q = create(&mut reg, n[0], 8, msg());
    call(
        &mut reg,
        n[0],
        Request::Remove {
            id: q.id,
            still_attached: true,
        },
    );
    assert_eq!(
        errno(&call(&mut reg, n[0], Request::Lookup { id: q.id })),
        EINVAL
    );
    reg.check_invariants().unwrap();
}

#[test]
fn set_perm_updates_owner_and_mode_only() {
    let (mut reg, n) = cluster(1);
    let seg = create(&mut reg, n[0], 8, shm(4096));
    call(
        &mut reg,
        n[0],
        Request::Remove {
            id: seg.id,
            still_attached: true,
        },
    );
    let out = call(
        &mut reg,
        n[0],
        Request::SetPerm {
            id: seg.id,
            perm: Perm {
                uid: 5,
                gid: 6,
                cuid: 77,
                cgid: 77,
                mode: 0o7444,
            },
        },
    );
    assert_eq!(out.response, Some(Response::Ok));
    let rec = record(&call(&mut reg, n[0], Request::Lookup { id: seg.id }));
    assert_eq!(
        rec.perm,
        Perm {
            uid: 5,
            gid: 6,
            cuid: 1000,
            cgid: 100,
            mode: 0o444
        }
    );
    assert_eq!(out.writes, vec![StoreOp::PutObject(rec)]);
    assert_eq!(
        errno(&call(
            &mut reg,
            n[0],
            Request::SetPerm {
                id: DIPC_ID_BIT | 999,
                perm: Perm::default()
            }
        )),
        EINVAL
    );
}

#[test]
fn node_ids_follow_names_across_restarts() {
    let initial = Snapshot::default();
    let mut reg = Registry::new(config(), initial.clone());
    let j_a = reg.join(0, "a".into(), "a:1".into(), "tcp".into(), vec![], 0);
    let j_b = reg.join(0, "b".into(), "b:1".into(), "rdma".into(), vec![], 0);
    let a = match &j_a.response {
        Some(Response::Joined { node, .. }) => *node,
        other => panic!("{other:?}"),
    };
    let b = join(&mut reg, 0, "b", vec![]);
    assert_ne!(a, b);
    // Re-joining with the same name keeps the id, even after a restart
    // from the persisted writes.
    let snap = replayed(&initial, &[&j_a, &j_b]);
    let mut reg = Registry::new(config(), snap);
    let j = reg.join(5, "b".into(), "b:2".into(), "tcp".into(), vec![], 0);
    match &j.response {
        Some(Response::Joined {
            node,
            heartbeat_ms,
            down_after_ms,
            members,
            was_down,
        }) => {
            assert_eq!(*node, b);
            assert!(!was_down, "a restarted referee declared nobody down");
            assert_eq!((*heartbeat_ms, *down_after_ms), (100, 1000));
            assert_eq!(members.len(), 2);
            let ma = members.iter().find(|m| m.node == a).unwrap();
            assert!(!ma.up, "a has not joined this referee yet");
            assert_eq!(ma.last_seen_ms, u64::MAX);
            let mb = members.iter().find(|m| m.node == b).unwrap();
            assert!(mb.up);
            assert_eq!(mb.listen, "b:2");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&j.events[..], [Event::NodeUp(m)] if m.node == b && m.listen == "b:2"));
    assert!(j.writes.contains(&StoreOp::PutNode(NodeEntry {
        id: b,
        name: "b".into(),
        listen: "b:2".into(),
        transport: "tcp".into()
    })));
    assert_eq!(join(&mut reg, 6, "c", vec![]), 3);
    assert_eq!(
        errno(&reg.join(0, String::new(), "x".into(), "tcp".into(), vec![], 0)),
        EINVAL
    );
}

#[test]
fn rejoin_restores_and_forgets_hosted_records() {
    let (mut reg, n) = cluster(2);
    let kept = create(&mut reg, n[0], 1, shm(4096));
    let lost = create(&mut reg, n[0], 2, msg());
    let other = create(&mut reg, n[1], 3, sem(1));

    // n1 restarts and only has `kept`: `lost` is gone.
    let out = reg.join(
        10,
        "n1".into(),
        "n1:7000".into(),
        "tcp".into(),
        vec![kept.clone()],
        0,
    );
    assert_eq!(gone(&out), vec![lost.id]);
    assert!(out.writes.contains(&StoreOp::DeleteObject(lost.id)));
    assert_eq!(
        errno(&call(&mut reg, n[0], Request::Lookup { id: lost.id })),
        EINVAL
    );
    assert_eq!(
        record(&call(&mut reg, n[0], Request::Lookup { id: kept.id })),
        kept
    );
    // Another node's object is not touched by n1's join.
    assert_eq!(
        record(&call(&mut reg, n[0], Request::Lookup { id: other.id })),
        other
    );

    // The referee loses its store; nodes re-announce. Node ids are handed
    // out again (in another order here), so homes are rewritten.
    let mut fresh = Registry::new(config(), Snapshot::default());
    let n2 = join(&mut fresh, 0, "n2", vec![other.clone()]);
    // Meanwhile someone took key 1 for shm.
    let taker = create(&mut fresh, n2, 1, shm(4096));
    let mut claimed_by_n2 = kept.clone();
    claimed_by_n2.home = n2;
    let out = fresh.join(
        0,
        "n1".into(),
        "n1:7000".into(),
        "tcp".into(),
        vec![
            kept.clone(),
            claimed_by_n2,
            ObjectRecord {
                id: 5,
                ..lost.clone()
            },
        ],
        0,
    );
    let n1 = match out.response {
        Some(Response::Joined { node, .. }) => node,
        other => panic!("{other:?}"),
    };
    assert!(gone(&out).is_empty());
    let restored = record(&call(&mut fresh, n1, Request::Lookup { id: kept.id }));
    assert_eq!(restored.home, n1);
    assert_eq!(restored.key, IPC_PRIVATE, "key 1 belongs to {}", taker.id);
    assert_eq!(
        record(&call(
            &mut fresh,
            n1,
            Request::LookupKey {
                kind: Kind::Shm,
                key: 1
            }
        ))
        .id,
        taker.id
    );
    let o = record(&call(&mut fresh, n1, Request::Lookup { id: other.id }));
    assert_eq!((o.key, o.home), (3, n2));
    // An id that is not a dipc id is ignored.
    assert_eq!(
        errno(&call(&mut fresh, n1, Request::Lookup { id: 5 })),
        EINVAL
    );
    // The counter moved past restored ids: a new object gets a new id.
    let new = create(&mut fresh, n1, 9, msg());
    assert!(![kept.id, lost.id, other.id, taker.id].contains(&new.id));
    assert!(id_number(new.id) > id_number(other.id).max(id_number(kept.id)));
    fresh.check_invariants().unwrap();
}

#[test]
fn nodes_go_down_after_silence_and_come_back() {
    let (mut reg, n) = cluster(2);
    let seg = create(&mut reg, n[1], 1, shm(4096));
    assert!(reg.tick(999).events.is_empty());
    // n1 keeps talking, n2 is silent.
    reg.handle(600, Origin::Node(n[0]), Request::Heartbeat);
    let out = reg.tick(1000);
    assert_eq!(out.events, vec![Event::NodeDown { node: n[1] }]);
    assert!(out.response.is_none() && out.writes.is_empty());
    assert!(reg.tick(1100).events.is_empty(), "down is reported once");
    let st = reg.status(1100);
    assert!(!st.objects[0].available);
    assert_eq!(st.objects[0].record.id, seg.id);
    let m2 = st.members.iter().find(|m| m.node == n[1]).unwrap();
    assert!(!m2.up);
    assert_eq!(m2.last_seen_ms, 1100);
    assert!(st.members.iter().find(|m| m.node == n[0]).unwrap().up);
    assert_eq!(reg.tick(1600).events, vec![Event::NodeDown { node: n[0] }]);

    // A heartbeat brings n2 back.
    let hb = reg.handle(1700, Origin::Node(n[1]), Request::Heartbeat);
    assert_eq!(hb.response, Some(Response::Ok));
    assert!(matches!(&hb.events[..], [Event::NodeUp(m)] if m.node == n[1] && m.up));
    assert!(reg.status(1700).objects[0].available);
    // A join brings n1 back, telling it that it had been declared down
    // (so it fences: drops what it held); a join of a node that was up
    // does not.
    let j = reg.join(1700, "n1".into(), "n1:7000".into(), "tcp".into(), vec![], 0);
    assert!(matches!(&j.events[..], [Event::NodeUp(m)] if m.node == n[0]));
    assert!(matches!(
        j.response,
        Some(Response::Joined { was_down: true, .. })
    ));
    assert!(reg.is_up(n[0]) && reg.is_up(n[1]));
    let again = reg.join(1750, "n1".into(), "n1:7000".into(), "tcp".into(), vec![], 0);
    assert!(matches!(
        again.response,
        Some(Response::Joined {
            was_down: false,
            ..
        })
    ));
    assert_eq!(reg.status(1700).cluster, "test");
}

#[test]
fn a_restart_not_yet_noticed_declares_the_old_incarnation_down_first() {
    let (mut reg, n) = cluster(2);
    let join = |reg: &mut Registry, now, inc| {
        reg.join(
            now,
            "n2".into(),
            "n2:7000".into(),
            "tcp".into(),
            vec![],
            inc,
        )
    };
    let first = join(&mut reg, 10, 7);
    assert!(matches!(&first.events[..], [Event::NodeUp(m)] if m.node == n[1]));
    // The same start reconnecting: no verdict.
    let again = join(&mut reg, 20, 7);
    assert!(matches!(&again.events[..], [Event::NodeUp(m)] if m.node == n[1]));
    // Another start while the first is still taken for up: down, then up.
    let restart = join(&mut reg, 30, 8);
    assert!(
        matches!(&restart.events[..], [Event::NodeDown { node }, Event::NodeUp(m)] if *node == n[1] && m.node == n[1]),
        "{:?}",
        restart.events
    );
    assert!(matches!(
        restart.response,
        Some(Response::Joined {
            was_down: false,
            ..
        })
    ));
    assert!(reg.is_up(n[1]));
    // Unknown incarnations (0) never force a verdict.
    assert_eq!(join(&mut reg, 40, 0).events.len(), 1);
    assert_eq!(join(&mut reg, 50, 9).events.len(), 1);
    // A start declared down already is not declared down twice: the node
    // hears `was_down` instead.
    reg.handle(1000, Origin::Node(n[0]), Request::Heartbeat);
    assert_eq!(reg.tick(1100).events, vec![Event::NodeDown { node: n[1] }]);
    let after = join(&mut reg, 1200, 10);
    assert!(matches!(&after.events[..], [Event::NodeUp(_)]));
    assert!(matches!(
        after.response,
        Some(Response::Joined { was_down: true, .. })
    ));
}

#[test]
fn origins_are_checked() {
    let (mut reg, n) = cluster(1);
    let rec = create(&mut reg, n[0], 1, msg());
    // A node id that never joined.
    assert_eq!(
        errno(&reg.handle(0, Origin::Node(99), Request::Heartbeat)),
        ENOTCONN
    );
    assert_eq!(
        errno(&reg.handle(0, Origin::Node(99), Request::Lookup { id: rec.id })),
        ENOTCONN
    );
    // After a restart, known nodes must join again.
    let mut restarted = Registry::new(config(), reg.snapshot());
    assert_eq!(
        errno(&restarted.handle(0, Origin::Node(n[0]), Request::Heartbeat)),
        ENOTCONN
    );
    // A join through handle works and the origin's id is ignored.
    let j = restarted.handle(
        0,
        Origin::Node(0),
        Request::Join {
            name: "n1".into(),
            listen: "n1:7000".into(),
            transport: "tcp".into(),
            hosted: vec![rec.clone()],
            incarnation: 0,
        },
    );
    assert!(matches!(j.response, Some(Response::Joined { node, .. }) if node == n[0]));

    // Clients read, nothing else.
    let c = Origin::Client;
    assert_eq!(
        record(&reg.handle(0, c, Request::Lookup { id: rec.id })),
        rec
    );
    assert_eq!(
        record(&reg.handle(
            0,
            c,
            Request::LookupKey {
                kind: Kind::Msg,
                key: 1
            }
        )),
        rec
    );
    match reg.handle(0, c, Request::Status).response {
        Some(Response::Status(st)) => assert_eq!(st.objects.len(), 1),
        other => panic!("{other:?}"),
    }
    let forbidden = [
        Request::Heartbeat,
        Request::Get {
            key: 2,
            flags: IPC_CREAT,
            params: msg(),
            caller: ROOT,
            now: 0,
        },
        Request::Remove {
            id: rec.id,
            still_attached: false,
        },
        Request::Destroyed { id: rec.id },
        Request::SetPerm {
            id: rec.id,
            perm: Perm::default(),
        },
        Request::Join {
            name: "sneaky".into(),
            listen: "x".into(),
            transport: "tcp".into(),
            hosted: vec![],
            incarnation: 0,
        },
    ];
    for req in forbidden {
        let out = reg.handle(0, c, req.clone());
        assert_eq!(errno(&out), EPERM, "{req:?}");
        assert!(out.writes.is_empty() && out.events.is_empty());
    }
    assert_eq!(reg.status(0).members.len(), 1);
    assert_eq!(
        record(&reg.handle(0, c, Request::Lookup { id: rec.id })),
        rec
    );
}

#[test]
fn snapshot_with_inconsistent_counters_never_reuses_ids() {
    let (mut reg, n) = cluster(1);
    let rec = create(&mut reg, n[0], 1, msg());
    let mut snap = reg.snapshot();
    snap.next_id = 1;
    snap.next_node = 1;
    let mut reg = Registry::new(config(), snap);
    let n1 = join(&mut reg, 0, "n1", vec![rec.clone()]);
    assert_eq!(n1, n[0]);
    assert_ne!(create(&mut reg, n1, 2, msg()).id, rec.id);
    assert_ne!(join(&mut reg, 0, "n2", vec![]), n1);
    reg.check_invariants().unwrap();
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    const NAMES: [&str; 3] = ["a", "b", "c"];

    #[derive(Debug, Clone)]
    enum Op {
        /// Node (re)joins announcing a subset (by bit mask) of the records
        /// it created that it remembers.
        Join {
            node: usize,
            mask: u32,
        },
        Get {
            node: usize,
            kind: u8,
            key: i32,
            creat: bool,
            excl: bool,
            mode: i32,
            size: u64,
            uid: u32,
        },
        Remove {
            node: usize,
            pick: usize,
            attached: bool,
        },
        Destroyed {
            node: usize,
            pick: usize,
        },
        SetPerm {
            node: usize,
            pick: usize,
            uid: u32,
            mode: u32,
        },
        Lookup {
            node: usize,
            pick: usize,
        },
        Heartbeat {
            node: usize,
        },
        Tick {
            advance: u64,
        },
        Restart,
        /// The referee restarts with an empty store.
        LoseStore,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => (0..3usize, any::<u32>()).prop_map(|(node, mask)| Op::Join { node, mask }),
            6 => (0..3usize, 0..3u8, 0..4i32, any::<bool>(), any::<bool>(), prop_oneof![Just(0o600), Just(0o644), Just(0), Just(0o400)], 0..3u64, 0..2u32)
                .prop_map(|(node, kind, key, creat, excl, mode, size, uid)| Op::Get { node, kind, key, creat, excl, mode, size, uid }),
            3 => (0..3usize, any::<usize>(), any::<bool>()).prop_map(|(node, pick, attached)| Op::Remove { node, pick, attached }),
            1 => (0..3usize, any::<usize>()).prop_map(|(node, pick)| Op::Destroyed { node, pick }),
            1 => (0..3usize, any::<usize>(), 0..2u32, prop_oneof![Just(0o600u32), Just(0o666)])
                .prop_map(|(node, pick, uid, mode)| Op::SetPerm { node, pick, uid, mode }),
            1 => (0..3usize, any::<usize>()).prop_map(|(node, pick)| Op::Lookup { node, pick }),
            1 => (0..3usize).prop_map(|node| Op::Heartbeat { node }),
            1 => (0..1500u64).prop_map(|advance| Op::Tick { advance }),
            1 => Just(Op::Restart),
            1 => Just(Op::LoseStore),
        ]
    }

    /// Drive a registry with `ops`, checking invariants after every step.
    fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let initial = Snapshot::default();
        let mut reg = Registry::new(config(), initial.clone());
        // What the store would hold.
        let mut disk = initial;
        let mut now = 0u64;
        // Which node id each name got (at its last join).
        let mut node_of: BTreeMap<usize, NodeId> = BTreeMap::new();
        // Records each node created, as a node would remember them.
        let mut created_by: BTreeMap<usize, Vec<ObjectRecord>> = BTreeMap::new();
        let mut ever: BTreeSet<ObjectId> = BTreeSet::new();

        for op in ops {
            let ids: Vec<ObjectId> = reg.snapshot().objects.keys().copied().collect();
            let pick = |p: usize| {
                if ids.is_empty() || p.is_multiple_of(5) {
                    DIPC_ID_BIT | (p % 64) as i32
                } else {
                    ids[p % ids.len()]
                }
            };
            let origin = |node: usize| Origin::Node(node_of.get(&node).copied().unwrap_or(1000));
            let before = reg.snapshot();
            let out = match op.clone() {
                Op::Join { node, mask } => {
                    let hosted: Vec<ObjectRecord> = created_by
                        .get(&node)
                        .map(|v| {
                            v.iter()
                                .enumerate()
                                .filter(|(i, _)| mask & (1 << (i % 32)) != 0)
                                .map(|(_, r)| r.clone())
                                .collect()
                        })
                        .unwrap_or_default();
                    let out = reg.join(
                        now,
                        NAMES[node].into(),
                        format!("{node}:1"),
                        "tcp".into(),
                        hosted.clone(),
                        0,
                    );
                    let Some(Response::Joined { node: id, .. }) = out.response.clone() else {
                        return Err(TestCaseError::fail(format!("join failed: {out:?}")));
                    };
                    node_of.insert(node, id);
                    // Restored ids are taken again.
                    ever.extend(
                        hosted
                            .iter()
                            .map(|r| r.id)
                            .filter(|id| reg.snapshot().objects.contains_key(id)),
                    );
                    // Every announced record is now known with this home;
                    // every other record homed here is gone.
                    let snap = reg.snapshot();
                    for r in &hosted {
                        let have = snap.objects.get(&r.id);
                        prop_assert!(have.is_some(), "announced {} missing", r.id);
                    }
                    for r in snap.objects.values().filter(|r| r.home == id) {
                        prop_assert!(
                            hosted.iter().any(|h| h.id == r.id),
                            "{} not announced but kept",
                            r.id
                        );
                    }
                    out
                }
                Op::Get {
                    node,
                    kind,
                    key,
                    creat,
                    excl,
                    mode,
                    size,
                    uid,
                } => {
                    let params = match kind {
                        0 => shm(size * 4096),
                        1 => msg(),
                        _ => sem(size as u32),
                    };
                    let mut flags = mode;
                    if creat {
                        flags |= IPC_CREAT;
                    }
                    if excl {
                        flags |= IPC_EXCL;
                    }
                    let caller = Caller {
                        uid: 1000 + uid,
                        gid: 100,
                        pid: 1,
                    };
                    let out = reg.handle(
                        now,
                        origin(node),
                        Request::Get {
                            key,
                            flags,
                            params,
                            caller,
                            now: now as i64,
                        },
                    );
                    match &out.response {
                        Some(Response::Record(r)) => {
                            if !before.objects.contains_key(&r.id) {
                                prop_assert!(ever.insert(r.id), "id {} handed out twice", r.id);
                                prop_assert!(creat || key == IPC_PRIVATE);
                                created_by.entry(node).or_default().push(r.clone());
                            } else {
                                prop_assert!(key != IPC_PRIVATE);
                                prop_assert!(!(creat && excl), "EXCL found an existing object");
                                prop_assert_eq!(r.key, key);
                            }
                        }
                        Some(Response::Err { errno, .. }) => {
                            prop_assert!(
                                [ENOENT, EEXIST, EINVAL, EACCES, ENOSPC, ENOTCONN].contains(errno),
                                "errno {}",
                                errno
                            );
                            prop_assert!(out.writes.is_empty());
                        }
                        other => return Err(TestCaseError::fail(format!("{other:?}"))),
                    }
                    out
                }
                Op::Remove {
                    node,
                    pick: p,
                    attached,
                } => reg.handle(
                    now,
                    origin(node),
                    Request::Remove {
                        id: pick(p),
                        still_attached: attached,
                    },
                ),
                Op::Destroyed { node, pick: p } => {
                    reg.handle(now, origin(node), Request::Destroyed { id: pick(p) })
                }
                Op::SetPerm {
                    node,
                    pick: p,
                    uid,
                    mode,
                } => reg.handle(
                    now,
                    origin(node),
                    Request::SetPerm {
                        id: pick(p),
                        perm: Perm {
                            uid: 1000 + uid,
                            gid: 100,
                            cuid: 0,
                            cgid: 0,
                            mode,
                        },
                    },
                ),
                Op::Lookup { node, pick: p } => {
                    let id = pick(p);
                    let out = reg.handle(now, origin(node), Request::Lookup { id });
                    if let Some(Response::Record(r)) = &out.response {
                        prop_assert_eq!(r.id, id);
                    }
                    out
                }
                Op::Heartbeat { node } => reg.handle(now, origin(node), Request::Heartbeat),
                Op::Tick { advance } => {
                    now += advance;
                    let out = reg.tick(now);
                    for (_, &id) in node_of.iter() {
                        if reg.live.contains_key(&id) {
                            prop_assert_eq!(reg.is_up(id), now - reg.live[&id].last_seen_ms < 1000);
                        }
                    }
                    out
                }
                Op::Restart => {
                    reg = Registry::new(config(), disk.clone());
                    prop_assert_eq!(reg.snapshot(), disk.clone());
                    Outcome::default()
                }
                Op::LoseStore => {
                    disk = Snapshot::default();
                    reg = Registry::new(config(), disk.clone());
                    ever.clear();
                    Outcome::default()
                }
            };
            if !matches!(op, Op::Tick { .. } | Op::Restart | Op::LoseStore) {
                prop_assert!(out.response.is_some(), "{:?} gave no response", op);
            }
            // Removed or deleted objects are announced.
            for w in &out.writes {
                if let StoreOp::DeleteObject(id) = w {
                    prop_assert!(gone(&out).contains(id));
                }
            }
            disk.apply(&out.writes);
            reg.check_invariants().map_err(TestCaseError::fail)?;
            prop_assert_eq!(
                &reg.snapshot(),
                &disk,
                "replayed writes differ after {:?}",
                op
            );
            let st = reg.status(now);
            prop_assert_eq!(st.objects.len(), disk.objects.len());
            for o in &st.objects {
                prop_assert_eq!(o.available, reg.is_up(o.record.home));
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        #[test]
        fn random_requests_keep_invariants(ops in proptest::collection::vec(op(), 1..80)) {
            run(ops)?;
        }
    }
}
