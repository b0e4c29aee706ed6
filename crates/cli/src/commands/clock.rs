//! `refbus clock explain`: every clock that applies to a referral, and everything that would
//! fall due if nobody acted, computed by the core exactly as the router computes it.
//!
//! The referral is built the way an adapter builds one (a `Create` request through
//! [`refbus_core::decide`]), and [`refbus_core::evaluate`] at the end of time lists each item
//! with the instant it falls due. Nothing here does clock arithmetic of its own.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use chrono::{NaiveDateTime, TimeZone as _, Timelike as _};
use chrono_tz::{OffsetName as _, Tz};
use clap::{Args, Subcommand};
use refbus_config::did_you_mean;
use refbus_core::clock::{CalendarKind, ClockPolicy, ClockStart, Phase, Track};
use refbus_core::escalation::{Action, Due};
use refbus_core::event::{Actor, Notified, RerouteCause};
use refbus_core::ids::{
    AgencyId, CaseId, CategoryId, OperatorId, PolicyVersion, RequestId, ServiceId,
};
use refbus_core::referral::{Consent, Creation, Milestone, Party, Priority, Referral};
use refbus_core::registry::PolicySet;
use refbus_core::time::format_duration;
use refbus_core::{Command, Registry, Request, Timestamp, decide, evaluate};

use super::UsageError;

#[derive(Debug, Subcommand)]
pub(crate) enum ClockCommand {
    /// Show every clock that applies to a referral and every warning, breach, escalation and
    /// reroute that falls due if nobody acts, in the responsible agency's local time and UTC.
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    /// The main configuration file, e.g. deploy/config/refbus.toml.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The service asked for, e.g. shelter.
    #[arg(long)]
    service: String,
    /// emergency, urgent or routine.
    #[arg(long, value_parser = parse_priority)]
    priority: Priority,
    /// The agency asked to serve.
    #[arg(long, value_name = "AGENCY")]
    recipient: String,
    /// The referring agency [default: the Tim Terpadu coordinator].
    #[arg(long, value_name = "AGENCY")]
    sender: Option<String>,
    /// A case category (repeat the flag for several), e.g. sexual_violence.
    #[arg(long = "category", value_name = "CATEGORY")]
    categories: Vec<String>,
    /// When the referral is created: RFC 3339 (2026-03-06T15:00:00+08:00), or the sender's
    /// local time ("2026-03-06 15:00") [default: now].
    #[arg(long, value_name = "TIME")]
    start: Option<String>,
    /// When the person reported to the sender (statutory clocks run from then), in the same
    /// forms as --start.
    #[arg(long, value_name = "TIME")]
    case_reported_at: Option<String>,
    /// The policy version [default: the one in force at --start].
    #[arg(long, value_name = "VERSION")]
    policy_version: Option<String>,
}

fn parse_priority(text: &str) -> Result<Priority, String> {
    Priority::parse(text).ok_or_else(|| "use emergency, urgent or routine".to_owned())
}

pub(crate) fn run(command: ClockCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClockCommand::Explain(args) => explain(&args),
    }
}

fn explain(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let registry = refbus_config::load(&args.config).map_err(|report| {
        anyhow::anyhow!(
            "{} is not a valid configuration (check it with `refbus config check`):\n{report}",
            args.config.display()
        )
    })?;
    let (referral, sender_note) = build_referral(args, &registry)?;
    let text = render(&referral, &registry, sender_note);
    io::stdout().lock().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

// === the referral, as an adapter would create it ===

fn usage(message: String) -> anyhow::Error {
    UsageError(message).into()
}

fn agency(registry: &Registry, flag: &str, text: &str) -> anyhow::Result<AgencyId> {
    AgencyId::new(text)
        .ok()
        .filter(|id| registry.agency(id).is_some())
        .ok_or_else(|| {
            let near = did_you_mean(text, registry.agencies.keys().map(AgencyId::as_str))
                .map(|near| format!(" (did you mean \"{near}\"?)"))
                .unwrap_or_default();
            usage(format!(
                "--{flag}: no agency \"{text}\" in the configuration{near}"
            ))
        })
}

/// The coordinator refers by default: it is the party that exists in every deployment.
fn default_sender(registry: &Registry, recipient: &AgencyId) -> anyhow::Result<AgencyId> {
    if &registry.coordinator != recipient {
        return Ok(registry.coordinator.clone());
    }
    registry
        .agencies
        .keys()
        .find(|id| *id != recipient)
        .cloned()
        .ok_or_else(|| {
            usage("--sender: the configuration has no other agency to refer from".to_owned())
        })
}

fn zone_of(registry: &Registry, agency: &AgencyId) -> Tz {
    registry
        .agency(agency)
        .map_or(Tz::UTC, |agency| agency.working_hours.time_zone)
}

/// The current instant: the binary, unlike the core, may read the clock.
fn now() -> Timestamp {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_millis(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
}

/// RFC 3339, or a local date and time in `zone`.
fn instant(flag: &str, text: &str, zone: Tz) -> anyhow::Result<Timestamp> {
    if let Ok(at) = Timestamp::parse_rfc3339(text) {
        return Ok(at);
    }
    let local = [
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ]
    .iter()
    .find_map(|format| NaiveDateTime::parse_from_str(text.trim(), format).ok())
    .and_then(|local| zone.from_local_datetime(&local).earliest());
    local
        .map(|at| Timestamp::from_chrono(&at))
        .ok_or_else(|| {
            usage(format!(
                "--{flag}: \"{text}\" is not a time: write 2026-03-06T15:00:00+08:00, or the sender's local time as \"2026-03-06 15:00\" ({zone})"
            ))
        })
}

fn build_referral(
    args: &ExplainArgs,
    registry: &Registry,
) -> anyhow::Result<(Referral, Option<String>)> {
    let recipient = agency(registry, "recipient", &args.recipient)?;
    let (sender, sender_note) = match &args.sender {
        Some(text) => (agency(registry, "sender", text)?, None),
        None => {
            let sender = default_sender(registry, &recipient)?;
            let note = format!("{sender} (by default; choose with --sender)");
            (sender, Some(note))
        }
    };

    let service = ServiceId::new(&args.service)
        .ok()
        .filter(|service| registry.services.contains_key(service))
        .ok_or_else(|| {
            let near = did_you_mean(
                &args.service,
                registry.services.keys().map(ServiceId::as_str),
            )
            .map(|near| format!(" (did you mean \"{near}\"?)"))
            .unwrap_or_default();
            usage(format!(
                "--service: no service \"{}\" in the configuration{near}",
                args.service
            ))
        })?;
    let offers = registry
        .agency(&recipient)
        .is_some_and(|agency| agency.services.contains(&service));
    if !offers {
        let offering: Vec<&str> = registry
            .agencies
            .values()
            .filter(|agency| agency.services.contains(&service))
            .map(|agency| agency.id.as_str())
            .collect();
        return Err(usage(format!(
            "--service: {recipient} does not offer {service}; offered by: {}",
            if offering.is_empty() {
                "no agency".to_owned()
            } else {
                offering.join(", ")
            }
        )));
    }

    let mut categories = Vec::new();
    for text in &args.categories {
        let category = CategoryId::new(text)
            .ok()
            .filter(|category| registry.categories.contains_key(category))
            .ok_or_else(|| {
                let near = did_you_mean(text, registry.categories.keys().map(CategoryId::as_str))
                    .map(|near| format!(" (did you mean \"{near}\"?)"))
                    .unwrap_or_default();
                usage(format!(
                    "--category: no category \"{text}\" in the configuration{near}"
                ))
            })?;
        categories.push(category);
    }

    let zone = zone_of(registry, &sender);
    let start = match &args.start {
        Some(text) => instant("start", text, zone)?,
        None => now(),
    };
    let case_reported_at = args
        .case_reported_at
        .as_deref()
        .map(|text| instant("case-reported-at", text, zone))
        .transpose()?;
    let policy_version = match &args.policy_version {
        Some(text) => PolicyVersion::new(text)
            .ok()
            .filter(|version| registry.policy(version).is_some())
            .ok_or_else(|| {
                let known: Vec<&str> = registry.policies.iter().map(|p| p.version.as_str()).collect();
                usage(format!(
                    "--policy-version: no policy version \"{text}\"; the configuration has: {}",
                    known.join(", ")
                ))
            })?,
        None => registry
            .policy_in_force(start)
            .map(|policy| policy.version.clone())
            .ok_or_else(|| {
                usage(format!(
                    "--start: no policy version is in force at {start}; the earliest takes effect at {}",
                    registry
                        .policies
                        .first()
                        .map_or("(none)".to_owned(), |policy| policy.effective_from.to_string())
                ))
            })?,
    };

    let creation = Creation {
        case_id: CaseId::new("clock-explain")?,
        sender: sender.clone(),
        recipient,
        service,
        priority: args.priority,
        categories,
        child: false,
        consent: Consent {
            services: true,
            disclose_to_agencies: true,
            override_justification: None,
        },
        case_reported_at,
        identity: None,
        note: None,
        policy_version,
        parent: None,
        sex: Default::default(),
        age_band: Default::default(),
    };
    let request = Request {
        command: Command::Create(Box::new(creation)),
        actor: Actor::Agency {
            agency: sender,
            system: None,
            operator: OperatorId::new("refbus-clock-explain")?,
        },
        request_id: Some(RequestId::new("clock-explain")?),
    };
    let decision = decide(registry, None, &request, start)
        .map_err(|rejection| usage(format!("refbus would refuse this referral: {rejection}")))?;
    let referral = refbus_core::decide::apply(None, &decision)
        .context("the core could not apply its own creation event")?;
    Ok((referral, sender_note))
}

// === rendering ===

/// `Fri 2026-03-06 15:00 WITA (2026-03-06T07:00:00Z)`.
fn when(at: Timestamp, zone: Tz) -> String {
    let local = at.to_chrono().with_timezone(&zone);
    let abbreviation = local
        .offset()
        .abbreviation()
        .map_or_else(|| local.format("UTC%:z").to_string(), str::to_owned);
    let format = if local.second() == 0 {
        "%a %Y-%m-%d %H:%M"
    } else {
        "%a %Y-%m-%d %H:%M:%S"
    };
    format!(
        "{} {abbreviation} ({})",
        local.format(format),
        at.to_chrono().format("%Y-%m-%dT%H:%M:%SZ")
    )
}

fn party_agency(referral: &Referral, party: Party) -> &AgencyId {
    match party {
        Party::Sender => referral.sender(),
        Party::Recipient => referral.recipient(),
    }
}

fn milestone_name(milestone: &Milestone) -> String {
    match milestone {
        Milestone::Entered(status) => status.to_string(),
        Milestone::RerouteRequested => "reroute_requested".to_owned(),
        Milestone::Rerouted => "rerouted".to_owned(),
    }
}

/// `maros-dinsos supervisor (Kepala Bidang Rehabilitasi Sosial)`.
fn describe_notified(registry: &Registry, notified: &[Notified]) -> String {
    if notified.is_empty() {
        return "nobody".to_owned();
    }
    notified
        .iter()
        .map(|target| {
            let title = registry
                .agency(&target.agency)
                .and_then(|agency| agency.contacts.get(&target.role))
                .map(|contact| format!(" ({})", contact.title))
                .unwrap_or_default();
            format!("{} {}{title}", target.agency, target.role)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn render(referral: &Referral, registry: &Registry, sender_note: Option<String>) -> String {
    let mut out = String::new();
    let creation = &referral.creation;
    let sender_zone = zone_of(registry, referral.sender());
    let _ = writeln!(
        out,
        "Referral: {} {} from {} to {}",
        creation.priority,
        creation.service,
        sender_note.unwrap_or_else(|| referral.sender().to_string()),
        referral.recipient()
    );
    if !creation.categories.is_empty() {
        let names: Vec<&str> = creation.categories.iter().map(CategoryId::as_str).collect();
        let _ = writeln!(out, "  categories:     {}", names.join(", "));
    }
    let _ = writeln!(
        out,
        "  created:        {}",
        when(referral.created_at, sender_zone)
    );
    if let Some(reported) = creation.case_reported_at {
        let _ = writeln!(out, "  case reported:  {}", when(reported, sender_zone));
    }
    let _ = writeln!(out, "  policy version: {}", creation.policy_version);
    let _ = writeln!(
        out,
        "Each item below falls due only if nobody acts first: a clock that stops, or an acknowledged escalation, cancels what follows."
    );

    let Some(policies) = registry.policy(&creation.policy_version) else {
        return out;
    };
    let due = evaluate(referral, registry, Timestamp::MAX).due;
    let clocks: Vec<&ClockPolicy> = policies
        .clocks
        .iter()
        .filter(|clock| clock.applies_to.matches(referral))
        .collect();
    if clocks.is_empty() {
        let _ = writeln!(
            out,
            "\nNo clock of policy version {} applies to this referral.",
            creation.policy_version
        );
    }
    for clock in clocks {
        render_clock(&mut out, clock, policies, referral, registry, &due);
    }
    render_reroute_rules(&mut out, policies, referral, registry);
    out
}

fn render_clock(
    out: &mut String,
    clock: &ClockPolicy,
    policies: &PolicySet,
    referral: &Referral,
    registry: &Registry,
    due: &[Due],
) {
    let responsible = party_agency(referral, clock.responsible);
    let zone = zone_of(registry, responsible);
    let _ = writeln!(out, "\nClock {}: {}", clock.id, clock.title);
    if let Some(basis) = &clock.basis {
        let _ = writeln!(out, "  basis:          {basis}");
    }
    let calendar = match clock.calendar {
        CalendarKind::WallClock => "on the wall clock (24x7)".to_owned(),
        CalendarKind::WorkingHours => {
            format!("of working time, on the working hours of {responsible} (holidays excluded)")
        }
    };
    let _ = writeln!(
        out,
        "  target:         {} {calendar}",
        format_duration(clock.target)
    );
    let _ = writeln!(
        out,
        "  responsible:    {responsible}, the {}; times below in {zone} local time",
        clock.responsible.as_str()
    );
    let track = Track::of(clock, referral);
    let start = match (&clock.start, track.phase, track.started_at) {
        (_, Phase::NotStarted, _) | (_, _, None) => match &clock.start {
            ClockStart::On(milestone) => format!(
                "when the referral reaches {} (not yet: nothing is scheduled until then)",
                milestone_name(milestone)
            ),
            ClockStart::CaseReported => "when the case was reported".to_owned(),
        },
        (ClockStart::CaseReported, _, Some(at)) => {
            format!(
                "{} (when the person reported to the sender)",
                when(at, zone)
            )
        }
        (ClockStart::On(milestone), _, Some(at)) => {
            format!("{} (on {})", when(at, zone), milestone_name(milestone))
        }
    };
    let _ = writeln!(out, "  starts:         {start}");
    let stops: Vec<String> = clock.stop.iter().map(milestone_name).collect();
    let pause = if clock.pause_on_hold {
        "; paused while on hold"
    } else {
        "; never paused"
    };
    let _ = writeln!(out, "  stops on:       {}{pause}", stops.join(", "));
    let escalation = clock
        .escalation
        .as_ref()
        .and_then(|id| policies.escalations.get(id));
    if let Some(escalation) = escalation {
        let _ = writeln!(
            out,
            "  escalation:     {} ({})",
            escalation.id, escalation.title
        );
    }

    let items: Vec<&Due> = due
        .iter()
        .filter(|item| due_clock(item) == Some(&clock.id))
        .collect();
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "  if nobody acts:");
    for item in items {
        let what = match item {
            Due::Warning { permille, .. } => format!("warning at {}", percent(*permille)),
            Due::Breach { .. } => "BREACH: target reached".to_owned(),
            Due::Escalation {
                level,
                repetition,
                action,
                notified,
                ..
            } => {
                let repeats = escalation
                    .and_then(|policy| policy.levels.get(usize::from(*level).saturating_sub(1)))
                    .map_or(0, |level| level.repeat);
                let label = if *repetition == 0 {
                    format!("level {level}")
                } else {
                    format!("level {level}, repeat {repetition} of {repeats}")
                };
                match action {
                    Action::Notify => {
                        format!("{label}: notify {}", describe_notified(registry, notified))
                    }
                    Action::Reroute => format!(
                        "{label}: reroute impossible (no alternate for {} at {}): notify {}",
                        referral.creation.service,
                        referral.recipient(),
                        describe_notified(registry, notified)
                    ),
                }
            }
            Due::Reroute { to, cause, .. } => match cause {
                RerouteCause::Escalation { level, .. } => {
                    format!("level {level}: reroute to {to} (the recipient's alternate)")
                }
                RerouteCause::Status { status } => format!("reroute to {to} (on {status})"),
            },
        };
        let _ = writeln!(out, "    {}  {what}", when(item.due_at(), zone));
    }
}

fn due_clock(item: &Due) -> Option<&refbus_core::ids::ClockId> {
    match item {
        Due::Warning { clock, .. } | Due::Breach { clock, .. } | Due::Escalation { clock, .. } => {
            Some(clock)
        }
        Due::Reroute {
            cause: RerouteCause::Escalation { clock, .. },
            ..
        } => Some(clock),
        Due::Reroute { .. } => None,
    }
}

/// `50%`, `62.5%`.
fn percent(permille: u16) -> String {
    if permille.is_multiple_of(10) {
        format!("{}%", permille / 10)
    } else {
        format!("{}.{}%", permille / 10, permille % 10)
    }
}

fn render_reroute_rules(
    out: &mut String,
    policies: &PolicySet,
    referral: &Referral,
    registry: &Registry,
) {
    let service = &referral.creation.service;
    let rules: Vec<_> = policies
        .reroutes
        .iter()
        .filter(|rule| rule.services.is_empty() || rule.services.contains(service))
        .collect();
    if rules.is_empty() {
        return;
    }
    let destination = registry
        .alternate(referral.recipient(), service)
        .filter(|to| *to != referral.recipient() && *to != referral.sender());
    let _ = writeln!(out, "\nReroute rules:");
    for rule in rules {
        let _ = match destination {
            Some(to) => writeln!(
                out,
                "  if {}: reroute to {to} (the recipient's alternate for {service}) {} later, unless the sender reroutes first",
                rule.on,
                format_duration(rule.delay)
            ),
            None => writeln!(
                out,
                "  if {}: no automatic reroute ({} names no alternate for {service} other than the sender)",
                rule.on,
                referral.recipient()
            ),
        };
    }
}
