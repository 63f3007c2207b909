//! The node-local side of the protocol: the requester (faults, replies,
//! acknowledgements) and the supplier/sharer (answers to the home).
//!
//! A node keeps at most one request in flight per unit ([`Pending`]); every
//! access that arrives meanwhile joins it as a waiter, so a burst of faults on
//! one unit costs one transaction. A write access that arrives while a read
//! request is in flight waits for it and is then served by an upgrade.
//!
//! Two transfer policies live here because they are decisions of the node
//! holding or asking for a unit, never of the home's directory: the
//! hold-time quantum ([`Hold`]: answers that would take a right away are
//! deferred, in order, until a timer input) and sequential prefetch
//! ([`Seq`]: read requests without waiters for the units following a
//! sequential run of read faults).

use std::collections::{BTreeSet, VecDeque};

use super::{Action, CohMsg, Cx, NodeId, SegId, Segment, Unit, UnitState, Waiter};
use crate::Error;

/// This node's request in flight on a unit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Pending {
    /// A `WriteReq` (else a `ReadReq`).
    write: bool,
    /// The reply (`Data` or `Grant`), once it arrived.
    reply: Option<Reply>,
    /// `InvAck`s received (or waived) so far (they may precede the reply).
    acks: u32,
    /// The nodes whose `InvAck` was received or waived.
    acked: BTreeSet<NodeId>,
    /// The local accesses waiting (waiter, write), in arrival order.
    pub(crate) waiters: Vec<(Waiter, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Reply {
    /// The unit becomes Modified (else Shared).
    excl: bool,
    /// `InvAck`s to await.
    acks: u32,
    /// The home waits for our `Done`.
    done: bool,
}

impl Pending {
    fn new(write: bool, waiters: Vec<(Waiter, bool)>) -> Self {
        Pending {
            write,
            reply: None,
            acks: 0,
            acked: BTreeSet::new(),
            waiters,
        }
    }

    pub(crate) fn describe(&self) -> String {
        let kind = if self.write { "write" } else { "read" };
        let reply = match self.reply {
            None => "no reply".to_string(),
            Some(r) => format!("reply acks {}/{}", self.acks, r.acks),
        };
        let reply = if self.reply.is_none() && self.acks > 0 {
            format!("{reply}, {} acks", self.acks)
        } else {
            reply
        };
        format!("pending {kind} ({reply}), {} waiter(s)", self.waiters.len())
    }
}

/// A unit this node holds within its quantum.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Hold {
    /// The timer that ends it (an older timer of the unit is stale).
    id: u64,
    /// Answers to the home deferred until the quantum ends (from, msg), in
    /// arrival order.
    pub(crate) deferred: VecDeque<(NodeId, CohMsg)>,
}

impl Hold {
    pub(crate) fn describe(&self) -> String {
        format!("held t{}, {} deferred", self.id, self.deferred.len())
    }
}

/// The sequential access detector of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct Seq {
    /// The unit of the last read fault.
    last: Option<Unit>,
    /// The current prefetch window (0: no run yet).
    window: u32,
}

fn request_msg(seg: SegId, unit: Unit, write: bool) -> CohMsg {
    if write {
        CohMsg::WriteReq { seg, unit }
    } else {
        CohMsg::ReadReq { seg, unit }
    }
}

/// A local access to `unit`.
pub(crate) fn fault(
    s: &mut Segment,
    seg: SegId,
    unit: Unit,
    write: bool,
    waiter: Waiter,
    cx: &mut Cx,
) {
    let state = s.local[unit as usize];
    if state == UnitState::Modified || (state == UnitState::Shared && !write) {
        cx.act(Action::Resolve {
            waiter,
            seg,
            unit,
            writable: state == UnitState::Modified,
        });
        if !write {
            prefetch(s, seg, unit, false, cx);
        }
        return;
    }
    let error = if s.lost.contains(&unit) {
        Some(Error::NoCopy { seg, unit })
    } else if s.home_down {
        Some(Error::HomeDown { seg, home: s.home })
    } else {
        None
    };
    if let Some(error) = error {
        cx.act(Action::Fail {
            waiter,
            seg,
            unit,
            error,
        });
        return;
    }
    match s.pending.get_mut(&unit) {
        // A read in flight serves a write waiter by an upgrade afterwards.
        Some(p) => p.waiters.push((waiter, write)),
        None => {
            s.pending
                .insert(unit, Pending::new(write, vec![(waiter, write)]));
            cx.send(s.home, request_msg(seg, unit, write), false);
        }
    }
    if !write {
        prefetch(s, seg, unit, true, cx);
    }
}

/// Sequential prefetch after a read fault on `unit` (`missed`: it had to
/// wait, for a new request or one in flight). A fault on the unit after the
/// last one continues a run: a miss doubles the window (up to the segment's bound), and every unit of the
/// window after `unit` that this node neither holds nor requests is asked
/// for with a read request that no access waits on. Any other unit ends the
/// run; a second fault on the same unit changes nothing.
fn prefetch(s: &mut Segment, seg: SegId, unit: Unit, missed: bool, cx: &mut Cx) {
    let max = s.opts.prefetch;
    if max == 0 || s.seq.last == Some(unit) {
        return;
    }
    let sequential = s.seq.last.and_then(|l| l.checked_add(1)) == Some(unit);
    s.seq.last = Some(unit);
    if !sequential {
        s.seq.window = 0;
        return;
    }
    if missed {
        s.seq.window = s.seq.window.saturating_mul(2).clamp(1, max);
    }
    let end = unit
        .saturating_add(s.seq.window)
        .min(s.units.saturating_sub(1));
    for u in unit.saturating_add(1)..=end {
        if s.local[u as usize] == UnitState::Invalid
            && !s.pending.contains_key(&u)
            && !s.lost.contains(&u)
            && !s.home_down
        {
            s.pending.insert(u, Pending::new(false, Vec::new()));
            cx.send(s.home, request_msg(seg, u, false), false);
        }
    }
}

/// The quantum of `unit` ended (timer `id`): give the deferred answers in
/// order, and let the home start the transactions it held back.
pub(crate) fn quantum_over(s: &mut Segment, seg: SegId, unit: Unit, id: u64, cx: &mut Cx) {
    if s.holds.get(&unit).is_none_or(|h| h.id != id) {
        return;
    }
    let Some(hold) = s.holds.remove(&unit) else {
        return;
    };
    for (from, msg) in hold.deferred {
        serve(s, from, msg, cx);
    }
    if s.dir.is_some() {
        cx.pump(seg, unit);
    }
}

/// Start the quantum of a unit this node just received for a local access.
fn start_hold(s: &mut Segment, seg: SegId, unit: Unit, cx: &mut Cx) {
    if s.opts.quantum_us == 0 {
        return;
    }
    s.next_timer += 1;
    let id = s.next_timer;
    let deferred = s
        .holds
        .remove(&unit)
        .map(|h| h.deferred)
        .unwrap_or_default();
    s.holds.insert(unit, Hold { id, deferred });
    cx.act(Action::SetTimer {
        seg,
        unit,
        id,
        after_us: s.opts.quantum_us,
    });
}

/// Send this node's bytes to `to`: Modified if `excl` (this node then drops
/// its copy), else Shared (an owner downgrades first).
#[allow(clippy::too_many_arguments)]
pub(crate) fn supply(
    local: &mut [UnitState],
    seg: SegId,
    unit: Unit,
    home: NodeId,
    to: NodeId,
    excl: bool,
    acks: u32,
    cx: &mut Cx,
) {
    let Some(state) = local.get_mut(unit as usize) else {
        return;
    };
    let msg = CohMsg::Data {
        seg,
        unit,
        excl,
        acks,
    };
    match *state {
        UnitState::Invalid => {
            // Only a confused home asks a node without a copy; answering
            // would send a hole.
            let asked = if excl {
                CohMsg::FetchInv {
                    seg,
                    unit,
                    req: to,
                    acks,
                }
            } else {
                CohMsg::Fetch { seg, unit, req: to }
            };
            cx.unexpected(
                home,
                asked,
                *state,
                "asked to supply a unit this node does not hold",
            );
            return;
        }
        UnitState::Modified => {
            // Stop local writes before the bytes are read.
            cx.act(Action::Downgrade { seg, unit });
            *state = UnitState::Shared;
        }
        UnitState::Shared => {}
    }
    cx.send(to, msg, true);
    if excl {
        invalidate_local(local, seg, unit, cx);
    }
}

/// Drop this node's copy.
pub(crate) fn invalidate_local(local: &mut [UnitState], seg: SegId, unit: Unit, cx: &mut Cx) {
    if let Some(state) = local.get_mut(unit as usize) {
        *state = UnitState::Invalid;
        cx.act(Action::Invalidate { seg, unit });
    }
}

/// A `Fetch`, `FetchInv` or `Inv` from the home.
pub(crate) fn serve(s: &mut Segment, from: NodeId, msg: CohMsg, cx: &mut Cx) {
    let (seg, unit) = (msg.seg(), msg.unit());
    let state = s.local[unit as usize];
    let unexpected = |why| Error::Unexpected {
        from,
        msg: msg.clone(),
        state,
        why,
    };
    if from != s.home {
        cx.ignore(from, unexpected("only the home may send this"));
        return;
    }
    if let Some(h) = s.holds.get_mut(&unit) {
        // Within the quantum, an answer that takes a right away waits (a
        // sharer asked for its bytes loses nothing and answers at once,
        // unless an earlier answer waits: the order is kept).
        let takes = !matches!(msg, CohMsg::Fetch { .. }) || state == UnitState::Modified;
        if takes || !h.deferred.is_empty() {
            h.deferred.push_back((from, msg));
            return;
        }
    }
    match msg {
        CohMsg::Fetch { req, .. } => supply(&mut s.local, seg, unit, from, req, false, 0, cx),
        CohMsg::FetchInv { req, acks, .. } => {
            supply(&mut s.local, seg, unit, from, req, true, acks, cx)
        }
        CohMsg::Inv { req, .. } => {
            if state != UnitState::Shared {
                cx.ignore(from, unexpected("only a sharer is invalidated"));
                return;
            }
            invalidate_local(&mut s.local, seg, unit, cx);
            cx.send(req, CohMsg::InvAck { seg, unit }, false);
        }
        _ => cx.ignore(from, unexpected("not a message for a supplier")),
    }
}

/// A `Data`, `Grant` or `InvAck` for this node's request.
pub(crate) fn reply(s: &mut Segment, from: NodeId, msg: CohMsg, cx: &mut Cx) {
    let (seg, unit) = (msg.seg(), msg.unit());
    let state = s.local[unit as usize];
    let home = s.home;
    let unexpected = |why| Error::Unexpected {
        from,
        msg: msg.clone(),
        state,
        why,
    };
    let Some(p) = s.pending.get_mut(&unit) else {
        // Late messages about a request that failed with a node (an
        // `InvAck` for a write that found its unit lost) are expected.
        if !(s.home_down || s.lost.contains(&unit)) {
            cx.ignore(from, unexpected("no request in flight"));
        }
        return;
    };
    match msg {
        CohMsg::Data { excl, acks, .. } => {
            if p.reply.is_some() || excl != p.write || state != UnitState::Invalid {
                cx.ignore(from, unexpected("does not answer the request in flight"));
                return;
            }
            if from != cx.me() {
                cx.act(Action::Install { seg, unit });
            }
            p.reply = Some(Reply {
                excl,
                acks,
                done: !(from == home && acks == 0),
            });
        }
        CohMsg::Grant { acks, .. } => {
            if from != home || p.reply.is_some() || !p.write || state != UnitState::Shared {
                cx.ignore(from, unexpected("does not answer the request in flight"));
                return;
            }
            p.reply = Some(Reply {
                excl: true,
                acks,
                done: acks > 0,
            });
        }
        CohMsg::InvAck { .. } | CohMsg::Waive { .. } => {
            let node = match msg {
                CohMsg::Waive { node, .. } if from == home => node,
                CohMsg::Waive { .. } => {
                    cx.ignore(from, unexpected("only the home may send this"));
                    return;
                }
                _ => from,
            };
            let too_many = p.reply.is_some_and(|r| p.acks >= r.acks);
            if !p.write || too_many || !p.acked.insert(node) {
                cx.ignore(from, unexpected("no acknowledgement is owed"));
                return;
            }
            p.acks += 1;
        }
        CohMsg::Lost { .. } => {
            if from != home || p.reply.is_some() {
                cx.ignore(from, unexpected("does not answer the request in flight"));
                return;
            }
            lose(s, seg, unit, cx);
            return;
        }
        _ => {
            cx.ignore(from, unexpected("not a message for a requester"));
            return;
        }
    }
    try_complete(s, seg, unit, cx);
}

/// No valid copy of `unit` is left anywhere: fail the request in flight and
/// every later access.
fn lose(s: &mut Segment, seg: SegId, unit: Unit, cx: &mut Cx) {
    s.lost.insert(unit);
    if let Some(p) = s.pending.remove(&unit) {
        for (waiter, _) in p.waiters {
            cx.act(Action::Fail {
                waiter,
                seg,
                unit,
                error: Error::NoCopy { seg, unit },
            });
        }
    }
}

/// The home asks whether this node's request on `unit` may still wait on
/// failed node `dead` (already marked failed here): answer `Stuck` if a
/// request is in flight.
pub(crate) fn check(s: &mut Segment, seg: SegId, unit: Unit, dead: NodeId, cx: &mut Cx) {
    if let Some(p) = s.pending.get(&unit) {
        let msg = CohMsg::Stuck {
            seg,
            unit,
            dead,
            reply: p.reply.is_some(),
            acked: p.acked.contains(&dead),
        };
        cx.send(s.home, msg, false);
    }
}

/// The segment's home failed: every request in flight fails, the copies
/// this node holds stay, answers deferred on the home's behalf are dropped.
pub(crate) fn home_down(s: &mut Segment, seg: SegId, cx: &mut Cx) {
    s.home_down = true;
    let home = s.home;
    for (unit, p) in std::mem::take(&mut s.pending) {
        for (waiter, _) in p.waiters {
            cx.act(Action::Fail {
                waiter,
                seg,
                unit,
                error: Error::HomeDown { seg, home },
            });
        }
    }
    for h in s.holds.values_mut() {
        h.deferred.clear();
    }
}

/// Complete the request in flight on `unit` if its reply and all its
/// acknowledgements have arrived.
fn try_complete(s: &mut Segment, seg: SegId, unit: Unit, cx: &mut Cx) {
    let ready = s
        .pending
        .get(&unit)
        .and_then(|p| p.reply.filter(|r| r.acks == p.acks));
    let Some(reply) = ready else { return };
    let Some(p) = s.pending.remove(&unit) else {
        return;
    };
    let state = if reply.excl {
        UnitState::Modified
    } else {
        UnitState::Shared
    };
    s.local[unit as usize] = state;
    if !p.waiters.is_empty() {
        start_hold(s, seg, unit, cx);
    }
    let mut upgrade = Vec::new();
    for (waiter, write) in p.waiters {
        if reply.excl || !write {
            cx.act(Action::Resolve {
                waiter,
                seg,
                unit,
                writable: reply.excl,
            });
        } else {
            upgrade.push((waiter, write));
        }
    }
    if reply.done {
        cx.send(s.home, CohMsg::Done { seg, unit }, false);
    }
    if !upgrade.is_empty() {
        s.pending.insert(unit, Pending::new(true, upgrade));
        cx.send(s.home, request_msg(seg, unit, true), false);
    }
}
