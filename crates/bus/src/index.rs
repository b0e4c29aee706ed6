//! The creation index: bounded listings, newest first, without reading every referral.
//!
//! Each ordered pair of agencies has one index subject, `refbus.v1.idx.<recipient>.<sender>`,
//! holding one small message per referral the sender made for the recipient:
//! `{"format":1,"referral":"<id>","prev":<seq>}` (an entry without `format` is format 1), where `prev` is the stream sequence of the entry before
//! it on the same subject (0 for the first). The bus writes an entry right after each creation
//! ([`Bus::append`] does it for every creation; [`Bus::index_referral`] again for a retry),
//! with `Nats-Expected-Last-Subject-Sequence` set to `prev`, so the entries of a pair form an
//! exact chain, and with the message id `index:<referral>`, so a retry adds nothing.
//!
//! JetStream reads forward only, and a listing is newest first. A chain read backwards (the
//! last entry, then its `prev`, one direct read each) gives a pair's referrals newest first at
//! the cost of one read per entry; an agency's listing merges the chains of the pairs it is
//! part of ([`Listing`]), and a page token is each chain's position, so a page costs the same
//! reads however many referrals the agency has.
//!
//! An entry only points: the referral it names is read through the record check (its last
//! record against its predecessor, and a valid creation of that very referral on its subject),
//! and its subject is derived from the chain's own agencies and the id, so an entry can never
//! make a listing show a record that fails the check, a look-alike subject, or a referral the
//! listing agency is not party to. Only the sender may write a pair's chain (NATS permissions:
//! `refbus.v1.idx.*.<me>`), so the worst a hostile writer can do is leave out of listings the
//! referrals it sent itself (they still reach the recipient's inbox and run their clocks).

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use refbus_core::format::RecordKind;
use refbus_core::integrity::{Failure, Problem};
use refbus_core::{AgencyId, Referral, ReferralId};
use serde::{Deserialize, Serialize};

use crate::record::EventRecord;
use crate::{AppendError, AppendErrorKind, Bus, ReadError, Stored, Verifier, headers, subjects};

/// How often an index append is tried again after another writer moved the chain.
const INDEX_RETRIES: usize = 8;

/// One index entry as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    referral: ReferralId,
    prev: u64,
}

/// The chains this process appends to, each with the last sequence it knows of: appends to one
/// chain wait for each other here (one writer per pair of agencies: its sender's adapter), so
/// they do not race each other on the bus, and the chain's end needs no read while this
/// process is its only writer.
#[derive(Debug, Default)]
pub(crate) struct Chains {
    chains: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<u64>>>>>,
}

impl Chains {
    fn slot(&self, subject: &str) -> Arc<tokio::sync::Mutex<Option<u64>>> {
        let mut chains = self
            .chains
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        chains.entry(subject.to_owned()).or_default().clone()
    }
}

impl Bus {
    /// Adds `state`'s referral to its pair's index chain, once: a retry (within the duplicate
    /// window) writes nothing. Returns only after JetStream stored the entry.
    pub async fn index_referral(&self, state: &Referral) -> Result<(), AppendError> {
        let chain = subjects::index(state.recipient(), state.sender());
        let slot = self.index_chains.slot(&chain);
        let mut last = slot.lock().await;
        for _ in 0..INDEX_RETRIES {
            let prev = match *last {
                Some(seq) => seq,
                None => self
                    .direct_last(&chain)
                    .await
                    .map_err(|err| AppendError::with_source(AppendErrorKind::Unavailable, err))?
                    .map_or(0, |message| message.sequence),
            };
            let entry = Entry {
                referral: state.id,
                prev,
            };
            let mut headers = HeaderMap::new();
            headers.insert(headers::KIND, "index");
            let message = PublishMessage::build()
                .payload(crate::record::encode_versioned(RecordKind::IndexEntry, &entry).into())
                .headers(headers)
                .message_id(format!("index:{}", state.id))
                .expected_last_subject_sequence(prev);
            match self.publish(chain.clone(), message).await {
                Ok(appended) => {
                    // A duplicate wrote nothing: the chain still ends at `prev`.
                    *last = Some(if appended.duplicate {
                        prev
                    } else {
                        appended.seq
                    });
                    return Ok(());
                }
                // Another writer (another replica of the sender's adapter) moved the chain.
                Err(err) if err.kind() == AppendErrorKind::Conflict => *last = None,
                Err(err) => {
                    *last = None;
                    return Err(err);
                }
            }
        }
        Err(AppendError::new(AppendErrorKind::Conflict))
    }

    /// [`Bus::index_referral`] for a creation a retried create found: the attempt that stored
    /// it may have stopped before its index entry. Only while the entry's message id is
    /// remembered (the duplicate window, 7 days by default) can adding it again write nothing
    /// if it is there; a creation older than that is taken as indexed (its first attempt had a
    /// week of retries to finish), so a late retry never lists a referral twice.
    pub async fn index_retried(&self, creation: &Stored<EventRecord>) -> Result<(), AppendError> {
        let window = self.duplicate_window;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
            });
        let age = now.saturating_sub(creation.record.event.at.as_millis());
        if u128::try_from(age).unwrap_or(0) >= window.as_millis() {
            return Ok(());
        }
        self.index_referral(&creation.record.state).await
    }

    /// An agency's referrals on the chains of `pairs` (recipient, sender), newest first, from
    /// `positions` (a previous listing's [`Listing::positions`], same pairs in the same order)
    /// or from the newest.
    pub fn listing(
        &self,
        verifier: &Verifier,
        pairs: Vec<(AgencyId, AgencyId)>,
        positions: Option<Vec<u64>>,
    ) -> Listing {
        let mut positions = positions.unwrap_or_default().into_iter();
        let chains = pairs
            .into_iter()
            .map(|(recipient, sender)| Chain {
                subject: subjects::index(&recipient, &sender),
                recipient,
                sender,
                next: match positions.next() {
                    None | Some(NEWEST) => Position::Newest,
                    Some(DONE) => Position::Done,
                    Some(seq) => Position::At(seq),
                },
                head: None,
            })
            .collect();
        Listing {
            bus: self.clone(),
            verifier: verifier.clone(),
            chains,
        }
    }
}

/// A position meaning "nothing more on this chain".
const DONE: u64 = 0;
/// A position meaning "from the chain's newest entry".
const NEWEST: u64 = u64::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    Newest,
    At(u64),
    Done,
}

#[derive(Debug)]
struct Head {
    seq: u64,
    entry: Entry,
}

#[derive(Debug)]
struct Chain {
    subject: String,
    recipient: AgencyId,
    sender: AgencyId,
    /// Where the next entry is read, once `head` is taken.
    next: Position,
    head: Option<Head>,
}

/// Referrals from several index chains, newest first (by the stream sequence of their index
/// entries). Each step costs one read per chain whose head was taken, plus the referral's
/// checked read.
#[derive(Debug)]
pub struct Listing {
    bus: Bus,
    verifier: Verifier,
    chains: Vec<Chain>,
}

/// One step of a listing: the referral an index entry names, or `None` if it fails the record
/// check (reported) and is not shown.
#[derive(Debug)]
pub struct Listed {
    pub referral: ReferralId,
    pub stored: Option<Stored<EventRecord>>,
}

impl Listing {
    /// The next newest referral; `None` once every chain is read to its start.
    pub async fn next(&mut self) -> Result<Option<Listed>, ReadError> {
        self.load_heads().await?;
        let Some(chain) = self
            .chains
            .iter_mut()
            .filter(|chain| chain.head.is_some())
            .max_by_key(|chain| chain.head.as_ref().map_or(0, |head| head.seq))
        else {
            return Ok(None);
        };
        let Some(head) = chain.head.take() else {
            return Ok(None);
        };
        chain.next = match head.entry.prev {
            DONE => Position::Done,
            // A chain only goes back: anything else would loop.
            prev if prev < head.seq => Position::At(prev),
            _ => {
                let failure = Failure::new(
                    Problem::Unreadable,
                    "an index entry names a predecessor that is not before it",
                );
                self.verifier.report(head.seq, &chain.subject, &failure);
                Position::Done
            }
        };
        let id = head.entry.referral;
        let subject = subjects::referral(&chain.recipient, &chain.sender, &id);
        let stored = checked_referral(&self.bus, &self.verifier, &subject, &id).await?;
        Ok(Some(Listed {
            referral: id,
            stored,
        }))
    }

    /// Whether any chain holds another entry (one read per chain whose head is not loaded).
    pub async fn has_more(&mut self) -> Result<bool, ReadError> {
        self.load_heads().await?;
        Ok(self.chains.iter().any(|chain| chain.head.is_some()))
    }

    /// Where each chain goes on from, in the order of the pairs given: for a page token.
    pub fn positions(&self) -> Vec<u64> {
        self.chains
            .iter()
            .map(|chain| match (&chain.head, chain.next) {
                (Some(head), _) => head.seq,
                (None, Position::At(seq)) => seq,
                (None, Position::Newest) => NEWEST,
                (None, Position::Done) => DONE,
            })
            .collect()
    }

    async fn load_heads(&mut self) -> Result<(), ReadError> {
        for chain in &mut self.chains {
            if chain.head.is_some() {
                continue;
            }
            let message = match chain.next {
                Position::Done => continue,
                Position::Newest => self
                    .bus
                    .direct_last(&chain.subject)
                    .await?
                    .map(crate::Raw::from),
                // By sequence through a consumer on the chain's own subject: the one form NATS
                // permissions can confine to the agency's chains (see `scoped`).
                Position::At(seq) => self
                    .bus
                    .first_from(&chain.subject, seq)
                    .await?
                    .filter(|raw| raw.sequence == seq),
            };
            let Some(message) = message else {
                chain.next = Position::Done;
                continue;
            };
            let entry = if message.subject == chain.subject {
                crate::record::decode_versioned::<Entry>(
                    RecordKind::IndexEntry,
                    &message.payload,
                    &message.subject,
                    message.sequence,
                )
                .map_err(|err| err.failure("not an index entry"))
            } else {
                Err(Failure::new(
                    Problem::Unreadable,
                    format!(
                        "an index entry of {} names a predecessor on {}",
                        chain.subject, message.subject
                    ),
                ))
            };
            match entry {
                Ok(entry) => {
                    chain.head = Some(Head {
                        seq: message.sequence,
                        entry,
                    });
                }
                Err(failure) => {
                    // The chain cannot be followed past this point: said loudly, and the
                    // listing goes on with the other chains.
                    self.verifier
                        .report(message.sequence, &chain.subject, &failure);
                    chain.next = Position::Done;
                }
            }
        }
        Ok(())
    }
}

/// The checked current state of referral `id` on `subject`, provided the subject holds a valid
/// creation of that very referral; `None` otherwise (reported by the check).
async fn checked_referral(
    bus: &Bus,
    verifier: &Verifier,
    subject: &str,
    id: &ReferralId,
) -> Result<Option<Stored<EventRecord>>, ReadError> {
    let Some(stored) = bus.referral(verifier, subject).await? else {
        return Ok(None);
    };
    if stored.record.state.id != *id {
        return Ok(None);
    }
    if stored.record.event.seq > 1 {
        let creation = bus.checked_creation(verifier, subject).await?;
        if creation.is_none_or(|created| created.record.state.id != *id) {
            return Ok(None);
        }
    }
    Ok(Some(stored))
}
