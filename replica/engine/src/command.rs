//! The DS-SMR protocol vocabulary: the commands client proxies multicast to the oracle and the
//! partitions, the messages groups send each other over the reliable channel, and the replies.
//!
//! Everything is encoded with postcard. Application commands and variable values travel as
//! opaque bytes, so the oracle (which never runs application code) decodes every command
//! without knowing the application's types. Decoding never panics: malformed bytes from the
//! network become a [`CodecError`] and the command is answered with [`Reply::Rejected`].

use crate::ids::{GroupId, MsgId, VarId};
pub use crate::lifecycle::AdminOp;
use crate::lifecycle::{Lifecycle, Refusal};
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
}
