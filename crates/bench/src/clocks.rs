//! `refbus bench clocks`: the router's timers at scale, as deployed (a `refbus router` process
//! with the system clock), and JetStream message schedules on the same server for comparison.
//!
//! 1. A million open referrals with pending clocks (the mix of [`histories::MIX`], each stamped
//!    within the minute before it is stored, so the record check passes it and nothing falls
//!    due during the run), then a router restarted on them:
//!    the time from starting the process to its ready line (registry, connection, stream check,
//!    every timer rebuilt from each referral's last message), and its resident memory once
//!    ready. Its consumer is where a router that had processed everything left it.
//! 2. With that router still running, a hundred thousand more referrals whose items under the
//!    bench clock (the 50 % warning and the first escalation, [`histories::DUE_KIND`],
//!    [`DUE_CLOCK`]) fall due spread evenly over one minute, starting a while after the router
//!    has caught up with them. The lateness of every item: from its due time to the stored
//!    escalation event's JetStream timestamp.
//!
//! The registry is the deployment's (Kabupaten Maros) with one clock added for the benchmark
//! ([`bench_config`]): its items fall due [`DUE_AFTER`] after a referral's creation, so the due
//! referrals are stamped within the record check's allowed skew of when JetStream stores them
//! and the router checks them as it checks any record. No Maros clock falls due sooner than half
//! an hour after its start, and a create stamped half an hour early is refused (Problem `time`).
//! 3. [`schedules`]: the same number of `@at` message schedules over one minute.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use refbus_bus::{EventRecord, subjects};
use refbus_core::{Actor, Change, Registry, Timestamp};
use tokio::runtime::Runtime;

use crate::child::{Ready, RouterProcess};
use crate::cpu::{self, Process, Resident};
use crate::histories::{self, DUE_ITEMS, DUE_KIND, MIX, Writer};
use crate::router::{Conditions, connect, fresh_stream, system_now};
use crate::schedules::{self, ScheduleFigures, ScheduleOptions};
use crate::timing::{self, Lateness, goal_line, mib, seconds, thousands};
use crate::{BenchError, Server};

/// The router's replica name: its durable consumer is `refbus-router-bench`.
pub const REPLICA: &str = "bench";
/// Resident memory of a router holding a million open referrals.
pub const MEMORY_LIMIT: u64 = 512 * 1024 * 1024;
/// From starting a router to its timers ready, with a million open referrals (issue 12: a
/// snapshot of its verified timer table plus the stream's tail).
pub const READY_LIMIT: Duration = Duration::from_secs(3);
/// From a partitioned router's death to its partitions taken over by the others (issue 12).
pub const TAKEOVER_LIMIT: Duration = Duration::from_secs(10);
/// p99 of the time from an item's due time to its event stored in JetStream, in milliseconds,
/// with every event signed and every record read checked (it was 50 ms before signatures).
pub const P99_LIMIT_MS: f64 = 20.0;
/// The build an agency would otherwise write: a PostgreSQL table of deadlines polled every
/// 100 ms, and every second (p99 lateness on this machine kind, from the issue that set the
/// goals; not measured here).
pub const POLLED_100MS_P99_MS: f64 = 270.0;
pub const POLLED_1S_P99_MS: f64 = 970.0;

/// The clock of the due minute, appended to a copy of the deployment's main file by
/// [`bench_config`] (so it joins the policy version defined last, the one in force): it applies
/// only to [`DUE_KIND`] (emergency counselling, which no open referral of [`MIX`] is), and its
/// 50 % warning and its escalation's first level fall due [`DUE_AFTER`] after the referral's
/// creation; its breach comes two minutes after that, when the measurement is over.
pub const DUE_CLOCK: &str = r#"
# === Added by `refbus bench clocks` to its copy of the configuration: never deployed ===========
# The due minute's clock: its items fall due 2 minutes after a referral's creation, so the
# benchmark's referrals are stamped within the record check's allowed skew of their storage.

[[policy.clock]]
id = "bench_due_minute"
title = "Benchmark only: half time two minutes after the request"
basis = "refbus bench clocks (never deployed)"
services = ["psychological_counselling"]
priorities = ["emergency"]
start = "requested"
stop = ["accepted", "rejected"]
pause_on_hold = false
target = "4m"
calendar = "wall_clock"
responsible = "recipient"
warnings = ["50%"]
escalation = "bench_due_minute"

[[policy.escalation]]
id = "bench_due_minute"
title = "Benchmark only: the recipient's supervisor at half time"

[[policy.escalation.level]]
at = "50%"
notify = ["responsible.supervisor"]
"#;

/// The id of [`DUE_CLOCK`].
pub const DUE_CLOCK_ID: &str = "bench_due_minute";

/// From a due referral's creation to its items under [`DUE_CLOCK`] (half its target).
pub const DUE_AFTER: Duration = Duration::from_secs(120);

/// Copies the directory of the deployment's main file `config` (the files it includes with it)
/// into `into`, appends [`DUE_CLOCK`] to the copy of the main file, and returns the copy's path:
/// the registry of `bench clocks`, for the benchmark's writers and its router process alike.
pub fn bench_config(config: &Path, into: &Path) -> Result<PathBuf, BenchError> {
    let name = config
        .file_name()
        .ok_or_else(|| BenchError::Setup(format!("{} is not a file", config.display())))?;
    let dir = config.parent().unwrap_or_else(|| Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    copy_dir(dir, into)?;
    let main = into.join(name);
    let mut text = std::fs::read_to_string(&main)?;
    text.push_str(DUE_CLOCK);
    std::fs::write(&main, text)?;
    Ok(main)
}

/// Checks [`DUE_CLOCK`] is in the policy in force at `now` (it joins the version defined last).
pub fn check_due_clock(registry: &Registry, now: Timestamp) -> Result<(), BenchError> {
    let in_force = registry
        .policy_in_force(now)
        .ok_or_else(|| BenchError::Setup(format!("no clock policy in force at {now}")))?;
    if in_force
        .clocks
        .iter()
        .any(|clock| clock.id.as_str() == DUE_CLOCK_ID)
    {
        Ok(())
    } else {
        Err(BenchError::Setup(format!(
            "the bench clock {DUE_CLOCK_ID} joined another policy version than {} (in force now): define the version in force last in the configuration",
            in_force.version
        )))
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), BenchError> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// How much, and how long.
#[derive(Debug, Clone)]
pub struct ClocksOptions {
    /// Open referrals with pending clocks.
    pub open: usize,
    /// Referrals falling due within `spread`.
    pub due: usize,
    pub spread: Duration,
    /// From the router having caught up with the due referrals to the first due time, at
    /// least.
    pub lead: Duration,
    /// Publishes whose acknowledgements may be outstanding while filling.
    pub window: usize,
    /// Threads building the referral events while the stream fills.
    pub builders: usize,
    /// How long the ready router idles before its memory is read.
    pub settle: Duration,
    /// `None`: skip the message schedules.
    pub schedules: Option<ScheduleOptions>,
    /// Then the same with this many partitioned routers sharing the referrals, one run each
    /// (empty: skip).
    pub routers: Vec<usize>,
    /// Partitions the partitioned routers share (divisible by each of `routers`, so each
    /// holds the same share).
    pub partitions: u32,
}

impl Default for ClocksOptions {
    fn default() -> Self {
        ClocksOptions {
            open: 1_000_000,
            due: 100_000,
            spread: Duration::from_secs(60),
            lead: Duration::from_secs(20),
            window: 1024,
            builders: 2,
            settle: Duration::from_secs(3),
            schedules: Some(ScheduleOptions::default()),
            routers: vec![1, 2, 3],
            partitions: 6,
        }
    }
}

/// The restart with every open referral.
#[derive(Debug, Clone, PartialEq)]
pub struct Restart {
    pub open: usize,
    /// Building and publishing the open referrals.
    pub fill: Duration,
    /// The first start: no snapshot yet, every open referral read and checked.
    pub ready: Ready,
    /// Started again once the first had written its snapshot of timers: what a restart costs
    /// in a deployment (the router writes one every minute).
    pub from_snapshot: Ready,
    /// The router's CPU time from its start to its ready line.
    pub cpu: Duration,
    /// nats-server's CPU time from the router's start to its ready line.
    pub server_cpu: Duration,
    /// The router once ready and idle.
    pub memory: Resident,
    pub nats_server: Resident,
}

/// The minute of due clocks.
#[derive(Debug, Clone, PartialEq)]
pub struct DueMinute {
    /// When the first item fell due.
    pub first_due: Timestamp,
    pub referrals: usize,
    pub spread: Duration,
    /// Items expected (every referral's two) and found recorded, and message ids seen twice.
    pub expected: usize,
    pub recorded: usize,
    pub duplicates: usize,
    /// From the router having acknowledged every due referral's create to the first due time:
    /// negative if it was still catching up when the minute began.
    pub margin_seconds: f64,
    /// From each item's due time to its event's JetStream timestamp.
    pub stored: Lateness,
    /// From each item's due time to the event's `at` (the router's "now" when it decided, in
    /// whole milliseconds).
    pub decided: Lateness,
    /// Items stored later than the goal, by the second of the spread they fell due in: a
    /// stall shows as a few seconds, an overload as a long run.
    pub late_by_second: BTreeMap<i64, usize>,
    /// CPU time over the minute (from the first due time to the last item stored).
    pub router_cpu: Duration,
    pub server_cpu: Duration,
    pub memory_after: Resident,
}

/// Everything `refbus bench clocks` measured.
#[derive(Debug, Clone)]
pub struct ClocksReport {
    pub conditions: Conditions,
    pub restart: Restart,
    pub due: DueMinute,
    /// The same over 1, 2, 3 … partitioned routers (`--routers`).
    pub partitioned: Vec<Partitioned>,
    pub schedules: Option<ScheduleFigures>,
}

/// A bench's client runtime and a fresh events stream on `server`, created and checked by the
/// bus as a component does.
pub(crate) struct Fresh {
    pub(crate) runtime: Runtime,
    pub(crate) control: jetstream::Context,
    pub(crate) conditions: Conditions,
    pub(crate) js: jetstream::Context,
    pub(crate) stream: stream::Stream,
}

impl Fresh {
    pub(crate) fn stream(server: &Server, window: usize) -> Result<Fresh, BenchError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name(crate::harness::CLIENT_THREADS)
            .enable_all()
            .build()?;
        let (nats_version, control) = runtime.block_on(async {
            let client = async_nats::connect(&server.url)
                .await
                .map_err(|err| BenchError::Nats(err.to_string()))?;
            Ok::<_, BenchError>((client.server_info().version, jetstream::new(client)))
        })?;
        let conditions = Conditions::now(server, nats_version, window, 0);
        fresh_stream(&runtime, &control)?;
        runtime.block_on(connect(&server.url))?;
        let (js, stream) = runtime.block_on(crate::raw::jetstream(&server.url))?;
        Ok(Fresh {
            runtime,
            control,
            conditions,
            js,
            stream,
        })
    }
}

/// Builds and publishes `open` open referrals of the kinds of [`MIX`]; returns how many were
/// sent and how long it took.
pub(crate) fn publish_open(
    runtime: &Runtime,
    js: &jetstream::Context,
    registry: &Arc<Registry>,
    open: usize,
    builders: usize,
    window: usize,
) -> Result<(usize, Duration), BenchError> {
    let writer = Arc::new(Writer::new(registry.clone(), "open"));
    let chunks = histories::build_in_background(open, 5_000, builders, move |range| {
        writer.creates(
            range,
            |index| MIX[index % MIX.len()],
            // Stamped when built, less up to a minute: JetStream stores them within seconds,
            // well within the record check's skew (a record stamped further from its storage
            // is refused, and a rebuild would skip it). Their earliest items fall due half an
            // hour after.
            |index| system_now().minus(Duration::from_millis((index % 60_000) as u64)),
        )
    });
    runtime.block_on(histories::publish_chunks(js, chunks, window))
}

/// Runs every phase. `router(url)` is the `refbus router` command for the server at `url`
/// with replica [`REPLICA`] and the same registry (its standard error directed by the caller).
pub fn clocks(
    server: &Server,
    registry: Arc<Registry>,
    router: &dyn Fn(&str, Option<Share<'_>>) -> Command,
    options: &ClocksOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<ClocksReport, BenchError> {
    let Fresh {
        runtime,
        control,
        mut conditions,
        js,
        stream,
    } = Fresh::stream(server, options.window)?;

    progress(&format!(
        "1. {} open referrals with pending clocks (built and published)",
        thousands(options.open as f64)
    ));
    let (sent, fill) = publish_open(
        &runtime,
        &js,
        &registry,
        options.open,
        options.builders,
        options.window,
    )?;
    let open_last = stored(&runtime, &stream, sent)?;
    // Where a router that had processed every event would have left its consumer: created as
    // the router creates it (the router refuses any other), its ack floor then moved past
    // every event (ADR-60 consumer reset, nats-server 2.14).
    let durable = format!("refbus-router-{REPLICA}");
    runtime.block_on(async {
        timing::durable(&stream, &durable, DeliverPolicy::All).await?;
        stream
            .reset_consumer(&durable, Some(open_last + 1))
            .await
            .map_err(|err| BenchError::Nats(format!("resetting consumer {durable}: {err}")))
    })?;

    progress("1. restarting the router on them");
    let nats_server = cpu::resident(Process::Pid(server.pid))?;
    let server_before = cpu::process_cpu(Process::Pid(server.pid))?;
    let mut child = RouterProcess::start(router(&server.url, None))?;
    let ready = child.wait_ready(Duration::from_secs(300))?;
    let server_cpu = cpu::process_cpu(Process::Pid(server.pid))?.saturating_sub(server_before);
    let router_cpu = child.cpu()?;
    if ready.referrals != sent {
        return Err(BenchError::Setup(format!(
            "the router rebuilt {} referrals of {sent}",
            ready.referrals
        )));
    }
    progress(&format!(
        "1. ready in {} ({} referrals); CPU meanwhile: router {}, nats-server {}",
        seconds(ready.after),
        thousands(ready.referrals as f64),
        seconds(router_cpu),
        seconds(server_cpu)
    ));
    progress("1. restarting it again, from the snapshot of its timers");
    child.wait_snapshot(Duration::from_secs(300))?;
    child.stop();
    let mut child = RouterProcess::start(router(&server.url, None))?;
    let from_snapshot = child.wait_ready(Duration::from_secs(300))?;
    progress(&format!(
        "1. ready in {} from the snapshot ({} referrals read again)",
        seconds(from_snapshot.after),
        thousands(from_snapshot.referrals as f64),
    ));
    std::thread::sleep(options.settle);
    let restart = Restart {
        open: sent,
        fill,
        ready,
        from_snapshot,
        cpu: router_cpu,
        server_cpu,
        memory: child.resident()?,
        nats_server,
    };

    progress(&format!(
        "2. {} referrals with clocks due within {} s",
        thousands(options.due as f64),
        options.spread.as_secs()
    ));
    let mut children = [child];
    let due = due_minute(
        server,
        &runtime,
        &stream,
        &registry,
        &mut children,
        &[format!("refbus-router-{REPLICA}")],
        "due",
        options,
        fill,
        sent,
        progress,
    )?;
    let [child] = children;
    child.stop();

    let mut partitioned = Vec::new();
    let mut open_now = sent + due.referrals;
    let mut previous = due.clone();
    if !options.routers.is_empty() {
        // Each partition's consumer where routers that had processed every event would have
        // left it, as for the single router above.
        // Nothing is ever deleted from the stream: its count is its last sequence.
        let last = stream_messages(&runtime, &stream)? as u64;
        for k in 0..options.partitions {
            let name = format!("refbus-router-part-{k}-of-{}", options.partitions);
            runtime.block_on(async {
                timing::durable(&stream, &name, DeliverPolicy::All).await?;
                stream
                    .reset_consumer(&name, Some(last + 1))
                    .await
                    .map_err(|err| BenchError::Nats(format!("resetting consumer {name}: {err}")))
            })?;
        }
    }
    for &routers in &options.routers {
        let figures = partitioned_run(
            server,
            &runtime,
            &stream,
            &registry,
            router,
            routers,
            options,
            (fill, open_now),
            &previous,
            progress,
        )?;
        open_now += figures.due.referrals;
        previous = figures.due.clone();
        partitioned.push(figures);
    }

    let schedules = match &options.schedules {
        Some(schedule_options) => {
            progress(&format!(
                "3. {} JetStream message schedules due within {} s",
                thousands(schedule_options.count as f64),
                schedule_options.spread.as_secs()
            ));
            Some(runtime.block_on(schedules::measure(
                control.clone(),
                server.pid,
                schedule_options,
            ))?)
        }
        None => None,
    };
    conditions.load_after = cpu::load_average();
    Ok(ClocksReport {
        conditions,
        restart,
        due,
        partitioned,
        schedules,
    })
}

/// Checks the stream holds `expected` messages; returns its last sequence.
pub(crate) fn stored(
    runtime: &Runtime,
    stream: &stream::Stream,
    expected: usize,
) -> Result<u64, BenchError> {
    let mut stream = stream.clone();
    let state = runtime.block_on(async move {
        stream
            .info()
            .await
            .map(|info| info.state.clone())
            .map_err(|err| BenchError::Nats(err.to_string()))
    })?;
    if state.messages != expected as u64 {
        return Err(BenchError::Stored {
            phase: "fill".to_owned(),
            expected: expected as u64,
            stored: state.messages,
        });
    }
    Ok(state.last_sequence)
}

#[allow(clippy::too_many_arguments)]
fn due_minute(
    server: &Server,
    runtime: &Runtime,
    stream: &stream::Stream,
    registry: &Arc<Registry>,
    children: &mut [RouterProcess],
    consumers: &[String],
    // Names this minute's writer: its request ids, hence its referrals, are its own.
    writer: &str,
    options: &ClocksOptions,
    open_fill: Duration,
    open: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<DueMinute, BenchError> {
    let count = options.due.max(1);
    // Long enough to build and publish them at the rate the open referrals went, and for the
    // router to take them in (at a conservative 10,000 events/s), with half as much again to
    // spare, then the lead.
    let fill_estimate = open_fill.mul_f64(count as f64 / open.max(1) as f64);
    let catch_up_estimate = Duration::from_secs_f64(count as f64 / 10_000.0);
    let needed = (fill_estimate + catch_up_estimate).mul_f64(1.5) + options.lead;
    // Each due referral is stamped DUE_AFTER before its items, and the router refuses a record
    // stamped further than the allowed skew from when JetStream stored it (as deployed): the
    // first stamps lie at most 30 s before they are published, and the last must not run more
    // than the skew (less a margin) ahead of now.
    let lead_time = needed.max(DUE_AFTER.saturating_sub(Duration::from_secs(30)));
    let skew = refbus_core::integrity::DEFAULT_MAX_SKEW;
    let ahead = (lead_time + options.spread).saturating_sub(DUE_AFTER);
    if ahead + Duration::from_secs(20) > skew {
        return Err(BenchError::Setup(format!(
            "the due referrals would be stamped up to {} s ahead of their storage (the record check allows {} s): lower --due, --lead or --spread",
            ahead.as_secs(),
            skew.as_secs()
        )));
    }
    // Every message stored before this minute's creates (the open referrals, and what was
    // recorded before: nothing is due meanwhile, see `partitioned_run`).
    let before = stream_messages(runtime, stream)?;
    let first_due = system_now().plus(lead_time);
    let spread = options.spread;
    let due_at = move |index: usize| first_due.plus(spread.mul_f64(index as f64 / count as f64));

    let writer = Arc::new(Writer::new(registry.clone(), writer));
    let chunks = histories::build_in_background(count, 5_000, options.builders, move |range| {
        writer.creates(range, |_| DUE_KIND, |index| due_at(index).minus(DUE_AFTER))
    });
    let js = stream_context(runtime, &server.url)?;
    let (sent, _) = runtime.block_on(histories::publish_chunks(&js, chunks, options.window))?;
    let last_create = stored(runtime, stream, before + sent)?;
    for consumer in consumers {
        runtime.block_on(timing::acknowledged_through(
            stream,
            consumer,
            last_create,
            Duration::from_millis(50),
            Duration::from_secs(600),
        ))?;
    }
    let margin_seconds = (first_due.as_millis() - system_now().as_millis()) as f64 / 1000.0;
    progress(&format!(
        "2. the router has taken them in; the first items fall due in {margin_seconds:.1} s"
    ));

    // Until the first due time, the router is idle: measure from there.
    std::thread::sleep(Duration::from_millis(
        u64::try_from(first_due.as_millis() - system_now().as_millis()).unwrap_or(0),
    ));
    let router_before = total_cpu(children)?;
    let server_before = cpu::process_cpu(Process::Pid(server.pid))?;
    let expected = sent * DUE_ITEMS;
    let target = last_create + expected as u64;
    let deadline = first_due.plus(spread + Duration::from_secs(120));
    let mut last_seq = last_create;
    while last_seq < target && system_now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let mut stream = stream.clone();
        last_seq = runtime.block_on(async move {
            stream
                .info()
                .await
                .map(|info| info.state.last_sequence)
                .map_err(|err| BenchError::Nats(err.to_string()))
        })?;
    }
    let router_cpu = total_cpu(children)?.saturating_sub(router_before);
    let server_cpu = cpu::process_cpu(Process::Pid(server.pid))?.saturating_sub(server_before);
    // The largest router's.
    let mut memory_after = Resident { now: 0, peak: 0 };
    for child in children.iter() {
        let resident = child.resident()?;
        if resident.now >= memory_after.now {
            memory_after = resident;
        }
    }
    let integrity: Vec<String> = children
        .iter()
        .flat_map(RouterProcess::integrity_lines)
        .collect();
    if !integrity.is_empty() {
        return Err(BenchError::Setup(format!(
            "the router flagged events: {}",
            integrity.join("\n")
        )));
    }

    let recorded = runtime.block_on(read_recorded(
        stream.clone(),
        last_create,
        last_seq,
        first_due,
    ))?;
    Ok(DueMinute {
        first_due,
        referrals: sent,
        spread,
        expected,
        recorded: recorded.count,
        duplicates: recorded.duplicates,
        margin_seconds,
        stored: recorded.stored,
        decided: recorded.decided,
        late_by_second: recorded.late_by_second,
        router_cpu,
        server_cpu,
        memory_after,
    })
}

/// A partitioned router the bench starts: its replica name and the partition count.
#[derive(Debug, Clone, Copy)]
pub struct Share<'a> {
    pub replica: &'a str,
    pub partitions: u32,
}

/// One run of partitioned routers sharing the referrals.
#[derive(Debug, Clone, PartialEq)]
pub struct Partitioned {
    pub routers: usize,
    pub partitions: u32,
    /// From starting every router to each holding its share of the partitions.
    pub ready: Duration,
    /// Each router once ready: resident memory and referrals with pending clocks held.
    pub memory: Vec<Resident>,
    pub pending: Vec<usize>,
    /// The due minute with these routers.
    pub due: DueMinute,
    /// From one router's `kill -9` to its partitions claimed by the others (2 routers or more).
    pub takeover: Option<Duration>,
    /// From the killed router started again to its share claimed back.
    pub rejoin: Option<Duration>,
}

fn total_cpu(children: &[RouterProcess]) -> Result<Duration, BenchError> {
    children
        .iter()
        .try_fold(Duration::ZERO, |sum, child| Ok(sum + child.cpu()?))
}

/// Waits until `done` holds of what the routers hold (polled every 20 ms), or fails after
/// `timeout`; returns when it first held.
fn wait_held(
    children: &[RouterProcess],
    timeout: Duration,
    what: &str,
    done: impl Fn(&[BTreeMap<u32, usize>]) -> bool,
) -> Result<std::time::Instant, BenchError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let held: Vec<_> = children.iter().map(RouterProcess::held).collect();
        if done(&held) {
            return Ok(std::time::Instant::now());
        }
        if std::time::Instant::now() > deadline {
            return Err(BenchError::Setup(format!(
                "{what}: not within {} s (held: {held:?})",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every partition held once, each router holding `share` of them.
fn shared_out(held: &[BTreeMap<u32, usize>], partitions: u32, share: usize) -> bool {
    let mut all: Vec<u32> = held.iter().flat_map(|held| held.keys().copied()).collect();
    all.sort_unstable();
    held.iter().all(|held| held.len() == share) && all == (0..partitions).collect::<Vec<_>>()
}

/// `routers` partitioned routers on the stream: ready, memory, the due minute, then (2 or
/// more) one killed with `kill -9` and taken over, then started again.
#[allow(clippy::too_many_arguments)]
fn partitioned_run(
    server: &Server,
    runtime: &Runtime,
    stream: &stream::Stream,
    registry: &Arc<Registry>,
    router: &dyn Fn(&str, Option<Share<'_>>) -> Command,
    routers: usize,
    options: &ClocksOptions,
    (open_fill, open): (Duration, usize),
    previous: &DueMinute,
    progress: &mut dyn FnMut(&str),
) -> Result<Partitioned, BenchError> {
    let partitions = options.partitions;
    // The previous minute's referrals breach DUE_AFTER after their items: wait until every
    // breach is due, so that the routers record them all at their start, before this
    // minute's creates (its count of messages stays exact, and its lateness its own).
    let breaches_due = previous
        .first_due
        .plus(previous.spread + DUE_AFTER + Duration::from_secs(2));
    let wait = breaches_due.as_millis() - system_now().as_millis();
    if wait > 0 {
        progress(&format!(
            "4. waiting {:.0} s for the previous minute's breaches to fall due",
            wait as f64 / 1000.0
        ));
        std::thread::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0)));
    }
    let breaches_from = stream_messages(runtime, stream)?;
    let share = partitions as usize / routers.max(1);
    let names: Vec<String> = (0..routers)
        .map(|n| format!("bench-{routers}-{n}"))
        .collect();
    let command = |name: &str| {
        router(
            &server.url,
            Some(Share {
                replica: name,
                partitions,
            }),
        )
    };
    progress(&format!(
        "4. {routers} partitioned router(s) sharing {partitions} partitions"
    ));
    let started = std::time::Instant::now();
    let mut children = names
        .iter()
        .map(|name| RouterProcess::start(command(name)))
        .collect::<Result<Vec<_>, _>>()?;
    let ready = wait_held(&children, Duration::from_secs(600), "sharing out", |held| {
        shared_out(held, partitions, share)
    })?
    .duration_since(started);
    progress(&format!(
        "4. {routers} router(s) ready (each holding {share} partitions) in {}",
        seconds(ready)
    ));
    // The previous minute's breaches, one per referral, recorded before going on.
    let breaches = breaches_from + previous.referrals;
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while stream_messages(runtime, stream)? < breaches {
        if std::time::Instant::now() > deadline {
            return Err(BenchError::Setup(
                "the previous minute's breaches were not recorded within 600 s".to_owned(),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(options.settle);
    let memory = children
        .iter()
        .map(RouterProcess::resident)
        .collect::<Result<Vec<_>, _>>()?;
    let pending = children
        .iter()
        .map(|child| child.held().values().sum())
        .collect();
    let consumers: Vec<String> = (0..partitions)
        .map(|k| format!("refbus-router-part-{k}-of-{partitions}"))
        .collect();
    let due = due_minute(
        server,
        runtime,
        stream,
        registry,
        &mut children,
        &consumers,
        &format!("due-{routers}"),
        options,
        open_fill,
        open,
        progress,
    )?;
    let (mut takeover, mut rejoin) = (None, None);
    if routers >= 2
        && let Some(killed) = children.pop()
    {
        let orphans: Vec<u32> = killed.held().keys().copied().collect();
        let name = names[routers - 1].clone();
        let at = std::time::Instant::now();
        killed.kill();
        let taken = wait_held(&children, Duration::from_secs(300), "taking over", |held| {
            orphans
                .iter()
                .all(|k| held.iter().any(|held| held.contains_key(k)))
        })?;
        takeover = Some(taken.duration_since(at));
        // Of that, setting the partitions up (the rest is the lease ageing out and the next
        // look): the survivors' own figures for the orphans.
        let set_up: Vec<String> = children
            .iter()
            .flat_map(|child| child.set_up_since(at))
            .filter(|(k, _)| orphans.contains(k))
            .map(|(k, (took, read))| {
                format!(
                    "{k}: {} for {} referrals read",
                    seconds(took),
                    thousands(read as f64)
                )
            })
            .collect();
        progress(&format!(
            "4. router {name} killed; its {} partitions taken over in {} (set up, by the routers' clocks: {})",
            orphans.len(),
            seconds(taken.duration_since(at)),
            set_up.join(", ")
        ));
        let at = std::time::Instant::now();
        children.push(RouterProcess::start(command(&name))?);
        let back = wait_held(&children, Duration::from_secs(300), "rejoining", |held| {
            shared_out(held, partitions, share)
        })?;
        rejoin = Some(back.duration_since(at));
        progress(&format!(
            "4. router {name} started again; shared out again in {}",
            seconds(back.duration_since(at))
        ));
    }
    for child in children {
        child.stop();
    }
    Ok(Partitioned {
        routers,
        partitions,
        ready,
        memory,
        pending,
        due,
        takeover,
        rejoin,
    })
}

/// How many messages the stream holds now.
fn stream_messages(runtime: &Runtime, stream: &stream::Stream) -> Result<usize, BenchError> {
    let mut stream = stream.clone();
    runtime.block_on(async move {
        stream
            .info()
            .await
            .map(|info| usize::try_from(info.state.messages).unwrap_or(usize::MAX))
            .map_err(|err| BenchError::Nats(err.to_string()))
    })
}

/// A JetStream context on a connection of its own (for publishing while another reads).
fn stream_context(runtime: &Runtime, url: &str) -> Result<jetstream::Context, BenchError> {
    runtime.block_on(async {
        let client = async_nats::connect(url)
            .await
            .map_err(|err| BenchError::Nats(err.to_string()))?;
        Ok(jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(30))
            .max_ack_inflight(20_000)
            .backpressure_on_inflight(true)
            .build(client))
    })
}

/// The router's events after `after` up to `last`: lateness to the stored timestamp and to the
/// decision, how many, and how many message ids appeared twice.
async fn read_recorded(
    stream: stream::Stream,
    after: u64,
    last: u64,
    first_due: Timestamp,
) -> Result<Recorded, BenchError> {
    let nats = |err: &dyn std::fmt::Display| BenchError::Nats(err.to_string());
    let limit = (P99_LIMIT_MS * 1e6) as i64;
    let mut late_by_second = BTreeMap::new();
    let mut stored = Vec::new();
    let mut decided = Vec::new();
    let mut ids = HashSet::new();
    let mut duplicates = 0;
    if last > after {
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: subjects::ALL_REFERRALS.to_owned(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| nats(&e))?;
        let mut messages = consumer.messages().await.map_err(|e| nats(&e))?;
        loop {
            let message = messages
                .next()
                .await
                .ok_or_else(|| BenchError::Nats("the read-back ended early".to_owned()))?
                .map_err(|e| nats(&e))?;
            let info = message.info().map_err(|e| nats(&e))?;
            let seq = info.stream_sequence;
            let at_store = timing::unix_nanos(&info);
            let record = EventRecord::decode(&message.payload).map_err(|e| nats(&e))?;
            let event = &record.event;
            let due_at = match &event.change {
                Change::ClockWarning { due_at, .. } | Change::Escalated { due_at, .. } => {
                    Some(*due_at)
                }
                Change::ClockBreached { deadline, .. } => Some(*deadline),
                _ => None,
            };
            if let (Actor::Router, Some(due_at)) = (&event.actor, due_at) {
                let late = at_store - millis_to_nanos(due_at);
                if late > limit {
                    let second = (due_at.as_millis() - first_due.as_millis()).div_euclid(1000);
                    *late_by_second.entry(second).or_insert(0) += 1;
                }
                stored.push(late);
                decided.push(millis_to_nanos(event.at) - millis_to_nanos(due_at));
                let id = message
                    .headers
                    .as_ref()
                    .and_then(|headers| headers.get("Nats-Msg-Id"))
                    .map(|id| id.as_str().to_owned())
                    .unwrap_or_default();
                if !ids.insert(id) {
                    duplicates += 1;
                }
            }
            if seq >= last {
                break;
            }
        }
    }
    Ok(Recorded {
        count: stored.len(),
        stored: Lateness::of(stored),
        decided: Lateness::of(decided),
        duplicates,
        late_by_second,
    })
}

/// What [`read_recorded`] found.
struct Recorded {
    count: usize,
    stored: Lateness,
    decided: Lateness,
    duplicates: usize,
    late_by_second: BTreeMap<i64, usize>,
}

/// `3-5 s: 1,200; 41 s: 30`: runs of consecutive seconds and how many items each had.
fn seconds_ranges(by_second: &BTreeMap<i64, usize>) -> String {
    let mut runs: Vec<(i64, i64, usize)> = Vec::new();
    for (&second, &count) in by_second {
        match runs.last_mut() {
            Some((_, last, total)) if *last + 1 == second => {
                *last = second;
                *total += count;
            }
            _ => runs.push((second, second, count)),
        }
    }
    runs.iter()
        .map(|&(first, last, count)| {
            let span = if first == last {
                format!("{first} s")
            } else {
                format!("{first}-{last} s")
            };
            format!("{span}: {}", thousands(count as f64))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn millis_to_nanos(at: Timestamp) -> i64 {
    at.as_millis().saturating_mul(1_000_000)
}

impl ClocksReport {
    /// The goal is held against everything the process keeps resident once ready.
    pub fn memory_met(&self) -> bool {
        self.restart.memory.now <= MEMORY_LIMIT
    }

    /// Held against a restart as deployed: from the snapshot the router keeps.
    pub fn ready_met(&self) -> bool {
        self.restart.from_snapshot.after <= READY_LIMIT
    }

    pub fn lateness_met(&self) -> bool {
        self.due.recorded == self.due.expected && self.due.stored.p99 <= P99_LIMIT_MS
    }
}

impl std::fmt::Display for ClocksReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.conditions
            .header(f, "refbus bench clocks", "the router")?;
        writeln!(
            f,
            "router: `refbus router` in its own process (system clock, default options), started by the bench"
        )?;
        writeln!(f)?;

        let r = &self.restart;
        writeln!(
            f,
            "1. Restart with {} open referrals with pending clocks ({} kinds: emergency to routine, wall-clock and working-hours calendars)",
            thousands(r.open as f64),
            MIX.len()
        )?;
        writeln!(
            f,
            "  fill: built and published in {} ({} /s, window {})",
            seconds(r.fill),
            thousands(timing::rate(r.open, r.fill)),
            self.conditions.window
        )?;
        writeln!(
            f,
            "  start to ready: {} ({} referrals, {} with pending clocks); CPU meanwhile: router {}, nats-server {}",
            seconds(r.ready.after),
            thousands(r.ready.referrals as f64),
            thousands(r.ready.pending as f64),
            seconds(r.cpu),
            seconds(r.server_cpu)
        )?;
        writeln!(
            f,
            "  restarted from its snapshot of timers: ready in {} ({} referrals read again, {} with pending clocks)",
            seconds(r.from_snapshot.after),
            thousands(r.from_snapshot.referrals as f64),
            thousands(r.from_snapshot.pending as f64),
        )?;
        writeln!(
            f,
            "  router resident memory once ready: {} (peak {}); nats-server then: {}",
            mib(r.memory.now),
            mib(r.memory.peak),
            mib(r.nats_server.now)
        )?;
        writeln!(f)?;

        let d = &self.due;
        writeln!(
            f,
            "2. {} referrals whose 50% warning and first escalation fall due within {} s, among the open ones ({} items)",
            thousands(d.referrals as f64),
            d.spread.as_secs(),
            thousands(d.expected as f64)
        )?;
        writeln!(
            f,
            "  on the bench clock `{DUE_CLOCK_ID}` (added to a copy of the registry: items {} s after creation), each create stamped {} s before its items: within the record check's skew of its storage, every record checked as deployed",
            DUE_AFTER.as_secs(),
            DUE_AFTER.as_secs()
        )?;
        writeln!(
            f,
            "  the router had caught up with their creates {:.1} s before the first due time",
            d.margin_seconds
        )?;
        writeln!(
            f,
            "  recorded {} of {} items, {} message ids twice; router CPU over the minute {} ({} per item), nats-server {}",
            thousands(d.recorded as f64),
            thousands(d.expected as f64),
            d.duplicates,
            seconds(d.router_cpu),
            timing::micros(timing::per(d.router_cpu, d.recorded)),
            seconds(d.server_cpu)
        )?;
        writeln!(
            f,
            "  lateness, ms                                               p50     p90     p99      max"
        )?;
        writeln!(
            f,
            "    due -> event stored in JetStream (stream timestamp)  {}",
            d.stored.row()
        )?;
        writeln!(
            f,
            "    due -> router's decision (event's `at`, whole ms)    {}",
            d.decided.row()
        )?;
        let late: usize = d.late_by_second.values().sum();
        if late > 0 {
            writeln!(
                f,
                "  items stored more than {P99_LIMIT_MS:.0} ms late: {} ({:.2}%), by the second they fell due in: {}",
                thousands(late as f64),
                100.0 * late as f64 / d.recorded.max(1) as f64,
                seconds_ranges(&d.late_by_second)
            )?;
        }
        writeln!(
            f,
            "  router resident memory after the minute: {} (peak {})",
            mib(d.memory_after.now),
            mib(d.memory_after.peak)
        )?;
        writeln!(
            f,
            "  for comparison (from the issue, not measured here): a PostgreSQL table of deadlines polled every 100 ms, p99 about {POLLED_100MS_P99_MS:.0} ms; every second, about {POLLED_1S_P99_MS:.0} ms"
        )?;
        writeln!(f)?;

        if let Some(s) = &self.schedules {
            writeln!(
                f,
                "3. JetStream message schedules: {} `@at` schedules (one subject each) due within {} s, in a stream of their own",
                thousands(s.count as f64),
                s.spread.as_secs()
            )?;
            writeln!(
                f,
                "  published at {} /s; nats-server resident memory {} before, {} after",
                thousands(s.publish_rate()),
                mib(s.server_before),
                mib(s.server_after)
            )?;
            writeln!(
                f,
                "  fired {} of {}",
                thousands(s.fired as f64),
                thousands(s.count as f64)
            )?;
            writeln!(
                f,
                "  lateness, ms                                               p50     p90     p99      max"
            )?;
            writeln!(
                f,
                "    @at -> produced message stored (stream timestamp)    {}",
                s.stored.row()
            )?;
            writeln!(
                f,
                "    @at -> a consumer receives it                        {}",
                s.received.row()
            )?;
            writeln!(
                f,
                "  the router would then still read the referral and record the item: about {:.1} ms more at p99 (2. above), so about {:.0} ms in all at p99, against {:.1} ms with in-memory timers",
                self.due.stored.p99,
                s.received.p99 + self.due.stored.p99,
                self.due.stored.p99
            )?;
            writeln!(
                f,
                "  cancelling (purging) a pending schedule: {} /s with 64 in flight; the router would replace or purge a schedule after every event that moves a clock",
                thousands(s.purge_rate())
            )?;
            writeln!(
                f,
                "  a restart would rebuild nothing (the schedules persist in the stream): start to ready would be a connection and a consumer, against {} above",
                seconds(r.ready.after)
            )?;
            writeln!(f)?;
        }

        for p in &self.partitioned {
            writeln!(
                f,
                "4. {} partitioned router(s) sharing {} partitions (`--partitions {}`, leases of 6 s), on the same stream",
                p.routers, p.partitions, p.partitions
            )?;
            writeln!(
                f,
                "  start to every partition claimed, each router holding its share: {}",
                seconds(p.ready)
            )?;
            for (n, (memory, pending)) in p.memory.iter().zip(&p.pending).enumerate() {
                writeln!(
                    f,
                    "  router {n}: resident memory {} (peak {}), {} referrals with pending clocks held",
                    mib(memory.now),
                    mib(memory.peak),
                    thousands(*pending as f64)
                )?;
            }
            writeln!(
                f,
                "  due minute: recorded {} of {} items, {} message ids twice; lateness p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; routers' CPU {}",
                thousands(p.due.recorded as f64),
                thousands(p.due.expected as f64),
                p.due.duplicates,
                p.due.stored.p50,
                p.due.stored.p99,
                p.due.stored.max,
                seconds(p.due.router_cpu)
            )?;
            if let (Some(takeover), Some(rejoin)) = (p.takeover, p.rejoin) {
                writeln!(
                    f,
                    "  one router killed (kill -9): its partitions taken over in {} (goal <= {}); started again, shared out again in {}",
                    seconds(takeover),
                    seconds(TAKEOVER_LIMIT),
                    seconds(rejoin)
                )?;
            }
            writeln!(f)?;
        }

        writeln!(f, "Goals")?;
        writeln!(
            f,
            "{}",
            goal_line(
                self.memory_met(),
                &format!(
                    "router resident memory, {} open referrals",
                    thousands(r.open as f64)
                ),
                &mib(r.memory.now),
                &format!("<= {}", mib(MEMORY_LIMIT)),
            )
        )?;
        writeln!(
            f,
            "{}",
            goal_line(
                self.ready_met(),
                "restart to ready (from its snapshot; without one above)",
                &seconds(r.from_snapshot.after),
                &format!("<= {}", seconds(READY_LIMIT)),
            )
        )?;
        writeln!(
            f,
            "{}",
            goal_line(
                self.lateness_met(),
                &format!(
                    "p99 lateness, {} clocks due in one minute",
                    thousands(d.referrals as f64)
                ),
                &format!(
                    "{:.1} ms ({} of {} items)",
                    d.stored.p99,
                    thousands(d.recorded as f64),
                    thousands(d.expected as f64)
                ),
                &format!("<= {P99_LIMIT_MS:.0} ms, every item"),
            )
        )?;
        if d.margin_seconds < 5.0 {
            writeln!(
                f,
                "  WARNING: the router caught up only {:.1} s before the minute began: raise --lead",
                d.margin_seconds
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_seconds_are_grouped_in_runs() {
        let by_second = BTreeMap::from([(3, 10), (4, 5), (5, 1), (41, 30)]);
        assert_eq!(seconds_ranges(&by_second), "3-5 s: 16; 41 s: 30");
        assert_eq!(seconds_ranges(&BTreeMap::new()), "");
    }
}
