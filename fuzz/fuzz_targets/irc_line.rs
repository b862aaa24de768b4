//! Fuzzes the IRC line parser with arbitrary lines: it must never panic, and every message it
//! accepts must encode to exactly one line that parses again, after which encoding is stable.

#![no_main]

use ferry_proto::irc::{parse, MAX_LINE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let Ok(first) = parse(line) else { return };
    let encoded = first.to_line();
    assert!(encoded.ends_with("\r\n"));
    assert_eq!(encoded.matches(['\r', '\n']).count(), 2, "{encoded:?}");
    let second = match parse(encoded.as_bytes()) {
        Ok(second) => second,
        Err(e) => panic!("{first:?} encoded as {encoded:?} does not parse: {e}"),
    };
    let body = encoded
        .strip_prefix('@')
        .map_or(encoded.as_str(), |tagged| {
            tagged.split_once(' ').map_or(tagged, |(_, body)| body)
        });
    assert!(body.len() <= MAX_LINE, "{encoded:?}");
    assert_eq!(parse(second.to_line().as_bytes()), Ok(second));
});
