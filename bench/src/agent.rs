//! Agents: the application processes of the dipc scenarios.
//!
//! libsysv keeps one daemon connection per process, chosen by
//! `DIPC_SOCKET`, so "a process on node 2" must be a process of its own.
//! The coordinator re-executes its own binary with a hidden subcommand
//! (`dipc agent`) and `DIPC_SOCKET` set to the node's socket
//! ([`Agent::spawn`]); the agent ([`serve`]) reads one command per line on
//! stdin and answers one line on stdout. Pipes keep the agents in lock
//! step without touching the memory being measured, so the coordinator
//! decides exactly which accesses happen in which order.
//!
//! The protocol (pages are `page_size()` bytes, offsets `page * page_size`;
//! `gen` picks the byte written at the start of each page, see
//! [`pattern`]):
//!
//! ```text
//! hello                        -> ok <pid>
//! create <key> <size>          -> ok <shmid>   shmget(IPC_CREAT|IPC_DIPC|0600) + shmat
//! attach <key> <size>          -> ok <shmid>   shmget(IPC_DIPC|0600) + shmat
//! fill <first> <count> <gen>   -> ok           write each page's pattern byte
//! check <first> <count> <gen>  -> ok           read each page, compare
//! tread <first> <count> <gen>  -> ok <ns>...   timed read of each page, compared
//! twrite <first> <count> <gen> -> ok <ns>...   timed write of each page
//! tscan <first> <count> <gen>  -> ok <ns>      the whole sequential read timed as one
//! trand <first> <range> <count> <gen> <seed> -> ok <ns>... timed reads of `count` pages
//!                              drawn without repetition from `range` pages (seeded)
//! frand <first> <range> <count> <gen> <seed> -> ok  writes the pages trand reads
//! tinc <page> <count> <start> [<work>] -> ok <ns>...  timed atomic increments of the page's
//!                              counter from `start` (unix ns: agents begin together); with
//!                              `work` ns, each increment is followed by a sleep that long
//!                              (work elsewhere: I/O, another core), timed with it
//! tincw <page> <go> <start> <end> -> ok <settle> <ns>...  atomic increments of the page's
//!                              counter from `go` to `end` (unix ns: the agents run for the
//!                              same window); those before `start` (settling, counted in
//!                              `settle`) are not timed; after it one sample per increment,
//!                              the time since the previous one ended (the first: since
//!                              `start`), so every agent's samples add up to the window
//! getc <page>                  -> ok <value>   the page's counter
//! detach                       -> ok           shmdt
//! rmid                         -> ok           shmctl(IPC_RMID)
//! quit                         -> ok           and exit
//! anything failing             -> err <reason>
//! ```
//!
//! plus the message-queue and semaphore commands of [`crate::ipcops`].
//!
//! An attachment that turns out to be a kernel SysV segment rather than a
//! dipc memfd (libsysv fell back to the kernel because no daemon answered)
//! is an error: its numbers would not be dipc's. The coordinator bounds
//! every answer with a timeout and kills an agent that misses it.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::Error;
use crate::logs::LogBuffer;
use crate::sys::{self, Attached};

/// Lines of an agent's stderr kept for error reports.
const STDERR_LINES: usize = 200;
/// How long a quitting agent may take to exit before it is killed.
const QUIT_GRACE: Duration = Duration::from_secs(5);

/// The byte written at the start of `page` in generation `gen`. Never 0
/// (a page lost to a hole reads 0), and consecutive generations differ.
pub fn pattern(page: u64, generation: u64) -> u8 {
    ((page
        .wrapping_mul(131)
        .wrapping_add(generation.wrapping_mul(29)))
        % 255) as u8
        + 1
}

/// How to start an agent: a program and the arguments that make it one.
#[derive(Debug, Clone)]
pub struct AgentCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl AgentCommand {
    /// This very executable with `args` (`["agent"]` for the `dipc`
    /// binary).
    pub fn current_exe(args: &[&str]) -> Result<AgentCommand, Error> {
        Ok(AgentCommand {
            program: std::env::current_exe()
                .map_err(|e| Error::io("finding the current executable", e))?,
            args: args.iter().map(OsString::from).collect(),
        })
    }
}

/// The coordinator's handle on one agent process.
#[derive(Debug)]
pub struct Agent {
    node: usize,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    stderr: LogBuffer,
}

impl Agent {
    /// Start an agent talking to the node whose local socket is `socket`
    /// (`node` only names it in errors) and wait for its hello.
    pub fn spawn(cmd: &AgentCommand, node: usize, socket: &Path) -> Result<Agent, Error> {
        Agent::spawn_with(cmd, node, socket, &[])
    }

    /// [`Agent::spawn`] with extra environment variables (such as
    /// `DIPC_PAGE_SIZE` for the segments the agent creates).
    pub fn spawn_with(
        cmd: &AgentCommand,
        node: usize,
        socket: &Path,
        env: &[(&str, &str)],
    ) -> Result<Agent, Error> {
        let mut child = Command::new(&cmd.program)
            .args(&cmd.args)
            .envs(env.iter().copied())
            .env("DIPC_SOCKET", socket)
            // Never let libsysv fall back to the kernel silently.
            .env("DIPC_FALLBACK", "error")
            .env_remove("DIPC_KEYS")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::io(
                    format!("starting agent {} for node {node}", cmd.program.display()),
                    e,
                )
            })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Agent {
                node,
                detail: "agent started without its pipes".into(),
            });
        };
        let (tx, lines) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("agent-{node}-out"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .and_then(|_| {
                let buf = LogBuffer::new(STDERR_LINES);
                let keep = buf.clone();
                std::thread::Builder::new()
                    .name(format!("agent-{node}-err"))
                    .spawn(move || {
                        for line in BufReader::new(stderr).lines() {
                            let Ok(line) = line else { break };
                            keep.push_text(&line);
                        }
                    })
                    .map(|_| buf)
            });
        let stderr = match spawned {
            Ok(buf) => buf,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::io("starting an agent's pipe readers", e));
            }
        };
        let mut agent = Agent {
            node,
            child,
            stdin,
            lines,
            stderr,
        };
        agent.call("hello", Duration::from_secs(10))?;
        Ok(agent)
    }

    /// The node this agent talks to.
    pub fn node(&self) -> usize {
        self.node
    }

    /// The last lines the agent wrote to stderr.
    pub fn stderr_tail(&self, n: usize) -> Vec<String> {
        self.stderr.tail(n)
    }

    /// Send `cmd` and return the words of an `ok` answer. An `err` answer,
    /// no answer within `timeout`, or the agent's exit is an error (the
    /// agent is killed when it does not answer).
    pub fn call(&mut self, cmd: &str, timeout: Duration) -> Result<Vec<String>, Error> {
        self.send(cmd)?;
        self.answer(cmd, timeout)
    }

    /// Send `cmd` without waiting for its answer (collect it with
    /// [`Agent::answer`]), so several agents run at once.
    pub fn send(&mut self, cmd: &str) -> Result<(), Error> {
        writeln!(self.stdin, "{cmd}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| self.failure(cmd, &format!("cannot send the command: {e}")))
    }

    /// The answer to `cmd`, sent before with [`Agent::send`]; as
    /// [`Agent::call`].
    pub fn answer(&mut self, cmd: &str, timeout: Duration) -> Result<Vec<String>, Error> {
        let line = match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(
                    self.failure(cmd, &format!("no answer within {timeout:?}; agent killed"))
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = wait_bounded(&mut self.child, QUIT_GRACE);
                return Err(self.failure(cmd, &format!("the agent exited ({status})")));
            }
        };
        let mut words = line.split_whitespace().map(str::to_string);
        match words.next().as_deref() {
            Some("ok") => Ok(words.collect()),
            Some("err") => {
                let reason = line.trim_start().trim_start_matches("err").trim();
                Err(self.failure(cmd, reason))
            }
            _ => Err(self.failure(cmd, &format!("unexpected answer {line:?}"))),
        }
    }

    /// [`Agent::call`] for a command answering with nanosecond samples.
    pub fn samples(&mut self, cmd: &str, timeout: Duration) -> Result<Vec<u64>, Error> {
        self.send(cmd)?;
        self.answer_samples(cmd, timeout)
    }

    /// [`Agent::answer`] for a command answering with nanosecond samples.
    pub fn answer_samples(&mut self, cmd: &str, timeout: Duration) -> Result<Vec<u64>, Error> {
        let words = self.answer(cmd, timeout)?;
        words
            .iter()
            .map(|w| w.parse::<u64>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| self.failure(cmd, "answer holds something else than numbers"))
    }

    /// Ask the agent to quit and reap it (killed after a grace period).
    pub fn quit(mut self) {
        let _ = writeln!(self.stdin, "quit").and_then(|()| self.stdin.flush());
        wait_bounded(&mut self.child, QUIT_GRACE);
    }

    fn failure(&self, cmd: &str, reason: &str) -> Error {
        let mut detail = format!("`{cmd}`: {reason}");
        let tail = self.stderr.tail(20);
        if !tail.is_empty() {
            detail.push_str("\n  agent stderr:\n    ");
            detail.push_str(&tail.join("\n    "));
        }
        Error::Agent {
            node: self.node,
            detail,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Only reaps when quit() or a failed call did not already.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Wait for `child` up to `grace`, then kill it; describe how it ended.
fn wait_bounded(child: &mut Child, grace: Duration) -> String {
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.to_string(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return format!("killed after {grace:?}");
            }
            Err(e) => return format!("cannot wait for it: {e}"),
        }
    }
}

/// The agent's side: answer commands from `input` on `output` until
/// `quit` or the end of input.
pub fn serve(input: impl BufRead, mut output: impl Write) -> Result<(), Error> {
    let mut seg: Option<Attached> = None;
    for line in input.lines() {
        let line = line.map_err(|e| Error::io("agent: reading a command", e))?;
        let quit = line.trim() == "quit";
        let answer = match execute(&line, &mut seg) {
            Ok(words) if words.is_empty() => "ok".to_string(),
            Ok(words) => format!("ok {words}"),
            Err(reason) => format!("err {}", reason.replace('\n', " ")),
        };
        writeln!(output, "{answer}")
            .and_then(|()| output.flush())
            .map_err(|e| Error::io("agent: answering", e))?;
        if quit {
            break;
        }
    }
    if let Some(s) = seg {
        let _ = s.detach();
    }
    Ok(())
}

fn num<T: std::str::FromStr>(w: Option<&str>, what: &str) -> Result<T, String> {
    let w = w.ok_or_else(|| format!("missing {what}"))?;
    w.parse().map_err(|_| format!("bad {what} {w:?}"))
}

/// Run one command; the words of the `ok` answer, or the reason of `err`.
fn execute(line: &str, seg: &mut Option<Attached>) -> Result<String, String> {
    let mut w = line.split_whitespace();
    let cmd = w.next().unwrap_or("");
    match cmd {
        "hello" => Ok(std::process::id().to_string()),
        "quit" => Ok(String::new()),
        "create" | "attach" => {
            let key: i32 = num::<u32>(w.next(), "key").map(|k| k as i32)?;
            let size: u64 = num(w.next(), "size")?;
            if seg.is_some() {
                return Err("already attached".into());
            }
            let mut flags = sysv::IPC_DIPC | 0o600;
            if cmd == "create" {
                flags |= libc::IPC_CREAT | libc::IPC_EXCL;
            }
            let id = sys::shmget(key, size, flags).map_err(|e| format!("shmget({key:#x}): {e}"))?;
            let a = Attached::attach(id, size).map_err(|e| format!("shmat({id}): {e}"))?;
            check_is_dipc(a.addr())?;
            *seg = Some(a);
            Ok(id.to_string())
        }
        "fill" | "check" | "tread" | "twrite" | "tscan" => {
            let first: u64 = num(w.next(), "first page")?;
            let count: u64 = num(w.next(), "count")?;
            let generation: u64 = num(w.next(), "generation")?;
            let a = seg.as_ref().ok_or("not attached")?;
            let ps = dipc_shmem::page_size();
            let end = first
                .checked_add(count)
                .filter(|&e| e.saturating_mul(ps) <= a.size());
            if end.is_none() {
                return Err(format!("pages {first}+{count} are outside the segment"));
            }
            access(a, cmd, first, count, generation)
        }
        "trand" | "frand" => {
            let first: u64 = num(w.next(), "first page")?;
            let range: u64 = num(w.next(), "range")?;
            let count: u64 = num(w.next(), "count")?;
            let generation: u64 = num(w.next(), "generation")?;
            let seed: u64 = num(w.next(), "seed")?;
            let a = seg.as_ref().ok_or("not attached")?;
            let ps = dipc_shmem::page_size();
            if count > range
                || first
                    .checked_add(range)
                    .is_none_or(|e| e.saturating_mul(ps) > a.size())
            {
                return Err(format!(
                    "{count} of pages {first}+{range} are outside the segment"
                ));
            }
            let mut out = Vec::with_capacity(count as usize);
            for p in shuffled(range, seed).into_iter().take(count as usize) {
                let p = first + p;
                let want = pattern(p, generation);
                if cmd == "frand" {
                    a.write(p * ps, want);
                    continue;
                }
                let t = Instant::now();
                let got = a.read(p * ps).unwrap_or(0);
                let dt = t.elapsed().as_nanos() as u64;
                if got != want {
                    return Err(format!(
                        "page {p} read {got:#04x}, expected {want:#04x} (generation {generation})"
                    ));
                }
                out.push(dt.to_string());
            }
            Ok(out.join(" "))
        }
        "tinc" | "getc" => {
            let page: u64 = num(w.next(), "page")?;
            let count: u64 = if cmd == "tinc" {
                num(w.next(), "count")?
            } else {
                0
            };
            let a = seg.as_ref().ok_or("not attached")?;
            let off = page.saturating_mul(dipc_shmem::page_size());
            if cmd == "getc" {
                let v = a.load(off).ok_or("counter outside the segment")?;
                return Ok(v.to_string());
            }
            let start: u64 = num(w.next(), "start time")?;
            let work = match w.next() {
                Some(v) => Duration::from_nanos(num(Some(v), "work")?),
                None => Duration::ZERO,
            };
            if !work.is_zero() {
                // Sleep as long as asked, not 50 us more (the default slack).
                let _ = nix::sys::prctl::set_timerslack(1);
            }
            // Spin (not sleep) to the common start, so the agents overlap.
            while unix_ns() < u128::from(start) {
                std::hint::spin_loop();
            }
            let mut out = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let t = Instant::now();
                a.fetch_add(off).ok_or("counter outside the segment")?;
                // The work between two writes, away from the shared page.
                // A sleep rather than a spin: on a small machine a spinning
                // agent would take the CPU from the nodes and act as a
                // quantum of its own.
                if !work.is_zero() {
                    std::thread::sleep(work);
                }
                out.push((t.elapsed().as_nanos() as u64).to_string());
            }
            Ok(out.join(" "))
        }
        "tincw" => {
            let page: u64 = num(w.next(), "page")?;
            let go: u64 = num(w.next(), "go time")?;
            let start: u64 = num(w.next(), "start time")?;
            let end: u64 = num(w.next(), "end time")?;
            if !(go <= start && start < end) {
                return Err("tincw wants go <= start < end".into());
            }
            let a = seg.as_ref().ok_or("not attached")?;
            let off = page.saturating_mul(dipc_shmem::page_size());
            a.load(off).ok_or("counter outside the segment")?;
            while unix_ns() < u128::from(go) {
                std::hint::spin_loop();
            }
            // The times in this process's monotonic clock, from the common
            // `go` (an agent that got the CPU late counts the delay).
            let late = unix_ns().saturating_sub(u128::from(go));
            let now = Instant::now();
            let t0 = now
                .checked_sub(Duration::from_nanos(late as u64))
                .unwrap_or(now);
            let (from, to) = (start - go, end - go);
            // Settling: every agent gets the page once or more, unrecorded.
            let mut settle = 0u64;
            while (t0.elapsed().as_nanos() as u64) < from {
                a.fetch_add(off).ok_or("counter outside the segment")?;
                settle += 1;
            }
            // Completion times, formatted after the window.
            let mut ends: Vec<u64> = Vec::with_capacity(1 << 20);
            let mut last = from;
            while last < to && (ends.len() as u64) < MAX_WINDOW_INCREMENTS {
                a.fetch_add(off).ok_or("counter outside the segment")?;
                last = t0.elapsed().as_nanos() as u64;
                ends.push(last);
            }
            let mut out = String::with_capacity(ends.len() * 4 + 12);
            out.push_str(&settle.to_string());
            let mut prev = from;
            for &e in &ends {
                out.push(' ');
                out.push_str(&(e - prev).to_string());
                prev = e;
            }
            Ok(out)
        }
        "detach" => {
            let a = seg.take().ok_or("not attached")?;
            a.detach().map_err(|e| format!("shmdt: {e}"))?;
            Ok(String::new())
        }
        "rmid" => {
            let a = seg.as_ref().ok_or("not attached")?;
            sys::remove(a.id()).map_err(|e| format!("shmctl(IPC_RMID): {e}"))?;
            Ok(String::new())
        }
        _ => crate::ipcops::execute(cmd, &mut w)
            .unwrap_or_else(|| Err(format!("unknown command {line:?}"))),
    }
}

/// Bound on the increments of one `tincw` (memory for its samples; at
/// local speed, ~30 ns each, about 0.5 s).
pub const MAX_WINDOW_INCREMENTS: u64 = 16_000_000;

/// Nanoseconds since the epoch (0 for a clock before it).
pub fn unix_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// `0..count` in a random order drawn from `seed` (xorshift and
/// Fisher-Yates: reproducible, no dependency).
pub fn shuffled(count: u64, seed: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..count).collect();
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

/// The page accesses: `fill`/`twrite` store, `check`/`tread` load and
/// compare; the `t` forms time each access.
fn access(
    a: &Attached,
    cmd: &str,
    first: u64,
    count: u64,
    generation: u64,
) -> Result<String, String> {
    let ps = dipc_shmem::page_size();
    if cmd == "tscan" {
        // One sample: the whole sequential read, checked page by page.
        let t = Instant::now();
        access(a, "check", first, count, generation)?;
        return Ok(t.elapsed().as_nanos().to_string());
    }
    let timed = cmd.starts_with('t');
    let write = cmd == "fill" || cmd == "twrite";
    let mut out = String::with_capacity(if timed { count as usize * 8 } else { 0 });
    for p in first..first + count {
        let want = pattern(p, generation);
        let t = Instant::now();
        let got = if write {
            a.write(p * ps, want);
            want
        } else {
            a.read(p * ps).unwrap_or(0)
        };
        let dt = t.elapsed().as_nanos();
        if got != want {
            return Err(format!(
                "page {p} read {got:#04x}, expected {want:#04x} (generation {generation})"
            ));
        }
        if timed {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&dt.to_string());
        }
    }
    Ok(out)
}

/// Refuse an attachment that is not a dipc segment: libsysv maps a dipc
/// segment from the node's memfd (`/memfd:...` in `/proc/self/maps`); a
/// kernel segment shows as `/SYSV...`.
fn check_is_dipc(addr: u64) -> Result<(), String> {
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| format!("reading /proc/self/maps: {e}"))?;
    let name = mapping_name(&maps, addr).ok_or_else(|| format!("no mapping at {addr:#x}"))?;
    if name.starts_with("/memfd:") {
        Ok(())
    } else {
        Err(format!(
            "the segment is mapped from {name:?}, not from a dipc memfd: \
             libsysv did not reach its node"
        ))
    }
}

/// The path column of the `/proc/<pid>/maps` line starting at `addr`.
fn mapping_name(maps: &str, addr: u64) -> Option<String> {
    maps.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let range = f.next()?;
        let start = u64::from_str_radix(range.split('-').next()?, 16).ok()?;
        if start != addr {
            return None;
        }
        // perms, offset, dev, inode, then the path (may contain spaces).
        let path: Vec<&str> = f.skip(4).collect();
        Some(path.join(" "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_never_zero_and_changes_every_generation() {
        for p in 0..600 {
            for g in 0..600 {
                assert_ne!(pattern(p, g), 0);
                assert_ne!(pattern(p, g), pattern(p, g + 1), "page {p} gen {g}");
            }
        }
    }

    #[test]
    fn shuffled_is_a_permutation_and_depends_on_the_seed() {
        let a = shuffled(1000, 7);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(a, shuffled(1000, 8));
        assert_ne!(a, sorted);
    }

    #[test]
    fn mapping_names_from_proc_maps() {
        let maps = "7f00a0000000-7f00a0400000 rw-s 00000000 00:01 1234   /memfd:dipc-shm-5 (deleted)\n\
                    7f00b0000000-7f00b0001000 rw-s 00000000 00:01 99     /SYSV0d1bc001 (deleted)\n\
                    7f00c0000000-7f00c0001000 rw-p 00000000 00:00 0 \n";
        assert_eq!(
            mapping_name(maps, 0x7f00a0000000).as_deref(),
            Some("/memfd:dipc-shm-5 (deleted)")
        );
        assert_eq!(
            mapping_name(maps, 0x7f00b0000000).as_deref(),
            Some("/SYSV0d1bc001 (deleted)")
        );
        assert_eq!(mapping_name(maps, 0x7f00c0000000).as_deref(), Some(""));
        assert_eq!(mapping_name(maps, 0x1000), None);
    }

    #[test]
    fn commands_are_checked_before_touching_memory() {
        let mut seg = None;
        assert!(execute("bogus", &mut seg).is_err());
        assert_eq!(execute("tread 0 1 0", &mut seg), Err("not attached".into()));
        assert!(execute("create nope 4096", &mut seg).is_err());
        assert!(execute("detach", &mut seg).is_err());
        assert_eq!(
            execute("hello", &mut seg),
            Ok(std::process::id().to_string())
        );
    }

    #[test]
    fn serve_answers_each_line_and_stops_at_quit() {
        let input = b"hello\nfill 0 1 0\nquit\nhello\n";
        let mut out = Vec::new();
        serve(&input[..], &mut out).expect("serve");
        let out = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("ok "));
        assert_eq!(lines[1], "err not attached");
        assert_eq!(lines[2], "ok");
    }
}
