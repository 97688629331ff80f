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
    /// What the destinations of one message say together, from each one's outcome: every
    /// reply when all answered; otherwise an error as uncertain as the most uncertain one
    /// (a destination that may have ordered the message outweighs one that certainly did
    /// not), and [`ProxyError::Indeterminate`] when some delivered it and others did not
    /// answer so: the command took effect, but not every reply is known.
    pub(crate) fn combine<T>(outcomes: Vec<Result<T, ProxyError>>) -> Result<Vec<T>, ProxyError> {
        let (mut replies, mut errors) = (Vec::new(), Vec::new());
        for outcome in outcomes {
            match outcome {
                Ok(reply) => replies.push(reply),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            return Ok(replies);
        }
        if !replies.is_empty() {
            let what: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return Err(ProxyError::Indeterminate(ClientError::Disagree(format!(
                "{} destination(s) answered, {} did not: {}",
                replies.len(),
                errors.len(),
                what.join("; ")
            ))));
        }
        Err(Self::least_certain(errors))
    }

    /// Of `errors` (one per destination, none answered), the one that says least for certain:
    /// indeterminate before stale (refused by one destination, maybe ordered by others)
    /// before asked again before rejected before a configuration error.
    pub(crate) fn least_certain(errors: Vec<ProxyError>) -> ProxyError {
        let rank = |e: &ProxyError| match e {
            ProxyError::Indeterminate(_) => 0,
            ProxyError::Stale(_) => 1,
            ProxyError::AskAgain(_) => 2,
            ProxyError::Rejected(_) => 3,
            ProxyError::Config(_) => 4,
        };
        errors
            .into_iter()
            .min_by_key(rank)
            .unwrap_or_else(|| ProxyError::Config("no destination".into()))
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::GroupId;

    fn unknown() -> ProxyError {
        ProxyError::Indeterminate(ClientError::Unavailable {
            group: GroupId(2),
            last: "no answer".into(),
        })
    }

    /// Bug (issue 16): the proxy returned the last destination's error, so a refusal at one
    /// destination hid a timeout at another, and the history said `fail` for a command that
    /// may have taken effect.
    #[test]
    fn destinations_together_are_as_uncertain_as_the_least_certain() {
        let rejected = || ProxyError::Rejected("no".into());
        let r = ProxyError::combine::<u8>(vec![Err(unknown()), Err(rejected())]);
        assert!(matches!(r, Err(ProxyError::Indeterminate(_))), "{r:?}");
        let r =
            ProxyError::combine::<u8>(vec![Err(rejected()), Err(ProxyError::Stale("s".into()))]);
        assert!(matches!(r, Err(ProxyError::Stale(_))), "{r:?}");
        let r = ProxyError::combine(vec![Ok(1), Err(rejected())]);
        assert!(
            matches!(r, Err(ProxyError::Indeterminate(ClientError::Disagree(_)))),
            "{r:?}"
        );
        let r = ProxyError::combine::<u8>(vec![Err(rejected()), Err(rejected())]);
        assert!(matches!(r, Err(ProxyError::Rejected(_))), "{r:?}");
        assert_eq!(ProxyError::combine(vec![Ok(1), Ok(2)]).unwrap(), [1, 2]);
    }
}
