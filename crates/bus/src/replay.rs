//! Replaying the stream through the one record check: every record matching a filter, in
//! stream order, each checked against the referral's previous verified record, as an auditor or
//! a rebuilding projection (the dashboard's) reads history.

use std::collections::HashMap;

use async_nats::jetstream::consumer::DeliverPolicy;
use futures::{Stream, StreamExt};
use refbus_core::Referral;
use refbus_core::integrity::{Failure, Problem};

use crate::record::EventRecord;
use crate::{Bus, ReadError, ReadErrorKind, Stored, Verifier, ordered_config, raw_stream_message};

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

impl Bus {
    /// Every referral record matching `filters` that the stream holds now, oldest first, each
    /// checked; then the stream ends. Holds the last verified state of each referral seen.
    pub async fn replay(
        &self,
        verifier: &Verifier,
        filters: Vec<String>,
    ) -> Result<impl Stream<Item = Result<Replayed, ReadError>> + Send + use<>, ReadError> {
        let consumer = self
            .stream
            .create_consumer(ordered_config(filters, DeliverPolicy::All))
            .await
            .map_err(|err| ReadError::with_source(ReadErrorKind::Unavailable, err))?;
        // What the filters match now: the replay ends there.
        let total = usize::try_from(consumer.cached_info().num_pending).unwrap_or(usize::MAX);
        let messages = consumer
            .messages()
            .await
            .map_err(|err| ReadError::with_source(ReadErrorKind::Unavailable, err))?
            .take(total);
        let verifier = verifier.clone();
        let mut states: HashMap<String, Referral> = HashMap::new();
        Ok(messages.map(move |message| {
            let message =
                message.map_err(|err| ReadError::with_source(ReadErrorKind::Unavailable, err))?;
            let raw = raw_stream_message(&message)?;
            let (seq, subject) = (raw.sequence, raw.subject.clone());
            let Some(record) = raw.unchecked(&verifier) else {
                let failure = Failure::new(Problem::Unreadable, "not a refbus record");
                return Ok(Replayed::Refused {
                    seq,
                    subject,
                    failure,
                });
            };
            let before = states.get(&subject).cloned();
            match verifier.check(&record, before) {
                Ok(after) => {
                    states.insert(subject, after.clone().into_snapshot());
                    Ok(Replayed::Record(Box::new(record.into_stored(after))))
                }
                Err(failure) => Ok(Replayed::Refused {
                    seq,
                    subject,
                    failure,
                }),
            }
        }))
    }
}
