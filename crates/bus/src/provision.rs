//! Stream provisioning: create the refbus stream if missing, check it if present. Safe to run
//! at every start of every component (idempotent).

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::error::{ConnectError, ConnectErrorKind};
use crate::subjects;

/// How the events stream is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// The JetStream stream holding every referral event and notice.
    pub name: String,
    /// How long a request id is remembered by the bus: a retry within this window is answered
    /// from the original, without touching the referral (creates are idempotent forever
    /// anyway: a referral's id derives from its request id).
    pub duplicate_window: Duration,
    /// 1 on a single server; 3 on a production cluster.
    pub replicas: usize,
    /// Refuse messages above this size (the adapter refuses larger requests before that).
    pub max_message_bytes: i32,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            name: "REFBUS_EVENTS".to_owned(),
            duplicate_window: Duration::from_secs(7 * 24 * 3600),
            replicas: 1,
            max_message_bytes: 1024 * 1024,
        }
    }
}

impl StreamSettings {
    fn config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            description: Some(
                "refbus: every referral event and escalation notice, kept forever".to_owned(),
            ),
            subjects: vec![
                subjects::ALL_REFERRALS.to_owned(),
                subjects::ALL_NOTICES.to_owned(),
            ],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            // If a limit is ever set on this stream, refuse new events rather than silently
            // dropping old ones: losing history is worse than refusing a write.
            discard: stream::DiscardPolicy::New,
            deny_delete: true,
            deny_purge: true,
            allow_direct: true,
            duplicate_window: self.duplicate_window,
            num_replicas: self.replicas,
            max_message_size: self.max_message_bytes,
            ..Default::default()
        }
    }
}

/// Creates the events stream, or checks that the existing one keeps events safe.
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<stream::Stream, ConnectError> {
    let wanted = settings.config();
    let mut stream = js
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|err| ConnectError::with_source(ConnectErrorKind::Provision, err))?;
    let info = stream
        .info()
        .await
        .map_err(|err| ConnectError::with_source(ConnectErrorKind::Provision, err))?;
    let existing = &info.config;
    let mut problems = Vec::new();
    if !existing.deny_delete || !existing.deny_purge {
        problems.push("it allows deleting or purging events");
    }
    if existing.discard != stream::DiscardPolicy::New {
        problems.push("it may discard old events");
    }
    for subject in &wanted.subjects {
        if !existing.subjects.contains(subject) {
            problems.push("it does not hold every refbus subject");
        }
    }
    if !problems.is_empty() {
        return Err(ConnectError::with_source(
            ConnectErrorKind::Misconfigured,
            format!("stream {}: {}", settings.name, problems.join("; ")),
        ));
    }
    if !existing.allow_direct || existing.duplicate_window != wanted.duplicate_window {
        // Settings that can change safely follow the configuration.
        let mut updated = existing.clone();
        updated.allow_direct = true;
        updated.duplicate_window = wanted.duplicate_window;
        js.update_stream(updated)
            .await
            .map_err(|err| ConnectError::with_source(ConnectErrorKind::Provision, err))?;
    }
    Ok(stream)
}
