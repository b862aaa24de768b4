//! The server: shared state, FTP listeners with connection limits, and graceful shutdown.
//!
//! One `CancellationToken` pair drives shutdown: `soft` stops the listeners and closes idle
//! sessions; `hard` (after the grace period) aborts the transfers that are still running, which
//! keeps their partial uploads resumable. Every task runs on one `TaskTracker`.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::{Accounts, GuardConfig, LoginGuard};
use crate::config::{Config, TlsPolicy};
use crate::data::{canonical, PassivePorts};
use crate::events::Events;
use crate::session::Session;
use crate::shards::Shards;
use crate::tls::Tls;
use crate::xferlog::XferLog;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Other start-up I/O (log directory, ...).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The account database.
    #[error("{0}")]
    Accounts(#[from] crate::accounts::AccountError),
}

/// Shutdown tokens.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Stop accepting; idle sessions close, transfers may finish.
    pub soft: CancellationToken,
    /// Abort whatever still runs.
    pub hard: CancellationToken,
}

/// State shared by all sessions.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// Accounts, quota ledger, digest cache.
    pub accounts: Accounts,
    /// Failed-login delay and bans.
    pub guard: LoginGuard,
    /// Session counters for the limits.
    pub slots: Slots,
    /// File activity hook.
    pub events: Events,
    /// Transfer log.
    pub xferlog: XferLog,
    /// Passive port allocator.
    pub passive: PassivePorts,
    /// Bounds concurrent HASH computations.
    pub hash_jobs: Semaphore,
    /// Certificate and rustls configuration.
    pub tls: Tls,
    /// What TLS is required.
    pub tls_policy: TlsPolicy,
    /// The chat room's state.
    pub chat: Arc<crate::chat::Hub>,
    /// Shutdown tokens.
    pub shutdown: Shutdown,
    /// Tracks every session and transfer task.
    pub tracker: TaskTracker,
    /// Open home directories, one handle per account.
    pub homes: crate::storage::Homes,
    next_id: AtomicU64,
    user_locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
}

impl Shared {
    /// A new session id.
    pub fn next_session_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Serialises one user's ledger-changing file operations (upload commit, DELE, RNTO): each
    /// looks at the disk, changes it and charges the difference, and two of them interleaved
    /// would charge the same bytes twice. Held for a stat and a rename, never across a transfer.
    pub async fn lock_user(&self, user_id: i64) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.user_locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.entry(user_id).or_default())
        };
        lock.lock_owned().await
    }
}

#[derive(Debug, Default)]
struct SlotCounts {
    total: usize,
    /// Connections opened plus connections closed, ever (see [`Slots::churn`]).
    churn: u64,
    per_ip: HashMap<IpAddr, usize>,
    per_user: HashMap<String, usize>,
}

/// Counters behind the session limits; the guards give their slot back when dropped.
#[derive(Debug, Clone, Default)]
pub struct Slots {
    inner: Arc<Mutex<SlotCounts>>,
}

/// A connection's place in the global and per-IP counts.
#[derive(Debug)]
pub struct ConnSlot {
    slots: Slots,
    ip: IpAddr,
}

/// A logged-in session's place in its user's count.
#[derive(Debug)]
pub struct UserSlot {
    slots: Slots,
    user: String,
}

/// Why a slot was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SlotRefusal {
    /// The server is full.
    Total(usize),
    /// This IP has too many sessions.
    PerIp(usize),
    /// This user has too many sessions.
    PerUser(usize),
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotCounts> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a connection slot if the global and per-IP limits allow.
    pub fn connect(
        &self,
        ip: IpAddr,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<ConnSlot, SlotRefusal> {
        let mut c = self.lock();
        if c.total >= max_total {
            return Err(SlotRefusal::Total(max_total));
        }
        let n = c.per_ip.entry(ip).or_default();
        if *n >= max_per_ip {
            return Err(SlotRefusal::PerIp(max_per_ip));
        }
        *n += 1;
        c.total += 1;
        c.churn += 1;
        Ok(ConnSlot {
            slots: self.clone(),
            ip,
        })
    }

    /// Takes a per-user slot.
    pub fn login(&self, user: &str, max: usize) -> Result<UserSlot, SlotRefusal> {
        let mut c = self.lock();
        let n = c.per_user.entry(user.to_string()).or_default();
        if *n >= max {
            return Err(SlotRefusal::PerUser(max));
        }
        *n += 1;
        Ok(UserSlot {
            slots: self.clone(),
            user: user.to_string(),
        })
    }

    /// Connections opened plus connections closed since start: unchanged between two looks
    /// means no connection came or went in between.
    pub fn churn(&self) -> u64 {
        self.lock().churn
    }

    /// Sessions open now.
    pub fn total(&self) -> usize {
        self.lock().total
    }

    /// Logged-in sessions per user, for `SITE WHO`-style reports.
    pub fn users(&self) -> Vec<(String, usize)> {
        let mut v: Vec<_> = self
            .lock()
            .per_user
            .iter()
            .map(|(u, n)| (u.clone(), *n))
            .collect();
        v.sort();
        v
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = self.slots.lock();
        c.total = c.total.saturating_sub(1);
        c.churn += 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut c = self.slots.lock();
        if let Some(n) = c.per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                c.per_user.remove(&self.user);
            }
        }
    }
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// FTP (explicit TLS available).
    Ftp,
    /// FTP with implicit TLS.
    FtpImplicit,
    /// Chat (IRC) in plaintext.
    Chat,
    /// Chat (IRC) over TLS.
    ChatTls,
}

impl Kind {
    /// The word `ferry serve` prints for it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ftp => "ftp",
            Kind::FtpImplicit => "ftps",
            Kind::Chat => "chat",
            Kind::ChatTls => "chat-tls",
        }
    }
}

/// A bound, not yet running server.
pub struct Server {
    shared: Arc<Shared>,
    listeners: Vec<(std::net::TcpListener, Kind)>,
}

/// Listen backlog: large enough to absorb a burst of hundreds of connects (peers use 32–128).
const BACKLOG: u32 = 4096;

/// A non-blocking listening socket, not yet registered with any event loop: every session thread
/// registers a handle of its own ([`crate::shards`]).
fn bind_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG as i32)?;
    Ok(socket.into())
}

/// Listening sockets on the port of `first` (which is the first of them), one per session
/// thread, in one `SO_REUSEPORT` group: the kernel hands each connection to one of them (by a
/// hash of the addresses), so it wakes one thread. With one socket watched by every thread,
/// each connection woke them all and all but one found nothing to accept; on this project's
/// 2-vCPU VM that cross-CPU wake-up was a quarter of a login's latency. Another process
/// binding the port without `SO_REUSEPORT` (a second `ferry serve`) still fails, because the
/// first socket was bound without it.
fn per_thread_listeners(
    first: &std::net::TcpListener,
    n: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, SockRef, Socket, Type};
    let addr = first.local_addr()?;
    let head = SockRef::from(first);
    head.set_reuse_port(true)?;
    let mut sockets = vec![first.try_clone()?];
    let bound = (|| {
        for _ in 1..n {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            socket.set_nonblocking(true)?;
            if addr.is_ipv6() {
                socket.set_only_v6(head.only_v6()?)?;
            }
            socket.bind(&addr.into())?;
            socket.listen(BACKLOG as i32)?;
            sockets.push(socket.into());
        }
        Ok::<_, std::io::Error>(())
    })();
    if let Err(e) = bound {
        // The one socket stays, as it was.
        let _ = head.set_reuse_port(false);
        return Err(e);
    }
    Ok(sockets)
}

impl Server {
    /// Opens the logs and binds every FTP listener.
    pub async fn bind(config: Config, accounts: Accounts, tls: Tls) -> Result<Server, ServerError> {
        accounts.reset_reservations().await?;
        let mut listeners = Vec::new();
        let wanted = [
            (&config.ftp.listen, Kind::Ftp),
            (&config.ftp.listen_implicit, Kind::FtpImplicit),
            (&config.chat.listen, Kind::Chat),
            (&config.chat.listen_tls, Kind::ChatTls),
        ];
        for (addrs, kind) in wanted {
            for addr in addrs {
                let l = bind_listener(*addr).map_err(|source| ServerError::Bind {
                    addr: *addr,
                    source,
                })?;
                listeners.push((l, kind));
            }
        }
        let xferlog = if config.log.xferlog {
            XferLog::open(&config.data_dir.join("logs").join("xferlog"))?
        } else {
            XferLog::disabled()
        };
        let (lo, hi) = config.passive_range();
        let guard = LoginGuard::new(GuardConfig {
            max_failures: config.limits.max_login_failures,
            window: Duration::from_secs(config.limits.login_failure_window_secs),
            ban: Duration::from_secs(config.limits.ban_secs),
            exempt: config.limits.ban_exempt.clone(),
        });
        let shared = Arc::new(Shared {
            tls_policy: config.tls_policy(),
            chat: Arc::new(crate::chat::Hub::default()),
            tls,
            hash_jobs: Semaphore::new(config.limits.max_hash_jobs),
            passive: PassivePorts::new(lo, hi),
            config,
            accounts,
            guard,
            slots: Slots::default(),
            events: Events::default(),
            xferlog,
            shutdown: Shutdown::default(),
            tracker: TaskTracker::new(),
            next_id: AtomicU64::new(0),
            user_locks: Mutex::new(HashMap::new()),
            homes: crate::storage::Homes::default(),
        });
        Ok(Server { shared, listeners })
    }

    /// The addresses actually bound (port 0 resolved) and what they serve.
    pub fn local_addrs(&self) -> Vec<(SocketAddr, Kind)> {
        self.listeners
            .iter()
            .filter_map(|(l, kind)| l.local_addr().ok().map(|a| (a, *kind)))
            .collect()
    }

    /// The shared state (for the event hook and tests).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves on `threads` session threads (see [`crate::shards`]) until `signal` completes,
    /// then shuts down gracefully.
    pub async fn run(
        self,
        threads: usize,
        signal: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let shared = self.shared;
        let chat = self
            .listeners
            .iter()
            .any(|(_, k)| matches!(k, Kind::Chat | Kind::ChatTls));
        let shards = Shards::start(threads)?;
        let window = Duration::from_micros(shared.config.ftp.poll_after_reply_us);
        if !window.is_zero() {
            shards.spawn_on_each(|_| {
                crate::spin::poll_after_replies(window, shared.shutdown.hard.clone())
            });
        }
        for (listener, kind) in &self.listeners {
            let kind = *kind;
            // A socket per thread, so a connection wakes one thread; if that fails, every
            // thread watches the one socket.
            let mut handles = Vec::new();
            match per_thread_listeners(listener, shards.len()) {
                Ok(own) => handles.extend(own.into_iter().map(Some)),
                Err(e) => {
                    tracing::warn!(error = %e, "one listener per thread failed");
                    for _ in 0..shards.len() {
                        handles.push(Some(listener.try_clone()?));
                    }
                }
            }
            shards.spawn_on_each(|i| {
                let listener = handles[i].take();
                let shared = shared.clone();
                shared.clone().tracker.track_future(async move {
                    let Some(listener) = listener else { return };
                    match TcpListener::from_std(listener) {
                        Ok(l) => accept_loop(l, shared, kind).await,
                        Err(e) => tracing::error!(error = %e, "cannot watch a listener"),
                    }
                })
            });
        }
        drop(self.listeners);
        shared
            .tracker
            .spawn(crate::heap::trim_after_bursts(shared.clone()));
        {
            let (accounts, stop) = (shared.accounts.clone(), shared.shutdown.soft.clone());
            shared
                .tracker
                .spawn(async move { accounts.flush_digests_in_background(stop).await });
        }
        if chat {
            shared
                .tracker
                .spawn(crate::chat::keeper::run(shared.clone()));
        }
        if shared.config.chat.announce_files {
            shared
                .tracker
                .spawn(crate::chat::announce_files(shared.clone()));
        }
        signal.await;
        let grace = Duration::from_secs(shared.config.limits.shutdown_grace_secs);
        tracing::info!(
            sessions = shared.slots.total(),
            grace_secs = grace.as_secs(),
            "shutting down"
        );
        shared.shutdown.soft.cancel();
        shared.tracker.close();
        if tokio::time::timeout(grace, shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over, aborting running transfers");
            shared.shutdown.hard.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), shared.tracker.wait()).await;
        }
        shards.stop().await;
        // Uploads that ended after the background flush stopped.
        shared.accounts.flush_digests().await;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, kind: Kind) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.soft.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                admit(stream, peer, &shared, kind);
            }
            Err(e) => {
                // EMFILE and friends: log, back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn admit(stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>, kind: Kind) {
    let ip = canonical(peer.ip());
    let limits = &shared.config.limits;
    let msg = if let Some(left) = shared.guard.is_banned(ip) {
        format!(
            "421 Too many failed logins from your address, try again in {} s\r\n",
            left.as_secs().max(1)
        )
    } else {
        match shared
            .slots
            .connect(ip, limits.max_sessions, limits.max_sessions_per_ip)
        {
            Ok(slot) => {
                let shared2 = shared.clone();
                match kind {
                    Kind::Ftp | Kind::FtpImplicit => {
                        let implicit = kind == Kind::FtpImplicit;
                        shared.tracker.spawn(async move {
                            Session::run(shared2, stream, peer, slot, implicit).await;
                        });
                    }
                    Kind::Chat | Kind::ChatTls => {
                        let tls = kind == Kind::ChatTls;
                        // The connection's own future, not wrapped: an idle chat client costs
                        // little more than its size.
                        shared
                            .tracker
                            .spawn(crate::chat::conn::run(shared2, stream, peer, slot, tls));
                    }
                }
                return;
            }
            Err(SlotRefusal::PerIp(n)) => {
                format!("421 Too many connections from your address (limit {n})\r\n")
            }
            Err(_) => "421 Too many users connected, try again later\r\n".to_string(),
        }
    };
    {
        tracing::info!(peer = %peer, reason = msg.trim_end(), "connection refused");
        shared.tracker.spawn(async move {
            let mut stream = stream;
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(msg.as_bytes()))
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_thread_listeners_share_the_port_split_connections_and_keep_others_out() {
        let first = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let sockets = per_thread_listeners(&first, 2).unwrap();
        assert_eq!(sockets.len(), 2);
        for s in &sockets {
            assert_eq!(s.local_addr().unwrap(), addr);
        }
        // A second server on the port is refused, as against a single socket.
        let err = bind_listener(addr).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);

        // Every connection is queued on exactly one of the sockets.
        let clients: Vec<_> = (0..64)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let mut per_socket = Vec::new();
        for s in &sockets {
            let mut n = 0;
            while s.accept().is_ok() {
                n += 1;
            }
            per_socket.push(n);
        }
        assert_eq!(
            per_socket.iter().sum::<usize>(),
            clients.len(),
            "{per_socket:?}"
        );
        assert!(per_socket.iter().all(|&n| n > 0), "{per_socket:?}");
    }

    #[test]
    fn churn_counts_every_connection_opened_and_closed_and_nothing_else() {
        let slots = Slots::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(slots.churn(), 0);
        let a = slots.connect(ip, 10, 1).unwrap();
        assert_eq!(slots.churn(), 1);
        // A refused connection took no slot and is no churn.
        assert!(slots.connect(ip, 10, 1).is_err());
        let login = slots.login("alice", 5).unwrap();
        assert_eq!(slots.churn(), 1);
        drop(login);
        drop(a);
        assert_eq!(slots.churn(), 2);
        assert_eq!(slots.total(), 0);
    }
}
