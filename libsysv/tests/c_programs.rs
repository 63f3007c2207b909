//! C programs compiled with `cc` against the built libsysv: local calls
//! behave exactly as the kernel's, distributed calls without a daemon
//! fall back (or fail) as documented, and `dipc.h` agrees with the Rust
//! constants.

mod common;

use common::{Link, compile, run, show};

#[test]
fn local_calls_behave_as_the_kernel() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Baseline: the same checks against glibc alone must pass.
    let plain = compile("kernel_equiv.c", dir.path(), Link::Plain);
    let out = run(&plain, &[], &[], false);
    assert!(out.status.success(), "baseline: {}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("libsysv"), "{stdout}");

    let linked = compile("kernel_equiv.c", dir.path(), Link::Sysv);
    for (exe, preload) in [(&linked, false), (&plain, true)] {
        let out = run(exe, &[], &[], preload);
        assert!(out.status.success(), "preload={preload}: {}", show(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("shmget from: ") && stdout.contains("libsysv.so"),
            "libsysv's shmget was not the one called: {stdout}"
        );
        assert!(stdout.ends_with("ok\n"), "{}", show(&out));
    }
}

#[test]
fn no_daemon_acts_locally_with_one_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("absent.sock");
    let sock = sock.to_str().expect("utf-8 path");
    let linked = compile("no_daemon.c", dir.path(), Link::Sysv);
    let plain = compile("no_daemon.c", dir.path(), Link::Plain);
    for (exe, preload) in [(&linked, false), (&plain, true)] {
        let out = run(exe, &["local"], &[("DIPC_SOCKET", sock)], preload);
        assert!(out.status.success(), "{}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "exactly one warning expected: {}",
            show(&out)
        );
        assert!(lines[0].contains(sock), "{}", lines[0]);
        assert!(lines[0].contains("DIPC_FALLBACK=error"), "{}", lines[0]);
    }
}

#[test]
fn keys_selected_by_env_fall_back_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = compile("kernel_equiv.c", dir.path(), Link::Sysv);
    // Every key distributed, no daemon: everything still works locally.
    let out = run(&exe, &[], &[("DIPC_KEYS", "all")], false);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().count(),
        1,
        "{}",
        show(&out)
    );
}

#[test]
fn fallback_error_gives_econnrefused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = compile("no_daemon.c", dir.path(), Link::Sysv);
    let out = run(&exe, &["error"], &[("DIPC_FALLBACK", "error")], false);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        out.stderr.is_empty(),
        "no warning in error mode: {}",
        show(&out)
    );
}

#[test]
fn bad_page_size_is_einval_for_distributed_shmget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = compile("no_daemon.c", dir.path(), Link::Sysv);
    let out = run(&exe, &["local"], &[("DIPC_PAGE_SIZE", "1000")], false);
    assert!(!out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAIL") && stdout.contains("errno 22"),
        "{}",
        show(&out)
    );
}

#[test]
fn dipc_h_matches_the_rust_constants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = compile("constants.c", dir.path(), Link::Plain);
    let out = run(&exe, &[], &[], false);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut seen = 0;
    for line in stdout.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["IPC_DIPC", v] => assert_eq!(v.parse::<i32>().ok(), Some(sysv::IPC_DIPC)),
            ["DIPC_ID_BIT", v] => assert_eq!(v.parse::<i32>().ok(), Some(sysv::DIPC_ID_BIT)),
            ["DIPC_ENV_SOCKET", v] => assert_eq!(*v, sysv::config::ENV_SOCKET),
            ["DIPC_ENV_KEYS", v] => assert_eq!(*v, sysv::config::ENV_KEYS),
            ["DIPC_ENV_FALLBACK", v] => assert_eq!(*v, sysv::config::ENV_FALLBACK),
            ["DIPC_ENV_PAGE_SIZE", v] => assert_eq!(*v, sysv::config::ENV_PAGE_SIZE),
            ["DIPC_ENV_SHM_MODE", v] => assert_eq!(*v, sysv::config::ENV_SHM_MODE),
            ["DIPC_ENV_TIMEOUT_MS", v] => assert_eq!(*v, sysv::config::ENV_TIMEOUT_MS),
            ["DIPC_ENV_QUANTUM_US", v] => assert_eq!(*v, sysv::config::ENV_QUANTUM_US),
            ["DIPC_ENV_PREFETCH", v] => assert_eq!(*v, sysv::config::ENV_PREFETCH),
            ["DIPC_MAX_QUANTUM_US", v] => {
                assert_eq!(v.parse::<u32>().ok(), Some(sysv::config::MAX_QUANTUM_US))
            }
            ["DIPC_MAX_PREFETCH", v] => {
                assert_eq!(v.parse::<u32>().ok(), Some(sysv::config::MAX_PREFETCH))
            }
            ["DIPC_DEFAULT_SOCKET", v] => {
                assert_eq!(*v, dipc_wire::local::DEFAULT_SOCKET)
            }
            ["distributed", id, yes] => {
                let id: i32 = id.parse().expect("id");
                assert_eq!(*yes == "1", sysv::route::is_dipc_id(id), "id {id:#x}");
            }
            _ => panic!("unexpected line {line:?}"),
        }
        seen += 1;
    }
    assert_eq!(seen, 21, "{stdout}");
}

#[test]
fn pkg_config_template() {
    let pc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sysv.pc.in"))
        .expect("sysv.pc.in");
    for var in ["@PREFIX@", "@LIBDIR@", "@INCLUDEDIR@", "-lsysv"] {
        assert!(pc.contains(var), "{var} missing");
    }
    assert!(
        pc.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "Version must match the crate's"
    );
}
