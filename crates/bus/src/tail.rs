//! Which referrals changed after a point in the stream: what a router that restarts from its
//! snapshot of timers (taken at that point), or takes a partition over, must read again.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use futures::StreamExt;

use crate::{Bus, READ_TIMEOUT, ReadError, ReadErrorKind, ordered_config, subjects};

impl Bus {
    /// The distinct referral subjects of every message stored after stream sequence `after`,
    /// up to the stream's last message when called, in first-seen order. Reads headers only.
    ///
    /// Complete or `Unavailable`, never short: the stream's last sequence is asked first (the
    /// stream's leader answers it), and the read, whose consumer may live on a replica that
    /// has not applied the newest writes yet, must reach it; a read that stops short is tried
    /// again (backing off from 10 ms) until [`READ_TIMEOUT`]. A short list would leave out a
    /// referral whose creation the durable consumer has already acknowledged for another
    /// router: its clocks would never be set (docs/RELIABILITY.md, long run #2).
    pub async fn referral_subjects_after(&self, after: u64) -> Result<Vec<String>, ReadError> {
        let through = self.last_sequence().await?;
        self.referral_subjects_between(after, through).await
    }

    /// [`Bus::referral_subjects_after`] of the messages after `after` up to `through`, which
    /// the read must reach.
    pub async fn referral_subjects_between(
        &self,
        after: u64,
        through: u64,
    ) -> Result<Vec<String>, ReadError> {
        if through <= after {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
        let mut pause = Duration::from_millis(10);
        loop {
            let (subjects, reached) = self.subjects_read(after).await?;
            if reached >= through {
                return Ok(subjects);
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(ReadError::with_source(
                    ReadErrorKind::Unavailable,
                    format!(
                        "the stream holds messages up to sequence {through}, but the replica that \
                         answered the read has them only up to {reached}"
                    ),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// One read of every message after `after` that the answering replica holds: the referral
    /// subjects among them, and the last stream sequence read (`after` if none).
    async fn subjects_read(&self, after: u64) -> Result<(Vec<String>, u64), ReadError> {
        let mut config = ordered_config(
            Vec::new(),
            DeliverPolicy::ByStartSequence {
                start_sequence: after.saturating_add(1),
            },
        );
        config.headers_only = true;
        let consumer = self
            .stream
            .create_consumer(config)
            .await
            .map_err(|err| ReadError::with_source(ReadErrorKind::Unavailable, err))?;
        let total = usize::try_from(consumer.cached_info().num_pending).unwrap_or(usize::MAX);
        let mut messages = consumer
            .messages()
            .await
            .map_err(|err| ReadError::with_source(ReadErrorKind::Unavailable, err))?
            .take(total);
        let mut listed = HashSet::new();
        let mut found = Vec::new();
        let mut reached = after;
        while let Some(message) = messages.next().await {
            let message =
                message.map_err(|err| ReadError::with_source(ReadErrorKind::Unavailable, err))?;
            let subject = message.subject.as_str();
            let is_referral = subject.starts_with(subjects::REFERRAL_PREFIX);
            if let Ok(info) = message.info() {
                reached = reached.max(info.stream_sequence);
                // The reads of these referrals that follow (a router's catch-up) must not be
                // answered from less by a replica behind (see `seen`).
                if is_referral {
                    self.seen.record(subject, info.stream_sequence);
                }
            }
            // Every referral subject (`refbus.v1.ref.>`), malformed ones included: the reader
            // checks each one it reads.
            if is_referral && !listed.contains(subject) {
                listed.insert(subject.to_owned());
                found.push(subject.to_owned());
            }
        }
        Ok((found, reached))
    }
}
