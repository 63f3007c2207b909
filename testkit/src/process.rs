//! Supervised child processes.
//!
//! A [`Process`] is a child whose stdout and stderr go to a log file and
//! which is stopped (`SIGTERM`, a grace period, `SIGKILL`) and reaped when
//! it is dropped, so a failing test (a panic unwinds through the owner)
//! leaves nothing running. Waits poll `try_wait` against a deadline rather
//! than blocking in `wait`, so no wait in the kit can hang.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How often waits poll a child.
const POLL: Duration = Duration::from_millis(10);
/// How long a child may take to die after `SIGKILL` before we give up on it
/// (only a process stuck in uninterruptible sleep takes longer).
const KILL_BOUND: Duration = Duration::from_secs(5);
/// Grace period between `SIGTERM` and `SIGKILL` when a [`Process`] drops.
pub(crate) const DEFAULT_GRACE: Duration = Duration::from_secs(2);

enum State {
    Running(Child),
    Exited(ExitStatus),
    /// Could not be reaped within the bounds (reported, not retried).
    Lost,
}

/// One supervised child process with its log file.
pub struct Process {
    name: String,
    log: PathBuf,
    pid: u32,
    state: State,
}

impl Process {
    /// Start `cmd` with stdin from `/dev/null` and stdout and stderr
    /// appended to `log` (created if needed), after a header line naming
    /// the command, so restarts of the same process share one log.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Process> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log file {}", log.display()))?;
        writeln!(file, "---- testkit: starting {name}: {cmd:?}")
            .with_context(|| format!("writing log file {}", log.display()))?;
        let err = file.try_clone().context("duplicating the log file")?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err));
        let child =
            spawn_retrying(&mut cmd).with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Process {
            name: name.to_string(),
            log: log.to_path_buf(),
            pid: child.id(),
            state: State::Running(child),
        })
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's pid (still reported after it exited).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far (lossy UTF-8; empty if unreadable).
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The exit status if the child has exited (reaping it), else `None`.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        match &mut self.state {
            State::Running(child) => match child
                .try_wait()
                .with_context(|| format!("waiting for {}", self.name))?
            {
                Some(status) => {
                    self.state = State::Exited(status);
                    Ok(Some(status))
                }
                None => Ok(None),
            },
            State::Exited(status) => Ok(Some(*status)),
            State::Lost => bail!("{} could not be reaped", self.name),
        }
    }

    /// Is the child still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Wait up to `timeout` for the child to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Send `sig` if the child is still running (a child that exited in the
    /// meantime is not an error).
    pub fn signal(&mut self, sig: Signal) -> anyhow::Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = i32::try_from(self.pid).context("pid out of range")?;
        match kill(Pid::from_raw(pid), sig) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("sending {sig} to {}", self.name)),
        }
    }

    /// `SIGKILL` and reap. Returns the exit status (a signal death, or the
    /// status of an earlier exit).
    pub fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        self.signal(Signal::SIGKILL)?;
        match self.wait_timeout(KILL_BOUND)? {
            Some(status) => Ok(status),
            None => {
                self.state = State::Lost;
                bail!(
                    "{} (pid {}) survived SIGKILL for {KILL_BOUND:?}",
                    self.name,
                    self.pid
                )
            }
        }
    }

    /// `SIGTERM`, wait up to `grace`, then `SIGKILL`; always reaps.
    pub fn stop(&mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        stop_all([&mut *self], grace)?;
        match self.try_wait()? {
            Some(status) => Ok(status),
            None => bail!("{} is still running after stop", self.name),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Err(e) = stop_all([&mut *self], DEFAULT_GRACE) {
            eprintln!("testkit: {e:#}");
        }
    }
}

/// Stop several processes at once: `SIGTERM` to all, wait up to `grace`
/// for all of them, then `SIGKILL` the rest and reap them (bounded too).
/// Processes that already exited are left as they are.
pub fn stop_all<'a>(
    procs: impl IntoIterator<Item = &'a mut Process>,
    grace: Duration,
) -> anyhow::Result<()> {
    let mut procs: Vec<&mut Process> = procs.into_iter().collect();
    let mut errors = Vec::new();
    for p in procs.iter_mut() {
        if let Err(e) = p.signal(Signal::SIGTERM) {
            errors.push(format!("{e:#}"));
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && procs.iter_mut().any(|p| p.is_running()) {
        std::thread::sleep(POLL);
    }
    for p in procs.iter_mut() {
        if p.is_running()
            && let Err(e) = p.kill()
        {
            errors.push(format!("{e:#}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("stopping processes: {}", errors.join("; "))
    }
}

/// [`run_bounded`], and an error naming the command and its stderr unless
/// it succeeded.
pub(crate) fn run_ok(cmd: Command, timeout: Duration) -> anyhow::Result<Output> {
    let shown = format!("{cmd:?}");
    let out = run_bounded(cmd, timeout)?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Run `cmd` to completion with stdout and stderr captured, killing it if it
/// takes longer than `timeout`.
///
/// Output goes to anonymous temporary files rather than pipes, so a
/// grandchild that keeps the pipe open cannot make us wait past the bound.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> anyhow::Result<Output> {
    let mut out = tempfile::tempfile().context("creating a temporary file")?;
    let mut err = tempfile::tempfile().context("creating a temporary file")?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(err.try_clone()?));
    let program = format!("{cmd:?}");
    let mut child = spawn_retrying(&mut cmd).with_context(|| format!("starting {program}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for {program}"))?
        {
            break status;
        }
        if Instant::now() >= deadline {
            // Best effort: the error below is what matters.
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{program} did not finish within {timeout:?}; its stderr so far:\n{}",
                String::from_utf8_lossy(&read_all(&mut err))
            );
        }
        std::thread::sleep(POLL);
    };
    let stdout = read_all(&mut out);
    let stderr = read_all(&mut err);
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// `cmd.spawn()`, retried briefly on `ETXTBSY`: an executable written by a
/// test a moment ago can still be open for writing in a child that another
/// thread forked before its `exec` closed the descriptor.
fn spawn_retrying(cmd: &mut Command) -> std::io::Result<Child> {
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(Errno::ETXTBSY as i32) && attempts < 50 => {
                attempts += 1;
                std::thread::sleep(POLL);
            }
            other => return other,
        }
    }
}

fn read_all(f: &mut File) -> Vec<u8> {
    let mut buf = Vec::new();
    if f.rewind().is_ok() {
        // A read error leaves what was read; the caller reports the status.
        let _ = f.read_to_end(&mut buf);
    }
    buf
}
