//! The registry: the agencies of a deployment, their services and working hours, and the
//! versioned clock and escalation policies. Parsed from TOML by the `config` crate.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::calendar::{Calendar, WorkingHours};
use crate::clock::{CalendarKind, ClockPolicy};
use crate::escalation::{EscalationPolicy, Role};
use crate::ids::{
    AgencyId, CategoryId, EscalationPolicyId, OutcomeCode, PolicyVersion, ReasonCode, ServiceId,
};
use crate::referral::{Party, Referral, Status};
use crate::time::Timestamp;

/// A person or desk an escalation can reach at an agency.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Contact {
    /// A title, not necessarily a name: "Kepala UPTD PPA".
    pub title: String,
    pub phone: Option<String>,
    pub email: Option<String>,
}

/// An agency (OPD or unit) on the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Agency {
    pub id: AgencyId,
    pub name: String,
    /// The kabupaten or kota (or province) the agency belongs to.
    pub region: String,
    pub working_hours: WorkingHours,
    pub services: Vec<ServiceId>,
    /// Where each service goes when this agency rejects or cannot act: service -> agency.
    pub alternates: BTreeMap<ServiceId, AgencyId>,
    /// Who escalations reach, by role.
    pub contacts: BTreeMap<Role, Contact>,
    /// The agency's X25519 public key for sealed payloads (base64), if it has one yet.
    pub public_key: Option<String>,
    /// The agency's backup X25519 public key (base64): its secret half is kept offline by the
    /// agency head, and everything sealed for the agency is wrapped for it too, so a lost
    /// online key loses nothing (`refbus keys recover`).
    pub backup_public_key: Option<String>,
    /// The agency's Ed25519 public keys its adapter signs records with (base64), current first
    /// (an earlier key stays listed while records signed with it are read).
    pub signing_keys: Vec<String>,
    /// The DER certificates of the CAs that issue this agency's systems their client
    /// certificates (`refbus://<agency>/<system>`); its adapter accepts only callers whose
    /// chain leads to one of them. Empty: no system of the agency can authenticate.
    pub client_cas: Vec<Vec<u8>>,
}

/// A service agencies offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub id: ServiceId,
    pub name: String,
}

/// A reroute the router asks for when a referral reaches a status (e.g. rejected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RerouteRule {
    pub on: Status,
    /// Services the rule applies to; empty for all.
    pub services: Vec<ServiceId>,
    /// How long the sender has to reroute by hand before the router does it.
    pub delay: Duration,
}

/// One version of the clock and escalation policies. A referral keeps the version that was in
/// force when it was created, for its whole life.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySet {
    pub version: PolicyVersion,
    pub effective_from: Timestamp,
    pub clocks: Vec<ClockPolicy>,
    pub escalations: BTreeMap<EscalationPolicyId, EscalationPolicy>,
    pub reroutes: Vec<RerouteRule>,
}

/// Everything the core needs to know about a deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Registry {
    pub agencies: BTreeMap<AgencyId, Agency>,
    pub services: BTreeMap<ServiceId, Service>,
    /// Category id -> description.
    pub categories: BTreeMap<CategoryId, String>,
    /// Reason code -> description.
    pub reasons: BTreeMap<ReasonCode, String>,
    /// Outcome code -> description.
    pub outcomes: BTreeMap<OutcomeCode, String>,
    /// The Tim Terpadu coordinator's agency.
    pub coordinator: AgencyId,
    /// The router's Ed25519 public signing keys (base64).
    pub router_signing_keys: Vec<String>,
    /// Policy versions, oldest first.
    pub policies: Vec<PolicySet>,
    /// The years the holiday list covers (one holiday file each): working-hours clocks that
    /// run into another year count its holidays as working days (see [`crate::coverage`]).
    pub holiday_years: BTreeSet<i32>,
}

impl Registry {
    pub fn agency(&self, id: &AgencyId) -> Option<&Agency> {
        self.agencies.get(id)
    }

    /// The policy version in force at `at`: the newest one effective by then.
    pub fn policy_in_force(&self, at: Timestamp) -> Option<&PolicySet> {
        self.policies
            .iter()
            .filter(|policy| policy.effective_from <= at)
            .max_by_key(|policy| policy.effective_from)
    }

    pub fn policy(&self, version: &PolicyVersion) -> Option<&PolicySet> {
        self.policies
            .iter()
            .find(|policy| &policy.version == version)
    }

    /// The calendar a clock of `kind` runs on, for the agency on `party`'s side of `referral`.
    pub fn calendar(&self, kind: CalendarKind, party: Party, referral: &Referral) -> Calendar<'_> {
        let agency = match party {
            Party::Sender => referral.sender(),
            Party::Recipient => referral.recipient(),
        };
        match (kind, self.agency(agency)) {
            (CalendarKind::WorkingHours, Some(agency)) => {
                Calendar::WorkingHours(&agency.working_hours)
            }
            // An agency removed from the registry keeps its referrals' clocks running 24x7
            // rather than stopping them: late is better than silent.
            _ => Calendar::WallClock,
        }
    }

    /// Where `agency` sends `service` when it cannot act, if it has said.
    pub fn alternate(&self, agency: &AgencyId, service: &ServiceId) -> Option<&AgencyId> {
        self.agency(agency)?.alternates.get(service)
    }
}
