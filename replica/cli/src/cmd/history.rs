//! `dssmr history check`: judges a recorded history file and prints the verdict: a kv history
//! against the sequential model of a map (linearizability), a Chirper history by every
//! `getTimeline` reply it holds (`chirper_timelines`); the exit status says correct (0) or
//! not (1). This module
//! checks flags and prints; [`dssmr_check::history`] reads and judges.

use clap::{Args, Subcommand};
use dssmr_check::history::chirper_timelines::check_timelines;
use dssmr_check::history::linearizability::{check_kv_bounded, DEFAULT_MAX_CONFIGURATIONS};
use dssmr_check::history::{read_jsonl, Event, EventKind};
use dssmr_engine::config::AppKind;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum HistoryCommand {
    /// Check a history file (JSONL, one event per line, as `dssmr bench ... --history`
    /// writes it). kv: is it linearizable? Chirper: is every timeline read one a correct
    /// Chirper could have returned then (sorted, no post twice, none never posted, none
    /// acknowledged before the read missing)? Prints the verdict; exit status 0 if the
    /// history passes, 1 if it does not, is malformed, or the search gave up undecided.
    Check(CheckArgs),
}

#[derive(Args)]
pub struct CheckArgs {
    /// The application that recorded the history: kv (replayed against a map from keys to
    /// integers, empty at the start of the history) or chirper (its timeline replies judged).
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
    if args.max_configurations == 0 {
        anyhow::bail!("--max-configurations: must be at least 1");
    }
    let events = read_jsonl(&args.file)?;
    if args.app == AppKind::Chirper {
        return Ok(check_chirper(&args, &events));
    }
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

/// `dssmr history check --app chirper`: every timeline reply judged.
fn check_chirper(args: &CheckArgs, events: &[Event]) -> ExitCode {
    let file = args.file.display();
    match check_timelines(events) {
        Ok(r) => {
            println!(
                "{file}: every timeline reply is correct ({} events, {} replies holding {} \
                 posts; {} acknowledged posts found where they had to be)",
                events.len(),
                r.replies,
                r.posts,
                r.required
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{file}: {}", crate::error_chain(&anyhow::Error::new(e)));
            ExitCode::FAILURE
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
        assert!(refused(&["history", "check", "--app", "bank", "h.jsonl"]).is_some());
        let args = CheckArgs {
            app: AppKind::Kv,
            max_configurations: 0,
            file: PathBuf::from("h.jsonl"),
        };
        let err = check(args).unwrap_err().to_string();
        assert!(err.starts_with("--max-configurations"), "{err}");
    }

    #[test]
    fn history_check_judges_chirper_timelines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, timeline: serde_json::Value| {
            let path = dir.path().join(name);
            let history = History::to_file(&path).expect("history file");
            for (p, u, following, followers) in [(0, 1, vec![], vec![2]), (1, 2, vec![1], vec![])] {
                let args = json!({"user": u, "following": following, "followers": followers});
                history.invoke(p, "create_user", args.clone());
                let created = Some(json!({"created": true}));
                history.complete(p, EventKind::Ok, "create_user", args, created);
            }
            let post = json!({"user": 1, "text": "hi", "time": 5});
            history.invoke(0, "post", post.clone());
            let posted = Some(json!({"posted": {"seq": 0}}));
            history.complete(0, EventKind::Ok, "post", post, posted);
            history.invoke(1, "get_timeline", json!({"user": 2}));
            let read = Some(json!({ "timeline": timeline }));
            history.complete(1, EventKind::Ok, "get_timeline", json!({"user": 2}), read);
            history.flush().expect("flush");
            path
        };
        let verdict = |file: PathBuf| {
            check(CheckArgs {
                app: AppKind::Chirper,
                max_configurations: DEFAULT_MAX_CONFIGURATIONS,
                file,
            })
            .expect("checked")
        };
        let post = json!({"time": 5, "author": 1, "seq": 0, "text": "hi"});
        assert_eq!(
            verdict(write("good.jsonl", json!([post]))),
            ExitCode::SUCCESS
        );
        // The acknowledged post is not in the reply.
        assert_eq!(verdict(write("lost.jsonl", json!([]))), ExitCode::FAILURE);
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
