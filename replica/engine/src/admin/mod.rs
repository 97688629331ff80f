//! Administration of a running cluster: the `Admin` gRPC service every replica serves, and
//! the drainer that empties partitions the operator scales away.
//!
//! * [`service::AdminService`]: `Describe` (this replica's Raft state), `Status` (every
//!   group's members, leader and commit index, asked with `Describe`; at an oracle replica
//!   also variables per partition and which partitions take new variables), `AddPartition`
//!   and `DrainPartition` (oracle commands: ordered through the oracle group like any other
//!   command, so every oracle replica applies them at the same point).
//! * [`drain::run_drainer`]: on the oracle leader, moves the variables of draining partitions
//!   to the active partition holding the fewest, in batches, with ordinary move commands
//!   (Algorithm 2's move: oracle, source and destination), until they are empty. Clients
//!   may still move variables into a draining partition (their destination is chosen among
//!   the partitions a command involves); the drainer moves them out again, and since nothing
//!   new is placed there the partition empties.

pub(crate) mod drain;
pub(crate) mod service;

pub(crate) use service::AdminService;

use crate::ids::ORACLE;
use crate::node::{NodeParts, ReplicaServices};
use crate::proto::admin_server::AdminServer;

/// The admin service of a replica, and at an oracle replica the drainer: what the replica
/// server and local clusters add to every replica they start ([`crate::node::ReplicaSpec`]).
pub(crate) fn replica_services() -> ReplicaServices {
    Box::new(|parts: NodeParts<'_>, routes| {
        let admin = AdminService::new(
            parts.group,
            parts.ordinal,
            parts.addr.to_string(),
            parts.raft.clone(),
            parts.shared.clone(),
            parts.topology.clone(),
        )?;
        routes.add_service(AdminServer::new(admin));
        let mut tasks = Vec::new();
        if parts.group == ORACLE {
            tasks.push(tokio::spawn(drain::run_drainer(
                parts.shared.clone(),
                parts.coordinator.clone(),
                parts.topology.clone(),
                parts.node_id,
            )));
        }
        Ok(tasks)
    })
}
