//! What `ferry user …` does: account changes that also touch the home directory, and the
//! rescan that reconciles the quota ledger with the disk.
//!
//! These work while the server runs: both go through the same database.

use std::path::{Path, PathBuf};

use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::OsRng;

use super::scan::scan_home;
use super::{AccountError, Accounts, NewUser, Usage, User};

/// Length of [`generate_password`]'s passwords (about 119 bits).
pub const GENERATED_PASSWORD_LEN: usize = 20;

/// What [`delete`] did with the home directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeFate {
    /// The default home was removed with its content.
    Removed,
    /// Kept because the caller asked to keep the files.
    KeptOnRequest,
    /// Kept because it is a custom home, which is never deleted.
    KeptCustomHome,
    /// There was no home directory to remove.
    Missing,
}

/// Result of [`delete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteOutcome {
    /// The account as it was.
    pub user: User,
    /// Its home directory.
    pub home: PathBuf,
    /// What happened to the home directory.
    pub home_fate: HomeFate,
}

/// Creates an account and its home directory (mode 0700 where it is created). If the home
/// cannot be created the account is removed again.
pub async fn add(accounts: &Accounts, new: NewUser) -> Result<User, AccountError> {
    let user = accounts.add_user(new).await?;
    let home = accounts.home_of(&user);
    if let Err(source) = create_home(&home).await {
        // Best effort: the home error is the one worth reporting.
        if let Err(e) = accounts.delete_user(&user.name).await {
            tracing::warn!(user = %user.name, error = %e, "could not undo account creation");
        }
        return Err(AccountError::PathIo { path: home, source });
    }
    Ok(user)
}

async fn create_home(home: &Path) -> std::io::Result<()> {
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(home).await
}

/// Deletes an account. Its home is removed only when `keep_files` is false and it is the
/// default home (`<data_dir>/homes/<name>`); a custom home is never deleted.
pub async fn delete(
    accounts: &Accounts,
    name: &str,
    keep_files: bool,
) -> Result<DeleteOutcome, AccountError> {
    // The account goes first, so nobody can log in to a half-deleted home.
    let user = accounts.delete_user(name).await?;
    let home = accounts.home_of(&user);
    let home_fate = if user.home.is_some() {
        HomeFate::KeptCustomHome
    } else if keep_files {
        HomeFate::KeptOnRequest
    } else {
        // remove_dir_all does not follow symlinks (a symlinked home is only unlinked).
        match tokio::fs::remove_dir_all(&home).await {
            Ok(()) => HomeFate::Removed,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HomeFate::Missing,
            Err(source) => return Err(AccountError::PathIo { path: home, source }),
        }
    };
    Ok(DeleteOutcome {
        user,
        home,
        home_fate,
    })
}

/// Recounts the bytes and files in the home of `name` (or of every user) and writes them to
/// the ledger; reservations of uploads in progress are kept. Returns the new ledgers.
pub async fn rescan(
    accounts: &Accounts,
    name: Option<&str>,
) -> Result<Vec<(String, Usage)>, AccountError> {
    let users = match name {
        Some(name) => match accounts.get_user(name).await? {
            Some(user) => vec![user],
            None => return Err(AccountError::NoSuchUser(name.to_owned())),
        },
        None => accounts
            .list_users()
            .await?
            .into_iter()
            .map(|(user, _)| user)
            .collect(),
    };
    let mut out = Vec::with_capacity(users.len());
    for user in users {
        let home = accounts.home_of(&user);
        let scan_path = home.clone();
        let (bytes, files) = tokio::task::spawn_blocking(move || scan_home(&scan_path))
            .await
            .map_err(|e| AccountError::Io(std::io::Error::other(e)))?
            .map_err(|source| AccountError::PathIo { path: home, source })?;
        accounts.set_usage(user.id, bytes, files).await?;
        let usage = accounts.usage(user.id).await?;
        tracing::info!(user = %user.name, bytes, files, "rescanned home");
        out.push((user.name, usage));
    }
    Ok(out)
}

/// A random password of [`GENERATED_PASSWORD_LEN`] letters and digits from the OS RNG.
pub fn generate_password() -> String {
    Alphanumeric.sample_string(&mut OsRng, GENERATED_PASSWORD_LEN)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{new_user, open_temp};
    use super::super::AuthError;
    use super::*;
    use std::fs;

    #[tokio::test]
    async fn add_creates_a_private_home() {
        let (_dir, acc) = open_temp().await;
        let user = add(&acc, new_user("alice", "pw")).await.unwrap();
        let home = acc.home_of(&user);
        assert!(home.is_dir());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&home).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        assert!(matches!(
            add(&acc, new_user("alice", "pw")).await,
            Err(AccountError::UserExists(_))
        ));
    }

    #[tokio::test]
    async fn add_undoes_the_account_when_the_home_cannot_be_created() {
        let (dir, acc) = open_temp().await;
        let blocker = dir.path().join("a-file");
        fs::write(&blocker, b"x").unwrap();
        let mut nu = new_user("alice", "pw");
        nu.home = Some(blocker.join("home"));
        assert!(matches!(
            add(&acc, nu).await,
            Err(AccountError::PathIo { .. })
        ));
        assert_eq!(acc.get_user("alice").await.unwrap(), None);
    }

    #[tokio::test]
    async fn delete_removes_the_default_home_unless_asked_to_keep_it() {
        let (_dir, acc) = open_temp().await;
        let alice = add(&acc, new_user("alice", "pw")).await.unwrap();
        let home = acc.home_of(&alice);
        fs::create_dir_all(home.join("sub")).unwrap();
        fs::write(home.join("sub/f"), b"data").unwrap();
        let out = delete(&acc, "alice", false).await.unwrap();
        assert_eq!(out.home_fate, HomeFate::Removed);
        assert_eq!(out.home, home);
        assert!(!home.exists());
        assert_eq!(
            acc.authenticate("alice", "pw").await,
            Err(AuthError::BadCredentials)
        );

        let bob = add(&acc, new_user("bob", "pw")).await.unwrap();
        let out = delete(&acc, "bob", true).await.unwrap();
        assert_eq!(out.home_fate, HomeFate::KeptOnRequest);
        assert!(acc.home_of(&bob).is_dir());

        let carol = acc.add_user(new_user("carol", "pw")).await.unwrap();
        assert!(!acc.home_of(&carol).exists());
        let out = delete(&acc, "carol", false).await.unwrap();
        assert_eq!(out.home_fate, HomeFate::Missing);

        assert!(matches!(
            delete(&acc, "carol", false).await,
            Err(AccountError::NoSuchUser(_))
        ));
    }

    #[tokio::test]
    async fn delete_never_removes_a_custom_home() {
        let (dir, acc) = open_temp().await;
        let custom = dir.path().join("shared/dave");
        let mut nu = new_user("dave", "pw");
        nu.home = Some(custom.clone());
        add(&acc, nu).await.unwrap();
        fs::write(custom.join("precious"), b"x").unwrap();
        let out = delete(&acc, "dave", false).await.unwrap();
        assert_eq!(out.home_fate, HomeFate::KeptCustomHome);
        assert_eq!(out.home, custom);
        assert!(custom.join("precious").is_file());
    }

    #[tokio::test]
    async fn rescan_writes_what_is_on_disk_and_keeps_reservations() {
        let (_dir, acc) = open_temp().await;
        let alice = add(&acc, new_user("alice", "pw")).await.unwrap();
        let bob = add(&acc, new_user("bob", "pw")).await.unwrap();
        let home = acc.home_of(&alice);
        fs::write(home.join("a"), vec![1u8; 300]).unwrap();
        fs::write(home.join(".ferry-tmp"), vec![1u8; 999]).unwrap();
        acc.charge(alice.id, 5000, 50).await.unwrap();
        assert!(acc.reserve(alice.id, 77, 0).await.unwrap());

        let one = rescan(&acc, Some("alice")).await.unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].0, "alice");
        assert_eq!(
            (
                one[0].1.used_bytes,
                one[0].1.used_files,
                one[0].1.reserved_bytes
            ),
            (300, 1, 77)
        );

        fs::write(acc.home_of(&bob).join("b"), vec![1u8; 20]).unwrap();
        let all = rescan(&acc, None).await.unwrap();
        let names: Vec<_> = all.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert_eq!(acc.usage(bob.id).await.unwrap().used_bytes, 20);

        assert!(matches!(
            rescan(&acc, Some("nobody")).await,
            Err(AccountError::NoSuchUser(_))
        ));
    }

    #[test]
    fn generated_passwords_are_alphanumeric_and_differ() {
        let a = generate_password();
        let b = generate_password();
        assert_eq!(a.len(), GENERATED_PASSWORD_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
