//! `refbus config`: checking a deployment's configuration.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use refbus_core::{Registry, Timestamp};

use crate::runtime;

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Check a configuration and print every problem as file:line:column: message.
    ///
    /// Exits with 0 when the configuration is valid, 1 when it is not.
    Check {
        /// The main configuration file, e.g. deploy/config/refbus.toml.
        file: PathBuf,
        /// Tests only: check the holiday files' coverage as if today were this date.
        #[arg(long, value_name = "DATE", hide = true)]
        today: Option<chrono::NaiveDate>,
    },
}

pub(crate) fn run(command: ConfigCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Check { file, today } => {
            let now = match today {
                // Noon UTC is the same calendar day in every time zone of Indonesia (and from
                // UTC-11 to UTC+11).
                Some(day) => {
                    Timestamp::from_chrono(&day.and_hms_opt(12, 0, 0).unwrap_or_default().and_utc())
                }
                None => runtime::system_now(),
            };
            check(&file, now)
        }
    }
}

fn check(file: &Path, now: Timestamp) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    match refbus_config::load(file) {
        Ok(registry) => {
            writeln!(out, "{}: valid: {}", file.display(), summary(&registry))?;
            // Valid, but the clocks will be wrong: said loudly, without failing the check (a
            // deployment must still start, and the file may not exist yet).
            if let Some(gap) = refbus_core::coverage::holiday_gap(&registry, now) {
                eprintln!("{}: WARNING: {gap}", file.display());
            }
            let unsigned: Vec<String> = registry
                .agencies
                .values()
                .filter(|agency| agency.signing_keys.is_empty())
                .map(|agency| agency.id.to_string())
                .chain(
                    registry
                        .router_signing_keys
                        .is_empty()
                        .then(|| "the router".to_owned()),
                )
                .collect();
            if !unsigned.is_empty() {
                eprintln!(
                    "{}: WARNING: no public signing key for {}: components started from this \
                     file alone refuse every record these write (`refbus keys generate`, \
                     `refbus keys generate-router`; `refbus up` makes its own)",
                    file.display(),
                    unsigned.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(report) => {
            for diagnostic in &report.diagnostics {
                writeln!(out, "{diagnostic}")?;
            }
            writeln!(
                out,
                "{}: invalid: {} found, nothing loaded",
                file.display(),
                report.summary()
            )?;
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `8 agencies, 13 services, 1 policy version (2026-01)`.
pub(crate) fn summary(registry: &Registry) -> String {
    let versions: Vec<&str> = registry
        .policies
        .iter()
        .map(|policy| policy.version.as_str())
        .collect();
    format!(
        "{}, {}, {} ({})",
        count(registry.agencies.len(), "agency", "agencies"),
        count(registry.services.len(), "service", "services"),
        count(versions.len(), "policy version", "policy versions"),
        versions.join(", ")
    )
}

fn count(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}
