//! The bank invariant: money is neither created nor destroyed.
//!
//! In the bank workload, clients move money between accounts with `transfer` and read all the
//! accounts at once with `read_many`. [`check_bank`] checks every `ok` `read_many` whose keys are
//! exactly the account set (each account once, any order): its values must sum to the fixed
//! total. Reads of a subset of the accounts, other operations and reads that did not return `ok`
//! are ignored. This is much weaker than linearizability ([`super::linearizability`]) but cheap
//! enough for histories of any length, and it is what an atomic multi-partition read must
//! guarantee.
//!
//! This module only inspects events; it does no I/O.

use super::kv_model::{decode_op, decode_ret, KvModelError, KvReply};
use super::{Event, EventKind};
use dssmr_engine::app::kv::KvCommand;

/// Violations of the bank invariant and malformed reads.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    /// A read of all the accounts does not sum to the total.
    #[error("read_many of all accounts by process {process} (event #{index}, time_ns {time_ns}) sums to {sum}, expected {expected}")]
    WrongTotal {
        /// Position of the completion event in the history.
        index: usize,
        /// The reading process.
        process: u64,
        /// Time of the completion.
        time_ns: u64,
        /// The sum read.
        sum: i128,
        /// The invariant total.
        expected: i64,
    },
    /// A read of all the accounts reports some of them missing.
    #[error("read_many of all accounts by process {process} (event #{index}, time_ns {time_ns}) reports missing accounts {missing:?}")]
    MissingAccounts {
        /// Position of the completion event in the history.
        index: usize,
        /// The reading process.
        process: u64,
        /// Time of the completion.
        time_ns: u64,
        /// The accounts reported missing.
        missing: Vec<String>,
    },
    /// An `ok` `read_many` whose arguments or result do not decode.
    #[error("event #{index} (process {process}, time_ns {time_ns}) is a malformed read_many")]
    Malformed {
        /// Position of the event in the history.
        index: usize,
        /// Its process.
        process: u64,
        /// Its time.
        time_ns: u64,
        /// What is wrong.
        #[source]
        source: KvModelError,
    },
    /// An `ok` `read_many` without a result.
    #[error(
        "event #{index} (process {process}, time_ns {time_ns}) is an ok read_many without a result"
    )]
    MissingResult {
        /// Position of the event in the history.
        index: usize,
        /// Its process.
        process: u64,
        /// Its time.
        time_ns: u64,
    },
}

/// Result alias of this module.
pub type Result<T, E = BankError> = std::result::Result<T, E>;

/// Checks that every `ok` `read_many` of exactly `accounts` sums to `total`.
///
/// Events are examined in `time_ns` order (ties in the order given), so the violation reported
/// is the earliest one. Returns how many reads were checked.
pub fn check_bank(events: &[Event], accounts: &[String], total: i64) -> Result<usize> {
    let mut expected_keys: Vec<&str> = accounts.iter().map(String::as_str).collect();
    expected_keys.sort_unstable();
    expected_keys.dedup();

    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| events[i].time_ns);

    let mut checked = 0;
    for index in order {
        let event = &events[index];
        if event.kind != EventKind::Ok || event.f != "read_many" {
            continue;
        }
        let (process, time_ns) = (event.process, event.time_ns);
        let malformed = |source| BankError::Malformed {
            index,
            process,
            time_ns,
            source,
        };
        let op = decode_op(&event.f, &event.args).map_err(malformed)?;
        let KvCommand::ReadMany { keys } = &op else {
            continue;
        };
        let mut sorted: Vec<&str> = keys.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        if sorted != expected_keys {
            continue;
        }
        let result = event.result.as_ref().ok_or(BankError::MissingResult {
            index,
            process,
            time_ns,
        })?;
        match decode_ret(&op, result).map_err(malformed)? {
            KvReply::Values(values) => {
                let sum: i128 = values.iter().map(|v| i128::from(*v)).sum();
                if sum != i128::from(total) {
                    return Err(BankError::WrongTotal {
                        index,
                        process,
                        time_ns,
                        sum,
                        expected: total,
                    });
                }
                checked += 1;
            }
            KvReply::Missing(missing) => {
                return Err(BankError::MissingAccounts {
                    index,
                    process,
                    time_ns,
                    missing,
                })
            }
            // `decode_ret` of a read_many gives only values or missing keys.
            _ => {}
        }
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::kv_model::{command_json, reply_json, KvSpec};
    use crate::history::test_support::{init, Builder};
    use crate::history::History;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde_json::json;
    use stateright::semantics::SequentialSpec;

    fn accounts() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    #[test]
    fn counts_full_reads_and_ignores_the_rest() {
        let mut h = Builder::default();
        h.call(
            1,
            "read_many",
            json!({"keys": ["a", "b", "c"]}),
            json!({"values": [10, 10, 10]}),
        )
        .call(
            2,
            "transfer",
            json!({"from": "a", "to": "b", "amount": 4}),
            json!({"transferred": true}),
        )
        // Any order of the accounts counts.
        .call(
            1,
            "read_many",
            json!({"keys": ["c", "b", "a"]}),
            json!({"values": [10, 14, 6]}),
        )
        // Subsets, duplicates and supersets are not reads of the account set.
        .call(
            1,
            "read_many",
            json!({"keys": ["a", "b"]}),
            json!({"values": [6, 14]}),
        )
        .call(
            1,
            "read_many",
            json!({"keys": ["a", "b", "c", "c"]}),
            json!({"values": [6, 14, 10, 10]}),
        )
        .call(
            1,
            "read_many",
            json!({"keys": ["a", "b", "c", "d"]}),
            json!({"missing": ["d"]}),
        )
        // Reads that did not return ok prove nothing.
        .invoke(3, "read_many", json!({"keys": ["a", "b", "c"]}))
        .info(3)
        .invoke(4, "read_many", json!({"keys": ["a", "b", "c"]}))
        .fail(4);
        assert_eq!(check_bank(&h.events, &accounts(), 30).ok(), Some(2));
    }

    #[test]
    fn reports_the_earliest_wrong_sum() {
        let mut h = Builder::default();
        h.call(
            1,
            "read_many",
            json!({"keys": ["a", "b", "c"]}),
            json!({"values": [10, 10, 10]}),
        )
        .call(
            2,
            "read_many",
            json!({"keys": ["a", "b", "c"]}),
            json!({"values": [6, 10, 10]}),
        )
        .call(
            3,
            "read_many",
            json!({"keys": ["a", "b", "c"]}),
            json!({"values": [6, 10, 11]}),
        );
        // Scramble the file order: the earliest violation is still the one reported.
        h.events.swap(3, 5);
        let err = check_bank(&h.events, &accounts(), 30);
        assert!(
            matches!(
                err,
                Err(BankError::WrongTotal {
                    process: 2,
                    time_ns: 30,
                    sum: 26,
                    expected: 30,
                    ..
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn missing_accounts_and_malformed_reads_are_errors() {
        let mut h = Builder::default();
        h.call(
            1,
            "read_many",
            json!({"keys": ["a", "b", "c"]}),
            json!({"missing": ["b"]}),
        );
        assert!(matches!(
            check_bank(&h.events, &accounts(), 30),
            Err(BankError::MissingAccounts { process: 1, .. })
        ));

        let mut h = Builder::default();
        h.call(
            1,
            "read_many",
            json!({"keys": ["a", "b", "c"]}),
            json!({"values": [10, 20]}),
        );
        assert!(matches!(
            check_bank(&h.events, &accounts(), 30),
            Err(BankError::Malformed { index: 1, .. })
        ));

        let mut h = Builder::default();
        h.call(
            1,
            "read_many",
            json!({"keys": "a,b,c"}),
            json!({"values": [10, 10, 10]}),
        );
        assert!(matches!(
            check_bank(&h.events, &accounts(), 30),
            Err(BankError::Malformed { index: 1, .. })
        ));

        let mut h = Builder::default();
        h.invoke(1, "read_many", json!({"keys": ["a", "b", "c"]}))
            .complete(1, EventKind::Ok, None);
        assert!(matches!(
            check_bank(&h.events, &accounts(), 30),
            Err(BankError::MissingResult { index: 1, .. })
        ));
    }

    #[test]
    fn simulated_bank_run_keeps_the_total_and_a_forged_read_breaks_it() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut kv = KvSpec::new(init(&[("a", 100), ("b", 100), ("c", 100)]));
        let history = History::in_memory();
        let names = accounts();
        let mut reads = 0;
        for i in 0..300 {
            let process = i % 5;
            let op = if rng.random_bool(0.5) {
                reads += 1;
                let mut keys = names.clone();
                keys.rotate_left(rng.random_range(0..3));
                KvCommand::ReadMany { keys }
            } else {
                KvCommand::Transfer {
                    from: names[rng.random_range(0..3)].clone(),
                    to: names[rng.random_range(0..3)].clone(),
                    amount: rng.random_range(0..150),
                }
            };
            let (f, args) = command_json(&op);
            history.invoke(process, f, args.clone());
            let ret = kv.invoke(&op);
            history.complete(process, EventKind::Ok, f, args, Some(reply_json(&ret)));
        }
        let mut events = history.events();
        assert_eq!(check_bank(&events, &names, 300).ok(), Some(reads));

        let forged = events
            .iter()
            .rposition(|e| e.kind == EventKind::Ok && e.f == "read_many")
            .expect("a read");
        events[forged].result = Some(json!({"values": [100, 100, 101]}));
        let err = check_bank(&events, &names, 300);
        assert!(
            matches!(err, Err(BankError::WrongTotal { index, sum: 301, .. }) if index == forged),
            "{err:?}"
        );
    }
}
