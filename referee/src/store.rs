//! Persistence of the registry in redb.
//!
//! The store knows nothing of IPC semantics: it applies the registry's
//! [`StoreOp`]s, one `Outcome` per durable transaction, and on start reads
//! them back as a [`Snapshot`]. Since `Snapshot::apply` and `Store::apply`
//! interpret the ops the same way, a restarted referee resumes from exactly
//! the state it had acknowledged (the server persists before it answers).
//!
//! Layout of `registry.redb` (values are postcard, like the wire):
//!
//! * `objects`: object id (`i32`) -> `ObjectRecord`;
//! * `nodes`: node name -> `NodeEntry`;
//! * `meta`: `"format"` (this layout's version), `"next_id"`, `"next_node"`.
//!
//! redb is opened with its integrity check, so a damaged file is reported as
//! an error instead of trusted (a plain open may panic on such a file).

use std::path::{Path, PathBuf};

use dipc_wire::ObjectRecord;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::Error;
use crate::registry::{NodeEntry, Snapshot, StoreOp};

const OBJECTS: TableDefinition<i32, &[u8]> = TableDefinition::new("objects");
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
const META: TableDefinition<&str, u32> = TableDefinition::new("meta");

/// Version of the layout above (2: a segment's `Params` carry its
/// quantum and prefetch window; 3: a queue's carry its `msgmax`; an older
/// file is refused by name rather than misread).
const FORMAT: u32 = 3;
/// The file in the data directory.
pub const FILE_NAME: &str = "registry.redb";
/// redb's page cache; the registry is small.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The referee's persistent registry.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Open (or create) `dir/registry.redb`, creating `dir` if needed, and
    /// read what it holds.
    pub fn open(dir: &Path) -> Result<(Store, Snapshot), Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|source| Error::OpenStore {
                path: path.clone(),
                source: Box::new(source),
            })?;
        let store = Store { db, path };
        store.init()?;
        let snapshot = store.read()?;
        Ok((store, snapshot))
    }

    /// Where the database file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fail(&self, op: &'static str) -> impl FnOnce(redb::Error) -> Error + '_ {
        move |source| Error::Store {
            path: self.path.clone(),
            op,
            source: Box::new(source),
        }
    }

    fn corrupt(&self, table: &'static str, detail: String) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            table,
            detail,
        }
    }

    /// Create the tables and the format mark of a new file; refuse another
    /// format.
    fn init(&self) -> Result<(), Error> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| self.fail("begin write")(e.into()))?;
        {
            txn.open_table(OBJECTS)
                .map_err(|e| self.fail("open table objects")(e.into()))?;
            txn.open_table(NODES)
                .map_err(|e| self.fail("open table nodes")(e.into()))?;
            let mut meta = txn
                .open_table(META)
                .map_err(|e| self.fail("open table meta")(e.into()))?;
            let format = meta
                .get("format")
                .map_err(|e| self.fail("read format")(e.into()))?
                .map(|v| v.value());
            match format {
                None => {
                    meta.insert("format", FORMAT)
                        .map_err(|e| self.fail("write format")(e.into()))?;
                }
                Some(FORMAT) => {}
                Some(other) => {
                    return Err(self.corrupt(
                        "meta",
                        format!("format {other}, this referee reads format {FORMAT}"),
                    ));
                }
            }
        }
        txn.commit().map_err(|e| self.fail("commit")(e.into()))
    }

    /// Read everything into a snapshot.
    fn read(&self) -> Result<Snapshot, Error> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| self.fail("begin read")(e.into()))?;
        let mut snap = Snapshot::default();

        let objects = txn
            .open_table(OBJECTS)
            .map_err(|e| self.fail("open table objects")(e.into()))?;
        for row in objects
            .iter()
            .map_err(|e| self.fail("read objects")(e.into()))?
        {
            let (k, v) = row.map_err(|e| self.fail("read objects")(e.into()))?;
            let rec: ObjectRecord = dipc_wire::decode(v.value())
                .map_err(|e| self.corrupt("objects", format!("id {}: {e}", k.value())))?;
            if rec.id != k.value() {
                return Err(self.corrupt(
                    "objects",
                    format!("record {} stored under id {}", rec.id, k.value()),
                ));
            }
            snap.objects.insert(rec.id, rec);
        }

        let nodes = txn
            .open_table(NODES)
            .map_err(|e| self.fail("open table nodes")(e.into()))?;
        for row in nodes
            .iter()
            .map_err(|e| self.fail("read nodes")(e.into()))?
        {
            let (k, v) = row.map_err(|e| self.fail("read nodes")(e.into()))?;
            let entry: NodeEntry = dipc_wire::decode(v.value())
                .map_err(|e| self.corrupt("nodes", format!("name {:?}: {e}", k.value())))?;
            if entry.name != k.value() {
                return Err(self.corrupt(
                    "nodes",
                    format!("node {:?} stored under name {:?}", entry.name, k.value()),
                ));
            }
            snap.nodes.insert(entry.name.clone(), entry);
        }

        let meta = txn
            .open_table(META)
            .map_err(|e| self.fail("open table meta")(e.into()))?;
        let get = |name: &str| -> Result<Option<u32>, Error> {
            Ok(meta
                .get(name)
                .map_err(|e| self.fail("read meta")(e.into()))?
                .map(|v| v.value()))
        };
        if let Some(n) = get("next_id")? {
            snap.next_id = n;
        }
        if let Some(n) = get("next_node")? {
            snap.next_node = n;
        }
        Ok(snap)
    }

    /// Apply `ops` in one durable transaction (nothing to do when empty).
    pub fn apply(&mut self, ops: &[StoreOp]) -> Result<(), Error> {
        if ops.is_empty() {
            return Ok(());
        }
        let txn = self
            .db
            .begin_write()
            .map_err(|e| self.fail("begin write")(e.into()))?;
        {
            let mut objects = txn
                .open_table(OBJECTS)
                .map_err(|e| self.fail("open table objects")(e.into()))?;
            let mut nodes = txn
                .open_table(NODES)
                .map_err(|e| self.fail("open table nodes")(e.into()))?;
            let mut meta = txn
                .open_table(META)
                .map_err(|e| self.fail("open table meta")(e.into()))?;
            for op in ops {
                match op {
                    StoreOp::PutObject(rec) => {
                        let bytes = dipc_wire::encode(rec);
                        objects
                            .insert(rec.id, bytes.as_slice())
                            .map_err(|e| self.fail("write object")(e.into()))?;
                    }
                    StoreOp::DeleteObject(id) => {
                        objects
                            .remove(*id)
                            .map_err(|e| self.fail("delete object")(e.into()))?;
                    }
                    StoreOp::PutNode(entry) => {
                        let bytes = dipc_wire::encode(entry);
                        nodes
                            .insert(entry.name.as_str(), bytes.as_slice())
                            .map_err(|e| self.fail("write node")(e.into()))?;
                    }
                    StoreOp::PutMeta { next_id, next_node } => {
                        meta.insert("next_id", *next_id)
                            .map_err(|e| self.fail("write meta")(e.into()))?;
                        meta.insert("next_node", *next_node)
                            .map_err(|e| self.fail("write meta")(e.into()))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| self.fail("commit")(e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dipc_wire::{DIPC_ID_BIT, Kind, Params, Perm};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn record(n: i32, key: i32) -> ObjectRecord {
        ObjectRecord {
            key,
            id: DIPC_ID_BIT | n,
            kind: Kind::Sem,
            home: 2,
            params: Params::Sem { nsems: 3 },
            perm: Perm {
                uid: 1000,
                gid: 100,
                cuid: 1000,
                cgid: 100,
                mode: 0o640,
            },
            ctime: 1_700_000_000,
            removed: false,
        }
    }

    fn node(id: u32, name: &str) -> NodeEntry {
        NodeEntry {
            id,
            name: name.into(),
            listen: format!("127.0.0.1:{}", 7000 + id),
            transport: "tcp".into(),
        }
    }

    #[test]
    fn empty_store_gives_default_snapshot() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (_store, snap) = Store::open(&dir.path().join("sub/dir"))?;
        assert_eq!(snap, Snapshot::default());
        assert!(dir.path().join("sub/dir").join(FILE_NAME).exists());
        Ok(())
    }

    #[test]
    fn round_trip_survives_reopen() -> TestResult {
        let dir = tempfile::tempdir()?;
        let ops = vec![
            StoreOp::PutNode(node(1, "a")),
            StoreOp::PutNode(node(2, "b")),
            StoreOp::PutObject(record(1, 5)),
            StoreOp::PutObject(record(2, 6)),
            StoreOp::PutObject(record(3, 7)),
            StoreOp::DeleteObject(DIPC_ID_BIT | 2),
            StoreOp::PutNode(NodeEntry {
                listen: "10.0.0.1:1".into(),
                ..node(1, "a")
            }),
            StoreOp::PutMeta {
                next_id: 4,
                next_node: 3,
            },
        ];
        let mut want = Snapshot::default();
        want.apply(&ops);
        {
            let (mut store, snap) = Store::open(dir.path())?;
            assert_eq!(snap, Snapshot::default());
            store.apply(&ops[..3])?;
            store.apply(&ops[3..])?;
            store.apply(&[])?;
        }
        let (_store, snap) = Store::open(dir.path())?;
        assert_eq!(snap, want);
        assert_eq!(snap.objects.len(), 2);
        assert_eq!(snap.nodes["a"].listen, "10.0.0.1:1");
        assert_eq!((snap.next_id, snap.next_node), (4, 3));
        Ok(())
    }

    #[test]
    fn second_open_of_same_file_is_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (_store, _) = Store::open(dir.path())?;
        match Store::open(dir.path()) {
            Err(Error::OpenStore { path, .. }) => assert!(path.ends_with(FILE_NAME)),
            other => panic!("expected OpenStore error, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn garbage_file_is_an_error_not_a_panic() -> TestResult {
        let dir = tempfile::tempdir()?;
        let garbage: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 + 13) as u8).collect();
        std::fs::write(dir.path().join(FILE_NAME), garbage)?;
        let e = Store::open(dir.path()).expect_err("garbage must not open");
        assert!(matches!(e, Error::OpenStore { .. }), "{e:?}");
        assert!(e.to_string().contains(FILE_NAME), "{e}");
        Ok(())
    }

    #[test]
    fn damaged_file_is_an_error_not_a_panic() -> TestResult {
        let dir = tempfile::tempdir()?;
        {
            let (mut store, _) = Store::open(dir.path())?;
            let ops: Vec<StoreOp> = (1..200).map(|n| StoreOp::PutObject(record(n, n))).collect();
            store.apply(&ops)?;
        }
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path)?;
        // Flip bytes past the header, where the tables' pages are.
        let len = bytes.len();
        for b in &mut bytes[len / 4..] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, &bytes)?;
        let e = Store::open(dir.path()).expect_err("a damaged file must not open");
        assert!(
            matches!(
                e,
                Error::OpenStore { .. } | Error::Store { .. } | Error::Corrupt { .. }
            ),
            "{e:?}"
        );
        Ok(())
    }

    #[test]
    fn data_dir_that_is_a_file_is_a_clear_error() -> TestResult {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x")?;
        let e = Store::open(&file).expect_err("a file is not a data directory");
        assert!(matches!(e, Error::CreateDir { .. }), "{e:?}");
        assert!(e.to_string().contains("not-a-dir"), "{e}");
        Ok(())
    }

    #[test]
    fn bad_entry_is_reported_as_corrupt() -> TestResult {
        let dir = tempfile::tempdir()?;
        {
            let (store, _) = Store::open(dir.path())?;
            let txn = store
                .db
                .begin_write()
                .map_err(|e| store.fail("t")(e.into()))?;
            {
                let mut t = txn
                    .open_table(OBJECTS)
                    .map_err(|e| store.fail("t")(e.into()))?;
                t.insert(DIPC_ID_BIT | 9, [0xffu8, 0xff, 0xff].as_slice())
                    .map_err(|e| store.fail("t")(e.into()))?;
            }
            txn.commit().map_err(|e| store.fail("t")(e.into()))?;
        }
        let e = Store::open(dir.path()).expect_err("garbage record must be refused");
        assert!(
            matches!(
                e,
                Error::Corrupt {
                    table: "objects",
                    ..
                }
            ),
            "{e:?}"
        );
        Ok(())
    }
}
