//! Malformed gRPC input is answered with an error status, never a panic or a hang, and leaves the
//! cluster working.
//!
//! Against a two-group in-memory cluster, raw tonic clients send
//! * undecodable bytes (empty, garbage, truncated encodings) to the Raft RPCs `AppendEntries`,
//!   `Vote` and `InstallSnapshot`;
//! * invalid `Multicast`, `Announce` and `Channel` requests to the `Group` service;
//! * a seeded, bounded stream of random and mutated bytes to the Raft RPCs (property style:
//!   whatever does not decode must come back as `INVALID_ARGUMENT`).
//!
//! Each RPC must come back `INVALID_ARGUMENT` with a message naming the problem; afterwards every
//! replica must still be running and serving, and a multicast to both groups must complete.

use dssmr_engine::channel::lazy_channel;
use dssmr_engine::cluster::{ClusterOptions, LocalCluster};
use dssmr_engine::group::types::{Entry, Op, Request, TypeConfig};
use dssmr_engine::ids::{node_id_of_ordinal, GroupId, MsgId};
use dssmr_engine::multicast::McastMessage;
use dssmr_engine::proto::group_client::GroupClient as RawGroupClient;
use dssmr_engine::proto::raft_client::RaftClient;
use dssmr_engine::proto::{self, RaftBytes};
use dssmr_engine::route::{is_misaddressed, Member, Route, Sender, Stamp};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{CommittedLeaderId, EntryPayload, LogId, SnapshotMeta, StoredMembership, Vote};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

const TEST_LIMIT: Duration = Duration::from_secs(120);
/// Deadline of one malformed RPC: the answer is a decode error, it must come at once.
const RPC_LIMIT: Duration = Duration::from_secs(5);
const G1: GroupId = GroupId(1);
const G2: GroupId = GroupId(2);

async fn start_cluster() -> LocalCluster {
    LocalCluster::start(ClusterOptions {
        groups: 2,
        replicas: 3,
        ..Default::default()
    })
    .await
    .expect("cluster starts")
}

/// A replica of the cluster: its group, ordinal and address.
#[derive(Clone, Debug)]
struct At {
    cluster: String,
    group: GroupId,
    ordinal: usize,
    addr: String,
}

impl At {
    /// The route of a request to this replica from `from`.
    fn stamp(&self, from: Sender) -> Stamp {
        Stamp::new(&Route {
            to: Member {
                cluster: self.cluster.clone(),
                group: self.group,
                node: node_id_of_ordinal(self.ordinal),
            },
            from,
        })
    }

    /// Another member of its group, as the sender of Raft traffic.
    fn peer(&self) -> Sender {
        Sender::Replica {
            group: self.group,
            node: node_id_of_ordinal((self.ordinal + 1) % 3),
        }
    }
}

/// Every replica of the cluster.
fn replica_addrs(cluster: &LocalCluster) -> Vec<At> {
    let name = cluster.topology().cluster.clone();
    cluster
        .topology()
        .groups
        .iter()
        .flat_map(|(g, addrs)| {
            let name = name.clone();
            addrs.iter().enumerate().map(move |(ordinal, a)| At {
                cluster: name.clone(),
                group: *g,
                ordinal,
                addr: a.clone(),
            })
        })
        .collect()
}

type Raw = InterceptedService<Channel, Stamp>;

/// Replica 1 of group `g`, as a sender.
fn replica_of(g: u32) -> Sender {
    Sender::Replica {
        group: GroupId(g),
        node: 1,
    }
}

/// A raw Raft client of `at`, routed as another member of its group.
fn raft_client(at: &At) -> RaftClient<Raw> {
    raft_client_as(at, at.peer())
}

fn raft_client_as(at: &At, from: Sender) -> RaftClient<Raw> {
    RaftClient::with_interceptor(lazy_channel(&at.addr).expect("channel"), at.stamp(from))
}

/// A raw Group client of `at`, routed as a client.
fn group_client(at: &At) -> RawGroupClient<Raw> {
    group_client_as(at, Sender::Client)
}

fn group_client_as(at: &At, from: Sender) -> RawGroupClient<Raw> {
    RawGroupClient::with_interceptor(lazy_channel(&at.addr).expect("channel"), at.stamp(from))
}

/// Awaits one RPC, failing the test if it does not answer within [`RPC_LIMIT`].
async fn bounded<T>(
    what: &str,
    rpc: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<Response<T>, Status> {
    tokio::time::timeout(RPC_LIMIT, rpc)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {RPC_LIMIT:?}"))
}

/// Asserts that `reply` is `INVALID_ARGUMENT` (`NOT_FOUND` for a destination the replica
/// does not know: the sender's topology may be stale) and that its message contains `needle`.
fn expect_invalid<T: Debug>(what: &str, reply: Result<Response<T>, Status>, needle: &str) {
    let code = if needle.contains("is not part of the cluster") {
        Code::NotFound
    } else {
        Code::InvalidArgument
    };
    match reply {
        Ok(r) => panic!("{what}: expected {code:?}, got a reply: {r:?}"),
        Err(status) => {
            assert_eq!(
                status.code(),
                code,
                "{what}: wrong status code ({status:?})"
            );
            assert!(
                status.message().contains(needle),
                "{what}: message {:?} does not mention {needle:?}",
                status.message()
            );
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

const RPCS: [Rpc; 3] = [Rpc::Append, Rpc::Vote, Rpc::Snapshot];

async fn send_raft(
    client: &mut RaftClient<Raw>,
    rpc: Rpc,
    data: Vec<u8>,
) -> Result<Response<RaftBytes>, Status> {
    let req = RaftBytes { data };
    bounded(&format!("{rpc:?}"), async {
        match rpc {
            Rpc::Append => client.append_entries(req).await,
            Rpc::Vote => client.vote(req).await,
            Rpc::Snapshot => client.install_snapshot(req).await,
        }
    })
    .await
}

/// True when `data` is a well-formed request of `rpc`, exactly as the server decodes it. Such
/// bytes would be a (forged) valid Raft message, not malformed input, so they are not sent.
fn decodes(rpc: Rpc, data: &[u8]) -> bool {
    match rpc {
        Rpc::Append => postcard::from_bytes::<AppendEntriesRequest<TypeConfig>>(data).is_ok(),
        Rpc::Vote => postcard::from_bytes::<VoteRequest<u64>>(data).is_ok(),
        Rpc::Snapshot => postcard::from_bytes::<InstallSnapshotRequest<TypeConfig>>(data).is_ok(),
    }
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// A well-formed encoding of each Raft request (with stale terms), the seed of truncations and
/// mutations. Never sent as is.
fn valid_encoding(rpc: Rpc) -> Vec<u8> {
    let vote = Vote::new_committed(1, 1);
    let encoded = match rpc {
        Rpc::Append => {
            let msg = McastMessage::new(MsgId { sender: 7, seq: 3 }, vec![G1], vec![1, 2, 3]);
            postcard::to_allocvec(&AppendEntriesRequest::<TypeConfig> {
                vote,
                prev_log_id: Some(log_id(1, 4)),
                entries: vec![Entry {
                    log_id: log_id(1, 5),
                    payload: EntryPayload::Normal(Request {
                        ops: vec![
                            Op::Start(msg),
                            Op::Final {
                                id: MsgId::default(),
                                ts: 9,
                            },
                        ],
                        at_ms: 0,
                    }),
                }],
                leader_commit: Some(log_id(1, 4)),
            })
        }
        Rpc::Vote => postcard::to_allocvec(&VoteRequest::new(vote, Some(log_id(1, 4)))),
        Rpc::Snapshot => postcard::to_allocvec(&InstallSnapshotRequest::<TypeConfig> {
            vote,
            meta: SnapshotMeta {
                last_log_id: Some(log_id(1, 4)),
                last_membership: StoredMembership::default(),
                snapshot_id: "snap-1".to_string(),
            },
            offset: 0,
            data: vec![0xab; 32],
            done: true,
        }),
    }
    .expect("encodes");
    assert!(
        decodes(rpc, &encoded),
        "{rpc:?}: reference encoding decodes"
    );
    encoded
}

/// A multicast to both groups completes at both, with the same final timestamp.
async fn multicast_both_groups(cluster: &LocalCluster, seq: u64) {
    let msg = McastMessage::new(
        MsgId {
            sender: 0x5eed,
            seq,
        },
        vec![G1, G2],
        b"still alive".to_vec(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let c1 = cluster.client(G1).expect("client g1");
    let c2 = cluster.client(G2).expect("client g2");
    let (t1, t2) = tokio::join!(c1.multicast(&msg, deadline), c2.multicast(&msg, deadline));
    let t1 = t1.expect("multicast delivered in g1");
    let t2 = t2.expect("multicast delivered in g2");
    assert_eq!(t1, t2, "both groups deliver at the same final timestamp");
}

/// Every replica is up, its Raft core has not stopped, and its gRPC server still answers.
async fn assert_all_replicas_serving(cluster: &LocalCluster) {
    let expected = cluster.groups().len() * cluster.replicas();
    assert_eq!(cluster.running().count(), expected, "every replica runs");
    for node in cluster.running() {
        let metrics = node.raft().metrics().borrow().clone();
        assert!(
            metrics.running_state.is_ok(),
            "raft of {} stopped: {:?}",
            node.addr(),
            metrics.running_state
        );
    }
    for at in replica_addrs(cluster) {
        let addr = &at.addr;
        let mut client = group_client(&at);
        let reply = bounded(
            "probe",
            client.multicast(proto::MulticastRequest {
                group: 1,
                message: None,
            }),
        )
        .await;
        expect_invalid(&format!("probe of {addr}"), reply, "no message");
    }
}

fn proto_msg(dests: Vec<u32>) -> proto::McastMessage {
    proto::McastMessage {
        id: Some(proto::MsgId { sender: 42, seq: 1 }),
        dests,
        payload: b"payload".to_vec(),
        done_below: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_invalid_argument() {
    dssmr_engine::telemetry::init_for_tests();
    tokio::time::timeout(TEST_LIMIT, async {
        let cluster = start_cluster().await;
        multicast_both_groups(&cluster, 0).await;
        let addrs = replica_addrs(&cluster);

        // --- Raft RPCs: bytes that are not a request, at every replica (leaders and followers).
        for at in &addrs {
            let addr = &at.addr;
            let mut client = raft_client(at);
            for rpc in RPCS {
                let valid = valid_encoding(rpc);
                let cases: Vec<(&str, Vec<u8>)> = vec![
                    ("empty", vec![]),
                    ("garbage", vec![0xff; 64]),
                    ("text", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
                    ("one byte", vec![0x01]),
                    ("truncated", valid[..valid.len() / 2].to_vec()),
                    ("last byte cut", valid[..valid.len() - 1].to_vec()),
                ];
                for (name, data) in cases {
                    assert!(!decodes(rpc, &data), "{rpc:?}/{name} must be undecodable");
                    let reply = send_raft(&mut client, rpc, data).await;
                    expect_invalid(
                        &format!("{rpc:?} {name} at {addr}"),
                        reply,
                        "undecodable raft message",
                    );
                }
            }
        }

        // --- Group service: requests addressed to group 1, at each of its replicas.
        let g1: Vec<&At> = addrs.iter().filter(|at| at.group == G1).collect();
        // Batches with one bad announce that a leader served.
        let mut served_one_bad = 0;
        for at in g1 {
            let addr = &at.addr;
            let mut client = group_client(at);
            let multicasts: Vec<(&str, proto::MulticastRequest, &str)> = vec![
                (
                    "no message",
                    proto::MulticastRequest {
                        group: 1,
                        message: None,
                    },
                    "no message",
                ),
                (
                    "no id",
                    proto::MulticastRequest {
                        group: 1,
                        message: Some(proto::McastMessage {
                            id: None,
                            ..proto_msg(vec![1])
                        }),
                    },
                    "id is missing",
                ),
                (
                    "no destination",
                    proto::MulticastRequest {
                        group: 1,
                        message: Some(proto_msg(vec![])),
                    },
                    "no destination",
                ),
                (
                    "unknown destination",
                    proto::MulticastRequest {
                        group: 1,
                        message: Some(proto_msg(vec![1, 99])),
                    },
                    "destination group 99 is not part of the cluster",
                ),
                (
                    "group not among dests",
                    proto::MulticastRequest {
                        group: 1,
                        message: Some(proto_msg(vec![2])),
                    },
                    "group 1 is not a destination",
                ),
                (
                    "group field unset",
                    proto::MulticastRequest {
                        group: 0,
                        message: Some(proto_msg(vec![1])),
                    },
                    "request addressed to group 0 reached a replica of group 1",
                ),
                (
                    "addressed to the other group",
                    proto::MulticastRequest {
                        group: 2,
                        message: Some(proto_msg(vec![1, 2])),
                    },
                    "group 2",
                ),
            ];
            for (name, req, needle) in multicasts {
                let reply = bounded(name, client.multicast(req)).await;
                expect_invalid(&format!("Multicast {name} at {addr}"), reply, needle);
            }

            let announce =
                |from_group: u32, to_group: u32, messages: Vec<Option<proto::McastMessage>>| {
                    proto::AnnounceBatch {
                        from_group,
                        to_group,
                        watermark: 0,
                        announces: messages
                            .into_iter()
                            .map(|message| proto::TimestampAnnounce {
                                local_ts: 5,
                                message,
                            })
                            .collect(),
                    }
                };
            let ok = || Some(proto_msg(vec![1, 2]));
            // Batch-level faults: the whole batch is refused.
            let announces: Vec<(&str, proto::AnnounceBatch, &str)> = vec![
                (
                    "to_group wrong",
                    announce(2, 2, vec![ok()]),
                    "addressed to group 2 reached a replica of group 1",
                ),
                ("empty batch", announce(2, 1, vec![]), "no message"),
                ("from itself", announce(1, 1, vec![ok()]), "group 1"),
                (
                    "from an unknown group",
                    announce(99, 1, vec![Some(proto_msg(vec![1, 99]))]),
                    "group 99",
                ),
            ];
            for (name, req, needle) in announces {
                // Sent by a replica of the group it names as its source: the body is checked.
                let mut client = group_client_as(at, replica_of(req.from_group));
                let reply = bounded(name, client.announce(req)).await;
                expect_invalid(&format!("Announce {name} at {addr}"), reply, needle);
            }
            // Faults of one announce: that one is refused with its reason, and the good
            // announce before it in the batch is served (bug: the whole batch was refused,
            // and sent again as a whole).
            let one_bad: Vec<(&str, Option<proto::McastMessage>, &str)> = vec![
                ("no message", None, "no message"),
                (
                    "from_group not a destination",
                    Some(proto_msg(vec![1])),
                    "group 2 is not a destination",
                ),
                (
                    "receiver not a destination",
                    Some(proto_msg(vec![2])),
                    "group 1 is not a destination",
                ),
                (
                    "unknown destination",
                    Some(proto_msg(vec![1, 2, 99])),
                    "destination group 99 is not part of the cluster",
                ),
            ];
            for (name, bad, needle) in one_bad {
                let mut client = group_client_as(at, replica_of(2));
                let req = announce(2, 1, vec![ok(), bad]);
                let reply = bounded(name, client.announce(req)).await;
                let outcomes = match reply.map(|r| r.into_inner().outcome) {
                    Ok(Some(proto::announce_batch_reply::Outcome::Outcomes(o))) => o.outcomes,
                    // A follower points at its leader; only leaders serve announces.
                    Ok(Some(proto::announce_batch_reply::Outcome::NotLeader(_))) => continue,
                    other => panic!("Announce {name} at {addr}: {other:?}"),
                };
                use proto::announce_outcome::Outcome;
                match &outcomes[..] {
                    [good, proto::AnnounceOutcome {
                        outcome: Some(Outcome::Refused(why)),
                    }] if !matches!(good.outcome, Some(Outcome::Refused(_)) | None)
                        && why.contains(needle) => {}
                    other => panic!("Announce {name} at {addr}: {other:?} (wanted {needle:?})"),
                }
                served_one_bad += 1;
            }

            let channel_msg = |from_group: u32, to_group: u32, seq: u64| proto::ChannelMessage {
                from_group,
                to_group,
                seq,
                payload: vec![seq as u8],
            };
            let batches: Vec<(&str, proto::ChannelBatch, &str)> = vec![
                (
                    "empty batch",
                    proto::ChannelBatch { messages: vec![] },
                    "no message",
                ),
                (
                    "mixed source groups",
                    proto::ChannelBatch {
                        messages: vec![channel_msg(2, 1, 0), channel_msg(1, 1, 1)],
                    },
                    "mixes source groups 2 and 1",
                ),
                (
                    "wrong destination",
                    proto::ChannelBatch {
                        messages: vec![channel_msg(2, 1, 0), channel_msg(2, 2, 1)],
                    },
                    "addressed to group 2 reached a replica of group 1",
                ),
                (
                    "from itself",
                    proto::ChannelBatch {
                        messages: vec![channel_msg(1, 1, 0)],
                    },
                    "group 1",
                ),
                (
                    "from an unknown group",
                    proto::ChannelBatch {
                        messages: vec![channel_msg(99, 1, 0)],
                    },
                    "group 99",
                ),
            ];
            for (name, req, needle) in batches {
                let from = req.messages.first().map_or(2, |m| m.from_group);
                let mut client = group_client_as(at, replica_of(from));
                let reply = bounded(name, client.channel(req)).await;
                expect_invalid(&format!("Channel {name} at {addr}"), reply, needle);
            }
        }

        assert_eq!(
            served_one_bad, 4,
            "the leader of g1 served each batch with a bad announce"
        );
        // Nothing refused above reached a log: group 1 delivered at most the first probe
        // multicast and the good announce served beside bad ones (one message).
        for r in 0..cluster.replicas() {
            if let Some(node) = cluster.node(G1, r) {
                assert!(
                    node.with_state(|s| s.skeen.delivered_count()) <= 2,
                    "a rejected request was delivered at g1/r{r}"
                );
            }
        }

        assert_all_replicas_serving(&cluster).await;
        multicast_both_groups(&cluster, 1).await;
        cluster.shutdown().await;
    })
    .await
    .expect("test finished within its time limit");
}

/// Bytes for one Raft RPC: fully random, a strict prefix of a valid encoding, or a valid
/// encoding with a few bytes overwritten.
fn random_bytes(rng: &mut StdRng, valid: &[u8]) -> Vec<u8> {
    match rng.random_range(0..3) {
        0 => {
            let len = rng.random_range(0..256);
            (0..len).map(|_| rng.random()).collect()
        }
        1 => valid[..rng.random_range(0..valid.len())].to_vec(),
        _ => {
            let mut data = valid.to_vec();
            for _ in 0..rng.random_range(1..=4) {
                let i = rng.random_range(0..data.len());
                data[i] = rng.random();
            }
            data
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_to_raft_rpcs_only_get_errors() {
    const ITERATIONS: usize = 300;
    dssmr_engine::telemetry::init_for_tests();
    tokio::time::timeout(TEST_LIMIT, async {
        let cluster = start_cluster().await;
        let addrs = replica_addrs(&cluster);
        let mut clients: Vec<RaftClient<Raw>> = addrs.iter().map(raft_client).collect();
        let valid: Vec<Vec<u8>> = RPCS.iter().map(|r| valid_encoding(*r)).collect();
        let mut rng = StdRng::seed_from_u64(0xbad_b17e5);
        let (mut sent, mut skipped) = (0usize, 0usize);
        for i in 0..ITERATIONS {
            let k = rng.random_range(0..RPCS.len());
            let rpc = RPCS[k];
            let data = random_bytes(&mut rng, &valid[k]);
            if decodes(rpc, &data) {
                // A well-formed (forged) Raft message, not malformed input: not sent.
                skipped += 1;
                continue;
            }
            let target = rng.random_range(0..clients.len());
            let len = data.len();
            let reply = send_raft(&mut clients[target], rpc, data).await;
            expect_invalid(
                &format!(
                    "iteration {i}: {rpc:?} with {len} bytes at {}",
                    addrs[target].addr
                ),
                reply,
                "undecodable raft message",
            );
            sent += 1;
        }
        eprintln!("{sent} malformed raft requests rejected, {skipped} well-formed ones skipped");
        assert!(
            sent >= ITERATIONS * 3 / 4,
            "too few malformed requests were sent ({sent} of {ITERATIONS})"
        );
        assert_all_replicas_serving(&cluster).await;
        multicast_both_groups(&cluster, 0).await;
        cluster.shutdown().await;
    })
    .await
    .expect("test finished within its time limit");
}

/// Raft and Group requests that are well formed but not addressed to the replica that gets
/// them (a reused address), unrouted, or from a sender that may not make them: each is
/// refused with its own status, and nothing reaches Raft (no term moves, nothing is logged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misaddressed_and_unrouted_requests_are_refused_and_change_nothing() {
    dssmr_engine::telemetry::init_for_tests();
    tokio::time::timeout(TEST_LIMIT, async {
        let cluster = start_cluster().await;
        multicast_both_groups(&cluster, 0).await;
        let terms = |c: &LocalCluster| -> Vec<u64> {
            c.running()
                .map(|n| n.raft().metrics().borrow().current_term)
                .collect()
        };
        let before = terms(&cluster);
        // A vote request of a much higher term: admitted, it would depose the leader.
        let forged_vote = postcard::to_allocvec(&VoteRequest::new(
            Vote::new(1000, 2),
            Some(log_id(999, 1_000_000)),
        ))
        .expect("encodes");
        for at in replica_addrs(&cluster) {
            let addr = at.addr.clone();
            let other = |f: &dyn Fn(&mut At)| {
                let mut to = at.clone();
                f(&mut to);
                to
            };
            let misaddressed = [
                (
                    "another group",
                    other(&|t| t.group = GroupId(3 - t.group.0)),
                ),
                ("another node", other(&|t| t.ordinal = (t.ordinal + 1) % 3)),
                (
                    "another cluster",
                    other(&|t| t.cluster = format!("{}-x", t.cluster)),
                ),
            ];
            for (name, to) in &misaddressed {
                // Routed to `to`, dialled at `at`'s address.
                let mut client = RaftClient::with_interceptor(
                    lazy_channel(&addr).expect("channel"),
                    to.stamp(to.peer()),
                );
                for rpc in RPCS {
                    let data = if matches!(rpc, Rpc::Vote) {
                        forged_vote.clone()
                    } else {
                        valid_encoding(rpc)
                    };
                    let status = send_raft(&mut client, rpc, data)
                        .await
                        .expect_err("a misaddressed request is refused");
                    assert!(
                        is_misaddressed(&status),
                        "{rpc:?} for {name} at {addr}: {status:?}"
                    );
                    assert!(status.message().contains("misaddressed"), "{status:?}");
                }
                let mut client = RawGroupClient::with_interceptor(
                    lazy_channel(&addr).expect("channel"),
                    to.stamp(Sender::Client),
                );
                let status = bounded(
                    "multicast",
                    client.multicast(proto::MulticastRequest {
                        group: to.group.0,
                        message: Some(proto_msg(vec![to.group.0])),
                    }),
                )
                .await
                .expect_err("a misaddressed multicast is refused");
                assert!(is_misaddressed(&status), "multicast for {name}: {status:?}");
            }

            // Unrouted: a sender that names nobody.
            let mut bare = RaftClient::new(lazy_channel(&addr).expect("channel"));
            let reply = bounded(
                "unrouted vote",
                bare.vote(RaftBytes {
                    data: forged_vote.clone(),
                }),
            )
            .await;
            expect_invalid(&format!("unrouted vote at {addr}"), reply, "unrouted");
            let mut bare = RawGroupClient::new(lazy_channel(&addr).expect("channel"));
            let reply = bounded(
                "unrouted multicast",
                bare.multicast(proto::MulticastRequest {
                    group: at.group.0,
                    message: Some(proto_msg(vec![at.group.0])),
                }),
            )
            .await;
            expect_invalid(&format!("unrouted multicast at {addr}"), reply, "unrouted");

            // Raft traffic from anyone but another member of the group.
            let strangers = [
                Sender::Client,
                replica_of(3 - at.group.0),
                Sender::Replica {
                    group: at.group,
                    node: node_id_of_ordinal(at.ordinal),
                },
            ];
            for from in strangers {
                let mut client = raft_client_as(&at, from);
                let status = send_raft(&mut client, Rpc::Vote, forged_vote.clone())
                    .await
                    .expect_err("raft traffic from a stranger is refused");
                assert_eq!(status.code(), Code::PermissionDenied, "{from}: {status:?}");
            }
            // An announce or channel batch from a sender that is not the group it names.
            let other_group = 3 - at.group.0;
            for from in [Sender::Client, replica_of(at.group.0)] {
                let mut client = group_client_as(&at, from);
                let status = bounded(
                    "announce",
                    client.announce(proto::AnnounceBatch {
                        from_group: other_group,
                        to_group: at.group.0,
                        watermark: 0,
                        announces: vec![proto::TimestampAnnounce {
                            local_ts: 5,
                            message: Some(proto_msg(vec![1, 2])),
                        }],
                    }),
                )
                .await
                .expect_err("refused");
                assert_eq!(status.code(), Code::PermissionDenied, "announce {from}");
                let status = bounded(
                    "channel",
                    client.channel(proto::ChannelBatch {
                        messages: vec![proto::ChannelMessage {
                            from_group: other_group,
                            to_group: at.group.0,
                            seq: 0,
                            payload: vec![1],
                        }],
                    }),
                )
                .await
                .expect_err("refused");
                assert_eq!(status.code(), Code::PermissionDenied, "channel {from}");
            }
        }
        assert_eq!(terms(&cluster), before, "a refused request moved a term");
        for g in [G1, G2] {
            for r in 0..cluster.replicas() {
                if let Some(node) = cluster.node(g, r) {
                    assert!(
                        node.with_state(|s| s.skeen.delivered_count()) <= 1,
                        "a refused request was delivered at {g}/r{r}"
                    );
                }
            }
        }
        assert_all_replicas_serving(&cluster).await;
        multicast_both_groups(&cluster, 1).await;
        cluster.shutdown().await;
    })
    .await
    .expect("test finished within its time limit");
}
