//! Directory listings: LIST and NLST (RFC 959 §4.1.3, `ls -l` style), MLSD and MLST (RFC 3659 §7,
//! facts in UTC), STAT with a path (the listing over the control connection). Lines end in CRLF.

use std::fmt::Write as _;
use std::time::SystemTime;

use cap_std::fs::{Metadata, MetadataExt};
use ferry_proto::ftp::command::ListArgs;
use ferry_proto::ftp::Reply;
use ferry_proto::vpath::VirtualPath;
use time::OffsetDateTime;

use super::{logged_in, resolve, xfer};
use crate::accounts::Permissions;
use crate::error::CommandError;
use crate::session::{Facts, Session};
use crate::storage::{blocking, Entry, Home};

/// LIST or NLST output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `ls -l` lines.
    Long,
    /// Names only.
    Names,
}

fn modified(meta: &Metadata) -> OffsetDateTime {
    meta.modified()
        .map(|t| t.into_std())
        .unwrap_or(SystemTime::UNIX_EPOCH)
        .into()
}

/// `YYYYMMDDHHMMSS` in UTC (MDTM, MLST modify).
pub fn mlst_time(meta: &Metadata) -> String {
    let t = modified(meta);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn long_line(out: &mut String, name: &str, meta: &Metadata, now: OffsetDateTime) {
    let kind = if meta.is_dir() { 'd' } else { '-' };
    let mode = meta.mode();
    let mut perms = String::with_capacity(9);
    for shift in [6u32, 3, 0] {
        let bits = (mode >> shift) & 7;
        perms.push(if bits & 4 != 0 { 'r' } else { '-' });
        perms.push(if bits & 2 != 0 { 'w' } else { '-' });
        perms.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    let t = modified(meta);
    let month = &t.month().to_string()[..3];
    // ls shows the time for files from the last six months, the year otherwise.
    let recent = (now - t).whole_days().abs() < 180;
    let when = if recent {
        format!("{month} {:>2} {:02}:{:02}", t.day(), t.hour(), t.minute())
    } else {
        format!("{month} {:>2}  {}", t.day(), t.year())
    };
    let _ = write!(
        out,
        "{kind}{perms} {:>3} ftp ftp {:>12} {when} {name}\r\n",
        meta.nlink(),
        meta.len()
    );
}

fn perm_fact(meta: &Metadata, p: &Permissions) -> String {
    let mut s = String::new();
    if meta.is_dir() {
        if p.write {
            s.push('c');
        }
        if p.delete {
            s.push('d');
        }
        s.push('e');
        if p.rename {
            s.push('f');
        }
        s.push('l');
        if p.mkdir {
            s.push('m');
        }
        if p.delete {
            s.push('p');
        }
    } else {
        if p.write {
            s.push('a');
        }
        if p.delete {
            s.push('d');
        }
        if p.rename {
            s.push('f');
        }
        if p.read {
            s.push('r');
        }
        if p.write {
            s.push('w');
        }
    }
    s
}

fn facts_line(
    out: &mut String,
    name: &str,
    meta: &Metadata,
    kind: &str,
    f: Facts,
    perms: &Permissions,
) {
    if f.kind {
        let _ = write!(out, "type={kind};");
    }
    if f.size {
        let _ = write!(out, "size={};", meta.len());
    }
    if f.modify {
        let _ = write!(out, "modify={};", mlst_time(meta));
    }
    if f.perm {
        let _ = write!(out, "perm={};", perm_fact(meta, perms));
    }
    if f.unique {
        let _ = write!(out, "unique={:x}g{:x};", meta.dev(), meta.ino());
    }
    let _ = write!(out, " {name}\r\n");
}

/// Directory entries a listing reads on the session's thread; the rest of a larger directory is
/// read on a blocking thread. An entry is a share of a `getdents` and a `statx`, for a small
/// directory (most of them) less than the two thread switches of a hand-off to the blocking pool,
/// which also grows by a thread per listing running at the same time; a large directory still
/// does not hold up the other sessions on the thread.
const INLINE_ENTRIES: usize = 64;

/// What a listing found.
enum Listed {
    /// A directory: its own metadata and its entries.
    Dir(Metadata, Vec<Entry>),
    /// Not a directory: the one entry, under its own name.
    File(Entry),
}

impl Listed {
    /// The entries (the one file's, or the directory's).
    fn into_entries(self) -> Vec<Entry> {
        match self {
            Listed::Dir(_, entries) => entries,
            Listed::File(entry) => vec![entry],
        }
    }
}

/// Lists `target` and renders what it found with `render`: where the session runs if `target` is
/// a file or a directory of at most [`INLINE_ENTRIES`] entries, otherwise (reading the rest too)
/// on a blocking thread.
async fn listed<T, F>(home: Home, target: VirtualPath, render: F) -> Result<T, CommandError>
where
    F: FnOnce(Listed) -> Result<T, CommandError> + Send + 'static,
    T: Send + 'static,
{
    let meta = home.stat(&target)?;
    if !meta.is_dir() {
        let name = target.file_name().unwrap_or("/").to_string();
        return render(Listed::File(Entry { name, meta }));
    }
    let mut listing = home.listing(&target)?;
    if listing.read(INLINE_ENTRIES)? {
        return render(Listed::Dir(meta, listing.into_entries()));
    }
    blocking(move || {
        listing.read(usize::MAX)?;
        render(Listed::Dir(meta, listing.into_entries()))
    })
    .await
}

/// `LIST` / `NLST`.
pub async fn list(s: &mut Session, args: ListArgs, format: Format) -> Result<Reply, CommandError> {
    let target = resolve(s, args.path.as_deref().unwrap_or("."))?;
    let home = logged_in(s)?.home.clone();
    let text = listed(home, target.clone(), move |found| {
        let entries = found.into_entries();
        let now = OffsetDateTime::now_utc();
        let mut out = String::with_capacity(entries.len() * 64);
        for e in &entries {
            match format {
                Format::Long => long_line(&mut out, &e.name, &e.meta, now),
                Format::Names => {
                    out.push_str(&e.name);
                    out.push_str("\r\n");
                }
            }
        }
        Ok(out)
    })
    .await?;
    xfer::start_listing(s, format!("listing of {target}"), text.into_bytes())
}

/// `MLSD [dir]`.
pub async fn mlsd(s: &mut Session, path: Option<&str>) -> Result<Reply, CommandError> {
    let target = resolve(s, path.unwrap_or("."))?;
    let login = logged_in(s)?;
    let (home, perms, facts) = (login.home.clone(), login.user.perms, s.st.facts);
    let text = listed(home, target.clone(), move |found| {
        let Listed::Dir(meta, entries) = found else {
            return Err(CommandError::NotADirectory);
        };
        let mut out = String::with_capacity(entries.len() * 96);
        facts_line(&mut out, ".", &meta, "cdir", facts, &perms);
        for e in &entries {
            let kind = if e.meta.is_dir() { "dir" } else { "file" };
            facts_line(&mut out, &e.name, &e.meta, kind, facts, &perms);
        }
        Ok(out)
    })
    .await?;
    xfer::start_listing(s, format!("MLSD of {target}"), text.into_bytes())
}

/// `MLST [path]`: facts of one entry over the control connection.
pub async fn mlst(s: &mut Session, path: Option<&str>) -> Result<Reply, CommandError> {
    let target = resolve(s, path.unwrap_or("."))?;
    let login = logged_in(s)?;
    let (home, perms, facts) = (login.home.clone(), login.user.perms, s.st.facts);
    let t = target.clone();
    let line = blocking(move || {
        let meta = home.stat(&t)?;
        let kind = if meta.is_dir() { "dir" } else { "file" };
        let mut out = String::new();
        facts_line(&mut out, t.as_str(), &meta, kind, facts, &perms);
        Ok(out.trim_end().to_string())
    })
    .await?;
    Ok(Reply::multi(
        250,
        format!("Listing {target}"),
        vec![line],
        "End",
    ))
}

/// `STAT path`: the LIST output over the control connection (RFC 959 §4.1.3).
pub async fn stat_path(s: &mut Session, path: &str) -> Result<Reply, CommandError> {
    let args = ListArgs {
        flags: String::new(),
        path: Some(path.to_string()),
    };
    let target = resolve(s, args.path.as_deref().unwrap_or("."))?;
    let home = logged_in(s)?.home.clone();
    let lines = listed(home, target.clone(), move |found| {
        let entries = found.into_entries();
        let now = OffsetDateTime::now_utc();
        Ok(entries
            .iter()
            .take(10_000)
            .map(|e| {
                let mut line = String::new();
                long_line(&mut line, &e.name, &e.meta, now);
                line.trim_end().to_string()
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Reply::multi(
        213,
        format!("Status of {target}:"),
        lines,
        "End of status",
    ))
}
