//! Message queues: `msgget`, `msgsnd`, `msgrcv`, `msgctl` with the
//! prototypes of `<sys/msg.h>`, and the *waiting connections* that every
//! `msgsnd`, `msgrcv` and `semop` of a distributed object goes on.
//!
//! Routing is shm's ([`crate::route`]): `msgget` with `IPC_DIPC` (or a key
//! `DIPC_KEYS` selects) and ids with `DIPC_ID_BIT` go to the node daemon,
//! which forwards each operation to the queue's home node (or, for
//! `msgsnd`, `msgrcv` and `semop` on a remote home, hands the process a
//! direct connection to it: [`crate::direct`]); everything else
//! goes to the kernel by raw system call (`libc::msgsnd` would be this very
//! function). An id the daemon does not know (`EINVAL`) is tried on the
//! kernel too, as for shm.
//!
//! # Why operations have connections of their own
//!
//! The process's main connection serialises its calls under one mutex
//! (see `state`). An operation that waits (a `msgrcv` for a message that
//! has not come, a `semop` on a locked semaphore) must not hold every other
//! thread's calls up, so it takes a connection of its own from a small
//! per-process pool ([`wait_call`]) and gives it back when it is answered.
//! The daemon knows these connections carry operations: their closing
//! cancels the operation in progress, and is not the exit of the process
//! (the main connection's closing is, which applies `SEM_UNDO`). That is
//! also why every operation first makes sure the main connection is up.
//!
//! # Signals
//!
//! While the answer is awaited the thread first polls for `DIPC_SPIN_US`
//! (an answer that comes within it costs no wake-up), then sleeps in
//! `poll(2)`, which a
//! signal handler always interrupts (`SA_RESTART` or not, like `msgrcv`
//! and `semop` themselves). libsysv then sends `Cancel` and reads the
//! answer: the operation's result if it completed anyway, else `EINTR`,
//! which the call returns (never restarted, as the kernel does). The wait
//! itself has no time bound: the daemon ends it (answer, cancel, removal,
//! or the daemon's death, which closes the connection: `EIO`).
//!
//! `fork`: a child inherits the parent's pooled connections; the pool
//! belongs to a pid, and a child closes its copies (the parent's stay
//! open) and opens its own.
//!
//! # Message texts are not copied
//!
//! A `msgsnd` text is sent from the caller's buffer, and a `msgrcv` text
//! is read into it, by the kernel (`sendmsg`/`recvmsg` with the caller's
//! memory in their `iovec`s, [`Text`]): no copy through libsysv, which
//! matters from a few KiB on (a 64 KiB copy costs tens of microseconds on
//! some machines). A bad address is the kernel's `EFAULT`: a `msgsnd`
//! buffer is probed first (one byte a page: nothing is sent), and a
//! `msgrcv` whose buffer cannot take the text loses the message, as the
//! kernel's does.

use std::ffi::{c_int, c_long, c_void};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use dipc_wire::local::{IpcLimits, LocalFrame, MsgCtlCmd, MsgStat, Request, Response, VERSION};
use dipc_wire::{Frame, MAX_FRAME};

use crate::Error;
use crate::config::Config;
use crate::ffi::{boundary, in_ref, out_ref};
use crate::route::{self, Routed, is_dipc_id};
use crate::state;

// ===================================================================
// Waiting connections
// ===================================================================

/// Idle waiting connections of process `pid`.
struct Pool {
    pid: u32,
    idle: Vec<UnixStream>,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    pid: 0,
    idle: Vec::new(),
});

/// Idle connections kept per process (more threads waiting at once open
/// more, and close the extra ones afterwards).
const MAX_IDLE: usize = 4;

/// The pool, unless another thread holds it right now. Never waiting for
/// it means a child forked while another thread held it (the lock then
/// stays taken in the child forever) simply opens its own connections.
fn pool() -> Option<std::sync::MutexGuard<'static, Pool>> {
    match POOL.try_lock() {
        Ok(g) => Some(g),
        Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

fn write_frame(s: &mut UnixStream, req: &Request) -> Result<(), Error> {
    write_frame_text(s, req, Text::NONE)
}

fn write_frame_text(s: &mut UnixStream, req: &Request, text: Text) -> Result<(), Error> {
    // With this process's credentials of the moment (see `client`).
    send_request(s.as_fd(), req, text, true)
}

/// A message text in the caller's memory, which the kernel reads from or
/// writes into directly (see the module doc).
#[derive(Clone, Copy)]
pub(crate) struct Text {
    ptr: *mut u8,
    len: usize,
}

impl Text {
    /// No text.
    pub(crate) const NONE: Text = Text {
        ptr: std::ptr::null_mut(),
        len: 0,
    };

    /// The `len` bytes at `p` a `msgsnd` sends: `EFAULT` unless every
    /// page of them is readable now.
    fn to_send(p: *const u8, len: usize) -> Result<Text, Error> {
        crate::ffi::probe_readable(p, len)?;
        Ok(Text {
            ptr: p.cast_mut(),
            len,
        })
    }

    /// The `len` bytes at `p` a `msgrcv` may fill.
    fn to_receive(p: *mut u8, len: usize) -> Text {
        Text { ptr: p, len }
    }

    fn iovec(self) -> libc::iovec {
        libc::iovec {
            iov_base: self.ptr.cast(),
            iov_len: self.len,
        }
    }
}

/// Send `req`, followed by `text` as its frame's payload, on `fd` (with
/// this process's credentials if `creds`: a Unix socket). A bad address in
/// `text` is `EFAULT`; the stream is then out of step and the connection
/// must not be used again.
pub(crate) fn send_request(
    fd: std::os::fd::BorrowedFd<'_>,
    req: &Request,
    text: Text,
    creds: bool,
) -> Result<(), Error> {
    let frame = req.frame();
    let head = frame.encode_head_with(frame.payload.len() + text.len);
    let own = |b: &[u8]| libc::iovec {
        iov_base: b.as_ptr() as *mut c_void,
        iov_len: b.len(),
    };
    let iov = [own(&head), own(&frame.payload), text.iovec()];
    // SAFETY: the iovecs describe our buffers, alive for the call, and
    // the caller's text, which the kernel reads on our behalf (a bad
    // address is an error, not a fault).
    unsafe { dipc_shmem::fdpass::send_all_iov(fd, &iov, creds) }.map_err(|e| {
        if e.raw_os_error() == Some(libc::EFAULT) {
            Error::Fault
        } else {
            io_err("sending a request", e)
        }
    })
}

/// `req` on the wire: its frame's prefix and header, and its payload (a
/// message text, sent from its own memory).
pub(crate) fn wire_parts(req: &Request) -> (Vec<u8>, dipc_wire::Bytes) {
    let frame = req.frame();
    (frame.encode_head(), frame.payload)
}

pub(crate) fn io_err(op: &'static str, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Error::Timeout { op },
        std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::UnexpectedEof => Error::Closed,
        _ => Error::Io { op, source: e },
    }
}

/// Read one answer frame from `s`. What has arrived is taken without
/// waiting (straight into the frame's buffer: no zeroing, no copy); the
/// rest of a frame that arrives in parts (a 64 KiB message is two TCP
/// segments) is waited for like an answer, polling for the spin before
/// sleeping, and for at most the call timeout.
pub(crate) fn read_frame(s: &impl AsFd) -> Result<Response, Error> {
    read_answer(s, None).map(|(r, _)| r)
}

/// [`read_frame`], with the text of a message answer read straight into
/// `into` when given (then the answer's text is empty, and its length is
/// returned; a text longer than `into` is a protocol error, and one that
/// cannot be written there is `EFAULT`: the message is lost).
pub(crate) fn read_answer(s: &impl AsFd, into: Option<Text>) -> Result<(Response, usize), Error> {
    use dipc_wire::frame::PREFIX;
    let fd = s.as_fd();
    let deadline = std::time::Instant::now() + Config::get().timeout;
    let mut prefix = [0u8; PREFIX];
    read_exact(fd, &mut [own_mut(&mut prefix)], deadline)?;
    let [t0, t1, t2, t3, h0, h1, h2, h3] = prefix;
    let total = u32::from_le_bytes([t0, t1, t2, t3]) as usize;
    let header = u32::from_le_bytes([h0, h1, h2, h3]) as usize;
    if total < 4 || total + 4 > MAX_FRAME || header > total - 4 {
        return Err(Error::Protocol(format!(
            "bad frame lengths {total} and {header}"
        )));
    }
    let payload = total - 4 - header;
    // The header into its own buffer, the payload into the caller's or
    // into one of ours, with one read (each into spare capacity: nothing
    // zeroed, nothing copied).
    let mut head = Vec::new();
    let mut body = Vec::new();
    let body_iov = match into {
        Some(t) if payload > t.len => {
            return Err(Error::Protocol("message longer than the buffer".into()));
        }
        Some(t) => Text { len: payload, ..t }.iovec(),
        None => spare(&mut body, payload),
    };
    read_exact(fd, &mut [spare(&mut head, header), body_iov], deadline)?;
    // SAFETY: `read_exact` wrote all the spare capacity it was given.
    unsafe {
        head.set_len(header);
        if into.is_none() {
            body.set_len(payload);
        }
    }
    let frame = Frame {
        header: head.into(),
        payload: body.into(),
    };
    let resp = Response::from_frame(&frame).map_err(|e| Error::Protocol(e.to_string()))?;
    Ok((resp, if into.is_some() { payload } else { 0 }))
}

fn own_mut(b: &mut [u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: b.len(),
    }
}

/// The first `len` bytes of `buf`'s spare capacity, reserved.
fn spare(buf: &mut Vec<u8>, len: usize) -> libc::iovec {
    buf.reserve_exact(len);
    libc::iovec {
        iov_base: buf.spare_capacity_mut().as_mut_ptr().cast(),
        iov_len: len,
    }
}

/// Fill all of `iov` from `fd`: what has arrived at once, the rest waited
/// for (spinning first) until `deadline`. `EFAULT` where the caller's
/// memory in `iov` cannot be written: the rest of those bytes is read and
/// dropped, so the stream stays in step.
fn read_exact(
    fd: std::os::fd::BorrowedFd<'_>,
    iov: &mut [libc::iovec],
    deadline: std::time::Instant,
) -> Result<(), Error> {
    use dipc_shmem::fdpass::{advance_iov, recv_iov};
    let op = "waiting for an answer";
    let mut at = 0;
    advance_iov(iov, &mut at, 0);
    while at < iov.len() {
        // SAFETY: the iovecs describe our own spare capacity and the
        // caller's text, written by the kernel on our behalf (a bad
        // address is an error, not a fault).
        match unsafe { recv_iov(fd, &iov[at..], true) } {
            Ok(0) => return Err(Error::Closed),
            Ok(n) => advance_iov(iov, &mut at, n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                match wait_readable(&fd, Some(deadline)) {
                    Ok(()) | Err(Wait::Signal) => {}
                    Err(Wait::TimedOut) => return Err(Error::Timeout { op }),
                    Err(Wait::Failed(e)) => return Err(io_err(op, e)),
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EFAULT) => {
                let left: usize = iov[at..].iter().map(|v| v.iov_len).sum();
                let mut drop = vec![0u8; left];
                read_exact(fd, &mut [own_mut(&mut drop)], deadline)?;
                return Err(Error::Fault);
            }
            Err(e) => return Err(io_err(op, e)),
        }
    }
    Ok(())
}

/// Open a waiting connection and say hello.
fn open_waiting() -> Result<UnixStream, Error> {
    let cfg = Config::get();
    // Sends bounded (`read_frame` bounds the reading of an answer, not the
    // wait for it).
    let mut s = crate::client::dial(&cfg.socket, None, cfg.timeout)?;
    write_frame(&mut s, &Request::Hello { version: VERSION })?;
    match read_frame(&s)? {
        Response::Hello { version, .. } if version == VERSION => Ok(s),
        Response::Err(e) => Err(Error::Node(e)),
        other => Err(Error::Protocol(format!(
            "unexpected answer to Hello: {other:?}"
        ))),
    }
}

/// Why [`wait_readable`] returned without the socket being readable.
enum Wait {
    /// A signal handler ran.
    Signal,
    TimedOut,
    Failed(std::io::Error),
}

/// Wait until `s` is readable (or until `deadline`).
fn wait_readable(s: &impl AsFd, deadline: Option<std::time::Instant>) -> Result<(), Wait> {
    use std::time::Instant;
    let mut pfd = libc::pollfd {
        fd: s.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // An answer that comes within the spin is taken without sleeping:
    // waking a sleeping thread costs tens of microseconds on a VM, more
    // than the round trip to a home on the same rack.
    let spin = Config::get().spin;
    let until = (!spin.is_zero()).then(|| Instant::now() + spin);
    loop {
        let now = Instant::now();
        let wait = match (until, deadline) {
            (Some(t), _) if now < t => 0,
            (_, None) => -1,
            (_, Some(d)) if now >= d => return Err(Wait::TimedOut),
            // Rounded up: never a busy loop of zero-millisecond polls.
            (_, Some(d)) => (d - now).as_millis().clamp(1, i32::MAX as u128) as i32,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, wait) };
        if rc > 0 || (rc == 0 && wait == -1) {
            return Ok(());
        }
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EINTR) {
                Wait::Signal
            } else {
                Wait::Failed(e)
            });
        }
        if wait == 0 {
            // SAFETY: no arguments.
            unsafe { libc::sched_yield() };
        }
    }
}

/// Wait for the answer to the request just sent on `s` (written with
/// `write`), cancelling it if a signal handler runs meanwhile (see the
/// module doc); a message text goes `into` the caller's buffer when given
/// (see [`read_answer`]).
pub(crate) fn answer<S: AsFd>(
    s: &mut S,
    write: impl Fn(&mut S, &Request) -> Result<(), Error>,
    into: Option<Text>,
) -> Result<(Response, usize), Error> {
    let mut cancelled = false;
    loop {
        match wait_readable(s, None) {
            Ok(()) => break,
            Err(Wait::Signal) if !cancelled => {
                write(s, &Request::Cancel)?;
                cancelled = true;
            }
            Err(Wait::Signal) => {}
            Err(Wait::TimedOut) => unreachable!("no deadline"),
            Err(Wait::Failed(source)) => {
                return Err(Error::Io {
                    op: "waiting for an answer",
                    source,
                });
            }
        }
    }
    read_answer(s, into)
}

/// Send `req` on a direct connection to its object's home when there is
/// one (`crate::direct`), else on a waiting connection of the node, and
/// wait for its answer, cancelling it if a signal handler runs meanwhile
/// (see the module doc).
pub(crate) fn wait_call(req: &Request) -> Result<Response, Error> {
    wait_call_text(req, Text::NONE, None).map(|(r, _)| r)
}

/// [`wait_call`] of a request followed by `text` (a `msgsnd`), or whose
/// answer's text goes `into` the caller's buffer (a `msgrcv`): the answer
/// and that text's length.
pub(crate) fn wait_call_text(
    req: &Request,
    text: Text,
    into: Option<Text>,
) -> Result<(Response, usize), Error> {
    if let Some(r) = crate::direct::call(req, text, into) {
        return r;
    }
    let me = std::process::id();
    let pooled = pool().and_then(|mut p| {
        if p.pid != me {
            // Inherited through fork: close our copies only.
            p.idle.clear();
            p.pid = me;
        }
        p.idle.pop()
    });
    let mut s = match pooled {
        Some(mut s) => match write_frame_text(&mut s, req, text) {
            Ok(()) => s,
            Err(Error::Fault) => return Err(Error::Fault),
            // An idle connection the daemon closed (it restarted): the
            // request did not go out, so a new connection may send it.
            Err(_) => {
                let mut s = open_waiting()?;
                write_frame_text(&mut s, req, text)?;
                s
            }
        },
        None => {
            let mut s = open_waiting()?;
            write_frame_text(&mut s, req, text)?;
            s
        }
    };
    let resp = answer(&mut s, write_frame, into)?;
    if let Some(mut p) = pool()
        && p.pid == me
        && p.idle.len() < MAX_IDLE
    {
        p.idle.push(s);
    }
    Ok(resp)
}

/// Is a daemon serving this process's distributed calls? Makes sure the
/// main connection is up (its closing is the process's exit for the
/// daemon); `false` means "act locally through the kernel".
pub(crate) fn daemon_up() -> bool {
    matches!(state::lock().client(), Ok(Some(_)))
}

/// A call on the process's main connection (`*get`, `*ctl`).
pub(crate) fn main_call(req: &Request) -> Result<Option<Response>, Error> {
    let mut st = state::lock();
    if st.client()?.is_none() {
        return Ok(None);
    }
    Ok(Some(st.call(req, &[])?.0))
}

pub(crate) fn unexpected(op: &str, r: Response) -> Error {
    Error::Protocol(format!("unexpected answer to {op}: {r:?}"))
}

/// The limits of distributed objects, from the daemon.
pub(crate) fn limits() -> Result<Option<IpcLimits>, Error> {
    match main_call(&Request::IpcLimits)? {
        None => Ok(None),
        Some(Response::Limits(l)) => Ok(Some(l)),
        Some(Response::Err(e)) => Err(Error::Node(e)),
        Some(other) => Err(unexpected("IpcLimits", other)),
    }
}

// ===================================================================
// The calls
// ===================================================================

/// `IPC_64`, which 32-bit callers OR into commands; ignored on 64-bit.
const IPC_64: c_int = 0x100;
const MSG_STAT: c_int = 11;
const MSG_INFO: c_int = 12;
const MSG_STAT_ANY: c_int = 13;
/// The largest `msgmax` any distributed queue can have: longer texts are
/// `EINVAL` before anything is read from the caller's buffer. Each queue's
/// own `msgmax` (its creating node's `--msgmax`) is enforced at its home,
/// whose `EINVAL` ends in the kernel's (see `msgsnd`).
const MSGMAX: usize = dipc_wire::MAX_MSGMAX as usize;

fn msgget_routed(key: i32, flags: i32) -> Result<Routed<i32, i32>, Error> {
    let Some(flags) = route::get_flags(key, flags, &Config::get().keys) else {
        return Ok(Routed::Kernel(flags));
    };
    match main_call(&Request::MsgGet { key, flags })? {
        None => Ok(Routed::Kernel(flags)),
        Some(Response::Id(id)) => Ok(Routed::Dipc(id)),
        Some(Response::Err(e)) => Err(Error::Node(e)),
        Some(other) => Err(unexpected("MsgGet", other)),
    }
}

/// An operation on an id: `Kernel` when it is not distributed, no daemon
/// serves us, or the daemon does not know it.
fn operation(
    id: i32,
    req: impl FnOnce() -> Request,
    into: Text,
) -> Result<Routed<(Response, usize)>, Error> {
    if !is_dipc_id(id) || !daemon_up() {
        return Ok(Routed::Kernel(()));
    }
    match wait_call_text(&req(), Text::NONE, Some(into))? {
        (Response::Err(libc::EINVAL), _) => Ok(Routed::Kernel(())),
        (Response::Err(e), _) => Err(Error::Node(e)),
        r => Ok(Routed::Dipc(r)),
    }
}

fn check(rc: c_long) -> Result<c_long, Error> {
    if rc == -1 {
        Err(Error::last_kernel())
    } else {
        Ok(rc)
    }
}

/// `int msgget(key_t key, int msgflg)`.
///
/// # Safety
/// None beyond the C prototype's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn msgget(key: libc::key_t, msgflg: c_int) -> c_int {
    boundary(-1, || match msgget_routed(key, msgflg)? {
        Routed::Dipc(id) => Ok(id),
        Routed::Kernel(flags) => {
            // SAFETY: msgget takes integers only.
            let rc =
                unsafe { libc::syscall(libc::SYS_msgget, c_long::from(key), c_long::from(flags)) };
            check(rc).map(|id| id as c_int)
        }
    })
}

/// `int msgsnd(int msqid, const void *msgp, size_t msgsz, int msgflg)`.
///
/// # Safety
/// As `msgsnd(2)`: `msgp` points to a `long` type followed by `msgsz`
/// bytes of text.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn msgsnd(
    msqid: c_int,
    msgp: *const c_void,
    msgsz: libc::size_t,
    msgflg: c_int,
) -> c_int {
    boundary(-1, || {
        if !is_dipc_id(msqid) || !daemon_up() {
            return msgsnd_kernel(msqid, msgp, msgsz, msgflg);
        }
        if msgsz > MSGMAX {
            return Err(Error::Node(libc::EINVAL));
        }
        // SAFETY: a non-NULL msgp points to a long (C contract).
        let mtype = *unsafe { in_ref(msgp as *const c_long) }?;
        let text = Text::to_send(
            (msgp as *const u8).wrapping_add(std::mem::size_of::<c_long>()),
            msgsz,
        )?;
        let req = Request::MsgSnd {
            id: msqid,
            mtype,
            text: dipc_wire::Bytes::new(),
            flags: msgflg,
        };
        match wait_call_text(&req, text, None)?.0 {
            Response::Ok => Ok(0),
            Response::Err(libc::EINVAL) if mtype >= 1 => msgsnd_kernel(msqid, msgp, msgsz, msgflg),
            Response::Err(e) => Err(Error::Node(e)),
            other => Err(unexpected("MsgSnd", other)),
        }
    })
}

fn msgsnd_kernel(
    msqid: c_int,
    msgp: *const c_void,
    msgsz: usize,
    msgflg: c_int,
) -> Result<c_int, Error> {
    // SAFETY: the caller's own arguments, as the C caller passed them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_msgsnd,
            c_long::from(msqid),
            msgp,
            msgsz,
            c_long::from(msgflg),
        )
    };
    check(rc).map(|r| r as c_int)
}

/// `ssize_t msgrcv(int msqid, void *msgp, size_t msgsz, long msgtyp, int
/// msgflg)`.
///
/// # Safety
/// As `msgrcv(2)`: `msgp` points to room for a `long` and `msgsz` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn msgrcv(
    msqid: c_int,
    msgp: *mut c_void,
    msgsz: libc::size_t,
    msgtyp: c_long,
    msgflg: c_int,
) -> libc::ssize_t {
    boundary(-1, || {
        // The text is read straight into the caller's buffer.
        let into = Text::to_receive(
            (msgp as *mut u8).wrapping_add(std::mem::size_of::<c_long>()),
            msgsz,
        );
        let req = || Request::MsgRcv {
            id: msqid,
            maxsize: msgsz as u64,
            msgtyp,
            flags: msgflg,
        };
        match operation(msqid, req, into)? {
            Routed::Dipc((Response::Msg { mtype, .. }, len)) => {
                // SAFETY: a non-NULL msgp has room for a long (C contract).
                *unsafe { out_ref(msgp as *mut c_long) }? = mtype as c_long;
                Ok(len as libc::ssize_t)
            }
            Routed::Dipc((other, _)) => Err(unexpected("MsgRcv", other)),
            Routed::Kernel(()) => {
                // SAFETY: the caller's own arguments, as the C caller
                // passed them.
                let rc = unsafe {
                    libc::syscall(
                        libc::SYS_msgrcv,
                        c_long::from(msqid),
                        msgp,
                        msgsz,
                        msgtyp,
                        c_long::from(msgflg),
                    )
                };
                check(rc).map(|r| r as libc::ssize_t)
            }
        }
    })
}

fn zeroed_msqid_ds() -> libc::msqid_ds {
    // SAFETY: msqid_ds is plain integers (and integer padding): all-zero
    // is a valid value.
    unsafe { std::mem::zeroed() }
}

fn fill_msqid_ds(s: &MsgStat) -> libc::msqid_ds {
    let mut ds = zeroed_msqid_ds();
    crate::ffi::fill_ipc_perm(&mut ds.msg_perm, s.key, &s.perm);
    ds.msg_stime = s.stime as libc::time_t;
    ds.msg_rtime = s.rtime as libc::time_t;
    ds.msg_ctime = s.ctime as libc::time_t;
    ds.__msg_cbytes = s.cbytes as _;
    ds.msg_qnum = s.qnum as libc::msgqnum_t;
    ds.msg_qbytes = s.qbytes as libc::msglen_t;
    ds.msg_lspid = s.lspid;
    ds.msg_lrpid = s.lrpid;
    ds
}

/// `struct msginfo` for `IPC_INFO`/`MSG_INFO` on a distributed id: the
/// limits distributed queues obey (the kernel's defaults), with the
/// kernel's derived values (`msgpool`, `msgmap`, `msgtql`, `msgssz`,
/// `msgseg` as `ipc/msg.c` computes them from the defaults).
fn fill_msginfo(l: &IpcLimits) -> libc::msginfo {
    let int = |v: u64| c_int::try_from(v).unwrap_or(c_int::MAX);
    libc::msginfo {
        msgpool: int(l.msgmni * l.msgmnb / 1024),
        msgmap: int(l.msgmnb),
        msgmax: int(l.msgmax),
        msgmnb: int(l.msgmnb),
        msgmni: int(l.msgmni),
        msgssz: 16,
        msgtql: int(l.msgmnb),
        msgseg: 0xffff,
    }
}

/// `int msgctl(int msqid, int cmd, struct msqid_ds *buf)`.
///
/// # Safety
/// As `msgctl(2)`: `buf` must be NULL or valid for what `cmd` does with
/// it (a `struct msginfo` for `IPC_INFO`/`MSG_INFO`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn msgctl(msqid: c_int, cmd: c_int, buf: *mut libc::msqid_ds) -> c_int {
    boundary(-1, || {
        let to_kernel = || {
            // SAFETY: the caller's own arguments, as the C caller passed
            // them.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_msgctl,
                    c_long::from(msqid),
                    c_long::from(cmd),
                    buf,
                )
            };
            check(rc).map(|r| r as c_int)
        };
        if !is_dipc_id(msqid) {
            return to_kernel();
        }
        let cmd_req = match cmd & !IPC_64 {
            MSG_STAT | MSG_STAT_ANY => return to_kernel(),
            libc::IPC_INFO | MSG_INFO => {
                let Some(l) = limits()? else {
                    return to_kernel();
                };
                // SAFETY: for these commands buf is a struct msginfo.
                *unsafe { out_ref(buf as *mut libc::msginfo) }? = fill_msginfo(&l);
                return Ok(0);
            }
            libc::IPC_STAT => MsgCtlCmd::Stat,
            libc::IPC_SET => {
                // SAFETY: a non-NULL buf is a valid msqid_ds (C contract).
                let ds = unsafe { in_ref(buf) }?;
                MsgCtlCmd::Set {
                    uid: ds.msg_perm.uid,
                    gid: ds.msg_perm.gid,
                    mode: u32::from(ds.msg_perm.mode) & 0o777,
                    qbytes: ds.msg_qbytes,
                }
            }
            libc::IPC_RMID => MsgCtlCmd::Rmid,
            _ => return Err(Error::Node(libc::EINVAL)),
        };
        let stat = matches!(cmd_req, MsgCtlCmd::Stat);
        match main_call(&Request::MsgCtl {
            id: msqid,
            cmd: cmd_req,
        })? {
            None | Some(Response::Err(libc::EINVAL)) => to_kernel(),
            Some(Response::Err(e)) => Err(Error::Node(e)),
            Some(Response::MsgStat(s)) if stat => {
                // SAFETY: a non-NULL buf is a valid, writable msqid_ds.
                *unsafe { out_ref(buf) }? = fill_msqid_ds(&s);
                Ok(0)
            }
            Some(Response::Ok) if !stat => Ok(0),
            Some(other) => Err(unexpected("MsgCtl", other)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msqid_ds_from_stat() {
        let s = MsgStat {
            key: 42,
            perm: dipc_wire::Perm {
                uid: 1,
                gid: 2,
                cuid: 3,
                cgid: 4,
                mode: 0o640,
            },
            stime: 10,
            rtime: 11,
            ctime: 12,
            cbytes: 100,
            qnum: 3,
            qbytes: 16384,
            lspid: 77,
            lrpid: 78,
        };
        let ds = fill_msqid_ds(&s);
        assert_eq!(ds.msg_perm.__key, 42);
        assert_eq!((ds.msg_perm.uid, ds.msg_perm.cgid), (1, 4));
        assert_eq!(ds.msg_perm.mode, 0o640);
        assert_eq!((ds.msg_stime, ds.msg_rtime, ds.msg_ctime), (10, 11, 12));
        assert_eq!(
            (ds.__msg_cbytes, ds.msg_qnum, ds.msg_qbytes),
            (100, 3, 16384)
        );
        assert_eq!((ds.msg_lspid, ds.msg_lrpid), (77, 78));
    }

    #[test]
    fn msginfo_reports_kernel_defaults() {
        let l = IpcLimits {
            msgmax: 8192,
            msgmnb: 16384,
            msgmni: 32000,
            ..IpcLimits::default()
        };
        let i = fill_msginfo(&l);
        // What `ipcs -l` shows on a fresh kernel.
        assert_eq!((i.msgmax, i.msgmnb, i.msgmni), (8192, 16384, 32000));
        assert_eq!(i.msgpool, 32000 * 16384 / 1024);
    }
}
