//! Money as integer micro-dollars (`1 USD = 1_000_000` micros), with checked `i64` arithmetic.

use crate::error::{Error, Result};

/// Micro-dollars in one US dollar.
pub const MICROS_PER_USD: i64 = 1_000_000;

/// Price of one delivered email: $0.0003.
pub const PRICE_PER_EMAIL_MICROS: i64 = 300;

/// Number of decimal digits carried by a micros amount.
const MICRO_DIGITS: u32 = 6;

/// `count * unit_micros` with checked arithmetic; negative inputs or overflow are errors.
pub fn cost_micros(count: i64, unit_micros: i64) -> Result<i64> {
    if count < 0 {
        return Err(Error::Money(format!(
            "count must not be negative, got {count}"
        )));
    }
    if unit_micros < 0 {
        return Err(Error::Money(format!(
            "unit price must not be negative, got {unit_micros}"
        )));
    }
    count.checked_mul(unit_micros).ok_or_else(|| {
        Error::Money(format!(
            "cost overflow: {count} * {unit_micros} micros exceeds i64"
        ))
    })
}

/// Format `micros` as a USD decimal string with `decimals` (0..=6) fraction digits,
/// rounding half-up (ties away from zero). A result that rounds to zero has no sign.
///
/// `format_micros(3_075_000, 2) == "3.08"`, `format_micros(-1_505_000, 2) == "-1.51"`.
pub fn format_micros(micros: i64, decimals: u32) -> Result<String> {
    let decimals = checked_decimals(i64::from(decimals))?;
    let negative = micros < 0;
    let magnitude = micros.unsigned_abs();
    let scale = 10u64.pow(MICRO_DIGITS - decimals);
    let mut units = magnitude / scale;
    if (magnitude % scale) * 2 >= scale {
        // Cannot overflow: magnitude <= 2^63, so units <= 2^63 / scale + 1.
        units += 1;
    }
    let frac_scale = 10u64.pow(decimals);
    let whole = units / frac_scale;
    let frac = units % frac_scale;
    let mut out = String::with_capacity(24);
    if negative && units != 0 {
        out.push('-');
    }
    out.push_str(&whole.to_string());
    if decimals > 0 {
        out.push('.');
        out.push_str(&format!("{frac:0width$}", width = decimals as usize));
    }
    Ok(out)
}

/// Validate a `decimals` argument of [`format_micros`] (must be in `0..=6`).
pub fn checked_decimals(decimals: i64) -> Result<u32> {
    u32::try_from(decimals)
        .ok()
        .filter(|d| *d <= MICRO_DIGITS)
        .ok_or_else(|| {
            Error::Money(format!(
                "decimals must be between 0 and {MICRO_DIGITS}, got {decimals}"
            ))
        })
}

/// Parse a USD decimal string into micros.
///
/// Grammar: optional leading `-`, one or more ASCII digits, optionally `.` followed by
/// 1 to 6 ASCII digits. No whitespace, `+`, exponent or grouping. Out of `i64` range is an error.
pub fn parse_usd(text: &str) -> Result<i64> {
    let bad = || Error::Money(format!("invalid USD amount {text:?}"));
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let overflow = || Error::Money(format!("USD amount {text:?} is out of range"));
    // Accumulate the magnitude in i128: i64::MIN's magnitude does not fit in i64.
    let limit = i128::from(i64::MAX) + 1;
    let mut magnitude: i128 = 0;
    for b in int_part.bytes() {
        magnitude = magnitude * 10 + i128::from(b - b'0');
        if magnitude * i128::from(MICROS_PER_USD) > limit {
            return Err(overflow());
        }
    }
    magnitude *= i128::from(MICROS_PER_USD);
    if let Some(frac) = frac_part {
        if frac.is_empty()
            || frac.len() > MICRO_DIGITS as usize
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let mut f: i128 = 0;
        for b in frac.bytes() {
            f = f * 10 + i128::from(b - b'0');
        }
        f *= 10i128.pow(MICRO_DIGITS - frac.len() as u32);
        magnitude += f;
    }
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).map_err(|_| overflow())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants() {
        assert_eq!(PRICE_PER_EMAIL_MICROS, 300);
        assert_eq!(MICROS_PER_USD, 1_000_000);
    }

    #[test]
    fn cost_basic_and_errors() {
        assert_eq!(cost_micros(10_240, PRICE_PER_EMAIL_MICROS), Ok(3_072_000));
        assert_eq!(cost_micros(0, 300), Ok(0));
        assert_eq!(cost_micros(5, 0), Ok(0));
        assert!(matches!(cost_micros(-1, 300), Err(Error::Money(_))));
        assert!(matches!(cost_micros(1, -300), Err(Error::Money(_))));
        assert!(matches!(cost_micros(i64::MAX, 2), Err(Error::Money(_))));
        assert_eq!(cost_micros(i64::MAX, 1), Ok(i64::MAX));
    }

    #[test]
    fn format_examples() {
        assert_eq!(format_micros(3_072_000, 2).unwrap(), "3.07");
        assert_eq!(format_micros(3_075_000, 2).unwrap(), "3.08");
        assert_eq!(format_micros(300, 4).unwrap(), "0.0003");
        assert_eq!(format_micros(5_000_000, 2).unwrap(), "5.00");
        assert_eq!(format_micros(-1_505_000, 2).unwrap(), "-1.51");
        assert_eq!(format_micros(3_072_000, 0).unwrap(), "3");
        assert_eq!(format_micros(3_500_000, 0).unwrap(), "4");
        assert_eq!(format_micros(-3_500_000, 0).unwrap(), "-4");
        assert_eq!(format_micros(1, 6).unwrap(), "0.000001");
        assert_eq!(format_micros(0, 2).unwrap(), "0.00");
    }

    #[test]
    fn format_rounding_to_zero_has_no_sign() {
        assert_eq!(format_micros(-4_999, 2).unwrap(), "0.00");
        assert_eq!(format_micros(-5_000, 2).unwrap(), "-0.01");
    }

    #[test]
    fn format_extremes() {
        assert_eq!(format_micros(i64::MAX, 6).unwrap(), "9223372036854.775807");
        assert_eq!(format_micros(i64::MIN, 6).unwrap(), "-9223372036854.775808");
        assert_eq!(format_micros(i64::MAX, 0).unwrap(), "9223372036855");
        assert_eq!(format_micros(i64::MIN, 2).unwrap(), "-9223372036854.78");
    }

    #[test]
    fn format_bad_decimals() {
        assert!(matches!(format_micros(1, 7), Err(Error::Money(_))));
        assert!(matches!(checked_decimals(-1), Err(Error::Money(_))));
        assert!(matches!(checked_decimals(i64::MAX), Err(Error::Money(_))));
        assert_eq!(checked_decimals(0), Ok(0));
        assert_eq!(checked_decimals(6), Ok(6));
    }

    #[test]
    fn parse_examples() {
        assert_eq!(parse_usd("12.5"), Ok(12_500_000));
        assert_eq!(parse_usd("0.0003"), Ok(300));
        assert_eq!(parse_usd("-1"), Ok(-1_000_000));
        assert_eq!(parse_usd("007.000001"), Ok(7_000_001));
        assert_eq!(parse_usd("-0"), Ok(0));
        assert_eq!(parse_usd("9223372036854.775807"), Ok(i64::MAX));
        assert_eq!(parse_usd("-9223372036854.775808"), Ok(i64::MIN));
    }

    #[test]
    fn parse_rejects() {
        for bad in [
            "",
            "-",
            "1e3",
            "1.2345678",
            "abc",
            " 1",
            "1 ",
            "+1",
            "1.",
            ".5",
            "-.5",
            "1..2",
            "1,000",
            "--1",
            "1.-2",
            "١",
            "0x10",
            "1_000",
        ] {
            assert!(matches!(parse_usd(bad), Err(Error::Money(_))), "{bad:?}");
        }
    }

    #[test]
    fn parse_overflow() {
        for bad in [
            "9223372036854.775808",
            "-9223372036854.775809",
            "9223372036855",
            "99999999999999999999999999999999999999999999",
        ] {
            assert!(matches!(parse_usd(bad), Err(Error::Money(_))), "{bad:?}");
        }
    }

    #[test]
    fn parse_roundtrips_format6() {
        for v in [
            0,
            1,
            -1,
            300,
            999_999,
            1_000_000,
            -1_505_000,
            i64::MAX,
            i64::MIN,
        ] {
            assert_eq!(parse_usd(&format_micros(v, 6).unwrap()), Ok(v));
        }
    }
}
