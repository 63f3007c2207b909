//! The semaphore-set engine, one rule at a time. Each test quotes the rule
//! of `man 2 semop` / `man 2 semctl` (or names the ipc/sem.c function) it
//! checks. The less documented kernel behaviours (undo entry of a failed
//! call, EAGAIN of a woken waiter, GETNCNT of arrays, otime rules) were
//! also observed on Linux 6.18 with a small C program.

use dipc_dsm::ipc::{Caller, Completion, IpcPerm, ProcId, errno::*, flags::*, limits::*};
use dipc_dsm::sem::{SemBuf, SemCtl, SemCtlResult, SemSet};

const T0: i64 = 1_000;

fn caller(pid: i32, uid: u32, gid: u32) -> Caller {
    Caller {
        proc_: ProcId { node: 1, pid },
        uid,
        gid,
    }
}

fn owner() -> Caller {
    caller(100, 1000, 1000)
}

/// Other processes of the owner's user.
fn p(pid: i32) -> Caller {
    caller(pid, 1000, 1000)
}

fn root() -> Caller {
    caller(1, 0, 0)
}

fn set(nsems: usize, mode: u32) -> SemSet {
    SemSet::new(IpcPerm::new(9, &owner(), mode), nsems, T0)
}

fn sop(num: u16, op: i16, flg: i16) -> SemBuf {
    SemBuf { num, op, flg }
}

fn ok(op: u64) -> Completion<()> {
    Completion { op, result: Ok(()) }
}

fn err(op: u64, errno: i32) -> Completion<()> {
    Completion {
        op,
        result: Err(errno),
    }
}

fn ctl(s: &mut SemSet, cmd: SemCtl) -> Result<SemCtlResult, i32> {
    let (r, out) = s.ctl(&owner(), cmd, T0);
    assert!(out.is_empty(), "unexpected wake-ups {out:?}");
    r
}

fn val(s: &mut SemSet, semnum: i32) -> i32 {
    match ctl(s, SemCtl::GetVal { semnum }) {
        Ok(SemCtlResult::Value(v)) => v,
        other => panic!("GETVAL: {other:?}"),
    }
}

fn ncnt(s: &mut SemSet, semnum: i32) -> i32 {
    match ctl(s, SemCtl::GetNcnt { semnum }) {
        Ok(SemCtlResult::Value(v)) => v,
        other => panic!("GETNCNT: {other:?}"),
    }
}

fn zcnt(s: &mut SemSet, semnum: i32) -> i32 {
    match ctl(s, SemCtl::GetZcnt { semnum }) {
        Ok(SemCtlResult::Value(v)) => v,
        other => panic!("GETZCNT: {other:?}"),
    }
}

fn pid(s: &mut SemSet, semnum: i32) -> ProcId {
    match ctl(s, SemCtl::GetPid { semnum }) {
        Ok(SemCtlResult::Pid(p)) => p,
        other => panic!("GETPID: {other:?}"),
    }
}

fn otime(s: &SemSet) -> i64 {
    s.stat_any().otime
}

/// SETVAL by the owner; returns the wake-ups.
fn setval(s: &mut SemSet, semnum: i32, v: i32, now: i64) -> Vec<Completion<()>> {
    let (r, out) = s.ctl(&owner(), SemCtl::SetVal { semnum, val: v }, now);
    assert_eq!(r, Ok(SemCtlResult::Done));
    out
}

/// semget(2): values start at 0 (Linux), sem_otime 0, sem_ctime now.
#[test]
fn new_set() {
    let mut s = set(3, 0o600);
    assert_eq!(
        ctl(&mut s, SemCtl::GetAll),
        Ok(SemCtlResult::Values(vec![0, 0, 0]))
    );
    let st = s.stat_any();
    assert_eq!((st.nsems, st.otime, st.ctime), (3, 0, T0));
    assert_eq!(pid(&mut s, 0), ProcId::default());
}

/// semop(2): "If sem_op is a positive integer, the operation adds this value
/// to the semaphore value (semval)"; on success "sempid ... is set to the
/// caller's process ID" and "sem_otime is set to the current time".
#[test]
fn increment() {
    let mut s = set(2, 0o600);
    assert_eq!(s.semop(1, &p(7), &[sop(1, 3, 0)], T0 + 4), vec![ok(1)]);
    assert_eq!((val(&mut s, 0), val(&mut s, 1)), (0, 3));
    assert_eq!(pid(&mut s, 1), p(7).proc_);
    assert_eq!(pid(&mut s, 0), ProcId::default());
    assert_eq!((otime(&s), s.stat_any().ctime), (T0 + 4, T0));
}

/// semop(2): "If sem_op is less than zero ... If semval is greater than or
/// equal to the absolute value of sem_op, the operation can proceed
/// immediately ... Otherwise ... semncnt ... is incremented ... and the
/// thread sleeps until ... semval becomes greater than or equal to the
/// absolute value of sem_op".
#[test]
fn decrement_waits_until_possible() {
    let mut s = set(1, 0o600);
    assert!(s.semop(1, &p(7), &[sop(0, -2, 0)], T0).is_empty());
    assert_eq!(ncnt(&mut s, 0), 1);
    assert_eq!(s.semop(2, &p(8), &[sop(0, 1, 0)], T0 + 1), vec![ok(2)]);
    assert_eq!(ncnt(&mut s, 0), 1);
    assert_eq!(
        s.semop(3, &p(8), &[sop(0, 1, 0)], T0 + 2),
        vec![ok(3), ok(1)]
    );
    assert_eq!((val(&mut s, 0), ncnt(&mut s, 0)), (0, 0));
    // The waiter made the last change.
    assert_eq!(pid(&mut s, 0), p(7).proc_);
    assert_eq!(otime(&s), T0 + 2);
    assert!(s.parked().is_empty());
}

/// semop(2): "If IPC_NOWAIT is specified in sem_flg, semop() fails with
/// errno set to EAGAIN (and none of the operations in sops is performed)."
#[test]
fn nowait_is_eagain() {
    let mut s = set(2, 0o600);
    assert_eq!(
        s.semop(1, &p(7), &[sop(0, 1, 0), sop(1, -1, SEM_NOWAIT)], T0),
        vec![err(1, EAGAIN)]
    );
    assert_eq!(val(&mut s, 0), 0);
    assert!(s.parked().is_empty());
    assert_eq!(otime(&s), 0);
}

/// semop(2): "If sem_op is zero, the process must have read permission on
/// the semaphore set. This is a "wait-for-zero" operation: if semval is
/// zero, the operation can immediately proceed. Otherwise, if IPC_NOWAIT is
/// specified in sem_flg, semop() fails with errno set to EAGAIN ...
/// Otherwise, semzcnt ... is incremented ... and the thread sleeps until
/// ... The semaphore value becomes 0".
#[test]
fn wait_for_zero() {
    let mut s = set(1, 0o644);
    let reader = caller(300, 2000, 2000);
    // Read permission is enough to wait for zero, not to alter.
    assert_eq!(s.semop(1, &reader, &[sop(0, 0, 0)], T0 + 1), vec![ok(1)]);
    assert_eq!(pid(&mut s, 0), reader.proc_);
    assert_eq!(otime(&s), T0 + 1);
    assert_eq!(
        s.semop(2, &reader, &[sop(0, 1, 0)], T0),
        vec![err(2, EACCES)]
    );
    assert_eq!(s.semop(3, &p(7), &[sop(0, 2, 0)], T0), vec![ok(3)]);
    assert_eq!(
        s.semop(4, &reader, &[sop(0, 0, SEM_NOWAIT)], T0),
        vec![err(4, EAGAIN)]
    );
    assert!(s.semop(5, &reader, &[sop(0, 0, 0)], T0).is_empty());
    assert_eq!(zcnt(&mut s, 0), 1);
    assert_eq!(s.semop(6, &p(7), &[sop(0, -1, 0)], T0), vec![ok(6)]);
    assert_eq!(zcnt(&mut s, 0), 1);
    // The decrement to zero wakes the waiter.
    assert_eq!(
        s.semop(7, &p(7), &[sop(0, -1, 0)], T0 + 9),
        vec![ok(7), ok(5)]
    );
    assert_eq!(zcnt(&mut s, 0), 0);
    assert_eq!(pid(&mut s, 0), reader.proc_);
}

/// semop(2): "The set of operations contained in sops is performed in array
/// order, and atomically, that is, the operations are performed either as a
/// complete unit, or not at all."
#[test]
fn arrays_are_all_or_nothing() {
    let mut s = set(2, 0o600);
    assert!(
        s.semop(1, &p(7), &[sop(0, 1, 0), sop(1, -1, 0)], T0)
            .is_empty()
    );
    assert_eq!((val(&mut s, 0), val(&mut s, 1)), (0, 0));
    // Making the second operation possible lets the whole array through.
    assert_eq!(setval(&mut s, 1, 1, T0 + 3), vec![ok(1)]);
    assert_eq!((val(&mut s, 0), val(&mut s, 1)), (1, 0));
    assert_eq!((pid(&mut s, 0), pid(&mut s, 1)), (p(7).proc_, p(7).proc_));
}

/// semop(2): operations are "performed in array order": an array may use a
/// value it raised itself, but not one it lowers later.
#[test]
fn array_order_matters() {
    let mut s = set(1, 0o600);
    assert_eq!(
        s.semop(1, &p(7), &[sop(0, 1, 0), sop(0, -1, 0)], T0),
        vec![ok(1)]
    );
    assert!(
        s.semop(2, &p(7), &[sop(0, -1, 0), sop(0, 1, 0)], T0)
            .is_empty()
    );
    assert_eq!(ncnt(&mut s, 0), 1);
    assert_eq!(
        s.semop(3, &p(7), &[sop(0, 5, 0), sop(0, 0, SEM_NOWAIT)], T0),
        vec![err(3, EAGAIN)]
    );
}

/// semop(2) errors: "EFBIG For some operation the value of sem_num is less
/// than 0 or greater than or equal to the number of semaphores in the set",
/// "E2BIG The argument nsops is greater than SEMOPM", "EINVAL ... nsops has a
/// nonpositive value".
#[test]
fn argument_errors() {
    let mut s = set(2, 0o600);
    assert_eq!(s.semop(1, &p(7), &[sop(2, 1, 0)], T0), vec![err(1, EFBIG)]);
    assert_eq!(
        s.semop(2, &p(7), &vec![sop(0, 1, 0); SEMOPM + 1], T0),
        vec![err(2, E2BIG)]
    );
    assert_eq!(s.semop(3, &p(7), &[], T0), vec![err(3, EINVAL)]);
    assert_eq!(
        s.semop(4, &p(7), &vec![sop(0, 1, 0); SEMOPM], T0),
        vec![ok(4)]
    );
    assert_eq!(val(&mut s, 0), SEMOPM as i32);
}

/// semop(2): "ERANGE For some operation sem_op+semval is greater than
/// SEMVMX"; nothing of the array is done.
#[test]
fn erange_above_semvmx() {
    let mut s = set(2, 0o600);
    assert!(setval(&mut s, 0, SEMVMX, T0).is_empty());
    assert_eq!(s.semop(1, &p(7), &[sop(0, 1, 0)], T0), vec![err(1, ERANGE)]);
    assert_eq!(
        s.semop(2, &p(7), &[sop(1, 5, 0), sop(0, 1, 0)], T0),
        vec![err(2, ERANGE)]
    );
    assert_eq!((val(&mut s, 0), val(&mut s, 1)), (SEMVMX, 0));
}

/// ipc/sem.c perform_atomic_semop(): "Exceeding the undo range is an error"
/// (ERANGE): a SEM_UNDO adjustment must stay within [-(SEMAEM+1), SEMAEM].
#[test]
fn erange_beyond_semaem() {
    let mut s = set(1, 0o600);
    assert!(setval(&mut s, 0, SEMVMX, T0).is_empty());
    assert_eq!(
        s.semop(1, &p(7), &[sop(0, -(SEMAEM as i16), SEM_UNDO)], T0),
        vec![ok(1)]
    );
    assert_eq!(s.semadj(p(7).proc_), Some(&[SEMAEM as i16][..]));
    assert_eq!(
        s.semop(2, &p(7), &[sop(0, SEMVMX as i16, 0)], T0),
        vec![ok(2)]
    );
    assert_eq!(
        s.semop(3, &p(7), &[sop(0, -1, SEM_UNDO)], T0),
        vec![err(3, ERANGE)]
    );
    assert_eq!(val(&mut s, 0), SEMVMX);
    // Without SEM_UNDO the same decrement is fine.
    assert_eq!(s.semop(4, &p(7), &[sop(0, -1, 0)], T0), vec![ok(4)]);
}

/// ipc/sem.c update_queue(): waiters are retried in FIFO order.
#[test]
fn waiters_in_fifo_order() {
    let mut s = set(1, 0o600);
    assert!(s.semop(1, &p(7), &[sop(0, -1, 0)], T0).is_empty());
    assert!(s.semop(2, &p(8), &[sop(0, -1, 0)], T0).is_empty());
    assert_eq!(s.semop(3, &p(9), &[sop(0, 1, 0)], T0), vec![ok(3), ok(1)]);
    assert_eq!(s.parked(), vec![2]);
    assert_eq!(s.semop(4, &p(9), &[sop(0, 1, 0)], T0), vec![ok(4), ok(2)]);
}

/// ipc/sem.c update_queue(): a waiter that still cannot proceed does not
/// hold up later ones ("Does q->sleeper still need to sleep? continue").
#[test]
fn blocked_waiter_does_not_hold_up_others() {
    let mut s = set(1, 0o600);
    assert!(s.semop(1, &p(7), &[sop(0, -2, 0)], T0).is_empty());
    assert!(s.semop(2, &p(8), &[sop(0, -1, 0)], T0).is_empty());
    assert_eq!(s.semop(3, &p(9), &[sop(0, 1, 0)], T0), vec![ok(3), ok(2)]);
    assert_eq!(s.parked(), vec![1]);
    assert_eq!(ncnt(&mut s, 0), 1);
}

/// ipc/sem.c update_queue()/check_restart(): after an array completes, the
/// scan restarts, so a waiter it unblocks goes too.
#[test]
fn completed_array_unblocks_the_next() {
    let mut s = set(2, 0o600);
    assert!(
        s.semop(1, &p(7), &[sop(0, -1, 0), sop(1, 1, 0)], T0)
            .is_empty()
    );
    assert!(s.semop(2, &p(8), &[sop(1, -1, 0)], T0).is_empty());
    assert_eq!(
        s.semop(3, &p(9), &[sop(0, 1, 0)], T0),
        vec![ok(3), ok(1), ok(2)]
    );
    assert_eq!((val(&mut s, 0), val(&mut s, 1)), (0, 0));
    assert!(s.parked().is_empty());
}

/// ipc/sem.c merge_queues(): while an array waits, single-operation waiters
/// of all semaphores share one FIFO (built from the per-semaphore queues,
/// highest semaphore first) and the array comes after them.
#[test]
fn waiting_array_merges_the_queues() {
    let mut s = set(2, 0o600);
    assert!(s.semop(1, &p(7), &[sop(0, -1, 0)], T0).is_empty());
    assert!(s.semop(2, &p(8), &[sop(1, -1, 0)], T0).is_empty());
    assert!(
        s.semop(3, &p(9), &[sop(0, -1, 0), sop(1, -1, 0)], T0)
            .is_empty()
    );
    let (r, out) = s.ctl(&owner(), SemCtl::SetAll { values: vec![1, 1] }, T0);
    assert_eq!(r, Ok(SemCtlResult::Done));
    assert_eq!(out, vec![ok(2), ok(1)]);
    assert_eq!(s.parked(), vec![3]);
    s.check_invariants().expect("invariants");
}

/// semctl(2) GETNCNT/GETZCNT and ipc/sem.c count_semcnt(): "a task waits
/// only on the semaphore of the first semop that cannot proceed" (Linux
/// >= 3.16, as SUS wants).
#[test]
fn counts_name_the_blocking_operation_only() {
    let mut s = set(2, 0o600);
    assert!(
        s.semop(1, &p(7), &[sop(0, -1, 0), sop(1, -1, 0)], T0)
            .is_empty()
    );
    assert_eq!((ncnt(&mut s, 0), ncnt(&mut s, 1)), (1, 0));
    assert!(setval(&mut s, 0, 1, T0).is_empty());
    // Retried: now it waits on semaphore 1.
    assert_eq!((ncnt(&mut s, 0), ncnt(&mut s, 1)), (0, 1));
    // A waiting array blocked on a wait-for-zero counts in GETZCNT.
    let mut s = set(2, 0o600);
    assert!(setval(&mut s, 0, 1, T0).is_empty());
    assert!(
        s.semop(2, &p(7), &[sop(0, 0, 0), sop(1, -1, 0)], T0)
            .is_empty()
    );
    assert_eq!((zcnt(&mut s, 0), ncnt(&mut s, 1)), (1, 0));
}

/// ipc/sem.c perform_atomic_semop(): a waiting array is retried as a whole;
/// if it now stops at an operation with IPC_NOWAIT, it fails with EAGAIN.
#[test]
fn woken_array_can_fail_with_eagain() {
    let mut s = set(2, 0o600);
    assert!(
        s.semop(1, &p(7), &[sop(0, -1, 0), sop(1, -1, SEM_NOWAIT)], T0)
            .is_empty()
    );
    assert_eq!(
        s.semop(2, &p(8), &[sop(0, 1, 0)], T0),
        vec![ok(2), err(1, EAGAIN)]
    );
    assert_eq!(val(&mut s, 0), 1);
    assert!(s.parked().is_empty());
}

/// semop(2): "If an operation specifies SEM_UNDO, it will be automatically
/// undone when the process terminates"; the exiting process becomes sempid
/// and waiters that can now proceed are woken.
#[test]
fn undo_on_exit() {
    let mut s = set(2, 0o600);
    let a = p(7);
    assert_eq!(s.semop(1, &a, &[sop(0, 2, SEM_UNDO)], T0), vec![ok(1)]);
    assert_eq!(s.semop(2, &a, &[sop(0, -1, SEM_UNDO)], T0), vec![ok(2)]);
    assert_eq!(s.semop(3, &a, &[sop(1, 1, 0)], T0), vec![ok(3)]);
    assert_eq!(s.semadj(a.proc_), Some(&[-1i16, 0][..]));
    // Another process waits for semaphore 0 to be 0.
    assert!(s.semop(4, &p(8), &[sop(0, 0, 0)], T0).is_empty());
    assert_eq!(s.process_exit(a.proc_, T0 + 7), vec![ok(4)]);
    assert_eq!((val(&mut s, 0), val(&mut s, 1)), (0, 1));
    assert_eq!(pid(&mut s, 0), p(8).proc_);
    assert_eq!(pid(&mut s, 1), a.proc_);
    assert_eq!(s.semadj(a.proc_), None);
    assert_eq!(otime(&s), T0 + 7);
    // A second exit has nothing left to undo.
    assert!(s.process_exit(a.proc_, T0 + 8).is_empty());
    assert_eq!(otime(&s), T0 + 7);
}

/// semop(2) NOTES: if an adjustment "would result in an attempt to decrease a
/// semaphore's value below zero ... Linux adopts a third approach:
/// decreasing the semaphore value as far as possible (i.e., to zero)"; the
/// kernel also caps at SEMVMX (ipc/sem.c exit_sem()).
#[test]
fn exit_undo_is_clamped() {
    let mut s = set(2, 0o600);
    let a = p(7);
    assert_eq!(s.semop(1, &a, &[sop(0, 3, SEM_UNDO)], T0), vec![ok(1)]);
    assert_eq!(s.semop(2, &p(8), &[sop(0, -2, 0)], T0), vec![ok(2)]);
    assert!(setval(&mut s, 1, 10, T0).is_empty());
    assert_eq!(s.semop(3, &a, &[sop(1, -5, SEM_UNDO)], T0), vec![ok(3)]);
    assert_eq!(
        s.semop(4, &p(8), &[sop(1, (SEMVMX - 5) as i16, 0)], T0),
        vec![ok(4)]
    );
    assert!(s.process_exit(a.proc_, T0).is_empty());
    assert_eq!((val(&mut s, 0), val(&mut s, 1)), (0, SEMVMX));
    assert_eq!((pid(&mut s, 0), pid(&mut s, 1)), (a.proc_, a.proc_));
}

/// ipc/sem.c find_alloc_undo() runs before the other checks: a SEM_UNDO
/// semop that then fails still gives the process an (empty) undo entry, so
/// its exit sets sem_otime.
#[test]
fn failed_undo_semop_still_has_an_undo_entry() {
    let mut s = set(1, 0o600);
    assert_eq!(
        s.semop(1, &p(7), &[sop(5, 1, SEM_UNDO)], T0),
        vec![err(1, EFBIG)]
    );
    assert_eq!(s.semadj(p(7).proc_), Some(&[0i16][..]));
    assert!(s.process_exit(p(7).proc_, T0 + 30).is_empty());
    assert_eq!(otime(&s), T0 + 30);
    // Without SEM_UNDO, no entry and no otime.
    let mut s = set(1, 0o600);
    assert_eq!(s.semop(1, &p(7), &[sop(5, 1, 0)], T0), vec![err(1, EFBIG)]);
    assert!(s.process_exit(p(7).proc_, T0 + 30).is_empty());
    assert_eq!(otime(&s), 0);
}

/// semctl(2) SETVAL: "Set the semaphore value (semval) to arg.val ...
/// updating also the sem_ctime member ... Undo entries are cleared for
/// altered semaphores in all processes. If the changes to semaphore values
/// would permit blocked semop() calls in other processes to proceed, then
/// those processes are woken up."
#[test]
fn setval_rules() {
    let mut s = set(2, 0o600);
    assert_eq!(
        s.semop(1, &p(7), &[sop(0, 1, SEM_UNDO), sop(1, 1, SEM_UNDO)], T0),
        vec![ok(1)]
    );
    assert_eq!(s.semop(2, &p(8), &[sop(0, 1, SEM_UNDO)], T0), vec![ok(2)]);
    assert!(s.semop(3, &p(9), &[sop(1, -4, 0)], T0).is_empty());
    // SETVAL alone leaves sem_otime alone.
    assert!(setval(&mut s, 0, 6, T0 + 1).is_empty());
    assert_eq!((otime(&s), s.stat_any().ctime), (T0, T0 + 1));
    assert_eq!(pid(&mut s, 0), owner().proc_);
    assert_eq!(s.semadj(p(7).proc_), Some(&[0i16, -1][..]));
    assert_eq!(s.semadj(p(8).proc_), Some(&[0i16, 0][..]));
    // Raising semaphore 1 wakes the waiter, which sets sem_otime and
    // sempid.
    assert_eq!(setval(&mut s, 1, 5, T0 + 2), vec![ok(3)]);
    assert_eq!(val(&mut s, 1), 1);
    assert_eq!(pid(&mut s, 1), p(9).proc_);
    assert_eq!(otime(&s), T0 + 2);
    // Undo entries of semaphore 1 are gone: exit undoes nothing there.
    assert!(s.process_exit(p(7).proc_, T0 + 3).is_empty());
    assert_eq!((val(&mut s, 0), val(&mut s, 1)), (6, 1));
}

/// semctl(2) SETVAL errors: "ERANGE ... semval ... less than 0 or greater
/// than the implementation limit SEMVMX", "EINVAL ... invalid value for cmd
/// or semid" (semnum out of range), "EACCES The argument cmd has one of the
/// values ... SETVAL ... and the calling process does not have the required
/// permissions". The kernel checks the value first.
#[test]
fn setval_errors() {
    let mut s = set(2, 0o644);
    let reader = caller(300, 2000, 2000);
    let cmd = |semnum, val| SemCtl::SetVal { semnum, val };
    assert_eq!(ctl(&mut s, cmd(0, -1)), Err(ERANGE));
    assert_eq!(ctl(&mut s, cmd(0, SEMVMX + 1)), Err(ERANGE));
    assert_eq!(ctl(&mut s, cmd(2, 1)), Err(EINVAL));
    assert_eq!(ctl(&mut s, cmd(-1, 1)), Err(EINVAL));
    assert_eq!(s.ctl(&reader, cmd(0, 1), T0).0, Err(EACCES));
    assert_eq!(s.ctl(&reader, cmd(0, SEMVMX + 1), T0).0, Err(ERANGE));
    assert_eq!(s.ctl(&root(), cmd(0, SEMVMX), T0).0, Ok(SemCtlResult::Done));
    assert_eq!(val(&mut s, 0), SEMVMX);
    assert_eq!(pid(&mut s, 0), root().proc_);
}

/// semctl(2) SETALL: "Set the semval values for all semaphores of the set
/// using arg.array, updating also the sem_ctime member ... Undo entries are
/// cleared for altered semaphores in all processes"; GETALL "Return semval
/// ... for all semaphores of the set into arg.array"; ERANGE for a value
/// above SEMVMX.
#[test]
fn setall_and_getall() {
    let mut s = set(3, 0o600);
    assert_eq!(s.semop(1, &p(7), &[sop(2, 4, SEM_UNDO)], T0), vec![ok(1)]);
    let all = |values: Vec<u16>| SemCtl::SetAll { values };
    assert_eq!(ctl(&mut s, all(vec![1, 2])), Err(EINVAL));
    assert_eq!(ctl(&mut s, all(vec![1, 2, 40000])), Err(ERANGE));
    assert_eq!(
        ctl(&mut s, SemCtl::GetAll),
        Ok(SemCtlResult::Values(vec![0, 0, 4]))
    );
    let (r, out) = s.ctl(&owner(), all(vec![5, 6, 7]), T0 + 5);
    assert_eq!((r, out), (Ok(SemCtlResult::Done), vec![]));
    assert_eq!(
        ctl(&mut s, SemCtl::GetAll),
        Ok(SemCtlResult::Values(vec![5, 6, 7]))
    );
    assert_eq!(s.semadj(p(7).proc_), Some(&[0i16, 0, 0][..]));
    assert_eq!(s.stat_any().ctime, T0 + 5);
    assert_eq!(pid(&mut s, 1), owner().proc_);
    let other = caller(300, 2000, 2000);
    assert_eq!(s.ctl(&other, all(vec![0, 0, 0]), T0).0, Err(EACCES));
    assert_eq!(s.ctl(&other, SemCtl::GetAll, T0).0, Err(EACCES));
}

/// semctl(2): GETVAL, GETPID, GETNCNT, GETZCNT and IPC_STAT need read
/// permission (EACCES); semnum must name a semaphore (EINVAL).
#[test]
fn get_commands_check_permission_and_semnum() {
    let mut s = set(1, 0o600);
    let other = caller(300, 2000, 2000);
    for cmd in [
        SemCtl::GetVal { semnum: 0 },
        SemCtl::GetPid { semnum: 0 },
        SemCtl::GetNcnt { semnum: 0 },
        SemCtl::GetZcnt { semnum: 0 },
        SemCtl::Stat,
    ] {
        assert_eq!(s.ctl(&other, cmd.clone(), T0).0, Err(EACCES), "{cmd:?}");
        assert!(s.ctl(&root(), cmd, T0).0.is_ok());
    }
    for semnum in [-1, 1] {
        assert_eq!(ctl(&mut s, SemCtl::GetVal { semnum }), Err(EINVAL));
        assert_eq!(ctl(&mut s, SemCtl::GetNcnt { semnum }), Err(EINVAL));
    }
}

/// semctl(2) IPC_STAT copies semid_ds (read permission); IPC_SET "Write the
/// values of some members of the semid_ds structure ... sem_perm.uid,
/// sem_perm.gid, and (the least significant 9 bits of) sem_perm.mode. The
/// sem_ctime member is also updated. The effective UID of the calling
/// process must match the owner (sem_perm.uid) or creator (sem_perm.cuid)
/// of the semaphore set, or the caller must be privileged" (EPERM).
#[test]
fn ipc_stat_and_set() {
    let mut s = set(4, 0o600);
    let other = caller(300, 2000, 2000);
    match ctl(&mut s, SemCtl::Stat) {
        Ok(SemCtlResult::Stat(st)) => {
            assert_eq!((st.nsems, st.ctime, st.perm.mode), (4, T0, 0o600));
            assert_eq!((st.perm.uid, st.perm.cuid, st.perm.key), (1000, 1000, 9));
        }
        other => panic!("IPC_STAT: {other:?}"),
    }
    let chown = |uid| SemCtl::Set {
        uid,
        gid: 2000,
        mode: 0o7640,
    };
    assert_eq!(s.ctl(&other, chown(2000), T0 + 1).0, Err(EPERM));
    assert_eq!(ctl(&mut s, chown(u32::MAX)), Err(EINVAL));
    assert_eq!(s.stat_any().ctime, T0);
    assert_eq!(
        s.ctl(&owner(), chown(2000), T0 + 2).0,
        Ok(SemCtlResult::Done)
    );
    let st = s.stat_any();
    assert_eq!(
        (st.perm.uid, st.perm.gid, st.perm.mode),
        (2000, 2000, 0o640)
    );
    assert_eq!((st.perm.cuid, st.ctime), (1000, T0 + 2));
    // The new owner and the creator may both change it again.
    assert!(s.ctl(&other, chown(2000), T0).0.is_ok());
    assert!(s.ctl(&owner(), chown(2000), T0).0.is_ok());
}

/// semctl(2) IPC_RMID: "Immediately remove the semaphore set, awakening all
/// processes blocked in semop() calls on the set (with an error return and
/// errno set to EIDRM)"; EPERM unless owner, creator or privileged.
#[test]
fn ipc_rmid() {
    let mut s = set(3, 0o666);
    assert!(setval(&mut s, 2, 1, T0).is_empty());
    assert!(s.semop(1, &p(7), &[sop(0, -1, 0)], T0).is_empty());
    assert!(
        s.semop(2, &p(8), &[sop(0, -1, 0), sop(1, -1, 0)], T0)
            .is_empty()
    );
    assert!(s.semop(3, &p(9), &[sop(2, 0, 0)], T0).is_empty());
    let (r, out) = s.ctl(&caller(300, 2000, 2000), SemCtl::Rmid, T0);
    assert_eq!((r, out), (Err(EPERM), vec![]));
    let (r, mut out) = s.ctl(&owner(), SemCtl::Rmid, T0);
    assert_eq!(r, Ok(SemCtlResult::Done));
    out.sort_by_key(|c| c.op);
    assert_eq!(out, vec![err(1, EIDRM), err(2, EIDRM), err(3, EIDRM)]);
    assert!(s.is_removed() && s.parked().is_empty());
    assert_eq!(s.semop(4, &p(7), &[sop(0, 1, 0)], T0), vec![err(4, EIDRM)]);
    assert_eq!(ctl(&mut s, SemCtl::GetAll), Err(EIDRM));
    assert_eq!(ctl(&mut s, SemCtl::Rmid), Err(EIDRM));
    assert!(s.process_exit(p(7).proc_, T0).is_empty());
}

/// semop(2): "EINTR While blocked in this system call, the thread caught a
/// signal"; semtimedop: "EAGAIN ... the time limit specified in timeout
/// expired". Only a waiting operation can be ended; nothing else changes.
#[test]
fn cancel() {
    let mut s = set(1, 0o600);
    assert!(s.semop(1, &p(7), &[sop(0, -1, 0)], T0).is_empty());
    assert!(s.semop(2, &p(8), &[sop(0, -1, 0)], T0).is_empty());
    assert_eq!(s.cancel(1, EINTR), vec![err(1, EINTR)]);
    assert!(s.cancel(1, EINTR).is_empty());
    assert_eq!(ncnt(&mut s, 0), 1);
    assert_eq!(s.cancel(2, EAGAIN), vec![err(2, EAGAIN)]);
    assert!(s.cancel(77, EINTR).is_empty());
    assert_eq!(ncnt(&mut s, 0), 0);
    // The increment finds nobody waiting.
    assert_eq!(s.semop(3, &p(9), &[sop(0, 1, 0)], T0), vec![ok(3)]);
    assert!(s.cancel(3, EINTR).is_empty());
    assert_eq!(val(&mut s, 0), 1);
}

/// A process that exits stops waiting before its undo is applied; other
/// processes (the same pid on another node included) keep waiting.
#[test]
fn process_exit_ends_its_waits_first() {
    let mut s = set(1, 0o600);
    let a = p(7);
    let a_elsewhere = Caller {
        proc_: ProcId { node: 2, pid: 7 },
        ..a
    };
    assert_eq!(s.semop(1, &a, &[sop(0, 1, SEM_UNDO)], T0), vec![ok(1)]);
    assert!(s.semop(2, &a, &[sop(0, -2, 0)], T0).is_empty());
    assert!(s.semop(3, &a_elsewhere, &[sop(0, 0, 0)], T0).is_empty());
    // Undoing the +1 makes the value 0, which releases the other waiter.
    assert_eq!(s.process_exit(a.proc_, T0), vec![err(2, EINTR), ok(3)]);
    assert!(s.parked().is_empty());
}

/// The engine refuses an operation id that is already waiting (a daemon
/// bug) without disturbing the waiting one.
#[test]
fn duplicate_op_id_is_refused() {
    let mut s = set(1, 0o600);
    assert!(s.semop(1, &p(7), &[sop(0, -1, 0)], T0).is_empty());
    assert_eq!(s.semop(1, &p(7), &[sop(0, 1, 0)], T0), vec![err(1, EINVAL)]);
    assert_eq!(val(&mut s, 0), 0);
    assert_eq!(s.parked(), vec![1]);
}
