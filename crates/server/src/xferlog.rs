//! The transfer log: one wu-ftpd/vsftpd-compatible xferlog line per transfer in `logs/xferlog`
//! (times in UTC). Each line is one `write` to a file opened for appending, made by the session
//! that finished the transfer: a page-cache append of ~100 bytes, cheaper than waking a writer
//! thread, and atomic with respect to the other sessions' lines.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

/// One finished (or failed) transfer.
#[derive(Debug, Clone)]
pub struct XferRecord {
    /// How long it took.
    pub elapsed: Duration,
    /// Client address.
    pub remote: IpAddr,
    /// Bytes moved.
    pub bytes: u64,
    /// Virtual path.
    pub path: String,
    /// `true` for ASCII type.
    pub ascii: bool,
    /// `true` for uploads.
    pub incoming: bool,
    /// Account name.
    pub user: String,
    /// Whether it completed.
    pub complete: bool,
}

impl XferRecord {
    /// The xferlog line (without the newline).
    pub fn line(&self, now: OffsetDateTime) -> String {
        let fmt = time::macros::format_description!(
            "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
        );
        let when = now.format(&fmt).unwrap_or_default();
        // xferlog fields are space-separated: spaces in names become underscores, as vsftpd does.
        let path: String = self
            .path
            .chars()
            .map(|c| if c.is_whitespace() { '_' } else { c })
            .collect();
        format!(
            "{when} {} {} {} {path} {} _ {} r {} ftp 0 * {}",
            self.elapsed.as_secs().max(1),
            self.remote,
            self.bytes,
            if self.ascii { 'a' } else { 'b' },
            if self.incoming { 'i' } else { 'o' },
            self.user,
            if self.complete { 'c' } else { 'i' },
        )
    }
}

/// Handle for logging transfers; cheap to clone. A disabled log drops records.
#[derive(Debug, Clone)]
pub struct XferLog {
    file: Option<Arc<std::fs::File>>,
}

impl XferLog {
    /// A log that writes nothing.
    pub fn disabled() -> XferLog {
        XferLog { file: None }
    }

    /// Opens `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<XferLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(XferLog {
            file: Some(Arc::new(file)),
        })
    }

    /// Appends a record's line (one `write` call; an error is logged, never fatal).
    pub fn record(&self, rec: XferRecord) {
        if let Some(file) = &self.file {
            let mut line = rec.line(OffsetDateTime::now_utc());
            line.push('\n');
            if let Err(e) = (&**file).write_all(line.as_bytes()) {
                tracing::warn!(error = %e, "cannot write xferlog");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_the_fourteen_xferlog_fields() {
        let rec = XferRecord {
            elapsed: Duration::from_millis(1500),
            remote: "127.0.0.1".parse().unwrap(),
            bytes: 42,
            path: "/a b.txt".into(),
            ascii: false,
            incoming: true,
            user: "alice".into(),
            complete: true,
        };
        let now = OffsetDateTime::from_unix_timestamp(0).unwrap();
        let line = rec.line(now);
        assert_eq!(
            line,
            "Thu Jan  1 00:00:00 1970 1 127.0.0.1 42 /a_b.txt b _ i r alice ftp 0 * c"
        );
        assert_eq!(line.split_whitespace().count(), 18);
    }
}
