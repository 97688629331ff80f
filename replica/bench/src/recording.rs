//! Recording benchmark commands into a history: [`BenchHistory`] is one history that several
//! runs write to, handing out process ids that stay distinct across the runs; [`recorded`] and
//! [`record_outcome`] record one proxy call as `invoke` and completion (`ok` / `fail` /
//! `info`), following the producer contract of [`dssmr_check::history`].
//!
//! This module records; it does not encode commands (the apps do) or run them.

use dssmr_check::history::{self, EventKind, History};
use dssmr_engine::client::ProxyError;
use serde_json::Value;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A history shared by the runs of one benchmark invocation, with the allocator of its process
/// ids: every run takes fresh ids from it, so processes never collide across runs and a
/// process retired after an `info` is never reused. Cheap to clone; clones share both.
#[derive(Clone, Debug)]
pub struct BenchHistory {
    history: History,
    next_process: Arc<AtomicU64>,
}

impl BenchHistory {
    /// Process ids start at 0.
    pub fn new(history: History) -> Self {
        BenchHistory {
            history,
            next_process: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The underlying recorder.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// A process id no one has used yet.
    pub fn fresh_process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::Relaxed)
    }

    /// Flushes the history file and reports the first write error (see [`History::flush`]).
    pub fn flush(&self) -> history::Result<()> {
        self.history.flush()
    }
}

/// Records the completion of `f(args)` by `process` from the proxy's `outcome`, and returns
/// the kind recorded: `ok` with `encode(reply)`, `info` for [`ProxyError::Indeterminate`]
/// (the operation may have taken effect) and `fail` otherwise (it certainly did not).
pub fn record_outcome<T>(
    history: &History,
    process: u64,
    f: &str,
    args: Value,
    outcome: &Result<T, ProxyError>,
    encode: impl FnOnce(&T) -> Value,
) -> EventKind {
    let (kind, result) = match outcome {
        Ok(reply) => (EventKind::Ok, Some(encode(reply))),
        // Stale: refused by one destination, but others may have ordered it.
        Err(ProxyError::Indeterminate(_) | ProxyError::Stale(_) | ProxyError::AskAgain(_)) => {
            (EventKind::Info, None)
        }
        Err(ProxyError::Rejected(_) | ProxyError::Config(_)) => (EventKind::Fail, None),
    };
    history.complete(process, kind, f, args, result);
    kind
}

/// Runs `call`; with a `history`, records it as `f(args)` (from `describe`) of `*process`:
/// the invocation before the call, the completion after it ([`record_outcome`]). After an
/// `info`, `*process` becomes a fresh id (the old one is retired, as the history contract
/// requires). Without a history, `describe` is not called and `*process` is left alone.
pub async fn recorded<T, Fut>(
    history: Option<&BenchHistory>,
    process: &mut u64,
    describe: impl FnOnce() -> (&'static str, Value),
    call: Fut,
    encode: impl FnOnce(&T) -> Value,
) -> Result<T, ProxyError>
where
    Fut: Future<Output = Result<T, ProxyError>>,
{
    let Some(h) = history else {
        return call.await;
    };
    let (f, args) = describe();
    h.history.invoke(*process, f, args.clone());
    let outcome = call.await;
    if record_outcome(&h.history, *process, f, args, &outcome, encode) == EventKind::Info {
        *process = h.fresh_process();
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::tests::unknown;
    use serde_json::json;

    #[tokio::test]
    async fn recorded_calls_follow_the_history_contract() {
        let h = BenchHistory::new(History::in_memory());
        let mut a = h.fresh_process();
        let mut b = h.fresh_process();
        assert_eq!((a, b), (0, 1));
        let describe = || ("get", json!({"key": "k0"}));
        let ok = recorded(
            Some(&h),
            &mut a,
            describe,
            async { Ok(5) },
            |v| json!({ "value": v }),
        );
        assert_eq!(ok.await.ok(), Some(5));
        let lost = recorded(
            Some(&h),
            &mut b,
            describe,
            async { Err::<i64, _>(unknown()) },
            |_| json!(null),
        );
        assert!(lost.await.is_err());
        assert_eq!(b, 2, "a process is retired after an info");
        let refused = recorded(
            Some(&h),
            &mut a,
            describe,
            async { Err::<i64, _>(ProxyError::Rejected("no".into())) },
            |_| json!(null),
        );
        assert!(refused.await.is_err());
        assert_eq!(a, 0, "a process survives a fail");
        let kinds: Vec<_> = h
            .history()
            .events()
            .iter()
            .map(|e| (e.process, e.kind, e.result.clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (0, EventKind::Invoke, None),
                (0, EventKind::Ok, Some(json!({"value": 5}))),
                (1, EventKind::Invoke, None),
                (1, EventKind::Info, None),
                (0, EventKind::Invoke, None),
                (0, EventKind::Fail, None),
            ]
        );
        let mut p = 7;
        let plain = recorded(
            None,
            &mut p,
            || unreachable!(),
            async { Err::<i64, _>(unknown()) },
            |_| json!(null),
        );
        assert!(plain.await.is_err());
        assert_eq!(p, 7);
    }
}
