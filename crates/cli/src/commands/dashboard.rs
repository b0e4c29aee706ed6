//! `refbus dashboard`: the operators' board over HTTP (see the refbus-dashboard crate).
//!
//! Operators do not log in yet: until the login lands, every request is served as the one
//! viewer named by `--dev-viewer AGENCY:ROLE`, and the server refuses to listen anywhere but
//! on a loopback address.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use refbus_core::Timestamp;
use refbus_dashboard::act::Acting;
use refbus_dashboard::{Dashboard, Viewer};
use refbus_router::{Clock, ScaledClock, SystemClock};

use crate::commands::UsageError;
use crate::runtime;

#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    /// The deployment's registry (agencies, time zones, every policy version still in use).
    #[arg(long, value_name = "FILE", default_value = "deploy/config/refbus.toml")]
    config: PathBuf,
    #[command(flatten)]
    nats: runtime::NatsArgs,
    /// Where to serve HTTP (a loopback address while operators cannot log in).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// A directory of `<name>.sign.pub` files, for signing keys the registry does not list.
    #[arg(long, value_name = "DIR")]
    public_keys: Option<PathBuf>,
    /// DEVELOPMENT ONLY, until operators log in: serve every request as this viewer,
    /// `AGENCY:ROLE` with ROLE one of coordinator, head, supervisor, viewer (e.g.
    /// `maros-bappeda:coordinator`). No password, no session: anyone who can reach the port is
    /// that viewer, which is why the dashboard then listens on loopback only.
    #[arg(long, value_name = "AGENCY:ROLE")]
    dev_viewer: String,
    /// An agency the dashboard acknowledges escalations for, and its adapter:
    /// `AGENCY=https://HOST:PORT` (repeat for each). Needs --certs.
    #[arg(long = "adapter", value_name = "AGENCY=URL", requires = "certs")]
    adapters: Vec<String>,
    /// The `refbus certs` directory with the deployment CA and the dashboard's client
    /// certificate for each of those agencies (`refbus certs client --system dashboard`).
    #[arg(long, value_name = "DIR")]
    certs: Option<PathBuf>,
    /// Demonstrations and tests only: pretend the clock started at this instant (RFC 3339).
    #[arg(long, value_name = "INSTANT", hide = true)]
    clock_start: Option<String>,
    /// Demonstrations and tests only: how fast pretended time runs (0 freezes it).
    #[arg(long, value_name = "FACTOR", hide = true, default_value_t = 1.0)]
    clock_speed: f64,
}

pub(crate) fn run(args: DashboardArgs) -> anyhow::Result<ExitCode> {
    runtime::init_tracing();
    let registry = runtime::load_registry(&args.config)?;
    let viewer = dev_viewer(&args.dev_viewer, &registry)?;
    if !args.listen.ip().is_loopback() {
        return Err(UsageError(format!(
            "--listen {}: without a login the dashboard serves only a loopback address",
            args.listen
        ))
        .into());
    }
    let signers = Arc::new(runtime::signers(&registry, args.public_keys.as_deref())?);
    let max_skew = args
        .clock_start
        .is_none()
        .then_some(refbus_core::integrity::DEFAULT_MAX_SKEW);
    let verifier = refbus_bus::Verifier::new(registry.clone(), signers, max_skew);
    tokio::runtime::Runtime::new()?.block_on(async move {
        let clock: Arc<dyn Clock> = match &args.clock_start {
            Some(start) => {
                let start = Timestamp::parse_rfc3339(start)
                    .map_err(|err| UsageError(format!("--clock-start: {err}")))?;
                Arc::new(ScaledClock::new(start, args.clock_speed))
            }
            None => Arc::new(SystemClock::new()),
        };
        let bus = args.nats.connect(None).await?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("the dashboard cannot listen on {}", args.listen))?;
        println!(
            "dashboard: http://{}/ (development viewer {} as {}; no login yet)",
            listener.local_addr()?,
            viewer.agency,
            viewer.role
        );
        let acting = acting(&args.adapters, args.certs.as_deref(), &registry)?;
        serve(
            Dashboard::new(bus, verifier, clock).with_acting(acting),
            listener,
            viewer,
            runtime::stop_signal(),
        )
        .await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The adapters the dashboard calls to act, each with its client certificate from `certs`.
fn acting(
    adapters: &[String],
    certs: Option<&std::path::Path>,
    registry: &refbus_core::Registry,
) -> anyhow::Result<Acting> {
    let mut acting = Acting::new();
    let Some(certs) = certs else {
        return Ok(acting);
    };
    let tls = super::simulate::ClientTls::new(
        refbus_tls::certs::Directory::new(certs),
        refbus_dashboard::act::SYSTEM,
    );
    for adapter in adapters {
        let (agency, url) = adapter
            .split_once('=')
            .ok_or_else(|| UsageError(format!("--adapter {adapter}: expected AGENCY=URL")))?;
        let agency = refbus_core::AgencyId::new(agency)
            .ok()
            .filter(|agency| registry.agency(agency).is_some())
            .ok_or_else(|| UsageError(format!("--adapter {adapter}: unknown agency")))?;
        acting = acting.agency(agency.clone(), url, tls.config(agency.as_str())?)?;
    }
    Ok(acting)
}

/// The development viewer `AGENCY:ROLE`, its agency checked against the registry.
pub(crate) fn dev_viewer(text: &str, registry: &refbus_core::Registry) -> anyhow::Result<Viewer> {
    let viewer =
        Viewer::parse_dev(text, "dev").map_err(|err| UsageError(format!("--dev-viewer: {err}")))?;
    if registry.agency(&viewer.agency).is_none() {
        return Err(UsageError(format!(
            "--dev-viewer: {} is not an agency of the registry",
            viewer.agency
        ))
        .into());
    }
    Ok(viewer)
}

/// Runs the dashboard with every request served as `viewer` (development only).
pub(crate) async fn serve(
    dashboard: Dashboard,
    listener: tokio::net::TcpListener,
    viewer: Viewer,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    refbus_dashboard::run(
        dashboard,
        listener,
        |app| app.layer(axum::Extension(viewer)),
        shutdown,
    )
    .await?;
    Ok(())
}
