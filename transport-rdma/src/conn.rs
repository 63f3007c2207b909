//! RDMA connections: setup over the authenticated control connection, and
//! the engine thread that runs the data path.
//!
//! # Setup
//!
//! Both sides run the same steps ([`establish`]), so either may have
//! dialled the TCP connection: choose the device, create the completion
//! queue, the RC queue pair and the receive ring, post every receive, move
//! the QP to INIT, send our [`ConnData`] and read the peer's, allocate the
//! staging ring the peer's slot size asks for, move the QP to RTR and RTS,
//! and finally exchange `Ready`, so that no data is sent to a QP that is not
//! yet able to receive it. The whole setup is bounded by
//! [`RdmaConfig::timeout`]; a side that fails tells the other why
//! (`Abort`).
//!
//! # Engine
//!
//! Each connection gets one OS thread that owns every verbs object of the
//! connection. It loops: poll the CQ, hand finished frames to the
//! application, re-post receives, post sends as credits allow, read the
//! control socket. When a pass found nothing to do it keeps polling for
//! [`RdmaConfig::spin`] (a page fault waits on the answer: waking from
//! sleep costs tens of microseconds), then arms the CQ and sleeps in
//! `poll(2)` on the completion channel, a wake-up socket (poked by `send`
//! when the engine sleeps) and the control socket, at most 100 ms.
//!
//! # Failure
//!
//! The control TCP connection stays open for the life of the RDMA
//! connection and carries one byte at the end, a goodbye. End of stream
//! without it means the peer process died: the connection fails at once
//! with [`Error::PeerGone`], without waiting for the transport's retries.
//! A failed completion (retry exceeded when the peer's host is unreachable,
//! flush when the QP entered the error state) fails it with
//! [`Error::Completion`]. A sender that gets no credits back from a live
//! peer for [`RdmaConfig::timeout`] fails with [`Error::Timeout`]. Every
//! failure is delivered to the next `recv` (after the frames that arrived
//! intact before it) and to every `send`.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dipc_transport_tcp::{Auth, Conn, PeerInfo, Role};
use dipc_wire::{Frame, FrameError, MAX_FRAME};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::config::RdmaConfig;
use crate::error::{Error, wc};
use crate::proto::{
    ChunkHeader, ConnData, Credits, Outgoing, RDMA_PROTOCOL_VERSION, Reassembler, Setup,
};
use crate::verbs::{self, Completion, Context, Cq, PathParams, Pd, Qp, Region, RemoteQp, SendOp};

/// Frames waiting to be sent on one connection.
pub const SEND_QUEUE: usize = 256;
/// Frames received and not yet taken by the application; past this the
/// engine stops re-posting receives, which stops the peer (credits).
pub const RECV_QUEUE: usize = 256;

/// The goodbye byte on the control connection.
const BYE: u8 = b'B';
/// `wr_id` bit marking a send (receives carry their slot number).
const SEND_BIT: u64 = 1 << 63;
/// `wr_id` of the RDMA WRITE of our ack word to the peer.
const ACK_WR: u64 = SEND_BIT | 1 << 62;
/// How often a busy engine looks at the control socket.
const CTRL_CHECK: Duration = Duration::from_millis(1);
/// Longest sleep of an idle engine.
const IDLE_SLEEP: Duration = Duration::from_millis(100);

/// How a connection ended, as seen by `send` and `recv`.
#[derive(Debug, Clone)]
enum End {
    /// Closed cleanly (by us or the peer): `recv` returns `None`.
    Clean,
    Failed(Error),
}

/// What the application side and the engine share.
#[derive(Debug)]
struct Shared {
    label: String,
    end: Mutex<Option<End>>,
    sleeping: AtomicBool,
    closing: AtomicBool,
    wake: UnixStream,
}

impl Shared {
    fn end(&self) -> Option<End> {
        self.end
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_end(&self, end: End) {
        let mut e = self.end.lock().unwrap_or_else(PoisonError::into_inner);
        if e.is_none() {
            *e = Some(end);
        }
    }

    /// The error a `send` gets once the engine is gone.
    fn send_error(&self) -> Error {
        match self.end() {
            Some(End::Failed(e)) => e,
            _ => Error::Closed {
                peer: self.label.clone(),
            },
        }
    }

    /// Wake the engine if it sleeps (a full socket buffer means a wake-up
    /// is pending already).
    fn wake(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            let _ = (&self.wake).write(&[1]);
        }
    }
}

/// The sending side of an [`RdmaConn`]; cheap to clone, so several tasks
/// can send on one connection (frames keep the order in which `send`
/// calls complete).
#[derive(Debug, Clone)]
pub struct RdmaSender {
    out: mpsc::Sender<Frame>,
    shared: Arc<Shared>,
    timeout: Duration,
}

impl RdmaSender {
    /// Queue `frame` for the peer. Waits (at most the configured timeout)
    /// while [`SEND_QUEUE`] frames are waiting; fails at once when the
    /// connection has ended.
    pub async fn send(&self, frame: Frame) -> Result<(), Error> {
        check_len(&frame)?;
        if let Some(end) = self.shared.end() {
            return Err(match end {
                End::Failed(e) => e,
                End::Clean => Error::Closed {
                    peer: self.shared.label.clone(),
                },
            });
        }
        self.queue_waiting(frame).await?;
        self.shared.wake();
        Ok(())
    }

    /// Queue `frame`, waiting at most the timeout for room.
    async fn queue_waiting(&self, frame: Frame) -> Result<(), Error> {
        match tokio::time::timeout(self.timeout, self.out.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.shared.send_error()),
            Err(_) => Err(Error::Timeout {
                what: format!(
                    "queueing a frame for {} ({SEND_QUEUE} frames waiting)",
                    self.shared.label
                ),
                after: self.timeout,
            }),
        }
    }

    /// Queue every frame of `frames` (draining it), in order, waking the
    /// engine once for the batch (or when the queue is full). Bounded like
    /// [`RdmaSender::send`].
    pub async fn send_many(&self, frames: &mut Vec<Frame>) -> Result<(), Error> {
        for frame in frames.drain(..) {
            check_len(&frame)?;
            let frame = match self.out.try_send(frame) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(self.shared.send_error()),
                Err(mpsc::error::TrySendError::Full(f)) => f,
            };
            // The engine has a full queue: make sure it is awake, then wait.
            self.shared.wake();
            self.queue_waiting(frame).await?;
        }
        if let Some(End::Failed(e)) = self.shared.end() {
            return Err(e);
        }
        self.shared.wake();
        Ok(())
    }

    /// Close the connection once the frames queued so far are sent (like
    /// [`RdmaConn::close`]).
    pub fn close(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        let _ = (&self.shared.wake).write(&[1]);
    }
}

/// A frame too large for the peer is refused before it is queued.
fn check_len(frame: &Frame) -> Result<(), Error> {
    let len = frame.wire_len();
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME,
        }
        .into());
    }
    Ok(())
}

/// An RDMA connection to one peer: frames in, frames out.
#[derive(Debug)]
pub struct RdmaConn {
    sender: RdmaSender,
    inc: mpsc::Receiver<Frame>,
    peer: PeerInfo,
}

impl RdmaConn {
    /// Send one frame (see [`RdmaSender::send`]).
    pub async fn send(&self, frame: Frame) -> Result<(), Error> {
        self.sender.send(frame).await
    }

    /// A clonable handle for sending from other tasks.
    pub fn sender(&self) -> RdmaSender {
        self.sender.clone()
    }

    /// The next frame from the peer; `Ok(None)` once the peer closed the
    /// connection cleanly and every frame it sent was received; the error
    /// that ended the connection otherwise. Waits while the peer is idle.
    pub async fn recv(&mut self) -> Result<Option<Frame>, Error> {
        match self.inc.recv().await {
            Some(f) => Ok(Some(f)),
            None => match self.sender.shared.end() {
                Some(End::Failed(e)) => Err(e),
                _ => Ok(None),
            },
        }
    }

    /// [`RdmaConn::recv`] bounded by `timeout`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Frame>, Error> {
        tokio::time::timeout(timeout, self.recv())
            .await
            .map_err(|_| Error::Timeout {
                what: format!("receiving from {}", self.sender.shared.label),
                after: timeout,
            })?
    }

    /// The authenticated peer (from the control connection's handshake).
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// Close: frames already queued are still sent, then the peer is told
    /// goodbye and gets `None` from its `recv` once it has them.
    pub fn close(&self) {
        self.sender.close();
    }
}

impl Drop for RdmaConn {
    fn drop(&mut self) {
        self.close();
    }
}

/// Connect to the node at `addr` over TCP, authenticate, and set up RDMA.
pub async fn connect(
    addr: &str,
    auth: &Auth,
    cfg: &RdmaConfig,
) -> Result<(RdmaConn, PeerInfo), Error> {
    let (conn, peer) = Conn::connect(addr, auth, Role::Node, cfg.timeout).await?;
    Ok((establish(conn, cfg).await?, peer))
}

/// Authenticate an accepted TCP connection and set up RDMA on it.
pub async fn accept(
    stream: tokio::net::TcpStream,
    auth: &Auth,
    cfg: &RdmaConfig,
) -> Result<(RdmaConn, PeerInfo), Error> {
    let (conn, peer) = Conn::accept(stream, auth, cfg.timeout).await?;
    Ok((establish(conn, cfg).await?, peer))
}

/// Turn an authenticated control connection into an RDMA connection. Both
/// peers call this on their end of `ctrl`; it then belongs to the RDMA
/// connection (which closes it when it ends).
pub async fn establish(ctrl: Conn, cfg: &RdmaConfig) -> Result<RdmaConn, Error> {
    let label = ctrl.peer().to_string();
    tokio::time::timeout(cfg.timeout, setup(ctrl, cfg))
        .await
        .map_err(|_| Error::Timeout {
            what: format!("RDMA connection setup with {label}"),
            after: cfg.timeout,
        })?
}

/// The verbs objects of one connection. Field order is drop order: the QP
/// before the rings and the CQ, all before the PD and device.
struct Resources {
    qp: Qp,
    recv_ring: Region,
    cq: Cq,
    pd: Arc<Pd>,
    _ctx: Arc<Context>,
    data: ConnData,
    port: u8,
}

fn resources(cfg: &RdmaConfig) -> Result<Resources, Error> {
    if cfg.slots < 4
        || cfg.slots > 4096
        || cfg.slot_size < 4096
        || !cfg.slot_size.is_multiple_of(64)
    {
        return Err(Error::Config {
            reason: format!(
                "{} slots of {} bytes (want 4..=4096 slots of at least 4096 bytes, a multiple of 64)",
                cfg.slots, cfg.slot_size
            ),
        });
    }
    let sel = cfg.select()?;
    let ctx = Context::open(&sel.device)?;
    let port = sel.port.port;
    let gid = ctx.gid(port, cfg.gid_index)?;
    let pd = Pd::new(&ctx)?;
    let cq = Cq::new(&ctx, 2 * cfg.slots as i32 + 16)?;
    // One more send than messages in flight: the ack word's write.
    let mut qp = Qp::new(&pd, &cq, cfg.slots + 2, cfg.slots)?;
    let slot = cfg.slot_size as usize;
    // The ring, then the ack word in a page of its own.
    let ack_off = cfg.slots as usize * slot;
    let recv_ring = Region::new(&pd, ack_off + 4096, true)?;
    qp.modify_to_init(port)?;
    for i in 0..cfg.slots as usize {
        qp.post_recv(i as u64, &recv_ring, i * slot, slot)?;
    }
    let mut psn = [0u8; 4];
    getrandom::fill(&mut psn)
        .map_err(|e| Error::verbs("random PSN", std::io::Error::other(e.to_string())))?;
    let data = ConnData {
        version: RDMA_PROTOCOL_VERSION,
        gid,
        lid: sel.port.lid,
        qpn: qp.qpn(),
        psn: u32::from_le_bytes(psn) & 0xff_ffff,
        mtu: sel.port.active_mtu,
        ring_addr: recv_ring.addr(),
        ring_rkey: recv_ring.rkey(),
        ack_addr: recv_ring.addr() + ack_off as u64,
        slots: cfg.slots,
        slot_size: cfg.slot_size,
    };
    Ok(Resources {
        qp,
        recv_ring,
        cq,
        pd,
        _ctx: ctx,
        data,
        port,
    })
}

/// Run blocking verbs work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::verbs("RDMA setup task", std::io::Error::other(e.to_string())))?
}

async fn setup_msg(ctrl: &mut Conn, label: &str) -> Result<Setup, Error> {
    match ctrl.recv().await? {
        Some(f) => f.decode::<Setup>().map_err(|e| Error::Protocol {
            peer: label.to_string(),
            reason: format!("bad RDMA setup message ({e}); does the peer speak RDMA?"),
        }),
        None => Err(Error::PeerGone {
            peer: label.to_string(),
            reason: "closed the control connection during RDMA setup".into(),
        }),
    }
}

/// Tell the peer we give up (best effort) and return the error.
async fn abort(ctrl: &mut Conn, e: Error) -> Error {
    let _ = ctrl.send(&Frame::msg(&Setup::Abort(e.to_string()))).await;
    e
}

async fn setup(mut ctrl: Conn, cfg: &RdmaConfig) -> Result<RdmaConn, Error> {
    let label = ctrl.peer().to_string();
    // Opening the device and registering the rings are blocking verbs
    // calls (slow under emulation): off the async runtime's thread.
    let c = cfg.clone();
    let res = match blocking(move || resources(&c)).await {
        Ok(r) => r,
        Err(e) => return Err(abort(&mut ctrl, e).await),
    };
    ctrl.send(&res.data.to_frame()).await?;
    let theirs = match setup_msg(&mut ctrl, &label).await? {
        Setup::Hello(d) => d,
        Setup::Abort(reason) => {
            return Err(Error::PeerGone {
                peer: label,
                reason: format!("gave up RDMA setup: {reason}"),
            });
        }
        Setup::Ready => {
            return Err(Error::Protocol {
                peer: label,
                reason: "Ready before connection data".into(),
            });
        }
    };
    if let Err(reason) = theirs.validate() {
        let e = Error::Protocol {
            peer: label.clone(),
            reason,
        };
        return Err(abort(&mut ctrl, e).await);
    }
    let Resources {
        mut qp,
        recv_ring,
        cq,
        pd,
        _ctx,
        data,
        port,
    } = res;
    let stage_slots = theirs.slots.min(cfg.slots);
    let path = PathParams {
        port,
        gid_index: cfg.gid_index,
        mtu: data.mtu.min(theirs.mtu),
        timeout: cfg.ack_timeout,
        retry_cnt: cfg.retry_cnt,
    };
    let remote = RemoteQp {
        qpn: theirs.qpn,
        psn: theirs.psn,
        lid: theirs.lid,
        gid: theirs.gid,
    };
    // The staging ring, then the source of our ack word's writes.
    let ack_src_off = stage_slots as usize * theirs.slot_size as usize;
    let (pd2, psn) = (pd.clone(), data.psn);
    let (qp_back, connected) = blocking(move || {
        let connected = Region::new(&pd2, ack_src_off + 4096, false).and_then(|send_ring| {
            qp.modify_to_rtr(&remote, &path)?;
            qp.modify_to_rts(psn, &path)?;
            Ok(send_ring)
        });
        Ok((qp, connected))
    })
    .await?;
    let qp = qp_back;
    let send_ring = match connected {
        Ok(r) => r,
        Err(e) => return Err(abort(&mut ctrl, e).await),
    };
    ctrl.send(&Frame::msg(&Setup::Ready)).await?;
    match setup_msg(&mut ctrl, &label).await? {
        Setup::Ready => {}
        Setup::Abort(reason) => {
            return Err(Error::PeerGone {
                peer: label,
                reason: format!("gave up RDMA setup: {reason}"),
            });
        }
        Setup::Hello(_) => {
            return Err(Error::Protocol {
                peer: label,
                reason: "second connection data".into(),
            });
        }
    }
    let (stream, rbuf, peer) = ctrl.into_parts();
    let ctrl = stream
        .into_std()
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .map_err(|e| Error::verbs(format!("control connection to {label}"), e))?;
    let (wake, wake_rx) = UnixStream::pair()
        .and_then(|(a, b)| {
            a.set_nonblocking(true)?;
            b.set_nonblocking(true)?;
            Ok((a, b))
        })
        .map_err(|e| Error::verbs("wake-up socket", e))?;
    let shared = Arc::new(Shared {
        label: label.clone(),
        end: Mutex::new(None),
        sleeping: AtomicBool::new(false),
        closing: AtomicBool::new(false),
        wake,
    });
    let (out_tx, out_rx) = mpsc::channel(SEND_QUEUE);
    let (in_tx, in_rx) = mpsc::channel(RECV_QUEUE);
    let engine = Engine {
        qp,
        recv_ring,
        send_ring,
        cq,
        _pd: pd,
        _ctx,
        label: label.clone(),
        slots: data.slots,
        slot_size: data.slot_size as usize,
        stage_slots,
        peer_slots: theirs.slots,
        peer_slot_size: theirs.slot_size as usize,
        peer_ring: (theirs.ring_addr, theirs.ring_rkey),
        peer_ack: theirs.ack_addr,
        ack_off: data.slots as usize * data.slot_size as usize,
        ack_src_off,
        ack_inflight: false,
        credits: Credits::new(theirs.slots),
        send_done: 0,
        received: 0,
        reposted: 0,
        ack_sent: 0,
        reasm: Reassembler::default(),
        ready: VecDeque::new(),
        current: None,
        out_rx,
        in_tx: Some(in_tx),
        ctrl,
        ctrl_pending: rbuf.to_vec(),
        wake_rx,
        shared: shared.clone(),
        timeout: cfg.timeout,
        spin: cfg.spin,
        peer_bye: false,
        ctrl_due: Instant::now(),
        wcs: Vec::with_capacity(32),
    };
    std::thread::Builder::new()
        .name(format!("rdma {}", peer.addr))
        .spawn(move || engine.run())
        .map_err(|e| Error::verbs("start the RDMA engine thread", e))?;
    debug!(peer = %label, mtu = path.mtu, "RDMA connection up");
    Ok(RdmaConn {
        sender: RdmaSender {
            out: out_tx,
            shared,
            timeout: cfg.timeout,
        },
        inc: in_rx,
        peer,
    })
}

/// The data path of one connection (see the module doc).
struct Engine {
    // Verbs objects first: fields drop in order, the QP before its CQ and
    // rings, everything before the PD and the device.
    qp: Qp,
    recv_ring: Region,
    send_ring: Region,
    cq: Cq,
    _pd: Arc<Pd>,
    _ctx: Arc<Context>,
    label: String,
    slots: u32,
    slot_size: usize,
    stage_slots: u32,
    peer_slots: u32,
    peer_slot_size: usize,
    peer_ring: (u64, u32),
    credits: Credits,
    /// Send completions seen (they come in posting order).
    send_done: u64,
    /// Receive completions processed.
    received: u64,
    /// Receives re-posted (what we acknowledge to the peer).
    reposted: u64,
    /// The last `reposted` value sent to the peer.
    ack_sent: u64,
    /// Where the peer's ack word is; where ours is in `recv_ring`; where
    /// the source of our writes to the peer's is in `send_ring`.
    peer_ack: u64,
    ack_off: usize,
    ack_src_off: usize,
    /// Our ack word's write is in flight (its source must not change).
    ack_inflight: bool,
    reasm: Reassembler,
    ready: VecDeque<Frame>,
    current: Option<Outgoing>,
    out_rx: mpsc::Receiver<Frame>,
    in_tx: Option<mpsc::Sender<Frame>>,
    ctrl: std::net::TcpStream,
    /// Control bytes read before the engine started.
    ctrl_pending: Vec<u8>,
    wake_rx: UnixStream,
    shared: Arc<Shared>,
    timeout: Duration,
    spin: Duration,
    peer_bye: bool,
    /// When to look at the control socket next (not on every spin: it is
    /// a system call, and the socket only ever ends the connection).
    ctrl_due: Instant,
    wcs: Vec<Completion>,
}

/// How the main loop ended without error.
enum Finish {
    /// We closed: everything queued was sent and acknowledged.
    Local,
    /// The peer said goodbye.
    Peer,
}

impl Engine {
    fn run(mut self) {
        let end = match self.main_loop() {
            Err(e @ Error::Completion { .. }) => Err(self.explain_completion(e)),
            end => end,
        };
        let _ = self.qp.modify_to_error();
        match end {
            Ok(Finish::Peer) => {
                debug!(peer = %self.label, "peer closed the RDMA connection");
                // The peer's last frames: wait for the application to take
                // them (or drop its receiver).
                if let Some(tx) = self.in_tx.take() {
                    for f in self.ready.drain(..) {
                        if tx.blocking_send(f).is_err() {
                            break;
                        }
                    }
                }
                self.shared.set_end(End::Clean);
            }
            Ok(Finish::Local) => {
                debug!(peer = %self.label, "RDMA connection closed");
                self.shared.set_end(End::Clean);
            }
            Err(e) => {
                warn!(peer = %self.label, error = %e, "RDMA connection failed");
                self.shared.set_end(End::Failed(e));
                // Frames that arrived whole before the failure are still
                // good; the error follows them.
                if let Some(tx) = self.in_tx.take() {
                    for f in self.ready.drain(..) {
                        if tx.try_send(f).is_err() {
                            break;
                        }
                    }
                }
            }
        }
        let _ = self.ctrl.shutdown(std::net::Shutdown::Both);
    }

    /// A failed completion is often the first sign of a peer process that
    /// died (its memory regions went before its queue pair, so our writes
    /// see "remote access error"). If its control connection ends without
    /// goodbye shortly after, report that instead.
    fn explain_completion(&mut self, e: Error) -> Error {
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            let mut fds = [PollFd::new(self.ctrl.as_fd(), PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, PollTimeout::from(50u8));
            match self.read_control() {
                Err(Error::PeerGone { peer, reason }) => {
                    return Error::PeerGone {
                        peer,
                        reason: format!("{reason}; first seen as: {e}"),
                    };
                }
                Err(_) => return e,
                Ok(_) => {}
            }
        }
        e
    }

    fn closing(&self) -> bool {
        self.shared.closing.load(Ordering::SeqCst)
            || self.out_rx.is_closed()
            || self.in_tx.as_ref().is_none_or(mpsc::Sender::is_closed)
    }

    fn main_loop(&mut self) -> Result<Finish, Error> {
        let mut idle_since = Instant::now();
        let mut credit_wait: Option<Instant> = None;
        loop {
            let mut progress = self.poll_cq()?;
            progress |= self.deliver();
            progress |= self.repost()?;
            self.read_ack_word()?;
            progress |= self.send_some()?;
            if Instant::now() >= self.ctrl_due {
                progress |= self.read_control()?;
                self.ctrl_due = Instant::now() + CTRL_CHECK;
            }
            if self.peer_bye {
                // Everything the peer sent completed at its side before it
                // said goodbye, so it is in our CQ.
                while self.poll_cq()? {}
                self.repost()?;
                return Ok(Finish::Peer);
            }
            let wants_send = self.current.is_some() || !self.out_rx.is_empty();
            if self.closing()
                && !wants_send
                && self.send_done == self.credits.sent
                && !self.ack_inflight
            {
                let _ = self.ctrl.write_all(&[BYE]);
                return Ok(Finish::Local);
            }
            // A live peer that returns no credits (its application stopped
            // reading) must not block our sender forever.
            if wants_send && !self.credits.may_send() {
                let since = *credit_wait.get_or_insert_with(Instant::now);
                if since.elapsed() > self.timeout {
                    return Err(Error::Timeout {
                        what: format!("waiting for {} to take our messages", self.label),
                        after: self.timeout,
                    });
                }
            } else {
                credit_wait = None;
            }
            if progress {
                idle_since = Instant::now();
                continue;
            }
            if idle_since.elapsed() < self.spin {
                std::hint::spin_loop();
                continue;
            }
            self.sleep()?;
            idle_since = Instant::now();
        }
    }

    /// Process one batch of completions; true if there was any.
    fn poll_cq(&mut self) -> Result<bool, Error> {
        self.wcs.clear();
        let n = self.cq.poll(&mut self.wcs, 32)?;
        for i in 0..n {
            let c = self.wcs[i];
            if c.wr_id == ACK_WR {
                if c.status != wc::SUCCESS {
                    return Err(Error::completion(
                        &self.label,
                        "ack word RDMA WRITE",
                        c.status,
                        verbs::status_str(c.status),
                    ));
                }
                self.ack_inflight = false;
            } else if c.wr_id & SEND_BIT != 0 {
                if c.status != wc::SUCCESS {
                    let what = if c.opcode == verbs::WC_RDMA_WRITE {
                        "RDMA WRITE"
                    } else if c.opcode == verbs::WC_SEND {
                        "SEND"
                    } else {
                        "send"
                    };
                    return Err(Error::completion(
                        &self.label,
                        what,
                        c.status,
                        verbs::status_str(c.status),
                    ));
                }
                self.send_done += 1;
            } else {
                self.on_recv(c)?;
            }
        }
        Ok(n > 0)
    }

    fn protocol(&self, reason: impl Into<String>) -> Error {
        Error::Protocol {
            peer: self.label.clone(),
            reason: reason.into(),
        }
    }

    fn on_recv(&mut self, c: Completion) -> Result<(), Error> {
        if c.status != wc::SUCCESS {
            return Err(Error::completion(
                &self.label,
                "receive",
                c.status,
                verbs::status_str(c.status),
            ));
        }
        let slot = (self.received % u64::from(self.slots)) as usize;
        if c.wr_id != slot as u64
            || !(c.opcode == verbs::WC_RECV || c.opcode == verbs::WC_RECV_RDMA_WITH_IMM)
        {
            return Err(self.protocol(format!(
                "completion for slot {} (opcode {}) where slot {slot} was next",
                c.wr_id, c.opcode
            )));
        }
        let Some(imm) = c.imm else {
            return Err(self.protocol("message without immediate data"));
        };
        self.credits.on_ack(imm).map_err(|r| self.protocol(r))?;
        let base = slot * self.slot_size;
        let mut hb = [0u8; ChunkHeader::SIZE];
        self.recv_ring.read(base, &mut hb)?;
        let h = ChunkHeader::decode(hb);
        let len = h.len as usize;
        if len > self.slot_size - ChunkHeader::SIZE || ChunkHeader::SIZE + len > c.byte_len as usize
        {
            return Err(self.protocol(format!(
                "chunk of {len} bytes in a message of {} bytes (slot size {})",
                c.byte_len, self.slot_size
            )));
        }
        self.received += 1;
        let ring = &self.recv_ring;
        let frame = self
            .reasm
            .feed_with(h, |dst| {
                ring.read(base + ChunkHeader::SIZE, dst)
                    .map_err(|e| e.to_string())
            })
            .map_err(|r| self.protocol(r))?;
        if let Some(frame) = frame {
            self.ready.push_back(frame);
        }
        Ok(())
    }

    /// Hand ready frames to the application; true if any was taken.
    fn deliver(&mut self) -> bool {
        let Some(tx) = &self.in_tx else {
            return false;
        };
        let mut any = false;
        while let Some(f) = self.ready.pop_front() {
            match tx.try_send(f) {
                Ok(()) => any = true,
                Err(mpsc::error::TrySendError::Full(f)) => {
                    self.ready.push_front(f);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    // Nobody receives any more; we are closing.
                    self.ready.clear();
                    break;
                }
            }
        }
        any
    }

    /// Re-post receives for processed slots while the application keeps
    /// up; true if any was posted.
    fn repost(&mut self) -> Result<bool, Error> {
        let mut any = false;
        while self.reposted < self.received && self.ready.len() < RECV_QUEUE {
            let slot = (self.reposted % u64::from(self.slots)) as usize;
            self.qp.post_recv(
                slot as u64,
                &self.recv_ring,
                slot * self.slot_size,
                self.slot_size,
            )?;
            self.reposted += 1;
            any = true;
        }
        Ok(any)
    }

    fn stage_free(&self) -> bool {
        self.credits.sent - self.send_done < u64::from(self.stage_slots)
    }

    /// Post chunks of queued frames as credits and staging slots allow,
    /// and our ack word when we owe the peer many credits; true if
    /// anything was posted.
    fn send_some(&mut self) -> Result<bool, Error> {
        let mut any = false;
        loop {
            if self.current.is_none() {
                match self.out_rx.try_recv() {
                    Ok(f) => self.current = Some(Outgoing::new(&f)?),
                    Err(_) => break,
                }
            }
            if !self.credits.may_send() || !self.stage_free() {
                break;
            }
            self.post_chunk()?;
            any = true;
        }
        // Half a ring owed and no message carried it: write the ack word.
        // A blocked peer has a whole ring unacknowledged, so this always
        // fires for it once we have re-posted (see `proto`).
        let owed = self.reposted - self.ack_sent;
        if !self.ack_inflight && owed >= u64::from(self.slots / 2).max(1) {
            let count = self.reposted as u32;
            self.send_ring
                .write(self.ack_src_off, &count.to_le_bytes())?;
            self.qp.post_send(
                ACK_WR,
                &self.send_ring,
                self.ack_src_off,
                4,
                SendOp::Write {
                    addr: self.peer_ack,
                    rkey: self.peer_ring.1,
                },
            )?;
            self.ack_inflight = true;
            self.ack_sent = self.reposted;
            any = true;
        }
        Ok(any)
    }

    fn post(&mut self, header: ChunkHeader, write: bool) -> Result<(), Error> {
        let seq = self.credits.sent;
        let base = (seq % u64::from(self.stage_slots)) as usize * self.peer_slot_size;
        self.send_ring.write(base, &header.encode())?;
        let imm = self.reposted as u32;
        let op = if write {
            let slot = seq % u64::from(self.peer_slots);
            SendOp::WriteImm {
                addr: self.peer_ring.0 + slot * self.peer_slot_size as u64,
                rkey: self.peer_ring.1,
                imm,
            }
        } else {
            SendOp::Send { imm }
        };
        self.qp.post_send(
            SEND_BIT | seq,
            &self.send_ring,
            base,
            ChunkHeader::SIZE + header.len as usize,
            op,
        )?;
        self.ack_sent = self.reposted;
        self.credits.on_sent();
        Ok(())
    }

    fn post_chunk(&mut self) -> Result<(), Error> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(());
        };
        let seq = self.credits.sent;
        let base = (seq % u64::from(self.stage_slots)) as usize * self.peer_slot_size;
        let room = self.peer_slot_size - ChunkHeader::SIZE;
        let ring = &mut self.send_ring;
        let mut failed = None;
        let header = cur.next_chunk(room, |at, bytes| {
            if let Err(e) = ring.write(base + ChunkHeader::SIZE + at, bytes) {
                failed = Some(e);
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        let write = cur.write;
        if cur.is_done() {
            self.current = None;
        }
        self.post(header, write)
    }

    /// The peer's latest write of our ack word.
    fn read_ack_word(&mut self) -> Result<(), Error> {
        let count = self.recv_ring.read_u32(self.ack_off)?;
        self.credits.on_ack(count).map_err(|r| self.protocol(r))
    }

    /// Read the control socket: a goodbye, or the end that says the peer
    /// died. True if anything was read.
    fn read_control(&mut self) -> Result<bool, Error> {
        let mut buf = [0u8; 64];
        let mut pending = std::mem::take(&mut self.ctrl_pending);
        let got = match self.ctrl.read(&mut buf) {
            Ok(0) if pending.is_empty() && !self.peer_bye => {
                return Err(Error::PeerGone {
                    peer: self.label.clone(),
                    reason: "control connection closed without goodbye (process killed?)".into(),
                });
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
            Err(e) if e.kind() == ErrorKind::Interrupted => 0,
            Err(e) => {
                return Err(Error::PeerGone {
                    peer: self.label.clone(),
                    reason: format!("control connection failed: {e}"),
                });
            }
        };
        pending.extend_from_slice(&buf[..got]);
        for b in &pending {
            if *b == BYE {
                self.peer_bye = true;
            } else {
                return Err(self.protocol(format!(
                    "unexpected byte {b:#04x} on the control connection"
                )));
            }
        }
        Ok(!pending.is_empty())
    }

    /// Sleep until a completion, a wake-up, control traffic, or a short
    /// timeout.
    fn sleep(&mut self) -> Result<(), Error> {
        self.shared.sleeping.store(true, Ordering::SeqCst);
        let woken = self.sleep_inner();
        self.shared.sleeping.store(false, Ordering::SeqCst);
        woken
    }

    fn sleep_inner(&mut self) -> Result<(), Error> {
        // Work queued before `sleeping` was visible gets no wake-up.
        if !self.out_rx.is_empty() {
            return Ok(());
        }
        self.cq.arm()?;
        // Completions that arrived before arming raise no event.
        if self.poll_cq()? {
            return Ok(());
        }
        let blocked = self.current.is_some() && !self.credits.may_send();
        let wait = if self.ready.is_empty() && !blocked {
            IDLE_SLEEP
        } else {
            // Waiting for the application to take frames, or for credits
            // that may come by a write of our ack word: neither wakes us,
            // so look again soon.
            Duration::from_millis(1)
        };
        let (cq_ready, wake_ready) = {
            let mut fds = [
                PollFd::new(self.cq.fd(), PollFlags::POLLIN),
                PollFd::new(self.wake_rx.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.ctrl.as_fd(), PollFlags::POLLIN),
            ];
            let t = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
            match nix::poll::poll(&mut fds, t) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => return Ok(()),
                Err(e) => return Err(Error::verbs("poll the completion channel", e.into())),
            }
            let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
            if ready(&fds[2]) {
                self.ctrl_due = Instant::now();
            }
            (ready(&fds[0]), ready(&fds[1]))
        };
        if cq_ready {
            while self.cq.take_event()? {}
        }
        if wake_ready {
            let mut buf = [0u8; 64];
            while matches!((&self.wake_rx).read(&mut buf), Ok(n) if n > 0) {}
        }
        Ok(())
    }
}
