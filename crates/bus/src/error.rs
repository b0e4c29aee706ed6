//! Errors, one small kind enum per operation (the async-nats `Error<Kind>` shape): callers
//! match on `kind()` to choose a gRPC status or a retry.

use std::error::Error as StdError;
use std::fmt;

/// An error of some operation, with its kind and the underlying cause.
#[derive(Debug)]
pub struct Error<Kind> {
    kind: Kind,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl<Kind: Clone> Error<Kind> {
    pub fn new(kind: Kind) -> Self {
        Error { kind, source: None }
    }

    pub fn with_source(kind: Kind, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Error {
            kind,
            source: Some(source.into()),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind.clone()
    }
}

impl<Kind: fmt::Display> fmt::Display for Error<Kind> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

// `Display` already tells the cause; `source()` stays empty so that error chains (anyhow's
// `{:#}`, tracing) do not print it twice.
impl<Kind: fmt::Display + fmt::Debug> StdError for Error<Kind> {}

impl<Kind> Error<Kind> {
    /// The underlying cause, for callers that want to inspect it.
    pub fn cause(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

/// Why connecting to the bus or provisioning its streams failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectErrorKind {
    #[error("cannot reach NATS")]
    Connect,
    /// The connection options cannot be used (a server address, a credentials file).
    #[error("the NATS connection options are not usable")]
    Options,
    #[error("cannot provision the refbus streams")]
    Provision,
    #[error("the existing stream is configured in a way refbus cannot use safely")]
    Misconfigured,
    /// The router's statement on the stream, which an adapter starts on, is missing or cannot
    /// be believed ([`statement`](crate::statement)).
    #[error("the router's word on the stream is missing or cannot be believed")]
    Unvouched,
}
pub type ConnectError = Error<ConnectErrorKind>;

/// Why an event was not appended. Nothing was written in every case but `Unavailable`, where
/// the caller cannot know, and must retry with the same message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendErrorKind {
    /// Another event was appended to the referral since it was read (after an `Unavailable`
    /// attempt, possibly that attempt's own event, stored though never acknowledged: read the
    /// referral again before deciding anything).
    #[error("the referral changed since it was read")]
    Conflict,
    /// JetStream did not acknowledge in time, or cannot be reached.
    #[error("JetStream is unavailable")]
    Unavailable,
    #[error("the message is too large for the bus")]
    TooLarge,
    #[error("JetStream refused the message")]
    Refused,
}
pub type AppendError = Error<AppendErrorKind>;

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadErrorKind {
    #[error("JetStream is unavailable")]
    Unavailable,
    /// A stored message cannot be decoded: the bus holds something refbus did not write.
    #[error("a stored message at sequence {0} is not a refbus record")]
    Corrupt(u64),
}
pub type ReadError = Error<ReadErrorKind>;

/// Why a durable consumer could not be opened (see [`crate::Bus::durable`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsumerErrorKind {
    #[error("JetStream is unavailable")]
    Unavailable,
    /// The consumer exists with a configuration other than the one refbus creates; the
    /// message names each difference and how to fix it. Nothing was changed.
    #[error("the existing consumer is configured in a way refbus cannot use safely")]
    Misconfigured,
}
pub type ConsumerError = Error<ConsumerErrorKind>;
