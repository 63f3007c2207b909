//! The example programs of `examples/` run three ways, each checked.
//!
//! Every example (Jacobi heat diffusion, blocked matrix multiply, message
//! queue pipeline) runs:
//!
//! 1. linked `-lsysv`, objects marked `IPC_DIPC`, one process per node of a
//!    3-node cluster (`DIPC_FALLBACK=error`, so nothing silently stays
//!    local): every object id the processes print is a distributed one;
//! 2. the same source built with `-DNO_DIPC` (no dipc.h, no libsysv),
//!    under `LD_PRELOAD=libsysv.so` with `DIPC_KEYS` naming its keys: ids
//!    again distributed;
//! 3. linked `-lsysv` on this machine with no daemon at all: libsysv's
//!    short circuit gives kernel objects (ids without the distributed bit).
//!
//! Jacobi and matmul print a fingerprint of their result and whether it
//! equals rank 0's own serial computation bit for bit; the fingerprint must
//! also equal a one-process run's. The pipeline's consumer checks every
//! item and prints the sum, which must be the same in all three runs.
//! Sizes are small (48 x 48 grids) so the file runs in well under a minute
//! in debug. `dipc run` itself is exercised here too: it starts its own
//! 3-node cluster and runs Jacobi once per node (rank and size from
//! `DIPC_RANK`/`DIPC_NODES`), returns the first failing rank's exit code,
//! prefixes every line with its rank, reuses an existing cluster's
//! sockets, and hands `--config` to the daemons of the cluster it starts.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dipc_testkit::{Cluster, Link, Program, compile_c};
use dipc_wire::is_dipc_id;

const HEADER: &str = include_str!("../../examples/dipc_example.h");
const JACOBI: &str = include_str!("../../examples/jacobi.c");
const MATMUL: &str = include_str!("../../examples/matmul.c");
const PIPELINE: &str = include_str!("../../examples/pipeline.c");

/// Bound on one run of all ranks of an example.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
const NODES: usize = 3;

fn cluster() -> Cluster {
    Cluster::builder()
        .bin(env!("CARGO_BIN_EXE_dipc"))
        .nodes(NODES)
        .start()
        .unwrap_or_else(|e| panic!("cluster of {NODES} nodes did not start: {e:#}"))
}

/// The example's source with its header pasted in (compile_c takes one
/// string), `-DNO_DIPC` as a `#define` for the plain build.
fn build(src: &str, name: &str, link: Link) -> Program {
    let mut full = String::new();
    if link == Link::Plain {
        full.push_str("#define NO_DIPC 1\n");
    }
    full.push_str(&src.replace("#include \"dipc_example.h\"", HEADER));
    let name = match link {
        Link::Sysv => format!("ex-{name}"),
        Link::Plain => format!("ex-{name}-plain"),
    };
    compile_c(&full, &name, link).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Spawn every rank, wait for all (bounded), return their stdouts; panics
/// with everything they said (and `logs`) if one fails.
fn run_ranks(cmds: Vec<Command>, logs: &dyn Fn() -> String) -> Vec<String> {
    let mut children: Vec<Child> = cmds
        .into_iter()
        .map(|mut c| {
            c.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("spawning {c:?}: {e}"))
        })
        .collect();
    let readers: Vec<_> = children
        .iter_mut()
        .map(|ch| {
            let mut out = ch.stdout.take().expect("piped stdout");
            let mut err = ch.stderr.take().expect("piped stderr");
            std::thread::spawn(move || {
                let (mut o, mut e) = (String::new(), String::new());
                let t = std::thread::spawn(move || {
                    let _ = err.read_to_string(&mut e);
                    e
                });
                let _ = out.read_to_string(&mut o);
                (o, t.join().unwrap_or_default())
            })
        })
        .collect();
    let deadline = Instant::now() + RUN_TIMEOUT;
    let mut statuses = vec![None; children.len()];
    while statuses.iter().any(Option::is_none) && Instant::now() < deadline {
        for (s, ch) in statuses.iter_mut().zip(children.iter_mut()) {
            if s.is_none() {
                *s = ch.try_wait().expect("wait");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for ch in &mut children {
        let _ = ch.kill();
        let _ = ch.wait();
    }
    let outs: Vec<(String, String)> = readers
        .into_iter()
        .map(|r| r.join().expect("reader thread"))
        .collect();
    let failed = statuses.iter().any(|s| !s.is_some_and(|s| s.success()));
    if failed {
        let mut msg = String::from("a rank failed or timed out:\n");
        for (rank, (s, (o, e))) in statuses.iter().zip(&outs).enumerate() {
            msg.push_str(&format!(
                "--- rank {rank}: {s:?}\nstdout:\n{o}stderr:\n{e}\n"
            ));
        }
        panic!("{msg}{}", logs());
    }
    outs.into_iter().map(|(o, _)| o).collect()
}

/// Every integer after "id" / "ids" words in the ranks' "rank r/n:" lines.
fn printed_ids(outs: &[String]) -> Vec<i32> {
    let mut ids = Vec::new();
    for line in outs.iter().flat_map(|o| o.lines()) {
        let Some(rest) = line.strip_prefix("rank ") else {
            continue;
        };
        for word in rest.split([' ', ',']) {
            if let Ok(v) = word.parse::<i32>()
                && v >= 0
            {
                ids.push(v);
            }
        }
    }
    // "rank 1/3:" itself parses as no integer ("1/3:"); "-1" (no queue) is skipped.
    ids
}

fn result_line(outs: &[String], prefix: &str) -> String {
    outs.iter()
        .flat_map(|o| o.lines())
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {outs:#?}"))
        .to_string()
}

/// The field `name=value` of a result line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}

/// A unique kernel key block for the no-daemon runs (kernel keys are
/// machine-wide, and other test processes may run at the same time).
fn local_key(example: u32) -> String {
    format!(
        "{:#x}",
        0x3000_0000 | ((std::process::id() & 0xffff) << 8) | (example << 4)
    )
}

/// Commands running `prog` as ranks 0..n on this machine, no daemon.
fn local_cmds(prog: &Program, n: usize, key: &str, extra: &[&str]) -> Vec<Command> {
    (0..n)
        .map(|r| {
            let mut c = prog.command();
            c.env("DIPC_SOCKET", "/nonexistent/dipc-no-daemon.sock")
                .arg(r.to_string())
                .arg(n.to_string())
                .arg(key)
                .args(extra);
            c
        })
        .collect()
}

/// Commands running `prog` as one rank per node of `c`.
fn cluster_cmds(
    c: &Cluster,
    prog: &Program,
    key: &str,
    keys_env: Option<&str>,
    extra: &[&str],
) -> Vec<Command> {
    (0..NODES)
        .map(|r| {
            let mut cmd = c.run_on(r, prog);
            if let Some(k) = keys_env {
                cmd.env("DIPC_KEYS", k);
            }
            cmd.arg(r.to_string())
                .arg(NODES.to_string())
                .arg(key)
                .args(extra);
            cmd
        })
        .collect()
}

fn assert_ids(outs: &[String], distributed: bool, what: &str) {
    let ids = printed_ids(outs);
    assert!(!ids.is_empty(), "{what}: no ids printed: {outs:#?}");
    for id in ids {
        assert_eq!(
            is_dipc_id(id),
            distributed,
            "{what}: id {id:#x} should {}be distributed",
            if distributed { "" } else { "not " }
        );
    }
}

/// Jacobi or matmul: three ways, each bitwise equal to the serial run.
/// `extra`: the size arguments after the key.
fn grid_example(src: &str, name: &str, prefix: &str, key: u32, extra: &[&str]) {
    let linked = build(src, name, Link::Sysv);
    let plain = build(src, name, Link::Plain);
    let c = cluster();
    let logs = || c.logs();

    let serial = run_ranks(local_cmds(&linked, 1, &local_key(key), extra), &|| {
        String::new()
    });
    let serial_line = result_line(&serial, prefix);
    assert_eq!(field(&serial_line, "serial"), "equal", "{serial_line}");
    let want = field(&serial_line, "hash").to_string();

    let k1 = format!("{:#x}", key);
    let outs = run_ranks(cluster_cmds(&c, &linked, &k1, None, extra), &logs);
    assert_ids(&outs, true, "linked -lsysv");
    let line = result_line(&outs, prefix);
    assert_eq!(field(&line, "procs"), "3", "{line}");
    assert_eq!(field(&line, "serial"), "equal", "{line}");
    assert_eq!(
        field(&line, "hash"),
        want,
        "linked: {line} vs serial {serial_line}"
    );

    let k2 = key + 0x10;
    let keys = format!("{:#x}-{:#x}", k2, k2 + 1);
    let outs = run_ranks(
        cluster_cmds(&c, &plain, &format!("{k2:#x}"), Some(&keys), extra),
        &logs,
    );
    assert_ids(&outs, true, "LD_PRELOAD + DIPC_KEYS");
    let line = result_line(&outs, prefix);
    assert_eq!(field(&line, "serial"), "equal", "{line}");
    assert_eq!(field(&line, "hash"), want, "preload: {line}");

    let outs = run_ranks(
        local_cmds(&linked, NODES, &local_key(key + 1), extra),
        &|| String::new(),
    );
    assert_ids(&outs, false, "no daemon");
    let line = result_line(&outs, prefix);
    assert_eq!(field(&line, "serial"), "equal", "{line}");
    assert_eq!(field(&line, "hash"), want, "no daemon: {line}");
}

#[test]
fn jacobi_three_ways_bitwise_equal_to_serial() {
    // 48 x 48 grid, 24 sweeps: 25 barriers, boundary rows cross nodes each sweep.
    grid_example(JACOBI, "jacobi", "jacobi ", 0x4a00, &["48", "24"]);
}

#[test]
fn matmul_three_ways_bitwise_equal_to_serial() {
    // 48 x 48, 16 x 16 tiles: 9 tiles over 3 nodes.
    grid_example(MATMUL, "matmul", "matmul ", 0x4d00, &["48", "16"]);
}

#[test]
fn pipeline_three_ways() {
    let linked = build(PIPELINE, "pipeline", Link::Sysv);
    let plain = build(PIPELINE, "pipeline", Link::Plain);
    let c = cluster();
    let logs = || c.logs();
    let items = "300";

    let outs = run_ranks(cluster_cmds(&c, &linked, "0x5000", None, &[items]), &logs);
    assert_ids(&outs, true, "linked -lsysv");
    let line = result_line(&outs, "pipeline ");
    assert!(line.ends_with(" ok"), "{line}");
    assert_eq!(field(&line, "items"), items);
    let sum = field(&line, "sum").to_string();

    let outs = run_ranks(
        cluster_cmds(&c, &plain, "0x5010", Some("0x5010-0x5011"), &[items]),
        &logs,
    );
    assert_ids(&outs, true, "LD_PRELOAD + DIPC_KEYS");
    assert_eq!(field(&result_line(&outs, "pipeline "), "sum"), sum);

    let outs = run_ranks(
        local_cmds(&linked, NODES, &local_key(0x7), &[items]),
        &|| String::new(),
    );
    assert_ids(&outs, false, "no daemon");
    assert_eq!(field(&result_line(&outs, "pipeline "), "sum"), sum);
    // Every queue was removed by its reader: none is left in the cluster.
    let st = c.status().expect("status");
    assert!(st.objects.is_empty(), "objects left: {:?}", st.objects);
}

/// `dipc run` with a command line; returns (exit code, stdout, stderr).
fn dipc_run(args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dipc"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("DIPC_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("run").args(args);
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("dipc run: {e}"));
    let out = wait_bounded(child);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Wait for `child`'s output, killing it after [`RUN_TIMEOUT`].
fn wait_bounded(child: Child) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if rx.recv_timeout(RUN_TIMEOUT).is_err() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    });
    let out = child.wait_with_output().expect("waiting for dipc run");
    let _ = tx.send(());
    out
}

#[test]
fn dipc_run_starts_a_cluster_and_one_rank_per_node() {
    let linked = build(JACOBI, "jacobi", Link::Sysv);
    let path = linked.path().to_string_lossy().into_owned();
    // No rank/nprocs arguments: the program takes DIPC_RANK and DIPC_NODES.
    let (code, out, err) = dipc_run(&["--nodes", "3", "--", &path]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    for r in 0..3 {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("[{r}] rank {r}/3: shm id 1"))),
            "rank {r} missing or not distributed:\n{out}"
        );
    }
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("[0] jacobi "))
        .unwrap_or_else(|| panic!("no result line:\n{out}\n{err}"));
    assert!(
        line.contains("procs=3") && line.ends_with("serial=equal"),
        "{line}"
    );
}

#[test]
fn dipc_run_exit_code_is_the_first_failure_and_sockets_reuse_a_cluster() {
    // A failing rank: its code comes back, its stderr is prefixed.
    let (code, out, err) = dipc_run(&[
        "-n",
        "2",
        "--",
        "sh",
        "-c",
        "echo out $DIPC_RANK of $DIPC_NODES in $DIPC_CLUSTER; test -f \"$DIPC_SECRET_FILE\" || exit 9; echo err >&2; exit $((DIPC_RANK * 7))",
    ]);
    assert_eq!(code, 7, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("[0] out 0 of 2 in dipc-run") && out.contains("[1] out 1 of 2 in dipc-run"),
        "{out}"
    );
    assert!(err.contains("[1] err") && err.contains("[0] err"), "{err}");

    // An existing cluster: ranks get the given sockets.
    let c = cluster();
    let socks = format!(
        "{},{}",
        c.node_socket(2).display(),
        c.node_socket(0).display()
    );
    let (code, out, err) = dipc_run(&["--sockets", &socks, "--", "sh", "-c", "echo $DIPC_SOCKET"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("[0] {}", c.node_socket(2).display()))
            && out.contains(&format!("[1] {}", c.node_socket(0).display())),
        "{out}"
    );
}

/// `dipc --config FILE run` hands the file to its test cluster's daemons:
/// a queue created there takes the file's `msgmax`. Without the file a
/// 16 KiB message is over the default `msgmax` (8192) and refused.
#[test]
fn dipc_run_gives_its_test_cluster_the_config_file() {
    let common = include_str!("c/msgsem_common.c");
    let msg = include_str!("c/msgsem_msg.c");
    let prog = compile_c(&format!("{common}\n{msg}"), "run-msgsize", Link::Sysv)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let p = prog.path().to_string_lossy().into_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("dipc.toml");
    std::fs::write(&cfg, "msgmax = 65536\nmsgmnb = 131072\n").expect("write config");
    let cfg = cfg.to_string_lossy().into_owned();
    let script = format!("{p} create 0x5eed0016 >/dev/null && {p} sendsize 0x5eed0016 16384");

    let (code, out, err) = dipc_run(&["--config", &cfg, "-n", "1", "--", "sh", "-c", &script]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("[0] sent"), "stdout:\n{out}\nstderr:\n{err}");

    let (code, out, err) = dipc_run(&["-n", "1", "--", "sh", "-c", &script]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("[0] errno EINVAL"),
        "stdout:\n{out}\nstderr:\n{err}"
    );
}
