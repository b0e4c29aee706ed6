//! `refbus up`: the whole system on one machine, for trying refbus out and for development.
//!
//! It starts a nats-server child with JetStream (data kept in `--data-dir` across restarts),
//! one adapter per agency of the registry, each on its own port, and the router; generates any
//! missing agency keys, prints the endpoints and what the router does, and stops everything on
//! Ctrl-C. `--demo` runs the demonstration policy (clocks in minutes) and the simulated agency
//! systems, so that warnings, breaches, escalations and reroutes show within minutes.
//!
//! `--cluster 3` runs three nats-server nodes instead of one (a JetStream cluster on this
//! machine: routes between them, each its own store under the data directory, the events
//! stream replicated on all three, fsync on every write, the same TLS and NKey users), and
//! connects every component with all three URLs, so any one node may be killed.
//!
//! Stopping (Ctrl-C, SIGTERM or SIGHUP) goes from the outside in: the simulated agency systems
//! first (so nothing new arrives), then the adapters (open inbox streams end with UNAVAILABLE)
//! and the router, and nats-server last, so that nothing is left running.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use refbus_core::AgencyId;
use tokio::sync::watch;

use crate::runtime::{self, ClusterPorts, LocalCluster, LocalNats};

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// The registry to run (default: deploy/config/refbus.toml, or deploy/config/demo.toml
    /// with --demo).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Demonstration: clocks in minutes, and simulated agency systems sending and answering
    /// referrals.
    #[arg(long)]
    demo: bool,
    /// Seconds between two simulated referrals (with --demo).
    #[arg(long, default_value_t = 20)]
    demo_every: u64,
    /// Where nats-server keeps its data and where agency keys are kept (default: .refbus, or
    /// .refbus-demo with --demo, so demonstration data never mixes with real data; with
    /// --cluster, .refbus-cluster or .refbus-demo-cluster).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The NATS client port (on 127.0.0.1); with --cluster, the first node's (the others
    /// follow).
    #[arg(long, default_value_t = 4222)]
    nats_port: u16,
    /// The NATS monitoring port (on 127.0.0.1); with --cluster, the first node's.
    #[arg(long, default_value_t = 8222)]
    nats_monitor_port: u16,
    /// Run a JetStream cluster of this many nats-server nodes on this machine (at least 3;
    /// the events stream is kept on 3 of them), instead of one server.
    #[arg(long, value_name = "NODES", value_parser = clap::value_parser!(u16).range(3..=9))]
    cluster: Option<u16>,
    /// With --cluster: the first node's route port (on 127.0.0.1); the others follow.
    #[arg(long, default_value_t = 6222)]
    nats_cluster_port: u16,
    /// The first adapter's gRPC port; the others follow in registry order.
    #[arg(long, default_value_t = 50051)]
    base_port: u16,
    /// The nats-server binary (default: $REFBUS_NATS_SERVER, .tools/bin/nats-server, PATH).
    #[arg(long, value_name = "FILE")]
    nats_server: Option<PathBuf>,
    /// Demonstrations and tests only: how fast the router's clock runs from now (60: a minute
    /// of clocks per second). The adapters keep the real time.
    #[arg(long, value_name = "FACTOR", hide = true, default_value_t = 1.0)]
    clock_speed: f64,
    /// Serve the adapters without TLS and without authentication (on 127.0.0.1 only): every
    /// caller acts as the agency. By default they serve mutual TLS with certificates `up`
    /// makes in `<data-dir>/tls` on first start.
    #[arg(long)]
    insecure_plaintext: bool,
    /// Prometheus metrics (`GET /metrics`) on 127.0.0.1: the router on this port, the adapters
    /// on the ports after it in registry order, then the dashboard. 0 (the default): free ports, printed at start.
    #[arg(long, default_value_t = 0)]
    metrics_port: u16,
    /// The dashboard's HTTP port (on 127.0.0.1).
    #[arg(long, default_value_t = 8080)]
    dashboard_port: u16,
    /// The notary's HTTP port (on 127.0.0.1): its log's checkpoint and tiles, for witnesses
    /// and auditors. The log itself is kept in `<data-dir>/log`.
    #[arg(long, default_value_t = 7480)]
    notary_port: u16,
}

/// The system name of the client certificates `up` makes for people trying it (buf curl).
pub(crate) const CLI_SYSTEM: &str = "cli";
/// The system name of the simulated agency systems' certificates (`--demo`).
pub(crate) const SIMULATOR_SYSTEM: &str = "simulator";

pub(crate) fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    runtime::init_tracing_beside_router_activity();
    let config = args.config.clone().unwrap_or_else(|| {
        PathBuf::from(if args.demo {
            "deploy/config/demo.toml"
        } else {
            "deploy/config/refbus.toml"
        })
    });
    let registry = runtime::load_registry(&config)?;
    let binary = runtime::nats_server_binary(args.nats_server.as_deref())?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| {
        PathBuf::from(match (args.demo, args.cluster.is_some()) {
            (false, false) => ".refbus",
            (true, false) => ".refbus-demo",
            (false, true) => ".refbus-cluster",
            (true, true) => ".refbus-demo-cluster",
        })
    });
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    refuse_the_other_kind(&data_dir, args.cluster.is_some())?;
    let keys_dir = data_dir.join("keys");
    for agency in registry.agencies.keys() {
        if !keys_dir
            .join(refbus_seal::secret_key_file_name(agency))
            .exists()
        {
            runtime::generate_keys(&keys_dir, agency)?;
        }
    }
    let router_signer = refbus_core::signature::Signer::Router;
    let router_key_file =
        keys_dir.join(refbus_seal::signing::signing_key_file_name(&router_signer));
    if !router_key_file.exists() {
        runtime::generate_signing_key(&keys_dir, &router_signer)?;
    }
    // `up` seals and signs with the keys it made itself, whatever the registry says.
    let mut local = registry.as_ref().clone();
    for agency in local.agencies.values_mut() {
        agency.public_key = None;
        agency.signing_keys.clear();
    }
    local.router_signing_keys.clear();
    // ... and trusts the CA it made itself for every agency's systems.
    let certs = refbus_tls::certs::Directory::new(data_dir.join("tls"));
    let transport = if args.insecure_plaintext {
        refbus_adapter::Transport::InsecurePlaintext
    } else {
        let ca = local_certificates(&certs, &registry)?;
        for agency in local.agencies.values_mut() {
            agency.client_cas = vec![ca.clone()];
        }
        let server = certs.server(SERVER_NAME);
        let tls = refbus_tls::ServerTls::from_pem_files(&server.certificate, &server.key)?;
        refbus_adapter::Transport::mutual_tls(tls, &local)?
    };
    let public_keys = runtime::public_keys(&local, Some(&keys_dir))?;
    let signers = std::sync::Arc::new(runtime::signers(&local, Some(&keys_dir))?);
    // A router running on pretended time (tests, demonstrations) stamps its records with
    // it: comparing them with JetStream's clock would refuse them all.
    let max_skew = (args.clock_speed == 1.0).then_some(refbus_core::integrity::DEFAULT_MAX_SKEW);
    let verifier = refbus_bus::Verifier::new(registry.clone(), signers, max_skew);
    let router_key = runtime::signing_key(&router_key_file, router_signer)?;
    // Operators log in to the dashboard: the coordinator and each agency's head, with
    // passwords made at the first run and listed in a file only its owner reads.
    let (accounts_file, logins_file) = super::dashboard::local_logins(&data_dir, &registry)?;
    let mut operators = refbus_operators::OperatorsConfig::new(accounts_file);
    operators.insecure_plaintext_cookies = true;

    tokio::runtime::Runtime::new()?.block_on(async move {
        // From here on a stop signal is ours to handle: nothing started is left behind.
        let stop_signal = runtime::stop_signal();
        // One NATS user per component: each agency's adapter, the router, the dashboard, and
        // the auditor (`refbus audit`, which up does not run: its flags are printed).
        let users: Vec<String> = registry
            .agencies
            .keys()
            .map(ToString::to_string)
            .chain([
                ROUTER_USER.to_owned(),
                DASHBOARD_USER.to_owned(),
                AUDITOR_USER.to_owned(),
                NOTARY_USER.to_owned(),
            ])
            .collect();
        let nats = match args.cluster {
            None => UpNats::Single(
                LocalNats::start(
                    &binary,
                    &data_dir,
                    args.nats_port,
                    args.nats_monitor_port,
                    &users,
                )
                .await?,
            ),
            Some(size) => UpNats::Cluster(
                LocalCluster::start(
                    &binary,
                    &data_dir,
                    usize::from(size),
                    ClusterPorts {
                        client: args.nats_port,
                        monitor: args.nats_monitor_port,
                        route: args.nats_cluster_port,
                    },
                    &users,
                )
                .await?,
            ),
        };
        // Every component provisions and checks the stream alike: replicated on three nodes
        // of a cluster.
        let stream = nats.stream_settings();
        // The router first: it creates the stream, which adapters (confined to their agency,
        // as in a deployment) may not even ask about.
        let router_bus = refbus_bus::Bus::connect_attesting(
            &nats.connect_options(ROUTER_USER)?,
            &stream,
            &router_key,
        )
        .await
            .context("connecting the router to the local nats-server")?;
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut endpoints = Vec::new();
        // Each component's metrics: the router's first, then the adapters' (name, URL).
        let router_metrics = metrics_endpoint(args.metrics_port, 0)?;
        let mut metrics = vec![("router".to_owned(), router_metrics.url()?)];
        for (index, agency) in registry.agencies.keys().enumerate() {
            let port = args.base_port + u16::try_from(index)?;
            let keyring = runtime::keyring(
                agency,
                &keys_dir.join(refbus_seal::secret_key_file_name(agency)),
                &public_keys,
            )?;
            let options = nats
                .connect_options(agency.as_str())?
                .confined_to(agency.clone());
            let bus = refbus_bus::Bus::connect(&options, &stream)
                .await
                .context("connecting to the local nats-server")?;
            let signer = refbus_core::signature::Signer::Agency(agency.clone());
            let signing = runtime::signing_key(
                &keys_dir.join(refbus_seal::signing::signing_key_file_name(&signer)),
                signer,
            )?;
            let adapter_metrics = metrics_endpoint(args.metrics_port, index + 1)?;
            metrics.push((agency.to_string(), adapter_metrics.url()?));
            let adapter = refbus_adapter::Adapter::new(
                agency.clone(),
                verifier.clone(),
                bus,
                keyring,
                signing,
                refbus_adapter::system_now(),
                refbus_adapter::Options {
                    metrics: Some(adapter_metrics),
                    ..refbus_adapter::Options::default()
                },
            );
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .with_context(|| {
                    format!("the adapter of {agency} cannot listen on 127.0.0.1:{port}")
                })?;
            let mut stopped = stopped.clone();
            let name = agency.clone();
            let transport = transport.clone();
            tasks.push(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                // Serves gRPC and carries out the reroutes the router asks of this agency.
                if let Err(err) = refbus_adapter::run(adapter, listener, transport, shutdown).await {
                    tracing::error!(agency = %name, "adapter failed: {err}");
                }
            }));
            endpoints.push((agency.clone(), format!("127.0.0.1:{port}")));
        }

        // One clock for the router and the dashboard: the board shows the router's time.
        let clock = router_clock(args.clock_speed);
        let router = refbus_router::Router::new(
            router_bus,
            verifier.clone(),
            router_key,
            clock.clone(),
            refbus_router::Options {
                metrics: Some(router_metrics),
                snapshot: Some(super::router::snapshot_file(&data_dir, "main")),
                ..refbus_router::Options::default()
            },
        );
        tokio::spawn(super::router::print_activity(router.activity()));
        let mut stopped_router = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped_router.wait_for(|stop| *stop).await;
            };
            if let Err(err) = router.run(shutdown).await {
                tracing::error!("router stopped: {err}; clocks are not running: restart refbus up");
            }
        }));

        // The notary: its own NATS user and key (a deployment runs it as its own process,
        // `refbus notary`, on another machine; here it is one more task of the demonstration).
        let notary_key_file = keys_dir.join("notary.key");
        let notary_key = if notary_key_file.exists() {
            refbus_notary::note::NoteKey::read(&notary_key_file, refbus_notary::note::KeyKind::Notary)?
        } else {
            refbus_notary::note::NoteKey::write_new(
                &notary_key_file,
                NOTARY_ORIGIN,
                refbus_notary::note::KeyKind::Notary,
            )?
        };
        let notary_bus = refbus_bus::Bus::connect(
            &nats.connect_options(NOTARY_USER)?,
            &stream,
        )
        .await
        .context("connecting the notary to the local nats-server")?;
        let notary_listener = tokio::net::TcpListener::bind(("127.0.0.1", args.notary_port))
            .await
            .with_context(|| format!("the notary cannot listen on 127.0.0.1:{}", args.notary_port))?;
        let notary_url = format!("http://{}", notary_listener.local_addr()?);
        let notary = refbus_notary::Notary {
            bus: notary_bus,
            key: notary_key,
            settings: refbus_notary::Settings {
                dir: data_dir.join("log"),
                origin: NOTARY_ORIGIN.to_owned(),
                interval: std::time::Duration::from_secs(1),
                metrics: None,
                stream_recheck_every: refbus_bus::statement::RECHECK_EVERY,
            },
            stats: std::sync::Arc::default(),
        };
        let mut stopped_notary = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped_notary.wait_for(|stop| *stop).await;
            };
            if let Err(err) = notary.run(Some(notary_listener), shutdown).await {
                tracing::error!("notary stopped: {err}");
            }
        }));
        println!(
            "  notary            {notary_url}/checkpoint (log in {}, verifier key in {})",
            data_dir.join("log").display(),
            notary_key_file.with_extension("vkey").display()
        );

        // The dashboard reads the whole stream with a NATS user of its own.
        let dashboard_bus = refbus_bus::Bus::connect(
            &nats.connect_options(DASHBOARD_USER)?,
            &stream,
        )
        .await
        .context("connecting the dashboard to the local nats-server")?;
        let dashboard_listener = tokio::net::TcpListener::bind(("127.0.0.1", args.dashboard_port))
            .await
            .with_context(|| {
                format!("the dashboard cannot listen on 127.0.0.1:{}", args.dashboard_port)
            })?;
        let dashboard_url = format!("http://{}/", dashboard_listener.local_addr()?);
        let operators = refbus_operators::Operators::new(
            operators,
            Some(&registry),
            dashboard_listener.local_addr()?,
        )?;
        // It acknowledges escalations through each agency's adapter, as that agency's system
        // `dashboard` (mutual TLS; in plaintext mode the board only shows).
        let mut acting = refbus_dashboard::act::Acting::new();
        if !args.insecure_plaintext {
            let tls = super::simulate::ClientTls::new(certs.clone(), refbus_dashboard::act::SYSTEM);
            for (agency, address) in &endpoints {
                acting = acting.agency(
                    agency.clone(),
                    &format!("https://{address}"),
                    tls.config(agency.as_str())?,
                )?;
            }
        }
        let dashboard_metrics = metrics_endpoint(args.metrics_port, metrics.len())?;
        metrics.push(("dashboard".to_owned(), dashboard_metrics.url()?));
        let dashboard = refbus_dashboard::Dashboard::new(dashboard_bus, verifier.clone(), clock)
            .with_acting(acting)
            .with_metrics(dashboard_metrics);
        let mut stopped_dashboard = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped_dashboard.wait_for(|stop| *stop).await;
            };
            if let Err(err) =
                super::dashboard::serve(dashboard, dashboard_listener, operators, shutdown).await
            {
                tracing::error!("dashboard stopped: {err}");
            }
        }));

        let tls = (!args.insecure_plaintext).then_some(&certs);
        let dashboard_line = format!(
            "{dashboard_url}   (log in as koordinator or kepala.<agency>; passwords in {})",
            logins_file.display()
        );
        print_endpoints(
            &registry,
            &endpoints,
            &nats,
            &ThisRun {
                data_dir: &data_dir,
                config: &config,
                demo: args.demo,
            },
            tls,
            &dashboard_line,
            &metrics,
        );
        let simulator = args.demo.then(|| {
            println!("Demonstration: simulated agency systems send a referral every {} s and answer some of them;", args.demo_every);
            println!("watch the router's warnings, breaches, escalations and reroutes below.");
            let endpoints = endpoints.iter().map(|(agency, address)| (agency.to_string(), address.clone())).collect();
            let every = std::time::Duration::from_secs(args.demo_every);
            let client_tls = (!args.insecure_plaintext)
                .then(|| super::simulate::ClientTls::new(certs.clone(), SIMULATOR_SYSTEM));
            tokio::spawn(async move {
                if let Err(err) = super::simulate::simulate(endpoints, every, 0, client_tls).await {
                    tracing::error!("simulation stopped: {err}");
                }
            })
        });

        stop_signal.await;
        eprintln!("\nrefbus: stopping");
        // The simulated systems first (aborting the task ends every task it started), so
        // nothing new arrives while the rest stops.
        if let Some(simulator) = simulator {
            simulator.abort();
            let _ = simulator.await;
        }
        stop.send_replace(true);
        for task in tasks {
            let _ = task.await;
        }
        nats.stop().await?;
        eprintln!("refbus: stopped; data kept in {}", data_dir.display());
        Ok(ExitCode::SUCCESS)
    })
}

/// A `buf curl` that lists `agency`'s referrals on its adapter at `endpoint`, as that agency's
/// `cli` system: with the certificates (mutual TLS), or in plaintext.
pub(crate) fn buf_curl(
    tls: Option<&refbus_tls::certs::Directory>,
    agency: &AgencyId,
    endpoint: &str,
) -> String {
    let port = endpoint.rsplit(':').next().unwrap_or_default();
    let request = "-d '{}' ";
    let method = "refbus.v1.ReferralService/ListReferrals";
    match tls {
        Some(certs) => {
            let client = certs.client(&refbus_tls::SystemIdentity::new(
                agency.as_str(),
                CLI_SYSTEM,
            ));
            format!(
                "  as {agency}'s system \"{CLI_SYSTEM}\" (mutual TLS; certificates in {}):\n    \
                 buf curl --protocol grpc --cacert {} --cert {} --key {} \\\n      \
                 -H 'x-refbus-operator: ani' {request}https://localhost:{port}/{method}",
                certs.path.display(),
                certs.ca().certificate.display(),
                client.certificate.display(),
                client.key.display(),
            )
        }
        None => format!(
            "  INSECURE PLAINTEXT (no TLS, no authentication):\n    buf curl --protocol grpc \
             --http2-prior-knowledge -H 'x-refbus-operator: ani' {request}http://{endpoint}/{method}"
        ),
    }
}

/// The router's NATS user in a local run.
const ROUTER_USER: &str = "refbus-router";
/// The dashboard's NATS user in a local run.
const DASHBOARD_USER: &str = "refbus-dashboard";
/// The auditor's NATS user, as in deploy/nats/permissions.conf (read-only there).
const AUDITOR_USER: &str = "refbus-auditor";
/// The notary's NATS user in a local run.
const NOTARY_USER: &str = "refbus-notary";
/// The origin of a local run's log (and its notary key's name).
const NOTARY_ORIGIN: &str = "refbus.local/log";

/// The router's clock: the system clock, or (tests, demonstrations) one running `speed` times
/// as fast from now.
fn router_clock(speed: f64) -> std::sync::Arc<dyn refbus_router::Clock> {
    if speed == 1.0 {
        std::sync::Arc::new(refbus_router::SystemClock::new())
    } else {
        std::sync::Arc::new(refbus_router::ScaledClock::new(
            runtime::system_now(),
            speed,
        ))
    }
}

/// The server certificate's files in `<data-dir>/tls`.
const SERVER_NAME: &str = "adapters";

/// Makes, on first start, the local run's CA, the adapters' server certificate (localhost,
/// 127.0.0.1) and client certificates for every agency's `cli` and `simulator` systems;
/// checks every one's expiry (a warning 30 days ahead, a refusal once expired). Returns the
/// CA certificate (DER) for the registry.
fn local_certificates(
    certs: &refbus_tls::certs::Directory,
    registry: &refbus_core::Registry,
) -> anyhow::Result<Vec<u8>> {
    const DAYS: i64 = 397;
    if !certs.ca().exist() {
        certs.make_ca("refbus up local CA", 3650)?;
    }
    let server = certs.server(SERVER_NAME);
    if !server.exist() {
        let hosts = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        certs.make_server(SERVER_NAME, &hosts, DAYS)?;
    }
    let mut check = vec![certs.ca().certificate, server.certificate];
    for agency in registry.agencies.keys() {
        for system in [CLI_SYSTEM, SIMULATOR_SYSTEM, refbus_dashboard::act::SYSTEM] {
            let identity = refbus_tls::SystemIdentity::new(agency.as_str(), system);
            let files = certs.client(&identity);
            if !files.exist() {
                certs.make_client(&identity, DAYS)?;
            }
            check.push(files.certificate);
        }
    }
    for path in &check {
        match refbus_tls::certs::check_at_start(path) {
            Ok(None) => {}
            Ok(Some(warning)) => tracing::warn!("CERTIFICATE: {warning}"),
            Err(err) => anyhow::bail!(
                "{err}; remove {} to have refbus up make new certificates",
                certs.path.display()
            ),
        }
    }
    let ca = refbus_tls::read_certificates(&certs.ca().certificate)?;
    Ok(ca.first().map(|der| der.to_vec()).unwrap_or_default())
}

/// Where this run keeps its data, which registry it runs and whether it is a demonstration.
struct ThisRun<'a> {
    data_dir: &'a std::path::Path,
    config: &'a std::path::Path,
    demo: bool,
}

fn print_endpoints(
    registry: &refbus_core::Registry,
    endpoints: &[(AgencyId, String)],
    nats: &UpNats,
    run: &ThisRun<'_>,
    tls: Option<&refbus_tls::certs::Directory>,
    dashboard: &str,
    metrics: &[(String, String)],
) {
    let data_dir = run.data_dir;
    println!("refbus is up.");
    println!();
    match nats {
        UpNats::Single(single) => println!(
            "  NATS (JetStream)  {}   monitoring http://{}   pid {}",
            single.url,
            single.monitor,
            single.pid().unwrap_or(0)
        ),
        UpNats::Cluster(cluster) => {
            println!(
                "  NATS (JetStream)  a cluster of {} nodes; the events stream on 3 of them (R3), fsync on every write;",
                cluster.urls.len()
            );
            println!(
                "                    every component connects to all of them, so one may fail:"
            );
            for (node, ((url, monitor), pid)) in cluster
                .urls
                .iter()
                .zip(&cluster.monitors)
                .zip(cluster.pids())
                .enumerate()
            {
                println!(
                    "    node {}          {url}   monitoring http://{monitor}   pid {pid}   store {}",
                    node + 1,
                    data_dir
                        .join("nats-cluster")
                        .join(runtime::cluster_node_name(node))
                        .display()
                );
            }
        }
    }
    let nats_flags = nats.flags();
    if let Some(security) = nats.security() {
        println!(
            "  NATS clients      TLS with a client certificate and an NKey per component; the router connects with"
        );
        println!(
            "                    {nats_flags} {}",
            security.flags(ROUTER_USER)
        );
        // Everything the auditor needs to check this run: its credentials, the registry and the
        // keys this run made, the log and the notary's public key (a demonstration's events
        // carry its pretended times, which JetStream's own cannot confirm).
        println!(
            "  auditor           refbus audit verify --config {} --public-keys {} {} {} --log {} --notary-key {}{}",
            run.config.display(),
            data_dir.join("keys").display(),
            nats_flags,
            security.flags(AUDITOR_USER),
            data_dir.join("log").display(),
            data_dir.join("keys").join("notary.vkey").display(),
            if run.demo { " --no-time-check" } else { "" }
        );
    }
    println!("  data              {}", data_dir.display());
    println!("  router            running; what it records is printed below");
    println!("  dashboard         {dashboard}");
    println!();
    println!(
        "  agency adapters (gRPC, refbus.v1.ReferralService; header x-refbus-operator required):"
    );
    for (agency, endpoint) in endpoints {
        let name = registry
            .agency(agency)
            .map(|a| a.name.as_str())
            .unwrap_or_default();
        println!("    {endpoint:<17} {agency:<20} {name}");
    }
    println!();
    if let Some((agency, endpoint)) = endpoints.first() {
        println!("{}", buf_curl(tls, agency, endpoint));
        println!();
    }
    println!("  metrics (Prometheus text format; docs/OPERATIONS.md):");
    for (component, url) in metrics {
        println!("    {url:<38} {component}");
    }
    println!();
    println!("Press Ctrl-C to stop.");
}

/// `up`'s metrics socket on 127.0.0.1 for the component at `offset` from `base` (0: the
/// router; the adapters follow), or a free port when `base` is 0.
fn metrics_endpoint(base: u16, offset: usize) -> anyhow::Result<refbus_metrics::Endpoint> {
    let port = if base == 0 {
        0
    } else {
        u16::try_from(offset)
            .ok()
            .and_then(|offset| base.checked_add(offset))
            .context("--metrics-port leaves no room for every component's port")?
    };
    refbus_metrics::Endpoint::bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .with_context(|| format!("serving metrics on 127.0.0.1:{port} (--metrics-port)"))
}

/// The NATS `up` runs: one server, or a cluster (`--cluster`).
enum UpNats {
    Single(LocalNats),
    Cluster(LocalCluster),
}

impl UpNats {
    /// How component `user` connects: to every node of a cluster.
    fn connect_options(&self, user: &str) -> anyhow::Result<refbus_bus::ConnectOptions> {
        match self {
            UpNats::Single(single) => single.connect_options(user),
            UpNats::Cluster(cluster) => cluster.connect_options(user),
        }
    }

    /// The events stream as every component provisions and checks it.
    fn stream_settings(&self) -> refbus_bus::StreamSettings {
        refbus_bus::StreamSettings {
            replicas: match self {
                UpNats::Single(_) => 1,
                UpNats::Cluster(_) => 3,
            },
            ..refbus_bus::StreamSettings::default()
        }
    }

    fn security(&self) -> Option<&crate::nats_security::NatsSecurity> {
        match self {
            UpNats::Single(single) => single.security.as_ref(),
            UpNats::Cluster(cluster) => Some(&cluster.security),
        }
    }

    /// The `--nats` flag (and, for a cluster, `--stream-replicas`) a separate component of
    /// this run is started with.
    fn flags(&self) -> String {
        match self {
            UpNats::Single(single) => format!("--nats {}", single.url),
            UpNats::Cluster(cluster) => {
                format!("--nats {} --stream-replicas 3", cluster.urls.join(","))
            }
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        match self {
            UpNats::Single(single) => single.stop().await,
            UpNats::Cluster(cluster) => cluster.stop().await,
        }
    }
}

/// Refuses a data directory that holds the other kind of run's NATS store: a single server's
/// stream and a cluster's are different streams, and the router's timer snapshot and the
/// notary's log in the directory describe one of them only.
fn refuse_the_other_kind(data_dir: &std::path::Path, cluster: bool) -> anyhow::Result<()> {
    let (other, this, flag) = if cluster {
        ("nats", "a cluster", "without --cluster")
    } else {
        ("nats-cluster", "one server", "with --cluster")
    };
    if data_dir.join(other).exists() {
        anyhow::bail!(
            "{} holds the data of a run {flag}; {this} keeps a stream of its own: give another \
             --data-dir (or run {flag} again)",
            data_dir.display()
        );
    }
    Ok(())
}
