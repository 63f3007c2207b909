//! The node's shared state and the handling of local requests.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dipc_transport_tcp::{Auth, Error as TcpError, RpcHandle};
use dipc_wire::local::{Request as LReq, Response as LResp};
use dipc_wire::referee::{Caller, Event, Member, Request, Response};
use dipc_wire::{NodeId, ObjectId, ObjectRecord, errno};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::NodeConfig;
use crate::local::Creds;
use crate::peer::{PeerReq, PeerResp, Peers};
use crate::shm::{self, HomeMeta, Segment, ShmState};
use dipc_dsm::coherence::Engine;
use std::sync::Arc;

/// The RPC handle of the referee connection.
pub type RefHandle = RpcHandle<Request, Response, Event>;

/// The close switch of a local connection.
struct Switch {
    /// Its process.
    pid: i32,
    /// Its process's watch connection (see `crate::local`).
    watch: bool,
    kill: Arc<tokio::sync::Notify>,
}

/// Everything a node daemon knows, shared by its tasks. Locks are never held
/// across an `.await`.
pub struct Node {
    cfg: NodeConfig,
    id: AtomicU32,
    referee: watch::Sender<Option<RefHandle>>,
    state: Mutex<State>,
    peers: Arc<Peers>,
    /// Message queues and semaphore sets (homes and local callers).
    ipc: crate::ipc::Ipc,
    /// One "close now" switch per local connection.
    conns: Mutex<HashMap<u64, Switch>>,
    /// Creates asked of the referee and not yet installed here: a peer
    /// that learnt of a new object from the referee may ask this home
    /// about it before the create's answer has reached this node
    /// ([`Node::settle_creates`]).
    creating: watch::Sender<usize>,
    /// The hold-time quantum's timers (finer than tokio's milliseconds).
    timers: crate::timers::Timers,
    /// This start of the daemon, told to the referee at every join: a
    /// restart is then never mistaken for a reconnect.
    incarnation: u64,
}

/// One create in flight ([`Node::begin_create`]); dropped once the answer
/// is installed (or the create failed).
pub(crate) struct CreateGuard<'a>(&'a watch::Sender<usize>);

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The node's mutable state, behind one lock.
pub struct State {
    /// The coherence engine (all segments of this node).
    pub engine: Engine,
    pub shm: ShmState,
    /// Objects this node is home of.
    hosted: HashMap<ObjectId, ObjectRecord>,
    /// Lookups cached by id (dropped when the referee says the object is gone).
    cache: HashMap<ObjectId, ObjectRecord>,
    members: HashMap<NodeId, Member>,
    /// Members the referee declared down (`NodeDown`) and that did not
    /// come back: their objects are gone. (A member listed as not up when
    /// this node joins may just not have re-joined a restarted referee.)
    down: std::collections::HashSet<NodeId>,
}

impl Node {
    pub fn new(cfg: NodeConfig) -> Self {
        Node {
            cfg,
            id: AtomicU32::new(0),
            referee: watch::channel(None).0,
            state: Mutex::new(State {
                engine: Engine::new(0),
                shm: ShmState::default(),
                hosted: HashMap::new(),
                cache: HashMap::new(),
                members: HashMap::new(),
                down: Default::default(),
            }),
            peers: Arc::new(Peers::default()),
            conns: Mutex::new(HashMap::new()),
            ipc: crate::ipc::Ipc::default(),
            creating: watch::channel(0).0,
            timers: Default::default(),
            incarnation: new_incarnation(),
        }
    }

    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Count a create from its call to the referee until the guard drops.
    pub(crate) fn begin_create(&self) -> CreateGuard<'_> {
        self.creating.send_modify(|n| *n += 1);
        CreateGuard(&self.creating)
    }

    /// A peer asked this node, as home, about an object it does not know:
    /// if creates are in flight, wait (at most a call timeout) until
    /// `known()` or none is left, so that the answer is not `EINVAL` for an
    /// object the referee already named this node the home of.
    pub(crate) async fn settle_creates(&self, known: impl Fn() -> bool) {
        let mut rx = self.creating.subscribe();
        let settle = async {
            loop {
                if *rx.borrow_and_update() == 0 || known() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(self.cfg.call_timeout, settle).await;
    }

    pub(crate) fn ipc(&self) -> &crate::ipc::Ipc {
        &self.ipc
    }

    pub(crate) fn timers(&self) -> &crate::timers::Timers {
        &self.timers
    }

    /// Record that this node is the home of `rec` (re-announced to the
    /// referee after a reconnect) and cache it.
    pub(crate) fn host(&self, rec: ObjectRecord) {
        let mut st = self.state();
        st.hosted.insert(rec.id, rec.clone());
        st.cache.insert(rec.id, rec);
    }

    /// Cache a record looked up elsewhere.
    pub(crate) fn cache_record(&self, rec: ObjectRecord) {
        self.state().cache.insert(rec.id, rec);
    }

    /// This node no longer hosts `id`.
    pub(crate) fn unhost(&self, id: ObjectId) {
        let mut st = self.state();
        st.hosted.remove(&id);
        st.cache.remove(&id);
    }

    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    pub fn auth(&self) -> Auth {
        Auth {
            cluster: self.cfg.cluster.clone(),
            secret: self.cfg.secret.clone(),
            name: self.cfg.name.clone(),
            tls: self.cfg.tls.clone(),
        }
    }

    /// This node's id, once it has joined.
    pub fn node_id(&self) -> Option<NodeId> {
        match self.id.load(Ordering::Acquire) {
            0 => None,
            id => Some(id),
        }
    }

    /// The local connections' close switches (a poisoned lock still
    /// guards a consistent map: every update is one insert or remove).
    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Switch>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register local connection `conn` of process `pid`; the switch
    /// closes it.
    pub(crate) fn conn_opened(&self, conn: u64, pid: i32) -> Arc<tokio::sync::Notify> {
        let kill = Arc::new(tokio::sync::Notify::new());
        let switch = Switch {
            pid,
            watch: false,
            kill: kill.clone(),
        };
        self.conns().insert(conn, switch);
        kill
    }

    /// Local connection `conn` is its process's watch connection.
    pub(crate) fn conn_watches(&self, conn: u64) {
        if let Some(s) = self.conns().get_mut(&conn) {
            s.watch = true;
        }
    }

    /// Local connection `conn` closed: was it a watch connection (whose
    /// closing is not its process's exit)?
    pub(crate) fn conn_closed(&self, conn: u64) -> bool {
        self.conns().remove(&conn).is_some_and(|s| s.watch)
    }

    /// Close local connection `conn` and its process's watch connection:
    /// the process gets `SIGBUS` on its distributed segments (see
    /// libsysv).
    pub(crate) fn disconnect(&self, conn: u64) {
        let conns = self.conns();
        let Some(pid) = conns.get(&conn).map(|s| s.pid) else {
            return;
        };
        for (&c, s) in conns.iter() {
            if c == conn || (s.watch && s.pid == pid) {
                s.kill.notify_one();
            }
        }
    }

    /// Close the connections of processes blocked in a fault for longer
    /// than `bound`: a peer that should answer is gone. Called periodically.
    pub(crate) fn expire_faults(&self, bound: Duration) {
        let stuck = self.state().shm.stuck_conns(bound);
        for conn in stuck {
            warn!(
                conn,
                "a page fault was not served within {bound:?} (a peer is gone?): \
                 closing the process's connection so it gets SIGBUS"
            );
            crate::metrics::ERRORS.inc();
            self.disconnect(conn);
        }
    }

    pub(crate) fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state()
    }

    /// The peer address of member `node`.
    pub(crate) fn member_addr(&self, node: NodeId) -> Option<String> {
        self.state().members.get(&node).map(|m| m.listen.clone())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock is a bug we already logged; the
        // state itself stays consistent (every update is a single insert).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn hosted_records(&self) -> Vec<ObjectRecord> {
        self.state().hosted.values().cloned().collect()
    }

    pub(crate) fn joined(&self, id: NodeId, members: Vec<Member>) {
        let old = self.id.swap(id, Ordering::AcqRel);
        let mut st = self.state();
        if old != id {
            st.engine = Engine::new(id);
        }
        st.members = members.into_iter().map(|m| (m.node, m)).collect();
    }

    pub(crate) fn set_referee(&self, h: Option<RefHandle>) {
        self.referee.send_replace(h);
    }

    pub(crate) fn forget_object(&self, id: ObjectId) {
        self.state().cache.remove(&id);
    }

    pub(crate) fn member_up(&self, m: Member) {
        info!(node = m.node, name = %m.name, "member up");
        let mut st = self.state();
        st.engine.node_up(m.node);
        st.down.remove(&m.node);
        st.members.insert(m.node, m);
    }

    /// The referee declared `node` failed: its msg/sem homes are gone
    /// (`crate::ipc`), and the coherence engine drops it (units only it
    /// held are lost; see `dipc_dsm::coherence`, "Node failure").
    pub(crate) fn member_down(self: &Arc<Self>, node: NodeId) {
        info!(node, "member down");
        if self.node_id() == Some(node) {
            // The link fences instead ([`Node::fence`]).
            return;
        }
        {
            let mut st = self.state();
            if let Some(m) = st.members.get_mut(&node) {
                m.up = false;
            }
            st.down.insert(node);
        }
        self.coherence_node_down(node);
        crate::ipc::node_down(self, node);
    }

    /// The referee declared this node down (it was silent longer than the
    /// referee's bound: stopped, starved or cut off). The other nodes
    /// dropped its copies and took its objects for gone, so every copy
    /// here may be stale: every local process loses its connection
    /// (libsysv turns its attachments into `SIGBUS`, never a stale read;
    /// its next call reconnects), and the node forgets every segment,
    /// copy, queue and semaphore set it held, answering the operations
    /// parked at its homes with `EIDRM`. The link then re-joins empty, so
    /// the referee drops the records of the objects homed here.
    pub(crate) async fn fence(self: &Arc<Self>) {
        warn!(
            "the referee declared this node down: dropping every copy and object it \
             held (its processes get SIGBUS on their segments), then re-joining empty"
        );
        {
            // Drop the bytes first, so that an access before the
            // process's connection closes faults instead of reading.
            let st = self.state();
            for s in st.shm.segments.values() {
                if let Err(e) = s.memfd.punch_hole(0, s.size()) {
                    warn!(seg = s.rec.id, "fence: cannot drop the copy: {e}");
                }
            }
        }
        let conns: Vec<u64> = self.conns().keys().copied().collect();
        for &conn in &conns {
            self.disconnect(conn);
        }
        // Their close paths detach and cancel what they had in flight (a
        // process may already be back on a new connection: not waited for).
        let deadline = tokio::time::Instant::now() + self.cfg.call_timeout;
        loop {
            let open = {
                let live = self.conns();
                conns.iter().any(|c| live.contains_key(c))
            };
            if !open || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        {
            let mut st = self.state();
            st.engine = Engine::new(self.node_id().unwrap_or(0));
            st.shm = ShmState::default();
            st.hosted.clear();
            st.cache.clear();
        }
        crate::ipc::fence(self);
        info!("fenced: holding nothing");
    }

    /// True if the referee declared `node` down (and it did not come back).
    pub(crate) fn is_member_down(&self, node: NodeId) -> bool {
        self.state().down.contains(&node)
    }

    /// Wait (at most `bound`) until the referee declares `node` down;
    /// false if it did not.
    pub(crate) async fn wait_member_down(&self, node: NodeId, bound: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            if self.is_member_down(node) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Call the referee, waiting (bounded) for the link if it is down.
    pub(crate) async fn referee_call(&self, req: &Request) -> Result<Response, i32> {
        let mut rx = self.referee.subscribe();
        let handle = {
            let wait =
                tokio::time::timeout(self.cfg.call_timeout, rx.wait_for(|h| h.is_some())).await;
            match wait {
                Ok(Ok(h)) => h.clone(),
                _ => None,
            }
        };
        let Some(handle) = handle else {
            return Err(errno::ETIMEDOUT);
        };
        match handle.call(req).await {
            Ok(r) => Ok(r),
            Err(TcpError::Timeout { .. }) => Err(errno::ETIMEDOUT),
            Err(e) => {
                debug!("referee call failed: {e}");
                Err(errno::EIO)
            }
        }
    }

    /// The process on local connection `conn` is gone: detach what it had.
    pub(crate) fn process_gone(self: &Arc<Self>, conn: u64, creds: Creds) {
        crate::ipc::process_gone(self, conn, creds);
        let proc_ = self.state().shm.remove_proc(conn);
        let Some(p) = proc_ else { return };
        debug!(
            conn,
            pid = creds.pid,
            "local process gone: {} attachments",
            p.attachments.len()
        );
        let ids: Vec<ObjectId> = p
            .attachments
            .iter()
            .map(|a| a.id)
            .chain(p.pending.iter().map(|(id, _)| *id))
            .collect();
        if ids.is_empty() {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            for id in ids {
                node.detach_at_home(id, creds.pid).await;
            }
        });
    }

    /// Serve one request of a local process.
    pub(crate) async fn local_request(
        self: &Arc<Self>,
        conn: u64,
        creds: Creds,
        req: LReq,
        fds: Vec<OwnedFd>,
    ) -> (LResp, Option<OwnedFd>) {
        let caller = Caller {
            uid: creds.uid,
            gid: creds.gid,
            pid: creds.pid,
        };
        let resp = match req {
            LReq::Hello { .. } | LReq::Watch { .. } => LResp::Err(errno::EINVAL),
            LReq::ShmGet {
                key,
                size,
                flags,
                unit,
                mode,
                quantum_us,
                prefetch,
            } => {
                let xfer = shm::Requested {
                    unit,
                    mode,
                    quantum_us,
                    prefetch,
                };
                self.shm_get(creds, key, size, flags, xfer).await
            }
            LReq::ShmAt { id, readonly } => return self.shm_at(conn, caller, id, readonly).await,
            LReq::ShmRegister {
                id,
                addr,
                len,
                readonly,
            } => self.shm_register(conn, creds, id, addr, len, readonly, fds),
            LReq::ShmAbort { id } => {
                let had = {
                    let mut st = self.state();
                    st.shm.procs.get_mut(&conn).and_then(|p| {
                        let i = p.pending.iter().position(|(x, _)| *x == id)?;
                        Some(p.pending.remove(i))
                    })
                };
                if had.is_some() {
                    self.detach_at_home(id, creds.pid).await;
                }
                LResp::Ok
            }
            LReq::ShmDt { addr } => {
                let found = {
                    let mut st = self.state();
                    st.shm.procs.get_mut(&conn).and_then(|p| {
                        let i = p.attachments.iter().position(|a| a.addr == addr)?;
                        Some(p.attachments.remove(i))
                    })
                };
                match found {
                    Some(a) => {
                        self.detach_at_home(a.id, creds.pid).await;
                        LResp::Ok
                    }
                    None => LResp::Err(errno::EINVAL),
                }
            }
            LReq::ShmStat { id } => match self.home_call(id, PeerReq::ShmStat { id, caller }).await
            {
                PeerResp::ShmStat(s) => LResp::ShmStat(s),
                PeerResp::Err(e) => LResp::Err(e),
                _ => LResp::Err(errno::EIO),
            },
            LReq::ShmSet { id, uid, gid, mode } => {
                let req = PeerReq::ShmSet {
                    id,
                    caller,
                    uid,
                    gid,
                    mode,
                    now: now_secs(),
                };
                peer_to_local(self.home_call(id, req).await)
            }
            LReq::ShmRmid { id } => {
                peer_to_local(self.home_call(id, PeerReq::ShmRmid { id, caller }).await)
            }
            req @ (LReq::MsgGet { .. }
            | LReq::MsgSnd { .. }
            | LReq::MsgRcv { .. }
            | LReq::MsgCtl { .. }
            | LReq::SemGet { .. }
            | LReq::SemOp { .. }
            | LReq::SemCtl { .. }
            | LReq::IpcLimits) => crate::ipc::local_request(self, conn, creds, req).await,
            LReq::Direct { kind, id } => return crate::direct::open(self, creds, kind, id).await,
            LReq::DirectLost { home } => crate::direct::lost(self, home).await,
            // Handled by the connection loop; never dispatched.
            LReq::Cancel => LResp::Err(errno::EINVAL),
        };
        (resp, None)
    }

    /// The record of object `id`: from the cache, else from the referee.
    pub(crate) async fn record(&self, id: ObjectId) -> Result<ObjectRecord, i32> {
        if let Some(r) = self.state().cache.get(&id) {
            return Ok(r.clone());
        }
        match self.referee_call(&Request::Lookup { id }).await? {
            Response::Record(r) => {
                self.state().cache.insert(id, r.clone());
                Ok(r)
            }
            Response::Err { errno, .. } => Err(errno),
            _ => Err(errno::EIO),
        }
    }

    /// Run `req` at the home of `id` (here, or by a peer call).
    pub(crate) async fn home_call(self: &Arc<Self>, id: ObjectId, req: PeerReq) -> PeerResp {
        let rec = match self.record(id).await {
            Ok(r) => r,
            Err(e) => return PeerResp::Err(e),
        };
        if Some(rec.home) == self.node_id() {
            return self.serve_home(rec.home, req).await;
        }
        if self.is_member_down(rec.home) {
            // The home failed: the object went with it.
            return PeerResp::Err(errno::EIDRM);
        }
        let Some(h) = self.peers.handle(self, rec.home).await else {
            return PeerResp::Err(errno::EIDRM);
        };
        match h.call(&req).await {
            Ok(r) => r,
            Err(e) => {
                warn!(home = rec.home, "call to the home of {id} failed: {e}");
                PeerResp::Err(errno::EIO)
            }
        }
    }

    /// A call from a peer to this node as home.
    pub(crate) async fn peer_call(
        self: &Arc<Self>,
        from: Option<NodeId>,
        req: PeerReq,
    ) -> PeerResp {
        let Some(from) = from else {
            return PeerResp::Err(errno::EPROTO);
        };
        self.serve_home(from, req).await
    }

    /// Home side of the shm calls; `from` is the asking node.
    async fn serve_home(self: &Arc<Self>, from: NodeId, req: PeerReq) -> PeerResp {
        if let PeerReq::ShmAttach { id, .. }
        | PeerReq::ShmDetach { id, .. }
        | PeerReq::ShmStat { id, .. }
        | PeerReq::ShmSet { id, .. }
        | PeerReq::ShmRmid { id, .. } = &req
        {
            let id = *id;
            self.settle_creates(|| self.state().shm.segments.contains_key(&id))
                .await;
        }
        let mut destroy = None;
        // Referee updates the answer must wait for (a key freed by IPC_RMID
        // must be free when shmctl returns), sent after the lock is released.
        let mut tell_referee = None;
        let resp = {
            let mut st = self.state();
            let id = match &req {
                PeerReq::ShmAttach { id, .. }
                | PeerReq::ShmDetach { id, .. }
                | PeerReq::ShmStat { id, .. }
                | PeerReq::ShmSet { id, .. }
                | PeerReq::ShmRmid { id, .. } => *id,
                // Message queues and semaphore sets: `crate::ipc`.
                _ => return PeerResp::Err(errno::EINVAL),
            };
            let Some(seg) = st.shm.segments.get_mut(&id).filter(|s| s.home.is_some()) else {
                return PeerResp::Err(errno::EINVAL);
            };
            match req {
                PeerReq::ShmAttach {
                    caller,
                    readonly,
                    now,
                    ..
                } => match shm::home_attach(seg, from, caller, readonly, now) {
                    Ok(()) => PeerResp::Ok,
                    Err(e) => PeerResp::Err(e),
                },
                PeerReq::ShmDetach { pid, now, .. } => {
                    if shm::home_detach(seg, from, pid, now) {
                        destroy = Some(id);
                    }
                    PeerResp::Ok
                }
                PeerReq::ShmStat { caller, .. } => {
                    let Some(h) = seg.home.as_ref() else {
                        return PeerResp::Err(errno::EINVAL);
                    };
                    if !h.perm.allows(caller.uid, caller.gid, 0o4) {
                        PeerResp::Err(errno::EACCES)
                    } else {
                        seg.stat()
                            .map_or(PeerResp::Err(errno::EINVAL), PeerResp::ShmStat)
                    }
                }
                PeerReq::ShmSet {
                    caller,
                    uid,
                    gid,
                    mode,
                    now,
                    ..
                } => {
                    let Some(h) = seg.home.as_mut() else {
                        return PeerResp::Err(errno::EINVAL);
                    };
                    if !h.perm.owns(caller.uid) {
                        PeerResp::Err(errno::EPERM)
                    } else {
                        h.perm.uid = uid;
                        h.perm.gid = gid;
                        h.perm.mode = (h.perm.mode & !0o777) | (mode & 0o777);
                        h.ctime = now;
                        seg.rec.perm = h.perm;
                        let rec = seg.rec.clone();
                        st.hosted.insert(id, rec.clone());
                        st.cache.insert(id, rec.clone());
                        tell_referee = Some(Request::SetPerm { id, perm: rec.perm });
                        PeerResp::Ok
                    }
                }
                PeerReq::ShmRmid { caller, .. } => {
                    let Some(h) = seg.home.as_mut() else {
                        return PeerResp::Err(errno::EINVAL);
                    };
                    if !h.perm.owns(caller.uid) {
                        PeerResp::Err(errno::EPERM)
                    } else {
                        let first = !h.removed;
                        h.removed = true;
                        seg.rec.removed = true;
                        let attached = h.total() > 0;
                        if !attached {
                            destroy = Some(id);
                        }
                        if first {
                            tell_referee = Some(Request::Remove {
                                id,
                                still_attached: attached,
                            });
                        }
                        PeerResp::Ok
                    }
                }
                _ => PeerResp::Err(errno::EINVAL),
            }
        };
        if let Some(req) = tell_referee {
            match self.referee_call(&req).await {
                Ok(Response::Ok) => {}
                Ok(other) => warn!("referee answered {req:?} with {other:?}"),
                Err(e) => warn!("referee unreachable for {req:?}: errno {e}"),
            }
        }
        if let Some(id) = destroy {
            self.destroy_segment(id).await;
        }
        resp
    }

    /// The home destroys a removed segment whose last attachment went.
    async fn destroy_segment(self: &Arc<Self>, id: ObjectId) {
        {
            let mut st = self.state();
            st.shm.segments.remove(&id);
            st.hosted.remove(&id);
            st.cache.remove(&id);
            let _ = st.engine.remove_segment(id);
        }
        info!(id, "segment destroyed (removed and no longer attached)");
        let _ = self.referee_call(&Request::Destroyed { id }).await;
    }

    async fn detach_at_home(self: &Arc<Self>, id: ObjectId, pid: i32) {
        let r = self
            .home_call(
                id,
                PeerReq::ShmDetach {
                    id,
                    pid,
                    now: now_secs(),
                },
            )
            .await;
        if let PeerResp::Err(e) = r {
            debug!(id, "detach at home: errno {e}");
        }
    }

    /// First half of `shmat`.
    async fn shm_at(
        self: &Arc<Self>,
        conn: u64,
        caller: Caller,
        id: ObjectId,
        readonly: bool,
    ) -> (LResp, Option<OwnedFd>) {
        let rec = match self.record(id).await {
            Ok(r) if r.kind == dipc_wire::Kind::Shm => r,
            Ok(_) => return (LResp::Err(errno::EINVAL), None),
            Err(e) => return (LResp::Err(e), None),
        };
        let attach = PeerReq::ShmAttach {
            id,
            caller,
            readonly,
            now: now_secs(),
        };
        // A segment whose home failed is attached here only if this node
        // holds some of it, with the permissions of its record (no home
        // keeps the attach count any more).
        let home_down = {
            let st = self.state();
            st.shm.segments.contains_key(&id) && st.engine.is_home_down(id)
        };
        if home_down {
            let want = if readonly { 0o4 } else { 0o6 };
            if !rec.perm.allows(caller.uid, caller.gid, want) {
                return (LResp::Err(errno::EACCES), None);
            }
        } else {
            match self.home_call(id, attach).await {
                PeerResp::Ok => {}
                PeerResp::Err(e) => return (LResp::Err(e), None),
                _ => return (LResp::Err(errno::EIO), None),
            }
        }
        let mut st = self.state();
        #[allow(clippy::map_entry)] // perform() needs the whole state after the insert
        if !st.shm.segments.contains_key(&id) {
            let seg = match Segment::new(rec.clone(), None) {
                Ok(s) => s,
                Err(e) => return (LResp::Err(e), None),
            };
            let (units, opts) = (seg.units, seg.opts);
            st.shm.segments.insert(id, seg);
            let actions = st.engine.add_segment_with(id, rec.home, units, opts);
            self.perform(&mut st, actions, &bytes::Bytes::new());
        }
        let Some(seg) = st.shm.segments.get(&id) else {
            return (LResp::Err(errno::EIDRM), None);
        };
        let fd = match seg.memfd.as_fd().try_clone_to_owned() {
            Ok(fd) => fd,
            Err(_) => return (LResp::Err(errno::ENOMEM), None),
        };
        let resp = LResp::ShmAttach {
            size: seg.size(),
            unit: seg.unit as u32,
        };
        let p = st.shm.procs.entry(conn).or_default();
        p.pid = caller.pid;
        p.pending.push((id, readonly));
        (resp, Some(fd))
    }

    /// Second half of `shmat`: the mapping exists and is registered.
    #[allow(clippy::too_many_arguments)]
    fn shm_register(
        self: &Arc<Self>,
        conn: u64,
        creds: Creds,
        id: ObjectId,
        addr: u64,
        len: u64,
        readonly: bool,
        mut fds: Vec<OwnedFd>,
    ) -> LResp {
        let mut st = self.state();
        let Some(p) = st.shm.procs.get_mut(&conn) else {
            return LResp::Err(errno::EINVAL);
        };
        let Some(i) = p.pending.iter().position(|(x, _)| *x == id) else {
            return LResp::Err(errno::EINVAL);
        };
        p.pending.remove(i);
        p.pid = creds.pid;
        if p.uffd.is_none() {
            let Some(fd) = fds.pop() else {
                warn!(
                    conn,
                    "first ShmRegister of a process came without its userfaultfd"
                );
                return LResp::Err(errno::EINVAL);
            };
            let uffd = Arc::new(dipc_shmem::Uffd::from_fd(fd));
            p.uffd = Some(uffd.clone());
            p.task = Some(tokio::spawn(self.clone().serve_uffd(conn, uffd)).abort_handle());
        }
        p.attachments.push(shm::Attachment {
            id,
            addr,
            len,
            readonly,
        });
        LResp::Ok
    }

    async fn shm_get(
        self: &Arc<Self>,
        creds: Creds,
        key: i32,
        size: u64,
        flags: i32,
        xfer: shm::Requested,
    ) -> LResp {
        let params = match shm::create_params(key, size, self.cfg.default_unit, xfer) {
            Ok(p) => p,
            Err(e) => return LResp::Err(e),
        };
        let req = Request::Get {
            key,
            flags,
            params,
            caller: Caller {
                uid: creds.uid,
                gid: creds.gid,
                pid: creds.pid,
            },
            now: now_secs(),
        };
        let _creating = self.begin_create();
        match self.referee_call(&req).await {
            Ok(Response::Record(rec)) => {
                let id = rec.id;
                let mut st = self.state();
                if Some(rec.home) == self.node_id() && !st.shm.segments.contains_key(&id) {
                    let meta = HomeMeta {
                        perm: rec.perm,
                        atime: 0,
                        dtime: 0,
                        ctime: rec.ctime,
                        cpid: creds.pid,
                        lpid: 0,
                        nattch: HashMap::new(),
                        removed: false,
                    };
                    match Segment::new(rec.clone(), Some(meta)) {
                        Ok(seg) => {
                            let (units, opts) = (seg.units, seg.opts);
                            st.shm.segments.insert(id, seg);
                            let me = rec.home;
                            let actions = st.engine.add_segment_with(id, me, units, opts);
                            self.perform(&mut st, actions, &bytes::Bytes::new());
                        }
                        Err(e) => return LResp::Err(e),
                    }
                    st.hosted.insert(id, rec.clone());
                }
                st.cache.insert(id, rec);
                LResp::Id(id)
            }
            Ok(Response::Err { errno, .. }) => LResp::Err(errno),
            Ok(_) => LResp::Err(errno::EIO),
            Err(e) => LResp::Err(e),
        }
    }
}

/// A non-zero number that differs between two starts of a daemon: the
/// clock's nanoseconds mixed with the pid by std's randomly keyed hasher.
fn new_incarnation() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

pub(crate) fn peer_to_local(r: PeerResp) -> LResp {
    match r {
        PeerResp::Ok => LResp::Ok,
        PeerResp::Err(e) => LResp::Err(e),
        PeerResp::ShmStat(s) => LResp::ShmStat(s),
        PeerResp::Msg { mtype, text } => LResp::Msg { mtype, text },
        PeerResp::MsgStat(s) => LResp::MsgStat(s),
        PeerResp::SemStat(s) => LResp::SemStat(s),
        PeerResp::Value(v) => LResp::Value(v),
        PeerResp::Values(v) => LResp::Values(v),
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// How long the node waits for anything remote, by default.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
