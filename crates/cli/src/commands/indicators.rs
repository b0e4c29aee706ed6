//! `refbus indicators`: planning indicators over the whole stream, as a table and as CSV: each
//! referral's last checked record (`Bus::latest_checked`), or with `--every-record` every record
//! checked against its predecessor (`Bus::replay`). No identity: registry ids, codes and counts.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use refbus_core::AgencyId;
use refbus_core::indicators::{self, Dimension, Month, Query, Report};

use super::UsageError;
use crate::runtime;

#[derive(Debug, Args)]
pub(crate) struct IndicatorsArgs {
    /// The deployment's registry (with every policy version still in use).
    #[arg(long, value_name = "FILE", default_value = "deploy/config/refbus.toml")]
    config: PathBuf,
    #[command(flatten)]
    nats: runtime::NatsArgs,
    /// A directory of `<name>.sign.pub` files, for signing keys the registry does not list.
    #[arg(long, value_name = "DIR")]
    public_keys: Option<PathBuf>,
    /// Referrals created in this month or later (`YYYY-MM`, the sender's time zone).
    #[arg(long, value_name = "YYYY-MM")]
    from: Option<String>,
    /// Referrals created in this month or earlier.
    #[arg(long, value_name = "YYYY-MM")]
    to: Option<String>,
    /// Only referrals this agency sent or received (and only the clocks it answers for).
    #[arg(long, value_name = "AGENCY")]
    agency: Option<String>,
    /// The dimensions rows are broken down by, comma-separated: month, agency, service,
    /// priority, category, sex, age_band. The table's default is `agency`; the CSV's is all.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    by: Vec<String>,
    /// Write the figures as CSV to FILE (`-` for standard output) instead of the table.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Compute at this instant (RFC 3339) instead of now: clocks still running count as missed
    /// once their target passed by then.
    #[arg(long, value_name = "INSTANT")]
    at: Option<String>,
    /// A pretended clock wrote the stream (demonstrations, tests): do not compare event times
    /// with JetStream's.
    #[arg(long)]
    pretended_time: bool,
    /// Read every record through the record check against its predecessor, as `refbus audit
    /// verify` does, and count those that fail (exit 1), instead of each referral's last
    /// checked record: the same figures when nothing was tampered with, several times slower.
    #[arg(long)]
    every_record: bool,
}

pub(crate) fn run(args: IndicatorsArgs) -> anyhow::Result<ExitCode> {
    runtime::init_tracing();
    let month = |name: &str, text: &Option<String>| -> anyhow::Result<Option<Month>> {
        text.as_deref()
            .map(|text| {
                Month::parse(text).ok_or_else(|| {
                    UsageError(format!("--{name}: expected YYYY-MM, got {text:?}")).into()
                })
            })
            .transpose()
    };
    let from = month("from", &args.from)?;
    let to = month("to", &args.to)?;
    let registry = runtime::load_registry(&args.config)?;
    let agency = args
        .agency
        .as_deref()
        .map(|text| {
            let agency = AgencyId::new(text)
                .map_err(|err| UsageError(format!("--agency {text:?}: {err}")))?;
            if registry.agency(&agency).is_none() {
                return Err(UsageError(format!(
                    "--agency {agency}: not an agency of {}",
                    args.config.display()
                )));
            }
            Ok(agency)
        })
        .transpose()?;
    let by = if args.by.is_empty() {
        if args.csv.is_some() {
            Dimension::ALL.to_vec()
        } else {
            vec![Dimension::Agency]
        }
    } else {
        args.by
            .iter()
            .map(|text| {
                Dimension::parse(text.trim()).ok_or_else(|| {
                    UsageError(format!(
                        "--by {text:?}: use month, agency, service, priority, category, sex or \
                         age_band"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let now = match &args.at {
        Some(text) => refbus_core::Timestamp::parse_rfc3339(text)
            .map_err(|err| UsageError(format!("--at {text:?}: {err}")))?,
        None => refbus_core::Timestamp::from_millis(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| {
                    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
                }),
        ),
    };
    let signers = Arc::new(runtime::signers(&registry, args.public_keys.as_deref())?);
    let max_skew = (!args.pretended_time).then_some(refbus_core::integrity::DEFAULT_MAX_SKEW);
    let verifier = refbus_bus::Verifier::new(registry.clone(), signers, max_skew);
    let read = tokio::runtime::Runtime::new()?.block_on(async {
        let bus = args.nats.connect(None).await?;
        let read = if args.every_record {
            refbus_dashboard::indicators::replay(&bus, &verifier).await
        } else {
            refbus_dashboard::indicators::latest(&bus, &verifier).await
        };
        read.context("reading the stream")
    })?;
    let query = Query {
        by,
        from,
        to,
        agency,
    };
    let report = read.indicators.report(now, &query);
    eprintln!(
        "indicators: {} referrals from {} checked records{} at {now}{}",
        read.indicators.len(),
        read.records,
        if args.every_record {
            ""
        } else {
            " (the last of each referral)"
        },
        if read.refused > 0 {
            format!(
                "; {} records failed the record check and are not counted (see the log)",
                read.refused
            )
        } else {
            String::new()
        }
    );
    match &args.csv {
        Some(path) if path.as_os_str() == "-" => {
            std::io::stdout().write_all(indicators::csv(&report).as_bytes())?;
        }
        Some(path) => std::fs::write(path, indicators::csv(&report))
            .with_context(|| format!("writing {}", path.display()))?,
        None => print!("{}", table(&report, &indicators::clock_titles(&registry))),
    }
    // Refused records are the audit's business; the figures stand for the verified ones, and
    // the exit code says that some were left out.
    Ok(if read.refused > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The report as two aligned text tables: referrals, then clocks.
fn table(
    report: &Report,
    titles: &std::collections::BTreeMap<refbus_core::ids::ClockId, (String, Option<String>)>,
) -> String {
    let seconds = |d: Option<std::time::Duration>| {
        d.map_or_else(|| "-".to_owned(), refbus_core::time::format_duration)
    };
    let key = |k: &indicators::Key| {
        k.cells()
            .into_iter()
            .filter(|cell| cell != "*")
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut rows = vec![vec![
        "rows".to_owned(),
        "referrals".to_owned(),
        "accepted".to_owned(),
        "rejected".to_owned(),
        "rerouted".to_owned(),
        "completed".to_owned(),
        "open".to_owned(),
        "ack median".to_owned(),
        "ack p90".to_owned(),
        "complete median".to_owned(),
        "complete p90".to_owned(),
    ]];
    for row in &report.referrals {
        let f = &row.figures;
        let mut cells = vec![key(&row.key)];
        cells.extend(
            [
                f.referrals,
                f.accepted,
                f.rejected,
                f.rerouted,
                f.completed,
                f.open,
            ]
            .map(|n| n.to_string()),
        );
        cells.extend([
            seconds(f.acknowledge.median),
            seconds(f.acknowledge.p90),
            seconds(f.complete.median),
            seconds(f.complete.p90),
        ]);
        rows.push(cells);
    }
    let mut out = aligned(&rows);
    let mut clocks = vec![vec![
        "rows".to_owned(),
        "clock".to_owned(),
        "instances".to_owned(),
        "met".to_owned(),
        "missed".to_owned(),
        "pending".to_owned(),
        "compliance".to_owned(),
        "breaches".to_owned(),
        "escalations by level".to_owned(),
        "basis".to_owned(),
    ]];
    for row in &report.clocks {
        let f = &row.figures;
        clocks.push(vec![
            key(&row.key),
            row.clock.to_string(),
            f.instances.to_string(),
            f.met.to_string(),
            f.missed.to_string(),
            f.pending.to_string(),
            f.compliance_permille()
                .map_or_else(|| "-".to_owned(), |p| format!("{}.{}%", p / 10, p % 10)),
            f.breaches.to_string(),
            f.escalations
                .iter()
                .map(|(level, count)| format!("L{level}:{count}"))
                .collect::<Vec<_>>()
                .join(" "),
            titles
                .get(&row.clock)
                .and_then(|(_, basis)| basis.clone())
                .unwrap_or_default(),
        ]);
    }
    out.push('\n');
    out.push_str(&aligned(&clocks));
    out
}

fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(column, cell)| format!("{cell:<width$}", width = widths[column]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
