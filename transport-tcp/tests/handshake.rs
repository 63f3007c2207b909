//! The authentication handshake over real sockets on 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{T, auth, lab, within};
use dipc_transport_tcp::{Auth, Conn, Error, PeerInfo, Role};
use dipc_wire::Frame;
use tokio::net::{TcpListener, TcpStream};

type Side = Result<(Conn, PeerInfo), Error>;

/// Run one server-side handshake with `server_auth` against one client
/// connect with `client_auth`; return both results and the server address.
async fn handshake(server_auth: Auth, client_auth: Auth) -> (Side, Side, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        Conn::accept(s, &server_auth, T).await
    });
    let client = Conn::connect(&addr.to_string(), &client_auth, Role::Client, T).await;
    let server = within("server handshake", server).await.expect("join");
    (server, client, addr)
}

#[tokio::test]
async fn handshake_ok_and_frames_flow_both_ways() {
    let (server, client, addr) = handshake(lab("referee"), lab("cli")).await;
    let (mut s, s_peer) = server.expect("server side");
    let (mut c, c_peer) = client.expect("client side");
    assert_eq!(s_peer.name, "cli");
    assert_eq!(s_peer.role, Role::Client);
    assert_eq!(c_peer.name, "referee");
    assert_eq!(c_peer.addr, addr);
    assert_eq!(c.peer().name, "referee");
    assert_eq!(s.peer().name, "cli");

    let f = Frame {
        header: Bytes::from_static(b"hello"),
        payload: common::pattern(10_000),
    };
    c.send(&f).await.expect("client send");
    assert_eq!(s.recv().await.expect("server recv"), Some(f.clone()));
    s.send(&f).await.expect("server send");
    assert_eq!(c.recv().await.expect("client recv"), Some(f));
    drop(s);
    assert_eq!(c.recv().await.expect("clean close"), None);
}

#[tokio::test]
async fn wrong_secret_is_refused_on_both_sides() {
    let (server, client, addr) =
        handshake(lab("referee"), auth("lab", b"not the secret", "node-b")).await;
    let s_err = server.expect_err("server must not accept");
    let c_err = client.expect_err("client must not connect");
    // The client checks the server's proof first, so it is the one that
    // detects the mismatch and refuses; the server learns why.
    assert!(matches!(c_err, Error::AuthFailed { .. }), "{c_err:?}");
    assert!(matches!(s_err, Error::Refused { .. }), "{s_err:?}");
    assert!(c_err.is_refusal() && s_err.is_refusal());
    let (c_msg, s_msg) = (c_err.to_string(), s_err.to_string());
    assert!(c_msg.contains("wrong cluster secret"), "{c_msg}");
    assert!(c_msg.contains(&addr.to_string()), "{c_msg}");
    assert!(s_msg.contains("wrong cluster secret"), "{s_msg}");
    assert!(s_msg.contains("node-b"), "{s_msg}");
}

#[tokio::test]
async fn server_without_the_secret_is_refused_by_the_client() {
    // An impostor server of the right cluster name that does not know the
    // secret: the client must not send its proof, and must fail.
    let (server, client, _) = handshake(auth("lab", b"guess", "impostor"), lab("node-a")).await;
    let c_err = client.expect_err("client must refuse the impostor");
    assert!(matches!(c_err, Error::AuthFailed { .. }), "{c_err:?}");
    assert!(c_err.to_string().contains("\"impostor\""), "{c_err}");
    assert!(server.is_err());
}

#[tokio::test]
async fn wrong_cluster_is_refused() {
    let (server, client, addr) = handshake(lab("referee"), auth("x", b"s3cret", "node-c")).await;
    let c_err = client.expect_err("client of another cluster");
    let s_err = server.expect_err("server must refuse");
    assert!(matches!(c_err, Error::Refused { .. }), "{c_err:?}");
    assert!(matches!(s_err, Error::AuthFailed { .. }), "{s_err:?}");
    assert_eq!(
        c_err.to_string(),
        format!("{addr} refused the connection: wrong cluster \"x\" (\"referee\" serves \"lab\")")
    );
    assert!(s_err.to_string().contains("wrong cluster \"x\""), "{s_err}");
}

#[tokio::test]
async fn handshake_times_out_against_a_silent_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Accept and hold the socket without a word.
    let holder = tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(s);
    });
    let start = Instant::now();
    let limit = Duration::from_millis(300);
    let err = Conn::connect(&addr.to_string(), &lab("a"), Role::Node, limit)
        .await
        .expect_err("silent server");
    assert!(
        matches!(err, Error::Timeout { after, .. } if after == limit),
        "{err:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    holder.abort();
}

#[tokio::test]
async fn handshake_times_out_against_a_silent_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _silent = TcpStream::connect(addr).await.expect("connect");
    let (s, _) = listener.accept().await.expect("accept");
    let start = Instant::now();
    let limit = Duration::from_millis(300);
    let err = Conn::accept(s, &lab("referee"), limit)
        .await
        .expect_err("silent client");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn connect_to_a_closed_port_fails_fast() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let err = Conn::connect(&addr.to_string(), &lab("a"), Role::Node, T)
        .await
        .expect_err("nobody listens");
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    assert!(!err.is_refusal());
}

#[tokio::test]
async fn connect_with_backoff_retries_until_the_server_answers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        // Hang up on the first two connections, then serve.
        for _ in 0..2 {
            let (s, _) = listener.accept().await.expect("accept");
            drop(s);
        }
        let (s, _) = listener.accept().await.expect("accept");
        Conn::accept(s, &lab("referee"), T).await
    });
    let mut backoff =
        dipc_transport_tcp::Backoff::new(Duration::from_millis(10), Duration::from_millis(40));
    let (_conn, peer) = Conn::connect_with_backoff(
        &addr.to_string(),
        &lab("node-a"),
        Role::Node,
        T,
        &mut backoff,
        Duration::from_secs(5),
    )
    .await
    .expect("third attempt succeeds");
    assert_eq!(peer.name, "referee");
    within("server", server)
        .await
        .expect("join")
        .expect("server side");
}

#[tokio::test]
async fn connect_with_backoff_stops_at_a_refusal_and_at_its_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        let _ = Conn::accept(s, &lab("referee"), T).await;
        // Any further attempt would wait here forever.
        let _ = listener.accept().await;
    });
    let mut backoff =
        dipc_transport_tcp::Backoff::new(Duration::from_millis(10), Duration::from_millis(10));
    let err = Conn::connect_with_backoff(
        &addr.to_string(),
        &auth("other", b"s3cret", "n"),
        Role::Node,
        T,
        &mut backoff,
        Duration::from_secs(30),
    )
    .await
    .expect_err("refused");
    assert!(matches!(err, Error::Refused { .. }), "{err:?}");
    server.abort();

    // Nobody listens: give up after about `give_up_after`.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    };
    let start = Instant::now();
    let err = Conn::connect_with_backoff(
        &closed.to_string(),
        &lab("n"),
        Role::Node,
        T,
        &mut backoff,
        Duration::from_millis(300),
    )
    .await
    .expect_err("nobody listens");
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
}
