//! Cron schedules of drill programs (`[[drill]] schedule`): the classic five fields
//! (minute, hour, day of month, month, day of week), in UTC, parsed strictly (`*`,
//! lists, ranges, `*/n` and `a-b/n` steps, JAN-DEC and SUN-SAT names; no seconds, no
//! `@weekly`, no `L`/`W`/`#`), and the next minute a schedule is due after a time.
//! As in Vixie cron, when both day fields are restricted a day matching either is due.

use std::fmt;

/// A checked five-field schedule; `Display` gives back the text it was parsed from.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// The day-of-month field starts with `*` (then only the weekday decides).
    any_day: bool,
    /// The day-of-week field starts with `*` (then only the day of month decides).
    any_weekday: bool,
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &[
            "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
        ],
    },
    // 7 is Sunday too, as in every cron.
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    },
];

const MINUTE_MS: u64 = 60_000;
const DAY_MINUTES: i64 = 1440;
/// The longest gap between two due times of a schedule that is ever due (29 February
/// around a non-leap century year), with room: past it a search gives up.
const SEARCH_DAYS: i64 = 366 * 9;

impl Schedule {
    /// Parses `text`; the error says which field is wrong and why.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "\"{text}\" has {} fields; a schedule has 5: minute hour day-of-month month day-of-week \
                 (UTC), e.g. \"0 3 * * TUE\"",
                parts.len()
            ));
        }
        let mut sets = [0u64; 5];
        for ((set, part), field) in sets.iter_mut().zip(&parts).zip(&FIELDS) {
            *set = field
                .parse(part)
                .map_err(|why| format!("{} \"{part}\": {why}", field.name))?;
        }
        // Sunday is 0 and 7.
        if sets[4] & (1 << 7) != 0 {
            sets[4] = (sets[4] | 1) & !(1 << 7);
        }
        let schedule = Schedule {
            text: parts.join(" "),
            minutes: sets[0],
            hours: sets[1],
            days: sets[2],
            months: sets[3],
            weekdays: sets[4],
            any_day: parts[2].starts_with('*'),
            any_weekday: parts[4].starts_with('*'),
        };
        if !schedule.any_day && schedule.any_weekday {
            let possible = (1..=12u32)
                .filter(|m| schedule.months & (1 << m) != 0)
                .any(|m| (1..=days_in_month(2000, m)).any(|d| schedule.days & (1 << d) != 0));
            if !possible {
                return Err(format!("\"{text}\" is never due: none of its months has that day"));
            }
        }
        Ok(schedule)
    }

    /// The first minute (Unix ms, second 0) after `after_ms` when the schedule is due.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let mut minute = (after_ms / MINUTE_MS) as i64 + 1;
        let last_day = minute / DAY_MINUTES + SEARCH_DAYS;
        while minute / DAY_MINUTES <= last_day {
            let day = minute / DAY_MINUTES;
            let (year, month, dom) = crate::clock::civil_from_days(day);
            if self.months & (1 << month) == 0 {
                minute = days_from_civil(year + i64::from(month == 12), month % 12 + 1, 1) * DAY_MINUTES;
                continue;
            }
            if !self.day_matches(dom, (day + 4).rem_euclid(7) as u32) {
                minute = (day + 1) * DAY_MINUTES;
                continue;
            }
            let of_day = minute % DAY_MINUTES;
            let (hour, min) = ((of_day / 60) as u32, (of_day % 60) as u32);
            if self.hours & (1 << hour) == 0 {
                minute = day * DAY_MINUTES + i64::from(hour + 1) * 60;
                continue;
            }
            if self.minutes & (1 << min) == 0 {
                minute += 1;
                continue;
            }
            return u64::try_from(minute).ok().map(|m| m * MINUTE_MS);
        }
        None
    }

    fn day_matches(&self, dom: u32, weekday: u32) -> bool {
        let by_day = self.days & (1 << dom) != 0;
        let by_weekday = self.weekdays & (1 << weekday) != 0;
        match (self.any_day, self.any_weekday) {
            (false, false) => by_day || by_weekday,
            (true, false) => by_weekday,
            (false, true) => by_day,
            (true, true) => true,
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.text)
    }
}

impl Field {
    /// A comma-separated list of `*`, `N`, `A-B`, `*/S` or `A-B/S` as a bit set.
    fn parse(&self, text: &str) -> Result<u64, String> {
        let mut set = 0u64;
        for item in text.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((range, step)) => {
                    let step: u32 = step
                        .parse()
                        .ok()
                        .filter(|&s| (1..=self.max).contains(&s))
                        .ok_or_else(|| format!("step \"{step}\" must be a number from 1 to {}", self.max))?;
                    (range, step)
                }
                None => (item, 1),
            };
            let (low, high) = match range.split_once('-') {
                _ if range == "*" => (self.min, self.max),
                Some((low, high)) => (self.value(low)?, self.value(high)?),
                None if step > 1 => {
                    return Err(format!("a step needs a range: \"*/{step}\" or \"A-B/{step}\""));
                }
                None => {
                    let value = self.value(range)?;
                    (value, value)
                }
            };
            if low > high {
                return Err(format!("range {low}-{high} runs backwards"));
            }
            for value in (low..=high).step_by(step as usize) {
                set |= 1 << value;
            }
        }
        Ok(set)
    }

    fn value(&self, text: &str) -> Result<u32, String> {
        let named = self
            .names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(text))
            .map(|i| i as u32 + if self.min == 1 { 1 } else { 0 });
        let value = match named {
            Some(value) => value,
            None if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => text.parse().unwrap_or(u32::MAX),
            None => {
                let names = match self.names.first().zip(self.names.last()) {
                    Some((first, last)) => format!(" or a name {first}-{last}"),
                    None => String::new(),
                };
                return Err(format!(
                    "\"{text}\" is not a number from {} to {}{names}",
                    self.min, self.max
                ));
            }
        };
        if !(self.min..=self.max).contains(&value) {
            return Err(format!("{value} is out of range {}-{}", self.min, self.max));
        }
        Ok(value)
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a UTC time.
    fn at(year: i64, month: u32, day: u32, hour: u64, minute: u64) -> u64 {
        days_from_civil(year, month, day) as u64 * 86_400_000 + (hour * 60 + minute) * MINUTE_MS
    }

    fn next(schedule: &str, after: u64) -> u64 {
        Schedule::parse(schedule).unwrap().next_after(after).unwrap()
    }

    #[test]
    fn dates_convert_both_ways() {
        for days in [-800_000, -1, 0, 59, 365, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = crate::clock::civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(crate::clock::civil_from_days(0), (1970, 1, 1));
        assert_eq!(crate::clock::civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn every_minute_is_due_at_the_next_minute() {
        let t = at(2026, 3, 10, 12, 30) + 1;
        assert_eq!(next("* * * * *", t), at(2026, 3, 10, 12, 31));
        assert_eq!(
            next("* * * * *", at(2026, 3, 10, 12, 30)),
            at(2026, 3, 10, 12, 31),
            "strictly after"
        );
        assert_eq!(next("* * * * *", at(2026, 12, 31, 23, 59) + 5), at(2027, 1, 1, 0, 0));
    }

    #[test]
    fn weekdays_by_name_and_number() {
        // 2026-03-10 is a Tuesday.
        let t = at(2026, 3, 10, 12, 0);
        assert_eq!(next("0 3 * * TUE", t), at(2026, 3, 17, 3, 0));
        assert_eq!(next("0 3 * * 2", t), at(2026, 3, 17, 3, 0));
        assert_eq!(next("0 3 * * sun", t), at(2026, 3, 15, 3, 0));
        assert_eq!(next("0 3 * * 7", t), at(2026, 3, 15, 3, 0), "7 is Sunday");
        assert_eq!(next("30 9 * * MON-FRI", at(2026, 3, 13, 10, 0)), at(2026, 3, 16, 9, 30));
    }

    #[test]
    fn a_quarterly_programme_runs_on_the_first_of_each_quarter() {
        let s = "0 3 1 1,4,7,10 *";
        let first = next(s, at(2026, 1, 1, 3, 0));
        assert_eq!(first, at(2026, 4, 1, 3, 0));
        assert_eq!(next(s, first), at(2026, 7, 1, 3, 0));
        assert_eq!(next(s, at(2026, 10, 2, 0, 0)), at(2027, 1, 1, 3, 0));
        assert_eq!(next("0 0 1 jan-dec/3 *", at(2026, 1, 5, 0, 0)), at(2026, 4, 1, 0, 0));
    }

    #[test]
    fn steps_lists_and_ranges() {
        let t = at(2026, 3, 10, 12, 1);
        assert_eq!(next("*/15 * * * *", t), at(2026, 3, 10, 12, 15));
        assert_eq!(
            next("10-40/10 * * * *", at(2026, 3, 10, 12, 40)),
            at(2026, 3, 10, 13, 10)
        );
        assert_eq!(next("5,50 1,23 * * *", t), at(2026, 3, 10, 23, 5));
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        // The 13th, or any Friday: from Tuesday the 10th, Friday the 13th comes first.
        assert_eq!(next("0 0 20 * FRI", at(2026, 3, 10, 0, 0)), at(2026, 3, 13, 0, 0));
        assert_eq!(next("0 0 11 * FRI", at(2026, 3, 10, 0, 0)), at(2026, 3, 11, 0, 0));
        // A starred weekday leaves the day of month alone deciding, and the other way round.
        assert_eq!(next("0 0 */10 * *", at(2026, 3, 10, 0, 0)), at(2026, 3, 11, 0, 0));
    }

    #[test]
    fn the_29th_of_february_waits_for_a_leap_year() {
        assert_eq!(next("0 0 29 2 *", at(2026, 3, 1, 0, 0)), at(2028, 2, 29, 0, 0));
        assert_eq!(next("0 0 29 2 *", at(2096, 3, 1, 0, 0)), at(2104, 2, 29, 0, 0));
    }

    #[test]
    fn bad_schedules_say_which_field_and_why() {
        let cases = [
            ("* * * *", "has 4 fields"),
            ("0 0 * * * *", "has 6 fields"),
            ("60 * * * *", "minute \"60\": 60 is out of range 0-59"),
            ("* 24 * * *", "hour \"24\""),
            ("* * 0 * *", "day of month \"0\""),
            ("* * * 13 *", "month \"13\""),
            ("* * * FOO *", "or a name JAN-DEC"),
            ("* * * * 8", "day of week \"8\""),
            ("*/0 * * * *", "step \"0\""),
            ("5/10 * * * *", "a step needs a range"),
            ("30-10 * * * *", "runs backwards"),
            ("@weekly", "has 1 fields"),
            ("0 0 L * *", "\"L\" is not a number"),
            ("0 0 ? * *", "\"?\" is not a number"),
            ("0 0 1,,2 * *", "\"\" is not a number"),
            ("0 0 30 2 *", "never due"),
            ("0 0 31 4,6,9,11 *", "never due"),
        ];
        for (text, expected) in cases {
            let error = Schedule::parse(text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
        assert!(Schedule::parse("0 0 30 2 MON").is_ok(), "Mondays are still due");
    }

    #[test]
    fn a_schedule_prints_as_written() {
        assert_eq!(Schedule::parse(" 0  3 * *  TUE ").unwrap().to_string(), "0 3 * * TUE");
    }
}
