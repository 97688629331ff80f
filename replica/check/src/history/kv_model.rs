//! The sequential specification of the kv application, as seen through histories.
//!
//! [`KvSpec`] is a `BTreeMap<String, i64>` implementing stateright's [`SequentialSpec`] over
//! the app's own types, [`KvCommand`] and [`KvReply`]: the reference object the
//! linearizability checker replays operations against. [`decode_op`] and [`decode_ret`] read
//! the history encoding of each operation (`f`, `args`, `result`), which the app defines
//! ([`dssmr_engine::app::kv`], with [`command_json`] and [`reply_json`] to write it).
//!
//! A history's `put` is the put of the kv client (`dssmr_bench::kv::execute`): it creates a
//! missing key, so it always returns `"done"` (the app's `Put` alone replies `missing`).
//! `transfer` returns `false` and changes nothing when the balance of `from` is below `amount`.
//! Arithmetic follows the formulas literally and wraps on overflow (the model never panics).
//! Lists of missing keys are compared as sets: decoding sorts and deduplicates them.
//!
//! This module only decodes and models; it does not check histories and does no I/O.

use dssmr_engine::app::kv::KvCommand;
use serde::Deserialize;
use serde_json::{json, Value};

pub use dssmr_engine::app::kv::{command_json, reply_json, KvReply};
use stateright::semantics::SequentialSpec;
use std::collections::BTreeMap;

/// Errors decoding an operation or its result from a history event.
#[derive(Debug, thiserror::Error)]
pub enum KvModelError {
    /// `f` is not an operation of the kv application.
    #[error("unknown kv operation {f:?}")]
    UnknownOperation {
        /// The operation name found.
        f: String,
    },
    /// The arguments do not have the shape the operation requires.
    #[error("bad arguments for {f}: {args}")]
    BadArgs {
        /// The operation name.
        f: String,
        /// The arguments found.
        args: Value,
        /// What is wrong with them.
        #[source]
        source: serde_json::Error,
    },
    /// The result does not have a shape the operation can return.
    #[error("bad result for {f}: {result}")]
    BadResult {
        /// The operation name.
        f: String,
        /// The result found.
        result: Value,
    },
}

/// Result alias of this module.
pub type Result<T, E = KvModelError> = std::result::Result<T, E>;

/// Decodes the operation `f(args)` of a history event into the app's command.
pub fn decode_op(f: &str, args: &Value) -> Result<KvCommand> {
    if !KvCommand::NAMES.contains(&f) {
        return Err(KvModelError::UnknownOperation { f: f.to_string() });
    }
    // The args are the serde form of the command's fields, under the variant named `f`.
    KvCommand::deserialize(json!({ f: args })).map_err(|source| KvModelError::BadArgs {
        f: f.to_string(),
        args: args.clone(),
        source,
    })
}

/// Decodes what `op` returned (the `result` of its `ok` completion). Lists of missing keys
/// come back sorted and deduplicated.
pub fn decode_ret(op: &KvCommand, result: &Value) -> Result<KvReply> {
    let bad = || KvModelError::BadResult {
        f: op.name().to_string(),
        result: result.clone(),
    };
    if let Some(missing) = result.get("missing") {
        if matches!(op, KvCommand::Put { .. }) {
            return Err(bad());
        }
        let mut keys = Vec::<String>::deserialize(missing).map_err(|_| bad())?;
        keys.sort_unstable();
        keys.dedup();
        return Ok(KvReply::Missing(keys));
    }
    let field = |name: &str| result.get(name).ok_or_else(bad);
    Ok(match op {
        KvCommand::Get { .. } => KvReply::Value(field("value")?.as_i64().ok_or_else(bad)?),
        KvCommand::Put { .. } if result.as_str() == Some("done") => KvReply::Done,
        KvCommand::Put { .. } => return Err(bad()),
        KvCommand::Cas { .. } => KvReply::Cas(field("swapped")?.as_bool().ok_or_else(bad)?),
        KvCommand::Transfer { .. } => {
            KvReply::Transfer(field("transferred")?.as_bool().ok_or_else(bad)?)
        }
        KvCommand::ReadMany { keys } => {
            let values = Vec::<i64>::deserialize(field("values")?).map_err(|_| bad())?;
            if values.len() != keys.len() {
                return Err(bad());
            }
            KvReply::Values(values)
        }
    })
}

/// The distinct keys `op` touches, sorted.
pub fn distinct_keys(op: &KvCommand) -> Vec<&str> {
    let mut keys = op.keys();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The sequential kv: the reference object operations are replayed against.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KvSpec {
    /// Current value of every existing key.
    pub vars: BTreeMap<String, i64>,
}

impl KvSpec {
    /// A kv holding `vars`.
    pub fn new(vars: BTreeMap<String, i64>) -> Self {
        KvSpec { vars }
    }

    /// The keys among `keys` that do not exist, sorted and deduplicated.
    fn missing<'a>(&self, keys: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        let mut missing: Vec<String> = keys
            .into_iter()
            .filter(|k| !self.vars.contains_key(*k))
            .cloned()
            .collect();
        missing.sort_unstable();
        missing.dedup();
        missing
    }
}

impl SequentialSpec for KvSpec {
    type Op = KvCommand;
    type Ret = KvReply;

    fn invoke(&mut self, op: &KvCommand) -> KvReply {
        match op {
            KvCommand::Get { key } => match self.vars.get(key) {
                Some(value) => KvReply::Value(*value),
                None => KvReply::Missing(vec![key.clone()]),
            },
            KvCommand::Put { key, value } => {
                self.vars.insert(key.clone(), *value);
                KvReply::Done
            }
            KvCommand::Cas { key, expected, new } => match self.vars.get_mut(key) {
                Some(value) if *value == *expected => {
                    *value = *new;
                    KvReply::Cas(true)
                }
                Some(_) => KvReply::Cas(false),
                None => KvReply::Missing(vec![key.clone()]),
            },
            KvCommand::Transfer { from, to, amount } => {
                let missing = self.missing([from, to]);
                if !missing.is_empty() {
                    return KvReply::Missing(missing);
                }
                let Some(balance) = self.vars.get_mut(from) else {
                    return KvReply::Missing(vec![from.clone()]);
                };
                if *balance < *amount {
                    return KvReply::Transfer(false);
                }
                *balance = balance.wrapping_sub(*amount);
                if let Some(credit) = self.vars.get_mut(to) {
                    *credit = credit.wrapping_add(*amount);
                }
                KvReply::Transfer(true)
            }
            KvCommand::ReadMany { keys } => {
                let missing = self.missing(keys);
                if !missing.is_empty() {
                    return KvReply::Missing(missing);
                }
                KvReply::Values(
                    keys.iter()
                        .filter_map(|k| self.vars.get(k).copied())
                        .collect(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pairs: &[(&str, i64)]) -> KvSpec {
        KvSpec::new(pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    }

    fn op(f: &str, args: Value) -> KvCommand {
        decode_op(f, &args).expect("valid op")
    }

    #[test]
    fn decodes_every_operation_and_result() {
        let get = op("get", json!({"key": "a"}));
        assert_eq!(get, KvCommand::Get { key: "a".into() });
        assert_eq!(
            decode_ret(&get, &json!({"value": 5})).ok(),
            Some(KvReply::Value(5))
        );
        assert_eq!(
            decode_ret(&get, &json!({"missing": ["a"]})).ok(),
            Some(KvReply::Missing(vec!["a".into()]))
        );
        let put = op("put", json!({"key": "a", "value": 5}));
        assert_eq!(decode_ret(&put, &json!("done")).ok(), Some(KvReply::Done));
        let cas = op("cas", json!({"key": "a", "expected": 1, "new": 2}));
        assert_eq!(
            decode_ret(&cas, &json!({"swapped": false})).ok(),
            Some(KvReply::Cas(false))
        );
        let transfer = op("transfer", json!({"from": "b", "to": "a", "amount": 3}));
        assert_eq!(distinct_keys(&transfer), ["a", "b"]);
        assert_eq!(
            decode_ret(&transfer, &json!({"missing": ["b", "a"]})).ok(),
            Some(KvReply::Missing(vec!["a".into(), "b".into()]))
        );
        let read = op("read_many", json!({"keys": ["b", "a", "b"]}));
        assert_eq!(distinct_keys(&read), ["a", "b"]);
        assert_eq!(
            decode_ret(&read, &json!({"values": [1, 2, 1]})).ok(),
            Some(KvReply::Values(vec![1, 2, 1]))
        );
    }

    #[test]
    fn rejects_malformed_operations_and_results() {
        assert!(matches!(
            decode_op("incr", &json!({"key": "a"})),
            Err(KvModelError::UnknownOperation { .. })
        ));
        assert!(matches!(
            decode_op("put", &json!({"key": "a", "value": "five"})),
            Err(KvModelError::BadArgs { .. })
        ));
        let read = op("read_many", json!({"keys": ["a", "b"]}));
        assert!(matches!(
            decode_ret(&read, &json!({"values": [1]})),
            Err(KvModelError::BadResult { .. })
        ));
        let put = op("put", json!({"key": "a", "value": 5}));
        assert!(decode_ret(&put, &json!({"missing": ["a"]})).is_err());
        assert!(decode_ret(&put, &json!("ok")).is_err());
        let get = op("get", json!({"key": "a"}));
        assert!(decode_ret(&get, &json!({"swapped": true})).is_err());
    }

    #[test]
    fn sequential_semantics() {
        let mut kv = spec(&[("a", 10), ("b", 0)]);
        let transfer = |from: &str, to: &str, amount| KvCommand::Transfer {
            from: from.into(),
            to: to.into(),
            amount,
        };
        assert_eq!(kv.invoke(&transfer("a", "b", 4)), KvReply::Transfer(true));
        assert_eq!(kv.invoke(&transfer("a", "b", 7)), KvReply::Transfer(false));
        assert_eq!(kv.invoke(&transfer("a", "a", 6)), KvReply::Transfer(true));
        assert_eq!(
            kv.invoke(&transfer("z", "y", 1)),
            KvReply::Missing(vec!["y".into(), "z".into()])
        );
        assert_eq!(kv, spec(&[("a", 6), ("b", 4)]));
        let cas = |expected, new| KvCommand::Cas {
            key: "b".into(),
            expected,
            new,
        };
        assert_eq!(kv.invoke(&cas(3, 9)), KvReply::Cas(false));
        assert_eq!(kv.invoke(&cas(4, 9)), KvReply::Cas(true));
        let read = KvCommand::ReadMany {
            keys: vec!["b".into(), "a".into()],
        };
        assert_eq!(kv.invoke(&read), KvReply::Values(vec![9, 6]));
        let read_missing = KvCommand::ReadMany {
            keys: vec!["c".into(), "a".into(), "c".into()],
        };
        assert_eq!(kv.invoke(&read_missing), KvReply::Missing(vec!["c".into()]));
        let put = KvCommand::Put {
            key: "c".into(),
            value: 1,
        };
        assert_eq!(kv.invoke(&put), KvReply::Done);
        assert_eq!(
            kv.invoke(&KvCommand::Get { key: "c".into() }),
            KvReply::Value(1)
        );
    }
}
