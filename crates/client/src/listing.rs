//! Directory listings: MLSD facts (RFC 3659 §7), and the `ls -l` (Unix) and DOS/IIS formats of
//! LIST that servers without MLSD send. Pure; lines that cannot be read are skipped.

use ferry_proto::ftp::command::Timestamp;

/// What a listed name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (LIST only; its target's kind is unknown).
    Link,
    /// Anything else.
    Other,
}

/// One listed name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name (no directory part).
    pub name: String,
    /// File, directory, link.
    pub kind: Kind,
    /// Size in bytes, if listed.
    pub size: Option<u64>,
    /// Modification time (UTC), from MLSD only.
    pub modified: Option<Timestamp>,
}

/// Parses an MLSD listing: `fact=value;fact=value; name` per line; `cdir`/`pdir` entries dropped.
pub fn parse_mlsd(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|l| parse_mlsd_line(l.strip_suffix('\r').unwrap_or(l)))
        .collect()
}

/// Parses one MLSD/MLST facts line.
pub fn parse_mlsd_line(line: &str) -> Option<Entry> {
    let (facts, name) = line.split_once(' ')?;
    if name.is_empty() || name == "." || name == ".." {
        return None;
    }
    let mut kind = Kind::Other;
    let mut size = None;
    let mut modified = None;
    for fact in facts.split(';') {
        let Some((k, v)) = fact.split_once('=') else {
            continue;
        };
        match k.to_ascii_lowercase().as_str() {
            "type" => {
                let v = v.to_ascii_lowercase();
                kind = match v.as_str() {
                    "file" => Kind::File,
                    "dir" => Kind::Dir,
                    "cdir" | "pdir" => return None,
                    t if t.starts_with("os.unix=symlink") || t.starts_with("os.unix=slink") => {
                        Kind::Link
                    }
                    _ => Kind::Other,
                };
            }
            "size" | "sizd" => size = v.parse().ok(),
            "modify" => modified = Timestamp::parse(v),
            _ => {}
        }
    }
    Some(Entry {
        name: name.to_string(),
        kind,
        size,
        modified,
    })
}

/// Parses a LIST listing in Unix `ls -l` or DOS format; `total N` lines and `.`/`..` dropped.
pub fn parse_list(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|l| parse_list_line(l.strip_suffix('\r').unwrap_or(l)))
        .filter(|e| e.name != "." && e.name != "..")
        .collect()
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// Splits `line` into words with the byte offset each one starts at.
fn words(line: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, &line[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &line[s..]));
    }
    out
}

/// The name after the word at `idx`: the rest of the line after exactly one separator run.
fn rest_after(line: &str, w: &[(usize, &str)], idx: usize) -> Option<String> {
    let (start, word) = w.get(idx)?;
    let after = &line[start + word.len()..];
    let name = after.strip_prefix(' ').map_or_else(
        || after.trim_start(),
        |n| {
            // `ls -l` pads to a column with one space before the name; more spaces are the name's.
            if n.starts_with(' ') {
                n.trim_start()
            } else {
                n
            }
        },
    );
    (!name.is_empty()).then(|| name.to_string())
}

/// Parses one LIST line.
pub fn parse_list_line(line: &str) -> Option<Entry> {
    let w = words(line);
    let first = w.first()?.1;
    if first.eq_ignore_ascii_case("total") {
        return None;
    }
    // DOS/IIS: `01-02-24  10:00AM  <DIR>  name` or `... 1234 name`.
    if first.len() >= 8
        && first.as_bytes()[2] == b'-'
        && first.bytes().filter(u8::is_ascii_digit).count() >= 6
    {
        let (_, third) = *w.get(2)?;
        let name = rest_after(line, &w, 2)?;
        return Some(if third.eq_ignore_ascii_case("<DIR>") {
            Entry {
                name,
                kind: Kind::Dir,
                size: None,
                modified: None,
            }
        } else {
            Entry {
                name,
                kind: Kind::File,
                size: third.parse().ok(),
                modified: None,
            }
        });
    }
    let kind = match first.as_bytes()[0] {
        b'-' => Kind::File,
        b'd' => Kind::Dir,
        b'l' => Kind::Link,
        b'b' | b'c' | b'p' | b's' => Kind::Other,
        _ => return None,
    };
    // Find the month: `SIZE MON DD HH:MM|YYYY NAME`.
    let m = (1..w.len().saturating_sub(3)).find(|&i| {
        MONTHS.contains(&w[i].1.to_ascii_lowercase().as_str())
            && w[i - 1].1.bytes().all(|b| b.is_ascii_digit())
            && w[i + 1].1.bytes().all(|b| b.is_ascii_digit())
    })?;
    let size = w[m - 1].1.parse().ok();
    let mut name = rest_after(line, &w, m + 2)?;
    if kind == Kind::Link {
        if let Some((n, _target)) = name.split_once(" -> ") {
            name = n.to_string();
        }
    }
    Some(Entry {
        name,
        kind,
        size,
        modified: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlsd_table() {
        let text = "type=cdir;modify=20240101000000; .\r\n\
                    type=pdir; ..\r\n\
                    type=file;size=1234;modify=20240102030405;perm=r; a file.txt\r\n\
                    Type=DIR;Modify=20240102030405.5; sub dir\r\n\
                    type=OS.unix=symlink;size=3; link\r\n\
                    size=5; nameless-type\r\n\
                    garbage\r\n\
                    type=file;size=0; 日本語.txt\r\n";
        let e = parse_mlsd(text);
        let got: Vec<(&str, Kind, Option<u64>)> = e
            .iter()
            .map(|e| (e.name.as_str(), e.kind, e.size))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a file.txt", Kind::File, Some(1234)),
                ("sub dir", Kind::Dir, None),
                ("link", Kind::Link, Some(3)),
                ("nameless-type", Kind::Other, Some(5)),
                ("日本語.txt", Kind::File, Some(0)),
            ]
        );
        let t = e[0].modified.unwrap();
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second),
            (2024, 1, 2, 3, 4, 5)
        );
    }

    #[test]
    fn list_unix_table() {
        let text = "total 12\n\
            -rw-r--r--    1 ftp      ftp          1234 Jan 02 03:04 a file.txt\n\
            drwxr-xr-x    2 ftp      ftp          4096 Dec 31  2023 sub\n\
            lrwxrwxrwx    1 0        0               4 Mar  1 10:00 ln -> a file.txt\n\
            -rw-r--r-- 1 owner 99 Feb 29 2024 no-group\n\
            drwxr-xr-x    2 ftp      ftp          4096 Dec 31  2023 .\n\
            -rw-r--r--    1 ftp      ftp             7 Jan 02 03:04  two spaces\n\
            -rw-r--r--    1 ftp      ftp             7 Jan 02 03:04 日本 語\n\
            weird line\n";
        let got: Vec<(String, Kind, Option<u64>)> = parse_list(text)
            .into_iter()
            .map(|e| (e.name, e.kind, e.size))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a file.txt".into(), Kind::File, Some(1234)),
                ("sub".into(), Kind::Dir, Some(4096)),
                ("ln".into(), Kind::Link, Some(4)),
                ("no-group".into(), Kind::File, Some(99)),
                ("two spaces".into(), Kind::File, Some(7)),
                ("日本 語".into(), Kind::File, Some(7)),
            ]
        );
    }

    #[test]
    fn list_dos_table() {
        let text = "01-02-24  10:00AM       <DIR>          Sub Dir\r\n\
                    01-02-24  10:00AM                 1234 file.bin\r\n";
        let got: Vec<(String, Kind, Option<u64>)> = parse_list(text)
            .into_iter()
            .map(|e| (e.name, e.kind, e.size))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Sub Dir".into(), Kind::Dir, None),
                ("file.bin".into(), Kind::File, Some(1234))
            ]
        );
    }
}
