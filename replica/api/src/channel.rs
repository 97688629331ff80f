//! gRPC channels to replicas: the one way every client of a replica (a peer, the client proxy,
//! the admin client) connects.

use tonic::transport::{Channel, Endpoint};

/// Turns `host:port` into a lazily connecting gRPC channel.
pub fn lazy_channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    let uri = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(uri)?
        .tcp_nodelay(true)
        .connect_timeout(std::time::Duration::from_millis(500))
        .connect_lazy())
}
