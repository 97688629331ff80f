//! The replication scheme of a cluster and the client proxy's destination policy: the words a
//! config, a command line and a result file share.
//!
//! This module only names and parses; the engine's client proxy gives them their meaning.

use serde::{Deserialize, Serialize};
use std::str::FromStr;
use thiserror::Error;

/// A word on a command line or in a config that is not one of those accepted.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("unknown {what} {given:?} (expected {expected})")]
pub struct UnknownName {
    /// What the word should name (`mode`, `app`, ...).
    pub what: &'static str,
    /// The word given.
    pub given: String,
    /// The accepted words, as a phrase.
    pub expected: &'static str,
}

impl UnknownName {
    /// `given` is not a `what`; `expected` lists the accepted words.
    pub fn new(what: &'static str, given: &str, expected: &'static str) -> Self {
        UnknownName {
            what,
            given: given.to_string(),
            expected,
        }
    }
}

/// Retries before a DS-SMR command falls back to S-SMR, unless the config says otherwise.
pub const DEFAULT_RETRY_THRESHOLD: u32 = 5;

/// Which replication scheme a cluster runs. Both run on the same code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Scalable SMR: static placement, multi-partition commands with variable exchange.
    Ssmr,
    /// Dynamic S-SMR: variables move so that commands run in one partition.
    Dssmr,
}

impl Mode {
    /// The name used in configs, command lines and results.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Ssmr => "ssmr",
            Mode::Dssmr => "dssmr",
        }
    }
}

impl FromStr for Mode {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "ssmr" | "s-smr" => Ok(Mode::Ssmr),
            "dssmr" | "ds-smr" => Ok(Mode::Dssmr),
            _ => Err(UnknownName::new("mode", s, "ssmr or dssmr")),
        }
    }
}

/// Where a proxy gathers the variables of a multi-partition command (Algorithm 2, line 10).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationPolicy {
    /// A random partition among those involved (the paper's default; balances load).
    #[default]
    Random,
    /// The involved partition holding most of the variables (fewest moves); ties at random.
    Majority,
    /// The involved partition holding most of the variables and of the variables this
    /// process saw accessed together with them (label propagation over the co-access graph,
    /// see the engine's `client::affinity`); ties at random.
    Affinity,
}

impl DestinationPolicy {
    /// The name used in configs, command lines and results.
    pub fn name(self) -> &'static str {
        match self {
            DestinationPolicy::Random => "random",
            DestinationPolicy::Majority => "majority",
            DestinationPolicy::Affinity => "affinity",
        }
    }
}

impl FromStr for DestinationPolicy {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "random" => Ok(DestinationPolicy::Random),
            "majority" => Ok(DestinationPolicy::Majority),
            "affinity" => Ok(DestinationPolicy::Affinity),
            _ => Err(UnknownName::new(
                "destination policy",
                s,
                "random, majority or affinity",
            )),
        }
    }
}
