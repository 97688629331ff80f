//! Client-side operation histories (Jepsen style) and the checkers that judge them.
//!
//! A history is a sequence of [`Event`]s: one `invoke` when a client process starts an
//! operation and one completion (`ok`, `fail` or `info`) when it learns the outcome. On disk it is
//! JSONL, one event per line:
//!
//! ```text
//! {"process":3,"type":"invoke","f":"transfer","args":{"from":"a","to":"b","amount":3},"result":null,"time_ns":1200}
//! {"process":3,"type":"ok","f":"transfer","args":{"from":"a","to":"b","amount":3},"result":{"transferred":true},"time_ns":5400}
//! ```
//!
//! Contract for producers:
//! - a `process` runs one operation at a time (invoke, then its completion, then the next invoke);
//! - `ok`: the operation took effect and returned `result`; `fail`: it certainly did not take
//!   effect; `info`: unknown (timeout, crash). After an `info` the process id is never reused; the
//!   client carries on under a fresh process id;
//! - `time_ns` is monotonic, in nanoseconds since the recorder was created, and the order of the
//!   events in a history is the order of their `time_ns`.
//!
//! This module owns the record format and the recorder ([`History`]). It does not know what the
//! operations mean: [`linearizability`] checks kv histories against a sequential model and
//! [`bank`] checks the conservation of money in bank-style histories, [`chirper_posts`] that
//! acknowledged Chirper posts reach their followers' timelines. Nothing here talks to the
//! cluster.

pub mod bank;
pub mod chirper_posts;
pub mod chirper_timelines;
pub mod kv_model;
pub mod linearizability;
pub(crate) mod wgl;

#[cfg(test)]
mod test_support;

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Errors of recording, writing and reading histories.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The history file could not be created or opened.
    #[error("cannot open history file {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Streaming events to the history file failed (reported by [`History::flush`]).
    #[error("cannot write history file {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line of the history file could not be read.
    #[error("cannot read line {line} of history file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line of the history file is not a valid event.
    #[error("line {line} of history file {path} is not a valid event")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        #[source]
        source: serde_json::Error,
    },
}

/// Result alias of this module.
pub type Result<T, E = HistoryError> = std::result::Result<T, E>;

/// What an event says about its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The process started the operation.
    Invoke,
    /// The operation took effect and returned `result`.
    Ok,
    /// The operation certainly did not take effect.
    Fail,
    /// Unknown outcome: the operation may or may not have taken effect (timeout, crash).
    Info,
}

/// One line of a history: an invocation or a completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Logical client process; runs one operation at a time and is retired after an `info`.
    pub process: u64,
    /// Invocation or kind of completion.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// Operation name (`get`, `put`, `transfer`, ...).
    pub f: String,
    /// Operation arguments; a completion repeats the arguments of its invocation.
    pub args: serde_json::Value,
    /// What an `ok` operation returned; `null` for invocations and usually for `fail`/`info`.
    pub result: Option<serde_json::Value>,
    /// Monotonic nanoseconds since the start of the run.
    pub time_ns: u64,
}

/// Thread-safe, cheap-to-clone recorder used by concurrent async clients: keeps events in memory
/// and optionally streams them to a JSONL file.
///
/// The timestamp of an event is taken under the same lock that appends it, so the in-memory and
/// on-disk order of the events is the order of their `time_ns`. Write errors while streaming do
/// not interrupt the clients: the first one is kept and returned by [`History::flush`].
#[derive(Clone, Debug)]
pub struct History {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    start: Instant,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// `None` when the recorder only streams to its file (long benchmark runs).
    events: Option<Vec<Event>>,
    /// When set, only events of these operations are kept in memory (the file gets all).
    only: Option<&'static [&'static str]>,
    file: Option<FileSink>,
}

#[derive(Debug)]
struct FileSink {
    path: PathBuf,
    writer: BufWriter<File>,
    /// First write error, returned (once) by `flush`.
    error: Option<std::io::Error>,
}

impl FileSink {
    fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path).map_err(|source| HistoryError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(FileSink {
            path,
            writer: BufWriter::new(file),
            error: None,
        })
    }
}

impl History {
    /// A recorder that only keeps events in memory.
    pub fn in_memory() -> Self {
        Self::with_sink(None, true)
    }

    /// A recorder that keeps in memory only the events of the operations named in `only`, for
    /// a checker that reads no others: its memory then grows with those operations alone, not
    /// with every reply of a long run (a Chirper timeline reply holds up to 100 posts).
    pub fn in_memory_of(only: &'static [&'static str]) -> Self {
        let history = Self::with_sink(None, true);
        history.lock().only = Some(only);
        history
    }

    /// A recorder that only streams events to `path` (created or truncated) and keeps none in
    /// memory, for runs too long to hold their history; [`History::events`] is then empty.
    pub fn streaming_to(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::with_sink(Some(FileSink::create(path)?), false))
    }

    /// A recorder that keeps events in memory and streams them to `path` (created or truncated).
    pub fn to_file(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::with_sink(Some(FileSink::create(path)?), true))
    }

    fn with_sink(file: Option<FileSink>, keep: bool) -> Self {
        History {
            inner: Arc::new(Inner {
                start: Instant::now(),
                state: Mutex::new(State {
                    events: keep.then(Vec::new),
                    only: None,
                    file,
                }),
            }),
        }
    }

    /// Records that `process` invoked `f(args)`; returns the event's `time_ns`.
    pub fn invoke(&self, process: u64, f: impl Into<String>, args: serde_json::Value) -> u64 {
        self.record(process, EventKind::Invoke, f.into(), args, None)
    }

    /// Records the completion of the operation `process` invoked earlier; returns its `time_ns`.
    ///
    /// `kind` is [`EventKind::Ok`], [`EventKind::Fail`] or [`EventKind::Info`]; `f` and `args`
    /// repeat the invocation. Passing [`EventKind::Invoke`] records an invocation, which the
    /// checkers then reject as a malformed history.
    pub fn complete(
        &self,
        process: u64,
        kind: EventKind,
        f: impl Into<String>,
        args: serde_json::Value,
        result: Option<serde_json::Value>,
    ) -> u64 {
        self.record(process, kind, f.into(), args, result)
    }

    fn record(
        &self,
        process: u64,
        kind: EventKind,
        f: String,
        args: serde_json::Value,
        result: Option<serde_json::Value>,
    ) -> u64 {
        let mut state = self.lock();
        // Saturates after ~584 years.
        let time_ns = u64::try_from(self.inner.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let event = Event {
            process,
            kind,
            f,
            args,
            result,
            time_ns,
        };
        if let Some(sink) = state.file.as_mut() {
            sink.append(&event);
        }
        let kept = state
            .only
            .is_none_or(|only| only.contains(&event.f.as_str()));
        if let (Some(events), true) = (state.events.as_mut(), kept) {
            events.push(event);
        }
        time_ns
    }

    /// A copy of every event recorded so far, in time order.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone().unwrap_or_default()
    }

    /// The events kept so far, in time order, moved out: the recorder keeps recording from an
    /// empty list. For a checker that runs once the clients have stopped, without a copy.
    pub fn take_events(&self) -> Vec<Event> {
        self.lock()
            .events
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Flushes the file (if any) and reports the first write error since the last flush.
    pub fn flush(&self) -> Result<()> {
        let mut state = self.lock();
        let Some(sink) = state.file.as_mut() else {
            return Ok(());
        };
        let error = match sink.error.take() {
            Some(error) => Some(error),
            None => sink.writer.flush().err(),
        };
        match error {
            Some(source) => Err(HistoryError::Write {
                path: sink.path.clone(),
                source,
            }),
            None => Ok(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters (at worst one event is missing from the file), so keep recording.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl FileSink {
    fn append(&mut self, event: &Event) {
        if self.error.is_some() {
            return;
        }
        let written = serde_json::to_writer(&mut self.writer, event)
            .map_err(std::io::Error::from)
            .and_then(|()| self.writer.write_all(b"\n"));
        if let Err(error) = written {
            self.error = Some(error);
        }
    }
}

/// Reads a JSONL history file. Blank lines are skipped; a bad line is an error naming its number.
pub fn read_jsonl(path: impl AsRef<Path>) -> Result<Vec<Event>> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| HistoryError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut events = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| HistoryError::Read {
            path: path.to_path_buf(),
            line: index + 1,
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
            path: path.to_path_buf(),
            line: index + 1,
            source,
        })?;
        events.push(event);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_json_matches_the_documented_format() {
        let event = Event {
            process: 3,
            kind: EventKind::Ok,
            f: "transfer".into(),
            args: json!({"from": "a", "to": "b", "amount": 3}),
            result: Some(json!({"transferred": true})),
            time_ns: 123456,
        };
        let value = serde_json::to_value(&event).expect("serialisable");
        assert_eq!(
            value,
            json!({"process": 3, "type": "ok", "f": "transfer",
                   "args": {"from": "a", "to": "b", "amount": 3},
                   "result": {"transferred": true}, "time_ns": 123456})
        );
        let invoke: Event = serde_json::from_value(
            json!({"process": 1, "type": "invoke", "f": "get", "args": {"key": "a"},
                   "result": null, "time_ns": 7}),
        )
        .expect("valid event");
        assert_eq!(invoke.kind, EventKind::Invoke);
        assert_eq!(invoke.result, None);
    }

    #[test]
    fn recorder_times_are_monotonic_and_shared_between_clones() {
        let history = History::in_memory();
        let other = history.clone();
        let t1 = history.invoke(1, "get", json!({"key": "a"}));
        let t2 = other.invoke(2, "put", json!({"key": "a", "value": 1}));
        let t3 = history.complete(
            1,
            EventKind::Ok,
            "get",
            json!({"key": "a"}),
            Some(json!({"value": 0})),
        );
        assert!(t1 <= t2 && t2 <= t3);
        let events = other.events();
        assert_eq!(events.len(), 3);
        assert_eq!(
            events.iter().map(|e| e.time_ns).collect::<Vec<_>>(),
            [t1, t2, t3]
        );
        assert_eq!(events[2].kind, EventKind::Ok);
        assert!(history.flush().is_ok());
    }

    #[test]
    fn a_recorder_of_some_operations_keeps_those_alone() {
        let history = History::in_memory_of(&["put"]);
        history.invoke(1, "get", json!({"key": "a"}));
        history.complete(1, EventKind::Ok, "get", json!({"key": "a"}), Some(json!(0)));
        history.invoke(1, "put", json!({"key": "a", "value": 1}));
        let kept: Vec<_> = history.take_events().into_iter().map(|e| e.f).collect();
        assert_eq!(kept, ["put"]);
        assert!(history.events().is_empty(), "moved out");
        history.invoke(2, "put", json!({"key": "b", "value": 2}));
        assert_eq!(history.events().len(), 1, "recording goes on");
    }

    #[test]
    fn concurrent_recording_keeps_time_order() {
        let history = History::in_memory();
        let threads: Vec<_> = (0..4)
            .map(|p| {
                let history = history.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        history.invoke(p, "get", json!({"key": "a"}));
                        history.complete(p, EventKind::Fail, "get", json!({"key": "a"}), None);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("recording thread panicked");
        }
        let events = history.events();
        assert_eq!(events.len(), 800);
        assert!(events.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
    }

    #[test]
    fn file_round_trip() -> Result<()> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("history.jsonl");
        let history = History::to_file(&path)?;
        history.invoke(1, "put", json!({"key": "a", "value": 5}));
        history.complete(
            1,
            EventKind::Ok,
            "put",
            json!({"key": "a", "value": 5}),
            Some(json!("done")),
        );
        history.invoke(2, "get", json!({"key": "a"}));
        history.complete(2, EventKind::Info, "get", json!({"key": "a"}), None);
        history.flush()?;
        assert_eq!(read_jsonl(&path)?, history.events());
        Ok(())
    }

    #[test]
    fn read_jsonl_names_the_bad_line_and_skips_blank_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bad.jsonl");
        let good = r#"{"process":1,"type":"invoke","f":"get","args":{"key":"a"},"result":null,"time_ns":1}"#;
        let bad = r#"{"process":1,"type":"done","f":"get","args":{},"result":null,"time_ns":2}"#;
        std::fs::write(&path, format!("{good}\n\n{bad}\n")).expect("write temp file");
        match read_jsonl(&path) {
            Err(err @ HistoryError::Parse { line: 3, .. }) => {
                assert!(err.to_string().contains("line 3"), "{err}");
            }
            other => panic!("expected a parse error on line 3, got {other:?}"),
        }
        std::fs::write(&path, format!("{good}\n\n")).expect("write temp file");
        assert_eq!(read_jsonl(&path).map(|e| e.len()).ok(), Some(1));
    }

    #[test]
    fn missing_file_is_an_open_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(matches!(
            read_jsonl(dir.path().join("absent.jsonl")),
            Err(HistoryError::Open { .. })
        ));
    }
}
