//! Failed logins slow the next ones down: after too many failures in a window for one username
//! (whether or not it exists) or from one address, logins there are refused until the oldest
//! failure leaves the window.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) struct Throttle {
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// One thing failures are counted against, and how many it may have in the window.
pub(crate) struct Key {
    pub(crate) name: String,
    pub(crate) limit: usize,
}

impl Throttle {
    pub(crate) fn new(window: Duration) -> Throttle {
        Throttle {
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long until a login may be tried for every one of `keys`, if one is blocked now.
    pub(crate) fn blocked(&self, keys: &[Key], now: Instant) -> Option<Duration> {
        let mut failures = self.lock();
        let mut wait = None;
        for key in keys {
            let Some(times) = failures.get_mut(&key.name) else {
                continue;
            };
            while times
                .front()
                .is_some_and(|&at| now.saturating_duration_since(at) >= self.window)
            {
                times.pop_front();
            }
            if times.len() >= key.limit {
                let oldest = times[times.len() - key.limit];
                let until = self
                    .window
                    .saturating_sub(now.saturating_duration_since(oldest));
                wait = Some(wait.map_or(until, |w: Duration| w.max(until)));
            }
        }
        wait
    }

    pub(crate) fn fail(&self, keys: &[Key], now: Instant) {
        let mut failures = self.lock();
        // Bounded by the window: keys with no recent failure are dropped as failures come in.
        if failures.len() > 10_000 {
            let window = self.window;
            failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|&at| now.saturating_duration_since(at) < window)
            });
        }
        for key in keys {
            let times = failures.entry(key.name.clone()).or_default();
            times.push_back(now);
            while times.len() > key.limit {
                times.pop_front();
            }
        }
    }

    /// A successful login clears its username's failures (not its address's).
    pub(crate) fn clear(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_blocks_until_the_oldest_failure_leaves_the_window() {
        let throttle = Throttle::new(Duration::from_secs(900));
        let keys = [Key {
            name: "user:siti".to_owned(),
            limit: 3,
        }];
        let start = Instant::now();
        for i in 0..3 {
            assert_eq!(throttle.blocked(&keys, start), None);
            throttle.fail(&keys, start + Duration::from_secs(i * 60));
        }
        let now = start + Duration::from_secs(180);
        assert_eq!(throttle.blocked(&keys, now), Some(Duration::from_secs(720)));
        assert_eq!(
            throttle.blocked(&keys, start + Duration::from_secs(900)),
            None
        );
        throttle.clear("user:siti");
        assert_eq!(throttle.blocked(&keys, now), None);
    }
}
