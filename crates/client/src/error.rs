//! The client's errors, grouped by what a user can do about them (see [`ErrorKind`]): fix the
//! command line, the network or TLS set-up, the credentials, the request, or the data.

use std::path::PathBuf;

use ferry_proto::ftp::reply_parse::reply_text;
use ferry_proto::ftp::Reply;

/// Everything that can go wrong in the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong (a bad URL, a path with a line break, a missing argument).
    #[error("{0}")]
    Usage(String),
    /// The server cannot be reached, the connection broke, timed out, or the server spoke
    /// something that is not FTP.
    #[error("{0}")]
    Connection(String),
    /// TLS could not be set up, or the session would not be protected as required.
    #[error("{0}")]
    Tls(String),
    /// The server's certificate is not trusted (first contact) or has changed.
    #[error(transparent)]
    Cert(#[from] CertProblem),
    /// The server refused the user name or password.
    #[error("{0}")]
    Auth(String),
    /// The server refused a request; `reply` is its answer.
    #[error("{context}: {} {}", reply.code, reply_text(reply))]
    Refused {
        /// What was asked (`RETR /a.txt`).
        context: String,
        /// The server's reply.
        reply: Reply,
    },
    /// A transferred file does not match the server's digest.
    #[error("{0}")]
    Verify(String),
    /// A local file could not be read or written.
    #[error("{0}")]
    Local(String),
}

/// The classes of [`Error`]; the `ferry` binary maps each to an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input (exit 2).
    Usage,
    /// Network, protocol, TLS or certificate trouble (exit 3).
    Connection,
    /// Login refused (exit 4).
    Auth,
    /// The server refused a request (exit 5).
    Refused,
    /// Integrity check failed (exit 6).
    Verify,
    /// Local file system trouble (exit 1).
    Local,
}

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Usage(_) => ErrorKind::Usage,
            Error::Connection(_) | Error::Tls(_) | Error::Cert(_) => ErrorKind::Connection,
            Error::Auth(_) => ErrorKind::Auth,
            Error::Refused { .. } => ErrorKind::Refused,
            Error::Verify(_) => ErrorKind::Verify,
            Error::Local(_) => ErrorKind::Local,
        }
    }

    /// The server's reply code of a refusal.
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            Error::Refused { reply, .. } => Some(reply.code),
            _ => None,
        }
    }

    /// A refusal of `context` with `reply`; 421 (the server is closing the connection) is a
    /// connection error instead.
    pub(crate) fn refused(context: impl Into<String>, reply: Reply) -> Error {
        let context = context.into();
        if reply.code == 421 {
            return Error::Connection(format!(
                "{context}: the server closed the connection: 421 {}",
                reply_text(&reply)
            ));
        }
        Error::Refused { context, reply }
    }

    /// A local I/O error about `path`.
    /// A local file-system error about `path`.
    pub fn local(path: &std::path::Path, e: &std::io::Error) -> Error {
        Error::Local(format!("{}: {e}", path.display()))
    }
}

/// A certificate that is not trusted yet, or that differs from the remembered one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CertProblem {
    /// First contact with a server whose certificate no trusted authority signed.
    #[error(
        "the certificate of {host_port} is not signed by a trusted authority ({reason}); \
         its sha256 fingerprint is {fingerprint}; if that is the server's (`ferry serve` prints it), \
         run again with --accept-new-cert to trust it and remember it in {}, or pass --ca-file",
        known_hosts.display()
    )]
    Unknown {
        /// `host:port` as the known-hosts file keys it.
        host_port: String,
        /// SHA-256 fingerprint (`AA:BB:…`).
        fingerprint: String,
        /// Why the system roots did not accept it.
        reason: String,
        /// The known-hosts file.
        known_hosts: PathBuf,
    },
    /// The server shows a different certificate than the one remembered.
    #[error(
        "the certificate of {host_port} has CHANGED: remembered sha256 {old}, now {new}; \
         someone may be intercepting the connection. If the server's certificate was replaced on \
         purpose, delete line {line} ({host_port}) of {} and connect again to accept the new one",
        known_hosts.display()
    )]
    Changed {
        /// `host:port`.
        host_port: String,
        /// The remembered fingerprint.
        old: String,
        /// The fingerprint shown now.
        new: String,
        /// The known-hosts file.
        known_hosts: PathBuf,
        /// Line number of the remembered entry (1-based).
        line: usize,
    },
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
