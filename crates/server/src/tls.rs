//! TLS for FTPS (RFC 4217): the certificate (from files, or generated once with rcgen and kept
//! in the data directory so clients can pin it), the rustls configuration, and the per-session
//! configuration that makes data-connection session reuse mean "reuse of *this* control
//! connection's session": each control connection gets its own session cache and ticket key,
//! so a data connection can only resume a session that this control connection established.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerSessionMemoryCache;
use rustls::ServerConfig;
use sha2::Digest as _;

/// Errors setting TLS up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Generating the default certificate failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    /// rustls refused the certificate/key pair or the settings.
    #[error("tls configuration: {0}")]
    Config(String),
}

/// Installs the process-wide crypto provider (ring: AES-GCM and ChaCha20 with hardware support).
/// Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The server's crypto: ring's suites with AES-128-GCM preferred over AES-256-GCM. The server
/// chooses (`ignore_client_order`) and clients list AES-256 first, which costs 40 % more
/// rounds per byte and a SHA-384 key schedule that has no SHA extensions on x86; AES-128-GCM is
/// the first choice of TLS 1.3 (RFC 8446 §9.1 makes it the one suite every peer must have).
fn server_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    // Stable: the order among AES-128 suites (and among the rest) is ring's own.
    provider.cipher_suites.sort_by_key(|suite| {
        !matches!(
            suite.suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    provider
}

/// The SHA-256 fingerprint of a DER certificate, as `AB:CD:…` (what FileZilla and browsers show).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = sha2::Sha256::digest(der);
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Where the generated certificate lives in the data directory.
pub fn default_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// Creates a self-signed certificate for `localhost`/`127.0.0.1`/`::1` (and the host name) in the
/// data directory unless one is there already. Returns the paths.
pub fn ensure_generated(data_dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let (cert, key) = default_paths(data_dir);
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let dir = cert.parent().unwrap_or(data_dir);
    let io = |path: &Path, e: std::io::Error| TlsError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() && !names.iter().any(|n| n == host) {
            names.push(host.to_string());
        }
    }
    let generated =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    write_private(&key, generated.key_pair.serialize_pem().as_bytes()).map_err(|e| io(&key, e))?;
    std::fs::write(&cert, generated.cert.pem()).map_err(|e| io(&cert, e))?;
    tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate");
    Ok((cert, key))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// The server's TLS set-up, shared by all sessions.
#[derive(Debug)]
pub struct Tls {
    base: Arc<ServerConfig>,
    fingerprint: String,
    cert_path: PathBuf,
}

impl Tls {
    /// Loads the certificate chain and key (PEM).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Tls, TlsError> {
        install_crypto_provider();
        let file_err = |path: &Path, e: &dyn std::fmt::Display| TlsError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
            .map_err(|e| file_err(cert_path, &e))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_err(cert_path, &e))?;
        let first = chain
            .first()
            .ok_or_else(|| file_err(cert_path, &"no certificate in the file"))?;
        let fingerprint = fingerprint(first.as_ref());
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| file_err(key_path, &e))?;
        let mut config = ServerConfig::builder_with_provider(Arc::new(server_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        // Long sessions open hundreds of data connections, each resuming the control session:
        // hand out enough TLS 1.3 tickets that a client never runs dry.
        config.send_tls13_tickets = 8;
        config.ignore_client_order = true;
        Ok(Tls {
            base: Arc::new(config),
            fingerprint,
            cert_path: cert_path.to_path_buf(),
        })
    }

    /// The shared configuration (chat over TLS uses it as it is).
    pub fn base(&self) -> Arc<ServerConfig> {
        self.base.clone()
    }

    /// The certificate's SHA-256 fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The certificate file in use.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Configurations for one control connection and its data connections, sharing their own
    /// session cache and ticket key, so data connections can only resume this connection's
    /// sessions.
    pub fn session_config(&self) -> Result<SessionTls, TlsError> {
        let mut control = (*self.base).clone();
        control.session_storage = ServerSessionMemoryCache::new(64);
        control.ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError::Config(e.to_string()))?;
        // Clients that use each TLS 1.3 ticket once (rustls, RFC 8446's advice) need a fresh
        // ticket per data connection. Downloads and listings hand one out (the client reads the
        // connection to its end anyway). Uploads must not: an uploading client never reads its
        // data connection, and unread ticket bytes turn its close into a TCP RST that can destroy
        // the end of the upload.
        let mut download = control.clone();
        download.send_tls13_tickets = 1;
        let mut upload = control.clone();
        upload.send_tls13_tickets = 0;
        Ok(SessionTls {
            control: Arc::new(control),
            download: Arc::new(download),
            upload: Arc::new(upload),
        })
    }
}

/// The TLS configurations of one session (see [`Tls::session_config`]).
#[derive(Debug, Clone)]
pub struct SessionTls {
    /// For the control connection (issues the session tickets).
    pub control: Arc<ServerConfig>,
    /// For its protected downloads and listings (replenishes one TLS 1.3 ticket each).
    pub download: Arc<ServerConfig>,
    /// For its protected uploads (no tickets: see [`Tls::session_config`]).
    pub upload: Arc<ServerConfig>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ensure_generated(dir.path()).unwrap();
        let first = Tls::load(&cert, &key).unwrap().fingerprint().to_string();
        ensure_generated(dir.path()).unwrap();
        let second = Tls::load(&cert, &key).unwrap().fingerprint().to_string();
        assert_eq!(first, second);
        assert_eq!(first.len(), 32 * 3 - 1);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_missing_key_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = ensure_generated(dir.path()).unwrap();
        let err = Tls::load(&cert, &dir.path().join("nope.pem"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.pem"), "{err}");
    }

    #[test]
    fn the_server_chooses_aes_128_gcm_over_a_clients_aes_256_first_order() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ensure_generated(dir.path()).unwrap();
        let tls = Tls::load(&cert, &key).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&cert).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            // ring's own order, as every rustls client sends it: AES-256 first.
            let client = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
            let mut c =
                rustls::ClientConnection::new(Arc::new(client), "localhost".try_into().unwrap())
                    .unwrap();
            let mut s = rustls::ServerConnection::new(tls.base()).unwrap();
            // Shuttle the handshake between the two in memory.
            for _ in 0..10 {
                let mut wire = Vec::new();
                c.write_tls(&mut wire).unwrap();
                s.read_tls(&mut wire.as_slice()).unwrap();
                s.process_new_packets().unwrap();
                let mut back = Vec::new();
                s.write_tls(&mut back).unwrap();
                c.read_tls(&mut back.as_slice()).unwrap();
                c.process_new_packets().unwrap();
                if !c.is_handshaking() && !s.is_handshaking() {
                    break;
                }
            }
            let suite = s.negotiated_cipher_suite().unwrap().suite();
            assert!(
                matches!(
                    suite,
                    rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                        | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                ),
                "{version:?}: {suite:?}"
            );
        }
    }
}
