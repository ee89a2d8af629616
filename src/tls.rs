//! TLS configuration for SIP over TLS (RFC 3261 §26.2, `sips:` and `transport=tls`): turns the
//! operator's settings ([`TlsSettings`]) into the rustls configurations every TLS connection of
//! this process shares ([`Tls`]: one `ServerConfig` for connections we accept, one
//! `ClientConfig` for those we open).
//!
//! What it does at load, so that a bad file is a start-up error and not a failed handshake later:
//! reads the certificate chain, the private key and the CA list (PEM), checks that the key
//! belongs to the certificate, and builds the verifiers. Without a configured certificate it
//! makes a self-signed one (see [`Tls::load`]), so that a test bed or a first start works with no
//! PKI at all.
//!
//! What it does not do: sockets, connection state and framing (the stream transport drives
//! `rustls::ServerConnection`/`ClientConnection` built from these configs), parsing the config
//! file (the caller fills [`TlsSettings`]), per-domain certificates (one identity for the whole
//! server), CRLs and OCSP, and logging (it returns what the caller should say, e.g.
//! [`Tls::self_signed`]).
//!
//! The cryptography is rustls on ring, chosen over aws-lc-rs because ring builds with only a C
//! compiler (no cmake, no Go) and cross-compiles for the ARM boards. Every config is built with
//! that provider explicitly (`builder_with_provider`), never through rustls' process-wide
//! default, so that another crate enabling a second provider cannot make the choice ambiguous.
//!
//! Key types: [`TlsSettings`], [`TlsMethod`], [`Tls`], [`TlsError`], [`server_name`] (the name
//! an outgoing connection verifies), [`negotiated`] (what a connection agreed on, for listings).

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::version::{TLS12, TLS13};
use rustls::{
    ClientConfig, CommonState, DigitallySignedStruct, HandshakeKind, ProtocolVersion,
    RootCertStore, ServerConfig, SignatureScheme, SupportedProtocolVersion,
};
use thiserror::Error;

/// The self-signed certificate's file name in [`TlsSettings::data_dir`].
pub const SELF_SIGNED_CERT: &str = "ser-selfsigned.crt";
/// The self-signed certificate's private key in [`TlsSettings::data_dir`] (mode 0600).
pub const SELF_SIGNED_KEY: &str = "ser-selfsigned.key";

/// How many TLS 1.2 sessions (by session id) the server remembers for resumption; a full cache
/// evicts the oldest. An entry holds the session's secrets (and the client's certificate chain
/// when one was presented). TLS 1.3, and TLS 1.2 clients that take tickets, resume statelessly
/// and use no entry.
const SERVER_SESSION_CACHE: usize = 4096;

/// The protocol versions offered, in both directions. Only TLS 1.2 and 1.3: rustls implements
/// nothing older, and RFC 8996 deprecates TLS 1.0 and 1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMethod {
    /// TLS 1.2 and 1.3, the highest both sides have (`TLSv1.2+`, `any`).
    #[default]
    Any,
    /// TLS 1.2 only (`TLSv1.2`, `TLSv1_2`).
    Tls12,
    /// TLS 1.3 only (`TLSv1.3`, `TLSv1_3`, `TLSv1.3+`).
    Tls13,
}

impl TlsMethod {
    /// The spelling [`FromStr`] reads back.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMethod::Any => "TLSv1.2+",
            TlsMethod::Tls12 => "TLSv1.2",
            TlsMethod::Tls13 => "TLSv1.3",
        }
    }

    fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        static ANY: [&SupportedProtocolVersion; 2] = [&TLS13, &TLS12];
        static ONLY_12: [&SupportedProtocolVersion; 1] = [&TLS12];
        static ONLY_13: [&SupportedProtocolVersion; 1] = [&TLS13];
        match self {
            TlsMethod::Any => &ANY,
            TlsMethod::Tls12 => &ONLY_12,
            TlsMethod::Tls13 => &ONLY_13,
        }
    }
}

impl fmt::Display for TlsMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TlsMethod {
    type Err = TlsError;

    /// Case-insensitive; `_` reads as `.` so SER's and Kamailio's `TLSv1_2` spellings work.
    /// SSLv23 and everything below TLS 1.2 are refused rather than quietly upgraded: a config
    /// that asked for them was written for a peer that may not speak 1.2.
    fn from_str(s: &str) -> Result<TlsMethod, TlsError> {
        let norm = s.trim().to_ascii_lowercase().replace('_', ".");
        match norm.as_str() {
            "any" | "tlsv1.2+" => Ok(TlsMethod::Any),
            "tlsv1.2" => Ok(TlsMethod::Tls12),
            "tlsv1.3" | "tlsv1.3+" => Ok(TlsMethod::Tls13),
            "sslv2" | "sslv3" | "sslv23" | "tlsv1" | "tlsv1+" | "tlsv1.0" | "tlsv1.0+"
            | "tlsv1.1" | "tlsv1.1+" => Err(TlsError::OldMethod(s.to_string())),
            _ => Err(TlsError::UnknownMethod(s.to_string())),
        }
    }
}

/// The operator's TLS settings, as read from the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Our certificate chain (PEM, end-entity first). With `private_key`, or neither.
    pub certificate: Option<PathBuf>,
    /// The certificate's private key (unencrypted PEM: PKCS#8, PKCS#1 or SEC1).
    pub private_key: Option<PathBuf>,
    /// CA certificates (PEM) that verify the servers we connect to, and the clients that connect
    /// to us when `require_certificate` is set.
    pub ca_list: Option<PathBuf>,
    /// Verify the certificates of servers we connect to (default true).
    pub verify: bool,
    /// Demand a certificate from clients that connect to us and verify it against `ca_list`
    /// (default false).
    pub require_certificate: bool,
    /// The protocol versions offered.
    pub method: TlsMethod,
    /// Where a self-signed certificate is created and kept when no certificate is configured.
    pub data_dir: Option<PathBuf>,
    /// Our host names and addresses, the subject alternative names of a self-signed certificate.
    pub names: Vec<String>,
}

impl Default for TlsSettings {
    fn default() -> TlsSettings {
        TlsSettings {
            certificate: None,
            private_key: None,
            ca_list: None,
            verify: true,
            require_certificate: false,
            method: TlsMethod::Any,
            data_dir: None,
            names: Vec::new(),
        }
    }
}

/// Why the TLS settings cannot be used. Each names the file or setting at fault, for the
/// operator; the caller reports it as a configuration error.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("TLS certificate {} is set without a private key", .0.display())]
    CertificateWithoutKey(PathBuf),
    #[error("TLS private key {} is set without a certificate", .0.display())]
    KeyWithoutCertificate(PathBuf),
    #[error("{}: cannot read: {err}", path.display())]
    Read { path: PathBuf, err: io::Error },
    #[error("{}: bad PEM: {problem}", path.display())]
    Pem { path: PathBuf, problem: String },
    #[error("{}: no certificate in it (PEM \"BEGIN CERTIFICATE\" sections expected)", path.display())]
    NoCertificate { path: PathBuf },
    #[error(
        "{}: no private key in it (an unencrypted PEM PKCS#8, PKCS#1 or SEC1 key expected)",
        path.display()
    )]
    NoPrivateKey { path: PathBuf },
    #[error("{}: private key not usable: {err}", path.display())]
    BadKey { path: PathBuf, err: rustls::Error },
    #[error("{}: certificate not usable: {err}", path.display())]
    BadCertificate { path: PathBuf, err: rustls::Error },
    #[error("{}: private key does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("{}: CA certificate #{index} not usable: {err}", path.display())]
    BadCa {
        path: PathBuf,
        index: usize,
        err: rustls::Error,
    },
    #[error("TLS client certificates are required but no CA list is set to verify them")]
    NoCaListForClients,
    #[error(
        "no TLS CA list is set and no system CA certificates were found{detail}: set a CA list, \
         or turn server verification off (test beds only)"
    )]
    NoSystemRoots { detail: String },
    #[error("{}: the self-signed certificate's key {} is missing (remove the certificate to have a new pair made)", cert.display(), key.display())]
    SelfSignedKeyMissing { cert: PathBuf, key: PathBuf },
    #[error("{}: cannot write: {err}", path.display())]
    Write { path: PathBuf, err: io::Error },
    #[error("self-signed certificate: {0:?} is neither an IP address nor an ASCII host name")]
    BadName(String),
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(rcgen::Error),
    #[error("TLS {what}: {err}")]
    Rustls {
        what: &'static str,
        err: rustls::Error,
    },
    #[error("TLS {what}: {err}")]
    Verifier {
        what: &'static str,
        err: rustls::server::VerifierBuilderError,
    },
    #[error("{0:?} is neither a host name nor an IP address")]
    BadServerName(String),
    #[error("unknown TLS method {0:?} (\"TLSv1.2+\" or \"any\", \"TLSv1.2\", \"TLSv1.3\")")]
    UnknownMethod(String),
    #[error("TLS method {0:?} is not offered: only TLS 1.2 and 1.3 are (\"TLSv1.2+\" for both, \"TLSv1.2\", \"TLSv1.3\")")]
    OldMethod(String),
}

/// The rustls configurations built from [`TlsSettings`], shared by every TLS connection.
#[derive(Debug, Clone)]
pub struct Tls {
    /// For connections we accept: `rustls::ServerConnection::new(tls.server.clone())`.
    pub server: Arc<ServerConfig>,
    /// For connections we open: `rustls::ClientConnection::new(tls.client.clone(), name)` with
    /// `name` from [`server_name`].
    pub client: Arc<ClientConfig>,
    /// `Some(path)` when a self-signed certificate was created or reused at this path (the caller
    /// logs it, so the operator knows what peers must trust).
    pub self_signed: Option<PathBuf>,
}

/// Where our certificate came from; it decides whether outgoing connections present it.
enum Origin {
    /// `certificate` and `private_key` from the settings.
    Configured,
    /// The self-signed pair in `data_dir`, created now or before.
    SelfSignedFile(PathBuf),
    /// A self-signed pair made in memory for this process only.
    Ephemeral,
}

impl Tls {
    /// Builds both configurations from `s`, reading every file now.
    ///
    /// Our certificate: `certificate` + `private_key` when set (both or neither). Otherwise a
    /// self-signed one (ECDSA P-256; subject alternative names `s.names`, addresses as IP SANs,
    /// plus "localhost"; usable for server and client authentication):
    /// - with `data_dir`: `ser-selfsigned.crt` and `ser-selfsigned.key` (mode 0600) there, made
    ///   on the first start and reused afterwards, so peers can pin it. It is not remade when
    ///   `names` change: remove both files for that. A certificate whose key is missing is an
    ///   error; a key without its certificate (an interrupted first start) is replaced.
    /// - without `data_dir`: made in memory, new on every start; TLS works but no peer can
    ///   verify it, and `self_signed` is `None`.
    ///
    /// Incoming connections: TLS 1.2 session ids (a bounded memory cache) and stateless tickets
    /// (ring's ticketer, keys rotated every 6 hours, new on each load) allow resumption; no ALPN.
    /// With `require_certificate`, clients must present a certificate that chains to `ca_list`
    /// (an error if `ca_list` is unset); otherwise none is asked for.
    ///
    /// Outgoing connections: with `verify`, the server's certificate must chain to `ca_list` or,
    /// when no `ca_list` is set, to the system's CA store (an error if there is none: a board
    /// without CA certificates must name its CAs). Without `verify`, any certificate is
    /// accepted but the handshake signatures are still checked: for test beds only, as anyone
    /// on the path can then impersonate the server. Sessions are resumed (rustls' default
    /// in-memory cache of 256 sessions). We present our certificate when a server asks for one,
    /// if it is the configured one, or if `require_certificate` is set (a mesh of servers that
    /// demand each other's certificates); a self-signed certificate is otherwise not presented,
    /// since a server that verifies optional client certificates would refuse it where no
    /// certificate at all would pass.
    pub fn load(s: &TlsSettings) -> Result<Tls, TlsError> {
        let provider = Arc::new(provider());
        let versions = s.method.versions();

        let (identity, origin) = identity(s, &provider)?;
        let identity = Arc::new(identity);
        let ca_roots = match &s.ca_list {
            Some(path) => Some(Arc::new(read_roots(path)?)),
            None => None,
        };

        // Server.
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|err| TlsError::Rustls {
                what: "server",
                err,
            })?;
        let builder = if s.require_certificate {
            let roots = ca_roots.clone().ok_or(TlsError::NoCaListForClients)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|err| TlsError::Verifier {
                    what: "client certificate verifier",
                    err,
                })?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut server =
            builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(identity.clone())));
        server.session_storage = ServerSessionMemoryCache::new(SERVER_SESSION_CACHE);
        server.ignore_client_order = true;
        server.ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|err| TlsError::Rustls {
                what: "session tickets",
                err,
            })?;

        // Client.
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|err| TlsError::Rustls {
                what: "client",
                err,
            })?;
        let roots = match (s.verify, ca_roots) {
            (false, _) => None,
            (true, Some(roots)) => Some(roots),
            (true, None) => match system_roots() {
                Ok(r) => Some(Arc::new(r)),
                Err(e) => {
                    // Incoming TLS still works; outgoing connections fail their handshake
                    // with this reason instead of the whole server refusing to start.
                    crate::warn!("TLS: {e}; outgoing TLS connections will fail verification");
                    None
                }
            },
        };
        let builder = if let Some(roots) = roots {
            let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|err| TlsError::Verifier {
                    what: "server certificate verifier",
                    err,
                })?;
            builder.with_webpki_verifier(verifier)
        } else if s.verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert {
                    algorithms: provider.signature_verification_algorithms,
                    accept: false,
                }))
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert {
                    algorithms: provider.signature_verification_algorithms,
                    accept: true,
                }))
        };
        let present = matches!(origin, Origin::Configured) || s.require_certificate;
        let client = if present {
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(identity)))
        } else {
            builder.with_no_client_auth()
        };

        Ok(Tls {
            server: Arc::new(server),
            client: Arc::new(client),
            self_signed: match origin {
                Origin::SelfSignedFile(path) => Some(path),
                Origin::Configured | Origin::Ephemeral => None,
            },
        })
    }
}

/// The name an outgoing connection to `host` sends as SNI and verifies the certificate against:
/// a DNS name, or an IP address (IPv6 with or without brackets, as in a SIP URI), which is
/// matched against the certificate's IP SANs and sends no SNI.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bad = || TlsError::BadServerName(host.to_string());
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip = inner.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        return Ok(ServerName::IpAddress(IpAddr::V6(ip).into()));
    }
    ServerName::try_from(host.to_string()).map_err(|_| bad())
}

/// What a connection negotiated, for an operator's listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// "TLSv1.2" or "TLSv1.3".
    pub version: &'static str,
    /// rustls' name of the cipher suite, e.g. "TLS13_AES_256_GCM_SHA384",
    /// "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".
    pub cipher_suite: &'static str,
    /// The handshake resumed an earlier session.
    pub resumed: bool,
}

impl fmt::Display for Negotiated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.version, self.cipher_suite)?;
        if self.resumed {
            f.write_str(" (resumed)")?;
        }
        Ok(())
    }
}

/// What a `ServerConnection` or `ClientConnection` (both deref to `CommonState`) negotiated;
/// `None` while the handshake is in progress.
pub fn negotiated(state: &CommonState) -> Option<Negotiated> {
    let version = match state.protocol_version()? {
        ProtocolVersion::TLSv1_2 => "TLSv1.2",
        ProtocolVersion::TLSv1_3 => "TLSv1.3",
        other => other.as_str().unwrap_or("unknown"),
    };
    let suite = state.negotiated_cipher_suite()?.suite();
    Some(Negotiated {
        version,
        cipher_suite: suite.as_str().unwrap_or("unknown"),
        resumed: state.handshake_kind() == Some(HandshakeKind::Resumed),
    })
}

/// rustls' ring provider with its defaults: AES-GCM and ChaCha20-Poly1305 suites (TLS 1.2 with
/// ECDHE, ECDSA or RSA certificates), key exchange over P-384, X25519 and P-256.
///
/// rustls 0.23.48 deprecated it because ring has no post-quantum key exchange (X25519MLKEM768,
/// which only the aws-lc-rs provider offers). We keep ring on purpose for the boards (see the
/// module doc); moving to aws-lc-rs is this function, the ticketer in [`Tls::load`] and the
/// Cargo features.
///
/// The SHA-384 suites come last: their SHA-512 rounds run in software (no CPU has SHA-512
/// instructions to speak of), SHA-256 on the CPU's SHA extensions; every handshake, resumed
/// ones included, hashes its transcript and keys with the suite's hash. All the suites stay
/// offered; servers prefer this order (`ignore_client_order`).
#[allow(deprecated)]
fn provider() -> CryptoProvider {
    use rustls::CipherSuite as C;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|s| {
        matches!(
            s.suite(),
            C::TLS13_AES_256_GCM_SHA384
                | C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                | C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
        )
    });
    p
}

/// Our certificate and key, checked to belong together, and where they came from.
fn identity(
    s: &TlsSettings,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, Origin), TlsError> {
    match (&s.certificate, &s.private_key) {
        (Some(cert), Some(key)) => Ok((certified_key(cert, key, provider)?, Origin::Configured)),
        (Some(cert), None) => Err(TlsError::CertificateWithoutKey(cert.clone())),
        (None, Some(key)) => Err(TlsError::KeyWithoutCertificate(key.clone())),
        (None, None) => match &s.data_dir {
            Some(dir) => {
                let cert = dir.join(SELF_SIGNED_CERT);
                let key = dir.join(SELF_SIGNED_KEY);
                // Two servers starting at once on one data_dir must not each write half a
                // pair: the check, the making and the reading happen under a lock.
                let _lock = lock_file(&dir.join("ser-selfsigned.lock"))?;
                if !cert.exists() {
                    let (cert_pem, key_pem) = generate(&s.names)?;
                    write_pair(&cert, cert_pem.as_bytes(), &key, key_pem.as_bytes())?;
                } else if !key.exists() {
                    return Err(TlsError::SelfSignedKeyMissing { cert, key });
                }
                Ok((
                    certified_key(&cert, &key, provider)?,
                    Origin::SelfSignedFile(cert),
                ))
            }
            None => {
                let (cert_pem, key_pem) = generate(&s.names)?;
                let memory = Path::new("(self-signed, in memory)");
                let certs = parse_certs(memory, cert_pem.as_bytes())?;
                let key = parse_key(memory, key_pem.as_bytes())?;
                Ok((
                    check_pair(certs, key, memory, memory, provider)?,
                    Origin::Ephemeral,
                ))
            }
        },
    }
}

fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let certs = parse_certs(cert, &read(cert)?)?;
    let der = parse_key(key, &read(key)?)?;
    check_pair(certs, der, cert, key, provider)
}

/// Loads the key with the provider (so a key type ring cannot sign with fails here) and checks
/// it matches the end-entity certificate; done here rather than by rustls' `with_single_cert` so
/// that the error names the files.
fn check_pair(
    certs: Vec<CertificateDer<'static>>,
    der: PrivateKeyDer<'static>,
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|err| TlsError::BadKey {
            path: key.to_path_buf(),
            err,
        })?;
    let pair = CertifiedKey::new(certs, signing);
    match pair.keys_match() {
        // Unknown: the signing key cannot tell its public key; the handshake will show.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(pair)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            key: key.to_path_buf(),
            cert: cert.to_path_buf(),
        }),
        Err(err) => Err(TlsError::BadCertificate {
            path: cert.to_path_buf(),
            err,
        }),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|err| TlsError::Read {
        path: path.to_path_buf(),
        err,
    })
}

fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(path, &err))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|err| match err {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_path_buf(),
        },
        err => pem_error(path, &err),
    })
}

/// pem::Error's own Display prints the lines at fault as byte arrays.
fn pem_error(path: &Path, err: &pem::Error) -> TlsError {
    let problem = match err {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!(
                "no \"-----END {}-----\" line",
                String::from_utf8_lossy(end_marker)
            )
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed line {:?}", String::from_utf8_lossy(line))
        }
        other => other.to_string(),
    };
    TlsError::Pem {
        path: path.to_path_buf(),
        problem,
    }
}

/// The CA list, strictly: a certificate in it that cannot be a trust anchor is an error, not
/// silently skipped, so the operator learns at start why a peer would not verify.
fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in parse_certs(path, &read(path)?)?.into_iter().enumerate() {
        roots.add(cert).map_err(|err| TlsError::BadCa {
            path: path.to_path_buf(),
            index: i + 1,
            err,
        })?;
    }
    Ok(roots)
}

/// The system's CA store (SSL_CERT_FILE/SSL_CERT_DIR, else the distribution's bundle). System
/// stores carry oddities, so unusable entries are skipped; an empty result is an error.
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let detail = match found.errors.first() {
            Some(e) => format!(" ({e})"),
            None => String::new(),
        };
        return Err(TlsError::NoSystemRoots { detail });
    }
    Ok(roots)
}

/// A self-signed certificate and its key, both PEM.
fn generate(names: &[String]) -> Result<(String, String), TlsError> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};

    let mut sans: Vec<SanType> = Vec::new();
    let mut common_name: Option<&str> = None;
    for name in names.iter().map(String::as_str).chain(["localhost"]) {
        let bare = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        let san = match bare.parse::<IpAddr>() {
            // A wildcard listen address names no host: nothing could verify it.
            Ok(ip) if ip.is_unspecified() => continue,
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                let dns = bare
                    .to_ascii_lowercase()
                    .try_into()
                    .map_err(|_| TlsError::BadName(name.to_string()))?;
                common_name.get_or_insert(bare);
                SanType::DnsName(dns)
            }
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }

    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name.unwrap_or("localhost"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "ser self-signed");
    let key = KeyPair::generate().map_err(TlsError::Generate)?;
    // Every ser's self-signed certificate would otherwise have the same subject (and issuer):
    // verifiers pick trust anchors by name, so a peer trusting another ser's certificate would
    // report a bad signature instead of an unknown issuer. The tail of the public key tells
    // them apart.
    let raw = key.public_key_raw();
    let tag: String = raw[raw.len().saturating_sub(6)..]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, tag);
    // A SIP server is a TLS client too (it opens connections to other servers), and peers that
    // demand client certificates check this extension.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.self_signed(&key).map_err(TlsError::Generate)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes the pair so that a crash leaves no certificate without its key: each file goes to a
/// temporary name first and is renamed into place, the key before the certificate.
fn write_pair(cert: &Path, cert_pem: &[u8], key: &Path, key_pem: &[u8]) -> Result<(), TlsError> {
    if let Some(dir) = cert.parent() {
        fs::create_dir_all(dir).map_err(|err| TlsError::Write {
            path: dir.to_path_buf(),
            err,
        })?;
    }
    write_atomic(key, key_pem, true)?;
    write_atomic(cert, cert_pem, false)
}

/// An exclusive `flock` on `path` (created if missing), held until the file is dropped.
fn lock_file(path: &Path) -> Result<fs::File, TlsError> {
    let fail = |err| TlsError::Write {
        path: path.to_path_buf(),
        err,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(fail)?;
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(fail)?;
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock on a descriptor this function owns; it blocks only while another
        // server makes the certificate (milliseconds).
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(fail(io::Error::last_os_error()));
        }
    }
    Ok(file)
}

fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let fail = |err| TlsError::Write {
        path: path.to_path_buf(),
        err,
    };
    // create_new after removing a leftover: an existing file would keep its old mode.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    drop(file);
    fs::rename(&tmp, path).map_err(fail)
}

/// Accepts any server certificate (`verify` off), for test beds only: anyone on the path can
/// then impersonate the server. The handshake signatures are still checked with the provider's
/// algorithms, so the peer must at least hold the key of the certificate it sent.
#[derive(Debug)]
struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
    /// False: verification was asked for but nothing can verify (no CA list, no system
    /// store): every server certificate is refused, with that reason.
    accept: bool,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.accept {
            return Err(rustls::Error::General(
                "no tls_ca_list and no system CA certificates to verify the server against".into(),
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
