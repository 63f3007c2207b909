//! The golden transition table `testdata/transitions.txt`: state x event ->
//! actions for each role (home directory, requester, owner, sharer),
//! generated from the real engine and compared with the checked-in file, so
//! that any change of protocol behaviour shows up as a readable diff in
//! review. `UPDATE_GOLDEN=1 cargo test -p dipc-dsm --test coherence_golden`
//! rewrites the file.
//!
//! Every row builds its state by feeding one engine a scripted history (the
//! messages its peers would have sent), then applies the event.

use std::fmt::Write as _;
use std::path::PathBuf;

use dipc_dsm::coherence::SegOpts;
use dipc_dsm::{Action, CohMsg, Engine, NodeId};

const SEG: i32 = 1;
const HOME: NodeId = 0;

/// An input to an engine.
#[derive(Clone)]
enum In {
    Fault {
        write: bool,
        waiter: u64,
    },
    Msg {
        from: NodeId,
        msg: CohMsg,
    },
    UnknownSegFault,
    /// A read fault on another unit than u0 (prefetch rows).
    ReadAt {
        unit: u32,
        waiter: u64,
    },
    /// The timer `id` fires on u0.
    Timer(u64),
    /// The node is declared failed.
    Down(NodeId),
}

fn read(waiter: u64) -> In {
    In::Fault {
        write: false,
        waiter,
    }
}
fn write(waiter: u64) -> In {
    In::Fault {
        write: true,
        waiter,
    }
}
fn msg(from: NodeId, msg: CohMsg) -> In {
    In::Msg { from, msg }
}
fn read_req() -> CohMsg {
    CohMsg::ReadReq { seg: SEG, unit: 0 }
}
fn write_req() -> CohMsg {
    CohMsg::WriteReq { seg: SEG, unit: 0 }
}
fn done() -> CohMsg {
    CohMsg::Done { seg: SEG, unit: 0 }
}
fn fetch(req: NodeId) -> CohMsg {
    CohMsg::Fetch {
        seg: SEG,
        unit: 0,
        req,
    }
}
fn fetch_inv(req: NodeId, acks: u32) -> CohMsg {
    CohMsg::FetchInv {
        seg: SEG,
        unit: 0,
        req,
        acks,
    }
}
fn inv(req: NodeId) -> CohMsg {
    CohMsg::Inv {
        seg: SEG,
        unit: 0,
        req,
    }
}
fn inv_ack() -> CohMsg {
    CohMsg::InvAck { seg: SEG, unit: 0 }
}
fn data(excl: bool, acks: u32) -> CohMsg {
    CohMsg::Data {
        seg: SEG,
        unit: 0,
        excl,
        acks,
    }
}
fn grant(acks: u32) -> CohMsg {
    CohMsg::Grant {
        seg: SEG,
        unit: 0,
        acks,
    }
}

fn feed(e: &mut Engine, input: &In) -> Vec<Action> {
    match input {
        In::Fault { write, waiter } => e.fault(SEG, 0, *write, *waiter),
        In::Msg { from, msg } => e.receive(*from, msg.clone()),
        In::UnknownSegFault => e.fault(99, 0, false, 9),
        In::ReadAt { unit, waiter } => e.fault(SEG, *unit, false, *waiter),
        In::Timer(id) => e.timer(SEG, 0, *id),
        In::Down(n) => e.node_down(*n),
    }
}

fn describe_input(node: NodeId, input: &In) -> String {
    match input {
        In::Fault { write, waiter } => {
            let kind = if *write { "write" } else { "read" };
            format!("local {kind} fault w{waiter}")
        }
        In::Msg { from, msg } if *from == node => format!("{msg} from itself"),
        In::Msg { from, msg } => format!("{msg} from {from}"),
        In::UnknownSegFault => "local read fault w9 on unknown segment 99".to_string(),
        In::ReadAt { unit, waiter } => format!("local read fault w{waiter} on u{unit}"),
        In::Timer(id) => format!("timer t{id} fires"),
        In::Down(n) => format!("node {n} declared down"),
    }
}

struct Row {
    id: &'static str,
    node: NodeId,
    setup: Vec<In>,
    event: In,
    units: u32,
    opts: SegOpts,
}

fn row(id: &'static str, node: NodeId, setup: Vec<In>, event: In) -> Row {
    Row {
        id,
        node,
        setup,
        event,
        units: 1,
        opts: SegOpts::default(),
    }
}

/// A row on a segment with a 100 us quantum.
fn quantum_row(id: &'static str, node: NodeId, setup: Vec<In>, event: In) -> Row {
    let mut r = row(id, node, setup, event);
    r.opts.quantum_us = 100;
    r
}

/// A row on a segment of 8 units with a prefetch window of at most 4.
fn prefetch_row(id: &'static str, node: NodeId, setup: Vec<In>, event: In) -> Row {
    let mut r = row(id, node, setup, event);
    r.units = 8;
    r.opts.prefetch = 4;
    r
}

fn read_at(unit: u32, waiter: u64) -> In {
    In::ReadAt { unit, waiter }
}

fn data_at(unit: u32) -> CohMsg {
    CohMsg::Data {
        seg: SEG,
        unit,
        excl: false,
        acks: 0,
    }
}

fn render(out: &mut String, r: &Row) {
    let mut e = Engine::new(r.node);
    e.add_segment_with(SEG, HOME, r.units, r.opts);
    for input in &r.setup {
        feed(&mut e, input);
    }
    let before = e.describe(SEG, 0);
    let actions = feed(&mut e, &r.event);
    let then = if actions.is_empty() {
        "(nothing)".to_string()
    } else {
        actions
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let _ = writeln!(out, "[{}] node {}: {before}", r.id, r.node);
    let _ = writeln!(out, "    event: {}", describe_input(r.node, &r.event));
    let _ = writeln!(out, "    then:  {then}");
    let _ = writeln!(out, "    after: {}", e.describe(SEG, 0));
    let _ = writeln!(out);
}

fn section(out: &mut String, title: &str, rows: &[Row]) {
    let _ = writeln!(out, "## {title}\n");
    for r in rows {
        render(out, r);
    }
}

fn table() -> String {
    // Histories that put the home into each directory state.
    let owner1 = || vec![msg(1, write_req())];
    let sharers01 = || vec![msg(1, read_req())];
    let sharers012 = || vec![msg(1, read_req()), msg(2, read_req())];
    let sharers12 = || vec![msg(1, write_req()), msg(2, read_req()), msg(2, done())];
    let active_r2 = || vec![msg(1, write_req()), msg(2, read_req())];
    let active_r2_queued_w3 = || {
        let mut h = active_r2();
        h.push(msg(3, write_req()));
        h
    };
    let home = [
        row("H1", 0, vec![], msg(1, read_req())),
        row("H2", 0, vec![], msg(1, write_req())),
        row("H3", 0, vec![], read(1)),
        row("H4", 0, vec![], write(1)),
        row("H5", 0, owner1(), msg(2, read_req())),
        row("H6", 0, owner1(), msg(2, write_req())),
        row("H7", 0, owner1(), read(1)),
        row("H8", 0, owner1(), write(1)),
        row("H9", 0, sharers01(), msg(2, read_req())),
        row("H10", 0, sharers01(), msg(2, write_req())),
        row("H11", 0, sharers01(), msg(1, write_req())),
        row("H12", 0, sharers01(), read(1)),
        row("H13", 0, sharers01(), write(1)),
        row("H14", 0, sharers012(), msg(3, write_req())),
        row("H15", 0, sharers012(), msg(1, write_req())),
        row("H16", 0, sharers12(), msg(3, read_req())),
        row("H17", 0, sharers12(), msg(3, write_req())),
        row("H18", 0, sharers12(), msg(1, write_req())),
        row("H19", 0, sharers12(), read(1)),
        row("H20", 0, sharers12(), write(1)),
        row("H21", 0, active_r2(), msg(3, write_req())),
        row("H22", 0, active_r2(), read(1)),
        row("H23", 0, active_r2_queued_w3(), msg(2, done())),
    ];
    let req = [
        row("R1", 1, vec![], read(1)),
        row("R2", 1, vec![], write(1)),
        row("R3", 1, vec![read(1)], read(2)),
        row("R4", 1, vec![read(1)], write(2)),
        row("R5", 1, vec![read(1)], msg(0, data(false, 0))),
        row("R6", 1, vec![read(1)], msg(2, data(false, 0))),
        row("R7", 1, vec![read(1), write(2)], msg(0, data(false, 0))),
        row("R8", 1, vec![write(1)], msg(0, data(true, 0))),
        row("R9", 1, vec![write(1)], msg(2, data(true, 0))),
        row("R10", 1, vec![write(1)], msg(0, data(true, 2))),
        row(
            "R11",
            1,
            vec![write(1), msg(0, data(true, 2))],
            msg(2, inv_ack()),
        ),
        row(
            "R12",
            1,
            vec![write(1), msg(0, data(true, 2)), msg(2, inv_ack())],
            msg(3, inv_ack()),
        ),
        row("R13", 1, vec![write(1)], msg(2, inv_ack())),
        row(
            "R14",
            1,
            vec![write(1), msg(2, inv_ack())],
            msg(3, data(true, 1)),
        ),
        row("R15", 1, vec![read(1), msg(0, data(false, 0))], read(2)),
        row("R16", 1, vec![read(1), msg(0, data(false, 0))], write(2)),
        row(
            "R17",
            1,
            vec![read(1), msg(0, data(false, 0)), write(2)],
            msg(0, grant(0)),
        ),
        row(
            "R18",
            1,
            vec![read(1), msg(0, data(false, 0)), write(2)],
            msg(0, grant(1)),
        ),
        row(
            "R19",
            1,
            vec![read(1), msg(0, data(false, 0)), write(2)],
            msg(0, inv(2)),
        ),
        row(
            "R20",
            1,
            vec![read(1), msg(0, data(false, 0)), write(2), msg(0, inv(2))],
            msg(0, data(true, 0)),
        ),
        row("R21", 1, vec![write(1), msg(0, data(true, 0))], read(2)),
        row(
            "R22",
            1,
            vec![read(1), msg(0, data(false, 0)), write(2)],
            read(3),
        ),
    ];
    let owner = [
        row(
            "O1",
            1,
            vec![write(1), msg(0, data(true, 0))],
            msg(0, fetch(2)),
        ),
        row(
            "O2",
            1,
            vec![write(1), msg(0, data(true, 0))],
            msg(0, fetch(0)),
        ),
        row(
            "O3",
            1,
            vec![write(1), msg(0, data(true, 0))],
            msg(0, fetch_inv(2, 0)),
        ),
        row(
            "O4",
            1,
            vec![write(1), msg(0, data(true, 0))],
            msg(0, fetch_inv(0, 0)),
        ),
    ];
    let sharer = [
        row(
            "S1",
            1,
            vec![read(1), msg(0, data(false, 0))],
            msg(0, inv(2)),
        ),
        row(
            "S2",
            1,
            vec![read(1), msg(0, data(false, 0))],
            msg(0, inv(0)),
        ),
        row(
            "S3",
            1,
            vec![read(1), msg(0, data(false, 0))],
            msg(0, fetch(3)),
        ),
        row(
            "S4",
            1,
            vec![read(1), msg(0, data(false, 0))],
            msg(0, fetch_inv(3, 1)),
        ),
    ];
    let errors = [
        row("E1", 1, vec![], msg(0, inv_ack())),
        row("E2", 1, vec![], msg(0, inv(2))),
        row(
            "E3",
            1,
            vec![read(1), msg(0, data(false, 0))],
            msg(2, inv(3)),
        ),
        row("E4", 1, vec![], msg(2, read_req())),
        row("E5", 0, vec![msg(1, read_req())], msg(1, done())),
        row("E6", 1, vec![], In::UnknownSegFault),
        row("E7", 1, vec![read(1)], msg(0, data(true, 0))),
        row("E8", 0, sharers01(), msg(1, read_req())),
        row("E9", 0, owner1(), msg(1, write_req())),
        row("E10", 0, active_r2(), msg(2, read_req())),
    ];
    // Node 1 holds u0 Shared (or Modified) within its quantum (timer t1).
    let held_shared = || vec![read(1), msg(0, data(false, 0))];
    let held_modified = || vec![write(1), msg(0, data(true, 0))];
    // The home got u0 back Shared from owner 1 for a local read, and holds it.
    let home_held = || vec![msg(1, write_req()), read(1), msg(1, data(false, 0))];
    let quantum = [
        quantum_row("Q1", 1, vec![read(1)], msg(0, data(false, 0))),
        quantum_row("Q2", 1, held_shared(), msg(0, inv(2))),
        quantum_row(
            "Q3",
            1,
            vec![read(1), msg(0, data(false, 0)), msg(0, inv(2))],
            In::Timer(1),
        ),
        quantum_row("Q4", 1, held_shared(), msg(0, fetch(2))),
        quantum_row("Q5", 1, held_modified(), msg(0, fetch(2))),
        quantum_row(
            "Q6",
            1,
            vec![write(1), msg(0, data(true, 0)), msg(0, fetch_inv(2, 0))],
            In::Timer(1),
        ),
        quantum_row("Q7", 1, held_shared(), In::Timer(7)),
        quantum_row("Q8", 1, held_shared(), write(2)),
        quantum_row("Q9", 0, home_held(), msg(2, write_req())),
        quantum_row(
            "Q10",
            0,
            vec![
                msg(1, write_req()),
                read(1),
                msg(1, data(false, 0)),
                msg(2, write_req()),
            ],
            In::Timer(1),
        ),
        quantum_row("Q11", 0, home_held(), msg(2, read_req())),
    ];
    let prefetch = [
        prefetch_row("P1", 1, vec![], read(1)),
        prefetch_row("P2", 1, vec![read(1)], read_at(1, 2)),
        prefetch_row("P3", 1, vec![read(1), read_at(1, 2)], read_at(2, 3)),
        prefetch_row(
            "P4",
            1,
            vec![read(1), read_at(1, 2), msg(0, data_at(2))],
            read_at(2, 3),
        ),
        prefetch_row("P5", 1, vec![read(1), read_at(1, 2)], read_at(5, 3)),
    ];
    let stuck = |dead: NodeId, reply: bool, acked: bool| CohMsg::Stuck {
        seg: SEG,
        unit: 0,
        dead,
        reply,
        acked,
    };
    let check = |dead: NodeId| CohMsg::Check {
        seg: SEG,
        unit: 0,
        dead,
    };
    let lost = || CohMsg::Lost { seg: SEG, unit: 0 };
    let waive = |node: NodeId| CohMsg::Waive {
        seg: SEG,
        unit: 0,
        node,
    };
    let with = |mut h: Vec<In>, more: Vec<In>| {
        h.extend(more);
        h
    };
    let failure = [
        row("F1", 0, owner1(), In::Down(1)),
        row("F2", 0, sharers012(), In::Down(2)),
        row(
            "F3",
            0,
            with(owner1(), vec![In::Down(1)]),
            msg(2, read_req()),
        ),
        row("F4", 0, with(owner1(), vec![In::Down(1)]), read(1)),
        row("F5", 0, active_r2(), In::Down(1)),
        row(
            "F6",
            0,
            with(active_r2(), vec![In::Down(1)]),
            msg(2, stuck(1, false, false)),
        ),
        row(
            "F7",
            0,
            with(active_r2(), vec![In::Down(1)]),
            msg(2, stuck(1, true, false)),
        ),
        row(
            "F8",
            0,
            with(sharers12(), vec![msg(3, read_req()), In::Down(1)]),
            msg(3, stuck(1, false, false)),
        ),
        row(
            "F9",
            0,
            with(sharers12(), vec![msg(3, write_req()), In::Down(2)]),
            msg(3, stuck(2, true, false)),
        ),
        row(
            "F10",
            0,
            with(sharers12(), vec![msg(1, write_req())]),
            In::Down(1),
        ),
        row("F11", 1, vec![read(1)], msg(0, lost())),
        row("F12", 1, vec![read(1), msg(0, lost())], write(2)),
        row("F13", 1, vec![read(1)], msg(0, check(2))),
        row(
            "F14",
            1,
            vec![write(1), msg(0, data(true, 1))],
            msg(0, waive(2)),
        ),
        row("F15", 1, vec![read(1)], In::Down(0)),
        row(
            "F16",
            1,
            vec![read(1), msg(0, data(false, 0)), In::Down(0)],
            read(2),
        ),
        row(
            "F17",
            1,
            vec![read(1), msg(0, data(false, 0)), In::Down(0)],
            write(2),
        ),
        row("F18", 1, vec![read(1), In::Down(2)], msg(2, data(false, 0))),
    ];
    let mut out = String::new();
    out.push_str(
        "# dipc coherence engine: state x event -> actions\n\
         #\n\
         # Generated by dsm/tests/coherence_golden.rs from the real engine; do not\n\
         # edit. Regenerate with: UPDATE_GOLDEN=1 cargo test -p dipc-dsm --test coherence_golden\n\
         #\n\
         # Segment 1 has one unit (u0) unless a section says otherwise; node 0\n\
         # is its home. Each row shows the\n\
         # node's state before (local state, request in flight, and on the home\n\
         # the directory entry: owner or sharers, active transaction, queue),\n\
         # the event, the actions returned in order, and the state after.\n\
         # `+bytes` marks a message carrying the node's bytes of the unit.\n\
         # Messages the home sends to itself are handled inside the engine.\n\n",
    );
    section(&mut out, "Home directory (node 0)", &home);
    section(&mut out, "Requester (node 1, not home)", &req);
    section(&mut out, "Owner (node 1 holds the unit Modified)", &owner);
    section(&mut out, "Sharer (node 1 holds the unit Shared)", &sharer);
    section(&mut out, "Protocol violations and bad input", &errors);
    section(
        &mut out,
        "Hold-time quantum (100 us): answers that take a right away wait for the timer",
        &quantum,
    );
    section(
        &mut out,
        "Sequential prefetch (8 units, window up to 4; state shown for u0)",
        &prefetch,
    );
    section(
        &mut out,
        "Node failure (node_down; a lost unit's entry is shown as `lost`)",
        &failure,
    );
    out
}

#[test]
fn transitions_match_golden_file() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/transitions.txt");
    let got = table();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    if got != want {
        let first = got
            .lines()
            .zip(want.lines())
            .position(|(g, w)| g != w)
            .unwrap_or_else(|| got.lines().count().min(want.lines().count()));
        let context = |text: &str| {
            text.lines()
                .skip(first.saturating_sub(3))
                .take(8)
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "the engine's transitions differ from {} at line {}\n--- checked in:\n{}\n--- engine:\n{}\n\
             If the change is intended, rerun with UPDATE_GOLDEN=1 and review the diff.",
            path.display(),
            first + 1,
            context(&want),
            context(&got)
        );
    }
}
