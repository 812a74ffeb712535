//! A share of a whole as operators write it (`"1%"`, `"0.5%"`), exact in parts per
//! million: `[drills] abort_5xx` and a drill's own `abort_5xx`.

use std::fmt;

/// A share of a whole, as operators write it: `"5%"`, `"0.5%"` (0 to 100, at most four
/// decimals). Kept in parts per million, so comparisons are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share(u32);

const PPM: u64 = 1_000_000;

impl Share {
    /// The default of `[drills] abort_5xx`: 1%.
    pub const DEFAULT_ABORT_5XX: Share = Share(10_000);

    /// Parses `"N%"` with N from 0 to 100.
    pub fn parse(text: &str) -> Result<Share, String> {
        let invalid = || format!("\"{text}\" is not a percentage from 0% to 100%, e.g. \"1%\" or \"0.5%\"");
        let number = text.trim().strip_suffix('%').ok_or_else(invalid)?;
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || whole.len() > 3 || fraction.len() > 4 || !digits(whole) || !digits(fraction) {
            return Err(invalid());
        }
        if number.ends_with('.') {
            return Err(invalid());
        }
        let whole: u64 = whole.parse().map_err(|_| invalid())?;
        let fraction: u64 = format!("{fraction:0<4}").parse().map_err(|_| invalid())?;
        let ppm = whole * 10_000 + fraction;
        if ppm > PPM {
            return Err(invalid());
        }
        Ok(Share(ppm as u32))
    }

    /// `part` of `whole` is more than this share.
    pub fn exceeded_by(self, part: u64, whole: u64) -> bool {
        u128::from(part) * u128::from(PPM) > u128::from(self.0) * u128::from(whole)
    }

    /// As a fraction from 0.0 to 1.0.
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / PPM as f64
    }
}

impl serde::Serialize for Share {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Share {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Share, D::Error> {
        let text = String::deserialize(deserializer)?;
        Share::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, fraction) = (self.0 / 10_000, self.0 % 10_000);
        if fraction == 0 {
            write!(f, "{whole}%")
        } else {
            let digits = format!("{fraction:04}");
            write!(f, "{whole}.{}%", digits.trim_end_matches('0'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_parse_exactly_and_print_back() {
        for (text, ppm, shown) in [
            ("1%", 10_000, "1%"),
            ("0.5%", 5_000, "0.5%"),
            ("0%", 0, "0%"),
            ("100%", 1_000_000, "100%"),
            ("12.25%", 122_500, "12.25%"),
            ("0.0001%", 1, "0.0001%"),
        ] {
            let share = Share::parse(text).unwrap();
            assert_eq!(share, Share(ppm), "{text}");
            assert_eq!(share.to_string(), shown);
        }
        for bad in [
            "",
            "%",
            "1",
            "5 percent",
            "-1%",
            "100.01%",
            "101%",
            "1.%",
            ".5%",
            "0.00001%",
            "1e2%",
            "1,5%",
        ] {
            assert!(Share::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn more_than_the_share_exceeds_it() {
        let one = Share::parse("1%").unwrap();
        assert!(!one.exceeded_by(1, 100), "exactly 1% is not more than 1%");
        assert!(one.exceeded_by(2, 100));
        assert!(!Share::parse("100%").unwrap().exceeded_by(20, 20));
        assert!(Share::parse("0%").unwrap().exceeded_by(1, u64::MAX));
    }
}
