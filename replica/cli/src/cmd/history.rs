//! `dssmr history check`: judges a recorded history file against the app's sequential model
//! and prints the verdict; the exit status says linearizable (0) or not (1). This module
//! checks flags and prints; [`dssmr_check::history`] reads and judges.

use clap::{Args, Subcommand};
use dssmr_check::history::linearizability::{check_kv_bounded, DEFAULT_MAX_CONFIGURATIONS};
use dssmr_check::history::{read_jsonl, EventKind};
use dssmr_engine::config::AppKind;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum HistoryCommand {
    /// Check a history file (JSONL, one event per line, as `dssmr bench ... --history`
    /// writes it). Prints the verdict; exit status 0 if the history is linearizable, 1 if it
    /// is not, is malformed, or the search gave up undecided.
    Check(CheckArgs),
}

#[derive(Args)]
pub struct CheckArgs {
    /// The application whose sequential model the operations are replayed against (kv: a
    /// map from keys to integers, empty at the start of the history).
    #[arg(long)]
    app: AppKind,
    /// Search configurations the checker may visit (per key, or for the whole history when it
    /// has multi-key operations) before it gives up undecided.
    #[arg(long, default_value_t = DEFAULT_MAX_CONFIGURATIONS)]
    max_configurations: usize,
    /// The history file.
    file: PathBuf,
}

pub fn run(command: HistoryCommand) -> anyhow::Result<ExitCode> {
    match command {
        HistoryCommand::Check(args) => check(args),
    }
}

/// `dssmr history check`: the verdict on stdout; success only for a linearizable history.
fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    if args.app != AppKind::Kv {
        anyhow::bail!("--app: only kv histories can be checked, not {}", args.app);
    }
    if args.max_configurations == 0 {
        anyhow::bail!("--max-configurations: must be at least 1");
    }
    let events = read_jsonl(&args.file)?;
    let count = |kind: EventKind| events.iter().filter(|e| e.kind == kind).count();
    let file = args.file.display();
    match check_kv_bounded(&events, &BTreeMap::new(), args.max_configurations) {
        Ok(()) => {
            println!(
                "{file}: linearizable ({} events, {} operations: {} ok, {} failed, {} with \
                 unknown outcome)",
                events.len(),
                count(EventKind::Invoke),
                count(EventKind::Ok),
                count(EventKind::Fail),
                count(EventKind::Info)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("{file}: {}", crate::error_chain(&anyhow::Error::new(e)));
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{parse, refused};
    use crate::Command;
    use dssmr_check::history::History;
    use serde_json::json;
    use std::path::Path;

    #[test]
    fn history_check_parses_and_refuses_other_apps() {
        match parse(&["history", "check", "--app", "kv", "h.jsonl"]) {
            Command::History {
                which: HistoryCommand::Check(args),
            } => {
                assert_eq!(args.app, AppKind::Kv);
                assert_eq!(args.file, PathBuf::from("h.jsonl"));
                assert_eq!(args.max_configurations, DEFAULT_MAX_CONFIGURATIONS);
            }
            _ => panic!("not history check"),
        }
        assert!(refused(&["history", "check", "h.jsonl"]).is_some());
        let args = CheckArgs {
            app: AppKind::Chirper,
            max_configurations: 1,
            file: PathBuf::from("h.jsonl"),
        };
        let err = check(args).unwrap_err().to_string();
        assert!(err.starts_with("--app"), "{err}");
    }

    #[test]
    fn history_check_judges_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let history = History::to_file(&path).expect("history file");
        let put = json!({"key": "k0", "value": 100});
        history.invoke(0, "put", put.clone());
        history.complete(0, EventKind::Ok, "put", put, Some(json!("done")));
        history.invoke(1, "get", json!({"key": "k0"}));
        let read = |value| Some(json!({ "value": value }));
        history.complete(1, EventKind::Ok, "get", json!({"key": "k0"}), read(100));
        history.flush().expect("flush");
        let verdict = |file: &Path| {
            check(CheckArgs {
                app: AppKind::Kv,
                max_configurations: DEFAULT_MAX_CONFIGURATIONS,
                file: file.to_path_buf(),
            })
        };
        assert_eq!(verdict(&path).expect("checked"), ExitCode::SUCCESS);
        let text = std::fs::read_to_string(&path).expect("read");
        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, text.replace(r#"{"value":100}"#, r#"{"value":7}"#)).unwrap();
        assert_eq!(verdict(&bad).expect("checked"), ExitCode::FAILURE);
        assert!(verdict(&dir.path().join("absent.jsonl")).is_err());
    }
}
