//! Identifiers shared by every layer: groups, Raft nodes inside a group, multicast messages and
//! state variables.
//!
//! They are newtypes so a group id is never mistaken for a node id or a sequence number.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A replicated group: a partition or the oracle. Each group runs its own Raft log.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct GroupId(pub u32);

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}", self.0)
    }
}

/// The Raft node id of a replica inside its group (1-based: ordinal + 1).
pub type NodeId = u64;

/// Turns a StatefulSet-style ordinal (0, 1, 2, ...) into the Raft node id of that replica.
pub fn node_id_of_ordinal(ordinal: usize) -> NodeId {
    ordinal as NodeId + 1
}

/// Identifies one multicast message: the sending process and its per-sender sequence number.
///
/// Senders number their messages 0, 1, 2, ...; each message also carries the sender's floor,
/// below which it never submits again, and groups rely on that (not on any count) to forget
/// delivered messages.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
pub struct MsgId {
    /// A random 64-bit id chosen by the sending process.
    pub sender: u64,
    /// Sequence number of the message at its sender.
    pub seq: u64,
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}:{}", self.sender, self.seq)
    }
}

/// A state variable of the replicated service (a kv key, a Chirper user): the unit the oracle
/// locates and DS-SMR moves between partitions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct VarId(pub String);

impl VarId {
    /// A variable named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        VarId(name.into())
    }

    /// The name of the variable.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VarId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The group that runs the oracle (Algorithm 4). Partitions are groups 1..=k.
pub const ORACLE: GroupId = GroupId(0);

/// The label value of group `g`: `oracle`, or `p<g>` for partition g.
pub fn group_label(g: GroupId) -> String {
    if g == ORACLE {
        "oracle".to_string()
    } else {
        format!("p{}", g.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_labels_name_the_oracle_and_partitions() {
        assert_eq!(group_label(ORACLE), "oracle");
        assert_eq!(group_label(GroupId(3)), "p3");
    }
}
