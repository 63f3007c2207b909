//! Malformed input on a raw socket: the connection it came on is closed
//! (with a logged reason), and the server keeps serving everyone else.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Req, Resp, T, client, lab, server, within};
use dipc_transport_tcp::{Conn, Error, Head, Role, rpc};
use dipc_wire::MAX_FRAME;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Wait until the other side closes `s` (end of stream or reset).
async fn assert_closed_by_peer(mut s: TcpStream, what: &str) {
    let mut buf = [0u8; 4096];
    within(what, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
}

/// A socket that passed the handshake honestly, ready to misbehave.
async fn authenticated_raw(addr: std::net::SocketAddr) -> TcpStream {
    let (conn, _) = Conn::connect(&addr.to_string(), &lab("mallory"), Role::Node, T)
        .await
        .expect("connect");
    conn.into_parts().0
}

fn le(n: u32) -> [u8; 4] {
    n.to_le_bytes()
}

/// `[total][header_len][header]`, with `header` given raw.
fn frame_with_header(header: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&le(4 + header.len() as u32));
    v.extend_from_slice(&le(header.len() as u32));
    v.extend_from_slice(header);
    v
}

fn head_then(head: Head, body: &[u8]) -> Vec<u8> {
    let mut h = dipc_wire::encode(&head);
    h.extend_from_slice(body);
    frame_with_header(&h)
}

#[tokio::test]
async fn bad_frames_close_only_their_connection() {
    let mut srv = server(lab("referee"), T).await;
    let (good, _good_rx) = client(srv.addr, "good").await;
    let _ = within("accept good", srv.accepted.recv())
        .await
        .expect("accepted");

    let oversized = le((MAX_FRAME + 1) as u32).to_vec();
    let mut header_beyond_frame = le(8).to_vec();
    header_beyond_frame.extend_from_slice(&le(100));
    header_beyond_frame.extend_from_slice(&[0; 4]);
    let total_too_small = [le(2).to_vec(), vec![0; 4]].concat();
    let undecodable_head = frame_with_header(&[0xff; 12]);
    let undecodable_call = head_then(Head::Call(1), &[0xff; 9]);
    let call_with_trailing_bytes = {
        let mut body = dipc_wire::encode(&Req::Echo(1));
        body.push(0);
        head_then(Head::Call(1), &body)
    };
    let undecodable_notify = head_then(Head::Notify, &[0x7f]);
    let undecodable_reply = head_then(Head::Reply(1), &[0xff; 3]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("oversized length", oversized),
        ("header beyond frame", header_beyond_frame),
        ("total below header field", total_too_small),
        ("undecodable head", undecodable_head),
        ("undecodable call body", undecodable_call),
        ("call body with trailing bytes", call_with_trailing_bytes),
        ("undecodable notification", undecodable_notify),
        ("undecodable reply", undecodable_reply),
    ];
    for (what, bytes) in cases {
        let mut raw = authenticated_raw(srv.addr).await;
        let (victim, peer, _) = within("accept", srv.accepted.recv())
            .await
            .expect("accepted");
        assert_eq!(peer.name, "mallory");
        raw.write_all(&bytes).await.expect("write");
        assert_closed_by_peer(raw, what).await;
        within(what, victim.closed()).await;
        // The well-behaved client on the same server is unaffected.
        assert_eq!(good.call(&Req::Echo(1)).await.expect(what), Resp::Echo(2));
    }
    // And newcomers are still served.
    let (late, _late_rx) = client(srv.addr, "late").await;
    assert_eq!(
        late.call(&Req::Echo(10)).await.expect("late call"),
        Resp::Echo(11)
    );
}

#[tokio::test]
async fn truncated_frame_closes_the_connection() {
    let mut srv = server(lab("referee"), T).await;
    let mut raw = authenticated_raw(srv.addr).await;
    let (victim, _, _) = within("accept", srv.accepted.recv())
        .await
        .expect("accepted");
    // Announce 100 bytes, send 10, stop writing.
    let mut bytes = le(100).to_vec();
    bytes.extend_from_slice(&le(2));
    bytes.extend_from_slice(&[1, 2]);
    raw.write_all(&bytes).await.expect("write");
    raw.shutdown().await.expect("shutdown");
    within("truncated frame", victim.closed()).await;
    assert_closed_by_peer(raw, "truncated frame").await;
    let (c, _rx) = client(srv.addr, "after").await;
    assert_eq!(c.call(&Req::Echo(0)).await.expect("call"), Resp::Echo(1));
}

#[tokio::test]
async fn garbage_before_the_handshake_is_dropped() {
    let mut srv = server(lab("referee"), Duration::from_secs(2)).await;
    let garbage: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0xff; 64],
        // A plausible small frame whose header is not a handshake message.
        frame_with_header(&[9, 9, 9]),
        // A handshake-sized length is fine, a large one is refused at once.
        le(1 << 20).to_vec(),
    ];
    for g in garbage {
        let mut raw = TcpStream::connect(srv.addr).await.expect("connect");
        raw.write_all(&g).await.expect("write");
        assert_closed_by_peer(raw, "garbage before handshake").await;
        let err = within("handshake error", srv.failed.recv())
            .await
            .expect("error");
        assert!(
            matches!(err, Error::Frame(_) | Error::Protocol { .. }),
            "{err:?}"
        );
    }
    let (c, _rx) = client(srv.addr, "fine").await;
    assert_eq!(c.call(&Req::Echo(1)).await.expect("call"), Resp::Echo(2));
}

#[tokio::test]
async fn a_bad_frame_from_the_server_fails_the_clients_pending_calls() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let evil = tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        let (conn, _) = Conn::accept(s, &lab("evil"), T).await.expect("handshake");
        let (mut raw, _, _) = conn.into_parts();
        // Wait for the client's call to arrive, then answer with garbage.
        let mut buf = [0u8; 64];
        let _ = raw.read(&mut buf).await;
        raw.write_all(&frame_with_header(&[0xff; 5]))
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let (conn, _) = Conn::connect(&addr.to_string(), &lab("victim"), Role::Node, T)
        .await
        .expect("connect");
    let (h, _rx) = rpc::<Req, Resp, common::Ev>(conn, T);
    let start = std::time::Instant::now();
    let err = h
        .call_payload(&Req::Never, Bytes::new(), Duration::from_secs(30))
        .await
        .expect_err("garbage answer");
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(h.is_closed());
    evil.abort();
}
