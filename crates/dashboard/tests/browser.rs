//! The board in a real headless Chromium (refbus-testkit's `browser` feature), over a real
//! nats-server, with the adapters, the router and the dashboard reading one manual clock: a
//! breach appears on an open board without a reload and the countdown ticks; the board sorted
//! and coloured by state; a filter kept in the URL and followed by the live feed; an integrity
//! alert on top; acknowledging from the board; the language switch and the time zone label;
//! 403 for another agency's referral; the live feed's drop shown and recovered; and a byte scan
//! of every page, live message and the browser's DOM for identity plaintext. Screenshots go to
//! `target/browser-screenshots/<test>/`; with `REFBUS_UPDATE_DOCS_SCREENSHOT=1` the board of
//! `the_board_is_sorted_by_time_to_breach_and_coloured_by_state` is also copied to
//! `docs/img/board.png`.
//!
//! The viewer is a fixed `Extension<Viewer>`, so several viewers share one dashboard; the real
//! login, the CSRF refusal and logout are driven in a browser against `refbus up --demo`
//! (crates/cli/tests/browser.rs), and tested without a browser in crates/operators/tests.
//!
//! Run: `cargo nextest run -p refbus-dashboard --test browser` (needs
//! `scripts/install-tools.sh`, which installs Chromium).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use refbus_core::{AgencyId, Timestamp};
use refbus_dashboard::act::Acting;
use refbus_dashboard::{Dashboard, Role, Viewer};
use refbus_e2e::{AgencySystem, System, create_request, demo_registry, identity, recorded};
use refbus_proto::v1;
use refbus_router::{Activity, ManualClock, Options};
use refbus_testkit::NatsServer;
use refbus_testkit::browser::{Browser, PHONE};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

/// 09:00 WITA on a Monday.
const START: &str = "2026-03-02T09:00:00+08:00";

/// The agency whose time zone the tests move to WIT, so one viewer's times differ from the
/// others'.
const EASTERN_AGENCY: &str = "polres-maros";

/// The demonstration system (clocks in minutes) with the router and adapters on one manual
/// clock; one agency moved to Asia/Jayapura (WIT).
struct Deployment {
    system: System,
    clock: ManualClock,
    activity: broadcast::Receiver<Activity>,
}

impl Deployment {
    async fn start() -> Deployment {
        let clock = ManualClock::new(Timestamp::parse_rfc3339(START).unwrap());
        let mut registry = demo_registry();
        let eastern = AgencyId::new(EASTERN_AGENCY).unwrap();
        registry
            .agencies
            .get_mut(&eastern)
            .expect("the demo registry has polres-maros")
            .working_hours
            .time_zone = chrono_tz::Asia::Jayapura;
        let mut system = System::with_registry(NatsServer::start().unwrap(), registry).await;
        system.use_clock(Arc::new(clock.clone()));
        let router = system.router(
            system.bus().await,
            Arc::new(clock.clone()),
            Options::default(),
        );
        let mut activity = router.activity();
        tokio::spawn(router.run(std::future::pending()));
        loop {
            if let Activity::Ready { .. } = activity.recv().await.unwrap() {
                break;
            }
        }
        Deployment {
            system,
            clock,
            activity,
        }
    }

    /// An emergency referral from Dinsos to UPTD PPA, with a person's identity and a note.
    async fn send(&mut self, request_id: &str) -> String {
        self.send_with(request_id, v1::Priority::Emergency).await
    }

    /// A referral of `priority` from Dinsos to UPTD PPA, with a person's identity and a note.
    async fn send_with(&mut self, request_id: &str, priority: v1::Priority) -> String {
        let dinsos: AgencySystem = self.system.agency("maros-dinsos").await;
        let mut request = create_request(request_id, "maros-uptd-ppa", "psychological_counselling");
        request.priority = priority.into();
        dinsos.create(request).await
    }
}

/// A dashboard serving one fixed viewer on a loopback address, until stopped.
struct Board {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Board {
    async fn start(deployment: &Deployment, viewer: &Viewer) -> Board {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Board::serve(deployment, viewer, listener).await
    }

    /// Starts again on the same address (a restart of the dashboard process).
    async fn restart(deployment: &Deployment, viewer: &Viewer, address: SocketAddr) -> Board {
        let listener = TcpListener::bind(address).await.unwrap();
        Board::serve(deployment, viewer, listener).await
    }

    /// A dashboard that acts for `viewer`'s agency: it calls that agency's adapter over mutual
    /// TLS as the agency's registered system `dashboard`, with its own client certificate.
    async fn start_acting(deployment: &mut Deployment, viewer: &Viewer) -> Board {
        let adapter = deployment.system.start_adapter(&viewer.agency).await;
        let certificate = deployment
            .system
            .pki
            .client(viewer.agency.as_str(), refbus_dashboard::act::SYSTEM)
            .unwrap();
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(
                deployment.system.pki.ca_pem(),
            ))
            .domain_name("localhost")
            .identity(tonic::transport::Identity::from_pem(
                &certificate.issued.certificate_pem,
                &certificate.issued.key_pem,
            ));
        let acting = Acting::new()
            .agency(viewer.agency.clone(), &format!("https://{adapter}"), tls)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Board::serve_with(deployment, viewer, listener, Some(acting)).await
    }

    async fn serve(deployment: &Deployment, viewer: &Viewer, listener: TcpListener) -> Board {
        Board::serve_with(deployment, viewer, listener, None).await
    }

    async fn serve_with(
        deployment: &Deployment,
        viewer: &Viewer,
        listener: TcpListener,
        acting: Option<Acting>,
    ) -> Board {
        let address = listener.local_addr().unwrap();
        let mut dashboard = Dashboard::new(
            deployment.system.bus().await,
            deployment.system.verifier(),
            Arc::new(deployment.clock.clone()),
        );
        if let Some(acting) = acting {
            dashboard = dashboard.with_acting(acting);
        }
        let mut updates = dashboard.updates();
        let viewer = viewer.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            refbus_dashboard::run(
                dashboard,
                listener,
                move |routes| routes.layer(axum::Extension(viewer)),
                async move {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
        });
        // Serves once the projection is rebuilt.
        loop {
            if let refbus_dashboard::Update::Ready { .. } = updates.recv().await.unwrap() {
                break;
            }
        }
        Board {
            address,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Stops the dashboard and waits until it no longer serves.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap();
    }
}

fn viewer(agency: &str, role: Role) -> Viewer {
    Viewer {
        username: refbus_operators::Username::new(format!("{role}.{agency}")).unwrap(),
        agency: AgencyId::new(agency).unwrap(),
        role,
    }
}

fn coordinator() -> Viewer {
    viewer("maros-bappeda", Role::Coordinator)
}

/// The row of referral `id`, as a CSS selector.
fn row(id: &str) -> String {
    format!("tr.referral[data-referral=\"{id}\"]")
}

/// A countdown `h:mm:ss` (or `-h:mm:ss`) in seconds.
fn seconds(countdown: &str) -> i64 {
    let (sign, digits) = match countdown.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, countdown),
    };
    let parts: Vec<i64> = digits
        .split(':')
        .map(|part| {
            part.parse()
                .unwrap_or_else(|_| panic!("not a countdown: {countdown}"))
        })
        .collect();
    assert_eq!(parts.len(), 3, "not a countdown: {countdown}");
    sign * (parts[0] * 3600 + parts[1] * 60 + parts[2])
}

/// Marks the page as loaded once; [`assert_not_reloaded`] checks the mark is still there.
async fn mark_page(browser: &Browser) {
    browser
        .execute("window.refbusTestLoads = 1; return true;", Vec::new())
        .await
        .unwrap();
}

async fn assert_not_reloaded(browser: &Browser) {
    let mark = browser
        .execute("return window.refbusTestLoads || null;", Vec::new())
        .await
        .unwrap();
    assert_eq!(mark, json!(1), "the page was reloaded");
}

async fn wait_live(browser: &Browser) {
    browser
        .wait_for_script("return document.getElementById('live-status').dataset.status === 'live';")
        .await
        .unwrap();
}

/// The value of `data-state` of referral `id`'s row once it is one of `states`.
async fn wait_row_state(browser: &Browser, id: &str, states: &[&str]) -> String {
    let script = format!(
        "var r = document.querySelector('{}'); var s = r && r.dataset.state; \
         return {} .indexOf(s) >= 0 ? s : null;",
        row(id).replace('\'', "\\'"),
        json!(states),
    );
    browser
        .wait_for_script(&script)
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_appears_on_an_open_board_without_reload_and_the_countdown_ticks() {
    let mut deployment = Deployment::start().await;
    let board = Board::start(&deployment, &coordinator()).await;
    let browser = Browser::start("dashboard_breach_live").await.unwrap();
    browser.open(&board.url("/")).await.unwrap();
    wait_live(&browser).await;
    mark_page(&browser).await;

    // A new referral appears, pushed.
    let id = deployment.send("browser-breach-1").await;
    browser.wait_for(&row(&id)).await.unwrap();
    let state = wait_row_state(&browser, &id, &["on_track"]).await;
    assert_eq!(state, "on_track");

    // The countdown ticks in the browser (the page's own timer, from the server's "now").
    let countdown = format!("{} .countdown", row(&id));
    let before = browser.text(&countdown).await.unwrap();
    let after = browser
        .wait_for_text_change(&countdown, &before)
        .await
        .unwrap();
    // Counting down from the 2 minutes the manual clock leaves, not up, not past zero.
    let (before_s, after_s) = (seconds(&before), seconds(&after));
    assert!(
        after_s < before_s && before_s <= 120 && after_s > 0,
        "{before} -> {after}"
    );
    browser.screenshot("on-track").await.unwrap();

    // Two minutes on the manual clock: the acknowledge clock breaches and level 2 notifies the
    // coordinator; the open page shows it without a reload.
    deployment.clock.advance_by(Duration::from_secs(120));
    recorded(&mut deployment.activity, "acknowledge_emergency.level.2.0").await;
    let state = wait_row_state(&browser, &id, &["breached", "escalated"]).await;
    assert_eq!(
        state, "escalated",
        "an unacknowledged escalation is shown as such"
    );
    browser
        .wait_for_script(&format!(
            "return document.querySelector('{countdown}').classList.contains('overdue');"
        ))
        .await
        .unwrap();
    let notified = browser
        .text(&format!("{} .notified", row(&id)))
        .await
        .unwrap();
    assert!(notified.contains("maros-bappeda"), "{notified}");
    assert_not_reloaded(&browser).await;
    browser.screenshot("board").await.unwrap();
    // Every column on a desktop screen, without scrolling sideways.
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            Vec::new(),
        )
        .await
        .unwrap();
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the board is {overflow} px wider than a 1280 px screen"
    );

    // Readable on a phone: the same board, nothing wider than the screen.
    browser.phone().await.unwrap();
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            Vec::new(),
        )
        .await
        .unwrap();
    browser.screenshot("board-phone").await.unwrap();
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the board is {overflow} px wider than a phone's screen"
    );

    browser.close().await.unwrap();
    board.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_is_sorted_by_time_to_breach_and_coloured_by_state() {
    let mut deployment = Deployment::start().await;
    let board = Board::start(&deployment, &coordinator()).await;
    let browser = Browser::builder("dashboard_states")
        .window_size(1440, 720)
        .start()
        .await
        .unwrap();
    browser.open(&board.url("/")).await.unwrap();
    wait_live(&browser).await;
    mark_page(&browser).await;

    // 09:00: an emergency (2 minutes to acknowledge) and an urgent one (4 minutes).
    let emergency = deployment
        .send_with("browser-states-1", v1::Priority::Emergency)
        .await;
    let urgent = deployment
        .send_with("browser-states-2", v1::Priority::Urgent)
        .await;
    // 09:02: the emergency is breached and escalated, the urgent one past its 50% warning.
    deployment.clock.advance_by(Duration::from_secs(120));
    recorded(&mut deployment.activity, "acknowledge_emergency.level.2.0").await;
    // And a routine one (5 minutes) arrives, on track.
    let routine = deployment
        .send_with("browser-states-3", v1::Priority::Routine)
        .await;

    assert_eq!(
        wait_row_state(&browser, &emergency, &["escalated"]).await,
        "escalated"
    );
    assert_eq!(
        wait_row_state(&browser, &urgent, &["at_risk"]).await,
        "at_risk"
    );
    assert_eq!(
        wait_row_state(&browser, &routine, &["on_track"]).await,
        "on_track"
    );
    // Most urgent first: the breached one, then 2 minutes left, then 5.
    let order = browser
        .execute(
            "return Array.from(document.querySelectorAll('#board-rows tr.referral'))\
             .map(function (r) { return r.dataset.referral; });",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(order, json!([emergency, urgent, routine]));
    // Each state has its own colour.
    let colours = browser
        .execute(
            "return Array.from(document.querySelectorAll('#board-rows tr.referral'))\
             .map(function (r) { return getComputedStyle(r).backgroundColor; });",
            Vec::new(),
        )
        .await
        .unwrap();
    let colours: Vec<&str> = colours
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_ne!(colours[0], colours[1], "escalated and at risk look alike");
    assert_ne!(colours[1], colours[2], "at risk and on track look alike");
    assert_not_reloaded(&browser).await;

    let path = browser.screenshot("board").await.unwrap();
    // The picture in the documentation comes from here.
    if std::env::var_os("REFBUS_UPDATE_DOCS_SCREENSHOT").is_some_and(|v| !v.is_empty()) {
        let docs = refbus_e2e::repo_root().join("docs/img/board.png");
        std::fs::create_dir_all(docs.parent().unwrap()).unwrap();
        std::fs::copy(&path, &docs).unwrap();
    }

    browser.close().await.unwrap();
    board.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_is_kept_in_the_url_and_the_live_feed_follows_it() {
    let mut deployment = Deployment::start().await;
    let board = Board::start(&deployment, &coordinator()).await;
    let browser = Browser::start("dashboard_filter").await.unwrap();
    let emergency = deployment
        .send_with("browser-filter-1", v1::Priority::Emergency)
        .await;
    let routine = deployment
        .send_with("browser-filter-2", v1::Priority::Routine)
        .await;
    deployment.clock.advance_by(Duration::from_secs(120));
    recorded(&mut deployment.activity, "acknowledge_emergency.level.2.0").await;

    // The operator picks "escalated" in the state filter and applies it.
    browser.open(&board.url("/")).await.unwrap();
    browser.wait_for(&row(&routine)).await.unwrap();
    browser
        .execute(
            "document.getElementById('filter-state').value = 'escalated'; return true;",
            Vec::new(),
        )
        .await
        .unwrap();
    browser
        .click("#filters button[type='submit']")
        .await
        .unwrap();
    browser
        .wait_for_script("return location.search.indexOf('state=escalated') >= 0;")
        .await
        .unwrap();
    let shared = browser.current_url().await.unwrap();
    wait_live(&browser).await;
    mark_page(&browser).await;
    let rows = browser.find_all("#board-rows tr.referral").await.unwrap();
    assert_eq!(rows.len(), 1);
    browser.wait_for(&row(&emergency)).await.unwrap();

    // A referral that becomes escalated later joins the filtered board live.
    let later = deployment
        .send_with("browser-filter-3", v1::Priority::Emergency)
        .await;
    deployment.clock.advance_by(Duration::from_secs(60));
    browser.wait_for(&row(&later)).await.unwrap();
    assert_eq!(
        wait_row_state(&browser, &later, &["escalated"]).await,
        "escalated"
    );
    assert!(browser.find_all(&row(&routine)).await.unwrap().is_empty());
    assert_not_reloaded(&browser).await;
    browser.screenshot("filtered").await.unwrap();

    // The URL is the view: opened afresh (a bookmark, a link sent to a colleague), it shows the
    // same filter selected and the same rows.
    browser.open(&shared).await.unwrap();
    let selected = browser
        .execute(
            "return document.getElementById('filter-state').value;",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(selected, json!("escalated"));
    browser.wait_for(&row(&later)).await.unwrap();
    assert!(browser.find_all(&row(&routine)).await.unwrap().is_empty());

    browser.close().await.unwrap();
    board.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integrity_alert_appears_on_top_of_an_open_board() {
    let mut deployment = Deployment::start().await;
    let board = Board::start(&deployment, &coordinator()).await;
    let browser = Browser::start("dashboard_integrity_alert").await.unwrap();
    let id = deployment.send("browser-alert-1").await;
    browser.open(&board.url("/")).await.unwrap();
    wait_live(&browser).await;
    browser.wait_for(&row(&id)).await.unwrap();
    mark_page(&browser).await;
    assert!(
        browser
            .find_all("#alerts li.alert")
            .await
            .unwrap()
            .is_empty()
    );

    // Something that is not a signed record lands on the referral's subject, written straight
    // to JetStream past every refbus writer.
    let subject = format!("refbus.v1.ref.maros-uptd-ppa.maros-dinsos.{id}");
    let seq = refbus_testkit::hostile::publish_raw(
        &deployment.system.nats.url(),
        &subject,
        b"not a record".to_vec(),
    )
    .await
    .unwrap();

    let alert = browser
        .wait_for(&format!("#alerts li.alert[data-seq='{seq}']"))
        .await
        .unwrap();
    let text = alert.text().await.unwrap();
    assert!(text.contains(&id), "the alert names the referral: {text}");
    // On top: above the board, visible without scrolling.
    let placement = browser
        .execute(
            "var a = document.getElementById('alerts').getBoundingClientRect(); \
             var b = document.getElementById('board').getBoundingClientRect(); \
             return [a.top < b.top, a.height > 0, a.top < window.innerHeight];",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(placement, json!([true, true, true]));
    assert_not_reloaded(&browser).await;
    browser.screenshot("alert").await.unwrap();

    // And it stays: a fresh page load shows it too.
    browser.open(&board.url("/")).await.unwrap();
    browser
        .wait_for(&format!("#alerts li.alert[data-seq='{seq}']"))
        .await
        .unwrap();

    browser.close().await.unwrap();
    board.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agency_load_on_a_phone_and_its_link_to_the_agencys_board() {
    let mut deployment = Deployment::start().await;
    let id = deployment.send("browser-load-1").await;
    deployment.clock.advance_by(Duration::from_secs(120));
    recorded(&mut deployment.activity, "acknowledge_emergency.level.2.0").await;
    let board = Board::start(&deployment, &coordinator()).await;
    let browser = Browser::builder("dashboard_load")
        .window_size(PHONE.0, PHONE.1)
        .start()
        .await
        .unwrap();
    browser.open(&board.url("/agencies")).await.unwrap();
    let width = browser
        .execute("return window.innerWidth;", Vec::new())
        .await
        .unwrap();
    assert_eq!(width, json!(PHONE.0));
    let uptd = "tr.agency-load[data-agency='maros-uptd-ppa']";
    let cell = |class: &str| format!("{uptd} td.{class}");
    assert_eq!(browser.text(&cell("open")).await.unwrap(), "1");
    assert_eq!(
        browser.text(&cell("awaiting-acceptance")).await.unwrap(),
        "1"
    );
    assert_eq!(browser.text(&cell("breached-today")).await.unwrap(), "1");
    assert_eq!(
        browser.text(&cell("breached-this-week")).await.unwrap(),
        "1"
    );
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            Vec::new(),
        )
        .await
        .unwrap();
    browser.screenshot("load-phone").await.unwrap();
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the load page is {overflow} px wider than a phone's screen"
    );

    // The agency's name leads to the board filtered to it.
    browser.click(&format!("{uptd} td.agency a")).await.unwrap();
    browser
        .wait_for_script("return location.search.indexOf('agency=maros-uptd-ppa') >= 0;")
        .await
        .unwrap();
    browser.wait_for(&row(&id)).await.unwrap();
    browser.screenshot("agency-board-phone").await.unwrap();

    browser.close().await.unwrap();
    board.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_language_switch_and_the_viewers_time_zone() {
    let mut deployment = Deployment::start().await;
    let id = deployment.send("browser-lang-1").await;
    // 09:00 WITA plus the 2 minute target: the deadline is 09:02 WITA, that is 10:02 WIT.
    let western = Board::start(&deployment, &coordinator()).await;
    let eastern = Board::start(&deployment, &viewer(EASTERN_AGENCY, Role::Coordinator)).await;
    let browser = Browser::start("dashboard_language_zone").await.unwrap();

    // Bahasa Indonesia first.
    browser.open(&western.url("/")).await.unwrap();
    let lang = browser
        .execute("return document.documentElement.lang;", Vec::new())
        .await
        .unwrap();
    assert_eq!(lang, json!("id"));
    let heading = browser.text("h1").await.unwrap();
    assert_eq!(heading, "Papan eskalasi");
    wait_live(&browser).await;
    let status = browser.text("#live-status").await.unwrap();
    assert_eq!(status, "Langsung");
    assert_eq!(browser.text("#zone .tz").await.unwrap(), "WITA");
    let deadline = browser
        .text(&format!("{} .deadline", row(&id)))
        .await
        .unwrap();
    assert!(
        deadline.contains("09:02") && deadline.contains("WITA"),
        "{deadline}"
    );
    browser.screenshot("indonesian").await.unwrap();

    // English by the switch, remembered for the next page.
    browser
        .click("#lang-switch a[data-lang='en']")
        .await
        .unwrap();
    browser
        .wait_for_text("h1", "Escalation board")
        .await
        .unwrap();
    wait_live(&browser).await;
    assert_eq!(browser.text("#live-status").await.unwrap(), "Live");
    browser.open(&western.url("/")).await.unwrap();
    assert_eq!(browser.text("h1").await.unwrap(), "Escalation board");
    browser.screenshot("english").await.unwrap();

    // A coordinator seated at an agency in Papua's time zone sees the same deadline in WIT.
    browser.open(&eastern.url("/?lang=id")).await.unwrap();
    assert_eq!(browser.text("#zone .tz").await.unwrap(), "WIT");
    let deadline = browser
        .text(&format!("{} .deadline", row(&id)))
        .await
        .unwrap();
    assert!(
        deadline.contains("10:02") && deadline.contains("WIT"),
        "{deadline}"
    );
    assert!(!deadline.contains("WITA"), "{deadline}");
    browser.screenshot("eastern-zone").await.unwrap();

    browser.close().await.unwrap();
    western.stop().await;
    eastern.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_head_acknowledges_from_the_board_and_the_row_changes() {
    let mut deployment = Deployment::start().await;
    let head = viewer("maros-uptd-ppa", Role::Head);
    let board = Board::start_acting(&mut deployment, &head).await;
    let browser = Browser::start("dashboard_acknowledge").await.unwrap();
    browser.open(&board.url("/")).await.unwrap();
    wait_live(&browser).await;

    // An urgent referral to UPTD PPA runs past its 4 minutes: level 1 of the standard policy
    // notifies UPTD PPA (the responsible agency), whose head gets the button on her open board.
    let id = deployment
        .send_with("browser-ack-1", v1::Priority::Urgent)
        .await;
    deployment.clock.advance_by(Duration::from_secs(241));
    recorded(&mut deployment.activity, "acknowledge_urgent.level.1.0").await;
    let button = format!("{} .ack-button", row(&id));
    browser.wait_for(&button).await.unwrap();
    assert_eq!(
        wait_row_state(&browser, &id, &["escalated"]).await,
        "escalated"
    );
    browser.screenshot("escalated").await.unwrap();
    let stored = deployment.system.stored_messages().await;

    // She acknowledges from the board; the dashboard sends her back to it.
    browser.click(&button).await.unwrap();
    let state = wait_row_state(&browser, &id, &["breached"]).await;
    assert_eq!(
        state, "breached",
        "acknowledged: still late, no longer escalated"
    );
    assert!(browser.find_all(&button).await.unwrap().is_empty());
    assert_eq!(
        browser.current_url().await.unwrap(),
        board.url("/"),
        "back on the board"
    );
    browser.screenshot("acknowledged").await.unwrap();

    // The event is on the bus, written by her agency's adapter, as her, through the dashboard.
    assert!(deployment.system.stored_messages().await > stored);
    browser
        .open(&board.url(&format!("/referrals/{id}?lang=en")))
        .await
        .unwrap();
    let entry = browser
        .text("#timeline [data-kind='escalation_acknowledged']")
        .await
        .unwrap();
    assert!(
        entry.contains("head.maros-uptd-ppa at maros-uptd-ppa (system dashboard)"),
        "{entry}"
    );
    browser.screenshot("timeline").await.unwrap();

    browser.close().await.unwrap();
    board.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_agencys_head_is_refused_its_timeline_and_sees_nothing_of_it() {
    let mut deployment = Deployment::start().await;
    let id = deployment.send("browser-403-1").await;
    // Polres is neither party to a Dinsos -> UPTD PPA referral nor notified of it.
    let board = Board::start(&deployment, &viewer(EASTERN_AGENCY, Role::Head)).await;
    let browser = Browser::start("dashboard_forbidden").await.unwrap();
    browser.open(&board.url("/")).await.unwrap();
    wait_live(&browser).await;
    assert!(browser.find_all(&row(&id)).await.unwrap().is_empty());

    browser
        .open(&board.url(&format!("/referrals/{id}")))
        .await
        .unwrap();
    let status = browser
        .execute(
            "return fetch(location.href).then(function (r) { return r.status; });",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(status, json!(403));
    let page = String::from_utf8(browser.page_source().await.unwrap()).unwrap();
    assert!(page.contains("Anda tidak berwenang melihat ini."), "{page}");
    for detail in [
        id.as_str(),
        "maros-dinsos",
        "maros-uptd-ppa",
        "psychological_counselling",
    ] {
        assert!(!page.contains(detail), "the refusal shows {detail:?}");
    }
    browser.screenshot("forbidden").await.unwrap();

    browser.close().await.unwrap();
    board.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_live_feed_is_shown_and_the_board_catches_up_on_reconnect() {
    let mut deployment = Deployment::start().await;
    let viewer = coordinator();
    let board = Board::start(&deployment, &viewer).await;
    let address = board.address;
    let browser = Browser::start("dashboard_feed_drop").await.unwrap();
    browser.open(&board.url("/")).await.unwrap();
    wait_live(&browser).await;
    mark_page(&browser).await;

    // The dashboard goes away: the page says so.
    board.stop().await;
    browser
        .wait_for_script("return document.getElementById('live-status').dataset.status === 'lost';")
        .await
        .unwrap();
    assert_eq!(
        browser.text("#live-status").await.unwrap(),
        "Koneksi terputus, menyambung ulang…"
    );
    browser.screenshot("lost").await.unwrap();

    // Meanwhile a referral is sent; the dashboard comes back on the same address, and the open
    // page reconnects by itself and shows it, without a reload.
    let id = deployment.send("browser-drop-1").await;
    let board = Board::restart(&deployment, &viewer, address).await;
    wait_live(&browser).await;
    browser.wait_for(&row(&id)).await.unwrap();
    assert_not_reloaded(&browser).await;
    browser.screenshot("recovered").await.unwrap();

    browser.close().await.unwrap();
    board.stop().await;
}

/// Every byte of a live feed, read as the browser would, until the task is aborted.
fn capture_feed(url: String) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
    let bytes = Arc::new(Mutex::new(Vec::new()));
    let sink = bytes.clone();
    let task = tokio::spawn(async move {
        let response = get(&url).await;
        let mut body = response.into_body();
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                sink.lock().unwrap().extend_from_slice(data);
            }
        }
    });
    (bytes, task)
}

/// `GET url` over a fresh HTTP/1.1 connection: the response with its body still to read.
async fn get(url: &str) -> hyper::Response<hyper::body::Incoming> {
    let uri: hyper::Uri = url.parse().unwrap();
    let authority = uri.authority().unwrap().clone();
    let stream = TcpStream::connect(authority.as_str()).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(uri.path_and_query().unwrap().as_str())
        .header(hyper::header::HOST, authority.as_str())
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    sender.send_request(request).await.unwrap()
}

async fn get_bytes(url: &str) -> Vec<u8> {
    let response = get(url).await;
    assert_eq!(response.status(), 200, "GET {url}");
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec()
}

/// Where `needle` occurs in `haystack`, if anywhere.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_page_and_no_live_message_carries_identity_plaintext() {
    let mut deployment = Deployment::start().await;
    let board = Board::start(&deployment, &coordinator()).await;
    // The live feed as served, from before anything happens until the end.
    let (feed, feed_task) = capture_feed(board.url("/events"));
    let (feed_en, feed_en_task) = capture_feed(board.url("/events?lang=en"));
    let browser = Browser::start("dashboard_identity_scan").await.unwrap();
    browser.open(&board.url("/")).await.unwrap();
    wait_live(&browser).await;

    // Referrals with identities (see `create_request`), through warnings, breach, escalation.
    let first = deployment.send("browser-scan-1").await;
    let second = deployment.send("browser-scan-2").await;
    browser.wait_for(&row(&second)).await.unwrap();
    deployment.clock.advance_by(Duration::from_secs(120));
    recorded(&mut deployment.activity, "acknowledge_emergency.level.2.0").await;
    wait_row_state(&browser, &first, &["breached", "escalated"]).await;

    let mut served: Vec<(String, Vec<u8>)> = Vec::new();
    // The open board as the live updates left it.
    let live_dom = browser.page_source().await.unwrap();
    assert!(find(&live_dom, second.as_bytes()).is_some());
    served.push(("the browser's live-updated board".to_owned(), live_dom));
    for path in [
        "/".to_owned(),
        "/?lang=en".to_owned(),
        "/?state=escalated".to_owned(),
        "/agencies".to_owned(),
        "/agencies?lang=en".to_owned(),
        format!("/referrals/{first}"),
        format!("/referrals/{first}?lang=en"),
        format!("/referrals/{second}"),
        "/static/board.js".to_owned(),
        "/static/board.css".to_owned(),
    ] {
        let bytes = get_bytes(&board.url(&path)).await;
        served.push((format!("GET {path}"), bytes));
    }
    for (name, path) in [
        ("timeline", format!("/referrals/{first}")),
        ("board", "/".to_owned()),
    ] {
        browser.open(&board.url(&path)).await.unwrap();
        let source = browser.page_source().await.unwrap();
        served.push((format!("the browser's DOM of {name}"), source));
    }
    feed_task.abort();
    feed_en_task.abort();
    let feed = feed.lock().unwrap().clone();
    let feed_en = feed_en.lock().unwrap().clone();
    // The feeds did carry the referrals (the scan looks at real messages).
    for bytes in [&feed, &feed_en] {
        assert!(
            find(bytes, first.as_bytes()).is_some(),
            "the live feed never named {first}"
        );
        assert!(find(bytes, b"event: row").is_some() || find(bytes, b"event:row").is_some());
    }
    served.push(("the live feed".to_owned(), feed));
    served.push(("the English live feed".to_owned(), feed_en));
    assert!(
        served
            .iter()
            .any(|(_, bytes)| find(bytes, first.as_bytes()).is_some()),
        "no page named the referral"
    );

    let person = identity("Siti Contoh Korban");
    let secrets = [
        person.full_name.as_str(),
        person.nik.as_str(),
        person.birth_date.as_str(),
        person.address.as_str(),
        person.phone.as_str(),
        person.narrative.as_str(),
        person.guardian_name.as_str(),
        // The create's note is sealed too.
        "Anak perlu rumah aman malam ini.",
        // Distinctive parts, in case a field were cut or re-encoded.
        "Siti",
        "Bonto Tangnga",
        "0000-4242",
        "7309014503",
    ];
    for (what, bytes) in &served {
        for secret in secrets {
            assert!(
                find(bytes, secret.as_bytes()).is_none(),
                "{what} contains identity plaintext {secret:?}"
            );
        }
    }

    browser.close().await.unwrap();
    board.stop().await;
}
