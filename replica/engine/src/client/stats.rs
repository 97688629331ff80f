//! Counters of what the client proxies of a process did (commands, consults, cache hits,
//! moves, retries, S-SMR fallbacks, spreads), and their snapshots for reports.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of what proxies did, shared by the proxies of a process.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Commands issued (access, create, delete).
    pub commands: AtomicU64,
    /// Commands completed.
    pub completed: AtomicU64,
    /// Oracle consults.
    pub consults: AtomicU64,
    /// Access commands whose variables were all cached at the first attempt.
    pub cache_hits: AtomicU64,
    /// Access commands that had to consult the oracle at the first attempt.
    pub cache_misses: AtomicU64,
    /// Variables moved (one per variable in each move command).
    pub moves: AtomicU64,
    /// Move commands multicast.
    pub move_commands: AtomicU64,
    /// `retry` replies received.
    pub retries: AtomicU64,
    /// Commands that fell back to S-SMR.
    pub fallbacks: AtomicU64,
    /// Commands run spread over several partitions instead of moving settled variables.
    pub spreads: AtomicU64,
}

/// A copy of [`ProxyStats`] at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// See [`ProxyStats::commands`].
    pub commands: u64,
    /// See [`ProxyStats::completed`].
    pub completed: u64,
    /// See [`ProxyStats::consults`].
    pub consults: u64,
    /// See [`ProxyStats::cache_hits`].
    pub cache_hits: u64,
    /// See [`ProxyStats::cache_misses`].
    pub cache_misses: u64,
    /// See [`ProxyStats::moves`].
    pub moves: u64,
    /// See [`ProxyStats::move_commands`].
    pub move_commands: u64,
    /// See [`ProxyStats::retries`].
    pub retries: u64,
    /// See [`ProxyStats::fallbacks`].
    pub fallbacks: u64,
    /// See [`ProxyStats::spreads`].
    #[serde(default)]
    pub spreads: u64,
}

impl ProxyStats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            commands: l(&self.commands),
            completed: l(&self.completed),
            consults: l(&self.consults),
            cache_hits: l(&self.cache_hits),
            cache_misses: l(&self.cache_misses),
            moves: l(&self.moves),
            move_commands: l(&self.move_commands),
            retries: l(&self.retries),
            fallbacks: l(&self.fallbacks),
            spreads: l(&self.spreads),
        }
    }
}

pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
