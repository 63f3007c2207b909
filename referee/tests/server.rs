//! The referee server on a real loopback socket: join, create, events,
//! restart on the same data directory, refusals, and a garbage peer.

use std::sync::Arc;
use std::time::Duration;

use dipc_referee::{Error, ServerConfig};
use dipc_transport_tcp::{Auth, Conn, Incoming, Role, RpcHandle, rpc};
use dipc_wire::errno::{ENOTCONN, EPERM};
use dipc_wire::referee::{Caller, ClusterStatus, Event, Request, Response};
use dipc_wire::{IPC_CREAT, IPC_EXCL, Kind, ObjectRecord, Params, ShmMode};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Handle = RpcHandle<Request, Response, Event>;
type Events = mpsc::Receiver<Incoming<Request, Event>>;

const CLUSTER: &str = "test-cluster";
const SECRET: &[u8] = b"s3cret";
const T: Duration = Duration::from_secs(5);

struct Running {
    addr: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), Error>>,
}

impl Running {
    async fn stop(self) -> Result<(), Box<dyn std::error::Error>> {
        let _ = self.stop.send(());
        tokio::time::timeout(T, self.task).await???;
        Ok(())
    }
}

async fn start(dir: &std::path::Path, down_after_ms: u64) -> Result<Running, Error> {
    let server = dipc_referee::bind(ServerConfig {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        cluster: CLUSTER.into(),
        secret: Arc::from(SECRET),
        tls: None,
        heartbeat_ms: 20,
        down_after_ms,
    })
    .await?;
    let addr = server.local_addr().to_string();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Ok(Running { addr, stop, task })
}

async fn connect(
    addr: &str,
    name: &str,
    secret: &[u8],
    role: Role,
) -> Result<(Handle, Events), dipc_transport_tcp::Error> {
    let auth = Auth {
        cluster: CLUSTER.into(),
        secret: Arc::from(secret),
        name: name.into(),
        tls: None,
    };
    let (conn, _peer) = Conn::connect(addr, &auth, role, T).await?;
    Ok(rpc::<Request, Response, Event>(conn, T))
}

fn join_req(name: &str, hosted: Vec<ObjectRecord>) -> Request {
    Request::Join {
        name: name.into(),
        listen: format!("{name}.example:7000"),
        transport: "tcp".into(),
        hosted,
        incarnation: 0,
    }
}

async fn join(h: &Handle, name: &str, hosted: Vec<ObjectRecord>) -> Result<u32, String> {
    match h.call(&join_req(name, hosted)).await {
        Ok(Response::Joined { node, .. }) => Ok(node),
        other => Err(format!("join {name}: {other:?}")),
    }
}

async fn status(addr: &str) -> Result<ClusterStatus, Box<dyn std::error::Error>> {
    let (h, _ev) = connect(addr, "cli", SECRET, Role::Client).await?;
    match h.call(&Request::Status).await? {
        Response::Status(st) => Ok(st),
        other => Err(format!("status: {other:?}").into()),
    }
}

/// The next event, skipping nothing; errors after `T`.
async fn next_event(rx: &mut Events) -> Result<Event, String> {
    match tokio::time::timeout(T, rx.recv()).await {
        Ok(Some(Incoming::Notify { ev, .. })) => Ok(ev),
        other => Err(format!("expected an event, got {other:?}")),
    }
}

fn get(key: i32, flags: i32) -> Request {
    Request::Get {
        key,
        flags,
        params: Params::Shm {
            size: 8192,
            unit: 4096,
            mode: ShmMode::Page,
            quantum_us: 0,
            prefetch: 8,
        },
        caller: Caller {
            uid: 1000,
            gid: 100,
            pid: 42,
        },
        now: 1_700_000_000,
    }
}

#[tokio::test]
async fn objects_survive_a_restart_and_strangers_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let srv = start(dir.path(), 60_000).await?;

    let (n1, mut ev1) = connect(&srv.addr, "n1", SECRET, Role::Node).await?;
    // Nothing before Join.
    match n1.call(&Request::Heartbeat).await? {
        Response::Err { errno, .. } => assert_eq!(errno, ENOTCONN),
        other => panic!("heartbeat before join: {other:?}"),
    }
    let id1 = join(&n1, "n1", vec![]).await?;
    assert!(matches!(next_event(&mut ev1).await?, Event::NodeUp(m) if m.node == id1));

    let rec = match n1.call(&get(0x1234, IPC_CREAT | IPC_EXCL | 0o600)).await? {
        Response::Record(r) => r,
        other => panic!("get: {other:?}"),
    };
    assert_eq!((rec.key, rec.kind, rec.home), (0x1234, Kind::Shm, id1));

    // A second node: n1 hears of it; it finds the same object.
    let (n2, mut ev2) = connect(&srv.addr, "n2", SECRET, Role::Node).await?;
    let id2 = join(&n2, "n2", vec![]).await?;
    assert_ne!(id1, id2);
    assert!(matches!(next_event(&mut ev1).await?, Event::NodeUp(m) if m.node == id2));
    assert!(matches!(next_event(&mut ev2).await?, Event::NodeUp(m) if m.node == id2));
    match n2.call(&get(0x1234, IPC_CREAT | IPC_EXCL | 0o600)).await? {
        Response::Err { errno, .. } => assert_eq!(errno, dipc_wire::errno::EEXIST),
        other => panic!("second EXCL create: {other:?}"),
    }
    // A second object, removed by n2: both nodes are told.
    let other = match n2.call(&get(77, IPC_CREAT | 0o600)).await? {
        Response::Record(r) => r,
        other => panic!("get: {other:?}"),
    };
    assert_eq!(
        n2.call(&Request::Remove {
            id: other.id,
            still_attached: false
        })
        .await?,
        Response::Ok
    );
    for rx in [&mut ev1, &mut ev2] {
        assert_eq!(
            next_event(rx).await?,
            Event::ObjectGone {
                id: other.id,
                key: 77,
                kind: Kind::Shm
            }
        );
    }

    // A peer with the wrong secret is refused and never becomes a member;
    // so is a node of another cluster.
    let refused = connect(&srv.addr, "intruder", b"wrong", Role::Node).await;
    match refused {
        Err(e) => assert!(e.is_refusal(), "{e}"),
        Ok(_) => panic!("a wrong secret was accepted"),
    }
    let auth = Auth {
        cluster: "other-cluster".into(),
        secret: Arc::from(SECRET),
        name: "foreign".into(),
        tls: None,
    };
    assert!(
        Conn::connect(&srv.addr, &auth, Role::Node, T)
            .await
            .is_err()
    );
    // Garbage on a raw socket does not hurt the referee.
    let mut raw = tokio::net::TcpStream::connect(&srv.addr).await?;
    raw.write_all(&[0xff; 64]).await?;
    drop(raw);
    // A client cannot join or create.
    let (cli, _cev) = connect(&srv.addr, "cli", SECRET, Role::Client).await?;
    match cli.call(&join_req("sneaky", vec![])).await? {
        Response::Err { errno, .. } => assert_eq!(errno, EPERM),
        other => panic!("client join: {other:?}"),
    }
    let st = status(&srv.addr).await?;
    assert_eq!(st.cluster, CLUSTER);
    let names: Vec<&str> = st.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["n1", "n2"]);
    assert_eq!(st.objects.len(), 1);
    assert!(st.objects[0].available);

    drop((n1, n2, cli));
    srv.stop().await?;

    // Same data directory: the object and the node ids are still there.
    let srv = start(dir.path(), 60_000).await?;
    let st = status(&srv.addr).await?;
    assert_eq!(st.objects.len(), 1);
    assert_eq!(st.objects[0].record, rec);
    assert!(!st.objects[0].available, "n1 has not re-joined yet");
    assert!(st.members.iter().all(|m| !m.up));
    let (n1, _ev1) = connect(&srv.addr, "n1", SECRET, Role::Node).await?;
    assert_eq!(join(&n1, "n1", vec![rec.clone()]).await?, id1);
    assert_eq!(
        n1.call(&Request::LookupKey {
            kind: Kind::Shm,
            key: 0x1234
        })
        .await?,
        Response::Record(rec.clone())
    );
    // A new object gets a new id, never an old one.
    let again = match n1.call(&get(77, IPC_CREAT | 0o600)).await? {
        Response::Record(r) => r,
        other => panic!("get: {other:?}"),
    };
    assert!(again.id != rec.id && again.id != other.id);
    assert!(status(&srv.addr).await?.objects.iter().all(|o| o.available));
    srv.stop().await?;
    Ok(())
}

#[tokio::test]
async fn silent_node_goes_down_and_peers_are_told() -> TestResult {
    let dir = tempfile::tempdir()?;
    let srv = start(dir.path(), 150).await?;
    let (n1, mut ev1) = connect(&srv.addr, "n1", SECRET, Role::Node).await?;
    let (n2, mut ev2) = connect(&srv.addr, "n2", SECRET, Role::Node).await?;
    let id1 = join(&n1, "n1", vec![]).await?;
    let id2 = join(&n2, "n2", vec![]).await?;
    // n1 keeps beating, n2 falls silent.
    let beat = {
        let n1 = n1.clone();
        tokio::spawn(async move {
            loop {
                if n1.call(&Request::Heartbeat).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let down = loop {
        match next_event(&mut ev1).await? {
            Event::NodeDown { node } => break node,
            Event::NodeUp(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(down, id2);
    let st = status(&srv.addr).await?;
    let up: Vec<(u32, bool)> = st.members.iter().map(|m| (m.node, m.up)).collect();
    assert_eq!(up, [(id1, true), (id2, false)]);
    // A heartbeat brings it back, and everyone hears of it.
    assert_eq!(n2.call(&Request::Heartbeat).await?, Response::Ok);
    loop {
        match next_event(&mut ev2).await? {
            Event::NodeUp(m) if m.node == id2 && m.up => break,
            _ => continue,
        }
    }
    beat.abort();
    srv.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_busy_store_is_a_clear_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let srv = start(dir.path(), 60_000).await?;
    // The same data directory cannot be served twice.
    match start(dir.path(), 60_000).await {
        Err(e @ Error::OpenStore { .. }) => {
            assert!(e.to_string().contains("registry.redb"), "{e}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a second referee opened the same store"),
    }
    srv.stop().await?;
    // A bad listen address.
    let e = dipc_referee::bind(ServerConfig {
        listen: "not an address".into(),
        data_dir: dir.path().to_path_buf(),
        cluster: CLUSTER.into(),
        secret: Arc::from(SECRET),
        tls: None,
        heartbeat_ms: 20,
        down_after_ms: 100,
    })
    .await
    .expect_err("bad address");
    assert!(matches!(e, Error::Bind { .. }), "{e:?}");
    Ok(())
}
