//! The home's side: the directory entry of every unit and the per-unit
//! transaction queue.
//!
//! The directory decides a whole transaction when it starts ([`decide`], a
//! pure function of the entry and the request, so the decision table is easy
//! to read and test) and records the outcome at once; nothing else can look
//! at the entry until the transaction completes, because transactions on a
//! unit run one at a time. Starting the next queued transaction is deferred
//! through [`Cx::pump`] so that it happens after the home has handled every
//! message it sent to itself for the previous one.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{CohMsg, Cx, DirView, NodeId, SegId, Segment, Unit, UnitState, cache};
use crate::Error;

/// A home's directory for one segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Directory {
    entries: Vec<Entry>,
    /// Units with an active or queued transaction.
    busy: BTreeMap<Unit, Busy>,
}

/// Who holds a unit: an owner, or a non-empty copy set; neither once the
/// unit is lost with a failed node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Entry {
    pub(crate) owner: Option<NodeId>,
    pub(crate) sharers: BTreeSet<NodeId>,
}

impl Entry {
    fn is_lost(&self) -> bool {
        self.owner.is_none() && self.sharers.is_empty()
    }

    fn lose(&mut self) {
        self.owner = None;
        self.sharers.clear();
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct Busy {
    /// The transaction waiting for its requester's `Done`.
    active: Option<Active>,
    queue: VecDeque<Request>,
}

/// A started transaction the home waits on, with who the requester waits
/// on (to settle it if one of them fails).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Active {
    req: Request,
    /// The node asked to send the bytes (not the home).
    supplier: Option<NodeId>,
    /// The sharers asked to acknowledge to the requester.
    invs: BTreeSet<NodeId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Request {
    pub(crate) from: NodeId,
    pub(crate) write: bool,
}

/// One step of a started transaction, performed in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// A message from the home's directory (to a peer or to the home itself).
    Send(NodeId, CohMsg),
    /// The home supplies the bytes itself (it holds a copy).
    Supply { to: NodeId, excl: bool, acks: u32 },
    /// The home drops its own copy (it is a sharer being invalidated).
    InvalidateHome,
}

/// The decision for one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) steps: Vec<Step>,
    /// The home itself sent the reply and no acknowledgements are owed: the
    /// transaction is complete as soon as the steps are performed.
    pub(crate) complete: bool,
    /// The node asked to supply the bytes, unless it is the home.
    pub(crate) supplier: Option<NodeId>,
    /// The sharers asked to acknowledge to the requester.
    pub(crate) invs: Vec<NodeId>,
}

impl Directory {
    /// A new segment: the home holds every unit.
    pub(crate) fn new(home: NodeId, units: u32) -> Self {
        let entry = Entry {
            owner: Some(home),
            sharers: BTreeSet::new(),
        };
        Directory {
            entries: vec![entry; units as usize],
            busy: BTreeMap::new(),
        }
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.busy.is_empty()
    }

    /// Units no node holds a valid copy of (lost with a failed node).
    pub(crate) fn lost_units(&self) -> impl Iterator<Item = Unit> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_lost())
            .map(|(u, _)| u as Unit)
    }

    pub(crate) fn view(&self, unit: Unit) -> Option<DirView> {
        let e = self.entries.get(unit as usize)?;
        let busy = self.busy.get(&unit);
        Some(DirView {
            owner: e.owner,
            sharers: e.sharers.iter().copied().collect(),
            active: busy
                .and_then(|b| b.active.as_ref())
                .map(|a| (a.req.from, a.req.write)),
            queued: busy
                .map(|b| b.queue.iter().map(|r| (r.from, r.write)).collect())
                .unwrap_or_default(),
        })
    }
}

/// Render a directory entry for descriptions.
pub(crate) fn describe(d: &DirView) -> String {
    let nodes = |v: &[NodeId]| {
        v.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let req = |(n, w): (NodeId, bool)| format!("{}{n}", if w { 'W' } else { 'R' });
    let mut out = match d.owner {
        Some(o) => format!("owner={o}"),
        None if d.sharers.is_empty() => "lost".to_string(),
        None => format!("sharers={{{}}}", nodes(&d.sharers)),
    };
    if let Some(a) = d.active {
        out.push_str(&format!(" active={}", req(a)));
    }
    if !d.queued.is_empty() {
        let q: Vec<String> = d.queued.iter().map(|&r| req(r)).collect();
        out.push_str(&format!(" queue=[{}]", q.join(",")));
    }
    out
}

/// A `ReadReq`/`WriteReq` from `from` (possibly the home itself).
pub(crate) fn request(
    s: &mut Segment,
    seg: SegId,
    unit: Unit,
    from: NodeId,
    write: bool,
    cx: &mut Cx,
) {
    let state = s.local[unit as usize];
    let Some(dir) = s.dir.as_mut() else {
        cx.ignore(
            from,
            Error::NotHome {
                seg,
                me: cx.me(),
                home: s.home,
            },
        );
        return;
    };
    let busy = dir.busy.entry(unit).or_default();
    let duplicate = busy
        .active
        .iter()
        .map(|a| &a.req)
        .chain(busy.queue.iter())
        .any(|r| r.from == from);
    if duplicate {
        let msg = if write {
            CohMsg::WriteReq { seg, unit }
        } else {
            CohMsg::ReadReq { seg, unit }
        };
        cx.unexpected(
            from,
            msg,
            state,
            "the node already has a request on this unit",
        );
        return;
    }
    busy.queue.push_back(Request { from, write });
    cx.pump(seg, unit);
}

/// A `Done` from the requester of the active transaction.
pub(crate) fn done(s: &mut Segment, seg: SegId, unit: Unit, from: NodeId, cx: &mut Cx) {
    let state = s.local[unit as usize];
    let Some(dir) = s.dir.as_mut() else {
        cx.ignore(
            from,
            Error::NotHome {
                seg,
                me: cx.me(),
                home: s.home,
            },
        );
        return;
    };
    match dir.busy.get_mut(&unit) {
        Some(b) if b.active.as_ref().is_some_and(|a| a.req.from == from) => {
            b.active = None;
            cx.pump(seg, unit);
        }
        _ => cx.unexpected(
            from,
            CohMsg::Done { seg, unit },
            state,
            "no active transaction of this node on this unit",
        ),
    }
}

/// Start the next queued transaction on `unit` if none is active.
pub(crate) fn pump(s: &mut Segment, seg: SegId, unit: Unit, cx: &mut Cx) {
    let home = s.home;
    let Some(dir) = s.dir.as_mut() else { return };
    let Some(busy) = dir.busy.get_mut(&unit) else {
        return;
    };
    if busy.active.is_some() {
        return;
    }
    let Some(&req) = busy.queue.front() else {
        dir.busy.remove(&unit);
        return;
    };
    let Some(entry) = dir.entries.get_mut(unit as usize) else {
        return;
    };
    if s.holds.contains_key(&unit) && takes_from_home(entry, home, s.local[unit as usize], req) {
        // The home holds the unit within its quantum: the transaction
        // starts when the quantum ends (`cache::quantum_over` pumps again).
        return;
    }
    busy.queue.pop_front();
    let plan = match decide(entry, home, seg, unit, req) {
        Ok(plan) => plan,
        Err(Refusal::NoCopy) => {
            // The unit was lost with a failed node: the request fails.
            cx.send(req.from, CohMsg::Lost { seg, unit }, false);
            cx.pump(seg, unit);
            return;
        }
        Err(refusal) => {
            let error = match refusal {
                Refusal::NoCopy => Error::NoCopy { seg, unit },
                Refusal::AlreadyHolds => Error::Unexpected {
                    from: req.from,
                    msg: if req.write {
                        CohMsg::WriteReq { seg, unit }
                    } else {
                        CohMsg::ReadReq { seg, unit }
                    },
                    state: s.local[unit as usize],
                    why: "the node already holds the right it asks for",
                },
            };
            cx.ignore(req.from, error);
            cx.pump(seg, unit);
            return;
        }
    };
    if plan.complete {
        cx.pump(seg, unit);
    } else {
        busy.active = Some(Active {
            req,
            supplier: plan.supplier,
            invs: plan.invs.iter().copied().collect(),
        });
    }
    for step in plan.steps {
        match step {
            Step::Send(to, msg) => cx.send(to, msg, false),
            Step::Supply { to, excl, acks } => {
                cache::supply(&mut s.local, seg, unit, home, to, excl, acks, cx)
            }
            Step::InvalidateHome => cache::invalidate_local(&mut s.local, seg, unit, cx),
        }
    }
}

/// Would transaction `req` take a right away from the home's own copy
/// (`state`): drop it, or downgrade it from Modified?
fn takes_from_home(entry: &Entry, home: NodeId, state: UnitState, req: Request) -> bool {
    if req.from == home {
        return false;
    }
    let holds = entry.owner == Some(home) || entry.sharers.contains(&home);
    holds && (req.write || state == UnitState::Modified)
}

/// Why a request cannot start a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No node holds the unit (it was lost with a failed node).
    NoCopy,
    /// The requester already holds what it asks for (a confused peer).
    AlreadyHolds,
}

/// Decide transaction `req` on a unit whose directory entry is `entry`, and
/// update the entry to its outcome (the entry is unchanged on refusal).
/// `home` is this node.
pub(crate) fn decide(
    entry: &mut Entry,
    home: NodeId,
    seg: SegId,
    unit: Unit,
    req: Request,
) -> Result<Plan, Refusal> {
    let r = req.from;
    let mut steps = Vec::new();
    let mut invs = Vec::new();
    // Ask `supplier` to send the bytes to the requester; true if the home
    // itself does (then the home sends the reply).
    let supply = |supplier: NodeId, excl: bool, acks: u32, steps: &mut Vec<Step>| {
        if supplier == home {
            steps.push(Step::Supply { to: r, excl, acks });
        } else if excl {
            steps.push(Step::Send(
                supplier,
                CohMsg::FetchInv {
                    seg,
                    unit,
                    req: r,
                    acks,
                },
            ));
        } else {
            steps.push(Step::Send(supplier, CohMsg::Fetch { seg, unit, req: r }));
        }
        supplier == home
    };
    // Who sends the reply, and how many `InvAck`s the requester must await.
    if entry.is_lost() {
        return Err(Refusal::NoCopy);
    }
    let (reply_by_home, acks) = match entry.owner {
        Some(o) if o == r => return Err(Refusal::AlreadyHolds),
        Some(o) => {
            if req.write {
                entry.owner = Some(r);
            } else {
                entry.owner = None;
                entry.sharers = BTreeSet::from([o, r]);
            }
            (supply(o, req.write, 0, &mut steps), 0)
        }
        None if !req.write => {
            if entry.sharers.contains(&r) {
                return Err(Refusal::AlreadyHolds);
            }
            let supplier = if entry.sharers.contains(&home) {
                home
            } else {
                *entry.sharers.first().ok_or(Refusal::NoCopy)?
            };
            entry.sharers.insert(r);
            (supply(supplier, false, 0, &mut steps), 0)
        }
        None => {
            let has_copy = entry.sharers.contains(&r);
            let others: Vec<NodeId> = entry.sharers.iter().copied().filter(|&n| n != r).collect();
            // The bytes come from the requester's own copy, else from the
            // home if it has one, else from the lowest sharer.
            let supplier = if has_copy {
                None
            } else if others.contains(&home) {
                Some(home)
            } else {
                Some(*others.first().ok_or(Refusal::NoCopy)?)
            };
            let mut n = 0;
            for &p in &others {
                if Some(p) == supplier {
                    continue;
                }
                if p == home {
                    steps.push(Step::InvalidateHome);
                } else {
                    steps.push(Step::Send(p, CohMsg::Inv { seg, unit, req: r }));
                    invs.push(p);
                    n += 1;
                }
            }
            let by_home = match supplier {
                None => {
                    steps.push(Step::Send(r, CohMsg::Grant { seg, unit, acks: n }));
                    true
                }
                Some(sup) => supply(sup, true, n, &mut steps),
            };
            entry.sharers.clear();
            entry.owner = Some(r);
            (by_home, n)
        }
    };
    let supplier = steps.iter().find_map(|s| match s {
        Step::Send(to, CohMsg::Fetch { .. } | CohMsg::FetchInv { .. }) => Some(*to),
        _ => None,
    });
    Ok(Plan {
        steps,
        complete: reply_by_home && acks == 0,
        supplier,
        invs,
    })
}

/// Node `dead` failed (this node is the segment's home): drop it from every
/// entry and queue; end the transactions it requested; ask the requesters
/// of the transactions that may wait on it where they stand (`Check`).
pub(crate) fn node_down(s: &mut Segment, seg: SegId, dead: NodeId, cx: &mut Cx) {
    let Some(dir) = s.dir.as_mut() else { return };
    for e in dir.entries.iter_mut() {
        if e.owner == Some(dead) {
            // Its copy was the only one (or the write it requested was
            // under way and the other copies are being dropped for it).
            e.lose();
        }
        e.sharers.remove(&dead);
    }
    let mut pumps = Vec::new();
    for (&unit, busy) in dir.busy.iter_mut() {
        busy.queue.retain(|r| r.from != dead);
        match &busy.active {
            Some(a) if a.req.from == dead => {
                // Its entry was settled above: a read leaves the other
                // copies, a write leaves none.
                busy.active = None;
                pumps.push(unit);
            }
            Some(a) if a.supplier == Some(dead) || a.invs.contains(&dead) => {
                let to = a.req.from;
                cx.send(to, CohMsg::Check { seg, unit, dead }, false);
            }
            Some(_) => {}
            None => pumps.push(unit),
        }
    }
    for unit in pumps {
        cx.pump(seg, unit);
    }
}

/// The requester of the active transaction answered `Check` about failed
/// node `dead`: its request is in flight; `reply`: it has the reply,
/// `acked`: it has `dead`'s `InvAck`. Ask another sharer for the bytes or
/// fail the request, and waive the acknowledgement it cannot get.
#[allow(clippy::too_many_arguments)]
pub(crate) fn stuck(
    s: &mut Segment,
    seg: SegId,
    unit: Unit,
    from: NodeId,
    dead: NodeId,
    reply: bool,
    acked: bool,
    cx: &mut Cx,
) {
    let home = s.home;
    let Some(dir) = s.dir.as_mut() else { return };
    let (Some(busy), Some(entry)) = (dir.busy.get_mut(&unit), dir.entries.get_mut(unit as usize))
    else {
        return;
    };
    // Anything else is an answer to a `Check` about a transaction that has
    // completed meanwhile: nothing waits on `dead` any more.
    let Some(a) = busy.active.as_mut().filter(|a| a.req.from == from) else {
        return;
    };
    if a.invs.remove(&dead) && !acked {
        cx.send(
            from,
            CohMsg::Waive {
                seg,
                unit,
                node: dead,
            },
            false,
        );
    }
    if a.supplier != Some(dead) || reply {
        return;
    }
    a.supplier = None;
    // A read whose supplier was a sharer: another sharer has the same
    // bytes. Otherwise the failed node had the only valid copy.
    let other = if a.req.write {
        None
    } else if entry.sharers.contains(&home) && home != from {
        Some(home)
    } else {
        entry
            .sharers
            .iter()
            .copied()
            .find(|&n| n != from && !cx.is_dead(n))
    };
    match other {
        Some(sup) if sup == home => {
            busy.active = None;
            cache::supply(&mut s.local, seg, unit, home, from, false, 0, cx);
            cx.pump(seg, unit);
        }
        Some(sup) => {
            a.supplier = Some(sup);
            cx.send(
                sup,
                CohMsg::Fetch {
                    seg,
                    unit,
                    req: from,
                },
                false,
            );
        }
        None => {
            entry.lose();
            busy.active = None;
            cx.send(from, CohMsg::Lost { seg, unit }, false);
            cx.pump(seg, unit);
        }
    }
}
