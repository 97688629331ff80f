//! The drainer: empties draining partitions, from the oracle leader.

use crate::command::{encode, Command};
use crate::coordinator::Coordinator;
use crate::group::state_machine::Shared;
use crate::group::GroupClient;
use crate::ids::{GroupId, MsgId, ORACLE};
use crate::multicast::McastMessage;
use crate::oracle::Oracle;
use crate::route::Sender;
use crate::topology::Topology;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Variables moved by one move command of the drainer.
pub(crate) const DRAIN_BATCH: usize = 64;
/// Pause between drain rounds when there is nothing to do (or after a failure).
const IDLE: Duration = Duration::from_millis(200);
/// How long one move may take.
const MOVE_DEADLINE: Duration = Duration::from_secs(10);

/// One drain step: the move to issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DrainMove {
    /// The draining partition.
    pub from: GroupId,
    /// The active partition receiving its variables.
    pub to: GroupId,
    /// Up to [`DRAIN_BATCH`] of its variables.
    pub vars: Vec<crate::ids::VarId>,
}

/// The next move that drains a partition, decided from the oracle's map (pure).
pub(crate) fn next_move(oracle: &Oracle) -> Option<DrainMove> {
    oracle.draining().into_iter().find_map(|from| {
        let to = oracle.emptiest_active(from)?;
        let vars = oracle.variables_in(from, DRAIN_BATCH);
        (!vars.is_empty()).then_some(DrainMove { from, to, vars })
    })
}

/// Runs forever on an oracle replica: while it leads, issues the moves [`next_move`] asks for.
pub(crate) async fn run_drainer(
    shared: Arc<Shared>,
    coordinator: Arc<Coordinator>,
    topology: Topology,
    node_id: u64,
) {
    let mut clients: BTreeMap<GroupId, GroupClient> = BTreeMap::new();
    for (g, addrs) in &topology.groups {
        if *g == ORACLE {
            continue;
        }
        let from = Sender::Replica {
            group: ORACLE,
            node: node_id,
        };
        match GroupClient::new(&topology.cluster, *g, addrs, from) {
            Ok(c) => {
                clients.insert(*g, c);
            }
            Err(e) => tracing::error!(group = %g, error = %e, "drainer: bad member address"),
        }
    }
    // Message ids of the drainer: a sender id no client picks (clients draw random ones),
    // made distinct per oracle replica and per start.
    let sender = (u64::MAX - 1024 - node_id).wrapping_sub(now_nanos() & 0xffff_ffff);
    let mut seq = 0u64;
    let mut pause = true;
    loop {
        if pause {
            tokio::time::sleep(IDLE).await;
        }
        pause = true;
        if !coordinator.is_leader() {
            continue;
        }
        let step = {
            let state = shared.state();
            state
                .app
                .as_any()
                .downcast_ref::<Oracle>()
                .and_then(next_move)
        };
        let Some(step) = step else {
            continue;
        };
        let Some(client) = clients.get(&step.to) else {
            continue;
        };
        seq += 1;
        let msg = McastMessage::new(
            MsgId { sender, seq },
            vec![ORACLE, step.from, step.to],
            encode(&Command::Move {
                vars: step.vars.clone(),
                from: step.from,
                to: step.to,
            }),
        );
        match client.submit(&msg, Instant::now() + MOVE_DEADLINE).await {
            Ok(_) => {
                tracing::info!(from = %step.from, to = %step.to, vars = step.vars.len(),
                    "drainer moved variables");
                // Next batch at once, but let the oracle apply this one first.
                pause = false;
                tokio::task::yield_now().await;
            }
            Err(e) => tracing::warn!(from = %step.from, to = %step.to, error = %e,
                "drain move failed; retrying"),
        }
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
