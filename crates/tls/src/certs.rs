//! Certificates without pain: a deployment CA, a server certificate per adapter, a client
//! certificate per agency system, and the files they live in.
//!
//! Keys are ECDSA P-256 (what every gRPC client library accepts). Private keys are written
//! readable by their owner only (mode 0600), and a key file others can read is refused when
//! read, as a leaked key would let anyone act as that system.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
pub use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{Error, SystemIdentity};

/// How long before its end a certificate is warned about at start.
pub const WARN_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour before `now` (clocks differ a little) for `days` days.
    pub fn days_from(now: OffsetDateTime, days: i64) -> Validity {
        Validity {
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(days),
        }
    }
}

/// A certificate and its private key, both PEM. Debug shows no key.
#[derive(Clone)]
pub struct Issued {
    pub certificate_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("certificate_pem", &self.certificate_pem)
            .finish_non_exhaustive()
    }
}

impl Issued {
    /// Writes the certificate (mode 0644) and the key (mode 0600).
    pub fn write(&self, certificate: &Path, key: &Path) -> Result<(), Error> {
        write_file(certificate, &self.certificate_pem, 0o644)?;
        write_file(key, &self.key_pem, 0o600)
    }
}

/// A certificate authority that issues server and client certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed CA named `name` (its common name), for issuing certificates only.
    pub fn generate(name: &str, validity: Validity) -> Result<Ca, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let certificate = params.self_signed(&key)?;
        Ok(Ca {
            certificate_pem: certificate.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from its certificate and key files.
    pub fn load(certificate: &Path, key: &Path) -> Result<Ca, Error> {
        let certificate_pem = read_text(certificate)?;
        check_private(key)?;
        let key = KeyPair::from_pem(&read_text(key)?).map_err(|err| Error::File {
            path: key.display().to_string(),
            message: format!("not a private key: {err}"),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&certificate_pem, key)?;
        Ok(Ca {
            issuer,
            certificate_pem,
        })
    }

    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A server certificate for `names` (host names or IP addresses clients connect to).
    pub fn issue_server(&self, names: &[String], validity: Validity) -> Result<Issued, Error> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name =
            distinguished_name(names.first().map_or("refbus adapter", String::as_str));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, validity)
    }

    /// A client certificate for an agency's system: `refbus://<agency>/<system>`.
    pub fn issue_client(
        &self,
        identity: &SystemIdentity,
        validity: Validity,
    ) -> Result<Issued, Error> {
        self.issue(client_params(identity)?, validity)
    }

    fn issue(&self, mut params: CertificateParams, validity: Validity) -> Result<Issued, Error> {
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            certificate_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A client certificate that signs itself: what an impostor without the CA can make. For tests
/// of the refusal.
pub fn self_signed_client(identity: &SystemIdentity, validity: Validity) -> Result<Issued, Error> {
    let mut params = client_params(identity)?;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    let key = KeyPair::generate()?;
    let certificate = params.self_signed(&key)?;
    Ok(Issued {
        certificate_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn client_params(identity: &SystemIdentity) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&identity.to_string());
    params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// Where a certificate stands at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Valid {
        not_after: OffsetDateTime,
    },
    /// Ends within [`WARN_BEFORE`].
    EndsSoon {
        not_after: OffsetDateTime,
    },
    Expired {
        not_after: OffsetDateTime,
    },
    NotYetValid {
        not_before: OffsetDateTime,
    },
}

/// Where `certificate` stands at `now`: every component checks its own certificates at start,
/// warning 30 days ahead and refusing an expired one.
pub fn expiry(certificate: &CertificateDer<'_>, now: OffsetDateTime) -> Result<Expiry, Error> {
    let (_, parsed) = X509Certificate::from_der(certificate)
        .map_err(|err| Error::Certificate(format!("the certificate cannot be read: {err}")))?;
    let validity = parsed.validity();
    let not_before = validity.not_before.to_datetime();
    let not_after = validity.not_after.to_datetime();
    Ok(if now < not_before {
        Expiry::NotYetValid { not_before }
    } else if now > not_after {
        Expiry::Expired { not_after }
    } else if not_after - now < WARN_BEFORE {
        Expiry::EndsSoon { not_after }
    } else {
        Expiry::Valid { not_after }
    })
}

/// The certificates of a PEM file, in order.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let text = read_text(path)?;
    certificates_from_pem(&text).map_err(|message| Error::File {
        path: path.display().to_string(),
        message,
    })
}

/// The certificates of a PEM text, in order; at least one.
pub fn certificates_from_pem(text: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("not a PEM certificate file: {err}"))?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned());
    }
    Ok(certificates)
}

/// A PEM private key, refused if others than its owner may read it.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    check_private(path)?;
    PrivateKeyDer::from_pem_slice(read_text(path)?.as_bytes()).map_err(|err| Error::File {
        path: path.display().to_string(),
        message: format!("not a PEM private key: {err}"),
    })
}

/// Refuses a key file that its group or others may read or write.
fn check_private(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    let metadata = std::fs::metadata(path).map_err(|err| file_error(path, &err))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::File {
            path: path.display().to_string(),
            message: format!(
                "the private key is readable by others (mode {mode:o}); run chmod 600 on it"
            ),
        });
    }
    Ok(())
}

fn read_text(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|err| file_error(path, &err))
}

fn file_error(path: &Path, err: &std::io::Error) -> Error {
    Error::File {
        path: path.display().to_string(),
        message: err.to_string(),
    }
}

/// Writes `text` to `path` with `mode`, the mode set before any byte is written.
pub fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|err| file_error(parent, &err))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|err| file_error(path, &err))?;
    // `mode` applies only to a file created now; an existing one gets it here.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|err| file_error(path, &err))?;
    file.write_all(text.as_bytes())
        .map_err(|err| file_error(path, &err))
}

/// Refuses a certificate that is not a CA's (basic constraints `CA:TRUE`).
pub fn check_ca(certificate: &CertificateDer<'_>) -> Result<(), String> {
    let (_, parsed) = X509Certificate::from_der(certificate)
        .map_err(|err| format!("a certificate cannot be read: {err}"))?;
    if parsed.is_ca() {
        Ok(())
    } else {
        Err(format!(
            "the certificate of {} is not a CA certificate (it cannot issue others)",
            parsed.subject()
        ))
    }
}

/// A directory of a deployment's certificates, with fixed file names, so that `refbus certs`,
/// `refbus up` and the documentation agree:
///
/// ```text
/// ca.pem  ca.key                                   the deployment CA
/// server-<name>.pem  server-<name>.key             an adapter's server certificate
/// client-<agency>-<system>.pem  ...-<system>.key   an agency system's client certificate
/// ```
#[derive(Debug, Clone)]
pub struct Directory {
    pub path: std::path::PathBuf,
}

/// A certificate's two files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub certificate: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl Files {
    pub fn exist(&self) -> bool {
        self.certificate.exists() && self.key.exists()
    }
}

impl Directory {
    pub fn new(path: impl Into<std::path::PathBuf>) -> Directory {
        Directory { path: path.into() }
    }

    fn files(&self, stem: &str) -> Files {
        Files {
            certificate: self.path.join(format!("{stem}.pem")),
            key: self.path.join(format!("{stem}.key")),
        }
    }

    pub fn ca(&self) -> Files {
        self.files("ca")
    }

    pub fn server(&self, name: &str) -> Files {
        self.files(&format!("server-{name}"))
    }

    pub fn client(&self, identity: &SystemIdentity) -> Files {
        self.files(&format!("client-{}-{}", identity.agency, identity.system))
    }

    /// Makes the deployment CA; refuses to replace one (every certificate it issued would
    /// stop working).
    pub fn make_ca(&self, name: &str, days: i64) -> Result<Files, Error> {
        let files = self.ca();
        if files.certificate.exists() || files.key.exists() {
            return Err(Error::File {
                path: files.certificate.display().to_string(),
                message: "a CA exists already here; replacing it would invalidate every \
                          certificate it issued (remove it yourself if that is what you want)"
                    .to_owned(),
            });
        }
        let ca = Ca::generate(name, Validity::days_from(OffsetDateTime::now_utc(), days))?;
        Issued {
            certificate_pem: ca.certificate_pem().to_owned(),
            key_pem: ca.key_pem(),
        }
        .write(&files.certificate, &files.key)?;
        Ok(files)
    }

    /// The CA made by [`Directory::make_ca`].
    pub fn load_ca(&self) -> Result<Ca, Error> {
        let files = self.ca();
        Ca::load(&files.certificate, &files.key)
    }

    /// A server certificate `name` for `hosts` (names or addresses), issued by the CA here.
    pub fn make_server(&self, name: &str, hosts: &[String], days: i64) -> Result<Files, Error> {
        let issued = self
            .load_ca()?
            .issue_server(hosts, Validity::days_from(OffsetDateTime::now_utc(), days))?;
        let files = self.server(name);
        issued.write(&files.certificate, &files.key)?;
        Ok(files)
    }

    /// A client certificate for `identity`, issued by the CA here.
    pub fn make_client(&self, identity: &SystemIdentity, days: i64) -> Result<Files, Error> {
        let issued = self.load_ca()?.issue_client(
            identity,
            Validity::days_from(OffsetDateTime::now_utc(), days),
        )?;
        let files = self.client(identity);
        issued.write(&files.certificate, &files.key)?;
        Ok(files)
    }
}

/// Checks the first certificate of `path` at start: `Ok(None)` if it is valid for more than 30
/// days, `Ok(Some(warning))` if it ends sooner, an error if it has expired or is not valid yet.
pub fn check_at_start(path: &Path) -> Result<Option<String>, Error> {
    let certificates = read_certificates(path)?;
    let Some(first) = certificates.first() else {
        return Err(Error::Certificate(format!(
            "{}: no certificate",
            path.display()
        )));
    };
    match expiry(first, OffsetDateTime::now_utc())? {
        Expiry::Valid { .. } => Ok(None),
        Expiry::EndsSoon { not_after } => Ok(Some(format!(
            "{} expires at {not_after}, within 30 days: renew it",
            path.display()
        ))),
        Expiry::Expired { not_after } => Err(Error::Certificate(format!(
            "{} expired at {not_after}: renew it",
            path.display()
        ))),
        Expiry::NotYetValid { not_before } => Err(Error::Certificate(format!(
            "{} is not valid before {not_before} (check this machine's clock)",
            path.display()
        ))),
    }
}
