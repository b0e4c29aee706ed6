//! What `refbus up` makes to secure its local nats-server: a CA, a server certificate, a client
//! certificate per component (rcgen), and an NKey per component, in `<data>/nats-auth/`. The
//! server then takes only TLS connections presenting a certificate of that CA, and only users
//! whose NKey it knows: a local run is authenticated and encrypted like a deployment.
//!
//! Self-contained on purpose: the gRPC side makes its certificates with `refbus certs`
//! (crates/tls); the two can share one CA once both are in. Private keys and seeds are written
//! with mode 0600; the CA's private key is not kept (everything is issued at once, and made
//! again, CA included, when a file is missing or the certificates near their end).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The servers' certificate (client connections).
const SERVER: &str = "server";
/// The certificate each node of a cluster presents on its routes.
const ROUTE: &str = "route";

/// How long the certificates are valid.
const VALID_DAYS: i64 = 397;
/// Certificates older than this are made again at start, well before they expire.
const RENEW_AFTER: Duration = Duration::from_secs(365 * 24 * 3600);

/// The local server's certificates and its users' keys, as files.
#[derive(Debug, Clone)]
pub(crate) struct NatsSecurity {
    dir: PathBuf,
    /// Each user's name and NKey public key.
    users: Vec<(String, String)>,
}

impl NatsSecurity {
    /// The files for `users` in `<data_dir>/nats-auth/`: kept if all are there and recent,
    /// made otherwise (NKey seeds are kept whenever present).
    pub(crate) fn ensure(data_dir: &Path, users: &[String]) -> anyhow::Result<NatsSecurity> {
        let dir = data_dir.join("nats-auth");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut security = NatsSecurity {
            dir,
            users: Vec::new(),
        };
        for user in users {
            let seed_file = security.seed_file(user);
            let seed = if seed_file.exists() {
                std::fs::read_to_string(&seed_file)
                    .with_context(|| format!("reading {}", seed_file.display()))?
            } else {
                let seed = nkeys::KeyPair::new_user()
                    .seed()
                    .map_err(|err| anyhow::anyhow!("making an NKey for {user}: {err}"))?;
                write_secret(&seed_file, &seed)?;
                seed
            };
            let public = nkeys::KeyPair::from_seed(seed.trim())
                .map_err(|err| anyhow::anyhow!("{}: {err}", seed_file.display()))?
                .public_key();
            security.users.push((user.clone(), public));
        }
        if !security.certificates_usable() {
            security.issue_certificates()?;
        }
        Ok(security)
    }

    /// The CA certificate clients verify the server with.
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn seed_file(&self, user: &str) -> PathBuf {
        self.dir.join(format!("{user}.nk"))
    }

    fn cert_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    fn key_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-key.pem"))
    }

    fn certificates_usable(&self) -> bool {
        let names = [SERVER, ROUTE]
            .into_iter()
            .chain(self.users.iter().map(|(user, _)| user.as_str()));
        let mut files = vec![self.ca_file()];
        for name in names {
            files.push(self.cert_file(name));
            files.push(self.key_file(name));
        }
        files.iter().all(|file| file.exists())
            && std::fs::metadata(self.ca_file())
                .and_then(|meta| meta.modified())
                .is_ok_and(|made| made.elapsed().is_ok_and(|age| age < RENEW_AFTER))
    }

    fn issue_certificates(&self) -> anyhow::Result<()> {
        let now = time::OffsetDateTime::now_utc();
        let validity = |params: &mut CertificateParams| {
            params.not_before = now - time::Duration::days(1);
            params.not_after = now + time::Duration::days(VALID_DAYS);
        };
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "refbus up: local NATS CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut ca);
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let issue = |name: &str, sans: Vec<String>, purposes: Vec<ExtendedKeyUsagePurpose>| {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(sans)?;
            params
                .distinguished_name
                .push(DnType::CommonName, name.to_owned());
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = purposes;
            validity(&mut params);
            let cert = params.signed_by(&key, &issuer)?;
            write_secret(&self.key_file(name), &key.serialize_pem())?;
            write_public(&self.cert_file(name), &cert.pem())
        };
        let local = || vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        issue(SERVER, local(), vec![ExtendedKeyUsagePurpose::ServerAuth])?;
        // A route is a TLS client of the node it dials and a server to the nodes dialling it.
        issue(
            ROUTE,
            local(),
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )?;
        for (user, _) in &self.users {
            issue(user, Vec::new(), vec![ExtendedKeyUsagePurpose::ClientAuth])?;
        }
        // The CA last: its age says when all of the above were made.
        write_public(&self.ca_file(), &ca_cert.pem())
    }

    /// The nats-server configuration: TLS with client certificates of the CA required, and
    /// the users by NKey (the server holds no secret of theirs).
    pub(crate) fn server_config(&self) -> String {
        let mut text = format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n  timeout: 2\n}}\nauthorization {{\n  users = [\n",
            self.cert_file(SERVER).display(),
            self.key_file(SERVER).display(),
            self.ca_file().display()
        );
        for (user, public) in &self.users {
            text.push_str(&format!("    {{ nkey: \"{public}\" }}  # {user}\n"));
        }
        text.push_str("  ]\n}\n");
        text
    }

    /// The `tls` block of a cluster's routes: each node presents the route certificate of the
    /// same CA, and accepts only routes that do (a local process cannot join the cluster, and
    /// route traffic, every event included, is encrypted like a client's).
    pub(crate) fn route_tls_config(&self) -> String {
        format!(
            "  tls {{\n    cert_file: \"{}\"\n    key_file: \"{}\"\n    ca_file: \"{}\"\n    verify: true\n    timeout: 2\n  }}\n",
            self.cert_file(ROUTE).display(),
            self.key_file(ROUTE).display(),
            self.ca_file().display()
        )
    }

    /// How component `user` connects to the servers at `urls` (every node of a cluster: the
    /// client moves to another when the one it uses goes away).
    pub(crate) fn connect_options(
        &self,
        urls: &[String],
        user: &str,
    ) -> anyhow::Result<refbus_bus::ConnectOptions> {
        let seed_file = self.seed_file(user);
        let seed = std::fs::read_to_string(&seed_file)
            .with_context(|| format!("reading {}", seed_file.display()))?;
        Ok(refbus_bus::ConnectOptions::new(urls)
            .with_name(user)
            .with_credentials(refbus_bus::Credentials::Nkey(seed.trim().to_owned()))
            .with_tls(refbus_bus::Tls {
                ca_file: Some(self.ca_file()),
                client_cert: Some(refbus_bus::ClientCert {
                    cert_file: self.cert_file(user),
                    key_file: self.key_file(user),
                }),
                required: true,
            }))
    }

    /// The command-line flags that connect component `user` (for printing).
    pub(crate) fn flags(&self, user: &str) -> String {
        format!(
            "--nats-ca {} --nats-cert {} --nats-key {} --nats-nkey-file {}",
            self.ca_file().display(),
            self.cert_file(user).display(),
            self.key_file(user).display(),
            self.seed_file(user).display()
        )
    }
}

/// Writes a private key or seed readable by its owner only (0600), replacing any old file.
pub(crate) fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn write_public(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn secrets_are_for_the_owner_only_and_kept_across_starts() {
        let data = tempfile::tempdir().unwrap();
        let users = ["maros-dinsos".to_owned(), "refbus-router".to_owned()];
        let first = NatsSecurity::ensure(data.path(), &users).unwrap();
        for user in &users {
            for secret in [first.seed_file(user), first.key_file(user)] {
                let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", secret.display());
            }
        }
        let mode = std::fs::metadata(first.key_file("server"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let config = first.server_config();
        assert!(config.contains("verify: true"), "{config}");
        for user in &users {
            let seed = std::fs::read_to_string(first.seed_file(user)).unwrap();
            assert!(
                !config.contains(seed.trim()),
                "a seed in the server's configuration"
            );
        }
        // A second start keeps every key: the same users log in.
        let again = NatsSecurity::ensure(data.path(), &users).unwrap();
        assert_eq!(first.users, again.users);
    }
}
