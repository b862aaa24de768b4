//! File digests: HASH and RANG (draft-bryan-ftpext-hash, draft-bryan-ftp-range), the X* commands
//! (XMD5, XSHA1, XSHA256, XSHA512, XCRC: reply 250) and MD5 (draft-twine-ftpmd5: reply 251).
//!
//! Full-file digests are cached in the database keyed by size and mtime (uploads store their
//! SHA-256 as they stream); others are computed on a blocking thread under a server-wide bound.

use ferry_proto::ftp::command::HashAlgo;
use ferry_proto::ftp::Reply;

use super::{logged_in, require, resolve};
use crate::digest::hash_range;
use crate::error::CommandError;
use crate::session::Session;
use crate::storage::blocking;
use crate::transfer::meta_version;

/// `RANG start end` (end inclusive); `RANG 1 0` resets.
pub fn rang(s: &mut Session, start: u64, end: u64) -> Reply {
    if start == 1 && end == 0 {
        s.st.rang = None;
        return Reply::new(350, "Restarting at 0. Ending byte EOF");
    }
    s.st.rang = Some((start, end));
    Reply::new(350, format!("Restarting at {start}. Ending byte {end}"))
}

struct Computed {
    hex: String,
    start: u64,
    end: u64,
}

async fn compute(
    s: &mut Session,
    path: &str,
    algo: HashAlgo,
    range: Option<(u64, u64)>,
) -> Result<Computed, CommandError> {
    let login = logged_in(s)?;
    require(login.user.perms.read)?;
    let target = resolve(s, path)?;
    let (home, t) = (login.home.clone(), target.clone());
    let user_id = login.user.id;
    let (mut file, size, mtime) = blocking(move || {
        let (file, _) = home.open_read(&t)?;
        let meta = home.stat(&t)?;
        Ok((file, meta.len(), meta_version(&meta)))
    })
    .await?;
    let (start, end) = match range {
        None => (0, size),
        Some((a, b)) => {
            if a >= size && size > 0 || a > size {
                return Err(CommandError::BadArgument(format!(
                    "RANG start {a} is beyond the end of the file ({size} bytes)"
                )));
            }
            (a, b.saturating_add(1).min(size))
        }
    };
    let full = start == 0 && end == size;
    let accounts = s.shared.accounts.clone();
    if full {
        if let Some(hex) = accounts
            .get_digest(user_id, target.as_str(), size, mtime, algo.name())
            .await?
        {
            return Ok(Computed { hex, start, end });
        }
    }
    let _permit = s
        .shared
        .hash_jobs
        .acquire()
        .await
        .map_err(|_| CommandError::Local("shutting down".into()))?;
    let hex = blocking(move || Ok(hash_range(&mut file, algo, start, end)?)).await?;
    if full {
        accounts
            .put_digest(user_id, target.as_str(), size, mtime, algo.name(), &hex)
            .await?;
    }
    Ok(Computed { hex, start, end })
}

/// `HASH path` with the algorithm chosen by `OPTS HASH` and the range set by `RANG`.
pub async fn hash(s: &mut Session, path: &str) -> Result<Reply, CommandError> {
    let algo = s.st.hash_algo;
    let range = s.st.rang.take();
    let c = compute(s, path, algo, range).await?;
    // The range is shown end-inclusive, as in the draft's examples (`0-99` for 100 bytes);
    // an empty file is `0-0`.
    let shown_end = c.end.saturating_sub(1).max(c.start);
    Ok(Reply::new(
        213,
        format!(
            "{} {}-{} {} {}",
            algo.name(),
            c.start,
            shown_end,
            c.hex,
            path
        ),
    ))
}

/// `XMD5`/`XSHA1`/`XSHA256`/`XSHA512`/`XCRC path` (250) and `MD5 path` (251).
pub async fn xhash(
    s: &mut Session,
    algo: HashAlgo,
    path: &str,
    md5_cmd: bool,
) -> Result<Reply, CommandError> {
    let c = compute(s, path, algo, None).await?;
    Ok(if md5_cmd {
        Reply::new(251, format!("{path} {}", c.hex))
    } else {
        Reply::new(250, c.hex)
    })
}
