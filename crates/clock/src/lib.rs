//! refbus-clock: where a long-running component's "now" comes from, and how it waits for a deadline.
//!
//! The router and the dashboard never call `SystemTime::now()` themselves: they ask a [`Clock`].
//! One crate for both, so that a test shares one [`ManualClock`] between the router that
//! records a breach and the board that shows it, and neither has a copy of the other's time. Production uses
//! [`SystemClock`]; tests use [`ManualClock`] and move time forward explicitly, so a test of a
//! 72-hour statutory clock takes milliseconds and never sleeps.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use refbus_core::Timestamp;
use tokio::sync::watch;

pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A source of time for a component.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;

    /// Completes once [`Clock::now`] has reached `deadline`.
    fn sleep_until(&self, deadline: Timestamp) -> Sleep;
}

/// The system's wall clock, with tokio timers for waiting (so tests with paused tokio time
/// can drive it too).
#[derive(Debug, Clone)]
pub struct SystemClock {
    /// Wall-clock time and tokio's monotonic time at the same moment: `now` is derived from
    /// tokio's clock, so waits and readings never disagree.
    origin: (Timestamp, tokio::time::Instant),
}

impl SystemClock {
    pub fn new() -> SystemClock {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
            });
        SystemClock {
            origin: (Timestamp::from_millis(millis), tokio::time::Instant::now()),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let (wall, instant) = self.origin;
        wall.plus(instant.elapsed())
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        let wait = deadline.since(self.now());
        // A deadline decades away (or never) is a wait for something else to happen.
        let wait = wait.min(Duration::from_secs(365 * 24 * 3600));
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that starts at a chosen instant and runs at a chosen speed: 0 freezes it, 60 makes
/// an hour pass in a minute. For demonstrations and for tests of whole processes.
#[derive(Debug, Clone)]
pub struct ScaledClock {
    start: Timestamp,
    origin: tokio::time::Instant,
    speed: f64,
}

impl ScaledClock {
    pub fn new(start: Timestamp, speed: f64) -> ScaledClock {
        ScaledClock {
            start,
            origin: tokio::time::Instant::now(),
            speed: speed.max(0.0),
        }
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> Timestamp {
        self.start.plus(self.origin.elapsed().mul_f64(self.speed))
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        if self.speed == 0.0 {
            return Box::pin(std::future::pending());
        }
        let wait = deadline.since(self.now()).div_f64(self.speed);
        Box::pin(tokio::time::sleep(
            wait.min(Duration::from_secs(365 * 24 * 3600)),
        ))
    }
}

/// A clock that moves only when the test says so.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<Timestamp>>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock {
            now: Arc::new(watch::channel(start).0),
        }
    }

    /// Moves time to `to` (never backwards), waking everything waiting for it.
    pub fn advance_to(&self, to: Timestamp) {
        self.now.send_if_modified(|now| {
            let moved = to > *now;
            if moved {
                *now = to;
            }
            moved
        });
    }

    pub fn advance_by(&self, by: Duration) {
        self.advance_to(self.now().plus(by));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        let mut receiver = self.now.subscribe();
        Box::pin(async move {
            let _ = receiver.wait_for(|now| *now >= deadline).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_system_clock_follows_paused_tokio_time() {
        let clock = SystemClock::new();
        let start = clock.now();
        clock
            .sleep_until(start.plus(Duration::from_secs(3600)))
            .await;
        assert_eq!(clock.now(), start.plus(Duration::from_secs(3600)));
    }

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_advanced() {
        let clock = ManualClock::new(Timestamp::from_millis(0));
        let sleeper = tokio::spawn(clock.sleep_until(Timestamp::from_millis(5000)));
        clock.advance_by(Duration::from_secs(4));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance_by(Duration::from_secs(1));
        sleeper.await.unwrap();
        clock.advance_to(Timestamp::from_millis(1));
        assert_eq!(
            clock.now(),
            Timestamp::from_millis(5000),
            "time never goes back"
        );
    }
}
