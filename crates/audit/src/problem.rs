//! What verification reports: one typed problem per finding, each naming the referral (where
//! there is one), the stream sequence and what was expected, in JSON for machines and a
//! sentence for people. Metadata only: subjects, ids, sequences, times, keys; never a record's
//! content.

use refbus_core::audit::ClockFinding;
use refbus_core::{ReferralId, Timestamp, integrity};
use serde::{Deserialize, Serialize};

/// One thing an auditor must look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum Problem {
    /// A stored message fails the one record check: it is not part of its referral.
    Record {
        seq: u64,
        subject: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        referral: Option<ReferralId>,
        problem: integrity::Problem,
        detail: String,
    },
    /// Stream sequences between two messages read are not there: deleted (or lost).
    Gap {
        /// The last sequence read before the gap (0: the stream's start).
        after: u64,
        /// The next sequence read (the stream's last sequence + 1 when the tail is gone).
        next: u64,
        missing: u64,
    },
    /// A referral record's writer named another stream sequence as the referral's previous
    /// record than the one the stream holds before it: messages were moved (reordered or
    /// copied into another stream in another order).
    Order {
        seq: u64,
        subject: String,
        referral: ReferralId,
        /// The previous record's sequence, as the writer recorded it (`Refbus-Prev-Seq`).
        claimed_prev: u64,
        /// The sequence of the referral's previous verified record in this stream.
        actual_prev: u64,
    },
    /// JetStream's own account of the stream is not that of a stream nothing was removed from.
    Stream {
        what: StreamIssue,
        expected: u64,
        found: u64,
    },
    /// The router's clock records differ from what the core decides from the events alone.
    Clock {
        referral: ReferralId,
        subject: String,
        finding: ClockFinding,
    },
    /// The Merkle log disagrees with the stream, or its checkpoints with their signers or with
    /// each other (`refbus_notary::verify` decides; `kind` names which finding).
    Log {
        kind: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        detail: String,
    },
}

/// Which of JetStream's figures is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamIssue {
    /// The first sequence stored is not 1: messages were removed from the front.
    FirstSequence,
    /// JetStream counts deleted messages.
    DeletedMessages,
    /// The number of messages is not last - first + 1.
    MessageCount,
    /// The last message read is not JetStream's last sequence: the tail was removed.
    LastSequence,
}

impl Problem {
    /// The stream sequence the problem is at, if one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Problem::Record { seq, .. } => Some(*seq),
            Problem::Gap { after, .. } => Some(after + 1),
            Problem::Order { seq, .. } => Some(*seq),
            Problem::Stream { .. } => None,
            Problem::Log { seq, .. } => *seq,
            Problem::Clock { finding, .. } => match finding {
                ClockFinding::Late { seq, .. } | ClockFinding::Extra { seq, .. } => Some(*seq),
                ClockFinding::Missing { .. } => None,
            },
        }
    }

    /// The problem in one sentence, for people.
    pub fn describe(&self) -> String {
        match self {
            Problem::Record {
                seq,
                subject,
                referral,
                problem,
                detail,
            } => {
                let referral =
                    referral.map_or_else(|| "(no referral)".to_owned(), |id| id.to_string());
                format!(
                    "RECORD {problem}: referral {referral}, stream sequence {seq} on {subject}: \
                     expected a record refbus would have written; {detail}"
                )
            }
            Problem::Gap {
                after,
                next,
                missing,
            } => format!(
                "GAP: stream sequences {}..={} are missing ({missing} message(s)) between {after} and {next}: \
                 expected every sequence, nothing is ever deleted",
                after + 1,
                next - 1
            ),
            Problem::Order {
                seq,
                subject,
                referral,
                claimed_prev,
                actual_prev,
            } => format!(
                "ORDER: referral {referral}, stream sequence {seq} on {subject}: its writer \
                 recorded it after stream sequence {claimed_prev}, but the referral's previous \
                 record is at {actual_prev}: messages were moved"
            ),
            Problem::Stream {
                what,
                expected,
                found,
            } => {
                let what = match what {
                    StreamIssue::FirstSequence => "first stored sequence",
                    StreamIssue::DeletedMessages => "deleted messages counted by JetStream",
                    StreamIssue::MessageCount => "messages stored",
                    StreamIssue::LastSequence => "last sequence read (JetStream's last sequence)",
                };
                format!("STREAM: {what}: expected {expected}, found {found}")
            }
            Problem::Log { kind, detail, .. } => format!("LOG {kind}: {detail}"),
            Problem::Clock {
                referral, finding, ..
            } => match finding {
                ClockFinding::Missing {
                    key,
                    due_at,
                    expected_by,
                } => format!(
                    "CLOCK missing: referral {referral}: {key} was due at {due_at} and expected \
                     by {expected_by}; the router never recorded it"
                ),
                ClockFinding::Late {
                    key,
                    seq,
                    due_at,
                    recorded_at,
                    lateness_ms,
                } => format!(
                    "CLOCK late: referral {referral}, stream sequence {seq}: {key} was due at \
                     {due_at}, recorded at {recorded_at}, {} late",
                    refbus_core::time::format_duration(std::time::Duration::from_millis(
                        *lateness_ms
                    ))
                ),
                ClockFinding::Extra {
                    key,
                    seq,
                    recorded_at,
                } => format!(
                    "CLOCK extra: referral {referral}, stream sequence {seq}: {key} recorded at \
                     {recorded_at} but the core says it was not due"
                ),
            },
        }
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// What was verified: `nats` or `export:<file>`.
    pub source: String,
    /// Messages read (every subject).
    pub messages: u64,
    /// Referral records that passed the record check.
    pub records: u64,
    /// Referrals seen.
    pub referrals: u64,
    /// The last stream sequence read.
    pub last_seq: u64,
    /// The horizon the clocks were recomputed to.
    pub now: Timestamp,
    /// The checks that ran, by name.
    pub checks: Vec<String>,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The report for people: a summary, then one line per problem.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "refbus audit verify: {} ({} messages up to stream sequence {}, {} records, {} referrals; checks: {}; clocks recomputed to {})\n",
            self.source,
            self.messages,
            self.last_seq,
            self.records,
            self.referrals,
            self.checks.join(", "),
            self.now
        );
        if self.problems.is_empty() {
            text.push_str("OK: no problem found\n");
        } else {
            text.push_str(&format!("{} PROBLEM(S):\n", self.problems.len()));
            for problem in &self.problems {
                text.push_str("  ");
                text.push_str(&problem.describe());
                text.push('\n');
            }
        }
        text
    }
}
