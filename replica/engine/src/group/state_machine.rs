//! The state machine of one replica (openraft `RaftStateMachine`): applies committed entries to
//! the [`GroupState`], builds and installs snapshots.
//!
//! Ordering contract: entries are applied strictly in log order on openraft's state-machine
//! task; waiting clients are woken and runtime events are emitted only *after* the state that
//! caused them was changed, so a reader never sees an event before the state behind it.
//! Durability: with a data directory every snapshot is written to `snapshot.bin` (write to a
//! temporary file, fsync, rename) before it is reported built or installed; on start the state
//! is restored from it and openraft replays the log after it.
//!
//! openraft builds snapshots on a task of its own, concurrently with installing one sent by
//! the leader. Both go through [`Current::keep`]: one at a time, and a snapshot becomes the
//! current one (file and memory) only if it is newer than the current one, so a build that
//! finishes late never replaces a newer installed snapshot after the log was purged past it.

// openraft's `StorageError` (large) is the error type of its storage traits; constructors
// return it too so errors reach openraft unchanged.
#![allow(clippy::result_large_err)]

use crate::group::state::{Effects, GroupState};
use crate::group::types::{Entry, LogId, StorageError, TypeConfig};
use crate::ids::{GroupId, MsgId, NodeId};
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, EntryPayload, RaftSnapshotBuilder, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, oneshot};

use super::types::Response;

/// Something the runtime of a replica should react to, emitted after the state changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupEvent {
    /// A multi-group message got its local timestamp in this group.
    Assigned(MsgId),
    /// A message was delivered.
    Delivered(MsgId),
    /// New channel messages wait for transmission to this group.
    ChannelDirty(GroupId),
}

/// The answer to a delivered message: its final timestamp and the application's reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Final timestamp of the message (0 for a read answered off the log).
    pub ts: u64,
    /// The application's reply.
    pub reply: Vec<u8>,
}

type WaiterMap = HashMap<MsgId, Vec<oneshot::Sender<Completion>>>;

/// Clients waiting for the reply to a message at this replica.
#[derive(Default)]
pub(crate) struct Waiters {
    map: Mutex<WaiterMap>,
}

impl Waiters {
    /// Registers interest in the reply to `id`. Register while holding the state lock, after
    /// seeing the message not answered yet.
    pub(crate) fn register(&self, id: MsgId) -> oneshot::Receiver<Completion> {
        let (tx, rx) = oneshot::channel();
        self.lock().entry(id).or_default().push(tx);
        rx
    }

    fn notify(&self, id: MsgId, ts: u64, reply: Vec<u8>) {
        if let Some(txs) = self.lock().remove(&id) {
            for tx in txs {
                let _ = tx.send(Completion {
                    ts,
                    reply: reply.clone(),
                });
            }
        }
    }

    /// Forgets waiters whose clients went away.
    pub(crate) fn prune(&self) {
        self.lock().retain(|_, v| {
            v.retain(|tx| !tx.is_closed());
            !v.is_empty()
        });
    }

    fn lock(&self) -> MutexGuard<'_, WaiterMap> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the state machine shares with the rest of the replica runtime.
pub struct Shared {
    state: Mutex<GroupState>,
    /// Clients waiting for deliveries.
    pub(crate) waiters: Waiters,
    events: mpsc::UnboundedSender<GroupEvent>,
    /// Snapshots received from a leader and installed.
    installs: SnapshotInstalls,
}

/// What the snapshots a replica installed carried (for tests and metrics).
#[derive(Debug, Default)]
pub struct SnapshotInstalls {
    /// Snapshots installed.
    pub count: std::sync::atomic::AtomicU64,
    /// Of those, how many carried unfinished multicast or channel work: messages pending
    /// (tentative, or final behind a tentative one) or channel messages not acknowledged.
    pub with_pending: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// Wraps the state; events go to `events`.
    pub fn new(state: GroupState, events: mpsc::UnboundedSender<GroupEvent>) -> Arc<Self> {
        Arc::new(Shared {
            state: Mutex::new(state),
            waiters: Waiters::default(),
            events,
            installs: SnapshotInstalls::default(),
        })
    }

    /// What the snapshots this replica installed carried.
    pub fn installs(&self) -> &SnapshotInstalls {
        &self.installs
    }

    /// Locks the replicated state (for reads by the runtime; only `apply` writes it).
    pub fn state(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// The openraft state machine of one replica.
pub struct StateMachineStore {
    shared: Arc<Shared>,
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, BasicNode>,
    current: Arc<Current>,
    dir: Option<PathBuf>,
    built: u64,
}

const SNAPSHOT_FILE: &str = "snapshot.bin";

/// The current snapshot of a replica, shared by the state machine and its snapshot builders.
#[derive(Default)]
struct Current {
    snapshot: Mutex<Option<StoredSnapshot>>,
    /// Held while a snapshot is judged and written: builds and installs one at a time.
    writing: Mutex<()>,
}

impl Current {
    fn lock(&self) -> MutexGuard<'_, Option<StoredSnapshot>> {
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `snap` the current snapshot (written into `dir` first, when given) unless the
    /// current one is as new or newer; returns whether it did. Blocking: call it off the
    /// async runtime.
    fn keep(&self, snap: &StoredSnapshot, dir: Option<&Path>) -> std::io::Result<bool> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let newer = self
            .lock()
            .as_ref()
            .is_none_or(|c| snap.meta.last_log_id > c.meta.last_log_id);
        if !newer {
            return Ok(false);
        }
        if let Some(dir) = dir {
            write_snapshot_file(dir, snap)?;
        }
        *self.lock() = Some(snap.clone());
        Ok(true)
    }
}

fn write_snapshot_file(dir: &Path, snap: &StoredSnapshot) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("snapshot.bin.tmp");
    let bytes = postcard::to_allocvec(snap).map_err(std::io::Error::other)?;
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

impl StateMachineStore {
    /// A state machine over `shared`; with `dir`, restores the last snapshot written there.
    pub fn open(shared: Arc<Shared>, dir: Option<PathBuf>) -> Result<Self, StorageError> {
        let mut sm = StateMachineStore {
            shared,
            last_applied: None,
            membership: StoredMembership::default(),
            current: Arc::new(Current::default()),
            dir,
            built: 0,
        };
        if let Some(dir) = &sm.dir {
            let path = dir.join(SNAPSHOT_FILE);
            if path.exists() {
                let read = |e: AnyError| StorageError::from(StorageIOError::read_snapshot(None, e));
                let bytes = std::fs::read(&path).map_err(|e| read(AnyError::new(&e)))?;
                let snap: StoredSnapshot =
                    postcard::from_bytes(&bytes).map_err(|e| read(AnyError::new(&e)))?;
                sm.shared
                    .state()
                    .restore(&snap.data)
                    .map_err(|e| read(AnyError::new(&e)))?;
                sm.last_applied = snap.meta.last_log_id;
                sm.membership = snap.meta.last_membership.clone();
                *sm.current_lock() = Some(snap);
            }
        }
        Ok(sm)
    }

    fn current_lock(&self) -> MutexGuard<'_, Option<StoredSnapshot>> {
        self.current.lock()
    }
}

/// Builds a snapshot from state serialised when the builder was taken (so it matches
/// `last_applied` exactly, however far apply has moved on since).
pub struct SnapshotBuilder {
    snap: StoredSnapshot,
    current: Arc<Current>,
    dir: Option<PathBuf>,
}

/// [`Current::keep`] on a blocking thread.
async fn keep(
    current: &Arc<Current>,
    snap: &StoredSnapshot,
    dir: Option<PathBuf>,
) -> Result<bool, AnyError> {
    let (current, snap) = (current.clone(), snap.clone());
    tokio::task::spawn_blocking(move || current.keep(&snap, dir.as_deref()))
        .await
        .map_err(|e| AnyError::new(&e))?
        .map_err(|e| AnyError::new(&e))
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let kept = keep(&self.current, &self.snap, self.dir.clone())
            .await
            .map_err(|e| {
                StorageError::from(StorageIOError::write_snapshot(
                    Some(self.snap.meta.signature()),
                    e,
                ))
            })?;
        if !kept {
            tracing::debug!(
                snapshot = %self.snap.meta.snapshot_id,
                "built snapshot is not newer than the current one; kept the current one"
            );
        }
        Ok(Snapshot {
            meta: self.snap.meta.clone(),
            snapshot: Box::new(Cursor::new(self.snap.data.clone())),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, BasicNode>), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut fx = Effects::default();
        let mut responses = Vec::new();
        {
            let mut state = self.shared.state();
            for entry in entries {
                self.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(req) => {
                        state.advance_time(req.at_ms);
                        for op in req.ops {
                            state.apply(op, &mut fx);
                        }
                    }
                    EntryPayload::Membership(m) => {
                        self.membership = StoredMembership::new(Some(entry.log_id), m);
                    }
                }
                responses.push(Response);
            }
        }
        for (id, _) in &fx.assigned {
            let _ = self.shared.events.send(GroupEvent::Assigned(*id));
        }
        for (id, ts, reply) in fx.replied {
            self.shared.waiters.notify(id, ts, reply);
        }
        for (id, _) in fx.delivered {
            let _ = self.shared.events.send(GroupEvent::Delivered(id));
        }
        for dst in fx.channel_dirty {
            let _ = self.shared.events.send(GroupEvent::ChannelDirty(dst));
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.built += 1;
        let data = self.shared.state().snapshot();
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.built),
            None => format!("--{}", self.built),
        };
        SnapshotBuilder {
            snap: StoredSnapshot {
                meta: SnapshotMeta {
                    last_log_id: self.last_applied,
                    last_membership: self.membership.clone(),
                    snapshot_id,
                },
                data,
            },
            current: self.current.clone(),
            dir: self.dir.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let snap = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        let fail = |e: AnyError| {
            StorageError::from(StorageIOError::write_snapshot(Some(meta.signature()), e))
        };
        keep(&self.current, &snap, self.dir.clone())
            .await
            .map_err(fail)?;
        self.shared
            .state()
            .restore(&snap.data)
            .map_err(|e| fail(AnyError::new(&e)))?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        // Tentative messages in the installed state need announcing by a leader; channel
        // outboxes may hold messages to transmit.
        let (assigned, dirty, pending): (Vec<MsgId>, Vec<GroupId>, bool) = {
            let st = self.shared.state();
            (
                st.skeen.tentative().map(|(m, _)| m.id).collect(),
                st.channel.outboxes().map(|(g, _)| g).collect(),
                st.skeen.pending_count() > 0 || st.channel.outboxes().any(|(_, o)| !o.is_empty()),
            )
        };
        use std::sync::atomic::Ordering::Relaxed;
        self.shared.installs.count.fetch_add(1, Relaxed);
        if pending {
            self.shared.installs.with_pending.fetch_add(1, Relaxed);
        }
        for id in assigned {
            let _ = self.shared.events.send(GroupEvent::Assigned(id));
        }
        for g in dirty {
            let _ = self.shared.events.send(GroupEvent::ChannelDirty(g));
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.current_lock().clone().map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
