//! `ftp://`, `ftpes://` (explicit TLS) and `ftps://` (implicit TLS) URLs (RFC 1738 §3.2):
//! `scheme://[user[:password]@]host[:port][/path]`, percent-decoded. Parsed by hand: the grammar
//! is small and the schemes are not the `url` crate's special ones anyway.

use std::fmt;

/// How a URL asks to protect the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `ftp://`: plain FTP; the client still asks for TLS with `AUTH TLS`.
    Ftp,
    /// `ftpes://`: explicit TLS (`AUTH TLS`) is required.
    Ftpes,
    /// `ftps://`: implicit TLS (TLS from the first byte, port 990).
    Ftps,
}

impl Scheme {
    /// The default port.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Ftp | Scheme::Ftpes => 21,
            Scheme::Ftps => 990,
        }
    }

    /// The scheme's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Ftp => "ftp",
            Scheme::Ftpes => "ftpes",
            Scheme::Ftps => "ftps",
        }
    }
}

/// A parsed FTP URL.
#[derive(Clone, PartialEq, Eq)]
pub struct FtpUrl {
    /// The scheme.
    pub scheme: Scheme,
    /// User name, percent-decoded.
    pub user: Option<String>,
    /// Password, percent-decoded.
    pub password: Option<String>,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (the scheme's default if absent).
    pub port: u16,
    /// Path, percent-decoded, relative to the login directory unless it starts with `/`
    /// (`ftp://h/a/b` is `a/b`; `ftp://h/%2Fetc` and `ftp://h//etc` are `/etc`). Empty for the
    /// login directory.
    pub path: String,
}

impl fmt::Debug for FtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FtpUrl")
            .field("scheme", &self.scheme)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("path", &self.path)
            .finish()
    }
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not `scheme://…` with a known scheme.
    #[error("{0:?} is not an FTP URL: use ftp://, ftpes:// or ftps://[user[:password]@]host[:port]/path")]
    Scheme(String),
    /// Empty or malformed host.
    #[error("{0:?} has no valid host")]
    Host(String),
    /// The port is not a number from 1 to 65535.
    #[error("{0:?} has an invalid port")]
    Port(String),
    /// Not `irc://…` or `ircs://…`.
    #[error("{0:?} is not a chat URL: use irc://user@host:6667 or ircs://user@host:6697")]
    ChatScheme(String),
    /// A `%` escape that is not two hex digits, or bytes that are not UTF-8, or a control character.
    #[error("{0:?} has an invalid %-escape, a control character or bytes that are not UTF-8")]
    Encoding(String),
}

/// Whether `s` looks like a URL (`something://`) rather than a local path.
pub fn is_url(s: &str) -> bool {
    s.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+')
    })
}

pub(crate) fn decode(s: &str, whole: &str) -> Result<String, UrlError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| UrlError::Encoding(whole.to_string()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out).map_err(|_| UrlError::Encoding(whole.to_string()))?;
    if text.chars().any(char::is_control) {
        return Err(UrlError::Encoding(whole.to_string()));
    }
    Ok(text)
}

/// Percent-encodes what cannot appear literally in a URL path.
fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' | ' ' | '#' | '?' | '"' | '<' | '>' => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The parts after `scheme://`: user info, host, port (if given) and the raw path.
pub(crate) struct Authority<'a> {
    /// User name, percent-decoded; `None` if absent or empty.
    pub user: Option<String>,
    /// Password, percent-decoded.
    pub password: Option<String>,
    /// Host name or IP address, lower case (IPv6 without brackets).
    pub host: String,
    /// The port, if the URL gives one.
    pub port: Option<u16>,
    /// The path after the first `/`, not decoded.
    pub path: &'a str,
}

/// Splits `rest` (what follows `scheme://` in `whole`) into [`Authority`] parts.
pub(crate) fn authority<'a>(rest: &'a str, whole: &str) -> Result<Authority<'a>, UrlError> {
    let s = whole;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    // The user info ends at the last '@' (a password may contain a raw '@').
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((name, pw)) => (Some(decode(name, s)?), Some(decode(pw, s)?)),
            None => (Some(decode(u, s)?), None),
        },
    };
    let user = user.filter(|u| !u.is_empty());
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| UrlError::Host(s.to_string()))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(UrlError::Host(s.to_string()));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| UrlError::Host(s.to_string()))?,
            ),
        };
        (h.to_string(), port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    let host = decode(&host, s)?.to_ascii_lowercase();
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || "/@?#[]".contains(c))
    {
        return Err(UrlError::Host(s.to_string()));
    }
    let port = match port {
        None | Some("") => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(UrlError::Port(s.to_string())),
        },
    };
    Ok(Authority {
        user,
        password,
        host,
        port,
        path,
    })
}

impl FtpUrl {
    /// Parses a URL.
    pub fn parse(s: &str) -> Result<FtpUrl, UrlError> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| UrlError::Scheme(s.to_string()))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "ftp" => Scheme::Ftp,
            "ftpes" => Scheme::Ftpes,
            "ftps" => Scheme::Ftps,
            _ => return Err(UrlError::Scheme(s.to_string())),
        };
        let a = authority(rest, s)?;
        let port = a.port.unwrap_or_else(|| scheme.default_port());
        let (user, password, host, path) = (a.user, a.password, a.host, a.path);
        // Query and fragment are not part of FTP URLs; `;type=i` is ignored.
        let path = path.split(['?', '#']).next().unwrap_or("");
        let path = path.rsplit_once(";type=").map_or(path, |(p, _)| p);
        let path = decode(path, s)?;
        Ok(FtpUrl {
            scheme,
            user,
            password,
            host,
            port,
            path,
        })
    }

    /// `host:port` (IPv6 in brackets), the key of the known-hosts file.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The same server and user with another path.
    pub fn with_path(&self, path: &str) -> FtpUrl {
        FtpUrl {
            path: path.to_string(),
            ..self.clone()
        }
    }

    /// Whether two URLs name the same login on the same server (one connection serves both).
    pub fn same_login(&self, other: &FtpUrl) -> bool {
        self.scheme == other.scheme
            && self.host == other.host
            && self.port == other.port
            && self.user == other.user
    }
}

/// Shows the URL without its password.
impl fmt::Display for FtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        if let Some(u) = &self.user {
            write!(
                f,
                "{}@",
                encode_path(u).replace('@', "%40").replace(':', "%3A")
            )?;
        }
        let path = if self.path.starts_with('/') {
            format!("%2F{}", encode_path(&self.path[1..]))
        } else {
            encode_path(&self.path)
        };
        write!(f, "{}/{}", self.host_port(), path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> FtpUrl {
        FtpUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_table() {
        // (url, scheme, user, password, host, port, path)
        type Case<'a> = (
            &'a str,
            Scheme,
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
            u16,
            &'a str,
        );
        let cases: &[Case] = &[
            ("ftp://host", Scheme::Ftp, None, None, "host", 21, ""),
            ("ftp://host/", Scheme::Ftp, None, None, "host", 21, ""),
            (
                "FTP://HOST:2121/a/b.txt",
                Scheme::Ftp,
                None,
                None,
                "host",
                2121,
                "a/b.txt",
            ),
            (
                "ftpes://alice@h/x",
                Scheme::Ftpes,
                Some("alice"),
                None,
                "h",
                21,
                "x",
            ),
            ("ftps://h", Scheme::Ftps, None, None, "h", 990, ""),
            (
                "ftp://al%40ice:p%3Aw@d@h:21/",
                Scheme::Ftp,
                Some("al@ice"),
                Some("p:w@d"),
                "h",
                21,
                "",
            ),
            ("ftp://u:@h/", Scheme::Ftp, Some("u"), Some(""), "h", 21, ""),
            (
                "ftp://[::1]:2121/d/",
                Scheme::Ftp,
                None,
                None,
                "::1",
                2121,
                "d/",
            ),
            ("ftp://[::1]/", Scheme::Ftp, None, None, "::1", 21, ""),
            (
                "ftp://h/%2Fetc/passwd",
                Scheme::Ftp,
                None,
                None,
                "h",
                21,
                "/etc/passwd",
            ),
            ("ftp://h//abs", Scheme::Ftp, None, None, "h", 21, "/abs"),
            (
                "ftp://h/caf%C3%A9/%E6%97%A5%E6%9C%AC.txt",
                Scheme::Ftp,
                None,
                None,
                "h",
                21,
                "café/日本.txt",
            ),
            (
                "ftp://h/café/日本.txt",
                Scheme::Ftp,
                None,
                None,
                "h",
                21,
                "café/日本.txt",
            ),
            (
                "ftp://h/a%20b;type=i",
                Scheme::Ftp,
                None,
                None,
                "h",
                21,
                "a b",
            ),
            ("ftp://h:/x", Scheme::Ftp, None, None, "h", 21, "x"),
            ("ftp://@h/x", Scheme::Ftp, None, None, "h", 21, "x"),
        ];
        for &(s, scheme, user, pw, host, port, path) in cases {
            let u = url(s);
            assert_eq!(
                (
                    u.scheme,
                    u.user.as_deref(),
                    u.password.as_deref(),
                    u.host.as_str(),
                    u.port,
                    u.path.as_str()
                ),
                (scheme, user, pw, host, port, path),
                "{s}"
            );
        }
    }

    #[test]
    fn refuses_table() {
        type Check = fn(&UrlError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("http://h/", |e| matches!(e, UrlError::Scheme(_))),
            ("h/x", |e| matches!(e, UrlError::Scheme(_))),
            ("sftp://h", |e| matches!(e, UrlError::Scheme(_))),
            ("ftp://", |e| matches!(e, UrlError::Host(_))),
            ("ftp://u@/x", |e| matches!(e, UrlError::Host(_))),
            ("ftp://[::1/x", |e| matches!(e, UrlError::Host(_))),
            ("ftp://[nope]:21/", |e| matches!(e, UrlError::Host(_))),
            ("ftp://h:0/", |e| matches!(e, UrlError::Port(_))),
            ("ftp://h:65536/", |e| matches!(e, UrlError::Port(_))),
            ("ftp://h:+21/", |e| matches!(e, UrlError::Port(_))),
            ("ftp://h:abc/", |e| matches!(e, UrlError::Port(_))),
            ("ftp://h/%zz", |e| matches!(e, UrlError::Encoding(_))),
            ("ftp://h/%ff", |e| matches!(e, UrlError::Encoding(_))),
            ("ftp://h/a%0d%0aDELE%20x", |e| {
                matches!(e, UrlError::Encoding(_))
            }),
            ("ftp://h/%", |e| matches!(e, UrlError::Encoding(_))),
        ];
        for &(s, check) in cases {
            let e = FtpUrl::parse(s).expect_err(s);
            assert!(check(&e), "{s}: {e:?}");
        }
    }

    #[test]
    fn display_hides_the_password_and_round_trips() {
        for s in [
            "ftp://alice@h:2121/a%20b/c",
            "ftps://h:990/%2Fabs",
            "ftpes://[::1]:21/x",
            "ftp://h:21/caf%C3%A9",
        ] {
            let u = url(s);
            let shown = u.to_string();
            assert_eq!(FtpUrl::parse(&shown).unwrap(), u, "{s} -> {shown}");
        }
        let u = url("ftp://alice:secret@h/x");
        assert!(!u.to_string().contains("secret"));
        assert!(!format!("{u:?}").contains("secret"));
        assert_eq!(u.host_port(), "h:21");
        assert_eq!(url("ftp://[::1]:5/").host_port(), "[::1]:5");
    }

    #[test]
    fn is_url_tells_urls_from_paths() {
        assert!(is_url("ftp://h"));
        assert!(is_url("bogus://h"));
        assert!(!is_url("./ftp:/x"));
        assert!(!is_url("/tmp/a://b"));
        assert!(!is_url("file.txt"));
    }
}
