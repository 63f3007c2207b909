//! The runner: measure the selected scenarios and build the report.
//!
//! Samples are taken in slices, round robin over the scenarios, floors
//! first in each round (see [`run`]), so that a ratio to a floor compares
//! numbers taken under the same conditions. The embedded cluster is
//! started when the first dipc scenario comes up, and once: if it cannot
//! start, every dipc scenario fails with that reason (and the daemons' log
//! tail) while the floors keep their numbers. One scenario's failure never
//! stops the others (a failed scenario is not tried again), and never
//! yields a number.

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

/// Nodes of the embedded cluster when no selected scenario asks for more.
pub const NODES: usize = 2;
/// Default of [`Options::slices`].
pub const DEFAULT_SLICES: usize = 4;
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
    /// Draw a progress bar (on stderr, only when it is a terminal).
    pub progress: bool,
    /// Slices each scenario's samples are taken in, round robin over the
    /// scenarios (see [`run`]).
    pub slices: usize,
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
            slices: DEFAULT_SLICES,
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

fn progress_bar(opts: &Options, total: usize) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{prefix:>14} [{bar:32}] {pos:>7}/{len:7} {elapsed_precise} eta {eta}",
    )
    .map(|st| st.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(total as u64).with_style(style)
}

/// One scenario's share of the run: its samples split into slices, what
/// was measured so far, or why it failed.
struct Plan {
    scenario: &'static Scenario,
    /// Counted samples of each slice.
    per_slice: Vec<usize>,
    /// Counted samples so far (warm-ups dropped), in order.
    raw: Vec<u64>,
    warmup: usize,
    error: Option<String>,
    /// Set with `error` when the scenario was skipped rather than failed.
    skipped: bool,
}

impl Plan {
    fn new(scenario: &'static Scenario, samples: usize, slices: usize) -> Plan {
        let per_slice = (0..slices)
            .map(|i| samples / slices + usize::from(i < samples % slices))
            .collect();
        Plan {
            scenario,
            per_slice,
            raw: Vec::with_capacity(samples),
            warmup: 0,
            error: None,
            skipped: false,
        }
    }

    /// Samples taken by slice `i`, warm-up included.
    fn slice_total(&self, i: usize) -> usize {
        match self.per_slice.get(i) {
            Some(&0) | None => 0,
            Some(&n) => n + self.scenario.warmup.unwrap_or_else(|| warmup_for(n)),
        }
    }
}

/// Measure the scenarios `opts` selects. Fails only for an unknown
/// scenario name; everything else ends up in the report.
///
/// The samples of every scenario are taken in [`Options::slices`] slices,
/// round robin over the scenarios (floors first in each round), so that a
/// machine whose load changes during the run slows a scenario and its
/// floors alike and the ratios stay meaningful. Each slice drops its own
/// warm-up, since each starts afresh (new mapping, connection, agents).
pub fn run(opts: &Options) -> Result<Report, Error> {
    let mut selected = scenario::select(&opts.scenarios)?;
    if opts.scenarios.is_empty() {
        selected.retain(|s| s.in_profile(opts.profile));
    }
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let machine = Machine::probe();
    let slices = opts.slices.max(1);
    let mut plans: Vec<Plan> = selected
        .into_iter()
        .map(|s| {
            let samples = opts
                .samples
                .unwrap_or_else(|| s.samples_when_named(opts.profile))
                .max(1);
            Plan::new(s, samples, slices.min(samples))
        })
        .collect();
    let total: usize = plans
        .iter()
        .map(|p| (0..slices).map(|i| p.slice_total(i)).sum::<usize>())
        .sum();
    let nodes_for = |netns: bool| {
        plans
            .iter()
            .filter(|p| p.scenario.kind == scenario::Kind::Dipc && p.scenario.netns == netns)
            .map(|p| p.scenario.nodes)
            .max()
            .unwrap_or(NODES)
            .max(NODES)
    };
    let (nodes, ns_nodes) = (nodes_for(false), nodes_for(true));
    let pb = progress_bar(opts, total);
    let mut cluster: Option<Result<Cluster, (bool, String)>> = None;
    // The cluster whose nodes are in network namespaces, for the rows
    // that ask for it.
    let mut ns_cluster: Option<Result<Cluster, (bool, String)>> = None;
    for slice in 0..slices {
        for plan in plans.iter_mut().filter(|p| p.error.is_none()) {
            let n = plan.slice_total(slice);
            if n == 0 {
                continue;
            }
            let s = plan.scenario;
            pb.set_prefix(s.name);
            let raw = match s.measure {
                Measure::Floor(measure) => measure(n, &pb).map_err(|e| failure(&e)),
                Measure::Procs(measure) => match &opts.agent {
                    Some(agent) => measure(agent, n, &pb).map_err(|e| failure(&e)),
                    None => Err((false, NO_AGENT.to_string())),
                },
                Measure::Dipc(measure) => {
                    let c = if s.netns {
                        ns_cluster.get_or_insert_with(|| start_ns_cluster(opts, ns_nodes))
                    } else {
                        cluster.get_or_insert_with(|| start_cluster(opts, nodes))
                    };
                    match c {
                        // A daemon that died explains a failure best.
                        Ok(c) => measure(c, n, &pb).map_err(|e| match c.check_alive() {
                            Err(dead) => (false, format!("{} ({})", chain(&e), chain(&dead))),
                            Ok(()) => (false, chain(&e)),
                        }),
                        Err(e) => Err(e.clone()),
                    }
                }
            };
            match raw {
                Ok(raw) => {
                    let w = n - plan.per_slice[slice];
                    plan.warmup += w;
                    plan.raw.extend(raw.into_iter().skip(w));
                }
                Err((skipped, e)) => {
                    plan.error = Some(e);
                    plan.skipped = skipped;
                }
            }
        }
    }
    pb.finish_and_clear();
    for c in [cluster, ns_cluster].into_iter().flatten().flatten() {
        if let Err(e) = c.shutdown() {
            tracing::warn!("embedded cluster shutdown: {}", chain(&e));
        }
    }
    let outcomes = plans
        .into_iter()
        .map(|p| {
            if p.skipped {
                let reason = p.error.unwrap_or_default();
                return (p.scenario, Outcome::Skipped { reason });
            }
            let summary = match p.error {
                Some(e) => Err(e),
                None => summarize(&p.raw, 0).map_err(|e| chain(&e)),
            };
            let outcome = match summary {
                Ok(mut summary) => {
                    summary.warmup = p.warmup as u64;
                    Outcome::Measured { summary }
                }
                Err(error) => Outcome::Failed {
                    error: format!("{}: {error}", p.scenario.name),
                    log_tail: opts
                        .logs
                        .as_ref()
                        .map_or_else(Vec::new, |l| l.tail(LOG_TAIL)),
                },
            };
            (p.scenario, outcome)
        })
        .collect();
    Ok(Report::new(opts.profile, started, machine, outcomes))
}

const NO_AGENT: &str =
    "no agent command: this scenario needs agent processes (run it from the dipc binary)";

/// A scenario's error: `(skipped, reason)`.
fn failure(e: &Error) -> (bool, String) {
    match e {
        Error::Unavailable { what } => (true, what.clone()),
        other => (false, chain(other)),
    }
}

fn start_cluster(opts: &Options, nodes: usize) -> Result<Cluster, (bool, String)> {
    let agent = opts
        .agent
        .clone()
        .ok_or_else(|| (false, NO_AGENT.to_string()))?;
    Cluster::start(nodes, agent).map_err(|e| {
        (
            false,
            format!("starting the embedded cluster: {}", chain(&e)),
        )
    })
}

/// The cluster of the network-namespace rows; skipped (not failed) when
/// namespaces are unavailable (not root, no `ip`).
fn start_ns_cluster(opts: &Options, nodes: usize) -> Result<Cluster, (bool, String)> {
    let agent = opts
        .agent
        .clone()
        .ok_or_else(|| (false, NO_AGENT.to_string()))?;
    let net = crate::netns::Net::create(nodes).map_err(|e| failure(&e))?;
    Cluster::start_in(nodes, agent, Some(net)).map_err(|e| {
        (
            false,
            format!("starting the cluster in network namespaces: {}", chain(&e)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_split_evenly_over_slices_each_with_its_warmup() {
        let s = scenario::find("anon-fault").expect("scenario");
        let p = Plan::new(s, 10, 4);
        assert_eq!(p.per_slice, [3, 3, 2, 2]);
        assert_eq!(p.slice_total(0), 3 + warmup_for(3));
        assert_eq!(p.slice_total(4), 0);
        assert_eq!(Plan::new(s, 1, 1).per_slice, [1]);
    }

    #[test]
    fn a_scenario_with_its_own_warmup_takes_that_many_per_slice() {
        let s = scenario::find("scan-seq-seg").expect("scenario");
        assert_eq!(s.warmup, Some(1));
        let p = Plan::new(s, 6, 4);
        assert_eq!(p.slice_total(0), 2 + 1);
        assert_eq!(p.slice_total(3), 1 + 1);
    }

    #[test]
    fn error_chains_name_every_cause() {
        let e = Error::io("opening x", std::io::Error::other("disk on fire"));
        assert_eq!(chain(&e), "opening x: disk on fire");
    }
}
