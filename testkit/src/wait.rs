//! Bounded polling and free ports.
//!
//! Tests wait for conditions of other processes (a port accepts, a member
//! is shown down) by polling with a deadline: the daemons expose no
//! test-only notification channel, and a bounded poll turns "never
//! happens" into a clear error instead of a hung test.

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Interval between two evaluations of a polled condition.
pub(crate) const POLL_EVERY: Duration = Duration::from_millis(50);

/// Poll `f` until it returns `Ok(true)`, at most for `timeout`.
///
/// `Ok(false)` and `Err(_)` both mean "not yet" (a status query may fail
/// while a referee restarts); on timeout the error names `what` and carries
/// the last error `f` returned.
pub fn poll_until(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut last_err = None;
    loop {
        match f() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() >= timeout {
            match last_err {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0 and
/// released). Another process may take it before we use it: callers retry
/// on "address in use".
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()
        .context("local address of a listener")?
        .port())
}
