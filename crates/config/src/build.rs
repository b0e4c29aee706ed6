//! From files to a [`Registry`]: parse every file, read the drafts, check every cross-reference,
//! and build the registry only when no problem at all was found.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::NaiveDate;
use refbus_core::Registry;
use refbus_core::calendar::WorkingHours;
use refbus_core::clock::{Applicability, ClockPolicy};
use refbus_core::escalation::{Action, EscalationPolicy, Target};
use refbus_core::ids::{
    AgencyId, CategoryId, ClockId, EscalationPolicyId, OutcomeCode, PolicyVersion, ReasonCode,
    ServiceId,
};
use refbus_core::registry::{self, PolicySet, RerouteRule};
use toml::Spanned;
use toml::de::DeTable;

use crate::diagnostic::{Problems, Report};
use crate::draft::{self, Agency, Clock, Code, DEFAULT_WORKING_DAY, Drafts, HolidayFile, Policy};
use crate::files::{FileId, Pos, Source, line_column, normalize, resolve};
use crate::suggest::hint;
use crate::tree::{Located, Table};

/// The kind of file a `[deployment]` list names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Referenced {
    Include,
    Holidays,
}

/// Parses `main` and the files it names, found among `others` by path. `unreadable` lists files
/// that could not be read, with the reason, so that the problem is reported where the file is
/// named.
pub(crate) fn parse_files(
    main: &Source,
    others: &[Source],
    unreadable: &[(PathBuf, String)],
) -> Result<Registry, Report> {
    let mut problems = Problems::default();
    let mut files: Vec<&Source> = vec![main];
    let main_document = parse_syntax(0, &main.text, &mut problems);
    if !problems.is_empty() {
        return Err(problems.into_report(&files));
    }
    let main_root = Table::root(0, &main_document);
    let deployment = draft::read_deployment(&main_root, &mut problems);

    // Problems that make reading the other files pointless.
    let mut blocking = Problems::default();
    let mut named: BTreeMap<PathBuf, Pos> = BTreeMap::new();
    let mut documents: Vec<(FileId, Spanned<DeTable<'_>>, Referenced)> = Vec::new();
    if let Some(deployment) = &deployment {
        let lists = [
            (&deployment.include, Referenced::Include),
            (&deployment.holidays, Referenced::Holidays),
        ];
        for (names, kind) in lists {
            for name in names {
                let path = resolve(&main.path, &name.value);
                if let Some(first) = named.get(&path) {
                    let first = locate(&files, *first);
                    blocking.at(
                        name.pos,
                        format!("\"{}\" is already named at {first}", name.value),
                    );
                    continue;
                }
                named.insert(path.clone(), name.pos);
                let found = others.iter().find(|source| normalize(&source.path) == path);
                let Some(source) = found else {
                    let reason = unreadable
                        .iter()
                        .find(|(unread, _)| normalize(unread) == path)
                        .map_or("the file was not given".to_owned(), |(_, reason)| {
                            reason.clone()
                        });
                    blocking.at(
                        name.pos,
                        format!(
                            "cannot read \"{}\" ({}): {reason}",
                            name.value,
                            path.display()
                        ),
                    );
                    continue;
                };
                files.push(source);
                let file = files.len() - 1;
                documents.push((file, parse_syntax(file, &source.text, &mut blocking), kind));
            }
        }
    }
    let client_cas = deployment
        .as_ref()
        .map(|deployment| read_client_ca_files(main, others, unreadable, deployment, &mut blocking))
        .unwrap_or_default();
    if !blocking.is_empty() {
        // Syntax errors and missing files first: reading further would report consequences.
        problems.append(blocking);
        return Err(problems.into_report(&files));
    }

    let mut drafts = Drafts {
        deployment,
        ..Drafts::default()
    };
    let working_day = drafts
        .deployment
        .as_ref()
        .map_or(DEFAULT_WORKING_DAY, |deployment| deployment.working_day);
    draft::read_main(&main_root, working_day, &mut drafts, &mut problems);
    let mut holiday_files = Vec::new();
    for (file, document, kind) in &documents {
        let root = Table::root(*file, document);
        match kind {
            Referenced::Include => draft::read_included(&root, &mut drafts, &mut problems),
            Referenced::Holidays => {
                holiday_files.push((*file, draft::read_holidays(&root, &mut problems)));
            }
        }
    }
    check_holiday_files(&files, &holiday_files, &mut problems);
    drafts.holidays = holiday_files.into_iter().map(|(_, file)| file).collect();

    let mut registry = assemble(&files, &drafts, &mut problems);
    if let Some(registry) = &mut registry {
        assign_client_cas(registry, client_cas, &mut problems);
    }
    match registry {
        Some(registry) if problems.is_empty() => Ok(registry),
        _ => {
            if problems.is_empty() {
                problems.at(
                    Pos { file: 0, offset: 0 },
                    "refbus could not build the registry although it found no problem: please report this",
                );
            }
            Err(problems.into_report(&files))
        }
    }
}

/// The certificates of each `[[deployment.client_ca]]` file, with the agencies it vouches for.
type ClientCas = Vec<(Option<Vec<Located<String>>>, Vec<Vec<u8>>)>;

/// Reads every client CA file: PEM, only CA certificates. A problem is reported where the file
/// is named.
fn read_client_ca_files(
    main: &Source,
    others: &[Source],
    unreadable: &[(PathBuf, String)],
    deployment: &draft::Deployment,
    problems: &mut Problems,
) -> ClientCas {
    let mut cas = Vec::new();
    for ca in &deployment.client_cas {
        let path = resolve(&main.path, &ca.file.value);
        let Some(source) = others.iter().find(|source| normalize(&source.path) == path) else {
            let reason = unreadable
                .iter()
                .find(|(unread, _)| normalize(unread) == path)
                .map_or("the file was not given".to_owned(), |(_, reason)| {
                    reason.clone()
                });
            problems.at(
                ca.file.pos,
                format!(
                    "cannot read the client CA \"{}\" ({}): {reason}",
                    ca.file.value,
                    path.display()
                ),
            );
            continue;
        };
        match refbus_tls::certs::certificates_from_pem(&source.text) {
            Ok(certificates) => {
                let mut ders = Vec::new();
                for certificate in certificates {
                    if let Err(problem) = refbus_tls::certs::check_ca(&certificate) {
                        problems.at(
                            ca.file.pos,
                            format!("the client CA \"{}\": {problem}", ca.file.value),
                        );
                    }
                    ders.push(certificate.to_vec());
                }
                cas.push((ca.agencies.clone(), ders));
            }
            Err(problem) => problems.at(
                ca.file.pos,
                format!("the client CA \"{}\" {problem}", ca.file.value),
            ),
        }
    }
    cas
}

/// Gives each agency the client CAs that vouch for it; an agency a CA names must exist.
fn assign_client_cas(registry: &mut Registry, cas: ClientCas, problems: &mut Problems) {
    for (agencies, ders) in cas {
        match agencies {
            None => {
                for agency in registry.agencies.values_mut() {
                    agency.client_cas.extend(ders.iter().cloned());
                }
            }
            Some(named) => {
                for name in named {
                    let found = AgencyId::new(&name.value)
                        .ok()
                        .and_then(|id| registry.agencies.get_mut(&id));
                    match found {
                        Some(agency) => agency.client_cas.extend(ders.iter().cloned()),
                        None => {
                            let known: Vec<String> =
                                registry.agencies.keys().map(ToString::to_string).collect();
                            problems.at(
                                name.pos,
                                format!(
                                    "[[deployment.client_ca]] names agency \"{}\", which is not in the registry{}",
                                    name.value,
                                    hint(&name.value, known.iter().map(String::as_str))
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Parses one file's TOML, reporting every syntax error the parser recovers from.
fn parse_syntax<'i>(file: FileId, text: &'i str, problems: &mut Problems) -> Spanned<DeTable<'i>> {
    let (document, errors) = DeTable::parse_recoverable(text);
    for error in errors {
        let offset = error.span().map_or(0, |span| span.start);
        let message = match error.message() {
            "duplicate key" => {
                let key = error
                    .span()
                    .and_then(|span| text.get(span))
                    .unwrap_or_default();
                format!("TOML syntax error: the key `{key}` is set twice in the same table")
            }
            other => format!("TOML syntax error: {other}"),
        };
        problems.at(Pos { file, offset }, message);
    }
    document
}

/// `path:line:column`, for messages that point at a second place.
fn locate(files: &[&Source], pos: Pos) -> String {
    match files.get(pos.file) {
        Some(source) => {
            let (line, column) = line_column(&source.text, pos.offset);
            format!("{}:{line}:{column}", source.path.display())
        }
        None => "another file".to_owned(),
    }
}

/// The year in a holiday file's name (`2026.toml`), if it has one.
fn year_in_name(source: &Source) -> Option<i32> {
    let stem = source.path.file_stem()?.to_str()?;
    (stem.len() == 4).then(|| stem.parse().ok()).flatten()
}

fn check_holiday_files(
    files: &[&Source],
    holiday_files: &[(FileId, HolidayFile)],
    problems: &mut Problems,
) {
    let mut years: BTreeMap<i32, Pos> = BTreeMap::new();
    let mut days: BTreeMap<NaiveDate, Pos> = BTreeMap::new();
    for (file, holidays) in holiday_files {
        if let Some(year) = &holidays.year {
            if let Some(named) = files.get(*file).and_then(|source| year_in_name(source))
                && named != year.value
            {
                problems.at(
                    year.pos,
                    format!(
                        "`year` is {}, but the file is named for {named}: rename the file or fix the year",
                        year.value
                    ),
                );
            }
            if let Some(first) = years.get(&year.value) {
                problems.at(
                    year.pos,
                    format!(
                        "a second holiday file for {}: the first is at {}; keep one file per year",
                        year.value,
                        locate(files, *first)
                    ),
                );
            }
            years.entry(year.value).or_insert(year.pos);
        }
        for day in &holidays.holidays {
            if let Some(first) = days.get(&day.value) {
                problems.at(
                    day.pos,
                    format!(
                        "{} is already a holiday at {}",
                        day.value,
                        locate(files, *first)
                    ),
                );
            }
            days.entry(day.value).or_insert(day.pos);
        }
    }
}

// === cross-checks and construction ===

/// Ids defined once each; later definitions of the same id are reported.
struct Defined<'d, T> {
    kind: &'static str,
    by_id: BTreeMap<&'d str, &'d T>,
}

impl<'d, T> Defined<'d, T> {
    fn collect(
        kind: &'static str,
        items: &'d [T],
        id: impl Fn(&'d T) -> &'d Located<String>,
        files: &[&Source],
        problems: &mut Problems,
    ) -> Defined<'d, T> {
        let mut by_id: BTreeMap<&str, &T> = BTreeMap::new();
        for item in items {
            let located = id(item);
            if let Some(first) = by_id.get(located.value.as_str()) {
                problems.at(
                    located.pos,
                    format!(
                        "duplicate {kind} \"{}\": it is already defined at {}",
                        located.value,
                        locate(files, id(first).pos)
                    ),
                );
                continue;
            }
            by_id.insert(&located.value, item);
        }
        Defined { kind, by_id }
    }

    fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    fn get(&self, id: &str) -> Option<&'d T> {
        self.by_id.get(id).copied()
    }

    /// Reports a reference to an id that is not defined, with the nearest defined one.
    /// `phrase` says where the reference is, e.g. `agency "dinsos" offers "shelterr"`.
    fn check(&self, reference: &Located<String>, phrase: &str, problems: &mut Problems) -> bool {
        if self.contains(&reference.value) {
            return true;
        }
        problems.at(
            reference.pos,
            format!(
                "{phrase}, but no {} \"{}\" exists{}",
                self.kind,
                reference.value,
                hint(&reference.value, self.by_id.keys().copied())
            ),
        );
        false
    }
}

struct Catalog<'d> {
    services: Defined<'d, draft::Service>,
    categories: Defined<'d, Code>,
    agencies: Defined<'d, Agency>,
}

impl Catalog<'_> {
    /// The agencies that offer `service`.
    fn offering<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Agency> + 'a {
        self.agencies
            .by_id
            .values()
            .copied()
            .filter(move |agency| agency.services.iter().any(|s| s.value == service))
    }
}

fn assemble(files: &[&Source], drafts: &Drafts, problems: &mut Problems) -> Option<Registry> {
    let catalog = Catalog {
        services: Defined::collect("service", &drafts.services, |s| &s.id, files, problems),
        categories: Defined::collect("category", &drafts.categories, |c| &c.id, files, problems),
        agencies: Defined::collect("agency", &drafts.agencies, |a| &a.id, files, problems),
    };
    // Agencies' commands use reasons and outcomes; the configuration itself never refers to
    // them, so only duplicates can be wrong here.
    Defined::collect("reason", &drafts.reasons, |c| &c.id, files, problems);
    Defined::collect("outcome", &drafts.outcomes, |c| &c.id, files, problems);

    for agency in &drafts.agencies {
        check_agency(agency, &catalog, problems);
    }
    let deployment_pos = drafts
        .deployment
        .as_ref()
        .map_or(Pos { file: 0, offset: 0 }, |deployment| deployment.pos);
    let coordinator = drafts
        .deployment
        .as_ref()
        .and_then(|deployment| deployment.coordinator.as_ref());
    if let Some(coordinator) = coordinator {
        catalog.agencies.check(
            coordinator,
            &format!("`coordinator` is \"{}\"", coordinator.value),
            problems,
        );
    }
    check_policies(files, deployment_pos, &drafts.policies, &catalog, problems);
    if !problems.is_empty() {
        return None;
    }
    let deployment = drafts.deployment.as_ref()?;

    let national: BTreeSet<NaiveDate> = drafts
        .holidays
        .iter()
        .flat_map(|file| file.holidays.iter().map(|day| day.value))
        .collect();
    let mut agencies = BTreeMap::new();
    for agency in &drafts.agencies {
        let built = build_agency(agency, &national)?;
        agencies.insert(built.id.clone(), built);
    }
    let mut policies = drafts
        .policies
        .iter()
        .map(build_policy)
        .collect::<Option<Vec<_>>>()?;
    policies.sort_by_key(|policy| policy.effective_from);
    Some(Registry {
        agencies,
        services: drafts
            .services
            .iter()
            .map(|service| {
                let id = ServiceId::new(&service.id.value).ok()?;
                Some((
                    id.clone(),
                    registry::Service {
                        id,
                        name: service.name.clone(),
                    },
                ))
            })
            .collect::<Option<_>>()?,
        categories: codes(&drafts.categories, |text| CategoryId::new(text))?,
        reasons: codes(&drafts.reasons, |text| ReasonCode::new(text))?,
        outcomes: codes(&drafts.outcomes, |text| OutcomeCode::new(text))?,
        coordinator: AgencyId::new(&deployment.coordinator.as_ref()?.value).ok()?,
        router_signing_keys: deployment.router_signing_keys.clone(),
        policies,
        holiday_years: drafts
            .holidays
            .iter()
            .filter_map(|file| file.year.as_ref().map(|year| year.value))
            .collect(),
    })
}

fn codes<T: Ord, E>(
    items: &[Code],
    new: impl Fn(&str) -> Result<T, E>,
) -> Option<BTreeMap<T, String>> {
    items
        .iter()
        .map(|code| Some((new(&code.id.value).ok()?, code.description.clone())))
        .collect()
}

fn check_agency(agency: &Agency, catalog: &Catalog<'_>, problems: &mut Problems) {
    let name = &agency.id.value;
    let mut offered = BTreeSet::new();
    for service in &agency.services {
        catalog.services.check(
            service,
            &format!("agency \"{name}\" offers \"{}\"", service.value),
            problems,
        );
        if !offered.insert(service.value.as_str()) {
            problems.at(
                service.pos,
                format!("`services` lists \"{}\" twice", service.value),
            );
        }
    }
    for (service, to) in &agency.alternates {
        let known = catalog.services.check(
            service,
            &format!(
                "agency \"{name}\" names an alternate for service \"{}\"",
                service.value
            ),
            problems,
        );
        if known && !offered.contains(service.value.as_str()) {
            problems.at(
                service.pos,
                format!(
                    "agency \"{name}\" names an alternate for \"{}\", which it does not offer: add it to `services` or remove the alternate",
                    service.value
                ),
            );
        }
        if &to.value == name {
            problems.at(
                to.pos,
                format!(
                    "agency \"{name}\" is its own alternate for \"{}\": the alternate is the agency that takes over when this one cannot act",
                    service.value
                ),
            );
            continue;
        }
        if !catalog.agencies.check(
            to,
            &format!(
                "the alternate for \"{}\" is \"{}\"",
                service.value, to.value
            ),
            problems,
        ) {
            continue;
        }
        if let Some(alternate) = catalog.agencies.get(&to.value)
            && !alternate.services.iter().any(|s| s.value == service.value)
        {
            problems.at(
                to.pos,
                format!(
                    "the alternate for \"{}\" is \"{}\", which does not offer \"{}\": add it to that agency's `services`, or choose another alternate",
                    service.value, to.value, service.value
                ),
            );
        }
    }
}

fn check_policies(
    files: &[&Source],
    deployment: Pos,
    policies: &[Policy],
    catalog: &Catalog<'_>,
    problems: &mut Problems,
) {
    if policies.is_empty() {
        problems.at(
            deployment,
            "the configuration has no [[policy]]: add at least one policy version with its clocks",
        );
    }
    let mut versions: BTreeMap<&str, Pos> = BTreeMap::new();
    let mut starts: BTreeMap<refbus_core::Timestamp, (&str, Pos)> = BTreeMap::new();
    for policy in policies {
        if let Some(first) = versions.get(policy.version.value.as_str()) {
            problems.at(
                policy.version.pos,
                format!(
                    "duplicate policy version \"{}\": it is already defined at {}; a referral keeps its version for life, so give each version a new name",
                    policy.version.value,
                    locate(files, *first)
                ),
            );
        }
        versions
            .entry(&policy.version.value)
            .or_insert(policy.version.pos);
        if let Some(effective) = &policy.effective_from {
            if let Some((other, _)) = starts.get(&effective.value) {
                problems.at(
                    effective.pos,
                    format!(
                        "policy versions \"{other}\" and \"{}\" take effect at the same instant: say which one is newer",
                        policy.version.value
                    ),
                );
            }
            starts
                .entry(effective.value)
                .or_insert((&policy.version.value, effective.pos));
        }
        check_policy(files, policy, catalog, problems);
    }
}

fn check_policy(
    files: &[&Source],
    policy: &Policy,
    catalog: &Catalog<'_>,
    problems: &mut Problems,
) {
    let escalations = Defined::collect(
        "escalation policy",
        &policy.escalations,
        |e| &e.id,
        files,
        problems,
    );
    Defined::collect("clock", &policy.clocks, |c| &c.id, files, problems);
    for escalation in &policy.escalations {
        for level in &escalation.levels {
            for target in &level.targets {
                if let Target::Agency { agency, role } = &target.value {
                    let reference = Located {
                        value: agency.as_str().to_owned(),
                        pos: target.pos,
                    };
                    catalog.agencies.check(
                        &reference,
                        &format!(
                            "escalation policy \"{}\" notifies \"agency:{agency}.{role}\"",
                            escalation.id.value
                        ),
                        problems,
                    );
                }
            }
        }
    }
    let mut reported = BTreeSet::new();
    for clock in &policy.clocks {
        check_clock_references(clock, catalog, problems);
        let Some(name) = &clock.escalation else {
            continue;
        };
        if !escalations.check(
            name,
            &format!(
                "clock \"{}\" escalates with \"{}\"",
                clock.id.value, name.value
            ),
            problems,
        ) {
            continue;
        }
        let Some(escalation) = escalations.get(&name.value) else {
            continue;
        };
        for (index, level) in escalation.levels.iter().enumerate() {
            if level.action.value != Action::Reroute {
                continue;
            }
            let what = format!(
                "level {} of escalation policy \"{}\" reroutes, and clock \"{}\" uses it",
                index + 1,
                escalation.id.value,
                clock.id.value
            );
            check_reroutable(
                level.action.pos,
                &what,
                &clock.services,
                catalog,
                &mut reported,
                problems,
            );
        }
    }
    for rule in &policy.reroutes {
        for service in &rule.services {
            catalog.services.check(
                service,
                &format!("the reroute rule names service \"{}\"", service.value),
                problems,
            );
        }
        check_reroutable(
            rule.pos,
            "the reroute rule",
            &rule.services,
            catalog,
            &mut reported,
            problems,
        );
    }
}

fn check_clock_references(clock: &Clock, catalog: &Catalog<'_>, problems: &mut Problems) {
    let context = format!("clock \"{}\" applies to", clock.id.value);
    for service in &clock.services {
        catalog.services.check(
            service,
            &format!("{context} service \"{}\"", service.value),
            problems,
        );
    }
    for category in &clock.categories {
        catalog.categories.check(
            category,
            &format!("{context} category \"{}\"", category.value),
            problems,
        );
    }
}

/// A reroute (by an escalation level or a rule) goes to the recipient's alternate for the
/// service. Every agency that can be the recipient must therefore name one, unless the service
/// is marked `reroutable = false`, where the core notifies the coordinator instead.
fn check_reroutable(
    pos: Pos,
    what: &str,
    services: &[Located<String>],
    catalog: &Catalog<'_>,
    reported: &mut BTreeSet<(Pos, String, String)>,
    problems: &mut Problems,
) {
    let services: Vec<&draft::Service> = if services.is_empty() {
        catalog.services.by_id.values().copied().collect()
    } else {
        services
            .iter()
            .filter_map(|service| catalog.services.get(&service.value))
            .collect()
    };
    for service in services.into_iter().filter(|service| service.reroutable) {
        let id = &service.id.value;
        for agency in catalog.offering(id) {
            let has_alternate = agency.alternates.iter().any(|(s, _)| &s.value == id);
            if has_alternate || !reported.insert((pos, id.clone(), agency.id.value.clone())) {
                continue;
            }
            problems.at(
                pos,
                format!(
                    "{what} for service \"{id}\", but agency \"{}\" offers \"{id}\" with no alternate: add `{id} = \"<agency id>\"` under [agency.alternates] of \"{}\", or set `reroutable = false` on service \"{id}\" so that rerouting it notifies the coordinator instead",
                    agency.id.value, agency.id.value
                ),
            );
        }
    }
}

// === construction (only once every check passed) ===

fn build_agency(agency: &Agency, national: &BTreeSet<NaiveDate>) -> Option<registry::Agency> {
    let mut holidays: BTreeSet<NaiveDate> =
        agency.local_holidays.iter().map(|day| day.value).collect();
    if agency.observes_holidays {
        holidays.extend(national.iter().copied());
    }
    Some(registry::Agency {
        id: AgencyId::new(&agency.id.value).ok()?,
        name: agency.name.clone(),
        region: agency.region.clone(),
        working_hours: WorkingHours {
            time_zone: agency.time_zone?,
            week: agency.week.clone(),
            holidays,
        },
        services: agency
            .services
            .iter()
            .map(|service| ServiceId::new(&service.value).ok())
            .collect::<Option<_>>()?,
        alternates: agency
            .alternates
            .iter()
            .map(|(service, to)| {
                Some((
                    ServiceId::new(&service.value).ok()?,
                    AgencyId::new(&to.value).ok()?,
                ))
            })
            .collect::<Option<_>>()?,
        contacts: agency.contacts.clone(),
        public_key: agency.public_key.clone(),
        backup_public_key: agency.backup_public_key.clone(),
        signing_keys: agency.signing_keys.clone(),
        // From `[[deployment.client_ca]]`, once the registry is built.
        client_cas: Vec::new(),
    })
}

fn build_policy(policy: &Policy) -> Option<PolicySet> {
    let clocks = policy
        .clocks
        .iter()
        .map(build_clock)
        .collect::<Option<Vec<_>>>()?;
    let escalations = policy
        .escalations
        .iter()
        .map(|escalation| {
            let id = EscalationPolicyId::new(&escalation.id.value).ok()?;
            let levels = escalation
                .levels
                .iter()
                .map(|level| {
                    Some(refbus_core::escalation::Level {
                        trigger: level.trigger?,
                        targets: level.targets.iter().map(|t| t.value.clone()).collect(),
                        action: level.action.value,
                        repeat: level.repeat,
                        repeat_every: level.repeat_every,
                    })
                })
                .collect::<Option<Vec<_>>>()?;
            Some((
                id.clone(),
                EscalationPolicy {
                    id,
                    title: escalation.title.clone(),
                    levels,
                },
            ))
        })
        .collect::<Option<BTreeMap<_, _>>>()?;
    let reroutes = policy
        .reroutes
        .iter()
        .map(|rule| {
            Some(RerouteRule {
                on: rule.on?,
                services: service_ids(&rule.services)?,
                delay: rule.delay,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(PolicySet {
        version: PolicyVersion::new(&policy.version.value).ok()?,
        effective_from: policy.effective_from.as_ref()?.value,
        clocks,
        escalations,
        reroutes,
    })
}

fn service_ids(services: &[Located<String>]) -> Option<Vec<ServiceId>> {
    services
        .iter()
        .map(|service| ServiceId::new(&service.value).ok())
        .collect()
}

fn build_clock(clock: &Clock) -> Option<ClockPolicy> {
    Some(ClockPolicy {
        id: ClockId::new(&clock.id.value).ok()?,
        title: clock.title.clone(),
        basis: clock.basis.clone(),
        applies_to: Applicability {
            services: service_ids(&clock.services)?,
            priorities: clock.priorities.clone(),
            categories: clock
                .categories
                .iter()
                .map(|category| CategoryId::new(&category.value).ok())
                .collect::<Option<_>>()?,
        },
        start: clock.start.clone()?,
        stop: clock.stop.clone(),
        pause_on_hold: clock.pause_on_hold,
        target: clock.target?,
        calendar: clock.calendar?,
        responsible: clock.responsible?,
        warnings: clock.warnings.clone(),
        escalation: match &clock.escalation {
            Some(name) => Some(EscalationPolicyId::new(&name.value).ok()?),
            None => None,
        },
    })
}

/// The files `main` names (included files, then holiday files), resolved against its directory.
/// Problems are ignored here: [`parse_files`] reports them.
pub(crate) fn referenced_files(main: &Source) -> Vec<PathBuf> {
    let mut ignored = Problems::default();
    let document = parse_syntax(0, &main.text, &mut ignored);
    let root = Table::root(0, &document);
    let Some(deployment) = draft::read_deployment(&root, &mut ignored) else {
        return Vec::new();
    };
    deployment
        .include
        .iter()
        .chain(&deployment.holidays)
        .chain(deployment.client_cas.iter().map(|ca| &ca.file))
        .map(|name| resolve(&main.path, &name.value))
        .collect()
}
