//! `dipc ipcmk`: create a distributed object from a script, print its id.
//!
//! ```text
//! dipc ipcmk -M 1M -p 0640        Shared memory id: 1073741825
//! dipc ipcmk -Q --key 0x1234      Message queue id: 1073741826
//! dipc ipcmk -S 4                 Semaphore id: 1073741827
//! ```
//!
//! Like util-linux `ipcmk` (same options, same output lines), but the
//! object is created through a node daemon's local socket (`--socket`,
//! `DIPC_SOCKET`), exactly as a program's `shmget`/`msgget`/`semget` with
//! `IPC_DIPC` would be: the node is its home and the caller's credentials
//! become its owner. Without `--key` the key is `IPC_PRIVATE`; with one,
//! creation is exclusive (`IPC_EXCL`), so a script never reuses an object
//! by accident.
//!
//! This module also holds [`NodeConn`], the small blocking client of the
//! local protocol that `ipcrm` and `ipcs` use too: one frame per request,
//! one per answer, every wait bounded.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use dipc_wire::local::{LocalFrame, Request, Response, VERSION};
use dipc_wire::{Frame, IPC_CREAT, IPC_EXCL, IPC_PRIVATE, Key, MAX_FRAME, ObjectId, ShmMode};

/// Bound on one request/answer exchange with the node.
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// A connection to a node daemon's local socket, after `Hello`.
pub struct NodeConn {
    stream: UnixStream,
    path: PathBuf,
    node: u32,
}

impl NodeConn {
    /// Connect to the node at `path` and say hello.
    pub fn connect(path: &Path) -> anyhow::Result<NodeConn> {
        let stream = UnixStream::connect(path)
            .with_context(|| format!("cannot reach the node daemon at {}", path.display()))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut c = NodeConn {
            stream,
            path: path.to_owned(),
            node: 0,
        };
        match c.call(&Request::Hello { version: VERSION })? {
            Response::Hello { version, node } if version == VERSION => {
                c.node = node;
                Ok(c)
            }
            other => bail!(
                "node {} answered Hello with {other:?} (protocol version {VERSION} expected)",
                path.display()
            ),
        }
    }

    /// The node's id (from its `Hello`).
    pub fn node(&self) -> u32 {
        self.node
    }

    /// Send `req`, read its answer.
    pub fn call(&mut self, req: &Request) -> anyhow::Result<Response> {
        let path = self.path.display();
        self.stream
            .write_all(&req.frame().to_bytes())
            .with_context(|| format!("sending to node {path}"))?;
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .with_context(|| format!("reading the answer of node {path}"))?;
        let total = u32::from_le_bytes(len) as usize;
        if total.saturating_add(4) > MAX_FRAME {
            bail!("node {path} announced a frame of {total} bytes");
        }
        let mut buf = vec![0u8; 4 + total];
        buf[..4].copy_from_slice(&len);
        self.stream
            .read_exact(&mut buf[4..])
            .with_context(|| format!("reading the answer of node {path}"))?;
        let frame = Frame::from_slice(&buf, MAX_FRAME)
            .with_context(|| format!("bad frame from node {path}"))?;
        Response::from_frame(&frame).with_context(|| format!("undecodable answer from node {path}"))
    }

    /// A call whose answer is an id (the `*get` requests).
    pub fn get_id(&mut self, req: &Request) -> Result<ObjectId, CallError> {
        match self.call(req) {
            Ok(Response::Id(id)) => Ok(id),
            Ok(Response::Err(errno)) => Err(CallError::Errno(errno)),
            Ok(other) => Err(CallError::Other(anyhow::anyhow!(
                "unexpected answer {other:?}"
            ))),
            Err(e) => Err(CallError::Other(e)),
        }
    }

    /// A call whose answer is `Ok` (the removals).
    pub fn expect_ok(&mut self, req: &Request) -> Result<(), CallError> {
        match self.call(req) {
            Ok(Response::Ok) => Ok(()),
            Ok(Response::Err(errno)) => Err(CallError::Errno(errno)),
            Ok(other) => Err(CallError::Other(anyhow::anyhow!(
                "unexpected answer {other:?}"
            ))),
            Err(e) => Err(CallError::Other(e)),
        }
    }
}

/// A request the node refused (an errno, reported as the kernel's tools
/// do) or that failed on the way.
#[derive(Debug)]
pub enum CallError {
    Errno(i32),
    Other(anyhow::Error),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Errno(e) => f.write_str(&std::io::Error::from_raw_os_error(*e).to_string()),
            CallError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

/// The node socket from `--socket`/`DIPC_SOCKET`, the config file, or the default.
pub fn socket_path(flag: Option<PathBuf>, file: &crate::config::FileConfig) -> PathBuf {
    flag.or_else(|| file.socket.clone())
        .unwrap_or_else(|| dipc_wire::local::DEFAULT_SOCKET.into())
}

/// A key or id as util-linux takes it: decimal, or hex with `0x`.
pub fn parse_num(s: &str) -> Result<i32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).map(|v| v as i32),
        None => s
            .parse::<i32>()
            .or_else(|_| s.parse::<u32>().map(|v| v as i32)),
    };
    parsed.map_err(|_| format!("{s:?} is not a number (decimal, or hex with 0x)"))
}

/// A size with an optional K/M/G suffix (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|v| v.checked_mul(mult))
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} is not a size (bytes, or with K, M, G)"))
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal mode (e.g. 0644)"))
}

/// `dipc ipcmk` arguments.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["shm", "queue", "sems"])))]
pub struct IpcmkArgs {
    /// Create a shared memory segment of SIZE bytes (K, M, G suffixes).
    #[arg(short = 'M', long = "shmem", value_name = "SIZE", value_parser = parse_size)]
    shm: Option<u64>,
    /// Create a message queue.
    #[arg(short = 'Q', long = "queue")]
    queue: bool,
    /// Create a semaphore set of NSEMS semaphores.
    #[arg(short = 'S', long = "semaphore", value_name = "NSEMS")]
    sems: Option<i32>,
    /// Permissions (octal, default 0644).
    #[arg(short = 'p', long = "mode", default_value = "0644", value_parser = parse_mode)]
    mode: u32,
    /// With -M: coherence unit in bytes (a power of two >= 4096; default:
    /// the node's), as DIPC_PAGE_SIZE.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, requires = "shm")]
    unit: Option<u64>,
    /// With -M: move the segment as one unit (segment mode, at most 1G).
    #[arg(long, requires = "shm")]
    segment_mode: bool,
    /// With -M: hold-time quantum in microseconds (0: none; default: the
    /// node's), as DIPC_QUANTUM_US.
    #[arg(long, value_name = "US", requires = "shm")]
    quantum_us: Option<u32>,
    /// With -M: largest sequential prefetch window in units (0: off;
    /// default: the node's), as DIPC_PREFETCH.
    #[arg(long, value_name = "UNITS", requires = "shm")]
    prefetch: Option<u32>,
    /// Key (default IPC_PRIVATE); with a key, creation is exclusive.
    #[arg(long, value_parser = parse_num)]
    key: Option<Key>,
    /// The node daemon's local socket.
    #[arg(long, env = "DIPC_SOCKET")]
    socket: Option<PathBuf>,
}

/// `dipc ipcmk`.
pub fn run(args: IpcmkArgs, file: &crate::config::FileConfig) -> anyhow::Result<()> {
    let socket = socket_path(args.socket, file);
    let mut node = NodeConn::connect(&socket)?;
    let key = args.key.unwrap_or(IPC_PRIVATE);
    let mut flags = IPC_CREAT | args.mode as i32;
    if key != IPC_PRIVATE {
        flags |= IPC_EXCL;
    }
    let fail = |what: &str, e: CallError| anyhow::anyhow!("cannot create {what}: {e}");
    if let Some(size) = args.shm {
        let id = node
            .get_id(&Request::ShmGet {
                key,
                size,
                flags,
                unit: args.unit.map(|u| u32::try_from(u).unwrap_or(u32::MAX)),
                mode: args.segment_mode.then_some(ShmMode::Segment),
                quantum_us: args.quantum_us,
                prefetch: args.prefetch,
            })
            .map_err(|e| fail("shared memory segment", e))?;
        println!("Shared memory id: {id}");
    }
    if args.queue {
        let id = node
            .get_id(&Request::MsgGet { key, flags })
            .map_err(|e| fail("message queue", e))?;
        println!("Message queue id: {id}");
    }
    if let Some(nsems) = args.sems {
        let id = node
            .get_id(&Request::SemGet { key, nsems, flags })
            .map_err(|e| fail("semaphore set", e))?;
        println!("Semaphore id: {id}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_sizes_modes() {
        assert_eq!(parse_num("0x1234"), Ok(0x1234));
        assert_eq!(parse_num("0xffffffff"), Ok(-1));
        assert_eq!(parse_num("1073741825"), Ok(1_073_741_825));
        assert!(parse_num("12z").is_err());
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("M").is_err());
        assert_eq!(parse_mode("0640"), Ok(0o640));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("01777").is_err());
    }
}
