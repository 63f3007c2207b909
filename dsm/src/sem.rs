//! The home of one semaphore set: `semop`/`semtimedop`, `semctl` and the
//! `SEM_UNDO` work of process exit, as the kernel runs them (ipc/sem.c), as
//! a pure state machine.
//!
//! A set lives at its home node; every node forwards its callers'
//! operations there and waits for the answer. The daemon passes an
//! [`OpId`] per `semop` and `now` (seconds) for `sem_otime`/`sem_ctime`,
//! and gets [`Completion`]s back. A `semop` that must wait is parked; later
//! calls complete it. A `semtimedop` timeout is the daemon's business: it
//! calls [`SemSet::cancel`] with `EAGAIN` (a signal: `EINTR`).
//!
//! # Why the wait queues look like the kernel's
//!
//! When a change lets several parked operations through, which of them go
//! and in which order is visible to programs (who gets the semaphore, what
//! `GETNCNT` says). Linux decides it with `update_queue()` over a layout of
//! queues that this engine keeps the same, so that the same events give the
//! same winners:
//!
//! * a parked single-operation `semop` that alters a semaphore waits on that
//!   semaphore's *alter* list, a single wait-for-zero on its *const* list;
//! * a parked multi-operation `semop` ("complex") waits on the set's global
//!   alter or const list; while one is parked, every altering waiter is kept
//!   in the global alter list (the kernel's `merge_queues`, which puts the
//!   per-semaphore lists in front, highest semaphore number first), and they
//!   go back to their semaphores when the last complex one leaves
//!   (`unmerge_queues`);
//! * after every change the kernel's `do_smart_update()` retries exactly the
//!   lists it retries: wait-for-zero lists of semaphores that became 0, the
//!   alter lists of semaphores that were increased (or all of them after
//!   `SETVAL`, `SETALL` and exit undo), each in FIFO order, restarting the
//!   scan after a complex operation went through.
//!
//! Semantics of one operation array: all or nothing, evaluated in array
//! order; the first operation that cannot proceed decides (`EAGAIN` if it
//! carries `IPC_NOWAIT`, else wait); a result above `SEMVMX` or an undo
//! value beyond `±SEMAEM` is `ERANGE`. `GETNCNT`/`GETZCNT` count a waiter
//! only on the semaphore of the operation it is blocked on (Linux >= 3.16).
//! `SEM_UNDO` adjustments are kept per (set, process) and applied on
//! [`SemSet::process_exit`], clamped to `[0, SEMVMX]`; `SETVAL`/`SETALL`
//! zero them for the semaphores they set.
//!
//! Completions come back in one list per call: the calling operation's own
//! completion first (if it completes), then those of parked operations in
//! the order the kernel wakes them. Once `IPC_RMID` succeeded, every later
//! call fails with `EIDRM`; the daemon is expected to drop the set.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::ipc::{
    Caller, Completion, Errno, IpcPerm, OpId, PERM_READ, PERM_WRITE, ProcId, errno, flags,
    ipcperms, limits, may_control, update_perm,
};

/// `struct sembuf`: add `op` to semaphore `num` (or wait for it to be 0 if
/// `op` is 0); `flg` may hold `IPC_NOWAIT` and `SEM_UNDO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SemBuf {
    pub num: u16,
    pub op: i16,
    pub flg: i16,
}

/// A `semctl` command with its argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SemCtl {
    GetVal {
        semnum: i32,
    },
    /// `arg.val`; `ERANGE` outside `0..=SEMVMX`.
    SetVal {
        semnum: i32,
        val: i32,
    },
    GetPid {
        semnum: i32,
    },
    GetNcnt {
        semnum: i32,
    },
    GetZcnt {
        semnum: i32,
    },
    GetAll,
    /// `arg.array`: exactly `nsems` values (`EINVAL` otherwise; libsysv
    /// learns `nsems` with `IPC_STAT` first).
    SetAll {
        values: Vec<u16>,
    },
    /// `IPC_STAT`.
    Stat,
    /// `IPC_SET`: owner and the low 9 mode bits.
    Set {
        uid: u32,
        gid: u32,
        mode: u32,
    },
    /// `IPC_RMID`.
    Rmid,
}

/// What a successful `semctl` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SemCtlResult {
    /// GETVAL, GETNCNT, GETZCNT: the call's return value.
    Value(i32),
    /// GETPID: the last process that changed the semaphore (zero if
    /// none yet).
    Pid(ProcId),
    /// GETALL.
    Values(Vec<u16>),
    /// IPC_STAT.
    Stat(SemidDs),
    /// SETVAL, SETALL, IPC_SET, IPC_RMID: the call returned 0.
    Done,
}

/// `struct semid_ds` as `IPC_STAT` fills it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemidDs {
    pub perm: IpcPerm,
    pub otime: i64,
    pub ctime: i64,
    pub nsems: u64,
}

/// One semaphore.
#[derive(Debug, Clone, Default)]
struct Sem {
    val: i32,
    /// `sempid`.
    pid: ProcId,
    /// The kernel keeps `sem_otime` per semaphore; `IPC_STAT` reports the
    /// largest.
    otime: i64,
    /// Parked single-operation decrements of this semaphore (in FIFO
    /// order) while no complex operation is parked.
    pending_alter: VecDeque<OpId>,
    /// Parked single-operation waits for zero of this semaphore.
    pending_const: VecDeque<OpId>,
}

/// A parked `semop`.
#[derive(Debug, Clone)]
struct Waiter {
    proc_: ProcId,
    sops: Vec<SemBuf>,
    /// Does any operation have a non-zero `op`?
    alter: bool,
    /// Index in `sops` of the operation it is blocked on.
    blocking: usize,
}

/// Why an operation array cannot complete now.
enum Stop {
    /// Must wait on `sops[i]`.
    Block(usize),
    /// Fails with this errno (`ERANGE`, or `EAGAIN` when the blocking
    /// operation has `IPC_NOWAIT`).
    Fail(Errno),
}

/// The writes an operation array makes if it completes: (semaphore, new
/// value, new undo adjustment if it has `SEM_UNDO`).
type Writes = Vec<(usize, i32, Option<i32>)>;

type Out = Vec<Completion<()>>;

/// One semaphore set at its home. See the module doc.
#[derive(Debug, Clone)]
pub struct SemSet {
    perm: IpcPerm,
    ctime: i64,
    sems: Vec<Sem>,
    /// Parked complex altering operations, and every parked altering one
    /// while a complex one is parked.
    pending_alter: VecDeque<OpId>,
    /// Parked complex wait-for-zero operations.
    pending_const: VecDeque<OpId>,
    /// Parked operations with more than one `sembuf`.
    complex_count: usize,
    waiters: BTreeMap<OpId, Waiter>,
    /// `semadj` per process (the kernel's `struct sem_undo`).
    undo: BTreeMap<ProcId, Vec<i16>>,
    removed: bool,
}

impl SemSet {
    /// A new set of `nsems` semaphores, all 0 (`semget` with
    /// `IPC_CREAT`); `sem_ctime` is `now`. `semget` (the referee) checks
    /// `1 <= nsems <= SEMMSL`; a set of 0 semaphores answers every `semop`
    /// with `EFBIG`.
    pub fn new(perm: IpcPerm, nsems: usize, now: i64) -> Self {
        SemSet {
            perm,
            ctime: now,
            sems: vec![Sem::default(); nsems],
            pending_alter: VecDeque::new(),
            pending_const: VecDeque::new(),
            complex_count: 0,
            waiters: BTreeMap::new(),
            undo: BTreeMap::new(),
            removed: false,
        }
    }

    /// Number of semaphores.
    pub fn nsems(&self) -> usize {
        self.sems.len()
    }

    /// `semop(semid, sops, sops.len())` by `caller`.
    ///
    /// Errors: `E2BIG` (more than `SEMOPM` operations), `EINVAL` (none),
    /// `EFBIG` (a `num >= nsems`), `EACCES` (write permission to alter,
    /// read permission to wait for zero), `ERANGE`, `EAGAIN`
    /// (`IPC_NOWAIT`), `EIDRM` (also while parked).
    pub fn semop(&mut self, op: OpId, caller: &Caller, sops: &[SemBuf], now: i64) -> Out {
        if sops.len() > limits::SEMOPM {
            return vec![Completion::err(op, errno::E2BIG)];
        }
        if sops.is_empty() {
            return vec![Completion::err(op, errno::EINVAL)];
        }
        if self.removed {
            return vec![Completion::err(op, errno::EIDRM)];
        }
        if self.waiters.contains_key(&op) {
            // A daemon bug: the op id is in use. Refuse the new one.
            return vec![Completion::err(op, errno::EINVAL)];
        }
        let undos = sops.iter().any(|s| s.flg & flags::SEM_UNDO != 0);
        let alter = sops.iter().any(|s| s.op != 0);
        let max = sops.iter().map(|s| s.num as usize).max().unwrap_or(0);
        let nsems = self.sems.len();
        if undos {
            // find_alloc_undo() runs before the other checks: even a
            // failing SEM_UNDO semop leaves an (all zero) undo entry.
            self.undo
                .entry(caller.proc_)
                .or_insert_with(|| vec![0; nsems]);
        }
        if max >= nsems {
            return vec![Completion::err(op, errno::EFBIG)];
        }
        let need = if alter { PERM_WRITE } else { PERM_READ };
        if !ipcperms(&self.perm, caller, need) {
            return vec![Completion::err(op, errno::EACCES)];
        }
        let mut out = Vec::new();
        match self.evaluate(sops, caller.proc_) {
            Ok(writes) => {
                self.apply(&writes, sops, caller.proc_);
                out.push(Completion::ok(op, ()));
                if alter {
                    self.smart_update(Some(sops), true, now, &mut out);
                } else {
                    self.set_otime(Some(sops), now);
                }
            }
            Err(Stop::Fail(e)) => out.push(Completion::err(op, e)),
            Err(Stop::Block(blocking)) => self.park(op, caller.proc_, sops, alter, blocking),
        }
        self.unmerge();
        out
    }

    /// A signal (`EINTR`) or a `semtimedop` timeout (`EAGAIN`) ends parked
    /// operation `op` with `errno`. Nothing happens (an empty list) if `op`
    /// is not parked. As in the kernel, no other waiter is retried: a
    /// departure changes no semaphore value.
    pub fn cancel(&mut self, op: OpId, errno: Errno) -> Out {
        let out = match self.unlink(op) {
            Some(_) => vec![Completion::err(op, errno)],
            None => Vec::new(),
        };
        self.unmerge();
        out
    }

    /// Process `proc_` exited (or its node died): its parked operations end
    /// with `EINTR` (for the daemon to drop), then its `SEM_UNDO`
    /// adjustments are applied as the kernel's `exit_sem()` does: each
    /// semaphore with a non-zero adjustment gets it added, clamped to
    /// `[0, SEMVMX]`, and `sempid = proc_`; then waiters are retried and
    /// `sem_otime` is `now` (if the process had an undo entry here).
    pub fn process_exit(&mut self, proc_: ProcId, now: i64) -> Out {
        let mut out = Vec::new();
        if self.removed {
            return out;
        }
        let mine: Vec<OpId> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.proc_ == proc_)
            .map(|(&op, _)| op)
            .collect();
        for op in mine {
            if self.unlink(op).is_some() {
                out.push(Completion::err(op, errno::EINTR));
            }
        }
        if let Some(adj) = self.undo.remove(&proc_) {
            for (sem, &a) in self.sems.iter_mut().zip(adj.iter()) {
                if a != 0 {
                    sem.val = (sem.val + i32::from(a)).clamp(0, limits::SEMVMX);
                    sem.pid = proc_;
                }
            }
            self.smart_update(None, true, now, &mut out);
        }
        self.unmerge();
        out
    }

    /// `semctl(semid, ..., cmd)` by `caller`.
    ///
    /// Errors, in the kernel's order: `ERANGE` (SETVAL value), `EIDRM`,
    /// `EPERM` (IPC_SET/IPC_RMID by someone neither owner, creator nor
    /// root), `EACCES` (read permission for the GET commands and IPC_STAT,
    /// write permission for SETVAL/SETALL), `EINVAL` (semnum out of range,
    /// SETALL length, IPC_SET to uid/gid -1), `ERANGE` (SETALL value).
    /// SETVAL/SETALL set `sempid`, `sem_ctime`, zero the undo adjustments
    /// of the semaphores they set, and retry waiters; IPC_SET sets
    /// `sem_ctime`; IPC_RMID ends every waiter with `EIDRM`.
    pub fn ctl(
        &mut self,
        caller: &Caller,
        cmd: SemCtl,
        now: i64,
    ) -> (Result<SemCtlResult, Errno>, Out) {
        let mut out = Vec::new();
        let result = self.ctl_inner(caller, cmd, now, &mut out);
        self.unmerge();
        (result, out)
    }

    /// `semctl(SEM_STAT_ANY)`: the `IPC_STAT` record without a permission
    /// check (what `ipcs` shows).
    pub fn stat_any(&self) -> SemidDs {
        SemidDs {
            perm: self.perm,
            otime: self.sems.iter().map(|s| s.otime).max().unwrap_or(0),
            ctime: self.ctime,
            nsems: self.sems.len() as u64,
        }
    }

    /// Has `IPC_RMID` succeeded?
    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// The parked operations, by `OpId`.
    pub fn parked(&self) -> Vec<OpId> {
        self.waiters.keys().copied().collect()
    }

    /// The `SEM_UNDO` adjustments (`semadj`, one per semaphore) the set
    /// holds for `proc_`, if it has an entry.
    pub fn semadj(&self, proc_: ProcId) -> Option<&[i16]> {
        self.undo.get(&proc_).map(Vec::as_slice)
    }

    /// Check the engine's internal invariants (for tests and fuzzing):
    /// values in `[0, SEMVMX]`, undo entries sized to the set, every parked
    /// operation in exactly the wait list the kernel would keep it in, and
    /// no parked operation able to succeed (no lost wake-up).
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.removed && !self.waiters.is_empty() {
            return Err("waiters on a removed set".into());
        }
        for (i, s) in self.sems.iter().enumerate() {
            if !(0..=limits::SEMVMX).contains(&s.val) {
                return Err(format!("semaphore {i} has value {}", s.val));
            }
        }
        for (p, adj) in &self.undo {
            if adj.len() != self.sems.len() {
                return Err(format!("undo entry of {p:?} has {} values", adj.len()));
            }
        }
        let complex = self.waiters.values().filter(|w| w.sops.len() > 1).count();
        if complex != self.complex_count {
            return Err(format!(
                "complex_count {} but {complex} complex waiters",
                self.complex_count
            ));
        }
        if self.complex_count == 0 && !self.pending_alter.is_empty() {
            return Err("global alter list not unmerged".into());
        }
        // Where each waiter is listed.
        let mut seen: BTreeMap<OpId, usize> = BTreeMap::new();
        let mut note =
            |list: &VecDeque<OpId>, ok: &dyn Fn(&Waiter) -> bool| -> Result<(), String> {
                for id in list {
                    let w = self
                        .waiters
                        .get(id)
                        .ok_or_else(|| format!("listed op {id} is not parked"))?;
                    if !ok(w) {
                        return Err(format!("op {id} is in the wrong list"));
                    }
                    *seen.entry(*id).or_default() += 1;
                }
                Ok(())
            };
        note(&self.pending_alter, &|w| w.alter)?;
        note(&self.pending_const, &|w| !w.alter && w.sops.len() > 1)?;
        for (n, s) in self.sems.iter().enumerate() {
            note(&s.pending_alter, &|w| {
                w.alter && w.sops.len() == 1 && w.sops[0].num as usize == n
            })?;
            note(&s.pending_const, &|w| {
                !w.alter && w.sops.len() == 1 && w.sops[0].num as usize == n
            })?;
        }
        for (id, w) in &self.waiters {
            if seen.get(id) != Some(&1) {
                return Err(format!("op {id} is listed {:?} times", seen.get(id)));
            }
            // The recorded blocking operation may be stale, and a retry
            // might now fail (EAGAIN, ERANGE): as in the kernel, a waiter
            // is only retried when a change may let it through. But a
            // waiter that could succeed now was forgotten: a lost wake-up.
            if w.blocking >= w.sops.len() {
                return Err(format!("op {id} blocks on a missing operation"));
            }
            if self.evaluate(&w.sops, w.proc_).is_ok() {
                return Err(format!("parked op {id} could complete"));
            }
        }
        Ok(())
    }

    fn ctl_inner(
        &mut self,
        caller: &Caller,
        cmd: SemCtl,
        now: i64,
        out: &mut Out,
    ) -> Result<SemCtlResult, Errno> {
        if let SemCtl::SetVal { val, .. } = cmd
            && !(0..=limits::SEMVMX).contains(&val)
        {
            return Err(errno::ERANGE);
        }
        if self.removed {
            return Err(errno::EIDRM);
        }
        match cmd {
            SemCtl::Set { uid, gid, mode } => {
                if !may_control(&self.perm, caller) {
                    return Err(errno::EPERM);
                }
                update_perm(&mut self.perm, uid, gid, mode)?;
                self.ctime = now;
                Ok(SemCtlResult::Done)
            }
            SemCtl::Rmid => {
                if !may_control(&self.perm, caller) {
                    return Err(errno::EPERM);
                }
                self.rmid(out);
                Ok(SemCtlResult::Done)
            }
            SemCtl::Stat => {
                self.check(caller, PERM_READ)?;
                Ok(SemCtlResult::Stat(self.stat_any()))
            }
            SemCtl::GetAll => {
                self.check(caller, PERM_READ)?;
                Ok(SemCtlResult::Values(
                    // Values are in 0..=SEMVMX, so they fit a u16.
                    self.sems.iter().map(|s| s.val as u16).collect(),
                ))
            }
            SemCtl::SetAll { values } => {
                self.check(caller, PERM_WRITE)?;
                if values.len() != self.sems.len() {
                    return Err(errno::EINVAL);
                }
                if values.iter().any(|&v| i32::from(v) > limits::SEMVMX) {
                    return Err(errno::ERANGE);
                }
                for (s, &v) in self.sems.iter_mut().zip(values.iter()) {
                    s.val = i32::from(v);
                    s.pid = caller.proc_;
                }
                for adj in self.undo.values_mut() {
                    adj.iter_mut().for_each(|a| *a = 0);
                }
                self.ctime = now;
                self.smart_update(None, false, now, out);
                Ok(SemCtlResult::Done)
            }
            SemCtl::SetVal { semnum, val } => {
                let n = self.semnum(semnum)?;
                self.check(caller, PERM_WRITE)?;
                for adj in self.undo.values_mut() {
                    adj[n] = 0;
                }
                self.sems[n].val = val;
                self.sems[n].pid = caller.proc_;
                self.ctime = now;
                self.smart_update(None, false, now, out);
                Ok(SemCtlResult::Done)
            }
            SemCtl::GetVal { semnum } => {
                self.check(caller, PERM_READ)?;
                let n = self.semnum(semnum)?;
                Ok(SemCtlResult::Value(self.sems[n].val))
            }
            SemCtl::GetPid { semnum } => {
                self.check(caller, PERM_READ)?;
                let n = self.semnum(semnum)?;
                Ok(SemCtlResult::Pid(self.sems[n].pid))
            }
            SemCtl::GetNcnt { semnum } => {
                self.check(caller, PERM_READ)?;
                let n = self.semnum(semnum)?;
                Ok(SemCtlResult::Value(self.count(n, false)))
            }
            SemCtl::GetZcnt { semnum } => {
                self.check(caller, PERM_READ)?;
                let n = self.semnum(semnum)?;
                Ok(SemCtlResult::Value(self.count(n, true)))
            }
        }
    }

    fn check(&self, caller: &Caller, need: u32) -> Result<(), Errno> {
        if ipcperms(&self.perm, caller, need) {
            Ok(())
        } else {
            Err(errno::EACCES)
        }
    }

    fn semnum(&self, semnum: i32) -> Result<usize, Errno> {
        usize::try_from(semnum)
            .ok()
            .filter(|&n| n < self.sems.len())
            .ok_or(errno::EINVAL)
    }

    /// The kernel's `freeary()`: every waiter fails with `EIDRM`, global
    /// lists first, then each semaphore's.
    fn rmid(&mut self, out: &mut Out) {
        let mut order: Vec<OpId> = Vec::new();
        order.extend(self.pending_const.drain(..));
        order.extend(self.pending_alter.drain(..));
        for s in &mut self.sems {
            order.extend(s.pending_const.drain(..));
            order.extend(s.pending_alter.drain(..));
        }
        out.extend(
            order
                .into_iter()
                .map(|op| Completion::err(op, errno::EIDRM)),
        );
        self.waiters.clear();
        self.complex_count = 0;
        self.undo.clear();
        self.removed = true;
    }

    /// The kernel's `count_semcnt()` (GETNCNT with `zero == false`,
    /// GETZCNT with `zero == true`).
    fn count(&self, n: usize, zero: bool) -> i32 {
        let simple = if zero {
            self.sems[n].pending_const.len()
        } else {
            self.sems[n].pending_alter.len()
        };
        let blocked_here = |id: &OpId| {
            let sop = self.waiters.get(id).and_then(|w| w.sops.get(w.blocking));
            sop.is_some_and(|sop| {
                sop.num as usize == n && if zero { sop.op == 0 } else { sop.op < 0 }
            })
        };
        let mut complex = self
            .pending_alter
            .iter()
            .filter(|id| blocked_here(id))
            .count();
        if zero {
            complex += self
                .pending_const
                .iter()
                .filter(|id| blocked_here(id))
                .count();
        }
        i32::try_from(simple + complex).unwrap_or(i32::MAX)
    }

    /// Would `sops` by `proc_` complete now, and with which writes? The
    /// kernel's `perform_atomic_semop()` without side effects: operations
    /// are applied in order, so an array may touch a semaphore twice.
    fn evaluate(&self, sops: &[SemBuf], proc_: ProcId) -> Result<Writes, Stop> {
        let adj = self.undo.get(&proc_);
        let mut writes: Writes = Vec::with_capacity(sops.len());
        for (i, sop) in sops.iter().enumerate() {
            let n = sop.num as usize;
            let Some(sem) = self.sems.get(n) else {
                return Err(Stop::Fail(errno::EFBIG));
            };
            // The latest value and adjustment this array wrote, if any.
            let earlier = writes.iter().rev().find(|w| w.0 == n);
            let cur = earlier.map_or(sem.val, |w| w.1);
            let op = i32::from(sop.op);
            let result = cur + op;
            if (op == 0 && cur != 0) || result < 0 {
                return Err(if sop.flg & flags::SEM_NOWAIT != 0 {
                    Stop::Fail(errno::EAGAIN)
                } else {
                    Stop::Block(i)
                });
            }
            if result > limits::SEMVMX {
                return Err(Stop::Fail(errno::ERANGE));
            }
            let new_adj = if sop.flg & flags::SEM_UNDO != 0 {
                let before = writes
                    .iter()
                    .rev()
                    .find_map(|w| if w.0 == n { w.2 } else { None })
                    .or_else(|| adj.and_then(|a| a.get(n)).map(|&a| i32::from(a)))
                    .unwrap_or(0);
                let undo = before - op;
                if !(-limits::SEMAEM - 1..=limits::SEMAEM).contains(&undo) {
                    return Err(Stop::Fail(errno::ERANGE));
                }
                Some(undo)
            } else {
                None
            };
            writes.push((n, result, new_adj));
        }
        Ok(writes)
    }

    /// Make the writes of a completed array, and set `sempid` of every
    /// semaphore it named (wait-for-zero ones too, as the kernel does).
    fn apply(&mut self, writes: &Writes, sops: &[SemBuf], proc_: ProcId) {
        let nsems = self.sems.len();
        for &(n, val, adj) in writes {
            self.sems[n].val = val;
            if let Some(a) = adj {
                let entry = self.undo.entry(proc_).or_insert_with(|| vec![0; nsems]);
                // evaluate() checked -SEMAEM-1 <= a <= SEMAEM, a short.
                entry[n] = i16::try_from(a).unwrap_or(if a < 0 { i16::MIN } else { i16::MAX });
            }
        }
        for sop in sops {
            self.sems[sop.num as usize].pid = proc_;
        }
    }

    /// Queue a blocked operation where `__do_semtimedop` queues it.
    fn park(&mut self, op: OpId, proc_: ProcId, sops: &[SemBuf], alter: bool, blocking: usize) {
        if sops.len() == 1 {
            let sem = &mut self.sems[sops[0].num as usize];
            if !alter {
                sem.pending_const.push_back(op);
            } else if self.complex_count > 0 {
                self.pending_alter.push_back(op);
            } else {
                sem.pending_alter.push_back(op);
            }
        } else {
            if self.complex_count == 0 {
                self.merge();
            }
            if alter {
                self.pending_alter.push_back(op);
            } else {
                self.pending_const.push_back(op);
            }
            self.complex_count += 1;
        }
        self.waiters.insert(
            op,
            Waiter {
                proc_,
                sops: sops.to_vec(),
                alter,
                blocking,
            },
        );
    }

    /// The kernel's `unlink_queue()`: take `op` off its list.
    fn unlink(&mut self, op: OpId) -> Option<Waiter> {
        let w = self.waiters.remove(&op)?;
        let remove = |list: &mut VecDeque<OpId>| match list.iter().position(|&id| id == op) {
            Some(i) => {
                list.remove(i);
                true
            }
            None => false,
        };
        if w.sops.len() > 1 {
            self.complex_count -= 1;
            if w.alter {
                remove(&mut self.pending_alter);
            } else {
                remove(&mut self.pending_const);
            }
        } else {
            let sem = &mut self.sems[w.sops[0].num as usize];
            if !w.alter {
                remove(&mut sem.pending_const);
            } else if !remove(&mut sem.pending_alter) {
                remove(&mut self.pending_alter);
            }
        }
        Some(w)
    }

    /// The kernel's `merge_queues()`: each semaphore's alter list, in
    /// turn, is spliced to the *front* of the global one.
    fn merge(&mut self) {
        for s in &mut self.sems {
            let mut front = std::mem::take(&mut s.pending_alter);
            front.append(&mut self.pending_alter);
            self.pending_alter = front;
        }
    }

    /// The kernel's `unmerge_queues()`, run where it runs (leaving the
    /// global lock, i.e. at the end of every call): with no complex
    /// operation parked, altering waiters go back to their semaphores.
    fn unmerge(&mut self) {
        if self.complex_count > 0 {
            return;
        }
        for id in std::mem::take(&mut self.pending_alter) {
            if let Some(w) = self.waiters.get(&id) {
                self.sems[w.sops[0].num as usize]
                    .pending_alter
                    .push_back(id);
            }
        }
    }

    /// The kernel's `set_semotime()`.
    fn set_otime(&mut self, sops: Option<&[SemBuf]>, now: i64) {
        let n = sops.and_then(|s| s.first()).map_or(0, |s| s.num as usize);
        if let Some(sem) = self.sems.get_mut(n) {
            sem.otime = now;
        }
    }

    /// The kernel's `do_smart_update()`: retry the waiters a change may
    /// have let through. `sops` is the array that made the change (`None`:
    /// unknown, e.g. SETVAL, SETALL, exit undo).
    fn smart_update(&mut self, sops: Option<&[SemBuf]>, otime: bool, now: i64, out: &mut Out) {
        let mut otime = otime;
        otime |= self.wakeup_zero(sops, out);
        if !self.pending_alter.is_empty() {
            otime |= self.update_queue(None, out);
        } else {
            match sops {
                None => {
                    for n in 0..self.sems.len() {
                        otime |= self.update_queue(Some(n), out);
                    }
                }
                Some(sops) => {
                    for sop in sops.iter().filter(|s| s.op > 0) {
                        otime |= self.update_queue(Some(sop.num as usize), out);
                    }
                }
            }
        }
        if otime {
            self.set_otime(sops, now);
        }
    }

    /// The kernel's `do_smart_wakeup_zero()`.
    fn wakeup_zero(&mut self, sops: Option<&[SemBuf]>, out: &mut Out) -> bool {
        let nums: Vec<usize> = match sops {
            Some(s) => s.iter().map(|s| s.num as usize).collect(),
            None => (0..self.sems.len()).collect(),
        };
        let mut completed = false;
        let mut got_zero = false;
        for n in nums {
            if self.sems[n].val == 0 {
                got_zero = true;
                completed |= self.wake_const(Some(n), out);
            }
        }
        if got_zero {
            completed |= self.wake_const(None, out);
        }
        completed
    }

    /// The kernel's `wake_const_ops()` on semaphore `n`'s wait-for-zero
    /// list, or on the global one (`None`).
    fn wake_const(&mut self, n: Option<usize>, out: &mut Out) -> bool {
        let ids: Vec<OpId> = match n {
            Some(n) => self.sems[n].pending_const.iter().copied().collect(),
            None => self.pending_const.iter().copied().collect(),
        };
        let mut completed = false;
        for id in ids {
            match self.retry(id) {
                Retry::Blocked | Retry::Gone => {}
                Retry::Failed(e) => out.push(Completion::err(id, e)),
                Retry::Done(_) => {
                    completed = true;
                    out.push(Completion::ok(id, ()));
                }
            }
        }
        completed
    }

    /// The kernel's `update_queue()` on semaphore `n`'s alter list, or on
    /// the global one (`None`). Returns whether an operation completed.
    fn update_queue(&mut self, n: Option<usize>, out: &mut Out) -> bool {
        let mut completed = false;
        'again: loop {
            let ids: Vec<OpId> = match n {
                Some(n) => self.sems[n].pending_alter.iter().copied().collect(),
                None => self.pending_alter.iter().copied().collect(),
            };
            for id in ids {
                // A decrement of a semaphore that is 0 cannot proceed, and
                // only decrements wait on a semaphore's own list.
                if n.is_some_and(|n| self.sems[n].val == 0) {
                    break 'again;
                }
                match self.retry(id) {
                    Retry::Blocked | Retry::Gone => {}
                    Retry::Failed(e) => out.push(Completion::err(id, e)),
                    Retry::Done(w) => {
                        completed = true;
                        self.wakeup_zero(Some(&w.sops), out);
                        // check_restart(): after a complex operation, or
                        // with complex ones pending, anything may have
                        // become possible.
                        let restart = !self.pending_alter.is_empty() || w.sops.len() > 1;
                        out.push(Completion::ok(id, ()));
                        if restart {
                            continue 'again;
                        }
                    }
                }
            }
            break;
        }
        completed
    }

    /// Evaluate parked `id` again: complete it (unlinked) or record the
    /// operation it now blocks on.
    fn retry(&mut self, id: OpId) -> Retry {
        let Some(w) = self.waiters.get(&id) else {
            return Retry::Gone;
        };
        match self.evaluate(&w.sops, w.proc_) {
            Err(Stop::Block(b)) => {
                if let Some(w) = self.waiters.get_mut(&id) {
                    w.blocking = b;
                }
                Retry::Blocked
            }
            Err(Stop::Fail(e)) => {
                self.unlink(id);
                Retry::Failed(e)
            }
            Ok(writes) => match self.unlink(id) {
                Some(w) => {
                    self.apply(&writes, &w.sops, w.proc_);
                    Retry::Done(w)
                }
                None => Retry::Gone,
            },
        }
    }
}

/// Outcome of [`SemSet::retry`].
enum Retry {
    Blocked,
    Gone,
    Failed(Errno),
    Done(Waiter),
}
