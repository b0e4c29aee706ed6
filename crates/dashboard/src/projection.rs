//! The board's projection: a compact row per referral (what the board, the load page, the
//! filters and the timeline link need, nothing else), indexes by time to breach, and what a
//! viewer sees of them at a given instant. Pure: records go in, rows come out, `now` is a
//! parameter.
//!
//! Clock states come from the core's clock views ([`refbus_core::clock::views`]), the same the
//! adapter serves to agencies' systems, computed once when a record is applied: what a row keeps
//! of each clock is the instants the core gives (its deadline, its first warning point), and its
//! state at `now` is read from them (on track before the warning, at risk from it, breached from
//! the deadline). The board never computes a deadline of its own.
//!
//! Why compact: at a million open referrals the whole `Referral` state (about 2 KB each) made
//! the dashboard 2 GB; see docs/ARCHITECTURE.md, "The dashboard".

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use refbus_core::clock::{Phase, Track, fraction, views};
use refbus_core::ids::{ClockId, ServiceId};
use refbus_core::integrity::IntegrityNotice;
use refbus_core::places::Places;
use refbus_core::referral::{Mark, Party, Priority};
use refbus_core::{AgencyId, Referral, ReferralId, Registry, Status, Timestamp};
use refbus_operators::Parties;

use crate::viewer::Viewer;

/// How long a closed referral stays in the projection: long enough for "breached this week".
pub const CLOSED_KEPT: Duration = Duration::from_secs(8 * 24 * 3600);

/// Rows on one page of the board.
pub const PAGE_ROWS: usize = 100;

/// Where a referral stands on the board, from least to most urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RowState {
    OnTrack,
    /// Past a warning point of a running clock.
    AtRisk,
    /// A running clock is past its target.
    Breached,
    /// An escalation of a running clock nobody has acknowledged.
    Escalated,
}

impl RowState {
    pub const ALL: [RowState; 4] = [
        RowState::OnTrack,
        RowState::AtRisk,
        RowState::Breached,
        RowState::Escalated,
    ];

    /// The stable name used in URLs and in `data-state`.
    pub fn as_str(self) -> &'static str {
        match self {
            RowState::OnTrack => "on_track",
            RowState::AtRisk => "at_risk",
            RowState::Breached => "breached",
            RowState::Escalated => "escalated",
        }
    }

    pub fn parse(text: &str) -> Option<RowState> {
        RowState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One clock of a referral as the board shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockLine {
    pub clock: ClockId,
    pub title: String,
    /// When the target is reached (the core's clock view's deadline; none while paused).
    pub deadline: Option<Timestamp>,
    pub state: RowState,
    /// The highest escalation level recorded on this clock.
    pub level: Option<u16>,
    pub acknowledged: bool,
    /// The agencies escalations of this clock notified.
    pub notified: Vec<AgencyId>,
    /// Each escalation level recorded on this clock, with the agencies it notified (who alone
    /// may acknowledge it).
    pub levels: Vec<(u16, Vec<AgencyId>)>,
    /// The agency that must act in time.
    pub responsible: AgencyId,
}

/// One row of the board: a referral with a running (or paused) clock. Metadata only.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: ReferralId,
    pub sender: AgencyId,
    pub recipient: AgencyId,
    pub service: ServiceId,
    pub priority: Priority,
    pub categories: Vec<String>,
    pub status: Status,
    /// The most urgent state of its clocks.
    pub state: RowState,
    /// The clock closest to (or furthest past) its target: what the countdown shows.
    pub clock: ClockLine,
    /// Every clock still running or paused, the shown one first.
    pub clocks: Vec<ClockLine>,
}

impl Row {
    /// The escalation `viewer`'s agency may acknowledge on this row, if any: the highest level
    /// notifying it, on a clock nobody acknowledged.
    pub fn acknowledgeable_by(&self, agency: &AgencyId) -> Option<(&ClockId, u16)> {
        self.clocks
            .iter()
            .filter(|line| !line.acknowledged)
            .flat_map(|line| {
                line.levels
                    .iter()
                    .filter(|(_, notified)| notified.contains(agency))
                    .map(move |(level, _)| (&line.clock, *level))
            })
            .max_by_key(|(_, level)| *level)
    }

    /// What the board sorts by: time to breach (breached first, most overdue first); clocks
    /// without a deadline (paused) last.
    pub fn sort_key(&self) -> i64 {
        self.clock.deadline.map_or(i64::MAX, Timestamp::as_millis)
    }
}

/// Board filters, as in the URL (each empty when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// A party to the referral (sender or recipient).
    pub agency: Option<AgencyId>,
    pub service: Option<ServiceId>,
    pub priority: Option<Priority>,
    pub clock: Option<ClockId>,
    pub state: Option<RowState>,
}

impl Filters {
    pub fn matches(&self, row: &Row) -> bool {
        self.agency
            .as_ref()
            .is_none_or(|agency| &row.sender == agency || &row.recipient == agency)
            && self.service.as_ref().is_none_or(|s| &row.service == s)
            && self.priority.is_none_or(|p| row.priority == p)
            && self
                .clock
                .as_ref()
                .is_none_or(|c| row.clocks.iter().any(|line| &line.clock == c))
            && self.state.is_none_or(|s| row.state == s)
    }
}

/// One agency's load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Load {
    /// Open referrals to the agency.
    pub open: usize,
    /// Of those, not yet accepted (requested or received).
    pub awaiting_acceptance: usize,
    /// Of those, at risk (past a warning, not breached).
    pub at_risk: usize,
    /// Clocks the agency was responsible for that breached since midnight, in its time zone.
    pub breached_today: usize,
    /// ... since Monday midnight.
    pub breached_this_week: usize,
    /// Reroutes the router asked for that the agency, as the sender, has yet to carry out.
    pub reroutes_pending: usize,
}

/// An integrity alert for the coordinator: a record refbus refused. Metadata only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub notice: IntegrityNotice,
}

/// Values seen many times (agencies, services, clocks, sets of them), each kept once and named
/// by a small index.
#[derive(Debug)]
struct Interner<T> {
    items: Vec<T>,
    index: HashMap<T, u32>,
}

impl<T: Hash + Eq + Clone> Interner<T> {
    fn new() -> Interner<T> {
        Interner {
            items: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// An interner whose index 0 is `first` (the empty set, for sets).
    fn with(first: T) -> Interner<T> {
        let mut interner = Interner::new();
        interner.intern(first);
        interner
    }

    fn intern(&mut self, value: T) -> u32 {
        if let Some(&index) = self.index.get(&value) {
            return index;
        }
        // Registries name tens of agencies, services and clocks: four billion is out of reach.
        let index = u32::try_from(self.items.len()).unwrap_or(u32::MAX);
        self.items.push(value.clone());
        self.index.insert(value, index);
        index
    }

    fn find(&self, value: &T) -> Option<u32> {
        self.index.get(value).copied()
    }

    fn get(&self, index: u32) -> &T {
        &self.items[index as usize]
    }
}

/// The id held in slot `index`, if it holds a referral: how [`Places`] finds a slot.
fn id_in(slots: &[Option<Slot>], index: u32) -> Option<ReferralId> {
    slots
        .get(index as usize)
        .and_then(Option::as_ref)
        .map(|slot| slot.id)
}

/// The highest level of a clock's escalations (with the agencies each notified): the level its
/// row shows.
fn highest_level(levels: &[(u16, u32)]) -> Option<u16> {
    levels.iter().map(|&(level, _)| level).max()
}

/// Sentinel instants in a [`ClockSlot`] (milliseconds since the epoch).
const NO_DEADLINE: i64 = i64::MIN;
const NEVER: i64 = i64::MAX;

/// What the projection keeps of one clock of a referral: the instants the core's clock view
/// gave when the record was applied. Running, paused, or stopped after reaching its target
/// (the load page counts that breach); clocks not started, or stopped in time, are not kept.
/// 32 bytes: its responsible agency is the slot's sender or recipient, and its escalation level
/// the highest in its list, so neither is held again.
#[derive(Debug, Clone)]
struct ClockSlot {
    /// The view's deadline, or [`NO_DEADLINE`].
    deadline: i64,
    /// The first warning point (the clock's own elapsed time reaching it, as the core counts
    /// it), [`NEVER`], or `i64::MIN` if the router already recorded a warning.
    warn_at: i64,
    /// Index of (clock id, title).
    clock: u32,
    /// Index of the escalation levels with the agency sets they notified.
    levels: u32,
    /// Index of the set of agencies its marks notified.
    notified: u32,
    /// The party whose agency is responsible for it.
    responsible: Party,
    /// Whether an escalation was recorded (its levels are in `levels`).
    escalated: bool,
    /// Whether it is running or paused (a board clock) rather than stopped.
    on_board: bool,
    acknowledged: bool,
}

impl ClockSlot {
    fn deadline(&self) -> Option<Timestamp> {
        (self.deadline != NO_DEADLINE).then(|| Timestamp::from_millis(self.deadline))
    }

    /// Its state at `now`: exactly the comparisons the core's view makes (`breached` is the
    /// deadline reached; at risk is the elapsed time past a warning point).
    fn state(&self, now: i64) -> RowState {
        if self.escalated && !self.acknowledged {
            RowState::Escalated
        } else if self.deadline != NO_DEADLINE && self.deadline <= now {
            RowState::Breached
        } else if self.warn_at <= now {
            RowState::AtRisk
        } else {
            RowState::OnTrack
        }
    }

    fn sort_key(&self) -> i64 {
        if self.deadline == NO_DEADLINE {
            i64::MAX
        } else {
            self.deadline
        }
    }
}

/// One referral in the projection (about 70 bytes, plus its clocks).
#[derive(Debug, Clone)]
struct Slot {
    id: ReferralId,
    /// The stream sequence of its last checked record.
    seq: u64,
    updated_at: Timestamp,
    /// Board clocks first, the shown one first (by deadline, then clock id); then the others.
    clocks: Box<[ClockSlot]>,
    /// Index of its categories.
    categories: u32,
    /// Index of the set of agencies any escalation notified (who may see it).
    notified: u32,
    sender: u32,
    recipient: u32,
    service: u32,
    priority: Priority,
    status: Status,
    reroute_pending: bool,
}

impl Slot {
    fn board_clocks(&self) -> impl Iterator<Item = &ClockSlot> {
        self.clocks.iter().take_while(|clock| clock.on_board)
    }

    /// Whether it has a row on the board (open, with a running or paused clock).
    fn on_board(&self) -> bool {
        !self.status.is_terminal() && self.clocks.first().is_some_and(|c| c.on_board)
    }

    /// Its place in the board's order: the shown clock's deadline (paused last).
    fn sort_key(&self) -> i64 {
        self.clocks.first().map_or(i64::MAX, ClockSlot::sort_key)
    }

    /// The agency responsible for `clock`, one of its own.
    fn responsible(&self, clock: &ClockSlot) -> u32 {
        match clock.responsible {
            Party::Sender => self.sender,
            Party::Recipient => self.recipient,
        }
    }

    fn state(&self, now: i64) -> RowState {
        self.board_clocks()
            .map(|clock| clock.state(now))
            .max()
            .unwrap_or(RowState::OnTrack)
    }
}

/// A board row in an index: its place in the board's order (its sort key, then its slot), in
/// 12 bytes where `(i64, u32)` takes 16 with its padding. A million rows are in three or more
/// indexes each, so a B-tree leaf holding 11 of them shrinks from 192 to 144 bytes. The derived
/// order (the key's signed high half, its unsigned low half, then the slot) is the pair's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    high: i32,
    low: u32,
    slot: u32,
}

impl Entry {
    fn new(sort: i64, slot: u32) -> Entry {
        #[allow(clippy::cast_possible_truncation)] // the two halves, taken apart on purpose
        Entry {
            high: (sort >> 32) as i32,
            low: sort as u32,
            slot,
        }
    }

    fn sort(self) -> i64 {
        (i64::from(self.high) << 32) | i64::from(self.low)
    }
}

/// Which index a slot is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum IndexKey {
    /// By service and priority: every board row is in exactly one.
    Kind(u32, Priority),
    /// By agency: its sender, its recipient and every agency notified.
    Agency(u32),
}

/// Every referral's compact row (open ones, and closed ones for [`CLOSED_KEPT`]), the board's
/// indexes, and the integrity alerts.
#[derive(Debug)]
pub struct Projection {
    registry: Arc<Registry>,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    /// Which slot holds each referral (ids are held once, in the slots).
    by_id: Places,
    /// Board rows by (time to breach, slot), per service and priority and per agency: a page
    /// walks these in order until it has its rows, never the whole projection.
    index: HashMap<IndexKey, BTreeSet<Entry>>,
    /// Whether the indexes follow every change: not during a rebuild, whose rows they take at
    /// its end, all at once ([`Projection::defer_indexes`]).
    indexed: bool,
    agencies: Interner<AgencyId>,
    services: Interner<ServiceId>,
    clocks: Interner<(ClockId, String)>,
    categories: Interner<Vec<String>>,
    agency_sets: Interner<Vec<u32>>,
    level_lists: Interner<Vec<(u16, u32)>>,
    /// Integrity alerts by the stream sequence of the refused record (the router's notice and
    /// the dashboard's own refusal of the same record are one alert).
    alerts: BTreeMap<u64, Alert>,
    /// Bumped on every change: what the live feed's event ids carry.
    version: u64,
}

impl Projection {
    pub fn new(registry: Arc<Registry>) -> Projection {
        Projection {
            registry,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: Places::default(),
            index: HashMap::new(),
            indexed: true,
            agencies: Interner::new(),
            services: Interner::new(),
            clocks: Interner::new(),
            categories: Interner::with(Vec::new()),
            agency_sets: Interner::with(Vec::new()),
            level_lists: Interner::with(Vec::new()),
            alerts: BTreeMap::new(),
            version: 0,
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// How many referrals and integrity alerts it holds.
    pub fn sizes(&self) -> (usize, usize) {
        (self.by_id.len(), self.alerts.len())
    }

    /// Marks a change not caused by a record (time moved a row to another state).
    pub fn touch(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// Applies a checked record: the referral's state after the record stored at `seq`. An
    /// older record than the one held changes nothing (a rebuild and the live feed overlap).
    /// Whether it changed anything. Of its clocks only the instants the core's views give are
    /// kept (see `ClockSlot`), which do not depend on when the record is applied.
    pub fn apply(&mut self, seq: u64, state: &Referral) -> bool {
        let held = self.by_id.find(&state.id, |at| id_in(&self.slots, at));
        if let Some(index) = held
            && self.slots[index as usize]
                .as_ref()
                .is_some_and(|slot| slot.seq >= seq)
        {
            return false;
        }
        let slot = self.compact(seq, state);
        let index = match held {
            Some(index) => {
                if let Some(old) = self.slots[index as usize].take() {
                    self.unindex(&old, index);
                }
                index
            }
            None => {
                let index = match self.free.pop() {
                    Some(index) => index,
                    None => {
                        self.slots.push(None);
                        u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
                    }
                };
                self.by_id
                    .insert(&state.id, index, |at| id_in(&self.slots, at));
                index
            }
        };
        self.reindex(&slot, index);
        self.slots[index as usize] = Some(slot);
        self.version += 1;
        true
    }

    /// Leaves the indexes out of every change until [`Projection::shrink`], which builds them
    /// from the slots: for a rebuild, which serves no page. Filled one row at a time, roughly
    /// in deadline order, a B-tree's nodes end about half full, and replacing them afterwards
    /// left the allocator's pages part used (about 70 bytes a referral, measured with
    /// `projection_memory`).
    pub fn defer_indexes(&mut self) {
        self.index = HashMap::new();
        self.indexed = false;
    }

    /// Gives back memory the rebuild's growth left unused, and builds the indexes if they were
    /// deferred. Not the slots' vector: the part of it never written is not resident, and a
    /// vector cut to its length would copy itself whole (72 MB at a million) at the next new
    /// referral, holding the live feed meanwhile.
    pub fn shrink(&mut self) {
        self.by_id.shrink_to_fit(|at| id_in(&self.slots, at));
        self.free.shrink_to_fit();
        if !self.indexed {
            self.index_all();
            self.indexed = true;
        }
    }

    /// Builds every index from the slots, each B-tree from its sorted entries, which fills its
    /// nodes.
    fn index_all(&mut self) {
        self.index = HashMap::new();
        let mut entries: HashMap<IndexKey, Vec<Entry>> = HashMap::new();
        for (index, slot) in (0..).zip(&self.slots) {
            let Some(slot) = slot else { continue };
            let sort = slot.sort_key();
            for key in self.keys(slot) {
                entries
                    .entry(key)
                    .or_default()
                    .push(Entry::new(sort, index));
            }
        }
        self.index = entries
            .into_iter()
            .map(|(key, entries)| (key, entries.into_iter().collect()))
            .collect();
    }

    /// The compact row of `referral`: its clocks from the core's views, interned ids.
    fn compact(&mut self, seq: u64, referral: &Referral) -> Slot {
        let registry = self.registry.clone();
        let mut clocks: Vec<(ClockSlot, String)> = Vec::new();
        // `now` only moves the views' elapsed time, which is not kept: the warning instant
        // below is where that elapsed time reaches the first warning point.
        for (view, policy) in views(&registry, referral, referral.updated_at) {
            let on_board = matches!(view.phase, Phase::Running | Phase::Paused);
            if !on_board && view.deadline.is_none() {
                // Not started, or stopped in time: nothing the board or the load page shows.
                continue;
            }
            let marks: Vec<_> = referral
                .marks
                .iter()
                .filter(|mark| mark.clock == view.clock)
                .collect();
            let mut notified: Vec<u32> = marks
                .iter()
                .flat_map(|mark| mark.notified.iter())
                .map(|agency| self.agencies.intern(agency.clone()))
                .collect();
            notified.sort_unstable();
            notified.dedup();
            let levels: Vec<(u16, u32)> = marks
                .iter()
                .filter_map(|mark| match mark.mark {
                    Mark::Escalation { level, .. } => Some((level, &mark.notified)),
                    _ => None,
                })
                .map(|(level, agencies)| {
                    let set: Vec<u32> = agencies
                        .iter()
                        .map(|agency| self.agencies.intern(agency.clone()))
                        .collect();
                    (level, self.agency_sets.intern(set))
                })
                .collect();
            // At risk: past a warning point of the clock, from the clock's own elapsed time
            // (the core's track and calendar), or a warning the router already recorded.
            let warn_at = if marks
                .iter()
                .any(|mark| matches!(mark.mark, Mark::Warning { .. }))
            {
                i64::MIN
            } else {
                let track = Track::of(&policy, referral);
                let calendar = registry.calendar(policy.calendar, policy.responsible, referral);
                policy
                    .warnings
                    .iter()
                    .filter_map(|&permille| {
                        track.instant_at(&calendar, fraction(view.target, permille))
                    })
                    .map(Timestamp::as_millis)
                    .min()
                    .unwrap_or(NEVER)
            };
            let clock_id = view.clock.to_string();
            clocks.push((
                ClockSlot {
                    deadline: view.deadline.map_or(NO_DEADLINE, Timestamp::as_millis),
                    warn_at,
                    clock: self.clocks.intern((view.clock, view.title)),
                    escalated: !levels.is_empty(),
                    levels: self.level_lists.intern(levels),
                    notified: self.agency_sets.intern(notified),
                    responsible: policy.responsible,
                    on_board,
                    acknowledged: referral.is_acknowledged(&policy.id),
                },
                clock_id,
            ));
        }
        // Board clocks first, by deadline (paused last), then clock id: the first is shown.
        clocks.sort_by(|(a, a_id), (b, b_id)| {
            (!a.on_board, a.sort_key(), a_id).cmp(&(!b.on_board, b.sort_key(), b_id))
        });
        let mut notified: Vec<u32> = referral
            .marks
            .iter()
            .flat_map(|mark| mark.notified.iter())
            .map(|agency| self.agencies.intern(agency.clone()))
            .collect();
        notified.sort_unstable();
        notified.dedup();
        let creation = &referral.creation;
        Slot {
            id: referral.id,
            seq,
            updated_at: referral.updated_at,
            clocks: clocks.into_iter().map(|(clock, _)| clock).collect(),
            categories: self.categories.intern(
                creation
                    .categories
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            ),
            notified: self.agency_sets.intern(notified),
            sender: self.agencies.intern(creation.sender.clone()),
            recipient: self.agencies.intern(creation.recipient.clone()),
            service: self.services.intern(creation.service.clone()),
            priority: creation.priority,
            status: referral.status,
            reroute_pending: referral
                .reroute
                .as_ref()
                .is_some_and(|reroute| reroute.child.is_none()),
        }
    }

    /// The indexes `slot` belongs in (none unless it has a board row).
    fn keys(&self, slot: &Slot) -> Vec<IndexKey> {
        if !slot.on_board() {
            return Vec::new();
        }
        let mut keys = vec![
            IndexKey::Kind(slot.service, slot.priority),
            IndexKey::Agency(slot.sender),
        ];
        if slot.recipient != slot.sender {
            keys.push(IndexKey::Agency(slot.recipient));
        }
        for &agency in self.agency_sets.get(slot.notified) {
            if agency != slot.sender && agency != slot.recipient {
                keys.push(IndexKey::Agency(agency));
            }
        }
        keys
    }

    fn reindex(&mut self, slot: &Slot, index: u32) {
        if !self.indexed {
            return;
        }
        let sort = slot.sort_key();
        for key in self.keys(slot) {
            self.index
                .entry(key)
                .or_default()
                .insert(Entry::new(sort, index));
        }
    }

    fn unindex(&mut self, slot: &Slot, index: u32) {
        if !self.indexed {
            return;
        }
        let sort = slot.sort_key();
        for key in self.keys(slot) {
            if let Some(set) = self.index.get_mut(&key) {
                set.remove(&Entry::new(sort, index));
            }
        }
    }

    /// Records an integrity alert (once per refused record). Whether it is new.
    pub fn alert(&mut self, notice: IntegrityNotice) -> bool {
        if self.alerts.contains_key(&notice.stream_seq) {
            return false;
        }
        self.alerts.insert(notice.stream_seq, Alert { notice });
        self.version += 1;
        true
    }

    /// Drops closed referrals that closed more than [`CLOSED_KEPT`] before `now`.
    pub fn prune(&mut self, now: Timestamp) {
        let horizon = now.minus(CLOSED_KEPT);
        let gone: Vec<(ReferralId, u32)> = self
            .slots
            .iter()
            .zip(0_u32..)
            .filter_map(|(slot, index)| {
                slot.as_ref()
                    .filter(|slot| slot.status.is_terminal() && slot.updated_at < horizon)
                    .map(|slot| (slot.id, index))
            })
            .collect();
        for (id, index) in gone {
            self.by_id.remove(&id, |at| id_in(&self.slots, at));
            if let Some(slot) = self.slots[index as usize].take() {
                self.unindex(&slot, index);
            }
            self.free.push(index);
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether the referral is held.
    pub fn holds(&self, id: &ReferralId) -> bool {
        self.by_id.find(id, |at| id_in(&self.slots, at)).is_some()
    }

    fn slot(&self, id: &ReferralId) -> Option<&Slot> {
        let index = self.by_id.find(id, |at| id_in(&self.slots, at))?;
        self.slots[index as usize].as_ref()
    }

    /// The highest escalation level `clock` recorded.
    fn level_of(&self, clock: &ClockSlot) -> Option<u16> {
        highest_level(self.level_lists.get(clock.levels))
    }

    fn agency(&self, index: u32) -> &AgencyId {
        self.agencies.get(index)
    }

    /// Whether `viewer` may see `slot`: the operators crate's one access rule, on its parties.
    fn sees(&self, viewer: &Viewer, slot: &Slot) -> bool {
        viewer.sees_everything()
            || viewer.may_see(&Parties {
                sender: self.agency(slot.sender),
                recipient: self.agency(slot.recipient),
                notified: self
                    .agency_sets
                    .get(slot.notified)
                    .iter()
                    .map(|&agency| self.agency(agency))
                    .collect(),
            })
    }

    /// Whether `viewer` may see the referral, if it is held.
    pub fn visible(&self, id: &ReferralId, viewer: &Viewer) -> Option<bool> {
        self.slot(id).map(|slot| self.sees(viewer, slot))
    }

    /// The subject of a held referral's records.
    pub fn subject(&self, id: &ReferralId) -> Option<String> {
        self.slot(id).map(|slot| {
            refbus_bus::subjects::referral(
                self.agency(slot.recipient),
                self.agency(slot.sender),
                &slot.id,
            )
        })
    }

    /// When the referral's row next changes by the passing of time alone (a warning point or
    /// a deadline of one of its board clocks, after `now`).
    pub fn next_change(&self, id: &ReferralId, now: Timestamp) -> Option<Timestamp> {
        let slot = self.slot(id)?;
        if !slot.on_board() {
            return None;
        }
        let now = now.as_millis();
        slot.board_clocks()
            .flat_map(|clock| [clock.warn_at, clock.deadline])
            .filter(|&at| at > now && at != NEVER)
            .min()
            .map(Timestamp::from_millis)
    }

    /// Every held referral's next change after `now` (see [`next_change`](Self::next_change)).
    pub fn next_changes(&self, now: Timestamp) -> Vec<(Timestamp, ReferralId)> {
        self.slots
            .iter()
            .flatten()
            .filter_map(|slot| self.next_change(&slot.id, now).map(|at| (at, slot.id)))
            .collect()
    }

    /// The alerts `viewer` sees, newest first: the coordinator sees all; others those naming a
    /// referral they may see.
    pub fn alerts(&self, viewer: &Viewer) -> Vec<&Alert> {
        self.alerts
            .values()
            .rev()
            .filter(|alert| {
                viewer.sees_everything()
                    || alert
                        .notice
                        .referral_id
                        .and_then(|id| self.slot(&id))
                        .is_some_and(|slot| self.sees(viewer, slot))
            })
            .collect()
    }

    /// The alerts about one referral, oldest first.
    pub fn alerts_about(&self, id: &ReferralId) -> Vec<&Alert> {
        self.alerts
            .values()
            .filter(|alert| alert.notice.referral_id.as_ref() == Some(id))
            .collect()
    }

    /// The board row of one referral for `viewer` at `now`, if it is open, has a running or
    /// paused clock, and the viewer may see it.
    pub fn row(&self, id: &ReferralId, viewer: &Viewer, now: Timestamp) -> Option<Row> {
        let slot = self.slot(id)?;
        if !self.sees(viewer, slot) {
            return None;
        }
        self.row_of(slot, now)
    }

    fn row_of(&self, slot: &Slot, now: Timestamp) -> Option<Row> {
        if !slot.on_board() {
            return None;
        }
        let now = now.as_millis();
        let agencies = |set: u32| -> Vec<AgencyId> {
            self.agency_sets
                .get(set)
                .iter()
                .map(|&agency| self.agency(agency).clone())
                .collect()
        };
        let clocks: Vec<ClockLine> = slot
            .board_clocks()
            .map(|clock| {
                let (id, title) = self.clocks.get(clock.clock);
                let mut notified = agencies(clock.notified);
                notified.sort();
                ClockLine {
                    clock: id.clone(),
                    title: title.clone(),
                    deadline: clock.deadline(),
                    state: clock.state(now),
                    level: self.level_of(clock),
                    acknowledged: clock.acknowledged,
                    notified,
                    levels: self
                        .level_lists
                        .get(clock.levels)
                        .iter()
                        .map(|&(level, set)| (level, agencies(set)))
                        .collect(),
                    responsible: self.agency(slot.responsible(clock)).clone(),
                }
            })
            .collect();
        Some(Row {
            id: slot.id,
            sender: self.agency(slot.sender).clone(),
            recipient: self.agency(slot.recipient).clone(),
            service: self.services.get(slot.service).clone(),
            priority: slot.priority,
            categories: self.categories.get(slot.categories).clone(),
            status: slot.status,
            state: slot.state(now),
            clock: clocks.first()?.clone(),
            clocks,
        })
    }

    /// Whether `slot` (a board row) passes `filters` for `viewer` at `now`: checked on the
    /// compact row, as [`Filters::matches`] checks the row built from it.
    fn passes(&self, slot: &Slot, viewer: &Viewer, filters: &Filters, now: i64) -> bool {
        let agency = |wanted: &Option<AgencyId>| match wanted {
            None => true,
            Some(agency) => self
                .agencies
                .find(agency)
                .is_some_and(|index| slot.sender == index || slot.recipient == index),
        };
        agency(&filters.agency)
            && filters
                .service
                .as_ref()
                .is_none_or(|s| self.services.find(s) == Some(slot.service))
            && filters.priority.is_none_or(|p| slot.priority == p)
            && filters.clock.as_ref().is_none_or(|wanted| {
                slot.board_clocks()
                    .any(|clock| &self.clocks.get(clock.clock).0 == wanted)
            })
            && filters.state.is_none_or(|s| slot.state(now) == s)
            && self.sees(viewer, slot)
    }

    /// The indexes a board request walks: an agency's (the filter's, or the viewer's own if she
    /// sees only hers), or the service and priority ones the filters allow, whichever holds
    /// fewer rows.
    fn candidates(&self, viewer: &Viewer, filters: &Filters) -> Vec<&BTreeSet<Entry>> {
        let agency = filters
            .agency
            .as_ref()
            .or((!viewer.sees_everything()).then_some(&viewer.agency));
        let by_agency = agency.map(|agency| {
            self.agencies
                .find(agency)
                .and_then(|index| self.index.get(&IndexKey::Agency(index)))
                .into_iter()
                .collect::<Vec<_>>()
        });
        let service = filters.service.as_ref().map(|s| self.services.find(s));
        let by_kind: Vec<_> = self
            .index
            .iter()
            .filter(|(key, _)| match key {
                IndexKey::Kind(s, p) => {
                    service.is_none_or(|wanted| wanted == Some(*s))
                        && filters.priority.is_none_or(|wanted| wanted == *p)
                }
                IndexKey::Agency(_) => false,
            })
            .map(|(_, set)| set)
            .collect();
        let size = |sets: &Vec<&BTreeSet<Entry>>| sets.iter().map(|s| s.len()).sum::<usize>();
        match by_agency {
            Some(by_agency) if size(&by_agency) <= size(&by_kind) => by_agency,
            _ => by_kind,
        }
    }

    /// A page of the board for `viewer` at `now`: the open referrals it may see with a running
    /// (or paused) clock, matching `filters`, sorted by time to breach; `limit` rows after the
    /// first `skip`, and whether more follow. It walks the indexes in time-to-breach order and
    /// stops once it has them (ties are ordered by referral id, as before).
    pub fn board(
        &self,
        viewer: &Viewer,
        filters: &Filters,
        now: Timestamp,
        skip: usize,
        limit: usize,
    ) -> (Vec<Row>, bool) {
        let millis = now.as_millis();
        let sets = self.candidates(viewer, filters);
        let mut walks: Vec<_> = sets.iter().map(|set| set.iter()).collect();
        let mut heads = BinaryHeap::new();
        for (walk, iter) in walks.iter_mut().enumerate() {
            if let Some(&first) = iter.next() {
                heads.push(Reverse((first, walk)));
            }
        }
        let wanted = skip.saturating_add(limit);
        let mut found: Vec<(i64, ReferralId, u32)> = Vec::new();
        let mut more = false;
        while let Some(Reverse((entry, walk))) = heads.pop() {
            let (sort, index) = (entry.sort(), entry.slot);
            if let Some(&next) = walks[walk].next() {
                heads.push(Reverse((next, walk)));
            }
            // Past the last wanted row's time to breach: one more match says "more".
            let full =
                found.len() >= wanted && found.last().is_some_and(|&(last, _, _)| sort > last);
            let Some(slot) = self.slots[index as usize].as_ref() else {
                continue;
            };
            if !self.passes(slot, viewer, filters, millis) {
                continue;
            }
            if full {
                more = true;
                break;
            }
            found.push((sort, slot.id, index));
        }
        found.sort_unstable_by_key(|&(sort, id, _)| (sort, id));
        more |= found.len() > wanted;
        let rows = found
            .iter()
            .skip(skip)
            .take(limit)
            .filter_map(|&(_, _, index)| {
                self.slots[index as usize]
                    .as_ref()
                    .and_then(|slot| self.row_of(slot, now))
            })
            .collect();
        (rows, more)
    }

    /// Appends the projection's referrals (its slots and what their indices name) to `out`,
    /// for the snapshot (crate::snapshot). Alerts are not in it: they are read again at start.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let put_u32 = |out: &mut Vec<u8>, n: u32| out.extend_from_slice(&n.to_le_bytes());
        let put_len = |out: &mut Vec<u8>, n: usize| {
            out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes())
        };
        let put_str = |out: &mut Vec<u8>, text: &str| {
            put_len(out, text.len());
            out.extend_from_slice(text.as_bytes());
        };
        put_len(out, self.agencies.items.len());
        for agency in &self.agencies.items {
            put_str(out, agency.as_str());
        }
        put_len(out, self.services.items.len());
        for service in &self.services.items {
            put_str(out, service.as_str());
        }
        put_len(out, self.clocks.items.len());
        for (clock, title) in &self.clocks.items {
            put_str(out, clock.as_str());
            put_str(out, title);
        }
        put_len(out, self.categories.items.len());
        for list in &self.categories.items {
            put_len(out, list.len());
            for category in list {
                put_str(out, category);
            }
        }
        put_len(out, self.agency_sets.items.len());
        for set in &self.agency_sets.items {
            put_len(out, set.len());
            for &agency in set {
                put_u32(out, agency);
            }
        }
        put_len(out, self.level_lists.items.len());
        for list in &self.level_lists.items {
            put_len(out, list.len());
            for &(level, set) in list {
                out.extend_from_slice(&level.to_le_bytes());
                put_u32(out, set);
            }
        }
        put_len(out, self.by_id.len());
        for slot in self.slots.iter().flatten() {
            out.extend_from_slice(slot.id.as_bytes());
            out.extend_from_slice(&slot.seq.to_le_bytes());
            out.extend_from_slice(&slot.updated_at.as_millis().to_le_bytes());
            for n in [
                slot.categories,
                slot.notified,
                slot.sender,
                slot.recipient,
                slot.service,
            ] {
                put_u32(out, n);
            }
            let priority = Priority::ALL.iter().position(|p| *p == slot.priority);
            let status = Status::ALL.iter().position(|s| *s == slot.status);
            out.push(u8::try_from(priority.unwrap_or(255)).unwrap_or(255));
            out.push(u8::try_from(status.unwrap_or(255)).unwrap_or(255));
            out.push(u8::from(slot.reroute_pending));
            out.push(u8::try_from(slot.clocks.len()).unwrap_or(u8::MAX));
            for clock in slot.clocks.iter().take(usize::from(u8::MAX)) {
                out.extend_from_slice(&clock.deadline.to_le_bytes());
                out.extend_from_slice(&clock.warn_at.to_le_bytes());
                for n in [
                    clock.clock,
                    slot.responsible(clock),
                    clock.levels,
                    clock.notified,
                ] {
                    put_u32(out, n);
                }
                let level = self.level_of(clock);
                out.extend_from_slice(&level.map_or(u32::MAX, u32::from).to_le_bytes());
                out.push(u8::from(clock.on_board) | (u8::from(clock.acknowledged) << 1));
            }
        }
    }

    /// The projection [`encode`](Self::encode) wrote into `bytes` (all of them), or why not:
    /// any index out of range, unknown code or bad id is refused, never trusted.
    pub(crate) fn decode(registry: Arc<Registry>, bytes: &[u8]) -> Result<Projection, String> {
        let mut input = Input { rest: bytes };
        // Interning keeps first occurrences, so indices read back as written only if a table
        // has no duplicates: one that shrank was not written by `encode`.
        fn distinct<T: Hash + Eq + Clone>(table: &Interner<T>, n: usize) -> Result<(), String> {
            if table.items.len() == n {
                Ok(())
            } else {
                Err("a table with duplicates".to_owned())
            }
        }
        let mut projection = Projection::new(registry);
        let bad = |what: &str| format!("bad {what}");
        let mut agencies = Interner::new();
        let n = input.len()?;
        for _ in 0..n {
            let text = input.str()?;
            agencies.intern(AgencyId::new(text).map_err(|_| bad("agency"))?);
        }
        distinct(&agencies, n)?;
        let mut services = Interner::new();
        let n = input.len()?;
        for _ in 0..n {
            let text = input.str()?;
            services.intern(ServiceId::new(text).map_err(|_| bad("service"))?);
        }
        distinct(&services, n)?;
        let mut clocks = Interner::new();
        let n = input.len()?;
        for _ in 0..n {
            let id = ClockId::new(input.str()?).map_err(|_| bad("clock"))?;
            clocks.intern((id, input.str()?.to_owned()));
        }
        distinct(&clocks, n)?;
        let mut categories = Interner::new();
        let n = input.len()?;
        for _ in 0..n {
            let list = (0..input.len()?)
                .map(|_| input.str().map(str::to_owned))
                .collect::<Result<Vec<_>, _>>()?;
            categories.intern(list);
        }
        distinct(&categories, n)?;
        let agency_count = agencies.items.len();
        let in_range = |n: u32, len: usize, what: &str| {
            if (n as usize) < len {
                Ok(n)
            } else {
                Err(bad(what))
            }
        };
        let mut agency_sets = Interner::new();
        let n = input.len()?;
        for _ in 0..n {
            let set = (0..input.len()?)
                .map(|_| in_range(input.u32()?, agency_count, "agency index"))
                .collect::<Result<Vec<_>, _>>()?;
            agency_sets.intern(set);
        }
        distinct(&agency_sets, n)?;
        let set_count = agency_sets.items.len();
        let mut level_lists = Interner::new();
        let n = input.len()?;
        for _ in 0..n {
            let list = (0..input.len()?)
                .map(|_| {
                    let level = u16::from_le_bytes(input.array()?);
                    Ok((level, in_range(input.u32()?, set_count, "set index")?))
                })
                .collect::<Result<Vec<_>, String>>()?;
            level_lists.intern(list);
        }
        distinct(&level_lists, n)?;
        // Index 0 of these tables is the empty one, as `Projection::new` makes them.
        if agency_sets.items.first().is_none_or(|set| !set.is_empty())
            || level_lists
                .items
                .first()
                .is_none_or(|list| !list.is_empty())
            || categories.items.first().is_none_or(|list| !list.is_empty())
        {
            return Err(bad("tables"));
        }
        let (service_count, clock_count, category_count, list_count) = (
            services.items.len(),
            clocks.items.len(),
            categories.items.len(),
            level_lists.items.len(),
        );
        let count = input.len()?;
        let mut slots = Vec::with_capacity(count.min(input.rest.len() / 50));
        for _ in 0..count {
            let id = ReferralId::from_bytes(input.array()?);
            let seq = u64::from_le_bytes(input.array()?);
            let updated_at = Timestamp::from_millis(i64::from_le_bytes(input.array()?));
            let categories = in_range(input.u32()?, category_count, "categories")?;
            let notified = in_range(input.u32()?, set_count, "set index")?;
            let sender = in_range(input.u32()?, agency_count, "agency index")?;
            let recipient = in_range(input.u32()?, agency_count, "agency index")?;
            let service = in_range(input.u32()?, service_count, "service index")?;
            let [priority, status, reroute, clock_count_here] = input.array()?;
            let priority = *Priority::ALL
                .get(usize::from(priority))
                .ok_or_else(|| bad("priority"))?;
            let status = *Status::ALL
                .get(usize::from(status))
                .ok_or_else(|| bad("status"))?;
            let clocks_here = (0..clock_count_here)
                .map(|_| {
                    let deadline = i64::from_le_bytes(input.array()?);
                    let warn_at = i64::from_le_bytes(input.array()?);
                    let clock = in_range(input.u32()?, clock_count, "clock index")?;
                    let responsible = in_range(input.u32()?, agency_count, "agency index")?;
                    let levels = in_range(input.u32()?, list_count, "levels index")?;
                    let notified = in_range(input.u32()?, set_count, "set index")?;
                    let level = input.u32()?;
                    let [flags] = input.array()?;
                    // Held as the party, and as its list's highest level: what was written
                    // must say the same.
                    let responsible = if responsible == sender {
                        Party::Sender
                    } else if responsible == recipient {
                        Party::Recipient
                    } else {
                        return Err(bad("responsible agency"));
                    };
                    let highest = highest_level(level_lists.get(levels));
                    if level != highest.map_or(u32::MAX, u32::from) {
                        return Err(bad("level"));
                    }
                    Ok(ClockSlot {
                        deadline,
                        warn_at,
                        clock,
                        levels,
                        notified,
                        responsible,
                        escalated: highest.is_some(),
                        on_board: flags & 1 != 0,
                        acknowledged: flags & 2 != 0,
                    })
                })
                .collect::<Result<Box<[ClockSlot]>, String>>()?;
            slots.push(Some(Slot {
                id,
                seq,
                updated_at,
                clocks: clocks_here,
                categories,
                notified,
                sender,
                recipient,
                service,
                priority,
                status,
                reroute_pending: reroute != 0,
            }));
        }
        if !input.rest.is_empty() {
            return Err(bad("length"));
        }
        projection.agencies = agencies;
        projection.services = services;
        projection.clocks = clocks;
        projection.categories = categories;
        projection.agency_sets = agency_sets;
        projection.level_lists = level_lists;
        for (index, slot) in slots.iter().enumerate() {
            let Some(slot) = slot else { continue };
            let index = u32::try_from(index).map_err(|_| bad("count"))?;
            let id_at = |at| id_in(&slots, at);
            if projection.by_id.find(&slot.id, id_at).is_some() {
                return Err(bad("duplicate referral"));
            }
            projection.by_id.insert(&slot.id, index, id_at);
        }
        projection.slots = slots;
        projection.index_all();
        Ok(projection)
    }

    /// Each agency's load at `now`, for the agencies `viewer` may see (the coordinator: all;
    /// anyone else: their own). `starts` gives, per agency, the instants its day and week
    /// began (its time zone).
    pub fn load(
        &self,
        viewer: &Viewer,
        now: Timestamp,
        starts: impl Fn(&AgencyId) -> (Timestamp, Timestamp),
    ) -> BTreeMap<AgencyId, Load> {
        let mut loads: BTreeMap<AgencyId, Load> = self
            .registry
            .agencies
            .keys()
            .filter(|agency| viewer.sees_everything() || **agency == viewer.agency)
            .map(|agency| (agency.clone(), Load::default()))
            .collect();
        let millis = now.as_millis();
        // Per interned agency: where its load is counted, and its day and week starts.
        let counted: Vec<Option<(i64, i64)>> = self
            .agencies
            .items
            .iter()
            .map(|agency| {
                loads.contains_key(agency).then(|| {
                    let (day, week) = starts(agency);
                    (day.as_millis(), week.as_millis())
                })
            })
            .collect();
        let mut tallies: Vec<Load> = vec![Load::default(); counted.len()];
        for slot in self.slots.iter().flatten() {
            let open = !slot.status.is_terminal();
            if open && counted[slot.recipient as usize].is_some() {
                let load = &mut tallies[slot.recipient as usize];
                load.open += 1;
                if matches!(slot.status, Status::Requested | Status::Received) {
                    load.awaiting_acceptance += 1;
                }
                if slot.on_board() && slot.state(millis) == RowState::AtRisk {
                    load.at_risk += 1;
                }
            }
            if slot.reroute_pending && counted[slot.sender as usize].is_some() {
                tallies[slot.sender as usize].reroutes_pending += 1;
            }
            for clock in slot.clocks.iter() {
                if clock.deadline == NO_DEADLINE || clock.deadline > millis {
                    continue;
                }
                let responsible = slot.responsible(clock) as usize;
                let Some((day_start, week_start)) = counted[responsible] else {
                    continue;
                };
                let load = &mut tallies[responsible];
                if clock.deadline >= day_start {
                    load.breached_today += 1;
                }
                if clock.deadline >= week_start {
                    load.breached_this_week += 1;
                }
            }
        }
        for (agency, tally) in self.agencies.items.iter().zip(tallies) {
            if let Some(load) = loads.get_mut(agency) {
                *load = tally;
            }
        }
        loads
    }
}

/// Reads what [`Projection::encode`] wrote.
struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err("cut short".to_owned());
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.take(N)?.try_into().map_err(|_| "cut short".to_owned())
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A count; never more than the bytes left could hold, whatever it says.
    fn len(&mut self) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n > self.rest.len() {
            return Err("a count beyond the end".to_owned());
        }
        Ok(n)
    }

    fn str(&mut self) -> Result<&'a str, String> {
        let n = self.len()?;
        std::str::from_utf8(self.take(n)?).map_err(|_| "not UTF-8".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use refbus_core::event::Actor;
    use refbus_core::ids::{CaseId, CategoryId, OperatorId, PolicyVersion};
    use refbus_core::referral::{ClockMark, Consent, Creation, SealedPayload};
    use refbus_core::{Command, Request, RequestId, decide, evolve};

    use super::*;
    use crate::viewer::Role;

    fn agency(id: &str) -> AgencyId {
        AgencyId::new(id).unwrap()
    }

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    const T0: &str = "2026-03-02T09:00:00+08:00";

    fn registry() -> Arc<Registry> {
        Arc::new(refbus_e2e::demo_registry())
    }

    /// An emergency referral Dinsos sends UPTD PPA at T0 (the demo's 2-minute clock).
    fn created(registry: &Registry, request: &str, priority: Priority) -> Referral {
        let (sender, recipient) = (agency("maros-dinsos"), agency("maros-uptd-ppa"));
        let creation = Creation {
            case_id: CaseId::new("MRS-2026-0042").unwrap(),
            sender: sender.clone(),
            recipient: recipient.clone(),
            service: ServiceId::new("psychological_counselling").unwrap(),
            priority,
            categories: vec![CategoryId::new("sexual_violence").unwrap()],
            child: false,
            consent: Consent {
                services: true,
                disclose_to_agencies: true,
                override_justification: None,
            },
            case_reported_at: None,
            identity: Some(SealedPayload {
                recipients: vec![sender.clone(), recipient],
                envelope: b"sealed".to_vec(),
            }),
            note: None,
            policy_version: PolicyVersion::new("demo-1").unwrap(),
            parent: None,
            sex: Default::default(),
            age_band: Default::default(),
        };
        let request = Request {
            command: Command::Create(Box::new(creation)),
            actor: Actor::Agency {
                agency: sender,
                operator: OperatorId::new("operator").unwrap(),
                system: None,
            },
            request_id: Some(RequestId::new(request).unwrap()),
        };
        let decision = decide(registry, None, &request, at(T0)).unwrap();
        let mut state = None;
        for event in &decision.events {
            state = Some(evolve(state, event).unwrap());
        }
        state.unwrap()
    }

    /// The row of `referral` alone in a projection.
    fn row_at(registry: &Arc<Registry>, referral: &Referral, now: Timestamp) -> Option<Row> {
        let mut projection = Projection::new(registry.clone());
        projection.apply(1, referral);
        projection.row(
            &referral.id,
            &viewer("maros-bappeda", Role::Coordinator),
            now,
        )
    }

    fn viewer(agency_id: &str, role: Role) -> Viewer {
        Viewer {
            username: refbus_operators::Username::new("op").unwrap(),
            agency: agency(agency_id),
            role,
        }
    }

    #[test]
    fn a_row_moves_from_on_track_to_at_risk_to_breached_as_its_clock_runs() {
        let registry = registry();
        let referral = created(&registry, "r1", Priority::Emergency);
        let mut projection = Projection::new(registry.clone());
        assert!(projection.apply(3, &referral));
        let coordinator = viewer("maros-bappeda", Role::Coordinator);
        let state_at = |secs: u64| {
            projection
                .row(
                    &referral.id,
                    &coordinator,
                    at(T0).plus(Duration::from_secs(secs)),
                )
                .unwrap()
                .state
        };
        assert_eq!(state_at(10), RowState::OnTrack);
        // The demo's emergency acknowledge clock: 2 minutes, warnings at 50% and 75%.
        assert_eq!(state_at(61), RowState::AtRisk);
        assert_eq!(state_at(121), RowState::Breached);
        let row = projection.row(&referral.id, &coordinator, at(T0)).unwrap();
        assert_eq!(row.clock.clock.as_str(), "acknowledge_emergency");
        assert_eq!(
            row.clock.deadline,
            Some(at(T0).plus(Duration::from_secs(120)))
        );
    }

    #[test]
    fn an_unacknowledged_escalation_outranks_a_breach_until_acknowledged() {
        let registry = registry();
        let mut referral = created(&registry, "r1", Priority::Emergency);
        let clock = ClockId::new("acknowledge_emergency").unwrap();
        referral.marks.push(ClockMark {
            clock: clock.clone(),
            mark: Mark::Escalation {
                level: 2,
                repetition: 0,
            },
            notified: vec![agency("maros-bappeda"), agency("maros-dp3a")],
        });
        let later = at(T0).plus(Duration::from_secs(150));
        let row = row_at(&registry, &referral, later).unwrap();
        assert_eq!(row.state, RowState::Escalated);
        assert_eq!(row.clock.level, Some(2));
        assert_eq!(
            row.clock.notified,
            vec![agency("maros-bappeda"), agency("maros-dp3a")]
        );
        referral.marks.push(ClockMark {
            clock,
            mark: Mark::Acknowledged { level: 2 },
            notified: vec![],
        });
        assert_eq!(
            row_at(&registry, &referral, later).unwrap().state,
            RowState::Breached
        );
    }

    #[test]
    fn heads_see_their_agencies_referrals_and_those_they_were_notified_of() {
        let registry = registry();
        let mut referral = created(&registry, "r1", Priority::Emergency);
        let mut projection = Projection::new(registry.clone());
        projection.apply(1, &referral);
        let now = at(T0);
        let filters = Filters::default();
        assert_eq!(
            projection
                .board(
                    &viewer("maros-uptd-ppa", Role::Head),
                    &filters,
                    now,
                    0,
                    PAGE_ROWS
                )
                .0
                .len(),
            1
        );
        assert_eq!(
            projection
                .board(
                    &viewer("maros-dinsos", Role::Supervisor),
                    &filters,
                    now,
                    0,
                    PAGE_ROWS
                )
                .0
                .len(),
            1
        );
        let dp3a = viewer("maros-dp3a", Role::Head);
        assert!(
            projection
                .board(&dp3a, &filters, now, 0, PAGE_ROWS)
                .0
                .is_empty()
        );
        assert!(projection.row(&referral.id, &dp3a, now).is_none());
        referral.marks.push(ClockMark {
            clock: ClockId::new("acknowledge_emergency").unwrap(),
            mark: Mark::Escalation {
                level: 1,
                repetition: 0,
            },
            notified: vec![agency("maros-dp3a")],
        });
        projection.apply(2, &referral);
        assert_eq!(
            projection.board(&dp3a, &filters, now, 0, PAGE_ROWS).0.len(),
            1
        );
    }

    #[test]
    fn an_older_record_never_replaces_a_newer_one() {
        let registry = registry();
        let referral = created(&registry, "r1", Priority::Emergency);
        let mut projection = Projection::new(registry);
        assert!(projection.apply(5, &referral));
        let version = projection.version();
        assert!(!projection.apply(4, &referral));
        assert!(!projection.apply(5, &referral));
        assert_eq!(projection.version(), version);
    }

    #[test]
    fn filters_select_and_rows_sort_by_time_to_breach() {
        let registry = registry();
        let emergency = created(&registry, "r1", Priority::Emergency);
        let urgent = created(&registry, "r2", Priority::Urgent);
        let mut projection = Projection::new(registry);
        projection.apply(1, &urgent);
        projection.apply(2, &emergency);
        let coordinator = viewer("maros-bappeda", Role::Coordinator);
        let now = at(T0).plus(Duration::from_secs(70));
        let all = projection
            .board(&coordinator, &Filters::default(), now, 0, PAGE_ROWS)
            .0;
        // The emergency clock (2 minutes) breaches before the urgent one (4 minutes).
        assert_eq!(
            all.iter().map(|row| row.id).collect::<Vec<_>>(),
            vec![emergency.id, urgent.id]
        );
        let only = |filters: Filters| {
            projection
                .board(&coordinator, &filters, now, 0, PAGE_ROWS)
                .0
                .iter()
                .map(|row| row.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            only(Filters {
                priority: Some(Priority::Urgent),
                ..Filters::default()
            }),
            vec![urgent.id]
        );
        assert_eq!(
            only(Filters {
                state: Some(RowState::AtRisk),
                ..Filters::default()
            }),
            vec![emergency.id]
        );
        assert_eq!(
            only(Filters {
                clock: Some(ClockId::new("acknowledge_urgent").unwrap()),
                ..Filters::default()
            }),
            vec![urgent.id]
        );
        assert!(
            only(Filters {
                agency: Some(agency("polres-maros")),
                ..Filters::default()
            })
            .is_empty()
        );
    }

    #[test]
    fn a_page_walked_from_the_indexes_is_the_slice_of_the_whole_filtered_board() {
        // Indexed at every change, as the live feed does, and built at once at the end of a
        // rebuild: the same pages.
        for deferred in [false, true] {
            pages_are_slices_of_the_whole_filtered_board(deferred);
        }
    }

    fn pages_are_slices_of_the_whole_filtered_board(deferred: bool) {
        let registry = registry();
        let mut projection = Projection::new(registry.clone());
        if deferred {
            projection.defer_indexes();
        }
        let mut referrals = Vec::new();
        // Many referrals created at the same instant: equal deadlines, ordered by id.
        for n in 0..60 {
            let priority = Priority::ALL[n % Priority::ALL.len()];
            let referral = created(&registry, &format!("r{n}"), priority);
            projection.apply(n as u64 + 1, &referral);
            referrals.push(referral);
        }
        if deferred {
            projection.shrink();
        }
        let now = at(T0).plus(Duration::from_secs(70));
        let filters = [
            Filters::default(),
            Filters {
                priority: Some(Priority::Urgent),
                ..Filters::default()
            },
            Filters {
                service: Some(ServiceId::new("psychological_counselling").unwrap()),
                ..Filters::default()
            },
            Filters {
                service: Some(ServiceId::new("shelter").unwrap()),
                ..Filters::default()
            },
            Filters {
                agency: Some(agency("maros-uptd-ppa")),
                priority: Some(Priority::Emergency),
                ..Filters::default()
            },
            Filters {
                agency: Some(agency("polres-maros")),
                ..Filters::default()
            },
            Filters {
                state: Some(RowState::AtRisk),
                ..Filters::default()
            },
        ];
        let viewers = [
            viewer("maros-bappeda", Role::Coordinator),
            viewer("maros-dinsos", Role::Head),
            viewer("maros-dp3a", Role::Head),
        ];
        let mut shown = 0;
        for viewer in &viewers {
            for filters in &filters {
                let mut expected: Vec<Row> = referrals
                    .iter()
                    .filter_map(|r| projection.row(&r.id, viewer, now))
                    .filter(|row| filters.matches(row))
                    .collect();
                expected.sort_by_key(|row| (row.sort_key(), row.id));
                let mut paged = Vec::new();
                for page in 0..20 {
                    let (rows, more) = projection.board(viewer, filters, now, page * 7, 7);
                    paged.extend(rows);
                    assert_eq!(
                        more,
                        paged.len() < expected.len(),
                        "{filters:?} page {page}"
                    );
                    if !more {
                        break;
                    }
                }
                assert_eq!(paged, expected, "{filters:?} for {viewer:?}");
                shown += expected.len();
            }
        }
        // Some filters select rows, some none.
        assert!(shown > 0);
        assert!(
            projection
                .board(&viewers[2], &Filters::default(), now, 0, 7)
                .0
                .is_empty()
        );
    }

    #[test]
    fn a_row_changes_state_at_the_instants_it_says_it_will() {
        let registry = registry();
        let referral = created(&registry, "r1", Priority::Emergency);
        let mut projection = Projection::new(registry);
        projection.apply(1, &referral);
        let coordinator = viewer("maros-bappeda", Role::Coordinator);
        let state = |now| {
            projection
                .row(&referral.id, &coordinator, now)
                .unwrap()
                .state
        };
        let mut now = at(T0);
        let mut states = vec![state(now)];
        while let Some(next) = projection.next_change(&referral.id, now) {
            assert_eq!(
                state(next.minus(Duration::from_millis(1))),
                *states.last().unwrap()
            );
            now = next;
            states.push(state(now));
        }
        assert_eq!(
            states,
            vec![RowState::OnTrack, RowState::AtRisk, RowState::Breached]
        );
    }

    #[test]
    fn an_agencys_load_counts_its_open_waiting_risky_and_breached_referrals() {
        let registry = registry();
        let emergency = created(&registry, "r1", Priority::Emergency);
        let urgent = created(&registry, "r2", Priority::Urgent);
        let mut projection = Projection::new(registry);
        projection.apply(1, &urgent);
        projection.apply(2, &emergency);
        let now = at(T0).plus(Duration::from_secs(130));
        let loads = projection.load(&viewer("maros-bappeda", Role::Coordinator), now, |_| {
            (
                at("2026-03-02T00:00:00+08:00"),
                at("2026-03-02T00:00:00+08:00"),
            )
        });
        let uptd = &loads[&agency("maros-uptd-ppa")];
        assert_eq!(uptd.open, 2);
        assert_eq!(uptd.awaiting_acceptance, 2);
        // Emergency breached at 2 minutes; urgent (4 minutes) is past its 50% warning.
        assert_eq!(uptd.breached_today, 1);
        assert_eq!(uptd.breached_this_week, 1);
        assert_eq!(uptd.at_risk, 1);
        assert_eq!(loads[&agency("maros-dinsos")].open, 0);
        let own = projection.load(&viewer("maros-dinsos", Role::Head), now, |_| (now, now));
        assert_eq!(
            own.keys().collect::<Vec<_>>(),
            vec![&agency("maros-dinsos")]
        );
    }

    /// A dashboard holds a slot for every open referral, a million and more, and three or more
    /// index entries each: these sizes are its memory (docs/BENCHMARKS.md, "Dashboard memory").
    #[test]
    fn a_slot_takes_72_bytes_each_kept_clock_32_and_an_index_entry_12() {
        assert_eq!(std::mem::size_of::<Option<Slot>>(), 72);
        assert_eq!(std::mem::size_of::<ClockSlot>(), 32);
        assert_eq!(std::mem::size_of::<Entry>(), 12);
    }

    #[test]
    fn index_entries_order_as_their_sort_key_then_slot() {
        let keys = [i64::MIN, -1_000, -1, 0, 1, 1 << 32, (1 << 32) + 1, i64::MAX];
        let mut entries: Vec<Entry> = keys
            .iter()
            .rev()
            .flat_map(|&sort| [Entry::new(sort, 2), Entry::new(sort, 1)])
            .collect();
        entries.sort();
        let back: Vec<(i64, u32)> = entries.iter().map(|e| (e.sort(), e.slot)).collect();
        let mut pairs: Vec<(i64, u32)> = keys.iter().flat_map(|&k| [(k, 1), (k, 2)]).collect();
        pairs.sort();
        assert_eq!(back, pairs);
    }

    #[test]
    fn every_referral_is_found_by_its_id_through_growth_pruning_and_reuse_of_slots() {
        let registry = registry();
        let mut projection = Projection::new(registry.clone());
        // Enough referrals for the table of slots by id to grow many times.
        let referrals: Vec<Referral> = (0..3000)
            .map(|n| created(&registry, &format!("r{n}"), Priority::Urgent))
            .collect();
        for (seq, referral) in (1..).zip(&referrals) {
            assert!(projection.apply(seq, referral));
        }
        assert_eq!(projection.len(), 3000);
        assert!(referrals.iter().all(|r| projection.holds(&r.id)));
        // Every third one completes at T0; nine days later those have left the projection.
        for (seq, referral) in (5000..).zip(referrals.iter().step_by(3)) {
            let mut closed = referral.clone();
            closed.status = Status::Completed;
            closed.seq += 1;
            assert!(projection.apply(seq, &closed));
        }
        projection.prune(at(T0).plus(Duration::from_secs(9 * 24 * 3600)));
        for (n, referral) in referrals.iter().enumerate() {
            assert_eq!(projection.holds(&referral.id), n % 3 != 0, "referral {n}");
        }
        assert_eq!(projection.len(), 2000);
        // New referrals take the freed slots and are found; the others still are.
        let later: Vec<Referral> = (0..1500)
            .map(|n| created(&registry, &format!("later{n}"), Priority::Routine))
            .collect();
        for (seq, referral) in (9000..).zip(&later) {
            assert!(projection.apply(seq, referral));
        }
        projection.shrink();
        assert_eq!(projection.len(), 3500);
        assert!(later.iter().all(|r| projection.holds(&r.id)));
        assert!(
            referrals
                .iter()
                .enumerate()
                .all(|(n, r)| projection.holds(&r.id) == (n % 3 != 0))
        );
        // An older record of a held referral is still recognised as held, not added again.
        assert!(!projection.apply(1, &later[0]));
        assert_eq!(projection.len(), 3500);
    }

    #[test]
    fn a_snapshot_reads_back_as_the_same_board_and_refuses_any_change() {
        use refbus_core::signature::{Signer, SigningKey};
        let registry = registry();
        let mut projection = Projection::new(registry.clone());
        let mut referrals = Vec::new();
        for n in 0..12 {
            let priority = Priority::ALL[n % Priority::ALL.len()];
            let mut referral = created(&registry, &format!("r{n}"), priority);
            if n == 3 {
                referral.marks.push(ClockMark {
                    clock: ClockId::new("acknowledge_emergency").unwrap(),
                    mark: Mark::Escalation {
                        level: 1,
                        repetition: 0,
                    },
                    notified: vec![agency("maros-dp3a")],
                });
            }
            projection.apply(n as u64 + 1, &referral);
            referrals.push(referral);
        }
        let key = SigningKey::from_seed(&[7; 32], Signer::Router);
        let bytes = crate::snapshot::encode(&projection, 99, &key);
        let (read, covers) = crate::snapshot::decode(&bytes, &key, registry.clone()).unwrap();
        assert_eq!(covers, 99);
        assert_eq!(read.len(), projection.len());
        let now = at(T0).plus(Duration::from_secs(70));
        for viewer in [
            viewer("maros-bappeda", Role::Coordinator),
            viewer("maros-dp3a", Role::Head),
        ] {
            let board = |p: &Projection| p.board(&viewer, &Filters::default(), now, 0, 100);
            assert_eq!(board(&read), board(&projection));
            let load = |p: &Projection| p.load(&viewer, now, |_| (at(T0), at(T0)));
            assert_eq!(load(&read), load(&projection));
        }
        assert_eq!(
            read.board(
                &viewer("maros-dp3a", Role::Head),
                &Filters::default(),
                now,
                0,
                100
            )
            .0
            .len(),
            1
        );
        for referral in &referrals {
            assert_eq!(
                read.next_change(&referral.id, at(T0)),
                projection.next_change(&referral.id, at(T0))
            );
            assert_eq!(read.subject(&referral.id), projection.subject(&referral.id));
        }
        // Another key, any altered byte, a cut file: refused, never used.
        let other = SigningKey::from_seed(&[8; 32], Signer::Router);
        assert!(crate::snapshot::decode(&bytes, &other, registry.clone()).is_err());
        for at in [0, 40, bytes.len() / 2, bytes.len() - 80, bytes.len() - 1] {
            let mut altered = bytes.clone();
            altered[at] ^= 1;
            assert!(
                crate::snapshot::decode(&altered, &key, registry.clone()).is_err(),
                "a change at byte {at} went unnoticed"
            );
        }
        assert!(crate::snapshot::decode(&bytes[..bytes.len() - 1], &key, registry).is_err());
    }

    #[test]
    fn the_snapshot_key_is_made_once_readable_by_its_owner_only() {
        let dir = std::env::temp_dir().join(format!("refbus-dashboard-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dashboard-snapshot.key");
        let first = crate::snapshot::key(&path).unwrap();
        let again = crate::snapshot::key(&path).unwrap();
        assert_eq!(first.verifying_key().id(), again.verifying_key().id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
