//! Random operation sequences against one message queue: the engine never
//! panics, every operation completes at most once, exactly the operations
//! that did not complete are parked, and messages are conserved: each
//! message sent is received at most once, unchanged (or truncated as asked),
//! messages of one type are received in the order they entered the queue
//! (msgop(2): the *first* message of the type is read), and what was sent
//! but not received is what `msg_qnum`/`msg_cbytes` report.

use std::collections::{BTreeMap, BTreeSet};

use dipc_dsm::ipc::{Caller, Completion, IpcPerm, ProcId, errno::*, flags::*};
use dipc_dsm::msg::{MsgQueue, MsgResult};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    Send {
        who: usize,
        mtype: i64,
        len: usize,
        nowait: bool,
    },
    Recv {
        who: usize,
        maxsize: usize,
        msgtyp: i64,
        flags: i32,
    },
    Cancel {
        pick: usize,
        signal: bool,
    },
    Set {
        who: usize,
        mode: u32,
        qbytes: u64,
    },
    Exit {
        who: usize,
    },
    Remove {
        who: usize,
    },
}

/// 0: owner and creator; 1: same group; 2: someone else; 3: root; 4: a
/// second process of the owner.
fn callers() -> [Caller; 5] {
    let c = |pid, uid, gid| Caller {
        proc_: ProcId { node: 1, pid },
        uid,
        gid,
    };
    [
        c(10, 1000, 1000),
        c(20, 2000, 1000),
        c(30, 3000, 3000),
        c(40, 0, 0),
        c(50, 1000, 1000),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let who = 0usize..5;
    prop_oneof![
        10 => (who.clone(), 1i64..=4, 4usize..=40, any::<bool>())
            .prop_map(|(who, mtype, len, nowait)| Step::Send { who, mtype, len, nowait }),
        10 => (
            who.clone(),
            prop::sample::select(vec![4usize, 6, 12, 24, 48]),
            -5i64..=5,
            prop::sample::select(vec![
                0,
                IPC_NOWAIT,
                MSG_NOERROR,
                MSG_EXCEPT,
                IPC_NOWAIT | MSG_NOERROR,
                MSG_COPY | IPC_NOWAIT,
                MSG_COPY,
            ])
        )
            .prop_map(|(who, maxsize, msgtyp, flags)| Step::Recv { who, maxsize, msgtyp, flags }),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(pick, signal)| Step::Cancel { pick, signal }),
        2 => (
            who.clone(),
            prop::sample::select(vec![0o666u32, 0o660, 0o600, 0o644, 0o622, 0o000]),
            0u64..=120
        )
            .prop_map(|(who, mode, qbytes)| Step::Set { who, mode, qbytes }),
        1 => who.clone().prop_map(|who| Step::Exit { who }),
        1 => who.prop_map(|who| Step::Remove { who }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Send,
    Recv { maxsize: usize, copy: bool },
}

struct Model {
    q: MsgQueue,
    callers: [Caller; 5],
    next_op: u64,
    /// Every operation issued: its kind and its process.
    issued: BTreeMap<u64, (Kind, ProcId)>,
    completed: BTreeSet<u64>,
    /// Texts of the messages sent so far, by the send's op id.
    texts: BTreeMap<u64, (i64, Vec<u8>)>,
    /// Per type, the op ids of messages in the order they were accepted.
    accepted: BTreeMap<i64, Vec<u64>>,
    /// Per type, how many have been received.
    received_count: BTreeMap<i64, usize>,
    received: BTreeSet<u64>,
}

impl Model {
    fn new() -> Self {
        let callers = callers();
        Model {
            q: MsgQueue::with_qbytes(IpcPerm::new(7, &callers[0], 0o666), 64, 0),
            callers,
            next_op: 1,
            issued: BTreeMap::new(),
            completed: BTreeSet::new(),
            texts: BTreeMap::new(),
            accepted: BTreeMap::new(),
            received_count: BTreeMap::new(),
            received: BTreeSet::new(),
        }
    }

    fn issue(&mut self, kind: Kind, who: usize) -> u64 {
        let op = self.next_op;
        self.next_op += 1;
        self.issued.insert(op, (kind, self.callers[who].proc_));
        op
    }

    fn run(&mut self, step: &Step, now: i64) -> Result<(), TestCaseError> {
        let out = match *step {
            Step::Send {
                who,
                mtype,
                len,
                nowait,
            } => {
                let op = self.issue(Kind::Send, who);
                let mut text = vec![(op % 251) as u8; len];
                text[..4].copy_from_slice(&(op as u32).to_le_bytes());
                self.texts.insert(op, (mtype, text.clone()));
                let flags = if nowait { IPC_NOWAIT } else { 0 };
                let caller = self.callers[who];
                self.q.send(op, &caller, mtype, text, flags, now)
            }
            Step::Recv {
                who,
                maxsize,
                msgtyp,
                flags,
            } => {
                let copy = flags & MSG_COPY != 0;
                let op = self.issue(Kind::Recv { maxsize, copy }, who);
                let caller = self.callers[who];
                self.q.recv(op, &caller, maxsize, msgtyp, flags, now)
            }
            Step::Cancel { pick, signal } => {
                if self.issued.is_empty() {
                    return Ok(());
                }
                let op = *self
                    .issued
                    .keys()
                    .nth(pick % self.issued.len())
                    .unwrap_or(&0);
                let errno = if signal { EINTR } else { EAGAIN };
                let was_parked = self.q.parked().contains(&op);
                let out = self.q.cancel(op, errno);
                let want = if was_parked {
                    vec![Completion {
                        op,
                        result: Err(errno),
                    }]
                } else {
                    vec![]
                };
                prop_assert_eq!(&out, &want);
                out
            }
            Step::Set { who, mode, qbytes } => {
                let caller = self.callers[who];
                let removed = self.q.is_removed();
                let (r, out) = self.q.set(&caller, 1000, 1000, mode, qbytes, now);
                let want = if removed {
                    Err(EIDRM)
                } else if caller.uid == 1000 || caller.uid == 0 {
                    Ok(())
                } else {
                    Err(EPERM)
                };
                prop_assert_eq!(r, want);
                if r.is_ok() {
                    prop_assert_eq!(self.q.stat_any().qbytes, qbytes);
                    prop_assert_eq!(self.q.stat_any().ctime, now);
                }
                out
            }
            Step::Exit { who } => {
                let p = self.callers[who].proc_;
                let out = self.q.process_exit(p);
                for c in &out {
                    prop_assert_eq!(c.result.clone(), Err(EINTR));
                    prop_assert_eq!(self.issued.get(&c.op).map(|i| i.1), Some(p));
                }
                out
            }
            Step::Remove { who } => {
                let caller = self.callers[who];
                match self.q.remove(&caller) {
                    Ok(out) => {
                        prop_assert!(caller.uid == 1000 || caller.uid == 0);
                        for c in &out {
                            prop_assert_eq!(c.result.clone(), Err(EIDRM));
                        }
                        out
                    }
                    Err(e) => {
                        prop_assert!(e == EPERM || e == EIDRM);
                        vec![]
                    }
                }
            }
        };
        self.account(&out)?;
        self.check()
    }

    /// Check and record one call's completions.
    fn account(&mut self, out: &[Completion<MsgResult>]) -> Result<(), TestCaseError> {
        // Messages accepted in this call, in order, before receptions are
        // matched (a receiver woken by a send is listed before the send).
        for c in out {
            prop_assert!(self.issued.contains_key(&c.op), "unknown op {}", c.op);
            prop_assert!(self.completed.insert(c.op), "op {} completed twice", c.op);
            if let Ok(MsgResult::Sent) = c.result {
                prop_assert_eq!(self.issued[&c.op].0, Kind::Send);
                let mtype = self.texts[&c.op].0;
                self.accepted.entry(mtype).or_default().push(c.op);
            }
        }
        for c in out {
            let Ok(MsgResult::Received { mtype, text }) = &c.result else {
                continue;
            };
            let Kind::Recv { maxsize, copy } = self.issued[&c.op].0 else {
                return Err(TestCaseError::fail(format!("op {} is no receive", c.op)));
            };
            prop_assert!(text.len() >= 4, "identifying prefix lost");
            let id = u64::from(u32::from_le_bytes([text[0], text[1], text[2], text[3]]));
            let Some((sent_type, sent_text)) = self.texts.get(&id) else {
                return Err(TestCaseError::fail(format!(
                    "received unknown message {id}"
                )));
            };
            prop_assert_eq!(*mtype, *sent_type);
            let want = &sent_text[..sent_text.len().min(maxsize)];
            prop_assert_eq!(&text[..], want);
            prop_assert!(
                self.accepted[mtype].contains(&id),
                "message {} received but never accepted",
                id
            );
            prop_assert!(
                !self.received.contains(&id),
                "message {} received twice",
                id
            );
            if !copy {
                self.received.insert(id);
                let k = self.received_count.entry(*mtype).or_default();
                prop_assert_eq!(
                    self.accepted[mtype].get(*k),
                    Some(&id),
                    "type {} received out of order",
                    mtype
                );
                *k += 1;
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        self.q.check_invariants().map_err(TestCaseError::fail)?;
        let parked: BTreeSet<u64> = self.q.parked().into_iter().collect();
        let open: BTreeSet<u64> = self
            .issued
            .keys()
            .filter(|op| !self.completed.contains(op))
            .copied()
            .collect();
        prop_assert_eq!(parked, open);
        if !self.q.is_removed() {
            let s = self.q.stat_any();
            let waiting: Vec<u64> = self
                .accepted
                .values()
                .flatten()
                .filter(|id| !self.received.contains(id))
                .copied()
                .collect();
            prop_assert_eq!(s.qnum, waiting.len() as u64);
            let bytes: u64 = waiting.iter().map(|id| self.texts[id].1.len() as u64).sum();
            prop_assert_eq!(s.cbytes, bytes);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_the_invariants(steps in prop::collection::vec(step(), 1..80)) {
        let mut m = Model::new();
        for (i, s) in steps.iter().enumerate() {
            m.run(s, i as i64)?;
        }
    }
}
