//! The small text grammars of refbus files: durations, working-hour windows, percentages,
//! escalation triggers and targets, clock milestones and time zones.
//!
//! Each parser takes the text as written and returns the value, or a message that says what is
//! wrong and shows a correct example.

use std::time::Duration;

use chrono_tz::Tz;
use refbus_core::calendar::Window;
use refbus_core::clock::ClockStart;
use refbus_core::escalation::{Role, Target, Trigger};
use refbus_core::ids::AgencyId;
use refbus_core::referral::{Milestone, Party, Status};

use crate::suggest::{did_you_mean, hint};

/// How a duration counts days, which matters for the calendar it is used with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DayUnit {
    /// Hours, minutes or seconds only: the same on either calendar.
    None,
    /// `d`: 24 hours each.
    WallDays,
    /// `working day(s)` or `working hour(s)`: counted in working time.
    Working,
}

/// A parsed duration and the kind of days it was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Amount {
    pub(crate) duration: Duration,
    pub(crate) days: DayUnit,
}

const DURATION_EXAMPLES: &str =
    "write a whole number and a unit, e.g. \"90m\", \"2h30m\", \"72h\", \"3d\", \"1 working day\"";

/// `90m`, `2h30m`, `72h`, `3d` (days of 24 h), `45s`, `1 working day`, `14 working days`,
/// `4 working hours`. A working day is `working_day` of working time.
pub(crate) fn parse_duration(text: &str, working_day: Duration) -> Result<Amount, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err(format!(
            "\"{text}\" is negative: a duration must be positive"
        ));
    }
    let words: Vec<&str> = trimmed.split_whitespace().collect();
    if let [count, "working", unit] = words.as_slice() {
        let count: u64 = count
            .parse()
            .map_err(|_| format!("\"{text}\" is not a duration: {DURATION_EXAMPLES}"))?;
        let each = match *unit {
            "day" | "days" => working_day,
            "hour" | "hours" => Duration::from_secs(3600),
            _ => {
                return Err(format!(
                    "\"{text}\" is not a duration: say \"working day(s)\" or \"working hour(s)\""
                ));
            }
        };
        return Ok(Amount {
            duration: each.saturating_mul(u32::try_from(count).unwrap_or(u32::MAX)),
            days: DayUnit::Working,
        });
    }
    if words.contains(&"working") {
        return Err(format!(
            "\"{text}\" is not a duration: write \"N working days\" or \"N working hours\" alone, e.g. \"14 working days\""
        ));
    }
    parse_wall_duration(trimmed)
        .ok_or_else(|| format!("\"{text}\" is not a duration: {DURATION_EXAMPLES}"))
}

/// A sequence of `<number><unit>` parts, largest unit first, each unit at most once.
fn parse_wall_duration(text: &str) -> Option<Amount> {
    let mut rest = text;
    let mut total: u64 = 0;
    let mut days = DayUnit::None;
    let mut last_rank = usize::MAX;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let (seconds, rank) = match &rest[..unit_len] {
            "d" | "day" | "days" => (86_400, 3),
            "h" | "hour" | "hours" => (3_600, 2),
            "m" | "min" | "minute" | "minutes" => (60, 1),
            "s" | "second" | "seconds" => (1, 0),
            _ => return None,
        };
        if rank >= last_rank {
            return None;
        }
        if rank == 3 {
            days = DayUnit::WallDays;
        }
        last_rank = rank;
        total = total.checked_add(number.checked_mul(seconds)?)?;
        rest = rest[unit_len..].trim_start();
        parts += 1;
    }
    (parts > 0).then_some(Amount {
        duration: Duration::from_secs(total),
        days,
    })
}

/// `07:30-16:00`: a daily window in local time; `24:00` may end a window.
pub(crate) fn parse_window(text: &str) -> Result<Window, String> {
    let malformed = || {
        format!(
            "\"{text}\" is not a time window: write \"HH:MM-HH:MM\" in 24-hour local time, e.g. \"07:30-16:00\""
        )
    };
    let (start, end) = text.split_once('-').ok_or_else(malformed)?;
    let start = parse_clock_time(start.trim()).ok_or_else(malformed)?;
    let end = parse_clock_time(end.trim()).ok_or_else(malformed)?;
    if start >= 24 * 60 {
        return Err(format!("\"{text}\": a window cannot start at 24:00"));
    }
    Window::new(start, end).ok_or_else(|| {
        format!("\"{text}\" ends before it starts: a window must end after it starts on the same day (use \"24:00\" for midnight)")
    })
}

/// Minutes after midnight of `HH:MM` (`24:00` is 1440).
fn parse_clock_time(text: &str) -> Option<u16> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.is_empty() || hours.len() > 2 || minutes.len() != 2 {
        return None;
    }
    let hours: u16 = hours.parse().ok()?;
    let minutes: u16 = minutes.parse().ok()?;
    let valid = (hours < 24 && minutes < 60) || (hours == 24 && minutes == 0);
    valid.then_some(hours * 60 + minutes)
}

/// `50%` or `62.5%`, strictly between 0% and 100%, as thousandths.
pub(crate) fn parse_percent(text: &str) -> Result<u16, String> {
    let malformed = || format!("\"{text}\" is not a percentage: write e.g. \"50%\" or \"62.5%\"");
    let number = text.trim().strip_suffix('%').ok_or_else(malformed)?.trim();
    let (whole, tenths) = match number.split_once('.') {
        Some((whole, tenth)) if tenth.len() == 1 => (whole, tenth),
        Some(_) => return Err(malformed()),
        None => (number, "0"),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let whole: u32 = whole.parse().map_err(|_| malformed())?;
    let tenths: u32 = tenths.parse().map_err(|_| malformed())?;
    let permille = whole.saturating_mul(10).saturating_add(tenths);
    if permille == 0 || permille >= 1000 {
        return Err(format!(
            "\"{text}\" is outside 0%..100%: a warning comes before the breach (100%), after the start"
        ));
    }
    u16::try_from(permille).map_err(|_| malformed())
}

/// `75%`, `breach`, or `breach + 2h`.
pub(crate) fn parse_trigger(text: &str, working_day: Duration) -> Result<Trigger, String> {
    let trimmed = text.trim();
    if trimmed == "breach" {
        return Ok(Trigger::Breach);
    }
    if let Some(delay) = trimmed.strip_prefix("breach") {
        let delay = delay
            .trim()
            .strip_prefix('+')
            .ok_or_else(|| format!("\"{text}\" is not a trigger: write \"breach + 2h\""))?;
        let amount = parse_duration(delay, working_day)?;
        if amount.duration.is_zero() {
            return Err(format!(
                "\"{text}\": a delay after the breach must be positive (write \"breach\" for the breach itself)"
            ));
        }
        return Ok(Trigger::AfterBreach(amount.duration));
    }
    if trimmed.ends_with('%') {
        return parse_percent(trimmed).map(Trigger::Warning);
    }
    Err(format!(
        "\"{text}\" is not a trigger: write a percentage of the target (\"75%\"), \"breach\", or \"breach + 2h\""
    ))
}

const TARGET_FORMS: &str = "\"recipient.supervisor\", \"sender.handling_operator\", \"responsible.head\", \"coordinator\", \"alternate\" or \"agency:polres-maros.head\"";

/// `recipient.supervisor`, `sender.head`, `responsible.handling_operator`, `coordinator`,
/// `alternate`, `agency:<agency id>.<role>`.
pub(crate) fn parse_target(text: &str) -> Result<Target, String> {
    let trimmed = text.trim();
    match trimmed {
        "coordinator" => return Ok(Target::Coordinator),
        "alternate" => return Ok(Target::Alternate),
        _ => {}
    }
    if let Some(rest) = trimmed.strip_prefix("agency:") {
        let (agency, role) = rest.rsplit_once('.').ok_or_else(|| {
            format!("\"{text}\" names no role: write \"agency:<agency id>.<role>\", e.g. \"agency:polres-maros.head\"")
        })?;
        let agency = AgencyId::new(agency).map_err(|error| format!("\"{text}\": {error}"))?;
        return Ok(Target::Agency {
            agency,
            role: parse_role(text, role)?,
        });
    }
    let Some((who, role)) = trimmed.split_once('.') else {
        return Err(format!(
            "\"{text}\" is not an escalation target: write one of {TARGET_FORMS}"
        ));
    };
    let role = parse_role(text, role)?;
    match who {
        "sender" => Ok(Target::Party {
            party: Party::Sender,
            role,
        }),
        "recipient" => Ok(Target::Party {
            party: Party::Recipient,
            role,
        }),
        "responsible" => Ok(Target::Responsible { role }),
        _ => Err(format!(
            "\"{text}\": `{who}` is not sender, recipient or responsible{}; targets are {TARGET_FORMS}",
            hint(who, ["sender", "recipient", "responsible"])
        )),
    }
}

fn parse_role(text: &str, role: &str) -> Result<Role, String> {
    Role::parse(role).ok_or_else(|| {
        format!(
            "\"{text}\": `{role}` is not a role{}; roles are handling_operator, supervisor, head, coordinator",
            hint(role, Role::ALL.map(Role::as_str))
        )
    })
}

/// The names a clock can start or stop on: every status, plus the two reroute steps.
pub(crate) fn milestone_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = Status::ALL.iter().map(|status| status.as_str()).collect();
    names.push("reroute_requested");
    names
}

/// A status name, `reroute_requested`, or `rerouted` (the step that links the replacement
/// referral, whether or not the referral was already closed).
pub(crate) fn parse_milestone(text: &str) -> Result<Milestone, String> {
    match text {
        "reroute_requested" => Ok(Milestone::RerouteRequested),
        "rerouted" => Ok(Milestone::Rerouted),
        _ => Status::parse(text).map(Milestone::Entered).ok_or_else(|| {
            format!(
                "\"{text}\" is not a status{}; use one of: {}",
                hint(text, milestone_names()),
                milestone_names().join(", ")
            )
        }),
    }
}

/// A milestone, or `case_reported` (when the person reported to the sender).
pub(crate) fn parse_start(text: &str) -> Result<ClockStart, String> {
    if text == "case_reported" {
        return Ok(ClockStart::CaseReported);
    }
    parse_milestone(text).map(ClockStart::On).map_err(|_| {
        let mut names = milestone_names();
        names.push("case_reported");
        format!(
            "\"{text}\" is not a clock start{}; use one of: {}",
            hint(text, names.iter().copied()),
            names.join(", ")
        )
    })
}

/// An IANA time zone name, with help for the Indonesian abbreviations people write instead.
pub(crate) fn parse_time_zone(text: &str) -> Result<Tz, String> {
    if let Ok(zone) = text.parse::<Tz>() {
        return Ok(zone);
    }
    let indonesian = match text.to_uppercase().as_str() {
        "WIB" => Some("Asia/Jakarta (or Asia/Pontianak in West and Central Kalimantan)"),
        "WITA" => Some("Asia/Makassar"),
        "WIT" => Some("Asia/Jayapura"),
        _ => None,
    };
    if let Some(name) = indonesian {
        return Err(format!(
            "\"{text}\" is an abbreviation, not an IANA time zone: write {name}"
        ));
    }
    let names = chrono_tz::TZ_VARIANTS.iter().map(|zone| zone.name());
    let advice = match did_you_mean(text, names) {
        Some(near) => format!(" (did you mean \"{near}\"?)"),
        None => {
            "; Indonesia uses Asia/Jakarta and Asia/Pontianak (WIB), Asia/Makassar (WITA), Asia/Jayapura (WIT)".to_owned()
        }
    };
    Err(format!("\"{text}\" is not an IANA time zone{advice}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(8 * 3600);

    fn duration(text: &str) -> Result<(u64, DayUnit), String> {
        parse_duration(text, DAY).map(|amount| (amount.duration.as_secs(), amount.days))
    }

    #[test]
    fn durations_in_every_written_form() {
        assert_eq!(duration("90m"), Ok((5400, DayUnit::None)));
        assert_eq!(duration("2h30m"), Ok((9000, DayUnit::None)));
        assert_eq!(duration("2h 30m"), Ok((9000, DayUnit::None)));
        assert_eq!(duration("72h"), Ok((259_200, DayUnit::None)));
        assert_eq!(duration("3d"), Ok((259_200, DayUnit::WallDays)));
        assert_eq!(duration("3 days"), Ok((259_200, DayUnit::WallDays)));
        assert_eq!(duration("1 working day"), Ok((28_800, DayUnit::Working)));
        assert_eq!(duration("14 working days"), Ok((403_200, DayUnit::Working)));
        assert_eq!(duration("4 working hours"), Ok((14_400, DayUnit::Working)));
        assert_eq!(duration("0m"), Ok((0, DayUnit::None)));
    }

    #[test]
    fn malformed_durations_explain_themselves() {
        for bad in [
            "",
            "1.5h",
            "h",
            "10",
            "3 weeks",
            "30m2h",
            "1h1h",
            "2 working",
            "a working day",
        ] {
            let error = duration(bad).unwrap_err();
            assert!(error.contains("not a duration"), "{bad}: {error}");
        }
        assert!(duration("-1h").unwrap_err().contains("negative"));
    }

    #[test]
    fn windows_are_checked() {
        assert_eq!(
            parse_window("07:30-16:00"),
            Ok(Window::new(450, 960).unwrap())
        );
        assert_eq!(
            parse_window("00:00-24:00"),
            Ok(Window::new(0, 1440).unwrap())
        );
        assert!(
            parse_window("16:00-07:30")
                .unwrap_err()
                .contains("ends before it starts")
        );
        assert!(
            parse_window("7.30-16.00")
                .unwrap_err()
                .contains("HH:MM-HH:MM")
        );
        assert!(parse_window("07:30-24:30").is_err());
        assert!(parse_window("24:00-24:00").is_err());
        assert!(parse_window("07:60-08:00").is_err());
    }

    #[test]
    fn percentages_stay_inside_the_target() {
        assert_eq!(parse_percent("50%"), Ok(500));
        assert_eq!(parse_percent("62.5%"), Ok(625));
        assert!(parse_percent("0%").unwrap_err().contains("outside"));
        assert!(parse_percent("100%").unwrap_err().contains("outside"));
        assert!(parse_percent("150%").is_err());
        assert!(parse_percent("50").is_err());
        assert!(parse_percent("-5%").is_err());
    }

    #[test]
    fn triggers() {
        assert_eq!(parse_trigger("75%", DAY), Ok(Trigger::Warning(750)));
        assert_eq!(parse_trigger("breach", DAY), Ok(Trigger::Breach));
        assert_eq!(
            parse_trigger("breach + 2h", DAY),
            Ok(Trigger::AfterBreach(Duration::from_secs(7200)))
        );
        assert!(parse_trigger("breach + 0m", DAY).is_err());
        assert!(parse_trigger("after breach", DAY).is_err());
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("recipient.supervisor"),
            Ok(Target::Party {
                party: Party::Recipient,
                role: Role::Supervisor
            })
        );
        assert_eq!(parse_target("coordinator"), Ok(Target::Coordinator));
        assert_eq!(
            parse_target("agency:polres-maros.head"),
            Ok(Target::Agency {
                agency: AgencyId::new("polres-maros").unwrap(),
                role: Role::Head
            })
        );
        assert!(
            parse_target("recipient.supervsor")
                .unwrap_err()
                .contains("did you mean \"supervisor\"")
        );
        assert!(
            parse_target("recipent.head")
                .unwrap_err()
                .contains("did you mean \"recipient\"")
        );
        assert!(parse_target("agency:Polres.head").is_err());
        assert!(parse_target("everyone").is_err());
    }

    #[test]
    fn milestones_and_starts() {
        assert_eq!(
            parse_milestone("accepted"),
            Ok(Milestone::Entered(Status::Accepted))
        );
        assert_eq!(parse_milestone("rerouted"), Ok(Milestone::Rerouted));
        assert_eq!(parse_start("case_reported"), Ok(ClockStart::CaseReported));
        assert!(
            parse_milestone("acepted")
                .unwrap_err()
                .contains("did you mean \"accepted\"")
        );
    }

    #[test]
    fn time_zones() {
        for zone in [
            "Asia/Jakarta",
            "Asia/Makassar",
            "Asia/Jayapura",
            "Asia/Pontianak",
            "Europe/Amsterdam",
        ] {
            assert!(parse_time_zone(zone).is_ok(), "{zone}");
        }
        assert!(
            parse_time_zone("WITA")
                .unwrap_err()
                .contains("Asia/Makassar")
        );
        assert!(
            parse_time_zone("Asia/Makasar")
                .unwrap_err()
                .contains("did you mean \"Asia/Makassar\"")
        );
        assert!(parse_time_zone("Mars/Olympus").is_err());
    }
}
