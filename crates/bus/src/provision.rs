//! Stream provisioning: create the refbus stream if missing, check all of it if present. Safe to
//! run at every start of every component (idempotent).
//!
//! The stream is the only copy of every referral's history, so a component runs only on the
//! stream as configured. Every setting that can lose, age out or alter events (limits, storage,
//! replicas, retention, discard, the deny flags, per-message TTLs, rollups, ...) is checked and a
//! difference refuses the start, naming each one: refbus never changes those itself, because the
//! operator must know why the stream differs before anything is done about it. Settings that
//! cannot lose anything (the duplicate window, direct reads, the largest message) follow the
//! configuration in place, as they always did.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, stream};

use refbus_core::signature::SigningKey;

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
    /// 1 on a single server; 3 on a production cluster. An existing stream with another number
    /// is refused, not changed.
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

/// JetStream's "no limit".
const UNLIMITED: i64 = -1;

impl StreamSettings {
    fn config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            description: Some(
                "refbus: every referral event and escalation notice, kept forever".to_owned(),
            ),
            subjects: wanted_subjects(),
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            // Said explicitly (the server's default is the same) so the created stream and the
            // check below read the same numbers.
            max_age: Duration::ZERO,
            max_messages: UNLIMITED,
            max_messages_per_subject: UNLIMITED,
            max_bytes: UNLIMITED,
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

fn wanted_subjects() -> Vec<String> {
    vec![
        subjects::ALL_REFERRALS.to_owned(),
        subjects::ALL_NOTICES.to_owned(),
        subjects::ALL_INDEXES.to_owned(),
    ]
}

/// What refbus does about one setting that differs from its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// The setting can lose, age out or alter events: refbus does not start.
    Refuse,
    /// The setting is safe to change: refbus updates the stream.
    Update,
}

/// One setting of the existing stream that differs from what refbus needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Difference {
    pub(crate) field: &'static str,
    pub(crate) action: Action,
    /// "`field` is X, refbus needs Y (why)".
    pub(crate) text: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Every difference between the existing stream's configuration and the one `settings` asks
/// for, refused ones first, in a fixed order. Pure: the start-up check and its tests share it.
pub(crate) fn differences(existing: &stream::Config, settings: &StreamSettings) -> Vec<Difference> {
    let mut found = Vec::new();
    let mut refuse = |field: &'static str, text: String| {
        found.push(Difference {
            field,
            action: Action::Refuse,
            text,
        });
    };

    // Limits: any of them ages out or drops events.
    if existing.max_age != Duration::ZERO {
        refuse(
            "max_age",
            format!(
                "max_age is {:?}, refbus needs 0 (no age limit: events are kept forever)",
                existing.max_age
            ),
        );
    }
    for (field, value, why) in [
        (
            "max_msgs",
            existing.max_messages,
            "unlimited: no event is ever dropped or refused for space",
        ),
        (
            "max_msgs_per_subject",
            existing.max_messages_per_subject,
            "unlimited: every event of a referral is kept",
        ),
        (
            "max_bytes",
            existing.max_bytes,
            "unlimited: no event is ever dropped or refused for space",
        ),
    ] {
        if value != UNLIMITED {
            refuse(
                field,
                format!("{field} is {value}, refbus needs -1 ({why})"),
            );
        }
    }
    if existing.allow_message_ttl {
        refuse(
            "allow_msg_ttl",
            "allow_msg_ttl is true, refbus needs false (no event may carry its own expiry)"
                .to_owned(),
        );
    }
    if let Some(ttl) = existing.subject_delete_marker_ttl {
        refuse(
            "subject_delete_marker_ttl",
            format!(
                "subject_delete_marker_ttl is {ttl:?}, refbus needs none (events are never \
                 removed, so nothing needs a marker)"
            ),
        );
    }
    if existing.discard != stream::DiscardPolicy::New {
        refuse(
            "discard",
            "discard is old, refbus needs new (were a limit ever reached, refuse new events \
             rather than drop old ones)"
                .to_owned(),
        );
    }
    for (field, value) in [
        ("deny_delete", existing.deny_delete),
        ("deny_purge", existing.deny_purge),
    ] {
        if !value {
            refuse(
                field,
                format!("{field} is false, refbus needs true (nobody removes an event)"),
            );
        }
    }
    if existing.allow_rollup {
        refuse(
            "allow_rollup_hdrs",
            "allow_rollup_hdrs is true, refbus needs false (a rollup message deletes a \
             referral's earlier events)"
                .to_owned(),
        );
    }

    // Where and how events are kept.
    if existing.storage != stream::StorageType::File {
        refuse(
            "storage",
            "storage is memory, refbus needs file (events survive a server restart)".to_owned(),
        );
    }
    if existing.retention != stream::RetentionPolicy::Limits {
        let retention = match existing.retention {
            stream::RetentionPolicy::Interest => "interest",
            stream::RetentionPolicy::WorkQueue => "workqueue",
            stream::RetentionPolicy::Limits => "limits",
        };
        refuse(
            "retention",
            format!(
                "retention is {retention}, refbus needs limits (an event is kept once consumed)"
            ),
        );
    }
    if existing.num_replicas != settings.replicas {
        refuse(
            "replicas",
            format!(
                "replicas is {}, the configuration says {}",
                existing.num_replicas, settings.replicas
            ),
        );
    }
    if existing.persist_mode == Some(stream::PersistenceMode::Async) {
        refuse(
            "persist_mode",
            "persist_mode is async, refbus needs default (an acknowledged event is already \
             stored)"
                .to_owned(),
        );
    }
    if existing.no_ack {
        refuse(
            "no_ack",
            "no_ack is true, refbus needs false (an append returns only once JetStream \
             acknowledged it)"
                .to_owned(),
        );
    }
    if existing.sealed {
        refuse(
            "sealed",
            "sealed is true, refbus needs false (events must be appended)".to_owned(),
        );
    }

    // What goes in.
    let mut have = existing.subjects.clone();
    have.sort();
    let mut want = wanted_subjects();
    want.sort();
    // A stream made before the index existed lacks only its subjects: adding them loses
    // nothing (see `Action::Update` below).
    let only_index_missing = have.iter().all(|subject| want.contains(subject))
        && want
            .iter()
            .all(|subject| have.contains(subject) || subject == subjects::ALL_INDEXES);
    if have != want && !only_index_missing {
        refuse(
            "subjects",
            format!(
                "subjects are [{}], refbus needs [{}] (every refbus subject, nothing else)",
                have.join(", "),
                want.join(", ")
            ),
        );
    }
    if existing.mirror.is_some() || existing.sources.as_ref().is_some_and(|s| !s.is_empty()) {
        refuse(
            "mirror",
            "the stream mirrors or sources another stream, refbus needs neither (events come \
             only from refbus appends)"
                .to_owned(),
        );
    }
    if existing.subject_transform.is_some() {
        refuse(
            "subject_transform",
            "subject_transform is set, refbus needs none (a referral's subject is its identity)"
                .to_owned(),
        );
    }

    // Safe to change: they follow the configuration.
    let mut update = |field: &'static str, text: String| {
        found.push(Difference {
            field,
            action: Action::Update,
            text,
        });
    };
    if have != want && only_index_missing {
        update(
            "subjects",
            format!(
                "subjects are [{}], refbus adds {} (its creation index)",
                have.join(", "),
                subjects::ALL_INDEXES
            ),
        );
    }
    if existing.duplicate_window != settings.duplicate_window {
        update(
            "duplicate_window",
            format!(
                "duplicate_window is {:?}, the configuration says {:?}",
                existing.duplicate_window, settings.duplicate_window
            ),
        );
    }
    if !existing.allow_direct {
        update(
            "allow_direct",
            "allow_direct is false, refbus needs true (states are read directly)".to_owned(),
        );
    }
    if existing.max_message_size != settings.max_message_bytes {
        update(
            "max_msg_size",
            format!(
                "max_msg_size is {}, the configuration says {}",
                existing.max_message_size, settings.max_message_bytes
            ),
        );
    }
    found
}

/// The refusal for `found`'s refused differences, or `None` if there are none.
fn refusal(name: &str, found: &[Difference]) -> Option<String> {
    let refused = refused_texts(found);
    if refused.is_empty() {
        return None;
    }
    Some(format!(
        "stream {name}: {}. refbus changes none of these itself, since each can lose or alter \
         events: find out why the stream differs, then correct it (nats stream edit {name}, \
         where the server allows) or the configuration",
        refused.join("; ")
    ))
}

/// Each difference between `existing` and `settings` that refuses a start, as its refusal
/// names it (what the router's statement for the adapters lists).
pub(crate) fn refused(existing: &stream::Config, settings: &StreamSettings) -> Vec<String> {
    refused_texts(&differences(existing, settings))
}

fn refused_texts(found: &[Difference]) -> Vec<String> {
    found
        .iter()
        .filter(|difference| difference.action == Action::Refuse)
        .map(ToString::to_string)
        .collect()
}

/// Creates the events stream if it is missing, or checks every setting of the existing one:
/// refuses to run on a stream that could lose events, and updates the settings that are safe to
/// change. With `attest` (the router's key), the verdict is also stored, signed, for the
/// adapters ([`statement`](crate::statement)), a refusal included.
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
    attest: Option<&SigningKey>,
) -> Result<stream::Stream, ConnectError> {
    let provision = |err: Box<dyn std::error::Error + Send + Sync>| {
        ConnectError::with_source(ConnectErrorKind::Provision, err)
    };
    // Get, then create only if missing: `get_or_create_stream` would hand back an existing
    // stream as it is, and the check below must see it.
    let stream = match get_stream_riding_through(js, &settings.name).await {
        Ok(stream) => stream,
        Err(err) if is_stream_not_found(&err.kind()) => {
            match create_stream_riding_through(js, settings).await {
                Ok(stream) => stream,
                // Another component may have created it meanwhile (with other settings, or the
                // server would have answered as for an identical create): check that one.
                Err(create) => js
                    .get_stream(&settings.name)
                    .await
                    .map_err(|_| ConnectError::with_source(ConnectErrorKind::Provision, create))?,
            }
        }
        Err(err) => return Err(provision(Box::new(err))),
    };
    let existing = &stream.cached_info().config;
    let found = differences(existing, settings);
    if let Some(key) = attest {
        // Before anything else is done about the verdict: an adapter starting next reads it.
        // Boxed: only the router takes this path, and every other caller's start-up future
        // would otherwise carry its size.
        let recorded = Box::pin(crate::statement::record(
            js,
            settings,
            key,
            refused_texts(&found),
        ));
        if let Err(err) = recorded.await {
            tracing::error!(
                stream = %settings.name,
                error = %err,
                "could not store the router's statement on the stream for the adapters: adapters \
                 starting now see an older one, or none and refuse; the router tries again at \
                 its next check"
            );
        }
    }
    if let Some(message) = refusal(&settings.name, &found) {
        return Err(ConnectError::with_source(
            ConnectErrorKind::Misconfigured,
            message,
        ));
    }
    if found.is_empty() {
        return Ok(stream);
    }
    // Only safe settings differ: they follow the configuration.
    let mut updated = existing.clone();
    updated.duplicate_window = settings.duplicate_window;
    updated.allow_direct = true;
    updated.max_message_size = settings.max_message_bytes;
    updated.subjects = wanted_subjects();
    js.update_stream(updated)
        .await
        .map_err(|err| provision(Box::new(err)))?;
    tracing::info!(
        stream = %settings.name,
        changes = %found.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        "updated the stream's settings to the configuration"
    );
    js.get_stream(&settings.name)
        .await
        .map_err(|err| provision(Box::new(err)))
}

/// How many times a component starting asks for the stream when the request times out: a
/// cluster electing its JetStream meta leader (a node just restarted, a busy machine) answers
/// nothing for a few seconds, which is no reason to refuse to start.
const GET_STREAM_ATTEMPTS: u32 = 4;

/// `get_stream`, asked again after a timeout, [`GET_STREAM_ATTEMPTS`] times in all; any other
/// answer (the stream, "not found", a refusal) at once.
async fn get_stream_riding_through(
    js: &jetstream::Context,
    name: &str,
) -> Result<stream::Stream, jetstream::context::GetStreamError> {
    asked_again(
        name,
        GET_STREAM_ATTEMPTS,
        timed_out,
        "asking for the stream timed out (a cluster electing its leader?); asking again",
        || js.get_stream(name),
    )
    .await
}

/// How many times the stream's creation is asked for while the cluster has too few peers
/// online to place its replicas: a cluster starting, or a node restarting, places nothing for
/// a few seconds (JetStream error 10005, "no suitable peers for placement").
const CREATE_STREAM_ATTEMPTS: u32 = 12;

/// `create_stream`, asked again while the cluster has too few peers online to place the
/// stream's replicas, [`CREATE_STREAM_ATTEMPTS`] times in all (about 20 s); any other answer
/// at once.
async fn create_stream_riding_through(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<stream::Stream, jetstream::context::CreateStreamError> {
    asked_again(
        &settings.name,
        CREATE_STREAM_ATTEMPTS,
        too_few_peers,
        "the cluster has too few peers online to place the stream's replicas (a node \
         starting?); asking again",
        || js.create_stream(settings.config()),
    )
    .await
}

/// `request`, made again while its error is one a settling cluster gives (`settling`), up to
/// `attempts` requests in all, each wait logged with `why`: 0.5, 1 and 1.5 s, then 2 s each.
async fn asked_again<T, E, F>(
    stream: &str,
    attempts: u32,
    settling: fn(&E) -> bool,
    why: &str,
    mut request: impl FnMut() -> F,
) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match request().await {
            Err(err) if settling(&err) && attempt < attempts => {
                tracing::warn!(stream, attempt, "{why}");
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt.min(4)))).await;
                attempt += 1;
            }
            answer => return answer,
        }
    }
}

fn too_few_peers(err: &jetstream::context::CreateStreamError) -> bool {
    matches!(
        err.kind(),
        jetstream::context::CreateStreamErrorKind::JetStream(error)
            if error.error_code() == jetstream::ErrorCode::CLUSTER_NO_PEERS
    )
}

/// Whether the request for the stream went unanswered (not refused, not "no responders").
fn timed_out(err: &jetstream::context::GetStreamError) -> bool {
    use jetstream::context::{RequestError, RequestErrorKind};
    use std::error::Error as _;
    matches!(err.kind(), GetStreamErrorKind::Request)
        && err
            .source()
            .and_then(|source| source.downcast_ref::<RequestError>())
            .is_some_and(|request| request.kind() == RequestErrorKind::TimedOut)
}

fn is_stream_not_found(kind: &GetStreamErrorKind) -> bool {
    matches!(
        kind,
        GetStreamErrorKind::JetStream(error)
            if error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unanswered_request_for_the_stream_is_asked_again() {
        use jetstream::context::{GetStreamError, RequestError, RequestErrorKind};
        let request = |kind| {
            GetStreamError::with_source(GetStreamErrorKind::Request, RequestError::new(kind))
        };
        assert!(timed_out(&request(RequestErrorKind::TimedOut)));
        // No JetStream at all, or a refusal: a clear error at once.
        assert!(!timed_out(&request(RequestErrorKind::NoResponders)));
        assert!(!timed_out(&request(RequestErrorKind::Other)));
        assert!(!timed_out(&GetStreamError::new(
            GetStreamErrorKind::EmptyName
        )));
    }

    fn fields(found: &[Difference]) -> Vec<(&'static str, Action)> {
        found.iter().map(|d| (d.field, d.action)).collect()
    }

    #[test]
    fn the_stream_refbus_creates_has_no_difference() {
        let settings = StreamSettings::default();
        assert_eq!(differences(&settings.config(), &settings), vec![]);
    }

    #[test]
    fn every_setting_that_can_lose_events_is_refused_and_named() {
        let settings = StreamSettings {
            replicas: 3,
            ..StreamSettings::default()
        };
        let existing = stream::Config {
            name: settings.name.clone(),
            subjects: vec![subjects::ALL_REFERRALS.to_owned(), "other.>".to_owned()],
            max_age: Duration::from_secs(3600),
            max_messages: 1_000,
            max_messages_per_subject: 1,
            max_bytes: 1 << 30,
            allow_message_ttl: true,
            subject_delete_marker_ttl: Some(Duration::from_secs(60)),
            discard: stream::DiscardPolicy::Old,
            deny_delete: false,
            deny_purge: false,
            allow_rollup: true,
            storage: stream::StorageType::Memory,
            retention: stream::RetentionPolicy::Interest,
            num_replicas: 1,
            persist_mode: Some(stream::PersistenceMode::Async),
            no_ack: true,
            sealed: true,
            mirror: Some(stream::Source {
                name: "ELSEWHERE".to_owned(),
                ..Default::default()
            }),
            subject_transform: Some(stream::SubjectTransform {
                source: ">".to_owned(),
                destination: "x.>".to_owned(),
            }),
            allow_direct: true,
            duplicate_window: settings.duplicate_window,
            max_message_size: settings.max_message_bytes,
            ..Default::default()
        };
        let found = differences(&existing, &settings);
        let refused: Vec<&str> = found
            .iter()
            .filter(|d| d.action == Action::Refuse)
            .map(|d| d.field)
            .collect();
        assert_eq!(
            refused,
            vec![
                "max_age",
                "max_msgs",
                "max_msgs_per_subject",
                "max_bytes",
                "allow_msg_ttl",
                "subject_delete_marker_ttl",
                "discard",
                "deny_delete",
                "deny_purge",
                "allow_rollup_hdrs",
                "storage",
                "retention",
                "replicas",
                "persist_mode",
                "no_ack",
                "sealed",
                "subjects",
                "mirror",
                "subject_transform",
            ]
        );
        assert_eq!(found.len(), refused.len(), "nothing to update: {found:?}");
        let message = refusal("REFBUS_EVENTS", &found).unwrap();
        for expected in [
            "stream REFBUS_EVENTS: max_age is 3600s, refbus needs 0",
            "max_msgs_per_subject is 1, refbus needs -1 (unlimited: every event of a referral is kept)",
            "replicas is 1, the configuration says 3",
            "storage is memory, refbus needs file",
            "retention is interest, refbus needs limits",
            "subjects are [other.>, refbus.v1.ref.>], refbus needs",
        ] {
            assert!(message.contains(expected), "{expected:?} in {message}");
        }
    }

    #[test]
    fn one_difference_is_one_precise_sentence() {
        let settings = StreamSettings::default();
        let existing = stream::Config {
            max_messages_per_subject: 1,
            ..settings.config()
        };
        let found = differences(&existing, &settings);
        assert_eq!(
            fields(&found),
            vec![("max_msgs_per_subject", Action::Refuse)]
        );
        assert_eq!(
            found[0].to_string(),
            "max_msgs_per_subject is 1, refbus needs -1 (unlimited: every event of a referral \
             is kept)"
        );
    }

    #[test]
    fn more_replicas_than_configured_is_refused_too() {
        // "As configured, or nothing": a stream with more copies than the configuration says
        // is not unsafe, but it means the configuration is not the one this deployment runs.
        let settings = StreamSettings::default();
        let existing = stream::Config {
            num_replicas: 3,
            ..settings.config()
        };
        let found = differences(&existing, &settings);
        assert_eq!(fields(&found), vec![("replicas", Action::Refuse)]);
        assert_eq!(found[0].text, "replicas is 3, the configuration says 1");
    }

    #[test]
    fn safe_settings_are_updated_not_refused() {
        let settings = StreamSettings::default();
        let existing = stream::Config {
            duplicate_window: Duration::from_secs(120),
            allow_direct: false,
            max_message_size: -1,
            ..settings.config()
        };
        let found = differences(&existing, &settings);
        assert_eq!(
            fields(&found),
            vec![
                ("duplicate_window", Action::Update),
                ("allow_direct", Action::Update),
                ("max_msg_size", Action::Update),
            ]
        );
        assert_eq!(refusal("REFBUS_EVENTS", &found), None);
    }

    #[test]
    fn the_subjects_compare_as_a_set() {
        let settings = StreamSettings::default();
        let mut existing = settings.config();
        existing.subjects.reverse();
        assert_eq!(differences(&existing, &settings), vec![]);
        existing.subjects.pop();
        assert_eq!(
            fields(&differences(&existing, &settings)),
            vec![("subjects", Action::Refuse)]
        );
    }

    #[test]
    fn a_stream_from_before_the_index_gains_its_subjects() {
        let settings = StreamSettings::default();
        let mut existing = settings.config();
        existing
            .subjects
            .retain(|subject| subject != subjects::ALL_INDEXES);
        let found = differences(&existing, &settings);
        assert_eq!(fields(&found), vec![("subjects", Action::Update)]);
        assert_eq!(refusal("REFBUS_EVENTS", &found), None);
    }
}
