//! The campaign's child processes (nats-server nodes and the real `refbus` components): start,
//! kill -9, pause and resume, restart with the same command line, and supervise (a process
//! that exits on its own is started again, as systemd's `Restart=on-failure` would, and the
//! exit is logged).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context as _;
use rustix::process::{Pid, Signal, kill_process};

/// One supervised child process.
#[derive(Debug)]
pub struct Proc {
    /// What the fault log calls it: `n1`, `router-r1`, `adapter-maros-dinsos`, `notary`.
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<tokio::process::Child>,
    paused: bool,
    /// Killed on purpose (by the nemesis): the supervisor leaves it down.
    held_down: bool,
    /// Times it exited without being killed.
    pub unexpected_exits: u32,
}

impl Proc {
    /// A process that runs `program args`, logging to `log` (appended across restarts).
    pub fn new(name: &str, program: &Path, args: Vec<String>, log: PathBuf) -> Proc {
        Proc {
            name: name.to_owned(),
            program: program.to_path_buf(),
            args,
            log,
            child: None,
            paused: false,
            held_down: false,
            unexpected_exits: 0,
        }
    }

    /// Replaces the command line used from the next start on (a router's clock jump).
    pub fn set_args(&mut self, args: Vec<String>) {
        self.args = args;
    }

    pub fn args(&self) -> &[String] {
        &self.args
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// Starts the process. It is given a parent-death SIGKILL (through `setpriv`, when the
    /// machine has it) so that nothing outlives a campaign killed itself.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut command = match setpriv() {
            Some(setpriv) => {
                let mut command = tokio::process::Command::new(setpriv);
                command
                    .args(["--pdeathsig", "KILL", "--"])
                    .arg(&self.program);
                command
            }
            None => tokio::process::Command::new(&self.program),
        };
        let child = command
            .args(&self.args)
            .env(
                "REFBUS_LOG",
                "warn,refbus=info,refbus_router=info,refbus_adapter=info",
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.program.display()))?;
        self.child = Some(child);
        self.paused = false;
        self.held_down = false;
        Ok(())
    }

    /// SIGKILL, as a crash would; waits until it is gone. It stays down until [`Proc::start`].
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.held_down = true;
        if let Some(mut child) = self.child.take() {
            // A stopped process dies of SIGKILL too.
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        self.paused = false;
        Ok(())
    }

    /// SIGSTOP: it keeps its sockets open and answers nothing, like a stalled disk or a paused VM.
    pub fn pause(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::STOP)?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        if self.paused {
            self.signal(Signal::CONT)?;
            self.paused = false;
        }
        Ok(())
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .and_then(|pid| Pid::from_raw(i32::try_from(pid).ok()?))
            .with_context(|| format!("{} is not running", self.name))?;
        kill_process(pid, signal).with_context(|| format!("signalling {}", self.name))
    }

    /// Whether it should be running and is not: it exited on its own (a router whose events
    /// stopped exits for its supervisor to restart it). Counts the exit.
    pub fn exited_unexpectedly(&mut self) -> Option<String> {
        if self.held_down {
            return None;
        }
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                self.unexpected_exits += 1;
                Some(status.to_string())
            }
            _ => None,
        }
    }

    /// Whether it was never started or was killed and not started again.
    pub fn is_down(&self) -> bool {
        self.child.is_none()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }
}

/// `setpriv` when it can set a parent-death signal (util-linux 2.33+).
fn setpriv() -> Option<&'static Path> {
    static SETPRIV: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            let path = std::env::var_os("PATH")?;
            let setpriv = std::env::split_paths(&path)
                .map(|dir| dir.join("setpriv"))
                .find(|candidate| candidate.is_file())?;
            let works = std::process::Command::new(&setpriv)
                .args(["--pdeathsig", "KILL", "--", "true"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            works.then_some(setpriv)
        })
        .as_deref()
}
