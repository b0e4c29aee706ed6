//! A `refbus router` in a process of its own, as deployed: started, watched until it says it is
//! ready, its memory and CPU time read from `/proc`, and stopped with Ctrl-C. A process of its
//! own keeps the benchmark's memory (a million prepared messages) out of the router's figures.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::BenchError;
use crate::cpu::{self, Process, Resident};

/// What `refbus router` prints once its timers are rebuilt.
const READY: &str = "router: ready (";
/// What `refbus router` prints once it wrote the snapshot of its timers.
const SNAPSHOT: &str = "router: snapshot of ";

/// What a partitioned `refbus router` prints as it claims or gives up a partition.
const PARTITION: &str = "router: partition ";

/// The router's report that it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// From starting the process to the ready line: loading the registry, connecting,
    /// checking the stream, creating its consumer, rebuilding every timer.
    pub after: Duration,
    pub referrals: usize,
    pub pending: usize,
}

/// A partition claimed: how long its set-up took, how many referrals it read, and when.
type SetUp = (Duration, usize, Instant);

/// A running `refbus router`.
pub struct RouterProcess {
    child: Child,
    started: Instant,
    /// Ready and INTEGRITY lines; every other line is only counted.
    lines: mpsc::Receiver<String>,
    recorded: Arc<AtomicU64>,
    /// A partitioned router's partitions held now, each with the referrals with pending clocks
    /// it held when claimed.
    held: Arc<Mutex<BTreeMap<u32, usize>>>,
    /// How long the router took to set each partition up when it last claimed it (its own
    /// figure, from its "claimed" line), and when that line was read.
    set_up: Arc<Mutex<BTreeMap<u32, SetUp>>>,
}

impl RouterProcess {
    /// Starts `command` (a `refbus router` with its arguments; its standard output is taken
    /// here, its standard error is the caller's to direct).
    pub fn start(mut command: Command) -> Result<RouterProcess, BenchError> {
        let started = Instant::now();
        let mut child = command
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Setup("the router has no standard output".to_owned()))?;
        let (forward, lines) = mpsc::channel();
        let recorded = Arc::new(AtomicU64::new(0));
        let counter = recorded.clone();
        let held = Arc::new(Mutex::new(BTreeMap::new()));
        let holding = held.clone();
        let set_up = Arc::new(Mutex::new(BTreeMap::new()));
        let setting_up = set_up.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((partition, pending)) = parse_partition(&line) {
                    if let Some(took) = parse_took(&line) {
                        let read = parse_read(&line).unwrap_or(0);
                        setting_up
                            .lock()
                            .unwrap_or_else(|err| err.into_inner())
                            .insert(partition, (took, read, Instant::now()));
                    }
                    let mut holding = holding.lock().unwrap_or_else(|err| err.into_inner());
                    match pending {
                        Some(pending) => holding.insert(partition, pending),
                        None => holding.remove(&partition),
                    };
                } else if line.starts_with(READY)
                    || line.starts_with(SNAPSHOT)
                    || line.contains("INTEGRITY")
                {
                    if forward.send(line).is_err() {
                        return;
                    }
                } else if line.contains(" (due ") {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(RouterProcess {
            child,
            started,
            lines,
            recorded,
            held,
            set_up,
        })
    }

    /// How long it took to set up each partition it claimed after `since`, by its own clock,
    /// and how many referrals that set-up read.
    pub fn set_up_since(&self, since: Instant) -> BTreeMap<u32, (Duration, usize)> {
        self.set_up
            .lock()
            .unwrap_or_else(|err| err.into_inner())
            .iter()
            .filter(|(_, (_, _, claimed))| *claimed >= since)
            .map(|(k, (took, read, _))| (*k, (*took, *read)))
            .collect()
    }

    /// A partitioned router's partitions held now, with the referrals with pending clocks in
    /// each when it was claimed.
    pub fn held(&self) -> BTreeMap<u32, usize> {
        self.held
            .lock()
            .unwrap_or_else(|err| err.into_inner())
            .clone()
    }

    /// `kill -9`: nothing given back, as a crashed machine would leave it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the ready line; an INTEGRITY line, an exit or `timeout` fails the benchmark.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Ready, BenchError> {
        let deadline = self.started + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) if line.starts_with(READY) => {
                    let after = self.started.elapsed();
                    return parse_ready(&line, after).ok_or_else(|| {
                        BenchError::Setup(format!("unexpected ready line: {line}"))
                    });
                }
                Ok(line) if line.starts_with(SNAPSHOT) => {}
                Ok(line) => return Err(BenchError::Setup(format!("the router said: {line}"))),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = self.child.try_wait()? {
                        return Err(BenchError::Setup(format!(
                            "the router exited ({status}) before it was ready"
                        )));
                    }
                    if left.is_zero() {
                        return Err(BenchError::Setup(format!(
                            "the router was not ready after {} s",
                            timeout.as_secs()
                        )));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(BenchError::Setup(
                        "the router closed its output before it was ready".to_owned(),
                    ));
                }
            }
        }
    }

    /// Waits until the router has written the snapshot of its timers; an INTEGRITY line, an
    /// exit or `timeout` fails the benchmark.
    pub fn wait_snapshot(&mut self, timeout: Duration) -> Result<(), BenchError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) if line.starts_with(SNAPSHOT) => return Ok(()),
                Ok(line) if line.starts_with(READY) => {}
                Ok(line) => return Err(BenchError::Setup(format!("the router said: {line}"))),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = self.child.try_wait()? {
                        return Err(BenchError::Setup(format!(
                            "the router exited ({status}) before writing its snapshot"
                        )));
                    }
                    if left.is_zero() {
                        return Err(BenchError::Setup(format!(
                            "the router wrote no snapshot within {} s",
                            timeout.as_secs()
                        )));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(BenchError::Setup(
                        "the router closed its output before writing its snapshot".to_owned(),
                    ));
                }
            }
        }
    }

    /// INTEGRITY lines printed so far: a benchmark's events must all pass the router's checks.
    pub fn integrity_lines(&self) -> Vec<String> {
        self.lines
            .try_iter()
            .filter(|line| line.contains("INTEGRITY"))
            .collect()
    }

    /// Items the router reported recording (one line each).
    pub fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }

    pub fn resident(&self) -> Result<Resident, BenchError> {
        Ok(cpu::resident(Process::Pid(self.pid()))?)
    }

    pub fn cpu(&self) -> Result<Duration, BenchError> {
        Ok(cpu::process_cpu(Process::Pid(self.pid()))?)
    }

    /// Ctrl-C, as an operator would; killed if it does not stop within 15 s.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        interrupt(&mut self.child);
    }
}

/// Ctrl-C to `child`, as an operator would; killed if it does not stop within 15 s.
pub fn interrupt(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, Signal::INT);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// `router: partition 3 claimed (1000 referrals read, 990 with pending clocks, …)`: the
/// partition and its pending count; `router: partition 3 given up …`: the partition, `None`.
fn parse_partition(line: &str) -> Option<(u32, Option<usize>)> {
    let rest = line.strip_prefix(PARTITION)?;
    let (partition, rest) = rest.split_once(' ')?;
    let partition = partition.parse().ok()?;
    if rest.starts_with("given up") {
        return Some((partition, None));
    }
    let rest = rest.strip_prefix("claimed (")?;
    let pending = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .nth(1)?
        .parse()
        .ok()?;
    Some((partition, Some(pending)))
}

/// The referrals a "claimed" line says were read: `claimed (8000 referrals read, …`.
fn parse_read(line: &str) -> Option<usize> {
    let rest = line.split_once(" claimed (")?.1;
    rest.split_once(' ')?.0.parse().ok()
}

/// The set-up time at the end of a "claimed" line: `…, in 1.234567s)` (a `Duration`'s debug
/// form: s, ms, µs or ns).
fn parse_took(line: &str) -> Option<Duration> {
    let took = line.rsplit_once(", in ")?.1.strip_suffix(')')?;
    let (number, unit) = took.split_at(took.find(|c: char| c.is_alphabetic() || c == 'µ')?);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => number,
        "ms" => number / 1e3,
        "µs" => number / 1e6,
        "ns" => number / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

/// `router: ready (1000000 referrals, 999000 with pending clocks, rebuilt in 9.1s)`.
fn parse_ready(line: &str, after: Duration) -> Option<Ready> {
    let rest = line.strip_prefix(READY)?;
    let mut numbers = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty());
    let referrals = numbers.next()?.parse().ok()?;
    let pending = numbers.next()?.parse().ok()?;
    Some(Ready {
        after,
        referrals,
        pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_ready_line() {
        let line = "router: ready (1000000 referrals, 999000 with pending clocks, rebuilt in 9.1s)";
        assert_eq!(
            parse_ready(line, Duration::from_secs(10)),
            Some(Ready {
                after: Duration::from_secs(10),
                referrals: 1_000_000,
                pending: 999_000
            })
        );
        assert_eq!(parse_ready("router: recorded", Duration::ZERO), None);
    }

    #[test]
    fn reads_the_partition_lines() {
        assert_eq!(
            parse_partition(
                "router: partition 3 claimed (1000 referrals read, 990 with pending clocks, rebuilt, in 1.2s)"
            ),
            Some((3, Some(990)))
        );
        assert_eq!(
            parse_partition("router: partition 12 given up (another replica takes it)"),
            Some((12, None))
        );
        assert_eq!(parse_partition("router: ready (1 referrals"), None);
    }

    #[test]
    fn reads_the_set_up_time_of_a_claimed_line() {
        let claimed = |took: &str| {
            parse_took(&format!(
                "router: partition 3 claimed (1000 referrals read, 990 with pending clocks, rebuilt, in {took})"
            ))
        };
        assert_eq!(claimed("1.5s"), Some(Duration::from_millis(1_500)));
        assert_eq!(claimed("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(claimed("12.5µs"), Some(Duration::from_nanos(12_500)));
        assert_eq!(claimed("soon"), None);
    }

    #[test]
    fn reads_the_referrals_a_claimed_line_read() {
        assert_eq!(
            parse_read(
                "router: partition 3 claimed (1000 referrals read, 990 with pending clocks, rebuilt, in 1.2s)"
            ),
            Some(1_000)
        );
        assert_eq!(
            parse_read("router: partition 12 given up (another replica takes it)"),
            None
        );
    }
}
