//! replicas: what the controller asks a running cluster's replicas, beside the Kubernetes API:
//! the oracle's admin API (status, `AddPartition`, `DrainPartition`) over gRPC, and the
//! replicas' `/metrics` for the cluster's throughput and move rate.
//!
//! Replicas are reached by the DNS names of their pods (`<pod>.<group>.<ns>.svc`), which
//! resolve where the operator runs in the cluster. [`ReplicaAccess::Map`] replaces those names
//! with other addresses (tests with replicas on 127.0.0.1); an unmapped name is an error, so
//! a test never reaches for DNS. Every call is bounded by [`CALL_TIMEOUT`]: an unreachable
//! cluster slows a reconcile down by seconds, never stalls it.

use crate::scale::{GroupReport, OracleView, Placement};
use dssmr_api::admin::AdminConnection;
use dssmr_api::config::ClusterConfig;
use dssmr_api::proto::ClusterStatus;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Longest wait for one admin call or one scrape.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a replica could not be asked.
#[derive(Debug, Error)]
pub enum ReplicaError {
    /// Replicas are not contacted ([`ReplicaAccess::Off`]).
    #[error("replica access is off")]
    Off,
    /// The address has no mapping ([`ReplicaAccess::Map`]).
    #[error("no address mapped for {0}")]
    Unmapped(String),
    /// The admin API answered with an error, or no oracle replica answered.
    #[error("admin API: {0}")]
    Admin(String),
    /// A scrape failed.
    #[error("GET http://{addr}/metrics: {reason}")]
    Scrape {
        /// The replica's HTTP address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// Nothing answered in time.
    #[error("{0}: no answer within {CALL_TIMEOUT:?}")]
    Timeout(String),
}

/// How replica addresses are reached.
#[derive(Clone, Debug, Default)]
pub enum ReplicaAccess {
    /// As written in the cluster config (pod DNS names).
    #[default]
    Dns,
    /// Through this map (`host:port` in the config → gRPC address to dial, `http://host:port`
    /// → its HTTP address); unmapped: an error.
    Map(HashMap<String, String>),
    /// Not at all (reconcile tests against a mock API server): the oracle is never asked and
    /// nothing is scraped.
    Off,
}

impl ReplicaAccess {
    /// The address to dial for `addr`.
    pub fn dial(&self, addr: &str) -> Result<String, ReplicaError> {
        match self {
            ReplicaAccess::Dns => Ok(addr.to_string()),
            ReplicaAccess::Off => Err(ReplicaError::Off),
            ReplicaAccess::Map(m) => m
                .get(addr)
                .cloned()
                .ok_or_else(|| ReplicaError::Unmapped(addr.to_string())),
        }
    }

    /// The HTTP address (`/metrics`) of the replica whose member address is `member`: the
    /// member's host on the replicas' HTTP port (`HTTP_PORT`, as every pod serves it), or in a
    /// map the value of `http://<member>`.
    pub fn http(&self, member: &str) -> Result<String, ReplicaError> {
        match self {
            ReplicaAccess::Map(m) => m
                .get(&format!("http://{member}"))
                .cloned()
                .ok_or_else(|| ReplicaError::Unmapped(format!("http://{member}"))),
            _ => {
                let host = member.rsplit_once(':').map_or(member, |(h, _)| h);
                self.dial(&format!("{host}:{HTTP_PORT}"))
            }
        }
    }

    /// The config address that `dialed` stands for (the inverse of [`Self::dial`]).
    pub fn undial(&self, dialed: &str) -> String {
        match self {
            ReplicaAccess::Dns | ReplicaAccess::Off => dialed.to_string(),
            ReplicaAccess::Map(m) => m
                .iter()
                .find(|(_, v)| v.as_str() == dialed)
                .map(|(k, _)| k.clone())
                .unwrap_or_else(|| dialed.to_string()),
        }
    }

    /// `config` with every member address replaced by the one to dial.
    fn dialed(&self, config: &ClusterConfig) -> Result<ClusterConfig, ReplicaError> {
        let mut c = config.clone();
        for g in c.oracle.iter_mut().chain(c.partitions.iter_mut()) {
            for m in &mut g.members {
                *m = self.dial(m)?;
            }
        }
        Ok(c)
    }
}

/// The oracle's answer to `Status`, in the controller's terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OracleReport {
    /// Where each partition stands.
    pub view: OracleView,
    /// Variables in each partition.
    pub variables: BTreeMap<u32, u64>,
    /// Leader of each group (`oracle`, `p1`, ...) as a config address; absent: no leader.
    pub leaders: BTreeMap<String, String>,
    /// Groups whose members answered but none leads.
    pub leaderless: Vec<String>,
    /// Why the drain of a partition does not progress, where the oracle says so.
    pub notes: BTreeMap<u32, String>,
}

/// Admin calls on a cluster's oracle.
pub struct Oracle {
    connection: AdminConnection,
    access: ReplicaAccess,
    /// Member addresses of every partition of the config, as dialled (published when one is
    /// added).
    members: BTreeMap<u32, Vec<String>>,
}

impl Oracle {
    /// The oracle of the cluster running `config`.
    pub fn new(config: &ClusterConfig, access: &ReplicaAccess) -> Result<Self, ReplicaError> {
        let dialed = access.dialed(config)?;
        let connection =
            AdminConnection::new(&dialed).map_err(|e| ReplicaError::Admin(e.to_string()))?;
        // As the replicas reach each other: the config's names, or where a map says the
        // cluster's members really are (a local cluster in tests).
        let members = dialed
            .numbered_partitions()
            .map(|(p, g)| (p.0, g.members.clone()))
            .collect();
        Ok(Oracle {
            connection,
            access: access.clone(),
            members,
        })
    }

    /// The oracle's view of the partitions and the groups' leaders.
    pub async fn status(&self) -> Result<OracleReport, ReplicaError> {
        let s = bounded("Status", self.connection.status()).await?;
        Ok(self.report(&s))
    }

    fn report(&self, s: &ClusterStatus) -> OracleReport {
        let view = OracleView {
            placement: s
                .partitions
                .iter()
                .filter_map(|p| Some((p.partition, Placement::from_admin(&p.state, p.variables)?)))
                .collect(),
            next_partition: s.next_partition,
        };
        let variables = s
            .partitions
            .iter()
            .map(|p| (p.partition, p.variables))
            .collect();
        let leaders = s
            .groups
            .iter()
            .filter(|g| !g.leader_addr.is_empty())
            .map(|g| (g.name.clone(), self.access.undial(&g.leader_addr)))
            .collect();
        let leaderless = s
            .groups
            .iter()
            .filter(|g| {
                g.leader_addr.is_empty() && g.members.iter().any(|m| m.role != "unreachable")
            })
            .map(|g| g.name.clone())
            .collect();
        let notes = s
            .partitions
            .iter()
            .filter(|p| !p.note.is_empty())
            .map(|p| (p.partition, p.note.clone()))
            .collect();
        OracleReport {
            view,
            variables,
            leaders,
            leaderless,
            notes,
        }
    }

    /// Registers partition `p` with the oracle's placement and publishes its members (as
    /// the config names them) to the cluster's replicas and clients.
    pub async fn add(&self, p: u32) -> Result<Placement, ReplicaError> {
        let members = self.members.get(&p).cloned().unwrap_or_default();
        let s = bounded("AddPartition", self.connection.add_partition(p, &members)).await?;
        placement(&s)
    }

    /// Takes drained partition `p` out of the published topology.
    pub async fn remove(&self, p: u32) -> Result<Placement, ReplicaError> {
        let s = bounded("RemovePartition", self.connection.remove_partition(p)).await?;
        placement(&s)
    }

    /// Starts draining partition `p`.
    pub async fn drain(&self, p: u32) -> Result<Placement, ReplicaError> {
        let s = bounded("DrainPartition", self.connection.drain_partition(p)).await?;
        placement(&s)
    }

    /// What every member of `groups` (group number, 0 for the oracle, and its member
    /// addresses as the config names them) reports of itself (`Describe`), all asked at
    /// once; `None` for a member that did not answer.
    pub async fn describe(&self, groups: &[(u32, Vec<String>)]) -> Vec<GroupReport> {
        let ask = |addr: &String| {
            let dialed = self.access.dial(addr);
            async move {
                let dialed = dialed.ok()?;
                dssmr_api::admin::describe(&dialed, CALL_TIMEOUT).await.ok()
            }
        };
        let asked = groups.iter().map(|(group, members)| async move {
            GroupReport {
                group: *group,
                members: futures::future::join_all(members.iter().map(ask)).await,
            }
        });
        futures::future::join_all(asked).await
    }
}

fn placement(s: &dssmr_api::proto::PartitionStatus) -> Result<Placement, ReplicaError> {
    Placement::from_admin(&s.state, s.variables)
        .ok_or_else(|| ReplicaError::Admin(format!("unknown partition state {:?}", s.state)))
}

async fn bounded<T>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, dssmr_api::admin::AdminError>>,
) -> Result<T, ReplicaError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(ReplicaError::Admin(format!("{what}: {e}"))),
        Err(_) => Err(ReplicaError::Timeout(what.into())),
    }
}

/// The counters behind throughput and move rate, summed over a cluster's groups.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Counters {
    /// When they were read.
    pub at: Instant,
    /// Commands executed (`dssmr_commands_total{outcome="executed"}`, every kind): per group
    /// the highest count among its replicas (the count is replicated state), summed; plus
    /// the reads answered off the log (`dssmr_reads_total`) of every replica.
    pub executed: f64,
    /// Variables moved (`dssmr_variable_moves_total`, counted where they arrive), the same way.
    pub moves: f64,
}

impl Counters {
    /// Per-second rates (throughput, move rate) since `earlier`; `None` when no time passed
    /// or a counter went back (a group restarted from an older snapshot).
    pub fn rates_since(&self, earlier: &Counters) -> Option<(f64, f64)> {
        let dt = self.at.checked_duration_since(earlier.at)?.as_secs_f64();
        let (de, dm) = (self.executed - earlier.executed, self.moves - earlier.moves);
        (dt > 0.0 && de >= 0.0 && dm >= 0.0).then(|| (de / dt, dm / dt))
    }
}

/// A `/metrics` text that is not the Prometheus exposition format.
#[derive(Debug, Error)]
#[error("not Prometheus metrics: {0}")]
pub struct BadMetrics(#[from] std::io::Error);

/// Counts of one replica's `/metrics` text: (executed commands, variable moves, reads it
/// answered off the log as leader).
pub fn replica_counts(text: &str) -> Result<(f64, f64, f64), BadMetrics> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines)?;
    let (mut executed, mut moves, mut reads) = (0.0, 0.0, 0.0);
    for s in &scrape.samples {
        let value = match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        match s.metric.as_str() {
            "dssmr_commands_total" if s.labels.get("outcome") == Some("executed") => {
                executed += value
            }
            "dssmr_variable_moves_total" => moves += value,
            "dssmr_reads_total" => reads += value,
            _ => {}
        }
    }
    Ok((executed, moves, reads))
}

/// HTTP port of every replica.
const HTTP_PORT: u16 = crate::build::HTTP_PORT as u16;

/// Scrapes every replica of `config` and sums per group the highest counts (the ordered
/// commands and moves are replicated state) and every replica's reads off the log (each
/// counts only its own, as leader). Fails when a group has no replica that answered.
pub async fn scrape(
    config: &ClusterConfig,
    access: &ReplicaAccess,
) -> Result<Counters, ReplicaError> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let mut executed = 0.0;
    let mut moves = 0.0;
    for g in config.oracle.iter().chain(&config.partitions) {
        let mut best: Option<(f64, f64)> = None;
        let mut last_error = None;
        for member in &g.members {
            let addr = access.http(member)?;
            match get_metrics(&client, &addr).await {
                Ok(text) => match replica_counts(&text) {
                    Ok((e, m, r)) => {
                        let (be, bm) = best.unwrap_or((0.0, 0.0));
                        best = Some((be.max(e), bm.max(m)));
                        executed += r;
                    }
                    Err(e) => {
                        last_error = Some(ReplicaError::Scrape {
                            addr: addr.clone(),
                            reason: e.to_string(),
                        })
                    }
                },
                Err(e) => last_error = Some(e),
            }
        }
        match (best, last_error) {
            (Some((e, m)), _) => {
                executed += e;
                moves += m;
            }
            (None, Some(e)) => return Err(e),
            (None, None) => {}
        }
    }
    Ok(Counters {
        at: Instant::now(),
        executed,
        moves,
    })
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

async fn get_metrics(client: &HttpClient, addr: &str) -> Result<String, ReplicaError> {
    use http_body_util::BodyExt;
    let failed = |reason: String| ReplicaError::Scrape {
        addr: addr.to_string(),
        reason,
    };
    let uri: http::Uri = format!("http://{addr}/metrics")
        .parse()
        .map_err(|e: http::uri::InvalidUri| failed(e.to_string()))?;
    let fetch = async {
        let response = client.get(uri).await.map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("status {}", response.status())));
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| failed(e.to_string()))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|e| failed(e.to_string()))
    };
    tokio::time::timeout(CALL_TIMEOUT, fetch)
        .await
        .map_err(|_| ReplicaError::Timeout(format!("GET http://{addr}/metrics")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_come_from_executed_commands_moves_and_reads_off_the_log() {
        let text = "# HELP dssmr_commands_total Commands executed.\n\
            # TYPE dssmr_commands_total counter\n\
            dssmr_commands_total{group=\"p1\",kind=\"access\",outcome=\"executed\",replica=\"0\"} 120\n\
            dssmr_commands_total{group=\"p1\",kind=\"access\",outcome=\"retry\",replica=\"0\"} 7\n\
            dssmr_commands_total{group=\"p1\",kind=\"move\",outcome=\"executed\",replica=\"0\"} 3\n\
            # TYPE dssmr_variable_moves_total counter\n\
            dssmr_variable_moves_total{group=\"p1\",replica=\"0\"} 5\n\
            # TYPE dssmr_reads_total counter\n\
            dssmr_reads_total{group=\"p1\",replica=\"0\"} 40\n\
            # TYPE dssmr_raft_term gauge\n\
            dssmr_raft_term{group=\"p1\",replica=\"0\"} 9\n";
        assert_eq!(replica_counts(text).unwrap(), (123.0, 5.0, 40.0));
    }

    #[test]
    fn rates_need_time_and_counters_that_do_not_go_back() {
        let t0 = Instant::now();
        let a = Counters {
            at: t0,
            executed: 100.0,
            moves: 10.0,
        };
        let b = Counters {
            at: t0 + Duration::from_secs(2),
            executed: 300.0,
            moves: 14.0,
        };
        assert_eq!(b.rates_since(&a), Some((100.0, 2.0)));
        assert_eq!(a.rates_since(&b), None);
        let reset = Counters { executed: 5.0, ..b };
        assert_eq!(reset.rates_since(&a), None);
    }

    #[test]
    fn mapped_access_refuses_unmapped_names() {
        let access = ReplicaAccess::Map(HashMap::from([(
            "a-p1-0.a-p1.ns.svc:7000".to_string(),
            "127.0.0.1:4000".to_string(),
        )]));
        assert_eq!(
            access.dial("a-p1-0.a-p1.ns.svc:7000").unwrap(),
            "127.0.0.1:4000"
        );
        assert_eq!(access.undial("127.0.0.1:4000"), "a-p1-0.a-p1.ns.svc:7000");
        assert!(matches!(
            access.dial("a-p1-1.a-p1.ns.svc:7000"),
            Err(ReplicaError::Unmapped(_))
        ));
        assert!(access.http("a-p1-0.a-p1.ns.svc:7000").is_err());
        assert_eq!(
            ReplicaAccess::Dns.http("a-p1-0.a-p1.ns.svc:7000").unwrap(),
            "a-p1-0.a-p1.ns.svc:8080"
        );
    }
}
