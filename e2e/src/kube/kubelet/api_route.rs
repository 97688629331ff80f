//! The API server as pods see it: in a cluster, pods reach the API server at the `kubernetes`
//! Service (`10.0.0.1:443` here) through kube-proxy; there is no kube-proxy here and the API
//! server listens on 127.0.0.1 only. So each node bridge gets a TCP relay on its own address
//! (a thread accepting on `<gateway>:<port>`, copying bytes both ways to the API server), and
//! the node network DNATs the Service address arriving on that bridge to it (rules in
//! [`super::network`]). TLS passes through untouched: the API server's certificate already
//! names `10.0.0.1`, so in-cluster clients (ServiceAccount token and CA) work unchanged.
//!
//! It owns the listeners and their accept threads; [`ApiRelay::stop`] closes the listeners
//! and joins those threads. Relayed connections end when either side closes (the control
//! plane stopping closes them all).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The relays of all node bridges.
pub struct ApiRelay {
    stop: Arc<AtomicBool>,
    listeners: Vec<(SocketAddr, JoinHandle<()>)>,
}

impl ApiRelay {
    /// One relay per address of `listen` (port chosen by the kernel) to `target`; returns the
    /// relay and the port of each address, in order.
    pub fn start(listen: &[String], target: SocketAddr) -> anyhow::Result<(ApiRelay, Vec<u16>)> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut relay = ApiRelay {
            stop: stop.clone(),
            listeners: Vec::new(),
        };
        let mut ports = Vec::new();
        for a in listen {
            let listener = TcpListener::bind(format!("{a}:0"))?;
            let addr = listener.local_addr()?;
            ports.push(addr.port());
            let stop = stop.clone();
            let t = std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(client) = conn {
                        relay_one(client, target);
                    }
                }
            });
            relay.listeners.push((addr, t));
        }
        Ok((relay, ports))
    }

    /// Stops accepting (each accept thread is woken by a connection of its own) and joins.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for (addr, t) in self.listeners.drain(..) {
            let _ = TcpStream::connect(addr);
            let _ = t.join();
        }
    }
}

impl Drop for ApiRelay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies `client` ⇄ `target` on two threads until either side closes.
fn relay_one(client: TcpStream, target: SocketAddr) {
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Write);
            let _ = from.shutdown(Shutdown::Read);
        });
    };
    if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
        pipe(client, server);
        pipe(s2, c2);
    }
}
