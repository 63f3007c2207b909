//! Object permissions as a second user, cluster-wide.
//!
//! The tests run as root. Root creates, on node 0, shared memory segments,
//! message queues and semaphore sets with modes 0600 and 0644: each one
//! distributed (`IPC_DIPC`) and, beside it, a kernel object of the same
//! kind and mode. Then `perm_check` runs as uid/gid 65534 ("nobody",
//! through `setpriv`), on node 1 (the home is remote: the permission check
//! happens at the home with the caller's credentials carried over the peer
//! link) and on node 0, and makes every call on both objects: the
//! distributed one must give what the kernel gives (`EACCES` for shmget,
//! shmat, IPC_STAT, msgsnd/msgrcv, semop without the mode bits; `EPERM` for
//! IPC_SET and IPC_RMID by a non-owner; success where the mode allows,
//! e.g. a `SHM_RDONLY` attach of a 0644 segment that reads root's bytes).
//!
//! Attaching a distributed segment needs a userfaultfd, which an
//! unprivileged process may create only with `vm.unprivileged_userfaultfd`
//! = 1 (or access to `/dev/userfaultfd`). The test sets the sysctl to 1 for
//! its run and restores the old value; where `/proc/sys` is read-only it
//! skips that one check with a message.
//!
//! A second test drops root inside a process that already talks to its
//! node daemon (`setresuid` after the first call): the kernel checks the
//! new credentials at every call, and so does dipc (each request carries
//! them as `SCM_CREDENTIALS`).
//!
//! Also checked: the node's local socket is a socket of mode 0666 owned by
//! root (see `node/src/local.rs`: any local user may call, every request
//! is checked with the caller's credentials of the moment, as the kernel
//! does).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use dipc_testkit::{Cluster, Link, Program, compile_c_with_header};

const COMMON: &str = include_str!("c/perm_common.h");
const SETUP: &str = include_str!("c/perm_setup.c");
const CHECK: &str = include_str!("c/perm_check.c");

const SYSCTL: &str = "/proc/sys/vm/unprivileged_userfaultfd";

/// Serialises the tests of this file that touch the sysctl.
static SYSCTL_LOCK: Mutex<()> = Mutex::new(());

fn cluster(nodes: usize) -> Cluster {
    let c = match Cluster::builder()
        .bin(env!("CARGO_BIN_EXE_dipc"))
        .nodes(nodes)
        .start()
    {
        Ok(c) => c,
        Err(e) => panic!("cluster of {nodes} nodes did not start: {e:#}"),
    };
    // The cluster's directory is private to root; nobody must reach the
    // sockets in it (their own mode is what is under test).
    std::fs::set_permissions(c.dir(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the cluster directory");
    c
}

/// The programs, compiled and copied where nobody may run them.
struct Progs {
    _dir: tempfile::TempDir,
    setup: Program,
    check: Program,
    check_path: PathBuf,
}

fn programs() -> Progs {
    let build = |name: &str, src: &str| {
        compile_c_with_header("", ("perm_common.h", COMMON), name, src, Link::Sysv)
            .unwrap_or_else(|e| panic!("{e:#}"))
    };
    let setup = build("perm_setup", SETUP);
    let check = build("perm_check", CHECK);
    let dir = tempfile::Builder::new()
        .prefix("dipc-perms-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod tempdir");
    let check_path = dir.path().join("perm_check");
    std::fs::copy(check.path(), &check_path).expect("copy perm_check");
    std::fs::set_permissions(&check_path, std::fs::Permissions::from_mode(0o755))
        .expect("chmod perm_check");
    Progs {
        _dir: dir,
        setup,
        check,
        check_path,
    }
}

/// `cmd` as uid/gid 65534 with no supplementary groups, same environment.
fn as_nobody(cmd: &Command, program: &Path) -> Command {
    let mut n = Command::new("setpriv");
    n.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(program)
        .args(cmd.get_args());
    n.env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            n.env(k, v);
        }
    }
    for (k, v) in std::env::vars_os() {
        if k == "PATH" || k == "HOME" {
            n.env(k, v);
        }
    }
    n
}

fn run(what: &str, mut cmd: Command, c: &Cluster) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            c.logs()
        );
    }
    out
}

/// A key base no other test run uses.
fn key_base() -> i32 {
    0x0d00_0000 | ((std::process::id() as i32 & 0xffff) << 8)
}

/// Create the objects as root on node 0; their ids.
fn create(c: &Cluster, p: &Progs, base: i32) -> Vec<String> {
    let mut cmd = c.run_on(0, &p.setup);
    cmd.args(["create", &base.to_string()]);
    let out = run("perm_setup create", cmd, c);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ids "))
        .unwrap_or_else(|| panic!("no ids from perm_setup:\n{stdout}"));
    let ids: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    assert_eq!(ids.len(), 12, "{line}");
    ids
}

fn remove(c: &Cluster, p: &Progs, ids: &[String]) {
    let mut cmd = c.run_on(0, &p.setup);
    cmd.arg("remove").args(ids);
    run("perm_setup remove", cmd, c);
}

/// Sets `vm.unprivileged_userfaultfd` to 1 while alive, if it can.
struct UffdSysctl {
    old: Option<String>,
}

impl UffdSysctl {
    fn enable() -> (UffdSysctl, bool) {
        let Ok(old) = std::fs::read_to_string(SYSCTL) else {
            return (UffdSysctl { old: None }, false);
        };
        if old.trim() == "1" {
            return (UffdSysctl { old: None }, true);
        }
        match std::fs::write(SYSCTL, "1") {
            Ok(()) => (UffdSysctl { old: Some(old) }, true),
            Err(e) => {
                eprintln!(
                    "perms: cannot set {SYSCTL} ({e}); the unprivileged attach check is skipped"
                );
                (UffdSysctl { old: None }, false)
            }
        }
    }
}

impl Drop for UffdSysctl {
    fn drop(&mut self) {
        if let Some(old) = &self.old
            && let Err(e) = std::fs::write(SYSCTL, old.trim())
        {
            eprintln!("perms: could not restore {SYSCTL} to {old:?}: {e}");
        }
    }
}

#[test]
fn nobody_gets_the_kernels_answers_on_root_objects() {
    let _lock = SYSCTL_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let c = cluster(2);
    let p = programs();
    let base = key_base();
    let ids = create(&c, &p, base);
    let (_sysctl, uffd) = UffdSysctl::enable();
    for node in [1, 0] {
        let mut inner = c.run_on(node, &p.check);
        inner.arg(base.to_string()).args(&ids);
        if !uffd {
            inner.env("PERM_NO_UFFD", "1");
        }
        let cmd = as_nobody(&inner, &p.check_path);
        let out = run(&format!("perm_check as nobody on node {node}"), cmd, &c);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(", 0 failed"), "{stdout}");
        if uffd {
            assert!(
                stdout.contains("same read through SHM_RDONLY"),
                "the read-only attach was not checked:\n{stdout}"
            );
        }
    }
    remove(&c, &p, &ids);
}

/// A process that connected as root and then dropped to nobody is checked
/// as nobody at its next call (IPC_STAT, IPC_RMID fail with `EACCES`/`EPERM`
/// as the kernel's do): every request carries the caller's credentials of
/// the moment (`SCM_CREDENTIALS`, checked by the kernel), not those of the
/// connection (`SO_PEERCRED`).
#[test]
fn dropping_root_in_process_is_seen_at_the_next_call() {
    let c = cluster(1);
    let p = programs();
    let base = key_base() + 0x40;
    let ids = create(&c, &p, base);
    let mut cmd = c.run_on(0, &p.setup);
    cmd.arg("drop").args(&ids);
    let out = cmd.output().expect("run perm_setup drop");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // Best effort: a failing check may have removed some already.
    let mut rm = c.run_on(0, &p.setup);
    rm.arg("remove").args(&ids);
    let _ = rm.output();
    assert!(
        out.status.success() && stdout.contains(", 0 failed"),
        "perm_setup drop ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn local_socket_is_a_root_owned_0666_socket() {
    let c = cluster(1);
    let sock = c.node_socket(0);
    let meta = std::fs::symlink_metadata(&sock).expect("stat the socket");
    assert!(meta.file_type().is_socket(), "{}", sock.display());
    assert_eq!(meta.mode() & 0o7777, 0o666, "{}", sock.display());
    assert_eq!(meta.uid(), 0);
}
