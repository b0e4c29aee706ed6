//! Finding a referral's entry in a vector by its id, without holding the id a second time.
//!
//! A dashboard keeps a record per referral (a board slot, an indicators summary) in a vector,
//! a million and more, each holding its referral's id. A `HashMap<ReferralId, u32>` beside it
//! would hold every id again: at a million (2^21 buckets once past 917,504 entries) 44 MB of
//! 20-byte entries. [`Places`] is a hash table of places alone (4 bytes each), hashed and
//! compared by the id the caller reads at each place. Hashed with the standard library's keyed
//! `RandomState`, not the id's own bytes: ids derive from what agencies send, and ids chosen to
//! collide would slow every lookup.

use std::hash::{BuildHasher, RandomState};

use crate::ids::ReferralId;

/// Places in the caller's vector, by the id of the referral at each. Every method takes
/// `id_at`, the id held at a place (`None` for an empty one), which must give every place the
/// table names its referral's id.
#[derive(Debug, Default)]
pub struct Places {
    table: hashbrown::HashTable<u32>,
    hasher: RandomState,
}

impl Places {
    /// The place of `id`.
    pub fn find(&self, id: &ReferralId, id_at: impl Fn(u32) -> Option<ReferralId>) -> Option<u32> {
        self.table
            .find(self.hasher.hash_one(id), |&at| id_at(at) == Some(*id))
            .copied()
    }

    /// Adds `id` at `place`, which no entry names yet (the table may grow and hash the other
    /// entries again, by `id_at`).
    pub fn insert(
        &mut self,
        id: &ReferralId,
        place: u32,
        id_at: impl Fn(u32) -> Option<ReferralId>,
    ) {
        let hasher = &self.hasher;
        self.table.insert_unique(hasher.hash_one(id), place, |&at| {
            id_at(at).map_or(0, |id| hasher.hash_one(id))
        });
    }

    /// Removes `id`, whose place still holds it.
    pub fn remove(&mut self, id: &ReferralId, id_at: impl Fn(u32) -> Option<ReferralId>) {
        if let Ok(entry) = self
            .table
            .find_entry(self.hasher.hash_one(id), |&at| id_at(at) == Some(*id))
        {
            entry.remove();
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn shrink_to_fit(&mut self, id_at: impl Fn(u32) -> Option<ReferralId>) {
        let hasher = &self.hasher;
        self.table
            .shrink_to_fit(|&at| id_at(at).map_or(0, |id| hasher.hash_one(id)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ReferralId {
        ReferralId::from_bytes(
            u128::from(n)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .to_be_bytes(),
        )
    }

    #[test]
    fn every_id_is_found_at_its_place_as_the_table_grows_and_after_removals() {
        let mut held: Vec<Option<ReferralId>> = Vec::new();
        let mut places = Places::default();
        for n in 0..5000 {
            assert_eq!(places.find(&id(n), |at| held[at as usize]), None);
            held.push(Some(id(n)));
            places.insert(&id(n), n, |at| held[at as usize]);
        }
        assert_eq!(places.len(), 5000);
        assert!((0..5000).all(|n| places.find(&id(n), |at| held[at as usize]) == Some(n)));
        // Every third one leaves (its place emptied after the table forgets it).
        for n in (0..5000).step_by(3) {
            places.remove(&id(n), |at| held[at as usize]);
            held[n as usize] = None;
        }
        places.shrink_to_fit(|at| held[at as usize]);
        for n in 0..5000 {
            let expected = (n % 3 != 0).then_some(n);
            assert_eq!(places.find(&id(n), |at| held[at as usize]), expected, "{n}");
        }
        assert_eq!(places.find(&id(5000), |at| held[at as usize]), None);
    }
}
