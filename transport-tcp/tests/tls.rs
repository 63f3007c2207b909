//! TLS under the handshake, over real sockets on 127.0.0.1, with
//! certificates made by rcgen for each test: RPC round trips, certificates
//! of another CA or for another host refused, and TLS on one side only
//! refused in both directions within the handshake bound.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Handle, Rx, T, lab, pattern, within};
use dipc_transport_tcp::{Auth, Conn, Error, PeerInfo, Role, TlsConfig, rpc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::TcpListener;

/// A test CA: its PEM and what signs with it.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("key");
    let cert = p.self_signed(&key).expect("self-signed");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// A leaf for both directions (server and client auth) naming `sans`,
/// signed by `ca`: (certificate PEM, key PEM).
fn leaf(ca: &Ca, name: &str, sans: &[&str]) -> (String, String) {
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("p");
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, &ca.issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

fn tls(ca: &Ca, cert: &(String, String)) -> Arc<TlsConfig> {
    Arc::new(
        TlsConfig::from_pem(
            ("ca.pem", ca.pem.as_bytes()),
            ("cert.pem", cert.0.as_bytes()),
            ("key.pem", cert.1.as_bytes()),
        )
        .expect("TLS config"),
    )
}

fn with_tls(name: &str, tls: &Arc<TlsConfig>) -> Auth {
    Auth {
        tls: Some(tls.clone()),
        ..lab(name)
    }
}

type Side = Result<(Conn, PeerInfo), Error>;

/// One accept with `server` against one connect with `client`, dialling
/// `127.0.0.1`. Both results, and how long the slower side took.
async fn handshake(server: Auth, client: Auth) -> (Side, Side, Duration) {
    common::init_log();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let start = Instant::now();
    let srv = tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        Conn::accept(s, &server, T).await
    });
    let cli = Conn::connect(&addr.to_string(), &client, Role::Node, T).await;
    let srv = within("server handshake", srv).await.expect("join");
    (srv, cli, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_round_trips_over_tls_both_ways() {
    let ca = ca("lab CA");
    let a = tls(&ca, &leaf(&ca, "referee", &["127.0.0.1"]));
    let b = tls(&ca, &leaf(&ca, "node-b", &["127.0.0.1"]));
    let (srv, cli, _) = handshake(with_tls("referee", &a), with_tls("node-b", &b)).await;
    let (s, s_peer) = srv.expect("server side");
    let (c, c_peer) = cli.expect("client side");
    assert!(s.is_tls() && c.is_tls());
    assert_eq!(s_peer.name, "node-b");
    assert_eq!(c_peer.name, "referee");

    let (ch, _crx): (Handle, Rx) = rpc(c, T);
    let (sh, srx): (Handle, Rx) = rpc(s, T);
    let _notes = common::respond(srx);
    // Payloads from empty to several TLS records (16 KiB each) and beyond
    // the transport's read chunk.
    for (i, len) in [0usize, 1, 4096, 16_385, 300_000, 2 << 20]
        .into_iter()
        .enumerate()
    {
        let payload = pattern(len);
        let (resp, back) = ch
            .call_payload(&common::Req::Echo(i as u64), payload.clone(), T)
            .await
            .unwrap_or_else(|e| panic!("echo of {len} bytes: {e}"));
        assert_eq!(resp, common::Resp::Echo(i as u64 + 1));
        assert_eq!(back, payload, "payload of {len} bytes came back changed");
    }
    // Many calls in flight at once (batched writes under TLS).
    let calls = (0..200u64).map(|n| {
        let ch = ch.clone();
        async move {
            ch.call_payload(&common::Req::Echo(n), pattern(1000), T)
                .await
        }
    });
    for (n, r) in futures_join_all(calls).await.into_iter().enumerate() {
        assert_eq!(r.expect("call").0, common::Resp::Echo(n as u64 + 1));
    }
    // And the other direction: the accepting side calls the dialler.
    let _cnotes = common::respond(_crx);
    let (resp, back) = sh
        .call_payload(&common::Req::Echo(41), Bytes::from_static(b"back"), T)
        .await
        .expect("call from the server side");
    assert_eq!(resp, common::Resp::Echo(42));
    assert_eq!(back, Bytes::from_static(b"back"));
}

/// `join_all` without another dependency: spawn each, await in order.
async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("join"));
    }
    out
}

#[tokio::test]
async fn a_client_certificate_of_another_ca_is_refused() {
    let ca1 = ca("lab CA");
    let ca2 = ca("other CA");
    let server = tls(&ca1, &leaf(&ca1, "referee", &["127.0.0.1"]));
    // The intruder trusts the lab CA (so it accepts the server) but its own
    // certificate comes from another CA.
    let (cert, key) = leaf(&ca2, "intruder", &["127.0.0.1"]);
    let intruder = Arc::new(
        TlsConfig::from_pem(
            ("both.pem", format!("{}{}", ca1.pem, ca2.pem).as_bytes()),
            ("cert.pem", cert.as_bytes()),
            ("key.pem", key.as_bytes()),
        )
        .expect("config"),
    );
    let (srv, cli, took) = handshake(
        with_tls("referee", &server),
        with_tls("intruder", &intruder),
    )
    .await;
    let s_err = srv.expect_err("the server must refuse the intruder");
    let c_err = cli.expect_err("the intruder must not get in");
    assert!(
        s_err.is_refusal() && c_err.is_refusal(),
        "{s_err} / {c_err}"
    );
    assert!(
        s_err
            .to_string()
            .contains("not signed by a CA of our bundle"),
        "{s_err}"
    );
    assert!(
        c_err
            .to_string()
            .contains("does not accept our TLS certificate"),
        "{c_err}"
    );
    assert!(took < T, "refusal took {took:?}");
}

#[tokio::test]
async fn a_server_certificate_of_another_ca_is_refused() {
    let ca1 = ca("lab CA");
    let ca2 = ca("other CA");
    let fake = tls(&ca2, &leaf(&ca2, "fake referee", &["127.0.0.1"]));
    let node = tls(&ca1, &leaf(&ca1, "node-b", &["127.0.0.1"]));
    let (srv, cli, took) = handshake(with_tls("referee", &fake), with_tls("node-b", &node)).await;
    let c_err = cli.expect_err("the node must not trust the fake referee");
    let s_err = srv.expect_err("no handshake");
    assert!(matches!(c_err, Error::AuthFailed { .. }), "{c_err:?}");
    assert!(
        c_err
            .to_string()
            .contains("not signed by a CA of our bundle"),
        "{c_err}"
    );
    assert!(s_err.is_refusal(), "{s_err}");
    assert!(took < T, "refusal took {took:?}");
}

#[tokio::test]
async fn a_server_certificate_for_another_host_is_refused() {
    let ca = ca("lab CA");
    let elsewhere = tls(&ca, &leaf(&ca, "referee", &["10.1.2.3", "referee.example"]));
    let node = tls(&ca, &leaf(&ca, "node-b", &["127.0.0.1"]));
    let (_, cli, _) = handshake(with_tls("referee", &elsewhere), with_tls("node-b", &node)).await;
    let err = cli.expect_err("the name must match the dialled address");
    assert!(matches!(err, Error::AuthFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("does not name 127.0.0.1"), "{err}");
}

#[tokio::test]
async fn a_plaintext_client_of_a_tls_server_is_refused_with_the_reason() {
    let ca = ca("lab CA");
    let server = tls(&ca, &leaf(&ca, "referee", &["127.0.0.1"]));
    let (srv, cli, took) = handshake(with_tls("referee", &server), lab("plain")).await;
    let c_err = cli.expect_err("plaintext must be refused");
    let s_err = srv.expect_err("plaintext must be refused");
    assert!(matches!(c_err, Error::Refused { .. }), "{c_err:?}");
    assert!(c_err.to_string().contains("requires TLS"), "{c_err}");
    assert!(matches!(s_err, Error::AuthFailed { .. }), "{s_err:?}");
    assert!(s_err.to_string().contains("\"plain\""), "{s_err}");
    assert!(took < T, "refusal took {took:?}");
}

#[tokio::test]
async fn a_tls_client_of_a_plaintext_server_is_refused_with_the_reason() {
    let ca = ca("lab CA");
    let client = tls(&ca, &leaf(&ca, "node-b", &["127.0.0.1"]));
    let (srv, cli, took) = handshake(lab("referee"), with_tls("node-b", &client)).await;
    let c_err = cli.expect_err("TLS must be refused");
    let s_err = srv.expect_err("TLS must be refused");
    assert!(matches!(c_err, Error::Refused { .. }), "{c_err:?}");
    assert!(c_err.to_string().contains("does not use TLS"), "{c_err}");
    assert!(matches!(s_err, Error::AuthFailed { .. }), "{s_err:?}");
    assert!(s_err.to_string().contains("speaks TLS"), "{s_err}");
    assert!(took < T, "refusal took {took:?}");
}

#[tokio::test]
async fn a_silent_client_of_a_tls_server_times_out_within_the_bound() {
    let ca = ca("lab CA");
    let server = tls(&ca, &leaf(&ca, "referee", &["127.0.0.1"]));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (s, _) = listener.accept().await.expect("accept");
    let limit = Duration::from_millis(300);
    let start = Instant::now();
    let err = Conn::accept(s, &with_tls("referee", &server), limit)
        .await
        .expect_err("silence");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(start.elapsed() < limit * 5, "{:?}", start.elapsed());
}

#[test]
fn unusable_files_are_clear_errors() {
    let ca1 = ca("lab CA");
    let ca2 = ca("other CA");
    let (cert, key) = leaf(&ca2, "node-b", &["127.0.0.1"]);
    let err = TlsConfig::from_pem(
        ("ca.pem", ca1.pem.as_bytes()),
        ("cert.pem", cert.as_bytes()),
        ("key.pem", key.as_bytes()),
    )
    .expect_err("a certificate of another CA");
    assert!(
        err.to_string()
            .contains("certificate cert.pem does not verify against CA ca.pem"),
        "{err}"
    );
    let err = TlsConfig::from_pem(
        ("ca.pem", ca2.pem.as_bytes()),
        ("cert.pem", cert.as_bytes()),
        ("key.pem", cert.as_bytes()),
    )
    .expect_err("no key");
    assert!(
        err.to_string().contains("no private key in key.pem"),
        "{err}"
    );
    let err = TlsConfig::from_pem(
        ("ca.pem", b"not PEM"),
        ("cert.pem", cert.as_bytes()),
        ("key.pem", key.as_bytes()),
    )
    .expect_err("no CA");
    assert!(err.to_string().contains("ca.pem: no certificate"), "{err}");
    let other_key = KeyPair::generate().expect("key").serialize_pem();
    let err = TlsConfig::from_pem(
        ("ca.pem", ca2.pem.as_bytes()),
        ("cert.pem", cert.as_bytes()),
        ("key.pem", other_key.as_bytes()),
    )
    .expect_err("a key of another certificate");
    assert!(err.to_string().contains("with key key.pem"), "{err}");
    let err = TlsConfig::from_pem_files(
        std::path::Path::new("/nonexistent/ca.pem"),
        std::path::Path::new("/nonexistent/cert.pem"),
        std::path::Path::new("/nonexistent/key.pem"),
    )
    .expect_err("missing files");
    assert!(
        err.to_string().contains("cannot read /nonexistent/ca.pem"),
        "{err}"
    );
}
