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
            if !client_cas_valid(file, &registry, now) {
                return Ok(ExitCode::FAILURE);
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

/// The client CAs at `now`: an expired one fails the check (no system it vouches for can
/// authenticate), one that ends within 30 days and an agency without any are warnings.
fn client_cas_valid(file: &Path, registry: &Registry, now: Timestamp) -> bool {
    let at = time::OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(now.as_millis());
    let mut valid = true;
    let mut seen = std::collections::BTreeSet::new();
    for agency in registry.agencies.values() {
        for der in &agency.client_cas {
            if !seen.insert(der.clone()) {
                continue;
            }
            let certificate = refbus_tls::certs::CertificateDer::from(der.as_slice());
            match refbus_tls::expiry(&certificate, at) {
                Ok(refbus_tls::Expiry::Valid { .. }) => {}
                Ok(refbus_tls::Expiry::EndsSoon { not_after }) => eprintln!(
                    "{}: WARNING: a client CA (trusted for {}) expires at {not_after}, within \
                     30 days: issue a new CA and list it beside this one",
                    file.display(),
                    agency.id
                ),
                Ok(refbus_tls::Expiry::Expired { not_after }) => {
                    valid = false;
                    println!(
                        "{}: invalid: a client CA (trusted for {}) expired at {not_after}: no \
                         system it vouches for can authenticate",
                        file.display(),
                        agency.id
                    );
                }
                Ok(refbus_tls::Expiry::NotYetValid { not_before }) => eprintln!(
                    "{}: WARNING: a client CA (trusted for {}) is not valid before {not_before}",
                    file.display(),
                    agency.id
                ),
                Err(err) => {
                    valid = false;
                    println!("{}: invalid: a client CA: {err}", file.display());
                }
            }
        }
    }
    let without: Vec<String> = registry
        .agencies
        .values()
        .filter(|agency| agency.client_cas.is_empty())
        .map(|agency| agency.id.to_string())
        .collect();
    if !without.is_empty() {
        eprintln!(
            "{}: WARNING: no client CA ([[deployment.client_ca]]) for {}: no system of these \
             can call its adapter over mutual TLS (`refbus certs ca`; `refbus up` makes its own)",
            file.display(),
            without.join(", ")
        );
    }
    valid
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
