//! A site's weight: a whole number from 0 (drained) to `MAX_WEIGHT`. Every way of
//! setting one (the file, a route, the admin API, an etcd value) goes through
//! `Weight::new`, so the rule is written once.

/// The largest weight; shares are computed to 1/10 000.
pub const MAX_WEIGHT: i64 = 10_000;

/// A weight that keeps the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Weight(u32);

/// A number that is not a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("weight {0} is out of range; use 0 (drained) to {MAX_WEIGHT}")]
pub struct OutOfRange(pub i64);

impl Weight {
    pub fn new(value: i64) -> Result<Weight, OutOfRange> {
        match u32::try_from(value) {
            Ok(w) if value <= MAX_WEIGHT => Ok(Weight(w)),
            _ => Err(OutOfRange(value)),
        }
    }

    /// The nearest weight to `value` (for a value checked before).
    pub fn clamped(value: i64) -> Weight {
        Weight(value.clamp(0, MAX_WEIGHT) as u32)
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weight_is_a_whole_number_from_0_to_10000() {
        assert_eq!(Weight::new(0).map(Weight::get), Ok(0));
        assert_eq!(Weight::new(10_000).map(Weight::get), Ok(10_000));
        assert_eq!(Weight::new(10_001), Err(OutOfRange(10_001)));
        assert_eq!(Weight::new(-1), Err(OutOfRange(-1)));
        assert_eq!(Weight::new(i64::MAX), Err(OutOfRange(i64::MAX)));
        assert_eq!(Weight::clamped(-5).get(), 0);
        assert_eq!(
            OutOfRange(7).to_string(),
            "weight 7 is out of range; use 0 (drained) to 10000"
        );
    }
}
