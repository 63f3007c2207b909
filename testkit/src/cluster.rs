//! A referee and N node daemons as real processes on loopback.
//!
//! The cluster lives in one temporary directory:
//!
//! ```text
//! <tmp>/secret            the cluster secret (mode 0600)
//! <tmp>/referee/          the referee's data dir (survives restart_referee)
//! <tmp>/referee.log       stdout+stderr of every referee run, appended
//! <tmp>/node-<i>/         node i's data dir
//! <tmp>/node-<i>.sock     node i's local socket (DIPC_SOCKET of programs "on node i")
//! <tmp>/node-<i>.log      stdout+stderr of node i
//! <tmp>/tls/              with ClusterBuilder::tls: ca.pem, and <name>.pem and
//!                         <name>.key for the referee, each node and `tools`
//! ```
//!
//! Ports are found by binding `127.0.0.1:0` and releasing, so another
//! process may grab one first: a daemon that exits early with "address in
//! use" in its log is started again on a new port (a restarted referee
//! keeps its port and is retried on it instead, since the nodes know it).
//!
//! Readiness is observed from outside, as a user would: the referee is
//! ready when its port accepts TCP; a node is ready when its socket file
//! exists and `dipc status` lists it up. Every wait is bounded and its error
//! carries the logs of every process.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use dipc_wire::referee::{ClusterStatus, Member};

use crate::cc::{Link, Program, remove_dipc_env};
use crate::local::LocalClient;
use crate::paths::{dipc_bin, libsysv};
use crate::process::{DEFAULT_GRACE, Process, run_ok, stop_all};
use crate::wait::{POLL_EVERY, free_port, poll_until};

/// Bound on one `dipc status` run.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts to start a daemon whose port was taken under our feet.
const PORT_ATTEMPTS: usize = 5;
/// Lines of each log included in error messages and [`Cluster::logs`].
const LOG_TAIL_LINES: usize = 200;
/// Bound on one `dipc certgen` run.
const CERTGEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Configuration of a [`Cluster`]; see [`Cluster::builder`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    nodes: usize,
    heartbeat_ms: Option<u64>,
    down_after_ms: Option<u64>,
    secret: Vec<u8>,
    cluster: String,
    bin: Option<PathBuf>,
    rust_log: Option<String>,
    node_env: Vec<(OsString, OsString)>,
    referee_env: Vec<(OsString, OsString)>,
    node_args: Vec<OsString>,
    referee_args: Vec<OsString>,
    node_data_dirs: bool,
    start_timeout: Duration,
    tls: bool,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            nodes: 1,
            heartbeat_ms: None,
            down_after_ms: None,
            secret: b"dipc-testkit-secret-0123456789abcdef".to_vec(),
            cluster: "testkit".to_string(),
            bin: None,
            rust_log: None,
            node_env: Vec::new(),
            referee_env: Vec::new(),
            node_args: Vec::new(),
            referee_args: Vec::new(),
            node_data_dirs: false,
            start_timeout: Duration::from_secs(30),
            tls: false,
        }
    }
}

impl ClusterBuilder {
    /// Number of nodes started with the cluster (default 1; 0 is allowed).
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// `--heartbeat-ms` of the referee (default: the binary's default).
    pub fn heartbeat_ms(mut self, ms: u64) -> Self {
        self.heartbeat_ms = Some(ms);
        self
    }

    /// `--down-after-ms` of the referee (default: the binary's default).
    pub fn down_after_ms(mut self, ms: u64) -> Self {
        self.down_after_ms = Some(ms);
        self
    }

    /// The cluster secret written to the secret file.
    pub fn secret(mut self, secret: &[u8]) -> Self {
        self.secret = secret.to_vec();
        self
    }

    /// The cluster name (default `testkit`).
    pub fn cluster(mut self, name: &str) -> Self {
        self.cluster = name.to_string();
        self
    }

    /// The `dipc` binary (default [`dipc_bin`]); tests in the dipc crate
    /// pass `env!("CARGO_BIN_EXE_dipc")`.
    pub fn bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.bin = Some(path.into());
        self
    }

    /// `RUST_LOG` of every daemon (default: inherited, else `info`).
    pub fn rust_log(mut self, filter: &str) -> Self {
        self.rust_log = Some(filter.to_string());
        self
    }

    /// An extra environment variable for every node (set after the kit
    /// removed inherited `DIPC_*` variables, so it may set one).
    pub fn node_env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.node_env.push((key.into(), value.into()));
        self
    }

    /// An extra environment variable for the referee.
    pub fn referee_env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.referee_env.push((key.into(), value.into()));
        self
    }

    /// An extra argument appended to every node's command line.
    pub fn node_arg(mut self, arg: impl Into<OsString>) -> Self {
        self.node_args.push(arg.into());
        self
    }

    /// An extra argument appended to the referee's command line.
    pub fn referee_arg(mut self, arg: impl Into<OsString>) -> Self {
        self.referee_args.push(arg.into());
        self
    }

    /// Pass `--data-dir <tmp>/node-<i>` to every node (default off: the
    /// node daemon keeps no state on disk yet and does not take the flag;
    /// the directory is created either way).
    pub fn node_data_dirs(mut self, on: bool) -> Self {
        self.node_data_dirs = on;
        self
    }

    /// Run every link under mutual TLS (default off): `dipc certgen` makes a
    /// CA in `<tmp>/tls` and a certificate for the referee, each node
    /// (named by `127.0.0.1`) and the kit's own `dipc status` (`tools`),
    /// and every daemon and [`Cluster::dipc`] get `--tls-*`.
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Bound on each readiness wait (default 30 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Start the referee, then the nodes, and wait until all nodes are up.
    pub fn start(self) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("dipc-")
            .tempdir()
            .context("creating the cluster's temporary directory")?;
        let root = dir.path().to_path_buf();
        let secret_file = root.join("secret");
        write_secret(&secret_file, &self.secret)?;
        let referee_data = root.join("referee");
        std::fs::create_dir(&referee_data)
            .with_context(|| format!("creating {}", referee_data.display()))?;
        let bin = self.bin.clone().unwrap_or_else(dipc_bin);
        if !bin.exists() {
            bail!(
                "the dipc binary {} does not exist (build it with `cargo build -p dipc`)",
                bin.display()
            );
        }
        let n = self.nodes;
        let mut cluster = Cluster {
            dir: Some(dir),
            root,
            bin,
            secret_file,
            referee_port: 0,
            referee: None,
            nodes: Vec::new(),
            cfg: self,
        };
        if cluster.cfg.tls {
            cluster.certgen(&["--ca"])?;
            cluster.certgen(&["--name", "referee", "--san", "127.0.0.1"])?;
            cluster.certgen(&["--name", "tools"])?;
        }
        cluster.start_referee(true)?;
        let idx: Vec<usize> = (0..n)
            .map(|_| cluster.spawn_node(None))
            .collect::<anyhow::Result<_>>()?;
        cluster.wait_nodes_up(&idx)?;
        Ok(cluster)
    }
}

fn write_secret(path: &Path, secret: &[u8]) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(secret)
        .with_context(|| format!("writing {}", path.display()))
}

struct Node {
    name: String,
    port: u16,
    socket: PathBuf,
    data_dir: PathBuf,
    secret_file: PathBuf,
    log: PathBuf,
    proc: Process,
}

/// A running referee and its nodes; everything stops when it drops.
pub struct Cluster {
    /// `None` only while dropping with `DIPC_TESTKIT_KEEP` set.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    bin: PathBuf,
    secret_file: PathBuf,
    referee_port: u16,
    /// `None` only before the first referee start succeeded.
    referee: Option<Process>,
    nodes: Vec<Node>,
    cfg: ClusterBuilder,
}

impl Cluster {
    /// A builder with defaults: 1 node, cluster `testkit`, the binary's
    /// own heartbeat and down-after settings.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// A cluster of `nodes` nodes with the default settings and binary.
    pub fn start(nodes: usize) -> anyhow::Result<Cluster> {
        Cluster::builder().nodes(nodes).start()
    }

    /// The cluster's temporary directory.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The cluster name.
    pub fn cluster_name(&self) -> &str {
        &self.cfg.cluster
    }

    /// The file holding the cluster secret.
    pub fn secret_file(&self) -> &Path {
        &self.secret_file
    }

    /// The directory of the TLS files (with [`ClusterBuilder::tls`]):
    /// `ca.pem`, and `<name>.pem`/`<name>.key` for `referee`, `tools` and
    /// each node (`node-<i>`).
    pub fn tls_dir(&self) -> Option<PathBuf> {
        self.cfg.tls.then(|| self.root.join("tls"))
    }

    /// `--tls-cert`, `--tls-key` and `--tls-ca` for the certificate `name`
    /// (empty without TLS).
    pub fn tls_args(&self, name: &str) -> Vec<OsString> {
        let Some(dir) = self.tls_dir() else {
            return Vec::new();
        };
        vec![
            "--tls-cert".into(),
            dir.join(format!("{name}.pem")).into(),
            "--tls-key".into(),
            dir.join(format!("{name}.key")).into(),
            "--tls-ca".into(),
            dir.join("ca.pem").into(),
        ]
    }

    /// Run `dipc certgen --out <tmp>/tls ARGS`.
    fn certgen(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.bin);
        remove_dipc_env(&mut cmd);
        cmd.arg("certgen")
            .arg("--out")
            .arg(self.root.join("tls"))
            .args(args);
        run_ok(cmd, CERTGEN_TIMEOUT).map(drop)
    }

    /// The `dipc` binary in use.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// `127.0.0.1:<port>` of the referee.
    pub fn referee_addr(&self) -> String {
        format!("127.0.0.1:{}", self.referee_port)
    }

    /// Number of nodes started so far (including extra and killed ones).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i`'s local socket. Panics if `i` is out of range.
    pub fn node_socket(&self, i: usize) -> PathBuf {
        self.nodes[i].socket.clone()
    }

    /// Node `i`'s name (`node-<i>`), as `--name` and in the status.
    /// Panics if `i` is out of range.
    pub fn node_name(&self, i: usize) -> String {
        self.nodes[i].name.clone()
    }

    /// Node `i`'s peer listen address. Panics if `i` is out of range.
    pub fn node_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].port)
    }

    /// Node `i`'s data directory (passed as `--data-dir` only with
    /// [`ClusterBuilder::node_data_dirs`]). Panics if `i` is out of range.
    pub fn node_data_dir(&self, i: usize) -> PathBuf {
        self.nodes[i].data_dir.clone()
    }

    /// Node `i`'s process (pid, exit status, log). Panics if `i` is out of
    /// range.
    pub fn node_process(&mut self, i: usize) -> &mut Process {
        &mut self.nodes[i].proc
    }

    /// Node `i`'s log (every run of it). Panics if `i` is out of range.
    pub fn node_log(&self, i: usize) -> String {
        read_lossy(&self.nodes[i].log)
    }

    /// The referee's log (every run of it).
    pub fn referee_log(&self) -> String {
        read_lossy(&self.root.join("referee.log"))
    }

    /// Is the referee process running?
    pub fn referee_running(&mut self) -> bool {
        self.referee.as_mut().is_some_and(Process::is_running)
    }

    /// `dipc` with `DIPC_REFEREE`, `DIPC_CLUSTER` and `DIPC_SECRET_FILE`
    /// set for this cluster and every other inherited `DIPC_*` removed:
    /// `cluster.dipc().args(["status"])`.
    pub fn dipc(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        remove_dipc_env(&mut cmd);
        cmd.env("DIPC_REFEREE", self.referee_addr())
            .env("DIPC_CLUSTER", &self.cfg.cluster)
            .env("DIPC_SECRET_FILE", &self.secret_file);
        if let Some(dir) = self.tls_dir() {
            cmd.env("DIPC_TLS_CERT", dir.join("tools.pem"))
                .env("DIPC_TLS_KEY", dir.join("tools.key"))
                .env("DIPC_TLS_CA", dir.join("ca.pem"));
        }
        cmd
    }

    fn status_command(&self, json: bool) -> Command {
        let mut cmd = Command::new(&self.bin);
        remove_dipc_env(&mut cmd);
        cmd.arg("status")
            .arg("--referee")
            .arg(self.referee_addr())
            .arg("--cluster")
            .arg(&self.cfg.cluster)
            .arg("--secret-file")
            .arg(&self.secret_file)
            .args(self.tls_args("tools"));
        if json {
            cmd.arg("--json");
        }
        cmd
    }

    fn run_status(&self, json: bool) -> anyhow::Result<String> {
        let out = run_ok(self.status_command(json), STATUS_TIMEOUT)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `dipc status --json`, parsed.
    pub fn status(&self) -> anyhow::Result<ClusterStatus> {
        let text = self.run_status(true)?;
        serde_json::from_str(&text)
            .with_context(|| format!("parsing `dipc status --json` output:\n{text}"))
    }

    /// `dipc status` (human-readable output).
    pub fn status_text(&self) -> anyhow::Result<String> {
        self.run_status(false)
    }

    /// The status entry of the member named `name`, if listed.
    pub fn member(&self, name: &str) -> anyhow::Result<Option<Member>> {
        Ok(self.status()?.members.into_iter().find(|m| m.name == name))
    }

    /// Poll `f` until it returns `Ok(true)`, at most for `timeout`; `Err`
    /// counts as "not yet" (a status query fails while the referee is
    /// down). The timeout error names `what`, carries `f`'s last error and
    /// every process's log.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Cluster) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        poll_until(what, timeout, || f(self)).map_err(|e| anyhow!("{e:#}\n{}", self.logs()))
    }

    /// Wait until the status shows node `i` up (`up == true`) or listed and
    /// down (`up == false`).
    pub fn wait_node_state(&self, i: usize, up: bool, timeout: Duration) -> anyhow::Result<()> {
        let name = self.node_name(i);
        let what = format!("{name} to be shown {}", if up { "up" } else { "down" });
        self.wait_until(&what, timeout, |c| {
            Ok(c.member(&name)?.is_some_and(|m| m.up == up))
        })
    }

    /// `SIGKILL` node `i` and reap it.
    pub fn kill_node(&mut self, i: usize) -> anyhow::Result<ExitStatus> {
        self.nodes[i].proc.kill()
    }

    /// Start node `i` again (after it was killed or exited) with the same
    /// name, port, socket and data directory, and wait until it is up.
    pub fn restart_node(&mut self, i: usize) -> anyhow::Result<()> {
        if self.nodes[i].proc.is_running() {
            bail!("{} is still running", self.nodes[i].name);
        }
        // The dead node's socket file would make readiness look immediate.
        let _ = std::fs::remove_file(&self.nodes[i].socket);
        self.nodes[i].proc = self.node_process_spawn(i)?;
        self.wait_nodes_up(&[i])
    }

    /// `SIGKILL` the referee and reap it.
    pub fn kill_referee(&mut self) -> anyhow::Result<()> {
        if let Some(p) = self.referee.as_mut() {
            p.kill()?;
        }
        Ok(())
    }

    /// Start the referee again on the same port and data directory (after
    /// [`Cluster::kill_referee`]) and wait until it accepts connections.
    /// Nodes are not touched: waiting for them to rejoin is the test's
    /// business.
    pub fn restart_referee(&mut self) -> anyhow::Result<()> {
        if self.referee_running() {
            bail!("the referee is still running");
        }
        self.start_referee(false)
    }

    /// Start one more node with the correct secret and wait until it is up.
    /// Returns its index.
    pub fn add_node(&mut self) -> anyhow::Result<usize> {
        let i = self.spawn_node(None)?;
        self.wait_nodes_up(&[i])?;
        Ok(i)
    }

    /// Start one more node whose secret file holds `secret` (e.g. a wrong
    /// one), without waiting for anything. Returns its index; its process
    /// is stopped with the cluster.
    pub fn start_extra_node(&mut self, secret: &[u8]) -> anyhow::Result<usize> {
        self.spawn_node(Some(secret))
    }

    /// A command running `prog` "on node `i`": `DIPC_SOCKET` is node `i`'s
    /// socket, `DIPC_FALLBACK=error` (no silent fallback to local IPC when
    /// the node is unreachable), other inherited `DIPC_*` removed, and
    /// `LD_PRELOAD=libsysv.so` for a [`Link::Plain`] program.
    /// Panics if `i` is out of range.
    pub fn run_on(&self, i: usize, prog: &Program) -> Command {
        let mut cmd = prog.command();
        cmd.env("DIPC_SOCKET", &self.nodes[i].socket)
            .env("DIPC_FALLBACK", "error");
        if prog.link() == Link::Plain {
            // compile_c built libsysv already; this cannot fail then.
            match libsysv() {
                Ok(lib) => {
                    cmd.env("LD_PRELOAD", lib);
                }
                Err(e) => eprintln!("testkit: no libsysv to preload: {e:#}"),
            }
        }
        cmd
    }

    /// A local-protocol client connected to node `i` (after `Hello`).
    pub fn local_client(&self, i: usize) -> anyhow::Result<LocalClient> {
        LocalClient::connect(&self.nodes[i].socket)
    }

    /// The last lines of every process's log, each under a header with
    /// its name, pid, state and log path.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let referee_state = match &self.referee {
            Some(p) => format!("pid {}", p.pid()),
            None => "never started".to_string(),
        };
        out.push_str(&section(
            "referee",
            &referee_state,
            &self.root.join("referee.log"),
        ));
        for n in &self.nodes {
            out.push_str(&section(&n.name, &format!("pid {}", n.proc.pid()), &n.log));
        }
        out
    }

    fn referee_command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        remove_dipc_env(&mut cmd);
        cmd.arg("referee")
            .arg("--listen")
            .arg(self.referee_addr())
            .arg("--data-dir")
            .arg(self.root.join("referee"))
            .arg("--cluster")
            .arg(&self.cfg.cluster)
            .arg("--secret-file")
            .arg(&self.secret_file);
        if let Some(ms) = self.cfg.heartbeat_ms {
            cmd.arg("--heartbeat-ms").arg(ms.to_string());
        }
        if let Some(ms) = self.cfg.down_after_ms {
            cmd.arg("--down-after-ms").arg(ms.to_string());
        }
        cmd.args(self.tls_args("referee"));
        cmd.args(&self.cfg.referee_args);
        self.set_log_env(&mut cmd);
        cmd.envs(self.cfg.referee_env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn set_log_env(&self, cmd: &mut Command) {
        match &self.cfg.rust_log {
            Some(filter) => {
                cmd.env("RUST_LOG", filter);
            }
            None if std::env::var_os("RUST_LOG").is_none() => {
                cmd.env("RUST_LOG", "info");
            }
            None => {}
        }
    }

    /// Start the referee and wait until its port accepts; with `new_port`
    /// a taken port is replaced, else the same port is retried.
    fn start_referee(&mut self, new_port: bool) -> anyhow::Result<()> {
        let log = self.root.join("referee.log");
        for _ in 0..PORT_ATTEMPTS {
            if new_port {
                self.referee_port = free_port()?;
            }
            self.referee = Some(Process::spawn("referee", self.referee_command(), &log)?);
            let addr = SocketAddr::from(([127, 0, 0, 1], self.referee_port));
            let deadline = Instant::now() + self.cfg.start_timeout;
            loop {
                let p = self
                    .referee
                    .as_mut()
                    .ok_or_else(|| anyhow!("referee vanished"))?;
                if let Some(status) = p.try_wait()? {
                    if address_in_use(&p.log()) {
                        break;
                    }
                    bail!(
                        "the referee exited ({status}) before accepting connections\n{}",
                        self.logs()
                    );
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    bail!(
                        "the referee did not accept connections on {addr} within {:?}\n{}",
                        self.cfg.start_timeout,
                        self.logs()
                    );
                }
                std::thread::sleep(POLL_EVERY);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "the referee found its port in use {PORT_ATTEMPTS} times\n{}",
            self.logs()
        )
    }

    /// Spawn a new node (index = current count), with its own secret file
    /// when `secret` is given. Does not wait.
    fn spawn_node(&mut self, secret: Option<&[u8]>) -> anyhow::Result<usize> {
        let i = self.nodes.len();
        let name = format!("node-{i}");
        let data_dir = self.root.join(&name);
        std::fs::create_dir(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let secret_file = match secret {
            Some(s) => {
                let f = self.root.join(format!("secret-{name}"));
                write_secret(&f, s)?;
                f
            }
            None => self.secret_file.clone(),
        };
        if self.cfg.tls {
            self.certgen(&["--name", &name, "--san", "127.0.0.1"])?;
        }
        let log = self.root.join(format!("{name}.log"));
        let port = free_port()?;
        let mut cmd = Command::new(&self.bin);
        node_args(
            &mut cmd,
            &self.referee_addr(),
            port,
            &self.root.join(format!("{name}.sock")),
            &self.cfg.cluster,
            &secret_file,
            &name,
            self.cfg.node_data_dirs.then_some(data_dir.as_path()),
        );
        let proc = Process::spawn(&name, self.finish_node_command(cmd, &name), &log)?;
        self.nodes.push(Node {
            socket: self.root.join(format!("{name}.sock")),
            name,
            port,
            data_dir,
            secret_file,
            log,
            proc,
        });
        Ok(i)
    }

    fn finish_node_command(&self, mut cmd: Command, name: &str) -> Command {
        cmd.args(self.tls_args(name));
        cmd.args(&self.cfg.node_args);
        self.set_log_env(&mut cmd);
        cmd.envs(self.cfg.node_env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Spawn node `i` again from its slot (same name, port, files).
    fn node_process_spawn(&self, i: usize) -> anyhow::Result<Process> {
        let n = &self.nodes[i];
        let mut cmd = Command::new(&self.bin);
        node_args(
            &mut cmd,
            &self.referee_addr(),
            n.port,
            &n.socket,
            &self.cfg.cluster,
            &n.secret_file,
            &n.name,
            self.cfg.node_data_dirs.then_some(n.data_dir.as_path()),
        );
        Process::spawn(&n.name, self.finish_node_command(cmd, &n.name), &n.log)
    }

    /// Wait until every node in `idx` has its socket and is shown up;
    /// a node that lost its port is restarted on a new one.
    fn wait_nodes_up(&mut self, idx: &[usize]) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.cfg.start_timeout;
        let mut pending: Vec<usize> = idx.to_vec();
        let mut port_retries = 0;
        let mut last_err: Option<anyhow::Error> = None;
        while !pending.is_empty() {
            for &i in &pending {
                let n = &mut self.nodes[i];
                if let Some(status) = n.proc.try_wait()? {
                    if address_in_use(&n.proc.log()) && port_retries < PORT_ATTEMPTS {
                        port_retries += 1;
                        n.port = free_port()?;
                        let _ = std::fs::remove_file(&n.socket);
                        self.nodes[i].proc = self.node_process_spawn(i)?;
                        continue;
                    }
                    let name = n.name.clone();
                    bail!("{name} exited ({status}) before it was up\n{}", self.logs());
                }
            }
            let with_socket: Vec<usize> = pending
                .iter()
                .copied()
                .filter(|&i| self.nodes[i].socket.exists())
                .collect();
            if !with_socket.is_empty() {
                match self.status() {
                    Ok(st) => pending.retain(|&i| {
                        !(with_socket.contains(&i)
                            && st
                                .members
                                .iter()
                                .any(|m| m.name == self.nodes[i].name && m.up))
                    }),
                    Err(e) => last_err = Some(e),
                }
            }
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let names: Vec<String> = pending.iter().map(|&i| self.node_name(i)).collect();
                let last = last_err.map(|e| format!("; last status error: {e:#}"));
                bail!(
                    "nodes {} were not up within {:?} (socket exists and `dipc status` lists \
                     them up){}\n{}",
                    names.join(", "),
                    self.cfg.start_timeout,
                    last.unwrap_or_default(),
                    self.logs()
                );
            }
            std::thread::sleep(POLL_EVERY);
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn node_args(
    cmd: &mut Command,
    referee: &str,
    port: u16,
    socket: &Path,
    cluster: &str,
    secret_file: &Path,
    name: &str,
    data_dir: Option<&Path>,
) {
    remove_dipc_env(cmd);
    cmd.arg("node")
        .arg("--referee")
        .arg(referee)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--socket")
        .arg(socket)
        .arg("--cluster")
        .arg(cluster)
        .arg("--secret-file")
        .arg(secret_file)
        .arg("--name")
        .arg(name);
    if let Some(dir) = data_dir {
        cmd.arg("--data-dir").arg(dir);
    }
    transport_args(cmd);
}

/// `DIPC_TEST_TRANSPORT` (`tcp`, `rdma`, `auto`), `DIPC_TEST_RDMA_DEVICE`
/// and `DIPC_TEST_GID_INDEX` in the test's environment become the nodes'
/// `--transport`, `--rdma-device` and `--gid-index`, so that the same tests
/// run over RDMA in the soft-RoCE VM (`scripts/vm-tests.sh`).
fn transport_args(cmd: &mut Command) {
    for (var, flag) in [
        ("DIPC_TEST_TRANSPORT", "--transport"),
        ("DIPC_TEST_RDMA_DEVICE", "--rdma-device"),
        ("DIPC_TEST_GID_INDEX", "--gid-index"),
    ] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            cmd.arg(flag).arg(v);
        }
    }
}

/// Did the last run recorded in `log` fail because its port was taken?
fn address_in_use(log: &str) -> bool {
    let last_run = log
        .rfind("---- testkit: starting")
        .map_or(log, |at| &log[at..]);
    last_run
        .to_ascii_lowercase()
        .contains("address already in use")
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn section(name: &str, state: &str, log: &Path) -> String {
    let text = read_lossy(log);
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(LOG_TAIL_LINES);
    let mut s = format!(
        "==== {name} ({state}), log {} (last {} lines) ====\n",
        log.display(),
        lines.len() - skip
    );
    for l in &lines[skip..] {
        s.push_str(l);
        s.push('\n');
    }
    s
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let procs = self
            .nodes
            .iter_mut()
            .map(|n| &mut n.proc)
            .chain(self.referee.as_mut());
        if let Err(e) = stop_all(procs, DEFAULT_GRACE) {
            eprintln!("testkit: {e:#}");
        }
        if std::thread::panicking() {
            eprintln!(
                "testkit: the test failed; logs of cluster {}:\n{}",
                self.root.display(),
                self.logs()
            );
        }
        if std::env::var_os("DIPC_TESTKIT_KEEP").is_some()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("testkit: keeping {}", dir.keep().display());
        }
    }
}
