//! refbus-bus: the only crate that knows NATS JetStream.
//!
//! # Layout
//!
//! - [`subjects`]: the subject scheme (who may touch what).
//! - [`connect`]: where NATS is and who connects, in refbus's own types: no async-nats type
//!   crosses this crate's API.
//! - [`provision`]: the events stream, created if missing, checked in full at every start.
//! - [`statement`]: the router's signed word on the stream it checked, which adapters (that may
//!   not read the stream's settings) check at start instead.
//! - [`durable`]: the router's durable consumer, created if missing, checked at every start.
//! - [`record`]: what a message holds (an event, its hash and the state after it; or a notice).
//! - [`headers`]: CloudEvents binary-mode headers and W3C trace context.
//! - `scoped`: reads NATS permissions can confine to one agency (subject-form direct reads,
//!   one-filter named consumers, an inbox merged from several).
//! - [`checked`]: reading records through the one integrity check ([`Verifier`]);
//!   [`replay`]: the stream's history, every record checked in order; [`consume`]: the same,
//!   from any start and following live.
//! - [`index`]: one chain of creations per pair of agencies, for listings that page newest
//!   first in bounded reads.
//! - [`Bus`]: a cheap, cloneable handle to append and read, used by adapters, router and audit.
//!
//! # Guarantees
//!
//! - An append names the stream sequence it read the referral at
//!   (`Nats-Expected-Last-Subject-Sequence`): two writers can never fork a referral's history;
//!   the loser gets [`AppendErrorKind::Conflict`] and nothing is written.
//! - An append carries a message id (`Nats-Msg-Id`); a retry with the same id within the
//!   duplicate window is answered with the original sequence and writes nothing.
//! - An append returns only after JetStream acknowledged it: whatever [`Bus::append`] returned
//!   `Ok` for is stored.
//! - A component runs only on the stream as configured ([`Bus::connect`]) and the router only
//!   on its consumer as refbus creates it ([`Bus::durable`]): a difference that could lose,
//!   age out or skip events is refused with a message naming each one, never corrected
//!   silently. An adapter, which may not read the stream's settings, starts only on the
//!   router's signed statement that it found them as configured ([`Bus::router_statement`]).

pub mod checked;
pub mod connect;
pub mod consume;
pub mod durable;
pub mod error;
pub mod headers;
pub mod idempotency;
pub mod index;
pub mod lease;
pub mod provision;
pub mod raw;
pub mod record;
pub mod replay;
mod scoped;
mod seen;
pub mod statement;
pub mod subjects;
mod tail;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{DirectGetError, DirectGetErrorKind};
use async_nats::jetstream::{self, stream};
use async_nats::{Client, HeaderMap};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use refbus_core::integrity::{Failure, Problem};
use refbus_core::signature::SigningKey;
use refbus_core::{Event, Referral};

pub use checked::{Unchecked, Verifier, WALK_BACK};
pub use connect::{ClientCert, ConnectOptions, Credentials, Tls};
pub use durable::{Durable, DurableStop};
pub use error::{
    AppendError, AppendErrorKind, ConnectError, ConnectErrorKind, ConsumerError, ConsumerErrorKind,
    ReadError, ReadErrorKind,
};
pub use idempotency::Idempotency;
pub use lease::{Lease, LeaseError, LeaseErrorKind, Leases};
pub use provision::StreamSettings;
pub use raw::{ProofAnswer, ProofRequest, RawMessage};
pub use record::EventRecord;
pub use refbus_core::Notice;
pub use replay::{Prepared, Replayed, Replayer, StoredMessage, StreamState};

/// How long an append waits for JetStream's acknowledgement.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a read (a direct get, a consumer's creation, the stream's information) waits for
/// JetStream before it fails as [`ReadErrorKind::Unavailable`]. The JetStream context is built
/// with the same timeout, which async-nats applies to its API requests; the bus also bounds
/// every request itself, so that no read can hang a caller (a gRPC call, the router's timer)
/// whatever the client library does with its context: a paused or partitioned server answers
/// nothing at all.
pub const READ_TIMEOUT: Duration = ACK_TIMEOUT;

/// How long the creation of a consumer over every referral's last message may take (a
/// rebuild's start, see `Bus::latest_checked`).
pub const SCAN_TIMEOUT: Duration = Duration::from_secs(120);

/// A handle to the refbus events stream. Cloning is cheap; all clones share one connection.
#[derive(Clone, Debug)]
pub struct Bus {
    client: Client,
    js: jetstream::Context,
    stream: stream::Stream<()>,
    /// The events stream's name (the handle above does not tell it).
    stream_name: Arc<str>,
    /// The stream as checked at start; `None` on a confined connection, which may not ask.
    info: Option<Arc<stream::Info>>,
    /// The agency whose subjects alone this connection may read ([`ConnectOptions::confined_to`]).
    confined_to: Option<refbus_core::AgencyId>,
    connected: tokio::sync::watch::Receiver<bool>,
    /// Reads made so far, by this handle and its clones (see [`Bus::direct_reads`]).
    direct_reads: Arc<AtomicU64>,
    /// The index chains this process appends to (see [`index`](mod@index)).
    index_chains: Arc<index::Chains>,
    /// The highest sequence this process has seen per referral, so that a replica behind does
    /// not answer it with less (see [`seen`](mod@seen)).
    seen: Arc<seen::Seen>,
    /// How long JetStream remembers a message id: the stream's, as configured (and checked at
    /// start by every component that may ask for the stream's information).
    duplicate_window: Duration,
    /// The stream's settings as this component is configured.
    settings: Arc<StreamSettings>,
}

/// An event to append: the bus stores it on its referral's subject, signed.
#[derive(Debug)]
pub struct Append<'a> {
    pub event: Event,
    /// The referral after the event.
    pub state_after: &'a Referral,
    /// The stream sequence of the last message on the referral's subject when it was read; 0
    /// if the referral must not exist yet.
    pub expected_last_seq: u64,
    /// The stream sequence of the record the event follows: `expected_last_seq`, except after a
    /// record the check refused (the event then follows the last record that passed).
    pub prev_seq: u64,
    /// The idempotency key: the same key within the duplicate window writes nothing new (the
    /// bus makes the message id from it).
    pub key: Idempotency<'a>,
}

impl<'a> Append<'a> {
    /// `event` follows `read`, the referral as a checked read gave it (after any later
    /// messages that failed the check).
    pub fn following(
        event: Event,
        state_after: &'a Referral,
        read: &Stored<EventRecord>,
        key: Idempotency<'a>,
    ) -> Append<'a> {
        Append {
            event,
            state_after,
            expected_last_seq: read.last_seq,
            prev_seq: read.seq,
            key,
        }
    }

    /// The usual append: `event` follows the last message, read at `read_seq`.
    pub fn after(
        event: Event,
        state_after: &'a Referral,
        read_seq: u64,
        key: Idempotency<'a>,
    ) -> Append<'a> {
        Append {
            event,
            state_after,
            expected_last_seq: read_seq,
            prev_seq: read_seq,
            key,
        }
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    /// The message id was seen before: nothing was written, `seq` is the original's.
    pub duplicate: bool,
}

/// A message sent whose storage JetStream has not confirmed yet.
#[derive(Debug)]
pub struct Pending {
    ack: jetstream::context::PublishAckFuture,
}

impl Pending {
    /// Waits for JetStream's acknowledgement: where the message landed, or why it did not.
    pub async fn stored(self) -> Result<Appended, AppendError> {
        let ack = self.ack.await.map_err(map_publish_error)?;
        Ok(Appended {
            seq: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}

/// A message read back, with its place in the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored<T> {
    pub seq: u64,
    pub subject: String,
    /// For events: the sequence of the previous event of the same referral (0 for the first).
    pub prev_seq: u64,
    /// The sequence of the last message on the subject when this was read: `seq`, unless
    /// later messages failed the integrity check. A writer appends after it (JetStream's
    /// expected last sequence) while its event follows `seq`.
    pub last_seq: u64,
    pub record: T,
}

/// An event delivered by a durable consumer; acknowledge it once it is fully processed.
#[derive(Debug)]
pub struct Delivery {
    pub seq: u64,
    pub subject: String,
    /// The stream sequence of the previous event of the same referral (0 for the first).
    pub prev_seq: u64,
    message: jetstream::Message,
}

impl Delivery {
    /// The record for checking; the failure (reported to `verifier`) if it is not a refbus
    /// record or of a format this build does not read.
    pub fn unchecked(&self, verifier: &Verifier) -> Result<Unchecked, Failure> {
        let raw = raw_stream_message(&self.message).map_err(|err| {
            Failure::new(Problem::Unreadable, format!("not a stream message: {err}"))
        })?;
        raw.unchecked(verifier)
    }

    /// The message's payload exactly as stored (nothing checked).
    pub fn payload(&self) -> &[u8] {
        &self.message.payload
    }

    /// The whole record, decoded.
    pub fn record(&self) -> Result<EventRecord, ReadError> {
        EventRecord::decode(&self.message.payload)
            .map_err(|err| ReadError::with_source(ReadErrorKind::Corrupt(self.seq), err))
    }

    /// The trace context the event was appended in (its `traceparent` header), for the
    /// consumer's span to descend from; empty when it carries none.
    pub fn trace_context(&self) -> opentelemetry::Context {
        self.message
            .headers
            .as_ref()
            .map(headers::extract_trace_context)
            .unwrap_or_default()
    }

    /// Tells JetStream the event is processed; until then it is delivered again after a crash.
    pub async fn ack(&self) -> Result<(), ReadError> {
        self.message
            .ack()
            .await
            .map_err(|err| ReadError::with_source(ReadErrorKind::Unavailable, err.to_string()))
    }

    /// Tells JetStream the event is not processed here: it is delivered again after `delay`,
    /// to whichever consumer of the durable asks next, not after the acknowledgement timeout.
    pub async fn hand_back(&self, delay: Duration) -> Result<(), ReadError> {
        self.message
            .ack_with(jetstream::AckKind::Nak(Some(delay)))
            .await
            .map_err(|err| ReadError::with_source(ReadErrorKind::Unavailable, err.to_string()))
    }
}

/// One item of an agency's inbox.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Event(Box<Stored<EventRecord>>),
    Notice(Box<Stored<Notice>>),
    /// For the coordinator: a record refbus refused.
    Integrity(Box<Stored<refbus_core::IntegrityNotice>>),
}

impl Item {
    pub fn seq(&self) -> u64 {
        match self {
            Item::Event(stored) => stored.seq,
            Item::Notice(stored) => stored.seq,
            Item::Integrity(stored) => stored.seq,
        }
    }
}

impl Bus {
    /// Connects to NATS (`options`: a URL, or [`ConnectOptions`] with credentials) and makes
    /// sure the events stream exists and is exactly as configured: a stream that differs in
    /// any setting that can lose events is refused ([`ConnectErrorKind::Misconfigured`], naming
    /// each difference). Follows the connection's state so components can report it
    /// ([`Bus::connection`]).
    pub async fn connect(
        options: impl Into<ConnectOptions>,
        settings: &StreamSettings,
    ) -> Result<Bus, ConnectError> {
        Bus::open(options.into(), settings, None).await
    }

    /// [`Bus::connect`], and with `attest` (the router's key, [`Bus::connect_attesting`]) the
    /// signed statement of the stream's check stored for the adapters.
    async fn open(
        options: ConnectOptions,
        settings: &StreamSettings,
        attest: Option<&SigningKey>,
    ) -> Result<Bus, ConnectError> {
        let confined_to = options.confined_to.clone();
        let (options, servers) = options.to_async_nats().await?;
        let (connected_tx, connected) = tokio::sync::watch::channel(true);
        // The last error the connection reported, to explain a failed start (a wrong password
        // otherwise shows only as a timeout).
        let (problem_tx, problem) = tokio::sync::watch::channel(None::<String>);
        let client = options
            // Keep trying for ever: a component must survive a NATS restart.
            .retry_on_initial_connect()
            .max_reconnects(None)
            // Back off, but never wait more than two seconds to notice the server is back:
            // while the bus is down no referral can be recorded.
            .reconnect_delay_callback(|attempts| {
                let exponent = u32::try_from(attempts.min(5)).unwrap_or(5);
                Duration::from_millis(50 * 2u64.pow(exponent)).min(Duration::from_secs(2))
            })
            .event_callback(move |event| {
                let up = match &event {
                    async_nats::Event::Connected => Some(true),
                    async_nats::Event::Disconnected => Some(false),
                    async_nats::Event::ServerError(error) => {
                        problem_tx.send_replace(Some(error.to_string()));
                        None
                    }
                    async_nats::Event::ClientError(error) => {
                        problem_tx.send_replace(Some(error.to_string()));
                        None
                    }
                    _ => None,
                };
                if let Some(up) = up {
                    connected_tx.send_replace(up);
                }
                async {}
            })
            .connect(servers)
            .await
            .map_err(|err| ConnectError::with_source(ConnectErrorKind::Connect, err))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(ACK_TIMEOUT)
            .max_ack_inflight(20_000)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let checked = match &confined_to {
            Some(agency) => scoped::confined_stream(&js, &settings.name, agency)
                .await
                .map(|stream| (stream, None)),
            None => match provision::ensure_stream(&js, settings, attest).await {
                Ok(stream) => {
                    let info = Arc::new(stream.cached_info().clone());
                    js.get_stream_no_info(&settings.name)
                        .await
                        .map(|stream| (stream, Some(info)))
                        .map_err(|err| ConnectError::with_source(ConnectErrorKind::Provision, err))
                }
                Err(err) => Err(err),
            },
        };
        let (stream, info) = match checked {
            Ok(checked) => checked,
            Err(err) => match problem.borrow().clone() {
                // What the server said explains the failure better than the timeout that
                // followed (a wrong password, a missing permission).
                Some(problem) => {
                    let kind = if problem.contains("authorization") {
                        ConnectErrorKind::Connect
                    } else {
                        err.kind()
                    };
                    return Err(ConnectError::with_source(
                        kind,
                        format!("{problem} ({err})"),
                    ));
                }
                None => return Err(err),
            },
        };
        Ok(Bus {
            stream_name: settings.name.as_str().into(),
            client,
            js,
            stream,
            info,
            confined_to,
            connected,
            direct_reads: Arc::new(AtomicU64::new(0)),
            index_chains: Arc::default(),
            seen: Arc::default(),
            duplicate_window: settings.duplicate_window,
            settings: Arc::new(settings.clone()),
        })
    }

    /// The stream's settings as this component is configured.
    pub fn settings(&self) -> &StreamSettings {
        &self.settings
    }

    /// Whether the connection is up, as it changes: for health checks.
    pub fn connection(&self) -> tokio::sync::watch::Receiver<bool> {
        self.connected.clone()
    }

    /// How many reads of stored messages (a direct read, or a consumer read up to what it held
    /// when created: see `scoped.rs`) this handle and its clones have made: for metrics, and for
    /// tests that a call's reads do not grow with a referral's history.
    pub fn direct_reads(&self) -> u64 {
        self.direct_reads.load(Ordering::Relaxed)
    }

    /// Whether the connection to NATS is up right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    // === writing ===

    /// Signs an event with `key`, appends it on its referral's subject, and waits for
    /// JetStream to store it. Returns where it landed and the record as stored. A creation is
    /// also added to its pair's index chain (see [`index`](mod@index)) before this returns: an
    /// error after the creation was stored says so ([`AppendErrorKind::Unavailable`]: retry),
    /// and the retry adds the entry.
    pub async fn append(
        &self,
        key: &SigningKey,
        append: Append<'_>,
    ) -> Result<(Appended, EventRecord), AppendError> {
        self.append_with_payload(key, append)
            .await
            .map(|(appended, record, _)| (appended, record))
    }

    /// [`Bus::append`], also returning the exact payload stored at `Appended::seq`: a writer
    /// that consumes the stream itself (the router) recognises its own message when it is
    /// delivered back by comparing those bytes (docs/ARCHITECTURE.md, "The router trusts its own
    /// appends").
    pub async fn append_with_payload(
        &self,
        key: &SigningKey,
        append: Append<'_>,
    ) -> Result<(Appended, EventRecord, bytes::Bytes), AppendError> {
        // The span whose context the message carries (`traceparent`): a consumer's span
        // descends from the append. Ids and kinds only, never the event's content.
        let span = tracing::info_span!(
            "bus.append",
            otel.kind = "producer",
            messaging.system = "nats",
            refbus.referral_id = %append.event.referral_id,
            refbus.event_seq = append.event.seq,
            refbus.change = append.event.change.kind(),
        );
        tracing::Instrument::instrument(self.append_in_span(key, append), span).await
    }

    async fn append_in_span(
        &self,
        key: &SigningKey,
        append: Append<'_>,
    ) -> Result<(Appended, EventRecord, bytes::Bytes), AppendError> {
        if !self.is_connected() {
            // Refuse before sending: a publish buffered during a reconnect could land later,
            // after the caller was told it failed.
            return Err(AppendError::new(AppendErrorKind::Unavailable));
        }
        let state = append.state_after;
        let subject = subjects::referral(state.recipient(), state.sender(), &state.id);
        let (record, payload) = EventRecord::signed(append.event, state, &subject, key);
        let mut headers = HeaderMap::new();
        headers::insert_cloudevent(&mut headers, &record.event);
        headers::inject_trace_context(&mut headers);
        headers.insert(headers::KIND, "event");
        headers.insert(headers::PREV_SEQ, append.prev_seq.to_string().as_str());
        let message = PublishMessage::build()
            .payload(payload.clone())
            .headers(headers)
            .message_id(append.key.message_id())
            .expected_last_subject_sequence(append.expected_last_seq);
        let appended = self.publish(subject, message).await?;
        if record.event.seq == 1 {
            // Boxed: the index append would otherwise sit inline in every append's future.
            Box::pin(self.index_referral(state)).await?;
        }
        Ok((appended, record, payload))
    }

    /// Publishes a notice for a third agency and waits until JetStream stored it.
    pub async fn publish_notice(&self, notice: &Notice) -> Result<Appended, AppendError> {
        self.send_notice(notice).await?.stored().await
    }

    /// Sends a notice for a third agency without waiting for JetStream's acknowledgement:
    /// notices sent one after another on this connection are stored in that order, and the
    /// caller waits for [`Pending::stored`] where waiting costs nothing (the router's event
    /// loop must not stand still for a round trip per escalation).
    pub async fn send_notice(&self, notice: &Notice) -> Result<Pending, AppendError> {
        let span = tracing::info_span!(
            "bus.notice",
            otel.kind = "producer",
            messaging.system = "nats",
            refbus.referral_id = %notice.referral_id,
            refbus.notified = %notice.notified.agency,
        );
        // Subject and message id come from the notice itself: the notified agency's notice
        // subject, and one id per escalation event and notified role, so a router that
        // publishes it again after a crash writes nothing.
        let subject = subjects::notice(&notice.notified.agency, &notice.referral_id);
        let message_id = Idempotency::Notice {
            referral: notice.referral_id,
            event_seq: notice.event_seq,
            agency: &notice.notified.agency,
            role: notice.notified.role,
        }
        .message_id();
        let message_id = message_id.as_str();
        let mut headers = HeaderMap::new();
        headers.insert(headers::KIND, "notice");
        headers.insert("ce-specversion", "1.0");
        headers.insert("ce-id", headers::percent_encode(message_id).as_str());
        headers.insert("ce-source", "/refbus/router");
        headers.insert("ce-type", "org.refbus.notice.escalation.v1");
        headers.insert("ce-subject", notice.referral_id.to_string().as_str());
        headers.insert("ce-time", notice.at.to_rfc3339().as_str());
        headers.insert("ce-datacontenttype", "application/json");
        span.in_scope(|| headers::inject_trace_context(&mut headers));
        let message = PublishMessage::build()
            .payload(record::encode_notice(notice))
            .headers(headers)
            .message_id(message_id);
        tracing::Instrument::instrument(self.send(subject, message), span).await
    }

    async fn publish(
        &self,
        subject: String,
        message: PublishMessage,
    ) -> Result<Appended, AppendError> {
        let appended = self.send(subject.clone(), message).await?.stored().await?;
        // A duplicate's sequence is its original's, which may lie on another subject.
        if !appended.duplicate {
            self.seen.record(&subject, appended.seq);
        }
        Ok(appended)
    }

    async fn send(&self, subject: String, message: PublishMessage) -> Result<Pending, AppendError> {
        let ack = self
            .js
            .send_publish(subject, message)
            .await
            .map_err(map_publish_error)?;
        Ok(Pending { ack })
    }

    // === reading ===

    /// The stream sequence of the last message stored (0 if none): where a watch that must
    /// see only what comes next starts. Nothing is ever deleted from the stream, so this is
    /// also how many messages it holds.
    ///
    /// The leader's word: on a cluster only the stream's leader answers, but while the stream
    /// has no leader (an election, too few nodes up) each replica answers from what it holds,
    /// which may be behind, and the scans and catch-ups that must reach this sequence would
    /// then stop short of it (docs/RELIABILITY.md, finding 7). Such an answer is asked again
    /// (backing off from 50 ms) until [`READ_TIMEOUT`], then the read is `Unavailable`.
    pub async fn last_sequence(&self) -> Result<u64, ReadError> {
        if let Some(agency) = &self.confined_to {
            return self.last_sequence_confined(agency).await;
        }
        let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
        let mut pause = Duration::from_millis(50);
        loop {
            let info = timed(self.stream.get_info())
                .await
                .map_err(unavailable)?
                .map_err(unavailable)?;
            let leaderless = info
                .cluster
                .as_ref()
                .is_some_and(|cluster| cluster.leader.as_deref().is_none_or(str::is_empty));
            if !leaderless {
                return Ok(info.state.last_sequence);
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(unavailable(format!(
                    "the stream has no leader now (an election, or too few nodes up): a replica \
                     answered with its last sequence {}, which may be behind; retry",
                    info.state.last_sequence
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// How far the durable consumer `name` is behind the stream: the events stored for it that
    /// it has not acknowledged yet (not yet delivered, and delivered but not yet applied). Read
    /// from JetStream's own account of the consumer, so it is right across restarts; for the
    /// router's lag metric.
    pub async fn durable_backlog(&self, name: &str) -> Result<u64, ReadError> {
        let info = timed(self.stream.consumer_info(name))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        Ok(info
            .num_pending
            .saturating_add(u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX)))
    }

    /// How far the durable consumer `name` has been acknowledged: every message of the stream
    /// up to this sequence was acknowledged by whoever consumed it (0 for a consumer not
    /// created yet).
    pub async fn durable_acknowledged(&self, name: &str) -> Result<u64, ReadError> {
        use async_nats::jetstream::context::ConsumerInfoErrorKind;
        match timed(self.stream.consumer_info(name))
            .await
            .map_err(unavailable)?
        {
            Ok(info) => Ok(info.ack_floor.stream_sequence),
            Err(err) if err.kind() == ConsumerInfoErrorKind::NotFound => Ok(0),
            Err(err) => Err(unavailable(err)),
        }
    }

    /// The last event on `subject` (which may hold wildcards), or `None` if there is none.
    pub async fn last(&self, subject: &str) -> Result<Option<Stored<EventRecord>>, ReadError> {
        self.direct_last(subject)
            .await?
            .map(decode_event)
            .transpose()
    }

    /// The current state of the referral on `subject` (which may hold wildcards), decoding only
    /// the state of its last message, with that message's place; `None` if there is none.
    pub async fn last_state(&self, subject: &str) -> Result<Option<Stored<Referral>>, ReadError> {
        self.direct_last(subject)
            .await?
            .map(decode_state)
            .transpose()
    }

    /// The last notice on `subject`, or `None` if there is none.
    pub async fn last_notice(&self, subject: &str) -> Result<Option<Stored<Notice>>, ReadError> {
        let Some(message) = self.direct_last(subject).await? else {
            return Ok(None);
        };
        match decode_item_raw(message.into())? {
            Item::Notice(notice) => Ok(Some(*notice)),
            Item::Event(_) | Item::Integrity(_) => Ok(None),
        }
    }

    /// The event at stream sequence `seq`, or `None` if there is no such event (on a confined
    /// connection: none among the agency's own referrals).
    pub async fn event_at(&self, seq: u64) -> Result<Option<Stored<EventRecord>>, ReadError> {
        let Some(agency) = &self.confined_to else {
            return self
                .direct(self.stream.direct_get(seq))
                .await?
                .map(decode_event)
                .transpose();
        };
        // By sequence only through a consumer on the agency's own subjects (a direct read by
        // sequence could read any agency's referral).
        for filter in [subjects::received_by(agency), subjects::sent_by(agency)] {
            if let Some(raw) = self.first_from(&filter, seq).await?
                && raw.sequence == seq
            {
                return decode_event(raw).map(Some);
            }
        }
        Ok(None)
    }

    /// The last message on `subject`, its sequence and its record (`None` if it is not a refbus
    /// record: reported).
    pub(crate) async fn unchecked_last(
        &self,
        verifier: &Verifier,
        subject: &str,
    ) -> Result<Option<(u64, Option<Unchecked>)>, ReadError> {
        Ok(self.direct_last(subject).await?.map(|message| {
            let raw = Raw::from(message);
            (raw.sequence, raw.unchecked(verifier).ok())
        }))
    }

    /// The first record on `subject` at or after stream sequence `from`, with its sequence:
    /// `Some((seq, None))` if it is not a refbus record (reported). One read (a consumer on
    /// the subject: see [`scoped`]).
    pub(crate) async fn unchecked_next(
        &self,
        verifier: &Verifier,
        subject: &str,
        from: u64,
    ) -> Result<Option<(u64, Option<Unchecked>)>, ReadError> {
        Ok(self
            .first_from(subject, from)
            .await?
            .map(|raw| (raw.sequence, raw.unchecked(verifier).ok())))
    }

    /// The subject of the last message matching `pattern` (which may hold wildcards): where a
    /// checked read starts looking.
    pub async fn last_subject(&self, pattern: &str) -> Result<Option<String>, ReadError> {
        Ok(self
            .direct_last(pattern)
            .await?
            .map(|message| message.subject.to_string()))
    }

    /// An immediate UNAVAILABLE while the connection is down, instead of a read that would wait
    /// its whole [`READ_TIMEOUT`] for a server that is gone: an agency system hears "retry" at
    /// once, and a burst of calls during an outage does not queue up behind timeouts (the
    /// router's own retries back off).
    pub(crate) fn fail_fast_while_disconnected(&self) -> Result<(), ReadError> {
        if self.is_connected() {
            Ok(())
        } else {
            Err(unavailable("not connected to NATS"))
        }
    }

    /// The last message on `subject` (which may hold wildcards), or `None`: a direct read that
    /// a replica behind this process's knowledge does not answer. A message older than the
    /// last this process saw there, or none where it saw one, is asked for again a few times,
    /// then the read is `Unavailable` (see [`seen`](mod@seen)).
    pub(crate) async fn direct_last(
        &self,
        subject: &str,
    ) -> Result<Option<StreamMessage>, ReadError> {
        let floor = self.seen.floor(subject);
        let found = seen::not_behind(
            subject,
            floor,
            || self.direct(self.stream.direct_get_last_for_subject(subject)),
            |message| message.sequence,
            |answered| answered.map_or(floor == 0, |seq| seq >= floor),
        )
        .await?;
        if let Some(message) = &found {
            self.seen.record(&message.subject, message.sequence);
        }
        Ok(found)
    }

    /// One direct read, counted and bounded by [`READ_TIMEOUT`]; `None` if no message matches.
    async fn direct(
        &self,
        read: impl Future<Output = Result<StreamMessage, DirectGetError>>,
    ) -> Result<Option<StreamMessage>, ReadError> {
        self.fail_fast_while_disconnected()?;
        self.direct_reads.fetch_add(1, Ordering::Relaxed);
        match timed(read).await.map_err(unavailable)? {
            Ok(message) => Ok(Some(message)),
            Err(err) if err.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(err) => Err(unavailable(err)),
        }
    }

    /// The record at stream sequence `seq` on `subject`; `None` if there is none or it is not
    /// a refbus record (reported). One read ([`Bus::first_from`]).
    pub(crate) async fn unchecked_at(
        &self,
        verifier: &Verifier,
        subject: &str,
        seq: u64,
    ) -> Result<Option<Unchecked>, ReadError> {
        if seq == 0 {
            return Ok(None);
        }
        Ok(self
            .first_from(subject, seq)
            .await?
            .filter(|raw| raw.sequence == seq)
            .and_then(|raw| raw.unchecked(verifier).ok()))
    }

    /// Every record on `subject` (which may hold wildcards), oldest first; messages that are
    /// not refbus records are reported and skipped.
    pub(crate) async fn unchecked_history(
        &self,
        verifier: &Verifier,
        subject: &str,
    ) -> Result<Vec<Unchecked>, ReadError> {
        self.unchecked_history_from(verifier, subject, 1).await
    }

    /// [`Bus::unchecked_history`] from stream sequence `from` on.
    pub(crate) async fn unchecked_history_from(
        &self,
        verifier: &Verifier,
        subject: &str,
        from: u64,
    ) -> Result<Vec<Unchecked>, ReadError> {
        Ok(self
            .read_filtered(subject, from, usize::MAX)
            .await?
            .into_iter()
            .filter_map(|raw| raw.unchecked(verifier).ok())
            .collect())
    }

    /// Every event on `subject` (one referral), oldest first.
    pub async fn history(&self, subject: &str) -> Result<Vec<Stored<EventRecord>>, ReadError> {
        self.read_filtered(subject, 1, usize::MAX)
            .await?
            .into_iter()
            .map(decode_event)
            .collect()
    }

    /// Every message matching `filters` after stream sequence `after`, in stream order, then
    /// new ones as they arrive. A consumer that reconnects with the last sequence it saw
    /// misses nothing and sees nothing twice.
    ///
    /// Events are checked for their subject, hash and signature (not against their predecessor:
    /// that costs a read per item); a message that fails, or is not a refbus record at all, is
    /// reported and skipped, and never ends the stream.
    pub async fn watch(
        &self,
        verifier: &Verifier,
        filters: Vec<String>,
        after: u64,
    ) -> Result<impl Stream<Item = Result<Item, ReadError>> + Send + use<>, ReadError> {
        let traced = self.watch_traced(verifier, filters, after).await?;
        Ok(traced.map(|item| item.map(|(item, _)| item)))
    }

    /// [`Bus::watch`], each item with the trace context it was written in (its `traceparent`
    /// header; empty when it carries none): for a span of its delivery that descends from its
    /// writer's.
    pub async fn watch_traced(
        &self,
        verifier: &Verifier,
        filters: Vec<String>,
        after: u64,
    ) -> Result<
        impl Stream<Item = Result<(Item, opentelemetry::Context), ReadError>> + Send + use<>,
        ReadError,
    > {
        // One consumer per filter, merged, so that each consumer's filter is in its API
        // subject (see [`scoped`]).
        let messages = self.merged(filters, after).await?;
        let (bus, verifier) = (self.clone(), verifier.clone());
        Ok(messages
            .then(move |message| {
                let (bus, verifier) = (bus.clone(), verifier.clone());
                async move {
                    let (raw, trace) = match message.and_then(|message| {
                        let trace = message
                            .headers
                            .as_ref()
                            .map(headers::extract_trace_context)
                            .unwrap_or_default();
                        raw_stream_message(&message).map(|raw| (raw, trace))
                    }) {
                        Ok(item) => item,
                        Err(err) => return Some(Err(err)),
                    };
                    // What an inbox delivered, a later read of the referral does not undo.
                    bus.seen.record(&raw.subject, raw.sequence);
                    checked_item(&bus, &verifier, raw)
                        .await
                        .transpose()
                        .map(|item| item.map(|item| (item, trace)))
                }
            })
            .filter_map(std::future::ready)
            // An item may read the bus: boxed, so callers can poll it in place.
            .boxed())
    }

    /// [`Bus::watch`] of the referral events of one kind of change (`kind`, as
    /// [`refbus_core::Change::kind`] names it: `reroute_requested`), for a follower that acts
    /// on those alone. Every other message is skipped on its CloudEvents `ce-type` header,
    /// before it is decoded or checked; what is kept is checked as [`Bus::watch`] checks it.
    /// The header is not signed, but skipping on it is safe: a writer can put any type on its
    /// own message, which is then checked like any other, and a message stored by another
    /// writer cannot be changed; a record whose header lies about its kind is one the follower
    /// would not act on anyway, or one that fails the check.
    /// A type of that kind in any format (`.v2`) is kept, so a record of a format this build
    /// does not read is refused loudly by the check, not skipped in silence.
    pub async fn watch_changes(
        &self,
        verifier: &Verifier,
        filters: Vec<String>,
        after: u64,
        kind: &str,
    ) -> Result<impl Stream<Item = Result<Item, ReadError>> + Send + use<>, ReadError> {
        let kind = kind.to_owned();
        // One consumer per filter, merged, as `watch` (the adapter's connection is confined).
        let messages = self.merged(filters, after).await?;
        let (bus, verifier) = (self.clone(), verifier.clone());
        Ok(messages
            .filter(move |message| {
                let of_kind = match message {
                    Ok(message) => message.headers.as_ref().is_some_and(|headers| {
                        headers
                            .get("ce-type")
                            .is_some_and(|value| headers::is_change_type(value.as_str(), &kind))
                    }),
                    Err(_) => true,
                };
                std::future::ready(of_kind)
            })
            .then(move |message| {
                let (bus, verifier) = (bus.clone(), verifier.clone());
                async move {
                    match message.and_then(|message| raw_stream_message(&message)) {
                        Ok(raw) => {
                            bus.seen.record(&raw.subject, raw.sequence);
                            checked_item(&bus, &verifier, raw).await.transpose()
                        }
                        Err(err) => Some(Err(err)),
                    }
                }
            })
            .filter_map(std::future::ready)
            .boxed())
    }

    /// The last event of every referral matching `filters` (the current state of each), then
    /// the stream ends.
    pub async fn latest(
        &self,
        filters: Vec<String>,
    ) -> Result<impl Stream<Item = Result<Stored<EventRecord>, ReadError>> + Send + use<>, ReadError>
    {
        let messages = self.last_per_subject(filters).await?;
        Ok(messages.map(|raw| decode_event(raw?)))
    }

    /// The current state of every referral matching `filters`, decoding only the state of each
    /// one's last message (not its event), then the stream ends: for rebuilding from states
    /// alone, as the router does at start.
    pub async fn latest_states(
        &self,
        filters: Vec<String>,
    ) -> Result<impl Stream<Item = Result<Stored<Referral>, ReadError>> + Send + use<>, ReadError>
    {
        let messages = self.last_per_subject(filters).await?;
        Ok(messages.map(|raw| decode_state(raw?)))
    }

    /// The current, checked state of every referral matching `filters`, then the stream ends:
    /// for listings and rebuilds. Once each, but for the referrals a replica behind its leader
    /// left out of the scan or showed older: those come again after the others, newer (see
    /// [`Bus::last_per_subject`]; every reader keeps a referral's newer state). Each
    /// referral's last record is checked without its predecessor (subject, hash, signature,
    /// the state's parties: see [`Verifier::check_listed`]); a subject whose last message
    /// fails, or is not a refbus record at all, is read again through [`Bus::referral`], which
    /// goes on from its last record that passes. A subject with no such record yields nothing.
    ///
    /// Decoding and checking (an Ed25519 verification per record, the bulk of the CPU time of
    /// a rebuild) run on tokio's blocking pool, in batches of the records already received, as
    /// many batches at once as there are CPUs, while the connection goes on receiving; items
    /// come out in stream order all the same. The reads a record may need (its subject's
    /// creation, or the history after a refused record) run several at once, also in order;
    /// the creations read are checked in batches on the blocking pool too (one creation per
    /// referral past its first event: half the signatures of a rebuild).
    pub async fn latest_checked(
        &self,
        verifier: &Verifier,
        filters: Vec<String>,
    ) -> Result<impl Stream<Item = Result<Stored<EventRecord>, ReadError>> + Send + use<>, ReadError>
    {
        self.latest_checked_where(verifier, filters, |_| true).await
    }

    /// [`Bus::latest_checked`] for the subjects `keep` accepts only: the others are passed
    /// over as they arrive, before anything is decoded or checked (a router holding a share of
    /// the referrals checks only its share).
    pub async fn latest_checked_where<K: Fn(&str) -> bool + Send + 'static>(
        &self,
        verifier: &Verifier,
        filters: Vec<String>,
        keep: K,
    ) -> Result<impl Stream<Item = Result<Stored<EventRecord>, ReadError>> + Send + use<K>, ReadError>
    {
        /// Records checked by one task of the blocking pool, at most.
        const CHECK_BATCH: usize = 512;
        /// Referrals whose creation (or history) is being read at once.
        const CONCURRENT_READS: usize = 64;
        let messages = self.last_per_subject(filters).await?.filter(move |raw| {
            std::future::ready(raw.as_ref().map_or(true, |raw| keep(raw.subject.as_str())))
        });
        let parallel = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let (bus, verifier) = (self.clone(), verifier.clone());
        let (checking, creations) = (verifier.clone(), verifier.clone());
        let (scanning, scanning_verifier) = (self.clone(), verifier.clone());
        Ok(messages
            .ready_chunks(CHECK_BATCH)
            .map(move |batch| on_blocking_pool(&checking, batch, check_latest))
            .buffered(parallel)
            .flat_map(futures::stream::iter)
            // A later record checked alone proves only its author and subject; the subject must
            // also hold a valid creation of that very referral, or it is a look-alike that
            // another agency wrote: its first message is read (round trips, several at once,
            // items still in order), then checked in batches like the records themselves.
            .map(move |item| {
                let (bus, verifier) = (bus.clone(), verifier.clone());
                async move {
                    match item? {
                        Ok(stored) if stored.record.event.seq > 1 => Ok(
                            match bus.first_message_of(&verifier, &stored.subject).await? {
                                Some((first_seq, first)) => {
                                    Latest::Creation(stored, first_seq, first.map(Box::new))
                                }
                                None => Latest::Done(None),
                            },
                        ),
                        Ok(stored) => Ok(Latest::Done(Some(stored))),
                        Err(subject) => bus.referral(&verifier, &subject).await.map(Latest::Done),
                    }
                }
            })
            .buffered(CONCURRENT_READS)
            .ready_chunks(CHECK_BATCH)
            .map(move |batch| on_blocking_pool(&creations, batch, check_creations))
            .buffered(parallel)
            .flat_map(futures::stream::iter)
            // A first message that fails (only a hostile writer's) sends the read on through
            // the subject's later messages, as `Bus::checked_creation` does.
            .map(move |item| {
                let (bus, verifier) = (scanning.clone(), scanning_verifier.clone());
                async move {
                    match item? {
                        Decided::Scan(stored, first_seq) => Ok(bus
                            .checked_creation_after(&verifier, &stored.subject, first_seq)
                            .await?
                            .filter(|created| created.record.state.id == stored.record.state.id)
                            .map(|_| stored)),
                        Decided::Done(done) => Ok(done),
                    }
                }
            })
            .buffered(CONCURRENT_READS)
            .filter_map(|item| std::future::ready(item.transpose()))
            // Each item may read the bus again: boxed, so callers can poll it in place.
            .boxed())
    }

    /// Publishes an integrity notice for the coordinator (`agency`).
    pub async fn publish_integrity_notice(
        &self,
        agency: &refbus_core::AgencyId,
        notice: &refbus_core::IntegrityNotice,
    ) -> Result<Appended, AppendError> {
        let subject = subjects::integrity_notices_for(agency);
        let message_id = format!("integrity:{}", notice.stream_seq);
        let mut headers = HeaderMap::new();
        headers.insert(headers::KIND, "integrity");
        headers.insert("ce-specversion", "1.0");
        headers.insert("ce-id", message_id.as_str());
        headers.insert("ce-source", "/refbus/router");
        headers.insert("ce-type", "org.refbus.notice.integrity.v1");
        headers.insert("ce-time", notice.at.to_rfc3339().as_str());
        headers.insert("ce-datacontenttype", "application/json");
        let payload =
            record::encode_versioned(refbus_core::format::RecordKind::IntegrityNotice, notice);
        let message = PublishMessage::build()
            .payload(payload.into())
            .headers(headers)
            .message_id(&message_id);
        self.publish(subject, message).await
    }

    /// The last message of every subject matching `filters`, filter after filter (one
    /// consumer each, its filter in its API subject), then the stream ends.
    ///
    /// Never short (for a bus that may ask the stream's leader, not an agency's): the consumer
    /// may live on a replica that has not applied the newest writes yet (a node back from a
    /// partition), whose scan leaves out the referrals created since and shows older last
    /// messages of those changed since. So the stream's last sequence is asked first (its
    /// leader answers), and after each filter's messages, the subjects of the filter with
    /// messages stored past the last one delivered, up to there, are listed
    /// ([`Bus::referral_subjects_between`], which reaches it) and their last messages read
    /// (guarded by what the listing saw, [`Bus::direct_last`]): those subjects come again,
    /// after the others, with their newer message (docs/RELIABILITY.md, finding 5). On a
    /// healthy stream that listing is of the few messages after the last referral message.
    /// An agency's bus may not ask (its reads are confined to its own subjects): its scans are
    /// as the replica answering holds them.
    async fn last_per_subject(
        &self,
        filters: Vec<String>,
    ) -> Result<impl Stream<Item = Result<Raw, ReadError>> + Send + use<>, ReadError> {
        let through = match self.confined_to {
            None => Some(self.last_sequence().await?),
            Some(_) => None,
        };
        let mut all = Vec::with_capacity(filters.len());
        for filter in filters {
            let scan = self.scan_last_per_subject(&filter).await?;
            all.push(self.with_missed(scan, filter, through));
        }
        Ok(futures::stream::iter(all).flatten())
    }

    /// The last message of every subject matching `filter`, as the replica that answers holds
    /// them when asked, and how far it held them (the highest stream sequence delivered, so
    /// far).
    async fn scan_last_per_subject(&self, filter: &str) -> Result<Scan, ReadError> {
        // nats-server answers the creation of a last-per-subject consumer only once it has
        // counted what it will deliver: over a million subjects on a busy machine that took
        // longer than a request's usual bound, and the router's start failed (docs/BENCHMARKS.md).
        // A start is not a call anyone waits on: it gets its own, longer bound.
        let mut js = self.js.clone();
        js.set_timeout(SCAN_TIMEOUT);
        let consumer = Box::pin(tokio::time::timeout(
            SCAN_TIMEOUT,
            js.create_consumer_on_stream(
                ordered_config(vec![filter.to_owned()], DeliverPolicy::LastPerSubject),
                &*self.stream_name,
            ),
        ))
        .await
        .map_err(|_| unavailable(format!("JetStream did not answer within {SCAN_TIMEOUT:?}")))?
        .map_err(unavailable)?;
        let total = consumer.cached_info().num_pending;
        let messages = timed(consumer.messages())
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        let reached = Arc::new(AtomicU64::new(0));
        let delivered = reached.clone();
        let messages = messages
            .map_err(|err| ReadError::with_source(ReadErrorKind::Unavailable, err))
            .take(usize::try_from(total).unwrap_or(usize::MAX))
            .map(move |message| {
                let raw = raw_stream_message(&message?)?;
                delivered.fetch_max(raw.sequence, Ordering::Relaxed);
                Ok(raw)
            })
            .boxed();
        Ok(Scan { messages, reached })
    }

    /// `scan` of `filter`, then the last messages of what it left out or showed older of
    /// what was stored up to `through` ([`Bus::missed_by_scan`]; nothing for `None`).
    fn with_missed(
        &self,
        scan: Scan,
        filter: String,
        through: Option<u64>,
    ) -> BoxStream<'static, Result<Raw, ReadError>> {
        let (bus, reached) = (self.clone(), scan.reached);
        let missed = futures::stream::once(async move {
            match through {
                Some(through) => {
                    let reached = reached.load(Ordering::Relaxed);
                    bus.missed_by_scan(&filter, reached, through).await
                }
                None => Ok(Vec::new()),
            }
        })
        .flat_map(|missed| {
            futures::stream::iter(match missed {
                Ok(missed) => missed.into_iter().map(Ok).collect(),
                Err(err) => vec![Err(err)],
            })
        });
        scan.messages.chain(missed).boxed()
    }

    /// The last messages of the subjects of `filter` with messages stored after `reached` up
    /// to `through`: what a scan of `filter` that delivered up to `reached` left out or showed
    /// older, of what was stored before it began (`through`, read first). Normally none.
    async fn missed_by_scan(
        &self,
        filter: &str,
        reached: u64,
        through: u64,
    ) -> Result<Vec<Raw>, ReadError> {
        let mut missed = self.referral_subjects_between(reached, through).await?;
        missed.retain(|subject| subjects::matches(filter, subject));
        if missed.is_empty() {
            return Ok(Vec::new());
        }
        // Loud: a replica behind answered the scan (its caller still gets every referral).
        tracing::warn!(
            filter,
            reached,
            through,
            missed = missed.len(),
            "a replica of the stream behind its leader answered a scan of every referral's last \
             record; reading the referrals it left out or showed older again"
        );
        let mut found = Vec::with_capacity(missed.len());
        for subject in missed {
            if let Some(message) = self.direct_last(&subject).await? {
                found.push(Raw::from(message));
            }
        }
        Ok(found)
    }

    /// A durable consumer of every referral event, for a component that must process each
    /// event at least once and resume where it stopped (the router). Create-or-resume: the
    /// consumer named `name` keeps its place across restarts; a new one starts at the first
    /// event. An existing one whose configuration differs from what refbus creates is refused
    /// ([`ConsumerErrorKind::Misconfigured`], naming each difference and the fix), never
    /// changed or recreated: see [`durable`](mod@durable) for why.
    pub async fn durable(&self, name: &str) -> Result<durable::Durable, ConsumerError> {
        use async_nats::jetstream::consumer::{Consumer, pull};
        use async_nats::jetstream::context::ConsumerInfoErrorKind;
        let unavailable = |err: Box<dyn std::error::Error + Send + Sync>| {
            ConsumerError::with_source(ConsumerErrorKind::Unavailable, err)
        };
        let timed_out = |err: TimedOut| unavailable(Box::new(err));
        let consumer: Consumer<pull::Config> = match timed(self.stream.consumer_info(name))
            .await
            .map_err(timed_out)?
        {
            Ok(info) => {
                let Some(stream_info) = &self.info else {
                    return Err(ConsumerError::with_source(
                        ConsumerErrorKind::Misconfigured,
                        "a connection confined to one agency cannot run the router's consumer",
                    ));
                };
                let stream = &stream_info.config;
                let found =
                    durable::differences(name, &info.config, info.paused, stream.num_replicas);
                if !found.is_empty() {
                    return Err(ConsumerError::with_source(
                        ConsumerErrorKind::Misconfigured,
                        durable::refusal(&stream.name, name, &found),
                    ));
                }
                timed(self.stream.get_consumer(name))
                    .await
                    .map_err(timed_out)?
                    .map_err(&unavailable)?
            }
            // Created only when missing: an existing one is never overwritten. Two replicas
            // of the same name racing here both succeed (an identical create is a no-op).
            Err(err) if err.kind() == ConsumerInfoErrorKind::NotFound => {
                timed(self.stream.create_consumer(durable::config(name)))
                    .await
                    .map_err(timed_out)?
                    .map_err(|err| unavailable(Box::new(err)))?
            }
            Err(err) => return Err(unavailable(Box::new(err))),
        };
        let first = timed(durable::open_pull(&consumer))
            .await
            .map_err(timed_out)?
            .map_err(|err| unavailable(Box::new(err)))?;
        Ok(durable::Durable::new(
            durable::pulled(consumer, first)
                .map(|message| {
                    let message = message?;
                    let info = message.info().map_err(|err| {
                        ReadError::with_source(ReadErrorKind::Unavailable, err.to_string())
                    })?;
                    let seq = info.stream_sequence;
                    let prev_seq = message.headers.as_ref().map_or(0, prev_seq);
                    Ok(Delivery {
                        seq,
                        subject: message.subject.to_string(),
                        prev_seq,
                        message,
                    })
                })
                .boxed(),
        ))
    }
}

/// A request to JetStream that got no answer within [`READ_TIMEOUT`].
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("JetStream did not answer within {:?}", READ_TIMEOUT)]
pub(crate) struct TimedOut;

/// `request`, or [`TimedOut`] once [`READ_TIMEOUT`] has passed without its answer.
async fn timed<T>(request: impl Future<Output = T>) -> Result<T, TimedOut> {
    // Boxed: the timer and the request would otherwise sit inline in every caller's future,
    // and long-lived ones (the router's loop) would grow past what clippy allows. One
    // allocation per request is nothing next to its round trip.
    Box::pin(tokio::time::timeout(READ_TIMEOUT, request))
        .await
        .map_err(|_| TimedOut)
}

/// A read that failed for want of the bus (no answer, no connection, a refusal to serve).
fn unavailable(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ReadError {
    ReadError::with_source(ReadErrorKind::Unavailable, err)
}

pub(crate) fn ordered_config(
    mut filters: Vec<String>,
    deliver_policy: DeliverPolicy,
) -> OrderedConfig {
    // Named: the server then takes the filter from the API subject (one filter), where
    // permissions see it, and the client names any replacement after it.
    let mut config = OrderedConfig {
        name: Some(scoped::consumer_name()),
        deliver_policy,
        ..Default::default()
    };
    if filters.len() == 1 {
        config.filter_subject = filters.remove(0);
    } else {
        config.filter_subjects = filters;
    }
    config
}

fn map_publish_error(err: async_nats::jetstream::context::PublishError) -> AppendError {
    let kind = match err.kind() {
        PublishErrorKind::WrongLastSequence => AppendErrorKind::Conflict,
        PublishErrorKind::MaxPayloadExceeded => AppendErrorKind::TooLarge,
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::StreamNotFound => AppendErrorKind::Unavailable,
        // In a cluster, JetStream answers 503 while it has no leader for the stream or no
        // quorum (a node lost, an election under way): nothing was stored, a retry may be.
        _ if jetstream_code(&err) == Some(503) => AppendErrorKind::Unavailable,
        // A clustered stream's leader refuses an expected-last-subject-sequence while another
        // message for the same subject is still being replicated, with its own error code
        // (10164, no sequence in it): the referral is moving, exactly a conflict (found by
        // `refbus chaos`, docs/RELIABILITY.md).
        _ if jetstream_err_code(&err) == Some(WRONG_LAST_SEQUENCE_IN_FLIGHT) => {
            AppendErrorKind::Conflict
        }
        // The same message id is in flight at the leader (an earlier attempt of this very
        // append, not yet replicated): its outcome is not known yet, and a retry with the same
        // id is answered from it once it is (found by `refbus chaos`).
        _ if jetstream_err_code(&err) == Some(DUPLICATE_IN_FLIGHT) => AppendErrorKind::Unavailable,
        _ if err.to_string().contains("maximum message size") => AppendErrorKind::TooLarge,
        _ => AppendErrorKind::Refused,
    };
    AppendError::with_source(kind, err)
}

/// JetStream's `JSStreamWrongLastSequenceConstantErr`: "wrong last sequence" while a message
/// for the same subject is in flight at a clustered stream's leader (async-nats maps only
/// 10071, the error that names the sequence, to `WrongLastSequence`).
const WRONG_LAST_SEQUENCE_IN_FLIGHT: jetstream::ErrorCode =
    jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT;

/// JetStream's `JSStreamDuplicateMessageConflictErr` (409): "duplicate message id is in
/// process".
const DUPLICATE_IN_FLIGHT: jetstream::ErrorCode =
    jetstream::ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT;

/// The JetStream error code behind a refused publish, if that is its cause.
fn jetstream_err_code(
    err: &async_nats::jetstream::context::PublishError,
) -> Option<jetstream::ErrorCode> {
    use std::error::Error as _;
    err.source()
        .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>())
        .map(async_nats::jetstream::Error::error_code)
}

/// The status code of the JetStream API error behind a refused publish, if that is its cause.
fn jetstream_code(err: &async_nats::jetstream::context::PublishError) -> Option<usize> {
    use std::error::Error as _;
    err.source()
        .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>())
        .map(async_nats::jetstream::Error::code)
}

/// A scan of every subject's last message ([`Bus::scan_last_per_subject`]).
struct Scan {
    messages: BoxStream<'static, Result<Raw, ReadError>>,
    /// The highest stream sequence delivered so far: how far the answering replica held them.
    reached: Arc<AtomicU64>,
}

/// A stored message, read directly or through a consumer: what decoding needs of it (the
/// headers only for the predecessor's sequence, so they are never copied).
pub(crate) struct Raw {
    subject: String,
    sequence: u64,
    prev_seq: u64,
    /// [`headers::stored_after`].
    stored_after: Option<u64>,
    stored_at: refbus_core::Timestamp,
    /// The `Nats-Msg-Id` it was stored under.
    message_id: Option<String>,
    payload: bytes::Bytes,
}

impl From<jetstream::message::StreamMessage> for Raw {
    fn from(message: jetstream::message::StreamMessage) -> Raw {
        Raw {
            subject: message.subject.to_string(),
            sequence: message.sequence,
            prev_seq: prev_seq(&message.headers),
            stored_after: headers::stored_after_in(Some(&message.headers)),
            stored_at: checked::stored_at(&message),
            message_id: headers::message_id_in(Some(&message.headers)),
            payload: message.payload,
        }
    }
}

impl Raw {
    /// The record for checking; the failure (reported to `verifier`) if it is not a refbus
    /// record, or of a format this build does not read.
    fn unchecked(self, verifier: &Verifier) -> Result<Unchecked, Failure> {
        match record::CheckedRecord::decode(&self.payload, &self.subject, self.sequence) {
            Ok(record) => Ok(Unchecked::new(
                self.sequence,
                self.subject,
                self.prev_seq,
                self.stored_after,
                self.stored_at,
                self.message_id,
                record,
            )),
            Err(failure) => {
                verifier.report(self.sequence, &self.subject, &failure);
                Err(failure)
            }
        }
    }
}

/// A consumer's message in the shape of a direct read.
pub(crate) fn raw_stream_message(message: &jetstream::Message) -> Result<Raw, ReadError> {
    let info = message
        .info()
        .map_err(|err| ReadError::with_source(ReadErrorKind::Unavailable, err.to_string()))?;
    Ok(Raw {
        subject: message.subject.to_string(),
        sequence: info.stream_sequence,
        prev_seq: message.headers.as_ref().map_or(0, prev_seq),
        stored_after: headers::stored_after_in(message.headers.as_ref()),
        stored_at: checked::from_datetime(info.published),
        message_id: headers::message_id_in(message.headers.as_ref()),
        payload: message.payload.clone(),
    })
}

/// Checks each record read of a batch of referrals' last records, their signatures verified
/// together: a creation in full, a later record as listed ([`Verifier::check_listed`]). The
/// subject of one that fails, is not a refbus record, or lacks JetStream's proof that it follows
/// its predecessor ([`Unchecked::follows_its_predecessor`]) comes out instead: that referral is
/// then read from its history.
fn check_latest(
    verifier: &Verifier,
    batch: Vec<Result<Raw, ReadError>>,
) -> Vec<Result<Result<Stored<EventRecord>, String>, ReadError>> {
    let mut records = Vec::with_capacity(batch.len());
    let places: Vec<Result<Result<(), String>, ReadError>> = batch
        .into_iter()
        .map(|raw| {
            raw.map(|raw| {
                let subject = raw.subject.clone();
                raw.unchecked(verifier)
                    .map(|record| records.push(record))
                    .map_err(|_| subject)
            })
        })
        .collect();
    let presigned = verifier.presign_all(&records.iter().collect::<Vec<_>>());
    let mut checked = records
        .into_iter()
        .zip(presigned)
        .map(|(record, presigned)| {
            let subject = record.subject.clone();
            // A record JetStream does not prove follows the predecessor it names (a second
            // creation, an event following an older record, or the first record after a
            // refused message) is no referral's latest on its own word: its history decides.
            if !record.follows_its_predecessor() {
                return Err(subject);
            }
            // A creation needs no predecessor: it is checked in full here.
            if record.record.event.seq == 1 {
                return match verifier.check_presigned(&record, presigned, None) {
                    Ok(after) => Ok(record.into_stored(after.into_snapshot())),
                    Err(_) => Err(subject),
                };
            }
            match verifier.check_listed_presigned(&record, presigned) {
                Some(state) => Ok(record.into_stored(state)),
                None => Err(subject),
            }
        });
    places
        .into_iter()
        .map(|place| {
            place.map(|decoded| {
                decoded.and_then(|()| checked.next().expect("one per decoded record"))
            })
        })
        .collect()
}

/// A check of a batch of records, item for item (see [`check_latest`], [`check_creations`]).
type BatchCheck<T, U> = fn(&Verifier, Vec<T>) -> Vec<Result<U, ReadError>>;

/// `check(verifier, batch)` on a thread of tokio's blocking pool; a task that did not finish
/// (a panic, a runtime shutting down) is one `Unavailable` item.
fn on_blocking_pool<T: Send + 'static, U: Send + 'static>(
    verifier: &Verifier,
    batch: Vec<T>,
    check: BatchCheck<T, U>,
) -> impl Future<Output = Vec<Result<U, ReadError>>> + use<T, U> {
    let verifier = verifier.clone();
    async move {
        tokio::task::spawn_blocking(move || check(&verifier, batch))
            .await
            .unwrap_or_else(|err| {
                vec![Err(ReadError::with_source(
                    ReadErrorKind::Unavailable,
                    format!("checking records: {err}"),
                ))]
            })
    }
}

/// One referral in [`Bus::latest_checked_where`], between its stages.
enum Latest {
    /// Decided: its last record that passed, or nothing to yield.
    Done(Option<Stored<EventRecord>>),
    /// A later record that passed alone, and the first message on its subject (sequence, and
    /// the record if it is one), not yet checked.
    Creation(Stored<EventRecord>, u64, Option<Box<Unchecked>>),
}

/// One referral in [`Bus::latest_checked_where`] once its creation's first message was checked.
enum Decided {
    /// Its last record that passed, or nothing to yield.
    Done(Option<Stored<EventRecord>>),
    /// A later record whose subject's first message failed the check (reported): the
    /// subject's messages after that sequence hold its creation, if anything does.
    Scan(Stored<EventRecord>, u64),
}

/// Decides every [`Latest::Creation`] of `batch` (on a thread of the blocking pool): the first
/// message, checked as a creation with the signatures of the batch verified together, is a
/// creation of the same referral (the record is yielded) or of another (nothing is); one that
/// fails the check is scanned past.
fn check_creations(
    verifier: &Verifier,
    batch: Vec<Result<Latest, ReadError>>,
) -> Vec<Result<Decided, ReadError>> {
    let firsts: Vec<&Unchecked> = batch
        .iter()
        .filter_map(|item| match item {
            Ok(Latest::Creation(_, _, Some(first))) if first.record.event.seq == 1 => {
                Some(&**first)
            }
            _ => None,
        })
        .collect();
    let mut presigned = verifier.presign_all(&firsts).into_iter();
    batch
        .into_iter()
        .map(|item| {
            item.map(|latest| match latest {
                Latest::Creation(stored, first_seq, Some(first)) if first.record.event.seq == 1 => {
                    // `firsts` took exactly the first messages this arm matches, in order, and
                    // `presign_all` gives one verdict per record it is given.
                    let presigned = presigned.next().expect("one per first message");
                    match verifier.check_presigned(&first, presigned, None) {
                        Ok(created) => {
                            Decided::Done((created.id == stored.record.state.id).then_some(stored))
                        }
                        Err(_) => Decided::Scan(stored, first_seq),
                    }
                }
                Latest::Creation(stored, first_seq, _) => Decided::Scan(stored, first_seq),
                Latest::Done(done) => Decided::Done(done),
            })
        })
        .collect()
}

fn prev_seq(headers: &HeaderMap) -> u64 {
    headers
        .get(headers::PREV_SEQ)
        .and_then(|value| value.as_str().parse().ok())
        .unwrap_or(0)
}

fn decode_event(message: impl Into<Raw>) -> Result<Stored<EventRecord>, ReadError> {
    let message: Raw = message.into();
    let record = EventRecord::decode(&message.payload)
        .map_err(|err| ReadError::with_source(ReadErrorKind::Corrupt(message.sequence), err))?;
    Ok(Stored {
        seq: message.sequence,
        last_seq: message.sequence,
        subject: message.subject,
        prev_seq: message.prev_seq,
        record,
    })
}

fn decode_state(message: impl Into<Raw>) -> Result<Stored<Referral>, ReadError> {
    let message: Raw = message.into();
    let state = record::decode_state(&message.payload)
        .map_err(|err| ReadError::with_source(ReadErrorKind::Corrupt(message.sequence), err))?;
    Ok(Stored {
        seq: message.sequence,
        last_seq: message.sequence,
        subject: message.subject,
        prev_seq: message.prev_seq,
        record: state,
    })
}

/// An inbox item that passes the check, or `None` (reported).
///
/// An event is checked alone (subject, hash, signature, the state's parties) when JetStream
/// proves it follows the record it names as its predecessor
/// ([`Unchecked::follows_its_predecessor`]); otherwise it is checked in full against what its
/// subject held just before it ([`Bus::state_preceding`], as the router and `Bus::consume`
/// check such a record). One read of the history, only for a record stored right after a
/// refused message or written around the chain (a second creation, an event following an older
/// record): such a record never reaches an inbox as if it were the referral's news.
async fn checked_item(bus: &Bus, verifier: &Verifier, raw: Raw) -> Result<Option<Item>, ReadError> {
    if raw.subject.starts_with(subjects::NOTICE_PREFIX) {
        let (seq, subject) = (raw.sequence, raw.subject.clone());
        return Ok(match decode_notice_item(raw) {
            Ok(item) => Some(item),
            Err(err) => {
                let failure = err.failure("not a refbus notice");
                verifier.report(seq, &subject, &failure);
                None
            }
        });
    }
    let Ok(record) = raw.unchecked(verifier) else {
        return Ok(None);
    };
    if !record.follows_its_predecessor() {
        let before = bus.state_preceding(verifier, &record).await?;
        return Ok(verifier
            .check(&record, before.map(|(_, state)| state))
            .ok()
            .map(|after| Item::Event(Box::new(record.into_stored(after.into_snapshot())))));
    }
    Ok(verifier
        .check_listed(&record)
        .map(|state| Item::Event(Box::new(record.into_stored(state)))))
}

fn decode_item_raw(message: Raw) -> Result<Item, ReadError> {
    let seq = message.sequence;
    decode_notice_item(message)
        .map_err(|err| ReadError::with_source(ReadErrorKind::Corrupt(seq), err.to_string()))
}

/// An inbox item: a notice or an integrity notice by its subject (each of its format), else
/// an event record.
fn decode_notice_item(message: Raw) -> Result<Item, record::DecodeError> {
    use refbus_core::format::RecordKind;
    match subjects::parse(&message.subject) {
        _ if message.subject
            == subjects::integrity_notices_for_subject_agency(&message.subject) =>
        {
            let notice = record::decode_versioned(
                RecordKind::IntegrityNotice,
                &message.payload,
                &message.subject,
                message.sequence,
            )?;
            Ok(Item::Integrity(Box::new(Stored {
                seq: message.sequence,
                last_seq: message.sequence,
                subject: message.subject,
                prev_seq: 0,
                record: notice,
            })))
        }
        Some(subjects::Parsed::Notice { .. }) => {
            let notice =
                record::decode_notice(&message.payload, &message.subject, message.sequence)?;
            Ok(Item::Notice(Box::new(Stored {
                seq: message.sequence,
                last_seq: message.sequence,
                subject: message.subject,
                prev_seq: 0,
                record: notice,
            })))
        }
        _ => {
            let record = EventRecord::decode(&message.payload)?;
            Ok(Item::Event(Box::new(Stored {
                seq: message.sequence,
                last_seq: message.sequence,
                subject: message.subject,
                prev_seq: message.prev_seq,
                record,
            })))
        }
    }
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::context::{PublishError, PublishErrorKind};

    use super::*;

    fn refused_with(code: usize, err_code: u64, description: &str) -> PublishError {
        let api: async_nats::jetstream::Error = serde_json::from_value(serde_json::json!({
            "code": code,
            "err_code": err_code,
            "description": description,
        }))
        .unwrap();
        PublishError::with_source(PublishErrorKind::Other, api)
    }

    #[test]
    fn a_wrong_last_sequence_while_another_append_is_in_flight_is_a_conflict() {
        // What a clustered stream's leader answers an expected-last-subject-sequence while a
        // message for that subject awaits its quorum (seen under `refbus chaos`): the referral
        // is moving, so the writer reads it again, as after the error that names the sequence.
        let in_flight = refused_with(400, 10164, "wrong last sequence");
        assert_eq!(
            map_publish_error(in_flight).kind(),
            AppendErrorKind::Conflict
        );
        let named = PublishError::new(PublishErrorKind::WrongLastSequence);
        assert_eq!(map_publish_error(named).kind(), AppendErrorKind::Conflict);
    }

    #[test]
    fn the_same_message_id_in_flight_is_an_unknown_outcome() {
        // A retry that reaches the leader while its first attempt awaits its quorum: that
        // attempt may yet be stored, so the outcome is unknown, and the next retry is answered
        // as a duplicate of it.
        let in_flight = refused_with(409, 10158, "duplicate message id is in process");
        assert_eq!(
            map_publish_error(in_flight).kind(),
            AppendErrorKind::Unavailable
        );
    }

    #[test]
    fn a_cluster_without_a_leader_is_unavailable_not_a_refusal() {
        // What JetStream answers while a stream has no leader or no quorum: retry.
        let no_leader = refused_with(503, 10008, "JetStream system temporarily unavailable");
        assert_eq!(
            map_publish_error(no_leader).kind(),
            AppendErrorKind::Unavailable
        );
        // A refusal on its merits stays one.
        let refused = refused_with(400, 10060, "expected stream does not match");
        assert_eq!(map_publish_error(refused).kind(), AppendErrorKind::Refused);
        assert_eq!(
            map_publish_error(PublishError::new(PublishErrorKind::TimedOut)).kind(),
            AppendErrorKind::Unavailable
        );
    }
}

/// The scan of every referral's last message, answered by a replica behind its leader.
#[cfg(test)]
mod scan_tests {
    use refbus_core::{AgencyId, ReferralId, RequestId};

    use super::*;

    fn subject(n: u32) -> String {
        let sender = AgencyId::new("maros-dinsos").unwrap();
        let recipient = AgencyId::new("maros-uptd-ppa").unwrap();
        let id = ReferralId::derive(&sender, &RequestId::new(format!("request-{n}")).unwrap());
        subjects::referral(&recipient, &sender, &id)
    }

    async fn store(bus: &Bus, subject: String) -> u64 {
        bus.js
            .publish(subject, "a record".into())
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence
    }

    /// A consumer opened before the last writes sees the stream as a replica that has not
    /// applied them yet answers: the stream's leader (its last sequence, read after) has them.
    /// The scan still ends with the newer last message of the referral changed meanwhile and
    /// the referral created meanwhile, and with nothing the replica had.
    #[tokio::test]
    async fn a_scan_answered_by_a_replica_behind_still_ends_with_every_referrals_last_message() {
        let server = refbus_testkit::NatsServer::start().unwrap();
        let bus = Bus::connect(&server.url(), &StreamSettings::default())
            .await
            .unwrap();
        let (changed, unchanged, created) = (subject(1), subject(2), subject(3));
        let first = store(&bus, changed.clone()).await;
        let kept = store(&bus, unchanged.clone()).await;
        // Not a referral, and past the others: never read again.
        let dp3a = AgencyId::new("maros-dp3a").unwrap();
        store(
            &bus,
            subjects::notice(
                &dp3a,
                &ReferralId::derive(&dp3a, &RequestId::new("n").unwrap()),
            ),
        )
        .await;

        let scan = bus
            .scan_last_per_subject(subjects::ALL_REFERRALS)
            .await
            .unwrap();
        let newer = store(&bus, changed.clone()).await;
        let new = store(&bus, created.clone()).await;
        let through = bus.last_sequence().await.unwrap();

        let read: Vec<(String, u64)> = bus
            .with_missed(scan, subjects::ALL_REFERRALS.to_owned(), Some(through))
            .map(|raw| raw.map(|raw| (raw.subject, raw.sequence)))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            read,
            vec![
                (changed.clone(), first),
                (unchanged, kept),
                (changed, newer),
                (created, new),
            ]
        );

        // A healthy scan (nothing stored after it began) reads nothing again.
        let through = bus.last_sequence().await.unwrap();
        let scan = bus
            .scan_last_per_subject(subjects::ALL_REFERRALS)
            .await
            .unwrap();
        let reads = bus.direct_reads.load(Ordering::Relaxed);
        let read = bus
            .with_missed(scan, subjects::ALL_REFERRALS.to_owned(), Some(through))
            .count()
            .await;
        assert_eq!(read, 3);
        assert_eq!(bus.direct_reads.load(Ordering::Relaxed), reads);
    }
}
