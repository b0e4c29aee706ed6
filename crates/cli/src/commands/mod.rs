//! The subcommands, one module each. Adding one: a module here, a variant of [`Command`], and
//! an arm in [`run`].

pub(crate) mod adapter;
pub(crate) mod audit;
pub(crate) mod bench;
pub(crate) mod certs;
pub(crate) mod chaos;
pub(crate) mod clock;
pub(crate) mod config;
pub(crate) mod dashboard;
pub(crate) mod dashboard_users;
pub(crate) mod indicators;
pub(crate) mod keys;
pub(crate) mod notary;
pub(crate) mod router;
pub(crate) mod simulate;
pub(crate) mod up;

use std::fmt;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Check a deployment's configuration files.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Explain the clocks of a referral: what falls due, when, and who is told.
    #[command(subcommand)]
    Clock(clock::ClockCommand),
    /// Generate an agency's keys for sealed identity data.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Make the certificates of mutual TLS: a deployment CA, adapters' server certificates,
    /// agency systems' client certificates.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Run one agency's gRPC adapter; it also carries out the reroutes the router asks of
    /// the agency.
    Adapter(adapter::AdapterArgs),
    /// Run the router: clocks, escalations, reroute requests.
    ///
    /// Exits with a non-zero status if its events stop coming (its durable consumer's stream
    /// ended): run it under a supervisor that restarts it; it resumes where it stopped.
    Router(router::RouterArgs),
    /// Run the notary: an RFC 6962 Merkle log of every stream message (C2SP tlog-tiles on
    /// disk, served over HTTP), with a signed checkpoint every interval. Exits non-zero if the
    /// stream no longer holds what the log signed (docs/AUDIT.md).
    Notary(notary::NotaryArgs),
    /// Run a witness (another office): follow the notary's checkpoints, cosign each one
    /// consistent with the last, refuse (for good) one that forks.
    Witness(notary::WitnessArgs),
    /// Run the operators' dashboard (HTTP): the live escalation board, agency load, timelines.
    ///
    /// Operators log in with the accounts of --accounts; `refbus dashboard user add|remove|list`
    /// manages them.
    Dashboard(dashboard::DashboardArgs),
    /// Planning indicators over the whole stream (every record checked): referrals, outcomes,
    /// times and clock compliance per month, agency, service, priority, category, sex and age
    /// band, as a table or CSV. No identity.
    Indicators(indicators::IndicatorsArgs),
    /// Run everything on this machine: a local nats-server, every agency's adapter, the router
    /// and the dashboard.
    Up(up::UpArgs),
    /// Simulate agency systems sending and answering referrals (for demonstrations).
    Simulate(simulate::SimulateArgs),
    /// The auditor's tools, read-only: verify the records, the stream and the router's clocks;
    /// replay a referral or a case to any time; export JSONL, CSV or FHIR R4.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Measure the bus on this machine (run from a release build).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// A Jepsen-style fault campaign on a local 3-node cluster: a workload, a nemesis and a
    /// checker (docs/RELIABILITY.md). Exits 1 if the check fails.
    Chaos(chaos::ChaosArgs),
}

pub(crate) fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Config(command) => config::run(command),
        Command::Clock(command) => clock::run(command),
        Command::Keys(command) => keys::run(command),
        Command::Certs(command) => certs::run(command),
        Command::Adapter(args) => adapter::run(args),
        Command::Router(args) => router::run(args),
        Command::Notary(args) => notary::run(args),
        Command::Witness(args) => notary::witness(args),
        Command::Dashboard(args) => dashboard::run(args),
        Command::Indicators(args) => indicators::run(args),
        Command::Up(args) => up::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Audit(command) => audit::run(command),
        Command::Bench(command) => bench::run(command),
        Command::Chaos(args) => chaos::run(args),
    }
}

/// A mistake in the command line itself (an unknown agency, a malformed time): exit status 2,
/// as for the errors clap reports.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// 2 for a usage error, 1 for anything else that failed.
pub(crate) fn exit_code(error: &anyhow::Error) -> ExitCode {
    if error.is::<UsageError>() {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}
