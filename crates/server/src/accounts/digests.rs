//! Cache of file digests (for `HASH`/`XSHA256`…), keyed by user, virtual path and algorithm.
//!
//! An entry is valid only for the size and mtime it was computed at, so a file changed behind
//! the server's back is simply hashed again.
//!
//! What uploads write here waits for a batch ([`PendingDigests`]): on a stream of small uploads
//! the cache's own transaction was a fifth of each upload's time on the server.

use std::time::Duration;

use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use super::{inline, to_i64, AccountError, Accounts};

/// Deferred writes flushed together once this many wait.
const FLUSH_AT: usize = 64;

/// The longest a deferred write waits for its flush when no reader and no full batch comes.
const FLUSH_AFTER: Duration = Duration::from_millis(50);

/// The statement that forgets the digests of path parameter `$p` for user parameter `$u`.
macro_rules! forget_digest_sql {
    ($u:literal, $p:literal) => {
        concat!(
            "DELETE FROM digests WHERE user_id = ",
            $u,
            " AND path = ",
            $p
        )
    };
}

/// The statement that forgets the digests of everything under `$p/` for user parameter `$u`.
///
/// Everything that starts with "path/" sorts in ["path/", "path0"), as '0' follows '/' in byte
/// order; unlike LIKE this needs no escaping of '%' and '_'. Separate from
/// [`forget_digest_sql`], not one statement with OR: SQLite cannot search the primary key for an
/// OR of an equality and a range, and scanned all of the user's digests on every upload
/// (uploads slowed as files accumulated).
macro_rules! forget_digests_below_sql {
    ($u:literal, $p:literal) => {
        concat!(
            "DELETE FROM digests WHERE user_id = ",
            $u,
            " AND path >= ",
            $p,
            " || '/' AND path < ",
            $p,
            " || '0'"
        )
    };
}

/// Remembers an upload's digest (parameters as [`DigestWrite::params`]: ?1 user, ?2 path,
/// ?3 size, ?4 version key, ?5 algorithm, ?6 hex) unless it has none or the user is gone by now.
macro_rules! insert_digest_sql {
    () => {
        "INSERT INTO digests (user_id, path, size, mtime_ns, algo, hex)
            SELECT ?1, ?2, ?3, ?4, ?5, ?6
            WHERE ?5 IS NOT NULL AND EXISTS (SELECT 1 FROM users WHERE id = ?1)"
    };
}

/// What a committed upload does to the cache: forget `path` and everything under it, then
/// remember the upload's own digest if it computed one.
#[derive(Debug)]
pub(super) struct DigestWrite {
    user_id: i64,
    path: String,
    /// Size, version key (mtime in ns), algorithm name and hex of the new file.
    entry: Option<(i64, i64, &'static str, String)>,
}

impl DigestWrite {
    /// The write for an upload of `path` (trailing slashes ignored).
    pub(super) fn new(
        user_id: i64,
        path: &str,
        entry: Option<(u64, i64, &'static str, &str)>,
    ) -> DigestWrite {
        DigestWrite {
            user_id,
            path: path.trim_end_matches('/').to_owned(),
            entry: entry
                .map(|(size, version, algo, hex)| (to_i64(size), version, algo, hex.to_owned())),
        }
    }

    /// Size, version key, algorithm and hex, or all `None` (a forget only).
    fn params(&self) -> (Option<i64>, Option<i64>, Option<&'static str>, Option<&str>) {
        match &self.entry {
            Some((size, version, algo, hex)) => {
                (Some(*size), Some(*version), Some(*algo), Some(hex))
            }
            None => (None, None, None, None),
        }
    }
}

/// Uploads' digest writes waiting to go to the database in one transaction. They are flushed
/// when [`FLUSH_AT`] wait, [`FLUSH_AFTER`] after the first at the latest (by
/// [`Accounts::flush_digests_in_background`]), and before anything in this process reads,
/// writes or forgets a digest, so no caller can tell. A crash loses at most the waiting
/// writes: files whose digest is then hashed again. Kept in order (an upload's writes queue up
/// under its user's ledger lock), and a flush holds the queue until it is done, so a later
/// batch never lands before an earlier one.
#[derive(Debug, Default)]
pub(super) struct PendingDigests {
    writes: Mutex<Vec<DigestWrite>>,
    /// Wakes the background flush when a write arrives at an empty queue.
    first: Notify,
}

impl Accounts {
    /// Queues an upload's cache write; flushes the queue when it is full.
    pub(super) async fn defer_digest(&self, write: DigestWrite) {
        let pending = &self.inner.digests;
        let mut writes = pending.writes.lock().await;
        writes.push(write);
        if writes.len() >= FLUSH_AT {
            self.write_digests(&mut writes).await;
        } else if writes.len() == 1 {
            pending.first.notify_one();
        }
    }

    /// Writes the queued uploads' digests to the database now.
    pub async fn flush_digests(&self) {
        let mut writes = self.inner.digests.writes.lock().await;
        if !writes.is_empty() {
            self.write_digests(&mut writes).await;
        }
    }

    /// Flushes queued digests at most 50 ms after they arrive, until `stop`; then flushes
    /// once more and returns.
    pub async fn flush_digests_in_background(&self, stop: CancellationToken) {
        let first = &self.inner.digests.first;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = first.notified() => {}
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(FLUSH_AFTER) => {}
            }
            self.flush_digests().await;
        }
        self.flush_digests().await;
    }

    /// Applies `writes` in one transaction, in order, and empties it. A failure only leaves
    /// entries out of the cache (and stale ones in it, which no longer match their file).
    async fn write_digests(&self, writes: &mut Vec<DigestWrite>) {
        let inline = self.inline(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for w in writes.iter() {
                let (size, version, algo, hex) = w.params();
                let params: [&dyn rusqlite::ToSql; 6] =
                    [&w.user_id, &w.path, &size, &version, &algo, &hex];
                let statements = [
                    forget_digest_sql!("?1", "?2"),
                    forget_digests_below_sql!("?1", "?2"),
                    insert_digest_sql!(),
                ];
                for sql in statements {
                    inline::run(&tx, sql, &params, |_| Ok(()))?;
                }
            }
            tx.commit()
        });
        if inline.is_some() {
            self.inline_committed();
        } else if let Err(e) = self.write_digests_pooled(writes).await {
            tracing::warn!(error = %e, uploads = writes.len(), "upload digests not cached; HASH computes them again");
        }
        writes.clear();
    }

    async fn write_digests_pooled(&self, writes: &[DigestWrite]) -> Result<(), AccountError> {
        let mut tx = self.pool().begin().await?;
        for w in writes {
            let (size, version, algo, hex) = w.params();
            // One write's statements share its numbered parameters; SQLite runs them in order.
            sqlx::query(concat!(
                forget_digest_sql!("?1", "?2"),
                ";",
                forget_digests_below_sql!("?1", "?2"),
                ";",
                insert_digest_sql!()
            ))
            .bind(w.user_id)
            .bind(&w.path)
            .bind(size)
            .bind(version)
            .bind(algo)
            .bind(hex)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The cached digest of `path` (a virtual path such as `/a/b.txt`) if it was computed for
    /// exactly this size and mtime.
    pub async fn get_digest(
        &self,
        user_id: i64,
        path: &str,
        size: u64,
        mtime_ns: i64,
        algo: &str,
    ) -> Result<Option<String>, AccountError> {
        self.flush_digests().await;
        Ok(sqlx::query_scalar(
            "SELECT hex FROM digests WHERE user_id = ?1 AND path = ?2 AND algo = ?3 \
             AND size = ?4 AND mtime_ns = ?5",
        )
        .bind(user_id)
        .bind(path)
        .bind(algo)
        .bind(to_i64(size))
        .bind(mtime_ns)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Remembers a digest, replacing any older one for the same path and algorithm.
    pub async fn put_digest(
        &self,
        user_id: i64,
        path: &str,
        size: u64,
        mtime_ns: i64,
        algo: &str,
        hex: &str,
    ) -> Result<(), AccountError> {
        self.flush_digests().await;
        sqlx::query(
            "INSERT INTO digests (user_id, path, size, mtime_ns, algo, hex)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (user_id, path, algo) DO UPDATE SET
                size = excluded.size, mtime_ns = excluded.mtime_ns, hex = excluded.hex",
        )
        .bind(user_id)
        .bind(path)
        .bind(to_i64(size))
        .bind(mtime_ns)
        .bind(algo)
        .bind(hex)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets the digests of `path` and of everything under `path/` (after a delete, a rename
    /// or an upload). `/` (or an empty path) forgets all of the user's digests.
    pub async fn forget_digests(&self, user_id: i64, path: &str) -> Result<(), AccountError> {
        self.flush_digests().await;
        let path = path.trim_end_matches('/');
        if path.is_empty() {
            sqlx::query("DELETE FROM digests WHERE user_id = ?1")
                .bind(user_id)
                .execute(self.pool())
                .await?;
            return Ok(());
        }
        sqlx::query(concat!(
            forget_digest_sql!("?1", "?2"),
            ";",
            forget_digests_below_sql!("?1", "?2")
        ))
        .bind(user_id)
        .bind(path)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{new_user, open_temp};
    use super::{Accounts, FLUSH_AT};

    /// Digest rows in the database itself, not through the queue.
    async fn stored(acc: &Accounts) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM digests")
            .fetch_one(acc.pool())
            .await
            .unwrap()
    }

    async fn upload(acc: &Accounts, id: i64, path: &str, hex: &str) {
        acc.commit_upload(id, 0, 10, 1, path, Some((10, 7, "SHA-256", hex)))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn upload_digests_wait_for_a_full_batch_yet_every_reader_sees_them() {
        let (_dir, acc) = open_temp().await;
        let id = acc.add_user(new_user("alice", "pw")).await.unwrap().id;
        upload(&acc, id, "/a", "aa").await;
        assert_eq!(
            stored(&acc).await,
            0,
            "one upload's digest waits for its batch"
        );
        let got = acc.get_digest(id, "/a", 10, 7, "SHA-256").await.unwrap();
        assert_eq!(
            got.as_deref(),
            Some("aa"),
            "a reader flushes the queue first"
        );
        assert_eq!(stored(&acc).await, 1);

        for i in 0..FLUSH_AT - 1 {
            upload(&acc, id, &format!("/f{i}"), "ff").await;
        }
        assert_eq!(stored(&acc).await, 1);
        upload(&acc, id, "/a", "a2").await;
        assert_eq!(
            stored(&acc).await,
            1 + FLUSH_AT as i64 - 1,
            "a full batch is written"
        );
        let got = acc.get_digest(id, "/a", 10, 7, "SHA-256").await.unwrap();
        assert_eq!(
            got.as_deref(),
            Some("a2"),
            "the later upload of /a replaced its digest"
        );

        upload(&acc, id, "/d/x", "xx").await;
        acc.forget_digests(id, "/d").await.unwrap();
        let got = acc.get_digest(id, "/d/x", 10, 7, "SHA-256").await.unwrap();
        assert_eq!(got, None, "a forget after an upload wins, queued or not");
    }

    #[tokio::test]
    async fn a_batch_goes_through_the_pool_while_another_connection_holds_the_write_lock() {
        use sqlx::Connection;
        use std::sync::atomic::Ordering;

        let (dir, acc) = open_temp().await;
        let id = acc.add_user(new_user("alice", "pw")).await.unwrap().id;
        upload(&acc, id, "/a", "aa").await;
        let inline_before = acc.inner.inline_commits.load(Ordering::Relaxed);
        // Another connection (as `ferry user` would be) holds the write lock.
        let mut other = sqlx::SqliteConnection::connect(&format!(
            "sqlite://{}",
            dir.path().join(super::super::db::DB_FILE).display()
        ))
        .await
        .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap();
        let flushing = tokio::spawn({
            let acc = acc.clone();
            async move { acc.flush_digests().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!flushing.is_finished(), "the batch waits for the lock");
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        flushing.await.unwrap();
        assert_eq!(stored(&acc).await, 1);
        assert_eq!(
            acc.inner.inline_commits.load(Ordering::Relaxed),
            inline_before,
            "written on the pool"
        );
        let got = acc.get_digest(id, "/a", 10, 7, "SHA-256").await.unwrap();
        assert_eq!(got.as_deref(), Some("aa"));
    }

    #[tokio::test]
    async fn a_queued_digest_of_a_user_deleted_meanwhile_is_dropped_alone() {
        let (_dir, acc) = open_temp().await;
        let alice = acc.add_user(new_user("alice", "pw")).await.unwrap().id;
        let bob = acc.add_user(new_user("bob", "pw")).await.unwrap().id;
        upload(&acc, alice, "/a", "aa").await;
        upload(&acc, bob, "/b", "bb").await;
        acc.delete_user("alice").await.unwrap();
        acc.flush_digests().await;
        assert_eq!(stored(&acc).await, 1);
        let got = acc.get_digest(bob, "/b", 10, 7, "SHA-256").await.unwrap();
        assert_eq!(got.as_deref(), Some("bb"));
    }

    #[tokio::test]
    async fn queued_digests_are_written_in_the_background_and_on_close() {
        let (dir, acc) = open_temp().await;
        let id = acc.add_user(new_user("alice", "pw")).await.unwrap().id;
        let stop = tokio_util::sync::CancellationToken::new();
        let flusher = tokio::spawn({
            let (acc, stop) = (acc.clone(), stop.clone());
            async move { acc.flush_digests_in_background(stop).await }
        });
        upload(&acc, id, "/a", "aa").await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while stored(&acc).await == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never flushed");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        stop.cancel();
        flusher.await.unwrap();

        upload(&acc, id, "/b", "bb").await;
        acc.close().await;
        let reopened = Accounts::open(dir.path()).await.unwrap();
        assert_eq!(stored(&reopened).await, 2, "close writes what was queued");
    }

    #[tokio::test]
    async fn digest_is_returned_only_for_the_same_size_and_mtime() {
        let (_dir, acc) = open_temp().await;
        let id = acc.add_user(new_user("alice", "pw")).await.unwrap().id;
        acc.put_digest(id, "/a.txt", 10, 111, "sha256", "aa")
            .await
            .unwrap();
        let get = |size, mtime, algo| acc.get_digest(id, "/a.txt", size, mtime, algo);
        assert_eq!(get(10, 111, "sha256").await.unwrap().as_deref(), Some("aa"));
        assert_eq!(get(11, 111, "sha256").await.unwrap(), None);
        assert_eq!(get(10, 112, "sha256").await.unwrap(), None);
        assert_eq!(get(10, 111, "md5").await.unwrap(), None);
        acc.put_digest(id, "/a.txt", 11, 222, "sha256", "bb")
            .await
            .unwrap();
        assert_eq!(get(11, 222, "sha256").await.unwrap().as_deref(), Some("bb"));
        assert_eq!(get(10, 111, "sha256").await.unwrap(), None);
    }

    #[tokio::test]
    async fn forget_removes_the_path_and_its_subtree_only() {
        let (_dir, acc) = open_temp().await;
        let id = acc.add_user(new_user("alice", "pw")).await.unwrap().id;
        let bob = acc.add_user(new_user("bob", "pw")).await.unwrap().id;
        let paths = [
            "/d", "/d/x", "/d/e/y", "/d0", "/d.txt", "/d-1/z", "/dx", "/other",
        ];
        for p in paths {
            acc.put_digest(id, p, 1, 1, "sha256", "h").await.unwrap();
        }
        acc.put_digest(bob, "/d/x", 1, 1, "sha256", "h")
            .await
            .unwrap();
        acc.forget_digests(id, "/d/").await.unwrap();
        for p in paths {
            let kept = acc
                .get_digest(id, p, 1, 1, "sha256")
                .await
                .unwrap()
                .is_some();
            let should_be_gone = p == "/d" || p.starts_with("/d/");
            assert_eq!(kept, !should_be_gone, "{p}");
        }
        assert!(acc
            .get_digest(bob, "/d/x", 1, 1, "sha256")
            .await
            .unwrap()
            .is_some());
        acc.forget_digests(id, "/").await.unwrap();
        assert_eq!(
            acc.get_digest(id, "/other", 1, 1, "sha256").await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn deleting_a_user_deletes_their_digests() {
        let (_dir, acc) = open_temp().await;
        let id = acc.add_user(new_user("alice", "pw")).await.unwrap().id;
        acc.put_digest(id, "/a", 1, 1, "md5", "h").await.unwrap();
        acc.delete_user("alice").await.unwrap();
        let id2 = acc.add_user(new_user("alice", "pw")).await.unwrap().id;
        assert_ne!(id, id2, "ids are never reused");
        assert_eq!(acc.get_digest(id, "/a", 1, 1, "md5").await.unwrap(), None);
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM digests")
            .fetch_one(acc.pool())
            .await
            .unwrap();
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn forgetting_digests_searches_the_key_instead_of_scanning_the_users_rows() {
        let (_dir, acc) = open_temp().await;
        let statements = [
            forget_digest_sql!("?1", "?2"),
            forget_digests_below_sql!("?1", "?2"),
        ];
        for statement in statements {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {statement}"))
                    .fetch_all(acc.pool())
                    .await
                    .unwrap();
            for (_, _, _, detail) in &plan {
                assert!(
                    detail.contains("(user_id=? AND path"),
                    "{statement}: {detail}"
                );
            }
            assert!(!plan.is_empty(), "{statement}");
        }
    }
}
