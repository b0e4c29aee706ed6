//! refbus-e2e: a whole kabupaten in one test: a real nats-server, the Maros registry, one
//! adapter per agency on its own port, and gRPC clients playing the agencies' IT systems.
//!
//! The same system runs on a 3-node JetStream cluster (R3 stream, every component connected
//! with all three URLs): `System::with_nats(refbus_e2e::cluster())`, so a flow is written once
//! and run on both.
//!
//! ```no_run
//! # async fn example() {
//! let mut system = refbus_e2e::System::start().await;
//! let dinsos = system.agency("maros-dinsos").await;
//! let created = dinsos.client().create_referral(dinsos.request(refbus_e2e::create_request(
//!     "req-1", "maros-uptd-ppa", "shelter"))).await.unwrap();
//! # }
//! ```

#![allow(
    clippy::unwrap_used,
    reason = "a test harness: a broken setup must fail the test loudly"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use refbus_adapter::{Adapter, Options};
use refbus_bus::{Bus, StreamSettings, Verifier};
use refbus_core::{AgencyId, Registry};
use refbus_proto::OPERATOR_METADATA_KEY;
use refbus_proto::v1;
use refbus_proto::v1::referral_service_client::ReferralServiceClient;
use refbus_seal::signing::SigningKeys;
use refbus_seal::{KeyPair, Keyring, PublicKey};
use refbus_testkit::pki::ClientFiles;
use refbus_testkit::{NatsCluster, NatsServer, Pki};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// The system every agency's client presents unless a test says otherwise:
/// `refbus://<agency>/case-system`.
pub const SYSTEM: &str = "case-system";

/// The repository root, for the shipped configuration.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The demonstration registry: the same agencies, clocks in minutes.
pub fn demo_registry() -> Registry {
    refbus_config::load(repo_root().join("deploy/config/demo.toml"))
        .unwrap_or_else(|report| panic!("deploy/config/demo.toml is invalid:\n{report}"))
}

/// The Kabupaten Maros registry that `deploy/config/` ships.
pub fn maros_registry() -> Registry {
    refbus_config::load(repo_root().join("deploy/config/refbus.toml"))
        .unwrap_or_else(|report| panic!("deploy/config/refbus.toml is invalid:\n{report}"))
}

/// A running adapter.
pub struct RunningAdapter {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RunningAdapter {
    /// Stops the adapter as an administrator would (in-flight calls finish first).
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunningAdapter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An agency's IT system: a gRPC client of its own adapter, acting as one operator.
#[derive(Clone)]
pub struct AgencySystem {
    pub agency: AgencyId,
    pub addr: SocketAddr,
    pub operator: String,
    /// The system its client certificate names (see [`SYSTEM`]).
    pub system: String,
    channel: Channel,
    client: ReferralServiceClient<Channel>,
}

impl AgencySystem {
    pub fn client(&self) -> ReferralServiceClient<Channel> {
        self.client.clone()
    }

    /// `message` with this system's operator header.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert(OPERATOR_METADATA_KEY, self.operator.parse().unwrap());
        request
    }

    /// Creates a referral, which must succeed; its id.
    pub async fn create(&self, request: v1::CreateReferralRequest) -> String {
        self.client()
            .create_referral(self.request(request))
            .await
            .unwrap()
            .into_inner()
            .referral
            .unwrap()
            .referral_id
    }

    /// Waits until the adapter reports, through gRPC health checking, that it can reach the
    /// bus (as a load balancer would).
    pub async fn wait_until_serving(&self) {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let mut watch = HealthClient::new(self.channel.clone())
            .watch(HealthCheckRequest {
                service: "refbus.v1.ReferralService".into(),
            })
            .await
            .unwrap()
            .into_inner();
        while let Some(status) = watch.message().await.unwrap() {
            if status.status() == ServingStatus::Serving {
                return;
            }
        }
        panic!("the health stream ended before the adapter was serving");
    }

    /// The same system as another operator.
    pub fn as_operator(&self, operator: &str) -> AgencySystem {
        AgencySystem {
            operator: operator.to_owned(),
            ..self.clone()
        }
    }
}

/// The NATS a system runs on: one server, or a cluster of nodes with the events stream
/// replicated on three of them.
#[derive(Debug)]
pub enum Nats {
    /// Boxed: a server's handle is several times a cluster's (a list of them).
    Single(Box<NatsServer>),
    Cluster(NatsCluster),
}

/// A 3-node cluster as production runs it (`sync_interval: always`), for [`System::with_nats`].
pub fn cluster() -> NatsCluster {
    NatsCluster::builder().sync_always(true).start().unwrap()
}

impl Nats {
    /// Every server's client URL (one for a single server).
    pub fn urls(&self) -> Vec<String> {
        match self {
            Nats::Single(server) => vec![server.url()],
            Nats::Cluster(cluster) => cluster.urls(),
        }
    }

    /// The cluster, if this is one.
    pub fn cluster(&self) -> Option<&NatsCluster> {
        match self {
            Nats::Single(_) => None,
            Nats::Cluster(cluster) => Some(cluster),
        }
    }

    /// The cluster, if this is one, to kill and restart its nodes.
    pub fn cluster_mut(&mut self) -> Option<&mut NatsCluster> {
        match self {
            Nats::Single(_) => None,
            Nats::Cluster(cluster) => Some(cluster),
        }
    }

    /// The events stream as every component of this system provisions and checks it: R3 on a
    /// cluster.
    pub fn stream_settings(&self) -> StreamSettings {
        StreamSettings {
            replicas: if self.cluster().is_some() { 3 } else { 1 },
            ..StreamSettings::default()
        }
    }

    /// How a component of this system connects: every server's URL.
    pub fn connect_options(&self) -> refbus_bus::ConnectOptions {
        refbus_bus::ConnectOptions::new(self.urls())
    }
}

impl From<NatsServer> for Nats {
    fn from(server: NatsServer) -> Nats {
        Nats::Single(Box::new(server))
    }
}

impl From<NatsCluster> for Nats {
    fn from(cluster: NatsCluster) -> Nats {
        Nats::Cluster(cluster)
    }
}

/// The server, or a cluster's first node: what the single-server tests read (its URL, its
/// monitoring). Tests that kill or pause "the" server are single-server tests.
impl std::ops::Deref for Nats {
    type Target = NatsServer;

    fn deref(&self) -> &NatsServer {
        match self {
            Nats::Single(server) => server,
            Nats::Cluster(cluster) => &cluster.nodes()[0],
        }
    }
}

impl std::ops::DerefMut for Nats {
    fn deref_mut(&mut self) -> &mut NatsServer {
        match self {
            Nats::Single(server) => server,
            Nats::Cluster(_) => {
                panic!("a cluster's nodes are killed and restarted through Nats::cluster_mut")
            }
        }
    }
}

/// nats-server, the registry, every agency's keys, and the adapters started so far.
pub struct System {
    pub nats: Nats,
    pub registry: Arc<Registry>,
    pub keys: HashMap<AgencyId, KeyPair>,
    /// Keys an agency held before `rotate_key`, newest first: its adapter keeps them.
    pub earlier_keys: HashMap<AgencyId, Vec<KeyPair>>,
    /// Backup keys: everything sealed for these agencies is wrapped for them too.
    pub backup_keys: HashMap<AgencyId, KeyPair>,
    pub adapters: HashMap<AgencyId, RunningAdapter>,
    pub options: Options,
    /// The deployment's certificates: the registry lists its CA for every agency, adapters
    /// serve mutual TLS with its server certificate, clients present its client certificates.
    pub pki: Arc<Pki>,
    /// Where the adapters read "now": the system clock unless a test shares a manual clock.
    pub now: refbus_adapter::Now,
    /// Every agency's and the router's signing keys.
    pub signing: SigningKeys,
    /// How far an event's time may lie from JetStream's: `None` once a test shares a manual
    /// clock (see [`System::use_clock`]).
    pub max_skew: Option<std::time::Duration>,
}

impl System {
    pub async fn start() -> System {
        System::with_nats(NatsServer::start().unwrap()).await
    }

    /// A system on `nats`: a server, or a cluster ([`cluster`]).
    pub async fn with_nats(nats: impl Into<Nats>) -> System {
        System::with_registry(nats, maros_registry()).await
    }

    /// A system running `registry` (e.g. the demonstration policy).
    pub async fn with_registry(nats: impl Into<Nats>, mut registry: Registry) -> System {
        let nats = nats.into();
        let pki = Arc::new(Pki::generate().unwrap());
        for agency in registry.agencies.values_mut() {
            agency.client_cas.push(pki.ca_der());
        }
        let registry = Arc::new(registry);
        let keys = registry
            .agencies
            .keys()
            .map(|agency| (agency.clone(), KeyPair::generate()))
            .collect();
        let signing = SigningKeys::generate(&registry);
        System {
            nats,
            registry,
            keys,
            earlier_keys: HashMap::new(),
            backup_keys: HashMap::new(),
            adapters: HashMap::new(),
            options: Options::default(),
            pki,
            now: refbus_adapter::system_now(),
            signing,
            max_skew: Some(refbus_core::integrity::DEFAULT_MAX_SKEW),
        }
    }

    /// Adapters started from now on read `clock`'s time (a manual clock shared with a router),
    /// so event times are the test's, not JetStream's: the time-against-storage check is off.
    pub fn use_clock(&mut self, clock: Arc<dyn refbus_router::Clock>) {
        self.now = Arc::new(move || clock.now());
        self.max_skew = None;
    }

    /// The record check as every component of this system runs it.
    pub fn verifier(&self) -> Verifier {
        Verifier::new(
            self.registry.clone(),
            Arc::new(self.signing.signers()),
            self.max_skew,
        )
    }

    /// A router for this system on `bus`, reading time from `clock`.
    pub fn router(
        &self,
        bus: Bus,
        clock: Arc<dyn refbus_router::Clock>,
        options: refbus_router::Options,
    ) -> refbus_router::Router {
        refbus_router::Router::new(bus, self.verifier(), self.signing.router(), clock, options)
    }

    /// The public key directory every adapter uses.
    fn directory(&self) -> Vec<(AgencyId, PublicKey)> {
        self.keys
            .iter()
            .map(|(agency, pair)| (agency.clone(), pair.public().clone()))
            .collect()
    }

    /// The agency's keyring as its adapter holds it: current key, earlier keys, and every
    /// agency's public and backup keys.
    pub fn keyring(&self, agency: &AgencyId) -> Keyring {
        let copy = |pair: &KeyPair| {
            refbus_seal::SecretKey::from_base64(&pair.secret().to_base64()).unwrap()
        };
        let secrets = std::iter::once(&self.keys[agency])
            .chain(self.earlier_keys.get(agency).into_iter().flatten())
            .map(copy)
            .collect();
        Keyring::with_keys(agency.clone(), secrets, self.directory())
            .unwrap()
            .with_backup_keys(
                self.backup_keys
                    .iter()
                    .map(|(agency, pair)| (agency.clone(), pair.public().clone())),
            )
    }

    /// What `refbus keys rotate` does to an agency's keys: a new current key, the old one kept.
    /// Adapters started from now on seal for the new key.
    pub fn rotate_key(&mut self, agency: &AgencyId) {
        let old = self
            .keys
            .insert(agency.clone(), KeyPair::generate())
            .unwrap();
        self.earlier_keys
            .entry(agency.clone())
            .or_default()
            .insert(0, old);
    }

    /// A bus connection of the test's own, for checking what is stored.
    pub async fn bus(&self) -> Bus {
        Bus::connect(self.nats.connect_options(), &self.nats.stream_settings())
            .await
            .unwrap()
    }

    /// The agency's adapter on `bus`, as this system builds each (its keys, the system's
    /// clock and options), not yet running: for tests of `refbus_adapter::run` itself.
    pub fn adapter(&self, agency: &AgencyId, bus: Bus) -> Adapter {
        Adapter::new(
            agency.clone(),
            self.verifier(),
            bus,
            self.keyring(agency),
            self.signing.agency(agency),
            self.now.clone(),
            self.options.clone(),
        )
    }

    /// What a router's start does before any adapter may start: checks the stream against
    /// `settings` (the adapter's: a router configured alike) and stores its signed statement of
    /// what it found (`refbus_bus::statement`); a stream that differs is refused here, and the
    /// statement says so, so the adapter refuses in turn.
    pub async fn check_stream_as_the_router(&self, settings: &StreamSettings) {
        let _ = Bus::connect_attesting(
            self.nats.connect_options(),
            settings,
            &self.signing.router(),
        )
        .await;
    }

    /// How many messages the bus holds: a refused request must not change it.
    pub async fn stored_messages(&self) -> u64 {
        // Nothing is ever deleted from the stream: its last sequence is its message count.
        self.bus().await.last_sequence().await.unwrap()
    }

    /// Starts the agency's adapter on a free port (if it is not running).
    pub async fn start_adapter(&mut self, agency: &AgencyId) -> SocketAddr {
        if let Some(running) = self.adapters.get(agency) {
            return running.addr;
        }
        let bus = self.bus().await;
        self.start_adapter_on(agency, bus).await
    }

    /// Starts the agency's adapter on a bus connection of the caller's (e.g. with the agency's
    /// own NATS credentials), replacing a running one.
    pub async fn start_adapter_on(&mut self, agency: &AgencyId, bus: Bus) -> SocketAddr {
        self.stop_adapter(agency).await;
        self.check_stream_as_the_router(bus.settings()).await;
        let adapter = self.adapter(agency, bus);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        let transport =
            refbus_adapter::Transport::mutual_tls(self.pki.server_tls().unwrap(), &self.registry)
                .unwrap();
        // The production entry point: serving and the reroutes the router asks of this agency.
        let task = tokio::spawn(async move {
            refbus_adapter::run(adapter, listener, transport, async {
                let _ = stop.await;
            })
            .await
            .unwrap();
        });
        self.adapters.insert(
            agency.clone(),
            RunningAdapter {
                addr,
                shutdown: Some(shutdown),
                task,
            },
        );
        addr
    }

    /// Stops the agency's adapter.
    pub async fn stop_adapter(&mut self, agency: &AgencyId) {
        if let Some(running) = self.adapters.remove(agency) {
            running.stop().await;
        }
    }

    /// The agency's IT system, connected to its adapter (started if needed).
    pub async fn agency(&mut self, agency: &str) -> AgencySystem {
        let agency = AgencyId::new(agency).unwrap();
        let addr = self.start_adapter(&agency).await;
        self.connect(agency, addr).await
    }

    /// The agency's IT system, connected to an adapter started on `bus`.
    pub async fn agency_on(&mut self, agency: &str, bus: Bus) -> AgencySystem {
        let agency = AgencyId::new(agency).unwrap();
        let addr = self.start_adapter_on(&agency, bus).await;
        self.connect(agency, addr).await
    }

    /// A client of `agency`'s adapter (started if needed) presenting `certificate`, or no
    /// certificate at all; for tests of authentication. Its `system` is [`SYSTEM`].
    pub async fn client_presenting(
        &mut self,
        agency: &str,
        certificate: Option<&ClientFiles>,
    ) -> AgencySystem {
        let agency = AgencyId::new(agency).unwrap();
        let addr = self.start_adapter(&agency).await;
        AgencySystem::connect(agency, addr, self.pki.ca_pem(), certificate).await
    }

    /// A valid client certificate of `agency`'s [`SYSTEM`].
    pub fn client_certificate(&self, agency: &AgencyId) -> ClientFiles {
        self.pki.client(agency.as_str(), SYSTEM).unwrap()
    }

    async fn connect(&self, agency: AgencyId, addr: SocketAddr) -> AgencySystem {
        let certificate = self.client_certificate(&agency);
        AgencySystem::connect(agency, addr, self.pki.ca_pem(), Some(&certificate)).await
    }
}

impl AgencySystem {
    /// Connects over TLS, verifying the adapter with `ca` and presenting `certificate`.
    async fn connect(
        agency: AgencyId,
        addr: SocketAddr,
        ca: &str,
        certificate: Option<&ClientFiles>,
    ) -> AgencySystem {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name("localhost");
        if let Some(certificate) = certificate {
            tls = tls.identity(Identity::from_pem(
                &certificate.issued.certificate_pem,
                &certificate.issued.key_pem,
            ));
        }
        let channel = Channel::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        AgencySystem {
            operator: format!("operator@{agency}"),
            system: SYSTEM.to_owned(),
            agency,
            addr,
            client: ReferralServiceClient::new(channel.clone()),
            channel,
        }
    }
}

// === request builders ===

/// A person's identity, with values a test can search the bus for.
pub fn identity(name: &str) -> v1::ClientIdentity {
    v1::ClientIdentity {
        full_name: name.to_owned(),
        nik: "7309014503120001".to_owned(),
        birth_date: "2012-03-05".to_owned(),
        sex: v1::Sex::Female.into(),
        address: "Dusun Bonto Tangnga RT 002/RW 001, Desa Bontoa, Kec. Bontoa".to_owned(),
        phone: "+62-812-0000-4242".to_owned(),
        narrative: "Korban kekerasan seksual oleh tetangga; saat ini tinggal bersama nenek."
            .to_owned(),
        guardian_name: "Nenek korban, Hj. Contoh Wali".to_owned(),
    }
}

/// A create with full consent, an identity and a note.
pub fn create_request(
    request_id: &str,
    recipient: &str,
    service: &str,
) -> v1::CreateReferralRequest {
    v1::CreateReferralRequest {
        request_id: request_id.to_owned(),
        recipient: recipient.to_owned(),
        case_id: "MRS-2026-0042".to_owned(),
        service: service.to_owned(),
        priority: v1::Priority::Urgent.into(),
        categories: vec!["sexual_violence".to_owned()],
        child: true,
        consent: Some(v1::Consent {
            services: true,
            disclose_to_agencies: true,
            override_justification: String::new(),
            sealed_override_justification: None,
        }),
        case_reported_at: None,
        person: Some(v1::create_referral_request::Person::Identity(identity(
            "Siti Contoh Korban",
        ))),
        note: "Anak perlu rumah aman malam ini.".to_owned(),
        sealed_note: None,
        sex: Default::default(),
        age_band: Default::default(),
    }
}

pub fn reason(code: &str, note: &str) -> Option<v1::Reason> {
    Some(v1::Reason {
        code: code.to_owned(),
        note: note.to_owned(),
        sealed_note: None,
    })
}

/// Waits until the router reports it recorded `key` (e.g. `acknowledge_emergency.breach`);
/// fails the test after 20 s without it.
pub async fn recorded(
    activity: &mut tokio::sync::broadcast::Receiver<refbus_router::Activity>,
    key: &str,
) {
    loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(20), activity.recv())
            .await
            .unwrap_or_else(|_| panic!("{key} was never recorded"))
            .unwrap();
        if let refbus_router::Activity::Recorded { key: recorded, .. } = next
            && recorded == key
        {
            return;
        }
    }
}
