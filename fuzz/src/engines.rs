//! Fuzz bodies for the pure engines of `dipc-dsm`: the coherence engine,
//! the message queue and the semaphore set, fed arbitrary sequences of
//! inputs.
//!
//! Shared by the cargo-fuzz targets and, through `#[path]`, by the stable
//! regression test `dsm/tests/fuzz_regressions.rs`. Inputs are built with
//! `arbitrary` from the raw bytes, so a crash input found by libFuzzer
//! replays as the same sequence in the stable test.
//!
//! Besides "no panic", each body checks what the engine promises whatever
//! the input: the msg/sem engines keep their `check_invariants` and complete
//! every operation exactly once (now, or later while parked); the coherence
//! engine answers every blocked access at most once, and while its peers
//! are honest (only messages the engines themselves sent, delivered FIFO
//! per link) keeps one writer or many readers per unit. Forged messages may
//! break coherence (peers are trusted once authenticated) but must never
//! panic the engine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use arbitrary::{Arbitrary, Unstructured};
use dipc_dsm::coherence::{Action, CohMsg, Engine, UnitState};
use dipc_dsm::ipc::{Caller, Completion, IpcPerm, OpId, ProcId};
use dipc_dsm::msg::MsgQueue;
use dipc_dsm::sem::{SemBuf, SemCtl, SemSet};

/// Longest input sequence one run feeds (keeps a run fast).
const MAX_STEPS: usize = 256;

// ---------------------------------------------------------------- coherence

const NODES: u32 = 3;
/// (segment, home, units)
const SEGS: [(i32, u32, u32); 2] = [(10, 1, 3), (11, 2, 1)];

#[derive(Debug, Arbitrary)]
enum CohMsgIn {
    ReadReq,
    WriteReq,
    Fetch { req: u8 },
    FetchInv { req: u8, acks: u8 },
    Inv { req: u8 },
    InvAck,
    Data { excl: bool, acks: u8 },
    Grant { acks: u8 },
    Done,
}

#[derive(Debug, Arbitrary)]
enum CohStep {
    /// A local access on `node`.
    Fault {
        node: u8,
        seg: u8,
        unit: u8,
        write: bool,
    },
    /// Deliver the oldest message of one non-empty link.
    Deliver { link: u8 },
    /// A forged message (a buggy or malicious peer).
    Forge {
        to: u8,
        from: u8,
        seg: u8,
        unit: u8,
        msg: CohMsgIn,
    },
    /// The segment is destroyed on one node only.
    Remove { node: u8, seg: u8 },
}

fn seg_of(pick: u8) -> i32 {
    match pick % 4 {
        0 | 1 => SEGS[usize::from(pick % 2)].0,
        2 => SEGS[1].0,
        _ => i32::from(pick),
    }
}

fn forge(m: CohMsgIn, seg: i32, unit: u32) -> CohMsg {
    let req = |r: u8| u32::from(r % 5);
    let acks = |a: u8| u32::from(a % 4);
    match m {
        CohMsgIn::ReadReq => CohMsg::ReadReq { seg, unit },
        CohMsgIn::WriteReq => CohMsg::WriteReq { seg, unit },
        CohMsgIn::Fetch { req: r } => CohMsg::Fetch {
            seg,
            unit,
            req: req(r),
        },
        CohMsgIn::FetchInv { req: r, acks: a } => CohMsg::FetchInv {
            seg,
            unit,
            req: req(r),
            acks: acks(a),
        },
        CohMsgIn::Inv { req: r } => CohMsg::Inv {
            seg,
            unit,
            req: req(r),
        },
        CohMsgIn::InvAck => CohMsg::InvAck { seg, unit },
        CohMsgIn::Data { excl, acks: a } => CohMsg::Data {
            seg,
            unit,
            excl,
            acks: acks(a),
        },
        CohMsgIn::Grant { acks: a } => CohMsg::Grant {
            seg,
            unit,
            acks: acks(a),
        },
        CohMsgIn::Done => CohMsg::Done { seg, unit },
    }
}

/// Three coherence engines, links between them, and arbitrary steps.
pub fn coherence(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut engines: BTreeMap<u32, Engine> = (1..=NODES).map(|n| (n, Engine::new(n))).collect();
    for e in engines.values_mut() {
        for (seg, home, units) in SEGS {
            assert!(e.add_segment(seg, home, units).is_empty());
        }
    }
    let mut links: BTreeMap<(u32, u32), VecDeque<CohMsg>> = BTreeMap::new();
    let mut next_waiter = 1u64;
    let mut open: BTreeSet<u64> = BTreeSet::new();
    let mut honest = true;
    for _ in 0..MAX_STEPS {
        // An exhausted input still decodes (as zeros): stop there.
        if u.is_empty() {
            break;
        }
        let Ok(step) = CohStep::arbitrary(&mut u) else {
            break;
        };
        let (me, actions) = match step {
            CohStep::Fault {
                node,
                seg,
                unit,
                write,
            } => {
                let me = 1 + u32::from(node) % NODES;
                let w = next_waiter;
                next_waiter += 1;
                open.insert(w);
                let seg = seg_of(seg);
                let Some(e) = engines.get_mut(&me) else {
                    continue;
                };
                (me, e.fault(seg, u32::from(unit % 5), write, w))
            }
            CohStep::Deliver { link } => {
                let busy: Vec<(u32, u32)> = links
                    .iter()
                    .filter(|(_, q)| !q.is_empty())
                    .map(|(k, _)| *k)
                    .collect();
                if busy.is_empty() {
                    continue;
                }
                let (from, to) = busy[usize::from(link) % busy.len()];
                let Some(msg) = links.get_mut(&(from, to)).and_then(VecDeque::pop_front) else {
                    continue;
                };
                let Some(e) = engines.get_mut(&to) else {
                    continue;
                };
                (to, e.receive(from, msg))
            }
            CohStep::Forge {
                to,
                from,
                seg,
                unit,
                msg,
            } => {
                honest = false;
                let to = 1 + u32::from(to) % NODES;
                let msg = forge(msg, seg_of(seg), u32::from(unit % 5));
                let Some(e) = engines.get_mut(&to) else {
                    continue;
                };
                (to, e.receive(u32::from(from % 5), msg))
            }
            CohStep::Remove { node, seg } => {
                honest = false;
                let me = 1 + u32::from(node) % NODES;
                let Some(e) = engines.get_mut(&me) else {
                    continue;
                };
                (me, e.remove_segment(seg_of(seg)))
            }
        };
        for a in actions {
            match a {
                Action::Send { to, msg, .. } => {
                    assert_ne!(to, me, "node {me} sent {msg} to itself");
                    if (1..=NODES).contains(&to) {
                        links.entry((me, to)).or_default().push_back(msg);
                    } else {
                        // Only a forged `req` can name a node that does not
                        // exist; the daemon drops such a send.
                        assert!(!honest, "node {me} sent {msg} to unknown node {to}");
                    }
                }
                Action::Resolve { waiter, .. } | Action::Fail { waiter, .. } => {
                    assert!(
                        open.remove(&waiter),
                        "waiter {waiter} answered twice or never issued"
                    );
                }
                // Install, Invalidate, Downgrade, Ignored: local effects.
                _ => {}
            }
        }
        if honest {
            check_single_writer(&engines);
        }
    }
}

/// One writer or many readers, per unit, across the nodes.
fn check_single_writer(engines: &BTreeMap<u32, Engine>) {
    for (seg, _, units) in SEGS {
        for unit in 0..units {
            let states: Vec<(u32, UnitState)> = engines
                .iter()
                .filter_map(|(&n, e)| e.state(seg, unit).map(|s| (n, s)))
                .filter(|(_, s)| *s != UnitState::Invalid)
                .collect();
            let writers = states
                .iter()
                .filter(|(_, s)| *s == UnitState::Modified)
                .count();
            assert!(
                writers == 0 || states.len() == 1,
                "segment {seg} unit {unit}: {states:?}"
            );
        }
    }
}

// ------------------------------------------------------------------ callers

/// Root, the owner, a member of the owner's group, and someone else; each
/// with two processes on two nodes.
fn caller(pick: u8) -> Caller {
    let (uid, gid) = match pick % 4 {
        0 => (0, 0),
        1 => (1000, 100),
        2 => (1001, 100),
        _ => (1002, 200),
    };
    Caller {
        proc_: ProcId {
            node: 1 + u32::from(pick / 4 % 2),
            pid: 100 + i32::from(pick % 8),
        },
        uid,
        gid,
    }
}

/// Every operation completes exactly once: `done` collects completions,
/// and after each call the issued ones are exactly the completed ones plus
/// the parked ones.
struct Ledger {
    issued: BTreeSet<OpId>,
    done: BTreeSet<OpId>,
    next: OpId,
}

impl Ledger {
    fn new() -> Self {
        Ledger {
            issued: BTreeSet::new(),
            done: BTreeSet::new(),
            next: 1,
        }
    }

    fn issue(&mut self) -> OpId {
        let op = self.next;
        self.next += 1;
        self.issued.insert(op);
        op
    }

    /// An op id to cancel: usually one that was issued, sometimes not.
    fn pick(&self, n: u16) -> OpId {
        if self.next > 1 && !n.is_multiple_of(8) {
            1 + OpId::from(n) % (self.next - 1)
        } else {
            OpId::from(n) + 1_000_000
        }
    }

    fn complete<T: std::fmt::Debug>(&mut self, out: &[Completion<T>]) {
        for c in out {
            assert!(self.issued.contains(&c.op), "completion of unknown {c:?}");
            assert!(self.done.insert(c.op), "{c:?} completed twice");
        }
    }

    fn check(&self, parked: Vec<OpId>) {
        let parked: BTreeSet<OpId> = parked.into_iter().collect();
        assert!(
            parked.is_disjoint(&self.done),
            "completed operations still parked"
        );
        let all: BTreeSet<OpId> = parked.union(&self.done).copied().collect();
        assert_eq!(all, self.issued, "an operation was lost");
    }
}

// -------------------------------------------------------------------- msg

#[derive(Debug, Arbitrary)]
enum MsgStep {
    Send {
        who: u8,
        mtype: i8,
        len: u16,
        flags: u8,
    },
    Recv {
        who: u8,
        maxsize: u16,
        msgtyp: i8,
        flags: u8,
    },
    Cancel {
        op: u16,
        intr: bool,
    },
    Exit {
        who: u8,
    },
    Set {
        who: u8,
        uid: u16,
        gid: u16,
        mode: u16,
        qbytes: u16,
    },
    Stat {
        who: u8,
    },
    Remove {
        who: u8,
    },
}

/// `IPC_NOWAIT`, `MSG_NOERROR`, `MSG_EXCEPT`, `MSG_COPY` from four bits.
fn msg_flags(bits: u8) -> i32 {
    use dipc_dsm::ipc::flags::{IPC_NOWAIT, MSG_COPY, MSG_EXCEPT, MSG_NOERROR};
    let mut f = 0;
    for (bit, flag) in [IPC_NOWAIT, MSG_NOERROR, MSG_EXCEPT, MSG_COPY]
        .into_iter()
        .enumerate()
    {
        if bits & (1 << bit) != 0 {
            f |= flag;
        }
    }
    f
}

/// A message queue created 0640 by the owner, fed arbitrary operations.
pub fn msg_queue(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut q = MsgQueue::with_qbytes(IpcPerm::new(7, &caller(1), 0o640), 256, 1);
    let mut ledger = Ledger::new();
    for now in 2..2 + MAX_STEPS as i64 {
        // An exhausted input still decodes (as zeros): stop there.
        if u.is_empty() {
            break;
        }
        let Ok(step) = MsgStep::arbitrary(&mut u) else {
            break;
        };
        match step {
            MsgStep::Send {
                who,
                mtype,
                len,
                flags,
            } => {
                let op = ledger.issue();
                let text = vec![mtype as u8; usize::from(len % 300)];
                let out = q.send(
                    op,
                    &caller(who),
                    i64::from(mtype),
                    text,
                    msg_flags(flags),
                    now,
                );
                ledger.complete(&out);
            }
            MsgStep::Recv {
                who,
                maxsize,
                msgtyp,
                flags,
            } => {
                let op = ledger.issue();
                let out = q.recv(
                    op,
                    &caller(who),
                    usize::from(maxsize % 400),
                    i64::from(msgtyp),
                    msg_flags(flags),
                    now,
                );
                for c in &out {
                    if let Ok(dipc_dsm::msg::MsgResult::Received { text, .. }) = &c.result {
                        assert!(text.len() <= 400, "received more than any buffer");
                    }
                }
                ledger.complete(&out);
            }
            MsgStep::Cancel { op, intr } => {
                let errno = if intr { 4 } else { 11 };
                let out = q.cancel(ledger.pick(op), errno);
                ledger.complete(&out);
            }
            MsgStep::Exit { who } => {
                let out = q.process_exit(caller(who).proc_);
                ledger.complete(&out);
            }
            MsgStep::Set {
                who,
                uid,
                gid,
                mode,
                qbytes,
            } => {
                let (_, out) = q.set(
                    &caller(who),
                    u32::from(uid % 4) + 999,
                    u32::from(gid % 3) + 99,
                    u32::from(mode),
                    u64::from(qbytes % 600),
                    now,
                );
                ledger.complete(&out);
            }
            MsgStep::Stat { who } => {
                let _ = q.stat(&caller(who));
                let _ = q.stat_any();
            }
            MsgStep::Remove { who } => {
                if let Ok(out) = q.remove(&caller(who)) {
                    ledger.complete(&out);
                    assert!(q.is_removed());
                }
            }
        }
        if let Err(e) = q.check_invariants() {
            panic!("message queue invariant: {e}");
        }
        ledger.check(q.parked());
    }
}

// -------------------------------------------------------------------- sem

#[derive(Debug, Arbitrary)]
struct SopIn {
    num: u8,
    op: i8,
    undo: bool,
    nowait: bool,
}

#[derive(Debug, Arbitrary)]
enum SemStep {
    Op { who: u8, sops: Vec<SopIn> },
    Cancel { op: u16, intr: bool },
    Exit { who: u8 },
    SetVal { who: u8, semnum: i8, val: i16 },
    SetAll { who: u8, values: Vec<u16> },
    Get { who: u8, what: u8, semnum: i8 },
    Set { who: u8, uid: u16, mode: u16 },
    Remove { who: u8 },
}

const NSEMS: usize = 3;

/// A set of three semaphores created 0660 by the owner, fed arbitrary
/// operations.
pub fn sem_set(data: &[u8]) {
    use dipc_dsm::ipc::flags::{IPC_NOWAIT, SEM_UNDO};
    let mut u = Unstructured::new(data);
    let mut s = SemSet::new(IpcPerm::new(9, &caller(1), 0o660), NSEMS, 1);
    let mut ledger = Ledger::new();
    for now in 2..2 + MAX_STEPS as i64 {
        // An exhausted input still decodes (as zeros): stop there.
        if u.is_empty() {
            break;
        }
        let Ok(step) = SemStep::arbitrary(&mut u) else {
            break;
        };
        let out = match step {
            SemStep::Op { who, sops } => {
                let sops: Vec<SemBuf> = sops
                    .into_iter()
                    .take(6)
                    .map(|o| SemBuf {
                        num: u16::from(o.num % (NSEMS as u8 + 1)),
                        op: i16::from(o.op) * 64,
                        flg: if o.undo { SEM_UNDO } else { 0 }
                            | if o.nowait { IPC_NOWAIT as i16 } else { 0 },
                    })
                    .collect();
                let op = ledger.issue();
                s.semop(op, &caller(who), &sops, now)
            }
            SemStep::Cancel { op, intr } => s.cancel(ledger.pick(op), if intr { 4 } else { 11 }),
            SemStep::Exit { who } => s.process_exit(caller(who).proc_, now),
            SemStep::SetVal { who, semnum, val } => {
                let cmd = SemCtl::SetVal {
                    semnum: i32::from(semnum % 5),
                    val: i32::from(val),
                };
                s.ctl(&caller(who), cmd, now).1
            }
            SemStep::SetAll { who, values } => {
                let values = values
                    .into_iter()
                    .take(NSEMS + 1)
                    .map(|v| v % 40000)
                    .collect();
                s.ctl(&caller(who), SemCtl::SetAll { values }, now).1
            }
            SemStep::Get { who, what, semnum } => {
                let semnum = i32::from(semnum % 5);
                let cmd = match what % 6 {
                    0 => SemCtl::GetVal { semnum },
                    1 => SemCtl::GetPid { semnum },
                    2 => SemCtl::GetNcnt { semnum },
                    3 => SemCtl::GetZcnt { semnum },
                    4 => SemCtl::GetAll,
                    _ => SemCtl::Stat,
                };
                let (r, out) = s.ctl(&caller(who), cmd, now);
                assert!(out.is_empty(), "a read-only semctl woke {out:?} ({r:?})");
                out
            }
            SemStep::Set { who, uid, mode } => {
                let cmd = SemCtl::Set {
                    uid: u32::from(uid % 4) + 999,
                    gid: 100,
                    mode: u32::from(mode),
                };
                s.ctl(&caller(who), cmd, now).1
            }
            SemStep::Remove { who } => s.ctl(&caller(who), SemCtl::Rmid, now).1,
        };
        ledger.complete(&out);
        if let Err(e) = s.check_invariants() {
            panic!("semaphore set invariant: {e}");
        }
        ledger.check(s.parked());
    }
}
