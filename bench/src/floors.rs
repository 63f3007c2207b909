//! Floors: the cost of the parts a dipc fault is made of, measured alone.
//!
//! A remote read fault in dipc is a userfaultfd-served fault plus a 4 KiB
//! round trip between nodes; nothing dipc does can beat the sum. Measuring
//! these parts in the same run as the dipc scenarios turns a latency into a
//! ratio that survives a noisy or slow machine ("1.12x its floor"), which
//! an absolute number does not.
//!
//! * [`anon_fault`]: first write to each page of an anonymous mapping (the
//!   kernel's cheapest fault, the floor of every other fault);
//! * [`uffd_local`]: first read of each page of a memfd mapping registered
//!   with a userfaultfd, served by a handler thread the way the node serves
//!   it: the handler sleeps in `poll`, fills the page through its own view
//!   of the memfd (the node's "install") and maps it with
//!   `UFFDIO_CONTINUE`;
//! * [`tcp_rtt_4k`]: a call carrying 4 KiB each way between two endpoints
//!   of dipc's own TCP transport (authenticated [`Conn`], [`rpc()`]), each on
//!   its own current-thread tokio runtime, as two node daemons are.
//!
//! The waiting side of each floor spins briefly before it sleeps, as the
//! node's fault loop does ([`fault_spin`]), so a floor and the dipc path
//! it bounds pay the same wake-ups and the ratio holds on an idle machine
//! as on a loaded one.
//!
//! Each returns its raw samples in nanoseconds, in the order taken
//! (the caller drops the warm-up). Every floor checks the data it moved,
//! so a broken setup is an error rather than a fast number.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dipc_shmem::{Mapping, Memfd, Placement, Protection, Uffd, UffdEvent};
use dipc_transport_tcp::{Auth, Conn, Role, rpc};
use indicatif::ProgressBar;
use memmap2::{Advice, MmapMut};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::Error;

/// Pages per mapping: samples beyond it use a fresh mapping, so memory
/// stays bounded whatever the sample count.
const CHUNK_PAGES: usize = 4096;
/// Bound on each wait of the TCP floor (connect, one call, shutdown).
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the uffd handler sleeps in `poll` before looking at its stop
/// flag.
const HANDLER_POLL_MS: u16 = 50;

/// How long a floor keeps polling (spinning) after serving a fault or
/// sending a call, before it sleeps: the node's fault loop does the same
/// (`DIPC_FAULT_SPIN_US`, default 50 us), so a floor that slept instead
/// would pay an idle CPU's wake-up (~100 us on a VM) that the measured
/// path does not, and its ratio would fall below 1 on an idle machine.
pub fn fault_spin() -> Duration {
    static SPIN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *SPIN.get_or_init(|| {
        let us = std::env::var("DIPC_FAULT_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(50);
        Duration::from_micros(us)
    })
}

fn page() -> usize {
    dipc_shmem::page_size() as usize
}

/// The byte written at the start of page `i` by the fills of the floors.
/// Never zero, so a page read as a hole is noticed.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8 + 1
}

/// First write to each page of fresh anonymous memory (THP off, so each
/// 4 KiB page is its own fault), `total` samples.
pub fn anon_fault(total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    let ps = page();
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let n = (total - out.len()).min(CHUNK_PAGES);
        let mut map = MmapMut::map_anon(n * ps)
            .map_err(|e| Error::io(format!("mmap of {} anonymous bytes", n * ps), e))?;
        map.advise(Advice::NoHugePage)
            .map_err(|e| Error::io("madvise(MADV_NOHUGEPAGE)", e))?;
        for i in 0..n {
            let b = &mut map[i * ps];
            let t = Instant::now();
            *b = pattern(i);
            let dt = t.elapsed();
            std::hint::black_box(b);
            out.push(dt.as_nanos() as u64);
        }
        if let Some(i) = (0..n).find(|&i| map[i * ps] != pattern(i)) {
            return Err(Error::WrongData {
                detail: format!("anon-fault: page {i} does not hold what was written"),
            });
        }
        pb.inc(n as u64);
    }
    Ok(out)
}

/// First read of each page of a memfd mapping registered with a
/// userfaultfd (missing and minor faults), served by a handler thread;
/// `total` samples.
pub fn uffd_local(total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let n = (total - out.len()).min(CHUNK_PAGES);
        uffd_chunk(n, &mut out)?;
        pb.inc(n as u64);
    }
    Ok(out)
}

fn uffd_chunk(n: usize, out: &mut Vec<u64>) -> Result<(), Error> {
    let ps = page();
    let size = (n * ps) as u64;
    let memfd = Arc::new(
        Memfd::create("dipc-bench-uffd", size)
            .map_err(|e| Error::shmem("uffd-local: creating the memfd", e))?,
    );
    let map = Mapping::map(
        memfd.as_fd(),
        size,
        Placement::Anywhere,
        Protection::READ_WRITE,
    )
    .map_err(|e| Error::shmem("uffd-local: mapping the memfd", e))?;
    let uffd = dipc_shmem::create_uffd()
        .map_err(|e| Error::shmem("uffd-local: creating a userfaultfd", e))?;
    dipc_shmem::register(uffd.as_fd(), map.addr(), map.len(), false)
        .map_err(|e| Error::shmem("uffd-local: registering the mapping", e))?;
    // The handler holds the only copy of the userfaultfd: if it fails and
    // exits, the kernel releases the registration, blocked reads retry and
    // see holes (zeros), which the check below turns into an error instead
    // of a hang.
    let uffd = Uffd::from_fd(uffd);
    let stop = Arc::new(AtomicBool::new(false));
    let handler = {
        let (memfd, stop, base) = (memfd.clone(), stop.clone(), map.addr());
        std::thread::Builder::new()
            .name("uffd-handler".into())
            .spawn(move || serve_faults(&uffd, &memfd, base, &stop))
            .map_err(|e| Error::io("uffd-local: starting the handler thread", e))?
    };
    let mut wrong = None;
    let mut byte = [0u8; 1];
    for i in 0..n {
        let t = Instant::now();
        let r = map.read_at((i * ps) as u64, &mut byte);
        let dt = t.elapsed();
        r.map_err(|e| Error::shmem("uffd-local: reading the mapping", e))?;
        if byte[0] != pattern(i) && wrong.is_none() {
            wrong = Some((i, byte[0]));
        }
        out.push(dt.as_nanos() as u64);
    }
    stop.store(true, Ordering::Release);
    let served = handler.join().map_err(|_| Error::WrongData {
        detail: "uffd-local: the fault handler thread panicked".into(),
    })??;
    if let Some((i, got)) = wrong {
        return Err(Error::WrongData {
            detail: format!(
                "uffd-local: page {i} read {got:#04x}, expected {:#04x} ({served} faults served)",
                pattern(i)
            ),
        });
    }
    Ok(())
}

/// The handler: wait in `poll`, fill each faulting page through the memfd's
/// own view, map it with `UFFDIO_CONTINUE`. Returns the faults served.
fn serve_faults(uffd: &Uffd, memfd: &Memfd, base: u64, stop: &AtomicBool) -> Result<u64, Error> {
    let ps = page() as u64;
    let mut data = vec![0u8; ps as usize];
    let mut events = Vec::new();
    let mut served = 0u64;
    // Spin (poll without sleeping) until then, as the node's fault loop
    // does after each fault.
    let mut spin_until = Instant::now();
    while !stop.load(Ordering::Acquire) {
        let mut fds = [PollFd::new(uffd.as_fd(), PollFlags::POLLIN)];
        let wait = if Instant::now() < spin_until {
            PollTimeout::ZERO
        } else {
            PollTimeout::from(HANDLER_POLL_MS)
        };
        match poll(&mut fds, wait) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(Error::io("uffd-local: poll on the userfaultfd", e.into())),
        }
        events.clear();
        uffd.read_events(&mut events)
            .map_err(|e| Error::shmem("uffd-local: reading fault events", e))?;
        for ev in &events {
            let UffdEvent::Fault { addr, .. } = *ev else {
                continue;
            };
            let at = addr & !(ps - 1);
            let off = at - base;
            data[0] = pattern((off / ps) as usize);
            memfd
                .write_at(off, &data)
                .map_err(|e| Error::shmem("uffd-local: filling a page", e))?;
            uffd.continue_(at, ps, false)
                .map_err(|e| Error::shmem("uffd-local: UFFDIO_CONTINUE", e))?;
            served += 1;
            spin_until = Instant::now() + fault_spin();
        }
    }
    Ok(served)
}

/// The authentication both endpoints of the TCP floor use.
fn floor_auth(name: &str) -> Auth {
    Auth {
        cluster: "dipc-bench".into(),
        secret: Arc::from(&b"dipc-bench floor secret, loopback only"[..]),
        name: name.into(),
        tls: None,
    }
}

pub(crate) fn current_thread_runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting a tokio runtime", e))
}

/// Round trips of a call carrying 4 KiB each way over dipc's TCP
/// transport on 127.0.0.1; `total` samples.
pub fn tcp_rtt_4k(total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    tcp_rtt(total, pb, 4096, 4096)
}

/// As [`tcp_rtt_4k`] with 8 bytes each way (the raw RTT of a small message).
pub fn tcp_rtt_8(total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    tcp_rtt(total, pb, 8, 8)
}

/// As [`tcp_rtt_4k`] with 1 KiB each way.
pub fn tcp_rtt_1k(total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    tcp_rtt(total, pb, 1024, 1024)
}

/// As [`tcp_rtt_4k`] with 8 KiB each way.
pub fn tcp_rtt_8k(total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    tcp_rtt(total, pb, 8192, 8192)
}

/// As [`tcp_rtt_4k`] with 16 KiB each way.
pub fn tcp_rtt_16k(total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    tcp_rtt(total, pb, 16384, 16384)
}

/// As [`tcp_rtt_4k`] with 64 KiB each way.
pub fn tcp_rtt_64k(total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    tcp_rtt(total, pb, 65536, 65536)
}

/// A call of 8 bytes answered with 1 MiB: the transport's bandwidth for
/// large fetches.
pub fn tcp_bw_1m(total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    tcp_rtt(total, pb, 8, 1 << 20)
}

/// A non-blocking listener on 127.0.0.1 for a floor's server (`floor`
/// names it in errors), and its address.
pub(crate) fn loopback_listener(
    floor: &str,
) -> Result<(std::net::TcpListener, std::net::SocketAddr), Error> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io(format!("{floor}: binding 127.0.0.1:0"), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(format!("{floor}: local address"), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io(format!("{floor}: non-blocking listener"), e))?;
    Ok((listener, addr))
}

/// Accept the one client of a floor's server, within `bound`.
pub(crate) async fn accept_one(
    listener: std::net::TcpListener,
    floor: &str,
    bound: Duration,
) -> Result<tokio::net::TcpStream, Error> {
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|e| Error::io(format!("{floor}: registering the listener"), e))?;
    let (stream, _) = tokio::time::timeout(bound, listener.accept())
        .await
        .map_err(|_| Error::Timeout {
            what: format!("{floor}: accepting the client"),
            after: bound,
        })?
        .map_err(|e| Error::io(format!("{floor}: accept"), e))?;
    Ok(stream)
}

/// Round trips of a call carrying `req` bytes answered with `resp` bytes.
fn tcp_rtt(total: usize, pb: &ProgressBar, req: usize, resp: usize) -> Result<Vec<u64>, Error> {
    let (listener, addr) = loopback_listener("tcp floor")?;
    let server = std::thread::Builder::new()
        .name("tcp-floor-server".into())
        .spawn(move || -> Result<(), Error> {
            current_thread_runtime()?.block_on(echo_server(listener, resp))
        })
        .map_err(|e| Error::io("tcp floor: starting the server thread", e))?;
    let client =
        current_thread_runtime()?.block_on(client_loop(&addr.to_string(), total, pb, req, resp));
    // The client closed its connection (or failed), so the server's loop
    // ends; its accept and handshake are bounded by TCP_TIMEOUT.
    let server = server.join().map_err(|_| Error::Cluster {
        detail: "tcp floor: the server thread panicked".into(),
    })?;
    let samples = client?;
    server?;
    Ok(samples)
}

/// Accept one connection and answer each call with 4 KiB until it closes.
async fn echo_server(listener: std::net::TcpListener, resp: usize) -> Result<(), Error> {
    let stream = accept_one(listener, "tcp floor", TCP_TIMEOUT).await?;
    let (conn, _) = Conn::accept(stream, &floor_auth("floor-server"), TCP_TIMEOUT)
        .await
        .map_err(|e| Error::tcp("tcp floor: server handshake", e))?;
    let (_handle, mut incoming) = rpc::<u64, u64, ()>(conn, TCP_TIMEOUT);
    let answer = Bytes::from(vec![0xA5u8; resp]);
    // The server spins after each answer as the client does (and as a
    // node's runtime is kept busy by its fault loop): otherwise every call
    // pays an idle vCPU's wake-up on the server's side, and on an idle
    // machine the floor grows far above the dipc path it is compared with.
    while let Some(msg) = spin_then_wait(incoming.recv()).await {
        if let dipc_transport_tcp::Incoming::Call { req, reply, .. } = msg {
            reply.send(&req, answer.clone());
        }
    }
    Ok(())
}

/// Await `fut`, polling it in a busy loop for up to [`fault_spin`] first
/// (yielding to the runtime, which then polls its sockets without
/// sleeping): how the node waits for the answer to a fault's request.
async fn spin_then_wait<F: std::future::Future>(fut: F) -> F::Output {
    tokio::pin!(fut);
    let until = Instant::now() + fault_spin();
    while Instant::now() < until {
        tokio::select! {
            biased;
            out = &mut fut => return out,
            () = tokio::task::yield_now() => {}
        }
    }
    fut.await
}

async fn client_loop(
    addr: &str,
    total: usize,
    pb: &ProgressBar,
    req: usize,
    resp: usize,
) -> Result<Vec<u64>, Error> {
    let (conn, _) = Conn::connect(addr, &floor_auth("floor-client"), Role::Node, TCP_TIMEOUT)
        .await
        .map_err(|e| Error::tcp("tcp floor: client handshake", e))?;
    let (handle, _incoming) = rpc::<u64, u64, ()>(conn, TCP_TIMEOUT);
    let request = Bytes::from(vec![0x5Au8; req]);
    let mut out = Vec::with_capacity(total);
    for i in 0..total as u64 {
        let t = Instant::now();
        let r = spin_then_wait(handle.call_payload(&i, request.clone(), TCP_TIMEOUT)).await;
        let dt = t.elapsed();
        let (id, payload) = r.map_err(|e| Error::tcp(format!("tcp floor: call {i}"), e))?;
        if id != i || payload.len() != resp || payload.first() != Some(&0xA5) {
            return Err(Error::WrongData {
                detail: format!(
                    "tcp floor: call {i} answered {id} with {} bytes",
                    payload.len()
                ),
            });
        }
        out.push(dt.as_nanos() as u64);
        if i % 256 == 255 {
            pb.inc(256);
        }
    }
    pb.inc(total as u64 % 256);
    handle.close();
    Ok(out)
}
