//! The benchmark machinery run for real with tiny sample counts. Checks
//! the structure of what comes out (every scenario measured or failed
//! with a reason, summaries consistent, ratios present where their floors
//! are, table and JSON complete), never a timing.

use std::path::PathBuf;

use dipc_bench::agent::AgentCommand;
use dipc_bench::report::Outcome;
use dipc_bench::{Kind, Options, Profile, Report};

const SAMPLES: usize = 20;
/// Each scenario measured in two slices of 10, each with its own warm-up.
const SLICES: usize = 2;

fn options(scenarios: &[&str]) -> Options {
    let mut o = Options::new(Profile::Quick);
    o.scenarios = scenarios.iter().map(|s| s.to_string()).collect();
    o.samples = Some(SAMPLES);
    o.slices = SLICES;
    o
}

/// Every result measured, with `SAMPLES` counted samples and ordered
/// percentiles.
fn assert_all_measured(r: &Report) {
    for res in &r.results {
        let s = match &res.outcome {
            Outcome::Measured { summary } => summary,
            Outcome::Failed { error, log_tail } => {
                panic!("{} failed: {error}\n{}", res.name, log_tail.join("\n"))
            }
            Outcome::Skipped { reason } => panic!("{} skipped: {reason}", res.name),
        };
        if res.name.starts_with("counter-") {
            // As many samples as increments fit in its window.
            assert!(s.samples > 0, "{}", res.name);
        } else {
            assert_eq!(s.samples, SAMPLES as u64, "{}", res.name);
        }
        let warmup = SLICES * dipc_bench::stats::warmup_for(SAMPLES / SLICES);
        assert_eq!(s.warmup, warmup as u64, "{}", res.name);
        assert!(
            s.min_ns <= s.p50_ns
                && s.p50_ns <= s.p90_ns
                && s.p90_ns <= s.p99_ns
                && s.p99_ns <= s.max_ns,
            "{}: {s:?}",
            res.name
        );
        assert!(s.min_ns > 0, "{}: {s:?}", res.name);
    }
}

#[test]
fn floors_measure_and_report() {
    let r = dipc_bench::run(&options(&["anon-fault", "uffd-local", "tcp-rtt-4k"])).expect("run");
    let names: Vec<_> = r.results.iter().map(|x| x.name).collect();
    assert_eq!(names, ["anon-fault", "uffd-local", "tcp-rtt-4k"]);
    assert!(r.results.iter().all(|x| x.kind == Kind::Floor));
    assert_all_measured(&r);

    // uffd-local is shown against anon-fault; the others have no floor.
    let uffd = &r.results[1];
    let v = uffd.vs_floor.as_ref().expect("uffd-local has a floor");
    assert_eq!(v.parts.len(), 1);
    assert_eq!(v.parts[0].name, "anon-fault");
    assert_eq!(v.floor_p50_ns, r.results[0].summary().expect("anon").p50_ns);
    assert!(r.results[0].vs_floor.is_none() && r.results[2].vs_floor.is_none());
    assert!(r.targets.is_empty(), "no remote-read, no target");

    let table = r.table();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("machine: "), "{table}");
    assert!(
        lines[1].starts_with("scenario") && lines[1].contains("p99"),
        "{table}"
    );
    for (line, label) in
        lines[2..5]
            .iter()
            .zip(["anonymous fault", "uffd fault, local", "tcp round trip 4k"])
    {
        assert!(line.starts_with(label), "{table}");
        assert!(line.contains(&SAMPLES.to_string()), "{table}");
    }
    assert!(lines[3].contains("x floor (anon-fault "), "{table}");

    let json: serde_json::Value = serde_json::from_str(&r.to_json()).expect("valid JSON");
    assert!(
        json["machine"]["kernel"]
            .as_str()
            .is_some_and(|k| !k.is_empty())
    );
    assert!(json["machine"]["cores"].as_u64().is_some_and(|c| c >= 1));
    assert!(json["machine"]["cpu_model"].is_string());
    assert_eq!(json["results"].as_array().map(Vec::len), Some(3));
    for res in json["results"].as_array().into_iter().flatten() {
        assert_eq!(res["status"], "measured");
        for k in ["p50_ns", "p90_ns", "p99_ns", "max_ns", "samples"] {
            assert!(res["summary"][k].is_u64(), "{k} in {res}");
        }
    }
}

#[test]
fn a_dipc_scenario_without_agents_fails_with_a_reason_and_no_number() {
    // Asking for remote-read brings its floors along.
    let r = dipc_bench::run(&options(&["remote-read"])).expect("run");
    let names: Vec<_> = r.results.iter().map(|x| x.name).collect();
    assert_eq!(
        names,
        ["anon-fault", "uffd-local", "tcp-rtt-4k", "remote-read"]
    );
    let rr = &r.results[3];
    match &rr.outcome {
        Outcome::Failed { error, .. } => {
            assert!(error.starts_with("remote-read: "), "{error}");
            assert!(error.contains("agent"), "{error}");
        }
        Outcome::Measured { .. } | Outcome::Skipped { .. } => panic!("measured without agents"),
    }
    assert!(rr.vs_floor.is_none() && r.targets.is_empty());
    let table = r.table();
    let row = table
        .lines()
        .find(|l| l.starts_with("remote read fault"))
        .expect("a row for remote-read");
    assert!(row.contains("FAILED"), "{table}");
    assert!(
        !row.contains(" us") && !row.contains(" ms"),
        "a number in a failed row: {row}"
    );
    assert!(!r.all_measured());
}

#[test]
fn unknown_scenarios_are_refused_up_front() {
    let err = dipc_bench::run(&options(&["anon-fault", "no-such"])).expect_err("unknown");
    assert!(err.to_string().contains("no-such"), "{err}");
}

/// The dipc scenarios end to end: embedded referee and two nodes, agent
/// processes (this package's `dipc-bench-agent`), tiny counts.
#[test]
fn dipc_scenarios_run_end_to_end() {
    let mut o = options(&["remote-read", "write-inval-1", "pingpong"]);
    o.agent = Some(AgentCommand {
        program: PathBuf::from(env!("CARGO_BIN_EXE_dipc-bench-agent")),
        args: Vec::new(),
    });
    let logs = dipc_bench::logs::LogBuffer::new(2000);
    logs.install("info");
    o.logs = Some(logs);
    let r = dipc_bench::run(&o).expect("run");
    assert_all_measured(&r);
    for res in r.results.iter().filter(|x| x.kind == Kind::Dipc) {
        let v = res.vs_floor.as_ref().expect("dipc rows have floors");
        let names: Vec<_> = v.parts.iter().map(|p| p.name).collect();
        assert_eq!(names, ["uffd-local", "tcp-rtt-4k"], "{}", res.name);
        assert!(v.ratio_p50.is_finite() && v.ratio_p50 > 0.0);
    }
    let target = r.targets.first().expect("remote-read has a target");
    assert_eq!((target.scenario, target.goal), ("remote-read", 1.3));
    assert!(r.table().contains("target: remote-read p50 = "));
}

/// The transfer-mode rows end to end with tiny counts: a per-segment
/// quantum with two writers, scans with and without prefetch, segment
/// mode, and a hot page on nodes in network namespaces (measured as root,
/// else skipped with that reason, never a number).
#[test]
fn transfer_mode_rows_run_end_to_end() {
    let mut o = options(&["quantum-1ms", "scan-seq-nopf", "scan-rand", "hot-read-ns-2"]);
    o.agent = Some(AgentCommand {
        program: PathBuf::from(env!("CARGO_BIN_EXE_dipc-bench-agent")),
        args: Vec::new(),
    });
    let logs = dipc_bench::logs::LogBuffer::new(2000);
    logs.install("info");
    o.logs = Some(logs);
    let r = dipc_bench::run(&o).expect("run");
    let ns = r.result("hot-read-ns-2").expect("netns row");
    let root = nix::unistd::geteuid().is_root();
    let mut measured = r.clone();
    if !root {
        match &ns.outcome {
            Outcome::Skipped { reason } => assert!(reason.contains("root"), "{reason}"),
            other => panic!("hot-read-ns-2 without root: {other:?}"),
        }
        measured.results.retain(|x| x.name != "hot-read-ns-2");
    }
    assert_all_measured(&measured);
    let rate = |n: &str| r.result(n).and_then(|x| x.rate.clone()).map(|v| v.unit);
    assert_eq!(rate("quantum-1ms"), Some("ops/s"));
    assert_eq!(rate("scan-seq-nopf"), Some("MB/s"));
    if root {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = dipc_bench::plot::write(&r, dir.path()).expect("plots");
        let svg = std::fs::read_to_string(files.last().expect("scaling.svg")).expect("read");
        assert!(svg.contains("network namespaces"), "no netns curve");
    }
}

/// The rows beyond the page faults, end to end with tiny counts: kernel
/// floors through local agent processes, queues, semaphores and barriers
/// on dipc, three and five nodes, concurrent agents, a 64 KiB unit.
/// Redis is measured when `redis-server` is installed, else skipped with
/// that reason (never a number); so is the kernel's 64 KiB round trip
/// when `kernel.msgmax` cannot be raised (not root).
#[test]
fn ipc_and_multi_node_rows_run_end_to_end() {
    let mut o = options(&[
        "msg-rtt-8",
        "msg-rtt-64k",
        "msg-tput-8",
        "semop",
        "barrier-3",
        "write-inval-4",
        "remote-read-m3",
        "counter-2",
        "hot-read-2",
        "scan-rand-64k",
    ]);
    o.agent = Some(AgentCommand {
        program: PathBuf::from(env!("CARGO_BIN_EXE_dipc-bench-agent")),
        args: Vec::new(),
    });
    let logs = dipc_bench::logs::LogBuffer::new(2000);
    logs.install("info");
    o.logs = Some(logs);
    let msgmax_before = std::fs::read_to_string("/proc/sys/kernel/msgmax").ok();
    let r = dipc_bench::run(&o).expect("run");
    let redis = r.result("redis-rtt-8").expect("redis floor comes along");
    let redis_measured = match &redis.outcome {
        Outcome::Skipped { reason } => {
            assert!(reason.contains("redis-server"), "{reason}");
            false
        }
        _ => true,
    };
    let mut measured = r.clone();
    measured
        .results
        .retain(|x| !x.name.starts_with("redis-rtt-") || redis_measured);
    let kmsg = r.result("kmsg-rtt-64k").expect("kernel floor comes along");
    if let Outcome::Skipped { reason } = &kmsg.outcome {
        assert!(
            reason.starts_with("not measured: kernel.msgmax="),
            "{reason}"
        );
        measured.results.retain(|x| x.name != "kmsg-rtt-64k");
    }
    // The kernel's limits are back to what they were.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/msgmax").ok(),
        msgmax_before
    );
    assert_all_measured(&measured);
    assert!(r.failed().is_empty());
    for name in [
        "kmsg-rtt-8",
        "kmsg-tput-8",
        "ksemop",
        "kbarrier-2",
        "tcp-rtt-8",
        "tcp-bw-1m",
    ] {
        assert_eq!(r.result(name).map(|x| x.kind), Some(Kind::Floor), "{name}");
    }
    // Rates where a row has one, ratios to every reference measured.
    let rate = |n: &str| r.result(n).and_then(|x| x.rate.clone()).map(|v| v.unit);
    assert_eq!(rate("msg-tput-8"), Some("ops/s"));
    assert_eq!(rate("counter-2"), Some("ops/s"));
    assert_eq!(rate("scan-rand-64k"), Some("MB/s"));
    assert_eq!(rate("tcp-bw-1m"), Some("MB/s"));
    let msg = r.result("msg-rtt-8").expect("msg-rtt-8");
    let refs: Vec<_> = msg.vs_also.iter().map(|a| a.name).collect();
    let want: &[&str] = if redis_measured {
        &["kmsg-rtt-8", "redis-rtt-8"]
    } else {
        &["kmsg-rtt-8"]
    };
    assert_eq!(refs, want);
    let scan = r.result("scan-rand-64k").expect("scan");
    assert_eq!(scan.vs_also.first().map(|a| a.basis), Some("rate"));
    let targets: Vec<_> = r.targets.iter().map(|t| (t.scenario, t.goal)).collect();
    assert_eq!(targets.first(), Some(&("msg-rtt-8", 1.2)));
    assert_eq!(targets.len(), if redis_measured { 4 } else { 2 });
    let table = r.table();
    assert!(table.contains(" ops/s"), "{table}");
    assert!(table.contains("x kmsg-rtt-8"), "{table}");

    // The plots are written, with a row name in the latency one.
    let dir = tempfile::tempdir().expect("tempdir");
    let files = dipc_bench::plot::write(&r, dir.path()).expect("plots");
    assert_eq!(files.len(), 2);
    let svg = std::fs::read_to_string(&files[0]).expect("latency.svg");
    assert!(
        svg.starts_with("<svg") && svg.contains("msg-rtt-8"),
        "{svg:.200}"
    );
}

/// The segment-mode row moves the whole 256 MiB segment for each sample
/// (and each warm-up scan), so it runs alone with one counted sample.
#[test]
fn the_segment_mode_row_runs_end_to_end() {
    let mut o = options(&["scan-seq-seg"]);
    o.samples = Some(1);
    o.slices = 1;
    o.agent = Some(AgentCommand {
        program: PathBuf::from(env!("CARGO_BIN_EXE_dipc-bench-agent")),
        args: Vec::new(),
    });
    let r = dipc_bench::run(&o).expect("run");
    let res = r.result("scan-seq-seg").expect("the row");
    match &res.outcome {
        Outcome::Measured { summary } => assert_eq!(summary.samples, 1),
        other => panic!("scan-seq-seg: {other:?}"),
    }
    assert_eq!(res.rate.as_ref().map(|v| v.unit), Some("MB/s"));
}
