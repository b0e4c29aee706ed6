//! Reads never older than what this process has already seen. On a replicated stream every
//! replica answers direct reads (`allow_direct`), and a replica that is behind (cut off from
//! the others, paused, catching up after a restart) answers from what it has: "no such
//! referral" for one created a second ago, or a state older than the one just delivered to the
//! agency's inbox. JetStream offers no read that says how far the replica answering is, and the
//! one read served by the stream's leader alone (`STREAM.MSG.GET`) carries its subject in its
//! body, where NATS permissions cannot confine an agency to its own referrals
//! (docs/ARCHITECTURE.md, "Reads an agency's permissions can confine").
//!
//! So each process keeps, per referral (or per other subject), the highest stream sequence it
//! knows is stored there: from its own appends, from the messages its inboxes delivered, and
//! from earlier reads. A read that answers less is a replica behind: it is asked again a few
//! times (a replica catches up in milliseconds once it hears its leader again, and another
//! replica may answer), then the read is `Unavailable` ("retry"), never a NOT_FOUND or an old
//! state the process has already been past. What a process never saw it cannot guard:
//! docs/RELIABILITY.md, finding 4.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use refbus_core::ReferralId;

use crate::subjects::REFERRAL_PREFIX;
use crate::{ReadError, ReadErrorKind};

/// How many keys one generation holds before it becomes the previous one: the sequences seen
/// are kept for the 65,536 to 131,072 referrals touched most recently (a few MB), which covers
/// the seconds a replica may lag behind many times over.
const GENERATION: usize = 1 << 16;

/// How often a read answered by a replica behind is made again before it is `Unavailable`,
/// and the pauses between (about 0.8 s in all).
pub(crate) const ATTEMPTS: u32 = 6;

/// The pause before attempt `attempt` (1-based) of a read answered by a replica behind.
pub(crate) fn pause_before(attempt: u32) -> Duration {
    Duration::from_millis(25u64 << attempt.saturating_sub(1).min(5))
}

/// `read`'s answer once `fresh` takes it (given the sequence it answered, if any): a read
/// answered by a replica behind this process's knowledge of `subject` (sequence `floor`) is
/// made again after a pause, and after [`ATTEMPTS`] reads is `Unavailable`.
pub(crate) async fn not_behind<T, Read>(
    subject: &str,
    floor: u64,
    mut read: impl FnMut() -> Read,
    sequence: impl Fn(&T) -> u64,
    fresh: impl Fn(Option<u64>) -> bool,
) -> Result<Option<T>, ReadError>
where
    Read: Future<Output = Result<Option<T>, ReadError>>,
{
    let mut attempt = 0;
    loop {
        let found = read().await?;
        let answered = found.as_ref().map(&sequence);
        if fresh(answered) {
            return Ok(found);
        }
        attempt += 1;
        if attempt >= ATTEMPTS {
            let answered = answered.map_or_else(
                || "nothing".to_owned(),
                |seq| format!("stream sequence {seq}"),
            );
            return Err(ReadError::with_source(
                ReadErrorKind::Unavailable,
                format!(
                    "a replica of the stream is behind: asked for {subject}, it answered {answered} \
                 where stream sequence {floor} is already stored; retry"
                ),
            ));
        }
        tokio::time::sleep(pause_before(attempt)).await;
    }
}

/// The highest stream sequence seen per referral subject or other subject.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    generations: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashMap<u128, Vec<Known>>,
    previous: HashMap<u128, Vec<Known>>,
}

/// A subject (its parties' tokens hashed, for a referral's) and the highest sequence seen on it.
/// A referral has one subject; a party's shadow copy on another is another entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Known {
    recipient: u64,
    sender: u64,
    seq: u64,
}

/// Where a read looks: one subject, or a referral's subject with either party a wildcard.
#[derive(Debug, Clone, Copy)]
struct Place {
    key: u128,
    recipient: Option<u64>,
    sender: Option<u64>,
}

impl Seen {
    /// A message is stored at `seq` on `subject` (no wildcards).
    pub(crate) fn record(&self, subject: &str, seq: u64) {
        let place = place(subject);
        let (Some(recipient), Some(sender)) = (place.recipient, place.sender) else {
            return;
        };
        let mut generations = self.lock();
        if generations.current.len() >= GENERATION && !generations.current.contains_key(&place.key)
        {
            generations.previous = std::mem::take(&mut generations.current);
        }
        let carried = generations.previous.remove(&place.key);
        let entries = generations
            .current
            .entry(place.key)
            .or_insert_with(|| carried.unwrap_or_default());
        match entries
            .iter_mut()
            .find(|known| known.recipient == recipient && known.sender == sender)
        {
            Some(known) => known.seq = known.seq.max(seq),
            None => entries.push(Known {
                recipient,
                sender,
                seq,
            }),
        }
    }

    /// The highest sequence known to be stored on `subject`: a subject, or a pattern naming
    /// one referral by id with either party a wildcard (`refbus.v1.ref.*.<sender>.<id>`); 0
    /// when nothing is known.
    pub(crate) fn floor(&self, subject: &str) -> u64 {
        let place = place(subject);
        let generations = self.lock();
        let entries = generations
            .current
            .get(&place.key)
            .or_else(|| generations.previous.get(&place.key));
        entries
            .into_iter()
            .flatten()
            .filter(|known| {
                place.recipient.is_none_or(|token| token == known.recipient)
                    && place.sender.is_none_or(|token| token == known.sender)
            })
            .map(|known| known.seq)
            .max()
            .unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A referral's subject, or a pattern that names it by id, is kept under the referral id with
/// its parties' tokens (so a read by pattern is guarded by what was seen on the exact subject);
/// any other subject under its hash, whole. A subject with wildcards elsewhere matches nothing
/// recorded.
fn place(subject: &str) -> Place {
    let mut tokens = subject
        .strip_prefix(REFERRAL_PREFIX)
        .map(|rest| rest.splitn(3, '.'));
    if let Some(tokens) = &mut tokens
        && let (Some(recipient), Some(sender), Some(id)) = (tokens.next(), tokens.next(), tokens.next())
        // A referral id has no dot: a longer subject fails here.
        && let Ok(id) = ReferralId::parse(id)
    {
        let token = |token: &str| (token != "*").then(|| hash(token));
        return Place {
            key: u128::from_be_bytes(*id.as_bytes()),
            recipient: token(recipient),
            sender: token(sender),
        };
    }
    let exact = !subject.split('.').any(|token| token == "*" || token == ">");
    Place {
        // Below 2^64: no referral id (its first 48 bits are its creation time) is that small.
        key: u128::from(hash(subject)),
        recipient: exact.then_some(0),
        sender: exact.then_some(0),
    }
}

fn hash(text: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "01JDZK0000000000000000000A";

    #[test]
    fn a_referral_is_known_by_its_exact_subject_and_by_a_pattern_naming_it() {
        let seen = Seen::default();
        seen.record(
            &format!("refbus.v1.ref.maros-uptd-ppa.maros-dinsos.{ID}"),
            7,
        );
        assert_eq!(seen.floor(&format!("refbus.v1.ref.*.maros-dinsos.{ID}")), 7);
        assert_eq!(
            seen.floor(&format!("refbus.v1.ref.maros-uptd-ppa.*.{ID}")),
            7
        );
        // Sequences only go up.
        seen.record(
            &format!("refbus.v1.ref.maros-uptd-ppa.maros-dinsos.{ID}"),
            3,
        );
        assert_eq!(seen.floor(&format!("refbus.v1.ref.*.*.{ID}")), 7);
        // The same id on another pair's subject (a party's shadow copy) is its own subject.
        assert_eq!(seen.floor(&format!("refbus.v1.ref.maros-dinsos.*.{ID}")), 0);
        assert_eq!(seen.floor(&format!("refbus.v1.ref.*.maros-polres.{ID}")), 0);
        seen.record(&format!("refbus.v1.ref.maros-dinsos.maros-polres.{ID}"), 12);
        assert_eq!(
            seen.floor(&format!("refbus.v1.ref.*.maros-polres.{ID}")),
            12
        );
        assert_eq!(seen.floor(&format!("refbus.v1.ref.*.maros-dinsos.{ID}")), 7);
        assert_eq!(seen.floor(&format!("refbus.v1.ref.*.*.{ID}")), 12);
        // Another subject, and an agency-wide filter, are their own keys.
        seen.record("refbus.v1.idx.maros-uptd-ppa.maros-dinsos", 9);
        assert_eq!(seen.floor("refbus.v1.idx.maros-uptd-ppa.maros-dinsos"), 9);
        assert_eq!(seen.floor("refbus.v1.ref.maros-uptd-ppa.*.*"), 0);
        assert_eq!(seen.floor("refbus.v1.idx.maros-uptd-ppa.maros-polres"), 0);
    }

    #[test]
    fn the_most_recent_keys_are_kept_and_the_oldest_forgotten() {
        let seen = Seen::default();
        for n in 0..GENERATION * 2 + 1 {
            seen.record(&format!("refbus.v1.idx.a.b{n}"), n as u64 + 1);
        }
        assert_eq!(seen.floor("refbus.v1.idx.a.b0"), 0);
        assert_eq!(
            seen.floor(&format!("refbus.v1.idx.a.b{}", GENERATION + 1)),
            GENERATION as u64 + 2
        );
        assert_eq!(
            seen.floor(&format!("refbus.v1.idx.a.b{}", GENERATION * 2)),
            GENERATION as u64 * 2 + 1
        );
        let generations = seen.lock();
        assert!(generations.current.len() + generations.previous.len() <= GENERATION * 2);
        drop(generations);
        // A pattern matches nothing recorded under a whole subject.
        assert_eq!(seen.floor("refbus.v1.idx.a.*"), 0);
    }

    #[test]
    fn the_pauses_grow_and_stay_short() {
        let total: Duration = (1..ATTEMPTS).map(pause_before).sum();
        assert_eq!(pause_before(1), Duration::from_millis(25));
        assert!(total < Duration::from_secs(1), "{total:?}");
    }
}
