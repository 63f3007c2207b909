//! The local API server: the Unix socket libsysv talks to.
//!
//! One connection per application process (libsysv keeps it open for the
//! life of the process, so its closing tells us the process is gone). The
//! process is identified by its `SO_PEERCRED` pid; each request is checked
//! with the uid/gid the kernel attached to its bytes (`SO_PASSCRED`:
//! libsysv sends its effective ids as `SCM_CREDENTIALS` with every
//! request, and the kernel refuses ids the process could not take), so a
//! process that drops privileges after connecting is seen at its next call.
//! Nothing in the message itself names its caller.
//! Frames are `dipc_wire::Frame`s; file descriptors (memfd, userfaultfd)
//! travel as `SCM_RIGHTS` with the first byte of a frame. Requests on one
//! connection are answered strictly in order.
//!
//! # Who may connect: mode 0666, checks per request
//!
//! The socket file is mode 0666, in a directory the daemon creates 0755
//! (so only its owner can replace the socket), and every request is checked
//! against the caller's credentials of the moment exactly as the kernel
//! checks System V IPC (`ipcperms`: mode bits against uid/gid, owner or
//! creator for `IPC_SET`/`IPC_RMID`, uid 0 for anything). We chose this
//! over a 0660 socket restricted to a group because System V IPC itself is
//! open to every local user: a program that runs unchanged with kernel IPC
//! must run unchanged with dipc, whoever runs it, and a socket a user cannot
//! open would silently send that user's `IPC_DIPC` calls to the local kernel
//! (libsysv's short circuit) instead of failing like the kernel would. What
//! the socket gives a local user is therefore exactly what the kernel gives:
//! objects whose mode allows it. Nothing in a request names its caller.
//!
//! Binding never deletes anything but a stale socket: a live daemon on the
//! path is an error, and so is a path that holds something other than a
//! socket (a mistyped `--socket` must not remove a file).
//!
//! # Bad input
//!
//! A connection whose input is malformed (bad frame length, undecodable
//! request, a frame cut short by the end of the connection, a first
//! message that is not a `Hello` of our version) is closed with a `warn!`
//! naming the pid and the reason; other connections never notice. So is a
//! connection that says nothing for [`HELLO_TIMEOUT`] after connecting, or
//! stops in the middle of a frame for as long: a client that holds the
//! daemon's resources must at least be talking. An idle connection
//! between requests is normal (a process with nothing to ask) and stays.
//!
//! # Watch connections
//!
//! A connection whose first frame is `Request::Watch` is a process's watch
//! connection: it is never answered or written to, and is kept until the
//! process closes it (anything it sends closes it, with a `warn!`) or the
//! node drops the process's connections. Its closing is not the process's
//! exit. libsysv learns of its closing by a signal, which an answer on the
//! same connection would also raise.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use dipc_shmem::fdpass;
use dipc_wire::local::{LocalFrame, Request, Response, VERSION};
use dipc_wire::{Frame, errno};
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info, warn};

use crate::Error;
use crate::node::Node;

/// Largest local frame: requests are small; message bodies are at most 64 KiB.
const MAX_LOCAL_FRAME: usize = 1 << 20;

/// Bound on the wait for a new connection's `Hello`, and on the wait for
/// the rest of a frame once its first byte arrived. libsysv sends whole
/// frames at once, so only a stuck or hostile client reaches it.
pub const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Credentials of the process on the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Creds {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// Bind the socket at `path` (replacing a stale one), mode 0666 so any local
/// user's processes can reach the daemon; object permissions are enforced
/// per request with the caller's credentials (see the module doc).
pub fn bind(path: &Path) -> Result<UnixListener, Error> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
    let err = |source| Error::LocalSocket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(err)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket; not replacing it",
            )));
        }
        // A live daemon answers; a stale socket file refuses.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another node daemon is serving this socket",
            )));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    Ok(listener)
}

/// Accept local connections until the listener is dropped.
pub async fn serve(listener: UnixListener, node: Arc<Node>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let node = node.clone();
                tokio::spawn(async move {
                    if let Err(e) = fdpass::set_passcred(stream.as_fd()) {
                        warn!("cannot ask for the credentials of a local connection: {e}");
                        return;
                    }
                    let creds = match stream.peer_cred() {
                        Ok(c) => Creds {
                            pid: c.pid().unwrap_or(0),
                            uid: c.uid(),
                            gid: c.gid(),
                        },
                        Err(e) => {
                            warn!("local connection without credentials: {e}");
                            return;
                        }
                    };
                    let mut conn = LocalConn::new(stream);
                    let kill = node.conn_opened(conn.id, creds.pid);
                    tokio::select! {
                        _ = serve_conn(&mut conn, &node, creds) => {}
                        _ = kill.notified() => {
                            warn!(pid = creds.pid, "closing the local connection of a process (the reason is logged above)");
                        }
                    }
                    if !node.conn_closed(conn.id) {
                        node.process_gone(conn.id, creds);
                    }
                });
            }
            Err(e) => {
                warn!("local accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_conn(conn: &mut LocalConn, node: &Arc<Node>, creds: Creds) {
    // The first frame must be a Hello with our protocol version, soon. A
    // first frame that has started is bounded by `recv`'s own stall timeout
    // (HELLO_TIMEOUT after its first byte); this outer bound is for a client
    // that sends nothing, and is a little longer so that the two never race
    // and a stalled frame is always reported as one.
    let bound = HELLO_TIMEOUT + HELLO_TIMEOUT / 5;
    let first = match tokio::time::timeout(bound, conn.recv()).await {
        Ok(r) => r,
        Err(_) => {
            warn!(
                pid = creds.pid,
                "local client sent no Hello within {bound:?}: closing"
            );
            return;
        }
    };
    match first {
        Ok(Some((frame, _))) => match Request::from_frame(&frame) {
            Ok(Request::Watch { version }) if version == VERSION => {
                node.conn_watches(conn.id);
                debug!(pid = creds.pid, "watch connection opened");
                match conn.recv().await {
                    Ok(None) => {}
                    Ok(Some(_)) => {
                        warn!(pid = creds.pid, "a frame on a watch connection: closing it")
                    }
                    Err(e) => warn!(pid = creds.pid, "bad watch connection: {e}: closing it"),
                }
                return;
            }
            Ok(Request::Watch { version }) => {
                warn!(
                    pid = creds.pid,
                    "local client watches with protocol {version}, this node speaks {VERSION}: closing"
                );
                return;
            }
            Ok(Request::Hello { version }) if version == VERSION => {
                let hello = Response::Hello {
                    version: VERSION,
                    node: node.node_id().unwrap_or(0),
                };
                if conn.send(&hello, None).await.is_err() {
                    return;
                }
            }
            Ok(Request::Hello { version }) => {
                warn!(
                    pid = creds.pid,
                    "local client speaks protocol {version}, this node speaks {VERSION}: closing"
                );
                let _ = conn.send(&Response::Err(errno::EPROTO), None).await;
                return;
            }
            Ok(other) => {
                warn!(
                    pid = creds.pid,
                    "local client did not say Hello first ({other:?}): closing"
                );
                return;
            }
            Err(e) => {
                warn!(pid = creds.pid, "malformed local request: {e}: closing");
                return;
            }
        },
        Ok(None) => return,
        Err(e) => {
            warn!(pid = creds.pid, "bad local connection: {e}: closing");
            return;
        }
    }
    debug!(pid = creds.pid, uid = creds.uid, "local process connected");
    loop {
        let (frame, fds) = match conn.recv().await {
            Ok(Some(x)) => x,
            Ok(None) => return,
            Err(e) => {
                warn!(pid = creds.pid, "local connection closed: {e}");
                return;
            }
        };
        // The process's ids when it sent this request (it may have dropped
        // privileges since it connected).
        let caller = match conn.creds {
            Some(c) => Creds {
                pid: creds.pid,
                uid: c.uid,
                gid: c.gid,
            },
            None => creds,
        };
        let req = match Request::from_frame(&frame) {
            // A cancel that crossed the answer it meant to stop.
            Ok(Request::Cancel) => continue,
            Ok(r) => r,
            Err(e) => {
                warn!(pid = creds.pid, "malformed local request: {e}: closing");
                return;
            }
        };
        // While a request is served, the connection is still read: a
        // `Cancel` (or the connection's end) cancels an operation waiting
        // at a queue or semaphore set (see `crate::ipc`).
        let serving = node.local_request(conn.id, caller, req, fds);
        tokio::pin!(serving);
        let mut open = true;
        let (resp, fd) = loop {
            tokio::select! {
                r = &mut serving => break r,
                next = conn.recv(), if open => {
                    match next.map(|f| f.map(|(frame, _)| Request::from_frame(&frame))) {
                        Ok(Some(Ok(Request::Cancel))) => {}
                        Ok(Some(other)) => {
                            warn!(pid = creds.pid, "local request {other:?} while another is served: closing");
                            open = false;
                        }
                        Ok(None) => open = false,
                        Err(e) => {
                            warn!(pid = creds.pid, "local connection closed while a request is served: {e}");
                            open = false;
                        }
                    }
                    crate::ipc::local_cancel(node, conn.id);
                }
            }
        };
        if !open {
            return;
        }
        if let Err(e) = conn.send(&resp, fd.as_ref().map(|f| f.as_fd())).await {
            info!(pid = creds.pid, "local process went away: {e}");
            return;
        }
    }
}

/// A local connection with fd passing.
pub struct LocalConn {
    stream: UnixStream,
    buf: BytesMut,
    fds: VecDeque<OwnedFd>,
    /// The credentials the last bytes read came with.
    creds: Option<fdpass::Creds>,
    /// Unique per connection (and so per process).
    pub id: u64,
}

/// Bytes still missing of the frame whose start `buf` holds (0 when its
/// length is not known yet). The length was not checked: a bad one is
/// refused by `Frame::decode_from` before this is asked.
fn frame_rest(buf: &[u8]) -> usize {
    match buf.first_chunk::<4>() {
        Some(len) => (4 + u32::from_le_bytes(*len) as usize).saturating_sub(buf.len()),
        None => 0,
    }
}

impl LocalConn {
    fn new(stream: UnixStream) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        LocalConn {
            stream,
            buf: BytesMut::with_capacity(4096),
            fds: VecDeque::new(),
            creds: None,
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Receive one frame and the descriptors that came with it.
    async fn recv(&mut self) -> std::io::Result<Option<(Frame, Vec<OwnedFd>)>> {
        loop {
            match Frame::decode_from(&mut self.buf, MAX_LOCAL_FRAME) {
                Ok(Some(f)) => return Ok(Some((f, self.fds.drain(..).collect()))),
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
            let mut fds = Vec::new();
            let mut creds = None;
            // The rest of a frame whose length is known in one read (a
            // 64 KiB message), else a small one.
            let want = frame_rest(&self.buf).max(4096);
            let mid_frame = !self.buf.is_empty();
            let (stream, buf) = (&self.stream, &mut self.buf);
            let read = stream.async_io(Interest::READABLE, || {
                let (n, c) = fdpass::recv_buf_with_fds_creds(stream.as_fd(), buf, want, &mut fds)?;
                creds = c;
                Ok(n)
            });
            let n = if !mid_frame {
                read.await?
            } else {
                // In the middle of a frame: the rest must follow.
                tokio::time::timeout(HELLO_TIMEOUT, read)
                    .await
                    .map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "stalled for {HELLO_TIMEOUT:?} in the middle of a frame \
                                 ({} bytes of it read)",
                                self.buf.len()
                            ),
                        )
                    })??
            };
            self.fds.extend(fds);
            if creds.is_some() {
                self.creds = creds;
            }
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "truncated frame",
                    ))
                };
            }
        }
    }

    /// Send one response, with `fd` attached to its first byte.
    async fn send(&mut self, resp: &Response, fd: Option<BorrowedFd<'_>>) -> std::io::Result<()> {
        // A message text is the payload, sent from its own memory.
        let frame = resp.frame();
        let head = frame.encode_head();
        let total = head.len() + frame.payload.len();
        let mut off = 0;
        while off < total {
            let attach: &[BorrowedFd<'_>] = match (&fd, off) {
                (Some(f), 0) => std::slice::from_ref(f),
                _ => &[],
            };
            let parts = match head.get(off..) {
                Some(h) if !h.is_empty() => [IoSlice::new(h), IoSlice::new(&frame.payload)],
                _ => [
                    IoSlice::new(&frame.payload[off - head.len()..]),
                    IoSlice::new(&[]),
                ],
            };
            let n = self
                .stream
                .async_io(Interest::WRITABLE, || {
                    fdpass::send_parts_with_fds(self.stream.as_fd(), &parts, attach)
                })
                .await?;
            off += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use super::*;

    #[tokio::test]
    async fn bind_makes_a_0666_socket_and_replaces_only_a_stale_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run/dipc/node.sock");
        let listener = bind(&path).expect("bind");
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o7777, 0o666);
        let parent = std::fs::metadata(path.parent().expect("parent")).expect("stat dir");
        assert_eq!(
            parent.mode() & 0o022,
            0,
            "socket directory writable by others"
        );

        // A live daemon keeps its socket.
        let err = bind(&path).expect_err("a live socket must not be replaced");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        drop(listener);

        // A stale socket is replaced.
        let listener = bind(&path).expect("rebind over a stale socket");
        drop(listener);

        // Anything else at the path is left alone.
        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, b"precious").expect("write");
        bind(&file).expect_err("a regular file must not be replaced");
        assert_eq!(std::fs::read(&file).expect("read"), b"precious");
    }
}
