//! `dssmr client kv ...`: the kv verbs, parsed straight into the app's [`KvCommand`] (plus
//! `delete`, which is an engine command, not a kv one), run as the kv client runs them
//! ([`dssmr_bench::kv::execute`]: a put creates a missing key); the reply in the app's JSON.
//!
//! The verbs are a hand-written clap [`Subcommand`] over [`KvRequest`] rather than a derived
//! enum: a derive would need a second enum mirroring [`KvCommand`] variant by variant, and
//! deriving on [`KvCommand`] itself would put clap into the engine. [`VERBS`] is the grammar,
//! one row per verb; this module parses and runs one command.

use clap::builder::ValueParser;
use clap::error::ErrorKind;
use clap::{value_parser, Arg, ArgAction, ArgMatches, Command, FromArgMatches, Subcommand};
use dssmr_bench::kv::execute;
use dssmr_engine::app::kv::{kv_var, reply_json, Kv, KvCommand};
use dssmr_engine::client::Proxy;
use serde_json::{json, Value};

/// What `dssmr client kv` runs.
#[derive(Debug, PartialEq)]
pub enum KvRequest {
    /// A command of the kv app.
    Command(KvCommand),
    /// Delete a key (an engine command: the app never deletes).
    Delete {
        /// The key.
        key: String,
    },
}

/// An argument of a verb, by id and value name: a key (or keys) or a number.
#[derive(Clone, Copy)]
enum Operand {
    /// A key.
    Key(&'static str, &'static str),
    /// One or more keys (at least one).
    Keys(&'static str, &'static str),
    /// A 64-bit integer (negative numbers allowed).
    Number(&'static str, &'static str),
}

/// A verb: its name on the command line, its help, and its operands in order.
struct Verb {
    name: &'static str,
    about: &'static str,
    operands: &'static [Operand],
}

/// The kv verbs, in help order.
const VERBS: [Verb; 6] = [
    Verb {
        name: "get",
        about: r#"Read a key: {"value":N} or {"missing":[K]}"#,
        operands: &[Operand::Key("key", "KEY")],
    },
    Verb {
        name: "put",
        about: r#"Write a key, creating it if missing: "done""#,
        operands: &[
            Operand::Key("key", "KEY"),
            Operand::Number("value", "VALUE"),
        ],
    },
    Verb {
        name: "cas",
        about: r#"Set KEY to NEW if it holds EXPECTED: {"swapped":bool}"#,
        operands: &[
            Operand::Key("key", "KEY"),
            Operand::Number("expected", "EXPECTED"),
            Operand::Number("new", "NEW"),
        ],
    },
    Verb {
        name: "transfer",
        about: r#"Move AMOUNT from one key to another if FROM holds enough: {"transferred":bool}"#,
        operands: &[
            Operand::Key("from", "FROM"),
            Operand::Key("to", "TO"),
            Operand::Number("amount", "AMOUNT"),
        ],
    },
    Verb {
        name: "read",
        about: r#"Read several keys atomically: {"values":[..]}"#,
        operands: &[Operand::Keys("keys", "KEYS")],
    },
    Verb {
        name: "delete",
        about: r#"Delete a key (nothing happens if it does not exist): "done""#,
        operands: &[Operand::Key("key", "KEY")],
    },
];

impl Verb {
    /// The clap command of the verb (what `#[derive(Subcommand)]` would build).
    fn command(&self) -> Command {
        let mut cmd = Command::new(self.name).about(self.about).long_about(None);
        for operand in self.operands {
            let (id, name, parser, action): (_, _, ValueParser, _) = match *operand {
                Operand::Key(id, name) => (id, name, value_parser!(String), ArgAction::Set),
                Operand::Keys(id, name) => (id, name, value_parser!(String), ArgAction::Append),
                Operand::Number(id, name) => {
                    cmd = cmd.allow_negative_numbers(true);
                    (id, name, value_parser!(i64).into(), ArgAction::Set)
                }
            };
            let arg = Arg::new(id)
                .value_name(name)
                .required(true)
                .value_parser(parser)
                .action(action);
            cmd = cmd.arg(arg);
        }
        cmd
    }
}

impl FromArgMatches for KvRequest {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let Some((verb, m)) = matches.subcommand() else {
            return Err(clap::Error::raw(
                ErrorKind::MissingSubcommand,
                "A subcommand is required but one was not provided.",
            ));
        };
        let key = |id: &str| m.get_one::<String>(id).cloned().unwrap_or_default();
        let number = |id: &str| m.get_one::<i64>(id).copied().unwrap_or_default();
        let command = match verb {
            "get" => KvCommand::Get { key: key("key") },
            "put" => KvCommand::Put {
                key: key("key"),
                value: number("value"),
            },
            "cas" => KvCommand::Cas {
                key: key("key"),
                expected: number("expected"),
                new: number("new"),
            },
            "transfer" => KvCommand::Transfer {
                from: key("from"),
                to: key("to"),
                amount: number("amount"),
            },
            "read" => KvCommand::ReadMany {
                keys: m
                    .get_many::<String>("keys")
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect(),
            },
            "delete" => return Ok(KvRequest::Delete { key: key("key") }),
            other => {
                return Err(clap::Error::raw(
                    ErrorKind::InvalidSubcommand,
                    format!("the subcommand '{other}' wasn't recognized"),
                ))
            }
        };
        Ok(KvRequest::Command(command))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Subcommand for KvRequest {
    fn augment_subcommands(cmd: Command) -> Command {
        VERBS
            .iter()
            .fold(cmd, |cmd, verb| cmd.subcommand(verb.command()))
    }

    fn augment_subcommands_for_update(cmd: Command) -> Command {
        Self::augment_subcommands(cmd)
    }

    fn has_subcommand(name: &str) -> bool {
        VERBS.iter().any(|v| v.name == name)
    }
}

/// Runs `request` the way `dssmr bench kv` does (a put creates a missing key) and returns
/// the reply as JSON.
pub async fn run(p: Proxy<Kv>, request: KvRequest) -> anyhow::Result<Value> {
    match request {
        KvRequest::Command(cmd) => Ok(reply_json(&execute(&p, &cmd).await?)),
        KvRequest::Delete { key } => {
            p.delete(kv_var(&key)).await?;
            Ok(json!("done"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::parse;
    use crate::Command as Cli;

    fn request(argv: &[&str]) -> KvRequest {
        let mut full = vec!["client", "--config", "c.yaml", "kv"];
        full.extend_from_slice(argv);
        match parse(&full) {
            Cli::Client(args) => match args.app {
                super::super::ClientApp::Kv { op } => op,
                _ => panic!("not kv"),
            },
            _ => panic!("not client"),
        }
    }

    #[test]
    fn every_verb_parses_into_the_apps_command() {
        let s = |k: &str| k.to_string();
        assert_eq!(
            request(&["get", "a"]),
            KvRequest::Command(KvCommand::Get { key: s("a") })
        );
        assert_eq!(
            request(&["put", "a", "-3"]),
            KvRequest::Command(KvCommand::Put {
                key: s("a"),
                value: -3
            })
        );
        assert_eq!(
            request(&["transfer", "a", "b", "7"]),
            KvRequest::Command(KvCommand::Transfer {
                from: s("a"),
                to: s("b"),
                amount: 7
            })
        );
        assert_eq!(
            request(&["read", "b", "a", "b"]),
            KvRequest::Command(KvCommand::ReadMany {
                keys: vec![s("b"), s("a"), s("b")]
            })
        );
        assert_eq!(request(&["delete", "a"]), KvRequest::Delete { key: s("a") });
    }
}
