//! `refbus keys`: an agency's key pair for sealed identity data.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use refbus_core::AgencyId;

use crate::commands::UsageError;
use crate::runtime;

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Generate an agency's key pair: `<agency>.key` (secret, mode 0600, never overwritten) and
    /// `<agency>.pub` in DIR, and print the public key for the registry.
    Generate {
        /// The agency the keys are for, as in the registry (e.g. maros-dinsos).
        #[arg(long)]
        agency: String,
        /// Where to write the key files.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

pub(crate) fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Generate { agency, out } => {
            let agency = AgencyId::new(agency).map_err(|err| UsageError(err.to_string()))?;
            let public = runtime::generate_keys(&out, &agency)?;
            println!(
                "secret key: {}",
                out.join(refbus_seal::secret_key_file_name(&agency))
                    .display()
            );
            println!("key id:     {}", public.key_id());
            println!();
            println!("Put this line in the registry, in the [[agency]] table of {agency}:");
            println!("public_key = \"{}\"", public.to_base64());
            Ok(ExitCode::SUCCESS)
        }
    }
}
