//! A blocking client of the node daemon's local socket.
//!
//! One Unix stream connection per process, opened `CLOEXEC`, greeted with
//! `Request::Hello`; each request is one frame ([`dipc_wire::Frame`]) and
//! gets exactly one response frame. Descriptors travel as `SCM_RIGHTS`
//! with the first byte of a frame. Every wait is bounded
//! (`SO_RCVTIMEO`/`SO_SNDTIMEO`): a daemon that stops answering turns into
//! [`Error::Timeout`], never a hang of the application.
//!
//! After any I/O or framing error the stream is out of step and the client
//! is marked broken; its owner drops it. The API is public so that tests
//! (and tools) can speak the protocol exactly as libsysv does.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use dipc_shmem::fdpass::{recv_with_fds, send_all_parts_with_creds};
use dipc_wire::local::{LocalFrame, Request, Response, VERSION};
use dipc_wire::{Frame, MAX_FRAME};

use crate::Error;
use crate::config::Config;

/// A connection to a node daemon.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    node: u32,
    broken: bool,
    /// The process's watch connection, opened with this one and closed
    /// with it ([`Client::open_watch`]).
    watch: Option<UnixStream>,
}

/// Connect to the daemon at `path` with the process's configured timeout
/// (`DIPC_TIMEOUT_MS`, default 30 s) and say hello.
pub fn connect(path: impl AsRef<Path>) -> Result<Client, Error> {
    connect_timeout(path, Config::get().timeout)
}

/// Connect to the daemon at `path`, bounding every later wait by
/// `timeout`, and say hello.
pub fn connect_timeout(path: impl AsRef<Path>, timeout: Duration) -> Result<Client, Error> {
    let stream = dial(path.as_ref(), Some(timeout), timeout)?;
    let mut c = Client {
        stream,
        node: 0,
        broken: false,
        watch: None,
    };
    match c.call(&Request::Hello { version: VERSION }, &[])? {
        (Response::Hello { version, node }, _) if version == VERSION => {
            c.node = node;
            Ok(c)
        }
        (Response::Hello { version, .. }, _) => Err(Error::Protocol(format!(
            "daemon speaks local protocol version {version}, libsysv speaks {VERSION}"
        ))),
        (Response::Err(e), _) => Err(Error::Node(e)),
        (other, _) => Err(Error::Protocol(format!(
            "unexpected answer to Hello: {other:?}"
        ))),
    }
}

/// A new connection to the daemon at `path` (`SOCK_CLOEXEC`, as std opens
/// sockets), its reads bounded by `read` (`None`: the caller bounds its
/// waits itself) and its sends by `write`.
pub(crate) fn dial(
    path: &Path,
    read: Option<Duration>,
    write: Duration,
) -> Result<UnixStream, Error> {
    let connect_err = |source| Error::Connect {
        path: path.to_owned(),
        source,
    };
    let stream = UnixStream::connect(path).map_err(connect_err)?;
    stream
        .set_read_timeout(read)
        .and_then(|()| stream.set_write_timeout(Some(write)))
        .map_err(connect_err)?;
    Ok(stream)
}

fn io_err(op: &'static str, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Error::Timeout { op },
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => Error::Closed,
        _ => Error::Io { op, source: e },
    }
}

impl Client {
    /// Open the process's watch connection to the daemon at `path`
    /// ([`Request::Watch`]), kept as long as this connection: the daemon
    /// never writes to it, so its only event is its closing (the daemon
    /// died, or dropped this process). Its descriptor, for the signal.
    pub(crate) fn open_watch(&mut self, path: &Path) -> Result<RawFd, Error> {
        let stream = dial(path, None, Config::get().timeout)?;
        let (head, _) = crate::msg::wire_parts(&Request::Watch { version: VERSION });
        send_all_parts_with_creds(stream.as_fd(), &[&head], &[])
            .map_err(|e| io_err("opening the watch connection", e))?;
        Ok(self.watch.insert(stream).as_raw_fd())
    }

    /// The daemon's node number (from its Hello).
    pub fn node(&self) -> u32 {
        self.node
    }

    /// Has an I/O or protocol error left this connection unusable?
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The socket.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// Send `req` with `fds` attached and wait for the answer and any
    /// descriptors that came with it. An error answer of the daemon is
    /// returned as `Ok(Response::Err(errno))`; `Err` means the exchange
    /// itself failed (and the client is now broken).
    pub fn call(
        &mut self,
        req: &Request,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(Response, Vec<OwnedFd>), Error> {
        if self.broken {
            return Err(Error::Closed);
        }
        let r = self.exchange(req, fds);
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    fn exchange(
        &mut self,
        req: &Request,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(Response, Vec<OwnedFd>), Error> {
        let (head, text) = crate::msg::wire_parts(req);
        // With this process's credentials of the moment: the daemon checks
        // each request with them (a process may drop privileges).
        send_all_parts_with_creds(self.stream.as_fd(), &[&head, &text], fds)
            .map_err(|e| io_err("sending a request", e))?;

        let mut fds_in = Vec::new();
        let mut prefix = [0u8; 4];
        self.read_exact(&mut prefix, &mut fds_in)?;
        let total = u32::from_le_bytes(prefix) as usize;
        if total < 4 || total + 4 > MAX_FRAME {
            return Err(Error::Protocol(format!("bad frame length {total}")));
        }
        let mut buf = vec![0u8; 4 + total];
        buf[..4].copy_from_slice(&prefix);
        self.read_exact(&mut buf[4..], &mut fds_in)?;
        let frame =
            Frame::from_slice(&buf, MAX_FRAME).map_err(|e| Error::Protocol(e.to_string()))?;
        let resp = Response::from_frame(&frame).map_err(|e| Error::Protocol(e.to_string()))?;
        Ok((resp, fds_in))
    }

    fn read_exact(&mut self, mut buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<(), Error> {
        while !buf.is_empty() {
            let n = recv_with_fds(self.stream.as_fd(), buf, fds)
                .map_err(|e| io_err("waiting for an answer", e))?;
            if n == 0 {
                return Err(Error::Closed);
            }
            buf = &mut buf[n..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dipc_shmem::fdpass::send_with_fds;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    /// A fake daemon answering each request with `answer(request)`.
    fn fake_daemon(
        path: &Path,
        answer: impl Fn(Request) -> Option<(Response, Option<OwnedFd>)> + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        let l = UnixListener::bind(path).expect("bind");
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            loop {
                let mut fds = Vec::new();
                let mut prefix = [0u8; 4];
                if recv_with_fds(s.as_fd(), &mut prefix, &mut fds).unwrap_or(0) < 4 {
                    return;
                }
                let total = u32::from_le_bytes(prefix) as usize;
                let mut rest = vec![0u8; total];
                s.read_exact(&mut rest).expect("read");
                let mut all = prefix.to_vec();
                all.extend_from_slice(&rest);
                let req: Request = Frame::from_slice(&all, MAX_FRAME)
                    .expect("frame")
                    .decode()
                    .expect("decode");
                let Some((resp, fd)) = answer(req) else {
                    return;
                };
                let bytes = Frame::msg(&resp).to_bytes();
                let fds: Vec<BorrowedFd<'_>> = fd.iter().map(|f| f.as_fd()).collect();
                let n = send_with_fds(s.as_fd(), &bytes, &fds).expect("send");
                s.write_all(&bytes[n..]).expect("send rest");
            }
        })
    }

    #[test]
    fn hello_and_call_with_fds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.sock");
        let t = fake_daemon(&path, |req| match req {
            Request::Hello { version } => Some((Response::Hello { version, node: 7 }, None)),
            Request::ShmAt { .. } => {
                let m = dipc_shmem::Memfd::create("fake", 4096).expect("memfd");
                Some((
                    Response::ShmAttach {
                        size: 4096,
                        unit: 4096,
                    },
                    Some(m.as_fd().try_clone_to_owned().expect("dup")),
                ))
            }
            _ => Some((Response::Err(libc::EINVAL), None)),
        });
        let mut c = connect_timeout(&path, Duration::from_secs(5)).expect("connect");
        assert_eq!(c.node(), 7);
        let (r, fds) = c
            .call(
                &Request::ShmAt {
                    id: 0x4000_0001,
                    readonly: false,
                },
                &[],
            )
            .expect("call");
        assert_eq!(
            r,
            Response::ShmAttach {
                size: 4096,
                unit: 4096
            }
        );
        assert_eq!(fds.len(), 1);
        let (r, fds) = c.call(&Request::ShmRmid { id: 1 }, &[]).expect("call");
        assert_eq!((r, fds.len()), (Response::Err(libc::EINVAL), 0));
        drop(c);
        t.join().expect("daemon thread");
    }

    #[test]
    fn silent_daemon_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.sock");
        let _l = UnixListener::bind(&path).expect("bind");
        // Accepted by the backlog, never answered.
        let start = std::time::Instant::now();
        let e = connect_timeout(&path, Duration::from_millis(200)).expect_err("timeout");
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        assert_eq!(e.errno(), libc::ETIMEDOUT);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn closed_connection_and_version_mismatch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.sock");
        let t = fake_daemon(&path, |_| None);
        let e = connect_timeout(&path, Duration::from_secs(5)).expect_err("closed");
        assert!(matches!(e, Error::Closed), "{e:?}");
        t.join().expect("thread");

        let path = dir.path().join("b.sock");
        let t = fake_daemon(&path, |_| {
            Some((
                Response::Hello {
                    version: VERSION + 1,
                    node: 1,
                },
                None,
            ))
        });
        let e = connect_timeout(&path, Duration::from_secs(5)).expect_err("version");
        assert!(matches!(e, Error::Protocol(_)), "{e:?}");
        t.join().expect("thread");

        let e = connect_timeout(dir.path().join("none.sock"), Duration::from_secs(1))
            .expect_err("no daemon");
        assert_eq!(e.errno(), libc::ECONNREFUSED);
    }
}
