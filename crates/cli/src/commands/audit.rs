//! `refbus audit`: the auditor's commands, read-only, connecting with the auditor's NATS user
//! (`refbus-auditor` in deploy/nats/permissions.conf; `refbus up` prints its flags). Thin: the
//! work is in refbus-audit.
//!
//! Exit codes: 0 verified with no problem (or done); 3 problems found (the report names each);
//! 2 a mistake in the command line (an unknown referral, agency or service, a malformed time or
//! filter): nothing was read or written; 1 could not run (NATS unreachable, a file unreadable,
//! interrupted).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use refbus_audit::export::{Filters, Format};
use refbus_audit::verify::{Options, Outcome};
use refbus_core::{AgencyId, CaseId, ReferralId, Status, Timestamp};

use super::UsageError;
use crate::runtime;

/// Problems were found: distinct from "could not run" (1) and a usage error (2).
pub(crate) const PROBLEMS_FOUND: u8 = 3;

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Verify every record, the stream's sequences and the router's clock records.
    ///
    /// Exit status: 0 no problem, 3 problems found (each named with its referral, stream
    /// sequence and what was expected), 2 bad command line, 1 could not run or interrupted.
    Verify(VerifyArgs),
    /// A referral's state at any time, with its timeline; or every referral of a case and
    /// whether it is fully served.
    Replay(ReplayArgs),
    /// Export referrals: jsonl (the stored records exactly as stored; re-verifiable with
    /// `verify --from-export`), csv (one row per referral), fhir (an HL7 FHIR R4 Bundle of
    /// Tasks). Never identity.
    Export(ExportArgs),
}

/// What every audit command reads with.
#[derive(Debug, Args)]
pub(crate) struct Common {
    /// The deployment's registry (with every policy version still in use).
    #[arg(long, value_name = "FILE", default_value = "deploy/config/refbus.toml")]
    config: PathBuf,
    /// A directory of `<name>.sign.pub` files, for signing keys the registry does not list.
    #[arg(long, value_name = "DIR")]
    public_keys: Option<PathBuf>,
    /// Skip the check of each event's time against JetStream's: only for streams written on a
    /// pretended clock (`refbus up --demo`, tests).
    #[arg(long, hide = true)]
    no_time_check: bool,
}

impl Common {
    fn verifier(&self) -> anyhow::Result<(Arc<refbus_core::Registry>, refbus_bus::Verifier)> {
        let registry = runtime::load_registry(&self.config)?;
        let signers = Arc::new(runtime::signers(&registry, self.public_keys.as_deref())?);
        let max_skew = (!self.no_time_check).then_some(refbus_core::integrity::DEFAULT_MAX_SKEW);
        let verifier = refbus_bus::Verifier::new(registry.clone(), signers, max_skew);
        Ok((registry, verifier))
    }
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    common: Common,
    /// Print the report as JSON (one document) instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    nats: runtime::NatsArgs,
    /// Verify a JSONL export offline instead of the stream (no NATS needed).
    #[arg(long, value_name = "FILE")]
    from_export: Option<PathBuf>,
    /// Recompute the clocks up to this instant (RFC 3339); default: now.
    #[arg(long, value_name = "TIME")]
    now: Option<String>,
    /// How long after an item falls due the router may take to record it before it counts
    /// as late (seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    tolerance: u64,
    /// Keep progress in FILE when interrupted (Ctrl-C), and resume from it if it exists; it is
    /// removed once a verification completes.
    #[arg(long, value_name = "FILE")]
    resume: Option<PathBuf>,
    #[command(flatten)]
    log: LogArgs,
}

/// The Merkle log to check the stream against (docs/AUDIT.md).
#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// The log's files (C2SP tlog-tiles layout: `checkpoint`, `tile/...`): the notary's
    /// directory or a mirror of what it serves. Without it the log is not checked.
    #[arg(long, value_name = "DIR", requires = "notary_key")]
    log: Option<PathBuf>,
    /// The notary's verifier key, or a file holding it (`notary.vkey`).
    #[arg(long, value_name = "VKEY|FILE")]
    notary_key: Option<String>,
    /// A witness's verifier key, or a file holding it; repeat for each trusted witness.
    #[arg(long = "witness-key", value_name = "VKEY|FILE")]
    witness_keys: Vec<String>,
    /// How many of the witnesses must have cosigned the latest checkpoint (default: all of
    /// those given).
    #[arg(long, value_name = "N")]
    quorum: Option<usize>,
    /// The log's origin, the first line of its checkpoints (default: the notary key's name).
    #[arg(long)]
    origin: Option<String>,
    /// The checkpoints this auditor kept from earlier audits (one per file): the latest must
    /// be consistent with each; a sound one is added.
    #[arg(long, value_name = "DIR")]
    kept_checkpoints: Option<PathBuf>,
}

impl LogArgs {
    /// The log check, if a log was given.
    fn check(&self) -> anyhow::Result<Option<refbus_audit::log::LogCheck>> {
        let (Some(tiles), Some(notary_key)) = (&self.log, &self.notary_key) else {
            return Ok(None);
        };
        let vkey = super::notary::verifier_key_arg(notary_key);
        let notary = refbus_notary::note::notary_verifier(&vkey)
            .map_err(|err| UsageError(format!("--notary-key: {err}")))?;
        let witnesses = self
            .witness_keys
            .iter()
            .map(|key| {
                refbus_notary::note::CosignatureVerifier::new(&super::notary::verifier_key_arg(key))
                    .map_err(|err| UsageError(format!("--witness-key {key}: {err}")).into())
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let quorum = self.quorum.unwrap_or(witnesses.len());
        if quorum > witnesses.len() {
            return Err(UsageError(format!(
                "--quorum {quorum} needs at least {quorum} --witness-key, {} given",
                witnesses.len()
            ))
            .into());
        }
        Ok(Some(refbus_audit::log::LogCheck::new(
            refbus_audit::log::LogSource {
                tiles: tiles.clone(),
                trust: refbus_notary::verify::Trust {
                    origin: self
                        .origin
                        .clone()
                        .unwrap_or_else(|| super::notary::key_name(&vkey)),
                    notary,
                    witnesses,
                    quorum,
                },
                kept: self.kept_checkpoints.clone(),
            },
        )))
    }
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    #[command(flatten)]
    common: Common,
    /// Print JSON (one document) instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    nats: runtime::NatsArgs,
    /// The referral to replay.
    #[arg(
        long,
        value_name = "ID",
        conflicts_with = "case",
        required_unless_present = "case"
    )]
    referral: Option<String>,
    /// Every referral of this case.
    #[arg(long, value_name = "ID")]
    case: Option<String>,
    /// The state at this instant (RFC 3339); default: now, every event.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    nats: runtime::NatsArgs,
    /// jsonl, csv or fhir.
    #[arg(long, value_name = "FORMAT")]
    format: String,
    /// Referrals this agency sent or received.
    #[arg(long, value_name = "AGENCY")]
    agency: Option<String>,
    /// Referrals created at or after this instant (RFC 3339, or a date YYYY-MM-DD: 00:00 UTC).
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// Referrals created before this instant (RFC 3339, or a date YYYY-MM-DD: 00:00 UTC).
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
    /// Referrals for this service.
    #[arg(long, value_name = "SERVICE")]
    service: Option<String>,
    /// Referrals in this status now (requested, accepted, completed...).
    #[arg(long, value_name = "STATUS")]
    status: Option<String>,
    /// Write to FILE (replaced only once the export is complete); default: standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub(crate) fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    runtime::init_tracing();
    match command {
        AuditCommand::Verify(args) => verify(args),
        AuditCommand::Replay(args) => replay(args),
        AuditCommand::Export(args) => export(args),
    }
}

fn parse_time(flag: &str, text: &str) -> anyhow::Result<Timestamp> {
    if let Ok(time) = Timestamp::parse_rfc3339(text) {
        return Ok(time);
    }
    if text.len() == 10
        && let Ok(time) = Timestamp::parse_rfc3339(&format!("{text}T00:00:00Z"))
    {
        return Ok(time);
    }
    Err(UsageError(format!(
        "{flag} {text:?} is not a time: give RFC 3339 (2026-03-02T09:00:00+08:00) or a date (2026-03-02)"
    ))
    .into())
}

// === verify ===

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let now = match &args.now {
        Some(text) => parse_time("--now", text)?,
        None => runtime::system_now(),
    };
    let (registry, verifier) = args.common.verifier()?;
    let options = Options {
        now,
        resume: args.resume.clone(),
        progress: !args.json,
    };
    let tolerance = Duration::from_secs(args.tolerance);
    let mut checks = refbus_audit::checks::standard(registry, tolerance);
    if let Some(log) = args.log.check()? {
        checks.push(Box::new(log));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let outcome = tokio::runtime::Runtime::new()?.block_on(async {
        let signal = stop.clone();
        let stop_signal = runtime::stop_signal();
        tokio::spawn(async move {
            stop_signal.await;
            signal.store(true, Ordering::Relaxed);
        });
        match &args.from_export {
            Some(file) => {
                let file = file.clone();
                let verifier = verifier.clone();
                let stop = stop.clone();
                tokio::task::spawn_blocking(move || {
                    refbus_audit::verify::verify_export(&file, &verifier, checks, &options, &stop)
                })
                .await?
                .map_err(anyhow::Error::from)
            }
            None => {
                let bus = args.nats.connect(None).await?;
                refbus_audit::verify::verify_bus(&bus, &verifier, checks, &options, &stop)
                    .await
                    .map_err(anyhow::Error::from)
            }
        }
    })?;
    match outcome {
        Outcome::Done(report) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(PROBLEMS_FOUND)
            })
        }
        Outcome::Stopped { last_seq, saved } => {
            let how = saved.map_or_else(
                || "run again with --resume FILE to be able to resume".to_owned(),
                |file| format!("resume with --resume {}", file.display()),
            );
            anyhow::bail!("interrupted after stream sequence {last_seq}; {how}")
        }
    }
}

// === replay ===

fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let at = args
        .at
        .as_deref()
        .map(|text| parse_time("--at", text))
        .transpose()?;
    let referral = args
        .referral
        .as_deref()
        .map(|text| ReferralId::parse(text).map_err(|err| UsageError(format!("--referral: {err}"))))
        .transpose()?;
    let case = args
        .case
        .as_deref()
        .map(|text| {
            text.parse::<CaseId>()
                .map_err(|err| UsageError(format!("--case: {err}")))
        })
        .transpose()?;
    let (_, verifier) = args.common.verifier()?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let bus = args.nats.connect(None).await?;
        let unknown = |err: refbus_audit::replay::ReplayError| -> anyhow::Error {
            match err {
                refbus_audit::replay::ReplayError::Bus(err) => err.into(),
                other => UsageError(other.to_string()).into(),
            }
        };
        if let Some(id) = referral {
            let timeline = refbus_audit::replay::referral(&bus, &verifier, id, at)
                .await
                .map_err(unknown)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&timeline)?);
            } else {
                print!("{}", timeline.to_text());
            }
        } else if let Some(case) = case {
            let report = refbus_audit::replay::case(&bus, &verifier, case, at)
                .await
                .map_err(unknown)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "case {}: {}",
                    report.case,
                    if report.fully_served {
                        "fully served"
                    } else {
                        "NOT fully served"
                    }
                );
                for timeline in &report.referrals {
                    print!("{}", timeline.to_text());
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

// === export ===

fn filters(args: &ExportArgs, registry: &refbus_core::Registry) -> anyhow::Result<Filters> {
    let agency = args
        .agency
        .as_deref()
        .map(|text| {
            AgencyId::new(text)
                .ok()
                .filter(|agency| registry.agencies.contains_key(agency))
                .ok_or_else(|| {
                    UsageError(format!("--agency {text:?}: no such agency in the registry"))
                })
        })
        .transpose()?;
    let service = args
        .service
        .as_deref()
        .map(|text| {
            registry
                .services
                .keys()
                .find(|service| service.as_str() == text)
                .map(|service| service.to_string())
                .ok_or_else(|| {
                    UsageError(format!(
                        "--service {text:?}: no such service in the registry"
                    ))
                })
        })
        .transpose()?;
    let status = args
        .status
        .as_deref()
        .map(|text| {
            Status::parse(text).ok_or_else(|| {
                let known: Vec<&str> = Status::ALL.iter().map(|status| status.as_str()).collect();
                UsageError(format!("--status {text:?}: one of {}", known.join(", ")))
            })
        })
        .transpose()?;
    let from = args
        .from
        .as_deref()
        .map(|text| parse_time("--from", text))
        .transpose()?;
    let to = args
        .to
        .as_deref()
        .map(|text| parse_time("--to", text))
        .transpose()?;
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        return Err(UsageError(format!("--from {from} is not before --to {to}")).into());
    }
    Ok(Filters {
        agency,
        from,
        to,
        service,
        status,
    })
}

fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let format = Format::parse(&args.format)
        .ok_or_else(|| UsageError(format!("--format {:?}: jsonl, csv or fhir", args.format)))?;
    let (registry, verifier) = args.common.verifier()?;
    let filters = filters(&args, &registry)?;
    let now = runtime::system_now();
    tokio::runtime::Runtime::new()?.block_on(async {
        let bus = args.nats.connect(None).await?;
        let exported = match &args.output {
            None => {
                let mut out = std::io::BufWriter::new(std::io::stdout());
                let exported =
                    refbus_audit::export::export(&bus, &verifier, &filters, format, now, &mut out)
                        .await?;
                std::io::Write::flush(&mut out)?;
                exported
            }
            Some(path) => {
                // Beside the target, renamed into place only when complete: an export that
                // fails leaves nothing (or the previous file).
                let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty());
                let temporary = tempfile::NamedTempFile::new_in(dir.unwrap_or(".".as_ref()))
                    .with_context(|| format!("writing beside {}", path.display()))?;
                let mut out = std::io::BufWriter::new(temporary);
                let exported =
                    refbus_audit::export::export(&bus, &verifier, &filters, format, now, &mut out)
                        .await?;
                let temporary = out.into_inner().map_err(|err| err.into_error())?;
                temporary
                    .persist(path)
                    .with_context(|| format!("writing {}", path.display()))?;
                exported
            }
        };
        eprintln!(
            "refbus audit export: {} referral(s){}",
            exported.referrals,
            if format == Format::Jsonl {
                format!(", {} message(s)", exported.messages)
            } else {
                String::new()
            }
        );
        Ok(ExitCode::SUCCESS)
    })
}
