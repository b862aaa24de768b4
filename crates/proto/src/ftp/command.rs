//! FTP command parser: one control line (without its CRLF) to a typed [`Command`].
//!
//! Pure and total: any byte string gives a `Command` or a `ParseError`, never a panic.
//! Verbs are case-insensitive (RFC 959 §5.3); the X* aliases of RFC 775 map to the same
//! variants as their modern names. Telnet IAC sequences (sent by clients before ABOR, RFC 959
//! §4.1.3) are stripped before parsing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

/// A parsed FTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `USER name` (RFC 959 §4.1.1).
    User(String),
    /// `PASS password`; an empty password is allowed.
    Pass(String),
    /// `ACCT` — not supported (502).
    Acct,
    /// `QUIT`.
    Quit,
    /// `REIN`: log out, keep the connection.
    Rein,
    /// `NOOP`.
    Noop,
    /// `SYST`.
    Syst,
    /// `FEAT` (RFC 2389).
    Feat,
    /// `OPTS name [value]` (RFC 2389).
    Opts(Opts),
    /// `HELP [topic]`.
    Help(Option<String>),
    /// `STAT [path]`: server status, or a listing of `path` over the control connection.
    Stat(Option<String>),
    /// `SITE ...`.
    Site(Site),
    /// `CWD path` / `XCWD path`.
    Cwd(String),
    /// `CDUP` / `XCUP`.
    Cdup,
    /// `PWD` / `XPWD`.
    Pwd,
    /// `MKD path` / `XMKD path`.
    Mkd(String),
    /// `RMD path` / `XRMD path`.
    Rmd(String),
    /// `DELE path`.
    Dele(String),
    /// `RNFR path`.
    Rnfr(String),
    /// `RNTO path`.
    Rnto(String),
    /// `SIZE path` (RFC 3659 §4).
    Size(String),
    /// `MDTM path` (RFC 3659 §3).
    Mdtm(String),
    /// `MFMT YYYYMMDDHHMMSS path` (draft-somers-ftp-mfxx).
    Mfmt {
        /// Modification time to set, UTC.
        time: Timestamp,
        /// File to change.
        path: String,
    },
    /// `LIST [-flags] [path]`.
    List(ListArgs),
    /// `NLST [-flags] [path]`.
    Nlst(ListArgs),
    /// `MLSD [path]` (RFC 3659 §7).
    Mlsd(Option<String>),
    /// `MLST [path]` (RFC 3659 §7).
    Mlst(Option<String>),
    /// `TYPE A|I|L 8 ...`.
    Type(TransferType),
    /// `MODE S` (only stream mode is supported; others are `BadParam`).
    Mode(char),
    /// `STRU F` (only file structure is supported).
    Stru(char),
    /// `PASV`.
    Pasv,
    /// `EPSV [1|2|ALL]` (RFC 2428 §3).
    Epsv(EpsvArg),
    /// `PORT h1,h2,h3,h4,p1,p2`.
    Port(SocketAddrV4),
    /// `EPRT |proto|addr|port|` (RFC 2428 §2).
    Eprt(SocketAddr),
    /// `RETR path`.
    Retr(String),
    /// `STOR path`.
    Stor(String),
    /// `STOU [name hint]`.
    Stou(Option<String>),
    /// `APPE path`.
    Appe(String),
    /// `REST offset` (RFC 3659 §5, stream mode).
    Rest(u64),
    /// `ALLO n [R m]`: accepted, no-op (202) — space is reserved as the upload grows.
    Allo(u64),
    /// `ABOR`.
    Abor,
    /// `AUTH mechanism` (RFC 4217).
    Auth(String),
    /// `PBSZ n` (RFC 4217).
    Pbsz(String),
    /// `PROT level` (RFC 4217).
    Prot(char),
    /// `CCC` (RFC 4217).
    Ccc,
    /// `HASH path` (draft-bryan-ftpext-hash).
    Hash(String),
    /// `RANG start end` (draft-bryan-ftpext-hash), or `RANG 1 0` to reset.
    Rang(u64, u64),
    /// `XMD5`/`XSHA1`/`XSHA256`/`XSHA512`/`XCRC path` and `MD5 path`.
    XHash {
        /// Which algorithm.
        algo: HashAlgo,
        /// File to hash.
        path: String,
        /// The `MD5` command (reply 251 with the name) rather than an X* command (250).
        md5_cmd: bool,
    },
    /// `AVBL [path]` (draft-peterson-streamlined-ftp-command-extensions).
    Avbl(Option<String>),
    /// A verb that is known (RFC 959) but not implemented, e.g. `SMNT` (502).
    NotImplemented(String),
}

/// `OPTS` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opts {
    /// `OPTS UTF8 ON|OFF` (value `true` for ON).
    Utf8(bool),
    /// `OPTS MLST fact;fact;...` (facts lower-cased, may be empty).
    Mlst(Vec<String>),
    /// `OPTS HASH [algo]`: query (None) or select an algorithm by its FEAT name.
    Hash(Option<String>),
    /// Any other option name (answered 501).
    Other(String),
}

/// `SITE` subcommands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Site {
    /// `SITE QUOTA`.
    Quota,
    /// `SITE HELP`.
    Help,
    /// `SITE WHO` (who is online).
    Who,
    /// Anything else (answered 504 with the list of known subcommands).
    Other(String),
}

/// `LIST`/`NLST` arguments: `ls`-style flags are accepted and mostly ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListArgs {
    /// Flags given as `-la` etc. (letters only, without the dashes).
    pub flags: String,
    /// Path argument, if any.
    pub path: Option<String>,
}

/// Representation type (RFC 959 §3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferType {
    /// `TYPE A [N]`.
    Ascii,
    /// `TYPE I` or `TYPE L 8`.
    Image,
}

/// `EPSV` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpsvArg {
    /// No argument: use the control connection's protocol.
    Any,
    /// `EPSV 1` (IPv4) or `EPSV 2` (IPv6).
    Proto(u8),
    /// `EPSV ALL`: only EPSV from now on.
    All,
}

/// Digest algorithms of HASH and the X* commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgo {
    /// SHA-256 (the default).
    Sha256,
    /// SHA-512.
    Sha512,
    /// SHA-1.
    Sha1,
    /// MD5.
    Md5,
    /// CRC32 (IEEE).
    Crc32,
}

impl HashAlgo {
    /// All algorithms, in FEAT order.
    pub const ALL: [HashAlgo; 5] = [
        HashAlgo::Sha256,
        HashAlgo::Sha512,
        HashAlgo::Sha1,
        HashAlgo::Md5,
        HashAlgo::Crc32,
    ];

    /// Name as used by HASH/FEAT (`SHA-256`, ...).
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Sha256 => "SHA-256",
            HashAlgo::Sha512 => "SHA-512",
            HashAlgo::Sha1 => "SHA-1",
            HashAlgo::Md5 => "MD5",
            HashAlgo::Crc32 => "CRC32",
        }
    }

    /// Looks an algorithm up by its HASH name, case-insensitively.
    pub fn from_name(name: &str) -> Option<HashAlgo> {
        HashAlgo::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }
}

/// A UTC timestamp as carried by MFMT/MDTM (`YYYYMMDDHHMMSS[.sss]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Year, 1970..=9999.
    pub year: u16,
    /// Month, 1..=12.
    pub month: u8,
    /// Day, 1..=31 (validated against the month).
    pub day: u8,
    /// Hour, 0..=23.
    pub hour: u8,
    /// Minute, 0..=59.
    pub minute: u8,
    /// Second, 0..=60.
    pub second: u8,
}

impl Timestamp {
    /// Parses `YYYYMMDDHHMMSS` with an optional `.fraction` (ignored).
    pub fn parse(s: &str) -> Option<Timestamp> {
        let main = s.split_once('.').map_or(s, |(m, frac)| {
            if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
                ""
            } else {
                m
            }
        });
        if main.len() != 14 || !main.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let num = |r: std::ops::Range<usize>| main[r].parse::<u16>().ok();
        let ts = Timestamp {
            year: num(0..4)?,
            month: num(4..6)? as u8,
            day: num(6..8)? as u8,
            hour: num(8..10)? as u8,
            minute: num(10..12)? as u8,
            second: num(12..14)? as u8,
        };
        let leap = ts.year % 4 == 0 && (ts.year % 100 != 0 || ts.year % 400 == 0);
        let days_in_month = match ts.month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        let valid = (1970..=9999).contains(&ts.year)
            && (1..=days_in_month).contains(&ts.day)
            && ts.hour < 24
            && ts.minute < 60
            && ts.second <= 60;
        valid.then_some(ts)
    }

    /// Seconds since the Unix epoch.
    pub fn unix_seconds(&self) -> i64 {
        // Days from civil, Howard Hinnant's algorithm.
        let (y, m) = if self.month <= 2 {
            (i64::from(self.year) - 1, i64::from(self.month) + 9)
        } else {
            (i64::from(self.year), i64::from(self.month) - 3)
        };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * m + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

/// Why a line is not a valid command; each maps to one reply code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Empty line (500).
    #[error("empty command line")]
    Empty,
    /// Unknown verb (500).
    #[error("unknown command {0}")]
    Unknown(String),
    /// The verb needs an argument that is missing (501).
    #[error("{0} needs an argument")]
    MissingArg(&'static str),
    /// The argument is malformed (501).
    #[error("bad argument to {verb}: {why}")]
    BadArg {
        /// The verb.
        verb: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// The parameter is well-formed but not supported, e.g. `MODE B` (504).
    #[error("{0} parameter not supported")]
    BadParam(&'static str),
    /// The line is not valid UTF-8 (501).
    #[error("command line is not valid UTF-8")]
    NotUtf8,
    /// EPSV/EPRT named a network protocol other than 1 (IPv4) or 2 (IPv6) (522, RFC 2428).
    #[error("network protocol not supported, use (1,2)")]
    NetProto,
}

/// Strips telnet IAC sequences (`IAC x` for a command byte x ≥ 240 is dropped, `IAC IAC` is a
/// literal 255, a lone IAC is dropped). UTF-8 never contains 0xFF, so names are unaffected.
fn strip_telnet(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    const IAC: u8 = 0xFF;
    if !line.contains(&IAC) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        if line[i] == IAC {
            match line.get(i + 1) {
                Some(&IAC) => {
                    out.push(IAC);
                    i += 2;
                }
                Some(&b) if b >= 0xF0 => {
                    // Option negotiation (WILL/WONT/DO/DONT) carries one more byte.
                    i += if (0xFB..=0xFE).contains(&b) { 3 } else { 2 };
                }
                _ => i += 1,
            }
        } else {
            out.push(line[i]);
            i += 1;
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Parses one command line (CRLF or LF already removed).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let line = strip_telnet(line);
    let line = std::str::from_utf8(&line).map_err(|_| ParseError::NotUtf8)?;
    // Some clients send a trailing CR only, or spaces before the verb.
    let line = line.trim_start_matches([' ', '\r']).trim_end_matches('\r');
    if line.is_empty() {
        return Err(ParseError::Empty);
    }
    let (verb, arg) = match line.split_once(' ') {
        Some((v, a)) => (v, a),
        None => (line, ""),
    };
    if verb.len() > 8 || !verb.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ParseError::Unknown(truncate(verb)));
    }
    let verb_upper = verb.to_ascii_uppercase();
    parse_verb(&verb_upper, arg)
}

fn truncate(s: &str) -> String {
    let mut end = s.len().min(32);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn required(verb: &'static str, arg: &str) -> Result<String, ParseError> {
    if arg.trim().is_empty() {
        Err(ParseError::MissingArg(verb))
    } else {
        Ok(arg.to_string())
    }
}

fn optional(arg: &str) -> Option<String> {
    let arg = arg.trim();
    (!arg.is_empty()).then(|| arg.to_string())
}

fn no_arg(cmd: Command) -> Result<Command, ParseError> {
    Ok(cmd)
}

fn parse_verb(verb: &str, arg: &str) -> Result<Command, ParseError> {
    use Command as C;
    match verb {
        "USER" => {
            required("USER", arg.trim_matches(|c: char| c.is_ascii_whitespace())).map(C::User)
        }
        "PASS" => Ok(C::Pass(arg.to_string())),
        "ACCT" => no_arg(C::Acct),
        "QUIT" => no_arg(C::Quit),
        "REIN" => no_arg(C::Rein),
        "NOOP" => no_arg(C::Noop),
        "SYST" => no_arg(C::Syst),
        "FEAT" => no_arg(C::Feat),
        "OPTS" => parse_opts(arg).map(C::Opts),
        "HELP" => Ok(C::Help(optional(arg))),
        "STAT" => Ok(C::Stat(optional(arg))),
        "SITE" => parse_site(arg).map(C::Site),
        "CWD" | "XCWD" => required("CWD", arg).map(C::Cwd),
        "CDUP" | "XCUP" => no_arg(C::Cdup),
        "PWD" | "XPWD" => no_arg(C::Pwd),
        "MKD" | "XMKD" => required("MKD", arg).map(C::Mkd),
        "RMD" | "XRMD" => required("RMD", arg).map(C::Rmd),
        "DELE" => required("DELE", arg).map(C::Dele),
        "RNFR" => required("RNFR", arg).map(C::Rnfr),
        "RNTO" => required("RNTO", arg).map(C::Rnto),
        "SIZE" => required("SIZE", arg).map(C::Size),
        "MDTM" => required("MDTM", arg).map(C::Mdtm),
        "MFMT" => parse_mfmt(arg),
        "LIST" => Ok(C::List(parse_list_args(arg))),
        "NLST" => Ok(C::Nlst(parse_list_args(arg))),
        "MLSD" => Ok(C::Mlsd(optional(arg))),
        "MLST" => Ok(C::Mlst(optional(arg))),
        "TYPE" => parse_type(arg).map(C::Type),
        "MODE" => parse_single_char("MODE", arg, 'S').map(C::Mode),
        "STRU" => parse_single_char("STRU", arg, 'F').map(C::Stru),
        "PASV" => no_arg(C::Pasv),
        "EPSV" => parse_epsv(arg).map(C::Epsv),
        "PORT" => parse_port(arg).map(C::Port),
        "EPRT" => parse_eprt(arg).map(C::Eprt),
        "RETR" => required("RETR", arg).map(C::Retr),
        "STOR" => required("STOR", arg).map(C::Stor),
        "STOU" => Ok(C::Stou(optional(arg))),
        "APPE" => required("APPE", arg).map(C::Appe),
        "REST" => parse_u64("REST", arg).map(C::Rest),
        "ALLO" => parse_allo(arg).map(C::Allo),
        "ABOR" => no_arg(C::Abor),
        "AUTH" => required("AUTH", arg.trim_matches(|c: char| c.is_ascii_whitespace()))
            .map(|m| C::Auth(m.to_ascii_uppercase())),
        "PBSZ" => required("PBSZ", arg.trim()).map(C::Pbsz),
        "PROT" => parse_prot(arg).map(C::Prot),
        "CCC" => no_arg(C::Ccc),
        "HASH" => required("HASH", arg).map(C::Hash),
        "RANG" => parse_rang(arg),
        "XMD5" => xhash(HashAlgo::Md5, "XMD5", arg, false),
        "XSHA" | "XSHA1" => xhash(HashAlgo::Sha1, "XSHA1", arg, false),
        "XSHA256" => xhash(HashAlgo::Sha256, "XSHA256", arg, false),
        "XSHA512" => xhash(HashAlgo::Sha512, "XSHA512", arg, false),
        "XCRC" => xhash(HashAlgo::Crc32, "XCRC", arg, false),
        "MD5" => xhash(HashAlgo::Md5, "MD5", arg, true),
        "AVBL" => Ok(C::Avbl(optional(arg))),
        "SMNT" => Ok(C::NotImplemented(verb.to_string())),
        _ => Err(ParseError::Unknown(verb.to_string())),
    }
}

fn xhash(
    algo: HashAlgo,
    verb: &'static str,
    arg: &str,
    md5_cmd: bool,
) -> Result<Command, ParseError> {
    // Some clients append "start end" to X* commands; only the path is used, so two trailing
    // numbers are dropped (a name that really ends in two numbers must be quoted by RANG+HASH).
    let mut path = required(verb, arg)?;
    let words: Vec<&str> = path.rsplitn(3, ' ').collect();
    if words.len() == 3
        && words[..2]
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()))
    {
        path = words[2].trim_end_matches([' ', ',']).to_string();
    }
    Ok(Command::XHash {
        algo,
        path,
        md5_cmd,
    })
}

fn parse_opts(arg: &str) -> Result<Opts, ParseError> {
    let arg = arg.trim();
    let (name, value) = match arg.split_once(' ') {
        Some((n, v)) => (n, v.trim()),
        None => (arg, ""),
    };
    if name.is_empty() {
        return Err(ParseError::MissingArg("OPTS"));
    }
    match name.to_ascii_uppercase().as_str() {
        "UTF8" | "UTF-8" => match value.to_ascii_uppercase().as_str() {
            "ON" | "" => Ok(Opts::Utf8(true)),
            "OFF" => Ok(Opts::Utf8(false)),
            _ => Err(ParseError::BadArg {
                verb: "OPTS UTF8",
                why: "expected ON or OFF",
            }),
        },
        "MLST" => Ok(Opts::Mlst(
            value
                .split(';')
                .filter(|f| !f.is_empty())
                .map(|f| f.to_ascii_lowercase())
                .collect(),
        )),
        "HASH" => Ok(Opts::Hash(optional(value))),
        _ => Ok(Opts::Other(truncate(name))),
    }
}

fn parse_site(arg: &str) -> Result<Site, ParseError> {
    let arg = arg.trim();
    if arg.is_empty() {
        return Err(ParseError::MissingArg("SITE"));
    }
    let sub = arg
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    Ok(match sub.as_str() {
        "QUOTA" => Site::Quota,
        "HELP" => Site::Help,
        "WHO" => Site::Who,
        _ => Site::Other(truncate(&sub)),
    })
}

fn parse_list_args(arg: &str) -> ListArgs {
    let mut flags = String::new();
    let mut rest = arg.trim_start();
    // Leading "-la"-style words are flags (as ls takes them), the remainder is the path.
    while let Some(word) = rest.strip_prefix('-') {
        let (w, r) = word.split_once(' ').unwrap_or((word, ""));
        if w.is_empty() || !w.bytes().all(|b| b.is_ascii_alphabetic()) {
            break;
        }
        flags.push_str(w);
        rest = r.trim_start();
    }
    ListArgs {
        flags,
        path: optional(rest),
    }
}

fn parse_type(arg: &str) -> Result<TransferType, ParseError> {
    let mut words = arg.split_whitespace();
    let first = words.next().ok_or(ParseError::MissingArg("TYPE"))?;
    let second = words.next();
    match (
        first.to_ascii_uppercase().as_str(),
        second.map(str::to_ascii_uppercase).as_deref(),
    ) {
        ("A", None | Some("N")) => Ok(TransferType::Ascii),
        ("I", None) => Ok(TransferType::Image),
        ("L", Some("8")) => Ok(TransferType::Image),
        ("A" | "E", Some("T" | "C")) | ("E", _) | ("L", _) => Err(ParseError::BadParam("TYPE")),
        _ => Err(ParseError::BadArg {
            verb: "TYPE",
            why: "expected A, I or L 8",
        }),
    }
}

fn parse_single_char(verb: &'static str, arg: &str, supported: char) -> Result<char, ParseError> {
    let arg = arg.trim();
    let mut chars = arg.chars();
    match (chars.next(), chars.next()) {
        (None, _) => Err(ParseError::MissingArg(verb)),
        (Some(c), None) if c.to_ascii_uppercase() == supported => Ok(supported),
        (Some(c), None) if c.is_ascii_alphabetic() => Err(ParseError::BadParam(verb)),
        _ => Err(ParseError::BadArg {
            verb,
            why: "expected a single letter",
        }),
    }
}

fn parse_u64(verb: &'static str, arg: &str) -> Result<u64, ParseError> {
    let arg = arg.trim();
    if arg.is_empty() {
        return Err(ParseError::MissingArg(verb));
    }
    if !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadArg {
            verb,
            why: "expected a non-negative number",
        });
    }
    arg.parse().map_err(|_| ParseError::BadArg {
        verb,
        why: "number too large",
    })
}

fn parse_allo(arg: &str) -> Result<u64, ParseError> {
    let first = arg.split_whitespace().next().unwrap_or("");
    parse_u64("ALLO", first)
}

fn parse_epsv(arg: &str) -> Result<EpsvArg, ParseError> {
    match arg.trim().to_ascii_uppercase().as_str() {
        "" => Ok(EpsvArg::Any),
        "ALL" => Ok(EpsvArg::All),
        "1" => Ok(EpsvArg::Proto(1)),
        "2" => Ok(EpsvArg::Proto(2)),
        p if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Err(ParseError::NetProto)
        }
        _ => Err(ParseError::BadArg {
            verb: "EPSV",
            why: "expected 1, 2 or ALL",
        }),
    }
}

fn parse_port(arg: &str) -> Result<SocketAddrV4, ParseError> {
    const BAD: ParseError = ParseError::BadArg {
        verb: "PORT",
        why: "expected h1,h2,h3,h4,p1,p2",
    };
    let arg = arg.trim();
    if arg.is_empty() {
        return Err(ParseError::MissingArg("PORT"));
    }
    let mut nums = [0u8; 6];
    let mut parts = arg.split(',');
    for n in &mut nums {
        let part = parts.next().ok_or(BAD)?.trim();
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BAD);
        }
        *n = part.parse().map_err(|_| BAD)?;
    }
    if parts.next().is_some() {
        return Err(BAD);
    }
    let ip = Ipv4Addr::new(nums[0], nums[1], nums[2], nums[3]);
    let port = u16::from(nums[4]) << 8 | u16::from(nums[5]);
    Ok(SocketAddrV4::new(ip, port))
}

fn parse_eprt(arg: &str) -> Result<SocketAddr, ParseError> {
    const BAD: ParseError = ParseError::BadArg {
        verb: "EPRT",
        why: "expected |proto|address|port|",
    };
    let arg = arg.trim();
    if arg.is_empty() {
        return Err(ParseError::MissingArg("EPRT"));
    }
    let delim = arg.chars().next().ok_or(BAD)?;
    if !(33..=126).contains(&(delim as u32)) || delim.is_ascii_digit() {
        return Err(BAD);
    }
    let fields: Vec<&str> = arg.split(delim).collect();
    // "|1|1.2.3.4|5|" splits into ["", "1", "1.2.3.4", "5", ""].
    if fields.len() != 5 || !fields[0].is_empty() || !fields[4].is_empty() {
        return Err(BAD);
    }
    if fields[3].is_empty() || !fields[3].bytes().all(|b| b.is_ascii_digit()) {
        return Err(BAD);
    }
    let port: u16 = fields[3].parse().map_err(|_| BAD)?;
    let ip: IpAddr = match fields[1] {
        "1" => IpAddr::V4(fields[2].parse().map_err(|_| BAD)?),
        "2" => IpAddr::V6(fields[2].parse().map_err(|_| BAD)?),
        p if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(ParseError::NetProto)
        }
        _ => return Err(BAD),
    };
    Ok(SocketAddr::new(ip, port))
}

fn parse_prot(arg: &str) -> Result<char, ParseError> {
    let arg = arg.trim().to_ascii_uppercase();
    match arg.as_str() {
        "" => Err(ParseError::MissingArg("PROT")),
        "C" | "S" | "E" | "P" => Ok(arg.chars().next().unwrap_or('C')),
        _ => Err(ParseError::BadArg {
            verb: "PROT",
            why: "expected C, S, E or P",
        }),
    }
}

fn parse_mfmt(arg: &str) -> Result<Command, ParseError> {
    let arg = arg.trim_start();
    let (time, path) = arg.split_once(' ').ok_or(if arg.is_empty() {
        ParseError::MissingArg("MFMT")
    } else {
        ParseError::BadArg {
            verb: "MFMT",
            why: "expected YYYYMMDDHHMMSS and a path",
        }
    })?;
    let time = Timestamp::parse(time).ok_or(ParseError::BadArg {
        verb: "MFMT",
        why: "expected time as YYYYMMDDHHMMSS",
    })?;
    if path.is_empty() {
        return Err(ParseError::MissingArg("MFMT"));
    }
    Ok(Command::Mfmt {
        time,
        path: path.to_string(),
    })
}

fn parse_rang(arg: &str) -> Result<Command, ParseError> {
    let mut words = arg.split_whitespace();
    let (Some(a), Some(b), None) = (words.next(), words.next(), words.next()) else {
        return Err(if arg.trim().is_empty() {
            ParseError::MissingArg("RANG")
        } else {
            ParseError::BadArg {
                verb: "RANG",
                why: "expected start and end byte",
            }
        });
    };
    let start = parse_u64("RANG", a)?;
    let end = parse_u64("RANG", b)?;
    // "RANG 1 0" resets; otherwise the end must not precede the start.
    if end < start && !(start == 1 && end == 0) {
        return Err(ParseError::BadArg {
            verb: "RANG",
            why: "end byte precedes start byte",
        });
    }
    Ok(Command::Rang(start, end))
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
