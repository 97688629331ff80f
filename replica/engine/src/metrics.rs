//! Prometheus metrics of a replica (DESIGN.md §3): what its group executed, moves, the oracle's
//! consults and placement, Raft state, and the latency of the submissions it served as leader.
//!
//! Counts of executed commands are part of the replicated application state (every replica of a
//! group counts the same, and they survive restarts with the snapshot); they are read only when
//! Prometheus scrapes, so the apply path pays nothing for them. [`ReplicaCollector`] turns them
//! and the Raft metrics into metric families at scrape time; the one metric observed on the hot
//! path is the latency histogram, handed to the coordinator at start.
//!
//! Names follow the Prometheus conventions: prefix `dssmr_`, base units, counters end in
//! `_total`. Every family carries `group` (`oracle`, `p1`, `p2`, ...) and `replica` (ordinal);
//! no label is ever a variable name. Throughput and move rate are `rate()` over
//! `dssmr_commands_total` and `dssmr_variable_moves_total`; every replica of a group counts
//! every command, so aggregate with `max by (group)` (or select the leader with
//! `dssmr_raft_is_leader == 1`).

use crate::group::GroupNode;
use crate::ids::GroupId;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use serde::{Deserialize, Serialize};

/// The kind of a command a group executed (label `kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CommandKind {
    /// access(ω) with every variable in one partition (DS-SMR's single-partition execution).
    Access,
    /// access(ω) run by several partitions with variable exchange (S-SMR, Algorithm 1): every
    /// multi-partition command in S-SMR mode, a fallback in DS-SMR mode.
    Exchange,
    /// access(ω) run spread over the partitions that hold its variables (DS-SMR, settled
    /// variables not moved).
    Spread,
    /// move(ω, from, to).
    Move,
    /// create(v).
    Create,
    /// delete(v).
    Delete,
    /// consult(C), answered by the oracle with a prophecy.
    Consult,
    /// An administrative change of the oracle's placement (add or drain a partition).
    Admin,
}

impl CommandKind {
    /// Every kind, in label order.
    pub const ALL: [CommandKind; 8] = [
        CommandKind::Access,
        CommandKind::Exchange,
        CommandKind::Spread,
        CommandKind::Move,
        CommandKind::Create,
        CommandKind::Delete,
        CommandKind::Consult,
        CommandKind::Admin,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            CommandKind::Access => "access",
            CommandKind::Exchange => "exchange",
            CommandKind::Spread => "spread",
            CommandKind::Move => "move",
            CommandKind::Create => "create",
            CommandKind::Delete => "delete",
            CommandKind::Consult => "consult",
            CommandKind::Admin => "admin",
        }
    }
}

/// How a command ended in a group (label `outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CommandOutcome {
    /// It ran (or, for create/delete/move/consult, took effect or was answered).
    Executed,
    /// Not every variable it needs is here: the client must move them and retry.
    Retry,
    /// A create found its variable existing.
    Nok,
    /// Malformed or misdirected.
    Rejected,
}

impl CommandOutcome {
    /// Every outcome, in label order.
    pub const ALL: [CommandOutcome; 4] = [
        CommandOutcome::Executed,
        CommandOutcome::Retry,
        CommandOutcome::Nok,
        CommandOutcome::Rejected,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            CommandOutcome::Executed => "executed",
            CommandOutcome::Retry => "retry",
            CommandOutcome::Nok => "nok",
            CommandOutcome::Rejected => "rejected",
        }
    }
}

/// Cumulative counts of executed commands per kind and outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandCounts([[u64; 4]; 8]);

impl CommandCounts {
    /// Counts one command.
    pub fn add(&mut self, kind: CommandKind, outcome: CommandOutcome) {
        self.0[kind as usize][outcome as usize] += 1;
    }

    /// The count of one kind and outcome.
    pub fn get(&self, kind: CommandKind, outcome: CommandOutcome) -> u64 {
        self.0[kind as usize][outcome as usize]
    }

    /// Every non-zero count.
    pub fn iter(&self) -> impl Iterator<Item = (CommandKind, CommandOutcome, u64)> + '_ {
        CommandKind::ALL.into_iter().flat_map(move |k| {
            CommandOutcome::ALL
                .into_iter()
                .map(move |o| (k, o, self.get(k, o)))
                .filter(|(_, _, n)| *n > 0)
        })
    }

    /// Sum over kinds of one outcome.
    pub fn total(&self, outcome: CommandOutcome) -> u64 {
        CommandKind::ALL.iter().map(|k| self.get(*k, outcome)).sum()
    }
}

/// What an application reports for metrics ([`crate::app::Application::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppStats {
    /// Commands executed so far, by kind and outcome.
    pub commands: CommandCounts,
    /// Variables moved into this partition so far.
    pub moves_in: u64,
    /// Variables this partition holds now (`None` for groups that hold none).
    pub variables: Option<u64>,
    /// Commands delivered and not finished (waiting for another group).
    pub queued: u64,
    /// The oracle's map: variables per partition.
    pub placement: Vec<(GroupId, u64)>,
}

impl CommandKind {
    /// The kind of `cmd`.
    pub fn of(cmd: &crate::command::Command) -> Self {
        use crate::command::{Command, Execution};
        match cmd {
            Command::Access { execution, .. } => match execution {
                Execution::Local => CommandKind::Access,
                Execution::Exchange => CommandKind::Exchange,
                Execution::Spread { .. } => CommandKind::Spread,
            },
            Command::Move { .. } => CommandKind::Move,
            Command::Create { .. } => CommandKind::Create,
            Command::Delete { .. } => CommandKind::Delete,
            Command::Consult { .. } => CommandKind::Consult,
            Command::Admin(_) => CommandKind::Admin,
        }
    }
}

impl CommandOutcome {
    /// The outcome a group's `reply` reports.
    pub fn of(reply: &crate::command::Reply) -> Self {
        use crate::command::Reply;
        match reply {
            Reply::Prophecy(_) | Reply::Done(_) | Reply::Ok => CommandOutcome::Executed,
            Reply::Retry { .. } => CommandOutcome::Retry,
            Reply::Nok => CommandOutcome::Nok,
            Reply::Rejected(_) => CommandOutcome::Rejected,
        }
    }
}

pub use crate::ids::group_label;

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
    pub fn set_commit_index(&self, index: u64) {
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
        let raft: Vec<IntGauge> = RAFT_GAUGES
            .iter()
            .map(|(name, help)| IntGauge::new(*name, *help).expect("static gauge is valid"))
            .collect();
        let mut descs = Vec::new();
        for c in [&commands, &retries, &moves, &consults] {
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
            },
            commands,
            retries,
            moves,
            consults,
            variables,
            oracle_variables,
            queued,
            raft,
            commit_index,
            descs,
        }
    }
}

/// Sets a scrape-time counter to `value` (collect() runs under the registry's lock).
fn set_counter(c: &prometheus::IntCounter, value: u64) {
    c.reset();
    c.inc_by(value);
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
        out
    }
}

/// The metrics of a client process (`dssmr bench ... --metrics-addr`): what its proxies did,
/// read from their shared [`ProxyStats`] at scrape time. These are the client's side of
/// DS-SMR: cache hits and misses, consults, moves it asked for, retries, S-SMR fallbacks.
pub struct ClientMetrics {
    registry: Registry,
}

/// Counters of a client process: (name, help, reader).
type ClientCounter = (
    &'static str,
    &'static str,
    fn(&crate::client::proxy::StatsSnapshot) -> u64,
);

const CLIENT_COUNTERS: [ClientCounter; 9] = [
    (
        "dssmr_client_commands_total",
        "Commands issued by this client process (access, create, delete).",
        |s| s.commands,
    ),
    (
        "dssmr_client_completed_total",
        "Commands that completed.",
        |s| s.completed,
    ),
    (
        "dssmr_client_oracle_consults_total",
        "Consults sent to the oracle.",
        |s| s.consults,
    ),
    (
        "dssmr_client_cache_hits_total",
        "Commands whose variables were all in the location cache.",
        |s| s.cache_hits,
    ),
    (
        "dssmr_client_cache_misses_total",
        "Commands that had to consult the oracle first.",
        |s| s.cache_misses,
    ),
    (
        "dssmr_client_variable_moves_total",
        "Variables this client asked to move.",
        |s| s.moves,
    ),
    (
        "dssmr_client_retries_total",
        "Retry replies received.",
        |s| s.retries,
    ),
    (
        "dssmr_ssmr_fallbacks_total",
        "Commands that fell back to S-SMR after too many retries.",
        |s| s.fallbacks,
    ),
    (
        "dssmr_client_spreads_total",
        "Commands run spread over the partitions holding their variables.",
        |s| s.spreads,
    ),
];

impl ClientMetrics {
    /// Metrics over `stats`.
    pub fn new(stats: std::sync::Arc<crate::client::proxy::ProxyStats>) -> Self {
        let registry = Registry::new();
        registry
            .register(Box::new(ClientCollector::new(stats)))
            .expect("registered once");
        ClientMetrics { registry }
    }

    /// Everything in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

struct ClientCollector {
    stats: std::sync::Arc<crate::client::proxy::ProxyStats>,
    counters: Vec<prometheus::IntCounter>,
    descs: Vec<Desc>,
}

impl ClientCollector {
    fn new(stats: std::sync::Arc<crate::client::proxy::ProxyStats>) -> Self {
        let counters: Vec<prometheus::IntCounter> = CLIENT_COUNTERS
            .iter()
            .map(|(name, help, _)| {
                prometheus::IntCounter::new(*name, *help).expect("static counter is valid")
            })
            .collect();
        let descs = counters
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        ClientCollector {
            stats,
            counters,
            descs,
        }
    }
}

impl Collector for ClientCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let snap = self.stats.snapshot();
        let mut out = Vec::new();
        for (c, (_, _, read)) in self.counters.iter().zip(CLIENT_COUNTERS.iter()) {
            set_counter(c, read(&snap));
            out.extend(c.collect());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_counts_add_up_per_kind_and_outcome() {
        let mut c = CommandCounts::default();
        c.add(CommandKind::Access, CommandOutcome::Executed);
        c.add(CommandKind::Access, CommandOutcome::Executed);
        c.add(CommandKind::Access, CommandOutcome::Retry);
        c.add(CommandKind::Spread, CommandOutcome::Retry);
        c.add(CommandKind::Consult, CommandOutcome::Executed);
        assert_eq!(c.get(CommandKind::Access, CommandOutcome::Executed), 2);
        assert_eq!(c.total(CommandOutcome::Retry), 2);
        let all: Vec<_> = c.iter().collect();
        assert_eq!(all.len(), 4);
        assert!(all.iter().all(|(_, _, n)| *n > 0));
    }

    #[test]
    fn client_metrics_render_the_proxy_counters() {
        use std::sync::atomic::Ordering;
        let stats = std::sync::Arc::new(crate::client::proxy::ProxyStats::default());
        stats.cache_hits.fetch_add(7, Ordering::Relaxed);
        stats.fallbacks.fetch_add(2, Ordering::Relaxed);
        let m = ClientMetrics::new(stats.clone());
        let text = m.render();
        assert!(text.contains("dssmr_client_cache_hits_total 7"), "{text}");
        assert!(text.contains("dssmr_ssmr_fallbacks_total 2"), "{text}");
        stats.fallbacks.fetch_add(1, Ordering::Relaxed);
        assert!(m.render().contains("dssmr_ssmr_fallbacks_total 3"));
    }
}
