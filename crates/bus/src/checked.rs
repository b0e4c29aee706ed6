//! Reading records through the one integrity check (`refbus_core::integrity`).
//!
//! Every reader of referral records (adapter, router, dashboard, audit) reads them here: the
//! bus supplies the stored bytes and JetStream's own metadata (subject, stored time), the core
//! decides whether the record is believed. A record that fails is never returned as a referral's
//! state; it is reported (an ERROR log line naming the sequence and subject, and a counter) and
//! the reader goes on from the last record that passed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use refbus_core::integrity::{Checker, Claim, Failure, Presigned, Problem, SubjectTokens};
use refbus_core::signature::{Signer, Signers};
use refbus_core::{AgencyId, Referral, Registry, Timestamp};

use crate::record::{CheckedRecord, EventRecord};
use crate::subjects;
use crate::{Bus, ReadError, Stored};

/// What checking needs: the registry, the signers' public keys and the time tolerance.
/// Cloning is cheap.
#[derive(Clone, Debug)]
pub struct Verifier {
    registry: Arc<Registry>,
    signers: Arc<Signers>,
    max_skew: Option<Duration>,
    refused: Arc<AtomicU64>,
    /// Told of every refusal by this verifier (a component's metrics), beside the count.
    observer: Option<Observer>,
    /// Whose records vouch for the stored state they follow, in [`Bus::referral`].
    builders: Builders,
}

/// The writers whose record proves that the stored state it follows was checked: a writer
/// that only ever writes on a state it checked itself. [`Bus::referral`] walks back from a
/// referral's last record to the nearest record by one of them and checks forward from the
/// state that record followed (docs/ARCHITECTURE.md, "A reader goes on only from a state a
/// checked writer built on").
#[derive(Clone, Debug)]
enum Builders {
    /// The router, and the agencies listed: an adapter lists its own.
    Only(Vec<Signer>),
    /// Every writer: for a reader that reads in full whatever it has not checked itself (the
    /// router, past its consumer's checked position).
    Every,
}

impl Builders {
    fn include(&self, signer: &Signer) -> bool {
        match self {
            Builders::Only(signers) => signers.contains(signer),
            Builders::Every => true,
        }
    }
}

/// What [`Verifier::observed`] calls with each refused record's problem.
#[derive(Clone)]
struct Observer(Arc<dyn Fn(Problem) + Send + Sync>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

impl Verifier {
    /// `max_skew`: how far an event's time may lie from JetStream's time of storing it; `None`
    /// only where the writers' clock is not the system's (tests with a manual clock).
    pub fn new(
        registry: Arc<Registry>,
        signers: Arc<Signers>,
        max_skew: Option<Duration>,
    ) -> Verifier {
        Verifier {
            registry,
            signers,
            max_skew,
            refused: Arc::new(AtomicU64::new(0)),
            observer: None,
            builders: Builders::Only(vec![Signer::Router]),
        }
    }

    /// This verifier for a reader that writes as `agency` (its adapter): its agency's own
    /// records vouch for the state they follow, since it wrote each on a state read through
    /// [`Bus::referral`], like the router's. Clones share the count of refusals.
    pub fn writing_as(&self, agency: &AgencyId) -> Verifier {
        let signer = Signer::Agency(agency.clone());
        let builders = match &self.builders {
            Builders::Only(signers) if !signers.contains(&signer) => {
                Builders::Only(signers.iter().cloned().chain([signer]).collect())
            }
            other => other.clone(),
        };
        Verifier {
            builders,
            ..self.clone()
        }
    }

    /// This verifier for a reader whose one-step reads may take any predecessor's stored state
    /// (after its signature), because it reads a referral in full ([`Bus::referral_in_full`])
    /// wherever its own consumer has not checked the records yet: the router. Any other reader
    /// would believe two records in a row whose first claims a state its event does not make.
    pub fn believing_every_writer(&self) -> Verifier {
        Verifier {
            builders: Builders::Every,
            ..self.clone()
        }
    }

    /// This verifier, also telling `observer` the problem of every record it refuses from now
    /// on (a component counts its integrity failures in its metrics, apart from other
    /// components sharing the verifier). Clones made before are not affected.
    pub fn observed(&self, observer: impl Fn(Problem) + Send + Sync + 'static) -> Verifier {
        Verifier {
            observer: Some(Observer(Arc::new(observer))),
            ..self.clone()
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The signing keys records are checked against (the registry's, and any added).
    pub fn signers(&self) -> &Signers {
        &self.signers
    }

    pub fn checker(&self) -> Checker<'_> {
        Checker {
            registry: &self.registry,
            signers: &self.signers,
            max_skew: self.max_skew,
        }
    }

    /// How many records this verifier refused so far (for metrics and tests).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Checks `record`, recorded after `before`; the state after it (with the sealed payloads
    /// its event carries).
    pub fn check(&self, record: &Unchecked, before: Option<Referral>) -> Result<Referral, Failure> {
        self.check_presigned(record, self.presign(record), before)
    }

    /// The predecessor-free part of [`Verifier::check`] (hash and signature, see
    /// [`Checker::presign`]), done ahead on any thread; nothing is reported yet. `None` when
    /// the subject is not a referral's.
    pub fn presign(&self, record: &Unchecked) -> Option<Presigned> {
        self.presign_all(&[record]).pop().flatten()
    }

    /// [`Verifier::presign`] of every record, in order, their signatures verified together
    /// ([`Checker::presign_all`]): what a reader of many records does on each core.
    pub fn presign_all(&self, records: &[&Unchecked]) -> Vec<Option<Presigned>> {
        let claims: Vec<Option<Claim<'_>>> = records.iter().map(|record| record.claim()).collect();
        let mut presigned = self
            .checker()
            .presign_all(&claims.iter().flatten().copied().collect::<Vec<_>>())
            .into_iter();
        claims
            .iter()
            .map(|claim| claim.as_ref().and_then(|_| presigned.next()))
            .collect()
    }

    /// [`Verifier::check`] of `record`, whose [`Verifier::presign`] was `presigned`: the
    /// stateful rest of the one check, in order, and the report of a refusal.
    pub fn check_presigned(
        &self,
        record: &Unchecked,
        presigned: Option<Presigned>,
        before: Option<Referral>,
    ) -> Result<Referral, Failure> {
        let result = record
            .claim()
            .zip(presigned)
            .ok_or_else(|| unreadable_subject(&record.subject))
            .and_then(|(claim, presigned)| {
                self.checker().check_presigned(&claim, presigned, before)
            });
        if let Err(failure) = &result {
            self.report(record.seq, &record.subject, failure);
        }
        result
    }

    /// Subject, hash and signature only (see [`Checker::check_signed`]).
    pub fn check_signed(&self, record: &Unchecked) -> Result<(), Failure> {
        let result = record
            .claim()
            .ok_or_else(|| unreadable_subject(&record.subject))
            .and_then(|claim| self.checker().check_signed(&claim).map(drop));
        if let Err(failure) = &result {
            self.report(record.seq, &record.subject, failure);
        }
        result
    }

    /// The state of a record read without its predecessor (a listing, an inbox, a rebuild):
    /// subject, hash and signature checked, and the stored state's parties and id are the
    /// subject's. `None` (reported) if it fails.
    pub fn check_listed(&self, record: &Unchecked) -> Option<Referral> {
        self.check_listed_presigned(record, self.presign(record))
    }

    /// [`Verifier::check_listed`] of `record`, whose [`Verifier::presign`] was `presigned`.
    pub fn check_listed_presigned(
        &self,
        record: &Unchecked,
        presigned: Option<Presigned>,
    ) -> Option<Referral> {
        let signed = presigned
            .ok_or_else(|| unreadable_subject(&record.subject))
            .and_then(Presigned::verdict);
        if let Err(failure) = &signed {
            self.report(record.seq, &record.subject, failure);
            return None;
        }
        let state = crate::record::decode_state_text(&record.record.state_json).ok();
        let tokens = record.tokens.as_ref()?;
        match state {
            Some(state)
                if state.id == tokens.referral
                    && state.recipient() == &tokens.recipient
                    && state.sender() == &tokens.sender =>
            {
                Some(state)
            }
            _ => {
                let failure = Failure::new(
                    Problem::WrongState,
                    "the stored state does not name the subject's parties and referral",
                );
                self.report(record.seq, &record.subject, &failure);
                None
            }
        }
    }

    /// Logs a refused record loudly and counts it.
    pub fn report(&self, seq: u64, subject: &str, failure: &Failure) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(observer) = &self.observer {
            (observer.0)(failure.problem);
        }
        tracing::error!(
            seq,
            subject,
            problem = %failure.problem,
            "INTEGRITY: a record on the bus fails refbus's check and is not believed: {}",
            failure.detail
        );
    }
}

fn unreadable_subject(subject: &str) -> Failure {
    Failure::new(
        Problem::WrongSubject,
        format!("{subject} is not a referral subject"),
    )
}

/// A record as read, before checking.
#[derive(Debug, Clone)]
pub struct Unchecked {
    pub seq: u64,
    pub subject: String,
    /// The sequence of the previous record on the same subject, as the writer claimed it.
    pub prev_seq: u64,
    /// The sequence JetStream verified was the last on the subject when it stored this one
    /// ([`crate::headers::stored_after`]): JetStream's word, not the writer's.
    pub stored_after: Option<u64>,
    /// When JetStream stored it.
    pub stored_at: Timestamp,
    /// The `Nats-Msg-Id` JetStream stored it under.
    pub message_id: Option<String>,
    pub tokens: Option<SubjectTokens>,
    pub record: CheckedRecord,
}

impl Unchecked {
    pub(crate) fn new(
        seq: u64,
        subject: String,
        prev_seq: u64,
        stored_after: Option<u64>,
        stored_at: Timestamp,
        message_id: Option<String>,
        record: CheckedRecord,
    ) -> Unchecked {
        let tokens = match subjects::parse(&subject) {
            Some(subjects::Parsed::Referral(parsed)) => Some(SubjectTokens {
                recipient: parsed.recipient,
                sender: parsed.sender,
                referral: parsed.id,
            }),
            _ => None,
        };
        Unchecked {
            seq,
            subject,
            prev_seq,
            stored_after,
            stored_at,
            message_id,
            tokens,
            record,
        }
    }

    /// Whether JetStream proves that nothing lies between this record and the one it names as
    /// its predecessor on its subject (for a creation: that it was stored first on its subject).
    /// A record read without its history is checked against that predecessor only if so: a
    /// writer that publishes, after a referral's newer records, a second creation or a record
    /// following an older one (each valid on its own) would otherwise rewrite what such readers
    /// believe, its clocks and marks included. Every refbus append carries the proof; anything
    /// without it is judged by the referral's whole history.
    pub fn follows_its_predecessor(&self) -> bool {
        let predecessor = if self.record.event.seq == 1 {
            0
        } else {
            self.prev_seq
        };
        self.stored_after == Some(predecessor)
    }

    /// Whether JetStream stored this record under the message id its writer gives it
    /// (`Nats-Msg-Id`, [`crate::idempotency::message_id_of`]): then it is the record its writer
    /// appended where it appended it, not a byte copy stored later in the referral's history.
    /// JetStream stores nothing twice under one id within the stream's duplicate window (seven
    /// days), and a copy stored after that fails the time check.
    pub fn stored_as_written(&self) -> bool {
        self.message_id.is_some()
            && self.message_id == crate::idempotency::message_id_of(&self.record.event)
    }

    /// The record's claims, for the core's check; `None` if its subject is not a referral's.
    pub fn claim(&self) -> Option<Claim<'_>> {
        Some(Claim {
            subject: &self.subject,
            tokens: self.tokens.as_ref()?,
            stored_at: self.stored_at,
            event: &self.record.event,
            event_bytes: self.record.event_json.as_bytes(),
            stored_hash: self.record.stored_hash,
            signature: self.record.signature.as_ref(),
            state_json: &self.record.state_json,
        })
    }

    /// The record as a checked reader sees it, once `state_after` was established by a check.
    pub fn into_stored(self, state_after: Referral) -> Stored<EventRecord> {
        Stored {
            seq: self.seq,
            last_seq: self.seq,
            subject: self.subject,
            prev_seq: self.prev_seq,
            record: EventRecord {
                event: self.record.event,
                hash: self.record.bytes_hash,
                signature: self.record.signature,
                state: state_after,
            },
        }
    }
}

/// How many records [`Bus::referral`] walks back from a referral's last record, at most, to one
/// written by a builder; past it the referral's history is read in full (one read, however
/// long). A party writing many records in a row makes the other party's reads of that
/// referral a full read, nothing worse.
pub const WALK_BACK: usize = 16;

impl Bus {
    /// The current, checked state of the referral on `subject` (one referral's exact subject),
    /// in a few reads: from its last record back to the nearest record written by one of the
    /// verifier's builders (the router; an adapter's own agency; see [`Verifier::writing_as`])
    /// and stored where it was written ([`Unchecked::stored_as_written`]), or to the creation,
    /// at most [`WALK_BACK`] records, then checked forward from the stored state that record
    /// followed, which its writer had checked. If the walk does not reach such a record, a
    /// link is not proven, or a record fails, the referral's history is checked from the start
    /// and its last good record is returned.
    ///
    /// Why not the last record against its predecessor's stored state alone: a party that
    /// stores two records in a row, the first claiming a state its event does not make, has the
    /// second pass that check. Its own records vouch for nothing here, however many it writes.
    pub async fn referral(
        &self,
        verifier: &Verifier,
        subject: &str,
    ) -> Result<Option<Stored<EventRecord>>, ReadError> {
        let Some((last_seq, last)) = self.unchecked_last(verifier, subject).await? else {
            return Ok(None);
        };
        if let Some(last) = last
            && let Some(checked) = self.checked_from_builder(verifier, last).await?
        {
            return Ok(Some(checked));
        }
        self.last_of_history(verifier, subject, last_seq).await
    }

    /// `last` and the records before it back to the nearest one a builder wrote (or the
    /// creation), checked in order from the state that record followed; `None` when that
    /// takes more than [`WALK_BACK`] records, a record does not provably follow its
    /// predecessor, or one fails the check (reported): then only the history can tell.
    async fn checked_from_builder(
        &self,
        verifier: &Verifier,
        last: Unchecked,
    ) -> Result<Option<Stored<EventRecord>>, ReadError> {
        // Newest first.
        let mut walked = vec![last];
        let start = loop {
            let earliest = walked.last().expect("the walk holds the last record");
            if !earliest.follows_its_predecessor() {
                return Ok(None);
            }
            if earliest.record.event.seq == 1 {
                break None;
            }
            let Some(previous) = self.predecessor_of(verifier, earliest).await? else {
                return Ok(None);
            };
            if verifier
                .builders
                .include(&Signer::of(&earliest.record.event.actor))
                && earliest.stored_as_written()
            {
                // The builder checked this stored state before writing on it: its signature
                // at least is checked again here.
                match verifier.check_signed(&previous).ok().and_then(|()| {
                    crate::record::decode_state_text(&previous.record.state_json).ok()
                }) {
                    Some(state) => break Some(state),
                    None => return Ok(None),
                }
            }
            if walked.len() >= WALK_BACK {
                return Ok(None);
            }
            walked.push(previous);
        };
        let mut state = start;
        let mut newest = None;
        for record in walked.into_iter().rev() {
            let Ok(after) = verifier.check(&record, state.take()) else {
                return Ok(None);
            };
            let snapshot = after.into_snapshot();
            state = Some(snapshot.clone());
            newest = Some(record.into_stored(snapshot));
        }
        Ok(newest)
    }

    /// [`Bus::referral`] without trusting any stored state: the referral's whole history is
    /// checked from its creation and its last good record returned. For a writer that must
    /// not go on from a record nobody checked in full yet (the router, before its consumer
    /// reached the referral's last record): a party that stores two records in a row, the
    /// first claiming a state its event does not make, has the second believed by
    /// [`Bus::referral`] until then.
    pub async fn referral_in_full(
        &self,
        verifier: &Verifier,
        subject: &str,
    ) -> Result<Option<Stored<EventRecord>>, ReadError> {
        let Some((last_seq, _)) = self.unchecked_last(verifier, subject).await? else {
            return Ok(None);
        };
        self.last_of_history(verifier, subject, last_seq).await
    }

    /// The last good record of the referral on `subject`, whose last message is at `last_seq`,
    /// from its whole history checked in order.
    async fn last_of_history(
        &self,
        verifier: &Verifier,
        subject: &str,
        last_seq: u64,
    ) -> Result<Option<Stored<EventRecord>>, ReadError> {
        let (mut history, seen) = self.checked_history_seen(verifier, subject).await?;
        settle(subject, last_seq, seen, history.pop())
    }

    /// What the referral on `record`'s subject was just before `record`, with the stream
    /// sequence of the record that made it (`None`: nothing, so `record` must be a creation):
    /// what the check of `record` is made against, by a reader that follows the stream and has
    /// no state of the referral at hand. Nothing for a creation JetStream proves was stored
    /// first on its subject; otherwise the last record before `record` in the subject's
    /// checked history, whatever `record` claims to follow: a record written around the history
    /// (a second creation, an event following an older record) is then checked against the
    /// referral as it stands, and refused. Not the stored state of the predecessor `record`
    /// names: a party could have written that one around the history too. The stream delivered
    /// `record`, so a history that does not reach it is a replica behind: `Unavailable`, never
    /// a verdict.
    pub async fn state_preceding(
        &self,
        verifier: &Verifier,
        record: &Unchecked,
    ) -> Result<Option<(u64, Referral)>, ReadError> {
        if record.record.event.seq == 1 && record.follows_its_predecessor() {
            return Ok(None);
        }
        let history = self
            .checked_history_through(verifier, &record.subject, record.seq)
            .await?;
        Ok(history
            .into_iter()
            .take_while(|stored| stored.seq < record.seq)
            .last()
            .map(|stored| (stored.seq, stored.record.state)))
    }

    /// The record `record` names as its predecessor (one direct read), if it is the previous
    /// record of the same subject with the hash `record` names (`record` is not a creation).
    async fn predecessor_of(
        &self,
        verifier: &Verifier,
        record: &Unchecked,
    ) -> Result<Option<Unchecked>, ReadError> {
        Ok(self
            .unchecked_at(verifier, &record.subject, record.prev_seq)
            .await?
            .filter(|previous| {
                previous.subject == record.subject
                    && previous.record.bytes_hash == record.record.event.prev_hash
            }))
    }

    /// Every record on `subject` (one referral) that passes the check, oldest first, each with
    /// the state after it (sealed creation payloads removed); records that fail are reported
    /// and skipped, and the referral goes on from the last record that passed.
    pub async fn checked_history(
        &self,
        verifier: &Verifier,
        subject: &str,
    ) -> Result<Vec<Stored<EventRecord>>, ReadError> {
        Ok(self.checked_history_seen(verifier, subject).await?.0)
    }

    /// [`Bus::checked_history`] for a reader that knows the subject holds a message at stream
    /// sequence `at` (a consumer delivered it): a read that did not reach `at` was answered by
    /// a replica behind and is `Unavailable`, so that no record is judged against a history
    /// that merely lacks its predecessor (the router flagged a sound record `out_of_chain`
    /// that way under `refbus chaos`, docs/RELIABILITY.md).
    pub async fn checked_history_through(
        &self,
        verifier: &Verifier,
        subject: &str,
        at: u64,
    ) -> Result<Vec<Stored<EventRecord>>, ReadError> {
        let (history, seen) = self.checked_history_seen(verifier, subject).await?;
        reached(subject, seen, at)?;
        Ok(history)
    }

    /// [`Bus::checked_history`], with the sequence of the last message the read saw on the
    /// subject (a record or not, passing the check or not; 0 if none).
    async fn checked_history_seen(
        &self,
        verifier: &Verifier,
        subject: &str,
    ) -> Result<(Vec<Stored<EventRecord>>, u64), ReadError> {
        let raws = self.read_filtered(subject, 1, usize::MAX).await?;
        let seen = raws.last().map_or(0, |raw| raw.sequence);
        let mut checked: Vec<Stored<EventRecord>> = Vec::new();
        let mut state: Option<Referral> = None;
        for record in raws
            .into_iter()
            .filter_map(|raw| raw.unchecked(verifier).ok())
        {
            match verifier.check(&record, state.clone()) {
                Ok(after) => {
                    let snapshot = after.into_snapshot();
                    state = Some(snapshot.clone());
                    checked.push(record.into_stored(snapshot));
                }
                Err(_) => continue,
            }
        }
        Ok((checked, seen))
    }

    /// The first record on `subject` that passes the check, with the state after it including
    /// the sealed creation payloads (identity, note): a referral's creation.
    ///
    /// One direct read, whatever the referral's length: a creation is checked with no
    /// predecessor, so the first message on the subject is all it takes. Only when that message
    /// fails the check (which only a hostile writer can cause: it is reported) are the later
    /// ones read, one by one, for the first creation that passes.
    pub async fn checked_creation(
        &self,
        verifier: &Verifier,
        subject: &str,
    ) -> Result<Option<Stored<EventRecord>>, ReadError> {
        let Some((first_seq, first)) = self.first_message_of(verifier, subject).await? else {
            return Ok(None);
        };
        if let Some(record) = first
            && record.record.event.seq == 1
            && let Ok(after) = verifier.check(&record, None)
        {
            return Ok(Some(record.into_stored(after)));
        }
        // The first message was checked (and reported) already: scan what follows it.
        self.checked_creation_after(verifier, subject, first_seq)
            .await
    }

    /// The first creation on `subject` after stream sequence `after` that passes the check:
    /// [`Bus::checked_creation`] once the first message failed it.
    pub(crate) async fn checked_creation_after(
        &self,
        verifier: &Verifier,
        subject: &str,
        after: u64,
    ) -> Result<Option<Stored<EventRecord>>, ReadError> {
        for record in self
            .unchecked_history_from(verifier, subject, after + 1)
            .await?
        {
            if record.record.event.seq != 1 {
                continue;
            }
            if let Ok(after) = verifier.check(&record, None) {
                return Ok(Some(record.into_stored(after)));
            }
        }
        Ok(None)
    }

    /// The first message on `subject`, as [`Bus::unchecked_next`] from 1, read again while the
    /// replica that answered has not caught up with the stream.
    ///
    /// On a replicated stream the read's consumer may live on a follower that has not applied
    /// the newest writes yet (JetStream promises no read-after-write there), and "no message"
    /// would then silently drop what a referral's creation holds (its sealed identity: a
    /// rerouted child would be created without it). When the read sees nothing, the subject's
    /// last message is asked for; if there is one, the read is retried (backing off from 10 ms)
    /// until [`crate::READ_TIMEOUT`], then the caller hears `Unavailable` ("retry"), never a
    /// wrong "none".
    pub(crate) async fn first_message_of(
        &self,
        verifier: &Verifier,
        subject: &str,
    ) -> Result<Option<(u64, Option<crate::Unchecked>)>, ReadError> {
        let deadline = tokio::time::Instant::now() + crate::READ_TIMEOUT;
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(first) = self.unchecked_next(verifier, subject, 1).await? {
                return Ok(Some(first));
            }
            let last = self.last_seq_on(subject).await?;
            if last == 0 {
                return Ok(None);
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(ReadError::with_source(
                    crate::ReadErrorKind::Unavailable,
                    format!(
                        "{subject} holds stream sequence {last}, but the replica that answered \
                         the read has not caught up with it yet"
                    ),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// The subjects matching `pattern` whose first record is a creation that passes the check,
    /// in stream order: where a referral found by a wildcard really lives, whatever else was
    /// written on look-alike subjects.
    pub async fn checked_subjects(
        &self,
        verifier: &Verifier,
        pattern: &str,
    ) -> Result<Vec<String>, ReadError> {
        let mut seen = std::collections::HashSet::new();
        let mut subjects = Vec::new();
        for record in self.unchecked_history(verifier, pattern).await? {
            if !seen.insert(record.subject.clone()) {
                continue;
            }
            if record.record.event.seq == 1 && verifier.check(&record, None).is_ok() {
                subjects.push(record.subject);
            }
        }
        Ok(subjects)
    }
}

/// What [`Bus::referral`] answers when the subject's last message (at `last_seq`) did not pass
/// the check against its predecessor and the history was read instead, ending at `seen`:
/// the last good record, with `last_seq` for a writer's expected last sequence.
///
/// Only a history that reached `last_seq` can say that the messages after its last good record
/// fail the check. On a replicated stream two reads may be answered by different replicas,
/// and a replica behind the one that gave `last_seq` answers a history that simply ends
/// earlier: taking its last record for the referral's would let a writer append after records
/// it never checked (JetStream's expected last sequence is `last_seq`, so it accepts), which
/// forks the referral's history (found by `refbus chaos` under partitions, docs/RELIABILITY.md).
/// That read is unavailable, to be made again, not an answer.
fn settle<T>(
    subject: &str,
    last_seq: u64,
    seen: u64,
    good: Option<Stored<T>>,
) -> Result<Option<Stored<T>>, ReadError> {
    reached(subject, seen, last_seq)?;
    Ok(good.map(|good| Stored { last_seq, ..good }))
}

/// `Unavailable` unless a read of `subject` that saw messages up to `seen` reached `at`, a
/// sequence known to hold one of its messages.
fn reached(subject: &str, seen: u64, at: u64) -> Result<(), ReadError> {
    if seen < at {
        return Err(crate::unavailable(format!(
            "the history of {subject} was read up to sequence {seen}, but it holds a message at \
             {at} (answered by a replica behind): read again"
        )));
    }
    Ok(())
}

/// The time JetStream stored a message, in refbus's instants.
pub(crate) fn stored_at(time: &async_nats::jetstream::message::StreamMessage) -> Timestamp {
    from_datetime(time.time)
}

pub(crate) fn from_datetime(time: time::OffsetDateTime) -> Timestamp {
    let millis = time.unix_timestamp_nanos() / 1_000_000;
    Timestamp::from_millis(i64::try_from(millis).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(seq: u64) -> Stored<()> {
        Stored {
            seq,
            subject: "refbus.v1.ref.a.b.R".to_owned(),
            prev_seq: seq.saturating_sub(1),
            last_seq: seq,
            record: (),
        }
    }

    #[test]
    fn a_history_that_ends_before_the_last_message_is_no_answer() {
        // The last message at 16461 did not check against a predecessor read from a replica
        // behind; the history, from that replica too, ends at 16328. Appending after 16328 with
        // the expected last sequence 16461 is exactly the fork the chaos campaign found.
        let stale = settle("s", 16461, 16328, Some(stored(16328)));
        assert_eq!(stale.unwrap_err().kind(), crate::ReadErrorKind::Unavailable);
        // A history that saw the last message: the records after the good one really fail the
        // check, and a writer goes on from the good one, expecting the last.
        let refused_tail = settle("s", 16461, 16461, Some(stored(16328)))
            .unwrap()
            .unwrap();
        assert_eq!((refused_tail.seq, refused_tail.last_seq), (16328, 16461));
        // Nothing on the subject passes: no referral.
        assert!(settle::<()>("s", 5, 5, None).unwrap().is_none());
        // A history read for a record delivered at 10712 that ends before it cannot judge it.
        assert_eq!(
            reached("s", 10_650, 10_712).unwrap_err().kind(),
            crate::ReadErrorKind::Unavailable
        );
        assert!(reached("s", 10_712, 10_712).is_ok());
    }
}
