//! Framed, authenticated TCP connections.
//!
//! [`Conn`] is a `TcpStream` (with `TCP_NODELAY`, since every message is a
//! small request or a page someone is waiting for), TLS over it when
//! [`Auth::tls`] is set ([`crate::tls`]), plus a read buffer. It
//! only exists after the handshake of [`crate::auth`] succeeded, so holding
//! a `Conn` means the peer knows the cluster secret.
//!
//! The hot path is page data, so neither direction copies a payload:
//!
//! * sending writes the frame prefix and header from a small buffer and the
//!   payload from its own `Bytes` in one vectored write (`write_frames`
//!   also batches several queued frames into one `writev`);
//! * receiving reads into one reusable `BytesMut` and hands out the header
//!   and payload as `split_to().freeze()` views of it.
//!
//! A length above [`MAX_FRAME`], a header length beyond its frame, or a
//! connection that ends in the middle of a frame is an error: framing is
//! lost, and the caller must drop the connection.
//!
//! A peer that vanishes without a word (killed machine, cut cable,
//! partition) would leave a TCP connection open for many minutes. Every
//! `Conn` therefore has a dead-peer bound of [`DEAD_PEER_FACTOR`] times its
//! handshake timeout (the node's call timeout): `TCP_USER_TIMEOUT` ends the
//! connection when data stays unacknowledged that long, and keepalive
//! probes (idle and interval a quarter of it, 3 probes) end an idle one.
//! Pending calls then fail with `Closed` instead of waiting forever.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dipc_wire::{Frame, FrameError, MAX_FRAME};
use nix::sys::socket::{setsockopt, sockopt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::either::Either;
use tracing::debug;

use crate::auth::{self, Auth};
use crate::{Backoff, Error, tls};

/// What a peer said it is in the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A node daemon (or, as seen by a client, the accepting side: a
    /// referee or a node).
    Node,
    /// A short-lived client such as the `dipc` command line.
    Client,
}

/// The authenticated peer of a connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The name the peer gave in the handshake.
    pub name: String,
    /// The role the peer claimed (the accepting side is always reported as
    /// [`Role::Node`]).
    pub role: Role,
    pub addr: SocketAddr,
}

impl std::fmt::Display for PeerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name.is_empty() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{:?} at {}", self.name, self.addr)
        }
    }
}

/// Bytes kept free at the end of the read buffer before each read, so that
/// small frames do not cost one allocation each.
const READ_CHUNK: usize = 64 * 1024;

/// The byte stream under a [`Conn`]: plain TCP (`Left`), or TLS over TCP
/// (`Right`, [`crate::tls`]). tokio-util's `Either` forwards every
/// `AsyncRead`/`AsyncWrite` call (vectored writes included) to the side in
/// use.
pub(crate) type Stream = Either<TcpStream, Box<tokio_rustls::TlsStream<TcpStream>>>;

/// An authenticated, framed connection.
pub struct Conn {
    pub(crate) stream: Stream,
    pub(crate) rbuf: BytesMut,
    pub(crate) peer: PeerInfo,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.peer)
            .field("tls", &self.is_tls())
            .finish()
    }
}

/// A connection is dead when the peer acknowledged nothing for this many
/// handshake timeouts.
pub const DEAD_PEER_FACTOR: u32 = 3;

/// Make the kernel end `stream` once its peer has acknowledged nothing for
/// `DEAD_PEER_FACTOR * timeout` (at least 2 s): `TCP_USER_TIMEOUT` for
/// unacknowledged data, keepalive probes for an idle connection.
fn bound_dead_peer(stream: &TcpStream, timeout: Duration) -> Result<(), Error> {
    let bound = (timeout * DEAD_PEER_FACTOR).max(Duration::from_secs(2));
    let ms = u32::try_from(bound.as_millis()).unwrap_or(u32::MAX);
    let probe_every = u32::try_from(bound.as_secs().div_ceil(4).max(1)).unwrap_or(u32::MAX);
    let set = || -> nix::Result<()> {
        setsockopt(stream, sockopt::TcpUserTimeout, &ms)?;
        setsockopt(stream, sockopt::KeepAlive, &true)?;
        setsockopt(stream, sockopt::TcpKeepIdle, &probe_every)?;
        setsockopt(stream, sockopt::TcpKeepInterval, &probe_every)?;
        setsockopt(stream, sockopt::TcpKeepCount, &3)
    };
    set().map_err(|e| Error::io("bound the dead-peer time of a connection", e.into()))
}

impl Conn {
    /// Connect to `addr` (`host:port`) and authenticate as `auth.name` with
    /// `role`. Connecting and the whole handshake are bounded by `timeout`;
    /// the connection is ended by the kernel when the peer acknowledges
    /// nothing for `DEAD_PEER_FACTOR * timeout`.
    pub async fn connect(
        addr: &str,
        auth: &Auth,
        role: Role,
        timeout: Duration,
    ) -> Result<(Conn, PeerInfo), Error> {
        let fut = async {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| Error::io(format!("connect to {addr}"), e))?;
            let peer_addr = stream
                .peer_addr()
                .map_err(|e| Error::io(format!("connect to {addr}"), e))?;
            stream
                .set_nodelay(true)
                .map_err(|e| Error::io(format!("set TCP_NODELAY on {peer_addr}"), e))?;
            bound_dead_peer(&stream, timeout)?;
            let stream = match &auth.tls {
                Some(tls) => tls::connect(tls, addr, stream).await?,
                None => Stream::Left(stream),
            };
            auth::client(Conn::raw(stream, peer_addr), auth, role)
                .await
                .map_err(|e| tls::explain(e, addr))
        };
        let (conn, peer) =
            tokio::time::timeout(timeout, fut)
                .await
                .map_err(|_| Error::Timeout {
                    what: format!("connecting to {addr} and authenticating"),
                    after: timeout,
                })??;
        Ok((conn, peer))
    }

    /// [`Conn::connect`] until it works: each attempt is bounded by
    /// `attempt_timeout`, attempts are spaced by `backoff` (reset on
    /// success), and after `give_up_after` the last error is returned. A
    /// refusal ([`Error::is_refusal`]: wrong cluster, secret or version) is
    /// returned at once, since retrying cannot fix it.
    pub async fn connect_with_backoff(
        addr: &str,
        auth: &Auth,
        role: Role,
        attempt_timeout: Duration,
        backoff: &mut Backoff,
        give_up_after: Duration,
    ) -> Result<(Conn, PeerInfo), Error> {
        let deadline = Instant::now() + give_up_after;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let bound = attempt_timeout.min(left).max(Duration::from_millis(1));
            match Conn::connect(addr, auth, role, bound).await {
                Ok(ok) => {
                    backoff.reset();
                    return Ok(ok);
                }
                Err(e) if e.is_refusal() => return Err(e),
                Err(e) => {
                    let delay = backoff.next_delay();
                    if Instant::now() + delay >= deadline {
                        return Err(e);
                    }
                    debug!(%addr, error = %e, ?delay, "connect failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Authenticate a freshly accepted `stream`; bounded by `timeout`. Run
    /// it in the connection's own task, so that a slow or silent client
    /// does not hold up the accept loop. The dead-peer bound is as for
    /// [`Conn::connect`].
    pub async fn accept(
        stream: TcpStream,
        auth: &Auth,
        timeout: Duration,
    ) -> Result<(Conn, PeerInfo), Error> {
        let peer_addr = stream
            .peer_addr()
            .map_err(|e| Error::io("accepted connection", e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| Error::io(format!("set TCP_NODELAY on {peer_addr}"), e))?;
        bound_dead_peer(&stream, timeout)?;
        let label = peer_addr.to_string();
        let fut = async {
            match tls::accept(auth.tls.as_deref(), stream, &label).await? {
                tls::Accepted::Ready(s) => auth::server(Conn::raw(s, peer_addr), auth)
                    .await
                    .map_err(|e| tls::explain(e, &label)),
                tls::Accepted::Plaintext(s) => {
                    Err(auth::refuse_plaintext(Conn::raw(Stream::Left(s), peer_addr), auth).await)
                }
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("handshake with {peer_addr}"),
                after: timeout,
            })?
    }

    /// Is this connection TLS ([`Auth::tls`](crate::Auth::tls))?
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Right(_))
    }

    /// A connection before the handshake; the peer is only an address.
    pub(crate) fn raw(stream: Stream, addr: SocketAddr) -> Conn {
        Conn {
            stream,
            rbuf: BytesMut::new(),
            peer: PeerInfo {
                name: String::new(),
                role: Role::Node,
                addr,
            },
        }
    }

    /// Send one frame (prefix and header from a small buffer, payload from
    /// its own memory, one vectored write).
    pub async fn send(&mut self, frame: &Frame) -> Result<(), Error> {
        check_len(frame)?;
        write_frames(&mut self.stream, std::slice::from_ref(frame))
            .await
            .map_err(|e| Error::io(format!("send to {}", self.peer), e))
    }

    /// Receive one frame. `Ok(None)` when the peer closed the connection
    /// cleanly (between frames).
    pub async fn recv(&mut self) -> Result<Option<Frame>, Error> {
        self.recv_max(MAX_FRAME).await
    }

    /// [`Conn::recv`] with a smaller size limit (the handshake uses one, so
    /// an unauthenticated peer cannot make us reserve 16 MiB).
    pub(crate) async fn recv_max(&mut self, max: usize) -> Result<Option<Frame>, Error> {
        read_frame(&mut self.stream, &mut self.rbuf, max)
            .await
            .map_err(|e| e.into_error(&self.peer.to_string()))
    }

    /// The authenticated peer.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// Take the connection apart: the socket, bytes already read but not yet
    /// decoded, and the peer. For tests that need to misbehave after an
    /// honest handshake, and for protocols that take over the socket.
    ///
    /// A TLS connection leaves TLS here: what follows on the socket is raw
    /// TCP (RDMA's control connection carries only a goodbye byte and the
    /// end of the stream after its setup). Data TLS already decrypted is
    /// returned with the read bytes; call this only when the peer sends
    /// nothing more over TLS.
    pub fn into_parts(self) -> (TcpStream, BytesMut, PeerInfo) {
        let Conn {
            stream,
            mut rbuf,
            peer,
        } = self;
        let tcp = match stream {
            Stream::Left(s) => s,
            Stream::Right(s) => {
                let (tcp, mut session) = match *s {
                    tokio_rustls::TlsStream::Client(c) => {
                        let (tcp, conn) = c.into_inner();
                        (tcp, rustls::Connection::Client(conn))
                    }
                    tokio_rustls::TlsStream::Server(c) => {
                        let (tcp, conn) = c.into_inner();
                        (tcp, rustls::Connection::Server(conn))
                    }
                };
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = std::io::Read::read(&mut session.reader(), &mut chunk) {
                    rbuf.extend_from_slice(&chunk[..n]);
                }
                tcp
            }
        };
        (tcp, rbuf, peer)
    }
}

/// Refuse to send a frame the peer would reject as oversized (or whose
/// lengths do not fit the `u32` fields).
pub(crate) fn check_len(frame: &Frame) -> Result<(), FrameError> {
    let len = frame.wire_len();
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    Ok(())
}

/// Most frames written by one `writev` (each frame is at most three
/// slices; Linux accepts 1024).
pub(crate) const MAX_BATCH: usize = 256;

/// Headers up to this size are gathered with the prefixes in one small
/// buffer; longer ones (a message text) are written from their own memory.
const GATHER_HEADER: usize = 512;

/// Write `frames` back to back with vectored writes. Prefixes and headers
/// of consecutive frames are gathered in one small buffer; payloads are
/// written from their own memory.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &[Frame],
) -> std::io::Result<()> {
    let small = |f: &Frame| f.header.len() <= GATHER_HEADER;
    let heads: usize = frames
        .iter()
        .map(|f| 8 + if small(f) { f.header.len() } else { 0 })
        .sum();
    let mut scratch = BytesMut::with_capacity(heads);
    let mut segs: Vec<Bytes> = Vec::with_capacity(3 * frames.len());
    for f in frames {
        // The lengths were checked against MAX_FRAME (< 4 GiB) on enqueue.
        scratch.extend_from_slice(&((4 + f.header.len() + f.payload.len()) as u32).to_le_bytes());
        scratch.extend_from_slice(&(f.header.len() as u32).to_le_bytes());
        if small(f) {
            scratch.extend_from_slice(&f.header);
        } else {
            // A header carrying a message text: sent from its own memory.
            segs.push(scratch.split().freeze());
            segs.push(f.header.clone());
        }
        if !f.payload.is_empty() {
            segs.push(scratch.split().freeze());
            segs.push(f.payload.clone());
        }
    }
    if !scratch.is_empty() {
        segs.push(scratch.freeze());
    }
    let mut slices: Vec<IoSlice<'_>> = segs.iter().map(|b| IoSlice::new(b)).collect();
    let mut bufs = &mut slices[..];
    while !bufs.is_empty() {
        let n = w.write_vectored(bufs).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    // TLS may keep the last records buffered until flushed (a no-op on
    // plain TCP).
    w.flush().await
}

/// Why reading a frame failed, before we know how to name the peer.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(std::io::Error),
    Frame(FrameError),
    /// The peer closed with this many bytes of an unfinished frame.
    Truncated(usize),
}

impl ReadError {
    pub(crate) fn into_error(self, peer: &str) -> Error {
        match self {
            ReadError::Io(e) => Error::io(format!("receive from {peer}"), e),
            ReadError::Frame(e) => Error::Frame(e),
            ReadError::Truncated(n) => Error::Protocol {
                peer: peer.to_string(),
                reason: format!(
                    "connection closed in the middle of a frame ({n} bytes of it read)"
                ),
            },
        }
    }
}

/// Read one frame from `r` into `buf` (which keeps bytes of the next frames
/// between calls). `Ok(None)` on a clean end of stream.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Frame>, ReadError> {
    loop {
        if let Some(frame) = Frame::decode_from(buf, max).map_err(ReadError::Frame)? {
            return Ok(Some(frame));
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 16 {
            buf.reserve(READ_CHUNK);
        }
        let n = match r.read_buf(buf).await {
            Ok(n) => n,
            // TLS reports a peer that closed without close_notify (a
            // process that exited) this way; between frames that is a
            // clean close like plain TCP's, in a frame still a truncation.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(ReadError::Io(e)),
        };
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ReadError::Truncated(buf.len()))
            };
        }
    }
}
