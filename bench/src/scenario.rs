//! The table of scenarios: what can be measured, and against which floor.
//!
//! A scenario is a row of [`SCENARIOS`]: a name (the `--scenario` value and
//! the JSON key), a label for the table, whether it is a floor or a dipc
//! measurement, the floors whose p50s add up to the best it could do, the
//! sample counts of each [`Profile`], and the function that measures it.
//! Adding a scenario is adding a row; the runner, the table and the JSON
//! follow.

use indicatif::ProgressBar;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::{Error, floors, shm};

/// What a scenario measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A part of dipc's cost measured alone, in this process.
    Floor,
    /// dipc itself: a referee, two nodes and agent processes.
    Dipc,
}

/// How long a run may take: picks each scenario's sample count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// `dipc demo`: modest counts, well under a minute.
    Demo,
    /// `dipc bench --quick`: under a minute.
    Quick,
    /// `dipc bench`: enough samples for a stable p99 everywhere.
    Full,
}

/// How a scenario measures: raw samples in ns, in the order taken
/// (warm-up included; `total` of them).
#[derive(Clone, Copy)]
pub enum Measure {
    /// Needs nothing but this process.
    Floor(fn(total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error>),
    /// Needs the embedded cluster (referee, two nodes) and its agents.
    Dipc(fn(cluster: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error>),
}

impl std::fmt::Debug for Measure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Measure::Floor(_) => "Measure::Floor",
            Measure::Dipc(_) => "Measure::Dipc",
        })
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// `--scenario` name and JSON key.
    pub name: &'static str,
    /// Left column of the printed table.
    pub label: &'static str,
    pub kind: Kind,
    /// What one sample is.
    pub what: &'static str,
    /// Scenarios whose p50s (and p99s) add up to this one's floor.
    pub floor: &'static [&'static str],
    /// Counted samples (after warm-up) for demo, quick and full runs.
    pub samples: [usize; 3],
    pub measure: Measure,
}

impl Scenario {
    /// Counted samples for `profile`.
    pub fn samples_for(&self, profile: Profile) -> usize {
        match profile {
            Profile::Demo => self.samples[0],
            Profile::Quick => self.samples[1],
            Profile::Full => self.samples[2],
        }
    }
}

/// Every scenario, floors first (they are measured first, and a dipc row
/// needs its floors' numbers).
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "anon-fault",
        label: "anonymous fault",
        kind: Kind::Floor,
        what: "first write to a page of fresh anonymous memory",
        floor: &[],
        samples: [20_000, 50_000, 200_000],
        measure: Measure::Floor(floors::anon_fault),
    },
    Scenario {
        name: "uffd-local",
        label: "uffd fault, local",
        kind: Kind::Floor,
        what: "first read of a memfd page served by a userfaultfd thread (poll, fill, UFFDIO_CONTINUE)",
        floor: &["anon-fault"],
        samples: [10_000, 20_000, 50_000],
        measure: Measure::Floor(floors::uffd_local),
    },
    Scenario {
        name: "tcp-rtt-4k",
        label: "tcp round trip 4k",
        kind: Kind::Floor,
        what: "call with 4 KiB each way over dipc's TCP transport on 127.0.0.1",
        floor: &[],
        samples: [10_000, 20_000, 50_000],
        measure: Measure::Floor(floors::tcp_rtt_4k),
    },
    Scenario {
        name: "remote-read",
        label: "remote read fault",
        kind: Kind::Dipc,
        what: "first read of a page whose only copy is on the other node",
        floor: &["uffd-local", "tcp-rtt-4k"],
        samples: [5_000, 10_000, 40_000],
        measure: Measure::Dipc(shm::remote_read),
    },
    Scenario {
        name: "write-inval-1",
        label: "write, invalidate 1",
        kind: Kind::Dipc,
        what: "write to a page both nodes hold shared (upgrade, one copy invalidated)",
        floor: &["uffd-local", "tcp-rtt-4k"],
        samples: [3_000, 5_000, 20_000],
        measure: Measure::Dipc(shm::write_inval_1),
    },
    Scenario {
        name: "pingpong",
        label: "ownership handoff",
        kind: Kind::Dipc,
        what: "write to a page the other node's agent wrote last (ownership moves each time)",
        floor: &["uffd-local", "tcp-rtt-4k"],
        samples: [2_000, 3_000, 10_000],
        measure: Measure::Dipc(shm::pingpong),
    },
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// Every scenario name, comma separated (for error messages and help).
pub fn names() -> String {
    SCENARIOS
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The scenarios to run for `names` (all when empty) and their floors
/// (a figure is never shown without its floor), in table order, each once.
pub fn select(names: &[String]) -> Result<Vec<&'static Scenario>, Error> {
    let mut wanted: Vec<&str> = Vec::new();
    let mut stack: Vec<&str> = Vec::new();
    for n in names {
        let s = find(n).ok_or_else(|| Error::UnknownScenario {
            name: n.clone(),
            known: self::names(),
        })?;
        stack.push(s.name);
    }
    while let Some(n) = stack.pop() {
        if !wanted.contains(&n) {
            wanted.push(n);
            stack.extend(find(n).map_or(&[][..], |s| s.floor));
        }
    }
    Ok(SCENARIOS
        .iter()
        .filter(|s| names.is_empty() || wanted.contains(&s.name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_come_first_and_name_existing_scenarios() {
        for (i, s) in SCENARIOS.iter().enumerate() {
            for f in s.floor {
                let j = SCENARIOS
                    .iter()
                    .position(|x| x.name == *f)
                    .unwrap_or_else(|| panic!("{}: unknown floor {f}", s.name));
                assert!(j < i, "{}: floor {f} must come before it", s.name);
                assert_eq!(SCENARIOS[j].kind, Kind::Floor, "{f} is not a floor");
            }
        }
        let mut names: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SCENARIOS.len(), "duplicate scenario names");
    }

    #[test]
    fn select_keeps_table_order_and_rejects_unknown_names() {
        let picked = select(&["tcp-rtt-4k".into(), "anon-fault".into()]).expect("known");
        let names: Vec<_> = picked.iter().map(|s| s.name).collect();
        assert_eq!(names, ["anon-fault", "tcp-rtt-4k"]);
        // Floors come along, transitively.
        let picked = select(&["pingpong".into()]).expect("known");
        let names: Vec<_> = picked.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            ["anon-fault", "uffd-local", "tcp-rtt-4k", "pingpong"]
        );
        assert_eq!(select(&[]).expect("all").len(), SCENARIOS.len());
        let err = select(&["nope".into()]).expect_err("unknown");
        assert!(err.to_string().contains("remote-read"), "{err}");
    }

    #[test]
    fn profiles_grow() {
        for s in SCENARIOS {
            assert!(s.samples_for(Profile::Demo) > 0, "{}", s.name);
            assert!(
                s.samples_for(Profile::Demo) <= s.samples_for(Profile::Quick)
                    && s.samples_for(Profile::Quick) <= s.samples_for(Profile::Full),
                "{}",
                s.name
            );
        }
    }
}
