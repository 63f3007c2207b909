//! dipc engines: the shared-memory coherence protocol (and, beside it, the
//! message-queue and semaphore engines) as pure state machines.
//!
//! This crate is the "coherence engine" and "msg/sem homes" boxes of the node
//! daemon in DESIGN.md's picture, without the daemon: no sockets, no clocks,
//! no threads, no page bytes. Each engine takes inputs (a local page fault, a
//! message from a peer) and returns a list of actions (messages to send, local
//! operations on the node's copy of a segment, blocked accesses to release).
//! The node daemon is a thin loop around it that performs those actions.
//!
//! It may depend on `serde` and `thiserror` only, so that it can be driven by
//! a deterministic simulator, model-checked and fuzzed; it knows nothing of the
//! transports, the daemon or libsysv.
//!
//! * [`coherence`]: the distributed shared memory protocol (home-based
//!   directory, multiple readers / single writer, write-invalidate,
//!   sequentially consistent). Its module doc explains the protocol.
//! * [`msg`], [`sem`]: the message-queue and semaphore-set engines that run
//!   on an object's home node; [`ipc`]: what they share (caller, permission
//!   checks, limits, `errno` values).
//!
//! Testing: `tests/msg_*.rs` and `tests/sem_*.rs` check the msg/sem engines
//! against the kernel's behaviour. `tests/coherence_cases.rs` checks the
//! ordinary coherence transitions one message at a time;
//! `tests/coherence_sim.rs` runs thousands of seeded random schedules through
//! `coherence::sim` (enabled by the `sim` feature, which the crate's own
//! tests turn on) and checks the coherence invariants after every step;
//! `tests/coherence_exhaustive.rs` explores every interleaving of small
//! configurations; `tests/coherence_golden.rs` regenerates the state x event
//! table `testdata/transitions.txt` from the engine and compares it with the
//! checked-in copy (`UPDATE_GOLDEN=1` rewrites it).
#![forbid(unsafe_code)]

pub mod coherence;
pub mod ipc;
pub mod msg;
pub mod sem;

pub use coherence::{Action, CohMsg, Engine, NodeId, SegId, Unit, UnitState, Waiter};

/// Errors of the coherence engine (the msg/sem engines answer callers with
/// `errno` values instead, see [`ipc`]).
///
/// The engine never returns them from a call: an error is reported inside an
/// action ([`Action::Fail`] for a blocked access that cannot be served,
/// [`Action::Ignored`] for a peer message that was dropped), because a call
/// usually produces several independent outcomes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The segment is not known on this node (never added, or removed).
    #[error("segment {seg} is not known on this node")]
    UnknownSegment { seg: SegId },
    /// The unit number is beyond the end of the segment.
    #[error("unit {unit} is out of range: segment {seg} has {units} units")]
    UnitOutOfRange { seg: SegId, unit: Unit, units: u32 },
    /// The segment was removed while the access was waiting.
    #[error("segment {seg} was removed")]
    SegmentRemoved { seg: SegId },
    /// A directory message reached a node that is not the segment's home.
    #[error("node {me} is not the home of segment {seg} (its home is node {home})")]
    NotHome {
        seg: SegId,
        me: NodeId,
        home: NodeId,
    },
    /// A peer sent a message that the protocol does not allow in this state
    /// (a bug or a misbehaving peer); it was dropped.
    #[error("unexpected {msg} from node {from} in state {state:?}: {why}")]
    Unexpected {
        from: NodeId,
        msg: CohMsg,
        state: UnitState,
        why: &'static str,
    },
    /// No live node holds a valid copy of the unit: its only copy was at a
    /// node that failed (the unit is lost for good).
    #[error("segment {seg} unit {unit} is lost: its only copy was at a failed node")]
    NoCopy { seg: SegId, unit: Unit },
    /// The segment's home failed: only the copies this node already holds
    /// stay usable (with the rights it holds them with).
    #[error(
        "the home of segment {seg} (node {home}) failed; this node does not hold the unit with the rights asked"
    )]
    HomeDown { seg: SegId, home: NodeId },
}
