//! Who is calling: the transport an adapter serves, and the check that runs before every call
//! of `ReferralService`.
//!
//! With mutual TLS (the default, and the only transport off loopback) every call must come with
//! a client certificate that a CA of the caller's agency issued for `refbus://<agency>/<system>`
//! (see `refbus_tls`), and the agency must be this adapter's: no certificate or an invalid one
//! is `UNAUTHENTICATED`, a valid one of another agency is `PERMISSION_DENIED`, both before the
//! service sees the request, so nothing is read or written. The system it names is then
//! recorded on every event the call writes, beside the operator the system names.

use std::net::SocketAddr;

use refbus_core::AgencyId;
use refbus_core::ids::SystemId;
use refbus_tls::{ClientAuthority, ServerTls};
use tonic::{Request, Status};

use crate::status;

/// How an adapter's gRPC port is served.
#[derive(Debug, Clone)]
pub enum Transport {
    /// TLS with the adapter's certificate; callers authenticate with client certificates that
    /// `clients` accepts for this adapter's agency.
    MutualTls {
        tls: ServerTls,
        clients: ClientAuthority,
    },
    /// No TLS and no authentication: every caller acts as the agency. Refused by [`crate::run`]
    /// on anything but a loopback address; for trying refbus on one machine only.
    InsecurePlaintext,
}

impl Transport {
    /// Mutual TLS with the CAs `registry` lists for each agency (`client_cas`).
    pub fn mutual_tls(
        tls: ServerTls,
        registry: &refbus_core::Registry,
    ) -> Result<Transport, refbus_tls::Error> {
        let clients = ClientAuthority::new(
            registry
                .agencies
                .values()
                .map(|agency| (agency.id.as_str(), agency.client_cas.as_slice())),
        )?;
        Ok(Transport::MutualTls { tls, clients })
    }

    /// Refuses plaintext off loopback: a port anyone on the network reaches must authenticate.
    pub(crate) fn check_address(&self, address: SocketAddr) -> Result<(), crate::Error> {
        match self {
            Transport::InsecurePlaintext if !address.ip().is_loopback() => {
                Err(crate::Error::PlaintextOffLoopback(address))
            }
            _ => Ok(()),
        }
    }
}

/// What the check before every call learned, for the call to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Peer {
    /// A system of this adapter's agency, authenticated by its certificate.
    System(SystemId),
    /// Anyone, on an insecure plaintext port.
    Unauthenticated,
}

impl Peer {
    pub(crate) fn system(&self) -> Option<SystemId> {
        match self {
            Peer::System(system) => Some(system.clone()),
            Peer::Unauthenticated => None,
        }
    }
}

/// The check before every call: authenticates the caller and leaves a [`Peer`] in the
/// request's extensions. A request without one never reaches a method (see `service::caller`).
#[derive(Clone)]
pub(crate) struct Authenticate {
    pub(crate) agency: AgencyId,
    /// `None`: insecure plaintext.
    pub(crate) clients: Option<ClientAuthority>,
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let peer = match &self.clients {
            None => Peer::Unauthenticated,
            Some(clients) => {
                let certificates = request.peer_certs();
                let authenticated = clients
                    .authenticate(
                        certificates.as_deref().map(Vec::as_slice),
                        rustls_pki_types::UnixTime::now(),
                    )
                    .map_err(|refusal| status::unauthenticated(&refusal))?;
                let identity = authenticated.0;
                if identity.agency != self.agency.as_str() {
                    return Err(status::other_agency(&identity, &self.agency));
                }
                let system = SystemId::new(identity.system).map_err(|err| {
                    status::unauthenticated(&refbus_tls::Refusal::NoIdentity(err.to_string()))
                })?;
                Peer::System(system)
            }
        };
        request.extensions_mut().insert(peer);
        Ok(request)
    }
}
