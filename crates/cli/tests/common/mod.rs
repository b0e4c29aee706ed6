//! What the tests of the `refbus` binary share: running it as an administrator would, from the
//! repository's root, and the processes they start (`refbus up`, a router's start).
// Each test file uses some of these, not all.
#![allow(dead_code)]

pub(crate) mod router_start;
pub(crate) mod up;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// The repository's root: where an administrator runs `refbus`, with deploy/config beside it.
pub(crate) fn repo_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `refbus` binary under test with `args`, run from the repository's root and without the
/// caller's `REFBUS_NATS_URL` (a developer's own server never stands in for the test's).
pub(crate) fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_refbus"));
    command
        .current_dir(repo_root())
        .args(args)
        .env_remove("REFBUS_NATS_URL");
    command
}

/// Runs `refbus` with `args` to its end, nothing on its standard input.
pub(crate) fn refbus(args: &[&str]) -> Output {
    command(args)
        .stdin(Stdio::null())
        .output()
        .expect("the refbus binary runs")
}

/// Runs `refbus` with `args` to its end, `input` on its standard input (a password, a note).
pub(crate) fn refbus_with_input(args: &[&str], input: &str) -> Output {
    let mut child = command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the refbus binary runs");
    // A refusal may come before the input is read: a closed pipe is not the test's failure.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().unwrap()
}

/// Runs `refbus` with `args`, which must succeed.
pub(crate) fn refbus_ok(args: &[&str]) -> Output {
    let output = refbus(args);
    assert!(output.status.success(), "refbus {args:?}: {output:?}");
    output
}

/// What it printed, standard output then standard error.
pub(crate) fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A `refbus` process that is killed when the test ends, however it ends.
pub(crate) struct Process(pub(crate) Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
