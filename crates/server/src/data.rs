//! Data connections: passive ports (PASV/EPSV) and active connects (PORT/EPRT), with the checks
//! of RFC 2577: a passive connection must come from the control connection's address, and an
//! active one may only go to the client's own address on a port ≥ 1024 (no FTP bounce).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use crate::error::CommandError;

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

    /// Binds a listener on `ip` at the next free port of the range.
    pub fn bind(&self, ip: IpAddr) -> io::Result<TcpListener> {
        let span = u32::from(self.hi - self.lo) + 1;
        let tries = span.min(256);
        let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free passive port");
        for _ in 0..tries {
            let n = self.next.fetch_add(1, Ordering::Relaxed) % span;
            let port = self.lo + n as u16;
            let socket = if ip.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            match socket.bind(SocketAddr::new(ip, port)) {
                Ok(()) => return socket.listen(8),
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

/// How the next transfer gets its data connection.
#[derive(Debug, Default)]
pub enum DataPlan {
    /// Neither PASV nor PORT given yet.
    #[default]
    None,
    /// A passive listener is accepting in the background; it gives up after the accept timeout,
    /// which releases the port.
    Passive(JoinHandle<io::Result<TcpStream>>),
    /// Connect to the client at this address.
    Active(SocketAddr),
}

impl Drop for DataPlan {
    fn drop(&mut self) {
        if let DataPlan::Passive(handle) = self {
            handle.abort();
        }
    }
}

impl DataPlan {
    /// Starts accepting on `listener` for up to `timeout`, only from `client_ip`.
    pub fn passive(listener: TcpListener, client_ip: IpAddr, timeout: Duration) -> DataPlan {
        let client_ip = canonical(client_ip);
        DataPlan::Passive(tokio::spawn(async move {
            let accept = async {
                loop {
                    let (stream, from) = listener.accept().await?;
                    if canonical(from.ip()) == client_ip {
                        return Ok(stream);
                    }
                    tracing::warn!(from = %from, "data connection from a foreign address refused");
                }
            };
            match tokio::time::timeout(timeout, accept).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no data connection in time",
                )),
            }
        }))
    }

    /// Whether a PASV/EPSV/PORT/EPRT was given.
    pub fn is_set(&self) -> bool {
        !matches!(self, DataPlan::None)
    }

    /// Takes the plan, leaving `None` (each plan serves one transfer).
    pub fn take(&mut self) -> DataPlan {
        std::mem::take(self)
    }

    /// Opens the data connection. `local_ip` is the control connection's local address, used as
    /// the source of active connections.
    pub async fn connect(
        mut self,
        local_ip: IpAddr,
        timeout: Duration,
    ) -> Result<TcpStream, CommandError> {
        let stream = match &mut self {
            DataPlan::None => {
                return Err(CommandError::BadSequence(
                    "use PASV, EPSV, PORT or EPRT first",
                ))
            }
            DataPlan::Passive(handle) => match handle.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Err(CommandError::DataConnection(e.to_string())),
                Err(_) => {
                    return Err(CommandError::DataConnection(
                        "passive listener stopped".into(),
                    ))
                }
            },
            DataPlan::Active(addr) => {
                let addr = *addr;
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
        let _ = stream.set_nodelay(true);
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
        let listener = ports.bind("127.0.0.1".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let plan = DataPlan::passive(
            listener,
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
}
