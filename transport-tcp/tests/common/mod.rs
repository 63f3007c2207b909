//! Helpers shared by the integration tests: auth values, a server that
//! accepts any number of connections, message types, an echo responder.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dipc_transport_tcp::{Auth, Conn, Error, Incoming, PeerInfo, Role, RpcHandle, rpc};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub const T: Duration = Duration::from_secs(5);

pub fn auth(cluster: &str, secret: &[u8], name: &str) -> Auth {
    Auth {
        cluster: cluster.into(),
        secret: Arc::from(secret),
        name: name.into(),
        tls: None,
    }
}

pub fn lab(name: &str) -> Auth {
    auth("lab", b"s3cret", name)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Req {
    /// Answer `Resp::Echo(n + 1)` with the same payload.
    Echo(u64),
    /// Answer after this many milliseconds.
    Slow(u64),
    /// Never answered.
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resp {
    Echo(u64),
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ev {
    Seq(u32),
}

pub type Handle = RpcHandle<Req, Resp, Ev>;
pub type Rx = mpsc::Receiver<Incoming<Req, Ev>>;
/// Notifications (with payloads) an echo responder received.
pub type Notes = mpsc::UnboundedReceiver<(Ev, Bytes)>;
/// An accepted connection: its handle, peer and notifications.
pub type Accepted = (Handle, PeerInfo, Notes);

/// Answer calls on `rx` until it closes; notifications are forwarded to
/// the returned channel. Replies to `Never` are withheld (the repliers are
/// kept until the connection closes, so the caller must time out).
pub fn respond(mut rx: Rx) -> Notes {
    let (tx, out) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut withheld = Vec::new();
        while let Some(msg) = rx.recv().await {
            match msg {
                Incoming::Call {
                    req,
                    payload,
                    reply,
                } => match req {
                    Req::Echo(n) => reply.send(&Resp::Echo(n + 1), payload),
                    Req::Slow(ms) => {
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            reply.send(&Resp::Done, Bytes::new());
                        });
                    }
                    Req::Never => withheld.push(reply),
                },
                Incoming::Notify { ev, payload } => {
                    let _ = tx.send((ev, payload));
                }
            }
        }
    });
    out
}

/// A server accepting any number of connections; each authenticated one
/// runs the echo responder. Handles of the accepted connections are
/// returned through the channel (with the notifications they receive).
pub struct Server {
    pub addr: SocketAddr,
    pub accepted: mpsc::UnboundedReceiver<Accepted>,
    pub failed: mpsc::UnboundedReceiver<Error>,
}

/// Show the crate's logs in test output (`RUST_LOG` overrides `warn`).
pub fn init_log() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

pub async fn server(auth: Auth, handshake_timeout: Duration) -> Server {
    init_log();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (acc_tx, accepted) = mpsc::unbounded_channel();
    let (fail_tx, failed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let auth = auth.clone();
            let acc_tx = acc_tx.clone();
            let fail_tx = fail_tx.clone();
            tokio::spawn(async move {
                match Conn::accept(stream, &auth, handshake_timeout).await {
                    Ok((conn, peer)) => {
                        let (h, rx): (Handle, Rx) = rpc(conn, T);
                        let notes = respond(rx);
                        let _ = acc_tx.send((h, peer, notes));
                    }
                    Err(e) => {
                        let _ = fail_tx.send(e);
                    }
                }
            });
        }
    });
    Server {
        addr,
        accepted,
        failed,
    }
}

/// Connect an RPC client to `addr` with the lab credentials.
pub async fn client(addr: SocketAddr, name: &str) -> (Handle, Rx) {
    let (conn, _) = Conn::connect(&addr.to_string(), &lab(name), Role::Node, T)
        .await
        .expect("connect");
    rpc(conn, T)
}

/// Wait for `fut` at most `T`, failing the test otherwise.
pub async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(T, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {T:?}"),
    }
}

/// A payload whose bytes depend on their position (so reordering or
/// truncation shows).
pub fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}
