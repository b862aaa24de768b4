//! TCP options of the data path: `TCP_CORK` while a download streams (only full-sized segments
//! leave, as ProFTPD does around its `sendfile`), `TCP_NOTSENT_LOWAT` on every connection we send
//! on (little unsent data waits in the kernel), and `SO_RCVLOWAT` while a fast upload streams (the
//! socket wakes its reader once a batch has queued, not for every segment).
//!
//! Why: on loopback a download sent with `TCP_NODELAY` alone went out in segments of ~24 KiB on
//! average (each window opening was sent at once); corked, in full 64 KiB ones. A download that
//! queued megabytes in the socket at once left them to be sent from the receiver's side (each read
//! by the client opens the window and the ACK pushes our queued segments out in the client's
//! system call); with at most [`SEND_LOWAT`] unsent, the server sends as the window opens. An
//! upload read at every wake-up woke the reader (and made the sending client do the waking) once
//! per segment.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

/// Downloads at least this long are corked; a shorter one leaves in one `sendfile` anyway.
pub const CORK_MIN: u64 = 64 * 1024;

/// Holds back partial segments until `on` is cleared (which sends what is queued at once).
pub fn set_cork(tcp: &TcpStream, on: bool) -> io::Result<()> {
    socket2::SockRef::from(tcp).set_cork(on)
}

/// Unsent bytes a connection we send on may hold in the kernel (`TCP_NOTSENT_LOWAT`): a write
/// takes more only while fewer are waiting, and the socket reports writable (epoll) once fewer
/// than half are. Bytes sent and not yet acknowledged do not count, so the window can grow as
/// on any connection. Measured over loopback, the option against none, alternating runs
/// (ftpload, curl): 200 clients each LIST + RETR 1 MiB 1,417-1,527 -> 2,286-2,758 sessions/s
/// (client CPU 84-89 -> 69-76 % of its core); 1 GiB RETR 2,325-2,867 -> ~4,600 MB/s in most runs,
/// server 0.36-0.42 -> 0.12 s/GiB; FTPS 1 GiB RETR server 0.53-0.64 -> 0.36-0.47 s/GiB. 32 KiB did
/// as well; 128 and 256 KiB gained nothing, and a value just above the loopback segment size
/// (64-70 KB, with the cork) stalled each download for the cork's 200 ms timer, which 16 KiB
/// never did at segment sizes of 1,448-65,483 bytes or paced rates of 8-60 MB/s.
pub const SEND_LOWAT: usize = 16 * 1024;

/// Sets `SO_RCVLOWAT`: readiness (epoll) is signalled once `bytes` are queued, or at end of
/// stream, or an error. A non-blocking read still returns whatever is queued.
pub fn set_recv_lowat(tcp: &TcpStream, bytes: usize) -> io::Result<()> {
    set_int(tcp, libc::SOL_SOCKET, libc::SO_RCVLOWAT, bytes)
}

/// Sets `TCP_NOTSENT_LOWAT` (see [`SEND_LOWAT`]).
pub fn set_send_lowat(tcp: &TcpStream, bytes: usize) -> io::Result<()> {
    set_int(tcp, libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT, bytes)
}

/// One integer socket option (at least 1). socket2, rustix and nix have no setter for the two
/// watermarks, hence the one `setsockopt` call here.
#[allow(unsafe_code)] // reason: setsockopt with a pointer to a live local int and its exact size
fn set_int(tcp: &TcpStream, level: libc::c_int, name: libc::c_int, value: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(value)
        .unwrap_or(libc::c_int::MAX)
        .max(1);
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is open for the lifetime of `tcp`; the option value is a c_int that lives
    // across the call, passed with its size.
    let rc = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// How an upload's reads are batched. Batching starts when one read finds [`Batching::ARM`]
/// bytes queued (the client sends faster than the reader wakes) and ends as soon as a wait for a
/// batch takes longer than [`Batching::WAIT`] (a slow client, or the end of the upload: a TLS
/// client may send `close_notify` and wait for ours before it closes), so a slow stream never
/// waits on a batch that is not coming and the stall timeout keeps its meaning.
#[derive(Debug, Default)]
pub struct Batching {
    armed: bool,
}

impl Batching {
    /// A read that found this much queued turns batching on.
    pub const ARM: usize = 128 * 1024;
    /// The batch the reader waits for.
    pub const LOWAT: usize = 256 * 1024;
    /// The longest wait for a batch before batching is turned off again.
    pub const WAIT: Duration = Duration::from_millis(20);

    /// Whether reads wait for a batch now.
    pub fn armed(&self) -> bool {
        self.armed
    }

    /// Notes a read of `n` bytes; turns batching on after a large one.
    pub fn observe(&mut self, tcp: Option<&TcpStream>, n: usize) {
        if !self.armed && n >= Self::ARM {
            if let Some(tcp) = tcp {
                self.armed = set_recv_lowat(tcp, Self::LOWAT).is_ok();
            }
        }
    }

    /// Turns batching off: readiness for every byte again.
    pub fn disarm(&mut self, tcp: Option<&TcpStream>) {
        if self.armed {
            self.armed = false;
            if let Some(tcp) = tcp {
                let _ = set_recv_lowat(tcp, 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn a_reader_with_a_low_watermark_wakes_for_a_batch_or_the_end_of_the_stream() {
        let (mut client, mut server) = pair().await;
        set_recv_lowat(&server, 64 * 1024).unwrap();
        // tokio assumes a new socket readable until a read says otherwise.
        let mut buf = vec![0u8; 4096];
        let empty = server.try_read(&mut buf).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
        client.write_all(&[7u8; 1000]).await.unwrap();
        // Below the watermark: no wake-up...
        let early = tokio::time::timeout(Duration::from_millis(100), server.readable()).await;
        assert!(
            early.is_err(),
            "woke for 1000 bytes with a 64 KiB watermark"
        );
        // ...but a non-blocking read still gets the bytes that are there.
        let sock = socket2::SockRef::from(&server);
        assert_eq!(std::io::Read::read(&mut &*sock, &mut buf).unwrap(), 1000);
        // A batch wakes the reader.
        client.write_all(&vec![7u8; 64 * 1024]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), server.readable())
            .await
            .expect("a full batch did not wake the reader")
            .unwrap();
        let mut batch = vec![0u8; 64 * 1024];
        server.read_exact(&mut batch).await.unwrap();
        // The end of the stream wakes the reader whatever the watermark.
        client.write_all(&[7u8; 10]).await.unwrap();
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut rest))
            .await
            .expect("end of stream did not wake the reader")
            .unwrap();
        assert_eq!(rest.len(), 10);
    }

    /// Bytes in the send queue not yet sent (`SIOCOUTQNSD`).
    #[allow(unsafe_code)] // reason: ioctl writing one c_int into a live local
    fn unsent(tcp: &TcpStream) -> usize {
        use std::os::fd::AsRawFd;
        const SIOCOUTQNSD: libc::c_ulong = 0x894B;
        let mut n: libc::c_int = 0;
        // SAFETY: the fd is open; SIOCOUTQNSD writes one c_int into `n`.
        let rc = unsafe { libc::ioctl(tcp.as_raw_fd(), SIOCOUTQNSD, &mut n) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        usize::try_from(n).unwrap()
    }

    /// Writes until the socket would block; the bytes taken.
    fn fill(tcp: &TcpStream) -> usize {
        let chunk = vec![7u8; 64 * 1024];
        let mut taken = 0;
        loop {
            match tcp.try_write(&chunk) {
                Ok(n) => taken += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return taken,
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[tokio::test]
    async fn a_sender_with_a_send_watermark_keeps_little_unsent_when_the_peer_stops_reading() {
        // Without the option the kernel queues as much as the send buffer holds.
        let (_client, server) = pair().await;
        fill(&server);
        let plain = unsent(&server);
        assert!(
            plain > 2 * SEND_LOWAT + 64 * 1024,
            "unsent without the option: {plain}"
        );
        // With it, a write stops once SEND_LOWAT is waiting (one segment may be filling).
        let (mut client, server) = pair().await;
        set_send_lowat(&server, SEND_LOWAT).unwrap();
        let taken = fill(&server);
        let held = unsent(&server);
        assert!(
            held <= SEND_LOWAT + 64 * 1024,
            "unsent with the option: {held}"
        );
        // Everything taken still arrives, and the socket is writable again once read.
        let mut got = vec![0u8; taken];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut got))
            .await
            .expect("the queued bytes did not arrive")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), server.writable())
            .await
            .expect("not writable after the peer read")
            .unwrap();
    }

    #[tokio::test]
    async fn batching_arms_after_a_large_read_and_disarms_on_request() {
        let (_client, server) = pair().await;
        let mut batching = Batching::default();
        batching.observe(Some(&server), 4096);
        assert!(!batching.armed());
        batching.observe(Some(&server), Batching::ARM);
        assert!(batching.armed());
        batching.disarm(Some(&server));
        assert!(!batching.armed());
        // Without a TCP socket underneath nothing is armed.
        batching.observe(None, Batching::ARM * 2);
        assert!(!batching.armed());
    }

    #[tokio::test]
    async fn a_corked_socket_still_delivers_everything_once_uncorked() {
        let (mut client, mut server) = pair().await;
        set_cork(&server, true).unwrap();
        server.write_all(&[1u8; 100]).await.unwrap();
        set_cork(&server, false).unwrap();
        let mut buf = [0u8; 100];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut buf))
            .await
            .expect("uncorked bytes did not arrive")
            .unwrap();
        assert_eq!(buf, [1u8; 100]);
    }
}
