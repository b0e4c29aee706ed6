//! The write path: every command is load, decide, append, answer.
//!
//! Idempotency: a referral's id derives from its create's request id, so a create cannot happen
//! twice. For later commands, the request id is recorded on the event and used as the bus
//! message id: a retry whose event is already the referral's latest is answered from it; a
//! retry that the life cycle now refuses (because it already happened) is found in the
//! referral's history; a retry that would be allowed again is recognised by the bus's
//! deduplication. In every case the answer is the original one and nothing is written twice.
//!
//! Riding through an outage: a command that fails for want of the bus (a read that got no
//! answer, an append whose acknowledgement never came, a connection lost to a NATS node that
//! died) is run again, whole, with the same request id, until `Options::ride_through` has
//! passed ([`Adapter::riding_through`]). The request id is the idempotency key, so the retry
//! sends the same `Nats-Msg-Id` and meets the first attempt if it was stored: the recognition
//! above answers from it. Only then does the agency hear `UNAVAILABLE`.

use refbus_bus::{Append, AppendErrorKind, EventRecord, Idempotency, Stored, subjects};
use refbus_core::command::{Command, Request};
use refbus_core::ids::{OperatorId, SystemId};
use refbus_core::referral::Creation;
use refbus_core::{Actor, AgencyId, Event, Referral, ReferralId, RequestId, Timestamp, decide};
use refbus_core::{RecordError, record};
use refbus_proto::convert::{self, CommandRequest, FieldError, SealError, SealTarget};
use refbus_proto::v1;
use refbus_seal::Context;
use tonic::Status;

use crate::stages::Stage;
use crate::{Adapter, keys, status};

/// Who acts: the operator the system named (`x-refbus-operator`), and the system its client
/// certificate proved (`None` for the adapter's own reroutes and behind insecure plaintext).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub(crate) operator: OperatorId,
    pub(crate) system: Option<SystemId>,
}

/// The outcome of a command: the event recorded (or found, for a retry) and the state after it.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    pub(crate) event: Event,
    pub(crate) state: Referral,
    pub(crate) seq: u64,
    /// A retry of an earlier request: nothing was written now.
    pub(crate) replayed: bool,
}

impl Written {
    fn from_stored(stored: Stored<EventRecord>, replayed: bool) -> Written {
        Written {
            event: stored.record.event,
            state: stored.record.state,
            seq: stored.seq,
            replayed,
        }
    }
}

/// A create recorded (or found, for a retry), with what it sealed on the way.
#[derive(Debug)]
pub(crate) struct Created {
    pub(crate) written: Written,
    pub(crate) sealed_here: keys::SealedHere,
}

/// A reroute carried out: the original, now linked, and its replacement.
#[derive(Debug, Clone)]
pub(crate) struct Rerouted {
    pub(crate) original: Written,
    pub(crate) child: Written,
}

/// What an agency is to a referral it asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Its sender or recipient.
    Party,
    /// An agency an escalation of it notified.
    Notified,
}

/// Which sealed payloads of a create the client sealed itself (end to end). A retry must then
/// carry the very same envelope; what the adapter sealed is sealed afresh on every attempt and
/// is compared by its plaintext instead.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EndToEnd {
    pub(crate) identity: bool,
    pub(crate) note: bool,
    pub(crate) justification: bool,
}

/// A creation's identity, note and consent justification, sealed.
type SealedParts = (
    Option<refbus_core::referral::SealedPayload>,
    Option<refbus_core::referral::SealedPayload>,
    Option<refbus_core::referral::SealedPayload>,
);

/// Which payload of a create a deferred plaintext is.
#[derive(Debug, Clone, Copy)]
enum Deferred {
    Identity,
    Note,
    Justification,
}

/// Seals a decided creation's placeholders.
type Sealing<'a> = dyn FnMut(&Creation) -> Result<SealedParts, Status> + Send + 'a;

/// A referral as loaded for a request.
pub(crate) struct Loaded {
    pub(crate) stored: Stored<EventRecord>,
    pub(crate) access: Access,
}

/// A sealer that only checks: used to validate every field before anything is read or sealed.
fn validating_sealer(
    _: SealTarget<'_>,
    _: &[u8],
) -> Result<refbus_core::referral::SealedPayload, SealError> {
    Ok(refbus_core::referral::SealedPayload {
        recipients: Vec::new(),
        envelope: Vec::new(),
    })
}

impl Adapter {
    fn actor(&self, caller: Caller) -> Actor {
        Actor::Agency {
            agency: self.inner.agency.clone(),
            operator: caller.operator,
            system: caller.system,
        }
    }

    /// The idempotency key of this agency's request `request_id`; `link` for the second
    /// record a request makes (a reroute's link on the original, after the child's creation).
    fn key<'a>(&'a self, request_id: &'a RequestId, link: bool) -> Idempotency<'a> {
        let agency = &self.inner.agency;
        if link {
            Idempotency::RequestLink { agency, request_id }
        } else {
            Idempotency::Request { agency, request_id }
        }
    }

    /// The current state of a referral, and what this agency is to it. Found by the agency's
    /// own subjects first (fast), then through a notice it received. A referral this agency has
    /// no part in is not looked for at all: it is answered as if it did not exist, so that a
    /// non-party cannot learn whether a referral id exists (nor from the time the answer takes).
    pub(crate) async fn load(&self, id: &ReferralId) -> Result<Option<Loaded>, Status> {
        let bus = &self.inner.bus;
        for pattern in subjects::referral_patterns_for(&self.inner.agency, id) {
            if let Some(stored) = self.find(&pattern, id).await? {
                return Ok(Some(Loaded {
                    stored,
                    access: Access::Party,
                }));
            }
        }
        let notice = bus
            .last_notice(&subjects::notice(&self.inner.agency, id))
            .await
            .map_err(|err| status::read(&err))?;
        let Some(notice) = notice else {
            return Ok(None);
        };
        let subject = subjects::referral(&notice.record.recipient, &notice.record.sender, id);
        let stored = self.find(&subject, id).await?;
        Ok(stored.map(|stored| Loaded {
            stored,
            access: Access::Notified,
        }))
    }

    /// The checked current state of referral `id` on the subjects matching `pattern`. Only a
    /// subject whose records pass the check counts: a look-alike subject written by another
    /// agency (a shadow copy, a forged creation) is never taken for the referral.
    async fn find(
        &self,
        pattern: &str,
        id: &ReferralId,
    ) -> Result<Option<Stored<EventRecord>>, Status> {
        let (bus, verifier) = (&self.inner.bus, &self.inner.verifier);
        let read = |err: refbus_bus::ReadError| status::read(&err);
        // Usually the last message matching the pattern is on the referral's own subject.
        let Some(last) = bus.last_subject(pattern).await.map_err(read)? else {
            return Ok(None);
        };
        if let Some(stored) = bus.referral(verifier, &last).await.map_err(read)?
            && stored.record.state.id == *id
        {
            return Ok(Some(stored));
        }
        // Something else was written last: look at every subject that holds a valid creation.
        for subject in bus
            .checked_subjects(verifier, pattern)
            .await
            .map_err(read)?
        {
            if let Some(stored) = bus.referral(verifier, &subject).await.map_err(read)?
                && stored.record.state.id == *id
            {
                return Ok(Some(stored));
            }
        }
        Ok(None)
    }

    /// Runs a command on an existing referral, riding through an outage of the bus.
    pub(crate) async fn execute<R: CommandRequest>(
        &self,
        operator: Caller,
        request: &R,
    ) -> Result<Written, Status> {
        self.riding_through(|| self.execute_once(operator.clone(), request))
            .await
    }

    /// One attempt of [`Adapter::execute`].
    async fn execute_once<R: CommandRequest>(
        &self,
        operator: Caller,
        request: &R,
    ) -> Result<Written, Status> {
        // Every field is checked before anything is read, so bad input costs nothing.
        let parsed = request
            .parse(&mut validating_sealer)
            .map_err(|err| status::field(&err))?;
        let referral_id = parsed.referral_id;
        self.execute_with(
            operator,
            &parsed.request_id,
            &referral_id,
            false,
            |state, keyring| {
                let (sender, recipient) = (state.sender(), state.recipient());
                let mut sealer = keys::sealer(keyring, state.id, Some((sender, recipient)));
                request
                    .command(&mut sealer)
                    .map_err(|err| status::field(&err))
            },
        )
        .await
    }

    /// Load, build the command (sealing for the referral's parties), decide, append; again if
    /// another writer got there first.
    async fn execute_with(
        &self,
        operator: Caller,
        request_id: &RequestId,
        referral_id: &ReferralId,
        link: bool,
        build: impl Fn(&Referral, &refbus_seal::Keyring) -> Result<Command, Status>,
    ) -> Result<Written, Status> {
        let inner = &self.inner;
        for _ in 0..=inner.options.conflict_retries {
            let Some(Loaded { stored, .. }) = self.load(referral_id).await? else {
                return Err(status::not_found(&referral_id.to_string()));
            };
            if self.is_own_request(&stored.record.event, request_id) {
                return Ok(Written::from_stored(stored, true));
            }
            let command = build(&stored.record.state, &inner.keyring)?;
            let request = Request {
                command,
                actor: self.actor(operator.clone()),
                request_id: Some(request_id.clone()),
            };
            let recorded = match record(
                &inner.registry,
                Some(&stored.record.state),
                &request,
                self.now(),
            ) {
                Ok(recorded) => recorded,
                Err(RecordError::Rejected(rejection)) => {
                    if let Some(original) = self.find_request(&stored.subject, request_id).await? {
                        return Ok(original);
                    }
                    return Err(status::rejection(&rejection, &referral_id.to_string()));
                }
                Err(err) => return Err(status::record(&err)),
            };
            let state = recorded.state;
            let append =
                Append::following(recorded.event, &state, &stored, self.key(request_id, link));
            match inner
                .metrics
                .time_append(inner.bus.append(&inner.signing, append))
                .await
            {
                Ok((appended, _)) if appended.duplicate => {
                    return self.replay_at(appended.seq, referral_id).await;
                }
                Ok((appended, record)) => {
                    return Ok(Written {
                        event: record.event,
                        state,
                        seq: appended.seq,
                        replayed: false,
                    });
                }
                Err(err) if err.kind() == AppendErrorKind::Conflict => continue,
                Err(err) => return Err(status::append(&err)),
            }
        }
        Err(status::kept_changing())
    }

    fn is_own_request(&self, event: &Event, request_id: &RequestId) -> bool {
        event.request_id.as_ref() == Some(request_id)
            && event.actor.agency() == Some(&self.inner.agency)
    }

    /// The event an earlier attempt of this request recorded on the referral, if any.
    async fn find_request(
        &self,
        subject: &str,
        request_id: &RequestId,
    ) -> Result<Option<Written>, Status> {
        let history = self
            .inner
            .bus
            .checked_history(&self.inner.verifier, subject)
            .await
            .map_err(|err| status::read(&err))?;
        Ok(history
            .into_iter()
            .find(|stored| self.is_own_request(&stored.record.event, request_id))
            .map(|stored| Written::from_stored(stored, true)))
    }

    /// The original answer to a request the bus recognised by its id, provided the id was
    /// used for this same referral: a request id reused for another referral is refused.
    async fn replay_at(&self, seq: u64, referral: &ReferralId) -> Result<Written, Status> {
        let stored = self
            .inner
            .bus
            .event_at(seq)
            .await
            .map_err(|err| status::read(&err))?;
        match stored {
            Some(stored) if &stored.record.event.referral_id == referral => {
                // The original, as the check establishes it.
                let history = self
                    .inner
                    .bus
                    .checked_history(&self.inner.verifier, &stored.subject)
                    .await
                    .map_err(|err| status::read(&err))?;
                history
                    .into_iter()
                    .find(|checked| checked.seq == seq)
                    .map(|checked| Written::from_stored(checked, true))
                    .ok_or_else(|| status::refused_record(seq))
            }
            Some(stored) => Err(status::request_id_reused(
                stored.record.event.request_id.as_ref(),
                &stored.record.event.referral_id,
            )),
            None => Err(status::lost_record(seq)),
        }
    }

    /// Runs `attempt` again while it fails `UNAVAILABLE` (the bus did not answer, or the
    /// outcome of an append is unknown), until `Options::ride_through` has passed: then its
    /// last answer. Between attempts it waits for the connection to be up again (a client
    /// reconnects to another node of a cluster within tens of milliseconds) and backs off a
    /// little (a stream without a leader answers at once that it has none).
    ///
    /// Safe only for attempts that are idempotent by their request id, as every command here
    /// is: a retry carries the same idempotency key (`Nats-Msg-Id`) and finds an earlier
    /// attempt that was stored (see the module's documentation). Reads (GetReferral and
    /// ListReferrals) ride through the same way: reading again is always safe.
    pub(crate) async fn riding_through<T, F, Fut>(&self, mut attempt: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        const FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);
        const LONGEST_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);
        let deadline = tokio::time::Instant::now() + self.inner.options.ride_through;
        let mut pause = FIRST_PAUSE;
        let mut retries = 0_u32;
        loop {
            // Boxed: the attempts' futures are large, and this loop holds one at a time.
            let outcome = Box::pin(attempt()).await;
            match outcome {
                Err(status) if status::is_bus_unavailable(&status) => {
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        if retries > 0 {
                            tracing::warn!(
                                retries,
                                "the bus stayed unavailable for the whole ride-through; answering UNAVAILABLE"
                            );
                        }
                        return Err(status);
                    }
                    retries += 1;
                    let mut connected = self.inner.bus.connection();
                    let _ = tokio::time::timeout_at(deadline, connected.wait_for(|up| *up)).await;
                    tokio::time::sleep_until((tokio::time::Instant::now() + pause).min(deadline))
                        .await;
                    pause = (pause * 2).min(LONGEST_PAUSE);
                }
                outcome => {
                    if retries > 0 {
                        tracing::info!(
                            retries,
                            ok = outcome.is_ok(),
                            "rode through an outage of the bus"
                        );
                    }
                    return outcome;
                }
            }
        }
    }

    // === create ===

    /// Creates a referral, riding through an outage of the bus.
    pub(crate) async fn create(
        &self,
        operator: Caller,
        request: &v1::CreateReferralRequest,
    ) -> Result<Created, Status> {
        self.riding_through(|| self.create_once(operator.clone(), request))
            .await
    }

    /// One attempt of [`Adapter::create`].
    async fn create_once(
        &self,
        operator: Caller,
        request: &v1::CreateReferralRequest,
    ) -> Result<Created, Status> {
        let inner = &self.inner;
        let watch = self.stopwatch();
        let validation = watch.now();
        // One reading of now for the whole create: the policy in force and the event's time.
        let now = self.now();
        let policy = inner
            .registry
            .policy_in_force(now)
            .ok_or_else(|| status::no_policy(now))?;
        // One conversion. Its sealer seals nothing yet: it keeps each plaintext aside and puts
        // in the creation a placeholder naming the agencies it will be sealed for, so the core
        // decides on everything else first and bad input costs no sealing.
        let mut deferred: Vec<(Deferred, Vec<u8>)> = Vec::new();
        let own = inner.agency.clone();
        let mut deferring = |target: SealTarget<'_>, plaintext: &[u8]| {
            let Some(recipient) = target.recipient() else {
                return Err(SealError("no referral to seal for".to_owned()));
            };
            let kind = match target {
                SealTarget::Identity { .. } => Deferred::Identity,
                SealTarget::Note { .. } => Deferred::Note,
                SealTarget::Justification { .. } => Deferred::Justification,
            };
            deferred.push((kind, plaintext.to_vec()));
            Ok(refbus_core::referral::SealedPayload::placeholder(vec![
                own.clone(),
                recipient.clone(),
            ]))
        };
        let reckoning = convert::AgeReckoning {
            now,
            offset: self.offset_at(now),
        };
        let new = convert::create_referral(
            request,
            &inner.agency,
            &policy.version,
            reckoning,
            &mut deferring,
        )
        .map_err(|err| status::field(&err))?;
        watch.add(Stage::Validation, watch.since(validation));
        let request_id = new.request_id.clone();
        let referral_id = new.referral_id();
        let end_to_end = EndToEnd {
            identity: matches!(
                request.person,
                Some(v1::create_referral_request::Person::SealedIdentity(_))
            ),
            note: request.sealed_note.is_some(),
            justification: request
                .consent
                .as_ref()
                .is_some_and(|consent| consent.sealed_override_justification.is_some()),
        };
        let mut sealed_here = keys::SealedHere::default();
        let keyring = &inner.keyring;
        // One content key for the whole create: identity, note and justification share one set
        // of key wraps (one HPKE wrap per key of the sender and the recipient, backups
        // included), each payload with its own nonce and context.
        let mut seal = |creation: &Creation| -> Result<SealedParts, Status> {
            let mut parts = (
                creation.identity.clone(),
                creation.note.clone(),
                creation.consent.override_justification.clone(),
            );
            if deferred.is_empty() {
                return Ok(parts);
            }
            let parties = [&creation.sender, &creation.recipient];
            let batch = keyring
                .batch_for(&parties, Context::Identity(&referral_id))
                .map_err(|err| status::sealing(&SealError(err.to_string())))?;
            for (kind, plaintext) in deferred.drain(..) {
                let context = match kind {
                    Deferred::Identity => Context::Identity(&referral_id),
                    Deferred::Note => Context::Note(&referral_id),
                    Deferred::Justification => Context::Justification(&referral_id),
                };
                let sealed = batch
                    .seal_in(&plaintext, context)
                    .map_err(|err| status::sealing(&SealError(err.to_string())))?;
                sealed_here.remember(&sealed, &plaintext);
                match kind {
                    Deferred::Identity => parts.0 = Some(sealed),
                    Deferred::Note => parts.1 = Some(sealed),
                    Deferred::Justification => parts.2 = Some(sealed),
                }
            }
            Ok(parts)
        };
        let written = self
            .create_referral(
                operator,
                &request_id,
                new.creation,
                end_to_end,
                now,
                Some(&mut seal),
            )
            .await?;
        watch.count_create();
        Ok(Created {
            written,
            sealed_here,
        })
    }

    /// The offset from UTC of this agency's time zone (its working hours') at `now`, where a
    /// person's age is counted; UTC+7 (WIB) for an agency the registry no longer lists.
    fn offset_at(&self, now: Timestamp) -> chrono::FixedOffset {
        use chrono::Offset;
        match self.inner.registry.agency(&self.inner.agency) {
            Some(agency) => now
                .to_chrono()
                .with_timezone(&agency.working_hours.time_zone)
                .offset()
                .fix(),
            None => chrono::FixedOffset::east_opt(7 * 3600).expect("UTC+7 is a valid offset"),
        }
    }

    /// Decides and appends a new referral at `now`; a retry finds the referral it made, and a
    /// request id reused for a referral that differs in anything (sealed content included) is
    /// refused. `seal`, if given, seals the creation's placeholders once the core has allowed
    /// it (see [`refbus_core::Recorded::with_sealed_creation`]).
    async fn create_referral(
        &self,
        operator: Caller,
        request_id: &RequestId,
        creation: Creation,
        end_to_end: EndToEnd,
        now: Timestamp,
        seal: Option<&mut Sealing<'_>>,
    ) -> Result<Written, Status> {
        let inner = &self.inner;
        let watch = self.stopwatch();
        let deciding = watch.now();
        let request = Request {
            command: Command::Create(Box::new(creation)),
            actor: self.actor(operator),
            request_id: Some(request_id.clone()),
        };
        let mut recorded = match record(&inner.registry, None, &request, now) {
            Ok(recorded) => recorded,
            Err(RecordError::Rejected(rejection)) => {
                return Err(status::rejection(&rejection, "(new)"));
            }
            Err(err) => return Err(status::record(&err)),
        };
        // Boxed: its reads would otherwise sit inline in every create's future. Timed poll by
        // poll: the time it waits for the server belongs to no stage.
        let reading = watch.now();
        watch
            .time_polls(
                Stage::Read,
                Box::pin(self.refuse_reuse_for_another_recipient(&recorded.state)),
            )
            .await?;
        let read_wall = watch.since(reading);
        let mut sealing = std::time::Duration::ZERO;
        if let Some(seal) = seal {
            let start = watch.now();
            let (identity, note, justification) = seal(&recorded.state.creation)?;
            sealing = watch.since(start);
            recorded = recorded
                .with_sealed_creation(identity, note, justification)
                .map_err(|err| status::record(&err))?;
        }
        watch.add(Stage::Sealing, sealing);
        watch.add(
            Stage::Event,
            watch
                .since(deciding)
                .saturating_sub(sealing)
                .saturating_sub(read_wall),
        );
        let creation = recorded.state.creation.clone();
        let state = recorded.state;
        let subject = subjects::referral(state.recipient(), state.sender(), &state.id);
        let append = Append::after(recorded.event, &state, 0, self.key(request_id, false));
        let first = match watch
            .time_polls(
                Stage::Publish,
                inner
                    .metrics
                    .time_append(inner.bus.append(&inner.signing, append)),
            )
            .await
        {
            // The bus knows the message id: the referral exists, maybe on another subject (a
            // create that names another recipient).
            Ok((appended, _)) if appended.duplicate => {
                self.replay_at(appended.seq, &state.id).await?
            }
            Ok((appended, record)) => {
                return Ok(Written {
                    event: record.event,
                    state,
                    seq: appended.seq,
                    replayed: false,
                });
            }
            Err(err) if err.kind() == AppendErrorKind::Conflict => {
                // The referral exists: this request made it before, or the request id was reused
                // for something else.
                let first = inner
                    .bus
                    .checked_creation(&inner.verifier, &subject)
                    .await
                    .map_err(|err| status::read(&err))?;
                let Some(first) = first else {
                    return Err(status::append(&err));
                };
                // The attempt that made it may have stopped before its index entry was
                // stored: added now (a no-op if it was).
                Box::pin(inner.bus.index_retried(&first))
                    .await
                    .map_err(|err| status::append(&err))?;
                Written::from_stored(first, true)
            }
            Err(err) => return Err(status::append(&err)),
        };
        match &first.event.change {
            refbus_core::Change::Created(existing)
                if self.same_referral(existing, &creation, &state.id, end_to_end) =>
            {
                Ok(first)
            }
            _ => Err(status::rejection(
                &refbus_core::Rejection::AlreadyExists {
                    referral: state.id.to_string(),
                },
                &state.id.to_string(),
            )),
        }
    }

    /// Refuses a create whose referral already exists for another recipient: its id derives
    /// from the sender and the request id alone, so a request id reused with another recipient
    /// names the same referral on another subject, which the append's expected sequence cannot
    /// see, and the bus's deduplication forgets it after its window (7 days). One wildcard read
    /// (`ref.*.<sender>.<id>`), which finds nothing for a new request id; only a subject that
    /// holds a valid creation of this referral counts, so a look-alike another agency wrote
    /// cannot block a create.
    async fn refuse_reuse_for_another_recipient(&self, state: &Referral) -> Result<(), Status> {
        let (bus, verifier) = (&self.inner.bus, &self.inner.verifier);
        let read = |err: refbus_bus::ReadError| status::read(&err);
        let own = subjects::referral(state.recipient(), state.sender(), &state.id);
        let pattern = subjects::referral_sent_pattern(state.sender(), &state.id);
        let exists = || {
            status::rejection(
                &refbus_core::Rejection::AlreadyExists {
                    referral: state.id.to_string(),
                },
                &state.id.to_string(),
            )
        };
        let last = match bus.last_subject(&pattern).await.map_err(read)? {
            None => return Ok(()),
            Some(last) if last == own => return Ok(()),
            Some(last) => last,
        };
        // Usually the subject written last is the referral's: its creation is one more read.
        if bus
            .checked_creation(verifier, &last)
            .await
            .map_err(read)?
            .is_some_and(|created| created.record.state.id == state.id)
        {
            return Err(exists());
        }
        // Something else was written last (only a hostile writer does that): every subject.
        for subject in bus
            .checked_subjects(verifier, &pattern)
            .await
            .map_err(read)?
        {
            if subject != own {
                return Err(exists());
            }
        }
        Ok(())
    }

    /// Whether an existing referral is the one a retried create describes, field by field.
    /// Payloads the adapter sealed are compared by their plaintext, opened with this agency's
    /// key (both are sealed for it): nothing like a digest of an identity is ever stored where
    /// other readers of the bus could test a guess against it. Payloads the client sealed end
    /// to end must be the same envelope, byte for byte.
    fn same_referral(
        &self,
        existing: &Creation,
        retried: &Creation,
        referral: &ReferralId,
        end_to_end: EndToEnd,
    ) -> bool {
        let comparable = |creation: &Creation| {
            let mut creation = creation.clone();
            creation.identity = None;
            creation.note = None;
            creation.consent.override_justification = None;
            // A retry after the policy changed still describes the same referral.
            creation.policy_version = existing.policy_version.clone();
            creation
        };
        comparable(existing) == comparable(retried)
            && self.same_sealed(
                existing.identity.as_ref(),
                retried.identity.as_ref(),
                &Context::Identity(referral),
                end_to_end.identity,
            )
            && self.same_sealed(
                existing.note.as_ref(),
                retried.note.as_ref(),
                &Context::Note(referral),
                end_to_end.note,
            )
            && self.same_sealed(
                existing.consent.override_justification.as_ref(),
                retried.consent.override_justification.as_ref(),
                &Context::Justification(referral),
                end_to_end.justification,
            )
    }

    fn same_sealed(
        &self,
        existing: Option<&refbus_core::referral::SealedPayload>,
        retried: Option<&refbus_core::referral::SealedPayload>,
        context: &Context<'_>,
        end_to_end: bool,
    ) -> bool {
        match (existing, retried) {
            (None, None) => true,
            (Some(existing), Some(retried)) if existing == retried => true,
            (Some(existing), Some(retried)) if !end_to_end => {
                let keyring = &self.inner.keyring;
                match (
                    keyring.open(existing, *context),
                    keyring.open(retried, *context),
                ) {
                    (Ok(existing), Ok(retried)) => existing == retried,
                    // What this agency cannot open, it cannot call the same.
                    _ => false,
                }
            }
            _ => false,
        }
    }

    // === reroute ===

    /// Moves a referral this agency sent to another agency: creates the linked child referral
    /// (re-sealing the identity for the new recipient) and records the reroute on the original.
    /// A retry with the same request id finishes what an interrupted attempt started.
    pub(crate) async fn reroute(
        &self,
        operator: Caller,
        request: &v1::RerouteReferralRequest,
    ) -> Result<Rerouted, Status> {
        self.riding_through(|| self.reroute_once(operator.clone(), request))
            .await
    }

    /// One attempt of [`Adapter::reroute`].
    async fn reroute_once(
        &self,
        operator: Caller,
        request: &v1::RerouteReferralRequest,
    ) -> Result<Rerouted, Status> {
        let inner = &self.inner;
        let request_id = convert::fields::id("request_id", &request.request_id, RequestId::new)
            .map_err(|err| status::field(&err))?;
        let child_id = ReferralId::derive(&inner.agency, &request_id);
        // The new recipient must exist before anything is sealed for it.
        let to = convert::fields::id("to", &request.to, AgencyId::new)
            .map_err(|err| status::field(&err))?;
        if inner.registry.agency(&to).is_none() {
            return Err(status::field(&FieldError::new(
                "to",
                format!("unknown agency {to}"),
            )));
        }
        let mut sealer = keys::sealer(&inner.keyring, child_id, None);
        let order =
            convert::reroute_referral(request, &mut sealer).map_err(|err| status::field(&err))?;
        let end_to_end = EndToEnd {
            identity: order.sealed_identity.is_some(),
            note: request.sealed_note.is_some(),
            justification: false,
        };
        self.reroute_to(
            operator,
            &request_id,
            &order.referral_id,
            &order.to,
            (order.note, order.sealed_identity),
            end_to_end,
        )
        .await
    }

    /// The reroute itself, shared by the RPC and by reroutes the router asks for. `sealed` are
    /// the child's note and the identity the client sealed end to end, if any.
    pub(crate) async fn reroute_to(
        &self,
        operator: Caller,
        request_id: &RequestId,
        original_id: &ReferralId,
        to: &AgencyId,
        sealed: (
            Option<refbus_core::referral::SealedPayload>,
            Option<refbus_core::referral::SealedPayload>,
        ),
        end_to_end: EndToEnd,
    ) -> Result<Rerouted, Status> {
        let (note, sealed_identity) = sealed;
        let inner = &self.inner;
        let now = self.now();
        let child_id = ReferralId::derive(&inner.agency, request_id);
        let Some(Loaded {
            stored: original, ..
        }) = self.load(original_id).await?
        else {
            return Err(status::not_found(&original_id.to_string()));
        };
        let link = Command::RecordReroute {
            child: child_id,
            to: to.clone(),
        };
        let dry_run = Request {
            command: link.clone(),
            actor: self.actor(operator.clone()),
            request_id: Some(request_id.clone()),
        };
        if let Err(rejection) = decide(&inner.registry, Some(&original.record.state), &dry_run, now)
        {
            // A retry of a reroute that finished: answer with what it did.
            if let Some(done) = self.find_request(&original.subject, request_id).await? {
                let child = self
                    .load(&child_id)
                    .await?
                    .ok_or_else(|| status::not_found(&child_id.to_string()))?;
                return Ok(Rerouted {
                    original: done,
                    child: Written::from_stored(child.stored, true),
                });
            }
            return Err(status::rejection(&rejection, &original_id.to_string()));
        }

        let (resealed_identity, justification) = self
            .reseal_creation(&original, &child_id, to, sealed_identity.is_none())
            .await?;
        let identity = sealed_identity.or(resealed_identity);
        let policy = inner
            .registry
            .policy_in_force(now)
            .ok_or_else(|| status::no_policy(now))?;
        let child_creation = original.record.state.reroute_child(
            to,
            identity,
            note,
            justification,
            policy.version.clone(),
        );
        let child = self
            .create_referral(
                operator.clone(),
                request_id,
                child_creation,
                end_to_end,
                now,
                None,
            )
            .await?;
        let original = self
            .execute_with(operator, request_id, original_id, true, |_, _| {
                Ok(link.clone())
            })
            .await?;
        Ok(Rerouted { original, child })
    }

    /// The original's identity and consent justification, opened with this agency's key and
    /// sealed anew for this agency and the new recipient (one content key for both), bound to
    /// the child referral.
    async fn reseal_creation(
        &self,
        original: &Stored<EventRecord>,
        child_id: &ReferralId,
        to: &AgencyId,
        with_identity: bool,
    ) -> Result<
        (
            Option<refbus_core::referral::SealedPayload>,
            Option<refbus_core::referral::SealedPayload>,
        ),
        Status,
    > {
        let keyring = &self.inner.keyring;
        let creation = self
            .inner
            .bus
            .checked_creation(&self.inner.verifier, &original.subject)
            .await
            .map_err(|err| status::read(&err))?;
        let Some(mut creation) = creation.map(|first| first.record.state.creation) else {
            return Ok((None, None));
        };
        if !with_identity {
            // The client sealed the child's identity end to end.
            creation.identity = None;
        }
        let original_id = &original.record.state.id;
        let opened = [
            (creation.identity, Context::Identity(original_id)),
            (
                creation.consent.override_justification,
                Context::Justification(original_id),
            ),
        ]
        .map(|(sealed, context)| {
            sealed
                .map(|sealed| keyring.open(&sealed, context))
                .transpose()
                .map_err(|err| status::cannot_reseal(&err))
        });
        let [identity, justification] = opened;
        let (identity, justification) = (identity?, justification?);
        if identity.is_none() && justification.is_none() {
            return Ok((None, None));
        }
        let to_field =
            |err: refbus_seal::SealError| status::field(&FieldError::new("to", err.to_string()));
        let batch = keyring
            .batch_for(&[keyring.agency(), to], Context::Identity(child_id))
            .map_err(to_field)?;
        let identity = identity
            .map(|plaintext| batch.seal_in(&plaintext, Context::Identity(child_id)))
            .transpose()
            .map_err(to_field)?;
        let justification = justification
            .map(|plaintext| batch.seal_in(&plaintext, Context::Justification(child_id)))
            .transpose()
            .map_err(to_field)?;
        Ok((identity, justification))
    }
}
