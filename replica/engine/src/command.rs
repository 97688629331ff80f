//! The DS-SMR protocol vocabulary: the commands client proxies multicast to the oracle and the
//! partitions, the messages groups send each other over the reliable channel, and the replies.
//!
//! Everything is encoded with postcard. Application commands and variable values travel as
//! opaque bytes, so the oracle (which never runs application code) decodes every command
//! without knowing the application's types. Decoding never panics: malformed bytes from the
//! network become a [`CodecError`] and the command is answered with [`Reply::Rejected`].

use crate::ids::{GroupId, MsgId, VarId, ORACLE};
pub use crate::lifecycle::AdminOp;
use crate::lifecycle::{Lifecycle, Refusal};
use crate::mode::Mode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How the destination partitions run an access command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Execution {
    /// DS-SMR (Algorithm 3): the single destination runs the command only if every variable
    /// it needs is local, and answers `retry` otherwise.
    Local,
    /// S-SMR (Algorithm 1): every destination runs the command, after sending the values of
    /// its local variables to the others and receiving theirs (the values double as the
    /// signals that make the execution atomic). Also the DS-SMR fallback.
    Exchange,
    /// DS-SMR without moving: the destinations are only the partitions believed to hold
    /// the variables, so each also reports which of `needed` (what the proxy believes the
    /// command needs: ω and the dependencies a retry revealed) it holds. All run the command,
    /// as with [`Execution::Exchange`], if the destinations together hold ω and every
    /// dependency; otherwise all answer `retry` (the same decision everywhere: it depends
    /// only on what was exchanged). Used where moving a variable would pull it away from the
    /// variables it is usually accessed with.
    Spread {
        /// Variables the proxy believes the command needs, sorted.
        needed: Vec<VarId>,
    },
}

/// What a consult is for; the oracle's prophecy depends on it (Algorithm 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Purpose {
    /// An application command over existing variables.
    Access,
    /// Creating the (single) variable.
    Create,
    /// Deleting the (single) variable.
    Delete,
}

/// A command atomically multicast by a client proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// consult(C), to the oracle only. `vars` must exist (else the prophecy is `nok`);
    /// `optional` are located if they exist (a command's dependencies).
    Consult {
        /// Variables the command needs.
        vars: Vec<VarId>,
        /// Variables to locate if they exist.
        optional: Vec<VarId>,
        /// What the consult is for.
        purpose: Purpose,
    },
    /// access(ω): an application command, to one partition (DS-SMR) or several (S-SMR).
    Access {
        /// The encoded application command.
        cmd: Vec<u8>,
        /// How the destinations run it.
        execution: Execution,
    },
    /// move(V, Ps, Pd), to the oracle, the source and the destination: every variable of
    /// `vars` that `from` holds goes to `to`.
    Move {
        /// Variables to move.
        vars: Vec<VarId>,
        /// Source partition.
        from: GroupId,
        /// Destination partition.
        to: GroupId,
    },
    /// create(v), to the oracle and the partition that will hold `var` (DS-SMR), or to its
    /// partition alone (S-SMR).
    Create {
        /// The new variable.
        var: VarId,
        /// Its encoded initial value.
        value: Vec<u8>,
    },
    /// delete(v), to the oracle and the partition believed to hold `var` (DS-SMR; every
    /// partition in the fallback), or to its partition alone (S-SMR).
    Delete {
        /// The variable.
        var: VarId,
    },
    /// An administrative change of the cluster's partitions, to the oracle and every
    /// partition that exists (and the one it adds): the oracle decides, and every partition
    /// takes the resulting [`Lifecycle`] at the same point of the order (see
    /// [`crate::lifecycle`]).
    Admin(AdminOp),
}

/// A message one group sends another over the reliable channel, about command `cmd`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transfer {
    /// Move source to destination: the values of the moved variables the source held.
    MoveValues {
        /// The move command.
        cmd: MsgId,
        /// Encoded values (empty when the source held none of them).
        values: Vec<(VarId, Vec<u8>)>,
    },
    /// Oracle to partition: whether the create may proceed.
    CreateDecision {
        /// The create command.
        cmd: MsgId,
        /// `Ok(true)`: create it; `Ok(false)`: it exists already; a refusal: the partition
        /// takes no variables.
        outcome: Result<bool, Refusal>,
    },
    /// Oracle to every partition an administrative command went to: the table of partitions
    /// as the command left it, or why it did not take effect.
    TopologyDecision {
        /// The administrative command.
        cmd: MsgId,
        /// The table to hold from this command on, or the refusal.
        outcome: Result<Lifecycle, Refusal>,
    },
    /// S-SMR partition to partition: the values of the sender's local variables of ω, and
    /// the signal that the sender reached the command.
    Exchange {
        /// The access command.
        cmd: MsgId,
        /// Encoded values of the sender's local variables of ω.
        values: Vec<(VarId, Vec<u8>)>,
        /// [`Execution::Spread`] only: the variables of ω and `needed` the sender holds.
        held: Vec<VarId>,
    },
}

impl Transfer {
    /// The command this message is about.
    pub fn cmd(&self) -> MsgId {
        match self {
            Transfer::MoveValues { cmd, .. }
            | Transfer::CreateDecision { cmd, .. }
            | Transfer::TopologyDecision { cmd, .. }
            | Transfer::Exchange { cmd, .. } => *cmd,
        }
    }
}

/// The oracle's answer to a consult (Algorithm 4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Prophecy {
    /// Nothing to do: the command already holds (delete of a variable that does not exist).
    Ok,
    /// The command cannot run: these variables do not exist (access), or the variable
    /// exists already (create).
    Nok {
        /// The variables concerned.
        vars: Vec<VarId>,
    },
    /// Where each variable is (access, delete) or goes (create).
    Locations(Vec<(VarId, GroupId)>),
}

/// What a group answers to a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The oracle's prophecy for a consult.
    Prophecy(Prophecy),
    /// The command ran; the encoded application reply.
    Done(Vec<u8>),
    /// The command did not run here: not every needed variable is local. `needed` is every
    /// variable the command needs (γ: ω and its dependencies), `local` those this partition
    /// holds. The oracle answers a misdirected delete the same way.
    Retry {
        /// γ.
        needed: Vec<VarId>,
        /// The part of γ held here.
        local: Vec<VarId>,
    },
    /// The create, delete or move took effect (as far as this group is concerned).
    Ok,
    /// The create found the variable existing.
    Nok,
    /// The command is malformed or sent to the wrong kind of group.
    Rejected(String),
    /// The command did not take effect: it does not fit the cluster's partitions as they
    /// stand at its place in the order (a move into a partition being drained or removed,
    /// an administrative command built on an older topology, ...). Every destination
    /// answers the same.
    Refused(Refusal),
}

impl Command {
    /// Whether `dests` (sorted, without repeats) is where this kind of command goes in a
    /// cluster run in `mode`; otherwise why not. Every destination checks it when the
    /// command is delivered, before anything else, and answers [`Reply::Rejected`] at once
    /// when it fails: the check reads nothing but the message, so all destinations judge
    /// alike, none waits for a group that will not answer, and none changes its state. (A
    /// create sent to two partitions, say, is refused by the oracle and both partitions,
    /// instead of leaving the partitions waiting for a decision the oracle never sends.)
    ///
    /// * consult: the oracle alone (DS-SMR);
    /// * access: partitions only, exactly one when [`Execution::Local`];
    /// * move: the oracle, the source and the destination, which differ (DS-SMR);
    /// * create: exactly one partition, with the oracle in DS-SMR, without it in S-SMR;
    /// * delete: partitions, with the oracle in DS-SMR, without it in S-SMR;
    /// * administrative: the oracle and partitions, and it names a partition (DS-SMR).
    pub fn check_destinations(&self, dests: &[GroupId], mode: Mode) -> Result<(), &'static str> {
        let has_oracle = dests.contains(&ORACLE);
        let partitions = dests.len() - usize::from(has_oracle);
        let dssmr = mode == Mode::Dssmr;
        let fits = match self {
            Command::Consult { .. } => dssmr && has_oracle && partitions == 0,
            Command::Access { execution, .. } => {
                !has_oracle
                    && partitions >= 1
                    && (partitions == 1 || *execution != Execution::Local)
            }
            Command::Move { from, to, .. } => {
                dssmr
                    && from != to
                    && *from != ORACLE
                    && *to != ORACLE
                    && dests.len() == 3
                    && has_oracle
                    && dests.contains(from)
                    && dests.contains(to)
            }
            Command::Create { .. } => partitions == 1 && has_oracle == dssmr,
            Command::Delete { .. } => partitions >= 1 && has_oracle == dssmr,
            Command::Admin(op) => dssmr && has_oracle && op.partition() != ORACLE,
        };
        if fits {
            return Ok(());
        }
        Err(match (self, mode) {
            (Command::Consult { .. }, Mode::Dssmr) => "a consult goes to the oracle alone",
            (Command::Access { .. }, _) => {
                "an access goes to partitions only, a local one to exactly one"
            }
            (Command::Move { .. }, Mode::Dssmr) => {
                "a move goes to the oracle, its source and its destination, which differ"
            }
            (Command::Create { .. }, Mode::Dssmr) => {
                "a create goes to the oracle and exactly one partition"
            }
            (Command::Create { .. }, Mode::Ssmr) => {
                "a create goes to exactly one partition (S-SMR has no oracle)"
            }
            (Command::Delete { .. }, Mode::Dssmr) => "a delete goes to the oracle and partitions",
            (Command::Delete { .. }, Mode::Ssmr) => {
                "a delete goes to partitions (S-SMR has no oracle)"
            }
            (Command::Admin(_), Mode::Dssmr) => {
                "an administrative command goes to the oracle and partitions, and names a partition"
            }
            (_, Mode::Ssmr) => {
                "S-SMR has no oracle: consults, moves and administrative \
                                commands are not served"
            }
        })
    }
}

/// Bytes that do not decode as the expected protocol type.
#[derive(Debug, Error)]
#[error("undecodable {what}: {source}")]
pub struct CodecError {
    /// What was being decoded.
    pub what: &'static str,
    /// Why it failed.
    #[source]
    pub source: postcard::Error,
}

/// Encodes a protocol or application value.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // postcard fails only on types serde cannot describe (maps with non-string keys are fine);
    // every type encoded here is plain data, so failure is a programming error.
    postcard::to_allocvec(v).expect("protocol values are plain data and always encode")
}

/// Decodes a protocol or application value received from the network.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, CodecError> {
    postcard::from_bytes(bytes).map_err(|source| CodecError { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_garbage_is_an_error() {
        let c = Command::Move {
            vars: vec![VarId::new("a")],
            from: GroupId(1),
            to: GroupId(2),
        };
        let back: Command = decode(&encode(&c), "command").unwrap();
        assert_eq!(back, c);
        let err = decode::<Command>(&[0xff, 0xff, 0xff], "command").unwrap_err();
        assert!(err.to_string().starts_with("undecodable command"), "{err}");
    }

    #[test]
    fn every_kind_of_command_has_its_destinations() {
        let g = |ids: &[u32]| ids.iter().map(|i| GroupId(*i)).collect::<Vec<_>>();
        let (d, s) = (Mode::Dssmr, Mode::Ssmr);
        let consult = Command::Consult {
            vars: vec![],
            optional: vec![],
            purpose: Purpose::Access,
        };
        let access = |execution| Command::Access {
            cmd: vec![],
            execution,
        };
        let mv = |from, to| Command::Move {
            vars: vec![],
            from: GroupId(from),
            to: GroupId(to),
        };
        let create = Command::Create {
            var: VarId::new("x"),
            value: vec![],
        };
        let delete = Command::Delete {
            var: VarId::new("x"),
        };
        let admin = |p| Command::Admin(AdminOp::DrainPartition(GroupId(p)));
        let cases: &[(&Command, &[u32], Mode, bool)] = &[
            (&consult, &[0], d, true),
            (&consult, &[0, 1], d, false),
            (&consult, &[0], s, false),
            (&access(Execution::Local), &[1], d, true),
            (&access(Execution::Local), &[1, 2], d, false),
            (&access(Execution::Local), &[0, 1], d, false),
            (&access(Execution::Exchange), &[1, 2], s, true),
            (&access(Execution::Exchange), &[0, 1, 2], d, false),
            (&mv(1, 2), &[0, 1, 2], d, true),
            (&mv(1, 3), &[0, 1, 2], d, false),
            (&mv(3, 2), &[0, 1, 2], d, false),
            (&mv(1, 1), &[0, 1], d, false),
            (&mv(0, 1), &[0, 1], d, false),
            (&mv(1, 2), &[0, 1, 2], s, false),
            (&create, &[0, 1], d, true),
            (&create, &[0, 1, 2], d, false),
            (&create, &[1], d, false),
            (&create, &[1], s, true),
            (&create, &[0, 1], s, false),
            (&delete, &[0, 1], d, true),
            (&delete, &[0, 1, 2], d, true),
            (&delete, &[1], d, false),
            (&delete, &[0], d, false),
            (&delete, &[1], s, true),
            (&admin(2), &[0, 1, 2], d, true),
            (&admin(2), &[1, 2], d, false),
            (&admin(0), &[0, 1], d, false),
            (&admin(1), &[0, 1], s, false),
        ];
        for (cmd, dests, mode, fits) in cases {
            let r = cmd.check_destinations(&g(dests), *mode);
            assert_eq!(r.is_ok(), *fits, "{cmd:?} to {dests:?} in {mode:?}: {r:?}");
        }
    }
}
