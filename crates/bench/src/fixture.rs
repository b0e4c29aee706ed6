//! What the benchmark sends: creates from Dinas Sosial to UPTD PPA for a shelter (anonymous,
//! or with an identity and a note to seal), the agencies' keys, and the exact message the
//! adapter would publish for a create, for the raw JetStream phases.

use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use prost::Message as _;
use refbus_bus::{EventRecord, headers, subjects};
use refbus_core::command::{Command, Request};
use refbus_core::ids::OperatorId;
use refbus_core::referral::SealedPayload;
use refbus_core::{Actor, AgencyId, ReferralId, Registry, RequestId, Timestamp, decide, evolve};
use refbus_proto::convert::{self, SealError, SealTarget};
use refbus_proto::v1;
use refbus_seal::{KeyPair, Keyring, PublicKey, SecretKey};

use crate::BenchError;

/// The agency whose adapter the benchmark calls.
pub const SENDER: &str = "maros-dinsos";
/// Where its referrals go.
pub const RECIPIENT: &str = "maros-uptd-ppa";
/// The service asked for.
pub const SERVICE: &str = "shelter";

/// The registry, the two agencies and everyone's keys (made afresh for each run).
pub struct Fixture {
    pub registry: Arc<Registry>,
    pub sender: AgencyId,
    pub recipient: AgencyId,
    pub operator: String,
    keys: Vec<(AgencyId, KeyPair)>,
    /// The backup key of the recipient (its public half only is used: the offline key).
    recipient_backup: KeyPair,
}

/// With or without identity data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Person {
    /// No identity and no note: the survivor stays behind the case code.
    Anonymous,
    /// A `ClientIdentity` and a note, both sealed by the adapter.
    Identified,
}

impl Fixture {
    pub fn new(registry: Arc<Registry>) -> Result<Fixture, BenchError> {
        let agency = |name: &str| -> Result<AgencyId, BenchError> {
            let id = AgencyId::new(name).map_err(|err| BenchError::Setup(err.to_string()))?;
            if registry.agency(&id).is_none() {
                return Err(BenchError::Setup(format!(
                    "the registry has no agency {name}: the benchmark sends referrals from \
                     {SENDER} to {RECIPIENT} for {SERVICE} (the Kabupaten Maros registry)"
                )));
            }
            Ok(id)
        };
        let sender = agency(SENDER)?;
        let recipient = agency(RECIPIENT)?;
        let keys = registry
            .agencies
            .keys()
            .map(|agency| (agency.clone(), KeyPair::generate()))
            .collect();
        Ok(Fixture {
            operator: format!("operator@{sender}"),
            registry,
            sender,
            recipient,
            keys,
            recipient_backup: KeyPair::generate(),
        })
    }

    /// `agency`'s keyring, with every agency's public key.
    pub fn keyring(&self, agency: &AgencyId) -> Result<Keyring, BenchError> {
        let pair = self
            .keys
            .iter()
            .find(|(id, _)| id == agency)
            .map(|(_, pair)| pair)
            .ok_or_else(|| BenchError::Setup(format!("no keys for {agency}")))?;
        let secret = SecretKey::from_base64(&pair.secret().to_base64())
            .map_err(|err| BenchError::Setup(err.to_string()))?;
        let directory: Vec<(AgencyId, PublicKey)> = self
            .keys
            .iter()
            .map(|(id, pair)| (id.clone(), pair.public().clone()))
            .collect();
        // The recipient's head keeps a backup key offline, so everything sealed for the
        // recipient is wrapped for it too: the configuration the sealing goal is set for.
        Ok(Keyring::new(agency.clone(), secret, directory)
            .map_err(|err| BenchError::Setup(err.to_string()))?
            .with_backup_keys([(
                self.recipient.clone(),
                self.recipient_backup.public().clone(),
            )]))
    }

    /// A create with a request id of its own (`<phase>-<index>`).
    pub fn create_request(
        &self,
        phase: &str,
        index: usize,
        person: Person,
    ) -> v1::CreateReferralRequest {
        let (person, note) = match person {
            Person::Anonymous => (None, String::new()),
            Person::Identified => (
                Some(v1::create_referral_request::Person::Identity(identity())),
                NOTE.to_owned(),
            ),
        };
        v1::CreateReferralRequest {
            request_id: format!("bench-{phase}-{index}"),
            recipient: self.recipient.to_string(),
            case_id: format!("MRS-2026-{index:06}"),
            service: SERVICE.to_owned(),
            priority: v1::Priority::Urgent.into(),
            categories: vec!["domestic_violence".to_owned()],
            child: false,
            consent: Some(v1::Consent {
                services: true,
                disclose_to_agencies: true,
                override_justification: String::new(),
                sealed_override_justification: None,
            }),
            case_reported_at: None,
            person,
            note,
            sealed_note: None,
            sex: Default::default(),
            age_band: Default::default(),
        }
    }

    /// The message the sender's adapter publishes for an anonymous create: the same payload,
    /// headers, message id and expected subject sequence as `Bus::append`.
    pub fn event_message(
        &self,
        request: &v1::CreateReferralRequest,
        now: Timestamp,
    ) -> Result<(String, PublishMessage), BenchError> {
        let (subject, record) = self.event_record(request, now)?;
        let request_id = RequestId::new(request.request_id.clone())
            .map_err(|err| BenchError::Setup(err.to_string()))?;
        let mut headers = HeaderMap::new();
        headers::insert_cloudevent(&mut headers, &record.event);
        headers::inject_trace_context(&mut headers);
        headers.insert(headers::KIND, "event");
        headers.insert(headers::PREV_SEQ, "0");
        let message = PublishMessage::build()
            .payload(record.encode())
            .headers(headers)
            .message_id(message_id(&self.sender, &request_id))
            .expected_last_subject_sequence(0);
        Ok((subject, message))
    }

    /// The record (event, hash, signature, state) the sender's adapter writes for an anonymous
    /// create, and its subject.
    pub fn event_record(
        &self,
        request: &v1::CreateReferralRequest,
        now: Timestamp,
    ) -> Result<(String, EventRecord), BenchError> {
        let setup = |message: String| BenchError::Setup(message);
        let policy = self
            .registry
            .policy_in_force(now)
            .ok_or_else(|| setup(format!("no clock policy in force at {now}")))?;
        let mut no_sealing = |_: SealTarget<'_>, _: &[u8]| -> Result<SealedPayload, SealError> {
            Err(SealError(
                "the raw phases publish anonymous creates".to_owned(),
            ))
        };
        // Anonymous creates give no birth date: the offset only matters for deriving an age.
        let reckoning = convert::AgeReckoning {
            now,
            offset: chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset"),
        };
        let new = convert::create_referral(
            request,
            &self.sender,
            &policy.version,
            reckoning,
            &mut no_sealing,
        )
        .map_err(|err| setup(err.to_string()))?;
        let request_id = new.request_id.clone();
        let decision = decide(
            &self.registry,
            None,
            &Request {
                command: Command::Create(Box::new(new.creation)),
                actor: Actor::Agency {
                    agency: self.sender.clone(),
                    system: None,
                    operator: OperatorId::new(self.operator.clone())
                        .map_err(|err| setup(err.to_string()))?,
                },
                request_id: Some(request_id.clone()),
            },
            now,
        )
        .map_err(|rejection| setup(format!("the core refuses the create: {rejection}")))?;
        let event = decision
            .events
            .into_iter()
            .next()
            .ok_or_else(|| setup("the core decided no event".to_owned()))?;
        let state = evolve(None, &event).map_err(|err| setup(err.to_string()))?;
        let subject = subjects::referral(state.recipient(), state.sender(), &state.id);
        let key = crate::signing_keys(&self.registry).agency(state.sender());
        let record = EventRecord::new(event, &state, &subject, &key);
        Ok((subject, record))
    }

    /// The referral id a create's request id leads to.
    pub fn referral_id(
        &self,
        request: &v1::CreateReferralRequest,
    ) -> Result<ReferralId, BenchError> {
        let request_id = RequestId::new(request.request_id.clone())
            .map_err(|err| BenchError::Setup(err.to_string()))?;
        Ok(ReferralId::derive(&self.sender, &request_id))
    }
}

/// The adapter's message id for a create.
fn message_id(agency: &AgencyId, request_id: &RequestId) -> String {
    refbus_bus::Idempotency::Request { agency, request_id }.message_id()
}

/// A note of a typical length.
pub const NOTE: &str = "Anak perlu rumah aman malam ini; ibu korban meminta pendampingan saat \
                        pemeriksaan dan tidak ingin pelaku mengetahui lokasi rumah aman.";

/// An identity of typical length and shape.
pub fn identity() -> v1::ClientIdentity {
    v1::ClientIdentity {
        full_name: "Siti Contoh Korban".to_owned(),
        nik: "7309014503120001".to_owned(),
        birth_date: "1994-03-05".to_owned(),
        sex: v1::Sex::Female.into(),
        address: "Dusun Bonto Tangnga RT 002/RW 001, Desa Bontoa, Kec. Bontoa".to_owned(),
        phone: "+62-812-0000-4242".to_owned(),
        narrative: "Korban kekerasan dalam rumah tangga oleh suami; saat ini tinggal bersama \
                    orang tua dan dua anaknya."
            .to_owned(),
        guardian_name: String::new(),
    }
}

/// The identity as the adapter seals it (an encoded `ClientIdentity`).
pub fn identity_plaintext() -> Vec<u8> {
    identity().encode_to_vec()
}
