//! Random operation sequences against one semaphore set: the engine never
//! panics, every operation completes at most once, exactly the operations
//! that did not complete are parked, semaphore values stay in
//! `[0, SEMVMX]`, and the engine agrees with a shadow model kept by the
//! test: the values (and `SEM_UNDO` adjustments) are what the completed
//! operations, `SETVAL`/`SETALL` and exit undo make them; a new `semop`
//! completes, fails or waits exactly as semop(2)'s rules say for the
//! current values; `GETNCNT` + `GETZCNT` count every waiter once.

use std::collections::{BTreeMap, BTreeSet};

use dipc_dsm::ipc::{Caller, Completion, IpcPerm, ProcId, errno::*, flags::*, limits::*};
use dipc_dsm::sem::{SemBuf, SemCtl, SemCtlResult, SemSet};
use proptest::prelude::*;

const NSEMS: usize = 3;

#[derive(Debug, Clone)]
enum Step {
    Semop { who: usize, sops: Vec<SemBuf> },
    Cancel { pick: usize, signal: bool },
    SetVal { who: usize, semnum: i32, val: i32 },
    SetAll { who: usize, values: Vec<u16> },
    Exit { who: usize },
    Rmid { who: usize },
}

/// 0: owner and creator; 1: group member (read/write); 2: someone else
/// (read only); 3: root; 4: a second process of the owner.
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

fn sembuf() -> impl Strategy<Value = SemBuf> {
    (
        prop_oneof![12 => 0u16..NSEMS as u16, 1 => Just(NSEMS as u16)],
        -2i16..=2,
        prop::sample::select(vec![0, SEM_NOWAIT, SEM_UNDO, SEM_NOWAIT | SEM_UNDO]),
    )
        .prop_map(|(num, op, flg)| SemBuf { num, op, flg })
}

fn step() -> impl Strategy<Value = Step> {
    let who = 0usize..5;
    prop_oneof![
        12 => (who.clone(), prop::collection::vec(sembuf(), 1..=3))
            .prop_map(|(who, sops)| Step::Semop { who, sops }),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(pick, signal)| Step::Cancel { pick, signal }),
        2 => (who.clone(), 0i32..NSEMS as i32, prop::sample::select(vec![0, 1, 2, 3, SEMVMX]))
            .prop_map(|(who, semnum, val)| Step::SetVal { who, semnum, val }),
        1 => (who.clone(), prop::collection::vec(0u16..=3, NSEMS))
            .prop_map(|(who, values)| Step::SetAll { who, values }),
        2 => who.clone().prop_map(|who| Step::Exit { who }),
        1 => who.prop_map(|who| Step::Rmid { who }),
    ]
}

/// What semop(2) says an array does to `vals` (with adjustments `adj`):
/// `Ok` with the new values and adjustments, or the reason it cannot.
#[derive(Debug, PartialEq)]
enum Expect {
    Done([i32; NSEMS], [i32; NSEMS]),
    Wait,
    Fail(i32),
}

fn expect(vals: [i32; NSEMS], adj: [i32; NSEMS], sops: &[SemBuf]) -> Expect {
    let (mut vals, mut adj) = (vals, adj);
    for s in sops {
        let n = s.num as usize;
        let op = i32::from(s.op);
        let blocks = if op == 0 {
            vals[n] != 0
        } else {
            vals[n] + op < 0
        };
        if blocks {
            return if s.flg & SEM_NOWAIT != 0 {
                Expect::Fail(EAGAIN)
            } else {
                Expect::Wait
            };
        }
        if vals[n] + op > SEMVMX {
            return Expect::Fail(ERANGE);
        }
        if s.flg & SEM_UNDO != 0 {
            adj[n] -= op;
            if adj[n] > SEMAEM || adj[n] < -SEMAEM - 1 {
                return Expect::Fail(ERANGE);
            }
        }
        vals[n] += op;
    }
    Expect::Done(vals, adj)
}

struct Model {
    s: SemSet,
    callers: [Caller; 5],
    next_op: u64,
    issued: BTreeMap<u64, (ProcId, Vec<SemBuf>)>,
    completed: BTreeSet<u64>,
    vals: [i32; NSEMS],
    adj: BTreeMap<ProcId, [i32; NSEMS]>,
    removed: bool,
}

impl Model {
    fn new() -> Self {
        let callers = callers();
        Model {
            s: SemSet::new(IpcPerm::new(5, &callers[0], 0o664), NSEMS, 0),
            callers,
            next_op: 1,
            issued: BTreeMap::new(),
            completed: BTreeSet::new(),
            vals: [0; NSEMS],
            adj: BTreeMap::new(),
            removed: false,
        }
    }

    fn adj_of(&self, p: ProcId) -> [i32; NSEMS] {
        self.adj.get(&p).copied().unwrap_or([0; NSEMS])
    }

    fn run(&mut self, step: &Step, now: i64) -> Result<(), TestCaseError> {
        let out = match step {
            Step::Semop { who, sops } => {
                let caller = self.callers[*who];
                let op = self.next_op;
                self.next_op += 1;
                self.issued.insert(op, (caller.proc_, sops.clone()));
                let alter = sops.iter().any(|s| s.op != 0);
                let want = if self.removed {
                    Expect::Fail(EIDRM)
                } else if sops.iter().any(|s| s.num as usize >= NSEMS) {
                    Expect::Fail(EFBIG)
                } else if alter && caller.uid == 3000 {
                    Expect::Fail(EACCES)
                } else {
                    expect(self.vals, self.adj_of(caller.proc_), sops)
                };
                let out = self.s.semop(op, &caller, sops, now);
                let own = out.first().filter(|c| c.op == op);
                match want {
                    Expect::Wait => {
                        prop_assert!(own.is_none(), "{:?} should wait: {:?}", sops, out)
                    }
                    Expect::Fail(e) => prop_assert_eq!(own.map(|c| c.result), Some(Err(e))),
                    Expect::Done(..) => prop_assert_eq!(own.map(|c| c.result), Some(Ok(()))),
                }
                out
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
                let errno = if *signal { EINTR } else { EAGAIN };
                let was_parked = self.s.parked().contains(&op);
                let out = self.s.cancel(op, errno);
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
            Step::SetVal { who, semnum, val } => {
                let caller = self.callers[*who];
                let (r, out) = self.s.ctl(
                    &caller,
                    SemCtl::SetVal {
                        semnum: *semnum,
                        val: *val,
                    },
                    now,
                );
                if self.removed {
                    prop_assert_eq!(r, Err(EIDRM));
                } else if caller.uid == 3000 {
                    prop_assert_eq!(r, Err(EACCES));
                } else {
                    prop_assert_eq!(r, Ok(SemCtlResult::Done));
                    let n = *semnum as usize;
                    self.vals[n] = *val;
                    for a in self.adj.values_mut() {
                        a[n] = 0;
                    }
                }
                out
            }
            Step::SetAll { who, values } => {
                let caller = self.callers[*who];
                let (r, out) = self.s.ctl(
                    &caller,
                    SemCtl::SetAll {
                        values: values.clone(),
                    },
                    now,
                );
                if self.removed {
                    prop_assert_eq!(r, Err(EIDRM));
                } else if caller.uid == 3000 {
                    prop_assert_eq!(r, Err(EACCES));
                } else {
                    prop_assert_eq!(r, Ok(SemCtlResult::Done));
                    for (v, &n) in self.vals.iter_mut().zip(values) {
                        *v = i32::from(n);
                    }
                    self.adj.clear();
                }
                out
            }
            Step::Exit { who } => {
                let p = self.callers[*who].proc_;
                let out = self.s.process_exit(p, now);
                if !self.removed {
                    let adj = self.adj.remove(&p).unwrap_or([0; NSEMS]);
                    for (v, a) in self.vals.iter_mut().zip(adj) {
                        *v = (*v + a).clamp(0, SEMVMX);
                    }
                }
                // Its own waits end with EINTR; others may be woken (and
                // may then fail, e.g. EAGAIN) by the undo.
                for c in &out {
                    if self.issued.get(&c.op).is_some_and(|i| i.0 == p) {
                        prop_assert_eq!(c.result, Err(EINTR));
                    }
                }
                out
            }
            Step::Rmid { who } => {
                let caller = self.callers[*who];
                let (r, out) = self.s.ctl(&caller, SemCtl::Rmid, now);
                if self.removed {
                    prop_assert_eq!(r, Err(EIDRM));
                } else if caller.uid == 1000 || caller.uid == 0 {
                    prop_assert_eq!(r, Ok(SemCtlResult::Done));
                    self.removed = true;
                    for c in &out {
                        prop_assert_eq!(c.result, Err(EIDRM));
                    }
                } else {
                    prop_assert_eq!(r, Err(EPERM));
                }
                out
            }
        };
        self.account(&out)?;
        self.check()
    }

    /// Record completions; apply the successful operations to the shadow
    /// values (additions commute, so their order within a call does not
    /// matter).
    fn account(&mut self, out: &[Completion<()>]) -> Result<(), TestCaseError> {
        for c in out {
            prop_assert!(self.issued.contains_key(&c.op), "unknown op {}", c.op);
            prop_assert!(self.completed.insert(c.op), "op {} completed twice", c.op);
            if c.result.is_ok() {
                let (p, sops) = self.issued[&c.op].clone();
                let mut adj = self.adj_of(p);
                for s in &sops {
                    self.vals[s.num as usize] += i32::from(s.op);
                    if s.flg & SEM_UNDO != 0 {
                        adj[s.num as usize] -= i32::from(s.op);
                    }
                }
                if sops.iter().any(|s| s.flg & SEM_UNDO != 0) {
                    self.adj.insert(p, adj);
                }
            }
        }
        Ok(())
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        self.s.check_invariants().map_err(TestCaseError::fail)?;
        let parked: BTreeSet<u64> = self.s.parked().into_iter().collect();
        let open: BTreeSet<u64> = self
            .issued
            .keys()
            .filter(|op| !self.completed.contains(op))
            .copied()
            .collect();
        prop_assert_eq!(&parked, &open);
        if self.removed {
            return Ok(());
        }
        let root = self.callers[3];
        let (all, _) = self.s.ctl(&root, SemCtl::GetAll, 0);
        let want: Vec<u16> = self.vals.iter().map(|&v| v as u16).collect();
        prop_assert_eq!(all, Ok(SemCtlResult::Values(want)));
        for c in self.callers {
            let have = self
                .s
                .semadj(c.proc_)
                .map(|a| a.iter().map(|&x| i32::from(x)).collect::<Vec<_>>())
                .unwrap_or(vec![0; NSEMS]);
            prop_assert_eq!(
                have,
                self.adj_of(c.proc_).to_vec(),
                "semadj of {:?}",
                c.proc_
            );
        }
        let mut waiting = 0;
        for semnum in 0..NSEMS as i32 {
            for cmd in [SemCtl::GetNcnt { semnum }, SemCtl::GetZcnt { semnum }] {
                match self.s.ctl(&root, cmd, 0).0 {
                    Ok(SemCtlResult::Value(v)) => waiting += v as usize,
                    other => return Err(TestCaseError::fail(format!("count: {other:?}"))),
                }
            }
        }
        prop_assert_eq!(waiting, parked.len());
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
