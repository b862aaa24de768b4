//! Reading a shell line: commands separated by `;` outside quotes, each split into words with
//! POSIX shell quoting (`shlex`); `say` and `msg` take the rest of the line as typed (chat text
//! has apostrophes and semicolons). Also the word under the cursor for completion, and the
//! line as the history file keeps it (passwords in URLs removed). Pure.

/// Commands whose text runs to the end of the line, unsplit and unquoted.
const RAW_TEXT: [&str; 2] = ["say", "msg"];

/// Quote state while scanning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

/// The first word of `s` (up to whitespace) and what follows it.
fn first_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

/// Byte offset of the first `;` in `s` outside quotes (or `s.len()`), and whether a quote is
/// still open there.
fn segment_end(s: &str) -> (usize, bool) {
    let mut q = Quote::None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match (q, c) {
            (Quote::None | Quote::Double, '\\') => escaped = true,
            (Quote::None, '\'') => q = Quote::Single,
            (Quote::None, '"') => q = Quote::Double,
            (Quote::Single, '\'') | (Quote::Double, '"') => q = Quote::None,
            (Quote::None, ';') => return (i, false),
            _ => {}
        }
    }
    (s.len(), q != Quote::None || escaped)
}

/// Splits a line into commands, each a list of words. `say TEXT` gives `["say", TEXT]` and
/// `msg NICK TEXT` gives `["msg", NICK, TEXT]`, TEXT as typed. Empty commands (`;;`) are dropped.
pub fn commands(line: &str) -> Result<Vec<Vec<String>>, String> {
    let mut out = Vec::new();
    let mut rest = line;
    while !rest.trim().is_empty() {
        let (word, after) = first_word(rest);
        if RAW_TEXT.contains(&word) {
            let mut words = vec![word.to_string()];
            let mut text = after.trim();
            if word == "msg" {
                let (nick, after) = first_word(text);
                if !nick.is_empty() {
                    words.push(nick.to_string());
                }
                text = after.trim();
            }
            if !text.is_empty() {
                words.push(text.to_string());
            }
            out.push(words);
            break;
        }
        let (end, open) = segment_end(rest);
        if open {
            return Err(
                "unterminated quote or trailing backslash: close it, or quote the whole word"
                    .into(),
            );
        }
        let segment = &rest[..end];
        let words = shlex::split(segment)
            .ok_or_else(|| format!("cannot split {:?} into words", segment.trim()))?;
        if !words.is_empty() {
            out.push(words);
        }
        rest = rest.get(end + 1..).unwrap_or("");
    }
    Ok(out)
}

/// The word being typed at the cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Byte offset where the word starts (its quotes included).
    pub start: usize,
    /// The word so far, unquoted.
    pub word: String,
    /// The words of the same command before it.
    pub before: Vec<String>,
}

/// Finds the word under the cursor at byte `pos` of `line`, within its `;`-separated command.
pub fn cursor(line: &str, pos: usize) -> Cursor {
    let upto = line.get(..pos).unwrap_or(line);
    let mut before: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut start = 0usize;
    let mut in_word = false;
    let mut q = Quote::None;
    let mut escaped = false;
    for (i, c) in upto.char_indices() {
        if escaped {
            escaped = false;
            word.push(c);
            continue;
        }
        match (q, c) {
            (Quote::None | Quote::Double, '\\') => {
                escaped = true;
                if !in_word {
                    in_word = true;
                    start = i;
                }
            }
            (Quote::None, '\'') | (Quote::None, '"') => {
                q = if c == '\'' {
                    Quote::Single
                } else {
                    Quote::Double
                };
                if !in_word {
                    in_word = true;
                    start = i;
                }
            }
            (Quote::Single, '\'') | (Quote::Double, '"') => q = Quote::None,
            (Quote::None, ';') => {
                before.clear();
                word.clear();
                in_word = false;
            }
            (Quote::None, c) if c.is_whitespace() => {
                if in_word {
                    before.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (_, c) => {
                if !in_word {
                    in_word = true;
                    start = i;
                }
                word.push(c);
            }
        }
    }
    if !in_word {
        start = upto.len();
    }
    Cursor {
        start,
        word,
        before,
    }
}

/// `s` as one shell word: backslashes before the characters the splitter would take apart.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_whitespace() || "\\'\";#|&<>()$`*?[]{}!~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The line as the history file keeps it: `scheme://user:password@` becomes `scheme://user@`.
pub fn redact(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let end = rest
            .find(|c: char| c == '/' || c.is_whitespace())
            .unwrap_or(rest.len());
        let authority = &rest[..end];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            if let Some(colon) = userinfo.find(':') {
                out.push_str(&userinfo[..colon]);
                rest = &rest[at..];
                continue;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmds(line: &str) -> Vec<Vec<String>> {
        commands(line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn semicolons_separate_commands_outside_quotes() {
        assert_eq!(
            cmds("mkdir d; cd d;put f ;ls"),
            [
                vec!["mkdir", "d"],
                vec!["cd", "d"],
                vec!["put", "f"],
                vec!["ls"]
            ]
        );
        assert_eq!(
            cmds("put 'a;b' \"c;d\" e\\;f"),
            [vec!["put", "a;b", "c;d", "e;f"]]
        );
        assert_eq!(cmds(";; ls ;"), [vec!["ls"]]);
        assert_eq!(cmds("get 'my file.txt'"), [vec!["get", "my file.txt"]]);
        assert_eq!(cmds("get \"it's\""), [vec!["get", "it's"]]);
        assert!(cmds("   ").is_empty());
    }

    #[test]
    fn chat_text_is_taken_as_typed() {
        assert_eq!(
            cmds("cd d; say it's done; really"),
            [vec!["cd", "d"], vec!["say", "it's done; really"]]
        );
        assert_eq!(
            cmds("msg bob  hi 'there'"),
            [vec!["msg", "bob", "hi 'there'"]]
        );
        assert_eq!(cmds("msg"), [vec!["msg"]]);
        assert_eq!(cmds("say"), [vec!["say"]]);
        assert_eq!(cmds("sayer x"), [vec!["sayer", "x"]]);
    }

    #[test]
    fn unbalanced_quotes_are_an_error() {
        assert!(commands("get 'open").is_err());
        assert!(commands("get \"open; ls").is_err());
        assert!(commands("get trailing\\").is_err());
    }

    #[test]
    fn the_word_under_the_cursor() {
        let c = cursor("get d/fi", 8);
        assert_eq!(
            (c.start, c.word.as_str(), c.before.clone()),
            (4, "d/fi", vec!["get".to_string()])
        );
        let c = cursor("ls; get ", 8);
        assert_eq!(
            (c.start, c.word.as_str(), c.before.clone()),
            (8, "", vec!["get".to_string()])
        );
        let c = cursor("put 'my fi", 10);
        assert_eq!((c.start, c.word.as_str()), (4, "my fi"));
        let c = cursor("put my\\ fi", 10);
        assert_eq!((c.start, c.word.as_str()), (4, "my fi"));
        let c = cursor("pw", 2);
        assert_eq!((c.start, c.word.as_str(), c.before.len()), (0, "pw", 0));
        let c = cursor("", 0);
        assert_eq!((c.start, c.word.as_str()), (0, ""));
    }

    #[test]
    fn escaped_words_split_back_to_themselves() {
        for name in [
            "plain",
            "with space",
            "it's",
            "semi;colon",
            "a\"b",
            "#hash",
            "back\\slash",
        ] {
            let line = format!("get {}", escape(name));
            assert_eq!(
                cmds(&line),
                [vec!["get".to_string(), name.to_string()]],
                "{line}"
            );
        }
    }

    #[test]
    fn passwords_are_kept_out_of_the_history() {
        assert_eq!(
            redact("open ftp://alice:s3cret@h:21/x"),
            "open ftp://alice@h:21/x"
        );
        assert_eq!(redact("open ftp://a:p@w@h/"), "open ftp://a@h/");
        assert_eq!(
            redact("open ftp://alice@h/ ; open ftps://b:c@g"),
            "open ftp://alice@h/ ; open ftps://b@g"
        );
        assert_eq!(redact("ls a:b@c"), "ls a:b@c");
        assert_eq!(redact("open ftp://h:2121"), "open ftp://h:2121");
    }
}
