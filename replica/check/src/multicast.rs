//! Offline checker for the atomic multicast properties.
//!
//! DS-SMR ("Dynamic Scalable State Machine Replication", §2.2) relies on an
//! atomic multicast primitive. This module takes what a test run recorded,
//! the messages clients multicast ([`Multicast`]) and the full delivery
//! sequence of every replica ([`ReplicaLog`]), and checks that the recorded
//! history satisfies the properties of atomic multicast:
//!
//! - **validity**: if a correct process multicasts `m`, every correct process
//!   in a group in `m`'s destinations `γ` delivers `m`. A message counts as
//!   multicast by a correct process when its sender saw it complete
//!   ([`Multicast::acknowledged`]).
//! - **uniform agreement**: if a process (correct or not) delivers `m`, every
//!   correct process in a group in `γ` delivers `m`.
//! - **integrity**: every process delivers `m` at most once, only if `m` was
//!   multicast, and only if the process's group is in `γ`.
//! - **atomic order**: the relation "`m < m'` iff some process delivers `m`
//!   before `m'`" is acyclic. It is built from consecutive deliveries of every
//!   replica and checked for cycles with Tarjan's strongly connected
//!   components algorithm; one shortest cycle is reported per cyclic
//!   component.
//! - **prefix order**: for messages `m`, `m'` and processes `p ∈ g`, `q ∈ h`
//!   with `{g, h}` a subset of the destinations of both `m` and `m'`, if `p`
//!   delivers `m` and `q` delivers `m'`, then `p` delivers `m'` before `m` or
//!   `q` delivers `m` before `m'`. Equivalently, for every pair of replicas
//!   (possibly of the same group), once both sequences are restricted to the
//!   messages addressed to both of their groups, one restricted sequence is a
//!   prefix of the other.
//!
//! Validity and agreement are liveness properties: they are only meaningful
//! once the run has quiesced, so the logs must be captured after every
//! correct replica has caught up. Only replicas with
//! [`ReplicaLog::correct`] set are required to deliver; the sequences of all
//! replicas are checked for integrity and both order properties.
//!
//! The checker is pure (no I/O) and generic over the message id type. It
//! runs in time roughly linear in the number of deliveries, plus one linear
//! pass over both sequences per pair of replicas for prefix order.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::Hash;

/// Identifier of a replica group (a multicast destination).
pub type GroupId = u32;

/// Identifier of a replica.
pub type ReplicaId = u64;

/// At most this many violations are reported per property, so that one
/// failing property cannot hide the others and the output stays readable.
pub const MAX_VIOLATIONS_PER_PROPERTY: usize = 10;

/// A message some client multicast, with its destination groups;
/// `acknowledged` = the sender saw it complete (so validity applies to it:
/// its sender is treated as correct).
///
/// If the same id is listed more than once, its first occurrence is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multicast<Id> {
    /// The message id, as recorded in [`ReplicaLog::delivered`].
    pub id: Id,
    /// The destination groups (`γ`) of the message.
    pub dests: Vec<GroupId>,
    /// Whether the sender saw the multicast complete.
    pub acknowledged: bool,
}

/// The full delivery sequence recorded at one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaLog<Id> {
    /// The group the replica belongs to.
    pub group: GroupId,
    /// The replica's id.
    pub replica: ReplicaId,
    /// Whether the replica is correct (did not crash); only correct replicas
    /// are required to deliver every message addressed to their group.
    pub correct: bool,
    /// The ids of the messages the replica delivered, in delivery order.
    pub delivered: Vec<Id>,
}

/// A replica as named in a [`Violation`]: its group and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplicaRef {
    /// The group the replica belongs to.
    pub group: GroupId,
    /// The replica's id.
    pub replica: ReplicaId,
}

impl fmt::Display for ReplicaRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replica {} of group {}", self.replica, self.group)
    }
}

/// Why a delivery broke integrity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntegrityReason {
    /// The replica had already delivered the message at `first_position`.
    Duplicate {
        /// Index of the first delivery in the replica's sequence.
        first_position: usize,
    },
    /// No process multicast the message.
    NeverMulticast,
    /// The replica's group is not among the message's destinations.
    NotADestination {
        /// The message's destination groups.
        dests: Vec<GroupId>,
    },
}

impl fmt::Display for IntegrityReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntegrityReason::Duplicate { first_position } => {
                write!(f, "already delivered at position {first_position}")
            }
            IntegrityReason::NeverMulticast => f.write_str("never multicast"),
            IntegrityReason::NotADestination { dests } => {
                write!(f, "group not among the destinations {dests:?}")
            }
        }
    }
}

/// Which property failed, with enough detail (ids in Debug form, replicas,
/// groups) to debug it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// An acknowledged message was not delivered by a correct replica of one
    /// of its destination groups.
    Validity {
        /// The message (Debug form of its id).
        message: String,
        /// The correct replica that did not deliver it.
        missing_at: ReplicaRef,
    },
    /// A message delivered by some replica was not delivered by a correct
    /// replica of one of its destination groups.
    UniformAgreement {
        /// The message (Debug form of its id).
        message: String,
        /// A replica that delivered it.
        delivered_by: ReplicaRef,
        /// The correct replica that did not deliver it.
        missing_at: ReplicaRef,
    },
    /// A replica delivered a message twice, a message never multicast, or a
    /// message not addressed to its group.
    Integrity {
        /// The message (Debug form of its id).
        message: String,
        /// The replica that delivered it.
        at: ReplicaRef,
        /// Index of the offending delivery in the replica's sequence.
        position: usize,
        /// What is wrong with the delivery.
        reason: IntegrityReason,
    },
    /// The delivery order has a cycle: `witnesses[i]` delivered `cycle[i]`
    /// before `cycle[(i + 1) % cycle.len()]`.
    AtomicOrder {
        /// The messages on the cycle (Debug form of their ids).
        cycle: Vec<String>,
        /// For each edge of the cycle, a replica that delivered its source
        /// before its target.
        witnesses: Vec<ReplicaRef>,
    },
    /// Restricted to the messages addressed to both of their groups, the
    /// sequences of `first` and `second` diverge: neither is a prefix of the
    /// other.
    PrefixOrder {
        /// One replica of the pair.
        first: ReplicaRef,
        /// The other replica of the pair.
        second: ReplicaRef,
        /// Index in the restricted sequences where they first differ.
        position: usize,
        /// The message `first` delivered there (Debug form of its id).
        first_message: String,
        /// Index of that delivery in `first`'s full sequence.
        first_index: usize,
        /// The message `second` delivered there (Debug form of its id).
        second_message: String,
        /// Index of that delivery in `second`'s full sequence.
        second_index: usize,
    },
}

impl Violation {
    /// Short name of the violated property.
    #[must_use]
    pub fn property(&self) -> &'static str {
        match self {
            Violation::Validity { .. } => "validity",
            Violation::UniformAgreement { .. } => "uniform agreement",
            Violation::Integrity { .. } => "integrity",
            Violation::AtomicOrder { .. } => "atomic order",
            Violation::PrefixOrder { .. } => "prefix order",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} violated: ", self.property())?;
        match self {
            Violation::Validity {
                message,
                missing_at,
            } => write!(
                f,
                "acknowledged message {message} was not delivered by correct {missing_at}"
            ),
            Violation::UniformAgreement {
                message,
                delivered_by,
                missing_at,
            } => write!(
                f,
                "message {message} was delivered by {delivered_by} but not by correct {missing_at}"
            ),
            Violation::Integrity {
                message,
                at,
                position,
                reason,
            } => write!(
                f,
                "{at} delivered message {message} at position {position}: {reason}"
            ),
            Violation::AtomicOrder { cycle, witnesses } => {
                f.write_str("delivery order has a cycle: ")?;
                for (message, witness) in cycle.iter().zip(witnesses) {
                    write!(f, "{message} -(g{}/r{})-> ", witness.group, witness.replica)?;
                }
                match cycle.first() {
                    Some(first) => f.write_str(first),
                    None => Ok(()),
                }
            }
            Violation::PrefixOrder {
                first,
                second,
                position,
                first_message,
                first_index,
                second_message,
                second_index,
            } => write!(
                f,
                "on messages addressed to groups {} and {}, the sequences diverge at common \
                 position {position}: {first} delivered {first_message} (index {first_index}) \
                 where {second} delivered {second_message} (index {second_index})",
                first.group, second.group
            ),
        }
    }
}

impl std::error::Error for Violation {}

/// Summary of a history that satisfies every property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Number of distinct multicast message ids.
    pub messages: usize,
    /// Number of replica logs checked.
    pub replicas: usize,
    /// Total number of deliveries over all replicas.
    pub deliveries: usize,
}

/// Collects violations, at most [`MAX_VIOLATIONS_PER_PROPERTY`] per property.
#[derive(Default)]
struct Sink {
    counts: [usize; 5],
    violations: Vec<Violation>,
}

impl Sink {
    fn is_full(&self, property: usize) -> bool {
        self.counts[property] >= MAX_VIOLATIONS_PER_PROPERTY
    }

    fn push(&mut self, violation: Violation) {
        let property = property_slot(&violation);
        if !self.is_full(property) {
            self.counts[property] += 1;
            self.violations.push(violation);
        }
    }
}

const VALIDITY: usize = 0;
const AGREEMENT: usize = 1;
const INTEGRITY: usize = 2;
const ATOMIC_ORDER: usize = 3;
const PREFIX_ORDER: usize = 4;

fn property_slot(violation: &Violation) -> usize {
    match violation {
        Violation::Validity { .. } => VALIDITY,
        Violation::UniformAgreement { .. } => AGREEMENT,
        Violation::Integrity { .. } => INTEGRITY,
        Violation::AtomicOrder { .. } => ATOMIC_ORDER,
        Violation::PrefixOrder { .. } => PREFIX_ORDER,
    }
}

fn replica_ref<Id>(log: &ReplicaLog<Id>) -> ReplicaRef {
    ReplicaRef {
        group: log.group,
        replica: log.replica,
    }
}

/// Checks the recorded history against validity, uniform agreement,
/// integrity, atomic order and prefix order.
///
/// Returns a [`Report`] if every property holds.
///
/// # Errors
///
/// Returns every violation found (at most [`MAX_VIOLATIONS_PER_PROPERTY`]
/// per property) in a deterministic order: integrity, then validity and
/// uniform agreement (interleaved per replica), atomic order, prefix order.
pub fn check<Id: Copy + Eq + Hash + Ord + fmt::Debug>(
    multicasts: &[Multicast<Id>],
    logs: &[ReplicaLog<Id>],
) -> Result<Report, Vec<Violation>> {
    let mut sink = Sink::default();

    // Number every distinct id (multicast or delivered) as a graph node.
    let mut node_of: HashMap<Id, usize> = HashMap::new();
    let mut ids: Vec<Id> = Vec::new();
    // Nodes `0..messages` are the multicast messages: `multicast_of[node]`
    // is the first occurrence of the id in `multicasts`. Ids that were only
    // delivered get the nodes after them.
    let mut multicast_of: Vec<&Multicast<Id>> = Vec::new();
    for multicast in multicasts {
        if let Entry::Vacant(entry) = node_of.entry(multicast.id) {
            entry.insert(ids.len());
            ids.push(multicast.id);
            multicast_of.push(multicast);
        }
    }
    let messages = ids.len();
    let dests_of = |node: usize| -> Option<&[GroupId]> {
        multicast_of
            .get(node)
            .map(|multicast| multicast.dests.as_slice())
    };

    // Integrity, and per replica its sequence without repeated deliveries
    // (node, index in the full sequence) so that a duplicate reported as an
    // integrity violation does not also show up as a bogus order cycle.
    let mut sequences: Vec<Vec<(usize, usize)>> = Vec::with_capacity(logs.len());
    let mut delivered_sets: Vec<HashSet<usize>> = Vec::with_capacity(logs.len());
    let mut first_deliverer: HashMap<usize, usize> = HashMap::new();
    for (log_index, log) in logs.iter().enumerate() {
        let at = replica_ref(log);
        let mut first_position: HashMap<usize, usize> = HashMap::new();
        let mut sequence = Vec::with_capacity(log.delivered.len());
        for (position, id) in log.delivered.iter().enumerate() {
            let node = *node_of.entry(*id).or_insert_with(|| {
                ids.push(*id);
                ids.len() - 1
            });
            let integrity = |reason| Violation::Integrity {
                message: format!("{id:?}"),
                at,
                position,
                reason,
            };
            if let Some(&first) = first_position.get(&node) {
                sink.push(integrity(IntegrityReason::Duplicate {
                    first_position: first,
                }));
                continue;
            }
            first_position.insert(node, position);
            sequence.push((node, position));
            first_deliverer.entry(node).or_insert(log_index);
            match dests_of(node) {
                None => sink.push(integrity(IntegrityReason::NeverMulticast)),
                Some(dests) if !dests.contains(&log.group) => {
                    sink.push(integrity(IntegrityReason::NotADestination {
                        dests: dests.to_vec(),
                    }));
                }
                Some(_) => {}
            }
        }
        delivered_sets.push(first_position.into_keys().collect());
        sequences.push(sequence);
    }

    check_delivery(
        &multicast_of,
        logs,
        &delivered_sets,
        &first_deliverer,
        &mut sink,
    );
    check_atomic_order(&ids, logs, &sequences, &mut sink);
    check_prefix_order(&ids, logs, &sequences, &dests_of, &mut sink);

    if sink.violations.is_empty() {
        Ok(Report {
            messages,
            replicas: logs.len(),
            deliveries: logs.iter().map(|log| log.delivered.len()).sum(),
        })
    } else {
        Err(sink.violations)
    }
}

/// Validity and uniform agreement: every correct replica of a destination
/// group delivers every acknowledged message and every message delivered
/// anywhere. `multicast_of[node]` is the message numbered `node`,
/// `delivered_sets[r]` the nodes replica `r` delivered and
/// `first_deliverer[node]` the first replica that delivered `node`.
fn check_delivery<Id: fmt::Debug>(
    multicast_of: &[&Multicast<Id>],
    logs: &[ReplicaLog<Id>],
    delivered_sets: &[HashSet<usize>],
    first_deliverer: &HashMap<usize, usize>,
    sink: &mut Sink,
) {
    let mut addressed_to: HashMap<GroupId, Vec<usize>> = HashMap::new();
    for (node, multicast) in multicast_of.iter().enumerate() {
        let mut dests = multicast.dests.clone();
        dests.sort_unstable();
        dests.dedup();
        for group in dests {
            addressed_to.entry(group).or_default().push(node);
        }
    }
    for (log, delivered) in logs.iter().zip(delivered_sets) {
        if !log.correct {
            continue;
        }
        let Some(nodes) = addressed_to.get(&log.group) else {
            continue;
        };
        for &node in nodes {
            if delivered.contains(&node) {
                continue;
            }
            let multicast = multicast_of[node];
            let message = format!("{:?}", multicast.id);
            let missing_at = replica_ref(log);
            if multicast.acknowledged {
                sink.push(Violation::Validity {
                    message,
                    missing_at,
                });
            } else if let Some(&by) = first_deliverer.get(&node) {
                sink.push(Violation::UniformAgreement {
                    message,
                    delivered_by: replica_ref(&logs[by]),
                    missing_at,
                });
            }
        }
    }
}

/// Builds the delivery-order graph from consecutive deliveries and reports
/// one shortest cycle per strongly connected component with more than one
/// message.
fn check_atomic_order<Id: fmt::Debug>(
    ids: &[Id],
    logs: &[ReplicaLog<Id>],
    sequences: &[Vec<(usize, usize)>],
    sink: &mut Sink,
) {
    let n = ids.len();
    let mut witness: HashMap<(usize, usize), usize> = HashMap::new();
    let mut successors: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (log_index, sequence) in sequences.iter().enumerate() {
        for pair in sequence.windows(2) {
            let edge = (pair[0].0, pair[1].0);
            if let Entry::Vacant(entry) = witness.entry(edge) {
                entry.insert(log_index);
                successors[edge.0].push(edge.1);
            }
        }
    }

    for component in strongly_connected_components(&successors) {
        if sink.is_full(ATOMIC_ORDER) {
            break;
        }
        let cycle = shortest_cycle(&successors, &component);
        let witnesses = (0..cycle.len())
            .map(|i| {
                let edge = (cycle[i], cycle[(i + 1) % cycle.len()]);
                replica_ref(&logs[witness[&edge]])
            })
            .collect();
        sink.push(Violation::AtomicOrder {
            cycle: cycle
                .iter()
                .map(|&node| format!("{:?}", ids[node]))
                .collect(),
            witnesses,
        });
    }
}

/// Tarjan's algorithm, iterative. Returns the components with more than one
/// node (the graph has no self-loops), each listing its nodes.
fn strongly_connected_components(successors: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNVISITED: usize = usize::MAX;
    let n = successors.len();
    let mut index = vec![UNVISITED; n];
    let mut lowlink = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut next_index = 0;
    let mut components = Vec::new();
    // DFS frames: (node, index of the next successor to visit).
    let mut frames: Vec<(usize, usize)> = Vec::new();

    for root in 0..n {
        if index[root] != UNVISITED {
            continue;
        }
        index[root] = next_index;
        lowlink[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        frames.push((root, 0));
        while let Some(&(node, next)) = frames.last() {
            if let Some(&succ) = successors[node].get(next) {
                if let Some(frame) = frames.last_mut() {
                    frame.1 += 1;
                }
                if index[succ] == UNVISITED {
                    index[succ] = next_index;
                    lowlink[succ] = next_index;
                    next_index += 1;
                    stack.push(succ);
                    on_stack[succ] = true;
                    frames.push((succ, 0));
                } else if on_stack[succ] {
                    lowlink[node] = lowlink[node].min(index[succ]);
                }
                continue;
            }
            frames.pop();
            if let Some(&(parent, _)) = frames.last() {
                lowlink[parent] = lowlink[parent].min(lowlink[node]);
            }
            if lowlink[node] == index[node] {
                let mut component = Vec::new();
                while let Some(member) = stack.pop() {
                    on_stack[member] = false;
                    component.push(member);
                    if member == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.reverse();
                    components.push(component);
                }
            }
        }
    }
    components
}

/// A shortest cycle through the first node of `component` (a strongly
/// connected component with at least two nodes), found by breadth-first
/// search inside the component.
fn shortest_cycle(successors: &[Vec<usize>], component: &[usize]) -> Vec<usize> {
    let members: HashSet<usize> = component.iter().copied().collect();
    let start = component[0];
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &succ in &successors[node] {
            if succ == start {
                let mut cycle = vec![node];
                let mut current = node;
                while current != start {
                    current = parent[&current];
                    cycle.push(current);
                }
                cycle.reverse();
                return cycle;
            }
            if members.contains(&succ) && !parent.contains_key(&succ) {
                parent.insert(succ, node);
                queue.push_back(succ);
            }
        }
    }
    // Unreachable for a strongly connected component; fall back to listing it.
    component.to_vec()
}

/// For each pair of replicas, restricts both sequences to the messages
/// addressed to both of their groups and checks that one is a prefix of the
/// other.
fn check_prefix_order<'a, Id: fmt::Debug>(
    ids: &[Id],
    logs: &[ReplicaLog<Id>],
    sequences: &[Vec<(usize, usize)>],
    dests_of: &impl Fn(usize) -> Option<&'a [GroupId]>,
    sink: &mut Sink,
) {
    for (i, (first_log, first_sequence)) in logs.iter().zip(sequences).enumerate() {
        for (second_log, second_sequence) in logs.iter().zip(sequences).skip(i + 1) {
            if sink.is_full(PREFIX_ORDER) {
                return;
            }
            let (g, h) = (first_log.group, second_log.group);
            let common = |&&(node, _): &&(usize, usize)| {
                dests_of(node).is_some_and(|dests| dests.contains(&g) && dests.contains(&h))
            };
            let mismatch = first_sequence
                .iter()
                .filter(common)
                .zip(second_sequence.iter().filter(common))
                .enumerate()
                .find(|(_, (a, b))| a.0 != b.0);
            if let Some((position, (&(a, first_index), &(b, second_index)))) = mismatch {
                sink.push(Violation::PrefixOrder {
                    first: replica_ref(first_log),
                    second: replica_ref(second_log),
                    position,
                    first_message: format!("{:?}", ids[a]),
                    first_index,
                    second_message: format!("{:?}", ids[b]),
                    second_index,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mc(id: u32, dests: &[GroupId], acknowledged: bool) -> Multicast<u32> {
        Multicast {
            id,
            dests: dests.to_vec(),
            acknowledged,
        }
    }

    fn log(
        group: GroupId,
        replica: ReplicaId,
        correct: bool,
        delivered: &[u32],
    ) -> ReplicaLog<u32> {
        ReplicaLog {
            group,
            replica,
            correct,
            delivered: delivered.to_vec(),
        }
    }

    fn violations(multicasts: &[Multicast<u32>], logs: &[ReplicaLog<u32>]) -> Vec<Violation> {
        match check(multicasts, logs) {
            Ok(report) => panic!("history accepted: {report:?}"),
            Err(violations) => {
                for violation in &violations {
                    // Exercise Display on every reported violation.
                    assert!(!violation.to_string().is_empty());
                }
                violations
            }
        }
    }

    fn count(violations: &[Violation], property: &str) -> usize {
        violations
            .iter()
            .filter(|violation| violation.property() == property)
            .count()
    }

    /// Groups 1, 2, 3; messages with one to three destinations.
    fn messages() -> Vec<Multicast<u32>> {
        vec![
            mc(1, &[1], true),
            mc(2, &[1, 2], true),
            mc(3, &[2, 3], true),
            mc(4, &[1, 2, 3], true),
            mc(5, &[3], true),
            mc(6, &[1, 3], false), // delivered, but the client never saw it complete
            mc(7, &[2], true),
            mc(8, &[1, 2], false), // lost: never acknowledged nor delivered
        ]
    }

    const G1: &[u32] = &[1, 2, 4, 6];
    const G2: &[u32] = &[2, 7, 3, 4];
    const G3: &[u32] = &[5, 3, 4, 6];

    #[test]
    fn correct_history_passes() {
        let logs = vec![
            log(1, 1, true, G1),
            log(1, 2, true, G1),
            // Crashed after two deliveries: lags behind, its sequence is a prefix.
            log(1, 3, false, &G1[..2]),
            log(2, 4, true, G2),
            log(2, 5, true, G2),
            log(3, 6, true, G3),
            log(3, 7, true, G3),
            // Crashed early: delivered less than its group.
            log(3, 8, false, &G3[..1]),
        ];
        let report = check(&messages(), &logs).expect("history is correct");
        assert_eq!(
            report,
            Report {
                messages: 8,
                replicas: 8,
                deliveries: 4 * 6 + 2 + 1,
            }
        );
    }

    #[test]
    fn empty_history_passes() {
        let report = check::<u32>(&[], &[]).expect("nothing to violate");
        assert_eq!(report.deliveries, 0);
    }

    #[test]
    fn missing_acknowledged_delivery_breaks_validity() {
        let logs = vec![
            log(1, 1, true, G1),
            log(2, 4, true, G2),
            log(2, 5, true, &G2[..3]), // misses 4 (acknowledged)
            log(3, 6, true, G3),
        ];
        let found = violations(&messages(), &logs);
        assert_eq!(
            found,
            vec![Violation::Validity {
                message: "4".into(),
                missing_at: ReplicaRef {
                    group: 2,
                    replica: 5
                },
            }]
        );
    }

    #[test]
    fn validity_is_not_required_from_faulty_replicas() {
        let logs = vec![
            log(1, 1, true, G1),
            log(2, 4, true, G2),
            log(2, 5, false, &G2[..3]), // misses 4, but crashed
            log(3, 6, true, G3),
        ];
        assert!(check(&messages(), &logs).is_ok());
    }

    #[test]
    fn missing_delivery_of_delivered_message_breaks_agreement() {
        let logs = vec![
            log(1, 1, true, G1),
            log(1, 2, true, G1),
            log(2, 4, true, G2),
            log(3, 6, true, &[5, 3, 4]), // misses 6 (unacknowledged, delivered by g1)
        ];
        let found = violations(&messages(), &logs);
        assert_eq!(
            found,
            vec![Violation::UniformAgreement {
                message: "6".into(),
                delivered_by: ReplicaRef {
                    group: 1,
                    replica: 1
                },
                missing_at: ReplicaRef {
                    group: 3,
                    replica: 6
                },
            }]
        );
    }

    #[test]
    fn agreement_is_uniform_delivery_by_faulty_replica_counts() {
        let multicasts = vec![mc(1, &[1], false)];
        let logs = vec![log(1, 1, false, &[1]), log(1, 2, true, &[])];
        let found = violations(&multicasts, &logs);
        assert_eq!(count(&found, "uniform agreement"), 1);
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn duplicate_delivery_breaks_integrity() {
        let logs = vec![
            log(1, 1, true, &[1, 2, 4, 2, 6]),
            log(2, 4, true, G2),
            log(3, 6, true, G3),
        ];
        let found = violations(&messages(), &logs);
        assert_eq!(
            found,
            vec![Violation::Integrity {
                message: "2".into(),
                at: ReplicaRef {
                    group: 1,
                    replica: 1
                },
                position: 3,
                reason: IntegrityReason::Duplicate { first_position: 1 },
            }]
        );
    }

    #[test]
    fn delivery_of_unknown_message_breaks_integrity() {
        let logs = vec![
            log(1, 1, true, &[1, 2, 99, 4, 6]),
            log(2, 4, true, G2),
            log(3, 6, true, G3),
        ];
        let found = violations(&messages(), &logs);
        assert_eq!(
            found,
            vec![Violation::Integrity {
                message: "99".into(),
                at: ReplicaRef {
                    group: 1,
                    replica: 1
                },
                position: 2,
                reason: IntegrityReason::NeverMulticast,
            }]
        );
    }

    #[test]
    fn delivery_outside_destinations_breaks_integrity() {
        let logs = vec![
            log(1, 1, true, &[5, 1, 2, 4, 6]), // 5 is addressed to group 3 only
            log(2, 4, true, G2),
            log(3, 6, true, G3),
        ];
        let found = violations(&messages(), &logs);
        assert_eq!(
            found,
            vec![Violation::Integrity {
                message: "5".into(),
                at: ReplicaRef {
                    group: 1,
                    replica: 1
                },
                position: 0,
                reason: IntegrityReason::NotADestination { dests: vec![3] },
            }]
        );
    }

    #[test]
    fn opposite_orders_across_groups_break_prefix_and_atomic_order() {
        let multicasts = vec![mc(1, &[1, 2], true), mc(2, &[1, 2], true)];
        let logs = vec![log(1, 1, true, &[1, 2]), log(2, 2, true, &[2, 1])];
        let found = violations(&multicasts, &logs);
        assert_eq!(count(&found, "prefix order"), 1);
        assert_eq!(count(&found, "atomic order"), 1);
        assert_eq!(found.len(), 2);
        assert!(found.contains(&Violation::PrefixOrder {
            first: ReplicaRef {
                group: 1,
                replica: 1
            },
            second: ReplicaRef {
                group: 2,
                replica: 2
            },
            position: 0,
            first_message: "1".into(),
            first_index: 0,
            second_message: "2".into(),
            second_index: 0,
        }));
    }

    #[test]
    fn three_cycle_across_groups_breaks_atomic_order_only() {
        // a = 1 to {1, 3}, b = 2 to {1, 2}, c = 3 to {2, 3}.
        let multicasts = vec![
            mc(1, &[1, 3], true),
            mc(2, &[1, 2], true),
            mc(3, &[2, 3], true),
        ];
        let logs = vec![
            log(1, 1, true, &[1, 2]), // a before b
            log(2, 2, true, &[2, 3]), // b before c
            log(3, 3, true, &[3, 1]), // c before a
        ];
        let found = violations(&multicasts, &logs);
        assert_eq!(found.len(), 1, "{found:?}");
        let Violation::AtomicOrder { cycle, witnesses } = &found[0] else {
            panic!("expected an atomic order violation, got {found:?}");
        };
        assert_eq!(cycle.len(), 3);
        let groups: HashSet<GroupId> = witnesses.iter().map(|w| w.group).collect();
        assert_eq!(groups, HashSet::from([1, 2, 3]));
        // Each witness really delivered its edge in that order.
        for (i, witness) in witnesses.iter().enumerate() {
            let from: u32 = cycle[i].parse().unwrap();
            let to: u32 = cycle[(i + 1) % 3].parse().unwrap();
            let delivered = &logs
                .iter()
                .find(|l| l.group == witness.group)
                .unwrap()
                .delivered;
            let pos = |m| delivered.iter().position(|&d| d == m).unwrap();
            assert!(pos(from) < pos(to));
        }
    }

    #[test]
    fn same_group_replicas_diverging_break_prefix_order() {
        let multicasts = vec![mc(1, &[1], false), mc(2, &[1], false), mc(3, &[1], false)];
        let logs = vec![log(1, 1, false, &[1, 2]), log(1, 2, false, &[1, 3])];
        let found = violations(&multicasts, &logs);
        assert_eq!(
            found,
            vec![Violation::PrefixOrder {
                first: ReplicaRef {
                    group: 1,
                    replica: 1
                },
                second: ReplicaRef {
                    group: 1,
                    replica: 2
                },
                position: 1,
                first_message: "2".into(),
                first_index: 1,
                second_message: "3".into(),
                second_index: 1,
            }]
        );
    }

    #[test]
    fn gap_in_common_messages_breaks_prefix_order() {
        // q skipped a message p delivered before one they both delivered.
        let multicasts = vec![mc(1, &[1, 2], false), mc(2, &[1, 2], false)];
        let logs = vec![log(1, 1, false, &[1, 2]), log(2, 2, false, &[2])];
        let found = violations(&multicasts, &logs);
        assert_eq!(count(&found, "prefix order"), 1);
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn violations_are_capped_per_property() {
        let multicasts: Vec<_> = (0..100).map(|id| mc(id, &[1], true)).collect();
        let logs = vec![log(1, 1, true, &[]), log(1, 2, true, &[1000, 1001])];
        let found = violations(&multicasts, &logs);
        assert_eq!(count(&found, "validity"), MAX_VIOLATIONS_PER_PROPERTY);
        assert_eq!(count(&found, "integrity"), 2);
        assert!(found.len() <= 5 * MAX_VIOLATIONS_PER_PROPERTY);
    }

    #[test]
    fn large_history_is_checked_quickly() {
        // 10 groups x 2 replicas x 20,000 deliveries; every message goes to
        // one to three consecutive groups, all delivered in id order.
        let groups = 10u32;
        let per_replica = 20_000usize;
        let mut multicasts = Vec::new();
        let mut delivered: Vec<Vec<u32>> = vec![Vec::new(); groups as usize];
        let mut id = 0u32;
        while delivered.iter().any(|d| d.len() < per_replica) {
            let span = 1 + id % 3;
            let first = (id / 3) % groups;
            let dests: Vec<GroupId> = (0..span).map(|k| (first + k) % groups).collect();
            for &g in &dests {
                delivered[g as usize].push(id);
            }
            multicasts.push(mc(id, &dests, true));
            id += 1;
        }
        let logs: Vec<_> = (0..groups)
            .flat_map(|g| {
                let d = delivered[g as usize].clone();
                [
                    log(g, 2 * u64::from(g), true, &d),
                    log(g, 2 * u64::from(g) + 1, true, &d),
                ]
            })
            .collect();
        let start = std::time::Instant::now();
        let report = check(&multicasts, &logs).expect("history is correct");
        assert_eq!(report.replicas, 20);
        assert!(report.deliveries >= 20 * per_replica);
        assert!(
            start.elapsed().as_secs() < 30,
            "too slow: {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn display_names_property_and_replicas() {
        let violation = Violation::AtomicOrder {
            cycle: vec!["1".into(), "2".into()],
            witnesses: vec![
                ReplicaRef {
                    group: 1,
                    replica: 10,
                },
                ReplicaRef {
                    group: 2,
                    replica: 20,
                },
            ],
        };
        assert_eq!(
            violation.to_string(),
            "atomic order violated: delivery order has a cycle: 1 -(g1/r10)-> 2 -(g2/r20)-> 1"
        );
        let error: &dyn std::error::Error = &violation;
        assert!(error.source().is_none());
    }
}
