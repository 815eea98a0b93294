//! The gateway's certificate authority: creating one (`ca init`), loading one, and issuing
//! short-lived ECDSA P-256 leaf certificates from a bounded, single-flight cache.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints, SanType,
};
use rustls::crypto::aws_lc_rs::sign::any_supported_type;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

/// Errors creating, loading or using the CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificate or key material is invalid.
    #[error("{0}")]
    Invalid(String),
    /// New names arrive faster than the issuance rate.
    #[error("leaf issuance rate exceeded")]
    RateLimited,
}

/// Key algorithm of a new CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CaAlgorithm {
    /// ECDSA P-256 (default: small, fast to sign with).
    EcdsaP256,
    /// RSA 3072, for clients that cannot verify ECDSA chains.
    Rsa3072,
}

/// Options of `ca init`.
#[derive(Debug, Clone)]
pub struct CaInit {
    /// Subject common name.
    pub name: String,
    /// Key algorithm.
    pub algorithm: CaAlgorithm,
    /// Validity.
    pub validity: Duration,
    /// Permitted DNS subtrees (name constraints); empty = unconstrained.
    pub permitted: Vec<String>,
}

/// Writes `ca.crt` (0644) and `ca.key` (0600) into `dir`, refusing to overwrite either.
pub fn init(dir: &Path, opts: &CaInit) -> Result<(), CaError> {
    let key = match opts.algorithm {
        CaAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        CaAlgorithm::Rsa3072 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)
        }
    }
    .map_err(|e| CaError::Invalid(format!("key generation failed: {e}")))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, opts.name.clone());
    dn.push(DnType::OrganizationName, "Centaur gateway");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + opts.validity;
    if !opts.permitted.is_empty() {
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: opts
                .permitted
                .iter()
                .map(|d| GeneralSubtree::DnsName(d.clone()))
                .collect(),
            excluded_subtrees: Vec::new(),
        });
    }
    let cert = params
        .self_signed(&key)
        .map_err(|e| CaError::Invalid(format!("self-signing failed: {e}")))?;
    std::fs::create_dir_all(dir).map_err(|source| io_err(dir, source))?;
    write_new(&dir.join("ca.crt"), cert.pem().as_bytes(), 0o644)?;
    write_new(&dir.join("ca.key"), key.serialize_pem().as_bytes(), 0o600)?;
    Ok(())
}

fn io_err(path: &Path, source: std::io::Error) -> CaError {
    CaError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| io_err(path, source))?;
    f.write_all(data).map_err(|source| io_err(path, source))
}

/// A loaded CA, able to issue leaf certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    validity: Duration,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authority { .. }")
    }
}

impl Authority {
    /// Loads a CA certificate and key (PKCS#8, SEC1 or PKCS#1 PEM).
    pub fn load(cert_path: &Path, key_path: &Path, validity: Duration) -> Result<Self, CaError> {
        let cert_pem =
            std::fs::read_to_string(cert_path).map_err(|source| io_err(cert_path, source))?;
        let key_pem =
            std::fs::read_to_string(key_path).map_err(|source| io_err(key_path, source))?;
        Self::from_pem(&cert_pem, &key_pem, validity)
    }

    /// Builds the CA from PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &str, validity: Duration) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| CaError::Invalid(format!("CA key is not a supported PEM key: {e}")))?;
        let ca_der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| {
                CaError::Invalid("CA certificate file holds no PEM certificate".into())
            })?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| CaError::Invalid(format!("CA certificate is invalid: {e}")))?;
        if !issuer.key_usages().is_empty()
            && !issuer.key_usages().contains(&KeyUsagePurpose::KeyCertSign)
        {
            return Err(CaError::Invalid(
                "CA certificate lacks the keyCertSign key usage".into(),
            ));
        }
        Ok(Authority {
            issuer,
            ca_der,
            validity,
        })
    }

    /// The CA certificate.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// Issues a leaf for `name` with a fresh P-256 key (never the CA's key), served with the CA.
    pub fn issue(&self, name: &str) -> Result<CertifiedKey, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Invalid(format!("leaf key generation failed: {e}")))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let san = name
            .try_into()
            .map_err(|_| CaError::Invalid("name is not a valid DNS SAN".into()))?;
        params.subject_alt_names = vec![SanType::DnsName(san)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + self.validity;
        params.serial_number = Some(rand::random::<[u8; 16]>().map(|b| b & 0x7f).to_vec().into());
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| CaError::Invalid(format!("leaf signing failed: {e}")))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = any_supported_type(&der)
            .map_err(|e| CaError::Invalid(format!("leaf key unusable: {e}")))?;
        Ok(CertifiedKey::new(
            vec![cert.der().clone(), self.ca_der.clone()],
            signing,
        ))
    }
}

/// Leaf certificates by host name: bounded in entries, each dropped well before it expires,
/// and issued once per name however many handshakes ask at the same moment.
#[derive(Debug)]
pub struct LeafCache {
    authority: Authority,
    cache: moka::sync::Cache<String, Arc<CertifiedKey>>,
    bucket: std::sync::Mutex<Bucket>,
}

/// A token bucket: `rate` tokens a second, at most `burst` saved.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: std::time::Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl LeafCache {
    /// A cache of at most `capacity` leaves, issuing at most `rate` new ones a second after a
    /// burst of `burst`.
    pub fn new(authority: Authority, capacity: u64, rate: u32, burst: u32) -> Self {
        // Half the validity: a cached leaf always has at least half its life left.
        let ttl = authority.validity / 2;
        LeafCache {
            authority,
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl.max(Duration::from_secs(60)))
                .build(),
            bucket: std::sync::Mutex::new(Bucket {
                tokens: f64::from(burst.max(1)),
                rate: f64::from(rate.max(1)),
                burst: f64::from(burst.max(1)),
                at: std::time::Instant::now(),
            }),
        }
    }

    /// The leaf for `name` (a normalised DNS name), issuing it on first use if the issuance
    /// rate allows.
    pub fn get(&self, name: &str) -> Result<Arc<CertifiedKey>, Arc<CaError>> {
        if let Some(leaf) = self.cache.get(name) {
            return Ok(leaf);
        }
        self.cache.try_get_with_by_ref(name, || {
            let allowed = self.bucket.lock().map(|mut b| b.take()).unwrap_or(false);
            if !allowed {
                return Err(CaError::RateLimited);
            }
            self.authority.issue(name).map(Arc::new)
        })
    }

    /// Leaves currently cached.
    pub fn len(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The CA certificate.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        self.authority.ca_der()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_ca(alg: CaAlgorithm) -> (tempfile::TempDir, Authority) {
        let dir = tempfile::tempdir().unwrap();
        let opts = CaInit {
            name: "test CA".into(),
            algorithm: alg,
            validity: Duration::from_secs(86400),
            permitted: vec![],
        };
        init(dir.path(), &opts).unwrap();
        let a = Authority::load(
            &dir.path().join("ca.crt"),
            &dir.path().join("ca.key"),
            Duration::from_secs(3600),
        )
        .unwrap();
        (dir, a)
    }

    #[test]
    fn init_refuses_to_overwrite_and_keeps_the_key_private() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, _) = temp_ca(CaAlgorithm::EcdsaP256);
        let opts = CaInit {
            name: "again".into(),
            algorithm: CaAlgorithm::EcdsaP256,
            validity: Duration::from_secs(60),
            permitted: vec![],
        };
        assert!(init(dir.path(), &opts).is_err());
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn leaves_chain_to_the_ca_and_use_their_own_key() {
        for alg in [CaAlgorithm::EcdsaP256, CaAlgorithm::Rsa3072] {
            let (_dir, a) = temp_ca(alg);
            let leaf = a.issue("api.example.com").unwrap();
            assert_eq!(leaf.cert.len(), 2);
            assert_eq!(&leaf.cert[1], a.ca_der());
            let other = a.issue("api.example.com").unwrap();
            assert_ne!(
                leaf.cert[0], other.cert[0],
                "each issuance has its own key and serial"
            );
        }
    }

    #[test]
    fn cache_issues_once_per_name() {
        let (_dir, a) = temp_ca(CaAlgorithm::EcdsaP256);
        let cache = Arc::new(LeafCache::new(a, 10, 20, 100));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = cache.clone();
                std::thread::spawn(move || c.get("x.test").unwrap())
            })
            .collect();
        let leaves: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(leaves.iter().all(|l| Arc::ptr_eq(l, &leaves[0])));
    }

    #[test]
    fn new_names_beyond_the_burst_wait_for_the_rate_and_cached_ones_never_do() {
        let (_dir, a) = temp_ca(CaAlgorithm::EcdsaP256);
        let cache = LeafCache::new(a, 100, 1, 3);
        for n in 0..3 {
            cache.get(&format!("n{n}.test")).unwrap();
        }
        let e = cache.get("n3.test").unwrap_err();
        assert!(matches!(*e, CaError::RateLimited), "{e}");
        assert!(cache.get("n0.test").is_ok(), "a cached name is served");
        std::thread::sleep(Duration::from_millis(1100));
        assert!(cache.get("n3.test").is_ok(), "the rate refills");
    }
}
