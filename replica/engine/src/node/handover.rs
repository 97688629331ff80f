//! Leadership handover before a planned stop (Raft's TimeoutNow, dissertation §3.10).
//!
//! A leader that is about to stop (SIGTERM of a pod) would otherwise leave its group leaderless
//! for a whole election timeout and lose the commands in flight. [`hand_over`] instead:
//!
//! 1. stops acting as leader ([`Coordinator::stop_leading`]): new submissions are referred to
//!    the group, so the log stops growing;
//! 2. waits until a follower has replicated the whole log (its matched index is the leader's
//!    last index), so that follower's vote request is as up to date as any log;
//! 3. sends it `TimeoutNow`: it starts an election at once, with a higher term. The old leader,
//!    whose log is not longer, grants its vote, and the two make a majority of three;
//! 4. waits until it sees another leader.
//!
//! Nothing here is needed for safety: if any step times out the replica simply stops and the
//! group elects a leader the usual way.

use crate::group::network::{dial, peer_stamp};
use crate::ids::NodeId;
use crate::node::GroupNode;
use crate::proto::TimeoutNowRequest;
use std::time::{Duration, Instant};
use thiserror::Error;

/// What a handover achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Handover {
    /// The replica did not lead its group: nothing to hand over.
    NotLeader,
    /// Another replica leads now.
    HandedTo {
        /// The new leader.
        leader: NodeId,
        /// From the start of the handover to seeing the new leader.
        elapsed: Duration,
    },
}

/// Why a handover did not complete (the replica may stop anyway: the group re-elects).
#[derive(Debug, Error)]
pub(crate) enum HandoverError {
    /// No follower caught up with the log in time.
    #[error("no follower caught up with the leader's log within {0:?}")]
    NoUpToDateFollower(Duration),
    /// The chosen follower could not be asked to stand for election.
    #[error("cannot ask replica {node} ({addr}) to stand for election: {reason}")]
    Unreachable {
        /// Its Raft node id.
        node: NodeId,
        /// Its address.
        addr: String,
        /// The transport error.
        reason: String,
    },
    /// The follower refused (it follows another leader or term: leadership moved anyway).
    #[error("replica {0} refused to stand for election")]
    Refused(NodeId),
    /// No other leader appeared in time.
    #[error("no new leader within {0:?}")]
    NoNewLeader(Duration),
}

/// Hands the leadership of `node`'s group to an up-to-date follower, within `timeout`.
/// Afterwards `node` no longer acts as leader, whatever the outcome: call it only before
/// stopping the replica.
pub(crate) async fn hand_over(
    node: &GroupNode,
    timeout: Duration,
) -> Result<Handover, HandoverError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let me = node.node_id();
    if !node.is_leader() {
        return Ok(Handover::NotLeader);
    }
    node.coordinator().stop_leading();
    let mut metrics = node.raft().metrics();

    // 2. The most advanced follower, once one has everything.
    let (target, term) = loop {
        let (ready, term) = {
            let m = metrics.borrow();
            if m.current_leader != Some(me) {
                // Leadership moved on its own meanwhile.
                if let Some(leader) = m.current_leader {
                    return Ok(Handover::HandedTo {
                        leader,
                        elapsed: started.elapsed(),
                    });
                }
            }
            let last = m.last_log_index;
            let ready = m.replication.as_ref().and_then(|r| {
                r.iter()
                    .filter(|(id, _)| **id != me)
                    .filter(|(_, matched)| matched.map(|l| l.index) == last)
                    .map(|(id, _)| *id)
                    .min()
            });
            (ready, m.current_term)
        };
        if let Some(t) = ready {
            break (t, term);
        }
        if wait_change(&mut metrics, deadline).await.is_err() {
            return Err(HandoverError::NoUpToDateFollower(timeout));
        }
    };

    // 3. TimeoutNow.
    let addr = node
        .members()
        .get((target as usize).wrapping_sub(1))
        .cloned()
        .unwrap_or_default();
    let unreachable = |reason: String| HandoverError::Unreachable {
        node: target,
        addr: addr.clone(),
        reason,
    };
    let mut client = dial(&addr, &peer_stamp(node.member(), target)).map_err(unreachable)?;
    let reply = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        client.timeout_now(TimeoutNowRequest {
            term,
            leader_id: me,
        }),
    )
    .await
    .map_err(|_| unreachable("timed out".into()))?
    .map_err(|s| unreachable(s.message().to_string()))?;
    if !reply.into_inner().electing {
        return Err(HandoverError::Refused(target));
    }

    // 4. Someone else leads.
    loop {
        let leader = metrics.borrow().current_leader;
        if let Some(leader) = leader.filter(|l| *l != me) {
            return Ok(Handover::HandedTo {
                leader,
                elapsed: started.elapsed(),
            });
        }
        if wait_change(&mut metrics, deadline).await.is_err() {
            return Err(HandoverError::NoNewLeader(timeout));
        }
    }
}

/// Waits for the next metrics change, or fails at `deadline`.
async fn wait_change(
    metrics: &mut tokio::sync::watch::Receiver<crate::group::types::RaftMetrics>,
    deadline: Instant,
) -> Result<(), ()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(());
    }
    match tokio::time::timeout(left, metrics.changed()).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}
