//! `refbus bench indicators`: `refbus indicators` (every referral record read through the one
//! record check, `refbus_dashboard::indicators::replay`, signatures on every core; the core's
//! fold, `refbus_core::indicators`; the report by every dimension and its CSV) over a stream
//! of whole referral lives, beside a raw ordered replay of the same stream in the same run.
//!
//! The record check's time-against-storage part is off, as in `bench audit` (the lives are
//! stamped before they are stored).

use std::sync::Arc;
use std::time::{Duration, Instant};

use refbus_core::Registry;
use refbus_core::indicators::{self, Dimension, Query};

use crate::histories;
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
}

impl Default for IndicatorsOptions {
    fn default() -> IndicatorsOptions {
        IndicatorsOptions {
            referrals: 1_000_000,
            group: 100,
            window: 1024,
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
    /// Reading and checking every record, folding each state.
    pub replay: Duration,
    /// The report by every dimension, and its CSV.
    pub report: Duration,
    /// Referrals the indicators hold, records checked, records refused.
    pub counted: usize,
    pub records: u64,
    pub refused: u64,
    pub rows: usize,
    pub csv_bytes: usize,
}

impl IndicatorsReport {
    pub fn total(&self) -> Duration {
        self.replay + self.report
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
            "  replay, record check, fold       {} ({} msg/s): {} records, {} refused, {} referrals",
            seconds(self.replay),
            thousands(rate(self.replay)),
            self.records,
            self.refused,
            self.counted
        )?;
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
    let crate::audit::Lives {
        messages,
        bus,
        js,
        stream,
    } = crate::audit::lives(
        &runtime,
        server,
        registry.clone(),
        "indicators",
        (options.referrals, options.group),
        progress,
    )?;
    progress("filling the stream");
    let fill = runtime.block_on(histories::publish_planned(
        &js,
        messages,
        options.window,
        None,
    ))?;
    let last = runtime
        .block_on(bus.last_sequence())
        .map_err(|err| BenchError::Nats(err.to_string()))?;
    progress("raw ordered replay");
    let raw = runtime.block_on(crate::audit::read_all(&stream, last))?;
    progress("refbus indicators");
    let verifier = refbus_bus::Verifier::new(
        registry.clone(),
        Arc::new(crate::signing_keys(&registry).signers()),
        None,
    );
    let started = Instant::now();
    let replay = runtime
        .block_on(refbus_dashboard::indicators::replay(&bus, &verifier))
        .map_err(|err| BenchError::Nats(err.to_string()))?;
    let replay_time = started.elapsed();
    let started = Instant::now();
    let report = replay.indicators.report(
        system_now(),
        &Query {
            by: Dimension::ALL.to_vec(),
            from: None,
            to: None,
            agency: None,
        },
    );
    let csv = indicators::csv(&report);
    let report_time = started.elapsed();
    Ok(IndicatorsReport {
        referrals: options.referrals,
        messages: last,
        fill,
        raw,
        replay: replay_time,
        report: report_time,
        counted: replay.indicators.len(),
        records: replay.records,
        refused: replay.refused,
        rows: report.referrals.len() + report.clocks.len(),
        csv_bytes: csv.len(),
    })
}
