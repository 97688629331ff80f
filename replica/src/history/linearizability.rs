//! Linearizability of kv histories, checked with stateright's `LinearizabilityTester`.
//!
//! (draft)

use super::kv_model::{KvModelError, KvOp, KvRet, KvSpec};
use super::{Event, EventKind};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester};
use std::collections::{BTreeMap, HashMap};

/// Errors of checking a kv history.
#[derive(Debug, thiserror::Error)]
pub enum LinearizabilityError {
    /// An event does not decode to a kv operation or result.
    #[error("event #{index} (process {process}, time_ns {time_ns}) is malformed")]
    MalformedEvent {
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
    /// An `ok` completion carries no result.
    #[error("event #{index} (process {process}, time_ns {time_ns}) is an ok completion without a result")]
    MissingResult {
        /// Position of the event in the history.
        index: usize,
        /// Its process.
        process: u64,
        /// Its time.
        time_ns: u64,
    },
    /// A process invoked an operation while its previous one was still open.
    #[error("event #{index}: process {process} invokes at time_ns {time_ns} while its operation invoked by event #{open} is still open")]
    OverlappingInvoke {
        /// Position of the second invocation.
        index: usize,
        /// The process.
        process: u64,
        /// Time of the second invocation.
        time_ns: u64,
        /// Position of the open invocation.
        open: usize,
    },
    /// A completion has no open invocation on its process.
    #[error("event #{index}: process {process} completes at time_ns {time_ns} without an open invocation")]
    UnmatchedCompletion {
        /// Position of the completion.
        index: usize,
        /// The process.
        process: u64,
        /// Its time.
        time_ns: u64,
    },
    /// A completion names another operation or other arguments than its invocation.
    #[error("event #{index}: completion of process {process} at time_ns {time_ns} does not repeat the f and args of its invocation (event #{invoke})")]
    MismatchedCompletion {
        /// Position of the completion.
        index: usize,
        /// The process.
        process: u64,
        /// Its time.
        time_ns: u64,
        /// Position of the invocation.
        invoke: usize,
    },
    /// stateright refused the history (cannot happen once the checks above pass).
    #[error("the linearizability tester refused the history: {0}")]
    Tester(String),
    /// No total order of the operations is consistent with both real time and the kv model.
    #[error("history is not linearizable{scope}: no valid order of {ops} operations ({completed} completed, {in_flight} with unknown outcome)", scope = key.as_ref().map(|k| format!(" on key {k:?}")).unwrap_or_default())]
    NotLinearizable {
        /// The key whose sub-history failed, when the history was checked key by key.
        key: Option<String>,
        /// Operations in the (sub-)history checked.
        ops: usize,
        /// Those that returned `ok`.
        completed: usize,
        /// Those with an `info` completion or none.
        in_flight: usize,
    },
}

/// Result alias of this module.
pub type Result<T, E = LinearizabilityError> = std::result::Result<T, E>;

/// How an operation ended.
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    /// `ok` with its result.
    Returned(KvRet),
    /// `fail`: did not happen.
    Failed,
    /// `info` or never completed: may or may not have happened.
    Unknown,
}

/// One operation of the history.
#[derive(Clone, Debug)]
struct Operation {
    /// stateright thread: the process, renumbered so a process is never reused after `info`.
    thread: u64,
    op: KvOp,
    outcome: Outcome,
}

/// A step of the schedule fed to the tester, in time order.
#[derive(Clone, Copy, Debug)]
enum Step {
    Invoke(usize),
    Return(usize),
}

/// The decoded history: operations, and invocations/returns in time order.
#[derive(Debug)]
struct Prepared {
    ops: Vec<Operation>,
    schedule: Vec<Step>,
}

fn prepare(events: &[Event]) -> Result<Prepared> {
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| events[i].time_ns);

    let mut ops: Vec<Operation> = Vec::new();
    let mut invoke_of: Vec<usize> = Vec::new();
    let mut schedule = Vec::new();
    // process -> (its current thread, open operation index)
    let mut open: HashMap<u64, usize> = HashMap::new();
    let mut thread_of: HashMap<u64, u64> = HashMap::new();
    let mut next_thread = 0u64;
    for index in order {
        let event = &events[index];
        let process = event.process;
        let time_ns = event.time_ns;
        match event.kind {
            EventKind::Invoke => {
                if let Some(&op) = open.get(&process) {
                    return Err(LinearizabilityError::OverlappingInvoke {
                        index,
                        process,
                        time_ns,
                        open: invoke_of[op],
                    });
                }
                let op = KvOp::decode(&event.f, &event.args).map_err(|source| {
                    LinearizabilityError::MalformedEvent {
                        index,
                        process,
                        time_ns,
                        source,
                    }
                })?;
                let thread = *thread_of.entry(process).or_insert_with(|| {
                    next_thread += 1;
                    next_thread - 1
                });
                open.insert(process, ops.len());
                schedule.push(Step::Invoke(ops.len()));
                invoke_of.push(index);
                ops.push(Operation {
                    thread,
                    op,
                    outcome: Outcome::Unknown,
                });
            }
            kind => {
                let Some(id) = open.remove(&process) else {
                    return Err(LinearizabilityError::UnmatchedCompletion {
                        index,
                        process,
                        time_ns,
                    });
                };
                let invoke = &events[invoke_of[id]];
                if invoke.f != event.f || invoke.args != event.args {
                    return Err(LinearizabilityError::MismatchedCompletion {
                        index,
                        process,
                        time_ns,
                        invoke: invoke_of[id],
                    });
                }
                match kind {
                    EventKind::Ok => {
                        let result =
                            event
                                .result
                                .as_ref()
                                .ok_or(LinearizabilityError::MissingResult {
                                    index,
                                    process,
                                    time_ns,
                                })?;
                        let ret = ops[id].op.decode_ret(result).map_err(|source| {
                            LinearizabilityError::MalformedEvent {
                                index,
                                process,
                                time_ns,
                                source,
                            }
                        })?;
                        ops[id].outcome = Outcome::Returned(ret);
                        schedule.push(Step::Return(id));
                    }
                    EventKind::Fail => ops[id].outcome = Outcome::Failed,
                    // The process may not be reused; if it is anyway, its next operation gets a
                    // fresh thread so that the unknown one stays in flight forever.
                    _ => {
                        thread_of.remove(&process);
                    }
                }
            }
        }
    }
    Ok(Prepared { ops, schedule })
}

/// Runs stateright's tester on the operations selected by `keep`.
fn check_with_stateright(
    prepared: &Prepared,
    initial: KvSpec,
    keep: impl Fn(&Operation) -> bool,
    key: Option<String>,
) -> Result<()> {
    let mut tester = LinearizabilityTester::<u64, KvSpec>::new(initial);
    let (mut n, mut completed, mut in_flight) = (0, 0, 0);
    for step in &prepared.schedule {
        match *step {
            Step::Invoke(id) => {
                let op = &prepared.ops[id];
                if op.outcome == Outcome::Failed || !keep(op) {
                    continue;
                }
                n += 1;
                if op.outcome == Outcome::Unknown {
                    in_flight += 1;
                }
                tester
                    .on_invoke(op.thread, op.op.clone())
                    .map_err(LinearizabilityError::Tester)?;
            }
            Step::Return(id) => {
                let op = &prepared.ops[id];
                if !keep(op) {
                    continue;
                }
                if let Outcome::Returned(ret) = &op.outcome {
                    completed += 1;
                    tester
                        .on_return(op.thread, ret.clone())
                        .map_err(LinearizabilityError::Tester)?;
                }
            }
        }
    }
    if tester.is_consistent() {
        Ok(())
    } else {
        Err(LinearizabilityError::NotLinearizable {
            key,
            ops: n,
            completed,
            in_flight,
        })
    }
}

/// Checks that a kv history is linearizable, starting from `initial`.
pub fn check_kv(events: &[Event], initial: &BTreeMap<String, i64>) -> Result<()> {
    let prepared = prepare(events)?;
    let single_key = prepared
        .ops
        .iter()
        .filter(|o| o.outcome != Outcome::Failed)
        .all(|o| o.op.keys().len() == 1);
    if !single_key {
        return check_with_stateright(&prepared, KvSpec::new(initial.clone()), |_| true, None);
    }
    let mut keys: Vec<String> = prepared
        .ops
        .iter()
        .flat_map(|o| o.op.keys().into_iter().map(str::to_string))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        let init = initial
            .get(&key)
            .map(|v| BTreeMap::from([(key.clone(), *v)]))
            .unwrap_or_default();
        check_with_stateright(
            &prepared,
            KvSpec::new(init),
            |o| o.op.keys() == [key.as_str()],
            Some(key.clone()),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde_json::{json, Value};
    use stateright::semantics::SequentialSpec;

    /// Builds histories by hand, one event per call, with increasing times.
    #[derive(Default)]
    struct Builder {
        events: Vec<Event>,
        open: HashMap<u64, (String, Value)>,
    }

    impl Builder {
        fn t(&self) -> u64 {
            self.events.len() as u64 * 10
        }
        fn invoke(&mut self, p: u64, f: &str, args: Value) -> &mut Self {
            self.open.insert(p, (f.to_string(), args.clone()));
            let time_ns = self.t();
            self.events.push(Event {
                process: p,
                kind: EventKind::Invoke,
                f: f.into(),
                args,
                result: None,
                time_ns,
            });
            self
        }
        fn complete(&mut self, p: u64, kind: EventKind, result: Option<Value>) -> &mut Self {
            let (f, args) = self.open.remove(&p).expect("test bug: nothing open");
            let time_ns = self.t();
            self.events.push(Event {
                process: p,
                kind,
                f,
                args,
                result,
                time_ns,
            });
            self
        }
        fn ok(&mut self, p: u64, result: Value) -> &mut Self {
            self.complete(p, EventKind::Ok, Some(result))
        }
        fn call(&mut self, p: u64, f: &str, args: Value, result: Value) -> &mut Self {
            self.invoke(p, f, args).ok(p, result)
        }
    }

    fn init(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn correct_concurrent_history_passes() {
        let mut h = Builder::default();
        h.invoke(1, "put", json!({"key": "a", "value": 5}))
            .invoke(2, "get", json!({"key": "a"}))
            .invoke(3, "get", json!({"key": "a"}))
            .ok(2, json!({"value": 5}))
            .ok(1, json!("done"))
            .ok(3, json!({"value": 0}))
            .call(
                2,
                "cas",
                json!({"key": "a", "expected": 5, "new": 6}),
                json!({"swapped": true}),
            )
            .call(
                3,
                "read_many",
                json!({"keys": ["a", "b"]}),
                json!({"missing": ["b"]}),
            );
        assert!(check_kv(&h.events, &init(&[("a", 0)])).is_ok());
    }

    #[test]
    fn stale_read_after_completed_write_fails() {
        let mut h = Builder::default();
        h.call(1, "put", json!({"key": "a", "value": 5}), json!("done"))
            .call(2, "get", json!({"key": "a"}), json!({"value": 0}));
        let err = check_kv(&h.events, &init(&[("a", 0)]));
        assert!(
            matches!(
                err,
                Err(LinearizabilityError::NotLinearizable { ops: 2, .. })
            ),
            "{err:?}"
        );
    }

    /// How a generated operation ends.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum GenEnd {
        Ok,
        Fail,
        /// `info`, and whether the simulated kv applied it.
        Info(bool),
        /// Never completed, and whether the simulated kv applied it.
        Pending(bool),
    }

    struct GenOp {
        process: u64,
        op: KvOp,
        invoke_t: u64,
        lin_t: u64,
        complete_t: u64,
        end: GenEnd,
    }

    const KEYS: [&str; 4] = ["a", "b", "c", "d"];

    fn random_op(rng: &mut StdRng) -> KvOp {
        let key = |rng: &mut StdRng| KEYS[rng.random_range(0..KEYS.len())].to_string();
        match rng.random_range(0..100) {
            0..20 => KvOp::Get { key: key(rng) },
            20..35 => KvOp::Put {
                key: key(rng),
                value: rng.random_range(0..20),
            },
            35..50 => KvOp::Cas {
                key: key(rng),
                expected: rng.random_range(0..20),
                new: rng.random_range(0..20),
            },
            50..75 => KvOp::Transfer {
                from: key(rng),
                to: key(rng),
                amount: rng.random_range(0..8),
            },
            _ => KvOp::ReadMany {
                keys: (0..rng.random_range(1..=KEYS.len()))
                    .map(|_| key(rng))
                    .collect(),
            },
        }
    }

    /// Parameters of a generated history.
    struct GenParams {
        seed: u64,
        workers: u64,
        /// Operations issued one at a time before the concurrent phase.
        sequential_ops: usize,
        /// Operations per worker in the concurrent phase.
        ops_per_worker: usize,
        /// Longest operation duration; gaps between a worker's operations are shorter.
        max_duration: u64,
        /// Percentages of `fail` and `info` completions.
        fail_pct: u32,
        info_pct: u32,
    }

    /// Simulates a linearizable kv (each operation takes effect atomically at a random point
    /// inside its interval) and records the history its clients would see.
    fn generate(params: &GenParams, initial: &BTreeMap<String, i64>) -> Vec<Event> {
        let mut rng = StdRng::seed_from_u64(params.seed);
        let mut ops: Vec<GenOp> = Vec::new();
        let mut next_process = params.workers;
        let mut end = |rng: &mut StdRng| {
            let roll = rng.random_range(0..100);
            if roll < params.fail_pct {
                GenEnd::Fail
            } else if roll < params.fail_pct + params.info_pct {
                GenEnd::Info(rng.random_bool(0.5))
            } else {
                GenEnd::Ok
            }
        };
        let mut process_of: Vec<u64> = (0..params.workers).collect();
        let mut t = 0;
        for _ in 0..params.sequential_ops {
            let worker = rng.random_range(0..params.workers) as usize;
            let duration = rng.random_range(2..=params.max_duration);
            let op_end = end(&mut rng);
            ops.push(GenOp {
                process: process_of[worker],
                op: random_op(&mut rng),
                invoke_t: t,
                lin_t: t + rng.random_range(1..duration),
                complete_t: t + duration,
                end: op_end,
            });
            if matches!(op_end, GenEnd::Info(_)) {
                process_of[worker] = next_process;
                next_process += 1;
            }
            t += duration + 1;
        }
        for worker in 0..params.workers as usize {
            let mut t = t + rng.random_range(0..params.max_duration);
            for i in 0..params.ops_per_worker {
                let duration = rng.random_range(2..=params.max_duration);
                let mut op_end = end(&mut rng);
                if i + 1 == params.ops_per_worker && rng.random_bool(0.3) {
                    op_end = GenEnd::Pending(rng.random_bool(0.5));
                }
                ops.push(GenOp {
                    process: process_of[worker],
                    op: random_op(&mut rng),
                    invoke_t: t,
                    lin_t: t + rng.random_range(1..duration),
                    complete_t: t + duration,
                    end: op_end,
                });
                if matches!(op_end, GenEnd::Info(_)) {
                    process_of[worker] = next_process;
                    next_process += 1;
                }
                t += duration + rng.random_range(1..=params.max_duration / 4 + 1);
            }
        }

        let mut by_lin: Vec<usize> = (0..ops.len()).collect();
        by_lin.sort_by_key(|&i| ops[i].lin_t);
        let mut kv = KvSpec::new(initial.clone());
        let mut results: Vec<Option<KvRet>> = vec![None; ops.len()];
        for i in by_lin {
            let applied = match ops[i].end {
                GenEnd::Ok => true,
                GenEnd::Fail => false,
                GenEnd::Info(applied) | GenEnd::Pending(applied) => applied,
            };
            if applied {
                results[i] = Some(kv.invoke(&ops[i].op));
            }
        }

        let mut events: Vec<Event> = Vec::new();
        for (op, result) in ops.iter().zip(results) {
            let (f, args) = op.op.encode();
            let event = |kind, result, time_ns| Event {
                process: op.process,
                kind,
                f: f.to_string(),
                args: args.clone(),
                result,
                time_ns,
            };
            events.push(event(EventKind::Invoke, None, op.invoke_t));
            match op.end {
                GenEnd::Ok => events.push(event(
                    EventKind::Ok,
                    result.map(|r| r.encode()),
                    op.complete_t,
                )),
                GenEnd::Fail => events.push(event(EventKind::Fail, None, op.complete_t)),
                GenEnd::Info(_) => events.push(event(EventKind::Info, None, op.complete_t)),
                GenEnd::Pending(_) => {}
            }
        }
        events.sort_by_key(|e| e.time_ns);
        events
    }

    fn bank_init() -> BTreeMap<String, i64> {
        init(&[("a", 10), ("b", 10), ("c", 10)])
    }

    fn params(seed: u64, workers: u64, ops_per_worker: usize) -> GenParams {
        GenParams {
            seed,
            workers,
            sequential_ops: 10,
            ops_per_worker,
            max_duration: 100,
            fail_pct: 5,
            info_pct: 5,
        }
    }

    #[test]
    fn generated_histories_pass() {
        for seed in 0..20 {
            let events = generate(&params(seed, 4, 20), &bank_init());
            let checked = check_kv(&events, &bank_init());
            assert!(checked.is_ok(), "seed {seed}: {checked:?}");
        }
    }

    #[test]
    fn measure_full_size() {
        for seed in 0..5 {
            let events = generate(&params(seed, 6, 60), &bank_init());
            let start = std::time::Instant::now();
            let checked = check_kv(&events, &bank_init());
            eprintln!(
                "seed {seed}: {} events, {:?}: {checked:?}",
                events.len(),
                start.elapsed()
            );
            assert!(checked.is_ok());
        }
    }

    #[test]
    fn measure_full_size_corrupted() {
        for seed in 0..5 {
            let mut events = generate(&params(seed, 6, 60), &bank_init());
            let n = events.len();
            let victim = (n / 2..n)
                .find(|&i| {
                    events[i].kind == EventKind::Ok
                        && events[i].f == "get"
                        && events[i]
                            .result
                            .as_ref()
                            .is_some_and(|r| r.get("value").is_some())
                })
                .expect("a get");
            events[victim].result = Some(json!({"value": 1_000_000}));
            let start = std::time::Instant::now();
            let checked = check_kv(&events, &bank_init());
            eprintln!(
                "seed {seed}: victim #{victim}/{n}, {:?}: {checked:?}",
                start.elapsed()
            );
            assert!(checked.is_err());
        }
    }
}
