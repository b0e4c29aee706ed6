//! One running nats-server process: spawned with a config file, its stderr drained into a
//! [`LogBuffer`] by a thread, killed with SIGKILL and reaped.

use std::env;
use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crate::log::LogBuffer;

/// Set to anything non-empty to copy every server's log to the test's stderr, each line
/// prefixed with the server's label.
pub(crate) const ECHO_ENV: &str = "REFBUS_TESTKIT_LOG";

#[derive(Debug)]
pub(crate) struct Process {
    child: Child,
    reader: Option<JoinHandle<()>>,
}

impl Process {
    pub(crate) fn spawn(
        binary: &Path,
        config: &Path,
        label: &str,
        log: Arc<LogBuffer>,
    ) -> io::Result<Process> {
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let Some(stderr) = child.stderr.take() else {
            // Cannot happen with Stdio::piped(); not leaving a server behind if it ever does.
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(
                "nats-server started without a stderr pipe",
            ));
        };
        let echo = env::var_os(ECHO_ENV)
            .is_some_and(|value| !value.is_empty())
            .then(|| label.to_owned());
        let reader = thread::Builder::new()
            .name(format!("nats-server-log-{label}"))
            .spawn(move || drain(stderr, &log, echo.as_deref()));
        match reader {
            Ok(reader) => Ok(Process {
                child,
                reader: Some(reader),
            }),
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(error)
            }
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (`Child::kill` on Unix), as a crash would; then reaps the process and waits for
    /// the log reader to see the end of stderr, so the log is complete afterwards.
    pub(crate) fn kill(&mut self) -> io::Result<ExitStatus> {
        // Fails only if the process was already reaped, and then `wait` returns its status.
        let _ = self.child.kill();
        let status = self.child.wait()?;
        if let Some(reader) = self.reader.take() {
            // The reader only pushes lines; a panic there has nothing left to clean up.
            let _ = reader.join();
        }
        Ok(status)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Reads the server's stderr until it closes. The pipe must be drained for the server's whole
/// life: a full pipe would block the server's logging and with it the server.
fn drain(stderr: ChildStderr, log: &LogBuffer, echo: Option<&str>) {
    let mut reader = BufReader::new(stderr);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
                if let Some(label) = echo {
                    eprintln!("[{label}] {line}");
                }
                log.push(line);
            }
        }
    }
    log.close();
}
