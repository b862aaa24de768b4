//! Walks a home directory to count its bytes and files, so `ferry user rescan` can reconcile
//! the quota ledger with the disk.
//!
//! Blocking (run it with `spawn_blocking`); never follows symlinks below the home, skips the
//! server's `.ferry-` temp files, and tolerates entries that vanish during the walk.

use std::io;
use std::path::{Path, PathBuf};

/// Names beginning with this are the server's own temp files; they are not counted.
pub const TEMP_PREFIX: &str = ".ferry-";

/// Directories deeper than this below the home are not descended into.
pub const MAX_DEPTH: usize = 256;

/// Total size and number of the regular files under `path`. Symlinks (to files or
/// directories) are neither followed nor counted, nor are other special files. A missing home
/// counts as empty. Errors other than "not found" carry the path they happened at.
pub fn scan_home(path: &Path) -> io::Result<(u64, u64)> {
    let (mut bytes, mut files) = (0u64, 0u64);
    let mut stack: Vec<(PathBuf, usize)> = vec![(path.to_owned(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(at(&dir, e)),
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(at(&dir, e)),
            };
            if entry
                .file_name()
                .as_encoded_bytes()
                .starts_with(TEMP_PREFIX.as_bytes())
            {
                continue;
            }
            // DirEntry::file_type and metadata do not follow symlinks.
            let file_type = match entry.file_type() {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(at(&entry.path(), e)),
            };
            if file_type.is_dir() {
                if depth < MAX_DEPTH {
                    stack.push((entry.path(), depth + 1));
                } else {
                    tracing::warn!(path = %entry.path().display(), "rescan: too deep, skipped");
                }
            } else if file_type.is_file() {
                match entry.metadata() {
                    Ok(meta) => {
                        bytes = bytes.saturating_add(meta.len());
                        files += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(at(&entry.path(), e)),
                }
            }
        }
    }
    Ok((bytes, files))
}

/// Adds the path to an I/O error's message.
fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn counts_regular_files_recursively_and_skips_ferry_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        fs::write(home.join("a"), b"12345").unwrap();
        fs::create_dir_all(home.join("d/e")).unwrap();
        fs::write(home.join("d/b"), b"123").unwrap();
        fs::write(home.join("d/e/c"), b"").unwrap();
        fs::write(home.join(".ferry-upload-1"), vec![0u8; 1000]).unwrap();
        fs::write(home.join("d/.ferry-part"), vec![0u8; 1000]).unwrap();
        fs::create_dir(home.join(".ferry-tmpdir")).unwrap();
        fs::write(home.join(".ferry-tmpdir/x"), vec![0u8; 1000]).unwrap();
        fs::write(home.join(".hidden"), b"12").unwrap();
        assert_eq!(scan_home(home).unwrap(), (10, 4));
    }

    #[cfg(unix)]
    #[test]
    fn does_not_follow_symlinks_out_of_the_home() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        let home = dir.path().join("home");
        fs::create_dir_all(&outside).unwrap();
        fs::create_dir_all(&home).unwrap();
        fs::write(outside.join("big"), vec![0u8; 4096]).unwrap();
        fs::write(home.join("own"), b"1234").unwrap();
        std::os::unix::fs::symlink(&outside, home.join("link-dir")).unwrap();
        std::os::unix::fs::symlink(outside.join("big"), home.join("link-file")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", home.join("dangling")).unwrap();
        assert_eq!(scan_home(&home).unwrap(), (4, 1));
    }

    #[cfg(unix)]
    #[test]
    fn tolerates_non_utf8_names() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let name = OsStr::from_bytes(b"bad-\xff-name");
        if fs::write(dir.path().join(name), b"123").is_err() {
            return; // The filesystem refuses non-UTF-8 names: nothing to check.
        }
        let sub = dir.path().join(OsStr::from_bytes(b"dir-\xfe"));
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("x"), b"1").unwrap();
        assert_eq!(scan_home(dir.path()).unwrap(), (4, 2));
    }

    #[test]
    fn missing_home_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(scan_home(&dir.path().join("nope")).unwrap(), (0, 0));
    }

    #[test]
    fn stops_descending_at_the_depth_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut deep = dir.path().to_owned();
        for _ in 0..MAX_DEPTH + 2 {
            deep.push("d");
        }
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("too-deep"), b"x").unwrap();
        fs::write(dir.path().join("d/shallow"), b"xy").unwrap();
        assert_eq!(scan_home(dir.path()).unwrap(), (2, 1));
    }
}
