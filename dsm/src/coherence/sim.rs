//! A deterministic simulator of a cluster of coherence engines, and an
//! exhaustive explorer of its interleavings (feature `sim`, and the crate's
//! own tests).
//!
//! A [`World`] holds N [`Engine`]s, one FIFO queue per directed link, and a
//! model of what the daemons would do with the actions: a *value* per (node,
//! unit) standing for the bytes (`Send { with_data }` carries the sender's
//! current value, `Install` stores the payload, `Invalidate` clears it), and
//! the *rights* local mappings have (set by `Resolve`, lowered by `Downgrade`,
//! cleared by `Invalidate`). Local processes are threads that issue accesses:
//! one whose mapping already allows it is applied at once (as the hardware
//! would); otherwise the thread blocks in [`Engine::fault`] until its
//! `Resolve`, when the access is applied atomically. Every write stores a
//! globally fresh value, so a read that returns anything but the latest write
//! of its unit is caught.
//!
//! After every step [`World::check`] verifies: at most one node holds a unit
//! `Modified`, and then nobody else holds a copy (in the engines' states and
//! in the mappings' rights); every copy a node holds or maps has the latest
//! value; a mapping never has more rights than the engine's state; the
//! directory matches the holders whenever nothing is in flight on a unit.
//! Each action is checked as it is performed (no message to self, no bytes
//! sent from a hole or read while still mapped writable, no `InvAck` before
//! the copy is dropped, no install without payload, every waiter resolved once
//! with the rights it asked for, no `Fail`/`Ignored`). A run that stops with
//! blocked accesses is a deadlock; one that exceeds its step bound a
//! livelock.
//!
//! Transfer modes: a segment of one unit is segment mode; a [`SegSpec`] may
//! set a hold-time quantum and a prefetch window. Timers the engines set
//! ([`Action::SetTimer`]) are world events: the explorer lets each fire at
//! any moment (every timing at once), random runs keep a virtual clock that
//! advances with every step and fire a timer only once its time has come.
//! Every step checks that a node never drops or downgrades a unit while it
//! holds it within its quantum.
//!
//! Node failure: a [`Config`] may name a node that crashes
//! ([`Step::Crash`]: its engine stops, its memory and blocked accesses
//! vanish, messages to it are lost; those it sent before may still be
//! delivered until a survivor hears of the crash). Each survivor then hears
//! of it at a moment of its own ([`Step::Down`], [`Engine::node_down`]).
//! The invariants above are checked over the live nodes; an access may now
//! end in `Fail`, but only for a unit the live home declares lost, or on a
//! segment whose home crashed; a resolved read still sees the latest
//! write, so a read never returns an older value or zeros. Random runs
//! crash the node at a random step; the explorer at every possible step.
//!
//! [`run_random`] drives a world with a seeded choice among the deliverable
//! link heads and the threads able to issue an access; a failure carries the
//! seed, the schedule and a readable trace, and [`replay`] re-runs a
//! schedule. [`explore`] visits every interleaving (depth first, with state
//! hashing and cycle detection) of a small configuration.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};

use super::{Action, CohMsg, Engine, NodeId, SegId, SegOpts, Unit, UnitState, Waiter};

/// A small deterministic generator (SplitMix64): schedules must replay
/// identically whatever `rand` version the workspace uses.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u32) -> bool {
        self.below(100) < u64::from(percent)
    }
}

/// One segment of a simulated cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegSpec {
    pub seg: SegId,
    pub home: NodeId,
    /// 1 is segment mode (the whole segment is one unit).
    pub units: u32,
    /// Hold-time quantum (virtual microseconds), 0 for none.
    pub quantum_us: u64,
    /// Largest prefetch window, 0 for none.
    pub prefetch: u32,
}

impl SegSpec {
    /// A page-mode segment without quantum or prefetch.
    pub fn new(seg: SegId, home: NodeId, units: u32) -> Self {
        SegSpec {
            seg,
            home,
            units,
            quantum_us: 0,
            prefetch: 0,
        }
    }

    fn opts(&self) -> SegOpts {
        SegOpts {
            quantum_us: self.quantum_us,
            prefetch: self.prefetch,
        }
    }
}

/// A simulated cluster and its workload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Config {
    /// Nodes are numbered `0..nodes`.
    pub nodes: u32,
    pub segments: Vec<SegSpec>,
    /// Local threads per node, i.e. how many accesses may wait at once.
    pub threads: u32,
    /// Accesses each node issues in a run.
    pub accesses: u32,
    /// Random runs: share of writes among accesses.
    pub write_percent: u32,
    /// Random runs: share of accesses that call `fault` even though the
    /// mapping allows them (the daemon may call it anyway).
    pub refault_percent: u32,
    /// Random runs: share of accesses that go to the unit after the node's
    /// previous access (sequential runs, for prefetch).
    pub sequential_percent: u32,
    /// The node that may crash during the run (`None`: no failure).
    pub crash: Option<NodeId>,
}

impl Config {
    /// A random configuration: 2-5 nodes, 1-2 segments with 1-4 units in
    /// all, 1-3 threads and 2-11 accesses per node.
    pub fn random(rng: &mut Rng) -> Self {
        let nodes = 2 + rng.below(4) as u32;
        let mut segments = vec![SegSpec::new(
            1,
            rng.below(u64::from(nodes)) as u32,
            1 + rng.below(3) as u32,
        )];
        if rng.percent(50) {
            segments.push(SegSpec::new(2, rng.below(u64::from(nodes)) as u32, 1));
        }
        let mut cfg = Config {
            nodes,
            segments,
            threads: 1 + rng.below(3) as u32,
            accesses: 2 + rng.below(10) as u32,
            write_percent: 20 + rng.below(61) as u32,
            refault_percent: rng.below(30) as u32,
            sequential_percent: 0,
            crash: None,
        };
        // Transfer modes on a third of the seeds each.
        for s in cfg.segments.iter_mut() {
            if rng.percent(33) {
                s.quantum_us = 1 + rng.below(300);
            }
            if rng.percent(33) {
                s.units += rng.below(5) as u32;
                s.prefetch = 1 + rng.below(4) as u32;
            }
        }
        if rng.percent(50) {
            cfg.sequential_percent = rng.below(90) as u32;
        }
        // A node crashes on a third of the seeds (a home on some of them).
        if rng.percent(33) {
            cfg.crash = Some(rng.below(u64::from(nodes)) as u32);
        }
        cfg
    }
}

/// One step of a simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Deliver the head of the link `from -> to`.
    Deliver { from: NodeId, to: NodeId },
    /// The lowest idle thread of `node` accesses a unit; with `refault` it
    /// calls `fault` even if its mapping allows the access.
    Access {
        node: NodeId,
        seg: SegId,
        unit: Unit,
        write: bool,
        refault: bool,
    },
    /// The timer a node set on a unit fires.
    Fire {
        node: NodeId,
        seg: SegId,
        unit: Unit,
    },
    /// The node crashes.
    Crash { node: NodeId },
    /// Live node `node` hears that `dead` crashed.
    Down { node: NodeId, dead: NodeId },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Step::Deliver { from, to } => write!(f, "deliver {from}->{to}"),
            Step::Access {
                node,
                seg,
                unit,
                write,
                refault,
            } => {
                let kind = if write { "write" } else { "read" };
                let re = if refault { " (refault)" } else { "" };
                write!(f, "node {node} {kind} s{seg}.u{unit}{re}")
            }
            Step::Fire { node, seg, unit } => write!(f, "node {node} timer s{seg}.u{unit}"),
            Step::Crash { node } => write!(f, "node {node} crashes"),
            Step::Down { node, dead } => write!(f, "node {node} hears node {dead} is down"),
        }
    }
}

/// The rights local mappings of a node have on a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Right {
    Read,
    Write,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Packet {
    msg: CohMsg,
    /// The sender's value when the message was sent with data.
    data: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Blocked {
    node: NodeId,
    thread: usize,
    seg: SegId,
    unit: Unit,
    write: bool,
}

/// The whole simulated cluster: engines, links, data model and workload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct World {
    cfg: Config,
    engines: Vec<Engine>,
    links: BTreeMap<(NodeId, NodeId), VecDeque<Packet>>,
    values: BTreeMap<(NodeId, SegId, Unit), u64>,
    rights: BTreeMap<(NodeId, SegId, Unit), Right>,
    latest: BTreeMap<(SegId, Unit), u64>,
    next_value: u64,
    /// Per node, per thread: the waiter it is blocked on.
    threads: Vec<Vec<Option<Waiter>>>,
    budget: Vec<u32>,
    /// Per node: the number of its next waiter (waiter ids are
    /// `node << 32 | number`, so nodes do not share a counter and the order
    /// in which different nodes fault does not create distinct states).
    next_waiter: Vec<u32>,
    blocked: BTreeMap<Waiter, Blocked>,
    /// The timers set and not fired: (node, seg, unit) -> (id, due time).
    timers: BTreeMap<(NodeId, SegId, Unit), (u64, u64)>,
    /// Virtual time (microseconds) of random runs; the explorer leaves it
    /// at 0 and lets timers fire at any moment.
    now: u64,
    /// Per node: the unit of its last access (sequential runs).
    cursor: Vec<Unit>,
    /// Timers whose firing gave deferred answers or started held-back
    /// transactions (not part of the state: statistics only).
    deferred_served: u64,
    /// The crashed node, once it crashed.
    crashed: Option<NodeId>,
    /// The live nodes that heard of the crash.
    notified: Vec<bool>,
    /// Accesses that failed (statistics only).
    failed: u64,
}

type Log<'a> = Option<&'a mut Vec<String>>;

fn log(out: &mut Log<'_>, line: impl FnOnce() -> String) {
    if let Some(out) = out.as_deref_mut() {
        out.push(line());
    }
}

impl World {
    /// A cluster where every segment was created on its home (which holds
    /// every unit, all zeros) and attached everywhere else.
    pub fn new(cfg: &Config) -> Self {
        let mut engines: Vec<Engine> = (0..cfg.nodes).map(Engine::new).collect();
        let mut values = BTreeMap::new();
        let mut latest = BTreeMap::new();
        for s in &cfg.segments {
            for e in engines.iter_mut() {
                e.add_segment_with(s.seg, s.home, s.units, s.opts());
            }
            for u in 0..s.units {
                values.insert((s.home, s.seg, u), 0);
                latest.insert((s.seg, u), 0);
            }
        }
        World {
            cfg: cfg.clone(),
            engines,
            links: BTreeMap::new(),
            values,
            rights: BTreeMap::new(),
            latest,
            next_value: 0,
            threads: vec![vec![None; cfg.threads as usize]; cfg.nodes as usize],
            budget: vec![cfg.accesses; cfg.nodes as usize],
            next_waiter: vec![0; cfg.nodes as usize],
            blocked: BTreeMap::new(),
            timers: BTreeMap::new(),
            now: 0,
            cursor: vec![0; cfg.nodes as usize],
            deferred_served: 0,
            crashed: None,
            notified: vec![false; cfg.nodes as usize],
            failed: 0,
        }
    }

    /// The engine of a node.
    pub fn engine(&self, node: NodeId) -> Option<&Engine> {
        self.engines.get(node as usize)
    }

    fn can_issue(&self, node: usize) -> bool {
        self.budget[node] > 0 && self.threads[node].iter().any(Option::is_none)
    }

    fn is_live(&self, node: NodeId) -> bool {
        self.crashed != Some(node)
    }

    /// The failure steps possible now: the crash, then each survivor
    /// hearing of it.
    fn failure_steps(&self) -> Vec<Step> {
        match (self.cfg.crash, self.crashed) {
            (Some(node), None) => vec![Step::Crash { node }],
            (_, Some(dead)) => (0..self.cfg.nodes)
                .filter(|&n| n != dead && !self.notified[n as usize])
                .map(|node| Step::Down { node, dead })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Every step possible now (accesses without `refault`).
    pub fn enabled(&self) -> Vec<Step> {
        let mut steps: Vec<Step> = self
            .links
            .keys()
            .map(|&(from, to)| Step::Deliver { from, to })
            .collect();
        steps.extend(
            self.timers
                .keys()
                .map(|&(node, seg, unit)| Step::Fire { node, seg, unit }),
        );
        steps.extend(self.failure_steps());
        for node in 0..self.cfg.nodes {
            if !self.can_issue(node as usize) {
                continue;
            }
            for s in &self.cfg.segments {
                for unit in 0..s.units {
                    for write in [false, true] {
                        steps.push(Step::Access {
                            node,
                            seg: s.seg,
                            unit,
                            write,
                            refault: false,
                        });
                    }
                }
            }
        }
        steps
    }

    /// A random step: uniform among deliverable links, due timers and
    /// nodes able to issue an access; `None` when nothing can happen. The
    /// virtual clock advances by a random amount first, and jumps to the
    /// next timer when nothing else can happen.
    pub fn random_step(&mut self, rng: &mut Rng) -> Option<Step> {
        self.now += 1 + rng.below(40);
        let links = self.links.len();
        let nodes: Vec<NodeId> = (0..self.cfg.nodes)
            .filter(|&n| self.can_issue(n as usize))
            .collect();
        if links == 0
            && nodes.is_empty()
            && let Some(&(_, at)) = self.timers.values().min_by_key(|(_, at)| *at)
        {
            self.now = self.now.max(at);
        }
        let mut due: Vec<Step> = self
            .timers
            .iter()
            .filter(|(_, (_, at))| *at <= self.now)
            .map(|(&(node, seg, unit), _)| Step::Fire { node, seg, unit })
            .collect();
        // The crash comes at a random step (about one chance in 25 each);
        // hearing of it is as likely as any other event.
        for f in self.failure_steps() {
            let idle = links == 0 && nodes.is_empty() && due.is_empty();
            if !matches!(f, Step::Crash { .. }) || idle || rng.percent(4) {
                due.push(f);
            }
        }
        let total = links + due.len() + nodes.len();
        if total == 0 {
            return None;
        }
        let pick = rng.below(total as u64) as usize;
        if let Some(&(from, to)) = self.links.keys().nth(pick) {
            return Some(Step::Deliver { from, to });
        }
        if let Some(&fire) = due.get(pick - links) {
            return Some(fire);
        }
        let node = nodes[pick - links - due.len()];
        let s = self.cfg.segments[rng.below(self.cfg.segments.len() as u64) as usize];
        let next = self.cursor[node as usize] + 1;
        let unit = if rng.percent(self.cfg.sequential_percent) && next < s.units {
            next
        } else {
            rng.below(u64::from(s.units)) as u32
        };
        Some(Step::Access {
            node,
            seg: s.seg,
            unit,
            write: rng.percent(self.cfg.write_percent),
            refault: rng.percent(self.cfg.refault_percent),
        })
    }

    /// Perform one step, checking each action as it is performed.
    pub fn apply(&mut self, step: Step, mut out: Log<'_>) -> Result<(), String> {
        log(&mut out, || format!("{step}"));
        match step {
            Step::Deliver { from, to } => {
                let queue = self
                    .links
                    .get_mut(&(from, to))
                    .ok_or_else(|| format!("nothing to deliver on {from}->{to}"))?;
                let packet = queue
                    .pop_front()
                    .ok_or_else(|| format!("nothing to deliver on {from}->{to}"))?;
                if queue.is_empty() {
                    self.links.remove(&(from, to));
                }
                log(&mut out, || {
                    let data = packet
                        .data
                        .map(|v| format!(" [value {v}]"))
                        .unwrap_or_default();
                    format!("  {from}->{to}: {}{data}", packet.msg)
                });
                let actions = self.engines[to as usize].receive(from, packet.msg);
                self.perform(to, actions, packet.data, &mut out)
            }
            Step::Crash { node } => {
                if self.cfg.crash != Some(node) || self.crashed.is_some() {
                    return Err(format!("node {node} cannot crash"));
                }
                self.crashed = Some(node);
                let n = node as usize;
                self.links.retain(|&(_, to), _| to != node);
                self.timers.retain(|&(t, _, _), _| t != node);
                self.values.retain(|&(v, _, _), _| v != node);
                self.rights.retain(|&(r, _, _), _| r != node);
                self.blocked.retain(|_, b| b.node != node);
                self.threads[n].iter_mut().for_each(|t| *t = None);
                self.budget[n] = 0;
                Ok(())
            }
            Step::Down { node, dead } => {
                if self.crashed != Some(dead) || self.notified[node as usize] || node == dead {
                    return Err(format!("node {node} cannot hear of node {dead}"));
                }
                self.notified[node as usize] = true;
                // What the dead node sent and was not delivered yet is lost
                // (the engine would drop it from now on anyway).
                self.links.remove(&(dead, node));
                let actions = self.engines[node as usize].node_down(dead);
                self.perform(node, actions, None, &mut out)
            }
            Step::Fire { node, seg, unit } => {
                let (id, _) = self
                    .timers
                    .remove(&(node, seg, unit))
                    .ok_or_else(|| format!("no timer on node {node} s{seg}.u{unit}"))?;
                let actions = self.engines[node as usize].timer(seg, unit, id);
                if actions.iter().any(|a| matches!(a, Action::Send { .. })) {
                    self.deferred_served += 1;
                }
                self.perform(node, actions, None, &mut out)
            }
            Step::Access {
                node,
                seg,
                unit,
                write,
                refault,
            } => {
                let n = node as usize;
                if !self.can_issue(n) {
                    return Err(format!("node {node} cannot issue an access"));
                }
                let thread = self.threads[n]
                    .iter()
                    .position(Option::is_none)
                    .ok_or_else(|| format!("node {node} has no idle thread"))?;
                self.budget[n] -= 1;
                self.cursor[n] = unit;
                let right = self.rights.get(&(node, seg, unit)).copied();
                let allowed = if write {
                    right == Some(Right::Write)
                } else {
                    right.is_some()
                };
                if allowed && !refault {
                    log(&mut out, || "  mapped: applied at once".to_string());
                    return self.access(node, seg, unit, write, &mut out);
                }
                let waiter = (Waiter::from(node) << 32) | Waiter::from(self.next_waiter[n]);
                self.next_waiter[n] += 1;
                self.threads[n][thread] = Some(waiter);
                self.blocked.insert(
                    waiter,
                    Blocked {
                        node,
                        thread,
                        seg,
                        unit,
                        write,
                    },
                );
                log(&mut out, || format!("  fault w{waiter}"));
                let actions = self.engines[n].fault(seg, unit, write, waiter);
                self.perform(node, actions, None, &mut out)
            }
        }
    }

    fn access(
        &mut self,
        node: NodeId,
        seg: SegId,
        unit: Unit,
        write: bool,
        out: &mut Log<'_>,
    ) -> Result<(), String> {
        let latest = self.latest.get(&(seg, unit)).copied().unwrap_or_default();
        let seen = self.values.get(&(node, seg, unit)).copied();
        if seen != Some(latest) {
            let kind = if write { "write" } else { "read" };
            return Err(format!(
                "node {node} {kind} of s{seg}.u{unit} sees {seen:?} but the latest write is {latest}"
            ));
        }
        if write {
            self.next_value += 1;
            let v = self.next_value;
            self.values.insert((node, seg, unit), v);
            self.latest.insert((seg, unit), v);
            log(out, || format!("  node {node} writes s{seg}.u{unit} = {v}"));
        } else {
            log(out, || {
                format!("  node {node} reads s{seg}.u{unit} = {latest}")
            });
        }
        Ok(())
    }

    fn perform(
        &mut self,
        node: NodeId,
        actions: Vec<Action>,
        payload: Option<u64>,
        out: &mut Log<'_>,
    ) -> Result<(), String> {
        for action in actions {
            log(out, || format!("  {node}: {action}"));
            match action {
                Action::Send { to, msg, with_data } => {
                    if to == node {
                        return Err(format!("node {node} sends {msg} to itself"));
                    }
                    if to >= self.cfg.nodes {
                        return Err(format!("node {node} sends {msg} to unknown node {to}"));
                    }
                    if self.notified[node as usize] && self.crashed == Some(to) {
                        return Err(format!("node {node} sends {msg} to failed node {to}"));
                    }
                    let key = (node, msg.seg(), msg.unit());
                    if with_data && self.rights.get(&key) == Some(&Right::Write) {
                        return Err(format!(
                            "node {node} reads the bytes for {msg} while they are still mapped writable"
                        ));
                    }
                    if matches!(msg, CohMsg::InvAck { .. })
                        && (self.values.contains_key(&key) || self.rights.contains_key(&key))
                    {
                        return Err(format!("node {node} sends {msg} before dropping its copy"));
                    }
                    let data = if with_data {
                        Some(*self.values.get(&key).ok_or_else(|| {
                            format!(
                                "node {node} sends {msg} with the bytes of a unit it does not hold"
                            )
                        })?)
                    } else {
                        None
                    };
                    if self.is_live(to) {
                        self.links
                            .entry((node, to))
                            .or_default()
                            .push_back(Packet { msg, data });
                    }
                }
                Action::Install { seg, unit } => {
                    let v = payload.ok_or_else(|| {
                        format!("node {node} installs s{seg}.u{unit} from a message without bytes")
                    })?;
                    if self.rights.contains_key(&(node, seg, unit)) {
                        return Err(format!(
                            "node {node} installs s{seg}.u{unit} under a mapped copy"
                        ));
                    }
                    self.values.insert((node, seg, unit), v);
                }
                Action::Invalidate { seg, unit } => {
                    self.check_not_held(node, seg, unit, "drops")?;
                    self.values.remove(&(node, seg, unit));
                    self.rights.remove(&(node, seg, unit));
                }
                Action::Downgrade { seg, unit } => {
                    self.check_not_held(node, seg, unit, "downgrades")?;
                    if let Some(r) = self.rights.get_mut(&(node, seg, unit)) {
                        *r = Right::Read;
                    }
                }
                Action::Resolve {
                    waiter,
                    seg,
                    unit,
                    writable,
                } => {
                    let b = self.blocked.remove(&waiter).ok_or_else(|| {
                        format!("node {node} resolves unknown or already resolved waiter w{waiter}")
                    })?;
                    if (b.node, b.seg, b.unit) != (node, seg, unit) {
                        return Err(format!(
                            "node {node} resolves w{waiter} for s{seg}.u{unit}, but it waits on node {} s{}.u{}",
                            b.node, b.seg, b.unit
                        ));
                    }
                    if b.write && !writable {
                        return Err(format!("node {node} resolves write w{waiter} read-only"));
                    }
                    let right = if writable { Right::Write } else { Right::Read };
                    let r = self.rights.entry((node, seg, unit)).or_insert(right);
                    *r = (*r).max(right);
                    self.threads[node as usize][b.thread] = None;
                    self.access(node, seg, unit, b.write, out)?;
                }
                Action::SetTimer {
                    seg,
                    unit,
                    id,
                    after_us,
                } => {
                    let q = self.cfg.segments.iter().find(|s| s.seg == seg);
                    if q.is_none_or(|s| s.quantum_us != after_us || after_us == 0) {
                        return Err(format!(
                            "node {node} sets a timer of {after_us}us on s{seg}.u{unit} against its quantum"
                        ));
                    }
                    self.timers
                        .insert((node, seg, unit), (id, self.now + after_us));
                }
                Action::Fail {
                    waiter,
                    seg,
                    unit,
                    ref error,
                } => {
                    self.check_fail(node, seg, unit, error)
                        .map_err(|e| format!("node {node}: {action}: {e}"))?;
                    let b = self.blocked.remove(&waiter).ok_or_else(|| {
                        format!("node {node} fails unknown or already resolved waiter w{waiter}")
                    })?;
                    if (b.node, b.seg, b.unit) != (node, seg, unit) {
                        return Err(format!(
                            "node {node} fails w{waiter} for s{seg}.u{unit}, but it waits on node {} s{}.u{}",
                            b.node, b.seg, b.unit
                        ));
                    }
                    self.threads[node as usize][b.thread] = None;
                    self.failed += 1;
                }
                Action::Ignored { .. } => {
                    return Err(format!("node {node}: {action}"));
                }
            }
        }
        Ok(())
    }

    /// An access may fail only for a unit the live home declares lost, or on
    /// a segment whose home crashed.
    fn check_fail(
        &self,
        node: NodeId,
        seg: SegId,
        unit: Unit,
        error: &crate::Error,
    ) -> Result<(), String> {
        let home = self
            .cfg
            .segments
            .iter()
            .find(|s| s.seg == seg)
            .map(|s| s.home)
            .ok_or_else(|| format!("unknown segment {seg}"))?;
        match error {
            crate::Error::HomeDown { .. } if self.crashed == Some(home) => Ok(()),
            crate::Error::NoCopy { .. } if self.is_live(home) => {
                let dir = self.engines[home as usize].directory(seg, unit);
                match dir {
                    Some(d) if d.owner.is_none() && d.sharers.is_empty() => Ok(()),
                    _ => Err(format!(
                        "the home's directory still has a copy of s{seg}.u{unit}: {dir:?}"
                    )),
                }
            }
            _ => Err(format!("node {node} fails an access without a lost unit")),
        }
    }

    /// A node must not give up a right on a unit it holds within its
    /// quantum (the engine ends the hold before it answers).
    fn check_not_held(
        &self,
        node: NodeId,
        seg: SegId,
        unit: Unit,
        what: &str,
    ) -> Result<(), String> {
        if self.timers.contains_key(&(node, seg, unit))
            && self.engines[node as usize].is_held(seg, unit)
        {
            return Err(format!(
                "node {node} {what} s{seg}.u{unit} within its quantum"
            ));
        }
        Ok(())
    }

    /// Check the invariants (see the module doc).
    pub fn check(&self) -> Result<(), String> {
        for s in &self.cfg.segments {
            for unit in 0..s.units {
                self.check_unit(s.seg, s.home, unit)?;
            }
        }
        Ok(())
    }

    fn check_unit(&self, seg: SegId, home: NodeId, unit: Unit) -> Result<(), String> {
        let latest = self.latest.get(&(seg, unit)).copied().unwrap_or_default();
        let mut modified = Vec::new();
        let mut holders = Vec::new();
        let mut writers = Vec::new();
        let mut mapped = Vec::new();
        for (i, e) in self.engines.iter().enumerate() {
            let node = i as NodeId;
            if !self.is_live(node) {
                continue;
            }
            let state = e
                .state(seg, unit)
                .ok_or_else(|| format!("node {node} does not know s{seg}.u{unit}"))?;
            let right = self.rights.get(&(node, seg, unit)).copied();
            let value = self.values.get(&(node, seg, unit)).copied();
            if state == UnitState::Modified {
                modified.push(node);
            }
            if state != UnitState::Invalid {
                holders.push(node);
            }
            if right == Some(Right::Write) {
                writers.push(node);
            }
            if right.is_some() {
                mapped.push(node);
            }
            let allowed = match state {
                UnitState::Invalid => None,
                UnitState::Shared => Some(Right::Read),
                UnitState::Modified => Some(Right::Write),
            };
            if right > allowed {
                return Err(format!(
                    "node {node} maps s{seg}.u{unit} {right:?} while {state:?}"
                ));
            }
            if (state != UnitState::Invalid || right.is_some()) && value != Some(latest) {
                return Err(format!(
                    "node {node} holds s{seg}.u{unit} ({state:?}) with value {value:?}, the latest write is {latest}"
                ));
            }
        }
        if modified.len() > 1 || (modified.len() == 1 && holders.len() > 1) {
            return Err(format!(
                "s{seg}.u{unit}: Modified at {modified:?} while held by {holders:?}"
            ));
        }
        if writers.len() > 1 || (writers.len() == 1 && mapped.len() > 1) {
            return Err(format!(
                "s{seg}.u{unit}: mapped writable at {writers:?} while mapped by {mapped:?}"
            ));
        }
        self.check_directory(seg, home, unit, &modified, &holders)
    }

    /// When nothing is in flight on a unit, the home's directory names
    /// exactly its holders, and agrees with the home's own state.
    fn check_directory(
        &self,
        seg: SegId,
        home: NodeId,
        unit: Unit,
        modified: &[NodeId],
        holders: &[NodeId],
    ) -> Result<(), String> {
        // The home's view lags a crash until it hears of it; a crashed home
        // has none.
        if self
            .crashed
            .is_some_and(|d| d == home || !self.notified[home as usize])
        {
            return Ok(());
        }
        let in_flight = self
            .links
            .values()
            .flatten()
            .any(|p| p.msg.seg() == seg && p.msg.unit() == unit);
        let waiting = self
            .engines
            .iter()
            .any(|e| !e.waiters(seg, unit).is_empty());
        let dir = self.engines[home as usize]
            .directory(seg, unit)
            .ok_or_else(|| format!("home {home} has no directory for s{seg}.u{unit}"))?;
        if in_flight || waiting || dir.active.is_some() || !dir.queued.is_empty() {
            return Ok(());
        }
        let (owner, sharers) = match modified {
            [o] => (Some(*o), Vec::new()),
            _ => (None, holders.to_vec()),
        };
        if dir.owner != owner || dir.sharers != sharers {
            return Err(format!(
                "s{seg}.u{unit}: directory says owner {:?} sharers {:?}, the nodes hold owner {owner:?} sharers {sharers:?}",
                dir.owner, dir.sharers
            ));
        }
        Ok(())
    }

    /// Check a world in which nothing can happen any more: every access was
    /// served and every engine is idle (else: deadlock).
    pub fn check_finished(&self) -> Result<(), String> {
        if !self.links.is_empty() {
            return Err("messages are still in flight".to_string());
        }
        if !self.blocked.is_empty() {
            let list: Vec<String> = self
                .blocked
                .iter()
                .map(|(w, b)| format!("w{w} (node {} s{}.u{})", b.node, b.seg, b.unit))
                .collect();
            return Err(format!(
                "deadlock: accesses never resolved: {}",
                list.join(", ")
            ));
        }
        if let Some(n) = self.budget.iter().position(|&b| b > 0) {
            return Err(format!("node {n} could not issue all its accesses"));
        }
        if let Some(e) = self
            .engines
            .iter()
            .find(|e| self.is_live(e.me()) && !e.is_idle())
        {
            return Err(format!("node {} is not idle at the end", e.me()));
        }
        Ok(())
    }

    /// A 64-bit fingerprint of the state, for the explorer. Values are
    /// hashed only as "latest write of the unit or not": every check compares
    /// a value with the latest one and a stale value never becomes the latest
    /// again, so states that differ only in the numbering of writes have the
    /// same future and are merged.
    fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        let fresh = |seg: SegId, unit: Unit, v: u64| self.latest.get(&(seg, unit)) == Some(&v);
        self.engines.hash(&mut h);
        self.links.len().hash(&mut h);
        for (link, queue) in &self.links {
            link.hash(&mut h);
            queue.len().hash(&mut h);
            for p in queue {
                p.msg.hash(&mut h);
                p.data
                    .map(|v| fresh(p.msg.seg(), p.msg.unit(), v))
                    .hash(&mut h);
            }
        }
        self.values.len().hash(&mut h);
        for (&(node, seg, unit), &v) in &self.values {
            (node, seg, unit, fresh(seg, unit, v)).hash(&mut h);
        }
        self.rights.hash(&mut h);
        self.threads.hash(&mut h);
        self.budget.hash(&mut h);
        self.next_waiter.hash(&mut h);
        self.blocked.hash(&mut h);
        self.timers.len().hash(&mut h);
        for (k, (id, _)) in &self.timers {
            (k, id).hash(&mut h);
        }
        self.cursor.hash(&mut h);
        self.crashed.hash(&mut h);
        self.notified.hash(&mut h);
        h.finish()
    }
}

/// A failed simulation: what broke, and how to get there again.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed of a random run (`None` for the explorer).
    pub seed: Option<u64>,
    pub config: Config,
    /// The schedule up to and including the failing step.
    pub steps: Vec<Step>,
    pub error: String,
}

impl Failure {
    /// The schedule replayed with every action and data movement spelled out.
    pub fn trace(&self) -> String {
        let (lines, _) = replay(&self.config, &self.steps);
        lines.join("\n")
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(seed) = self.seed {
            writeln!(f, "seed {seed} failed (replay with DSM_SIM_SEED={seed})")?;
        }
        writeln!(f, "config: {:?}", self.config)?;
        writeln!(f, "error: {}", self.error)?;
        writeln!(f, "trace ({} steps):", self.steps.len())?;
        f.write_str(&self.trace())
    }
}

/// Statistics of a successful run or exploration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Steps taken (random run) or transitions explored.
    pub steps: u64,
    /// Distinct states visited (exploration).
    pub states: u64,
    /// Terminal states reached (exploration).
    pub terminals: u64,
    /// Random run: timers that, firing, sent answers deferred by a quantum.
    pub deferred: u64,
    /// Random run: accesses that failed (their unit was lost).
    pub failed: u64,
    /// Random run: 1 if the node of the configuration crashed.
    pub crashed: u64,
}

/// Run one random schedule of the configuration drawn from `seed`.
pub fn run_seed(seed: u64, max_steps: u64) -> Result<Stats, Box<Failure>> {
    let mut rng = Rng::new(seed);
    let cfg = Config::random(&mut rng);
    run_random(&cfg, seed, &mut rng, max_steps)
}

/// Run `cfg` with random scheduling decisions from `rng` until nothing can
/// happen, checking the invariants after every step.
pub fn run_random(
    cfg: &Config,
    seed: u64,
    rng: &mut Rng,
    max_steps: u64,
) -> Result<Stats, Box<Failure>> {
    let mut world = World::new(cfg);
    let mut steps = Vec::new();
    let fail = |steps: &Vec<Step>, error: String| {
        Box::new(Failure {
            seed: Some(seed),
            config: cfg.clone(),
            steps: steps.clone(),
            error,
        })
    };
    while let Some(step) = world.random_step(rng) {
        if steps.len() as u64 >= max_steps {
            return Err(fail(
                &steps,
                format!("livelock: not finished after {max_steps} steps"),
            ));
        }
        steps.push(step);
        world
            .apply(step, None)
            .and_then(|()| world.check())
            .map_err(|e| fail(&steps, e))?;
    }
    world.check_finished().map_err(|e| fail(&steps, e))?;
    Ok(Stats {
        steps: steps.len() as u64,
        deferred: world.deferred_served,
        failed: world.failed,
        crashed: u64::from(world.crashed.is_some()),
        ..Stats::default()
    })
}

/// Replay a schedule with tracing: the trace lines and the outcome.
pub fn replay(cfg: &Config, steps: &[Step]) -> (Vec<String>, Result<(), String>) {
    let mut world = World::new(cfg);
    let mut lines = Vec::new();
    for (i, &step) in steps.iter().enumerate() {
        lines.push(format!("#{i}"));
        let r = world
            .apply(step, Some(&mut lines))
            .and_then(|()| world.check());
        if let Err(e) = r {
            lines.push(format!("  FAILED: {e}"));
            return (lines, Err(e));
        }
    }
    (lines, Ok(()))
}

/// Visit every interleaving of `cfg` (every delivery order across links and
/// every access each idle thread may issue), checking the invariants after
/// every transition, that every terminal state has served all accesses, and
/// that the state graph has no cycle (so every schedule terminates: no
/// livelock). Gives up with an error after `max_states` distinct states.
pub fn explore(cfg: &Config, max_states: u64) -> Result<Stats, Box<Failure>> {
    struct Frame {
        world: World,
        fp: u64,
        steps: Vec<Step>,
        next: usize,
    }
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Mark {
        OnPath,
        Done,
    }
    // The path to the failing state: the step each frame on the stack took
    // last (the top frame's is the failing step).
    let fail = |stack: &[Frame], error: String| {
        let steps: Vec<Step> = stack
            .iter()
            .filter_map(|f| f.next.checked_sub(1).and_then(|i| f.steps.get(i)).copied())
            .collect();
        Box::new(Failure {
            seed: None,
            config: cfg.clone(),
            steps,
            error,
        })
    };
    let root = World::new(cfg);
    let mut stats = Stats {
        states: 1,
        ..Stats::default()
    };
    let mut marks: HashMap<u64, Mark> = HashMap::new();
    let fp = root.fingerprint();
    marks.insert(fp, Mark::OnPath);
    let steps = root.enabled();
    let mut stack = vec![Frame {
        world: root,
        fp,
        steps,
        next: 0,
    }];
    while let Some(top) = stack.last_mut() {
        let Some(&step) = top.steps.get(top.next) else {
            if let Some(f) = stack.pop() {
                marks.insert(f.fp, Mark::Done);
            }
            continue;
        };
        top.next += 1;
        let mut world = top.world.clone();
        stats.steps += 1;
        if let Err(e) = world.apply(step, None).and_then(|()| world.check()) {
            // The failing step is the one just taken from the top frame.
            return Err(fail(&stack, e));
        }
        let fp = world.fingerprint();
        match marks.get(&fp) {
            Some(Mark::Done) => continue,
            Some(Mark::OnPath) => {
                return Err(fail(
                    &stack,
                    "cycle: a schedule can run forever (livelock)".to_string(),
                ));
            }
            None => {}
        }
        stats.states += 1;
        if stats.states > max_states {
            return Err(fail(&stack, format!("more than {max_states} states")));
        }
        let next = world.enabled();
        if next.is_empty() {
            stats.terminals += 1;
            if let Err(e) = world.check_finished() {
                return Err(fail(&stack, e));
            }
            marks.insert(fp, Mark::Done);
            continue;
        }
        marks.insert(fp, Mark::OnPath);
        stack.push(Frame {
            world,
            fp,
            steps: next,
            next: 0,
        });
    }
    Ok(stats)
}

/// The checker must reject what it claims to reject; otherwise the simulator
/// and explorer tests would pass vacuously.
#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            nodes: 2,
            segments: vec![SegSpec::new(1, 0, 1)],
            threads: 1,
            accesses: 1,
            write_percent: 50,
            refault_percent: 0,
            sequential_percent: 0,
            crash: None,
        }
    }

    fn bad(world: &mut World, node: NodeId, action: Action, payload: Option<u64>) -> String {
        match world.perform(node, vec![action], payload, &mut None) {
            Ok(()) => panic!("accepted a bad action"),
            Err(e) => e,
        }
    }

    #[test]
    fn bad_actions_are_caught() {
        let mut w = World::new(&cfg());
        let msg = CohMsg::Done { seg: 1, unit: 0 };
        let to_self = Action::Send {
            to: 1,
            msg: msg.clone(),
            with_data: false,
        };
        assert!(bad(&mut w, 1, to_self, None).contains("to itself"));
        let from_hole = Action::Send {
            to: 0,
            msg,
            with_data: true,
        };
        assert!(bad(&mut w, 1, from_hole, None).contains("does not hold"));
        let install = Action::Install { seg: 1, unit: 0 };
        assert!(bad(&mut w, 1, install, None).contains("without bytes"));
        let resolve = Action::Resolve {
            waiter: 42,
            seg: 1,
            unit: 0,
            writable: true,
        };
        assert!(bad(&mut w, 1, resolve, None).contains("unknown"));
        let ignored = Action::Ignored {
            from: 0,
            error: crate::Error::UnknownSegment { seg: 9 },
        };
        assert!(bad(&mut w, 1, ignored, None).contains("ignored"));
    }

    #[test]
    fn losing_a_unit_within_its_quantum_is_caught() {
        let mut c = cfg();
        c.segments[0].quantum_us = 100;
        let mut w = World::new(&c);
        // Node 1 reads: the home supplies, node 1 starts its quantum.
        let read = Step::Access {
            node: 1,
            seg: 1,
            unit: 0,
            write: false,
            refault: false,
        };
        assert_eq!(w.apply(read, None), Ok(()));
        assert_eq!(w.apply(Step::Deliver { from: 1, to: 0 }, None), Ok(()));
        assert_eq!(w.apply(Step::Deliver { from: 0, to: 1 }, None), Ok(()));
        assert!(w.engines[1].is_held(1, 0));
        assert!(w.timers.contains_key(&(1, 1, 0)));
        let drop = Action::Invalidate { seg: 1, unit: 0 };
        assert!(bad(&mut w, 1, drop, None).contains("within its quantum"));
        let wrong_timer = Action::SetTimer {
            seg: 1,
            unit: 0,
            id: 9,
            after_us: 5,
        };
        assert!(bad(&mut w, 1, wrong_timer, None).contains("against its quantum"));
    }

    #[test]
    fn broken_invariants_are_caught() {
        let mut w = World::new(&cfg());
        assert_eq!(w.check(), Ok(()));
        // Node 1 maps the unit although its engine says Invalid.
        w.rights.insert((1, 1, 0), Right::Read);
        w.values.insert((1, 1, 0), 0);
        assert!(w.check().is_err_and(|e| e.contains("maps")));
        w.rights.clear();
        // The home's copy is stale.
        w.latest.insert((1, 0), 5);
        assert!(w.check().is_err_and(|e| e.contains("latest write is 5")));
        // A read of a stale value.
        assert!(w.access(0, 1, 0, false, &mut None).is_err());
    }

    #[test]
    fn a_blocked_access_at_the_end_is_a_deadlock() {
        let mut w = World::new(&cfg());
        let step = Step::Access {
            node: 1,
            seg: 1,
            unit: 0,
            write: false,
            refault: false,
        };
        assert_eq!(w.apply(step, None), Ok(()));
        // Drop the request instead of delivering it; node 0 stays quiet.
        w.links.clear();
        w.budget[0] = 0;
        assert!(w.enabled().is_empty());
        assert!(w.check_finished().is_err_and(|e| e.contains("deadlock")));
    }

    #[test]
    fn random_runs_replay_identically() {
        let a = run_seed(11, 10_000);
        let b = run_seed(11, 10_000);
        assert_eq!(a.map_err(|f| f.error), b.map_err(|f| f.error));
        let mut rng = Rng::new(11);
        let cfg = Config::random(&mut rng);
        let mut world = World::new(&cfg);
        let mut steps = Vec::new();
        while let Some(step) = world.random_step(&mut rng) {
            steps.push(step);
            assert_eq!(world.apply(step, None), Ok(()));
        }
        let (lines, outcome) = replay(&cfg, &steps);
        assert_eq!(outcome, Ok(()));
        assert!(lines.len() > steps.len());
    }
}
