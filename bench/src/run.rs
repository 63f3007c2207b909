//! The runner: measure the selected scenarios in table order and build the
//! report.
//!
//! Floors run first, in this process. The embedded cluster is started
//! only when the first dipc scenario comes up, and once: if it cannot
//! start, every dipc scenario fails with that reason (and the daemons' log
//! tail) while the floors keep their numbers. One scenario's failure never
//! stops the others, and never yields a number.

use std::time::{SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};

use crate::Error;
use crate::agent::AgentCommand;
use crate::cluster::Cluster;
use crate::logs::LogBuffer;
use crate::machine::Machine;
use crate::report::{Outcome, Report};
use crate::scenario::{self, Measure, Profile, Scenario};
use crate::stats::{summarize, warmup_for};

/// Nodes of the embedded cluster.
pub const NODES: usize = 2;
/// Log lines attached to a failed scenario.
pub const LOG_TAIL: usize = 40;

/// What to run and how.
#[derive(Debug, Clone)]
pub struct Options {
    pub profile: Profile,
    /// Scenario names; empty for all.
    pub scenarios: Vec<String>,
    /// Counted samples per scenario, overriding the profile's.
    pub samples: Option<usize>,
    /// Draw progress bars (on stderr, only when it is a terminal).
    pub progress: bool,
    /// How to start agent processes; without one the dipc scenarios fail.
    pub agent: Option<AgentCommand>,
    /// Where the embedded daemons log (its tail goes into failures).
    pub logs: Option<LogBuffer>,
}

impl Options {
    /// All scenarios of `profile`, no progress bars, no agents, no logs.
    pub fn new(profile: Profile) -> Options {
        Options {
            profile,
            scenarios: Vec::new(),
            samples: None,
            progress: false,
            agent: None,
            logs: None,
        }
    }
}

/// `err` and its sources, `: `-separated.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}

fn progress_bar(opts: &Options, s: &Scenario, total: usize) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{prefix:>14} [{bar:32}] {pos:>7}/{len:7} {elapsed_precise} eta {eta}",
    )
    .map(|st| st.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(total as u64)
        .with_style(style)
        .with_prefix(s.name)
}

/// Measure the scenarios `opts` selects. Fails only for an unknown
/// scenario name; everything else ends up in the report.
pub fn run(opts: &Options) -> Result<Report, Error> {
    let selected = scenario::select(&opts.scenarios)?;
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let machine = Machine::probe();
    let mut cluster: Option<Result<Cluster, String>> = None;
    let mut outcomes = Vec::with_capacity(selected.len());
    for s in selected {
        let samples = opts
            .samples
            .unwrap_or_else(|| s.samples_for(opts.profile))
            .max(1);
        let warmup = warmup_for(samples);
        let total = samples + warmup;
        let raw = match s.measure {
            Measure::Floor(measure) => {
                let pb = progress_bar(opts, s, total);
                let r = measure(total, &pb);
                pb.finish_and_clear();
                r.map_err(|e| chain(&e))
            }
            Measure::Dipc(measure) => {
                let c = cluster.get_or_insert_with(|| start_cluster(opts));
                match c {
                    Ok(c) => {
                        let pb = progress_bar(opts, s, total);
                        let r = measure(c, total, &pb);
                        pb.finish_and_clear();
                        // A daemon that died explains the failure best.
                        r.map_err(|e| match c.check_alive() {
                            Err(dead) => format!("{} ({})", chain(&e), chain(&dead)),
                            Ok(()) => chain(&e),
                        })
                    }
                    Err(e) => Err(e.clone()),
                }
            }
        };
        let outcome = match raw.and_then(|raw| summarize(&raw, warmup).map_err(|e| chain(&e))) {
            Ok(summary) => Outcome::Measured { summary },
            Err(error) => Outcome::Failed {
                error: format!("{}: {error}", s.name),
                log_tail: opts
                    .logs
                    .as_ref()
                    .map_or_else(Vec::new, |l| l.tail(LOG_TAIL)),
            },
        };
        outcomes.push((s, outcome));
    }
    if let Some(Ok(c)) = cluster
        && let Err(e) = c.shutdown()
    {
        tracing::warn!("embedded cluster shutdown: {}", chain(&e));
    }
    Ok(Report::new(opts.profile, started, machine, outcomes))
}

fn start_cluster(opts: &Options) -> Result<Cluster, String> {
    let agent = opts.agent.clone().ok_or_else(|| {
        "no agent command: the dipc scenarios need agent processes (run them from the dipc binary)"
            .to_string()
    })?;
    Cluster::start(NODES, agent)
        .map_err(|e| format!("starting the embedded cluster: {}", chain(&e)))
}
