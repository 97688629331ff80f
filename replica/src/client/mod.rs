//! Clients of groups: finding a group's leader, following redirects, retrying.

pub mod group_client;

pub use group_client::{ClientError, GroupClient, Topology};
