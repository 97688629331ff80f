//! The DS-SMR client proxy (Algorithm 2 and §4.3) and what it needs: Algorithm 2 as a state
//! machine with no I/O ([`access`]), the proxy that drives it over the network ([`proxy`]),
//! the location cache, the destination policies, and the client process's metrics. Talking
//! to one group (leader finding, redirects, retries) is [`crate::group::client`].

pub(crate) mod access;
pub(crate) mod affinity;
pub(crate) mod cache;
pub(crate) mod connections;
pub(crate) mod error;
pub mod metrics;
pub mod proxy;
pub(crate) mod stats;

pub use crate::group::client::{ClientError, GroupClient};
pub use crate::mode::{DestinationPolicy, Mode};
pub use crate::topology::Topology;
pub use cache::LocationCache;
pub use proxy::{Connections, Created, Proxy, ProxyConfig, ProxyError};
