//! libsysv's distributed path against a fake node daemon: a small
//! in-process server that speaks the local protocol and serves page faults
//! of its clients from one memfd per segment (no peers, no coherence), so
//! that shmat's mapping and userfaultfd registration, shmdt, shmctl and
//! fork's re-registration run for real. End-to-end tests with the real
//! node belong to the node crate.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Link, compile, run, show};
use dipc_shmem::fdpass::{recv_with_fds, send_with_fds};
use dipc_shmem::{Memfd, Uffd, UffdEvent, page_size};
use dipc_wire::local::{LocalFrame, Request, Response, ShmStat, VERSION};
use dipc_wire::{DIPC_ID_BIT, Frame, MAX_FRAME, Perm};

struct Seg {
    key: i32,
    memfd: Memfd,
    mode: u32,
    nattch: AtomicU64,
}

/// What the fake saw, per connection (in accept order).
#[derive(Debug, Default, Clone)]
struct ConnLog {
    faults: u64,
    got_uffd: bool,
    registers: u64,
    aborts: u64,
    detaches: u64,
    closed: bool,
    /// A watch connection (its first frame was `Watch`).
    watch: bool,
}

/// How the fake node dies, for the daemon-death tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Death {
    #[default]
    Never,
    /// Instead of serving fault number n (1-based).
    AtFault(u64),
    /// Shortly after the first registration, while the process is idle.
    AfterRegister,
}

#[derive(Default)]
struct Node {
    death: Death,
    segs: Mutex<HashMap<i32, Arc<Seg>>>,
    next: AtomicU64,
    log: Mutex<Vec<ConnLog>>,
    /// Every connection accepted, and whether the node died: dying hangs
    /// them all up (the processes' watch connections among them, which is
    /// what signals libsysv), and any accepted later, as a dead daemon's
    /// closed socket would.
    conns: Conns,
}

type Conns = Arc<Mutex<(bool, Vec<UnixStream>)>>;

type Regs = Arc<Mutex<Vec<(u64, u64, Arc<Seg>)>>>;

impl Node {
    fn get(&self, key: i32, size: u64, flags: i32) -> Response {
        let mut segs = self.segs.lock().expect("segs");
        if key != 0
            && let Some((id, s)) = segs.iter().find(|(_, s)| s.key == key)
        {
            if flags & libc::IPC_CREAT != 0 && flags & libc::IPC_EXCL != 0 {
                return Response::Err(libc::EEXIST);
            }
            if size > s.memfd.size() {
                return Response::Err(libc::EINVAL);
            }
            return Response::Id(*id);
        }
        if flags & libc::IPC_CREAT == 0 {
            return Response::Err(libc::ENOENT);
        }
        if size == 0 {
            return Response::Err(libc::EINVAL);
        }
        let id = DIPC_ID_BIT | (self.next.fetch_add(1, Ordering::Relaxed) as i32 + 1);
        let memfd = Memfd::create("fake-seg", size).expect("memfd");
        segs.insert(
            id,
            Arc::new(Seg {
                key,
                memfd,
                mode: (flags & 0o777) as u32,
                nattch: AtomicU64::new(0),
            }),
        );
        Response::Id(id)
    }

    fn seg(&self, id: i32) -> Option<Arc<Seg>> {
        self.segs.lock().expect("segs").get(&id).cloned()
    }
}

fn read_frame(s: &mut UnixStream, fds: &mut Vec<OwnedFd>) -> Option<Request> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = recv_with_fds(s.as_fd(), &mut prefix[got..], fds).ok()?;
        if n == 0 {
            return None;
        }
        got += n;
    }
    let total = u32::from_le_bytes(prefix) as usize;
    let mut buf = prefix.to_vec();
    buf.resize(4 + total, 0);
    s.read_exact(&mut buf[4..]).ok()?;
    Request::from_frame(&Frame::from_slice(&buf, MAX_FRAME).ok()?).ok()
}

fn send(s: &mut UnixStream, resp: &Response, fd: Option<BorrowedFd<'_>>) {
    let bytes = resp.frame().to_bytes();
    let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
    let n = send_with_fds(s.as_fd(), &bytes, &fds).expect("send");
    s.write_all(&bytes[n..]).expect("send rest");
}

/// Serve the faults of one process: make the page present in the memfd,
/// then map it (UFFDIO_CONTINUE).
///
/// Dying (`Death`): drop the node's copy of the uffd and hang up every
/// connection, as the death of the daemon process would.
fn serve_faults(
    uffd: Uffd,
    regs: Regs,
    stop: Arc<AtomicBool>,
    faults: Arc<AtomicU64>,
    death: Death,
    conns: Conns,
) {
    let die = |uffd: Uffd| {
        drop(uffd);
        let mut conns = conns.lock().expect("conns");
        conns.0 = true;
        for c in &conns.1 {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    };
    if death == Death::AfterRegister {
        std::thread::sleep(Duration::from_millis(200));
        return die(uffd);
    }
    let ps = page_size();
    let mut evs = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        evs.clear();
        if uffd.read_events(&mut evs).is_err() {
            return;
        }
        if evs.is_empty() {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        for ev in &evs {
            let UffdEvent::Fault { addr, .. } = *ev else {
                continue;
            };
            let n = faults.fetch_add(1, Ordering::Relaxed) + 1;
            if death == Death::AtFault(n) {
                return die(uffd);
            }
            let page = addr & !(ps - 1);
            let regs = regs.lock().expect("regs");
            let Some((base, _, seg)) = regs.iter().find(|(a, l, _)| *a <= page && page < a + l)
            else {
                continue;
            };
            let off = page - base;
            if !seg.memfd.is_resident(off) && off < seg.memfd.size() {
                seg.memfd.write_at(off, &[0]).expect("populate");
            }
            // Past the end of the memfd (the last partial page) there is
            // nothing to map: the access raises SIGBUS, as with the kernel.
            let _ = uffd.continue_(page, ps, false);
        }
    }
}

fn serve_conn(node: Arc<Node>, mut s: UnixStream, idx: usize) {
    let regs: Regs = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let faults = Arc::new(AtomicU64::new(0));
    let mut server = None;
    let mut log = ConnLog::default();
    loop {
        let mut fds = Vec::new();
        let Some(req) = read_frame(&mut s, &mut fds) else {
            break;
        };
        let resp = match req {
            // Never answered: it stays silent until the process closes it.
            Request::Watch { .. } => {
                log.watch = true;
                continue;
            }
            Request::Hello { .. } => Response::Hello {
                version: VERSION,
                node: 1,
            },
            Request::ShmGet {
                key, size, flags, ..
            } => node.get(key, size, flags),
            Request::ShmAt { id, .. } => match node.seg(id) {
                Some(seg) => {
                    seg.nattch.fetch_add(1, Ordering::Relaxed);
                    let r = Response::ShmAttach {
                        size: seg.memfd.size(),
                        unit: 4096,
                    };
                    send(&mut s, &r, Some(seg.memfd.as_fd()));
                    continue;
                }
                None => Response::Err(libc::EINVAL),
            },
            Request::ShmRegister { id, addr, len, .. } => match node.seg(id) {
                Some(seg) => {
                    log.registers += 1;
                    regs.lock().expect("regs").push((addr, len, seg));
                    if let Some(fd) = fds.pop() {
                        log.got_uffd = true;
                        let (r, st, f) = (regs.clone(), stop.clone(), faults.clone());
                        let uffd = Uffd::from_fd(fd);
                        let (death, conns) = (node.death, node.conns.clone());
                        server = Some(std::thread::spawn(move || {
                            serve_faults(uffd, r, st, f, death, conns)
                        }));
                    }
                    Response::Ok
                }
                None => Response::Err(libc::EINVAL),
            },
            Request::ShmAbort { id } => {
                log.aborts += 1;
                if let Some(seg) = node.seg(id) {
                    seg.nattch.fetch_sub(1, Ordering::Relaxed);
                }
                Response::Ok
            }
            Request::ShmDt { addr } => {
                log.detaches += 1;
                let mut regs = regs.lock().expect("regs");
                match regs.iter().position(|(a, _, _)| *a == addr) {
                    Some(i) => {
                        let (_, _, seg) = regs.remove(i);
                        seg.nattch.fetch_sub(1, Ordering::Relaxed);
                        Response::Ok
                    }
                    None => Response::Err(libc::EINVAL),
                }
            }
            Request::ShmStat { id } => match node.seg(id) {
                Some(seg) => Response::ShmStat(ShmStat {
                    key: seg.key,
                    perm: Perm {
                        mode: seg.mode,
                        ..Perm::default()
                    },
                    segsz: seg.memfd.size(),
                    nattch: seg.nattch.load(Ordering::Relaxed),
                    ..ShmStat::default()
                }),
                None => Response::Err(libc::EINVAL),
            },
            Request::ShmSet { .. } => Response::Ok,
            Request::ShmRmid { id } => match node.segs.lock().expect("segs").remove(&id) {
                Some(_) => Response::Ok,
                None => Response::Err(libc::EINVAL),
            },
            // Message queues and semaphores: not this fake's business.
            _ => Response::Err(libc::ENOSYS),
        };
        send(&mut s, &resp, None);
    }
    for (_, _, seg) in regs.lock().expect("regs").drain(..) {
        seg.nattch.fetch_sub(1, Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = server {
        let _ = t.join();
    }
    log.faults = faults.load(Ordering::Relaxed);
    log.closed = true;
    node.log.lock().expect("log")[idx] = log;
}

fn start(path: &Path, death: Death) -> Arc<Node> {
    let node = Arc::new(Node {
        death,
        ..Node::default()
    });
    let l = UnixListener::bind(path).expect("bind");
    let n = node.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            {
                let mut conns = n.conns.lock().expect("conns");
                if conns.0 {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                conns.1.push(s.try_clone().expect("clone socket"));
            }
            let idx = {
                let mut log = n.log.lock().expect("log");
                log.push(ConnLog::default());
                log.len() - 1
            };
            let n = n.clone();
            std::thread::spawn(move || serve_conn(n, s, idx));
        }
    });
    node
}

/// The logs of the `n` main connections, once all connections closed.
fn wait_for_conns(node: &Node, n: usize) -> Vec<ConnLog> {
    let mains = |log: Vec<ConnLog>| log.into_iter().filter(|c| !c.watch).collect::<Vec<_>>();
    // A connection's log is final once its thread saw the close.
    for _ in 0..500 {
        let log = node.log.lock().expect("log").clone();
        if log.iter().all(|c| c.closed) && mains(log.clone()).len() >= n {
            return mains(log);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    mains(node.log.lock().expect("log").clone())
}

#[test]
fn distributed_shm_and_fork_through_a_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let linked = compile("distributed.c", dir.path(), Link::Sysv);
    let plain = compile("distributed.c", dir.path(), Link::Plain);
    for (i, (exe, preload)) in [(&linked, false), (&plain, true)].into_iter().enumerate() {
        let sock = dir.path().join(format!("node{i}.sock"));
        let node = start(&sock, Death::Never);
        let out = run(
            exe,
            &[],
            &[("DIPC_SOCKET", sock.to_str().expect("utf-8"))],
            preload,
        );
        assert!(out.status.success(), "preload={preload}: {}", show(&out));
        assert!(out.stderr.is_empty(), "{}", show(&out));
        let log = wait_for_conns(&node, 2);
        eprintln!("node log: {log:?}");
        assert_eq!(log.len(), 2, "parent and child connections: {log:?}");
        let (parent, child) = (&log[0], &log[1]);
        assert!(parent.got_uffd && parent.faults >= 2, "{parent:?}");
        // The child re-registered the inherited attachment on its own uffd
        // and its accesses faulted through the node.
        assert!(child.got_uffd && child.registers == 1, "{child:?}");
        assert!(child.faults >= 2, "{child:?}");
        assert!(
            parent.aborts >= 1,
            "occupied address must abort: {parent:?}"
        );
        // Read-only attachment, SHM_REMAP's implicit detach, final shmdt.
        assert_eq!(parent.detaches, 3, "{parent:?}");
    }
}

/// Run `exe` with a deadline: a hang is a failure, not a stuck test run.
fn run_bounded(exe: &Path, args: &[&str], sock: &Path) -> std::process::Output {
    use std::process::{Command, Stdio};
    let mut child = Command::new(exe)
        .args(args)
        .env("LD_LIBRARY_PATH", common::lib_dir())
        .env("DIPC_SOCKET", sock)
        .env_remove("LD_PRELOAD")
        .env_remove("DIPC_FALLBACK")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!("the program hung after the node died: {}", show(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("wait")
}

#[test]
fn node_death_raises_sigbus_never_zeros_or_a_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = compile("daemon_dies.c", dir.path(), Link::Sysv);
    for (mode, death) in [("fault", Death::AtFault(2)), ("idle", Death::AfterRegister)] {
        let sock = dir.path().join(format!("{mode}.sock"));
        let _node = start(&sock, death);
        let out = run_bounded(&exe, &[mode], &sock);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "{mode}: {}", show(&out));
        assert!(stdout.contains("sigbus"), "{mode}: {}", show(&out));
        assert!(!stdout.contains("survived"), "{mode}: {}", show(&out));
    }
}
