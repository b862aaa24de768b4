//! Human-readable byte sizes (`10MiB`, `1.5 GB`) for the CLI and the config file, and the
//! binary-unit rendering (`1.5 MiB`) used when showing sizes back to people.

/// Why a size was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Empty, negative, an unknown unit, or not a number at all.
    #[error("invalid size {input:?}: use bytes (1024) or a number with a unit (500KB, 10MiB, 5G)")]
    Invalid {
        /// The text as given.
        input: String,
    },
    /// Well-formed, but more than `u64::MAX` bytes.
    #[error(
        "size {input:?} is too large: the largest is {} bytes (16 EiB)",
        u64::MAX
    )]
    TooLarge {
        /// The text as given.
        input: String,
    },
}

/// Fraction digits that take part in the value; later ones are below a byte and ignored.
const MAX_FRACTION_DIGITS: u32 = 18;

/// Parses a size: bytes (`1024`, `1024B`) or a number with a unit.
///
/// `K`, `KiB` (any case) are ×1024 and `KB` ×1000, and likewise `M`/`MiB`/`MB`, `G`/`GiB`/`GB`
/// and `T`/`TiB`/`TB` (`P` and `E` too, so that everything [`format_size`] prints reads back).
/// Spaces may separate the number from its unit. With a unit other than `B`
/// the number may have a decimal fraction (`1.5GiB`); the result is rounded down to whole bytes.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let invalid = || SizeError::Invalid {
        input: s.to_owned(),
    };
    let text = s.trim();
    let number_end = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    let multiplier = unit_multiplier(unit.trim_start()).ok_or_else(invalid)?;
    let (whole, fraction) = match number.split_once('.') {
        None => (number, ""),
        Some((_, "")) => return Err(invalid()),
        Some((_, _)) if multiplier == 1 => return Err(invalid()),
        Some((whole, fraction)) => (whole, fraction),
    };
    if whole.is_empty() || fraction.contains('.') {
        return Err(invalid());
    }
    let too_large = || SizeError::TooLarge {
        input: s.to_owned(),
    };
    let mut value: u128 = 0;
    for digit in whole.bytes() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(digit - b'0')))
            .filter(|&v| v <= u128::from(u64::MAX))
            .ok_or_else(too_large)?;
    }
    value = value.checked_mul(multiplier).ok_or_else(too_large)?;
    let mut numerator: u128 = 0;
    let mut denominator: u128 = 1;
    for digit in fraction.bytes().take(MAX_FRACTION_DIGITS as usize) {
        numerator = numerator * 10 + u128::from(digit - b'0');
        denominator *= 10;
    }
    // numerator < 10^18 and multiplier <= 2^60, so this cannot overflow a u128.
    value += numerator * multiplier / denominator;
    u64::try_from(value).map_err(|_| too_large())
}

/// The multiplier for a unit, compared case-insensitively; `None` if unknown.
fn unit_multiplier(unit: &str) -> Option<u128> {
    let multiplier = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "p" | "pib" => 1 << 50,
        "e" | "eib" => 1 << 60,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "pb" => 1_000_000_000_000_000,
        "eb" => 1_000_000_000_000_000_000,
        _ => return None,
    };
    Some(multiplier)
}

/// Formats a size for people: whole bytes below 1 KiB (`999 B`), otherwise binary units with one
/// decimal, rounded to the nearest tenth (`1.0 KiB`, `1.5 MiB`, `2.0 GiB`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut divisor: u128 = 1;
    let mut tenths: u128 = 0;
    let mut unit = UNITS[0];
    for name in UNITS {
        divisor *= 1024;
        unit = name;
        tenths = (u128::from(bytes) * 10 + divisor / 2) / divisor;
        if tenths < 10240 {
            break;
        }
    }
    format!("{}.{} {unit}", tenths / 10, tenths % 10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_size_accepts_table() {
        const K: u64 = 1024;
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("1024", 1024),
            ("1024B", 1024),
            ("1024b", 1024),
            ("1024 B", 1024),
            ("  7  ", 7),
            ("007", 7),
            ("10K", 10 * K),
            ("10k", 10 * K),
            ("10KiB", 10 * K),
            ("10kib", 10 * K),
            ("10KIB", 10 * K),
            ("10 KiB", 10 * K),
            ("10KB", 10_000),
            ("10kb", 10_000),
            ("10M", 10 * K * K),
            ("10MiB", 10 * K * K),
            ("10MB", 10_000_000),
            ("5G", 5 * K * K * K),
            ("5 GiB", 5 * K * K * K),
            ("5GB", 5_000_000_000),
            ("2T", 2 * K * K * K * K),
            ("2TiB", 2 * K * K * K * K),
            ("2tb", 2_000_000_000_000),
            ("1.5GiB", 3 * K * K * K / 2),
            ("1.5 KB", 1500),
            ("0.5K", 512),
            ("0.1KiB", 102),
            ("1.0k", 1024),
            ("1.000000000000000000000001MB", 1_000_000),
            ("18446744073709551615", u64::MAX),
            ("18446744073709551615B", u64::MAX),
            ("16777215.999999TiB", 18_446_744_073_708_452_104),
            ("1P", 1 << 50),
            ("1.5 PiB", 3 << 49),
            ("2PB", 2_000_000_000_000_000),
            ("15.5 EiB", 31 << 59),
            ("18EB", 18_000_000_000_000_000_000),
        ];
        for &(input, want) in cases {
            assert_eq!(parse_size(input), Ok(want), "parse_size({input:?})");
        }
    }

    #[test]
    fn parse_size_refuses_table() {
        let invalid = [
            "",
            " ",
            "B",
            "K",
            "12XB",
            "-1",
            "-1K",
            "+1",
            "1.5",
            "1.5B",
            "1.",
            "1.K",
            ".5K",
            "1..5K",
            "1.2.3K",
            "1e3",
            "0x10",
            "1 0",
            "10 K B",
            "10KiBs",
            "10Ki",
            "10KiB!",
            "10 kilobytes",
            "1,5K",
            "١٢",
            "10Z",
            "NaN",
            "ten",
        ];
        for input in invalid {
            assert_eq!(
                parse_size(input),
                Err(SizeError::Invalid {
                    input: input.to_owned()
                }),
                "parse_size({input:?})"
            );
        }
        for input in [
            "18446744073709551616",
            "99999999999999999999999999999999999",
            "16777216T",
            "16E",
            "16.0 EiB",
            "19EB",
            "18446744073709552KB",
        ] {
            assert_eq!(
                parse_size(input),
                Err(SizeError::TooLarge {
                    input: input.to_owned()
                }),
                "parse_size({input:?})"
            );
        }
    }

    #[test]
    fn size_error_messages_say_what_is_valid() {
        let err = parse_size("12XB").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid size "12XB": use bytes (1024) or a number with a unit (500KB, 10MiB, 5G)"#
        );
        let err = parse_size("99999999T").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"size "99999999T" is too large: the largest is 18446744073709551615 bytes (16 EiB)"#
        );
        let err = parse_size("a\nb").unwrap_err();
        assert!(!err.to_string().contains('\n'), "one line: {err}");
    }

    #[test]
    fn format_size_table() {
        let cases: &[(u64, &str)] = &[
            (0, "0 B"),
            (1, "1 B"),
            (999, "999 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (1024 * 1024 - 1, "1.0 MiB"),
            (3 * 1024 * 1024 / 2, "1.5 MiB"),
            (2 * 1024 * 1024 * 1024, "2.0 GiB"),
            (1024u64.pow(4), "1.0 TiB"),
            (1024u64.pow(5), "1.0 PiB"),
            (1024u64.pow(6), "1.0 EiB"),
            (u64::MAX, "16.0 EiB"),
        ];
        for &(bytes, want) in cases {
            assert_eq!(format_size(bytes), want, "format_size({bytes})");
        }
    }

    proptest! {
        #[test]
        fn parse_size_never_panics(s in any::<String>()) {
            let _ = parse_size(&s);
        }

        #[test]
        fn parse_size_never_panics_on_sizeish(s in "[ 0-9.]{0,30}[ kKmMgGtTiIbB]{0,4}") {
            let _ = parse_size(&s);
        }

        #[test]
        fn parse_size_reads_plain_numbers(n in any::<u64>()) {
            prop_assert_eq!(parse_size(&n.to_string()), Ok(n));
        }

        #[test]
        fn format_size_parses_back_within_rounding(n in any::<u64>()) {
            let text = format_size(n);
            // The top of the range rounds up to 16.0 EiB, one byte more than a u64 holds.
            let back = match parse_size(&text) {
                Err(SizeError::TooLarge { .. }) if text == "16.0 EiB" => u64::MAX,
                other => other.map_err(|e| TestCaseError::fail(e.to_string()))?,
            };
            // One decimal of a unit of at most 1024^6 bytes: within 5% of a unit, plus a byte of
            // rounding down in the parse.
            let diff = n.abs_diff(back);
            prop_assert!(diff <= n / 20 + 1, "{} -> {:?} -> {}", n, text, back);
        }
    }
}
