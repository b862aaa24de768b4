//! Fuzzes virtual-path normalisation: whatever a client sends, joined onto the root or onto a
//! nested working directory, the result must stay inside the jail and keep its invariant.

#![no_main]

use ferry_proto::vpath::{is_reserved_name, VirtualPath, MAX_NAME_LEN, MAX_PATH_LEN};
use libfuzzer_sys::fuzz_target;

/// Panics unless `path` is `/` or `/a/b…` with no empty, `.`, `..`, reserved or over-long
/// component, no NUL, and within [`MAX_PATH_LEN`].
fn check_invariant(path: &VirtualPath) {
    let s = path.as_str();
    assert!(s.starts_with('/'), "not absolute: {s:?}");
    assert!(s.len() <= MAX_PATH_LEN, "too long: {} bytes", s.len());
    assert!(!s.contains('\0'), "NUL in {s:?}");
    assert_eq!(path.is_root(), s == "/");
    if !path.is_root() {
        assert!(!s.ends_with('/'), "trailing slash in {s:?}");
        for name in s[1..].split('/') {
            assert!(!name.is_empty(), "empty component in {s:?}");
            assert!(name != "." && name != "..", "dot component in {s:?}");
            assert!(name.len() <= MAX_NAME_LEN, "long component in {s:?}");
            assert!(!is_reserved_name(name), "reserved component in {s:?}");
        }
    }
    assert_eq!(
        VirtualPath::root().join(s).as_ref(),
        Ok(path),
        "not idempotent"
    );
}

fuzz_target!(|input: &str| {
    let root = VirtualPath::root();
    let nested = root
        .join("/home/user/a b/日本")
        .expect("a valid nested path");
    for base in [&root, &nested] {
        if let Ok(path) = base.join(input) {
            check_invariant(&path);
            if input.starts_with('/') {
                assert_eq!(
                    root.join(input).as_ref(),
                    Ok(&path),
                    "absolute input depends on cwd"
                );
            }
        }
    }
});
