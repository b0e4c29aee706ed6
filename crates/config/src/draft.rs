//! Reading each file into drafts: every value typed and positioned, every problem local to one
//! table reported. Cross-references (does that agency exist?) are checked later, in `build`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::NaiveDate;
use chrono_tz::Tz;
use data_encoding::BASE64;
use refbus_core::calendar::Window;
use refbus_core::clock::{CalendarKind, ClockStart};
use refbus_core::escalation::{Action, Role, Target, Trigger};
use refbus_core::ids::IdError;
use refbus_core::referral::{Milestone, Party, Priority, Status};
use refbus_core::registry::Contact;
use refbus_core::time::{Timestamp, format_duration};

use crate::diagnostic::Problems;
use crate::files::Pos;
use crate::suggest::hint;
use crate::tree::{Located, Node, Table};
use crate::values::{
    Amount, DayUnit, parse_duration, parse_milestone, parse_percent, parse_start, parse_target,
    parse_time_zone, parse_trigger, parse_window,
};

/// The working day assumed when `hours_per_working_day` is not given.
pub(crate) const DEFAULT_WORKING_DAY: Duration = Duration::from_secs(8 * 3600);

/// Warning points of a clock that does not list its own: 50% and 75% (DESIGN section 3).
const DEFAULT_WARNINGS: [u16; 2] = [500, 750];

pub(crate) const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

#[derive(Debug, Default)]
pub(crate) struct Drafts {
    pub(crate) deployment: Option<Deployment>,
    pub(crate) services: Vec<Service>,
    pub(crate) categories: Vec<Code>,
    pub(crate) reasons: Vec<Code>,
    pub(crate) outcomes: Vec<Code>,
    pub(crate) agencies: Vec<Agency>,
    pub(crate) policies: Vec<Policy>,
    pub(crate) holidays: Vec<HolidayFile>,
}

#[derive(Debug)]
pub(crate) struct Deployment {
    pub(crate) pos: Pos,
    pub(crate) coordinator: Option<Located<String>>,
    pub(crate) working_day: Duration,
    pub(crate) include: Vec<Located<String>>,
    pub(crate) holidays: Vec<Located<String>>,
    pub(crate) router_signing_keys: Vec<String>,
    /// `[[deployment.client_ca]]`: the CAs that issue agency systems' client certificates.
    pub(crate) client_cas: Vec<ClientCa>,
}

/// A CA file and the agencies whose systems it may vouch for (`None`: every agency).
#[derive(Debug)]
pub(crate) struct ClientCa {
    pub(crate) file: Located<String>,
    pub(crate) agencies: Option<Vec<Located<String>>>,
}

#[derive(Debug)]
pub(crate) struct Service {
    pub(crate) id: Located<String>,
    pub(crate) name: String,
    pub(crate) reroutable: bool,
}

/// A category, reason or outcome: a code and what it means.
#[derive(Debug)]
pub(crate) struct Code {
    pub(crate) id: Located<String>,
    pub(crate) description: String,
}

#[derive(Debug)]
pub(crate) struct Agency {
    pub(crate) id: Located<String>,
    pub(crate) name: String,
    pub(crate) region: String,
    pub(crate) time_zone: Option<Tz>,
    pub(crate) services: Vec<Located<String>>,
    pub(crate) public_key: Option<String>,
    pub(crate) backup_public_key: Option<String>,
    pub(crate) signing_keys: Vec<String>,
    pub(crate) week: [Vec<Window>; 7],
    pub(crate) local_holidays: Vec<Located<NaiveDate>>,
    pub(crate) observes_holidays: bool,
    /// Service -> agency.
    pub(crate) alternates: Vec<(Located<String>, Located<String>)>,
    pub(crate) contacts: BTreeMap<Role, Contact>,
}

#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) version: Located<String>,
    pub(crate) effective_from: Option<Located<Timestamp>>,
    pub(crate) clocks: Vec<Clock>,
    pub(crate) escalations: Vec<Escalation>,
    pub(crate) reroutes: Vec<Reroute>,
}

#[derive(Debug)]
pub(crate) struct Clock {
    pub(crate) id: Located<String>,
    pub(crate) title: String,
    pub(crate) basis: Option<String>,
    pub(crate) services: Vec<Located<String>>,
    pub(crate) priorities: Vec<Priority>,
    pub(crate) categories: Vec<Located<String>>,
    pub(crate) start: Option<ClockStart>,
    pub(crate) stop: Vec<Milestone>,
    pub(crate) pause_on_hold: bool,
    pub(crate) target: Option<Duration>,
    pub(crate) calendar: Option<CalendarKind>,
    pub(crate) responsible: Option<Party>,
    pub(crate) warnings: Vec<u16>,
    pub(crate) escalation: Option<Located<String>>,
}

#[derive(Debug)]
pub(crate) struct Escalation {
    pub(crate) id: Located<String>,
    pub(crate) title: String,
    pub(crate) levels: Vec<Level>,
}

#[derive(Debug)]
pub(crate) struct Level {
    pub(crate) trigger: Option<Trigger>,
    pub(crate) targets: Vec<Located<Target>>,
    pub(crate) action: Located<Action>,
    pub(crate) repeat: u16,
    pub(crate) repeat_every: Duration,
}

#[derive(Debug)]
pub(crate) struct Reroute {
    pub(crate) pos: Pos,
    pub(crate) on: Option<Status>,
    pub(crate) services: Vec<Located<String>>,
    pub(crate) delay: Duration,
}

#[derive(Debug)]
pub(crate) struct HolidayFile {
    pub(crate) year: Option<Located<i32>>,
    pub(crate) holidays: Vec<Located<NaiveDate>>,
}

// === reading helpers ===

fn string(table: &Table<'_, '_>, key: &'static str, problems: &mut Problems) -> Option<String> {
    table
        .required(key, problems)
        .and_then(|node| node.string(problems))
        .map(|located| located.value)
}

fn optional_string(
    table: &Table<'_, '_>,
    key: &'static str,
    problems: &mut Problems,
) -> Option<String> {
    table
        .get(key)
        .and_then(|node| node.string(problems))
        .map(|located| located.value)
}

fn optional_bool(
    table: &Table<'_, '_>,
    key: &'static str,
    default: bool,
    problems: &mut Problems,
) -> bool {
    table
        .get(key)
        .and_then(|node| node.bool(problems))
        .unwrap_or(default)
}

/// A required identifier, checked against the core's rule for its kind. An invalid one is
/// reported and still returned, so that references to it do not add "unknown" noise.
fn identifier(
    table: &Table<'_, '_>,
    key: &'static str,
    check: fn(&str) -> Result<(), IdError>,
    problems: &mut Problems,
) -> Option<Located<String>> {
    let located = table.required(key, problems)?.string(problems)?;
    if let Err(error) = check(&located.value) {
        problems.at(located.pos, error.to_string());
    }
    Some(located)
}

fn strings(
    table: &Table<'_, '_>,
    key: &'static str,
    problems: &mut Problems,
) -> Vec<Located<String>> {
    table
        .get(key)
        .map(|node| node.strings(problems))
        .unwrap_or_default()
}

fn duration(
    node: &Node<'_, '_>,
    working_day: Duration,
    problems: &mut Problems,
) -> Option<Located<Amount>> {
    let text = node.string(problems)?;
    match parse_duration(&text.value, working_day) {
        Ok(amount) => Some(Located {
            value: amount,
            pos: text.pos,
        }),
        Err(message) => {
            problems.at(text.pos, format!("`{}`: {message}", node.key()));
            None
        }
    }
}

/// A duration that must be more than zero.
fn positive_duration(
    node: &Node<'_, '_>,
    working_day: Duration,
    problems: &mut Problems,
) -> Option<Located<Amount>> {
    let amount = duration(node, working_day, problems)?;
    if amount.value.duration.is_zero() {
        problems.at(
            amount.pos,
            format!("`{}` must be longer than zero", node.key()),
        );
        return None;
    }
    Some(amount)
}

fn choice<T: Copy>(
    table: &Table<'_, '_>,
    key: &'static str,
    options: &[(&'static str, T)],
    problems: &mut Problems,
) -> Option<T> {
    let text = table.required(key, problems)?.string(problems)?;
    let found = options
        .iter()
        .find(|(name, _)| *name == text.value)
        .map(|(_, value)| *value);
    if found.is_none() {
        let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
        problems.at(
            text.pos,
            format!(
                "`{key}` is \"{}\"{}; use one of: {}",
                text.value,
                hint(&text.value, names.iter().copied()),
                names.join(", ")
            ),
        );
    }
    found
}

fn date(text: &Located<String>, key: &str, problems: &mut Problems) -> Option<NaiveDate> {
    match NaiveDate::parse_from_str(&text.value, "%Y-%m-%d") {
        Ok(day) => Some(day),
        Err(_) => {
            problems.at(
                text.pos,
                format!(
                    "`{key}`: \"{}\" is not a date: write YYYY-MM-DD, e.g. 2026-08-17",
                    text.value
                ),
            );
            None
        }
    }
}

// === files ===

const MAIN_SECTIONS: [&str; 7] = [
    "deployment",
    "service",
    "category",
    "reason",
    "outcome",
    "agency",
    "policy",
];
const INCLUDED_SECTIONS: [&str; 5] = ["service", "category", "reason", "outcome", "agency"];

/// Reads the main file's `[deployment]` table alone: where the other files are.
pub(crate) fn read_deployment(root: &Table<'_, '_>, problems: &mut Problems) -> Option<Deployment> {
    let mut table = root.required("deployment", problems)?.table(problems)?;
    table.set_label("[deployment]".to_owned());
    table.allow_only(
        &[
            "name",
            "coordinator",
            "hours_per_working_day",
            "include",
            "holidays",
            "router_signing_keys",
            "client_ca",
        ],
        problems,
    );
    let working_day = match table.get("hours_per_working_day") {
        Some(node) => working_day(&node, problems).unwrap_or(DEFAULT_WORKING_DAY),
        None => DEFAULT_WORKING_DAY,
    };
    // The name is for the people reading the file; the registry does not carry it.
    string(&table, "name", problems);
    Some(Deployment {
        pos: table.pos(),
        coordinator: table
            .required("coordinator", problems)
            .and_then(|node| node.string(problems)),
        working_day,
        include: strings(&table, "include", problems),
        holidays: strings(&table, "holidays", problems),
        router_signing_keys: signing_keys(&table, "router_signing_keys", problems),
        client_cas: read_client_cas(&table, problems),
    })
}

/// `[[deployment.client_ca]]` tables: `file` (PEM, relative to the main file) and, optionally,
/// `agencies` (the agencies it may vouch for; absent: every agency).
fn read_client_cas(deployment: &Table<'_, '_>, problems: &mut Problems) -> Vec<ClientCa> {
    let Some(node) = deployment.get("client_ca") else {
        return Vec::new();
    };
    node.tables(problems)
        .into_iter()
        .filter_map(|mut table| {
            table.set_label("[[deployment.client_ca]]".to_owned());
            table.allow_only(&["file", "agencies"], problems);
            let file = table
                .required("file", problems)
                .and_then(|node| node.string(problems))?;
            let agencies = table.get("agencies").map(|node| node.strings(problems));
            Some(ClientCa { file, agencies })
        })
        .collect()
}

/// A list of Ed25519 public signing keys, each checked where it stands (with its fingerprint,
/// if written).
fn signing_keys(table: &Table<'_, '_>, key: &str, problems: &mut Problems) -> Vec<String> {
    let Some(node) = table.get(key) else {
        return Vec::new();
    };
    node.items(problems)
        .iter()
        .filter_map(|item| {
            let text = item.string(problems)?;
            fingerprinted_key(&text, key, problems, |bytes| {
                refbus_core::signature::VerifyingKey::from_base64(&BASE64.encode(bytes))
                    .map(drop)
                    .map_err(|err| format!("{err}, as `refbus keys generate` prints it"))
            })
        })
        .collect()
}

/// A public key as the registry holds it: the key in standard base64 (32 bytes), then
/// optionally a space and its fingerprint, the 16 hexadecimal digits `refbus keys` prints
/// beside it (the first 8 bytes of the key's SHA-256, the key id envelopes and signatures
/// name). A fingerprint that does not match its key is reported where it stands: a key
/// mistyped or pasted into the wrong agency's table is caught before anything is sealed for
/// it. Returns the key alone.
fn fingerprinted_key(
    text: &Located<String>,
    field: &str,
    problems: &mut Problems,
    check: impl Fn(&[u8; 32]) -> Result<(), String>,
) -> Option<String> {
    let mut parts = text.value.split_whitespace();
    let (key, fingerprint) = (parts.next().unwrap_or(""), parts.next());
    if parts.next().is_some() {
        problems.at(
            text.pos,
            format!("`{field}`: write the key, then optionally one space and its fingerprint"),
        );
        return None;
    }
    let bytes: Option<[u8; 32]> = BASE64
        .decode(key.as_bytes())
        .ok()
        .and_then(|bytes| bytes.try_into().ok());
    let Some(bytes) = bytes else {
        problems.at(
            text.pos,
            format!(
                "`{field}` must be a public key: 32 bytes in standard base64 (44 characters \
                 ending in '='), then optionally its fingerprint, as `refbus keys` prints them"
            ),
        );
        return None;
    };
    if let Err(message) = check(&bytes) {
        problems.at(text.pos, format!("`{field}`: {message}"));
        return None;
    }
    if let Some(fingerprint) = fingerprint {
        let actual = refbus_core::signature::KeyId::of(&bytes).to_string();
        if !fingerprint.eq_ignore_ascii_case(&actual) {
            problems.at(
                text.pos,
                format!(
                    "`{field}`: the fingerprint {fingerprint} does not match the key, whose \
                     fingerprint is {actual}: the key or the fingerprint was copied wrongly \
                     (or belongs to another key); compare both with what `refbus keys` printed \
                     where the key was made"
                ),
            );
            return None;
        }
    }
    Some(key.to_owned())
}

/// `8` (hours) or a duration such as `"7h30m"`, between 1 and 24 hours.
fn working_day(node: &Node<'_, '_>, problems: &mut Problems) -> Option<Duration> {
    // Either form is fine, so the type is tested quietly and explained once if it is neither.
    let quiet = &mut Problems::default();
    let hours = if let Some(hours) = node.integer(quiet) {
        Located {
            value: Duration::from_secs(u64::try_from(hours).unwrap_or(0).saturating_mul(3600)),
            pos: node.pos(),
        }
    } else if node.string(quiet).is_some() {
        let amount = duration(node, DEFAULT_WORKING_DAY, problems)?;
        Located {
            value: amount.value.duration,
            pos: amount.pos,
        }
    } else {
        problems.at(
            node.pos(),
            "`hours_per_working_day` must be a whole number of hours (8) or a duration in quotes (\"7h30m\")",
        );
        return None;
    };
    if hours.value < Duration::from_secs(3600) || hours.value > Duration::from_secs(24 * 3600) {
        problems.at(
            hours.pos,
            "`hours_per_working_day` must be between 1 and 24 hours, e.g. 8 or \"7h30m\"",
        );
        return None;
    }
    Some(hours.value)
}

/// Reads the main file (everything but the deployment table, read before).
pub(crate) fn read_main(
    root: &Table<'_, '_>,
    working_day: Duration,
    drafts: &mut Drafts,
    problems: &mut Problems,
) {
    root.allow_only(&MAIN_SECTIONS, problems);
    read_catalog(root, drafts, problems);
    if let Some(node) = root.get("policy") {
        for table in node.tables(problems) {
            if let Some(policy) = read_policy(table, working_day, problems) {
                drafts.policies.push(policy);
            }
        }
    }
}

/// Reads a file named in `include`: services, categories, codes and agencies only.
pub(crate) fn read_included(root: &Table<'_, '_>, drafts: &mut Drafts, problems: &mut Problems) {
    for (key, _) in root.entries() {
        if matches!(key.value, "deployment" | "policy") {
            problems.at(
                key.pos,
                format!(
                    "[{}] belongs in the main file; an included file holds only [[service]], [[category]], [[reason]], [[outcome]] and [[agency]]",
                    key.value
                ),
            );
        }
    }
    root.allow_only(
        &[INCLUDED_SECTIONS.as_slice(), &["deployment", "policy"]].concat(),
        problems,
    );
    read_catalog(root, drafts, problems);
}

fn read_catalog(root: &Table<'_, '_>, drafts: &mut Drafts, problems: &mut Problems) {
    for table in section(root, "service", problems) {
        drafts.services.extend(read_service(table, problems));
    }
    for (key, kind, list) in [
        ("category", "category", &mut drafts.categories),
        ("reason", "reason", &mut drafts.reasons),
        ("outcome", "outcome", &mut drafts.outcomes),
    ] {
        for table in section(root, key, problems) {
            list.extend(read_code(table, kind, problems));
        }
    }
    for table in section(root, "agency", problems) {
        drafts.agencies.extend(read_agency(table, problems));
    }
}

fn section<'a, 'i>(
    root: &Table<'a, 'i>,
    key: &'static str,
    problems: &mut Problems,
) -> Vec<Table<'a, 'i>> {
    root.get(key)
        .map(|node| node.tables(problems))
        .unwrap_or_default()
}

fn read_service(mut table: Table<'_, '_>, problems: &mut Problems) -> Option<Service> {
    let id = identifier(
        &table,
        "id",
        |text| refbus_core::ids::ServiceId::new(text).map(drop),
        problems,
    );
    if let Some(id) = &id {
        table.set_label(format!("service \"{}\"", id.value));
    }
    table.allow_only(&["id", "name", "reroutable"], problems);
    let id = id?;
    Some(Service {
        name: string(&table, "name", problems).unwrap_or_default(),
        reroutable: optional_bool(&table, "reroutable", true, problems),
        id,
    })
}

fn read_code(mut table: Table<'_, '_>, kind: &str, problems: &mut Problems) -> Option<Code> {
    // Categories are named like services; reasons and outcomes are codes with a description.
    let (id_key, text_key) = match kind {
        "category" => ("id", "name"),
        _ => ("code", "description"),
    };
    let check: fn(&str) -> Result<(), IdError> = match kind {
        "category" => |text| refbus_core::ids::CategoryId::new(text).map(drop),
        "reason" => |text| refbus_core::ids::ReasonCode::new(text).map(drop),
        _ => |text| refbus_core::ids::OutcomeCode::new(text).map(drop),
    };
    let id = identifier(&table, id_key, check, problems);
    if let Some(id) = &id {
        table.set_label(format!("{kind} \"{}\"", id.value));
    }
    table.allow_only(&[id_key, text_key], problems);
    let id = id?;
    Some(Code {
        description: string(&table, text_key, problems).unwrap_or_default(),
        id,
    })
}

fn read_agency(mut table: Table<'_, '_>, problems: &mut Problems) -> Option<Agency> {
    let id = identifier(
        &table,
        "id",
        |text| refbus_core::ids::AgencyId::new(text).map(drop),
        problems,
    );
    if let Some(id) = &id {
        table.set_label(format!("agency \"{}\"", id.value));
    }
    table.allow_only(
        &[
            "id",
            "name",
            "region",
            "time_zone",
            "services",
            "public_key",
            "backup_public_key",
            "signing_keys",
            "working_hours",
            "local_holidays",
            "observes_holidays",
            "alternates",
            "contacts",
        ],
        problems,
    );
    let id = id?;
    let time_zone = table
        .required("time_zone", problems)
        .and_then(|node| node.string(problems))
        .and_then(|text| match parse_time_zone(&text.value) {
            Ok(zone) => Some(zone),
            Err(message) => {
                problems.at(text.pos, format!("`time_zone`: {message}"));
                None
            }
        });
    let public_key = table
        .get("public_key")
        .and_then(|node| node.string(problems))
        .and_then(|key| fingerprinted_key(&key, "public_key", problems, |_| Ok(())));
    // The backup key is new: it must carry its fingerprint, read aloud by the agency head
    // who keeps the secret half offline.
    let backup_public_key = table
        .get("backup_public_key")
        .and_then(|node| node.string(problems))
        .and_then(|key| {
            if key.value.split_whitespace().nth(1).is_none() {
                problems.at(
                    key.pos,
                    "`backup_public_key` needs its fingerprint after the key (`<key> <16 hex \
                     digits>`, as `refbus keys generate-backup` prints it)",
                );
                return None;
            }
            fingerprinted_key(&key, "backup_public_key", problems, |_| Ok(()))
        });
    let local_holidays = table
        .get("local_holidays")
        .map(|node| {
            node.items(problems)
                .iter()
                .filter_map(|item| {
                    let text = item.date_text(problems)?;
                    let day = date(&text, "local_holidays", problems)?;
                    Some(Located {
                        value: day,
                        pos: text.pos,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let week = match table.required("working_hours", problems) {
        Some(node) => read_week(&node, &table, problems),
        None => Default::default(),
    };
    Some(Agency {
        name: string(&table, "name", problems).unwrap_or_default(),
        region: string(&table, "region", problems).unwrap_or_default(),
        time_zone,
        services: strings(&table, "services", problems),
        public_key,
        backup_public_key,
        signing_keys: signing_keys(&table, "signing_keys", problems),
        week,
        local_holidays,
        observes_holidays: optional_bool(&table, "observes_holidays", true, problems),
        alternates: read_alternates(&table, problems),
        contacts: read_contacts(&table, problems),
        id,
    })
}

/// `monday = ["07:30-16:00"]` ... or `every_day = ["00:00-24:00"]`; a missing day is closed.
fn read_week(
    node: &Node<'_, '_>,
    agency: &Table<'_, '_>,
    problems: &mut Problems,
) -> [Vec<Window>; 7] {
    let mut week: [Vec<Window>; 7] = Default::default();
    let Some(mut table) = node.table(problems) else {
        return week;
    };
    table.set_label(format!("the working hours of {}", agency.label()));
    let allowed = [WEEKDAYS.as_slice(), &["every_day"]].concat();
    table.allow_only(&allowed, problems);
    let every_day = table.get("every_day");
    for (index, day) in WEEKDAYS.iter().enumerate() {
        let Some(node) = table.get(day) else { continue };
        if every_day.is_some() {
            problems.at(
                node.pos(),
                format!("`{day}` and `every_day` both set the hours of {day}: keep one"),
            );
        }
        week[index] = read_windows(&node, problems);
    }
    if let Some(node) = every_day {
        let windows = read_windows(&node, problems);
        for day in &mut week {
            day.clone_from(&windows);
        }
    }
    if week.iter().all(Vec::is_empty) {
        problems.at(
            table.pos(),
            format!(
                "{} has no working hours at all, so its working-hours clocks could never end: give at least one window, e.g. monday = [\"07:30-16:00\"], or every_day = [\"00:00-24:00\"] for a 24x7 service",
                agency.label()
            ),
        );
    }
    week
}

/// One day's windows, which must be in order and must not overlap.
fn read_windows(node: &Node<'_, '_>, problems: &mut Problems) -> Vec<Window> {
    let mut windows: Vec<Window> = Vec::new();
    for text in node.strings(problems) {
        let window = match parse_window(&text.value) {
            Ok(window) => window,
            Err(message) => {
                problems.at(text.pos, format!("`{}`: {message}", node.key()));
                continue;
            }
        };
        if let Some(previous) = windows.last() {
            if window.start_minute < previous.start_minute {
                problems.at(
                    text.pos,
                    format!(
                        "`{}`: \"{}\" is out of order: list a day's windows from morning to evening",
                        node.key(),
                        text.value
                    ),
                );
                continue;
            }
            if window.start_minute < previous.end_minute {
                problems.at(
                    text.pos,
                    format!(
                        "`{}`: \"{}\" overlaps the window before it: windows of one day must not overlap",
                        node.key(),
                        text.value
                    ),
                );
                continue;
            }
        }
        windows.push(window);
    }
    windows
}

fn read_alternates(
    agency: &Table<'_, '_>,
    problems: &mut Problems,
) -> Vec<(Located<String>, Located<String>)> {
    let Some(table) = agency
        .get("alternates")
        .and_then(|node| node.table(problems))
    else {
        return Vec::new();
    };
    table
        .entries()
        .into_iter()
        .filter_map(|(service, node)| {
            let to = node.string(problems)?;
            Some((
                Located {
                    value: service.value.to_owned(),
                    pos: service.pos,
                },
                to,
            ))
        })
        .collect()
}

fn read_contacts(agency: &Table<'_, '_>, problems: &mut Problems) -> BTreeMap<Role, Contact> {
    let mut contacts = BTreeMap::new();
    let Some(mut table) = agency.get("contacts").and_then(|node| node.table(problems)) else {
        return contacts;
    };
    table.set_label(format!("the contacts of {}", agency.label()));
    table.allow_only(&Role::ALL.map(Role::as_str), problems);
    for (role_name, node) in table.entries() {
        let Some(role) = Role::parse(role_name.value) else {
            continue;
        };
        let Some(mut contact) = node.table(problems) else {
            continue;
        };
        contact.set_label(format!(
            "the {} contact of {}",
            role_name.value,
            agency.label()
        ));
        contact.allow_only(&["title", "phone", "email"], problems);
        contacts.insert(
            role,
            Contact {
                title: string(&contact, "title", problems).unwrap_or_default(),
                phone: optional_string(&contact, "phone", problems),
                email: optional_string(&contact, "email", problems),
            },
        );
    }
    contacts
}

// === policies ===

fn read_policy(
    mut table: Table<'_, '_>,
    working_day: Duration,
    problems: &mut Problems,
) -> Option<Policy> {
    let version = identifier(
        &table,
        "version",
        |text| refbus_core::ids::PolicyVersion::new(text).map(drop),
        problems,
    );
    if let Some(version) = &version {
        table.set_label(format!("policy version \"{}\"", version.value));
    }
    table.allow_only(
        &[
            "version",
            "effective_from",
            "clock",
            "escalation",
            "reroute",
        ],
        problems,
    );
    let version = version?;
    let effective_from = table
        .required("effective_from", problems)
        .and_then(|node| node.date_text(problems))
        .and_then(|text| match Timestamp::parse_rfc3339(&text.value) {
            Ok(at) => Some(Located {
                value: at,
                pos: text.pos,
            }),
            Err(_) => {
                problems.at(
                    text.pos,
                    format!(
                        "`effective_from`: \"{}\" is not an instant with its offset: write e.g. 2026-01-01T00:00:00+08:00",
                        text.value
                    ),
                );
                None
            }
        });
    let clocks = section(&table, "clock", problems)
        .into_iter()
        .filter_map(|clock| read_clock(clock, &version.value, working_day, problems))
        .collect();
    let escalations = section(&table, "escalation", problems)
        .into_iter()
        .filter_map(|escalation| read_escalation(escalation, &version.value, working_day, problems))
        .collect();
    let reroutes = section(&table, "reroute", problems)
        .into_iter()
        .filter_map(|reroute| read_reroute(reroute, working_day, problems))
        .collect();
    Some(Policy {
        version,
        effective_from,
        clocks,
        escalations,
        reroutes,
    })
}

const CALENDARS: [(&str, CalendarKind); 2] = [
    ("wall_clock", CalendarKind::WallClock),
    ("working_hours", CalendarKind::WorkingHours),
];
const PARTIES: [(&str, Party); 2] = [("sender", Party::Sender), ("recipient", Party::Recipient)];

fn read_clock(
    mut table: Table<'_, '_>,
    version: &str,
    working_day: Duration,
    problems: &mut Problems,
) -> Option<Clock> {
    let id = identifier(
        &table,
        "id",
        |text| refbus_core::ids::ClockId::new(text).map(drop),
        problems,
    );
    if let Some(id) = &id {
        table.set_label(format!(
            "clock \"{}\" of policy version \"{version}\"",
            id.value
        ));
    }
    table.allow_only(
        &[
            "id",
            "title",
            "basis",
            "services",
            "priorities",
            "categories",
            "start",
            "stop",
            "pause_on_hold",
            "target",
            "calendar",
            "responsible",
            "warnings",
            "escalation",
        ],
        problems,
    );
    let id = id?;

    let priorities = strings(&table, "priorities", problems)
        .into_iter()
        .filter_map(|text| {
            let priority = Priority::parse(&text.value);
            if priority.is_none() {
                problems.at(
                    text.pos,
                    format!(
                        "`priorities`: \"{}\" is not a priority{}; use emergency, urgent or routine",
                        text.value,
                        hint(&text.value, Priority::ALL.map(Priority::as_str))
                    ),
                );
            }
            priority
        })
        .collect();

    let start = table
        .required("start", problems)
        .and_then(|node| node.string(problems))
        .and_then(|text| match parse_start(&text.value) {
            Ok(start) => Some(start),
            Err(message) => {
                problems.at(text.pos, format!("`start`: {message}"));
                None
            }
        });
    let stop = read_stop(&table, start.as_ref(), problems);

    let calendar = choice(&table, "calendar", &CALENDARS, problems);
    let target = table
        .required("target", problems)
        .and_then(|node| positive_duration(&node, working_day, problems));
    if let (Some(target), Some(calendar)) = (&target, calendar) {
        check_day_unit(target, calendar, working_day, problems);
    }

    let warnings = match table.get("warnings") {
        Some(node) => read_warnings(&node, problems),
        None => DEFAULT_WARNINGS.to_vec(),
    };

    Some(Clock {
        title: string(&table, "title", problems).unwrap_or_default(),
        basis: optional_string(&table, "basis", problems),
        services: strings(&table, "services", problems),
        priorities,
        categories: strings(&table, "categories", problems),
        start,
        stop,
        pause_on_hold: optional_bool(&table, "pause_on_hold", false, problems),
        target: target.map(|target| target.value.duration),
        calendar,
        responsible: choice(&table, "responsible", &PARTIES, problems),
        warnings,
        escalation: table
            .get("escalation")
            .and_then(|node| node.string(problems)),
        id,
    })
}

fn read_stop(
    table: &Table<'_, '_>,
    start: Option<&ClockStart>,
    problems: &mut Problems,
) -> Vec<Milestone> {
    let Some(node) = table.required("stop", problems) else {
        return Vec::new();
    };
    let texts = node.strings(problems);
    if texts.is_empty() {
        problems.at(
            node.pos(),
            "`stop` needs at least one status, e.g. [\"accepted\", \"rejected\"] (closing statuses always stop a clock too)",
        );
    }
    let mut stop = Vec::new();
    for text in texts {
        let milestone = match parse_milestone(&text.value) {
            Ok(milestone) => milestone,
            Err(message) => {
                problems.at(text.pos, format!("`stop`: {message}"));
                continue;
            }
        };
        if start == Some(&ClockStart::On(milestone)) {
            problems.at(
                text.pos,
                format!(
                    "`stop` contains \"{}\", the status the clock starts on: the clock would stop as soon as it starts",
                    text.value
                ),
            );
        }
        if stop.contains(&milestone) {
            problems.at(text.pos, format!("`stop` lists \"{}\" twice", text.value));
        }
        stop.push(milestone);
    }
    stop
}

/// `3d` on working hours means 72 working hours, and `N working days` on the wall clock means
/// N x 8 wall hours: both are almost always a mistake, so both are refused with the fix.
fn check_day_unit(
    target: &Located<Amount>,
    calendar: CalendarKind,
    working_day: Duration,
    problems: &mut Problems,
) {
    match (target.value.days, calendar) {
        (DayUnit::WallDays, CalendarKind::WorkingHours) => {
            let days = target.value.duration.as_secs() / 86_400;
            let working_days = target.value.duration.as_secs_f64() / working_day.as_secs_f64();
            problems.at(
                target.pos,
                format!(
                    "`target` counts days of 24 hours, but the clock runs on working hours: that is {} of working time ({working_days:.0} working days); write \"{days} working days\", or use calendar = \"wall_clock\"",
                    format_duration(target.value.duration)
                ),
            );
        }
        (DayUnit::Working, CalendarKind::WallClock) => problems.at(
            target.pos,
            format!(
                "`target` counts working time, but the clock runs on the wall clock (24x7): that is only {} of elapsed time; use calendar = \"working_hours\", or write the target in hours or days (\"3d\")",
                format_duration(target.value.duration)
            ),
        ),
        _ => {}
    }
}

fn read_warnings(node: &Node<'_, '_>, problems: &mut Problems) -> Vec<u16> {
    let mut warnings: Vec<u16> = Vec::new();
    for text in node.strings(problems) {
        match parse_percent(&text.value) {
            Ok(permille) if warnings.last().is_some_and(|last| *last >= permille) => {
                problems.at(
                    text.pos,
                    format!(
                        "`warnings`: \"{}\" is not after the warning before it: list warnings in ascending order, e.g. [\"50%\", \"75%\"]",
                        text.value
                    ),
                );
            }
            Ok(permille) => warnings.push(permille),
            Err(message) => problems.at(text.pos, format!("`warnings`: {message}")),
        }
    }
    warnings
}

const ACTIONS: [(&str, Action); 2] = [("notify", Action::Notify), ("reroute", Action::Reroute)];

fn read_escalation(
    mut table: Table<'_, '_>,
    version: &str,
    working_day: Duration,
    problems: &mut Problems,
) -> Option<Escalation> {
    let id = identifier(
        &table,
        "id",
        |text| refbus_core::ids::EscalationPolicyId::new(text).map(drop),
        problems,
    );
    if let Some(id) = &id {
        table.set_label(format!(
            "escalation policy \"{}\" of policy version \"{version}\"",
            id.value
        ));
    }
    table.allow_only(&["id", "title", "level"], problems);
    let id = id?;
    let level_tables = section(&table, "level", problems);
    if level_tables.is_empty() {
        problems.at(
            table.pos(),
            format!(
                "{} has no levels: add at least one [[policy.escalation.level]] with `at` and `notify`",
                table.label()
            ),
        );
    }
    let mut levels: Vec<Level> = Vec::new();
    let mut previous: Option<(Trigger, usize)> = None;
    for (index, level_table) in level_tables.into_iter().enumerate() {
        let Some(level) = read_level(level_table, index + 1, &id.value, working_day, problems)
        else {
            continue;
        };
        if let (Some(trigger), Some((before, before_number))) = (level.0.trigger, previous)
            && trigger_rank(trigger) < trigger_rank(before)
        {
            problems.at(
                level.1,
                format!(
                    "level {} of escalation policy \"{}\" fires before level {before_number}: list levels in the order they fire",
                    index + 1,
                    id.value
                ),
            );
        }
        if let Some(trigger) = level.0.trigger {
            previous = Some((trigger, index + 1));
        }
        levels.push(level.0);
    }
    Some(Escalation {
        title: string(&table, "title", problems).unwrap_or_default(),
        id,
        levels,
    })
}

/// Orders triggers in the clock's time: warnings by fraction, then the breach, then delays.
fn trigger_rank(trigger: Trigger) -> (u8, u128) {
    match trigger {
        Trigger::Warning(permille) => (0, u128::from(permille)),
        Trigger::Breach => (1, 0),
        Trigger::AfterBreach(delay) => (2, delay.as_millis()),
    }
}

fn read_level(
    mut table: Table<'_, '_>,
    number: usize,
    policy: &str,
    working_day: Duration,
    problems: &mut Problems,
) -> Option<(Level, Pos)> {
    table.set_label(format!("level {number} of escalation policy \"{policy}\""));
    table.allow_only(
        &["at", "notify", "action", "repeat", "repeat_every"],
        problems,
    );
    let at = table.get("at").map_or(table.pos(), |node| node.pos());
    let trigger = table
        .required("at", problems)
        .and_then(|node| node.string(problems))
        .and_then(|text| match parse_trigger(&text.value, working_day) {
            Ok(trigger) => Some(trigger),
            Err(message) => {
                problems.at(text.pos, format!("`at`: {message}"));
                None
            }
        });
    let notify = strings(&table, "notify", problems);
    let targets: Vec<Located<Target>> = notify
        .iter()
        .filter_map(|text| match parse_target(&text.value) {
            Ok(target) => Some(Located {
                value: target,
                pos: text.pos,
            }),
            Err(message) => {
                problems.at(text.pos, format!("`notify`: {message}"));
                None
            }
        })
        .collect();
    let action_node = table.get("action");
    let action_pos = action_node.map_or(table.pos(), |node| node.pos());
    let action = match action_node {
        Some(_) => choice(&table, "action", &ACTIONS, problems)?,
        None => Action::Notify,
    };
    if action == Action::Notify && notify.is_empty() {
        problems.at(
            table.pos(),
            format!(
                "{} notifies nobody: list targets in `notify`, e.g. [\"recipient.supervisor\", \"coordinator\"]",
                table.label()
            ),
        );
    }
    let repeat = match table.get("repeat") {
        Some(node) => match node.integer(problems).map(u16::try_from) {
            Some(Ok(repeat)) => repeat,
            Some(Err(_)) => {
                problems.at(node.pos(), "`repeat` must be between 0 and 65535");
                0
            }
            None => 0,
        },
        None => 0,
    };
    let repeat_every = table
        .get("repeat_every")
        .and_then(|node| positive_duration(&node, working_day, problems));
    match (repeat, &repeat_every) {
        (0, Some(every)) => problems.at(
            every.pos,
            "`repeat_every` has no effect without `repeat`: say how many more times to notify, e.g. repeat = 2",
        ),
        (1.., None) if table.get("repeat_every").is_none() => problems.at(
            table.get("repeat").map_or(table.pos(), |node| node.pos()),
            "`repeat` needs `repeat_every`: say how long to wait between notices, e.g. repeat_every = \"30m\"",
        ),
        _ => {}
    }
    if action == Action::Reroute && repeat > 0 {
        problems.at(
            action_pos,
            "a reroute happens once: remove `repeat` from this level, or add a notify level after it",
        );
    }
    Some((
        Level {
            trigger,
            targets,
            action: Located {
                value: action,
                pos: action_pos,
            },
            repeat,
            repeat_every: repeat_every.map_or(Duration::ZERO, |every| every.value.duration),
        },
        at,
    ))
}

const REROUTE_STATUSES: [(&str, Status); 2] =
    [("rejected", Status::Rejected), ("failed", Status::Failed)];

fn read_reroute(
    table: Table<'_, '_>,
    working_day: Duration,
    problems: &mut Problems,
) -> Option<Reroute> {
    table.allow_only(&["on", "services", "delay"], problems);
    let on = choice(&table, "on", &REROUTE_STATUSES, problems);
    // Zero is allowed here: "reroute at once".
    let delay = table
        .required("delay", problems)
        .and_then(|node| duration(&node, working_day, problems))
        .map_or(Duration::ZERO, |amount| amount.value.duration);
    Some(Reroute {
        pos: table.pos(),
        on,
        services: strings(&table, "services", problems),
        delay,
    })
}

// === holidays ===

const KINDS: [&str; 2] = ["national", "cuti_bersama"];

/// Reads a holiday file: `year`, `source`, and `[[holiday]]` entries of that year.
pub(crate) fn read_holidays(root: &Table<'_, '_>, problems: &mut Problems) -> HolidayFile {
    root.allow_only(&["year", "source", "holiday"], problems);
    let year = root.required("year", problems).and_then(|node| {
        Some(Located {
            value: i32::try_from(node.integer(problems)?).ok()?,
            pos: node.pos(),
        })
    });
    // The source (which SKB the dates come from) is for the people who check the file.
    string(root, "source", problems);
    let mut seen: BTreeSet<NaiveDate> = BTreeSet::new();
    let mut holidays = Vec::new();
    for mut table in section(root, "holiday", problems) {
        table.set_label("[[holiday]]".to_owned());
        table.allow_only(&["date", "name", "kind"], problems);
        string(&table, "name", problems);
        if let Some(kind) = table
            .required("kind", problems)
            .and_then(|node| node.string(problems))
            && !KINDS.contains(&kind.value.as_str())
        {
            problems.at(
                kind.pos,
                format!(
                    "`kind` is \"{}\"{}; use \"national\" (libur nasional) or \"cuti_bersama\"",
                    kind.value,
                    hint(&kind.value, KINDS)
                ),
            );
        }
        let Some(text) = table
            .required("date", problems)
            .and_then(|node| node.date_text(problems))
        else {
            continue;
        };
        let Some(day) = date(&text, "date", problems) else {
            continue;
        };
        if let Some(year) = year.as_ref().map(|year| year.value)
            && chrono::Datelike::year(&day) != year
        {
            problems.at(
                text.pos,
                format!("`date` {day} is not in {year}, the year of this holiday file"),
            );
            continue;
        }
        if !seen.insert(day) {
            problems.at(
                text.pos,
                format!("{day} is listed twice in this holiday file"),
            );
            continue;
        }
        holidays.push(Located {
            value: day,
            pos: text.pos,
        });
    }
    HolidayFile { year, holidays }
}
