//! The message-queue engine, one rule at a time. Each test quotes the rule
//! of `man 2 msgop` / `man 2 msgctl` (or names the ipc/msg.c function) it
//! checks.

use dipc_dsm::ipc::{Caller, Completion, IpcPerm, ProcId, errno::*, flags::*, limits::*};
use dipc_dsm::msg::{MsgQueue, MsgResult};

const T0: i64 = 1_000;

fn caller(pid: i32, uid: u32, gid: u32) -> Caller {
    Caller {
        proc_: ProcId { node: 1, pid },
        uid,
        gid,
    }
}

/// The creator and owner of every test queue.
fn owner() -> Caller {
    caller(100, 1000, 1000)
}

/// Another process of the owner.
fn peer() -> Caller {
    caller(200, 1000, 1000)
}

fn root() -> Caller {
    caller(1, 0, 0)
}

fn queue(mode: u32) -> MsgQueue {
    MsgQueue::new(IpcPerm::new(42, &owner(), mode), T0)
}

fn sent(op: u64) -> Completion<MsgResult> {
    Completion {
        op,
        result: Ok(MsgResult::Sent),
    }
}

fn got(op: u64, mtype: i64, text: &[u8]) -> Completion<MsgResult> {
    Completion {
        op,
        result: Ok(MsgResult::Received {
            mtype,
            text: bytes::Bytes::copy_from_slice(text),
        }),
    }
}

fn err(op: u64, errno: i32) -> Completion<MsgResult> {
    Completion {
        op,
        result: Err(errno),
    }
}

/// Send `text` as type `mtype` and expect it to be accepted at once.
fn put(q: &mut MsgQueue, op: u64, mtype: i64, text: &[u8]) {
    assert_eq!(
        q.send(op, &owner(), mtype, text.to_vec(), 0, T0),
        vec![sent(op)]
    );
}

/// Receive with `IPC_NOWAIT`.
fn take(q: &mut MsgQueue, op: u64, msgtyp: i64, flags: i32) -> Vec<Completion<MsgResult>> {
    q.recv(op, &owner(), 1024, msgtyp, flags | IPC_NOWAIT, T0)
}

fn stat(q: &MsgQueue) -> dipc_dsm::msg::MsqidDs {
    q.stat(&owner()).expect("owner may stat")
}

/// msgget(2): "msg_qbytes is set to the system limit MSGMNB", "msg_ctime is
/// set to the current time", the other fields to 0.
#[test]
fn new_queue_fields() {
    let q = queue(0o600);
    let s = stat(&q);
    assert_eq!(s.qbytes, MSGMNB);
    assert_eq!((s.qnum, s.cbytes), (0, 0));
    assert_eq!((s.stime, s.rtime, s.ctime), (0, 0, T0));
    assert_eq!((s.lspid, s.lrpid), (ProcId::default(), ProcId::default()));
    assert_eq!(s.perm.key, 42);
    assert_eq!((s.perm.uid, s.perm.cuid, s.perm.mode), (1000, 1000, 0o600));
}

/// msgop(2): "msgtyp is 0: the first message in the queue is read".
#[test]
fn msgtyp_zero_takes_the_first_message() {
    let mut q = queue(0o600);
    put(&mut q, 1, 5, b"a");
    put(&mut q, 2, 3, b"b");
    assert_eq!(take(&mut q, 3, 0, 0), vec![got(3, 5, b"a")]);
    assert_eq!(take(&mut q, 4, 0, 0), vec![got(4, 3, b"b")]);
}

/// msgop(2): "msgtyp is greater than 0: the first message in the queue of
/// type msgtyp is read".
#[test]
fn positive_msgtyp_takes_the_first_of_that_type() {
    let mut q = queue(0o600);
    put(&mut q, 1, 1, b"one");
    put(&mut q, 2, 2, b"two-a");
    put(&mut q, 3, 2, b"two-b");
    assert_eq!(take(&mut q, 4, 2, 0), vec![got(4, 2, b"two-a")]);
    assert_eq!(take(&mut q, 5, 2, 0), vec![got(5, 2, b"two-b")]);
    assert_eq!(take(&mut q, 6, 2, 0), vec![err(6, ENOMSG)]);
    assert_eq!(stat(&q).qnum, 1);
}

/// msgop(2): "unless MSG_EXCEPT was specified in msgflg, in which case the
/// first message in the queue of type not equal to msgtyp will be read".
#[test]
fn msg_except_takes_the_first_of_another_type() {
    let mut q = queue(0o600);
    put(&mut q, 1, 7, b"seven");
    put(&mut q, 2, 8, b"eight");
    put(&mut q, 3, 9, b"nine");
    assert_eq!(take(&mut q, 4, 7, MSG_EXCEPT), vec![got(4, 8, b"eight")]);
    assert_eq!(take(&mut q, 5, 7, MSG_EXCEPT), vec![got(5, 9, b"nine")]);
    assert_eq!(take(&mut q, 6, 7, MSG_EXCEPT), vec![err(6, ENOMSG)]);
}

/// ipc/msg.c convert_mode(): MSG_EXCEPT only applies to msgtyp > 0; with
/// msgtyp 0 the first message is read whatever its type.
#[test]
fn msg_except_with_msgtyp_zero_takes_any() {
    let mut q = queue(0o600);
    put(&mut q, 1, 4, b"x");
    assert_eq!(take(&mut q, 2, 0, MSG_EXCEPT), vec![got(2, 4, b"x")]);
}

/// msgop(2): "msgtyp is less than 0: the first message in the queue with the
/// lowest type less than or equal to the absolute value of msgtyp will be
/// read".
#[test]
fn negative_msgtyp_takes_the_lowest_type() {
    let mut q = queue(0o600);
    put(&mut q, 1, 5, b"five");
    put(&mut q, 2, 3, b"three-a");
    put(&mut q, 3, 9, b"nine");
    put(&mut q, 4, 3, b"three-b");
    assert_eq!(take(&mut q, 5, -4, 0), vec![got(5, 3, b"three-a")]);
    assert_eq!(take(&mut q, 6, -4, 0), vec![got(6, 3, b"three-b")]);
    assert_eq!(take(&mut q, 7, -4, 0), vec![err(7, ENOMSG)]);
    // MSG_EXCEPT has no effect on a negative msgtyp.
    assert_eq!(take(&mut q, 8, -5, MSG_EXCEPT), vec![got(8, 5, b"five")]);
    // -LONG_MIN does not exist: the kernel reads it as LONG_MAX.
    assert_eq!(take(&mut q, 9, i64::MIN, 0), vec![got(9, 9, b"nine")]);
}

/// msgop(2): "If the message text has length greater than msgsz, then the
/// behavior depends on whether MSG_NOERROR is specified in msgflg. If
/// MSG_NOERROR is specified, then the message text will be truncated (and
/// the truncated part will be lost); if MSG_NOERROR is not specified, then
/// the message isn't removed from the queue and the system call fails
/// returning -1 with errno set to E2BIG."
#[test]
fn too_long_message_e2big_or_truncated() {
    let mut q = queue(0o600);
    put(&mut q, 1, 1, b"hello world");
    assert_eq!(
        q.recv(2, &owner(), 5, 0, IPC_NOWAIT, T0),
        vec![err(2, E2BIG)]
    );
    assert_eq!((stat(&q).qnum, stat(&q).cbytes), (1, 11));
    assert_eq!(
        q.recv(3, &owner(), 5, 0, IPC_NOWAIT | MSG_NOERROR, T0),
        vec![got(3, 1, b"hello")]
    );
    assert_eq!((stat(&q).qnum, stat(&q).cbytes), (0, 0));
}

/// msgop(2) ENOMSG: "IPC_NOWAIT was specified in msgflg and no message of the
/// requested type existed on the message queue."
#[test]
fn nowait_receive_on_empty_queue_is_enomsg() {
    let mut q = queue(0o600);
    assert_eq!(take(&mut q, 1, 0, 0), vec![err(1, ENOMSG)]);
    assert!(q.parked().is_empty());
}

/// msgop(2) EINVAL: "mtype has a non-positive value, or msgsz has an invalid
/// value (less than 0 or greater than the system value MSGMAX)".
#[test]
fn send_einval_for_bad_type_or_size() {
    let mut q = queue(0o600);
    assert_eq!(q.send(1, &owner(), 0, vec![1], 0, T0), vec![err(1, EINVAL)]);
    assert_eq!(
        q.send(2, &owner(), -3, vec![1], 0, T0),
        vec![err(2, EINVAL)]
    );
    assert_eq!(
        q.send(3, &owner(), 1, vec![0; MSGMAX + 1], 0, T0),
        vec![err(3, EINVAL)]
    );
    assert_eq!(stat(&q).qnum, 0);
    // MSGMAX itself is fine, and so is an empty message.
    put(&mut q, 4, 1, &[0; MSGMAX]);
    put(&mut q, 5, 1, b"");
    assert_eq!((stat(&q).qnum, stat(&q).cbytes), (2, MSGMAX as u64));
}

/// A queue created under raised limits (`kernel.msgmax` = 64 KiB,
/// `kernel.msgmnb` = 128 KiB): messages up to 64 KiB go through whole,
/// `EINVAL` just above; `msg_qbytes` starts at the raised `msgmnb`, which
/// also bounds an unprivileged `IPC_SET`.
#[test]
fn raised_msgmax_and_msgmnb() {
    const MAX: usize = 64 * 1024;
    const MNB: u64 = 128 * 1024;
    let mut q = MsgQueue::with_limits(IpcPerm::new(42, &owner(), 0o600), MAX, MNB, T0);
    assert_eq!(q.msgmax(), MAX);
    assert_eq!(stat(&q).qbytes, MNB);
    let big: Vec<u8> = (0..MAX).map(|i| (i % 251) as u8).collect();
    put(&mut q, 1, 1, &big);
    put(&mut q, 2, 2, &big);
    assert_eq!(
        q.send(3, &owner(), 1, vec![0; MAX + 1], IPC_NOWAIT, T0),
        vec![err(3, EINVAL)]
    );
    // Two full messages fill msgmnb: a third one waits (here: EAGAIN).
    assert_eq!(
        q.send(4, &owner(), 1, vec![7], IPC_NOWAIT, T0),
        vec![err(4, EAGAIN)]
    );
    assert_eq!((stat(&q).qnum, stat(&q).cbytes), (2, 2 * MAX as u64));
    assert_eq!(
        q.recv(5, &owner(), MAX, 2, IPC_NOWAIT, T0),
        vec![got(5, 2, &big)]
    );
    // MSG_COPY copies up to the queue's msgmax, not the default one.
    assert_eq!(
        q.recv(6, &owner(), MAX, 0, MSG_COPY | IPC_NOWAIT, T0),
        vec![got(6, 1, &big)]
    );
    // A waiting receiver gets a 64 KiB message handed over directly.
    let mut q2 = MsgQueue::with_limits(IpcPerm::new(43, &owner(), 0o600), MAX, MNB, T0);
    assert!(q2.recv(7, &peer(), MAX, 0, 0, T0).is_empty());
    assert_eq!(
        q2.send(8, &owner(), 9, big.clone(), 0, T0),
        vec![sent(8), got(7, 9, &big)]
    );
    // IPC_SET: msgmnb (not MSGMNB) bounds the owner; root may exceed it.
    assert_eq!(
        q.set(&owner(), 1000, 1000, 0o600, MNB, T0).0,
        Ok(()),
        "up to the queue's msgmnb"
    );
    assert_eq!(
        q.set(&owner(), 1000, 1000, 0o600, MNB + 1, T0).0,
        Err(EPERM)
    );
    assert_eq!(q.set(&root(), 1000, 1000, 0o600, MNB * 2, T0).0, Ok(()));
    q.check_invariants().expect("invariants");
}

/// A queue created under a lowered `msgmax` refuses what the default would
/// take.
#[test]
fn lowered_msgmax() {
    let mut q = MsgQueue::with_limits(IpcPerm::new(42, &owner(), 0o600), 100, MSGMNB, T0);
    put(&mut q, 1, 1, &[1; 100]);
    assert_eq!(
        q.send(2, &owner(), 1, vec![1; 101], 0, T0),
        vec![err(2, EINVAL)]
    );
    assert_eq!(
        q.send(3, &owner(), 1, vec![1; MSGMAX], 0, T0),
        vec![err(3, EINVAL)]
    );
    assert_eq!(stat(&q).qnum, 1);
}

/// msgop(2): "msg_lspid is set to the process ID of the calling process,
/// msg_qnum is incremented by 1, msg_stime is set to the current time";
/// after msgrcv "msg_lrpid is set to the process ID of the calling process,
/// msg_qnum is decremented by 1, msg_rtime is set to the current time".
#[test]
fn send_and_receive_update_the_record() {
    let mut q = queue(0o666);
    let other = caller(300, 2000, 2000);
    assert_eq!(
        q.send(1, &other, 1, b"abc".to_vec(), 0, T0 + 5),
        vec![sent(1)]
    );
    let s = stat(&q);
    assert_eq!((s.qnum, s.cbytes, s.stime, s.rtime), (1, 3, T0 + 5, 0));
    assert_eq!(s.lspid, other.proc_);
    assert_eq!(
        q.recv(2, &peer(), 10, 0, 0, T0 + 9),
        vec![got(2, 1, b"abc")]
    );
    let s = stat(&q);
    assert_eq!((s.qnum, s.cbytes, s.rtime), (0, 0, T0 + 9));
    assert_eq!(s.lrpid, peer().proc_);
    // msg_ctime is only changed by IPC_SET.
    assert_eq!(s.ctime, T0);
}

/// msgop(2): "If insufficient space is available in the queue, then the
/// default behavior of msgsnd() is to block until space becomes available.
/// If IPC_NOWAIT is specified in msgflg, then the call instead fails with
/// the error EAGAIN."
#[test]
fn full_queue_blocks_or_eagain() {
    let mut q = MsgQueue::with_qbytes(IpcPerm::new(42, &owner(), 0o600), 10, T0);
    put(&mut q, 1, 1, b"12345678");
    assert_eq!(
        q.send(2, &owner(), 1, b"abc".to_vec(), IPC_NOWAIT, T0),
        vec![err(2, EAGAIN)]
    );
    // 8 + 2 <= 10 fits exactly.
    put(&mut q, 3, 1, b"90");
    assert!(q.send(4, &owner(), 1, b"x".to_vec(), 0, T0).is_empty());
    assert_eq!(q.parked(), vec![4]);
    assert_eq!(stat(&q).cbytes, 10);
    // Taking the first message frees 8 bytes: the sender gets through,
    // after the receiver's own completion.
    assert_eq!(
        q.recv(5, &peer(), 100, 0, 0, T0 + 1),
        vec![got(5, 1, b"12345678"), sent(4)]
    );
    let s = stat(&q);
    assert_eq!((s.qnum, s.cbytes, s.stime), (2, 3, T0 + 1));
    assert!(q.parked().is_empty());
}

/// ipc/msg.c msg_fits_inqueue(): the number of messages is limited by
/// msg_qbytes too (each message counts at least one), so zero-length
/// messages cannot fill memory.
#[test]
fn message_count_is_bounded_by_qbytes() {
    let mut q = MsgQueue::with_qbytes(IpcPerm::new(42, &owner(), 0o600), 2, T0);
    put(&mut q, 1, 1, b"");
    put(&mut q, 2, 1, b"");
    assert_eq!(
        q.send(3, &owner(), 1, vec![], IPC_NOWAIT, T0),
        vec![err(3, EAGAIN)]
    );
    assert_eq!((stat(&q).qnum, stat(&q).cbytes), (2, 0));
}

/// msgop(2): a receiver with no matching message blocks ("the calling
/// process blocks until ... a message of the desired type is placed in the
/// queue"); ipc/msg.c pipelined_send() hands the new message straight to
/// the first waiting receiver that wants it: it never enters the queue.
#[test]
fn waiting_receiver_gets_the_message_directly() {
    let mut q = queue(0o600);
    assert!(q.recv(1, &peer(), 100, 2, 0, T0).is_empty());
    // A type 1 message does not interest it and is queued.
    put(&mut q, 2, 1, b"one");
    assert_eq!(q.parked(), vec![1]);
    assert_eq!(
        q.send(3, &owner(), 2, b"two".to_vec(), 0, T0 + 3),
        vec![sent(3), got(1, 2, b"two")]
    );
    let s = stat(&q);
    assert_eq!((s.qnum, s.cbytes), (1, 3));
    assert_eq!(
        (s.lrpid, s.rtime, s.lspid, s.stime),
        (peer().proc_, T0 + 3, owner().proc_, T0 + 3)
    );
}

/// Waiting receivers are served in arrival order (pipelined_send() scans
/// q_receivers from the head).
#[test]
fn waiting_receivers_in_arrival_order() {
    let mut q = queue(0o600);
    let a = caller(301, 1000, 1000);
    let b = caller(302, 1000, 1000);
    assert!(q.recv(1, &a, 100, 0, 0, T0).is_empty());
    assert!(q.recv(2, &b, 100, 0, 0, T0).is_empty());
    assert_eq!(
        q.send(3, &owner(), 9, b"first".to_vec(), 0, T0),
        vec![sent(3), got(1, 9, b"first")]
    );
    assert_eq!(
        q.send(4, &owner(), 9, b"second".to_vec(), 0, T0),
        vec![sent(4), got(2, 9, b"second")]
    );
    assert_eq!(stat(&q).lrpid, b.proc_);
}

/// ipc/msg.c pipelined_send(): a waiting receiver whose buffer is too small
/// (without MSG_NOERROR) is woken with E2BIG and the message goes on to the
/// next receiver, or to the queue.
#[test]
fn waiting_receiver_with_small_buffer_gets_e2big() {
    let mut q = queue(0o600);
    assert!(q.recv(1, &peer(), 2, 0, 0, T0).is_empty());
    assert!(q.recv(2, &peer(), 2, 0, MSG_NOERROR, T0).is_empty());
    assert!(q.recv(3, &peer(), 100, 0, 0, T0).is_empty());
    assert_eq!(
        q.send(4, &owner(), 1, b"long".to_vec(), 0, T0),
        vec![sent(4), err(1, E2BIG), got(2, 1, b"lo")]
    );
    assert_eq!(q.parked(), vec![3]);
    assert_eq!(stat(&q).qnum, 0);
    // With nobody left who can take it, the message is queued.
    assert!(q.cancel(3, EINTR) == vec![err(3, EINTR)]);
    assert!(q.recv(5, &peer(), 1, 0, 0, T0).is_empty());
    assert_eq!(
        q.send(6, &owner(), 1, b"long".to_vec(), 0, T0),
        vec![sent(6), err(5, E2BIG)]
    );
    assert_eq!(stat(&q).qnum, 1);
}

/// ipc/msg.c ss_wakeup(): when a receive makes room, the waiting senders
/// whose message now fits are woken in arrival order; a sender that does
/// not fit stays asleep (behind them). Woken senders that find the room
/// taken by an earlier woken one sleep again at the tail.
#[test]
fn waiting_senders_woken_in_order_when_room_appears() {
    let mut q = MsgQueue::with_qbytes(IpcPerm::new(42, &owner(), 0o600), 100, T0);
    put(&mut q, 1, 1, &[1; 60]);
    put(&mut q, 2, 1, &[2; 40]);
    let (a, b, c) = (
        caller(301, 1000, 1000),
        caller(302, 1000, 1000),
        caller(303, 1000, 1000),
    );
    assert!(q.send(3, &a, 2, vec![3; 30], 0, T0).is_empty());
    assert!(q.send(4, &b, 2, vec![4; 45], 0, T0).is_empty());
    assert!(q.send(5, &c, 2, vec![5; 65], 0, T0).is_empty());
    assert_eq!(q.parked(), vec![3, 4, 5]);
    // Taking the 60-byte message leaves 40 queued bytes: A (30) and B (45)
    // fit then and are woken, C (65) does not and goes behind them. A
    // sends (70 bytes queued); B no longer fits and sleeps again, at the
    // tail: the waiting order is now C, B.
    let out = q.recv(6, &peer(), 100, 0, 0, T0);
    assert_eq!(out, vec![got(6, 1, &[1; 60]), sent(3)]);
    assert_eq!(q.parked(), vec![5, 4]);
    assert_eq!(stat(&q).lspid, a.proc_);
    // Taking the 40-byte message leaves 30: both fit, C is first and takes
    // the room, B waits on.
    let out = q.recv(7, &peer(), 100, 0, 0, T0);
    assert_eq!(out, vec![got(7, 1, &[2; 40]), sent(5)]);
    assert_eq!(q.parked(), vec![4]);
    assert_eq!((stat(&q).cbytes, stat(&q).lspid), (95, c.proc_));
    q.check_invariants().expect("invariants");
}

/// msgctl(2) IPC_RMID: "Immediately remove the message queue, awakening all
/// waiting reader and writer processes (with an error return and errno set
/// to EIDRM)."
#[test]
fn remove_wakes_everyone_with_eidrm() {
    let mut q = MsgQueue::with_qbytes(IpcPerm::new(42, &owner(), 0o600), 1, T0);
    put(&mut q, 1, 1, b"x");
    assert!(q.recv(2, &peer(), 10, 7, 0, T0).is_empty());
    assert!(q.send(3, &peer(), 1, b"y".to_vec(), 0, T0).is_empty());
    assert!(q.recv(4, &peer(), 10, 8, 0, T0).is_empty());
    assert_eq!(
        q.remove(&owner()),
        Ok(vec![err(2, EIDRM), err(4, EIDRM), err(3, EIDRM)])
    );
    assert!(q.is_removed());
    assert!(q.parked().is_empty());
    // msgop(2) EIDRM: the queue was removed.
    assert_eq!(q.send(5, &owner(), 1, vec![], 0, T0), vec![err(5, EIDRM)]);
    assert_eq!(q.recv(6, &owner(), 1, 0, 0, T0), vec![err(6, EIDRM)]);
    assert_eq!(q.stat(&owner()), Err(EIDRM));
    assert_eq!(q.remove(&owner()), Err(EIDRM));
}

/// msgctl(2) EPERM: "The argument cmd has the value IPC_SET or IPC_RMID, but
/// the effective user ID of the calling process is not the creator (as
/// found in msg_perm.cuid) or the owner (as found in msg_perm.uid) of the
/// message queue, and the caller is not privileged".
#[test]
fn remove_needs_owner_creator_or_root() {
    let mut q = queue(0o666);
    let stranger = caller(400, 3000, 3000);
    assert_eq!(q.remove(&stranger), Err(EPERM));
    assert!(!q.is_removed());
    // Give the queue away: the creator keeps control, the new owner gets it.
    let (r, out) = q.set(&owner(), 3000, 3000, 0o600, MSGMNB, T0);
    assert_eq!(r, Ok(()));
    assert!(out.is_empty());
    assert_eq!(q.stat(&stranger).map(|s| s.perm.uid), Ok(3000));
    let mut q2 = q.clone();
    assert_eq!(q.remove(&stranger), Ok(vec![]));
    assert_eq!(q2.remove(&owner()), Ok(vec![]));
    let mut q3 = queue(0o600);
    assert_eq!(q3.remove(&root()), Ok(vec![]));
}

/// msgctl(2) IPC_SET: "Write the values of some members of the msqid_ds
/// structure ... msg_qbytes, msg_perm.uid, msg_perm.gid, and (the least
/// significant 9 bits of) msg_perm.mode. The msg_ctime member is also
/// updated. ... Appropriate privilege is required to raise the msg_qbytes
/// value beyond the system parameter MSGMNB."
#[test]
fn ipc_set_rules() {
    let mut q = queue(0o600);
    let stranger = caller(400, 3000, 3000);
    assert_eq!(
        q.set(&stranger, 3000, 3000, 0o666, 100, T0 + 1).0,
        Err(EPERM)
    );
    assert_eq!(
        q.set(&owner(), 1000, 1000, 0o600, MSGMNB + 1, T0 + 1).0,
        Err(EPERM)
    );
    assert_eq!(stat(&q).qbytes, MSGMNB);
    assert_eq!(stat(&q).ctime, T0);
    // uid (uid_t)-1 is invalid (ipc_update_perm).
    assert_eq!(
        q.set(&owner(), u32::MAX, 1000, 0o600, 100, T0 + 1).0,
        Err(EINVAL)
    );
    assert_eq!(stat(&q).qbytes, MSGMNB);
    // Lowering needs no privilege; only 9 mode bits are taken.
    assert_eq!(q.set(&owner(), 1000, 1000, 0o7640, 100, T0 + 2).0, Ok(()));
    let s = stat(&q);
    assert_eq!((s.qbytes, s.perm.mode, s.ctime), (100, 0o640, T0 + 2));
    // Root may go above MSGMNB.
    assert_eq!(
        q.set(&root(), 1000, 1000, 0o640, MSGMNB * 4, T0 + 3).0,
        Ok(())
    );
    assert_eq!(stat(&q).qbytes, MSGMNB * 4);
}

/// ipc/msg.c msgctl_down(IPC_SET): "sleeping senders might be able to send
/// due to a larger queue size".
#[test]
fn ipc_set_larger_qbytes_wakes_senders() {
    let mut q = MsgQueue::with_qbytes(IpcPerm::new(42, &owner(), 0o600), 4, T0);
    put(&mut q, 1, 1, b"abcd");
    assert!(q.send(2, &peer(), 1, b"ef".to_vec(), 0, T0).is_empty());
    let (r, out) = q.set(&owner(), 1000, 1000, 0o600, 6, T0 + 1);
    assert_eq!(r, Ok(()));
    assert_eq!(out, vec![sent(2)]);
    assert_eq!((stat(&q).qnum, stat(&q).cbytes), (2, 6));
}

/// ipc/msg.c msgctl_down(IPC_SET): "sleeping receivers might be excluded by
/// stricter permissions": they re-check and fail with EACCES.
#[test]
fn ipc_set_stricter_mode_fails_receivers_with_eacces() {
    let mut q = queue(0o644);
    let other = caller(400, 3000, 3000);
    assert!(q.recv(1, &other, 10, 0, 0, T0).is_empty());
    assert!(q.recv(2, &peer(), 10, 0, 0, T0).is_empty());
    let (r, out) = q.set(&owner(), 1000, 1000, 0o600, MSGMNB, T0);
    assert_eq!(r, Ok(()));
    assert_eq!(out, vec![err(1, EACCES)]);
    assert_eq!(q.parked(), vec![2]);
}

/// msgop(2) EACCES: "The calling process does not have write permission on
/// the message queue" (msgsnd) / "read permission" (msgrcv); msgctl(2)
/// IPC_STAT: "The caller must have read permission on the message queue."
/// Owner, group and other bits are chosen as in ipc/util.c ipcperms(), and
/// root (CAP_IPC_OWNER) bypasses them.
#[test]
fn permissions() {
    let group = caller(500, 4000, 1000);
    let other = caller(600, 4000, 4000);
    // Owner may write only, group may read only, others nothing.
    let mut q = queue(0o240);
    assert_eq!(q.send(1, &owner(), 1, b"x".to_vec(), 0, T0), vec![sent(1)]);
    assert_eq!(q.recv(2, &owner(), 10, 0, 0, T0), vec![err(2, EACCES)]);
    assert_eq!(q.stat(&owner()), Err(EACCES));
    assert_eq!(
        q.send(3, &group, 1, b"x".to_vec(), 0, T0),
        vec![err(3, EACCES)]
    );
    assert!(q.stat(&group).is_ok());
    assert_eq!(q.recv(4, &group, 10, 0, 0, T0), vec![got(4, 1, b"x")]);
    assert_eq!(
        q.send(5, &other, 1, b"x".to_vec(), 0, T0),
        vec![err(5, EACCES)]
    );
    assert_eq!(q.recv(6, &other, 10, 0, 0, T0), vec![err(6, EACCES)]);
    assert_eq!(q.stat(&other), Err(EACCES));
    // Root passes every check.
    assert_eq!(q.send(7, &root(), 1, b"r".to_vec(), 0, T0), vec![sent(7)]);
    assert_eq!(q.recv(8, &root(), 10, 0, 0, T0), vec![got(8, 1, b"r")]);
    assert!(q.stat(&root()).is_ok());
    // The creator's uid counts as the owner's even after a chown.
    let (r, _) = q.set(&owner(), 4000, 4000, 0o600, MSGMNB, T0);
    assert_eq!(r, Ok(()));
    assert!(q.stat(&owner()).is_ok());
}

/// msgop(2) EINTR: "While the process was sleeping to receive a message, the
/// process caught a signal"; a signal or timeout only ends an operation that
/// is still waiting.
#[test]
fn cancel_ends_only_waiting_operations() {
    let mut q = queue(0o600);
    assert!(q.recv(1, &peer(), 10, 0, 0, T0).is_empty());
    assert_eq!(q.cancel(1, EINTR), vec![err(1, EINTR)]);
    assert!(q.cancel(1, EINTR).is_empty());
    assert!(q.parked().is_empty());
    // A message sent now is queued: nobody waits any more.
    put(&mut q, 2, 1, b"m");
    assert_eq!(stat(&q).qnum, 1);
    // A completed operation cannot be cancelled; an unknown one neither.
    assert!(q.cancel(2, EINTR).is_empty());
    assert!(q.cancel(99, EAGAIN).is_empty());
    // A waiting sender can be timed out (EAGAIN).
    let mut q = MsgQueue::with_qbytes(IpcPerm::new(1, &owner(), 0o600), 0, T0);
    assert!(q.send(3, &peer(), 1, vec![], 0, T0).is_empty());
    assert_eq!(q.cancel(3, EAGAIN), vec![err(3, EAGAIN)]);
    assert!(q.parked().is_empty());
}

/// msgop(2) MSG_COPY: "Nondestructively fetch a copy of the message at the
/// ordinal position in the queue specified by msgtyp (messages are
/// considered to be numbered starting at 0). This flag must be specified in
/// conjunction with IPC_NOWAIT ... MSG_COPY and MSG_EXCEPT may not be
/// specified together" (EINVAL).
#[test]
fn msg_copy() {
    let mut q = queue(0o600);
    put(&mut q, 1, 5, b"zero");
    put(&mut q, 2, 6, b"one");
    assert_eq!(
        q.recv(3, &owner(), 10, 1, MSG_COPY | IPC_NOWAIT, T0),
        vec![got(3, 6, b"one")]
    );
    assert_eq!(stat(&q).qnum, 2);
    assert_eq!(stat(&q).rtime, 0);
    assert_eq!(
        q.recv(4, &owner(), 10, 2, MSG_COPY | IPC_NOWAIT, T0),
        vec![err(4, ENOMSG)]
    );
    assert_eq!(
        q.recv(5, &owner(), 10, 0, MSG_COPY, T0),
        vec![err(5, EINVAL)]
    );
    assert_eq!(
        q.recv(6, &owner(), 10, 1, MSG_COPY | MSG_EXCEPT | IPC_NOWAIT, T0),
        vec![err(6, EINVAL)]
    );
    assert_eq!(
        q.recv(7, &owner(), 2, 0, MSG_COPY | IPC_NOWAIT, T0),
        vec![err(7, E2BIG)]
    );
    assert!(q.parked().is_empty());
}

/// msgop(2) EINVAL for msgrcv: "msgsz was less than 0": a size_t above
/// LONG_MAX is negative for the kernel.
#[test]
fn receive_size_above_long_max_is_einval() {
    let mut q = queue(0o600);
    assert_eq!(
        q.recv(1, &owner(), usize::MAX, 0, 0, T0),
        vec![err(1, EINVAL)]
    );
    assert!(q.parked().is_empty());
}

/// A process that exits stops waiting; the others keep waiting.
#[test]
fn process_exit_ends_its_waits_only() {
    let mut q = MsgQueue::with_qbytes(IpcPerm::new(42, &owner(), 0o600), 0, T0);
    let a = caller(301, 1000, 1000);
    let b = caller(302, 1000, 1000);
    assert!(q.recv(1, &a, 10, 0, 0, T0).is_empty());
    assert!(q.recv(2, &b, 10, 0, 0, T0).is_empty());
    assert!(q.send(3, &a, 1, vec![], 0, T0).is_empty());
    // Same pid on another node is another process.
    let a_elsewhere = ProcId { node: 2, pid: 301 };
    assert!(q.process_exit(a_elsewhere).is_empty());
    assert_eq!(q.process_exit(a.proc_), vec![err(1, EINTR), err(3, EINTR)]);
    assert_eq!(q.parked(), vec![2]);
}

/// The engine refuses an operation id that is already waiting (a daemon
/// bug) without disturbing the waiting one.
#[test]
fn duplicate_op_id_is_refused() {
    let mut q = queue(0o600);
    assert!(q.recv(1, &peer(), 10, 0, 0, T0).is_empty());
    assert_eq!(q.recv(1, &peer(), 10, 0, 0, T0), vec![err(1, EINVAL)]);
    assert_eq!(
        q.send(1, &owner(), 1, b"x".to_vec(), 0, T0),
        vec![err(1, EINVAL)]
    );
    assert_eq!(q.parked(), vec![1]);
    assert_eq!(
        q.send(2, &owner(), 1, b"x".to_vec(), 0, T0),
        vec![sent(2), got(1, 1, b"x")]
    );
    q.check_invariants().expect("invariants");
}
