//! Accounts, the quota ledger and the digest cache, kept in the SQLite database `ferry.db`.
//!
//! Everything here goes through single SQL statements (or one short transaction), so the server
//! and the `ferry user` CLI can work on the same database at the same time.

pub mod admin;
mod chatlog;
mod db;
mod digests;
pub mod guard;
mod inline;
mod ledger;
mod password;
pub mod scan;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

pub use admin::{DeleteOutcome, HomeFate};
pub use chatlog::{ChatLine, MAX_LINES_PER_INSERT};
pub use guard::{FailureVerdict, GuardConfig, LoginGuard};
pub use scan::scan_home;

/// Longest accepted user name, in characters.
pub const MAX_NAME_LEN: usize = 32;
/// Longest accepted password, in bytes.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Errors of account administration, the quota ledger and the digest cache.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// An account with this name (compared case-insensitively) already exists.
    #[error("user {0} already exists")]
    UserExists(String),
    /// No account has this name.
    #[error("no such user: {0}")]
    NoSuchUser(String),
    /// No account has this id (it was probably deleted while in use).
    #[error("no user with id {0}")]
    NoSuchUserId(i64),
    /// The name is not a valid account name.
    #[error(
        "invalid user name {0:?}: use 1 to 32 letters, digits, '.', '_' or '-', \
         not starting with '.' or '-'"
    )]
    InvalidName(String),
    /// The password cannot be used.
    #[error("unusable password: {0}")]
    WeakPassword(&'static str),
    /// A custom home directory path cannot be stored.
    #[error("invalid home directory {0:?}: the path must be valid UTF-8")]
    InvalidHome(PathBuf),
    /// Hashing a password failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// Creating the data directory, or creating, scanning or removing a home, failed.
    #[error("{path}: {source}")]
    PathIo {
        /// The file or directory concerned.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Another I/O error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a login was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown user or wrong password (deliberately not told apart).
    #[error("bad user name or password")]
    BadCredentials,
    /// The password is right but the account is disabled.
    #[error("account disabled")]
    Disabled,
    /// The database or the hasher failed; the client should try again later.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a user may do in their home (and in chat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permissions {
    /// Download files, list directories.
    pub read: bool,
    /// Upload (create, overwrite, append) files.
    pub write: bool,
    /// Delete files and empty directories.
    pub delete: bool,
    /// Create directories.
    pub mkdir: bool,
    /// Rename and move files and directories.
    pub rename: bool,
    /// Use the chat service.
    pub chat: bool,
}

impl Default for Permissions {
    /// Everything allowed.
    fn default() -> Self {
        Self {
            read: true,
            write: true,
            delete: true,
            mkdir: true,
            rename: true,
            chat: true,
        }
    }
}

impl Permissions {
    const READ: i64 = 1;
    const WRITE: i64 = 2;
    const DELETE: i64 = 4;
    const MKDIR: i64 = 8;
    const RENAME: i64 = 16;
    const CHAT: i64 = 32;

    /// Read and chat only: no change to the home is possible.
    pub fn read_only() -> Self {
        Self {
            read: true,
            write: false,
            delete: false,
            mkdir: false,
            rename: false,
            chat: true,
        }
    }

    /// The bit set stored in the database.
    fn to_bits(self) -> i64 {
        [
            (self.read, Self::READ),
            (self.write, Self::WRITE),
            (self.delete, Self::DELETE),
            (self.mkdir, Self::MKDIR),
            (self.rename, Self::RENAME),
            (self.chat, Self::CHAT),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |bits, (_, bit)| bits | bit)
    }

    /// The inverse of [`Permissions::to_bits`]; unknown bits are ignored.
    fn from_bits(bits: i64) -> Self {
        Self {
            read: bits & Self::READ != 0,
            write: bits & Self::WRITE != 0,
            delete: bits & Self::DELETE != 0,
            mkdir: bits & Self::MKDIR != 0,
            rename: bits & Self::RENAME != 0,
            chat: bits & Self::CHAT != 0,
        }
    }
}

/// An account as stored in the database (without its password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Database id, stable for the life of the account.
    pub id: i64,
    /// Login name; also the chat nickname.
    pub name: String,
    /// Custom home directory; `None` means `<data_dir>/homes/<name>` (see [`Accounts::home_of`]).
    pub home: Option<PathBuf>,
    /// Byte quota; `None` is unlimited.
    pub quota_bytes: Option<u64>,
    /// File-count quota; `None` is unlimited.
    pub quota_files: Option<u64>,
    /// What the user may do.
    pub perms: Permissions,
    /// A disabled account cannot log in.
    pub enabled: bool,
    /// Download rate limit in bytes per second; `None` is unlimited.
    pub max_download_bps: Option<u64>,
    /// Upload rate limit in bytes per second; `None` is unlimited.
    pub max_upload_bps: Option<u64>,
    /// Whether this user's uploads are announced in the chat (default true).
    pub announce_files: bool,
}

/// What [`Accounts::add_user`] needs to create an account.
#[derive(Clone)]
pub struct NewUser {
    /// Login name, see [`validate_name`].
    pub name: String,
    /// Password in clear; hashed with argon2id before it is stored.
    pub password: String,
    /// Custom home directory (made absolute when stored); `None` for the default home.
    pub home: Option<PathBuf>,
    /// Byte quota; `None` is unlimited.
    pub quota_bytes: Option<u64>,
    /// File-count quota; `None` is unlimited.
    pub quota_files: Option<u64>,
    /// What the user may do.
    pub perms: Permissions,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("home", &self.home)
            .field("quota_bytes", &self.quota_bytes)
            .field("quota_files", &self.quota_files)
            .field("perms", &self.perms)
            .finish()
    }
}

/// A user's quota ledger: what is stored, what running uploads hold, and the limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes stored in the home.
    pub used_bytes: u64,
    /// Files stored in the home.
    pub used_files: u64,
    /// Bytes reserved by uploads in progress.
    pub reserved_bytes: u64,
    /// Byte quota; `None` is unlimited.
    pub quota_bytes: Option<u64>,
    /// File-count quota; `None` is unlimited.
    pub quota_files: Option<u64>,
}

impl Usage {
    /// Bytes that can still be reserved (`quota - used - reserved`, at least 0); `None` when
    /// there is no byte quota.
    pub fn free_bytes(&self) -> Option<u64> {
        self.quota_bytes.map(|quota| {
            quota
                .saturating_sub(self.used_bytes)
                .saturating_sub(self.reserved_bytes)
        })
    }
}

/// Handle to the accounts database; cheap to clone, shared by all sessions.
#[derive(Clone)]
pub struct Accounts {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    data_dir: PathBuf,
    hasher: password::Hasher,
    /// Tells this database's thread-local connections (inline.rs) from others'.
    owner: inline::Owner,
    /// Commits made through those connections, for their WAL checkpoints.
    inline_commits: std::sync::atomic::AtomicU64,
    /// Set when those commits are due a checkpoint ([`Accounts::take_checkpoint_due`]).
    checkpoint_due: std::sync::atomic::AtomicBool,
    /// Uploads' digest writes waiting for their batch.
    digests: digests::PendingDigests,
}

impl fmt::Debug for Accounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accounts")
            .field("data_dir", &self.inner.data_dir)
            .finish_non_exhaustive()
    }
}

/// Checks an account name: 1 to 32 characters from `[A-Za-z0-9._-]`, not starting with `.`
/// or `-` (so it is a safe directory name, IRC nickname and command-line argument).
pub fn validate_name(name: &str) -> Result<(), AccountError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(AccountError::InvalidName(name.to_owned()))
    }
}

/// Checks a password: not empty, at most [`MAX_PASSWORD_LEN`] bytes, and no CR, LF or NUL
/// (which no FTP or IRC client could send).
pub fn validate_password(password: &str) -> Result<(), AccountError> {
    if password.is_empty() {
        Err(AccountError::WeakPassword("the password must not be empty"))
    } else if password.len() > MAX_PASSWORD_LEN {
        Err(AccountError::WeakPassword(
            "the password must be at most 1024 bytes long",
        ))
    } else if password.contains(['\r', '\n', '\0']) {
        Err(AccountError::WeakPassword(
            "the password must not contain CR, LF or NUL",
        ))
    } else {
        Ok(())
    }
}

/// Column list matching [`user_from_row`].
const USER_COLUMNS: &str = "users.id AS id, users.name AS name, users.home AS home, \
     users.quota_bytes AS quota_bytes, users.quota_files AS quota_files, users.perms AS perms, \
     users.enabled AS enabled, users.max_download_bps AS max_download_bps, \
     users.max_upload_bps AS max_upload_bps, users.announce_files AS announce_files";

/// An account and its password hash, by name (`?1`); every login runs it.
static LOGIN_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {USER_COLUMNS}, users.phc AS phc FROM users WHERE name = ?1")
});

/// [`USER_COLUMNS`] for a `RETURNING` clause (which cannot qualify columns).
const RETURNING_USER_COLUMNS: &str = "id, name, home, quota_bytes, quota_files, perms, enabled, \
     max_download_bps, max_upload_bps, announce_files";

/// Column list matching [`usage_from_row`] (needs `usage` joined to `users`).
const USAGE_COLUMNS: &str = "usage.used_bytes AS used_bytes, usage.used_files AS used_files, \
     usage.reserved_bytes AS reserved_bytes, users.quota_bytes AS quota_bytes, \
     users.quota_files AS quota_files";

fn user_from_row(row: &SqliteRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        home: row.try_get::<Option<String>, _>("home")?.map(PathBuf::from),
        quota_bytes: opt_u64(row.try_get("quota_bytes")?),
        quota_files: opt_u64(row.try_get("quota_files")?),
        perms: Permissions::from_bits(row.try_get("perms")?),
        enabled: row.try_get("enabled")?,
        max_download_bps: opt_u64(row.try_get("max_download_bps")?),
        max_upload_bps: opt_u64(row.try_get("max_upload_bps")?),
        announce_files: row.try_get("announce_files")?,
    })
}

fn usage_from_row(row: &SqliteRow) -> Result<Usage, sqlx::Error> {
    Ok(Usage {
        used_bytes: to_u64(row.try_get("used_bytes")?),
        used_files: to_u64(row.try_get("used_files")?),
        reserved_bytes: to_u64(row.try_get("reserved_bytes")?),
        quota_bytes: opt_u64(row.try_get("quota_bytes")?),
        quota_files: opt_u64(row.try_get("quota_files")?),
    })
}

/// u64 to the database's i64, saturating.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The database's i64 to u64; negative values (never written by us) read as 0.
fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn opt_i64(v: Option<u64>) -> Option<i64> {
    v.map(to_i64)
}

fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.map(to_u64)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| to_i64(d.as_secs()))
}

impl Accounts {
    /// Opens (creating if needed) `data_dir` and `data_dir/ferry.db`, and creates the schema.
    /// Safe to call from several processes on the same directory.
    pub async fn open(data_dir: &Path) -> Result<Accounts, AccountError> {
        let data_dir = std::path::absolute(data_dir).map_err(|source| AccountError::PathIo {
            path: data_dir.to_owned(),
            source,
        })?;
        let pool = db::open(&data_dir).await?;
        Ok(Accounts {
            inner: Arc::new(Inner {
                pool,
                data_dir,
                hasher: password::Hasher::new(),
                owner: inline::Owner::next(),
                inline_commits: std::sync::atomic::AtomicU64::new(0),
                checkpoint_due: std::sync::atomic::AtomicBool::new(false),
                digests: digests::PendingDigests::default(),
            }),
        })
    }

    /// Writes the queued upload digests, then closes the database connections (waits for
    /// queries in flight). Other clones become unusable.
    pub async fn close(&self) {
        self.flush_digests().await;
        self.inner.pool.close().await;
    }

    /// The data directory (made absolute at [`Accounts::open`]).
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// The user's home: the custom one, or `<data_dir>/homes/<name>`.
    pub fn home_of(&self, user: &User) -> PathBuf {
        match &user.home {
            Some(home) => home.clone(),
            None => self.default_home(&user.name),
        }
    }

    /// `<data_dir>/homes/<name>`.
    fn default_home(&self, name: &str) -> PathBuf {
        self.inner.data_dir.join("homes").join(name)
    }

    fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// Number of accounts.
    pub async fn user_count(&self) -> Result<u64, AccountError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(self.pool())
            .await?;
        Ok(to_u64(n))
    }

    /// Creates an account (enabled, no rate limits, announcing uploads) with a zero ledger.
    /// Does not create the home directory: [`admin::add`] does.
    pub async fn add_user(&self, new: NewUser) -> Result<User, AccountError> {
        validate_name(&new.name)?;
        validate_password(&new.password)?;
        let home = match &new.home {
            Some(home) => {
                let abs = std::path::absolute(home).map_err(|source| AccountError::PathIo {
                    path: home.clone(),
                    source,
                })?;
                match abs.to_str() {
                    Some(s) => Some(s.to_owned()),
                    None => return Err(AccountError::InvalidHome(abs)),
                }
            }
            None => None,
        };
        // Cheap early check so a duplicate does not cost a hash; the UNIQUE
        // constraints decide for real.
        if self.name_taken(&new.name).await? {
            return Err(AccountError::UserExists(new.name));
        }
        let phc = self.inner.hasher.hash(&new.password).await?;

        let mut tx = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (name, phc, home, quota_bytes, quota_files, perms, enabled, \
             announce_files, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, 1, ?7) RETURNING id",
        )
        .bind(&new.name)
        .bind(&phc)
        .bind(&home)
        .bind(opt_i64(new.quota_bytes))
        .bind(opt_i64(new.quota_files))
        .bind(new.perms.to_bits())
        .bind(now_unix())
        .fetch_one(&mut *tx)
        .await;
        let id: i64 = match inserted {
            Ok(row) => row.try_get("id")?,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(AccountError::UserExists(new.name));
            }
            Err(e) => return Err(e.into()),
        };
        sqlx::query("INSERT INTO usage (user_id) VALUES (?1)")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(user = %new.name, "account created");
        Ok(User {
            id,
            name: new.name,
            home: home.map(PathBuf::from),
            quota_bytes: new.quota_bytes,
            quota_files: new.quota_files,
            perms: new.perms,
            enabled: true,
            max_download_bps: None,
            max_upload_bps: None,
            announce_files: true,
        })
    }

    async fn name_taken(&self, name: &str) -> Result<bool, AccountError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE name = ?1 COLLATE NOCASE")
                .bind(name)
                .fetch_one(self.pool())
                .await?;
        Ok(n > 0)
    }

    /// The account with exactly this name (names are case-sensitive for lookup).
    pub async fn get_user(&self, name: &str) -> Result<Option<User>, AccountError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"))
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// The account with this id.
    pub async fn get_user_by_id(&self, id: i64) -> Result<Option<User>, AccountError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// All accounts with their ledgers, ordered by name.
    pub async fn list_users(&self) -> Result<Vec<(User, Usage)>, AccountError> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, {USAGE_COLUMNS} FROM users \
             JOIN usage ON usage.user_id = users.id ORDER BY users.name"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok((user_from_row(row)?, usage_from_row(row)?)))
            .collect()
    }

    /// Changes a password. Takes effect at once, in this process and in others (cached
    /// credentials are tied to the old hash).
    pub async fn set_password(&self, name: &str, password: &str) -> Result<(), AccountError> {
        validate_password(password)?;
        if self.get_user(name).await?.is_none() {
            return Err(AccountError::NoSuchUser(name.to_owned()));
        }
        let phc = self.inner.hasher.hash(password).await?;
        self.update_user(name, "phc = ?2", phc).await?;
        self.inner.hasher.forget(name);
        tracing::info!(user = %name, "password changed");
        Ok(())
    }

    /// Deletes an account with its ledger and digests (not its files: see [`admin::delete`]).
    pub async fn delete_user(&self, name: &str) -> Result<User, AccountError> {
        let row = sqlx::query(&format!(
            "DELETE FROM users WHERE name = ?1 RETURNING {RETURNING_USER_COLUMNS}"
        ))
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        self.inner.hasher.forget(name);
        match row {
            Some(row) => {
                tracing::info!(user = %name, "account deleted");
                Ok(user_from_row(&row)?)
            }
            None => Err(AccountError::NoSuchUser(name.to_owned())),
        }
    }

    /// Sets (or with `None` removes) the byte quota.
    pub async fn set_quota(&self, name: &str, bytes: Option<u64>) -> Result<(), AccountError> {
        self.update_user(name, "quota_bytes = ?2", opt_i64(bytes))
            .await
    }

    /// Sets (or with `None` removes) the file-count quota.
    pub async fn set_quota_files(
        &self,
        name: &str,
        files: Option<u64>,
    ) -> Result<(), AccountError> {
        self.update_user(name, "quota_files = ?2", opt_i64(files))
            .await
    }

    /// Enables or disables an account; a disabled account cannot log in.
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), AccountError> {
        self.update_user(name, "enabled = ?2", enabled).await
    }

    /// Replaces the permissions.
    pub async fn set_permissions(
        &self,
        name: &str,
        perms: Permissions,
    ) -> Result<(), AccountError> {
        self.update_user(name, "perms = ?2", perms.to_bits()).await
    }

    /// Sets the per-user rate limits in bytes per second (`None` is unlimited).
    pub async fn set_rate_limits(
        &self,
        name: &str,
        download_bps: Option<u64>,
        upload_bps: Option<u64>,
    ) -> Result<(), AccountError> {
        let done = sqlx::query(
            "UPDATE users SET max_download_bps = ?2, max_upload_bps = ?3 WHERE name = ?1",
        )
        .bind(name)
        .bind(opt_i64(download_bps))
        .bind(opt_i64(upload_bps))
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(AccountError::NoSuchUser(name.to_owned()));
        }
        Ok(())
    }

    /// Whether the user's uploads are announced in the chat.
    pub async fn set_announce_files(&self, name: &str, announce: bool) -> Result<(), AccountError> {
        self.update_user(name, "announce_files = ?2", announce)
            .await
    }

    /// `UPDATE users SET <assignment> WHERE name = ?1`, with the value bound as `?2`.
    async fn update_user<T>(
        &self,
        name: &str,
        assignment: &'static str,
        value: T,
    ) -> Result<(), AccountError>
    where
        T: 'static + Send + for<'q> sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
    {
        let sql = format!("UPDATE users SET {assignment} WHERE name = ?1");
        let done = sqlx::query(&sql)
            .bind(name)
            .bind(value)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(AccountError::NoSuchUser(name.to_owned()));
        }
        Ok(())
    }

    /// Checks a login. The account row is always read, so a disabled account or a changed
    /// password takes effect at once; argon2 is skipped when the same password was verified
    /// against the same hash in the last minute. An unknown user costs a full verification too,
    /// so timing does not tell which names exist.
    pub async fn authenticate(&self, name: &str, password: &str) -> Result<User, AuthError> {
        let internal = |e: &dyn fmt::Display| AuthError::Internal(e.to_string());
        // On this thread's own connection when it can (no hop to the pool's worker thread).
        let inline = self.inline(|conn| {
            inline::run(conn, &LOGIN_SQL, &[&name], |row| {
                Ok((inline::user_from(row)?, row.get::<_, String>("phc")?))
            })
        });
        let found = match inline {
            Some(found) => found,
            None => {
                let row = sqlx::query(&LOGIN_SQL)
                    .bind(name)
                    .fetch_optional(self.pool())
                    .await
                    .map_err(|e| internal(&e))?;
                match row {
                    Some(row) => Some((
                        user_from_row(&row).map_err(|e| internal(&e))?,
                        row.try_get("phc").map_err(|e| internal(&e))?,
                    )),
                    None => None,
                }
            }
        };
        let hasher = &self.inner.hasher;
        let Some((user, phc)) = found else {
            hasher.verify_dummy(password).await;
            return Err(AuthError::BadCredentials);
        };

        let mut cached = hasher.cached(name, password, &phc);
        let _flight = if cached {
            None
        } else {
            // Parallel first logins of one user: one verifies, the others then find the cache.
            let flight = hasher.single_flight(name).await;
            cached = hasher.cached(name, password, &phc);
            Some(flight)
        };
        if !cached {
            let ok = hasher
                .verify(password, &phc)
                .await
                .map_err(|e| internal(&e))?;
            if !ok {
                return Err(AuthError::BadCredentials);
            }
        }
        if !user.enabled {
            return Err(AuthError::Disabled);
        }
        if !cached {
            hasher.remember(name, password, &phc);
        }
        Ok(user)
    }

    /// How many argon2 verifications this handle has run (including the ones spent on unknown
    /// users); cached logins do not count.
    pub fn hash_verifications(&self) -> u64 {
        self.inner.hasher.verifications()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) async fn open_temp() -> (tempfile::TempDir, Accounts) {
        let dir = tempfile::tempdir().expect("tempdir");
        let accounts = Accounts::open(dir.path()).await.expect("open");
        (dir, accounts)
    }

    pub(super) fn new_user(name: &str, password: &str) -> NewUser {
        NewUser {
            name: name.to_owned(),
            password: password.to_owned(),
            home: None,
            quota_bytes: None,
            quota_files: None,
            perms: Permissions::default(),
        }
    }

    #[tokio::test]
    async fn add_get_list_set_password_delete_round_trip() {
        let (_dir, acc) = open_temp().await;
        assert_eq!(acc.user_count().await.unwrap(), 0);
        let mut nu = new_user("alice", "pw-one");
        nu.quota_bytes = Some(1000);
        nu.quota_files = Some(10);
        nu.perms = Permissions::read_only();
        let alice = acc.add_user(nu).await.unwrap();
        acc.add_user(new_user("bob", "pw-bob")).await.unwrap();
        assert_eq!(acc.user_count().await.unwrap(), 2);

        let got = acc.get_user("alice").await.unwrap().unwrap();
        assert_eq!(got, alice);
        assert_eq!(got.perms, Permissions::read_only());
        assert_eq!(got.quota_bytes, Some(1000));
        assert!(got.enabled && got.announce_files);
        assert_eq!(acc.home_of(&got), acc.data_dir().join("homes/alice"));
        assert_eq!(acc.get_user("nobody").await.unwrap(), None);
        assert_eq!(acc.get_user_by_id(alice.id).await.unwrap(), Some(alice));

        let list = acc.list_users().await.unwrap();
        let names: Vec<_> = list.iter().map(|(u, _)| u.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert_eq!(list[0].1.quota_bytes, Some(1000));
        assert_eq!(list[0].1.free_bytes(), Some(1000));
        assert_eq!(list[1].1.free_bytes(), None);

        acc.set_password("alice", "pw-two").await.unwrap();
        assert_eq!(
            acc.authenticate("alice", "pw-one").await,
            Err(AuthError::BadCredentials)
        );
        assert_eq!(
            acc.authenticate("alice", "pw-two").await.unwrap().name,
            "alice"
        );

        acc.set_quota("alice", None).await.unwrap();
        acc.set_quota_files("alice", Some(3)).await.unwrap();
        acc.set_permissions("alice", Permissions::default())
            .await
            .unwrap();
        acc.set_rate_limits("alice", Some(100), None).await.unwrap();
        acc.set_announce_files("alice", false).await.unwrap();
        let got = acc.get_user("alice").await.unwrap().unwrap();
        assert_eq!(got.quota_bytes, None);
        assert_eq!(got.quota_files, Some(3));
        assert_eq!(got.perms, Permissions::default());
        assert_eq!(
            (got.max_download_bps, got.max_upload_bps),
            (Some(100), None)
        );
        assert!(!got.announce_files);

        let deleted = acc.delete_user("alice").await.unwrap();
        assert_eq!(deleted.name, "alice");
        assert_eq!(acc.get_user("alice").await.unwrap(), None);
        assert_eq!(acc.user_count().await.unwrap(), 1);
        assert!(matches!(
            acc.delete_user("alice").await,
            Err(AccountError::NoSuchUser(n)) if n == "alice"
        ));
        assert!(matches!(
            acc.set_quota("alice", Some(1)).await,
            Err(AccountError::NoSuchUser(_))
        ));
        assert!(matches!(
            acc.set_password("alice", "x").await,
            Err(AccountError::NoSuchUser(_))
        ));
    }

    #[tokio::test]
    async fn duplicate_user_is_refused_even_with_other_case() {
        let (_dir, acc) = open_temp().await;
        acc.add_user(new_user("alice", "pw")).await.unwrap();
        assert!(matches!(
            acc.add_user(new_user("alice", "pw2")).await,
            Err(AccountError::UserExists(n)) if n == "alice"
        ));
        assert!(matches!(
            acc.add_user(new_user("ALICE", "pw2")).await,
            Err(AccountError::UserExists(_))
        ));
        assert_eq!(acc.user_count().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn invalid_names_and_passwords_are_rejected() {
        let (_dir, acc) = open_temp().await;
        let long = "a".repeat(33);
        for bad in [
            "", ".hidden", "-rf", "a/b", "..", "a b", "é", "a\0", "x:y", &long,
        ] {
            assert!(
                matches!(
                    acc.add_user(new_user(bad, "pw")).await,
                    Err(AccountError::InvalidName(_))
                ),
                "{bad:?} accepted"
            );
        }
        for good in ["a", "A.b_c-d", "9lives", &"z".repeat(32)] {
            validate_name(good).unwrap();
        }
        for bad in ["", "a\nb", "a\rb", "a\0b"] {
            assert!(matches!(
                acc.add_user(new_user("carol", bad)).await,
                Err(AccountError::WeakPassword(_))
            ));
        }
        assert_eq!(acc.user_count().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn custom_home_is_stored_absolute() {
        let (_dir, acc) = open_temp().await;
        let mut nu = new_user("dave", "pw");
        nu.home = Some(PathBuf::from("relative/home"));
        let dave = acc.add_user(nu).await.unwrap();
        let home = dave.home.clone().unwrap();
        assert!(home.is_absolute());
        assert!(home.ends_with("relative/home"));
        assert_eq!(acc.home_of(&dave), home);
        assert_eq!(
            acc.get_user("dave").await.unwrap().unwrap().home,
            Some(home)
        );
    }

    #[tokio::test]
    async fn authenticate_right_wrong_unknown_and_disabled() {
        let (_dir, acc) = open_temp().await;
        acc.add_user(new_user("alice", "right")).await.unwrap();
        assert_eq!(
            acc.authenticate("alice", "right").await.unwrap().name,
            "alice"
        );
        assert_eq!(
            acc.authenticate("alice", "wrong").await,
            Err(AuthError::BadCredentials)
        );
        let before = acc.hash_verifications();
        assert_eq!(
            acc.authenticate("nobody", "right").await,
            Err(AuthError::BadCredentials)
        );
        assert_eq!(
            acc.hash_verifications(),
            before + 1,
            "an unknown user costs a verification too"
        );
        // Lookup is case-sensitive.
        assert_eq!(
            acc.authenticate("ALICE", "right").await,
            Err(AuthError::BadCredentials)
        );

        acc.set_enabled("alice", false).await.unwrap();
        assert_eq!(
            acc.authenticate("alice", "right").await,
            Err(AuthError::Disabled)
        );
        assert_eq!(
            acc.authenticate("alice", "wrong").await,
            Err(AuthError::BadCredentials),
            "a wrong password does not reveal that the account is disabled"
        );
        acc.set_enabled("alice", true).await.unwrap();
        assert!(acc.authenticate("alice", "right").await.is_ok());
    }

    #[tokio::test]
    async fn second_login_uses_the_credential_cache() {
        let (_dir, acc) = open_temp().await;
        acc.add_user(new_user("alice", "right")).await.unwrap();
        acc.authenticate("alice", "right").await.unwrap();
        let after_first = acc.hash_verifications();
        assert_eq!(after_first, 1);
        for _ in 0..5 {
            acc.authenticate("alice", "right").await.unwrap();
        }
        assert_eq!(acc.hash_verifications(), after_first);
        // A wrong password is never answered from the cache.
        assert_eq!(
            acc.authenticate("alice", "wrong").await,
            Err(AuthError::BadCredentials)
        );
        assert_eq!(acc.hash_verifications(), after_first + 1);
        // Clones share the cache.
        acc.clone().authenticate("alice", "right").await.unwrap();
        assert_eq!(acc.hash_verifications(), after_first + 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_first_logins_of_one_user_verify_the_password_once() {
        let (_dir, acc) = open_temp().await;
        acc.add_user(new_user("alice", "right")).await.unwrap();
        let logins: Vec<_> = (0..16)
            .map(|_| {
                let acc = acc.clone();
                tokio::spawn(async move { acc.authenticate("alice", "right").await })
            })
            .collect();
        for login in logins {
            login.await.unwrap().unwrap();
        }
        assert_eq!(acc.hash_verifications(), 1);
        assert!(
            acc.inner.hasher.inflight.lock().unwrap().is_empty(),
            "in-flight map leaks entries"
        );
    }

    #[tokio::test]
    async fn cached_login_still_sees_a_disabled_account() {
        let (_dir, acc) = open_temp().await;
        acc.add_user(new_user("alice", "right")).await.unwrap();
        acc.authenticate("alice", "right").await.unwrap();
        acc.set_enabled("alice", false).await.unwrap();
        assert_eq!(
            acc.authenticate("alice", "right").await,
            Err(AuthError::Disabled)
        );
    }

    #[tokio::test]
    async fn password_change_invalidates_the_cache() {
        let (_dir, acc) = open_temp().await;
        acc.add_user(new_user("alice", "old")).await.unwrap();
        acc.authenticate("alice", "old").await.unwrap();
        acc.set_password("alice", "new").await.unwrap();
        assert_eq!(
            acc.authenticate("alice", "old").await,
            Err(AuthError::BadCredentials)
        );
        let n = acc.hash_verifications();
        acc.authenticate("alice", "new").await.unwrap();
        assert_eq!(acc.hash_verifications(), n + 1);
    }

    #[tokio::test]
    async fn two_handles_on_one_database_see_each_others_changes() {
        let dir = tempfile::tempdir().unwrap();
        let server = Accounts::open(dir.path()).await.unwrap();
        let cli = Accounts::open(dir.path()).await.unwrap();

        cli.add_user(new_user("alice", "old")).await.unwrap();
        server.authenticate("alice", "old").await.unwrap();
        // The CLI changes the password: the server's cache must not accept the old one.
        cli.set_password("alice", "new").await.unwrap();
        assert_eq!(
            server.authenticate("alice", "old").await,
            Err(AuthError::BadCredentials)
        );
        server.authenticate("alice", "new").await.unwrap();

        let id = server.get_user("alice").await.unwrap().unwrap().id;
        server.charge(id, 500, 2).await.unwrap();
        assert_eq!(cli.usage(id).await.unwrap().used_bytes, 500);
        cli.set_quota("alice", Some(600)).await.unwrap();
        assert!(!server.reserve(id, 101, 0).await.unwrap());
        assert!(server.reserve(id, 100, 0).await.unwrap());

        cli.delete_user("alice").await.unwrap();
        assert_eq!(
            server.authenticate("alice", "new").await,
            Err(AuthError::BadCredentials)
        );
        assert!(matches!(
            server.usage(id).await,
            Err(AccountError::NoSuchUserId(_))
        ));
        server.close().await;
        cli.close().await;
    }

    #[tokio::test]
    async fn reopening_keeps_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let acc = Accounts::open(&dir.path().join("nested/data"))
            .await
            .unwrap();
        acc.add_user(new_user("alice", "pw")).await.unwrap();
        acc.close().await;
        let acc = Accounts::open(&dir.path().join("nested/data"))
            .await
            .unwrap();
        assert_eq!(acc.user_count().await.unwrap(), 1);
        assert!(dir.path().join("nested/data/ferry.db").is_file());
    }

    #[test]
    fn debug_output_hides_the_password() {
        let shown = format!("{:?}", new_user("alice", "hunter2-secret"));
        assert!(!shown.contains("hunter2-secret"), "{shown}");
        assert!(shown.contains("alice"));
    }

    #[test]
    fn permission_bits_round_trip() {
        for perms in [Permissions::default(), Permissions::read_only()] {
            assert_eq!(Permissions::from_bits(perms.to_bits()), perms);
        }
        let only_mkdir = Permissions {
            read: false,
            write: false,
            delete: false,
            mkdir: true,
            rename: false,
            chat: false,
        };
        assert_eq!(Permissions::from_bits(only_mkdir.to_bits()), only_mkdir);
        assert_eq!(Permissions::default().to_bits(), 63);
    }

    #[test]
    fn free_bytes_saturates() {
        let u = Usage {
            used_bytes: 80,
            reserved_bytes: 30,
            quota_bytes: Some(100),
            ..Usage::default()
        };
        assert_eq!(u.free_bytes(), Some(0));
        let u = Usage {
            used_bytes: 10,
            reserved_bytes: 20,
            quota_bytes: Some(100),
            ..Usage::default()
        };
        assert_eq!(u.free_bytes(), Some(70));
    }
}
