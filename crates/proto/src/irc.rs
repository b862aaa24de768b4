//! The IRC line codec for the chat service (DESIGN §8): one framed line parsed into a
//! [`Message`] (RFC 1459 §2.3 grammar, RFC 2812 numerics, IRCv3 message tags) and a [`Message`]
//! encoded back to a bounded, injection-free line; plus nick and channel name rules.
//!
//! Hand-written and bounded: a body over [`MAX_LINE`] or a tags section over [`MAX_TAGS`] is an
//! error, never a bigger buffer; encoding never produces a line that parses as two.

/// Bytes of one message, including the CRLF and excluding the tags section (RFC 1459 §2.3).
pub const MAX_LINE: usize = 512;

/// Bytes of the tags section, including the leading `@` and the space after it (IRCv3
/// message-tags).
pub const MAX_TAGS: usize = 8191;

/// Parameters one message may carry (RFC 1459 §2.3); [`parse`] refuses more.
pub const MAX_PARAMS: usize = 15;

/// One IRC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// IRCv3 tags in line order, with unescaped values (`\:` `;`, `\s` space, `\\` `\`, `\r` CR,
    /// `\n` LF). `key` is `None`, `key=` is `Some("")`. Duplicate keys are all kept, in order;
    /// the IRCv3 rule is that the last one wins.
    pub tags: Vec<(String, Option<String>)>,
    /// The source, without the leading `:` (`nick!user@host` or a server name).
    pub prefix: Option<String>,
    /// The command: letters upper-cased (`PRIVMSG`), numerics as given (`001`).
    pub command: String,
    /// The parameters; the trailing parameter is simply the last element.
    pub params: Vec<String>,
}

/// Why a line is not an IRC message.
///
/// The chat server answers [`TooLong`](IrcError::TooLong) and
/// [`TagsTooLong`](IrcError::TagsTooLong) with `417`, [`BadCommand`](IrcError::BadCommand) with
/// `421`, and ignores [`Empty`](IrcError::Empty) lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IrcError {
    /// The line is empty or only spaces.
    #[error("empty line")]
    Empty,
    /// The message without its tags is over [`MAX_LINE`] bytes including CRLF.
    #[error("line too long, at most 512 bytes including CRLF")]
    TooLong,
    /// The tags section is over [`MAX_TAGS`] bytes.
    #[error("message tags too long, at most 8191 bytes")]
    TagsTooLong,
    /// There is no command after the tags and prefix.
    #[error("line has no command")]
    NoCommand,
    /// The command is neither letters nor a three-digit numeric.
    #[error("command must be letters or a three-digit numeric")]
    BadCommand,
    /// The line is not valid UTF-8 (it is reported, not repaired).
    #[error("line is not valid UTF-8")]
    NotUtf8,
    /// The message has more than [`MAX_PARAMS`] parameters.
    #[error("too many parameters, at most 15")]
    TooManyParams,
}

/// Parses one line, given WITHOUT its line ending (the caller frames on LF).
///
/// Lenient where real clients are sloppy: a stray trailing CR (or CRLF) is dropped, runs of spaces
/// separate fields like one space, trailing spaces are ignored, and leading spaces before the
/// prefix or command are skipped. `" :"` gives an empty last parameter, and a middle parameter
/// may contain `:` after its first character. CR, LF and NUL elsewhere are kept as data (the
/// encoder neutralises them). Tags are recognised only at the very start of the line.
pub fn parse(line: &[u8]) -> Result<Message, IrcError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(|&b| b == b' ') {
        return Err(IrcError::Empty);
    }

    let (raw_tags, body) = if line.first() == Some(&b'@') {
        match line.iter().position(|&b| b == b' ') {
            Some(space) if space + 1 > MAX_TAGS => return Err(IrcError::TagsTooLong),
            Some(space) => (&line[1..space], &line[space + 1..]),
            None if line.len() + 1 > MAX_TAGS => return Err(IrcError::TagsTooLong),
            None => return Err(IrcError::NoCommand),
        }
    } else {
        (&b""[..], line)
    };
    if body.len() + 2 > MAX_LINE {
        return Err(IrcError::TooLong);
    }
    let raw_tags = std::str::from_utf8(raw_tags).map_err(|_| IrcError::NotUtf8)?;
    let body = std::str::from_utf8(body).map_err(|_| IrcError::NotUtf8)?;

    let tags = raw_tags
        .split(';')
        .filter_map(|tag| {
            let (key, value) = match tag.split_once('=') {
                Some((key, value)) => (key, Some(unescape_tag_value(value))),
                None => (tag, None),
            };
            (!key.is_empty()).then(|| (key.to_owned(), value))
        })
        .collect();

    let mut rest = body.trim_start_matches(' ');
    let prefix = match rest.strip_prefix(':') {
        Some(after) => {
            let (prefix, after) = after.split_once(' ').unwrap_or((after, ""));
            rest = after.trim_start_matches(' ');
            Some(prefix.to_owned())
        }
        None => None,
    };

    let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
    if command.is_empty() {
        return Err(IrcError::NoCommand);
    }
    let command = if command.bytes().all(|b| b.is_ascii_alphabetic()) {
        command.to_ascii_uppercase()
    } else if command.len() == 3 && command.bytes().all(|b| b.is_ascii_digit()) {
        command.to_owned()
    } else {
        return Err(IrcError::BadCommand);
    };

    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        if params.len() == MAX_PARAMS {
            return Err(IrcError::TooManyParams);
        }
        if let Some(trailing) = rest.strip_prefix(':') {
            params.push(trailing.to_owned());
            break;
        }
        let (middle, after) = rest.split_once(' ').unwrap_or((rest, ""));
        params.push(middle.to_owned());
        rest = after;
    }

    Ok(Message {
        tags,
        prefix,
        command,
        params,
    })
}

impl Message {
    /// A message without tags or prefix; letters in `command` are upper-cased.
    pub fn new(command: &str, params: impl IntoIterator<Item = impl Into<String>>) -> Message {
        Message {
            tags: Vec::new(),
            prefix: None,
            command: command.to_ascii_uppercase(),
            params: params.into_iter().map(Into::into).collect(),
        }
    }

    /// The same message with a source prefix (given without the leading `:`).
    pub fn with_prefix(self, prefix: impl Into<String>) -> Message {
        Message {
            prefix: Some(prefix.into()),
            ..self
        }
    }

    /// Appends `[@tags ][:prefix ]COMMAND params[ :trailing]\r\n` to `out`.
    ///
    /// Always exactly one line that [`parse`] reads back, whatever the fields hold:
    /// - CR, LF and NUL anywhere are replaced by spaces, so no field can start a second line;
    /// - the last parameter gets a `:` if it is empty, contains a space or starts with `:`;
    /// - a non-last parameter that is empty, contains a space or starts with `:` cannot be sent
    ///   as a middle parameter and is replaced by `*` (callers put free text last);
    /// - spaces in the prefix and command, and spaces, `;` and `=` in tag keys, become `_`;
    ///   an empty command is sent as `*`; tags with an empty key are skipped;
    /// - tag values are escaped (IRCv3); tags that would push the tags section past
    ///   [`MAX_TAGS`] bytes are dropped, together with all tags after them;
    /// - the line without its tags is cut to [`MAX_LINE`] bytes including the CRLF, on a UTF-8
    ///   character boundary.
    ///
    /// The encoding parses back to the same message when the fields are already safe: at most
    /// [`MAX_PARAMS`] parameters, a command of letters (upper case) or three digits, and nothing
    /// of the above replaced or cut.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.encode_string().as_bytes());
    }

    /// [`encode`](Message::encode) into a `String`, CRLF included.
    pub fn to_line(&self) -> String {
        self.encode_string()
    }

    /// The `i`-th parameter (0-based), if present.
    pub fn param(&self, i: usize) -> Option<&str> {
        self.params.get(i).map(String::as_str)
    }

    fn encode_string(&self) -> String {
        let mut line = String::with_capacity(MAX_LINE);
        self.write_tags(&mut line);

        let body_start = line.len();
        if let Some(prefix) = &self.prefix {
            line.push(':');
            push_word(&mut line, prefix);
            line.push(' ');
        }
        if self.command.is_empty() {
            line.push('*');
        } else {
            push_word(&mut line, &self.command);
        }
        let last = self.params.len().saturating_sub(1);
        for (i, param) in self.params.iter().enumerate() {
            line.push(' ');
            let needs_colon = param.is_empty()
                || param.starts_with(':')
                || param.contains([' ', '\r', '\n', '\0']);
            if i == last {
                if needs_colon {
                    line.push(':');
                }
                line.extend(param.chars().map(|c| match c {
                    '\r' | '\n' | '\0' => ' ',
                    c => c,
                }));
            } else if needs_colon {
                line.push('*');
            } else {
                line.push_str(param);
            }
        }

        let max = body_start + MAX_LINE - 2;
        if line.len() > max {
            let mut cut = max;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        line.push_str("\r\n");
        line
    }

    /// Writes `@k=v;k2 ` (or nothing when no tag is sendable), at most [`MAX_TAGS`] bytes.
    fn write_tags(&self, line: &mut String) {
        line.push('@');
        let mut tag = String::new();
        for (key, value) in &self.tags {
            if key.is_empty() {
                continue;
            }
            tag.clear();
            tag.extend(key.chars().map(|c| match c {
                ' ' | ';' | '=' | '\r' | '\n' | '\0' => '_',
                c => c,
            }));
            if let Some(value) = value {
                tag.push('=');
                escape_tag_value(&mut tag, value);
            }
            let separator = usize::from(line.len() > 1);
            if line.len() + separator + tag.len() + 1 > MAX_TAGS {
                break;
            }
            if separator == 1 {
                line.push(';');
            }
            line.push_str(&tag);
        }
        if line.len() == 1 {
            line.clear();
        } else {
            line.push(' ');
        }
    }
}

/// Appends a field that must stay one space-free word (prefix, command).
fn push_word(line: &mut String, word: &str) {
    line.extend(word.chars().map(|c| match c {
        ' ' | '\r' | '\n' | '\0' => '_',
        c => c,
    }));
}

/// IRCv3 tag value unescaping: `\:` `\s` `\\` `\r` `\n`; a backslash before any other
/// character is dropped, and so is a lone backslash at the end.
fn unescape_tag_value(raw: &str) -> String {
    let mut value = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            value.push(c);
            continue;
        }
        match chars.next() {
            Some(':') => value.push(';'),
            Some('s') => value.push(' '),
            Some('r') => value.push('\r'),
            Some('n') => value.push('\n'),
            Some(other) => value.push(other),
            None => {}
        }
    }
    value
}

/// IRCv3 tag value escaping; NUL, which has no escape, is sent as an (escaped) space.
fn escape_tag_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            ';' => out.push_str("\\:"),
            ' ' | '\0' => out.push_str("\\s"),
            '\\' => out.push_str("\\\\"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// IRC case-insensitive folding for nick and channel names with `CASEMAPPING=rfc1459`: ASCII
/// letters are lower-cased and `[]\~` fold to `{}|^` (RFC 1459 §2.2 calls `{}|^` the lower
/// case of `[]\~`). Two names are the same name when their folds are equal.
pub fn fold(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '[' => '{',
            ']' => '}',
            '\\' => '|',
            '~' => '^',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Whether `s` is a valid nick: 1 to 32 characters, the first a letter or one of ``[]\`_^{|}``,
/// the rest letters, digits, those, or `-` (RFC 2812 §2.3.1).
///
/// Ferry's nicks are account names (`[A-Za-z0-9._-]`, not starting with `.` or `-`), so this
/// ALSO accepts a digit as the first character and `.` after it, which RFC 2812 does not.
pub fn is_valid_nick(s: &str) -> bool {
    fn special(b: u8) -> bool {
        b"[]\\`_^{|}".contains(&b)
    }
    let bytes = s.as_bytes();
    match bytes.split_first() {
        Some((&first, rest)) => {
            bytes.len() <= 32
                && (first.is_ascii_alphanumeric() || special(first))
                && rest
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || special(b) || b == b'-' || b == b'.')
        }
        None => false,
    }
}

/// Whether `s` is a valid channel name: starts with `#`, 2 to 50 characters, and no space,
/// comma, BEL (0x07), NUL, CR, LF or `:` (RFC 2812 §1.3; `:` because it separates a channel
/// mask).
pub fn is_valid_channel(s: &str) -> bool {
    s.starts_with('#')
        && (2..=50).contains(&s.chars().count())
        && !s.contains([' ', ',', '\x07', '\0', '\r', '\n', ':'])
}

#[cfg(test)]
#[path = "irc_tests.rs"]
mod tests;
