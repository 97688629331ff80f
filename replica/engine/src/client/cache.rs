//! The client proxy's location cache (§4.3): the oracle's answers, kept so that a command whose
//! variables are all cached skips the oracle entirely.
//!
//! The cache may be stale; that is safe, because a partition runs a command only when every
//! variable it needs is local, and answers `retry` otherwise, which makes the proxy ask the
//! oracle again. Shared by every proxy of a process (one cache per client process), together
//! with what the process learned about which variables are accessed together ([`Affinity`]).

use crate::client::affinity::{Affinity, Locations};
use crate::ids::{GroupId, VarId};
use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Cached variable locations.
#[derive(Debug, Default)]
pub struct LocationCache {
    map: RwLock<HashMap<VarId, GroupId>>,
    dependencies: RwLock<HashMap<Vec<VarId>, Vec<VarId>>>,
    affinity: Affinity,
}

impl LocationCache {
    /// The cached location of every variable of `vars`, or `None` if any is missing.
    pub fn lookup(&self, vars: &[VarId]) -> Option<Vec<(VarId, GroupId)>> {
        let map = self.read();
        vars.iter()
            .map(|v| map.get(v).map(|p| (v.clone(), *p)))
            .collect()
    }

    /// The cached location of each variable of `vars`, where known.
    pub(crate) fn locate_each(&self, vars: &[VarId]) -> Vec<Option<GroupId>> {
        let map = self.read();
        vars.iter().map(|v| map.get(v).copied()).collect()
    }

    /// The dependencies a command over `omega` (sorted) had last time a partition told
    /// (`retry(γ)`), so that the next such command locates and gathers them at once instead
    /// of learning them from another retry. A hint only: partitions still check.
    pub(crate) fn dependencies(&self, omega: &[VarId]) -> Option<Vec<VarId>> {
        self.dependencies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(omega)
            .cloned()
    }

    /// Remembers the dependencies `gamma` of a command over `omega` (sorted), if it names any.
    pub(crate) fn remember_dependencies(&self, omega: &[VarId], gamma: &[VarId]) {
        let deps: Vec<VarId> = gamma
            .iter()
            .filter(|v| omega.binary_search(v).is_err())
            .cloned()
            .collect();
        // A retry that names no dependency (say ω itself was elsewhere) tells nothing new.
        if !deps.is_empty() {
            self.dependencies
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(omega.to_vec(), deps);
        }
    }

    /// The process's co-access counts (used by the `affinity` destination policy).
    pub fn affinity(&self) -> &Affinity {
        &self.affinity
    }

    /// Records that each variable is at its partition.
    pub fn update(&self, found: impl IntoIterator<Item = (VarId, GroupId)>) {
        let mut map = self.write();
        for (v, p) in found {
            map.insert(v, p);
        }
    }

    /// Forgets the locations of `vars`.
    pub fn forget<'a>(&self, vars: impl IntoIterator<Item = &'a VarId>) {
        let mut map = self.write();
        for v in vars {
            map.remove(v);
        }
    }

    /// Number of cached locations.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<VarId, GroupId>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<VarId, GroupId>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl Locations for LocationCache {
    fn locate_each(&self, vars: &[VarId]) -> Vec<Option<GroupId>> {
        LocationCache::locate_each(self, vars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_needs_every_variable() {
        let c = LocationCache::default();
        let (a, b) = (VarId::new("a"), VarId::new("b"));
        c.update([(a.clone(), GroupId(1))]);
        assert_eq!(
            c.lookup(std::slice::from_ref(&a)),
            Some(vec![(a.clone(), GroupId(1))])
        );
        assert_eq!(c.lookup(&[a.clone(), b.clone()]), None);
        c.forget([&a]);
        assert!(c.is_empty());
    }

    #[test]
    fn dependencies_are_remembered_per_omega() {
        let c = LocationCache::default();
        let omega = [VarId::new("p")];
        assert_eq!(c.dependencies(&omega), None);
        c.remember_dependencies(&omega, &[VarId::new("f"), VarId::new("p")]);
        assert_eq!(c.dependencies(&omega), Some(vec![VarId::new("f")]));
        c.remember_dependencies(&omega, &[VarId::new("p")]);
        assert_eq!(c.dependencies(&omega), Some(vec![VarId::new("f")]));
        c.remember_dependencies(&omega, &[VarId::new("g"), VarId::new("p")]);
        assert_eq!(c.dependencies(&omega), Some(vec![VarId::new("g")]));
    }
}
