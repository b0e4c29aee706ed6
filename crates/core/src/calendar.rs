//! Calendars: how much clock time passes between two instants.
//!
//! A statutory or emergency clock runs on the wall clock (24x7). A public-service clock runs on
//! the responsible agency's working hours: in its own time zone (WIB, WITA, WIT), on its weekly
//! hours, skipping the national holidays and cuti bersama of the holiday list.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{Datelike, Days, NaiveDate, NaiveTime, TimeZone};
use chrono_tz::Tz;

use crate::time::Timestamp;

/// How far ahead a working-hours search goes before giving up (a calendar with no working time
/// at all is refused by configuration checks; this only bounds a bad one).
const SEARCH_DAYS: u64 = 3 * 366;

/// A daily working window in local time, `[start, end)`, in minutes after midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Window {
    pub start_minute: u16,
    pub end_minute: u16,
}

impl Window {
    /// A window from `start` to `end` minutes after midnight; `end` may be 1440 (midnight).
    pub fn new(start_minute: u16, end_minute: u16) -> Option<Window> {
        (start_minute < end_minute && end_minute <= 24 * 60).then_some(Window {
            start_minute,
            end_minute,
        })
    }

    pub fn length(&self) -> Duration {
        Duration::from_secs(u64::from(self.end_minute - self.start_minute) * 60)
    }
}

/// Working hours of one agency.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkingHours {
    pub time_zone: Tz,
    /// Windows per weekday, Monday first; each day's windows sorted and not overlapping.
    pub week: [Vec<Window>; 7],
    /// Days with no working hours at all: national holidays, cuti bersama, local holidays.
    pub holidays: BTreeSet<NaiveDate>,
}

/// The calendar a clock runs on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Calendar<'a> {
    WallClock,
    WorkingHours(&'a WorkingHours),
}

impl Calendar<'_> {
    /// Clock time in `[from, to)`: all of it on the wall clock, working time otherwise.
    pub fn elapsed(&self, from: Timestamp, to: Timestamp) -> Duration {
        if to <= from {
            return Duration::ZERO;
        }
        match self {
            Calendar::WallClock => to.since(from),
            Calendar::WorkingHours(hours) => {
                let mut total = Duration::ZERO;
                for (start, end) in hours.windows_from(from) {
                    if start >= to {
                        break;
                    }
                    let (start, end) = (start.max(from), end.min(to));
                    if end > start {
                        total += end.since(start);
                    }
                }
                total
            }
        }
    }

    /// The first instant at which `amount` of clock time has passed since `from`.
    /// `None` only for a calendar without working time in the next three years.
    pub fn advance(&self, from: Timestamp, amount: Duration) -> Option<Timestamp> {
        if amount.is_zero() {
            return Some(from);
        }
        match self {
            Calendar::WallClock => Some(from.plus(amount)),
            Calendar::WorkingHours(hours) => {
                let mut remaining = amount;
                for (start, end) in hours.windows_from(from) {
                    let start = start.max(from);
                    if end <= start {
                        continue;
                    }
                    let available = end.since(start);
                    if remaining <= available {
                        return Some(start.plus(remaining));
                    }
                    remaining -= available;
                }
                None
            }
        }
    }
}

impl WorkingHours {
    /// Working windows as UTC intervals, in order, from the local day containing `from`
    /// (windows ending before `from` are included; callers clip).
    fn windows_from(&self, from: Timestamp) -> impl Iterator<Item = (Timestamp, Timestamp)> + '_ {
        let first_day = from.to_chrono().with_timezone(&self.time_zone).date_naive();
        (0..SEARCH_DAYS)
            .filter_map(move |offset| first_day.checked_add_days(Days::new(offset)))
            .filter(|day| !self.holidays.contains(day))
            .flat_map(move |day| {
                let windows = &self.week[day.weekday().num_days_from_monday() as usize];
                windows
                    .iter()
                    .filter_map(move |window| self.window_on(day, *window))
            })
    }

    fn window_on(&self, day: NaiveDate, window: Window) -> Option<(Timestamp, Timestamp)> {
        Some((
            self.local_instant(day, window.start_minute)?,
            self.local_instant(day, window.end_minute)?,
        ))
    }

    fn local_instant(&self, day: NaiveDate, minute: u16) -> Option<Timestamp> {
        let (day, minute) = if minute == 24 * 60 {
            (day.checked_add_days(Days::new(1))?, 0)
        } else {
            (day, minute)
        };
        let time = NaiveTime::from_hms_opt(u32::from(minute / 60), u32::from(minute % 60), 0)?;
        let local = self
            .time_zone
            .from_local_datetime(&day.and_time(time))
            .earliest()?;
        Some(Timestamp::from_chrono(&local))
    }

    /// Total working time in an ordinary week (no holidays).
    pub fn weekly_total(&self) -> Duration {
        self.week.iter().flatten().map(Window::length).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    fn hours(h: u64) -> Duration {
        Duration::from_secs(h * 3600)
    }

    /// Monday to Thursday 08:00-16:00, Friday 08:00-11:30 and 13:00-16:30 (Friday prayers),
    /// closed on weekends: a common kabupaten office week.
    fn office(tz: Tz, holidays: &[&str]) -> WorkingHours {
        let day = vec![Window::new(8 * 60, 16 * 60).unwrap()];
        let friday = vec![
            Window::new(8 * 60, 11 * 60 + 30).unwrap(),
            Window::new(13 * 60, 16 * 60 + 30).unwrap(),
        ];
        WorkingHours {
            time_zone: tz,
            week: [
                day.clone(),
                day.clone(),
                day.clone(),
                day,
                friday,
                vec![],
                vec![],
            ],
            holidays: holidays.iter().map(|d| d.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn wall_clock_counts_every_hour() {
        let start = at("2026-03-06T22:00:00+08:00");
        assert_eq!(
            Calendar::WallClock.advance(start, hours(72)),
            Some(at("2026-03-09T22:00:00+08:00"))
        );
        assert_eq!(
            Calendar::WallClock.elapsed(start, at("2026-03-07T01:00:00+08:00")),
            hours(3)
        );
    }

    #[test]
    fn working_time_skips_the_weekend_in_wita() {
        // Friday 6 March 2026 15:00 WITA, 8 working hours: 1.5 h left on Friday (until 16:30),
        // nothing on Saturday or Sunday, 6.5 h on Monday from 08:00: Monday 14:30 WITA.
        let hours_wita = office(chrono_tz::Asia::Makassar, &[]);
        let calendar = Calendar::WorkingHours(&hours_wita);
        let start = at("2026-03-06T15:00:00+08:00");
        let due = calendar.advance(start, hours(8)).unwrap();
        assert_eq!(due, at("2026-03-09T14:30:00+08:00"));
        assert_eq!(calendar.elapsed(start, due), hours(8));
    }

    #[test]
    fn working_time_skips_a_national_holiday() {
        // Nyepi falls on Thursday 19 March 2026 and Idul Fitri cuti bersama on Friday 20 March.
        // Wednesday 18 March 10:00 WIB plus 8 working hours: 6 h on Wednesday, the holidays and
        // the weekend are skipped, 2 h on Monday 23 March: 10:00 WIB.
        let hours_wib = office(chrono_tz::Asia::Jakarta, &["2026-03-19", "2026-03-20"]);
        let calendar = Calendar::WorkingHours(&hours_wib);
        let due = calendar
            .advance(at("2026-03-18T10:00:00+07:00"), hours(8))
            .unwrap();
        assert_eq!(due, at("2026-03-23T10:00:00+07:00"));
    }

    #[test]
    fn working_time_uses_the_agency_time_zone() {
        // The same instant, 07:30 UTC on Monday 2 March 2026, is 14:30 WIB, 15:30 WITA and
        // 16:30 WIT: 1.5 h, 0.5 h and no working time left that day.
        let start = at("2026-03-02T07:30:00Z");
        let two_hours = hours(2);
        let advance = |tz| Calendar::WorkingHours(&office(tz, &[])).advance(start, two_hours);
        let jakarta = advance(chrono_tz::Asia::Jakarta);
        let makassar = advance(chrono_tz::Asia::Makassar);
        let jayapura = advance(chrono_tz::Asia::Jayapura);
        assert_eq!(jakarta, Some(at("2026-03-03T08:30:00+07:00")));
        assert_eq!(makassar, Some(at("2026-03-03T09:30:00+08:00")));
        assert_eq!(jayapura, Some(at("2026-03-03T10:00:00+09:00")));
    }

    #[test]
    fn before_opening_starts_at_opening_and_friday_has_a_break() {
        let hours_wita = office(chrono_tz::Asia::Makassar, &[]);
        let calendar = Calendar::WorkingHours(&hours_wita);
        // Friday 06:00: work starts 08:00; 4 h = 3.5 h before the break + 0.5 h after it.
        let due = calendar
            .advance(at("2026-03-06T06:00:00+08:00"), hours(4))
            .unwrap();
        assert_eq!(due, at("2026-03-06T13:30:00+08:00"));
    }

    #[test]
    fn elapsed_is_zero_outside_working_hours() {
        let hours_wita = office(chrono_tz::Asia::Makassar, &[]);
        let calendar = Calendar::WorkingHours(&hours_wita);
        let saturday = at("2026-03-07T09:00:00+08:00");
        assert_eq!(
            calendar.elapsed(saturday, at("2026-03-08T20:00:00+08:00")),
            Duration::ZERO
        );
        assert_eq!(calendar.advance(saturday, Duration::ZERO), Some(saturday));
    }

    #[test]
    fn a_calendar_without_working_time_gives_no_deadline() {
        let closed = WorkingHours {
            time_zone: chrono_tz::Asia::Jakarta,
            week: Default::default(),
            holidays: BTreeSet::new(),
        };
        assert_eq!(
            Calendar::WorkingHours(&closed).advance(at("2026-03-02T00:00:00Z"), hours(1)),
            None
        );
    }
}
