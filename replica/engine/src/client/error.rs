//! Why a client proxy's command did not complete: [`ProxyError`], shared by the access state
//! machine ([`crate::client::access`]), which decides, and the proxy
//! ([`crate::client::proxy`]), which meets the failures on the network.
//!
//! Every variant says whether the command certainly did not take effect or may have: histories
//! record the latter as `info`.

use crate::command::Reply;
use crate::group::client::ClientError;
use thiserror::Error;

/// Why a command did not complete.
#[derive(Debug, Error)]
pub enum ProxyError {
    /// The command certainly did not take effect (malformed, or refused by the cluster).
    #[error("command rejected: {0}")]
    Rejected(String),
    /// The cluster did not answer in time: the command may or may not have taken effect.
    #[error("outcome unknown: {0}")]
    Indeterminate(#[source] ClientError),
    /// The proxy's configuration does not fit the cluster.
    #[error("{0}")]
    Config(String),
    /// A group did not know a destination of the command (the topology changed since this
    /// proxy looked): the command did not take effect there; refresh and try again.
    #[error("topology changed: {0}")]
    Stale(String),
    /// A read asked again was answered before and its reply not kept: it took no effect;
    /// run it again (as a new message).
    #[error("read asked again: {0}")]
    AskAgain(String),
}

impl ProxyError {
    /// The error a reply the proxy did not expect at that point stands for: a refusal because
    /// the topology changed is [`ProxyError::Stale`] (run it again); anything else is a
    /// rejection.
    pub(crate) fn unexpected(reply: Reply) -> ProxyError {
        match reply {
            Reply::Rejected(m) => ProxyError::Rejected(m),
            Reply::Refused(r) if r.is_stale() => ProxyError::Stale(r.to_string()),
            Reply::Refused(r) => ProxyError::Rejected(r.to_string()),
            other => ProxyError::Rejected(format!("unexpected reply {other:?}")),
        }
    }
}
