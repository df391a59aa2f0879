//! Certificates for a local TLS cluster (`bootstrap --spawn --tls`, `up --tls`) and for tests: a
//! private CA, one node certificate (server and client use: the nodes also present it to each
//! other on the cluster bus and for replication), and a client certificate for the proxy, since
//! the spawned nodes require one (`tls-auth-clients yes`).
//!
//! Everything is written as PEM into one directory (`DIR/tls/` for a spawned cluster), keys with
//! mode 0600. The CA key is kept so more client certificates can be issued later, including an
//! already **expired** one for tests that check a refusal. ECDSA P-256 keys (rcgen with ring),
//! which Redis's OpenSSL and rustls both take.
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The common name of the generated CA.
const CA_NAME: &str = "slotproxy local CA";

/// Where one set of generated files lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// The nodes' certificate (also fit for the proxy's client listener in a lab).
    pub node_cert: PathBuf,
    pub node_key: PathBuf,
    /// The proxy's client certificate towards the nodes.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl CertPaths {
    /// The file names used under `dir`.
    pub fn in_dir(dir: &Path) -> CertPaths {
        CertPaths {
            dir: dir.to_path_buf(),
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            node_cert: dir.join("node.crt"),
            node_key: dir.join("node.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
        }
    }

    /// True when every file is there (a cluster formed earlier keeps its certificates).
    pub fn complete(&self) -> bool {
        [
            &self.ca_cert,
            &self.ca_key,
            &self.node_cert,
            &self.node_key,
            &self.client_cert,
            &self.client_key,
        ]
        .iter()
        .all(|p| p.is_file())
    }

    /// The settings for TLS to nodes that use these certificates (verified against the CA,
    /// presenting the client certificate).
    pub fn node_tls(&self) -> crate::config::NodeTls {
        crate::config::NodeTls {
            ca_file: Some(self.ca_cert.clone()),
            cert_file: Some(self.client_cert.clone()),
            key_file: Some(self.client_key.clone()),
            server_name: None,
            insecure_skip_verify: false,
        }
    }
}

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Whether an issued certificate is valid now or expired long ago.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Current,
    Expired,
}

/// Makes a new CA, node certificate and client certificate under `dir` (created if needed),
/// replacing any there. The node certificate names 127.0.0.1, `localhost` and every IP in
/// `ips` (the nodes' bind addresses).
pub fn generate(dir: &Path, ips: &[IpAddr]) -> Result<CertPaths, CertError> {
    let paths = CertPaths::in_dir(dir);
    fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params().self_signed(&ca_key)?;
    write(&paths.ca_cert, &ca_cert.pem(), false)?;
    write(&paths.ca_key, &ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca_params(), ca_key);

    let mut names: Vec<SanType> = vec![
        SanType::IpAddress(IpAddr::from([127, 0, 0, 1])),
        SanType::DnsName("localhost".try_into()?),
    ];
    for ip in ips {
        let san = SanType::IpAddress(*ip);
        if !ip.is_unspecified() && !names.contains(&san) {
            names.push(san);
        }
    }
    let mut node = leaf_params("slotproxy node", Validity::Current);
    node.subject_alt_names = names;
    node.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let node_key = KeyPair::generate()?;
    write(
        &paths.node_cert,
        &node.signed_by(&node_key, &issuer)?.pem(),
        false,
    )?;
    write(&paths.node_key, &node_key.serialize_pem(), true)?;

    issue_client_with(
        &issuer,
        "slotproxy",
        Validity::Current,
        &paths.client_cert,
        &paths.client_key,
    )?;
    Ok(paths)
}

/// [`generate`] unless a complete set is already under `dir` (nodes started earlier use it).
pub fn ensure(dir: &Path, ips: &[IpAddr]) -> Result<CertPaths, CertError> {
    let paths = CertPaths::in_dir(dir);
    if paths.complete() {
        return Ok(paths);
    }
    generate(dir, ips)
}

/// Issues one more client certificate signed by the CA under `paths` (for tests: a second
/// client, or an expired one), written to `DIR/<name>.crt` and `DIR/<name>.key`.
pub fn issue_client(
    paths: &CertPaths,
    name: &str,
    validity: Validity,
) -> Result<(PathBuf, PathBuf), CertError> {
    let pem = fs::read_to_string(&paths.ca_key).map_err(|source| CertError::Io {
        path: paths.ca_key.clone(),
        source,
    })?;
    let issuer = Issuer::new(ca_params(), KeyPair::from_pem(&pem)?);
    let cert = paths.dir.join(format!("{name}.crt"));
    let key = paths.dir.join(format!("{name}.key"));
    issue_client_with(&issuer, name, validity, &cert, &key)?;
    Ok((cert, key))
}

fn issue_client_with(
    issuer: &Issuer<'_, KeyPair>,
    name: &str,
    validity: Validity,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), CertError> {
    let mut params = leaf_params(name, validity);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    write(cert_path, &params.signed_by(&key, issuer)?.pem(), false)?;
    write(key_path, &key.serialize_pem(), true)?;
    Ok(())
}

/// The CA's parameters; rebuilt identically to sign with a stored CA key.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    params
}

fn leaf_params(common_name: &str, validity: Validity) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    (params.not_before, params.not_after) = match validity {
        Validity::Current => (
            rcgen::date_time_ymd(2024, 1, 1),
            rcgen::date_time_ymd(2124, 1, 1),
        ),
        Validity::Expired => (
            rcgen::date_time_ymd(2020, 1, 1),
            rcgen::date_time_ymd(2021, 1, 1),
        ),
    };
    params
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "slotproxy");
    dn
}

/// Writes a PEM file; private keys get mode 0600 from the start.
fn write(path: &Path, pem: &str, private: bool) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(io)?;
    file.write_all(pem.as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientTls;

    #[test]
    fn generated_files_make_working_contexts() {
        let dir = tempfile::tempdir().unwrap();
        let paths = generate(dir.path(), &["10.1.2.3".parse().unwrap()]).unwrap();
        assert!(paths.complete());
        crate::tls::client_config(&paths.node_tls()).expect("node TLS context");
        let listener = ClientTls {
            listen: "127.0.0.1:0".into(),
            cert_file: paths.node_cert.clone(),
            key_file: paths.node_key.clone(),
            client_ca_file: Some(paths.ca_cert.clone()),
        };
        crate::tls::server_config(&listener).expect("listener TLS context");
        let (cert, key) = issue_client(&paths, "old", Validity::Expired).unwrap();
        assert!(cert.is_file() && key.is_file());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&paths.ca_key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "keys are private");
        }
        // `ensure` keeps what is there.
        let before = fs::read(&paths.ca_cert).unwrap();
        ensure(dir.path(), &[]).unwrap();
        assert_eq!(fs::read(&paths.ca_cert).unwrap(), before);
    }
}
