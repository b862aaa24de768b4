//! One FTP session: the control connection (RFC 959) with explicit (`AUTH TLS`, RFC 4217) or
//! implicit TLS, login, the file commands, passive data connections (EPSV, RFC 2428, falling back
//! to PASV; always to the control connection's peer address), listings, transfers that stream
//! through a digest with a progress callback, and the server's digests (HASH, RANG, X*).
//!
//! Every wait is bounded ([`Timeouts`]), and so is every reply (line length and multi-line size).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::ftp::command::HashAlgo;
use ferry_proto::ftp::reply_parse::{
    parse_epsv, parse_hash_reply, parse_mdtm, parse_number, parse_pasv, parse_pwd, parse_x_hash,
    reply_text, Features, ReplyAssembler,
};
use ferry_proto::ftp::Reply;
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader,
};
use tokio::net::TcpStream;

use crate::digest::{hex_len, Hasher};
use crate::error::{Error, Result};
use crate::listing::{parse_list, parse_mlsd, parse_mlsd_line, Entry, Kind};
use crate::stream::Stream;
use crate::tls::{TlsSetup, Trust};

/// Longest reply line accepted.
pub const MAX_LINE_LEN: usize = 8 * 1024;
/// Largest multi-line reply accepted (bytes).
pub const MAX_REPLY_LEN: usize = 256 * 1024;
/// Largest directory listing accepted (bytes).
pub const MAX_LISTING_LEN: usize = 64 * 1024 * 1024;
/// Transfer buffer size.
const BUF_LEN: usize = 256 * 1024;

/// Limits on every wait.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect and TLS handshake.
    pub connect: Duration,
    /// An ordinary reply.
    pub reply: Duration,
    /// No byte moving on a data connection.
    pub data: Duration,
    /// The final reply of a transfer, and HASH replies (the server may read the whole file).
    pub long_reply: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(15),
            reply: Duration::from_secs(60),
            data: Duration::from_secs(60),
            long_reply: Duration::from_secs(600),
        }
    }
}

/// How the control connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// No TLS at all.
    Plain,
    /// `AUTH TLS` after the greeting; `required: false` goes on in plaintext if the server
    /// refuses it (the caller decides whether a password may follow, see [`Client::is_secure`]).
    Explicit {
        /// Fail if the server refuses `AUTH TLS`.
        required: bool,
    },
    /// TLS from the first byte (`ftps://`).
    Implicit,
}

/// Sees every control line: `true` for sent, `false` for received (passwords masked).
pub type Trace = Arc<dyn Fn(bool, &str) + Send + Sync>;

/// Where and how to connect.
#[derive(Clone)]
pub struct ConnectOptions {
    /// Host name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS mode.
    pub security: Security,
    /// Certificate trust.
    pub trust: Trust,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Optional protocol trace.
    pub trace: Option<Trace>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("trust", &self.trust)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    /// `host:port`, IPv6 in brackets.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// How an upload writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorMode {
    /// `STOR`: create or replace.
    Replace,
    /// `APPE`: append to what is there.
    Append,
    /// `REST n` + `STOR`: write from offset `n`.
    Rest(u64),
}

/// How the server can hash a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashMethod {
    /// `HASH` (with `OPTS HASH` to select the algorithm; ranges with `RANG`).
    Hash(HashAlgo),
    /// `XSHA256`, `XSHA1`, `XMD5`: whole files only.
    X(HashAlgo),
}

impl HashMethod {
    /// The algorithm.
    pub fn algo(self) -> HashAlgo {
        match self {
            HashMethod::Hash(a) | HashMethod::X(a) => a,
        }
    }
}

/// A digest the server computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDigest {
    /// The algorithm.
    pub algo: HashAlgo,
    /// Lower-case hex.
    pub hex: String,
}

/// Usage and quota as the server reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quota {
    /// Bytes used.
    pub used: Option<u64>,
    /// Bytes reserved by uploads in progress.
    pub reserved: Option<u64>,
    /// The byte quota (`None`: none or unknown).
    pub limit: Option<u64>,
    /// Bytes free (the quota's rest, or the disk's).
    pub free: Option<u64>,
    /// Files stored.
    pub files: Option<u64>,
    /// The server's own summary line, if it gave one.
    pub summary: Option<String>,
}

/// A connected (and, after [`Client::login`], logged-in) FTP session.
pub struct Client {
    io: BufReader<Stream>,
    asm: ReplyAssembler,
    peer_ip: IpAddr,
    host_port: String,
    tls: Option<TlsSetup>,
    prot_p: bool,
    features: Features,
    epsv_refused: bool,
    hash_method: Option<Option<HashMethod>>,
    timeouts: Timeouts,
    trace: Option<Trace>,
    new_cert: Option<String>,
    auth_refused: Option<String>,
    broken: bool,
    implicit: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("peer", &self.host_port)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A failed connection attempt; `version` when TLS failed for want of a common protocol version.
#[derive(Debug)]
struct Attempt {
    error: Error,
    version: bool,
}

impl From<Error> for Attempt {
    fn from(error: Error) -> Attempt {
        Attempt {
            error,
            version: false,
        }
    }
}

fn is_prelim(code: u16) -> bool {
    (100..200).contains(&code)
}

fn is_ok(code: u16) -> bool {
    (200..300).contains(&code)
}

/// Refuses arguments that would split a command line (RFC 959 commands end at CRLF).
fn check_arg(arg: &str) -> Result<()> {
    if arg.contains(['\r', '\n', '\0']) {
        return Err(Error::Usage(format!(
            "{arg:?}: a path cannot contain line breaks or NUL"
        )));
    }
    Ok(())
}

/// Resolves `host` and connects to the first address that answers, each step within `limit`.
pub(crate) async fn connect_tcp(host: &str, port: u16, limit: Duration) -> Result<TcpStream> {
    let where_ = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let addrs: Vec<std::net::SocketAddr> =
        match tokio::time::timeout(limit, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => return Err(Error::Connection(format!("cannot resolve {host}: {e}"))),
            Err(_) => {
                return Err(Error::Connection(format!(
                    "cannot resolve {host}: timed out"
                )))
            }
        };
    let mut last = format!("cannot connect to {where_}: no address");
    for addr in addrs {
        match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = format!("cannot connect to {where_}: {e}"),
            Err(_) => last = format!("cannot connect to {where_}: timed out after {limit:?}"),
        }
    }
    Err(Error::Connection(last))
}

impl Client {
    /// Connects, reads the greeting and sets up TLS as `opts.security` asks (TLS 1.2, or 1.3 if
    /// the server has no 1.2; see [`crate::tls`]).
    pub async fn connect(opts: &ConnectOptions) -> Result<Client> {
        match Client::connect_with(opts, false).await {
            Err(Attempt { version: true, .. }) => {
                Client::connect_with(opts, true).await.map_err(|a| a.error)
            }
            other => other.map_err(|a| a.error),
        }
    }

    async fn connect_with(opts: &ConnectOptions, tls13: bool) -> Result<Client, Attempt> {
        let tcp = connect_tcp(&opts.host, opts.port, opts.timeouts.connect).await?;
        let peer_ip = tcp
            .peer_addr()
            .map_err(|e| Error::Connection(format!("{}: {e}", opts.host_port())))?
            .ip();
        let host_port = opts.host_port();
        let mut tls = match opts.security {
            Security::Plain => None,
            _ => Some(TlsSetup::new(&opts.host, &host_port, &opts.trust, tls13)?),
        };
        let mut c = Client {
            io: BufReader::new(Stream::Plain(tcp)),
            asm: ReplyAssembler::new(MAX_REPLY_LEN),
            peer_ip,
            host_port,
            tls: None,
            prot_p: false,
            features: Features::default(),
            epsv_refused: false,
            hash_method: None,
            timeouts: opts.timeouts,
            trace: opts.trace.clone(),
            new_cert: None,
            auth_refused: None,
            broken: false,
            implicit: opts.security == Security::Implicit,
        };
        if opts.security == Security::Implicit {
            if let Some(tls) = tls.take() {
                c.upgrade(tls).await?;
            }
        }
        c.greeting().await?;
        if let Security::Explicit { required } = opts.security {
            let r = c.cmd("AUTH TLS").await?;
            if r.code == 234 {
                if let Some(tls) = tls {
                    c.upgrade(tls).await?;
                }
            } else if required {
                return Err(Error::Tls(format!(
                    "{} refused AUTH TLS: {} {}",
                    c.host_port,
                    r.code,
                    reply_text(&r)
                ))
                .into());
            } else {
                c.auth_refused = Some(format!("{} {}", r.code, reply_text(&r)));
            }
        }
        Ok(c)
    }

    async fn greeting(&mut self) -> Result<()> {
        loop {
            let r = self.reply(self.timeouts.connect).await?;
            match r.code {
                220 => return Ok(()),
                120 => continue,
                _ => {
                    return Err(Error::Connection(format!(
                        "{} is not ready: {} {}",
                        self.host_port,
                        r.code,
                        reply_text(&r)
                    )))
                }
            }
        }
    }

    /// Takes the plain stream out of the reader and runs the TLS handshake on it. Bytes the
    /// server sent after its 234 and before the handshake would be an injection: refused.
    async fn upgrade(&mut self, tls: TlsSetup) -> Result<(), Attempt> {
        if !self.io.buffer().is_empty() {
            self.broken = true;
            return Err(Error::Tls(format!(
                "{} sent data before the TLS handshake; refusing to continue",
                self.host_port
            ))
            .into());
        }
        let old = std::mem::replace(&mut self.io, BufReader::new(Stream::Closed));
        let Stream::Plain(tcp) = old.into_inner() else {
            self.broken = true;
            return Err(Error::Tls("the connection is already protected".into()).into());
        };
        // Broken until the handshake succeeds.
        self.broken = true;
        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
        let hs = connector.connect(tls.server_name.clone(), tcp);
        let tls_stream = match tokio::time::timeout(self.timeouts.connect, hs).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                if let Some(p) = tls.problem() {
                    return Err(Error::Cert(p).into());
                }
                let version = matches!(
                    e.get_ref().and_then(|x| x.downcast_ref::<rustls::Error>()),
                    Some(
                        rustls::Error::AlertReceived(
                            rustls::AlertDescription::ProtocolVersion
                                | rustls::AlertDescription::HandshakeFailure
                        ) | rustls::Error::PeerIncompatible(_)
                    )
                );
                let plain_reply = matches!(
                    e.get_ref().and_then(|x| x.downcast_ref::<rustls::Error>()),
                    Some(rustls::Error::InvalidMessage(_))
                );
                let hint = if plain_reply && self.implicit {
                    " (the server answered in plain text: for a normal FTP port use ftp:// or ftpes://; ftps:// is implicit TLS)"
                } else {
                    ""
                };
                return Err(Attempt {
                    error: Error::Tls(format!(
                        "TLS handshake with {} failed: {e}{hint}",
                        self.host_port
                    )),
                    version,
                });
            }
            Err(_) => {
                return Err(
                    Error::Tls(format!("TLS handshake with {} timed out", self.host_port)).into(),
                );
            }
        };
        self.io = BufReader::new(Stream::Tls(Box::new(tls_stream)));
        self.broken = false;
        self.new_cert = tls.commit()?;
        self.tls = Some(tls);
        Ok(())
    }

    /// The fingerprint of a certificate accepted for the first time and remembered.
    pub fn new_certificate(&self) -> Option<&str> {
        self.new_cert.as_deref()
    }

    /// Whether the control connection is protected by TLS.
    pub fn is_secure(&self) -> bool {
        self.tls.is_some()
    }

    /// The server's answer to `AUTH TLS` when it refused it (and TLS was optional).
    pub fn auth_refused(&self) -> Option<&str> {
        self.auth_refused.as_deref()
    }

    /// The server's address as connected.
    pub fn peer_ip(&self) -> IpAddr {
        self.peer_ip
    }

    /// `host:port`.
    pub fn host_port(&self) -> &str {
        &self.host_port
    }

    /// Whether the control connection is unusable (closed, timed out, or out of step with the
    /// server); a new session is needed.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The FEAT list (read after login).
    pub fn features(&self) -> &Features {
        &self.features
    }

    // ----------------------------------------------------------------- control I/O

    async fn read_line(&mut self) -> Result<String> {
        let mut line: Vec<u8> = Vec::new();
        loop {
            let buf = match self.io.fill_buf().await {
                Ok(b) => b,
                Err(e) => {
                    self.broken = true;
                    return Err(Error::Connection(format!(
                        "control connection to {}: {e}",
                        self.host_port
                    )));
                }
            };
            if buf.is_empty() {
                self.broken = true;
                return Err(Error::Connection(format!(
                    "{} closed the control connection",
                    self.host_port
                )));
            }
            if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                line.extend_from_slice(&buf[..i]);
                self.io.consume(i + 1);
                break;
            }
            let n = buf.len();
            line.extend_from_slice(buf);
            self.io.consume(n);
            if line.len() > MAX_LINE_LEN {
                self.broken = true;
                return Err(Error::Connection(format!(
                    "{} sent a reply line longer than {MAX_LINE_LEN} bytes",
                    self.host_port
                )));
            }
        }
        if line.len() > MAX_LINE_LEN {
            self.broken = true;
            return Err(Error::Connection(format!(
                "{} sent a reply line longer than {MAX_LINE_LEN} bytes",
                self.host_port
            )));
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    async fn read_reply(&mut self) -> Result<Reply> {
        loop {
            let line = self.read_line().await?;
            if let Some(t) = &self.trace {
                t(false, &line);
            }
            match self.asm.push(&line) {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(Error::Connection(format!("{}: {e}", self.host_port)));
                }
            }
        }
    }

    /// Reads one reply within `limit`.
    async fn reply(&mut self, limit: Duration) -> Result<Reply> {
        if self.broken {
            return Err(Error::Connection(format!(
                "the connection to {} is broken",
                self.host_port
            )));
        }
        match tokio::time::timeout(limit, self.read_reply()).await {
            Ok(r) => r,
            Err(_) => {
                self.broken = true;
                Err(Error::Connection(format!(
                    "{} did not reply within {} s",
                    self.host_port,
                    limit.as_secs()
                )))
            }
        }
    }

    async fn send(&mut self, line: &str) -> Result<()> {
        check_arg(line)?;
        if self.broken {
            return Err(Error::Connection(format!(
                "the connection to {} is broken",
                self.host_port
            )));
        }
        if let Some(t) = &self.trace {
            if line.len() >= 5 && line[..5].eq_ignore_ascii_case("PASS ") {
                t(true, "PASS ****");
            } else {
                t(true, line);
            }
        }
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        let w = self.io.get_mut();
        let res = tokio::time::timeout(self.timeouts.reply, async {
            w.write_all(&bytes).await?;
            w.flush().await
        })
        .await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.broken = true;
                Err(Error::Connection(format!(
                    "control connection to {}: {e}",
                    self.host_port
                )))
            }
            Err(_) => {
                self.broken = true;
                Err(Error::Connection(format!(
                    "control connection to {}: send timed out",
                    self.host_port
                )))
            }
        }
    }

    /// Sends a command line and reads its reply (any code).
    pub async fn cmd(&mut self, line: &str) -> Result<Reply> {
        self.send(line).await?;
        self.reply(self.timeouts.reply).await
    }

    /// Sends a command and requires a 2xx reply (or `ok_codes`), else [`Error::Refused`].
    async fn expect(&mut self, line: &str, ok: fn(u16) -> bool) -> Result<Reply> {
        let r = self.cmd(line).await?;
        if ok(r.code) {
            Ok(r)
        } else {
            Err(Error::refused(line, r))
        }
    }

    // ----------------------------------------------------------------- session

    /// Logs in (`USER`/`PASS`), then protects data connections when the control connection is
    /// TLS (`PBSZ 0`, `PROT P`), reads `FEAT`, turns on UTF-8 and binary mode.
    pub async fn login(&mut self, user: &str, password: &str) -> Result<()> {
        check_arg(user)?;
        check_arg(password)?;
        let auth_err = |what: &str, r: &Reply| {
            Error::Auth(format!(
                "login as {user} refused: {what}: {} {}",
                r.code,
                reply_text(r)
            ))
        };
        let r = self.cmd(&format!("USER {user}")).await?;
        match r.code {
            230 => {}
            331 => {
                let r = self.cmd(&format!("PASS {password}")).await?;
                match r.code {
                    230 | 202 => {}
                    421 => return Err(Error::refused("PASS", r)),
                    _ => return Err(auth_err("wrong user name or password", &r)),
                }
            }
            421 => return Err(Error::refused("USER", r)),
            _ => return Err(auth_err("user name", &r)),
        }
        if self.tls.is_some() {
            let _ = self.cmd("PBSZ 0").await?;
            let r = self.cmd("PROT P").await?;
            if !is_ok(r.code) {
                return Err(Error::Tls(format!(
                    "{} refused to protect data connections (PROT P): {} {}",
                    self.host_port,
                    r.code,
                    reply_text(&r)
                )));
            }
            self.prot_p = true;
        }
        let r = self.cmd("FEAT").await?;
        if r.code == 211 {
            self.features = Features::parse(&r);
        }
        if self.features.has("UTF8") {
            let _ = self.cmd("OPTS UTF8 ON").await?;
        }
        self.expect("TYPE I", is_ok).await?;
        Ok(())
    }

    /// Ends the session politely (`QUIT`), ignoring what goes wrong.
    pub async fn quit(mut self) {
        if self.broken {
            return;
        }
        if self.send("QUIT").await.is_ok() {
            let _ = self.reply(Duration::from_secs(5)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.io.get_mut().shutdown()).await;
    }

    /// `PWD`.
    pub async fn pwd(&mut self) -> Result<String> {
        let r = self.expect("PWD", is_ok).await?;
        parse_pwd(&r.text)
            .ok_or_else(|| Error::Connection(format!("unreadable PWD reply: {}", reply_text(&r))))
    }

    /// `CWD path`.
    pub async fn cwd(&mut self, path: &str) -> Result<()> {
        self.expect(&format!("CWD {path}"), is_ok).await.map(drop)
    }

    /// `MKD path`.
    pub async fn mkd(&mut self, path: &str) -> Result<()> {
        self.expect(&format!("MKD {path}"), is_ok).await.map(drop)
    }

    /// `RMD path`.
    pub async fn rmd(&mut self, path: &str) -> Result<()> {
        self.expect(&format!("RMD {path}"), is_ok).await.map(drop)
    }

    /// `DELE path`.
    pub async fn dele(&mut self, path: &str) -> Result<()> {
        self.expect(&format!("DELE {path}"), is_ok).await.map(drop)
    }

    /// `RNFR from` + `RNTO to`.
    pub async fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.expect(&format!("RNFR {from}"), |c| c == 350).await?;
        self.expect(&format!("RNTO {to}"), is_ok).await.map(drop)
    }

    /// `SIZE path` (in binary mode, the exact byte count).
    pub async fn size(&mut self, path: &str) -> Result<u64> {
        let line = format!("SIZE {path}");
        let r = self.expect(&line, |c| c == 213).await?;
        parse_number(&r.text)
            .ok_or_else(|| Error::Connection(format!("unreadable SIZE reply: {}", reply_text(&r))))
    }

    /// `MDTM path`: the modification time, UTC.
    pub async fn mdtm(&mut self, path: &str) -> Result<ferry_proto::ftp::command::Timestamp> {
        let line = format!("MDTM {path}");
        let r = self.expect(&line, |c| c == 213).await?;
        parse_mdtm(&r.text)
            .ok_or_else(|| Error::Connection(format!("unreadable MDTM reply: {}", reply_text(&r))))
    }

    /// What `path` is: `MLST` where offered, else `SIZE` (a file) or `CWD` (a directory).
    /// `None` if it does not exist (or cannot be seen).
    pub async fn stat(&mut self, path: &str) -> Result<Option<Entry>> {
        let base = basename(path).to_string();
        if self.features.has("MLST") {
            let r = self.cmd(&format!("MLST {path}")).await?;
            if is_ok(r.code) {
                if let Some(mut e) = r
                    .lines
                    .iter()
                    .find_map(|l| parse_mlsd_line(l.strip_prefix(' ').unwrap_or(l)))
                {
                    e.name = base;
                    return Ok(Some(e));
                }
            }
            if r.code >= 500 {
                return Ok(None);
            }
            if r.code >= 400 {
                return Err(Error::refused(format!("MLST {path}"), r));
            }
        }
        let r = self.cmd(&format!("SIZE {path}")).await?;
        if r.code == 213 {
            return Ok(Some(Entry {
                name: base,
                kind: Kind::File,
                size: parse_number(&r.text),
                modified: None,
            }));
        }
        let here = self.pwd().await?;
        let r = self.cmd(&format!("CWD {path}")).await?;
        if is_ok(r.code) {
            self.cwd(&here).await?;
            return Ok(Some(Entry {
                name: base,
                kind: Kind::Dir,
                size: None,
                modified: None,
            }));
        }
        Ok(None)
    }

    /// `MKD` for `path` and every missing parent (`mkdir -p`).
    pub async fn mkdirs(&mut self, path: &str) -> Result<()> {
        let absolute = path.starts_with('/');
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for (i, part) in parts.iter().enumerate() {
            if absolute || i > 0 {
                prefix.push('/');
            }
            prefix.push_str(part);
            let r = self.cmd(&format!("MKD {prefix}")).await?;
            if is_ok(r.code) {
                continue;
            }
            match self.stat(&prefix).await? {
                Some(e) if e.kind == Kind::Dir || e.kind == Kind::Link => {}
                _ => return Err(Error::refused(format!("MKD {prefix}"), r)),
            }
        }
        Ok(())
    }

    // ----------------------------------------------------------------- data connections

    async fn open_passive(&mut self) -> Result<TcpStream> {
        let port = loop {
            if !self.epsv_refused {
                let r = self.cmd("EPSV").await?;
                if r.code == 229 {
                    break parse_epsv(&r.text).ok_or_else(|| {
                        Error::Connection(format!("unreadable EPSV reply: {}", reply_text(&r)))
                    })?;
                }
                if r.code >= 500 {
                    self.epsv_refused = true;
                    continue;
                }
                return Err(Error::refused("EPSV", r));
            }
            let r = self.expect("PASV", |c| c == 227).await?;
            // The address in the reply is ignored: servers behind NAT give a private one, and
            // a hostile one could point the client anywhere (RFC 2577's bounce, turned round).
            let (_ip, port) = parse_pasv(&r.text).ok_or_else(|| {
                Error::Connection(format!("unreadable PASV reply: {}", reply_text(&r)))
            })?;
            break port;
        };
        connect_tcp(&self.peer_ip.to_string(), port, self.timeouts.connect).await
    }

    /// Opens a passive data connection, sends `command`, and returns the data stream once the
    /// server has answered 1xx. With `PROT P` the TLS handshake runs while the reply is awaited
    /// (servers differ in which comes first) and resumes the control connection's session.
    async fn start_data(&mut self, command: &str) -> Result<Stream> {
        check_arg(command)?;
        let tcp = self.open_passive().await?;
        let handshake = match (&self.tls, self.prot_p) {
            (Some(tls), true) => {
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                let name = tls.server_name.clone();
                let limit = self.timeouts.connect;
                Some(tokio::spawn(async move {
                    tokio::time::timeout(limit, connector.connect(name, tcp)).await
                }))
            }
            _ => {
                // Plain data connection: keep the socket.
                let r = self.cmd(command).await?;
                if !is_prelim(r.code) {
                    return Err(Error::refused(command, r));
                }
                return Ok(Stream::Plain(tcp));
            }
        };
        let Some(handshake) = handshake else {
            return Err(Error::Tls("no TLS configuration".into()));
        };
        let r = match self.cmd(command).await {
            Ok(r) => r,
            Err(e) => {
                handshake.abort();
                return Err(e);
            }
        };
        if !is_prelim(r.code) {
            handshake.abort();
            return Err(Error::refused(command, r));
        }
        let tls = match handshake.await {
            Ok(Ok(Ok(s))) => s,
            Ok(Ok(Err(e))) => {
                let why = self.data_failure_reply().await;
                return Err(Error::Tls(format!(
                    "TLS handshake on the data connection failed: {e}{why}"
                )));
            }
            Ok(Err(_)) => {
                let why = self.data_failure_reply().await;
                return Err(Error::Tls(format!(
                    "TLS handshake on the data connection timed out{why}"
                )));
            }
            Err(e) => return Err(Error::Tls(format!("data connection: {e}"))),
        };
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// After a failed data connection: the server's reply, if it sends one soon, as a suffix.
    async fn data_failure_reply(&mut self) -> String {
        match self.reply(Duration::from_secs(5)).await {
            Ok(r) => format!("; the server said {} {}", r.code, reply_text(&r)),
            Err(_) => String::new(),
        }
    }

    /// The end of a transfer: the final reply must be 2xx.
    async fn finish_data(&mut self, command: &str) -> Result<Reply> {
        let r = self.reply(self.timeouts.long_reply).await?;
        if is_ok(r.code) {
            Ok(r)
        } else {
            Err(Error::refused(command, r))
        }
    }

    /// A data-connection error: the server's reply explains it better when there is one.
    async fn data_error(&mut self, command: &str, e: std::io::Error) -> Error {
        match self.reply(Duration::from_secs(10)).await {
            Ok(r) if !is_ok(r.code) => Error::refused(command, r),
            _ => Error::Connection(format!("{command}: data connection failed: {e}")),
        }
    }

    /// Lists a directory: `MLSD` when the server has MLST, else `LIST`.
    pub async fn list(&mut self, path: &str) -> Result<Vec<Entry>> {
        let mlsd = self.features.has("MLST");
        let verb = if mlsd { "MLSD" } else { "LIST" };
        let command = if path.is_empty() {
            verb.to_string()
        } else {
            format!("{verb} {path}")
        };
        let mut data = self.start_data(&command).await?;
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tokio::time::timeout(self.timeouts.data, data.read(&mut buf)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => {
                    raw.extend_from_slice(&buf[..n]);
                    if raw.len() > MAX_LISTING_LEN {
                        self.broken = true;
                        return Err(Error::Connection(format!(
                            "{command}: listing larger than {MAX_LISTING_LEN} bytes"
                        )));
                    }
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Ok(Err(e)) => return Err(self.data_error(&command, e).await),
                Err(_) => {
                    self.broken = true;
                    return Err(Error::Connection(format!(
                        "{command}: data connection stalled"
                    )));
                }
            }
        }
        close_quietly(data).await;
        self.finish_data(&command).await?;
        let text = String::from_utf8_lossy(&raw);
        Ok(if mlsd {
            parse_mlsd(&text)
        } else {
            parse_list(&text)
        })
    }

    /// Downloads `path` from byte `offset` (`REST`) into `out`, feeding `hasher` and calling
    /// `progress` with the bytes received so far (this transfer's). Returns the byte count.
    pub async fn retr(
        &mut self,
        path: &str,
        offset: u64,
        out: &mut (dyn AsyncWrite + Unpin + Send),
        mut hasher: Option<&mut Hasher>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64> {
        if offset > 0 {
            self.expect(&format!("REST {offset}"), |c| c == 350).await?;
        }
        let command = format!("RETR {path}");
        let mut data = self.start_data(&command).await?;
        let mut buf = vec![0u8; BUF_LEN];
        let mut total = 0u64;
        loop {
            let n = match tokio::time::timeout(self.timeouts.data, data.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                // TLS closed without close_notify: the final reply tells whether it is complete.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                Ok(Err(e)) => return Err(self.data_error(&command, e).await),
                Err(_) => {
                    self.broken = true;
                    return Err(Error::Connection(format!(
                        "{command}: no data for {} s",
                        self.timeouts.data.as_secs()
                    )));
                }
            };
            if n == 0 {
                break;
            }
            if let Some(h) = hasher.as_deref_mut() {
                h.update(&buf[..n]);
            }
            if let Err(e) = out.write_all(&buf[..n]).await {
                // Stop the transfer: the server answers 426 or 451 when the connection closes.
                drop(data);
                let _ = self.reply(Duration::from_secs(10)).await;
                return Err(Error::Local(format!("writing the download of {path}: {e}")));
            }
            total += n as u64;
            progress(total);
        }
        close_quietly(data).await;
        out.flush()
            .await
            .map_err(|e| Error::Local(format!("writing the download of {path}: {e}")))?;
        self.finish_data(&command).await?;
        Ok(total)
    }

    /// Uploads `input` to `path` (`STOR`, `APPE` or `REST`+`STOR`), feeding `hasher` and calling
    /// `progress` with the bytes sent so far. Over TLS the data connection ends with
    /// `close_notify`, which servers such as Ferry require to count an upload as complete.
    pub async fn stor(
        &mut self,
        path: &str,
        mode: StorMode,
        input: &mut (dyn AsyncRead + Unpin + Send),
        mut hasher: Option<&mut Hasher>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64> {
        let command = match mode {
            StorMode::Replace => format!("STOR {path}"),
            StorMode::Append => format!("APPE {path}"),
            StorMode::Rest(n) => {
                self.expect(&format!("REST {n}"), |c| c == 350).await?;
                format!("STOR {path}")
            }
        };
        let mut data = self.start_data(&command).await?;
        let mut buf = vec![0u8; BUF_LEN];
        let mut total = 0u64;
        loop {
            let n = match input.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    drop(data);
                    let _ = self.reply(Duration::from_secs(10)).await;
                    return Err(Error::Local(format!("reading the upload of {path}: {e}")));
                }
            };
            if n == 0 {
                break;
            }
            if let Some(h) = hasher.as_deref_mut() {
                h.update(&buf[..n]);
            }
            match tokio::time::timeout(self.timeouts.data, data.write_all(&buf[..n])).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    drop(data);
                    return Err(self.data_error(&command, e).await);
                }
                Err(_) => {
                    self.broken = true;
                    return Err(Error::Connection(format!(
                        "{command}: the server took no data for {} s",
                        self.timeouts.data.as_secs()
                    )));
                }
            }
            total += n as u64;
            progress(total);
        }
        match tokio::time::timeout(self.timeouts.data, data.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                drop(data);
                return Err(self.data_error(&command, e).await);
            }
            Err(_) => {
                self.broken = true;
                return Err(Error::Connection(format!(
                    "{command}: closing the data connection timed out"
                )));
            }
        }
        drop(data);
        self.finish_data(&command).await?;
        Ok(total)
    }

    // ----------------------------------------------------------------- digests and quota

    /// How this server hashes files: `HASH` with the best algorithm it lists in FEAT (SHA-256
    /// first, selected with `OPTS HASH`), else the first of `XSHA256`, `XSHA1`, `XMD5` it knows
    /// (probed without an argument: 500/502 mean unknown). Cached for the session.
    pub async fn hash_method(&mut self) -> Result<Option<HashMethod>> {
        if let Some(m) = self.hash_method {
            return Ok(m);
        }
        let (algos, selected) = self.features.hash_algos();
        let order = [
            HashAlgo::Sha256,
            HashAlgo::Sha512,
            HashAlgo::Sha1,
            HashAlgo::Md5,
            HashAlgo::Crc32,
        ];
        let mut method = None;
        if let Some(best) = order.into_iter().find(|a| algos.contains(a)) {
            if selected == Some(best) {
                method = Some(HashMethod::Hash(best));
            } else {
                let r = self.cmd(&format!("OPTS HASH {}", best.name())).await?;
                if is_ok(r.code) {
                    method = Some(HashMethod::Hash(best));
                } else if let Some(sel) = selected {
                    method = Some(HashMethod::Hash(sel));
                }
            }
        }
        if method.is_none() {
            for (verb, algo) in [
                ("XSHA256", HashAlgo::Sha256),
                ("XSHA1", HashAlgo::Sha1),
                ("XMD5", HashAlgo::Md5),
            ] {
                let r = self.cmd(verb).await?;
                if !matches!(r.code, 500 | 502 | 504) {
                    method = Some(HashMethod::X(algo));
                    break;
                }
            }
        }
        self.hash_method = Some(method);
        Ok(method)
    }

    /// Whether the server can hash a byte range (`RANG` + `HASH`).
    pub async fn can_hash_ranges(&mut self) -> Result<bool> {
        Ok(
            matches!(self.hash_method().await?, Some(HashMethod::Hash(_)))
                && self.features.has("RANG"),
        )
    }

    /// The server's digest of `path`, or of its bytes `start..=end` (`RANG`). `None` when the
    /// server offers no way to hash (or no ranges, for a range).
    pub async fn remote_digest(
        &mut self,
        path: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Option<RemoteDigest>> {
        let Some(method) = self.hash_method().await? else {
            return Ok(None);
        };
        match method {
            HashMethod::Hash(algo) => {
                if let Some((a, b)) = range {
                    if !self.features.has("RANG") {
                        return Ok(None);
                    }
                    self.expect(&format!("RANG {a} {b}"), |c| c == 350).await?;
                }
                let line = format!("HASH {path}");
                self.send(&line).await?;
                let r = self.reply(self.timeouts.long_reply).await?;
                if r.code != 213 {
                    return Err(Error::refused(line, r));
                }
                let h = parse_hash_reply(&r.text).ok_or_else(|| {
                    Error::Connection(format!("unreadable HASH reply: {}", reply_text(&r)))
                })?;
                if HashAlgo::from_name(&h.algo) != Some(algo) {
                    return Err(Error::Connection(format!(
                        "HASH answered with {} instead of {}",
                        h.algo,
                        algo.name()
                    )));
                }
                if let Some((a, _)) = range {
                    if h.start != a {
                        return Err(Error::Connection(format!(
                            "HASH hashed from byte {} instead of {a}",
                            h.start
                        )));
                    }
                }
                Ok(Some(RemoteDigest { algo, hex: h.hex }))
            }
            HashMethod::X(algo) => {
                if range.is_some() {
                    return Ok(None);
                }
                let verb = match algo {
                    HashAlgo::Sha256 => "XSHA256",
                    HashAlgo::Sha1 => "XSHA1",
                    _ => "XMD5",
                };
                let line = format!("{verb} {path}");
                self.send(&line).await?;
                let r = self.reply(self.timeouts.long_reply).await?;
                if !is_ok(r.code) {
                    return Err(Error::refused(line, r));
                }
                let hex = parse_x_hash(&reply_text(&r), hex_len(algo)).ok_or_else(|| {
                    Error::Connection(format!("unreadable {verb} reply: {}", reply_text(&r)))
                })?;
                Ok(Some(RemoteDigest { algo, hex }))
            }
        }
    }

    /// Usage and quota: `SITE QUOTA` (Ferry, and servers with the same `key: value` lines),
    /// and `AVBL` for the free space.
    pub async fn quota(&mut self) -> Result<Quota> {
        let mut q = Quota::default();
        let r = self.cmd("SITE QUOTA").await?;
        let site_ok = is_ok(r.code);
        if site_ok {
            for line in &r.lines {
                let Some((k, v)) = line.trim().split_once(':') else {
                    continue;
                };
                let n = parse_number(v.trim());
                match k.trim().to_ascii_lowercase().as_str() {
                    "used bytes" => q.used = n,
                    "reserved bytes" => q.reserved = n,
                    "quota bytes" => q.limit = n,
                    "free bytes" => q.free = n,
                    "used files" => q.files = n,
                    _ => {}
                }
            }
            q.summary = r.last.clone().filter(|s| !s.trim().is_empty());
        }
        if q.free.is_none() {
            let a = self.cmd("AVBL").await?;
            if a.code == 213 {
                q.free = parse_number(&a.text);
            } else if !site_ok {
                return Err(Error::refused("SITE QUOTA and AVBL", r));
            }
        }
        Ok(q)
    }
}

/// Ends a data connection cleanly (TLS `close_notify`) without waiting long for the peer.
async fn close_quietly(mut data: Stream) {
    let _ = tokio::time::timeout(Duration::from_secs(2), data.shutdown()).await;
}

/// The last component of a remote path.
pub fn basename(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

/// `dir` joined with `name` (`""` joined with `a` is `a`).
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_helpers() {
        assert_eq!(basename("a/b/c.txt"), "c.txt");
        assert_eq!(basename("/a/dir/"), "dir");
        assert_eq!(basename("x"), "x");
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("d", "a"), "d/a");
    }

    #[test]
    fn line_breaks_are_refused_in_arguments() {
        assert!(check_arg("a\r\nDELE b").is_err());
        assert!(check_arg("a\0").is_err());
        assert!(check_arg("ünïcode name").is_ok());
    }
}
