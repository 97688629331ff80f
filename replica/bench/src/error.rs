//! The one error type of the benchmarks ([`Error`]) and its [`Result`] alias.
//!
//! Messages name settings by their field (`clients: ...`), never by a command-line flag: the
//! CLI adds the flag. This module only defines errors; it runs nothing.

use dssmr_engine::client::{ClientError, ProxyError};
use std::path::PathBuf;

/// A boxed lower-layer error whose type the bench does not inspect (cluster start-up, plots).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a benchmark could not run or write its results.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is out of range; the text starts with the field's name.
    #[error("{0}")]
    Settings(String),
    /// The local cluster did not start.
    #[error("{0}")]
    Cluster(#[source] BoxError),
    /// A group client could not be built (a member address does not parse).
    #[error(transparent)]
    Connect(#[from] ClientError),
    /// A proxy could not be built, or a client stopped on a configuration error.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// A command of the setup failed (`step` says which, e.g. `creating user 3`).
    #[error("{step}")]
    Setup {
        /// The setup step.
        step: String,
        /// How the command failed.
        #[source]
        source: ProxyError,
    },
    /// A command of the setup never got an answer, however often it was retried.
    #[error("{step}: no answer after {attempts} attempts")]
    Unanswered {
        /// The setup step.
        step: String,
        /// How often it was tried.
        attempts: usize,
        /// The last failure.
        #[source]
        source: ClientError,
    },
    /// A command of the setup got a reply it should not get.
    #[error("{step} returned {reply}")]
    UnexpectedReply {
        /// The setup step.
        step: String,
        /// The reply, for people.
        reply: String,
    },
    /// A check of what the run did failed (e.g. acknowledged posts missing).
    #[error("{0}")]
    Check(String),
    /// A client task panicked or was cancelled.
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
    /// One run of several failed.
    #[error("run {label}")]
    Run {
        /// The run's label (`mix ×2 DS-SMR`).
        label: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// A result directory could not be created.
    #[error("cannot create directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A result file could not be written.
    #[error("cannot write {}", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Why (I/O, CSV, JSON or plotting).
        #[source]
        source: BoxError,
    },
}

/// Result alias of the benchmarks.
pub type Result<T, E = Error> = std::result::Result<T, E>;
