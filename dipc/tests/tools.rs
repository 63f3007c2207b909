//! `dipc ipcmk`, `dipc ipcs` and `dipc ipcrm` against a real 2-node cluster.
//!
//! Objects are made with `ipcmk` through each node's socket (so their home
//! differs), listed with `ipcs` (tables and `--json`: hex keys, ids, octal
//! perms, sizes, a queue's contents after a message was sent to it, the
//! home node's name), and removed with `ipcrm` by id and by key through the
//! other node. Refusals come back as util-linux's tools report them: an
//! exclusive `ipcmk` of a taken key, an `ipcrm` of an unknown id, each with
//! exit status 1 and a message.

use std::process::Output;

use dipc_testkit::{Cluster, Link, compile_c};
use dipc_wire::is_dipc_id;
use dipc_wire::local::{Request, Response};

fn cluster() -> Cluster {
    Cluster::builder()
        .bin(env!("CARGO_BIN_EXE_dipc"))
        .nodes(2)
        .start()
        .unwrap_or_else(|e| panic!("cluster did not start: {e:#}"))
}

/// `dipc ARGS` with this cluster's settings and node `node`'s socket.
fn dipc(c: &Cluster, node: usize, args: &[&str]) -> Output {
    c.dipc()
        .env("DIPC_SOCKET", c.node_socket(node))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("dipc {args:?}: {e}"))
}

fn ok(c: &Cluster, node: usize, args: &[&str]) -> String {
    let out = dipc(c, node, args);
    assert!(
        out.status.success(),
        "dipc {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The id in an `ipcmk` line such as "Shared memory id: 1073741825".
fn id_of(line: &str, prefix: &str) -> i32 {
    let id: i32 = line
        .trim()
        .strip_prefix(prefix)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line:?} is not `{prefix} ID`"));
    assert!(is_dipc_id(id), "{id:#x} is not a distributed id");
    id
}

#[test]
fn ipcmk_ipcs_ipcrm_round_trip() {
    let c = cluster();
    let shm = id_of(
        &ok(
            &c,
            0,
            &["ipcmk", "-M", "8K", "-p", "0640", "--key", "0x7100"],
        ),
        "Shared memory id:",
    );
    let msq = id_of(
        &ok(&c, 1, &["ipcmk", "-Q", "--key", "0x7101"]),
        "Message queue id:",
    );
    let sem = id_of(
        &ok(&c, 0, &["ipcmk", "-S", "3", "--key", "0x7102", "-p", "600"]),
        "Semaphore id:",
    );
    assert!(shm != msq && msq != sem && shm != sem);

    // A key is created exclusively: the second ipcmk is refused.
    let again = dipc(&c, 1, &["ipcmk", "-Q", "--key", "0x7101"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("File exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // One message of 5 bytes in the queue, sent through node 0.
    let mut client = c.local_client(0).expect("local client");
    let sent = client
        .call(&Request::MsgSnd {
            id: msq,
            mtype: 1,
            text: b"hello"[..].into(),
            flags: 0,
        })
        .expect("msgsnd");
    assert_eq!(sent, Response::Ok);

    let text = ok(&c, 1, &["ipcs"]);
    let line = |id: i32| -> Vec<String> {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(&id.to_string()))
            .unwrap_or_else(|| panic!("no line for {id} in\n{text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    for section in [
        "Shared Memory Segments",
        "Message Queues",
        "Semaphore Arrays",
    ] {
        assert!(text.contains(section), "{section} missing:\n{text}");
    }
    let l = line(shm);
    assert_eq!(l[0], "0x00007100", "{text}");
    assert_eq!(&l[3..6], ["640", "8192", "0"], "perms bytes nattch: {text}");
    assert_eq!(l.last().map(String::as_str), Some("node-0"), "{text}");
    let l = line(msq);
    assert_eq!(l[0], "0x00007101");
    assert_eq!(&l[4..6], ["5", "1"], "used-bytes, messages: {text}");
    assert_eq!(l.last().map(String::as_str), Some("node-1"), "{text}");
    let l = line(sem);
    assert_eq!(&l[3..5], ["600", "3"], "perms nsems: {text}");

    // --json, one kind only.
    let json: serde_json::Value =
        serde_json::from_str(&ok(&c, 0, &["ipcs", "--json", "-m"])).expect("ipcs --json");
    let rows = json.as_array().expect("an array");
    assert_eq!(rows.len(), 1, "{json}");
    assert_eq!(rows[0]["id"], shm);
    assert_eq!(rows[0]["key"], 0x7100);
    assert_eq!(rows[0]["kind"], "Shm");
    assert_eq!(rows[0]["bytes"], 8192);
    assert_eq!(rows[0]["nattch"], 0);
    assert_eq!(rows[0]["home_name"], "node-0");

    // Removal through the other node: by id and by key.
    ok(
        &c,
        1,
        &[
            "ipcrm",
            "-m",
            &shm.to_string(),
            "-Q",
            "0x7101",
            "-S",
            "0x7102",
        ],
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&c, 0, &["ipcs", "--json"])).expect("ipcs --json");
    assert_eq!(json.as_array().map(Vec::len), Some(0), "left: {json}");

    // Unknown id and key: exit 1, one message each.
    let gone = dipc(&c, 0, &["ipcrm", "-q", &msq.to_string(), "-M", "0x7100"]);
    assert_eq!(gone.status.code(), Some(1));
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(
        err.contains(&format!("message queue id {msq}")) && err.contains("key 0x7100"),
        "{err}"
    );
}

#[test]
fn tools_need_a_reachable_node_and_valid_arguments() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dipc"))
        .args(["ipcmk", "-Q", "--socket", "/nonexistent/dipc.sock"])
        .output()
        .expect("dipc ipcmk");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dipc.sock"));
    // Nothing to do is a usage error (clap's status 2).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dipc"))
        .args(["ipcrm"])
        .output()
        .expect("dipc ipcrm");
    assert_eq!(out.status.code(), Some(2));
}

/// `GET path` from a loopback HTTP endpoint: (status line, body).
fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

#[test]
fn metrics_endpoints_of_referee_and_node() {
    let (rport, nport) = (
        dipc_testkit::free_port().expect("port"),
        dipc_testkit::free_port().expect("port"),
    );
    let (raddr, naddr) = (format!("127.0.0.1:{rport}"), format!("127.0.0.1:{nport}"));
    let c = Cluster::builder()
        .bin(env!("CARGO_BIN_EXE_dipc"))
        .nodes(1)
        .referee_arg("--metrics")
        .referee_arg(&raddr)
        .node_arg("--metrics")
        .node_arg(&naddr)
        .start()
        .unwrap_or_else(|e| panic!("cluster did not start: {e:#}"));
    let msq = id_of(
        &ok(&c, 0, &["ipcmk", "-Q", "--key", "0x7200"]),
        "Message queue id:",
    );
    let mut client = c.local_client(0).expect("local client");
    for text in [&b"abc"[..], b"defgh"] {
        let sent = client
            .call(&Request::MsgSnd {
                id: msq,
                mtype: 1,
                text: text.to_vec().into(),
                flags: 0,
            })
            .expect("msgsnd");
        assert_eq!(sent, Response::Ok);
    }

    let (status, body) = http_get(&raddr, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("dipc_members{state=\"up\"} 1"), "{body}");
    assert!(body.contains("dipc_objects{kind=\"msg\"} 1"), "{body}");
    assert!(body.contains("dipc_objects{kind=\"shm\"} 0"), "{body}");

    let (status, body) = http_get(&naddr, "/metrics");
    assert!(status.contains("200"), "{status}\n{}", c.logs());
    let labels = format!("{{key=\"0x7200\",id=\"{msq}\"}}");
    assert!(
        body.contains(&format!("dipc_queue_messages{labels} 2"))
            && body.contains(&format!("dipc_queue_bytes{labels} 8")),
        "{body}"
    );
    assert!(body.contains("dipc_scrape_errors_total 0"), "{body}");
    // A process touching a distributed segment makes the fault counters move.
    let touch = compile_c(
        r#"
        #include <dipc.h>
        #include <stdio.h>
        int main(void) {
            int id = shmget(IPC_PRIVATE, 4 * 4096, IPC_CREAT | IPC_DIPC | 0600);
            if (id < 0) { perror("shmget"); return 1; }
            volatile char *p = shmat(id, 0, 0);
            if (p == (void *)-1) { perror("shmat"); return 1; }
            for (int i = 0; i < 4; i++) p[i * 4096] = (char)i;
            shmdt((const void *)p);
            shmctl(id, IPC_RMID, 0);
            return 0;
        }"#,
        "metrics_touch",
        Link::Sysv,
    )
    .expect("compile");
    let out = c.run_on(0, &touch).output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, body) = http_get(&naddr, "/metrics");
    let faults: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("dipc_node_faults_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no fault counter:\n{body}"));
    assert!(
        faults >= 4,
        "4 first touches, {faults} faults counted:\n{body}"
    );
    for counter in [
        "dipc_node_faults_total",
        "dipc_node_invalidations_total",
        "dipc_node_page_bytes_sent_total",
        "dipc_node_errors_total",
    ] {
        assert!(
            body.contains(&format!("# TYPE {counter} counter")),
            "{counter} missing:\n{body}"
        );
    }
    let (status, _) = http_get(&naddr, "/other");
    assert!(status.contains("404"), "{status}");
}
