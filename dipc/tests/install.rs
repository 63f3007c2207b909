//! `make install` into a temporary prefix, then a C program built and run
//! against the installed copy only.
//!
//! The test installs this build (`PROFILE=dev SKIP_BUILD=1`, so nothing is
//! rebuilt) with `make install PREFIX=<tmp>`, checks every file landed
//! (binary, `libsysv.so`, `libsysv.a`, `dipc.h`, `sysv.pc`, man pages),
//! builds `examples/` with its Makefile using `pkg-config` on the installed
//! `sysv.pc` alone, links one example statically against `libsysv.a`, and
//! runs the dynamically linked Jacobi on 2 nodes with the installed `dipc
//! run`. It also installs the systemd units and config under a `DESTDIR`
//! and checks the config file is accepted by `dipc --config`.

use std::path::Path;
use std::process::{Command, Output};

use dipc_testkit::{libsysv, repo_root, target_dir};

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("{shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn make(args: &[&str]) -> Command {
    let mut cmd = Command::new("make");
    let target = target_dir();
    let target_root = target.parent().unwrap_or(&target);
    cmd.current_dir(repo_root())
        .arg("--no-print-directory")
        .args(args)
        .arg("PROFILE=dev")
        .arg("SKIP_BUILD=1")
        .arg(format!("CARGO_TARGET_DIR={}", target_root.display()));
    cmd
}

fn assert_file(p: &Path) {
    assert!(p.is_file(), "{} was not installed", p.display());
}

#[test]
fn make_install_then_build_and_run_against_the_installed_copy() {
    libsysv().expect("libsysv built");
    let tmp = tempfile::tempdir().expect("tempdir");
    let prefix = tmp.path().join("prefix");
    let p = |s: &str| prefix.join(s);
    run(make(&["install", &format!("PREFIX={}", prefix.display())]).env_remove("MAKEFLAGS"));
    for f in [
        "bin/dipc",
        "lib/libsysv.so",
        "lib/libsysv.a",
        "include/dipc.h",
        "lib/pkgconfig/sysv.pc",
        "share/man/man1/dipc.1",
        "share/man/man1/dipc-run.1",
        "share/man/man1/dipc-ipcs.1",
        "share/man/man3/dipc.h.3",
    ] {
        assert_file(&p(f));
    }
    let man = std::fs::read_to_string(p("share/man/man1/dipc-ipcrm.1")).expect("man page");
    assert!(man.contains(".TH") && man.contains("shmem\\-id"), "{man}");

    // pkg-config on the installed sysv.pc alone.
    let pc_path = p("lib/pkgconfig");
    let flags = run(Command::new("pkg-config")
        .env("PKG_CONFIG_PATH", &pc_path)
        .env_remove("PKG_CONFIG_LIBDIR")
        .args(["--cflags", "--libs", "sysv"]));
    let flags = String::from_utf8_lossy(&flags.stdout).into_owned();
    assert!(
        flags.contains(&format!("-I{}", p("include").display()))
            && flags.contains(&format!("-L{}", p("lib").display()))
            && flags.contains("-lsysv"),
        "{flags}"
    );

    // The examples' Makefile, in a copy, against the installed copy.
    let ex = tmp.path().join("examples");
    std::fs::create_dir(&ex).expect("mkdir");
    for f in [
        "Makefile",
        "dipc_example.h",
        "jacobi.c",
        "matmul.c",
        "pipeline.c",
    ] {
        std::fs::copy(repo_root().join("examples").join(f), ex.join(f)).expect("copy example");
    }
    run(Command::new("make")
        .current_dir(&ex)
        .env("PKG_CONFIG_PATH", &pc_path)
        .env_remove("MAKEFLAGS"));
    for f in ["jacobi", "matmul", "pipeline", "jacobi-plain"] {
        assert_file(&ex.join(f));
    }
    // Statically linked against libsysv.a.
    let static_flags = run(Command::new("pkg-config")
        .env("PKG_CONFIG_PATH", &pc_path)
        .args(["--libs-only-l", "--static", "sysv"]));
    let libs: Vec<String> = String::from_utf8_lossy(&static_flags.stdout)
        .split_whitespace()
        .filter(|l| *l != "-lsysv")
        .map(str::to_string)
        .collect();
    run(Command::new("cc")
        .current_dir(&ex)
        .arg("-O2")
        .arg(format!("-I{}", p("include").display()))
        .args(["-o", "matmul-static", "matmul.c"])
        .arg(p("lib/libsysv.a"))
        .args(&libs));
    let nm = run(Command::new("nm").arg(ex.join("matmul-static")));
    assert!(
        String::from_utf8_lossy(&nm.stdout)
            .lines()
            .any(|l| l.ends_with(" T shmget")),
        "libsysv's shmget not linked in"
    );

    // The installed dipc runs the installed-library build on 2 nodes.
    let out = run(Command::new(p("bin/dipc"))
        .env("LD_LIBRARY_PATH", p("lib"))
        .env_remove("DIPC_SOCKET")
        .args(["run", "--nodes", "2", "--"])
        .arg(ex.join("jacobi"))
        .args(["0x4e00", "24", "8"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("[0] jacobi ") && l.ends_with("serial=equal")),
        "{text}"
    );
    assert!(text.contains("[1] rank 1/2: shm id 1"), "{text}");
}

#[test]
fn systemd_units_and_the_example_config() {
    let tmp = tempfile::tempdir().expect("tempdir");
    run(make(&[
        "install-systemd",
        &format!("DESTDIR={}", tmp.path().display()),
        "BINDIR=/opt/dipc/bin",
    ])
    .env_remove("MAKEFLAGS"));
    for unit in ["dipc-referee.service", "dipc-node.service"] {
        let text = std::fs::read_to_string(tmp.path().join("etc/systemd/system").join(unit))
            .expect("unit installed");
        assert!(
            text.contains("ExecStart=/opt/dipc/bin/dipc --config /etc/dipc/dipc.toml"),
            "{text}"
        );
        assert!(!text.contains('@'), "unsubstituted placeholder in {unit}");
    }
    let cfg = tmp.path().join("etc/dipc/dipc.toml");
    assert_file(&cfg);
    // The config parses (dipc loads it before anything else), so the only
    // error is the unreachable node.
    let out = Command::new(env!("CARGO_BIN_EXE_dipc"))
        .arg("--config")
        .arg(&cfg)
        .args(["ipcmk", "-Q", "--socket", "/nonexistent/node.sock"])
        .output()
        .expect("dipc");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("/nonexistent/node.sock") && !err.contains("config"),
        "{err}"
    );
}
