//! Messages larger than one frame (`rpc_with`'s limit, cut into parts by
//! the writer and put back together by the reader) over real sockets on
//! 127.0.0.1: they arrive whole and in order with the rest, a message
//! above the limit is refused before sending, a peer sending parts out of
//! order, too large or without their end loses its connection, and a peer
//! that dies in the middle of an answer fails the call instead of
//! delivering part of it.

mod common;

use bytes::Bytes;
use common::{Ev, Handle, Notes, Req, Resp, Rx, T, lab, pattern, respond, within};
use dipc_transport_tcp::chunk::CHUNK;
use dipc_transport_tcp::{Conn, Error, Head, Role, rpc_with};
use dipc_wire::Frame;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The limit of both ends in these tests.
const LIMIT: usize = 48 << 20;

/// A listener whose first connection is authenticated and handed over.
async fn listen() -> (std::net::SocketAddr, oneshot::Receiver<Conn>) {
    common::init_log();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let (conn, _) = Conn::accept(stream, &lab("home"), T)
            .await
            .expect("handshake");
        let _ = tx.send(conn);
    });
    (addr, rx)
}

async fn connect(addr: std::net::SocketAddr) -> Conn {
    let (conn, _) = Conn::connect(&addr.to_string(), &lab("reader"), Role::Node, T)
        .await
        .expect("connect");
    conn
}

/// A client and an echo server, both with `rpc_with(LIMIT)`: the client's
/// handle and receiver, the server's handle and notifications.
async fn pair() -> (Handle, Rx, Handle, Notes) {
    pair_with(LIMIT).await
}

/// [`pair`] with another limit.
async fn pair_with(limit: usize) -> (Handle, Rx, Handle, Notes) {
    let (addr, accepted) = listen().await;
    let (h, rx) = rpc_with(connect(addr).await, T, limit);
    let conn = within("accept", accepted).await.expect("accepted");
    let (sh, srx): (Handle, Rx) = rpc_with(conn, T, limit);
    (h, rx, sh, respond(srx))
}

/// `len` position-dependent bytes (a pattern of a prime period, so a part
/// out of place shows), made quickly even in a debug build.
fn data(len: usize) -> Bytes {
    let block = pattern(1_000_003);
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        let n = (len - v.len()).min(block.len());
        v.extend_from_slice(&block[..n]);
    }
    Bytes::from(v)
}

fn part(total: usize, offset: usize, payload: Bytes) -> Frame {
    Frame::new(
        &Head::Part {
            total: total as u64,
            offset: offset as u64,
        },
        payload,
    )
}

/// The frame of a message: its head, then its body.
fn message<T: serde::Serialize>(head: Head, body: &T, payload: Bytes) -> Frame {
    let mut h = dipc_wire::encode(&head);
    h.extend_from_slice(&dipc_wire::encode(body));
    Frame {
        header: Bytes::from(h),
        payload,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_cross_whole_and_in_order() {
    let (h, rx, sh, mut notes) = pair().await;
    let _client_notes = respond(rx);
    // A call and its answer of 40 MiB each (10 parts each way).
    let big = data(40 << 20);
    let (resp, back) = h
        .call_payload(&Req::Echo(1), big.clone(), T)
        .await
        .expect("large call");
    assert_eq!(resp, Resp::Echo(2));
    assert!(back == big, "a 40 MiB payload came back changed");
    // Small and large notifications keep their order, and payloads of a
    // multiple of the chunk, or one byte over, come back whole.
    let sizes = [3, CHUNK, 17 << 20, 0, CHUNK + 1, 2 * CHUNK, 5];
    for (i, len) in sizes.iter().enumerate() {
        h.notify(&Ev::Seq(i as u32), data(*len)).expect("notify");
    }
    for (i, len) in sizes.iter().enumerate() {
        let (ev, p) = within("notification", notes.recv()).await.expect("open");
        assert_eq!(ev, Ev::Seq(i as u32));
        assert!(p == data(*len), "notification {i} of {len} bytes changed");
    }
    // The other direction too.
    let (resp, back) = sh
        .call_payload(&Req::Echo(7), data(9 << 20), T)
        .await
        .expect("server's call");
    assert_eq!(resp, Resp::Echo(8));
    assert!(back == data(9 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_messages_queued_behind_one_larger_than_the_backlog_bound_go_too() {
    // 72 MiB is above the 64 MiB backlog bound: on a link whose messages
    // may be that large, what is queued behind it is still accepted.
    let big = 72 << 20;
    let (h, _rx, _sh, mut notes) = pair_with(80 << 20).await;
    h.notify(&Ev::Seq(0), Bytes::from(vec![7u8; big]))
        .expect("the large message");
    for i in 1..=100 {
        h.notify(&Ev::Seq(i), pattern(1000))
            .expect("a small message behind the large one");
    }
    let (ev, p) = within("the large message", notes.recv())
        .await
        .expect("open");
    assert_eq!((ev, p.len()), (Ev::Seq(0), big));
    for i in 1..=100 {
        let (ev, _) = within("a small message", notes.recv()).await.expect("open");
        assert_eq!(ev, Ev::Seq(i));
    }
}

#[tokio::test]
async fn a_message_above_the_limit_is_refused_before_sending() {
    let (h, _rx, _sh, _notes) = pair().await;
    let err = h
        .notify(&Ev::Seq(0), Bytes::from(vec![0u8; LIMIT]))
        .expect_err("too large");
    assert!(
        matches!(err, Error::Frame(dipc_wire::FrameError::TooLarge { max, .. }) if max == LIMIT),
        "{err:?}"
    );
    assert_eq!(h.call(&Req::Echo(0)).await.expect("call"), Resp::Echo(1));
}

#[tokio::test]
async fn bad_part_sequences_close_the_connection() {
    let p = |n: usize| pattern(n);
    let total = 3 * 1000;
    let cases: Vec<(&str, Vec<Frame>)> = vec![
        (
            "parts out of order",
            vec![part(total, 0, p(1000)), part(total, 2000, p(1000))],
        ),
        ("a part without the start", vec![part(total, 1000, p(1000))]),
        ("a message above the limit", vec![part(LIMIT + 1, 0, p(10))]),
        (
            "the end missing: another message in the middle",
            vec![
                part(total, 0, p(1000)),
                part(total, 1000, p(1000)),
                message(Head::Notify, &Ev::Seq(1), p(10)),
            ],
        ),
        (
            "parts past the total",
            vec![part(total, 0, p(1000)), part(total, 1000, p(2000))],
        ),
    ];
    for (what, frames) in cases {
        let (addr, accepted) = listen().await;
        let mut raw = connect(addr).await;
        let conn = within("accept", accepted).await.expect("accepted");
        let (victim, vrx): (Handle, Rx) = rpc_with(conn, T, LIMIT);
        let mut notes = respond(vrx);
        for f in &frames {
            raw.send(f).await.expect("send");
        }
        within(what, victim.closed()).await;
        // Nothing was delivered, and our end sees the close.
        assert!(notes.try_recv().is_err(), "{what}: a message was delivered");
        let end = within(what, raw.recv()).await;
        assert!(matches!(end, Ok(None) | Err(_)), "{what}: {end:?}");
    }
}

#[tokio::test]
async fn a_peer_dying_in_the_middle_of_an_answer_fails_the_call() {
    let (addr, accepted) = listen().await;
    let (h, _rx): (Handle, Rx) = rpc_with(connect(addr).await, T, LIMIT);
    let mut raw = within("accept", accepted).await.expect("accepted");
    let call = tokio::spawn(async move { h.call_payload(&Req::Echo(1), Bytes::new(), T).await });
    let frame = within("the call", raw.recv())
        .await
        .expect("read")
        .expect("a frame");
    let (head, _) = postcard::take_from_bytes::<Head>(&frame.header).expect("head");
    assert!(matches!(head, Head::Call(_)), "{head:?}");
    // Two parts of a 3-part answer, then the peer is gone.
    let total = 3 * CHUNK;
    raw.send(&part(total, 0, pattern(CHUNK)))
        .await
        .expect("part");
    raw.send(&part(total, CHUNK, pattern(CHUNK)))
        .await
        .expect("part");
    drop(raw);
    let res = within("the call fails", call).await.expect("joined");
    assert!(matches!(res, Err(Error::Closed { .. })), "{res:?}");
}
