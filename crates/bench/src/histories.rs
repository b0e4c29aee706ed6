//! Referral events exactly as adapters write them (core `decide` and `evolve`, the record, the
//! headers, the message id and the expected subject sequence of `Bus::append`), built ahead of
//! time so a benchmark can fill a stream at JetStream's own speed.
//!
//! A stream filled in a known order from one connection gives every message a known sequence, so
//! follow-up events can name their predecessor (`Refbus-Prev-Seq`, and the expected subject
//! sequence) without waiting for each acknowledgement: [`publish_planned`] checks that every
//! message landed where it was planned.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use refbus_bus::{EventRecord, headers, subjects};
use refbus_core::command::{Command, Request};
use refbus_core::ids::{OperatorId, PolicyVersion};
use refbus_core::referral::{Consent, Creation, Outcome, Priority};
use refbus_core::{Actor, AgencyId, Referral, Registry, RequestId, Timestamp, decide, evolve};
use tokio::time::Instant;

use crate::BenchError;

/// Who refers whom for what, at which priority: the mix of referrals a Kabupaten Maros
/// deployment sees, from the shelter emergency to the routine social-assistance request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub sender: &'static str,
    pub recipient: &'static str,
    pub service: &'static str,
    pub priority: Priority,
}

/// The mix: every clock family of the Maros policy but the statutory ones (which need a
/// category and the date the victim reported), wall-clock and working-hours calendars.
pub const MIX: [Kind; 8] = [
    Kind {
        sender: "maros-dinsos",
        recipient: "maros-uptd-ppa",
        service: "shelter",
        priority: Priority::Emergency,
    },
    Kind {
        sender: "maros-dinsos",
        recipient: "maros-uptd-ppa",
        service: "psychological_counselling",
        priority: Priority::Urgent,
    },
    Kind {
        sender: "maros-dp3a",
        recipient: "maros-uptd-ppa",
        service: "case_management",
        priority: Priority::Routine,
    },
    Kind {
        sender: "puskesos-bontoa",
        recipient: "maros-dinsos",
        service: "social_assistance",
        priority: Priority::Routine,
    },
    Kind {
        sender: "maros-uptd-ppa",
        recipient: "maros-rsud",
        service: "health_care",
        priority: Priority::Urgent,
    },
    Kind {
        sender: "maros-uptd-ppa",
        recipient: "maros-bagian-hukum",
        service: "legal_aid",
        priority: Priority::Routine,
    },
    Kind {
        sender: "maros-dinsos",
        recipient: "maros-uptd-ppa",
        service: "victim_assistance",
        priority: Priority::Emergency,
    },
    Kind {
        sender: "puskesos-bontoa",
        recipient: "maros-dinsos",
        service: "slrt_complaint",
        priority: Priority::Urgent,
    },
];

/// The referral of `bench clocks`'s due minute: an emergency counselling referral, which no kind
/// of [`MIX`] is. Under the bench clock ([`crate::clocks::DUE_CLOCK`], added to the registry for
/// that benchmark only) its 50 % warning and first escalation fall due together
/// [`crate::clocks::DUE_AFTER`] after its creation (the first level notifies the recipient's own
/// supervisor, so no notice); its Maros clocks fall due half an hour after it at the earliest.
pub const DUE_KIND: Kind = Kind {
    sender: "maros-dinsos",
    recipient: "maros-uptd-ppa",
    service: "psychological_counselling",
    priority: Priority::Emergency,
};

/// Items [`DUE_KIND`] has due under the bench clock: the 50 % warning and escalation level 1.
pub const DUE_ITEMS: usize = 2;

/// The events of a whole life, in order, after the create.
const LIFE: [&str; 4] = ["received", "accepted", "started", "completed"];

/// Events per referral in [`Writer::lives`].
pub const LIFE_EVENTS: usize = LIFE.len() + 1;

/// A longer life, after the create, for the audit benchmarks (the issue's "about 8 events per
/// referral"): an appointment and a pause on the way.
pub const AUDIT_LIFE: [&str; 7] = [
    "received",
    "accepted",
    "scheduled",
    "started",
    "on_hold",
    "resumed",
    "completed",
];

/// Events per referral in [`Writer::audit_lives`].
pub const AUDIT_LIFE_EVENTS: usize = AUDIT_LIFE.len() + 1;

/// A message to publish, with the headers, message id and expected subject sequence
/// `Bus::append` sends.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
    pub message_id: Option<String>,
    pub expected_last_subject_seq: Option<u64>,
}

impl Prepared {
    fn into_message(self) -> (String, PublishMessage) {
        let mut message = PublishMessage::build()
            .payload(self.payload)
            .headers(self.headers);
        if let Some(id) = self.message_id {
            message = message.message_id(id);
        }
        if let Some(seq) = self.expected_last_subject_seq {
            message = message.expected_last_subject_sequence(seq);
        }
        (self.subject, message)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.as_str())
    }
}

/// Builds referral events as the agencies' adapters would.
pub struct Writer {
    registry: Arc<Registry>,
    /// `tag` keeps request ids (hence referral ids) apart between phases of one run.
    tag: String,
}

impl Writer {
    pub fn new(registry: Arc<Registry>, tag: &str) -> Writer {
        Writer {
            registry,
            tag: tag.to_owned(),
        }
    }

    fn policy_version(&self, at: Timestamp) -> Result<PolicyVersion, BenchError> {
        self.registry
            .policy_in_force(at)
            .map(|policy| policy.version.clone())
            .ok_or_else(|| BenchError::Setup(format!("no clock policy in force at {at}")))
    }

    /// The create of referral `index` of this writer's phase, decided at `at`.
    pub fn create(
        &self,
        kind: &Kind,
        index: usize,
        at: Timestamp,
    ) -> Result<(Prepared, Referral), BenchError> {
        let sender = agency(kind.sender)?;
        let creation = Creation {
            case_id: format!("MRS-2026-{index:07}")
                .parse()
                .map_err(|err| setup(format!("case id: {err}")))?,
            sender: sender.clone(),
            recipient: agency(kind.recipient)?,
            service: kind
                .service
                .parse()
                .map_err(|err| setup(format!("service: {err}")))?,
            priority: kind.priority,
            categories: vec![
                "domestic_violence"
                    .parse()
                    .map_err(|err| setup(format!("category: {err}")))?,
            ],
            child: false,
            consent: Consent {
                services: true,
                disclose_to_agencies: true,
                override_justification: None,
            },
            case_reported_at: None,
            identity: None,
            note: None,
            policy_version: self.policy_version(at)?,
            parent: None,
            sex: Default::default(),
            age_band: Default::default(),
        };
        self.decided(
            None,
            0,
            Command::Create(Box::new(creation)),
            &sender,
            index,
            at,
        )
    }

    /// What `command` by `agency` decides on `current` (at stream sequence `current_seq`), as
    /// the message that appends it.
    fn decided(
        &self,
        current: Option<&Referral>,
        current_seq: u64,
        command: Command,
        agency: &AgencyId,
        index: usize,
        at: Timestamp,
    ) -> Result<(Prepared, Referral), BenchError> {
        let step = current.map_or(1, |referral| referral.seq + 1);
        let request_id = RequestId::new(format!("bench-{}-{index}-{step}", self.tag))
            .map_err(|err| setup(err.to_string()))?;
        let request = Request {
            command,
            actor: Actor::Agency {
                agency: agency.clone(),
                system: None,
                operator: OperatorId::new(format!("operator@{agency}"))
                    .map_err(|err| setup(err.to_string()))?,
            },
            request_id: Some(request_id.clone()),
        };
        let event = decide(&self.registry, current, &request, at)
            .map_err(|rejection| setup(format!("the core refuses: {rejection}")))?
            .events
            .into_iter()
            .next()
            .ok_or_else(|| setup("the core decided no event".to_owned()))?;
        let after = evolve(current.cloned(), &event).map_err(|err| setup(err.to_string()))?;
        let subject = subjects::referral(after.recipient(), after.sender(), &after.id);
        let key = crate::signing_keys(&self.registry)
            .key(&refbus_core::signature::Signer::of(&event.actor));
        let record = EventRecord::new(event, &after, &subject, &key);
        let prepared = message(
            subject,
            &record,
            current_seq,
            refbus_bus::Idempotency::Request {
                agency,
                request_id: &request_id,
            }
            .message_id(),
        );
        Ok((prepared, after))
    }

    /// Creates for `indices`, each of `kind(index)` and decided at `at(index)`.
    pub fn creates(
        &self,
        indices: std::ops::Range<usize>,
        kind: impl Fn(usize) -> Kind,
        at: impl Fn(usize) -> Timestamp,
    ) -> Result<Vec<Prepared>, BenchError> {
        indices
            .map(|index| Ok(self.create(&kind(index), index, at(index))?.0))
            .collect()
    }

    /// `referrals` whole lives (created, received, accepted, started, completed; ten seconds
    /// apart, from `start`: a life spans 40 s, so stored within a minute or so of `start` every
    /// event stays within the record check's allowed skew), for a stream whose next sequence
    /// is `first_seq`. Referrals move
    /// `group` at a time, their events interleaved as many agencies' would be.
    pub fn lives(
        &self,
        referrals: usize,
        group: usize,
        start: Timestamp,
        first_seq: u64,
    ) -> Result<Vec<Prepared>, BenchError> {
        self.lives_of(&LIFE, 0..referrals, group, start, first_seq)
    }

    /// [`Writer::lives`] of [`AUDIT_LIFE`]: [`AUDIT_LIFE_EVENTS`] events each.
    pub fn audit_lives(
        &self,
        referrals: usize,
        group: usize,
        start: Timestamp,
        first_seq: u64,
    ) -> Result<Vec<Prepared>, BenchError> {
        self.lives_of(&AUDIT_LIFE, 0..referrals, group, start, first_seq)
    }

    /// [`Writer::audit_lives`] of `referrals`, built in the background on `threads` threads a
    /// hundred groups at a time and delivered in stream order ([`build_in_background`]), for a
    /// stream too large to hold in memory (a million lives are about 40 GB).
    pub fn audit_lives_in_background(
        self: Arc<Writer>,
        referrals: usize,
        group: usize,
        start: Timestamp,
        threads: usize,
    ) -> tokio::sync::mpsc::Receiver<Result<Vec<Prepared>, BenchError>> {
        let group = group.max(1);
        // Whole groups per chunk, so each chunk's lives are those of the one-piece build.
        build_in_background(referrals, 100 * group, threads, move |range| {
            let first_seq = 1 + (range.start * AUDIT_LIFE_EVENTS) as u64;
            self.lives_of(&AUDIT_LIFE, range, group, start, first_seq)
        })
    }

    /// The lives of the referrals numbered `referrals` (its start a multiple of `group`), the
    /// first of their messages landing at `first_seq`.
    fn lives_of(
        &self,
        life: &[&str],
        referrals: std::ops::Range<usize>,
        group: usize,
        start: Timestamp,
        first_seq: u64,
    ) -> Result<Vec<Prepared>, BenchError> {
        let mut out: Vec<Prepared> = Vec::with_capacity(referrals.len() * (life.len() + 1));
        let group = group.max(1);
        for first in referrals.clone().step_by(group) {
            let members = first..(first + group).min(referrals.end);
            // Each member's current state and the stream sequence it is at.
            let mut current = Vec::with_capacity(members.len());
            for index in members.clone() {
                let kind = MIX[index % MIX.len()];
                let (prepared, state) = self.create(&kind, index, start.plus(millis(index)))?;
                out.push(prepared);
                current.push((state, first_seq + out.len() as u64 - 1));
            }
            for (step, change) in life.iter().enumerate() {
                let minutes = Duration::from_secs(10 * (step as u64 + 1));
                for (offset, index) in members.clone().enumerate() {
                    let (state, seq) = &current[offset];
                    let recipient = state.recipient().clone();
                    let at = start.plus(minutes + millis(index));
                    let command = self.life_command(change, at)?;
                    let (prepared, after) =
                        self.decided(Some(state), *seq, command, &recipient, index, at)?;
                    out.push(prepared);
                    current[offset] = (after, first_seq + out.len() as u64 - 1);
                }
            }
        }
        Ok(out)
    }
}

impl Writer {
    /// The command of one step of a life, made at `at`.
    fn life_command(&self, change: &str, at: Timestamp) -> Result<Command, BenchError> {
        Ok(match change {
            "received" => Command::ConfirmReceipt,
            "accepted" => Command::Accept,
            "scheduled" => Command::ScheduleAppointment {
                at: at.plus(Duration::from_secs(24 * 3600)),
                note: None,
            },
            "started" => Command::Start,
            "on_hold" => Command::PutOnHold {
                reason: refbus_core::referral::Reason {
                    code: self
                        .registry
                        .reasons
                        .keys()
                        .next()
                        .cloned()
                        .ok_or_else(|| setup("the registry has no reason code".to_owned()))?,
                    note: None,
                },
            },
            "resumed" => Command::Resume,
            _ => Command::Complete {
                outcome: Outcome {
                    code: "service_provided"
                        .parse()
                        .map_err(|err| setup(format!("outcome: {err}")))?,
                    note: None,
                },
            },
        })
    }
}

fn millis(index: usize) -> Duration {
    Duration::from_millis(index as u64 % 1000)
}

fn setup(message: String) -> BenchError {
    BenchError::Setup(message)
}

fn agency(id: &str) -> Result<AgencyId, BenchError> {
    AgencyId::new(id).map_err(|err| setup(format!("agency {id}: {err}")))
}

/// The message `Bus::append` sends for `record` (same payload, headers, id and expectation).
fn message(
    subject: String,
    record: &EventRecord,
    expected_last_seq: u64,
    message_id: String,
) -> Prepared {
    let mut headers = HeaderMap::new();
    headers::insert_cloudevent(&mut headers, &record.event);
    headers::inject_trace_context(&mut headers);
    headers.insert(headers::KIND, "event");
    headers.insert(headers::PREV_SEQ, expected_last_seq.to_string().as_str());
    Prepared {
        subject,
        headers,
        payload: record.encode(),
        message_id: Some(message_id),
        expected_last_subject_seq: Some(expected_last_seq),
    }
}

/// Builds messages in the background, `chunk` at a time, on `threads` threads, while the caller
/// publishes the chunks already built; `build(range)` builds the messages for `range`. Chunks
/// arrive in order (lives name their predecessors' planned sequences), at most two per thread
/// built ahead.
pub fn build_in_background<F>(
    total: usize,
    chunk: usize,
    threads: usize,
    build: F,
) -> tokio::sync::mpsc::Receiver<Result<Vec<Prepared>, BenchError>>
where
    F: Fn(std::ops::Range<usize>) -> Result<Vec<Prepared>, BenchError> + Send + Sync + 'static,
{
    let threads = threads.max(1);
    let chunk = chunk.max(1);
    let (chunks, received) = tokio::sync::mpsc::channel(threads * 2);
    let build = Arc::new(build);
    // Thread `t` builds chunks t, t + threads, t + 2 threads...; the merger takes chunk k from
    // thread k % threads, so they come out in order.
    let mut built = Vec::with_capacity(threads);
    for thread in 0..threads {
        let (sender, receiver) = std::sync::mpsc::sync_channel(2);
        built.push(receiver);
        let build = build.clone();
        std::thread::spawn(move || {
            let mut start = thread * chunk;
            while start < total {
                let messages = build(start..(start + chunk).min(total));
                let failed = messages.is_err();
                if sender.send(messages).is_err() || failed {
                    return;
                }
                start += threads * chunk;
            }
        });
    }
    std::thread::spawn(move || {
        for k in 0.. {
            if k * chunk >= total {
                return;
            }
            let Ok(messages) = built[k % threads].recv() else {
                return;
            };
            let failed = messages.is_err();
            if chunks.blocking_send(messages).is_err() || failed {
                return;
            }
        }
    });
    received
}

/// Publishes messages in order, up to `window` acknowledgements outstanding (awaiting the
/// oldest when the window is full), checking each acknowledgement.
pub struct Publisher<'a> {
    js: &'a jetstream::Context,
    window: usize,
    /// Message `k` must land at `first_seq + k`; `None`: anywhere, once.
    first_seq: Option<u64>,
    sent: usize,
    pending: VecDeque<(usize, jetstream::context::PublishAckFuture)>,
}

impl<'a> Publisher<'a> {
    pub fn new(js: &'a jetstream::Context, window: usize, first_seq: Option<u64>) -> Publisher<'a> {
        Publisher {
            js,
            window: window.max(1),
            first_seq,
            sent: 0,
            pending: VecDeque::with_capacity(window.max(1)),
        }
    }

    pub async fn publish(&mut self, prepared: Prepared) -> Result<(), BenchError> {
        let (subject, message) = prepared.into_message();
        let ack = self
            .js
            .send_publish(subject, message)
            .await
            .map_err(|err| BenchError::Nats(err.to_string()))?;
        self.pending.push_back((self.sent, ack));
        self.sent += 1;
        if self.pending.len() >= self.window
            && let Some((index, oldest)) = self.pending.pop_front()
        {
            check(index, oldest.await, self.first_seq)?;
        }
        Ok(())
    }

    /// Waits for every outstanding acknowledgement; returns how many messages were published.
    pub async fn finish(mut self) -> Result<usize, BenchError> {
        while let Some((index, ack)) = self.pending.pop_front() {
            check(index, ack.await, self.first_seq)?;
        }
        Ok(self.sent)
    }
}

/// Publishes `messages` in order (see [`Publisher`]); returns the time from the first publish
/// to the last acknowledgement.
pub async fn publish_planned(
    js: &jetstream::Context,
    messages: Vec<Prepared>,
    window: usize,
    first_seq: Option<u64>,
) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let mut publisher = Publisher::new(js, window, first_seq);
    for prepared in messages {
        publisher.publish(prepared).await?;
    }
    publisher.finish().await?;
    Ok(started.elapsed())
}

/// Publishes `messages` in order at a steady `rate` a second (open loop, [`crate::pace::Pacer`]),
/// with up to `window` acknowledgements outstanding; returns the time from the first publish to
/// the last acknowledgement.
pub async fn publish_paced(
    js: &jetstream::Context,
    messages: Vec<Prepared>,
    window: usize,
    rate: u32,
) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let mut publisher = Publisher::new(js, window, None);
    let mut pacer = crate::pace::Pacer::new(rate);
    for prepared in messages {
        pacer.tick().await;
        publisher.publish(prepared).await?;
    }
    publisher.finish().await?;
    Ok(started.elapsed())
}

/// Publishes every chunk [`build_in_background`] builds, as they come; returns how many were
/// published and the time from the start to the last acknowledgement.
pub async fn publish_chunks(
    js: &jetstream::Context,
    mut chunks: tokio::sync::mpsc::Receiver<Result<Vec<Prepared>, BenchError>>,
    window: usize,
) -> Result<(usize, Duration), BenchError> {
    let started = Instant::now();
    let mut publisher = Publisher::new(js, window, None);
    while let Some(chunk) = chunks.recv().await {
        for prepared in chunk? {
            publisher.publish(prepared).await?;
        }
    }
    let sent = publisher.finish().await?;
    Ok((sent, started.elapsed()))
}

fn check(
    index: usize,
    ack: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    first_seq: Option<u64>,
) -> Result<(), BenchError> {
    let ack = ack.map_err(|err| BenchError::Nats(format!("message {index}: {err}")))?;
    if ack.duplicate {
        return Err(BenchError::Nats(format!(
            "message {index} was a duplicate: the stream was not fresh"
        )));
    }
    if let Some(first) = first_seq
        && ack.sequence != first + index as u64
    {
        return Err(BenchError::Nats(format!(
            "message {index} landed at sequence {} instead of {}",
            ack.sequence,
            first + index as u64
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maros() -> Arc<Registry> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/config/refbus.toml");
        Arc::new(refbus_config::load(path).unwrap())
    }

    fn prev(prepared: &Prepared) -> &str {
        prepared.header(headers::PREV_SEQ).unwrap_or_default()
    }

    #[test]
    fn every_kind_is_allowed_and_lives_name_their_planned_predecessors() {
        let writer = Writer::new(maros(), "t");
        let start = Timestamp::parse_rfc3339("2026-03-02T09:00:00+08:00").unwrap();
        let lives = writer.lives(MIX.len() + 2, 4, start, 10).unwrap();
        assert_eq!(lives.len(), (MIX.len() + 2) * LIFE_EVENTS);
        // The first group: 4 creates at 10..=13, then their receipts name them.
        assert_eq!(prev(&lives[0]), "0");
        assert_eq!(prev(&lives[4]), "10");
        assert_eq!(prev(&lives[5]), "11");
        // Their acceptances name the receipts.
        assert_eq!(prev(&lives[8]), "14");
        assert_eq!(lives[8].expected_last_subject_seq, Some(14));
        assert_eq!(lives[0].subject, lives[4].subject);
        let decoded = EventRecord::decode(&lives[19].payload).unwrap();
        assert!(decoded.state.status.is_terminal());
    }

    #[test]
    fn audit_lives_have_eight_events_each_and_end_completed() {
        let writer = Writer::new(maros(), "t");
        let start = Timestamp::parse_rfc3339("2026-03-02T09:00:00+08:00").unwrap();
        let lives = writer.audit_lives(3, 2, start, 1).unwrap();
        assert_eq!(AUDIT_LIFE_EVENTS, 8);
        assert_eq!(lives.len(), 3 * AUDIT_LIFE_EVENTS);
        let last = EventRecord::decode(&lives[lives.len() - 1].payload).unwrap();
        assert_eq!(last.event.seq, 8);
        assert!(last.state.status.is_terminal());
    }

    #[test]
    fn lives_built_in_the_background_are_the_one_piece_build_in_order() {
        let start = Timestamp::parse_rfc3339("2026-03-02T09:00:00+08:00").unwrap();
        let whole = Writer::new(maros(), "t")
            .audit_lives(450, 2, start, 1)
            .unwrap();
        // Chunks of 200 referrals on three threads: 200, 200 and 50.
        let mut chunks =
            Arc::new(Writer::new(maros(), "t")).audit_lives_in_background(450, 2, start, 3);
        let mut built = Vec::new();
        while let Some(chunk) = chunks.blocking_recv() {
            built.extend(chunk.unwrap());
        }
        assert_eq!(built.len(), whole.len());
        for (built, whole) in built.iter().zip(&whole) {
            assert_eq!(built.subject, whole.subject);
            assert_eq!(
                built.expected_last_subject_seq,
                whole.expected_last_subject_seq
            );
            assert_eq!(built.payload, whole.payload);
        }
    }

    /// The Maros registry with the bench clock, as `bench clocks` writes it.
    fn with_due_clock() -> Arc<Registry> {
        let maros = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/config/refbus.toml");
        let dir = std::env::temp_dir().join(format!("refbus-bench-config-{}", std::process::id()));
        let path = crate::clocks::bench_config(&maros, &dir).unwrap();
        let registry = refbus_config::load(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        Arc::new(registry)
    }

    #[test]
    fn the_due_kind_has_two_items_due_under_the_bench_clock_and_the_mix_none_soon() {
        let registry = with_due_clock();
        let writer = Writer::new(registry.clone(), "t");
        let start = Timestamp::parse_rfc3339("2026-03-02T09:00:00+08:00").unwrap();
        let (_, state) = writer.create(&DUE_KIND, 0, start).unwrap();
        let due = start.plus(crate::clocks::DUE_AFTER);
        let before = refbus_core::evaluate(&state, &registry, due.minus(Duration::from_millis(1)));
        assert!(before.due.is_empty());
        assert_eq!(before.next_wake, Some(due));
        let at = refbus_core::evaluate(&state, &registry, due);
        assert_eq!(at.due.len(), DUE_ITEMS);
        assert!(at.due.iter().all(|item| item.due_at() == due));
        // The bench clock touches none of the open referrals: their first items come half an
        // hour after their creation at the earliest, so none falls due during a run.
        for (index, kind) in MIX.iter().enumerate() {
            let (_, state) = writer.create(kind, index + 1, start).unwrap();
            let wake = refbus_core::evaluate(&state, &registry, start).next_wake;
            assert!(
                wake.is_some_and(|wake| wake >= start.plus(Duration::from_secs(1800))),
                "{kind:?}: {wake:?}"
            );
        }
    }
}
