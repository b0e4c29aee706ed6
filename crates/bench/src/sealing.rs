//! The sealing primitives alone: what a create's sealing costs, on one thread, without gRPC or
//! the bus. [`measure`] times what the adapter does (one content key per create: the wraps
//! once, then the identity and the note under it); [`compare`] times that against the earlier
//! scheme (each payload sealed on its own) for `refbus bench seal`.

use std::fmt;
use std::time::Duration;

use refbus_core::{AgencyId, ReferralId};
use refbus_seal::{Batch, Context, KeyPair, Recipient};

use crate::fixture::{self, Fixture};
use crate::report::SealingCost;
use crate::{BenchError, cpu};

/// Times a create's sealing as the adapter does it, `iterations` times after a short warm-up:
/// `identity` is the wraps (one per key of the sender, the recipient and the recipient's backup
/// key) plus the identity's encryption, `note` the note's encryption under the same content
/// key. Their sum is the sealing of one create.
pub fn measure(fixture: &Fixture, iterations: u32) -> Result<SealingCost, BenchError> {
    let keyring = fixture.keyring(&fixture.sender)?;
    let recipients = [&fixture.sender, &fixture.recipient];
    let identity = fixture::identity_plaintext();
    let note = fixture::NOTE.as_bytes();
    let referral = ReferralId::from_bytes([7; 16]);
    let setup = |err: refbus_seal::SealError| BenchError::Setup(err.to_string());

    let batch = || keyring.batch_for(&recipients, Context::Identity(&referral));
    let wraps_and_identity = || -> Result<Batch, BenchError> {
        let batch = batch().map_err(setup)?;
        std::hint::black_box(
            batch
                .seal_in(&identity, Context::Identity(&referral))
                .map_err(setup)?,
        );
        Ok(batch)
    };
    let shared = batch().map_err(setup)?;
    let note_only = || -> Result<(), BenchError> {
        std::hint::black_box(
            shared
                .seal_in(note, Context::Note(&referral))
                .map_err(setup)?,
        );
        Ok(())
    };
    Ok(SealingCost {
        identity_bytes: identity.len(),
        note_bytes: note.len(),
        identity: per_call(iterations, || wraps_and_identity().map(drop))?,
        note: per_call(iterations, note_only)?,
    })
}

/// The thread CPU time of one call of `operation`, over `iterations` after a warm-up.
fn per_call(
    iterations: u32,
    mut operation: impl FnMut() -> Result<(), BenchError>,
) -> Result<Duration, BenchError> {
    for _ in 0..iterations.div_ceil(20) {
        operation()?;
    }
    let start = cpu::thread_cpu();
    for _ in 0..iterations {
        operation()?;
    }
    Ok((cpu::thread_cpu() - start) / iterations.max(1))
}

/// A create's sealing (identity and note) by scheme and by the keys wrapped for.
#[derive(Debug, Clone)]
pub struct SealComparison {
    pub identity_bytes: usize,
    pub note_bytes: usize,
    pub iterations: u32,
    /// One row per configuration: (keys wrapped for, each payload on its own, one content key).
    pub rows: Vec<(&'static str, Duration, Duration)>,
}

impl fmt::Display for SealComparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Sealing one create: identity ({} B) and note ({} B), thread CPU per create, {} \
             iterations each",
            self.identity_bytes, self.note_bytes, self.iterations
        )?;
        writeln!(
            f,
            "  {:<44} {:>16} {:>16}",
            "keys wrapped for", "each on its own", "one content key"
        )?;
        for (keys, separate, shared) in &self.rows {
            writeln!(
                f,
                "  {:<44} {:>13.1} µs {:>13.1} µs",
                keys,
                separate.as_secs_f64() * 1e6,
                shared.as_secs_f64() * 1e6
            )?;
        }
        Ok(())
    }
}

/// Times a create's sealing with each payload sealed on its own (what refbus did before: a
/// content key and a wrap per key for each payload) and with one content key for the create
/// (what the adapter does now), for the sender and the recipient with and without backup keys.
pub fn compare(iterations: u32) -> Result<SealComparison, BenchError> {
    let sender =
        AgencyId::new(fixture::SENDER).map_err(|err| BenchError::Setup(err.to_string()))?;
    let recipient =
        AgencyId::new(fixture::RECIPIENT).map_err(|err| BenchError::Setup(err.to_string()))?;
    let pairs: Vec<KeyPair> = (0..4).map(|_| KeyPair::generate()).collect();
    let keys: Vec<_> = pairs.iter().map(|pair| pair.public().clone()).collect();
    let identity = fixture::identity_plaintext();
    let note = fixture::NOTE.as_bytes();
    let referral = ReferralId::from_bytes([7; 16]);
    let (identity_aad, note_aad) = (
        Context::Identity(&referral).aad(),
        Context::Note(&referral).aad(),
    );
    let wrap_aad = Context::Identity(&referral).wrap_aad();
    let setup = |err: refbus_seal::SealError| BenchError::Setup(err.to_string());
    let configurations: [(&'static str, &[_], &[_]); 3] = [
        ("sender, recipient", &keys[0..1], &keys[1..2]),
        ("sender, recipient + its backup", &keys[0..1], &keys[1..3]),
        (
            "sender + its backup, recipient + its backup",
            &keys[2..4],
            &keys[0..2],
        ),
    ];
    let mut rows = Vec::new();
    for (name, sender_keys, recipient_keys) in configurations {
        let recipients = [
            Recipient {
                agency: &sender,
                keys: sender_keys,
            },
            Recipient {
                agency: &recipient,
                keys: recipient_keys,
            },
        ];
        let separate = per_call(iterations, || {
            for (plaintext, aad) in [(&identity[..], &identity_aad), (note, &note_aad)] {
                let batch = Batch::new(&recipients, aad).map_err(setup)?;
                std::hint::black_box(batch.seal(plaintext, aad).map_err(setup)?);
            }
            Ok(())
        })?;
        let shared = per_call(iterations, || {
            let batch = Batch::new(&recipients, &wrap_aad).map_err(setup)?;
            std::hint::black_box(batch.seal(&identity, &identity_aad).map_err(setup)?);
            std::hint::black_box(batch.seal(note, &note_aad).map_err(setup)?);
            Ok(())
        })?;
        rows.push((name, separate, shared));
    }
    Ok(SealComparison {
        identity_bytes: identity.len(),
        note_bytes: note.len(),
        iterations,
        rows,
    })
}
