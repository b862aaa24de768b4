//! Data connections: passive ports (PASV/EPSV) and active connects (PORT/EPRT), with the checks
//! of RFC 2577: a passive connection must come from the control connection's address, and an
//! active one may only go to the client's own address on a port ≥ 1024 (no FTP bounce).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::error::CommandError;

/// Connections a passive listener queues (one is expected).
const BACKLOG: i32 = 8;

/// The passive port range and a cursor so consecutive PASVs spread over it.
#[derive(Debug)]
pub struct PassivePorts {
    lo: u16,
    hi: u16,
    next: AtomicU32,
}

impl PassivePorts {
    /// A range `lo..=hi`.
    pub fn new(lo: u16, hi: u16) -> PassivePorts {
        let span = u32::from(hi - lo) + 1;
        PassivePorts {
            lo,
            hi,
            next: AtomicU32::new(rand::random::<u32>() % span),
        }
    }

    /// Binds a listener on `ip` at the next free port of the range; the listener and its port.
    /// It is a plain non-blocking socket, not registered with the runtime (see [`Passive`]).
    pub fn bind(&self, ip: IpAddr) -> io::Result<(std::net::TcpListener, u16)> {
        use socket2::{Domain, Socket, Type};
        let span = u32::from(self.hi - self.lo) + 1;
        let tries = span.min(256);
        let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free passive port");
        for _ in 0..tries {
            let n = self.next.fetch_add(1, Ordering::Relaxed) % span;
            let port = self.lo + n as u16;
            let socket = Socket::new(
                Domain::for_address(SocketAddr::new(ip, 0)),
                Type::STREAM.nonblocking().cloexec(),
                None,
            )?;
            socket.set_reuse_address(true)?;
            match socket.bind(&SocketAddr::new(ip, port).into()) {
                Ok(()) => {
                    socket.listen(BACKLOG)?;
                    return Ok((socket.into(), port));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Treats an IPv4-mapped IPv6 address as the IPv4 address it carries.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// A passive listener waiting for the client's data connection. Nothing watches it until the
/// transfer command arrives: by then the client has almost always connected (it connects after
/// the 227/229 reply, before it sends RETR or STOR), so one `accept` takes the connection without
/// a task, a readiness registration or a wake-up of its own. Connections from another address
/// are accepted and dropped (RFC 2577). The session drops the listener at its deadline if no
/// transfer came, which releases the port.
#[derive(Debug)]
pub struct Passive {
    listener: std::net::TcpListener,
    port: u16,
    client_ip: IpAddr,
    deadline: tokio::time::Instant,
}

/// How long a passive listener is kept after a transfer found its connection already queued,
/// for the session's next PASV/EPSV to answer with the same port (see [`DataPlan::Spare`]).
pub const SPARE_KEEP: Duration = Duration::from_secs(1);

impl Passive {
    /// When the port is released if no transfer took the connection.
    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    /// The client's connection if it is already queued (a non-blocking socket, not registered
    /// with the runtime); `None` if the client has not connected yet.
    fn try_accept(&self) -> io::Result<Option<std::net::TcpStream>> {
        take_client(&self.listener, self.client_ip)
    }

    /// The client's connection: taken at once if it is there, else awaited until the deadline.
    async fn accept(self) -> io::Result<TcpStream> {
        if let Some(stream) = self.try_accept()? {
            return TcpStream::from_std(stream);
        }
        let (client_ip, deadline) = (self.client_ip, self.deadline);
        let listener = TcpListener::from_std(self.listener)?;
        let accept = async {
            loop {
                let (stream, from) = listener.accept().await?;
                if is_client(Some(from), client_ip) {
                    return Ok(stream);
                }
            }
        };
        match tokio::time::timeout_at(deadline, accept).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no data connection in time",
            )),
        }
    }
}

/// Whether a data connection comes from the client; another address is logged (and the caller
/// drops the connection).
fn is_client(from: Option<SocketAddr>, client_ip: IpAddr) -> bool {
    let ok = from.is_some_and(|a| canonical(a.ip()) == client_ip);
    if !ok {
        tracing::warn!(from = ?from, "data connection from a foreign address refused");
    }
    ok
}

/// Accepts what `listener` has queued until a connection from `client_ip` turns up (others are
/// dropped, RFC 2577); `None` when the queue is empty.
fn take_client(
    listener: &std::net::TcpListener,
    client_ip: IpAddr,
) -> io::Result<Option<std::net::TcpStream>> {
    while let Some((stream, from)) = accept_queued(listener)? {
        if is_client(from, client_ip) {
            return Ok(Some(stream));
        }
    }
    Ok(None)
}

/// The next connection `listener` has queued (non-blocking) and where it comes from; `None`
/// when the queue is empty.
fn accept_queued(
    listener: &std::net::TcpListener,
) -> io::Result<Option<(std::net::TcpStream, Option<SocketAddr>)>> {
    use rustix::net::{acceptfrom_with, SocketFlags};
    loop {
        let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
        match acceptfrom_with(listener, flags) {
            Ok((fd, from)) => {
                let from = from.and_then(|a| SocketAddr::try_from(a).ok());
                return Ok(Some((std::net::TcpStream::from(fd), from)));
            }
            Err(rustix::io::Errno::AGAIN) => return Ok(None),
            Err(rustix::io::Errno::CONNABORTED | rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// How the next transfer gets its data connection.
#[derive(Debug, Default)]
pub enum DataPlan {
    /// Neither PASV nor PORT given yet.
    #[default]
    None,
    /// A passive listener (see [`Passive`]).
    Passive(Passive),
    /// No PASV given, but the listener of the last one, whose connection the session task took
    /// for a transfer (it was already queued), kept for [`SPARE_KEEP`]: a client that sends PASV, RETR, PASV, RETR... for many
    /// small files gets the same port again, and the server saves creating, binding and closing
    /// a socket per file. It serves no transfer until a new PASV/EPSV re-arms it (after
    /// dropping whatever connected to it in between).
    Spare(Passive),
    /// Connect to the client at this address.
    Active(SocketAddr),
    /// Already connected: a transfer that began on the session task goes on in its own.
    Connected(TcpStream),
    /// The client's passive connection, accepted by the session task (which kept the listener
    /// as a spare) and handed to the transfer's task; not yet registered with the runtime.
    Accepted(std::net::TcpStream),
}

impl DataPlan {
    /// Waits on `listener` (bound to `port`) for up to `timeout`, only for connections from
    /// `client_ip`.
    pub fn passive(
        listener: std::net::TcpListener,
        port: u16,
        client_ip: IpAddr,
        timeout: Duration,
    ) -> DataPlan {
        DataPlan::Passive(Passive {
            listener,
            port,
            client_ip: canonical(client_ip),
            deadline: tokio::time::Instant::now() + timeout,
        })
    }

    /// Re-arms a spare listener for a new PASV/EPSV: the plan becomes a passive one on the same
    /// port, waiting for up to `timeout`; its port. Connections queued since the last transfer
    /// belong to no PASV and are dropped first. `None` (plan left as it was) when there is no
    /// spare or it cannot be drained; the caller then binds a new port.
    pub fn rearm_spare(&mut self, timeout: Duration) -> Option<u16> {
        let DataPlan::Spare(spare) = self else {
            return None;
        };
        // Bounded: a peer that keeps connecting cannot hold the session here; past the bound
        // the spare is given up for a new port.
        let mut drained = false;
        for _ in 0..2 * BACKLOG {
            match accept_queued(&spare.listener) {
                Ok(Some((_stale, from))) => {
                    tracing::debug!(from = ?from, "connection to a kept passive port dropped");
                }
                Ok(None) => {
                    drained = true;
                    break;
                }
                Err(_) => return None,
            }
        }
        if !drained {
            return None;
        }
        let DataPlan::Spare(mut passive) = std::mem::take(self) else {
            unreachable!("checked above");
        };
        let port = passive.port;
        passive.deadline = tokio::time::Instant::now() + timeout;
        *self = DataPlan::Passive(passive);
        Some(port)
    }

    /// The client's passive data connection if it is already there (a non-blocking socket not
    /// registered with the runtime, for a transfer that may finish at once); the plan is then
    /// used up, its listener kept as a [`DataPlan::Spare`]. `None` (plan unchanged) if it is
    /// not a passive plan or the client has not connected yet.
    pub fn take_ready(&mut self) -> Option<std::net::TcpStream> {
        let DataPlan::Passive(passive) = self else {
            return None;
        };
        match passive.try_accept() {
            Ok(Some(stream)) => {
                if let DataPlan::Passive(mut passive) = std::mem::take(self) {
                    passive.deadline = tokio::time::Instant::now() + SPARE_KEEP;
                    *self = DataPlan::Spare(passive);
                }
                Some(stream)
            }
            Ok(None) => None,
            // The transfer's own connect reports it.
            Err(_) => None,
        }
    }

    /// When a waiting or spare passive listener is to be released, if there is one.
    pub fn passive_deadline(&self) -> Option<tokio::time::Instant> {
        match self {
            DataPlan::Passive(p) | DataPlan::Spare(p) => Some(p.deadline()),
            _ => None,
        }
    }

    /// Whether a PASV/EPSV/PORT/EPRT was given (and not yet used).
    pub fn is_set(&self) -> bool {
        !matches!(self, DataPlan::None | DataPlan::Spare(_))
    }

    /// Takes the plan, leaving `None` (each plan serves one transfer).
    pub fn take(&mut self) -> DataPlan {
        std::mem::take(self)
    }

    /// Opens the data connection. `local_ip` is the control connection's local address, used as
    /// the source of active connections.
    pub async fn connect(
        self,
        local_ip: IpAddr,
        timeout: Duration,
    ) -> Result<TcpStream, CommandError> {
        let stream = match self {
            DataPlan::None | DataPlan::Spare(_) => {
                return Err(CommandError::BadSequence(
                    "use PASV, EPSV, PORT or EPRT first",
                ))
            }
            DataPlan::Passive(passive) => passive
                .accept()
                .await
                .map_err(|e| CommandError::DataConnection(e.to_string()))?,
            DataPlan::Connected(stream) => stream,
            DataPlan::Accepted(stream) => TcpStream::from_std(stream)
                .map_err(|e| CommandError::DataConnection(e.to_string()))?,
            DataPlan::Active(addr) => {
                let socket = if addr.is_ipv4() {
                    TcpSocket::new_v4()
                } else {
                    TcpSocket::new_v6()
                }
                .map_err(|e| CommandError::DataConnection(e.to_string()))?;
                if local_ip.is_ipv4() == addr.is_ipv4() {
                    socket
                        .bind(SocketAddr::new(local_ip, 0))
                        .map_err(|e| CommandError::DataConnection(e.to_string()))?;
                }
                match tokio::time::timeout(timeout, socket.connect(addr)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return Err(CommandError::DataConnection(e.to_string())),
                    Err(_) => return Err(CommandError::DataConnection("connect timed out".into())),
                }
            }
        };
        Ok(stream)
    }
}

/// Checks an active-mode target: the client's own address, port ≥ 1024 (RFC 2577).
pub fn check_active_target(target: SocketAddr, control_peer: IpAddr) -> Result<(), CommandError> {
    if canonical(target.ip()) != canonical(control_peer) {
        return Err(CommandError::NotSupported(
            "data connections go only to your own address (FTP bounce protection)".into(),
        ));
    }
    if target.port() < 1024 {
        return Err(CommandError::NotSupported(
            "data port must be 1024 or higher".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounce_to_another_host_or_low_port_is_refused() {
        let me: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(check_active_target("10.0.0.1:2000".parse().unwrap(), me).is_err());
        assert!(check_active_target("127.0.0.1:21".parse().unwrap(), me).is_err());
        assert!(check_active_target("127.0.0.1:2000".parse().unwrap(), me).is_ok());
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(check_active_target("127.0.0.1:2000".parse().unwrap(), mapped).is_ok());
    }

    #[tokio::test]
    async fn passive_port_is_released_after_the_accept_timeout() {
        let ports = PassivePorts::new(20000, 20999);
        let (listener, port) = ports.bind("127.0.0.1".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let plan = DataPlan::passive(
            listener,
            port,
            "127.0.0.1".parse().unwrap(),
            Duration::from_millis(50),
        );
        let err = plan
            .connect("127.0.0.1".parse().unwrap(), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, CommandError::DataConnection(_)));
        assert!(TcpStream::connect(addr).await.is_err(), "port still open");
    }

    fn passive_plan(timeout: Duration) -> (DataPlan, SocketAddr) {
        let ports = PassivePorts::new(20000, 20999);
        let (listener, port) = ports.bind("127.0.0.1".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let plan = DataPlan::passive(listener, port, "127.0.0.1".parse().unwrap(), timeout);
        (plan, addr)
    }

    #[tokio::test]
    async fn a_client_connected_before_the_transfer_is_taken_at_once() {
        let (plan, addr) = passive_plan(Duration::from_secs(5));
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut server = plan
            .connect("127.0.0.1".parse().unwrap(), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(server.peer_addr().unwrap(), client.local_addr().unwrap());
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        server.write_all(b"data").await.unwrap();
        drop(server);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"data");
    }

    #[tokio::test]
    async fn a_taken_connection_leaves_a_spare_that_rearms_on_the_same_port_without_stale_ones() {
        let (mut plan, addr) = passive_plan(Duration::from_secs(5));
        let _client = TcpStream::connect(addr).await.unwrap();
        let server = wait_ready(&mut plan).await;
        drop(server);
        assert!(matches!(plan, DataPlan::Spare(_)) && !plan.is_set());
        use tokio::io::AsyncReadExt;
        let mut stale = TcpStream::connect(addr).await.unwrap();
        assert_eq!(plan.rearm_spare(Duration::from_secs(5)), Some(addr.port()));
        assert!(plan.is_set());
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), stale.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(
            n, 0,
            "the connection queued before the re-arm was not closed"
        );
        let fresh = TcpStream::connect(addr).await.unwrap();
        let server = wait_ready(&mut plan).await;
        assert_eq!(server.peer_addr().unwrap(), fresh.local_addr().unwrap());
        assert_eq!(DataPlan::None.rearm_spare(Duration::from_secs(5)), None);
    }

    /// `take_ready` until the connection the test just made is queued.
    async fn wait_ready(plan: &mut DataPlan) -> std::net::TcpStream {
        for _ in 0..500 {
            if let Some(stream) = plan.take_ready() {
                return stream;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the connection was never queued");
    }

    #[tokio::test]
    async fn a_client_that_connects_after_the_transfer_command_is_waited_for() {
        let (plan, addr) = passive_plan(Duration::from_secs(5));
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            TcpStream::connect(addr).await.unwrap()
        });
        let server = plan
            .connect("127.0.0.1".parse().unwrap(), Duration::from_secs(1))
            .await
            .unwrap();
        let client = late.await.unwrap();
        assert_eq!(server.peer_addr().unwrap(), client.local_addr().unwrap());
    }

    #[tokio::test]
    async fn a_connection_from_another_address_is_dropped_and_the_clients_is_taken() {
        let (plan, addr) = passive_plan(Duration::from_secs(5));
        let foreign = TcpSocket::new_v4().unwrap();
        foreign.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut foreign = foreign.connect(addr).await.unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let server = plan
            .connect("127.0.0.1".parse().unwrap(), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(server.peer_addr().unwrap(), client.local_addr().unwrap());
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), foreign.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "the foreign connection was not closed");
    }
}
