//! Precise one-shot timers for the hold-time quantum.
//!
//! tokio's timers tick in whole milliseconds, so a quantum of 100 us
//! would last one to two milliseconds. One thread per node keeps the
//! pending deadlines in a heap and sleeps until the next one (a futex
//! timeout: tens of microseconds of slack), then hands each expiry to the
//! node's runtime, which feeds it to the coherence engine
//! ([`Node::quantum_over`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use dipc_wire::ObjectId;
use tokio::runtime::Handle;
use tracing::warn;

use crate::node::Node;

/// One pending quantum: when it ends, and which (segment, unit, timer id).
type Entry = Reverse<(Instant, ObjectId, u32, u64)>;

/// The node's timer thread, started at the first timer.
#[derive(Default)]
pub(crate) struct Timers {
    tx: Mutex<Option<mpsc::Sender<Entry>>>,
}

impl Timers {
    /// End the quantum `id` of (seg, unit) after `after`, on runtime `rt`.
    /// False if the timer thread cannot run (the caller ends it itself).
    pub(crate) fn start(
        &self,
        node: &Arc<Node>,
        rt: &Handle,
        after: Duration,
        (seg, unit, id): (ObjectId, u32, u64),
    ) -> bool {
        let entry = Reverse((Instant::now() + after, seg, unit, id));
        let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if tx.is_none() {
            let (new_tx, rx) = mpsc::channel();
            let (node, rt) = (Arc::downgrade(node), rt.clone());
            let spawned = std::thread::Builder::new()
                .name("dipc-quantum".into())
                .spawn(move || run(&node, &rt, &rx));
            if let Err(e) = spawned {
                warn!("cannot start the quantum timer thread: {e}");
                return false;
            }
            *tx = Some(new_tx);
        }
        tx.as_ref().is_some_and(|tx| tx.send(entry).is_ok())
    }
}

fn run(node: &Weak<Node>, rt: &Handle, rx: &mpsc::Receiver<Entry>) {
    let mut heap: BinaryHeap<Entry> = BinaryHeap::new();
    loop {
        let got = match heap.peek() {
            Some(Reverse((at, seg, unit, id))) => {
                let now = Instant::now();
                if *at <= now {
                    let (seg, unit, id) = (*seg, *unit, *id);
                    heap.pop();
                    let Some(node) = node.upgrade() else { return };
                    rt.spawn(async move { node.quantum_over(seg, unit, id) });
                    continue;
                }
                rx.recv_timeout(*at - now)
            }
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(entry) => heap.push(entry),
            Err(RecvTimeoutError::Timeout) => {}
            // The node is gone: nobody would take the expiries.
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
