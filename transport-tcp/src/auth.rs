//! The authentication handshake: mutual challenge-response over the cluster
//! secret.
//!
//! ```text
//! client                                         server
//!   Hello { version, cluster, name, role, cn } ->
//!                         wrong version/cluster: <- Refuse { reason }, close
//!          <- Challenge { name, sn, HMAC(secret, "dipc-server" | cn | sn | cluster) }
//!   (client checks the server's proof first: a server without the secret
//!    learns nothing and is refused)
//!   Proof { HMAC(secret, "dipc-client" | sn | cn | cluster) } ->
//!                                    <- Welcome, or Refuse { reason }, close
//! ```
//!
//! `cn` and `sn` are 32 fresh random bytes from each side, so a recorded
//! handshake cannot be replayed, and the two proofs use different labels and
//! nonce orders, so one side's proof is never valid as the other's. The
//! secret never crosses the wire; proofs are compared in constant time
//! (`Mac::verify_slice`). Handshake frames are limited to
//! [`HANDSHAKE_MAX`] bytes, so an unauthenticated peer cannot make us
//! allocate much. Nothing after the handshake is encrypted or signed: this
//! keeps out members of other clusters and misconfigured nodes, not an
//! attacker who can rewrite packets on the cluster network, unless the
//! connection runs under TLS ([`crate::tls`]), which then carries this
//! handshake and everything after it.
//!
//! Every refusal is logged (`warn!`) with the peer's address and reason on
//! the side that refuses and on the side that is refused.

use std::sync::Arc;

use dipc_wire::Frame;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tracing::warn;

use crate::Error;
use crate::conn::{Conn, PeerInfo, Role};

/// Version of the handshake and RPC envelope; peers with another one are
/// refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest handshake frame accepted.
pub const HANDSHAKE_MAX: usize = 4096;

const NONCE: usize = 32;

/// Who we are and the cluster we belong to.
#[derive(Clone)]
pub struct Auth {
    /// The cluster's name; peers of another cluster are refused.
    pub cluster: String,
    /// The cluster secret shared by all members (never sent).
    pub secret: Arc<[u8]>,
    /// Our name, as the peer will see it (a node's name, "referee", ...).
    pub name: String,
    /// TLS under the handshake ([`crate::tls`]); `None`: plain TCP. Both
    /// sides of a connection must agree (the other way is refused).
    pub tls: Option<Arc<crate::TlsConfig>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("cluster", &self.cluster)
            .field("secret", &"<hidden>")
            .field("name", &self.name)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Handshake messages (the header of each handshake frame).
#[derive(Debug, Serialize, Deserialize)]
enum Hs {
    Hello {
        version: u32,
        cluster: String,
        name: String,
        role: Role,
        nonce: [u8; NONCE],
    },
    Challenge {
        name: String,
        nonce: [u8; NONCE],
        proof: Vec<u8>,
    },
    Proof {
        proof: Vec<u8>,
    },
    Welcome,
    Refuse {
        reason: String,
    },
}

/// The reason a server gives a client whose proof is wrong.
pub const WRONG_SECRET: &str = "authentication failed: wrong cluster secret";

fn nonce() -> Result<[u8; NONCE], Error> {
    let mut n = [0u8; NONCE];
    getrandom::fill(&mut n)
        .map_err(|e| Error::io("random nonce", std::io::Error::other(e.to_string())))?;
    Ok(n)
}

fn mac(secret: &[u8], label: &[u8], a: &[u8], b: &[u8], cluster: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail; an empty key
    // still yields a (weak but well-defined) MAC.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
    m.update(label);
    m.update(a);
    m.update(b);
    m.update(cluster.as_bytes());
    m
}

fn server_mac(auth: &Auth, cn: &[u8], sn: &[u8]) -> Hmac<Sha256> {
    mac(&auth.secret, b"dipc-server", cn, sn, &auth.cluster)
}

fn client_mac(auth: &Auth, cn: &[u8], sn: &[u8]) -> Hmac<Sha256> {
    mac(&auth.secret, b"dipc-client", sn, cn, &auth.cluster)
}

async fn send(conn: &mut Conn, msg: &Hs) -> Result<(), Error> {
    conn.send(&Frame::msg(msg)).await
}

async fn recv(conn: &mut Conn) -> Result<Hs, Error> {
    let peer = conn.peer.to_string();
    match conn.recv_max(HANDSHAKE_MAX).await? {
        Some(frame) => frame.decode::<Hs>().map_err(|e| Error::Protocol {
            peer,
            reason: format!("bad handshake message ({e}); is it a dipc peer of the same version?"),
        }),
        None => Err(Error::Closed { peer }),
    }
}

/// We refuse the peer: tell it why (best effort), log, and build the error.
async fn refuse(conn: &mut Conn, reason: String) -> Error {
    let peer = conn.peer.to_string();
    warn!(%peer, %reason, "refusing connection");
    // The peer may already be gone; the refusal stands either way.
    let _ = send(
        conn,
        &Hs::Refuse {
            reason: reason.clone(),
        },
    )
    .await;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut conn.stream).await;
    Error::AuthFailed { peer, reason }
}

/// The peer refused us.
fn refused(conn: &Conn, reason: String) -> Error {
    let peer = conn.peer.to_string();
    warn!(%peer, %reason, "refused by peer");
    Error::Refused { peer, reason }
}

fn unexpected(conn: &Conn, got: &Hs, wanted: &str) -> Error {
    let peer = conn.peer.to_string();
    let reason = format!("expected {wanted} in the handshake, got {}", kind(got));
    warn!(%peer, %reason, "handshake failed");
    Error::Protocol { peer, reason }
}

fn kind(m: &Hs) -> &'static str {
    match m {
        Hs::Hello { .. } => "Hello",
        Hs::Challenge { .. } => "Challenge",
        Hs::Proof { .. } => "Proof",
        Hs::Welcome => "Welcome",
        Hs::Refuse { .. } => "Refuse",
    }
}

/// We require TLS and a client spoke plaintext: read its Hello (so that it
/// gets the refusal as the answer it waits for), refuse it, and return the
/// error.
pub(crate) async fn refuse_plaintext(mut conn: Conn, auth: &Auth) -> Error {
    match recv(&mut conn).await {
        Ok(Hs::Hello { name, role, .. }) => {
            conn.peer.name = name;
            conn.peer.role = role;
        }
        Ok(other) => return unexpected(&conn, &other, "Hello"),
        Err(e) => {
            warn!(peer = %conn.peer, error = %e, "handshake failed");
            return e;
        }
    }
    let reason = format!(
        "{:?} requires TLS and this peer connected without it (give both sides \
         --tls-cert, --tls-key and --tls-ca, or neither)",
        auth.name
    );
    refuse(&mut conn, reason).await
}

/// Client side of the handshake on a fresh connection.
pub(crate) async fn client(
    mut conn: Conn,
    auth: &Auth,
    role: Role,
) -> Result<(Conn, PeerInfo), Error> {
    let cn = nonce()?;
    send(
        &mut conn,
        &Hs::Hello {
            version: PROTOCOL_VERSION,
            cluster: auth.cluster.clone(),
            name: auth.name.clone(),
            role,
            nonce: cn,
        },
    )
    .await?;
    let (name, sn) = match recv(&mut conn).await? {
        Hs::Challenge { name, nonce, proof } => {
            if server_mac(auth, &cn, &nonce).verify_slice(&proof).is_err() {
                // Either side may hold the wrong secret; we cannot tell which.
                let reason = format!(
                    "{WRONG_SECRET} ({name:?} and {:?} hold different secrets for cluster {:?})",
                    auth.name, auth.cluster
                );
                return Err(refuse(&mut conn, reason).await);
            }
            (name, nonce)
        }
        Hs::Refuse { reason } => return Err(refused(&conn, reason)),
        other => return Err(unexpected(&conn, &other, "Challenge")),
    };
    conn.peer.name = name;
    let proof = client_mac(auth, &cn, &sn).finalize().into_bytes().to_vec();
    send(&mut conn, &Hs::Proof { proof }).await?;
    match recv(&mut conn).await? {
        Hs::Welcome => {
            let peer = conn.peer.clone();
            Ok((conn, peer))
        }
        Hs::Refuse { reason } => Err(refused(&conn, reason)),
        other => Err(unexpected(&conn, &other, "Welcome")),
    }
}

/// Server side of the handshake on an accepted connection.
pub(crate) async fn server(mut conn: Conn, auth: &Auth) -> Result<(Conn, PeerInfo), Error> {
    let cn = match recv(&mut conn).await {
        Ok(Hs::Hello {
            version,
            cluster,
            name,
            role,
            nonce,
        }) => {
            conn.peer.name = name;
            conn.peer.role = role;
            if version != PROTOCOL_VERSION {
                let reason = format!(
                    "protocol version {version} is not supported (this is {:?}, version {PROTOCOL_VERSION})",
                    auth.name
                );
                return Err(refuse(&mut conn, reason).await);
            }
            if cluster != auth.cluster {
                let reason = format!(
                    "wrong cluster {cluster:?} ({:?} serves {:?})",
                    auth.name, auth.cluster
                );
                return Err(refuse(&mut conn, reason).await);
            }
            nonce
        }
        Ok(other) => return Err(unexpected(&conn, &other, "Hello")),
        Err(e) => {
            warn!(peer = %conn.peer, error = %e, "handshake failed");
            return Err(e);
        }
    };
    let sn = nonce()?;
    let proof = server_mac(auth, &cn, &sn).finalize().into_bytes().to_vec();
    send(
        &mut conn,
        &Hs::Challenge {
            name: auth.name.clone(),
            nonce: sn,
            proof,
        },
    )
    .await?;
    match recv(&mut conn).await? {
        Hs::Proof { proof } => {
            if client_mac(auth, &cn, &sn).verify_slice(&proof).is_err() {
                return Err(refuse(&mut conn, WRONG_SECRET.to_string()).await);
            }
        }
        Hs::Refuse { reason } => return Err(refused(&conn, reason)),
        other => return Err(unexpected(&conn, &other, "Proof")),
    }
    send(&mut conn, &Hs::Welcome).await?;
    let peer = conn.peer.clone();
    Ok((conn, peer))
}

#[cfg(test)]
mod tests {
    //! Misbehaving clients that the public API cannot produce: a client that
    //! skips checking the server and sends a wrong proof, and one of another
    //! protocol version.

    use std::time::Duration;

    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    fn auth(secret: &[u8]) -> Auth {
        Auth {
            cluster: "lab".into(),
            secret: Arc::from(secret),
            name: "server".into(),
            tls: None,
        }
    }

    /// A raw client connection and the server's handshake running on it.
    async fn start() -> (
        Conn,
        tokio::task::JoinHandle<Result<(Conn, PeerInfo), Error>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.expect("accept");
            Conn::accept(s, &auth(b"right"), Duration::from_secs(5)).await
        });
        let stream = TcpStream::connect(addr).await.expect("connect");
        (Conn::raw(crate::conn::Stream::Left(stream), addr), server)
    }

    fn hello(version: u32) -> Hs {
        Hs::Hello {
            version,
            cluster: "lab".into(),
            name: "liar".into(),
            role: Role::Node,
            nonce: [7; NONCE],
        }
    }

    #[tokio::test]
    async fn server_refuses_a_wrong_proof() {
        let (mut c, server) = start().await;
        send(&mut c, &hello(PROTOCOL_VERSION)).await.expect("hello");
        let Hs::Challenge { nonce, .. } = recv(&mut c).await.expect("challenge") else {
            panic!("expected a challenge");
        };
        // A proof made with the wrong secret.
        let proof = client_mac(&auth(b"wrong"), &[7; NONCE], &nonce)
            .finalize()
            .into_bytes()
            .to_vec();
        send(&mut c, &Hs::Proof { proof }).await.expect("proof");
        match recv(&mut c).await.expect("answer") {
            Hs::Refuse { reason } => assert_eq!(reason, WRONG_SECRET),
            other => panic!("expected Refuse, got {other:?}"),
        }
        let err = server.await.expect("join").expect_err("server must refuse");
        assert!(matches!(err, Error::AuthFailed { .. }), "{err:?}");
        assert!(err.to_string().contains("wrong cluster secret"), "{err}");
        assert!(err.to_string().contains("\"liar\""), "{err}");
    }

    #[tokio::test]
    async fn server_refuses_another_version() {
        let (mut c, server) = start().await;
        send(&mut c, &hello(PROTOCOL_VERSION + 1))
            .await
            .expect("hello");
        match recv(&mut c).await.expect("answer") {
            Hs::Refuse { reason } => assert!(reason.contains("protocol version 2"), "{reason}"),
            other => panic!("expected Refuse, got {other:?}"),
        }
        let err = server.await.expect("join").expect_err("server must refuse");
        assert!(matches!(err, Error::AuthFailed { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn server_rejects_a_message_out_of_order() {
        let (mut c, server) = start().await;
        send(&mut c, &Hs::Welcome).await.expect("send");
        let err = server.await.expect("join").expect_err("server must fail");
        assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    }

    #[test]
    fn proofs_are_direction_bound() {
        let a = auth(b"s");
        let (cn, sn) = ([1; NONCE], [2; NONCE]);
        let server = server_mac(&a, &cn, &sn).finalize().into_bytes();
        // The server's proof is not a valid client proof for the same nonces.
        assert!(client_mac(&a, &cn, &sn).verify_slice(&server).is_err());
        assert!(server_mac(&a, &cn, &sn).verify_slice(&server).is_ok());
        // Nor for swapped nonces (reflection).
        assert!(client_mac(&a, &sn, &cn).verify_slice(&server).is_err());
    }
}
