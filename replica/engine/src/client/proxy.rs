//! The client proxy (Algorithm 2 and §4.3): turns an application command into the multicasts
//! that execute it, transparently to the application.
//!
//! DS-SMR: locate the command's variables (cache hit: no oracle round trip; miss: consult the
//! oracle), and if they are spread over several partitions pick one destination and move them
//! all there at once (one move per source partition), then multicast the command to that one
//! partition. A `retry` reply (a variable moved away meanwhile, or the command needs more
//! variables than it could tell, such as a poster's followers) updates the cache and starts
//! over; after `retry_threshold` retries the command falls back to S-SMR, multicast to every
//! partition, which always terminates. The dependencies a retry revealed are remembered per ω
//! (a hint in the [`LocationCache`], for commands that may have dependencies at all), so the
//! next such command gathers them at once.
//!
//! Under the `affinity` destination policy ([`crate::client::affinity`]) the destination is
//! where the variables' co-access neighbourhood lives, and a variable settled in another
//! partition is not moved: the command then runs spread over the partitions holding its
//! variables ([`Execution::Spread`]), which check together that they hold all of them.
//!
//! S-SMR: the placement is static (the application's rule), so the proxy computes the
//! partitions itself and multicasts the command to all of them; they exchange variables.
//!
//! Outcomes: `Ok` means the command took effect once with that reply. An error says whether it
//! certainly did not take effect ([`ProxyError::Rejected`]) or may have
//! ([`ProxyError::Indeterminate`]); histories record the latter as `info`.

use crate::app::StateMachine;
use crate::client::cache::LocationCache;
use crate::command::{decode, encode, Command, Execution, Prophecy, Purpose, Reply};
use crate::config::ClusterConfig;
use crate::group::client::ClientError;
use crate::ids::{GroupId, MsgId, VarId, ORACLE};
pub use crate::mode::{DestinationPolicy, Mode, DEFAULT_RETRY_THRESHOLD};
use crate::multicast::McastMessage;
use futures::future::{join_all, select_ok};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;

pub use crate::client::connections::Connections;
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
}

/// Why a command did not complete.
#[derive(Debug, Error)]
pub enum ProxyError {
    /// The command certainly did not take effect (malformed, or refused by the cluster).
    #[error("command rejected: {0}")]
    Rejected(String),
    /// The cluster did not answer in time: the command may or may not have taken effect.
    #[error("outcome unknown: {0}")]
    Indeterminate(#[source] ClientError),
    /// The proxy's configuration does not fit the cluster.
    #[error("{0}")]
    Config(String),
    /// A group did not know a destination of the command (the topology changed since this
    /// proxy looked): the command did not take effect there; refresh and try again.
    #[error("topology changed: {0}")]
    Stale(String),
    /// A read asked again was answered before and its reply not kept: it took no effect;
    /// run it again (as a new message).
    #[error("read asked again: {0}")]
    AskAgain(String),
}

/// The outcome of a create.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Created {
    /// The variable was created.
    Created,
    /// The variable existed already; nothing changed.
    Exists,
}

/// How many times a command is run again because the topology changed under it.
const STALE_RETRIES: u32 = 8;

/// A client proxy: one logical client issuing one command at a time.
pub struct Proxy<A: StateMachine> {
    app: Arc<A>,
    config: ProxyConfig,
    conns: Arc<Connections>,
    cache: Arc<LocationCache>,
    stats: Arc<ProxyStats>,
    sender: u64,
    seq: AtomicU64,
    rng: Mutex<StdRng>,
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

    fn next_id(&self) -> MsgId {
        MsgId {
            sender: self.sender,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Multicasts `cmd` to `dests` and waits for the replies of the groups in `wait_at`.
    async fn multicast(
        &self,
        dests: Vec<GroupId>,
        cmd: &Command,
        wait_at: &[GroupId],
    ) -> Result<Vec<Reply>, ProxyError> {
        let msg = McastMessage::new(self.next_id(), dests, encode(cmd));
        let deadline = Instant::now() + self.config.timeout;
        let mut calls = Vec::with_capacity(wait_at.len());
        for g in wait_at {
            calls.push((self.group_client(*g).await?, *g));
        }
        let results = join_all(calls.iter().map(|(c, _)| c.submit(&msg, deadline))).await;
        results.into_iter().map(|r| self.reply_of(r)).collect()
    }

    /// Multicasts `cmd` to `dests`, submitting it at every one, and returns the first reply.
    async fn multicast_first(
        &self,
        dests: Vec<GroupId>,
        cmd: &Command,
    ) -> Result<Reply, ProxyError> {
        let msg = McastMessage::new(self.next_id(), dests, encode(cmd));
        let deadline = Instant::now() + self.config.timeout;
        let mut clients = Vec::with_capacity(msg.dests.len());
        for g in &msg.dests {
            clients.push(self.group_client(*g).await?);
        }
        let calls = clients.iter().map(|c| Box::pin(c.submit(&msg, deadline)));
        let first = select_ok(calls).await.map(|(c, _)| c);
        self.reply_of(first)
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

    fn unexpected(reply: Reply) -> ProxyError {
        match reply {
            Reply::Rejected(m) => ProxyError::Rejected(m),
            Reply::Refused(r) if r.is_stale() => ProxyError::Stale(r.to_string()),
            Reply::Refused(r) => ProxyError::Rejected(r.to_string()),
            other => ProxyError::Rejected(format!("unexpected reply {other:?}")),
        }
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
            Some(other) => Err(Self::unexpected(other)),
            None => Err(ProxyError::Rejected("no reply from the oracle".into())),
        }
    }

    /// Executes an application command and returns its reply.
    #[tracing::instrument(
        level = "debug",
        name = "access",
        skip_all,
        fields(sender = %format_args!("{:x}", self.sender), mode = self.config.mode.name())
    )]
    pub async fn access(&self, cmd: &A::Command) -> Result<A::Reply, ProxyError> {
        bump(&self.stats.commands, 1);
        let mut stale = 0;
        let r = loop {
            let seen = self.conns.live().version();
            let r = match self.config.mode {
                Mode::Ssmr => self.access_ssmr(cmd).await,
                Mode::Dssmr => self.access_dssmr(cmd).await,
            };
            match r {
                // A partition was removed (or added) under the command: learn the topology,
                // forget what the cache says of the command's variables, run it again.
                Err(ProxyError::Stale(why)) if stale < STALE_RETRIES => {
                    stale += 1;
                    tracing::debug!(%why, "topology changed under a command; again");
                    let _ = self.conns.live().refresh(std::time::Duration::ZERO).await;
                    self.cache.forget(&self.app.variables(cmd));
                }
                // A read that could not be answered took no effect. When the topology changed
                // under it (a partition it went to was removed meanwhile), run it again.
                Err(ProxyError::Indeterminate(why))
                    if stale < STALE_RETRIES
                        && self.app.is_read_only(cmd)
                        && self.topology_moved_on(seen).await =>
                {
                    stale += 1;
                    tracing::debug!(%why, "a read failed while the topology changed; again");
                    self.cache.forget(&self.app.variables(cmd));
                }
                Err(ProxyError::AskAgain(why)) if stale < STALE_RETRIES => {
                    stale += 1;
                    tracing::debug!(%why, "a read's reply was not kept; again");
                }
                r => break r,
            }
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

    /// True when the oracle's topology is newer than version `seen` (asked at once).
    async fn topology_moved_on(&self, seen: u64) -> bool {
        let live = self.conns.live();
        let _ = live.refresh(std::time::Duration::ZERO).await;
        live.version() > seen
    }

    /// S-SMR: multicast to the partitions the static placement gives.
    async fn access_ssmr(&self, cmd: &A::Command) -> Result<A::Reply, ProxyError> {
        let parts = self.conns.partitions();
        let dests: Vec<GroupId> = if self.app.may_have_dependencies(cmd) {
            parts.clone()
        } else {
            let set: BTreeSet<GroupId> = self
                .app
                .variables(cmd)
                .iter()
                .map(|v| self.app.place(v, &parts))
                .collect();
            if set.is_empty() {
                vec![parts[0]]
            } else {
                set.into_iter().collect()
            }
        };
        self.exchange(dests, cmd).await
    }

    /// Algorithm 1 over `dests`: every destination runs the command; the first reply wins.
    async fn exchange(
        &self,
        dests: Vec<GroupId>,
        cmd: &A::Command,
    ) -> Result<A::Reply, ProxyError> {
        let c = Command::Access {
            cmd: encode(cmd),
            execution: Execution::Exchange,
        };
        match self.multicast_first(dests, &c).await? {
            Reply::Done(bytes) => self.app_reply(&bytes),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Algorithm 2 with the cache of §4.3 and the S-SMR fallback.
    async fn access_dssmr(&self, cmd: &A::Command) -> Result<A::Reply, ProxyError> {
        let mut omega = self.app.variables(cmd);
        omega.sort();
        omega.dedup();
        let payload = encode(cmd);
        let mut needed = omega.clone();
        // Only commands that can have dependencies use (and leave) hints: a getTimeline has
        // the same ω as its user's posts but needs none of the followers.
        let hinted = self.app.may_have_dependencies(cmd);
        if let Some(deps) = hinted.then(|| self.cache.dependencies(&omega)).flatten() {
            needed.extend(deps);
            needed.sort();
            needed.dedup();
        }
        let mut attempt: u32 = 0;
        loop {
            if attempt >= self.config.retry_threshold {
                bump(&self.stats.fallbacks, 1);
                return self.exchange(self.conns.partitions(), cmd).await;
            }
            // Cached locations in a partition that is gone (removed after a drain) are stale.
            let cached = self.cache.lookup(&needed).filter(|l| {
                let known = l.iter().all(|(_, p)| self.conns.live().contains(*p));
                if !known {
                    self.cache.forget(&needed);
                }
                known
            });
            let locations = match cached {
                Some(l) => {
                    if attempt == 0 {
                        bump(&self.stats.cache_hits, 1);
                    }
                    l
                }
                None => {
                    if attempt == 0 {
                        bump(&self.stats.cache_misses, 1);
                    }
                    let optional: Vec<VarId> = needed
                        .iter()
                        .filter(|v| omega.binary_search(v).is_err())
                        .cloned()
                        .collect();
                    match self
                        .consult(omega.clone(), optional, Purpose::Access)
                        .await?
                    {
                        Prophecy::Nok { vars } => return Ok(self.app.missing(cmd, &vars)),
                        Prophecy::Locations(l) => {
                            self.cache.update(l.iter().cloned());
                            l
                        }
                        Prophecy::Ok => {
                            return Err(ProxyError::Rejected(
                                "oracle answered ok to an access consult".into(),
                            ))
                        }
                    }
                }
            };
            let (target, spread) = self.gather(&locations).await?;
            if self.config.destination == DestinationPolicy::Affinity {
                // After the choice: what this command accesses is evidence for the next ones.
                self.cache.affinity().record(&omega, &needed);
            }
            if !spread.is_empty() {
                bump(&self.stats.spreads, 1);
                let c = Command::Access {
                    cmd: payload.clone(),
                    execution: Execution::Spread {
                        needed: needed.clone(),
                    },
                };
                let mut dests = spread;
                dests.push(target);
                dests.sort();
                tracing::debug!(?omega, needed = needed.len(), ?dests, "spread");
                match self.multicast_first(dests, &c).await? {
                    Reply::Done(bytes) => return self.app_reply(&bytes),
                    Reply::Retry { needed: gamma, .. } => {
                        bump(&self.stats.retries, 1);
                        if hinted {
                            self.cache.remember_dependencies(&omega, &gamma);
                        }
                        self.cache.forget(gamma.iter().chain(&needed));
                        let mut next: BTreeSet<VarId> = gamma.into_iter().collect();
                        next.extend(omega.iter().cloned());
                        needed = next.into_iter().collect();
                        attempt += 1;
                        continue;
                    }
                    other => return Err(Self::unexpected(other)),
                }
            }
            let c = Command::Access {
                cmd: payload.clone(),
                execution: Execution::Local,
            };
            match self.multicast(vec![target], &c, &[target]).await?.pop() {
                Some(Reply::Done(bytes)) => return self.app_reply(&bytes),
                Some(Reply::Retry {
                    needed: gamma,
                    local,
                }) => {
                    bump(&self.stats.retries, 1);
                    if hinted {
                        self.cache.remember_dependencies(&omega, &gamma);
                    }
                    let here: BTreeSet<&VarId> = local.iter().collect();
                    self.cache
                        .forget(gamma.iter().chain(&needed).filter(|v| !here.contains(v)));
                    self.cache.update(local.iter().map(|v| (v.clone(), target)));
                    let mut next: BTreeSet<VarId> = gamma.into_iter().collect();
                    next.extend(omega.iter().cloned());
                    needed = next.into_iter().collect();
                    attempt += 1;
                }
                Some(other) => return Err(Self::unexpected(other)),
                None => return Err(ProxyError::Rejected("no reply".into())),
            }
        }
    }

    /// Picks the destination partition and moves every variable there (one move per source
    /// partition, all multicast at once); waits until the destination has them. Under the
    /// affinity policy, variables settled where they are stay there; the partitions holding
    /// them are returned, and the command must run spread over them and the destination.
    async fn gather(
        &self,
        locations: &[(VarId, GroupId)],
    ) -> Result<(GroupId, Vec<GroupId>), ProxyError> {
        let mut by_partition: BTreeMap<GroupId, Vec<VarId>> = BTreeMap::new();
        for (v, p) in locations {
            by_partition.entry(*p).or_default().push(v.clone());
        }
        let involved: Vec<GroupId> = by_partition.keys().copied().collect();
        let target = match involved.len() {
            0 => {
                // Nothing to locate (a command without variables): any partition runs it.
                let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                let any = *self
                    .conns
                    .partitions()
                    .choose(&mut *rng)
                    .unwrap_or(&GroupId(1));
                return Ok((any, Vec::new()));
            }
            1 => return Ok((involved[0], Vec::new())),
            _ => self.choose_destination(&by_partition),
        };
        let mut spread = Vec::new();
        if self.config.destination == DestinationPolicy::Affinity {
            let affinity = self.cache.affinity();
            for (p, vars) in by_partition.iter_mut().filter(|(p, _)| **p != target) {
                vars.retain(|v| !affinity.settled(v, *p, target, self.cache.as_ref()));
                if vars.len() < locations.iter().filter(|(_, at)| at == p).count() {
                    spread.push(*p);
                }
            }
        }
        let moves: Vec<(GroupId, Vec<VarId>)> = by_partition
            .into_iter()
            .filter(|(p, vars)| *p != target && !vars.is_empty())
            .collect();
        let calls = moves.iter().map(|(from, vars)| {
            bump(&self.stats.move_commands, 1);
            bump(&self.stats.moves, vars.len() as u64);
            let cmd = Command::Move {
                vars: vars.clone(),
                from: *from,
                to: target,
            };
            async move {
                self.multicast(vec![ORACLE, *from, target], &cmd, &[target])
                    .await
            }
        });
        for (r, (_, vars)) in join_all(calls).await.into_iter().zip(&moves) {
            match r {
                Ok(_) => self.cache.update(vars.iter().map(|v| (v.clone(), target))),
                // A move that failed or timed out may or may not have happened; the command
                // finds out (retry) and the cache entries are dropped so they get refreshed.
                Err(ProxyError::Indeterminate(_)) => self.cache.forget(vars),
                Err(e) => return Err(e),
            }
        }
        Ok((target, spread))
    }

    /// The destination of a command's variables: never a partition being drained, and
    /// under the paper's `random` policy any partition that takes variables (its
    /// `getTargetPartition`), so partitions added at run time get their share.
    fn choose_destination(&self, by_partition: &BTreeMap<GroupId, Vec<VarId>>) -> GroupId {
        let accepting = self.conns.accepting();
        let involved: Vec<GroupId> = by_partition
            .keys()
            .copied()
            .filter(|p| accepting.contains(p))
            .collect();
        let involved = if involved.is_empty() {
            by_partition.keys().copied().collect()
        } else {
            involved
        };
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let candidates: Vec<GroupId> = match self.config.destination {
            DestinationPolicy::Random if !accepting.is_empty() => accepting,
            DestinationPolicy::Random => involved,
            DestinationPolicy::Majority => {
                let most = involved
                    .iter()
                    .map(|p| by_partition[p].len())
                    .max()
                    .unwrap_or(0);
                involved
                    .into_iter()
                    .filter(|p| by_partition[p].len() == most)
                    .collect()
            }
            DestinationPolicy::Affinity => {
                match self
                    .cache
                    .affinity()
                    .destination(by_partition, self.cache.as_ref())
                {
                    Some(p) if accepting.contains(&p) => return p,
                    _ => involved,
                }
            }
        };
        *candidates.choose(&mut *rng).unwrap_or(&GroupId(1))
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
                    let _ = self.conns.live().refresh(std::time::Duration::ZERO).await;
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
            Some(other) => return Err(Self::unexpected(other)),
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
                Some(other) => Err(Self::unexpected(other)),
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
                Some(other) => return Err(Self::unexpected(other)),
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
