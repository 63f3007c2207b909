//! Tests of the kit itself, with what exists without the dipc binary: `cc`,
//! `pkg-config`, `sh`, `sleep`, and a fake `dipc` written in C.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dipc_testkit::{
    Cluster, Link, Process, compile_c, poll_until, stop_all, sysv_pc_dir, target_dir,
};

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn target_dir_is_the_profile_dir_of_this_test() {
    let dir = target_dir();
    let exe = std::env::current_exe().expect("current_exe");
    assert!(
        exe.starts_with(&dir),
        "{} not under {}",
        exe.display(),
        dir.display()
    );
    assert!(dir.join(".cargo-lock").exists(), "{}", dir.display());
}

#[test]
fn plain_program_compiles_and_runs() {
    let src = r#"
        #include <stdio.h>
        int main(int argc, char **argv) {
            printf("hello %d %s\n", 42, argc > 1 ? argv[1] : "-");
            return 3;
        }
    "#;
    let prog = compile_c(src, "kit-hello", Link::Plain).expect("compile");
    assert_eq!(prog.link(), Link::Plain);
    let out = prog.command().arg("world").output().expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello 42 world\n");
    assert_eq!(out.status.code(), Some(3));
    // Compiling the same program again reuses the binary.
    let again = compile_c(src, "kit-hello", Link::Plain).expect("compile again");
    assert_eq!(again.path(), prog.path());
}

#[test]
fn compile_errors_carry_the_compiler_message() {
    // -Wall -Werror: an unused variable is an error.
    let src = "int main(void) { int unused_thing = 1; return 0; }";
    let err = compile_c(src, "kit-bad", Link::Plain).expect_err("must not compile");
    let msg = format!("{err:#}");
    assert!(msg.contains("unused_thing"), "{msg}");
    assert!(msg.contains("kit-bad"), "{msg}");
}

#[test]
fn bad_program_names_are_refused() {
    assert!(compile_c("int main(void){return 0;}", "../x", Link::Plain).is_err());
    assert!(compile_c("int main(void){return 0;}", "", Link::Plain).is_err());
}

#[test]
fn sysv_program_links_through_pkg_config_with_an_rpath() {
    let pc_dir = sysv_pc_dir().expect("sysv.pc");
    let out = Command::new("pkg-config")
        .env("PKG_CONFIG_PATH", &pc_dir)
        .args(["--libs", "sysv"])
        .output()
        .expect("pkg-config");
    assert!(out.status.success(), "{out:?}");
    let libs = String::from_utf8_lossy(&out.stdout);
    let libdir = target_dir();
    assert!(libs.contains("-lsysv"), "{libs}");
    assert!(
        libs.contains(&format!("-Wl,-rpath,{}", libdir.display())),
        "{libs}"
    );

    // Without the flag no call goes to dipc: the kernel's shm works as usual.
    let src = r#"
        #include <stdio.h>
        #include <sys/ipc.h>
        #include <sys/shm.h>
        int main(void) {
            int id = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
            if (id < 0) { perror("shmget"); return 1; }
            char *p = shmat(id, NULL, 0);
            if (p == (void *)-1) { perror("shmat"); return 1; }
            p[0] = 'x';
            shmctl(id, IPC_RMID, NULL);
            puts(p[0] == 'x' ? "ok" : "bad");
            return 0;
        }
    "#;
    let prog = compile_c(src, "kit-sysv", Link::Sysv).expect("compile");
    let out = prog.command().output().expect("run");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}

#[test]
fn process_is_stopped_when_its_owner_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("sleep.log");
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let mut cmd = Command::new("sleep");
        cmd.arg("1000");
        let p = Process::spawn("sleeper", cmd, &log).expect("spawn");
        tx.send(p.pid()).expect("send pid");
        panic!("test body failed while the sleeper runs");
    });
    let pid = rx.recv_timeout(Duration::from_secs(10)).expect("pid");
    assert!(t.join().is_err(), "the thread must have panicked");
    assert!(!alive(pid), "sleep (pid {pid}) outlived the panic");
}

#[test]
fn stop_all_kills_what_ignores_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "trap '' TERM; echo armed$((1 + 1)); exec sleep 1000"]);
    let mut p = Process::spawn("stubborn", cmd, &dir.path().join("stubborn.log")).expect("spawn");
    // Wait until the trap is installed, or SIGTERM could still kill sh (the
    // marker is computed so that the log's command line cannot match it).
    poll_until("stubborn to be ready", Duration::from_secs(10), || {
        Ok(p.log().contains("armed2"))
    })
    .expect("ready");
    let grace = Duration::from_millis(300);
    let start = Instant::now();
    stop_all([&mut p], grace).expect("stop_all");
    assert!(start.elapsed() >= grace, "killed before the grace period");
    let status = p.try_wait().expect("try_wait").expect("exited");
    assert_eq!(status.signal(), Some(9), "{status:?}");
    assert!(!alive(p.pid()));
    assert!(
        p.log().contains("testkit: starting stubborn"),
        "{}",
        p.log()
    );
}

#[test]
fn poll_until_times_out_with_the_last_error() {
    let start = Instant::now();
    let mut n = 0;
    let err = poll_until("the impossible", Duration::from_millis(200), || {
        n += 1;
        anyhow::bail!("attempt {n} failed")
    })
    .expect_err("cannot succeed");
    assert!(start.elapsed() >= Duration::from_millis(200));
    let msg = format!("{err:#}");
    assert!(msg.contains("the impossible"), "{msg}");
    assert!(msg.contains(&format!("attempt {n} failed")), "{msg}");
}

/// A stand-in for `dipc`: `referee` listens on `--listen` and never
/// answers, `node` says it was refused and exits 2; each writes its pid to
/// `$FAKE_PIDS`.
const FAKE_DIPC: &str = r#"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *pids = getenv("FAKE_PIDS");
    if (pids) {
        FILE *f = fopen(pids, "a");
        if (f) { fprintf(f, "%d\n", (int)getpid()); fclose(f); }
    }
    if (argc > 1 && strcmp(argv[1], "node") == 0) {
        fprintf(stderr, "fake node: referee refused this node: wrong secret\n");
        return 2;
    }
    int port = 0;
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--listen") == 0) {
            const char *colon = strrchr(argv[i + 1], ':');
            if (colon) port = atoi(colon + 1);
        }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 16) != 0) {
        perror("fake referee: bind");
        return 1;
    }
    fprintf(stderr, "fake referee listening on %d\n", port);
    for (;;) pause();
}
"#;

#[test]
fn cluster_start_failure_reports_logs_and_leaves_nothing_behind() {
    let fake = compile_c(FAKE_DIPC, "kit-fake-dipc", Link::Plain).expect("compile fake");
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = dir.path().join("pids");

    let err = match Cluster::builder()
        .bin(fake.path())
        .nodes(2)
        .referee_env("FAKE_PIDS", &pids)
        .node_env("FAKE_PIDS", &pids)
        .start_timeout(Duration::from_secs(5))
        .start()
    {
        Ok(_) => panic!("a cluster of fakes cannot start"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("exited (exit status: 2) before it was up"),
        "{err}"
    );
    assert!(err.contains("wrong secret"), "{err}");
    assert!(err.contains("fake referee listening"), "{err}");
    let pids = std::fs::read_to_string(&pids).expect("pid file");
    let pids: Vec<u32> = pids.lines().map(|l| l.parse().expect("pid")).collect();
    // The referee and the node that failed first; the other node may have
    // been stopped before it got to write its pid.
    assert!((2..=3).contains(&pids.len()), "{pids:?}");
    for pid in pids {
        assert!(!alive(pid), "pid {pid} outlived the failed start");
    }
}

#[test]
fn cluster_start_times_out_when_the_referee_never_listens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("silent-dipc");
    {
        let mut f = std::fs::File::create(&script).expect("create");
        f.write_all(b"#!/bin/sh\necho \"silent $1 up\" >&2\nexec sleep 1000\n")
            .expect("write");
    }
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let start = Instant::now();
    let err = match Cluster::builder()
        .bin(&script)
        .start_timeout(Duration::from_millis(500))
        .start()
    {
        Ok(_) => panic!("the silent referee cannot be ready"),
        Err(e) => format!("{e:#}"),
    };
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(err.contains("did not accept connections"), "{err}");
    assert!(err.contains("silent referee up"), "{err}");
}
