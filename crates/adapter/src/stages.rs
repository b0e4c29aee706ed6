//! Where a create spends its time, stage by stage: optional instrumentation for benchmarks.
//!
//! Off by default ([`Options::stage_times`](crate::Options) is `None`): the create path then
//! reads no clock at all. When on, every stage reads the caller's clock before and after and
//! adds the difference. With a per-thread CPU clock that is the CPU time of the stage, because
//! each measured piece runs on one thread between two reads (the publish is measured poll by
//! poll for that reason).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A stage of the create path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Request fields and the core's rules (before and around sealing), the sealing excluded.
    Validation,
    /// Sealing the identity and the note for the referral's parties.
    Sealing,
    /// Deciding the event, applying it, hashing it.
    Event,
    /// Reading the bus before writing (whether the referral exists for another recipient),
    /// measured poll by poll like the publish.
    Read,
    /// Encoding the message and publishing it, as far as the handler's task does it (the NATS
    /// connection's own task writes the socket and reads the acknowledgement).
    Publish,
    /// Building the answer: the referral's view with its clocks, and the event's view.
    Response,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Validation,
        Stage::Sealing,
        Stage::Event,
        Stage::Read,
        Stage::Publish,
        Stage::Response,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Time spent per [`Stage`], summed over every create since the last [`StageTimes::reset`].
#[derive(Debug)]
pub struct StageTimes {
    clock: fn() -> Duration,
    nanos: [AtomicU64; 6],
    creates: AtomicU64,
}

impl StageTimes {
    /// Times stages with `clock`: a per-thread CPU clock gives CPU time, a monotonic clock
    /// gives wall time.
    pub fn new(clock: fn() -> Duration) -> StageTimes {
        StageTimes {
            clock,
            nanos: Default::default(),
            creates: AtomicU64::new(0),
        }
    }

    /// The time spent in `stage` so far.
    pub fn total(&self, stage: Stage) -> Duration {
        Duration::from_nanos(self.nanos[stage.index()].load(Ordering::Relaxed))
    }

    /// How many creates were answered successfully so far.
    pub fn creates(&self) -> u64 {
        self.creates.load(Ordering::Relaxed)
    }

    pub fn reset(&self) {
        for nanos in &self.nanos {
            nanos.store(0, Ordering::Relaxed);
        }
        self.creates.store(0, Ordering::Relaxed);
    }

    fn add(&self, stage: Stage, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.nanos[stage.index()].fetch_add(nanos, Ordering::Relaxed);
    }
}

/// The create path's handle on the instrumentation: every method is a no-op without it.
#[derive(Clone, Copy)]
pub(crate) struct Stopwatch<'a>(pub(crate) Option<&'a StageTimes>);

impl Stopwatch<'_> {
    /// The clock now (nothing is read when off).
    pub(crate) fn now(self) -> Option<Duration> {
        self.0.map(|times| (times.clock)())
    }

    /// The time since `start` (zero when off).
    pub(crate) fn since(self, start: Option<Duration>) -> Duration {
        match (self.0, start) {
            (Some(times), Some(start)) => (times.clock)().saturating_sub(start),
            _ => Duration::ZERO,
        }
    }

    /// Counts `elapsed` for `stage`.
    pub(crate) fn add(self, stage: Stage, elapsed: Duration) {
        if let Some(times) = self.0 {
            times.add(stage, elapsed);
        }
    }

    /// Counts the time since `start` for `stage`.
    pub(crate) fn lap(self, stage: Stage, start: Option<Duration>) {
        let elapsed = self.since(start);
        self.add(stage, elapsed);
    }

    /// Awaits `future`, counting the time spent inside its polls (not the time it waits) for
    /// `stage`.
    pub(crate) async fn time_polls<F: Future>(self, stage: Stage, future: F) -> F::Output {
        if self.0.is_none() {
            return future.await;
        }
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            let start = self.now();
            let poll = future.as_mut().poll(cx);
            self.lap(stage, start);
            poll
        })
        .await
    }

    pub(crate) fn count_create(self) {
        if let Some(times) = self.0 {
            times.creates.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static TICKS: AtomicU64 = AtomicU64::new(0);

    /// A clock that advances one millisecond per read.
    fn ticking() -> Duration {
        Duration::from_millis(TICKS.fetch_add(1, Ordering::Relaxed))
    }

    #[test]
    fn stages_add_up_and_reset() {
        let times = StageTimes::new(ticking);
        let watch = Stopwatch(Some(&times));
        watch.lap(Stage::Sealing, watch.now());
        let start = watch.now();
        watch.add(Stage::Sealing, Duration::from_millis(5));
        watch.lap(Stage::Validation, start);
        watch.count_create();
        assert_eq!(times.total(Stage::Sealing), Duration::from_millis(6));
        assert_eq!(times.total(Stage::Validation), Duration::from_millis(1));
        assert_eq!(times.creates(), 1);
        times.reset();
        assert_eq!(times.total(Stage::Sealing), Duration::ZERO);
        assert_eq!(times.creates(), 0);
    }

    #[test]
    fn off_reads_no_clock() {
        let watch = Stopwatch(None);
        watch.lap(Stage::Event, watch.now());
        assert_eq!(watch.since(watch.now()), Duration::ZERO);
    }
}
