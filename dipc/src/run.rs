//! `dipc run`: start a program once per node, the way `mpirun` does.
//!
//! ```text
//! dipc run --nodes 3 -- ./jacobi 64 40
//! dipc run --sockets /run/dipc/a.sock,/run/dipc/b.sock -- ./prog
//! ```
//!
//! Without `--sockets` it starts a private test cluster on loopback: a
//! referee and N node daemons, each the `dipc` binary itself run as a child
//! process, in a fresh directory under `$TMPDIR` holding a random secret,
//! the sockets and one log per daemon (kept with `--keep`, shown when a
//! daemon fails to start). The daemons get `dipc --config FILE` when one
//! is given (`msgmax`, `page_size`, ...; its addresses, cluster and secret
//! are overridden by the test cluster's), and no `DIPC_*` variable of the
//! caller's environment. With `--sockets` the nodes already exist (one
//! rank per socket, several ranks may share one).
//!
//! Rank r runs with `DIPC_SOCKET` = node r's socket, `DIPC_RANK=r` and
//! `DIPC_NODES=N` (and, on the private cluster, `DIPC_REFEREE`,
//! `DIPC_CLUSTER` and `DIPC_SECRET_FILE`, so `dipc ipcs` works inside); its stdout and stderr lines are forwarded with a `[r] `
//! prefix. `dipc run` waits for every rank and exits with the first
//! non-zero status in the order the ranks ended (128+signal for a rank
//! killed by a signal), else 0. The daemons are stopped with `SIGTERM`
//! (then `SIGKILL` after 5 s) whatever happens.
//!
//! Why child processes rather than daemons embedded in this process: the
//! ranks need the nodes' sockets only, the daemons' logs stay apart from
//! the program's output, and the test cluster is exactly what a user
//! starts by hand. On a real cluster, a launcher (ssh, `mpirun`, Slurm)
//! starts the program on every host with that host's `DIPC_SOCKET` and a
//! rank of its own: `dipc run` is only the single-machine convenience.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Bound on the test cluster's start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Grace between SIGTERM and SIGKILL when stopping a daemon.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Name of the private test cluster.
const CLUSTER: &str = "dipc-run";

/// `dipc run` arguments.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Ranks to start: one node daemon each in the private test cluster.
    #[arg(long, short = 'n', default_value_t = 2)]
    nodes: usize,
    /// Use these existing node sockets (comma separated) instead of
    /// starting a test cluster; one rank per socket.
    #[arg(long, value_delimiter = ',')]
    sockets: Vec<PathBuf>,
    /// Keep the test cluster's directory (logs, secret) and print its path.
    #[arg(long)]
    keep: bool,
    /// The program and its arguments.
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

/// Run `args.command` once per node; returns the exit code for `dipc`.
/// `config` (`dipc --config`) is handed to the test cluster's daemons.
pub fn run(args: RunArgs, config: Option<&Path>) -> anyhow::Result<i32> {
    let Some((prog, prog_args)) = args.command.split_first() else {
        bail!("no program given (dipc run -- PROG ARGS...)");
    };
    if args.sockets.is_empty() {
        if args.nodes == 0 || args.nodes > 64 {
            bail!("--nodes must be between 1 and 64, not {}", args.nodes);
        }
        let mut cluster = TestCluster::start(args.nodes, args.keep, config)?;
        let env = cluster.env();
        let code = run_ranks(prog, prog_args, &cluster.sockets, &env);
        cluster.stop();
        code
    } else {
        run_ranks(prog, prog_args, &args.sockets, &[])
    }
}

/// Start one rank per socket, forward output, wait for all.
fn run_ranks(
    prog: &str,
    args: &[String],
    sockets: &[PathBuf],
    env: &[(&str, String)],
) -> anyhow::Result<i32> {
    let n = sockets.len();
    let (tx, rx) = mpsc::channel::<(usize, ExitStatus)>();
    let mut children = Vec::with_capacity(n);
    let mut forwarders = Vec::new();
    for (rank, socket) in sockets.iter().enumerate() {
        let mut child = match Command::new(prog)
            .args(args)
            .env("DIPC_SOCKET", socket)
            .env("DIPC_RANK", rank.to_string())
            .env("DIPC_NODES", n.to_string())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                stop_ranks(&mut children);
                return Err(e).with_context(|| format!("cannot start {prog} (rank {rank})"));
            }
        };
        if let Some(out) = child.stdout.take() {
            forwarders.push(std::thread::spawn(move || {
                forward(out, rank, &mut std::io::stdout())
            }));
        }
        if let Some(err) = child.stderr.take() {
            forwarders.push(std::thread::spawn(move || {
                forward(err, rank, &mut std::io::stderr())
            }));
        }
        children.push(child);
    }
    // One waiter per rank reports exits in the order they happen.
    for (rank, mut child) in children.drain(..).enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = tx.send((rank, status));
            }
        });
    }
    drop(tx);
    let mut first_failure = 0;
    for (rank, status) in rx.iter() {
        let code = exit_code(status);
        if code != 0 {
            eprintln!("dipc run: rank {rank} ({prog}) ended with {status}");
            if first_failure == 0 {
                first_failure = code;
            }
        }
    }
    for f in forwarders {
        let _ = f.join();
    }
    Ok(first_failure)
}

/// The shell's convention: the exit code, or 128 + the signal.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    }
}

/// Copy lines from `from` to `to`, each prefixed with `[rank] `.
fn forward(from: impl std::io::Read, rank: usize, to: &mut dyn Write) {
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if !line.ends_with(b"\n") {
                    line.push(b'\n');
                }
                let mut buf = format!("[{rank}] ").into_bytes();
                buf.extend_from_slice(&line);
                // One write per line, so ranks' lines never interleave mid-line.
                if to.write_all(&buf).and_then(|()| to.flush()).is_err() {
                    return;
                }
            }
        }
    }
}

fn stop_ranks(children: &mut [Child]) {
    for c in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A referee and N nodes, children of this process, in a private directory.
struct TestCluster {
    dir: PathBuf,
    referee: String,
    keep: bool,
    daemons: Vec<(String, Child)>,
    sockets: Vec<PathBuf>,
}

impl TestCluster {
    fn start(nodes: usize, keep: bool, config: Option<&Path>) -> anyhow::Result<TestCluster> {
        let dir = std::env::temp_dir().join(format!(
            "dipc-run-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut c = TestCluster {
            dir,
            referee: String::new(),
            keep,
            daemons: Vec::new(),
            sockets: Vec::new(),
        };
        match c.start_daemons(nodes, config) {
            Ok(()) => {
                if keep {
                    eprintln!("dipc run: test cluster in {}", c.dir.display());
                }
                Ok(c)
            }
            Err(e) => {
                let logs = c.logs();
                c.stop();
                Err(e.context(logs))
            }
        }
    }

    fn start_daemons(&mut self, nodes: usize, config: Option<&Path>) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the dipc binary")?;
        // The daemons' own settings (msgmax, page size, quantum, ...);
        // the flags given here (addresses, cluster, secret) win over it.
        let config: Vec<std::ffi::OsString> = match config {
            Some(path) => {
                let path = std::path::absolute(path)
                    .with_context(|| format!("cannot resolve {}", path.display()))?;
                vec!["--config".into(), path.into_os_string()]
            }
            None => Vec::new(),
        };
        let secret = self.dir.join("secret");
        crate::config::keygen(&secret)?;
        let referee = format!("127.0.0.1:{}", free_port()?);
        self.referee = referee.clone();
        let mut cmd = self.daemon_command(&exe, "referee")?;
        cmd.args(&config)
            .args(["referee", "--listen", &referee, "--data-dir"])
            .arg(self.dir.join("referee"))
            .args([
                "--heartbeat-ms",
                "300",
                "--cluster",
                CLUSTER,
                "--secret-file",
            ])
            .arg(&secret);
        self.spawn("referee", cmd)?;
        for i in 0..nodes {
            let socket = self.dir.join(format!("node-{i}.sock"));
            let name = format!("node-{i}");
            let mut cmd = self.daemon_command(&exe, &name)?;
            cmd.args(&config)
                .args(["node", "--referee", &referee, "--name", &name, "--listen"])
                .arg(format!("127.0.0.1:{}", free_port()?))
                .arg("--socket")
                .arg(&socket)
                .args(["--cluster", CLUSTER, "--secret-file"])
                .arg(&secret);
            self.spawn(&name, cmd)?;
            self.sockets.push(socket);
        }
        let secret = crate::config::read_secret(&secret)?;
        let rt = crate::runtime()?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_alive()?;
            let sockets_ready = self.sockets.iter().all(|s| s.exists());
            if sockets_ready
                && let Ok(st) = rt.block_on(crate::status::fetch(
                    &referee,
                    CLUSTER,
                    secret.clone(),
                    None,
                ))
                && st.members.iter().filter(|m| m.up).count() >= nodes
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the test cluster did not come up within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the ranks need to run `dipc status`/`dipc ipcs` on this
    /// cluster: its referee, name and secret file.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DIPC_REFEREE", self.referee.clone()),
            ("DIPC_CLUSTER", CLUSTER.to_string()),
            (
                "DIPC_SECRET_FILE",
                self.dir.join("secret").to_string_lossy().into_owned(),
            ),
        ]
    }

    /// The dipc binary with no inherited `DIPC_*` settings, logging to
    /// `<dir>/<name>.log`.
    fn daemon_command(&self, exe: &Path, name: &str) -> anyhow::Result<Command> {
        let mut cmd = Command::new(exe);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("DIPC_") {
                cmd.env_remove(k);
            }
        }
        let log_path = self.dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        Ok(cmd)
    }

    fn spawn(&mut self, name: &str, mut cmd: Command) -> anyhow::Result<()> {
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start the {name} daemon"))?;
        self.daemons.push((name.to_string(), child));
        Ok(())
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.daemons {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("the {name} daemon exited early ({status})");
            }
        }
        Ok(())
    }

    fn logs(&self) -> String {
        let mut out = format!("logs in {}:", self.dir.display());
        for (name, _) in &self.daemons {
            let text =
                std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            out.push_str(&format!("\n--- {name}:\n"));
            for l in tail.iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// SIGTERM every daemon (nodes first), SIGKILL what is left after the
    /// grace, reap all, remove the directory unless kept.
    fn stop(&mut self) {
        for (_, child) in self.daemons.iter().rev() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for (_, child) in &mut self.daemons {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.daemons.clear();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if !self.daemons.is_empty() {
            self.stop();
        }
    }
}

/// A free loopback port (bound, then released; another process may take
/// it first, which the daemon then reports in its log).
fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot find a free loopback port")?;
    Ok(l.local_addr()?.port())
}
