//! The partition server proxy: Algorithm 3 (DS-SMR) and Algorithm 1 (S-SMR) over the
//! variables one partition holds.
//!
//! A partition executes delivered commands strictly in delivery order. Some commands must wait
//! for a message from another group before they can finish (a moved variable's value, the
//! oracle's create decision, the S-SMR exchange with the other partitions); while the head of
//! the queue waits, later commands queue behind it. Waiting is part of the replicated state:
//! deliveries and channel messages both come through the group's log, so every replica blocks
//! and resumes at the same point. Atomic multicast orders commands acyclically across groups,
//! and the oracle never waits, so some head can always proceed: there is no deadlock.
//!
//! What a partition does with the head of its queue:
//! * `access(ω)`, [`Execution::Local`]: runs it if ω and its dependencies are all local, else
//!   answers `retry` with γ and the part of γ it holds;
//! * `access(ω)`, [`Execution::Exchange`]: sends the values of its local variables of ω to the
//!   other destinations, waits for theirs, runs the command on the union, keeps only the
//!   updates of its own variables;
//! * `access(ω)`, [`Execution::Spread`]: the same, but each destination also reports which
//!   needed variables it holds, and all answer `retry` unless together they hold ω and every
//!   dependency;
//! * `move(V, Ps, Pd)`: the source sends the values it holds and forgets them; the destination
//!   waits for them and takes them in;
//! * `create(v)`: waits for the oracle's decision (DS-SMR) or decides itself (S-SMR);
//! * `delete(v)`: forgets `v` if it holds it;
//! * an administrative command (a partition added, drained or removed): waits for the
//!   oracle's decision and takes the partitions' [`Lifecycle`] it carries.
//!
//! Every destination first checks that a delivered command goes where its kind goes and
//! that what it carries decodes ([`Command::check_destinations`]; the oracle checks the
//! same): one that does not is answered `rejected` at once, never queued.
//!
//! Every destination of a move judges it against its copy of the [`Lifecycle`] (a move into a
//! partition that takes no variables, out of one that holds none, or not sent to the oracle
//! and its two partitions is refused by all of them alike: nothing is sent, nobody waits),
//! and a partition whose lifecycle says it was removed refuses every such command.

use crate::app::state_machine::ReadOnly;
use crate::app::{Actions, Application, InvalidCommand, RestoreError, StateMachine, Store};
use crate::command::{decode, encode, Command, Execution, Reply, Transfer};
use crate::ids::{GroupId, MsgId, VarId, ORACLE};
use crate::lifecycle::Lifecycle;
use crate::mode::Mode;
use crate::multicast::McastMessage;
use crate::stats::{AppStats, CommandCounts, CommandKind, CommandOutcome};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Which rules a partition follows. Anything but [`PartitionRule::Correct`] is BROKEN on
/// purpose, so that tests can show their checkers catch a faulty engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PartitionRule {
    /// Algorithms 1 and 3 as specified.
    #[default]
    Correct,
    /// BROKEN: run `access(ω)` even when some variables are not local (skips Algorithm 3,
    /// line 6).
    SkipLocalityCheck,
    /// BROKEN: the source of a move sends the values but keeps its copies (skips Algorithm 3,
    /// line 15), so a variable can live in two partitions.
    KeepMovedCopy,
}

/// A delivered command waiting for its turn (or for a message from another group).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Queued {
    id: MsgId,
    ts: u64,
    dests: Vec<GroupId>,
    cmd: Command,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(bound(serialize = "V: Serialize", deserialize = "V: DeserializeOwned"))]
struct PartitionState<V> {
    vars: HashMap<VarId, V>,
    queue: VecDeque<Queued>,
    /// rcvd_msgs: channel messages per command, kept until the command finishes.
    inbox: HashMap<MsgId, Vec<(GroupId, Transfer)>>,
    /// Whether the head of the queue has sent what it must send.
    head_started: bool,
    /// The partitions' lifecycle as of the last administrative command delivered here.
    lifecycle: Lifecycle,
}

/// Counters of what a partition did (replicated, so every replica counts the same).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartitionCounters {
    /// Access commands executed here.
    pub executed: u64,
    /// Access commands answered with retry.
    pub retries: u64,
    /// Variables moved in.
    pub moved_in: u64,
    /// Variables moved out.
    pub moved_out: u64,
    /// Finished commands by kind and outcome.
    pub commands: CommandCounts,
}

/// Store over the local variables plus values received from other partitions; updates to
/// received values are scratch and vanish with the overlay.
struct Overlay<'a, V> {
    local: &'a mut HashMap<VarId, V>,
    remote: HashMap<VarId, V>,
}

impl<V> Store<V> for Overlay<'_, V> {
    fn get(&self, v: &VarId) -> Option<&V> {
        self.local.get(v).or_else(|| self.remote.get(v))
    }

    fn get_mut(&mut self, v: &VarId) -> Option<&mut V> {
        match self.local.get_mut(v) {
            Some(x) => Some(x),
            None => self.remote.get_mut(v),
        }
    }
}

/// The server proxy of one partition running application `A`.
pub struct Partition<A: StateMachine> {
    me: GroupId,
    /// DS-SMR (with an oracle) or S-SMR: from the cluster's config, the same at every
    /// replica; it decides where creates and deletes must go.
    mode: Mode,
    rule: PartitionRule,
    app: Arc<A>,
    state: PartitionState<A::Value>,
    counters: PartitionCounters,
}

enum Step {
    Finished(Reply),
    Blocked,
}

impl<A: StateMachine> Partition<A> {
    /// Partition `me` of a DS-SMR cluster, empty, running `app`, in a cluster whose initial
    /// partitions (its config's `initialPartitions`, the same at every replica and every
    /// start) are `initial`.
    pub fn new(me: GroupId, app: Arc<A>, initial: &[GroupId]) -> Self {
        Partition {
            me,
            mode: Mode::Dssmr,
            rule: PartitionRule::Correct,
            app,
            state: PartitionState {
                vars: HashMap::new(),
                queue: VecDeque::new(),
                inbox: HashMap::new(),
                head_started: false,
                lifecycle: Lifecycle::initial(initial),
            },
            counters: PartitionCounters::default(),
        }
    }

    /// The same partition in a cluster run in `mode` (S-SMR: no oracle).
    pub fn in_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The same partition following `rule` (tests of the checkers only).
    pub(crate) fn with_rule(mut self, rule: PartitionRule) -> Self {
        self.rule = rule;
        self
    }

    /// The variables held here.
    pub fn vars(&self) -> &HashMap<VarId, A::Value> {
        &self.state.vars
    }

    /// Commands delivered and not finished (the head may be waiting for another group).
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.state.queue.len()
    }

    /// What this partition did so far.
    #[cfg(test)]
    fn counters(&self) -> PartitionCounters {
        self.counters
    }

    /// Runs queued commands until the queue is empty or its head must wait.
    fn pump(&mut self, actions: &mut Actions) {
        while let Some(head) = self.state.queue.front().cloned() {
            if !self.state.head_started {
                self.start(&head, actions);
                self.state.head_started = true;
            }
            match self.finish(&head) {
                Step::Blocked => return,
                Step::Finished(reply) => {
                    let (kind, outcome) = (CommandKind::of(&head.cmd), CommandOutcome::of(&reply));
                    tracing::debug!(
                        group = %self.me,
                        msg = %head.id,
                        kind = kind.name(),
                        outcome = outcome.name(),
                        "executed"
                    );
                    self.counters.commands.add(kind, outcome);
                    self.state.queue.pop_front();
                    self.state.inbox.remove(&head.id);
                    self.state.head_started = false;
                    if self.is_read(&head.cmd) {
                        actions.reply_to_read(head.id, head.ts, encode(&reply));
                    } else {
                        actions.reply(head.id, head.ts, encode(&reply));
                    }
                }
            }
        }
    }

    /// Sends what the head must send when its turn comes (values as of this point).
    fn start(&mut self, head: &Queued, actions: &mut Actions) {
        match &head.cmd {
            Command::Access { cmd, execution } if *execution != Execution::Local => {
                let others = self.others(head);
                if others.is_empty() {
                    // A single destination (S-SMR on one partition) exchanges nothing.
                    return;
                }
                let Ok(cmd) = decode::<A::Command>(cmd, "application command") else {
                    return;
                };
                let omega = self.app.variables(&cmd);
                let values: Vec<(VarId, Vec<u8>)> = omega
                    .iter()
                    .filter_map(|v| self.state.vars.get(v).map(|x| (v.clone(), encode(x))))
                    .collect();
                let held = match execution {
                    Execution::Spread { needed } => self.held(&omega, needed),
                    _ => Vec::new(),
                };
                let t = encode(&Transfer::Exchange {
                    cmd: head.id,
                    values,
                    held,
                });
                for g in others {
                    actions.send(g, t.clone());
                }
            }
            Command::Move { vars, from, to }
                if *from == self.me
                    && *to != self.me
                    && self
                        .state
                        .lifecycle
                        .check_move(*from, *to, &head.dests)
                        .is_ok() =>
            {
                let keep = self.rule == PartitionRule::KeepMovedCopy;
                let values: Vec<(VarId, Vec<u8>)> = vars
                    .iter()
                    .filter_map(|v| {
                        let x = if keep {
                            self.state.vars.get(v).cloned()
                        } else {
                            self.state.vars.remove(v)
                        };
                        x.map(|x| (v.clone(), encode(&x)))
                    })
                    .collect();
                self.counters.moved_out += values.len() as u64;
                actions.send(
                    *to,
                    encode(&Transfer::MoveValues {
                        cmd: head.id,
                        values,
                    }),
                );
            }
            _ => {}
        }
    }

    /// The other partitions among the head's destinations.
    fn others(&self, head: &Queued) -> Vec<GroupId> {
        head.dests
            .iter()
            .copied()
            .filter(|g| *g != self.me && *g != ORACLE)
            .collect()
    }

    /// The variables of `omega` and `needed` held here, sorted (what a spread reports).
    fn held(&self, omega: &[VarId], needed: &[VarId]) -> Vec<VarId> {
        let mut held: Vec<VarId> = omega
            .iter()
            .chain(needed)
            .filter(|v| self.state.vars.contains_key(*v))
            .cloned()
            .collect();
        held.sort();
        held.dedup();
        held
    }

    fn received(&self, id: MsgId) -> &[(GroupId, Transfer)] {
        self.state.inbox.get(&id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Finishes the head if it has everything it needs.
    fn finish(&mut self, head: &Queued) -> Step {
        match &head.cmd {
            Command::Access { cmd, execution } => {
                let cmd = match decode::<A::Command>(cmd, "application command") {
                    Ok(c) => c,
                    Err(e) => return Step::Finished(Reply::Rejected(e.to_string())),
                };
                match execution {
                    Execution::Local => Step::Finished(self.execute_local(&cmd)),
                    Execution::Exchange => self.execute_exchanged(head, &cmd, None),
                    Execution::Spread { needed } => {
                        self.execute_exchanged(head, &cmd, Some(needed))
                    }
                }
            }
            Command::Move { from, to, .. } => {
                if let Err(refusal) = self.state.lifecycle.check_move(*from, *to, &head.dests) {
                    return Step::Finished(Reply::Refused(refusal));
                }
                if *to != self.me || *from == self.me {
                    return Step::Finished(Reply::Ok);
                }
                let values = self.received(head.id).iter().find_map(|(g, t)| match t {
                    Transfer::MoveValues { values, .. } if g == from => Some(values.clone()),
                    _ => None,
                });
                let Some(values) = values else {
                    return Step::Blocked;
                };
                for (v, bytes) in values {
                    match decode::<A::Value>(&bytes, "moved value") {
                        Ok(x) => {
                            self.state.vars.insert(v, x);
                            self.counters.moved_in += 1;
                        }
                        Err(e) => tracing::error!(partition = %self.me, var = %v, error = %e,
                            "moved value does not decode; variable dropped"),
                    }
                }
                Step::Finished(Reply::Ok)
            }
            Command::Create { var, value } => {
                let ok = if head.dests.contains(&ORACLE) {
                    let decision = self.received(head.id).iter().find_map(|(g, t)| match t {
                        Transfer::CreateDecision { outcome, .. } if *g == ORACLE => {
                            Some(outcome.clone())
                        }
                        _ => None,
                    });
                    match decision {
                        Some(Ok(ok)) => ok,
                        Some(Err(refusal)) => return Step::Finished(Reply::Refused(refusal)),
                        None => return Step::Blocked,
                    }
                } else {
                    !self.state.vars.contains_key(var)
                };
                if !ok {
                    return Step::Finished(Reply::Nok);
                }
                match decode::<A::Value>(value, "initial value") {
                    Ok(x) => {
                        self.state.vars.entry(var.clone()).or_insert(x);
                        Step::Finished(Reply::Ok)
                    }
                    Err(e) => Step::Finished(Reply::Rejected(e.to_string())),
                }
            }
            Command::Delete { var } => {
                self.state.vars.remove(var);
                Step::Finished(Reply::Ok)
            }
            Command::Consult { .. } => Step::Finished(Reply::Rejected(
                "consults go to the oracle, not to partitions".into(),
            )),
            Command::Admin(_) => {
                if !head.dests.contains(&ORACLE) {
                    return Step::Finished(Reply::Rejected(
                        "administrative commands go to the oracle and every partition".into(),
                    ));
                }
                let decision = self.received(head.id).iter().find_map(|(g, t)| match t {
                    Transfer::TopologyDecision { outcome, .. } if *g == ORACLE => {
                        Some(outcome.clone())
                    }
                    _ => None,
                });
                match decision {
                    None => Step::Blocked,
                    Some(Ok(lifecycle)) => {
                        tracing::info!(partition = %self.me, version = lifecycle.version(),
                            "partitions' lifecycle changed");
                        self.state.lifecycle = lifecycle;
                        Step::Finished(Reply::Ok)
                    }
                    Some(Err(refusal)) => Step::Finished(Reply::Refused(refusal)),
                }
            }
        }
    }

    /// Whether `cmd`, delivered to `dests`, is one every destination takes: where it goes
    /// ([`Command::check_destinations`]) and whether what it carries decodes. The oracle
    /// runs the same checks on the same message (it decodes a create's value too), so they
    /// refuse alike, and a refused command waits for no one.
    fn check(&self, cmd: &Command, dests: &[GroupId]) -> Result<(), InvalidCommand> {
        cmd.check_destinations(dests, self.mode)
            .map_err(InvalidCommand::Misdirected)?;
        match cmd {
            Command::Access { cmd, .. } => {
                decode::<A::Command>(cmd, "application command")?;
            }
            Command::Create { value, .. } => {
                decode::<A::Value>(value, "initial value")?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Algorithm 3, lines 5–10.
    fn execute_local(&mut self, cmd: &A::Command) -> Reply {
        let vars = &self.state.vars;
        let mut needed = self.app.variables(cmd);
        if self.rule == PartitionRule::SkipLocalityCheck {
            let reply = self.app.execute(cmd, &mut self.state.vars);
            self.counters.executed += 1;
            return Reply::Done(encode(&reply));
        }
        let omega_local = needed.iter().all(|v| vars.contains_key(v));
        if omega_local {
            needed.extend(self.app.dependencies(cmd, vars));
            if needed.iter().all(|v| vars.contains_key(v)) {
                let reply = self.app.execute(cmd, &mut self.state.vars);
                self.counters.executed += 1;
                return Reply::Done(encode(&reply));
            }
        }
        needed.sort();
        needed.dedup();
        let local = needed
            .iter()
            .filter(|v| vars.contains_key(v))
            .cloned()
            .collect();
        self.counters.retries += 1;
        Reply::Retry { needed, local }
    }

    /// The application command of `msg` when it is a read-only access that this partition
    /// alone runs, exactly as a local execution would (DS-SMR's local access, or S-SMR's
    /// access to one partition, which exchanges nothing).
    fn read_only_command(&self, msg: &McastMessage) -> Option<A::Command> {
        if msg.dests != [self.me] || self.rule != PartitionRule::Correct {
            return None;
        }
        match decode::<Command>(&msg.payload, "command").ok()? {
            Command::Access {
                cmd,
                execution: Execution::Local | Execution::Exchange,
            } => {
                let cmd = decode::<A::Command>(&cmd, "application command").ok()?;
                self.app.is_read_only(&cmd).then_some(cmd)
            }
            _ => None,
        }
    }

    /// True for an access whose application command only reads: its reply is not kept.
    fn is_read(&self, cmd: &Command) -> bool {
        match cmd {
            Command::Access { cmd, .. } => decode::<A::Command>(cmd, "application command")
                .is_ok_and(|c| self.app.is_read_only(&c)),
            _ => false,
        }
    }

    /// True when a delivered command that has not finished may touch one of `vars`: a read
    /// of them now could miss what it writes once it runs (an exchange whose other
    /// destinations have already answered, say).
    fn queue_touches(&self, vars: &[VarId]) -> bool {
        let named = |v: &VarId| vars.contains(v);
        self.state.queue.iter().any(|q| match &q.cmd {
            Command::Access { cmd, .. } => {
                let Ok(cmd) = decode::<A::Command>(cmd, "application command") else {
                    return true;
                };
                let omega = self.app.variables(&cmd);
                if omega.iter().any(named) {
                    return true;
                }
                self.app.may_have_dependencies(&cmd)
                    && (!omega.iter().all(|v| self.state.vars.contains_key(v))
                        || self
                            .app
                            .dependencies(&cmd, &self.state.vars)
                            .iter()
                            .any(named))
            }
            Command::Move { vars: moved, .. } => moved.iter().any(named),
            Command::Create { var, .. } | Command::Delete { var } => named(var),
            Command::Consult { .. } | Command::Admin(_) => false,
        })
    }

    /// Algorithm 1: execution with variable exchange and signals.
    /// With `spread` (the proxy's `needed`), the destinations run the command only if
    /// together they hold ω and every dependency, judged from the reported `held` lists alone
    /// so that every destination decides the same; otherwise all answer `retry`.
    fn execute_exchanged(
        &mut self,
        head: &Queued,
        cmd: &A::Command,
        spread: Option<&Vec<VarId>>,
    ) -> Step {
        let others = self.others(head);
        let omega = self.app.variables(cmd);
        let mut covered: Vec<VarId> = match spread {
            Some(needed) => self.held(&omega, needed),
            None => Vec::new(),
        };
        let mut remote: HashMap<VarId, A::Value> = HashMap::new();
        for g in &others {
            let got = self.received(head.id).iter().find_map(|(from, t)| match t {
                Transfer::Exchange { values, held, .. } if from == g => Some((values, held)),
                _ => None,
            });
            let Some((values, held)) = got else {
                return Step::Blocked;
            };
            covered.extend(held.iter().cloned());
            for (v, bytes) in values {
                match decode::<A::Value>(bytes, "exchanged value") {
                    Ok(x) => {
                        remote.insert(v.clone(), x);
                    }
                    Err(e) => {
                        return Step::Finished(Reply::Rejected(format!(
                            "variable {v} from {g}: {e}"
                        )))
                    }
                }
            }
        }
        let mut store = Overlay {
            local: &mut self.state.vars,
            remote,
        };
        if spread.is_some() {
            covered.sort();
            covered.dedup();
            let mut needed = omega.clone();
            if omega.iter().all(|v| store.get(v).is_some()) {
                needed.extend(self.app.dependencies(cmd, &store));
            }
            needed.sort();
            needed.dedup();
            if needed.iter().any(|v| covered.binary_search(v).is_err()) {
                let local = needed
                    .iter()
                    .filter(|v| store.local.contains_key(*v))
                    .cloned()
                    .collect();
                self.counters.retries += 1;
                return Step::Finished(Reply::Retry { needed, local });
            }
        }
        let mut missing: Vec<VarId> = omega
            .into_iter()
            .filter(|v| store.get(v).is_none())
            .collect();
        let reply = if missing.is_empty() {
            self.counters.executed += 1;
            self.app.execute(cmd, &mut store)
        } else {
            missing.sort();
            missing.dedup();
            self.app.missing(cmd, &missing)
        };
        Step::Finished(Reply::Done(encode(&reply)))
    }
}

impl<A: StateMachine> Application for Partition<A> {
    #[tracing::instrument(
        level = "debug",
        name = "deliver",
        skip_all,
        fields(group = %self.me, msg = %msg.id, ts)
    )]
    fn deliver(&mut self, msg: &McastMessage, ts: u64, actions: &mut Actions) {
        let checked = decode::<Command>(&msg.payload, "command")
            .map_err(|e| (CommandKind::Access, InvalidCommand::from(e)))
            .and_then(|cmd| match self.check(&cmd, &msg.dests) {
                Ok(()) => Ok(cmd),
                Err(e) => Err((CommandKind::of(&cmd), e)),
            });
        match checked {
            Ok(cmd) => {
                self.state.queue.push_back(Queued {
                    id: msg.id,
                    ts,
                    dests: msg.dests.clone(),
                    cmd,
                });
                self.pump(actions);
            }
            Err((kind, e)) => {
                // Refused by every destination alike, without waiting or effect (the
                // command is not queued: nothing runs behind it).
                tracing::debug!(group = %self.me, msg = %msg.id, error = %e, "rejected");
                self.counters.commands.add(kind, CommandOutcome::Rejected);
                actions.reply(msg.id, ts, encode(&Reply::Rejected(e.to_string())))
            }
        }
    }

    fn stats(&self) -> AppStats {
        AppStats {
            commands: self.counters.commands,
            moves_in: self.counters.moved_in,
            variables: Some(self.state.vars.len() as u64),
            queued: self.state.queue.len() as u64,
            placement: Vec::new(),
        }
    }

    fn validate(&self, msg: &McastMessage) -> Result<(), InvalidCommand> {
        let cmd = decode::<Command>(&msg.payload, "command")?;
        self.check(&cmd, &msg.dests)
    }

    fn reads_only(&self, msg: &McastMessage) -> bool {
        self.read_only_command(msg).is_some()
    }

    /// A read-only access runs off the log when every variable it needs (ω and its
    /// dependencies) is here and no unfinished command touches them; what it returns is
    /// what its delivery now would return.
    fn query(&self, msg: &McastMessage) -> Option<Vec<u8>> {
        let cmd = self.read_only_command(msg)?;
        let vars = &self.state.vars;
        let mut needed = self.app.variables(&cmd);
        if !needed.iter().all(|v| vars.contains_key(v)) {
            return None;
        }
        needed.extend(self.app.dependencies(&cmd, vars));
        if !needed.iter().all(|v| vars.contains_key(v)) || self.queue_touches(&needed) {
            return None;
        }
        let reply = self.app.execute(&cmd, &mut ReadOnly(vars));
        Some(encode(&Reply::Done(encode(&reply))))
    }

    fn lifecycle(&self) -> Option<&Lifecycle> {
        Some(&self.state.lifecycle)
    }

    fn receive(&mut self, from: GroupId, payload: &[u8], actions: &mut Actions) {
        match decode::<Transfer>(payload, "transfer") {
            Ok(t) => {
                self.state.inbox.entry(t.cmd()).or_default().push((from, t));
                self.pump(actions);
            }
            Err(e) => {
                tracing::error!(partition = %self.me, %from, error = %e, "dropped undecodable channel message")
            }
        }
    }

    fn describe(&self) -> String {
        let head = self.state.queue.front().map(|q| {
            let kind = match &q.cmd {
                Command::Consult { .. } => "consult".to_string(),
                Command::Admin(op) => format!("admin {op:?}"),
                Command::Access { execution, .. } => format!("access/{execution:?}"),
                Command::Move { from, to, vars } => format!("move {} {from}->{to}", vars.len()),
                Command::Create { var, .. } => format!("create {var}"),
                Command::Delete { var } => format!("delete {var}"),
            };
            let got: Vec<String> = self
                .received(q.id)
                .iter()
                .map(|(g, _)| g.to_string())
                .collect();
            format!(
                "head {} {kind} dests {:?} started {} received from {got:?}",
                q.id, q.dests, self.state.head_started
            )
        });
        format!(
            "{} vars, {} queued{}",
            self.state.vars.len(),
            self.state.queue.len(),
            head.map(|h| format!(", {h}")).unwrap_or_default()
        )
    }

    fn snapshot(&self) -> Vec<u8> {
        encode(&(&self.state, &self.counters))
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        let (state, counters): (PartitionState<A::Value>, PartitionCounters) =
            postcard::from_bytes(snapshot)?;
        self.state = state;
        self.counters = counters;
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::kv::{kv_var, Kv, KvCommand, KvReply};

    fn partition(me: u32) -> Partition<Kv> {
        Partition::new(
            GroupId(me),
            Arc::new(Kv),
            &[GroupId(1), GroupId(2), GroupId(3)],
        )
    }

    fn msg(seq: u64, dests: &[u32], cmd: &Command) -> McastMessage {
        McastMessage::new(
            MsgId { sender: 9, seq },
            dests.iter().map(|g| GroupId(*g)).collect(),
            encode(cmd),
        )
    }

    fn replies(a: &mut Actions) -> Vec<(u64, Reply)> {
        a.drain_replies()
            .map(|(id, _, r, _)| (id.seq, decode(&r, "reply").unwrap()))
            .collect()
    }

    /// Creates `key` in `p` as DS-SMR does: to the oracle and `p`, which says yes.
    fn create(p: &mut Partition<Kv>, seq: u64, key: &str, v: i64) {
        let c = Command::Create {
            var: kv_var(key),
            value: encode(&v),
        };
        let mut a = Actions::default();
        let m = msg(seq, &[0, p.me.0], &c);
        p.deliver(&m, seq, &mut a);
        let decision = Transfer::CreateDecision {
            cmd: m.id,
            outcome: Ok(true),
        };
        p.receive(ORACLE, &encode(&decision), &mut a);
        assert_eq!(replies(&mut a), vec![(seq, Reply::Ok)]);
    }

    fn access(cmd: &KvCommand, execution: Execution) -> Command {
        Command::Access {
            cmd: encode(cmd),
            execution,
        }
    }

    fn done(r: &Reply) -> KvReply {
        match r {
            Reply::Done(b) => decode(b, "kv reply").unwrap(),
            other => panic!("expected done, got {other:?}"),
        }
    }

    #[test]
    fn local_access_runs_only_when_every_variable_is_here() {
        let mut p = partition(1);
        create(&mut p, 0, "a", 5);
        let get_a = access(&KvCommand::Get { key: "a".into() }, Execution::Local);
        let mut a = Actions::default();
        p.deliver(&msg(1, &[1], &get_a), 1, &mut a);
        assert_eq!(done(&replies(&mut a)[0].1), KvReply::Value(5));
        let t = KvCommand::Transfer {
            from: "a".into(),
            to: "b".into(),
            amount: 1,
        };
        p.deliver(&msg(2, &[1], &access(&t, Execution::Local)), 2, &mut a);
        assert_eq!(
            replies(&mut a),
            vec![(
                2,
                Reply::Retry {
                    needed: vec![kv_var("a"), kv_var("b")],
                    local: vec![kv_var("a")],
                }
            )]
        );
        assert_eq!(p.counters().retries, 1);
    }

    #[test]
    fn move_destination_waits_for_the_values_and_blocks_later_commands() {
        let (mut src, mut dst) = (partition(1), partition(2));
        create(&mut src, 0, "a", 7);
        let mv = Command::Move {
            vars: vec![kv_var("a")],
            from: GroupId(1),
            to: GroupId(2),
        };
        let m = msg(1, &[0, 1, 2], &mv);
        let (mut sa, mut da) = (Actions::default(), Actions::default());
        // The destination delivers first: it must wait, and so must the get behind it.
        dst.deliver(&m, 1, &mut da);
        let get_a = access(&KvCommand::Get { key: "a".into() }, Execution::Local);
        dst.deliver(&msg(2, &[2], &get_a), 2, &mut da);
        assert!(replies(&mut da).is_empty());
        assert_eq!(dst.queued(), 2);
        // The source sends the value and forgets it.
        src.deliver(&m, 1, &mut sa);
        assert_eq!(replies(&mut sa), vec![(1, Reply::Ok)]);
        assert!(src.vars().is_empty());
        let sends: Vec<_> = sa.drain_sends().collect();
        assert_eq!(sends.len(), 1);
        dst.receive(GroupId(1), &sends[0].1, &mut da);
        let r = replies(&mut da);
        assert_eq!(r[0], (1, Reply::Ok));
        assert_eq!(done(&r[1].1), KvReply::Value(7));
        assert_eq!(dst.queued(), 0);
    }

    #[test]
    fn exchange_runs_on_the_union_and_keeps_only_local_updates() {
        let (mut p1, mut p2) = (partition(1), partition(2));
        create(&mut p1, 0, "a", 10);
        create(&mut p2, 1, "b", 0);
        let t = KvCommand::Transfer {
            from: "a".into(),
            to: "b".into(),
            amount: 4,
        };
        let m = msg(2, &[1, 2], &access(&t, Execution::Exchange));
        let [r1, r2] = exchange_both(&mut p1, &mut p2, &m);
        assert_eq!(done(&r1[0].1), KvReply::Transfer(true));
        assert_eq!(done(&r2[0].1), KvReply::Transfer(true));
        assert_eq!(p1.vars()[&kv_var("a")], 6);
        assert_eq!(p2.vars()[&kv_var("b")], 4);
        assert!(
            !p1.vars().contains_key(&kv_var("b")),
            "remote values stay remote"
        );
    }

    /// Delivers `m` at both partitions (neither answers before it has the other's signal),
    /// swaps their exchange messages, and returns what each answered.
    fn exchange_both(
        p1: &mut Partition<Kv>,
        p2: &mut Partition<Kv>,
        m: &McastMessage,
    ) -> [Vec<(u64, Reply)>; 2] {
        let (mut a1, mut a2) = (Actions::default(), Actions::default());
        p1.deliver(m, 5, &mut a1);
        p2.deliver(m, 5, &mut a2);
        assert!(replies(&mut a1).is_empty(), "waits for the other's signal");
        assert!(replies(&mut a2).is_empty(), "waits for the other's signal");
        let s1: Vec<_> = a1.drain_sends().collect();
        let s2: Vec<_> = a2.drain_sends().collect();
        p1.receive(GroupId(2), &s2[0].1, &mut a1);
        p2.receive(GroupId(1), &s1[0].1, &mut a2);
        [replies(&mut a1), replies(&mut a2)]
    }

    #[test]
    fn spread_runs_only_when_the_destinations_hold_everything() {
        let (mut p1, mut p2) = (partition(1), partition(2));
        create(&mut p1, 0, "a", 10);
        create(&mut p2, 1, "b", 0);
        let t = KvCommand::Transfer {
            from: "a".into(),
            to: "b".into(),
            amount: 4,
        };
        let needed = vec![kv_var("a"), kv_var("b")];
        let spread = Execution::Spread {
            needed: needed.clone(),
        };
        let [r1, r2] = exchange_both(&mut p1, &mut p2, &msg(2, &[1, 2], &access(&t, spread)));
        assert_eq!(done(&r1[0].1), KvReply::Transfer(true));
        assert_eq!(done(&r2[0].1), KvReply::Transfer(true));
        assert_eq!((p1.vars()[&kv_var("a")], p2.vars()[&kv_var("b")]), (6, 4));
        // c lives in neither destination: both answer retry, the same way, and nothing runs.
        let t = KvCommand::Transfer {
            from: "a".into(),
            to: "c".into(),
            amount: 1,
        };
        let spread = Execution::Spread { needed };
        let [r1, r2] = exchange_both(&mut p1, &mut p2, &msg(3, &[1, 2], &access(&t, spread)));
        let needed = vec![kv_var("a"), kv_var("c")];
        assert_eq!(
            r1,
            vec![(
                3,
                Reply::Retry {
                    needed: needed.clone(),
                    local: vec![kv_var("a")]
                }
            )]
        );
        assert_eq!(
            r2,
            vec![(
                3,
                Reply::Retry {
                    needed,
                    local: vec![]
                }
            )]
        );
        assert_eq!(p1.vars()[&kv_var("a")], 6, "a retry changes nothing");
    }

    #[test]
    fn create_waits_for_the_oracle_and_snapshots_keep_the_queue() {
        let mut p = partition(1);
        let c = Command::Create {
            var: kv_var("x"),
            value: encode(&3i64),
        };
        let m = msg(0, &[0, 1], &c);
        let mut a = Actions::default();
        p.deliver(&m, 1, &mut a);
        assert!(replies(&mut a).is_empty());
        // A replica restored from a snapshot taken now resumes the wait.
        let mut q = partition(1);
        q.restore(&p.snapshot()).unwrap();
        let decision = encode(&Transfer::CreateDecision {
            cmd: m.id,
            outcome: Ok(true),
        });
        q.receive(ORACLE, &decision, &mut a);
        assert_eq!(replies(&mut a), vec![(0, Reply::Ok)]);
        assert_eq!(q.vars()[&kv_var("x")], 3);
    }

    #[test]
    fn malformed_commands_are_rejected() {
        let mut p = partition(1);
        let bad = McastMessage::new(MsgId { sender: 1, seq: 0 }, vec![GroupId(1)], vec![0xff; 4]);
        let mut a = Actions::default();
        p.deliver(&bad, 1, &mut a);
        assert!(matches!(replies(&mut a)[0].1, Reply::Rejected(_)));
        let junk = access_bytes(vec![0xff; 4]);
        p.deliver(&msg(1, &[1], &junk), 2, &mut a);
        assert!(matches!(replies(&mut a)[0].1, Reply::Rejected(_)));
        p.receive(GroupId(2), &[0xff, 0xff], &mut a);
        assert_eq!(p.queued(), 0);
    }

    fn access_bytes(cmd: Vec<u8>) -> Command {
        Command::Access {
            cmd,
            execution: Execution::Local,
        }
    }

    #[test]
    fn an_administrative_command_waits_for_the_oracle_and_moves_follow_its_lifecycle() {
        let (mut p1, mut p3) = (partition(1), partition(3));
        create(&mut p1, 0, "a", 7);
        let drain = Command::Admin(crate::command::AdminOp::DrainPartition(GroupId(3)));
        let d = msg(1, &[0, 1, 2, 3], &drain);
        let mv = Command::Move {
            vars: vec![kv_var("a")],
            from: GroupId(1),
            to: GroupId(3),
        };
        let m = msg(2, &[0, 1, 3], &mv);
        let (mut a1, mut a3) = (Actions::default(), Actions::default());
        p1.deliver(&d, 1, &mut a1);
        p1.deliver(&m, 2, &mut a1);
        assert!(replies(&mut a1).is_empty(), "both wait for the decision");
        assert_eq!(a1.drain_sends().count(), 0, "the move sent nothing yet");
        // The oracle decides: p3 drains.
        let mut lifecycle = Lifecycle::initial(&[GroupId(1), GroupId(2), GroupId(3)]);
        lifecycle
            .apply(
                &crate::command::AdminOp::DrainPartition(GroupId(3)),
                &[ORACLE, GroupId(1), GroupId(2), GroupId(3)],
                |_| 0,
            )
            .unwrap();
        let decision = encode(&Transfer::TopologyDecision {
            cmd: d.id,
            outcome: Ok(lifecycle.clone()),
        });
        p1.receive(ORACLE, &decision, &mut a1);
        let r = replies(&mut a1);
        assert_eq!(r[0], (1, Reply::Ok));
        assert!(
            matches!(&r[1], (2, Reply::Refused(refusal)) if refusal.is_stale()),
            "no move goes into a draining partition: {r:?}"
        );
        assert_eq!(a1.drain_sends().count(), 0, "the source kept its value");
        assert_eq!(p1.vars().len(), 1);
        // The destination judges it the same way without waiting for any value.
        p3.deliver(&d, 1, &mut a3);
        p3.receive(ORACLE, &decision, &mut a3);
        p3.deliver(&m, 2, &mut a3);
        let r = replies(&mut a3);
        assert!(matches!(&r[1], (2, Reply::Refused(_))), "{r:?}");
        assert_eq!(p3.queued(), 0);
        assert_eq!(p3.lifecycle(), Some(&lifecycle));
    }

    #[test]
    fn a_move_not_sent_to_its_source_is_refused_by_its_destination_at_once() {
        let mut p2 = partition(2);
        let mv = Command::Move {
            vars: vec![kv_var("a")],
            from: GroupId(3),
            to: GroupId(2),
        };
        let mut a = Actions::default();
        p2.deliver(&msg(1, &[0, 1, 2], &mv), 1, &mut a);
        let r = replies(&mut a);
        // Malformed, not stale: no topology makes it right, so a retry would not either.
        assert!(matches!(&r[0], (1, Reply::Rejected(_))), "{r:?}");
        assert_eq!(
            p2.queued(),
            0,
            "nothing waits for a value p3 will never send"
        );
    }

    /// Bug: a message was validated only where it was submitted. Every destination now
    /// refuses one that does not fit at once, waits for nothing and changes nothing.
    #[test]
    fn a_command_sent_where_it_does_not_go_is_refused_at_once_by_every_partition() {
        let x = kv_var("x");
        let create_x = |value: Vec<u8>| Command::Create {
            var: x.clone(),
            value,
        };
        let get_x = access(&KvCommand::Get { key: "x".into() }, Execution::Local);
        let cases: Vec<(&str, Mode, Command, &[u32])> = vec![
            // The oracle refuses a create to two partitions and sends no decision.
            (
                "create to two partitions",
                Mode::Dssmr,
                create_x(encode(&1i64)),
                &[0, 1, 2],
            ),
            // The oracle records a create whose value the partition cannot take.
            (
                "create of an undecodable value",
                Mode::Dssmr,
                create_x(vec![0xff; 9]),
                &[0, 1],
            ),
            // A create or delete behind the oracle's back makes its map wrong.
            (
                "create without the oracle",
                Mode::Dssmr,
                create_x(encode(&1i64)),
                &[1],
            ),
            (
                "delete without the oracle",
                Mode::Dssmr,
                Command::Delete { var: x.clone() },
                &[1],
            ),
            // The oracle rejects an access; its partitions ran it.
            ("access to the oracle too", Mode::Dssmr, get_x, &[0, 1]),
            (
                "create to the oracle in S-SMR",
                Mode::Ssmr,
                create_x(encode(&1i64)),
                &[0, 1],
            ),
        ];
        for (what, mode, cmd, dests) in cases {
            for me in dests.iter().copied().filter(|g| *g != 0) {
                let mut p = partition(me).in_mode(mode);
                let mut a = Actions::default();
                if mode == Mode::Dssmr {
                    create(&mut p, 0, "x", 5);
                } else {
                    let c = create_x(encode(&5i64));
                    p.deliver(&msg(0, &[me], &c), 0, &mut a);
                    replies(&mut a);
                }
                p.deliver(&msg(1, dests, &cmd), 1, &mut a);
                let r = replies(&mut a);
                assert!(
                    matches!(&r[..], [(1, Reply::Rejected(_))]),
                    "{what}, at p{me}: {r:?} (waiting: {})",
                    p.describe()
                );
                assert_eq!(p.queued(), 0, "{what}, at p{me}: nothing waits");
                assert_eq!(a.drain_sends().count(), 0, "{what}, at p{me}: nothing sent");
                assert_eq!(p.vars().get(&x), Some(&5), "{what}, at p{me}: x unchanged");
            }
        }
    }
}
