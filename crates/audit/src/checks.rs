//! The independent checks `refbus audit verify` runs. Each sees every stored message once, in
//! stream order, with the record check's verdict on it, and reports typed [`Problem`]s; at the
//! end each sees JetStream's own account of the stream and every referral's last verified
//! state. A check keeps its own state, which it can save and restore so an interrupted
//! verification resumes.
//!
//! Adding a check (the Merkle log's: every message a leaf, every checkpoint consistent) is
//! one more [`Check`] in the list the caller passes to [`crate::verify`]: nothing else changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use refbus_bus::{EventRecord, StoredMessage, StreamState, subjects};
use refbus_core::audit::ClockAudit;
use refbus_core::integrity::Failure;
use refbus_core::{Referral, Registry, Timestamp};

use crate::problem::{Problem, StreamIssue};

/// What the record check made of a message.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// A referral record that passes, with the state it followed (`None`: a creation).
    Record {
        before: Option<Box<Referral>>,
        record: Box<refbus_bus::Stored<EventRecord>>,
    },
    /// A referral record that fails: not part of its referral; or a notice or index entry of
    /// a format this build does not read.
    Refused(Failure),
    /// Not on a referral subject (a notice, an index entry): the record check does not apply.
    Other,
}

/// One message as the checks see it.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub message: &'a StoredMessage,
    pub verdict: &'a Verdict,
}

/// The end of a verification.
#[derive(Debug, Clone, Copy)]
pub struct End<'a> {
    /// JetStream's own account of the stream, when the source is the stream itself (or an
    /// unfiltered export that recorded it).
    pub stream: Option<StreamState>,
    /// The horizon clocks are recomputed to.
    pub now: Timestamp,
    /// Every referral's last verified state, by subject.
    pub states: &'a HashMap<String, Referral>,
}

/// One independent check.
pub trait Check: Send {
    /// Its name in reports and in the resume file.
    fn name(&self) -> &'static str;
    fn message(&mut self, seen: Seen<'_>, problems: &mut Vec<Problem>);
    fn finish(&mut self, end: End<'_>, problems: &mut Vec<Problem>);
    /// Its state, to resume an interrupted verification.
    fn save(&self) -> serde_json::Value;
    fn restore(&mut self, saved: serde_json::Value) -> Result<(), serde_json::Error>;
}

/// The checks of a verification of the stream: records, sequences, clocks.
pub fn standard(registry: Arc<Registry>, tolerance: Duration) -> Vec<Box<dyn Check>> {
    vec![
        Box::new(RecordCheck),
        Box::new(SequenceCheck::default()),
        Box::new(OrderCheck::default()),
        Box::new(ClockCheck::new(registry, tolerance)),
    ]
}

// === impl RecordCheck ===

/// Every referral record passes the one record check (`refbus_core::integrity`): signature,
/// subject, hash, chain, state, time.
#[derive(Debug, Default)]
pub struct RecordCheck;

impl Check for RecordCheck {
    fn name(&self) -> &'static str {
        "records"
    }

    fn message(&mut self, seen: Seen<'_>, problems: &mut Vec<Problem>) {
        if let Verdict::Refused(failure) = seen.verdict {
            let referral = match subjects::parse(&seen.message.subject) {
                Some(subjects::Parsed::Referral(parsed)) => Some(parsed.id),
                _ => None,
            };
            problems.push(Problem::Record {
                seq: seen.message.seq,
                subject: seen.message.subject.clone(),
                referral,
                problem: failure.problem,
                detail: failure.detail.clone(),
            });
        }
    }

    fn finish(&mut self, _: End<'_>, _: &mut Vec<Problem>) {}

    fn save(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    fn restore(&mut self, _: serde_json::Value) -> Result<(), serde_json::Error> {
        Ok(())
    }
}

// === impl SequenceCheck ===

/// No stream sequence is missing between the first and the last, and JetStream's own figures
/// (first and last sequence, message count, deleted count) are those of a stream nothing was
/// removed from.
///
/// What this cannot see: a stream rebuilt from a copy (its sequences renumbered without the
/// removed messages) is gapless; only the Merkle log (a checkpoint signed over the old tree)
/// tells. See docs/AUDIT.md.
#[derive(Debug, Default)]
pub struct SequenceCheck {
    last: u64,
}

impl Check for SequenceCheck {
    fn name(&self) -> &'static str {
        "sequences"
    }

    fn message(&mut self, seen: Seen<'_>, problems: &mut Vec<Problem>) {
        let seq = seen.message.seq;
        if seq > self.last + 1 {
            problems.push(Problem::Gap {
                after: self.last,
                next: seq,
                missing: seq - self.last - 1,
            });
        }
        self.last = self.last.max(seq);
    }

    fn finish(&mut self, end: End<'_>, problems: &mut Vec<Problem>) {
        let Some(stream) = end.stream else {
            return;
        };
        if stream.last_seq > self.last {
            // The tail is gone: JetStream assigned sequences no message is stored at any more.
            problems.push(Problem::Gap {
                after: self.last,
                next: stream.last_seq + 1,
                missing: stream.last_seq - self.last,
            });
            problems.push(Problem::Stream {
                what: StreamIssue::LastSequence,
                expected: stream.last_seq,
                found: self.last,
            });
        }
        if stream.last_seq > 0 && stream.first_seq != 1 {
            problems.push(Problem::Stream {
                what: StreamIssue::FirstSequence,
                expected: 1,
                found: stream.first_seq,
            });
        }
        if stream.deleted != 0 {
            problems.push(Problem::Stream {
                what: StreamIssue::DeletedMessages,
                expected: 0,
                found: stream.deleted,
            });
        }
        let expected = stream.last_seq;
        if stream.messages != expected {
            problems.push(Problem::Stream {
                what: StreamIssue::MessageCount,
                expected,
                found: stream.messages,
            });
        }
    }

    fn save(&self) -> serde_json::Value {
        serde_json::json!({ "last": self.last })
    }

    fn restore(&mut self, saved: serde_json::Value) -> Result<(), serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Saved {
            last: u64,
        }
        let saved: Saved = serde_json::from_value(saved)?;
        self.last = saved.last;
        Ok(())
    }
}

// === impl OrderCheck ===

/// Every referral record follows, in the stream, the record its writer said it follows: the
/// `Refbus-Prev-Seq` header (the stream sequence of the previous record, which every append
/// names) is the sequence of the referral's previous verified record. The header is not
/// signed, so this proves nothing against a forger who rewrites headers; it does catch
/// messages moved as they are (two referrals' events swapped, a stream rebuilt in another
/// order), which the per-referral chains cannot see when each referral's own order is kept.
#[derive(Debug, Default)]
pub struct OrderCheck {
    /// The sequence of each referral's last verified record, by subject.
    last: HashMap<String, u64>,
}

impl Check for OrderCheck {
    fn name(&self) -> &'static str {
        "order"
    }

    fn message(&mut self, seen: Seen<'_>, problems: &mut Vec<Problem>) {
        let Verdict::Record { record, .. } = seen.verdict else {
            return;
        };
        let subject = &seen.message.subject;
        let actual_prev = self.last.get(subject).copied().unwrap_or(0);
        let claimed_prev = seen.message.prev_seq();
        if claimed_prev != actual_prev {
            problems.push(Problem::Order {
                seq: seen.message.seq,
                subject: subject.clone(),
                referral: record.record.event.referral_id,
                claimed_prev,
                actual_prev,
            });
        }
        self.last.insert(subject.clone(), seen.message.seq);
    }

    fn finish(&mut self, _: End<'_>, _: &mut Vec<Problem>) {}

    fn save(&self) -> serde_json::Value {
        serde_json::to_value(&self.last).unwrap_or_default()
    }

    fn restore(&mut self, saved: serde_json::Value) -> Result<(), serde_json::Error> {
        self.last = serde_json::from_value(saved)?;
        Ok(())
    }
}

// === impl ClockCheck ===

/// The router's warnings, breaches, escalations and reroute requests are exactly those the
/// core decides from each referral's events alone (`refbus_core::audit::ClockAudit`, which
/// runs the router's own `evaluate`): every missing, extra or late item is reported.
#[derive(Debug)]
pub struct ClockCheck {
    registry: Arc<Registry>,
    tolerance: Duration,
    /// Referrals with items owed, by subject (the others need nothing kept).
    audits: HashMap<String, ClockAudit>,
}

impl ClockCheck {
    pub fn new(registry: Arc<Registry>, tolerance: Duration) -> ClockCheck {
        ClockCheck {
            registry,
            tolerance,
            audits: HashMap::new(),
        }
    }
}

impl Check for ClockCheck {
    fn name(&self) -> &'static str {
        "clocks"
    }

    fn message(&mut self, seen: Seen<'_>, problems: &mut Vec<Problem>) {
        let Verdict::Record { before, record } = seen.verdict else {
            return;
        };
        let subject = &seen.message.subject;
        let mut audit = self.audits.remove(subject).unwrap_or_default();
        let findings = audit.observe(
            &self.registry,
            before.as_deref(),
            &record.record.event,
            &record.record.state,
            record.seq,
            self.tolerance,
        );
        problems.extend(findings.into_iter().map(|finding| Problem::Clock {
            referral: record.record.event.referral_id,
            subject: subject.clone(),
            finding,
        }));
        if !audit.is_empty() {
            self.audits.insert(subject.clone(), audit);
        }
    }

    fn finish(&mut self, end: End<'_>, problems: &mut Vec<Problem>) {
        let mut subjects: Vec<&String> = end.states.keys().collect();
        subjects.sort();
        for subject in subjects {
            let state = &end.states[subject];
            let mut audit = self.audits.remove(subject).unwrap_or_default();
            let findings = audit.finish(&self.registry, state, end.now, self.tolerance);
            problems.extend(findings.into_iter().map(|finding| Problem::Clock {
                referral: state.id,
                subject: subject.clone(),
                finding,
            }));
        }
    }

    fn save(&self) -> serde_json::Value {
        serde_json::to_value(&self.audits).unwrap_or_default()
    }

    fn restore(&mut self, saved: serde_json::Value) -> Result<(), serde_json::Error> {
        self.audits = serde_json::from_value(saved)?;
        Ok(())
    }
}
