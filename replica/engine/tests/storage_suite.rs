//! openraft's own storage conformance suite (`openraft::testing::Suite`, 0.9) run against the
//! replica storage: [`LogStore`] + [`StateMachineStore`], once in memory and once on disk (a
//! fresh temporary directory per case, removed when the case ends).
//!
//! A last test checks what the suite cannot: that a disk store reopened on the same directory
//! (as after a crash) returns the vote, log, purge point, committed id and snapshot it held.

use dssmr_engine::app::recorder::{Recorder, Recording};
use dssmr_engine::group::log_store::LogStore;
use dssmr_engine::group::state::GroupState;
use dssmr_engine::group::state_machine::{Shared, StateMachineStore};
use dssmr_engine::group::types::{Entry, LogId, Request, StorageError, TypeConfig};
use dssmr_engine::ids::GroupId;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder, Vote,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

/// Each suite run (about 35 cases, several sleeping 1 s inside the suite) must end within this.
const SUITE_LIMIT: Duration = Duration::from_secs(120);

/// A fresh group state; events go to a channel nobody reads (the suite exercises storage, not
/// the runtime).
fn shared() -> Arc<Shared> {
    let app = Box::new(Recorder::new(Recording::Full));
    let (events, _) = tokio::sync::mpsc::unbounded_channel();
    Shared::new(GroupState::new(GroupId(1), app), events)
}

/// A state machine over a fresh group state, persisting into `dir` when given.
fn state_machine(dir: Option<&Path>) -> StateMachineStore {
    StateMachineStore::open(shared(), dir.map(Path::to_path_buf)).expect("open state machine")
}

struct MemoryBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, ()> for MemoryBuilder {
    async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError> {
        Ok((
            (),
            LogStore::in_memory(),
            StateMachineStore::open(shared(), None)?,
        ))
    }
}

struct DiskBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for DiskBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(dir.path())?;
        let sm = StateMachineStore::open(shared(), Some(dir.path().to_path_buf()))?;
        Ok((dir, log, sm))
    }
}

/// Runs `suite` on a thread of its own (the suite builds a tokio runtime per case, which cannot
/// happen inside another runtime) and fails if it does not finish within [`SUITE_LIMIT`].
fn bounded(name: &str, suite: impl FnOnce() -> Result<(), String> + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(suite());
    });
    match rx.recv_timeout(SUITE_LIMIT) {
        Ok(result) => result.unwrap_or_else(|e| panic!("{name}: {e}")),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name}: suite did not finish within {SUITE_LIMIT:?}")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The suite thread panicked (a failed assertion): re-raise its panic here.
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
            unreachable!("suite thread ended without a result and without a panic");
        }
    }
}

#[test]
fn openraft_suite_memory_storage() {
    dssmr_engine::telemetry::init_for_tests();
    bounded("memory", || {
        Suite::test_all(MemoryBuilder).map_err(|e| format!("storage error: {e}"))
    });
}

#[test]
fn openraft_suite_disk_storage() {
    dssmr_engine::telemetry::init_for_tests();
    bounded("disk", || {
        Suite::test_all(DiskBuilder).map_err(|e| format!("storage error: {e}"))
    });
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn normal(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Request::default()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_storage_survives_reopen() {
    dssmr_engine::telemetry::init_for_tests();
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("tempdir");
        let membership = {
            let nodes: BTreeMap<u64, openraft::BasicNode> = (1..=3)
                .map(|i| (i, openraft::BasicNode::new(format!("127.0.0.1:{i}"))))
                .collect();
            Membership::new(vec![nodes.keys().copied().collect::<BTreeSet<_>>()], nodes)
        };
        let vote = Vote::new_committed(3, 2);
        let snapshot_meta = {
            let mut log = LogStore::open(dir.path()).expect("open log");
            let mut sm = state_machine(Some(dir.path()));
            let mut entries = vec![Entry {
                log_id: log_id(1, 1),
                payload: EntryPayload::Membership(membership.clone()),
            }];
            entries.extend((2..=20).map(|i| normal(if i < 10 { 1 } else { 2 }, i)));
            log.blocking_append(entries.clone()).await.expect("append");
            log.save_vote(&vote).await.expect("save vote");
            sm.apply(entries[..12].to_vec()).await.expect("apply");
            let snap = sm
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .expect("snapshot");
            log.purge(log_id(2, 10)).await.expect("purge");
            log.truncate(log_id(2, 18)).await.expect("truncate");
            log.save_committed(Some(log_id(2, 12)))
                .await
                .expect("save committed");
            // The committed id is written without an fsync of its own; a later durable write
            // (here a vote) makes it durable, as the next append would in a running replica.
            log.save_vote(&vote).await.expect("save vote again");
            snap.meta
        };

        let mut log = LogStore::open(dir.path()).expect("reopen log");
        let mut sm = state_machine(Some(dir.path()));
        assert_eq!(log.read_vote().await.expect("vote"), Some(vote));
        assert_eq!(
            log.read_committed().await.expect("committed"),
            Some(log_id(2, 12))
        );
        let state = log.get_log_state().await.expect("log state");
        assert_eq!(state.last_purged_log_id, Some(log_id(2, 10)));
        assert_eq!(state.last_log_id, Some(log_id(2, 17)));
        let kept: Vec<u64> = log
            .try_get_log_entries(0..100)
            .await
            .expect("entries")
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(kept, (11..=17).collect::<Vec<_>>());
        let (applied, stored_membership) = sm.applied_state().await.expect("applied state");
        assert_eq!(applied, Some(log_id(2, 12)));
        assert_eq!(stored_membership.membership(), &membership);
        let current = sm
            .get_current_snapshot()
            .await
            .expect("current snapshot")
            .expect("a snapshot was restored");
        assert_eq!(current.meta, snapshot_meta);
    })
    .await
    .expect("test finished within its time limit");
}

/// An append must continue the log: entries that leave a gap (what a foreign leader's
/// AppendEntries without `prev_log_id` delivered, `../shared/repro/rolling-restart-oracle/`)
/// or are not consecutive are refused with an error, and nothing of them is kept, in memory
/// or on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_that_leaves_a_gap_is_refused_and_nothing_is_written() {
    dssmr_engine::telemetry::init_for_tests();
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("tempdir");
        for mut log in [
            LogStore::in_memory(),
            LogStore::open(dir.path()).expect("open"),
        ] {
            log.blocking_append((0..=5).map(|i| normal(1, i)))
                .await
                .expect("append 0..=5");
            let gap = log
                .blocking_append((9000..=9003).map(|i| normal(2, i)))
                .await;
            assert!(gap.is_err(), "entries 9000.. after 5 were accepted");
            let holes = log.blocking_append([normal(1, 6), normal(1, 8)]).await;
            assert!(holes.is_err(), "entries 6 and 8 were accepted");
            let kept: Vec<u64> = log
                .try_get_log_entries(0..10_000)
                .await
                .expect("entries")
                .iter()
                .map(|e| e.log_id.index)
                .collect();
            assert_eq!(kept, (0..=5).collect::<Vec<_>>());
            log.blocking_append([normal(1, 6)])
                .await
                .expect("the next entry is accepted");
        }
        let mut log = LogStore::open(dir.path()).expect("reopen");
        let state = log.get_log_state().await.expect("log state");
        assert_eq!(state.last_log_id, Some(log_id(1, 6)));
        assert_eq!(log.len(), 7, "refused entries reached the disk");
    })
    .await
    .expect("test finished within its time limit");
}

/// Bug (issue 16): openraft builds a snapshot on a task of its own while it may install a
/// newer one from the leader; the build set its (older) snapshot as the current one, file
/// included, after the log had been purged past it. A build that ends after an install of a
/// newer snapshot now leaves the newer one current, in memory and on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_build_never_replaces_a_newer_installed_snapshot() {
    dssmr_engine::telemetry::init_for_tests();
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("tempdir");
        let entries: Vec<Entry> = (1..=12).map(|i| normal(1, i)).collect();
        let mut sm = state_machine(Some(dir.path()));
        sm.apply(entries[..5].to_vec()).await.expect("apply");
        // A build starts at index 5 ...
        let mut late = sm.get_snapshot_builder().await;
        // ... the leader's snapshot at index 12 (made by another replica) is installed ...
        let mut other = state_machine(None);
        other.apply(entries.clone()).await.expect("apply");
        let newer = other
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("snapshot");
        sm.install_snapshot(&newer.meta, newer.snapshot)
            .await
            .expect("install");
        // ... and only then the build ends.
        late.build_snapshot().await.expect("late build");
        let current = sm
            .get_current_snapshot()
            .await
            .expect("current snapshot")
            .expect("a snapshot");
        assert_eq!(current.meta, newer.meta, "the older build replaced it");
        let mut reopened = state_machine(Some(dir.path()));
        let (applied, _) = reopened.applied_state().await.expect("applied state");
        assert_eq!(
            applied,
            Some(log_id(1, 12)),
            "the file holds an older snapshot"
        );
    })
    .await
    .expect("test finished within its time limit");
}
