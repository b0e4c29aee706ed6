//! Every class of bad input an administrator can write, each reported at its line with a plain
//! message; and a valid file that loads.

use crate::{Source, parse};

const MAIN: &str = r#"
[deployment]
name = "Test deployment"
coordinator = "coord"
hours_per_working_day = 8
holidays = ["holidays/2026.toml"]

[[service]]
id = "shelter"
name = "Shelter"

[[service]]
id = "police_report"
name = "Police report"
reroutable = false

[[category]]
id = "sexual_violence"
name = "Sexual violence"

[[reason]]
code = "no_capacity"
description = "No capacity"

[[outcome]]
code = "service_provided"
description = "Provided"

[[agency]]
id = "dinsos"
name = "Dinas Sosial"
region = "Kabupaten Maros"
time_zone = "Asia/Makassar"
services = ["shelter"]
[agency.working_hours]
monday = ["07:30-16:00"]
friday = ["07:30-11:30", "13:00-16:30"]
[agency.alternates]
shelter = "uptd"
[agency.contacts.supervisor]
title = "Kepala Bidang"
phone = "+62-411-000-0000"

[[agency]]
id = "uptd"
name = "UPTD PPA"
region = "Kabupaten Maros"
time_zone = "Asia/Makassar"
services = ["shelter"]
[agency.working_hours]
monday = ["07:30-16:00"]
[agency.alternates]
shelter = "dinsos"

[[agency]]
id = "polres-maros"
name = "Polres Maros"
region = "Kabupaten Maros"
time_zone = "Asia/Makassar"
services = ["police_report"]
observes_holidays = false
[agency.working_hours]
every_day = ["00:00-24:00"]

[[agency]]
id = "coord"
name = "Bappeda"
region = "Kabupaten Maros"
time_zone = "Asia/Makassar"
[agency.working_hours]
monday = ["07:30-16:00"]

[[policy]]
version = "2026-01"
effective_from = "2026-01-01T00:00:00+08:00"

[[policy.clock]]
id = "acknowledge"
title = "Acknowledge"
start = "requested"
stop = ["accepted", "rejected"]
target = "1 working day"
calendar = "working_hours"
responsible = "recipient"
escalation = "standard"

[[policy.clock]]
id = "pasal_41"
title = "Report to the police"
services = ["police_report"]
categories = ["sexual_violence"]
start = "case_reported"
stop = ["received", "accepted"]
target = "72h"
calendar = "wall_clock"
responsible = "sender"
warnings = ["50%", "75%"]
escalation = "standard"

[[policy.escalation]]
id = "standard"
title = "Standard"

[[policy.escalation.level]]
at = "breach"
notify = ["recipient.supervisor", "agency:polres-maros.head"]

[[policy.escalation.level]]
at = "breach + 2h"
action = "reroute"

[[policy.reroute]]
on = "rejected"
delay = "15m"
"#;

const HOLIDAYS: &str = r#"
year = 2026
source = "test list"

[[holiday]]
date = 2026-01-01
name = "Tahun Baru"
kind = "national"

[[holiday]]
date = "2026-03-19"
name = "Nyepi"
kind = "national"
"#;

fn diagnostics(main: &str, holidays: &str) -> Vec<String> {
    let sources = [Source::new("holidays/2026.toml", holidays)];
    match parse(&Source::new("refbus.toml", main), &sources) {
        Ok(_) => Vec::new(),
        Err(report) => report.diagnostics.iter().map(ToString::to_string).collect(),
    }
}

/// `MAIN` with `old` (which must occur exactly once) replaced by `new`.
fn edit(old: &str, new: &str) -> String {
    assert_eq!(MAIN.matches(old).count(), 1, "`{old}` must occur once");
    MAIN.replacen(old, new, 1)
}

/// The 1-based line of `text` where `needle` first occurs.
fn line_of(text: &str, needle: &str) -> usize {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in the text"));
    text[..offset].matches('\n').count() + 1
}

/// Asserts a diagnostic of `file` on the line of `at` whose message contains `message`.
fn expect_in(found: &[String], file: &str, text: &str, at: &str, message: &str) {
    let prefix = format!("{file}:{}:", line_of(text, at));
    assert!(
        found
            .iter()
            .any(|line| line.starts_with(&prefix) && line.contains(message)),
        "expected `{prefix} ...{message}...` among:\n{}",
        found.join("\n")
    );
}

fn expect(text: &str, at: &str, message: &str) {
    expect_in(
        &diagnostics(text, HOLIDAYS),
        "refbus.toml",
        text,
        at,
        message,
    );
}

#[test]
fn the_base_configuration_is_valid() {
    assert_eq!(diagnostics(MAIN, HOLIDAYS), Vec::<String>::new());
    let registry = parse(
        &Source::new("refbus.toml", MAIN),
        &[Source::new("holidays/2026.toml", HOLIDAYS)],
    )
    .unwrap();
    assert_eq!(registry.agencies.len(), 4);
    assert_eq!(registry.policies.len(), 1);
    let dinsos = &registry.agencies[&refbus_core::AgencyId::new("dinsos").unwrap()];
    assert_eq!(dinsos.working_hours.holidays.len(), 2);
    let polres = &registry.agencies[&refbus_core::AgencyId::new("polres-maros").unwrap()];
    assert!(polres.working_hours.holidays.is_empty());
    assert!(polres.working_hours.week.iter().all(|day| day.len() == 1));
}

#[test]
fn a_message_names_file_line_column_and_the_nearest_name() {
    let text = edit("agency:polres-maros.head", "agency:polres-marros.head");
    let found = diagnostics(&text, HOLIDAYS);
    let line = line_of(&text, "agency:polres-marros.head");
    assert_eq!(
        found,
        vec![format!(
            "refbus.toml:{line}:35: escalation policy \"standard\" notifies \"agency:polres-marros.head\", but no agency \"polres-marros\" exists (did you mean \"polres-maros\"?)"
        )]
    );
}

#[test]
fn syntax_errors_are_all_reported() {
    let text = edit("name = \"Shelter\"", "name = \"Shelter").replacen(
        "title = \"Standard\"",
        "title = Standard",
        1,
    );
    let found = diagnostics(&text, HOLIDAYS);
    expect(&text, "name = \"Shelter", "TOML syntax error");
    expect(&text, "title = Standard", "TOML syntax error");
    assert!(found.len() >= 2, "{found:?}");
}

#[test]
fn a_key_set_twice_is_a_syntax_error_naming_it() {
    let text = edit(
        "name = \"Police report\"",
        "name = \"Police report\"\nname = \"Again\"",
    );
    expect(&text, "name = \"Again\"", "the key `name` is set twice");
}

#[test]
fn unknown_keys_are_refused_with_a_suggestion() {
    let text = edit(
        "time_zone = \"Asia/Makassar\"\nservices = [\"police_report\"]",
        "tme_zone = \"Asia/Makassar\"\nservices = [\"police_report\"]",
    );
    expect(
        &text,
        "tme_zone",
        "unknown key `tme_zone` in agency \"polres-maros\" (did you mean `time_zone`?)",
    );
    let text = edit("friday = [\"07:30-11:30\"", "fryday = [\"07:30-11:30\"");
    expect(&text, "fryday", "did you mean `friday`?");
    let text = edit("[deployment]\n", "[deployment]\ncolour = \"red\"\n");
    expect(
        &text,
        "colour",
        "unknown key `colour` in [deployment]; expected one of: name, coordinator",
    );
}

#[test]
fn missing_required_keys_are_reported_at_their_table() {
    let text = edit(
        "name = \"Bappeda\"\nregion = \"Kabupaten Maros\"\n",
        "name = \"Bappeda\"\n",
    );
    let agency_line = text.find("id = \"coord\"").unwrap();
    let header = &text[..agency_line].rfind("[[agency]]").unwrap();
    let found = diagnostics(&text, HOLIDAYS);
    let line = text[..*header].matches('\n').count() + 1;
    assert!(
        found
            .iter()
            .any(|d| d.starts_with(&format!("refbus.toml:{line}:1:"))
                && d.contains("missing required key `region` in agency \"coord\"")),
        "{found:?}"
    );
    let text = edit("target = \"72h\"\n", "");
    let found = diagnostics(&text, HOLIDAYS);
    let header = line_of(&text, "id = \"pasal_41\"") - 1;
    assert!(
        found
            .iter()
            .any(|d| d.starts_with(&format!("refbus.toml:{header}:1:"))
                && d.contains("missing required key `target` in clock \"pasal_41\"")),
        "{found:?}"
    );
}

#[test]
fn values_of_the_wrong_type_are_reported() {
    let text = edit("hours_per_working_day = 8", "hours_per_working_day = true");
    expect(
        &text,
        "hours_per_working_day",
        "must be a whole number of hours (8) or a duration",
    );
    let text = edit(
        "services = [\"police_report\"]\nobserves",
        "services = \"police_report\"\nobserves",
    );
    expect(
        &text,
        "services = \"police_report\"",
        "`services` must be a list",
    );
    let text = edit("[[outcome]]", "[outcome]");
    expect(&text, "[outcome]", "write [[outcome]] with double brackets");
}

#[test]
fn invalid_identifiers_follow_the_core_rules() {
    let text = edit("id = \"coord\"", "id = \"Bappeda Maros\"");
    expect(
        &text,
        "id = \"Bappeda Maros\"",
        "`Bappeda Maros` is not a valid agency id",
    );
    let text = edit("id = \"acknowledge\"", "id = \"acknowledge.all\"");
    expect(&text, "acknowledge.all", "not a valid clock id");
}

#[test]
fn duplicate_ids_point_at_the_first_definition() {
    let text = edit("id = \"coord\"", "id = \"uptd\"");
    let first = line_of(&text, "id = \"uptd\"");
    let found = diagnostics(&text, HOLIDAYS);
    assert!(
        found.iter().any(|d| d.contains(&format!(
            "duplicate agency \"uptd\": it is already defined at refbus.toml:{first}:6"
        ))),
        "{found:?}"
    );
    let text = edit("id = \"pasal_41\"", "id = \"acknowledge\"");
    expect(
        &text,
        "id = \"acknowledge\"\ntitle = \"Report",
        "duplicate clock \"acknowledge\"",
    );
    let text = edit(
        "[[outcome]]",
        "[[reason]]\ncode = \"no_capacity\"\ndescription = \"Again\"\n\n[[outcome]]",
    );
    expect(
        &text,
        "code = \"no_capacity\"\ndescription = \"Again\"",
        "duplicate reason \"no_capacity\"",
    );
}

#[test]
fn unknown_references_are_reported_wherever_they_are() {
    let text = edit(
        "services = [\"police_report\"]\nobserves",
        "services = [\"police_reprot\"]\nobserves",
    );
    expect(
        &text,
        "\"police_reprot\"",
        "agency \"polres-maros\" offers \"police_reprot\", but no service \"police_reprot\" exists (did you mean \"police_report\"?)",
    );
    let text = edit(
        "categories = [\"sexual_violence\"]",
        "categories = [\"sexual_violense\"]",
    );
    expect(
        &text,
        "sexual_violense",
        "no category \"sexual_violense\" exists (did you mean \"sexual_violence\"?)",
    );
    let text = edit(
        "escalation = \"standard\"\n\n[[policy.clock]]",
        "escalation = \"standrd\"\n\n[[policy.clock]]",
    );
    expect(
        &text,
        "\"standrd\"",
        "clock \"acknowledge\" escalates with \"standrd\", but no escalation policy \"standrd\" exists",
    );
    let text = edit("shelter = \"uptd\"", "shelter = \"uptdd\"");
    expect(
        &text,
        "\"uptdd\"",
        "no agency \"uptdd\" exists (did you mean \"uptd\"?)",
    );
    let text = edit(
        "coordinator = \"coord\"",
        "coordinator = \"bappeda\"\ncolour = \"blue\"",
    );
    expect(
        &text,
        "coordinator = ",
        "`coordinator` is \"bappeda\", but no agency \"bappeda\" exists",
    );
}

#[test]
fn time_zones_must_be_iana_names() {
    let text = edit(
        "id = \"coord\"\nname = \"Bappeda\"\nregion = \"Kabupaten Maros\"\ntime_zone = \"Asia/Makassar\"",
        "id = \"coord\"\nname = \"Bappeda\"\nregion = \"Kabupaten Maros\"\ntime_zone = \"Asia/Makasar\"",
    );
    expect(
        &text,
        "Asia/Makasar",
        "not an IANA time zone (did you mean \"Asia/Makassar\"?)",
    );
    let text = edit(
        "id = \"coord\"\nname = \"Bappeda\"\nregion = \"Kabupaten Maros\"\ntime_zone = \"Asia/Makassar\"",
        "id = \"coord\"\nname = \"Bappeda\"\nregion = \"Kabupaten Maros\"\ntime_zone = \"WITA\"",
    );
    expect(&text, "\"WITA\"", "write Asia/Makassar");
    for zone in [
        "Asia/Jakarta",
        "Asia/Makassar",
        "Asia/Jayapura",
        "Asia/Pontianak",
        "Australia/Darwin",
    ] {
        let text = MAIN.replace("Asia/Makassar", zone);
        assert_eq!(diagnostics(&text, HOLIDAYS), Vec::<String>::new(), "{zone}");
    }
}

#[test]
fn working_hours_must_be_well_formed_ordered_and_apart() {
    let text = edit(
        "monday = [\"07:30-16:00\"]\nfriday",
        "monday = [\"7.30-16.00\"]\nfriday",
    );
    expect(
        &text,
        "7.30-16.00",
        "is not a time window: write \"HH:MM-HH:MM\"",
    );
    let text = edit(
        "friday = [\"07:30-11:30\", \"13:00-16:30\"]",
        "friday = [\"07:30-11:30\", \"11:00-16:30\"]",
    );
    expect(&text, "\"11:00-16:30\"", "overlaps the window before it");
    let text = edit(
        "friday = [\"07:30-11:30\", \"13:00-16:30\"]",
        "friday = [\"13:00-16:30\", \"07:30-11:30\"]",
    );
    expect(&text, "friday = [\"13:00", "is out of order");
    let text = edit(
        "friday = [\"07:30-11:30\", \"13:00-16:30\"]",
        "friday = [\"16:30-13:00\"]",
    );
    expect(&text, "16:30-13:00", "ends before it starts");
    let text = edit(
        "every_day = [\"00:00-24:00\"]",
        "every_day = [\"00:00-24:00\"]\nmonday = [\"08:00-12:00\"]",
    );
    expect(
        &text,
        "monday = [\"08:00-12:00\"]",
        "`monday` and `every_day` both set",
    );
}

#[test]
fn an_agency_without_any_working_hours_is_refused() {
    let text = edit(
        "[agency.working_hours]\nmonday = [\"07:30-16:00\"]\n\n[[policy]]",
        "[agency.working_hours]\n\n[[policy]]",
    );
    let found = diagnostics(&text, HOLIDAYS);
    assert!(
        found
            .iter()
            .any(|d| d.contains("agency \"coord\" has no working hours at all")),
        "{found:?}"
    );
}

#[test]
fn durations_must_be_positive_and_well_formed() {
    let text = edit("target = \"72h\"", "target = \"0m\"");
    expect(
        &text,
        "target = \"0m\"",
        "`target` must be longer than zero",
    );
    let text = edit("target = \"72h\"", "target = \"-1h\"");
    expect(&text, "target = \"-1h\"", "is negative");
    let text = edit("target = \"72h\"", "target = \"1.5h\"");
    expect(&text, "target = \"1.5h\"", "\"1.5h\" is not a duration");
    let text = edit("delay = \"15m\"", "delay = \"soon\"");
    expect(&text, "delay = \"soon\"", "not a duration");
    let text = edit("at = \"breach + 2h\"", "at = \"breach + 2 hours later\"");
    expect(&text, "breach + 2 hours later", "not a duration");
}

#[test]
fn day_units_must_match_the_calendar() {
    let text = edit("target = \"1 working day\"", "target = \"3d\"");
    expect(
        &text,
        "target = \"3d\"",
        "write \"3 working days\", or use calendar = \"wall_clock\"",
    );
    let text = edit("target = \"72h\"", "target = \"3 working days\"");
    expect(
        &text,
        "target = \"3 working days\"",
        "runs on the wall clock",
    );
}

#[test]
fn warnings_must_be_inside_the_target_and_ascending() {
    let text = edit(
        "warnings = [\"50%\", \"75%\"]",
        "warnings = [\"50%\", \"100%\"]",
    );
    expect(&text, "\"100%\"", "outside 0%..100%");
    let text = edit(
        "warnings = [\"50%\", \"75%\"]",
        "warnings = [\"75%\", \"50%\"]",
    );
    expect(
        &text,
        "warnings = [\"75%\", \"50%\"]",
        "list warnings in ascending order",
    );
    let text = edit("warnings = [\"50%\", \"75%\"]", "warnings = [\"half\"]");
    expect(&text, "\"half\"", "not a percentage");
}

#[test]
fn an_escalation_policy_needs_levels() {
    let text = MAIN.replace(
        "[[policy.escalation.level]]\nat = \"breach\"\nnotify = [\"recipient.supervisor\", \"agency:polres-maros.head\"]\n\n[[policy.escalation.level]]\nat = \"breach + 2h\"\naction = \"reroute\"\n",
        "",
    );
    expect(
        &text,
        "[[policy.escalation]]",
        "escalation policy \"standard\" of policy version \"2026-01\" has no levels",
    );
}

#[test]
fn a_notify_level_needs_targets() {
    let text = edit(
        "notify = [\"recipient.supervisor\", \"agency:polres-maros.head\"]",
        "notify = []",
    );
    expect(
        &text,
        "[[policy.escalation.level]]\nat = \"breach\"",
        "level 1 of escalation policy \"standard\" notifies nobody",
    );
    let text = edit(
        "notify = [\"recipient.supervisor\", \"agency:polres-maros.head\"]",
        "notify = [\"recipient.supervsor\"]",
    );
    expect(&text, "recipient.supervsor", "did you mean \"supervisor\"?");
}

#[test]
fn repeating_needs_an_interval() {
    let text = edit(
        "notify = [\"recipient.supervisor\", \"agency:polres-maros.head\"]",
        "notify = [\"recipient.supervisor\"]\nrepeat = 2",
    );
    expect(&text, "repeat = 2", "`repeat` needs `repeat_every`");
    let text = edit(
        "notify = [\"recipient.supervisor\", \"agency:polres-maros.head\"]",
        "notify = [\"recipient.supervisor\"]\nrepeat_every = \"30m\"",
    );
    expect(&text, "repeat_every", "has no effect without `repeat`");
}

#[test]
fn levels_fire_in_order() {
    let text = edit("at = \"breach + 2h\"", "at = \"50%\"");
    expect(
        &text,
        "at = \"50%\"",
        "level 2 of escalation policy \"standard\" fires before level 1",
    );
}

#[test]
fn a_clock_cannot_stop_on_its_start() {
    let text = edit(
        "stop = [\"accepted\", \"rejected\"]",
        "stop = [\"requested\", \"accepted\"]",
    );
    expect(
        &text,
        "stop = [\"requested\"",
        "the status the clock starts on",
    );
    let text = edit(
        "stop = [\"accepted\", \"rejected\"]",
        "stop = [\"acepted\"]",
    );
    expect(&text, "\"acepted\"", "did you mean \"accepted\"?");
    let text = edit("stop = [\"accepted\", \"rejected\"]", "stop = []");
    expect(&text, "stop = []", "`stop` needs at least one status");
}

/// A third agency offers shelter without saying where shelter goes when it cannot act.
const RPTC: &str = "[[agency]]\nid = \"rptc\"\nname = \"RPTC\"\nregion = \"Kabupaten Maros\"\ntime_zone = \"Asia/Makassar\"\nservices = [\"shelter\"]\n[agency.working_hours]\nmonday = [\"07:30-16:00\"]\n\n[[policy]]";

#[test]
fn rerouting_a_service_needs_an_alternate_at_every_agency_offering_it() {
    let text = edit("[[policy]]", RPTC);
    let found = diagnostics(&text, HOLIDAYS);
    expect(
        &text,
        "action = \"reroute\"",
        "level 2 of escalation policy \"standard\" reroutes, and clock \"acknowledge\" uses it for service \"shelter\", but agency \"rptc\" offers \"shelter\" with no alternate",
    );
    expect(
        &text,
        "[[policy.reroute]]",
        "the reroute rule for service \"shelter\", but agency \"rptc\"",
    );
    // Marking the service as not reroutable is the explicit way out.
    let text = text.replacen(
        "id = \"shelter\"\nname = \"Shelter\"",
        "id = \"shelter\"\nname = \"Shelter\"\nreroutable = false",
        1,
    );
    assert_eq!(
        diagnostics(&text, HOLIDAYS),
        Vec::<String>::new(),
        "{found:?}"
    );
}

#[test]
fn alternates_must_be_another_agency_offering_the_service() {
    let text = edit("shelter = \"uptd\"", "shelter = \"dinsos\"");
    expect(
        &text,
        "shelter = \"dinsos\"",
        "agency \"dinsos\" is its own alternate for \"shelter\"",
    );
    let text = edit("shelter = \"uptd\"", "shelter = \"polres-maros\"");
    expect(
        &text,
        "shelter = \"polres-maros\"",
        "which does not offer \"shelter\"",
    );
    let text = edit(
        "shelter = \"dinsos\"",
        "shelter = \"dinsos\"\npolice_report = \"polres-maros\"",
    );
    expect(
        &text,
        "police_report = \"polres-maros\"",
        "which it does not offer",
    );
}

#[test]
fn policies_must_exist_once_each() {
    let start = MAIN.find("[[policy]]").unwrap();
    let text = &MAIN[..start];
    expect(text, "[deployment]", "the configuration has no [[policy]]");
    let second =
        "\n[[policy]]\nversion = \"2026-01\"\neffective_from = \"2026-07-01T00:00:00+08:00\"\n";
    let text = format!("{MAIN}{second}");
    let found = diagnostics(&text, HOLIDAYS);
    let line = line_of(&text, second.trim_start()) + 1;
    assert!(
        found
            .iter()
            .any(|d| d.starts_with(&format!("refbus.toml:{line}:"))
                && d.contains("duplicate policy version \"2026-01\"")),
        "{found:?}"
    );
}

#[test]
fn holiday_files_are_checked() {
    let check = |holidays: &str, at: &str, message: &str| {
        let found = diagnostics(MAIN, holidays);
        expect_in(&found, "holidays/2026.toml", holidays, at, message);
    };
    let wrong_year = HOLIDAYS.replace("year = 2026", "year = 2027");
    check(&wrong_year, "year = 2027", "the file is named for 2026");
    check(&wrong_year, "date = 2026-01-01", "is not in 2027");
    let bad_date = HOLIDAYS.replace("\"2026-03-19\"", "\"2026-02-30\"");
    check(&bad_date, "2026-02-30", "is not a date");
    let twice = HOLIDAYS.replace("\"2026-03-19\"", "\"2026-01-01\"");
    check(&twice, "\"2026-01-01\"", "2026-01-01 is listed twice");
    let kind = HOLIDAYS.replacen("kind = \"national\"", "kind = \"nasional\"", 1);
    check(&kind, "nasional", "did you mean \"national\"?");
}

#[test]
fn a_named_file_that_is_missing_is_reported_where_it_is_named() {
    let found = match parse(&Source::new("refbus.toml", MAIN), &[]) {
        Ok(_) => Vec::new(),
        Err(report) => report.diagnostics.iter().map(ToString::to_string).collect(),
    };
    let line = line_of(MAIN, "holidays = [");
    assert_eq!(
        found,
        vec![format!(
            "refbus.toml:{line}:13: cannot read \"holidays/2026.toml\" (holidays/2026.toml): the file was not given"
        )]
    );
}

#[test]
fn included_files_hold_agencies_but_not_policies() {
    let start = MAIN.find("[[agency]]").unwrap();
    let end = MAIN.find("[[policy]]").unwrap();
    let agencies = format!("{}\n[[policy]]\nversion = \"x\"\n", &MAIN[start..end]);
    let main = format!(
        "{}{}",
        MAIN[..start].replace(
            "holidays = [",
            "include = [\"agencies.toml\"]\nholidays = ["
        ),
        &MAIN[end..]
    );
    let sources = [
        Source::new("agencies.toml", agencies.as_str()),
        Source::new("holidays/2026.toml", HOLIDAYS),
    ];
    let report = parse(&Source::new("refbus.toml", main.as_str()), &sources).unwrap_err();
    let line = line_of(&agencies, "[[policy]]\nversion = \"x\"");
    assert_eq!(report.diagnostics.len(), 1, "{report}");
    assert_eq!(
        report.diagnostics[0].to_string(),
        format!(
            "agencies.toml:{line}:3: [policy] belongs in the main file; an included file holds only [[service]], [[category]], [[reason]], [[outcome]] and [[agency]]"
        )
    );
    // Without the stray policy, the split configuration is valid.
    let agencies = &MAIN[start..end];
    let sources = [
        Source::new("agencies.toml", agencies),
        Source::new("holidays/2026.toml", HOLIDAYS),
    ];
    let registry = parse(&Source::new("refbus.toml", main.as_str()), &sources).unwrap();
    assert_eq!(registry.agencies.len(), 4);
}

#[test]
fn every_problem_is_reported_in_file_order_not_only_the_first() {
    let text = edit(
        "coordinator = \"coord\"",
        "coordinator = \"bappeda\"\ncolour = \"blue\"",
    )
    .replacen(
        "time_zone = \"Asia/Makassar\"",
        "time_zone = \"Asia/Makasar\"",
        1,
    )
    .replacen("target = \"72h\"", "target = \"0m\"", 1)
    .replacen("delay = \"15m\"", "delay = \"later\"", 1);
    let found = diagnostics(&text, HOLIDAYS);
    assert_eq!(found.len(), 5, "{found:#?}");
    let lines: Vec<usize> = found
        .iter()
        .map(|d| d.split(':').nth(1).unwrap().parse().unwrap())
        .collect();
    let mut sorted = lines.clone();
    sorted.sort_unstable();
    assert_eq!(lines, sorted);
}

#[test]
fn public_key_fingerprints_are_verified() {
    use data_encoding::BASE64;
    let key = BASE64.encode(&[9u8; 32]);
    let other = BASE64.encode(&[10u8; 32]);
    let fingerprint = refbus_core::signature::KeyId::of(&[9u8; 32]).to_string();
    let signing = {
        let seed = [3u8; 32];
        let signer = refbus_core::signature::Signer::Router;
        refbus_core::signature::SigningKey::from_seed(&seed, signer).verifying_key()
    };
    let keys = |public: &str, backup: &str, signing_key: &str| {
        edit(
            "name = \"Polres Maros\"",
            &format!(
                "name = \"Polres Maros\"\npublic_key = \"{public}\"\nbackup_public_key = \"{backup}\"\nsigning_keys = [\"{signing_key}\"]"
            ),
        )
    };
    let signing_fingerprint = signing.id().to_string();
    let signing_text = format!("{} {signing_fingerprint}", signing.to_base64());

    // Right fingerprints: valid, and the registry holds the keys alone.
    let text = keys(
        &format!("{key} {fingerprint}"),
        &format!("{other} {}", refbus_core::signature::KeyId::of(&[10u8; 32])),
        &signing_text,
    );
    assert_eq!(diagnostics(&text, HOLIDAYS), Vec::<String>::new());
    let registry = parse(
        &Source::new("refbus.toml", &text),
        &[Source::new("holidays/2026.toml", HOLIDAYS)],
    )
    .unwrap();
    let polres = &registry.agencies[&refbus_core::AgencyId::new("polres-maros").unwrap()];
    assert_eq!(polres.public_key.as_deref(), Some(key.as_str()));
    assert_eq!(polres.backup_public_key.as_deref(), Some(other.as_str()));
    assert_eq!(polres.signing_keys, vec![signing.to_base64()]);

    // A key whose fingerprint is another key's: reported where it stands, with both.
    let wrong = keys(
        &format!("{other} {fingerprint}"),
        &format!("{key} {fingerprint}"),
        &format!("{} 0000000000000000", signing.to_base64()),
    );
    let found = diagnostics(&wrong, HOLIDAYS);
    expect(&wrong, "public_key = ", "`public_key`: the fingerprint");
    expect(
        &wrong,
        "signing_keys = ",
        "`signing_keys`: the fingerprint 0000000000000000",
    );
    assert!(
        found.iter().any(|line| line.contains(&fingerprint)
            && line.contains(&refbus_core::signature::KeyId::of(&[10u8; 32]).to_string())),
        "{found:?}"
    );
    assert_eq!(found.len(), 2, "{found:?}");

    // A backup key must carry its fingerprint.
    let bare = keys(&key, &other, &signing_text);
    expect(&bare, "backup_public_key = ", "needs its fingerprint");
}

#[test]
fn client_cas_are_read_assigned_to_their_agencies_and_checked() {
    use refbus_tls::certs::{Ca, Validity};
    let now = time::OffsetDateTime::now_utc();
    let deployment_ca = Ca::generate("deployment", Validity::days_from(now, 30)).unwrap();
    let uptd_ca = Ca::generate("uptd", Validity::days_from(now, 30)).unwrap();
    let main = edit(
        "holidays = [\"holidays/2026.toml\"]\n",
        "holidays = [\"holidays/2026.toml\"]\n\
         [[deployment.client_ca]]\nfile = \"tls/ca.pem\"\n\
         [[deployment.client_ca]]\nfile = \"tls/uptd.pem\"\nagencies = [\"uptd\"]\n",
    );
    let files = |uptd: &str| {
        vec![
            Source::new("holidays/2026.toml", HOLIDAYS),
            Source::new("tls/ca.pem", deployment_ca.certificate_pem()),
            Source::new("tls/uptd.pem", uptd.to_owned()),
        ]
    };
    let registry = parse(
        &Source::new("refbus.toml", main.as_str()),
        &files(uptd_ca.certificate_pem()),
    )
    .unwrap();
    let cas = |agency: &str| {
        registry.agencies[&refbus_core::AgencyId::new(agency).unwrap()]
            .client_cas
            .len()
    };
    assert_eq!((cas("dinsos"), cas("uptd")), (1, 2));

    let found =
        |main: &str, uptd: &str| match parse(&Source::new("refbus.toml", main), &files(uptd)) {
            Ok(_) => Vec::new(),
            Err(report) => report
                .diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        };
    // A server certificate is not a CA.
    let server = deployment_ca
        .issue_server(&["localhost".to_owned()], Validity::days_from(now, 30))
        .unwrap();
    expect_in(
        &found(&main, &server.certificate_pem),
        "refbus.toml",
        &main,
        "file = \"tls/uptd.pem\"",
        "not a CA certificate",
    );
    expect_in(
        &found(&main, "not pem"),
        "refbus.toml",
        &main,
        "file = \"tls/uptd.pem\"",
        "PEM",
    );
    let unknown = main.replace("agencies = [\"uptd\"]", "agencies = [\"uptdd\"]");
    expect_in(
        &found(&unknown, uptd_ca.certificate_pem()),
        "refbus.toml",
        &unknown,
        "agencies = [\"uptdd\"]",
        "not in the registry",
    );
    let missing = main.replace("tls/uptd.pem", "tls/none.pem");
    expect_in(
        &found(&missing, uptd_ca.certificate_pem()),
        "refbus.toml",
        &missing,
        "file = \"tls/none.pem\"",
        "cannot read the client CA",
    );
}
