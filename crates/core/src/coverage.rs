//! Whether the holiday list covers the time working-hours clocks started now will run.
//!
//! Holidays are a clock's data: a working-hours clock that runs into a year with no holiday file
//! counts that year's holidays as working days, and breaches early without anyone noticing. This
//! module says, from the registry and `now` alone, which year is missing; the components warn
//! with it at start and `refbus config check` prints it.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use chrono::{Datelike, NaiveDate};

use crate::calendar::Calendar;
use crate::clock::{CalendarKind, ClockPolicy};
use crate::escalation::Trigger;
use crate::ids::ClockId;
use crate::registry::{PolicySet, Registry};
use crate::time::{Timestamp, format_duration};

/// A year working-hours clocks started now may reach, with no holiday file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolidayGap {
    /// The first year reached that no holiday file covers.
    pub year: i32,
    /// The day `now` falls on (in the agency whose clock reaches furthest).
    pub today: NaiveDate,
    /// The last day a clock started now may still be counting (escalations included).
    pub until: NaiveDate,
    /// The clock that reaches furthest, and how much working time it counts.
    pub clock: ClockId,
    pub reach: Duration,
    /// The years the holiday files cover.
    pub covered: BTreeSet<i32>,
}

impl fmt::Display for HolidayGap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let year = self.year;
        let covered = if self.covered.is_empty() {
            "no year".to_owned()
        } else {
            self.covered
                .iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(
            f,
            "no holiday file for {year}: the holiday files cover {covered}, but a working-hours \
             clock started on {} can run until {} (clock {}, {} of working time with its \
             escalations), so ",
            self.today,
            self.until,
            self.clock,
            format_duration(self.reach)
        )?;
        // New Year's Day is the one holiday known without the year's file.
        if self.today.year() < year {
            write!(
                f,
                "working-day clocks will count 1 January {year} (New Year's Day) and every other \
                 holiday of {year} as a working day"
            )?;
        } else {
            write!(
                f,
                "working-day clocks are counting every holiday of {year} as a working day"
            )?;
        }
        write!(
            f,
            "; add the holiday file for {year} to [deployment] holidays"
        )
    }
}

/// The first year that working-hours clocks started at `now`, under the policy in force, may
/// reach without a holiday file; `None` when every year they may reach is covered (or no
/// working-hours clock is in force).
pub fn holiday_gap(registry: &Registry, now: Timestamp) -> Option<HolidayGap> {
    let policy = registry.policy_in_force(now)?;
    let (clock, reach) = policy
        .clocks
        .iter()
        .filter(|clock| clock.calendar == CalendarKind::WorkingHours)
        .map(|clock| (clock, reach(policy, clock)))
        .max_by_key(|(_, reach)| *reach)?;
    let mut gap: Option<HolidayGap> = None;
    // Every agency's calendar: the one with the least working time per week reaches furthest.
    for agency in registry.agencies.values() {
        let hours = &agency.working_hours;
        let Some(end) = Calendar::WorkingHours(hours).advance(now, reach) else {
            continue;
        };
        let local = |at: Timestamp| at.to_chrono().with_timezone(&hours.time_zone).date_naive();
        let (today, until) = (local(now), local(end));
        let Some(year) =
            (today.year()..=until.year()).find(|year| !registry.holiday_years.contains(year))
        else {
            continue;
        };
        let earlier = gap.as_ref().is_none_or(|gap| {
            (year, std::cmp::Reverse(until)) < (gap.year, std::cmp::Reverse(gap.until))
        });
        if earlier {
            gap = Some(HolidayGap {
                year,
                today,
                until,
                clock: clock.id.clone(),
                reach,
                covered: registry.holiday_years.clone(),
            });
        }
    }
    gap
}

/// The working time a clock counts from its start to its last escalation level (repeats
/// included): all of it is counted on the same calendar.
fn reach(policy: &PolicySet, clock: &ClockPolicy) -> Duration {
    let escalation = clock
        .escalation
        .as_ref()
        .and_then(|id| policy.escalations.get(id))
        .map(|escalation| {
            escalation
                .levels
                .iter()
                .map(|level| {
                    let at = match level.trigger {
                        Trigger::Warning(_) | Trigger::Breach => Duration::ZERO,
                        Trigger::AfterBreach(delay) => delay,
                    };
                    at + level.repeat_every * u32::from(level.repeat)
                })
                .max()
                .unwrap_or_default()
        })
        .unwrap_or_default();
    clock.target + escalation
}
