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

/// The router's consumer without a leader for a while (two of three nodes down): its pull
/// requests are answered "no responders", and the client alone would ask again only once the
/// last one expired, however soon the consumer had a leader again. The bus says the pull is
/// lost and pulls again until one is served: the event written once the nodes are back comes,
/// with no restart of the reader (docs/RELIABILITY.md, finding 10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_without_a_leader_for_a_while_pulls_again_and_delivers_what_comes_next() {
    use futures::StreamExt;
    let mut cluster = NatsCluster::start(3).unwrap();
    let settings = StreamSettings {
        replicas: 3,
        ..StreamSettings::default()
    };
    let name = "refbus-router-main";
    // Created through any node, then read through a node that does not lead it.
    drop(
        Bus::connect(ConnectOptions::new(cluster.urls()), &settings)
            .await
            .unwrap()
            .durable(name)
            .await
            .unwrap(),
    );
    cluster.wait_until_healthy().unwrap();
    let leader = cluster
        .consumer_leader(&settings.name, name)
        .unwrap()
        .expect("the consumer has a leader");
    let reader = (0..3).find(|node| *node != leader).unwrap();
    let other = (0..3)
        .find(|node| *node != leader && *node != reader)
        .unwrap();
    let url = cluster.urls()[reader].clone();
    let bus = Bus::connect(ConnectOptions::new(vec![url.clone()]), &settings)
        .await
        .unwrap();
    let writer = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let mut deliveries = bus.durable(name).await.unwrap();
    let first = write(&writer, "before").await;
    // A pull sent as the reader connects may find no responder yet: asked again too.
    let mut errors = Vec::new();
    let delivery = next_delivery(&mut deliveries, &mut errors).await;
    assert_eq!(delivery.seq, first, "{errors:?}");
    delivery.ack().await.unwrap();

    // Leaderless until the reader is told its pull is lost.
    cluster.kill_node(leader).unwrap();
    cluster.kill_node(other).unwrap();
    tokio::time::timeout(Duration::from_secs(60), async {
        while !errors
            .iter()
            .any(|err: &String| err.contains("the pull is lost"))
        {
            match deliveries.next().await {
                Some(Ok(delivery)) => panic!("delivered without a leader: {}", delivery.seq),
                Some(Err(err)) => errors.push(err.to_string()),
                None => panic!("the deliveries ended: {errors:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the lost pull was never noticed: {errors:?}"));

    cluster.restart_node(leader).unwrap();
    cluster.restart_node(other).unwrap();
    let second = write(&writer, "after").await;
    // The client alone would deliver it too, its last pull expired; the bus asks sooner.
    let delivered = next_delivery(&mut deliveries, &mut errors).await;
    assert_eq!(delivered.seq, second, "{errors:?}");
}

/// The next delivery of `deliveries`, the errors before it kept in `errors`.
async fn next_delivery(
    deliveries: &mut refbus_bus::durable::Durable,
    errors: &mut Vec<String>,
) -> refbus_bus::Delivery {
    use futures::StreamExt;
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match deliveries.next().await {
                Some(Ok(delivery)) => return delivery,
                Some(Err(err)) => errors.push(err.to_string()),
                None => panic!("the deliveries ended: {errors:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("nothing delivered within a minute: {errors:?}"))
}

/// Writes `token` on a referral subject through `writer` (any bytes: the consumer delivers what
/// is stored), retried under one message id while the stream elects a leader.
async fn write(writer: &async_nats::jetstream::Context, token: &str) -> u64 {
    use async_nats::jetstream::message::PublishMessage;
    for _ in 0..60 {
        let message = PublishMessage::build()
            .payload(token.to_owned().into())
            .message_id(token);
        if let Ok(ack) = writer
            .send_publish(format!("refbus.v1.ref.a.b.{token}"), message)
            .await
            && let Ok(Ok(ack)) = tokio::time::timeout(Duration::from_secs(2), ack).await
        {
            return ack.sequence;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the stream never took the write of {token}");
}
