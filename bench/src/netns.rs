//! Network namespaces for the scaling rows: each node of a cluster in a
//! namespace of its own, linked to the others by a veth pair and a bridge,
//! so the nodes' traffic crosses a real (virtual) link and each node's
//! network stack, not the loopback device they otherwise share.
//!
//! Needs root and `ip` (iproute2); without them [`Net::create`] answers
//! [`Error::Unavailable`] and the rows are skipped with that reason. The
//! layout, named after this process's id so runs never collide:
//!
//! ```text
//!  root namespace: bridge dbr<pid> 10.214.S.254/24  (the referee listens here)
//!     |-- dv<pid>-1 <-veth-> eth0 10.214.S.1/24 in namespace dnb<pid>-1 (node 1)
//!     |-- dv<pid>-2 <-veth-> eth0 10.214.S.2/24 in namespace dnb<pid>-2 (node 2)
//!     ...
//! ```
//!
//! where the subnet `S` (1..=250) also comes from the process id, so two
//! runs at once do not route each other's addresses.
//!
//! Everything is removed on drop (deleting a namespace deletes its veth
//! end and with it the pair). The node daemons run on threads of this
//! process, each entering its namespace before it starts its runtime
//! ([`crate::sys::enter_netns`]); their local sockets are paths, which
//! every namespace sees.

use std::fs::File;
use std::process::Command;

use crate::Error;

/// A bridge and one namespace per node.
#[derive(Debug)]
pub struct Net {
    bridge: String,
    namespaces: Vec<String>,
    /// The first three bytes of the /24, `10.214.S`.
    subnet: String,
}

fn ip(args: &[&str]) -> Result<(), Error> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::Unavailable {
            what: format!("network namespaces need iproute2's `ip`: {e}"),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Unavailable {
            what: format!(
                "network namespaces: `ip {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

impl Net {
    /// A bridge and `nodes` namespaces; `Unavailable` when not root or
    /// when `ip` refuses.
    pub fn create(nodes: usize) -> Result<Net, Error> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::Unavailable {
                what: "network namespaces need root".into(),
            });
        }
        let pid = std::process::id();
        let mut net = Net {
            bridge: format!("dbr{pid}"),
            namespaces: Vec::new(),
            subnet: format!("10.214.{}", pid % 250 + 1),
        };
        let subnet = net.subnet.clone();
        let br = net.bridge.clone();
        ip(&["link", "add", &br, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{subnet}.254/24"), "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        for i in 1..=nodes {
            let ns = format!("dnb{pid}-{i}");
            ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            let veth = format!("dv{pid}-{i}");
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &veth, "master", &br, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{subnet}.{i}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// The address the referee listens on (the bridge's).
    pub fn referee_ip(&self) -> String {
        format!("{}.254", self.subnet)
    }

    /// Node `i`'s (1-based) address, inside its namespace.
    pub fn node_ip(&self, i: usize) -> String {
        format!("{}.{i}", self.subnet)
    }

    /// Node `i`'s namespace, opened (to enter it).
    pub fn open(&self, i: usize) -> Result<File, Error> {
        let name = self
            .namespaces
            .get(i.wrapping_sub(1))
            .ok_or_else(|| Error::Cluster {
                detail: format!("no network namespace for node {i}"),
            })?;
        let path = format!("/run/netns/{name}");
        File::open(&path).map_err(|e| Error::io(format!("opening {path}"), e))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            if let Err(e) = ip(&["netns", "del", ns]) {
                tracing::warn!("{e}");
            }
        }
        if let Err(e) = ip(&["link", "del", &self.bridge]) {
            tracing::warn!("{e}");
        }
    }
}
