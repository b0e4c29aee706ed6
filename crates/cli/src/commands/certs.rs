//! `refbus certs`: the certificates of a deployment's mutual TLS, in one directory
//! (`refbus_tls::certs::Directory` names the files): a deployment CA, a server certificate per
//! adapter, and a client certificate per agency system (`refbus://<agency>/<system>`).
//! Private keys are written with mode 0600.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use refbus_tls::SystemIdentity;
use refbus_tls::certs::Directory;

use crate::commands::UsageError;

#[derive(Debug, Subcommand)]
pub(crate) enum CertsCommand {
    /// Make the deployment CA (`ca.pem`, `ca.key`) in DIR; never replaces one. List `ca.pem`
    /// in the registry (`[[deployment.client_ca]]`) and give it to every agency's systems to
    /// verify the adapters.
    Ca {
        /// The directory of the deployment's certificates.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The CA's name.
        #[arg(long, default_value = "refbus deployment CA")]
        name: String,
        /// How long the CA is valid.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Make an adapter's server certificate (`server-<name>.pem`, `.key`), issued by DIR's CA.
    Server {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// A name for the files, e.g. the agency the adapter serves.
        #[arg(long)]
        name: String,
        /// A host name or IP address clients connect to (repeat for several).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        #[arg(long, default_value_t = 397)]
        days: i64,
    },
    /// Make an agency system's client certificate (`client-<agency>-<system>.pem`, `.key`)
    /// naming `refbus://<agency>/<system>`, issued by DIR's CA.
    Client {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The agency, as in the registry (e.g. maros-dinsos).
        #[arg(long)]
        agency: String,
        /// The system's name (e.g. sikasus): recorded on every event it causes.
        #[arg(long)]
        system: String,
        #[arg(long, default_value_t = 397)]
        days: i64,
    },
}

pub(crate) fn run(command: CertsCommand) -> anyhow::Result<ExitCode> {
    match command {
        CertsCommand::Ca { dir, name, days } => {
            let files = Directory::new(&dir).make_ca(&name, days)?;
            println!("CA certificate: {}", files.certificate.display());
            println!(
                "CA key:         {} (mode 0600: keep it offline)",
                files.key.display()
            );
            println!();
            println!("Trust it for every agency's systems in the registry's main file:");
            println!("[[deployment.client_ca]]");
            println!("file = \"{}\"", files.certificate.display());
        }
        CertsCommand::Server {
            dir,
            name,
            hosts,
            days,
        } => {
            let files = Directory::new(&dir).make_server(&name, &hosts, days)?;
            println!("server certificate: {}", files.certificate.display());
            println!("server key:         {} (mode 0600)", files.key.display());
            println!();
            println!(
                "refbus adapter ... --tls-cert {} --tls-key {}",
                files.certificate.display(),
                files.key.display()
            );
        }
        CertsCommand::Client {
            dir,
            agency,
            system,
            days,
        } => {
            let identity = SystemIdentity::new(agency, system);
            if SystemIdentity::parse_uri(&identity.uri()).is_none() {
                return Err(UsageError(format!(
                    "{} is not a valid name: agency and system are 1 to 48 lower-case letters, \
                     digits, '-' or '_'",
                    identity.uri()
                ))
                .into());
            }
            let directory = Directory::new(&dir);
            let files = directory.make_client(&identity, days)?;
            println!(
                "client certificate: {} ({})",
                files.certificate.display(),
                identity.uri()
            );
            println!("client key:         {} (mode 0600)", files.key.display());
            println!();
            println!(
                "buf curl --cacert {} --cert {} --key {} --header 'x-refbus-operator: <operator>' ...",
                directory.ca().certificate.display(),
                files.certificate.display(),
                files.key.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
