//! A deployment's certificates for tests: one CA, the adapters' server certificate, and client
//! certificates for agency systems, made in memory (and written to a temporary directory for
//! clients that read files, such as the Python client).
//!
//! Every test that starts an adapter through the e2e harness serves mutual TLS with these, so
//! every end-to-end test also exercises authentication.

use std::path::{Path, PathBuf};

use refbus_tls::certs::{Ca, Issued, Validity};
use refbus_tls::{ServerTls, SystemIdentity};

/// The names the adapters' server certificate is valid for: clients connect to loopback.
pub const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A CA, a server certificate issued by it, and a directory for files.
pub struct Pki {
    ca: Ca,
    server: Issued,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// A client certificate and key, PEM, with the files they were written to.
#[derive(Debug, Clone)]
pub struct ClientFiles {
    pub issued: Issued,
    pub certificate: PathBuf,
    pub key: PathBuf,
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

impl Pki {
    pub fn generate() -> Result<Pki, refbus_tls::Error> {
        let ca = Ca::generate("refbus test deployment CA", Validity::days_from(now(), 365))?;
        let names = SERVER_NAMES.map(str::to_owned);
        let server = ca.issue_server(&names, Validity::days_from(now(), 365))?;
        let dir = tempfile::tempdir().map_err(|err| refbus_tls::Error::File {
            path: "a temporary directory".to_owned(),
            message: err.to_string(),
        })?;
        let pki = Pki { ca, server, dir };
        refbus_tls::certs::write_file(&pki.ca_file(), pki.ca_pem(), 0o644)?;
        Ok(pki)
    }

    /// The CA's certificate, PEM: what clients verify the adapters with, and what the
    /// registry lists as every agency's client CA.
    pub fn ca_pem(&self) -> &str {
        self.ca.certificate_pem()
    }

    /// The CA's certificate, DER, as the registry holds it.
    pub fn ca_der(&self) -> Vec<u8> {
        refbus_tls::certs::certificates_from_pem(self.ca_pem())
            .ok()
            .and_then(|certificates| certificates.into_iter().next())
            .map(|certificate| certificate.to_vec())
            .unwrap_or_default()
    }

    /// The CA certificate's file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The adapters' TLS (every adapter of a test serves the same certificate).
    pub fn server_tls(&self) -> Result<ServerTls, refbus_tls::Error> {
        let chain = refbus_tls::certs::certificates_from_pem(&self.server.certificate_pem)
            .map_err(refbus_tls::Error::Certificate)?;
        let key = {
            use rustls_pki_types::pem::PemObject as _;
            rustls_pki_types::PrivateKeyDer::from_pem_slice(self.server.key_pem.as_bytes())
                .map_err(|err| refbus_tls::Error::Certificate(err.to_string()))?
        };
        ServerTls::new(chain, key)
    }

    /// The server certificate and key, PEM.
    pub fn server(&self) -> &Issued {
        &self.server
    }

    /// A valid client certificate for `agency`'s `system`, written to files.
    pub fn client(&self, agency: &str, system: &str) -> Result<ClientFiles, refbus_tls::Error> {
        let identity = SystemIdentity::new(agency, system);
        let issued = self
            .ca
            .issue_client(&identity, Validity::days_from(now(), 30))?;
        self.write(&format!("{agency}-{system}"), issued)
    }

    /// A client certificate issued with `validity` (e.g. one that has expired).
    pub fn client_valid(
        &self,
        agency: &str,
        system: &str,
        validity: Validity,
    ) -> Result<ClientFiles, refbus_tls::Error> {
        let issued = self
            .ca
            .issue_client(&SystemIdentity::new(agency, system), validity)?;
        self.write(
            &format!(
                "{agency}-{system}-valid-{}",
                validity.not_after.unix_timestamp()
            ),
            issued,
        )
    }

    /// A client certificate that signs itself, naming `agency`'s `system`.
    pub fn self_signed(
        &self,
        agency: &str,
        system: &str,
    ) -> Result<ClientFiles, refbus_tls::Error> {
        let issued = refbus_tls::certs::self_signed_client(
            &SystemIdentity::new(agency, system),
            Validity::days_from(now(), 30),
        )?;
        self.write(&format!("{agency}-{system}-self-signed"), issued)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, issued: Issued) -> Result<ClientFiles, refbus_tls::Error> {
        let certificate = self.dir.path().join(format!("{name}.pem"));
        let key = self.dir.path().join(format!("{name}.key"));
        issued.write(&certificate, &key)?;
        Ok(ClientFiles {
            issued,
            certificate,
            key,
        })
    }
}
