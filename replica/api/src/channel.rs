//! gRPC channels to replicas: the one way every client of a replica (a peer, the client proxy,
//! the admin client) connects.
//!
//! A channel dials the address it was given by name: each new connection resolves the name
//! again, so a peer whose pod was replaced (a new IP behind the same DNS name) is found once
//! the old connection is gone. HTTP/2 keep-alive pings notice a peer that vanished without
//! closing its connections (a node lost, a link cut) within [`KEEPALIVE_INTERVAL`] +
//! [`KEEPALIVE_TIMEOUT`]; the connection is then dropped and dialled again.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// How often an open connection is pinged when nothing else is sent.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);

/// How long a ping may go unanswered before the connection is dropped.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Turns `host:port` into a lazily connecting gRPC channel.
pub fn lazy_channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    let uri = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(uri)?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_millis(500))
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect_lazy())
}
