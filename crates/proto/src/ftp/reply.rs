//! FTP reply encoder (RFC 959 §4.2): a code and one or more lines of text.
//!
//! Multi-line replies use the `123-first` … `123 last` form; middle lines are indented by one
//! space so none can be mistaken for the end (RFC 959 §4.2, RFC 2389 FEAT layout).

use std::fmt::Write as _;

/// An FTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit reply code.
    pub code: u16,
    /// First line's text.
    pub text: String,
    /// Middle lines of a multi-line reply (sent indented by one space).
    pub lines: Vec<String>,
    /// Last line's text for a multi-line reply (defaults to "End").
    pub last: Option<String>,
}

impl Reply {
    /// A single-line reply.
    pub fn new(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            text: text.into(),
            lines: Vec::new(),
            last: None,
        }
    }

    /// A multi-line reply with middle lines and a last line.
    pub fn multi(
        code: u16,
        first: impl Into<String>,
        lines: Vec<String>,
        last: impl Into<String>,
    ) -> Reply {
        Reply {
            code,
            text: first.into(),
            lines,
            last: Some(last.into()),
        }
    }

    /// Whether this is a positive completion or preliminary reply (1xx–3xx).
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// Appends the wire form (CRLF line ends) to `out`. CR and LF inside texts are replaced by
    /// spaces so a reply can never be split by data that came from a peer.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut s = String::with_capacity(16 + self.text.len());
        let clean = |t: &str| t.replace(['\r', '\n'], " ");
        match &self.last {
            None => {
                let _ = write!(s, "{} {}\r\n", self.code, clean(&self.text));
            }
            Some(last) => {
                let _ = write!(s, "{}-{}\r\n", self.code, clean(&self.text));
                for line in &self.lines {
                    let _ = write!(s, " {}\r\n", clean(line));
                }
                let _ = write!(s, "{} {}\r\n", self.code, clean(last));
            }
        }
        out.extend_from_slice(s.as_bytes());
    }

    /// The wire form as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_reply_ends_with_crlf() {
        assert_eq!(Reply::new(200, "ok").to_bytes(), b"200 ok\r\n");
    }

    #[test]
    fn multi_line_reply_indents_middle_lines() {
        let r = Reply::multi(211, "Features:", vec!["SIZE".into(), "MDTM".into()], "End");
        assert_eq!(
            r.to_bytes(),
            b"211-Features:\r\n SIZE\r\n MDTM\r\n211 End\r\n"
        );
    }

    #[test]
    fn line_breaks_in_text_cannot_inject_a_reply() {
        let r = Reply::new(550, "no such file: a\r\n200 fake");
        assert_eq!(r.to_bytes(), b"550 no such file: a  200 fake\r\n");
    }
}
