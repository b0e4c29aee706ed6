//! The floor of the bus: the adapter's own messages published straight to JetStream, without
//! gRPC, validation or sealing.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::BenchError;
use crate::pace::Pacer;

fn nats(err: impl std::fmt::Display) -> BenchError {
    BenchError::Nats(err.to_string())
}

/// JetStream and the events stream on a connection of the bench's own, with the JetStream
/// settings of the bus (the bus gives no access to its NATS types). Connect a `Bus` first: it
/// creates and checks the stream.
pub(crate) async fn jetstream(
    url: &str,
) -> Result<(jetstream::Context, jetstream::stream::Stream), BenchError> {
    let client = async_nats::connect(url).await.map_err(nats)?;
    let js = jetstream::ContextBuilder::new()
        .timeout(refbus_bus::ACK_TIMEOUT)
        .max_ack_inflight(20_000)
        .backpressure_on_inflight(true)
        .build(client);
    let stream = js
        .get_stream(refbus_bus::StreamSettings::default().name)
        .await
        .map_err(nats)?;
    Ok((js, stream))
}

/// Publishes every message, keeping up to `window` acknowledgements outstanding (awaiting the
/// oldest when the window is full), and returns the time from the first publish to the last
/// acknowledgement.
pub async fn publish_async(
    js: jetstream::Context,
    messages: Vec<(String, PublishMessage)>,
    window: usize,
) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let mut pending = VecDeque::with_capacity(window);
    for (subject, message) in messages {
        let ack = js.send_publish(subject, message).await.map_err(nats)?;
        pending.push_back(ack);
        if pending.len() >= window
            && let Some(oldest) = pending.pop_front()
        {
            check(oldest.await.map_err(nats)?)?;
        }
    }
    for ack in pending {
        check(ack.await.map_err(nats)?)?;
    }
    Ok(started.elapsed())
}

/// Every message is new: a duplicate would mean the benchmark measured nothing.
fn check(ack: jetstream::publish::PublishAck) -> Result<(), BenchError> {
    if ack.duplicate {
        return Err(BenchError::Nats(format!(
            "message {} was a duplicate: the stream was not fresh",
            ack.sequence
        )));
    }
    Ok(())
}

/// Publishes one message at a time, `rate` per second, awaiting each acknowledgement, and
/// records each publish's time to its acknowledgement; the first `warmup` are not recorded.
pub async fn publish_sync(
    js: jetstream::Context,
    messages: Vec<(String, PublishMessage)>,
    rate: u32,
    warmup: usize,
) -> Result<Histogram<u64>, BenchError> {
    let mut latencies = crate::pace::histogram()?;
    let mut pacer = Pacer::new(rate);
    for (index, (subject, message)) in messages.into_iter().enumerate() {
        pacer.tick().await;
        let sent = Instant::now();
        let ack = js
            .send_publish(subject, message)
            .await
            .map_err(nats)?
            .await
            .map_err(nats)?;
        let latency = sent.elapsed();
        check(ack)?;
        if index >= warmup {
            crate::pace::record(&mut latencies, latency);
        }
    }
    Ok(latencies)
}
