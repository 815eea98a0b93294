//! Schedules: a workflow's `SCHEDULE`, its slots (cron in a time zone, or a fixed interval)
//! and what to do with a slot that was missed. Pure: times in, times out.
//!
//! ```python
//! SCHEDULE = {"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin", "input": {...}}
//! SCHEDULE = {"interval_seconds": 3600, "misfire": "run_once"}
//! ```
//!
//! Cron has five fields — minute, hour, day of month, month, day of week (0 or 7 is Sunday)
//! — each `*`, a number, a range `a-b`, a list `a,b`, or a step `*/n` / `a-b/n`; month and
//! day names (`JAN`, `MON`) and `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly` work
//! too. When both day fields are restricted a day matching either counts (as in cron). Slots
//! are civil times in the time zone: a time skipped by a DST change fires at the first
//! instant after the gap; a time repeated by one fires once.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use serde_json::Value;

/// How late a slot may fire and still count as on time.
pub const GRACE_MS: i64 = 60_000;

/// What to do with slots missed by more than [`GRACE_MS`] (the server was down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misfire {
    /// Skip them; fire at the next slot.
    Skip,
    /// Fire once for the latest of them, then go on.
    RunOnce,
}

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    /// Cron fields.
    Cron(Box<Cron>),
    /// Every this many ms.
    Every(i64),
}

/// A workflow's schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// When.
    pub when: When,
    /// The time zone of cron slots.
    pub tz: TimeZone,
    /// The run's input.
    pub input: Value,
    /// Missed slots.
    pub misfire: Misfire,
}

/// Parsed cron fields, as sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: [bool; 60],
    hours: [bool; 24],
    days: [bool; 32],
    months: [bool; 13],
    weekdays: [bool; 7],
    any_day: bool,
    any_weekday: bool,
}

/// Reads a `SCHEDULE` dict; every mistake is reported.
pub fn parse(v: &Value) -> Result<Schedule, String> {
    let Some(m) = v.as_object() else {
        return Err("SCHEDULE must be a dict".into());
    };
    let mut errors = Vec::new();
    for k in m.keys() {
        if !["cron", "interval_seconds", "timezone", "input", "misfire"].contains(&k.as_str()) {
            errors.push(format!(
                "unknown key {k:?} (known: cron, interval_seconds, timezone, input, misfire)"
            ));
        }
    }
    let when = match (m.get("cron"), m.get("interval_seconds")) {
        (Some(c), None) => match c.as_str().map(parse_cron) {
            Some(Ok(c)) => Some(When::Cron(Box::new(c))),
            Some(Err(e)) => {
                errors.push(format!("cron: {e}"));
                None
            }
            None => {
                errors.push("cron must be a string".into());
                None
            }
        },
        (None, Some(i)) => match i.as_f64() {
            Some(s) if (1.0..=31_622_400.0).contains(&s) => {
                Some(When::Every((s * 1000.0).round() as i64))
            }
            _ => {
                errors.push("interval_seconds must be a number from 1 to 31622400 (a year)".into());
                None
            }
        },
        _ => {
            errors.push("give exactly one of cron and interval_seconds".into());
            None
        }
    };
    let tz = match m.get("timezone") {
        None => Some(TimeZone::UTC),
        Some(Value::String(name)) => match TimeZone::get(name) {
            Ok(tz) => Some(tz),
            Err(_) => {
                errors.push(format!(
                    "timezone {name:?} is not an IANA time zone (like \"Europe/Berlin\" or \"UTC\")"
                ));
                None
            }
        },
        Some(_) => {
            errors.push("timezone must be a string".into());
            None
        }
    };
    let misfire = match m.get("misfire").and_then(Value::as_str) {
        None if m.get("misfire").is_none() => Misfire::Skip,
        Some("skip") => Misfire::Skip,
        Some("run_once") => Misfire::RunOnce,
        _ => {
            errors.push("misfire must be \"skip\" or \"run_once\"".into());
            Misfire::Skip
        }
    };
    match (when, tz) {
        (Some(when), Some(tz)) if errors.is_empty() => Ok(Schedule {
            when,
            tz,
            input: m.get("input").cloned().unwrap_or(Value::Null),
            misfire,
        }),
        _ => Err(errors.join("; ")),
    }
}

impl Schedule {
    /// The first slot strictly after `after` (epoch ms).
    pub fn next_after(&self, after: i64) -> Option<i64> {
        match &self.when {
            When::Every(ms) => Some(after.saturating_add(*ms)),
            When::Cron(c) => c.next_after(after, &self.tz),
        }
    }

    /// At `now`, with the schedule's next slot at `due` (≤ `now`): the slot to fire, if
    /// any, and the slot after it. Every slot late by at most [`GRACE_MS`] is on time and
    /// fires, the earliest first (invariant 7: a replica that takes over late, or a tick that
    /// ran late, makes up the slots in between, one per call). Slots missed by more are
    /// skipped, or with `misfire: run_once` the latest of them fires once.
    pub fn fire(&self, due: i64, now: i64) -> (Option<i64>, Option<i64>) {
        let mut slot = due;
        // The first slot within the grace, else the latest not after now (bounded: a
        // schedule down for years stops counting).
        for _ in 0..100_000 {
            if now - slot <= GRACE_MS {
                break;
            }
            match self.next_after(slot) {
                Some(n) if n <= now => slot = n,
                _ => break,
            }
        }
        let fire = if now - slot <= GRACE_MS || self.misfire == Misfire::RunOnce {
            Some(slot)
        } else {
            None
        };
        (fire, self.next_after(slot))
    }
}

impl Cron {
    fn next_after(&self, after: i64, tz: &TimeZone) -> Option<i64> {
        let start = jiff::Timestamp::from_millisecond(after)
            .ok()?
            .to_zoned(tz.clone())
            .datetime();
        let mut t = start
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(jiff::Span::new().minutes(1))
            .ok()?;
        // Five years of days, hours and minutes at most.
        for _ in 0..200_000 {
            if !self.months[usize::try_from(t.month()).ok()?] {
                t = t
                    .first_of_month()
                    .start_of_day()
                    .checked_add(jiff::Span::new().months(1))
                    .ok()?;
                continue;
            }
            if !self.day_matches(t) {
                t = t
                    .start_of_day()
                    .checked_add(jiff::Span::new().days(1))
                    .ok()?;
                continue;
            }
            if !self.hours[usize::try_from(t.hour()).ok()?] {
                t = t
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(jiff::Span::new().hours(1))
                    .ok()?;
                continue;
            }
            if !self.minutes[usize::try_from(t.minute()).ok()?] {
                t = t.checked_add(jiff::Span::new().minutes(1)).ok()?;
                continue;
            }
            let at = t.to_zoned(tz.clone()).ok()?.timestamp().as_millisecond();
            if at > after {
                return Some(at);
            }
            t = t.checked_add(jiff::Span::new().minutes(1)).ok()?;
        }
        None
    }

    fn day_matches(&self, t: DateTime) -> bool {
        let dom = usize::try_from(t.day()).is_ok_and(|d| self.days[d]);
        let dow =
            usize::try_from(t.weekday().to_sunday_zero_offset()).is_ok_and(|d| self.weekdays[d]);
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Parses a cron expression.
pub fn parse_cron(s: &str) -> Result<Cron, String> {
    let s = match s.trim() {
        "@hourly" => "0 * * * *",
        "@daily" | "@midnight" => "0 0 * * *",
        "@weekly" => "0 0 * * 0",
        "@monthly" => "0 0 1 * *",
        "@yearly" | "@annually" => "0 0 1 1 *",
        other => other,
    };
    let f: Vec<&str> = s.split_whitespace().collect();
    let [min, hour, dom, mon, dow] = f.as_slice() else {
        return Err(format!(
            "{s:?} has {} fields; cron has five: minute hour day-of-month month day-of-week",
            f.len()
        ));
    };
    let mut weekdays = [false; 8];
    field(dow, 0, 7, &DAYS, "day of week", &mut weekdays)?;
    weekdays[0] |= weekdays[7];
    let mut c = Cron {
        minutes: [false; 60],
        hours: [false; 24],
        days: [false; 32],
        months: [false; 13],
        weekdays: [false; 7],
        any_day: dom.starts_with('*'),
        any_weekday: dow.starts_with('*'),
    };
    c.weekdays.copy_from_slice(&weekdays[..7]);
    field(min, 0, 59, &[], "minute", &mut c.minutes)?;
    field(hour, 0, 23, &[], "hour", &mut c.hours)?;
    field(dom, 1, 31, &[], "day of month", &mut c.days)?;
    field(mon, 1, 12, &MONTHS, "month", &mut c.months)?;
    Ok(c)
}

/// Sets `set[i]` for every `i` the field names, within `lo..=hi`.
fn field(
    f: &str,
    lo: usize,
    hi: usize,
    names: &[&str],
    what: &str,
    set: &mut [bool],
) -> Result<(), String> {
    let value = |v: &str| -> Result<usize, String> {
        let upper = v.to_ascii_uppercase();
        // Month names count from 1, day names from 0.
        let named = names
            .iter()
            .position(|n| *n == upper)
            .map(|i| i + usize::from(lo == 1));
        let n = match named {
            Some(n) => n,
            None => v
                .parse::<usize>()
                .map_err(|_| format!("{what}: {v:?} is not a number"))?,
        };
        if n < lo || n > hi {
            return Err(format!("{what}: {n} is not between {lo} and {hi}"));
        }
        Ok(n)
    };
    for part in f.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<usize>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{what}: step {s:?} is not a positive number"))?,
            ),
            None => (part, 1),
        };
        let (a, b) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                None if step > 1 => (value(r)?, hi),
                None => {
                    let v = value(r)?;
                    (v, v)
                }
            },
        };
        if a > b {
            return Err(format!("{what}: the range {a}-{b} is backwards"));
        }
        for i in (a..=b).step_by(step) {
            set[i] = true;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ms(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    fn at(ms: i64) -> String {
        jiff::Timestamp::from_millisecond(ms).unwrap().to_string()
    }

    #[test]
    fn weekday_mornings_in_berlin_across_a_dst_change() {
        let s = parse(&json!({"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"})).unwrap();
        // Friday 2026-03-27 09:00 CET is 08:00Z; the next is Monday 2026-03-30, after the
        // change to CEST: 09:00 local is 07:00Z.
        let fri = s.next_after(ms("2026-03-26T08:00:00Z")).unwrap();
        assert_eq!(at(fri), "2026-03-27T08:00:00Z");
        assert_eq!(at(s.next_after(fri).unwrap()), "2026-03-30T07:00:00Z");
    }

    #[test]
    fn a_time_skipped_or_repeated_by_dst_fires_once() {
        let s = parse(&json!({"cron": "30 2 * * *", "timezone": "Europe/Berlin"})).unwrap();
        // 2026-03-29 02:30 does not exist in Berlin: it fires at 03:30 CEST (01:30Z).
        assert_eq!(
            at(s.next_after(ms("2026-03-28T12:00:00Z")).unwrap()),
            "2026-03-29T01:30:00Z"
        );
        // 2026-10-25 02:30 happens twice: once, then the next day.
        let first = s.next_after(ms("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(at(first), "2026-10-25T00:30:00Z");
        assert_eq!(at(s.next_after(first).unwrap()), "2026-10-26T01:30:00Z");
    }

    #[test]
    fn cron_fields_lists_ranges_steps_names_and_either_day() {
        let c = parse_cron("*/15 0-6/3 1,15 JAN-mar sun").unwrap();
        assert_eq!(c.minutes.iter().filter(|b| **b).count(), 4);
        assert!(c.hours[0] && c.hours[3] && c.hours[6] && !c.hours[9]);
        assert!(c.months[1] && c.months[3] && !c.months[4]);
        assert!(c.weekdays[0] && !c.weekdays[1]);
        assert_eq!(
            parse_cron("0 0 * * 7").unwrap().weekdays,
            parse_cron("0 0 * * 0").unwrap().weekdays
        );
        // Day of month 13 or any Friday (cron's "either").
        let s = parse(&json!({"cron": "0 12 13 * fri"})).unwrap();
        assert_eq!(
            at(s.next_after(ms("2026-11-01T00:00:00Z")).unwrap()),
            "2026-11-06T12:00:00Z"
        );
        assert_eq!(
            at(s.next_after(ms("2026-11-12T13:00:00Z")).unwrap()),
            "2026-11-13T12:00:00Z"
        );
        assert_eq!(
            parse_cron("@daily").unwrap(),
            parse_cron("0 0 * * *").unwrap()
        );
    }

    #[test]
    fn every_mistake_is_reported() {
        for (bad, says) in [
            (json!({"cron": "0 9 * *"}), "4 fields"),
            (
                json!({"cron": "61 * * * *"}),
                "minute: 61 is not between 0 and 59",
            ),
            (
                json!({"cron": "0 9 * * 1-5", "timezone": "Mars/Base"}),
                "not an IANA time zone",
            ),
            (json!({"cron": "5-1 * * * *"}), "backwards"),
            (json!({"cron": "*/0 * * * *"}), "step"),
            (json!({"interval_seconds": 0}), "interval_seconds"),
            (
                json!({"cron": "* * * * *", "interval_seconds": 5}),
                "exactly one",
            ),
            (
                json!({"cron": "* * * * *", "when": 1, "misfire": "later"}),
                "unknown key \"when\"",
            ),
            (
                json!({"cron": "* * * * *", "when": 1, "misfire": "later"}),
                "misfire must be",
            ),
        ] {
            let e = parse(&bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_missed_slot_is_skipped_or_run_once() {
        let skip = parse(&json!({"interval_seconds": 60})).unwrap();
        let t0 = ms("2026-11-30T00:00:00Z");
        // On time (within the grace): fire it; the next slot stays on the grid.
        assert_eq!(skip.fire(t0, t0 + 5_000), (Some(t0), Some(t0 + 60_000)));
        // Two slots due, both within the grace (a late takeover): the earlier first, then
        // the other; none is lost.
        let every = parse(&json!({"interval_seconds": 1})).unwrap();
        assert_eq!(every.fire(t0, t0 + 2_300), (Some(t0), Some(t0 + 1_000)));
        assert_eq!(
            every.fire(t0 + 1_000, t0 + 2_300),
            (Some(t0 + 1_000), Some(t0 + 2_000))
        );
        // Slots older than the grace are skipped up to the first one within it.
        assert_eq!(
            every.fire(t0, t0 + 70_000),
            (Some(t0 + 10_000), Some(t0 + 11_000))
        );
        // Down for ten minutes: the slots missed are not made up, the latest (10 s ago,
        // within the grace) fires.
        assert_eq!(
            skip.fire(t0, t0 + 610_000),
            (Some(t0 + 600_000), Some(t0 + 660_000))
        );
        // A daily slot missed by hours: skipped, or run once.
        let daily = parse(&json!({"cron": "0 9 * * *"})).unwrap();
        let nine = ms("2026-11-30T09:00:00Z");
        let later = ms("2026-11-30T15:00:00Z");
        assert_eq!(
            daily.fire(nine, later),
            (None, Some(ms("2026-12-01T09:00:00Z")))
        );
        let once = parse(&json!({"cron": "0 9 * * *", "misfire": "run_once"})).unwrap();
        assert_eq!(
            once.fire(nine, later),
            (Some(nine), Some(ms("2026-12-01T09:00:00Z")))
        );
    }
}
