//! One running child process (a nats-server, or chromedriver for the browser tests): its log
//! stream drained into a [`LogBuffer`] by a thread, killed with SIGKILL and reaped.

use std::env;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crate::log::LogBuffer;

/// Set to anything non-empty to copy every server's log to the test's stderr, each line
/// prefixed with the server's label.
pub(crate) const ECHO_ENV: &str = "REFBUS_TESTKIT_LOG";

/// Which of the child's output streams carries the log the harness waits on; the other is
/// discarded. nats-server logs to stderr; chromedriver announces its port on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogStream {
    #[cfg_attr(
        not(feature = "browser"),
        expect(
            dead_code,
            reason = "only chromedriver, behind the `browser` feature, logs to stdout"
        )
    )]
    Stdout,
    Stderr,
}

#[derive(Debug)]
pub(crate) struct Process {
    child: Child,
    reader: Option<JoinHandle<()>>,
}

impl Process {
    /// Starts a nats-server with the configuration file `config`.
    pub(crate) fn spawn(
        binary: &Path,
        config: &Path,
        label: &str,
        log: Arc<LogBuffer>,
    ) -> io::Result<Process> {
        let mut command = Command::new(binary);
        command.arg("-c").arg(config);
        Process::spawn_command(command, LogStream::Stderr, label, log)
    }

    /// Starts `command` with no input, draining `stream` into `log` and discarding the other.
    pub(crate) fn spawn_command(
        mut command: Command,
        stream: LogStream,
        label: &str,
        log: Arc<LogBuffer>,
    ) -> io::Result<Process> {
        let (stdout, stderr) = match stream {
            LogStream::Stdout => (Stdio::piped(), Stdio::null()),
            LogStream::Stderr => (Stdio::null(), Stdio::piped()),
        };
        let mut child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()?;
        let pipe: Option<Box<dyn Read + Send>> = match stream {
            LogStream::Stdout => child.stdout.take().map(|pipe| Box::new(pipe) as _),
            LogStream::Stderr => child.stderr.take().map(|pipe| Box::new(pipe) as _),
        };
        let Some(pipe) = pipe else {
            // Cannot happen with Stdio::piped(); not leaving a process behind if it ever does.
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "{label} started without its log pipe"
            )));
        };
        let echo = env::var_os(ECHO_ENV)
            .is_some_and(|value| !value.is_empty())
            .then(|| label.to_owned());
        let reader = thread::Builder::new()
            .name(format!("log-{label}"))
            .spawn(move || drain(pipe, &log, echo.as_deref()));
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

/// Reads the child's log stream until it closes. The pipe must be drained for the child's whole
/// life: a full pipe would block the child's logging and with it the child.
fn drain(pipe: Box<dyn Read + Send>, log: &LogBuffer, echo: Option<&str>) {
    let mut reader = BufReader::new(pipe);
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
