//! Writing on the bus as a hostile or broken client would: straight to JetStream, bypassing
//! refbus's writers (no signature, no check), for tests that prove readers refuse it.

/// Publishes `payload` on `subject` to the JetStream stream that holds it and waits for the
/// acknowledgement; the stream sequence it was stored at.
pub async fn publish_raw(url: &str, subject: &str, payload: Vec<u8>) -> Result<u64, String> {
    let client = async_nats::connect(url)
        .await
        .map_err(|err| format!("connecting to {url}: {err}"))?;
    let jetstream = async_nats::jetstream::new(client);
    let ack = jetstream
        .publish(subject.to_owned(), payload.into())
        .await
        .map_err(|err| format!("publishing on {subject}: {err}"))?
        .await
        .map_err(|err| format!("storing on {subject}: {err}"))?;
    Ok(ack.sequence)
}

/// Deletes the consumer `consumer` of `stream`, as an operator or an intruder with the rights
/// to might: for tests that a component notices it lost its consumer.
pub async fn delete_consumer(url: &str, stream: &str, consumer: &str) -> Result<(), String> {
    let client = async_nats::connect(url)
        .await
        .map_err(|err| format!("connecting to {url}: {err}"))?;
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream
        .get_stream(stream)
        .await
        .map_err(|err| format!("finding stream {stream}: {err}"))?;
    stream
        .delete_consumer(consumer)
        .await
        .map_err(|err| format!("deleting consumer {consumer}: {err}"))?;
    Ok(())
}

/// Deletes the whole stream `stream`, as an administrator about to rebuild it from an edited
/// copy might (the stream denies deleting single messages, not itself).
pub async fn delete_stream(url: &str, stream: &str) -> Result<(), String> {
    let client = async_nats::connect(url)
        .await
        .map_err(|err| format!("connecting to {url}: {err}"))?;
    let jetstream = async_nats::jetstream::new(client);
    jetstream
        .delete_stream(stream)
        .await
        .map_err(|err| format!("deleting stream {stream}: {err}"))?;
    Ok(())
}
