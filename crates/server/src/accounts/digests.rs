//! Cache of file digests (for `HASH`/`XSHA256`…), keyed by user, virtual path and algorithm.
//!
//! An entry is valid only for the size and mtime it was computed at, so a file changed behind
//! the server's back is simply hashed again.

use super::{to_i64, AccountError, Accounts};

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
pub(super) use {forget_digest_sql, forget_digests_below_sql};

impl Accounts {
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
