//! What signing and checking cost per event, on one thread, without gRPC or the bus: Ed25519
//! signing of a create's event (as its adapter signs it), verifying that signature, and the
//! whole record check a reader runs on it (`Checker::check`: subject, hash, signature, time,
//! the core's decision again, the stored state compared).

use std::time::Duration;

use refbus_bus::record::CheckedRecord;
use refbus_core::chain;
use refbus_core::integrity::{Checker, Claim, DEFAULT_MAX_SKEW, SubjectTokens};
use refbus_core::signature::Signer;

use crate::fixture::{Fixture, Person};
use crate::report::SignatureCost;
use crate::{BenchError, cpu};

/// Times each operation `iterations` times (after a short warm-up) on this thread.
pub fn measure(fixture: &Fixture, iterations: u32) -> Result<SignatureCost, BenchError> {
    let setup = |message: String| BenchError::Setup(message);
    let now = (refbus_adapter::system_now())();
    let request = fixture.create_request("sig", 0, Person::Anonymous);
    let (subject, record) = fixture.event_record(&request, now)?;
    let payload = record.encode();
    let keys = crate::signing_keys(&fixture.registry);
    let key = keys.agency(&fixture.sender);
    let signers = keys.signers();
    let author = Signer::of(&record.event.actor);
    let event_bytes = chain::canonical_bytes(&record.event);
    let signature = key.sign(&subject, &event_bytes);

    let stored =
        CheckedRecord::decode(&payload, &subject, 1).map_err(|err| setup(err.to_string()))?;
    let referral_id = fixture.referral_id(&request)?;
    let tokens = SubjectTokens {
        recipient: fixture.recipient.clone(),
        sender: fixture.sender.clone(),
        referral: referral_id,
    };
    let claim = Claim {
        subject: &subject,
        tokens: &tokens,
        stored_at: record.event.at,
        event: &stored.event,
        event_bytes: stored.event_json.as_bytes(),
        stored_hash: stored.stored_hash,
        signature: stored.signature.as_ref(),
        state_json: &stored.state_json,
    };
    let checker = Checker {
        registry: &fixture.registry,
        signers: &signers,
        max_skew: Some(DEFAULT_MAX_SKEW),
    };
    // The measured operations must succeed, or the figures are of an error path.
    signers
        .verify(&author, Some(&signature), &subject, &event_bytes)
        .map_err(|err| setup(format!("the benchmark's signature does not verify: {err}")))?;
    checker
        .check(&claim, None)
        .map_err(|err| setup(format!("the benchmark's record fails the check: {err:?}")))?;

    let time = |operation: &mut dyn FnMut()| -> Duration {
        for _ in 0..iterations.div_ceil(20) {
            operation();
        }
        let start = cpu::thread_cpu();
        for _ in 0..iterations {
            operation();
        }
        (cpu::thread_cpu() - start) / iterations.max(1)
    };
    let sign = time(&mut || {
        std::hint::black_box(key.sign(std::hint::black_box(&subject), &event_bytes));
    });
    let verify = time(&mut || {
        let _ = std::hint::black_box(signers.verify(
            &author,
            Some(&signature),
            std::hint::black_box(&subject),
            &event_bytes,
        ));
    });
    let check_signed = time(&mut || {
        let _ = std::hint::black_box(checker.check_signed(std::hint::black_box(&claim)));
    });
    let check = time(&mut || {
        let _ = std::hint::black_box(checker.check(std::hint::black_box(&claim), None));
    });
    let decode = time(&mut || {
        let _ = std::hint::black_box(CheckedRecord::decode(
            std::hint::black_box(&payload),
            &subject,
            1,
        ));
    });
    Ok(SignatureCost {
        event_bytes: event_bytes.len(),
        payload_bytes: payload.len(),
        sign,
        verify,
        check_signed,
        check,
        decode,
    })
}
