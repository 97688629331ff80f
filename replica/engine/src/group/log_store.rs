//! The Raft log and vote of one replica (openraft `RaftLogStorage`).
//!
//! Entries are always held in memory for reads. With a data directory they are also written
//! through to an embedded redb database by a writer thread before openraft is told they are
//! flushed ("persist before ack"). The writer takes every write queued since its last commit
//! into one transaction, hence one fsync (group commit): `append` only queues and returns, so
//! Raft keeps accepting and replicating entries while the disk syncs, and throughput grows
//! with load instead of being capped at one append per fsync. Writes reach the disk in the
//! order they were issued; votes, truncations and purges wait until they are durable.
//! On start the database is read back, so a killed replica recovers its vote and log.
//!
//! An append must leave no hole: its entries are consecutive and the first is at most one past
//! the last entry (or the purge point). Anything else is refused with an error before a byte is
//! kept. openraft checks this only in debug builds; a foreign leader's AppendEntries (a reused
//! address, `../shared/repro/rolling-restart-oracle/`) once appended another group's log after
//! a gap, the committed index followed it, and the replica could never start again.

// openraft's `StorageError` (large) is the error type of its storage traits; constructors
// return it too so errors reach openraft unchanged.
#![allow(clippy::result_large_err)]

use crate::group::types::{Entry, LogId, StorageError, TypeConfig};
use crate::ids::NodeId;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, RaftLogId, RaftLogReader, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";

#[derive(Default)]
struct Inner {
    entries: BTreeMap<u64, Entry>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

/// An append that does not continue the log.
#[derive(Debug, thiserror::Error)]
#[error("refused append: entry {got} does not follow entry {after}")]
struct Gap {
    /// The index it should follow.
    after: u64,
    /// Its index.
    got: u64,
}

impl Inner {
    /// Checks that `entries` are consecutive and that the first leaves no hole after the last
    /// entry held (or the purge point): openraft's contract ("there must not be a hole"). An empty log that never purged takes any start: openraft begins at
    /// 0, a snapshot install purges first, and its storage suite starts logs anywhere.
    fn check_continues(&self, entries: &[Entry]) -> Result<(), Gap> {
        let mut prev = self
            .entries
            .last_key_value()
            .map(|(k, _)| *k)
            .or(self.last_purged.map(|l| l.index));
        for (i, e) in entries.iter().enumerate() {
            let got = e.log_id.index;
            // The first entry may also overwrite held ones (openraft's contract only forbids
            // holes); the rest follow one another.
            let fits = |p: u64| if i == 0 { got <= p + 1 } else { got == p + 1 };
            if let Some(after) = prev.filter(|p| !fits(*p)) {
                return Err(Gap { after, got });
            }
            prev = Some(got);
        }
        Ok(())
    }
}

/// The log store of one replica; clones share the same log (a clone is the log reader).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    disk: Option<Arc<Writer>>,
}

/// Who to tell once a write is durable.
enum Done {
    /// openraft's append callback.
    Flushed(LogFlushed<TypeConfig>),
    /// A caller awaiting the write.
    Notify(tokio::sync::oneshot::Sender<Result<(), WriteFailed>>),
    /// Nobody (best-effort metadata).
    Nothing,
}

/// A group commit of the log writer failed; every write of the batch reports the same error.
#[derive(Clone, Debug, thiserror::Error)]
#[error("log write failed: {0}")]
struct WriteFailed(Arc<redb::Error>);

struct WriteReq {
    meta: Vec<(&'static str, Vec<u8>)>,
    puts: Vec<(u64, Vec<u8>)>,
    delete: Option<(u64, u64)>,
    done: Done,
}

/// The writer thread of a persistent log; dropping the last handle stops and joins it, so the
/// database file is closed when the store is gone.
struct Writer {
    tx: Option<std::sync::mpsc::Sender<WriteReq>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Writer {
    fn spawn(db: Database) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<WriteReq>();
        let thread = std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    let result = write_batch(&db, &batch).map_err(|e| WriteFailed(Arc::new(e)));
                    for req in batch {
                        match req.done {
                            Done::Flushed(cb) => {
                                cb.log_io_completed(result.clone().map_err(std::io::Error::other))
                            }
                            Done::Notify(tx) => {
                                let _ = tx.send(result.clone());
                            }
                            Done::Nothing => {}
                        }
                    }
                }
            })?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn queue(&self, req: WriteReq) -> Result<(), AnyError> {
        self.tx
            .as_ref()
            .ok_or_else(|| AnyError::error("log writer stopped"))?
            .send(req)
            .map_err(|_| AnyError::error("log writer stopped"))
    }
}

/// Applies queued writes in order in one durable transaction.
fn write_batch(db: &Database, batch: &[WriteReq]) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut log = txn.open_table(LOG)?;
        let mut m = txn.open_table(META)?;
        for req in batch {
            if let Some((from, to)) = req.delete {
                log.retain_in(from..=to, |_, _| false)?;
            }
            for (k, v) in &req.puts {
                log.insert(*k, v.as_slice())?;
            }
            for (k, v) in &req.meta {
                m.insert(*k, v.as_slice())?;
            }
        }
    }
    txn.commit()?;
    Ok(())
}

fn io_err(e: impl Into<redb::Error>) -> AnyError {
    AnyError::new(&e.into())
}

fn codec_err(e: postcard::Error) -> AnyError {
    AnyError::new(&e)
}

impl LogStore {
    /// A log kept in memory only (lost when the process stops).
    pub fn in_memory() -> Self {
        LogStore {
            inner: Arc::new(Mutex::new(Inner::default())),
            disk: None,
        }
    }

    /// A log persisted in `dir/raft-log.redb`, loading what an earlier run left there.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let read = |e: AnyError| StorageError::from(StorageIOError::read_logs(e));
        std::fs::create_dir_all(dir).map_err(|e| read(AnyError::new(&e)))?;
        let db = Database::create(dir.join("raft-log.redb")).map_err(|e| read(io_err(e)))?;
        // Make sure both tables exist so that reads never fail on a fresh database.
        let txn = db.begin_write().map_err(|e| read(io_err(e)))?;
        txn.open_table(LOG).map_err(|e| read(io_err(e)))?;
        txn.open_table(META).map_err(|e| read(io_err(e)))?;
        txn.commit().map_err(|e| read(io_err(e)))?;

        let mut inner = Inner::default();
        let txn = db.begin_read().map_err(|e| read(io_err(e)))?;
        let log = txn.open_table(LOG).map_err(|e| read(io_err(e)))?;
        for row in log.iter().map_err(|e| read(io_err(e)))? {
            let (k, v) = row.map_err(|e| read(io_err(e)))?;
            let entry: Entry = postcard::from_bytes(v.value()).map_err(|e| read(codec_err(e)))?;
            inner.entries.insert(k.value(), entry);
        }
        let meta = txn.open_table(META).map_err(|e| read(io_err(e)))?;
        let get = |key: &str| -> Result<Option<Vec<u8>>, StorageError> {
            Ok(meta
                .get(key)
                .map_err(|e| read(io_err(e)))?
                .map(|v| v.value().to_vec()))
        };
        if let Some(b) = get(VOTE)? {
            inner.vote = Some(postcard::from_bytes(&b).map_err(|e| read(codec_err(e)))?);
        }
        if let Some(b) = get(COMMITTED)? {
            inner.committed = postcard::from_bytes(&b).map_err(|e| read(codec_err(e)))?;
        }
        if let Some(b) = get(PURGED)? {
            inner.last_purged = postcard::from_bytes(&b).map_err(|e| read(codec_err(e)))?;
        }
        drop(meta);
        drop(txn);
        let writer = Writer::spawn(db).map_err(|e| read(AnyError::new(&e)))?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
            disk: Some(Arc::new(writer)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `meta` keys and log changes durably, in order after every earlier write, and
    /// waits until they are on disk.
    async fn persist(
        &self,
        meta: Vec<(&'static str, Vec<u8>)>,
        puts: Vec<(u64, Vec<u8>)>,
        delete: Option<(u64, u64)>,
    ) -> Result<(), AnyError> {
        let Some(writer) = &self.disk else {
            return Ok(());
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        writer.queue(WriteReq {
            meta,
            puts,
            delete,
            done: Done::Notify(tx),
        })?;
        rx.await
            .map_err(|_| AnyError::error("log writer stopped"))?
            .map_err(AnyError::error)
    }

    /// Number of entries currently held (after purges).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("openraft log types always serialise")
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .lock()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.lock();
        let last = inner
            .entries
            .last_key_value()
            .map(|(_, e)| *e.get_log_id())
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.persist(vec![(VOTE, encode(vote))], vec![], None)
            .await
            .map_err(|e| StorageError::from(StorageIOError::write_vote(e)))?;
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not awaited: the committed index only shortens replay after a restart; it becomes
        // durable with the writer's next commit.
        self.lock().committed = committed;
        if let Some(writer) = &self.disk {
            writer
                .queue(WriteReq {
                    meta: vec![(COMMITTED, encode(&committed))],
                    puts: vec![],
                    delete: None,
                    done: Done::Nothing,
                })
                .map_err(|e| StorageError::from(StorageIOError::write(e)))?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.lock()
            .check_continues(&entries)
            .map_err(|e| StorageError::from(StorageIOError::write_logs(AnyError::new(&e))))?;
        let puts: Vec<(u64, Vec<u8>)> = match &self.disk {
            Some(_) => entries
                .iter()
                .map(|e| (e.log_id.index, encode(e)))
                .collect(),
            None => Vec::new(),
        };
        {
            let mut inner = self.lock();
            for e in entries {
                inner.entries.insert(e.log_id.index, e);
            }
        }
        match &self.disk {
            None => callback.log_io_completed(Ok(())),
            Some(writer) => writer
                .queue(WriteReq {
                    meta: vec![],
                    puts,
                    delete: None,
                    done: Done::Flushed(callback),
                })
                .map_err(|e| StorageError::from(StorageIOError::write_logs(e)))?,
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let last = self.lock().entries.last_key_value().map(|(k, _)| *k);
        if let Some(last) = last.filter(|l| *l >= log_id.index) {
            self.persist(vec![], vec![], Some((log_id.index, last)))
                .await
                .map_err(|e| StorageError::from(StorageIOError::write_logs(e)))?;
        }
        self.lock().entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.persist(
            vec![(PURGED, encode(&Some(log_id)))],
            vec![],
            Some((0, log_id.index)),
        )
        .await
        .map_err(|e| StorageError::from(StorageIOError::write_logs(e)))?;
        let mut inner = self.lock();
        inner.last_purged = Some(log_id);
        let keep = inner.entries.split_off(&(log_id.index + 1));
        inner.entries = keep;
        Ok(())
    }
}
