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

use crate::agent::AgentCommand;
use crate::cluster::Cluster;
use crate::{Error, floors, shm};

/// What a scenario measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A part of dipc's cost, or a peer's, measured without dipc.
    Floor,
    /// dipc itself: a referee, nodes and agent processes.
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

/// What a scenario's samples add up to besides latency: a sample moves
/// `Bytes(n)` bytes (a bandwidth), or stands for `Ops(k)` operations
/// running at once (k agents, each sample one operation of one of them: a
/// throughput of k / mean).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rate {
    None,
    Bytes(u64),
    Ops(u32),
}

/// How a scenario measures: raw samples in ns, in the order taken
/// (warm-up included; `total` of them).
#[derive(Clone, Copy)]
pub enum Measure {
    /// Needs nothing but this process.
    Floor(fn(total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error>),
    /// Needs local agent processes (no daemon): kernel floors.
    Procs(fn(agent: &AgentCommand, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error>),
    /// Needs the embedded cluster (referee, nodes) and its agents.
    Dipc(fn(cluster: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error>),
}

impl std::fmt::Debug for Measure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Measure::Floor(_) => "Measure::Floor",
            Measure::Procs(_) => "Measure::Procs",
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
    /// Further references shown as ratios (a peer such as Redis, the
    /// kernel's own path); brought along like floors.
    pub also: &'static [&'static str],
    /// Nodes the embedded cluster needs for this scenario.
    pub nodes: usize,
    pub rate: Rate,
    /// Counted samples (after warm-up) for demo, quick and full runs.
    pub samples: [usize; 3],
    pub measure: Measure,
    /// Its cluster's nodes each run in a network namespace of their own
    /// (a second embedded cluster; skipped when that needs root it lacks).
    pub netns: bool,
    /// Warm-up samples per slice, when not [`crate::stats::warmup_for`]'s
    /// (a sample that takes a second needs fewer).
    pub warmup: Option<usize>,
}

impl Scenario {
    /// Counted samples for `profile`; 0: the row is not part of that
    /// profile's default selection (see [`Scenario::in_profile`]).
    pub fn samples_for(&self, profile: Profile) -> usize {
        match profile {
            Profile::Demo => self.samples[0],
            Profile::Quick => self.samples[1].min(QUICK_MAX_SAMPLES),
            Profile::Full => self.samples[2],
        }
    }

    /// Is the row part of `profile`'s run of every scenario? (`--quick`
    /// runs a subset of the message sizes.)
    pub fn in_profile(&self, profile: Profile) -> bool {
        self.samples_for(profile) > 0
    }

    /// Counted samples when the row was asked for by name: its profile's
    /// count, or the full run's for a row that profile leaves out.
    pub fn samples_when_named(&self, profile: Profile) -> usize {
        match self.samples_for(profile) {
            0 => self.samples[2],
            n => n,
        }
    }

    /// Everything this row is compared with.
    pub fn references(&self) -> impl Iterator<Item = &'static str> {
        self.floor.iter().chain(self.also.iter()).copied()
    }
}

/// A floor measured in this process.
const fn fl(
    name: &'static str,
    label: &'static str,
    what: &'static str,
    floor: &'static [&'static str],
    samples: [usize; 3],
    m: fn(usize, &ProgressBar) -> Result<Vec<u64>, Error>,
) -> Scenario {
    Scenario {
        name,
        label,
        kind: Kind::Floor,
        what,
        floor,
        also: &[],
        nodes: 0,
        rate: Rate::None,
        samples,
        measure: Measure::Floor(m),
        netns: false,
        warmup: None,
    }
}

/// A kernel floor measured with local agent processes.
const fn kp(
    name: &'static str,
    label: &'static str,
    what: &'static str,
    samples: [usize; 3],
    m: fn(&AgentCommand, usize, &ProgressBar) -> Result<Vec<u64>, Error>,
) -> Scenario {
    Scenario {
        name,
        label,
        kind: Kind::Floor,
        what,
        floor: &[],
        also: &[],
        nodes: 0,
        rate: Rate::None,
        samples,
        measure: Measure::Procs(m),
        netns: false,
        warmup: None,
    }
}

/// A dipc row on `nodes` nodes.
const fn dp(
    name: &'static str,
    label: &'static str,
    what: &'static str,
    floor: &'static [&'static str],
    nodes: usize,
    samples: [usize; 3],
    m: fn(&Cluster, usize, &ProgressBar) -> Result<Vec<u64>, Error>,
) -> Scenario {
    Scenario {
        name,
        label,
        kind: Kind::Dipc,
        what,
        floor,
        also: &[],
        nodes,
        rate: Rate::None,
        samples,
        measure: Measure::Dipc(m),
        netns: false,
        warmup: None,
    }
}

impl Scenario {
    const fn rate(mut self, rate: Rate) -> Scenario {
        self.rate = rate;
        self
    }

    const fn also(mut self, also: &'static [&'static str]) -> Scenario {
        self.also = also;
        self
    }

    /// `n` warm-up samples per slice (at least 1).
    const fn warmup(mut self, n: usize) -> Scenario {
        self.warmup = Some(if n == 0 { 1 } else { n });
        self
    }

    const fn in_netns(mut self) -> Scenario {
        self.netns = true;
        self
    }
}

const FAULT_FLOOR: &[&str] = &["uffd-local", "tcp-rtt-4k"];
const SCAN: [usize; 3] = [2_048, 4_096, 65_536];
const RAND: [usize; 3] = [1_024, 2_048, 16_384];
const MSG: [usize; 3] = [1_000, 1_000, 10_000];
/// Rows of the large sizes that `--quick` keeps (64 KiB round trips) and
/// those it leaves to the full run (16 KiB, the streams above 8 B): a
/// count of 0 leaves a row out of that profile.
/// Most counted samples of a row in `--quick` (which is for a p50 and a
/// rough p99: its 15 slowest samples), so that the whole run stays under
/// a minute on a loaded 2-core machine.
pub const QUICK_MAX_SAMPLES: usize = 1_500;

const MSG_QUICK: [usize; 3] = [300, 300, 5_000];
const MSG_FULL: [usize; 3] = [0, 0, 10_000];
const TCP_QUICK: [usize; 3] = [1_000, 1_000, 20_000];
const TCP_FULL: [usize; 3] = [0, 0, 20_000];
const KFLOOR_QUICK: [usize; 3] = [1_000, 1_000, 50_000];
const KFLOOR_FULL: [usize; 3] = [0, 0, 50_000];
const SEM: [usize; 3] = [1_000, 1_000, 10_000];
const SEM_FULL: [usize; 3] = [0, 0, 10_000];
const KFLOOR: [usize; 3] = [5_000, 5_000, 50_000];
const QUANTUM: [usize; 3] = [4_000, 6_000, 100_000];

/// Every scenario, floors first (they are measured first, and a dipc row
/// needs its floors' numbers).
pub const SCENARIOS: &[Scenario] = &[
    fl(
        "anon-fault",
        "anonymous fault",
        "first write to a page of fresh anonymous memory",
        &[],
        [20_000, 50_000, 200_000],
        floors::anon_fault,
    ),
    fl(
        "uffd-local",
        "uffd fault, local",
        "first read of a memfd page served by a userfaultfd thread (poll, fill, UFFDIO_CONTINUE)",
        &["anon-fault"],
        [10_000, 20_000, 50_000],
        floors::uffd_local,
    ),
    fl(
        "tcp-rtt-4k",
        "tcp round trip 4k",
        "call with 4 KiB each way over dipc's TCP transport on 127.0.0.1",
        &[],
        [10_000, 20_000, 50_000],
        floors::tcp_rtt_4k,
    ),
    fl(
        "tcp-rtt-8",
        "tcp round trip 8 B",
        "call with 8 bytes each way over dipc's TCP transport",
        &[],
        [2_000, 5_000, 50_000],
        floors::tcp_rtt_8,
    ),
    fl(
        "tcp-rtt-1k",
        "tcp round trip 1k",
        "call with 1 KiB each way over dipc's TCP transport",
        &[],
        [2_000, 5_000, 50_000],
        floors::tcp_rtt_1k,
    ),
    fl(
        "tcp-rtt-8k",
        "tcp round trip 8k",
        "call with 8 KiB each way over dipc's TCP transport",
        &[],
        [2_000, 5_000, 50_000],
        floors::tcp_rtt_8k,
    ),
    fl(
        "tcp-rtt-16k",
        "tcp round trip 16k",
        "call with 16 KiB each way over dipc's TCP transport",
        &[],
        TCP_FULL,
        floors::tcp_rtt_16k,
    ),
    fl(
        "tcp-rtt-64k",
        "tcp round trip 64k",
        "call with 64 KiB each way over dipc's TCP transport",
        &[],
        TCP_QUICK,
        floors::tcp_rtt_64k,
    ),
    fl(
        "tcp-bw-1m",
        "tcp 1 MiB fetch",
        "call answered with 1 MiB over dipc's TCP transport (bandwidth)",
        &[],
        [100, 300, 2_000],
        floors::tcp_bw_1m,
    )
    .rate(Rate::Bytes(1 << 20)),
    kp(
        "kmsg-rtt-8",
        "kernel msg rtt 8 B",
        "kernel msgsnd+msgrcv round trip between two local processes, 8 bytes",
        KFLOOR,
        crate::ipc::kmsg_rtt_8,
    ),
    kp(
        "kmsg-rtt-1k",
        "kernel msg rtt 1k",
        "as kmsg-rtt-8 with 1 KiB messages",
        KFLOOR,
        crate::ipc::kmsg_rtt_1k,
    ),
    kp(
        "kmsg-rtt-8k",
        "kernel msg rtt 8k",
        "as kmsg-rtt-8 with 8 KiB messages (the kernel's default msgmax)",
        KFLOOR,
        crate::ipc::kmsg_rtt_8k,
    ),
    kp(
        "kmsg-rtt-16k",
        "kernel msg rtt 16k",
        "as kmsg-rtt-8 with 16 KiB messages (kernel.msgmax and msgmnb raised to 64 KiB for the run; needs root)",
        KFLOOR_FULL,
        crate::ipc::kmsg_rtt_16k,
    ),
    kp(
        "kmsg-rtt-64k",
        "kernel msg rtt 64k",
        "as kmsg-rtt-16k with 64 KiB messages",
        KFLOOR_QUICK,
        crate::ipc::kmsg_rtt_64k,
    ),
    kp(
        "kmsg-tput-8",
        "kernel msg stream 8 B",
        "one kernel msgsnd of 8 bytes while a local process drains the queue",
        KFLOOR,
        crate::ipc::kmsg_tput_8,
    )
    .rate(Rate::Ops(1)),
    kp(
        "kmsg-tput-1k",
        "kernel msg stream 1k",
        "as kmsg-tput-8 with 1 KiB messages",
        KFLOOR_FULL,
        crate::ipc::kmsg_tput_1k,
    )
    .rate(Rate::Bytes(1024)),
    kp(
        "kmsg-tput-8k",
        "kernel msg stream 8k",
        "as kmsg-tput-8 with 8 KiB messages",
        KFLOOR_FULL,
        crate::ipc::kmsg_tput_8k,
    )
    .rate(Rate::Bytes(8192)),
    kp(
        "kmsg-tput-16k",
        "kernel msg stream 16k",
        "as kmsg-tput-8 with 16 KiB messages (kernel.msgmax raised; needs root)",
        KFLOOR_FULL,
        crate::ipc::kmsg_tput_16k,
    )
    .rate(Rate::Bytes(16384)),
    kp(
        "kmsg-tput-64k",
        "kernel msg stream 64k",
        "as kmsg-tput-8 with 64 KiB messages (kernel.msgmax raised; needs root)",
        KFLOOR_FULL,
        crate::ipc::kmsg_tput_64k,
    )
    .rate(Rate::Bytes(65536)),
    kp(
        "ksemop",
        "kernel semop",
        "one uncontended kernel semop (+1 or -1) in one process",
        KFLOOR,
        crate::ipc::ksemop,
    ),
    kp(
        "klock-3",
        "kernel sem lock, 3",
        "lock+unlock of a kernel semaphore by 3 local processes at once",
        KFLOOR,
        crate::ipc::klock_3,
    ),
    kp(
        "kbarrier-2",
        "kernel barrier, 2",
        "one round of a 2-process barrier on kernel semaphores",
        KFLOOR,
        crate::ipc::kbarrier_2,
    ),
    fl(
        "redis-rtt-8",
        "redis rtt 8 B",
        "RPUSH+BLPOP round trip through a local redis-server (echo client on another connection), 8 bytes",
        &[],
        MSG,
        crate::redis::rtt_8,
    ),
    fl(
        "redis-rtt-1k",
        "redis rtt 1k",
        "as redis-rtt-8 with 1 KiB values",
        &[],
        MSG,
        crate::redis::rtt_1k,
    ),
    fl(
        "redis-rtt-8k",
        "redis rtt 8k",
        "as redis-rtt-8 with 8 KiB values",
        &[],
        MSG,
        crate::redis::rtt_8k,
    ),
    fl(
        "redis-rtt-16k",
        "redis rtt 16k",
        "as redis-rtt-8 with 16 KiB values",
        &[],
        MSG_FULL,
        crate::redis::rtt_16k,
    ),
    fl(
        "redis-rtt-64k",
        "redis rtt 64k",
        "as redis-rtt-8 with 64 KiB values",
        &[],
        MSG_QUICK,
        crate::redis::rtt_64k,
    ),
    dp(
        "remote-read",
        "remote read fault",
        "first read of a page whose only copy is on the other node",
        FAULT_FLOOR,
        2,
        [5_000, 10_000, 40_000],
        shm::remote_read,
    ),
    dp(
        "remote-read-m3",
        "remote read, 3rd node",
        "read fault on node 2 of a page held Modified by node 3 (home node 1)",
        FAULT_FLOOR,
        3,
        [2_000, 2_000, 20_000],
        crate::shm2::remote_read_m3,
    ),
    dp(
        "write-inval-1",
        "write, invalidate 1",
        "write to a page both nodes hold shared (upgrade, one copy invalidated)",
        FAULT_FLOOR,
        2,
        [3_000, 5_000, 20_000],
        shm::write_inval_1,
    ),
    dp(
        "write-inval-2",
        "write, invalidate 2",
        "write to a page 2 other nodes hold shared",
        FAULT_FLOOR,
        3,
        [1_000, 1_000, 10_000],
        crate::shm2::write_inval_2,
    ),
    dp(
        "write-inval-4",
        "write, invalidate 4",
        "write to a page 4 other nodes hold shared",
        FAULT_FLOOR,
        5,
        [1_000, 2_000, 10_000],
        crate::shm2::write_inval_4,
    ),
    dp(
        "pingpong",
        "ownership handoff",
        "write to a page the other node's agent wrote last (ownership moves each time)",
        FAULT_FLOOR,
        2,
        [2_000, 3_000, 10_000],
        shm::pingpong,
    ),
    dp(
        "scan-seq",
        "scan 256M seq, 4k, pf 8",
        "sequential read of each 4 KiB page of a remote 256 MiB segment (4 KiB unit, prefetch window up to 8 units, the default)",
        FAULT_FLOOR,
        2,
        SCAN,
        crate::shm2::scan_seq,
    )
    .rate(Rate::Bytes(4096))
    .also(&["tcp-bw-1m"]),
    dp(
        "scan-seq-nopf",
        "scan 256M seq, 4k, no pf",
        "as scan-seq without prefetch (DIPC_PREFETCH=0): one fault per page",
        FAULT_FLOOR,
        2,
        SCAN,
        crate::shm2::scan_seq_nopf,
    )
    .rate(Rate::Bytes(4096))
    .also(&["tcp-bw-1m"]),
    dp(
        "scan-seq-pf64",
        "scan 256M seq, 4k, pf 64",
        "as scan-seq with a prefetch window up to 64 units (DIPC_PREFETCH=64)",
        FAULT_FLOOR,
        2,
        SCAN,
        crate::shm2::scan_seq_pf64,
    )
    .rate(Rate::Bytes(4096))
    .also(&["tcp-bw-1m"]),
    dp(
        "scan-seq-64k",
        "scan 256M seq, 64k, pf 8",
        "as scan-seq, segment created with DIPC_PAGE_SIZE=65536",
        FAULT_FLOOR,
        2,
        SCAN,
        crate::shm2::scan_seq_64k,
    )
    .rate(Rate::Bytes(4096))
    .also(&["tcp-bw-1m"]),
    dp(
        "scan-seq-seg",
        "scan 256M seq, segment",
        "sequential read of a whole remote 256 MiB segment in segment mode (DIPC_SHM_MODE=segment: one unit, one message in 4 MiB parts), per scan",
        &[],
        2,
        [3, 6, 20],
        crate::shm2::scan_seq_segment,
    )
    .rate(Rate::Bytes(256 << 20))
    .also(&["tcp-bw-1m"])
    // A scan moves 256 MiB (about a second here): one scan warms a
    // slice's new segment up.
    .warmup(1),
    dp(
        "scan-rand",
        "rand 4k reads, 4k, pf 8",
        "read of a random 4 KiB page of a remote 256 MiB segment (4 KiB unit, prefetch window up to 8)",
        FAULT_FLOOR,
        2,
        RAND,
        crate::shm2::scan_rand,
    )
    .rate(Rate::Bytes(4096))
    .also(&["tcp-bw-1m"]),
    dp(
        "scan-rand-nopf",
        "rand 4k reads, 4k, no pf",
        "as scan-rand without prefetch (DIPC_PREFETCH=0)",
        FAULT_FLOOR,
        2,
        RAND,
        crate::shm2::scan_rand_nopf,
    )
    .rate(Rate::Bytes(4096))
    .also(&["tcp-bw-1m"]),
    dp(
        "scan-rand-64k",
        "rand 4k reads, 64k, pf 8",
        "as scan-rand, segment created with DIPC_PAGE_SIZE=65536",
        FAULT_FLOOR,
        2,
        RAND,
        crate::shm2::scan_rand_64k,
    )
    .rate(Rate::Bytes(4096))
    .also(&["tcp-bw-1m"]),
    dp("quantum-0", "2 writers, 20us work, q 0",
        "an atomic increment of one counter followed by 20 us of other work (a sleep), by agents on 2 nodes at once (home on a 3rd); segment created with DIPC_QUANTUM_US=0",
        FAULT_FLOOR, 3, QUANTUM, crate::shm2::quantum_0).rate(Rate::Ops(2)),
    dp("quantum-100us", "2 writers, 20us work, q 100us", "as quantum-0 with DIPC_QUANTUM_US=100",
        FAULT_FLOOR, 3, QUANTUM, crate::shm2::quantum_100us).rate(Rate::Ops(2)),
    dp("quantum-1ms", "2 writers, 20us work, q 1ms", "as quantum-0 with DIPC_QUANTUM_US=1000",
        FAULT_FLOOR, 3, QUANTUM, crate::shm2::quantum_1ms).rate(Rate::Ops(2)),
    dp("quantum-10ms", "2 writers, 20us work, q 10ms", "as quantum-0 with DIPC_QUANTUM_US=10000",
        FAULT_FLOOR, 3, QUANTUM, crate::shm2::quantum_10ms).rate(Rate::Ops(2)),
    dp(
        "msg-rtt-8",
        "msg rtt 8 B",
        "msgsnd+msgrcv round trip from node 2 to a queue homed on node 1, echoed there, 8 bytes",
        &["tcp-rtt-8"],
        2,
        MSG,
        crate::ipc::msg_rtt_8,
    )
    .also(&["kmsg-rtt-8", "redis-rtt-8"]),
    dp(
        "msg-rtt-8-relay",
        "msg rtt 8 B, via nodes",
        "as msg-rtt-8 with DIPC_DIRECT=0: each call goes through the caller's node and the peer link, not a direct connection to the home",
        &["tcp-rtt-8"],
        2,
        MSG_FULL,
        crate::ipc::msg_rtt_8_relay,
    )
    .also(&["redis-rtt-8"]),
    dp(
        "msg-rtt-1k",
        "msg rtt 1k",
        "as msg-rtt-8 with 1 KiB messages",
        &["tcp-rtt-1k"],
        2,
        MSG,
        crate::ipc::msg_rtt_1k,
    )
    .also(&["kmsg-rtt-1k", "redis-rtt-1k"]),
    dp(
        "msg-rtt-8k",
        "msg rtt 8k",
        "as msg-rtt-8 with 8 KiB messages (the kernel's default msgmax)",
        &["tcp-rtt-8k"],
        2,
        MSG,
        crate::ipc::msg_rtt_8k,
    )
    .also(&["kmsg-rtt-8k", "redis-rtt-8k"]),
    dp(
        "msg-rtt-16k",
        "msg rtt 16k",
        "as msg-rtt-8 with 16 KiB messages (the nodes run with --msgmax 65536)",
        &["tcp-rtt-16k"],
        2,
        MSG_FULL,
        crate::ipc::msg_rtt_16k,
    )
    .also(&["kmsg-rtt-16k", "redis-rtt-16k"]),
    dp(
        "msg-rtt-64k",
        "msg rtt 64k",
        "as msg-rtt-8 with 64 KiB messages (the nodes run with --msgmax 65536)",
        &["tcp-rtt-64k"],
        2,
        MSG_QUICK,
        crate::ipc::msg_rtt_64k,
    )
    .also(&["kmsg-rtt-64k", "redis-rtt-64k"]),
    dp(
        "msg-tput-8",
        "msg stream 8 B",
        "one msgsnd of 8 bytes from node 2 to a queue on node 1 while node 1 drains it",
        &["kmsg-tput-8"],
        2,
        MSG,
        crate::ipc::msg_tput_8,
    )
    .rate(Rate::Ops(1)),
    dp(
        "msg-tput-1k",
        "msg stream 1k",
        "as msg-tput-8 with 1 KiB messages",
        &["kmsg-tput-1k"],
        2,
        MSG_FULL,
        crate::ipc::msg_tput_1k,
    )
    .rate(Rate::Bytes(1024)),
    dp(
        "msg-tput-8k",
        "msg stream 8k",
        "as msg-tput-8 with 8 KiB messages",
        &["kmsg-tput-8k"],
        2,
        MSG_FULL,
        crate::ipc::msg_tput_8k,
    )
    .rate(Rate::Bytes(8192)),
    dp(
        "msg-tput-16k",
        "msg stream 16k",
        "as msg-tput-8 with 16 KiB messages",
        &["kmsg-tput-16k"],
        2,
        MSG_FULL,
        crate::ipc::msg_tput_16k,
    )
    .rate(Rate::Bytes(16384)),
    dp(
        "msg-tput-64k",
        "msg stream 64k",
        "as msg-tput-8 with 64 KiB messages",
        &["kmsg-tput-64k"],
        2,
        MSG_FULL,
        crate::ipc::msg_tput_64k,
    )
    .rate(Rate::Bytes(65536)),
    dp(
        "semop",
        "semop, remote",
        "one uncontended semop (+1 or -1) from node 2 on a set homed on node 1",
        &["tcp-rtt-8"],
        2,
        SEM,
        crate::ipc::semop,
    )
    .also(&["ksemop"]),
    dp(
        "semop-relay",
        "semop, remote, via nodes",
        "as semop with DIPC_DIRECT=0 (through the caller's node and the peer link)",
        &["tcp-rtt-8"],
        2,
        SEM_FULL,
        crate::ipc::semop_relay,
    )
    .also(&["ksemop"]),
    dp(
        "sem-lock-3",
        "sem lock, 3 nodes",
        "lock+unlock of a semaphore homed on node 1 by agents on nodes 1, 2, 3 at once",
        &["klock-3"],
        3,
        SEM,
        crate::ipc::sem_lock_3,
    ),
    dp(
        "barrier-2",
        "barrier, 2 nodes",
        "one round of a semaphore barrier between agents on 2 nodes",
        &["kbarrier-2"],
        2,
        SEM,
        crate::ipc::barrier_2,
    )
    .also(&["tcp-rtt-8"]),
    dp(
        "barrier-3",
        "barrier, 3 nodes",
        "as barrier-2 with 3 nodes",
        &["kbarrier-2"],
        3,
        SEM,
        crate::ipc::barrier_3,
    )
    .also(&["tcp-rtt-8"]),
    dp(
        "barrier-5",
        "barrier, 5 nodes",
        "as barrier-2 with 5 nodes",
        &["kbarrier-2"],
        5,
        SEM,
        crate::ipc::barrier_5,
    )
    .also(&["tcp-rtt-8"]),
    dp(
        "hot-read-1",
        "hot page, 1 reader",
        "read fault of one hot page (rewritten by node 1 each round) by 1 node",
        FAULT_FLOOR,
        2,
        [500, 500, 5_000],
        crate::shm2::hot_read_1,
    ),
    dp(
        "hot-read-2",
        "hot page, 2 readers",
        "as hot-read-1, 2 nodes reading at once",
        FAULT_FLOOR,
        3,
        [500, 500, 5_000],
        crate::shm2::hot_read_2,
    ),
    dp(
        "hot-read-4",
        "hot page, 4 readers",
        "as hot-read-1, 4 nodes reading at once",
        FAULT_FLOOR,
        5,
        [500, 500, 5_000],
        crate::shm2::hot_read_4,
    ),
    dp(
        "hot-read-ns-1",
        "hot page, 1 reader, netns",
        "as hot-read-1, every node in a network namespace of its own (veth pairs on a bridge; needs root)",
        FAULT_FLOOR,
        2,
        [500, 500, 5_000],
        crate::shm2::hot_read_1,
    )
    .in_netns(),
    dp(
        "hot-read-ns-2",
        "hot page, 2 readers, netns",
        "as hot-read-2 in network namespaces",
        FAULT_FLOOR,
        3,
        [500, 500, 5_000],
        crate::shm2::hot_read_2,
    )
    .in_netns(),
    dp(
        "hot-read-ns-4",
        "hot page, 4 readers, netns",
        "as hot-read-4 in network namespaces",
        FAULT_FLOOR,
        5,
        [500, 500, 5_000],
        crate::shm2::hot_read_4,
    )
    .in_netns(),
    dp(
        "counter-1",
        "atomic counter, 1 node",
        "an atomic increment of a counter in a segment homed on node 1, by an agent on node 2",
        FAULT_FLOOR,
        2,
        [2_000, 5_000, 50_000],
        crate::shm2::counter_1,
    )
    .rate(Rate::Ops(1)),
    dp(
        "counter-2",
        "atomic counter, 2 nodes",
        "as counter-1 with agents on 2 nodes at once",
        FAULT_FLOOR,
        3,
        [1_000, 2_000, 10_000],
        crate::shm2::counter_2,
    )
    .rate(Rate::Ops(2)),
    dp(
        "counter-4",
        "atomic counter, 4 nodes",
        "as counter-1 with agents on 4 nodes at once",
        FAULT_FLOOR,
        5,
        [1_000, 2_000, 10_000],
        crate::shm2::counter_4,
    )
    .rate(Rate::Ops(4)),
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
            stack.extend(find(n).into_iter().flat_map(|s| s.references()));
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
            for f in s.references() {
                let j = SCENARIOS
                    .iter()
                    .position(|x| x.name == f)
                    .unwrap_or_else(|| panic!("{}: unknown reference {f}", s.name));
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
    fn profiles_stay_within_the_full_run_and_quick_within_its_cap() {
        for s in SCENARIOS {
            assert!(s.in_profile(Profile::Full), "{}", s.name);
            assert!(
                s.samples_for(Profile::Demo) <= s.samples_for(Profile::Full)
                    && s.samples_for(Profile::Quick) <= s.samples_for(Profile::Full)
                    && s.samples_for(Profile::Quick) <= QUICK_MAX_SAMPLES,
                "{}",
                s.name
            );
            // A row of a profile brings its references along.
            for p in [Profile::Demo, Profile::Quick] {
                if s.in_profile(p) {
                    for r in s.references() {
                        assert!(find(r).is_some_and(|f| f.in_profile(p)), "{}: {r}", s.name);
                    }
                }
            }
        }
        let quick: Vec<_> = SCENARIOS
            .iter()
            .filter(|s| s.name.starts_with("msg-rtt-") && s.in_profile(Profile::Quick))
            .map(|s| s.name)
            .collect();
        assert_eq!(
            quick,
            ["msg-rtt-8", "msg-rtt-1k", "msg-rtt-8k", "msg-rtt-64k"]
        );
    }
}
