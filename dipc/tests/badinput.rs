//! Bad input to the running daemons, and bad arguments to libsysv.
//!
//! Real referee and node processes (dipc-testkit) are sent, on raw sockets:
//! garbage, an oversized length, a `Hello` of another protocol version, a
//! frame cut short by the end of the connection, and half-open connections
//! (connect and say nothing; send half a frame and stall), on each of the
//! node's local socket, the node's peer port and the referee's port; and,
//! after an honest handshake, garbage where a protocol message belongs.
//! Each time the bad connection must be closed by the daemon, with its
//! reason in the daemon's log, and the daemon must keep serving everyone
//! else: a normal client works right after each case, and while the
//! half-open connections are still open.
//!
//! Then a C program calls libsysv with bad pointers (NULL, and non-NULL
//! unmapped ones in a second run), sizes, ids, flags and commands on
//! distributed and on kernel objects, and must see the same errno as the
//! kernel gives, without crashing itself or the daemon.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dipc_testkit::{Cluster, Link, compile_c};
use dipc_transport_tcp::{Auth, Conn, Role};
use dipc_wire::local::{LocalFrame, Request, Response};
use dipc_wire::{Frame, IPC_CREAT, IPC_NOWAIT, IPC_PRIVATE, MAX_FRAME, errno};
use serde::Serialize;

/// Node bound on remote waits, which also bounds a peer's handshake.
const CALL_TIMEOUT_MS: u64 = 3000;
/// How long a daemon may take to close a bad connection that announced
/// itself as bad (garbage, wrong version, truncation).
const CLOSE_SOON: Duration = Duration::from_secs(5);
/// How long a daemon may take to close a half-open connection: its own
/// handshake or Hello bound (5 s at most here) plus slack for a loaded
/// machine.
const CLOSE_HALF_OPEN: Duration = Duration::from_secs(15);

const BAD_INPUT_C: &str = include_str!("c/bad_args.c");

fn cluster(nodes: usize) -> Cluster {
    match Cluster::builder()
        .bin(env!("CARGO_BIN_EXE_dipc"))
        .nodes(nodes)
        .node_arg("--call-timeout-ms")
        .node_arg(CALL_TIMEOUT_MS.to_string())
        .start()
    {
        Ok(c) => c,
        Err(e) => panic!("cluster of {nodes} nodes did not start: {e:#}"),
    }
}

fn le(n: u32) -> [u8; 4] {
    n.to_le_bytes()
}

/// `[total][header_len][header]`.
fn raw_frame(header: &[u8]) -> Vec<u8> {
    [
        &le(4 + header.len() as u32)[..],
        &le(header.len() as u32),
        header,
    ]
    .concat()
}

/// A prefix announcing a frame far beyond any limit.
fn oversized() -> Vec<u8> {
    [le((MAX_FRAME * 2) as u32), le(0)].concat()
}

/// Wait until the peer closes `s` (end of stream or reset), discarding
/// whatever it sends first; panics after `within`.
fn assert_closed<S: Read>(s: &mut S, set_timeout: impl Fn(Duration), within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("{what}: the daemon did not close the connection within {within:?}");
        }
        set_timeout(left);
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("{what}: the daemon did not close the connection within {within:?}")
            }
            // Reset by the daemon: closed too.
            Err(_) => return,
        }
    }
}

fn unix_closed(s: &mut UnixStream, within: Duration, what: &str) {
    let t = s.try_clone().expect("clone unix stream");
    assert_closed(s, |d| drop(t.set_read_timeout(Some(d))), within, what);
}

fn tcp_closed(s: &mut TcpStream, within: Duration, what: &str) {
    let t = s.try_clone().expect("clone tcp stream");
    assert_closed(s, |d| drop(t.set_read_timeout(Some(d))), within, what);
}

/// Wait until `log()` contains `needle`.
fn assert_logged(log: impl Fn() -> String, needle: &str, what: &str) {
    let deadline = Instant::now() + CLOSE_SOON;
    while Instant::now() < deadline {
        if log().contains(needle) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: no {needle:?} in the log:\n{}", log());
}

/// A normal local client on node `i` creates a private segment.
fn local_client_works(c: &Cluster, i: usize, what: &str) {
    let mut client = c
        .local_client(i)
        .unwrap_or_else(|e| panic!("after {what}: a normal client cannot connect: {e:#}"));
    match client.shm_get(IPC_PRIVATE, 4096, IPC_CREAT | 0o600) {
        Ok(Response::Id(id)) => assert!(dipc_wire::is_dipc_id(id), "{id}"),
        other => panic!(
            "after {what}: a normal client's shmget failed: {other:?}\n{}",
            c.logs()
        ),
    }
}

/// What a local connection sends before the daemon must close it, and
/// the reason the daemon must log.
fn local_cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let hello = Frame::msg(&Request::Hello {
        version: dipc_wire::local::VERSION,
    })
    .to_bytes();
    vec![
        ("garbage", vec![0xff; 64], "exceeds the limit"),
        ("oversized length", oversized(), "exceeds the limit"),
        (
            "another protocol version",
            Frame::msg(&Request::Hello { version: 99 }).to_bytes(),
            "speaks protocol 99",
        ),
        (
            "a request before Hello",
            Frame::msg(&Request::IpcLimits).to_bytes(),
            "did not say Hello first",
        ),
        (
            "an undecodable first message",
            raw_frame(&[0xff; 7]),
            "malformed local request",
        ),
        (
            "a header longer than its frame",
            [le(8), le(100), le(0)].concat(),
            "header length 100 exceeds",
        ),
        (
            "an undecodable request after Hello",
            [hello.clone(), raw_frame(&[0x7f, 1, 2])].concat(),
            "malformed local request",
        ),
    ]
}

#[test]
fn local_socket_closes_bad_connections_and_serves_everyone_else() {
    let c = cluster(1);
    let socket = c.node_socket(0);
    for (what, bytes, reason) in local_cases() {
        let mut s = UnixStream::connect(&socket).expect("connect to the local socket");
        s.write_all(&bytes).expect("send");
        unix_closed(&mut s, CLOSE_SOON, what);
        assert_logged(|| c.node_log(0), reason, what);
        local_client_works(&c, 0, what);
    }

    // A Hello of another version is answered EPROTO before the close.
    let mut s = UnixStream::connect(&socket).expect("connect");
    s.write_all(&Frame::msg(&Request::Hello { version: 99 }).to_bytes())
        .expect("send");
    s.set_read_timeout(Some(CLOSE_SOON)).expect("timeout");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let frame = Frame::from_slice(&answer, MAX_FRAME).expect("one answer frame");
    assert_eq!(frame.decode::<Response>(), Ok(Response::Err(errno::EPROTO)));

    // A frame cut short by the end of the connection.
    let hello = Frame::msg(&Request::Hello {
        version: dipc_wire::local::VERSION,
    })
    .to_bytes();
    let mut s = UnixStream::connect(&socket).expect("connect");
    s.write_all(&hello[..hello.len() / 2]).expect("send");
    s.shutdown(Shutdown::Write).expect("shutdown");
    unix_closed(&mut s, CLOSE_SOON, "truncated frame");
    assert_logged(|| c.node_log(0), "truncated frame", "truncated frame");
    local_client_works(&c, 0, "a truncated frame");
}

#[test]
fn local_socket_half_open_connections_are_closed_and_block_nobody() {
    let c = cluster(1);
    let socket = c.node_socket(0);
    let hello = Frame::msg(&Request::Hello {
        version: dipc_wire::local::VERSION,
    })
    .to_bytes();
    let request = Frame::msg(&Request::IpcLimits).to_bytes();

    // Silent; half a Hello; a good Hello then half a request.
    let mut silent = UnixStream::connect(&socket).expect("connect");
    let mut half_hello = UnixStream::connect(&socket).expect("connect");
    half_hello.write_all(&hello[..5]).expect("send");
    let mut half_request = UnixStream::connect(&socket).expect("connect");
    half_request.write_all(&hello).expect("send");
    half_request.write_all(&request[..6]).expect("send");

    // While they stall, others are served at once.
    let t0 = Instant::now();
    local_client_works(&c, 0, "three stalled connections");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "a normal client waited {:?} behind stalled connections",
        t0.elapsed()
    );

    unix_closed(&mut silent, CLOSE_HALF_OPEN, "a silent connection");
    unix_closed(&mut half_hello, CLOSE_HALF_OPEN, "half a Hello");
    unix_closed(&mut half_request, CLOSE_HALF_OPEN, "half a request");
    let log = c.node_log(0);
    assert!(log.contains("sent no Hello within"), "{log}");
    assert_eq!(
        log.matches("in the middle of a frame").count(),
        2,
        "both stalled frames must be named:\n{log}"
    );
    local_client_works(&c, 0, "the stalled connections were closed");
}

/// The handshake's first message, as `dipc_transport_tcp::auth` encodes it
/// (its type is private; postcard is positional, so a mirror encodes the
/// same bytes).
#[derive(Serialize)]
enum Hs {
    Hello {
        version: u32,
        cluster: String,
        name: String,
        role: Role,
        nonce: [u8; 32],
    },
}

fn hello_of_version(version: u32, cluster: &str) -> Vec<u8> {
    Frame::msg(&Hs::Hello {
        version,
        cluster: cluster.to_string(),
        name: "mallory".into(),
        role: Role::Node,
        nonce: [7; 32],
    })
    .to_bytes()
}

/// What a TCP connection sends before the daemon must close it, and the
/// reason the daemon must log.
fn tcp_cases(cluster: &str) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let good_hello = hello_of_version(dipc_transport_tcp::PROTOCOL_VERSION, cluster);
    vec![
        ("garbage", vec![0xff; 64], "exceeds the limit"),
        ("oversized length", oversized(), "exceeds the limit"),
        (
            "another protocol version",
            hello_of_version(99, cluster),
            "protocol version 99 is not supported",
        ),
        (
            "another cluster",
            hello_of_version(dipc_transport_tcp::PROTOCOL_VERSION, "elsewhere"),
            "wrong cluster \"elsewhere\"",
        ),
        (
            "an undecodable handshake",
            raw_frame(&[0xff; 9]),
            "bad handshake message",
        ),
        (
            "a truncated frame",
            good_hello[..good_hello.len() / 2].to_vec(),
            "in the middle of a frame",
        ),
    ]
}

fn auth(c: &Cluster) -> Auth {
    let secret = std::fs::read(c.secret_file()).expect("read the cluster secret");
    Auth {
        cluster: c.cluster_name().to_string(),
        secret: Arc::from(secret),
        name: "badinput-test".into(),
        tls: None,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// An honest handshake with the daemon at `addr` succeeds (bounded).
fn handshake_works(rt: &tokio::runtime::Runtime, c: &Cluster, addr: &str, what: &str) {
    let r = rt.block_on(Conn::connect(
        addr,
        &auth(c),
        Role::Node,
        Duration::from_secs(5),
    ));
    if let Err(e) = r {
        panic!(
            "after {what}: an honest handshake with {addr} failed: {e}\n{}",
            c.logs()
        );
    }
}

/// A blocking socket to `addr` that passed an honest handshake, ready to
/// misbehave.
fn authenticated(rt: &tokio::runtime::Runtime, c: &Cluster, addr: &str) -> TcpStream {
    let (conn, _) = rt
        .block_on(Conn::connect(
            addr,
            &auth(c),
            Role::Node,
            Duration::from_secs(5),
        ))
        .expect("honest handshake");
    let (stream, _, _) = conn.into_parts();
    let std = stream.into_std().expect("std stream");
    std.set_nonblocking(false).expect("blocking");
    std
}

/// Every bad TCP case against `addr`; `log` reads the daemon's log and
/// `normal` checks that the daemon still serves a normal client.
fn tcp_bad_input(
    c: &Cluster,
    addr: &str,
    log: &dyn Fn() -> String,
    normal: &dyn Fn(&str),
    after_auth_reason: &str,
) {
    let rt = runtime();
    for (what, bytes, reason) in tcp_cases(c.cluster_name()) {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(&bytes).expect("send");
        if what == "a truncated frame" {
            s.shutdown(Shutdown::Write).expect("shutdown");
        }
        tcp_closed(&mut s, CLOSE_SOON, what);
        assert_logged(log, reason, what);
        handshake_works(&rt, c, addr, what);
        normal(what);
    }
    // After an honest handshake: garbage, an oversized length, an
    // undecodable envelope.
    for (what, bytes) in [
        ("garbage after the handshake", vec![0xff; 64]),
        ("an oversized length after the handshake", oversized()),
        ("an undecodable envelope", raw_frame(&[0xff; 9])),
    ] {
        let mut s = authenticated(&rt, c, addr);
        s.write_all(&bytes).expect("send");
        tcp_closed(&mut s, CLOSE_SOON, what);
        assert_logged(log, after_auth_reason, what);
        normal(what);
    }
}

/// Silent and half-frame connections to `addr` are closed after the
/// handshake bound, and block nobody meanwhile.
fn tcp_half_open(c: &Cluster, addr: &str, log: &dyn Fn() -> String, normal: &dyn Fn(&str)) {
    let rt = runtime();
    let hello = hello_of_version(dipc_transport_tcp::PROTOCOL_VERSION, c.cluster_name());
    let mut silent = TcpStream::connect(addr).expect("connect");
    let mut half = TcpStream::connect(addr).expect("connect");
    half.write_all(&hello[..10]).expect("send");
    let t0 = Instant::now();
    handshake_works(&rt, c, addr, "two stalled connections");
    normal("two stalled connections");
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "normal clients waited {:?} behind stalled connections",
        t0.elapsed()
    );
    tcp_closed(&mut silent, CLOSE_HALF_OPEN, "a silent connection");
    tcp_closed(&mut half, CLOSE_HALF_OPEN, "half a Hello");
    assert_logged(log, "timed out", "stalled handshakes");
    normal("the stalled connections were closed");
}

#[test]
fn peer_port_closes_bad_connections_and_serves_everyone_else() {
    let c = cluster(2);
    let addr = c.node_addr(0);
    let log = || c.node_log(0);
    let normal = |what: &str| cross_node_message_works(&c, what);
    normal("nothing");
    // After the handshake a peer link first agrees on its transport; bad
    // input there ends the link with this reason.
    tcp_bad_input(&c, &addr, &log, &normal, "peer link from");
    assert_logged(log, "refused peer connection from", "bad handshakes");
    tcp_half_open(&c, &addr, &log, &normal);
}

/// Read one frame from a blocking socket.
fn read_frame(s: &mut TcpStream) -> Frame {
    let mut prefix = [0u8; 4];
    s.read_exact(&mut prefix).expect("frame length");
    let total = u32::from_le_bytes(prefix) as usize;
    let mut buf = vec![0u8; 4 + total];
    buf[..4].copy_from_slice(&prefix);
    s.read_exact(&mut buf[4..]).expect("frame");
    Frame::from_slice(&buf, MAX_FRAME).expect("a frame")
}

/// What a node opens for one of its processes: an authenticated
/// connection to node 0 that asked to be a direct connection.
fn direct_conn(rt: &tokio::runtime::Runtime, c: &Cluster) -> TcpStream {
    use dipc_node::direct::DirectHello;
    use dipc_node::peer::LinkSetup;
    let mut s = authenticated(rt, c, &c.node_addr(0));
    s.set_read_timeout(Some(CLOSE_SOON)).expect("timeout");
    let hello = DirectHello {
        node: 77,
        pid: 4242,
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
    };
    s.write_all(&Frame::msg(&LinkSetup::Direct(hello)).to_bytes())
        .expect("send the setup");
    let answer = read_frame(&mut s).decode::<LinkSetup>();
    assert!(
        matches!(answer, Ok(LinkSetup::Accept { .. })),
        "{answer:?}\n{}",
        c.logs()
    );
    s
}

/// A direct connection (see the node's `direct` module) carries queue and
/// semaphore operations and nothing else: an operation is answered as at
/// the home; a `Hello`, a request that is not an operation, an oversized
/// length or garbage closes it with a logged reason, and the daemon goes
/// on serving everyone else.
#[test]
fn direct_connections_serve_operations_and_close_on_anything_else() {
    let c = cluster(2);
    let rt = runtime();
    let mut home = c.local_client(0).expect("client on node 0");
    let id = private_queue(&c, &mut home, "nothing");
    let mut s = direct_conn(&rt, &c);
    let send = Request::MsgSnd {
        id,
        mtype: 7,
        text: b"direct"[..].into(),
        flags: IPC_NOWAIT,
    };
    s.write_all(&send.frame().to_bytes()).expect("send");
    let answer = Response::from_frame(&read_frame(&mut s));
    assert_eq!(answer.ok(), Some(Response::Ok), "{}", c.logs());
    let got = home.call(&Request::MsgRcv {
        id,
        maxsize: 64,
        msgtyp: 0,
        flags: IPC_NOWAIT,
    });
    assert!(
        matches!(&got, Ok(Response::Msg { mtype: 7, text }) if text[..] == b"direct"[..]),
        "{got:?}"
    );
    let log = || c.node_log(0);
    for (what, bytes, reason) in [
        (
            "a Hello",
            Frame::msg(&Request::Hello {
                version: dipc_wire::local::VERSION,
            })
            .to_bytes(),
            format!(
                "Hello {{ version: {} }} on a direct connection",
                dipc_wire::local::VERSION
            ),
        ),
        (
            "a request that is not an operation",
            Frame::msg(&Request::ShmAt {
                id,
                readonly: false,
            })
            .to_bytes(),
            "ShmAt { id: ".into(),
        ),
        (
            "an undecodable request",
            raw_frame(&[0xff; 9]),
            "malformed request on a direct connection".into(),
        ),
        (
            "a payload after an operation without text",
            Frame::new(
                &Request::MsgRcv {
                    id,
                    maxsize: 64,
                    msgtyp: 0,
                    flags: IPC_NOWAIT,
                },
                b"stray"[..].into(),
            )
            .to_bytes(),
            "bytes of payload after a message that has none".into(),
        ),
        (
            "an oversized length",
            oversized(),
            "bad input on a direct connection".into(),
        ),
    ] {
        let mut s = direct_conn(&rt, &c);
        s.write_all(&bytes).expect("send");
        tcp_closed(&mut s, CLOSE_SOON, what);
        assert_logged(log, &reason, what);
        cross_node_message_works(&c, what);
    }
}

#[test]
fn referee_port_closes_bad_connections_and_serves_everyone_else() {
    let c = cluster(1);
    let addr = c.referee_addr();
    let log = || c.referee_log();
    let normal = |what: &str| {
        let st = c
            .status()
            .unwrap_or_else(|e| panic!("after {what}: dipc status failed: {e:#}"));
        assert!(
            st.members.iter().any(|m| m.up),
            "after {what}: no member up: {st:?}"
        );
        local_client_works(&c, 0, what);
    };
    tcp_bad_input(&c, &addr, &log, &normal, "dropping connection");
    tcp_half_open(&c, &addr, &log, &normal);
}

/// A new private queue made by `client`.
fn private_queue(c: &Cluster, client: &mut dipc_testkit::LocalClient, what: &str) -> i32 {
    match client.call(&Request::MsgGet {
        key: IPC_PRIVATE,
        flags: IPC_CREAT | 0o600,
    }) {
        Ok(Response::Id(id)) => id,
        r => panic!("after {what}: msgget: {r:?}\n{}", c.logs()),
    }
}

/// A message sent on node 1 to a queue whose home is node 0 is received
/// on node 0: the peer link between them works.
fn cross_node_message_works(c: &Cluster, what: &str) {
    let mut home = c.local_client(0).expect("client on node 0");
    let mut other = c.local_client(1).expect("client on node 1");
    let id = private_queue(c, &mut home, what);
    let sent = other.call(&Request::MsgSnd {
        id,
        mtype: 1,
        text: what.as_bytes().to_vec().into(),
        flags: IPC_NOWAIT,
    });
    assert!(
        matches!(sent, Ok(Response::Ok)),
        "after {what}: msgsnd from node 1 to node 0's queue: {sent:?}\n{}",
        c.logs()
    );
    let got = home.call(&Request::MsgRcv {
        id,
        maxsize: 1024,
        msgtyp: 0,
        flags: IPC_NOWAIT,
    });
    match got {
        Ok(Response::Msg { mtype: 1, text }) => assert_eq!(text, what.as_bytes()),
        r => panic!("after {what}: msgrcv on node 0: {r:?}\n{}", c.logs()),
    }
    let _ = home.call(&Request::MsgCtl {
        id,
        cmd: dipc_wire::local::MsgCtlCmd::Rmid,
    });
}

fn run_bad_args(bad_pointers: bool) {
    let c = cluster(1);
    let prog = match compile_c(BAD_INPUT_C, "bad_args", Link::Sysv) {
        Ok(p) => p,
        Err(e) => panic!("{e:#}"),
    };
    let mut cmd = c.run_on(0, &prog);
    if bad_pointers {
        cmd.env("BAD_POINTERS", "1");
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running bad_args: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bad_args failed ({}):\n{stdout}\n{stderr}\n{}",
        out.status,
        c.logs()
    );
    assert!(stdout.contains(", 0 mismatches"), "{stdout}");
    local_client_works(&c, 0, "libsysv's bad calls");
    assert!(Path::new(&c.node_socket(0)).exists(), "the node is gone");
}

/// libsysv given NULL pointers, bad sizes, ids, flags and commands: the
/// same errno as the kernel on the same call, the program survives, and so
/// does the daemon.
#[test]
fn libsysv_bad_arguments_get_the_kernels_errno() {
    run_bad_args(false);
}

/// Non-NULL pointers to memory the process cannot read or write
/// (`shmctl(IPC_STAT, (void *)8)`, `msgctl`, `semctl(GETALL)`): the
/// kernel answers `EFAULT`, and so must libsysv (it used to write through
/// the pointer and die of `SIGSEGV`). Each call runs in a child process, so
/// a crash is reported as a mismatch.
#[test]
fn libsysv_bad_non_null_pointers_get_efault() {
    run_bad_args(true);
}
