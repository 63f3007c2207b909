//! Configuration from the environment, read once per process.
//!
//! Reading the environment at every call would cost a scan of `environ`
//! and race with a program's own `setenv`; and a program whose routing
//! changed halfway (a key distributed for one call and local for the next)
//! would see two different objects under one key. So the variables are
//! read at the first call that needs them and kept for the process's life
//! (a forked child inherits them; `exec` starts afresh).
//!
//! Parsing is separate from reading (`Config::from_lookup`), so the rules
//! are unit tested without touching the environment.

use std::path::PathBuf;
use std::time::Duration;

use dipc_wire::ShmMode;

/// Env var: path of the node daemon's local socket.
pub const ENV_SOCKET: &str = "DIPC_SOCKET";
/// Env var: keys distributed without `IPC_DIPC` (`all`, or a list).
pub const ENV_KEYS: &str = "DIPC_KEYS";
/// Env var: `error` to fail distributed calls when no daemon is reachable.
pub const ENV_FALLBACK: &str = "DIPC_FALLBACK";
/// Env var: coherence unit (bytes) of segments this process creates.
pub const ENV_PAGE_SIZE: &str = "DIPC_PAGE_SIZE";
/// Env var: `page` or `segment`, how segments this process creates move.
pub const ENV_SHM_MODE: &str = "DIPC_SHM_MODE";
/// Env var: hold-time quantum (microseconds, 0: none) of segments this
/// process creates.
pub const ENV_QUANTUM_US: &str = "DIPC_QUANTUM_US";
/// Env var: largest sequential prefetch window (units, 0: off) of
/// segments this process creates.
pub const ENV_PREFETCH: &str = "DIPC_PREFETCH";
/// Largest quantum a segment may have (the node refuses more too).
pub const MAX_QUANTUM_US: u32 = dipc_wire::MAX_QUANTUM_US;
/// Largest prefetch window a segment may have, in units.
pub const MAX_PREFETCH: u32 = dipc_wire::MAX_PREFETCH;
/// Env var: bound on every wait for the daemon, in milliseconds.
pub const ENV_TIMEOUT_MS: &str = "DIPC_TIMEOUT_MS";

/// Env var: `0` sends every queue and semaphore operation through the
/// node daemon, never on a direct connection to the object's home.
pub const ENV_DIRECT: &str = "DIPC_DIRECT";

/// Env var: how long (microseconds, 0: not at all) a thread polls for the
/// answer to a queue or semaphore operation before it sleeps.
pub const ENV_SPIN_US: &str = "DIPC_SPIN_US";
/// Default of `DIPC_SPIN_US`, the node's fault loop's spin too.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// Default bound on a wait for the daemon.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which keys are distributed without the `IPC_DIPC` flag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeySelection {
    /// None (the default).
    #[default]
    None,
    /// Every key, `IPC_PRIVATE` included.
    All,
    /// These inclusive ranges, compared as unsigned 32-bit numbers (so
    /// `0x80000000-0xffffffff` covers the negative `key_t`s);
    /// `IPC_PRIVATE` is never selected by a list.
    List(Vec<(u32, u32)>),
}

fn parse_key(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    if !digits.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("bad key {s:?}"));
    }
    let v = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i64::from_str_radix(hex, 16)
    } else {
        digits.parse::<i64>()
    }
    .map_err(|_| format!("bad key {s:?}"))?;
    let v = if neg { -v } else { v };
    if v < i64::from(i32::MIN) || v > i64::from(u32::MAX) {
        return Err(format!("key {s:?} does not fit in key_t"));
    }
    // Negative keys as their two's complement (key_t is a 32-bit int).
    Ok(v as u32)
}

impl KeySelection {
    /// Parse `all` or a comma list of keys and inclusive ranges
    /// (`1234,0x1000-0x10ff`; decimal or `0x` hex; empty items ignored).
    pub fn parse(s: &str) -> Result<KeySelection, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("all") {
            return Ok(KeySelection::All);
        }
        let mut ranges = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            // A '-' after the first character separates a range (the first
            // one may be a minus sign).
            let dash = item.char_indices().skip(1).find(|&(_, c)| c == '-');
            let (lo, hi) = match dash {
                Some((i, _)) => (parse_key(&item[..i])?, parse_key(&item[i + 1..])?),
                None => {
                    let k = parse_key(item)?;
                    (k, k)
                }
            };
            if lo > hi {
                return Err(format!("empty key range {item:?}"));
            }
            ranges.push((lo, hi));
        }
        Ok(if ranges.is_empty() {
            KeySelection::None
        } else {
            KeySelection::List(ranges)
        })
    }

    /// Is `key` selected?
    pub fn selects(&self, key: i32) -> bool {
        match self {
            KeySelection::None => false,
            KeySelection::All => true,
            KeySelection::List(_) if key == dipc_wire::IPC_PRIVATE => false,
            KeySelection::List(r) => {
                let k = key as u32;
                r.iter().any(|&(lo, hi)| lo <= k && k <= hi)
            }
        }
    }
}

/// What to do when no daemon is reachable at the first distributed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// Act locally through the kernel, with one warning (DIPC's "short
    /// circuit").
    #[default]
    Local,
    /// Fail with `ECONNREFUSED`.
    Error,
}

/// The process's dipc configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub socket: PathBuf,
    pub keys: KeySelection,
    pub fallback: Fallback,
    /// `DIPC_PAGE_SIZE`: `Err` with the bad text when set but invalid
    /// (distributed `shmget` then fails with `EINVAL`).
    pub unit: Result<Option<u32>, String>,
    /// `DIPC_SHM_MODE`, likewise.
    pub shm_mode: Result<Option<ShmMode>, String>,
    /// `DIPC_QUANTUM_US`, likewise.
    pub quantum_us: Result<Option<u32>, String>,
    /// `DIPC_PREFETCH`, likewise.
    pub prefetch: Result<Option<u32>, String>,
    pub timeout: Duration,
    /// `DIPC_DIRECT`: operations on remote homes go on direct connections
    /// (the default), else through the node.
    pub direct: bool,
    /// `DIPC_SPIN_US`.
    pub spin: Duration,
    /// Problems worth one line on stderr (bad `DIPC_KEYS`, ...).
    pub warnings: Vec<String>,
}

impl Config {
    /// The configuration of this process (read once).
    pub fn get() -> &'static Config {
        static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
        CONFIG.get_or_init(|| {
            let c = Config::from_lookup(|k| std::env::var(k).ok());
            for w in &c.warnings {
                eprintln!("libsysv: {w}");
            }
            c
        })
    }

    /// Parse a configuration from a variable lookup.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Config {
        let mut warnings = Vec::new();
        let socket = get(ENV_SOCKET)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| dipc_wire::local::DEFAULT_SOCKET.to_owned())
            .into();
        let keys = match get(ENV_KEYS) {
            None => KeySelection::None,
            Some(s) => KeySelection::parse(&s).unwrap_or_else(|e| {
                warnings.push(format!("ignoring {ENV_KEYS}={s:?}: {e}"));
                KeySelection::None
            }),
        };
        let fallback = match get(ENV_FALLBACK).as_deref().map(str::trim) {
            None | Some("") | Some("local") => Fallback::Local,
            Some("error") => Fallback::Error,
            Some(other) => {
                warnings.push(format!(
                    "ignoring {ENV_FALLBACK}={other:?} (expected \"error\" or \"local\")"
                ));
                Fallback::Local
            }
        };
        let unit = match get(ENV_PAGE_SIZE) {
            None => Ok(None),
            Some(s) => match s.trim().parse::<u32>() {
                Ok(n) if n >= 4096 && n.is_power_of_two() => Ok(Some(n)),
                _ => Err(format!(
                    "{ENV_PAGE_SIZE}={s:?} is not a power of two of at least 4096"
                )),
            },
        };
        let shm_mode = match get(ENV_SHM_MODE).as_deref().map(str::trim) {
            None => Ok(None),
            Some("page") => Ok(Some(ShmMode::Page)),
            Some("segment") => Ok(Some(ShmMode::Segment)),
            Some(other) => Err(format!(
                "{ENV_SHM_MODE}={other:?} (expected \"page\" or \"segment\")"
            )),
        };
        let bounded = |var: &str, max: u32, what: &str| match get(var) {
            None => Ok(None),
            Some(s) => match s.trim().parse::<u32>() {
                Ok(n) if n <= max => Ok(Some(n)),
                _ => Err(format!("{var}={s:?} is not {what} from 0 to {max}")),
            },
        };
        let quantum_us = bounded(ENV_QUANTUM_US, MAX_QUANTUM_US, "microseconds");
        let prefetch = bounded(ENV_PREFETCH, MAX_PREFETCH, "a window in units");
        let timeout = match get(ENV_TIMEOUT_MS) {
            None => DEFAULT_TIMEOUT,
            Some(s) => match s.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    warnings.push(format!(
                        "ignoring {ENV_TIMEOUT_MS}={s:?} (expected milliseconds > 0)"
                    ));
                    DEFAULT_TIMEOUT
                }
            },
        };
        let direct = match get(ENV_DIRECT).as_deref().map(str::trim) {
            None | Some("") | Some("1") => true,
            Some("0") => false,
            Some(other) => {
                warnings.push(format!("ignoring {ENV_DIRECT}={other:?} (expected 0 or 1)"));
                true
            }
        };
        let spin = match get(ENV_SPIN_US) {
            None => DEFAULT_SPIN,
            Some(s) => match s.trim().parse::<u64>() {
                Ok(us) if us <= 1_000_000 => Duration::from_micros(us),
                _ => {
                    warnings.push(format!(
                        "ignoring {ENV_SPIN_US}={s:?} (expected microseconds, at most 1000000)"
                    ));
                    DEFAULT_SPIN
                }
            },
        };
        Config {
            socket,
            keys,
            fallback,
            unit,
            shm_mode,
            quantum_us,
            prefetch,
            timeout,
            direct,
            spin,
            warnings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Config {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Config::from_lookup(move |k| v.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone()))
    }

    #[test]
    fn keys_list_and_ranges() {
        let k = KeySelection::parse("1234, 0x1000-0x10ff,,-5").expect("parse");
        assert!(k.selects(1234));
        assert!(!k.selects(1233));
        assert!(k.selects(0x1000) && k.selects(0x1080) && k.selects(0x10ff));
        assert!(!k.selects(0x0fff) && !k.selects(0x1100));
        assert!(k.selects(-5));
        assert!(!k.selects(5));
    }

    #[test]
    fn keys_all_and_private() {
        assert!(KeySelection::parse("ALL").expect("all").selects(0));
        let k = KeySelection::parse("0-100").expect("range");
        assert!(k.selects(1));
        assert!(
            !k.selects(dipc_wire::IPC_PRIVATE),
            "a list never selects IPC_PRIVATE"
        );
        assert_eq!(KeySelection::parse(" ").expect("empty"), KeySelection::None);
        assert!(!KeySelection::None.selects(7));
    }

    #[test]
    fn keys_above_i32_max_are_negative_key_t() {
        let k = KeySelection::parse("0x80000000-0xffffffff").expect("parse");
        assert!(k.selects(-1));
        assert!(k.selects(i32::MIN));
        assert!(!k.selects(i32::MAX));
        let k = KeySelection::parse("0xdeadbeef").expect("parse");
        assert!(k.selects(0xdeadbeef_u32 as i32));
    }

    #[test]
    fn bad_keys() {
        for bad in [
            "abc",
            "12-",
            "0x10-0x5",
            "0x1ffffffff",
            "1-2-3",
            "--1",
            "+5",
            "é-1",
            "-",
        ] {
            assert!(
                KeySelection::parse(bad).is_err(),
                "{bad:?} should not parse"
            );
        }
        let c = env(&[(ENV_KEYS, "1,x")]);
        assert_eq!(c.keys, KeySelection::None);
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    }

    #[test]
    fn defaults() {
        let c = env(&[]);
        assert_eq!(c.socket, PathBuf::from(dipc_wire::local::DEFAULT_SOCKET));
        assert_eq!(c.keys, KeySelection::None);
        assert_eq!(c.fallback, Fallback::Local);
        assert_eq!(c.unit, Ok(None));
        assert_eq!(c.shm_mode, Ok(None));
        assert_eq!(c.quantum_us, Ok(None));
        assert_eq!(c.prefetch, Ok(None));
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert!(c.direct);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn values() {
        let c = env(&[
            (ENV_SOCKET, "/tmp/n.sock"),
            (ENV_FALLBACK, "error"),
            (ENV_PAGE_SIZE, "65536"),
            (ENV_SHM_MODE, "segment"),
            (ENV_QUANTUM_US, " 3000"),
            (ENV_PREFETCH, "0"),
            (ENV_TIMEOUT_MS, "250"),
            (ENV_DIRECT, "0"),
        ]);
        assert_eq!(c.socket, PathBuf::from("/tmp/n.sock"));
        assert_eq!(c.fallback, Fallback::Error);
        assert_eq!(c.unit, Ok(Some(65536)));
        assert_eq!(c.shm_mode, Ok(Some(ShmMode::Segment)));
        assert_eq!(c.quantum_us, Ok(Some(3000)));
        assert_eq!(c.prefetch, Ok(Some(0)));
        assert_eq!(c.timeout, Duration::from_millis(250));
        assert!(!c.direct);
    }

    #[test]
    fn bad_page_size_and_mode_are_errors() {
        for bad in ["4095", "6000", "2048", "x", "0"] {
            assert!(env(&[(ENV_PAGE_SIZE, bad)]).unit.is_err(), "{bad}");
        }
        assert!(env(&[(ENV_SHM_MODE, "pages")]).shm_mode.is_err());
        for bad in ["-1", "1000001", "1ms", ""] {
            assert!(env(&[(ENV_QUANTUM_US, bad)]).quantum_us.is_err(), "{bad}");
        }
        for bad in ["-1", "1025", "on"] {
            assert!(env(&[(ENV_PREFETCH, bad)]).prefetch.is_err(), "{bad}");
        }
        assert_eq!(env(&[(ENV_PREFETCH, "1024")]).prefetch, Ok(Some(1024)));
        let c = env(&[
            (ENV_TIMEOUT_MS, "0"),
            (ENV_FALLBACK, "maybe"),
            (ENV_DIRECT, "no"),
        ]);
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert!(c.direct);
        assert_eq!(c.warnings.len(), 3);
    }
}
