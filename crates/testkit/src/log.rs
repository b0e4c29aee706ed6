//! The server's log, collected line by line from its stderr, and waiting for a line to appear.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Lines one server process logged. A reader thread pushes; the harness waits on it.
#[derive(Debug, Default)]
pub(crate) struct LogBuffer {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    lines: Vec<String>,
    /// The process closed its stderr: it exited, nothing more will come.
    closed: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WaitFailure {
    Closed,
    TimedOut,
}

impl LogBuffer {
    pub(crate) fn push(&self, line: String) {
        self.lock().lines.push(line);
        self.changed.notify_all();
    }

    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.lock().lines.clone()
    }

    pub(crate) fn tail(&self, count: usize) -> String {
        let state = self.lock();
        let start = state.lines.len().saturating_sub(count);
        state.lines[start..].join("\n")
    }

    /// Waits until a line containing `needle` has been logged (at any time since the start).
    pub(crate) fn wait_for(&self, needle: &str, deadline: Instant) -> Result<String, WaitFailure> {
        let mut scanned = 0;
        let mut state = self.lock();
        loop {
            if let Some(line) = state.lines[scanned..].iter().find(|l| l.contains(needle)) {
                return Ok(line.clone());
            }
            scanned = state.lines.len();
            if state.closed {
                return Err(WaitFailure::Closed);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(WaitFailure::TimedOut);
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The value after the last `:` of the first line containing `needle`, as a port.
    pub(crate) fn port_after(&self, needle: &str) -> Option<u16> {
        let state = self.lock();
        let line = state.lines.iter().find(|l| l.contains(needle))?;
        line.rsplit(':').next()?.trim().parse().ok()
    }

    // A panicking pusher cannot leave the lines half-written, so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn finds_a_line_pushed_from_another_thread() {
        let log = Arc::new(LogBuffer::default());
        let writer = Arc::clone(&log);
        let handle = std::thread::spawn(move || {
            writer.push("[1] Starting nats-server".to_owned());
            writer.push("[1] Listening for client connections on 127.0.0.1:4321".to_owned());
            writer.push("[1] Server is ready".to_owned());
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let line = log.wait_for("Server is ready", deadline).expect("ready");
        assert_eq!(line, "[1] Server is ready");
        handle.join().expect("writer thread");
        assert_eq!(log.port_after("client connections on"), Some(4321));
        assert_eq!(log.tail(1), "[1] Server is ready");
    }

    #[test]
    fn closed_log_ends_the_wait() {
        let log = LogBuffer::default();
        log.push("[1] address already in use".to_owned());
        log.close();
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(
            log.wait_for("Server is ready", deadline),
            Err(WaitFailure::Closed)
        );
    }

    #[test]
    fn past_deadline_times_out() {
        let log = LogBuffer::default();
        assert_eq!(
            log.wait_for("Server is ready", Instant::now()),
            Err(WaitFailure::TimedOut)
        );
    }
}
