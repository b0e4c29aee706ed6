//! The bus on a three-node JetStream cluster: where it must have the stream leader's word.

use std::time::Duration;

use refbus_bus::{Bus, ConnectOptions, ReadErrorKind, StreamSettings};
use refbus_testkit::NatsCluster;

/// With two of three nodes down the events stream has no leader, and the node left answers
/// the stream's information from what it holds, which may be behind the stream. The scans and
/// catch-ups that must reach the stream's last sequence take it from `Bus::last_sequence`: a
/// replica's answer there is retried, then UNAVAILABLE, never taken for the stream's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streams_last_sequence_is_never_a_replicas_without_a_leader() {
    let mut cluster = NatsCluster::start(3).unwrap();
    let settings = StreamSettings {
        replicas: 3,
        ..StreamSettings::default()
    };
    let bus = Bus::connect(ConnectOptions::new(cluster.urls()), &settings)
        .await
        .unwrap();
    assert_eq!(bus.last_sequence().await.unwrap(), 0, "the leader answers");

    // The leader and one follower down; the follower left answers once it finds the group
    // leaderless (until then the reads time out). A leader left alone would go on answering as
    // the leader until it noticed its lost quorum: JetStream's own window, not tested here.
    let leader = cluster
        .stream_leader(&settings.name)
        .unwrap()
        .expect("the stream has a leader");
    let follower = (0..3).find(|node| *node != leader).unwrap();
    cluster.kill_node(leader).unwrap();
    cluster.kill_node(follower).unwrap();
    let mut answers = Vec::new();
    let refused = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            match bus.last_sequence().await {
                Ok(seq) => panic!("a replica without a leader was believed: last sequence {seq}"),
                Err(err) if err.to_string().contains("no leader") => return err,
                Err(err) => answers.push(err.to_string()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the node left never answered: {answers:?}"));
    assert_eq!(refused.kind(), ReadErrorKind::Unavailable, "{refused}");
}
