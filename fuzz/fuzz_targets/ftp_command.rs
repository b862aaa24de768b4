//! Fuzzes the FTP command parser with arbitrary control lines: it must never panic, and every
//! command it accepts must be printable.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    if let Ok(command) = ferry_proto::ftp::parse(line) {
        let _ = format!("{command:?}");
    }
});
