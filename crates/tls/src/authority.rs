//! Who a caller is: the certificate chain it presented, checked against the CAs the registry
//! trusts for the agency the certificate names.
//!
//! A CA is trusted per agency, so a CA that one agency runs cannot vouch for a system of
//! another: the chain must lead to a CA listed for the agency in the certificate's own name.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use crate::{Error, SystemIdentity};

/// Why a caller is not authenticated. Every refusal is the caller's to fix, so each says what
/// was wrong (never anything secret: certificates are public).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "no client certificate: present the certificate of your agency's system (issued for \
         refbus://<agency>/<system>)"
    )]
    NoCertificate,
    #[error("the client certificate is not acceptable: {0}")]
    NoIdentity(String),
    #[error("the client certificate names agency {0}, for which this deployment trusts no CA")]
    UnknownAgency(String),
    #[error("the client certificate of {identity} is not valid: {reason}")]
    Invalid {
        identity: SystemIdentity,
        reason: String,
    },
}

/// A caller whose certificate chain is valid for the agency it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated(pub SystemIdentity);

/// The CAs trusted for each agency's systems. Cheap to clone.
#[derive(Clone, Default)]
pub struct ClientAuthority {
    verifiers: Arc<BTreeMap<String, Arc<dyn ClientCertVerifier>>>,
}

impl std::fmt::Debug for ClientAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuthority")
            .field("agencies", &self.verifiers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ClientAuthority {
    /// `cas`: each agency and the DER certificates of the CAs that issue its systems'
    /// certificates. An agency with no CA has no system that can authenticate.
    pub fn new<'a>(
        cas: impl IntoIterator<Item = (&'a str, &'a [Vec<u8>])>,
    ) -> Result<ClientAuthority, Error> {
        let mut verifiers = BTreeMap::new();
        for (agency, certificates) in cas {
            if certificates.is_empty() {
                continue;
            }
            let mut roots = RootCertStore::empty();
            for der in certificates {
                roots
                    .add(CertificateDer::from(der.clone()))
                    .map_err(|err| {
                        Error::Certificate(format!("a CA certificate of {agency}: {err}"))
                    })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::provider())
                    .build()
                    .map_err(|err| Error::Certificate(format!("the CAs of {agency}: {err}")))?;
            verifiers.insert(agency.to_owned(), verifier);
        }
        Ok(ClientAuthority {
            verifiers: Arc::new(verifiers),
        })
    }

    /// Whether any agency has a CA.
    pub fn is_empty(&self) -> bool {
        self.verifiers.is_empty()
    }

    /// Who presented `chain` (end-entity first), at `now`.
    pub fn authenticate(
        &self,
        chain: Option<&[CertificateDer<'_>]>,
        now: UnixTime,
    ) -> Result<Authenticated, Refusal> {
        let Some((end_entity, intermediates)) = chain.and_then(|chain| chain.split_first()) else {
            return Err(Refusal::NoCertificate);
        };
        let identity = SystemIdentity::of(end_entity).map_err(Refusal::NoIdentity)?;
        let Some(verifier) = self.verifiers.get(&identity.agency) else {
            return Err(Refusal::UnknownAgency(identity.agency));
        };
        match verifier.verify_client_cert(end_entity, intermediates, now) {
            Ok(_) => Ok(Authenticated(identity)),
            Err(err) => Err(Refusal::Invalid {
                identity,
                reason: describe(&err),
            }),
        }
    }
}

/// A verification failure in words an agency's IT staff can act on.
fn describe(error: &rustls::Error) -> String {
    use rustls::CertificateError as E;
    match error {
        rustls::Error::InvalidCertificate(E::Expired | E::ExpiredContext { .. }) => {
            "it has expired; ask for a new one".to_owned()
        }
        rustls::Error::InvalidCertificate(E::NotValidYet | E::NotValidYetContext { .. }) => {
            "it is not valid yet (check this machine's clock)".to_owned()
        }
        rustls::Error::InvalidCertificate(E::UnknownIssuer) => {
            "it was not issued by a CA this deployment trusts for that agency (self-signed, or \
             another CA)"
                .to_owned()
        }
        rustls::Error::InvalidCertificate(E::BadSignature) => {
            "its signature does not verify against the CA".to_owned()
        }
        other => other.to_string(),
    }
}
