//! The sequential specification of the kv application, as seen through histories.
//!
//! [`KvSpec`] is a `BTreeMap<String, i64>` implementing stateright's [`SequentialSpec`]: the
//! reference object the linearizability checker replays operations against. [`KvOp`] and
//! [`KvRet`] decode the history encoding of each operation (`f`, `args`, `result`):
//!
//! | `f`         | `args`                                   | `result`                                                  |
//! |-------------|------------------------------------------|-----------------------------------------------------------|
//! | `get`       | `{"key":"a"}`                            | `{"value":5}` or `{"missing":["a"]}`                      |
//! | `put`       | `{"key":"a","value":5}`                  | `"done"` (creates the key if missing)                     |
//! | `cas`       | `{"key":"a","expected":1,"new":2}`       | `{"swapped":bool}` or `{"missing":["a"]}`                 |
//! | `transfer`  | `{"from":"a","to":"b","amount":3}`       | `{"transferred":bool}` or `{"missing":[sorted keys]}`     |
//! | `read_many` | `{"keys":["a","b"]}`                     | `{"values":[1,2]}` or `{"missing":[sorted, dedup keys]}`  |
//!
//! `transfer` returns `false` and changes nothing when the balance of `from` is below `amount`.
//! Arithmetic follows the formulas literally and wraps on overflow (the model never panics).
//! Lists of missing keys are compared as sets: decoding sorts and deduplicates them.
//!
//! This module only decodes and models; it does not check histories and does no I/O.

use serde::Deserialize;
use serde_json::{json, Value};
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

/// A kv operation with its arguments.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// Read one key.
    Get {
        /// The key.
        key: String,
    },
    /// Write one key, creating it if missing.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: i64,
    },
    /// Compare-and-swap one key.
    Cas {
        /// The key.
        key: String,
        /// The value the key must hold for the swap to happen.
        expected: i64,
        /// The value written when it does.
        new: i64,
    },
    /// Move `amount` from one key to another if `from` holds at least `amount`.
    Transfer {
        /// Debited key.
        from: String,
        /// Credited key.
        to: String,
        /// How much moves.
        amount: i64,
    },
    /// Read several keys atomically.
    ReadMany {
        /// The keys, in the order of the returned values.
        keys: Vec<String>,
    },
}

/// What a kv operation returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvRet {
    /// `get` of an existing key.
    Value(i64),
    /// `put`.
    Done,
    /// `cas` on an existing key: whether it swapped.
    Swapped(bool),
    /// `transfer` between existing keys: whether the money moved.
    Transferred(bool),
    /// `read_many` of existing keys, in the order asked.
    Values(Vec<i64>),
    /// Some keys the operation needs do not exist (sorted, deduplicated).
    Missing(Vec<String>),
}

#[derive(Deserialize)]
struct KeyArgs {
    key: String,
}

#[derive(Deserialize)]
struct PutArgs {
    key: String,
    value: i64,
}

#[derive(Deserialize)]
struct CasArgs {
    key: String,
    expected: i64,
    new: i64,
}

#[derive(Deserialize)]
struct TransferArgs {
    from: String,
    to: String,
    amount: i64,
}

#[derive(Deserialize)]
struct ReadManyArgs {
    keys: Vec<String>,
}

fn args<T: for<'de> Deserialize<'de>>(f: &str, args: &Value) -> Result<T> {
    T::deserialize(args).map_err(|source| KvModelError::BadArgs {
        f: f.to_string(),
        args: args.clone(),
        source,
    })
}

impl KvOp {
    /// Decodes the operation `f(args)` of a history event.
    pub fn decode(f: &str, raw: &Value) -> Result<Self> {
        Ok(match f {
            "get" => {
                let a: KeyArgs = args(f, raw)?;
                KvOp::Get { key: a.key }
            }
            "put" => {
                let a: PutArgs = args(f, raw)?;
                KvOp::Put {
                    key: a.key,
                    value: a.value,
                }
            }
            "cas" => {
                let a: CasArgs = args(f, raw)?;
                KvOp::Cas {
                    key: a.key,
                    expected: a.expected,
                    new: a.new,
                }
            }
            "transfer" => {
                let a: TransferArgs = args(f, raw)?;
                KvOp::Transfer {
                    from: a.from,
                    to: a.to,
                    amount: a.amount,
                }
            }
            "read_many" => {
                let a: ReadManyArgs = args(f, raw)?;
                KvOp::ReadMany { keys: a.keys }
            }
            other => {
                return Err(KvModelError::UnknownOperation {
                    f: other.to_string(),
                })
            }
        })
    }

    /// The history name of the operation.
    pub fn name(&self) -> &'static str {
        match self {
            KvOp::Get { .. } => "get",
            KvOp::Put { .. } => "put",
            KvOp::Cas { .. } => "cas",
            KvOp::Transfer { .. } => "transfer",
            KvOp::ReadMany { .. } => "read_many",
        }
    }

    /// Whether the operation never changes the kv (`get`, `read_many`).
    pub fn is_read_only(&self) -> bool {
        matches!(self, KvOp::Get { .. } | KvOp::ReadMany { .. })
    }

    /// The distinct keys the operation touches, sorted.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = match self {
            KvOp::Get { key } | KvOp::Put { key, .. } | KvOp::Cas { key, .. } => vec![key],
            KvOp::Transfer { from, to, .. } => vec![from, to],
            KvOp::ReadMany { keys } => keys.iter().map(String::as_str).collect(),
        };
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// The history encoding of the operation: its `f` and `args`.
    pub fn encode(&self) -> (&'static str, Value) {
        let args = match self {
            KvOp::Get { key } => json!({ "key": key }),
            KvOp::Put { key, value } => json!({ "key": key, "value": value }),
            KvOp::Cas { key, expected, new } => {
                json!({ "key": key, "expected": expected, "new": new })
            }
            KvOp::Transfer { from, to, amount } => {
                json!({ "from": from, "to": to, "amount": amount })
            }
            KvOp::ReadMany { keys } => json!({ "keys": keys }),
        };
        (self.name(), args)
    }

    /// Decodes what this operation returned (the `result` of its `ok` completion).
    pub fn decode_ret(&self, result: &Value) -> Result<KvRet> {
        let bad = || KvModelError::BadResult {
            f: self.name().to_string(),
            result: result.clone(),
        };
        if let Some(missing) = result.get("missing") {
            if matches!(self, KvOp::Put { .. }) {
                return Err(bad());
            }
            let mut keys = Vec::<String>::deserialize(missing).map_err(|_| bad())?;
            keys.sort_unstable();
            keys.dedup();
            return Ok(KvRet::Missing(keys));
        }
        let field = |name: &str| result.get(name).ok_or_else(bad);
        Ok(match self {
            KvOp::Get { .. } => KvRet::Value(field("value")?.as_i64().ok_or_else(bad)?),
            KvOp::Put { .. } if result.as_str() == Some("done") => KvRet::Done,
            KvOp::Put { .. } => return Err(bad()),
            KvOp::Cas { .. } => KvRet::Swapped(field("swapped")?.as_bool().ok_or_else(bad)?),
            KvOp::Transfer { .. } => {
                KvRet::Transferred(field("transferred")?.as_bool().ok_or_else(bad)?)
            }
            KvOp::ReadMany { keys } => {
                let values = Vec::<i64>::deserialize(field("values")?).map_err(|_| bad())?;
                if values.len() != keys.len() {
                    return Err(bad());
                }
                KvRet::Values(values)
            }
        })
    }
}

impl KvRet {
    /// The history encoding of the result (the `result` of an `ok` completion).
    pub fn encode(&self) -> Value {
        match self {
            KvRet::Value(value) => json!({ "value": value }),
            KvRet::Done => json!("done"),
            KvRet::Swapped(swapped) => json!({ "swapped": swapped }),
            KvRet::Transferred(moved) => json!({ "transferred": moved }),
            KvRet::Values(values) => json!({ "values": values }),
            KvRet::Missing(keys) => json!({ "missing": keys }),
        }
    }
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
    type Op = KvOp;
    type Ret = KvRet;

    fn invoke(&mut self, op: &KvOp) -> KvRet {
        match op {
            KvOp::Get { key } => match self.vars.get(key) {
                Some(value) => KvRet::Value(*value),
                None => KvRet::Missing(vec![key.clone()]),
            },
            KvOp::Put { key, value } => {
                self.vars.insert(key.clone(), *value);
                KvRet::Done
            }
            KvOp::Cas { key, expected, new } => match self.vars.get_mut(key) {
                Some(value) if *value == *expected => {
                    *value = *new;
                    KvRet::Swapped(true)
                }
                Some(_) => KvRet::Swapped(false),
                None => KvRet::Missing(vec![key.clone()]),
            },
            KvOp::Transfer { from, to, amount } => {
                let missing = self.missing([from, to]);
                if !missing.is_empty() {
                    return KvRet::Missing(missing);
                }
                let Some(balance) = self.vars.get_mut(from) else {
                    return KvRet::Missing(vec![from.clone()]);
                };
                if *balance < *amount {
                    return KvRet::Transferred(false);
                }
                *balance = balance.wrapping_sub(*amount);
                if let Some(credit) = self.vars.get_mut(to) {
                    *credit = credit.wrapping_add(*amount);
                }
                KvRet::Transferred(true)
            }
            KvOp::ReadMany { keys } => {
                let missing = self.missing(keys);
                if !missing.is_empty() {
                    return KvRet::Missing(missing);
                }
                KvRet::Values(
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

    fn op(f: &str, args: Value) -> KvOp {
        KvOp::decode(f, &args).expect("valid op")
    }

    #[test]
    fn decodes_every_operation_and_result() {
        let get = op("get", json!({"key": "a"}));
        assert_eq!(get, KvOp::Get { key: "a".into() });
        assert_eq!(
            get.decode_ret(&json!({"value": 5})).ok(),
            Some(KvRet::Value(5))
        );
        assert_eq!(
            get.decode_ret(&json!({"missing": ["a"]})).ok(),
            Some(KvRet::Missing(vec!["a".into()]))
        );
        let put = op("put", json!({"key": "a", "value": 5}));
        assert_eq!(put.decode_ret(&json!("done")).ok(), Some(KvRet::Done));
        let cas = op("cas", json!({"key": "a", "expected": 1, "new": 2}));
        assert_eq!(
            cas.decode_ret(&json!({"swapped": false})).ok(),
            Some(KvRet::Swapped(false))
        );
        let transfer = op("transfer", json!({"from": "b", "to": "a", "amount": 3}));
        assert_eq!(transfer.keys(), ["a", "b"]);
        assert_eq!(
            transfer.decode_ret(&json!({"missing": ["b", "a"]})).ok(),
            Some(KvRet::Missing(vec!["a".into(), "b".into()]))
        );
        let read = op("read_many", json!({"keys": ["b", "a", "b"]}));
        assert_eq!(read.keys(), ["a", "b"]);
        assert_eq!(
            read.decode_ret(&json!({"values": [1, 2, 1]})).ok(),
            Some(KvRet::Values(vec![1, 2, 1]))
        );
    }

    #[test]
    fn rejects_malformed_operations_and_results() {
        assert!(matches!(
            KvOp::decode("incr", &json!({"key": "a"})),
            Err(KvModelError::UnknownOperation { .. })
        ));
        assert!(matches!(
            KvOp::decode("put", &json!({"key": "a", "value": "five"})),
            Err(KvModelError::BadArgs { .. })
        ));
        let read = op("read_many", json!({"keys": ["a", "b"]}));
        assert!(matches!(
            read.decode_ret(&json!({"values": [1]})),
            Err(KvModelError::BadResult { .. })
        ));
        let put = op("put", json!({"key": "a", "value": 5}));
        assert!(put.decode_ret(&json!({"missing": ["a"]})).is_err());
        assert!(put.decode_ret(&json!("ok")).is_err());
        let get = op("get", json!({"key": "a"}));
        assert!(get.decode_ret(&json!({"swapped": true})).is_err());
    }

    #[test]
    fn sequential_semantics() {
        let mut kv = spec(&[("a", 10), ("b", 0)]);
        let transfer = |from: &str, to: &str, amount| KvOp::Transfer {
            from: from.into(),
            to: to.into(),
            amount,
        };
        assert_eq!(kv.invoke(&transfer("a", "b", 4)), KvRet::Transferred(true));
        assert_eq!(kv.invoke(&transfer("a", "b", 7)), KvRet::Transferred(false));
        assert_eq!(kv.invoke(&transfer("a", "a", 6)), KvRet::Transferred(true));
        assert_eq!(
            kv.invoke(&transfer("z", "y", 1)),
            KvRet::Missing(vec!["y".into(), "z".into()])
        );
        assert_eq!(kv, spec(&[("a", 6), ("b", 4)]));
        let cas = |expected, new| KvOp::Cas {
            key: "b".into(),
            expected,
            new,
        };
        assert_eq!(kv.invoke(&cas(3, 9)), KvRet::Swapped(false));
        assert_eq!(kv.invoke(&cas(4, 9)), KvRet::Swapped(true));
        let read = KvOp::ReadMany {
            keys: vec!["b".into(), "a".into()],
        };
        assert_eq!(kv.invoke(&read), KvRet::Values(vec![9, 6]));
        let read_missing = KvOp::ReadMany {
            keys: vec!["c".into(), "a".into(), "c".into()],
        };
        assert_eq!(kv.invoke(&read_missing), KvRet::Missing(vec!["c".into()]));
        let put = KvOp::Put {
            key: "c".into(),
            value: 1,
        };
        assert_eq!(kv.invoke(&put), KvRet::Done);
        assert_eq!(kv.invoke(&KvOp::Get { key: "c".into() }), KvRet::Value(1));
    }
}
