//! The kernel facts dipc's page-fault path relies on, checked on this
//! kernel: a memfd mapped and registered in this process, its faults served
//! from a thread through the `Uffd` API, exactly as the node daemon serves
//! an application's faults.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use dipc_shmem::{
    Error, Mapping, Memfd, Placement, Protection, Uffd, UffdEvent, create_uffd, page_size, register,
};

/// A fault that is never served blocks its thread forever: abort the whole
/// test binary instead of hanging the test run.
fn watchdog() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(60));
            eprintln!("uffd tests: a fault was not served within 60 s, aborting");
            std::process::abort();
        });
    });
}

type Handler = dyn Fn(&Uffd, UffdEvent) + Send + Sync;

/// The "daemon": a thread serving the faults of one userfaultfd.
struct Server {
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<UffdEvent>>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(uffd: Uffd, handler: Box<Handler>) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let (s, e) = (stop.clone(), events.clone());
        let thread = std::thread::spawn(move || {
            let mut batch = Vec::new();
            while !s.load(Ordering::Relaxed) {
                batch.clear();
                uffd.read_events(&mut batch).expect("read_events");
                if batch.is_empty() {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                for ev in &batch {
                    e.lock().expect("events lock").push(*ev);
                    handler(&uffd, *ev);
                }
            }
        });
        Server {
            stop,
            events,
            thread: Some(thread),
        }
    }

    fn events(&self) -> Vec<UffdEvent> {
        self.events.lock().expect("events lock").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Setup {
    memfd: Arc<Memfd>,
    mapping: Mapping,
    /// The process keeps its own copy of the uffd (as libsysv does).
    _uffd: OwnedFd,
    daemon_uffd: Option<Uffd>,
}

fn setup(pages: u64, readonly: bool) -> Setup {
    watchdog();
    let ps = page_size();
    let memfd = Arc::new(Memfd::create("dipc-uffd-test", pages * ps).expect("memfd"));
    let (mapping, wp) = if readonly {
        // The memfd itself (read-write), mapped PROT_READ: the kernel refuses
        // (EPERM) to register a mapping without VM_MAYWRITE, i.e. one of a
        // file opened read-only.
        let m = Mapping::map(
            memfd.as_fd(),
            memfd.size(),
            Placement::Anywhere,
            Protection::READ_ONLY,
        )
        .expect("map");
        (m, false)
    } else {
        let m = Mapping::map(
            memfd.as_fd(),
            memfd.size(),
            Placement::Anywhere,
            Protection::READ_WRITE,
        )
        .expect("map");
        (m, true)
    };
    let uffd = create_uffd().expect("create_uffd (needs root or vm.unprivileged_userfaultfd=1)");
    register(uffd.as_fd(), mapping.addr(), mapping.len(), wp).expect("register");
    let daemon_uffd = Some(Uffd::from_fd(uffd.try_clone().expect("dup uffd")));
    Setup {
        memfd,
        mapping,
        _uffd: uffd,
        daemon_uffd,
    }
}

fn page_of(addr: u64) -> u64 {
    addr & !(page_size() - 1)
}

#[test]
fn missing_fault_is_served_by_copy() {
    let mut s = setup(4, false);
    let ps = page_size();
    let server = Server::start(
        s.daemon_uffd.take().expect("uffd"),
        Box::new(move |uffd, ev| {
            if let UffdEvent::Fault {
                addr, minor: false, ..
            } = ev
            {
                uffd.copy(page_of(addr), &vec![0xAB; ps as usize], false)
                    .expect("copy");
            }
        }),
    );
    let mut buf = [0u8; 16];
    s.mapping.read_at(2 * ps + 5, &mut buf).expect("read");
    assert_eq!(buf, [0xAB; 16]);
    // UFFDIO_COPY put the page into the memfd: the daemon's view sees it.
    assert!(s.memfd.is_resident(2 * ps));
    assert!(!s.memfd.is_resident(0));
    // Copied without write protection: writing needs no further fault.
    s.mapping.write_at(2 * ps, b"xyz").expect("write");
    let mut back = [0u8; 3];
    s.memfd.read_at(2 * ps, &mut back).expect("read memfd");
    assert_eq!(&back, b"xyz");
    let evs = server.events();
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert!(matches!(
        evs[0],
        UffdEvent::Fault { addr, write: false, wp: false, minor: false } if page_of(addr) == s.mapping.addr() + 2 * ps
    ));
}

#[test]
fn write_to_missing_page_reports_write() {
    let mut s = setup(1, false);
    let ps = page_size();
    let server = Server::start(
        s.daemon_uffd.take().expect("uffd"),
        Box::new(move |uffd, ev| {
            if let UffdEvent::Fault { addr, .. } = ev {
                uffd.copy(page_of(addr), &vec![0; ps as usize], false)
                    .expect("copy");
            }
        }),
    );
    s.mapping.write_at(100, b"w").expect("write");
    let evs = server.events();
    assert!(
        matches!(
            evs.as_slice(),
            [UffdEvent::Fault {
                write: true,
                wp: false,
                minor: false,
                ..
            }]
        ),
        "{evs:?}"
    );
    let mut b = [0u8; 1];
    s.memfd.read_at(100, &mut b).expect("read");
    assert_eq!(&b, b"w");
}

#[test]
fn present_page_is_a_minor_fault_served_by_continue() {
    let mut s = setup(2, false);
    let ps = page_size();
    // The daemon fills the page through its own (unregistered) view.
    s.memfd.write_at(ps, &[0x5A; 64]).expect("fill");
    assert!(s.memfd.is_resident(ps));
    let server = Server::start(
        s.daemon_uffd.take().expect("uffd"),
        Box::new(move |uffd, ev| {
            if let UffdEvent::Fault {
                addr, minor: true, ..
            } = ev
            {
                uffd.continue_(page_of(addr), ps, false).expect("continue");
            }
        }),
    );
    let mut buf = [0u8; 64];
    s.mapping.read_at(ps, &mut buf).expect("read");
    assert_eq!(buf, [0x5A; 64]);
    let evs = server.events();
    assert!(
        matches!(
            evs.as_slice(),
            [UffdEvent::Fault {
                minor: true,
                write: false,
                ..
            }]
        ),
        "{evs:?}"
    );
}

#[test]
fn write_to_write_protected_page_is_a_wp_fault() {
    let mut s = setup(1, false);
    let ps = page_size();
    s.memfd.write_at(0, b"old").expect("fill");
    let server = Server::start(
        s.daemon_uffd.take().expect("uffd"),
        Box::new(move |uffd, ev| match ev {
            // Shared state: map it write-protected.
            UffdEvent::Fault {
                addr,
                minor: true,
                wp: false,
                ..
            } => uffd.continue_(page_of(addr), ps, true).expect("continue"),
            // Ownership obtained: make it writable and wake the writer.
            UffdEvent::Fault { addr, wp: true, .. } => uffd
                .write_protect(page_of(addr), ps, false, true)
                .expect("unprotect"),
            _ => {}
        }),
    );
    let mut buf = [0u8; 3];
    s.mapping.read_at(0, &mut buf).expect("read");
    assert_eq!(&buf, b"old");
    assert_eq!(server.events().len(), 1);
    s.mapping.write_at(0, b"new").expect("write");
    s.memfd.read_at(0, &mut buf).expect("read memfd");
    assert_eq!(&buf, b"new");
    let evs = server.events();
    assert!(
        matches!(
            evs.as_slice(),
            [
                UffdEvent::Fault {
                    minor: true,
                    write: false,
                    wp: false,
                    ..
                },
                UffdEvent::Fault {
                    write: true,
                    wp: true,
                    ..
                }
            ]
        ),
        "{evs:?}"
    );
    // Now writable: another write does not fault.
    s.mapping.write_at(1, b"X").expect("write");
    assert_eq!(server.events().len(), 2);
}

#[test]
fn write_protect_after_the_fact_downgrades() {
    let mut s = setup(1, false);
    let ps = page_size();
    let base = s.mapping.addr();
    let server = Server::start(
        s.daemon_uffd.take().expect("uffd"),
        Box::new(move |uffd, ev| match ev {
            UffdEvent::Fault {
                addr, wp: false, ..
            } => uffd
                .copy(page_of(addr), &vec![1; ps as usize], false)
                .expect("copy"),
            UffdEvent::Fault { addr, wp: true, .. } => uffd
                .write_protect(page_of(addr), ps, false, true)
                .expect("unprotect"),
            _ => {}
        }),
    );
    s.mapping.write_at(0, b"a").expect("write");
    assert_eq!(server.events().len(), 1);
    // Downgrade to Shared: protect the mapped page; the next write faults.
    let daemon = Uffd::from_fd(s._uffd.try_clone().expect("dup"));
    daemon
        .write_protect(base, ps, true, false)
        .expect("protect");
    s.mapping.write_at(0, b"b").expect("write");
    let evs = server.events();
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert!(matches!(evs[1], UffdEvent::Fault { wp: true, .. }));
}

#[test]
fn punch_hole_makes_the_next_access_fault_again() {
    let mut s = setup(1, false);
    let ps = page_size();
    let fill = Arc::new(std::sync::atomic::AtomicU8::new(1));
    let f = fill.clone();
    let server = Server::start(
        s.daemon_uffd.take().expect("uffd"),
        Box::new(move |uffd, ev| {
            if let UffdEvent::Fault {
                addr, minor: false, ..
            } = ev
            {
                let v = f.load(Ordering::Relaxed);
                uffd.copy(page_of(addr), &vec![v; ps as usize], false)
                    .expect("copy");
            }
        }),
    );
    let mut b = [0u8; 1];
    s.mapping.read_at(7, &mut b).expect("read");
    assert_eq!(b, [1]);
    s.mapping.read_at(9, &mut b).expect("read again");
    assert_eq!(server.events().len(), 1);
    // Invalidate: the page leaves the memfd and this process's mapping.
    s.memfd.punch_hole(0, ps).expect("punch");
    assert!(!s.memfd.is_resident(0));
    fill.store(2, Ordering::Relaxed);
    s.mapping.read_at(7, &mut b).expect("read after punch");
    assert_eq!(b, [2]);
    let evs = server.events();
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert!(matches!(evs[1], UffdEvent::Fault { minor: false, .. }));
}

#[test]
fn read_only_registration() {
    let mut s = setup(2, true);
    let ps = page_size();
    assert!(!s.mapping.is_writable());
    s.memfd.write_at(0, b"present").expect("fill");
    let server = Server::start(
        s.daemon_uffd.take().expect("uffd"),
        Box::new(move |uffd, ev| match ev {
            UffdEvent::Fault {
                addr, minor: true, ..
            } => uffd.continue_(page_of(addr), ps, false).expect("continue"),
            UffdEvent::Fault {
                addr, minor: false, ..
            } => uffd
                .copy(page_of(addr), &vec![7; ps as usize], false)
                .expect("copy"),
            _ => {}
        }),
    );
    let mut buf = [0u8; 7];
    s.mapping.read_at(0, &mut buf).expect("read present");
    assert_eq!(&buf, b"present");
    let mut b = [0u8; 1];
    s.mapping.read_at(ps + 1, &mut b).expect("read missing");
    assert_eq!(b, [7]);
    assert!(matches!(s.mapping.write_at(0, b"x"), Err(Error::ReadOnly)));
    let evs = server.events();
    assert!(
        matches!(
            evs.as_slice(),
            [
                UffdEvent::Fault { minor: true, .. },
                UffdEvent::Fault { minor: false, .. }
            ]
        ),
        "{evs:?}"
    );
}

#[test]
fn eexist_is_benign() {
    let s = setup(1, false);
    let ps = page_size();
    let daemon = s.daemon_uffd.as_ref().expect("uffd");
    daemon
        .copy(s.mapping.addr(), &vec![3; ps as usize], false)
        .expect("first copy");
    // The page is there now: a second resolution of the same page is Ok.
    daemon
        .copy(s.mapping.addr(), &vec![4; ps as usize], false)
        .expect("second copy");
    daemon
        .continue_(s.mapping.addr(), ps, false)
        .expect("continue on a mapped page");
    let mut b = [0u8; 1];
    s.mapping.read_at(0, &mut b).expect("read");
    assert_eq!(b, [3]);
}

#[test]
fn mapping_placement() {
    watchdog();
    let ps = page_size();
    let memfd = Memfd::create("dipc-place", 2 * ps).expect("memfd");
    let a = Mapping::map(
        memfd.as_fd(),
        2 * ps,
        Placement::Anywhere,
        Protection::READ_WRITE,
    )
    .expect("map");
    // NOREPLACE over an existing mapping fails with EEXIST.
    let e = Mapping::map(
        memfd.as_fd(),
        ps,
        Placement::Fixed {
            addr: a.addr(),
            replace: false,
        },
        Protection::READ_WRITE,
    )
    .expect_err("overlap");
    assert_eq!(e.errno(), Some(libc::EEXIST));
    // Unaligned address: EINVAL.
    let e = Mapping::map(
        memfd.as_fd(),
        ps,
        Placement::Fixed {
            addr: a.addr() + 1,
            replace: true,
        },
        Protection::READ_WRITE,
    )
    .expect_err("unaligned");
    assert_eq!(e.errno(), Some(libc::EINVAL));
    a.write_at(0, b"q").expect("write");
    let addr = a.addr();
    // Replace (SHM_REMAP): the new mapping takes over the range. Forget the
    // old owner first so the range is unmapped once.
    let b = Mapping::map(
        memfd.as_fd(),
        2 * ps,
        Placement::Fixed {
            addr,
            replace: true,
        },
        Protection::READ_ONLY,
    )
    .expect("remap");
    std::mem::forget(a);
    assert_eq!(b.addr(), addr);
    let mut q = [0u8; 1];
    b.read_at(0, &mut q).expect("read");
    assert_eq!(&q, b"q");
    assert!(b.contains(addr + 2 * ps - 1));
    assert!(!b.contains(addr + 2 * ps));
}

/// Kernel fact: a mapping of a file opened read-only (no `VM_MAYWRITE`)
/// cannot be registered (`EPERM`), so a read-only attachment maps the
/// read-write memfd with `PROT_READ` instead of a read-only reopening.
#[test]
fn read_only_file_cannot_be_registered() {
    use std::os::fd::AsRawFd;
    watchdog();
    let memfd = Memfd::create("dipc-ro", page_size()).expect("memfd");
    let ro = std::fs::File::open(format!("/proc/self/fd/{}", memfd.as_fd().as_raw_fd()))
        .expect("reopen read-only");
    let m = Mapping::map(
        ro.as_fd(),
        page_size(),
        Placement::Anywhere,
        Protection::READ_ONLY,
    )
    .expect("map");
    let uffd = create_uffd().expect("create_uffd");
    let e = register(uffd.as_fd(), m.addr(), m.len(), false).expect_err("register");
    assert_eq!(e.errno(), Some(libc::EPERM));
}
