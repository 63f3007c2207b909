//! The coherence engine: a home-based directory protocol for distributed
//! shared memory, multiple readers / single writer, write-invalidate,
//! sequentially consistent, at the granularity of a *unit* (4 KiB by
//! default; the engine never sees sizes, so a whole segment can be one unit).
//!
//! One [`Engine`] runs on every node. The node daemon feeds it the faults of
//! local processes ([`Engine::fault`]) and the coherence messages of its peers
//! ([`Engine::receive`]) and performs the [`Action`]s it returns, in order. The
//! engine never touches page bytes: a [`Action::Send`] with `with_data` tells
//! the daemon to attach this node's bytes of the unit, an [`Action::Install`]
//! tells it to store the payload of the message being handled.
//!
//! # Roles and states
//!
//! Every node keeps, per unit, a local state: `Invalid`, `Shared` (read-only
//! copy) or `Modified` (writable, sole copy). The *home* of a segment (the node
//! that created it) also keeps a directory entry per unit: the *owner* (the
//! node holding it `Modified`) or the *copy set* (the nodes holding it
//! `Shared`); exactly one of the two is non-empty. Initially the home holds
//! every unit `Modified` (all zeros) and no one else has a copy.
//!
//! In a transaction a node plays one of four roles: the *requester* (it needs
//! a right it lacks), the *home* (it decides), the *supplier* (the owner, or a
//! sharer, that sends the bytes) and the *sharers* being invalidated. The home
//! plays its own requester, supplier and sharer roles locally, without
//! messages to itself.
//!
//! # Messages
//!
//! | message                    | from -> to            | meaning |
//! |----------------------------|-----------------------|---------|
//! | `ReadReq`, `WriteReq`      | requester -> home     | I want a Shared / Modified copy |
//! | `Fetch { req }`            | home -> supplier      | send your bytes to `req` and keep a Shared copy (an owner downgrades first) |
//! | `FetchInv { req, acks }`   | home -> supplier      | send your bytes to `req`, then drop your copy |
//! | `Inv { req }`              | home -> sharer        | drop your copy, then acknowledge to `req` |
//! | `InvAck`                   | sharer -> requester   | my copy is gone |
//! | `Data { excl, acks }` + bytes | supplier -> requester | the unit; Modified if `excl`; expect `acks` `InvAck`s |
//! | `Grant { acks }`           | home -> requester     | upgrade your Shared copy to Modified after `acks` `InvAck`s |
//! | `Done`                     | requester -> home     | the transaction is complete here |
//!
//! # Who waits for what
//!
//! * The **home** serialises transactions per unit: one is *active*, later
//!   requests wait in a FIFO queue (never dropped). It decides at once and
//!   updates its directory entry when the transaction starts:
//!   - read: the supplier is the owner if there is one (it downgrades), else
//!     the home if it holds a copy, else the lowest sharer; the requester joins
//!     the copy set;
//!   - write: the owner (if any) supplies and drops its copy; otherwise every
//!     sharer but the requester is invalidated, one of them (the home if it is
//!     one) supplies the bytes with `FetchInv` unless the requester already has
//!     a copy (then it gets a `Grant`). The requester becomes the owner.
//!     The home drops its own copy directly and does not count itself in
//!     `acks`.
//!
//!   If the home itself sent the reply (`Data` or `Grant`) and no `InvAck`s
//!   are owed, the transaction is complete when it starts: every later
//!   message to the requester leaves the home after the reply on the same
//!   FIFO link. Otherwise the home waits for the requester's `Done`.
//! * The **requester** has at most one request in flight per unit. It
//!   completes when it has the reply and as many `InvAck`s as the reply
//!   announces (they may arrive in any order). It then takes the new state,
//!   releases its waiting accesses, sends `Done` unless the reply came from
//!   the home with `acks == 0`, and, if a read completed while write accesses
//!   were waiting, asks for the upgrade.
//! * **Suppliers and sharers** answer at once; nothing waits on them but the
//!   requester.
//!
//! Every local access that needs a right waits as a *waiter*; all waiters of a
//! unit share the one request in flight. A fault on a unit already held with
//! enough rights is resolved at once.
//!
//! # Why this is sequentially consistent
//!
//! Per unit, two invariants hold at every step (the simulator and the
//! exhaustive checker verify them after every step): (1) single writer, multiple
//! readers: if a node holds the unit `Modified`, no other node holds a copy;
//! (2) data value: every copy a node may read holds the value of the last
//! write to the unit. (1) holds because a requester becomes `Modified` only
//! after the previous owner has dropped its copy (its `Data` is the last
//! thing it sends for the unit) or after every sharer acknowledged dropping
//! its copy; and a new reader is served only after the owner has downgraded.
//! (2) holds because bytes are read from a supplier that holds the latest
//! value, at a moment when nobody can write (the owner downgrades before the
//! bytes are read). The home's serialisation gives every unit's accesses one
//! total order in which each read returns the latest write; since a process is
//! blocked at each fault until its access is allowed, its accesses enter those
//! orders in program order, which (as in any system keeping (1) and (2) per
//! location with blocking accesses) is sequential consistency.
//!
//! # Ordering contract with the daemon
//!
//! Actions are performed in the order returned. A supplier that holds the unit
//! `Modified` emits `Downgrade` before the `Send` that reads its bytes (so no
//! local write can slip in after the bytes are read), then `Invalidate` if it
//! gives up its copy. A sharer emits `Invalidate` before its `InvAck`. A
//! requester's `Install` comes when the `Data` message is handled, possibly
//! before the right is granted (pending `InvAck`s); the bytes stay unmapped
//! until the `Resolve`. The transport must keep each link FIFO.
//!
//! # Transfer modes
//!
//! Per segment ([`SegOpts`], given to [`Engine::add_segment_with`]); both
//! options are local policies of each node, so nodes may differ.
//!
//! * **Page mode / segment mode.** The engine never sees sizes: page mode
//!   is a segment of many units (4 KiB or larger each), segment mode is a
//!   segment added with `units = 1`. Then the first fault on a node fetches
//!   the whole segment, and a write anywhere takes ownership of all of it.
//!   Nothing else differs, so every argument below holds for both.
//! * **Hold-time quantum** (`quantum_us`, 0 disables it; DIPC's time
//!   quantum against thrashing). When a request of this node completes with
//!   local accesses waiting on it, the node *holds* the unit: it emits
//!   [`Action::SetTimer`] and, until the daemon feeds the timer back with
//!   [`Engine::timer`], defers every `Inv`, `FetchInv`, and every `Fetch`
//!   that would downgrade its Modified copy (a `Fetch` of a Shared copy
//!   takes nothing away and is answered at once, unless an earlier answer
//!   waits). Deferred answers are queued, never dropped, and given in
//!   arrival order when the timer fires. The home holds its own copy the
//!   same way: the directory does not start a transaction that would drop
//!   or downgrade the home's held copy until the quantum ends (the queue
//!   behind it waits, in order). Deferring is safe because nothing but the
//!   requester waits on a supplier or sharer, and the home already
//!   serialises the unit: the quantum only delays a transaction, it never
//!   reorders two, so invariants (1) and (2) and the argument above are
//!   unchanged. It is live because every timer fires. Timers are inputs:
//!   the engine reads no clock; a re-received unit restarts its quantum
//!   with a new timer id and the old timer is ignored.
//! * **Sequential prefetch** (`prefetch`, the largest window in units, 0
//!   disables it). Read faults on consecutive units form a run; each fault
//!   of the run that must wait doubles the window (1, 2, 4, ... up to the
//!   bound), and after every fault of the run the node sends read requests
//!   for the units of the window after the faulting one that it neither
//!   holds nor requests. Those requests have no waiters: the reply is
//!   installed `Shared` like any other copy (and invalidated like any
//!   other), so the next local access is resolved at once. A fault on any
//!   other unit ends the run (window 0); write faults neither extend nor
//!   end it. The window's requests leave together on the link to the home
//!   (pipelined: one round trip for the window), but each unit remains its
//!   own transaction in the directory, so the protocol is unchanged.
//!   Prefetched copies do not start a quantum (no access asked for them).
//!
//! # Node failure
//!
//! The daemon calls [`Engine::node_down`] when the referee declares a node
//! failed (every node hears it, in no particular order with the protocol's
//! messages). From then on this engine drops every message from that node
//! and sends it nothing. What was at the failed node is gone; the rule is
//! that an access gets the latest value of its unit or fails
//! ([`Action::Fail`], the daemon's `SIGBUS` for that access), never an
//! older value and never zeros.
//!
//! * **At a live home**, the directory drops the failed node from every
//!   copy set and queue. A unit it held `Modified`, or was being given
//!   `Modified` (its write was in progress: the previous copies are being
//!   dropped for it), has no valid copy left: it is *lost* (an empty entry)
//!   and every later request gets `Lost`. A unit with a copy elsewhere
//!   keeps working. An active transaction whose requester failed is
//!   ended at once. One whose requester is alive but may wait on the
//!   failed node (it was the supplier, or owes an `InvAck`) is settled
//!   with the requester, because only the requester knows whether the
//!   failed node's message reached it before the failure: the home sends
//!   `Check`, the requester first marks the node failed (so nothing more
//!   from it can arrive) and answers `Stuck` if its request is still in
//!   flight, saying whether it has the reply and the failed node's
//!   `InvAck`. The home then asks another sharer for the bytes (a read
//!   whose supplier was a sharer), or answers `Lost` (no valid copy left),
//!   or `Waive`s the missing `InvAck`. `Stuck` always concerns the request
//!   in flight (the requester sends its next request on the same FIFO link
//!   only after this one completes), so no answer is ever applied to the
//!   wrong request.
//! * **Segments homed at the failed node are reported lost, not
//!   re-homed.** Every node keeps the copies it holds with the rights it
//!   holds them: a `Modified` copy stays readable and writable (it is the
//!   only copy, nobody else can obtain it), a `Shared` copy stays readable
//!   (nobody can write the unit any more). Every access needing the home
//!   (a unit not held, or a write to a `Shared` copy), and every request
//!   in flight, fails with [`crate::Error::HomeDown`]. Answers deferred by
//!   a quantum on the failed home's behalf are dropped (the copy stays).
//!   Re-homing would need the survivors to rebuild the directory from
//!   their states, and a unit in transit would still be lost; reporting is
//!   simpler to reason about and gives the same guarantee.
//! * A requester that learns it lost a unit ([`CohMsg::Lost`]) remembers
//!   it: later faults fail at once, and late messages about it (an
//!   `InvAck` for the failed write) are dropped.
//!
//! [`Engine::lost_units`] lists what this node knows to be lost: on a
//! home, the units without a valid copy; elsewhere the units it was told
//! are lost, and for a segment whose home failed, every unit it does not
//! hold.
//!
//! # Room for extensions
//!
//! * One message for a prefetch window (a ranged `ReadReq` and a
//!   multi-unit `Data` when one supplier holds the whole window).
//! * Re-homing segments whose home failed (see above).

pub(crate) mod cache;
pub(crate) mod directory;
mod message;
#[cfg(any(test, feature = "sim"))]
pub mod sim;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub use message::{Action, CohMsg};

use crate::Error;

/// A node's cluster-wide number (the same as `dipc_wire::NodeId`).
pub type NodeId = u32;
/// A segment's cluster-wide id (`shmid`).
pub type SegId = i32;
/// A unit number within a segment.
pub type Unit = u32;
/// The daemon's handle on one blocked local access.
pub type Waiter = u64;

/// The local state of a unit on a node.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum UnitState {
    /// No copy (a hole in the node's memfd).
    #[default]
    Invalid,
    /// A read-only copy; other nodes may hold one too.
    Shared,
    /// The writable, sole copy.
    Modified,
}

/// A snapshot of a home's directory entry for a unit (for tests and status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirView {
    /// The node holding the unit `Modified`.
    pub owner: Option<NodeId>,
    /// The nodes holding the unit `Shared`, ascending.
    pub sharers: Vec<NodeId>,
    /// The active transaction (requester, write), if the home waits for its `Done`.
    pub active: Option<(NodeId, bool)>,
    /// The queued requests (requester, write), in arrival order.
    pub queued: Vec<(NodeId, bool)>,
}

/// How a segment moves between nodes (see "Transfer modes" in the module
/// doc). Every node may use its own options for a segment: both are local
/// policies that never change what a peer may expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SegOpts {
    /// Hold-time quantum in microseconds: a node that received a unit for
    /// a local access keeps it at least this long before it answers a
    /// request that would take its right away. 0 disables it.
    pub quantum_us: u64,
    /// Largest sequential prefetch window, in units. 0 disables prefetch.
    pub prefetch: u32,
}

/// One node's coherence engine for all the segments it knows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Engine {
    me: NodeId,
    segs: BTreeMap<SegId, Segment>,
    /// Nodes declared failed: their messages are dropped, nothing is sent
    /// to them.
    dead: BTreeSet<NodeId>,
}

/// What a node knows about one segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Segment {
    pub(crate) home: NodeId,
    pub(crate) units: u32,
    /// This node's state of every unit.
    pub(crate) local: Vec<UnitState>,
    /// This node's requests in flight, with the accesses waiting on them.
    pub(crate) pending: BTreeMap<Unit, cache::Pending>,
    /// The directory, on the home only.
    pub(crate) dir: Option<directory::Directory>,
    pub(crate) opts: SegOpts,
    /// Units this node holds within their quantum, with the answers it
    /// deferred meanwhile.
    pub(crate) holds: BTreeMap<Unit, cache::Hold>,
    /// The id of the last timer set on this segment.
    pub(crate) next_timer: u64,
    /// The sequential access detector of prefetch.
    pub(crate) seq: cache::Seq,
    /// Units this node was told are lost (no valid copy left anywhere).
    pub(crate) lost: BTreeSet<Unit>,
    /// The segment's home failed (see "Node failure").
    pub(crate) home_down: bool,
}

/// Work the engine gives itself while handling one input: messages from this
/// node to itself and deferred directory steps. Both are handled before the
/// call returns, in FIFO order, so no action of an earlier step is overtaken
/// by a later one.
enum Internal {
    Msg(CohMsg),
    Pump { seg: SegId, unit: Unit },
}

/// The output of one call being built.
pub(crate) struct Cx {
    me: NodeId,
    actions: Vec<Action>,
    internal: VecDeque<Internal>,
    /// The failed nodes (nothing is sent to them).
    dead: BTreeSet<NodeId>,
}

impl Cx {
    fn new(me: NodeId, dead: &BTreeSet<NodeId>) -> Self {
        Cx {
            me,
            actions: Vec::new(),
            internal: VecDeque::new(),
            dead: dead.clone(),
        }
    }

    /// Send `msg` to `to`; a message to this node is handled internally, one
    /// to a failed node is dropped.
    pub(crate) fn send(&mut self, to: NodeId, msg: CohMsg, with_data: bool) {
        if self.dead.contains(&to) {
            return;
        }
        if to == self.me {
            self.internal.push_back(Internal::Msg(msg));
        } else {
            self.actions.push(Action::Send { to, msg, with_data });
        }
    }

    pub(crate) fn act(&mut self, action: Action) {
        self.actions.push(action);
    }

    /// Let the directory start the next queued transaction on `unit` once
    /// everything emitted so far has been handled.
    pub(crate) fn pump(&mut self, seg: SegId, unit: Unit) {
        self.internal.push_back(Internal::Pump { seg, unit });
    }

    pub(crate) fn ignore(&mut self, from: NodeId, error: Error) {
        self.actions.push(Action::Ignored { from, error });
    }

    /// Ignore `msg` from `from`, which this node (its unit in `state`)
    /// cannot take, saying `why`.
    pub(crate) fn unexpected(
        &mut self,
        from: NodeId,
        msg: CohMsg,
        state: UnitState,
        why: &'static str,
    ) {
        self.ignore(
            from,
            Error::Unexpected {
                from,
                msg,
                state,
                why,
            },
        );
    }

    pub(crate) fn me(&self) -> NodeId {
        self.me
    }

    pub(crate) fn is_dead(&self, node: NodeId) -> bool {
        self.dead.contains(&node)
    }
}

impl Engine {
    /// An engine for node `me`, knowing no segment.
    pub fn new(me: NodeId) -> Self {
        Engine {
            me,
            segs: BTreeMap::new(),
            dead: BTreeSet::new(),
        }
    }

    /// This node's number.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// A segment known on this node: on its home at creation (the home then
    /// holds every unit `Modified`), elsewhere at first attach (every unit
    /// `Invalid`). Adding a known segment again changes nothing.
    pub fn add_segment(&mut self, seg: SegId, home: NodeId, units: u32) -> Vec<Action> {
        self.add_segment_with(seg, home, units, SegOpts::default())
    }

    /// [`Engine::add_segment`] with transfer options (quantum, prefetch).
    /// Segment mode is `units == 1`.
    pub fn add_segment_with(
        &mut self,
        seg: SegId,
        home: NodeId,
        units: u32,
        opts: SegOpts,
    ) -> Vec<Action> {
        let me = self.me;
        let home_down = self.dead.contains(&home);
        self.segs.entry(seg).or_insert_with(|| {
            let is_home = home == me;
            let initial = if is_home {
                UnitState::Modified
            } else {
                UnitState::Invalid
            };
            Segment {
                home,
                units,
                local: vec![initial; units as usize],
                pending: BTreeMap::new(),
                dir: is_home.then(|| directory::Directory::new(home, units)),
                opts,
                holds: BTreeMap::new(),
                next_timer: 0,
                seq: cache::Seq::default(),
                lost: BTreeSet::new(),
                home_down,
            }
        });
        Vec::new()
    }

    /// Forget a segment (it was destroyed cluster-wide). Every access still
    /// waiting on it fails with [`Error::SegmentRemoved`].
    pub fn remove_segment(&mut self, seg: SegId) -> Vec<Action> {
        let Some(s) = self.segs.remove(&seg) else {
            return Vec::new();
        };
        s.pending
            .into_iter()
            .flat_map(|(unit, p)| {
                p.waiters.into_iter().map(move |(waiter, _)| Action::Fail {
                    waiter,
                    seg,
                    unit,
                    error: Error::SegmentRemoved { seg },
                })
            })
            .collect()
    }

    /// A local process touched `unit` and the node may not have the right to
    /// (a write if `write`): `waiter` identifies the blocked access. It is
    /// answered by exactly one [`Action::Resolve`] (now or later), or by one
    /// [`Action::Fail`] if the segment or unit does not exist or is removed.
    pub fn fault(&mut self, seg: SegId, unit: Unit, write: bool, waiter: Waiter) -> Vec<Action> {
        let mut cx = Cx::new(self.me, &self.dead);
        match self.segs.get_mut(&seg) {
            None => cx.act(Action::Fail {
                waiter,
                seg,
                unit,
                error: Error::UnknownSegment { seg },
            }),
            Some(s) if unit >= s.units => cx.act(Action::Fail {
                waiter,
                seg,
                unit,
                error: Error::UnitOutOfRange {
                    seg,
                    unit,
                    units: s.units,
                },
            }),
            Some(s) => cache::fault(s, seg, unit, write, waiter, &mut cx),
        }
        self.drain(&mut cx);
        cx.actions
    }

    /// A coherence message from peer `from`. The transport keeps each link
    /// FIFO. A message that names an unknown segment or breaks the protocol
    /// is dropped and reported as [`Action::Ignored`].
    /// Messages from a node declared failed ([`Engine::node_down`]) are
    /// dropped without a report.
    pub fn receive(&mut self, from: NodeId, msg: CohMsg) -> Vec<Action> {
        if self.dead.contains(&from) {
            return Vec::new();
        }
        let mut cx = Cx::new(self.me, &self.dead);
        self.handle(from, msg, &mut cx);
        self.drain(&mut cx);
        cx.actions
    }

    /// The timer `id` the engine asked for with [`Action::SetTimer`] fired:
    /// the quantum of (seg, unit) is over. The answers deferred meanwhile
    /// are given now, in arrival order, and the home starts the
    /// transactions it held back. A stale or unknown timer changes nothing.
    pub fn timer(&mut self, seg: SegId, unit: Unit, id: u64) -> Vec<Action> {
        let mut cx = Cx::new(self.me, &self.dead);
        if let Some(s) = self.segs.get_mut(&seg) {
            cache::quantum_over(s, seg, unit, id, &mut cx);
        }
        self.drain(&mut cx);
        cx.actions
    }

    /// Node `node` failed (see "Node failure" in the module doc): drop it
    /// from every directory entry, settle or fail what waited on it, and
    /// from now on drop its messages. Calling it again, or for this node
    /// itself, changes nothing.
    pub fn node_down(&mut self, node: NodeId) -> Vec<Action> {
        let mut cx = Cx::new(self.me, &self.dead);
        self.mark_dead(node, &mut cx);
        self.drain(&mut cx);
        cx.actions
    }

    fn mark_dead(&mut self, node: NodeId, cx: &mut Cx) {
        if node == self.me || !self.dead.insert(node) {
            return;
        }
        cx.dead.insert(node);
        for (&seg, s) in self.segs.iter_mut() {
            if s.home == node {
                cache::home_down(s, seg, cx);
            } else if s.dir.is_some() {
                directory::node_down(s, seg, node, cx);
            }
        }
    }

    /// Node `node` is a member again (a restarted node, holding nothing):
    /// its messages are taken again. What was lost with it stays lost, and
    /// segments whose home it was stay as [`Engine::node_down`] left them.
    pub fn node_up(&mut self, node: NodeId) {
        self.dead.remove(&node);
    }

    /// The nodes this engine knows failed.
    pub fn dead_nodes(&self) -> Vec<NodeId> {
        self.dead.iter().copied().collect()
    }

    /// True if the home of a known segment failed.
    pub fn is_home_down(&self, seg: SegId) -> bool {
        self.segs.get(&seg).is_some_and(|s| s.home_down)
    }

    /// The units of a segment this node knows to be lost, ascending: on
    /// its home, the units no live node holds a valid copy of; elsewhere
    /// the units it was told are lost, and, if the home failed, every unit
    /// it does not hold (nothing can bring them back).
    pub fn lost_units(&self, seg: SegId) -> Vec<Unit> {
        let Some(s) = self.segs.get(&seg) else {
            return Vec::new();
        };
        let mut lost = s.lost.clone();
        if let Some(d) = &s.dir {
            lost.extend(d.lost_units());
        }
        if s.home_down {
            lost.extend((0..s.units).filter(|&u| s.local[u as usize] == UnitState::Invalid));
        }
        lost.into_iter().collect()
    }

    /// True while this node holds (seg, unit) within its quantum.
    pub fn is_held(&self, seg: SegId, unit: Unit) -> bool {
        self.segs
            .get(&seg)
            .is_some_and(|s| s.holds.contains_key(&unit))
    }

    /// This node's state of a unit, `None` for an unknown segment or unit.
    pub fn state(&self, seg: SegId, unit: Unit) -> Option<UnitState> {
        self.segs.get(&seg)?.local.get(unit as usize).copied()
    }

    /// The home of a known segment.
    pub fn home(&self, seg: SegId) -> Option<NodeId> {
        self.segs.get(&seg).map(|s| s.home)
    }

    /// The directory entry of a unit, on the segment's home only.
    pub fn directory(&self, seg: SegId, unit: Unit) -> Option<DirView> {
        self.segs.get(&seg)?.dir.as_ref()?.view(unit)
    }

    /// The accesses waiting on a unit (waiter, write), in arrival order.
    pub fn waiters(&self, seg: SegId, unit: Unit) -> Vec<(Waiter, bool)> {
        self.segs
            .get(&seg)
            .and_then(|s| s.pending.get(&unit))
            .map(|p| p.waiters.clone())
            .unwrap_or_default()
    }

    /// True when no request is in flight and no directory transaction is
    /// active or queued on this node.
    pub fn is_idle(&self) -> bool {
        self.segs.values().all(|s| {
            s.pending.is_empty()
                && s.holds.values().all(|h| h.deferred.is_empty())
                && s.dir.as_ref().is_none_or(|d| d.is_idle())
        })
    }

    /// A one-line description of everything this node knows about a unit
    /// (for logs, status output and the golden table).
    pub fn describe(&self, seg: SegId, unit: Unit) -> String {
        let Some(s) = self.segs.get(&seg) else {
            return "unknown segment".to_string();
        };
        let Some(state) = s.local.get(unit as usize) else {
            return "unknown unit".to_string();
        };
        let mut out = format!("{state:?}");
        if let Some(p) = s.pending.get(&unit) {
            out.push_str(&format!(", {}", p.describe()));
        }
        if let Some(h) = s.holds.get(&unit) {
            out.push_str(&format!(", {}", h.describe()));
        }
        if s.lost.contains(&unit) {
            out.push_str(", lost");
        }
        if s.home_down {
            out.push_str(", home down");
        }
        if let Some(d) = s.dir.as_ref().and_then(|d| d.view(unit)) {
            out.push_str(&format!("; dir {}", directory::describe(&d)));
        }
        out
    }

    fn handle(&mut self, from: NodeId, msg: CohMsg, cx: &mut Cx) {
        let (seg_id, unit) = (msg.seg(), msg.unit());
        let Some(s) = self.segs.get_mut(&seg_id) else {
            cx.ignore(from, Error::UnknownSegment { seg: seg_id });
            return;
        };
        if unit >= s.units {
            cx.ignore(
                from,
                Error::UnitOutOfRange {
                    seg: seg_id,
                    unit,
                    units: s.units,
                },
            );
            return;
        }
        match msg {
            CohMsg::ReadReq { .. } => directory::request(s, seg_id, unit, from, false, cx),
            CohMsg::WriteReq { .. } => directory::request(s, seg_id, unit, from, true, cx),
            CohMsg::Done { .. } => directory::done(s, seg_id, unit, from, cx),
            CohMsg::Fetch { .. } | CohMsg::FetchInv { .. } | CohMsg::Inv { .. } => {
                cache::serve(s, from, msg, cx)
            }
            CohMsg::Data { .. }
            | CohMsg::Grant { .. }
            | CohMsg::InvAck { .. }
            | CohMsg::Lost { .. }
            | CohMsg::Waive { .. } => cache::reply(s, from, msg, cx),
            CohMsg::Check { dead, .. } => {
                if from != s.home {
                    cx.unexpected(
                        from,
                        msg,
                        s.local[unit as usize],
                        "only the home may send this",
                    );
                    return;
                }
                // Take nothing more from the failed node before answering.
                self.mark_dead(dead, cx);
                if let Some(s) = self.segs.get_mut(&seg_id) {
                    cache::check(s, seg_id, unit, dead, cx);
                }
            }
            CohMsg::Stuck {
                dead, reply, acked, ..
            } => {
                // Only an answer to this home's `Check`, which it sends
                // about nodes it knows failed: no peer makes it drop one.
                if !self.dead.contains(&dead) {
                    cx.unexpected(
                        from,
                        msg,
                        s.local[unit as usize],
                        "names a node this home does not know failed",
                    );
                    return;
                }
                if let Some(s) = self.segs.get_mut(&seg_id) {
                    directory::stuck(s, seg_id, unit, from, dead, reply, acked, cx);
                }
            }
        }
    }

    /// Handle the work this call gave itself, in order.
    fn drain(&mut self, cx: &mut Cx) {
        while let Some(work) = cx.internal.pop_front() {
            match work {
                Internal::Msg(msg) => self.handle(self.me, msg, cx),
                Internal::Pump { seg, unit } => {
                    if let Some(s) = self.segs.get_mut(&seg) {
                        directory::pump(s, seg, unit, cx);
                    }
                }
            }
        }
    }
}
