//! The configuration shipped in `deploy/config/` loads without a single problem, and says what
//! DESIGN section 3 promises.

use std::path::PathBuf;
use std::time::Duration;

use refbus_core::clock::{CalendarKind, ClockStart};
use refbus_core::ids::{AgencyId, ClockId, PolicyVersion};
use refbus_core::referral::{Milestone, Party, Status};
use refbus_core::{Registry, Timestamp};

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/config")
        .join(file)
}

fn load(file: &str) -> Registry {
    match refbus_config::load(deploy(file)) {
        Ok(registry) => registry,
        Err(report) => panic!("{file} is invalid:\n{report}"),
    }
}

fn hours(count: u64) -> Duration {
    Duration::from_secs(count * 3600)
}

#[test]
fn the_maros_default_is_valid_and_keeps_the_legal_clocks() {
    let registry = load("refbus.toml");
    assert_eq!(registry.coordinator.as_str(), "maros-bappeda");
    for agency in [
        "maros-dinsos",
        "maros-dp3a",
        "maros-uptd-ppa",
        "polres-maros",
        "maros-bagian-hukum",
        "maros-rsud",
        "puskesos-bontoa",
        "maros-bappeda",
    ] {
        let id = AgencyId::new(agency).unwrap();
        let found = registry
            .agency(&id)
            .unwrap_or_else(|| panic!("{agency} is missing"));
        assert_eq!(found.working_hours.time_zone, chrono_tz::Asia::Makassar);
    }
    let policy = registry
        .policy(&PolicyVersion::new("2026-01").unwrap())
        .expect("policy 2026-01");
    let clock = |id: &str| {
        policy
            .clocks
            .iter()
            .find(|clock| clock.id == ClockId::new(id).unwrap())
            .unwrap_or_else(|| panic!("clock {id} is missing"))
    };

    let pasal_41 = clock("tpks_pasal_41");
    assert_eq!(pasal_41.start, ClockStart::CaseReported);
    assert_eq!(pasal_41.target, hours(72));
    assert_eq!(pasal_41.calendar, CalendarKind::WallClock);
    assert_eq!(pasal_41.responsible, Party::Sender);
    assert!(!pasal_41.pause_on_hold);
    assert_eq!(clock("tpks_pasal_42").target, hours(24));
    assert_eq!(clock("acknowledge_emergency").target, hours(1));
    assert_eq!(clock("acknowledge_urgent").target, hours(4));
    let routine = clock("acknowledge_routine");
    assert_eq!(routine.target, hours(8));
    assert_eq!(routine.calendar, CalendarKind::WorkingHours);
    assert_eq!(clock("shelter_start").target, hours(2));
    assert_eq!(clock("slrt_first_response").target, hours(72));
    assert_eq!(clock("slrt_resolution").target, hours(14 * 8));
    let pending = clock("reroute_pending");
    assert_eq!(pending.start, ClockStart::On(Milestone::RerouteRequested));
    assert_eq!(pending.stop, vec![Milestone::Rerouted]);
    assert_eq!(policy.reroutes[0].on, Status::Rejected);
    assert_eq!(policy.reroutes[0].delay, Duration::from_secs(15 * 60));
    for id in ["standard", "statutory", "emergency", "reroute_pending"] {
        assert!(
            policy.escalations.keys().any(|key| key.as_str() == id),
            "escalation {id} is missing"
        );
    }
}

#[test]
fn office_agencies_close_on_holidays_and_round_the_clock_ones_do_not() {
    let registry = load("refbus.toml");
    let nyepi = chrono::NaiveDate::from_ymd_opt(2026, 3, 19).unwrap();
    let agency = |id: &str| registry.agency(&AgencyId::new(id).unwrap()).unwrap();
    assert!(
        agency("maros-dinsos")
            .working_hours
            .holidays
            .contains(&nyepi)
    );
    assert_eq!(agency("maros-dinsos").working_hours.holidays.len(), 25);
    assert!(
        !agency("polres-maros")
            .working_hours
            .holidays
            .contains(&nyepi)
    );
    assert_eq!(
        agency("polres-maros").working_hours.weekly_total(),
        hours(7 * 24)
    );
    // Monday to Thursday 8.5 h, Friday 4 h + 3.5 h.
    assert_eq!(
        agency("maros-dinsos").working_hours.weekly_total(),
        Duration::from_secs((4 * 510 + 450) * 60)
    );
}

#[test]
fn the_demo_uses_the_same_agencies_with_clocks_in_minutes() {
    let demo = load("demo.toml");
    let production = load("refbus.toml");
    assert_eq!(demo.agencies, production.agencies);
    let policy = demo
        .policy_in_force(Timestamp::parse_rfc3339("2026-03-06T15:00:00+08:00").unwrap())
        .expect("a demo policy in force");
    for clock in &policy.clocks {
        assert!(clock.target <= Duration::from_secs(10 * 60), "{}", clock.id);
        assert_eq!(clock.calendar, CalendarKind::WallClock, "{}", clock.id);
    }
}
