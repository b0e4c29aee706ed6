//! Whether the holiday list covers the working-hours clocks started at a given moment, against
//! the fixture: a routine acknowledge clock of 8 working hours whose "standard" escalation runs
//! 2 working hours past the breach, office hours Monday to Friday (WITA), holidays of 2026 only.

mod common;

use common::*;
use refbus_core::coverage::holiday_gap;

#[test]
fn a_clock_within_the_covered_year_needs_nothing_more() {
    assert_eq!(
        holiday_gap(&registry(), at("2026-03-02T09:00:00+08:00")),
        None
    );
}

#[test]
fn a_clock_that_runs_into_the_next_year_names_it_and_new_years_day() {
    // Thursday 31 December 09:00: 7 working hours that day, the rest on Friday 1 January 2027.
    let gap = holiday_gap(&registry(), at("2026-12-31T09:00:00+08:00")).expect("2027 is missing");
    assert_eq!(gap.year, 2027);
    assert_eq!(gap.until.to_string(), "2027-01-01");
    assert_eq!(gap.clock.as_str(), "acknowledge_routine");
    assert_eq!(gap.reach, hours(10));
    let message = gap.to_string();
    assert!(message.starts_with("no holiday file for 2027"), "{message}");
    assert!(
        message.contains(
            "working-day clocks will count 1 January 2027 (New Year's Day) and every other holiday of 2027 as a working day"
        ),
        "{message}"
    );
}

#[test]
fn the_escalations_after_the_breach_count_too() {
    // Wednesday 30 December 15:00: the 8 h target ends on the 31st, its escalation 2 working
    // hours later on 1 January.
    let gap = holiday_gap(&registry(), at("2026-12-30T15:00:00+08:00")).expect("2027 is missing");
    assert_eq!(gap.year, 2027);
}

#[test]
fn a_year_already_begun_without_its_file_is_said_to_be_counting_now() {
    let gap = holiday_gap(&registry(), at("2027-02-01T09:00:00+08:00")).expect("2027 is missing");
    assert_eq!(gap.year, 2027);
    assert!(
        gap.to_string()
            .contains("are counting every holiday of 2027 as a working day"),
        "{gap}"
    );
}

#[test]
fn the_next_years_file_covers_the_turn_of_the_year() {
    let mut registry = registry();
    registry.holiday_years.insert(2027);
    assert_eq!(
        holiday_gap(&registry, at("2026-12-31T09:00:00+08:00")),
        None
    );
}

#[test]
fn a_policy_without_working_hours_clocks_needs_no_holidays() {
    let mut registry = registry();
    registry.holiday_years.clear();
    for policy in &mut registry.policies {
        policy
            .clocks
            .retain(|clock| clock.calendar != refbus_core::clock::CalendarKind::WorkingHours);
    }
    assert_eq!(
        holiday_gap(&registry, at("2030-06-03T09:00:00+08:00")),
        None
    );
}
