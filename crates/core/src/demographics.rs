//! Statistical metadata about the person served: sex and age band, in the clear.
//!
//! Planners (Bappeda, DP3A) need gender- and child-disaggregated figures (PUG, Inpres 9/2000;
//! KLA). The identity, birth date included, stays sealed for the two parties; only these two
//! coarse values are recorded on the referral, so the router, the dashboard and auditors can
//! count without ever seeing who the person is. Both default to unknown, which is what
//! referrals recorded before they existed decode as (absent fields, so their bytes, hashes and
//! signatures are unchanged).

use std::fmt;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

/// The person's sex as recorded on the identity card or birth certificate.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    #[default]
    Unknown,
    Female,
    Male,
}

impl Sex {
    pub const ALL: [Sex; 3] = [Sex::Female, Sex::Male, Sex::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            Sex::Unknown => "unknown",
            Sex::Female => "female",
            Sex::Male => "male",
        }
    }

    pub fn parse(text: &str) -> Option<Sex> {
        Sex::ALL.into_iter().find(|sex| sex.as_str() == text)
    }

    pub fn is_unknown(&self) -> bool {
        *self == Sex::Unknown
    }
}

impl fmt::Display for Sex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The person's age in bands: the three child bands follow school ages (balita/pre-school,
/// primary, secondary) and end at 18, the age of a child in UU 35/2014; the adult bands are
/// youth (18-24), working age (25-59) and elderly (60+, UU 13/1998).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub enum AgeBand {
    #[serde(rename = "0-5")]
    From0To5,
    #[serde(rename = "6-12")]
    From6To12,
    #[serde(rename = "13-17")]
    From13To17,
    #[serde(rename = "18-24")]
    From18To24,
    #[serde(rename = "25-59")]
    From25To59,
    #[serde(rename = "60+")]
    From60,
    #[default]
    #[serde(rename = "unknown")]
    Unknown,
}

impl AgeBand {
    /// Every band, youngest first, unknown last (the order of tables and charts).
    pub const ALL: [AgeBand; 7] = [
        AgeBand::From0To5,
        AgeBand::From6To12,
        AgeBand::From13To17,
        AgeBand::From18To24,
        AgeBand::From25To59,
        AgeBand::From60,
        AgeBand::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgeBand::From0To5 => "0-5",
            AgeBand::From6To12 => "6-12",
            AgeBand::From13To17 => "13-17",
            AgeBand::From18To24 => "18-24",
            AgeBand::From25To59 => "25-59",
            AgeBand::From60 => "60+",
            AgeBand::Unknown => "unknown",
        }
    }

    pub fn parse(text: &str) -> Option<AgeBand> {
        AgeBand::ALL.into_iter().find(|band| band.as_str() == text)
    }

    pub fn is_unknown(&self) -> bool {
        *self == AgeBand::Unknown
    }

    /// The band of an age in whole years.
    pub fn of_age(years: u32) -> AgeBand {
        match years {
            0..=5 => AgeBand::From0To5,
            6..=12 => AgeBand::From6To12,
            13..=17 => AgeBand::From13To17,
            18..=24 => AgeBand::From18To24,
            25..=59 => AgeBand::From25To59,
            _ => AgeBand::From60,
        }
    }

    /// The band of a person born on `birth`, on `day`; `None` when `birth` is after `day` (a
    /// birth date in the future is a mistake, not an age).
    pub fn on(birth: NaiveDate, day: NaiveDate) -> Option<AgeBand> {
        let mut years = day.year() - birth.year();
        if (day.month(), day.day()) < (birth.month(), birth.day()) {
            years -= 1;
        }
        u32::try_from(years).ok().map(AgeBand::of_age)
    }

    /// Whether the band is a child's (under 18); `None` when unknown.
    pub fn is_child(self) -> Option<bool> {
        match self {
            AgeBand::From0To5 | AgeBand::From6To12 | AgeBand::From13To17 => Some(true),
            AgeBand::From18To24 | AgeBand::From25To59 | AgeBand::From60 => Some(false),
            AgeBand::Unknown => None,
        }
    }
}

impl fmt::Display for AgeBand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn bands_change_on_the_birthday_not_the_day_before() {
        let birth = date("2008-06-15");
        assert_eq!(
            AgeBand::on(birth, date("2026-06-14")),
            Some(AgeBand::From13To17)
        );
        assert_eq!(
            AgeBand::on(birth, date("2026-06-15")),
            Some(AgeBand::From18To24)
        );
        assert_eq!(
            AgeBand::on(date("2026-06-15"), date("2026-06-15")),
            Some(AgeBand::From0To5)
        );
        assert_eq!(AgeBand::on(date("2026-06-16"), date("2026-06-15")), None);
    }

    #[test]
    fn every_age_has_one_band_at_the_edges() {
        let edges = [
            (5, AgeBand::From0To5),
            (6, AgeBand::From6To12),
            (12, AgeBand::From6To12),
            (13, AgeBand::From13To17),
            (17, AgeBand::From13To17),
            (18, AgeBand::From18To24),
            (24, AgeBand::From18To24),
            (25, AgeBand::From25To59),
            (59, AgeBand::From25To59),
            (60, AgeBand::From60),
            (104, AgeBand::From60),
        ];
        for (age, band) in edges {
            assert_eq!(AgeBand::of_age(age), band, "{age}");
        }
    }

    #[test]
    fn names_round_trip_and_unknown_is_the_default() {
        for band in AgeBand::ALL {
            assert_eq!(AgeBand::parse(band.as_str()), Some(band));
            let json = serde_json::to_string(&band).unwrap();
            assert_eq!(json, format!("\"{band}\""));
        }
        for sex in Sex::ALL {
            assert_eq!(Sex::parse(sex.as_str()), Some(sex));
        }
        assert_eq!(AgeBand::default(), AgeBand::Unknown);
        assert_eq!(Sex::default(), Sex::Unknown);
    }
}
