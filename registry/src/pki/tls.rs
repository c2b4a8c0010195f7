//! The cluster's PKI and mutual TLS: a root CA made at `--init`, node certificates issued at join,
//! and the rustls configurations of the cluster port.
//!
//! A node certificate's subject carries the node's identity: CN `node-<16 hex id>`, OU the role
//! (`manager` or `worker`); its SANs are the node's advertised IPs. Join tokens pin the CA by the
//! SHA-256 digest of its DER encoding, so a joining node checks it talks to the right cluster before
//! it sends its secret.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

use crate::error::Error;
pub use shoal_model::ClusterCa;
use shoal_model::{NodeId, Role};

/// How long node certificates live by default (Swarm's default too).
pub const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

const CA_FILE: &str = "ca.pem";
const CERT_FILE: &str = "node.pem";
const KEY_FILE: &str = "node.key";

fn tls_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("{what}: {e}"))
}

/// Installs the process-wide rustls crypto provider (ring). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// SHA-256 of the DER of the first certificate in `pem`, lowercase hex.
pub fn ca_digest(cert_pem: &str) -> Result<String, Error> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| tls_err("bad CA certificate", e))?;
    Ok(Sha256::digest(der.as_ref()).iter().map(|b| format!("{b:02x}")).collect())
}

/// Signing with the cluster root CA (the CA itself is data in the model: [`ClusterCa`]).
pub trait ClusterCaExt: Sized {
    /// A new self-signed root CA (ECDSA P-256, 10 years).
    fn generate() -> Result<Self, Error>;

    /// The digest pinned by join tokens.
    fn digest(&self) -> Result<String, Error>;

    /// Signs a node certificate for `id`/`role` valid for `ips`, over the public key of `csr_pem`.
    fn sign(&self, csr_pem: &str, id: NodeId, role: Role, ips: &[IpAddr], validity: Duration) -> Result<String, Error>;

    /// Signs a client certificate for the HTTP API (`shoal cert client`): subject `client-NAME`,
    /// OU `client`, client authentication only. It is no node identity: the cluster port refuses it.
    fn sign_client(&self, csr_pem: &str, name: &str, validity: Duration) -> Result<String, Error>;

    /// Issues a key and certificate directly (used for the first manager).
    fn issue(&self, id: NodeId, role: Role, ips: &[IpAddr], validity: Duration) -> Result<NodeCert, Error>;
}

impl ClusterCaExt for ClusterCa {
    fn generate() -> Result<Self, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err("ca params", e))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.distinguished_name.push(DnType::CommonName, "shoal cluster root CA");
        params.not_before = time_now() - time::Duration::hours(1);
        params.not_after = time_now() + time::Duration::days(3650);
        let key = KeyPair::generate().map_err(|e| tls_err("ca key", e))?;
        let cert = params.self_signed(&key).map_err(|e| tls_err("ca certificate", e))?;
        Ok(Self { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    fn digest(&self) -> Result<String, Error> {
        ca_digest(&self.cert_pem)
    }

    fn sign(&self, csr_pem: &str, id: NodeId, role: Role, ips: &[IpAddr], validity: Duration) -> Result<String, Error> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| Error::BadRequest(format!("invalid certificate signing request: {e}")))?;
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| tls_err("ca key", e))?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, key).map_err(|e| tls_err("ca certificate", e))?;
        let params = node_params(id, role, ips, validity)?;
        let cert = params.signed_by(&csr.public_key, &issuer).map_err(|e| tls_err("signing", e))?;
        Ok(cert.pem())
    }

    fn sign_client(&self, csr_pem: &str, name: &str, validity: Duration) -> Result<String, Error> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
            return Err(Error::BadRequest(format!(
                "invalid client name {name:?}: use letters, digits, '-', '_' or '.'"
            )));
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| Error::BadRequest(format!("invalid certificate signing request: {e}")))?;
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| tls_err("ca key", e))?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, key).map_err(|e| tls_err("ca certificate", e))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err("client params", e))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("client-{name}"));
        dn.push(DnType::OrganizationalUnitName, "client");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.not_before = time_now() - time::Duration::seconds(30);
        params.not_after = time_now() + time::Duration::seconds(validity.as_secs() as i64);
        let cert = params.signed_by(&csr.public_key, &issuer).map_err(|e| tls_err("signing", e))?;
        Ok(cert.pem())
    }

    fn issue(&self, id: NodeId, role: Role, ips: &[IpAddr], validity: Duration) -> Result<NodeCert, Error> {
        let (key_pem, csr) = new_csr()?;
        let cert_pem = self.sign(&csr, id, role, ips, validity)?;
        Ok(NodeCert { ca_pem: self.cert_pem.clone(), cert_pem, key_pem })
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn node_params(id: NodeId, role: Role, ips: &[IpAddr], validity: Duration) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err("node params", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("node-{id:016x}"));
    dn.push(DnType::OrganizationalUnitName, role.as_str());
    params.distinguished_name = dn;
    params.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    // A little slack before "now" for clocks that differ slightly between nodes (at most 30 s, and
    // a tenth of the validity so that short test validities still renew on time).
    let slack = (validity.as_secs() / 10).min(30) as i64;
    params.not_before = time_now() - time::Duration::seconds(slack);
    params.not_after = time_now() + time::Duration::seconds(validity.as_secs() as i64);
    Ok(params)
}

/// A fresh key pair and a CSR for it: `(key PEM, CSR PEM)`.
pub fn new_csr() -> Result<(String, String), Error> {
    let key = KeyPair::generate().map_err(|e| tls_err("node key", e))?;
    let params = CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err("csr params", e))?;
    let csr = params.serialize_request(&key).map_err(|e| tls_err("csr", e))?;
    Ok((key.serialize_pem(), csr.pem().map_err(|e| tls_err("csr pem", e))?))
}

/// Who is on the other end of a mutually authenticated connection, read from its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Node ID.
    pub id: NodeId,
    /// Role.
    pub role: Role,
}

impl PeerIdentity {
    /// Reads the identity from a verified peer certificate.
    pub fn from_cert(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let cn = subject.iter_common_name().next()?.as_str().ok()?;
        let id = NodeId::from_str_radix(cn.strip_prefix("node-")?, 16).ok()?;
        let role = match subject.iter_organizational_unit().next()?.as_str().ok()? {
            "manager" => Role::Manager,
            "worker" => Role::Worker,
            _ => return None,
        };
        Some(Self { id, role })
    }
}

/// A node's certificate, key and the CA it trusts, as kept in `DATA_DIR/tls/`.
#[derive(Debug, Clone)]
pub struct NodeCert {
    /// CA certificate, PEM.
    pub ca_pem: String,
    /// Node certificate, PEM.
    pub cert_pem: String,
    /// Node private key, PEM.
    pub key_pem: String,
}

impl NodeCert {
    /// Loads `dir/tls/{ca,node}.pem` and `node.key`; `None` if absent.
    pub fn load(dir: &Path) -> Result<Option<Self>, Error> {
        let tls = dir.join("tls");
        if !tls.join(CERT_FILE).exists() {
            return Ok(None);
        }
        let read = |f: &str| {
            std::fs::read_to_string(tls.join(f))
                .map_err(|e| tls_err(&format!("cannot read {}", tls.join(f).display()), e))
        };
        Ok(Some(Self { ca_pem: read(CA_FILE)?, cert_pem: read(CERT_FILE)?, key_pem: read(KEY_FILE)? }))
    }

    /// Writes the three files (the key with mode 0600), each durably.
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).map_err(|e| tls_err("cannot create tls dir", e))?;
        for (name, body, mode) in
            [(CA_FILE, &self.ca_pem, 0o644), (CERT_FILE, &self.cert_pem, 0o644), (KEY_FILE, &self.key_pem, 0o600)]
        {
            let tmp = tls.join(format!("{name}.tmp"));
            let write = || -> std::io::Result<()> {
                let mut f =
                    std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(mode).open(&tmp)?;
                f.write_all(body.as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, tls.join(name))
            };
            write().map_err(|e| tls_err(&format!("cannot write {}", tls.join(name).display()), e))?;
        }
        Ok(())
    }

    /// `(not before, not after)` of the node certificate.
    pub fn validity(&self) -> Result<(SystemTime, SystemTime), Error> {
        let der =
            CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).map_err(|e| tls_err("bad node certificate", e))?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| tls_err("bad node certificate", e))?;
        let v = cert.validity();
        let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
        Ok((at(v.not_before.timestamp()), at(v.not_after.timestamp())))
    }

    fn certified_key(&self) -> Result<Arc<rustls::sign::CertifiedKey>, Error> {
        let (chain, key) = self.chain_and_key()?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| tls_err("node key", e))?;
        Ok(Arc::new(rustls::sign::CertifiedKey::new(chain, signer)))
    }

    fn roots(&self) -> Result<RootCertStore, Error> {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.map_err(|e| tls_err("bad CA pem", e))?).map_err(|e| tls_err("bad CA", e))?;
        }
        Ok(roots)
    }

    fn chain_and_key(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_err("bad node certificate", e))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| tls_err("bad node key", e))?;
        Ok((chain, key))
    }
}

/// The node's certificate as TLS uses it, replaceable at run time: renewal swaps it in and every new
/// handshake, in and out, uses the new one — no restart.
#[derive(Debug, Clone)]
pub struct LiveCert {
    inner: Arc<RwLock<(NodeCert, Arc<rustls::sign::CertifiedKey>)>>,
}

impl LiveCert {
    /// Wraps `cert`.
    pub fn new(cert: NodeCert) -> Result<Self, Error> {
        let key = cert.certified_key()?;
        Ok(Self { inner: Arc::new(RwLock::new((cert, key))) })
    }

    /// The certificate in use.
    pub fn current(&self) -> NodeCert {
        self.inner.read().expect("cert lock").0.clone()
    }

    /// Swaps in a renewed certificate.
    pub fn replace(&self, cert: NodeCert) -> Result<(), Error> {
        let key = cert.certified_key()?;
        *self.inner.write().expect("cert lock") = (cert, key);
        Ok(())
    }

    fn key(&self) -> Arc<rustls::sign::CertifiedKey> {
        self.inner.read().expect("cert lock").1.clone()
    }

    /// The cluster port's server side: presents the node certificate; a client certificate from the
    /// cluster CA is verified when offered and required by every route except the join routes.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, Error> {
        self.server_config_requiring_client_cert(false)
    }

    /// The HTTP API's server side with `--http-tls`: presents the node certificate and *requires* a
    /// client certificate from the cluster CA (`shoal cert client`, or a node's own).
    pub fn api_server_config(&self) -> Result<Arc<ServerConfig>, Error> {
        self.server_config_requiring_client_cert(true)
    }

    fn server_config_requiring_client_cert(&self, required: bool) -> Result<Arc<ServerConfig>, Error> {
        install_crypto_provider();
        let builder = rustls::server::WebPkiClientVerifier::builder(Arc::new(self.current().roots()?));
        let builder = if required { builder } else { builder.allow_unauthenticated() };
        let verifier = builder.build().map_err(|e| tls_err("client verifier", e))?;
        let mut config =
            ServerConfig::builder().with_client_cert_verifier(verifier).with_cert_resolver(Arc::new(self.clone()));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The client side of node-to-node links: trusts only the cluster CA and presents the node certificate.
    pub fn client_config(&self) -> Result<ClientConfig, Error> {
        install_crypto_provider();
        Ok(ClientConfig::builder()
            .with_root_certificates(self.current().roots()?)
            .with_client_cert_resolver(Arc::new(self.clone())))
    }
}

impl rustls::server::ResolvesServerCert for LiveCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.key())
    }
}

impl rustls::client::ResolvesClientCert for LiveCert {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client config that trusts only `ca_pem` and presents no certificate (a joining node).
pub fn anonymous_client_config(ca_pem: &str) -> Result<ClientConfig, Error> {
    install_crypto_provider();
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.map_err(|e| tls_err("bad CA pem", e))?).map_err(|e| tls_err("bad CA", e))?;
    }
    Ok(ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
}

/// A client config that accepts any server certificate. Used for exactly one request: fetching the
/// CA certificate, whose digest the caller then checks against the join token before trusting it.
pub fn unverified_client_config() -> ClientConfig {
    install_crypto_provider();
    ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
        .with_no_client_auth()
}

#[derive(Debug)]
struct AcceptAnyServer;

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_identity_and_chain_to_the_ca() {
        let ca = ClusterCa::generate().unwrap();
        let node = ca.issue(0xabc, Role::Manager, &["127.0.0.1".parse().unwrap()], DEFAULT_CERT_VALIDITY).unwrap();
        let der = CertificateDer::from_pem_slice(node.cert_pem.as_bytes()).unwrap();
        assert_eq!(PeerIdentity::from_cert(&der), Some(PeerIdentity { id: 0xabc, role: Role::Manager }));
        assert_eq!(ca.digest().unwrap().len(), 64);
        assert_ne!(ca.digest().unwrap(), ClusterCa::generate().unwrap().digest().unwrap());
        let live = LiveCert::new(node.clone()).unwrap();
        live.server_config().unwrap();
        live.client_config().unwrap();
        let (from, to) = node.validity().unwrap();
        let days = to.duration_since(from).unwrap().as_secs() / 86_400;
        assert_eq!(days, 90);
    }

    #[test]
    fn bad_csr_is_a_bad_request() {
        let ca = ClusterCa::generate().unwrap();
        let err = ca.sign("not a csr", 1, Role::Worker, &[], DEFAULT_CERT_VALIDITY).unwrap_err();
        assert!(err.to_string().contains("invalid certificate signing request"), "{err}");
    }
}
