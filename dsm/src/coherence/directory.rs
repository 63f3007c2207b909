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

/// Who holds a unit: an owner, or a non-empty copy set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Entry {
    pub(crate) owner: Option<NodeId>,
    pub(crate) sharers: BTreeSet<NodeId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
struct Busy {
    /// The transaction waiting for its requester's `Done`.
    active: Option<Request>,
    queue: VecDeque<Request>,
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

    pub(crate) fn view(&self, unit: Unit) -> Option<DirView> {
        let e = self.entries.get(unit as usize)?;
        let busy = self.busy.get(&unit);
        Some(DirView {
            owner: e.owner,
            sharers: e.sharers.iter().copied().collect(),
            active: busy.and_then(|b| b.active).map(|r| (r.from, r.write)),
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
        .chain(busy.queue.iter())
        .any(|r| r.from == from);
    if duplicate {
        let msg = if write {
            CohMsg::WriteReq { seg, unit }
        } else {
            CohMsg::ReadReq { seg, unit }
        };
        cx.ignore(
            from,
            Error::Unexpected {
                from,
                msg,
                state,
                why: "the node already has a request on this unit",
            },
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
        Some(b) if b.active.is_some_and(|r| r.from == from) => {
            b.active = None;
            cx.pump(seg, unit);
        }
        _ => cx.ignore(
            from,
            Error::Unexpected {
                from,
                msg: CohMsg::Done { seg, unit },
                state,
                why: "no active transaction of this node on this unit",
            },
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
        Err(refusal) => {
            let error = match refusal {
                // Unreachable while nodes never fail (see `Error::NoCopy`):
                // drop the request rather than serve a hole.
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
        busy.active = Some(req);
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
    /// No node holds the unit (only possible once nodes can fail).
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
    Ok(Plan {
        steps,
        complete: reply_by_home && acks == 0,
    })
}
