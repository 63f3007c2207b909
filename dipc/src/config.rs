//! Settings: command-line flags win over environment variables (clap's
//! `env`), which win over the optional TOML file (`--config`/`DIPC_CONFIG`),
//! which wins over the defaults (sensible for one machine).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The optional config file. Every key is optional.
///
/// ```toml
/// cluster = "lab"
/// secret_file = "/etc/dipc/secret"
/// referee = "10.0.0.1:7100"
/// listen = "10.0.0.2:7201"      # node: peers connect here
/// socket = "/run/dipc/node.sock" # node: libsysv connects here
/// data_dir = "/var/lib/dipc"    # referee: its registry
/// name = "n2"                   # node: stable name
/// heartbeat_ms = 500
/// down_after_ms = 3000
/// page_size = 4096              # node: default coherence unit
/// call_timeout_ms = 10000
/// transport = "auto"            # node: peer links over tcp, rdma or auto
/// rdma_device = "rxe0"          # node: RDMA device (default auto)
/// gid_index = 1                 # node: GID table index of the RDMA port
/// tls_cert = "/etc/dipc/node.pem" # TLS: all three or none (`dipc certgen`)
/// tls_key = "/etc/dipc/node.key"
/// tls_ca = "/etc/dipc/ca.pem"
/// msgmax = 65536                # node: longest message of its queues
/// msgmnb = 131072               # node: msg_qbytes of its new queues
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub cluster: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub referee: Option<String>,
    pub listen: Option<String>,
    pub socket: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub name: Option<String>,
    pub heartbeat_ms: Option<u64>,
    pub down_after_ms: Option<u64>,
    pub page_size: Option<u32>,
    pub call_timeout_ms: Option<u64>,
    pub transport: Option<String>,
    pub rdma_device: Option<String>,
    pub gid_index: Option<u8>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub msgmax: Option<u32>,
    pub msgmnb: Option<u64>,
}

impl FileConfig {
    pub fn load(path: Option<&Path>) -> anyhow::Result<FileConfig> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("bad config file {}", path.display()))
    }
}

pub const DEFAULT_CLUSTER: &str = "dipc";
pub const DEFAULT_REFEREE: &str = "127.0.0.1:7100";
pub const DEFAULT_NODE_LISTEN: &str = "127.0.0.1:7201";
pub const DEFAULT_SECRET_FILE: &str = "/etc/dipc/secret";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/dipc/referee";

/// Read the cluster secret: the whole file, surrounding whitespace trimmed.
pub fn read_secret(path: &Path) -> anyhow::Result<Arc<[u8]>> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read the cluster secret {} (create one with `dipc keygen {}`)",
            path.display(),
            path.display()
        )
    })?;
    let trimmed = bytes.trim_ascii();
    if trimmed.len() < 8 {
        bail!(
            "the cluster secret in {} is too short ({} bytes; at least 8, `dipc keygen` makes 32 random bytes)",
            path.display(),
            trimmed.len()
        );
    }
    Ok(Arc::from(trimmed))
}

/// Load the TLS settings: all three files or none.
pub fn tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
) -> anyhow::Result<Option<Arc<dipc_transport_tcp::TlsConfig>>> {
    match (cert, key, ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => {
            let cfg = dipc_transport_tcp::TlsConfig::from_pem_files(&ca, &cert, &key)?;
            Ok(Some(Arc::new(cfg)))
        }
        (cert, key, ca) => {
            let missing: Vec<&str> = [
                (cert.is_none(), "--tls-cert"),
                (key.is_none(), "--tls-key"),
                (ca.is_none(), "--tls-ca"),
            ]
            .into_iter()
            .filter_map(|(m, flag)| m.then_some(flag))
            .collect();
            bail!(
                "TLS needs --tls-cert, --tls-key and --tls-ca together (or none of them); \
                 missing {} (flags, DIPC_TLS_* variables or tls_* config keys)",
                missing.join(", ")
            )
        }
    }
}

/// Write a fresh random secret (hex) to `path`, mode 0600.
pub fn keygen(path: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw))
        .context("cannot read /dev/urandom")?;
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(f, "{hex}")?;
    Ok(())
}
