//! The referee as a pure state machine.
//!
//! Everything the referee decides is decided here: which `*get` creates and
//! which one finds, which errno a caller gets, which node id a name has,
//! when a node counts as down. The [`Registry`] reads no clock (every input
//! carries `now_ms`), does no I/O and starts no thread; each input returns an
//! [`Outcome`] listing what the shell must do, in this order:
//!
//! 1. persist [`Outcome::writes`] durably (the store replays them into the
//!    same [`Snapshot`] the registry holds, so a restart resumes exactly);
//! 2. send [`Outcome::response`] to the asking peer;
//! 3. push [`Outcome::events`] to every joined node.
//!
//! Because one `Registry` serialises every request, it is the cluster's
//! serialisation point: of several concurrent `IPC_CREAT|IPC_EXCL` calls for a
//! key, exactly the first one applied creates the object.
//!
//! `*get` follows Linux `ipc/util.c` (`ipcget`, `ipcperms`) and the kind
//! specific `newseg`/`newque`/`newary` and `*_more_checks`: keys are per kind,
//! `IPC_PRIVATE` always creates, a found object is checked for `IPC_EXCL`,
//! then size/nsems, then permissions. Differences from one kernel: ids come
//! from one counter per cluster (never reused, `DIPC_ID_BIT` set), and group
//! checks use the caller's primary gid only (the node passes no
//! supplementary groups).
//!
//! What is persisted (the [`Snapshot`]): object records, node entries (name
//! -> id, listen address, transport) and the two counters. What is not:
//! liveness. After a restart every node counts as not joined until it joins
//! again, and its objects are reported unavailable until then.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use dipc_wire::errno::{EACCES, EEXIST, EINVAL, ENOENT, ENOSPC, ENOTCONN, EPERM};
use dipc_wire::referee::{
    Caller, ClusterStatus, Event, LostPages, Member, ObjectStatus, Request, Response,
};
use dipc_wire::{
    DIPC_ID_BIT, IPC_CREAT, IPC_EXCL, IPC_PRIVATE, Key, Kind, NodeId, ObjectId, ObjectRecord,
    Params, Perm,
};
use serde::{Deserialize, Serialize};

/// Most objects of one kind alive at once (`MSGMNI`/`SEMMNI` defaults).
pub const MAX_OBJECTS_PER_KIND: usize = 32000;
/// Most semaphores in one set (`SEMMSL`).
pub const SEMMSL: u32 = 32000;
/// Smallest segment (`SHMMIN`).
pub const SHMMIN: u64 = 1;
/// Largest segment (`SHMMAX`, the kernel's default).
pub const SHMMAX: u64 = u64::MAX - (1 << 24);
/// Smallest coherence unit.
pub const MIN_UNIT: u32 = 4096;
/// The id counter must stay below the id bit, so that `DIPC_ID_BIT | n` is a
/// positive `i32` whose low bits are exactly `n`.
const MAX_ID_COUNTER: u32 = DIPC_ID_BIT as u32;

/// Static settings of a referee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Cluster name, reported by `Status`.
    pub cluster: String,
    /// Heartbeat period nodes are told to use.
    pub heartbeat_ms: u64,
    /// Silence after which a node is marked down.
    pub down_after_ms: u64,
}

/// Who sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A node daemon, known by the id its `Join` returned.
    Node(NodeId),
    /// The `dipc` command line (status, ipcs): read-only requests only.
    Client,
}

/// What the shell must do after one input, in field order: persist
/// `writes`, send `response`, broadcast `events`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub response: Option<Response>,
    pub events: Vec<Event>,
    pub writes: Vec<StoreOp>,
}

/// One change to the persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreOp {
    /// Insert or replace the record with this id.
    PutObject(ObjectRecord),
    DeleteObject(ObjectId),
    /// Insert or replace the entry with this name.
    PutNode(NodeEntry),
    /// The counters: next object number and next node id.
    PutMeta {
        next_id: u32,
        next_node: u32,
    },
}

/// A node as persisted: its name owns its id for ever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    pub id: NodeId,
    pub name: String,
    pub listen: String,
    pub transport: String,
}

/// Everything the referee persists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub objects: BTreeMap<ObjectId, ObjectRecord>,
    /// By node name.
    pub nodes: BTreeMap<String, NodeEntry>,
    /// The next object number `n` (ids are `DIPC_ID_BIT | n`).
    pub next_id: u32,
    /// The next node id.
    pub next_node: u32,
}

impl Default for Snapshot {
    /// An empty registry: object numbers and node ids start at 1.
    fn default() -> Self {
        Snapshot {
            objects: BTreeMap::new(),
            nodes: BTreeMap::new(),
            next_id: 1,
            next_node: 1,
        }
    }
}

impl Snapshot {
    /// Apply persisted changes, as the store does on disk.
    pub fn apply(&mut self, ops: &[StoreOp]) {
        for op in ops {
            match op {
                StoreOp::PutObject(rec) => {
                    self.objects.insert(rec.id, rec.clone());
                }
                StoreOp::DeleteObject(id) => {
                    self.objects.remove(id);
                }
                StoreOp::PutNode(entry) => {
                    self.nodes.insert(entry.name.clone(), entry.clone());
                }
                StoreOp::PutMeta { next_id, next_node } => {
                    self.next_id = *next_id;
                    self.next_node = *next_node;
                }
            }
        }
    }
}

/// Liveness of a node that joined since this registry started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Live {
    up: bool,
    last_seen_ms: u64,
    /// The daemon's start the node last joined with (0: unknown).
    incarnation: u64,
}

/// The referee's state: the persisted [`Snapshot`] plus indexes and
/// liveness.
#[derive(Debug, Clone)]
pub struct Registry {
    config: Config,
    state: Snapshot,
    /// Live (not removed), non-private keys.
    by_key: HashMap<(Kind, Key), ObjectId>,
    /// Records per kind, removed ones included (they hold their id).
    counts: HashMap<Kind, usize>,
    /// Node id -> name.
    names: BTreeMap<NodeId, String>,
    /// Nodes that joined since the registry started.
    live: BTreeMap<NodeId, Live>,
    /// Lost pages reported by nodes (`ReportLost`), per segment and node;
    /// not persisted (they describe the running cluster).
    lost: BTreeMap<ObjectId, BTreeMap<NodeId, Vec<(u64, u64)>>>,
}

/// The pages in both lists of inclusive, ascending, disjoint ranges.
fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while let (Some(&(a0, a1)), Some(&(b0, b1))) = (a.get(i), b.get(j)) {
        let (lo, hi) = (a0.max(b0), a1.min(b1));
        if lo <= hi {
            out.push((lo, hi));
        }
        if a1 < b1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The `Err` response.
fn err(errno: i32, message: impl Into<String>) -> Outcome {
    Outcome {
        response: Some(Response::Err {
            errno,
            message: message.into(),
        }),
        ..Outcome::default()
    }
}

fn reply(response: Response) -> Outcome {
    Outcome {
        response: Some(response),
        ..Outcome::default()
    }
}

/// The object number of a distributed id.
fn id_number(id: ObjectId) -> u32 {
    (id & !DIPC_ID_BIT) as u32
}

/// Linux `ipcperms`: may `caller` use an object with `perm` for the access
/// in the low 9 bits of `flags`? Owner or creator uid selects the user bits,
/// else owner or creator gid the group bits, else the other bits; uid 0
/// (`CAP_IPC_OWNER`) may do anything.
pub fn ipcperms(perm: &Perm, caller: &Caller, flags: i32) -> bool {
    let flag = (flags & 0o777) as u32;
    perm.allows(caller.uid, caller.gid, (flag >> 6) | (flag >> 3) | flag)
}

/// Is a re-announced record well formed?
fn valid_record(rec: &ObjectRecord) -> bool {
    dipc_wire::is_dipc_id(rec.id) && rec.params.kind() == rec.kind
}

impl Registry {
    /// A registry resuming from `snapshot` (empty: `Snapshot::default()`).
    /// No node counts as joined.
    pub fn new(config: Config, snapshot: Snapshot) -> Self {
        let Snapshot {
            objects,
            nodes,
            next_id,
            next_node,
        } = snapshot;
        // Counters never go back, even if a store was edited by hand.
        let next_id = objects
            .keys()
            .map(|&id| id_number(id).saturating_add(1))
            .fold(next_id, u32::max);
        let next_node = nodes
            .values()
            .map(|e| e.id.saturating_add(1))
            .fold(next_node, u32::max);
        let mut reg = Registry {
            config,
            state: Snapshot {
                objects: BTreeMap::new(),
                nodes,
                next_id,
                next_node,
            },
            by_key: HashMap::new(),
            counts: HashMap::new(),
            names: BTreeMap::new(),
            live: BTreeMap::new(),
            lost: BTreeMap::new(),
        };
        for entry in reg.state.nodes.values() {
            reg.names.insert(entry.id, entry.name.clone());
        }
        for rec in objects.into_values() {
            reg.index(rec);
        }
        reg
    }

    /// The persisted part of the state, as the store should hold it.
    pub fn snapshot(&self) -> Snapshot {
        self.state.clone()
    }

    /// The settings this registry runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Is `node` joined and not marked down?
    pub fn is_up(&self, node: NodeId) -> bool {
        self.live.get(&node).is_some_and(|l| l.up)
    }

    /// A node (re)joins. Its id is the one its name had, or a new one.
    ///
    /// `hosted` lists the objects the node is home of. A record the
    /// registry does not know is restored with this node as home (keeping
    /// its id, and its key unless another live object holds that key now);
    /// a record of another node's id space is ignored. A record the registry
    /// has with this node as home that the node does not announce is gone
    /// (the node lost it): it is deleted and `ObjectGone` is emitted. A
    /// record both know keeps the registry's version, which saw every change
    /// the home reported.
    ///
    /// `incarnation` is the node's daemon start (0: unknown). A join of
    /// another incarnation while the node is still taken for up is a
    /// restart not noticed yet (killed and started again within
    /// `down_after_ms`): the old incarnation is declared down first
    /// (`NodeDown` before `NodeUp`), so the others drop the copies and
    /// homes they thought it held, as if it had been noticed.
    pub fn join(
        &mut self,
        now_ms: u64,
        name: String,
        listen: String,
        transport: String,
        hosted: Vec<ObjectRecord>,
        incarnation: u64,
    ) -> Outcome {
        if name.is_empty() {
            return err(EINVAL, "a node must join with a non-empty name");
        }
        let mut out = Outcome::default();
        let mut meta_changed = false;
        let id = match self.state.nodes.get(&name) {
            Some(entry) => entry.id,
            None => {
                let id = self.state.next_node;
                let Some(next) = id.checked_add(1) else {
                    return err(ENOSPC, "no node id left");
                };
                self.state.next_node = next;
                meta_changed = true;
                id
            }
        };
        let entry = NodeEntry {
            id,
            name: name.clone(),
            listen,
            transport,
        };
        if self.state.nodes.get(&name) != Some(&entry) {
            self.state.nodes.insert(name.clone(), entry.clone());
            out.writes.push(StoreOp::PutNode(entry));
        }
        self.names.insert(id, name);

        // Records homed here that the node no longer has.
        let announced: BTreeSet<ObjectId> = hosted
            .iter()
            .filter(|r| valid_record(r))
            .map(|r| r.id)
            .collect();
        let lost: Vec<ObjectId> = self
            .state
            .objects
            .values()
            .filter(|r| r.home == id && !announced.contains(&r.id))
            .map(|r| r.id)
            .collect();
        for gone in lost {
            self.delete(gone, &mut out);
        }
        // Records the registry lost (or never saw): restore them.
        for mut rec in hosted {
            if !valid_record(&rec) || self.state.objects.contains_key(&rec.id) {
                continue;
            }
            rec.home = id;
            if !rec.removed
                && rec.key != IPC_PRIVATE
                && self.by_key.contains_key(&(rec.kind, rec.key))
            {
                rec.key = IPC_PRIVATE;
            }
            let n = id_number(rec.id);
            if n >= self.state.next_id {
                self.state.next_id = n.saturating_add(1);
                meta_changed = true;
            }
            self.insert(rec, &mut out);
        }
        if meta_changed {
            out.writes.push(self.meta());
        }

        let prev = self.live.get(&id);
        let was_down = prev.is_some_and(|l| !l.up);
        let restarted = prev.is_some_and(|l| {
            l.up && l.incarnation != 0 && incarnation != 0 && l.incarnation != incarnation
        });
        if restarted {
            out.events.push(Event::NodeDown { node: id });
        }
        self.live.insert(
            id,
            Live {
                up: true,
                last_seen_ms: now_ms,
                incarnation,
            },
        );
        if let Some(member) = self.member(id, now_ms) {
            out.events.push(Event::NodeUp(member));
        }
        out.response = Some(Response::Joined {
            node: id,
            heartbeat_ms: self.config.heartbeat_ms,
            down_after_ms: self.config.down_after_ms,
            members: self.members(now_ms),
            was_down,
        });
        out
    }

    /// Handle one request. `Join` from a node is [`Registry::join`] (the
    /// origin's id is then ignored: the name decides). Any request from a
    /// joined node counts as a sign of life and brings a down node back up.
    pub fn handle(&mut self, now_ms: u64, from: Origin, req: Request) -> Outcome {
        let node = match from {
            Origin::Client => {
                if !matches!(
                    req,
                    Request::Status | Request::Lookup { .. } | Request::LookupKey { .. }
                ) {
                    return err(
                        EPERM,
                        "a client may only ask for status and lookups; join as a node",
                    );
                }
                None
            }
            Origin::Node(n) => {
                if let Request::Join {
                    name,
                    listen,
                    transport,
                    hosted,
                    incarnation,
                } = req
                {
                    return self.join(now_ms, name, listen, transport, hosted, incarnation);
                }
                Some(n)
            }
        };
        let mut out = Outcome::default();
        if let Some(n) = node {
            let Some(live) = self.live.get_mut(&n) else {
                return err(
                    ENOTCONN,
                    format!("node {n} has not joined: send Join first"),
                );
            };
            live.last_seen_ms = live.last_seen_ms.max(now_ms);
            if !live.up {
                live.up = true;
                if let Some(m) = self.member(n, now_ms) {
                    out.events.push(Event::NodeUp(m));
                }
            }
        }
        let result = match req {
            Request::Join { .. } => err(EPERM, "a client cannot join"),
            Request::Heartbeat => reply(Response::Ok),
            Request::Get {
                key,
                flags,
                params,
                caller,
                now,
            } => match node {
                Some(n) => self.get(n, key, flags, params, caller, now),
                None => err(EPERM, "a client cannot create"),
            },
            Request::Lookup { id } => match self.state.objects.get(&id) {
                Some(rec) => reply(Response::Record(rec.clone())),
                None => err(EINVAL, format!("no object with id {id}")),
            },
            Request::LookupKey { kind, key } => match self.find_key(kind, key) {
                Some(rec) => reply(Response::Record(rec.clone())),
                None => err(ENOENT, format!("no {kind} object with key {key}")),
            },
            Request::Remove { id, still_attached } => self.remove(id, still_attached),
            Request::Destroyed { id } => self.destroyed(id),
            Request::SetPerm { id, perm } => self.set_perm(id, perm),
            Request::Status => reply(Response::Status(self.status(now_ms))),
            Request::ReportLost { id, pages } => match node {
                Some(n) => self.report_lost(n, id, pages),
                None => err(EPERM, "a client cannot report lost pages"),
            },
        };
        out.response = result.response;
        out.events.extend(result.events);
        out.writes.extend(result.writes);
        out
    }

    /// Mark down every up node silent for `down_after_ms` or longer.
    pub fn tick(&mut self, now_ms: u64) -> Outcome {
        let mut out = Outcome::default();
        for (&node, live) in self.live.iter_mut() {
            if live.up && now_ms.saturating_sub(live.last_seen_ms) >= self.config.down_after_ms {
                live.up = false;
                out.events.push(Event::NodeDown { node });
            }
        }
        out
    }

    /// Members and objects; an object is available while its home is up.
    pub fn status(&self, now_ms: u64) -> ClusterStatus {
        ClusterStatus {
            cluster: self.config.cluster.clone(),
            members: self.members(now_ms),
            objects: self
                .state
                .objects
                .values()
                .map(|rec| ObjectStatus {
                    record: rec.clone(),
                    available: self.is_up(rec.home),
                })
                .collect(),
            lost: self
                .state
                .objects
                .values()
                .filter_map(|rec| self.lost_pages(rec))
                .collect(),
        }
    }

    /// Every node ever joined, by id. `last_seen_ms` is `u64::MAX` for a
    /// node not heard from since the registry started.
    /// A node's report of the lost pages of a segment.
    fn report_lost(&mut self, node: NodeId, id: ObjectId, pages: Vec<(u64, u64)>) -> Outcome {
        match self.state.objects.get(&id) {
            Some(rec) if rec.kind == Kind::Shm => {
                self.lost.entry(id).or_default().insert(node, pages);
                reply(Response::Ok)
            }
            _ => err(EINVAL, format!("no segment with id {id}")),
        }
    }

    /// The lost pages of a segment: its live home's report; once its home
    /// is down, the pages no surviving reporter holds (every page if none
    /// reported: no survivor holds any).
    fn lost_pages(&self, rec: &ObjectRecord) -> Option<LostPages> {
        let Params::Shm { size, .. } = rec.params else {
            return None;
        };
        let reports = self.lost.get(&rec.id);
        let home_down = !self.is_up(rec.home);
        let ranges = if home_down {
            let mut all = vec![(0, size.div_ceil(4096).saturating_sub(1))];
            for (_, r) in reports
                .into_iter()
                .flatten()
                .filter(|(n, _)| **n != rec.home && self.is_up(**n))
            {
                all = intersect(&all, r);
            }
            all
        } else {
            reports?.get(&rec.home)?.clone()
        };
        let count = ranges.iter().map(|&(a, b)| b - a + 1).sum();
        (count > 0).then_some(LostPages {
            id: rec.id,
            count,
            ranges,
            home_down,
        })
    }

    fn members(&self, now_ms: u64) -> Vec<Member> {
        self.names
            .keys()
            .filter_map(|&id| self.member(id, now_ms))
            .collect()
    }

    fn member(&self, id: NodeId, now_ms: u64) -> Option<Member> {
        let name = self.names.get(&id)?;
        let entry = self.state.nodes.get(name)?;
        let live = self.live.get(&id);
        Some(Member {
            node: id,
            name: entry.name.clone(),
            listen: entry.listen.clone(),
            transport: entry.transport.clone(),
            up: live.is_some_and(|l| l.up),
            last_seen_ms: live.map_or(u64::MAX, |l| now_ms.saturating_sub(l.last_seen_ms)),
        })
    }

    fn meta(&self) -> StoreOp {
        StoreOp::PutMeta {
            next_id: self.state.next_id,
            next_node: self.state.next_node,
        }
    }

    fn find_key(&self, kind: Kind, key: Key) -> Option<&ObjectRecord> {
        if key == IPC_PRIVATE {
            return None;
        }
        let id = self.by_key.get(&(kind, key))?;
        self.state.objects.get(id)
    }

    /// `ipcget`: find or create.
    fn get(
        &mut self,
        node: NodeId,
        key: Key,
        flags: i32,
        params: Params,
        caller: Caller,
        now: i64,
    ) -> Outcome {
        let kind = params.kind();
        // ksys_semget checks nsems before looking at the key.
        if let Params::Sem { nsems } = params
            && nsems > SEMMSL
        {
            return err(EINVAL, format!("nsems {nsems} exceeds SEMMSL {SEMMSL}"));
        }
        if key != IPC_PRIVATE {
            if let Some(rec) = self.find_key(kind, key) {
                if flags & IPC_CREAT != 0 && flags & IPC_EXCL != 0 {
                    return err(EEXIST, format!("{kind} key {key} exists (id {})", rec.id));
                }
                match (params, rec.params) {
                    (Params::Shm { size, .. }, Params::Shm { size: segsz, .. }) if size > segsz => {
                        return err(
                            EINVAL,
                            format!("size {size} exceeds the segment's {segsz} bytes"),
                        );
                    }
                    (Params::Sem { nsems, .. }, Params::Sem { nsems: have }) if nsems > have => {
                        return err(
                            EINVAL,
                            format!("nsems {nsems} exceeds the set's {have} semaphores"),
                        );
                    }
                    _ => {}
                }
                if !ipcperms(&rec.perm, &caller, flags) {
                    return err(
                        EACCES,
                        format!(
                            "uid {} gid {} may not access {kind} {} (mode {:o})",
                            caller.uid,
                            caller.gid,
                            rec.id,
                            rec.perm.mode & 0o777
                        ),
                    );
                }
                return reply(Response::Record(rec.clone()));
            }
            if flags & IPC_CREAT == 0 {
                return err(ENOENT, format!("no {kind} object with key {key}"));
            }
        }
        self.create(node, key, flags, params, caller, now)
    }

    /// `newseg`/`newque`/`newary`.
    fn create(
        &mut self,
        node: NodeId,
        key: Key,
        flags: i32,
        params: Params,
        caller: Caller,
        now: i64,
    ) -> Outcome {
        let kind = params.kind();
        match params {
            Params::Shm { size, unit, .. } => {
                if !(SHMMIN..=SHMMAX).contains(&size) {
                    return err(EINVAL, format!("segment size {size} out of range"));
                }
                if unit < MIN_UNIT || !unit.is_power_of_two() {
                    return err(
                        EINVAL,
                        format!("coherence unit {unit} is not a power of two >= {MIN_UNIT}"),
                    );
                }
            }
            Params::Sem { nsems } => {
                if nsems == 0 {
                    return err(EINVAL, "a semaphore set needs at least one semaphore");
                }
            }
            Params::Msg { qbytes, msgmax } => {
                if msgmax == 0 || msgmax > dipc_wire::MAX_MSGMAX {
                    return err(
                        EINVAL,
                        format!(
                            "msgmax {msgmax} out of range (1 to {})",
                            dipc_wire::MAX_MSGMAX
                        ),
                    );
                }
                if qbytes > dipc_wire::MAX_MSGMNB {
                    return err(EINVAL, format!("msg_qbytes {qbytes} out of range"));
                }
            }
        }
        if self.counts.get(&kind).copied().unwrap_or(0) >= MAX_OBJECTS_PER_KIND {
            return err(
                ENOSPC,
                format!("{MAX_OBJECTS_PER_KIND} {kind} objects exist already"),
            );
        }
        let n = self.state.next_id;
        if n >= MAX_ID_COUNTER {
            return err(ENOSPC, "the cluster has used up its object ids");
        }
        self.state.next_id = n + 1;
        let rec = ObjectRecord {
            key,
            id: DIPC_ID_BIT | n as i32,
            kind,
            home: node,
            params,
            perm: Perm {
                uid: caller.uid,
                gid: caller.gid,
                cuid: caller.uid,
                cgid: caller.gid,
                mode: (flags & 0o777) as u32,
            },
            ctime: now,
            removed: false,
        };
        let mut out = reply(Response::Record(rec.clone()));
        out.writes.push(self.meta());
        self.insert(rec, &mut out);
        out
    }

    fn remove(&mut self, id: ObjectId, still_attached: bool) -> Outcome {
        let Some(rec) = self.state.objects.get(&id) else {
            return err(EINVAL, format!("no object with id {id}"));
        };
        let mut out = reply(Response::Ok);
        if rec.kind == Kind::Shm && still_attached {
            if !rec.removed {
                let mut rec = rec.clone();
                self.unindex_key(&rec);
                rec.removed = true;
                out.events.push(Event::ObjectGone {
                    id,
                    key: rec.key,
                    kind: rec.kind,
                });
                out.writes.push(StoreOp::PutObject(rec.clone()));
                self.state.objects.insert(id, rec);
            }
        } else {
            self.delete(id, &mut out);
        }
        out
    }

    fn destroyed(&mut self, id: ObjectId) -> Outcome {
        self.lost.remove(&id);
        match self.state.objects.get(&id) {
            // Already gone: the home may repeat itself after a reconnect.
            None => reply(Response::Ok),
            Some(rec) if !rec.removed => err(
                EINVAL,
                format!("object {id} was not removed; send Remove first"),
            ),
            Some(_) => {
                let mut out = reply(Response::Ok);
                self.delete(id, &mut out);
                out
            }
        }
    }

    /// `IPC_SET`: owner uid/gid and the permission bits.
    fn set_perm(&mut self, id: ObjectId, perm: Perm) -> Outcome {
        let Some(rec) = self.state.objects.get_mut(&id) else {
            return err(EINVAL, format!("no object with id {id}"));
        };
        let mut out = reply(Response::Ok);
        let mode = (rec.perm.mode & !0o777) | (perm.mode & 0o777);
        if rec.perm.uid != perm.uid || rec.perm.gid != perm.gid || rec.perm.mode != mode {
            rec.perm.uid = perm.uid;
            rec.perm.gid = perm.gid;
            rec.perm.mode = mode;
            out.writes.push(StoreOp::PutObject(rec.clone()));
        }
        out
    }

    /// Add a record to the indexes only (used when loading a snapshot). A
    /// key already held by another live record is not indexed again.
    fn index(&mut self, rec: ObjectRecord) {
        if !rec.removed && rec.key != IPC_PRIVATE {
            self.by_key.entry((rec.kind, rec.key)).or_insert(rec.id);
        }
        *self.counts.entry(rec.kind).or_insert(0) += 1;
        self.state.objects.insert(rec.id, rec);
    }

    /// Add a new record and persist it.
    fn insert(&mut self, rec: ObjectRecord, out: &mut Outcome) {
        out.writes.push(StoreOp::PutObject(rec.clone()));
        self.index(rec);
    }

    fn unindex_key(&mut self, rec: &ObjectRecord) {
        if self.by_key.get(&(rec.kind, rec.key)) == Some(&rec.id) {
            self.by_key.remove(&(rec.kind, rec.key));
        }
    }

    /// Delete a record, persist that and tell the nodes.
    fn delete(&mut self, id: ObjectId, out: &mut Outcome) {
        let Some(rec) = self.state.objects.remove(&id) else {
            return;
        };
        self.unindex_key(&rec);
        if let Some(c) = self.counts.get_mut(&rec.kind) {
            *c = c.saturating_sub(1);
        }
        out.writes.push(StoreOp::DeleteObject(id));
        out.events.push(Event::ObjectGone {
            id,
            key: rec.key,
            kind: rec.kind,
        });
    }

    /// Check the internal invariants (for tests): indexes agree with the
    /// records, at most one live object per (kind, key), ids in range and
    /// below the counter.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut live_keys: HashMap<(Kind, Key), ObjectId> = HashMap::new();
        let mut counts: HashMap<Kind, usize> = HashMap::new();
        for (&id, rec) in &self.state.objects {
            if rec.id != id {
                return Err(format!("record {} stored under id {id}", rec.id));
            }
            if !dipc_wire::is_dipc_id(id) || id_number(id) >= self.state.next_id {
                return Err(format!(
                    "id {id:#x} out of range (next {})",
                    self.state.next_id
                ));
            }
            if rec.params.kind() != rec.kind {
                return Err(format!(
                    "record {id} has kind {} but other params",
                    rec.kind
                ));
            }
            *counts.entry(rec.kind).or_insert(0) += 1;
            if !rec.removed
                && rec.key != IPC_PRIVATE
                && let Some(other) = live_keys.insert((rec.kind, rec.key), id)
            {
                return Err(format!(
                    "{} key {} held by {other} and {id}",
                    rec.kind, rec.key
                ));
            }
        }
        let indexed: HashMap<(Kind, Key), ObjectId> =
            self.by_key.iter().map(|(k, v)| (*k, *v)).collect();
        if indexed != live_keys {
            return Err(format!(
                "key index {indexed:?} differs from records {live_keys:?}"
            ));
        }
        for kind in [Kind::Shm, Kind::Msg, Kind::Sem] {
            let want = counts.get(&kind).copied().unwrap_or(0);
            let have = self.counts.get(&kind).copied().unwrap_or(0);
            if want != have {
                return Err(format!("{kind} count {have}, records {want}"));
            }
        }
        let mut ids = BTreeSet::new();
        for entry in self.state.nodes.values() {
            if !ids.insert(entry.id) || entry.id >= self.state.next_node {
                return Err(format!("node id {} duplicated or out of range", entry.id));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
