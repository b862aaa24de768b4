//! Virtual paths: the client's view of its home, normalised so that no input can name anything
//! outside the jail root, a NUL, an over-long path or one of the server's reserved `.ferry-` files.

use std::fmt;

/// Longest normalised path, in bytes (including every leading `/`).
pub const MAX_PATH_LEN: usize = 1024;

/// Longest single path component, in bytes (the usual file-system `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;

/// Prefix of the names the server keeps for its own files (partial uploads and the like).
///
/// A component starting with it (compared ASCII case-insensitively, so that case-insensitive file
/// systems cannot be used to reach them) is never addressable by a client.
pub const RESERVED_PREFIX: &str = ".ferry-";

/// Why a client path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The input contains a NUL byte, which no file-system path may hold.
    #[error("path contains a NUL byte")]
    Nul,
    /// The normalised path is longer than [`MAX_PATH_LEN`] bytes.
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    /// One component is longer than [`MAX_NAME_LEN`] bytes.
    #[error("file name is longer than {MAX_NAME_LEN} bytes")]
    NameTooLong,
    /// A component starts with [`RESERVED_PREFIX`].
    #[error("names starting with {RESERVED_PREFIX:?} are reserved by the server")]
    Reserved,
    /// The input contains a line break or another control character (tab is allowed), which would corrupt
    /// listings and replies.
    #[error("path contains a control character")]
    Control,
}

/// A normalised absolute path inside a user's home, which is its `/`.
///
/// Invariant: either `/` or `/a/b…` — absolute, no trailing `/`, no empty, `.` or `..`
/// components, no NUL, no component starting with [`RESERVED_PREFIX`], at most [`MAX_PATH_LEN`]
/// bytes with components of at most [`MAX_NAME_LEN`] bytes. The only ways to build one are
/// [`VirtualPath::root`] and [`VirtualPath::join`], which keep it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VirtualPath(String);

impl VirtualPath {
    /// The root of the jail: `/`.
    pub fn root() -> Self {
        VirtualPath(String::from("/"))
    }

    /// The normalised path, always starting with `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Resolves a client-supplied path against `self` (the working directory).
    ///
    /// `input` is absolute (`/x`) or relative to `self`; `""` means `self`. `.` components and
    /// repeated or trailing `/` are dropped, and `..` goes up one level but never above the root,
    /// so `../../etc/passwd` is `/etc/passwd` *inside the jail*. A backslash is an ordinary
    /// character. A NUL anywhere, or a reserved or over-long name anywhere (even one a later `..`
    /// would remove), is refused.
    pub fn join(&self, input: &str) -> Result<VirtualPath, PathError> {
        if input.contains('\0') {
            return Err(PathError::Nul);
        }
        if input.chars().any(|c| c.is_control() && c != '\t') {
            return Err(PathError::Control);
        }
        let mut parts: Vec<&str> = if input.starts_with('/') {
            Vec::new()
        } else {
            self.components().collect()
        };
        for part in input.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                name if name.len() > MAX_NAME_LEN => return Err(PathError::NameTooLong),
                name if is_reserved_name(name) => return Err(PathError::Reserved),
                name => parts.push(name),
            }
        }
        let len = parts.iter().map(|p| p.len() + 1).sum::<usize>().max(1);
        if len > MAX_PATH_LEN {
            return Err(PathError::TooLong);
        }
        if parts.is_empty() {
            return Ok(VirtualPath::root());
        }
        let mut path = String::with_capacity(len);
        for part in parts {
            path.push('/');
            path.push_str(part);
        }
        Ok(VirtualPath(path))
    }

    /// The path without its leading `/` (`""` for the root), for opening relative to the jail's
    /// directory handle.
    pub fn relative(&self) -> &str {
        &self.0[1..]
    }

    /// The components from the root down; empty for the root.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.relative().split('/').filter(|c| !c.is_empty())
    }

    /// The directory containing this path; `None` for the root.
    pub fn parent(&self) -> Option<VirtualPath> {
        if self.is_root() {
            return None;
        }
        match self.0.rfind('/') {
            Some(0) | None => Some(VirtualPath::root()),
            Some(i) => Some(VirtualPath(self.0[..i].to_owned())),
        }
    }

    /// The last component; `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        self.components().last()
    }

    /// Whether this is the root `/`.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// Whether `other` is this path or one of its ancestors, component by component (so `/ab`
    /// does not start with `/a`).
    pub fn starts_with(&self, other: &VirtualPath) -> bool {
        other.is_root()
            || (self.0.starts_with(&other.0)
                && matches!(self.0.as_bytes().get(other.0.len()), None | Some(b'/')))
    }
}

impl fmt::Display for VirtualPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for VirtualPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Whether `name` (one component) is reserved for the server's own files: it starts with
/// [`RESERVED_PREFIX`], compared ASCII case-insensitively. Listings must skip such names.
pub fn is_reserved_name(name: &str) -> bool {
    name.as_bytes()
        .get(..RESERVED_PREFIX.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(RESERVED_PREFIX.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Checks every clause of the [`VirtualPath`] invariant on its string form.
    fn assert_invariant(p: &VirtualPath) {
        let s = p.as_str();
        assert!(s.starts_with('/'), "not absolute: {s:?}");
        assert!(s.len() <= MAX_PATH_LEN, "too long: {}", s.len());
        assert!(!s.contains('\0'), "NUL in {s:?}");
        if s != "/" {
            assert!(!s.ends_with('/'), "trailing slash: {s:?}");
            for c in s[1..].split('/') {
                assert!(!c.is_empty(), "empty component in {s:?}");
                assert!(c != "." && c != "..", "dot component in {s:?}");
                assert!(c.len() <= MAX_NAME_LEN, "long name in {s:?}");
                assert!(!is_reserved_name(c), "reserved name in {s:?}");
            }
        }
    }

    fn vp(s: &str) -> VirtualPath {
        VirtualPath::root().join(s).expect("valid test path")
    }

    #[test]
    fn join_normalises_table() {
        let long_name = "n".repeat(MAX_NAME_LEN);
        let cases: &[(&str, &str, &str)] = &[
            // (cwd, input, expected)
            ("/", "", "/"),
            ("/a/b", "", "/a/b"),
            ("/", ".", "/"),
            ("/", "..", "/"),
            ("/", "../..", "/"),
            ("/a", "..", "/"),
            ("/a/b", "..", "/a"),
            ("/a/b", "../..", "/"),
            ("/a/b", "../../../..", "/"),
            ("/", "../../etc/passwd", "/etc/passwd"),
            ("/home/u", "../../../etc/passwd", "/etc/passwd"),
            ("/", "/../../etc/passwd", "/etc/passwd"),
            ("/x", "a/./b//c/", "/x/a/b/c"),
            ("/x", "/a/./b//c/", "/a/b/c"),
            ("/", "//a///b//", "/a/b"),
            ("/", "a/b/../c", "/a/c"),
            ("/", "a/../../b", "/b"),
            ("/a", "/", "/"),
            ("/a", "b", "/a/b"),
            ("/a", "./b/.", "/a/b"),
            ("/", "...", "/..."),
            ("/", "..a/a..", "/..a/a.."),
            ("/", "a\\..\\b", "/a\\..\\b"),
            ("/", "..\\..\\etc", "/..\\..\\etc"),
            ("/", "C:\\Windows", "/C:\\Windows"),
            ("/", "héllo/日本語/🚀", "/héllo/日本語/🚀"),
            ("/", "with space/ tab\t", "/with space/ tab\t"),
            ("/", ".ferry", "/.ferry"),
            ("/", "ferry-x", "/ferry-x"),
            ("/", "a.ferry-x", "/a.ferry-x"),
            ("/", ".ferr", "/.ferr"),
            ("/", "~", "/~"),
            ("/", &long_name, &format!("/{long_name}")),
        ];
        for &(cwd, input, want) in cases {
            let got = vp(cwd).join(input);
            assert_eq!(
                got.as_ref().map(VirtualPath::as_str),
                Ok(want),
                "{cwd:?}.join({input:?})"
            );
            assert_invariant(&got.unwrap_or_else(|e| panic!("{e}")));
        }
    }

    #[test]
    fn join_refuses_table() {
        let long_name = "n".repeat(MAX_NAME_LEN + 1);
        let long_utf8_name = "é".repeat(128); // 256 bytes, 128 chars
        let four_kib = "/abcdefg".repeat(512);
        let name = "n".repeat(MAX_NAME_LEN);
        // Three 256-byte components, one of 255 and one of 2: 1025 bytes normalised.
        let just_over = format!("/{name}/{name}/{name}/{}/x", &name[1..]);
        let cases: &[(&str, &str, PathError)] = &[
            ("/", "a\0b", PathError::Nul),
            ("/", "\0", PathError::Nul),
            ("/", "a/\0/..", PathError::Nul),
            ("/", "a\r\nb", PathError::Control),
            ("/", "bell\u{7}", PathError::Control),
            ("/", &long_name, PathError::NameTooLong),
            ("/", &format!("a/{long_name}/b"), PathError::NameTooLong),
            ("/", &long_utf8_name, PathError::NameTooLong),
            ("/", &four_kib, PathError::TooLong),
            ("/", &just_over, PathError::TooLong),
            ("/", ".ferry-x", PathError::Reserved),
            ("/", ".ferry-", PathError::Reserved),
            ("/", "/a/.ferry-tmp/b", PathError::Reserved),
            ("/a", "b/.ferry-upload.part", PathError::Reserved),
            ("/", ".ferry-x/..", PathError::Reserved),
            ("/", ".FERRY-x", PathError::Reserved),
            ("/", ".Ferry-x", PathError::Reserved),
        ];
        for &(cwd, input, want) in cases {
            assert_eq!(vp(cwd).join(input), Err(want), "{cwd:?}.join({input:?})");
        }
    }

    #[test]
    fn join_refuses_growing_past_the_limit_from_a_deep_cwd() {
        let name = "d".repeat(MAX_NAME_LEN);
        let deep = vp(&format!("{name}/{name}/{name}/{name}"));
        assert_eq!(deep.as_str().len(), MAX_PATH_LEN);
        assert_eq!(deep.join("x"), Err(PathError::TooLong));
        assert_eq!(deep.join("../x").map(|p| p.as_str().len()), Ok(3 * 256 + 2));
        assert_eq!(deep.join("/x").map(|p| p.as_str().len()), Ok(2));
    }

    #[test]
    fn accessors_on_root() {
        let root = VirtualPath::root();
        assert_eq!(root.as_str(), "/");
        assert_eq!(root.to_string(), "/");
        assert_eq!(root.relative(), "");
        assert_eq!(root.components().count(), 0);
        assert_eq!(root.parent(), None);
        assert_eq!(root.file_name(), None);
        assert!(root.is_root());
        assert!(root.starts_with(&root));
    }

    #[test]
    fn accessors_on_nested_path() {
        let p = vp("/a/b c/日本");
        assert_eq!(p.to_string(), "/a/b c/日本");
        assert_eq!(p.relative(), "a/b c/日本");
        assert_eq!(p.components().collect::<Vec<_>>(), ["a", "b c", "日本"]);
        assert_eq!(p.parent(), Some(vp("/a/b c")));
        assert_eq!(vp("/a").parent(), Some(VirtualPath::root()));
        assert_eq!(p.file_name(), Some("日本"));
        assert!(!p.is_root());
    }

    #[test]
    fn starts_with_is_component_wise() {
        let p = vp("/a/bc/d");
        assert!(p.starts_with(&VirtualPath::root()));
        assert!(p.starts_with(&vp("/a")));
        assert!(p.starts_with(&vp("/a/bc")));
        assert!(p.starts_with(&p));
        assert!(!p.starts_with(&vp("/a/b")));
        assert!(!p.starts_with(&vp("/a/bc/d/e")));
        assert!(!p.starts_with(&vp("/b")));
        assert!(!VirtualPath::root().starts_with(&vp("/a")));
    }

    #[test]
    fn reserved_names() {
        assert!(is_reserved_name(".ferry-"));
        assert!(is_reserved_name(".ferry-upload-1"));
        assert!(is_reserved_name(".FeRrY-x"));
        assert!(!is_reserved_name(".ferry"));
        assert!(!is_reserved_name("ferry-x"));
        assert!(!is_reserved_name("x.ferry-"));
        assert!(!is_reserved_name(""));
        assert!(!is_reserved_name(".ferr€"));
    }

    /// Strings built mostly from path syntax, so that `..`, `.`, `/` and reserved names are common.
    fn pathish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_owned()),
            Just("..".to_owned()),
            Just(".".to_owned()),
            Just("//".to_owned()),
            Just(".ferry".to_owned()),
            Just(".ferry-".to_owned()),
            Just("\\".to_owned()),
            Just("\0".to_owned()),
            "[a-zé日.]{1,4}",
            "[a-z]{200,300}",
        ];
        prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn join_never_panics_and_keeps_invariant(cwd in pathish(), input in any::<String>()) {
            let base = VirtualPath::root().join(&cwd).unwrap_or_else(|_| VirtualPath::root());
            if let Ok(p) = base.join(&input) {
                assert_invariant(&p);
            }
        }

        #[test]
        fn pathish_join_keeps_invariant_and_renormalises(cwd in pathish(), input in pathish()) {
            let base = VirtualPath::root().join(&cwd).unwrap_or_else(|_| VirtualPath::root());
            if let Ok(p) = base.join(&input) {
                assert_invariant(&p);
                prop_assert!(p.components().all(|c| c != ".." && c != "."));
                prop_assert_eq!(VirtualPath::root().join(p.as_str()), Ok(p.clone()));
                prop_assert_eq!(p.join(""), Ok(p.clone()));
                prop_assert_eq!(base.join(p.as_str()), Ok(p.clone()));
            }
        }

        #[test]
        fn join_is_idempotent(input in any::<String>()) {
            if let Ok(p) = VirtualPath::root().join(&input) {
                prop_assert_eq!(VirtualPath::root().join(p.as_str()), Ok(p.clone()));
                prop_assert!(!p.as_str().split('/').any(|c| c == ".."));
            }
        }

        #[test]
        fn parent_and_file_name_rebuild_the_path(input in pathish()) {
            if let Ok(p) = VirtualPath::root().join(&input) {
                match (p.parent(), p.file_name()) {
                    (None, None) => prop_assert!(p.is_root()),
                    (Some(parent), Some(name)) => {
                        prop_assert!(p.starts_with(&parent));
                        prop_assert_eq!(parent.join(name), Ok(p.clone()));
                    }
                    other => prop_assert!(false, "parent/file_name disagree: {:?}", other),
                }
            }
        }
    }
}
