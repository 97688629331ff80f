//! Clients of groups (finding a group's leader, following redirects, retrying) and the DS-SMR
//! client proxy built on them.

pub mod affinity;
pub mod cache;
pub mod group_client;
pub mod proxy;

pub use cache::LocationCache;
pub use group_client::{ClientError, GroupClient, Topology};
pub use proxy::{Connections, Created, DestinationPolicy, Mode, Proxy, ProxyConfig, ProxyError};
