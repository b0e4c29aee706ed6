//! The contexts payloads are sealed in: the associated data every adapter must build alike.

use refbus_core::ReferralId;

/// What a sealed payload belongs to. Its [`aad`](Context::aad) is bound into the payload, so a
/// payload cut from one referral and pasted into another, or an identity passed off as a note,
/// does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context<'a> {
    /// The identity of the person a referral serves.
    Identity(&'a ReferralId),
    /// A free-text note on a referral: at creation, or with a reason or an outcome.
    Note(&'a ReferralId),
}

impl Context<'_> {
    /// `refbus/v1/identity/<referral id>` or `refbus/v1/note/<referral id>`, in ASCII.
    pub fn aad(&self) -> Vec<u8> {
        let (purpose, referral) = match self {
            Context::Identity(referral) => ("identity", referral),
            Context::Note(referral) => ("note", referral),
        };
        format!("refbus/v1/{purpose}/{referral}").into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aads_name_the_purpose_and_the_referral() {
        let referral = ReferralId::from_bytes([0; 16]);
        assert_eq!(
            Context::Identity(&referral).aad(),
            b"refbus/v1/identity/00000000000000000000000000"
        );
        assert_eq!(
            Context::Note(&referral).aad(),
            b"refbus/v1/note/00000000000000000000000000"
        );
    }
}
