//! CSRF protection: every request that may change something (any method but GET, HEAD,
//! OPTIONS) must carry the token of the identity it is made with, in the `csrf` form field or
//! the `x-csrf-token` header. The token is an HMAC-SHA256, under a key made at start, of the
//! session (or of the proxy-named operator): bound to it, unguessable without the key, nothing
//! stored. The layer checks it; a handler that declares [`CsrfChecked`] is refused if it is
//! ever mounted outside the layer.

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use hmac::{KeyInit, Mac};
use http::StatusCode;
use http::request::Parts;
use subtle::ConstantTimeEq;

/// The form field the token travels in.
pub const CSRF_FIELD: &str = "csrf";
/// The header the token travels in (for `fetch` from the page's own script).
pub const CSRF_HEADER: &str = "x-csrf-token";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

pub(crate) struct CsrfKey([u8; 32]);

impl CsrfKey {
    pub(crate) fn random() -> CsrfKey {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system provides randomness");
        CsrfKey(key)
    }

    /// The token of one identity (`session:<key hex>` or `proxy:<username>`).
    pub(crate) fn token(&self, binding: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"refbus.v1.dashboard-csrf\n");
        mac.update(binding.as_bytes());
        data_encoding::BASE64URL_NOPAD.encode(&mac.finalize().into_bytes())
    }
}

/// Compares a submitted token with the expected one in constant time.
pub(crate) fn same(expected: &str, submitted: &str) -> bool {
    expected.len() == submitted.len() && bool::from(expected.as_bytes().ct_eq(submitted.as_bytes()))
}

/// The CSRF token of the request's identity, for the page's forms:
/// `<input type="hidden" name="csrf" value="{{ csrf }}">` (and the `x-csrf-token` header of a
/// script's `fetch`). The layer puts it in every request's extensions beside the [`Operator`].
///
/// [`Operator`]: crate::Operator
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrfToken(pub(crate) String);

impl CsrfToken {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CsrfToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Proof, for a state-changing handler, that the layer checked this request's CSRF token; a
/// request that did not pass the check (a route mounted outside the layer) is refused with
/// 403.
#[derive(Debug, Clone, Copy)]
pub struct CsrfChecked(());

/// What the layer leaves in a request whose token it checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Verified;

impl<S: Send + Sync> FromRequestParts<S> for CsrfChecked {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if parts.extensions.get::<Verified>().is_some() {
            Ok(CsrfChecked(()))
        } else {
            Err(forbidden())
        }
    }
}

/// The refusal of a request without its identity's token: 403, and nothing done.
pub(crate) fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        "403: this form has expired or did not come from the dashboard (CSRF check failed); \
         reload the page and try again\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_their_identity_and_key() {
        let key = CsrfKey::random();
        let a = key.token("session:aa");
        assert_eq!(a, key.token("session:aa"));
        assert_ne!(a, key.token("session:ab"));
        assert_ne!(a, CsrfKey::random().token("session:aa"));
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &key.token("session:ab")));
        assert!(!same(&a, ""));
    }
}
