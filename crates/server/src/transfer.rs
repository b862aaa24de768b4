//! The data path: downloads (zero-copy `sendfile` on plain TCP), uploads (socket task reads into
//! a few reusable buffers, a blocking writer thread writes and hashes them), and listings.
//!
//! Every wait is bounded by the stall timeout and every loop watches the abort token (ABOR, the
//! control connection closing, or hard shutdown). Upload outcomes follow DESIGN §6: a complete
//! upload is renamed into place; a failed new upload leaves its partial under the name so it can
//! be resumed; a failed overwrite leaves the old file untouched; quota is reserved as bytes arrive.

use std::io::{self, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BufMut as _;
use ferry_proto::ftp::command::HashAlgo;
use ferry_proto::ftp::Reply;
use ferry_proto::vpath::VirtualPath;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::data::DataPlan;
use crate::digest::Digester;
use crate::error::CommandError;
use crate::events::{FileEvent, FileEventKind};
use crate::finish::{AfterReply, Done, TransferLog, UploadCommit};
use crate::net::Stream;
use crate::server::Shared;
use crate::sockopt::{self, Batching};
use crate::storage::Home;
use crate::xferlog::XferRecord;

/// Buffer of a download that is read into user space (TLS).
const DOWNLOAD_BUF: usize = 256 * 1024;
/// Uploads that end within this many bytes are written without a writer thread.
const SMALL_UPLOAD: usize = 64 * 1024;
/// Upload buffer size; at most [`UPLOAD_BUFFERS`] of them per upload.
const UPLOAD_BUF: usize = 512 * 1024;
const UPLOAD_BUFFERS: usize = 4;
/// Buffer of a TLS upload written on the socket task (no digest to compute). 2 MiB, not 1: on
/// this project's 2-vCPU VM a 1 GiB `curl -T` over loopback (then read through this buffer in
/// plaintext too) went from ~1,700–2,000 to ~2,200 MB/s (the sender's CPU per GiB down ~15 %),
/// with the same receive watermark; 4 MiB was no faster.
const INLINE_BUF: usize = 2 << 20;
/// Pipe size asked for by spliced uploads (the kernel's default limit for unprivileged
/// processes, `/proc/sys/fs/pipe-max-size`).
const SPLICE_PIPE: usize = 1 << 20;
/// Largest single `sendfile` call.
const SENDFILE_CHUNK: usize = 4 << 20;
/// Quota reservations grow geometrically between these bounds.
const MIN_RESERVE: u64 = 256 * 1024;
const MAX_RESERVE: u64 = 64 << 20;
/// How long a finished overwrite waits to see whether the control connection died with it.
const CONTROL_CHECK: Duration = Duration::from_millis(5);

/// What every transfer task needs.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Server state.
    pub shared: Arc<Shared>,
    /// Cancelled by ABOR / control close / hard shutdown.
    pub abort: CancellationToken,
    /// Bytes moved so far (for STAT).
    pub progress: Arc<AtomicU64>,
    /// Our address on the control connection.
    pub local_ip: IpAddr,
    /// The client's address.
    pub peer_ip: IpAddr,
    /// Account name, for logs.
    pub user: String,
    /// TYPE A in effect (logged only; files are sent unchanged).
    pub ascii: bool,
    /// PROT P: the control connection's TLS configuration, which data connections must use
    /// (and, by default, resume).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

#[derive(Debug)]
enum Failure {
    Aborted,
    Stalled,
    Net(io::Error),
    Disk(io::Error),
    Quota(u64),
    Data(CommandError),
    TlsHandshake(String),
    NoReuse,
}

impl Failure {
    fn reply(&self, path: &str) -> Reply {
        match self {
            Failure::Aborted => Reply::new(426, "Connection closed; transfer aborted"),
            Failure::Stalled => {
                Reply::new(426, "Connection closed; transfer stalled and timed out")
            }
            Failure::Net(e) => Reply::new(426, format!("Connection closed; transfer aborted: {e}")),
            Failure::Disk(e) => {
                tracing::warn!(error = %e, path, "disk error during transfer");
                CommandError::from_io(io::Error::new(e.kind(), e.to_string())).reply(path)
            }
            Failure::Quota(free) => Reply::new(
                552,
                format!("{path}: quota exceeded, upload stopped ({free} bytes were free)"),
            ),
            Failure::Data(e) => e.reply(""),
            Failure::TlsHandshake(e) => Reply::new(522, format!("TLS handshake on the data connection failed: {e}")),
            Failure::NoReuse => Reply::new(
                522,
                "The data connection must resume the TLS session of the control connection; \
                 if your client cannot (Python ftplib), the admin can set tls.require_session_reuse = false",
            ),
        }
    }
}

impl Ctx {
    /// Opens the data connection (and its TLS). `sends`: we send the data (a download or a
    /// listing), so segments go out at once; a plain upload's connection carries nothing of ours.
    async fn connect(&self, plan: DataPlan, sends: bool) -> Result<Stream, Failure> {
        let timeout = self.shared.config.limits.data_accept_timeout();
        let tcp = tokio::select! {
            _ = self.abort.cancelled() => return Err(Failure::Aborted),
            r = plan.connect(self.local_ip, timeout) => r.map_err(Failure::Data)?,
        };
        if sends || self.tls.is_some() {
            let _ = tcp.set_nodelay(true);
        }
        if sends {
            let _ = sockopt::set_send_lowat(&tcp, sockopt::SEND_LOWAT);
        }
        let Some(config) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let handshake = tokio_rustls::TlsAcceptor::from(config.clone()).accept(tcp);
        let limit = self.shared.config.tls_handshake_timeout();
        let tls = tokio::select! {
            _ = self.abort.cancelled() => return Err(Failure::Aborted),
            r = tokio::time::timeout(limit, handshake) => match r {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return Err(Failure::TlsHandshake(e.to_string())),
                Err(_) => return Err(Failure::TlsHandshake("timed out".into())),
            },
        };
        // Only sessions of this control connection can resume under its configuration (own
        // cache and ticket key), so "resumed" means "resumed the control connection's session".
        let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let mut stream = Stream::Tls(Box::new(tls));
        if self.shared.config.tls.require_session_reuse && !resumed {
            // Close cleanly (close_notify): the client then reads an empty, intact data
            // connection and goes on to read the 522 that explains why.
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.shutdown()).await;
            return Err(Failure::NoReuse);
        }
        Ok(stream)
    }

    /// Runs `fut` unless aborted or stalled.
    async fn guard<T>(
        &self,
        fut: impl std::future::Future<Output = io::Result<T>>,
    ) -> Result<T, Failure> {
        let stall = self.shared.config.limits.stall_timeout();
        tokio::select! {
            _ = self.abort.cancelled() => Err(Failure::Aborted),
            r = tokio::time::timeout(stall, fut) => match r {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(Failure::Net(e)),
                Err(_) => Err(Failure::Stalled),
            },
        }
    }

    /// The transfer's log entry, as it ends now (to write after the reply).
    fn log_entry(
        &self,
        path: &str,
        bytes: u64,
        started: Instant,
        incoming: bool,
        complete: bool,
    ) -> TransferLog {
        let record = XferRecord {
            elapsed: started.elapsed(),
            remote: self.peer_ip,
            bytes,
            path: path.to_string(),
            ascii: self.ascii,
            incoming,
            user: self.user.clone(),
            complete,
        };
        TransferLog::new(self.shared.clone(), record)
    }

    fn log(&self, path: &str, bytes: u64, started: Instant, incoming: bool, complete: bool) {
        self.log_entry(path, bytes, started, incoming, complete)
            .write();
    }
}

/// Closes a data connection cleanly (FIN after everything is sent).
/// Closes a data connection cleanly: TLS close_notify, then FIN.
async fn close(ctx: &Ctx, mut stream: Stream) -> Result<(), Failure> {
    ctx.guard(stream.shutdown()).await
}

/// Ends a received upload's data connection: over TLS with our close_notify (answering the
/// client's) and a FIN. Plain TCP needs no call before the socket is dropped, which sends the FIN.
async fn end_upload(ctx: &Ctx, stream: &mut Stream) {
    if stream.is_tls() {
        let _ = ctx.guard(stream.shutdown()).await;
    }
}

/// Sends a listing (or any small buffer) over a data connection.
pub async fn send_listing(ctx: Ctx, plan: DataPlan, bytes: Vec<u8>) -> Done {
    let result = async {
        let mut stream = ctx.connect(plan, true).await?;
        ctx.guard(stream.write_all(&bytes)).await?;
        close(&ctx, stream).await
    }
    .await;
    match result {
        Ok(()) => Reply::new(226, "Transfer complete"),
        Err(f) => f.reply(""),
    }
    .into()
}

/// Sends `file` from `offset` to `end` (exclusive; default its end).
pub async fn download(
    ctx: Ctx,
    plan: DataPlan,
    file: std::fs::File,
    offset: u64,
    end: Option<u64>,
    path: String,
) -> Done {
    let started = Instant::now();
    let result: Result<u64, Failure> = async {
        let mut stream = ctx.connect(plan, true).await?;
        let size = file.metadata().map_err(Failure::Disk)?.len();
        let end = end.map_or(size, |e| e.min(size));
        // Corked, only full segments leave while the file streams (see `sockopt`).
        let cork = end.saturating_sub(offset) > sockopt::CORK_MIN
            && stream
                .tcp()
                .is_some_and(|tcp| sockopt::set_cork(tcp, true).is_ok());
        let sent = match &stream {
            Stream::Plain(tcp) => sendfile_range(&ctx, tcp, &file, offset, end).await?,
            _ => copy_range(&ctx, &mut stream, file, offset, end).await?,
        };
        if cork {
            ctx.guard(stream.flush()).await?;
            if let Some(tcp) = stream.tcp() {
                sockopt::set_cork(tcp, false).map_err(Failure::Net)?;
            }
        }
        close(&ctx, stream).await?;
        Ok(sent)
    }
    .await;
    // Bytes sent at once before this task took over are counted in `progress` too.
    let moved = ctx.progress.load(Ordering::Relaxed);
    let log = ctx.log_entry(&path, moved, started, false, result.is_ok());
    let reply = match result {
        Ok(_) => Reply::new(226, format!("Transfer complete ({moved} bytes)")),
        Err(f) => f.reply(&path),
    };
    Done {
        reply,
        after: Some(AfterReply::Log(Box::new(log))),
    }
}

/// How far a transfer tried at once on the session task came.
#[derive(Debug)]
pub enum AtOnce {
    /// Everything was sent and the data connection closed: the final reply (and the log entry,
    /// for after it).
    Done(Done),
    /// The socket would block (`ctx.progress` says after how many bytes): the transfer goes on
    /// in a task with the connection (now registered with the runtime), and the 150 must go out
    /// first.
    Partial(TcpStream),
}

/// Transfers that fit in the socket's send buffer finish at once: when the client's data
/// connection is already there (it connected after PASV, before RETR or LIST), a short
/// download or listing is written with one non-blocking call on the session task, and the 150
/// goes out together with the 226. No task, no readiness registration, no wake-up: on the
/// small-files workload the task, its registration and its separate 150 cost more than the
/// transfer. Anything that would block goes on the usual way, from where it stopped.
pub fn send_at_once(
    ctx: &Ctx,
    tcp: std::net::TcpStream,
    what: AtOnceData<'_>,
    path: &str,
) -> io::Result<AtOnce> {
    let started = Instant::now();
    let is_file = matches!(what, AtOnceData::File { .. });
    let result = write_at_once(&tcp, what).map(|sent| {
        ctx.progress.store(sent as u64, Ordering::Relaxed);
        // Short: the socket is full, unless the file shrank under us (then that is all).
        let short = sent < what.size()
            && !matches!(what, AtOnceData::File { file, offset, .. } if file
                .metadata()
                .is_ok_and(|m| m.len() <= offset + sent as u64));
        // Done: dropping `tcp` below closes it, which sends the FIN after the data.
        (!short).then_some(sent)
    });
    match result {
        Ok(Some(sent)) => {
            if is_file {
                let log = ctx.log_entry(path, sent as u64, started, false, true);
                Ok(AtOnce::Done(Done {
                    reply: Reply::new(226, format!("Transfer complete ({sent} bytes)")),
                    after: Some(AfterReply::Log(Box::new(log))),
                }))
            } else {
                Ok(AtOnce::Done(Reply::new(226, "Transfer complete").into()))
            }
        }
        Ok(None) => {
            let tcp = TcpStream::from_std(tcp)?;
            let _ = tcp.set_nodelay(true);
            Ok(AtOnce::Partial(tcp))
        }
        Err(e) => {
            if is_file {
                let sent = ctx.progress.load(Ordering::Relaxed);
                ctx.log(path, sent, started, false, false);
            }
            Err(e)
        }
    }
}

/// Writes as much of `what` as the socket takes without blocking; the bytes written.
fn write_at_once(tcp: &std::net::TcpStream, what: AtOnceData<'_>) -> io::Result<usize> {
    use std::io::Write as _;
    let len = what.size();
    let mut sent = 0usize;
    while sent < len {
        let n = match what {
            AtOnceData::File { file, offset, .. } => {
                let mut pos = offset + sent as u64;
                match rustix::fs::sendfile(tcp, file, Some(&mut pos), len - sent) {
                    Ok(0) => break, // the file shrank under us
                    Ok(n) => n,
                    Err(rustix::io::Errno::AGAIN) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            AtOnceData::Bytes(bytes) => match (&mut &*tcp).write(&bytes[sent..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            },
        };
        sent += n;
    }
    Ok(sent)
}

/// What [`send_at_once`] sends.
#[derive(Debug, Clone, Copy)]
pub enum AtOnceData<'a> {
    /// `len` bytes of a file from `offset` (the range was checked against its size).
    File {
        /// The open file.
        file: &'a std::fs::File,
        /// Where the range starts.
        offset: u64,
        /// Its length.
        len: usize,
    },
    /// A listing.
    Bytes(&'a [u8]),
}

impl AtOnceData<'_> {
    /// How many bytes it is.
    pub fn size(&self) -> usize {
        match self {
            AtOnceData::File { len, .. } => *len,
            AtOnceData::Bytes(bytes) => bytes.len(),
        }
    }
}

/// Zero-copy download on plain TCP: the kernel moves file pages to the socket.
async fn sendfile_range(
    ctx: &Ctx,
    tcp: &TcpStream,
    file: &std::fs::File,
    start: u64,
    end: u64,
) -> Result<u64, Failure> {
    let mut pos = start;
    while pos < end {
        let count = usize::try_from(end - pos)
            .unwrap_or(usize::MAX)
            .min(SENDFILE_CHUNK);
        let sent = ctx
            .guard(tcp.async_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(tcp, file, Some(&mut pos), count).map_err(io::Error::from)
            }))
            .await?;
        if sent == 0 {
            break; // the file shrank under us
        }
        ctx.progress.fetch_add(sent as u64, Ordering::Relaxed);
    }
    Ok(pos - start)
}

/// Download through a stream that needs the bytes (TLS), with one reusable buffer. Bytes in the
/// page cache are read on the socket task (`preadv2` with `RWF_NOWAIT` never waits for the
/// disk); a chunk that is not cached is read on a blocking thread. Measured on FTPS sessions
/// (1 MiB files, always cached): the reader thread's hand-offs and its four fresh 256 KiB
/// buffers (page faults) cost more than the reads.
async fn copy_range(
    ctx: &Ctx,
    stream: &mut Stream,
    file: std::fs::File,
    start: u64,
    end: u64,
) -> Result<u64, Failure> {
    let len = usize::try_from(end.saturating_sub(start))
        .unwrap_or(usize::MAX)
        .min(DOWNLOAD_BUF);
    let mut buf = spare::take(len);
    let file = Arc::new(file);
    let mut pos = start;
    while pos < end {
        let want = usize::try_from(end - pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = match read_cached(&file, &mut buf[..want], pos) {
            Some(read) => read.map_err(Failure::Disk)?,
            None => {
                let (f, mut b) = (file.clone(), std::mem::take(&mut buf));
                let (b, read) = tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let read = f.read_at(&mut b[..want], pos);
                    (b, read)
                })
                .await
                .map_err(|e| Failure::Disk(io::Error::other(e)))?;
                buf = b;
                read.map_err(Failure::Disk)?
            }
        };
        if n == 0 {
            break; // the file shrank under us
        }
        ctx.guard(stream.write_all(&buf[..n])).await?;
        pos += n as u64;
        ctx.progress.fetch_add(n as u64, Ordering::Relaxed);
    }
    spare::give_back(buf);
    Ok(pos - start)
}

/// Full-sized download buffers kept by each session thread between downloads. A fresh 256 KiB
/// buffer is a fresh mapping (glibc gives larger blocks back to the kernel when freed), so
/// every FTPS download paid for page faults and zeroing of its buffer (4 % of the FTPS sessions
/// profile).
mod spare {
    use std::cell::RefCell;

    use super::DOWNLOAD_BUF;

    /// Buffers kept per thread: downloads running at once on one thread beyond this allocate.
    const KEPT: usize = 2;

    thread_local! {
        static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    /// A zeroed-once buffer of `len` bytes (a kept one if `len` is the full size).
    pub(super) fn take(len: usize) -> Vec<u8> {
        if len == DOWNLOAD_BUF {
            if let Some(buf) = SPARE.with(|s| s.borrow_mut().pop()) {
                return buf;
            }
        }
        vec![0u8; len]
    }

    /// Keeps a full-sized buffer for the next download on this thread.
    pub(super) fn give_back(buf: Vec<u8>) {
        if buf.len() == DOWNLOAD_BUF {
            SPARE.with(|s| {
                let mut s = s.borrow_mut();
                if s.len() < KEPT {
                    s.push(buf);
                }
            });
        }
    }
}

/// Reads what the page cache holds at `pos` without waiting for the disk. `None`: nothing there
/// is cached (or the file system cannot say), so the read must go to a blocking thread.
fn read_cached(file: &std::fs::File, buf: &mut [u8], pos: u64) -> Option<io::Result<usize>> {
    use rustix::io::{preadv2, Errno, ReadWriteFlags};
    match preadv2(
        file,
        &mut [io::IoSliceMut::new(buf)],
        pos,
        ReadWriteFlags::NOWAIT,
    ) {
        Ok(n) => Some(Ok(n)),
        Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => None,
        Err(e) => Some(Err(e.into())),
    }
}

/// How an upload reaches its file.
#[derive(Debug)]
pub enum UploadKind {
    /// A new file: written to `temp`, renamed into place; on failure the partial takes the name.
    New {
        /// Temp file path inside the home.
        temp: PathBuf,
    },
    /// Replaces an existing file: written to `temp`, renamed over it; on failure discarded.
    Replace {
        /// Temp file path inside the home.
        temp: PathBuf,
    },
    /// REST + STOR or APPE: written into the file itself at `offset`.
    InPlace,
}

/// An upload ready to run.
#[derive(Debug)]
pub struct Upload {
    /// The user's home.
    pub home: Home,
    /// Account id (quota ledger).
    pub user_id: i64,
    /// Announce in the chat room.
    pub announce: bool,
    /// Target path.
    pub path: VirtualPath,
    /// How it is written.
    pub kind: UploadKind,
    /// The open file (temp or target), positioned at `offset`.
    pub file: std::fs::File,
    /// Where writing starts.
    pub offset: u64,
    /// Size of the existing file (0 for a new one): bytes up to here need no new quota.
    pub old_size: u64,
    /// How a new file is counted against the file quota.
    pub slot: FileSlot,
    /// The user's byte quota (None: unlimited, no reservations needed).
    pub quota: Option<u64>,
    /// Compute SHA-256 while streaming.
    pub hash: bool,
    /// Reply text for STOU (`FILE: name`), else None.
    pub stou_name: Option<String>,
}

/// Bytes reserved in the quota ledger by one upload.
struct Reservation {
    user_id: i64,
    held: u64,
}

impl Reservation {
    /// Makes sure `need` bytes are reserved; on failure the reservation is already released.
    async fn ensure(&mut self, shared: &Shared, need: u64) -> Result<(), Failure> {
        if need <= self.held {
            return Ok(());
        }
        let db = |e| Failure::Disk(io::Error::other(format!("quota ledger: {e}")));
        let chunk = (need - self.held)
            .max(self.held)
            .clamp(MIN_RESERVE, MAX_RESERVE)
            .max(need - self.held);
        if shared
            .accounts
            .reserve(self.user_id, chunk, 0)
            .await
            .map_err(db)?
        {
            self.held += chunk;
            return Ok(());
        }
        let exact = need - self.held;
        if shared
            .accounts
            .reserve(self.user_id, exact, self.held)
            .await
            .map_err(db)?
        {
            self.held += exact;
            return Ok(());
        }
        self.held = 0;
        let free = shared
            .accounts
            .usage(self.user_id)
            .await
            .ok()
            .and_then(|u| u.free_bytes())
            .unwrap_or(0);
        Err(Failure::Quota(free))
    }
}

/// Receives an upload.
pub async fn upload(ctx: Ctx, plan: DataPlan, up: Upload) -> Done {
    let started = Instant::now();
    let path = up.path.as_str().to_string();
    let mut reservation = Reservation {
        user_id: up.user_id,
        held: 0,
    };
    let Upload {
        home,
        file,
        kind,
        offset,
        old_size,
        quota,
        hash,
        ..
    } = up;

    let limits = Limits {
        offset,
        old_size,
        quota,
    };
    // Nothing to hash: no writer thread (plain TCP or TLS alike).
    let outcome = if !hash {
        receive_inline(&ctx, plan, file, &limits, &mut reservation).await
    } else {
        receive_buffered(&ctx, plan, file, hash, &limits, &mut reservation).await
    };
    // A finished overwrite is only committed if the control connection did not die with the data
    // connection: in stream mode a killed client looks exactly like EOF on the data connection.
    let outcome = match outcome {
        Ok(v) if matches!(kind, UploadKind::Replace { .. }) => {
            tokio::select! {
                _ = ctx.abort.cancelled() => Err(Failure::Aborted),
                _ = tokio::time::sleep(CONTROL_CHECK) => Ok(v),
            }
        }
        other => other,
    };
    finish_upload(
        &ctx,
        home,
        kind,
        up.path,
        offset,
        old_size,
        reservation,
        outcome,
        started,
        up.announce,
        up.slot,
        up.stou_name,
    )
    .await
    .unwrap_or_else(|e| e.reply(&path).into())
}

/// How an upload's file is counted against the user's file quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileSlot {
    /// The name existed: no new file.
    Existing,
    /// A new file, counted when the upload started (the user has a file quota, checked before
    /// the 150).
    Charged,
    /// A new file, counted when it is committed or kept (no file quota: nothing to check, so
    /// the start of the upload does not write to the ledger).
    AtCommit,
}

/// Where an upload writes and what it may use of the quota.
struct Limits {
    /// Where writing starts.
    offset: u64,
    /// Size of the file before the upload (bytes up to here need no new quota).
    old_size: u64,
    /// The byte quota, if any (then space is reserved as bytes arrive).
    quota: Option<u64>,
}

impl Limits {
    /// Reserves quota for `n` more bytes after `written`.
    async fn reserve(
        &self,
        ctx: &Ctx,
        reservation: &mut Reservation,
        written: u64,
        n: u64,
    ) -> Result<(), Failure> {
        if self.quota.is_some() {
            let need = (self.offset + written + n).saturating_sub(self.old_size);
            reservation.ensure(&ctx.shared, need).await?;
        }
        Ok(())
    }
}

/// What an upload wrote, from its open file: the version key (its inode and mtime survive the
/// rename into place) and the size.
#[derive(Debug, Clone, Copy)]
struct Written {
    version: i64,
    size: u64,
}

fn stat_written(file: &std::fs::File) -> io::Result<Written> {
    let meta = file.metadata()?;
    let ino = std::os::unix::fs::MetadataExt::ino(&meta);
    Ok(Written {
        version: version_key(meta.modified()?, ino),
        size: meta.len(),
    })
}

/// Receives an upload through user-space buffers: the socket task reads into a few reusable
/// buffers, a blocking writer thread writes them in order (hashing them if asked) and hands them
/// back. Returns the bytes written, the file's version key and the SHA-256 if computed.
async fn receive_buffered(
    ctx: &Ctx,
    plan: DataPlan,
    file: std::fs::File,
    hash: bool,
    limits: &Limits,
    reservation: &mut Reservation,
) -> Result<(u64, Written, Option<String>), Failure> {
    let mut stream = ctx.connect(plan, false).await?;
    let mut file = file;
    let mut digest = hash.then(|| Digester::new(HashAlgo::Sha256));
    // A small upload is done before a writer thread would have started: it is written (and
    // hashed) here, one page-cache write, like an upload without a digest.
    let mut batching = Batching::default();
    let mut first = Vec::with_capacity(SMALL_UPLOAD);
    let (eof, failure) = fill(ctx, &mut stream, &mut first, SMALL_UPLOAD, &mut batching).await;
    if eof || failure.is_some() {
        let n = first.len() as u64;
        if n > 0 {
            limits.reserve(ctx, reservation, 0, n).await?;
            file.write_all(&first).map_err(Failure::Disk)?;
            if let Some(d) = digest.as_mut() {
                d.update(&first);
            }
            ctx.progress.store(n, Ordering::Relaxed);
        }
        if let Some(f) = failure {
            return Err(f);
        }
        end_upload(ctx, &mut stream).await;
        let version = stat_written(&file).map_err(Failure::Disk)?;
        return Ok((n, version, digest.map(Digester::finish_hex)));
    }

    let (full_tx, mut full_rx) = mpsc::channel::<Vec<u8>>(UPLOAD_BUFFERS);
    let (empty_tx, mut empty_rx) = mpsc::channel::<Vec<u8>>(UPLOAD_BUFFERS);
    let writer = tokio::task::spawn_blocking(move || -> io::Result<(Written, Option<String>)> {
        while let Some(mut buf) = full_rx.blocking_recv() {
            file.write_all(&buf)?;
            if let Some(d) = digest.as_mut() {
                d.update(&buf);
            }
            buf.clear();
            let _ = empty_tx.try_send(buf);
        }
        Ok((stat_written(&file)?, digest.map(Digester::finish_hex)))
    });

    let received = async {
        let mut written = first.len() as u64;
        limits.reserve(ctx, reservation, 0, written).await?;
        ctx.progress.store(written, Ordering::Relaxed);
        if full_tx.send(first).await.is_err() {
            return Ok(written); // writer failed; its error is reported below
        }
        let mut made = 0;
        loop {
            let mut buf = match empty_rx.try_recv() {
                Ok(b) => b,
                Err(_) if made < UPLOAD_BUFFERS => {
                    made += 1;
                    Vec::with_capacity(UPLOAD_BUF)
                }
                Err(_) => match empty_rx.recv().await {
                    Some(b) => b,
                    None => return Ok(written), // writer failed; its error is reported below
                },
            };
            // A failed read still hands what it already received to the writer, so a broken
            // upload keeps every byte that arrived (the partial is what a resume builds on).
            let (eof, failure) = fill(ctx, &mut stream, &mut buf, UPLOAD_BUF, &mut batching).await;
            if !buf.is_empty() {
                let n = buf.len() as u64;
                limits.reserve(ctx, reservation, written, n).await?;
                written += n;
                ctx.progress.store(written, Ordering::Relaxed);
                if full_tx.send(buf).await.is_err() {
                    return Ok(written); // writer failed
                }
            }
            if let Some(f) = failure {
                return Err(f);
            }
            if eof {
                // Over TLS, EOF means the client's close_notify arrived (a bare TCP close is an
                // error from the TLS layer, so a truncated upload never looks complete).
                // Answer with ours.
                end_upload(ctx, &mut stream).await;
                return Ok(written);
            }
        }
    }
    .await;
    drop(full_tx);
    let written_result = writer
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
    match (received, written_result) {
        (Err(f), _) => Err(f),
        (Ok(_), Err(e)) => Err(Failure::Disk(e)),
        (Ok(n), Ok((version, digest))) => Ok((n, version, digest)),
    }
}

/// Reads into `buf` until it holds `limit` bytes, the peer ends the stream (`true`), or a read
/// fails (the failure; what arrived before it stays in `buf`). Reads are batched (see
/// [`Batching`]) once the client sends faster than they wake.
async fn fill(
    ctx: &Ctx,
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    limit: usize,
    batching: &mut Batching,
) -> (bool, Option<Failure>) {
    while buf.len() < limit {
        let room = limit - buf.len();
        let mut dest = (&mut *buf).limit(room);
        let read = async {
            if batching.armed() {
                // Cancel-safe: a read that timed out took no bytes.
                match tokio::time::timeout(Batching::WAIT, stream.read_buf(&mut dest)).await {
                    Ok(r) => return r,
                    Err(_) => batching.disarm(stream.tcp()),
                }
            }
            stream.read_buf(&mut dest).await
        };
        match ctx.guard(read).await {
            Ok(0) => return (true, None),
            Ok(n) => batching.observe(stream.tcp(), n),
            Err(f) => return (false, Some(f)),
        }
    }
    (false, None)
}

/// Receives an upload that needs no digest on the socket task alone (like `sendfile` for
/// downloads, the page-cache write runs here; on this project's 2-vCPU VM the writer-thread
/// hand-off per buffer cost as much CPU as the copies). The first buffer is read and written, so
/// a small upload is one read and one write; the rest of a plaintext upload is spliced
/// ([`receive_spliced`]), the rest of a TLS one read a large buffer at a time. Every byte that
/// arrived is in the file when this returns, also on failure.
async fn receive_inline(
    ctx: &Ctx,
    plan: DataPlan,
    file: std::fs::File,
    limits: &Limits,
    reservation: &mut Reservation,
) -> Result<(u64, Written, Option<String>), Failure> {
    let mut stream = ctx.connect(plan, false).await?;
    let mut file = file;
    let mut buf = Vec::with_capacity(SMALL_UPLOAD);
    let mut written: u64 = 0;
    let mut batching = Batching::default();
    loop {
        // Small uploads never grow the buffer past the first read's size.
        let limit = if written == 0 {
            SMALL_UPLOAD
        } else {
            INLINE_BUF
        };
        if buf.capacity() < limit {
            buf.reserve_exact(limit - buf.len());
        }
        let (eof, failure) = fill(ctx, &mut stream, &mut buf, limit, &mut batching).await;
        if !buf.is_empty() {
            let n = buf.len() as u64;
            limits.reserve(ctx, reservation, written, n).await?;
            file.write_all(&buf).map_err(Failure::Disk)?;
            written += n;
            ctx.progress.store(written, Ordering::Relaxed);
            buf.clear();
        }
        if let Some(f) = failure {
            return Err(f);
        }
        if eof {
            end_upload(ctx, &mut stream).await;
            let version = stat_written(&file).map_err(Failure::Disk)?;
            return Ok((written, version, None));
        }
        // Past the first buffer, the rest of a plaintext upload is spliced.
        if let Some(pipe) = splice_pipe(&stream) {
            let rest = Spliced {
                pipe,
                written,
                batching,
            };
            return receive_spliced(ctx, stream, rest, file, limits, reservation).await;
        }
    }
}

/// A pipe for [`receive_spliced`], if `stream` is plain TCP and a pipe can be had (otherwise the
/// upload goes on through the buffer). The pipe is enlarged to [`SPLICE_PIPE`] where the kernel
/// allows it.
fn splice_pipe(stream: &Stream) -> Option<Pipe> {
    use rustix::pipe::{fcntl_getpipe_size, fcntl_setpipe_size, pipe_with, PipeFlags};
    if stream.is_tls() || stream.tcp().is_none() {
        return None;
    }
    let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).ok()?;
    let _ = fcntl_setpipe_size(&write, SPLICE_PIPE);
    let room = fcntl_getpipe_size(&write).ok()?;
    Some(Pipe { read, write, room })
}

/// Where a spliced upload goes on from: its pipe, the bytes already written, and the read
/// batching so far.
struct Spliced {
    pipe: Pipe,
    written: u64,
    batching: Batching,
}

/// The pipe a spliced upload passes through, and how many bytes it holds.
struct Pipe {
    read: std::os::fd::OwnedFd,
    write: std::os::fd::OwnedFd,
    room: usize,
}

/// Receives the rest of a plaintext upload without copying it through user space: `splice`
/// moves what the socket holds into a pipe (the socket's pages, no copy) and from the pipe into
/// the file (the one copy, into the page cache), a pipe-full at a time, with reads batched as
/// [`fill`] batches them. One copy instead of `read`/`write`'s two. Measured on this project's
/// 2-vCPU VM, 1 GiB from `curl -T` over loopback, four pairs of runs against the read/write
/// loop: server CPU 0.39-0.41 → 0.30-0.32 s/GiB, 1,530-1,760 → 1,930-2,080 MB/s; without the
/// batching the splice alone gave 0.35-0.38 s/GiB. (An earlier measurement found `splice` slower;
/// it predates what `bench/README.md` says about this VM's first writes into freed memory.) The
/// pipe is empty whenever this waits on the socket, so every byte that arrived is in the file
/// when this returns, also on failure.
async fn receive_spliced(
    ctx: &Ctx,
    mut stream: Stream,
    rest: Spliced,
    file: std::fs::File,
    limits: &Limits,
    reservation: &mut Reservation,
) -> Result<(u64, Written, Option<String>), Failure> {
    use rustix::pipe::{splice, SpliceFlags};
    let Spliced {
        pipe,
        mut written,
        mut batching,
    } = rest;
    let Some(tcp) = stream.tcp() else {
        return Err(Failure::Disk(io::Error::other("splice needs a socket")));
    };
    // `WouldBlock` can only mean the socket has nothing to read: the pipe is empty.
    let take = || {
        splice(
            tcp,
            None,
            &pipe.write,
            None,
            pipe.room,
            SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
        )
        .map_err(io::Error::from)
    };
    loop {
        let read = async {
            if batching.armed() {
                // Cancel-safe: a wait that timed out took no bytes.
                match tokio::time::timeout(Batching::WAIT, tcp.async_io(Interest::READABLE, take))
                    .await
                {
                    Ok(r) => return r,
                    Err(_) => batching.disarm(Some(tcp)),
                }
            }
            tcp.async_io(Interest::READABLE, take).await
        };
        let got = ctx.guard(read).await;
        let n = match got {
            Ok(0) => break,
            Ok(n) => n,
            Err(f) => return Err(f),
        };
        batching.observe(Some(tcp), n);
        limits.reserve(ctx, reservation, written, n as u64).await?;
        let mut left = n;
        while left > 0 {
            // The file's own position, where the first buffer's write left it.
            match splice(&pipe.read, None, &file, None, left, SpliceFlags::MOVE) {
                Ok(0) => return Err(Failure::Disk(io::Error::other("the pipe ran dry"))),
                Ok(k) => left -= k,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(Failure::Disk(e.into())),
            }
        }
        written += n as u64;
        ctx.progress.store(written, Ordering::Relaxed);
    }
    end_upload(ctx, &mut stream).await;
    let version = stat_written(&file).map_err(Failure::Disk)?;
    Ok((written, version, None))
}

#[allow(clippy::too_many_arguments)] // reason: the upload's parts, consumed once at its end
async fn finish_upload(
    ctx: &Ctx,
    home: Home,
    kind: UploadKind,
    path: VirtualPath,
    offset: u64,
    old_size: u64,
    reservation: Reservation,
    outcome: Result<(u64, Written, Option<String>), Failure>,
    started: Instant,
    announce: bool,
    slot: FileSlot,
    stou_name: Option<String>,
) -> Result<Done, CommandError> {
    let shared = &ctx.shared;
    let accounts = &shared.accounts;
    let user_id = reservation.user_id;
    let held = reservation.held;
    let vpath = path.as_str().to_string();
    let written = ctx.progress.load(Ordering::Relaxed);
    // Commit and charge under the user's lock, so that concurrent uploads to one name, DELE and
    // RNTO each see the disk as the one before left it.
    let ledger = shared.lock_user(user_id).await;
    match outcome {
        Ok((bytes, version, digest)) => {
            let in_place = matches!(kind, UploadKind::InPlace);
            let (h, p) = (home.clone(), path.clone());
            let (before, size) = crate::storage::metadata(move || {
                // A new file whose name is still free: moved with no stat before or after (the
                // temp file's own size is the file's).
                if let UploadKind::New { temp } = &kind {
                    if h.commit_temp_new(temp, &p)? {
                        return Ok((None, version.size));
                    }
                }
                let before = h.try_stat(&p)?.filter(|m| m.is_file()).map(|m| m.len());
                match &kind {
                    UploadKind::New { temp } | UploadKind::Replace { temp } => {
                        h.commit_temp(temp, &p)?;
                        Ok((before, version.size))
                    }
                    UploadKind::InPlace => Ok((before, h.stat(&p)?.len())),
                }
            })
            .await?;
            let version = version.version;
            // Charge what the disk gained: new size minus what was there just before the commit.
            let (delta_bytes, delta_files) = if in_place {
                (
                    size as i64 - old_size as i64,
                    i64::from(slot == FileSlot::AtCommit),
                )
            } else {
                let replaced = before.unwrap_or(0);
                let files = match slot {
                    // Counted at the start, but the name was taken meanwhile: no new file.
                    FileSlot::Charged if before.is_some() => -1,
                    FileSlot::AtCommit if before.is_none() => 1,
                    _ => 0,
                };
                (size as i64 - replaced as i64, files)
            };
            // The upload's own digest is only the whole file's if it started at 0.
            let digest = digest
                .filter(|_| offset == 0)
                .map(|hex| (size, version, hex));
            let reply = match stou_name {
                Some(name) => Reply::new(
                    226,
                    format!("Transfer complete, stored as {name} ({bytes} bytes)"),
                ),
                None => Reply::new(226, format!("Transfer complete ({bytes} bytes)")),
            };
            // The file is in place: the 226 goes out first, the books follow (see `finish`).
            let commit = UploadCommit {
                ledger,
                user_id,
                held,
                delta_bytes,
                delta_files,
                log: ctx.log_entry(&vpath, bytes, started, true, true),
                event: FileEvent {
                    user: ctx.user.clone(),
                    announce,
                    kind: FileEventKind::Uploaded {
                        path: vpath.clone(),
                        size,
                    },
                },
                path: vpath,
                digest,
            };
            Ok(Done {
                reply,
                after: Some(AfterReply::Upload(Box::new(commit))),
            })
        }
        Err(failure) => {
            let quota_hit = matches!(failure, Failure::Quota(_));
            let (h, p) = (home.clone(), path.clone());
            let kept: Option<u64> = crate::storage::metadata(move || {
                Ok(match &kind {
                    // A partial that hit the quota cannot be completed: discard it.
                    UploadKind::New { temp } if quota_hit => {
                        h.remove_temp(temp)?;
                        None
                    }
                    UploadKind::New { temp } => {
                        let size = std::fs::metadata(h.path().join(temp))
                            .map(|m| m.len())
                            .unwrap_or(0);
                        if h.commit_temp_if_absent(temp, &p)? {
                            Some(size)
                        } else {
                            None
                        }
                    }
                    UploadKind::Replace { temp } => {
                        h.remove_temp(temp)?;
                        None
                    }
                    UploadKind::InPlace => Some(h.stat(&p).map(|m| m.len()).unwrap_or(offset)),
                })
            })
            .await
            .unwrap_or(None);
            match (&kept, slot) {
                (Some(size), FileSlot::Charged) => {
                    accounts.settle(user_id, held, *size as i64, 0).await?
                }
                (None, FileSlot::Charged) => accounts.settle(user_id, held, 0, -1).await?,
                (Some(size), FileSlot::AtCommit | FileSlot::Existing) => {
                    let files = i64::from(slot == FileSlot::AtCommit);
                    accounts
                        .settle(user_id, held, *size as i64 - old_size as i64, files)
                        .await?
                }
                (None, _) => accounts.release(user_id, held).await?,
            }
            if kept.is_some() {
                accounts.forget_digests(user_id, &vpath).await?;
            }
            ctx.log(&vpath, written, started, true, false);
            Ok(failure.reply(&vpath).into())
        }
    }
}

/// The digest cache's freshness key of a file version: its mtime (ns) mixed with its inode, so a
/// file replaced by another upload with the same size in the same clock tick still differs.
pub fn version_key(mtime: std::time::SystemTime, ino: u64) -> i64 {
    let ns = mtime
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    ns ^ (ino.rotate_left(32) as i64)
}

/// [`version_key`] of a file as seen through the jail.
pub fn meta_version(meta: &cap_std::fs::Metadata) -> i64 {
    use cap_std::fs::MetadataExt;
    let mtime = meta
        .modified()
        .map(|t| t.into_std())
        .unwrap_or(std::time::UNIX_EPOCH);
    version_key(mtime, meta.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writing_at_once_stops_where_the_socket_would_block_and_sends_short_files_whole() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        socket2::SockRef::from(&server)
            .set_send_buffer_size(4096)
            .unwrap();
        // Nobody reads: a large listing fills both buffers and stops short.
        let big = vec![b'x'; 8 << 20];
        let sent = write_at_once(&server, AtOnceData::Bytes(&big)).unwrap();
        assert!(sent > 0 && sent < big.len(), "sent {sent}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let (server2, client2) = {
            let c = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (s, _) = listener.accept().unwrap();
            s.set_nonblocking(true).unwrap();
            (s, c)
        };
        let what = AtOnceData::File {
            file: &file,
            offset: 3,
            len: 7,
        };
        assert_eq!(write_at_once(&server2, what).unwrap(), 7);
        server2.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut &client2, &mut got).unwrap();
        assert_eq!(got, b"3456789");
        drop(client);
    }

    #[test]
    fn a_full_download_buffer_is_reused_by_the_next_download_on_the_thread() {
        let first = spare::take(DOWNLOAD_BUF);
        let ptr = first.as_ptr();
        spare::give_back(first);
        let again = spare::take(DOWNLOAD_BUF);
        assert_eq!(again.as_ptr(), ptr);
        assert_eq!(again.len(), DOWNLOAD_BUF);
        // Short buffers are neither kept nor handed out.
        spare::give_back(vec![0u8; 10]);
        assert_eq!(spare::take(10).len(), 10);
        let other = spare::take(DOWNLOAD_BUF);
        assert_ne!(
            other.as_ptr(),
            ptr,
            "a buffer still in use was handed out twice"
        );
    }

    #[test]
    fn cached_reads_return_the_bytes_and_evicted_ones_go_to_a_blocking_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();

        let mut buf = vec![0u8; 100_000];
        let n = read_cached(&file, &mut buf, 50_000).unwrap().unwrap();
        assert!(n > 0);
        assert_eq!(&buf[..n], &data[50_000..50_000 + n]);
        assert_eq!(read_cached(&file, &mut buf, 200_000).unwrap().unwrap(), 0);

        // Written back and dropped from the page cache: ext4 (where the server keeps its files
        // here) then says "not cached" instead of waiting for the disk.
        file.sync_all().unwrap();
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        let ext4 = rustix::fs::fstatfs(&file).unwrap().f_type == 0xEF53;
        match read_cached(&file, &mut buf, 0) {
            None => {}
            Some(read) => {
                assert!(!ext4, "ext4 read evicted pages without waiting");
                let n = read.unwrap();
                assert_eq!(&buf[..n], &data[..n]);
            }
        }
    }
}
