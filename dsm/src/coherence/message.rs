//! The coherence messages nodes exchange and the actions the engine asks its
//! daemon to perform, with compact one-line renderings used by traces, logs
//! and the golden transition table.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{NodeId, SegId, Unit, Waiter};
use crate::Error;

/// A coherence message between two nodes about one unit of one segment.
/// The module doc of [`crate::coherence`] explains each.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub enum CohMsg {
    /// Requester -> home: I want a Shared copy.
    ReadReq { seg: SegId, unit: Unit },
    /// Requester -> home: I want the Modified copy.
    WriteReq { seg: SegId, unit: Unit },
    /// Home -> supplier: send your bytes to `req`, keep a Shared copy.
    Fetch { seg: SegId, unit: Unit, req: NodeId },
    /// Home -> supplier: send your bytes to `req` (tell it to expect `acks`
    /// acknowledgements), then drop your copy.
    FetchInv {
        seg: SegId,
        unit: Unit,
        req: NodeId,
        acks: u32,
    },
    /// Home -> sharer: drop your copy, then acknowledge to `req`.
    Inv { seg: SegId, unit: Unit, req: NodeId },
    /// Sharer -> requester: my copy is gone.
    InvAck { seg: SegId, unit: Unit },
    /// Supplier -> requester, with the unit's bytes as payload: Modified if
    /// `excl`, else Shared, once `acks` `InvAck`s have arrived.
    Data {
        seg: SegId,
        unit: Unit,
        excl: bool,
        acks: u32,
    },
    /// Home -> requester holding a Shared copy: it becomes Modified once
    /// `acks` `InvAck`s have arrived.
    Grant { seg: SegId, unit: Unit, acks: u32 },
    /// Requester -> home: the transaction is complete on my side.
    Done { seg: SegId, unit: Unit },
    /// Home -> requester: no node holds a valid copy of the unit any more
    /// (its only copy was at a node that failed); the request fails.
    Lost { seg: SegId, unit: Unit },
    /// Home -> requester: node `dead` failed while your request may wait on
    /// it; answer with `Stuck` if it is still in flight.
    Check {
        seg: SegId,
        unit: Unit,
        dead: NodeId,
    },
    /// Requester -> home, answering `Check`: my request is still in flight
    /// and I will take nothing more from `dead`; `reply`: I have its reply
    /// (`Data`/`Grant`), `acked`: I have `dead`'s `InvAck`.
    Stuck {
        seg: SegId,
        unit: Unit,
        dead: NodeId,
        reply: bool,
        acked: bool,
    },
    /// Home -> requester: count the `InvAck` that failed node `node` owes
    /// you as received (its copy died with it).
    Waive {
        seg: SegId,
        unit: Unit,
        node: NodeId,
    },
}

impl CohMsg {
    /// The segment the message is about.
    pub fn seg(&self) -> SegId {
        match *self {
            CohMsg::ReadReq { seg, .. }
            | CohMsg::WriteReq { seg, .. }
            | CohMsg::Fetch { seg, .. }
            | CohMsg::FetchInv { seg, .. }
            | CohMsg::Inv { seg, .. }
            | CohMsg::InvAck { seg, .. }
            | CohMsg::Data { seg, .. }
            | CohMsg::Grant { seg, .. }
            | CohMsg::Done { seg, .. }
            | CohMsg::Lost { seg, .. }
            | CohMsg::Check { seg, .. }
            | CohMsg::Stuck { seg, .. }
            | CohMsg::Waive { seg, .. } => seg,
        }
    }

    /// The unit the message is about.
    pub fn unit(&self) -> Unit {
        match *self {
            CohMsg::ReadReq { unit, .. }
            | CohMsg::WriteReq { unit, .. }
            | CohMsg::Fetch { unit, .. }
            | CohMsg::FetchInv { unit, .. }
            | CohMsg::Inv { unit, .. }
            | CohMsg::InvAck { unit, .. }
            | CohMsg::Data { unit, .. }
            | CohMsg::Grant { unit, .. }
            | CohMsg::Done { unit, .. }
            | CohMsg::Lost { unit, .. }
            | CohMsg::Check { unit, .. }
            | CohMsg::Stuck { unit, .. }
            | CohMsg::Waive { unit, .. } => unit,
        }
    }
}

impl fmt::Display for CohMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (seg, unit) = (self.seg(), self.unit());
        match self {
            CohMsg::ReadReq { .. } => write!(f, "ReadReq(s{seg}.u{unit})"),
            CohMsg::WriteReq { .. } => write!(f, "WriteReq(s{seg}.u{unit})"),
            CohMsg::Fetch { req, .. } => write!(f, "Fetch(s{seg}.u{unit} req={req})"),
            CohMsg::FetchInv { req, acks, .. } => {
                write!(f, "FetchInv(s{seg}.u{unit} req={req} acks={acks})")
            }
            CohMsg::Inv { req, .. } => write!(f, "Inv(s{seg}.u{unit} req={req})"),
            CohMsg::InvAck { .. } => write!(f, "InvAck(s{seg}.u{unit})"),
            CohMsg::Data { excl, acks, .. } => {
                let kind = if *excl { "excl" } else { "shared" };
                write!(f, "Data(s{seg}.u{unit} {kind} acks={acks})")
            }
            CohMsg::Grant { acks, .. } => write!(f, "Grant(s{seg}.u{unit} acks={acks})"),
            CohMsg::Done { .. } => write!(f, "Done(s{seg}.u{unit})"),
            CohMsg::Lost { .. } => write!(f, "Lost(s{seg}.u{unit})"),
            CohMsg::Check { dead, .. } => write!(f, "Check(s{seg}.u{unit} dead={dead})"),
            CohMsg::Stuck {
                dead, reply, acked, ..
            } => write!(
                f,
                "Stuck(s{seg}.u{unit} dead={dead} reply={reply} acked={acked})"
            ),
            CohMsg::Waive { node, .. } => write!(f, "Waive(s{seg}.u{unit} node={node})"),
        }
    }
}

/// What the engine asks the daemon to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `msg` to `to`. If `with_data` is set, the daemon attaches this
    /// node's current bytes of the message's unit as the payload, read at the
    /// moment it performs this action.
    Send {
        to: NodeId,
        msg: CohMsg,
        with_data: bool,
    },
    /// Store the payload of the message being handled as this node's bytes of
    /// (seg, unit). The bytes stay unmapped until a `Resolve` allows access.
    Install { seg: SegId, unit: Unit },
    /// Drop this node's copy (the daemon punches the hole in the memfd,
    /// removing it from every local mapping).
    Invalidate { seg: SegId, unit: Unit },
    /// Make this node's copy read-only in every local mapping.
    Downgrade { seg: SegId, unit: Unit },
    /// Let the blocked access `waiter` proceed, mapping the unit writable or
    /// read-only.
    Resolve {
        waiter: Waiter,
        seg: SegId,
        unit: Unit,
        writable: bool,
    },
    /// The blocked access `waiter` cannot be served (unknown or removed
    /// segment, unit out of range, unit lost with a failed node, segment
    /// whose home failed): the daemon fails that access (`SIGBUS`).
    Fail {
        waiter: Waiter,
        seg: SegId,
        unit: Unit,
        error: Error,
    },
    /// Call [`super::Engine::timer`]`(seg, unit, id)` in `after_us`
    /// microseconds: the quantum of a unit this node just received. A timer
    /// is never cancelled; a stale one is ignored by the engine.
    SetTimer {
        seg: SegId,
        unit: Unit,
        id: u64,
        after_us: u64,
    },
    /// A message from `from` was dropped because it names an unknown segment
    /// or breaks the protocol. The daemon logs it; a peer that keeps doing so
    /// is broken and its link may be dropped.
    Ignored { from: NodeId, error: Error },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Send { to, msg, with_data } => {
                write!(f, "send {to} {msg}")?;
                if *with_data {
                    f.write_str("+bytes")?;
                }
                Ok(())
            }
            Action::Install { seg, unit } => write!(f, "install s{seg}.u{unit}"),
            Action::Invalidate { seg, unit } => write!(f, "invalidate s{seg}.u{unit}"),
            Action::Downgrade { seg, unit } => write!(f, "downgrade s{seg}.u{unit}"),
            Action::Resolve {
                waiter,
                seg,
                unit,
                writable,
            } => {
                let how = if *writable { "rw" } else { "ro" };
                write!(f, "resolve w{waiter} s{seg}.u{unit} {how}")
            }
            Action::Fail {
                waiter,
                seg,
                unit,
                error,
            } => write!(f, "fail w{waiter} s{seg}.u{unit}: {error}"),
            Action::SetTimer {
                seg,
                unit,
                id,
                after_us,
            } => write!(f, "timer t{id} s{seg}.u{unit} in {after_us}us"),
            Action::Ignored { from, error } => write!(f, "ignored from {from}: {error}"),
        }
    }
}
