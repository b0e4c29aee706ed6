//! `refbus bench indicators`: `refbus indicators` (each referral's last checked record,
//! `refbus_dashboard::indicators::latest`, signatures on every core; the core's fold,
//! `refbus_core::indicators`; the report by every dimension and its CSV) over a stream of whole
//! referral lives, beside a raw ordered replay of the same stream in the same run; with
//! `every_record`, also `refbus indicators --every-record` (every record checked against its
//! predecessor, `refbus_dashboard::indicators::replay`), whose figures must be the same.
//!
//! The record check's time-against-storage part is off, as in `bench audit` (the lives are
//! stamped before they are stored).

use std::sync::Arc;
use std::time::{Duration, Instant};

use refbus_core::Registry;
use refbus_core::indicators::{self, Dimension, Query};

use crate::router::system_now;
use crate::timing::{goal_line, seconds, thousands};
use crate::{BenchError, Server};

/// The goal: the indicators over a million referrals' stream within this long.
pub const MAX_AT_A_MILLION: Duration = Duration::from_secs(60);

/// How much.
#[derive(Debug, Clone)]
pub struct IndicatorsOptions {
    pub referrals: usize,
    /// Referrals whose events are interleaved.
    pub group: usize,
    /// Publishes whose acknowledgements may be outstanding while filling.
    pub window: usize,
    /// Also time the replay of every record (about eight times the reads).
    pub every_record: bool,
}

impl Default for IndicatorsOptions {
    fn default() -> IndicatorsOptions {
        IndicatorsOptions {
            referrals: 1_000_000,
            group: 100,
            window: 1024,
            every_record: false,
        }
    }
}

/// What was measured.
#[derive(Debug, Clone)]
pub struct IndicatorsReport {
    pub referrals: usize,
    pub messages: u64,
    pub fill: Duration,
    /// The floor: a bare ordered consumer over the stream.
    pub raw: Duration,
    /// The floor of the last records' read: a bare consumer of each subject's last message,
    /// then a bare direct read of each subject's first (64 at once, as the read does).
    pub bare_last: Duration,
    pub bare_first: Duration,
    /// Reading and checking each referral's last record, folding its state.
    pub latest: Duration,
    /// The report by every dimension, and its CSV.
    pub report: Duration,
    /// Referrals the indicators hold, records checked.
    pub counted: usize,
    pub records: u64,
    pub rows: usize,
    pub csv_bytes: usize,
    /// The replay of every record, if asked for.
    pub every_record: Option<EveryRecord>,
}

/// `refbus indicators --every-record` in the same run.
#[derive(Debug, Clone)]
pub struct EveryRecord {
    /// Reading and checking every record against its predecessor, folding each state.
    pub replay: Duration,
    pub records: u64,
    pub refused: u64,
    /// Whether its report by every dimension equals the last records' one.
    pub same_figures: bool,
}

impl IndicatorsReport {
    pub fn total(&self) -> Duration {
        self.latest + self.report
    }

    /// The total scaled linearly to a million referrals (exact when the run had a million).
    pub fn at_a_million(&self) -> Duration {
        self.total()
            .mul_f64(1_000_000.0 / self.referrals.max(1) as f64)
    }
}

impl std::fmt::Display for IndicatorsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = |time: Duration| self.messages as f64 / time.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "indicators: {} referrals, {} messages (filled in {})",
            self.referrals,
            self.messages,
            seconds(self.fill)
        )?;
        writeln!(
            f,
            "  raw ordered replay               {} ({} msg/s)",
            seconds(self.raw),
            thousands(rate(self.raw))
        )?;
        writeln!(
            f,
            "  bare last message per subject    {} ({} subjects/s), then first by direct read {} ({}/s)",
            seconds(self.bare_last),
            thousands(self.referrals as f64 / self.bare_last.as_secs_f64().max(1e-9)),
            seconds(self.bare_first),
            thousands(self.referrals as f64 / self.bare_first.as_secs_f64().max(1e-9)),
        )?;
        writeln!(
            f,
            "  last records, record check, fold {} ({} referrals/s): {} records, {} referrals",
            seconds(self.latest),
            thousands(self.referrals as f64 / self.latest.as_secs_f64().max(1e-9)),
            self.records,
            self.counted
        )?;
        if let Some(every) = &self.every_record {
            writeln!(
                f,
                "  every record (--every-record)    {} ({} msg/s): {} records, {} refused, {} figures",
                seconds(every.replay),
                thousands(rate(every.replay)),
                every.records,
                every.refused,
                if every.same_figures {
                    "the same"
                } else {
                    "DIFFERENT"
                }
            )?;
        }
        writeln!(
            f,
            "  report by every dimension, CSV   {} ({} rows, {} bytes)",
            seconds(self.report),
            self.rows,
            self.csv_bytes
        )?;
        let measured = if self.referrals == 1_000_000 {
            seconds(self.total())
        } else {
            format!(
                "{} ({} at {} referrals, scaled linearly)",
                seconds(self.at_a_million()),
                seconds(self.total()),
                self.referrals
            )
        };
        writeln!(
            f,
            "{}",
            goal_line(
                self.at_a_million() <= MAX_AT_A_MILLION,
                "indicators over 1,000,000 referrals",
                &measured,
                &format!("<= {} s", MAX_AT_A_MILLION.as_secs()),
            )
        )
    }
}

pub fn indicators(
    server: &Server,
    registry: Arc<Registry>,
    options: &IndicatorsOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<IndicatorsReport, BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let crate::audit::Filled {
        fill,
        bus,
        js,
        stream,
    } = crate::audit::filled(
        &runtime,
        server,
        registry.clone(),
        "indicators",
        (options.referrals, options.group, options.window),
        progress,
    )?;
    let last = runtime
        .block_on(bus.last_sequence())
        .map_err(|err| BenchError::Nats(err.to_string()))?;
    progress("raw ordered replay");
    let raw = runtime.block_on(crate::audit::read_all(&stream, last))?;
    progress("bare last and first message of each referral's subject");
    let (bare_last, bare_first) = runtime.block_on(crate::audit::read_last_and_first(
        &js,
        &stream,
        options.referrals,
        64,
    ))?;
    progress("refbus indicators");
    let verifier = refbus_bus::Verifier::new(
        registry.clone(),
        Arc::new(crate::signing_keys(&registry).signers()),
        None,
    );
    let nats = |err: refbus_bus::ReadError| BenchError::Nats(err.to_string());
    let started = Instant::now();
    let read = runtime
        .block_on(refbus_dashboard::indicators::latest(&bus, &verifier))
        .map_err(nats)?;
    let latest = started.elapsed();
    let now = system_now();
    let query = Query {
        by: Dimension::ALL.to_vec(),
        from: None,
        to: None,
        agency: None,
    };
    let started = Instant::now();
    let report = read.indicators.report(now, &query);
    let csv = indicators::csv(&report);
    let report_time = started.elapsed();
    let every_record = if options.every_record {
        progress("refbus indicators --every-record");
        let started = Instant::now();
        let replay = runtime
            .block_on(refbus_dashboard::indicators::replay(&bus, &verifier))
            .map_err(nats)?;
        Some(EveryRecord {
            replay: started.elapsed(),
            records: replay.records,
            refused: replay.refused,
            same_figures: replay.indicators.report(now, &query) == report,
        })
    } else {
        None
    };
    Ok(IndicatorsReport {
        referrals: options.referrals,
        messages: last,
        fill,
        raw,
        bare_last,
        bare_first,
        latest,
        report: report_time,
        counted: read.indicators.len(),
        records: read.records,
        rows: report.referrals.len() + report.clocks.len(),
        csv_bytes: csv.len(),
        every_record,
    })
}
