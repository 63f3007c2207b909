//! Optional TLS under the handshake: confidentiality and certificate
//! authentication for links that cross networks one does not own.
//!
//! With a [`TlsConfig`] in [`Auth::tls`](crate::Auth::tls), a connection is
//! TCP, then TLS 1.3 (rustls, ring provider), then the usual challenge-
//! response over the cluster secret inside it; everything after that,
//! including page data, is encrypted. The cluster secret stays mandatory:
//! TLS adds to it, it does not replace it.
//!
//! * **Mutual.** Both sides present a certificate chain and verify the
//!   other's against the cluster CA bundle (`--tls-ca`). Nothing else is
//!   trusted (no system roots).
//! * **Server names.** The dialling side checks that the certificate of the
//!   side it dialled names the host it dialled (a subject alternative name
//!   equal to the IP address or DNS name in `host:port`), as a browser
//!   does: a node's certificate must name the host of its `--listen`
//!   address (what the other nodes dial), the referee's the host that nodes
//!   and tools give as `--referee`. The accepting side checks only that the
//!   client's chain leads to the CA; the name a client goes by is the one
//!   proved by the handshake that follows.
//! * **No mixing.** A side with TLS refuses a peer without it, and the
//!   other way round, at once and with a reason on both sides: the
//!   accepting side looks at the first bytes (a TLS ClientHello starts with
//!   `16 03 0x`, a dipc Hello with a small little-endian length), answers a
//!   plaintext Hello with a plaintext `Refuse` ("requires TLS"), and a
//!   ClientHello it cannot serve with a TLS `protocol_version` alert, which
//!   the dialler reports as "does not use TLS".
//! * **Bounded.** The TLS handshake runs inside the connect or accept
//!   timeout, like the rest of the handshake.
//! * TLS 1.3 only, no session resumption (links are long-lived); rustls
//!   sends no session tickets, so nothing but the protocol's own records
//!   ever crosses the connection.
//!
//! Failures of certificate checks are refusals ([`Error::is_refusal`]):
//! [`Error::AuthFailed`] when we rejected the peer's certificate,
//! [`Error::Refused`] when the peer rejected ours (its alert), so callers
//! that stop retrying on a refusal (a node's referee link) stop here too.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore, ServerConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::warn;

use crate::Error;
use crate::conn::Stream;

/// Certificates and key of one side, ready for both directions (every
/// node dials and accepts). Cheap to share: hold it in an `Arc`.
pub struct TlsConfig {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    /// Where the files came from, for messages.
    source: String,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("source", &self.source)
            .finish()
    }
}

fn config_error(what: impl Into<String>, reason: impl std::fmt::Display) -> Error {
    Error::TlsConfig {
        what: what.into(),
        reason: reason.to_string(),
    }
}

impl TlsConfig {
    /// Load the CA bundle `ca` (one or more PEM certificates), our
    /// certificate chain `cert` (PEM, leaf first) and its private key `key`
    /// (PEM: PKCS#8, PKCS#1 or SEC1). The chain must lead to a CA of the
    /// bundle (checked here, so that a wrong file fails at start and not at
    /// the first connection).
    pub fn from_pem_files(ca: &Path, cert: &Path, key: &Path) -> Result<TlsConfig, Error> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| config_error(format!("cannot read {}", p.display()), e))
        };
        let mut cfg = TlsConfig::from_pem(
            (&ca.display().to_string(), &read(ca)?),
            (&cert.display().to_string(), &read(cert)?),
            (&key.display().to_string(), &read(key)?),
        )?;
        cfg.source = format!("CA {}, certificate {}", ca.display(), cert.display());
        Ok(cfg)
    }

    /// [`TlsConfig::from_pem_files`] from memory: each argument is a name
    /// for messages and the PEM text.
    pub fn from_pem(
        ca: (&str, &[u8]),
        cert: (&str, &[u8]),
        key: (&str, &[u8]),
    ) -> Result<TlsConfig, Error> {
        let certs = |(name, pem): (&str, &[u8])| -> Result<Vec<CertificateDer<'static>>, Error> {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| config_error(format!("bad PEM in {name}"), e))?;
            if certs.is_empty() {
                return Err(config_error(name, "no certificate in it"));
            }
            Ok(certs)
        };
        let cas = certs(ca)?;
        let chain = certs(cert)?;
        let key_der = PrivateKeyDer::from_pem_slice(key.1)
            .map_err(|e| config_error(format!("no private key in {}", key.0), e))?;

        let mut roots = RootCertStore::empty();
        for c in cas {
            roots
                .add(c)
                .map_err(|e| config_error(format!("bad CA certificate in {}", ca.0), e))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = [&rustls::version::TLS13];

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| config_error(format!("CA bundle {}", ca.0), e))?;
        // Our own chain must be one the peers will accept.
        let (leaf, intermediates) = chain.split_first().expect("checked non-empty");
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| {
                config_error(
                    format!("certificate {} does not verify against CA {}", cert.0, ca.0),
                    describe(&e, None),
                )
            })?;

        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| config_error("TLS versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key_der.clone_key())
            .map_err(|e| config_error(format!("certificate {} with key {}", cert.0, key.0), e))?;
        server.send_tls13_tickets = 0;

        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| config_error("TLS versions", e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key_der)
            .map_err(|e| config_error(format!("certificate {} with key {}", cert.0, key.0), e))?;
        client.resumption = rustls::client::Resumption::disabled();

        Ok(TlsConfig {
            client: Arc::new(client),
            server: Arc::new(server),
            source: format!("CA {}, certificate {}", ca.0, cert.0),
        })
    }
}

/// The host part of `host:port` (`[v6]:port` too) as a TLS server name.
fn server_name(addr: &str) -> Result<ServerName<'static>, Error> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| {
        config_error(
            format!("cannot check the certificate of {addr}"),
            format!("{host:?} is not a host name or IP address ({e})"),
        )
    })
}

/// Start TLS as the dialling side on a fresh connection to `addr`.
pub(crate) async fn connect(tls: &TlsConfig, addr: &str, tcp: TcpStream) -> Result<Stream, Error> {
    let name = server_name(addr)?;
    let s = tokio_rustls::TlsConnector::from(tls.client.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| explain_io(e, addr, "TLS handshake with"))?;
    Ok(Stream::Right(Box::new(s.into())))
}

/// What the first bytes of an accepted connection were.
pub(crate) enum Accepted {
    /// Ready for the dipc handshake (TLS done if configured).
    Ready(Stream),
    /// We require TLS and the peer speaks plaintext: refuse it in its
    /// language.
    Plaintext(TcpStream),
}

/// Does `b` (the first bytes a client sent) start a TLS record of type
/// handshake (`16 03 0x`)? `None`: too few bytes to tell.
fn looks_like_tls(b: &[u8]) -> Option<bool> {
    match b {
        [] => None,
        [0x16] => None,
        [0x16, 0x03] => None,
        [0x16, 0x03, minor, ..] => Some((1..=4).contains(minor)),
        _ => Some(false),
    }
}

/// A TLS alert record, in plaintext as before any handshake: fatal,
/// `protocol_version` ("I do not speak this").
const ALERT_PROTOCOL_VERSION: [u8; 7] = [
    0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46, // AlertDescription::ProtocolVersion
];

/// Look at what an accepted client sends first and start TLS if we and it
/// use it. A TLS client of a side without TLS gets an alert and an
/// [`Error::AuthFailed`].
pub(crate) async fn accept(
    tls: Option<&TlsConfig>,
    tcp: TcpStream,
    peer: &str,
) -> Result<Accepted, Error> {
    let mut first = [0u8; 3];
    let is_tls = loop {
        let n = tcp
            .peek(&mut first)
            .await
            .map_err(|e| Error::io(format!("receive from {peer}"), e))?;
        if n == 0 {
            // Closed before saying anything: the handshake reports it.
            break false;
        }
        match looks_like_tls(&first[..n]) {
            Some(t) => break t,
            // A prefix of a ClientHello: wait for more (bounded by the
            // caller's timeout).
            None => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    };
    match (tls, is_tls) {
        (Some(tls), true) => {
            let s = tokio_rustls::TlsAcceptor::from(tls.server.clone())
                .accept(tcp)
                .await
                .map_err(|e| explain_io(e, peer, "TLS handshake with"))?;
            Ok(Accepted::Ready(Stream::Right(Box::new(s.into()))))
        }
        (Some(_), false) => Ok(Accepted::Plaintext(tcp)),
        (None, true) => {
            let mut tcp = tcp;
            let reason = "it speaks TLS, but this side is not configured for TLS \
                          (give both sides --tls-cert, --tls-key and --tls-ca, or neither)"
                .to_string();
            warn!(%peer, %reason, "refusing connection");
            let _ = tcp.write_all(&ALERT_PROTOCOL_VERSION).await;
            let _ = tcp.shutdown().await;
            Err(Error::AuthFailed {
                peer: peer.to_string(),
                reason,
            })
        }
        (None, false) => Ok(Accepted::Ready(Stream::Left(tcp))),
    }
}

/// A rustls error inside an I/O error, if any.
fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Words for a certificate problem; `host` is the name we dialled.
fn describe(e: &rustls::Error, host: Option<&str>) -> String {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "its certificate is not signed by a CA of our bundle (--tls-ca): \
             a certificate of another cluster?"
                .into()
        }
        rustls::Error::InvalidCertificate(
            c @ (CertificateError::NotValidForName
            | CertificateError::NotValidForNameContext { .. }),
        ) => format!(
            "its certificate does not name {} ({c}); a node's certificate must name the host \
             of its --listen address, the referee's the host given as --referee \
             (`dipc certgen --san`)",
            host.unwrap_or("the dialled host")
        ),
        rustls::Error::InvalidCertificate(CertificateError::BadSignature) => {
            "its certificate's signature does not verify: signed by another CA of the same \
             name as ours?"
                .into()
        }
        rustls::Error::InvalidCertificate(c) => format!("its certificate is not valid: {c}"),
        rustls::Error::NoCertificatesPresented => "it presented no certificate".into(),
        other => format!("TLS failed: {other}"),
    }
}

/// Turn an I/O error that carries a TLS failure into a refusal naming the
/// cause (and log it); other I/O errors stay as they are.
fn explain_io(e: std::io::Error, peer: &str, what: &str) -> Error {
    let Some(tls) = rustls_error(&e) else {
        return Error::io(format!("{what} {peer}"), e);
    };
    let err = match tls {
        rustls::Error::AlertReceived(AlertDescription::ProtocolVersion) => Error::Refused {
            peer: peer.to_string(),
            reason: "it does not use TLS, but this side does (give both sides --tls-cert, \
                     --tls-key and --tls-ca, or neither)"
                .into(),
        },
        rustls::Error::AlertReceived(
            d @ (AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateRequired
            | AlertDescription::DecryptError),
        ) => Error::Refused {
            peer: peer.to_string(),
            reason: format!(
                "it does not accept our TLS certificate (alert {d:?}): is ours signed by its CA?"
            ),
        },
        rustls::Error::AlertReceived(d) => Error::Refused {
            peer: peer.to_string(),
            reason: format!("TLS alert {d:?}"),
        },
        other => {
            let host = peer.rsplit_once(':').map(|(h, _)| h);
            Error::AuthFailed {
                peer: peer.to_string(),
                reason: describe(other, host),
            }
        }
    };
    warn!(%peer, reason = %err, "TLS failed");
    err
}

/// [`explain_io`] for an error of the handshake as a whole: TLS failures
/// that surface after the TLS handshake (TLS 1.3 checks the client's
/// certificate after the client considers the handshake done, so the
/// client learns of it on its first read) become refusals too.
pub(crate) fn explain(e: Error, peer: &str) -> Error {
    match e {
        Error::Io { what, source } => {
            if rustls_error(&source).is_some() {
                explain_io(source, peer, &what)
            } else {
                Error::Io { what, source }
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_tls_from_a_dipc_hello() {
        assert_eq!(looks_like_tls(&[0x16, 0x03, 0x01]), Some(true));
        assert_eq!(looks_like_tls(&[0x16, 0x03, 0x03]), Some(true));
        assert_eq!(looks_like_tls(&[0x16, 0x03]), None);
        assert_eq!(looks_like_tls(&[0x16]), None);
        // A dipc Hello of 790 bytes starts 16 03 00 00.
        assert_eq!(looks_like_tls(&[0x16, 0x03, 0x00]), Some(false));
        assert_eq!(looks_like_tls(&[0x40, 0x00, 0x00]), Some(false));
        assert_eq!(looks_like_tls(&[0xff]), Some(false));
    }

    #[test]
    fn server_names_come_from_the_dialled_address() {
        assert!(matches!(
            server_name("10.0.0.1:7100").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:7100").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("referee.example:7100").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(server_name("bad host:1").is_err());
    }
}
