//! The footprint of `refbus up`: the real command in its own process (so the benchmark's own
//! memory is not counted), its resident memory and its nats-server's once both are idle.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::BenchError;
use crate::cpu::{self, Process};
use crate::report::Footprint;

/// What `refbus up` prints once everything is started.
const READY: &str = "Press Ctrl-C";

/// Runs `up` (a `refbus up` command with its arguments; its standard output is taken here),
/// waits until it is ready and then `idle`, reads the resident memory of it and of the
/// nats-server it started, and stops it with Ctrl-C (SIGINT).
pub fn measure_up(mut up: Command, idle: Duration) -> Result<Footprint, BenchError> {
    let mut child = up.stdout(Stdio::piped()).stdin(Stdio::null()).spawn()?;
    let measured = measure_running(&mut child, idle);
    stop(&mut child);
    measured
}

fn measure_running(child: &mut Child, idle: Duration) -> Result<Footprint, BenchError> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Setup("refbus up has no standard output".to_owned()))?;
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut printed = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) => {
                let ready = line.contains(READY);
                printed.push(line);
                if ready {
                    break;
                }
            }
            Err(_) => {
                return Err(BenchError::Setup(format!(
                    "refbus up did not get ready; it printed:\n{}",
                    printed.join("\n")
                )));
            }
        }
    }
    let started = parse_started(&printed).ok_or_else(|| {
        BenchError::Setup(format!(
            "unexpected output of refbus up:\n{}",
            printed.join("\n")
        ))
    })?;
    // The measurement itself: how much memory stays resident once nothing happens.
    std::thread::sleep(idle);
    Ok(Footprint {
        adapters: started.adapters,
        idle,
        refbus: cpu::resident(Process::Pid(child.id()))?,
        nats_server: cpu::resident(Process::Pid(started.nats_pid))?,
    })
}

/// What `refbus up` said it started.
#[derive(Debug, PartialEq, Eq)]
struct Started {
    nats_pid: u32,
    adapters: usize,
}

fn parse_started(printed: &[String]) -> Option<Started> {
    let nats_pid = printed.iter().find_map(|line| {
        let (_, after) = line.split_once(" pid ")?;
        after.split_whitespace().next()?.parse().ok()
    })?;
    let adapters = printed
        .iter()
        .filter(|line| line.trim_start().starts_with("127.0.0.1:") && line.starts_with("    "))
        .count();
    (nats_pid != 0).then_some(Started { nats_pid, adapters })
}

/// Ctrl-C, as an operator would; killed if it does not stop within 15 s.
fn stop(child: &mut Child) {
    let pid = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
    if let Some(pid) = pid {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_up_prints() {
        let printed: Vec<String> = [
            "refbus is up.",
            "",
            "  NATS (JetStream)  nats://127.0.0.1:4222   monitoring http://127.0.0.1:8222   pid 4242",
            "  data              /tmp/x",
            "",
            "  agency adapters (gRPC, refbus.v1.ReferralService; header x-refbus-operator required):",
            "    127.0.0.1:50051   maros-bappeda        Bappeda",
            "    127.0.0.1:50052   maros-dinsos         Dinas Sosial",
            "",
            "Press Ctrl-C to stop.",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            parse_started(&printed),
            Some(Started {
                nats_pid: 4242,
                adapters: 2
            })
        );
        assert_eq!(parse_started(&printed[..1]), None);
    }
}
