//! `refbus bench dashboard`: the operators' board at scale, as deployed (a `refbus dashboard`
//! process with the system clock, behind its login), against a bare ordered consumer on the same
//! server in the same run.
//!
//! 1. `open` open referrals (the mix of [`MIX`], each stamped within the minute before it is
//!    stored) and [`PAGE_ROWS`] of one more kind ([`DUE_KIND`]: emergency counselling, which no
//!    kind of the mix is), so a filtered board page ([`PAGE_FILTER`]) holds exactly that many
//!    rows. The floor of the rebuild: a bare ordered consumer reading every message.
//! 2. A dashboard started on them: from starting the process to its first HTTP answer (it
//!    serves only once its projection is rebuilt), its CPU time meanwhile, its resident memory
//!    once ready and idle.
//! 3. An operator (the coordinator) logs in as a browser does: `GET /login` (a login cookie,
//!    the same value in the form's `csrf` field), then `POST /login`.
//! 4. The filtered page, requested one after another: from sending the request to its last
//!    byte.
//! 5. `boards` live feeds (`GET /events` with the page's filter and its event id, as the page's
//!    script opens it), then new referrals of the page's kind stored at `rate` per second: from
//!    each stored (its JetStream timestamp) to its row arriving on each feed, and, the floor, to
//!    its delivery on a bare ordered consumer on the same server.
//!
//! A process of its own keeps the benchmark's memory (a million prepared messages) out of the
//! dashboard's figures, and the login is the one deployed (its layers are on every request).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use refbus_bus::subjects;
use refbus_core::Registry;

use crate::cpu::{self, Process, Resident};
use crate::histories::{self, DUE_KIND, MIX, Prepared, Writer};
use crate::http::{self, EventStream};
use crate::router::{Conditions, system_now};
use crate::timing::{self, Lateness, goal_line, mib, seconds, thousands};
use crate::{BenchError, Server};

/// Resident memory of a dashboard holding a million open referrals.
pub const MEMORY_LIMIT: u64 = 300 * 1024 * 1024;
/// From starting a dashboard to its projection rebuilt, with a million open referrals.
pub const READY_LIMIT: Duration = Duration::from_secs(15);
/// p99 from an event stored to its change arriving on every connected live feed.
pub const FEED_P99_MS: f64 = 250.0;
/// p99 of a filtered board page of [`PAGE_ROWS`] rows.
pub const PAGE_P99_MS: f64 = 50.0;
/// Rows on the filtered page.
pub const PAGE_ROWS: usize = 100;
/// The filter of the page and of the live feeds: [`DUE_KIND`]'s service and priority.
pub const PAGE_FILTER: &str = "service=psychological_counselling&priority=emergency";

/// How much, and how long.
#[derive(Debug, Clone)]
pub struct DashboardOptions {
    /// Open referrals held when the dashboard starts.
    pub open: usize,
    /// Live feeds connected while the events arrive.
    pub boards: usize,
    /// New referrals stored per second while they are connected...
    pub rate: u32,
    /// ... for this long.
    pub duration: Duration,
    /// Filtered pages requested, one after another.
    pub pages: usize,
    /// Publishes whose acknowledgements may be outstanding while filling.
    pub window: usize,
    /// Threads building the referral events while the stream fills.
    pub builders: usize,
    /// The ready dashboard is idle once it used less than a tenth of a CPU over this long
    /// (then its memory is read and the pages requested).
    pub settle: Duration,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        DashboardOptions {
            open: 1_000_000,
            boards: 50,
            rate: 500,
            duration: Duration::from_secs(20),
            pages: 200,
            window: 1024,
            builders: 2,
            settle: Duration::from_secs(3),
        }
    }
}

/// The dashboard process to start: `command(nats_url, listen, metrics)` is a `refbus
/// dashboard` with an accounts file in which `username` logs in with `password` as the
/// coordinator, on loopback with plaintext cookies.
pub struct DashboardCommand<'a> {
    pub command: &'a dyn Fn(&str, SocketAddr, SocketAddr) -> Command,
    pub username: String,
    pub password: String,
}

/// Start to ready.
#[derive(Debug, Clone, PartialEq)]
pub struct Rebuild {
    pub open: usize,
    /// Building and publishing them.
    pub fill: Duration,
    /// The floor: a bare ordered consumer reading every message of the stream.
    pub floor: Duration,
    /// From starting the process to its first HTTP answer.
    pub ready: Duration,
    /// Referrals its projection holds (its metrics).
    pub held: usize,
    pub cpu: Duration,
    pub server_cpu: Duration,
    /// From ready to idle (less than a tenth of a CPU over `settle`).
    pub idle_after: Duration,
    /// Once ready and idle.
    pub memory: Resident,
}

/// The filtered page.
#[derive(Debug, Clone, PartialEq)]
pub struct Pages {
    pub requests: usize,
    pub rows: usize,
    pub bytes: usize,
    /// From sending the request to the last byte of the page.
    pub served: Lateness,
}

/// The live feeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Feeds {
    pub boards: usize,
    /// Feeds that were sent the whole filtered board first (their event id was stale).
    pub snapshots: usize,
    pub rate: u32,
    pub stored: usize,
    /// Rows expected (every event on every feed) and arrived.
    pub expected: usize,
    pub arrived: usize,
    /// Of the messages, removals instead of rows (a referral without a row on this board).
    pub removes: usize,
    /// From each event's JetStream timestamp to its row on a feed.
    pub feed: Lateness,
    /// The floor: to its delivery on a bare ordered consumer.
    pub floor: Lateness,
    pub dashboard_cpu: Duration,
    pub server_cpu: Duration,
    pub memory_after: Resident,
}

/// Everything `refbus bench dashboard` measured.
#[derive(Debug, Clone)]
pub struct DashboardReport {
    pub conditions: Conditions,
    pub rebuild: Rebuild,
    pub pages: Pages,
    pub feeds: Feeds,
    pub restart: Restart,
}

/// The second start: from the snapshot the first one wrote once ready (`--state-dir`), then
/// the referrals stored since (the live feeds' ones) read again.
#[derive(Debug, Clone, PartialEq)]
pub struct Restart {
    /// From starting the process to its first HTTP answer.
    pub ready: Duration,
    pub cpu: Duration,
    pub held: usize,
    /// Once ready and idle.
    pub memory: Resident,
    /// Referrals the indicators counted when the memory was read: after a start from the
    /// snapshot they are read again in the background, and a figure taken before that read
    /// ended (or after it failed) holds fewer than every referral.
    pub indicators: usize,
}

/// A `refbus dashboard` process, interrupted when dropped.
struct DashboardProcess(Child);

impl Drop for DashboardProcess {
    fn drop(&mut self) {
        crate::child::interrupt(&mut self.0);
    }
}

/// Runs every phase.
pub fn dashboard(
    server: &Server,
    registry: Arc<Registry>,
    start: &DashboardCommand<'_>,
    options: &DashboardOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<DashboardReport, BenchError> {
    let crate::clocks::Fresh {
        runtime,
        mut conditions,
        js,
        stream,
        ..
    } = crate::clocks::Fresh::stream(server, options.window)?;

    progress(&format!(
        "1. {} open referrals and {PAGE_ROWS} of the page's kind (built and published)",
        thousands(options.open as f64)
    ));
    let (sent, fill) = crate::clocks::publish_open(
        &runtime,
        &js,
        &registry,
        options.open,
        options.builders,
        options.window,
    )?;
    let page = Writer::new(registry.clone(), "page").creates(
        0..PAGE_ROWS,
        |_| DUE_KIND,
        |_| system_now(),
    )?;
    runtime.block_on(histories::publish_planned(&js, page, options.window, None))?;
    let open = sent + PAGE_ROWS;
    let last = crate::clocks::stored(&runtime, &stream, open)?;
    let floor = runtime.block_on(read_all(&stream, last))?;
    progress(&format!(
        "1. filled in {}; a bare ordered consumer reads them all in {}",
        seconds(fill),
        seconds(floor)
    ));

    progress("2. starting the dashboard on them");
    let listen = free_addr()?;
    let metrics = free_addr()?;
    let server_before = cpu::process_cpu(Process::Pid(server.pid))?;
    let started = Instant::now();
    let child = DashboardProcess(
        (start.command)(&server.url, listen, metrics)
            .stdout(Stdio::null())
            .stdin(Stdio::null())
            .spawn()?,
    );
    let pid = child.0.id();
    let login_page = runtime.block_on(first_answer(listen, Duration::from_secs(600)))?;
    let ready = started.elapsed();
    let dashboard_cpu = cpu::process_cpu(Process::Pid(pid))?;
    let server_cpu = cpu::process_cpu(Process::Pid(server.pid))?.saturating_sub(server_before);
    // It goes on working once it serves (scheduling every referral's next clock point): its
    // memory and the pages are measured once it is idle.
    let idle_after = settle(pid, options.settle, Duration::from_secs(600))?;
    let memory = cpu::resident(Process::Pid(pid))?;
    let held = runtime.block_on(gauge(metrics, "refbus_dashboard_referrals_held"))?;
    progress(&format!(
        "2. ready in {} ({} referrals held), idle {} later, resident {}",
        seconds(ready),
        thousands(held as f64),
        seconds(idle_after),
        mib(memory.now)
    ));
    let rebuild = Rebuild {
        open,
        fill,
        floor,
        ready,
        held,
        cpu: dashboard_cpu,
        server_cpu,
        idle_after,
        memory,
    };

    progress("3. logging in as the coordinator");
    let cookie = runtime.block_on(log_in(listen, &login_page, start))?;

    progress(&format!(
        "4. the filtered page ({PAGE_FILTER}), {} times",
        options.pages
    ));
    let (pages, event_id) = runtime.block_on(pages(listen, &cookie, options.pages))?;
    if pages.rows != PAGE_ROWS {
        return Err(BenchError::Setup(format!(
            "the filtered page has {} rows, not {PAGE_ROWS}",
            pages.rows
        )));
    }

    progress(&format!(
        "5. {} live feeds, {} new referrals per second for {} s",
        options.boards,
        options.rate,
        options.duration.as_secs()
    ));
    let feeds = runtime.block_on(feeds(
        listen, &cookie, &event_id, &js, &stream, &registry, options, pid, server.pid,
    ))?;
    drop(child);

    progress("6. starting the dashboard again, from the snapshot its first start wrote");
    let (listen, metrics) = (free_addr()?, free_addr()?);
    let started = Instant::now();
    let child = DashboardProcess(
        (start.command)(&server.url, listen, metrics)
            .stdout(Stdio::null())
            .stdin(Stdio::null())
            .spawn()?,
    );
    let pid = child.0.id();
    runtime.block_on(first_answer(listen, Duration::from_secs(600)))?;
    let ready = started.elapsed();
    let restart_cpu = cpu::process_cpu(Process::Pid(pid))?;
    // Its indicators read every referral beside the live feed after a start from the snapshot:
    // memory taken before that read ends would leave their summaries out. The read waits on
    // nats-server at times, which can look idle, so the bench also waits for the count.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        settle(pid, options.settle, Duration::from_secs(600))?;
        let held = runtime.block_on(gauge(metrics, "refbus_dashboard_referrals_held"))?;
        let counted = runtime.block_on(gauge(metrics, "refbus_dashboard_indicators_referrals"))?;
        if counted >= held || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let restart = Restart {
        ready,
        cpu: restart_cpu,
        memory: cpu::resident(Process::Pid(pid))?,
        held: runtime.block_on(gauge(metrics, "refbus_dashboard_referrals_held"))?,
        indicators: runtime.block_on(gauge(metrics, "refbus_dashboard_indicators_referrals"))?,
    };
    drop(child);
    progress(&format!(
        "6. ready again in {} ({} referrals held)",
        seconds(restart.ready),
        thousands(restart.held as f64)
    ));
    conditions.load_after = cpu::load_average();
    Ok(DashboardReport {
        conditions,
        rebuild,
        pages,
        feeds,
        restart,
    })
}

fn nats(err: &dyn std::fmt::Display) -> BenchError {
    BenchError::Nats(err.to_string())
}

/// The rebuild's floor: a bare ordered consumer reading every referral event up to `last`.
async fn read_all(stream: &stream::Stream, last: u64) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subjects::ALL_REFERRALS.to_owned(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| nats(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| nats(&e))?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| nats(&e))?;
        if message.info().map_err(|e| nats(&e))?.stream_sequence >= last {
            break;
        }
    }
    Ok(started.elapsed())
}

/// Waits until process `pid` used less than a tenth of a CPU over `every`; how long that took.
fn settle(pid: u32, every: Duration, timeout: Duration) -> Result<Duration, BenchError> {
    let started = Instant::now();
    loop {
        let before = cpu::process_cpu(Process::Pid(pid))?;
        std::thread::sleep(every);
        let used = cpu::process_cpu(Process::Pid(pid))?.saturating_sub(before);
        if used < every / 10 || started.elapsed() > timeout {
            return Ok(started.elapsed());
        }
    }
}

fn free_addr() -> Result<SocketAddr, BenchError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The login page, once the dashboard answers (it listens before its rebuild, and serves
/// after it: a request made meanwhile waits).
async fn first_answer(addr: SocketAddr, timeout: Duration) -> Result<http::Response, BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        match http::request(addr, "GET", "/login", &[], b"").await {
            Ok(response) if response.status == 200 => return Ok(response),
            Ok(response) => {
                return Err(BenchError::Setup(format!(
                    "GET /login answered {}",
                    response.status
                )));
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// `refbus_dashboard_referrals_held` from the dashboard's metrics.
/// The dashboard's gauge `name`, read from its metrics.
async fn gauge(metrics: SocketAddr, name: &str) -> Result<usize, BenchError> {
    let text = http::request(metrics, "GET", "/metrics", &[], b"")
        .await?
        .text();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as usize)
        .ok_or_else(|| BenchError::Setup(format!("no {name} in the metrics")))
}

/// Logs in as a browser does; the session's `Cookie` header.
async fn log_in(
    addr: SocketAddr,
    login_page: &http::Response,
    start: &DashboardCommand<'_>,
) -> Result<String, BenchError> {
    let csrf = http::hidden_field(&login_page.text(), "csrf")
        .ok_or_else(|| BenchError::Setup("no csrf field on the login page".to_owned()))?;
    let login_cookie = login_page
        .cookies()
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("; ");
    let body = http::form(&[
        ("username", &start.username),
        ("password", &start.password),
        ("csrf", &csrf),
    ]);
    let answer = http::request(
        addr,
        "POST",
        "/login",
        &[
            ("Cookie", &login_cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        body.as_bytes(),
    )
    .await?;
    let session: Vec<String> = answer
        .cookies()
        .into_iter()
        .filter(|(name, value)| name.contains("session") && !value.is_empty())
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    if session.is_empty() {
        return Err(BenchError::Setup(format!(
            "the login answered {} without a session cookie",
            answer.status
        )));
    }
    Ok(session.join("; "))
}

/// The filtered page `count` times, one after another; its figures and the live feed's event
/// id it carries.
async fn pages(
    addr: SocketAddr,
    cookie: &str,
    count: usize,
) -> Result<(Pages, String), BenchError> {
    let target = format!("/?{PAGE_FILTER}");
    let mut nanos = Vec::with_capacity(count);
    let mut rows = 0;
    let mut bytes = 0;
    for _ in 0..count.max(1) {
        let sent = Instant::now();
        let page = http::request(addr, "GET", &target, &[("Cookie", cookie)], b"").await?;
        nanos.push(i64::try_from(sent.elapsed().as_nanos()).unwrap_or(i64::MAX));
        if page.status != 200 {
            return Err(BenchError::Setup(format!(
                "{target} answered {}",
                page.status
            )));
        }
        let text = page.text();
        rows = text.matches("data-referral=\"").count();
        bytes = page.body.len();
    }
    let page = http::request(addr, "GET", &target, &[("Cookie", cookie)], b"").await?;
    let event_id = http::attribute(&page.text(), "data-event-id")
        .ok_or_else(|| BenchError::Setup("no event id on the board page".to_owned()))?;
    Ok((
        Pages {
            requests: nanos.len(),
            rows,
            bytes,
            served: Lateness::of(nanos),
        },
        event_id,
    ))
}

/// What one feed saw: each referral's first row and when it arrived.
#[derive(Default)]
struct Seen {
    arrivals: Vec<(String, i64)>,
    /// Of those, removals (the referral has no row this board shows).
    removes: usize,
    snapshot: bool,
}

#[allow(clippy::too_many_arguments)]
async fn feeds(
    addr: SocketAddr,
    cookie: &str,
    event_id: &str,
    js: &jetstream::Context,
    stream: &stream::Stream,
    registry: &Arc<Registry>,
    options: &DashboardOptions,
    dashboard_pid: u32,
    server_pid: u32,
) -> Result<Feeds, BenchError> {
    let count = (f64::from(options.rate) * options.duration.as_secs_f64()).ceil() as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(options.rate.max(1)));
    // Each stamped when it will be published (within the record check's skew).
    let first_at = system_now().plus(Duration::from_secs(3));
    let writer = Writer::new(registry.clone(), "live");
    let mut live: Vec<(Prepared, String)> = Vec::with_capacity(count);
    for index in 0..count {
        let (prepared, state) = writer.create(
            &DUE_KIND,
            index,
            first_at.plus(interval.mul_f64(index as f64)),
        )?;
        live.push((prepared, state.id.to_string()));
    }
    let ids: HashMap<String, String> = live
        .iter()
        .map(|(prepared, id)| (prepared.subject.clone(), id.clone()))
        .collect();

    // The floor: a bare ordered consumer of what is stored from now on.
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subjects::ALL_REFERRALS.to_owned(),
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| nats(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| nats(&e))?;
    let floor_task = tokio::spawn(async move {
        // Referral id -> (stored, delivered), in nanoseconds since the epoch.
        let mut seen: HashMap<String, (i64, i64)> = HashMap::new();
        while seen.len() < count {
            let Some(Ok(message)) = messages.next().await else {
                break;
            };
            let delivered = timing::now_nanos();
            let Ok(info) = message.info() else { break };
            let stored = timing::unix_nanos(&info);
            if let Some(id) = ids.get(message.subject.as_str()) {
                seen.insert(id.clone(), (stored, delivered));
            }
        }
        seen
    });

    // The feeds, opened as the page's script opens them: its filter, its event id.
    let target = format!("/events?{PAGE_FILTER}");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::with_capacity(options.boards);
    for _ in 0..options.boards {
        let mut feed = EventStream::open(
            addr,
            &target,
            &[
                ("Cookie", cookie),
                ("Accept", "text/event-stream"),
                ("Last-Event-ID", event_id),
            ],
        )
        .await?;
        if feed.status != 200 {
            return Err(BenchError::Setup(format!(
                "{target} answered {}",
                feed.status
            )));
        }
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            loop {
                let events = tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => break,
                    events = feed.next() => events,
                };
                let arrived = timing::now_nanos();
                let Ok(Some(events)) = events else { break };
                for event in events {
                    match event.event.as_str() {
                        "board" => seen.snapshot = true,
                        "row" => {
                            if let Some(id) = http::attribute(&event.data, "data-referral") {
                                seen.arrivals.push((id, arrived));
                            }
                        }
                        // A change that takes the referral off this board arrives as its id.
                        "remove" => {
                            seen.removes += 1;
                            seen.arrivals.push((event.data.trim().to_owned(), arrived));
                        }
                        _ => {}
                    }
                }
            }
            seen
        }));
    }
    // Let every feed settle (and any snapshot be sent) before the events start.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let dashboard_before = cpu::process_cpu(Process::Pid(dashboard_pid))?;
    let server_before = cpu::process_cpu(Process::Pid(server_pid))?;
    let start = tokio::time::Instant::now()
        + Duration::from_millis(
            u64::try_from(first_at.as_millis() - system_now().as_millis()).unwrap_or(0),
        );
    let mut publisher = histories::Publisher::new(js, options.window, None);
    for (index, (prepared, _)) in live.into_iter().enumerate() {
        tokio::time::sleep_until(start + interval.mul_f64(index as f64)).await;
        publisher.publish(prepared).await?;
    }
    let stored = publisher.finish().await?;
    // Every row has a few seconds more to arrive.
    let floor = tokio::time::timeout(Duration::from_secs(30), floor_task)
        .await
        .map_err(|_| BenchError::Setup("the floor consumer missed events".to_owned()))?
        .map_err(|err| BenchError::Setup(err.to_string()))?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let dashboard_cpu =
        cpu::process_cpu(Process::Pid(dashboard_pid))?.saturating_sub(dashboard_before);
    let server_cpu = cpu::process_cpu(Process::Pid(server_pid))?.saturating_sub(server_before);
    let memory_after = cpu::resident(Process::Pid(dashboard_pid))?;
    let _ = stop.send(true);
    let mut feed_nanos = Vec::with_capacity(count * options.boards);
    let mut snapshots = 0;
    let mut removes = 0;
    for task in tasks {
        let seen = task
            .await
            .map_err(|err| BenchError::Setup(err.to_string()))?;
        snapshots += usize::from(seen.snapshot);
        removes += seen.removes;
        let mut first: HashMap<String, i64> = HashMap::new();
        for (id, arrived) in seen.arrivals {
            first.entry(id).or_insert(arrived);
        }
        for (id, arrived) in first {
            if let Some((stored, _)) = floor.get(&id) {
                feed_nanos.push(arrived - stored);
            }
        }
    }
    let floor_nanos = floor
        .values()
        .map(|(stored, delivered)| delivered - stored)
        .collect();
    Ok(Feeds {
        boards: options.boards,
        snapshots,
        rate: options.rate,
        stored,
        expected: count * options.boards,
        arrived: feed_nanos.len(),
        removes,
        feed: Lateness::of(feed_nanos),
        floor: Lateness::of(floor_nanos),
        dashboard_cpu,
        server_cpu,
        memory_after,
    })
}

impl DashboardReport {
    pub fn memory_met(&self) -> bool {
        self.rebuild.memory.now <= MEMORY_LIMIT
    }

    pub fn ready_met(&self) -> bool {
        self.rebuild.ready <= READY_LIMIT
    }

    pub fn feed_met(&self) -> bool {
        self.feeds.arrived == self.feeds.expected && self.feeds.feed.p99 <= FEED_P99_MS
    }

    pub fn page_met(&self) -> bool {
        self.pages.served.p99 <= PAGE_P99_MS
    }
}

fn ratio(value: f64, floor: f64) -> String {
    if floor > 0.0 {
        format!("{:.1}x the floor", value / floor)
    } else {
        "floor not measured".to_owned()
    }
}

impl std::fmt::Display for DashboardReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.conditions
            .header(f, "refbus bench dashboard", "the dashboard")?;
        writeln!(
            f,
            "dashboard: `refbus dashboard` in its own process (system clock, default options, behind its login), started by the bench; clients: plain HTTP/1.1 as a browser (login form, page, server-sent events)"
        )?;
        writeln!(f)?;
        let r = &self.rebuild;
        writeln!(
            f,
            "1. {} open referrals ({} kinds of the mix, and {PAGE_ROWS} emergency counselling for the filtered page)",
            thousands(r.open as f64),
            MIX.len()
        )?;
        writeln!(
            f,
            "  fill: built and published in {} ({} /s)",
            seconds(r.fill),
            thousands(timing::rate(r.open, r.fill))
        )?;
        writeln!(
            f,
            "  floor: a bare ordered consumer reads every message in {}",
            seconds(r.floor)
        )?;
        writeln!(
            f,
            "2. start to ready (first HTTP answer): {} ({}; {} referrals held); CPU meanwhile: dashboard {}, nats-server {}",
            seconds(r.ready),
            ratio(r.ready.as_secs_f64(), r.floor.as_secs_f64()),
            thousands(r.held as f64),
            seconds(r.cpu),
            seconds(r.server_cpu)
        )?;
        writeln!(
            f,
            "  resident memory once ready and idle ({} after ready): {} (peak {}; {:.0} bytes per referral)",
            seconds(r.idle_after),
            mib(r.memory.now),
            mib(r.memory.peak),
            r.memory.now as f64 / r.open.max(1) as f64
        )?;
        let p = &self.pages;
        writeln!(
            f,
            "3. the filtered page `/?{PAGE_FILTER}`: {} rows, {} bytes, {} requests one after another",
            p.rows,
            thousands(p.bytes as f64),
            p.requests
        )?;
        writeln!(
            f,
            "  latency, ms                                               p50     p90     p99      max"
        )?;
        writeln!(
            f,
            "    request -> last byte of the page                      {}",
            p.served.row()
        )?;
        let d = &self.feeds;
        writeln!(
            f,
            "4. {} live feeds (`/events?{PAGE_FILTER}`, coordinator), {} new referrals of the page's kind at {} /s",
            d.boards,
            thousands(d.stored as f64),
            d.rate
        )?;
        writeln!(
            f,
            "  rows arrived {} of {} ({} as removals); feeds sent the whole board first: {}; CPU meanwhile: dashboard {}, nats-server {}",
            thousands(d.arrived as f64),
            thousands(d.expected as f64),
            thousands(d.removes as f64),
            d.snapshots,
            seconds(d.dashboard_cpu),
            seconds(d.server_cpu)
        )?;
        writeln!(
            f,
            "  latency, ms                                               p50     p90     p99      max"
        )?;
        writeln!(
            f,
            "    stored -> bare ordered consumer (floor)               {}",
            d.floor.row()
        )?;
        writeln!(
            f,
            "    stored -> row on every live feed                      {}",
            d.feed.row()
        )?;
        writeln!(
            f,
            "  dashboard resident memory after: {} (peak {})",
            mib(d.memory_after.now),
            mib(d.memory_after.peak)
        )?;
        let s = &self.restart;
        writeln!(
            f,
            "5. restart from its snapshot (written by the first start once ready; the feeds' referrals read again): ready in {} ({} referrals held; dashboard CPU {}); resident memory once idle {} (peak {}), the indicators then counting {} referrals",
            seconds(s.ready),
            thousands(s.held as f64),
            seconds(s.cpu),
            mib(s.memory.now),
            mib(s.memory.peak),
            thousands(s.indicators as f64)
        )?;
        writeln!(f)?;
        writeln!(f, "Goals")?;
        writeln!(
            f,
            "{}",
            goal_line(
                self.memory_met(),
                &format!(
                    "dashboard resident memory, {} referrals",
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
                &format!(
                    "start to projection rebuilt, {} referrals",
                    thousands(r.open as f64)
                ),
                &format!(
                    "{} ({})",
                    seconds(r.ready),
                    ratio(r.ready.as_secs_f64(), r.floor.as_secs_f64())
                ),
                &format!("<= {}", seconds(READY_LIMIT)),
            )
        )?;
        writeln!(
            f,
            "{}",
            goal_line(
                self.feed_met(),
                &format!(
                    "p99 stored -> live feeds, {} /s, {} boards",
                    d.rate, d.boards
                ),
                &format!(
                    "{:.1} ms ({}; {} of {} rows)",
                    d.feed.p99,
                    ratio(d.feed.p99, d.floor.p99),
                    thousands(d.arrived as f64),
                    thousands(d.expected as f64)
                ),
                &format!("<= {FEED_P99_MS:.0} ms, every row"),
            )
        )?;
        writeln!(
            f,
            "{}",
            goal_line(
                self.page_met(),
                &format!("p99 filtered page of {} rows", p.rows),
                &format!(
                    "{:.1} ms ({})",
                    p.served.p99,
                    ratio(p.served.p99, d.floor.p99)
                ),
                &format!("<= {PAGE_P99_MS:.0} ms"),
            )
        )
    }
}
