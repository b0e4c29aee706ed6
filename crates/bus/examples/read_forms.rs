//! What confining an agency's reads costs: one message read by stream sequence with a direct
//! read (the body form, which permissions cannot confine) against the same read through a named
//! consumer whose one filter is in its API subject (the form the bus uses, `scoped.rs`), and the
//! direct read of a subject's last message (confinable, unchanged) for scale.
//!
//! `cargo run -p refbus-bus --example read_forms` (nats-server from `scripts/install-tools.sh`).
//! Starts its own server, writes 500 subjects of 8 messages, then times each form one read at a
//! time. The figures are in docs/ARCHITECTURE.md ("Reads an agency's permissions can confine").

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig, stream};
use futures::StreamExt;

const SUBJECTS: u64 = 500;
const PER_SUBJECT: u64 = 8;
const READS: usize = 1_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn report(name: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "{name:<58} p50 {:>7.0} µs   p99 {:>7.0} µs",
        percentile(&times, 0.5).as_secs_f64() * 1e6,
        percentile(&times, 0.99).as_secs_f64() * 1e6
    );
}

#[tokio::main]
async fn main() {
    let nats = refbus_testkit::NatsServer::builder()
        .sync_always(true)
        .start()
        .unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let stream = js
        .create_stream(stream::Config {
            name: "FORMS".into(),
            subjects: vec!["forms.>".into()],
            allow_direct: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut acks = Vec::new();
    for round in 0..PER_SUBJECT {
        for subject in 0..SUBJECTS {
            let payload = format!("{{\"round\":{round},\"pad\":\"{}\"}}", "x".repeat(900));
            acks.push(
                js.publish(format!("forms.a.b.{subject}"), payload.into())
                    .await
                    .unwrap(),
            );
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
    let total = SUBJECTS * PER_SUBJECT;
    // Sequences spread over the stream; each is on subject (seq - 1) % SUBJECTS.
    let sequences: Vec<u64> = (0..READS as u64).map(|n| 1 + (n * 7_919) % total).collect();

    let mut direct = Vec::new();
    for &seq in &sequences {
        let started = Instant::now();
        let message = stream.direct_get(seq).await.unwrap();
        direct.push(started.elapsed());
        assert_eq!(message.sequence, seq);
    }
    let mut last = Vec::new();
    for &seq in &sequences {
        let subject = format!("forms.a.b.{}", (seq - 1) % SUBJECTS);
        let started = Instant::now();
        stream.direct_get_last_for_subject(subject).await.unwrap();
        last.push(started.elapsed());
    }
    let mut consumer_reads = Vec::new();
    let mut with_delete = Vec::new();
    for (n, &seq) in sequences.iter().enumerate() {
        let subject = format!("forms.a.b.{}", (seq - 1) % SUBJECTS);
        let name = format!("read{n}");
        let started = Instant::now();
        let consumer = stream
            .create_consumer(OrderedConfig {
                name: Some(name.clone()),
                filter_subject: subject,
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: seq,
                },
                ..Default::default()
            })
            .await
            .unwrap();
        let message = consumer
            .messages()
            .await
            .unwrap()
            .next()
            .await
            .unwrap()
            .unwrap();
        consumer_reads.push(started.elapsed());
        assert_eq!(message.info().unwrap().stream_sequence, seq);
        stream.delete_consumer(&name).await.unwrap();
        with_delete.push(started.elapsed());
    }
    println!(
        "{READS} reads, one at a time, of {total} messages of ~1 KiB on {SUBJECTS} subjects \
         (fsync on every write; client and server on this machine)"
    );
    report("direct read by sequence (body form)", direct);
    report(
        "direct read of a subject's last message (subject form)",
        last,
    );
    report(
        "named one-filter consumer from the sequence, first message",
        consumer_reads,
    );
    report("  the same, with its delete awaited", with_delete);
}
