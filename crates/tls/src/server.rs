//! The adapter's side of TLS: its own certificate, and a handshake that asks every client for
//! a certificate and checks only that the client holds its key.
//!
//! Whether the certificate is valid, and for which agency, is decided per call by
//! [`crate::ClientAuthority`] (the adapter calls it first in every method): a handshake that
//! refused an expired or self-signed certificate would show the caller a broken connection
//! ("transport error"), where the contract promises `UNAUTHENTICATED` with the reason.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::Error;

/// A server certificate and key, ready to accept TLS connections. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    /// The certificate, end-entity first, for the expiry check.
    pub chain: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Serves `chain` (end-entity first) with `key`.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<ServerTls, Error> {
        let provider = crate::provider();
        let verifier = Arc::new(ProofOfKey {
            algorithms: provider.signature_verification_algorithms,
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key)?;
        // gRPC is HTTP/2 only.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            chain,
        })
    }

    /// Reads a PEM certificate chain and a PEM private key.
    pub fn from_pem_files(certificate: &Path, key: &Path) -> Result<ServerTls, Error> {
        let chain = crate::read_certificates(certificate)?;
        let key = crate::read_private_key(key)?;
        ServerTls::new(chain, key)
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// TLS connections accepted on `listener`, for tonic's `serve_with_incoming`: each
    /// handshake runs in its own task, so a slow or silent client delays nobody else. Ends
    /// when the server stops taking connections. The adapter serves with it, and so does the
    /// benchmarks' floor over TLS, so both pay the same transport.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
        let (accepted, incoming) = tokio::sync::mpsc::channel(64);
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    () = accepted.closed() => return,
                    connection = listener.accept() => match connection {
                        Ok(connection) => connection,
                        Err(err) => {
                            // Out of file descriptors, or a connection reset before it was taken.
                            tracing::warn!("accepting a connection: {err}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                // Without TCP_NODELAY small gRPC answers wait for the peer's delayed ACK (~40 ms).
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let accepted = accepted.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = accepted.send(Ok(stream)).await;
                        }
                        Ok(Err(err)) => tracing::debug!(%peer, "TLS handshake failed: {err}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(incoming)
    }
}

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks every client for a certificate, accepts any (or none), and checks the handshake's
/// signature: the client proves it holds the key of the certificate it presents, so a
/// certificate copied from another connection is useless.
#[derive(Debug)]
struct ProofOfKey {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ProofOfKey {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: a client sends the certificate it was given, whoever issued it, and learns
        // from the answer what is wrong with it.
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Judged per call by the ClientAuthority (see the module's documentation).
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
