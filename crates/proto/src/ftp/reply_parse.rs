//! The client side of the reply codec: reply lines framed into [`Reply`]s (RFC 959 §4.2), and the
//! payloads a client reads out of replies (EPSV/PASV ports, FEAT, PWD, SIZE, MDTM, HASH, X*).
//!
//! Pure and bounded: the assembler refuses a multi-line reply larger than its limit, and every
//! reader returns `None` for text it does not understand instead of panicking.

use std::net::Ipv4Addr;

use super::command::{HashAlgo, Timestamp};
use super::Reply;

/// Why a reply could not be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The first line of a reply does not start with a three-digit code.
    #[error("malformed reply line {0:?}: expected a three-digit code")]
    Malformed(String),
    /// A multi-line reply grew past the limit.
    #[error("multi-line reply longer than {0} bytes")]
    TooLong(usize),
}

/// Frames reply lines (without CRLF) into replies: `123 text` alone, or `123-first` … `123 last`
/// with any lines in between. Middle lines are kept as sent (a leading space included).
#[derive(Debug)]
pub struct ReplyAssembler {
    max_bytes: usize,
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    code: u16,
    prefix: String,
    text: String,
    lines: Vec<String>,
    bytes: usize,
}

/// A three-digit reply code at the start of `line`, and the separator after it.
fn code_of(line: &str) -> Option<(u16, Option<u8>)> {
    let b = line.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) || b[0] == b'0' {
        return None;
    }
    let code = u16::from(b[0] - b'0') * 100 + u16::from(b[1] - b'0') * 10 + u16::from(b[2] - b'0');
    Some((code, b.get(3).copied()))
}

impl ReplyAssembler {
    /// An assembler that refuses multi-line replies of more than `max_bytes` bytes.
    pub fn new(max_bytes: usize) -> ReplyAssembler {
        ReplyAssembler {
            max_bytes,
            pending: None,
        }
    }

    /// Whether a multi-line reply has started and not yet ended.
    pub fn in_progress(&self) -> bool {
        self.pending.is_some()
    }

    /// Takes one line; returns the reply it completes, if any.
    pub fn push(&mut self, line: &str) -> Result<Option<Reply>, ReplyError> {
        if let Some(mut p) = self.pending.take() {
            if line.starts_with(p.prefix.as_str()) {
                return Ok(Some(Reply {
                    code: p.code,
                    text: p.text,
                    lines: p.lines,
                    last: Some(line[4..].to_string()),
                }));
            }
            p.bytes += line.len() + 2;
            if p.bytes > self.max_bytes {
                return Err(ReplyError::TooLong(self.max_bytes));
            }
            p.lines.push(line.to_string());
            self.pending = Some(p);
            return Ok(None);
        }
        let (code, sep) = code_of(line).ok_or_else(|| ReplyError::Malformed(clip(line)))?;
        match sep {
            None => Ok(Some(Reply::new(code, ""))),
            Some(b' ') => Ok(Some(Reply::new(code, &line[4..]))),
            Some(b'-') => {
                self.pending = Some(Pending {
                    code,
                    prefix: format!("{code} "),
                    text: line[4..].to_string(),
                    lines: Vec::new(),
                    bytes: line.len() + 2,
                });
                Ok(None)
            }
            Some(_) => Err(ReplyError::Malformed(clip(line))),
        }
    }
}

fn clip(line: &str) -> String {
    line.chars().take(80).collect()
}

/// All the text of a reply on one line: the first line, middle lines and last line joined with
/// spaces (what an error message shows).
pub fn reply_text(r: &Reply) -> String {
    let mut parts: Vec<&str> = vec![r.text.trim()];
    parts.extend(r.lines.iter().map(|l| l.trim()));
    if let Some(last) = &r.last {
        parts.push(last.trim());
    }
    parts.retain(|p| !p.is_empty());
    parts.join(" ")
}

/// The port of an EPSV reply, `229 Entering Extended Passive Mode (|||6446|)` (RFC 2428 §3):
/// any delimiter character, empty network protocol and address fields.
pub fn parse_epsv(text: &str) -> Option<u16> {
    let open = text.find('(')?;
    let inner = &text[open + 1..];
    let close = inner.find(')')?;
    let inner = &inner[..close];
    let d = inner.chars().next()?;
    if !(('!'..='~').contains(&d)) || d.is_ascii_digit() {
        return None;
    }
    let fields: Vec<&str> = inner.split(d).collect();
    // "|||port|" splits into ["", "", "", "port", ""].
    if fields.len() != 5 || !fields[4].is_empty() {
        return None;
    }
    let port: u16 = fields[3].parse().ok()?;
    (port != 0).then_some(port)
}

/// The address and port of a PASV reply, `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)`, with or
/// without the parentheses (RFC 959 §4.1.2; RFC 1123 §4.1.2.6 says clients must scan for them).
pub fn parse_pasv(text: &str) -> Option<(Ipv4Addr, u16)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_digit()) {
            if let Some(found) = six_numbers(&text[i..]) {
                return Some(found);
            }
        }
        i += 1;
    }
    None
}

fn six_numbers(s: &str) -> Option<(Ipv4Addr, u16)> {
    let mut nums = [0u8; 6];
    let mut rest = s;
    for (k, slot) in nums.iter_mut().enumerate() {
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if end == 0 || end > 3 {
            return None;
        }
        *slot = rest[..end].parse().ok()?;
        rest = &rest[end..];
        if k < 5 {
            rest = rest.strip_prefix(',')?;
        }
    }
    let port = u16::from(nums[4]) << 8 | u16::from(nums[5]);
    Some((Ipv4Addr::new(nums[0], nums[1], nums[2], nums[3]), port))
}

/// The path in a `257 "/a ""quoted"" dir" created` reply (RFC 959 Appendix II: a double quote
/// inside the name is doubled).
pub fn parse_pwd(text: &str) -> Option<String> {
    let start = text.find('"')?;
    let mut out = String::new();
    let mut chars = text[start + 1..].chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' {
            if chars.peek() == Some(&'"') {
                chars.next();
                out.push('"');
            } else {
                return Some(out);
            }
        } else {
            out.push(c);
        }
    }
    None
}

/// The number of a `213 1234` reply (SIZE, AVBL).
pub fn parse_number(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The time of an MDTM reply, `213 20240102030405[.123]` (RFC 3659 §3, UTC).
pub fn parse_mdtm(text: &str) -> Option<Timestamp> {
    Timestamp::parse(text.split_whitespace().next()?)
}

/// The server's features from a FEAT reply (RFC 2389): one feature per line, a name and
/// optional parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features {
    entries: Vec<(String, String)>,
}

impl Features {
    /// Reads the middle lines of a `211-` FEAT reply. A single-line reply means no features.
    pub fn parse(reply: &Reply) -> Features {
        let mut entries = Vec::new();
        for line in &reply.lines {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (name, params) = line.split_once(' ').unwrap_or((line, ""));
            entries.push((name.to_ascii_uppercase(), params.trim().to_string()));
        }
        Features { entries }
    }

    /// Whether the feature `name` (case-insensitive) is listed.
    pub fn has(&self, name: &str) -> bool {
        self.params(name).is_some()
    }

    /// The parameters of feature `name` (case-insensitive); `Some("")` when it has none.
    pub fn params(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, p)| p.as_str())
    }

    /// `AUTH TLS` (or `AUTH SSL`/`AUTH TLS-C`) is listed.
    pub fn auth_tls(&self) -> bool {
        self.entries.iter().any(|(n, p)| {
            n == "AUTH"
                && p.split([';', ' ', ','])
                    .any(|m| m.eq_ignore_ascii_case("TLS") || m.eq_ignore_ascii_case("TLS-C"))
        })
    }

    /// The algorithms of `HASH SHA-256*;SHA-1;…` (draft-bryan-ftpext-hash) that this crate knows,
    /// in the server's order, and the one marked `*` (currently selected).
    pub fn hash_algos(&self) -> (Vec<HashAlgo>, Option<HashAlgo>) {
        let Some(params) = self.params("HASH") else {
            return (Vec::new(), None);
        };
        let mut algos = Vec::new();
        let mut selected = None;
        for name in params.split(';') {
            let name = name.trim();
            let (name, star) = match name.strip_suffix('*') {
                Some(n) => (n, true),
                None => (name, false),
            };
            if let Some(a) = HashAlgo::from_name(name) {
                algos.push(a);
                if star {
                    selected = Some(a);
                }
            }
        }
        (algos, selected)
    }

    /// The listed features' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }
}

/// A `213 SHA-256 0-99 <hex> <path>` reply to HASH (draft-bryan-ftpext-hash §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashReply {
    /// Algorithm name as the server wrote it.
    pub algo: String,
    /// First byte hashed.
    pub start: u64,
    /// Last byte hashed (inclusive, as in the draft; `0-0` for an empty file).
    pub end: u64,
    /// Lower-case hex digest.
    pub hex: String,
}

/// Reads a HASH reply's text (after the code).
pub fn parse_hash_reply(text: &str) -> Option<HashReply> {
    let mut words = text.split_whitespace();
    let algo = words.next()?.to_string();
    let (start, end) = words.next()?.split_once('-')?;
    let hex = words.next()?;
    if !is_hex(hex) {
        return None;
    }
    Some(HashReply {
        algo,
        start: start.parse().ok()?,
        end: end.parse().ok()?,
        hex: hex.to_ascii_lowercase(),
    })
}

/// The digest in a reply to XSHA256/XSHA1/XMD5/MD5: the first word of `want_len` hex digits
/// (servers write `250 <hex>`, `250 <hex> <path>` or `251 <path> <hex>`).
pub fn parse_x_hash(text: &str, want_len: usize) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.len() == want_len && is_hex(w))
        .map(str::to_ascii_lowercase)
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(lines: &[&str]) -> Vec<Result<Option<Reply>, ReplyError>> {
        let mut a = ReplyAssembler::new(1024);
        lines.iter().map(|l| a.push(l)).collect()
    }

    #[test]
    fn single_line_replies() {
        let out = frame(&["220 Ferry ready", "331", "230 ok "]);
        assert_eq!(out[0], Ok(Some(Reply::new(220, "Ferry ready"))));
        assert_eq!(out[1], Ok(Some(Reply::new(331, ""))));
        assert_eq!(out[2], Ok(Some(Reply::new(230, "ok "))));
    }

    #[test]
    fn multi_line_reply_keeps_middle_lines_and_ends_on_code_space() {
        let out = frame(&[
            "211-Features:",
            " SIZE",
            "211-not the end",
            "2110 not the end either",
            " MDTM",
            "211 End",
        ]);
        for r in &out[..5] {
            assert_eq!(r, &Ok(None));
        }
        let r = out[5].clone().unwrap().unwrap();
        assert_eq!(r.code, 211);
        assert_eq!(r.text, "Features:");
        assert_eq!(
            r.lines,
            vec![
                " SIZE",
                "211-not the end",
                "2110 not the end either",
                " MDTM"
            ]
        );
        assert_eq!(r.last.as_deref(), Some("End"));
        assert_eq!(
            reply_text(&r),
            "Features: SIZE 211-not the end 2110 not the end either MDTM End"
        );
    }

    #[test]
    fn malformed_and_oversized_replies_are_errors() {
        for bad in [
            "",
            "22",
            "abc def",
            "22x ok",
            "220x",
            "099 no",
            "\u{e9}\u{e9}\u{e9}",
        ] {
            let mut a = ReplyAssembler::new(1024);
            assert!(
                matches!(a.push(bad), Err(ReplyError::Malformed(_))),
                "{bad:?}"
            );
        }
        let mut a = ReplyAssembler::new(100);
        assert_eq!(a.push("211-start"), Ok(None));
        let long = "x".repeat(60);
        assert_eq!(a.push(&long), Ok(None));
        assert_eq!(a.push(&long), Err(ReplyError::TooLong(100)));
        assert!(!a.in_progress());
    }

    #[test]
    fn epsv_table() {
        let cases: &[(&str, Option<u16>)] = &[
            ("Entering Extended Passive Mode (|||6446|)", Some(6446)),
            ("EPSV ok (!!!21000!)", Some(21000)),
            ("(|||1|)", Some(1)),
            ("Entering Extended Passive Mode (|||0|)", None),
            ("Entering Extended Passive Mode (|||65536|)", None),
            ("Entering Extended Passive Mode (||6446|)", None),
            ("Entering Extended Passive Mode |||6446|", None),
            ("(1112221)", None),
            ("(|||x|)", None),
            ("", None),
        ];
        for &(text, want) in cases {
            assert_eq!(parse_epsv(text), want, "{text:?}");
        }
    }

    #[test]
    fn pasv_table() {
        let ip = Ipv4Addr::new(127, 0, 0, 1);
        let cases: &[(&str, Option<(Ipv4Addr, u16)>)] = &[
            ("Entering Passive Mode (127,0,0,1,78,40)", Some((ip, 20008))),
            ("Entering Passive Mode 127,0,0,1,78,40", Some((ip, 20008))),
            ("=127,0,0,1,0,21", Some((ip, 21))),
            (
                "Entering Passive Mode (10,1,2,3,4,5).",
                Some((Ipv4Addr::new(10, 1, 2, 3), 1029)),
            ),
            ("Entering Passive Mode (127,0,0,1,256,1)", None),
            ("Entering Passive Mode (127,0,0,1,78)", None),
            ("no numbers", None),
            ("", None),
        ];
        for &(text, want) in cases {
            assert_eq!(parse_pasv(text), want, "{text:?}");
        }
    }

    #[test]
    fn pwd_table() {
        let cases: &[(&str, Option<&str>)] = &[
            (r#""/" is the current directory"#, Some("/")),
            (r#""/a ""b"" c" created"#, Some(r#"/a "b" c"#)),
            (r#"MKD ok "/päth/ü""#, Some("/päth/ü")),
            (r#""unterminated"#, None),
            ("no quotes", None),
        ];
        for &(text, want) in cases {
            assert_eq!(parse_pwd(text).as_deref(), want, "{text:?}");
        }
    }

    #[test]
    fn numbers_and_times() {
        assert_eq!(parse_number("1234"), Some(1234));
        assert_eq!(parse_number("1234 bytes"), Some(1234));
        assert_eq!(parse_number("-1"), None);
        assert_eq!(parse_number(""), None);
        let t = parse_mdtm("20240102030405.123").unwrap();
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second),
            (2024, 1, 2, 3, 4, 5)
        );
        assert_eq!(parse_mdtm("yesterday"), None);
    }

    #[test]
    fn feat_lists_features_and_hash_algorithms() {
        let r = Reply::multi(
            211,
            "Features:",
            vec![
                " AUTH TLS".into(),
                " HASH SHA-256*;SHA-512;SHA-1;MD5;CRC32;WHIRLPOOL".into(),
                " MLST type*;size*;modify*;".into(),
                " REST STREAM".into(),
                " size".into(),
                "".into(),
            ],
            "End",
        );
        let f = Features::parse(&r);
        assert!(f.has("SIZE") && f.has("mlst") && f.has("REST"));
        assert!(!f.has("MDTM"));
        assert!(f.auth_tls());
        assert_eq!(f.params("REST"), Some("STREAM"));
        assert_eq!(f.params("SIZE"), Some(""));
        let (algos, selected) = f.hash_algos();
        assert_eq!(
            algos,
            vec![
                HashAlgo::Sha256,
                HashAlgo::Sha512,
                HashAlgo::Sha1,
                HashAlgo::Md5,
                HashAlgo::Crc32
            ]
        );
        assert_eq!(selected, Some(HashAlgo::Sha256));
        let none = Features::parse(&Reply::new(211, "no features"));
        assert!(!none.has("HASH") && !none.auth_tls());
        assert_eq!(none.hash_algos(), (Vec::new(), None));
        let ssl_only = Features::parse(&Reply::multi(211, "x", vec![" AUTH SSL".into()], "End"));
        assert!(!ssl_only.auth_tls());
    }

    #[test]
    fn hash_replies() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            parse_hash_reply(&format!("SHA-256 0-99 {hex} /dir/a file.txt")),
            Some(HashReply {
                algo: "SHA-256".into(),
                start: 0,
                end: 99,
                hex: hex.into()
            })
        );
        assert_eq!(
            parse_hash_reply(&format!("SHA-256 0-99 {}", hex.to_uppercase()))
                .unwrap()
                .hex,
            hex
        );
        assert_eq!(parse_hash_reply("SHA-256 0-99 nothex path"), None);
        assert_eq!(parse_hash_reply("SHA-256 99 abcd path"), None);
        assert_eq!(parse_hash_reply(""), None);
        assert_eq!(parse_x_hash(hex, 64).as_deref(), Some(hex));
        assert_eq!(
            parse_x_hash(&format!("/a/b.txt {hex}"), 64).as_deref(),
            Some(hex)
        );
        assert_eq!(
            parse_x_hash("d41d8cd98f00b204e9800998ecf8427e /x", 32).as_deref(),
            Some("d41d8cd98f00b204e9800998ecf8427e")
        );
        assert_eq!(parse_x_hash("d41d8cd98f00b204e9800998ecf8427e", 64), None);
    }

    proptest::proptest! {
        #[test]
        fn readers_never_panic(s in proptest::prelude::any::<String>()) {
            let mut a = ReplyAssembler::new(256);
            let _ = a.push(&s);
            let _ = a.push(&s);
            let _ = parse_epsv(&s);
            let _ = parse_pasv(&s);
            let _ = parse_pwd(&s);
            let _ = parse_mdtm(&s);
            let _ = parse_hash_reply(&s);
            let _ = parse_x_hash(&s, 64);
        }
    }
}
