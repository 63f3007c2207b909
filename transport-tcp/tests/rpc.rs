//! RPC over real sockets on 127.0.0.1: calls both ways, ordering, payloads,
//! bounded waits, dead peers, backlog.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Ev, Handle, Notes, Req, Resp, Rx, client, pattern, respond, server, within};
use dipc_transport_tcp::{Conn, Error, Head, Incoming, Role};
use dipc_wire::Frame;

/// A client connected to a fresh echo server; returns the client's handle
/// and receiver and the server's handle and notification stream.
async fn pair() -> (Handle, Rx, Handle, Notes) {
    let mut srv = server(common::lab("referee"), common::T).await;
    let (h, rx) = client(srv.addr, "node-a").await;
    let (sh, peer, notes) = within("accept", srv.accepted.recv())
        .await
        .expect("server accepted");
    assert_eq!(peer.name, "node-a");
    (h, rx, sh, notes)
}

#[tokio::test]
async fn calls_in_both_directions() {
    let (h, rx, sh, _notes) = pair().await;
    let _client_notes = respond(rx);
    assert_eq!(
        h.call(&Req::Echo(1)).await.expect("client call"),
        Resp::Echo(2)
    );
    assert_eq!(
        sh.call(&Req::Echo(41)).await.expect("server call"),
        Resp::Echo(42)
    );
    assert_eq!(h.peer().name, "referee");
    assert_eq!(sh.peer().name, "node-a");
    assert!(!h.is_closed() && !sh.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_notifies_arrive_in_order() {
    let (h, _rx, _sh, mut notes) = pair().await;
    const N: u32 = 10_000;
    for i in 0..N {
        h.notify(&Ev::Seq(i), Bytes::new()).expect("notify");
    }
    for i in 0..N {
        let (ev, payload) = within("notification", notes.recv()).await.expect("open");
        assert_eq!(ev, Ev::Seq(i));
        assert!(payload.is_empty());
    }
}

#[tokio::test]
async fn calls_and_notifies_keep_their_order() {
    // A notify sent before a call is seen by the peer before the call is
    // answered (one FIFO queue per connection).
    let (h, _rx, _sh, mut notes) = pair().await;
    for i in 0..100 {
        h.notify(&Ev::Seq(i), Bytes::new()).expect("notify");
        assert_eq!(
            h.call(&Req::Echo(i.into())).await.expect("call"),
            Resp::Echo(u64::from(i) + 1)
        );
        let (ev, _) = notes
            .try_recv()
            .expect("notify delivered before the call's reply");
        assert_eq!(ev, Ev::Seq(i));
    }
}

#[tokio::test]
async fn payloads_round_trip_intact() {
    let (h, _rx, _sh, mut notes) = pair().await;
    for len in [0, 1, 4096, 1 << 20, 8 << 20] {
        let p = pattern(len);
        let (resp, back) = h
            .call_payload(&Req::Echo(7), p.clone(), common::T)
            .await
            .expect("call");
        assert_eq!(resp, Resp::Echo(8));
        assert_eq!(back.len(), len);
        assert!(back == p, "payload of {len} bytes corrupted");
    }
    let p = pattern(1 << 20);
    h.notify(&Ev::Seq(1), p.clone()).expect("notify");
    let (_, got) = within("notify", notes.recv()).await.expect("open");
    assert!(got == p);
}

#[tokio::test]
async fn oversized_payload_is_refused_before_sending() {
    let (h, _rx, _sh, _notes) = pair().await;
    let big = Bytes::from(vec![0u8; dipc_wire::MAX_FRAME]);
    let err = h.notify(&Ev::Seq(0), big.clone()).expect_err("too large");
    assert!(
        matches!(err, Error::Frame(dipc_wire::FrameError::TooLarge { .. })),
        "{err:?}"
    );
    let err = h
        .call_payload(&Req::Echo(0), big, common::T)
        .await
        .expect_err("too large");
    assert!(matches!(err, Error::Frame(_)), "{err:?}");
    // The connection is unharmed.
    assert_eq!(h.call(&Req::Echo(0)).await.expect("call"), Resp::Echo(1));
}

#[tokio::test]
async fn call_times_out_when_the_peer_never_replies() {
    let (h, _rx, _sh, _notes) = pair().await;
    let start = Instant::now();
    let limit = Duration::from_millis(200);
    let err = h
        .call_payload(&Req::Never, Bytes::new(), limit)
        .await
        .expect_err("no answer");
    assert!(
        matches!(err, Error::Timeout { after, .. } if after == limit),
        "{err:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    // A late reply to a timed-out call is ignored, and the link still works.
    let err = h
        .call_payload(&Req::Slow(300), Bytes::new(), Duration::from_millis(50))
        .await
        .expect_err("too slow");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(h.call(&Req::Echo(5)).await.expect("call"), Resp::Echo(6));
    assert!(!h.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_calls_fail_at_once_when_the_peer_goes() {
    let (h, mut rx, sh, _notes) = pair().await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let h = h.clone();
        calls.spawn(async move {
            h.call_payload(&Req::Never, Bytes::new(), Duration::from_secs(30))
                .await
        });
    }
    // Let the calls reach the server, then the server drops the link.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    sh.close();
    while let Some(r) = within("pending calls", calls.join_next()).await {
        let err = r.expect("join").expect_err("connection gone");
        assert!(matches!(err, Error::Closed { .. }), "{err:?}");
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    within("closed()", h.closed()).await;
    assert!(h.is_closed());
    assert!(within("incoming end", rx.recv()).await.is_none());
    let err = h.call(&Req::Echo(1)).await.expect_err("closed");
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
    let err = h.notify(&Ev::Seq(1), Bytes::new()).expect_err("closed");
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls() {
    let (h, _rx, _sh, _notes) = pair().await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..2000u64 {
        let h = h.clone();
        calls.spawn(async move {
            let payload = Bytes::from(i.to_le_bytes().to_vec());
            let (resp, back) = h
                .call_payload(&Req::Echo(i), payload.clone(), common::T)
                .await
                .expect("call");
            assert_eq!(resp, Resp::Echo(i + 1));
            assert_eq!(back, payload);
        });
    }
    let mut done = 0;
    while let Some(r) = within("calls", calls.join_next()).await {
        r.expect("call task");
        done += 1;
    }
    assert_eq!(done, 2000);
}

#[tokio::test]
async fn dropping_every_handle_closes_the_connection() {
    let (h, rx, sh, mut notes) = pair().await;
    // The last frames queued before the drop still arrive.
    h.notify(&Ev::Seq(9), Bytes::new()).expect("notify");
    drop(h);
    drop(rx);
    let (ev, _) = within("last notify", notes.recv())
        .await
        .expect("delivered");
    assert_eq!(ev, Ev::Seq(9));
    within("server sees the close", sh.closed()).await;
}

#[tokio::test]
async fn the_receiver_alone_keeps_the_connection() {
    // A side that only answers (drops its handle, keeps the receiver)
    // still serves calls.
    let (h, rx, sh, _notes) = pair().await;
    drop(h);
    let _client_notes = respond(rx);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sh.call(&Req::Echo(1)).await.expect("call"), Resp::Echo(2));
}

#[tokio::test]
async fn a_peer_that_stops_reading_gives_backlog_not_unbounded_memory() {
    let mut srv = server(common::lab("referee"), common::T).await;
    // A client that never reads its incoming channel: with the server
    // pushing 64 KiB notifications, its reader stops, TCP fills, and the
    // server's queue reaches its bound.
    let (h, _rx_never_read) = client(srv.addr, "sleepy").await;
    let (sh, _, _) = within("accept", srv.accepted.recv())
        .await
        .expect("accepted");
    let chunk = pattern(64 * 1024);
    let mut result = Ok(());
    for _ in 0..10_000 {
        result = sh.notify(&Ev::Seq(0), chunk.clone());
        if result.is_err() {
            break;
        }
    }
    let err = result.expect_err("the queue must be bounded");
    assert!(matches!(err, Error::Backlog { .. }), "{err:?}");
    assert!(err.to_string().contains("sleepy"), "{err}");
    drop(h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_sends_calls_but_never_reads_the_answers_is_pushed_back() {
    use tokio::io::AsyncWriteExt;
    let mut srv = server(common::lab("referee"), common::T).await;
    let (conn, _) = Conn::connect(
        &srv.addr.to_string(),
        &common::lab("mallory"),
        Role::Node,
        common::T,
    )
    .await
    .expect("handshake");
    let (_sh, _, _) = within("accept", srv.accepted.recv())
        .await
        .expect("accepted");
    let (mut stream, _, _) = conn.into_parts();
    // Echo calls with 64 KiB payloads: each answer is 64 KiB too. 2,000 of
    // them would queue 128 MiB of answers at the server if it kept reading.
    let chunk = pattern(64 * 1024);
    let mut written = 0u64;
    for id in 1..=2000u64 {
        let mut header = dipc_wire::encode(&Head::Call(id));
        header.extend(dipc_wire::encode(&Req::Echo(id)));
        let frame = Frame {
            header: header.into(),
            payload: chunk.clone(),
        };
        let sent =
            tokio::time::timeout(Duration::from_secs(2), stream.write_all(&frame.to_bytes())).await;
        if !matches!(sent, Ok(Ok(()))) {
            break;
        }
        written += 1;
    }
    // The server stopped taking calls once PAUSE_CALLS_BYTES of answers
    // were queued (plus the calls in its channel and the sockets' buffers).
    assert!(
        written < 1000,
        "the server read {written} calls whose 64 KiB answers nobody reads"
    );
}

#[tokio::test]
async fn replies_can_be_sent_from_other_tasks() {
    let (h, _rx, _sh, _notes) = pair().await;
    let start = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let h = h.clone();
        calls.spawn(async move { h.call(&Req::Slow(100)).await });
    }
    while let Some(r) = within("slow calls", calls.join_next()).await {
        assert_eq!(r.expect("join").expect("call"), Resp::Done);
    }
    // Answered concurrently, not one after the other.
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn incoming_calls_carry_their_payload() {
    let (h, mut rx, sh, _notes) = pair().await;
    let call = tokio::spawn(async move {
        sh.call_payload(&Req::Echo(3), pattern(5000), common::T)
            .await
    });
    match within("incoming call", rx.recv()).await.expect("open") {
        Incoming::Call {
            req,
            payload,
            reply,
        } => {
            assert_eq!(req, Req::Echo(3));
            assert!(payload == pattern(5000));
            reply.send(&Resp::Echo(99), Bytes::from_static(b"back"));
        }
        other => panic!("expected a call, got {other:?}"),
    }
    let (resp, back) = call.await.expect("join").expect("call");
    assert_eq!(resp, Resp::Echo(99));
    assert_eq!(&back[..], b"back");
    drop(h);
}

#[test]
fn handles_and_errors_can_cross_tasks() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<
        dipc_transport_tcp::RpcHandle<
            dipc_wire::referee::Request,
            dipc_wire::referee::Response,
            dipc_wire::referee::Event,
        >,
    >();
    send_sync::<Error>();
    send_sync::<dipc_transport_tcp::Conn>();
    fn send<T: Send + 'static>() {}
    send::<Incoming<dipc_wire::referee::Request, dipc_wire::referee::Event>>();
    send::<dipc_transport_tcp::Replier>();
}
