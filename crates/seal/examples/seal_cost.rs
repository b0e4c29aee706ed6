//! The sealing of one create alone, timed on one thread: `cargo run --release -p refbus-seal
//! --example seal_cost`. The figure `refbus bench seal` reports, without the bench crate.

use std::time::Duration;

use refbus_core::{AgencyId, ReferralId};
use refbus_seal::{Context, KeyPair, Keyring};

fn main() {
    let sender = AgencyId::new("maros-dinsos").unwrap();
    let recipient = AgencyId::new("polres-maros").unwrap();
    let (sender_keys, recipient_keys, backup) = (
        KeyPair::generate(),
        KeyPair::generate(),
        KeyPair::generate(),
    );
    let directory = [
        (sender.clone(), sender_keys.public().clone()),
        (recipient.clone(), recipient_keys.public().clone()),
    ];
    let keyring = Keyring::new(sender.clone(), sender_keys.into_secret(), directory)
        .unwrap()
        .with_backup_keys([(recipient.clone(), backup.public().clone())]);
    let referral = ReferralId::from_bytes([7; 16]);
    let identity = vec![b'i'; 233];
    let note = vec![b'n'; 134];
    let iterations = 2_000u32;
    let seal_once = || {
        let batch = keyring
            .batch_for(&[&sender, &recipient], Context::Identity(&referral))
            .unwrap();
        std::hint::black_box(
            batch
                .seal_in(&identity, Context::Identity(&referral))
                .unwrap(),
        );
        std::hint::black_box(batch.seal_in(&note, Context::Note(&referral)).unwrap());
    };
    for _ in 0..200 {
        seal_once();
    }
    let start = thread_cpu();
    for _ in 0..iterations {
        seal_once();
    }
    println!(
        "identity + note, one content key, 3 wraps: {:.1} µs of thread CPU per create",
        (thread_cpu() - start).as_secs_f64() * 1e6 / f64::from(iterations)
    );
}

/// This thread's CPU time (Linux: the first field of schedstat, in nanoseconds), so that other
/// processes on a shared machine do not count.
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let nanos = text
        .split_whitespace()
        .next()
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(nanos)
}
