//! The cluster harness against real nats-servers: three routed nodes serve an R3 stream, and a
//! node that crashes and comes back catches up.

use std::error::Error;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, stream};
use refbus_testkit::NatsCluster;

type TestResult = Result<(), Box<dyn Error>>;

const SUBJECT: &str = "refbus.v1.ref.maros-dp3a.maros-dinsos.r-0001";

fn replicated_stream() -> stream::Config {
    stream::Config {
        name: "REFERRALS".to_owned(),
        subjects: vec!["refbus.v1.ref.>".to_owned()],
        num_replicas: 3,
        ..Default::default()
    }
}

/// Publishes and waits for the acknowledgement, trying again while nobody answers. Only the
/// stream leader subscribes to the stream's subjects, and right after it is elected its interest
/// may not yet have reached the node the client is connected to; the publish then gets "no
/// responders", which async-nats reports as `StreamNotFound`, and nothing was stored.
async fn publish_acked(
    js: &jetstream::Context,
    payload: &'static str,
) -> Result<PublishAck, Box<dyn Error>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match js.publish(SUBJECT, payload.into()).await?.await {
            Err(error)
                if error.kind() == PublishErrorKind::StreamNotFound
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            result => return Ok(result?),
        }
    }
}

#[tokio::test]
async fn three_nodes_serve_an_r3_stream() -> TestResult {
    let cluster = NatsCluster::start(3)?;
    let names: Vec<_> = cluster.nodes().iter().map(|n| n.name()).collect();
    assert_eq!(names, [Some("n1"), Some("n2"), Some("n3")]);

    let js = jetstream::new(async_nats::connect(cluster.urls()).await?);
    let mut stream = js.create_stream(replicated_stream()).await?;
    let info = stream.info().await?;
    let placement = info
        .cluster
        .as_ref()
        .ok_or("an R3 stream reports its cluster")?;
    assert_eq!(placement.replicas.len(), 2, "a leader and two replicas");

    let first = publish_acked(&js, "created").await?;
    let second = publish_acked(&js, "accepted").await?;
    assert_eq!((first.sequence, second.sequence), (1, 2));

    // Every node serves reads of the replicated stream, whichever one leads it.
    for node in cluster.nodes() {
        let js = jetstream::new(async_nats::connect(node.url()).await?);
        let stored = js.get_stream("REFERRALS").await?.get_raw_message(2).await?;
        assert_eq!(stored.payload.as_ref(), b"accepted");
    }
    Ok(())
}

#[tokio::test]
async fn r3_stream_stays_writable_through_a_node_crash() -> TestResult {
    let mut cluster = NatsCluster::builder().size(3).sync_always(true).start()?;
    let js = jetstream::new(async_nats::connect(cluster.urls()).await?);
    js.create_stream(replicated_stream()).await?;
    publish_acked(&js, "created").await?;

    // Crash the node that leads the stream, so the survivors must elect a new leader.
    let mut stream = js.get_stream("REFERRALS").await?;
    let info = stream.info().await?;
    let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
    let leader = leader.ok_or("the stream has a leader")?;
    let crashed = cluster
        .nodes()
        .iter()
        .position(|node| node.name() == Some(leader.as_str()))
        .ok_or("the leader is one of the nodes")?;
    cluster.kill_node(crashed)?;
    cluster.wait_until_healthy()?;

    let survivors: Vec<String> = cluster
        .nodes()
        .iter()
        .filter(|node| node.pid().is_some())
        .map(|node| node.url())
        .collect();
    assert_eq!(survivors.len(), 2);
    let js = jetstream::new(async_nats::connect(survivors).await?);
    let ack = publish_acked(&js, "accepted").await?;
    assert_eq!(ack.sequence, 2);

    cluster.restart_node(crashed)?;
    let js = jetstream::new(async_nats::connect(cluster.nodes()[crashed].url()).await?);
    let mut stream = js.get_stream("REFERRALS").await?;
    assert_eq!(stream.info().await?.state.messages, 2);
    Ok(())
}
