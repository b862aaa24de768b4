//! Chat URLs: `irc://[user[:password]@]host[:port][/room]` (plain, port 6667) and `ircs://…`
//! (TLS, port 6697), percent-decoded like the FTP URLs (the same authority parser). The room is
//! given without or with its `#` (`irc://h/lobby`, `irc://h/%23lobby`).

use std::fmt;

use crate::url::{authority, decode, UrlError};

/// Port of `irc://`.
pub const IRC_PORT: u16 = 6667;
/// Port of `ircs://`.
pub const IRCS_PORT: u16 = 6697;

/// A parsed chat URL.
#[derive(Clone, PartialEq, Eq)]
pub struct ChatUrl {
    /// `ircs://`: TLS from the first byte.
    pub tls: bool,
    /// User name (the Ferry account), percent-decoded.
    pub user: Option<String>,
    /// Password, percent-decoded.
    pub password: Option<String>,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (6667 or 6697 if absent).
    pub port: u16,
    /// The room to be in (`#name`), if the URL names one.
    pub room: Option<String>,
}

impl fmt::Debug for ChatUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatUrl")
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("room", &self.room)
            .finish()
    }
}

impl ChatUrl {
    /// Parses `irc://…` or `ircs://…`.
    pub fn parse(s: &str) -> Result<ChatUrl, UrlError> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| UrlError::ChatScheme(s.to_string()))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "irc" => false,
            "ircs" => true,
            _ => return Err(UrlError::ChatScheme(s.to_string())),
        };
        let a = authority(rest, s)?;
        let room = decode(a.path.trim_end_matches('/'), s)?;
        let room = match room.as_str() {
            "" => None,
            r if r.starts_with('#') => Some(r.to_string()),
            r => Some(format!("#{r}")),
        };
        if let Some(r) = &room {
            if !ferry_proto::irc::is_valid_channel(r) {
                return Err(UrlError::Encoding(s.to_string()));
            }
        }
        Ok(ChatUrl {
            tls,
            user: a.user,
            password: a.password,
            host: a.host,
            port: a.port.unwrap_or(if tls { IRCS_PORT } else { IRC_PORT }),
            room,
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
}

/// Shows the URL without its password.
impl fmt::Display for ChatUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", if self.tls { "ircs" } else { "irc" })?;
        if let Some(u) = &self.user {
            write!(f, "{}@", u.replace('%', "%25").replace('@', "%40"))?;
        }
        write!(f, "{}", self.host_port())?;
        if let Some(r) = &self.room {
            write!(f, "/{}", r.replace('%', "%25").replace('#', "%23"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_table() {
        let u = ChatUrl::parse("irc://alice@127.0.0.1:6667").unwrap();
        assert_eq!(
            (u.tls, u.user.as_deref(), u.host.as_str(), u.port, u.room),
            (false, Some("alice"), "127.0.0.1", 6667, None)
        );
        let u = ChatUrl::parse("IRCS://bob:p%40ss@Chat.Example.org/lobby").unwrap();
        assert_eq!(
            (
                u.tls,
                u.user.as_deref(),
                u.password.as_deref(),
                u.host.as_str(),
                u.port
            ),
            (true, Some("bob"), Some("p@ss"), "chat.example.org", 6697)
        );
        assert_eq!(u.room.as_deref(), Some("#lobby"));
        assert_eq!(
            ChatUrl::parse("irc://h/%23dev").unwrap().room.as_deref(),
            Some("#dev")
        );
        assert_eq!(ChatUrl::parse("irc://h").unwrap().port, 6667);
        assert_eq!(
            ChatUrl::parse("irc://[::1]:7000/").unwrap().host_port(),
            "[::1]:7000"
        );
    }

    #[test]
    fn refuses_table() {
        for bad in [
            "ftp://h",
            "h:6667",
            "irc://",
            "irc://h:0",
            "irc://h:99999",
            "irc://h/a%20b",
            "irc://h/%zz",
        ] {
            assert!(ChatUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            ChatUrl::parse("http://h"),
            Err(UrlError::ChatScheme(_))
        ));
    }

    #[test]
    fn display_hides_the_password_and_round_trips() {
        let u = ChatUrl::parse("ircs://alice:secret@h:7000/dev").unwrap();
        let shown = u.to_string();
        assert!(!shown.contains("secret"), "{shown}");
        assert!(!format!("{u:?}").contains("secret"));
        let back = ChatUrl::parse(&shown).unwrap();
        assert_eq!(
            (back.user, back.host, back.port, back.room),
            (u.user, u.host, u.port, u.room)
        );
    }
}
