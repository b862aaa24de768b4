//! TLS for the client: one rustls configuration per control connection, shared by its data
//! connections so they resume its session (servers such as Ferry, vsftpd and ProFTPD require
//! that), and the certificate check.
//!
//! Certificates are checked against the system's roots (`rustls-native-certs`: the same trust
//! store as curl and lftp, including an administrator's own CAs), or only against `--ca-file`.
//! Without a CA file, a certificate no root vouches for falls back to trust on first use: it is
//! accepted if its SHA-256 fingerprint is the one remembered for `host:port` in the known-hosts
//! file, and refused otherwise (the caller asks the user and remembers it, or reports a change).
//! Handshake signatures are always checked with the crypto provider's verify functions.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{CertProblem, Error, Result};
use crate::known_hosts;

/// Installs the process-wide crypto provider (ring). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

static TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// How the server's certificate is trusted.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Trust only the CAs (or self-signed certificates) in this PEM file; no system roots, no
    /// trust on first use.
    pub ca_file: Option<PathBuf>,
    /// The known-hosts file for trust on first use; `None` turns TOFU off.
    pub known_hosts: Option<PathBuf>,
    /// Accept (and remember) a certificate seen for the first time without asking.
    pub accept_new: bool,
}

/// What the certificate check saw during a handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CertSeen {
    /// A root vouched for it.
    Authority,
    /// Its fingerprint is the remembered one.
    Pinned,
    /// New, accepted because `accept_new`: remember it once the handshake succeeds.
    AcceptedNew(String),
    /// New and refused: ask the user.
    Unknown { fingerprint: String, reason: String },
    /// Differs from the remembered fingerprint.
    Changed {
        old: String,
        new: String,
        line: usize,
    },
}

/// The certificate state of one control connection and its data connections.
#[derive(Debug)]
pub(crate) struct TlsSetup {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
    seen: Arc<Mutex<Option<CertSeen>>>,
    host_port: String,
    known_hosts: Option<PathBuf>,
}

fn system_roots() -> &'static Option<Arc<RootCertStore>> {
    static ROOTS: OnceLock<Option<Arc<RootCertStore>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut store = RootCertStore::empty();
        let (_added, _ignored) = store.add_parsable_certificates(found.certs);
        (!store.is_empty()).then(|| Arc::new(store))
    })
}

fn ca_file_roots(path: &std::path::Path) -> Result<Arc<RootCertStore>> {
    let bad = |m: String| Error::Usage(format!("--ca-file {}: {m}", path.display()));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    let mut store = RootCertStore::empty();
    for c in certs {
        store.add(c).map_err(|e| bad(e.to_string()))?;
    }
    Ok(Arc::new(store))
}

impl TlsSetup {
    /// A configuration for one control connection to `host` (`host_port` keys known hosts),
    /// offering TLS 1.2 only, or TLS 1.3 only.
    ///
    /// TLS 1.2 comes first: its sessions can be resumed any number of times, and FTPS servers
    /// that require data connections to resume the control session (Ferry, vsftpd) then accept
    /// every data connection of a long session. A TLS 1.3 ticket can be used only once by rustls,
    /// and such servers hand out only a few, on the control connection: after that many transfers
    /// the data connections could not resume. TLS 1.3 is the fallback for servers without 1.2.
    pub(crate) fn new(host: &str, host_port: &str, trust: &Trust, tls13: bool) -> Result<TlsSetup> {
        let versions = if tls13 { TLS13_ONLY } else { TLS12_ONLY };
        TlsSetup::with_versions(host, host_port, trust, versions)
    }

    /// A configuration offering TLS 1.3 and 1.2, for a connection that needs no session
    /// resumption (the chat).
    pub(crate) fn any_version(host: &str, host_port: &str, trust: &Trust) -> Result<TlsSetup> {
        TlsSetup::with_versions(host, host_port, trust, rustls::DEFAULT_VERSIONS)
    }

    fn with_versions(
        host: &str,
        host_port: &str,
        trust: &Trust,
        versions: &'static [&'static rustls::SupportedProtocolVersion],
    ) -> Result<TlsSetup> {
        install_crypto_provider();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match &trust.ca_file {
            Some(path) => Some(ca_file_roots(path)?),
            None => system_roots().clone(),
        };
        let webpki = match roots {
            Some(roots) => Some(
                WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| Error::Tls(format!("certificate roots: {e}")))?,
            ),
            None => None,
        };
        let tofu = if trust.ca_file.is_some() {
            None
        } else {
            trust.known_hosts.clone()
        };
        let pinned = match &tofu {
            Some(path) => known_hosts::lookup(path, host_port)
                .map_err(|e| Error::Local(format!("cannot read {}: {e}", path.display())))?,
            None => None,
        };
        let seen = Arc::new(Mutex::new(None));
        let verifier = Verifier {
            webpki,
            tofu: tofu.is_some(),
            pinned: Mutex::new(pinned),
            accept_new: trust.accept_new,
            seen: seen.clone(),
            algs: provider.signature_verification_algorithms,
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| Error::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        // Its own store: the tickets of this control connection are the ones its data
        // connections must present (the server keys them per control connection).
        config.resumption = Resumption::in_memory_sessions(64);
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|_| Error::Usage(format!("{host:?} is not a valid TLS server name")))?;
        Ok(TlsSetup {
            config: Arc::new(config),
            server_name,
            seen,
            host_port: host_port.to_string(),
            known_hosts: tofu,
        })
    }

    /// The certificate problem behind a failed handshake, if it was one.
    pub(crate) fn problem(&self) -> Option<CertProblem> {
        let seen = self.seen.lock().ok()?.clone()?;
        let known_hosts = self.known_hosts.clone().unwrap_or_default();
        match seen {
            CertSeen::Unknown {
                fingerprint,
                reason,
            } => Some(CertProblem::Unknown {
                host_port: self.host_port.clone(),
                fingerprint,
                reason,
                known_hosts,
            }),
            CertSeen::Changed { old, new, line } => Some(CertProblem::Changed {
                host_port: self.host_port.clone(),
                old,
                new,
                known_hosts,
                line,
            }),
            _ => None,
        }
    }

    /// After a successful handshake: remembers a newly accepted certificate. Returns its
    /// fingerprint if it was new.
    pub(crate) fn commit(&self) -> Result<Option<String>> {
        let seen = self.seen.lock().ok().and_then(|s| s.clone());
        if let (Some(CertSeen::AcceptedNew(fp)), Some(path)) = (seen, &self.known_hosts) {
            known_hosts::remember(path, &self.host_port, &fp)
                .map_err(|e| Error::Local(format!("cannot write {}: {e}", path.display())))?;
            return Ok(Some(fp));
        }
        Ok(None)
    }
}

#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    tofu: bool,
    pinned: Mutex<Option<known_hosts::KnownHost>>,
    accept_new: bool,
    seen: Arc<Mutex<Option<CertSeen>>>,
    algs: WebPkiSupportedAlgorithms,
}

impl Verifier {
    fn record(&self, s: CertSeen) {
        if let Ok(mut slot) = self.seen.lock() {
            // The first handshake (the control connection's) is the one that counts.
            if slot.is_none() || !matches!(s, CertSeen::Authority | CertSeen::Pinned) {
                *slot = Some(s);
            }
        }
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let authority_error = match &self.webpki {
            Some(v) => {
                match v.verify_server_cert(
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp_response,
                    now,
                ) {
                    Ok(ok) => {
                        self.record(CertSeen::Authority);
                        return Ok(ok);
                    }
                    Err(e) => e,
                }
            }
            None => rustls::Error::General("no trusted certificate authorities".into()),
        };
        if !self.tofu {
            return Err(authority_error);
        }
        let fp = known_hosts::fingerprint(end_entity.as_ref());
        let mut pinned = self
            .pinned
            .lock()
            .map_err(|_| rustls::Error::General("verifier state poisoned".into()))?;
        match pinned.as_ref() {
            Some(known) if known.fingerprint == fp => {
                self.record(CertSeen::Pinned);
                Ok(ServerCertVerified::assertion())
            }
            Some(known) => {
                self.record(CertSeen::Changed {
                    old: known.fingerprint.clone(),
                    new: fp,
                    line: known.line,
                });
                Err(rustls::Error::General(
                    "the server's certificate has changed".into(),
                ))
            }
            None if self.accept_new => {
                *pinned = Some(known_hosts::KnownHost {
                    fingerprint: fp.clone(),
                    line: 0,
                });
                self.record(CertSeen::AcceptedNew(fp));
                Ok(ServerCertVerified::assertion())
            }
            None => {
                self.record(CertSeen::Unknown {
                    fingerprint: fp,
                    reason: authority_error.to_string(),
                });
                Err(authority_error)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
