//! The quota ledger: used and reserved bytes and files per user.
//!
//! Every operation is one SQL statement, so it is atomic across sessions and across processes
//! (the server and `ferry user`). Subtractions are clamped at 0 with `CASE` (portable SQL).

use std::sync::LazyLock;

use super::digests::DigestWrite;
use super::{inline, to_i64, usage_from_row, AccountError, Accounts, Usage, USAGE_COLUMNS};

/// Counts a new file if the file quota allows it and returns the ledger and limits
/// (`used_bytes, used_files, reserved_bytes, quota_bytes, quota_files`); no row: refused or no
/// such user. `?1`: user id.
macro_rules! begin_new_file_sql {
    () => {
        "UPDATE usage SET used_files = used_files + 1
         WHERE user_id = ?1 AND used_files + 1 <= COALESCE(
             (SELECT quota_files FROM users WHERE id = ?1), used_files + 1)
         RETURNING used_bytes, used_files, reserved_bytes,
             (SELECT quota_bytes FROM users WHERE id = ?1) AS quota_bytes,
             (SELECT quota_files FROM users WHERE id = ?1) AS quota_files"
    };
}

/// Releases the reservation and charges the upload; returns a row unless the user is gone.
macro_rules! settle_returning_sql {
    () => {
        "UPDATE usage SET
            reserved_bytes = CASE WHEN reserved_bytes > ?2 THEN reserved_bytes - ?2 ELSE 0 END,
            used_bytes = CASE WHEN used_bytes + ?3 > 0 THEN used_bytes + ?3 ELSE 0 END,
            used_files = CASE WHEN used_files + ?4 > 0 THEN used_files + ?4 ELSE 0 END
         WHERE user_id = ?1
         RETURNING user_id"
    };
}

/// The ledger and limits of user `?1`, in the column order of [`inline::usage_from`]; built
/// once, as uploads run it.
static USAGE_BY_ID_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {USAGE_COLUMNS} FROM usage JOIN users ON users.id = usage.user_id \
         WHERE usage.user_id = ?1"
    )
});

/// Deltas beyond this are clamped so `used + reserved + add` cannot overflow SQLite's i64.
const MAX_DELTA: i64 = 1 << 60;

fn clamp_delta(v: i64) -> i64 {
    v.clamp(-MAX_DELTA, MAX_DELTA)
}

fn clamp_amount(v: u64) -> i64 {
    to_i64(v).min(MAX_DELTA)
}

impl Accounts {
    /// The user's ledger and limits.
    pub async fn usage(&self, user_id: i64) -> Result<Usage, AccountError> {
        let row = sqlx::query(USAGE_BY_ID_SQL.as_str())
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?;
        match row {
            Some(row) => Ok(usage_from_row(&row)?),
            None => Err(AccountError::NoSuchUserId(user_id)),
        }
    }

    /// Reserves `add` more bytes for an upload that already holds `held`. If
    /// `used + reserved + add` fits the byte quota (or there is none) the reservation grows and
    /// this returns `true`; otherwise the caller's `held` bytes are released in the same atomic
    /// step and this returns `false`, so of two uploads that together exceed the quota one
    /// can always finish. After `false` the caller holds nothing.
    pub async fn reserve(&self, user_id: i64, add: u64, held: u64) -> Result<bool, AccountError> {
        // All right-hand sides see the row as it was before the update, so `reserve_ok` is the
        // outcome of exactly the test that chose the new `reserved_bytes`.
        let ok: Option<bool> = sqlx::query_scalar(
            "UPDATE usage SET
                reserved_bytes = CASE
                    WHEN q.quota IS NULL OR used_bytes + reserved_bytes + ?2 <= q.quota
                        THEN reserved_bytes + ?2
                    WHEN reserved_bytes > ?3 THEN reserved_bytes - ?3
                    ELSE 0 END,
                reserve_ok = (q.quota IS NULL OR used_bytes + reserved_bytes + ?2 <= q.quota)
             FROM (SELECT quota_bytes AS quota FROM users WHERE id = ?1) AS q
             WHERE usage.user_id = ?1
             RETURNING reserve_ok",
        )
        .bind(user_id)
        .bind(clamp_amount(add))
        .bind(clamp_amount(held))
        .fetch_optional(self.pool())
        .await?;
        ok.ok_or(AccountError::NoSuchUserId(user_id))
    }

    /// Gives back `held` reserved bytes (an upload failed or was aborted).
    pub async fn release(&self, user_id: i64, held: u64) -> Result<(), AccountError> {
        self.update_usage(
            user_id,
            "reserved_bytes = CASE WHEN reserved_bytes > ?2 THEN reserved_bytes - ?2 ELSE 0 END",
            clamp_amount(held),
            0,
        )
        .await
    }

    /// Ends an upload: releases `held` and charges what was really stored (`delta_bytes` is
    /// new size minus old size for an overwrite; `delta_files` is 1 for a new file).
    pub async fn settle(
        &self,
        user_id: i64,
        held: u64,
        delta_bytes: i64,
        delta_files: i64,
    ) -> Result<(), AccountError> {
        let (held, delta_bytes, delta_files) = (
            clamp_amount(held),
            clamp_delta(delta_bytes),
            clamp_delta(delta_files),
        );
        let inline = self.inline(|conn| {
            let params: [&dyn rusqlite::ToSql; 4] = [&user_id, &held, &delta_bytes, &delta_files];
            inline::run(conn, settle_returning_sql!(), &params, |_| Ok(()))
        });
        let found = match inline {
            Some(found) => {
                self.inline_committed();
                found
            }
            None => sqlx::query_scalar::<_, i64>(settle_returning_sql!())
                .bind(user_id)
                .bind(held)
                .bind(delta_bytes)
                .bind(delta_files)
                .fetch_optional(self.pool())
                .await?
                .map(|_| ()),
        };
        match found {
            Some(_) => Ok(()),
            None => Err(AccountError::NoSuchUserId(user_id)),
        }
    }

    /// Adds to (or with negative deltas subtracts from) the used bytes and files, clamped at 0:
    /// deletes, and changes made without a reservation.
    pub async fn charge(
        &self,
        user_id: i64,
        delta_bytes: i64,
        delta_files: i64,
    ) -> Result<(), AccountError> {
        self.update_usage(
            user_id,
            "used_bytes = CASE WHEN used_bytes + ?2 > 0 THEN used_bytes + ?2 ELSE 0 END, \
             used_files = CASE WHEN used_files + ?3 > 0 THEN used_files + ?3 ELSE 0 END",
            clamp_delta(delta_bytes),
            clamp_delta(delta_files),
        )
        .await
    }

    /// Counts one more file if the file quota allows it (`used_files + 1 <= quota_files`, or
    /// no file quota); `false` leaves the ledger unchanged.
    pub async fn try_add_file(&self, user_id: i64) -> Result<bool, AccountError> {
        let added = sqlx::query(
            "UPDATE usage SET used_files = used_files + 1
             WHERE user_id = ?1 AND used_files + 1 <= COALESCE(
                 (SELECT quota_files FROM users WHERE id = ?1), used_files + 1)",
        )
        .bind(user_id)
        .execute(self.pool())
        .await?;
        if added.rows_affected() == 1 {
            return Ok(true);
        }
        // Refused: tell a full quota from a vanished user (only the error depends on this).
        self.usage(user_id).await.map(|_| false)
    }

    /// At the start of an upload: the user's ledger and limits, and whether a new file
    /// (`new_file`) was counted now. Under a file quota a new file is counted here, in one
    /// statement, if the quota allows it; without one there is nothing to check, and the file
    /// is counted when it is committed ([`Accounts::commit_upload`]), so the start of an upload
    /// only reads. `None`: the file quota is full (nothing changed).
    pub async fn begin_upload(
        &self,
        user_id: i64,
        new_file: bool,
    ) -> Result<Option<(Usage, bool)>, AccountError> {
        let inline = self
            .inline(|conn| inline::run(conn, &USAGE_BY_ID_SQL, &[&user_id], inline::usage_from));
        let usage = match inline {
            Some(Some(usage)) => usage,
            _ => self.usage(user_id).await?,
        };
        if !new_file || usage.quota_files.is_none() {
            return Ok(Some((usage, false)));
        }
        let inline = self.inline(|conn| {
            inline::run(conn, begin_new_file_sql!(), &[&user_id], inline::usage_from)
        });
        let row = match inline {
            Some(Some(usage)) => return Ok(Some((usage, true))),
            Some(None) => None,
            None => {
                sqlx::query(begin_new_file_sql!())
                    .bind(user_id)
                    .fetch_optional(self.pool())
                    .await?
            }
        };
        match row {
            Some(row) => Ok(Some((usage_from_row(&row)?, true))),
            // Refused: tell a full quota from a vanished user (only the error depends on this).
            None => self.usage(user_id).await.map(|_| None),
        }
    }

    /// Ends a completed upload: settles the ledger as [`Accounts::settle`] does, and queues
    /// the digest cache's write for the upload (forget the digests of `path` and below, and
    /// remember the upload's own digest — size, version key, algorithm name, hex — if it has
    /// one). That write waits for a batch: readers of the cache cannot tell (digests.rs).
    pub async fn commit_upload(
        &self,
        user_id: i64,
        held: u64,
        delta_bytes: i64,
        delta_files: i64,
        path: &str,
        digest: Option<(u64, i64, &'static str, &str)>,
    ) -> Result<(), AccountError> {
        let settled = self.settle(user_id, held, delta_bytes, delta_files).await;
        self.defer_digest(DigestWrite::new(user_id, path, digest))
            .await;
        settled
    }

    /// Overwrites the used bytes and files (after a rescan); reservations are kept.
    pub async fn set_usage(
        &self,
        user_id: i64,
        bytes: u64,
        files: u64,
    ) -> Result<(), AccountError> {
        self.update_usage(
            user_id,
            "used_bytes = ?2, used_files = ?3",
            to_i64(bytes),
            to_i64(files),
        )
        .await
    }

    /// Sets every user's reservations to 0: at server start, nothing can be uploading yet
    /// (a crash may have left reservations behind).
    pub async fn reset_reservations(&self) -> Result<(), AccountError> {
        sqlx::query("UPDATE usage SET reserved_bytes = 0 WHERE reserved_bytes <> 0")
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// `UPDATE usage SET <assignments> WHERE user_id = ?1` with `?2` and `?3` bound.
    async fn update_usage(
        &self,
        user_id: i64,
        assignments: &'static str,
        a: i64,
        b: i64,
    ) -> Result<(), AccountError> {
        let sql = format!("UPDATE usage SET {assignments} WHERE user_id = ?1");
        let done = sqlx::query(&sql)
            .bind(user_id)
            .bind(a)
            .bind(b)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(AccountError::NoSuchUserId(user_id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{new_user, open_temp};
    use super::super::User;
    use super::*;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;

    #[tokio::test]
    async fn commit_upload_settles_and_replaces_digests() {
        let (_d, acc) = open_temp().await;
        let u = user_with_quota(&acc, Some(10 * MIB), Some(3)).await;
        let (before, charged) = acc.begin_upload(u.id, true).await.unwrap().unwrap();
        assert!(
            charged,
            "under a file quota the file is counted at the start"
        );
        assert_eq!(before.used_files, 1);
        assert_eq!(before.quota_bytes, Some(10 * MIB));
        assert_eq!(before.quota_files, Some(3));
        assert!(acc.reserve(u.id, MIB, 0).await.unwrap());
        acc.put_digest(u.id, "/d/a", 1, 1, "SHA-256", "old")
            .await
            .unwrap();
        acc.put_digest(u.id, "/d/a/x", 1, 1, "SHA-256", "below")
            .await
            .unwrap();
        acc.put_digest(u.id, "/d/ab", 1, 1, "SHA-256", "sibling")
            .await
            .unwrap();
        acc.commit_upload(u.id, MIB, 700, 0, "/d/a", Some((700, 42, "SHA-256", "new")))
            .await
            .unwrap();
        let after = acc.usage(u.id).await.unwrap();
        assert_eq!(
            (after.used_bytes, after.used_files, after.reserved_bytes),
            (700, 1, 0)
        );
        assert_eq!(
            acc.get_digest(u.id, "/d/a", 700, 42, "SHA-256")
                .await
                .unwrap()
                .as_deref(),
            Some("new")
        );
        assert_eq!(
            acc.get_digest(u.id, "/d/a/x", 1, 1, "SHA-256")
                .await
                .unwrap(),
            None
        );
        assert!(acc
            .get_digest(u.id, "/d/ab", 1, 1, "SHA-256")
            .await
            .unwrap()
            .is_some());
        // Without a digest: only forgets.
        acc.commit_upload(u.id, 0, 10, 0, "/d/ab", None)
            .await
            .unwrap();
        assert_eq!(
            acc.get_digest(u.id, "/d/ab", 1, 1, "SHA-256")
                .await
                .unwrap(),
            None
        );
        assert_eq!(acc.usage(u.id).await.unwrap().used_bytes, 710);
        // The pooled connections are left without an open transaction: plain writes still work.
        for _ in 0..8 {
            acc.charge(u.id, 1, 0).await.unwrap();
        }
    }

    #[tokio::test]
    async fn without_a_file_quota_a_new_file_is_counted_at_its_commit() {
        let (_d, acc) = open_temp().await;
        let u = user_with_quota(&acc, Some(10 * MIB), None).await;
        let (usage, charged) = acc.begin_upload(u.id, true).await.unwrap().unwrap();
        assert!(!charged);
        assert_eq!((usage.used_files, usage.quota_bytes), (0, Some(10 * MIB)));
        assert_eq!(acc.usage(u.id).await.unwrap().used_files, 0);
        acc.commit_upload(u.id, 0, 5, 1, "/n", None).await.unwrap();
        let after = acc.usage(u.id).await.unwrap();
        assert_eq!((after.used_bytes, after.used_files), (5, 1));
    }

    #[tokio::test]
    async fn begin_upload_refuses_a_new_file_over_the_file_quota() {
        let (_d, acc) = open_temp().await;
        let u = user_with_quota(&acc, None, Some(1)).await;
        assert!(acc.begin_upload(u.id, true).await.unwrap().is_some());
        assert!(acc.begin_upload(u.id, true).await.unwrap().is_none());
        assert_eq!(acc.usage(u.id).await.unwrap().used_files, 1);
        // An overwrite needs no new file slot.
        assert!(acc.begin_upload(u.id, false).await.unwrap().is_some());
        assert!(matches!(
            acc.begin_upload(999, true).await,
            Err(AccountError::NoSuchUserId(999))
        ));
        assert!(matches!(
            acc.commit_upload(999, 0, 1, 0, "/x", None).await,
            Err(AccountError::NoSuchUserId(999))
        ));
    }

    async fn user_with_quota(acc: &Accounts, bytes: Option<u64>, files: Option<u64>) -> User {
        let mut nu = new_user("alice", "pw");
        nu.quota_bytes = bytes;
        nu.quota_files = files;
        acc.add_user(nu).await.unwrap()
    }

    #[tokio::test]
    async fn reserve_within_the_limit_and_over_it() {
        let (_dir, acc) = open_temp().await;
        let u = user_with_quota(&acc, Some(1000), None).await;
        assert!(acc.reserve(u.id, 600, 0).await.unwrap());
        assert!(
            acc.reserve(u.id, 400, 600).await.unwrap(),
            "exactly full is allowed"
        );
        let usage = acc.usage(u.id).await.unwrap();
        assert_eq!(usage.reserved_bytes, 1000);
        assert_eq!(usage.free_bytes(), Some(0));
        // A second upload that holds nothing fails and changes nothing.
        assert!(!acc.reserve(u.id, 1, 0).await.unwrap());
        assert_eq!(acc.usage(u.id).await.unwrap().reserved_bytes, 1000);
    }

    #[tokio::test]
    async fn failed_reserve_releases_the_callers_own_reservation() {
        let (_dir, acc) = open_temp().await;
        let u = user_with_quota(&acc, Some(1000), None).await;
        assert!(acc.reserve(u.id, 300, 0).await.unwrap()); // upload A
        assert!(acc.reserve(u.id, 500, 0).await.unwrap()); // upload B
        assert!(!acc.reserve(u.id, 300, 300).await.unwrap()); // A fails: gives back its 300
        assert_eq!(acc.usage(u.id).await.unwrap().reserved_bytes, 500);
        assert!(acc.reserve(u.id, 500, 500).await.unwrap()); // so B can finish
    }

    #[tokio::test]
    async fn reserve_without_quota_always_succeeds() {
        let (_dir, acc) = open_temp().await;
        let u = user_with_quota(&acc, None, None).await;
        assert!(acc.reserve(u.id, u64::MAX, 0).await.unwrap());
        assert!(acc.reserve(u.id, u64::MAX, 0).await.unwrap());
        assert_eq!(acc.usage(u.id).await.unwrap().free_bytes(), None);
    }

    #[tokio::test]
    async fn used_bytes_count_against_the_quota() {
        let (_dir, acc) = open_temp().await;
        let u = user_with_quota(&acc, Some(1000), None).await;
        acc.charge(u.id, 900, 1).await.unwrap();
        assert!(!acc.reserve(u.id, 101, 0).await.unwrap());
        assert!(acc.reserve(u.id, 100, 0).await.unwrap());
        // Lowering the quota below usage refuses every reservation.
        acc.set_quota("alice", Some(10)).await.unwrap();
        assert!(!acc.reserve(u.id, 1, 100).await.unwrap());
        assert_eq!(acc.usage(u.id).await.unwrap().reserved_bytes, 0);
    }

    /// One simulated upload: reserve `total` in `step` chunks, stop at the first refusal,
    /// settle when everything was reserved. Returns whether it finished.
    async fn upload(acc: Accounts, id: i64, total: u64, step: u64) -> bool {
        let mut held = 0;
        while held < total {
            if !acc.reserve(id, step, held).await.unwrap() {
                return false;
            }
            held += step;
            tokio::task::yield_now().await;
        }
        acc.settle(id, held, to_i64(held), 1).await.unwrap();
        true
    }

    async fn race_two_uploads(a: &Accounts, b: &Accounts, id: i64) {
        for round in 0..20 {
            a.set_usage(id, 0, 0).await.unwrap();
            a.reset_reservations().await.unwrap();
            let ta = tokio::spawn(upload(a.clone(), id, 768 * KIB, 64 * KIB));
            let tb = tokio::spawn(upload(b.clone(), id, 768 * KIB, 64 * KIB));
            let (ra, rb) = (ta.await.unwrap(), tb.await.unwrap());
            assert!(
                ra ^ rb,
                "round {round}: exactly one upload must finish ({ra}, {rb})"
            );
            let usage = a.usage(id).await.unwrap();
            assert_eq!(usage.used_bytes, 768 * KIB, "round {round}");
            assert_eq!(usage.used_files, 1, "round {round}");
            assert_eq!(
                usage.reserved_bytes, 0,
                "round {round}: nothing left reserved"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn of_two_racing_uploads_exceeding_the_quota_exactly_one_finishes() {
        let (_dir, acc) = open_temp().await;
        let u = user_with_quota(&acc, Some(MIB), None).await;
        race_two_uploads(&acc, &acc, u.id).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_uploads_through_two_database_handles_exactly_one_finishes() {
        let (dir, acc) = open_temp().await;
        let other = Accounts::open(dir.path()).await.unwrap();
        let u = user_with_quota(&acc, Some(MIB), None).await;
        race_two_uploads(&acc, &other, u.id).await;
    }

    #[tokio::test]
    async fn settle_release_and_charge_clamp_at_zero() {
        let (_dir, acc) = open_temp().await;
        let u = user_with_quota(&acc, None, None).await;
        assert!(acc.reserve(u.id, 100, 0).await.unwrap());
        acc.release(u.id, 250).await.unwrap();
        assert_eq!(acc.usage(u.id).await.unwrap().reserved_bytes, 0);

        assert!(acc.reserve(u.id, 100, 0).await.unwrap());
        acc.settle(u.id, 100, 80, 1).await.unwrap();
        let usage = acc.usage(u.id).await.unwrap();
        assert_eq!(
            (usage.used_bytes, usage.used_files, usage.reserved_bytes),
            (80, 1, 0)
        );

        // An overwrite that shrinks a file charges a negative delta.
        acc.settle(u.id, 0, -30, 0).await.unwrap();
        assert_eq!(acc.usage(u.id).await.unwrap().used_bytes, 50);

        acc.charge(u.id, -1000, -5).await.unwrap();
        let usage = acc.usage(u.id).await.unwrap();
        assert_eq!((usage.used_bytes, usage.used_files), (0, 0));
        acc.settle(u.id, 7, i64::MIN, i64::MIN).await.unwrap();
        acc.charge(u.id, i64::MAX, 2).await.unwrap();
        assert!(acc.usage(u.id).await.unwrap().used_bytes > 0);
    }

    #[tokio::test]
    async fn try_add_file_respects_the_file_quota() {
        let (_dir, acc) = open_temp().await;
        let u = user_with_quota(&acc, None, Some(2)).await;
        assert!(acc.try_add_file(u.id).await.unwrap());
        assert!(acc.try_add_file(u.id).await.unwrap());
        assert!(!acc.try_add_file(u.id).await.unwrap());
        assert_eq!(acc.usage(u.id).await.unwrap().used_files, 2);
        acc.charge(u.id, 0, -1).await.unwrap();
        assert!(acc.try_add_file(u.id).await.unwrap());
        acc.set_quota_files("alice", None).await.unwrap();
        for _ in 0..5 {
            assert!(acc.try_add_file(u.id).await.unwrap());
        }
        assert_eq!(acc.usage(u.id).await.unwrap().used_files, 7);
    }

    #[tokio::test]
    async fn set_usage_and_reset_reservations() {
        let (_dir, acc) = open_temp().await;
        let u = user_with_quota(&acc, Some(MIB), None).await;
        assert!(acc.reserve(u.id, 10, 0).await.unwrap());
        acc.set_usage(u.id, 123, 4).await.unwrap();
        let usage = acc.usage(u.id).await.unwrap();
        assert_eq!(
            (usage.used_bytes, usage.used_files, usage.reserved_bytes),
            (123, 4, 10)
        );
        acc.reset_reservations().await.unwrap();
        assert_eq!(acc.usage(u.id).await.unwrap().reserved_bytes, 0);
    }

    #[tokio::test]
    async fn ledger_calls_for_an_unknown_user_id_fail() {
        let (_dir, acc) = open_temp().await;
        let missing = 4242;
        let is_missing = |r: Result<_, AccountError>| matches!(r, Err(AccountError::NoSuchUserId(id)) if id == missing);
        assert!(is_missing(acc.usage(missing).await.map(|_| ())));
        assert!(is_missing(acc.reserve(missing, 1, 0).await.map(|_| ())));
        assert!(is_missing(acc.release(missing, 1).await));
        assert!(is_missing(acc.settle(missing, 1, 1, 1).await));
        assert!(is_missing(acc.charge(missing, 1, 1).await));
        assert!(is_missing(acc.try_add_file(missing).await.map(|_| ())));
        assert!(is_missing(acc.set_usage(missing, 1, 1).await));
    }
}
