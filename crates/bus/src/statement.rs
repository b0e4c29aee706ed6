//! The router's signed word on the events stream it checked, for the adapters, which may not ask.
//!
//! Every component that may read the stream's information checks all of it at start
//! ([`provision`](crate::provision)). An adapter may not: the answer can list every subject, that
//! is every referral's parties and id. So the router speaks for the stream. Each time it checks
//! it (at its start, through [`Bus::connect_attesting`], and every minute while it runs,
//! [`Bus::recheck_stream`]) it writes a [`StreamStatement`]: which stream, the replicas it was
//! checked against, when, and each difference found. The statement is signed with the router's
//! key, exactly as an event is (`signature`'s bytes, with the statement's subject), and stored as
//! the last message of `$KV.REFBUS_STREAM_CHECKS.<stream>` (the key-value bucket
//! [`BUCKET`]), its signature in the [`SIGNATURE_HEADER`] header.
//!
//! An adapter reads that one message at start ([`Bus::router_statement`]: a direct read whose
//! API subject names it, which its NATS user is allowed and nothing more) and [`judge`]s it: no
//! statement, a signature that is not the router's, a statement about other settings, or one
//! stored long after the time it claims, refuses the start; differences refuse it naming each;
//! a statement older than [`STALE_AFTER`] is only warned about (the router has not checked
//! since: a router down must not also keep agencies from referring).

use std::fmt;
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv, stream::DirectGetErrorKind};
use refbus_core::Timestamp;
use refbus_core::signature::{Signature, SignatureError, Signer, Signers, SigningKey};
use serde::{Deserialize, Serialize};

use crate::error::{ConnectError, ConnectErrorKind};
use crate::provision::StreamSettings;
use crate::{Bus, ReadError, ReadErrorKind, timed};

/// The key-value bucket holding the router's statements, one key per events stream.
pub const BUCKET: &str = "REFBUS_STREAM_CHECKS";

/// The header carrying a statement's signature (the JSON of a
/// [`Signature`](refbus_core::signature::Signature)).
pub const SIGNATURE_HEADER: &str = "Refbus-Signature";

/// How many times an adapter reads the statement before it takes "none" for an answer.
const MISSING_READS: u32 = 6;

/// How often a running router checks the stream again and renews its statement.
pub const RECHECK_EVERY: Duration = Duration::from_secs(60);

/// A statement older than this is warned about: the router has not checked the stream since.
pub const STALE_AFTER: Duration = Duration::from_secs(10 * 60);

/// How far apart the time a statement claims and the time JetStream stored it may be: the
/// tolerance refbus allows an event's time (docs/ARCHITECTURE.md).
pub const TOLERANCE: Duration = Duration::from_secs(120);

/// What the router found when it checked the events stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamStatement {
    /// The events stream checked.
    pub stream: String,
    /// The replicas it was checked against (the router's configuration).
    pub replicas: usize,
    /// When, by the router's host (real time, whatever clock its decisions run on).
    pub checked_at: Timestamp,
    /// Each setting that can lose, age out or alter events and differs from the configuration
    /// (as the router's own refusal names it); empty: the stream is as configured.
    pub differences: Vec<String>,
}

/// The subject a statement about the stream `stream` is stored on (and signed with).
pub fn subject(stream: &str) -> String {
    format!("$KV.{BUCKET}.{stream}")
}

/// The stream backing [`BUCKET`].
fn bucket_stream() -> String {
    format!("KV_{BUCKET}")
}

/// Why an adapter does not start on the router's statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementProblem {
    /// No router has checked the stream yet.
    Missing { stream: String },
    /// The statement is not the router's (no signature, another signer, a key the registry
    /// does not list, or altered).
    NotTheRouters { stream: String, why: SignatureError },
    /// The stored bytes are not a statement.
    Unreadable { stream: String, why: String },
    /// The router checked other settings than this component's.
    OtherSettings {
        checked: String,
        checked_replicas: usize,
        stream: String,
        replicas: usize,
    },
    /// The statement was stored far from the time it claims: a copy replayed, not the
    /// router's word at the time.
    Replayed {
        stream: String,
        checked_at: Timestamp,
        stored_at: Timestamp,
    },
    /// The router found the stream misconfigured.
    Differs {
        stream: String,
        checked_at: Timestamp,
        differences: Vec<String>,
    },
}

impl fmt::Display for StatementProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatementProblem::Missing { stream } => write!(
                f,
                "no router has checked the stream {stream} yet (nothing under {}): start the \
                 router first; it creates the stream, checks it and says so to the adapters",
                subject(stream)
            ),
            StatementProblem::NotTheRouters { stream, why } => write!(
                f,
                "the statement on the stream {stream} under {} is not the router's: {why}",
                subject(stream)
            ),
            StatementProblem::Unreadable { stream, why } => write!(
                f,
                "the statement on the stream {stream} under {} cannot be read: {why}",
                subject(stream)
            ),
            StatementProblem::OtherSettings {
                checked,
                checked_replicas,
                stream,
                replicas,
            } => write!(
                f,
                "the router checked the stream {checked} with {checked_replicas} replica(s); this \
                 component is configured for {stream} with {replicas}: give both the same \
                 configuration"
            ),
            StatementProblem::Replayed {
                stream,
                checked_at,
                stored_at,
            } => write!(
                f,
                "the statement on the stream {stream} says it was made at {checked_at} but was \
                 stored at {stored_at}: more than {} s apart, so it is not the router's word at \
                 the time; restart the router to check the stream again",
                TOLERANCE.as_secs()
            ),
            StatementProblem::Differs {
                stream,
                checked_at,
                differences,
            } => write!(
                f,
                "the router's check of the stream {stream} at {checked_at} found: {}. The \
                 router refuses to run on it, and so does this component: find out why the \
                 stream differs, then correct it",
                differences.join("; ")
            ),
        }
    }
}

impl std::error::Error for StatementProblem {}

/// A statement as stored: its bytes, its signature header, and when JetStream stored it.
#[derive(Debug, Clone)]
pub struct StoredStatement {
    pub payload: Vec<u8>,
    pub signature: Option<String>,
    pub stored_at: Timestamp,
}

/// What an adapter makes of the stored statement about `settings`' stream at `now`: the
/// statement, when it may start on it. Pure: [`Bus::router_statement`] and its tests share it.
pub fn judge(
    stored: Option<&StoredStatement>,
    signers: &Signers,
    settings: &StreamSettings,
) -> Result<StreamStatement, StatementProblem> {
    let name = settings.name.clone();
    let Some(stored) = stored else {
        return Err(StatementProblem::Missing { stream: name });
    };
    let signature = match &stored.signature {
        None => None,
        Some(text) => Some(serde_json::from_str::<Signature>(text).map_err(|err| {
            StatementProblem::Unreadable {
                stream: name.clone(),
                why: format!("its signature header: {err}"),
            }
        })?),
    };
    signers
        .verify(
            &Signer::Router,
            signature.as_ref(),
            &subject(&settings.name),
            &stored.payload,
        )
        .map_err(|why| StatementProblem::NotTheRouters {
            stream: name.clone(),
            why,
        })?;
    let statement: StreamStatement =
        serde_json::from_slice(&stored.payload).map_err(|err| StatementProblem::Unreadable {
            stream: name.clone(),
            why: err.to_string(),
        })?;
    if statement.stream != settings.name || statement.replicas != settings.replicas {
        return Err(StatementProblem::OtherSettings {
            checked: statement.stream,
            checked_replicas: statement.replicas,
            stream: name,
            replicas: settings.replicas,
        });
    }
    let apart = statement
        .checked_at
        .as_millis()
        .abs_diff(stored.stored_at.as_millis());
    if u128::from(apart) > TOLERANCE.as_millis() {
        return Err(StatementProblem::Replayed {
            stream: name,
            checked_at: statement.checked_at,
            stored_at: stored.stored_at,
        });
    }
    if !statement.differences.is_empty() {
        return Err(StatementProblem::Differs {
            stream: name,
            checked_at: statement.checked_at,
            differences: statement.differences,
        });
    }
    Ok(statement)
}

/// How long ago `statement` was stored, at `now`; zero for a statement from the future.
pub fn age(stored_at: Timestamp, now: Timestamp) -> Duration {
    let millis = now.as_millis().saturating_sub(stored_at.as_millis());
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// Now, by this host's clock, in refbus's instants.
pub(crate) fn real_now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    Timestamp::from_millis(i64::try_from(millis).unwrap_or(i64::MAX))
}

/// Writes the router's statement that it checked `settings`' stream and found `differences`
/// (none: as configured), signed with `key`; creates the bucket if missing. Waits for
/// JetStream to store it.
pub(crate) async fn record(
    js: &jetstream::Context,
    settings: &StreamSettings,
    key: &SigningKey,
    differences: Vec<String>,
) -> Result<(), String> {
    let statement = StreamStatement {
        stream: settings.name.clone(),
        replicas: settings.replicas,
        checked_at: real_now(),
        differences,
    };
    let payload = serde_json::to_vec(&statement).map_err(|err| err.to_string())?;
    let subject = subject(&settings.name);
    let signature = key.sign(&subject, &payload);
    let mut headers = HeaderMap::new();
    headers.insert(
        SIGNATURE_HEADER,
        serde_json::to_string(&signature)
            .map_err(|err| err.to_string())?
            .as_str(),
    );
    let bucket = timed(js.get_key_value(BUCKET)).await;
    if !matches!(bucket, Ok(Ok(_))) {
        timed(js.create_key_value(kv::Config {
            bucket: BUCKET.to_owned(),
            description:
                "refbus: the router's signed word on the events stream it checked".to_owned(),
            history: 1,
            num_replicas: settings.replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        }))
        .await
        .map_err(|_| format!("creating the bucket {BUCKET} timed out"))?
        .map_err(|err| format!("creating the bucket {BUCKET}: {err}"))?;
    }
    timed(async {
        js.publish_with_headers(subject.clone(), headers, payload.into())
            .await?
            .await
    })
    .await
    .map_err(|_| format!("storing the statement on {subject} timed out"))?
    .map_err(|err| format!("storing the statement on {subject}: {err}"))?;
    Ok(())
}

impl Bus {
    /// Connects as [`Bus::connect`] does, for the router: whatever its check of the stream
    /// finds, the router's signed statement of it is stored for the adapters (see
    /// [`statement`](mod@crate::statement)) before this returns: the stream as configured, or
    /// each difference, with the same refusal. A statement that cannot be stored is logged at
    /// ERROR and the start goes on: the router's clocks matter more, and it tries again at its
    /// next check ([`Bus::recheck_stream`]).
    pub async fn connect_attesting(
        options: impl Into<crate::ConnectOptions>,
        settings: &StreamSettings,
        key: &SigningKey,
    ) -> Result<Bus, ConnectError> {
        Bus::open(options.into(), settings, Some(key)).await
    }

    /// Checks the events stream again, as at start, and stores the router's signed statement
    /// of what it found: each setting that differs in a way that can lose events (empty: as
    /// configured). The router calls it every [`RECHECK_EVERY`]; what it returns is for its
    /// log, its metrics and its operators.
    pub async fn recheck_stream(&self, key: &SigningKey) -> Result<Vec<String>, ReadError> {
        let differences = self.stream_differences().await?;
        record(&self.js, self.settings(), key, differences.clone())
            .await
            .map_err(|err| ReadError::with_source(ReadErrorKind::Unavailable, err))?;
        Ok(differences)
    }

    /// Checks the events stream again, as at start: each setting that differs from this
    /// component's configuration in a way that can lose events (empty: as configured). For the
    /// components that may read the stream's settings (not an adapter's confined connection,
    /// which is refused); the dashboard shows what it finds to its operators.
    pub async fn stream_differences(&self) -> Result<Vec<String>, ReadError> {
        let info = timed(self.js.get_stream(&*self.stream_name))
            .await
            .map_err(|_| ReadError::new(ReadErrorKind::Unavailable))?
            .map_err(|err| ReadError::with_source(ReadErrorKind::Unavailable, err))?;
        Ok(crate::provision::refused(
            &info.cached_info().config,
            self.settings(),
        ))
    }

    /// The router's statement on this bus's stream, judged against the router keys `verifier`
    /// knows (the registry's) and this bus's settings: `Ok` with its age when this component
    /// may start on it. An adapter calls it at start.
    pub async fn router_statement(
        &self,
        verifier: &crate::Verifier,
    ) -> Result<(StreamStatement, Duration), ConnectError> {
        let signers = verifier.signers();
        let settings = self.settings();
        // On a cluster a replica behind may answer "none" for a statement the router stored
        // a moment ago (direct reads do not promise read-after-write): asked again a few
        // times before an adapter is told to start the router first.
        let mut stored = self.stored_statement().await?;
        for _ in 1..MISSING_READS {
            if stored.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
            stored = self.stored_statement().await?;
        }
        let statement = judge(stored.as_ref(), signers, settings).map_err(|problem| {
            let kind = match problem {
                StatementProblem::Differs { .. } => ConnectErrorKind::Misconfigured,
                _ => ConnectErrorKind::Unvouched,
            };
            ConnectError::with_source(kind, problem)
        })?;
        let age = stored.map_or(Duration::ZERO, |stored| age(stored.stored_at, real_now()));
        Ok((statement, age))
    }

    /// The router's statement on this bus's stream as stored, unjudged: `None` when there is
    /// none (or no bucket).
    async fn stored_statement(&self) -> Result<Option<StoredStatement>, ConnectError> {
        let settings = self.settings();
        let stream = self.js.get_stream_no_info(bucket_stream()).await.ok();
        let stored = match stream {
            None => None,
            Some(stream) => {
                match timed(stream.direct_get_last_for_subject(subject(&settings.name))).await {
                    Ok(Ok(message)) => Some(StoredStatement {
                        signature: message
                            .headers
                            .get(SIGNATURE_HEADER)
                            .map(|value| value.as_str().to_owned()),
                        payload: message.payload.to_vec(),
                        stored_at: crate::checked::from_datetime(message.time),
                    }),
                    Ok(Err(err)) if err.kind() == DirectGetErrorKind::NotFound => None,
                    // The bucket's stream does not exist: JetStream answers a direct read of a
                    // missing stream with "no responders". (It is up: the events stream has
                    // just answered this component's reads.)
                    Ok(Err(err))
                        if matches!(
                            err.kind(),
                            DirectGetErrorKind::ErrorResponse(status, _)
                                if status == async_nats::StatusCode::NO_RESPONDERS
                        ) =>
                    {
                        None
                    }
                    Ok(Err(err)) => {
                        // A request that timed out or was not sent is the bus out of reach
                        // for now, not a stream that cannot be provisioned.
                        let kind = match err.kind() {
                            DirectGetErrorKind::TimedOut | DirectGetErrorKind::Request => {
                                ConnectErrorKind::Connect
                            }
                            _ => ConnectErrorKind::Provision,
                        };
                        return Err(ConnectError::with_source(
                            kind,
                            format!(
                                "reading the router's statement on the stream {} ({}): {err}",
                                settings.name,
                                subject(&settings.name)
                            ),
                        ));
                    }
                    Err(_) => {
                        return Err(ConnectError::with_source(
                            ConnectErrorKind::Connect,
                            format!(
                                "reading the router's statement on the stream {} timed out",
                                settings.name
                            ),
                        ));
                    }
                }
            }
        };
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8, signer: Signer) -> SigningKey {
        SigningKey::from_seed(&[seed; 32], signer)
    }

    fn router() -> SigningKey {
        key(7, Signer::Router)
    }

    fn signers() -> Signers {
        Signers::new().with(Signer::Router, router().verifying_key())
    }

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    fn statement(differences: &[&str]) -> StreamStatement {
        StreamStatement {
            stream: "REFBUS_EVENTS".to_owned(),
            replicas: 1,
            checked_at: at("2026-12-03T06:00:00Z"),
            differences: differences.iter().map(|text| (*text).to_owned()).collect(),
        }
    }

    fn stored_by(key: &SigningKey, statement: &StreamStatement) -> StoredStatement {
        let payload = serde_json::to_vec(statement).unwrap();
        let signature = key.sign(&subject(&statement.stream), &payload);
        StoredStatement {
            payload,
            signature: Some(serde_json::to_string(&signature).unwrap()),
            stored_at: at("2026-12-03T06:00:01Z"),
        }
    }

    #[test]
    fn a_statement_of_the_router_finding_the_stream_as_configured_lets_a_component_start() {
        let stored = stored_by(&router(), &statement(&[]));
        let judged = judge(Some(&stored), &signers(), &StreamSettings::default());
        assert_eq!(judged, Ok(statement(&[])));
    }

    #[test]
    fn differences_found_by_the_router_refuse_the_start_naming_each() {
        let stored = stored_by(
            &router(),
            &statement(&["max_age is 3600s", "max_msgs_per_subject is 1"]),
        );
        let problem = judge(Some(&stored), &signers(), &StreamSettings::default()).unwrap_err();
        let text = problem.to_string();
        assert!(
            matches!(problem, StatementProblem::Differs { .. }),
            "{text}"
        );
        assert!(
            text.contains("max_age is 3600s; max_msgs_per_subject is 1"),
            "{text}"
        );
    }

    #[test]
    fn no_statement_refuses_the_start_and_says_to_start_the_router() {
        let problem = judge(None, &signers(), &StreamSettings::default()).unwrap_err();
        assert!(
            problem.to_string().contains("start the router first"),
            "{problem}"
        );
    }

    #[test]
    fn a_statement_not_signed_by_the_router_is_refused() {
        let settings = StreamSettings::default();
        // Signed by an agency whose key the registry lists: still not the router's word.
        let agency = key(9, Signer::Agency("maros-dinsos".parse().unwrap()));
        let signers = signers().with(agency.signer().clone(), agency.verifying_key());
        let forged = stored_by(&agency, &statement(&[]));
        assert!(matches!(
            judge(Some(&forged), &signers, &settings),
            Err(StatementProblem::NotTheRouters { .. })
        ));
        // A router key the registry does not list.
        let unknown = stored_by(&key(8, Signer::Router), &statement(&[]));
        assert!(matches!(
            judge(Some(&unknown), &signers, &settings),
            Err(StatementProblem::NotTheRouters {
                why: SignatureError::UnknownKey { .. },
                ..
            })
        ));
        // No signature.
        let mut unsigned = stored_by(&router(), &statement(&[]));
        unsigned.signature = None;
        assert!(matches!(
            judge(Some(&unsigned), &signers, &settings),
            Err(StatementProblem::NotTheRouters {
                why: SignatureError::Missing,
                ..
            })
        ));
        // The router's statement of differences, altered to say none.
        let mut altered = stored_by(&router(), &statement(&["max_age is 3600s"]));
        altered.payload = serde_json::to_vec(&statement(&[])).unwrap();
        assert!(matches!(
            judge(Some(&altered), &signers, &settings),
            Err(StatementProblem::NotTheRouters {
                why: SignatureError::Invalid,
                ..
            })
        ));
    }

    #[test]
    fn a_statement_about_other_settings_is_refused() {
        let stored = stored_by(&router(), &statement(&[]));
        let three = StreamSettings {
            replicas: 3,
            ..StreamSettings::default()
        };
        let problem = judge(Some(&stored), &signers(), &three).unwrap_err();
        assert!(
            problem.to_string().contains("1 replica(s)") && problem.to_string().contains("with 3"),
            "{problem}"
        );
    }

    #[test]
    fn an_old_statement_stored_again_later_is_not_the_routers_word_at_the_time() {
        let mut stored = stored_by(&router(), &statement(&[]));
        stored.stored_at = at("2026-12-03T07:00:00Z");
        assert!(matches!(
            judge(Some(&stored), &signers(), &StreamSettings::default()),
            Err(StatementProblem::Replayed { .. })
        ));
        // Within the tolerance, it is.
        stored.stored_at = at("2026-12-03T06:01:59Z");
        assert!(judge(Some(&stored), &signers(), &StreamSettings::default()).is_ok());
    }

    #[test]
    fn a_statement_is_signed_over_its_own_subject_so_it_cannot_pass_for_another_streams() {
        let mut other = statement(&[]);
        other.stream = "OTHER".to_owned();
        let stored = stored_by(&router(), &other);
        let settings = StreamSettings {
            name: "OTHER".to_owned(),
            ..StreamSettings::default()
        };
        assert!(judge(Some(&stored), &signers(), &settings).is_ok());
        // The same message read as the statement on REFBUS_EVENTS: signed over another subject.
        assert!(matches!(
            judge(Some(&stored), &signers(), &StreamSettings::default()),
            Err(StatementProblem::NotTheRouters {
                why: SignatureError::Invalid,
                ..
            })
        ));
    }

    #[test]
    fn age_counts_from_the_time_jetstream_stored_it() {
        assert_eq!(
            age(at("2026-12-03T06:00:00Z"), at("2026-12-03T06:11:00Z")),
            Duration::from_secs(660)
        );
        assert_eq!(
            age(at("2026-12-03T06:00:00Z"), at("2026-12-03T05:00:00Z")),
            Duration::ZERO
        );
    }
}
