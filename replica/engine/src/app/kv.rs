//! kv: a replicated key-value store of `i64` values, the application that makes correctness
//! checkable.
//!
//! Every key is one DS-SMR variable, named by the key itself ([`kv_var`]). Commands touch a
//! fixed set of keys known from the command alone, so kv has no dependencies. `Transfer` and
//! `ReadMany` are atomic multi-key commands: a linearizability checker can verify that the sum
//! of all balances is conserved and that every `ReadMany` sees a consistent cut.
//!
//! This module owns the command and reply types, their semantics and their JSON form (the `f`,
//! `args` and `result` of a recorded history, and what `dssmr client kv ...` prints:
//! [`command_json`], [`reply_json`]):
//!
//! | `f`         | `args`                                   | `result`                                                  |
//! |-------------|------------------------------------------|-----------------------------------------------------------|
//! | `get`       | `{"key":"a"}`                            | `{"value":5}` or `{"missing":["a"]}`                      |
//! | `put`       | `{"key":"a","value":5}`                  | `"done"`                                                  |
//! | `cas`       | `{"key":"a","expected":1,"new":2}`       | `{"swapped":bool}` or `{"missing":["a"]}`                 |
//! | `transfer`  | `{"from":"a","to":"b","amount":3}`       | `{"transferred":bool}` or `{"missing":[sorted keys]}`     |
//! | `read_many` | `{"keys":["a","b"]}`                     | `{"values":[1,2]}` or `{"missing":[sorted, dedup keys]}`  |
//!
//! The `args` are the serde form of the command's fields (the variants are renamed to their
//! `f`), so a decoder may read them back with serde. It never creates or deletes keys (the
//! engine's `create` / `delete` commands do), never sees partitions and decodes no JSON
//! (`dssmr_check::history::kv_model` does).

use crate::app::state_machine::{StateMachine, Store};
use crate::ids::VarId;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The variable holding `key`: the key string itself.
pub fn kv_var(key: &str) -> VarId {
    VarId::new(key)
}

/// A kv command. Every key it names must already exist, otherwise it replies
/// [`KvReply::Missing`] and changes nothing.
///
/// The serde names of the variants are the history names (`read_many`); the binary encoding
/// (postcard) numbers variants and does not see them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvCommand {
    /// Reads one key.
    Get {
        /// The key to read.
        key: String,
    },
    /// Overwrites an existing key.
    Put {
        /// The key to write.
        key: String,
        /// Its new value.
        value: i64,
    },
    /// Sets `key` to `new` if it currently holds `expected`.
    Cas {
        /// The key to compare and swap.
        key: String,
        /// The value the key must hold for the swap to happen.
        expected: i64,
        /// The value written when the comparison succeeds.
        new: i64,
    },
    /// Atomically moves `amount` from `from` to `to` if `from` holds at least `amount`.
    Transfer {
        /// The key debited.
        from: String,
        /// The key credited.
        to: String,
        /// How much moves.
        amount: i64,
    },
    /// Atomically reads several keys.
    ReadMany {
        /// The keys to read, in reply order (duplicates allowed).
        keys: Vec<String>,
    },
}

impl KvCommand {
    /// Every command name ([`KvCommand::name`]), in the order of the variants.
    pub const NAMES: [&'static str; 5] = ["get", "put", "cas", "transfer", "read_many"];

    /// The command's name in histories and on command lines: `get`, `put`, `cas`, `transfer`,
    /// `read_many`.
    pub fn name(&self) -> &'static str {
        match self {
            KvCommand::Get { .. } => "get",
            KvCommand::Put { .. } => "put",
            KvCommand::Cas { .. } => "cas",
            KvCommand::Transfer { .. } => "transfer",
            KvCommand::ReadMany { .. } => "read_many",
        }
    }

    /// Whether the command never changes the store (`Get`, `ReadMany`).
    pub fn is_read_only(&self) -> bool {
        matches!(self, KvCommand::Get { .. } | KvCommand::ReadMany { .. })
    }

    /// The keys the command names, in command order and with duplicates.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            KvCommand::Get { key } | KvCommand::Put { key, .. } | KvCommand::Cas { key, .. } => {
                vec![key.as_str()]
            }
            KvCommand::Transfer { from, to, .. } => vec![from.as_str(), to.as_str()],
            KvCommand::ReadMany { keys } => keys.iter().map(String::as_str).collect(),
        }
    }
}

/// What a kv command returns.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvReply {
    /// The value read by `Get`.
    Value(i64),
    /// `Put` wrote its value.
    Done,
    /// `Cas`: true when the value was swapped.
    Cas(bool),
    /// `Transfer`: false when `from` holds less than `amount` (or the credit would overflow);
    /// then nothing changed. A transfer from a key to itself changes nothing and returns true
    /// when the balance is at least `amount`.
    Transfer(bool),
    /// The values read by `ReadMany`, in the order of its keys.
    Values(Vec<i64>),
    /// Some keys do not exist (sorted, deduplicated names); the command did nothing.
    Missing(Vec<String>),
}

/// The history name and arguments of a command (the table of the module doc).
pub fn command_json(cmd: &KvCommand) -> (&'static str, Value) {
    let args = match cmd {
        KvCommand::Get { key } => json!({ "key": key }),
        KvCommand::Put { key, value } => json!({ "key": key, "value": value }),
        KvCommand::Cas { key, expected, new } => {
            json!({ "key": key, "expected": expected, "new": new })
        }
        KvCommand::Transfer { from, to, amount } => {
            json!({ "from": from, "to": to, "amount": amount })
        }
        KvCommand::ReadMany { keys } => json!({ "keys": keys }),
    };
    (cmd.name(), args)
}

/// A reply as JSON: the `result` of an `ok` completion, and `dssmr client` output.
pub fn reply_json(reply: &KvReply) -> Value {
    match reply {
        KvReply::Value(value) => json!({ "value": value }),
        KvReply::Done => json!("done"),
        KvReply::Cas(swapped) => json!({ "swapped": swapped }),
        KvReply::Transfer(moved) => json!({ "transferred": moved }),
        KvReply::Values(values) => json!({ "values": values }),
        KvReply::Missing(keys) => json!({ "missing": keys }),
    }
}

/// The kv state machine; each variable holds one `i64`.
#[derive(Clone, Debug, Default)]
pub struct Kv;

/// The sorted, deduplicated names of the keys of `cmd` absent from `store`.
fn absent_keys(cmd: &KvCommand, store: &dyn Store<i64>) -> Vec<String> {
    let mut absent: Vec<String> = cmd
        .keys()
        .into_iter()
        .filter(|k| store.get(&kv_var(k)).is_none())
        .map(str::to_owned)
        .collect();
    absent.sort();
    absent.dedup();
    absent
}

/// The value of `key`, or `Missing` when it is absent.
fn read(store: &dyn Store<i64>, key: &str) -> Result<i64, KvReply> {
    store
        .get(&kv_var(key))
        .copied()
        .ok_or_else(|| KvReply::Missing(vec![key.to_owned()]))
}

/// Writes `value` to `key`, or `Missing` when it is absent.
fn write(store: &mut dyn Store<i64>, key: &str, value: i64) -> Result<(), KvReply> {
    let slot = store
        .get_mut(&kv_var(key))
        .ok_or_else(|| KvReply::Missing(vec![key.to_owned()]))?;
    *slot = value;
    Ok(())
}

/// Runs `cmd` once every key is known to be present.
fn run(cmd: &KvCommand, store: &mut dyn Store<i64>) -> Result<KvReply, KvReply> {
    Ok(match cmd {
        KvCommand::Get { key } => KvReply::Value(read(store, key)?),
        KvCommand::Put { key, value } => {
            write(store, key, *value)?;
            KvReply::Done
        }
        KvCommand::Cas { key, expected, new } => {
            let swapped = read(store, key)? == *expected;
            if swapped {
                write(store, key, *new)?;
            }
            KvReply::Cas(swapped)
        }
        KvCommand::Transfer { from, to, amount } => {
            let balance = read(store, from)?;
            if balance < *amount {
                return Ok(KvReply::Transfer(false));
            }
            if from == to {
                return Ok(KvReply::Transfer(true));
            }
            let credit = read(store, to)?;
            match (balance.checked_sub(*amount), credit.checked_add(*amount)) {
                (Some(debited), Some(credited)) => {
                    write(store, from, debited)?;
                    write(store, to, credited)?;
                    KvReply::Transfer(true)
                }
                _ => KvReply::Transfer(false),
            }
        }
        KvCommand::ReadMany { keys } => KvReply::Values(
            keys.iter()
                .map(|k| read(store, k))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    })
}

impl StateMachine for Kv {
    type Command = KvCommand;
    type Reply = KvReply;
    type Value = i64;

    fn variables(&self, cmd: &KvCommand) -> Vec<VarId> {
        let mut vars: Vec<VarId> = cmd.keys().into_iter().map(kv_var).collect();
        vars.sort();
        vars.dedup();
        vars
    }

    fn is_read_only(&self, cmd: &KvCommand) -> bool {
        cmd.is_read_only()
    }

    fn execute(&self, cmd: &KvCommand, store: &mut dyn Store<i64>) -> KvReply {
        // Check every key before the first write, so a missing key leaves the store untouched.
        let absent = absent_keys(cmd, store);
        if !absent.is_empty() {
            return KvReply::Missing(absent);
        }
        run(cmd, store).unwrap_or_else(|missing| missing)
    }

    fn missing(&self, _cmd: &KvCommand, missing: &[VarId]) -> KvReply {
        let mut names: Vec<String> = missing.iter().map(|v| v.0.clone()).collect();
        names.sort();
        names.dedup();
        KvReply::Missing(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn store(entries: &[(&str, i64)]) -> HashMap<VarId, i64> {
        entries.iter().map(|(k, v)| (kv_var(k), *v)).collect()
    }

    fn get(key: &str) -> KvCommand {
        KvCommand::Get { key: key.into() }
    }

    fn transfer(from: &str, to: &str, amount: i64) -> KvCommand {
        KvCommand::Transfer {
            from: from.into(),
            to: to.into(),
            amount,
        }
    }

    #[test]
    fn variables_are_sorted_and_deduplicated() {
        let cmd = KvCommand::ReadMany {
            keys: vec!["b".into(), "a".into(), "b".into()],
        };
        assert_eq!(Kv.variables(&cmd), vec![kv_var("a"), kv_var("b")]);
        assert_eq!(Kv.variables(&transfer("z", "z", 1)), vec![kv_var("z")]);
        assert_eq!(kv_var("acct-1"), VarId::new("acct-1"));
    }

    #[test]
    fn get_and_put() {
        let mut s = store(&[("a", 5)]);
        assert_eq!(Kv.execute(&get("a"), &mut s), KvReply::Value(5));
        let put = KvCommand::Put {
            key: "a".into(),
            value: -7,
        };
        assert_eq!(Kv.execute(&put, &mut s), KvReply::Done);
        assert_eq!(Kv.execute(&get("a"), &mut s), KvReply::Value(-7));
    }

    #[test]
    fn cas_swaps_only_on_match() {
        let mut s = store(&[("a", 1)]);
        let cas = |expected, new| KvCommand::Cas {
            key: "a".into(),
            expected,
            new,
        };
        assert_eq!(Kv.execute(&cas(2, 9), &mut s), KvReply::Cas(false));
        assert_eq!(s[&kv_var("a")], 1);
        assert_eq!(Kv.execute(&cas(1, 9), &mut s), KvReply::Cas(true));
        assert_eq!(s[&kv_var("a")], 9);
    }

    #[test]
    fn transfer_moves_and_conserves() {
        let mut s = store(&[("a", 10), ("b", 3)]);
        assert_eq!(
            Kv.execute(&transfer("a", "b", 4), &mut s),
            KvReply::Transfer(true)
        );
        assert_eq!((s[&kv_var("a")], s[&kv_var("b")]), (6, 7));
        assert_eq!(
            Kv.execute(&transfer("a", "b", 6), &mut s),
            KvReply::Transfer(true)
        );
        assert_eq!((s[&kv_var("a")], s[&kv_var("b")]), (0, 13));
    }

    #[test]
    fn transfer_insufficient_changes_nothing() {
        let mut s = store(&[("a", 3), ("b", 0)]);
        assert_eq!(
            Kv.execute(&transfer("a", "b", 4), &mut s),
            KvReply::Transfer(false)
        );
        assert_eq!((s[&kv_var("a")], s[&kv_var("b")]), (3, 0));
    }

    #[test]
    fn transfer_to_self_is_a_no_op() {
        let mut s = store(&[("a", 3)]);
        assert_eq!(
            Kv.execute(&transfer("a", "a", 3), &mut s),
            KvReply::Transfer(true)
        );
        assert_eq!(
            Kv.execute(&transfer("a", "a", 4), &mut s),
            KvReply::Transfer(false)
        );
        assert_eq!(s[&kv_var("a")], 3);
    }

    #[test]
    fn transfer_overflow_changes_nothing() {
        let mut s = store(&[("a", 10), ("b", i64::MAX)]);
        assert_eq!(
            Kv.execute(&transfer("a", "b", 1), &mut s),
            KvReply::Transfer(false)
        );
        assert_eq!((s[&kv_var("a")], s[&kv_var("b")]), (10, i64::MAX));
    }

    #[test]
    fn read_many_keeps_order_and_duplicates() {
        let mut s = store(&[("a", 1), ("b", 2)]);
        let cmd = KvCommand::ReadMany {
            keys: vec!["b".into(), "a".into(), "b".into()],
        };
        assert_eq!(Kv.execute(&cmd, &mut s), KvReply::Values(vec![2, 1, 2]));
        let empty = KvCommand::ReadMany { keys: vec![] };
        assert_eq!(Kv.execute(&empty, &mut s), KvReply::Values(vec![]));
    }

    #[test]
    fn missing_keys_change_nothing() {
        let mut s = store(&[("b", 5)]);
        assert_eq!(
            Kv.execute(&transfer("b", "a", 1), &mut s),
            KvReply::Missing(vec!["a".into()])
        );
        assert_eq!(s[&kv_var("b")], 5);
        let cmd = KvCommand::ReadMany {
            keys: vec!["z".into(), "b".into(), "c".into(), "z".into()],
        };
        assert_eq!(
            Kv.execute(&cmd, &mut s),
            KvReply::Missing(vec!["c".into(), "z".into()])
        );
        let put = KvCommand::Put {
            key: "q".into(),
            value: 1,
        };
        assert_eq!(Kv.execute(&put, &mut s), KvReply::Missing(vec!["q".into()]));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn missing_reply_is_sorted() {
        let reply = Kv.missing(&transfer("b", "a", 1), &[kv_var("b"), kv_var("a")]);
        assert_eq!(reply, KvReply::Missing(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn serde_round_trip() {
        let cmds = vec![
            get("a"),
            KvCommand::Put {
                key: "a".into(),
                value: -1,
            },
            KvCommand::Cas {
                key: "a".into(),
                expected: 1,
                new: 2,
            },
            transfer("a", "b", 3),
            KvCommand::ReadMany {
                keys: vec!["a".into(), "b".into()],
            },
        ];
        for cmd in cmds {
            let bytes = postcard::to_allocvec(&cmd).expect("encode");
            let back: KvCommand = postcard::from_bytes(&bytes).expect("decode");
            assert_eq!(back, cmd);
        }
        let replies = vec![
            KvReply::Value(i64::MIN),
            KvReply::Done,
            KvReply::Cas(true),
            KvReply::Transfer(false),
            KvReply::Values(vec![1, 2]),
            KvReply::Missing(vec!["x".into()]),
        ];
        for reply in replies {
            let bytes = postcard::to_allocvec(&reply).expect("encode");
            let back: KvReply = postcard::from_bytes(&bytes).expect("decode");
            assert_eq!(back, reply);
        }
        assert!(postcard::from_bytes::<KvCommand>(&[0xff, 0x01]).is_err());
    }

    #[test]
    fn json_encodings() {
        assert_eq!(reply_json(&KvReply::Value(5)), json!({"value": 5}));
        assert_eq!(reply_json(&KvReply::Done), json!("done"));
        assert_eq!(reply_json(&KvReply::Cas(true)), json!({"swapped": true}));
        assert_eq!(
            reply_json(&KvReply::Transfer(false)),
            json!({"transferred": false})
        );
        assert_eq!(
            reply_json(&KvReply::Values(vec![1, 2])),
            json!({"values": [1, 2]})
        );
        assert_eq!(
            reply_json(&KvReply::Missing(vec!["k".into()])),
            json!({"missing": ["k"]})
        );
        let cas = KvCommand::Cas {
            key: "a".into(),
            expected: 1,
            new: 2,
        };
        assert_eq!(
            command_json(&cas),
            ("cas", json!({"key": "a", "expected": 1, "new": 2}))
        );
        // The args are the serde form of the command, named by `f`.
        for cmd in [cas, transfer("a", "b", 3), get("a")] {
            let (f, args) = command_json(&cmd);
            assert_eq!(serde_json::to_value(&cmd).ok(), Some(json!({ f: args })));
        }
    }
}
