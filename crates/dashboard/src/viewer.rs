//! Who is looking at the board, and what they may see.
//!
//! The dashboard does not authenticate anyone: whatever logs operators in (the operators crate,
//! or a development flag of `refbus dashboard`) puts a [`Viewer`] in each request's extensions,
//! and every handler reads it from there. A request without one is refused (500 from axum's
//! missing-extension rejection), never served as somebody.

use std::fmt;

use refbus_core::{AgencyId, Referral};

/// An operator's role on the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The Tim Terpadu coordinator: every agency of the deployment.
    Coordinator,
    /// An agency head: her agency's referrals, and those her agency was notified of.
    Head,
    /// A supervisor: as a head.
    Supervisor,
    /// Sees what a head of the agency sees and cannot act.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Coordinator,
        Role::Head,
        Role::Supervisor,
        Role::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Head => "head",
            Role::Supervisor => "supervisor",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }

    /// Whether the role may act (acknowledge an escalation) for its agency.
    pub fn may_act(self) -> bool {
        !matches!(self, Role::Viewer)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operator behind a request, as the login put it in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub username: String,
    pub agency: AgencyId,
    pub role: Role,
}

impl Viewer {
    /// Whether this viewer sees every agency's referrals.
    pub fn sees_everything(&self) -> bool {
        self.role == Role::Coordinator
    }

    /// Whether `referral` may be shown to this viewer: the coordinator sees all; anyone else
    /// only referrals their agency sent, received, or was notified of by an escalation.
    pub fn may_see(&self, referral: &Referral) -> bool {
        self.sees_everything()
            || referral.party_of(&self.agency).is_some()
            || referral
                .marks
                .iter()
                .any(|mark| mark.notified.contains(&self.agency))
    }

    /// Parses the development form `AGENCY:ROLE` (e.g. `maros-bappeda:coordinator`) into a
    /// viewer named `username`.
    pub fn parse_dev(text: &str, username: &str) -> Result<Viewer, String> {
        let (agency, role) = text
            .split_once(':')
            .ok_or_else(|| format!("expected AGENCY:ROLE, got {text:?}"))?;
        let agency = AgencyId::new(agency).map_err(|err| err.to_string())?;
        let role = Role::parse(role).ok_or_else(|| {
            format!("unknown role {role:?}: coordinator, head, supervisor or viewer")
        })?;
        Ok(Viewer {
            username: username.to_owned(),
            agency,
            role,
        })
    }
}
