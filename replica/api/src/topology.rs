//! The topology of a cluster: which groups exist and the addresses of their members.
//!
//! Derived from the cluster config ([`crate::config::ClusterConfig::topology`]); clients and
//! replicas connect by it. This module holds data only; it connects to nothing.

use crate::ids::GroupId;
use std::collections::BTreeMap;

/// Member addresses of every group of a cluster.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    /// The cluster's name: every call between its members carries it (see
    /// [`crate::route`]), so that a replica of another cluster on a reused address refuses it.
    pub cluster: String,
    /// Group id to member addresses (index = ordinal).
    pub groups: BTreeMap<GroupId, Vec<String>>,
}

impl Topology {
    /// True when `g` is a group of the cluster.
    pub fn contains(&self, g: GroupId) -> bool {
        self.groups.contains_key(&g)
    }
}
