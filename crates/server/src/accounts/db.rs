//! Opens `ferry.db` (WAL, busy timeout, foreign keys) and creates the schema if it is missing.
//!
//! The schema is created with `IF NOT EXISTS` so the server and the CLI can both open a fresh
//! data directory at the same moment.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::AccountError;

/// Name of the database file inside the data directory.
pub(super) const DB_FILE: &str = "ferry.db";

/// Connections per process: one. SQLite has one writer anyway and every statement here is short;
/// with several connections each one's page cache was invalidated by the others' writes, and a
/// small upload re-read about 24 pages (measured with strace).
const POOL_SIZE: u32 = 1;

/// How long a statement waits for another connection's (or process's) write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema version written to `PRAGMA user_version`, for future migrations.
const SCHEMA_VERSION: i64 = 1;

/// The schema, one statement per entry. Names are unique without regard to case (they are also
/// IRC nicknames and directory names) while lookups are exact.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS users (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        name             TEXT    NOT NULL UNIQUE,
        phc              TEXT    NOT NULL,
        home             TEXT,
        quota_bytes      INTEGER,
        quota_files      INTEGER,
        perms            INTEGER NOT NULL,
        enabled          BOOLEAN NOT NULL DEFAULT 1,
        max_download_bps INTEGER,
        max_upload_bps   INTEGER,
        announce_files   BOOLEAN NOT NULL DEFAULT 1,
        created_at       INTEGER NOT NULL
    )",
    "CREATE UNIQUE INDEX IF NOT EXISTS users_name_nocase ON users (name COLLATE NOCASE)",
    // reserve_ok: outcome of the last reserve(), written and returned by the same UPDATE so
    // the check-and-release is one atomic statement (see ledger.rs).
    "CREATE TABLE IF NOT EXISTS usage (
        user_id        INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
        used_bytes     INTEGER NOT NULL DEFAULT 0,
        used_files     INTEGER NOT NULL DEFAULT 0,
        reserved_bytes INTEGER NOT NULL DEFAULT 0,
        reserve_ok     BOOLEAN NOT NULL DEFAULT 0
    )",
    "CREATE TABLE IF NOT EXISTS digests (
        user_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        path     TEXT    NOT NULL,
        size     INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        algo     TEXT    NOT NULL,
        hex      TEXT    NOT NULL,
        PRIMARY KEY (user_id, path, algo)
    )",
    "CREATE TABLE IF NOT EXISTS chat_log (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,
        at     INTEGER NOT NULL,
        room   TEXT    NOT NULL,
        sender TEXT    NOT NULL,
        text   TEXT    NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS chat_log_room_id ON chat_log (room, id)",
];

/// Creates the directory and the database if needed, and returns a pool with the schema ready.
pub(super) async fn open(data_dir: &Path) -> Result<SqlitePool, AccountError> {
    tokio::fs::create_dir_all(data_dir)
        .await
        .map_err(|source| AccountError::PathIo {
            path: data_dir.to_owned(),
            source,
        })?;
    let options = SqliteConnectOptions::new()
        .filename(data_dir.join(DB_FILE))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(POOL_SIZE)
        // A local file needs no health check: the default pings each connection's worker
        // thread before every statement, doubling the round trips.
        .test_before_acquire(false)
        .connect_with(options)
        .await?;
    for statement in SCHEMA {
        sqlx::query(statement).execute(&pool).await?;
    }
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&pool)
        .await?;
    if version < SCHEMA_VERSION {
        sqlx::query(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .execute(&pool)
            .await?;
    }
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn schema_creation_is_idempotent_and_enables_wal_and_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path()).await.unwrap();
        let second = open(dir.path()).await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&second)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&second)
            .await
            .unwrap();
        assert_eq!(fk, 1);
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .fetch_all(&first)
                .await
                .unwrap();
        for t in ["chat_log", "digests", "usage", "users"] {
            assert!(tables.iter().any(|n| n == t), "{t} missing from {tables:?}");
        }
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&first)
            .await
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }
}
