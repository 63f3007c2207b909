//! Where things are: the repository, cargo's output directory, the binary,
//! libsysv.
//!
//! The output directory is found from the running test executable
//! (`target/<profile>/deps/<test>-<hash>`), not from `CARGO_TARGET_DIR`
//! alone, so the kit finds the binaries of the build that produced the test
//! whatever target dir the engineer chose.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::process::run_bounded;

/// The workspace root (known at compile time of this crate).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The repository's C headers (`include/`, home of `dipc.h`).
pub fn include_dir() -> PathBuf {
    repo_root().join("include")
}

/// Cargo's profile output directory of the running build
/// (`<target>/<profile>`, e.g. `target-kit/debug`): where `dipc` and
/// `libsysv.so` are.
///
/// Taken from the running executable's path (`<profile>/deps/x` or
/// `<profile>/examples/x`, or `<profile>/x`, recognised by cargo's
/// `.cargo-lock` file); else `$CARGO_TARGET_DIR/debug`; else
/// `<repo>/target/debug`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = profile_dir_of_exe() {
        return dir;
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => {
            let t = PathBuf::from(t);
            if t.is_absolute() {
                t
            } else {
                repo_root().join(t)
            }
        }
        None => repo_root().join("target"),
    };
    target.join("debug")
}

fn profile_dir_of_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let name = dir.file_name()?.to_str()?;
    if name == "deps" || name == "examples" {
        return dir.parent().map(Path::to_path_buf);
    }
    dir.join(".cargo-lock").exists().then(|| dir.to_path_buf())
}

/// The `dipc` binary next to the running test (`target_dir()/dipc`).
/// Tests in the dipc crate should prefer `env!("CARGO_BIN_EXE_dipc")`,
/// which cargo guarantees to be built.
pub fn dipc_bin() -> PathBuf {
    target_dir().join("dipc")
}

/// `libsysv.so`, built (or found up to date) by `cargo build -p sysv` in the
/// running build's target directory and profile, once per test process.
///
/// Cargo's own freshness check makes this cheap when nothing changed, and
/// guarantees a test never runs against a stale library. Bounded by 10
/// minutes (a cold build on 2 cores).
pub fn libsysv() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_libsysv().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_libsysv() -> anyhow::Result<PathBuf> {
    let profile_dir = target_dir();
    let lib = profile_dir.join("libsysv.so");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root()).args(["build", "-p", "sysv"]);
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    // Only a plain `<target>/<profile>` layout (no target triple) is pinned;
    // otherwise cargo's inherited configuration decides.
    if let Some(target) = profile_dir.parent()
        && target.join("CACHEDIR.TAG").exists()
    {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let out = run_bounded(cmd, Duration::from_secs(600)).context("building libsysv")?;
    if !out.status.success() {
        bail!(
            "`cargo build -p sysv` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if !lib.exists() {
        bail!(
            "`cargo build -p sysv` succeeded but {} does not exist",
            lib.display()
        );
    }
    Ok(lib)
}
