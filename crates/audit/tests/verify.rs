//! `refbus audit verify` against real nats-servers: a clean stream verifies with no problem,
//! and each tamper of the matrix that needs no Merkle log is reported precisely (the referral,
//! the stream sequence, what was expected). Tampered streams are made as an administrator with
//! the store's files would make them: the stream copied to another server, message by message,
//! with one change, then configured exactly as refbus configures it.

mod common;

use common::*;
use refbus_audit::Problem;
use refbus_audit::problem::StreamIssue;
use refbus_bus::{EventRecord, Stored};
use refbus_core::Command;
use refbus_core::audit::ClockFinding;
use refbus_core::integrity::Problem as Integrity;
use refbus_testkit::NatsServer;

#[tokio::test]
async fn a_clean_stream_and_its_faithful_copy_verify_with_no_problem() {
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    three_referrals(&bus).await;
    let report = verify(&bus, quiet_now()).await;
    assert!(report.is_clean(), "{}", report.to_text());
    assert_eq!(report.referrals, 3);
    assert_eq!(report.records, 12);
    // 12 events and 3 index entries.
    assert_eq!(report.messages, 15);
    assert_eq!(report.last_seq, 15);

    // The copy the tamper tests start from is itself faithful.
    let copy = NatsServer::start().unwrap();
    copy_stream(&nats.url(), &copy.url(), |index| index, |_| Copy::Keep).await;
    let report = verify(&common::bus(&copy.url()).await, quiet_now()).await;
    assert!(report.is_clean(), "{}", report.to_text());
}

#[tokio::test]
async fn a_whole_referral_deleted_with_sequences_kept_is_reported_as_gaps() {
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    let histories = three_referrals(&bus).await;
    let gone = histories[1].first().unwrap().subject.clone();
    let gone_seqs: Vec<u64> = histories[1].iter().map(|stored| stored.seq).collect();
    let copy = NatsServer::start().unwrap();
    copy_stream(
        &nats.url(),
        &copy.url(),
        |index| index,
        |message| {
            if message.subject.as_str() == gone {
                Copy::Delete
            } else {
                Copy::Keep
            }
        },
    )
    .await;
    let report = verify(&common::bus(&copy.url()).await, quiet_now()).await;
    // One gap per deleted message (none are adjacent: the referrals were written interleaved),
    // and JetStream's own count of deleted messages.
    let gaps: Vec<(u64, u64, u64)> = report
        .problems
        .iter()
        .filter_map(|problem| match problem {
            Problem::Gap {
                after,
                next,
                missing,
            } => Some((*after, *next, *missing)),
            _ => None,
        })
        .collect();
    let expected: Vec<(u64, u64, u64)> =
        gone_seqs.iter().map(|seq| (seq - 1, seq + 1, 1)).collect();
    assert_eq!(gaps, expected, "{}", report.to_text());
    assert!(
        report.problems.contains(&Problem::Stream {
            what: StreamIssue::DeletedMessages,
            expected: 0,
            found: 4
        }),
        "{}",
        report.to_text()
    );
    assert_eq!(report.referrals, 2);
    assert!(report.to_text().contains(&format!(
        "stream sequences {}..={} are missing",
        gone_seqs[0], gone_seqs[0]
    )));
}

#[tokio::test]
async fn a_whole_referral_removed_and_the_stream_renumbered_shows_only_in_moved_headers() {
    // Rebuilt from a copy without the referral, its sequences closing up: every remaining
    // record is signed and chained, every sequence is there, and JetStream counts nothing
    // deleted. What still shows is that the records that came after it name, in their
    // (unsigned) `Refbus-Prev-Seq` header, the sequences they had before.
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    let histories = three_referrals(&bus).await;
    let gone = histories[1].first().unwrap().subject.clone();
    let omit = |message: &async_nats::jetstream::message::StreamMessage| {
        if message.subject.as_str() == gone {
            Copy::Omit
        } else {
            Copy::Keep
        }
    };
    let copy = NatsServer::start().unwrap();
    copy_stream(&nats.url(), &copy.url(), |index| index, omit).await;
    let report = verify(&common::bus(&copy.url()).await, quiet_now()).await;
    assert_eq!(report.referrals, 2, "{}", report.to_text());
    assert!(!report.is_clean());
    assert!(
        report
            .problems
            .iter()
            .all(|problem| matches!(problem, Problem::Order { .. })),
        "{}",
        report.to_text()
    );

    // A careful forger rewrites those headers too. Then nothing in the stream alone can tell:
    // only the Merkle log's check (a signed, witnessed checkpoint over the larger tree, which
    // this stream cannot extend) reports it. This pins what the checks without the log see,
    // so that when the log check is added its finding is the only new one.
    let forged = NatsServer::start().unwrap();
    copy_stream_rewriting(&nats.url(), &forged.url(), |index| index, omit, true).await;
    let report = verify(&common::bus(&forged.url()).await, quiet_now()).await;
    assert_eq!(report.referrals, 2, "{}", report.to_text());
    assert!(report.is_clean(), "{}", report.to_text());
}

#[tokio::test]
async fn the_tail_of_a_referral_cut_is_reported_as_a_gap() {
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    let histories = three_referrals(&bus).await;
    // Referral c's last event is the stream's last message: the cut removes the stream's tail.
    let cut = histories[2].last().unwrap().seq;
    let copy = NatsServer::start().unwrap();
    copy_stream(
        &nats.url(),
        &copy.url(),
        |index| index,
        |message| {
            let seq = message.sequence;
            if seq == cut { Copy::Delete } else { Copy::Keep }
        },
    )
    .await;
    let report = verify(&common::bus(&copy.url()).await, quiet_now()).await;
    assert!(
        report.problems.contains(&Problem::Gap {
            after: cut - 1,
            next: cut + 1,
            missing: 1
        }),
        "{}",
        report.to_text()
    );
    assert!(report.problems.contains(&Problem::Stream {
        what: StreamIssue::LastSequence,
        expected: cut,
        found: cut - 1
    }));
    // The cut also removes a middle message: b's acceptance.
    let middle = histories[1][2].seq;
    let copy = NatsServer::start().unwrap();
    copy_stream(
        &nats.url(),
        &copy.url(),
        |index| index,
        |message| {
            if message.sequence == middle {
                Copy::Delete
            } else {
                Copy::Keep
            }
        },
    )
    .await;
    let report = verify(&common::bus(&copy.url()).await, quiet_now()).await;
    // The gap, and b's next record no longer follows its last verified one.
    assert_eq!(
        report.problems[0],
        Problem::Gap {
            after: middle - 1,
            next: middle + 1,
            missing: 1
        },
        "{}",
        report.to_text()
    );
    let next_of_b = histories[1][3].seq;
    assert!(
        report.problems.iter().any(|problem| matches!(
            problem,
            Problem::Record { seq, problem: Integrity::OutOfChain, referral: Some(id), .. }
                if *seq == next_of_b && *id == histories[1][0].record.state.id
        )),
        "{}",
        report.to_text()
    );
}

#[tokio::test]
async fn one_byte_altered_in_a_stored_message_is_reported_at_its_sequence() {
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    let histories = three_referrals(&bus).await;
    let target = &histories[0][2];
    let referral = target.record.state.id;
    let copy = NatsServer::start().unwrap();
    copy_stream(
        &nats.url(),
        &copy.url(),
        |index| index,
        |message| {
            if message.sequence != target.seq {
                return Copy::Keep;
            }
            // One byte of the event's time: `"at":"2026-03-02T01:05...` becomes ...01:06...
            let mut payload = message.payload.to_vec();
            let text = String::from_utf8(payload.clone()).unwrap();
            let at = text.find("T01:05").unwrap() + 5;
            payload[at] = b'6';
            Copy::Payload(payload)
        },
    )
    .await;
    let report = verify(&common::bus(&copy.url()).await, quiet_now()).await;
    let first = &report.problems[0];
    assert!(
        matches!(
            first,
            Problem::Record { seq, referral: Some(id), problem: Integrity::Altered, .. }
                if *seq == target.seq && *id == referral
        ),
        "{}",
        report.to_text()
    );
    // The rest of that referral no longer follows its last verified record.
    assert!(report.problems.iter().any(|problem| matches!(
        problem,
        Problem::Record { seq, problem: Integrity::OutOfChain, .. } if *seq == histories[0][3].seq
    )));
    // The other referrals are untouched.
    assert!(report.problems.iter().all(|problem| match problem {
        Problem::Record { referral, .. } => *referral == Some(referral_id_of(&histories[0])),
        _ => true,
    }));
}

fn referral_id_of(history: &[Stored<EventRecord>]) -> refbus_core::ReferralId {
    history[0].record.state.id
}

#[tokio::test]
async fn two_referrals_events_swapped_are_reported_as_moved() {
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    let histories = three_referrals(&bus).await;
    // a's and b's receipts trade places; each referral's own order is kept, so each chain
    // still verifies: what shows is that a's and b's next records name the old places.
    let a = histories[0][1].seq;
    let b = histories[1][1].seq;
    let (ia, ib) = (
        usize::try_from(a - 1).unwrap(),
        usize::try_from(b - 1).unwrap(),
    );
    let copy = NatsServer::start().unwrap();
    copy_stream(
        &nats.url(),
        &copy.url(),
        |index| {
            if index == ia {
                ib
            } else if index == ib {
                ia
            } else {
                index
            }
        },
        |_| Copy::Keep,
    )
    .await;
    let report = verify(&common::bus(&copy.url()).await, quiet_now()).await;
    let orders: Vec<(u64, u64, u64)> = report
        .problems
        .iter()
        .filter_map(|problem| match problem {
            Problem::Order {
                seq,
                claimed_prev,
                actual_prev,
                ..
            } => Some((*seq, *claimed_prev, *actual_prev)),
            _ => None,
        })
        .collect();
    // a's acceptance names a's receipt at `a`, which now sits at `b`; and the other way round.
    assert_eq!(
        orders,
        vec![(histories[0][2].seq, a, b), (histories[1][2].seq, b, a)],
        "{}",
        report.to_text()
    );
    assert!(
        report
            .problems
            .iter()
            .all(|problem| matches!(problem, Problem::Order { .. })),
        "{}",
        report.to_text()
    );
}

#[tokio::test]
async fn a_missed_escalation_and_a_late_one_are_reported_with_their_lateness() {
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    // Nobody at UPTD PPA answers: the emergency acknowledge clock (1 h) runs out.
    let created = create(&bus, "MRS-LATE-1", "late-1", t0_plus(0)).await;
    let received = recipient_does(&bus, &created, Command::ConfirmReceipt, t0_plus(1)).await;
    // A timely router at 30 min (warning 50%, level 1) and 45 min (warning 75%).
    let current = record_due(&bus, received, t0_plus(30), |_| true).await;
    let current = record_due(&bus, current, t0_plus(45), |_| true).await;
    // At the breach it records the breach but misses the level-2 escalation.
    let missed = |due: &refbus_core::Due| {
        matches!(
            due,
            refbus_core::Due::Escalation {
                level: 2,
                repetition: 0,
                ..
            }
        )
    };
    let current = record_due(&bus, current, t0_plus(60), |due| !missed(due)).await;
    // The repetition due at 1 h 15 min it records ten minutes late.
    let late = |due: &refbus_core::Due| {
        matches!(
            due,
            refbus_core::Due::Escalation {
                level: 2,
                repetition: 1,
                ..
            }
        )
    };
    let current = record_due(&bus, current, t0_plus(85), late).await;
    let late_seq = current.seq;
    // Before the reroute (1 h 30 min) falls due.
    let report = verify(&bus, t0_plus(88)).await;
    let clocks: Vec<&ClockFinding> = report
        .problems
        .iter()
        .filter_map(|problem| match problem {
            Problem::Clock {
                finding, referral, ..
            } => {
                assert_eq!(*referral, created.record.state.id);
                Some(finding)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        clocks,
        vec![
            &ClockFinding::Late {
                key: "acknowledge_emergency.level.2.1".to_owned(),
                seq: late_seq,
                due_at: t0_plus(75),
                recorded_at: t0_plus(85),
                lateness_ms: 10 * 60 * 1000,
            },
            &ClockFinding::Missing {
                key: "acknowledge_emergency.level.2.0".to_owned(),
                due_at: t0_plus(60),
                expected_by: t0_plus(61),
            },
        ],
        "{}",
        report.to_text()
    );
    assert_eq!(report.problems.len(), 2, "{}", report.to_text());
    let text = report.to_text();
    assert!(
        text.contains("10m late") || text.contains("10 min"),
        "{text}"
    );
}

#[tokio::test]
async fn a_timely_router_leaves_nothing_to_report_and_items_within_tolerance_are_pending() {
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    let created = create(&bus, "MRS-OK-1", "ok-1", t0_plus(0)).await;
    let current = record_due(&bus, created, t0_plus(30), |_| true).await;
    // Recorded 59 s after it fell due: within the tolerance.
    let current = record_due(
        &bus,
        current,
        t0_plus(45).plus(std::time::Duration::from_secs(59)),
        |_| true,
    )
    .await;
    // Accepted at 50 min: the clock stops; nothing more is owed.
    let accepted = recipient_does(&bus, &current, Command::Accept, t0_plus(50)).await;
    let _ = accepted;
    let report = verify(&bus, t0_plus(600)).await;
    assert!(report.is_clean(), "{}", report.to_text());

    // A referral nobody answers, audited 30 s after its first warning fell due: pending, not
    // missing; audited at 31 min, the router is a minute late and both items are missing.
    let other = NatsServer::start().unwrap();
    let bus = common::bus(&other.url()).await;
    create(&bus, "MRS-OK-2", "ok-2", t0_plus(0)).await;
    let report = verify(&bus, t0_plus(30).plus(std::time::Duration::from_secs(30))).await;
    assert!(report.is_clean(), "{}", report.to_text());
    let report = verify(&bus, t0_plus(31)).await;
    assert_eq!(report.problems.len(), 2, "{}", report.to_text());
}

/// Signatures are checked in parallel batches (`Bus::prepared_messages`) and the chain in
/// order: a stream longer than one batch, with every referral's events spread over both,
/// verifies clean; one byte altered in the second batch is reported at its sequence, and only
/// its referral is touched.
#[tokio::test]
async fn a_stream_longer_than_one_prepared_batch_verifies_in_order() {
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    let referrals = 150;
    let mut histories: Vec<Vec<Stored<EventRecord>>> = Vec::new();
    for index in 0..referrals {
        let case = format!("MRS-BATCH-{index}");
        histories.push(vec![
            create(&bus, &case, &format!("batch-{index}"), t0_plus(0)).await,
        ]);
    }
    for (command, minutes) in [(Command::ConfirmReceipt, 1), (Command::Accept, 5)] {
        for history in &mut histories {
            let last = history.last().unwrap().clone();
            history.push(recipient_does(&bus, &last, command.clone(), t0_plus(minutes)).await);
        }
    }
    let report = verify(&bus, quiet_now()).await;
    assert!(report.is_clean(), "{}", report.to_text());
    assert_eq!(report.referrals, referrals as u64);
    assert_eq!(report.records, 3 * referrals as u64);
    assert!(report.messages > refbus_bus::replay::PREPARE_BATCH as u64);

    let target = &histories[referrals - 1][2];
    assert!(target.seq > refbus_bus::replay::PREPARE_BATCH as u64);
    let copy = NatsServer::start().unwrap();
    copy_stream(
        &nats.url(),
        &copy.url(),
        |index| index,
        |message| {
            if message.sequence != target.seq {
                return Copy::Keep;
            }
            let mut payload = message.payload.to_vec();
            let text = String::from_utf8(payload.clone()).unwrap();
            let at = text.find("T01:05").unwrap() + 5;
            payload[at] = b'6';
            Copy::Payload(payload)
        },
    )
    .await;
    let report = verify(&common::bus(&copy.url()).await, quiet_now()).await;
    let records: Vec<_> = report
        .problems
        .iter()
        .filter(|problem| matches!(problem, Problem::Record { .. }))
        .collect();
    assert_eq!(records.len(), 1, "{}", report.to_text());
    assert!(
        matches!(
            records[0],
            Problem::Record { seq, referral: Some(id), problem: Integrity::Altered, .. }
                if *seq == target.seq && *id == target.record.state.id
        ),
        "{}",
        report.to_text()
    );
    assert_eq!(report.records, 3 * referrals as u64 - 1);
}
