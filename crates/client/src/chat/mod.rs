//! An IRC client for Ferry's chat room (DESIGN §8) and servers like it, for `ferry chat` and
//! the chat inside `ferry shell`. [`Chat::connect`] opens the connection (TLS with the same trust
//! rules as FTPS: system roots, a CA file, or trust on first use) and logs in with SASL PLAIN,
//! or `PASS account:password` where the server offers no SASL; then one task owns the
//! connection: it answers PING, keeps each room's members ([`Rooms`]) and turns lines into
//! [`Event`]s, while the [`Chat`] handle sends it requests. Queues are bounded and every wait has
//! a limit ([`ChatTimeouts`]).

mod rooms;
mod url;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use ferry_proto::irc::{self, Message};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::client::{connect_tcp, Trace};
use crate::error::{Error, Result};
use crate::stream::Stream;
use crate::tls::{TlsSetup, Trust};

pub use rooms::{Rooms, MAX_MEMBERS, MAX_ROOMS};
pub use url::{ChatUrl, IRCS_PORT, IRC_PORT};

/// Longest line read from the server (tags and message); longer lines are skipped.
pub const MAX_IN_LINE: usize = irc::MAX_TAGS + irc::MAX_LINE;
/// Bytes of text per PRIVMSG: longer text is sent as several messages, so that the line the
/// server relays (with the sender's `nick!user@host` in front) stays under 512 bytes.
pub const MAX_TEXT: usize = 350;
/// Events waiting for the application; when it falls behind, the connection task waits (and
/// stops reading the socket) rather than buffering more.
pub const EVENT_QUEUE: usize = 256;
/// Requests waiting for the connection task.
const REQUEST_QUEUE: usize = 64;

/// Limits on every wait of a chat connection.
#[derive(Debug, Clone, Copy)]
pub struct ChatTimeouts {
    /// TCP connect and TLS handshake, each.
    pub connect: Duration,
    /// From the connection to the welcome (001), login included.
    pub register: Duration,
    /// Silence from the server after which the client sends a PING.
    pub ping_after: Duration,
    /// Time for the server to answer that PING (or say anything) before the connection is
    /// given up.
    pub pong: Duration,
    /// Writing one line.
    pub write: Duration,
}

impl Default for ChatTimeouts {
    fn default() -> ChatTimeouts {
        ChatTimeouts {
            connect: Duration::from_secs(15),
            register: Duration::from_secs(30),
            ping_after: Duration::from_secs(120),
            pong: Duration::from_secs(60),
            write: Duration::from_secs(30),
        }
    }
}

/// Where and as whom to connect.
#[derive(Clone)]
pub struct ChatOptions {
    /// Host name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS from the first byte (`ircs://`).
    pub tls: bool,
    /// Certificate trust (with `tls`).
    pub trust: Trust,
    /// The account name (also the nick asked for).
    pub user: String,
    /// The account's password.
    pub password: String,
    /// Send the password without TLS to a host that is not this machine.
    pub allow_plaintext: bool,
    /// Time limits.
    pub timeouts: ChatTimeouts,
    /// Optional protocol trace (`true` for sent lines; passwords masked).
    pub trace: Option<Trace>,
}

impl std::fmt::Debug for ChatOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl ChatOptions {
    /// `host:port`, IPv6 in brackets.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A PRIVMSG or NOTICE that arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// When it arrived.
    pub at: SystemTime,
    /// The sender's nick (or the server's name).
    pub from: String,
    /// The room, or this connection's nick for a private message.
    pub target: String,
    /// The text as sent (see [`plain_text`] before showing it).
    pub text: String,
    /// A NOTICE (the server's announcements are notices).
    pub notice: bool,
    /// Sent to this connection only, not to a room.
    pub private: bool,
    /// A CTCP ACTION (`/me waves`): `text` is what the sender does.
    pub action: bool,
}

/// What happens on a chat connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message or notice.
    Message(ChatMessage),
    /// `nick` joined `room` (`me`: this connection did).
    Joined {
        /// The room.
        room: String,
        /// Who.
        nick: String,
        /// This connection.
        me: bool,
    },
    /// `nick` left `room` (PART, or KICK with the kicker's reason).
    Parted {
        /// The room.
        room: String,
        /// Who.
        nick: String,
        /// This connection.
        me: bool,
        /// The reason given.
        reason: Option<String>,
    },
    /// `nick` quit the chat.
    Quit {
        /// Who.
        nick: String,
        /// The reason given.
        reason: Option<String>,
    },
    /// `old` is now `new`.
    Nick {
        /// The old nick.
        old: String,
        /// The new nick.
        new: String,
    },
    /// The server refused a request (a 4xx/5xx numeric such as 401 "No such nick").
    Refused {
        /// The numeric.
        code: String,
        /// Its text, with the name it is about (`bob: No such nick/channel`).
        text: String,
    },
    /// The connection ended; no more events follow.
    Closed {
        /// Why.
        reason: String,
    },
}

/// What the handle asks the connection task.
enum Request {
    Send(Vec<Message>, oneshot::Sender<()>),
    Members(String, oneshot::Sender<Option<Vec<String>>>),
    Rooms(oneshot::Sender<Vec<String>>),
    Ready(String, oneshot::Sender<bool>),
    Quit(String),
}

/// A logged-in chat connection. Dropping it ends the connection (with QUIT).
#[derive(Debug)]
pub struct Chat {
    tx: mpsc::Sender<Request>,
    nick: String,
    host_port: String,
    secure: bool,
    new_cert: Option<String>,
    closed: Arc<OnceLock<String>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The text of `s` fit for a terminal: IRC formatting codes (bold, colours, …) removed, other
/// control characters shown as `?`, so a message cannot move the cursor or recolour the screen.
pub fn plain_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x02' | '\x0f' | '\x11' | '\x16' | '\x1d' | '\x1e' | '\x1f' => {}
            '\x03' => {
                // ^C[fg[,bg]] with one or two digits each
                let mut fg = false;
                for _ in 0..2 {
                    if chars.peek().is_some_and(char::is_ascii_digit) {
                        chars.next();
                        fg = true;
                    }
                }
                let mut look = chars.clone();
                if fg && look.next() == Some(',') && look.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                    for _ in 0..2 {
                        if chars.peek().is_some_and(char::is_ascii_digit) {
                            chars.next();
                        }
                    }
                }
            }
            '\x04' => {
                // ^D[RRGGBB[,RRGGBB]]
                for _ in 0..6 {
                    if chars.peek().is_some_and(char::is_ascii_hexdigit) {
                        chars.next();
                    }
                }
            }
            '\t' => out.push(' '),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// `text` cut into pieces of at most `max` bytes on character boundaries, one per line of it.
fn split_text(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.split(['\r', '\n']).filter(|l| !l.is_empty()) {
        let mut rest = line;
        while rest.len() > max {
            let mut cut = max;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            // Prefer a space near the end of the piece.
            if let Some(space) = rest[..cut].rfind(' ').filter(|&i| i > max / 2) {
                cut = space + 1;
            }
            out.push(rest[..cut].to_string());
            rest = &rest[cut..];
        }
        if !rest.is_empty() {
            out.push(rest.to_string());
        }
    }
    out
}

/// The SASL PLAIN response (empty authzid), base64, in chunks of 400 as `AUTHENTICATE` sends
/// them; a last chunk of exactly 400 is followed by `+`.
fn sasl_plain_chunks(user: &str, password: &str) -> Vec<String> {
    let mut raw = Vec::with_capacity(user.len() + password.len() + 2);
    raw.push(0);
    raw.extend_from_slice(user.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    let mut chunks: Vec<String> = b64
        .as_bytes()
        .chunks(400)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    if chunks.last().is_none_or(|c| c.len() == 400) {
        chunks.push("+".into());
    }
    chunks
}

/// Whether the password may be sent on a connection: over TLS, to this machine (the address
/// actually connected to decides, not the name), or when the user said so.
fn password_may_go(tls: bool, peer: IpAddr, allow_plaintext: bool) -> bool {
    tls || peer.is_loopback() || allow_plaintext
}

/// The nick in a `nick!user@host` prefix.
fn prefix_nick(prefix: Option<&str>) -> &str {
    let p = prefix.unwrap_or("");
    p.split('!').next().unwrap_or(p)
}

/// Whether a CAP LS list offers SASL with the PLAIN mechanism (`sasl`, or `sasl=…,PLAIN,…`).
fn offers_sasl_plain(caps: &str) -> bool {
    caps.split_whitespace().any(|c| match c.split_once('=') {
        None => c.eq_ignore_ascii_case("sasl"),
        Some((k, v)) => {
            k.eq_ignore_ascii_case("sasl") && v.split(',').any(|m| m.eq_ignore_ascii_case("PLAIN"))
        }
    })
}

/// Lines read from the server: bytes are appended, whole lines taken out; a line longer than
/// [`MAX_IN_LINE`] is skipped up to its end instead of growing the buffer.
#[derive(Debug, Default)]
struct LineBuf {
    buf: Vec<u8>,
    discarding: bool,
}

impl LineBuf {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn next_line(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let line: Vec<u8> = self.buf.drain(..=i).collect();
                    if std::mem::take(&mut self.discarding) || line.len() > MAX_IN_LINE + 1 {
                        continue;
                    }
                    return Some(line);
                }
                None => {
                    if self.buf.len() > MAX_IN_LINE {
                        self.buf.clear();
                        self.discarding = true;
                    }
                    return None;
                }
            }
        }
    }
}

/// The connection while it is being set up, and then in its task.
struct Conn {
    reader: ReadHalf<Stream>,
    writer: WriteHalf<Stream>,
    lines: LineBuf,
    host_port: String,
    timeouts: ChatTimeouts,
    trace: Option<Trace>,
    nick: String,
}

impl Conn {
    fn trace_line(&self, sent: bool, line: &str) {
        if let Some(t) = &self.trace {
            let shown = if sent && (line.starts_with("PASS ") || line.starts_with("AUTHENTICATE "))
            {
                let verb = line.split(' ').next().unwrap_or("");
                if line == "AUTHENTICATE PLAIN" || line == "AUTHENTICATE +" {
                    line.to_string()
                } else {
                    format!("{verb} ****")
                }
            } else {
                line.to_string()
            };
            t(sent, &shown);
        }
    }

    async fn send(&mut self, m: &Message) -> Result<()> {
        let line = m.to_line();
        self.trace_line(true, line.trim_end());
        let write = async {
            self.writer.write_all(line.as_bytes()).await?;
            self.writer.flush().await
        };
        match tokio::time::timeout(self.timeouts.write, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Connection(format!(
                "chat connection to {}: {e}",
                self.host_port
            ))),
            Err(_) => Err(Error::Connection(format!(
                "chat connection to {}: the server took no data for {} s",
                self.host_port,
                self.timeouts.write.as_secs()
            ))),
        }
    }

    async fn send_cmd(&mut self, command: &str, params: &[&str]) -> Result<()> {
        self.send(&Message::new(command, params.iter().copied()))
            .await
    }

    /// Reads more bytes; `Ok(false)` at the end of the stream.
    async fn read_more(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 4096];
        let n = self.reader.read(&mut chunk).await?;
        self.lines.push(&chunk[..n]);
        Ok(n > 0)
    }

    /// The next message before `deadline` (lines that do not parse are skipped).
    async fn next_message(&mut self, deadline: Instant) -> Result<Message> {
        loop {
            while let Some(raw) = self.lines.next_line() {
                if let Ok(m) = irc::parse(&raw) {
                    self.trace_line(false, String::from_utf8_lossy(&raw).trim_end());
                    return Ok(m);
                }
            }
            match tokio::time::timeout_at(deadline, self.read_more()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => {
                    return Err(Error::Connection(format!(
                        "{} closed the chat connection during login",
                        self.host_port
                    )))
                }
                Ok(Err(e)) => {
                    return Err(Error::Connection(format!(
                        "chat connection to {}: {e}",
                        self.host_port
                    )))
                }
                Err(_) => {
                    return Err(Error::Connection(format!(
                        "{} did not complete the chat login within {} s",
                        self.host_port,
                        self.timeouts.register.as_secs()
                    )))
                }
            }
        }
    }

    /// CAP LS 302, NICK, USER; then SASL PLAIN if offered, else PASS account:password; CAP END;
    /// until the welcome (001).
    async fn register(&mut self, user: &str, password: &str) -> Result<()> {
        let deadline = Instant::now() + self.timeouts.register;
        let host_port = self.host_port.clone();
        let refused = |what: &str| {
            Error::Auth(format!(
                "chat login as {user} at {host_port} refused: {what}"
            ))
        };
        self.send_cmd("CAP", &["LS", "302"]).await?;
        self.send_cmd("NICK", &[user]).await?;
        self.send_cmd("USER", &[user, "0", "*", user]).await?;
        let mut caps = String::new();
        let mut capping = true;
        let mut nick_tries = 0;
        let mut auth_failed: Option<String> = None;
        loop {
            let m = match self.next_message(deadline).await {
                Ok(m) => m,
                // The server may close right after its 464, without an ERROR line.
                Err(e) => return Err(auth_failed.as_deref().map_or(e, refused)),
            };
            let p = |i: usize| m.param(i).unwrap_or("");
            match m.command.as_str() {
                "PING" => {
                    let token = m.params.last().cloned().unwrap_or_default();
                    self.send_cmd("PONG", &[&token]).await?;
                }
                "CAP" if p(1).eq_ignore_ascii_case("LS") && capping => {
                    // `CAP * LS * :caps` continues, `CAP * LS :caps` ends the list.
                    let more = m.params.len() >= 4 && p(2) == "*";
                    caps.push(' ');
                    caps.push_str(m.params.last().map_or("", String::as_str));
                    if !more {
                        if offers_sasl_plain(&caps) {
                            self.send_cmd("CAP", &["REQ", "sasl"]).await?;
                        } else {
                            capping = false;
                            self.send_cmd("PASS", &[&format!("{user}:{password}")])
                                .await?;
                            self.send_cmd("CAP", &["END"]).await?;
                        }
                    }
                }
                "CAP" if p(1).eq_ignore_ascii_case("ACK") && capping => {
                    self.send_cmd("AUTHENTICATE", &["PLAIN"]).await?;
                }
                "CAP" if p(1).eq_ignore_ascii_case("NAK") && capping => {
                    capping = false;
                    self.send_cmd("PASS", &[&format!("{user}:{password}")])
                        .await?;
                    self.send_cmd("CAP", &["END"]).await?;
                }
                "AUTHENTICATE" if p(0) == "+" => {
                    for chunk in sasl_plain_chunks(user, password) {
                        self.send_cmd("AUTHENTICATE", &[&chunk]).await?;
                    }
                }
                "903" => {
                    capping = false;
                    self.send_cmd("CAP", &["END"]).await?;
                }
                "904" | "905" => {
                    let why = m.params.last().cloned().unwrap_or_default();
                    let _ = self.send_cmd("QUIT", &["login failed"]).await;
                    return Err(refused(&format!(
                        "{why} ({}): check the user name and password",
                        m.command
                    )));
                }
                "908" | "906" => {
                    // PLAIN is not among the mechanisms after all: the password as PASS.
                    capping = false;
                    self.send_cmd("PASS", &[&format!("{user}:{password}")])
                        .await?;
                    self.send_cmd("CAP", &["END"]).await?;
                }
                "464" | "465" => {
                    let why = m.params.last().cloned().unwrap_or_default();
                    auth_failed = Some(format!("{why} ({})", m.command));
                }
                "433" | "437" if nick_tries < 3 => {
                    nick_tries += 1;
                    let nick = format!("{user}{}", "_".repeat(nick_tries));
                    self.send_cmd("NICK", &[&nick]).await?;
                }
                "432" | "433" | "437" => {
                    let why = m.params.last().cloned().unwrap_or_default();
                    let _ = self.send_cmd("QUIT", &["no nick"]).await;
                    return Err(Error::Usage(format!(
                        "{} refused the nick {user}: {why}",
                        self.host_port
                    )));
                }
                "ERROR" => {
                    let why = m.params.last().cloned().unwrap_or_default();
                    return Err(match auth_failed.as_deref() {
                        Some(a) => refused(a),
                        None => Error::Connection(format!(
                            "{} closed the chat connection: {why}",
                            self.host_port
                        )),
                    });
                }
                "001" => {
                    self.nick = p(0).to_string();
                    return Ok(());
                }
                _ => {}
            }
        }
    }
}

/// Opens TCP (and TLS) to the chat server; returns the stream, the peer address and the
/// fingerprint of a certificate trusted for the first time.
async fn open_stream(opts: &ChatOptions) -> Result<(Stream, IpAddr, Option<String>)> {
    let host_port = opts.host_port();
    let tcp = connect_tcp(&opts.host, opts.port, opts.timeouts.connect).await?;
    let peer = tcp
        .peer_addr()
        .map_err(|e| Error::Connection(format!("{host_port}: {e}")))?
        .ip();
    if !opts.tls {
        return Ok((Stream::Plain(tcp), peer, None));
    }
    let tls = TlsSetup::any_version(&opts.host, &host_port, &opts.trust)?;
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let hs = connector.connect(tls.server_name.clone(), tcp);
    match tokio::time::timeout(opts.timeouts.connect, hs).await {
        Ok(Ok(s)) => {
            let new_cert = tls.commit()?;
            Ok((Stream::Tls(Box::new(s)), peer, new_cert))
        }
        Ok(Err(e)) => match tls.problem() {
            Some(p) => Err(Error::Cert(p)),
            None => Err(Error::Tls(format!(
                "TLS handshake with {host_port} failed: {e} (for a plain chat port use irc://)"
            ))),
        },
        Err(_) => Err(Error::Tls(format!(
            "TLS handshake with {host_port} timed out"
        ))),
    }
}

impl Chat {
    /// Connects and logs in; returns the handle and the events of the connection. The server
    /// may put the connection in rooms on its own (Ferry joins `#lobby`): those arrive as
    /// [`Event::Joined`].
    pub async fn connect(opts: &ChatOptions) -> Result<(Chat, mpsc::Receiver<Event>)> {
        let host_port = opts.host_port();
        for (what, v) in [("user name", &opts.user), ("password", &opts.password)] {
            if v.contains(['\r', '\n', '\0']) {
                return Err(Error::Usage(format!(
                    "the {what} cannot contain line breaks or NUL"
                )));
            }
        }
        if opts.user.is_empty() || opts.user.contains(' ') {
            return Err(Error::Usage(format!(
                "{:?} is not a chat user name: give the account, irc://user@host",
                opts.user
            )));
        }
        let (stream, peer, new_cert) = open_stream(opts).await?;
        if !password_may_go(opts.tls, peer, opts.allow_plaintext) {
            return Err(Error::Tls(format!(
                "{host_port} is not encrypted (irc://); refusing to send the password in the \
                 clear to a host that is not this machine: use ircs:// (port {IRCS_PORT}) or \
                 --allow-plaintext to send it anyway"
            )));
        }
        let (reader, writer) = tokio::io::split(stream);
        let mut conn = Conn {
            reader,
            writer,
            lines: LineBuf::default(),
            host_port: host_port.clone(),
            timeouts: opts.timeouts,
            trace: opts.trace.clone(),
            nick: opts.user.clone(),
        };
        conn.register(&opts.user, &opts.password).await?;
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let closed = Arc::new(OnceLock::new());
        let nick = conn.nick.clone();
        let task = tokio::spawn(
            Session {
                conn,
                rooms: Rooms::new(),
                events: events_tx,
            }
            .run(rx, closed.clone()),
        );
        Ok((
            Chat {
                tx,
                nick,
                host_port,
                secure: opts.tls,
                new_cert,
                closed,
                task: Some(task),
            },
            events,
        ))
    }

    /// The nick the server gave this connection (Ferry: the account name).
    pub fn nick(&self) -> &str {
        &self.nick
    }

    /// `host:port` of the server.
    pub fn host_port(&self) -> &str {
        &self.host_port
    }

    /// Whether the connection is TLS.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The fingerprint of a certificate trusted for the first time and remembered.
    pub fn new_certificate(&self) -> Option<&str> {
        self.new_cert.as_deref()
    }

    fn gone(&self) -> Error {
        let why = self
            .closed
            .get()
            .cloned()
            .unwrap_or_else(|| "it was closed".to_string());
        Error::Connection(format!(
            "the chat connection to {} ended: {why}",
            self.host_port
        ))
    }

    async fn request(&self, r: Request) -> Result<()> {
        match tokio::time::timeout(Duration::from_secs(30), self.tx.send(r)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.gone()),
            Err(_) => Err(Error::Connection(format!(
                "the chat connection to {} is not taking requests",
                self.host_port
            ))),
        }
    }

    /// Sends `text` to a room (`#name`) or a nick, as several messages if it is long or has
    /// several lines. Returns once the lines are written.
    pub async fn say(&self, target: &str, text: &str) -> Result<()> {
        if !irc::is_valid_channel(target) && !irc::is_valid_nick(target) {
            return Err(Error::Usage(format!(
                "{target:?} is neither a room (#name) nor a nick"
            )));
        }
        let pieces = split_text(text, MAX_TEXT);
        if pieces.is_empty() {
            return Err(Error::Usage("nothing to say: give some text".into()));
        }
        let msgs = pieces
            .into_iter()
            .map(|t| Message::new("PRIVMSG", [target.to_string(), t]))
            .collect();
        let (done, wait) = oneshot::channel();
        self.request(Request::Send(msgs, done)).await?;
        wait.await.map_err(|_| self.gone())
    }

    /// Joins `room` (the server answers with [`Event::Joined`], or [`Event::Refused`]).
    pub async fn join(&self, room: &str) -> Result<()> {
        if !irc::is_valid_channel(room) {
            return Err(Error::Usage(format!(
                "{room:?} is not a room name: rooms start with # (#lobby)"
            )));
        }
        let (done, wait) = oneshot::channel();
        self.request(Request::Send(vec![Message::new("JOIN", [room])], done))
            .await?;
        wait.await.map_err(|_| self.gone())
    }

    /// Leaves `room` (the server answers with [`Event::Parted`]).
    pub async fn part(&self, room: &str) -> Result<()> {
        if !irc::is_valid_channel(room) {
            return Err(Error::Usage(format!(
                "{room:?} is not a room name: rooms start with # (#lobby)"
            )));
        }
        let (done, wait) = oneshot::channel();
        self.request(Request::Send(vec![Message::new("PART", [room])], done))
            .await?;
        wait.await.map_err(|_| self.gone())
    }

    /// The members of `room` as last heard from the server, sorted; `None` if this connection
    /// is not in it.
    pub async fn members(&self, room: &str) -> Result<Option<Vec<String>>> {
        let (reply, wait) = oneshot::channel();
        self.request(Request::Members(room.to_string(), reply))
            .await?;
        wait.await.map_err(|_| self.gone())
    }

    /// Waits (up to `limit`) until this connection is in `room` with its member list, as
    /// after a [`join`](Chat::join) (or the server's own auto-join) and the NAMES reply.
    pub async fn wait_ready(&self, room: &str, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let (reply, wait) = oneshot::channel();
            self.request(Request::Ready(room.to_string(), reply))
                .await?;
            if wait.await.map_err(|_| self.gone())? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Connection(format!(
                    "{} did not put {} in {room} within {} s",
                    self.host_port,
                    self.nick,
                    limit.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The rooms this connection is in.
    pub async fn rooms(&self) -> Result<Vec<String>> {
        let (reply, wait) = oneshot::channel();
        self.request(Request::Rooms(reply)).await?;
        wait.await.map_err(|_| self.gone())
    }

    /// Asks to leave the chat with QUIT and `reason`. Events still arrive (the replies to the
    /// last requests), then [`Event::Closed`] with the reason `quit`.
    pub async fn send_quit(&self, reason: &str) {
        let _ = self.request(Request::Quit(reason.to_string())).await;
    }

    /// Leaves the chat with QUIT and `reason`, waiting (a few seconds at most) for the server
    /// to close the connection. The events must be read meanwhile (or their receiver dropped).
    pub async fn quit(mut self, reason: &str) {
        self.send_quit(reason).await;
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// The connection task's state.
struct Session {
    conn: Conn,
    rooms: Rooms,
    events: mpsc::Sender<Event>,
}

/// What woke the task.
enum Wake {
    Request(Option<Request>),
    Read(std::io::Result<bool>),
    Quiet,
}

impl Session {
    async fn run(mut self, mut requests: mpsc::Receiver<Request>, closed: Arc<OnceLock<String>>) {
        let reason = self.serve(&mut requests).await;
        let _ = closed.set(reason.clone());
        let _ = self.events.send(Event::Closed { reason }).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.conn.writer.shutdown()).await;
    }

    async fn emit(&self, e: Event) {
        // An application that dropped its receiver just does not hear.
        let _ = self.events.send(e).await;
    }

    /// Says QUIT and, for a few seconds at most, goes on handling what the server still sends
    /// (replies to the last requests) until it closes the connection.
    async fn quit(&mut self, reason: &str) {
        if self.conn.send_cmd("QUIT", &[reason]).await.is_err() {
            return;
        }
        let until = Instant::now() + Duration::from_secs(3);
        loop {
            while let Some(raw) = self.conn.lines.next_line() {
                let Ok(m) = irc::parse(&raw) else { continue };
                if m.command == "ERROR" || self.handle(m).await.is_some() {
                    return;
                }
            }
            match tokio::time::timeout_at(until, self.conn.read_more()).await {
                Ok(Ok(true)) => {}
                _ => return,
            }
        }
    }

    async fn serve(&mut self, requests: &mut mpsc::Receiver<Request>) -> String {
        let t = self.conn.timeouts;
        let mut heard = Instant::now();
        let mut pinged = false;
        loop {
            while let Some(raw) = self.conn.lines.next_line() {
                let Ok(m) = irc::parse(&raw) else { continue };
                self.conn
                    .trace_line(false, String::from_utf8_lossy(&raw).trim_end());
                if let Some(reason) = self.handle(m).await {
                    return reason;
                }
            }
            let quiet_until = heard
                + if pinged {
                    t.ping_after + t.pong
                } else {
                    t.ping_after
                };
            let wake = tokio::select! {
                r = requests.recv() => Wake::Request(r),
                r = self.conn.read_more() => Wake::Read(r),
                () = tokio::time::sleep_until(quiet_until) => Wake::Quiet,
            };
            match wake {
                Wake::Request(None) => {
                    self.quit("").await;
                    return "closed by the client".into();
                }
                Wake::Request(Some(Request::Quit(reason))) => {
                    self.quit(&reason).await;
                    return "quit".into();
                }
                Wake::Request(Some(Request::Send(msgs, done))) => {
                    for m in &msgs {
                        if let Err(e) = self.conn.send(m).await {
                            return e.to_string();
                        }
                    }
                    let _ = done.send(());
                }
                Wake::Request(Some(Request::Members(room, reply))) => {
                    let _ = reply.send(self.rooms.members(&room));
                }
                Wake::Request(Some(Request::Rooms(reply))) => {
                    let _ = reply.send(self.rooms.names());
                }
                Wake::Request(Some(Request::Ready(room, reply))) => {
                    let _ = reply.send(self.rooms.is_ready(&room));
                }
                Wake::Read(Ok(true)) => {
                    heard = Instant::now();
                    pinged = false;
                }
                Wake::Read(Ok(false)) => return "the server closed the connection".into(),
                Wake::Read(Err(e)) => return format!("read error: {e}"),
                Wake::Quiet if pinged => {
                    return format!(
                        "no answer from the server for {} s",
                        (t.ping_after + t.pong).as_secs()
                    )
                }
                Wake::Quiet => {
                    pinged = true;
                    let host = self.conn.host_port.clone();
                    if let Err(e) = self.conn.send_cmd("PING", &[&host]).await {
                        return e.to_string();
                    }
                }
            }
        }
    }

    /// Handles one message; `Some(reason)` when the server ends the connection.
    async fn handle(&mut self, m: Message) -> Option<String> {
        let p = |i: usize| m.param(i).unwrap_or("").to_string();
        let from = prefix_nick(m.prefix.as_deref()).to_string();
        let me = irc::fold(&from) == irc::fold(&self.conn.nick);
        match m.command.as_str() {
            "PING" => {
                let token = m.params.last().cloned().unwrap_or_default();
                if let Err(e) = self.conn.send_cmd("PONG", &[&token]).await {
                    return Some(e.to_string());
                }
            }
            "ERROR" => return Some(p(0)),
            "PRIVMSG" | "NOTICE" if m.params.len() >= 2 => {
                let target = p(0);
                let mut text = p(1);
                let mut action = false;
                if let Some(ctcp) = text.strip_prefix('\x01') {
                    let ctcp = ctcp.strip_suffix('\x01').unwrap_or(ctcp);
                    match ctcp.strip_prefix("ACTION") {
                        Some(rest) => {
                            action = true;
                            text = rest.trim_start().to_string();
                        }
                        None => return None, // other CTCP requests are not answered
                    }
                }
                let from = if from.is_empty() {
                    self.conn.host_port.clone()
                } else {
                    from
                };
                self.emit(Event::Message(ChatMessage {
                    at: SystemTime::now(),
                    private: !target.starts_with('#'),
                    from,
                    target,
                    text,
                    notice: m.command == "NOTICE",
                    action,
                }))
                .await;
            }
            "JOIN" => {
                let room = p(0);
                self.rooms.join(&room, &from, me);
                self.emit(Event::Joined {
                    room,
                    nick: from,
                    me,
                })
                .await;
            }
            "PART" => {
                let room = p(0);
                self.rooms.part(&room, &from, me);
                self.emit(Event::Parted {
                    room,
                    nick: from,
                    me,
                    reason: m.param(1).map(str::to_string),
                })
                .await;
            }
            "KICK" => {
                let (room, victim) = (p(0), p(1));
                let me = irc::fold(&victim) == irc::fold(&self.conn.nick);
                self.rooms.part(&room, &victim, me);
                self.emit(Event::Parted {
                    room,
                    nick: victim,
                    me,
                    reason: Some(format!("kicked by {from}: {}", p(2))),
                })
                .await;
            }
            "QUIT" => {
                self.rooms.quit(&from);
                self.emit(Event::Quit {
                    nick: from,
                    reason: m.param(0).map(str::to_string),
                })
                .await;
            }
            "NICK" => {
                let new = p(0);
                if me {
                    self.conn.nick = new.clone();
                }
                self.rooms.rename(&from, &new);
                self.emit(Event::Nick { old: from, new }).await;
            }
            "353" => self.rooms.names_line(&p(2), &p(3)),
            "366" => self.rooms.names_end(&p(1)),
            // "MOTD File is missing" is part of the welcome, not a refusal.
            "422" => {}
            code if code.len() == 3 && (code.starts_with('4') || code.starts_with('5')) => {
                // [me, subject…, text]
                let text = m.params.last().cloned().unwrap_or_default();
                let subject: Vec<&str> = m
                    .params
                    .iter()
                    .skip(1)
                    .take(m.params.len().saturating_sub(2))
                    .map(String::as_str)
                    .collect();
                let text = if subject.is_empty() {
                    text
                } else {
                    format!("{}: {text}", subject.join(" "))
                };
                self.emit(Event::Refused {
                    code: code.to_string(),
                    text,
                })
                .await;
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_removes_formatting_and_control_characters() {
        assert_eq!(plain_text("\x02bold\x02 \x0304,12red\x03 x"), "bold red x");
        assert_eq!(plain_text("\x033x\x0399"), "x");
        assert_eq!(plain_text("a\x1b[2Jb\x07"), "a?[2Jb?");
        assert_eq!(plain_text("tab\there"), "tab here");
        assert_eq!(plain_text("\x04ff0000hex"), "hex");
        assert_eq!(plain_text("café ☕"), "café ☕");
        assert_eq!(plain_text("\x03,5x"), ",5x");
    }

    #[test]
    fn long_text_is_split_on_character_boundaries() {
        assert_eq!(split_text("hi", 10), ["hi"]);
        assert_eq!(split_text("a\r\nb\n\nc", 10), ["a", "b", "c"]);
        assert!(split_text("\n\n", 10).is_empty());
        let long = "é".repeat(300); // 600 bytes
        let parts = split_text(&long, MAX_TEXT);
        assert!(parts.iter().all(|p| p.len() <= MAX_TEXT));
        assert_eq!(parts.concat(), long);
        let words = "word ".repeat(100);
        let parts = split_text(&words, 100);
        assert!(parts.iter().all(|p| p.len() <= 100 && p.ends_with(' ')));
        assert_eq!(parts.concat(), words);
    }

    #[test]
    fn sasl_plain_payload() {
        let chunks = sasl_plain_chunks("alice", "secret");
        assert_eq!(chunks, ["AGFsaWNlAHNlY3JldA=="]);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&chunks[0])
            .unwrap();
        assert_eq!(decoded, b"\0alice\0secret");
        // 300 raw bytes are exactly 400 base64 characters: a "+" follows.
        let chunks = sasl_plain_chunks("u", &"p".repeat(297));
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].len(), 400);
        assert_eq!(chunks[1], "+");
        let chunks = sasl_plain_chunks("u", &"p".repeat(400));
        assert_eq!(chunks.len(), 2);
        assert!(chunks[1].len() < 400);
    }

    #[test]
    fn sasl_offer_table() {
        assert!(offers_sasl_plain("multi-prefix sasl"));
        assert!(offers_sasl_plain("sasl=PLAIN multi-prefix"));
        assert!(offers_sasl_plain(" sasl=EXTERNAL,plain"));
        assert!(!offers_sasl_plain("sasl=EXTERNAL"));
        assert!(!offers_sasl_plain("multi-prefix userhost-in-names"));
        assert!(!offers_sasl_plain(""));
    }

    #[test]
    fn lines_are_framed_and_overlong_ones_skipped() {
        let mut b = LineBuf::default();
        b.push(b"PING :a\r\nPRIV");
        assert_eq!(b.next_line().unwrap(), b"PING :a\r\n");
        assert_eq!(b.next_line(), None);
        b.push(b"MSG #x :y\n");
        assert_eq!(b.next_line().unwrap(), b"PRIVMSG #x :y\n");
        b.push(&vec![b'x'; MAX_IN_LINE + 10]);
        assert_eq!(b.next_line(), None);
        assert!(b.buf.is_empty(), "the overlong line is not kept");
        b.push(b"still the long line\nPING :b\n");
        assert_eq!(b.next_line().unwrap(), b"PING :b\n");
    }

    #[test]
    fn passwords_cross_a_network_in_the_clear_only_when_allowed() {
        let lan: IpAddr = "192.0.2.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(password_may_go(false, "127.0.0.1".parse().unwrap(), false));
        assert!(password_may_go(false, "::1".parse().unwrap(), false));
        assert!(!password_may_go(false, lan, false));
        assert!(!password_may_go(false, v6, false));
        assert!(password_may_go(true, lan, false));
        assert!(password_may_go(false, lan, true));
    }

    #[test]
    fn prefixes() {
        assert_eq!(prefix_nick(Some("bob!bob@127.0.0.1")), "bob");
        assert_eq!(prefix_nick(Some("ferry")), "ferry");
        assert_eq!(prefix_nick(None), "");
    }
}
