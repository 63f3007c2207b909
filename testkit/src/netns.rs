//! Two network namespaces joined by a veth pair, for partition tests.
//!
//! [`NetnsPair::create`] makes namespaces `<tag>a` and `<tag>b` (lo up in
//! both), a veth pair with one end in each, addresses `10.213.<n>.1/24`
//! and `10.213.<n>.2/24`, and brings both ends up. [`NetnsPair::cut`] sets
//! the `b` end down (a partition: neither side can reach the other, no
//! packet is refused, they are lost), [`NetnsPair::heal`] sets it up again.
//! [`NetnsPair::command`] wraps a command in `ip netns exec`, which execs
//! it in place, so the child's pid is the program's.
//!
//! Creating namespaces needs `CAP_SYS_ADMIN` (root): `create` fails with a
//! clear error otherwise and tests skip. The namespaces (and with them the
//! veth pair) are deleted when the value drops, even when the test panics.

use std::ffi::OsStr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::process::run_bounded;

/// Bound on one `ip` command.
const IP_TIMEOUT: Duration = Duration::from_secs(10);

/// Two namespaces and the veth pair between them; deleted on drop.
#[derive(Debug)]
pub struct NetnsPair {
    a: String,
    b: String,
    veth_b: String,
    subnet: u8,
    created: Vec<String>,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    let out = run_bounded(cmd, IP_TIMEOUT).with_context(|| format!("ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl NetnsPair {
    /// Create the pair; `tag` (a few letters) names it, with this process's
    /// pid added so parallel tests and runs do not collide.
    pub fn create(tag: &str) -> anyhow::Result<NetnsPair> {
        let pid = std::process::id();
        let base = format!("{tag}{pid}");
        let mut pair = NetnsPair {
            a: format!("{base}a"),
            b: format!("{base}b"),
            veth_b: format!("vb{pid}"),
            // A /24 per test process; collisions only matter inside one
            // namespace pair, which is private anyway.
            subnet: (pid % 250) as u8 + 1,
            created: Vec::new(),
        };
        let veth_a = format!("va{pid}");
        for ns in [pair.a.clone(), pair.b.clone()] {
            ip(&["netns", "add", &ns]).context(
                "creating a network namespace (needs root / CAP_SYS_ADMIN and `ip` from iproute2)",
            )?;
            pair.created.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        ip(&[
            "link",
            "add",
            &veth_a,
            "netns",
            &pair.a,
            "type",
            "veth",
            "peer",
            "name",
            &pair.veth_b,
            "netns",
            &pair.b,
        ])?;
        let (addr_a, addr_b) = (
            format!("{}/24", pair.addr_a()),
            format!("{}/24", pair.addr_b()),
        );
        ip(&["-n", &pair.a, "addr", "add", &addr_a, "dev", &veth_a])?;
        ip(&["-n", &pair.b, "addr", "add", &addr_b, "dev", &pair.veth_b])?;
        ip(&["-n", &pair.a, "link", "set", &veth_a, "up"])?;
        ip(&["-n", &pair.b, "link", "set", &pair.veth_b, "up"])?;
        Ok(pair)
    }

    /// Name of namespace `a`.
    pub fn a(&self) -> &str {
        &self.a
    }

    /// Name of namespace `b`.
    pub fn b(&self) -> &str {
        &self.b
    }

    /// The address of namespace `a` on the link.
    pub fn addr_a(&self) -> String {
        format!("10.213.{}.1", self.subnet)
    }

    /// The address of namespace `b` on the link.
    pub fn addr_b(&self) -> String {
        format!("10.213.{}.2", self.subnet)
    }

    /// `prog args...` run inside namespace `ns` (`ip netns exec`).
    pub fn command(ns: &str, prog: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.arg("netns").arg("exec").arg(ns).arg(prog);
        cmd
    }

    /// Partition: set the link down (from `b`'s side).
    pub fn cut(&self) -> anyhow::Result<()> {
        ip(&["-n", &self.b, "link", "set", &self.veth_b, "down"])
    }

    /// End the partition: set the link up again.
    pub fn heal(&self) -> anyhow::Result<()> {
        ip(&["-n", &self.b, "link", "set", &self.veth_b, "up"])
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and so the pair.
        for ns in self.created.drain(..) {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("testkit: {e:#}");
            }
        }
    }
}
