//! Starting `refbus up` on free ports, for the tests of its process.

use std::io::{BufRead, BufReader};
use std::ops::{Deref, DerefMut};
use std::process::{Child, Command, Stdio};

use refbus_testkit::{free_port, free_ports};

/// `refbus up` with `extra` arguments, keeping its data in `data_dir`, on free ports.
pub(crate) fn command(data_dir: &std::path::Path, extra: &[&str]) -> Command {
    let mut command = super::command(&["up"]);
    command
        .args(extra)
        .arg("--data-dir")
        .arg(data_dir)
        // Room for three nodes of each (`--cluster 3`; one server uses the first).
        .args(["--nats-port", &free_ports(3).to_string()])
        .args(["--nats-monitor-port", &free_ports(3).to_string()])
        .args(["--nats-cluster-port", &free_ports(3).to_string()])
        .args(["--base-port", &free_ports(8).to_string()])
        .args(["--dashboard-port", &free_port().to_string()])
        .args(["--notary-port", &free_port().to_string()]);
    command
}

/// Starts `refbus up` on free ports and reads its output until it says it is up; returns
/// what it printed until then. `extra` are more arguments (e.g. `--demo`). Other tests run beside this one and start servers on ports of their own: if one
/// took a port between choosing it and `up` binding it, `up` ends early, and it is started
/// again on other ports; three early ends in a row fail the test, with what `up` said.
pub(crate) fn start_up(data_dir: &std::path::Path, extra: &[&str]) -> (Up, Vec<String>) {
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let mut child = command(data_dir, extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = Vec::new();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let up = loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 {
                break false;
            }
            let done = line.contains("Press Ctrl-C");
            lines.push(line);
            if done {
                break true;
            }
        };
        if up {
            // What it prints from here on (the router's actions, its log) is not needed;
            // reading it keeps its pipes from filling up.
            let stderr = child.stderr.take().unwrap();
            std::thread::spawn(move || for _ in reader.lines() {});
            std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
            return (Up(child), lines);
        }
        let mut said = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut said).unwrap();
        let _ = child.wait();
        attempts.push(format!("{lines:?}\n{said}"));
    }
    panic!(
        "refbus up ended early three times:\n{}",
        attempts.join("\n---\n")
    );
}

/// A running `refbus up`: stopped with Ctrl-C (SIGINT) when dropped while it still runs, so a
/// failing test takes it and its nats-server down rather than leaving them running.
pub(crate) struct Up(pub(crate) Child);

impl Deref for Up {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Up {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        // It stops within seconds (tests/up.rs holds it to that); if it ever does not, it is
        // killed rather than left to hang the test run.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
