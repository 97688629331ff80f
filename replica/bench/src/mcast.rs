//! `dssmr bench mcast`: throughput and latency of atomic multicast per destination count.
//!
//! For each destination count k, a fresh local cluster is started (by default exactly k groups
//! of `replicas` replicas, all on 127.0.0.1 with real gRPC), `clients` closed-loop senders each
//! multicast one message at a time to k groups (random k of the cluster's groups) and wait until
//! every destination delivered it. The first `warmup` is not measured. Results: one record per
//! destination count, printed and optionally written as JSON.
//!
//! This module measures the multicast layer alone (raw group clients, no proxies, no app), so
//! it has its own loop rather than `crate::run`'s; it changes nothing in the engine.

use crate::stats::Latencies;
use crate::{Error, Result};
use dssmr_engine::app::recorder::Recording;
use dssmr_engine::client::{GroupClient, Topology};
use dssmr_engine::cluster::{ClusterOptions, LocalCluster};
use dssmr_engine::ids::{GroupId, MsgId};
use dssmr_engine::multicast::McastMessage;
use dssmr_engine::node::RaftTuning;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of a multicast benchmark run.
#[derive(Clone, Debug)]
pub struct McastBench {
    /// Destination counts to measure.
    pub dest_groups: Vec<usize>,
    /// Groups in the cluster; `None` = as many as destinations.
    pub total_groups: Option<usize>,
    /// Replicas per group.
    pub replicas: usize,
    /// Closed-loop senders.
    pub clients: usize,
    /// Measured time per destination count.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Payload bytes per message.
    pub payload: usize,
    /// Where replicas persist (`None`: memory).
    pub data_root: Option<PathBuf>,
    /// Show a progress bar.
    pub progress: bool,
    /// Random seed for destination choice.
    pub seed: u64,
    /// Worker threads of each replica's runtime.
    pub threads_per_replica: usize,
    /// Connections per replica shared by the senders.
    pub connections: usize,
}

/// One measured point.
#[derive(Clone, Debug, Serialize)]
pub struct McastRecord {
    /// Destination groups per message.
    pub dest_groups: usize,
    /// Groups in the cluster.
    pub total_groups: usize,
    /// Replicas per group.
    pub replicas: usize,
    /// Closed-loop senders.
    pub clients: usize,
    /// Messages delivered at all destinations per second.
    pub throughput_msgs_per_s: f64,
    /// Median latency (submission to delivery at every destination).
    pub p50_ms: f64,
    /// 95th percentile latency.
    pub p95_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Messages completed in the measured window.
    pub messages: u64,
    /// Sends that failed (group unavailable) in the measured window.
    pub errors: u64,
    /// Measured seconds.
    pub duration_s: f64,
    /// Storage used by replicas.
    pub storage: String,
}

struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    completed: AtomicU64,
    errors: AtomicU64,
}

type Clients = HashMap<GroupId, Arc<GroupClient>>;

/// `n` sets of group clients; each set holds one HTTP/2 connection per replica, shared by the
/// senders that use it (requests are multiplexed, so frames coalesce into fewer syscalls).
fn client_pool(topology: &Topology, n: usize) -> Result<Vec<Clients>> {
    (0..n.max(1))
        .map(|_| {
            topology
                .groups
                .keys()
                .map(|g| Ok((*g, Arc::new(GroupClient::for_topology(topology, *g)?))))
                .collect()
        })
        .collect()
}

async fn sender(
    id: usize,
    clients: Clients,
    k: usize,
    payload: usize,
    seed: u64,
    shared: Arc<Shared>,
) -> Latencies {
    let groups: Vec<GroupId> = clients.keys().copied().collect();
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    // Not from the seed: a second run with the same seed against the same cluster would reuse
    // the message ids of the first, which the groups answer from what they remember (or, once
    // below the first run's floors, refuse as forgotten) instead of ordering them.
    let sender_id: u64 = rand::random();
    let mut lat = Latencies::default();
    let mut seq = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let dests: Vec<GroupId> = groups.choose_multiple(&mut rng, k).copied().collect();
        let msg = McastMessage::new(
            MsgId {
                sender: sender_id,
                seq,
            },
            dests,
            vec![0u8; payload],
        )
        // One message at a time: everything numbered lower is done with.
        .with_done_below(seq);
        seq += 1;
        let start = Instant::now();
        let deadline = start + Duration::from_secs(30);
        let sends = msg.dests.iter().map(|g| {
            let c = clients[g].clone();
            let m = &msg;
            async move { c.multicast(m, deadline).await }
        });
        let ok = futures::future::join_all(sends)
            .await
            .iter()
            .all(|r| r.is_ok());
        if shared.measuring.load(Ordering::Relaxed) {
            if ok {
                lat.record(start.elapsed());
                shared.completed.fetch_add(1, Ordering::Relaxed);
            } else {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    lat
}

/// Measures one destination count on a fresh cluster.
pub async fn measure(cfg: &McastBench, k: usize, bar: &ProgressBar) -> Result<McastRecord> {
    let total = cfg.total_groups.unwrap_or(k).max(k);
    let dir = cfg
        .data_root
        .as_ref()
        .map(|root| root.join(format!("k{k}")));
    let cluster = LocalCluster::start(ClusterOptions {
        groups: total,
        replicas: cfg.replicas,
        data_root: dir,
        tuning: RaftTuning::default(),
        recording: Recording::CountOnly,
        threads_per_replica: cfg.threads_per_replica,
        ..Default::default()
    })
    .await
    .map_err(|e| Error::Cluster(e.into()))?;
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        completed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let pool = client_pool(cluster.topology(), cfg.connections)?;
    let tasks: Vec<_> = (0..cfg.clients)
        .map(|i| {
            tokio::spawn(sender(
                i,
                pool[i % pool.len()].clone(),
                k,
                cfg.payload,
                cfg.seed,
                shared.clone(),
            ))
        })
        .collect();
    bar.set_message(format!("{k} dest group(s): warm-up"));
    tokio::time::sleep(cfg.warmup).await;
    shared.measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let tick = Duration::from_millis(250);
    while start.elapsed() < cfg.duration {
        tokio::time::sleep(tick.min(cfg.duration.saturating_sub(start.elapsed()))).await;
        let done = shared.completed.load(Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!(
            "{k} dest group(s): {:.0} msg/s",
            done as f64 / secs
        ));
        bar.set_position(
            (start.elapsed().as_secs_f64() / cfg.duration.as_secs_f64() * 1000.0) as u64,
        );
    }
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    shared.stop.store(true, Ordering::Relaxed);
    let mut lat = Latencies::default();
    for t in tasks {
        lat.merge(&t.await?);
    }
    cluster.shutdown().await;
    let messages = shared.completed.load(Ordering::Relaxed);
    Ok(McastRecord {
        dest_groups: k,
        total_groups: total,
        replicas: cfg.replicas,
        clients: cfg.clients,
        throughput_msgs_per_s: messages as f64 / elapsed,
        p50_ms: lat.quantile_ms(0.50),
        p95_ms: lat.quantile_ms(0.95),
        p99_ms: lat.quantile_ms(0.99),
        messages,
        errors: shared.errors.load(Ordering::Relaxed),
        duration_s: elapsed,
        storage: if cfg.data_root.is_some() {
            "disk"
        } else {
            "memory"
        }
        .into(),
    })
}

/// Runs every destination count in turn.
pub async fn run(cfg: &McastBench) -> Result<Vec<McastRecord>> {
    let mut out = Vec::new();
    for &k in &cfg.dest_groups {
        if k == 0 {
            let why = "dest_groups: a destination count must be at least 1";
            return Err(Error::Settings(why.into()));
        }
        let bar = if cfg.progress {
            ProgressBar::new(1000)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{bar:40.cyan/blue} {msg}")
                .expect("static progress template is valid"),
        );
        let rec = measure(cfg, k, &bar).await?;
        bar.finish_and_clear();
        out.push(rec);
    }
    Ok(out)
}

/// Renders records as an aligned table.
pub fn table(records: &[McastRecord]) -> String {
    let mut s = format!(
        "{:>11} {:>7} {:>14} {:>9} {:>9} {:>9} {:>7}\n",
        "dest_groups", "groups", "throughput/s", "p50_ms", "p95_ms", "p99_ms", "errors"
    );
    for r in records {
        s.push_str(&format!(
            "{:>11} {:>7} {:>14.0} {:>9.2} {:>9.2} {:>9.2} {:>7}\n",
            r.dest_groups,
            r.total_groups,
            r.throughput_msgs_per_s,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            r.errors
        ));
    }
    s
}
