//! What a node says about its RDMA setup (`--rdma-device`, `--gid-index`,
//! ...) and how a device is chosen.
//!
//! `auto` picks the first device with an ACTIVE port, in libibverbs' order,
//! so that a machine with one adapter (or one soft-RoCE device) needs no
//! option. The choice is a pure function of the device list
//! ([`choose_device`]) so that it is tested without hardware.

use std::time::Duration;

use crate::Error;
use crate::proto::DEFAULT_SPIN;
use crate::verbs::{self, DeviceInfo, PortInfo};

/// Which device to use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first device with an ACTIVE port.
    #[default]
    Auto,
    /// This device (e.g. `rxe0`, `mlx5_0`).
    Named(String),
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim() {
            "" => Err(Error::Config {
                reason: "empty RDMA device name (use \"auto\" or a name such as rxe0)".into(),
            }),
            "auto" => Ok(DeviceChoice::Auto),
            name => Ok(DeviceChoice::Named(name.to_string())),
        }
    }
}

/// Settings of the RDMA transport.
#[derive(Debug, Clone)]
pub struct RdmaConfig {
    /// `--rdma-device`: `auto` or a device name.
    pub device: DeviceChoice,
    /// Port of the device; `None` = its first ACTIVE port.
    pub port: Option<u8>,
    /// `--gid-index`: the GID table entry to use. On soft-RoCE, index 1
    /// is the IPv4 RoCEv2 GID; on adapters, see `show_gids`.
    pub gid_index: u8,
    /// Slots of the receive ring (and most messages in flight).
    pub slots: u32,
    /// Bytes per slot (frames larger than a slot are cut into chunks).
    pub slot_size: u32,
    /// Bound of connection setup, of a `send` waiting for queue room, and
    /// of a sender waiting for credits from a live but stalled peer.
    pub timeout: Duration,
    /// How long the engine busy-polls before sleeping on the channel.
    pub spin: Duration,
    /// ACK timeout exponent of the queue pair (4.096 us * 2^n).
    pub ack_timeout: u8,
    /// Transport retries before a send fails with "retry exceeded".
    pub retry_cnt: u8,
}

impl Default for RdmaConfig {
    fn default() -> Self {
        RdmaConfig {
            device: DeviceChoice::Auto,
            port: None,
            gid_index: 1,
            slots: 64,
            slot_size: 64 * 1024,
            timeout: Duration::from_secs(10),
            spin: DEFAULT_SPIN,
            // 4.096 us * 2^16 = 268 ms, 7 retries: about 2 s before an
            // unreachable peer fails a send.
            ack_timeout: 16,
            retry_cnt: 7,
        }
    }
}

/// The device and port a connection will use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub device: String,
    pub port: PortInfo,
}

/// Pick a device and port from `devices` as `cfg` asks.
pub fn choose_device(
    devices: &[DeviceInfo],
    want: &DeviceChoice,
    port: Option<u8>,
) -> Result<Selected, Error> {
    let usable = |d: &DeviceInfo| -> Option<PortInfo> {
        d.ports
            .iter()
            .find(|p| p.active && port.is_none_or(|want| p.port == want))
            .cloned()
    };
    if devices.is_empty() {
        return Err(Error::NoDevice {
            reason: "this machine has no RDMA device (is a driver such as rdma_rxe loaded, and ibverbs-providers installed?)".into(),
        });
    }
    let names = || {
        devices
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match want {
        DeviceChoice::Auto => devices
            .iter()
            .find_map(|d| {
                usable(d).map(|p| Selected {
                    device: d.name.clone(),
                    port: p,
                })
            })
            .ok_or_else(|| Error::NoDevice {
                reason: match port {
                    Some(p) => format!("no device has port {p} ACTIVE (devices: {})", names()),
                    None => format!("no device has an ACTIVE port (devices: {})", names()),
                },
            }),
        DeviceChoice::Named(name) => {
            let d = devices
                .iter()
                .find(|d| &d.name == name)
                .ok_or_else(|| Error::NoDevice {
                    reason: format!("no device called {name:?} (devices: {})", names()),
                })?;
            let p = usable(d).ok_or_else(|| Error::NoDevice {
                reason: match port {
                    Some(p) => format!("port {p} of {name} is not ACTIVE"),
                    None => format!("{name} has no ACTIVE port"),
                },
            })?;
            Ok(Selected {
                device: name.clone(),
                port: p,
            })
        }
    }
}

impl RdmaConfig {
    /// Look at this machine's devices and choose one as configured.
    pub fn select(&self) -> Result<Selected, Error> {
        let sel = choose_device(&verbs::devices()?, &self.device, self.port)?;
        if i32::from(self.gid_index) >= sel.port.gid_table_len {
            return Err(Error::Config {
                reason: format!(
                    "GID index {} is beyond the {} entries of {} port {}",
                    self.gid_index, sel.port.gid_table_len, sel.device, sel.port.port
                ),
            });
        }
        Ok(sel)
    }
}

/// Is an RDMA device usable here (as `auto` would choose)? `Err` says why
/// not; tests use it to skip with a clear message.
pub fn probe() -> Result<Selected, Error> {
    RdmaConfig::default().select()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(n: u8, active: bool) -> PortInfo {
        PortInfo {
            port: n,
            active,
            active_mtu: 3,
            lid: 0,
            gid_table_len: 16,
        }
    }

    fn dev(name: &str, ports: Vec<PortInfo>) -> DeviceInfo {
        DeviceInfo {
            name: name.into(),
            ports,
        }
    }

    #[test]
    fn auto_takes_the_first_device_with_an_active_port() {
        let devs = [
            dev("mlx5_0", vec![port(1, false)]),
            dev("rxe0", vec![port(1, false), port(2, true)]),
            dev("rxe1", vec![port(1, true)]),
        ];
        let s = choose_device(&devs, &DeviceChoice::Auto, None).expect("choose");
        assert_eq!((s.device.as_str(), s.port.port), ("rxe0", 2));
        let s = choose_device(&devs, &DeviceChoice::Auto, Some(1)).expect("choose");
        assert_eq!((s.device.as_str(), s.port.port), ("rxe1", 1));
    }

    #[test]
    fn named_devices_and_their_failures() {
        let devs = [
            dev("rxe0", vec![port(1, true)]),
            dev("down0", vec![port(1, false)]),
        ];
        let s = choose_device(&devs, &"rxe0".parse().expect("parse"), None).expect("choose");
        assert_eq!(s.device, "rxe0");
        let e = choose_device(&devs, &"mlx5_0".parse().expect("parse"), None).expect_err("missing");
        assert!(
            e.to_string()
                .contains("no device called \"mlx5_0\" (devices: rxe0, down0)"),
            "{e}"
        );
        let e = choose_device(&devs, &"down0".parse().expect("parse"), None).expect_err("down");
        assert!(e.to_string().contains("down0 has no ACTIVE port"), "{e}");
        let e =
            choose_device(&devs, &DeviceChoice::Named("rxe0".into()), Some(2)).expect_err("port");
        assert!(
            e.to_string().contains("port 2 of rxe0 is not ACTIVE"),
            "{e}"
        );
    }

    #[test]
    fn no_devices_says_what_to_check() {
        let e = choose_device(&[], &DeviceChoice::Auto, None).expect_err("none");
        assert!(matches!(e, Error::NoDevice { .. }));
        assert!(e.to_string().contains("rdma_rxe"), "{e}");
    }

    #[test]
    fn device_option_parses() {
        assert_eq!(
            "auto".parse::<DeviceChoice>().expect("auto"),
            DeviceChoice::Auto
        );
        assert_eq!(
            " rxe0 ".parse::<DeviceChoice>().expect("name"),
            DeviceChoice::Named("rxe0".into())
        );
        assert!("".parse::<DeviceChoice>().is_err());
    }
}
