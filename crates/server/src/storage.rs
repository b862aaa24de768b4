//! A user's home as a jailed directory handle (cap-std): every path is opened relative to the
//! home's descriptor, so neither `..` nor a symlink can lead outside it.
//!
//! The methods are synchronous file-system calls; sessions run them with [`blocking`]. This is the
//! storage seam of DESIGN §11: uploads go through explicit temp-file commit/abort steps.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use cap_fs_ext::{DirExt, SystemTimeSpec};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, Metadata, OpenOptions};
use ferry_proto::vpath::{is_reserved_name, VirtualPath, RESERVED_PREFIX};

use crate::error::CommandError;

/// Runs a closure of a few metadata system calls (open, stat, create, rename, unlink) where the
/// caller is, on the session's task. On a local file system these are answered from the dentry
/// and inode caches in microseconds, while a trip to the blocking pool and back costs two thread
/// switches, which on a 2-vCPU VM weigh more than the calls themselves (measured: about a third of
/// the context switches of a small upload). Work that grows with the data (listings, hashing,
/// reading or writing file contents) goes through [`blocking`] instead.
pub async fn metadata<T, F>(f: F) -> Result<T, CommandError>
where
    F: FnOnce() -> Result<T, CommandError>,
{
    f()
}

/// Runs a blocking file-system closure off the async threads.
pub async fn blocking<T, F>(f: F) -> Result<T, CommandError>
where
    F: FnOnce() -> Result<T, CommandError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CommandError::Local(format!("blocking task failed: {e}")))?
}

/// One directory entry, for listings.
#[derive(Debug)]
pub struct Entry {
    /// Name, UTF-8; bytes that are not UTF-8 are shown escaped as `\xNN`.
    pub name: String,
    /// Metadata (symlinks inside the home are followed).
    pub meta: Metadata,
}

/// A directory being listed (see [`Home::list`] for what is left out). Read in parts, so that a
/// caller can read a small directory where it runs and hand a large one to a blocking thread.
#[derive(Debug)]
pub struct Listing {
    dir: Dir,
    entries: cap_std::fs::ReadDir,
    out: Vec<Entry>,
}

impl Listing {
    /// Reads up to `max` more directory entries; `true` once the directory is done.
    pub fn read(&mut self, max: usize) -> io::Result<bool> {
        for _ in 0..max {
            let Some(entry) = self.entries.next() else {
                return Ok(true);
            };
            let entry = entry?;
            let raw = entry.file_name();
            let name = display_name(&raw);
            if is_reserved_name(&name) {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(m) if m.file_type().is_symlink() => match self.dir.metadata(&raw) {
                    Ok(target) => target,
                    Err(_) => continue,
                },
                Ok(m) => m,
                Err(_) => continue,
            };
            self.out.push(Entry { name, meta });
        }
        Ok(false)
    }

    /// The entries read, sorted by name.
    pub fn into_entries(self) -> Vec<Entry> {
        let mut out = self.out;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// A user's home directory handle. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Home {
    dir: Arc<Dir>,
    path: Arc<PathBuf>,
}

/// The path cap-std needs for a virtual path: relative, "." for the root.
fn rel(p: &VirtualPath) -> &Path {
    if p.is_root() {
        Path::new(".")
    } else {
        Path::new(p.relative())
    }
}

/// Escapes bytes that are not UTF-8 so a strange name never breaks a listing.
pub fn display_name(name: &OsStr) -> String {
    match name.to_str() {
        Some(s) => s.to_string(),
        None => {
            let mut out = String::new();
            for chunk in name.as_bytes().utf8_chunks() {
                out.push_str(chunk.valid());
                for b in chunk.invalid() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            out
        }
    }
}

impl Home {
    /// Opens (creating if needed) the home directory at `path`.
    pub fn open(path: &Path) -> io::Result<Home> {
        std::fs::create_dir_all(path)?;
        let dir = Dir::open_ambient_dir(path, ambient_authority())?;
        Ok(Home {
            dir: Arc::new(dir),
            path: Arc::new(path.to_path_buf()),
        })
    }

    /// Where the home is on disk (for logs and `ferry user list`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the directory this handle holds was removed (its link count fell to 0). Asks the
    /// open descriptor (`fstat`), not the path, so it never waits on path resolution.
    fn is_removed(&self) -> bool {
        use cap_std::fs::MetadataExt as _;
        self.dir.dir_metadata().map_or(true, |m| m.nlink() == 0)
    }

    /// Metadata of a path (symlinks followed, inside the jail only).
    pub fn stat(&self, p: &VirtualPath) -> io::Result<Metadata> {
        self.dir.metadata(rel(p))
    }

    /// Metadata if the path exists, `None` if it does not.
    pub fn try_stat(&self, p: &VirtualPath) -> io::Result<Option<Metadata>> {
        match self.stat(p) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists a directory: reserved names are skipped, and so are entries that cannot be stat'ed
    /// through the jail (a symlink pointing outside, a dangling link). Sorted by name.
    pub fn list(&self, p: &VirtualPath) -> io::Result<Vec<Entry>> {
        let mut listing = self.listing(p)?;
        listing.read(usize::MAX)?;
        Ok(listing.into_entries())
    }

    /// Starts listing a directory, for reading a few entries at a time ([`Listing::read`]).
    pub fn listing(&self, p: &VirtualPath) -> io::Result<Listing> {
        let dir = if p.is_root() {
            self.dir.try_clone()?
        } else {
            self.dir.open_dir(rel(p))?
        };
        let entries = dir.entries()?;
        Ok(Listing {
            dir,
            entries,
            out: Vec::new(),
        })
    }

    /// Creates a directory.
    pub fn mkdir(&self, p: &VirtualPath) -> io::Result<()> {
        self.dir.create_dir(rel(p))
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, p: &VirtualPath) -> io::Result<()> {
        self.dir.remove_dir(rel(p))
    }

    /// Removes a file.
    pub fn remove_file(&self, p: &VirtualPath) -> io::Result<()> {
        self.dir.remove_file(rel(p))
    }

    /// Renames within the home (replacing a file at `to`).
    pub fn rename(&self, from: &VirtualPath, to: &VirtualPath) -> io::Result<()> {
        self.dir.rename(rel(from), &self.dir, rel(to))
    }

    /// Opens a regular file for reading; the file and its size.
    pub fn open_read(&self, p: &VirtualPath) -> io::Result<(std::fs::File, u64)> {
        let file = self.dir.open(rel(p))?.into_std();
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::from(io::ErrorKind::IsADirectory));
        }
        Ok((file, meta.len()))
    }

    /// Opens an existing regular file for writing in place (REST + STOR, APPE); `create` makes it
    /// if it is missing (APPE).
    pub fn open_write(&self, p: &VirtualPath, create: bool) -> io::Result<std::fs::File> {
        let mut opts = OpenOptions::new();
        opts.write(true).create(create);
        let file = self.dir.open_with(rel(p), &opts)?.into_std();
        if !file.metadata()?.is_file() {
            return Err(io::Error::from(io::ErrorKind::IsADirectory));
        }
        Ok(file)
    }

    /// Creates a new hidden temp file in `parent` for an atomic upload; returns it and its path.
    pub fn create_temp(&self, parent: &VirtualPath) -> io::Result<(std::fs::File, PathBuf)> {
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        for _ in 0..16 {
            let name = format!("{RESERVED_PREFIX}up-{:016x}", rand::random::<u64>());
            let path = rel(parent).join(&name);
            match self.dir.open_with(&path, &opts) {
                Ok(f) => return Ok((f.into_std(), path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("cannot create a temp file"))
    }

    /// Renames a temp file (from [`Home::create_temp`]) over `to`.
    pub fn commit_temp(&self, temp: &Path, to: &VirtualPath) -> io::Result<()> {
        self.dir.rename(temp, &self.dir, rel(to))
    }

    /// Renames a completed temp file onto `to` if nothing is there (`Ok(false)`, nothing moved,
    /// if something is). One `renameat2(RENAME_NOREPLACE)` in the directory both names are in,
    /// instead of a stat of the target and a rename that opens the directory twice: the new
    /// upload's usual end. Both names are single components resolved in a directory opened
    /// through the jail, and a rename never follows the link it moves or replaces.
    pub fn commit_temp_new(&self, temp: &Path, to: &VirtualPath) -> io::Result<bool> {
        use rustix::fs::{renameat_with, RenameFlags};
        let (Some(parent), Some(name), Some(target)) =
            (temp.parent(), temp.file_name(), to.file_name())
        else {
            return Err(io::Error::other("temp file without a directory"));
        };
        let opened;
        let dir = if parent.as_os_str().is_empty() || parent == Path::new(".") {
            &*self.dir
        } else {
            opened = self.dir.open_dir(parent)?;
            &opened
        };
        match renameat_with(dir, name, dir, target, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::EXIST) => Ok(false),
            // A file system without RENAME_NOREPLACE: the caller's stat-and-rename does it.
            Err(
                rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP,
            ) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Moves a temp file to `to` only if nothing is there (a failed new upload keeps its partial).
    pub fn commit_temp_if_absent(&self, temp: &Path, to: &VirtualPath) -> io::Result<bool> {
        // hard_link fails if the target exists, which makes the check and the move one step.
        match self.dir.hard_link(temp, &self.dir, rel(to)) {
            Ok(()) => {
                self.dir.remove_file(temp)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.dir.remove_file(temp)?;
                Ok(false)
            }
            Err(e) => {
                let _ = self.dir.remove_file(temp);
                Err(e)
            }
        }
    }

    /// Deletes a temp file.
    pub fn remove_temp(&self, temp: &Path) -> io::Result<()> {
        self.dir.remove_file(temp)
    }

    /// Sets a file's modification time (MFMT).
    pub fn set_mtime(&self, p: &VirtualPath, when: SystemTime) -> io::Result<()> {
        self.dir.set_mtime(
            rel(p),
            SystemTimeSpec::Absolute(cap_std::time::SystemTime::from_std(when)),
        )
    }
}

/// The open homes, shared by all sessions of a user: a thousand sessions of one account hold one
/// directory descriptor, not a thousand, and a login whose home is already open needs no
/// file-system call at all.
#[derive(Debug, Default)]
pub struct Homes {
    open: Mutex<HashMap<(i64, PathBuf), Weak<Dir>>>,
}

impl Homes {
    /// The home of account `user_id` at `path`: the handle other sessions of the account hold,
    /// or a newly opened one (created if missing) if none is open or the open one was removed.
    pub async fn open(&self, user_id: i64, path: PathBuf) -> Result<Home, CommandError> {
        let key = (user_id, path);
        if let Some(home) = self.live(&key) {
            return Ok(home);
        }
        // A `mkdir` and an `open` of a directory: metadata calls, answered from the caches.
        let home = metadata(|| Home::open(&key.1).map_err(CommandError::from_io)).await?;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        // Forget homes nobody holds any more before the map grows (amortised: at most every
        // doubling).
        if open.len() >= 64 && open.len().is_power_of_two() {
            open.retain(|_, weak| weak.strong_count() > 0);
        }
        open.insert(key, Arc::downgrade(&home.dir));
        Ok(home)
    }

    fn live(&self, key: &(i64, PathBuf)) -> Option<Home> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let dir = open.get(key)?.upgrade()?;
        drop(open);
        let home = Home {
            dir,
            path: Arc::new(key.1.clone()),
        };
        (!home.is_removed()).then_some(home)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vp(s: &str) -> VirtualPath {
        VirtualPath::root().join(s).unwrap()
    }

    #[test]
    fn a_new_upload_is_renamed_into_place_only_where_nothing_is() {
        let tmp = tempfile::tempdir().unwrap();
        let h = Home::open(tmp.path()).unwrap();
        h.mkdir(&vp("d")).unwrap();
        for parent in [VirtualPath::root(), vp("d")] {
            let (mut f, temp) = h.create_temp(&parent).unwrap();
            std::io::Write::write_all(&mut f, b"new").unwrap();
            let target = parent.join("a").unwrap();
            assert!(h.commit_temp_new(&temp, &target).unwrap());
            assert_eq!(
                std::fs::read(h.path().join(target.relative())).unwrap(),
                b"new"
            );
            assert!(
                !h.path().join(&temp).exists(),
                "the temp file is still there"
            );

            // Something there now: nothing moves, nothing is replaced.
            let (mut f, temp) = h.create_temp(&parent).unwrap();
            std::io::Write::write_all(&mut f, b"second").unwrap();
            assert!(!h.commit_temp_new(&temp, &target).unwrap());
            assert_eq!(
                std::fs::read(h.path().join(target.relative())).unwrap(),
                b"new"
            );
            h.remove_temp(&temp).unwrap();
        }
    }

    #[test]
    fn symlink_out_of_the_home_cannot_be_followed_or_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::write(tmp.path().join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(tmp.path(), home.join("out")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), home.join("s")).unwrap();
        let h = Home::open(&home).unwrap();
        assert!(h.open_read(&vp("out/secret")).is_err());
        assert!(h.open_read(&vp("s")).is_err());
        assert!(h.list(&vp("out")).is_err());
        assert!(h.list(&VirtualPath::root()).unwrap().is_empty());
    }

    #[test]
    fn a_listing_read_in_parts_finds_what_one_read_finds_sorted_and_filtered() {
        let tmp = tempfile::tempdir().unwrap();
        let h = Home::open(tmp.path()).unwrap();
        h.mkdir(&vp("d")).unwrap();
        let dir = tmp.path().join("d");
        for i in (0..150).rev() {
            std::fs::write(dir.join(format!("f{i:03}")), b"x").unwrap();
        }
        std::fs::write(dir.join(format!("{RESERVED_PREFIX}up-1")), b"temp").unwrap();
        std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("dangling")).unwrap();
        std::os::unix::fs::symlink("f007", dir.join("link")).unwrap();

        let mut listing = h.listing(&vp("d")).unwrap();
        assert!(
            !listing.read(64).unwrap(),
            "153 entries are not done after 64"
        );
        assert!(listing.read(usize::MAX).unwrap());
        let names: Vec<String> = listing.into_entries().into_iter().map(|e| e.name).collect();
        let mut want: Vec<String> = (0..150).map(|i| format!("f{i:03}")).collect();
        want.push("link".to_string());
        assert_eq!(names, want, "sorted, no temp file, no dangling link");
        let whole: Vec<String> = h
            .list(&vp("d"))
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(whole, want);

        // A small directory is done within the first part.
        let mut small = h.listing(&VirtualPath::root()).unwrap();
        assert!(small.read(64).unwrap());
        assert_eq!(small.into_entries().len(), 1);
    }

    #[test]
    fn temp_files_are_hidden_and_commit_if_absent_keeps_existing_files() {
        let tmp = tempfile::tempdir().unwrap();
        let h = Home::open(tmp.path()).unwrap();
        let (_f, temp) = h.create_temp(&VirtualPath::root()).unwrap();
        assert!(h.list(&VirtualPath::root()).unwrap().is_empty());
        std::fs::write(tmp.path().join("a"), b"old").unwrap();
        assert!(!h.commit_temp_if_absent(&temp, &vp("a")).unwrap());
        assert_eq!(std::fs::read(tmp.path().join("a")).unwrap(), b"old");
        let (_f, temp) = h.create_temp(&VirtualPath::root()).unwrap();
        assert!(h.commit_temp_if_absent(&temp, &vp("b")).unwrap());
        assert!(tmp.path().join("b").exists());
    }

    #[tokio::test]
    async fn sessions_of_one_user_share_one_home_handle_until_it_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("alice");
        let homes = Homes::default();
        let a = homes.open(1, path.clone()).await.unwrap();
        let b = homes.open(1, path.clone()).await.unwrap();
        assert!(Arc::ptr_eq(&a.dir, &b.dir));
        let other = homes.open(2, path.clone()).await.unwrap();
        assert!(
            !Arc::ptr_eq(&a.dir, &other.dir),
            "another account id opens its own"
        );
        // The directory is removed and made again: new logins get the new one.
        std::fs::remove_dir(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let c = homes.open(1, path.clone()).await.unwrap();
        assert!(!Arc::ptr_eq(&a.dir, &c.dir));
        c.mkdir(&vp("d")).unwrap();
        assert!(path.join("d").is_dir());
        // Nobody holds it any more: the next login opens it again.
        drop((a, b, c));
        let d = homes.open(1, path).await.unwrap();
        assert!(d.try_stat(&vp("d")).unwrap().is_some());
    }

    #[test]
    fn non_utf8_names_are_escaped() {
        let name = OsStr::from_bytes(b"a\xffb");
        assert_eq!(display_name(name), "a\\xffb");
    }
}
