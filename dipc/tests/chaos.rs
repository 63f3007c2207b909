//! Failures while the cluster is busy: real referee and node processes
//! (dipc-testkit) and C workers (`tests/c/chaos_worker.c`) checked against
//! an exact model (`tests/chaos_model`).
//!
//! * The referee is `SIGKILL`ed while processes on three nodes write and
//!   read a segment, send and receive messages and take a semaphore mutex:
//!   every worker keeps making progress during the outage (lookups are
//!   cached), a `shmget(IPC_CREAT)` of a new key made during the outage
//!   waits and succeeds once the referee is back, and nothing is lost
//!   (every message counted, the mutex-protected counter exact).

mod chaos_model;

use std::time::Duration;

use chaos_model::{
    Worker, check_model, make, parse_report, parse_segment, run_to_end, wall_clock_in,
    worker_program,
};
use dipc_testkit::Cluster;

fn cluster(nodes: usize) -> Cluster {
    match Cluster::builder()
        .bin(env!("CARGO_BIN_EXE_dipc"))
        .nodes(nodes)
        .heartbeat_ms(300)
        .down_after_ms(3000)
        .start()
    {
        Ok(c) => c,
        Err(e) => panic!("cluster of {nodes} nodes did not start: {e:#}"),
    }
}

fn check<T>(c: &Cluster, r: anyhow::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e:#}\n{}", c.logs()),
    }
}

#[test]
fn referee_killed_mid_traffic_data_path_continues_creates_wait_nothing_lost() {
    const PROCS: u32 = 6;
    const RUN_SECS: u64 = 14;
    let mut c = cluster(3);
    let prog = worker_program(&c);
    let (shm, msg, sem) = ("0x0c4a0001", "0x0c4a0002", "0x0c4a0003");
    // Homes on three different nodes.
    make(&c, 0, &prog, &["mkshm", shm, &PROCS.to_string()]);
    make(&c, 1, &prog, &["mkmsg", msg]);
    make(&c, 2, &prog, &["mksem", sem]);

    let end = wall_clock_in(RUN_SECS).to_string();
    let mut workers: Vec<Worker> = (0..PROCS)
        .map(|rank| {
            let node = rank as usize % 3;
            let args = [
                "work",
                shm,
                msg,
                sem,
                &rank.to_string(),
                &PROCS.to_string(),
                &end,
            ];
            Worker::start(&c, node, rank, &prog, &args)
        })
        .collect();
    for w in &mut workers {
        if let Err(e) = w.wait_ready(Duration::from_secs(30)) {
            panic!("{e}\n{}", c.logs());
        }
    }
    std::thread::sleep(Duration::from_millis(1500));

    let r = c.kill_referee();
    check(&c, r);
    let before: Vec<u64> = workers.iter().map(Worker::progress).collect();
    // A create during the outage: it needs the referee, so it waits.
    let mut create = Worker::start(&c, 1, u32::MAX, &prog, &["mkshm", "0x0c4a0004", "1"]);
    std::thread::sleep(Duration::from_secs(3));
    let after: Vec<u64> = workers.iter().map(Worker::progress).collect();
    assert!(
        create.lines().is_empty(),
        "the create answered without a referee: {:?}\n{}",
        create.lines(),
        c.logs()
    );
    let r = c.restart_referee();
    check(&c, r);
    let created = match create.finish(Duration::from_secs(30)) {
        Ok(l) => l,
        Err(e) => panic!(
            "the create made during the outage failed: {e}\n{}",
            c.logs()
        ),
    };
    assert!(created.iter().any(|l| l.starts_with("id ")), "{created:?}");
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(
            a > b,
            "worker {i} made no progress while the referee was down ({b} -> {a} operations)\n{}",
            c.logs()
        );
    }

    let mut reports = Vec::new();
    for w in &mut workers {
        let lines = match w.finish(Duration::from_secs(90)) {
            Ok(l) => l,
            Err(e) => panic!("{e}\n{}", c.logs()),
        };
        reports.push(parse_report(w.rank, &lines));
    }
    let seg = parse_segment(&run_to_end(
        &c,
        0,
        &prog,
        &["check", shm, &PROCS.to_string()],
        Duration::from_secs(60),
    ));
    match check_model(&reports, &seg) {
        Ok(t) => eprintln!(
            "referee chaos: {} operations, {} messages, {} increments, {} slot writes; \
             {} operations during the 3 s outage",
            t.ops,
            t.messages,
            t.increments,
            t.writes,
            after.iter().sum::<u64>() - before.iter().sum::<u64>(),
        ),
        Err(e) => panic!("divergence from the model:\n{e}\n{}", c.logs()),
    }
    // The new key is known to the restarted referee.
    let st = check(&c, c.status());
    assert!(
        st.objects.iter().any(|o| o.record.key == 0x0c4a_0004),
        "{st:#?}"
    );
}
