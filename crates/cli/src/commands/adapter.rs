//! `refbus adapter`: one agency's gRPC adapter, as a production deployment runs it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use refbus_core::AgencyId;

use crate::commands::UsageError;
use crate::runtime;

#[derive(Debug, Args)]
pub(crate) struct AdapterArgs {
    /// The agency this adapter serves (e.g. maros-dinsos).
    #[arg(long)]
    agency: String,
    /// The deployment's registry.
    #[arg(long, value_name = "FILE", default_value = "deploy/config/refbus.toml")]
    config: PathBuf,
    #[command(flatten)]
    nats: runtime::NatsArgs,
    /// Where the gRPC server listens.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// The agency's secret key (from `refbus keys generate`).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The agency's secret signing key (default: `<agency>.sign.key` beside --key).
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// A directory of `<agency>.pub` and `<name>.sign.pub` files, for keys the registry does not
    /// list.
    #[arg(long, value_name = "DIR")]
    public_keys: Option<PathBuf>,
    /// The adapter's TLS server certificate, PEM (from `refbus certs server`). Callers must
    /// present a client certificate of this agency, from a CA the registry lists for it.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        required_unless_present = "insecure_plaintext"
    )]
    tls_cert: Option<PathBuf>,
    /// The server certificate's private key, PEM (mode 0600).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve gRPC without TLS and without authentication: every caller acts as the agency.
    /// Only on a loopback --listen address; for trying refbus on one machine.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    insecure_plaintext: bool,
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP, no identity in them;
    /// see docs/OPERATIONS.md), e.g. 127.0.0.1:9471. Not served unless given.
    #[arg(long, value_name = "ADDR", env = "REFBUS_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
}

pub(crate) fn run(args: AdapterArgs) -> anyhow::Result<ExitCode> {
    runtime::init_tracing();
    let agency = AgencyId::new(&args.agency).map_err(|err| UsageError(err.to_string()))?;
    // Said before anything starts (`run` refuses it too).
    if args.insecure_plaintext && !args.listen.ip().is_loopback() {
        return Err(UsageError(format!(
            "--insecure-plaintext serves on loopback only, and --listen {} is not: serve mutual \
             TLS (--tls-cert, --tls-key) or listen on 127.0.0.1",
            args.listen
        ))
        .into());
    }
    let registry = runtime::load_registry(&args.config)?;
    if registry.agency(&agency).is_none() {
        return Err(UsageError(format!(
            "{agency} is not an agency of {}",
            args.config.display()
        ))
        .into());
    }
    let public_keys = runtime::public_keys(&registry, args.public_keys.as_deref())?;
    let keyring = runtime::keyring(&agency, &args.key, &public_keys)?;
    let signer = refbus_core::signature::Signer::Agency(agency.clone());
    let signing_path = args.signing_key.clone().unwrap_or_else(|| {
        args.key
            .with_file_name(refbus_seal::signing::signing_key_file_name(&signer))
    });
    let signing = runtime::signing_key(&signing_path, signer)?;
    let signers = runtime::signers(&registry, args.public_keys.as_deref())?;
    runtime::check_signing_key_listed(&signers, &signing, &signing_path)?;
    let verifier = refbus_bus::Verifier::new(
        registry.clone(),
        std::sync::Arc::new(signers),
        Some(refbus_core::integrity::DEFAULT_MAX_SKEW),
    );
    let transport = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = refbus_tls::ServerTls::from_pem_files(cert, key)?;
            let transport = refbus_adapter::Transport::mutual_tls(tls, &registry)?;
            if registry
                .agency(&agency)
                .is_some_and(|entry| entry.client_cas.is_empty())
            {
                tracing::warn!(
                    %agency,
                    "the registry lists no client CA for this agency ([[deployment.client_ca]]): no system of it can call this adapter"
                );
            }
            transport
        }
        _ => {
            tracing::warn!("serving INSECURE PLAINTEXT: no TLS, and every caller acts as {agency}");
            refbus_adapter::Transport::InsecurePlaintext
        }
    };
    let metrics = runtime::metrics_endpoint(args.metrics_addr)?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        let bus = args.nats.connect(Some(agency.clone())).await?;
        let adapter = refbus_adapter::Adapter::new(
            agency.clone(),
            verifier,
            bus,
            keyring,
            signing,
            refbus_adapter::system_now(),
            refbus_adapter::Options {
                metrics,
                ..refbus_adapter::Options::default()
            },
        );
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        tracing::info!(%agency, listen = %args.listen, "adapter serving");
        // `run` serves gRPC and carries out the reroutes the router asks of this agency.
        refbus_adapter::run(adapter, listener, transport, runtime::stop_signal()).await?;
        tracing::info!(%agency, "adapter stopped");
        Ok(ExitCode::SUCCESS)
    })
}
