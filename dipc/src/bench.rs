//! `dipc bench` (and the hidden `dipc agent` it runs on each node).
//!
//! The measuring is the `dipc-bench` crate's; this module turns flags into
//! its options, prints the table on stdout, writes the JSON report, and
//! fails (exit status 1) when any scenario failed, so a script never takes
//! a partial run for a complete one. The daemons' logs go to a memory
//! buffer, not the terminal; a failed scenario prints their tail.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use dipc_bench::agent::AgentCommand;
use dipc_bench::logs::{DEFAULT_LINES, LogBuffer};
use dipc_bench::{Options, Profile};

/// Flags of `dipc bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A shorter run (under a minute), enough for a p50 and a rough p99.
    #[arg(long)]
    quick: bool,
    /// Also write the full report (machine, every summary, ratios) as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Run only these scenarios and their floors (see --list); default: all.
    #[arg(long = "scenario", value_name = "NAME", num_args = 1..)]
    scenarios: Vec<String>,
    /// Counted samples per scenario (after warm-up), instead of the profile's.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    samples: Option<u64>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Where to write the plots (latency.svg, scaling.svg) and report.json.
    #[arg(long, value_name = "DIR", default_value = "target/bench")]
    plot: PathBuf,
    /// `rdma`: the fault scenarios with the nodes' links on RDMA next to the
    /// same on TCP, perftest's ib_read_lat and raw RDMA round trips (needs a
    /// device; see scripts/bench-rdma.sh). Default: the usual table (TCP).
    #[arg(long, value_name = "tcp|rdma")]
    transport: Option<String>,
    /// RDMA device for --transport rdma (`auto` = the first with an ACTIVE port).
    #[arg(long, value_name = "DEV", default_value = "auto")]
    rdma_device: String,
    /// GID index for --transport rdma (soft-RoCE: 1).
    #[arg(long, value_name = "N", default_value_t = 1)]
    gid_index: u8,
}

/// `dipc bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.list {
        for s in dipc_bench::SCENARIOS {
            let mut floor = if s.floor.is_empty() {
                String::new()
            } else {
                format!(" [floor: {}]", s.floor.join(" + "))
            };
            if !s.also.is_empty() {
                floor.push_str(&format!(" [also: {}]", s.also.join(", ")));
            }
            println!("{:<16} {}{floor}", s.name, s.what);
        }
        return Ok(());
    }
    match args.transport.as_deref() {
        None | Some("tcp") => {}
        Some("rdma") => return rdma(&args),
        Some(other) => anyhow::bail!("unknown --transport {other:?} (tcp or rdma)"),
    }
    let profile = if args.quick {
        Profile::Quick
    } else {
        Profile::Full
    };
    let mut opts = options(profile)?;
    opts.scenarios = args.scenarios;
    opts.samples = args.samples.map(|n| n as usize);
    measure(&opts, args.json.as_deref(), Some(&args.plot))
}

/// Options common to `dipc bench` and `dipc demo`: agents are this binary
/// (`dipc agent`), logs go to a memory buffer, progress bars on.
pub fn options(profile: Profile) -> anyhow::Result<Options> {
    let logs = LogBuffer::new(DEFAULT_LINES);
    logs.install("info");
    let mut opts = Options::new(profile);
    opts.agent = Some(AgentCommand::current_exe(&["agent"])?);
    opts.logs = Some(logs);
    opts.progress = true;
    Ok(opts)
}

/// Run, print the table, write the JSON and, with `plot`, the plots and
/// a copy of the JSON into that directory; an error when a scenario
/// failed (a skipped one is not a failure).
pub fn measure(opts: &Options, json: Option<&Path>, plot: Option<&Path>) -> anyhow::Result<()> {
    let report = dipc_bench::run(opts)?;
    print!("{}", report.table());
    let mut jsons: Vec<PathBuf> = json.map(Path::to_path_buf).into_iter().collect();
    if let Some(dir) = plot {
        match dipc_bench::plot::write(&report, dir) {
            Ok(files) => {
                for f in files {
                    eprintln!("plot written to {}", f.display());
                }
                jsons.push(dir.join("report.json"));
            }
            Err(e) => eprintln!("no plot: {}", dipc_bench::run::chain(&e)),
        }
    }
    for path in jsons {
        std::fs::write(&path, report.to_json() + "\n")
            .with_context(|| format!("cannot write the JSON report to {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    let failed = report.failed();
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} scenario(s) failed: {}", failed.len(), failed.join(", "))
    }
}

/// The hidden `dipc agent`: an application process of a dipc scenario,
/// driven over stdin/stdout by the coordinator (see `dipc_bench::agent`).
pub fn agent() -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    dipc_bench::agent::serve(stdin.lock(), stdout.lock())?;
    Ok(())
}

/// `dipc bench --transport rdma` (see `dipc_bench::rdma`).
fn rdma(args: &BenchArgs) -> anyhow::Result<()> {
    let logs = LogBuffer::new(DEFAULT_LINES);
    logs.install("warn");
    let samples = args
        .samples
        .map_or(if args.quick { 2_000 } else { 10_000 }, |n| n as usize);
    let opts = dipc_bench::rdma::RdmaOptions {
        device: args.rdma_device.clone(),
        gid_index: args.gid_index,
        samples,
        agent: AgentCommand::current_exe(&["agent"])?,
    };
    let rows = dipc_bench::rdma::compare(&opts)?;
    print!("{}", dipc_bench::rdma::table(&rows));
    if rows
        .iter()
        .any(|r| r.result.as_ref().is_err_and(|e| !e.starts_with("skipped")))
    {
        for line in logs.tail(DEFAULT_LINES) {
            eprintln!("{line}");
        }
        anyhow::bail!("some rows failed");
    }
    Ok(())
}
