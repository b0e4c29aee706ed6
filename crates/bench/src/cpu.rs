//! CPU time and memory as Linux accounts them: this thread's CPU clock, the CPU time of a
//! process's threads grouped by thread name, and a process's resident memory.
//!
//! Thread CPU time comes from `/proc/<pid>/task/<tid>/schedstat` (nanoseconds, the same
//! accounting as `CLOCK_THREAD_CPUTIME_ID`), or from `stat`'s clock ticks where the kernel has
//! no schedstat. Threads that exited are no longer listed: only long-lived threads (runtime
//! workers, servers) are measured this way.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::time::Duration;

use rustix::time::{ClockId, clock_gettime};

/// The calling thread's CPU time so far.
pub fn thread_cpu() -> Duration {
    let now = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// Which process to read: this one, or another by pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    Current,
    Pid(u32),
}

impl Process {
    fn dir(self) -> String {
        match self {
            Process::Current => "/proc/self".to_owned(),
            Process::Pid(pid) => format!("/proc/{pid}"),
        }
    }
}

/// CPU time per thread name, summed over the threads of `process` that bear it.
pub fn cpu_by_thread_name(process: Process) -> io::Result<BTreeMap<String, Duration>> {
    let mut by_name = BTreeMap::new();
    for entry in std::fs::read_dir(format!("{}/task", process.dir()))? {
        let task = entry?.path();
        // A thread may exit between the listing and the reads: skip it.
        let Ok(name) = std::fs::read_to_string(task.join("comm")) else {
            continue;
        };
        let Ok(cpu) = task_cpu(&task) else {
            continue;
        };
        *by_name
            .entry(name.trim_end().to_owned())
            .or_insert(Duration::ZERO) += cpu;
    }
    Ok(by_name)
}

/// CPU time of all the live threads of `process`.
pub fn process_cpu(process: Process) -> io::Result<Duration> {
    Ok(cpu_by_thread_name(process)?.values().sum())
}

fn task_cpu(task: &Path) -> io::Result<Duration> {
    if let Ok(schedstat) = std::fs::read_to_string(task.join("schedstat"))
        && let Some(nanos) = parse_schedstat(&schedstat)
    {
        return Ok(Duration::from_nanos(nanos));
    }
    let stat = std::fs::read_to_string(task.join("stat"))?;
    parse_stat_ticks(&stat)
        // /proc reports clock ticks in USER_HZ, which Linux fixes at 100 for user space.
        .map(|ticks| Duration::from_millis(ticks * 10))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable stat"))
}

/// Time on CPU, in nanoseconds: the first field of `schedstat`.
fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// `utime + stime` from a `stat` line. The command name may hold spaces and parentheses, so
/// fields are counted from the last `)`.
fn parse_stat_ticks(text: &str) -> Option<u64> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); the state (field 3) is the first after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory of a process (`VmRSS`) and its peak (`VmHWM`), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resident {
    pub now: u64,
    pub peak: u64,
}

pub fn resident(process: Process) -> io::Result<Resident> {
    let status = std::fs::read_to_string(format!("{}/status", process.dir()))?;
    parse_resident(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in status"))
}

fn parse_resident(status: &str) -> Option<Resident> {
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find(|line| line.starts_with(key))?;
        line[key.len()..].split_whitespace().next()?.parse().ok()
    };
    Some(Resident {
        now: kib("VmRSS:")? * 1024,
        peak: kib("VmHWM:")? * 1024,
    })
}

/// The load averages over 1, 5 and 15 minutes, as `/proc/loadavg` gives them: anything else
/// running on the machine during a benchmark shows here.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The CPU model and the number of CPUs this process may use, for the report.
pub fn machine() -> (usize, String) {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    (cpus, model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        assert_eq!(parse_schedstat("182021 2059032 2\n"), Some(182_021));
        let stat = "42 (tokio (w) 1) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 3 0";
        assert_eq!(parse_stat_ticks(stat), Some(280));
        let status = "Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t   1024 kB\n";
        assert_eq!(
            parse_resident(status),
            Some(Resident {
                now: 1024 * 1024,
                peak: 2048 * 1024
            })
        );
    }

    #[test]
    fn reads_this_process() {
        let spent = thread_cpu();
        // Burn a little CPU so the clock must move.
        let mut x = 0u64;
        for i in 0..200_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu() > spent);
        assert!(process_cpu(Process::Current).unwrap() > Duration::ZERO);
        assert!(resident(Process::Current).unwrap().now > 0);
    }
}
