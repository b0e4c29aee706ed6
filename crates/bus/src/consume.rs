//! Following the stream live through the one record check: what the dashboard and the audit
//! read to stay current. Like [`Bus::replay`](crate::Bus::replay), but from any start and
//! without an end: an ordered (ephemeral) consumer with subject filters, every record checked
//! against its referral's previous verified record, every refused message named with its
//! problem, and nothing (garbage, a forgery, a lost connection) ends the stream.

use std::collections::HashMap;

use async_nats::jetstream::consumer::DeliverPolicy;
use futures::{Stream, StreamExt, TryStreamExt};
use refbus_core::Referral;

use crate::replay::Replayed;
use crate::{Bus, ReadError, Verifier, raw_stream_message, subjects};

/// Where a consumption starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first message the stream holds.
    Beginning,
    /// The message after this stream sequence: a reader that kept the sequence of the last item
    /// it processed resumes with it, missing nothing and seeing nothing twice.
    After(u64),
    /// Only what is stored after the consumer is created.
    Now,
}

/// What to consume: referral subjects (e.g. [`subjects::ALL_REFERRALS`],
/// [`subjects::received_by`]) and where to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumeSpec {
    pub filters: Vec<String>,
    pub start: Start,
}

impl ConsumeSpec {
    /// Every referral record, from `start`.
    pub fn all_referrals(start: Start) -> ConsumeSpec {
        ConsumeSpec {
            filters: vec![subjects::ALL_REFERRALS.to_owned()],
            start,
        }
    }
}

impl Bus {
    /// Every message matching `spec` from its start, then each new one as it is stored, each
    /// checked: [`Replayed::Record`] with the referral's state after it, or
    /// [`Replayed::Refused`] naming the problem (also reported to `verifier`). A record whose
    /// referral this consumption has not seen yet is checked against its predecessor, read
    /// directly (one read); after that the referral's last verified state is kept, so a
    /// consumer that reads every referral holds one state per referral. A read error is yielded
    /// as it comes and the stream goes on (the ordered consumer recreates itself); it never
    /// ends by itself.
    pub async fn consume(
        &self,
        verifier: &Verifier,
        spec: ConsumeSpec,
    ) -> Result<impl Stream<Item = Result<Replayed, ReadError>> + Send + use<>, ReadError> {
        let deliver_policy = match spec.start {
            Start::Beginning | Start::After(0) => DeliverPolicy::All,
            Start::After(seq) => DeliverPolicy::ByStartSequence {
                start_sequence: seq + 1,
            },
            Start::Now => DeliverPolicy::New,
        };
        // One ordered consumer over every filter: `consume` serves the dashboard and the audit,
        // whose users may read the whole stream (a confined agency watches through `watch`).
        let consumer = crate::timed(
            self.stream
                .create_consumer(crate::ordered_config(spec.filters, deliver_policy)),
        )
        .await
        .map_err(crate::unavailable)?
        .map_err(crate::unavailable)?;
        let messages = crate::timed(consumer.messages())
            .await
            .map_err(crate::unavailable)?
            .map_err(crate::unavailable)?
            .map_err(|err| ReadError::with_source(crate::ReadErrorKind::Unavailable, err))
            .boxed();
        let following = Following {
            bus: self.clone(),
            verifier: verifier.clone(),
            states: HashMap::new(),
        };
        Ok(futures::stream::unfold(
            (messages, following),
            |(mut messages, mut following)| async move {
                let message = messages.next().await?;
                let item = match message {
                    Ok(message) => following.check(&message).await,
                    Err(err) => Err(err),
                };
                Some((item, (messages, following)))
            },
        ))
    }
}

/// A consumption's memory: the last verified state of each referral it has seen.
struct Following {
    bus: Bus,
    verifier: Verifier,
    states: HashMap<String, Referral>,
}

impl Following {
    async fn check(
        &mut self,
        message: &async_nats::jetstream::Message,
    ) -> Result<Replayed, ReadError> {
        let raw = raw_stream_message(message)?;
        let (seq, subject) = (raw.sequence, raw.subject.clone());
        let record = match raw.unchecked(&self.verifier) {
            Ok(record) => record,
            Err(failure) => {
                return Ok(Replayed::Refused {
                    seq,
                    subject,
                    failure,
                });
            }
        };
        let before = match self.states.get(&subject) {
            Some(state) => Some(state.clone()),
            None => self
                .bus
                .state_preceding(&self.verifier, &record)
                .await?
                .map(|(_, state)| state),
        };
        Ok(match self.verifier.check(&record, before) {
            Ok(after) => {
                self.states.insert(subject, after.clone().into_snapshot());
                Replayed::Record(Box::new(record.into_stored(after)))
            }
            Err(failure) => Replayed::Refused {
                seq,
                subject,
                failure,
            },
        })
    }
}
