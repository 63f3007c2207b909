//! Direct connections: `msgsnd`, `msgrcv` and `semop` on an object homed on
//! another node, sent straight to that home.
//!
//! Through the node, such a call crosses this process's socket to its node,
//! the peer link to the home, and both again on the way back. On a direct
//! connection it crosses one TCP connection to the home and back: about
//! half the hops and wake-ups of a round trip. The node opens the
//! connection ([`Request::Direct`]): it dials the home, authenticates as
//! itself, binds the connection to this process's pid, uid and gid there,
//! and hands the socket over; the cluster secret never leaves the daemon
//! (see the node's `direct` module). The home answers the same requests,
//! in the same protocol, that a waiting connection of the node carries,
//! with the same errors, cancel on a signal (`crate::msg`), and
//! cancellation when the connection closes (the process died).
//!
//! Per process: which home each id has (or that it goes through the node:
//! a home on this node, links under TLS, `DIPC_DIRECT=0`, a `semop` with
//! `SEM_UNDO`, whose adjustments the node applies when the process exits),
//! and idle connections per (home, effective uid, gid), so a process that
//! changes its ids opens new ones. A forked child drops its copies of the
//! parent's connections (they are bound to the parent's pid) and opens
//! its own.
//!
//! A connection that breaks with a call unanswered (the home died, or the
//! network did) is not retried: the call may have taken effect. The node
//! judges it ([`Request::DirectLost`]): `EIDRM` when the referee declares
//! the home down within the node's call timeout, else `EIO`, as for a
//! relayed call. An idle connection found closed (the home restarted) is
//! replaced before anything is sent on it.

use std::collections::HashMap;
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::sync::{Mutex, MutexGuard};

use dipc_wire::Kind;
use dipc_wire::local::{Request, Response};

use crate::Error;
use crate::config::Config;
use crate::msg::{Text, answer, io_err, main_call, unexpected};
use crate::state;

/// Idle direct connections kept per (home, uid, gid).
const MAX_IDLE: usize = 4;

#[derive(Default)]
struct Direct {
    pid: u32,
    /// Object id -> its home (`None`: through the node).
    route: HashMap<i32, Option<u32>>,
    /// (home, effective uid, effective gid) -> idle connections.
    idle: HashMap<(u32, u32, u32), Vec<TcpStream>>,
}

static DIRECT: Mutex<Option<Direct>> = Mutex::new(None);

/// This process's state, unless another thread holds it right now (a child
/// forked while it was held then goes through the node, see `crate::msg`).
fn lock() -> Option<MutexGuard<'static, Option<Direct>>> {
    let mut g = match DIRECT.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return None,
    };
    let me = std::process::id();
    if g.as_ref().is_none_or(|d| d.pid != me) {
        // Inherited through fork: close our copies only.
        *g = Some(Direct {
            pid: me,
            ..Direct::default()
        });
    }
    Some(g)
}

/// The object an operation is on, if it may go direct.
fn target(req: &Request) -> Option<(Kind, i32)> {
    match req {
        Request::MsgSnd { id, .. } | Request::MsgRcv { id, .. } => Some((Kind::Msg, *id)),
        Request::SemOp { id, sops, .. }
            if sops.iter().all(|s| s.flg & libc::SEM_UNDO as i16 == 0) =>
        {
            Some((Kind::Sem, *id))
        }
        _ => None,
    }
}

/// Send `req` (followed by `text`) to its object's home on a direct
/// connection and wait for the answer (its message text `into` the
/// caller's buffer if given, see `crate::msg::read_answer`). `None`: send
/// it through the node instead.
pub(crate) fn call(
    req: &Request,
    text: Text,
    into: Option<Text>,
) -> Option<Result<(Response, usize), Error>> {
    if !Config::get().direct {
        return None;
    }
    let (kind, id) = target(req)?;
    let ids = crate::sys::effective_ids();
    let route = lock()?.as_ref().and_then(|d| d.route.get(&id).copied());
    let (home, pooled) = match route {
        Some(None) => return None,
        Some(Some(home)) => (home, take_idle(home, ids)),
        None => (0, None),
    };
    let fresh = |kind, id| match open(kind, id) {
        Ok(Opened::Home(h, s)) => Ok((h, s)),
        Ok(Opened::Relay) => Err(None),
        Ok(Opened::Answer(r)) => Err(Some(Ok((r, 0)))),
        Err(e) => Err(Some(Err(e))),
    };
    let was_pooled = pooled.is_some();
    let (home, mut s) = match pooled {
        Some(s) => (home, s),
        None => match fresh(kind, id) {
            Ok(x) => x,
            Err(r) => return r,
        },
    };
    match send_text(&mut s, req, text) {
        Ok(()) => {}
        // The caller's text (probed readable) is not any more: the stream
        // is out of step, the connection dropped.
        Err(Error::Fault) => return Some(Err(Error::Fault)),
        Err(_) if !was_pooled => return Some(lost(home).map(|r| (r, 0))),
        // An idle connection the home closed since it was checked: the
        // request did not go out, so a new connection may send it.
        Err(_) => {
            (_, s) = match fresh(kind, id) {
                Ok(x) => x,
                Err(r) => return r,
            };
            match send_text(&mut s, req, text) {
                Ok(()) => {}
                Err(Error::Fault) => return Some(Err(Error::Fault)),
                Err(_) => return Some(lost(home).map(|r| (r, 0))),
            }
        }
    }
    match answer(&mut s, send, into) {
        Ok(resp) => {
            give_back(home, ids, s);
            Some(Ok(resp))
        }
        // The stream is in step, but the call is over: not given back.
        Err(e @ (Error::Protocol(_) | Error::Fault)) => Some(Err(e)),
        Err(_) => Some(lost(home).map(|r| (r, 0))),
    }
}

/// An idle connection to `home` for `ids`, if one is still open.
fn take_idle(home: u32, ids: (u32, u32)) -> Option<TcpStream> {
    let mut g = lock()?;
    let pool = g.as_mut()?.idle.get_mut(&(home, ids.0, ids.1))?;
    while let Some(s) = pool.pop() {
        // The home never speaks first: anything to read is its end.
        if !crate::sys::has_event(s.as_fd()) {
            return Some(s);
        }
    }
    None
}

fn give_back(home: u32, ids: (u32, u32), s: TcpStream) {
    if let Some(mut g) = lock()
        && let Some(d) = g.as_mut()
    {
        let pool = d.idle.entry((home, ids.0, ids.1)).or_default();
        if pool.len() < MAX_IDLE {
            pool.push(s);
        }
    }
}

enum Opened {
    Home(u32, TcpStream),
    Relay,
    /// The node's answer stands for the operation's (`EINVAL`, `EIDRM`).
    Answer(Response),
}

/// A new direct connection for object `id`, from the node.
fn open(kind: Kind, id: i32) -> Result<Opened, Error> {
    let (resp, mut fds) = {
        let mut st = state::lock();
        if st.client()?.is_none() {
            return Ok(Opened::Relay);
        }
        st.call(&Request::Direct { kind, id }, &[])?
    };
    let route = match &resp {
        Response::Direct { home } => Some(*home),
        Response::Relay => None,
        Response::Err(_) => return Ok(Opened::Answer(resp)),
        _ => return Err(unexpected("Direct", resp)),
    };
    if let Some(mut g) = lock()
        && let Some(d) = g.as_mut()
    {
        d.route.insert(id, route);
    }
    let Some(home) = route else {
        return Ok(Opened::Relay);
    };
    let Some(fd) = fds.pop().filter(|_| fds.is_empty()) else {
        return Err(Error::Protocol("Direct answered without one socket".into()));
    };
    let s = TcpStream::from(fd);
    let timeout = Some(Config::get().timeout);
    // Bounds sends (`read_frame` bounds the reading of an answer itself).
    s.set_write_timeout(timeout)
        .map_err(|e| io_err("setting up a direct connection", e))?;
    Ok(Opened::Home(home, s))
}

/// Send one request (`MSG_NOSIGNAL`: a closed connection is an error, not
/// a `SIGPIPE`).
fn send(s: &mut TcpStream, req: &Request) -> Result<(), Error> {
    send_text(s, req, Text::NONE)
}

fn send_text(s: &mut TcpStream, req: &Request, text: Text) -> Result<(), Error> {
    crate::msg::send_request(s.as_fd(), req, text, false)
}

/// The connection to `home` broke with a call unanswered: the node says
/// what became of the object.
fn lost(home: u32) -> Result<Response, Error> {
    Ok(main_call(&Request::DirectLost { home })?.unwrap_or(Response::Err(libc::EIO)))
}
