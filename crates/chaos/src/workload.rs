//! The workload: simulated agency systems calling their adapters over gRPC, as real systems
//! would. Senders create referrals; recipients accept some of them after a while (so that
//! clocks fall due on the others), both sides add notes, and every agency watching its inbox
//! acknowledges some of the escalations that notify it.
//!
//! Every operation's outcome is logged with its idempotency key: `ok`, `failed` (a definite
//! refusal: nothing recorded) or `unknown` (UNAVAILABLE, DEADLINE_EXCEEDED, a broken
//! connection: it may or may not have been recorded). An unknown operation is retried with the
//! same request_id, as the API asks of clients, until it is definite or the campaign gives up.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use refbus_proto::OPERATOR_METADATA_KEY;
use refbus_proto::v1;
use refbus_proto::v1::referral_service_client::ReferralServiceClient;
use serde::Serialize;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::rng::Rng;

/// What became of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Failed,
    Unknown,
}

/// One operation of the log.
#[derive(Debug, Clone, Serialize)]
pub struct Op {
    /// create, accept, note, acknowledge.
    pub kind: &'static str,
    pub agency: String,
    pub request_id: String,
    /// The referral (for a create: the one made, once known).
    pub referral_id: String,
    pub outcome: Outcome,
    /// The last status's code and message when not ok.
    pub detail: String,
    /// Calls made with this request_id (more than 1: retried after an unknown outcome).
    pub attempts: u32,
    /// Whether some attempt's outcome was unknown before the last.
    pub was_unknown: bool,
    pub started_ms: u64,
    pub ended_ms: u64,
}

/// Every operation, in the order they ended.
pub type OpLog = Arc<Mutex<Vec<Op>>>;

/// A referral one agency sends another, as the simulated systems do.
struct Scenario {
    sender: &'static str,
    recipient: &'static str,
    service: &'static str,
    category: &'static str,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        sender: "puskesos-bontoa",
        recipient: "maros-dinsos",
        service: "social_assistance",
        category: "poverty",
    },
    Scenario {
        sender: "puskesos-bontoa",
        recipient: "maros-uptd-ppa",
        service: "shelter",
        category: "domestic_violence",
    },
    Scenario {
        sender: "maros-dinsos",
        recipient: "maros-uptd-ppa",
        service: "psychological_counselling",
        category: "domestic_violence",
    },
    Scenario {
        sender: "maros-uptd-ppa",
        recipient: "maros-dinsos",
        service: "case_management",
        category: "domestic_violence",
    },
];

/// The agencies whose adapters the campaign runs: every sender and recipient above.
pub const AGENCIES: &[&str] = &["maros-dinsos", "maros-uptd-ppa", "puskesos-bontoa"];

/// How a call is made and retried.
#[derive(Debug, Clone)]
pub struct Workload {
    /// (agency, gRPC endpoint host:port).
    pub endpoints: Vec<(String, String)>,
    pub log: OpLog,
    /// A prefix unique to this campaign for every request_id.
    pub run: String,
    /// Set when the campaign stops creating work.
    pub stop: watch::Receiver<bool>,
    /// Set when unknown outcomes are no longer retried.
    pub give_up: watch::Receiver<bool>,
    /// Time between two creates of one sender.
    pub create_every: Duration,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Workload {
    fn client(&self, agency: &str) -> anyhow::Result<ReferralServiceClient<Channel>> {
        let (_, address) = self
            .endpoints
            .iter()
            .find(|(name, _)| name == agency)
            .ok_or_else(|| anyhow::anyhow!("no adapter for {agency}"))?;
        let channel = Channel::from_shared(format!("http://{address}"))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        Ok(ReferralServiceClient::new(channel))
    }

    /// Runs every simulated system until `stop`, then waits for every operation started to
    /// end (definite, or unknown when `give_up` is set).
    pub async fn run(self, rng: Rng) -> anyhow::Result<()> {
        let mut systems = tokio::task::JoinSet::new();
        // One sending system per sender, one inbox watcher per agency.
        let senders: Vec<&str> = {
            let mut seen = Vec::new();
            for scenario in SCENARIOS {
                if !seen.contains(&scenario.sender) {
                    seen.push(scenario.sender);
                }
            }
            seen
        };
        for (index, sender) in senders.into_iter().enumerate() {
            let workload = self.clone();
            let rng = rng.fork(100 + index as u64);
            systems.spawn(async move { workload.send(sender, rng).await });
        }
        for (index, agency) in AGENCIES.iter().enumerate() {
            let workload = self.clone();
            let rng = rng.fork(200 + index as u64);
            systems.spawn(async move { workload.watch(agency, rng).await });
        }
        while let Some(result) = systems.join_next().await {
            result??;
        }
        Ok(())
    }

    /// A sender's system: a new referral every `create_every`, and for each one, later, the
    /// recipient's answer (or none) and notes.
    async fn send(self, sender: &'static str, mut rng: Rng) -> anyhow::Result<()> {
        let mut client = self.client(sender)?;
        let scenarios: Vec<&Scenario> = SCENARIOS.iter().filter(|s| s.sender == sender).collect();
        let mut followups = tokio::task::JoinSet::new();
        let mut stop = self.stop.clone();
        let mut count = 0u64;
        loop {
            let pause = rng.millis(
                self.create_every.as_millis() as u64 / 2,
                self.create_every.as_millis() as u64 * 3 / 2,
            );
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => break,
                () = tokio::time::sleep(pause) => {}
            }
            count += 1;
            let scenario = *rng.pick(&scenarios);
            let priority = *rng.pick(&[
                v1::Priority::Emergency,
                v1::Priority::Emergency,
                v1::Priority::Urgent,
                v1::Priority::Routine,
            ]);
            let request_id = format!("{}-{sender}-create-{count}", self.run);
            let request = v1::CreateReferralRequest {
                request_id: request_id.clone(),
                recipient: scenario.recipient.to_owned(),
                case_id: format!("CHAOS-{count:05}"),
                service: scenario.service.to_owned(),
                priority: priority.into(),
                categories: vec![scenario.category.to_owned()],
                sex: v1::Sex::Female.into(),
                age_band: v1::AgeBand::AgeBand25To59.into(),
                consent: Some(v1::Consent {
                    services: true,
                    disclose_to_agencies: true,
                    override_justification: String::new(),
                    sealed_override_justification: None,
                }),
                person: Some(v1::create_referral_request::Person::Identity(
                    v1::ClientIdentity {
                        full_name: format!("Orang Uji {count}"),
                        ..Default::default()
                    },
                )),
                note: "Rujukan uji ketahanan".to_owned(),
                ..Default::default()
            };
            let op = Op::new("create", sender, &request_id, "");
            let (op, referral) = self
                .call(op, || {
                    let mut client = client.clone();
                    let request = request.clone();
                    async move {
                        client
                            .create_referral(with_operator(request, "chaos"))
                            .await
                            .map(|response| {
                                response
                                    .into_inner()
                                    .referral
                                    .map(|referral| referral.referral_id)
                                    .unwrap_or_default()
                            })
                    }
                })
                .await;
            if op.outcome != Outcome::Ok {
                continue;
            }
            let referral = referral.unwrap_or_default();
            // The recipient answers half of them, after a while: the others' clocks run out.
            if rng.chance(50) {
                let delay = rng.millis(0, 45_000);
                let workload = self.clone();
                let recipient = self.client(scenario.recipient)?;
                let referral = referral.clone();
                let agency = scenario.recipient;
                followups.spawn(async move {
                    tokio::time::sleep(delay).await;
                    workload.accept(recipient, agency, &referral).await;
                });
            }
            for (who, percent) in [(sender, 30), (scenario.recipient, 30)] {
                if rng.chance(percent) {
                    let delay = rng.millis(0, 30_000);
                    let workload = self.clone();
                    let agency_client = self.client(who)?;
                    let referral = referral.clone();
                    followups.spawn(async move {
                        tokio::time::sleep(delay).await;
                        workload.note(agency_client, who, &referral).await;
                    });
                }
            }
            while followups.try_join_next().is_some() {}
            client = self.client(sender)?;
        }
        while followups.join_next().await.is_some() {}
        Ok(())
    }

    async fn accept(&self, client: ReferralServiceClient<Channel>, agency: &str, referral: &str) {
        let request = v1::AcceptReferralRequest {
            request_id: format!("{}-{agency}-accept-{referral}", self.run),
            referral_id: referral.to_owned(),
        };
        let op = Op::new("accept", agency, &request.request_id, referral);
        self.call(op, || {
            let mut client = client.clone();
            let request = request.clone();
            async move {
                client
                    .accept_referral(with_operator(request, "chaos"))
                    .await
                    .map(drop)
            }
        })
        .await;
    }

    async fn note(&self, client: ReferralServiceClient<Channel>, agency: &str, referral: &str) {
        let request = v1::AddNoteRequest {
            request_id: format!("{}-{agency}-note-{referral}", self.run),
            referral_id: referral.to_owned(),
            note: "Catatan uji".to_owned(),
            sealed_note: None,
        };
        let op = Op::new("note", agency, &request.request_id, referral);
        self.call(op, || {
            let mut client = client.clone();
            let request = request.clone();
            async move {
                client
                    .add_note(with_operator(request, "chaos"))
                    .await
                    .map(drop)
            }
        })
        .await;
    }

    /// An agency's inbox: acknowledges some of the escalations that notify it (once per
    /// referral, clock and level: the request_id is made of them, so a redelivered item is
    /// the same intention).
    async fn watch(self, agency: &'static str, mut rng: Rng) -> anyhow::Result<()> {
        let mut cursor = String::new();
        let mut decided = HashSet::new();
        let mut acks = tokio::task::JoinSet::new();
        let mut stop = self.stop.clone();
        loop {
            if *stop.borrow() {
                break;
            }
            // A stream has no deadline: the channel without the per-call timeout.
            let (_, address) = self
                .endpoints
                .iter()
                .find(|(name, _)| name == agency)
                .ok_or_else(|| anyhow::anyhow!("no adapter for {agency}"))?;
            let channel = Channel::from_shared(format!("http://{address}"))?
                .connect_timeout(Duration::from_secs(2))
                .connect_lazy();
            let mut inbox = ReferralServiceClient::new(channel);
            let opened = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => break,
                opened = inbox.watch_inbox(with_operator(v1::WatchInboxRequest { cursor: cursor.clone() }, "chaos")) => opened,
            };
            let Ok(stream) = opened else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let mut stream = stream.into_inner();
            loop {
                let next = tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => None,
                    next = stream.next() => next,
                };
                let Some(Ok(response)) = next else { break };
                let Some(item) = response.item else { continue };
                cursor = item.cursor;
                let Some(v1::inbox_item::Item::Event(event)) = item.item else {
                    continue;
                };
                let Some(v1::event::Change::Escalated(escalated)) = event.change else {
                    continue;
                };
                if !escalated
                    .notified
                    .iter()
                    .any(|target| target.agency == agency)
                {
                    continue;
                }
                let key = (
                    event.referral_id.clone(),
                    escalated.clock_id.clone(),
                    escalated.level,
                );
                if !decided.insert(key) || !rng.chance(60) {
                    continue;
                }
                let request = v1::AcknowledgeEscalationRequest {
                    request_id: format!(
                        "{}-{agency}-ack-{}-{}-{}",
                        self.run, event.referral_id, escalated.clock_id, escalated.level
                    ),
                    referral_id: event.referral_id.clone(),
                    clock_id: escalated.clock_id.clone(),
                    level: escalated.level,
                };
                let workload = self.clone();
                let client = self.client(agency)?;
                let delay = rng.millis(0, 5_000);
                acks.spawn(async move {
                    tokio::time::sleep(delay).await;
                    let op = Op::new(
                        "acknowledge",
                        agency,
                        &request.request_id,
                        &request.referral_id,
                    );
                    workload
                        .call(op, || {
                            let mut client = client.clone();
                            let request = request.clone();
                            async move {
                                client
                                    .acknowledge_escalation(with_operator(request, "chaos"))
                                    .await
                                    .map(drop)
                            }
                        })
                        .await;
                });
                while acks.try_join_next().is_some() {}
            }
        }
        while acks.join_next().await.is_some() {}
        Ok(())
    }

    /// Calls until the outcome is definite, retrying an unknown one with the same request
    /// (the same request_id) until `give_up`; logs the operation.
    async fn call<T, F, Fut>(&self, mut op: Op, mut attempt: F) -> (Op, Option<T>)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let mut backoff = Duration::from_millis(250);
        let mut give_up = self.give_up.clone();
        let value = loop {
            op.attempts += 1;
            match attempt().await {
                Ok(value) => {
                    op.outcome = Outcome::Ok;
                    op.detail.clear();
                    break Some(value);
                }
                Err(status) => {
                    op.detail = format!("{:?}: {}", status.code(), status.message());
                    if definite(status.code()) {
                        op.outcome = Outcome::Failed;
                        break None;
                    }
                    op.outcome = Outcome::Unknown;
                    op.was_unknown = true;
                    if *give_up.borrow() {
                        break None;
                    }
                    tokio::select! {
                        _ = give_up.wait_for(|give_up| *give_up) => {}
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(4));
                }
            }
        };
        op.ended_ms = now_ms();
        if let Ok(mut log) = self.log.lock() {
            log.push(op.clone());
        }
        (op, value)
    }
}

/// How long one call may take before its outcome is unknown.
const CALL_TIMEOUT: Duration = Duration::from_secs(8);

impl Op {
    fn new(kind: &'static str, agency: &str, request_id: &str, referral: &str) -> Op {
        Op {
            kind,
            agency: agency.to_owned(),
            request_id: request_id.to_owned(),
            referral_id: referral.to_owned(),
            outcome: Outcome::Unknown,
            detail: String::new(),
            attempts: 0,
            was_unknown: false,
            started_ms: now_ms(),
            ended_ms: 0,
        }
    }
}

/// Whether a status is a definite answer: the API promises that every refused call changes
/// nothing. UNAVAILABLE, DEADLINE_EXCEEDED and the transport's own failures (UNKNOWN,
/// CANCELLED, INTERNAL) leave the outcome unknown.
fn definite(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::Aborted
            | Code::AlreadyExists
            | Code::Unauthenticated
            | Code::ResourceExhausted
            | Code::OutOfRange
            | Code::Unimplemented
    )
}

fn with_operator<T>(message: T, operator: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = operator.parse() {
        request.metadata_mut().insert(OPERATOR_METADATA_KEY, value);
    }
    request
}
