//! `refbus bench notary`: the notary (crates/notary, [`refbus_notary::Notary::run`], as
//! `refbus notary` runs it) following the stream while the stream is filled as fast as
//! JetStream takes it, and how long after an event is stored a signed checkpoint covers it.
//!
//! 1. `referrals` whole lives ([`Writer::audit_lives`], eight events each), built first.
//! 2. A notary starts on the empty stream (a fresh log directory, checkpoints every
//!    `interval`, 1 s as `refbus notary`'s default); a subscriber records when each announced
//!    checkpoint arrives and its size.
//! 3. The lives are published with a window of outstanding acknowledgements: the highest
//!    ingest the stream takes (the adapters' and the router's together stay below it), or at
//!    a steady rate when one is given (the router's maximum ingest, say). The
//!    ingest rate is messages over the time from the first publish to the last
//!    acknowledgement; the notary's live figure is when its tree held every message.
//! 4. The notary's own throughput: a second notary, fresh log, over the whole stored stream
//!    (its start reads the stream and rebuilds the tree, then writes every tile and signs),
//!    timed until its tree holds every message. Its rate over the ingest rate is the ratio
//!    reported (at least 1: the notary keeps up).
//! 5. Every message's JetStream stored time, read back, against the arrival of the first
//!    checkpoint whose size covers its sequence: the latency distribution (goal: p99 <= 2 s).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures::StreamExt;
use refbus_core::Registry;
use refbus_notary::note::{KeyKind, NoteKey};
use refbus_notary::{Notary, Settings, Stats};

use crate::histories;
use crate::router::connect;
use crate::timing::{Lateness, goal_line, now_nanos, seconds, thousands, unix_nanos};
use crate::{BenchError, Server};

/// The goal: the notary appends at least as fast as the stream takes messages.
pub const MIN_RATIO_TO_INGEST: f64 = 1.0;
/// The goal: a checkpoint covers an event within this long, at p99.
pub const MAX_P99_COVERED: Duration = Duration::from_secs(2);

/// How much.
#[derive(Debug, Clone)]
pub struct NotaryOptions {
    pub referrals: usize,
    /// Referrals whose events are interleaved.
    pub group: usize,
    /// Publishes whose acknowledgements may be outstanding.
    pub window: usize,
    /// How often the notary signs a checkpoint when its log grew.
    pub interval: Duration,
    /// Publishes a second while filling (`None`: as fast as the stream takes them).
    pub rate: Option<u32>,
}

impl Default for NotaryOptions {
    fn default() -> NotaryOptions {
        NotaryOptions {
            referrals: 100_000,
            group: 100,
            window: 1024,
            interval: Duration::from_secs(1),
            rate: None,
        }
    }
}

/// What was measured.
#[derive(Debug, Clone)]
pub struct NotaryReport {
    pub referrals: usize,
    pub messages: u64,
    pub interval: Duration,
    /// The fill's steady rate (`None`: as fast as the stream takes it).
    pub rate: Option<u32>,
    /// Ingest: first publish to last acknowledgement.
    pub fill: Duration,
    /// The live notary: first publish until its tree held every message.
    pub live: Duration,
    /// A fresh notary over the whole stored stream: start until its tree held every message.
    pub backlog: Duration,
    /// Checkpoints announced while the stream was filled and after.
    pub checkpoints: usize,
    /// Messages no announced checkpoint covered (0 unless the run is broken).
    pub uncovered: u64,
    /// Event stored to the arrival of the first checkpoint covering it.
    pub covered: Lateness,
}

impl NotaryReport {
    fn rate(&self, time: Duration) -> f64 {
        self.messages as f64 / time.as_secs_f64().max(1e-9)
    }

    /// The notary's throughput over a backlog, as a share of the ingest rate.
    pub fn ratio_to_ingest(&self) -> f64 {
        self.fill.as_secs_f64() / self.backlog.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for NotaryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "notary: {} referrals, {} messages, a checkpoint every {} ms when the log grew",
            self.referrals,
            self.messages,
            self.interval.as_millis()
        )?;
        match self.rate {
            None => writeln!(
                f,
                "  ingest (raw publish, window)      {} ({} msg/s)",
                seconds(self.fill),
                thousands(self.rate(self.fill))
            )?,
            Some(rate) => writeln!(
                f,
                "  ingest (paced at {rate}/s)          {} ({} msg/s)",
                seconds(self.fill),
                thousands(self.rate(self.fill))
            )?,
        }
        writeln!(
            f,
            "  live notary, every leaf appended  {} after the first publish ({} after the last ack)",
            seconds(self.live),
            seconds(self.live.saturating_sub(self.fill))
        )?;
        writeln!(
            f,
            "  fresh notary over the backlog     {} ({} msg/s)",
            seconds(self.backlog),
            thousands(self.rate(self.backlog))
        )?;
        writeln!(
            f,
            "  stored -> first checkpoint covering it, ms: p50 / p90 / p99 / max\n    {}",
            self.covered.row()
        )?;
        writeln!(
            f,
            "  {} checkpoint(s) announced, {} message(s) never covered",
            self.checkpoints, self.uncovered
        )?;
        writeln!(
            f,
            "{}",
            goal_line(
                self.ratio_to_ingest() >= MIN_RATIO_TO_INGEST,
                "notary throughput / ingest rate",
                &format!("{:.2}x", self.ratio_to_ingest()),
                &format!(">= {MIN_RATIO_TO_INGEST}x"),
            )
        )?;
        writeln!(
            f,
            "{}",
            goal_line(
                self.uncovered == 0 && self.covered.p99 <= MAX_P99_COVERED.as_secs_f64() * 1e3,
                "p99 event stored -> covered by a checkpoint",
                &format!("{:.0} ms", self.covered.p99),
                &format!("<= {} ms", MAX_P99_COVERED.as_millis()),
            )
        )
    }
}

/// A notary started in the background on `server`'s stream, with a fresh log in `dir`.
struct Running {
    stats: Arc<Stats>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), refbus_notary::NotaryError>>,
}

impl Running {
    async fn start(
        url: &str,
        dir: std::path::PathBuf,
        interval: Duration,
    ) -> Result<Running, BenchError> {
        let key = NoteKey::generate("bench.refbus.notary", KeyKind::Notary)
            .map_err(|err| BenchError::Setup(format!("notary key: {err}")))?;
        let stats = Arc::new(Stats::default());
        let notary = Notary {
            bus: connect(url).await?,
            key,
            settings: Settings {
                dir,
                origin: "bench.refbus.notary".to_owned(),
                interval,
                metrics: None,
                stream_recheck_every: refbus_bus::statement::RECHECK_EVERY,
            },
            stats: stats.clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(notary.run(None, async move {
            let _ = stopped.await;
        }));
        Ok(Running { stats, stop, task })
    }

    /// Waits until the tree holds `size` leaves (the notary failing ends the wait).
    async fn holds(&self, size: u64) -> Result<(), BenchError> {
        while self.stats.size.load(Ordering::Relaxed) < size {
            if self.task.is_finished() {
                return Err(BenchError::Setup(
                    "the notary stopped before its log held every message".to_owned(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    async fn stop(self) -> Result<(), BenchError> {
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|err| BenchError::Setup(format!("the notary's task: {err}")))?
            .map_err(|err| BenchError::Setup(format!("the notary: {err}")))
    }
}

/// A checkpoint's size: the second line of its note (C2SP tlog-checkpoint).
fn checkpoint_size(note: &[u8]) -> Option<u64> {
    std::str::from_utf8(note).ok()?.lines().nth(1)?.parse().ok()
}

/// Every message's JetStream stored time (Unix nanoseconds), by sequence (index 0 is seq 1).
async fn stored_times(
    stream: &async_nats::jetstream::stream::Stream,
    last: u64,
) -> Result<Vec<i64>, BenchError> {
    let nats = |err: &dyn std::fmt::Display| BenchError::Nats(err.to_string());
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| nats(&e))?;
    let mut times = vec![0; usize::try_from(last).unwrap_or(0)];
    let mut messages = consumer.messages().await.map_err(|e| nats(&e))?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| nats(&e))?;
        let info = message.info().map_err(|e| nats(&e))?;
        if let Some(slot) = usize::try_from(info.stream_sequence)
            .ok()
            .and_then(|seq| times.get_mut(seq.wrapping_sub(1)))
        {
            *slot = unix_nanos(&info);
        }
        if info.stream_sequence >= last {
            break;
        }
    }
    Ok(times)
}

/// For each message (stored at `stored[seq - 1]`), the time from being stored to the first
/// `checkpoints` (arrival nanos, size; in arrival order) covering it; and how many none covers.
fn covering(stored: &[i64], checkpoints: &[(i64, u64)]) -> (Vec<i64>, u64) {
    let mut latencies = Vec::with_capacity(stored.len());
    let mut covered_to = 0usize;
    for &(arrived, size) in checkpoints {
        let size = usize::try_from(size)
            .unwrap_or(usize::MAX)
            .min(stored.len());
        while covered_to < size {
            latencies.push(arrived - stored[covered_to]);
            covered_to += 1;
        }
    }
    (latencies, (stored.len() - covered_to) as u64)
}

pub fn notary(
    server: &Server,
    registry: Arc<Registry>,
    options: &NotaryOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<NotaryReport, BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let crate::audit::Lives {
        messages,
        bus,
        js,
        stream,
    } = crate::audit::lives(
        &runtime,
        server,
        registry,
        "notary",
        (options.referrals, options.group),
        progress,
    )?;
    let expected = messages.len() as u64;
    let scratch = std::env::temp_dir().join(format!("refbus-bench-notary-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let result: Result<NotaryReport, BenchError> = runtime.block_on(async {
        // The announcements, as a witness or an agency's system would see them.
        let client = async_nats::connect(&server.url)
            .await
            .map_err(|err| BenchError::Nats(err.to_string()))?;
        let mut announced = client
            .subscribe(refbus_bus::subjects::LOG_CHECKPOINT)
            .await
            .map_err(|err| BenchError::Nats(err.to_string()))?;
        client
            .flush()
            .await
            .map_err(|err| BenchError::Nats(err.to_string()))?;
        let (arrivals_tx, arrivals) = tokio::sync::oneshot::channel::<Vec<(i64, u64)>>();
        let (stop_listening, mut listening_stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut arrived = Vec::new();
            loop {
                tokio::select! {
                    _ = &mut listening_stopped => break,
                    note = announced.next() => match note {
                        Some(note) => {
                            if let Some(size) = checkpoint_size(&note.payload) {
                                arrived.push((now_nanos(), size));
                            }
                        }
                        None => break,
                    },
                }
            }
            let _ = arrivals_tx.send(arrived);
        });

        progress(&format!(
            "filling the stream ({expected} messages) with a notary following it"
        ));
        let live = Running::start(&server.url, scratch.join("live"), options.interval).await?;
        let started = Instant::now();
        let fill = match options.rate {
            None => histories::publish_planned(&js, messages, options.window, None).await?,
            Some(rate) => histories::publish_paced(&js, messages, options.window, rate).await?,
        };
        let last = bus
            .last_sequence()
            .await
            .map_err(|err| BenchError::Nats(err.to_string()))?;
        live.holds(last).await?;
        let live_time = started.elapsed();
        // One interval and a little more: the checkpoint covering the last message.
        while live.stats.checkpointed.load(Ordering::Relaxed) < last && !live.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        live.stop().await?;
        let _ = stop_listening.send(());
        let arrivals = arrivals
            .await
            .map_err(|_| BenchError::Setup("the checkpoint listener stopped".to_owned()))?;

        progress("a fresh notary over the whole stored stream");
        let started = Instant::now();
        let backlog =
            Running::start(&server.url, scratch.join("backlog"), options.interval).await?;
        backlog.holds(last).await?;
        let backlog_time = started.elapsed();
        backlog.stop().await?;

        progress("reading every message's stored time");
        let stored = stored_times(&stream, last).await?;
        let (latencies, uncovered) = covering(&stored, &arrivals);
        Ok(NotaryReport {
            referrals: options.referrals,
            messages: last,
            interval: options.interval,
            rate: options.rate,
            fill,
            live: live_time,
            backlog: backlog_time,
            checkpoints: arrivals.len(),
            uncovered,
            covered: Lateness::of(latencies),
        })
    });
    let _ = std::fs::remove_dir_all(&scratch);
    let report = result?;
    if report.messages != expected {
        return Err(BenchError::Stored {
            phase: "notary fill".to_owned(),
            expected,
            stored: report.messages,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_is_covered_by_the_first_checkpoint_whose_size_reaches_it() {
        let stored = [100, 110, 120, 130];
        // A checkpoint of 2 at 200, one of 2 again (no growth) at 250, one of 4 at 300.
        let (latencies, uncovered) = covering(&stored, &[(200, 2), (250, 2), (300, 4)]);
        assert_eq!(latencies, vec![100, 90, 180, 170]);
        assert_eq!(uncovered, 0);
        let (latencies, uncovered) = covering(&stored, &[(200, 3)]);
        assert_eq!(latencies, vec![100, 90, 80]);
        assert_eq!(uncovered, 1);
    }

    #[test]
    fn a_checkpoint_size_is_its_second_line() {
        let note = b"bench.refbus.notary\n42\nAAAA=\n\n\xe2\x80\x94 bench abc\n";
        assert_eq!(checkpoint_size(note), Some(42));
        assert_eq!(checkpoint_size(b"origin\nnot a number\n"), None);
    }
}
