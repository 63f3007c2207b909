//! The Redis floor: what a user would otherwise pick to pass messages.
//!
//! A private `redis-server` (Debian's package; `scripts/setup.sh` installs
//! it) is started on a free loopback port with persistence off (`--save ""
//! --appendonly no`), and a round trip mirrors dipc's queue round trip: the
//! client `RPUSH`es a value on one list and `BLPOP`s the answer from
//! another, which an echo thread on its own connection moves across
//! (`BLPOP` then `RPUSH`). The client speaks RESP over a `TcpStream`
//! itself (a few lines; no dependency). Without `redis-server` the floor
//! is skipped with that reason ([`Error::Unavailable`]), never faked.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use crate::Error;

const PROGRAM: &str = "redis-server";
/// Bound on the server's start and on each reply.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A RESP connection.
struct Resp {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

/// A reply, as far as this floor needs one.
#[derive(Debug, PartialEq)]
enum Reply {
    Simple(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Resp {
    fn connect(port: u16) -> std::io::Result<Resp> {
        let w = TcpStream::connect(("127.0.0.1", port))?;
        w.set_nodelay(true)?;
        w.set_read_timeout(Some(TIMEOUT))?;
        let r = BufReader::new(w.try_clone()?);
        Ok(Resp { w, r })
    }

    fn command(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        self.w.write_all(&buf)?;
        read_reply(&mut self.r)
    }
}

fn bad(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(bad("redis closed the connection".into()));
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(line.len().min(1));
    let int = || {
        rest.parse::<i64>()
            .map_err(|_| bad(format!("bad RESP line {line:?}")))
    };
    match kind {
        "+" => Ok(Reply::Simple(rest.to_string())),
        "-" => Err(bad(format!("redis error: {rest}"))),
        ":" => Ok(Reply::Int(int()?)),
        "$" => {
            let n = int()?;
            if n < 0 {
                return Ok(Reply::Bulk(None));
            }
            // Read into spare capacity: no zeroing first (the peer's
            // client pays no more than it must).
            let want = n as usize + 2;
            let mut v = Vec::with_capacity(want);
            if r.take(want as u64).read_to_end(&mut v)? != want {
                return Err(bad("redis closed the connection in a reply".into()));
            }
            v.truncate(n as usize);
            Ok(Reply::Bulk(Some(v)))
        }
        "*" => {
            let n = int()?;
            let items = (0..n.max(0))
                .map(|_| read_reply(r))
                .collect::<Result<_, _>>()?;
            Ok(Reply::Array(items))
        }
        _ => Err(bad(format!("bad RESP line {line:?}"))),
    }
}

/// The value of a `BLPOP` reply (`[list, value]`).
fn popped(reply: Reply) -> Option<Vec<u8>> {
    match reply {
        Reply::Array(mut v) if v.len() == 2 => match v.pop() {
            Some(Reply::Bulk(Some(b))) => Some(b),
            _ => None,
        },
        _ => None,
    }
}

/// A private redis-server, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Result<Server, Error> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| Error::io("redis floor: finding a free port", e))?;
        let child = Command::new(PROGRAM)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::Unavailable {
                    what: format!(
                        "{PROGRAM} is not installed (Debian: apt-get install redis-server; \
                         scripts/setup.sh does)"
                    ),
                },
                _ => Error::io(format!("starting {PROGRAM}"), e),
            })?;
        let mut server = Server { child, port };
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(mut c) = Resp::connect(port)
                && c.command(&[b"PING"]).ok() == Some(Reply::Simple("PONG".into()))
            {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(Error::Cluster {
                    detail: format!("{PROGRAM} on port {port} exited: {status}"),
                });
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("{PROGRAM} answering PING on port {port}"),
                    after: TIMEOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rtt(size: usize, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    let server = Server::start()?;
    let io = |what: &str| {
        let what = format!("redis floor: {what}");
        move |e| Error::io(what.clone(), e)
    };
    let mut client = Resp::connect(server.port).map_err(io("connecting"))?;
    let mut echo_conn = Resp::connect(server.port).map_err(io("connecting the echo"))?;
    let echo = std::thread::Builder::new()
        .name("redis-echo".into())
        .spawn(move || -> std::io::Result<()> {
            for _ in 0..total {
                let v = popped(echo_conn.command(&[b"BLPOP", b"req", b"0"])?)
                    .ok_or_else(|| bad("echo: BLPOP answered no value".into()))?;
                echo_conn.command(&[b"RPUSH", b"resp", &v])?;
            }
            Ok(())
        })
        .map_err(io("starting the echo thread"))?;
    let mut out = Vec::with_capacity(total);
    let mut result = Ok(());
    for i in 0..total {
        let want = vec![b'a' + (i % 26) as u8; size];
        let t = Instant::now();
        let got = client
            .command(&[b"RPUSH", b"req", &want])
            .and_then(|_| client.command(&[b"BLPOP", b"resp", b"0"]));
        let dt = t.elapsed().as_nanos() as u64;
        match got.map(popped) {
            Ok(Some(v)) if v == want => out.push(dt),
            Ok(other) => {
                result = Err(Error::WrongData {
                    detail: format!(
                        "redis floor: round trip {i} answered {:?} bytes",
                        other.map(|v| v.len())
                    ),
                });
                break;
            }
            Err(e) => {
                result = Err(Error::io(format!("redis floor: round trip {i}"), e));
                break;
            }
        }
    }
    pb.inc(out.len() as u64);
    // On an early stop the echo thread's BLPOP ends when the server dies;
    // otherwise it has one reply to read yet, so the server lives until
    // it is done.
    if result.is_err() {
        drop(client);
        drop(server);
        let _ = echo.join();
        return result.map(|()| out);
    }
    let echoed = echo.join();
    drop(server);
    result?;
    match echoed {
        Ok(r) => r.map_err(io("echo thread"))?,
        Err(_) => {
            return Err(Error::WrongData {
                detail: "redis floor: the echo thread panicked".into(),
            });
        }
    }
    Ok(out)
}

/// Redis round trip, 8 bytes.
pub fn rtt_8(total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    rtt(8, total, pb)
}
/// Redis round trip, 1 KiB.
pub fn rtt_1k(total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    rtt(1024, total, pb)
}
/// Redis round trip, 8 KiB.
pub fn rtt_8k(total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    rtt(8192, total, pb)
}
/// Redis round trip, 16 KiB.
pub fn rtt_16k(total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    rtt(16384, total, pb)
}
/// Redis round trip, 64 KiB.
pub fn rtt_64k(total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    rtt(65536, total, pb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_replies_parse() {
        let mut r = &b"*2\r\n$3\r\nreq\r\n$5\r\nhello\r\n:7\r\n$-1\r\n+OK\r\n"[..];
        let a = read_reply(&mut r).expect("array");
        assert_eq!(popped(a), Some(b"hello".to_vec()));
        assert_eq!(read_reply(&mut r).expect("int"), Reply::Int(7));
        assert_eq!(read_reply(&mut r).expect("nil"), Reply::Bulk(None));
        assert_eq!(read_reply(&mut r).expect("ok"), Reply::Simple("OK".into()));
        assert!(read_reply(&mut &b"-ERR wrong\r\n"[..]).is_err());
        assert!(read_reply(&mut &b"?\r\n"[..]).is_err());
        assert!(read_reply(&mut &b""[..]).is_err());
    }
}
