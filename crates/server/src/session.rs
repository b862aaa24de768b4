//! One FTP control connection: the task that owns all of the session's state.
//!
//! The loop `select!`s over the next command line, the running transfer, the idle timer and the
//! shutdown tokens. A transfer runs in its own task (so ABOR, STAT and NOOP are answered while it
//! runs); other commands that arrive meanwhile are queued and run after its final reply.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use ferry_proto::ftp::command::HashAlgo;
use ferry_proto::ftp::{parse, Command, Reply};
use ferry_proto::vpath::VirtualPath;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::accounts::User;
use crate::commands;
use crate::data::DataPlan;
use crate::error::parse_error_reply;
use crate::finish::{AfterReply, Done};
use crate::net::Stream;
use crate::server::{ConnSlot, Shared, UserSlot};
use crate::storage::Home;

/// Most commands queued behind a running transfer.
const MAX_QUEUED: usize = 32;

/// A logged-in user's session facts.
#[derive(Debug)]
pub struct LoggedIn {
    /// The account.
    pub user: User,
    /// The jailed home.
    pub home: Home,
    _slot: UserSlot,
}

impl LoggedIn {
    /// Bundles a login.
    pub fn new(user: User, home: Home, slot: UserSlot) -> LoggedIn {
        LoggedIn {
            user,
            home,
            _slot: slot,
        }
    }
}

/// A transfer running in its own task.
#[derive(Debug)]
pub struct Running {
    /// Resolves to the final reply (226, 426, 451, 552, ...) and the work for after it.
    pub handle: JoinHandle<Done>,
    /// Cancelled by ABOR, by the control connection closing, or by hard shutdown.
    pub abort: CancellationToken,
    /// What and where, for STAT.
    pub what: String,
    /// Bytes moved so far.
    pub progress: Arc<AtomicU64>,
    /// When it started.
    pub started: Instant,
}

/// Which MLST facts the client asked for (OPTS MLST).
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    /// type
    pub kind: bool,
    /// size
    pub size: bool,
    /// modify
    pub modify: bool,
    /// perm
    pub perm: bool,
    /// unique
    pub unique: bool,
}

impl Default for Facts {
    fn default() -> Self {
        Facts {
            kind: true,
            size: true,
            modify: true,
            perm: true,
            unique: true,
        }
    }
}

/// The session's protocol state (everything a command can change).
#[derive(Debug)]
pub struct State {
    /// USER given, waiting for PASS.
    pub pending_user: Option<String>,
    /// After a successful PASS.
    pub login: Option<LoggedIn>,
    /// Current directory.
    pub cwd: VirtualPath,
    /// TYPE A (listings in CRLF either way; files are sent unchanged).
    pub ascii: bool,
    /// REST offset for the next RETR/STOR.
    pub rest: u64,
    /// RNFR source.
    pub rename_from: Option<VirtualPath>,
    /// The data connection for the next transfer.
    pub data: DataPlan,
    /// After `EPSV ALL` only EPSV is allowed.
    pub epsv_all: bool,
    /// OPTS HASH selection.
    pub hash_algo: HashAlgo,
    /// RANG range (start, end inclusive), used by the next HASH.
    pub rang: Option<(u64, u64)>,
    /// OPTS MLST.
    pub facts: Facts,
    /// PROT P: data connections use TLS.
    pub prot_private: bool,
}

impl Default for State {
    fn default() -> Self {
        State {
            pending_user: None,
            login: None,
            cwd: VirtualPath::root(),
            ascii: false,
            rest: 0,
            rename_from: None,
            data: DataPlan::None,
            epsv_all: false,
            hash_algo: HashAlgo::Sha256,
            rang: None,
            facts: Facts::default(),
            prot_private: false,
        }
    }
}

/// The control connection: a stream plus bounded read and write buffers.
#[derive(Debug)]
pub struct Conn {
    stream: Stream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    max_line: usize,
    /// How long a reply may wait for the client to make room for it (the transfer stall
    /// timeout): a client that stops reading its replies is dropped, not waited for.
    send_limit: Duration,
    discarding: bool,
    eof: bool,
}

/// Writes all of `buf`, waiting at most `limit` for a client that does not make room for it.
/// The timer exists only if the socket does not take the bytes at once, and then on the heap:
/// it is not part of the session's own state, which is what an idle session costs.
async fn write_bounded(stream: &mut Stream, buf: &[u8], limit: Duration) -> std::io::Result<()> {
    let mut write = std::pin::pin!(stream.write_all(buf));
    let first = std::future::poll_fn(|cx| Poll::Ready(Future::poll(write.as_mut(), cx))).await;
    if let Poll::Ready(done) = first {
        return done;
    }
    match Box::pin(tokio::time::timeout(limit, write)).await {
        Ok(done) => done,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client stopped reading its replies",
        )),
    }
}

/// The outcome of reading one line.
#[derive(Debug)]
pub enum Line {
    /// A complete line without its line end.
    Complete(Vec<u8>),
    /// A line longer than the limit was discarded.
    TooLong,
    /// The peer closed the connection.
    Eof,
}

impl Conn {
    fn new(stream: Stream, max_line: usize, send_limit: Duration) -> Conn {
        Conn {
            stream,
            rbuf: BytesMut::new(),
            wbuf: Vec::new(),
            max_line,
            send_limit,
            discarding: false,
            eof: false,
        }
    }

    /// Whether unread bytes are buffered (pipelined commands).
    pub fn has_buffered(&self) -> bool {
        !self.rbuf.is_empty()
    }

    /// Reads the next line; cancel-safe (state lives in `rbuf`).
    pub async fn next_line(&mut self) -> std::io::Result<Line> {
        loop {
            if let Some(pos) = self.rbuf.iter().position(|&b| b == b'\n') {
                let mut line = self.rbuf.split_to(pos + 1);
                if self.discarding {
                    self.discarding = false;
                    continue;
                }
                if pos + 1 > self.max_line {
                    return Ok(Line::TooLong);
                }
                line.truncate(pos);
                if line.last() == Some(&b'\r') {
                    line.truncate(pos - 1);
                }
                if self.rbuf.is_empty() {
                    // An idle session holds no read buffer (the next command allocates one).
                    self.rbuf = BytesMut::new();
                }
                return Ok(Line::Complete(line.to_vec()));
            }
            if self.rbuf.len() > self.max_line {
                self.rbuf.clear();
                if !self.discarding {
                    self.discarding = true;
                    return Ok(Line::TooLong);
                }
            }
            if self.eof {
                return Ok(Line::Eof);
            }
            if self.rbuf.is_empty() {
                // Idle sessions wait here: no read buffer is allocated until bytes arrive.
                self.stream.ready_to_read().await?;
            }
            self.rbuf.reserve(512);
            let n = self.stream.read_buf(&mut self.rbuf).await?;
            if n == 0 {
                return Ok(Line::Eof);
            }
            if !self.rbuf[self.rbuf.len() - n..].contains(&b'\n') {
                // Possibly stopped at a TCP urgent mark: take what is already there.
                let mut more = [0u8; 512];
                while self.rbuf.len() <= self.max_line {
                    match self.stream.read_now(&mut more)? {
                        Some(0) => {
                            self.eof = true;
                            break;
                        }
                        Some(k) => self.rbuf.extend_from_slice(&more[..k]),
                        None => break,
                    }
                    if more.contains(&b'\n') {
                        break;
                    }
                }
            }
        }
    }

    /// Sends one reply, after any held ones, in one write. The buffer is freed afterwards: an
    /// idle session holds none.
    pub async fn send(&mut self, reply: &Reply) -> std::io::Result<()> {
        reply.encode(&mut self.wbuf);
        let sent = write_bounded(&mut self.stream, &self.wbuf, self.send_limit).await;
        self.wbuf = Vec::new();
        crate::spin::kick();
        sent
    }

    /// Holds a reply to go out with the next [`Conn::send`] (a 150 whose transfer already ended
    /// goes out with its 226: one segment, one wake-up of the client).
    pub fn hold(&mut self, reply: &Reply) {
        reply.encode(&mut self.wbuf);
    }

    /// Replaces the plain stream with TLS (the server side of the handshake), within `timeout`.
    pub async fn upgrade(
        &mut self,
        config: Arc<rustls::ServerConfig>,
        timeout: std::time::Duration,
    ) -> std::io::Result<()> {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Detached) else {
            return Err(std::io::Error::other("the connection is not plain TCP"));
        };
        let accept = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
        let tls = tokio::time::timeout(timeout, accept).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
        })??;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// Shuts the connection down (close_notify first on TLS).
    pub async fn close(&mut self) -> std::io::Result<()> {
        self.stream.shutdown().await
    }

    /// Drops bytes already buffered (after REIN, for example).
    pub fn clear_buffer(&mut self) {
        let n = self.rbuf.len();
        self.rbuf.advance(n);
    }
}

/// What a command asks the loop to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Go on reading commands.
    Continue,
    /// Close the connection (the reply has been sent).
    Close,
}

/// A session: shared state, the connection, its protocol state and its running transfer.
#[derive(Debug)]
pub struct Session {
    /// Server-wide state.
    pub shared: Arc<Shared>,
    /// Session id for logs.
    pub id: u64,
    /// Client address.
    pub peer: SocketAddr,
    /// Our address on this connection (PASV announces it).
    pub local: SocketAddr,
    /// The control connection.
    pub conn: Conn,
    /// Protocol state.
    pub st: State,
    /// The running transfer, if any.
    pub transfer: Option<Running>,
    /// Set by ABOR while a transfer runs: send 226 after the transfer's 426.
    pub abort_requested: bool,
    /// The bookkeeping of a transfer that finished on the session task, for after the
    /// command's reply (see `finish`).
    pub after_reply: Option<AfterReply>,
    /// After AUTH TLS (or on an implicit-TLS listener): this control connection's TLS
    /// configuration, which its protected data connections must resume.
    pub tls: Option<crate::tls::SessionTls>,
    span: tracing::Span,
    _slot: ConnSlot,
}

enum Event {
    Line(std::io::Result<Line>),
    TransferDone(Done),
    Idle,
    PassiveExpired,
    SoftShutdown,
    HardShutdown,
}

async fn join_transfer(t: &mut Option<Running>) -> Done {
    match t {
        Some(r) => match (&mut r.handle).await {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "transfer task failed");
                Reply::new(451, "Transfer failed: local error").into()
            }
        },
        None => std::future::pending().await,
    }
}

impl Session {
    /// Runs a session to its end.
    pub async fn run(
        shared: Arc<Shared>,
        stream: TcpStream,
        peer: SocketAddr,
        slot: ConnSlot,
        implicit: bool,
    ) {
        let id = shared.next_session_id();
        let span = tracing::info_span!("session", id, peer = %peer, user = tracing::field::Empty);
        let Ok(local) = stream.local_addr() else {
            return;
        };
        let _ = stream.set_nodelay(true);
        // ftplib and others send ABOR as TCP urgent data; keep it in the byte stream.
        let _ = socket2::SockRef::from(&stream).set_out_of_band_inline(true);
        let max_line = shared.config.limits.max_line_len;
        let send_limit = shared.config.limits.stall_timeout();
        let mut session = Session {
            shared,
            id,
            peer,
            local,
            conn: Conn::new(Stream::Plain(stream), max_line, send_limit),
            st: State::default(),
            transfer: None,
            abort_requested: false,
            after_reply: None,
            tls: None,
            span: span.clone(),
            _slot: slot,
        };
        async move {
            let _present = crate::spin::Present::new();
            tracing::debug!("connected");
            if implicit {
                // Implicit FTPS: the connection starts with the TLS handshake.
                // Boxed: the handshake's state is large and needed once, not while idle.
                if let Err(e) = Box::pin(session.start_tls()).await {
                    tracing::debug!(error = %e, "implicit TLS handshake failed");
                    return;
                }
            }
            if let Err(e) = session.serve().await {
                tracing::debug!(error = %e, "control connection error");
            }
            // A clean end for TLS clients (close_notify), bounded in case the peer is gone.
            let _ = tokio::time::timeout(Duration::from_secs(2), session.conn.close()).await;
            session.finish_transfer_on_close().await;
            tracing::debug!("closed");
        }
        .instrument(span)
        .await;
    }

    /// Upgrades the control connection to TLS with a configuration of its own (see `tls`).
    pub async fn start_tls(&mut self) -> std::io::Result<()> {
        let config = self
            .shared
            .tls
            .session_config()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let timeout = self.shared.config.tls_handshake_timeout();
        self.conn.upgrade(config.control.clone(), timeout).await?;
        self.tls = Some(config);
        Ok(())
    }

    /// The span of this session (to record the user after login).
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    async fn serve(&mut self) -> std::io::Result<()> {
        let banner = Reply::new(220, self.shared.config.ftp.banner.clone());
        self.conn.send(&banner).await?;
        let idle = self.shared.config.limits.idle_timeout();
        let shutdown = self.shared.shutdown.clone();
        let mut queue: VecDeque<Vec<u8>> = VecDeque::new();
        let mut closing = false;
        let mut deadline = tokio::time::Instant::now() + idle;
        loop {
            // Run queued commands once no transfer is in flight.
            while self.transfer.is_none() {
                let Some(line) = queue.pop_front() else { break };
                if self.handle_line(&line).await? == Flow::Close {
                    return Ok(());
                }
            }
            if closing && self.transfer.is_none() {
                self.conn
                    .send(&Reply::new(421, "Server shutting down, goodbye"))
                    .await?;
                return Ok(());
            }
            // A passive port nobody used, or one kept after a transfer, is released at its
            // deadline.
            let passive = self.st.data.passive_deadline();
            let event = {
                let Session { conn, transfer, .. } = &mut *self;
                let busy = transfer.is_some();
                // One timer and one shutdown wait, not one per cause: what this select holds
                // is part of every idle session's size. The hard shutdown comes after the soft
                // one, so it is waited for once closing.
                let wake = passive.into_iter().chain((!busy).then_some(deadline)).min();
                let stop = if closing {
                    &shutdown.hard
                } else {
                    &shutdown.soft
                };
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => if closing { Event::HardShutdown } else { Event::SoftShutdown },
                    reply = join_transfer(transfer), if busy => Event::TransferDone(reply),
                    line = conn.next_line() => Event::Line(line),
                    _ = sleep_until(wake.unwrap_or(deadline)), if wake.is_some() => {
                        if passive.is_some_and(|p| p <= tokio::time::Instant::now()) {
                            Event::PassiveExpired
                        } else {
                            Event::Idle
                        }
                    }
                }
            };
            match event {
                Event::HardShutdown => {
                    if let Some(t) = &self.transfer {
                        t.abort.cancel();
                    }
                    if self.transfer.is_some() {
                        let done = join_transfer(&mut self.transfer).await;
                        self.transfer = None;
                        self.reply_then(done).await?;
                    }
                    self.conn
                        .send(&Reply::new(421, "Server shutting down, goodbye"))
                        .await?;
                    return Ok(());
                }
                Event::SoftShutdown => closing = true,
                Event::PassiveExpired => {
                    if matches!(self.st.data, DataPlan::Passive(_)) {
                        tracing::debug!("passive port unused until the accept timeout, released");
                    }
                    self.st.data = DataPlan::None;
                }
                Event::TransferDone(done) => {
                    self.transfer = None;
                    self.reply_then(done).await?;
                    if std::mem::take(&mut self.abort_requested) {
                        self.conn
                            .send(&Reply::new(226, "ABOR command successful"))
                            .await?;
                    }
                    deadline = tokio::time::Instant::now() + idle;
                }
                Event::Idle => {
                    tracing::info!("idle timeout");
                    self.conn
                        .send(&Reply::new(421, "Idle timeout, closing control connection"))
                        .await?;
                    return Ok(());
                }
                Event::Line(line) => {
                    deadline = tokio::time::Instant::now() + idle;
                    match line? {
                        Line::Eof => return Ok(()),
                        Line::TooLong => {
                            let max = self.shared.config.limits.max_line_len;
                            self.conn
                                .send(&Reply::new(
                                    500,
                                    format!("Command line too long (limit {max} bytes)"),
                                ))
                                .await?;
                        }
                        Line::Complete(line) if self.transfer.is_some() => {
                            // Boxed, as it is rare: its state would size every idle session.
                            let during = Box::pin(self.handle_during_transfer(line, &mut queue));
                            if during.await? == Flow::Close {
                                return Ok(());
                            }
                        }
                        Line::Complete(line) => {
                            if self.handle_line(&line).await? == Flow::Close {
                                return Ok(());
                            }
                        }
                    }
                }
            }
        }
    }

    /// Commands that are answered while a transfer runs; the rest wait in `queue`.
    async fn handle_during_transfer(
        &mut self,
        line: Vec<u8>,
        queue: &mut VecDeque<Vec<u8>>,
    ) -> std::io::Result<Flow> {
        match parse(&line) {
            Ok(Command::Abor) => {
                if let Some(t) = &self.transfer {
                    t.abort.cancel();
                }
                self.abort_requested = true;
            }
            Ok(Command::Stat(None)) => {
                let reply = commands::info::transfer_status(self);
                self.conn.send(&reply).await?;
            }
            Ok(Command::Noop) => {
                self.conn
                    .send(&Reply::new(200, "NOOP ok, transfer in progress"))
                    .await?
            }
            Ok(Command::Quit) => {
                // RFC 959: QUIT during a transfer closes after the transfer's reply.
                let done = join_transfer(&mut self.transfer).await;
                self.transfer = None;
                self.reply_then(done).await?;
                self.conn.send(&Reply::new(221, "Goodbye")).await?;
                return Ok(Flow::Close);
            }
            _ if queue.len() >= MAX_QUEUED => {
                self.conn
                    .send(&Reply::new(450, "Transfer in progress, command not queued"))
                    .await?;
            }
            _ => queue.push_back(line),
        }
        Ok(Flow::Continue)
    }

    async fn handle_line(&mut self, line: &[u8]) -> std::io::Result<Flow> {
        let cmd = match parse(line) {
            Ok(cmd) => cmd,
            Err(e) => {
                self.conn.send(&parse_error_reply(&e)).await?;
                return Ok(Flow::Continue);
            }
        };
        tracing::trace!(cmd = %commands::verb_of(&cmd), "command");
        // Boxed: the handlers' state lives on the heap only while a command runs, so an idle
        // session's task stays small.
        Box::pin(commands::dispatch(self, cmd)).await
    }

    /// The control connection is gone: abort a running transfer (a killed client must not turn a
    /// truncated upload into a finished one) and wait for its clean-up.
    async fn finish_transfer_on_close(&mut self) {
        if let Some(t) = &self.transfer {
            t.abort.cancel();
            let done = join_transfer(&mut self.transfer).await;
            self.transfer = None;
            if let Some(after) = done.after {
                after.run().await;
            }
        }
    }

    /// Sends a reply, then the bookkeeping of the transfer it ends (also if sending failed).
    pub async fn reply_then(&mut self, done: Done) -> std::io::Result<()> {
        let sent = self.conn.send(&done.reply).await;
        if let Some(after) = done.after {
            after.run().await;
        }
        sent
    }
}
