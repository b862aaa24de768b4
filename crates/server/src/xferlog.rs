//! The transfer log: one wu-ftpd/vsftpd-compatible xferlog line per transfer in `logs/xferlog`,
//! (times in UTC), written by one thread so sessions never wait on the disk for it.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::mpsc;

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
    tx: Option<mpsc::Sender<XferRecord>>,
}

impl XferLog {
    /// A log that writes nothing.
    pub fn disabled() -> XferLog {
        XferLog { tx: None }
    }

    /// Opens `path` for appending and starts the writer task.
    pub fn open(path: &Path) -> std::io::Result<XferLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, mut rx) = mpsc::channel::<XferRecord>(4096);
        std::thread::Builder::new()
            .name("xferlog".into())
            .spawn(move || {
                while let Some(rec) = rx.blocking_recv() {
                    let now = OffsetDateTime::now_utc();
                    if let Err(e) = writeln!(file, "{}", rec.line(now)) {
                        tracing::warn!(error = %e, "cannot write xferlog");
                    }
                }
            })?;
        Ok(XferLog { tx: Some(tx) })
    }

    /// Queues a record; if the writer is far behind the record is dropped (and that is logged).
    pub fn record(&self, rec: XferRecord) {
        if let Some(tx) = &self.tx {
            if tx.try_send(rec).is_err() {
                tracing::warn!("xferlog queue full, record dropped");
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
