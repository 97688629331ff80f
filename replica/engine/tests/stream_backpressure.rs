//! A `MulticastStream` whose client never reads its results cannot make a replica buffer
//! results without bound: the replica holds at most its limit of calls (read and not yet
//! written out), stops reading further calls, and HTTP/2 flow control holds the client back.
//! Once the client reads, every call is answered.
//!
//! The raw tonic client sends calls without a request: the replica answers each at once
//! (`INVALID_ARGUMENT`), so results pile up as fast as calls are read and nothing depends on
//! Raft. The client's HTTP/2 windows are the protocol's minimum, so only a few results can
//! be written out ahead of its reading.

use dssmr_engine::cluster::{ClusterOptions, LocalCluster};
use dssmr_engine::ids::{node_id_of_ordinal, GroupId};
use dssmr_engine::proto::group_client::GroupClient as RawGroupClient;
use dssmr_engine::proto::{self, MulticastCall, MulticastCalls};
use dssmr_engine::route::{Member, Route, Sender, Stamp};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tonic::transport::Endpoint;

const G1: GroupId = GroupId(1);
/// Calls per frame the client sends.
const PER_FRAME: u64 = 512;
/// HTTP/2's smallest (and default) window.
const WINDOW: u32 = 65_535;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_no_results_is_held_back_at_the_replicas_limit() {
    dssmr_engine::telemetry::init_for_tests();
    tokio::time::timeout(Duration::from_secs(120), async {
        let cluster = LocalCluster::start(ClusterOptions {
            groups: 1,
            replicas: 3,
            ..Default::default()
        })
        .await
        .expect("cluster starts");
        let node = cluster.node(G1, 0).expect("running");
        let limit = node.stream_calls().limit();
        let calls = 4 * limit;

        let channel = Endpoint::from_shared(format!("http://{}", node.addr()))
            .expect("address")
            .initial_stream_window_size(Some(WINDOW))
            .initial_connection_window_size(Some(WINDOW))
            .connect_lazy();
        let stamp = Stamp::new(&Route {
            to: Member {
                cluster: cluster.topology().cluster.clone(),
                group: G1,
                node: node_id_of_ordinal(0),
            },
            from: Sender::Client,
        });
        let mut rpc = RawGroupClient::with_interceptor(channel, stamp);
        let frames = (0..calls.div_ceil(PER_FRAME)).map(move |f| MulticastCalls {
            calls: (f * PER_FRAME..((f + 1) * PER_FRAME).min(calls))
                .map(|tag| MulticastCall { tag, request: None })
                .collect(),
        });
        let mut results = rpc
            .multicast_stream(futures::stream::iter(frames))
            .await
            .expect("stream opened")
            .into_inner();

        // The results are not read: the replica either stops reading calls (held at its
        // limit, a while), or reads them all.
        let stats = node.stream_calls();
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut most, mut steady) = (0, 0);
        while stats.accepted() < calls && steady < 20 {
            assert!(
                Instant::now() < deadline,
                "neither held back nor done: {} calls read",
                stats.accepted()
            );
            most = most.max(stats.held());
            let held_back = stats.waiting() > 0 && stats.held() == limit;
            steady = if held_back { steady + 1 } else { 0 };
            // Nothing to wait on but the counters: look again shortly.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        most = most.max(stats.held());
        assert!(
            stats.accepted() < calls && most <= limit,
            "the replica read {} of {calls} calls of a client that reads no results and held \
             up to {most} of them (limit {limit})",
            stats.accepted(),
        );
        eprintln!(
            "held back: {} of {calls} calls read, {} held",
            stats.accepted(),
            stats.held()
        );

        // Once the client reads, every call is answered, once.
        let mut tags = HashSet::new();
        while let Some(batch) = results.message().await.expect("results") {
            for r in batch.results {
                assert!(
                    matches!(r.result, Some(proto::multicast_result::Result::Error(_))),
                    "a call without a request is refused"
                );
                assert!(tags.insert(r.tag), "tag {} answered twice", r.tag);
            }
            if tags.len() as u64 == calls {
                break;
            }
        }
        assert_eq!(tags.len() as u64, calls, "every call answered");
        assert_eq!(stats.held(), 0, "nothing held once everything is read");
        cluster.shutdown().await;
    })
    .await
    .expect("test finished within its time limit");
}
