//! `refbus keys`: an agency's key pair for sealed identity data.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use refbus_core::AgencyId;

use crate::commands::UsageError;
use crate::runtime;

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Generate an agency's keys: the sealing key pair `<agency>.key` (secret, mode 0600, never
    /// overwritten) and `<agency>.pub`, and the signing key pair `<agency>.sign.key` and
    /// `<agency>.sign.pub`, in DIR; print the public keys for the registry.
    /// Generate the router's signing key pair: `router.sign.key` (secret, mode 0600, never
    /// overwritten) and `router.sign.pub` in DIR; print the public key for the registry.
    GenerateRouter {
        /// Where to write the key files.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
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
        KeysCommand::GenerateRouter { out } => {
            let signer = refbus_core::signature::Signer::Router;
            let public = runtime::generate_signing_key(&out, &signer)?;
            println!(
                "secret key: {}",
                out.join(refbus_seal::signing::signing_key_file_name(&signer))
                    .display()
            );
            println!("key id:     {}", public.id());
            println!();
            println!("Put this line in the registry's [deployment] table:");
            println!("router_signing_keys = [\"{}\"]", public.to_base64());
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Generate { agency, out } => {
            let agency = AgencyId::new(agency).map_err(|err| UsageError(err.to_string()))?;
            let (public, signing) = runtime::generate_keys(&out, &agency)?;
            println!(
                "secret key: {}",
                out.join(refbus_seal::secret_key_file_name(&agency))
                    .display()
            );
            println!("key id:     {}", public.key_id());
            println!();
            println!("Put this line in the registry, in the [[agency]] table of {agency}:");
            println!("public_key = \"{}\"", public.to_base64());
            println!("signing_keys = [\"{}\"]", signing.to_base64());
            Ok(ExitCode::SUCCESS)
        }
    }
}
