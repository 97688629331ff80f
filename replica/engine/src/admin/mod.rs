//! Administration of a running cluster: the `Admin` gRPC service every replica serves, and
//! the drainer that empties partitions the operator scales away.
//!
//! * [`service::AdminService`]: `Describe` (this replica's Raft state), `Status` (every
//!   group's members, leader and commit index, asked with `Describe`; at an oracle replica
//!   also variables per partition and which partitions take new variables), `AddPartition`,
//!   `DrainPartition` and `RemovePartition` (administrative commands multicast to the oracle
//!   and every partition: the oracle decides, every group applies the decision at the same
//!   point of the order, and the call returns once every group has).
//! * [`drain::run_drainer`]: on the oracle leader, moves the variables of draining partitions
//!   to the active partition holding the fewest, in batches, with ordinary move commands
//!   (Algorithm 2's move: oracle, source and destination), until they are empty. It reaches
//!   the partitions through the live topology, so partitions added at run time take
//!   variables too. No move into a draining partition takes effect (every destination
//!   refuses it, see [`crate::lifecycle`]) and nothing new is placed there, so the partition
//!   empties while any active partition can take its variables; when a drain cannot
//!   progress, why is reported in the partition's admin status (`note`).

pub(crate) mod drain;
pub(crate) mod service;

pub(crate) use service::AdminService;

use crate::ids::ORACLE;
use crate::node::{NodeParts, ReplicaServices};
use crate::proto::admin_server::AdminServer;
use std::sync::Arc;

/// The admin service of a replica, and at an oracle replica the drainer: what the replica
/// server and local clusters add to every replica they start ([`crate::node::ReplicaSpec`]).
pub(crate) fn replica_services() -> ReplicaServices {
    Box::new(|parts: NodeParts<'_>, routes| {
        let notes = Arc::new(drain::DrainNotes::default());
        let admin = AdminService::new(
            parts.group,
            parts.ordinal,
            parts.addr.to_string(),
            parts.raft.clone(),
            parts.shared.clone(),
            parts.topology.clone(),
            parts.coordinator.live().clone(),
            notes.clone(),
        )?;
        routes.add_service(AdminServer::new(admin));
        let mut tasks = Vec::new();
        if parts.group == ORACLE {
            tasks.push(tokio::spawn(drain::run_drainer(
                parts.shared.clone(),
                parts.coordinator.clone(),
                notes,
            )));
        }
        Ok(tasks)
    })
}
