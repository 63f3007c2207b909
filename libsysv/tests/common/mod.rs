//! Test support: compile the C programs of `tests/c/` against the built
//! libsysv and run them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The directory holding a fresh `libsysv.so`. `cargo test` builds every
/// crate type of the library into `deps/`, next to this test binary (it
/// copies them up to `target/<profile>/` only on `cargo build`, so the copy
/// there may be stale). If it is missing anyway, build it with the same
/// target dir.
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps dir").to_path_buf();
    if deps.join("libsysv.so").exists() {
        return deps;
    }
    let profile_dir = deps.parent().expect("profile dir").to_path_buf();
    let target_dir = profile_dir.parent().expect("target dir");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "-p", "sysv"])
        .env("CARGO_TARGET_DIR", target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("run cargo build -p sysv");
    assert!(st.success(), "cargo build -p sysv failed");
    assert!(profile_dir.join("libsysv.so").exists());
    profile_dir
}

/// How a C program is linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Against libc only (for the baseline, or for `LD_PRELOAD`).
    Plain,
    /// `-lsysv`, found through an rpath.
    Sysv,
}

/// Compile `tests/c/<name>` into `out_dir`.
pub fn compile(name: &str, out_dir: &Path, link: Link) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = manifest.join("tests/c").join(name);
    let include = manifest.join("../include");
    let exe = out_dir.join(format!(
        "{}-{}",
        name.trim_end_matches(".c"),
        if link == Link::Sysv { "sysv" } else { "plain" }
    ));
    let mut cmd = Command::new("cc");
    cmd.args(["-Wall", "-Wextra", "-Werror", "-g", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-I")
        .arg(&include);
    if link == Link::Sysv {
        let lib = lib_dir();
        cmd.arg("-L")
            .arg(&lib)
            .arg("-lsysv")
            .arg(format!("-Wl,-rpath,{}", lib.display()));
    }
    let out = cmd.output().expect("run cc");
    assert!(
        out.status.success(),
        "cc {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Run `exe` with a clean dipc environment plus `env`; with `preload`
/// under `LD_PRELOAD=libsysv.so`. `DIPC_SOCKET` defaults to a path where
/// no daemon listens.
pub fn run(exe: &Path, args: &[&str], env: &[(&str, &str)], preload: bool) -> Output {
    let mut cmd = Command::new(exe);
    cmd.args(args);
    for v in [
        "DIPC_SOCKET",
        "DIPC_KEYS",
        "DIPC_FALLBACK",
        "DIPC_PAGE_SIZE",
        "DIPC_SHM_MODE",
        "DIPC_TIMEOUT_MS",
        "LD_PRELOAD",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("DIPC_SOCKET", "/nonexistent/dipc-test/node.sock");
    // cargo test's LD_LIBRARY_PATH names target/<profile>/, whose
    // libsysv.so may be stale, and it beats the rpath: use ours.
    cmd.env("LD_LIBRARY_PATH", lib_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if preload {
        cmd.env("LD_PRELOAD", lib_dir().join("libsysv.so"));
    }
    cmd.output().expect("run test program")
}

/// Stdout and stderr of a run, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
