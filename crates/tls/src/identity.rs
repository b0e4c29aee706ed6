//! The identity in a client certificate: `refbus://<agency>/<system>` as its URI name.
//!
//! A URI subject alternative name (as SPIFFE uses) rather than the common name: names are what
//! verifiers compare, a certificate carries exactly one such URI, and both parts are slugs (the
//! registry's agency id, and the system's own name such as `simpus` or `sikasus`), so they are
//! safe in logs and events.

use std::fmt;

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The scheme of a system's URI name.
pub const SCHEME: &str = "refbus://";

/// An agency's system, as its client certificate names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SystemIdentity {
    pub agency: String,
    pub system: String,
}

impl SystemIdentity {
    pub fn new(agency: impl Into<String>, system: impl Into<String>) -> SystemIdentity {
        SystemIdentity {
            agency: agency.into(),
            system: system.into(),
        }
    }

    /// The URI name a certificate carries.
    pub fn uri(&self) -> String {
        format!("{SCHEME}{}/{}", self.agency, self.system)
    }

    /// Reads `refbus://<agency>/<system>`; both parts must be slugs (lower-case letters,
    /// digits, `-` and `_`, as the registry's ids).
    pub fn parse_uri(uri: &str) -> Option<SystemIdentity> {
        let rest = uri.strip_prefix(SCHEME)?;
        let (agency, system) = rest.split_once('/')?;
        (slug(agency) && slug(system)).then(|| SystemIdentity::new(agency, system))
    }

    /// The one `refbus://` URI name of `certificate`. A certificate with none, with two, or
    /// that cannot be read names nobody.
    pub fn of(certificate: &CertificateDer<'_>) -> Result<SystemIdentity, String> {
        let (_, parsed) = X509Certificate::from_der(certificate)
            .map_err(|err| format!("the certificate cannot be read: {err}"))?;
        let names = parsed
            .subject_alternative_name()
            .map_err(|err| format!("its subject alternative names cannot be read: {err}"))?;
        let mut found = names
            .iter()
            .flat_map(|names| names.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with(SCHEME) => Some(*uri),
                _ => None,
            });
        match (found.next(), found.next()) {
            (Some(uri), None) => SystemIdentity::parse_uri(uri).ok_or_else(|| {
                format!("its name {uri:?} is not refbus://<agency>/<system> with slugs")
            }),
            (None, _) => Err("it carries no refbus://<agency>/<system> URI name".to_owned()),
            (Some(_), Some(_)) => Err("it carries more than one refbus:// URI name".to_owned()),
        }
    }
}

impl fmt::Display for SystemIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.agency, self.system)
    }
}

/// The registry's rule for ids: 1 to 48 lower-case letters, digits, `-` or `_`, starting and
/// ending with a letter or digit.
fn slug(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 48
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && text.as_bytes()[0].is_ascii_alphanumeric()
        && !text.ends_with(['-', '_'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_refuse_what_is_not_a_slug() {
        let id = SystemIdentity::new("maros-dinsos", "sikasus");
        assert_eq!(id.uri(), "refbus://maros-dinsos/sikasus");
        assert_eq!(SystemIdentity::parse_uri(&id.uri()), Some(id));
        for bad in [
            "refbus://maros-dinsos",
            "refbus://Maros/x",
            "refbus://a/b/c",
            "spiffe://a/b",
            "refbus:///x",
        ] {
            assert_eq!(SystemIdentity::parse_uri(bad), None, "{bad}");
        }
    }
}
