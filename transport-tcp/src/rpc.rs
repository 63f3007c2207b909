//! Calls and notifications over one [`Conn`](crate::Conn), in both directions.
//!
//! [`rpc`] splits the connection and spawns two tasks on the current tokio
//! runtime:
//!
//! * the **writer** owns the only queue of outgoing frames (calls, replies
//!   and notifications alike, so the order in which they are enqueued is the
//!   order they reach the peer: the coherence protocol relies on per-link
//!   FIFO) and writes whatever is queued in batches with one `writev`;
//! * the **reader** decodes each frame's [`Head`], hands replies to the
//!   waiting callers, and passes the peer's calls and notifications to the
//!   application through a bounded channel (when the application falls
//!   behind, the reader stops reading and TCP pushes back on the peer).
//!
//! Every wait is bounded: a call without answer fails with
//! [`Error::Timeout`] after its timeout and frees its slot; when the
//! connection ends, every pending call fails at once with
//! [`Error::Closed`]. A frame that cannot be decoded (bad length, too large,
//! undecodable header or body) ends *that* connection with a `warn!`
//! naming the peer and the reason; nothing panics.
//!
//! The outgoing queue does not block [`RpcHandle::notify`], but it is
//! bounded ([`MAX_QUEUED_FRAMES`], [`MAX_QUEUED_BYTES`]): past that a
//! notification or call fails with [`Error::Backlog`] instead of growing
//! memory without limit behind a peer that stopped reading. Replies are
//! bounded another way: while a quarter of those limits is queued
//! ([`PAUSE_CALLS_FRAMES`], [`PAUSE_CALLS_BYTES`]), the reader takes no
//! new call from the peer, so a peer that sends calls without reading the
//! answers is pushed back by TCP instead of filling the queue. A writer
//! that cannot send anything for [`WRITE_STALL_FACTOR`] times the default
//! timeout (the peer stopped reading altogether) closes the connection,
//! with a `warn!`.
//!
//! The connection lives while the application holds an [`RpcHandle`] (any
//! clone), the receiver of incoming messages, or an unanswered [`Replier`].
//! When all are gone, queued frames are still written, then the connection
//! is closed. [`RpcHandle::close`] closes it at once.
//!
//! Do not wait for a call's answer inside the loop that drains the incoming
//! receiver of the same connection without bounding it: while that loop
//! waits, a full incoming channel stops the reader, and with it the reply.
//!
//! A message's payload may be larger than one frame: [`rpc()`] accepts
//! messages up to `MAX_FRAME` on the wire, [`rpc_with`] up to a limit the
//! application chooses (the node links: a whole segment-mode segment).
//! The writer cuts a payload larger than [`CHUNK`] into parts and the
//! reader puts them back together, refusing more than the limit
//! ([`crate::chunk`] describes the format and the checks). The writer bounds
//! each write of about one chunk by the write-stall time (not the whole
//! message), so a large message on a slow link is not mistaken for a peer
//! that stopped reading; between two parts, the reader waits at most that
//! bound too. Such a link may queue its largest message on top of the
//! usual backlog bound ([`MAX_QUEUED_BYTES`]).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use dipc_wire::{Frame, FrameError, MAX_FRAME};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::Error;
use crate::chunk::{self, CHUNK, Reassembly};
use crate::conn::{MAX_BATCH, PeerInfo};
use crate::transport::{FrameSink, FrameSource, Transport};

/// The envelope in front of every message: a frame's header is
/// `postcard(Head)` followed by `postcard(body)`; the payload stays raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Head {
    /// A call that expects exactly one [`Head::Reply`] with the same id.
    Call(u64),
    /// The answer to the call with this id.
    Reply(u64),
    /// A one-way message.
    Notify,
    /// A piece of the payload of the next message that is not a part (see
    /// [`crate::chunk`]): bytes `offset..offset + len` of `total`.
    Part { total: u64, offset: u64 },
}

/// Capacity of the channel of incoming calls and notifications.
pub const INCOMING_CAPACITY: usize = 256;
/// Most frames waiting in the outgoing queue of one connection.
pub const MAX_QUEUED_FRAMES: usize = 65_536;
/// Most bytes waiting in the outgoing queue of one connection (a single
/// frame larger than this is still accepted into an empty queue). A link
/// of [`rpc_with`] whose messages may exceed `MAX_FRAME` allows that excess
/// on top, so that one of its largest messages being written never makes
/// the small ones behind it fail.
pub const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
/// While this many frames are queued, the peer's next call is not read.
pub const PAUSE_CALLS_FRAMES: usize = MAX_QUEUED_FRAMES / 4;
/// While this many bytes are queued, the peer's next call is not read.
pub const PAUSE_CALLS_BYTES: usize = MAX_QUEUED_BYTES / 4;
/// A batch that cannot be sent within this many default timeouts closes
/// the connection (at least [`MIN_WRITE_STALL`]).
pub const WRITE_STALL_FACTOR: u32 = 3;
/// The least write-stall bound, whatever the default timeout.
pub const MIN_WRITE_STALL: Duration = Duration::from_secs(5);

/// A call or notification from the peer.
#[derive(Debug)]
pub enum Incoming<Req, Ev> {
    /// Answer with `reply.send(resp, payload)`; a dropped `Replier` leaves
    /// the caller to its timeout.
    Call {
        req: Req,
        payload: Bytes,
        reply: Replier,
    },
    Notify {
        ev: Ev,
        payload: Bytes,
    },
}

/// What the reader, the writer, handles and repliers of one connection
/// share (everything that does not depend on the message types).
#[derive(Debug)]
struct Link {
    peer: PeerInfo,
    label: String,
    token: CancellationToken,
    next_id: AtomicU64,
    queued_frames: AtomicUsize,
    queued_bytes: AtomicUsize,
    /// Woken after every batch the writer sent.
    drained: Notify,
    /// Largest message (header and payload, on the wire) sent or accepted.
    max_message: usize,
    /// [`MAX_QUEUED_BYTES`] plus what `max_message` exceeds a frame by.
    max_queued_bytes: usize,
    /// How long one write may take, and the reader may wait between two
    /// parts of a message.
    stall: Duration,
}

impl Link {
    /// Put `frame` on the outgoing queue. `bounded` applies the backlog
    /// limits (replies skip them: their number is bounded by the calls the
    /// application accepted).
    fn enqueue(
        &self,
        queue: &mpsc::UnboundedSender<Frame>,
        frame: Frame,
        bounded: bool,
    ) -> Result<(), Error> {
        if self.token.is_cancelled() {
            return Err(self.closed());
        }
        let len = frame.wire_len();
        let frames = self.queued_frames.fetch_add(1, Ordering::Relaxed);
        let bytes = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if bounded
            && (frames >= MAX_QUEUED_FRAMES || (bytes > 0 && bytes + len > self.max_queued_bytes))
        {
            self.dequeued(1, len);
            return Err(Error::Backlog {
                peer: self.label.clone(),
                frames,
                bytes,
            });
        }
        queue.send(frame).map_err(|_| {
            self.dequeued(1, len);
            self.closed()
        })
    }

    fn dequeued(&self, frames: usize, bytes: usize) {
        self.queued_frames.fetch_sub(frames, Ordering::Relaxed);
        self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Is so much queued that the peer's calls must wait?
    fn calls_paused(&self) -> bool {
        self.queued_frames.load(Ordering::Relaxed) >= PAUSE_CALLS_FRAMES
            || self.queued_bytes.load(Ordering::Relaxed) >= PAUSE_CALLS_BYTES
    }

    /// Wait until the queue is below the pause limits; `false` if the
    /// connection closed meanwhile.
    async fn room_for_calls(&self) -> bool {
        loop {
            // Registered before the check, so a batch sent in between
            // still wakes us.
            let drained = self.drained.notified();
            if !self.calls_paused() {
                return true;
            }
            tokio::select! {
                biased;
                _ = self.token.cancelled() => return false,
                _ = drained => {}
            }
        }
    }

    fn closed(&self) -> Error {
        Error::Closed {
            peer: self.label.clone(),
        }
    }
}

type Slot<Resp> = oneshot::Sender<Result<(Resp, Bytes), Error>>;

/// Calls waiting for their reply; `None` once the connection is closed, so
/// that no call can start waiting after the last drain.
struct Pending<Resp>(Mutex<Option<HashMap<u64, Slot<Resp>>>>);

impl<Resp> Pending<Resp> {
    fn with<T>(&self, f: impl FnOnce(&mut Option<HashMap<u64, Slot<Resp>>>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn remove(&self, id: u64) -> Option<Slot<Resp>> {
        self.with(|p| p.as_mut().and_then(|m| m.remove(&id)))
    }

    /// Close: fail every waiting call with `Closed`.
    fn drain(&self, link: &Link) {
        if let Some(map) = self.with(Option::take) {
            for (_, slot) in map {
                // The caller may have given up already; nothing to do then.
                let _ = slot.send(Err(link.closed()));
            }
        }
    }
}

/// Removes a call's slot however the call ends (answer, timeout, error, or
/// the caller's future being dropped).
struct SlotGuard<'a, Resp> {
    pending: &'a Pending<Resp>,
    id: u64,
}

impl<Resp> Drop for SlotGuard<'_, Resp> {
    fn drop(&mut self) {
        self.pending.remove(self.id);
    }
}

/// Encode `postcard(head) ++ postcard(body)` as a frame header, refusing a
/// message larger than the link's limit, or whose header leaves no room
/// for a chunk in its frame.
fn encode<T: Serialize>(link: &Link, head: Head, body: &T, payload: Bytes) -> Result<Frame, Error> {
    let mut v = dipc_wire::encode(&head);
    v = postcard::to_extend(body, v)
        .map_err(|e| FrameError::Decode(format!("cannot encode message: {e}")))?;
    let frame = Frame {
        header: Bytes::from(v),
        payload,
    };
    let (len, max) = (frame.wire_len(), link.max_message);
    if len > max {
        return Err(FrameError::TooLarge { len, max }.into());
    }
    let piece = chunk::largest_piece(&frame);
    if piece > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len: piece,
            max: MAX_FRAME,
        }
        .into());
    }
    Ok(frame)
}

/// The means to answer one incoming call.
#[derive(Debug)]
pub struct Replier {
    id: u64,
    queue: mpsc::UnboundedSender<Frame>,
    link: Arc<Link>,
}

impl Replier {
    /// Send the answer (queued behind everything enqueued before it). If
    /// the connection is gone, or `resp` cannot be encoded or is too large,
    /// the caller gets no answer and runs into its timeout; this is logged.
    pub fn send<Resp: Serialize>(self, resp: &Resp, payload: Bytes) {
        let sent = encode(&self.link, Head::Reply(self.id), resp, payload)
            .and_then(|frame| self.link.enqueue(&self.queue, frame, false));
        match sent {
            Ok(()) => {}
            // The connection went away while the call was being served.
            Err(e @ Error::Closed { .. }) => {
                debug!(peer = %self.link.label, id = self.id, error = %e, "reply not sent")
            }
            Err(e) => warn!(peer = %self.link.label, id = self.id, error = %e, "reply not sent"),
        }
    }
}

/// The application's side of an RPC connection. Cheap to clone.
pub struct RpcHandle<Req, Resp, Ev> {
    link: Arc<Link>,
    pending: Arc<Pending<Resp>>,
    queue: mpsc::UnboundedSender<Frame>,
    default_timeout: Duration,
    _types: PhantomData<fn(Req, Ev)>,
}

impl<Req, Resp, Ev> Clone for RpcHandle<Req, Resp, Ev> {
    fn clone(&self) -> Self {
        RpcHandle {
            link: self.link.clone(),
            pending: self.pending.clone(),
            queue: self.queue.clone(),
            default_timeout: self.default_timeout,
            _types: PhantomData,
        }
    }
}

impl<Req, Resp, Ev> std::fmt::Debug for RpcHandle<Req, Resp, Ev> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcHandle")
            .field("peer", &self.link.peer)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<Req: Serialize, Resp: DeserializeOwned, Ev: Serialize> RpcHandle<Req, Resp, Ev> {
    /// Call with the default timeout and no payload.
    pub async fn call(&self, req: &Req) -> Result<Resp, Error> {
        self.call_payload(req, Bytes::new(), self.default_timeout)
            .await
            .map(|(resp, _)| resp)
    }

    /// Call with a payload; the answer's payload comes back with it. Fails
    /// with `Timeout` after `timeout`, or `Closed` as soon as the connection
    /// ends.
    pub async fn call_payload(
        &self,
        req: &Req,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<(Resp, Bytes), Error> {
        let id = self.link.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode(&self.link, Head::Call(id), req, payload)?;
        let (tx, rx) = oneshot::channel();
        let inserted = self.pending.with(|p| match p {
            Some(map) => {
                map.insert(id, tx);
                true
            }
            None => false,
        });
        if !inserted {
            return Err(self.link.closed());
        }
        let _guard = SlotGuard {
            pending: &self.pending,
            id,
        };
        self.link.enqueue(&self.queue, frame, true)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(self.link.closed()),
            Err(_) => Err(Error::Timeout {
                what: format!("call to {}", self.link.label),
                after: timeout,
            }),
        }
    }

    /// Queue a one-way message (never blocks; FIFO with calls and replies
    /// sent on this connection). Fails with `Closed` or `Backlog`.
    pub fn notify(&self, ev: &Ev, payload: Bytes) -> Result<(), Error> {
        let frame = encode(&self.link, Head::Notify, ev, payload)?;
        self.link.enqueue(&self.queue, frame, true)
    }
}

impl<Req, Resp, Ev> RpcHandle<Req, Resp, Ev> {
    /// Is the connection gone?
    pub fn is_closed(&self) -> bool {
        self.link.token.is_cancelled()
    }

    /// The authenticated peer.
    pub fn peer(&self) -> &PeerInfo {
        &self.link.peer
    }

    /// Resolves when the connection is gone.
    pub async fn closed(&self) {
        self.link.token.cancelled().await
    }

    /// Close the connection now: pending calls fail with `Closed`, queued
    /// frames are dropped.
    pub fn close(&self) {
        self.link.token.cancel();
    }
}

/// Start RPC on `conn` (a TCP [`Conn`](crate::Conn), or any other
/// [`Transport`]): spawns the reader and writer tasks on the current tokio
/// runtime (panics outside one, like `tokio::spawn`). The peer's calls and
/// notifications arrive on the returned receiver; it yields `None` once the
/// connection is closed. Messages are at most `MAX_FRAME` bytes.
pub fn rpc<Req, Resp, Ev>(
    conn: impl Transport,
    default_timeout: Duration,
) -> (RpcHandle<Req, Resp, Ev>, mpsc::Receiver<Incoming<Req, Ev>>)
where
    Req: DeserializeOwned + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
    Ev: DeserializeOwned + Send + 'static,
{
    rpc_with(conn, default_timeout, MAX_FRAME)
}

/// [`rpc()`] with messages of up to `max_message` bytes (header and
/// payload) each way: larger ones are refused before sending, and a peer
/// announcing one loses the connection. Both ends should use the same
/// limit. The reader buffers at most one message of that size.
pub fn rpc_with<Req, Resp, Ev>(
    conn: impl Transport,
    default_timeout: Duration,
    max_message: usize,
) -> (RpcHandle<Req, Resp, Ev>, mpsc::Receiver<Incoming<Req, Ev>>)
where
    Req: DeserializeOwned + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
    Ev: DeserializeOwned + Send + 'static,
{
    let (wr, rd, peer) = conn.split();
    let stall = (default_timeout * WRITE_STALL_FACTOR).max(MIN_WRITE_STALL);
    let link = Arc::new(Link {
        label: peer.to_string(),
        peer,
        token: CancellationToken::new(),
        next_id: AtomicU64::new(1),
        queued_frames: AtomicUsize::new(0),
        queued_bytes: AtomicUsize::new(0),
        drained: Notify::new(),
        max_message,
        max_queued_bytes: MAX_QUEUED_BYTES + max_message.saturating_sub(MAX_FRAME),
        stall,
    });
    let pending = Arc::new(Pending(Mutex::new(Some(HashMap::new()))));
    let (queue, queue_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::channel(INCOMING_CAPACITY);
    tokio::spawn(writer(wr, queue_rx, link.clone()));
    let reader = Reader {
        rd,
        parts: Reassembly::new(max_message),
        link: link.clone(),
        pending: pending.clone(),
        incoming: Some(in_tx),
        queue: Some(queue.clone()),
    };
    tokio::spawn(reader.run());
    let handle = RpcHandle {
        link,
        pending,
        queue,
        default_timeout,
        _types: PhantomData,
    };
    (handle, in_rx)
}

/// Write queued frames in batches until the queue is closed (nobody can
/// send any more) or the connection is closed.
async fn writer(
    mut wr: impl FrameSink,
    mut queue: mpsc::UnboundedReceiver<Frame>,
    link: Arc<Link>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut wire = Vec::with_capacity(MAX_BATCH);
    loop {
        let n = tokio::select! {
            biased;
            _ = link.token.cancelled() => break,
            n = queue.recv_many(&mut batch, MAX_BATCH) => n,
        };
        if n == 0 {
            debug!(peer = %link.label, "connection no longer used; closing");
            wr.shutdown().await;
            break;
        }
        let bytes: usize = batch.iter().map(Frame::wire_len).sum();
        for frame in batch.drain(..) {
            chunk::split(frame, &mut wire);
        }
        let res = send_all(&mut wr, &mut wire, &link).await;
        wire.clear();
        link.dequeued(n, bytes);
        link.drained.notify_waiters();
        match res {
            Ok(()) => {}
            Err(None) => break,
            Err(Some(e)) => {
                warn!(peer = %link.label, "{e}; closing connection");
                break;
            }
        }
    }
    link.token.cancel();
}

/// Send `frames` in order, in writes of at most [`MAX_BATCH`] frames and
/// about [`CHUNK`] bytes, each bounded by the link's write-stall time.
/// `Err(None)`: the connection was closed meanwhile.
async fn send_all(
    wr: &mut impl FrameSink,
    frames: &mut Vec<Frame>,
    link: &Link,
) -> Result<(), Option<String>> {
    let mut group = Vec::with_capacity(frames.len().min(MAX_BATCH));
    let mut rest = frames.drain(..).peekable();
    while rest.peek().is_some() {
        let mut bytes = 0;
        while let Some(f) = rest.next_if(|_| group.len() < MAX_BATCH && bytes < CHUNK) {
            bytes += f.wire_len();
            group.push(f);
        }
        let n = group.len();
        let res = tokio::select! {
            biased;
            _ = link.token.cancelled() => return Err(None),
            r = tokio::time::timeout(link.stall, wr.send_batch(&mut group)) => r,
        };
        group.clear();
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Some(format!("send failed: {e}"))),
            Err(_) => {
                return Err(Some(format!(
                    "the peer stopped reading: {n} frames ({bytes} bytes) not sent within {:?}",
                    link.stall
                )));
            }
        }
    }
    Ok(())
}

/// The reading half and what it needs to dispatch frames.
struct Reader<S, Req, Resp, Ev> {
    rd: S,
    /// The message being received in parts, if any.
    parts: Reassembly,
    link: Arc<Link>,
    pending: Arc<Pending<Resp>>,
    /// `None` once the application dropped the receiver.
    incoming: Option<mpsc::Sender<Incoming<Req, Ev>>>,
    /// Keeps the writer alive while the application can still receive
    /// calls (and so answer them).
    queue: Option<mpsc::UnboundedSender<Frame>>,
}

impl<S, Req, Resp, Ev> Drop for Reader<S, Req, Resp, Ev> {
    fn drop(&mut self) {
        // However the reader ends (peer closed, bad frame, close(), runtime
        // shutdown), the connection is over: stop the writer and fail every
        // waiting call at once.
        self.link.token.cancel();
        self.pending.drain(&self.link);
    }
}

/// Why the reader stops.
enum Stop {
    /// Closed on purpose or by the peer; nothing to report.
    Quiet,
    /// The peer misbehaved.
    Bad(String),
}

impl<S, Req, Resp, Ev> Reader<S, Req, Resp, Ev>
where
    S: FrameSource,
    Req: DeserializeOwned,
    Resp: DeserializeOwned,
    Ev: DeserializeOwned,
{
    async fn run(mut self) {
        loop {
            let incoming = &self.incoming;
            let app_gone = async move {
                match incoming {
                    Some(tx) => tx.closed().await,
                    None => std::future::pending().await,
                }
            };
            // Between two parts of a message, the rest must come within the
            // write-stall bound.
            let between_parts = self.parts.in_progress();
            let stall = self.link.stall;
            let rd = &mut self.rd;
            let recv = async move {
                match between_parts {
                    None => Some(rd.recv().await),
                    Some(_) => tokio::time::timeout(stall, rd.recv()).await.ok(),
                }
            };
            let read = tokio::select! {
                biased;
                _ = self.link.token.cancelled() => break,
                _ = app_gone => {
                    self.incoming = None;
                    self.queue = None;
                    continue;
                }
                r = recv => r,
            };
            let stop = match (read, between_parts) {
                (Some(Ok(Some(frame))), _) => match self.dispatch(frame).await {
                    Ok(()) => continue,
                    Err(stop) => stop,
                },
                (Some(Ok(None)), None) => {
                    debug!(peer = %self.link.label, "peer closed the connection");
                    Stop::Quiet
                }
                (Some(Ok(None)), Some((got, total))) => Stop::Bad(format!(
                    "connection closed in the middle of a {total}-byte message ({got} bytes of \
                     it received)"
                )),
                (Some(Err(e)), _) => Stop::Bad(e.to_string()),
                (None, progress) => {
                    let (got, total) = progress.unwrap_or_default();
                    Stop::Bad(format!(
                        "no part of a {total}-byte message within {stall:?} ({got} bytes of it \
                         received)"
                    ))
                }
            };
            if let Stop::Bad(reason) = stop {
                warn!(peer = %self.link.label, %reason, "dropping connection");
            }
            break;
        }
    }

    async fn dispatch(&mut self, frame: Frame) -> Result<(), Stop> {
        let (head, body) = postcard::take_from_bytes::<Head>(&frame.header)
            .map_err(|e| Stop::Bad(format!("undecodable frame head: {e}")))?;
        // A message's payload is that of its parts (if any) and its frame.
        match head {
            Head::Part { total, offset } => {
                if !body.is_empty() {
                    return Err(Stop::Bad(format!(
                        "{} trailing bytes after a part head",
                        body.len()
                    )));
                }
                self.parts
                    .part(total, offset, &frame.payload)
                    .map_err(Stop::Bad)
            }
            Head::Reply(id) => {
                let resp: Resp = dipc_wire::decode(body)
                    .map_err(|e| Stop::Bad(format!("undecodable reply {id}: {e}")))?;
                let payload = self.parts.finish(frame.payload).map_err(Stop::Bad)?;
                match self.pending.remove(id) {
                    // The caller may have just given up; fine.
                    Some(slot) => drop(slot.send(Ok((resp, payload)))),
                    None => {
                        debug!(peer = %self.link.label, id, "reply to a call no longer waiting")
                    }
                }
                Ok(())
            }
            Head::Call(id) => {
                let req: Req = dipc_wire::decode(body)
                    .map_err(|e| Stop::Bad(format!("undecodable call {id}: {e}")))?;
                let payload = self.parts.finish(frame.payload).map_err(Stop::Bad)?;
                // The answers of earlier calls are still queued (the peer
                // reads slowly, or not at all): take no more calls until
                // they leave, so the queue stays bounded.
                if !self.link.room_for_calls().await {
                    return Err(Stop::Quiet);
                }
                let Some(queue) = &self.queue else {
                    debug!(peer = %self.link.label, id, "call dropped: nobody receives calls");
                    return Ok(());
                };
                let reply = Replier {
                    id,
                    queue: queue.clone(),
                    link: self.link.clone(),
                };
                self.deliver(Incoming::Call {
                    req,
                    payload,
                    reply,
                })
                .await
            }
            Head::Notify => {
                let ev: Ev = dipc_wire::decode(body)
                    .map_err(|e| Stop::Bad(format!("undecodable notification: {e}")))?;
                let payload = self.parts.finish(frame.payload).map_err(Stop::Bad)?;
                self.deliver(Incoming::Notify { ev, payload }).await
            }
        }
    }

    /// Hand a message to the application, waiting while its channel is full
    /// (which stops reading: backpressure on the peer).
    async fn deliver(&mut self, msg: Incoming<Req, Ev>) -> Result<(), Stop> {
        let Some(tx) = &self.incoming else {
            return Ok(());
        };
        let sent = tokio::select! {
            biased;
            _ = self.link.token.cancelled() => return Err(Stop::Quiet),
            r = tx.send(msg) => r,
        };
        if sent.is_err() {
            self.incoming = None;
            self.queue = None;
        }
        Ok(())
    }
}
