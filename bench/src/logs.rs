//! The embedded daemons' logs, kept in memory.
//!
//! `dipc demo` and `dipc bench` run a referee and two nodes inside their
//! own process; their `tracing` output would interleave with the table on
//! the terminal, yet it is exactly what explains a failed scenario. So the
//! log goes into a bounded ring of lines ([`LogBuffer`]), each tagged with
//! the thread that wrote it (every daemon runs on its own named thread:
//! `referee`, `node-1`, `node-2`), and a failure report shows its tail.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use tracing_subscriber::fmt::MakeWriter;

/// Lines kept by default.
pub const DEFAULT_LINES: usize = 4000;

/// A bounded, shared ring of log lines. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LogBuffer {
    inner: Arc<Mutex<Ring>>,
}

#[derive(Debug)]
struct Ring {
    lines: VecDeque<String>,
    cap: usize,
}

impl LogBuffer {
    /// An empty buffer keeping the last `cap` lines.
    pub fn new(cap: usize) -> LogBuffer {
        LogBuffer {
            inner: Arc::new(Mutex::new(Ring {
                lines: VecDeque::with_capacity(cap.min(1024)),
                cap: cap.max(1),
            })),
        }
    }

    /// Append the lines of `text` (a trailing newline ends the last one).
    pub fn push_text(&self, text: &str) {
        let mut r = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for line in text.lines() {
            if r.lines.len() == r.cap {
                r.lines.pop_front();
            }
            r.lines.push_back(line.to_string());
        }
    }

    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let r = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let skip = r.lines.len().saturating_sub(n);
        r.lines.iter().skip(skip).cloned().collect()
    }

    /// Make this buffer the destination of the process's `tracing` events
    /// (`RUST_LOG` filters, default `default_filter`), with thread names.
    /// Returns false if a global subscriber was already set (the buffer
    /// then stays empty).
    pub fn install(&self, default_filter: &str) -> bool {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_thread_names(true)
            .with_writer(self.clone())
            .try_init()
            .is_ok()
    }
}

/// Collects one event's bytes and appends them as lines when dropped.
#[derive(Debug)]
pub struct EventWriter {
    buf: LogBuffer,
    bytes: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        self.buf.push_text(&String::from_utf8_lossy(&self.bytes));
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter {
            buf: self.clone(),
            bytes: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines() {
        let b = LogBuffer::new(3);
        b.push_text("a\nb\n");
        {
            let mut w = b.make_writer();
            w.write_all(b"c\nd\ne").expect("write");
            assert_eq!(b.tail(10), ["a", "b"], "nothing before the event ends");
        }
        assert_eq!(b.tail(10), ["c", "d", "e"]);
        assert_eq!(b.tail(2), ["d", "e"]);
        assert!(b.tail(0).is_empty());
    }
}
