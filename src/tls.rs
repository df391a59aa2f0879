//! TLS contexts, built from the PEM files the configuration names: the server side for the
//! client listener (optionally requiring client certificates, mTLS) and the client side for
//! connections to the nodes. rustls with the ring provider (no OpenSSL), TLS 1.2 and 1.3.
//!
//! Contexts are immutable; [`ServerTls`] keeps the listener's in an `ArcSwap`, so a reload
//! (SIGHUP) swaps the certificate for new connections while open ones keep theirs. Errors name
//! the file and the reason, since a bad certificate path is the usual start-up mistake.
use crate::config::{ClientTls, NodeTls};
use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Why a TLS context could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("TLS setup: {0}")]
    Setup(String),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.into(),
        reason: reason.to_string(),
    }
}

/// The crypto provider every context uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Every certificate in a PEM file; an empty or unreadable file is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    std::fs::metadata(path).map_err(|e| file_error(path, e))?;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    std::fs::metadata(path).map_err(|e| file_error(path, e))?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in load_certs(path)? {
        store
            .add(cert)
            .map_err(|e| file_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(store)
}

/// The server context for the client listener.
pub fn server_config(tls: &ClientTls) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(&tls.cert_file)?;
    let key = load_key(&tls.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let builder = match &tls.client_ca_file {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            .build()
            .map_err(|e| file_error(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(certs, key).map_err(|e| {
        file_error(
            &tls.key_file,
            format!("does not match the certificate: {e}"),
        )
    })?;
    Ok(Arc::new(config))
}

/// The client context for connections to the nodes.
pub fn client_config(tls: &NodeTls) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
    } else {
        let ca = tls.ca_file.as_deref().ok_or_else(|| {
            TlsError::Setup("node_tls needs node_tls_ca_file to verify the nodes".into())
        })?;
        builder.with_root_certificates(roots(ca)?)
    };
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| file_error(key, format!("does not match the certificate: {e}")))?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The name a node's certificate is checked against: the configured one, else its IP address.
pub fn node_server_name(tls: &NodeTls, addr: SocketAddr) -> ServerName<'static> {
    tls.server_name
        .as_deref()
        .and_then(|n| ServerName::try_from(n.to_string()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
}

/// The client listener's context, swappable by a reload.
pub struct ServerTls {
    current: ArcSwap<ServerConfig>,
}

impl ServerTls {
    pub fn new(tls: &ClientTls) -> Result<ServerTls, TlsError> {
        Ok(ServerTls {
            current: ArcSwap::new(server_config(tls)?),
        })
    }

    /// The acceptor for the next connection (the current certificate).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Uses `config` for connections accepted from now on.
    pub fn store(&self, config: Arc<ServerConfig>) {
        self.current.store(config);
    }
}

/// `node_tls_insecure_skip_verify`: any certificate is accepted (signatures are still checked,
/// so the handshake itself is sound); labs only.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named_in_the_error() {
        let tls = ClientTls {
            listen: "127.0.0.1:0".into(),
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            client_ca_file: None,
        };
        let e = server_config(&tls).expect_err("fails").to_string();
        assert!(e.contains("/nonexistent/cert.pem"), "{e}");
    }

    #[test]
    fn a_file_without_pem_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.pem");
        std::fs::write(&p, "not a certificate\n").unwrap();
        let e = load_certs(&p).expect_err("fails").to_string();
        assert!(e.contains("empty.pem") && e.contains("no PEM"), "{e}");
    }
}
