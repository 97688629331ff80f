//! The HTTP side of a replica process: `/metrics` for Prometheus, `/healthz` and `/readyz` for
//! Kubernetes probes.
//!
//! * `/healthz`: 200 while the replica's Raft runs (a fatal storage error stops it: 503).
//! * `/readyz`: 200 once the replica is a voter of its group, knows the group's leader, and has
//!   applied every entry it knows to be committed (within [`READY_LAG`] entries of apply work in
//!   flight); otherwise 503 with the reason. A replica that is catching up after a restart is
//!   live but not ready.
//!
//! Handlers only read; they never take part in the protocol.

use crate::group::types::Raft;
use crate::ids::NodeId;
use crate::server::metrics::ReplicaMetrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use thiserror::Error;

/// Committed entries a ready replica may still have to apply (apply work in flight under load).
pub(crate) const READY_LAG: u64 = 64;

/// Longest a ready leader may go without a quorum acknowledging it (the election timeout's
/// upper bound: by then the followers elect another leader).
pub(crate) const LEADER_QUORUM_MS: u64 = 1000;

/// What the handlers read.
pub struct Probe {
    /// The replica's metrics.
    pub metrics: Arc<ReplicaMetrics>,
    /// Its Raft.
    pub raft: Raft,
    /// Its Raft node id.
    pub node_id: NodeId,
}

/// The router of a replica's HTTP port.
pub fn router(probe: Arc<Probe>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(probe)
}

/// A router with only `/metrics`, rendered by `render` (client processes).
pub fn metrics_router(render: Arc<dyn Fn() -> String + Send + Sync>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move { ([(header::CONTENT_TYPE, TEXT_FORMAT)], render()) }
        }),
    )
}

/// Content type of the Prometheus text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn metrics(State(p): State<Arc<Probe>>) -> impl IntoResponse {
    if let Ok(Some(committed)) = p
        .raft
        .with_raft_state(|st| st.committed.map(|c| c.index))
        .await
    {
        p.metrics.set_commit_index(committed);
    }
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], p.metrics.render())
}

async fn healthz(State(p): State<Arc<Probe>>) -> (StatusCode, String) {
    let running = p.raft.metrics().borrow().running_state.clone();
    match running {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("raft stopped: {e}\n"),
        ),
    }
}

async fn readyz(State(p): State<Arc<Probe>>) -> (StatusCode, String) {
    match readiness(&p).await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Why a replica is not ready (`/readyz` answers 503 with it).
#[derive(Debug, Error)]
pub enum NotReady {
    /// Raft is not running.
    #[error("raft stopped: {0}")]
    RaftStopped(String),
    /// The replica is not (yet) a voter of its group.
    #[error("not a voter of its group (yet)")]
    NotAVoter,
    /// The replica knows no leader of its group.
    #[error("no known leader")]
    NoLeader,
    /// The replica leads, but no quorum acknowledged it for this long.
    #[error("leader without a quorum for {0} ms")]
    LeaderWithoutQuorum(u64),
    /// The replica leads, and no quorum acknowledged it yet.
    #[error("leader without a quorum yet")]
    LeaderNotAcknowledged,
    /// The replica applied fewer entries than it knows to be committed.
    #[error("catching up: applied {applied} of {committed} committed entries")]
    CatchingUp {
        /// Entries applied.
        applied: u64,
        /// Entries known committed.
        committed: u64,
    },
}

/// Why the replica is not ready, if it is not.
pub async fn readiness(p: &Probe) -> Result<(), NotReady> {
    let m = p.raft.metrics().borrow().clone();
    m.running_state
        .as_ref()
        .map_err(|e| NotReady::RaftStopped(e.to_string()))?;
    let voter = m
        .membership_config
        .membership()
        .voter_ids()
        .any(|id| id == p.node_id);
    if !voter {
        return Err(NotReady::NotAVoter);
    }
    if m.current_leader.is_none() {
        return Err(NotReady::NoLeader);
    }
    if m.current_leader == Some(p.node_id) {
        // A leader cut off from its followers still believes it leads: ready only while a
        // quorum acknowledges it.
        match m.millis_since_quorum_ack {
            Some(ms) if ms <= LEADER_QUORUM_MS => {}
            Some(ms) => return Err(NotReady::LeaderWithoutQuorum(ms)),
            None => return Err(NotReady::LeaderNotAcknowledged),
        }
    }
    let committed = p
        .raft
        .with_raft_state(|st| st.committed.map(|c| c.index))
        .await
        .map_err(|e| NotReady::RaftStopped(e.to_string()))?
        .unwrap_or(0);
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    if committed > applied + READY_LAG {
        return Err(NotReady::CatchingUp { applied, committed });
    }
    Ok(())
}
