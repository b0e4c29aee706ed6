//! Reads that NATS permissions can confine to one agency's referrals.
//!
//! nats-server checks permissions against the subject a request is published on, never its
//! body. Two JetStream APIs carry what they read in that subject: the direct read of a
//! subject's last message (`$JS.API.DIRECT.GET.<stream>.<subject>`) and the creation of a named
//! consumer with one filter (`$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`; the server
//! refuses a body whose filter differs). Every read an adapter makes goes through one of these
//! two, so an agency's user can be allowed exactly its own subjects (deploy/nats/permissions.conf):
//!
//! - the last message of a subject or pattern: a direct read, subject form;
//! - anything by sequence or from a sequence on (a referral's creation, its history, the
//!   predecessor of its last record): a consumer on the referral's subject, started there,
//!   read up to what it held when created, then deleted;
//! - several filters (an inbox: referrals received, sent, notices): one consumer per filter,
//!   merged back into stream order ([`Merge`]).
//!
//! Consumer names are random: pulling from or deleting a consumer needs its name, and nobody
//! may list them.

use std::pin::Pin;
use std::sync::atomic::Ordering;

use async_nats::jetstream::{self, consumer::DeliverPolicy, stream};
use futures::{Stream, StreamExt};
use refbus_core::AgencyId;

use crate::error::{ConnectError, ConnectErrorKind};
use crate::{Bus, Raw, ReadError, ReadErrorKind, timed, unavailable};

/// A fresh consumer name nobody can guess: 128 random bits, in hex.
pub(crate) fn consumer_name() -> String {
    let mut bytes = [0u8; 16];
    // The operating system's generator does not fail on the systems refbus runs on; a name
    // that repeats would only make the server refuse the create (the read then fails).
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The events stream as a confined user sees it: no information (it may not ask), only a
/// check that the stream answers this agency's reads. An adapter started before the router
/// created the stream fails here.
pub(crate) async fn confined_stream(
    js: &jetstream::Context,
    name: &str,
    agency: &AgencyId,
) -> Result<stream::Stream<()>, ConnectError> {
    let stream = js
        .get_stream_no_info(name)
        .await
        .map_err(|err| ConnectError::with_source(ConnectErrorKind::Provision, err))?;
    let probe = crate::subjects::received_by(agency);
    match timed(stream.direct_get_last_for_subject(probe)).await {
        Ok(Ok(_)) => Ok(stream),
        Ok(Err(err)) if err.kind() == stream::DirectGetErrorKind::NotFound => Ok(stream),
        Ok(Err(err)) => Err(ConnectError::with_source(
            ConnectErrorKind::Provision,
            format!(
                "the stream {name} does not answer {agency}'s reads ({err}): the router creates \
                 it at its first start, with direct reads allowed"
            ),
        )),
        Err(timed_out) => Err(ConnectError::with_source(
            ConnectErrorKind::Provision,
            format!(
                "the stream {name} does not answer {agency}'s reads ({timed_out}): is the router \
                 started (it creates the stream), and may {agency} read its own subjects?"
            ),
        )),
    }
}

impl Bus {
    /// Up to `limit` messages on `filter` (one subject or pattern) from stream sequence `from`
    /// on, oldest first, as the stream holds them now: one consumer with the filter in its API
    /// subject, deleted afterwards. Counted as one read.
    pub(crate) async fn read_filtered(
        &self,
        filter: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Raw>, ReadError> {
        // Boxed: the consumer's futures are large, and every read of every caller would
        // otherwise carry them inline.
        Box::pin(self.read_filtered_inline(filter, from, limit)).await
    }

    async fn read_filtered_inline(
        &self,
        filter: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Raw>, ReadError> {
        self.fail_fast_while_disconnected()?;
        self.direct_reads.fetch_add(1, Ordering::Relaxed);
        let deliver_policy = if from <= 1 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: from,
            }
        };
        let config = crate::ordered_config(vec![filter.to_owned()], deliver_policy);
        let name = config.name.clone().unwrap_or_default();
        let consumer = timed(self.stream.create_consumer(config))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        let wanted = usize::try_from(consumer.cached_info().num_pending)
            .unwrap_or(usize::MAX)
            .min(limit);
        let read = if wanted == 0 {
            Ok(Vec::new())
        } else {
            timed(async {
                let messages = consumer.messages().await.map_err(unavailable)?;
                messages
                    .take(wanted)
                    .map(|message| crate::raw_stream_message(&message.map_err(unavailable)?))
                    .collect::<Vec<_>>()
                    .await
                    .into_iter()
                    .collect::<Result<Vec<Raw>, ReadError>>()
            })
            .await
            .map_err(unavailable)?
        };
        // The server would drop it after its inactivity threshold anyway; deleting it now keeps
        // a busy adapter from holding thousands. Nobody waits for the answer.
        let stream = self.stream.clone();
        tokio::spawn(async move {
            let _ = timed(stream.delete_consumer(&name)).await;
        });
        read
    }

    /// The first message on `filter` at or after stream sequence `from`.
    ///
    /// A confined connection reads it through a consumer with the filter in its API subject
    /// (three round trips: created, pulled, deleted). Any other reader (the router, the
    /// dashboard, an auditor, each allowed the body form of the direct read) asks for it in one
    /// direct read, the sequence and filter in its body: a router taking partitions over reads
    /// thousands of predecessors this way, and a consumer created and deleted for each cost
    /// nats-server and the router most of a takeover (docs/BENCHMARKS.md).
    ///
    /// Where this process already saw a message on `filter` at or after `from`, an answer of
    /// none comes from a replica behind: asked again, then `Unavailable` (see
    /// [`Bus::direct_last`]).
    pub(crate) async fn first_from(
        &self,
        filter: &str,
        from: u64,
    ) -> Result<Option<Raw>, ReadError> {
        let floor = self.seen.floor(filter);
        let found = crate::seen::not_behind(
            filter,
            floor,
            || self.first_from_once(filter, from),
            |raw| raw.sequence,
            |answered| answered.is_some() || floor < from.max(1),
        )
        .await?;
        if let Some(raw) = &found {
            self.seen.record(&raw.subject, raw.sequence);
        }
        Ok(found)
    }

    async fn first_from_once(&self, filter: &str, from: u64) -> Result<Option<Raw>, ReadError> {
        if self.confined_to.is_none() {
            return Ok(self
                .direct(
                    self.stream
                        .direct_get_next_for_subject(filter, Some(from.max(1))),
                )
                .await?
                .map(Raw::from));
        }
        Ok(self.read_filtered(filter, from, 1).await?.pop())
    }

    /// The sequence of the last message on `filter` (one subject or pattern), 0 if none: a
    /// direct read, subject form.
    pub(crate) async fn last_seq_on(&self, filter: &str) -> Result<u64, ReadError> {
        Ok(self
            .direct_last(filter)
            .await?
            .map_or(0, |message| message.sequence))
    }

    /// The stream's last sequence as a confined user learns it: a consumer on the agency's own
    /// subjects that delivers only new messages starts right after it.
    pub(crate) async fn last_sequence_confined(&self, agency: &AgencyId) -> Result<u64, ReadError> {
        let config = crate::ordered_config(
            vec![crate::subjects::received_by(agency)],
            DeliverPolicy::New,
        );
        let name = config.name.clone().unwrap_or_default();
        let consumer = timed(self.stream.create_consumer(config))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        let last = consumer.cached_info().delivered.stream_sequence;
        let stream = self.stream.clone();
        tokio::spawn(async move {
            let _ = timed(stream.delete_consumer(&name)).await;
        });
        Ok(last)
    }

    /// Every message matching any of `filters` after stream sequence `after`, in stream order,
    /// then new ones as they arrive: one ordered consumer per filter, merged.
    pub(crate) async fn merged(
        &self,
        filters: Vec<String>,
        after: u64,
    ) -> Result<impl Stream<Item = Result<jetstream::Message, ReadError>> + Send + use<>, ReadError>
    {
        let deliver_policy = if after == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            }
        };
        let mut inputs = Vec::with_capacity(filters.len());
        let mut backlog = Vec::with_capacity(filters.len());
        for filter in &filters {
            let consumer = timed(
                self.stream
                    .create_consumer(crate::ordered_config(vec![filter.clone()], deliver_policy)),
            )
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
            backlog.push(consumer.cached_info().num_pending);
            let messages = timed(consumer.messages())
                .await
                .map_err(unavailable)?
                .map_err(unavailable)?;
            let messages: Input = Box::pin(messages.map(|message| message.map_err(unavailable)));
            inputs.push(messages);
        }
        let count = filters.len();
        let merge = Merge {
            bus: self.clone(),
            filters,
            inputs,
            heads: (0..count).map(|_| None).collect(),
            backlog,
            received: vec![after; count],
            quiet_upto: vec![after; count],
            quiet_for_backlog: vec![false; count],
        };
        // Boxed: callers poll it in place.
        Ok(futures::stream::unfold(merge, |mut merge| async move {
            merge.next().await.map(|item| (item, merge))
        })
        .boxed())
    }
}

type Input = Pin<Box<dyn Stream<Item = Result<jetstream::Message, ReadError>> + Send>>;

/// A message in hand: its sequence, and whether it was stored before its consumer was created.
struct Head {
    seq: u64,
    from_backlog: bool,
    message: jetstream::Message,
}

/// Several filters' consumers merged into stream order, exactly.
///
/// The message with the smallest sequence in hand goes out once every input with nothing in
/// hand is known to hold nothing smaller. That is known from a direct read of the last message
/// on the input's filter: if the input already delivered it, the input had nothing pending
/// when the read was answered, and every message with a smaller sequence than one in hand was
/// stored before that. Otherwise the input has messages pending and the next one is awaited:
/// it is stored, so it comes. Nothing is timed; a message is never held back for a guess.
struct Merge {
    bus: Bus,
    filters: Vec<String>,
    inputs: Vec<Input>,
    heads: Vec<Option<Head>>,
    /// How many of the messages each consumer held when created are still to come.
    backlog: Vec<u64>,
    /// The last sequence each input delivered (or where the merge started).
    received: Vec<u64>,
    /// Each input has nothing undelivered at or below this sequence.
    quiet_upto: Vec<u64>,
    /// Each input was found with nothing pending after every consumer was created: it holds
    /// nothing older than any consumer's backlog.
    quiet_for_backlog: Vec<bool>,
}

impl Merge {
    async fn next(&mut self) -> Option<Result<jetstream::Message, ReadError>> {
        loop {
            let smallest = self
                .heads
                .iter()
                .enumerate()
                .filter_map(|(at, head)| head.as_ref().map(|head| (head.seq, at)))
                .min();
            let Some((seq, at)) = smallest else {
                // Nothing in hand: whichever input delivers first.
                let waiting = self.inputs.iter_mut().map(StreamExt::next);
                let (item, at, _) = futures::future::select_all(waiting).await;
                if let Err(err) = self.take(at, item) {
                    return Some(Err(err));
                }
                continue;
            };
            let from_backlog = self.heads[at]
                .as_ref()
                .is_some_and(|head| head.from_backlog);
            let unsure: Vec<usize> = (0..self.inputs.len())
                .filter(|&input| {
                    self.heads[input].is_none()
                        && self.quiet_upto[input] < seq
                        && !(from_backlog && self.quiet_for_backlog[input])
                })
                .collect();
            if unsure.is_empty() {
                let head = self.heads[at].take()?;
                self.received[at] = head.seq;
                return Some(Ok(head.message));
            }
            // Everything in hand was stored before the reads below are answered.
            let in_hand = self
                .heads
                .iter()
                .flatten()
                .map(|head| head.seq)
                .max()
                .unwrap_or(seq);
            let mut pending = None;
            for input in unsure {
                match self.bus.last_seq_on(&self.filters[input]).await {
                    Err(err) => return Some(Err(err)),
                    Ok(last) if last <= self.received[input] => {
                        self.quiet_upto[input] = self.quiet_upto[input].max(in_hand);
                        self.quiet_for_backlog[input] = true;
                    }
                    Ok(_) => pending = Some(input),
                }
            }
            if let Some(input) = pending {
                let item = self.inputs[input].next().await;
                if let Err(err) = self.take(input, item) {
                    return Some(Err(err));
                }
            }
        }
    }

    /// Puts what input `at` delivered in hand.
    fn take(
        &mut self,
        at: usize,
        item: Option<Result<jetstream::Message, ReadError>>,
    ) -> Result<(), ReadError> {
        let message = match item {
            Some(message) => message?,
            None => {
                return Err(ReadError::with_source(
                    ReadErrorKind::Unavailable,
                    format!("the consumer of {} ended", self.filters[at]),
                ));
            }
        };
        let seq = message
            .info()
            .map_err(|err| ReadError::with_source(ReadErrorKind::Unavailable, err.to_string()))?
            .stream_sequence;
        let from_backlog = self.backlog[at] > 0;
        self.backlog[at] = self.backlog[at].saturating_sub(1);
        self.heads[at] = Some(Head {
            seq,
            from_backlog,
            message,
        });
        Ok(())
    }
}
