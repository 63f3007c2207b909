//! The agent commands beyond page accesses: message queues, semaphore
//! sets and an atomic counter, through the kernel or through dipc.
//!
//! Each command names its path (`k`: the kernel by raw syscall, `d`:
//! libsysv with `IPC_DIPC`), so one agent binary measures both dipc and
//! its kernel floor. Every timed loop checks what it moved (a message's
//! length and bytes, a counter's final value is checked by the
//! coordinator), so a broken path is an error, never a number.
//!
//! ```text
//! msgget <via> <key> <create> [<qbytes>]  -> ok <id>   with qbytes: msg_qbytes set (IPC_SET)
//! msgrm <via> <id>                        -> ok
//! msgecho <via> <id> <count> <size>       -> ok       receive type 1, send it back as type 2
//! msgrtt <via> <id> <count> <size>        -> ok <ns>... send type 1, receive type 2, timed
//! msgsend <via> <id> <count> <size>       -> ok <ns>... send type 3, each send timed
//! msgdrain <via> <id> <count> <size>      -> ok       receive type 3
//! semget <via> <key> <nsems> <create>     -> ok <id>
//! semop <via> <id> <num> <delta>          -> ok
//! semrm <via> <id>                        -> ok
//! tsemop <via> <id> <count>               -> ok <ns>... +1 and -1 on sem 0 in turn, timed
//! tlock <via> <id> <count>                -> ok <ns>... -1 then +1 on sem 0 (a lock), timed
//! tbarrier <via> <id> <rounds> <n> <lead> -> ok <ns>... n-party barrier on sems 0..3, per round
//! ```

use std::time::Instant;

use crate::sys::{self, Via};

fn num<T: std::str::FromStr>(w: Option<&str>, what: &str) -> Result<T, String> {
    let w = w.ok_or_else(|| format!("missing {what}"))?;
    w.parse().map_err(|_| format!("bad {what} {w:?}"))
}

fn join(ns: &[u64]) -> String {
    let mut out = String::with_capacity(ns.len() * 8);
    for (i, v) in ns.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&v.to_string());
    }
    out
}

/// The text of message `i` of `size` bytes: never all zeros.
fn text(i: usize, size: usize) -> Vec<u8> {
    vec![(i % 251) as u8 + 1; size]
}

/// Run an IPC command; `None` when `cmd` is not one of them.
pub fn execute<'a>(
    cmd: &str,
    w: &mut impl Iterator<Item = &'a str>,
) -> Option<Result<String, String>> {
    let known = matches!(
        cmd,
        "msgget"
            | "msgrm"
            | "msgecho"
            | "msgrtt"
            | "msgsend"
            | "msgdrain"
            | "semget"
            | "semop"
            | "semrm"
            | "tsemop"
            | "tlock"
            | "tbarrier"
    );
    if !known {
        return None;
    }
    Some(run(cmd, w))
}

fn run<'a>(cmd: &str, w: &mut impl Iterator<Item = &'a str>) -> Result<String, String> {
    let via_word: String = num(w.next(), "path (k or d)")?;
    let via = Via::parse(&via_word).ok_or_else(|| format!("bad path {via_word:?}"))?;
    let mut buf = Vec::new();
    match cmd {
        "msgget" | "semget" => {
            let key: i32 = num::<u32>(w.next(), "key").map(|k| k as i32)?;
            let nsems: i32 = if cmd == "semget" {
                num(w.next(), "nsems")?
            } else {
                0
            };
            let create: u8 = num(w.next(), "create flag")?;
            let mut flags = 0o600;
            if create == 1 {
                flags |= libc::IPC_CREAT | libc::IPC_EXCL;
            }
            let id = if cmd == "msgget" {
                sys::msgget(via, key, flags)
            } else {
                sys::semget(via, key, nsems, flags)
            };
            let id = id.map_err(|e| format!("{cmd}({key:#x}): {e}"))?;
            if let Some(q) = w.next().filter(|_| cmd == "msgget") {
                let qbytes: u64 = num(Some(q), "qbytes")?;
                sys::msg_set_qbytes(via, id, qbytes)
                    .map_err(|e| format!("msgctl({id}, IPC_SET, qbytes {qbytes}): {e}"))?;
            }
            Ok(id.to_string())
        }
        "msgrm" | "semrm" => {
            let id: i32 = num(w.next(), "id")?;
            let r = if cmd == "msgrm" {
                sys::msgrm(via, id)
            } else {
                sys::semrm(via, id)
            };
            r.map(|()| String::new())
                .map_err(|e| format!("{cmd}({id}): {e}"))
        }
        "msgecho" | "msgrtt" | "msgsend" | "msgdrain" => {
            let id: i32 = num(w.next(), "id")?;
            let count: usize = num(w.next(), "count")?;
            let size: usize = num(w.next(), "size")?;
            let mut out = Vec::with_capacity(count);
            let mut rbuf = Vec::new();
            for i in 0..count {
                // As a C program would: the message (type and text) is
                // built before the clock starts, and the echo sends back
                // the very buffer it received into (no copies of the
                // harness's own inside a round trip).
                // Not built by the echo: it would lengthen the round trip
                // it serves (and the echo cannot know the sender's index).
                let want = match cmd {
                    "msgecho" => Vec::new(),
                    _ => text(i, size),
                };
                let got = match cmd {
                    "msgecho" => {
                        let n = sys::msgrcv(via, id, 1, size, &mut rbuf)
                            .map_err(|e| format!("msgrcv {i}: {e}"))?;
                        rbuf[..8].copy_from_slice(&2i64.to_ne_bytes());
                        sys::msgsnd_buf(via, id, &rbuf[..8 + n])
                            .map_err(|e| format!("msgsnd {i}: {e}"))?;
                        &rbuf[8..8 + n]
                    }
                    "msgrtt" => {
                        sys::msg_buf(1, &want, &mut buf);
                        let t = Instant::now();
                        sys::msgsnd_buf(via, id, &buf).map_err(|e| format!("msgsnd {i}: {e}"))?;
                        let n = sys::msgrcv(via, id, 2, size, &mut rbuf)
                            .map_err(|e| format!("msgrcv {i}: {e}"))?;
                        out.push(t.elapsed().as_nanos() as u64);
                        &rbuf[8..8 + n]
                    }
                    "msgsend" => {
                        sys::msg_buf(3, &want, &mut buf);
                        let t = Instant::now();
                        sys::msgsnd_buf(via, id, &buf).map_err(|e| format!("msgsnd {i}: {e}"))?;
                        out.push(t.elapsed().as_nanos() as u64);
                        &want[..]
                    }
                    _ => {
                        let n = sys::msgrcv(via, id, 3, size, &mut rbuf)
                            .map_err(|e| format!("msgrcv {i}: {e}"))?;
                        &rbuf[8..8 + n]
                    }
                };
                // The echo checks the size only.
                if got.len() != size || (cmd != "msgecho" && got != want) {
                    return Err(format!(
                        "message {i}: {} bytes starting {:?}, expected {size} bytes of {:#04x}",
                        got.len(),
                        got.first(),
                        want.first().copied().unwrap_or(0)
                    ));
                }
            }
            Ok(join(&out))
        }
        "semop" => {
            let id: i32 = num(w.next(), "id")?;
            let n: u16 = num(w.next(), "semnum")?;
            let delta: i16 = num(w.next(), "delta")?;
            sys::semop(via, id, &[(n, delta, 0)])
                .map(|()| String::new())
                .map_err(|e| format!("semop({id}, {n}, {delta}): {e}"))
        }
        "tsemop" | "tlock" => {
            let id: i32 = num(w.next(), "id")?;
            let count: usize = num(w.next(), "count")?;
            let mut out = Vec::with_capacity(count);
            for i in 0..count {
                let t = Instant::now();
                let r = if cmd == "tsemop" {
                    let delta = if i % 2 == 0 { 1 } else { -1 };
                    sys::semop(via, id, &[(0, delta, 0)])
                } else {
                    sys::semop(via, id, &[(0, -1, 0)])
                        .and_then(|()| sys::semop(via, id, &[(0, 1, 0)]))
                };
                r.map_err(|e| format!("semop {i}: {e}"))?;
                out.push(t.elapsed().as_nanos() as u64);
            }
            Ok(join(&out))
        }
        "tbarrier" => {
            let id: i32 = num(w.next(), "id")?;
            let rounds: usize = num(w.next(), "rounds")?;
            let n: i16 = num(w.next(), "parties")?;
            let lead: u8 = num(w.next(), "leader flag")?;
            barrier(via, id, rounds, n, lead == 1).map(|ns| join(&ns))
        }
        _ => Err(format!("unknown command {cmd:?}")),
    }
}

/// `rounds` rounds of an `n`-party barrier on semaphores 0, 1 and 2 of
/// set `id` (sem 0 starts at `n`, the others at 0). Round `r` uses sem
/// `r % 3`: arrive with -1, leave when it reads zero. Before arriving at
/// round `r` the leader adds `n` to sem `(r + 1) % 3`: that sem was last
/// used in round `r - 2`, which every party has left (they all arrived at
/// `r - 1`, which the leader has passed), and no party can arrive at
/// `r + 1` before the leader arrived at `r`. The samples are the times
/// between this party's successive passes.
fn barrier(via: Via, id: i32, rounds: usize, n: i16, lead: bool) -> Result<Vec<u64>, String> {
    let mut out = Vec::with_capacity(rounds);
    let mut last = Instant::now();
    for r in 0..rounds {
        let s = (r % 3) as u16;
        if lead {
            sys::semop(via, id, &[(((r + 1) % 3) as u16, n, 0)])
                .map_err(|e| format!("barrier round {r}: reset: {e}"))?;
        }
        sys::semop(via, id, &[(s, -1, 0)])
            .map_err(|e| format!("barrier round {r}: arrive: {e}"))?;
        sys::semop(via, id, &[(s, 0, 0)]).map_err(|e| format!("barrier round {r}: wait: {e}"))?;
        let now = Instant::now();
        out.push((now - last).as_nanos() as u64);
        last = now;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(line: &str) -> Option<Result<String, String>> {
        let mut w = line.split_whitespace();
        let cmd = w.next().unwrap_or("");
        execute(cmd, &mut w)
    }

    #[test]
    fn other_commands_are_left_alone_and_bad_arguments_refused() {
        assert!(exec("tread 0 1 0").is_none());
        assert!(exec("msgget x 1 1").expect("ipc").is_err());
        assert!(exec("msgrtt k").expect("ipc").is_err());
        assert!(exec("tbarrier k 1 2").expect("ipc").is_err());
    }

    /// The kernel path for real: a private queue, one process playing both
    /// ends (send type 1, echo... here: send type 3 then drain).
    #[test]
    fn kernel_queue_send_and_drain() {
        let id = exec(&format!("msgget k {} 1 4096", libc::IPC_PRIVATE))
            .expect("ipc")
            .expect("msgget");
        let sent = exec(&format!("msgsend k {id} 5 100"))
            .expect("ipc")
            .expect("send");
        assert_eq!(sent.split_whitespace().count(), 5);
        assert_eq!(
            exec(&format!("msgdrain k {id} 5 100")),
            Some(Ok(String::new()))
        );
        exec(&format!("msgrm k {id}")).expect("ipc").expect("rm");
    }

    /// A one-party barrier never waits; a lock on a fresh set (value 0)
    /// would, so it is opened first.
    #[test]
    fn kernel_semaphores_barrier_and_lock() {
        let id = exec(&format!("semget k {} 3 1", libc::IPC_PRIVATE))
            .expect("ipc")
            .expect("semget");
        exec(&format!("semop k {id} 0 1"))
            .expect("ipc")
            .expect("init");
        let b = exec(&format!("tbarrier k {id} 6 1 1"))
            .expect("ipc")
            .expect("barrier");
        assert_eq!(b.split_whitespace().count(), 6);
        exec(&format!("semop k {id} 0 1"))
            .expect("ipc")
            .expect("open");
        let l = exec(&format!("tlock k {id} 4"))
            .expect("ipc")
            .expect("lock");
        assert_eq!(l.split_whitespace().count(), 4);
        exec(&format!("semrm k {id}")).expect("ipc").expect("rm");
    }
}
