//! What a DS-SMR application provides, in the spirit of Eyrie's `PRObject` / `StateMachine` /
//! `OracleStateMachine`: its variable type, the variables a command touches, how a command runs
//! against variables, and where new variables go.
//!
//! Application code never sees partitions. The engine hands [`StateMachine::execute`] a
//! [`Store`] holding the variables the command needs; whether they were local all along
//! (DS-SMR), moved in just before (DS-SMR after a move) or received from other partitions
//! (S-SMR and the DS-SMR fallback) is the engine's business.
//!
//! Contract: every method is deterministic (no clocks, no randomness, no I/O); every replica
//! runs them on the same inputs in the same order and must reach the same state and reply.

use crate::ids::{GroupId, VarId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};

/// The variables a command can reach while it executes.
///
/// Commands read and update existing variables; they never create or delete one (that is what
/// the engine's `create` and `delete` commands are for, so the oracle always knows every
/// variable). A variable the command needs but that does not exist is simply absent.
pub trait Store<V> {
    /// The variable `v`, if it is present.
    fn get(&self, v: &VarId) -> Option<&V>;
    /// The variable `v` for update, if it is present.
    fn get_mut(&mut self, v: &VarId) -> Option<&mut V>;
}

/// The variables of a partition seen by a read-only command: `get_mut` finds nothing.
pub(crate) struct ReadOnly<'a, V>(pub &'a HashMap<VarId, V>);

impl<V> Store<V> for ReadOnly<'_, V> {
    fn get(&self, v: &VarId) -> Option<&V> {
        self.0.get(v)
    }

    fn get_mut(&mut self, _v: &VarId) -> Option<&mut V> {
        None
    }
}

impl<V> Store<V> for HashMap<VarId, V> {
    fn get(&self, v: &VarId) -> Option<&V> {
        HashMap::get(self, v)
    }

    fn get_mut(&mut self, v: &VarId) -> Option<&mut V> {
        HashMap::get_mut(self, v)
    }
}

/// A replicated application, partitioned by its variables.
pub trait StateMachine: Send + Sync + 'static {
    /// A command of the application (e.g. kv `transfer`, Chirper `post`).
    type Command: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static;
    /// What a command returns to its client.
    type Reply: Serialize + DeserializeOwned + Clone + Debug + PartialEq + Send + Sync + 'static;
    /// The value of one variable (a kv value, a Chirper user).
    type Value: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static;

    /// ω: the variables `cmd` touches that can be told from the command alone. The engine
    /// gathers them in one partition before the command runs there.
    fn variables(&self, cmd: &Self::Command) -> Vec<VarId>;

    /// Further variables `cmd` touches that only the values of [`StateMachine::variables`]
    /// reveal (Chirper: the followers of the poster). Called with a store holding ω; a
    /// partition that does not hold all of them locally answers `retry(γ)` with
    /// γ = ω ∪ dependencies. Default: none.
    fn dependencies(&self, _cmd: &Self::Command, _store: &dyn Store<Self::Value>) -> Vec<VarId> {
        Vec::new()
    }

    /// True when `cmd` may have [`StateMachine::dependencies`]: S-SMR, which cannot know them
    /// before execution, then multicasts the command to every partition. Default: false.
    fn may_have_dependencies(&self, _cmd: &Self::Command) -> bool {
        false
    }

    /// True when `cmd` changes no variable, whatever their values (kv `get`, Chirper
    /// `getTimeline`). A partition's leader may then answer it from its state, after a read
    /// index, without ordering it (see [`crate::group::read_index`]); [`StateMachine::execute`]
    /// then gets a store in which `get_mut` finds nothing. Default: false.
    fn is_read_only(&self, _cmd: &Self::Command) -> bool {
        false
    }

    /// Executes `cmd`. The store holds every existing variable of ω and of the dependencies
    /// the executing partition is responsible for. Under S-SMR a dependency may live in
    /// another partition (which runs the same command for it), so the reply must depend only
    /// on the variables of ω; updates to dependencies that are absent are simply skipped.
    fn execute(&self, cmd: &Self::Command, store: &mut dyn Store<Self::Value>) -> Self::Reply;

    /// The reply to `cmd` when some variables of ω do not exist (`missing`, sorted): the
    /// command did not run. The oracle (DS-SMR) or the owning partition (S-SMR) decides that.
    fn missing(&self, cmd: &Self::Command, missing: &[VarId]) -> Self::Reply;

    /// Where a new variable goes (the oracle's placement rule, and S-SMR's static map).
    /// `partitions` is sorted and never empty. Default: a stable hash of the name.
    fn place(&self, var: &VarId, partitions: &[GroupId]) -> GroupId {
        partitions[hash_slot(var, partitions.len())]
    }
}

/// A stable (process- and platform-independent) hash of a variable name into `0..n`.
pub fn hash_slot(var: &VarId, n: usize) -> usize {
    // FNV-1a: fixed, so every replica, client and run agrees on it.
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 ^= u64::from(*b);
                self.0 = self.0.wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    var.0.hash(&mut h);
    (h.finish() % n.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_slot_is_stable_and_in_range() {
        let v = VarId::new("user-42");
        let a = hash_slot(&v, 8);
        assert_eq!(a, hash_slot(&v, 8));
        assert!(a < 8);
        assert_eq!(hash_slot(&v, 1), 0);
    }
}
