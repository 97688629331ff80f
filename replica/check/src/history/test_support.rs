//! Test helpers for histories: a hand builder and a generator of linearizable kv histories.
//!
//! Compiled only for tests.

use super::kv_model::{command_json, reply_json, KvReply, KvSpec};
use super::{Event, EventKind};
use dssmr_engine::app::kv::KvCommand;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use stateright::semantics::SequentialSpec;
use std::collections::{BTreeMap, HashMap};

/// Builds histories by hand, one event per call, 10 ns apart.
#[derive(Default)]
pub(super) struct Builder {
    pub events: Vec<Event>,
    open: HashMap<u64, (String, Value)>,
}

impl Builder {
    fn push(
        &mut self,
        process: u64,
        kind: EventKind,
        f: String,
        args: Value,
        result: Option<Value>,
    ) {
        let time_ns = self.events.len() as u64 * 10;
        self.events.push(Event {
            process,
            kind,
            f,
            args,
            result,
            time_ns,
        });
    }

    /// `process` invokes `f(args)`.
    pub(super) fn invoke(&mut self, process: u64, f: &str, args: Value) -> &mut Self {
        self.open.insert(process, (f.to_string(), args.clone()));
        self.push(process, EventKind::Invoke, f.to_string(), args, None);
        self
    }

    /// The open operation of `process` completes.
    pub(super) fn complete(
        &mut self,
        process: u64,
        kind: EventKind,
        result: Option<Value>,
    ) -> &mut Self {
        let (f, args) = self
            .open
            .remove(&process)
            .unwrap_or_else(|| panic!("test bug: process {process} has nothing open"));
        self.push(process, kind, f, args, result);
        self
    }

    /// The open operation of `process` returns `ok` with `result`.
    pub(super) fn ok(&mut self, process: u64, result: Value) -> &mut Self {
        self.complete(process, EventKind::Ok, Some(result))
    }

    /// The open operation of `process` ends with `info`.
    pub(super) fn info(&mut self, process: u64) -> &mut Self {
        self.complete(process, EventKind::Info, None)
    }

    /// The open operation of `process` ends with `fail`.
    pub(super) fn fail(&mut self, process: u64) -> &mut Self {
        self.complete(process, EventKind::Fail, None)
    }

    /// `process` invokes `f(args)`, which returns `ok` with `result` at once.
    pub(super) fn call(&mut self, process: u64, f: &str, args: Value, result: Value) -> &mut Self {
        self.invoke(process, f, args).ok(process, result)
    }
}

/// A kv map from literal pairs.
pub(super) fn init(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// The initial map of generated histories: `a`, `b`, `c` hold 10; `d` does not exist yet.
pub(super) fn bank_init() -> BTreeMap<String, i64> {
    init(&[("a", 10), ("b", 10), ("c", 10)])
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
    op: KvCommand,
    invoke_t: u64,
    lin_t: u64,
    complete_t: u64,
    end: GenEnd,
}

const KEYS: [&str; 4] = ["a", "b", "c", "d"];

fn random_op(rng: &mut StdRng, params: &GenParams) -> KvCommand {
    let keys = params.keys.clamp(1, KEYS.len());
    let key = |rng: &mut StdRng| KEYS[rng.random_range(0..keys)].to_string();
    let value = |rng: &mut StdRng| rng.random_range(0..params.max_value);
    match rng.random_range(0..100) {
        0..20 => KvCommand::Get { key: key(rng) },
        20..35 => KvCommand::Put {
            key: key(rng),
            value: value(rng),
        },
        35..50 => KvCommand::Cas {
            key: key(rng),
            expected: value(rng),
            new: value(rng),
        },
        50..75 => KvCommand::Transfer {
            from: key(rng),
            to: key(rng),
            amount: rng.random_range(0..8),
        },
        _ => KvCommand::ReadMany {
            keys: (0..rng.random_range(1..=keys)).map(|_| key(rng)).collect(),
        },
    }
}

/// Parameters of a generated history.
pub(super) struct GenParams {
    pub seed: u64,
    pub workers: u64,
    /// Operations issued one at a time before the concurrent phase.
    pub sequential_ops: usize,
    /// Operations per worker in the concurrent phase.
    pub ops_per_worker: usize,
    /// Longest operation duration; gaps between a worker's operations are shorter.
    pub max_duration: u64,
    /// Percentages of `fail` and `info` completions.
    pub fail_pct: u32,
    pub info_pct: u32,
    /// Keys used, among `a`, `b`, `c`, `d` (1 to 4).
    pub keys: usize,
    /// Values written by `put` and `cas` are below this.
    pub max_value: i64,
}

/// Simulates a linearizable kv (each operation takes effect atomically at a random point
/// inside its interval) and records the history its clients would see.
pub(super) fn generate(params: &GenParams, initial: &BTreeMap<String, i64>) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(params.seed);
    let mut ops: Vec<GenOp> = Vec::new();
    let mut next_process = params.workers;
    let end = |rng: &mut StdRng| {
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
            op: random_op(&mut rng, params),
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
    for process in process_of.iter_mut() {
        let mut t = t + rng.random_range(0..params.max_duration);
        for i in 0..params.ops_per_worker {
            let duration = rng.random_range(2..=params.max_duration);
            let mut op_end = end(&mut rng);
            if i + 1 == params.ops_per_worker && rng.random_bool(0.3) {
                op_end = GenEnd::Pending(rng.random_bool(0.5));
            }
            ops.push(GenOp {
                process: *process,
                op: random_op(&mut rng, params),
                invoke_t: t,
                lin_t: t + rng.random_range(1..duration),
                complete_t: t + duration,
                end: op_end,
            });
            if matches!(op_end, GenEnd::Info(_)) {
                *process = next_process;
                next_process += 1;
            }
            t += duration + rng.random_range(1..=params.max_duration / 4 + 1);
        }
    }

    let mut by_lin: Vec<usize> = (0..ops.len()).collect();
    by_lin.sort_by_key(|&i| ops[i].lin_t);
    let mut kv = KvSpec::new(initial.clone());
    let mut results: Vec<Option<KvReply>> = vec![None; ops.len()];
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
        let (f, args) = command_json(&op.op);
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
                result.map(|r| reply_json(&r)),
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

/// Usual parameters: 10 sequential operations, durations up to 100 ns, 5% `fail`, 5% `info`,
/// 4 keys, values below 20.
pub(super) fn params(seed: u64, workers: u64, ops_per_worker: usize) -> GenParams {
    GenParams {
        seed,
        workers,
        sequential_ops: 10,
        ops_per_worker,
        max_duration: 100,
        fail_pct: 5,
        info_pct: 5,
        keys: 4,
        max_value: 20,
    }
}

/// Replaces the result of the first `ok` `get` of an existing key in the second half of the
/// history by a value no operation ever writes; returns the index of the changed event.
pub(super) fn corrupt_late_get(events: &mut [Event]) -> Option<usize> {
    let n = events.len();
    let victim = (n / 2..n).find(|&i| {
        events[i].kind == EventKind::Ok
            && events[i].f == "get"
            && events[i]
                .result
                .as_ref()
                .is_some_and(|r| r.get("value").is_some())
    })?;
    events[victim].result = Some(serde_json::json!({"value": 1_000_000}));
    Some(victim)
}

/// Changes the result of one random `ok` event to another plausible one (a value off by one, a
/// flipped boolean); returns false when the history has nothing to change.
pub(super) fn perturb(events: &mut [Event], rng: &mut StdRng) -> bool {
    let candidates: Vec<usize> = (0..events.len())
        .filter(|&i| {
            events[i].kind == EventKind::Ok
                && events[i].result.as_ref().is_some_and(|r| {
                    ["value", "swapped", "transferred", "values"]
                        .iter()
                        .any(|k| r.get(k).is_some())
                })
        })
        .collect();
    if candidates.is_empty() {
        return false;
    }
    let victim = candidates[rng.random_range(0..candidates.len())];
    let Some(Value::Object(result)) = events[victim].result.as_mut() else {
        return false;
    };
    for (_, field) in result.iter_mut() {
        match field {
            Value::Bool(b) => *b = !*b,
            Value::Number(n) => *field = Value::from(n.as_i64().unwrap_or(0) + 1),
            Value::Array(values) => {
                if let Some(first) = values.first_mut() {
                    *first = Value::from(first.as_i64().unwrap_or(0) + 1);
                }
            }
            _ => {}
        }
    }
    true
}
