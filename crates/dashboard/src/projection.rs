//! The board's projection: every referral's last checked state, and what a viewer sees of it at
//! a given instant. Pure: records go in, rows come out, `now` is a parameter.
//!
//! Clock states come from the core's clock views ([`refbus_core::clock::views`]), the same the
//! adapter serves to agencies' systems: the board never computes a deadline of its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use refbus_core::clock::{ClockPolicy, ClockView, Phase, fraction, views};
use refbus_core::ids::{ClockId, ServiceId};
use refbus_core::integrity::IntegrityNotice;
use refbus_core::referral::{Mark, Party, Priority};
use refbus_core::{AgencyId, Referral, ReferralId, Registry, Status, Timestamp};

use crate::viewer::Viewer;

/// How long a closed referral stays in the projection: long enough for "breached this week".
pub const CLOSED_KEPT: Duration = Duration::from_secs(8 * 24 * 3600);

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
    pub view: ClockView,
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
                    .map(move |(level, _)| (&line.view.clock, *level))
            })
            .max_by_key(|(_, level)| *level)
    }

    /// What the board sorts by: time to breach (breached first, most overdue first); clocks
    /// without a deadline (paused) last.
    pub fn sort_key(&self) -> i64 {
        self.clock
            .view
            .deadline
            .map_or(i64::MAX, Timestamp::as_millis)
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
                .is_none_or(|c| row.clocks.iter().any(|line| &line.view.clock == c))
            && self.state.is_none_or(|s| row.state == s)
    }
}

impl Filters {
    /// Whether `referral`'s row could match: the filters on what its creation says (agency,
    /// service, priority), checked before its clock views are computed, exactly as
    /// [`matches`](Filters::matches) checks them on the row (which takes them from the creation).
    /// A board filtered on them computes the clock views of the referrals that pass only.
    pub fn may_match(&self, referral: &Referral) -> bool {
        let creation = &referral.creation;
        self.agency
            .as_ref()
            .is_none_or(|agency| &creation.sender == agency || &creation.recipient == agency)
            && self.service.as_ref().is_none_or(|s| &creation.service == s)
            && self.priority.is_none_or(|p| creation.priority == p)
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

/// One referral in the projection.
#[derive(Debug, Clone)]
struct Entry {
    /// The stream sequence of its last checked record.
    seq: u64,
    subject: String,
    state: Referral,
}

/// Every referral's last checked state (open ones, and closed ones for [`CLOSED_KEPT`]), and
/// the integrity alerts.
#[derive(Debug)]
pub struct Projection {
    registry: Arc<Registry>,
    referrals: HashMap<ReferralId, Entry>,
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
            referrals: HashMap::new(),
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
        (self.referrals.len(), self.alerts.len())
    }

    /// Marks a change not caused by a record (time moved a row to another state).
    pub fn touch(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// Applies a checked record: the referral's state after the record stored at `seq` on
    /// `subject`. An older record than the one held changes nothing (a rebuild and the live
    /// feed overlap). Whether it changed anything.
    pub fn apply(&mut self, seq: u64, subject: &str, state: Referral) -> bool {
        if let Some(entry) = self.referrals.get(&state.id)
            && entry.seq >= seq
        {
            return false;
        }
        self.referrals.insert(
            state.id,
            Entry {
                seq,
                subject: subject.to_owned(),
                state: state.into_snapshot(),
            },
        );
        self.version += 1;
        true
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
        self.referrals.retain(|_, entry| {
            !entry.state.status.is_terminal() || entry.state.updated_at >= horizon
        });
    }

    pub fn len(&self) -> usize {
        self.referrals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.referrals.is_empty()
    }

    /// Every referral held.
    pub fn ids(&self) -> Vec<ReferralId> {
        self.referrals.keys().copied().collect()
    }

    /// A referral's state and subject, if held.
    pub fn referral(&self, id: &ReferralId) -> Option<(&Referral, &str)> {
        self.referrals
            .get(id)
            .map(|entry| (&entry.state, entry.subject.as_str()))
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
                        .and_then(|id| self.referrals.get(&id))
                        .is_some_and(|entry| viewer.may_see_referral(&entry.state))
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
        let entry = self.referrals.get(id)?;
        if !viewer.may_see_referral(&entry.state) {
            return None;
        }
        row(&self.registry, &entry.state, now)
    }

    /// The board for `viewer` at `now`: every open referral it may see with a running (or
    /// paused) clock, matching `filters`, sorted by time to breach.
    pub fn board(&self, viewer: &Viewer, filters: &Filters, now: Timestamp) -> Vec<Row> {
        let mut rows: Vec<Row> = self
            .referrals
            .values()
            .filter(|entry| viewer.may_see_referral(&entry.state))
            // Cheap checks first: at a million referrals, computing every one's clock views
            // for a page that shows a hundred is what made a filtered board slow.
            .filter(|entry| filters.may_match(&entry.state))
            .filter_map(|entry| row(&self.registry, &entry.state, now))
            .filter(|row| filters.matches(row))
            .collect();
        rows.sort_by_key(|row| (row.sort_key(), row.id.to_string()));
        rows
    }

    /// Each agency's load at `now`, for the agencies `viewer` may see (the coordinator: all;
    /// anyone else: their own). `week_start` and `day_start` give, per agency, the instants
    /// its day and week began (its time zone).
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
        for entry in self.referrals.values() {
            let referral = &entry.state;
            let open = !referral.status.is_terminal();
            if open && let Some(load) = loads.get_mut(referral.recipient()) {
                load.open += 1;
                if matches!(referral.status, Status::Requested | Status::Received) {
                    load.awaiting_acceptance += 1;
                }
                if row(&self.registry, referral, now).is_some_and(|r| r.state == RowState::AtRisk) {
                    load.at_risk += 1;
                }
            }
            if let Some(reroute) = &referral.reroute
                && reroute.child.is_none()
                && let Some(load) = loads.get_mut(referral.sender())
            {
                load.reroutes_pending += 1;
            }
            for (view, policy) in views(&self.registry, referral, now) {
                let Some(deadline) = view.deadline.filter(|_| view.breached) else {
                    continue;
                };
                let responsible = responsible(referral, &policy);
                let Some(load) = loads.get_mut(responsible) else {
                    continue;
                };
                let (day_start, week_start) = starts(responsible);
                if deadline >= day_start {
                    load.breached_today += 1;
                }
                if deadline >= week_start {
                    load.breached_this_week += 1;
                }
            }
        }
        loads
    }
}

fn responsible<'a>(referral: &'a Referral, policy: &ClockPolicy) -> &'a AgencyId {
    match policy.responsible {
        Party::Sender => referral.sender(),
        Party::Recipient => referral.recipient(),
    }
}

/// The board row of `referral` at `now`: `None` if it is closed or none of its clocks runs.
pub fn row(registry: &Registry, referral: &Referral, now: Timestamp) -> Option<Row> {
    if referral.status.is_terminal() {
        return None;
    }
    let mut clocks: Vec<ClockLine> = views(registry, referral, now)
        .into_iter()
        .filter(|(view, _)| matches!(view.phase, Phase::Running | Phase::Paused))
        .map(|(view, policy)| clock_line(referral, view, &policy))
        .collect();
    clocks.sort_by_key(|line| {
        (
            line.view.deadline.map_or(i64::MAX, Timestamp::as_millis),
            line.view.clock.to_string(),
        )
    });
    let shown = clocks.first()?.clone();
    let state = clocks
        .iter()
        .map(|line| line.state)
        .max()
        .unwrap_or(RowState::OnTrack);
    let creation = &referral.creation;
    Some(Row {
        id: referral.id,
        sender: creation.sender.clone(),
        recipient: creation.recipient.clone(),
        service: creation.service.clone(),
        priority: creation.priority,
        categories: creation
            .categories
            .iter()
            .map(ToString::to_string)
            .collect(),
        status: referral.status,
        state,
        clock: shown,
        clocks,
    })
}

fn clock_line(referral: &Referral, view: ClockView, policy: &ClockPolicy) -> ClockLine {
    let marks: Vec<_> = referral
        .marks
        .iter()
        .filter(|mark| mark.clock == view.clock)
        .collect();
    let level = marks
        .iter()
        .filter_map(|mark| match mark.mark {
            Mark::Escalation { level, .. } => Some(level),
            _ => None,
        })
        .max();
    let acknowledged = referral.is_acknowledged(&view.clock);
    let mut notified: Vec<AgencyId> = marks
        .iter()
        .flat_map(|mark| mark.notified.iter().cloned())
        .collect();
    notified.sort();
    notified.dedup();
    let levels = marks
        .iter()
        .filter_map(|mark| match mark.mark {
            Mark::Escalation { level, .. } => Some((level, mark.notified.clone())),
            _ => None,
        })
        .collect();
    // At risk: past a warning point of the clock, from the clock view's own elapsed time (or a
    // warning the router already recorded).
    let past_warning = policy
        .warnings
        .iter()
        .any(|&permille| view.elapsed >= fraction(view.target, permille))
        || marks
            .iter()
            .any(|mark| matches!(mark.mark, Mark::Warning { .. }));
    let state = if level.is_some() && !acknowledged {
        RowState::Escalated
    } else if view.breached {
        RowState::Breached
    } else if past_warning {
        RowState::AtRisk
    } else {
        RowState::OnTrack
    };
    ClockLine {
        responsible: responsible(referral, policy).clone(),
        view,
        state,
        level,
        acknowledged,
        notified,
        levels,
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
        assert!(projection.apply(3, "subject", referral.clone()));
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
        assert_eq!(row.clock.view.clock.as_str(), "acknowledge_emergency");
        assert_eq!(
            row.clock.view.deadline,
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
        let row = row(&registry, &referral, later).unwrap();
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
            super::row(&registry, &referral, later).unwrap().state,
            RowState::Breached
        );
    }

    #[test]
    fn heads_see_their_agencies_referrals_and_those_they_were_notified_of() {
        let registry = registry();
        let mut referral = created(&registry, "r1", Priority::Emergency);
        let mut projection = Projection::new(registry.clone());
        projection.apply(1, "s", referral.clone());
        let now = at(T0);
        let filters = Filters::default();
        assert_eq!(
            projection
                .board(&viewer("maros-uptd-ppa", Role::Head), &filters, now)
                .len(),
            1
        );
        assert_eq!(
            projection
                .board(&viewer("maros-dinsos", Role::Supervisor), &filters, now)
                .len(),
            1
        );
        let dp3a = viewer("maros-dp3a", Role::Head);
        assert!(projection.board(&dp3a, &filters, now).is_empty());
        assert!(projection.row(&referral.id, &dp3a, now).is_none());
        referral.marks.push(ClockMark {
            clock: ClockId::new("acknowledge_emergency").unwrap(),
            mark: Mark::Escalation {
                level: 1,
                repetition: 0,
            },
            notified: vec![agency("maros-dp3a")],
        });
        projection.apply(2, "s", referral);
        assert_eq!(projection.board(&dp3a, &filters, now).len(), 1);
    }

    #[test]
    fn an_older_record_never_replaces_a_newer_one() {
        let registry = registry();
        let referral = created(&registry, "r1", Priority::Emergency);
        let mut projection = Projection::new(registry);
        assert!(projection.apply(5, "s", referral.clone()));
        let version = projection.version();
        assert!(!projection.apply(4, "s", referral.clone()));
        assert!(!projection.apply(5, "s", referral));
        assert_eq!(projection.version(), version);
    }

    #[test]
    fn filters_select_and_rows_sort_by_time_to_breach() {
        let registry = registry();
        let emergency = created(&registry, "r1", Priority::Emergency);
        let urgent = created(&registry, "r2", Priority::Urgent);
        let mut projection = Projection::new(registry);
        projection.apply(1, "a", urgent.clone());
        projection.apply(2, "b", emergency.clone());
        let coordinator = viewer("maros-bappeda", Role::Coordinator);
        let now = at(T0).plus(Duration::from_secs(70));
        let all = projection.board(&coordinator, &Filters::default(), now);
        // The emergency clock (2 minutes) breaches before the urgent one (4 minutes).
        assert_eq!(
            all.iter().map(|row| row.id).collect::<Vec<_>>(),
            vec![emergency.id, urgent.id]
        );
        let only = |filters: Filters| {
            projection
                .board(&coordinator, &filters, now)
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
    fn the_cheap_check_before_the_clock_views_agrees_with_the_row_filter() {
        let registry = registry();
        let emergency = created(&registry, "r1", Priority::Emergency);
        let urgent = created(&registry, "r2", Priority::Urgent);
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
        ];
        let mut passed = 0;
        for filters in &filters {
            for referral in [&emergency, &urgent] {
                let row = row(&registry, referral, now).unwrap();
                assert_eq!(
                    filters.may_match(referral),
                    filters.matches(&row),
                    "{filters:?} on {:?}",
                    referral.creation.priority
                );
                passed += usize::from(filters.may_match(referral));
            }
        }
        // Both outcomes occur: the check is not trivially true or false.
        assert_eq!(passed, 6);
    }

    #[test]
    fn an_agencys_load_counts_its_open_waiting_risky_and_breached_referrals() {
        let registry = registry();
        let emergency = created(&registry, "r1", Priority::Emergency);
        let urgent = created(&registry, "r2", Priority::Urgent);
        let mut projection = Projection::new(registry);
        projection.apply(1, "a", urgent);
        projection.apply(2, "b", emergency);
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
}
