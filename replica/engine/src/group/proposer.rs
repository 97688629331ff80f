//! Batches operations into log entries and proposes them to the group's Raft leader.
//!
//! Callers hand in single [`Op`]s (or runs of them that must stay together); a task drains whatever queued up (up to [`MAX_BATCH`]) into
//! one entry and enqueues it with `client_write_ff`, which keeps entries in submission order.
//! At most [`MAX_ENTRIES_IN_FLIGHT`] entries are uncommitted at once; meanwhile proposals
//! accumulate, so entries grow with load and the per-entry cost (replication, fsync) is shared.

use crate::group::types::{Op, Raft, Request};
use crate::ids::NodeId;
use openraft::error::ClientWriteError;
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Most operations in one log entry.
pub(crate) const MAX_BATCH: usize = 2048;
/// Entries proposed and not yet applied at once.
pub(crate) const MAX_ENTRIES_IN_FLIGHT: usize = 4;

/// Why a proposal did not commit.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// This replica is not the leader (the leader's node id, when known).
    #[error("not the leader (leader: {0:?})")]
    NotLeader(Option<NodeId>),
    /// The replica is shutting down.
    #[error("replica is shutting down")]
    Stopped,
    /// Raft refused the entry for another reason.
    #[error("raft refused the proposal: {0}")]
    Raft(String),
}

/// Operations that go into the log together, in this order, in one entry.
struct Proposal {
    ops: Vec<Op>,
    done: Option<oneshot::Sender<Result<(), ProposeError>>>,
}

/// Handle to the batching proposer of one replica.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Proposal>,
}

impl Proposer {
    /// Starts the batching task for `raft`.
    pub fn spawn(raft: Raft) -> Self {
        let (tx, rx) = mpsc::channel(64 * 1024);
        tokio::spawn(run(raft, rx));
        Proposer { tx }
    }

    /// Proposes `op` and waits until it is committed and applied here.
    #[tracing::instrument(
        level = "debug",
        name = "propose",
        skip_all,
        fields(op = op.name(), msg = op.msg_id().map(tracing::field::display))
    )]
    pub async fn propose(&self, op: Op) -> Result<(), ProposeError> {
        self.propose_all(vec![op]).await
    }

    /// Proposes `ops` as one run, in this order and with nothing of other callers between
    /// them (in one entry), and waits until they are committed and applied here.
    pub async fn propose_all(&self, ops: Vec<Op>) -> Result<(), ProposeError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Proposal {
                ops,
                done: Some(done),
            })
            .await
            .map_err(|_| ProposeError::Stopped)?;
        rx.await.map_err(|_| ProposeError::Stopped)?
    }

    /// Proposes `op` without waiting for the outcome (the caller retries on its own schedule).
    pub async fn submit(&self, op: Op) {
        let _ = self
            .tx
            .send(Proposal {
                ops: vec![op],
                done: None,
            })
            .await;
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Proposal>) {
    let in_flight = Arc::new(Semaphore::new(MAX_ENTRIES_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Self-clocking batches: while the window is full, proposals keep queueing and leave
        // together in the next entry.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut ops = first.ops;
        let mut dones = vec![first.done];
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(mut p) => {
                    ops.append(&mut p.ops);
                    dones.push(p.done);
                }
                Err(_) => break,
            }
        }
        let outcome = raft.client_write_ff(Request::now(ops)).await;
        let dones: Vec<_> = dones.into_iter().flatten().collect();
        match outcome {
            Err(_) => {
                for d in dones {
                    let _ = d.send(Err(ProposeError::Stopped));
                }
            }
            Ok(responder) => {
                // Awaited even when nobody waits, so openraft can always hand over the result.
                tokio::spawn(async move {
                    let outcome = responder.await;
                    drop(permit);
                    let res = match outcome {
                        Err(_) => Err(ProposeError::Stopped),
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(ClientWriteError::ForwardToLeader(f))) => {
                            Err(ProposeError::NotLeader(f.leader_id))
                        }
                        Ok(Err(e)) => Err(ProposeError::Raft(e.to_string())),
                    };
                    for d in dones {
                        let _ = d.send(res.clone());
                    }
                });
            }
        }
    }
}
