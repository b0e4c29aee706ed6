//! A verification run: read the stream (or a JSONL export) once, in stream order; check each
//! message with the one record check (`refbus_bus::Replayer`: the part that needs no other
//! message, decoding and signatures, prepared on every core, the rest in order); give every
//! [`Check`] the message and the verdict; at the end, JetStream's own account of the stream and
//! every referral's last verified state. Shows a progress bar on a terminal, stops between two
//! messages when asked (Ctrl-C) and resumes from a small state file.
//!
//! The resume file (JSON, written 0600 beside where the auditor asked) holds the last stream
//! sequence verified, the counters, the problems found so far, every referral's last
//! verified state (by subject: what the record check of its next event needs) and each
//! check's own state (the clock check's items still owed). It is written when the run is
//! stopped and removed when a run completes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use refbus_bus::{Bus, Prepared, Replayed, Replayer, StoredMessage, StreamState, Verifier};
use refbus_core::format::RecordKind;
use refbus_core::{Referral, Timestamp};
use serde::{Deserialize, Serialize};

use crate::checks::{Check, End, Seen, Verdict};
use crate::problem::{Problem, Report};

/// How a verification runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The horizon the clocks are recomputed to (the audit's "now").
    pub now: Timestamp,
    /// Where to keep progress when stopped, and to resume from if it exists.
    pub resume: Option<PathBuf>,
    /// Show a progress bar (drawn only when stderr is a terminal).
    pub progress: bool,
}

/// Why a verification could not run (as opposed to problems it found).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("reading the stream: {0}")]
    Bus(#[from] refbus_bus::ReadError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Export(String),
    /// A file of a format this build does not read (the sentence names the file).
    #[error("{0}")]
    Format(String),
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every message was verified.
    Done(Report),
    /// Stopped on request after `last_seq`; `saved` is where progress was written, if asked.
    Stopped {
        last_seq: u64,
        saved: Option<PathBuf>,
    },
}

/// The state of a run, as the resume file holds it. `version` is the file's format
/// (`refbus_core::format::RecordKind::AuditResume`), written in every file since the first.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    version: u64,
    source: String,
    last_seq: u64,
    messages: u64,
    records: u64,
    problems: Vec<Problem>,
    states: HashMap<String, Referral>,
    checks: HashMap<String, serde_json::Value>,
}

/// The resume file's format alone, read before the rest (a newer file may not decode here).
#[derive(Deserialize)]
struct SavedVersion {
    version: u64,
}

/// One run in progress.
struct Run {
    source: String,
    replayer: Replayer,
    checks: Vec<Box<dyn Check>>,
    problems: Vec<Problem>,
    messages: u64,
    records: u64,
    last_seq: u64,
}

impl Run {
    fn start(
        source: String,
        verifier: &Verifier,
        mut checks: Vec<Box<dyn Check>>,
        resume: Option<&Path>,
    ) -> Result<Run, VerifyError> {
        let Some(saved) = resume
            .filter(|path| path.exists())
            .map(read_saved)
            .transpose()?
        else {
            return Ok(Run {
                source,
                replayer: Replayer::new(verifier),
                checks,
                problems: Vec::new(),
                messages: 0,
                records: 0,
                last_seq: 0,
            });
        };
        let path = resume.unwrap_or(Path::new(""));
        let file_error = |message: String| VerifyError::File {
            path: path.to_owned(),
            message,
        };
        if saved.source != source {
            return Err(file_error(format!(
                "it resumes a verification of {}, not of {source}",
                saved.source
            )));
        }
        let mut states = saved.checks;
        for check in &mut checks {
            let state = states.remove(check.name()).unwrap_or_default();
            check
                .restore(state)
                .map_err(|err| file_error(format!("the {} check's state: {err}", check.name())))?;
        }
        Ok(Run {
            source,
            replayer: Replayer::resume(verifier, saved.states),
            checks,
            problems: saved.problems,
            messages: saved.messages,
            records: saved.records,
            last_seq: saved.last_seq,
        })
    }

    /// Checks `message`, prepared as `prepared` ([`Replayer::prepare_referral`]), in stream
    /// order.
    fn feed(&mut self, message: &StoredMessage, prepared: Option<Prepared>) {
        self.messages += 1;
        self.last_seq = self.last_seq.max(message.seq);
        let verdict = match prepared {
            Some(prepared) => match self.replayer.check_prepared(prepared) {
                (Replayed::Record(record), before) => {
                    self.records += 1;
                    Verdict::Record {
                        before: before.map(Box::new),
                        record,
                    }
                }
                (Replayed::Refused { failure, .. }, _) => Verdict::Refused(failure),
            },
            // A notice or an index entry: its format is checked (a newer writer's is a
            // problem, never passed over); the rest is its readers' concern.
            None => match self.replayer.check_format(message) {
                Some(failure) => Verdict::Refused(failure),
                None => Verdict::Other,
            },
        };
        let seen = Seen {
            message,
            verdict: &verdict,
        };
        for check in &mut self.checks {
            check.message(seen, &mut self.problems);
        }
    }

    fn save(&self, path: &Path) -> Result<(), VerifyError> {
        let saved = Saved {
            version: RecordKind::AuditResume.written(),
            source: self.source.clone(),
            last_seq: self.last_seq,
            messages: self.messages,
            records: self.records,
            problems: self.problems.clone(),
            states: self.replayer.states().clone(),
            checks: self
                .checks
                .iter()
                .map(|check| (check.name().to_owned(), check.save()))
                .collect(),
        };
        let json = serde_json::to_vec(&saved).map_err(|err| VerifyError::File {
            path: path.to_owned(),
            message: err.to_string(),
        })?;
        write_private(path, &json)
    }

    fn finish(mut self, stream: Option<StreamState>, now: Timestamp) -> Report {
        let end = End {
            stream,
            now,
            states: self.replayer.states(),
        };
        for check in &mut self.checks {
            check.finish(end, &mut self.problems);
        }
        Report {
            source: self.source,
            messages: self.messages,
            records: self.records,
            referrals: u64::try_from(self.replayer.states().len()).unwrap_or(u64::MAX),
            last_seq: self.last_seq,
            now,
            checks: self.checks.iter().map(|c| c.name().to_owned()).collect(),
            problems: self.problems,
        }
    }
}

/// How many threads prepare a batch of an export: one per core.
fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |cores| cores.get())
}

/// Messages of an export read and prepared per thread at a time.
const BATCH: usize = refbus_bus::replay::PREPARE_BATCH;

/// [`Replayer::prepare_referrals`] of every message of `batch`, split over `workers` threads (the
/// way [`Bus::prepared_messages`] prepares a stream), in order.
fn prepare_in_parallel(
    verifier: &Verifier,
    batch: &[StoredMessage],
    workers: usize,
) -> Vec<Option<Prepared>> {
    let size = batch.len().div_ceil(workers.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = batch
            .chunks(size)
            .map(|chunk| scope.spawn(move || Replayer::prepare_referrals(verifier, chunk)))
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| match handle.join() {
                Ok(prepared) => prepared,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

fn read_saved(path: &Path) -> Result<Saved, VerifyError> {
    let file_error = |message: String| VerifyError::File {
        path: path.to_owned(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|err| file_error(err.to_string()))?;
    let not_a_resume_file =
        |err: serde_json::Error| file_error(format!("not a resume file of refbus audit: {err}"));
    let version = serde_json::from_slice::<SavedVersion>(&bytes)
        .map_err(not_a_resume_file)?
        .version;
    refbus_core::format::check(RecordKind::AuditResume, Some(version), || {
        path.display().to_string()
    })
    .map_err(|unknown| VerifyError::Format(unknown.to_string()))?;
    serde_json::from_slice(&bytes).map_err(not_a_resume_file)
}

/// Writes `bytes` to `path` readable by its owner only, replacing it atomically.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), VerifyError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file_error = |err: std::io::Error| VerifyError::File {
        path: path.to_owned(),
        message: err.to_string(),
    };
    let temporary = path.with_extension("partial");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(file_error)?;
    file.write_all(bytes).map_err(file_error)?;
    file.sync_all().map_err(file_error)?;
    std::fs::rename(&temporary, path).map_err(file_error)
}

fn progress_bar(enabled: bool, total: u64, done: u64) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    // `stderr()` draws nothing when stderr is not a terminal (a pipe, a file, CI).
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} verifying [{bar:40}] {pos}/{len} messages ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_position(done);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Verifies the stream `bus` reads with `checks` (see [`crate::checks::standard`]). Stops
/// between two messages once `stop` is set.
pub async fn verify_bus(
    bus: &Bus,
    verifier: &Verifier,
    checks: Vec<Box<dyn Check>>,
    options: &Options,
    stop: &AtomicBool,
) -> Result<Outcome, VerifyError> {
    let mut run = Run::start(
        "nats".to_owned(),
        verifier,
        checks,
        options.resume.as_deref(),
    )?;
    // JetStream's account first: everything it counts must be read.
    let stream = bus.stream_state().await?;
    let bar = progress_bar(options.progress, stream.last_seq, run.last_seq);
    // Signatures on every core, the chain in order (see `Bus::prepared_messages`).
    let mut messages = bus
        .prepared_messages(verifier, Vec::new(), run.last_seq + 1)
        .await?;
    while let Some(item) = messages.next().await {
        if stop.load(Ordering::Relaxed) {
            bar.finish_and_clear();
            return stopped(&run, options);
        }
        let (message, prepared) = item?;
        run.feed(&message, prepared);
        bar.set_position(message.seq);
    }
    bar.finish_and_clear();
    let report = run.finish(Some(stream), options.now);
    remove_resume_file(options);
    Ok(Outcome::Done(report))
}

/// Verifies a JSONL export (see [`crate::export`]) offline: the same checks, on the stored
/// messages the file holds. The sequence check uses the stream's figures only for an export
/// of the whole stream (a filtered export leaves messages out on purpose).
pub fn verify_export(
    path: &Path,
    verifier: &Verifier,
    mut checks: Vec<Box<dyn Check>>,
    options: &Options,
    stop: &AtomicBool,
) -> Result<Outcome, VerifyError> {
    use std::io::BufRead as _;
    let file = std::fs::File::open(path).map_err(|err| VerifyError::File {
        path: path.to_owned(),
        message: err.to_string(),
    })?;
    let mut lines = std::io::BufReader::new(file).lines();
    let header = crate::export::read_header(&mut lines, path)?;
    if !header.whole_stream() {
        checks.retain(|check| check.name() != "sequences");
    }
    let source = format!("export:{}", path.display());
    let mut run = Run::start(source, verifier, checks, options.resume.as_deref())?;
    let total = header.stream.map_or(0, |stream| stream.last_seq);
    let bar = progress_bar(options.progress, total, run.last_seq);
    let workers = workers();
    let mut lines = lines.enumerate().peekable();
    while lines.peek().is_some() {
        // A batch read, prepared over every core, then checked in order.
        let mut batch = Vec::with_capacity(BATCH * workers);
        for (number, line) in lines.by_ref().take(BATCH * workers) {
            let line = line.map_err(|err| VerifyError::File {
                path: path.to_owned(),
                message: err.to_string(),
            })?;
            let message = crate::export::parse_line(&line).map_err(|err| {
                VerifyError::Export(format!("{}:{}: {err}", path.display(), number + 2))
            })?;
            if message.seq > run.last_seq {
                batch.push(message);
            }
        }
        let prepared = prepare_in_parallel(verifier, &batch, workers);
        for (message, prepared) in batch.iter().zip(prepared) {
            if stop.load(Ordering::Relaxed) {
                bar.finish_and_clear();
                return stopped(&run, options);
            }
            run.feed(message, prepared);
            bar.set_position(message.seq);
        }
    }
    bar.finish_and_clear();
    let stream = header.stream.filter(|_| header.whole_stream());
    let report = run.finish(stream.map(Into::into), options.now);
    remove_resume_file(options);
    Ok(Outcome::Done(report))
}

fn stopped(run: &Run, options: &Options) -> Result<Outcome, VerifyError> {
    if let Some(path) = &options.resume {
        run.save(path)?;
    }
    Ok(Outcome::Stopped {
        last_seq: run.last_seq,
        saved: options.resume.clone(),
    })
}

fn remove_resume_file(options: &Options) {
    if let Some(path) = &options.resume {
        let _ = std::fs::remove_file(path);
    }
}
