//! scale: how a DS-SMR cluster gets from the partitions it runs to the partitions its spec
//! asks for. Pure: the controller gathers what is (the deployed config, the StatefulSets that
//! exist, the oracle's view of each partition) and performs the [`ScalePlan`].
//!
//! Partition numbers are never reused (the oracle refuses to add a removed partition's
//! number): a new partition is numbered from the oracle's `next_partition`, so a cluster
//! scaled 3 -> 2 -> 3 runs p1, p2 and p4, and its config lists the numbers it skips.
//!
//! Scaling out: the config learns the new partitions at once and their StatefulSets are
//! created; the running replicas are not restarted (their pod template's config hash leaves
//! the partitions out). Once every group is ready, the new partitions are registered with the
//! oracle (`AddPartition` with their members), which from then on places new variables there
//! and publishes them to every replica and client. Variables reach them by ordinary moves.
//!
//! Scaling in: the highest-numbered partitions leave first. They stay in the config and
//! keep running while the oracle drains them (`DrainPartition`: no new variables go there,
//! every variable is moved out); only once the oracle reports a partition empty does it leave
//! the config, leave the oracle's topology (`RemovePartition`), and have its StatefulSet,
//! Service and PodDisruptionBudget deleted. When the oracle cannot be asked, nothing is
//! deleted. Even then its objects go only once no group needs it any more
//! ([`still_needed`]): a move out of it may be delivered by the oracle before the partition
//! itself has sent the values, and a message accepted just before the others learned of the
//! removal still needs its timestamp.

use dssmr_api::proto::MemberStatus;
use std::collections::BTreeMap;

/// Where a partition stands in the oracle's placement (the admin API's `PartitionStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// New variables may be placed there.
    Active,
    /// Being drained; this many variables are still there.
    Draining(u64),
    /// Drained: empty, nothing placed there.
    Drained,
    /// Known from the config but never added to the placement; this many variables there.
    Inactive(u64),
    /// Removed from the cluster (empty; its number is never used again).
    Removed,
}

impl Placement {
    /// From the admin API's state name and variable count.
    pub fn from_admin(state: &str, variables: u64) -> Option<Self> {
        match state {
            "active" => Some(Placement::Active),
            "draining" => Some(Placement::Draining(variables)),
            "drained" => Some(Placement::Drained),
            "inactive" => Some(Placement::Inactive(variables)),
            "removed" => Some(Placement::Removed),
            _ => None,
        }
    }

    /// True when no variable is there and none will be placed there.
    fn is_empty(self) -> bool {
        matches!(
            self,
            Placement::Drained | Placement::Removed | Placement::Inactive(0)
        )
    }
}

/// What the oracle says of the partitions: where each one it knows stands, by partition
/// number, and the lowest number the cluster never used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OracleView {
    /// Where each partition stands.
    pub placement: BTreeMap<u32, Placement>,
    /// The lowest partition number never used (numbers of removed partitions are never
    /// handed out again); 0 when the oracle did not say.
    pub next_partition: u32,
}

impl OracleView {
    /// Where partition `p` stands; `None`: the oracle does not know it.
    pub fn get(&self, p: u32) -> Option<Placement> {
        self.placement.get(&p).copied()
    }
}

/// What to do to bring the partitions to the spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScalePlan {
    /// The partitions, by number, in the config and run as StatefulSets.
    pub partitions: Vec<u32>,
    /// Register these with the oracle (once every group runs the config).
    pub add: Vec<u32>,
    /// Start draining these.
    pub drain: Vec<u32>,
    /// Partitions on their way out (in the config or still running) that are not known to
    /// be empty: (partition, variables; `None` when the oracle could not say).
    pub leaving: Vec<(u32, Option<u64>)>,
    /// Delete the StatefulSet, Service and PDB of these: out of the config and empty.
    pub delete: Vec<u32>,
}

/// Plans the way from the `deployed` partitions (the numbers in the config; none: a new
/// cluster) and the partition StatefulSets in `running` to `want` partitions, knowing the
/// oracle's `view` (`None`: the oracle could not be asked, or the cluster has no oracle).
///
/// The partitions kept are the `want` lowest-numbered of the config that are not removed
/// (a partition being drained is taken back before a new one is made); scaling in leaves
/// the highest-numbered ones. New partitions get numbers the cluster never used: from the
/// oracle's `next_partition` and above every partition configured or running, so a
/// removed partition's number is never used again (a new cluster is numbered `1..=want`).
/// Without the oracle's answer the new numbers follow the highest configured or running
/// one; should that be a number the oracle removed (the highest partition was removed and
/// deleted), the oracle refuses to add it, and once it answers the plan drops that
/// partition (never added, empty) for one numbered from `next_partition`.
pub fn plan(want: u32, deployed: &[u32], running: &[u32], view: Option<&OracleView>) -> ScalePlan {
    // Absent from the oracle's view: it never held a variable.
    let empty = |p: u32| view.is_some_and(|v| v.get(p).is_none_or(|s| s.is_empty()));
    let removed = |p: u32| view.is_some_and(|v| v.get(p) == Some(Placement::Removed));
    let mut kept: Vec<u32> = deployed
        .iter()
        .copied()
        .filter(|p| !removed(*p))
        .take(want as usize)
        .collect();
    let short = want.saturating_sub(kept.len() as u32);
    if deployed.is_empty() {
        kept = (1..=want).collect();
    } else if short > 0 {
        let above = deployed.iter().chain(running).copied().max().unwrap_or(0) + 1;
        let first = view.map_or(above, |v| v.next_partition.max(above));
        kept.extend(first..first + short);
    }
    let mut others: Vec<u32> = deployed
        .iter()
        .chain(running)
        .copied()
        .filter(|p| !kept.contains(p))
        .collect();
    others.sort_unstable();
    others.dedup();
    let mut partitions: Vec<u32> = kept
        .iter()
        .copied()
        .chain(
            others
                .iter()
                .copied()
                .filter(|p| deployed.contains(p) && !empty(*p)),
        )
        .collect();
    partitions.sort_unstable();
    let leaving: Vec<(u32, Option<u64>)> = others
        .iter()
        .copied()
        .filter(|p| !empty(*p))
        .map(|p| {
            let held = view.and_then(|v| match v.get(p) {
                Some(Placement::Draining(n)) | Some(Placement::Inactive(n)) => Some(n),
                _ => None,
            });
            (p, held)
        })
        .collect();
    let drain = others
        .iter()
        .copied()
        .filter(|p| view.is_some_and(|v| v.get(*p) == Some(Placement::Active)))
        .collect();
    let add = match view {
        Some(v) if !deployed.is_empty() => kept
            .iter()
            .copied()
            .filter(|p| v.get(*p) != Some(Placement::Active))
            .collect(),
        _ => Vec::new(),
    };
    let delete = others
        .iter()
        .copied()
        .filter(|p| running.contains(p) && !partitions.contains(p) && empty(*p))
        .collect();
    ScalePlan {
        partitions,
        add,
        drain,
        leaving,
        delete,
    }
}

/// What the members of one group reported of themselves (`replicas::Oracle::describe`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupReport {
    /// Group number (0: the oracle).
    pub group: u32,
    /// Index = ordinal; `None`: no answer.
    pub members: Vec<Option<MemberStatus>>,
}

impl GroupReport {
    /// True when a member answered as leader with its log applied up to the group's mark in
    /// `marks` (its own commit index when the group has none).
    pub fn caught_up(&self, marks: &BTreeMap<u32, u64>) -> bool {
        self.members.iter().flatten().any(|m| {
            let mark = marks.get(&self.group).copied().unwrap_or(m.commit_index);
            m.role == "leader" && m.applied_index >= mark
        })
    }
}

/// Per group, the highest commit index its members reported: what a later report's leader
/// must have applied for its state to hold everything committed by the time of this one.
pub fn commit_marks(groups: &[GroupReport]) -> BTreeMap<u32, u64> {
    groups
        .iter()
        .filter_map(|r| {
            let commit = r.members.iter().flatten().map(|m| m.commit_index).max()?;
            Some((r.group, commit))
        })
        .collect()
}

/// Why partition `p`, empty and out of the oracle's topology, may not be deleted yet: from
/// what the members of every group of the cluster reported of themselves (`groups`, `p`'s
/// own among them). Empty when nothing is left: every group's leader has applied the
/// removal (lists `p` among its removed partitions, so no group accepts a new message naming
/// it), `p`'s members hold no variable, no unfinished command, no undelivered message and no
/// unacknowledged channel message, and no member of another group waits for `p`. A group none of whose members answered, or whose
/// leader did not answer with everything the group had committed when first asked
/// (`marks`, from [`commit_marks`] of an earlier report) applied, may still need `p`, so it
/// holds the deletion up as well. (Judging by the commit index of the same answer would wait
/// forever under load: a busy leader is always a few entries short of its commit index.)
pub fn still_needed(p: u32, groups: &[GroupReport], marks: &BTreeMap<u32, u64>) -> Vec<String> {
    let label = |g: u32| match g {
        0 => "oracle".to_string(),
        g => format!("p{g}"),
    };
    let mut reasons = Vec::new();
    for report in groups {
        let g = label(report.group);
        let answered: Vec<_> = report
            .members
            .iter()
            .enumerate()
            .filter_map(|(r, m)| Some((r, m.as_ref()?)))
            .collect();
        if answered.is_empty() {
            reasons.push(format!("{g}: no member answered"));
            continue;
        }
        // Judged on a state that holds everything the group had committed: its leader's.
        if !report.caught_up(marks) {
            reasons.push(format!("{g}: no leader has applied all it had committed"));
        }
        // Every group must have applied the removal: until it has, it may still accept a
        // new message naming p.
        let leader_applied = answered
            .iter()
            .any(|(_, m)| m.role == "leader" && m.removed_partitions.contains(&p));
        if !leader_applied {
            reasons.push(format!(
                "{g}: its leader has not applied the removal of p{p}"
            ));
        }
        for (r, m) in answered {
            let member = format!("{g}-{r}");
            let awaits = |q: u32| m.awaiting_groups.contains(&q);
            if report.group != p {
                if awaits(p) {
                    reasons.push(format!("{member} waits for p{p}"));
                }
                continue;
            }
            let mut owes = Vec::new();
            let variables = m.variables.unwrap_or(0);
            for (n, what) in [
                (variables, "variables"),
                (m.queued, "unfinished commands"),
                (m.pending_messages, "undelivered messages"),
            ] {
                if n > 0 {
                    owes.push(format!("{n} {what}"));
                }
            }
            if !m.awaiting_groups.is_empty() {
                let with: Vec<String> = m.awaiting_groups.iter().map(|q| label(*q)).collect();
                owes.push(format!("messages for {}", with.join(", ")));
            }
            if !owes.is_empty() {
                reasons.push(format!("{member} still has {}", owes.join(", ")));
            }
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use Placement::*;

    fn view(states: &[(u32, Placement)]) -> OracleView {
        let placement: BTreeMap<u32, Placement> = states.iter().copied().collect();
        let next_partition = placement.keys().max().map_or(1, |p| p + 1);
        OracleView {
            placement,
            next_partition,
        }
    }

    #[test]
    fn a_new_cluster_runs_what_the_spec_says() {
        let p = plan(4, &[], &[], None);
        assert_eq!(
            p,
            ScalePlan {
                partitions: vec![1, 2, 3, 4],
                ..Default::default()
            }
        );
    }

    #[test]
    fn scaling_out_adds_partitions_the_oracle_does_not_place_into_yet() {
        let v = view(&[(1, Active), (2, Active), (3, Inactive(0)), (4, Inactive(0))]);
        let p = plan(4, &[1, 2, 3, 4], &[1, 2, 3, 4], Some(&v));
        assert_eq!(p.partitions, [1, 2, 3, 4]);
        assert_eq!(p.add, [3, 4]);
        assert!(p.drain.is_empty() && p.delete.is_empty() && p.leaving.is_empty());
        // The config grows before the oracle is asked (it cannot know p3 before it runs it).
        let p = plan(
            4,
            &[1, 2],
            &[1, 2],
            Some(&view(&[(1, Active), (2, Active)])),
        );
        assert_eq!((p.partitions, p.add), (vec![1, 2, 3, 4], vec![3, 4]));
        // Without the oracle, the StatefulSets are made (numbered after the highest), but
        // nothing is added.
        let p = plan(4, &[1, 2], &[1, 2], None);
        assert_eq!((p.partitions, p.add), (vec![1, 2, 3, 4], vec![]));
    }

    #[test]
    fn a_removed_partitions_number_is_never_used_again() {
        // 3 -> 2 -> 3: p3 was drained and removed; the third partition is p4.
        let v = view(&[(1, Active), (2, Active), (3, Removed)]);
        let p = plan(3, &[1, 2], &[1, 2], Some(&v));
        assert_eq!((p.partitions, p.add), (vec![1, 2, 4], vec![4]));
        // The oracle forgot nothing, but says so only through its next number.
        let v = OracleView {
            placement: view(&[(1, Active), (2, Active)]).placement,
            next_partition: 6,
        };
        let p = plan(3, &[1, 2], &[1, 2], Some(&v));
        assert_eq!(p.partitions, [1, 2, 6]);
        // A StatefulSet still running (its deletion pending) is never taken for a new one.
        let v = view(&[(1, Active), (2, Active), (3, Drained)]);
        let p = plan(3, &[1, 2], &[1, 2, 3], Some(&v));
        assert_eq!((p.partitions, p.delete), (vec![1, 2, 4], vec![3]));
        // Numbered without the oracle after a removed p3 was deleted: p3 again. Once the
        // oracle answers, that p3 (refused, never added, empty) goes for p4.
        let p = plan(3, &[1, 2], &[1, 2], None);
        assert_eq!(p.partitions, [1, 2, 3]);
        let v = view(&[(1, Active), (2, Active), (3, Removed)]);
        let p = plan(3, &[1, 2, 3], &[1, 2, 3], Some(&v));
        assert_eq!(
            (p.partitions, p.add, p.delete),
            (vec![1, 2, 4], vec![4], vec![3])
        );
        // Partitions numbered with a gap scale on from the highest.
        let v = view(&[(1, Active), (2, Removed), (4, Active)]);
        let p = plan(1, &[1, 4], &[1, 4], Some(&v));
        assert_eq!((p.partitions.clone(), p.drain), (vec![1, 4], vec![4]));
        let p = plan(3, &[1, 4], &[1, 4], Some(&v));
        assert_eq!((p.partitions, p.add), (vec![1, 4, 5], vec![5]));
    }

    #[test]
    fn growing_then_shrinking_drains_the_highest_numbers() {
        // 2 -> 4 -> 3: p4 leaves even when p3 is empty (an empty partition is drained the
        // same way; the drain moves p4's variables into active ones, p3 among them).
        let v = view(&[(1, Active), (2, Active), (3, Active), (4, Active)]);
        let p = plan(3, &[1, 2, 3, 4], &[1, 2, 3, 4], Some(&v));
        assert_eq!(p.partitions, [1, 2, 3, 4]);
        assert_eq!((p.drain, p.leaving), (vec![4], vec![(4, None)]));
    }

    #[test]
    fn scaling_in_drains_first_and_deletes_only_what_is_empty() {
        let v = view(&[(1, Active), (2, Active), (3, Active), (4, Active)]);
        let p = plan(2, &[1, 2, 3, 4], &[1, 2, 3, 4], Some(&v));
        assert_eq!(
            p.partitions,
            [1, 2, 3, 4],
            "kept in the config while they hold variables"
        );
        assert_eq!(p.drain, [3, 4]);
        assert!(p.delete.is_empty());
        // p4 drained, p3 still draining: p4 leaves the config and is deleted.
        let v = view(&[(1, Active), (2, Active), (3, Draining(7)), (4, Drained)]);
        let p = plan(2, &[1, 2, 3, 4], &[1, 2, 3, 4], Some(&v));
        assert_eq!(p.partitions, [1, 2, 3]);
        assert_eq!(p.leaving, [(3, Some(7))]);
        assert_eq!(p.delete, [4]);
        assert!(p.drain.is_empty());
        // p3 drained first, p4 still draining: p3 goes, p4 stays (numbers may skip).
        let v = view(&[(1, Active), (2, Active), (3, Drained), (4, Draining(2))]);
        let p = plan(2, &[1, 2, 3, 4], &[1, 2, 3, 4], Some(&v));
        assert_eq!((p.partitions, p.delete), (vec![1, 2, 4], vec![3]));
        // Both empty: out of the config, deleted.
        let v = view(&[(1, Active), (2, Active), (3, Drained), (4, Drained)]);
        let p = plan(2, &[1, 2, 3, 4], &[1, 2, 3, 4], Some(&v));
        assert_eq!((p.partitions, p.delete.clone()), (vec![1, 2], vec![3, 4]));
        // The config already shrank but a StatefulSet is left: deleted once known empty.
        let p = plan(2, &[1, 2], &[1, 2, 4], Some(&v));
        assert_eq!((p.partitions, p.delete.clone()), (vec![1, 2], vec![4]));
    }

    #[test]
    fn without_the_oracle_nothing_is_drained_or_deleted() {
        let p = plan(2, &[1, 2, 3, 4], &[1, 2, 3, 4], None);
        assert_eq!(p.partitions, [1, 2, 3, 4]);
        assert_eq!(p.leaving, [(3, None), (4, None)]);
        assert!(p.drain.is_empty() && p.delete.is_empty() && p.add.is_empty());
        let p = plan(2, &[1, 2], &[1, 2, 3], None);
        assert!(p.delete.is_empty());
        assert_eq!(p.leaving, [(3, None)], "reported, not forgotten");
    }

    #[test]
    fn a_drained_partition_back_in_the_spec_is_added_again() {
        let v = view(&[(1, Active), (2, Active), (3, Draining(5))]);
        let p = plan(3, &[1, 2, 3], &[1, 2, 3], Some(&v));
        assert_eq!(p.add, [3]);
        assert!(p.leaving.is_empty() && p.drain.is_empty());
    }
    fn member(variables: Option<u64>, pending: u64, awaiting: &[u32]) -> Option<MemberStatus> {
        Some(MemberStatus {
            role: "follower".into(),
            variables,
            pending_messages: pending,
            awaiting_groups: awaiting.to_vec(),
            removed_partitions: vec![3],
            ..Default::default()
        })
    }

    /// Group `group`: its first member that answered leads.
    fn group(group: u32, mut members: Vec<Option<MemberStatus>>) -> GroupReport {
        if let Some(m) = members.iter_mut().flatten().next() {
            m.role = "leader".into();
            (m.commit_index, m.applied_index) = (90, 90);
        }
        GroupReport { group, members }
    }

    #[test]
    fn a_removed_partition_is_needed_while_any_group_waits_for_it() {
        let quiet = vec![
            group(0, vec![member(None, 0, &[]), None, member(None, 0, &[])]),
            group(1, vec![member(Some(4), 0, &[]); 3]),
            group(
                3,
                vec![member(Some(0), 0, &[]), member(Some(0), 0, &[]), None],
            ),
        ];
        let marks = commit_marks(&quiet);
        assert_eq!(marks.values().collect::<Vec<_>>(), [&90, &90, &90]);
        assert!(
            still_needed(3, &quiet, &marks).is_empty(),
            "{:?}",
            still_needed(3, &quiet, &marks)
        );

        let mut busy = quiet.clone();
        // p1-2 has a message addressed to p3 too; the oracle's p3 entry is nothing to p3.
        busy[1].members[2] = member(Some(4), 1, &[0, 3]);
        // p3-1 has delivered a move but not sent the values yet.
        busy[2].members[1] = member(Some(1), 0, &[1]);
        assert_eq!(
            still_needed(3, &busy, &marks),
            [
                "p1-2 waits for p3",
                "p3-1 still has 1 variables, messages for p1",
            ]
        );

        let silent = vec![group(0, vec![None; 3]), quiet[1].clone(), quiet[2].clone()];
        assert_eq!(
            still_needed(3, &silent, &marks),
            ["oracle: no member answered"]
        );

        // p3's leader has not applied all it had committed (it may have just restarted).
        let mut behind = quiet.clone();
        behind[2].members[0].as_mut().unwrap().applied_index = 80;
        assert_eq!(
            still_needed(3, &behind, &marks),
            ["p3: no leader has applied all it had committed"]
        );
        // Under load: p1's leader is always a little behind its own commit index, but it has
        // applied what p1 had committed when first asked.
        let mut loaded = quiet.clone();
        let leader = loaded[1].members[0].as_mut().unwrap();
        (leader.commit_index, leader.applied_index) = (120, 110);
        assert!(still_needed(3, &loaded, &marks).is_empty());
        assert!(loaded[1].caught_up(&marks) && !behind[2].caught_up(&marks));

        // p1's leader has not applied the removal yet: it may still accept a message for p3.
        let mut unaware = quiet.clone();
        unaware[1].members[0]
            .as_mut()
            .unwrap()
            .removed_partitions
            .clear();
        assert_eq!(
            still_needed(3, &unaware, &marks),
            ["p1: its leader has not applied the removal of p3"]
        );
    }
}
