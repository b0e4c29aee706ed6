//! `refbus simulate`: agencies' systems at work, for demonstrations.
//!
//! It sends realistic Maros referrals through the agencies' adapters (a Puskesos referring a
//! poor family to Dinsos SLRT or a woman to UPTD PPA's safe house, UPTD PPA reporting
//! a child's sexual abuse to the police and asking Bagian Hukum for legal aid, a visum request
//! to RSUD) and plays the recipients: some answer at once, some reject (and the referral is
//! rerouted), some never answer (and the clocks escalate). Everything goes through gRPC, exactly
//! as real agency systems would.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use futures::StreamExt;
use refbus_proto::OPERATOR_METADATA_KEY;
use refbus_proto::v1;
use refbus_proto::v1::referral_service_client::ReferralServiceClient;
use tonic::transport::Channel;

/// How a simulated recipient answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Accept,
    Reject,
    Ignore,
}

#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// The registry `refbus up` runs (for the agencies' order and ports).
    #[arg(long, value_name = "FILE", default_value = "deploy/config/demo.toml")]
    pub(crate) config: std::path::PathBuf,
    /// The first adapter's port, as given to `refbus up`.
    #[arg(long, default_value_t = 50051)]
    pub(crate) base_port: u16,
    /// Seconds between two new referrals.
    #[arg(long, default_value_t = 20)]
    pub(crate) every: u64,
    /// How many referrals to send (0: until stopped).
    #[arg(long, default_value_t = 0)]
    pub(crate) count: u64,
    /// The deployment's certificate directory (`refbus certs`; `<data-dir>/tls` of
    /// `refbus up`): each agency's system presents `client-<agency>-<system>.pem`.
    #[arg(long, value_name = "DIR")]
    pub(crate) certs: Option<std::path::PathBuf>,
    /// The system name whose client certificates the simulated systems present.
    #[arg(long, default_value = "simulator")]
    pub(crate) system: String,
    /// Call adapters that serve insecure plaintext (`refbus up --insecure-plaintext`).
    #[arg(long, conflicts_with = "certs")]
    pub(crate) insecure_plaintext: bool,
}

/// One kind of referral the simulation sends.
struct Scenario {
    sender: &'static str,
    recipient: &'static str,
    service: &'static str,
    priority: v1::Priority,
    categories: &'static [&'static str],
    child: bool,
    note: &'static str,
}

const SCENARIOS: &[Scenario] = &[
    // UPTD PPA's alternate for shelter is Dinsos, and for counselling RSUD: these two show a
    // reroute when UPTD PPA rejects or never answers.
    Scenario {
        sender: "puskesos-bontoa",
        recipient: "maros-uptd-ppa",
        service: "shelter",
        priority: v1::Priority::Emergency,
        categories: &["domestic_violence"],
        child: false,
        note: "Korban KDRT butuh rumah aman malam ini",
    },
    Scenario {
        sender: "maros-dinsos",
        recipient: "maros-uptd-ppa",
        service: "psychological_counselling",
        priority: v1::Priority::Urgent,
        categories: &["domestic_violence"],
        child: false,
        note: "Konseling psikologis untuk korban KDRT",
    },
    Scenario {
        sender: "maros-uptd-ppa",
        recipient: "polres-maros",
        service: "police_report",
        priority: v1::Priority::Urgent,
        categories: &["sexual_violence", "child_abuse"],
        child: true,
        note: "Anak korban kekerasan seksual, pendamping dari UPTD PPA",
    },
    Scenario {
        sender: "maros-uptd-ppa",
        recipient: "maros-bagian-hukum",
        service: "legal_aid",
        priority: v1::Priority::Urgent,
        categories: &["sexual_violence"],
        child: true,
        note: "Pendampingan hukum untuk korban anak",
    },
    Scenario {
        sender: "puskesos-bontoa",
        recipient: "maros-dinsos",
        service: "social_assistance",
        priority: v1::Priority::Routine,
        categories: &["poverty"],
        child: false,
        note: "Keluarga miskin belum terdaftar DTKS",
    },
    Scenario {
        sender: "maros-uptd-ppa",
        recipient: "maros-rsud",
        service: "visum_et_repertum",
        priority: v1::Priority::Urgent,
        categories: &["sexual_violence"],
        child: true,
        note: "Visum et repertum untuk laporan polisi",
    },
];

/// One of the three child bands, or of the three adult bands, as `pick` (0-2) says.
fn age_band(child: bool, pick: u64) -> v1::AgeBand {
    match (child, pick) {
        (true, 0) => v1::AgeBand::AgeBand0To5,
        (true, 1) => v1::AgeBand::AgeBand6To12,
        (true, _) => v1::AgeBand::AgeBand13To17,
        (false, 0) => v1::AgeBand::AgeBand18To24,
        (false, 1) => v1::AgeBand::AgeBand25To59,
        (false, _) => v1::AgeBand::AgeBand60AndOver,
    }
}

/// A small deterministic generator: the same run every time, no dependency.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }
}

pub(crate) fn run(args: SimulateArgs) -> anyhow::Result<std::process::ExitCode> {
    crate::runtime::init_tracing();
    let registry = crate::runtime::load_registry(&args.config)?;
    let endpoints: Vec<(String, String)> = registry
        .agencies
        .keys()
        .enumerate()
        .map(|(index, agency)| {
            (
                agency.to_string(),
                format!("127.0.0.1:{}", usize::from(args.base_port) + index),
            )
        })
        .collect();
    let tls = match (&args.certs, args.insecure_plaintext) {
        (Some(dir), _) => Some(ClientTls::new(
            refbus_tls::certs::Directory::new(dir),
            &args.system,
        )),
        (None, true) => None,
        (None, false) => {
            return Err(crate::commands::UsageError(
                "give --certs DIR (the client certificates, e.g. <data-dir>/tls of refbus up) or \
                 --insecure-plaintext"
                    .to_owned(),
            )
            .into());
        }
    };
    tokio::runtime::Runtime::new()?.block_on(simulate(
        endpoints,
        Duration::from_secs(args.every),
        args.count,
        tls,
    ))?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// The simulated systems' mutual TLS: the deployment's certificate directory, and the system
/// name whose client certificates (one per agency) they present.
#[derive(Debug, Clone)]
pub(crate) struct ClientTls {
    certs: refbus_tls::certs::Directory,
    system: String,
}

impl ClientTls {
    pub(crate) fn new(certs: refbus_tls::certs::Directory, system: &str) -> ClientTls {
        ClientTls {
            certs,
            system: system.to_owned(),
        }
    }

    /// `agency`'s client TLS: the CA to verify the adapter, and its system's certificate.
    pub(crate) fn config(&self, agency: &str) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        };
        let client = self.certs.client(&refbus_tls::SystemIdentity::new(
            agency,
            self.system.as_str(),
        ));
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.certs.ca().certificate)?))
            .identity(Identity::from_pem(
                read(&client.certificate)?,
                read(&client.key)?,
            ))
            .domain_name("localhost"))
    }
}

/// Runs the simulation against adapters at `endpoints` (agency, host:port), over mutual TLS
/// when `tls` is given.
pub(crate) async fn simulate(
    endpoints: Vec<(String, String)>,
    every: Duration,
    count: u64,
    tls: Option<ClientTls>,
) -> anyhow::Result<()> {
    let client = |agency: &str| -> anyhow::Result<ReferralServiceClient<Channel>> {
        let (_, address) = endpoints
            .iter()
            .find(|(name, _)| name == agency)
            .ok_or_else(|| anyhow::anyhow!("no adapter for {agency}"))?;
        let channel = match &tls {
            Some(tls) => Channel::from_shared(format!("https://{address}"))?
                .tls_config(tls.config(agency)?)?
                .connect_lazy(),
            None => Channel::from_shared(format!("http://{address}"))?.connect_lazy(),
        };
        Ok(ReferralServiceClient::new(channel))
    };
    // Every recipient answers what arrives in its inbox.
    let recipients: HashSet<&str> = SCENARIOS.iter().map(|s| s.recipient).collect();
    // Owned here, so that stopping the simulation (dropping or aborting it) stops them all.
    let mut recipients_at_work = tokio::task::JoinSet::new();
    for (seed, recipient) in recipients.into_iter().enumerate() {
        let client = client(recipient)?;
        recipients_at_work.spawn(answer_inbox(
            recipient.to_owned(),
            client,
            Dice(0x9e37_79b9 + seed as u64),
        ));
    }
    let mut dice = Dice(0x2545_f491);
    // The people's sex and age band (statistics for the indicators page) come from their own
    // generator, so the sequence of scenarios stays what it was.
    let mut people = Dice(0x517c_c1b7);
    let mut ticker = tokio::time::interval(every);
    let mut sent = 0u64;
    while count == 0 || sent < count {
        ticker.tick().await;
        let scenario = &SCENARIOS[dice.roll(SCENARIOS.len() as u64) as usize];
        let mut sender = client(scenario.sender)?;
        let request = v1::CreateReferralRequest {
            request_id: format!("simulate-{}-{sent}", std::process::id()),
            recipient: scenario.recipient.to_owned(),
            case_id: format!("SIM-{:04}", 1000 + sent),
            service: scenario.service.to_owned(),
            priority: scenario.priority.into(),
            categories: scenario
                .categories
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
            child: scenario.child,
            sex: if people.roll(4) == 0 {
                v1::Sex::Male
            } else {
                v1::Sex::Female
            }
            .into(),
            age_band: age_band(scenario.child, people.roll(3)).into(),
            consent: Some(v1::Consent {
                services: true,
                disclose_to_agencies: true,
                override_justification: String::new(),
                sealed_override_justification: None,
            }),
            person: Some(v1::create_referral_request::Person::Identity(
                v1::ClientIdentity {
                    full_name: format!("Orang Contoh {sent}"),
                    ..Default::default()
                },
            )),
            note: scenario.note.to_owned(),
            ..Default::default()
        };
        match sender
            .create_referral(with_operator(request, "simulator"))
            .await
        {
            Ok(created) => {
                let referral = created.into_inner().referral.unwrap_or_default();
                println!(
                    "simulate: {} -> {} {} ({}) referral {}",
                    scenario.sender,
                    scenario.recipient,
                    scenario.service,
                    referral.case_id,
                    referral.referral_id
                );
            }
            Err(status) => println!("simulate: create refused: {}", status.message()),
        }
        sent += 1;
    }
    Ok(())
}

fn with_operator<T>(message: T, operator: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = operator.parse() {
        request.metadata_mut().insert(OPERATOR_METADATA_KEY, value);
    }
    request
}

/// A recipient's system: for each referral that arrives, accept, reject or (to show the clocks)
/// never answer.
async fn answer_inbox(agency: String, mut client: ReferralServiceClient<Channel>, mut dice: Dice) {
    let operator = format!("sim@{agency}");
    let mut cursor = String::new();
    // Answers waiting for their moment, stopped with this task.
    let mut answers = tokio::task::JoinSet::new();
    loop {
        let stream = client
            .watch_inbox(with_operator(
                v1::WatchInboxRequest {
                    cursor: cursor.clone(),
                },
                &operator,
            ))
            .await;
        let Ok(stream) = stream else {
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        };
        let mut stream = stream.into_inner();
        while let Some(Ok(response)) = stream.next().await {
            let Some(item) = response.item else { continue };
            cursor = item.cursor;
            let Some(v1::inbox_item::Item::Event(event)) = item.item else {
                continue;
            };
            let Some(v1::event::Change::Created(created)) = event.change else {
                continue;
            };
            if created.recipient != agency {
                continue;
            }
            let answer = match dice.roll(10) {
                0..=3 => Answer::Accept,
                4..=5 => Answer::Reject,
                _ => Answer::Ignore,
            };
            let referral_id = event.referral_id.clone();
            let mut client = client.clone();
            let operator = operator.clone();
            let delay = Duration::from_secs(5 + dice.roll(20));
            while answers.try_join_next().is_some() {}
            answers.spawn(async move {
                tokio::time::sleep(delay).await;
                let request_id = format!("sim-answer-{referral_id}");
                let outcome = match answer {
                    Answer::Accept => client
                        .accept_referral(with_operator(
                            v1::AcceptReferralRequest {
                                request_id,
                                referral_id: referral_id.clone(),
                            },
                            &operator,
                        ))
                        .await
                        .map(|_| "accepted"),
                    Answer::Reject => client
                        .reject_referral(with_operator(
                            v1::RejectReferralRequest {
                                request_id,
                                referral_id: referral_id.clone(),
                                reason: Some(v1::Reason {
                                    code: "no_capacity".into(),
                                    note: "Penuh".into(),
                                    sealed_note: None,
                                }),
                            },
                            &operator,
                        ))
                        .await
                        .map(|_| "rejected"),
                    Answer::Ignore => return,
                };
                match outcome {
                    Ok(what) => println!("simulate: {operator} {what} referral {referral_id}"),
                    Err(status) => println!(
                        "simulate: {operator} could not answer {referral_id}: {}",
                        status.message()
                    ),
                }
            });
        }
    }
}
