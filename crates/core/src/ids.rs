//! Identifiers: agencies, services, referrals, cases, operators, requests.
//!
//! Identifiers end up in NATS subjects, file names and log lines, so each type admits only the
//! characters that are safe in all three; a value that exists is always valid.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Why a text is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a valid {kind}: {rule}")]
pub struct IdError {
    pub kind: &'static str,
    pub input: String,
    pub rule: &'static str,
}

/// Slugs: lower-case ASCII letters and digits in groups joined by single `-` or `_`.
fn check_slug(kind: &'static str, text: &str) -> Result<(), IdError> {
    const RULE: &str = "use 1 to 48 lower-case letters, digits, '-' or '_', starting with a letter \
                        or digit (e.g. maros-dinsos)";
    let valid = !text.is_empty()
        && text.len() <= 48
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && text.as_bytes()[0].is_ascii_alphanumeric()
        && !text.ends_with(['-', '_']);
    if valid {
        Ok(())
    } else {
        Err(IdError {
            kind,
            input: text.to_owned(),
            rule: RULE,
        })
    }
}

/// Printable ASCII without spaces, for values chosen by agency systems: `max` characters at
/// most, as `rule` (the sentence the caller is shown) says.
fn check_token(
    kind: &'static str,
    text: &str,
    max: usize,
    rule: &'static str,
) -> Result<(), IdError> {
    if !text.is_empty() && text.len() <= max && text.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(IdError {
            kind,
            input: text.to_owned(),
            rule,
        })
    }
}

/// The rule of a token of at most `$max` characters; one literal, so the limit it states is
/// the limit checked.
macro_rules! token_rule {
    ($kind:literal, $max:literal) => {
        |text| {
            check_token(
                $kind,
                text,
                $max,
                concat!(
                    "use 1 to ",
                    $max,
                    " printable ASCII characters without spaces"
                ),
            )
        }
    };
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn new(text: impl Into<String>) -> Result<Self, IdError> {
                let text = text.into();
                let check: fn(&str) -> Result<(), IdError> = $check;
                check(&text)?;
                Ok($name(text))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub const KIND: &'static str = $kind;
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;

            fn from_str(text: &str) -> Result<Self, IdError> {
                $name::new(text)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                $name::new(text).map_err(serde::de::Error::custom)
            }
        }
    };
}

text_id!(
    /// An agency (OPD) taking part in the bus, e.g. `maros-dinsos`, `polres-maros`.
    AgencyId, "agency id", |text| check_slug("agency id", text)
);
text_id!(
    /// A service an agency offers, e.g. `shelter`, `police_report`, `legal_aid`.
    ServiceId, "service id", |text| check_slug("service id", text)
);
text_id!(
    /// A case category that policies can key on, e.g. `sexual_violence`, `child_abuse`.
    CategoryId, "category id", |text| check_slug("category id", text)
);
text_id!(
    /// A coded reason for a rejection, failure, hold or cancellation, e.g. `no_capacity`.
    ReasonCode, "reason code", |text| check_slug("reason code", text)
);
text_id!(
    /// A coded outcome for a completed referral, e.g. `service_provided`.
    OutcomeCode, "outcome code", |text| check_slug("outcome code", text)
);
text_id!(
    /// A clock definition, e.g. `acknowledge`, `tpks_pasal_41`.
    ClockId, "clock id", |text| check_slug("clock id", text)
);
text_id!(
    /// An escalation policy, e.g. `standard`, `statutory`.
    EscalationPolicyId, "escalation policy id", |text| check_slug("escalation policy id", text)
);
text_id!(
    /// A version of the clock and escalation policies, e.g. `2026-01`.
    PolicyVersion, "policy version", token_rule!("policy version", 48)
);
text_id!(
    /// The case a referral belongs to: an opaque case code chosen by the sending agency.
    /// It must never be a person's name or NIK; it is metadata every party can see, so a case id
    /// shaped like a NIK is refused (see [`looks_like_nik`]).
    CaseId, "case id", |text| {
        token_rule!("case id", 64)(text)?;
        if looks_like_nik(text) {
            return Err(IdError {
                kind: "case id",
                // The value is withheld: it may be a person's NIK, and errors are shown and logged.
                input: "(withheld)".to_owned(),
                rule: "it looks like a NIK (16 digits in a row, not counting '-', '.', '/', '_'): \
                       a case id is metadata every party and auditor sees; use the agency's own \
                       case code, never a person's identity number",
            });
        }
        Ok(())
    }
);

/// The length of a NIK (Nomor Induk Kependudukan), in digits.
pub const NIK_DIGITS: usize = 16;

/// Whether `text` holds something shaped like a NIK: [`NIK_DIGITS`] digits or more in a row,
/// once the separators people type inside numbers (`-`, `.`, `/`, `_`) are left out. A real
/// case code (`UPTD-2026-019`) never has that many; a NIK pasted into the field always does.
pub fn looks_like_nik(text: &str) -> bool {
    let mut run = 0;
    for byte in text.bytes() {
        match byte {
            b'0'..=b'9' => {
                run += 1;
                if run >= NIK_DIGITS {
                    return true;
                }
            }
            b'-' | b'.' | b'/' | b'_' => {}
            _ => run = 0,
        }
    }
    false
}
text_id!(
    /// An agency's IT system (e.g. `sikasus`, `simpus`), as its client certificate names it
    /// (`refbus://<agency>/<system>`): which machine acted, where the operator says who.
    SystemId, "system id", |text| check_slug("system id", text)
);
text_id!(
    /// The person who acted, as the agency's system identifies them (user name, NIP).
    OperatorId, "operator id", token_rule!("operator id", 128)
);
text_id!(
    /// The client's idempotency key: a retry with the same key has the same effect as the first.
    RequestId, "request id", token_rule!("request id", 128)
);

/// A referral: 128 bits, written as 26 Crockford base-32 characters.
///
/// A referral id is derived from the sender and the request id that created it, so a retried
/// create can never produce a second referral, even long after the bus's dedupe window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReferralId([u8; 16]);

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

impl ReferralId {
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        ReferralId(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Its 26 characters (what [`fmt::Display`] writes), without allocating: for hot paths
    /// such as a router's partition of every timer it holds.
    pub fn text(&self) -> [u8; 26] {
        let mut value = u128::from_be_bytes(self.0);
        let mut text = [0u8; 26];
        for slot in text.iter_mut().rev() {
            *slot = CROCKFORD[(value & 0x1f) as usize];
            value >>= 5;
        }
        text
    }

    /// The id of the referral that `sender` creates with `request`.
    pub fn derive(sender: &AgencyId, request: &RequestId) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"refbus/referral-id/v1\0");
        hasher.update(sender.as_str().as_bytes());
        hasher.update(b"\0");
        hasher.update(request.as_str().as_bytes());
        let digest = hasher.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        ReferralId(bytes)
    }

    pub fn parse(text: &str) -> Result<Self, IdError> {
        let error = || IdError {
            kind: "referral id",
            input: text.to_owned(),
            rule: "use the 26 characters refbus gave the referral (0-9, A-Z without I, L, O, U)",
        };
        if text.len() != 26 {
            return Err(error());
        }
        let mut value: u128 = 0;
        for (index, byte) in text.bytes().enumerate() {
            let digit = CROCKFORD
                .iter()
                .position(|&c| c == byte.to_ascii_uppercase())
                .ok_or_else(error)? as u128;
            // 26 digits carry 130 bits; the first digit carries only the top 3 of the 128.
            if index == 0 && digit > 0b111 {
                return Err(error());
            }
            value = (value << 5) | digit;
        }
        Ok(ReferralId(value.to_be_bytes()))
    }
}

impl fmt::Display for ReferralId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.text()).map_err(|_| fmt::Error)?)
    }
}

impl std::str::FromStr for ReferralId {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, IdError> {
        ReferralId::parse(text)
    }
}

impl Serialize for ReferralId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ReferralId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ReferralId::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_ids_shaped_like_a_nik_are_refused_without_echoing_them() {
        for nik_like in [
            "7309014506900001",
            "KASUS-7309014506900001",
            "7309-0145-0690-0001",
            "73.09.01.450690.0001",
            "73090145069000012",
        ] {
            let error = CaseId::new(nik_like).unwrap_err();
            assert!(error.rule.contains("NIK"), "{nik_like}: {error}");
            assert!(!error.to_string().contains("0001"), "{error}");
        }
        for case in [
            "UPTD-2026-019",
            "BTA-2026-007",
            "730901450690001",
            "2026-11-30-019",
        ] {
            assert!(CaseId::new(case).is_ok(), "{case}");
        }
        // Letters break a run; separators do not.
        assert!(!looks_like_nik("12345678x12345678"));
        assert!(looks_like_nik("1234-5678-1234-5678"));
    }

    #[test]
    fn slugs_are_subject_safe() {
        assert!(AgencyId::new("maros-dinsos").is_ok());
        assert!(AgencyId::new("polres_maros").is_ok());
        for bad in [
            "",
            "Maros",
            "maros.dinsos",
            "maros dinsos",
            "maros-*",
            "-maros",
            "maros-",
            ">",
        ] {
            assert!(AgencyId::new(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn referral_ids_round_trip_and_are_derived_deterministically() {
        let sender = AgencyId::new("maros-dinsos").unwrap();
        let first = ReferralId::derive(&sender, &RequestId::new("req-1").unwrap());
        let again = ReferralId::derive(&sender, &RequestId::new("req-1").unwrap());
        let other = ReferralId::derive(&sender, &RequestId::new("req-2").unwrap());
        assert_eq!(first, again);
        assert_ne!(first, other);
        let text = first.to_string();
        assert_eq!(text.len(), 26);
        assert_eq!(ReferralId::parse(&text).unwrap(), first);
        assert_eq!(ReferralId::parse(&text.to_lowercase()).unwrap(), first);
    }

    #[test]
    fn referral_id_parse_refuses_wrong_text() {
        assert!(ReferralId::parse("short").is_err());
        assert!(ReferralId::parse("ZZZZZZZZZZZZZZZZZZZZZZZZZZ").is_err());
        assert!(ReferralId::parse("0000000000000000000000000U").is_err());
        assert_eq!(
            ReferralId::parse("7ZZZZZZZZZZZZZZZZZZZZZZZZZ").unwrap(),
            ReferralId::from_bytes([0xff; 16])
        );
    }
}
