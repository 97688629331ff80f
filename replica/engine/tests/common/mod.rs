//! Shared harness of the multicast tests: a closed-loop workload of concurrent senders that
//! multicast to random destination sets, and the collection of every replica's delivery log
//! for the property checker.

#![allow(dead_code)]

use dssmr_check::multicast::{self as checker, Multicast, ReplicaLog};
use dssmr_engine::app::Recorder;
use dssmr_engine::client::{GroupClient, Topology};
use dssmr_engine::cluster::LocalCluster;
use dssmr_engine::ids::{GroupId, MsgId};
use dssmr_engine::multicast::McastMessage;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Counts acknowledged multicasts and wakes whoever waits for progress.
#[derive(Default)]
pub struct Progress {
    done: AtomicU64,
    notify: Notify,
    stopped: std::sync::atomic::AtomicBool,
}

impl Progress {
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

    /// Asks workloads that run until told to stop to stop.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// True once [`Progress::stop`] was called.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    pub fn bump(&self) {
        self.done.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Waits until `n` more multicasts completed than when called (bounded by `timeout`).
    pub async fn advance(&self, n: u64, timeout: Duration) -> bool {
        let target = self.done() + n;
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            if self.done() >= target {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                return self.done() >= target;
            }
        }
    }
}

/// Waits up to `timeout` for `cond`, looking every 50 ms.
pub async fn eventually(timeout: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Picks a destination set: 1..=max groups, uniformly sized.
pub fn random_dests(rng: &mut StdRng, groups: &[GroupId], max: usize) -> Vec<GroupId> {
    let k = rng.random_range(1..=max.min(groups.len()));
    groups.choose_multiple(rng, k).copied().collect()
}

/// Runs `clients` closed-loop senders, `per_client` messages each; returns what was sent.
pub async fn run_senders(
    topology: Topology,
    clients: usize,
    per_client: usize,
    max_dests: usize,
    seed: u64,
    progress: Arc<Progress>,
) -> Vec<Multicast<MsgId>> {
    let groups: Vec<GroupId> = topology.groups.keys().copied().collect();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let group_clients: HashMap<GroupId, Arc<GroupClient>> = topology
            .groups
            .keys()
            .map(|g| {
                (
                    *g,
                    Arc::new(GroupClient::for_topology(&topology, *g).expect("client")),
                )
            })
            .collect();
        let groups = groups.clone();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed * 1000 + c as u64);
            let sender: u64 = rng.random();
            let mut sent = Vec::new();
            for seq in 0..per_client as u64 {
                let dests = random_dests(&mut rng, &groups, max_dests);
                let msg = McastMessage::new(MsgId { sender, seq }, dests, vec![c as u8; 16]);
                let deadline = Instant::now() + Duration::from_secs(60);
                let calls = msg.dests.iter().map(|g| {
                    let client = group_clients[g].clone();
                    let msg = msg.clone();
                    async move { client.multicast(&msg, deadline).await }
                });
                let results = futures::future::join_all(calls).await;
                let acknowledged = results.iter().all(|r| r.is_ok());
                if acknowledged {
                    progress.bump();
                }
                sent.push(Multicast {
                    id: msg.id,
                    dests: msg.dests.iter().map(|g| g.0).collect(),
                    acknowledged,
                });
            }
            sent
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("sender task"));
    }
    all
}

/// How [`run_proxy_senders`] senders behave.
pub struct ProxyPattern {
    /// Senders, each with its own id.
    pub senders: usize,
    /// Messages per sender.
    pub per_sender: u64,
    /// Messages of one sender in flight at once.
    pub window: usize,
    /// Most destination groups of one message.
    pub max_dests: usize,
    /// How long a sender waits for a message before giving up on it and moving on.
    pub patience: Duration,
    /// Seed of the destinations and of where each message is submitted.
    pub seed: u64,
}

/// Runs senders with the client proxy's pattern: each message is submitted at one of its
/// destinations only (chosen at random) and waited for there alone, a window of messages in
/// flight, each given up after the sender's patience; every message carries the sender's floor
/// (its lowest message in flight). Returns what was sent; `acknowledged` = delivered where it
/// was submitted.
pub async fn run_proxy_senders(
    topology: Topology,
    pattern: ProxyPattern,
    progress: Arc<Progress>,
) -> Vec<Multicast<MsgId>> {
    use futures::stream::{self, StreamExt};
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    let groups: Vec<GroupId> = topology.groups.keys().copied().collect();
    let clients: Arc<HashMap<GroupId, Arc<GroupClient>>> = Arc::new(
        groups
            .iter()
            .map(|g| {
                let c = GroupClient::for_topology(&topology, *g).expect("client");
                (*g, Arc::new(c))
            })
            .collect(),
    );
    let mut tasks = Vec::new();
    for c in 0..pattern.senders {
        let mut rng = StdRng::seed_from_u64(pattern.seed * 1000 + c as u64);
        let sender: u64 = rng.random();
        let plan: Vec<(u64, Vec<GroupId>, GroupId)> = (0..pattern.per_sender)
            .map(|seq| {
                let dests = random_dests(&mut rng, &groups, pattern.max_dests);
                let at = *dests.choose(&mut rng).expect("a destination");
                (seq, dests, at)
            })
            .collect();
        let (clients, progress) = (clients.clone(), progress.clone());
        let (window, patience) = (pattern.window, pattern.patience);
        tasks.push(tokio::spawn(async move {
            let in_flight: Mutex<BTreeSet<u64>> = Mutex::default();
            let in_flight = &in_flight;
            stream::iter(plan)
                .map(|(seq, dests, at)| {
                    let client = clients[&at].clone();
                    let progress = progress.clone();
                    async move {
                        let floor = {
                            let mut f = in_flight.lock().unwrap();
                            f.insert(seq);
                            *f.first().unwrap()
                        };
                        let msg = McastMessage::new(MsgId { sender, seq }, dests, vec![7; 16])
                            .with_done_below(floor);
                        let acknowledged = client
                            .multicast(&msg, Instant::now() + patience)
                            .await
                            .is_ok();
                        in_flight.lock().unwrap().remove(&seq);
                        if acknowledged {
                            progress.bump();
                        }
                        Multicast {
                            id: msg.id,
                            dests: msg.dests.iter().map(|g| g.0).collect(),
                            acknowledged,
                        }
                    }
                })
                .buffer_unordered(window)
                .collect::<Vec<_>>()
                .await
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("sender task"));
    }
    all
}

/// The delivery sequence recorded at every running replica.
pub fn delivery_logs(cluster: &LocalCluster) -> Vec<ReplicaLog<MsgId>> {
    let mut logs = Vec::new();
    for g in cluster.groups() {
        for r in 0..cluster.replicas() {
            if let Some(node) = cluster.node(g, r) {
                let delivered = node.with_app(|app| {
                    app.as_any()
                        .downcast_ref::<Recorder>()
                        .map(|rec| rec.delivered().iter().map(|(id, _)| *id).collect())
                        .unwrap_or_default()
                });
                logs.push(ReplicaLog {
                    group: g.0,
                    replica: r as u64,
                    correct: true,
                    delivered,
                });
            }
        }
    }
    logs
}

/// Waits until every running replica delivered at least the messages addressed to its group
/// that were acknowledged (the condition for comparing sequences), bounded by `timeout`.
pub async fn wait_converged(
    cluster: &LocalCluster,
    sent: &[Multicast<MsgId>],
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    let mut expected: HashMap<u32, u64> = HashMap::new();
    for m in sent.iter().filter(|m| m.acknowledged) {
        for g in &m.dests {
            *expected.entry(*g).or_default() += 1;
        }
    }
    loop {
        let done = cluster.running().all(|n| {
            let want = expected.get(&n.group().0).copied().unwrap_or(0);
            n.with_state(|s| s.skeen.delivered_count()) >= want
        });
        if done {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        // Wait for any replica of group 1 to apply more entries, or 50 ms, then look again.
        let mut rx = match cluster.running().next() {
            Some(n) => n.raft().metrics(),
            None => return false,
        };
        let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
    }
}

/// Runs the property checker and renders violations readably.
pub fn check(
    sent: &[Multicast<MsgId>],
    logs: &[ReplicaLog<MsgId>],
) -> Result<checker::Report, String> {
    checker::check(sent, logs).map_err(|vs| {
        vs.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })
}

pub mod engine;
pub mod kvload;
pub mod scaling;
