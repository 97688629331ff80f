//! The leader's read loop: linearizable reads without a log entry, as etcd's read loop does.
//!
//! A read that a group's leader may answer from its state first waits for a *read index*:
//! the leader confirms with one heartbeat round that a quorum still follows it (openraft's
//! `get_read_log_id`), then waits until its state machine has applied everything that was
//! committed when the round started. Any write that completed before the read arrived was
//! committed by then, so the state the read sees holds it; a leader that was deposed (a newer
//! leader may have committed writes it does not know) fails the round instead.
//!
//! One round releases every read that was waiting when it started; reads that arrive while
//! a round is in flight wait for the next one. So a leader runs at most one round at a time,
//! never one per read, and under load a round carries every read of its interval.
//!
//! Owns no replicated state and changes none: it only delays reads. Must not release a read
//! by a round that started before the read arrived.

use crate::group::types::Raft;
use std::mem;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Longest a round may take (the heartbeat round, then applying up to the read index).
const ROUND_TIMEOUT: Duration = Duration::from_secs(2);

/// How a leader answers read-only commands. Anything but the default is for benchmarks and
/// tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadRule {
    /// From its state after a read index (this module).
    #[default]
    ReadIndex,
    /// Through the log, as every other command (the baseline of benchmarks).
    Log,
    /// BROKEN: from its state at once, trusting that it still leads, so a leader cut off from
    /// its group answers with a stale state. Only for the test that its checker catches it.
    Unconfirmed,
}

/// Why a read index could not be had; the read then goes through the log.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ReadIndexError {
    /// This replica does not lead the group (or no longer does).
    #[error("not the leader: {0}")]
    NotLeader(String),
    /// No quorum confirmed the leadership, or the state machine did not catch up, in time.
    #[error("no read index within {0:?}")]
    Timeout(Duration),
    /// The replica is shutting down.
    #[error("replica is shutting down")]
    Stopped,
}

/// The reads waiting for the next round, and whether a round runs.
#[derive(Default)]
struct Rounds {
    waiting: Vec<oneshot::Sender<Result<u64, ReadIndexError>>>,
    running: bool,
}

/// The read loop of one replica.
pub struct ReadIndex {
    raft: Raft,
    rounds: Mutex<Rounds>,
    /// Rounds run so far (tests check that reads share them).
    completed: std::sync::atomic::AtomicU64,
}

impl ReadIndex {
    /// The read loop of the replica whose Raft handle is `raft`.
    pub fn new(raft: Raft) -> Arc<Self> {
        Arc::new(ReadIndex {
            raft,
            rounds: Mutex::new(Rounds::default()),
            completed: Default::default(),
        })
    }

    /// Returns once a round that started after this call confirmed that this replica leads
    /// its group and its state machine applied everything committed at that point (the read
    /// index, returned): a read of the state from now on is linearizable.
    pub async fn barrier(self: &Arc<Self>) -> Result<u64, ReadIndexError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut rounds = self.rounds.lock().expect("read rounds lock");
            rounds.waiting.push(tx);
            !mem::replace(&mut rounds.running, true)
        };
        if start {
            tokio::spawn(self.clone().run());
        }
        rx.await.unwrap_or(Err(ReadIndexError::Stopped))
    }

    /// Number of rounds run so far.
    pub fn rounds(&self) -> u64 {
        self.completed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs rounds while reads wait.
    async fn run(self: Arc<Self>) {
        loop {
            let batch = {
                let mut rounds = self.rounds.lock().expect("read rounds lock");
                if rounds.waiting.is_empty() {
                    rounds.running = false;
                    return;
                }
                // Everything waiting now arrived before the round below starts.
                mem::take(&mut rounds.waiting)
            };
            let outcome = self.round().await;
            self.completed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for tx in batch {
                let _ = tx.send(outcome.clone());
            }
        }
    }

    /// One round: leadership confirmed by a quorum, then the state machine caught up.
    async fn round(&self) -> Result<u64, ReadIndexError> {
        let confirmed = tokio::time::timeout(ROUND_TIMEOUT, self.raft.get_read_log_id()).await;
        let (read, applied) = match confirmed {
            Ok(Ok(ids)) => ids,
            Ok(Err(e)) => return Err(ReadIndexError::NotLeader(e.to_string())),
            Err(_) => return Err(ReadIndexError::Timeout(ROUND_TIMEOUT)),
        };
        let (read, applied) = (read.map(|l| l.index), applied.map(|l| l.index));
        if read > applied {
            self.raft
                .wait(Some(ROUND_TIMEOUT))
                .applied_index_at_least(read, "read index")
                .await
                .map_err(|e| match e {
                    openraft::metrics::WaitError::Timeout(..) => {
                        ReadIndexError::Timeout(ROUND_TIMEOUT)
                    }
                    openraft::metrics::WaitError::ShuttingDown => ReadIndexError::Stopped,
                })?;
        }
        Ok(read.unwrap_or(0))
    }
}
