//! refbus-tls: mutual TLS between an agency's systems and its adapter.
//!
//! An agency's system proves who it is with a client certificate whose one URI name is
//! `refbus://<agency>/<system>` ([`SystemIdentity`]), issued by a certificate authority the
//! registry trusts for that agency. The adapter serves TLS with its own server certificate
//! ([`ServerTls`]) and, on every call, asks the [`ClientAuthority`] who the caller is: no
//! certificate, or one that no CA of its agency issued (expired, self-signed, unknown issuer)
//! is not authenticated; a valid one names its agency and system, and the adapter accepts only
//! its own agency's.
//!
//! # Layout
//!
//! - [`identity`]: the name in a client certificate, and reading certificates.
//! - [`authority`]: who a presented certificate chain is, checked against each agency's CAs.
//! - [`server`]: the adapter's TLS acceptor; the TLS handshake only proves the client holds
//!   the key of the certificate it shows, the chain is judged per call by [`authority`] so
//!   that each refusal is a precise gRPC status instead of a broken connection.
//! - [`certs`]: a deployment CA, server certificates and client certificates (rcgen), written
//!   with private keys readable by their owner only; the expiry check every component runs at
//!   start.
//!
//! Only rustls with the *ring* provider: no OpenSSL.

pub mod authority;
pub mod certs;
pub mod identity;
pub mod server;

pub use authority::{Authenticated, ClientAuthority, Refusal};
pub use certs::{Expiry, expiry, read_certificates, read_private_key};
pub use identity::SystemIdentity;
pub use server::ServerTls;

/// Why certificates or keys could not be read, made or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Certificate(String),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("making a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The crypto provider everything here uses (ring), whatever else the process installed.
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
