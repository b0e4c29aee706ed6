//! The one check of a stored record: is this record what refbus would have written?
//!
//! Every reader (router, adapter, dashboard, audit) believes a record only after this check.
//! The bus supplies the bytes and JetStream's own metadata (subject, stored time); everything
//! in the record is a claim until checked:
//!
//! 1. the subject's tokens (recipient, sender, referral id) are the parties and id the event and
//!    the referral name;
//! 2. the stored hash is the hash of the stored event bytes;
//! 3. the signature is valid, made over the subject and those bytes, by the event's author
//!    (its agency, or the router) with a key the registry lists;
//! 4. the event follows its predecessor (sequence and hash) and is exactly what the core decides
//!    for its author, its command and its time, so the author may make this change;
//! 5. the stored state is the state the events make;
//! 6. the event's time is not before its predecessor's, and lies within a tolerance of the time
//!    JetStream stored it (so nobody back-dates an acceptance to escape a breach).
//!
//! Before all of these, the record's format (`crate::format`) must be one this build reads
//! ([`check_format`]): the bus asks before it decodes a record, and reports a refusal as any
//! other failure (`Problem::Format`).
//!
//! The check is pure: the predecessor's state is passed in by the caller, which knows it (the
//! router holds the states it checked) or reads it (one read back).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chain::EventHash;
use crate::event::{Change, Event};
use crate::ids::{AgencyId, ReferralId};
use crate::referral::Referral;
use crate::registry::Registry;
use crate::signature::{Signature, Signer, Signers, ToVerify};
use crate::time::Timestamp;
use crate::verify::{Unfounded, recheck_hashed};

/// How far an event's time may lie from JetStream's own time of storing it, by default.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(120);

/// The kind of an integrity problem: what operators, the dashboard and the audit are told
/// (never free text, so a record's content cannot leak through it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// Not a refbus record at all.
    Unreadable,
    /// The subject it is stored on names other parties or another referral.
    WrongSubject,
    /// Unsigned, badly signed, signed by someone other than its author, or with an unknown key.
    Signature,
    /// The stored hash is not the hash of the stored event.
    Altered,
    /// It does not follow the referral's previous event (sequence or hash).
    OutOfChain,
    /// The core would not have recorded it (the author may not, or the life cycle refuses).
    Refused,
    /// The stored state is not the state the events make.
    WrongState,
    /// Its time is before its predecessor's, or too far from when JetStream stored it.
    Time,
    /// It carries a record format this build does not read (`crate::format`): written by a
    /// newer refbus, or not by refbus. Never guessed at, never skipped in silence.
    Format,
}

impl Problem {
    pub const ALL: [Problem; 9] = [
        Problem::Unreadable,
        Problem::WrongSubject,
        Problem::Signature,
        Problem::Altered,
        Problem::OutOfChain,
        Problem::Refused,
        Problem::WrongState,
        Problem::Time,
        Problem::Format,
    ];

    pub fn parse(text: &str) -> Option<Problem> {
        Problem::ALL
            .into_iter()
            .find(|problem| problem.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Problem::Unreadable => "unreadable",
            Problem::WrongSubject => "wrong_subject",
            Problem::Signature => "signature",
            Problem::Altered => "altered",
            Problem::OutOfChain => "out_of_chain",
            Problem::Refused => "refused",
            Problem::WrongState => "wrong_state",
            Problem::Time => "time",
            Problem::Format => "format",
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a record is not believed: the kind, and a sentence for operators (metadata only: ids,
/// sequences, times, agency ids; never the content of a sealed field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}: {detail}")]
pub struct Failure {
    pub problem: Problem,
    pub detail: String,
}

impl Failure {
    pub fn new(problem: Problem, detail: impl Into<String>) -> Failure {
        Failure {
            problem,
            detail: detail.into(),
        }
    }
}

impl From<crate::format::UnknownFormat> for Failure {
    fn from(unknown: crate::format::UnknownFormat) -> Failure {
        Failure::new(Problem::Format, unknown.to_string())
    }
}

/// The first step of the record check, taken before a record is decoded (a record of another
/// format may not even decode as this build's): does this build read the format the record
/// carries (`None`: written before formats were recorded, format 1)? The refusal names the
/// record by `subject` and `seq`.
pub fn check_format(
    kind: crate::format::RecordKind,
    found: Option<u64>,
    subject: &str,
    seq: u64,
) -> Result<u64, Failure> {
    crate::format::check(kind, found, || crate::format::on_stream(subject, seq))
        .map_err(Failure::from)
}

/// For the coordinator: a record on the bus failed the check. Metadata only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrityNotice {
    /// The subject the refused message was stored on.
    pub subject: String,
    pub stream_seq: u64,
    /// The referral its subject names, if it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral_id: Option<ReferralId>,
    pub problem: Problem,
    pub detail: String,
    /// When the router found it.
    pub at: Timestamp,
}

/// The tokens of a referral subject, as the bus parsed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTokens {
    pub recipient: AgencyId,
    pub sender: AgencyId,
    pub referral: ReferralId,
}

/// A record as read from the bus: every field a claim until [`check`] says otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The subject exactly as stored (the signature covers it).
    pub subject: &'a str,
    pub tokens: &'a SubjectTokens,
    /// When JetStream stored the message (its own metadata, not the writer's claim).
    pub stored_at: Timestamp,
    pub event: &'a Event,
    /// The event exactly as stored.
    pub event_bytes: &'a [u8],
    /// The hash the writer stored beside the event.
    pub stored_hash: EventHash,
    pub signature: Option<&'a Signature>,
    /// The stored state, as JSON text exactly as stored.
    pub state_json: &'a str,
}

/// What the check needs to know about the deployment.
#[derive(Debug, Clone, Copy)]
pub struct Checker<'a> {
    pub registry: &'a Registry,
    pub signers: &'a Signers,
    /// How far an event's time may lie from JetStream's; `None` where the two clocks are not
    /// comparable (a test's manual clock), and the check is skipped.
    pub max_skew: Option<Duration>,
}

impl Checker<'_> {
    /// Checks `claim`, recorded after `before` (the referral's state after the previous event;
    /// `None` for a creation). Returns the referral's state after the event, with whatever
    /// sealed payloads the event carries.
    pub fn check(&self, claim: &Claim<'_>, before: Option<Referral>) -> Result<Referral, Failure> {
        self.check_presigned(claim, self.presign(claim), before)
    }

    /// The part of [`Checker::check`] that needs no predecessor ([`Checker::check_signed`]:
    /// hash and signature, the dominant cost), done ahead, on any thread, for
    /// [`Checker::check_presigned`]: a reader of a whole stream checks signatures in parallel
    /// and the chain in order, through this one check.
    pub fn presign(&self, claim: &Claim<'_>) -> Presigned {
        Presigned(self.check_signed(claim))
    }

    /// [`Checker::check`] with its predecessor-free part already done by [`Checker::presign`]
    /// on this same `claim`. The problems are reported in the same order as by `check`: the
    /// subject against the predecessor first, then the signature's verdict, then the rest.
    pub fn check_presigned(
        &self,
        claim: &Claim<'_>,
        presigned: Presigned,
        before: Option<Referral>,
    ) -> Result<Referral, Failure> {
        let event = claim.event;
        check_subject(claim, before.as_ref())?;
        let bytes_hash = presigned.0?;
        check_time(self.max_skew, claim, before.as_ref())?;
        let (expected_seq, expected_prev) =
            before.as_ref().map_or((1, EventHash::GENESIS), |before| {
                (before.seq + 1, before.last_hash)
            });
        if event.seq != expected_seq || event.prev_hash != expected_prev {
            return Err(Failure::new(
                Problem::OutOfChain,
                format!(
                    "it claims to be event {} after {}, but the referral's last verified event is {} with hash {}",
                    event.seq,
                    event.prev_hash,
                    expected_seq - 1,
                    expected_prev
                ),
            ));
        }
        let mut after =
            recheck_hashed(self.registry, before, event, bytes_hash).map_err(|err| {
                let problem = match err {
                    Unfounded::OutOfChain(_) => Problem::OutOfChain,
                    Unfounded::Refused(_) | Unfounded::Different => Problem::Refused,
                };
                Failure::new(problem, format!("{} event: {err}", event.change.kind()))
            })?;
        if !after.as_snapshot(|snapshot| encodes_as(snapshot, claim.state_json)) {
            return Err(Failure::new(
                Problem::WrongState,
                "the stored state is not the state its events make",
            ));
        }
        Ok(after)
    }

    /// The part of [`Checker::check`] that needs no predecessor: subject, hash and signature;
    /// the hash of the event's stored bytes. For a reader that trusts the state an earlier full
    /// check established (the router's rebuild of records it consumed and checked).
    pub fn check_signed(&self, claim: &Claim<'_>) -> Result<EventHash, Failure> {
        let mut verdicts = self.check_signed_all(std::slice::from_ref(claim));
        verdicts.pop().expect("one verdict per claim")
    }

    /// [`Checker::check_signed`] of every claim, the verdicts in order, the signatures verified
    /// together ([`Signers::verify_all`]): what a reader of many records calls.
    pub fn check_signed_all(&self, claims: &[Claim<'_>]) -> Vec<Result<EventHash, Failure>> {
        let mut verdicts: Vec<Result<EventHash, Failure>> = claims
            .iter()
            .map(|claim| {
                if claim.tokens.referral != claim.event.referral_id {
                    return Err(wrong_subject(claim));
                }
                let bytes_hash = EventHash(Sha256::digest(claim.event_bytes).into());
                if bytes_hash != claim.stored_hash {
                    return Err(Failure::new(
                        Problem::Altered,
                        "the stored hash is not the hash of the stored event",
                    ));
                }
                Ok(bytes_hash)
            })
            .collect();
        let authors: Vec<Signer> = claims
            .iter()
            .map(|claim| Signer::of(&claim.event.actor))
            .collect();
        // Only what passed the subject and the hash has its signature checked.
        let to_verify: Vec<(usize, ToVerify<'_>)> = claims
            .iter()
            .zip(&authors)
            .enumerate()
            .filter(|(i, _)| verdicts[*i].is_ok())
            .map(|(i, (claim, author))| {
                let item = ToVerify {
                    author,
                    signature: claim.signature,
                    subject: claim.subject,
                    event_bytes: claim.event_bytes,
                };
                (i, item)
            })
            .collect();
        let items: Vec<ToVerify<'_>> = to_verify.iter().map(|(_, item)| *item).collect();
        for ((i, _), verdict) in to_verify.iter().zip(self.signers.verify_all(&items)) {
            if let Err(err) = verdict {
                verdicts[*i] = Err(Failure::new(Problem::Signature, err.to_string()));
            }
        }
        verdicts
    }

    /// [`Checker::presign`] of every claim, in order, the signatures verified together: a
    /// reader of a whole stream presigns a batch of records on each core.
    pub fn presign_all(&self, claims: &[Claim<'_>]) -> Vec<Presigned> {
        self.check_signed_all(claims)
            .into_iter()
            .map(Presigned)
            .collect()
    }
}

/// Whether `value` encodes as exactly `text` in JSON, compared as it is encoded: nothing is
/// built, and the comparison stops at the first byte that differs. The same bytes as
/// `serde_json::to_string` (which writes the same way into a string).
fn encodes_as<T: Serialize>(value: &T, text: &str) -> bool {
    struct Compare<'a> {
        rest: &'a [u8],
    }
    impl std::io::Write for Compare<'_> {
        fn write(&mut self, written: &[u8]) -> std::io::Result<usize> {
            match self.rest.strip_prefix(written) {
                Some(rest) => {
                    self.rest = rest;
                    Ok(written.len())
                }
                // Ends the encoding: the rest cannot make it equal.
                None => Err(std::io::ErrorKind::InvalidData.into()),
            }
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut compare = Compare {
        rest: text.as_bytes(),
    };
    serde_json::to_writer(&mut compare, value).is_ok() && compare.rest.is_empty()
}

/// The verdict of [`Checker::presign`] on one claim (its hash if the signature holds): only
/// `presign` makes one, so [`Checker::check_presigned`] never believes an unchecked signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presigned(Result<EventHash, Failure>);

impl Presigned {
    /// The verdict: the event's hash if subject, hash and signature hold.
    pub fn verdict(self) -> Result<EventHash, Failure> {
        self.0
    }
}

fn wrong_subject(claim: &Claim<'_>) -> Failure {
    Failure::new(
        Problem::WrongSubject,
        format!(
            "stored on {} but it is event {} of referral {}",
            claim.subject, claim.event.seq, claim.event.referral_id
        ),
    )
}

fn check_subject(claim: &Claim<'_>, before: Option<&Referral>) -> Result<(), Failure> {
    let tokens = claim.tokens;
    let event = claim.event;
    if tokens.referral != event.referral_id {
        return Err(wrong_subject(claim));
    }
    let (recipient, sender) = match (&event.change, before) {
        (Change::Created(creation), _) => (&creation.recipient, &creation.sender),
        (_, Some(before)) => {
            if before.id != event.referral_id {
                return Err(Failure::new(
                    Problem::OutOfChain,
                    format!(
                        "its predecessor belongs to referral {}, not {}",
                        before.id, event.referral_id
                    ),
                ));
            }
            (before.recipient(), before.sender())
        }
        // No predecessor and not a creation: the core refuses it below.
        (_, None) => return Ok(()),
    };
    if &tokens.recipient != recipient || &tokens.sender != sender {
        return Err(Failure::new(
            Problem::WrongSubject,
            format!(
                "stored on {} but referral {} is from {sender} to {recipient}",
                claim.subject, event.referral_id
            ),
        ));
    }
    Ok(())
}

fn check_time(
    max_skew: Option<Duration>,
    claim: &Claim<'_>,
    before: Option<&Referral>,
) -> Result<(), Failure> {
    let at = claim.event.at;
    if let Some(before) = before
        && at < before.updated_at
    {
        return Err(Failure::new(
            Problem::Time,
            format!(
                "its time {at} is before its predecessor's ({})",
                before.updated_at
            ),
        ));
    }
    if let Some(max_skew) = max_skew {
        let skew = if at >= claim.stored_at {
            at.since(claim.stored_at)
        } else {
            claim.stored_at.since(at)
        };
        if skew > max_skew {
            return Err(Failure::new(
                Problem::Time,
                format!(
                    "its time {at} is {} s from when the bus stored it ({}); at most {} s is allowed",
                    skew.as_secs(),
                    claim.stored_at,
                    max_skew.as_secs()
                ),
            ));
        }
    }
    Ok(())
}
