//! What a client process learns about which variables its commands access together, and the
//! destination choice that uses it (the `affinity` destination policy).
//!
//! The paper gathers a multi-partition command's variables at a random partition among those
//! involved (Algorithm 2, line 10). That balances load but does not converge when commands
//! touch few variables: with two users per follow, every choice is a coin flip, so a user
//! pulled out of its community drags its next partner along, and the partitioning wanders.
//!
//! The affinity policy is label propagation over the co-access graph: each process counts, for
//! every variable, how often it was gathered together with each other variable (bounded to the
//! [`MAX_NEIGHBOURS`] heaviest), and sends a command's variables to the involved partition where
//! their known neighbours already are (locations from a [`Locations`], the process's location cache), counting the
//! variables themselves too. Variables accessed together therefore end up where most of their
//! neighbourhood lives, and once a community sits in one partition its commands stop moving
//! anything. It needs no knowledge of the application: only the choice of destination, which
//! the paper leaves to the proxy, differs.
//!
//! Some variables cannot be gathered for good: a user followed from two communities is pulled
//! into one by every post of its followee and back by the posts of its own community. A
//! variable that is [`Affinity::settled`] where it is (more of its neighbourhood there than at
//! the destination) is therefore not moved; the command then runs spread over the partitions
//! that hold its variables ([`crate::command::Execution::Spread`]), as S-SMR would run it, but
//! only over those partitions.

use crate::ids::{GroupId, VarId};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Where variables are believed to be: what the affinity policy reads of the location cache.
pub trait Locations {
    /// The partition of each of `vars`, in order (`None`: unknown).
    fn locate_each(&self, vars: &[VarId]) -> Vec<Option<GroupId>>;
}

/// Neighbours kept per variable (the heaviest; a lighter one is dropped to admit a new one).
pub(crate) const MAX_NEIGHBOURS: usize = 48;

/// Co-access weight a variable needs at its partition before it counts as settled there.
pub(crate) const SETTLED_WEIGHT: u64 = 2;

/// How many times its weight at the destination a variable's weight where it is must be for
/// it to count as settled. Above 1, so that a community split evenly over two partitions
/// (about as many neighbours on each side) keeps moving until one side wins, instead of
/// freezing with every command between the halves running spread.
pub(crate) const SETTLED_FACTOR: u64 = 2;

/// Co-access counts, shared by the proxies of a process.
#[derive(Debug, Default)]
pub struct Affinity {
    neighbours: Mutex<HashMap<VarId, Vec<(VarId, u32)>>>,
}

impl Affinity {
    /// Records that `vars` were accessed together by one command; `anchors` are the command's
    /// own variables (ω): every variable is linked to each anchor (a star per anchor, not a
    /// clique, so a post with many followers costs linear work).
    pub fn record(&self, anchors: &[VarId], vars: &[VarId]) {
        if vars.len() < 2 {
            return;
        }
        let mut map = self.neighbours.lock().unwrap_or_else(|p| p.into_inner());
        for a in anchors {
            for v in vars.iter().filter(|v| *v != a) {
                bump(map.entry(a.clone()).or_default(), v);
                bump(map.entry(v.clone()).or_default(), a);
            }
        }
    }

    /// The partition among the keys of `by_partition` (where each of the command's variables
    /// is now) that holds the most of the variables and of their known neighbours, weighted
    /// by co-access counts; `None` when there is no candidate or several tie.
    pub fn destination(
        &self,
        by_partition: &BTreeMap<GroupId, Vec<VarId>>,
        cache: &impl Locations,
    ) -> Option<GroupId> {
        let mut score: BTreeMap<GroupId, u64> = by_partition
            .iter()
            .map(|(p, vars)| (*p, vars.len() as u64))
            .collect();
        let linked: Vec<(VarId, u32)> = {
            let map = self.neighbours.lock().unwrap_or_else(|p| p.into_inner());
            by_partition
                .values()
                .flatten()
                .filter_map(|v| map.get(v))
                .flatten()
                .cloned()
                .collect()
        };
        let names: Vec<VarId> = linked.iter().map(|(v, _)| v.clone()).collect();
        for ((_, weight), at) in linked.iter().zip(cache.locate_each(&names)) {
            if let Some(s) = at.and_then(|p| score.get_mut(&p)) {
                *s += u64::from(*weight);
            }
        }
        let best = score.values().copied().max()?;
        let mut top = score.iter().filter(|(_, s)| **s == best).map(|(p, _)| *p);
        match (top.next(), top.next()) {
            (Some(p), None) => Some(p),
            _ => None,
        }
    }

    /// Whether `v`, now at `at`, belongs there rather than at `target`: its known neighbours
    /// at `at` weigh (by co-access counts) at least [`SETTLED_WEIGHT`] and [`SETTLED_FACTOR`]
    /// times those at `target`. Moving such a variable would pull it away from the
    /// variables it is usually accessed with, which then pull it back: a command that needs
    /// it runs spread over the partitions instead ([`crate::command::Execution::Spread`]).
    pub fn settled(&self, v: &VarId, at: GroupId, target: GroupId, cache: &impl Locations) -> bool {
        let linked: Vec<(VarId, u32)> = {
            let map = self.neighbours.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(v) {
                Some(list) => list.clone(),
                None => return false,
            }
        };
        let names: Vec<VarId> = linked.iter().map(|(n, _)| n.clone()).collect();
        let (mut here, mut there) = (0u64, 0u64);
        for ((_, weight), loc) in linked.iter().zip(cache.locate_each(&names)) {
            match loc {
                Some(p) if p == at => here += u64::from(*weight),
                Some(p) if p == target => there += u64::from(*weight),
                _ => {}
            }
        }
        here >= SETTLED_WEIGHT && here >= SETTLED_FACTOR * there.max(1)
    }

    /// Variables with recorded neighbours.
    pub fn len(&self) -> usize {
        self.neighbours
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Adds one to `v`'s count in `list`; a full list drops its lightest entry for a newcomer.
fn bump(list: &mut Vec<(VarId, u32)>, v: &VarId) {
    if let Some(e) = list.iter_mut().find(|(n, _)| n == v) {
        e.1 = e.1.saturating_add(1);
        return;
    }
    if list.len() >= MAX_NEIGHBOURS {
        if let Some(i) = (0..list.len()).min_by_key(|i| list[*i].1) {
            list.swap_remove(i);
        }
    }
    list.push((v.clone(), 1));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::cache::LocationCache;

    fn v(name: &str) -> VarId {
        VarId::new(name)
    }

    fn split(parts: &[(u32, &[&str])]) -> BTreeMap<GroupId, Vec<VarId>> {
        parts
            .iter()
            .map(|(p, names)| (GroupId(*p), names.iter().map(|n| v(n)).collect()))
            .collect()
    }

    #[test]
    fn a_pair_goes_where_its_neighbourhood_is() {
        let a = Affinity::default();
        let cache = LocationCache::default();
        // x's friends live in partition 2, y's single friend in partition 1.
        for f in ["f1", "f2", "f3"] {
            a.record(&[v("x")], &[v("x"), v(f)]);
            cache.update([(v(f), GroupId(2))]);
        }
        a.record(&[v("y")], &[v("y"), v("g1")]);
        cache.update([(v("g1"), GroupId(1))]);
        let pair = split(&[(1, &["y"]), (2, &["x"])]);
        assert_eq!(a.destination(&pair, &cache), Some(GroupId(2)));
        // With nothing known, a pair is a tie: the caller decides.
        assert_eq!(
            Affinity::default().destination(&pair, &cache),
            None,
            "a tie"
        );
        // The variables themselves count: 3 against 1 with no neighbours.
        let lopsided = split(&[(1, &["a", "b", "c"]), (2, &["d"])]);
        assert_eq!(
            Affinity::default().destination(&lopsided, &cache),
            Some(GroupId(1))
        );
    }

    #[test]
    fn a_variable_is_settled_where_its_neighbourhood_is() {
        let a = Affinity::default();
        let cache = LocationCache::default();
        for f in ["f1", "f2"] {
            a.record(&[v("x")], &[v("x"), v(f)]);
            cache.update([(v(f), GroupId(1))]);
        }
        a.record(&[v("x")], &[v("x"), v("c")]);
        cache.update([(v("c"), GroupId(2))]);
        assert!(a.settled(&v("x"), GroupId(1), GroupId(2), &cache));
        assert!(!a.settled(&v("x"), GroupId(2), GroupId(1), &cache));
        assert!(!a.settled(&v("unknown"), GroupId(1), GroupId(2), &cache));
        // One neighbour is not enough evidence.
        a.record(&[v("y")], &[v("y"), v("f1")]);
        assert!(!a.settled(&v("y"), GroupId(1), GroupId(2), &cache));
    }

    #[test]
    fn neighbours_are_bounded_and_keep_the_heaviest() {
        let a = Affinity::default();
        for _ in 0..5 {
            a.record(&[v("hub")], &[v("hub"), v("best")]);
        }
        for i in 0..3 * MAX_NEIGHBOURS {
            a.record(&[v("hub")], &[v("hub"), v(&format!("n{i}"))]);
        }
        let map = a.neighbours.lock().unwrap();
        let hub = &map[&v("hub")];
        assert_eq!(hub.len(), MAX_NEIGHBOURS);
        assert!(hub.iter().any(|(n, c)| n == &v("best") && *c == 5));
        // A star per anchor: followers are linked to the poster, not to each other.
        drop(map);
        a.record(&[v("p")], &[v("p"), v("q"), v("r")]);
        let map = a.neighbours.lock().unwrap();
        assert!(map[&v("q")].iter().all(|(n, _)| n == &v("p")));
        assert_eq!(map[&v("p")].len(), 2);
    }
}
