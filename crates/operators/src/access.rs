//! Who may see and do what: the logged-in [`Operator`] and the pure access decisions the
//! dashboard asks before it shows a referral or acts on one. No I/O, no clock.

use refbus_core::ids::OperatorId;
use refbus_core::{AgencyId, Referral};

use crate::accounts::{Role, Username};

/// The operator a request is made by, as [`crate::OperatorsLayer`] puts it in the request's
/// extensions (`Extension<Operator>` in a handler). Her agency and role are the accounts file's
/// at the time of the request, so removing or changing an account takes effect at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub username: Username,
    pub agency: AgencyId,
    pub role: Role,
}

/// The agencies that have a part in a referral: its two parties and every agency an escalation
/// of it notified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parties<'a> {
    pub sender: &'a AgencyId,
    pub recipient: &'a AgencyId,
    pub notified: Vec<&'a AgencyId>,
}

impl<'a> Parties<'a> {
    /// The parties of a referral's current state, notified agencies from its escalation marks.
    pub fn of(referral: &'a Referral) -> Parties<'a> {
        let mut notified: Vec<&AgencyId> = referral
            .marks
            .iter()
            .flat_map(|mark| mark.notified.iter())
            .collect();
        notified.sort();
        notified.dedup();
        Parties {
            sender: referral.sender(),
            recipient: referral.recipient(),
            notified,
        }
    }

    fn includes(&self, agency: &AgencyId) -> bool {
        self.sender == agency || self.recipient == agency || self.notified.contains(&agency)
    }
}

/// Why an operator may not act on an escalation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// She may not even see the referral: answer 403 and show nothing of it.
    Unseen,
    /// A viewer sees but never acts.
    ViewerCannotAct,
    /// The escalation was not addressed to her agency.
    NotAddressedToHerAgency,
}

impl Operator {
    /// The operator as events record her.
    pub fn operator_id(&self) -> OperatorId {
        self.username.operator_id()
    }

    /// Whether she sees every agency's referrals (the coordinator).
    pub fn sees_everything(&self) -> bool {
        self.role == Role::Coordinator
    }

    /// [`Operator::may_see`] for a referral's current state.
    pub fn may_see_referral(&self, referral: &Referral) -> bool {
        self.may_see(&Parties::of(referral))
    }

    /// Whether she may see the referral: the coordinator sees every agency's; anyone else
    /// (head, supervisor, viewer) sees those where her agency is a party or was notified.
    pub fn may_see(&self, parties: &Parties<'_>) -> bool {
        match self.role {
            Role::Coordinator => true,
            Role::Head | Role::Supervisor | Role::Viewer => parties.includes(&self.agency),
        }
    }

    /// Whether she may acknowledge an escalation of the referral that notified
    /// `escalation_notified`: never a viewer; anyone else (the coordinator included) only when
    /// the escalation was addressed to her agency, which is also what the core will demand of
    /// the acknowledgement recorded as her agency.
    pub fn may_acknowledge(
        &self,
        parties: &Parties<'_>,
        escalation_notified: &[AgencyId],
    ) -> Result<(), Refusal> {
        if !self.may_see(parties) {
            return Err(Refusal::Unseen);
        }
        if self.role == Role::Viewer {
            return Err(Refusal::ViewerCannotAct);
        }
        if !escalation_notified.contains(&self.agency) {
            return Err(Refusal::NotAddressedToHerAgency);
        }
        Ok(())
    }

    /// Whether she may act at all (show action buttons): every role but viewer.
    pub fn may_act(&self) -> bool {
        self.role.may_act()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agency(id: &str) -> AgencyId {
        AgencyId::new(id).unwrap()
    }

    fn operator(agency_id: &str, role: Role) -> Operator {
        Operator {
            username: Username::new("op").unwrap(),
            agency: agency(agency_id),
            role,
        }
    }

    struct Referral {
        sender: AgencyId,
        recipient: AgencyId,
        notified: Vec<AgencyId>,
    }

    impl Referral {
        fn parties(&self) -> Parties<'_> {
            Parties {
                sender: &self.sender,
                recipient: &self.recipient,
                notified: self.notified.iter().collect(),
            }
        }
    }

    fn referral() -> Referral {
        Referral {
            sender: agency("maros-dinsos"),
            recipient: agency("maros-dp3a"),
            notified: vec![agency("polres-maros"), agency("maros-tim-terpadu")],
        }
    }

    /// A referral's state as the bus stores it: sent by Dinsos to DP3A, one escalation of its
    /// acknowledge clock notified Polres and the coordinator, a warning notified nobody.
    fn stored_state() -> refbus_core::Referral {
        serde_json::from_value(serde_json::json!({
            "id": "01JDX3M5B7C9D1E3F5G7H9J1K3",
            "creation": {
                "case_id": "case-1",
                "sender": "maros-dinsos",
                "recipient": "maros-dp3a",
                "service": "shelter",
                "priority": "urgent",
                "child": false,
                "consent": {"services": true, "disclose_to_agencies": true},
                "policy_version": "2026-01"
            },
            "status": "requested",
            "created_at": "2026-11-30T01:00:00Z",
            "updated_at": "2026-11-30T01:00:00Z",
            "seq": 3,
            "last_hash": "00".repeat(32),
            "steps": [],
            "marks": [
                {"clock": "acknowledge", "kind": "warning", "permille": 500},
                {"clock": "acknowledge", "kind": "escalation", "level": 1, "repetition": 0,
                 "notified": ["polres-maros", "maros-bappeda"]},
                {"clock": "shelter_start", "kind": "escalation", "level": 1, "repetition": 0,
                 "notified": ["maros-bappeda"]}
            ]
        }))
        .expect("a stored state")
    }

    #[test]
    fn the_parties_of_a_stored_state_include_every_notified_agency_once() {
        let state = stored_state();
        let parties = Parties::of(&state);
        assert_eq!(parties.sender.as_str(), "maros-dinsos");
        assert_eq!(parties.recipient.as_str(), "maros-dp3a");
        let notified: Vec<&str> = parties.notified.iter().map(|a| a.as_str()).collect();
        assert_eq!(notified, ["maros-bappeda", "polres-maros"]);
        assert!(operator("polres-maros", Role::Viewer).may_see_referral(&state));
        assert!(!operator("maros-rsud", Role::Head).may_see_referral(&state));
    }

    #[test]
    fn the_coordinator_sees_every_referral() {
        let other = Referral {
            sender: agency("a"),
            recipient: agency("b"),
            notified: vec![],
        };
        assert!(operator("maros-tim-terpadu", Role::Coordinator).may_see(&other.parties()));
    }

    #[test]
    fn others_see_referrals_their_agency_is_a_party_to_or_was_notified_of() {
        let referral = referral();
        for role in [Role::Head, Role::Supervisor, Role::Viewer] {
            for seen in ["maros-dinsos", "maros-dp3a", "polres-maros"] {
                assert!(
                    operator(seen, role).may_see(&referral.parties()),
                    "{seen} {role}"
                );
            }
            assert!(!operator("maros-bagian-hukum", role).may_see(&referral.parties()));
        }
    }

    #[test]
    fn a_viewer_never_acts() {
        let referral = referral();
        let notified = [agency("maros-dp3a")];
        let viewer = operator("maros-dp3a", Role::Viewer);
        assert!(!viewer.may_act());
        assert_eq!(
            viewer.may_acknowledge(&referral.parties(), &notified),
            Err(Refusal::ViewerCannotAct)
        );
    }

    #[test]
    fn heads_and_supervisors_acknowledge_only_escalations_addressed_to_their_agency() {
        let referral = referral();
        let to_dp3a = [agency("maros-dp3a")];
        for role in [Role::Head, Role::Supervisor] {
            assert_eq!(
                operator("maros-dp3a", role).may_acknowledge(&referral.parties(), &to_dp3a),
                Ok(())
            );
            // A party, but the escalation was addressed to the other party.
            assert_eq!(
                operator("maros-dinsos", role).may_acknowledge(&referral.parties(), &to_dp3a),
                Err(Refusal::NotAddressedToHerAgency)
            );
            assert_eq!(
                operator("maros-bagian-hukum", role).may_acknowledge(&referral.parties(), &to_dp3a),
                Err(Refusal::Unseen)
            );
        }
    }

    #[test]
    fn the_coordinator_acknowledges_only_what_was_addressed_to_her_agency() {
        let referral = referral();
        let coordinator = operator("maros-tim-terpadu", Role::Coordinator);
        assert_eq!(
            coordinator.may_acknowledge(&referral.parties(), &[agency("maros-tim-terpadu")]),
            Ok(())
        );
        assert_eq!(
            coordinator.may_acknowledge(&referral.parties(), &[agency("maros-dp3a")]),
            Err(Refusal::NotAddressedToHerAgency)
        );
    }
}
