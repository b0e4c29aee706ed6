//! The stream as stored: each message's stream sequence, subject and exact payload bytes, in
//! stream order, unchecked and undecoded. What the notary appends to its Merkle log: it must see
//! every message, refbus record or not, and the bytes JetStream holds, not a re-encoding.

use async_nats::jetstream::consumer::DeliverPolicy;
use futures::{Stream, StreamExt};

use crate::{Bus, ReadError, ReadErrorKind, ordered_config};

/// One stored message, as JetStream holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// The stream sequence (the first message is 1).
    pub seq: u64,
    pub subject: String,
    /// The exact stored payload bytes.
    pub payload: bytes::Bytes,
}

impl Bus {
    /// Every message of the events stream stored after sequence `after`, in stream order, then
    /// each new one as it is stored (`follow`), or only what the stream holds now (`!follow`:
    /// the stream then ends). Deleted messages are skipped by JetStream, so a reader sees a
    /// deletion as a jump in `seq`. Over every subject of the stream: confined connections
    /// cannot use it.
    pub async fn raw_messages(
        &self,
        after: u64,
        follow: bool,
    ) -> Result<impl Stream<Item = Result<RawMessage, ReadError>> + Send + use<>, ReadError> {
        let consumer = crate::timed(self.stream.create_consumer(ordered_config(
            Vec::new(),
            DeliverPolicy::ByStartSequence {
                start_sequence: after.saturating_add(1),
            },
        )))
        .await
        .map_err(crate::unavailable)?
        .map_err(crate::unavailable)?;
        let total = if follow {
            usize::MAX
        } else {
            usize::try_from(consumer.cached_info().num_pending).unwrap_or(usize::MAX)
        };
        let messages = crate::timed(consumer.messages())
            .await
            .map_err(crate::unavailable)?
            .map_err(crate::unavailable)?
            .take(total);
        Ok(messages.map(|message| {
            let message =
                message.map_err(|err| ReadError::with_source(ReadErrorKind::Unavailable, err))?;
            let info = message.info().map_err(|err| {
                ReadError::with_source(ReadErrorKind::Unavailable, err.to_string())
            })?;
            Ok(RawMessage {
                seq: info.stream_sequence,
                subject: message.subject.to_string(),
                payload: message.payload.clone(),
            })
        }))
    }

    /// Every message stored on `subject`, as stored (a confined connection may read its own
    /// agency's subjects): where a receipt finds the exact bytes of an event.
    pub async fn raw_history(&self, subject: &str) -> Result<Vec<RawMessage>, ReadError> {
        Ok(self
            .read_filtered(subject, 1, usize::MAX)
            .await?
            .into_iter()
            .map(|raw| RawMessage {
                seq: raw.sequence,
                subject: raw.subject,
                payload: raw.payload,
            })
            .collect())
    }

    /// Publishes a signed checkpoint of the notary's log on [`subjects::LOG_CHECKPOINT`]
    /// (core NATS, outside the events stream: the log describes the stream, it is not in it).
    pub async fn publish_log_checkpoint(&self, note: Vec<u8>) -> Result<(), ReadError> {
        self.client
            .publish(crate::subjects::LOG_CHECKPOINT, note.into())
            .await
            .map_err(crate::unavailable)?;
        self.client.flush().await.map_err(crate::unavailable)
    }
}

/// A request for the inclusion proof of one stream sequence, as the notary receives it.
#[derive(Debug, Clone)]
pub struct ProofRequest {
    /// The stream sequence whose leaf is asked for; 0 if the request was not a number.
    pub seq: u64,
    reply: Option<String>,
}

/// The notary's answer to a proof request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofAnswer {
    /// A C2SP tlog-proof.
    Proof(Vec<u8>),
    /// The log does not cover this sequence yet: ask again in a few seconds.
    NotYet,
    /// The log has no such sequence (it is beyond the stream, or 0).
    Unknown,
}

impl ProofAnswer {
    fn encode(&self) -> Vec<u8> {
        match self {
            ProofAnswer::Proof(proof) => [b"proof\n".as_slice(), proof].concat(),
            ProofAnswer::NotYet => b"not-yet\n".to_vec(),
            ProofAnswer::Unknown => b"unknown\n".to_vec(),
        }
    }

    fn decode(bytes: &[u8]) -> Option<ProofAnswer> {
        if let Some(proof) = bytes.strip_prefix(b"proof\n") {
            return Some(ProofAnswer::Proof(proof.to_vec()));
        }
        match bytes {
            b"not-yet\n" => Some(ProofAnswer::NotYet),
            b"unknown\n" => Some(ProofAnswer::Unknown),
            _ => None,
        }
    }
}

impl Bus {
    /// The proof requests sent to the notary ([`subjects::LOG_PROOF`], core NATS
    /// request/reply), for as long as the connection lives.
    pub async fn log_proof_requests(
        &self,
    ) -> Result<impl Stream<Item = ProofRequest> + Send + use<>, ReadError> {
        let subscription = self
            .client
            .subscribe(crate::subjects::LOG_PROOF)
            .await
            .map_err(crate::unavailable)?;
        Ok(subscription.map(|message| ProofRequest {
            seq: std::str::from_utf8(&message.payload)
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or(0),
            reply: message.reply.map(|reply| reply.to_string()),
        }))
    }

    /// Answers a proof request.
    pub async fn answer_log_proof(
        &self,
        request: &ProofRequest,
        answer: &ProofAnswer,
    ) -> Result<(), ReadError> {
        let Some(reply) = &request.reply else {
            return Ok(());
        };
        self.client
            .publish(reply.clone(), answer.encode().into())
            .await
            .map_err(crate::unavailable)
    }

    /// Asks the notary for the inclusion proof of stream sequence `seq`. Unavailable when no
    /// notary answers in time.
    pub async fn request_log_proof(&self, seq: u64) -> Result<ProofAnswer, ReadError> {
        let answer = crate::timed(
            self.client
                .request(crate::subjects::LOG_PROOF, seq.to_string().into()),
        )
        .await
        .map_err(crate::unavailable)?
        .map_err(crate::unavailable)?;
        ProofAnswer::decode(&answer.payload).ok_or_else(|| {
            ReadError::with_source(
                ReadErrorKind::Unavailable,
                "the notary's answer is malformed",
            )
        })
    }
}

impl Bus {
    /// Publishes a witness's cosigned checkpoint on [`subjects::LOG_COSIGNATURE`] (core NATS):
    /// the notary adds the cosignatures to the checkpoint it serves and puts in receipts.
    pub async fn publish_log_cosignature(&self, note: Vec<u8>) -> Result<(), ReadError> {
        self.client
            .publish(crate::subjects::LOG_COSIGNATURE, note.into())
            .await
            .map_err(crate::unavailable)?;
        self.client.flush().await.map_err(crate::unavailable)
    }

    /// The cosigned checkpoints witnesses publish, for as long as the connection lives.
    pub async fn log_cosignatures(
        &self,
    ) -> Result<impl Stream<Item = Vec<u8>> + Send + use<>, ReadError> {
        let subscription = self
            .client
            .subscribe(crate::subjects::LOG_COSIGNATURE)
            .await
            .map_err(crate::unavailable)?;
        Ok(subscription.map(|message| message.payload.to_vec()))
    }
}
