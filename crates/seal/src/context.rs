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
    /// The written justification of a consent override, at creation.
    Justification(&'a ReferralId),
}

impl Context<'_> {
    /// `refbus/v1/identity/<referral id>`, `refbus/v1/note/<referral id>` or
    /// `refbus/v1/justification/<referral id>`, in ASCII: the payload's content is bound to it.
    pub fn aad(&self) -> Vec<u8> {
        let purpose = match self {
            Context::Identity(_) => "identity",
            Context::Note(_) => "note",
            Context::Justification(_) => "justification",
        };
        format!("refbus/v1/{purpose}/{}", self.referral()).into_bytes()
    }

    /// `refbus/v1/referral/<referral id>`: what a version 2 envelope's key wraps are bound to.
    /// The payloads one call seals for a referral share their wraps (one content key, see
    /// [`Batch`](crate::Batch)); each payload's content stays bound to its own [`aad`](Self::aad).
    pub fn wrap_aad(&self) -> Vec<u8> {
        format!("refbus/v1/referral/{}", self.referral()).into_bytes()
    }

    /// The referral the payload belongs to.
    pub fn referral(&self) -> &ReferralId {
        match self {
            Context::Identity(referral)
            | Context::Note(referral)
            | Context::Justification(referral) => referral,
        }
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
        assert_eq!(
            Context::Justification(&referral).wrap_aad(),
            b"refbus/v1/referral/00000000000000000000000000"
        );
    }
}
