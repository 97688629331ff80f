//! Algorithm 2 of the paper (the DS-SMR client proxy), with the location cache of §4.3 and the
//! fallback to S-SMR, as a state machine: fed one command's variables, then what the cluster
//! answered (the oracle's prophecy, the outcome of the moves, the partitions' reply, a
//! refreshed topology, a failure), it tells the proxy what to do next ([`Step`]): consult the
//! oracle, move variables, run the command, refresh the topology, or stop with the reply.
//!
//! One [`Access`] lives for one application command. It owns that command's progress: ω, the
//! variables the command is believed to need (ω and the dependencies a `retry(γ)` revealed),
//! the retries so far, and the runs started again because the topology changed under the
//! command. It reads and updates what the proxies of a process share ([`Shared`]): the
//! location cache (prophecies, moves and retries update it), the dependency hints and
//! co-access counts kept beside it, and the counters ([`ProxyStats`]).
//!
//! It does no I/O: it never multicasts, waits, reads a clock or draws randomness of its own
//! (the choice among equally good partitions is a [`Choose`] handed in). The proxy
//! ([`crate::client::proxy`]) performs each step over the network and feeds the outcome
//! back; the unit tests below play whole scenarios against it in memory.
//!
//! # The algorithm
//!
//! - *Locate*: when every variable needed is cached, in a partition that still exists, the
//!   oracle is skipped (a cache hit); otherwise the proxy *consults* the oracle, whose
//!   *prophecy* fills the cache, or is `nok` (a variable of ω does not exist: the
//!   application's `missing` reply).
//! - *Gather* (Algorithm 2, lines 8–18): variables in several partitions *move* to one
//!   destination, chosen by the [`DestinationPolicy`] among the partitions taking variables;
//!   one move per source partition, all multicast at once. Under the `affinity` policy a
//!   variable settled where it is stays there, and the command runs spread over the
//!   partitions holding its variables ([`Execution::Spread`]).
//! - *Run*: the access command goes to the destination alone ([`Execution::Local`]), or
//!   spread. A `retry(γ)` reply (a variable moved away meanwhile, or the command needs
//!   dependencies it could not tell) updates the cache, makes γ needed and starts over; after
//!   `retry_threshold` retries the command *falls back to S-SMR*: it is multicast to every
//!   partition ([`Execution::Exchange`]), which always terminates. The dependencies a retry
//!   revealed are remembered per ω (for commands that may have dependencies), so that the
//!   next such command gathers them at once.
//! - *Topology*: a command that met a change of the partitions (a destination unknown to a
//!   group, a read left unanswered while the topology moved on, a read asked again) runs
//!   again from the start, after a refresh of the topology, at most [`STALE_RETRIES`] times.
//!
//! Under S-SMR the placement is static (the application's rule): the command goes at once to
//! the partitions holding its variables, or to every partition if it may have dependencies,
//! and they exchange variables.
//!
//! # Contract
//!
//! [`Access::start`] gives the first step. Every step but the last ([`Step::Done`],
//! [`Step::Missing`], [`Step::Fail`]) is answered by exactly one event: a [`Step::Consult`] by
//! [`Access::on_prophecy`] and a [`Step::Run`] by [`Access::on_reply`], or either by
//! [`Access::on_error`] when it failed; a [`Step::Move`] by [`Access::on_moved`]; a
//! [`Step::Refresh`] by [`Access::on_refreshed`] once the oracle was asked (whether or not
//! it answered). An event out of turn ends the command with a rejection.

use crate::client::cache::LocationCache;
use crate::client::error::ProxyError;
use crate::client::stats::{bump, ProxyStats};
use crate::command::{Execution, Prophecy, Reply};
use crate::ids::{GroupId, VarId};
use crate::mode::{DestinationPolicy, Mode};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use std::collections::{BTreeMap, BTreeSet};

/// How many times a command runs again because the topology changed under it.
pub(crate) const STALE_RETRIES: u32 = 8;

/// How the proxies of a process run commands (the algorithm's part of their config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Policy {
    /// S-SMR or DS-SMR.
    pub(crate) mode: Mode,
    /// Retries before a command falls back to S-SMR.
    pub(crate) retry_threshold: u32,
    /// Where multi-partition commands gather their variables.
    pub(crate) destination: DestinationPolicy,
}

/// The cluster's partitions as the proxy knows them at the moment. The proxy's view follows
/// the oracle: it may change between two events of one command.
pub(crate) trait View {
    /// Every partition, sorted.
    fn partitions(&self) -> Vec<GroupId>;
    /// The partitions variables may be moved to (all but those being drained), sorted.
    fn accepting(&self) -> Vec<GroupId>;
    /// True when `g` is a group of the cluster.
    fn contains(&self, g: GroupId) -> bool;
    /// The view's version: it grows with every change learned.
    fn version(&self) -> u64;
}

/// The choice among equally good partitions that the paper leaves to chance (Algorithm 2,
/// line 10: "let P_d be one of the partitions").
pub(crate) trait Choose {
    /// One of `among` (`None` when it is empty).
    fn choose(&mut self, among: &[GroupId]) -> Option<GroupId>;
}

impl Choose for StdRng {
    fn choose(&mut self, among: &[GroupId]) -> Option<GroupId> {
        among.choose(self).copied()
    }
}

/// S-SMR's static placement (the application's rule): the partition of a variable among the
/// partitions (sorted, never empty).
pub(crate) type Place<'a> = dyn Fn(&VarId, &[GroupId]) -> GroupId + Sync + 'a;

/// What the proxy knows of an application command before running it (the application tells).
pub(crate) struct Request<'a> {
    /// ω: the variables the command names (any order; repeats allowed).
    pub(crate) omega: Vec<VarId>,
    /// The command may have dependencies: it uses the dependency hints and leaves them, and
    /// under S-SMR goes to every partition.
    pub(crate) may_have_dependencies: bool,
    /// The command changes no variable: left unanswered while the topology moved on, it runs
    /// again (it took no effect).
    pub(crate) read_only: bool,
    /// S-SMR's static placement.
    pub(crate) place: &'a Place<'a>,
}

/// What the proxies of a process share, which an access reads and updates (in memory).
pub(crate) struct Shared<'a, V> {
    /// The location cache, with the dependency hints and co-access counts.
    pub(crate) cache: &'a LocationCache,
    /// The counters.
    pub(crate) stats: &'a ProxyStats,
    /// The topology as the proxy knows it.
    pub(crate) view: &'a V,
}

/// What the proxy does next for a command.
#[derive(Debug)]
pub(crate) enum Step {
    /// Consult the oracle for an access: where `vars` are (all must exist) and where
    /// `optional` (dependencies) are, if they exist. Answered by [`Access::on_prophecy`].
    Consult {
        /// ω.
        vars: Vec<VarId>,
        /// The dependencies believed needed.
        optional: Vec<VarId>,
    },
    /// Multicast every move at once, each `(source, variables)` to the oracle, its source and
    /// `to`, and wait until `to` has answered each. Answered by [`Access::on_moved`].
    Move {
        /// The destination.
        to: GroupId,
        /// One move per source partition: the source and the variables it holds.
        moves: Vec<(GroupId, Vec<VarId>)>,
    },
    /// Multicast the access command to `dests`, run as `execution`; the first reply counts.
    /// Answered by [`Access::on_reply`].
    Run {
        /// The destination partitions, sorted.
        dests: Vec<GroupId>,
        /// How they run it ([`Execution::Exchange`]: S-SMR, or the fallback to it).
        execution: Execution,
    },
    /// Ask the oracle for the topology now. Answered by [`Access::on_refreshed`].
    Refresh,
    /// The command ran: its encoded application reply.
    Done(Vec<u8>),
    /// The command cannot run: these variables of ω do not exist (the application's
    /// `missing` reply).
    Missing(Vec<VarId>),
    /// The command did not complete.
    Fail(ProxyError),
}

/// Where one command stands.
#[derive(Debug)]
enum Phase {
    /// Not started.
    New,
    /// Waiting for the prophecy.
    Consulting,
    /// Waiting for the moves to `target`; the command then runs there (spread over `spread`
    /// too, if any).
    Moving {
        target: GroupId,
        spread: Vec<GroupId>,
        moves: Vec<(GroupId, Vec<VarId>)>,
    },
    /// Waiting for the reply to the access command.
    Running(Running),
    /// Waiting for the topology to be refreshed.
    Refreshing(Again),
    /// Done, missing or failed.
    Finished,
}

/// How the command is running.
#[derive(Clone, Copy, Debug)]
enum Running {
    /// At the destination alone: a retry tells what the destination holds.
    Local(GroupId),
    /// Spread over several partitions: a retry comes from any of them.
    Spread,
    /// Over partitions exchanging variables (S-SMR and the fallback): no retry.
    Exchange,
}

/// What follows a refresh of the topology.
#[derive(Debug)]
enum Again {
    /// Run the command again (a destination was unknown to a group).
    Always,
    /// Run it again if the topology moved on since version `seen`; else it fails with `error`.
    IfMoved { seen: u64, error: ProxyError },
}

/// Algorithm 2 for one command (see the module doc).
pub(crate) struct Access<'a, V, C> {
    shared: Shared<'a, V>,
    policy: Policy,
    choose: C,
    place: &'a Place<'a>,
    /// ω, sorted and deduplicated.
    omega: Vec<VarId>,
    /// The command may have dependencies (uses and leaves hints).
    hinted: bool,
    read_only: bool,
    /// What the command is believed to need (ω and known dependencies), sorted.
    needed: Vec<VarId>,
    /// `retry` replies in this run.
    attempt: u32,
    /// Runs started again because the topology changed.
    stale: u32,
    /// The topology version when this run started.
    seen: u64,
    phase: Phase,
}

impl<'a, V: View, C: Choose> Access<'a, V, C> {
    /// The access of the command `request`, under `policy`, over what the proxies share.
    pub(crate) fn new(
        request: Request<'a>,
        policy: Policy,
        shared: Shared<'a, V>,
        choose: C,
    ) -> Self {
        let mut omega = request.omega;
        omega.sort();
        omega.dedup();
        Access {
            shared,
            policy,
            choose,
            place: request.place,
            needed: omega.clone(),
            omega,
            hinted: request.may_have_dependencies,
            read_only: request.read_only,
            attempt: 0,
            stale: 0,
            seen: 0,
            phase: Phase::New,
        }
    }

    /// The first step.
    pub(crate) fn start(&mut self) -> Step {
        match self.phase {
            Phase::New => self.begin(),
            _ => self.out_of_turn("start"),
        }
    }

    /// The oracle's prophecy for the [`Step::Consult`].
    pub(crate) fn on_prophecy(&mut self, prophecy: Prophecy) -> Step {
        if !matches!(self.phase, Phase::Consulting) {
            return self.out_of_turn("a prophecy");
        }
        match prophecy {
            Prophecy::Nok { vars } => self.finish(Step::Missing(vars)),
            Prophecy::Locations(l) => {
                self.shared.cache.update(l.iter().cloned());
                self.gather(l)
            }
            Prophecy::Ok => self.failed(ProxyError::Rejected(
                "oracle answered ok to an access consult".into(),
            )),
        }
    }

    /// The outcome of each move of the [`Step::Move`], in its order: a reply of any kind
    /// (`Ok`), or why none came.
    pub(crate) fn on_moved(&mut self, outcomes: Vec<Result<(), ProxyError>>) -> Step {
        let (target, spread, moves) = match std::mem::replace(&mut self.phase, Phase::Finished) {
            Phase::Moving {
                target,
                spread,
                moves,
            } => (target, spread, moves),
            other => {
                self.phase = other;
                return self.out_of_turn("moves");
            }
        };
        let cache = self.shared.cache;
        for (outcome, (_, vars)) in outcomes.into_iter().zip(&moves) {
            match outcome {
                Ok(()) => cache.update(vars.iter().map(|v| (v.clone(), target))),
                // A move that failed or timed out may or may not have happened; the command
                // finds out (retry) and the cache entries are dropped so they get refreshed.
                Err(ProxyError::Indeterminate(_)) => cache.forget(vars),
                Err(e) => return self.failed(e),
            }
        }
        self.execute(target, spread)
    }

    /// The reply to the [`Step::Run`].
    pub(crate) fn on_reply(&mut self, reply: Reply) -> Step {
        let Phase::Running(running) = self.phase else {
            return self.out_of_turn("a reply");
        };
        match (reply, running) {
            (Reply::Done(bytes), _) => self.finish(Step::Done(bytes)),
            (Reply::Retry { needed, local }, Running::Local(at)) => {
                self.retry(needed, Some((at, local)))
            }
            // A spread command's reply comes from any of its destinations: what that one
            // holds says nothing of where the variables are.
            (Reply::Retry { needed, .. }, Running::Spread) => self.retry(needed, None),
            (other, _) => self.failed(ProxyError::unexpected(other)),
        }
    }

    /// The [`Step::Consult`] or the [`Step::Run`] failed.
    pub(crate) fn on_error(&mut self, error: ProxyError) -> Step {
        if !matches!(self.phase, Phase::Consulting | Phase::Running(_)) {
            return self.out_of_turn("an error");
        }
        self.failed(error)
    }

    /// The oracle was asked for the topology ([`Step::Refresh`]); the view is as it left it.
    pub(crate) fn on_refreshed(&mut self) -> Step {
        match std::mem::replace(&mut self.phase, Phase::Finished) {
            Phase::Refreshing(Again::Always) => self.again(),
            Phase::Refreshing(Again::IfMoved { seen, error }) => {
                if self.shared.view.version() > seen {
                    self.stale += 1;
                    tracing::debug!(why = %error, "a read failed while the topology changed; again");
                    self.again()
                } else {
                    self.finish(Step::Fail(error))
                }
            }
            other => {
                self.phase = other;
                self.out_of_turn("a refresh")
            }
        }
    }

    /// A run from the start: the first, or one after the topology changed under the command.
    fn begin(&mut self) -> Step {
        self.seen = self.shared.view.version();
        self.attempt = 0;
        self.needed = self.omega.clone();
        if self.policy.mode == Mode::Ssmr {
            return self.run_ssmr();
        }
        // Only commands that can have dependencies use (and leave) hints: a getTimeline has
        // the same ω as its user's posts but needs none of the followers.
        if let Some(deps) = self
            .hinted
            .then(|| self.shared.cache.dependencies(&self.omega))
            .flatten()
        {
            self.needed.extend(deps);
            self.needed.sort();
            self.needed.dedup();
        }
        self.next_attempt()
    }

    /// After a change of the topology: forget where the command's variables were, run again.
    fn again(&mut self) -> Step {
        self.shared.cache.forget(&self.omega);
        self.begin()
    }

    /// S-SMR: the partitions the static placement gives.
    fn run_ssmr(&mut self) -> Step {
        let parts = match self.every_partition() {
            Ok(parts) => parts,
            Err(e) => return self.failed(e),
        };
        let dests: Vec<GroupId> = if self.hinted {
            parts
        } else {
            let set: BTreeSet<GroupId> =
                self.omega.iter().map(|v| (self.place)(v, &parts)).collect();
            if set.is_empty() {
                vec![parts[0]]
            } else {
                set.into_iter().collect()
            }
        };
        self.run(Running::Exchange, dests, Execution::Exchange)
    }

    /// The next attempt of DS-SMR, or the fallback to S-SMR after too many retries.
    fn next_attempt(&mut self) -> Step {
        if self.attempt < self.policy.retry_threshold {
            return self.locate();
        }
        bump(&self.shared.stats.fallbacks, 1);
        match self.every_partition() {
            Ok(all) => self.run(Running::Exchange, all, Execution::Exchange),
            Err(e) => self.failed(e),
        }
    }

    /// Where the needed variables are: the cache (§4.3), or else the oracle.
    fn locate(&mut self) -> Step {
        let Shared { cache, stats, view } = self.shared;
        let needed = &self.needed;
        // Cached locations in a partition that is gone (removed after a drain) are stale.
        let cached = cache.lookup(needed).filter(|l| {
            let known = l.iter().all(|(_, p)| view.contains(*p));
            if !known {
                cache.forget(needed);
            }
            known
        });
        let first = self.attempt == 0;
        match cached {
            Some(locations) => {
                if first {
                    bump(&stats.cache_hits, 1);
                }
                self.gather(locations)
            }
            None => {
                if first {
                    bump(&stats.cache_misses, 1);
                }
                let optional: Vec<VarId> = needed
                    .iter()
                    .filter(|v| self.omega.binary_search(v).is_err())
                    .cloned()
                    .collect();
                self.phase = Phase::Consulting;
                Step::Consult {
                    vars: self.omega.clone(),
                    optional,
                }
            }
        }
    }

    /// Algorithm 2, lines 8–18: picks the destination and moves every variable there (one
    /// move per source partition). Under the affinity policy, variables settled where they
    /// are stay there, and the command runs spread over their partitions and the destination.
    fn gather(&mut self, locations: Vec<(VarId, GroupId)>) -> Step {
        let mut by_partition: BTreeMap<GroupId, Vec<VarId>> = BTreeMap::new();
        for (v, p) in locations {
            by_partition.entry(p).or_default().push(v);
        }
        let involved: Vec<GroupId> = by_partition.keys().copied().collect();
        let target = match involved.len() {
            0 => {
                // Nothing to locate (a command without variables): any partition runs it.
                let any = self
                    .choose
                    .choose(&self.shared.view.partitions())
                    .unwrap_or(GroupId(1));
                return self.execute(any, Vec::new());
            }
            1 => return self.execute(involved[0], Vec::new()),
            _ => self.choose_destination(&by_partition),
        };
        let mut spread = Vec::new();
        if self.policy.destination == DestinationPolicy::Affinity {
            let cache = self.shared.cache;
            let affinity = cache.affinity();
            for (p, vars) in by_partition.iter_mut().filter(|(p, _)| **p != target) {
                let before = vars.len();
                vars.retain(|v| !affinity.settled(v, *p, target, cache));
                if vars.len() < before {
                    spread.push(*p);
                }
            }
        }
        let moves: Vec<(GroupId, Vec<VarId>)> = by_partition
            .into_iter()
            .filter(|(p, vars)| *p != target && !vars.is_empty())
            .collect();
        if moves.is_empty() {
            return self.execute(target, spread);
        }
        for (_, vars) in &moves {
            bump(&self.shared.stats.move_commands, 1);
            bump(&self.shared.stats.moves, vars.len() as u64);
        }
        self.phase = Phase::Moving {
            target,
            spread,
            moves: moves.clone(),
        };
        Step::Move { to: target, moves }
    }

    /// The destination of a command's variables (Algorithm 2, line 10): never a partition
    /// being drained, and under the paper's `random` policy any partition that takes
    /// variables (its `getTargetPartition`), so partitions added at run time get their share.
    fn choose_destination(&mut self, by_partition: &BTreeMap<GroupId, Vec<VarId>>) -> GroupId {
        let accepting = self.shared.view.accepting();
        let involved: Vec<GroupId> = by_partition
            .keys()
            .copied()
            .filter(|p| accepting.contains(p))
            .collect();
        let involved = if involved.is_empty() {
            by_partition.keys().copied().collect()
        } else {
            involved
        };
        let candidates: Vec<GroupId> = match self.policy.destination {
            DestinationPolicy::Random if !accepting.is_empty() => accepting,
            DestinationPolicy::Random => involved,
            DestinationPolicy::Majority => {
                let most = involved
                    .iter()
                    .map(|p| by_partition[p].len())
                    .max()
                    .unwrap_or(0);
                involved
                    .into_iter()
                    .filter(|p| by_partition[p].len() == most)
                    .collect()
            }
            DestinationPolicy::Affinity => {
                let cache = self.shared.cache;
                match cache.affinity().destination(by_partition, cache) {
                    Some(p) if accepting.contains(&p) => return p,
                    _ => involved,
                }
            }
        };
        self.choose.choose(&candidates).unwrap_or(GroupId(1))
    }

    /// Algorithm 2, line 21: the command to its destination alone, or spread over the
    /// destination and the partitions `spread` (those holding settled variables).
    fn execute(&mut self, target: GroupId, mut spread: Vec<GroupId>) -> Step {
        if self.policy.destination == DestinationPolicy::Affinity {
            // After the choice: what this command accesses is evidence for the next ones.
            self.shared
                .cache
                .affinity()
                .record(&self.omega, &self.needed);
        }
        if spread.is_empty() {
            return self.run(Running::Local(target), vec![target], Execution::Local);
        }
        bump(&self.shared.stats.spreads, 1);
        spread.push(target);
        spread.sort();
        tracing::debug!(omega = ?self.omega, needed = self.needed.len(), dests = ?spread, "spread");
        let execution = Execution::Spread {
            needed: self.needed.clone(),
        };
        self.run(Running::Spread, spread, execution)
    }

    fn run(&mut self, running: Running, dests: Vec<GroupId>, execution: Execution) -> Step {
        self.phase = Phase::Running(running);
        Step::Run { dests, execution }
    }

    /// A `retry(γ)` reply, from a local or a spread run alike: the dependencies γ names are
    /// remembered (for commands that may have any); the cache forgets what it said of γ and
    /// of what was needed, except what the answering partition (`held`: if known, with what
    /// it holds of γ) holds, which it learns; γ and ω are needed from now on; and the command
    /// starts over (or falls back to S-SMR).
    fn retry(&mut self, gamma: Vec<VarId>, held: Option<(GroupId, Vec<VarId>)>) -> Step {
        let cache = self.shared.cache;
        bump(&self.shared.stats.retries, 1);
        if self.hinted {
            cache.remember_dependencies(&self.omega, &gamma);
        }
        let here: BTreeSet<&VarId> = held.iter().flat_map(|(_, local)| local).collect();
        cache.forget(
            gamma
                .iter()
                .chain(&self.needed)
                .filter(|v| !here.contains(v)),
        );
        if let Some((at, local)) = held {
            cache.update(local.into_iter().map(|v| (v, at)));
        }
        let mut next: BTreeSet<VarId> = gamma.into_iter().collect();
        next.extend(self.omega.iter().cloned());
        self.needed = next.into_iter().collect();
        self.attempt += 1;
        self.next_attempt()
    }

    /// The command failed in this run: it runs again from the start if the topology changed
    /// under it (at most [`STALE_RETRIES`] times), else it fails.
    fn failed(&mut self, error: ProxyError) -> Step {
        if self.stale >= STALE_RETRIES {
            return self.finish(Step::Fail(error));
        }
        match error {
            // A partition was removed (or added) under the command: learn the topology,
            // forget what the cache says of the command's variables, run it again.
            ProxyError::Stale(why) => {
                self.stale += 1;
                tracing::debug!(%why, "topology changed under a command; again");
                self.phase = Phase::Refreshing(Again::Always);
                Step::Refresh
            }
            // A read that could not be answered took no effect. When the topology changed
            // under it (a partition it went to was removed meanwhile), run it again.
            error @ ProxyError::Indeterminate(_) if self.read_only => {
                self.phase = Phase::Refreshing(Again::IfMoved {
                    seen: self.seen,
                    error,
                });
                Step::Refresh
            }
            ProxyError::AskAgain(why) => {
                self.stale += 1;
                tracing::debug!(%why, "a read's reply was not kept; again");
                self.begin()
            }
            error => self.finish(Step::Fail(error)),
        }
    }

    fn every_partition(&self) -> Result<Vec<GroupId>, ProxyError> {
        let parts = self.shared.view.partitions();
        if parts.is_empty() {
            return Err(ProxyError::Config("the cluster has no partition".into()));
        }
        Ok(parts)
    }

    fn finish(&mut self, step: Step) -> Step {
        self.phase = Phase::Finished;
        step
    }

    /// An event the current phase does not expect: a bug of the driver.
    fn out_of_turn(&mut self, event: &str) -> Step {
        let why = format!("access: {event} out of turn ({:?})", self.phase);
        self.finish(Step::Fail(ProxyError::Rejected(why)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::client::ClientError;
    use std::cell::{Cell, RefCell};

    fn v(name: &str) -> VarId {
        VarId::new(name)
    }

    fn vs(names: &[&str]) -> Vec<VarId> {
        names.iter().map(|n| v(n)).collect()
    }

    fn g(n: u32) -> GroupId {
        GroupId(n)
    }

    /// The proxy's view of the topology, changed by hand between events.
    struct Partitions {
        all: RefCell<Vec<GroupId>>,
        draining: RefCell<Vec<GroupId>>,
        version: Cell<u64>,
    }

    impl Partitions {
        fn remove(&self, n: u32) {
            self.all.borrow_mut().retain(|p| *p != g(n));
            self.version.set(self.version.get() + 1);
        }

        fn drain(&self, n: u32) {
            self.draining.borrow_mut().push(g(n));
            self.version.set(self.version.get() + 1);
        }
    }

    impl View for Partitions {
        fn partitions(&self) -> Vec<GroupId> {
            self.all.borrow().clone()
        }
        fn accepting(&self) -> Vec<GroupId> {
            let draining = self.draining.borrow();
            let all = self.all.borrow();
            all.iter()
                .filter(|p| !draining.contains(p))
                .copied()
                .collect()
        }
        fn contains(&self, p: GroupId) -> bool {
            self.all.borrow().contains(&p)
        }
        fn version(&self) -> u64 {
            self.version.get()
        }
    }

    /// The tests' "random" choice: the lowest or the highest candidate.
    enum Pick {
        Lowest,
        Highest,
    }

    impl Choose for Pick {
        fn choose(&mut self, among: &[GroupId]) -> Option<GroupId> {
            match self {
                Pick::Lowest => among.iter().min().copied(),
                Pick::Highest => among.iter().max().copied(),
            }
        }
    }

    /// S-SMR's placement in the tests: names before `m` in the first partition, the others
    /// in the last.
    fn by_name(var: &VarId, parts: &[GroupId]) -> GroupId {
        if var.0.as_str() < "m" {
            parts[0]
        } else {
            parts[parts.len() - 1]
        }
    }

    /// What the proxies of a test process share.
    struct World {
        cache: LocationCache,
        stats: ProxyStats,
        view: Partitions,
    }

    impl World {
        fn new(partitions: &[u32]) -> Self {
            World {
                cache: LocationCache::default(),
                stats: ProxyStats::default(),
                view: Partitions {
                    all: RefCell::new(partitions.iter().map(|n| g(*n)).collect()),
                    draining: RefCell::new(Vec::new()),
                    version: Cell::new(1),
                },
            }
        }

        /// Caches `names` at partition `n`.
        fn cached(&self, n: u32, names: &[&str]) {
            self.cache.update(vs(names).into_iter().map(|x| (x, g(n))));
        }

        fn located(&self, name: &str) -> Option<GroupId> {
            self.cache.locate_each(&[v(name)])[0]
        }

        fn access(
            &self,
            request: Request<'static>,
            policy: Policy,
        ) -> Access<'_, Partitions, Pick> {
            let shared = Shared {
                cache: &self.cache,
                stats: &self.stats,
                view: &self.view,
            };
            Access::new(request, policy, shared, Pick::Lowest)
        }
    }

    /// A command over `omega` that is neither a read nor may have dependencies.
    fn write(omega: &[&str]) -> Request<'static> {
        Request {
            omega: vs(omega),
            may_have_dependencies: false,
            read_only: false,
            place: &by_name,
        }
    }

    fn dssmr(destination: DestinationPolicy, retry_threshold: u32) -> Policy {
        Policy {
            mode: Mode::Dssmr,
            retry_threshold,
            destination,
        }
    }

    fn run(step: Step) -> (Vec<GroupId>, Execution) {
        match step {
            Step::Run { dests, execution } => (dests, execution),
            other => panic!("expected a run, got {other:?}"),
        }
    }

    fn local(n: u32) -> (Vec<GroupId>, Execution) {
        (vec![g(n)], Execution::Local)
    }

    fn consult(step: Step) -> (Vec<VarId>, Vec<VarId>) {
        match step {
            Step::Consult { vars, optional } => (vars, optional),
            other => panic!("expected a consult, got {other:?}"),
        }
    }

    fn moves(step: Step) -> (GroupId, Vec<(GroupId, Vec<VarId>)>) {
        match step {
            Step::Move { to, moves } => (to, moves),
            other => panic!("expected moves, got {other:?}"),
        }
    }

    fn done(step: Step) -> Vec<u8> {
        match step {
            Step::Done(bytes) => bytes,
            other => panic!("expected done, got {other:?}"),
        }
    }

    fn at(pairs: &[(&str, u32)]) -> Prophecy {
        Prophecy::Locations(pairs.iter().map(|(x, n)| (v(x), g(*n))).collect())
    }

    fn timeout() -> ProxyError {
        ProxyError::Indeterminate(ClientError::Unavailable {
            group: g(1),
            last: "deadline".into(),
        })
    }

    #[test]
    fn a_cache_hit_in_one_partition_runs_there_at_once() {
        let w = World::new(&[1, 2]);
        w.cached(2, &["a", "b"]);
        let mut a = w.access(write(&["b", "a", "b"]), dssmr(DestinationPolicy::Random, 3));
        assert_eq!(run(a.start()), local(2));
        assert_eq!(done(a.on_reply(Reply::Done(b"ok".to_vec()))), b"ok");
        let s = w.stats.snapshot();
        assert_eq!((s.cache_hits, s.cache_misses, s.moves), (1, 0, 0));
    }

    #[test]
    fn a_cache_miss_consults_the_oracle_then_runs() {
        let w = World::new(&[1, 2]);
        let mut a = w.access(write(&["a", "b"]), dssmr(DestinationPolicy::Random, 3));
        assert_eq!(consult(a.start()), (vs(&["a", "b"]), vec![]));
        assert_eq!(run(a.on_prophecy(at(&[("a", 1), ("b", 1)]))), local(1));
        assert_eq!(w.located("b"), Some(g(1)), "the prophecy is cached");
        let s = w.stats.snapshot();
        assert_eq!((s.cache_hits, s.cache_misses), (0, 1));
    }

    #[test]
    fn a_nok_prophecy_answers_the_applications_missing_reply() {
        let w = World::new(&[1]);
        let mut a = w.access(write(&["a", "b"]), dssmr(DestinationPolicy::Random, 3));
        consult(a.start());
        let step = a.on_prophecy(Prophecy::Nok { vars: vs(&["b"]) });
        assert!(matches!(step, Step::Missing(m) if m == vs(&["b"])));
        // `ok` is no answer to an access.
        let mut a = w.access(write(&["a"]), dssmr(DestinationPolicy::Random, 3));
        consult(a.start());
        let step = a.on_prophecy(Prophecy::Ok);
        assert!(
            matches!(step, Step::Fail(ProxyError::Rejected(_))),
            "{step:?}"
        );
    }

    #[test]
    fn variables_in_two_partitions_move_to_the_destination_then_run_there() {
        let w = World::new(&[1, 2]);
        w.cached(1, &["a", "b"]);
        w.cached(2, &["c"]);
        let mut a = w.access(
            write(&["a", "b", "c"]),
            dssmr(DestinationPolicy::Majority, 3),
        );
        let (to, m) = moves(a.start());
        assert_eq!((to, m), (g(1), vec![(g(2), vs(&["c"]))]), "majority: to 1");
        assert_eq!(run(a.on_moved(vec![Ok(())])), local(1));
        assert_eq!(w.located("c"), Some(g(1)), "a move is cached");
        let s = w.stats.snapshot();
        assert_eq!((s.move_commands, s.moves), (1, 1));
    }

    #[test]
    fn random_destinations_skip_draining_partitions_and_an_unknown_move_is_forgotten() {
        let w = World::new(&[1, 2, 3]);
        w.view.drain(3);
        w.cached(1, &["a"]);
        w.cached(3, &["b"]);
        let mut a = w.access(write(&["a", "b"]), dssmr(DestinationPolicy::Random, 3));
        a.choose = Pick::Highest;
        // Any partition taking variables, involved or not, but never the draining one.
        let (to, m) = moves(a.start());
        assert_eq!(to, g(2));
        assert_eq!(m, vec![(g(1), vs(&["a"])), (g(3), vs(&["b"]))]);
        assert_eq!(run(a.on_moved(vec![Ok(()), Err(timeout())])), local(2));
        assert_eq!(w.located("a"), Some(g(2)));
        assert_eq!(
            w.located("b"),
            None,
            "a move of unknown outcome is forgotten"
        );
        // Any other failure of a move ends the command.
        w.cached(1, &["a"]);
        w.cached(3, &["b"]);
        let mut a = w.access(write(&["a", "b"]), dssmr(DestinationPolicy::Random, 3));
        a.choose = Pick::Highest;
        assert_eq!(moves(a.start()).1.len(), 2);
        let step = a.on_moved(vec![Err(ProxyError::Rejected("no".into())), Ok(())]);
        assert!(
            matches!(step, Step::Fail(ProxyError::Rejected(_))),
            "{step:?}"
        );
        assert_eq!(w.located("b"), Some(g(3)), "later outcomes are not read");
    }

    #[test]
    fn a_local_retry_learns_what_the_destination_holds_and_needs_gamma() {
        let w = World::new(&[1, 2]);
        w.cached(1, &["a", "b"]);
        let mut a = w.access(write(&["a", "b"]), dssmr(DestinationPolicy::Random, 3));
        assert_eq!(run(a.start()), local(1));
        // b moved away meanwhile, and the command turns out to need d as well.
        let step = a.on_reply(Reply::Retry {
            needed: vs(&["a", "b", "d"]),
            local: vs(&["a"]),
        });
        assert_eq!(w.located("a"), Some(g(1)), "held at the destination");
        assert_eq!(w.located("b"), None);
        assert_eq!((a.needed.clone(), a.attempt), (vs(&["a", "b", "d"]), 1));
        assert_eq!(consult(step), (vs(&["a", "b"]), vs(&["d"])));
        let s = w.stats.snapshot();
        assert_eq!((s.retries, s.cache_hits, s.cache_misses), (1, 1, 0));
    }

    #[test]
    fn a_spread_retry_takes_the_same_path_but_learns_nothing_of_the_destination() {
        let w = World::new(&[1, 2]);
        let (s, x) = settled_pair(&w);
        let mut a = w.access(write(&[s, x]), dssmr(DestinationPolicy::Affinity, 3));
        let (dests, _) = run(a.start());
        assert_eq!(dests, vec![g(1), g(2)]);
        let step = a.on_reply(Reply::Retry {
            needed: vs(&[s, x, "z"]),
            local: vs(&[s]),
        });
        assert_eq!(w.located(s), None, "the answering partition is not known");
        assert_eq!(w.located(x), None);
        assert_eq!((a.needed.clone(), a.attempt), (vs(&[s, x, "z"]), 1));
        assert_eq!(consult(step), (vs(&[s, x]), vs(&["z"])));
        assert_eq!(w.stats.snapshot().retries, 1);
    }

    /// Sets up `x` settled in partition 2 (two neighbours there) and `s` in partition 1 with
    /// three neighbours there: a command over both goes to 1 and leaves `x` where it is.
    fn settled_pair(w: &World) -> (&'static str, &'static str) {
        let affinity = w.cache.affinity();
        for n in ["m1", "m2", "m3"] {
            affinity.record(&[v("s")], &[v("s"), v(n)]);
            w.cached(1, &[n]);
        }
        for n in ["n1", "n2"] {
            affinity.record(&[v("x")], &[v("x"), v(n)]);
            w.cached(2, &[n]);
        }
        w.cached(1, &["s"]);
        w.cached(2, &["x"]);
        ("s", "x")
    }

    #[test]
    fn a_settled_variable_stays_and_the_command_runs_spread_under_affinity() {
        let w = World::new(&[1, 2]);
        let (s, x) = settled_pair(&w);
        let mut a = w.access(write(&[s, x]), dssmr(DestinationPolicy::Affinity, 3));
        let (dests, execution) = run(a.start());
        assert_eq!(dests, vec![g(1), g(2)]);
        assert_eq!(
            execution,
            Execution::Spread {
                needed: vs(&[s, x])
            }
        );
        assert_eq!(done(a.on_reply(Reply::Done(vec![7]))), vec![7]);
        let st = w.stats.snapshot();
        assert_eq!((st.spreads, st.moves), (1, 0));
        // Without the neighbourhood, x would have moved to 1.
        let w = World::new(&[1, 2]);
        w.cached(1, &["s"]);
        w.cached(2, &["x"]);
        let mut a = w.access(write(&[s, x]), dssmr(DestinationPolicy::Affinity, 3));
        assert_eq!(moves(a.start()), (g(1), vec![(g(2), vs(&["x"]))]));
    }

    #[test]
    fn after_retry_threshold_retries_the_command_falls_back_to_ssmr() {
        let w = World::new(&[1, 2, 3]);
        w.cached(1, &["a"]);
        let retry = || Reply::Retry {
            needed: vs(&["a"]),
            local: vs(&["a"]),
        };
        let mut a = w.access(write(&["a"]), dssmr(DestinationPolicy::Random, 2));
        assert_eq!(run(a.start()), local(1));
        assert_eq!(run(a.on_reply(retry())), local(1));
        let all = (vec![g(1), g(2), g(3)], Execution::Exchange);
        assert_eq!(run(a.on_reply(retry())), all);
        assert_eq!(done(a.on_reply(Reply::Done(vec![1]))), vec![1]);
        let s = w.stats.snapshot();
        assert_eq!((s.retries, s.fallbacks), (2, 1));
        // An exchange never asks to retry.
        let mut a = w.access(write(&["a"]), dssmr(DestinationPolicy::Random, 0));
        assert_eq!(run(a.start()), all);
        let step = a.on_reply(retry());
        assert!(
            matches!(step, Step::Fail(ProxyError::Rejected(_))),
            "{step:?}"
        );
    }

    #[test]
    fn a_cached_location_in_a_partition_gone_from_the_topology_is_forgotten_and_consulted() {
        let w = World::new(&[1, 2, 3]);
        w.cached(3, &["a"]);
        w.cached(1, &["b"]);
        w.view.remove(3);
        let mut a = w.access(write(&["a", "b"]), dssmr(DestinationPolicy::Random, 3));
        assert_eq!(consult(a.start()), (vs(&["a", "b"]), vec![]));
        assert_eq!((w.located("a"), w.located("b")), (None, None));
        assert_eq!(w.stats.snapshot().cache_misses, 1);
    }

    #[test]
    fn a_stale_destination_refreshes_forgets_and_runs_again_until_the_error_surfaces() {
        let w = World::new(&[1, 2]);
        w.cached(1, &["a"]);
        let mut a = w.access(write(&["a"]), dssmr(DestinationPolicy::Random, 3));
        assert_eq!(run(a.start()), local(1));
        for _ in 0..STALE_RETRIES {
            let step = a.on_error(ProxyError::Stale("p1 is gone".into()));
            assert!(matches!(step, Step::Refresh), "{step:?}");
            // The cache forgot a: the run starts over with a consult.
            assert_eq!(consult(a.on_refreshed()), (vs(&["a"]), vec![]));
            assert_eq!(run(a.on_prophecy(at(&[("a", 1)]))), local(1));
        }
        let step = a.on_error(ProxyError::Stale("p1 is gone".into()));
        assert!(matches!(step, Step::Fail(ProxyError::Stale(_))), "{step:?}");
        let s = w.stats.snapshot();
        assert_eq!(
            (s.cache_hits, s.cache_misses),
            (1, u64::from(STALE_RETRIES))
        );
    }

    #[test]
    fn a_read_left_unanswered_runs_again_only_if_the_topology_moved_on() {
        let w = World::new(&[1, 2]);
        w.cached(2, &["a"]);
        let read = || Request {
            read_only: true,
            ..write(&["a"])
        };
        let mut r = w.access(read(), dssmr(DestinationPolicy::Random, 3));
        assert_eq!(run(r.start()), local(2));
        assert!(matches!(r.on_error(timeout()), Step::Refresh));
        w.view.remove(2);
        assert_eq!(consult(r.on_refreshed()), (vs(&["a"]), vec![]));
        assert_eq!(run(r.on_prophecy(at(&[("a", 1)]))), local(1));
        // Asked again: at once, with no refresh.
        assert_eq!(
            run(r.on_error(ProxyError::AskAgain("gone".into()))),
            local(1)
        );
        // Unanswered with the topology as it was: the failure stands.
        assert!(matches!(r.on_error(timeout()), Step::Refresh));
        let step = r.on_refreshed();
        assert!(
            matches!(step, Step::Fail(ProxyError::Indeterminate(_))),
            "{step:?}"
        );
        // A write left unanswered may have taken effect: never run again.
        let mut a = w.access(write(&["a"]), dssmr(DestinationPolicy::Random, 3));
        run(a.start());
        let step = a.on_error(timeout());
        assert!(
            matches!(step, Step::Fail(ProxyError::Indeterminate(_))),
            "{step:?}"
        );
    }

    #[test]
    fn dependency_hints_are_remembered_on_retry_and_used_by_the_next_command() {
        let w = World::new(&[1, 2]);
        w.cached(1, &["p"]);
        let post = || Request {
            may_have_dependencies: true,
            ..write(&["p"])
        };
        let policy = dssmr(DestinationPolicy::Majority, 3);
        let mut a = w.access(post(), policy);
        assert_eq!(run(a.start()), local(1));
        // Partition 1 holds the poster but not the follower f.
        let step = a.on_reply(Reply::Retry {
            needed: vs(&["f", "p"]),
            local: vs(&["p"]),
        });
        assert_eq!(consult(step), (vs(&["p"]), vs(&["f"])));
        let step = a.on_prophecy(at(&[("f", 2), ("p", 1)]));
        assert_eq!(moves(step), (g(1), vec![(g(2), vs(&["f"]))]));
        assert_eq!(run(a.on_moved(vec![Ok(())])), local(1));
        // The next post needs f from the start, and finds it cached.
        let mut b = w.access(post(), policy);
        assert_eq!(run(b.start()), local(1));
        assert_eq!(b.needed, vs(&["f", "p"]));
        // A command that cannot have dependencies ignores the hint.
        let mut c = w.access(write(&["p"]), policy);
        run(c.start());
        assert_eq!(c.needed, vs(&["p"]));
    }

    #[test]
    fn a_command_without_variables_runs_at_any_partition() {
        let w = World::new(&[1, 2, 3]);
        let mut a = w.access(write(&[]), dssmr(DestinationPolicy::Random, 3));
        a.choose = Pick::Highest;
        assert_eq!(run(a.start()), local(3));
    }

    #[test]
    fn ssmr_runs_over_the_static_placement_and_again_after_a_stale_destination() {
        let w = World::new(&[1, 2, 3]);
        let ssmr = Policy {
            mode: Mode::Ssmr,
            ..dssmr(DestinationPolicy::Random, 3)
        };
        let mut a = w.access(write(&["a", "z"]), ssmr);
        assert_eq!(run(a.start()), (vec![g(1), g(3)], Execution::Exchange));
        assert!(matches!(
            a.on_error(ProxyError::Stale("p3".into())),
            Step::Refresh
        ));
        w.view.remove(3);
        assert_eq!(
            run(a.on_refreshed()),
            (vec![g(1), g(2)], Execution::Exchange)
        );
        let deps = Request {
            may_have_dependencies: true,
            ..write(&["a"])
        };
        let mut b = w.access(deps, ssmr);
        assert_eq!(run(b.start()), (vec![g(1), g(2)], Execution::Exchange));
        let mut c = w.access(write(&[]), ssmr);
        assert_eq!(run(c.start()), (vec![g(1)], Execution::Exchange));
        assert_eq!(w.stats.snapshot().consults, 0);
    }

    #[test]
    fn an_event_out_of_turn_ends_the_command() {
        let w = World::new(&[1]);
        w.cached(1, &["a"]);
        let mut a = w.access(write(&["a"]), dssmr(DestinationPolicy::Random, 3));
        run(a.start());
        let step = a.on_prophecy(at(&[("a", 1)]));
        assert!(
            matches!(step, Step::Fail(ProxyError::Rejected(_))),
            "{step:?}"
        );
        let step = a.on_reply(Reply::Done(Vec::new()));
        assert!(
            matches!(step, Step::Fail(ProxyError::Rejected(_))),
            "{step:?}"
        );
    }
}
