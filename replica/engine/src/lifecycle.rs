//! The lifecycle of a cluster's partitions — active, draining, removed — as every group
//! replicates it.
//!
//! A partition is added, drained and removed by an administrative command (the operator's
//! scaling) that is atomically multicast to the oracle and to every partition that exists at
//! that point; the oracle decides whether it takes effect and sends every partition among the
//! destinations its resulting [`Lifecycle`] (a [`crate::command::Transfer::TopologyDecision`]).
//! So each group holds a copy of the table that changes at the same point of the multicast
//! order everywhere, and a command whose validity depends on it — a move into a partition
//! that no longer takes variables, a message naming a removed partition — is judged the same
//! way by every destination that delivers it, without asking anyone.
//!
//! Partition numbers are never reused: a removed partition stays in the table as
//! [`Phase::Removed`], and [`Lifecycle::next_partition`] is above every number the cluster
//! ever had. Channel state, reply caches and routes are kept per partition number, so a new
//! partition can never be mistaken for an old one (see `docs/architecture.md`).
//!
//! Pure data and rules; no I/O.

use crate::ids::{GroupId, ORACLE};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// An administrative change of the cluster's partitions (the operator's scaling): where the
/// oracle places variables, and the topology it publishes to replicas and clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminOp {
    /// Place new variables in this partition too (a partition added to the cluster, or a
    /// drained one taken back), and publish its members' addresses (empty: the ones every
    /// replica's config has).
    AddPartition {
        /// The partition.
        partition: GroupId,
        /// Its member addresses, index = ordinal.
        members: Vec<String>,
    },
    /// To the oracle only, before [`AdminOp::AddPartition`] of a partition started at run
    /// time: publish its members' addresses, so that every group can reach it to order the
    /// add with it (it takes no variables, and clients do not use it, until added).
    JoinPartition {
        /// The partition.
        partition: GroupId,
        /// Its member addresses, index = ordinal.
        members: Vec<String>,
    },
    /// Stop placing new variables in this partition; the oracle leader then moves every
    /// variable out of it.
    DrainPartition(GroupId),
    /// Take a drained partition out of the topology: replicas and clients stop using it
    /// (refused while it holds variables or still takes new ones).
    RemovePartition(GroupId),
}

impl AdminOp {
    /// The partition the operation is about.
    pub fn partition(&self) -> GroupId {
        match self {
            AdminOp::AddPartition { partition, .. } | AdminOp::JoinPartition { partition, .. } => {
                *partition
            }
            AdminOp::DrainPartition(p) | AdminOp::RemovePartition(p) => *p,
        }
    }
}

/// Where a partition stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// New variables may be placed in it and moved into it.
    Active,
    /// Its variables are moved out; nothing new goes in.
    Draining,
    /// Out of the cluster for good: no message may name it any more, its number is never
    /// handed out again.
    Removed,
}

impl Phase {
    /// The name the admin API reports.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Active => "active",
            Phase::Draining => "draining",
            Phase::Removed => "removed",
        }
    }
}

/// Why an administrative command or a move cannot take effect.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum Refusal {
    /// The command was built on an older topology: it misses partitions that exist now, or
    /// names one that no longer takes it. Ask again with a fresh topology.
    #[error("stale topology (version {version}): {why}")]
    Stale {
        /// The version the refusing group holds.
        version: u64,
        /// What does not fit.
        why: String,
    },
    /// The command can never take effect as asked.
    #[error("{0}")]
    Invalid(String),
}

impl Refusal {
    /// True when asking again with a fresh topology may succeed.
    pub fn is_stale(&self) -> bool {
        matches!(self, Refusal::Stale { .. })
    }
}

/// The table of partitions every group replicates, with its version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// Grows with every change.
    version: u64,
    phases: BTreeMap<GroupId, Phase>,
}

impl Lifecycle {
    /// The table of a new cluster: `initial` (its config's initial partitions) active. Must
    /// be the same at every replica of every group and at every start.
    pub fn initial(initial: &[GroupId]) -> Self {
        Lifecycle {
            version: 0,
            phases: initial
                .iter()
                .filter(|p| **p != ORACLE)
                .map(|p| (*p, Phase::Active))
                .collect(),
        }
    }

    /// Grows with every change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Where `p` stands; `None`: never added.
    pub fn phase(&self, p: GroupId) -> Option<Phase> {
        self.phases.get(&p).copied()
    }

    /// True when variables may go to `p`.
    pub fn is_active(&self, p: GroupId) -> bool {
        self.phase(p) == Some(Phase::Active)
    }

    /// True when `p` was removed.
    pub fn is_removed(&self, p: GroupId) -> bool {
        self.phase(p) == Some(Phase::Removed)
    }

    /// The partitions variables may go to, in order.
    pub fn active(&self) -> Vec<GroupId> {
        self.in_phase(|ph| ph == Phase::Active)
    }

    /// The partitions that exist (active or draining), in order: the destinations every
    /// administrative command must have.
    pub fn existing(&self) -> Vec<GroupId> {
        self.in_phase(|ph| ph != Phase::Removed)
    }

    /// Every partition with its phase, removed ones included, in order.
    pub fn phases(&self) -> impl Iterator<Item = (GroupId, Phase)> + '_ {
        self.phases.iter().map(|(p, ph)| (*p, *ph))
    }

    fn in_phase(&self, keep: impl Fn(Phase) -> bool) -> Vec<GroupId> {
        self.phases
            .iter()
            .filter(|(_, ph)| keep(**ph))
            .map(|(p, _)| *p)
            .collect()
    }

    /// The lowest partition number never used by the cluster (`known`: numbers of its
    /// config too): what the next partition added must be numbered at least.
    pub fn next_partition(&self, known: &[GroupId]) -> GroupId {
        let highest = self
            .phases
            .keys()
            .chain(known)
            .map(|p| p.0)
            .max()
            .unwrap_or(0);
        GroupId(highest + 1)
    }

    fn stale(&self, why: String) -> Refusal {
        Refusal::Stale {
            version: self.version,
            why,
        }
    }

    /// Whether a move of variables from `from` to `to`, multicast to `dests`, may take
    /// effect: it must go to the oracle and the two partitions exactly, out of a partition
    /// that exists and into an active one. Every destination of the move judges it the same
    /// way, since every one holds this table as of the move's place in the order.
    pub fn check_move(&self, from: GroupId, to: GroupId, dests: &[GroupId]) -> Result<(), Refusal> {
        let mut expected = vec![ORACLE, from, to];
        expected.sort_unstable();
        expected.dedup();
        let mut got = dests.to_vec();
        got.sort_unstable();
        got.dedup();
        if from == to || from == ORACLE || to == ORACLE || got != expected {
            return Err(Refusal::Invalid(format!(
                "a move from {from} to {to} goes to the oracle and those two partitions, \
                 not to {dests:?}"
            )));
        }
        if !self.is_active(to) {
            return Err(self.stale(format!(
                "{to} takes no variables ({})",
                self.phase(to).map_or("not added", Phase::name)
            )));
        }
        match self.phase(from) {
            Some(Phase::Active | Phase::Draining) => Ok(()),
            other => Err(self.stale(format!(
                "{from} holds no variables ({})",
                other.map_or("not added", Phase::name)
            ))),
        }
    }

    /// The partitions `op` must be multicast to besides the oracle: every existing
    /// partition, and the one it adds (none for [`AdminOp::JoinPartition`], which only the
    /// oracle orders).
    pub fn destinations_of(&self, op: &AdminOp) -> Vec<GroupId> {
        if matches!(op, AdminOp::JoinPartition { .. }) {
            return Vec::new();
        }
        let mut dests = self.existing();
        if let AdminOp::AddPartition { partition, .. } = op {
            if !dests.contains(partition) {
                dests.push(*partition);
                dests.sort_unstable();
            }
        }
        dests
    }

    /// Applies `op`, multicast to `dests`, if it may take effect; `holds(p)` tells how many
    /// variables partition `p` holds (the oracle's count). Refused when `dests` misses a
    /// partition that exists (the command was built on an older topology), when it adds a
    /// removed partition (numbers are never reused), drains the last active partition or one
    /// that is not active, or removes a partition that is active or still holds variables.
    /// Applying the same operation twice changes nothing the second time.
    pub fn apply(
        &mut self,
        op: &AdminOp,
        dests: &[GroupId],
        holds: impl Fn(GroupId) -> u64,
    ) -> Result<(), Refusal> {
        let p = op.partition();
        if p == ORACLE {
            return Err(Refusal::Invalid("the oracle is not a partition".into()));
        }
        let missing: Vec<GroupId> = self
            .destinations_of(op)
            .into_iter()
            .filter(|q| !dests.contains(q))
            .collect();
        if !missing.is_empty() || !dests.contains(&ORACLE) {
            return Err(self.stale(format!(
                "the command must go to the oracle and every partition: it misses {missing:?}"
            )));
        }
        let next = match (op, self.phase(p)) {
            (AdminOp::JoinPartition { .. }, Some(Phase::Removed))
            | (AdminOp::AddPartition { .. }, Some(Phase::Removed)) => {
                return Err(Refusal::Invalid(format!(
                    "partition {} was removed and partition numbers are never reused: add \
                     partition {} instead",
                    p.0,
                    self.next_partition(&[]).0
                )))
            }
            // Joining changes no phase: the oracle records the members.
            (AdminOp::JoinPartition { .. }, _) => return Ok(()),
            (AdminOp::AddPartition { .. }, Some(Phase::Active)) => return Ok(()),
            (AdminOp::AddPartition { .. }, _) => Phase::Active,
            (AdminOp::DrainPartition(_), Some(Phase::Draining)) => return Ok(()),
            (AdminOp::DrainPartition(_), Some(Phase::Active)) => {
                if self.active().len() < 2 {
                    return Err(Refusal::Invalid(format!(
                        "cannot drain {p}: it is the only partition variables can go to"
                    )));
                }
                Phase::Draining
            }
            (AdminOp::DrainPartition(_), other) => {
                return Err(Refusal::Invalid(format!(
                    "cannot drain {p}: it is {}",
                    other.map_or("not added", Phase::name)
                )))
            }
            (AdminOp::RemovePartition(_), Some(Phase::Removed)) => return Ok(()),
            (AdminOp::RemovePartition(_), Some(Phase::Draining)) => match holds(p) {
                0 => Phase::Removed,
                n => {
                    return Err(Refusal::Invalid(format!(
                        "cannot remove {p}: it still holds {n} variables"
                    )))
                }
            },
            (AdminOp::RemovePartition(_), Some(Phase::Active)) => {
                return Err(Refusal::Invalid(format!(
                    "cannot remove {p}: variables still go there (drain it first)"
                )))
            }
            (AdminOp::RemovePartition(_), None) => {
                return Err(Refusal::Invalid(format!(
                    "cannot remove {p}: it was never added"
                )))
            }
        };
        self.phases.insert(p, next);
        self.version += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(n: u32) -> GroupId {
        GroupId(n)
    }

    fn all(l: &Lifecycle, extra: &[u32]) -> Vec<GroupId> {
        let mut d = vec![ORACLE];
        d.extend(l.existing());
        d.extend(extra.iter().map(|n| g(*n)));
        d
    }

    fn add(p: u32) -> AdminOp {
        AdminOp::AddPartition {
            partition: g(p),
            members: vec![],
        }
    }

    #[test]
    fn a_partition_is_added_drained_and_removed_and_its_number_never_comes_back() {
        let mut l = Lifecycle::initial(&[g(1), g(2)]);
        assert_eq!(l.next_partition(&[]), g(3));
        l.apply(&add(3), &all(&l, &[3]), |_| 0).unwrap();
        assert_eq!(l.active(), [g(1), g(2), g(3)]);
        let v = l.version();
        l.apply(&add(3), &all(&l, &[]), |_| 0).unwrap();
        assert_eq!(l.version(), v, "adding again changes nothing");
        let drain = AdminOp::DrainPartition(g(3));
        l.apply(&drain, &all(&l, &[]), |_| 0).unwrap();
        assert_eq!(l.phase(g(3)), Some(Phase::Draining));
        let remove = AdminOp::RemovePartition(g(3));
        let e = l.apply(&remove, &all(&l, &[]), |_| 5).unwrap_err();
        assert!(e.to_string().contains("still holds 5 variables"), "{e}");
        l.apply(&remove, &all(&l, &[]), |_| 0).unwrap();
        assert!(l.is_removed(g(3)));
        assert_eq!(l.existing(), [g(1), g(2)]);
        let e = l.apply(&add(3), &all(&l, &[3]), |_| 0).unwrap_err();
        assert!(
            e.to_string().contains("never reused: add partition 4"),
            "{e}"
        );
        assert_eq!(l.next_partition(&[]), g(4));
    }

    #[test]
    fn a_command_that_misses_an_existing_partition_is_stale() {
        let mut l = Lifecycle::initial(&[g(1), g(2)]);
        let e = l.apply(&add(3), &[ORACLE, g(1), g(3)], |_| 0).unwrap_err();
        assert!(e.is_stale(), "{e}");
        let e = l
            .apply(&AdminOp::DrainPartition(g(1)), &[g(1), g(2)], |_| 0)
            .unwrap_err();
        assert!(e.is_stale(), "the oracle is a destination too: {e}");
        assert_eq!(l.version(), 0, "nothing changed");
    }

    #[test]
    fn the_last_active_partition_is_not_drained() {
        let mut l = Lifecycle::initial(&[g(1), g(2)]);
        l.apply(&AdminOp::DrainPartition(g(2)), &all(&l, &[]), |_| 0)
            .unwrap();
        let e = l
            .apply(&AdminOp::DrainPartition(g(1)), &all(&l, &[]), |_| 0)
            .unwrap_err();
        assert!(
            !e.is_stale() && e.to_string().contains("only partition"),
            "{e}"
        );
    }

    #[test]
    fn moves_go_between_existing_partitions_into_an_active_one_only() {
        let mut l = Lifecycle::initial(&[g(1), g(2), g(3)]);
        let dests = |a: u32, b: u32| vec![ORACLE, g(a), g(b)];
        assert!(l.check_move(g(1), g(2), &dests(1, 2)).is_ok());
        let e = l.check_move(g(3), g(2), &dests(1, 2)).unwrap_err();
        assert!(!e.is_stale(), "a move must go to its source: {e}");
        let e = l.check_move(g(1), g(1), &dests(1, 1)).unwrap_err();
        assert!(!e.is_stale(), "{e}");
        l.apply(&AdminOp::DrainPartition(g(3)), &all(&l, &[]), |_| 0)
            .unwrap();
        assert!(
            l.check_move(g(3), g(1), &dests(3, 1)).is_ok(),
            "out of a drain"
        );
        let e = l.check_move(g(1), g(3), &dests(1, 3)).unwrap_err();
        assert!(e.is_stale(), "into a drain: {e}");
        let e = l.check_move(g(1), g(4), &dests(1, 4)).unwrap_err();
        assert!(e.is_stale(), "into a partition never added: {e}");
        l.apply(&AdminOp::RemovePartition(g(3)), &all(&l, &[]), |_| 0)
            .unwrap();
        let e = l.check_move(g(3), g(1), &dests(3, 1)).unwrap_err();
        assert!(e.is_stale(), "out of a removed partition: {e}");
    }
}
