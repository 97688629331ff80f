//! The client proxy's location cache (§4.3): the oracle's answers, kept so that a command whose
//! variables are all cached skips the oracle entirely.
//!
//! The cache may be stale; that is safe, because a partition runs a command only when every
//! variable it needs is local, and answers `retry` otherwise, which makes the proxy ask the
//! oracle again. Shared by every proxy of a process (one cache per client process).

use crate::ids::{GroupId, VarId};
use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Cached variable locations.
#[derive(Debug, Default)]
pub struct LocationCache {
    map: RwLock<HashMap<VarId, GroupId>>,
}

impl LocationCache {
    /// The cached location of every variable of `vars`, or `None` if any is missing.
    pub fn lookup(&self, vars: &[VarId]) -> Option<Vec<(VarId, GroupId)>> {
        let map = self.read();
        vars.iter()
            .map(|v| map.get(v).map(|p| (v.clone(), *p)))
            .collect()
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
}
