//! Peers for the storage suite, built only with `--features peers`: PoloDB (an embedded
//! MongoDB-like database on RocksDB; it pulls in RocksDB and needs Debian's libclang-dev) and
//! SQLite (rusqlite, bundled; documents as JSON text).

use crate::storage::{SnapshotReader, System, Worker, document};
use bson::Document;
use polodb_core::{CollectionT, bson as polo_bson};
use rusqlite::{Connection, OptionalExtension, params};

fn to_polo(document: &Document) -> polo_bson::Document {
    let bytes = bson::serialize_to_vec(document).expect("documents serialize");
    polo_bson::from_slice(&bytes).expect("the same BSON in bson 2")
}

pub struct PoloDb {
    db: polodb_core::Database,
    _dir: tempfile::TempDir,
}

impl PoloDb {
    pub fn open() -> anyhow::Result<PoloDb> {
        let dir = tempfile::tempdir()?;
        let db = polodb_core::Database::open_path(dir.path().join("polo"))?;
        db.create_collection("docs")?;
        Ok(PoloDb { db, _dir: dir })
    }
}

struct PoloWorker<'a> {
    docs: polodb_core::Collection<polo_bson::Document>,
    _system: &'a PoloDb,
}

impl Worker for PoloWorker<'_> {
    fn insert(&mut self, _id: i64, document: &Document, _journaled: bool) -> anyhow::Result<()> {
        self.docs.insert_one(to_polo(document))?;
        Ok(())
    }

    fn get(&mut self, id: i64) -> anyhow::Result<bool> {
        Ok(self.docs.find_one(polo_bson::doc! {"_id": id})?.is_some())
    }

    fn scan(&mut self, from: i64, count: usize) -> anyhow::Result<usize> {
        let cursor = self
            .docs
            .find(polo_bson::doc! {"_id": {"$gte": from}})
            .limit(count as u64)
            .run()?;
        let mut seen = 0;
        for document in cursor {
            document?;
            seen += 1;
        }
        Ok(seen)
    }

    fn increment(&mut self, id: i64) -> anyhow::Result<()> {
        self.docs.update_one(
            polo_bson::doc! {"_id": id},
            polo_bson::doc! {"$inc": {"counter": 1i64}},
        )?;
        Ok(())
    }

    fn replace(&mut self, id: i64, document: &Document) -> anyhow::Result<()> {
        let mut fields = to_polo(document);
        fields.remove("_id");
        self.docs.update_one(
            polo_bson::doc! {"_id": id},
            polo_bson::doc! {"$set": fields},
        )?;
        Ok(())
    }
}

struct PoloSnapshotReader {
    transaction: polodb_core::Transaction,
}

impl SnapshotReader for PoloSnapshotReader {
    fn get(&mut self, id: i64) -> anyhow::Result<bool> {
        let docs = self.transaction.collection::<polo_bson::Document>("docs");
        Ok(docs.find_one(polo_bson::doc! {"_id": id})?.is_some())
    }
}

impl System for PoloDb {
    fn name(&self) -> &'static str {
        "polodb"
    }

    fn worker(&self) -> anyhow::Result<Box<dyn Worker + '_>> {
        Ok(Box::new(PoloWorker {
            docs: self.db.collection("docs"),
            _system: self,
        }))
    }

    fn snapshot_reader(&self) -> anyhow::Result<Box<dyn SnapshotReader + '_>> {
        Ok(Box::new(PoloSnapshotReader {
            transaction: self.db.start_transaction()?,
        }))
    }

    /// PoloDB has no per-commit fsync option: it is measured for j: false only.
    fn has_journaled_commits(&self) -> bool {
        false
    }
}

pub struct Sqlite {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Sqlite {
    pub fn open() -> anyhow::Result<Sqlite> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("docs.sqlite");
        let connection = Connection::open(&path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection
            .execute_batch("CREATE TABLE docs (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")?;
        Ok(Sqlite { path, _dir: dir })
    }

    fn connect(&self, synchronous: &str) -> anyhow::Result<Connection> {
        let connection = Connection::open(&self.path)?;
        connection.busy_timeout(std::time::Duration::from_secs(60))?;
        connection.pragma_update(None, "synchronous", synchronous)?;
        Ok(connection)
    }
}

fn json(document: &Document) -> String {
    bson::Bson::Document(document.clone())
        .into_relaxed_extjson()
        .to_string()
}

struct SqliteWorker {
    fast: Connection,
    durable: Connection,
}

impl Worker for SqliteWorker {
    fn insert(&mut self, id: i64, document: &Document, journaled: bool) -> anyhow::Result<()> {
        let connection = if journaled { &self.durable } else { &self.fast };
        connection
            .prepare_cached("INSERT INTO docs (id, body) VALUES (?1, ?2)")?
            .execute(params![id, json(document)])?;
        Ok(())
    }

    fn get(&mut self, id: i64) -> anyhow::Result<bool> {
        let body: Option<String> = self
            .fast
            .prepare_cached("SELECT body FROM docs WHERE id = ?1")?
            .query_row(params![id], |row| row.get(0))
            .optional()?;
        Ok(body.is_some())
    }

    fn scan(&mut self, from: i64, count: usize) -> anyhow::Result<usize> {
        let mut statement = self
            .fast
            .prepare_cached("SELECT body FROM docs WHERE id >= ?1 ORDER BY id LIMIT ?2")?;
        let mut rows = statement.query(params![from, count as i64])?;
        let mut seen = 0;
        while let Some(row) = rows.next()? {
            let body: String = row.get(0)?;
            std::hint::black_box(body);
            seen += 1;
        }
        Ok(seen)
    }

    fn increment(&mut self, id: i64) -> anyhow::Result<()> {
        self.fast
            .prepare_cached(
                "UPDATE docs SET body = json_set(body, '$.counter', coalesce(json_extract(body, '$.counter'), 0) + 1) WHERE id = ?1",
            )?
            .execute(params![id])?;
        Ok(())
    }

    fn replace(&mut self, id: i64, document: &Document) -> anyhow::Result<()> {
        self.fast
            .prepare_cached("UPDATE docs SET body = ?2 WHERE id = ?1")?
            .execute(params![id, json(document)])?;
        Ok(())
    }
}

struct SqliteSnapshotReader {
    connection: Connection,
}

impl SnapshotReader for SqliteSnapshotReader {
    fn get(&mut self, id: i64) -> anyhow::Result<bool> {
        let body: Option<String> = self
            .connection
            .prepare_cached("SELECT body FROM docs WHERE id = ?1")?
            .query_row(params![id], |row| row.get(0))
            .optional()?;
        Ok(body.is_some())
    }
}

impl System for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    /// Copies the write-ahead log into the database and empties it.
    fn settle(&self) -> anyhow::Result<()> {
        self.connect("FULL")?
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    fn worker(&self) -> anyhow::Result<Box<dyn Worker + '_>> {
        Ok(Box::new(SqliteWorker {
            fast: self.connect("OFF")?,
            durable: self.connect("FULL")?,
        }))
    }

    fn snapshot_reader(&self) -> anyhow::Result<Box<dyn SnapshotReader + '_>> {
        let connection = self.connect("OFF")?;
        // A read transaction starts its snapshot at its first read (a cheap one: 64 readers
        // open theirs at once).
        connection.execute_batch("BEGIN")?;
        let _: Option<i64> = connection
            .query_row("SELECT id FROM docs LIMIT 1", [], |row| row.get(0))
            .optional()?;
        let _ = document(0);
        Ok(Box::new(SqliteSnapshotReader { connection }))
    }
}
