//! What [`rpc()`](crate::rpc()) needs from a connection: a framed,
//! authenticated, ordered, reliable byte pipe to one peer, split into a
//! sending and a receiving half.
//!
//! [`Conn`] (TCP) implements it here; `dipc-transport-rdma`'s `RdmaConn`
//! implements it over verbs queue pairs. Whatever the transport, its
//! failures arrive as this crate's [`Error`] (`Closed`, `Timeout`, `Io`,
//! `Protocol`, ...), so callers of `rpc()` see the same clear errors.

use std::future::Future;

use bytes::BytesMut;
use dipc_wire::{Frame, MAX_FRAME};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::either::Either;

use crate::Error;
use crate::conn::{Conn, PeerInfo, Stream, read_frame, write_frames};

/// A connection that can carry [`rpc()`](crate::rpc()).
pub trait Transport: Send + 'static {
    type Sink: FrameSink;
    type Source: FrameSource;

    /// Take the connection apart: the sending half, the receiving half and
    /// the authenticated peer.
    fn split(self) -> (Self::Sink, Self::Source, PeerInfo);
}

/// The sending half: writes frames in order.
pub trait FrameSink: Send + 'static {
    /// Send `frames`, in order, as one batch (the caller clears the vector
    /// afterwards; a sink may also drain it). An error ends the connection.
    fn send_batch(
        &mut self,
        frames: &mut Vec<Frame>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Nothing more will be sent: flush and tell the peer (best effort).
    fn shutdown(&mut self) -> impl Future<Output = ()> + Send;
}

/// The receiving half: frames in the order the peer sent them.
pub trait FrameSource: Send + 'static {
    /// The next frame; `Ok(None)` when the peer closed cleanly between
    /// frames. An error ends the connection.
    fn recv(&mut self) -> impl Future<Output = Result<Option<Frame>, Error>> + Send;
}

/// The writing half of a TCP [`Conn`].
pub struct TcpSink {
    wr: WriteHalf,
    label: String,
}

/// The reading half of a TCP [`Conn`].
pub struct TcpSource {
    rd: ReadHalf,
    buf: BytesMut,
    label: String,
}

impl std::fmt::Debug for TcpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpSink")
            .field("peer", &self.label)
            .finish()
    }
}

impl std::fmt::Debug for TcpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpSource")
            .field("peer", &self.label)
            .finish()
    }
}

type TlsStream = tokio_rustls::TlsStream<tokio::net::TcpStream>;

/// Plain TCP splits into independent halves (`Left`); TLS (one session
/// state for both directions) through tokio's lock (`Right`).
type WriteHalf = Either<OwnedWriteHalf, tokio::io::WriteHalf<TlsStream>>;
type ReadHalf = Either<OwnedReadHalf, tokio::io::ReadHalf<TlsStream>>;

impl Transport for Conn {
    type Sink = TcpSink;
    type Source = TcpSource;

    fn split(self) -> (TcpSink, TcpSource, PeerInfo) {
        let Conn { stream, rbuf, peer } = self;
        let (rd, wr) = match stream {
            Stream::Left(s) => {
                let (rd, wr) = s.into_split();
                (Either::Left(rd), Either::Left(wr))
            }
            Stream::Right(s) => {
                let (rd, wr) = tokio::io::split(*s);
                (Either::Right(rd), Either::Right(wr))
            }
        };
        let label = peer.to_string();
        (
            TcpSink {
                wr,
                label: label.clone(),
            },
            TcpSource {
                rd,
                buf: rbuf,
                label,
            },
            peer,
        )
    }
}

impl FrameSink for TcpSink {
    /// All frames of the batch go out with `writev` (several per call).
    async fn send_batch(&mut self, frames: &mut Vec<Frame>) -> Result<(), Error> {
        write_frames(&mut self.wr, frames)
            .await
            .map_err(|e| Error::io(format!("send to {}", self.label), e))
    }

    async fn shutdown(&mut self) {
        let _ = self.wr.shutdown().await;
    }
}

impl FrameSource for TcpSource {
    async fn recv(&mut self) -> Result<Option<Frame>, Error> {
        read_frame(&mut self.rd, &mut self.buf, MAX_FRAME)
            .await
            .map_err(|e| e.into_error(&self.label))
    }
}
