//! Ferry's FTP and chat client library, on which the `ferry get/put/ls/…` commands are built: an async
//! (tokio) FTP/FTPS client that works with any standard server, with the extensions Ferry offers
//! used where a server has them (HASH, RANG, MLSD, AVBL, SITE QUOTA).
//!
//! - [`Chat`]: an IRC client for the chat room (SASL PLAIN or PASS login, rooms and members);
//! - [`Client`]: one FTP session (connect, TLS, login, commands, listings, transfers, digests);
//! - [`FtpUrl`]: `ftp://`, `ftpes://`, `ftps://` URLs; [`netrc`]: credentials;
//! - [`tls`] and [`known_hosts`]: certificates from the system roots, a CA file, or trust on
//!   first use;
//! - [`Error`]: what went wrong, grouped by [`ErrorKind`].

pub mod chat;
pub mod client;
pub mod digest;
pub mod error;
pub mod known_hosts;
pub mod listing;
pub mod netrc;
mod stream;
pub mod tls;
pub mod url;

pub use chat::{Chat, ChatMessage, ChatOptions, ChatTimeouts, ChatUrl, Event as ChatEvent};
pub use client::{
    Client, ConnectOptions, HashMethod, Quota, RemoteDigest, Security, StorMode, Timeouts,
};
pub use digest::Hasher;
pub use error::{CertProblem, Error, ErrorKind, Result};
pub use ferry_proto as proto;
pub use listing::{Entry, Kind};
pub use url::{FtpUrl, Scheme};
