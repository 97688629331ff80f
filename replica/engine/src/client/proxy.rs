//! The client proxy (Algorithm 2 and §4.3): turns an application command into the multicasts
//! that execute it, transparently to the application.
//!
//! The proxy is the runtime of the algorithm, not the algorithm: for an access, the state
//! machine of [`crate::client::access`] decides every step (consult the oracle or use the
//! location cache, move variables to one partition, run the command locally or spread, retry,
//! fall back to S-SMR, start again after a change of the topology) and this module performs
//! it over the network: one multicast per step, through the group clients of
//! [`Connections`], with the proxy's timeout, and feeds the outcome back. Creates and deletes
//! (one variable each: a consult, one multicast, a retry for a misdirected delete) are still
//! decided here.
//!
//! Outcomes: `Ok` means the command took effect once with that reply. An error says whether it
//! certainly did not take effect ([`ProxyError::Rejected`]) or may have
//! ([`ProxyError::Indeterminate`]); histories record the latter as `info`.

use crate::app::StateMachine;
use crate::client::access::{Access, Policy, Request, Shared, Step, View, STALE_RETRIES};
use crate::client::cache::LocationCache;
use crate::command::{decode, encode, Command, Prophecy, Purpose, Reply};
use crate::config::ClusterConfig;
use crate::group::client::ClientError;
use crate::group::live::LiveTopology;
use crate::ids::{GroupId, MsgId, VarId, ORACLE};
pub use crate::mode::{DestinationPolicy, Mode, DEFAULT_RETRY_THRESHOLD};
use crate::multicast::McastMessage;
use futures::future::join_all;
use futures::stream::{FuturesUnordered, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::client::connections::Connections;
pub use crate::client::error::ProxyError;
use crate::client::stats::bump;
pub use crate::client::stats::{ProxyStats, StatsSnapshot};

/// How a proxy behaves.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// S-SMR or DS-SMR.
    pub mode: Mode,
    /// Retries before a command falls back to S-SMR.
    pub retry_threshold: u32,
    /// Where multi-partition commands gather their variables.
    pub destination: DestinationPolicy,
    /// How long one multicast may take (leader changes included) before the proxy gives up.
    pub timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            mode: Mode::Dssmr,
            retry_threshold: DEFAULT_RETRY_THRESHOLD,
            destination: DestinationPolicy::default(),
            timeout: Duration::from_secs(30),
        }
    }
}

impl ProxyConfig {
    /// How client proxies of the cluster `config` describes behave (the timeout is the
    /// default).
    pub fn for_cluster(config: &ClusterConfig) -> Self {
        ProxyConfig {
            mode: config.mode,
            retry_threshold: config.retry_threshold,
            destination: config.destination,
            ..ProxyConfig::default()
        }
    }

    /// What the access state machine needs of the config.
    fn policy(&self) -> Policy {
        Policy {
            mode: self.mode,
            retry_threshold: self.retry_threshold,
            destination: self.destination,
        }
    }
}

/// The proxies' view of the topology, as the access state machine reads it.
impl View for LiveTopology {
    fn partitions(&self) -> Vec<GroupId> {
        LiveTopology::partitions(self)
    }

    fn accepting(&self) -> Vec<GroupId> {
        LiveTopology::accepting(self)
    }

    fn contains(&self, g: GroupId) -> bool {
        LiveTopology::contains(self, g)
    }

    fn version(&self) -> u64 {
        LiveTopology::version(self)
    }
}

/// The outcome of a create.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Created {
    /// The variable was created.
    Created,
    /// The variable existed already; nothing changed.
    Exists,
}

/// A client proxy: one logical client issuing one command at a time.
pub struct Proxy<A: StateMachine> {
    app: Arc<A>,
    config: ProxyConfig,
    conns: Arc<Connections>,
    cache: Arc<LocationCache>,
    stats: Arc<ProxyStats>,
    sender: u64,
    seq: AtomicU64,
    /// Numbers of the messages this proxy may still submit; the lowest is its floor, which
    /// every message carries ([`McastMessage::done_below`]).
    outstanding: Mutex<BTreeSet<u64>>,
    rng: Mutex<StdRng>,
}

/// A message of the proxy in flight: its number leaves the outstanding set when dropped, once
/// the proxy is done submitting it (answered, or given up on).
struct InFlight<'a> {
    outstanding: &'a Mutex<BTreeSet<u64>>,
    seq: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.outstanding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.seq);
    }
}

impl<A: StateMachine> Proxy<A> {
    /// A proxy over `conns`, sharing `cache` and `stats` with the process's other proxies.
    pub fn new(
        app: Arc<A>,
        config: ProxyConfig,
        conns: Arc<Connections>,
        cache: Arc<LocationCache>,
        stats: Arc<ProxyStats>,
    ) -> Result<Self, ProxyError> {
        if conns.partitions().is_empty() {
            return Err(ProxyError::Config("the cluster has no partition".into()));
        }
        if config.mode == Mode::Dssmr && !conns.live().contains(ORACLE) {
            return Err(ProxyError::Config(
                "mode dssmr needs an oracle group (group 0)".into(),
            ));
        }
        let mut seed_rng = rand::rng();
        Ok(Proxy {
            app,
            config,
            conns,
            cache,
            stats,
            sender: seed_rng.random(),
            seq: AtomicU64::new(0),
            outstanding: Mutex::default(),
            rng: Mutex::new(StdRng::seed_from_u64(seed_rng.random())),
        })
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<ProxyStats> {
        &self.stats
    }

    /// The client of group `g` (asked of the oracle when not known yet).
    async fn group_client(
        &self,
        g: GroupId,
    ) -> Result<Arc<crate::group::client::GroupClient>, ProxyError> {
        self.conns
            .client(g)
            .await
            .ok_or_else(|| ProxyError::Config(format!("the cluster has no group {g}")))
    }

    /// A new message of this proxy, carrying its floor, and its place among the outstanding.
    fn message(&self, dests: Vec<GroupId>, cmd: &Command) -> (McastMessage, InFlight<'_>) {
        let floor = {
            let mut out = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            out.insert(seq);
            (seq, out.first().copied().unwrap_or(seq))
        };
        let (seq, done_below) = floor;
        let id = MsgId {
            sender: self.sender,
            seq,
        };
        let msg = McastMessage::new(id, dests, encode(cmd)).with_done_below(done_below);
        let in_flight = InFlight {
            outstanding: &self.outstanding,
            seq,
        };
        (msg, in_flight)
    }

    /// Multicasts `cmd` to `dests` and waits for the replies of the groups in `wait_at`.
    async fn multicast(
        &self,
        dests: Vec<GroupId>,
        cmd: &Command,
        wait_at: &[GroupId],
    ) -> Result<Vec<Reply>, ProxyError> {
        let (msg, _in_flight) = self.message(dests, cmd);
        let deadline = Instant::now() + self.config.timeout;
        let mut calls = Vec::with_capacity(wait_at.len());
        for g in wait_at {
            calls.push((self.group_client(*g).await?, *g));
        }
        let results = join_all(calls.iter().map(|(c, _)| c.submit(&msg, deadline))).await;
        ProxyError::combine(results.into_iter().map(|r| self.reply_of(r)).collect())
    }

    /// Multicasts `cmd` to `dests`, submitting it at every one, and returns the first reply;
    /// when none answers, the least certain of their errors ([`ProxyError::least_certain`]).
    async fn multicast_first(
        &self,
        dests: Vec<GroupId>,
        cmd: &Command,
    ) -> Result<Reply, ProxyError> {
        let (msg, _in_flight) = self.message(dests, cmd);
        let deadline = Instant::now() + self.config.timeout;
        let mut clients = Vec::with_capacity(msg.dests.len());
        for g in &msg.dests {
            clients.push(self.group_client(*g).await?);
        }
        let mut calls: FuturesUnordered<_> =
            clients.iter().map(|c| c.submit(&msg, deadline)).collect();
        let mut errors = Vec::new();
        while let Some(outcome) = calls.next().await {
            match self.reply_of(outcome) {
                Ok(reply) => return Ok(reply),
                Err(e) => errors.push(e),
            }
        }
        Err(ProxyError::least_certain(errors))
    }

    fn reply_of(
        &self,
        r: Result<crate::group::client::Completion, ClientError>,
    ) -> Result<Reply, ProxyError> {
        match r {
            Ok(c) => decode::<Reply>(&c.reply, "reply").map_err(|e| {
                ProxyError::Indeterminate(ClientError::Unavailable {
                    group: ORACLE,
                    last: e.to_string(),
                })
            }),
            Err(ClientError::Rejected { message, .. }) => Err(ProxyError::Rejected(message)),
            Err(ClientError::UnknownDestination { message, .. }) => Err(ProxyError::Stale(message)),
            Err(ClientError::AskAgain { message, .. }) => Err(ProxyError::AskAgain(message)),
            Err(e) => Err(ProxyError::Indeterminate(e)),
        }
    }

    fn app_reply(&self, bytes: &[u8]) -> Result<A::Reply, ProxyError> {
        decode(bytes, "application reply").map_err(|e| ProxyError::Rejected(e.to_string()))
    }

    async fn consult(
        &self,
        vars: Vec<VarId>,
        optional: Vec<VarId>,
        purpose: Purpose,
    ) -> Result<Prophecy, ProxyError> {
        bump(&self.stats.consults, 1);
        let cmd = Command::Consult {
            vars,
            optional,
            purpose,
        };
        match self.multicast(vec![ORACLE], &cmd, &[ORACLE]).await?.pop() {
            Some(Reply::Prophecy(p)) => Ok(p),
            Some(other) => Err(ProxyError::unexpected(other)),
            None => Err(ProxyError::Rejected("no reply from the oracle".into())),
        }
    }

    /// Executes an application command and returns its reply: Algorithm 2
    /// ([`crate::client::access`]) decides each step, this proxy performs it.
    #[tracing::instrument(
        level = "debug",
        name = "access",
        skip_all,
        fields(sender = %format_args!("{:x}", self.sender), mode = self.config.mode.name())
    )]
    pub async fn access(&self, cmd: &A::Command) -> Result<A::Reply, ProxyError> {
        bump(&self.stats.commands, 1);
        let place = |v: &VarId, partitions: &[GroupId]| self.app.place(v, partitions);
        let request = Request {
            omega: self.app.variables(cmd),
            may_have_dependencies: self.app.may_have_dependencies(cmd),
            read_only: self.app.is_read_only(cmd),
            place: &place,
        };
        let shared = Shared {
            cache: &self.cache,
            stats: &self.stats,
            view: self.conns.live().as_ref(),
        };
        let choose = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            StdRng::from_rng(&mut *rng)
        };
        let mut access = Access::new(request, self.config.policy(), shared, choose);
        let payload = encode(cmd);
        let mut step = access.start();
        let r = loop {
            step = match step {
                Step::Consult { vars, optional } => {
                    match self.consult(vars, optional, Purpose::Access).await {
                        Ok(prophecy) => access.on_prophecy(prophecy),
                        Err(e) => access.on_error(e),
                    }
                }
                Step::Move { to, moves } => access.on_moved(self.moves(to, &moves).await),
                Step::Run { dests, execution } => {
                    let c = Command::Access {
                        cmd: payload.clone(),
                        execution,
                    };
                    match self.multicast_first(dests, &c).await {
                        Ok(reply) => access.on_reply(reply),
                        Err(e) => access.on_error(e),
                    }
                }
                Step::Refresh => {
                    let _ = self.conns.live().refresh(Duration::ZERO).await;
                    access.on_refreshed()
                }
                Step::Done(bytes) => break self.app_reply(&bytes),
                Step::Missing(vars) => break Ok(self.app.missing(cmd, &vars)),
                Step::Fail(e) => break Err(e),
            };
        };
        match &r {
            Ok(_) => {
                bump(&self.stats.completed, 1);
                tracing::debug!("done");
            }
            Err(e) => tracing::debug!(error = %e, "failed"),
        }
        r
    }

    /// Multicasts every move at once, each to the oracle, its source and `to`, and waits
    /// until `to` answered each (a reply of any kind counts: the command finds out).
    async fn moves(
        &self,
        to: GroupId,
        moves: &[(GroupId, Vec<VarId>)],
    ) -> Vec<Result<(), ProxyError>> {
        let calls = moves.iter().map(|(from, vars)| {
            let cmd = Command::Move {
                vars: vars.clone(),
                from: *from,
                to,
            };
            async move {
                self.multicast(vec![ORACLE, *from, to], &cmd, &[to])
                    .await
                    .map(|_| ())
            }
        });
        join_all(calls).await
    }

    /// Creates `var` with `value` (Algorithm 2 with a create command).
    pub async fn create(&self, var: VarId, value: &A::Value) -> Result<Created, ProxyError> {
        bump(&self.stats.commands, 1);
        let value = encode(value);
        let mut stale = 0;
        loop {
            match self.create_once(&var, &value).await {
                // The partition the oracle chose stopped taking variables (drained) before
                // the create was ordered: nothing happened; learn the topology, again.
                Err(ProxyError::Stale(why)) if stale < STALE_RETRIES => {
                    stale += 1;
                    tracing::debug!(%why, "topology changed under a create; again");
                    let _ = self.conns.live().refresh(Duration::ZERO).await;
                }
                r => return r,
            }
        }
    }

    async fn create_once(&self, var: &VarId, value: &[u8]) -> Result<Created, ProxyError> {
        let (var, value) = (var.clone(), value.to_vec());
        let target = match self.config.mode {
            Mode::Ssmr => self.app.place(&var, &self.conns.partitions()),
            Mode::Dssmr => {
                match self
                    .consult(vec![var.clone()], Vec::new(), Purpose::Create)
                    .await?
                {
                    Prophecy::Nok { .. } => {
                        bump(&self.stats.completed, 1);
                        return Ok(Created::Exists);
                    }
                    Prophecy::Locations(l) if l.len() == 1 => l[0].1,
                    other => {
                        return Err(ProxyError::Rejected(format!(
                            "unexpected prophecy for a create: {other:?}"
                        )))
                    }
                }
            }
        };
        let dests = match self.config.mode {
            Mode::Ssmr => vec![target],
            Mode::Dssmr => vec![ORACLE, target],
        };
        let cmd = Command::Create {
            var: var.clone(),
            value,
        };
        let created = match self.multicast(dests, &cmd, &[target]).await?.pop() {
            Some(Reply::Ok) => {
                self.cache.update([(var, target)]);
                Created::Created
            }
            Some(Reply::Nok) => Created::Exists,
            Some(other) => return Err(ProxyError::unexpected(other)),
            None => return Err(ProxyError::Rejected("no reply".into())),
        };
        bump(&self.stats.completed, 1);
        Ok(created)
    }

    /// Deletes `var` (nothing happens if it does not exist).
    pub async fn delete(&self, var: VarId) -> Result<(), ProxyError> {
        bump(&self.stats.commands, 1);
        let cmd = Command::Delete { var: var.clone() };
        if self.config.mode == Mode::Ssmr {
            let p = self.app.place(&var, &self.conns.partitions());
            return match self.multicast(vec![p], &cmd, &[p]).await?.pop() {
                Some(Reply::Ok) => {
                    bump(&self.stats.completed, 1);
                    Ok(())
                }
                Some(other) => Err(ProxyError::unexpected(other)),
                None => Err(ProxyError::Rejected("no reply".into())),
            };
        }
        let mut attempt = 0;
        loop {
            let dests: Vec<GroupId> = if attempt >= self.config.retry_threshold {
                bump(&self.stats.fallbacks, 1);
                std::iter::once(ORACLE)
                    .chain(self.conns.partitions())
                    .collect()
            } else {
                let cached = self.cache.lookup(std::slice::from_ref(&var));
                let p = match cached {
                    Some(l) => l[0].1,
                    None => match self
                        .consult(vec![var.clone()], Vec::new(), Purpose::Delete)
                        .await?
                    {
                        Prophecy::Ok => {
                            bump(&self.stats.completed, 1);
                            return Ok(());
                        }
                        Prophecy::Locations(l) if !l.is_empty() => l[0].1,
                        other => {
                            return Err(ProxyError::Rejected(format!(
                                "unexpected prophecy for a delete: {other:?}"
                            )))
                        }
                    },
                };
                vec![ORACLE, p]
            };
            // Wait for the partitions too: once they have all delivered the delete, no later
            // command can still find the variable there.
            let replies = self.multicast(dests.clone(), &cmd, &dests).await?;
            self.cache.forget([&var]);
            match replies.into_iter().next() {
                Some(Reply::Ok) => {
                    bump(&self.stats.completed, 1);
                    return Ok(());
                }
                Some(Reply::Retry { .. }) => {
                    bump(&self.stats.retries, 1);
                    attempt += 1;
                }
                Some(other) => return Err(ProxyError::unexpected(other)),
                None => return Err(ProxyError::Rejected("no reply".into())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_config_sets_mode_retries_and_destination() {
        let config = ClusterConfig::from_yaml(
            "name: demo\nmode: dssmr\napp: kv\nretryThreshold: 3\ndestination: affinity\n\
             oracle:\n  members: ['127.0.0.1:7000']\n\
             partitions:\n  - members: ['127.0.0.1:7010']\n",
        )
        .expect("valid config");
        let p = ProxyConfig::for_cluster(&config);
        assert_eq!(p.mode, Mode::Dssmr);
        assert_eq!(p.retry_threshold, 3);
        assert_eq!(p.destination, DestinationPolicy::Affinity);
        assert_eq!(p.timeout, ProxyConfig::default().timeout);
    }
}
