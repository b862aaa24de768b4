//! The statements every upload runs (its begin and its commit) and every login's account lookup,
//! executed on the calling thread through a thread-local SQLite connection instead of a round
//! trip to sqlx's worker thread.
//!
//! Measured on the small-files workload, the two round trips per upload (each a wakeup of the
//! worker and one of the session thread per result row) cost as much as the rest of the upload.
//! The connection never waits: its busy timeout is 0, so when another connection or process
//! (`ferry user`) holds the write lock, or anything else fails, nothing was changed and the
//! caller runs the same SQL on the pool, which waits and reports errors as usual.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OpenFlags, ToSql};

use super::db::DB_FILE;
use std::path::PathBuf;

use super::{opt_u64, to_u64, Accounts, Permissions, Usage, User};

/// Inline commits between two WAL checkpoints. The inline connections never checkpoint
/// themselves (that would fsync on a session thread); every this many commits a checkpoint is
/// due ([`Accounts::take_checkpoint_due`]) and the server runs a passive one on the pool in the
/// background, which keeps the WAL near SQLite's default size (1,000 pages) at about 3 pages
/// per upload.
pub(super) const CHECKPOINT_EVERY: u64 = 256;

/// Source of [`Owner`] ids: one per [`Accounts::open`], never reused in a process.
static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

/// Which opened database a thread's connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Owner(u64);

impl Owner {
    pub(super) fn next() -> Owner {
        Owner(NEXT_OWNER.fetch_add(1, Ordering::Relaxed))
    }
}

thread_local! {
    /// This thread's connection, for the one database it last used. A thread that switches to
    /// another database (tests do) closes the old connection, so each thread holds at most one.
    static SLOT: RefCell<Option<(Owner, Connection)>> = const { RefCell::new(None) };
}

impl Accounts {
    /// Runs `f` on this thread's connection to the database. `None`: it could not run (busy,
    /// closed, or a failure; `f`'s changes were rolled back) and the caller should use the pool.
    pub(super) fn inline<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Option<T> {
        if self.pool().is_closed() {
            return None;
        }
        let owner = self.inner.owner;
        SLOT.with(|slot| {
            let mut slot = slot.try_borrow_mut().ok()?;
            if slot.as_ref().is_none_or(|(o, _)| *o != owner) {
                *slot = None; // close the old database's connection first
                match self.open_inline() {
                    Ok(conn) => *slot = Some((owner, conn)),
                    Err(e) => {
                        tracing::debug!(error = %e, "inline database connection not opened");
                        return None;
                    }
                }
            }
            let (_, conn) = slot.as_mut()?;
            match f(conn) {
                Ok(v) => Some(v),
                Err(e) => {
                    if !is_busy(&e) {
                        // Not the expected contention: start over with a fresh connection.
                        tracing::debug!(error = %e, "inline database statement failed");
                        *slot = None;
                    }
                    None
                }
            }
        })
    }

    /// Counts an inline commit; every [`CHECKPOINT_EVERY`] of them a checkpoint is due.
    pub(super) fn inline_committed(&self) {
        let n = self.inner.inline_commits.fetch_add(1, Ordering::Relaxed) + 1;
        if n % CHECKPOINT_EVERY == 0 {
            self.inner.checkpoint_due.store(true, Ordering::Relaxed);
        }
    }

    /// `true` once (then `false` until the next one) when uploads committed since the last
    /// checkpoint call for another: the caller then runs [`Accounts::checkpoint`], off the path
    /// of any client.
    pub fn take_checkpoint_due(&self) -> bool {
        self.inner.checkpoint_due.swap(false, Ordering::Relaxed)
    }

    /// A passive WAL checkpoint on the pool. Its fsyncs take milliseconds (54 ms in all
    /// per 2,000 small uploads measured here), and longer when the disk is busy, so the server
    /// runs it as a background task rather than before a session's next command. A failure
    /// only leaves the WAL longer until the next one.
    pub async fn checkpoint(&self) {
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(self.pool())
            .await
        {
            tracing::debug!(error = %e, "WAL checkpoint failed");
        }
    }

    fn open_inline(&self) -> rusqlite::Result<Connection> {
        // The database exists: `Accounts::open` created it and its schema.
        let conn = Connection::open_with_flags(
            self.data_dir().join(DB_FILE),
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::ZERO)?;
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA wal_autocheckpoint = 0;",
        )?;
        Ok(conn)
    }
}

/// Another connection holds the lock this statement needs.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Runs one cached statement with the leading `params` it numbers (`?1`…`?N`; statements of one
/// commit share a parameter list and each uses a prefix of it) and returns its first row, mapped.
pub(super) fn run<T>(
    conn: &Connection,
    sql: &str,
    params: &[&dyn ToSql],
    map: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let n = stmt.parameter_count();
    let Some(params) = params.get(..n) else {
        return Err(rusqlite::Error::InvalidParameterCount(params.len(), n));
    };
    let mut rows = stmt.query(params)?;
    let first = match rows.next()? {
        Some(row) => Some(map(row)?),
        None => None,
    };
    // Step to the end so the statement is complete (a RETURNING write finishes its changes).
    while rows.next()?.is_some() {}
    Ok(first)
}

/// A row of [`super::USER_COLUMNS`] (by their names), as `user_from_row` reads it from sqlx.
pub(super) fn user_from(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get("id")?,
        name: row.get("name")?,
        home: row.get::<_, Option<String>>("home")?.map(PathBuf::from),
        quota_bytes: opt_u64(row.get("quota_bytes")?),
        quota_files: opt_u64(row.get("quota_files")?),
        perms: Permissions::from_bits(row.get("perms")?),
        enabled: row.get("enabled")?,
        max_download_bps: opt_u64(row.get("max_download_bps")?),
        max_upload_bps: opt_u64(row.get("max_upload_bps")?),
        announce_files: row.get("announce_files")?,
    })
}

/// A row of `used_bytes, used_files, reserved_bytes, quota_bytes, quota_files`.
pub(super) fn usage_from(row: &rusqlite::Row<'_>) -> rusqlite::Result<Usage> {
    Ok(Usage {
        used_bytes: to_u64(row.get(0)?),
        used_files: to_u64(row.get(1)?),
        reserved_bytes: to_u64(row.get(2)?),
        quota_bytes: opt_u64(row.get(3)?),
        quota_files: opt_u64(row.get(4)?),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::{Connection as _, SqliteConnection};

    use super::super::tests::{new_user, open_temp};
    use super::*;

    fn inline_commits(acc: &Accounts) -> u64 {
        acc.inner.inline_commits.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn uploads_commit_inline_and_on_the_pool_while_another_connection_holds_the_lock() {
        let (dir, acc) = open_temp().await;
        let mut nu = new_user("alice", "pw");
        nu.quota_files = Some(10);
        let id = acc.add_user(nu).await.unwrap().id;

        assert_eq!(
            acc.begin_upload(id, true)
                .await
                .unwrap()
                .unwrap()
                .0
                .used_files,
            1
        );
        acc.commit_upload(id, 0, 100, 0, "/a", Some((100, 7, "SHA-256", "aa")))
            .await
            .unwrap();
        assert_eq!(inline_commits(&acc), 1, "the commit ran inline");

        // Another connection (as `ferry user` would be) holds the write lock.
        let mut other = SqliteConnection::connect(&format!(
            "sqlite://{}",
            dir.path().join(super::DB_FILE).display()
        ))
        .await
        .unwrap();
        // A begin, then a commit, each while the lock is held: both wait for it on the pool.
        for step in ["begin", "commit"] {
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut other)
                .await
                .unwrap();
            let acc2 = acc.clone();
            let waiting = tokio::spawn(async move {
                match step {
                    "begin" => acc2
                        .begin_upload(id, true)
                        .await
                        .map(|u| u.map(|(u, _)| u.used_files)),
                    _ => acc2
                        .commit_upload(id, 0, 50, 0, "/b", Some((50, 8, "SHA-256", "bb")))
                        .await
                        .map(|()| None),
                }
            });
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(
                !waiting.is_finished(),
                "{step}: nothing can write while the lock is held"
            );
            sqlx::query("COMMIT").execute(&mut other).await.unwrap();
            let done = waiting.await.unwrap().unwrap();
            if step == "begin" {
                assert_eq!(done, Some(2));
            }
            assert_eq!(inline_commits(&acc), 1, "{step} went through the pool");
        }

        let usage = acc.usage(id).await.unwrap();
        assert_eq!((usage.used_bytes, usage.used_files), (150, 2));
        for (path, size, version, hex) in [("/a", 100, 7, "aa"), ("/b", 50, 8, "bb")] {
            let got = acc
                .get_digest(id, path, size, version, "SHA-256")
                .await
                .unwrap();
            assert_eq!(got.as_deref(), Some(hex), "{path}");
        }
        // Lock released: inline again (the digest batch written for the reads above was too);
        // a user deleted meanwhile is reported as such.
        assert_eq!(
            inline_commits(&acc),
            2,
            "the digest batch was written inline"
        );
        acc.commit_upload(id, 0, 1, 0, "/c", None).await.unwrap();
        assert_eq!(inline_commits(&acc), 3);
        acc.delete_user("alice").await.unwrap();
        assert!(matches!(
            acc.commit_upload(id, 0, 1, 0, "/d", None).await,
            Err(super::super::AccountError::NoSuchUserId(i)) if i == id
        ));
        assert!(
            matches!(acc.begin_upload(id, true).await, Err(super::super::AccountError::NoSuchUserId(i)) if i == id)
        );
    }

    #[tokio::test]
    async fn inline_commits_keep_the_wal_checkpointed() {
        let (dir, acc) = open_temp().await;
        let id = acc.add_user(new_user("alice", "pw")).await.unwrap().id;
        let commits = 6 * CHECKPOINT_EVERY;
        for i in 0..commits {
            let (_, charged) = acc.begin_upload(id, true).await.unwrap().unwrap();
            let path = format!("/d/f{i:05}");
            let files = i64::from(!charged);
            acc.commit_upload(id, 0, 10, files, &path, Some((10, 1, "SHA-256", "00")))
                .await
                .unwrap();
            if acc.take_checkpoint_due() {
                acc.checkpoint().await;
            }
        }
        assert!(inline_commits(&acc) >= commits - 1);
        // Each commit appends at least 3 pages of 4 KiB (usage, digests table and key), so
        // without checkpoints the WAL would exceed 18 MiB.
        let wal = std::fs::metadata(dir.path().join(format!("{}-wal", super::DB_FILE)))
            .unwrap()
            .len();
        assert!(wal < 8 << 20, "WAL is {wal} bytes");
        assert_eq!(acc.usage(id).await.unwrap().used_files, commits);
    }

    #[tokio::test]
    async fn a_thread_switching_databases_uses_the_right_one() {
        let (_d1, one) = open_temp().await;
        let (_d2, two) = open_temp().await;
        let a = one.add_user(new_user("alice", "pw")).await.unwrap().id;
        let b = two.add_user(new_user("bob", "pw")).await.unwrap().id;
        for _ in 0..3 {
            one.commit_upload(a, 0, 1, 0, "/x", None).await.unwrap();
            two.commit_upload(b, 0, 2, 0, "/x", None).await.unwrap();
        }
        assert_eq!(one.usage(a).await.unwrap().used_bytes, 3);
        assert_eq!(two.usage(b).await.unwrap().used_bytes, 6);
        assert_eq!((inline_commits(&one), inline_commits(&two)), (3, 3));
    }
}
