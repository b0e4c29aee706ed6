//! Indicators for planning (Bappeda, DP3A): referrals, outcomes, times and clock compliance per
//! month, agency, service, priority and category, disaggregated by sex and age band.
//!
//! Pure: a fold over checked referral states ([`Indicators::observe`], the state after each
//! verified event, as `Bus::replay` gives them), and a report at a `now` passed in
//! ([`Indicators::report`]). Each referral is summarised once per event, replacing its previous
//! summary, so events seen twice (a rebuild overlapping a live feed) change nothing, and only a
//! small summary per referral is held, never its state or anything sealed.
//!
//! Definitions (docs/INDICATORS.md says the same for readers of the figures):
//! - A referral belongs to the month of its creation in its sender's time zone (a cohort: its
//!   later acceptance or completion counts in that month too).
//! - Time to acknowledge: from creation to the first acceptance or rejection; time to complete:
//!   from creation to completion; wall-clock time, in whole seconds. Median and p90 are
//!   nearest-rank: the smallest value with at least 50% (90%) of the values at or below it.
//! - A clock instance is a clock of the referral's policy that applies to it and started. It was
//!   met when it stopped before reaching its target, missed when its target was reached (before
//!   it stopped, or by `now`), and is pending otherwise; compliance is met / (met + missed).
//!   Breaches, warnings and escalations are what the router recorded on the referral.
//! - With the agency dimension, a referral counts once for its sender (side `sender`) and once
//!   for its recipient (side `recipient`); a clock counts for the agency responsible for it
//!   only. With the category dimension, a referral counts once per category it carries (or under
//!   "(none)"), so category rows do not add up to the total.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use chrono::Datelike;

use crate::clock::{self, Phase};
use crate::demographics::{AgeBand, Sex};
use crate::ids::{AgencyId, CategoryId, ClockId, ReferralId, ServiceId};
use crate::places::Places;
use crate::referral::{Mark, Milestone, Party, Priority, Referral, Status};
use crate::registry::Registry;
use crate::time::Timestamp;

// === months ===

/// A calendar month, `YYYY-MM`.
///
/// Held as months since January of year 0 (`year * 12 + month - 1`), whose order is the
/// calendar's: four bytes in each of the million summaries a dashboard holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    index: u32,
}

impl Month {
    pub fn new(year: i32, month: u32) -> Option<Month> {
        let year = u32::try_from(year)
            .ok()
            .filter(|year| (1..=9999).contains(year))?;
        (1..=12).contains(&month).then_some(Month {
            index: year * 12 + month - 1,
        })
    }

    pub fn year(self) -> i32 {
        i32::try_from(self.index / 12).unwrap_or(i32::MAX)
    }

    /// 1 to 12.
    pub fn month(self) -> u32 {
        self.index % 12 + 1
    }

    /// `YYYY-MM`, exactly.
    pub fn parse(text: &str) -> Option<Month> {
        let bytes = text.as_bytes();
        if bytes.len() != 7 || bytes[4] != b'-' {
            return None;
        }
        if !text[..4].bytes().all(|b| b.is_ascii_digit())
            || !text[5..].bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Month::new(text[..4].parse().ok()?, text[5..].parse().ok()?)
    }

    /// The month `at` falls in, in `zone`.
    pub fn of(at: Timestamp, zone: chrono_tz::Tz) -> Month {
        let local = at.to_chrono().with_timezone(&zone);
        // Instants refbus handles lie within years 1 to 9999; outside, the nearest month.
        let year = u32::try_from(local.year().clamp(1, 9999)).unwrap_or(1);
        Month {
            index: year * 12 + local.month0(),
        }
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year(), self.month())
    }
}

// === what is held per referral ===

/// Each distinct id a summary names, stored once: a summary holds its index. A dashboard holds
/// a summary of every referral ever seen (a million and more), and an id per field in each,
/// each its own allocation, made the indicators several times larger than the board itself
/// (docs/BENCHMARKS.md, "Dashboard memory with the indicators").
#[derive(Debug)]
struct Interned<T> {
    values: Vec<T>,
    index: HashMap<T, u32>,
}

impl<T> Default for Interned<T> {
    fn default() -> Self {
        Interned {
            values: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<T: Clone + Eq + std::hash::Hash> Interned<T> {
    fn intern(&mut self, value: &T) -> u32 {
        if let Some(&at) = self.index.get(value) {
            return at;
        }
        let at = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
        self.values.push(value.clone());
        self.index.insert(value.clone(), at);
        at
    }

    fn find(&self, value: &T) -> Option<u32> {
        self.index.get(value).copied()
    }

    fn get(&self, at: u32) -> &T {
        &self.values[at as usize]
    }
}

/// The ids the summaries name.
#[derive(Debug, Default)]
struct Names {
    agencies: Interned<AgencyId>,
    services: Interned<ServiceId>,
    categories: Interned<CategoryId>,
    /// The sets of categories referrals name (a few dozen kinds, a million referrals): each
    /// summary holds the index of its set rather than a set of its own.
    category_sets: Interned<Box<[u32]>>,
    clocks: Interned<ClockId>,
    /// The lists of escalation levels clocks recorded, as for categories.
    escalation_lists: Interned<Box<[u16]>>,
}

impl Names {
    /// The levels a clock escalated at, in order.
    fn escalations(&self, at: u32) -> &[u16] {
        if at == NO_ESCALATIONS {
            &[]
        } else {
            self.escalation_lists.get(at)
        }
    }
}

/// Milliseconds (a duration, or an instant since the epoch), or none, in eight bytes where
/// `Option<i64>` takes sixteen: a dashboard holds a few of them for each of a million
/// referrals. `i64::MIN`, which no duration or instant refbus handles reaches, is none.
#[derive(Debug, Clone, Copy, PartialEq)]
struct MaybeMillis(i64);

impl MaybeMillis {
    const NONE: MaybeMillis = MaybeMillis(i64::MIN);

    fn new(millis: Option<i64>) -> MaybeMillis {
        millis.map_or(MaybeMillis::NONE, |millis| {
            MaybeMillis(millis.max(i64::MIN + 1))
        })
    }

    fn get(self) -> Option<i64> {
        (self != MaybeMillis::NONE).then_some(self.0)
    }
}

/// Whole seconds, or none, in four bytes: how long a referral took to be acknowledged or
/// completed, which the definitions count in whole seconds (the figures are the same as from
/// milliseconds: rounding down keeps the order, so the nearest-rank median and p90 of the
/// rounded times are the rounded median and p90). `i32::MIN` is none; 68 years saturate.
#[derive(Debug, Clone, Copy, PartialEq)]
struct MaybeSeconds(i32);

impl MaybeSeconds {
    const NONE: MaybeSeconds = MaybeSeconds(i32::MIN);

    fn of_millis(millis: Option<i64>) -> MaybeSeconds {
        millis.map_or(MaybeSeconds::NONE, |millis| {
            let seconds = millis
                .div_euclid(1000)
                .clamp(i64::from(i32::MIN + 1), i64::from(i32::MAX));
            MaybeSeconds(i32::try_from(seconds).unwrap_or(i32::MAX))
        })
    }

    fn get(self) -> Option<i32> {
        (self != MaybeSeconds::NONE).then_some(self.0)
    }
}

/// One clock of one referral, as far as indicators care (24 bytes).
#[derive(Debug, Clone, PartialEq)]
struct ClockSummary {
    /// When the target is (or was) reached if the clock keeps running, in milliseconds since
    /// the epoch; none while paused before the target or when it stopped before it.
    deadline: MaybeMillis,
    /// In [`Names::clocks`].
    clock: u32,
    /// Warnings and breaches recorded, counted up to 65,535 (a clock marks a handful).
    warnings: u16,
    breaches: u16,
    /// The level of each escalation recorded (repetitions included), in
    /// [`Names::escalation_lists`]; [`NO_ESCALATIONS`] when there is none (most clocks).
    escalations: u32,
    responsible: Party,
    stopped: bool,
}

/// [`ClockSummary::escalations`] of a clock that escalated at no level.
const NO_ESCALATIONS: u32 = u32::MAX;

/// A referral, as far as indicators care: its keys, milestones and clocks. Nothing sealed.
/// 72 bytes, plus its clocks: a dashboard holds one for every referral it ever saw.
#[derive(Debug, Clone, PartialEq)]
struct Summary {
    /// Which referral: what [`Places`] finds it by.
    id: ReferralId,
    /// The referral's sequence (events applied) this summary was made from; a referral's
    /// four billionth event and later would all count as that one.
    seq: u32,
    month: Month,
    /// The agencies, service and categories: in [`Names`].
    sender: u32,
    recipient: u32,
    service: u32,
    priority: Priority,
    /// In [`Names::category_sets`].
    categories: u32,
    sex: Sex,
    age_band: AgeBand,
    /// Seconds from creation to the first acceptance or rejection.
    acknowledged_after: MaybeSeconds,
    /// Seconds from creation to completion.
    completed_after: MaybeSeconds,
    accepted: bool,
    rejected: bool,
    rerouted: bool,
    completed: bool,
    open: bool,
    /// Clocks that started.
    clocks: Box<[ClockSummary]>,
}

impl Summary {
    fn of(registry: &Registry, referral: &Referral, names: &mut Names) -> Summary {
        let creation = &referral.creation;
        let zone = registry
            .agency(&creation.sender)
            .map_or(chrono_tz::Asia::Jakarta, |agency| {
                agency.working_hours.time_zone
            });
        let first = |wanted: &[Status]| {
            referral.steps.iter().find_map(|step| match step.milestone {
                Milestone::Entered(status) if wanted.contains(&status) => Some(step.at),
                _ => None,
            })
        };
        let after =
            |at: Option<Timestamp>| at.map(|at| at.as_millis() - referral.created_at.as_millis());
        // The clocks' phases and deadlines do not depend on `now` (only "breached" does, which
        // the report decides), so any instant will do.
        let clocks = clock::views(registry, referral, referral.updated_at)
            .into_iter()
            .filter(|(view, _)| view.started_at.is_some())
            .map(|(view, policy)| {
                let marks = referral.marks.iter().filter(|m| m.clock == policy.id);
                let (mut warnings, mut breaches, mut escalations) = (0u16, 0u16, Vec::new());
                for mark in marks {
                    match mark.mark {
                        Mark::Warning { .. } => warnings = warnings.saturating_add(1),
                        Mark::Breach => breaches = breaches.saturating_add(1),
                        Mark::Escalation { level, .. } => escalations.push(level),
                        _ => {}
                    }
                }
                ClockSummary {
                    deadline: MaybeMillis::new(view.deadline.map(Timestamp::as_millis)),
                    clock: names.clocks.intern(&policy.id),
                    warnings,
                    breaches,
                    escalations: if escalations.is_empty() {
                        NO_ESCALATIONS
                    } else {
                        names
                            .escalation_lists
                            .intern(&escalations.into_boxed_slice())
                    },
                    responsible: policy.responsible,
                    stopped: matches!(view.phase, Phase::Stopped(_)),
                }
            })
            .collect();
        Summary {
            id: referral.id,
            seq: u32::try_from(referral.seq).unwrap_or(u32::MAX),
            month: Month::of(referral.created_at, zone),
            sender: names.agencies.intern(&creation.sender),
            recipient: names.agencies.intern(&creation.recipient),
            service: names.services.intern(&creation.service),
            priority: creation.priority,
            categories: {
                let set: Box<[u32]> = creation
                    .categories
                    .iter()
                    .map(|category| names.categories.intern(category))
                    .collect();
                names.category_sets.intern(&set)
            },
            sex: creation.sex,
            age_band: creation.age_band,
            acknowledged_after: MaybeSeconds::of_millis(after(first(&[
                Status::Accepted,
                Status::Rejected,
            ]))),
            completed_after: MaybeSeconds::of_millis(after(first(&[Status::Completed]))),
            accepted: first(&[Status::Accepted]).is_some(),
            rejected: first(&[Status::Rejected]).is_some(),
            rerouted: referral.status == Status::Rerouted || !referral.children.is_empty(),
            completed: referral.status == Status::Completed,
            open: !referral.status.is_terminal(),
            clocks,
        }
    }

    /// The agency on `side`, in [`Names::agencies`].
    fn agency(&self, side: Party) -> u32 {
        match side {
            Party::Sender => self.sender,
            Party::Recipient => self.recipient,
        }
    }
}

// === the accumulator ===

/// The fold: one summary per referral seen, replaced at each of its events. The summaries lie
/// in one vector (a map holding the summaries themselves keeps twice as many slots as entries
/// once past a power of two), found by their referral's id through [`Places`].
#[derive(Debug, Default)]
pub struct Indicators {
    places: Places,
    summaries: Vec<Summary>,
    names: Names,
}

impl Indicators {
    pub fn new() -> Indicators {
        Indicators::default()
    }

    /// Takes a referral's state after one of its checked events into account: its summary is
    /// a function of that state alone, so a later state replaces the earlier, and the last
    /// state of each referral gives the figures a replay of every state gives. An older state
    /// than the one already seen changes nothing, so readers feeding the same fold from two
    /// places (a rebuild and the live feed) may do so in any order.
    pub fn observe(&mut self, registry: &Registry, state: &Referral) {
        let summaries = &self.summaries;
        match self
            .places
            .find(&state.id, |at| Some(summaries[at as usize].id))
        {
            Some(at) => {
                let seen = &mut self.summaries[at as usize];
                if u64::from(seen.seq) < state.seq {
                    *seen = Summary::of(registry, state, &mut self.names);
                }
            }
            None => {
                let at = u32::try_from(self.summaries.len())
                    .expect("fewer than 4 billion referrals in one fold");
                self.summaries
                    .push(Summary::of(registry, state, &mut self.names));
                let summaries = &self.summaries;
                self.places
                    .insert(&state.id, at, |at| Some(summaries[at as usize].id));
            }
        }
    }

    /// The number of referrals seen.
    pub fn len(&self) -> usize {
        self.summaries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.summaries.is_empty()
    }

    /// The figures at `now` for `query`.
    pub fn report(&self, now: Timestamp, query: &Query) -> Report {
        let mut referrals: BTreeMap<Key, Tally> = BTreeMap::new();
        let mut clocks: BTreeMap<(Key, ClockId), ClockTally> = BTreeMap::new();
        // The agency asked for, as the summaries name it: one never seen has no referral.
        let wanted = match &query.agency {
            Some(agency) => match self.names.agencies.find(agency) {
                Some(at) => Some(at),
                None => return Report::default(),
            },
            None => None,
        };
        let asked = Asked {
            query,
            wanted,
            names: &self.names,
        };
        for summary in &self.summaries {
            if !asked.admits(summary) {
                continue;
            }
            for key in asked.keys(summary) {
                referrals.entry(key).or_default().add(summary);
            }
            for clock in &summary.clocks {
                let agency = summary.agency(clock.responsible);
                if wanted.is_some_and(|wanted| wanted != agency) {
                    continue;
                }
                for key in asked.clock_keys(summary, clock.responsible) {
                    clocks
                        .entry((key, self.names.clocks.get(clock.clock).clone()))
                        .or_default()
                        .add(clock, now, &self.names);
                }
            }
        }
        Report {
            referrals: referrals
                .into_iter()
                .map(|(key, tally)| ReferralRow {
                    key,
                    figures: tally.figures(),
                })
                .collect(),
            clocks: clocks
                .into_iter()
                .map(|((key, clock), tally)| ClockRow {
                    key,
                    clock,
                    figures: tally.figures(),
                })
                .collect(),
        }
    }
}

// === what is asked ===

/// What a report is broken down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    Month,
    Agency,
    Service,
    Priority,
    Category,
    Sex,
    AgeBand,
}

impl Dimension {
    pub const ALL: [Dimension; 7] = [
        Dimension::Month,
        Dimension::Agency,
        Dimension::Service,
        Dimension::Priority,
        Dimension::Category,
        Dimension::Sex,
        Dimension::AgeBand,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Month => "month",
            Dimension::Agency => "agency",
            Dimension::Service => "service",
            Dimension::Priority => "priority",
            Dimension::Category => "category",
            Dimension::Sex => "sex",
            Dimension::AgeBand => "age_band",
        }
    }

    pub fn parse(text: &str) -> Option<Dimension> {
        Dimension::ALL.into_iter().find(|d| d.as_str() == text)
    }
}

/// A report's breakdown and filters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    /// The dimensions rows are keyed by; the others are summed over.
    pub by: Vec<Dimension>,
    /// Referrals of this month or later.
    pub from: Option<Month>,
    /// Referrals of this month or earlier.
    pub to: Option<Month>,
    /// Only referrals this agency sent or received (with the agency dimension, only its rows;
    /// for clocks, only those it is responsible for).
    pub agency: Option<AgencyId>,
}

/// A query with its agency as the summaries name it, and the names to give rows their ids.
struct Asked<'a> {
    query: &'a Query,
    /// [`Query::agency`] in [`Names::agencies`].
    wanted: Option<u32>,
    names: &'a Names,
}

impl Asked<'_> {
    fn has(&self, dimension: Dimension) -> bool {
        self.query.by.contains(&dimension)
    }

    fn admits(&self, summary: &Summary) -> bool {
        self.query.from.is_none_or(|from| summary.month >= from)
            && self.query.to.is_none_or(|to| summary.month <= to)
            && self
                .wanted
                .is_none_or(|agency| summary.sender == agency || summary.recipient == agency)
    }

    /// The rows a referral counts in.
    fn keys(&self, summary: &Summary) -> Vec<Key> {
        let sides: Vec<Option<Party>> = if self.has(Dimension::Agency) {
            [Party::Sender, Party::Recipient]
                .into_iter()
                .filter(|side| {
                    self.wanted
                        .is_none_or(|agency| summary.agency(*side) == agency)
                })
                .map(Some)
                .collect()
        } else {
            vec![None]
        };
        sides
            .into_iter()
            .flat_map(|side| self.keys_for_side(summary, side))
            .collect()
    }

    /// The rows a clock counts in: those of its responsible agency's side.
    fn clock_keys(&self, summary: &Summary, responsible: Party) -> Vec<Key> {
        let side = self.has(Dimension::Agency).then_some(responsible);
        self.keys_for_side(summary, side)
    }

    fn keys_for_side(&self, summary: &Summary, side: Option<Party>) -> Vec<Key> {
        let base = Key {
            month: self.has(Dimension::Month).then_some(summary.month),
            agency: side.map(|side| (self.names.agencies.get(summary.agency(side)).clone(), side)),
            service: self
                .has(Dimension::Service)
                .then(|| self.names.services.get(summary.service).clone()),
            priority: self.has(Dimension::Priority).then_some(summary.priority),
            category: None,
            sex: self.has(Dimension::Sex).then_some(summary.sex),
            age_band: self.has(Dimension::AgeBand).then_some(summary.age_band),
        };
        if !self.has(Dimension::Category) {
            return vec![base];
        }
        let categories = self.names.category_sets.get(summary.categories);
        if categories.is_empty() {
            return vec![Key {
                category: Some(None),
                ..base
            }];
        }
        categories
            .iter()
            .map(|category| Key {
                category: Some(Some(self.names.categories.get(*category).clone())),
                ..base.clone()
            })
            .collect()
    }
}

/// A row's key: `None` in a dimension the report does not break down by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub month: Option<Month>,
    /// The agency and the side it is on (for clocks: the side responsible).
    pub agency: Option<(AgencyId, Party)>,
    pub service: Option<ServiceId>,
    pub priority: Option<Priority>,
    /// `Some(None)`: referrals without a category.
    pub category: Option<Option<CategoryId>>,
    pub sex: Option<Sex>,
    pub age_band: Option<AgeBand>,
}

// === the figures ===

/// Counts and times of a row's referrals.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReferralFigures {
    pub referrals: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub rerouted: u64,
    pub completed: u64,
    /// Not in a final status at the time of the report.
    pub open: u64,
    /// Times to acknowledge (acceptance or rejection).
    pub acknowledge: Times,
    /// Times to complete.
    pub complete: Times,
}

/// How many times were measured, their median and p90 (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Times {
    pub count: u64,
    pub median: Option<Duration>,
    pub p90: Option<Duration>,
}

impl Times {
    fn of(mut seconds: Vec<i32>) -> Times {
        seconds.sort_unstable();
        let at = |percent: usize| {
            // Nearest rank: the ceil(p * n / 100)-th smallest value.
            let rank = (percent * seconds.len()).div_ceil(100);
            seconds
                .get(rank.checked_sub(1)?)
                .map(|&s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
        };
        Times {
            count: seconds.len() as u64,
            median: at(50),
            p90: at(90),
        }
    }
}

/// Clock instances of a row and what became of them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClockFigures {
    /// Instances: the clock applied and started.
    pub instances: u64,
    pub met: u64,
    pub missed: u64,
    /// Still running (or paused) within the target.
    pub pending: u64,
    /// Warnings, breaches and escalations the router recorded.
    pub warnings: u64,
    pub breaches: u64,
    /// Escalation level -> escalations recorded at that level.
    pub escalations: BTreeMap<u16, u64>,
}

impl ClockFigures {
    /// met / (met + missed), in thousandths; `None` when nothing was decided yet.
    pub fn compliance_permille(&self) -> Option<u64> {
        let decided = self.met + self.missed;
        (decided > 0).then(|| (self.met * 1000 + decided / 2) / decided)
    }
}

#[derive(Debug, Default)]
struct Tally {
    figures: ReferralFigures,
    acknowledge: Vec<i32>,
    complete: Vec<i32>,
}

impl Tally {
    fn add(&mut self, summary: &Summary) {
        let figures = &mut self.figures;
        figures.referrals += 1;
        figures.accepted += u64::from(summary.accepted);
        figures.rejected += u64::from(summary.rejected);
        figures.rerouted += u64::from(summary.rerouted);
        figures.completed += u64::from(summary.completed);
        figures.open += u64::from(summary.open);
        self.acknowledge.extend(summary.acknowledged_after.get());
        self.complete.extend(summary.completed_after.get());
    }

    fn figures(self) -> ReferralFigures {
        ReferralFigures {
            acknowledge: Times::of(self.acknowledge),
            complete: Times::of(self.complete),
            ..self.figures
        }
    }
}

#[derive(Debug, Default)]
struct ClockTally {
    figures: ClockFigures,
}

impl ClockTally {
    fn add(&mut self, clock: &ClockSummary, now: Timestamp, names: &Names) {
        let figures = &mut self.figures;
        figures.instances += 1;
        if clock
            .deadline
            .get()
            .is_some_and(|deadline| deadline <= now.as_millis())
        {
            figures.missed += 1;
        } else if clock.stopped {
            figures.met += 1;
        } else {
            figures.pending += 1;
        }
        figures.warnings += u64::from(clock.warnings);
        figures.breaches += u64::from(clock.breaches);
        for level in names.escalations(clock.escalations) {
            *figures.escalations.entry(*level).or_default() += 1;
        }
    }

    fn figures(self) -> ClockFigures {
        self.figures
    }
}

// === the report ===

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferralRow {
    pub key: Key,
    pub figures: ReferralFigures,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockRow {
    pub key: Key,
    pub clock: ClockId,
    pub figures: ClockFigures,
}

/// The figures, rows ordered by key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    pub referrals: Vec<ReferralRow>,
    pub clocks: Vec<ClockRow>,
}

/// The title and basis of every clock of every policy version, for labelling rows; a clock id
/// defined in several versions takes the newest's.
pub fn clock_titles(registry: &Registry) -> BTreeMap<ClockId, (String, Option<String>)> {
    let mut titles = BTreeMap::new();
    for policy in &registry.policies {
        for clock in &policy.clocks {
            titles.insert(clock.id.clone(), (clock.title.clone(), clock.basis.clone()));
        }
    }
    titles
}

// === CSV ===

/// The columns of [`csv`] before the escalation levels.
const CSV_COLUMNS: &[&str] = &[
    "table",
    "month",
    "agency",
    "side",
    "service",
    "priority",
    "category",
    "sex",
    "age_band",
    "clock",
    "referrals",
    "accepted",
    "rejected",
    "rerouted",
    "completed",
    "open",
    "acknowledged",
    "acknowledge_median_s",
    "acknowledge_p90_s",
    "completed_timed",
    "complete_median_s",
    "complete_p90_s",
    "clock_instances",
    "met",
    "missed",
    "pending",
    "compliance_pct",
    "warnings",
    "breaches",
];

impl Key {
    /// The key's cells as [`csv`] writes them: `*` for a dimension summed over, `(none)` for
    /// referrals without a category.
    pub fn cells(&self) -> [String; 8] {
        fn or_all<T: ToString>(value: Option<T>) -> String {
            value.map_or_else(|| "*".to_owned(), |value| value.to_string())
        }
        [
            or_all(self.month),
            or_all(self.agency.as_ref().map(|(agency, _)| agency)),
            or_all(self.agency.as_ref().map(|(_, side)| side.as_str())),
            or_all(self.service.as_ref()),
            or_all(self.priority),
            or_all(self.category.as_ref().map(|category| {
                category
                    .as_ref()
                    .map_or_else(|| "(none)".to_owned(), ToString::to_string)
            })),
            or_all(self.sex),
            or_all(self.age_band),
        ]
    }
}

fn seconds(duration: Option<Duration>) -> String {
    duration.map_or_else(String::new, |d| d.as_secs().to_string())
}

/// The report as one CSV table (RFC 4180, `\r\n` line ends, UTF-8): a row per referral row
/// (`table` = `referrals`) and per clock row (`table` = `clock`), each leaving the other kind's
/// columns empty, then one `escalations_level_<n>` column per level any row has. Never an
/// identity: every cell is a registry id, a code, a month or a number.
pub fn csv(report: &Report) -> String {
    let levels: Vec<u16> = report
        .clocks
        .iter()
        .flat_map(|row| row.figures.escalations.keys().copied())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut out = String::new();
    let mut header: Vec<String> = CSV_COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    header.extend(
        levels
            .iter()
            .map(|level| format!("escalations_level_{level}")),
    );
    push_line(&mut out, &header);
    for row in &report.referrals {
        let f = &row.figures;
        let mut cells = vec!["referrals".to_owned()];
        cells.extend(row.key.cells());
        cells.push(String::new());
        cells.extend(
            [
                f.referrals,
                f.accepted,
                f.rejected,
                f.rerouted,
                f.completed,
                f.open,
            ]
            .map(|n| n.to_string()),
        );
        cells.extend([
            f.acknowledge.count.to_string(),
            seconds(f.acknowledge.median),
            seconds(f.acknowledge.p90),
            f.complete.count.to_string(),
            seconds(f.complete.median),
            seconds(f.complete.p90),
        ]);
        cells.resize(CSV_COLUMNS.len() + levels.len(), String::new());
        push_line(&mut out, &cells);
    }
    for row in &report.clocks {
        let f = &row.figures;
        let mut cells = vec!["clock".to_owned()];
        cells.extend(row.key.cells());
        cells.push(row.clock.to_string());
        cells.resize(CSV_COLUMNS.len() - 7, String::new());
        cells.extend([
            f.instances.to_string(),
            f.met.to_string(),
            f.missed.to_string(),
            f.pending.to_string(),
            f.compliance_permille()
                .map_or_else(String::new, |p| format!("{}.{}", p / 10, p % 10)),
            f.warnings.to_string(),
            f.breaches.to_string(),
        ]);
        cells.extend(
            levels
                .iter()
                .map(|level| f.escalations.get(level).copied().unwrap_or(0).to_string()),
        );
        push_line(&mut out, &cells);
    }
    out
}

fn push_line(out: &mut String, cells: &[String]) {
    for (index, cell) in cells.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        if cell.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&cell.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(cell);
        }
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(values: &[u64]) -> Vec<i32> {
        values.iter().map(|s| i32::try_from(*s).unwrap()).collect()
    }

    #[test]
    fn median_and_p90_are_nearest_rank() {
        // n = 4: median rank ceil(2.0) = 2 -> 20; p90 rank ceil(3.6) = 4 -> 40.
        let times = Times::of(secs(&[40, 10, 30, 20]));
        assert_eq!(times.count, 4);
        assert_eq!(times.median, Some(Duration::from_secs(20)));
        assert_eq!(times.p90, Some(Duration::from_secs(40)));
        // n = 10: p90 rank 9 -> 90.
        let times = Times::of(secs(&[10, 20, 30, 40, 50, 60, 70, 80, 90, 100]));
        assert_eq!(times.median, Some(Duration::from_secs(50)));
        assert_eq!(times.p90, Some(Duration::from_secs(90)));
        // One value is its own median and p90; none gives none.
        assert_eq!(Times::of(secs(&[7])).p90, Some(Duration::from_secs(7)));
        assert_eq!(Times::of(Vec::new()), Times::default());
    }

    #[test]
    fn compliance_is_met_over_decided_rounded_to_a_thousandth() {
        let figures = ClockFigures {
            met: 2,
            missed: 1,
            pending: 5,
            ..ClockFigures::default()
        };
        assert_eq!(figures.compliance_permille(), Some(667));
        assert_eq!(ClockFigures::default().compliance_permille(), None);
    }

    #[test]
    fn months_parse_exactly_and_follow_the_time_zone() {
        assert_eq!(Month::parse("2026-03"), Month::new(2026, 3));
        for bad in [
            "2026-3",
            "2026-13",
            "2026/03",
            "26-03",
            "2026-00",
            "2026-03-01",
        ] {
            assert_eq!(Month::parse(bad), None, "{bad}");
        }
        // 2026-03-31T16:30Z is 23:30 on March 31st in WIB, 00:30 on April 1st in WITA.
        let at = Timestamp::parse_rfc3339("2026-03-31T16:30:00Z").unwrap();
        assert_eq!(
            Month::of(at, chrono_tz::Asia::Jakarta).to_string(),
            "2026-03"
        );
        assert_eq!(
            Month::of(at, chrono_tz::Asia::Makassar).to_string(),
            "2026-04"
        );
    }

    #[test]
    fn months_order_as_the_calendar_and_keep_their_year_and_month() {
        let (december, january) = (Month::new(2026, 12).unwrap(), Month::new(2027, 1).unwrap());
        assert!(december < january);
        assert!(Month::new(2026, 2).unwrap() < december);
        assert_eq!((january.year(), january.month()), (2027, 1));
        assert_eq!(december.to_string(), "2026-12");
        assert_eq!(Month::new(9999, 12).unwrap().to_string(), "9999-12");
        assert_eq!(Month::new(0, 1), None);
        assert_eq!(Month::new(-1, 1), None);
    }

    #[test]
    fn a_missing_time_is_none_and_every_other_stays_itself() {
        for millis in [0, 1, -1, 86_400_000, i64::MAX, i64::MIN + 1] {
            assert_eq!(MaybeMillis::new(Some(millis)).get(), Some(millis));
        }
        assert_eq!(MaybeMillis::new(None).get(), None);
        // The one value taken for "none" is moved by a millisecond, never lost.
        assert_eq!(MaybeMillis::new(Some(i64::MIN)).get(), Some(i64::MIN + 1));
    }

    #[test]
    fn a_time_taken_is_its_whole_seconds_rounded_down_and_saturates_far_out() {
        for (millis, seconds) in [(0, 0), (999, 0), (1_000, 1), (61_999, 61), (-1, -1)] {
            assert_eq!(MaybeSeconds::of_millis(Some(millis)).get(), Some(seconds));
        }
        assert_eq!(MaybeSeconds::of_millis(None).get(), None);
        assert_eq!(
            MaybeSeconds::of_millis(Some(i64::MAX)).get(),
            Some(i32::MAX)
        );
        assert_eq!(
            MaybeSeconds::of_millis(Some(i64::MIN)).get(),
            Some(i32::MIN + 1)
        );
    }

    /// A dashboard holds a summary of every referral it ever saw, a million and more: these
    /// sizes are its memory (docs/BENCHMARKS.md, "Dashboard memory").
    #[test]
    fn a_referrals_summary_takes_72_bytes_and_each_clock_24() {
        assert_eq!(std::mem::size_of::<Summary>(), 72);
        assert_eq!(std::mem::size_of::<ClockSummary>(), 24);
    }
}
