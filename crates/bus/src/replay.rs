//! Replaying the stream through the one record check: every record matching a filter, in
//! stream order, each checked against the referral's previous verified record, as an auditor or
//! a rebuilding projection (the dashboard's) reads history.
//!
//! Two layers, so an auditor can see both the bytes and the verdict of each message without a
//! second checking path: [`Bus::messages`] reads the messages exactly as stored (sequence,
//! subject, JetStream's time, headers, payload), and a [`Replayer`] checks them in order, holding
//! each referral's last verified state. [`Bus::replay`] is the two together. A reader of an
//! export (the stored messages written to a file) checks them with the same [`Replayer`].

use std::collections::HashMap;

use async_nats::jetstream;
use async_nats::jetstream::consumer::DeliverPolicy;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use refbus_core::integrity::{Failure, Presigned};
use refbus_core::{Referral, Timestamp};

use crate::record::EventRecord;
use crate::{Bus, ReadError, ReadErrorKind, Stored, Verifier, ordered_config};

/// One message of a replay.
#[derive(Debug, Clone)]
pub enum Replayed {
    /// A record that passes the check, with the referral's state after it (sealed creation
    /// payloads included on a creation).
    Record(Box<Stored<EventRecord>>),
    /// A message that fails the check: it is not part of its referral, which goes on from its
    /// last verified record.
    Refused {
        seq: u64,
        subject: String,
        failure: Failure,
    },
}

/// A message exactly as the stream stores it: what an auditor reads, exports and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub seq: u64,
    pub subject: String,
    /// When JetStream stored it (its own metadata, not the writer's claim).
    pub stored_at: Timestamp,
    /// Every header, by name (not signed: CloudEvents, trace context, refbus's predecessor
    /// sequence, the message id). By name, not as stored: NATS's client does not keep the
    /// order, and a read, an export and its hash must be the same each time.
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
}

impl StoredMessage {
    /// The sequence of the previous event of the same referral, as its writer claimed it.
    pub fn prev_seq(&self) -> u64 {
        self.headers
            .iter()
            .find(|(name, _)| name == crate::headers::PREV_SEQ)
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0)
    }

    fn raw(&self) -> crate::Raw {
        let header = |name: &str| {
            self.headers
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        crate::Raw {
            subject: self.subject.clone(),
            sequence: self.seq,
            prev_seq: self.prev_seq(),
            stored_after: crate::headers::stored_after(header),
            stored_at: self.stored_at,
            message_id: header(async_nats::header::NATS_MESSAGE_ID.as_ref()).map(str::to_owned),
            payload: self.payload.clone(),
        }
    }
}

/// JetStream's own account of the stream, to compare with the messages read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    /// The lowest sequence still stored (1 if nothing was ever removed from the front).
    pub first_seq: u64,
    /// The last sequence assigned.
    pub last_seq: u64,
    /// How many messages the stream holds.
    pub messages: u64,
    /// How many messages between the first and the last were deleted (JetStream's count).
    pub deleted: u64,
}

/// Messages prepared by one blocking task of [`Bus::prepared_messages`]: enough that handing
/// over costs nothing next to the signatures, few enough that a reader stops quickly.
pub const PREPARE_BATCH: usize = 512;

/// A message with the part of its check that needs no other message done
/// ([`Replayer::prepare`]).
#[derive(Debug, Clone)]
pub struct Prepared {
    seq: u64,
    subject: String,
    /// The record as read with its signature's verdict, or why it could not be read (not a
    /// refbus record, a format this build does not know).
    record: Result<(crate::Unchecked, Option<Presigned>), Failure>,
}

/// Checks messages in stream order, holding each referral's last verified state (by subject).
#[derive(Debug, Clone)]
pub struct Replayer {
    verifier: Verifier,
    states: HashMap<String, Referral>,
}

impl Replayer {
    pub fn new(verifier: &Verifier) -> Replayer {
        Replayer::resume(verifier, HashMap::new())
    }

    /// Goes on from `states` (each referral's last verified state, by subject), as kept by an
    /// earlier replayer ([`Replayer::states`]).
    pub fn resume(verifier: &Verifier, states: HashMap<String, Referral>) -> Replayer {
        Replayer {
            verifier: verifier.clone(),
            states,
        }
    }

    /// The last verified state of the referral on `subject`.
    pub fn state(&self, subject: &str) -> Option<&Referral> {
        self.states.get(subject)
    }

    pub fn states(&self) -> &HashMap<String, Referral> {
        &self.states
    }

    /// A message that is not a referral record (a notice, an integrity notice, an index entry),
    /// checked for what its readers check first: its format (`refbus_core::format`). The
    /// failure (reported) if this build does not read it; `None` otherwise, and for any other
    /// subject (its content is its readers' concern, as before).
    pub fn check_format(&self, message: &StoredMessage) -> Option<Failure> {
        use refbus_core::format::RecordKind;
        let subject = message.subject.as_str();
        let kind = if subject.starts_with(crate::subjects::NOTICE_PREFIX) {
            if crate::subjects::integrity_notices_for_subject_agency(subject).is_empty() {
                RecordKind::Notice
            } else {
                RecordKind::IntegrityNotice
            }
        } else if subject
            .starts_with(&crate::subjects::ALL_INDEXES[..crate::subjects::ALL_INDEXES.len() - 1])
        {
            RecordKind::IndexEntry
        } else {
            return None;
        };
        let found = crate::record::format_of(&message.payload);
        let failure =
            refbus_core::integrity::check_format(kind, found, subject, message.seq).err()?;
        self.verifier.report(message.seq, subject, &failure);
        Some(failure)
    }

    /// Checks `message` against its referral's last verified state.
    pub fn check(&mut self, message: &StoredMessage) -> Replayed {
        self.check_after(message).0
    }

    /// [`Replayer::check`], with the state the record followed when it passes (`None` for a
    /// creation, or when it fails): what an auditor recomputing the clocks needs, at the cost
    /// of one copy of the state.
    pub fn check_after(&mut self, message: &StoredMessage) -> (Replayed, Option<Referral>) {
        let prepared = Replayer::prepare(&self.verifier, message);
        self.check_prepared(prepared)
    }

    /// The part of checking `message` that needs no other message (decoding, hash and
    /// signature: most of the cost), for [`Replayer::check_prepared`]. Pure: a reader of a
    /// long stream prepares many messages in parallel, then checks them in stream order.
    pub fn prepare(verifier: &Verifier, message: &StoredMessage) -> Prepared {
        let record = message.raw().unchecked(verifier).map(|record| {
            let presigned = verifier.presign(&record);
            (record, presigned)
        });
        Prepared {
            seq: message.seq,
            subject: message.subject.clone(),
            record,
        }
    }

    /// [`Replayer::prepare`] for a message on a referral subject; `None` for any other (a
    /// notice, an index entry: the record check does not apply, nothing is decoded).
    pub fn prepare_referral(verifier: &Verifier, message: &StoredMessage) -> Option<Prepared> {
        Replayer::prepare_referrals(verifier, std::slice::from_ref(message))
            .pop()
            .flatten()
    }

    /// [`Replayer::prepare_referral`] of every message, in order, their signatures verified
    /// together ([`Verifier::presign_all`]): what a reader of a whole stream does with each
    /// batch, on each core.
    pub fn prepare_referrals(
        verifier: &Verifier,
        messages: &[StoredMessage],
    ) -> Vec<Option<Prepared>> {
        let decoded: Vec<Option<Result<crate::Unchecked, Failure>>> = messages
            .iter()
            .map(|message| {
                matches!(
                    crate::subjects::parse(&message.subject),
                    Some(crate::subjects::Parsed::Referral(_))
                )
                .then(|| message.raw().unchecked(verifier))
            })
            .collect();
        let records: Vec<&crate::Unchecked> = decoded
            .iter()
            .flatten()
            .filter_map(|record| record.as_ref().ok())
            .collect();
        let mut presigned = verifier.presign_all(&records).into_iter();
        messages
            .iter()
            .zip(decoded)
            .map(|(message, decoded)| {
                decoded.map(|record| Prepared {
                    seq: message.seq,
                    subject: message.subject.clone(),
                    record: record
                        .map(|record| (record, presigned.next().expect("one verdict per record"))),
                })
            })
            .collect()
    }

    /// [`Replayer::check_after`] of a message [`Replayer::prepare`]d (with this replayer's
    /// verifier): the stateful rest of the one record check, against the referral's last
    /// verified state. Prepared messages must be checked in stream order.
    pub fn check_prepared(&mut self, prepared: Prepared) -> (Replayed, Option<Referral>) {
        let Prepared {
            seq,
            subject,
            record,
        } = prepared;
        let (record, presigned) = match record {
            Ok(read) => read,
            Err(failure) => {
                return (
                    Replayed::Refused {
                        seq,
                        subject,
                        failure,
                    },
                    None,
                );
            }
        };
        let before = self.states.remove(&subject);
        let kept = before.clone();
        match self.verifier.check_presigned(&record, presigned, before) {
            Ok(after) => {
                self.states.insert(subject, after.clone().into_snapshot());
                (Replayed::Record(Box::new(record.into_stored(after))), kept)
            }
            Err(failure) => {
                // The referral goes on from its last verified state.
                if let Some(kept) = kept {
                    self.states.insert(subject.clone(), kept);
                }
                (
                    Replayed::Refused {
                        seq,
                        subject,
                        failure,
                    },
                    None,
                )
            }
        }
    }
}

impl Bus {
    /// Every referral record matching `filters` that the stream holds now, oldest first, each
    /// checked; then the stream ends. Holds the last verified state of each referral seen.
    pub async fn replay(
        &self,
        verifier: &Verifier,
        filters: Vec<String>,
    ) -> Result<impl Stream<Item = Result<Replayed, ReadError>> + Send + use<>, ReadError> {
        let messages = self.prepared_messages(verifier, filters, 1).await?;
        let mut replayer = Replayer::new(verifier);
        Ok(messages.map(move |item| {
            item.map(|(message, prepared)| {
                // Off a referral subject the check refuses it, as it always did.
                let prepared =
                    prepared.unwrap_or_else(|| Replayer::prepare(&replayer.verifier, &message));
                replayer.check_prepared(prepared).0
            })
        }))
    }

    /// [`Bus::messages`], each on a referral subject with the part of its check that needs no
    /// other message done ([`Replayer::prepare_referral`]: decoding, hash, signature, most of
    /// the cost) in parallel: batches of [`PREPARE_BATCH`] on tokio's blocking pool, one batch
    /// per core and one more at a time, the order kept. What a reader of a whole stream feeds
    /// to [`Replayer::check_prepared`], in order: signatures on every core, the chain in order,
    /// through the one check.
    pub async fn prepared_messages(
        &self,
        verifier: &Verifier,
        filters: Vec<String>,
        from: u64,
    ) -> Result<
        impl Stream<Item = Result<(StoredMessage, Option<Prepared>), ReadError>> + Send + use<>,
        ReadError,
    > {
        let verifier = verifier.clone();
        let workers = std::thread::available_parallelism().map_or(2, |cores| cores.get()) + 1;
        Ok(self
            .delivered(filters, from)
            .await?
            .chunks(PREPARE_BATCH)
            .map(move |batch| {
                let verifier = verifier.clone();
                tokio::task::spawn_blocking(move || {
                    // Read as stored here too, not on the reading task: copying out the
                    // headers is a fifth of a whole stream's reading task otherwise.
                    let mut read = Vec::with_capacity(batch.len());
                    let places: Vec<Result<(), ReadError>> = batch
                        .into_iter()
                        .map(|message| stored(message?).map(|message| read.push(message)))
                        .collect();
                    // Their signatures verified together; a read error keeps its place.
                    let prepared = Replayer::prepare_referrals(&verifier, &read);
                    let mut read = read.into_iter().zip(prepared);
                    places
                        .into_iter()
                        .map(|place| place.map(|()| read.next().expect("one per message read")))
                        .collect::<Vec<_>>()
                })
            })
            .buffered(workers)
            .flat_map(|prepared| {
                futures::stream::iter(match prepared {
                    Ok(prepared) => prepared,
                    Err(join) => std::panic::resume_unwind(join.into_panic()),
                })
            }))
    }

    /// Every message matching `filters` (none: every message of the stream) from stream
    /// sequence `from` on, exactly as stored, in stream order; the stream ends with what the
    /// filters matched when it was called. A deleted message is simply not there: the reader
    /// sees the gap in the sequences.
    pub async fn messages(
        &self,
        filters: Vec<String>,
        from: u64,
    ) -> Result<impl Stream<Item = Result<StoredMessage, ReadError>> + Send + use<>, ReadError>
    {
        Ok(self
            .delivered(filters, from)
            .await?
            .map(|message| stored(message?)))
    }

    /// [`Bus::messages`] as the client delivers them, before they are read as stored.
    async fn delivered(
        &self,
        filters: Vec<String>,
        from: u64,
    ) -> Result<impl Stream<Item = Result<jetstream::Message, ReadError>> + Send + use<>, ReadError>
    {
        let deliver_policy = if from <= 1 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: from,
            }
        };
        let consumer = crate::timed(
            self.stream
                .create_consumer(ordered_config(filters, deliver_policy)),
        )
        .await
        .map_err(crate::unavailable)?
        .map_err(|err| ReadError::with_source(ReadErrorKind::Unavailable, err))?;
        // What the filters match now: the read ends there.
        let total = usize::try_from(consumer.cached_info().num_pending).unwrap_or(usize::MAX);
        let messages = consumer
            .messages()
            .await
            .map_err(|err| ReadError::with_source(ReadErrorKind::Unavailable, err))?
            .take(total);
        Ok(messages.map(|message| {
            message.map_err(|err| ReadError::with_source(ReadErrorKind::Unavailable, err))
        }))
    }

    /// JetStream's own account of the stream now: first and last sequence, message count,
    /// deleted messages.
    pub async fn stream_state(&self) -> Result<StreamState, ReadError> {
        let info = crate::timed(self.stream.get_info())
            .await
            .map_err(crate::unavailable)?
            .map_err(crate::unavailable)?;
        let state = info.state;
        Ok(StreamState {
            first_seq: state.first_sequence,
            last_seq: state.last_sequence,
            messages: state.messages,
            // Older servers leave the count out when there is nothing deleted; where they leave
            // it out, the gap check on the sequences still sees a deletion.
            deleted: state.deleted_count.unwrap_or(0),
        })
    }
}

/// A delivered message exactly as the stream stores it: JetStream's sequence and time from its
/// metadata, every header, the payload.
fn stored(message: jetstream::Message) -> Result<StoredMessage, ReadError> {
    let info = message
        .info()
        .map_err(|err| ReadError::with_source(ReadErrorKind::Unavailable, err.to_string()))?;
    let mut headers: Vec<(String, String)> = message
        .headers
        .as_ref()
        .map(|headers| {
            headers
                .iter()
                .flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |value| (name.to_string(), value.as_str().to_owned()))
                })
                .collect()
        })
        .unwrap_or_default();
    // The client hands them over in no set order (a hash map's, different in every read);
    // by name, the values of one name in their order, every read of a message is the same.
    headers.sort_by(|(one, _), (other, _)| one.cmp(other));
    Ok(StoredMessage {
        seq: info.stream_sequence,
        subject: message.subject.to_string(),
        stored_at: crate::checked::from_datetime(info.published),
        headers,
        payload: message.payload.clone(),
    })
}
