//! Compiling C test programs against libsysv.
//!
//! dipc's promise is that ordinary C code runs unchanged, so its tests are
//! C programs built the way a user builds them: `cc` with the repository's
//! `include/` and, for [`Link::Sysv`], the flags `pkg-config --cflags --libs
//! sysv` gives for a `sysv.pc` that points at this build (with an rpath, so
//! the program finds `libsysv.so` without `LD_LIBRARY_PATH`).
//!
//! Binaries are cached in `<target>/<profile>/testkit-c/` under a hash of
//! everything that goes into them (source, link mode, flags, headers,
//! `sysv.pc`), so parallel tests and reruns compile each program once and
//! the directory stays bounded. Files are written under a unique name and
//! renamed into place, so concurrent test processes never see half a file.

use std::collections::hash_map::DefaultHasher;
use std::ffi::OsString;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::paths::{include_dir, libsysv, repo_root, target_dir};
use crate::process::run_bounded;

/// Flags every test program is compiled with.
const CFLAGS: &[&str] = &["-O2", "-Wall", "-Werror", "-pthread"];
/// Bound on one compiler or pkg-config run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// How a C program reaches libsysv.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Link {
    /// Linked with `-lsysv` (flags from pkg-config, rpath to this build).
    Sysv,
    /// Not linked with libsysv: [`crate::Cluster::run_on`] runs it with
    /// `LD_PRELOAD=libsysv.so`.
    Plain,
}

/// A compiled C program.
#[derive(Debug, Clone)]
pub struct Program {
    path: PathBuf,
    link: Link,
}

impl Program {
    /// The executable.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How it was linked.
    pub fn link(&self) -> Link {
        self.link
    }

    /// A command running the program outside any cluster: inherited
    /// `DIPC_*` variables removed, no `LD_PRELOAD` added.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.path);
        remove_dipc_env(&mut cmd);
        cmd
    }
}

impl AsRef<Path> for Program {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// Remove every inherited `DIPC_*` variable from `cmd`'s environment.
pub(crate) fn remove_dipc_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("DIPC_") {
            cmd.env_remove(k);
        }
    }
}

/// Compile `src` (C) into a program named `name` (letters, digits, `-`,
/// `_`) with `cc -O2 -Wall -Werror -pthread -I<repo>/include`, plus the
/// libsysv flags from pkg-config for [`Link::Sysv`].
///
/// libsysv is built first (see [`crate::libsysv`]) for both link modes: a
/// [`Link::Plain`] program is meant to run with it preloaded. The error of
/// a failed compilation contains the compiler's messages and the path of
/// the source file.
pub fn compile_c(src: &str, name: &str, link: Link) -> anyhow::Result<Program> {
    compile_c_source(src, name, link)
}

/// [`compile_c`] of `<name>.c` (`src`) pasted after a header the test's C
/// programs share, `header` = (file name, text), with `prelude` (such as
/// `#define USE_DIPC 1\n`) in front. `#line` directives make the
/// compiler's messages name the real files and lines.
pub fn compile_c_with_header(
    prelude: &str,
    header: (&str, &str),
    name: &str,
    src: &str,
    link: Link,
) -> anyhow::Result<Program> {
    let (header_name, header_text) = header;
    let src =
        format!("{prelude}#line 1 \"{header_name}\"\n{header_text}\n#line 1 \"{name}.c\"\n{src}");
    compile_c_source(&src, name, link)
}

fn compile_c_source(src: &str, name: &str, link: Link) -> anyhow::Result<Program> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("program name {name:?} must be non-empty letters, digits, '-' or '_'");
    }
    libsysv()?;
    let link_flags = match link {
        Link::Sysv => pkg_config_sysv()?,
        Link::Plain => Vec::new(),
    };
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());

    let mut h = DefaultHasher::new();
    (src, name, link, CFLAGS, &link_flags, &cc).hash(&mut h);
    hash_dir(&include_dir(), &mut h);
    let dir = target_dir().join("testkit-c");
    let out = dir.join(format!("{name}-{:016x}", h.finish()));
    if out.exists() {
        return Ok(Program { path: out, link });
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let unique = unique_suffix();
    let src_path = out.with_extension(format!("{unique}.c"));
    std::fs::write(&src_path, src).with_context(|| format!("writing {}", src_path.display()))?;
    let tmp_out = out.with_extension(format!("{unique}.tmp"));
    let mut cmd = Command::new(&cc);
    cmd.args(CFLAGS)
        .arg("-I")
        .arg(include_dir())
        .arg("-o")
        .arg(&tmp_out)
        .arg(&src_path)
        .args(&link_flags);
    let res = run_bounded(cmd, TOOL_TIMEOUT).with_context(|| format!("compiling {name}"))?;
    if !res.status.success() {
        let _ = std::fs::remove_file(&tmp_out);
        bail!(
            "compiling {name} ({}) failed ({}):\n{}{}",
            src_path.display(),
            res.status,
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        );
    }
    // Keep the source next to the binary for whoever debugs a failure.
    let _ = std::fs::rename(&src_path, out.with_extension("c"));
    std::fs::rename(&tmp_out, &out)
        .with_context(|| format!("moving {} into place", out.display()))?;
    Ok(Program { path: out, link })
}

/// The libsysv link flags: `pkg-config --cflags --libs sysv` with
/// [`sysv_pc_dir`] first on `PKG_CONFIG_PATH`.
fn pkg_config_sysv() -> anyhow::Result<Vec<String>> {
    let pc_dir = sysv_pc_dir()?;
    let mut path = OsString::from(pc_dir.as_os_str());
    if let Some(old) = std::env::var_os("PKG_CONFIG_PATH") {
        path.push(":");
        path.push(old);
    }
    let mut cmd = Command::new("pkg-config");
    cmd.env("PKG_CONFIG_PATH", path)
        .args(["--cflags", "--libs", "sysv"]);
    let out = run_bounded(cmd, TOOL_TIMEOUT).context("running pkg-config (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "`pkg-config --cflags --libs sysv` failed ({}) with PKG_CONFIG_PATH={}:\n{}",
            out.status,
            pc_dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

/// A directory holding a `sysv.pc` for this build: headers from the
/// repository's `include/`, the library from [`target_dir`], with
/// `-Wl,-rpath` so programs find it at run time.
///
/// When `libsysv/sysv.pc.in` exists it is the template: its `prefix`,
/// `exec_prefix`, `libdir` and `includedir` definitions are replaced by this
/// build's, `@...@` placeholders of those names (any case) and of `VERSION`
/// are substituted, comments are dropped, and an rpath is added to `Libs:`
/// if it has none.
/// Otherwise a minimal `sysv.pc` of our own is written.
pub fn sysv_pc_dir() -> anyhow::Result<PathBuf> {
    let libdir = target_dir();
    let dir = libdir.join("testkit-pkgconfig");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let template = repo_root().join("libsysv").join("sysv.pc.in");
    let pc = match std::fs::read_to_string(&template) {
        Ok(t) => render_pc(&t, &repo_root(), &include_dir(), &libdir)
            .with_context(|| format!("rendering {}", template.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            own_pc(&repo_root(), &include_dir(), &libdir)
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", template.display())),
    };
    let path = dir.join("sysv.pc");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(pc.as_str()) {
        let tmp = dir.join(format!("sysv.pc.{}", unique_suffix()));
        std::fs::write(&tmp, &pc).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir)
}

fn own_pc(prefix: &Path, include: &Path, libdir: &Path) -> String {
    format!(
        "prefix={}\nincludedir={}\nlibdir={}\n\n\
         Name: sysv\n\
         Description: dipc libsysv (in-tree build, written by dipc-testkit)\n\
         Version: {}\n\
         Cflags: -I${{includedir}}\n\
         Libs: -L${{libdir}} -Wl,-rpath,${{libdir}} -lsysv\n",
        prefix.display(),
        include.display(),
        libdir.display(),
        env!("CARGO_PKG_VERSION"),
    )
}

fn render_pc(
    template: &str,
    prefix: &Path,
    include: &Path,
    libdir: &Path,
) -> anyhow::Result<String> {
    let values = [
        ("prefix", prefix.display().to_string()),
        ("exec_prefix", prefix.display().to_string()),
        ("libdir", libdir.display().to_string()),
        ("includedir", include.display().to_string()),
        ("version", env!("CARGO_PKG_VERSION").to_string()),
    ];
    let mut out = String::new();
    // Comments are dropped: they may name the placeholders themselves.
    for line in template
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
    {
        let mut line = line.to_string();
        // Variable definitions: `name=value`.
        if let Some((var, _)) = line.split_once('=')
            && let Some((_, v)) = values.iter().find(|(n, _)| *n == var.trim())
        {
            line = format!("{}={v}", var.trim());
        }
        for (n, v) in &values {
            line = line
                .replace(&format!("@{n}@"), v)
                .replace(&format!("@{}@", n.to_uppercase()), v);
        }
        if line.trim_start().starts_with("Libs:") && !line.contains("-rpath") {
            line.push_str(" -Wl,-rpath,${libdir}");
        }
        out.push_str(&line);
        out.push('\n');
    }
    if let Some(start) = out.find('@')
        && out[start + 1..].contains('@')
    {
        bail!("unsubstituted placeholder left in sysv.pc:\n{out}");
    }
    Ok(out)
}

/// Hash the names and contents of the regular files of `dir` (sorted).
fn hash_dir(dir: &Path, h: &mut DefaultHasher) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            hash_dir(&p, h);
        } else if let Ok(bytes) = std::fs::read(&p) {
            p.hash(h);
            bytes.hash(h);
        }
    }
}

/// A suffix unique among the processes and threads of this machine.
fn unique_suffix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_variables_and_placeholders_are_replaced() {
        let t = "# replace @PREFIX@ when installing\nprefix=/usr/local\nlibdir=${prefix}/lib\nincludedir=@INCLUDEDIR@\n\
                 Name: sysv\nVersion: @VERSION@\nCflags: -I${includedir}\n\
                 Libs: -L${libdir} -lsysv\n";
        let pc = render_pc(
            t,
            Path::new("/r"),
            Path::new("/r/include"),
            Path::new("/t/debug"),
        )
        .expect("render");
        assert!(pc.starts_with("prefix=/r\n"), "{pc}");
        assert!(pc.contains("libdir=/t/debug\n"), "{pc}");
        assert!(pc.contains("includedir=/r/include\n"), "{pc}");
        assert!(
            pc.contains(&format!("Version: {}\n", env!("CARGO_PKG_VERSION"))),
            "{pc}"
        );
        assert!(
            pc.contains("Libs: -L${libdir} -lsysv -Wl,-rpath,${libdir}\n"),
            "{pc}"
        );
    }

    #[test]
    fn unknown_placeholder_is_an_error() {
        let t = "Name: sysv\nLibs: -L@WHERE@ -lsysv\n";
        assert!(render_pc(t, Path::new("/r"), Path::new("/i"), Path::new("/l")).is_err());
    }

    #[test]
    fn existing_rpath_is_kept_once() {
        let t = "Libs: -L${libdir} -Wl,-rpath,${libdir} -lsysv\n";
        let pc = render_pc(t, Path::new("/r"), Path::new("/i"), Path::new("/l")).expect("render");
        assert_eq!(pc.matches("-rpath").count(), 1, "{pc}");
    }
}
