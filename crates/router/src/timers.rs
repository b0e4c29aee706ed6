//! The timer table: for every open referral with a pending clock item, when to look at it next.
//!
//! Kept in memory and rebuilt at start from the referrals' current states (the last message of
//! each referral carries its state): a deadline is always recomputable from the events alone.
//! A copy is written now and then as a snapshot ([`crate::snapshot`]) only to make restarts
//! faster.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use refbus_core::{ReferralId, Timestamp};

/// Why and where to look at a referral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) wake: Timestamp,
    /// The referral's subject on the bus (shared: a snapshot copies it without allocating).
    pub(crate) subject: Arc<str>,
    /// The stream sequence of the state this wake-up was computed from: an answer computed from
    /// an older state never replaces one computed from a newer state.
    pub(crate) seq: u64,
}

/// Referrals by next wake-up.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    by_time: BTreeSet<(Timestamp, ReferralId)>,
    entries: HashMap<ReferralId, Entry>,
}

impl Timers {
    /// Sets (or clears, with `None`) the wake-up of `referral`, as computed from its state at
    /// stream sequence `seq`. Ignored if a newer state already set it.
    pub(crate) fn set(
        &mut self,
        referral: ReferralId,
        subject: &str,
        seq: u64,
        wake: Option<Timestamp>,
    ) {
        if let Some(existing) = self.entries.get(&referral) {
            if existing.seq > seq {
                return;
            }
            self.by_time.remove(&(existing.wake, referral));
        }
        match wake {
            Some(wake) => {
                self.by_time.insert((wake, referral));
                self.entries.insert(
                    referral,
                    Entry {
                        wake,
                        subject: subject.into(),
                        seq,
                    },
                );
            }
            None => {
                self.entries.remove(&referral);
            }
        }
    }

    pub(crate) fn next_wake(&self) -> Option<Timestamp> {
        self.by_time.first().map(|(wake, _)| *wake)
    }

    /// Takes every referral due at or before `now`, earliest first, at most `limit` of them.
    pub(crate) fn take_due(&mut self, now: Timestamp, limit: usize) -> Vec<(ReferralId, Entry)> {
        let mut due = Vec::new();
        while due.len() < limit {
            let Some(&(wake, referral)) = self.by_time.first() else {
                break;
            };
            if wake > now {
                break;
            }
            self.by_time.pop_first();
            if let Some(entry) = self.entries.remove(&referral) {
                due.push((referral, entry));
            }
        }
        due
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Keeps only the referrals `keep` accepts (a partition given up drops its own).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&ReferralId) -> bool) {
        self.entries.retain(|referral, _| keep(referral));
        self.by_time.retain(|(_, referral)| keep(referral));
    }

    /// Every referral's wake-up, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ReferralId, &Entry)> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ReferralId {
        ReferralId::from_bytes([n; 16])
    }

    fn at(millis: i64) -> Timestamp {
        Timestamp::from_millis(millis)
    }

    #[test]
    fn due_referrals_come_out_earliest_first_once() {
        let mut timers = Timers::default();
        timers.set(id(1), "s1", 1, Some(at(300)));
        timers.set(id(2), "s2", 1, Some(at(100)));
        timers.set(id(3), "s3", 1, Some(at(200)));
        assert_eq!(timers.next_wake(), Some(at(100)));
        let due: Vec<_> = timers
            .take_due(at(250), 10)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(due, vec![id(2), id(3)]);
        assert!(timers.take_due(at(250), 10).is_empty());
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn an_older_state_never_overrides_a_newer_one() {
        let mut timers = Timers::default();
        timers.set(id(1), "s", 10, Some(at(500)));
        timers.set(id(1), "s", 9, Some(at(100)));
        assert_eq!(timers.next_wake(), Some(at(500)));
        timers.set(id(1), "s", 11, None);
        assert_eq!(timers.next_wake(), None);
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn taking_respects_the_limit() {
        let mut timers = Timers::default();
        for n in 0..10 {
            timers.set(id(n), "s", 1, Some(at(i64::from(n))));
        }
        assert_eq!(timers.take_due(at(100), 4).len(), 4);
        assert_eq!(timers.len(), 6);
    }
}
