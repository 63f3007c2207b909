//! The result of a run: per scenario a summary or a failure, each figure
//! next to its floor; printed as a table, saved as JSON.
//!
//! A dipc latency alone says more about the machine than about dipc, so
//! every scenario with floors is shown as its value and its ratio to the
//! sum of its floors' values measured in the same run (p50 against p50,
//! p99 against p99). A scenario that failed shows why, never a number,
//! and a floor that failed leaves its dependants without a ratio.

use std::fmt::Write as _;

use serde::Serialize;

use crate::machine::Machine;
use crate::scenario::{Kind, Profile, Rate, Scenario};
use crate::stats::{Summary, human};

/// The goal for remote-read: p50 at most this many times its floor.
pub const REMOTE_READ_GOAL: f64 = 1.3;
/// The goal for a message round trip: p50 at most this many times the raw
/// round trip of dipc's transport carrying the same bytes.
pub const MSG_RTT_GOAL: f64 = 1.2;

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub profile: Profile,
    /// Seconds since the epoch when the run started.
    pub started_unix: u64,
    pub machine: Machine,
    pub results: Vec<ScenarioResult>,
    /// The targets whose scenarios and floors were measured.
    pub targets: Vec<Target>,
}

/// One scenario's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: &'static str,
    pub label: &'static str,
    pub kind: Kind,
    pub what: &'static str,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// This scenario against its floors, when it has floors and all were
    /// measured.
    pub vs_floor: Option<VsFloor>,
    /// Bandwidth or throughput derived from the mean, for rows that have
    /// one.
    pub rate: Option<RateValue>,
    /// Ratios to the further references (a peer, the kernel), those that
    /// were measured.
    pub vs_also: Vec<VsRef>,
}

/// A rate derived from a summary.
#[derive(Debug, Clone, Serialize)]
pub struct RateValue {
    pub value: f64,
    /// `MB/s` (10^6 bytes) or `ops/s`.
    pub unit: &'static str,
}

/// This scenario against one reference: by rate when both have one
/// (this / reference: below 1 is slower), else by p50 (above 1 is slower).
#[derive(Debug, Clone, Serialize)]
pub struct VsRef {
    pub name: &'static str,
    pub basis: &'static str,
    pub ratio: f64,
}

/// Measured or failed.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Outcome {
    Measured {
        summary: Summary,
    },
    Failed {
        error: String,
        /// The last lines of the embedded daemons' log.
        log_tail: Vec<String>,
    },
    /// Not measured because a tool it needs is missing (never a number).
    Skipped {
        reason: String,
    },
}

/// One floor's share.
#[derive(Debug, Clone, Serialize)]
pub struct FloorPart {
    pub name: &'static str,
    pub p50_ns: u64,
    pub p99_ns: u64,
}

/// A scenario against the sum of its floors.
#[derive(Debug, Clone, Serialize)]
pub struct VsFloor {
    pub parts: Vec<FloorPart>,
    pub floor_p50_ns: u64,
    pub floor_p99_ns: u64,
    pub ratio_p50: f64,
    pub ratio_p99: f64,
}

/// A scenario's p50 against a goal: `ratio_p50` of `scenario` to
/// `against` at most `goal`.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub scenario: &'static str,
    pub against: String,
    pub ratio_p50: f64,
    pub goal: f64,
    pub met: bool,
    /// The dipc path came out faster than its own floor (ratio below 1),
    /// which it cannot be: the floor paid costs the path did not (an idle
    /// vCPU's wake-up, a preempted spinner) in this run, so the target is
    /// not judged (`met` is false) rather than reported met.
    pub floor_suspect: bool,
}

impl ScenarioResult {
    /// The summary, when measured.
    pub fn summary(&self) -> Option<&Summary> {
        match &self.outcome {
            Outcome::Measured { summary } => Some(summary),
            Outcome::Failed { .. } | Outcome::Skipped { .. } => None,
        }
    }
}

impl Outcome {
    /// The summary, when measured.
    pub fn summary(&self) -> Option<&Summary> {
        match self {
            Outcome::Measured { summary } => Some(summary),
            Outcome::Failed { .. } | Outcome::Skipped { .. } => None,
        }
    }
}

/// The rate of `summary` for a row of kind `rate`.
pub fn rate_of(rate: Rate, summary: &Summary) -> Option<RateValue> {
    if summary.mean_ns <= 0.0 {
        return None;
    }
    match rate {
        Rate::None => None,
        Rate::Bytes(b) => Some(RateValue {
            value: b as f64 / summary.mean_ns * 1e3,
            unit: "MB/s",
        }),
        Rate::Ops(k) => Some(RateValue {
            value: f64::from(k) / summary.mean_ns * 1e9,
            unit: "ops/s",
        }),
    }
}

fn ratio(v: u64, floor: u64) -> f64 {
    if floor == 0 {
        f64::INFINITY
    } else {
        v as f64 / floor as f64
    }
}

impl Report {
    /// A report of `outcomes` (in table order); ratios to floors are
    /// computed here from the floors found among them.
    pub fn new(
        profile: Profile,
        started_unix: u64,
        machine: Machine,
        outcomes: Vec<(&'static Scenario, Outcome)>,
    ) -> Report {
        let summaries: Vec<(&str, Option<Summary>, Rate)> = outcomes
            .iter()
            .map(|(s, o)| {
                let sum = match o {
                    Outcome::Measured { summary } => Some(summary.clone()),
                    Outcome::Failed { .. } | Outcome::Skipped { .. } => None,
                };
                (s.name, sum, s.rate)
            })
            .collect();
        let find = |name: &str| {
            summaries
                .iter()
                .find(|(n, _, _)| *n == name)
                .and_then(|(_, s, _)| s.clone())
        };
        let find_rate = |name: &str| {
            summaries
                .iter()
                .find(|(n, _, _)| *n == name)
                .and_then(|(_, s, r)| rate_of(*r, s.as_ref()?))
        };
        let results: Vec<ScenarioResult> = outcomes
            .into_iter()
            .map(|(s, outcome)| {
                let vs_floor = match &outcome {
                    Outcome::Measured { summary } if !s.floor.is_empty() => {
                        let parts: Option<Vec<FloorPart>> = s
                            .floor
                            .iter()
                            .map(|f| {
                                find(f).map(|fs| FloorPart {
                                    name: f,
                                    p50_ns: fs.p50_ns,
                                    p99_ns: fs.p99_ns,
                                })
                            })
                            .collect();
                        parts.map(|parts| {
                            let floor_p50_ns = parts.iter().map(|p| p.p50_ns).sum();
                            let floor_p99_ns = parts.iter().map(|p| p.p99_ns).sum();
                            VsFloor {
                                ratio_p50: ratio(summary.p50_ns, floor_p50_ns),
                                ratio_p99: ratio(summary.p99_ns, floor_p99_ns),
                                parts,
                                floor_p50_ns,
                                floor_p99_ns,
                            }
                        })
                    }
                    _ => None,
                };
                let rate = outcome.summary().and_then(|sum| rate_of(s.rate, sum));
                let vs_also = match outcome.summary() {
                    Some(sum) => s
                        .also
                        .iter()
                        .filter_map(|&a| match (&rate, find_rate(a)) {
                            (Some(mine), Some(theirs)) if theirs.value > 0.0 => Some(VsRef {
                                name: a,
                                basis: "rate",
                                ratio: mine.value / theirs.value,
                            }),
                            _ => find(a).map(|f| VsRef {
                                name: a,
                                basis: "p50",
                                ratio: ratio(sum.p50_ns, f.p50_ns),
                            }),
                        })
                        .collect(),
                    None => Vec::new(),
                };
                ScenarioResult {
                    name: s.name,
                    label: s.label,
                    kind: s.kind,
                    what: s.what,
                    outcome,
                    vs_floor,
                    rate,
                    vs_also,
                }
            })
            .collect();
        let targets = targets(&results);
        Report {
            tool: "dipc bench",
            version: env!("CARGO_PKG_VERSION"),
            profile,
            started_unix,
            machine,
            results,
            targets,
        }
    }

    /// Did every scenario measure?
    pub fn all_measured(&self) -> bool {
        self.results.iter().all(|r| r.summary().is_some())
    }

    /// The scenarios that failed (skipped ones are not failures).
    pub fn failed(&self) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed { .. }))
            .map(|r| r.name)
            .collect()
    }

    /// The result called `name`.
    pub fn result(&self, name: &str) -> Option<&ScenarioResult> {
        self.results.iter().find(|r| r.name == name)
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        // Plain data (strings, numbers, enums): serialising cannot fail;
        // non-finite ratios become null.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The table for the terminal: a header line, one row per scenario,
    /// the target line, then the log tails of failed scenarios.
    pub fn table(&self) -> String {
        let m = &self.machine;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "machine: {} cores, {}, kernel {}",
            m.cores, m.cpu_model, m.kernel
        );
        let _ = writeln!(
            t,
            "{:<24} {:>8} {:>9} {:>9} {:>9} {:>9} {:>13}   vs floor (p50, measured in this run)",
            "scenario", "samples", "p50", "p90", "p99", "max", "rate"
        );
        for r in &self.results {
            match &r.outcome {
                Outcome::Measured { summary: s } => {
                    let rate = r.rate.as_ref().map_or(String::new(), |v| {
                        format!("{} {}", human_rate(v.value), v.unit)
                    });
                    let _ = write!(
                        t,
                        "{:<24} {:>8} {:>9} {:>9} {:>9} {:>9} {:>13}",
                        r.label,
                        s.samples,
                        human(s.p50_ns as f64),
                        human(s.p90_ns as f64),
                        human(s.p99_ns as f64),
                        human(s.max_ns as f64),
                        rate,
                    );
                    if let Some(v) = &r.vs_floor {
                        let parts: Vec<String> = v
                            .parts
                            .iter()
                            .map(|p| format!("{} {}", p.name, human(p.p50_ns as f64)))
                            .collect();
                        let _ = write!(
                            t,
                            "   {}x floor ({})",
                            ratio_text(v.ratio_p50),
                            parts.join(" + ")
                        );
                    } else if crate::scenario::find(r.name).is_some_and(|s| !s.floor.is_empty()) {
                        let _ = write!(t, "   (floor not measured)");
                    }
                    for a in &r.vs_also {
                        let _ = match a.basis {
                            "rate" => write!(t, "; {}x {}'s rate", ratio_text(a.ratio), a.name),
                            _ => write!(t, "; {}x {}", ratio_text(a.ratio), a.name),
                        };
                    }
                    t.push('\n');
                }
                Outcome::Failed { error, .. } => {
                    let first = error.lines().next().unwrap_or("");
                    let _ = writeln!(t, "{:<24} FAILED: {first}", r.label);
                }
                Outcome::Skipped { reason } => {
                    let _ = writeln!(t, "{:<24} SKIPPED: {reason}", r.label);
                }
            }
        }
        for g in &self.targets {
            let _ = writeln!(
                t,
                "target: {} p50 = {:.2}x {} p50, goal <= {:.2}x: {}",
                g.scenario,
                g.ratio_p50,
                g.against,
                g.goal,
                if g.floor_suspect {
                    "not judged (below 1x: the floor was slowed in this run; run again)"
                } else if g.met {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
        for r in &self.results {
            if let Outcome::Failed { error, log_tail } = &r.outcome {
                let _ = writeln!(t, "\n{} ({}) failed: {error}", r.name, r.label);
                if !log_tail.is_empty() {
                    let _ = writeln!(t, "  last lines of the daemons' log:");
                    for l in log_tail {
                        let _ = writeln!(t, "    {l}");
                    }
                }
            }
        }
        t
    }
}

/// A ratio with two decimals, three significant digits below 0.1.
fn ratio_text(r: f64) -> String {
    if r < 0.1 {
        format!("{r:.3}")
    } else {
        format!("{r:.2}")
    }
}

/// A rate as a short string: `812`, `12.3k`, `1.20M`.
pub fn human_rate(v: f64) -> String {
    if v < 1e3 {
        format!("{v:.0}")
    } else if v < 1e6 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{:.2}M", v / 1e6)
    }
}

/// The goals: remote read p50 <= 1.3x its floor; a message round trip
/// p50 <= 1.2x the raw round trip of the same size and below Redis's.
fn targets(results: &[ScenarioResult]) -> Vec<Target> {
    let mut out = Vec::new();
    for r in results {
        let Some(v) = &r.vs_floor else { continue };
        let floor = v
            .parts
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(" + ");
        let goal = match r.name {
            "remote-read" => REMOTE_READ_GOAL,
            // The relayed row is a comparison, not the product's path.
            n if n.ends_with("-relay") => continue,
            n if n.starts_with("msg-rtt-") => MSG_RTT_GOAL,
            _ => continue,
        };
        out.push(Target {
            scenario: r.name,
            against: format!("({floor})"),
            ratio_p50: v.ratio_p50,
            goal,
            met: (1.0..=goal).contains(&v.ratio_p50),
            floor_suspect: v.ratio_p50 < 1.0,
        });
        if r.name.starts_with("msg-rtt-")
            && let Some(redis) = r.vs_also.iter().find(|a| a.name.starts_with("redis-"))
        {
            out.push(Target {
                scenario: r.name,
                against: redis.name.to_string(),
                ratio_p50: redis.ratio,
                goal: 1.0,
                met: redis.ratio < 1.0,
                floor_suspect: false,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::find;

    fn summary(p50: u64) -> Summary {
        Summary {
            samples: 100,
            warmup: 10,
            min_ns: p50 / 2,
            p50_ns: p50,
            p90_ns: p50 * 2,
            p99_ns: p50 * 3,
            max_ns: p50 * 4,
            mean_ns: p50 as f64,
        }
    }

    fn measured(name: &str, p50: u64) -> (&'static Scenario, Outcome) {
        (
            find(name).expect("scenario"),
            Outcome::Measured {
                summary: summary(p50),
            },
        )
    }

    fn machine() -> Machine {
        Machine {
            kernel: "6.18.0".into(),
            cpu_model: "Test CPU".into(),
            cores: 2,
            page_size: 4096,
            hostname: "h".into(),
        }
    }

    #[test]
    fn ratios_use_the_floors_of_the_same_run() {
        let r = Report::new(
            Profile::Demo,
            0,
            machine(),
            vec![
                measured("anon-fault", 1_000),
                measured("uffd-local", 10_000),
                measured("tcp-rtt-4k", 30_000),
                measured("remote-read", 44_000),
            ],
        );
        let rr = r
            .results
            .iter()
            .find(|x| x.name == "remote-read")
            .expect("rr");
        let v = rr.vs_floor.as_ref().expect("vs floor");
        assert_eq!(v.floor_p50_ns, 40_000);
        assert!((v.ratio_p50 - 1.1).abs() < 1e-9);
        assert_eq!(v.floor_p99_ns, 120_000);
        let uffd = r
            .results
            .iter()
            .find(|x| x.name == "uffd-local")
            .expect("uffd");
        assert!((uffd.vs_floor.as_ref().expect("floor").ratio_p50 - 10.0).abs() < 1e-9);
        let g = r.targets.first().expect("target");
        assert_eq!(g.scenario, "remote-read");
        assert!(g.met);
        let table = r.table();
        assert!(
            table.contains("1.10x floor (uffd-local 10.0 us + tcp-rtt-4k 30.0 us)"),
            "{table}"
        );
        assert!(
            table.contains(
                "target: remote-read p50 = 1.10x (uffd-local + tcp-rtt-4k) p50, goal <= 1.30x: met"
            ),
            "{table}"
        );
        assert!(r.all_measured());
    }

    #[test]
    fn a_path_faster_than_its_floor_is_not_judged_met() {
        let r = Report::new(
            Profile::Demo,
            0,
            machine(),
            vec![
                measured("uffd-local", 30_000),
                measured("tcp-rtt-4k", 120_000),
                measured("remote-read", 50_000),
            ],
        );
        let g = r.targets.first().expect("target");
        assert!(g.floor_suspect && !g.met, "{g:?}");
        let table = r.table();
        assert!(table.contains("goal <= 1.30x: not judged"), "{table}");
    }

    #[test]
    fn failures_show_no_number_and_drop_dependent_ratios() {
        let r = Report::new(
            Profile::Quick,
            0,
            machine(),
            vec![
                measured("uffd-local", 10_000),
                (
                    find("tcp-rtt-4k").expect("tcp"),
                    Outcome::Failed {
                        error: "connect refused".into(),
                        log_tail: vec!["node-1 WARN something".into()],
                    },
                ),
                measured("remote-read", 50_000),
            ],
        );
        assert!(!r.all_measured());
        let rr = r
            .results
            .iter()
            .find(|x| x.name == "remote-read")
            .expect("rr");
        assert!(rr.vs_floor.is_none());
        assert!(r.targets.is_empty());
        assert_eq!(r.failed(), ["tcp-rtt-4k"]);
        let table = r.table();
        let row = table
            .lines()
            .find(|l| l.starts_with("tcp round trip 4k"))
            .expect("tcp row");
        assert!(row.ends_with(" FAILED: connect refused"), "{table}");
        assert!(table.contains("(floor not measured)"), "{table}");
        assert!(table.contains("    node-1 WARN something"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).expect("json");
        assert_eq!(json["results"][1]["status"], "failed");
        assert_eq!(json["results"][2]["summary"]["p50_ns"], 50_000);
        assert_eq!(json["machine"]["cores"], 2);
    }

    #[test]
    fn rates_references_msg_targets_and_skipped_rows() {
        let mut tput = measured("msg-tput-8", 1_000);
        if let Outcome::Measured { summary } = &mut tput.1 {
            summary.mean_ns = 2_000.0;
        }
        let r = Report::new(
            Profile::Quick,
            0,
            machine(),
            vec![
                measured("tcp-rtt-8", 20_000),
                measured("kmsg-rtt-8", 5_000),
                (
                    find("redis-rtt-8").expect("redis"),
                    Outcome::Skipped {
                        reason: "redis-server is not installed".into(),
                    },
                ),
                measured("msg-rtt-8", 30_000),
                tput,
            ],
        );
        // A skipped floor is not a failure and shows no number.
        assert!(r.failed().is_empty());
        assert!(!r.all_measured());
        let msg = r.result("msg-rtt-8").expect("msg");
        assert_eq!(msg.vs_also.len(), 1, "redis was skipped");
        assert_eq!(
            (msg.vs_also[0].name, msg.vs_also[0].basis),
            ("kmsg-rtt-8", "p50")
        );
        assert!((msg.vs_also[0].ratio - 6.0).abs() < 1e-9);
        assert_eq!(r.targets.len(), 1);
        let t = &r.targets[0];
        assert_eq!(
            (t.scenario, t.goal, t.met),
            ("msg-rtt-8", MSG_RTT_GOAL, false)
        );
        assert!((t.ratio_p50 - 1.5).abs() < 1e-9);
        // 1 op per 2 us mean: 500k ops/s.
        let rate = r
            .result("msg-tput-8")
            .and_then(|x| x.rate.clone())
            .expect("rate");
        assert_eq!(rate.unit, "ops/s");
        assert!((rate.value - 500_000.0).abs() < 1e-6);
        let table = r.table();
        assert!(
            table.contains("SKIPPED: redis-server is not installed"),
            "{table}"
        );
        assert!(table.contains("500.0k ops/s"), "{table}");
        assert!(
            table.contains("1.50x floor (tcp-rtt-8 20.0 us); 6.00x kmsg-rtt-8"),
            "{table}"
        );
        assert!(
            table.contains("target: msg-rtt-8 p50 = 1.50x (tcp-rtt-8) p50, goal <= 1.20x: NOT met"),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).expect("json");
        assert_eq!(json["results"][2]["status"], "skipped");
        assert!(json["results"][2].get("summary").is_none());
    }
}
