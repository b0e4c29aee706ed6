//! `refbus dashboard`: the operators' board over HTTP (see the refbus-dashboard crate).
//!
//! Operators log in with the accounts of `--accounts` (refbus-operators: argon2id hashes,
//! sessions in secure cookies, CSRF on every form); `refbus dashboard user ...` manages them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use refbus_dashboard::Dashboard;
use refbus_dashboard::act::Acting;
use refbus_operators::{Operators, OperatorsConfig};

use crate::commands::UsageError;
use crate::runtime;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct DashboardArgs {
    #[command(subcommand)]
    command: Option<super::dashboard_users::DashboardCommand>,
    /// The deployment's registry (agencies, time zones, every policy version still in use).
    #[arg(long, value_name = "FILE", default_value = "deploy/config/refbus.toml")]
    config: PathBuf,
    #[command(flatten)]
    nats: runtime::NatsArgs,
    /// Where to serve HTTP. Session cookies are `Secure`: serve it behind a TLS reverse proxy,
    /// or on loopback with --insecure-plaintext-cookies.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP, no login, no identity in
    /// them), e.g. `127.0.0.1:9466`. Not served if absent.
    #[arg(long, value_name = "ADDR", env = "REFBUS_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// A directory of `<name>.sign.pub` files, for signing keys the registry does not list.
    #[arg(long, value_name = "DIR")]
    public_keys: Option<PathBuf>,
    /// The operators' accounts file (`refbus dashboard user add --accounts FILE ...`), readable
    /// by its owner only. Re-read when it changes.
    #[arg(long, value_name = "FILE", required = true)]
    accounts: Option<PathBuf>,
    /// Session cookies without `Secure`, for plain HTTP on a loopback address only (refused
    /// on any other address).
    #[arg(long)]
    insecure_plaintext_cookies: bool,
    /// An agency the dashboard acknowledges escalations for, and its adapter:
    /// `AGENCY=https://HOST:PORT` (repeat for each). Needs --certs.
    #[arg(long = "adapter", value_name = "AGENCY=URL", requires = "certs")]
    adapters: Vec<String>,
    /// The `refbus certs` directory with the deployment CA and the dashboard's client
    /// certificate for each of those agencies (`refbus certs client --system dashboard`).
    #[arg(long, value_name = "DIR")]
    certs: Option<PathBuf>,
    /// Where the dashboard keeps a signed snapshot of its projection, and the key it signs it
    /// with (made at first start, readable by its owner only), so that a restart reads again
    /// only the referrals changed since. Without it every start reads every referral.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Demonstrations and tests only: pretend the clock started at this instant (RFC 3339).
    #[arg(long, value_name = "INSTANT", hide = true)]
    clock_start: Option<String>,
    /// Demonstrations and tests only: how fast pretended time runs (0 freezes it).
    #[arg(long, value_name = "FACTOR", hide = true, default_value_t = 1.0)]
    clock_speed: f64,
}

pub(crate) fn run(args: DashboardArgs) -> anyhow::Result<ExitCode> {
    if let Some(command) = args.command {
        return super::dashboard_users::run(command);
    }
    runtime::init_tracing();
    let registry = runtime::load_registry(&args.config)?;
    let mut operators = OperatorsConfig::new(args.accounts.clone().unwrap_or_default());
    operators.insecure_plaintext_cookies = args.insecure_plaintext_cookies;
    let operators = Operators::new(operators, Some(&registry), args.listen)
        .map_err(|err| UsageError(format!("the operators' accounts: {err}")))?;
    let signers = Arc::new(runtime::signers(&registry, args.public_keys.as_deref())?);
    let max_skew = args
        .clock_start
        .is_none()
        .then_some(refbus_core::integrity::DEFAULT_MAX_SKEW);
    let verifier = refbus_bus::Verifier::new(registry.clone(), signers, max_skew);
    let metrics = runtime::metrics_endpoint(args.metrics_addr)?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        let clock = runtime::clock(args.clock_start.as_deref(), args.clock_speed)?;
        let bus = args.nats.connect(None).await?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("the dashboard cannot listen on {}", args.listen))?;
        println!(
            "dashboard: http://{}/ ({} operator(s) may log in)",
            listener.local_addr()?,
            operators.accounts().len()
        );
        let acting = acting(&args.adapters, args.certs.as_deref(), &registry)?;
        let mut dashboard = Dashboard::new(bus, verifier, clock).with_acting(acting);
        if let Some(metrics) = metrics {
            dashboard = dashboard.with_metrics(metrics);
        }
        if let Some(dir) = &args.state_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("making the state directory {}", dir.display()))?;
            let key_file = dir.join("dashboard-snapshot.key");
            let key = refbus_dashboard::snapshot::key(&key_file)
                .with_context(|| format!("the snapshot key {}", key_file.display()))?;
            dashboard = dashboard.with_snapshot(
                dir.join("dashboard-projection.snapshot"),
                key,
                // A million referrals make a file of about 100 MB: not every minute.
                std::time::Duration::from_secs(300),
            );
        }
        serve(dashboard, listener, operators, runtime::stop_signal()).await?;
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

/// Runs the dashboard behind the operators' login: the login and logout routes beside the
/// board's, and the layer that puts the logged-in operator in every request (outermost).
pub(crate) async fn serve(
    dashboard: Dashboard,
    listener: tokio::net::TcpListener,
    operators: Operators,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    refbus_dashboard::run(
        dashboard,
        listener,
        |app| app.merge(operators.routes()).layer(operators.layer()),
        shutdown,
    )
    .await?;
    Ok(())
}

/// The operators' logins of a local run (`refbus up`), in `data_dir`: the accounts file, made at
/// the first run with the Tim Terpadu coordinator (`koordinator`) and one head per agency
/// (`kepala.<agency>`), each with a generated password, and the file that lists those
/// passwords (`dashboard-logins.txt`, readable by its owner only). Later runs keep both.
pub(crate) fn local_logins(
    data_dir: &std::path::Path,
    registry: &refbus_core::Registry,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    use refbus_operators::accounts::{self, Accounts, Role, Username};
    let accounts_file = data_dir.join("operators.toml");
    let logins_file = data_dir.join("dashboard-logins.txt");
    if accounts_file.exists() {
        return Ok((accounts_file, logins_file));
    }
    let mut people = vec![(
        "koordinator".to_owned(),
        registry.coordinator.clone(),
        Role::Coordinator,
    )];
    for agency in registry
        .agencies
        .keys()
        .filter(|agency| **agency != registry.coordinator)
    {
        people.push((format!("kepala.{agency}"), agency.clone(), Role::Head));
    }
    let mut file = Accounts::new();
    let mut listing = String::from(
        "# Dashboard logins of this local refbus (refbus up). Keep this file to yourself.\n\
         # USERNAME  AGENCY  ROLE  PASSWORD\n",
    );
    for (username, agency, role) in people {
        let password = refbus_operators::password::generate();
        listing.push_str(&format!(
            "{username}  {agency}  {role}  {}\n",
            password.as_str()
        ));
        let username = Username::new(username)?;
        file.add(
            accounts::new_account(username, agency, role, &password)?,
            Some(registry),
        )?;
    }
    crate::nats_security::write_secret(&logins_file, &listing)?;
    file.write(&accounts_file)?;
    Ok((accounts_file, logins_file))
}
