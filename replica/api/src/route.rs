//! Whom a call between the members of a cluster is for, and whom it is from: the route that
//! every Raft RPC and every call of the `Group` service carries in its gRPC metadata, stamped
//! by the caller's channel ([`Stamp`]) and checked by the receiving replica
//! ([`Member::admit`]) before the request is decoded.
//!
//! Addresses are not identities. A pod's IP, or a port on one host, is handed to another
//! replica (of another group, or of another cluster) soon after its owner stops, while peers
//! still send to it; without a check a replica of p3 takes in p1's AppendEntries and votes, and
//! a group's log ends up with another group's entries. A route names the cluster, the group and
//! the Raft node a request is for, and who sends it. A replica refuses anything addressed to
//! someone else with a [`misaddressed`](RouteError::Misaddressed) status (UNAVAILABLE, marked so
//! that [`is_misaddressed`] recognises it): the caller then drops its connection and dials the
//! name again, resolving it afresh, and nothing of the request reaches the replica's Raft or
//! state. Mutual TLS adds proof of identity on top; this check is the addressing without it.
//!
//! This module holds the vocabulary and the checks only; it opens no connection.

use crate::ids::{group_label, GroupId, NodeId};
use std::fmt;
use thiserror::Error;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Metadata key: the name of the cluster the request is for.
pub const CLUSTER: &str = "dssmr-cluster";
/// Metadata key: the group the request is for (`oracle`, `p1`, ...).
pub const GROUP: &str = "dssmr-group";
/// Metadata key: the Raft node id of the replica the request is for.
pub const NODE: &str = "dssmr-node";
/// Metadata key: the group of the sending replica; absent when a client sends.
pub const FROM_GROUP: &str = "dssmr-from-group";
/// Metadata key: the Raft node id of the sending replica; absent when a client sends.
pub const FROM_NODE: &str = "dssmr-from-node";
/// Metadata key set on a refusal because the request was meant for another replica.
pub const MISADDRESSED: &str = "dssmr-misaddressed";

/// One replica of one cluster: what a route is addressed to, and who a replica is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    /// The cluster's name.
    pub cluster: String,
    /// The replica's group.
    pub group: GroupId,
    /// The replica's Raft node id in its group.
    pub node: NodeId,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} of group {} in cluster {:?}",
            self.node,
            group_label(self.group),
            self.cluster
        )
    }
}

/// Who sends a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sender {
    /// A client of the cluster (a client proxy, a benchmark, the CLI).
    Client,
    /// A replica of the cluster.
    Replica {
        /// Its group.
        group: GroupId,
        /// Its Raft node id.
        node: NodeId,
    },
}

impl fmt::Display for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sender::Client => f.write_str("a client"),
            Sender::Replica { group, node } => {
                write!(f, "node {node} of group {}", group_label(*group))
            }
        }
    }
}

/// For whom and from whom a request is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// The replica it is for.
    pub to: Member,
    /// Who sends it.
    pub from: Sender,
}

/// Why a request's route is refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RouteError {
    /// The request carries no route (an old or foreign sender).
    #[error("unrouted request: no {0} metadata (every call between members names its recipient)")]
    Missing(&'static str),
    /// A route field does not parse.
    #[error("bad route: {key} = {value:?}")]
    Bad {
        /// The metadata key.
        key: &'static str,
        /// What it held.
        value: String,
    },
    /// The request is for another replica: its address now leads here.
    #[error("misaddressed: this is {me}, the request is for {to}")]
    Misaddressed {
        /// This replica.
        me: Member,
        /// The replica the request was meant for.
        to: Member,
    },
    /// The sender may not make this call to this replica.
    #[error("{me} refuses {call} from {from}")]
    Refused {
        /// This replica.
        me: Member,
        /// What was called.
        call: &'static str,
        /// Who called.
        from: Sender,
    },
}

impl RouteError {
    /// The gRPC status a replica answers with: UNAVAILABLE marked [`MISADDRESSED`] for a
    /// request meant for another replica (transient for the caller: redial and try later),
    /// INVALID_ARGUMENT for a missing or bad route, PERMISSION_DENIED for a refused sender.
    pub fn status(&self) -> Status {
        match self {
            RouteError::Missing(_) | RouteError::Bad { .. } => {
                Status::invalid_argument(self.to_string())
            }
            RouteError::Misaddressed { .. } => {
                let mut s = Status::unavailable(self.to_string());
                s.metadata_mut()
                    .insert(MISADDRESSED, AsciiMetadataValue::from_static("1"));
                s
            }
            RouteError::Refused { .. } => Status::permission_denied(self.to_string()),
        }
    }
}

/// True when `status` is a replica's refusal of a request meant for another replica: the
/// address the caller dialled leads to someone else now, and the connection must be redialled.
pub fn is_misaddressed(status: &Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.metadata().contains_key(MISADDRESSED)
}

fn value(s: &str) -> AsciiMetadataValue {
    // Cluster names are DNS-1123 labels and the rest are numbers and group labels: ASCII. A
    // name that is not (a hand-written config) travels escaped rather than not at all.
    AsciiMetadataValue::try_from(s).unwrap_or_else(|_| {
        AsciiMetadataValue::try_from(s.escape_default().to_string())
            .unwrap_or_else(|_| AsciiMetadataValue::from_static("?"))
    })
}

fn get<'a>(md: &'a MetadataMap, key: &'static str) -> Result<Option<&'a str>, RouteError> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| RouteError::Bad {
            key,
            value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
        }),
    }
}

fn parse_group(key: &'static str, s: &str) -> Result<GroupId, RouteError> {
    let bad = || RouteError::Bad {
        key,
        value: s.to_string(),
    };
    if s == "oracle" {
        return Ok(crate::ids::ORACLE);
    }
    let n: u32 = s
        .strip_prefix('p')
        .ok_or_else(bad)?
        .parse()
        .map_err(|_| bad())?;
    if n == 0 {
        return Err(bad());
    }
    Ok(GroupId(n))
}

fn parse_node(key: &'static str, s: &str) -> Result<NodeId, RouteError> {
    s.parse::<NodeId>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| RouteError::Bad {
            key,
            value: s.to_string(),
        })
}

impl Route {
    /// Reads the route of a request from its metadata.
    pub fn read(md: &MetadataMap) -> Result<Route, RouteError> {
        let cluster = get(md, CLUSTER)?.ok_or(RouteError::Missing(CLUSTER))?;
        let group = parse_group(GROUP, get(md, GROUP)?.ok_or(RouteError::Missing(GROUP))?)?;
        let node = parse_node(NODE, get(md, NODE)?.ok_or(RouteError::Missing(NODE))?)?;
        let from = match (get(md, FROM_GROUP)?, get(md, FROM_NODE)?) {
            (None, None) => Sender::Client,
            (Some(g), Some(n)) => Sender::Replica {
                group: parse_group(FROM_GROUP, g)?,
                node: parse_node(FROM_NODE, n)?,
            },
            (None, Some(_)) => return Err(RouteError::Missing(FROM_GROUP)),
            (Some(_), None) => return Err(RouteError::Missing(FROM_NODE)),
        };
        Ok(Route {
            to: Member {
                cluster: cluster.to_string(),
                group,
                node,
            },
            from,
        })
    }
}

impl Member {
    /// Admits a request addressed to this replica and returns its route; refuses a request
    /// without a route or for anyone else.
    pub fn admit(&self, md: &MetadataMap) -> Result<Route, RouteError> {
        let route = Route::read(md)?;
        if route.to != *self {
            return Err(RouteError::Misaddressed {
                me: self.clone(),
                to: route.to,
            });
        }
        Ok(route)
    }

    /// Admits Raft traffic: addressed to this replica and sent by another member of its own
    /// group (Raft node ids `1..=members`).
    pub fn admit_peer(&self, md: &MetadataMap, members: usize) -> Result<Route, RouteError> {
        let route = self.admit(md)?;
        match route.from {
            Sender::Replica { group, node }
                if group == self.group && node != self.node && node as usize <= members =>
            {
                Ok(route)
            }
            from => Err(RouteError::Refused {
                me: self.clone(),
                call: "raft traffic",
                from,
            }),
        }
    }
}

/// A tonic interceptor that stamps one route on every request of a channel (a channel leads
/// to one replica).
#[derive(Clone, Debug)]
pub struct Stamp {
    values: [(&'static str, Option<AsciiMetadataValue>); 5],
}

impl Stamp {
    /// Stamps `route`.
    pub fn new(route: &Route) -> Stamp {
        let (from_group, from_node) = match route.from {
            Sender::Client => (None, None),
            Sender::Replica { group, node } => (
                Some(value(&group_label(group))),
                Some(value(&node.to_string())),
            ),
        };
        Stamp {
            values: [
                (CLUSTER, Some(value(&route.to.cluster))),
                (GROUP, Some(value(&group_label(route.to.group)))),
                (NODE, Some(value(&route.to.node.to_string()))),
                (FROM_GROUP, from_group),
                (FROM_NODE, from_node),
            ],
        }
    }

    /// Writes the route into `md`.
    pub fn apply(&self, md: &mut MetadataMap) {
        for (k, v) in &self.values {
            if let Some(v) = v {
                md.insert(*k, v.clone());
            }
        }
    }
}

impl Interceptor for Stamp {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        self.apply(req.metadata_mut());
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(cluster: &str, group: u32, node: NodeId) -> Member {
        Member {
            cluster: cluster.into(),
            group: GroupId(group),
            node,
        }
    }

    fn stamped(route: &Route) -> MetadataMap {
        let mut md = MetadataMap::new();
        Stamp::new(route).apply(&mut md);
        md
    }

    #[test]
    fn a_stamped_route_reads_back() {
        for from in [
            Sender::Client,
            Sender::Replica {
                group: GroupId(0),
                node: 2,
            },
        ] {
            let route = Route {
                to: member("chirper", 3, 1),
                from,
            };
            assert_eq!(Route::read(&stamped(&route)), Ok(route));
        }
    }

    #[test]
    fn a_replica_admits_only_what_is_addressed_to_it() {
        let me = member("chirper", 3, 1);
        let from = Sender::Replica {
            group: GroupId(1),
            node: 1,
        };
        let ok = Route {
            to: me.clone(),
            from,
        };
        assert_eq!(me.admit(&stamped(&ok)), Ok(ok));
        for to in [
            member("chirper", 1, 3),
            member("chirper", 3, 2),
            member("other", 3, 1),
        ] {
            let e = me
                .admit(&stamped(&Route {
                    to: to.clone(),
                    from,
                }))
                .unwrap_err();
            assert_eq!(e, RouteError::Misaddressed { me: me.clone(), to });
            assert!(is_misaddressed(&e.status()), "{e}");
        }
        let e = me.admit(&MetadataMap::new()).unwrap_err();
        assert_eq!(e, RouteError::Missing(CLUSTER));
        assert_eq!(e.status().code(), tonic::Code::InvalidArgument);
        assert!(!is_misaddressed(&e.status()));
    }

    #[test]
    fn raft_traffic_comes_only_from_the_groups_other_members() {
        let me = member("kv", 1, 2);
        let route = |from| Route {
            to: me.clone(),
            from,
        };
        let peer = Sender::Replica {
            group: GroupId(1),
            node: 3,
        };
        assert!(me.admit_peer(&stamped(&route(peer)), 3).is_ok());
        for from in [
            Sender::Client,
            Sender::Replica {
                group: GroupId(2),
                node: 3,
            },
            Sender::Replica {
                group: GroupId(1),
                node: 2,
            },
            Sender::Replica {
                group: GroupId(1),
                node: 4,
            },
        ] {
            let e = me.admit_peer(&stamped(&route(from)), 3).unwrap_err();
            assert!(matches!(e, RouteError::Refused { .. }), "{from}: {e}");
            assert_eq!(e.status().code(), tonic::Code::PermissionDenied);
        }
    }

    #[test]
    fn bad_routes_name_the_field() {
        let mut md = stamped(&Route {
            to: member("kv", 1, 1),
            from: Sender::Client,
        });
        md.insert(GROUP, AsciiMetadataValue::from_static("p0"));
        assert_eq!(
            Route::read(&md),
            Err(RouteError::Bad {
                key: GROUP,
                value: "p0".into()
            })
        );
        md.insert(GROUP, AsciiMetadataValue::from_static("p1"));
        md.insert(FROM_NODE, AsciiMetadataValue::from_static("2"));
        assert_eq!(Route::read(&md), Err(RouteError::Missing(FROM_GROUP)));
    }
}
