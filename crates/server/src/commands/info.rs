//! Informational commands: FEAT and OPTS (RFC 2389), HELP and STAT (RFC 959 §4.1.3), SITE QUOTA
//! and SITE HELP, AVBL (draft-peterson-streamlined-ftp-command-extensions).

use std::sync::atomic::Ordering;

use ferry_proto::ftp::command::{HashAlgo, Opts, Site};
use ferry_proto::ftp::Reply;
use ferry_proto::units::format_size;

use super::{logged_in, resolve};
use crate::error::CommandError;
use crate::session::{Facts, Session};

/// The FEAT list: exactly what works.
pub fn feat() -> Reply {
    let hash = HashAlgo::ALL
        .iter()
        .map(|a| {
            if *a == HashAlgo::Sha256 {
                format!("{}*", a.name())
            } else {
                a.name().to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(";");
    let lines = vec![
        "AUTH TLS".into(),
        "AVBL".into(),
        "EPRT".into(),
        "EPSV".into(),
        format!("HASH {hash}"),
        "MDTM".into(),
        "MFMT".into(),
        "MLST type*;size*;modify*;perm*;unique*;".into(),
        "PBSZ".into(),
        "PROT".into(),
        "RANG STREAM".into(),
        "REST STREAM".into(),
        "SIZE".into(),
        "TVFS".into(),
        "UTF8".into(),
    ];
    Reply::multi(211, "Features:", lines, "End")
}

/// `OPTS`.
pub fn opts(s: &mut Session, opts: Opts) -> Result<Reply, CommandError> {
    match opts {
        Opts::Utf8(true) => Ok(Reply::new(200, "UTF8 mode is always on")),
        Opts::Utf8(false) => Ok(Reply::new(
            504,
            "UTF8 cannot be turned off: paths are UTF-8",
        )),
        Opts::Mlst(facts) => {
            let has = |f: &str| facts.iter().any(|x| x == f);
            s.st.facts = Facts {
                kind: has("type"),
                size: has("size"),
                modify: has("modify"),
                perm: has("perm"),
                unique: has("unique"),
            };
            let known = ["type", "size", "modify", "perm", "unique"];
            let list: String = known
                .iter()
                .filter(|f| has(f))
                .map(|f| format!("{f};"))
                .collect();
            Ok(Reply::new(200, format!("MLST OPTS {list}")))
        }
        Opts::Hash(None) => Ok(Reply::new(200, s.st.hash_algo.name())),
        Opts::Hash(Some(name)) => match HashAlgo::from_name(&name) {
            Some(algo) => {
                s.st.hash_algo = algo;
                Ok(Reply::new(200, algo.name()))
            }
            None => Ok(Reply::new(
                501,
                format!("Unknown algorithm {name}; use SHA-256, SHA-512, SHA-1, MD5 or CRC32"),
            )),
        },
        Opts::Other(name) => Ok(Reply::new(501, format!("Option {name} not understood"))),
    }
}

/// `HELP`.
pub fn help(topic: Option<&str>) -> Reply {
    if let Some(t) = topic {
        if t.eq_ignore_ascii_case("SITE") {
            return site_help();
        }
    }
    let lines = vec![
        "USER PASS QUIT REIN NOOP SYST FEAT OPTS HELP STAT SITE AVBL".into(),
        "CWD CDUP XCWD XCUP PWD XPWD MKD XMKD RMD XRMD DELE RNFR RNTO".into(),
        "SIZE MDTM MFMT LIST NLST MLSD MLST TYPE MODE STRU PASV EPSV PORT EPRT".into(),
        "RETR STOR STOU APPE REST ALLO ABOR HASH RANG XMD5 XSHA1 XSHA256 XSHA512 XCRC MD5".into(),
    ];
    Reply::multi(
        214,
        "The following commands are recognized:",
        lines,
        "Help OK",
    )
}

fn site_help() -> Reply {
    Reply::multi(
        214,
        "SITE commands:",
        vec![
            "QUOTA - show your quota and usage".into(),
            "WHO - who is online on FTP and in the chat room".into(),
            "HELP".into(),
        ],
        "End",
    )
}

/// `SITE WHO`: users online on FTP (with their session counts) and in the chat room.
fn who(s: &Session) -> Reply {
    let ftp = s.shared.slots.users();
    let chat = s.shared.chat.nicks();
    let mut lines: Vec<String> = ftp
        .iter()
        .map(|(u, n)| format!("ftp  {u} ({n} session{})", if *n == 1 { "" } else { "s" }))
        .collect();
    lines.extend(chat.iter().map(|n| format!("chat {n}")));
    Reply::multi(
        211,
        "Online now:",
        lines,
        format!("{} on FTP, {} in the chat room", ftp.len(), chat.len()),
    )
}

/// `STAT` with no argument and no transfer: server and session status.
pub async fn status(s: &mut Session) -> Result<Reply, CommandError> {
    let login = logged_in(s)?;
    let usage = s.shared.accounts.usage(login.user.id).await?;
    let lines = vec![
        format!("Connected from {}", s.peer.ip()),
        format!("Logged in as {}", login.user.name),
        format!(
            "TYPE: {}, STRUcture: File, MODE: Stream",
            if s.st.ascii { "ASCII" } else { "BINARY" }
        ),
        format!("Current directory: {}", s.st.cwd),
        quota_line(&usage),
        "No data connection".into(),
    ];
    Ok(Reply::multi(
        211,
        "Ferry FTP server status:",
        lines,
        "End of status",
    ))
}

/// `STAT` while a transfer runs.
pub fn transfer_status(s: &Session) -> Reply {
    match &s.transfer {
        Some(t) => Reply::multi(
            213,
            "Status of the transfer:",
            vec![
                t.what.clone(),
                format!(
                    "{} transferred in {:.1} s",
                    format_size(t.progress.load(Ordering::Relaxed)),
                    t.started.elapsed().as_secs_f64()
                ),
            ],
            "End of status",
        ),
        None => Reply::new(211, "No transfer in progress"),
    }
}

fn quota_line(u: &crate::accounts::Usage) -> String {
    let quota = u
        .quota_bytes
        .map_or_else(|| "unlimited".to_string(), format_size);
    format!(
        "Disk usage: {} used, {} reserved by uploads in progress, quota {quota}, {} files",
        format_size(u.used_bytes),
        format_size(u.reserved_bytes),
        u.used_files
    )
}

/// `SITE ...`.
pub async fn site(s: &mut Session, site: Site) -> Result<Reply, CommandError> {
    match site {
        Site::Help => Ok(site_help()),
        Site::Quota => {
            let login = logged_in(s)?;
            let u = s.shared.accounts.usage(login.user.id).await?;
            let lines = vec![
                format!("used bytes: {}", u.used_bytes),
                format!("reserved bytes: {}", u.reserved_bytes),
                format!(
                    "quota bytes: {}",
                    u.quota_bytes
                        .map_or_else(|| "none".into(), |q| q.to_string())
                ),
                format!(
                    "free bytes: {}",
                    u.free_bytes()
                        .map_or_else(|| "unlimited".into(), |f| f.to_string())
                ),
                format!("used files: {}", u.used_files),
                format!(
                    "quota files: {}",
                    u.quota_files
                        .map_or_else(|| "none".into(), |q| q.to_string())
                ),
            ];
            Ok(Reply::multi(
                200,
                format!("Quota for {}:", login.user.name),
                lines,
                quota_line(&u),
            ))
        }
        Site::Who => Ok(who(s)),
        Site::Other(_) => Ok(Reply::new(
            504,
            "Unknown SITE command; SITE HELP lists them",
        )),
    }
}

/// `AVBL [path]`: free bytes for the user (their quota, else the file system's free space).
pub async fn avbl(s: &mut Session, path: Option<&str>) -> Result<Reply, CommandError> {
    let login = logged_in(s)?;
    if let Some(p) = path {
        let vp = resolve(s, p)?;
        let home = login.home.clone();
        let meta =
            crate::storage::blocking(move || home.stat(&vp).map_err(CommandError::from_io)).await?;
        if !meta.is_dir() {
            return Err(CommandError::NotADirectory);
        }
    }
    let u = s.shared.accounts.usage(login.user.id).await?;
    let free = match u.free_bytes() {
        Some(f) => f,
        None => {
            let dir = login.home.path().to_path_buf();
            crate::storage::blocking(move || fs_free(&dir).map_err(CommandError::from_io)).await?
        }
    };
    Ok(Reply::new(213, free.to_string()))
}

fn fs_free(dir: &std::path::Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}
