//! Mutual TLS for `refbus bench ingest --tls`: the adapter serves it as deployed, and the load
//! generator presents the sender's client certificate, so the cost of TLS and of authenticating
//! every call is in the figures.

use refbus_adapter::Transport;
use refbus_core::AgencyId;
use refbus_tls::certs::{Ca, Validity, certificates_from_pem};
use refbus_tls::{ClientAuthority, ServerTls, SystemIdentity};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::BenchError;

/// The adapter's transport and the clients' TLS.
#[derive(Debug, Clone)]
pub struct BenchTls {
    pub transport: Transport,
    pub client: ClientTlsConfig,
}

impl BenchTls {
    /// A CA, a server certificate for 127.0.0.1, and a client certificate of `sender`'s
    /// `bench` system.
    pub fn generate(sender: &AgencyId) -> Result<BenchTls, BenchError> {
        let setup = |err: refbus_tls::Error| BenchError::Setup(format!("certificates: {err}"));
        let now = time::OffsetDateTime::now_utc();
        let validity = Validity::days_from(now, 2);
        let ca = Ca::generate("refbus bench CA", validity).map_err(setup)?;
        let server = ca
            .issue_server(&["localhost".to_owned(), "127.0.0.1".to_owned()], validity)
            .map_err(setup)?;
        let chain = certificates_from_pem(&server.certificate_pem).map_err(BenchError::Setup)?;
        let key = {
            use rustls_pki_types::pem::PemObject as _;
            rustls_pki_types::PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes())
                .map_err(|err| BenchError::Setup(err.to_string()))?
        };
        let ca_der = certificates_from_pem(ca.certificate_pem())
            .map_err(BenchError::Setup)?
            .remove(0)
            .to_vec();
        let clients = ClientAuthority::new([(sender.as_str(), std::slice::from_ref(&ca_der))])
            .map_err(setup)?;
        let identity = SystemIdentity::new(sender.as_str(), "bench");
        let client_certificate = ca.issue_client(&identity, validity).map_err(setup)?;
        Ok(BenchTls {
            transport: Transport::MutualTls {
                tls: ServerTls::new(chain, key).map_err(setup)?,
                clients,
            },
            client: ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca.certificate_pem()))
                .identity(Identity::from_pem(
                    &client_certificate.certificate_pem,
                    &client_certificate.key_pem,
                ))
                .domain_name("localhost"),
        })
    }
}
