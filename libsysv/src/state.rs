//! The process's dipc state: the daemon connection, the userfaultfd and
//! the attachment table, behind one mutex; and what happens at `fork`.
//!
//! One mutex serialises every distributed call of the process: the local
//! protocol is strictly request/response on one connection, and the calls
//! are rare next to the memory accesses they enable. Waits under the lock
//! are bounded by the connection's timeout.
//!
//! # Connection life
//! The connection is opened at the first distributed call. If no daemon
//! is reachable then, the process acts locally through the kernel for the
//! rest of its life (DIPC's "short circuit"), after one warning on stderr;
//! with `DIPC_FALLBACK=error` the call fails with `ECONNREFUSED` instead
//! (and the next call tries again). A connection that breaks later is
//! reopened by the next call; attachments made on the old one are dead
//! (the daemon detached them when the connection closed) and `shmdt` only
//! unmaps them.
//!
//! # The daemon dies
//! The process keeps its own copy of its userfaultfd, so a dead daemon
//! does not turn its pages into silent zeros; but then a fault waits for
//! an answer that never comes (DESIGN.md). libsysv therefore opens a
//! second, silent connection with the main one, its *watch connection*
//! (`dipc_wire::local::Request::Watch`), and asks the kernel for a signal
//! (`SIGRTMAX - 1`, `F_SETSIG` with `O_ASYNC`) when the daemon's end of it
//! closes. Its handler (in `sys`, async-signal safe) maps an empty memfd
//! over every attachment and closes the userfaultfd: the kernel releases
//! it (the daemon's copy died with the daemon) and wakes every blocked
//! fault, which retries on the empty memfd and gets `SIGBUS`. The daemon
//! never writes to the watch connection, so the signal comes for nothing
//! else. (`O_ASYNC` on the main connection, off during each call, raised
//! it now and then for an answer already read: the kernel signals after
//! it wakes the reader, and the reader may have turned `O_ASYNC` back on
//! by then. The stray signal interrupted the next wait for an answer,
//! which then cancelled its operation: `EINTR` from a `semop` nobody
//! interrupted.) A call in flight sees the hang-up as the end of its
//! stream, and poisons the attachments the same way
//! ([`State::connection_lost`]), as does any other broken connection
//! (the daemon detaches everything of a closed connection).
//!
//! # fork
//! The kernel does not carry a userfaultfd registration into a child (dipc
//! does not ask for `UFFD_FEATURE_EVENT_FORK`) and copies no page table
//! entries of shared file mappings, so a child starts with its inherited
//! attachments mapped but unregistered, and nothing touched yet. A
//! `pthread_atfork` child handler, which runs before `fork` returns in the
//! child, then: closes the inherited connection and userfaultfd without
//! using them (the parent's copies stay open and in use), opens the
//! child's own connection, and for every inherited attachment sends
//! `ShmAt` (closing the memfd it gets back: the mapping is inherited) and
//! `ShmRegister` on a fresh userfaultfd of the child. From then on the
//! child's accesses fault through the daemon, and its exit detaches. An
//! attachment that cannot be re-registered is poisoned (its accesses raise
//! `SIGBUS`) rather than left to read stale memory.
//!
//! The handlers are registered at the first distributed call rather than
//! in a library constructor: a process that never made one has nothing to
//! fix after `fork`, and a program started under `LD_PRELOAD` that never
//! uses dipc then runs no libsysv code at all. The prepare handler takes
//! the state lock and the parent and child handlers release it, so a child
//! never inherits the lock held by another thread mid-call.

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, Once};

use dipc_shmem::Mapping;
use dipc_wire::local::{Request, Response};

use crate::Error;
use crate::client::{self, Client};
use crate::config::{Config, Fallback};
use crate::sys;

/// The daemon connection.
#[derive(Debug)]
pub(crate) enum Conn {
    /// No distributed call yet.
    Untried,
    Up(Client),
    /// No daemon at the first call: act locally for good.
    Local,
    /// Was up, then broke (or inherited through fork): reconnect on use.
    Down,
}

/// One distributed attachment of this process.
#[derive(Debug)]
pub(crate) struct Attachment {
    pub id: i32,
    pub mapping: Mapping,
    pub readonly: bool,
    /// The connection generation it was registered on; 0 when dead.
    pub generation: u64,
}

/// Everything libsysv keeps per process.
#[derive(Debug)]
pub(crate) struct State {
    pub conn: Conn,
    /// Bumped at every new connection.
    pub generation: u64,
    /// This process's userfaultfd (created at the first attach; kept open
    /// after handing a copy to the daemon, DESIGN.md explains why).
    pub uffd: Option<OwnedFd>,
    /// The daemon of the current connection has our userfaultfd.
    pub uffd_sent: bool,
    pub attachments: Vec<Attachment>,
    warned_fallback: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    conn: Conn::Untried,
    generation: 0,
    uffd: None,
    uffd_sent: false,
    attachments: Vec::new(),
    warned_fallback: false,
});

fn lock_raw() -> MutexGuard<'static, State> {
    // A panic under the lock (turned into EIO at the boundary) leaves the
    // state consistent enough to go on: every field is valid on its own.
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lock the process state (registering the fork handlers on first use).
pub(crate) fn lock() -> MutexGuard<'static, State> {
    static ATFORK: Once = Once::new();
    ATFORK.call_once(|| {
        crate::sys::register_atfork(prepare_fork, parent_after_fork, child_after_fork)
    });
    lock_raw()
}

thread_local! {
    /// The state lock, held across `fork` by the forking thread.
    static FORK_GUARD: RefCell<Option<MutexGuard<'static, State>>> = const { RefCell::new(None) };
}

extern "C" fn prepare_fork() {
    let _ = std::panic::catch_unwind(|| {
        let g = lock_raw();
        let _ = FORK_GUARD.try_with(|c| *c.borrow_mut() = Some(g));
    });
}

extern "C" fn parent_after_fork() {
    let _ = std::panic::catch_unwind(|| {
        let _ = FORK_GUARD.try_with(|c| c.borrow_mut().take());
    });
}

extern "C" fn child_after_fork() {
    let _ = std::panic::catch_unwind(|| {
        if let Ok(Some(mut g)) = FORK_GUARD.try_with(|c| c.borrow_mut().take()) {
            g.after_fork();
        }
    });
}

impl State {
    /// The connection to use for a distributed call: `Ok(None)` means "act
    /// locally through the kernel" (no daemon at the first call).
    pub fn client(&mut self) -> Result<Option<&mut Client>, Error> {
        if let Conn::Up(c) = &self.conn
            && c.is_broken()
        {
            self.connection_lost();
        }
        if matches!(self.conn, Conn::Untried | Conn::Down) {
            let cfg = Config::get();
            let connected = client::connect(&cfg.socket).and_then(|mut c| {
                let watch = c.open_watch(&cfg.socket)?;
                Ok((c, watch))
            });
            match connected {
                Ok((c, watch)) => {
                    self.generation += 1;
                    self.uffd_sent = false;
                    sys::arm_death_signal(watch);
                    self.conn = Conn::Up(c);
                }
                Err(e @ Error::Connect { .. }) => match (&self.conn, cfg.fallback) {
                    (Conn::Untried, Fallback::Local) => {
                        if !self.warned_fallback {
                            self.warned_fallback = true;
                            eprintln!(
                                "libsysv: no dipc node daemon at {} ({}): distributed IPC acts \
                                 locally through the kernel; set DIPC_FALLBACK=error to fail instead",
                                cfg.socket.display(),
                                std::error::Error::source(&e)
                                    .map(|s| s.to_string())
                                    .unwrap_or_default()
                                    .split(" (os error")
                                    .next()
                                    .unwrap_or_default(),
                            );
                        }
                        self.conn = Conn::Local;
                    }
                    (Conn::Untried, Fallback::Error) => {
                        return Err(Error::NoDaemon {
                            path: cfg.socket.clone(),
                        });
                    }
                    _ => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
        match &mut self.conn {
            Conn::Up(c) => Ok(Some(c)),
            _ => Ok(None),
        }
    }

    /// Call on the current connection (no reconnecting: used inside one
    /// operation, after `client()` succeeded).
    pub fn call(
        &mut self,
        req: &Request,
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<(Response, Vec<OwnedFd>), Error> {
        let r = match &mut self.conn {
            Conn::Up(c) => c.call(req, fds),
            _ => Err(Error::Closed),
        };
        if r.is_err() {
            self.connection_lost();
        }
        r
    }

    /// The connection broke (or the death signal said the daemon's end
    /// closed): the daemon has detached everything of this connection, so
    /// its attachments can no longer be kept coherent. Poison them (their
    /// accesses raise SIGBUS, never stale data or a hang) and drop the
    /// connection and the userfaultfd; the next call reconnects.
    pub fn connection_lost(&mut self) {
        sys::disarm_death_signal();
        if let Conn::Up(_) = self.conn {
            self.conn = Conn::Down;
        }
        let generation = self.generation;
        for a in &mut self.attachments {
            if a.generation == generation && a.generation != 0 {
                let _ = a.mapping.poison();
                a.generation = 0;
            }
        }
        self.drop_uffd();
    }

    /// Close the userfaultfd, unless the death signal handler already did
    /// (then only forget the descriptor number).
    fn drop_uffd(&mut self) {
        let fd = self.uffd.take();
        if sys::take_uffd() {
            drop(fd);
        } else {
            std::mem::forget(fd);
        }
        self.uffd_sent = false;
    }

    /// Is the current connection the one of `generation`, and usable?
    pub fn is_current(&self, generation: u64) -> bool {
        generation != 0
            && generation == self.generation
            && matches!(&self.conn, Conn::Up(c) if !c.is_broken())
    }

    /// The process's userfaultfd, created on first use.
    pub fn uffd(&mut self) -> Result<&OwnedFd, Error> {
        if self.uffd.is_none() {
            let fd = dipc_shmem::create_uffd().inspect_err(|e| {
                if let dipc_shmem::Error::UffdNotPermitted { .. } = e {
                    eprintln!("libsysv: cannot attach a distributed segment: {e}");
                }
            })?;
            sys::set_uffd(fd.as_raw_fd());
            self.uffd = Some(fd);
        }
        self.uffd.as_ref().ok_or(Error::Closed)
    }

    /// Register `mapping` with this process's userfaultfd and tell the
    /// daemon (sending the userfaultfd along until the daemon has it).
    pub fn register(&mut self, id: i32, mapping: &Mapping, readonly: bool) -> Result<(), Error> {
        // A duplicate for the call (which borrows `self` and may drop the
        // original if the connection breaks).
        let uffd = self.uffd()?.try_clone().map_err(|source| Error::Io {
            op: "duplicating the userfaultfd",
            source,
        })?;
        self.register_with(&uffd, id, mapping, readonly)
    }

    fn register_with(
        &mut self,
        uffd: &OwnedFd,
        id: i32,
        mapping: &Mapping,
        readonly: bool,
    ) -> Result<(), Error> {
        dipc_shmem::register(uffd.as_fd(), mapping.addr(), mapping.len(), !readonly)?;
        let req = Request::ShmRegister {
            id,
            addr: mapping.addr(),
            len: mapping.len(),
            readonly,
        };
        let fds = if self.uffd_sent {
            vec![]
        } else {
            vec![uffd.as_fd()]
        };
        match self.call(&req, &fds)?.0 {
            Response::Ok => {
                self.uffd_sent = true;
                Ok(())
            }
            Response::Err(e) => Err(Error::Node(e)),
            other => Err(Error::Protocol(format!(
                "unexpected answer to ShmRegister: {other:?}"
            ))),
        }
    }

    /// The child's half of `fork` (see the module doc).
    fn after_fork(&mut self) {
        // Inherited descriptors: closed, never used (the parent's copies
        // are the same open files, still serving the parent).
        sys::disarm_death_signal();
        let _ = sys::take_daemon_died();
        self.drop_uffd();
        if let Conn::Up(_) = self.conn {
            self.conn = Conn::Down;
        }
        if self.attachments.is_empty() {
            return;
        }
        let mut attachments = std::mem::take(&mut self.attachments);
        let connected = matches!(self.client(), Ok(Some(_)));
        for a in &mut attachments {
            let r = if connected && a.generation != 0 {
                self.reattach(a)
            } else {
                Err(Error::Closed)
            };
            if let Err(e) = r {
                eprintln!(
                    "libsysv: fork: attachment of segment {} at {:#x} lost in the child ({e}); \
                     accessing it raises SIGBUS",
                    a.id,
                    a.mapping.addr()
                );
                let _ = a.mapping.poison();
                a.generation = 0;
            }
        }
        self.attachments = attachments;
    }

    fn reattach(&mut self, a: &mut Attachment) -> Result<(), Error> {
        let req = Request::ShmAt {
            id: a.id,
            readonly: a.readonly,
        };
        match self.call(&req, &[])? {
            // The memfd is dropped (closed): the mapping is inherited.
            (Response::ShmAttach { .. }, _fds) => {}
            (Response::Err(e), _) => return Err(Error::Node(e)),
            (other, _) => {
                return Err(Error::Protocol(format!(
                    "unexpected answer to ShmAt: {other:?}"
                )));
            }
        }
        if let Err(e) = self.register(a.id, &a.mapping, a.readonly) {
            let _ = self.call(&Request::ShmAbort { id: a.id }, &[]);
            return Err(e);
        }
        a.generation = self.generation;
        Ok(())
    }
}
