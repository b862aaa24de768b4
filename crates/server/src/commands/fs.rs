//! Navigation and file management: CWD/CDUP/PWD, MKD/RMD, DELE, RNFR/RNTO (RFC 959 §4.1),
//! SIZE and MDTM (RFC 3659 §3–4), MFMT (draft-somers-ftp-mfxx). Every path goes through the jail.

use std::time::{Duration, UNIX_EPOCH};

use ferry_proto::ftp::command::Timestamp;
use ferry_proto::ftp::Reply;
use ferry_proto::vpath::VirtualPath;

use super::{logged_in, require, resolve};
use crate::error::CommandError;
use crate::events::{FileEvent, FileEventKind};
use crate::session::Session;
use crate::storage::blocking;

/// Quotes a path for 257 replies (RFC 959: embedded quotes doubled).
fn quote(p: &VirtualPath) -> String {
    format!("\"{}\"", p.as_str().replace('"', "\"\""))
}

/// `PWD`.
pub fn pwd(s: &Session) -> Reply {
    Reply::new(
        257,
        format!("{} is the current directory", quote(&s.st.cwd)),
    )
}

/// `CWD path` / `CDUP`.
pub async fn cwd(s: &mut Session, path: &str) -> Result<Reply, CommandError> {
    let target = resolve(s, path)?;
    let home = logged_in(s)?.home.clone();
    let t = target.clone();
    let meta = blocking(move || home.stat(&t).map_err(CommandError::from_io)).await?;
    if !meta.is_dir() {
        return Err(CommandError::NotADirectory);
    }
    s.st.cwd = target;
    Ok(Reply::new(
        250,
        format!("Directory changed to {}", s.st.cwd),
    ))
}

/// `MKD path`.
pub async fn mkd(s: &mut Session, path: &str) -> Result<Reply, CommandError> {
    let login = logged_in(s)?;
    require(login.user.perms.mkdir)?;
    let target = resolve(s, path)?;
    if target.is_root() {
        return Err(CommandError::Exists);
    }
    let (home, t) = (login.home.clone(), target.clone());
    blocking(move || home.mkdir(&t).map_err(CommandError::from_io)).await?;
    Ok(Reply::new(257, format!("{} created", quote(&target))))
}

/// `RMD path`.
pub async fn rmd(s: &mut Session, path: &str) -> Result<Reply, CommandError> {
    let login = logged_in(s)?;
    require(login.user.perms.delete)?;
    let target = resolve(s, path)?;
    if target.is_root() || s.st.cwd.starts_with(&target) {
        return Err(CommandError::Busy(
            "cannot remove the current directory or one above it",
        ));
    }
    let (home, t) = (login.home.clone(), target.clone());
    blocking(move || home.rmdir(&t).map_err(CommandError::from_io)).await?;
    let id = login.user.id;
    s.shared
        .accounts
        .forget_digests(id, target.as_str())
        .await?;
    Ok(Reply::new(250, format!("{target} removed")))
}

/// `DELE path`.
pub async fn dele(s: &mut Session, path: &str) -> Result<Reply, CommandError> {
    let login = logged_in(s)?;
    require(login.user.perms.delete)?;
    let target = resolve(s, path)?;
    let (home, t) = (login.home.clone(), target.clone());
    let _ledger = s.shared.lock_user(login.user.id).await;
    let size = blocking(move || {
        let meta = home.stat(&t)?;
        if !meta.is_file() {
            return Err(CommandError::NotAFile);
        }
        home.remove_file(&t)?;
        Ok(meta.len())
    })
    .await?;
    let user = &login.user;
    s.shared
        .accounts
        .charge(user.id, -(size as i64), -1)
        .await?;
    s.shared
        .accounts
        .forget_digests(user.id, target.as_str())
        .await?;
    s.shared.events.publish(FileEvent {
        user: user.name.clone(),
        announce: user.announce_files,
        kind: FileEventKind::Deleted {
            path: target.to_string(),
        },
    });
    Ok(Reply::new(250, format!("{target} deleted")))
}

/// `RNFR path`.
pub async fn rnfr(s: &mut Session, path: &str) -> Result<Reply, CommandError> {
    let login = logged_in(s)?;
    require(login.user.perms.rename)?;
    let source = resolve(s, path)?;
    if source.is_root() {
        return Err(CommandError::PermissionDenied);
    }
    let (home, t) = (login.home.clone(), source.clone());
    blocking(move || home.stat(&t).map(|_| ()).map_err(CommandError::from_io)).await?;
    s.st.rename_from = Some(source);
    Ok(Reply::new(350, "Ready for RNTO"))
}

/// `RNTO path`.
pub async fn rnto(s: &mut Session, path: &str) -> Result<Reply, CommandError> {
    let Some(from) = s.st.rename_from.take() else {
        return Err(CommandError::BadSequence("RNTO must follow RNFR"));
    };
    let login = logged_in(s)?;
    require(login.user.perms.rename)?;
    let to = resolve(s, path)?;
    if to.is_root() || to.starts_with(&from) && to != from {
        return Err(CommandError::PermissionDenied);
    }
    let (home, f, t) = (login.home.clone(), from.clone(), to.clone());
    let _ledger = s.shared.lock_user(login.user.id).await;
    // A file renamed over another file replaces it: the replaced bytes leave the ledger.
    let replaced = blocking(move || {
        let src = home.stat(&f)?;
        let dst = home.try_stat(&t)?;
        let replaced = match dst {
            Some(d) if d.is_file() && src.is_file() && f != t => Some(d.len()),
            Some(d) if d.is_dir() && src.is_file() => return Err(CommandError::Exists),
            _ => None,
        };
        home.rename(&f, &t)?;
        Ok(replaced)
    })
    .await?;
    let user = &login.user;
    if let Some(bytes) = replaced {
        s.shared
            .accounts
            .charge(user.id, -(bytes as i64), -1)
            .await?;
    }
    s.shared
        .accounts
        .forget_digests(user.id, from.as_str())
        .await?;
    s.shared
        .accounts
        .forget_digests(user.id, to.as_str())
        .await?;
    s.shared.events.publish(FileEvent {
        user: user.name.clone(),
        announce: user.announce_files,
        kind: FileEventKind::Renamed {
            from: from.to_string(),
            to: to.to_string(),
        },
    });
    Ok(Reply::new(250, format!("Renamed {from} to {to}")))
}

/// `SIZE path` (RFC 3659 §4): the file's size in octets (files are never converted).
pub async fn size(s: &mut Session, path: &str) -> Result<Reply, CommandError> {
    let target = resolve(s, path)?;
    let home = logged_in(s)?.home.clone();
    let meta = blocking(move || home.stat(&target).map_err(CommandError::from_io)).await?;
    if !meta.is_file() {
        return Err(CommandError::NotAFile);
    }
    Ok(Reply::new(213, meta.len().to_string()))
}

/// `MDTM path` (RFC 3659 §3): modification time in UTC.
pub async fn mdtm(s: &mut Session, path: &str) -> Result<Reply, CommandError> {
    let target = resolve(s, path)?;
    let home = logged_in(s)?.home.clone();
    let meta = blocking(move || home.stat(&target).map_err(CommandError::from_io)).await?;
    if !meta.is_file() {
        return Err(CommandError::NotAFile);
    }
    Ok(Reply::new(213, super::list::mlst_time(&meta)))
}

/// `MFMT time path`: sets the modification time.
pub async fn mfmt(s: &mut Session, time: Timestamp, path: &str) -> Result<Reply, CommandError> {
    let login = logged_in(s)?;
    require(login.user.perms.write)?;
    let target = resolve(s, path)?;
    let secs = u64::try_from(time.unix_seconds())
        .map_err(|_| CommandError::BadArgument("time before 1970".into()))?;
    let when = UNIX_EPOCH + Duration::from_secs(secs);
    let (home, t) = (login.home.clone(), target.clone());
    let meta = blocking(move || {
        if !home.stat(&t)?.is_file() {
            return Err(CommandError::NotAFile);
        }
        home.set_mtime(&t, when)?;
        Ok(home.stat(&t)?)
    })
    .await?;
    s.shared
        .accounts
        .forget_digests(login.user.id, target.as_str())
        .await?;
    Ok(Reply::new(
        213,
        format!("Modify={}; {}", super::list::mlst_time(&meta), path),
    ))
}
