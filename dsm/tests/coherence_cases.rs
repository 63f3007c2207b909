//! The ordinary transactions, one input at a time, with the exact actions
//! each node returns: read miss at the home and at a remote node, write miss
//! with one and two sharers to invalidate, upgrade, ownership transfer,
//! queued requests served in arrival order, local waiters sharing one
//! transaction, and bad input. Also the postcard round trip of `CohMsg`.

use std::collections::{BTreeMap, VecDeque};

use dipc_dsm::coherence::DirView;
use dipc_dsm::{Action, CohMsg, Engine, Error, NodeId, UnitState};

const SEG: i32 = 5;

fn send(to: NodeId, msg: CohMsg, with_data: bool) -> Action {
    Action::Send { to, msg, with_data }
}
fn resolve(waiter: u64, writable: bool) -> Action {
    Action::Resolve {
        waiter,
        seg: SEG,
        unit: 0,
        writable,
    }
}
fn install() -> Action {
    Action::Install { seg: SEG, unit: 0 }
}
fn invalidate() -> Action {
    Action::Invalidate { seg: SEG, unit: 0 }
}
fn downgrade() -> Action {
    Action::Downgrade { seg: SEG, unit: 0 }
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

/// A cluster of engines with one segment (home 0, one unit) and a FIFO
/// network, for setting up states; tests then drive single engines.
struct Net {
    nodes: BTreeMap<NodeId, Engine>,
    queue: VecDeque<(NodeId, NodeId, CohMsg)>,
    /// Every action performed, with the node that performed it.
    log: Vec<(NodeId, Action)>,
}

impl Net {
    fn new(nodes: u32) -> Self {
        let nodes = (0..nodes)
            .map(|n| {
                let mut e = Engine::new(n);
                assert!(e.add_segment(SEG, 0, 1).is_empty());
                (n, e)
            })
            .collect();
        Net {
            nodes,
            queue: VecDeque::new(),
            log: Vec::new(),
        }
    }

    fn node(&mut self, n: NodeId) -> &mut Engine {
        self.nodes.get_mut(&n).expect("node exists")
    }

    fn perform(&mut self, n: NodeId, actions: Vec<Action>) {
        for a in actions {
            if let Action::Send { to, msg, .. } = &a {
                self.queue.push_back((n, *to, msg.clone()));
            }
            self.log.push((n, a));
        }
    }

    fn fault(&mut self, n: NodeId, write: bool, waiter: u64) {
        let actions = self.node(n).fault(SEG, 0, write, waiter);
        self.perform(n, actions);
    }

    /// Deliver messages in global FIFO order until the network is quiet.
    fn run(&mut self) {
        while let Some((from, to, msg)) = self.queue.pop_front() {
            let actions = self.node(to).receive(from, msg);
            self.perform(to, actions);
        }
    }

    /// Hand `node`'s engine to a test, after checking the network is quiet.
    fn take(&mut self, n: NodeId) -> Engine {
        assert!(self.queue.is_empty());
        self.nodes.remove(&n).expect("node exists")
    }

    fn state(&self, n: NodeId) -> Option<UnitState> {
        self.nodes[&n].state(SEG, 0)
    }

    fn resolved(&self) -> Vec<(NodeId, u64, bool)> {
        self.log
            .iter()
            .filter_map(|(n, a)| match a {
                Action::Resolve {
                    waiter, writable, ..
                } => Some((*n, *waiter, *writable)),
                _ => None,
            })
            .collect()
    }
}

fn dir(home: &Engine) -> DirView {
    home.directory(SEG, 0).expect("home has a directory")
}

/// Sharers {0, 1}: node 1 read the home's unit.
fn net_sharers_0_1(nodes: u32) -> Net {
    let mut net = Net::new(nodes);
    net.fault(1, false, 100);
    net.run();
    net
}

#[test]
fn initially_the_home_holds_every_unit() {
    let mut home = Engine::new(0);
    home.add_segment(SEG, 0, 3);
    let mut other = Engine::new(1);
    other.add_segment(SEG, 0, 3);
    for u in 0..3 {
        assert_eq!(home.state(SEG, u), Some(UnitState::Modified));
        assert_eq!(other.state(SEG, u), Some(UnitState::Invalid));
    }
    assert_eq!(home.state(SEG, 3), None);
    assert_eq!(home.home(SEG), Some(0));
    assert!(home.is_idle() && other.is_idle());
}

#[test]
fn read_miss_at_a_remote_node_served_by_the_home() {
    let mut home = Engine::new(0);
    home.add_segment(SEG, 0, 1);
    let mut n1 = Engine::new(1);
    n1.add_segment(SEG, 0, 1);

    assert_eq!(n1.fault(SEG, 0, false, 7), vec![send(0, read_req(), false)]);
    assert_eq!(
        home.receive(1, read_req()),
        vec![downgrade(), send(1, data(false, 0), true)]
    );
    // The home sent the reply itself and owes no acks: no Done needed.
    assert!(home.is_idle());
    assert_eq!(
        n1.receive(0, data(false, 0)),
        vec![install(), resolve(7, false)]
    );
    assert!(n1.is_idle());
    assert_eq!(home.state(SEG, 0), Some(UnitState::Shared));
    assert_eq!(n1.state(SEG, 0), Some(UnitState::Shared));
    let d = dir(&home);
    assert_eq!((d.owner, d.sharers), (None, vec![0, 1]));
}

#[test]
fn read_miss_at_the_home_fetches_from_the_remote_owner() {
    let mut net = Net::new(2);
    net.fault(1, true, 100);
    net.run();
    let mut home = net.take(0);
    let mut n1 = net.take(1);
    assert_eq!(n1.state(SEG, 0), Some(UnitState::Modified));

    let fetch = CohMsg::Fetch {
        seg: SEG,
        unit: 0,
        req: 0,
    };
    assert_eq!(
        home.fault(SEG, 0, false, 9),
        vec![send(1, fetch.clone(), false)]
    );
    assert_eq!(
        n1.receive(0, fetch),
        vec![downgrade(), send(0, data(false, 0), true)]
    );
    // The home's Done to itself is handled inside the engine.
    assert_eq!(
        home.receive(1, data(false, 0)),
        vec![install(), resolve(9, false)]
    );
    assert!(home.is_idle() && n1.is_idle());
    let d = dir(&home);
    assert_eq!((d.owner, d.sharers), (None, vec![0, 1]));
}

#[test]
fn a_fault_on_a_unit_held_with_enough_rights_resolves_at_once() {
    let mut home = Engine::new(0);
    home.add_segment(SEG, 0, 1);
    assert_eq!(home.fault(SEG, 0, true, 1), vec![resolve(1, true)]);
    // A read of a Modified unit maps it writable too.
    assert_eq!(home.fault(SEG, 0, false, 2), vec![resolve(2, true)]);
    let mut net = net_sharers_0_1(2);
    assert_eq!(net.node(1).fault(SEG, 0, false, 3), vec![resolve(3, false)]);
    assert!(net.queue.is_empty());
}

#[test]
fn write_miss_with_one_sharer_to_invalidate() {
    // Sharers {0, 1}; node 2 writes: the home supplies, node 1 acks to 2.
    let mut net = net_sharers_0_1(3);
    let mut home = net.take(0);
    let mut n1 = net.take(1);
    let mut n2 = net.take(2);

    assert_eq!(n2.fault(SEG, 0, true, 5), vec![send(0, write_req(), false)]);
    assert_eq!(
        home.receive(2, write_req()),
        vec![
            send(1, inv(2), false),
            send(2, data(true, 1), true),
            invalidate()
        ]
    );
    assert_eq!(home.state(SEG, 0), Some(UnitState::Invalid));
    assert_eq!(dir(&home).active, Some((2, true)));
    // Data first: installed, but no right until the ack.
    assert_eq!(n2.receive(0, data(true, 1)), vec![install()]);
    assert_eq!(n2.state(SEG, 0), Some(UnitState::Invalid));
    assert_eq!(
        n1.receive(0, inv(2)),
        vec![invalidate(), send(2, inv_ack(), false)]
    );
    assert_eq!(
        n2.receive(1, inv_ack()),
        vec![resolve(5, true), send(0, done(), false)]
    );
    assert!(home.receive(2, done()).is_empty());
    assert!(home.is_idle());
    let d = dir(&home);
    assert_eq!((d.owner, d.sharers), (Some(2), vec![]));
    assert_eq!(n1.state(SEG, 0), Some(UnitState::Invalid));
    assert_eq!(n2.state(SEG, 0), Some(UnitState::Modified));
}

#[test]
fn write_miss_with_two_sharers_acks_before_data() {
    // Sharers {1, 2} (home not among them); node 3 writes: node 1 supplies
    // with FetchInv, node 2 is invalidated; the ack overtakes the data.
    let mut net = Net::new(4);
    net.fault(1, true, 100);
    net.run();
    net.fault(2, false, 200);
    net.run();
    let mut home = net.take(0);
    let mut n1 = net.take(1);
    let mut n2 = net.take(2);
    let mut n3 = net.take(3);
    assert_eq!(dir(&home).sharers, vec![1, 2]);

    let fetch_inv = CohMsg::FetchInv {
        seg: SEG,
        unit: 0,
        req: 3,
        acks: 1,
    };
    assert_eq!(n3.fault(SEG, 0, true, 8), vec![send(0, write_req(), false)]);
    assert_eq!(
        home.receive(3, write_req()),
        vec![send(2, inv(3), false), send(1, fetch_inv.clone(), false)]
    );
    assert_eq!(
        n2.receive(0, inv(3)),
        vec![invalidate(), send(3, inv_ack(), false)]
    );
    assert!(n3.receive(2, inv_ack()).is_empty());
    assert_eq!(
        n1.receive(0, fetch_inv),
        vec![send(3, data(true, 1), true), invalidate()]
    );
    assert_eq!(
        n3.receive(1, data(true, 1)),
        vec![install(), resolve(8, true), send(0, done(), false)]
    );
    assert!(home.receive(3, done()).is_empty());
    assert!(home.is_idle() && n3.is_idle());
    assert_eq!(dir(&home).owner, Some(3));
}

#[test]
fn upgrade_of_a_shared_copy() {
    let mut net = net_sharers_0_1(2);
    let mut home = net.take(0);
    let mut n1 = net.take(1);
    assert_eq!(n1.fault(SEG, 0, true, 4), vec![send(0, write_req(), false)]);
    let grant = CohMsg::Grant {
        seg: SEG,
        unit: 0,
        acks: 0,
    };
    // The home drops its own copy without an ack message.
    assert_eq!(
        home.receive(1, write_req()),
        vec![invalidate(), send(1, grant.clone(), false)]
    );
    assert!(home.is_idle());
    assert_eq!(n1.receive(0, grant), vec![resolve(4, true)]);
    assert_eq!(n1.state(SEG, 0), Some(UnitState::Modified));
    assert_eq!(dir(&home).owner, Some(1));
}

#[test]
fn upgrade_at_the_home_invalidates_the_remote_sharer() {
    let mut net = net_sharers_0_1(2);
    let mut home = net.take(0);
    let mut n1 = net.take(1);
    // The home's Grant to itself stays inside the engine.
    assert_eq!(home.fault(SEG, 0, true, 3), vec![send(1, inv(0), false)]);
    assert_eq!(
        n1.receive(0, inv(0)),
        vec![invalidate(), send(0, inv_ack(), false)]
    );
    assert_eq!(home.receive(1, inv_ack()), vec![resolve(3, true)]);
    assert!(home.is_idle());
    assert_eq!(home.state(SEG, 0), Some(UnitState::Modified));
    assert_eq!(dir(&home).owner, Some(0));
}

#[test]
fn ownership_transfer_between_two_remote_nodes() {
    let mut net = Net::new(3);
    net.fault(1, true, 100);
    net.run();
    let mut home = net.take(0);
    let mut n1 = net.take(1);
    let mut n2 = net.take(2);

    let fetch_inv = CohMsg::FetchInv {
        seg: SEG,
        unit: 0,
        req: 2,
        acks: 0,
    };
    assert_eq!(n2.fault(SEG, 0, true, 6), vec![send(0, write_req(), false)]);
    assert_eq!(
        home.receive(2, write_req()),
        vec![send(1, fetch_inv.clone(), false)]
    );
    // The owner stops local writes before its bytes are read, then drops them.
    assert_eq!(
        n1.receive(0, fetch_inv),
        vec![downgrade(), send(2, data(true, 0), true), invalidate()]
    );
    assert_eq!(
        n2.receive(1, data(true, 0)),
        vec![install(), resolve(6, true), send(0, done(), false)]
    );
    assert!(!home.is_idle());
    assert!(home.receive(2, done()).is_empty());
    assert!(home.is_idle());
    assert_eq!(dir(&home).owner, Some(2));
    assert_eq!(n1.state(SEG, 0), Some(UnitState::Invalid));
    assert_eq!(n2.state(SEG, 0), Some(UnitState::Modified));
}

#[test]
fn queued_requests_are_served_in_arrival_order() {
    // Node 1 owns the unit; nodes 2, 3, 4 and the home all ask for it while
    // the first transaction is active.
    let mut net = Net::new(5);
    net.fault(1, true, 100);
    net.run();
    net.log.clear();
    net.fault(2, false, 200);
    net.fault(3, true, 300);
    net.fault(4, false, 400);
    // Deliver the three requests to the home before anything else.
    for _ in 0..3 {
        let (from, to, msg) = net.queue.pop_front().expect("a request");
        let actions = net.node(to).receive(from, msg);
        net.perform(to, actions);
    }
    net.fault(0, true, 500);
    let d = dir(&net.nodes[&0]);
    assert_eq!(d.active, Some((2, false)));
    assert_eq!(d.queued, vec![(3, true), (4, false), (0, true)]);
    net.run();
    // Each waiter was resolved once, in the order the home queued them.
    assert_eq!(
        net.resolved(),
        vec![
            (2, 200, false),
            (3, 300, true),
            (4, 400, false),
            (0, 500, true)
        ]
    );
    // The home's transactions started in the same order: its Fetch/FetchInv
    // messages name the requesters 2, 3, 4, 0.
    let started: Vec<NodeId> = net
        .log
        .iter()
        .filter_map(|(n, a)| match a {
            Action::Send {
                msg: CohMsg::Fetch { req, .. } | CohMsg::FetchInv { req, .. },
                ..
            } if *n == 0 => Some(*req),
            _ => None,
        })
        .collect();
    assert_eq!(started, vec![2, 3, 4, 0]);
    assert_eq!(net.state(0), Some(UnitState::Modified));
    for n in 1..5 {
        assert_eq!(net.state(n), Some(UnitState::Invalid), "node {n}");
    }
    assert!(net.nodes.values().all(Engine::is_idle));
}

#[test]
fn local_waiters_share_one_transaction_and_a_write_gets_an_upgrade() {
    let mut home = Engine::new(0);
    home.add_segment(SEG, 0, 1);
    let mut n1 = Engine::new(1);
    n1.add_segment(SEG, 0, 1);
    assert_eq!(n1.fault(SEG, 0, false, 1), vec![send(0, read_req(), false)]);
    assert!(n1.fault(SEG, 0, true, 2).is_empty());
    assert!(n1.fault(SEG, 0, false, 3).is_empty());
    assert_eq!(n1.waiters(SEG, 0), vec![(1, false), (2, true), (3, false)]);

    let reply = home.receive(1, read_req());
    assert_eq!(reply.last(), Some(&send(1, data(false, 0), true)));
    // Both readers go on; the writer waits for the upgrade.
    assert_eq!(
        n1.receive(0, data(false, 0)),
        vec![
            install(),
            resolve(1, false),
            resolve(3, false),
            send(0, write_req(), false)
        ]
    );
    let grant = CohMsg::Grant {
        seg: SEG,
        unit: 0,
        acks: 0,
    };
    assert_eq!(
        home.receive(1, write_req()),
        vec![invalidate(), send(1, grant.clone(), false)]
    );
    assert_eq!(n1.receive(0, grant), vec![resolve(2, true)]);
    assert!(n1.is_idle() && home.is_idle());
}

#[test]
fn invalidated_while_waiting_for_an_upgrade_gets_the_data_later() {
    // Sharers {0, 1, 2}; nodes 1 and 2 both ask to upgrade. Node 1 wins,
    // node 2 is invalidated meanwhile and then receives the bytes.
    let mut net = net_sharers_0_1(3);
    net.fault(2, false, 200);
    net.run();
    net.log.clear();
    net.fault(1, true, 101);
    net.fault(2, true, 201);
    net.run();
    assert_eq!(net.resolved(), vec![(1, 101, true), (2, 201, true)]);
    // Node 2's second transaction carried bytes: it had lost its copy.
    let installs: Vec<NodeId> = net
        .log
        .iter()
        .filter(|(_, a)| matches!(a, Action::Install { .. }))
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(installs, vec![2]);
    assert_eq!(net.state(2), Some(UnitState::Modified));
    assert_eq!(net.state(1), Some(UnitState::Invalid));
}

#[test]
fn removing_a_segment_fails_its_waiters() {
    let mut n1 = Engine::new(1);
    n1.add_segment(SEG, 0, 2);
    n1.fault(SEG, 0, false, 1);
    n1.fault(SEG, 1, true, 2);
    let mut failed = n1.remove_segment(SEG);
    failed.sort_by_key(|a| match a {
        Action::Fail { waiter, .. } => *waiter,
        _ => u64::MAX,
    });
    let fail = |waiter, unit| Action::Fail {
        waiter,
        seg: SEG,
        unit,
        error: Error::SegmentRemoved { seg: SEG },
    };
    assert_eq!(failed, vec![fail(1, 0), fail(2, 1)]);
    assert_eq!(n1.state(SEG, 0), None);
    assert!(n1.remove_segment(SEG).is_empty());
}

#[test]
fn bad_input_is_reported_not_obeyed() {
    let mut n1 = Engine::new(1);
    n1.add_segment(SEG, 0, 1);
    assert_eq!(
        n1.fault(SEG, 4, false, 1),
        vec![Action::Fail {
            waiter: 1,
            seg: SEG,
            unit: 4,
            error: Error::UnitOutOfRange {
                seg: SEG,
                unit: 4,
                units: 1
            },
        }]
    );
    assert!(matches!(
        n1.fault(77, 0, true, 2).as_slice(),
        [Action::Fail {
            error: Error::UnknownSegment { seg: 77 },
            ..
        }]
    ));
    assert!(matches!(
        n1.receive(0, CohMsg::InvAck { seg: 77, unit: 0 })
            .as_slice(),
        [Action::Ignored {
            from: 0,
            error: Error::UnknownSegment { seg: 77 }
        }]
    ));
    // Data nobody asked for is not installed.
    assert!(matches!(
        n1.receive(0, data(true, 0)).as_slice(),
        [Action::Ignored {
            error: Error::Unexpected { .. },
            ..
        }]
    ));
    assert_eq!(n1.state(SEG, 0), Some(UnitState::Invalid));
    // A Fetch from a node that is not the home is refused.
    let mut net = net_sharers_0_1(3);
    let fetch = CohMsg::Fetch {
        seg: SEG,
        unit: 0,
        req: 2,
    };
    assert!(matches!(
        net.node(1).receive(2, fetch).as_slice(),
        [Action::Ignored { from: 2, .. }]
    ));
    // Adding a known segment again changes nothing.
    assert!(net.node(1).add_segment(SEG, 2, 9).is_empty());
    assert_eq!(net.node(1).home(SEG), Some(0));
    assert_eq!(net.state(1), Some(UnitState::Shared));
}

#[test]
fn cohmsg_postcard_round_trip() {
    let all = [
        read_req(),
        write_req(),
        CohMsg::Fetch {
            seg: i32::MIN,
            unit: u32::MAX,
            req: 3,
        },
        CohMsg::FetchInv {
            seg: i32::MAX,
            unit: 0,
            req: u32::MAX,
            acks: 7,
        },
        inv(2),
        inv_ack(),
        data(true, u32::MAX),
        data(false, 0),
        CohMsg::Grant {
            seg: -1,
            unit: 12,
            acks: 2,
        },
        done(),
    ];
    for msg in all {
        let bytes = postcard::to_stdvec(&msg).expect("encodes");
        let back: CohMsg = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(back, msg);
        // A truncated message is an error, never a panic or a wrong message.
        if bytes.len() > 1 {
            assert!(postcard::from_bytes::<CohMsg>(&bytes[..bytes.len() - 1]).is_err());
        }
    }
}
