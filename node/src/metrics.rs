//! Counters of the node daemon, for `dipc node --metrics` (Prometheus text).
//!
//! Process-wide atomics: the metrics endpoint runs in the daemon's own
//! process and reads them directly. Relaxed ordering is enough: each counter
//! only ever grows and is read on its own.

use std::sync::atomic::{AtomicU64, Ordering};

/// One named counter.
pub struct Counter {
    pub name: &'static str,
    pub help: &'static str,
    value: AtomicU64,
}

impl Counter {
    const fn new(name: &'static str, help: &'static str) -> Self {
        Counter {
            name,
            help,
            value: AtomicU64::new(0),
        }
    }

    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

pub static FAULTS: Counter = Counter::new(
    "dipc_node_faults_total",
    "Page faults of local processes handled by this node.",
);
pub static FAULTS_RESOLVED: Counter = Counter::new(
    "dipc_node_faults_resolved_total",
    "Blocked accesses of local processes let go (mapped read-only or writable).",
);
pub static INVALIDATIONS: Counter = Counter::new(
    "dipc_node_invalidations_total",
    "Units dropped from this node's copy (holes punched).",
);
pub static DOWNGRADES: Counter = Counter::new(
    "dipc_node_downgrades_total",
    "Units made read-only in every local mapping.",
);
pub static COH_SENT: Counter = Counter::new(
    "dipc_node_coherence_messages_sent_total",
    "Coherence messages sent to peers.",
);
pub static COH_RECEIVED: Counter = Counter::new(
    "dipc_node_coherence_messages_received_total",
    "Coherence messages received from peers.",
);
pub static BYTES_SENT: Counter = Counter::new(
    "dipc_node_page_bytes_sent_total",
    "Page data sent to peers (payload bytes).",
);
pub static BYTES_RECEIVED: Counter = Counter::new(
    "dipc_node_page_bytes_received_total",
    "Page data received from peers (payload bytes).",
);
pub static ERRORS: Counter = Counter::new(
    "dipc_node_errors_total",
    "Failed sends, unserved accesses and ignored peer messages.",
);

pub static DIRECT_OPENED: Counter = Counter::new(
    "dipc_node_direct_connections_opened_total",
    "Direct connections to remote homes handed to local processes.",
);

/// Every counter, in the order they are reported.
pub static ALL: [&Counter; 10] = [
    &FAULTS,
    &FAULTS_RESOLVED,
    &INVALIDATIONS,
    &DOWNGRADES,
    &COH_SENT,
    &COH_RECEIVED,
    &BYTES_SENT,
    &BYTES_RECEIVED,
    &ERRORS,
    &DIRECT_OPENED,
];

/// The counters as Prometheus text.
pub fn render() -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for c in ALL {
        let _ = writeln!(out, "# HELP {} {}", c.name, c.help);
        let _ = writeln!(out, "# TYPE {} counter", c.name);
        let _ = writeln!(out, "{} {}", c.name, c.get());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_every_counter_with_its_value() {
        ERRORS.add(3);
        let text = render();
        for c in ALL {
            assert!(text.contains(&format!("# TYPE {} counter", c.name)));
        }
        let line = text
            .lines()
            .find(|l| l.starts_with("dipc_node_errors_total "))
            .expect("errors line");
        let v: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(v >= 3);
    }
}
