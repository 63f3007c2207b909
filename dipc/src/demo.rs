//! `dipc demo`: dipc's page-fault latency on this machine, in well under a
//! minute, with nothing to set up.
//!
//! It starts a referee and two nodes inside this process on 127.0.0.1
//! (the real daemons), one agent process per node, and measures with
//! modest sample counts: the floors (an anonymous fault, a
//! userfaultfd-served fault, a 4 KiB TCP round trip) and then dipc's remote
//! read fault, write invalidating a copy, and ownership ping-pong, each
//! next to its floor measured in the same run; then a message round trip
//! and a semaphore operation against the raw round trip, the kernel's own
//! SysV path and Redis (skipped when `redis-server` is not installed).

use dipc_bench::Profile;

/// The demo's rows (their floors come along): page faults, a message round
/// trip and a semaphore operation. `dipc bench` runs every scenario.
const DEMO: &[&str] = &[
    "remote-read",
    "write-inval-1",
    "pingpong",
    "msg-rtt-8",
    "semop",
];

/// `dipc demo`.
pub fn run() -> anyhow::Result<()> {
    println!(
        "dipc demo: an embedded referee and two nodes on 127.0.0.1; one process on each node\n\
         faults on a shared segment (pages move by userfaultfd over dipc's TCP transport).\n\
         Each dipc figure is shown next to its floor, measured in this same run.\n"
    );
    let mut opts = crate::bench::options(Profile::Demo)?;
    opts.scenarios = DEMO.iter().map(|s| s.to_string()).collect();
    let result = crate::bench::measure(&opts, None, None);
    println!(
        "\nfloor: what a dipc fault is made of, measured alone: a userfaultfd fault served\n\
         in one process (uffd-local) plus a 4 KiB round trip over dipc's TCP transport\n\
         (tcp-rtt-4k). `dipc bench` measures longer; `dipc bench --list` names every scenario."
    );
    result
}
