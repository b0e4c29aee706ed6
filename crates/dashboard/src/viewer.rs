//! Who is looking at the board, and what they may see: the [`Viewer`] is the operator the login
//! (refbus-operators) put in the request's extensions, with that crate's one access rule.
//!
//! The dashboard does not authenticate anyone itself. A request without a viewer is refused
//! (500 from axum's missing-extension rejection), never served as somebody.

use refbus_core::AgencyId;
use refbus_operators::accounts::Username;
pub use refbus_operators::{Operator as Viewer, Role};

/// Parses `AGENCY:ROLE` (e.g. `maros-bappeda:coordinator`) into a viewer named `username`: for
/// tests, which serve several viewers from one dashboard without logging in.
pub fn parse_test_viewer(text: &str, username: &str) -> Result<Viewer, String> {
    let (agency, role) = text
        .split_once(':')
        .ok_or_else(|| format!("expected AGENCY:ROLE, got {text:?}"))?;
    Ok(Viewer {
        username: Username::new(username).map_err(|err| err.to_string())?,
        agency: AgencyId::new(agency).map_err(|err| err.to_string())?,
        role: role
            .parse()
            .map_err(|err: refbus_operators::accounts::UnknownRole| err.to_string())?,
    })
}
