//! Which referrals changed after a point in the stream: what a router that restarts from its
//! snapshot of timers (taken at that point) must read again.

use std::collections::HashSet;

use async_nats::jetstream::consumer::DeliverPolicy;
use futures::StreamExt;

use crate::{Bus, ReadError, ReadErrorKind, ordered_config};

impl Bus {
    /// The distinct subjects matching `filters` of every message stored after stream sequence
    /// `after`, as the stream holds them now, in first-seen order. Reads headers only.
    pub async fn subjects_after(
        &self,
        after: u64,
        filters: Vec<String>,
    ) -> Result<Vec<String>, ReadError> {
        let mut config = ordered_config(
            filters,
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
        let mut seen = HashSet::new();
        let mut subjects = Vec::new();
        while let Some(message) = messages.next().await {
            let message =
                message.map_err(|err| ReadError::with_source(ReadErrorKind::Unavailable, err))?;
            let subject = message.subject.as_str();
            if !seen.contains(subject) {
                seen.insert(subject.to_owned());
                subjects.push(subject.to_owned());
            }
        }
        Ok(subjects)
    }
}
