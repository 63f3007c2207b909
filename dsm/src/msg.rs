//! The home of one message queue: `msgsnd`, `msgrcv` and `msgctl` as the
//! kernel runs them (ipc/msg.c), as a pure state machine.
//!
//! A queue lives at its home node; every node forwards its callers'
//! operations there and waits for the answer. This engine is that home's
//! logic. It does no I/O and reads no clock: the daemon passes `now`
//! (seconds since the epoch) for the `msg_*time` fields, an [`OpId`] per
//! operation, and gets [`Completion`]s back. An operation that must wait
//! (queue full, no matching message) is *parked* under its `OpId`; a later
//! call (another send or receive, [`MsgQueue::set`], [`MsgQueue::remove`],
//! [`MsgQueue::cancel`] for a signal or a timeout) completes it.
//!
//! # Kernel behaviour reproduced
//!
//! * `msgtyp` 0 takes the first message, `> 0` the first of that type (the
//!   first of another type with `MSG_EXCEPT`), `< 0` the first of the
//!   lowest type `<= |msgtyp|`. `MSG_COPY` copies message number `msgtyp`.
//! * A message longer than the receiver's buffer: `E2BIG` (it stays
//!   queued), or truncated with `MSG_NOERROR`.
//! * A sender waits while `msg_cbytes + len > msg_qbytes` or
//!   `msg_qnum + 1 > msg_qbytes` (the kernel's `msg_fits_inqueue`).
//! * *Pipelined send*: a message is handed straight to the first parked
//!   receiver that wants it (in arrival order), without touching the queue;
//!   a parked receiver whose buffer is too small for it (and which did not
//!   ask for `MSG_NOERROR`) is woken with `E2BIG` on the way.
//! * When a receive frees room, parked senders whose message now fits are
//!   woken in arrival order (`ss_wakeup`); the others keep their order
//!   behind them. A woken sender re-checks its permission (`EACCES`) and the
//!   room (back to the tail if another woken sender took it).
//! * `IPC_SET` wakes every parked receiver to re-check its permission
//!   (`EACCES`) and wakes the senders a larger `msg_qbytes` lets through.
//!   `IPC_RMID` wakes every receiver, then every sender, with `EIDRM`.
//!
//! Woken tasks run in the kernel in whatever order the scheduler picks;
//! this engine runs them in the order the kernel wakes them, which is one
//! of the orders a real kernel can produce.
//!
//! Completions come back in one list per call: the calling operation's own
//! completion first (if it completes), then those of parked operations, in
//! wake order. Once [`MsgQueue::remove`] succeeded, every later call fails
//! with `EIDRM`; the daemon is expected to drop the queue.

use std::collections::VecDeque;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ipc::{
    Caller, Completion, Errno, IpcPerm, OpId, PERM_READ, PERM_WRITE, ProcId, errno, flags,
    ipcperms, limits, may_control, update_perm,
};

/// What a completed message operation returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MsgResult {
    /// `msgsnd` returned 0.
    Sent,
    /// `msgrcv` returned `text.len()` bytes of a message of type `mtype`
    /// (`text` is already truncated under `MSG_NOERROR`).
    Received { mtype: i64, text: Bytes },
}

/// `struct msqid_ds` as `IPC_STAT` fills it. Pids are cluster-wide
/// ([`ProcId`]); a zero `ProcId` means "none yet", as pid 0 does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsqidDs {
    pub perm: IpcPerm,
    pub stime: i64,
    pub rtime: i64,
    pub ctime: i64,
    pub cbytes: u64,
    pub qnum: u64,
    pub qbytes: u64,
    pub lspid: ProcId,
    pub lrpid: ProcId,
}

/// One queued message.
#[derive(Debug, Clone)]
struct Msg {
    mtype: i64,
    /// Shared with the buffer it arrived in: queued and handed on without
    /// a copy.
    text: Bytes,
}

/// How a receiver selects messages (the kernel's `SEARCH_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Search {
    Any,
    Equal(i64),
    NotEqual(i64),
    LessEqual(i64),
    /// `MSG_COPY`: the n-th message (0-based).
    Number(i64),
}

impl Search {
    /// The kernel's `convert_mode()`.
    fn new(msgtyp: i64, msgflg: i32) -> Self {
        if msgflg & flags::MSG_COPY != 0 {
            Search::Number(msgtyp)
        } else if msgtyp == 0 {
            Search::Any
        } else if msgtyp < 0 {
            // -LONG_MIN does not exist; the kernel uses LONG_MAX.
            Search::LessEqual(msgtyp.checked_neg().unwrap_or(i64::MAX))
        } else if msgflg & flags::MSG_EXCEPT != 0 {
            Search::NotEqual(msgtyp)
        } else {
            Search::Equal(msgtyp)
        }
    }

    /// The kernel's `testmsg()`.
    fn matches(self, mtype: i64) -> bool {
        match self {
            Search::Any | Search::Number(_) => true,
            Search::Equal(t) => mtype == t,
            Search::NotEqual(t) => mtype != t,
            Search::LessEqual(t) => mtype <= t,
        }
    }
}

/// A parked `msgrcv`.
#[derive(Debug, Clone)]
struct Receiver {
    op: OpId,
    caller: Caller,
    search: Search,
    bufsz: usize,
    noerror: bool,
}

/// A parked `msgsnd`, with its message.
#[derive(Debug, Clone)]
struct Sender {
    op: OpId,
    caller: Caller,
    msg: Msg,
}

/// One message queue at its home. See the module doc.
#[derive(Debug, Clone)]
pub struct MsgQueue {
    perm: IpcPerm,
    messages: VecDeque<Msg>,
    cbytes: u64,
    qbytes: u64,
    stime: i64,
    rtime: i64,
    ctime: i64,
    lspid: ProcId,
    lrpid: ProcId,
    receivers: VecDeque<Receiver>,
    senders: VecDeque<Sender>,
    removed: bool,
    /// Largest message text (`msgsnd` fails with `EINVAL` above): the
    /// kernel's `msgmax`, fixed when the queue is created.
    msgmax: usize,
    /// Largest `msg_qbytes` an unprivileged `IPC_SET` may ask for: the
    /// kernel's `msgmnb`, fixed when the queue is created.
    msgmnb: u64,
}

type Out = Vec<Completion<MsgResult>>;

impl MsgQueue {
    /// A new, empty queue (`msgget` with `IPC_CREAT`): `msg_qbytes` is
    /// `MSGMNB`, `msg_ctime` is `now`.
    pub fn new(perm: IpcPerm, now: i64) -> Self {
        Self::with_qbytes(perm, limits::MSGMNB, now)
    }

    /// A new queue whose `msg_qbytes` is `qbytes`, under the default
    /// limits (`MSGMAX`, `MSGMNB`).
    pub fn with_qbytes(perm: IpcPerm, qbytes: u64, now: i64) -> Self {
        let mut q = Self::with_limits(perm, limits::MSGMAX, limits::MSGMNB, now);
        q.qbytes = qbytes;
        q
    }

    /// A new queue under limits other than the kernel's defaults, as
    /// `/proc/sys/kernel/msgmax` and `msgmnb` can set them: messages of up
    /// to `msgmax` bytes, `msg_qbytes` starting at `msgmnb` (which is also
    /// the most an unprivileged `IPC_SET` may ask for). The limits stay
    /// those of the queue's creation for its whole life, so every node
    /// sees the same ones.
    pub fn with_limits(perm: IpcPerm, msgmax: usize, msgmnb: u64, now: i64) -> Self {
        MsgQueue {
            perm,
            messages: VecDeque::new(),
            cbytes: 0,
            qbytes: msgmnb,
            stime: 0,
            rtime: 0,
            ctime: now,
            lspid: ProcId::default(),
            lrpid: ProcId::default(),
            receivers: VecDeque::new(),
            senders: VecDeque::new(),
            removed: false,
            msgmax,
            msgmnb,
        }
    }

    /// The queue's `msgmax`: its longest message text.
    pub fn msgmax(&self) -> usize {
        self.msgmax
    }

    /// `msgsnd(msqid, {mtype, text}, text.len(), flags)` by `caller`.
    ///
    /// Errors: `EINVAL` (`mtype < 1` or `text` longer than the queue's
    /// `msgmax`),
    /// `EACCES` (no write permission), `EAGAIN` (full and `IPC_NOWAIT`),
    /// `EIDRM` (removed, also while parked); parked until there is room
    /// otherwise.
    pub fn send(
        &mut self,
        op: OpId,
        caller: &Caller,
        mtype: i64,
        text: impl Into<Bytes>,
        flags: i32,
        now: i64,
    ) -> Out {
        let text = text.into();
        let mut out = Vec::new();
        if text.len() > self.msgmax || mtype < 1 {
            return vec![Completion::err(op, errno::EINVAL)];
        }
        if let Some(e) = self.admission_error(op) {
            return vec![Completion::err(op, e)];
        }
        if !ipcperms(&self.perm, caller, PERM_WRITE) {
            return vec![Completion::err(op, errno::EACCES)];
        }
        if self.fits(text.len()) {
            self.deliver(caller.proc_, Msg { mtype, text }, now, &mut out);
            out.insert(0, Completion::ok(op, MsgResult::Sent));
        } else if flags & crate::ipc::flags::IPC_NOWAIT != 0 {
            out.push(Completion::err(op, errno::EAGAIN));
        } else {
            self.senders.push_back(Sender {
                op,
                caller: *caller,
                msg: Msg { mtype, text },
            });
        }
        out
    }

    /// `msgrcv(msqid, buf, maxsize, msgtyp, flags)` by `caller`.
    ///
    /// Errors: `EINVAL` (`maxsize` above `LONG_MAX`; `MSG_COPY` without
    /// `IPC_NOWAIT` or with `MSG_EXCEPT`; `MSG_COPY|MSG_NOERROR` of a
    /// message longer than `maxsize`), `EACCES` (no read permission),
    /// `E2BIG` (message longer than `maxsize` without `MSG_NOERROR`),
    /// `ENOMSG` (nothing matches and `IPC_NOWAIT`), `EIDRM`; parked until
    /// a matching message arrives otherwise.
    pub fn recv(
        &mut self,
        op: OpId,
        caller: &Caller,
        maxsize: usize,
        msgtyp: i64,
        flags: i32,
        now: i64,
    ) -> Out {
        use crate::ipc::flags::{IPC_NOWAIT, MSG_COPY, MSG_EXCEPT, MSG_NOERROR};
        if i64::try_from(maxsize).is_err() {
            return vec![Completion::err(op, errno::EINVAL)];
        }
        if flags & MSG_COPY != 0 && (flags & MSG_EXCEPT != 0 || flags & IPC_NOWAIT == 0) {
            return vec![Completion::err(op, errno::EINVAL)];
        }
        if let Some(e) = self.admission_error(op) {
            return vec![Completion::err(op, e)];
        }
        let receiver = Receiver {
            op,
            caller: *caller,
            search: Search::new(msgtyp, flags),
            bufsz: maxsize,
            noerror: flags & MSG_NOERROR != 0,
        };
        let mut out = Vec::new();
        match self.try_receive(&receiver, now, &mut out) {
            Some(result) => out.insert(0, Completion { op, result }),
            None if flags & IPC_NOWAIT != 0 => out.insert(0, Completion::err(op, errno::ENOMSG)),
            None => self.receivers.push_back(receiver),
        }
        out
    }

    /// A signal (`EINTR`) or a timeout (`EAGAIN`) ends parked operation
    /// `op` with `errno`. Nothing happens (an empty list) if `op` is not
    /// parked (already completed, or unknown).
    pub fn cancel(&mut self, op: OpId, errno: Errno) -> Out {
        if let Some(i) = self.receivers.iter().position(|r| r.op == op) {
            self.receivers.remove(i);
            return vec![Completion::err(op, errno)];
        }
        if let Some(i) = self.senders.iter().position(|s| s.op == op) {
            self.senders.remove(i);
            return vec![Completion::err(op, errno)];
        }
        Vec::new()
    }

    /// Process `proc_` is gone (exit, kill, its node died): its parked
    /// operations end with `EINTR` (nobody will read them; the daemon drops
    /// them). Queued messages it sent stay, as in the kernel.
    pub fn process_exit(&mut self, proc_: ProcId) -> Out {
        let mut out = Vec::new();
        self.receivers.retain(|r| {
            let gone = r.caller.proc_ == proc_;
            if gone {
                out.push(Completion::err(r.op, errno::EINTR));
            }
            !gone
        });
        self.senders.retain(|s| {
            let gone = s.caller.proc_ == proc_;
            if gone {
                out.push(Completion::err(s.op, errno::EINTR));
            }
            !gone
        });
        out
    }

    /// `msgctl(IPC_STAT)`: needs read permission (`EACCES`).
    pub fn stat(&self, caller: &Caller) -> Result<MsqidDs, Errno> {
        if self.removed {
            return Err(errno::EIDRM);
        }
        if !ipcperms(&self.perm, caller, PERM_READ) {
            return Err(errno::EACCES);
        }
        Ok(self.stat_any())
    }

    /// `msgctl(MSG_STAT_ANY)`: the same record without a permission check
    /// (what `ipcs` shows).
    pub fn stat_any(&self) -> MsqidDs {
        MsqidDs {
            perm: self.perm,
            stime: self.stime,
            rtime: self.rtime,
            ctime: self.ctime,
            cbytes: self.cbytes,
            qnum: self.messages.len() as u64,
            qbytes: self.qbytes,
            lspid: self.lspid,
            lrpid: self.lrpid,
        }
    }

    /// `msgctl(IPC_SET)`: new owner, mode bits and `msg_qbytes`.
    ///
    /// Errors: `EPERM` (caller neither owner, creator nor root; or raising
    /// `qbytes` above the queue's `msgmnb` without root), `EINVAL` (uid or gid is
    /// `(uid_t)-1`), `EIDRM`. On success `msg_ctime` is `now`, parked
    /// receivers re-check their permission and parked senders the room.
    pub fn set(
        &mut self,
        caller: &Caller,
        uid: u32,
        gid: u32,
        mode: u32,
        qbytes: u64,
        now: i64,
    ) -> (Result<(), Errno>, Out) {
        if self.removed {
            return (Err(errno::EIDRM), Vec::new());
        }
        if !may_control(&self.perm, caller) {
            return (Err(errno::EPERM), Vec::new());
        }
        if qbytes > self.msgmnb && !caller.is_root() {
            return (Err(errno::EPERM), Vec::new());
        }
        if let Err(e) = update_perm(&mut self.perm, uid, gid, mode) {
            return (Err(e), Vec::new());
        }
        self.qbytes = qbytes;
        self.ctime = now;
        let mut out = Vec::new();
        // expunge_all(-EAGAIN): every receiver wakes and runs its loop
        // again: permission, search, park at the tail.
        let receivers = std::mem::take(&mut self.receivers);
        for r in receivers {
            match self.try_receive(&r, now, &mut out) {
                Some(result) => out.push(Completion { op: r.op, result }),
                None => self.receivers.push_back(r),
            }
        }
        self.wake_senders(now, &mut out);
        (Ok(()), out)
    }

    /// `msgctl(IPC_RMID)`: needs owner, creator or root (`EPERM`). Every
    /// parked receiver, then every parked sender, ends with `EIDRM`;
    /// queued messages are freed.
    pub fn remove(&mut self, caller: &Caller) -> Result<Out, Errno> {
        if self.removed {
            return Err(errno::EIDRM);
        }
        if !may_control(&self.perm, caller) {
            return Err(errno::EPERM);
        }
        self.removed = true;
        let mut out: Out = self
            .receivers
            .drain(..)
            .map(|r| Completion::err(r.op, errno::EIDRM))
            .collect();
        out.extend(
            self.senders
                .drain(..)
                .map(|s| Completion::err(s.op, errno::EIDRM)),
        );
        self.messages.clear();
        self.cbytes = 0;
        Ok(out)
    }

    /// Has [`MsgQueue::remove`] succeeded?
    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// The parked operations: receivers, then senders, each in arrival
    /// order.
    pub fn parked(&self) -> Vec<OpId> {
        self.receivers
            .iter()
            .map(|r| r.op)
            .chain(self.senders.iter().map(|s| s.op))
            .collect()
    }

    /// Check the engine's internal invariants (for tests and fuzzing):
    /// `msg_cbytes` is the sum of the queued texts, no parked sender's
    /// message fits, no parked receiver has a queued message it wants, no
    /// operation is parked twice.
    pub fn check_invariants(&self) -> Result<(), String> {
        let sum: u64 = self.messages.iter().map(|m| m.text.len() as u64).sum();
        if sum != self.cbytes {
            return Err(format!("cbytes {} != sum of texts {}", self.cbytes, sum));
        }
        if let Some(s) = self.senders.iter().find(|s| self.fits(s.msg.text.len())) {
            return Err(format!("parked sender {} fits", s.op));
        }
        for r in &self.receivers {
            if self.find(r.search).is_some() {
                return Err(format!("parked receiver {} has a message", r.op));
            }
        }
        let mut ops = self.parked();
        let n = ops.len();
        ops.sort_unstable();
        ops.dedup();
        if ops.len() != n {
            return Err("an operation is parked twice".into());
        }
        if self.removed && n != 0 {
            return Err("operations parked on a removed queue".into());
        }
        Ok(())
    }

    /// Errors every new operation checks first: removed queue, or an
    /// `OpId` that is already parked (a daemon bug, refused).
    fn admission_error(&self, op: OpId) -> Option<Errno> {
        if self.removed {
            Some(errno::EIDRM)
        } else if self.receivers.iter().any(|r| r.op == op)
            || self.senders.iter().any(|s| s.op == op)
        {
            Some(errno::EINVAL)
        } else {
            None
        }
    }

    /// The kernel's `msg_fits_inqueue()`.
    fn fits(&self, len: usize) -> bool {
        // msgsz + q_cbytes <= q_qbytes && 1 + q_qnum <= q_qbytes
        len as u64 + self.cbytes <= self.qbytes && (self.messages.len() as u64) < self.qbytes
    }

    /// The kernel's `find_msg()`: index of the message `search` selects.
    fn find(&self, search: Search) -> Option<usize> {
        match search {
            Search::LessEqual(t) => {
                // The first message of the lowest type <= t.
                let mut best: Option<(usize, i64)> = None;
                for (i, m) in self.messages.iter().enumerate() {
                    if m.mtype <= t && best.is_none_or(|(_, bt)| m.mtype < bt) {
                        best = Some((i, m.mtype));
                    }
                }
                best.map(|(i, _)| i)
            }
            Search::Number(n) => usize::try_from(n).ok().filter(|&n| n < self.messages.len()),
            s => self.messages.iter().position(|m| s.matches(m.mtype)),
        }
    }

    /// One pass of `do_msgrcv`'s loop for `r`: `None` if it must wait.
    /// Taking a message wakes the senders it made room for.
    fn try_receive(
        &mut self,
        r: &Receiver,
        now: i64,
        out: &mut Out,
    ) -> Option<Result<MsgResult, Errno>> {
        if !ipcperms(&self.perm, &r.caller, PERM_READ) {
            return Some(Err(errno::EACCES));
        }
        let i = self.find(r.search)?;
        let len = self.messages[i].text.len();
        if r.bufsz < len && !r.noerror {
            return Some(Err(errno::E2BIG));
        }
        if let Search::Number(_) = r.search {
            // MSG_COPY: copy into a buffer of min(bufsz, msgmax) bytes;
            // a longer message does not fit it (copy_msg: EINVAL).
            if len > r.bufsz.min(self.msgmax) {
                return Some(Err(errno::EINVAL));
            }
            let m = &self.messages[i];
            return Some(Ok(MsgResult::Received {
                mtype: m.mtype,
                text: m.text.clone(),
            }));
        }
        let mut m = self.messages.remove(i)?;
        self.cbytes -= len as u64;
        self.rtime = now;
        self.lrpid = r.caller.proc_;
        m.text.truncate(r.bufsz);
        self.wake_senders(now, out);
        Some(Ok(MsgResult::Received {
            mtype: m.mtype,
            text: m.text,
        }))
    }

    /// A sender got through (`msg_fits_inqueue` held): `msg_lspid`,
    /// `msg_stime`, then `pipelined_send` or the tail of the queue.
    fn deliver(&mut self, sender: ProcId, mut msg: Msg, now: i64, out: &mut Out) {
        self.lspid = sender;
        self.stime = now;
        let mut i = 0;
        while i < self.receivers.len() {
            let r = &self.receivers[i];
            if !r.search.matches(msg.mtype) {
                i += 1;
                continue;
            }
            let Some(r) = self.receivers.remove(i) else {
                break;
            };
            if !r.noerror && r.bufsz < msg.text.len() {
                out.push(Completion::err(r.op, errno::E2BIG));
                continue;
            }
            self.lrpid = r.caller.proc_;
            self.rtime = now;
            msg.text.truncate(r.bufsz);
            out.push(Completion::ok(
                r.op,
                MsgResult::Received {
                    mtype: msg.mtype,
                    text: msg.text,
                },
            ));
            return;
        }
        self.cbytes += msg.text.len() as u64;
        self.messages.push_back(msg);
    }

    /// The kernel's `ss_wakeup(kill = false)` followed by the woken
    /// senders' retries, run in wake order.
    fn wake_senders(&mut self, now: i64, out: &mut Out) {
        if self.senders.is_empty() {
            return;
        }
        let (woken, rest): (VecDeque<Sender>, VecDeque<Sender>) = std::mem::take(&mut self.senders)
            .into_iter()
            .partition(|s| self.fits(s.msg.text.len()));
        self.senders = rest;
        for s in woken {
            if !ipcperms(&self.perm, &s.caller, PERM_WRITE) {
                out.push(Completion::err(s.op, errno::EACCES));
            } else if self.fits(s.msg.text.len()) {
                let op = s.op;
                self.deliver(s.caller.proc_, s.msg, now, out);
                out.push(Completion::ok(op, MsgResult::Sent));
            } else {
                // Another woken sender took the room: sleep again, at the
                // tail (ss_add).
                self.senders.push_back(s);
            }
        }
    }
}
