//! What a group's application counts and reports: the kinds and outcomes of the commands it
//! executed, and [`AppStats`], read by the replica's metrics at scrape time.
//!
//! This is vocabulary shared by the oracle, the partitions and the replica's metrics; it
//! registers no metric and does no I/O.

use crate::ids::GroupId;
use serde::{Deserialize, Serialize};

/// The kind of a command a group executed (label `kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CommandKind {
    /// access(ω) with every variable in one partition (DS-SMR's single-partition execution).
    Access,
    /// access(ω) run by several partitions with variable exchange (S-SMR, Algorithm 1): every
    /// multi-partition command in S-SMR mode, a fallback in DS-SMR mode.
    Exchange,
    /// access(ω) run spread over the partitions that hold its variables (DS-SMR, settled
    /// variables not moved).
    Spread,
    /// move(ω, from, to).
    Move,
    /// create(v).
    Create,
    /// delete(v).
    Delete,
    /// consult(C), answered by the oracle with a prophecy.
    Consult,
    /// An administrative change of the oracle's placement (add or drain a partition).
    Admin,
}

impl CommandKind {
    /// Every kind, in label order.
    pub const ALL: [CommandKind; 8] = [
        CommandKind::Access,
        CommandKind::Exchange,
        CommandKind::Spread,
        CommandKind::Move,
        CommandKind::Create,
        CommandKind::Delete,
        CommandKind::Consult,
        CommandKind::Admin,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            CommandKind::Access => "access",
            CommandKind::Exchange => "exchange",
            CommandKind::Spread => "spread",
            CommandKind::Move => "move",
            CommandKind::Create => "create",
            CommandKind::Delete => "delete",
            CommandKind::Consult => "consult",
            CommandKind::Admin => "admin",
        }
    }
}

/// How a command ended in a group (label `outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CommandOutcome {
    /// It ran (or, for create/delete/move/consult, took effect or was answered).
    Executed,
    /// Not every variable it needs is here: the client must move them and retry.
    Retry,
    /// A create found its variable existing.
    Nok,
    /// Malformed or misdirected.
    Rejected,
}

impl CommandOutcome {
    /// Every outcome, in label order.
    pub const ALL: [CommandOutcome; 4] = [
        CommandOutcome::Executed,
        CommandOutcome::Retry,
        CommandOutcome::Nok,
        CommandOutcome::Rejected,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            CommandOutcome::Executed => "executed",
            CommandOutcome::Retry => "retry",
            CommandOutcome::Nok => "nok",
            CommandOutcome::Rejected => "rejected",
        }
    }
}

/// Cumulative counts of executed commands per kind and outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandCounts([[u64; 4]; 8]);

impl CommandCounts {
    /// Counts one command.
    pub fn add(&mut self, kind: CommandKind, outcome: CommandOutcome) {
        self.0[kind as usize][outcome as usize] += 1;
    }

    /// The count of one kind and outcome.
    pub fn get(&self, kind: CommandKind, outcome: CommandOutcome) -> u64 {
        self.0[kind as usize][outcome as usize]
    }

    /// Every non-zero count.
    pub fn iter(&self) -> impl Iterator<Item = (CommandKind, CommandOutcome, u64)> + '_ {
        CommandKind::ALL.into_iter().flat_map(move |k| {
            CommandOutcome::ALL
                .into_iter()
                .map(move |o| (k, o, self.get(k, o)))
                .filter(|(_, _, n)| *n > 0)
        })
    }

    /// Sum over kinds of one outcome.
    pub fn total(&self, outcome: CommandOutcome) -> u64 {
        CommandKind::ALL.iter().map(|k| self.get(*k, outcome)).sum()
    }
}

/// What an application reports for metrics ([`crate::app::Application::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppStats {
    /// Commands executed so far, by kind and outcome.
    pub commands: CommandCounts,
    /// Variables moved into this partition so far.
    pub moves_in: u64,
    /// Variables this partition holds now (`None` for groups that hold none).
    pub variables: Option<u64>,
    /// Commands delivered and not finished (waiting for another group).
    pub queued: u64,
    /// The oracle's map: variables per partition.
    pub placement: Vec<(GroupId, u64)>,
}

impl CommandKind {
    /// The kind of `cmd`.
    pub fn of(cmd: &crate::command::Command) -> Self {
        use crate::command::{Command, Execution};
        match cmd {
            Command::Access { execution, .. } => match execution {
                Execution::Local => CommandKind::Access,
                Execution::Exchange => CommandKind::Exchange,
                Execution::Spread { .. } => CommandKind::Spread,
            },
            Command::Move { .. } => CommandKind::Move,
            Command::Create { .. } => CommandKind::Create,
            Command::Delete { .. } => CommandKind::Delete,
            Command::Consult { .. } => CommandKind::Consult,
            Command::Admin(_) => CommandKind::Admin,
        }
    }
}

impl CommandOutcome {
    /// The outcome a group's `reply` reports.
    pub fn of(reply: &crate::command::Reply) -> Self {
        use crate::command::Reply;
        match reply {
            Reply::Prophecy(_) | Reply::Done(_) | Reply::Ok => CommandOutcome::Executed,
            Reply::Retry { .. } => CommandOutcome::Retry,
            Reply::Nok => CommandOutcome::Nok,
            Reply::Rejected(_) | Reply::Refused(_) => CommandOutcome::Rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_counts_add_up_per_kind_and_outcome() {
        let mut c = CommandCounts::default();
        c.add(CommandKind::Access, CommandOutcome::Executed);
        c.add(CommandKind::Access, CommandOutcome::Executed);
        c.add(CommandKind::Access, CommandOutcome::Retry);
        c.add(CommandKind::Spread, CommandOutcome::Retry);
        c.add(CommandKind::Consult, CommandOutcome::Executed);
        assert_eq!(c.get(CommandKind::Access, CommandOutcome::Executed), 2);
        assert_eq!(c.total(CommandOutcome::Retry), 2);
        let all: Vec<_> = c.iter().collect();
        assert_eq!(all.len(), 4);
        assert!(all.iter().all(|(_, _, n)| *n > 0));
    }
}
