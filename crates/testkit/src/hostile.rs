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

/// Changes the configuration of `stream` with `alter`, as an administrator with JetStream's
/// rights might (an age limit to save disk, a per-subject limit): for tests that components
/// refuse or report a stream that can lose events.
pub async fn alter_stream(
    url: &str,
    stream: &str,
    alter: impl FnOnce(&mut async_nats::jetstream::stream::Config),
) -> Result<(), String> {
    let client = async_nats::connect(url)
        .await
        .map_err(|err| format!("connecting to {url}: {err}"))?;
    let jetstream = async_nats::jetstream::new(client);
    let mut config = jetstream
        .get_stream(stream)
        .await
        .map_err(|err| format!("finding stream {stream}: {err}"))?
        .cached_info()
        .config
        .clone();
    alter(&mut config);
    jetstream
        .update_stream(config)
        .await
        .map_err(|err| format!("updating stream {stream}: {err}"))?;
    Ok(())
}

/// The one message a replica made by [`replica_behind`] holds.
const PROBE: &str = "refbus.v1.notice.replica-behind.probe";

/// Adds to `stream` a replica that is behind by everything it holds: a mirror that keeps none
/// of its referral messages but answers its direct reads. JetStream lets a mirror of a stream
/// that allows direct reads answer them, in one queue group with the stream itself, so about
/// every other read is answered from nothing, as reads answered by a replica of a clustered
/// stream that is cut off from its leader or catching up are answered from less than was
/// stored. Returns once such a read of `stored_subject` (where a message is stored) answered
/// nothing.
///
/// The mirror keeps one message only, which this publishes on a notice subject of an agency no
/// registry lists (`refbus.v1.notice.replica-behind.probe`): a mirror joins the readers once
/// it has copied a message.
pub async fn replica_behind(url: &str, stream: &str, stored_subject: &str) -> Result<(), String> {
    use async_nats::jetstream::stream::{Config, Source, StorageType};
    let client = async_nats::connect(url)
        .await
        .map_err(|err| format!("connecting to {url}: {err}"))?;
    let jetstream = async_nats::jetstream::new(client);
    jetstream
        .create_stream(Config {
            name: format!("{stream}-behind"),
            storage: StorageType::Memory,
            mirror: Some(Source {
                name: stream.to_owned(),
                filter_subject: Some(PROBE.to_owned()),
                ..Source::default()
            }),
            mirror_direct: true,
            ..Config::default()
        })
        .await
        .map_err(|err| format!("creating a mirror of {stream}: {err}"))?;
    jetstream
        .publish(PROBE, "a replica behind".into())
        .await
        .map_err(|err| format!("publishing on {PROBE}: {err}"))?
        .await
        .map_err(|err| format!("storing on {PROBE}: {err}"))?;
    let origin = jetstream
        .get_stream_no_info(stream)
        .await
        .map_err(|err| format!("finding stream {stream}: {err}"))?;
    // The mirror joins the readers once it copied the probe: within a second or two.
    for _ in 0..1_000 {
        match origin
            .direct_get_last_for_subject(stored_subject.to_owned())
            .await
        {
            Err(err)
                if err.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound =>
            {
                return Ok(());
            }
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            Err(err) => return Err(format!("reading {stored_subject}: {err}")),
        }
    }
    Err(format!(
        "no read of {stored_subject} was answered by the mirror of {stream} in 10 s"
    ))
}
