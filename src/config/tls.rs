//! TLS material from the config: PEM files read and checked (parse, key matches cert)
//! into ready rustls configs, so `check` catches what a handshake would. Listener
//! configs pick a certificate by SNI; site configs verify backends and may present a
//! client certificate. Crypto provider: ring (see docs/ARCHITECTURE.md).

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::file::{ListenerTlsFile, SiteTlsFile};
use super::pinned::PinnedOrWebPki;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A listener's TLS settings, ready for handshakes.
#[derive(Clone)]
pub struct ListenerTls {
    pub config: Arc<ServerConfig>,
}

impl fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ListenerTls")
    }
}

/// How a site's backends are reached over TLS.
#[derive(Clone)]
pub struct SiteTls {
    pub client: Arc<ClientConfig>,
    /// SNI and verified name; `None` = the backend's host.
    pub server_name: Option<String>,
    /// HTTP/2 to the backends (ALPN `h2`) instead of HTTP/1.1.
    pub http2: bool,
    /// Changes when any setting or file content changes; equal = reuse the pool.
    pub fingerprint: u64,
}

/// Equal when every setting and file content is (the fingerprint covers them all).
impl PartialEq for SiteTls {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint && self.server_name == other.server_name && self.http2 == other.http2
    }
}

impl Eq for SiteTls {}

impl fmt::Debug for SiteTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SiteTls(server_name: {:?}, http2: {})", self.server_name, self.http2)
    }
}

/// Resolves `name` against the directory of the config file.
fn resolve(base: &Path, name: &str) -> PathBuf {
    let path = Path::new(name);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

fn read(base: &Path, name: &str) -> Result<Vec<u8>, String> {
    let path = resolve(base, name);
    super::read_bounded(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn certs(base: &Path, name: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(base, name)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{name}: not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{name}: no CERTIFICATE block found"));
    }
    Ok(certs)
}

fn key(base: &Path, name: &str) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(base, name)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("{name}: no usable PEM private key: {e}"))
}

/// Loads a cert chain and its key and checks that they belong together.
fn certified_key(base: &Path, cert: &str, key_file: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain = certs(base, cert)?;
    let key = key(base, key_file)?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{key_file}: unsupported private key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|_| format!("{key_file} is not the private key of {cert}"))?;
    Ok(Arc::new(certified))
}

/// Builds a listener's server config; errors are (key suffix, reason).
pub fn listener_tls(file: &ListenerTlsFile, base: &Path) -> Result<ListenerTls, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let default = certified_key(base, &file.cert, &file.key).map_err(|e| problems.push(("tls.cert".to_string(), e)));
    let mut by_name = Vec::new();
    for (i, extra) in file.certificates.iter().enumerate() {
        match certified_key(base, &extra.cert, &extra.key) {
            Ok(k) => by_name.push(k),
            Err(e) => problems.push((format!("tls.certificates[{i}]"), e)),
        }
    }
    let (Ok(default), true) = (default, problems.is_empty()) else {
        return Err(problems);
    };
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| vec![("tls".to_string(), e.to_string())])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { default, by_name }));
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ListenerTls {
        config: Arc::new(config),
    })
}

/// Picks the first extra certificate valid for the client's SNI name, else the default.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n.to_string()).ok())
        else {
            return Some(self.default.clone());
        };
        let matches = |key: &&Arc<CertifiedKey>| {
            key.end_entity_cert()
                .ok()
                .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                .is_some_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
        };
        Some(self.by_name.iter().find(matches).unwrap_or(&self.default).clone())
    }
}

/// Builds a site's client config; errors are (key suffix, reason).
pub fn site_tls(file: &SiteTlsFile, base: &Path) -> Result<SiteTls, Vec<(String, String)>> {
    let mut problems: Vec<(String, String)> = Vec::new();
    let mut fingerprint = DefaultHasher::new();
    let mut roots = RootCertStore::empty();
    let mut pinned = Vec::new();
    match &file.ca {
        Some(ca) => match certs(base, ca) {
            Ok(list) => {
                list.hash(&mut fingerprint);
                pinned.clone_from(&list);
                let (added, _) = roots.add_parsable_certificates(list);
                if added == 0 {
                    problems.push(("tls.ca".into(), format!("{ca}: no usable CA certificate")));
                }
            }
            Err(e) => problems.push(("tls.ca".into(), e)),
        },
        None => {
            let loaded = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                problems.push((
                    "tls.ca".into(),
                    "no ca file given and no system root certificates found (install ca-certificates or set ca)".into(),
                ));
            }
        }
    }
    let http2 = match file.protocol.as_deref() {
        None | Some("http1") => false,
        Some("h2") => true,
        Some(other) => {
            problems.push((
                "tls.protocol".into(),
                format!("\"{other}\" is not a protocol; use \"http1\" or \"h2\""),
            ));
            false
        }
    };
    if let Some(name) = &file.server_name {
        if ServerName::try_from(name.clone()).is_err() {
            problems.push((
                "tls.server_name".into(),
                format!("\"{name}\" is not a valid DNS name or IP address"),
            ));
        }
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| vec![("tls".to_string(), e.to_string())])?;
    let builder = if pinned.is_empty() {
        builder.with_root_certificates(roots)
    } else {
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| vec![("tls.ca".to_string(), e.to_string())])?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedOrWebPki::new(webpki, pinned)))
    };
    let config = match (&file.client_cert, &file.client_key) {
        (None, None) => Some(builder.with_no_client_auth()),
        (Some(cert), Some(key_file)) => match (certs(base, cert), key(base, key_file)) {
            (Ok(chain), Ok(key)) => {
                chain.hash(&mut fingerprint);
                key.secret_der().hash(&mut fingerprint);
                match builder.with_client_auth_cert(chain, key) {
                    Ok(config) => Some(config),
                    Err(e) => {
                        problems.push(("tls.client_key".into(), format!("{key_file} does not fit {cert}: {e}")));
                        None
                    }
                }
            }
            (chain, key) => {
                problems.extend(chain.err().map(|e| ("tls.client_cert".to_string(), e)));
                problems.extend(key.err().map(|e| ("tls.client_key".to_string(), e)));
                None
            }
        },
        _ => {
            problems.push((
                "tls".into(),
                "client_cert and client_key go together; set both or neither".into(),
            ));
            None
        }
    };
    match config {
        Some(client) if problems.is_empty() => {
            (&file.ca, &file.server_name, &file.client_cert, &file.client_key, http2).hash(&mut fingerprint);
            Ok(SiteTls {
                client: Arc::new(client),
                server_name: file.server_name.clone(),
                http2,
                fingerprint: fingerprint.finish(),
            })
        }
        _ => Err(problems),
    }
}
