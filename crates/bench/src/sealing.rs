//! The sealing primitives alone: what `Keyring::seal_for` costs for a create's identity and
//! note, on one thread, without gRPC or the bus.

use std::time::Duration;

use refbus_core::ReferralId;
use refbus_seal::Context;

use crate::fixture::{self, Fixture};
use crate::report::SealingCost;
use crate::{BenchError, cpu};

/// Seals the identity and the note `iterations` times each (after a short warm-up) and returns
/// the CPU time per operation.
pub fn measure(fixture: &Fixture, iterations: u32) -> Result<SealingCost, BenchError> {
    let keyring = fixture.keyring(&fixture.sender)?;
    let recipients = [&fixture.sender, &fixture.recipient];
    let identity = fixture::identity_plaintext();
    let note = fixture::NOTE.as_bytes();
    let referral = ReferralId::from_bytes([7; 16]);
    let identity_aad = Context::Identity(&referral).aad();
    let note_aad = Context::Note(&referral).aad();

    let time = |plaintext: &[u8], aad: &[u8]| -> Result<Duration, BenchError> {
        let seal = || {
            keyring
                .seal_for(&recipients, plaintext, aad)
                .map(std::hint::black_box)
                .map_err(|err| BenchError::Setup(err.to_string()))
        };
        for _ in 0..iterations.div_ceil(20) {
            seal()?;
        }
        let start = cpu::thread_cpu();
        for _ in 0..iterations {
            seal()?;
        }
        Ok((cpu::thread_cpu() - start) / iterations.max(1))
    };
    Ok(SealingCost {
        identity_bytes: identity.len(),
        note_bytes: note.len(),
        identity: time(&identity, &identity_aad)?,
        note: time(note, &note_aad)?,
    })
}
