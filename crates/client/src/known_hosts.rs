//! The known-hosts file of trust on first use: one line per server, `host:port sha256 AA:BB:…`,
//! `#` comments. It lives in `$XDG_CONFIG_HOME/ferry/known_hosts` (default
//! `~/.config/ferry/known_hosts`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::Digest as _;

/// The SHA-256 fingerprint of a DER certificate, as `AB:CD:…` (what `ferry serve` prints).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = sha2::Sha256::digest(der);
    let mut out = String::with_capacity(95);
    for (i, b) in digest.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02X}"));
    }
    out
}

/// The default location: `$XDG_CONFIG_HOME/ferry/known_hosts`, else `$HOME/.config/ferry/known_hosts`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("ferry").join("known_hosts"))
}

/// A remembered fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownHost {
    /// The fingerprint, upper-case hex with colons.
    pub fingerprint: String,
    /// Its line (1-based).
    pub line: usize,
}

/// Looks `host_port` up in the file's text; the first entry wins.
pub fn lookup_in(text: &str, host_port: &str) -> Option<KnownHost> {
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(key), Some(algo), Some(fp)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        if key.eq_ignore_ascii_case(host_port) && algo.eq_ignore_ascii_case("sha256") {
            return Some(KnownHost {
                fingerprint: fp.to_ascii_uppercase(),
                line: i + 1,
            });
        }
    }
    None
}

/// Looks `host_port` up in the file at `path` (a missing file knows nobody).
pub fn lookup(path: &Path, host_port: &str) -> std::io::Result<Option<KnownHost>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(lookup_in(&text, host_port)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Appends `host_port sha256 fingerprint` to the file, creating it (and its directory) if needed.
pub fn remember(path: &Path, host_port: &str, fingerprint: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    writeln!(f, "{host_port} sha256 {fingerprint}")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_format() {
        let fp = fingerprint(b"");
        assert_eq!(fp.len(), 95);
        assert!(fp.starts_with("E3:B0:C4:42"));
    }

    #[test]
    fn lookup_table() {
        let text = "# ferry known hosts\n\n127.0.0.1:2121 sha256 AA:BB\n[::1]:21 SHA256 cc:dd\nbroken line\nh:1 md5 00\nh:1 sha256 11:22 extra\n127.0.0.1:2121 sha256 FF:FF\n";
        assert_eq!(
            lookup_in(text, "127.0.0.1:2121"),
            Some(KnownHost {
                fingerprint: "AA:BB".into(),
                line: 3
            })
        );
        assert_eq!(lookup_in(text, "[::1]:21").unwrap().fingerprint, "CC:DD");
        assert_eq!(lookup_in(text, "h:1").unwrap().line, 7);
        assert_eq!(lookup_in(text, "127.0.0.1:21"), None);
        assert_eq!(lookup_in("", "h:1"), None);
    }

    #[test]
    fn remember_creates_the_file_and_lookup_finds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("known_hosts");
        assert_eq!(lookup(&path, "h:21").unwrap(), None);
        remember(&path, "h:21", "AA:BB").unwrap();
        remember(&path, "g:21", "CC:DD").unwrap();
        assert_eq!(lookup(&path, "g:21").unwrap().unwrap().line, 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
