//! Typed flag values: durations as people write them, and settings that `0` turns off.

use std::str::FromStr;
use std::time::Duration;

/// A duration flag: `10s`, `250ms`, `2m`, `1h 30m` (humantime), or a plain number of
/// milliseconds, as every duration flag took before they were typed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|e| e.to_string());
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 10s, 250ms, 2m, or milliseconds)"))
}

/// A setting that `0` (or `off`) turns off: `None` then. Durations as in [`parse_duration`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OffIfZero<T>(pub Option<T>);

impl<T> OffIfZero<T> {
    pub fn get(self) -> Option<T> {
        self.0
    }
}

fn off(text: &str) -> bool {
    matches!(text.trim(), "0" | "off")
}

impl FromStr for OffIfZero<Duration> {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if off(text) {
            return Ok(OffIfZero(None));
        }
        let d = parse_duration(text)?;
        Ok(OffIfZero((!d.is_zero()).then_some(d)))
    }
}

impl FromStr for OffIfZero<usize> {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if off(text) {
            return Ok(OffIfZero(None));
        }
        let n: usize = text
            .trim()
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string())?;
        Ok(OffIfZero((n > 0).then_some(n)))
    }
}

impl FromStr for OffIfZero<f64> {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if off(text) {
            return Ok(OffIfZero(None));
        }
        let n: f64 = text
            .trim()
            .parse()
            .map_err(|e: std::num::ParseFloatError| e.to_string())?;
        if !(n >= 0.0 && n.is_finite()) {
            return Err(format!("{n} is not a rate (a positive number, or 0 for no limit)"));
        }
        Ok(OffIfZero((n > 0.0).then_some(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_typed_and_plain_numbers_stay_milliseconds() {
        assert_eq!(parse_duration("25000"), Ok(Duration::from_secs(25)));
        assert_eq!(parse_duration("25s"), Ok(Duration::from_secs(25)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert_eq!("0".parse::<OffIfZero<Duration>>(), Ok(OffIfZero(None)));
        assert_eq!("off".parse::<OffIfZero<Duration>>(), Ok(OffIfZero(None)));
        assert_eq!("0s".parse::<OffIfZero<Duration>>(), Ok(OffIfZero(None)));
        assert_eq!(
            "30s".parse::<OffIfZero<Duration>>(),
            Ok(OffIfZero(Some(Duration::from_secs(30))))
        );
        assert_eq!("64".parse::<OffIfZero<usize>>(), Ok(OffIfZero(Some(64))));
        assert_eq!("0".parse::<OffIfZero<f64>>(), Ok(OffIfZero(None)));
        assert!("-1".parse::<OffIfZero<f64>>().is_err());
    }
}
