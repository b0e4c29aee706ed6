//! The router's durable consumer: the configuration refbus creates it with, the check of an
//! existing one at every start, and its deliveries ([`Durable`]), which a router giving a
//! partition up stops at once.
//!
//! An existing durable that differs is refused, not recreated. The consumer decides which events
//! the router sees and how often they come back: a narrower filter, a `max_deliver`, an ack
//! policy other than explicit or a start past the first event make the router skip events
//! without a word, and recreating it silently would hide whoever changed it. Deleting it is the
//! operator's decision, once they know why it changed; the router then creates it anew at the
//! first event and reads everything again, which it tolerates (every item is recorded at most
//! once).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, ReplayPolicy, pull};
use futures::stream::BoxStream;
use futures::task::AtomicWaker;
use futures::{FutureExt, Stream, StreamExt};

use crate::{Delivery, ReadError, subjects};

/// How long an event may stay unacknowledged before it is delivered again (a stuck router).
const ACK_WAIT: Duration = Duration::from_secs(60);
/// Events in flight between the stream and the router.
const MAX_ACK_PENDING: i64 = 20_000;

/// The configuration refbus creates the durable `name` with.
pub(crate) fn config(name: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_owned()),
        description: Some("refbus router: every referral event, in order".to_owned()),
        filter_subject: subjects::ALL_REFERRALS.to_owned(),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: ACK_WAIT,
        max_ack_pending: MAX_ACK_PENDING,
        // Said explicitly: an event is delivered until the router acknowledges it.
        max_deliver: -1,
        replay_policy: ReplayPolicy::Instant,
        ..Default::default()
    }
}

/// Every difference between the existing durable `name` (its configuration as the server
/// reports it, and whether it is paused) and what refbus creates, each as "`field` is X, refbus
/// needs Y (why)". `stream_replicas` is the stream's: a consumer inherits it (reported as 0) or
/// names the same.
pub(crate) fn differences(
    name: &str,
    existing: &consumer::Config,
    paused: bool,
    stream_replicas: usize,
) -> Vec<String> {
    let mut found = Vec::new();
    if existing.durable_name.as_deref() != Some(name) {
        found.push(format!(
            "durable_name is {}, refbus needs {name} (a durable consumer keeps the router's \
             place)",
            existing.durable_name.as_deref().unwrap_or("none")
        ));
    }
    if let Some(deliver_subject) = &existing.deliver_subject {
        found.push(format!(
            "deliver_subject is {deliver_subject}, refbus needs none (a pull consumer)"
        ));
    }
    let filters: Vec<&str> = if existing.filter_subjects.is_empty() {
        Some(existing.filter_subject.as_str())
            .filter(|filter| !filter.is_empty())
            .into_iter()
            .collect()
    } else {
        existing
            .filter_subjects
            .iter()
            .map(String::as_str)
            .collect()
    };
    if filters != [subjects::ALL_REFERRALS] {
        found.push(format!(
            "filter is {}, refbus needs {} (every referral event, nothing else)",
            if filters.is_empty() {
                "none (every message)".to_owned()
            } else {
                filters.join(", ")
            },
            subjects::ALL_REFERRALS
        ));
    }
    if existing.ack_policy != AckPolicy::Explicit {
        found.push(format!(
            "ack_policy is {}, refbus needs explicit (an event counts as processed only once \
             the router says so)",
            ack_policy(&existing.ack_policy)
        ));
    }
    if existing.deliver_policy != DeliverPolicy::All {
        found.push(format!(
            "deliver_policy is {}, refbus needs all (the router reads from the first event)",
            deliver_policy(&existing.deliver_policy)
        ));
    }
    if existing.ack_wait != ACK_WAIT {
        found.push(format!(
            "ack_wait is {:?}, refbus needs {ACK_WAIT:?}",
            existing.ack_wait
        ));
    }
    if existing.max_ack_pending != MAX_ACK_PENDING {
        found.push(format!(
            "max_ack_pending is {}, refbus needs {MAX_ACK_PENDING}",
            existing.max_ack_pending
        ));
    }
    if existing.max_deliver > 0 {
        found.push(format!(
            "max_deliver is {}, refbus needs -1 (unlimited: an event is delivered until it is \
             processed)",
            existing.max_deliver
        ));
    }
    if !existing.backoff.is_empty() {
        found.push(format!(
            "backoff is {:?}, refbus needs none (redelivery after ack_wait)",
            existing.backoff
        ));
    }
    if existing.replay_policy != ReplayPolicy::Instant {
        found.push("replay_policy is original, refbus needs instant".to_owned());
    }
    if existing.rate_limit != 0 {
        found.push(format!(
            "rate_limit_bps is {}, refbus needs 0 (no rate limit)",
            existing.rate_limit
        ));
    }
    if existing.sample_frequency != 0 {
        found.push(format!(
            "sample_freq is {}%, refbus needs 0 (no sampling)",
            existing.sample_frequency
        ));
    }
    if existing.inactive_threshold != Duration::ZERO {
        found.push(format!(
            "inactive_threshold is {:?}, refbus needs 0 (the consumer must outlive a stopped \
             router)",
            existing.inactive_threshold
        ));
    }
    if existing.headers_only {
        found.push(
            "headers_only is true, refbus needs false (the router reads every event)".to_owned(),
        );
    }
    if existing.memory_storage {
        found.push(
            "mem_storage is true, refbus needs false (the router's place survives a server \
             restart)"
                .to_owned(),
        );
    }
    if existing.num_replicas != 0 && existing.num_replicas != stream_replicas {
        found.push(format!(
            "num_replicas is {}, refbus needs the stream's ({stream_replicas})",
            existing.num_replicas
        ));
    }
    for (field, value) in [
        ("max_batch", existing.max_batch),
        ("max_bytes", existing.max_bytes),
    ] {
        if value != 0 {
            found.push(format!(
                "{field} is {value}, refbus needs 0 (no cap on the router's pulls)"
            ));
        }
    }
    if existing.max_expires != Duration::ZERO {
        found.push(format!(
            "max_expires is {:?}, refbus needs 0 (no cap on the router's pulls)",
            existing.max_expires
        ));
    }
    if existing.priority_policy != consumer::PriorityPolicy::None
        || !existing.priority_groups.is_empty()
    {
        found.push(
            "priority groups are set, refbus needs none (each replica has its own consumer)"
                .to_owned(),
        );
    }
    if paused {
        found.push("the consumer is paused, refbus needs it running".to_owned());
    }
    found
}

/// The refusal for the durable `name` on `stream`, naming each difference and the fix.
pub(crate) fn refusal(stream: &str, name: &str, found: &[String]) -> String {
    format!(
        "consumer {name} on stream {stream}: {}. refbus does not change or recreate it, since \
         whoever changed it may have made the router skip events: find out why, then delete it \
         (nats consumer rm {stream} {name}); the router creates it anew and reads every event \
         again from the first, recording nothing twice",
        found.join("; ")
    )
}

fn ack_policy(policy: &AckPolicy) -> &'static str {
    match policy {
        AckPolicy::Explicit => "explicit",
        AckPolicy::None => "none",
        AckPolicy::All => "all",
        _ => "another policy",
    }
}

fn deliver_policy(policy: &DeliverPolicy) -> String {
    match policy {
        DeliverPolicy::All => "all".to_owned(),
        DeliverPolicy::Last => "last".to_owned(),
        DeliverPolicy::New => "new".to_owned(),
        DeliverPolicy::ByStartSequence { start_sequence } => {
            format!("by_start_sequence {start_sequence}")
        }
        DeliverPolicy::ByStartTime { start_time } => format!("by_start_time {start_time}"),
        DeliverPolicy::LastPerSubject => "last_per_subject".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "refbus-router-main";

    /// What the server reports for a consumer refbus created (its defaults filled in).
    fn as_created() -> consumer::Config {
        let created = config(NAME);
        consumer::Config {
            durable_name: created.durable_name,
            description: created.description,
            filter_subject: created.filter_subject,
            ack_policy: created.ack_policy,
            deliver_policy: created.deliver_policy,
            ack_wait: created.ack_wait,
            max_ack_pending: created.max_ack_pending,
            max_deliver: -1,
            max_waiting: 512,
            replay_policy: created.replay_policy,
            ..Default::default()
        }
    }

    #[test]
    fn the_consumer_refbus_creates_has_no_difference() {
        assert_eq!(
            differences(NAME, &as_created(), false, 1),
            Vec::<String>::new()
        );
        // Filters given as a list of one are the same filter.
        let listed = consumer::Config {
            filter_subject: String::new(),
            filter_subjects: vec![subjects::ALL_REFERRALS.to_owned()],
            ..as_created()
        };
        assert_eq!(differences(NAME, &listed, false, 3), Vec::<String>::new());
    }

    #[test]
    fn every_change_that_can_make_the_router_skip_events_is_named() {
        let altered = consumer::Config {
            filter_subject: "refbus.v1.ref.a.>".to_owned(),
            ack_policy: AckPolicy::None,
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: 42 },
            ack_wait: Duration::from_secs(5),
            max_ack_pending: 1,
            max_deliver: 1,
            replay_policy: ReplayPolicy::Original,
            rate_limit: 1_000,
            sample_frequency: 50,
            inactive_threshold: Duration::from_secs(300),
            headers_only: true,
            memory_storage: true,
            num_replicas: 3,
            max_batch: 1,
            ..as_created()
        };
        let found = differences(NAME, &altered, true, 1);
        let starts: Vec<&str> = found
            .iter()
            .map(|text| text.split(" is ").next().unwrap_or(text))
            .collect();
        assert_eq!(
            starts,
            vec![
                "filter",
                "ack_policy",
                "deliver_policy",
                "ack_wait",
                "max_ack_pending",
                "max_deliver",
                "replay_policy",
                "rate_limit_bps",
                "sample_freq",
                "inactive_threshold",
                "headers_only",
                "mem_storage",
                "num_replicas",
                "max_batch",
                "the consumer",
            ]
        );
        assert!(found.contains(
            &"filter is refbus.v1.ref.a.>, refbus needs refbus.v1.ref.> (every referral event, \
              nothing else)"
                .to_owned()
        ));
        assert!(
            found.contains(
                &"deliver_policy is by_start_sequence 42, refbus needs all (the router reads from \
              the first event)"
                    .to_owned()
            )
        );
        let message = refusal("REFBUS_EVENTS", NAME, &found);
        assert!(
            message.starts_with("consumer refbus-router-main on stream REFBUS_EVENTS: filter is")
        );
        assert!(message.contains("nats consumer rm REFBUS_EVENTS refbus-router-main"));
    }

    #[test]
    fn an_ephemeral_or_push_consumer_is_not_the_router_s() {
        let ephemeral = consumer::Config {
            durable_name: None,
            deliver_subject: Some("deliver.here".to_owned()),
            filter_subject: String::new(),
            ..as_created()
        };
        let found = differences(NAME, &ephemeral, false, 1);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("durable_name is none"));
        assert!(found[1].starts_with("deliver_subject is deliver.here"));
        assert!(found[2].starts_with("filter is none (every message)"));
    }
}

/// A durable consumer's deliveries as they come, which a [`DurableStop`] stops at once from
/// outside the task that polls them.
///
/// Why a stop of its own: the client pulls events ahead of its reader (a pull request of a
/// batch), so deliveries wait in its buffer. Dropping the consumer drops them unacknowledged,
/// and JetStream delivers them again only after [`ACK_WAIT`]: a minute during which nobody
/// acts on them. A router giving a partition up (its lease lost) hands every such delivery back
/// instead, so the partition's new holder gets them at once.
pub struct Durable {
    shared: Arc<Shared>,
}

/// Stops a [`Durable`]: see [`DurableStop::stop`].
#[derive(Clone)]
pub struct DurableStop {
    shared: Arc<Shared>,
}

type Deliveries = BoxStream<'static, Result<Delivery, ReadError>>;

/// How long each pull request of the router's consumer waits at JetStream before it expires and
/// the client asks again (a third of the client's default), and how often JetStream signals a
/// waiting pull is alive (under half of it, as the server requires). Shorter than the defaults
/// so that a pull lost in silence (its consumer's leader killed or cut off while it waited) is
/// asked again within [`PULL_EXPIRES`] and the client's five seconds, not 35 s.
pub(crate) const PULL_EXPIRES: Duration = Duration::from_secs(10);
pub(crate) const PULL_HEARTBEAT: Duration = Duration::from_secs(4);
/// The wait before asking again after a pull JetStream answered "no responders", doubled while
/// it keeps answering so, up to the most.
const PULL_AGAIN_FIRST: Duration = Duration::from_millis(250);
const PULL_AGAIN_MOST: Duration = Duration::from_secs(5);

/// Opens a pull of `consumer`'s messages, configured as [`pulled`] needs.
pub(crate) async fn open_pull(
    consumer: &consumer::Consumer<pull::Config>,
) -> Result<pull::Stream, consumer::StreamError> {
    consumer
        .stream()
        .expires(PULL_EXPIRES)
        .heartbeat(PULL_HEARTBEAT)
        .messages()
        .await
}

/// `consumer`'s messages from `first` on, pulled again whenever JetStream loses the pull.
///
/// Why: the client's pull stream sends its next pull request only once the one outstanding is
/// answered or has expired (plus five seconds). A pull request JetStream answered "no
/// responders" (the consumer without a leader, or its leader not known yet where the request
/// arrived) is counted outstanding all the same, and the router's partition received nothing
/// until it would have expired: 70 s without an event in a fault campaign, and the referrals
/// created meanwhile had their clocks fired a minute late (docs/RELIABILITY.md, finding 10).
/// Here such a pull is dropped, what its stream had already received is passed on first, and a
/// new pull is opened after a short wait; the error is passed on too, for the log.
pub(crate) fn pulled(
    consumer: consumer::Consumer<pull::Config>,
    first: pull::Stream,
) -> BoxStream<'static, Result<async_nats::jetstream::Message, ReadError>> {
    let puller = Puller {
        consumer,
        messages: Some(first),
        received: std::collections::VecDeque::new(),
        again_in: PULL_AGAIN_FIRST,
        opened_at: tokio::time::Instant::now(),
    };
    futures::stream::unfold(puller, |mut puller| async move {
        let next = puller.next().await?;
        Some((next, puller))
    })
    .boxed()
}

struct Puller {
    consumer: consumer::Consumer<pull::Config>,
    /// The pull open; `None` once JetStream lost it, until the next is opened.
    messages: Option<pull::Stream>,
    /// What a lost pull's stream had received, passed on before anything else.
    received: std::collections::VecDeque<async_nats::jetstream::Message>,
    /// The wait before the next pull is opened once one is lost.
    again_in: Duration,
    opened_at: tokio::time::Instant,
}

impl Puller {
    async fn next(&mut self) -> Option<Result<async_nats::jetstream::Message, ReadError>> {
        let unavailable = |err: String| {
            Some(Err(ReadError::with_source(
                crate::ReadErrorKind::Unavailable,
                err,
            )))
        };
        if let Some(message) = self.received.pop_front() {
            return Some(Ok(message));
        }
        let messages = match self.messages.as_mut() {
            Some(messages) => messages,
            None => {
                tokio::time::sleep(self.again_in).await;
                self.again_in = (self.again_in * 2).min(PULL_AGAIN_MOST);
                let opened =
                    tokio::time::timeout(crate::READ_TIMEOUT, open_pull(&self.consumer)).await;
                match opened {
                    Ok(Ok(messages)) => {
                        self.opened_at = tokio::time::Instant::now();
                        self.messages.insert(messages)
                    }
                    Ok(Err(err)) => return unavailable(format!("pulling again: {err}")),
                    Err(_) => {
                        return unavailable(format!(
                            "pulling again: JetStream did not answer within {:?}",
                            crate::READ_TIMEOUT
                        ));
                    }
                }
            }
        };
        match messages.next().await {
            None => None,
            Some(Ok(message)) => {
                self.again_in = PULL_AGAIN_FIRST;
                Some(Ok(message))
            }
            // Not on a missed heartbeat: a replica paused or starved past two heartbeats misses
            // them too, with its pull alive and events on their way to it, and a pull dropped
            // drops those until the acknowledgement timeout (a minute). A pull lost in silence
            // (its leader killed) is asked again when it expires: [`PULL_EXPIRES`] and five
            // seconds.
            Some(Err(err)) if err.kind() == pull::MessagesErrorKind::NoResponders => {
                let mut lost = self.messages.take()?;
                // Only what is already received: polling never waits here.
                while let Some(Some(Ok(message))) = lost.next().now_or_never() {
                    self.received.push_back(message);
                }
                // A pull that had served a while: its loss starts the waits over.
                if self.opened_at.elapsed() > PULL_AGAIN_MOST * 2 {
                    self.again_in = PULL_AGAIN_FIRST;
                }
                unavailable(format!(
                    "{err}: the pull is lost, asking again in {:?}",
                    self.again_in
                ))
            }
            Some(Err(err)) => unavailable(err.to_string()),
        }
    }
}

struct Shared {
    /// `None` once stopped (or ended).
    deliveries: Mutex<Option<Deliveries>>,
    /// Whoever waits on the deliveries, woken when they are stopped.
    waker: AtomicWaker,
}

/// At most this many deliveries taken out of a stopped consumer's buffer (a bound, not a
/// figure to reach: the buffer holds one pull request's batch).
const MOST_DRAINED: usize = 100_000;

impl Durable {
    pub(crate) fn new(deliveries: Deliveries) -> Durable {
        Durable {
            shared: Arc::new(Shared {
                deliveries: Mutex::new(Some(deliveries)),
                waker: AtomicWaker::new(),
            }),
        }
    }

    /// What stops these deliveries from elsewhere.
    pub fn stopper(&self) -> DurableStop {
        DurableStop {
            shared: self.shared.clone(),
        }
    }
}

impl Stream for Durable {
    type Item = Result<Delivery, ReadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.shared.waker.register(cx.waker());
        let mut deliveries = self.shared.lock();
        let Some(stream) = deliveries.as_mut() else {
            return Poll::Ready(None);
        };
        let next = stream.poll_next_unpin(cx);
        if let Poll::Ready(None) = next {
            *deliveries = None;
        }
        next
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Deliveries>> {
        // A panic while polling leaves nothing half-changed worth refusing over.
        self.deliveries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl DurableStop {
    /// Stops the consumer now: its pull request is withdrawn (JetStream sends nothing more to a
    /// reader no longer listening), the [`Durable`] ends, and the deliveries it had
    /// received and not yet yielded are returned, for the caller to hand back (or process).
    /// Deliveries still on the wire when it stops are lost to [`ACK_WAIT`]: milliseconds'
    /// worth, where the buffer is a batch. Stopping a stopped consumer returns nothing.
    pub fn stop(&self) -> Vec<Delivery> {
        let Some(mut stream) = self.shared.lock().take() else {
            return Vec::new();
        };
        self.shared.waker.wake();
        let mut buffered = Vec::new();
        // Only what is already received: polling never waits here. A poll may ask JetStream
        // for the next batch; the request is dropped with the reader just after, and JetStream
        // sends nothing to a reader that is gone.
        for _ in 0..MOST_DRAINED {
            match stream.next().now_or_never() {
                Some(Some(Ok(delivery))) => buffered.push(delivery),
                // An error the reader would have logged and skipped (a missed heartbeat).
                Some(Some(Err(_))) => {}
                Some(None) | None => break,
            }
        }
        buffered
    }
}
