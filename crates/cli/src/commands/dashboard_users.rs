//! `refbus dashboard user add|remove|list`: the operators who may log in to the dashboard, in
//! their accounts file. The work is `refbus_operators::accounts`; this reads the password
//! (from the terminal without echo, or from standard input, never from the command line) and
//! says what happened.

use std::io::{self, BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use refbus_core::AgencyId;
use refbus_operators::accounts::{self, Accounts, ChangeError, ChangeLock, Role, Username};
use zeroize::Zeroizing;

use crate::commands::UsageError;

/// `refbus dashboard ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum DashboardCommand {
    /// Manage the operators who may log in to the dashboard (its accounts file).
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Add an operator. The password is read from the terminal without echo (asked twice), or
    /// from standard input when it is not a terminal (one line); never from the command line,
    /// where other users and the shell's history would see it. The file is written readable by
    /// its owner only (mode 0600), and created if missing.
    Add {
        /// The accounts file (the dashboard's `[operators] accounts`).
        #[arg(long, value_name = "FILE")]
        accounts: PathBuf,
        /// Her login name: lower-case letters, digits, '.', '-', '_' (e.g. siti.dp3a).
        #[arg(long)]
        username: String,
        /// Her agency, as in the registry (e.g. maros-dp3a).
        #[arg(long)]
        agency: String,
        /// coordinator (sees every agency; only at the registry's coordinator agency), head or
        /// supervisor (see and acknowledge for their agency), viewer (sees, cannot act).
        #[arg(long)]
        role: String,
        /// The deployment's registry: when given, the agency must be one it lists.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Remove an operator; her open sessions end at her next request.
    Remove {
        #[arg(long, value_name = "FILE")]
        accounts: PathBuf,
        #[arg(long)]
        username: String,
    },
    /// List the operators: username, agency, role (never the hashes).
    List {
        #[arg(long, value_name = "FILE")]
        accounts: PathBuf,
    },
}

pub(crate) fn run(command: DashboardCommand) -> anyhow::Result<ExitCode> {
    let DashboardCommand::User(command) = command;
    match command {
        UserCommand::Add {
            accounts,
            username,
            agency,
            role,
            config,
        } => add(&accounts, &username, &agency, &role, config.as_deref()),
        UserCommand::Remove { accounts, username } => remove(&accounts, &username),
        UserCommand::List { accounts } => list(&accounts),
    }
}

fn usage(error: impl std::fmt::Display) -> anyhow::Error {
    UsageError(error.to_string()).into()
}

fn add(
    path: &Path,
    username: &str,
    agency: &str,
    role: &str,
    config: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    // Everything that can be refused is refused before the password is asked for, and nothing
    // is written before everything passed.
    let username = Username::new(username).map_err(usage)?;
    let agency = AgencyId::new(agency).map_err(usage)?;
    let role: Role = role.parse().map_err(usage)?;
    let _lock = ChangeLock::take(path)?;
    let mut file = Accounts::load_or_empty(path)?;
    let registry = match config {
        Some(config) => Some(refbus_config::load(config).map_err(|report| {
            anyhow::anyhow!(
                "{} is not a valid configuration (check it with `refbus config check`):\n{report}",
                config.display()
            )
        })?),
        None => None,
    };
    if file.get(&username).is_some() {
        bail!(ChangeError::Exists(username));
    }
    if let Some(registry) = &registry {
        accounts::check_placement(&username, &agency, role, registry).map_err(usage)?;
    }
    let password = read_password(&username)?;
    let account = accounts::new_account(username.clone(), agency, role, &password)?;
    match file.add(account, registry.as_ref()) {
        Ok(()) => {}
        Err(error @ ChangeError::Registry(_)) => return Err(usage(error)),
        Err(error) => return Err(error.into()),
    }
    file.write(path)?;
    println!(
        "{}: added {username} ({role}); {} operator(s)",
        path.display(),
        file.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn remove(path: &Path, username: &str) -> anyhow::Result<ExitCode> {
    let username = Username::new(username).map_err(usage)?;
    let _lock = ChangeLock::take(path)?;
    let mut file = Accounts::load(path)?;
    file.remove(&username)?;
    file.write(path)?;
    println!(
        "{}: removed {username}; {} operator(s)",
        path.display(),
        file.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn list(path: &Path) -> anyhow::Result<ExitCode> {
    let file = Accounts::load(path)?;
    let mut out = io::stdout().lock();
    writeln!(out, "{:<32} {:<24} ROLE", "USERNAME", "AGENCY")?;
    for account in file.iter() {
        writeln!(
            out,
            "{:<32} {:<24} {}",
            account.username,
            account.agency.as_str(),
            account.role
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The new password: asked twice without echo on a terminal, else one line of standard input.
fn read_password(username: &Username) -> anyhow::Result<Zeroizing<String>> {
    if io::stdin().is_terminal() {
        let first = Zeroizing::new(
            rpassword::prompt_password(format!("New password for {username}: "))
                .context("cannot read the password from the terminal")?,
        );
        let second = Zeroizing::new(
            rpassword::prompt_password("Again: ")
                .context("cannot read the password from the terminal")?,
        );
        if *first != *second {
            bail!("the two passwords differ; nothing was written");
        }
        return Ok(first);
    }
    let mut line = Zeroizing::new(String::new());
    io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let trimmed = line.trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() {
        bail!("no password on standard input (one line is read); nothing was written");
    }
    Ok(Zeroizing::new(trimmed.to_owned()))
}
