//! The drainer: empties draining partitions, from the oracle leader, into the partitions of
//! the live topology (those added at run time included), and says why when it cannot.

use crate::command::{decode, encode, Command, Reply};
use crate::coordinator::Coordinator;
use crate::group::state_machine::Shared;
use crate::ids::{GroupId, MsgId, ORACLE};
use crate::multicast::McastMessage;
use crate::oracle::Oracle;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
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

/// Why each draining partition does not progress, as the drainer last saw it (volatile;
/// reported by the admin service).
#[derive(Default)]
pub(crate) struct DrainNotes {
    notes: Mutex<BTreeMap<GroupId, String>>,
}

impl DrainNotes {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<GroupId, String>> {
        self.notes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records why `p`'s drain does not progress (logged when it changes).
    fn set(&self, p: GroupId, note: String) {
        let mut notes = self.lock();
        if notes.get(&p) != Some(&note) {
            tracing::warn!(partition = %p, %note, "drain does not progress");
            notes.insert(p, note);
        }
    }

    /// The drain of `p` progresses.
    fn clear(&self, p: GroupId) {
        self.lock().remove(&p);
    }

    /// Why `p`'s drain does not progress, if it does not.
    pub(crate) fn get(&self, p: GroupId) -> Option<String> {
        self.lock().get(&p).cloned()
    }
}

/// Runs forever on an oracle replica: while it leads, issues the moves [`next_move`] asks
/// for, to the partitions of the live topology; why a drain cannot progress goes to `notes`.
pub(crate) async fn run_drainer(
    shared: Arc<Shared>,
    coordinator: Arc<Coordinator>,
    notes: Arc<DrainNotes>,
) {
    let node_id = coordinator.node_id();
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
        let (step, stuck) = {
            let state = shared.state();
            match state.app.as_any().downcast_ref::<Oracle>() {
                Some(oracle) => (next_move(oracle), stuck(oracle)),
                None => return,
            }
        };
        for (p, why) in stuck {
            notes.set(p, why);
        }
        let Some(step) = step else {
            continue;
        };
        let live = coordinator.live();
        let client = match live.client(step.to) {
            Some(c) => c,
            None => {
                // Added at run time and not in this replica's view yet: ask the oracle.
                let _ = live.refresh(Duration::ZERO).await;
                match live.client(step.to) {
                    Some(c) => c,
                    None => {
                        notes.set(
                            step.from,
                            format!("cannot reach {}: not in this replica's topology", step.to),
                        );
                        continue;
                    }
                }
            }
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
        )
        // One move at a time: everything numbered lower is done with.
        .with_done_below(seq);
        match client.submit(&msg, Instant::now() + MOVE_DEADLINE).await {
            Ok(done) => match decode::<Reply>(&done.reply, "reply") {
                Ok(Reply::Ok) => {
                    tracing::info!(from = %step.from, to = %step.to, vars = step.vars.len(),
                        "drainer moved variables");
                    notes.clear(step.from);
                    // Next batch at once, but let the oracle apply this one first.
                    pause = false;
                    tokio::task::yield_now().await;
                }
                // The destination stopped taking variables meanwhile: choose again.
                Ok(other) => notes.set(
                    step.from,
                    format!("the move to {} was refused: {other:?}", step.to),
                ),
                Err(e) => notes.set(step.from, format!("undecodable reply: {e}")),
            },
            Err(e) => notes.set(
                step.from,
                format!("the last move to {} failed (retrying): {e}", step.to),
            ),
        }
    }
}

/// The draining partitions that cannot progress from the oracle's map alone: no active
/// partition can take their variables.
fn stuck(oracle: &Oracle) -> Vec<(GroupId, String)> {
    oracle
        .draining()
        .into_iter()
        .filter(|p| oracle.emptiest_active(*p).is_none())
        .map(|p| (p, "no active partition can take its variables".to_string()))
        .collect()
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
