//! A minimal client of a node's local protocol.
//!
//! Some tests need exact control over what reaches a node and when (for
//! example three clients released by one barrier to race for a key), which
//! a C program through libsysv cannot give. This client writes one
//! [`dipc_wire::Frame`] per request and reads one per response, blocking,
//! with time bounds on both.
//!
//! It reads with plain `read`, so file descriptors a response carries
//! (`SCM_RIGHTS`, e.g. the memfd of `ShmAttach`) are closed by the kernel
//! on receipt; use it for requests whose answer is a value.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use dipc_wire::local::{LocalFrame, Request, Response, VERSION};
use dipc_wire::{Frame, Key, MAX_FRAME};

/// Bound on one request/response exchange.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a node's local socket, after the `Hello` exchange.
pub struct LocalClient {
    stream: UnixStream,
    node: u32,
}

impl LocalClient {
    /// Connect to the node at `socket` and say hello with this build's
    /// protocol version.
    pub fn connect(socket: &Path) -> anyhow::Result<LocalClient> {
        let stream = UnixStream::connect(socket)
            .with_context(|| format!("connecting to {}", socket.display()))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut c = LocalClient { stream, node: 0 };
        match c.call(&Request::Hello { version: VERSION })? {
            Response::Hello { version, node } if version == VERSION => {
                c.node = node;
                Ok(c)
            }
            other => bail!(
                "{}: unexpected answer to Hello: {other:?}",
                socket.display()
            ),
        }
    }

    /// The node id the node gave in its `Hello`.
    pub fn node(&self) -> u32 {
        self.node
    }

    /// Send one request and read its response.
    pub fn call(&mut self, req: &Request) -> anyhow::Result<Response> {
        self.stream
            .write_all(&req.frame().to_bytes())
            .with_context(|| format!("sending {req:?}"))?;
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .with_context(|| format!("reading the answer to {req:?}"))?;
        let total = u32::from_le_bytes(len) as usize;
        if total.saturating_add(4) > MAX_FRAME {
            bail!("answer to {req:?} announces {total} bytes, more than a frame may hold");
        }
        let mut buf = vec![0u8; 4 + total];
        buf[..4].copy_from_slice(&len);
        self.stream
            .read_exact(&mut buf[4..])
            .with_context(|| format!("reading the answer to {req:?}"))?;
        let frame = Frame::from_slice(&buf, MAX_FRAME)?;
        Ok(Response::from_frame(&frame)?)
    }

    /// `shmget(key, size, flags)` with the node's default unit and mode.
    pub fn shm_get(&mut self, key: Key, size: u64, flags: i32) -> anyhow::Result<Response> {
        self.call(&Request::ShmGet {
            key,
            size,
            flags,
            unit: None,
            mode: None,
            quantum_us: None,
            prefetch: None,
        })
    }
}
