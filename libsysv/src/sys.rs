//! The few libc calls of libsysv that need `unsafe` outside the exported
//! functions and the raw system calls.

use std::ffi::{c_int, c_void};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

/// Set the calling thread's errno (the one place libsysv does).
pub(crate) fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns a valid pointer to the calling
    // thread's errno for the thread's whole life.
    unsafe { *libc::__errno_location() = e };
}

/// The calling process's effective uid and gid (those its requests carry).
pub(crate) fn effective_ids() -> (u32, u32) {
    // SAFETY: these calls only read the calling process's ids.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// Is `fd` readable, hung up or in error right now (no wait)?
pub(crate) fn has_event(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
    rc != 0
}

unsafe extern "C" {
    // In glibc's libc_nonshared.a (it passes __dso_handle, so the
    // handlers go away if libsysv is dlclose'd); not in the libc crate.
    fn pthread_atfork(
        prepare: Option<extern "C" fn()>,
        parent: Option<extern "C" fn()>,
        child: Option<extern "C" fn()>,
    ) -> c_int;
}

/// Register fork handlers (they must not unwind).
pub(crate) fn register_atfork(
    prepare: extern "C" fn(),
    parent: extern "C" fn(),
    child: extern "C" fn(),
) {
    // SAFETY: the handlers are plain functions that live as long as the
    // library and catch their own panics.
    let rc = unsafe { pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    if rc != 0 {
        eprintln!(
            "libsysv: pthread_atfork failed ({rc}): distributed segments will not work in forked children"
        );
    }
}

/// An all-zero `struct shmid_ds`.
pub(crate) fn zeroed_shmid_ds() -> libc::shmid_ds {
    // SAFETY: shmid_ds is plain integers (and integer padding): all-zero is
    // a valid value.
    unsafe { std::mem::zeroed() }
}

/// Slots of the attachment ranges the death signal handler poisons.
const SLOTS: usize = 256;

struct Slot {
    addr: AtomicU64,
    len: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    addr: AtomicU64::new(0),
    len: AtomicU64::new(0),
};
static RANGES: [Slot; SLOTS] = [EMPTY; SLOTS];
/// The process's userfaultfd (-1: none), closed by the handler.
static UFFD_FD: AtomicI32 = AtomicI32::new(-1);
/// The watch connection whose hang-up the handler waits for (-1: none).
static SOCK_FD: AtomicI32 = AtomicI32::new(-1);
/// Set by the handler; taken by the next call (`take_daemon_died`).
static DIED: AtomicBool = AtomicBool::new(false);
static HANDLER: Once = Once::new();
static HANDLER_OK: AtomicBool = AtomicBool::new(false);

const F_SETSIG: c_int = 10;
const POLL_HUP: c_int = 6;

/// The signal libsysv asks the kernel to send when the daemon's end of
/// the connection closes (`SIGRTMAX - 1`, documented in dipc.h).
pub(crate) fn death_signal() -> c_int {
    libc::SIGRTMAX() - 1
}

/// Remember an attachment for the handler. False if the table is full
/// (that attachment then is not protected against a dying daemon).
pub(crate) fn track(addr: u64, len: u64) -> bool {
    for s in &RANGES {
        if s.addr
            .compare_exchange(0, addr, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            s.len.store(len, Ordering::Release);
            return true;
        }
    }
    false
}

/// Forget an attachment: call BEFORE unmapping it, so the handler never
/// poisons a range that may already belong to someone else.
pub(crate) fn untrack(addr: u64) {
    for s in &RANGES {
        if s.addr.load(Ordering::Acquire) == addr {
            s.len.store(0, Ordering::Release);
            s.addr.store(0, Ordering::Release);
        }
    }
}

/// Tell the handler which userfaultfd to close (-1: none).
pub(crate) fn set_uffd(fd: c_int) {
    UFFD_FD.store(fd, Ordering::Release);
}

/// Did the handler run since the last call? (Then it closed the
/// userfaultfd: the owner must forget its descriptor, not close it.)
pub(crate) fn take_daemon_died() -> bool {
    DIED.swap(false, Ordering::AcqRel)
}

/// The handler: on a hang-up of the daemon socket, replace every
/// attachment with an empty memfd (accesses raise SIGBUS) and close the
/// userfaultfd, which releases it (the daemon's copy died with the daemon)
/// and wakes every thread blocked in a fault: they retry, and get SIGBUS.
/// Async-signal-safe: atomics, mmap, memfd_create and close only.
extern "C" fn on_death_signal(_sig: c_int, info: *mut libc::siginfo_t, _ctx: *mut c_void) {
    if info.is_null() {
        return;
    }
    // SAFETY: the kernel passes a valid siginfo_t (SA_SIGINFO). For an
    // F_SETSIG signal the SIGPOLL member of its union holds `long si_band`
    // at offset 16 and `int si_fd` at offset 24 on 64-bit Linux.
    let (code, fd) = unsafe {
        let p = info as *const u8;
        (
            (*info).si_code,
            (p.add(24) as *const c_int).read_unaligned(),
        )
    };
    if code != POLL_HUP || fd != SOCK_FD.load(Ordering::Acquire) {
        return;
    }
    for s in &RANGES {
        let addr = s.addr.load(Ordering::Acquire);
        let len = s.len.load(Ordering::Acquire);
        if addr != 0 && len != 0 {
            // SAFETY: a tracked range is an attachment still mapped (it is
            // untracked before being unmapped); the application's memory,
            // which no Rust reference points into.
            let _ = unsafe { dipc_shmem::poison_range(addr, len) };
        }
    }
    let uffd = UFFD_FD.swap(-1, Ordering::AcqRel);
    if uffd >= 0 {
        // SAFETY: closing the userfaultfd descriptor this process owns; its
        // owner learns through DIED that it is gone and forgets it.
        unsafe { libc::close(uffd) };
    }
    DIED.store(true, Ordering::Release);
}

/// Ask for the death signal when `sock` (the watch connection) closes:
/// `O_ASYNC` for good, as nothing else ever happens on it. Installs the
/// handler once; if the application already handles that signal, libsysv
/// leaves it alone and says so (attachments are then not protected
/// against a dying daemon).
pub(crate) fn arm_death_signal(sock: c_int) {
    HANDLER.call_once(|| {
        let sig = death_signal();
        // SAFETY: plain sigaction calls with valid, initialised structs;
        // the handler is async-signal-safe (see above).
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                return;
            }
            if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
                eprintln!(
                    "libsysv: signal {sig} (SIGRTMAX-1) is taken by the program: a dying dipc \
                     node daemon may leave threads blocked on distributed segments"
                );
                return;
            }
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_death_signal as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) == 0 {
                HANDLER_OK.store(true, Ordering::Release);
            }
        }
    });
    if !HANDLER_OK.load(Ordering::Acquire) {
        return;
    }
    SOCK_FD.store(sock, Ordering::Release);
    // SAFETY: fcntl on the watch socket this process owns.
    unsafe {
        let fl = libc::fcntl(sock, libc::F_GETFL);
        libc::fcntl(sock, libc::F_SETOWN, libc::getpid());
        libc::fcntl(sock, F_SETSIG, death_signal());
        if fl >= 0 {
            libc::fcntl(sock, libc::F_SETFL, fl | libc::O_ASYNC);
        }
    }
}

/// Forget the socket (closed or replaced) so a stale hang-up is ignored.
pub(crate) fn disarm_death_signal() {
    SOCK_FD.store(-1, Ordering::Release);
}

/// Take the userfaultfd back from the handler: true if it is still open
/// and now the caller's to close, false if the handler already closed it.
pub(crate) fn take_uffd() -> bool {
    UFFD_FD.swap(-1, Ordering::AcqRel) >= 0
}
