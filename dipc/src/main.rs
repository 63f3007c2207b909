//! `dipc`: the command line of dipc (distributed System V IPC).
//!
//! Subcommands start the referee and node daemons, ask the referee for the
//! cluster's status, and run the demo. Settings come from flags, then
//! environment variables, then an optional TOML file (see `config.rs`).
//! For applications: `run` starts a program once per node (`run.rs`),
//! `ipcs`/`ipcrm`/`ipcmk` are the cluster-wide util-linux tools
//! (`ipcs.rs`, `ipcrm.rs`, `ipcmk.rs`), `--metrics` on the daemons serves
//! Prometheus text (`metrics.rs`), `certgen` makes TLS certificates
//! (`certgen.rs`), and the hidden `man DIR` writes the man
//! pages `make install` installs. Tested end to end by `tests/*.rs` with
//! the real binary (dipc-testkit).

mod bench;
mod certgen;
mod config;
mod demo;
mod ipcmk;
mod ipcrm;
mod ipcs;
mod metrics;
mod run;
mod status;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use config::FileConfig;

#[derive(Parser)]
#[command(
    name = "dipc",
    version,
    about = "Distributed System V IPC: shared memory, message queues and semaphores across machines"
)]
struct Cli {
    /// Optional TOML config file (flags win over environment, environment over the file).
    #[arg(long, global = true, env = "DIPC_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct ClusterArgs {
    /// Cluster name: nodes of another cluster are refused.
    #[arg(long, env = "DIPC_CLUSTER")]
    cluster: Option<String>,
    /// File holding the cluster secret (never sent over the wire).
    #[arg(long, env = "DIPC_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// TLS: this side's certificate chain (PEM). With --tls-key and --tls-ca,
    /// links to the referee and between nodes use mutual TLS.
    #[arg(long, env = "DIPC_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// TLS: the private key of --tls-cert (PEM).
    #[arg(long, env = "DIPC_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// TLS: the cluster CA certificate(s) that peers' certificates must chain to (PEM).
    #[arg(long, env = "DIPC_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the referee: the cluster's name server and membership list.
    Referee {
        /// Address to listen on.
        #[arg(long, env = "DIPC_REFEREE_LISTEN")]
        listen: Option<String>,
        /// Where the registry is kept (survives restarts).
        #[arg(long, env = "DIPC_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Nodes send a heartbeat this often.
        #[arg(long, env = "DIPC_HEARTBEAT_MS")]
        heartbeat_ms: Option<u64>,
        /// A node silent this long is marked down.
        #[arg(long, env = "DIPC_DOWN_AFTER_MS")]
        down_after_ms: Option<u64>,
        /// Serve Prometheus metrics on this loopback address (e.g. 127.0.0.1:9100).
        #[arg(long, env = "DIPC_METRICS")]
        metrics: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Run a node daemon (one per machine).
    Node {
        /// The referee's address.
        #[arg(long, env = "DIPC_REFEREE")]
        referee: Option<String>,
        /// Address peers connect to.
        #[arg(long, env = "DIPC_LISTEN")]
        listen: Option<String>,
        /// Unix socket for local processes (libsysv).
        #[arg(long, env = "DIPC_SOCKET")]
        socket: Option<PathBuf>,
        /// Stable node name (default: the listen address).
        #[arg(long, env = "DIPC_NODE_NAME")]
        name: Option<String>,
        /// Default coherence unit in bytes for segments created here.
        #[arg(long, env = "DIPC_PAGE_SIZE")]
        page_size: Option<u32>,
        /// Bound on every remote wait, in milliseconds.
        #[arg(long, env = "DIPC_CALL_TIMEOUT_MS")]
        call_timeout_ms: Option<u64>,
        /// Serve Prometheus metrics on this loopback address (e.g. 127.0.0.1:9101).
        #[arg(long, env = "DIPC_METRICS")]
        metrics: Option<String>,
        /// Peer links over `tcp`, `rdma` (verbs; fails without a usable device) or
        /// `auto` (RDMA when a device has an ACTIVE port, else TCP) [default: tcp].
        #[arg(long, env = "DIPC_TRANSPORT")]
        transport: Option<String>,
        /// RDMA device for peer links (`auto` = the first with an ACTIVE port).
        #[arg(long, env = "DIPC_RDMA_DEVICE")]
        rdma_device: Option<String>,
        /// GID table index of the RDMA port (soft-RoCE: 1 = IPv4 RoCEv2) [default: 1].
        #[arg(long, env = "DIPC_GID_INDEX")]
        gid_index: Option<u8>,
        /// Longest message of the queues created here, bytes (as kernel.msgmax;
        /// up to 524288) [default: 8192].
        #[arg(long, env = "DIPC_MSGMAX")]
        msgmax: Option<u32>,
        /// Byte limit (msg_qbytes) of the queues created here (as kernel.msgmnb;
        /// at least msgmax) [default: 16384, or msgmax if larger].
        #[arg(long, env = "DIPC_MSGMNB")]
        msgmnb: Option<u64>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Show the cluster: members, addresses, up/down, objects.
    Status {
        /// The referee's address.
        #[arg(long, env = "DIPC_REFEREE")]
        referee: Option<String>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Write a new random cluster secret to FILE (mode 0600).
    Keygen { file: PathBuf },
    /// Make a cluster CA (--ca) or a certificate signed by it (--name, --san) for TLS.
    Certgen(certgen::CertgenArgs),
    /// Run the demo: embedded referee and nodes on loopback, a page-fault latency run.
    Demo,
    /// Measure fault latency and its floors (table on stdout, --json for a file).
    Bench(bench::BenchArgs),
    /// List the cluster's distributed objects, like ipcs (sections, hex keys, home node).
    Ipcs {
        /// The referee's address.
        #[arg(long, env = "DIPC_REFEREE")]
        referee: Option<String>,
        #[command(flatten)]
        args: ipcs::IpcsArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Remove distributed objects by id (-m/-q/-s) or key (-M/-Q/-S), like ipcrm.
    Ipcrm(ipcrm::IpcrmArgs),
    /// Create a distributed object (-M size, -Q, -S nsems) and print its id, like ipcmk.
    Ipcmk(ipcmk::IpcmkArgs),
    /// Start a program once per node (DIPC_SOCKET, DIPC_RANK, DIPC_NODES set),
    /// on a private local test cluster or on given node sockets.
    Run(run::RunArgs),
    /// Write the man pages (dipc.1 and dipc-COMMAND.1) into DIR (used by `make install`).
    #[command(hide = true)]
    Man { dir: PathBuf },
    /// An agent process of `dipc bench`/`dipc demo` (driven over stdin/stdout).
    #[command(hide = true)]
    Agent,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // demo and bench keep the embedded daemons' logs in memory (bench.rs).
    if !matches!(cli.cmd, Cmd::Demo | Cmd::Bench(_)) {
        init_logging();
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dipc: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

struct Cluster {
    name: String,
    secret: std::sync::Arc<[u8]>,
    tls: Option<std::sync::Arc<dipc_transport_tcp::TlsConfig>>,
}

fn cluster(args: &ClusterArgs, file: &FileConfig) -> anyhow::Result<Cluster> {
    let name = args
        .cluster
        .clone()
        .or_else(|| file.cluster.clone())
        .unwrap_or_else(|| config::DEFAULT_CLUSTER.to_string());
    let secret_file = args
        .secret_file
        .clone()
        .or_else(|| file.secret_file.clone())
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_SECRET_FILE));
    let secret = config::read_secret(&secret_file)?;
    let tls = config::tls(
        args.tls_cert.clone().or_else(|| file.tls_cert.clone()),
        args.tls_key.clone().or_else(|| file.tls_key.clone()),
        args.tls_ca.clone().or_else(|| file.tls_ca.clone()),
    )?;
    Ok(Cluster { name, secret, tls })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let file = FileConfig::load(cli.config.as_deref())?;
    match cli.cmd {
        Cmd::Referee {
            listen,
            data_dir,
            heartbeat_ms,
            down_after_ms,
            metrics,
            cluster: c,
        } => {
            let c = cluster(&c, &file)?;
            let metrics = metrics.as_deref().map(metrics::loopback).transpose()?;
            let cfg = dipc_referee::server::ServerConfig {
                listen: listen
                    .or_else(|| file.referee.clone())
                    .unwrap_or_else(|| config::DEFAULT_REFEREE.into()),
                data_dir: data_dir
                    .or(file.data_dir.clone())
                    .unwrap_or_else(|| config::DEFAULT_DATA_DIR.into()),
                cluster: c.name,
                secret: c.secret,
                tls: c.tls,
                heartbeat_ms: heartbeat_ms.or(file.heartbeat_ms).unwrap_or(500),
                down_after_ms: down_after_ms.or(file.down_after_ms).unwrap_or(3000),
            };
            let source = metrics::Source {
                referee: cfg.listen.clone(),
                cluster: cfg.cluster.clone(),
                secret: cfg.secret.clone(),
                tls: cfg.tls.clone(),
                node_socket: None,
            };
            runtime()?.block_on(async move {
                let server = dipc_referee::server::bind(cfg).await?;
                if let Some(addr) = metrics {
                    metrics::bind(addr, source).await?;
                }
                server.run(shutdown_signal()).await?;
                anyhow::Ok(())
            })
        }
        Cmd::Node {
            referee,
            listen,
            socket,
            name,
            page_size,
            call_timeout_ms,
            metrics,
            transport,
            rdma_device,
            gid_index,
            msgmax,
            msgmnb,
            cluster: c,
        } => {
            let c = cluster(&c, &file)?;
            let msgmax = msgmax.or(file.msgmax).unwrap_or(8192);
            let msgmnb = msgmnb
                .or(file.msgmnb)
                .unwrap_or_else(|| u64::from(msgmax).max(16384));
            let msg = dipc_node::MsgLimits::new(msgmax, msgmnb).map_err(anyhow::Error::msg)?;
            let rdma = dipc_node::RdmaConfig {
                device: rdma_device
                    .or(file.rdma_device.clone())
                    .unwrap_or_else(|| "auto".into())
                    .parse()?,
                gid_index: gid_index.or(file.gid_index).unwrap_or(1),
                ..Default::default()
            };
            let metrics = metrics.as_deref().map(metrics::loopback).transpose()?;
            let listen = listen
                .or_else(|| file.listen.clone())
                .unwrap_or_else(|| config::DEFAULT_NODE_LISTEN.into());
            let cfg = dipc_node::NodeConfig {
                name: name.or(file.name.clone()).unwrap_or_else(|| listen.clone()),
                listen,
                socket: socket
                    .or(file.socket.clone())
                    .unwrap_or_else(|| dipc_wire::local::DEFAULT_SOCKET.into()),
                referee: referee
                    .or(file.referee.clone())
                    .unwrap_or_else(|| config::DEFAULT_REFEREE.into()),
                cluster: c.name,
                secret: c.secret,
                tls: c.tls,
                transport: transport
                    .or(file.transport.clone())
                    .unwrap_or_else(|| "tcp".into()),
                rdma,
                call_timeout: Duration::from_millis(
                    call_timeout_ms.or(file.call_timeout_ms).unwrap_or(10_000),
                ),
                default_unit: page_size.or(file.page_size).unwrap_or(4096),
                msg,
            };
            let source = metrics::Source {
                referee: cfg.referee.clone(),
                cluster: cfg.cluster.clone(),
                secret: cfg.secret.clone(),
                tls: cfg.tls.clone(),
                node_socket: Some(cfg.socket.clone()),
            };
            runtime()?.block_on(async move {
                if let Some(addr) = metrics {
                    metrics::bind(addr, source).await?;
                }
                dipc_node::run(cfg, shutdown_signal()).await?;
                anyhow::Ok(())
            })?;
            Ok(())
        }
        Cmd::Status {
            referee,
            json,
            cluster: c,
        } => {
            let c = cluster(&c, &file)?;
            let referee = referee
                .or(file.referee.clone())
                .unwrap_or_else(|| config::DEFAULT_REFEREE.into());
            runtime()?.block_on(status::show(&referee, &c.name, c.secret, c.tls, json))
        }
        Cmd::Keygen { file: path } => config::keygen(&path),
        Cmd::Certgen(args) => certgen::run(args),
        Cmd::Demo => demo::run(),
        Cmd::Bench(args) => bench::run(args),
        Cmd::Agent => bench::agent(),
        Cmd::Ipcs {
            referee,
            args,
            cluster: c,
        } => {
            let c = cluster(&c, &file)?;
            let referee = referee
                .or(file.referee.clone())
                .unwrap_or_else(|| config::DEFAULT_REFEREE.into());
            runtime()?.block_on(ipcs::show(args, &referee, &c.name, c.secret, c.tls, &file))
        }
        Cmd::Ipcrm(args) => match ipcrm::run(args, &file)? {
            0 => Ok(()),
            code => std::process::exit(code),
        },
        Cmd::Ipcmk(args) => ipcmk::run(args, &file),
        Cmd::Man { dir } => write_man_pages(&dir),
        Cmd::Run(args) => match run::run(args, cli.config.as_deref())? {
            0 => Ok(()),
            code => std::process::exit(code),
        },
    }
}

/// `dipc man DIR`: one roff page per visible command, from the CLI itself
/// (clap_mangen), so the pages never disagree with `--help`.
fn write_man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cmd = Cli::command();
    let mut pages = vec![("dipc".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("dipc-{}", sub.get_name());
        pages.push((
            name.clone(),
            sub.clone().display_name(name.clone()).bin_name(name),
        ));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(page)
            .title(name.to_uppercase())
            .render(&mut out)?;
        std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
