//! `dipc certgen`: a cluster CA and certificates signed by it, for the
//! `--tls-cert`, `--tls-key` and `--tls-ca` of the daemons and tools.
//!
//! ```text
//! dipc certgen --out DIR --ca                          DIR/ca.pem, DIR/ca.key
//! dipc certgen --out DIR --name n1 --san 10.0.0.2 ...  DIR/n1.pem, DIR/n1.key
//! ```
//!
//! Keys are ECDSA P-256, written mode 0600; nothing is overwritten. Every
//! leaf certificate is good for both directions (server and client
//! authentication), since a node both dials and accepts. Its subject
//! alternative names must include what others dial it at: a node's
//! `--listen` host, the referee's `--referee` host (see `transport-tcp`'s
//! `tls` module).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

#[derive(Args, Debug)]
pub struct CertgenArgs {
    /// Directory to write the files into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Make the cluster CA: OUT/ca.pem (give it to every side as --tls-ca) and
    /// OUT/ca.key (keep it safe: it signs the others).
    #[arg(long, conflicts_with_all = ["name", "san"])]
    ca: bool,
    /// Make a certificate for NAME (a node, the referee, an operator's tools):
    /// OUT/NAME.pem and OUT/NAME.key, signed by the CA.
    #[arg(long, required_unless_present = "ca")]
    name: Option<String>,
    /// A host name or IP address others dial this side at (repeatable): a node's
    /// --listen host, the referee's --referee host. None: a certificate only for
    /// dialling (e.g. `dipc status`).
    #[arg(long, value_name = "HOST")]
    san: Vec<String>,
    /// The CA certificate to sign with [default: OUT/ca.pem].
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// The CA key to sign with [default: OUT/ca.key].
    #[arg(long)]
    ca_key: Option<PathBuf>,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = 3650)]
    days: u32,
}

pub fn run(args: CertgenArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut params = CertificateParams::new(args.san.clone())
        .context("bad --san (a host name or an IP address)")?;
    let now = time::OffsetDateTime::now_utc();
    // A day of slack for clocks that are a little behind.
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(i64::from(args.days));
    let key = KeyPair::generate().context("cannot generate a key")?;
    if args.ca {
        // A name of its own (from its public key): certificates are matched
        // to their CA by name first, and two CAs of one name would turn
        // "another cluster's certificate" into a mere bad signature.
        let id: String = key.public_key_raw()[1..7]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("dipc cluster CA {id}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).context("cannot make the CA")?;
        let (c, k) = (args.out.join("ca.pem"), args.out.join("ca.key"));
        write(&k, &key.serialize_pem(), 0o600)?;
        write(&c, &cert.pem(), 0o644)?;
        println!("wrote {} and {}", c.display(), k.display());
        return Ok(());
    }
    let name = args.name.as_deref().unwrap_or_default();
    if name.is_empty()
        || !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        || name.starts_with('.')
    {
        bail!("--name {name:?}: use letters, digits, '-', '_' and '.' (it names the files)");
    }
    let ca_cert = args.ca_cert.unwrap_or_else(|| args.out.join("ca.pem"));
    let ca_key = args.ca_key.unwrap_or_else(|| args.out.join("ca.key"));
    let issuer = load_ca(&ca_cert, &ca_key)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, &issuer)
        .context("cannot sign the certificate")?;
    let (c, k) = (
        args.out.join(format!("{name}.pem")),
        args.out.join(format!("{name}.key")),
    );
    write(&k, &key.serialize_pem(), 0o600)?;
    write(&c, &cert.pem(), 0o644)?;
    println!("wrote {} and {}", c.display(), k.display());
    if args.san.is_empty() {
        eprintln!(
            "note: no --san: {name} can dial (e.g. `dipc status`), but a node or referee that \
             others dial needs its host in --san"
        );
    }
    Ok(())
}

fn load_ca(cert: &Path, key: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).with_context(|| {
            format!(
                "cannot read {} (make the CA first: `dipc certgen --out DIR --ca`)",
                p.display()
            )
        })
    };
    let key = KeyPair::from_pem(&read(key)?)
        .with_context(|| format!("no usable private key in {}", key.display()))?;
    Issuer::from_ca_cert_pem(&read(cert)?, key)
        .with_context(|| format!("no usable CA certificate in {}", cert.display()))
}

/// Create `path` with `mode`; never overwrite.
fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
