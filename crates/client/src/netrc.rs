//! `~/.netrc` (the convention of ftp(1), curl and lftp): `machine HOST login USER password PW`
//! entries and a `default` entry, tokens separated by any white space, `"quoted tokens"` with
//! backslash escapes (curl), `macdef` bodies skipped up to the next empty line.

/// One `machine` (or `default`) entry.
#[derive(Clone, PartialEq, Eq)]
pub struct NetrcEntry {
    /// The host name; `None` for `default`.
    pub machine: Option<String>,
    /// `login`.
    pub login: Option<String>,
    /// `password`.
    pub password: Option<String>,
}

impl std::fmt::Debug for NetrcEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetrcEntry")
            .field("machine", &self.machine)
            .field("login", &self.login)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// A parsed netrc file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Netrc {
    /// Entries in file order.
    pub entries: Vec<NetrcEntry>,
}

/// Splits the text into tokens; `macdef NAME` swallows lines up to an empty one.
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut tok = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => {
                        if let Some(n) = chars.next() {
                            tok.push(match n {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                other => other,
                            });
                        }
                    }
                    c => tok.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                tok.push(c);
                chars.next();
            }
        }
        if tok == "macdef" {
            // The macro name, then the body up to an empty line.
            let mut prev_newline = false;
            // Skip the rest of the macdef line first.
            for c in chars.by_ref() {
                if c == '\n' {
                    break;
                }
            }
            for c in chars.by_ref() {
                if c == '\n' {
                    if prev_newline {
                        break;
                    }
                    prev_newline = true;
                } else if c != '\r' {
                    prev_newline = false;
                }
            }
            continue;
        }
        out.push(tok);
    }
    out
}

impl Netrc {
    /// Parses netrc text. Unknown keywords are skipped with their value, as curl does.
    pub fn parse(text: &str) -> Netrc {
        let toks = tokens(text);
        let mut entries: Vec<NetrcEntry> = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            match toks[i].as_str() {
                "machine" => {
                    if let Some(m) = toks.get(i + 1) {
                        entries.push(NetrcEntry {
                            machine: Some(m.to_ascii_lowercase()),
                            login: None,
                            password: None,
                        });
                    }
                    i += 2;
                }
                "default" => {
                    entries.push(NetrcEntry {
                        machine: None,
                        login: None,
                        password: None,
                    });
                    i += 1;
                }
                key @ ("login" | "password" | "account") => {
                    let value = toks.get(i + 1).cloned();
                    if let Some(e) = entries.last_mut() {
                        match key {
                            "login" => e.login = value,
                            "password" => e.password = value,
                            _ => {}
                        }
                    }
                    i += 2;
                }
                _ => i += 1,
            }
        }
        Netrc { entries }
    }

    /// The entry for `host`: the first `machine` entry for it whose login is `user` (any login
    /// when `user` is `None`), else the `default` entry under the same condition.
    pub fn lookup(&self, host: &str, user: Option<&str>) -> Option<&NetrcEntry> {
        let fits = |e: &&NetrcEntry| match user {
            None => true,
            Some(u) => e.login.as_deref().is_none_or(|l| l == u),
        };
        let host = host.to_ascii_lowercase();
        self.entries
            .iter()
            .filter(|e| e.machine.as_deref() == Some(host.as_str()))
            .find(fits)
            .or_else(|| {
                self.entries
                    .iter()
                    .filter(|e| e.machine.is_none())
                    .find(fits)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r##"
# comment lines are not special to netrc, but "#" is just a token nobody asks for
machine ftp.example.org login alice password s3cret
machine ftp.example.org
    login bob
    password "pass word \"quoted\""
macdef init
cd /pub
binary

machine Other.Example.org login carol password c4
default login anonymous password me@example.org
"##;

    #[test]
    fn finds_machine_entries_by_host_and_login() {
        let n = Netrc::parse(SAMPLE);
        let e = n.lookup("ftp.example.org", None).unwrap();
        assert_eq!(
            (e.login.as_deref(), e.password.as_deref()),
            (Some("alice"), Some("s3cret"))
        );
        let e = n.lookup("FTP.example.org", Some("bob")).unwrap();
        assert_eq!(e.password.as_deref(), Some(r#"pass word "quoted""#));
        let e = n.lookup("other.example.org", None).unwrap();
        assert_eq!(e.login.as_deref(), Some("carol"));
    }

    #[test]
    fn falls_back_to_default_and_skips_macros() {
        let n = Netrc::parse(SAMPLE);
        let e = n.lookup("elsewhere", None).unwrap();
        assert_eq!(e.machine, None);
        assert_eq!(e.login.as_deref(), Some("anonymous"));
        // A user with no entry for this host gets nothing from the host's entries.
        assert!(n.lookup("other.example.org", Some("dave")).is_none());
        assert!(!n
            .entries
            .iter()
            .any(|e| e.machine.as_deref() == Some("/pub")));
        assert_eq!(n.entries.len(), 4);
    }

    #[test]
    fn one_line_and_empty_files() {
        let n = Netrc::parse("machine 127.0.0.1 login u password p");
        assert_eq!(
            n.lookup("127.0.0.1", Some("u"))
                .unwrap()
                .password
                .as_deref(),
            Some("p")
        );
        assert!(Netrc::parse("").lookup("h", None).is_none());
        assert!(Netrc::parse("machine").lookup("h", None).is_none());
        let n = Netrc::parse("machine h login");
        assert_eq!(n.lookup("h", None).unwrap().login, None);
    }

    #[test]
    fn debug_hides_passwords() {
        let n = Netrc::parse("machine h login u password topsecret");
        assert!(!format!("{n:?}").contains("topsecret"));
    }
}
