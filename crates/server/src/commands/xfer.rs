//! Transfer commands: RETR, STOR, APPE, STOU, REST (RFC 959 §4.1.3, RFC 3659 §5) and the helper
//! that starts a transfer task. The handler checks everything it can before answering 150 (path,
//! permission, quota slot, data connection set up); the task sends the final reply.

use std::future::Future;
use std::io::{Seek, SeekFrom};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use ferry_proto::ftp::Reply;
use ferry_proto::units::format_size;
use ferry_proto::vpath::VirtualPath;

use super::{logged_in, require, resolve};
use crate::config::TlsPolicy;
use crate::data::{canonical, DataPlan};
use crate::error::CommandError;
use crate::finish::Done;
use crate::session::{Running, Session};
use crate::storage::{blocking, metadata};
use crate::transfer::{self, Ctx, FileSlot, Upload, UploadKind};

/// STOR or APPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// `STOR` (with REST: write in place at the offset).
    Stor,
    /// `APPE`: append to the file, creating it if needed.
    Appe,
}

fn ensure_data(s: &Session) -> Result<(), CommandError> {
    if s.transfer.is_some() {
        return Err(CommandError::Busy("Transfer in progress"));
    }
    if !s.st.data.is_set() {
        return Err(CommandError::DataConnection(
            "use PASV, EPSV, PORT or EPRT first".into(),
        ));
    }
    if s.shared.tls_policy == TlsPolicy::All && !s.st.prot_private {
        return Err(CommandError::ProtRequired);
    }
    Ok(())
}

/// Starts a transfer task with the session's data plan.
fn spawn<F, Fut>(s: &mut Session, what: String, upload: bool, f: F)
where
    F: FnOnce(Ctx, DataPlan) -> Fut,
    Fut: Future<Output = Done> + Send + 'static,
{
    let ctx = transfer_ctx(s, upload);
    spawn_with(s, what, ctx, f);
}

/// Starts a transfer task with a context made by [`transfer_ctx`].
fn spawn_with<F, Fut>(s: &mut Session, what: String, ctx: Ctx, f: F)
where
    F: FnOnce(Ctx, DataPlan) -> Fut,
    Fut: Future<Output = Done> + Send + 'static,
{
    // A passive connection already queued is taken here, so that the session keeps the
    // listener for its next PASV (see `DataPlan::Spare`); otherwise the task waits for it.
    let plan = match s.st.data.take_ready() {
        Some(tcp) => DataPlan::Accepted(tcp),
        None => s.st.data.take(),
    };
    let (abort, progress) = (ctx.abort.clone(), ctx.progress.clone());
    let handle = s.shared.tracker.spawn(f(ctx, plan));
    s.transfer = Some(Running {
        handle,
        abort,
        what,
        progress,
        started: Instant::now(),
    });
}

/// Tries a short plain download or listing at once (see [`transfer::send_at_once`]): the
/// final reply if it is done (the 150 is then held to go out with it). Otherwise the data
/// plan holds the connection and `ctx.progress` what was sent, for the task to go on.
fn try_at_once(
    s: &mut Session,
    ctx: &Ctx,
    data: transfer::AtOnceData<'_>,
    path: &str,
    opening: &Reply,
) -> Option<Reply> {
    if ctx.tls.is_some() || data.size() > AT_ONCE_MAX {
        return None;
    }
    let tcp = s.st.data.take_ready()?;
    match transfer::send_at_once(ctx, tcp, data, path) {
        Ok(transfer::AtOnce::Done(done)) => {
            s.conn.hold(opening);
            s.after_reply = done.after;
            Some(done.reply)
        }
        Ok(transfer::AtOnce::Partial(tcp)) => {
            s.st.data = DataPlan::Connected(tcp);
            None
        }
        Err(e) => {
            s.conn.hold(opening);
            Some(Reply::new(
                426,
                format!("Connection closed; transfer aborted: {e}"),
            ))
        }
    }
}

/// Longest transfer tried at once: what an initial socket send buffer takes.
const AT_ONCE_MAX: usize = 64 * 1024;

/// The context of a transfer of this session.
fn transfer_ctx(s: &Session, upload: bool) -> Ctx {
    let abort = s.shared.shutdown.hard.child_token();
    let progress = Arc::new(AtomicU64::new(0));
    let user =
        s.st.login
            .as_ref()
            .map(|l| l.user.name.clone())
            .unwrap_or_default();
    Ctx {
        shared: s.shared.clone(),
        abort,
        progress,
        local_ip: s.local.ip(),
        peer_ip: canonical(s.peer.ip()),
        user,
        ascii: s.st.ascii,
        tls: if s.st.prot_private {
            s.tls.as_ref().map(|t| {
                if upload {
                    t.upload.clone()
                } else {
                    t.download.clone()
                }
            })
        } else {
            None
        },
    }
}

/// Sends an already built listing over the data connection.
pub fn start_listing(s: &mut Session, what: String, bytes: Vec<u8>) -> Result<Reply, CommandError> {
    ensure_data(s)?;
    let opening = Reply::new(150, "Here comes the directory listing");
    let ctx = transfer_ctx(s, false);
    let data = transfer::AtOnceData::Bytes(&bytes);
    if let Some(done) = try_at_once(s, &ctx, data, "", &opening) {
        return Ok(done);
    }
    let sent = ctx.progress.load(std::sync::atomic::Ordering::Relaxed) as usize;
    let mut bytes = bytes;
    bytes.drain(..sent.min(bytes.len()));
    spawn_with(s, what, ctx, move |ctx, plan| {
        transfer::send_listing(ctx, plan, bytes)
    });
    Ok(opening)
}

/// `REST offset`.
pub fn rest(s: &mut Session, offset: u64) -> Reply {
    s.st.rest = offset;
    Reply::new(
        350,
        format!("Restarting at {offset}. Send STOR or RETR to initiate transfer"),
    )
}

/// `RETR path`.
pub async fn retr(s: &mut Session, path: &str) -> Result<Reply, CommandError> {
    // RANG a b (draft-bryan-ftp-range, end inclusive) or REST n; each applies to one transfer.
    let range = s.st.rang.take();
    let rest = std::mem::take(&mut s.st.rest);
    let (offset, end) = match range {
        Some((a, b)) => (a, Some(b.saturating_add(1))),
        None => (rest, None),
    };
    let login = logged_in(s)?;
    require(login.user.perms.read)?;
    let target = resolve(s, path)?;
    let (home, t) = (login.home.clone(), target.clone());
    let (file, size) = metadata(move || Ok(home.open_read(&t)?)).await?;
    ensure_data(s)?;
    if offset > size {
        return Ok(Reply::new(
            554,
            format!("REST {offset} is beyond the end of the file ({size} bytes)"),
        ));
    }
    let mode = if s.st.ascii { "ASCII" } else { "BINARY" };
    let len = end.map_or(size, |e| e.min(size)) - offset;
    let text = format!("Opening {mode} mode data connection for {target} ({len} bytes)");
    let opening = Reply::new(150, text);
    let vpath = target.to_string();
    let ctx = transfer_ctx(s, false);
    if let Ok(len) = usize::try_from(len) {
        let data = transfer::AtOnceData::File {
            file: &file,
            offset,
            len,
        };
        if let Some(done) = try_at_once(s, &ctx, data, &vpath, &opening) {
            return Ok(done);
        }
    }
    let from = offset + ctx.progress.load(std::sync::atomic::Ordering::Relaxed);
    spawn_with(
        s,
        format!("RETR {target} ({})", format_size(size)),
        ctx,
        move |ctx, plan| transfer::download(ctx, plan, file, from, end, vpath),
    );
    Ok(opening)
}

/// `STOR path` / `APPE path`.
pub async fn stor(s: &mut Session, path: &str, mode: StoreMode) -> Result<Reply, CommandError> {
    let target = resolve(s, path)?;
    let offset = std::mem::take(&mut s.st.rest);
    if s.st.rang.take().is_some() {
        return Err(CommandError::NotSupported(
            "RANG applies to RETR and HASH only".into(),
        ));
    }
    store(s, target, mode, offset, None).await
}

/// `STOU [hint]`: stores under a new unique name in the current directory.
pub async fn stou(s: &mut Session, hint: Option<&str>) -> Result<Reply, CommandError> {
    let login = logged_in(s)?;
    let base = match hint {
        Some(h) => resolve(s, h)?.file_name().unwrap_or("file").to_string(),
        None => "ferry".to_string(),
    };
    let (home, cwd) = (login.home.clone(), s.st.cwd.clone());
    let has_hint = hint.is_some();
    let target = blocking(move || {
        for i in 0..1000u32 {
            let name = if i == 0 && has_hint {
                base.clone()
            } else {
                format!("{base}.{:08x}", rand::random::<u32>())
            };
            let candidate = cwd.join(&name)?;
            if home.try_stat(&candidate)?.is_none() {
                return Ok(candidate);
            }
        }
        Err(CommandError::Exists)
    })
    .await?;
    s.st.rest = 0;
    let name = target.file_name().unwrap_or_default().to_string();
    store(s, target, StoreMode::Stor, 0, Some(name)).await
}

/// What STOR/APPE found and opened.
enum Opened {
    /// REST pointed past the end of the existing file (its size).
    RestBeyondEnd(u64),
    /// The file the upload writes to.
    File {
        file: std::fs::File,
        kind: UploadKind,
        offset: u64,
        old_size: u64,
        is_new: bool,
    },
}

async fn store(
    s: &mut Session,
    target: VirtualPath,
    mode: StoreMode,
    rest: u64,
    stou_name: Option<String>,
) -> Result<Reply, CommandError> {
    let login = logged_in(s)?;
    require(login.user.perms.write)?;
    if target.is_root() {
        return Err(CommandError::NotAFile);
    }
    let shared = s.shared.clone();
    let user = login.user.clone();
    let home = login.home.clone();
    // Look at the target and open what the upload writes to.
    let (h, t) = (home.clone(), target.clone());
    let opened = metadata(move || {
        let existing = h.try_stat(&t)?;
        if existing.as_ref().is_some_and(|m| !m.is_file()) {
            return Err(CommandError::NotAFile);
        }
        let old_size = existing.as_ref().map_or(0, |m| m.len());
        if mode == StoreMode::Stor && rest > old_size {
            return Ok(Opened::RestBeyondEnd(old_size));
        }
        let is_new = existing.is_none();
        let parent = t.parent().unwrap_or_else(VirtualPath::root);
        let (file, kind, offset) = match (mode, rest) {
            (StoreMode::Appe, _) => {
                let mut file = h.open_write(&t, true)?;
                let end = file.seek(SeekFrom::End(0))?;
                (file, UploadKind::InPlace, end)
            }
            (StoreMode::Stor, 0) => {
                let (file, temp) = h.create_temp(&parent)?;
                let kind = if is_new {
                    UploadKind::New { temp }
                } else {
                    UploadKind::Replace { temp }
                };
                (file, kind, 0)
            }
            (StoreMode::Stor, offset) => {
                let mut file = h.open_write(&t, false)?;
                file.set_len(offset)?;
                file.seek(SeekFrom::Start(offset))?;
                (file, UploadKind::InPlace, offset)
            }
        };
        Ok(Opened::File {
            file,
            kind,
            offset,
            old_size,
            is_new,
        })
    })
    .await?;
    let (file, kind, offset, old_size, is_new) = match opened {
        Opened::RestBeyondEnd(old_size) => {
            return Ok(Reply::new(
                554,
                format!("REST {rest} is beyond the end of the file ({old_size} bytes)"),
            ))
        }
        Opened::File {
            file,
            kind,
            offset,
            old_size,
            is_new,
        } => (file, kind, offset, old_size, is_new),
    };
    // The checks that need no file system; what was opened is undone if one fails.
    let checked = match ensure_data(s) {
        Ok(()) => match shared.accounts.begin_upload(user.id, is_new).await {
            Ok(Some((usage, charged))) => Ok((usage, charged)),
            Ok(None) => {
                let limit = shared
                    .accounts
                    .usage(user.id)
                    .await
                    .ok()
                    .and_then(|u| u.quota_files)
                    .unwrap_or_default();
                Err(CommandError::Quota(format!(
                    "file quota exceeded ({limit} files)"
                )))
            }
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e),
    };
    let (usage, charged) = match checked {
        Ok(begun) => begun,
        Err(e) => {
            let (h, t) = (home.clone(), target.clone());
            let _ = metadata(move || {
                drop(file);
                match &kind {
                    UploadKind::New { temp } | UploadKind::Replace { temp } => {
                        h.remove_temp(temp)?
                    }
                    // APPE created the file it would have appended to.
                    UploadKind::InPlace if is_new => h.remove_file(&t)?,
                    UploadKind::InPlace => {}
                }
                Ok(())
            })
            .await;
            return Err(e);
        }
    };
    let what = format!(
        "{} {target}",
        if mode == StoreMode::Appe {
            "APPE"
        } else {
            "STOR"
        }
    );
    let text = match &stou_name {
        Some(name) => format!("FILE: {name}"),
        None => format!(
            "Opening {} mode data connection for {target}",
            if s.st.ascii { "ASCII" } else { "BINARY" }
        ),
    };
    let up = Upload {
        home,
        user_id: user.id,
        announce: user.announce_files,
        path: target,
        kind,
        file,
        offset,
        old_size,
        slot: match (is_new, charged) {
            (false, _) => FileSlot::Existing,
            (true, true) => FileSlot::Charged,
            (true, false) => FileSlot::AtCommit,
        },
        quota: usage.quota_bytes,
        hash: shared.config.ftp.hash_uploads,
        stou_name,
    };
    spawn(s, what, true, move |ctx, plan| {
        transfer::upload(ctx, plan, up)
    });
    Ok(Reply::new(150, text))
}
