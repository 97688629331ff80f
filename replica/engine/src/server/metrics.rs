//! Prometheus metrics of a replica (DESIGN.md §3): what its group executed, moves, the oracle's
//! consults and placement, Raft state, and the latency of the submissions it served as leader.
//!
//! Counts of executed commands are part of the replicated application state (every replica of a
//! group counts the same, and they survive restarts with the snapshot); they are read only when
//! Prometheus scrapes, so the apply path pays nothing for them. `ReplicaCollector` turns them
//! and the Raft metrics into metric families at scrape time; the one metric observed on the hot
//! path is the latency histogram, handed to the coordinator at start.
//!
//! Names follow the Prometheus conventions: prefix `dssmr_`, base units, counters end in
//! `_total`. Every family carries `group` (`oracle`, `p1`, `p2`, ...) and `replica` (ordinal);
//! no label is ever a variable name. Throughput and move rate are `rate()` over
//! `dssmr_commands_total` and `dssmr_variable_moves_total`; every replica of a group counts
//! every command, so aggregate with `max by (group)` (or select the leader with
//! `dssmr_raft_is_leader == 1`). Reads a leader answered off the log are not ordered, so no
//! other replica counts them: `dssmr_reads_total` is per replica (sum it) and throughput is
//! both together.

//!
//! The kinds and outcomes counted are [`crate::stats`]'s; the client side of the same story is
//! [`crate::client::metrics`].

use crate::client::metrics::set_counter;
use crate::ids::GroupId;
use crate::node::{GroupNode, Refusals};
use crate::stats::{AppStats, CommandKind, CommandOutcome};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::Arc;

pub(crate) use crate::ids::group_label;

/// The metrics of one replica process: one registry, registered once at start.
pub struct ReplicaMetrics {
    registry: Registry,
    latency: Histogram,
    commit_index: IntGauge,
}

impl ReplicaMetrics {
    /// Metrics of replica `ordinal` of `group`; the latency histogram is live from now on.
    pub fn new(group: GroupId, ordinal: usize) -> Self {
        let registry = Registry::new_custom(
            None,
            Some(
                [
                    ("group".to_string(), group_label(group)),
                    ("replica".to_string(), ordinal.to_string()),
                ]
                .into(),
            ),
        )
        .expect("static registry labels are valid");
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "dssmr_command_duration_seconds",
                "Time from a client's submission reaching the group leader to its reply.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ]),
        )
        .expect("static histogram options are valid");
        registry
            .register(Box::new(latency.clone()))
            .expect("registered once");
        let commit_index = IntGauge::new(
            "dssmr_raft_commit_index",
            "Index of the last log entry this replica knows to be committed.",
        )
        .expect("static gauge is valid");
        registry
            .register(Box::new(commit_index.clone()))
            .expect("registered once");
        ReplicaMetrics {
            registry,
            latency,
            commit_index,
        }
    }

    /// Records the commit index (read asynchronously from Raft before each scrape).
    pub(crate) fn set_commit_index(&self, index: u64) {
        self.commit_index
            .set(i64::try_from(index).unwrap_or(i64::MAX));
    }

    /// The histogram the coordinator observes served submissions in.
    pub fn latency(&self) -> Histogram {
        self.latency.clone()
    }

    /// Adds the scrape-time metrics of a started replica.
    pub fn watch(&self, node: &GroupNode) {
        self.registry
            .register(Box::new(ReplicaCollector::new(
                node,
                self.commit_index.clone(),
            )))
            .expect("registered once");
    }

    /// Everything in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Reads a replica's application counts and Raft metrics when Prometheus scrapes.
struct ReplicaCollector {
    node: NodeView,
    commands: IntCounterVec,
    retries: IntCounterVec,
    moves: IntCounterVec,
    consults: IntCounterVec,
    variables: IntGaugeVec,
    oracle_variables: IntGaugeVec,
    queued: IntGaugeVec,
    refused: IntCounterVec,
    reads: IntCounterVec,
    read_rounds: IntCounterVec,
    raft: Vec<IntGauge>,
    commit_index: IntGauge,
    descs: Vec<Desc>,
}

/// The Raft gauges, in the order [`ReplicaCollector::collect`] fills them.
const RAFT_GAUGES: [(&str, &str); 7] = [
    ("dssmr_raft_term", "Current Raft term of this replica."),
    (
        "dssmr_raft_is_leader",
        "1 if this replica leads its group, else 0.",
    ),
    (
        "dssmr_raft_has_leader",
        "1 if this replica knows a leader of its group, else 0.",
    ),
    (
        "dssmr_raft_last_log_index",
        "Index of the last entry in this replica's log.",
    ),
    (
        "dssmr_raft_applied_index",
        "Index of the last entry applied to the state machine.",
    ),
    (
        "dssmr_raft_apply_lag",
        "Log entries not yet applied (last log index - applied index).",
    ),
    (
        "dssmr_raft_voter",
        "1 if this replica is a voter of its group's membership, else 0.",
    ),
];

/// What the collector reads from a node (cheap clones of its handles).
struct NodeView {
    raft: crate::group::types::Raft,
    node_id: u64,
    stats: Box<dyn Fn() -> AppStats + Send + Sync>,
    refusals: Arc<Refusals>,
    coordinator: Arc<crate::coordinator::Coordinator>,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("static metric options are valid")
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric options are valid")
}

impl ReplicaCollector {
    fn new(node: &GroupNode, commit_index: IntGauge) -> Self {
        let commands = counter(
            "dssmr_commands_total",
            "Commands executed by this replica's group, by kind and outcome.",
            &["kind", "outcome"],
        );
        let retries = counter(
            "dssmr_retries_total",
            "Commands answered with retry: a variable they need is in another partition.",
            &[],
        );
        let moves = counter(
            "dssmr_variable_moves_total",
            "Variables moved into this partition.",
            &[],
        );
        let consults = counter(
            "dssmr_oracle_consults_total",
            "Consults (prophecy requests) answered by the oracle.",
            &[],
        );
        let variables = gauge("dssmr_variables", "Variables held by this partition.", &[]);
        let oracle_variables = gauge(
            "dssmr_oracle_variables",
            "Variables per partition in the oracle's map.",
            &["partition"],
        );
        let queued = gauge(
            "dssmr_queued_commands",
            "Commands delivered to this group and not finished (waiting for other groups).",
            &[],
        );
        let reads = counter(
            "dssmr_reads_total",
            "Read-only commands this replica answered off the log as its group's leader, after              a read index (not in dssmr_commands_total, which counts what the group ordered:              throughput is the sum of both).",
            &[],
        );
        let read_rounds = counter(
            "dssmr_read_index_rounds_total",
            "Read-index rounds (one quorum heartbeat round each, answering every read waiting              for it) this replica ran as leader.",
            &[],
        );
        let refused = counter(
            "dssmr_refused_requests_total",
            "Requests this replica refused because of their route: misaddressed (meant for \
             another replica whose address leads here now), unrouted, forbidden (Raft traffic \
             from outside the group).",
            &["reason"],
        );
        let raft: Vec<IntGauge> = RAFT_GAUGES
            .iter()
            .map(|(name, help)| IntGauge::new(*name, *help).expect("static gauge is valid"))
            .collect();
        let mut descs = Vec::new();
        for c in [
            &commands,
            &retries,
            &moves,
            &consults,
            &refused,
            &reads,
            &read_rounds,
        ] {
            descs.extend(c.desc().into_iter().cloned());
        }
        for g in [&variables, &oracle_variables, &queued] {
            descs.extend(g.desc().into_iter().cloned());
        }
        for g in &raft {
            descs.extend(g.desc().into_iter().cloned());
        }
        let shared = node.shared();
        ReplicaCollector {
            node: NodeView {
                raft: node.raft().clone(),
                node_id: node.node_id(),
                stats: Box::new(move || shared.state().app.stats()),
                refusals: node.refusals().clone(),
                coordinator: node.coordinator().clone(),
            },
            commands,
            retries,
            moves,
            consults,
            variables,
            oracle_variables,
            queued,
            refused,
            reads,
            read_rounds,
            raft,
            commit_index,
            descs,
        }
    }
}

impl Collector for ReplicaCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let stats = (self.node.stats)();
        for (k, o, n) in stats.commands.iter() {
            set_counter(&self.commands.with_label_values(&[k.name(), o.name()]), n);
        }
        set_counter(
            &self.retries.with_label_values(&[] as &[&str]),
            stats.commands.total(CommandOutcome::Retry),
        );
        set_counter(
            &self.consults.with_label_values(&[] as &[&str]),
            stats
                .commands
                .get(CommandKind::Consult, CommandOutcome::Executed),
        );
        let mut out = Vec::new();
        if let Some(v) = stats.variables {
            set_counter(
                &self.moves.with_label_values(&[] as &[&str]),
                stats.moves_in,
            );
            self.variables
                .with_label_values(&[] as &[&str])
                .set(v as i64);
            self.queued
                .with_label_values(&[] as &[&str])
                .set(stats.queued as i64);
            out.extend(self.moves.collect());
            out.extend(self.variables.collect());
            out.extend(self.queued.collect());
        }
        if !stats.placement.is_empty() {
            for (p, n) in &stats.placement {
                self.oracle_variables
                    .with_label_values(&[group_label(*p).as_str()])
                    .set(*n as i64);
            }
            out.extend(self.consults.collect());
            out.extend(self.oracle_variables.collect());
        }
        let m = self.node.raft.metrics().borrow().clone();
        let last_log = m.last_log_index.unwrap_or(0);
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        let voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == self.node.node_id);
        let values: [u64; 7] = [
            m.current_term,
            u64::from(m.current_leader == Some(self.node.node_id)),
            u64::from(m.current_leader.is_some()),
            last_log,
            applied,
            (self.commit_index.get().max(0) as u64).saturating_sub(applied),
            u64::from(voter),
        ];
        for (g, v) in self.raft.iter().zip(values) {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            out.extend(g.collect());
        }
        out.extend(self.commands.collect());
        out.extend(self.retries.collect());
        let r = &self.node.refusals;
        for (reason, n) in [
            ("misaddressed", r.misaddressed()),
            ("unrouted", r.unrouted()),
            ("forbidden", r.forbidden()),
        ] {
            set_counter(&self.refused.with_label_values(&[reason]), n);
        }
        out.extend(self.refused.collect());
        let c = &self.node.coordinator;
        set_counter(
            &self.reads.with_label_values(&[] as &[&str]),
            c.reads_served(),
        );
        set_counter(
            &self.read_rounds.with_label_values(&[] as &[&str]),
            c.read_rounds(),
        );
        out.extend(self.reads.collect());
        out.extend(self.read_rounds.collect());
        out
    }
}
