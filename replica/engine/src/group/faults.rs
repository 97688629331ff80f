//! Link faults injected by tests: a shared table of cut links between replica addresses.
//!
//! Every outgoing RPC of a replica (Raft traffic, timestamp announces, channel transmissions)
//! asks the table first; a cut link fails like an unreachable peer. Cutting both directions
//! isolates two replicas from each other while their sockets stay open, as a network partition.

use std::collections::HashSet;
use std::sync::RwLock;

/// Cut links between replica addresses (empty in production).
#[derive(Debug, Default)]
pub struct Faults {
    cut: RwLock<HashSet<(String, String)>>,
}

impl Faults {
    /// True when traffic from `from` to `to` is currently dropped.
    pub(crate) fn is_cut(&self, from: &str, to: &str) -> bool {
        let cut = self.cut.read().unwrap_or_else(|p| p.into_inner());
        !cut.is_empty() && cut.contains(&(from.to_string(), to.to_string()))
    }

    /// Drops traffic between `a` and `b`, both ways.
    pub fn cut(&self, a: &str, b: &str) {
        let mut cut = self.cut.write().unwrap_or_else(|p| p.into_inner());
        cut.insert((a.to_string(), b.to_string()));
        cut.insert((b.to_string(), a.to_string()));
    }

    /// Cuts every link between `addr` and the `others`.
    pub fn isolate<'a>(&self, addr: &str, others: impl IntoIterator<Item = &'a str>) {
        for o in others {
            if o != addr {
                self.cut(addr, o);
            }
        }
    }

    /// Restores every link of `addr`, leaving the other cuts in place.
    pub fn mend(&self, addr: &str) {
        let mut cut = self.cut.write().unwrap_or_else(|p| p.into_inner());
        cut.retain(|(a, b)| a != addr && b != addr);
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.cut.write().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
