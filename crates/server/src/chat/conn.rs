//! One chat connection: framing (512-byte IRC lines, `417` for longer ones), registration with
//! CAP / SASL PLAIN / PASS against the Ferry accounts, then the commands real clients send.
//!
//! One task per connection owns its state and its socket: it waits on input and its bounded
//! [`Outbox`] (filled by the hub without waiting) at once, and keeps writing while a command
//! waits (e.g. on the database). What it holds while idle is kept small: the commands run as
//! boxed futures that exist only while they run, the registration state (with its deadline) is
//! dropped once registered, pings and shutdown then come from the [`keeper`] through the
//! outbox, and no read buffer or queue allocation is kept when empty.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use ferry_proto::irc::{self, Message};

use super::hub::{line, Caps, Hub, HubError, Identity};
use super::keeper;
use super::outbox::Outbox;
use super::wire::{Event, Framed, Wire};
use crate::accounts::{AuthError, ChatLine, FailureVerdict, User};
use crate::data::canonical;
use crate::net::Stream;
use crate::server::{ConnSlot, Shared};

const VERSION: &str = concat!("ferry-", env!("CARGO_PKG_VERSION"));
/// Kernel send buffer of a chat connection.
const CHAT_SNDBUF: usize = 64 * 1024;
/// Longest SASL payload accepted (PLAIN of a 1 KiB password, base64).
const MAX_SASL: usize = 2048;
/// How long a closing connection may take to write what is still queued (its ERROR line last).
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// Registration progress.
#[derive(Debug, Default)]
struct Registration {
    nick: Option<String>,
    user: Option<(String, String)>,
    pass: Option<String>,
    negotiating: bool,
    sasl: Option<String>,
    account: Option<User>,
}

struct Conn {
    shared: Arc<Shared>,
    hub: Arc<Hub>,
    peer: SocketAddr,
    out: Arc<Outbox>,
    me: Option<Identity>,
    /// Until registered (then dropped: an idle client does not keep it).
    reg: Option<Box<Registration>>,
    caps: Caps,
}

enum Next {
    Go,
    Close(String),
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One chat connection, from its accepted socket to its end. The socket options are set here;
/// the returned future (spawned by the listener) owns the connection's state in place, which is
/// what a connected client costs while it is idle.
pub fn run(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: ConnSlot,
    tls: bool,
) -> impl Future<Output = ()> + Send + 'static {
    let _ = stream.set_nodelay(true);
    // A fixed, modest kernel send buffer: the send queue (in lines) is then what decides when a
    // client that does not read is dropped, instead of megabytes of autotuned socket buffer.
    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(CHAT_SNDBUF);
    let mut wire = Wire::new(Stream::Plain(stream));
    let out = Outbox::new(shared.config.chat.send_queue);
    let mut conn = Conn {
        hub: shared.chat.clone(),
        shared,
        peer,
        out,
        me: None,
        reg: None,
        caps: Caps::default(),
    };
    async move {
        let _slot = &slot; // held until the connection ends
        if tls {
            let shared = &conn.shared;
            let limit = shared.config.tls_handshake_timeout();
            if !wire.accept_tls(shared.tls.base(), limit).await {
                return;
            }
        }
        let reason = conn.serve(&mut wire).await;
        // Boxed: needed once, at the end; its state would size every idle connection.
        Box::pin(conn.close(&mut wire, reason)).await;
    }
}

impl Conn {
    fn nick(&self) -> &str {
        match (&self.me, &self.reg) {
            (Some(m), _) => m.nick(),
            (None, Some(r)) => r.nick.as_deref().unwrap_or("*"),
            (None, None) => "*",
        }
    }

    fn server(&self) -> &str {
        &self.shared.config.chat.server_name
    }

    /// The registration state (made on first use).
    fn reg(&mut self) -> &mut Registration {
        self.reg.get_or_insert_with(Box::default)
    }

    fn send(&self, m: Message) {
        // A full queue marks this connection for disconnection (SendQ exceeded).
        self.out.push(&line(&m));
    }

    /// A numeric reply from the server to this client.
    fn num(&self, code: &str, params: &[&str]) {
        let mut all = vec![self.nick().to_string()];
        all.extend(params.iter().map(|p| p.to_string()));
        self.send(Message::new(code, all).with_prefix(self.server()));
    }

    /// Leaves the hub (telling the rooms), then writes what is queued and the ERROR line.
    async fn close(&mut self, wire: &mut Wire, reason: String) {
        if let Some(me) = self.me.take() {
            self.hub.quit(me.id, &reason);
            tracing::info!(nick = %me.nick(), reason, "chat client left");
        }
        // Refused (and dropped) if the queue is full, as for a client that does not read.
        self.out.push(&line(&Message::new(
            "ERROR",
            [format!("Closing link: {reason}")],
        )));
        // A client that does not read is cut off.
        let _ = tokio::time::timeout(CLOSE_FLUSH, wire.finish(&self.out)).await;
    }

    async fn serve(&mut self, wire: &mut Wire) -> String {
        // Boxed: the registration deadline's timer and the shutdown wait exist only until the
        // client is registered; then the keeper (see `keeper`) does both for every client.
        if let Some(reason) = Box::pin(self.serve_unregistered(wire)).await {
            return reason;
        }
        self.serve_registered(wire).await
    }

    /// Until registered: lines, the registration deadline and shutdown. `None` once registered.
    async fn serve_unregistered(&mut self, wire: &mut Wire) -> Option<String> {
        let cfg = &self.shared.config.chat;
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(cfg.registration_timeout_secs);
        let shutdown = self.shared.shutdown.soft.clone();
        let out = self.out.clone();
        while self.me.is_none() {
            if let Some(reason) = out.killed() {
                return Some(reason.into());
            }
            // Lines already read first; then wait for more.
            if let Some(framed) = wire.next_line() {
                out.heard_now();
                if let Next::Close(reason) = Box::pin(self.handle(wire, framed)).await {
                    return Some(reason);
                }
                continue;
            }
            let event = tokio::select! {
                _ = shutdown.cancelled() => return Some(keeper::SHUTTING_DOWN.into()),
                _ = tokio::time::sleep_until(deadline) => return Some("Registration timeout".into()),
                e = wire.wait(&out) => e,
            };
            if let Event::Closed(reason) = event {
                return Some(reason);
            }
        }
        None
    }

    /// Once registered: lines and the outbox only. Pings, ping timeouts and shutdown come
    /// from the keeper as a PING line or a kill; what this loop holds while it waits is what
    /// an idle client costs.
    async fn serve_registered(&mut self, wire: &mut Wire) -> String {
        let out = self.out.clone();
        loop {
            // A client registered after the keeper's last look at shutdown goes here.
            if self.shared.shutdown.soft.is_cancelled() {
                return keeper::SHUTTING_DOWN.into();
            }
            if let Some(reason) = out.killed() {
                return self.kill_text(reason);
            }
            if let Some(framed) = wire.next_line() {
                out.heard_now();
                // Boxed: what a command needs exists only while it runs, not while idle.
                if let Next::Close(reason) = Box::pin(self.handle(wire, framed)).await {
                    return self.kill_text(&reason);
                }
                continue;
            }
            if let Event::Closed(reason) = wire.wait(&out).await {
                return self.kill_text(&reason);
            }
        }
    }

    /// What a client is told for a kill reason (the keeper's ping timeout says how long).
    fn kill_text(&self, reason: &str) -> String {
        if reason == keeper::PING_TIMEOUT {
            keeper::ping_timeout_text(&self.shared)
        } else {
            reason.to_string()
        }
    }

    /// One input line: the command it holds runs while queued lines keep being written, then
    /// what it queued is written as far as the socket takes it.
    async fn handle(&mut self, wire: &mut Wire, framed: Framed) -> Next {
        let out = self.out.clone();
        let next = match framed {
            Framed::TooLong => {
                self.num("417", &["Input line was too long"]);
                Next::Go
            }
            Framed::Line(raw) => match irc::parse(&raw) {
                Ok(msg) if self.me.is_some() => wire.busy(&out, self.command(msg)).await,
                Ok(msg) => wire.busy(&out, self.register(msg)).await,
                Err(irc::IrcError::Empty) => Next::Go,
                Err(e) => {
                    tracing::debug!(error = %e, "unparseable chat line");
                    self.num("421", &["*", "Unknown or malformed command"]);
                    Next::Go
                }
            },
        };
        match next {
            Next::Go => wire.write_now(&out).await.map_or(Next::Go, Next::Close),
            close => close,
        }
    }

    async fn register(&mut self, m: Message) -> Next {
        let p = |i: usize| m.param(i).unwrap_or("").to_string();
        match m.command.as_str() {
            "CAP" => self.cap(&m),
            "AUTHENTICATE" => return self.authenticate(&p(0)).await,
            "PASS" => self.reg().pass = Some(p(0)),
            "NICK" if p(0).is_empty() => self.num("431", &["No nickname given"]),
            "NICK" => self.reg().nick = Some(p(0)),
            "USER" if m.params.len() < 4 => self.num("461", &["USER", "Not enough parameters"]),
            "USER" => self.reg().user = Some((p(0), p(3))),
            "PING" => self.send(
                Message::new("PONG", [self.server().to_string(), p(0)]).with_prefix(self.server()),
            ),
            "PONG" => {}
            "QUIT" => return Next::Close("Client quit".into()),
            _ => self.num("451", &["You have not registered"]),
        }
        if self.reg().nick.is_some() && self.reg().user.is_some() && !self.reg().negotiating {
            return self.complete_registration().await;
        }
        Next::Go
    }

    fn cap(&mut self, m: &Message) {
        let sub = m.param(0).unwrap_or("").to_ascii_uppercase();
        let known = ["sasl", "multi-prefix", "userhost-in-names"];
        match sub.as_str() {
            "LS" => {
                if self.me.is_none() {
                    self.reg().negotiating = true;
                }
                // Values only for CAP LS 302 (the Python irc library sends plain LS).
                let list = if m.param(1) == Some("302") {
                    "sasl=PLAIN multi-prefix userhost-in-names"
                } else {
                    "sasl multi-prefix userhost-in-names"
                };
                self.send(
                    Message::new("CAP", [self.nick(), "LS", list]).with_prefix(self.server()),
                );
            }
            "LIST" => {
                let mut on = Vec::new();
                if self.caps.multi_prefix {
                    on.push("multi-prefix");
                }
                if self.caps.userhost_in_names {
                    on.push("userhost-in-names");
                }
                self.send(
                    Message::new("CAP", [self.nick(), "LIST", &on.join(" ")])
                        .with_prefix(self.server()),
                );
            }
            "REQ" => {
                if self.me.is_none() {
                    self.reg().negotiating = true;
                }
                let wanted = m.param(1).unwrap_or("");
                let all_known = wanted
                    .split_whitespace()
                    .all(|c| known.contains(&c.trim_start_matches('-')));
                if all_known && !wanted.trim().is_empty() {
                    for c in wanted.split_whitespace() {
                        let on = !c.starts_with('-');
                        match c.trim_start_matches('-') {
                            "multi-prefix" => self.caps.multi_prefix = on,
                            "userhost-in-names" => self.caps.userhost_in_names = on,
                            _ => {}
                        }
                    }
                    if let Some(me) = &self.me {
                        self.hub.set_caps(me.id, self.caps);
                    }
                    self.send(
                        Message::new("CAP", [self.nick(), "ACK", wanted])
                            .with_prefix(self.server()),
                    );
                } else {
                    self.send(
                        Message::new("CAP", [self.nick(), "NAK", wanted])
                            .with_prefix(self.server()),
                    );
                }
            }
            "END" => {
                if let Some(r) = &mut self.reg {
                    r.negotiating = false;
                }
            }
            _ => self.num("410", &[&sub, "Invalid CAP command"]),
        }
    }

    async fn authenticate(&mut self, arg: &str) -> Next {
        if self.reg().account.is_some() {
            self.num("907", &["You have already authenticated using SASL"]);
            return Next::Go;
        }
        match (self.reg().sasl.as_mut(), arg) {
            (_, "*") => {
                self.reg().sasl = None;
                self.num("906", &["SASL authentication aborted"]);
            }
            (None, mech) if mech.eq_ignore_ascii_case("PLAIN") => {
                self.reg().sasl = Some(String::new());
                self.send(Message::new("AUTHENTICATE", ["+"]));
            }
            (None, _) => self.num("908", &["PLAIN", "are available SASL mechanisms"]),
            (Some(acc), chunk) => {
                if chunk != "+" {
                    acc.push_str(chunk);
                }
                if acc.len() > MAX_SASL {
                    self.reg().sasl = None;
                    self.num("905", &["SASL message too long"]);
                    return Next::Go;
                }
                if chunk.len() == 400 {
                    return Next::Go; // more chunks follow
                }
                let payload = self.reg().sasl.take().unwrap_or_default();
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(payload.as_bytes())
                    .unwrap_or_default();
                let mut parts = decoded.split(|b| *b == 0);
                let (_authzid, authcid, password) = (parts.next(), parts.next(), parts.next());
                let (Some(authcid), Some(password)) = (authcid, password) else {
                    self.num("904", &["SASL authentication failed"]);
                    return Next::Go;
                };
                let name = String::from_utf8_lossy(authcid).to_string();
                let password = String::from_utf8_lossy(password).to_string();
                match self.login(&name, &password).await {
                    Ok(user) => {
                        let mask = format!("{}!{}@{}", name, name, canonical(self.peer.ip()));
                        self.num(
                            "900",
                            &[
                                &mask,
                                &user.name,
                                &format!("You are now logged in as {}", user.name),
                            ],
                        );
                        self.num("903", &["SASL authentication successful"]);
                        self.reg().account = Some(user);
                    }
                    Err(close) => {
                        self.num("904", &["SASL authentication failed"]);
                        if let Some(reason) = close {
                            return Next::Close(reason);
                        }
                    }
                }
            }
        }
        Next::Go
    }

    /// Checks a password like an FTP login does (ban check, delay and log on failure, the chat
    /// permission). `Err(Some(reason))` means the connection must close.
    async fn login(&self, name: &str, password: &str) -> Result<User, Option<String>> {
        let ip = canonical(self.peer.ip());
        let shared = &self.shared;
        if shared.guard.is_banned(ip).is_some() {
            return Err(Some("Too many failed logins from your address".into()));
        }
        match shared.accounts.authenticate(name, password).await {
            Ok(user) if !user.perms.chat => {
                tracing::info!(user = %user.name, "chat not allowed for this account");
                Err(Some("Chat is not enabled for your account".into()))
            }
            Ok(user) => {
                shared.guard.record_success(ip);
                Ok(user)
            }
            Err(AuthError::Internal(e)) => {
                tracing::error!(error = %e, "chat authentication error");
                Err(Some("Service unavailable".into()))
            }
            Err(_) => {
                let verdict = shared.guard.record_failure(ip);
                tracing::warn!(target: "ferry::auth", ip = %ip, user = %name, service = "chat", "login failed");
                tokio::time::sleep(shared.config.limits.failed_login_delay()).await;
                match verdict {
                    FailureVerdict::Banned(_) => Err(Some("Too many failed logins".into())),
                    FailureVerdict::Delayed => Err(None),
                }
            }
        }
    }

    async fn complete_registration(&mut self) -> Next {
        let shared = self.shared.clone();
        let cfg = &shared.config.chat;
        let nick = self.reg().nick.clone().unwrap_or_default();
        let (_user, realname) = self.reg().user.clone().unwrap_or_default();
        if self.reg().account.is_none() {
            if let Some(pass) = self.reg().pass.take() {
                let (name, password) = match pass.split_once(':') {
                    Some((n, p)) if !n.is_empty() => (n.to_string(), p.to_string()),
                    _ => (nick.clone(), pass),
                };
                match self.login(&name, &password).await {
                    Ok(user) => self.reg().account = Some(user),
                    Err(reason) => {
                        self.num("464", &["Password incorrect"]);
                        return Next::Close(reason.unwrap_or_else(|| "Password incorrect".into()));
                    }
                }
            }
        }
        let (wanted, account) = match self.reg().account.as_ref() {
            Some(user) => (user.name.clone(), Some(user.name.clone())),
            None if cfg.allow_guests => {
                if !irc::is_valid_nick(&nick) {
                    self.num("432", &[&nick, "Erroneous nickname"]);
                    self.reg().nick = None;
                    return Next::Go;
                }
                if matches!(self.shared.accounts.get_user(&nick).await, Ok(Some(_))) {
                    self.num("433", &[&nick, "Nickname belongs to an account: log in with SASL or PASS account:password"]);
                    self.reg().nick = None;
                    return Next::Go;
                }
                (nick.clone(), None)
            }
            None => {
                self.num(
                    "464",
                    &["Password required: log in with SASL PLAIN or PASS account:password"],
                );
                return Next::Close("Password required".into());
            }
        };
        let host = canonical(self.peer.ip()).to_string();
        let logged_in = account.is_some();
        let user =
            account.unwrap_or_else(|| format!("~{}", wanted.chars().take(9).collect::<String>()));
        let me = self.hub.register(
            &wanted,
            &user,
            &host,
            &realname,
            logged_in,
            self.caps,
            self.out.clone(),
        );
        tracing::info!(nick = %me.nick(), peer = %self.peer, "chat client registered");
        self.me = Some(me.clone());
        self.reg = None;
        let (users, rooms) = self.hub.counts();
        self.num(
            "001",
            &[&format!(
                "Welcome to the {} chat, {}",
                cfg.network,
                me.prefix()
            )],
        );
        self.num(
            "002",
            &[&format!(
                "Your host is {}, running {VERSION}",
                self.server()
            )],
        );
        self.num("003", &["This server was created when it started"]);
        self.send(
            Message::new("004", [me.nick(), self.server(), VERSION, "i", "bn"])
                .with_prefix(self.server()),
        );
        let isupport = [
            "CASEMAPPING=rfc1459".to_string(),
            "CHANTYPES=#".into(),
            "PREFIX=(o)@".into(),
            "NICKLEN=32".into(),
            "CHANNELLEN=50".into(),
            "TOPICLEN=390".into(),
            "AWAYLEN=200".into(),
            format!("NETWORK={}", cfg.network),
            "CHANMODES=b,,,n".into(),
            "UTF8ONLY".into(),
        ];
        let mut params: Vec<String> = vec![me.nick().to_string()];
        params.extend(isupport);
        params.push("are supported by this server".into());
        self.send(Message::new("005", params).with_prefix(self.server()));
        self.num(
            "251",
            &[&format!(
                "There are {users} users and 0 invisible on 1 servers"
            )],
        );
        self.num("254", &[&rooms.to_string(), "channels formed"]);
        self.num("255", &[&format!("I have {users} clients and 0 servers")]);
        self.num("422", &["MOTD File is missing"]);
        if cfg.auto_join {
            self.join(&cfg.default_room).await;
        }
        Next::Go
    }

    async fn join(&mut self, room: &str) {
        let Some(me) = self.me.clone() else { return };
        match self
            .hub
            .join(me.id, room, self.shared.config.chat.max_rooms_per_user)
        {
            Ok(Some(joined)) => {
                if let Some((text, who, at)) = &joined.topic {
                    self.num("332", &[&joined.room, text]);
                    self.num("333", &[&joined.room, who, &at.to_string()]);
                }
                self.names(&joined.room);
                let n = self.shared.config.chat.history_lines;
                if n > 0 {
                    if let Ok(lines) = self.shared.accounts.recent_chat(&joined.room, n).await {
                        let from = format!("{0}!{0}@{0}", self.server());
                        for l in lines {
                            let when = time::OffsetDateTime::from_unix_timestamp(l.at)
                                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
                            let text = format!(
                                "[{:04}-{:02}-{:02} {:02}:{:02}] <{}> {}",
                                when.year(),
                                u8::from(when.month()),
                                when.day(),
                                when.hour(),
                                when.minute(),
                                l.sender,
                                l.text
                            );
                            self.send(
                                Message::new("NOTICE", [joined.room.as_str(), &text])
                                    .with_prefix(from.as_str()),
                            );
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(e) => self.send(e.message(self.server(), me.nick())),
        }
    }

    fn names(&self, room: &str) {
        let Some(me) = &self.me else { return };
        match self.hub.names(me.id, room) {
            Some((name, names)) => {
                // 353 lines stay under 512 bytes: split the list.
                let mut chunk = String::new();
                for n in names {
                    if chunk.len() + n.len() > 380 {
                        self.num("353", &["=", &name, &chunk]);
                        chunk.clear();
                    }
                    if !chunk.is_empty() {
                        chunk.push(' ');
                    }
                    chunk.push_str(&n);
                }
                if !chunk.is_empty() {
                    self.num("353", &["=", &name, &chunk]);
                }
                self.num("366", &[&name, "End of /NAMES list"]);
            }
            None => self.num("366", &[room, "End of /NAMES list"]),
        }
    }

    async fn command(&mut self, m: Message) -> Next {
        let Some(me) = self.me.clone() else {
            return Next::Go;
        };
        let p = |i: usize| m.param(i).unwrap_or("").to_string();
        let need = |n: usize| m.params.len() >= n;
        match m.command.as_str() {
            "PING" => self.send(
                Message::new("PONG", [self.server().to_string(), p(0)]).with_prefix(self.server()),
            ),
            "PONG" => {}
            "QUIT" => {
                let reason = if p(0).is_empty() {
                    "Quit".to_string()
                } else {
                    format!("Quit: {}", p(0))
                };
                return Next::Close(reason);
            }
            "CAP" => self.cap(&m),
            "NICK" if !need(1) => self.num("431", &["No nickname given"]),
            "NICK" if irc::fold(&p(0)) == irc::fold(me.nick()) => {}
            "NICK" => self.num(
                "432",
                &[
                    &p(0),
                    "Your nick is your account name and cannot be changed",
                ],
            ),
            "USER" | "PASS" => self.num("462", &["You may not reregister"]),
            "AUTHENTICATE" => self.num("907", &["You have already authenticated"]),
            "JOIN" if !need(1) => self.num("461", &["JOIN", "Not enough parameters"]),
            "JOIN" if p(0) == "0" => {
                for (room, _, _) in self.hub.list() {
                    let _ = self.hub.part(me.id, &room, "Left all channels");
                }
            }
            "JOIN" => {
                for room in p(0).split(',').filter(|r| !r.is_empty()) {
                    self.join(room).await;
                }
            }
            "PART" if !need(1) => self.num("461", &["PART", "Not enough parameters"]),
            "PART" => {
                for room in p(0).split(',').filter(|r| !r.is_empty()) {
                    if let Err(e) = self.hub.part(me.id, room, &p(1)) {
                        self.send(e.message(self.server(), me.nick()));
                    }
                }
            }
            "PRIVMSG" | "NOTICE" if !need(1) => {
                self.num("411", &[&format!("No recipient given ({})", m.command)])
            }
            "PRIVMSG" | "NOTICE" if !need(2) || p(1).is_empty() => {
                self.num("412", &["No text to send"])
            }
            "PRIVMSG" | "NOTICE" => {
                let notice = m.command == "NOTICE";
                let text = p(1);
                for target in p(0).split(',').filter(|t| !t.is_empty()).take(4) {
                    match self.hub.message(me.id, &m.command, target, &text) {
                        Ok(delivered) => {
                            if let Some(room) = delivered.room {
                                let entry = ChatLine {
                                    at: unix_now(),
                                    room,
                                    sender: me.nick().to_string(),
                                    text: text.clone(),
                                };
                                if let Err(e) = self.shared.accounts.log_chat(&entry).await {
                                    tracing::warn!(error = %e, "cannot write the chat log");
                                }
                            }
                            if let (Some((nick, away)), false) = (delivered.away, notice) {
                                self.num("301", &[&nick, &away]);
                            }
                        }
                        // NOTICE never gets an automatic reply (RFC 2812 §3.3.2).
                        Err(e) if !notice => self.send(e.message(self.server(), me.nick())),
                        Err(_) => {}
                    }
                }
            }
            "NAMES" if !need(1) => self.num("366", &["*", "End of /NAMES list"]),
            "NAMES" => {
                for room in p(0).split(',') {
                    self.names(room);
                }
            }
            "TOPIC" if !need(1) => self.num("461", &["TOPIC", "Not enough parameters"]),
            "TOPIC" if need(2) => {
                if let Err(e) = self.hub.set_topic(me.id, &p(0), &p(1)) {
                    self.send(e.message(self.server(), me.nick()));
                }
            }
            "TOPIC" => match self.hub.topic(&p(0)) {
                None => self.send(HubError::NoSuchChannel(p(0)).message(self.server(), me.nick())),
                Some((name, None)) => self.num("331", &[&name, "No topic is set"]),
                Some((name, Some((text, who, at)))) => {
                    self.num("332", &[&name, &text]);
                    self.num("333", &[&name, &who, &at.to_string()]);
                }
            },
            "MODE" if !need(1) => self.num("461", &["MODE", "Not enough parameters"]),
            "MODE" => self.mode(&me, &m),
            "WHO" => {
                let target = if need(1) { p(0) } else { "*".into() };
                for w in self.hub.who(&target) {
                    let flags = format!(
                        "{}{}",
                        if w.away { 'G' } else { 'H' },
                        if w.op { "@" } else { "" }
                    );
                    let room = if target.starts_with('#') {
                        target.as_str()
                    } else {
                        "*"
                    };
                    self.num(
                        "352",
                        &[
                            room,
                            &w.user,
                            &w.host,
                            self.server(),
                            &w.nick,
                            &flags,
                            &format!("0 {}", w.realname),
                        ],
                    );
                }
                self.num("315", &[&target, "End of /WHO list"]);
            }
            "WHOIS" if !need(1) => self.num("431", &["No nickname given"]),
            "WHOIS" => {
                let nick = m.params.last().cloned().unwrap_or_default();
                match self.hub.whois(&nick) {
                    Some(w) => {
                        self.num(
                            "311",
                            &[&w.who.nick, &w.who.user, &w.who.host, "*", &w.who.realname],
                        );
                        if !w.rooms.is_empty() {
                            self.num("319", &[&w.who.nick, &w.rooms.join(" ")]);
                        }
                        self.num("312", &[&w.who.nick, self.server(), "Ferry chat"]);
                        if let Some(away) = &w.away {
                            self.num("301", &[&w.who.nick, away]);
                        }
                        if let Some(account) = &w.account {
                            self.num("330", &[&w.who.nick, account, "is logged in as"]);
                        }
                        self.num(
                            "317",
                            &[
                                &w.who.nick,
                                "0",
                                &w.signon.to_string(),
                                "seconds idle, signon time",
                            ],
                        );
                        self.num("318", &[&w.who.nick, "End of /WHOIS list"]);
                    }
                    None => {
                        self.num("401", &[&nick, "No such nick/channel"]);
                        self.num("318", &[&nick, "End of /WHOIS list"]);
                    }
                }
            }
            "AWAY" if p(0).is_empty() => {
                self.hub.set_away(me.id, None);
                self.num("305", &["You are no longer marked as being away"]);
            }
            "AWAY" => {
                self.hub
                    .set_away(me.id, Some(p(0).chars().take(200).collect()));
                self.num("306", &["You have been marked as being away"]);
            }
            "LIST" => {
                self.num("321", &["Channel", "Users  Name"]);
                for (room, n, topic) in self.hub.list() {
                    self.num("322", &[&room, &n.to_string(), &topic]);
                }
                self.num("323", &["End of /LIST"]);
            }
            "ISON" => {
                let on: Vec<String> = m
                    .params
                    .iter()
                    .flat_map(|p| p.split_whitespace())
                    .filter(|n| self.hub.is_online(n))
                    .map(str::to_string)
                    .collect();
                self.num("303", &[&on.join(" ")]);
            }
            "LUSERS" => {
                let (users, rooms) = self.hub.counts();
                self.num(
                    "251",
                    &[&format!(
                        "There are {users} users and 0 invisible on 1 servers"
                    )],
                );
                self.num("254", &[&rooms.to_string(), "channels formed"]);
                self.num("255", &[&format!("I have {users} clients and 0 servers")]);
            }
            "MOTD" => self.num("422", &["MOTD File is missing"]),
            "VERSION" => self.num("351", &[VERSION, self.server(), "Ferry chat"]),
            "USERHOST" => {
                let replies: Vec<String> = m
                    .params
                    .iter()
                    .filter_map(|n| self.hub.whois(n))
                    .map(|w| {
                        format!(
                            "{}={}{}@{}",
                            w.who.nick,
                            if w.away.is_some() { '-' } else { '+' },
                            w.who.user,
                            w.who.host
                        )
                    })
                    .collect();
                self.num("302", &[&replies.join(" ")]);
            }
            other => self.num("421", &[other, "Unknown command"]),
        }
        Next::Go
    }

    fn mode(&mut self, me: &Identity, m: &Message) {
        let target = m.param(0).unwrap_or("");
        let modes = m.param(1).unwrap_or("");
        if target.starts_with('#') {
            let Some((room, created)) = self.hub.room_info(target) else {
                self.send(
                    HubError::NoSuchChannel(target.to_string()).message(self.server(), me.nick()),
                );
                return;
            };
            match modes {
                "" => {
                    self.num("324", &[&room, "+n"]);
                    self.num("329", &[&room, &created.to_string()]);
                }
                "b" | "+b" => self.num("368", &[&room, "End of channel ban list"]),
                other => {
                    let c = other
                        .trim_start_matches(['+', '-'])
                        .chars()
                        .next()
                        .unwrap_or('?');
                    self.num(
                        "472",
                        &[&c.to_string(), "is not a mode this server lets you change"],
                    );
                }
            }
        } else if irc::fold(target) != irc::fold(me.nick()) {
            self.num("502", &["Cannot change mode for other users"]);
        } else {
            match modes {
                "" => self.num(
                    "221",
                    &[if self.hub.is_invisible(me.id) {
                        "+i"
                    } else {
                        "+"
                    }],
                ),
                "+i" | "-i" => {
                    self.hub.set_invisible(me.id, modes == "+i");
                    self.send(Message::new("MODE", [me.nick(), modes]).with_prefix(me.prefix()));
                }
                _ => self.num("501", &["Unknown MODE flag"]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bound server's shared state with no listeners, in a fresh data dir.
    async fn shared() -> (tempfile::TempDir, Arc<Shared>) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::config::Config {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        config.ftp.listen = Vec::new();
        config.chat.listen = Vec::new();
        config.chat.listen_tls = Vec::new();
        let accounts = crate::accounts::Accounts::open(dir.path()).await.unwrap();
        let (cert, key) = crate::tls::ensure_generated(dir.path()).unwrap();
        let tls = crate::tls::Tls::load(&cert, &key).unwrap();
        let server = crate::server::Server::bind(config, accounts, tls)
            .await
            .unwrap();
        (dir, server.shared())
    }

    /// What every idle client pays for its task: the connection future must stay small (its
    /// commands, TLS handshake and registration live in boxes that exist only while used).
    #[tokio::test]
    async fn the_connection_future_stays_small() {
        let (_dir, shared) = shared().await;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = l.accept().await.unwrap();
        let slot = shared.slots.connect(peer.ip(), 10, 10).unwrap();
        let fut = run(shared.clone(), stream, peer, slot, false);
        let size = std::mem::size_of_val(&fut);
        assert!(size <= 1024, "the connection future is {size} bytes");
    }
}
