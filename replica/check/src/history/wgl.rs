//! A memoised linearizability search (Wing & Gong, with Lowe's cache of visited configurations,
//! as in Knossos and Porcupine) over any stateright [`SequentialSpec`].
//!
//! stateright's `LinearizabilityTester` explores the same orders by plain depth-first search with
//! no memory of configurations it has already refuted, so its running time grows exponentially
//! with the length of a history once operations overlap. This search explores each
//! configuration — the operations already linearized together with the reference object's
//! state — at most once, and skips configurations dominated by refuted ones.
//!
//! Operations with an unknown outcome (no return) are optional: they may be linearized anywhere
//! after their invocation, or not at all. That is the same as giving them a return at +infinity:
//! an operation linearized after every completed one is never observed. At each configuration
//! the search tries the completed candidates first and the optional ones after, so unknown
//! operations are assumed to have happened only where needed.
//!
//! The search is bounded by a number of configurations, so that a hopeless history ends with
//! [`Verdict::GaveUp`] instead of exhausting memory.
//!
//! This module only searches; decoding histories and reporting belong to
//! [`super::linearizability`].

use stateright::semantics::SequentialSpec;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// One operation to linearize.
#[derive(Clone, Debug)]
pub(crate) struct Operation<Op, Ret> {
    /// What was invoked.
    pub op: Op,
    /// What it returned, or `None` when the outcome is unknown (the operation is optional).
    pub ret: Option<Ret>,
    /// The operation never changes the state. The search then checks it without copying the
    /// state, and never linearizes it when its outcome is unknown. Setting this for an
    /// operation that does change the state makes the verdict wrong.
    pub read_only: bool,
}

/// Invocations and returns, in real-time order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Operation `i` was invoked.
    Call(usize),
    /// Operation `i` returned (only for operations with `ret: Some`).
    Return(usize),
}

/// What the search found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A valid order: operation indices, optional operations included only when linearized.
    Linearizable(Vec<usize>),
    /// No valid order exists.
    NotLinearizable {
        /// The most completed operations any partial order managed to linearize.
        best_prefix: usize,
        /// An operation that returned before it could be linearized in that deepest attempt.
        blocked_at: Option<usize>,
        /// Configurations visited.
        visited: usize,
    },
    /// The search visited its maximum number of configurations without a verdict.
    GaveUp {
        /// Configurations visited.
        visited: usize,
    },
}

/// The doubly linked list of not-yet-linearized steps; node `i` is `schedule[i]`, node
/// `schedule.len()` is the head sentinel.
struct Steps {
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
    end: usize,
}

impl Steps {
    fn new(len: usize) -> Self {
        // Node `len` is the head; `len + 1` the end marker.
        let head = len;
        let end = len + 1;
        let mut next = vec![end; len + 1];
        let mut prev = vec![head; len + 1];
        for i in 0..len {
            next[i] = i + 1;
            prev[i] = if i == 0 { head } else { i - 1 };
        }
        next[head] = if len == 0 { end } else { 0 };
        if len > 0 {
            next[len - 1] = end;
        }
        Steps {
            next,
            prev,
            head,
            end,
        }
    }

    fn first(&self) -> usize {
        self.next[self.head]
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != self.end {
            self.prev[n] = p;
        }
    }

    /// Undoes `unlink(node)`; unlinks must be undone in reverse order.
    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != self.end {
            self.prev[n] = node;
        }
    }
}

/// A set of operation indices.
#[derive(Clone, Debug)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
}

/// Whether the set `a` is included in the set `b` (same length).
fn is_subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x & !y == 0)
}

/// The multiply-rotate hash of rustc (`FxHasher`): much faster than SipHash on the short keys
/// of the caches, and collision attacks are not a concern here.
#[derive(Clone, Copy, Default)]
struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Fx = BuildHasherDefault<FxHasher>;

/// Number of an interned state.
type StateId = u64;

/// The configurations refuted so far, and the pruning they allow.
///
/// A configuration is the set of completed operations linearized, the set of optional ones
/// linearized, and the state. A configuration is not explored if a configuration with the same
/// completed set and state and a *subset* of its optional operations was fully explored without
/// success: that one could do everything this one can, and more (the missing optional
/// operations stay available). This covers configurations seen before (equal sets), and keeps
/// optional operations (crashed clients) from multiplying the search by every subset of them
/// that leads to the same state. A configuration still being explored is never met again: the
/// sets only grow along a path.
///
/// States are interned, so that a key is a few words: the completed set and the state number.
struct Seen<S> {
    states: HashMap<S, StateId, Fx>,
    /// Completed set ++ [state] -> what was refuted with them.
    refuted: HashMap<Box<[u64]>, Refuted, Fx>,
    /// Configurations explored.
    visited: usize,
    /// Reused buffer for building keys.
    key: Vec<u64>,
}

/// The optional sets refuted with a given completed set and state.
enum Refuted {
    /// The empty set, which dominates every other.
    Everything,
    /// Minimal non-empty sets.
    Sets(Vec<Box<[u64]>>),
}

impl<S: Clone + Eq + Hash> Seen<S> {
    fn new() -> Self {
        Seen {
            states: HashMap::default(),
            refuted: HashMap::default(),
            visited: 0,
            key: Vec::new(),
        }
    }

    fn intern(&mut self, state: &S) -> StateId {
        if let Some(id) = self.states.get(state) {
            return *id;
        }
        let id = self.states.len() as StateId;
        self.states.insert(state.clone(), id);
        id
    }

    fn set_key(&mut self, done: &Bits, state: StateId) {
        self.key.clear();
        self.key.extend_from_slice(&done.0);
        self.key.push(state);
    }

    /// Whether the configuration must be explored; counts it if so.
    fn visit(&mut self, done: &Bits, optional: &Bits, state: StateId) -> bool {
        self.set_key(done, state);
        let dominated = match self.refuted.get(self.key.as_slice()) {
            None => false,
            Some(Refuted::Everything) => true,
            Some(Refuted::Sets(sets)) => sets.iter().any(|set| is_subset(set, &optional.0)),
        };
        if !dominated {
            self.visited += 1;
        }
        !dominated
    }

    /// Records that the configuration was fully explored without success.
    fn refute(&mut self, done: &Bits, optional: &Bits, state: StateId) {
        self.set_key(done, state);
        if optional.is_empty() {
            self.refuted
                .insert(self.key.as_slice().into(), Refuted::Everything);
            return;
        }
        let entry = match self.refuted.get_mut(self.key.as_slice()) {
            Some(entry) => entry,
            None => self
                .refuted
                .entry(self.key.as_slice().into())
                .or_insert(Refuted::Sets(Vec::new())),
        };
        let Refuted::Sets(sets) = entry else {
            return;
        };
        if sets.iter().any(|set| is_subset(set, &optional.0)) {
            return;
        }
        // Keep only the minimal sets.
        sets.retain(|set| !is_subset(&optional.0, set));
        sets.push(optional.0.as_slice().into());
    }
}

/// For every operation, the schedule node of its `Return` (`None`: it never returned).
fn return_nodes(schedule: &[Step], ops: usize) -> Vec<Option<usize>> {
    let mut return_node = vec![None; ops];
    for (node, step) in schedule.iter().enumerate() {
        if let Step::Return(i) = *step {
            return_node[i] = Some(node);
        }
    }
    return_node
}

/// Whether `op` (which returned `ret`, if it returned) can be linearized in `state`: `None`
/// if not; `Some(None)` if it can and leaves the state as it is (a read); `Some(Some(next))`
/// if it can and leads to `next`.
fn try_step<S>(
    state: &mut S,
    op: &S::Op,
    ret: Option<&S::Ret>,
    read_only: bool,
) -> Option<Option<S>>
where
    S: SequentialSpec + Clone + Eq,
{
    match (ret, read_only) {
        // Linearizing an optional operation that changes nothing is never needed: leaving it
        // out (or placing it later) explains the same history.
        (None, true) => None,
        (None, false) => {
            let mut next_state = state.clone();
            next_state.invoke(op);
            (next_state != *state).then_some(Some(next_state))
        }
        (Some(ret), true) => state.is_valid_step(op, ret).then_some(None),
        (Some(ret), false) => {
            let mut next_state = state.clone();
            next_state
                .is_valid_step(op, ret)
                .then_some(Some(next_state))
        }
    }
}

/// Searches for a linearization of `ops` given the real-time `schedule` of their steps, visiting
/// at most `max_configurations` configurations.
///
/// Every operation must have exactly one `Call` in `schedule`, followed later by one `Return` if
/// and only if its `ret` is `Some`.
pub(crate) fn linearize<S>(
    init: &S,
    ops: &[Operation<S::Op, S::Ret>],
    schedule: &[Step],
    max_configurations: usize,
) -> Verdict
where
    S: SequentialSpec + Clone + Eq + Hash,
{
    let return_node = return_nodes(schedule, ops.len());
    let mut remaining_returns = return_node.iter().filter(|r| r.is_some()).count();
    let completed_total = remaining_returns;
    let mut done = Bits::new(ops.len());
    let mut optional = Bits::new(ops.len());
    let mut seen = Seen::new();
    let mut state = init.clone();
    let mut state_id = seen.intern(&state);
    let mut steps = Steps::new(schedule.len());
    // (call node lifted, its operation, state before it)
    let mut stack: Vec<(usize, usize, S, StateId)> = Vec::new();
    let (mut best_prefix, mut blocked_at) = (0, None);

    // The candidates of a configuration are the calls before the first remaining return. They
    // are walked twice: completed operations first, then optional ones, so that an unknown
    // operation is only linearized where no completed one fits (usually right before the
    // operation that observes it).
    let mut node = steps.first();
    let mut optional_pass = false;
    while remaining_returns > 0 {
        if seen.visited >= max_configurations {
            return Verdict::GaveUp {
                visited: seen.visited,
            };
        }
        // Every remaining return is still in the list, so the walk meets one before the end;
        // reaching the end anyway is treated like meeting a return.
        if let Some(&Step::Call(i)) = schedule.get(node) {
            let Operation { op, ret, read_only } = &ops[i];
            if ret.is_none() != optional_pass {
                node = steps.next[node];
                continue;
            }
            if let Some(next_state) = try_step(&mut state, op, ret.as_ref(), *read_only) {
                let next_id = match &next_state {
                    Some(next_state) => seen.intern(next_state),
                    None => state_id,
                };
                let set = if ret.is_some() {
                    &mut done
                } else {
                    &mut optional
                };
                set.set(i);
                if seen.visit(&done, &optional, next_id) {
                    let previous = match next_state {
                        Some(next_state) => std::mem::replace(&mut state, next_state),
                        None => state.clone(),
                    };
                    stack.push((node, i, previous, state_id));
                    state_id = next_id;
                    steps.unlink(node);
                    if let Some(r) = return_node[i] {
                        steps.unlink(r);
                        remaining_returns -= 1;
                    }
                    node = steps.first();
                    optional_pass = false;
                    continue;
                }
                let set = if ret.is_some() {
                    &mut done
                } else {
                    &mut optional
                };
                set.clear(i);
            }
            node = steps.next[node];
            continue;
        }
        if !optional_pass {
            optional_pass = true;
            node = steps.first();
            continue;
        }
        let linearized = completed_total - remaining_returns;
        if linearized >= best_prefix {
            best_prefix = linearized;
            blocked_at = match schedule.get(node) {
                Some(&Step::Return(i)) => Some(i),
                _ => None,
            };
        }
        let Some((call, j, previous, previous_id)) = stack.pop() else {
            return Verdict::NotLinearizable {
                best_prefix,
                blocked_at,
                visited: seen.visited,
            };
        };
        seen.refute(&done, &optional, state_id);
        state = previous;
        state_id = previous_id;
        if let Some(r) = return_node[j] {
            done.clear(j);
            steps.relink(r);
            remaining_returns += 1;
            optional_pass = false;
        } else {
            optional.clear(j);
            optional_pass = true;
        }
        steps.relink(call);
        node = steps.next[call];
    }
    let order = stack.iter().map(|(_, i, _, _)| *i).collect();
    Verdict::Linearizable(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register of small integers.
    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    struct Reg(i64);

    #[derive(Clone, Debug)]
    enum RegOp {
        Write(i64),
        Read,
    }

    #[derive(Clone, Debug, PartialEq)]
    enum RegRet {
        Written,
        Value(i64),
    }

    impl SequentialSpec for Reg {
        type Op = RegOp;
        type Ret = RegRet;

        fn invoke(&mut self, op: &RegOp) -> RegRet {
            match op {
                RegOp::Write(v) => {
                    self.0 = *v;
                    RegRet::Written
                }
                RegOp::Read => RegRet::Value(self.0),
            }
        }
    }

    fn write(v: i64, done: bool) -> Operation<RegOp, RegRet> {
        Operation {
            op: RegOp::Write(v),
            ret: done.then_some(RegRet::Written),
            read_only: false,
        }
    }

    fn read(v: i64) -> Operation<RegOp, RegRet> {
        Operation {
            op: RegOp::Read,
            ret: Some(RegRet::Value(v)),
            read_only: true,
        }
    }

    use Step::{Call, Return};

    #[test]
    fn finds_the_order_inside_overlapping_intervals() {
        // write(1) overlaps both reads; the read of 0 must go first.
        let ops = [write(1, true), read(1), read(0)];
        let schedule = [Call(0), Call(1), Call(2), Return(2), Return(1), Return(0)];
        assert_eq!(
            linearize(&Reg(0), &ops, &schedule, 1000),
            Verdict::Linearizable(vec![2, 0, 1])
        );
    }

    #[test]
    fn respects_real_time() {
        // read(0) starts after read(1) returned: no order works.
        let ops = [write(1, true), read(1), read(0)];
        let schedule = [Call(0), Call(1), Return(1), Call(2), Return(2), Return(0)];
        match linearize(&Reg(0), &ops, &schedule, 1000) {
            Verdict::NotLinearizable {
                best_prefix,
                blocked_at,
                ..
            } => {
                assert_eq!(best_prefix, 2);
                assert_eq!(blocked_at, Some(2));
            }
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn optional_operations_may_be_left_out_or_placed_late() {
        // The unknown write(1) explains the read of 1, and is left out before the read of 0.
        let ops = [write(1, false), read(0), read(1)];
        let schedule = [Call(0), Call(1), Return(1), Call(2), Return(2)];
        assert_eq!(
            linearize(&Reg(0), &ops, &schedule, 1000),
            Verdict::Linearizable(vec![1, 0, 2])
        );
        // But it happens at most once: 1, then 2, then 1 again is impossible.
        let ops = [write(1, false), write(2, true), read(1), read(2), read(1)];
        let schedule = [
            Call(0),
            Call(1),
            Return(1),
            Call(2),
            Return(2),
            Call(3),
            Return(3),
            Call(4),
            Return(4),
        ];
        assert!(matches!(
            linearize(&Reg(0), &ops, &schedule, 1000),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn gives_up_at_the_budget() {
        let ops = [write(1, true), read(1), read(0)];
        let schedule = [Call(0), Call(1), Return(1), Call(2), Return(2), Return(0)];
        assert_eq!(
            linearize(&Reg(0), &ops, &schedule, 1),
            Verdict::GaveUp { visited: 1 }
        );
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(
            linearize(&Reg(0), &[], &[], 1),
            Verdict::Linearizable(vec![])
        );
    }
}
