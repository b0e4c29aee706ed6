//! The router's own appends, remembered until its consumer delivers them back.
//!
//! Every event the router records (`fire`) comes back to it through its durable consumer. The
//! router made that event itself: the core decided it from a state the router had checked, and
//! the router signed the exact bytes it published. Checking those bytes again (a signature
//! verification, the core deciding the event again, the state encoded and compared) would only
//! re-derive what the router already knows, at most of the CPU the due minute costs.
//!
//! So each append acknowledged by JetStream is remembered here by its stream sequence, with a
//! SHA-256 digest of the exact payload sent and the record as written (event and state after
//! it). When the consumer delivers the message at that sequence, on the same subject, with a
//! payload of the same digest, it is the router's own and is applied from the record kept here.
//! Anything else (another writer's message, a sequence the router did not write or no longer
//! remembers) goes through the one record check as before; a message at a remembered sequence
//! that differs is reported at ERROR and checked in full. Why this is safe: docs/ARCHITECTURE.md,
//! "The router trusts its own appends".

use std::collections::HashMap;

use refbus_bus::EventRecord;
use sha2::{Digest, Sha256};

/// At most this many appends are remembered at once; past it, further appends are checked in
/// full when delivered (slower, never wrong). Each holds a referral's state (about a kilobyte),
/// so this bounds the memory to a few hundred megabytes in the worst case.
const MAX_REMEMBERED: usize = 200_000;

/// SHA-256 of a message payload.
pub(crate) type PayloadDigest = [u8; 32];

pub(crate) fn digest(payload: &[u8]) -> PayloadDigest {
    Sha256::digest(payload).into()
}

/// An append the router made, acknowledged by JetStream, not yet delivered back.
#[derive(Debug)]
struct Written<R> {
    subject: String,
    digest: PayloadDigest,
    record: R,
}

/// What a delivery is, as far as the router's own appends go.
#[derive(Debug)]
pub(crate) enum Delivered<R = EventRecord> {
    /// The router's own append, byte for byte: the record it wrote.
    Own(Box<R>),
    /// Not an append the router remembers: check it.
    Other,
    /// At a sequence the router appended, but not the bytes or the subject it wrote: check it,
    /// loudly.
    Differs,
}

/// Appends acknowledged and not yet delivered, by stream sequence (`R`: what was written, the
/// record; generic only so the tests need not build one).
#[derive(Debug)]
pub(crate) struct OwnAppends<R = EventRecord> {
    written: HashMap<u64, Written<R>>,
    /// Every sequence up to this one was delivered already (the consumer delivers in stream
    /// order): an append acknowledged after its delivery is not remembered (it would never be
    /// taken out again).
    delivered_through: u64,
}

impl<R> Default for OwnAppends<R> {
    fn default() -> Self {
        OwnAppends {
            written: HashMap::new(),
            delivered_through: 0,
        }
    }
}

impl<R> OwnAppends<R> {
    /// Remembers the append JetStream acknowledged at `seq` (not a duplicate: the router's own
    /// bytes are stored there), unless it was delivered already or too many are remembered.
    pub(crate) fn wrote(&mut self, seq: u64, subject: &str, digest: PayloadDigest, record: R) {
        if seq <= self.delivered_through || self.written.len() >= MAX_REMEMBERED {
            return;
        }
        self.written.insert(
            seq,
            Written {
                subject: subject.to_owned(),
                digest,
                record,
            },
        );
    }

    /// Takes out what the router wrote at `seq`, if anything, and notes that `seq` was
    /// delivered. The caller compares the delivery with it ([`Taken::compare`]) outside the
    /// lock this is kept under.
    pub(crate) fn delivered(&mut self, seq: u64) -> Taken<R> {
        self.delivered_through = self.delivered_through.max(seq);
        Taken(self.written.remove(&seq))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.written.len()
    }
}

/// What [`OwnAppends::delivered`] took out for one delivery.
#[derive(Debug)]
pub(crate) struct Taken<R>(Option<Written<R>>);

impl<R> Taken<R> {
    /// Whether the delivered message (its subject and exact payload) is what the router wrote.
    pub(crate) fn compare(self, subject: &str, payload: &[u8]) -> Delivered<R> {
        let Some(written) = self.0 else {
            return Delivered::Other;
        };
        if written.subject == subject && written.digest == digest(payload) {
            Delivered::Own(Box::new(written.record))
        } else {
            Delivered::Differs
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_bytes_on_the_same_subject_at_the_same_sequence_are_the_router_s() {
        let mut own = OwnAppends::<()>::default();
        own.wrote(10, "s", digest(b"written"), ());
        own.wrote(11, "s", digest(b"written"), ());
        own.wrote(12, "s", digest(b"written"), ());
        // Another sequence: not the router's.
        assert!(matches!(
            own.delivered(9).compare("s", b"written"),
            Delivered::Other
        ));
        // One byte different: checked, loudly.
        assert!(matches!(
            own.delivered(10).compare("s", b"writteN"),
            Delivered::Differs
        ));
        // Another subject: checked, loudly.
        assert!(matches!(
            own.delivered(11).compare("t", b"written"),
            Delivered::Differs
        ));
        assert!(matches!(
            own.delivered(12).compare("s", b"written"),
            Delivered::Own(_)
        ));
        // Taken out once: delivered again, it is checked like any other message.
        assert!(matches!(
            own.delivered(12).compare("s", b"written"),
            Delivered::Other
        ));
        assert_eq!(own.len(), 0);
    }

    #[test]
    fn an_append_acknowledged_after_its_delivery_is_not_kept() {
        let mut own = OwnAppends::<()>::default();
        assert!(matches!(
            own.delivered(20).compare("s", b"x"),
            Delivered::Other
        ));
        own.wrote(20, "s", digest(b"x"), ());
        own.wrote(19, "s", digest(b"x"), ());
        assert_eq!(own.len(), 0);
        own.wrote(21, "s", digest(b"x"), ());
        assert_eq!(own.len(), 1);
    }
}
