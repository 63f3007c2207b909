//! The foundation: a referee and nodes as real processes on loopback.
//!
//! Membership and status, cluster-wide exclusive creation, a referee that
//! survives `SIGKILL` with its registry, refusal of a node holding the wrong
//! secret, failure detection of a killed node, and C programs reaching
//! their node through libsysv (linked, and preloaded). Each test starts its own
//! cluster (dipc-testkit), so they run in parallel and a failure prints the
//! logs of every process.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use dipc_testkit::{Cluster, Link, LocalClient, compile_c};
use dipc_wire::local::Response;
use dipc_wire::referee::ClusterStatus;
use dipc_wire::{IPC_CREAT, IPC_EXCL, Key, errno, is_dipc_id};

const HEARTBEAT_MS: u64 = 300;
const DOWN_AFTER_MS: u64 = 1500;

fn cluster(nodes: usize) -> Cluster {
    match Cluster::builder()
        .bin(env!("CARGO_BIN_EXE_dipc"))
        .nodes(nodes)
        .heartbeat_ms(HEARTBEAT_MS)
        .down_after_ms(DOWN_AFTER_MS)
        .start()
    {
        Ok(c) => c,
        Err(e) => panic!("cluster of {nodes} nodes did not start: {e:#}"),
    }
}

/// Panic with the cluster's logs when `r` is an error.
fn check<T>(c: &Cluster, r: anyhow::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e:#}\n{}", c.logs()),
    }
}

fn up_names(st: &ClusterStatus) -> Vec<String> {
    let mut names: Vec<String> = st
        .members
        .iter()
        .filter(|m| m.up)
        .map(|m| m.name.clone())
        .collect();
    names.sort();
    names
}

fn all_up(c: &Cluster, nodes: &[usize]) -> anyhow::Result<bool> {
    let st = c.status()?;
    Ok(nodes.iter().all(|&i| {
        let name = c.node_name(i);
        st.members.iter().any(|m| m.name == name && m.up)
    }))
}

#[test]
fn three_nodes_join_and_status_lists_them_up() {
    let c = cluster(3);
    let st = check(&c, c.status());
    assert_eq!(st.cluster, "testkit");
    assert_eq!(st.members.len(), 3, "{st:#?}");
    assert_eq!(up_names(&st), ["node-0", "node-1", "node-2"], "{st:#?}");
    let mut ids: Vec<u32> = st.members.iter().map(|m| m.node).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "node ids must be distinct: {st:#?}");

    let text = check(&c, c.status_text());
    for i in 0..3 {
        let name = c.node_name(i);
        let line = text
            .lines()
            .find(|l| l.split_whitespace().any(|w| w == name))
            .unwrap_or_else(|| panic!("`dipc status` does not name {name}:\n{text}"));
        assert!(
            line.split_whitespace().any(|w| w == "up"),
            "{name} not shown up: {line:?}\n{text}"
        );
    }
}

#[test]
fn exclusive_create_races_have_exactly_one_winner() {
    let c = cluster(3);
    let mut clients: Vec<LocalClient> = (0..3).map(|i| check(&c, c.local_client(i))).collect();
    let node_ids: Vec<u32> = clients.iter().map(LocalClient::node).collect();

    for round in 0..5 {
        let key: Key = 0x0d1c_0100 + round;
        let barrier = Arc::new(Barrier::new(clients.len()));
        let threads: Vec<_> = clients
            .into_iter()
            .map(|mut client| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let r = client.shm_get(key, 4096, IPC_CREAT | IPC_EXCL | 0o600);
                    (client, r)
                })
            })
            .collect();
        let mut results = Vec::new();
        clients = Vec::new();
        for t in threads {
            let (client, r) = t.join().expect("racing thread panicked");
            results.push(check(&c, r));
            clients.push(client);
        }
        let winners: Vec<usize> = (0..results.len())
            .filter(|&i| matches!(results[i], Response::Id(_)))
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let winner = winners[0];
        let Response::Id(id) = results[winner] else {
            unreachable!("winner answered Id")
        };
        assert!(is_dipc_id(id), "id {id:#x} is not in the distributed range");
        for (i, r) in results.iter().enumerate() {
            if i != winner {
                assert_eq!(*r, Response::Err(errno::EEXIST), "round {round}, node {i}");
            }
        }

        // Every node finds the one segment by key, without creating.
        for (i, client) in clients.iter_mut().enumerate() {
            let r = check(&c, client.shm_get(key, 4096, 0));
            assert_eq!(r, Response::Id(id), "round {round}: lookup on node {i}");
        }
        // The referee knows it, homed at the winner.
        let st = check(&c, c.status());
        let obj = st
            .objects
            .iter()
            .find(|o| o.record.key == key)
            .unwrap_or_else(|| panic!("key {key:#x} not in the status: {st:#?}"));
        assert_eq!(obj.record.id, id);
        assert_eq!(obj.record.home, node_ids[winner], "{st:#?}");
    }
}

#[test]
fn referee_restart_keeps_keys_and_members() {
    let mut c = cluster(2);
    let key: Key = 0x0d1c_0200;
    let id = match check(
        &c,
        c.local_client(0)
            .and_then(|mut l| l.shm_get(key, 8192, IPC_CREAT | 0o600)),
    ) {
        Response::Id(id) => id,
        other => panic!("create failed: {other:?}\n{}", c.logs()),
    };
    let pids: Vec<u32> = (0..2).map(|i| c.node_process(i).pid()).collect();

    let r = c.kill_referee();
    check(&c, r);
    assert!(c.status().is_err(), "status answered with the referee dead");
    let r = c.restart_referee();
    check(&c, r);
    check(
        &c,
        c.wait_until(
            "both nodes to be members again",
            Duration::from_secs(20),
            |c| all_up(c, &[0, 1]),
        ),
    );
    for (i, pid) in pids.into_iter().enumerate() {
        assert_eq!(c.node_process(i).pid(), pid, "node {i} was restarted");
        assert!(c.node_process(i).is_running(), "node {i} died");
    }

    // The key is still there: through the other node, and through a node
    // that joined after the restart and so has nothing cached.
    let r = check(
        &c,
        c.local_client(1).and_then(|mut l| l.shm_get(key, 8192, 0)),
    );
    assert_eq!(r, Response::Id(id), "lookup through node 1");
    let fresh = c.add_node();
    let fresh = check(&c, fresh);
    let r = check(
        &c,
        c.local_client(fresh)
            .and_then(|mut l| l.shm_get(key, 8192, 0)),
    );
    assert_eq!(
        r,
        Response::Id(id),
        "lookup through a node started after the restart"
    );
    let st = check(&c, c.status());
    assert!(
        st.objects
            .iter()
            .any(|o| o.record.key == key && o.record.id == id),
        "{st:#?}"
    );
}

#[test]
fn node_with_wrong_secret_is_refused() {
    let mut c = cluster(1);
    let bad = c.start_extra_node(b"not-the-secret-of-this-cluster");
    let bad = check(&c, bad);
    let bad_name = c.node_name(bad);

    // The node gives up (a refusal is fatal); meanwhile and afterwards the
    // referee never lists it.
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        let st = check(&c, c.status());
        assert!(
            st.members.iter().all(|m| m.name != bad_name),
            "{bad_name} listed: {st:#?}"
        );
        let exited = c.node_process(bad).try_wait();
        if let Some(s) = check(&c, exited) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{bad_name} still running\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "{bad_name} exited with {status}");
    let log = c.node_log(bad);
    assert!(log.contains("refused this node"), "{log}");
    assert!(log.contains("wrong cluster secret"), "{log}");

    let st = check(&c, c.status());
    assert!(st.members.iter().all(|m| m.name != bad_name), "{st:#?}");
    assert_eq!(up_names(&st), ["node-0"], "{st:#?}");
}

#[test]
fn killed_node_is_shown_down_and_the_others_stay_up() {
    let mut c = cluster(3);
    let r = c.kill_node(1);
    check(&c, r);
    let killed = Instant::now();
    // Down within down_after plus one heartbeat period of the referee's
    // checks, plus slack for process start-up of `dipc status`.
    let bound = Duration::from_millis(DOWN_AFTER_MS + HEARTBEAT_MS + 1500);
    check(&c, c.wait_node_state(1, false, bound));
    let took = killed.elapsed();

    let st = check(&c, c.status());
    assert_eq!(
        up_names(&st),
        ["node-0", "node-2"],
        "after {took:?}: {st:#?}"
    );
    assert_eq!(st.members.len(), 3, "the dead node stays a member: {st:#?}");

    // And they stay up for longer than the failure timeout.
    let until = Instant::now() + Duration::from_millis(2 * DOWN_AFTER_MS);
    while Instant::now() < until {
        let st = check(&c, c.status());
        assert_eq!(up_names(&st), ["node-0", "node-2"], "{st:#?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `shmget(key, 4096, IPC_DIPC | flags)` from C; prints the id or the errno.
const SHMGET_C: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <dipc.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    key_t key = (key_t)strtol(argv[1], NULL, 0);
    int flags = (int)strtol(argv[2], NULL, 0);
    int id = shmget(key, 4096, IPC_DIPC | flags);
    if (id < 0) { printf("errno %d\n", errno); return 1; }
    printf("id %d\n", id);
    return 0;
}
"#;

#[test]
fn c_programs_on_two_nodes_share_a_key() {
    let c = cluster(2);
    let linked = check(&c, compile_c(SHMGET_C, "foundation-shmget", Link::Sysv));
    let preloaded = check(&c, compile_c(SHMGET_C, "foundation-shmget", Link::Plain));
    let key = "0x0d1c0300";
    let create = (IPC_CREAT | IPC_EXCL | 0o600).to_string();

    let run = |node: usize, prog: &dipc_testkit::Program, flags: &str| {
        let out = c
            .run_on(node, prog)
            .args([key, flags])
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", prog.path().display()));
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stdout, stderr)
    };

    let (code, created, err) = run(0, &linked, &create);
    assert_eq!(
        code,
        Some(0),
        "create on node 0: {created} {err}\n{}",
        c.logs()
    );
    let id: i32 = created
        .strip_prefix("id ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {created:?}"));
    assert!(is_dipc_id(id), "id {id:#x} is not distributed");

    // The same key from node 1, preloaded: found without creating, and an
    // exclusive create is refused cluster-wide.
    let (code, found, err) = run(1, &preloaded, "0");
    assert_eq!(
        code,
        Some(0),
        "lookup on node 1: {found} {err}\n{}",
        c.logs()
    );
    assert_eq!(found, format!("id {id}"));
    let (code, refused, _) = run(1, &preloaded, &create);
    assert_eq!(code, Some(1));
    assert_eq!(refused, format!("errno {}", errno::EEXIST));
}
