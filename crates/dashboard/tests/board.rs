//! The dashboard over a real nats-server, driven over HTTP: agencies' systems act through
//! their adapters, the router runs the demonstration clocks on a manual clock shared with the
//! dashboard, and the test reads the pages and the live feed as a browser would. Every byte
//! served is scanned for the person's identity, which must never appear.

#![allow(
    clippy::unwrap_used,
    reason = "a test: a broken setup must fail loudly"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use refbus_core::Timestamp;
use refbus_dashboard::act::Acting;
use refbus_dashboard::{Dashboard, Update};
use refbus_e2e::{AgencySystem, System, create_request, demo_registry, recorded};
use refbus_proto::v1;
use refbus_router::{Activity, ManualClock, Options};
use refbus_testkit::NatsServer;
use tokio::sync::broadcast;

const T0: &str = "2026-03-02T09:00:00+08:00";

/// Test-only login: the viewer named by the `x-test-viewer: AGENCY:ROLE` header, put where the
/// operators' login will put it (`Extension<Viewer>`).
async fn viewer_from_header(mut request: Request, next: Next) -> Response {
    let viewer = request
        .headers()
        .get("x-test-viewer")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| refbus_dashboard::viewer::parse_test_viewer(text, "test-operator").ok());
    match viewer {
        Some(viewer) => {
            request.extensions_mut().insert(viewer);
            next.run(request).await
        }
        None => hyper::StatusCode::UNAUTHORIZED.into_response(),
    }
}

const COORDINATOR: &str = "maros-bappeda:coordinator";

struct Board {
    system: System,
    clock: ManualClock,
    activity: broadcast::Receiver<Activity>,
    updates: broadcast::Receiver<Update>,
    addr: SocketAddr,
    /// Where the dashboard serves its Prometheus metrics.
    metrics: SocketAddr,
    /// Every body served so far (pages and live messages), for the identity scan.
    served: Vec<String>,
}

impl Board {
    async fn start() -> Board {
        Board::start_with(true).await
    }

    /// A board, with the router running or not.
    async fn start_with(router: bool) -> Board {
        let clock = ManualClock::new(Timestamp::parse_rfc3339(T0).unwrap());
        let mut system = System::with_registry(NatsServer::start().unwrap(), demo_registry()).await;
        system.use_clock(Arc::new(clock.clone()));
        let mut board = Board {
            system,
            clock,
            activity: broadcast::channel(1).1,
            updates: broadcast::channel(1).1,
            addr: "127.0.0.1:1".parse().unwrap(),
            metrics: "127.0.0.1:1".parse().unwrap(),
            served: Vec::new(),
        };
        if router {
            let router = board.system.router(
                board.system.bus().await,
                Arc::new(board.clock.clone()),
                Options::default(),
            );
            board.activity = router.activity();
            tokio::spawn(router.run(std::future::pending()));
            while !matches!(board.activity.recv().await.unwrap(), Activity::Ready { .. }) {}
        }
        board.start_dashboard().await;
        board
    }

    /// Starts a dashboard (another one, if one runs) and points the test's requests at it.
    async fn start_dashboard(&mut self) {
        self.start_dashboard_with(None).await;
    }

    /// Starts a dashboard keeping its snapshot in `snapshot` (file and key), if given.
    async fn start_dashboard_with(
        &mut self,
        snapshot: Option<(std::path::PathBuf, refbus_core::signature::SigningKey)>,
    ) {
        let (system, clock) = (&mut self.system, &self.clock);
        // The dashboard acts for UPTD PPA as its registered system `dashboard`, through UPTD
        // PPA's adapter, with a client certificate of its own.
        let uptd = refbus_core::AgencyId::new("maros-uptd-ppa").unwrap();
        let adapter = system.start_adapter(&uptd).await;
        let certificate = system.pki.client(uptd.as_str(), "dashboard").unwrap();
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(system.pki.ca_pem()))
            .domain_name("localhost")
            .identity(tonic::transport::Identity::from_pem(
                &certificate.issued.certificate_pem,
                &certificate.issued.key_pem,
            ));
        let acting = Acting::new()
            .agency(uptd, &format!("https://{adapter}"), tls)
            .unwrap();
        let dashboard = Dashboard::new(
            system.bus().await,
            system.verifier(),
            Arc::new(clock.clone()),
        )
        .with_acting(acting)
        // Often, so that a stream altered by a test shows within the test's patience.
        .with_stream_recheck_every(Duration::from_millis(250));
        let metrics =
            refbus_metrics::Endpoint::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        self.metrics = metrics.address().unwrap();
        let mut dashboard = dashboard.with_metrics(metrics);
        if let Some((path, key)) = snapshot {
            // Written at start only: the test decides when the file changes.
            dashboard = dashboard.with_snapshot(path, key, Duration::from_secs(24 * 3600));
        }
        let mut updates = dashboard.updates();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(refbus_dashboard::run(
            dashboard,
            listener,
            |app| app.layer(axum::middleware::from_fn(viewer_from_header)),
            std::future::pending(),
        ));
        while !matches!(updates.recv().await.unwrap(), Update::Ready { .. }) {}
        self.updates = updates;
        self.addr = addr;
    }

    /// Waits until the dashboard has applied a change of `id`.
    async fn applied(&mut self, id: &str) {
        loop {
            if let Update::Referral { id: changed, .. } = self.updates.recv().await.unwrap()
                && changed.to_string() == id
            {
                return;
            }
        }
    }

    async fn request(
        &mut self,
        path: &str,
        viewer: &str,
        headers: &[(&str, &str)],
    ) -> hyper::Response<Incoming> {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = hyper::Request::get(path)
            .header("host", "localhost")
            .header("x-test-viewer", viewer);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        sender
            .send_request(request.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap()
    }

    /// POSTs the form `body` to `path` as `viewer`: the status and the body.
    async fn post(&mut self, path: &str, viewer: &str, body: &str) -> (u16, String) {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::post(path)
            .header("host", "localhost")
            .header("x-test-viewer", viewer)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        self.served.push(body.clone());
        (status, body)
    }

    /// GET `path` as `viewer`: the status and the body.
    async fn get(&mut self, path: &str, viewer: &str) -> (u16, String) {
        let response = self.request(path, viewer, &[]).await;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        self.served.push(body.clone());
        (status, body)
    }

    /// Opens the live feed at `path` as `viewer`.
    async fn live(&mut self, path: &str, viewer: &str, headers: &[(&str, &str)]) -> Live {
        let response = self.request(path, viewer, headers).await;
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Live {
            body: response.into_body(),
            buffer: String::new(),
        }
    }

    /// Fails if any byte served so far holds the person's identity or the sealed note.
    fn assert_no_identity_served(&self) {
        let person = refbus_e2e::identity("Siti Contoh Korban");
        let secrets = [
            person.full_name.as_str(),
            person.nik.as_str(),
            person.address.as_str(),
            person.phone.as_str(),
            person.narrative.as_str(),
            person.guardian_name.as_str(),
            "Anak perlu rumah aman malam ini.",
            "2012-03-05",
        ];
        assert!(!self.served.is_empty());
        for body in &self.served {
            for secret in secrets {
                assert!(
                    !body.contains(secret),
                    "the dashboard served identity data ({secret:?})"
                );
            }
        }
    }
}

/// One message of the live feed.
#[derive(Debug)]
struct Message {
    event: String,
    id: String,
    data: String,
    comment: bool,
}

struct Live {
    body: Incoming,
    buffer: String,
}

impl Live {
    async fn next(&mut self, served: &mut Vec<String>) -> Message {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                served.push(block.clone());
                let mut message = Message {
                    event: "message".to_owned(),
                    id: String::new(),
                    data: String::new(),
                    comment: false,
                };
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        message.event = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("id:") {
                        message.id = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
                    } else if line.starts_with(':') {
                        message.comment = true;
                    }
                }
                message.data = data.join("\n");
                // Keep-alive comments are not messages.
                if message.comment && data.is_empty() && block.trim() == ":" {
                    continue;
                }
                return message;
            }
            let frame = self.body.frame().await.unwrap().unwrap();
            if let Ok(bytes) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&bytes).unwrap());
            }
        }
    }

    /// The next `row` message about `id` whose state is one of `states`.
    async fn row(&mut self, served: &mut Vec<String>, id: &str, states: &[&str]) -> Message {
        loop {
            let message = self.next(served).await;
            if message.event == "row"
                && message.data.contains(&format!("data-referral=\"{id}\""))
                && states
                    .iter()
                    .any(|state| message.data.contains(&format!("data-state=\"{state}\"")))
            {
                return message;
            }
        }
    }
}

async fn send(dinsos: &AgencySystem, request_id: &str, priority: v1::Priority) -> String {
    let mut request = create_request(request_id, "maros-uptd-ppa", "psychological_counselling");
    request.priority = priority.into();
    dinsos.create(request).await
}

/// The board row (`<tr class="referral" ...>`) of `id` in a page, if listed.
fn row_of<'a>(page: &'a str, id: &str) -> Option<&'a str> {
    let wanted = format!("data-referral=\"{id}\"");
    page.match_indices("<tr class=\"referral")
        .find_map(|(start, _)| {
            let end = page[start..].find("</tr>")? + start;
            let row = &page[start..end];
            row[..row.find('>')?].contains(&wanted).then_some(row)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_lists_an_open_referral_and_its_breach_arrives_live() {
    let mut board = Board::start().await;
    let mut live = board.live("/events", COORDINATOR, &[]).await;
    let first = live.next(&mut board.served).await;
    assert_eq!(
        first.event, "board",
        "a feed opened without an id starts with the board"
    );

    let dinsos = board.system.agency("maros-dinsos").await;
    let id = send(&dinsos, "board-1", v1::Priority::Urgent).await;
    live.row(&mut board.served, &id, &["on_track"]).await;

    let (status, page) = board.get("/", COORDINATOR).await;
    assert_eq!(status, 200);
    let row = row_of(&page, &id).expect("the open referral is on the board");
    assert!(row.contains("data-state=\"on_track\""), "{row}");
    assert!(row.contains("data-clock=\"acknowledge_urgent\""), "{row}");
    let deadline = Timestamp::parse_rfc3339(T0)
        .unwrap()
        .plus(Duration::from_secs(240));
    assert!(
        row.contains(&format!("data-deadline=\"{}\"", deadline.as_millis())),
        "the countdown ticks in the browser from the deadline: {row}"
    );
    assert!(row.contains(">0:04:00<"), "four minutes to go: {row}");
    for cell in [
        "maros-dinsos",
        "maros-uptd-ppa",
        "psychological_counselling",
        "sexual_violence",
        "Mendesak",
    ] {
        assert!(row.contains(cell), "{cell} missing from {row}");
    }
    assert!(page.contains("id=\"live-status\""));
    assert!(
        page.contains("<span class=\"tz\">WITA</span>"),
        "times in the viewer's zone"
    );

    // Past the 4-minute target: the router records the breach and the first escalation
    // (the agency's supervisor); the row arrives escalated on the open feed.
    board.clock.advance_by(Duration::from_secs(241));
    recorded(&mut board.activity, "acknowledge_urgent.level.1.0").await;
    let escalated = live.row(&mut board.served, &id, &["escalated"]).await;
    assert!(
        escalated.data.contains("<td class=\"level\">1</td>"),
        "{}",
        escalated.data
    );
    assert!(
        !escalated.id.is_empty(),
        "every change carries an id to resume from"
    );
    let (_, page) = board.get("/", COORDINATOR).await;
    let row = row_of(&page, &id).unwrap();
    assert!(row.contains("data-state=\"escalated\""), "{row}");
    assert!(
        row.contains("-0:00:01"),
        "one second past the deadline: {row}"
    );

    // The agency acknowledges through its adapter: no longer escalated, still breached.
    let uptd = board.system.agency("maros-uptd-ppa").await;
    uptd.client()
        .acknowledge_escalation(uptd.request(v1::AcknowledgeEscalationRequest {
            request_id: "uptd-ack-1".into(),
            referral_id: id.clone(),
            clock_id: "acknowledge_urgent".into(),
            level: 1,
        }))
        .await
        .unwrap();
    live.row(&mut board.served, &id, &["breached"]).await;
    let (_, page) = board.get("/?lang=en", COORDINATOR).await;
    let row = row_of(&page, &id).unwrap();
    assert!(row.contains("data-state=\"breached\""), "{row}");
    assert!(row.contains("Breached"), "in English: {row}");
    board.assert_no_identity_served();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_in_the_url_select_the_rows() {
    let mut board = Board::start().await;
    let dinsos = board.system.agency("maros-dinsos").await;
    let urgent = send(&dinsos, "filter-1", v1::Priority::Urgent).await;
    board.applied(&urgent).await;
    let emergency = send(&dinsos, "filter-2", v1::Priority::Emergency).await;
    board.applied(&emergency).await;

    let (_, all) = board.get("/", COORDINATOR).await;
    let (u, e) = (all.find(&urgent).unwrap(), all.find(&emergency).unwrap());
    assert!(
        e < u,
        "the emergency clock breaches first and is listed first"
    );

    let (_, page) = board.get("/?priority=urgent", COORDINATOR).await;
    assert!(row_of(&page, &urgent).is_some() && row_of(&page, &emergency).is_none());
    assert!(
        page.contains("<option value=\"urgent\" selected>"),
        "the filter is shown as set"
    );
    let (_, page) = board
        .get("/?clock=acknowledge_emergency", COORDINATOR)
        .await;
    assert!(row_of(&page, &emergency).is_some() && row_of(&page, &urgent).is_none());
    let (_, page) = board
        .get(
            "/?agency=maros-dinsos&service=psychological_counselling&state=on_track",
            COORDINATOR,
        )
        .await;
    assert!(row_of(&page, &emergency).is_some() && row_of(&page, &urgent).is_some());
    let (_, page) = board.get("/?agency=polres-maros", COORDINATOR).await;
    assert!(row_of(&page, &emergency).is_none() && row_of(&page, &urgent).is_none());
    let (_, page) = board.get("/?state=breached", COORDINATOR).await;
    assert!(row_of(&page, &urgent).is_none());
    let (status, _) = board.get("/?priority=whenever", COORDINATOR).await;
    assert_eq!(status, 400);

    // A filtered feed sends nothing about rows outside its filter.
    let mut live = board
        .live("/events?priority=emergency", COORDINATOR, &[])
        .await;
    let snapshot = live.next(&mut board.served).await;
    assert_eq!(snapshot.event, "board");
    assert!(snapshot.data.contains(&emergency) && !snapshot.data.contains(&urgent));
    board.assert_no_identity_served();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_sees_her_agencys_referrals_and_gets_403_for_anothers() {
    let mut board = Board::start().await;
    let dinsos = board.system.agency("maros-dinsos").await;
    let id = send(&dinsos, "scope-1", v1::Priority::Urgent).await;
    board.applied(&id).await;

    let (status, page) = board.get("/", "maros-uptd-ppa:head").await;
    assert_eq!(status, 200);
    assert!(row_of(&page, &id).is_some(), "the recipient's head sees it");
    let (status, _) = board
        .get(&format!("/referrals/{id}"), "maros-uptd-ppa:head")
        .await;
    assert_eq!(status, 200);

    let (status, page) = board.get("/", "polres-maros:head").await;
    assert_eq!(status, 200);
    assert!(!page.contains(&id), "another agency's head does not see it");
    let (status, page) = board
        .get(&format!("/referrals/{id}"), "polres-maros:head")
        .await;
    assert_eq!(status, 403);
    for leak in [
        id.as_str(),
        "maros-dinsos",
        "psychological_counselling",
        "acknowledge_urgent",
    ] {
        assert!(
            !page.contains(leak),
            "a 403 shows nothing of the referral ({leak})"
        );
    }
    // An id that exists nowhere answers the same to her.
    let (status, _) = board
        .get(
            "/referrals/00000000-0000-0000-0000-000000000000",
            "polres-maros:head",
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = board
        .get(
            "/referrals/00000000-0000-0000-0000-000000000000",
            COORDINATOR,
        )
        .await;
    assert_eq!(status, 404);

    // Her load page lists her agency alone.
    let (_, page) = board.get("/agencies", "polres-maros:head").await;
    assert!(page.contains("data-agency=\"polres-maros\""));
    assert!(!page.contains("data-agency=\"maros-uptd-ppa\""));
    let (_, page) = board.get("/agencies", COORDINATOR).await;
    let uptd = &page[page.find("data-agency=\"maros-uptd-ppa\"").unwrap()..];
    let uptd = &uptd[..uptd.find("</tr>").unwrap()];
    assert!(
        uptd.contains("<td class=\"open\" data-label=\"Terbuka\">1</td>"),
        "{uptd}"
    );
    assert!(
        uptd.contains("<td class=\"awaiting-acceptance\" data-label=\"Menunggu diterima\">1</td>"),
        "{uptd}"
    );

    // Her live feed says nothing about it when it changes.
    let mut live = board.live("/events", "polres-maros:head", &[]).await;
    let snapshot = live.next(&mut board.served).await;
    assert!(!snapshot.data.contains(&id));
    let uptd = board.system.agency("maros-uptd-ppa").await;
    uptd.client()
        .accept_referral(uptd.request(v1::AcceptReferralRequest {
            request_id: "scope-accept".into(),
            referral_id: id.clone(),
        }))
        .await
        .unwrap();
    let other = send(&dinsos, "scope-2", v1::Priority::Urgent).await;
    // The next message she gets is not about the referrals she may not see.
    let polres = board.system.agency("polres-maros").await;
    let own = {
        let mut request = create_request("scope-3", "maros-uptd-ppa", "psychological_counselling");
        request.priority = v1::Priority::Urgent.into();
        polres.create(request).await
    };
    let message = live.next(&mut board.served).await;
    assert!(message.data.contains(&own), "{message:?}");
    assert!(!message.data.contains(&id) && !message.data.contains(&other));
    board.assert_no_identity_served();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referrals_timeline_shows_every_event_in_order_with_its_author() {
    let mut board = Board::start().await;
    let dinsos = board.system.agency("maros-dinsos").await;
    let id = send(&dinsos, "timeline-1", v1::Priority::Urgent).await;
    board.clock.advance_by(Duration::from_secs(241));
    recorded(&mut board.activity, "acknowledge_urgent.level.1.0").await;
    let uptd = board.system.agency("maros-uptd-ppa").await;
    uptd.client()
        .acknowledge_escalation(uptd.request(v1::AcknowledgeEscalationRequest {
            request_id: "timeline-ack".into(),
            referral_id: id.clone(),
            clock_id: "acknowledge_urgent".into(),
            level: 1,
        }))
        .await
        .unwrap();

    let (status, page) = board
        .get(&format!("/referrals/{id}?lang=en"), COORDINATOR)
        .await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = page
        .match_indices("data-kind=\"")
        .map(|(at, found)| {
            let rest = &page[at + found.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "clock_warning",
            "clock_warning",
            "clock_breached",
            "escalated",
            "escalation_acknowledged"
        ]
    );
    let seqs: Vec<u64> = page
        .match_indices("data-seq=\"")
        .map(|(at, found)| {
            let rest = &page[at + found.len()..];
            rest[..rest.find('"').unwrap()].parse().unwrap()
        })
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    let ack = &page[page.find("data-kind=\"escalation_acknowledged\"").unwrap()..];
    assert!(
        ack.contains("operator@maros-uptd-ppa at maros-uptd-ppa (system case-system)"),
        "the acknowledgement names its author: {}",
        &ack[..300.min(ack.len())]
    );
    let escalated = &page[page.find("data-kind=\"escalated\"").unwrap()..];
    assert!(
        escalated.contains("maros-uptd-ppa (supervisor)"),
        "who was notified"
    );
    assert!(page.contains("router (automatic clock)"));
    assert!(
        page.contains("02/03/2026 09:04:00 WITA"),
        "the breach time, in WITA"
    );
    board.assert_no_identity_served();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_browser_catches_up_without_a_reload() {
    let mut board = Board::start().await;
    let (_, page) = board.get("/", COORDINATOR).await;
    let marker = "data-event-id=\"";
    let at = page.find(marker).unwrap() + marker.len();
    let page_id = page[at..at + page[at..].find('"').unwrap()].to_owned();

    // The page's own id: nothing missed, no snapshot; the next message is the next change.
    let mut live = board
        .live(&format!("/events?since={page_id}"), COORDINATOR, &[])
        .await;
    let dinsos = board.system.agency("maros-dinsos").await;
    let first = send(&dinsos, "resume-1", v1::Priority::Urgent).await;
    let message = live.next(&mut board.served).await;
    assert!(message.comment && message.event == "message", "{message:?}");
    let row = live.row(&mut board.served, &first, &["on_track"]).await;
    let last_id = row.id.clone();
    drop(live);

    // While disconnected another referral arrives; reconnecting with the last id seen brings
    // the whole board (with it) first.
    let second = send(&dinsos, "resume-2", v1::Priority::Emergency).await;
    board.applied(&second).await;
    let mut live = board
        .live("/events", COORDINATOR, &[("last-event-id", &last_id)])
        .await;
    let snapshot = live.next(&mut board.served).await;
    assert_eq!(snapshot.event, "board");
    assert!(snapshot.data.contains(&first) && snapshot.data.contains(&second));
    drop(live);

    // Reconnecting with the current id: nothing to catch up.
    let mut live = board
        .live("/events", COORDINATOR, &[("last-event-id", &snapshot.id)])
        .await;
    let message = live.next(&mut board.served).await;
    assert_ne!(message.event, "board", "{message:?}");
    board.assert_no_identity_served();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_static_files_are_served_and_a_request_without_a_viewer_is_refused() {
    let mut board = Board::start().await;
    let (status, script) = board.get("/static/board.js", COORDINATOR).await;
    assert_eq!(status, 200);
    assert!(script.contains("EventSource"));
    let (status, css) = board.get("/static/board.css", COORDINATOR).await;
    assert_eq!(status, 200);
    assert!(css.contains("@media"));
    let (status, _) = board.get("/", "").await;
    assert_eq!(
        status, 401,
        "the test login refuses; nothing is served to nobody"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_head_acknowledges_from_the_board_through_her_agencys_adapter() {
    let mut board = Board::start().await;
    let dinsos = board.system.agency("maros-dinsos").await;
    let mut live = board.live("/events", "maros-uptd-ppa:head", &[]).await;
    let id = send(&dinsos, "ack-1", v1::Priority::Urgent).await;
    board.clock.advance_by(Duration::from_secs(241));
    recorded(&mut board.activity, "acknowledge_urgent.level.1.0").await;
    // Escalated, with level 1 recorded (the dashboard may show the breach a moment before).
    loop {
        let row = live.row(&mut board.served, &id, &["escalated"]).await;
        if row.data.contains("<td class=\"level\">1</td>") {
            break;
        }
    }

    // Level 1 notified UPTD PPA (the responsible agency's supervisor): its head may act.
    let (_, page) = board.get("/", "maros-uptd-ppa:head").await;
    let row = row_of(&page, &id).unwrap();
    assert!(
        row.contains("class=\"ack-button\" data-clock=\"acknowledge_urgent\" data-level=\"1\""),
        "{row}"
    );
    for (viewer, why) in [
        ("maros-uptd-ppa:viewer", "a viewer cannot act"),
        (COORDINATOR, "the coordinator was not notified at level 1"),
    ] {
        let (_, page) = board.get("/", viewer).await;
        assert!(!row_of(&page, &id).unwrap().contains("ack-button"), "{why}");
    }

    // Refused before anything is written: a viewer, another agency's head, a level that was
    // never escalated (the adapter refuses it).
    let stored = board.system.stored_messages().await;
    let path = format!("/referrals/{id}/acknowledge");
    let form = "clock=acknowledge_urgent&level=1";
    let (status, _) = board.post(&path, "maros-uptd-ppa:viewer", form).await;
    assert_eq!(status, 403);
    let (status, page) = board.post(&path, "polres-maros:head", form).await;
    assert_eq!(status, 403);
    assert!(!page.contains(&id));
    let (status, page) = board
        .post(
            &path,
            "maros-uptd-ppa:head",
            "clock=acknowledge_urgent&level=3",
        )
        .await;
    assert_eq!(
        status, 400,
        "the adapter refuses with INVALID_ARGUMENT: {page}"
    );
    assert!(page.contains("no escalation at level 3"), "{page}");
    let (status, _) = board
        .post(&path, "maros-uptd-ppa:head", "clock=&level=x")
        .await;
    assert_eq!(status, 422, "axum refuses a form it cannot read");
    assert_eq!(
        board.system.stored_messages().await,
        stored,
        "nothing was written"
    );

    // The head acknowledges: the adapter records it as her, of her agency, through the
    // dashboard system; the row on her open board changes.
    let (status, _) = board.post(&path, "maros-uptd-ppa:head", form).await;
    assert_eq!(status, 303);
    let row = live.row(&mut board.served, &id, &["breached"]).await;
    assert!(!row.data.contains("ack-button"), "{}", row.data);
    let (_, page) = board.get(&format!("/referrals/{id}"), COORDINATOR).await;
    let ack = &page[page.find("data-kind=\"escalation_acknowledged\"").unwrap()..];
    assert!(
        ack.contains("test-operator at maros-uptd-ppa (system dashboard)"),
        "{}",
        &ack[..400.min(ack.len())]
    );
    board.assert_no_identity_served();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integrity_alert_is_shown_on_top_and_pushed_live() {
    let mut board = Board::start().await;
    let dinsos = board.system.agency("maros-dinsos").await;
    let id = send(&dinsos, "alert-1", v1::Priority::Urgent).await;
    board.applied(&id).await;
    let mut live = board.live("/events", COORDINATOR, &[]).await;
    assert_eq!(live.next(&mut board.served).await.event, "board");

    // Something that is not a refbus record, written on the referral's subject.
    let subject = format!("refbus.v1.ref.maros-uptd-ppa.maros-dinsos.{id}");
    let seq = refbus_testkit::hostile::publish_raw(
        &board.system.nats.url(),
        &subject,
        b"not a record".to_vec(),
    )
    .await
    .unwrap();
    let marker = format!("data-seq=\"{seq}\"");
    loop {
        let message = live.next(&mut board.served).await;
        if message.event == "alerts" && message.data.contains(&marker) {
            assert!(message.data.contains("unreadable"), "{}", message.data);
            break;
        }
    }
    let (_, page) = board.get("/", COORDINATOR).await;
    let alert = page.find(&marker).expect("the alert is on the board");
    assert!(
        alert < page.find("id=\"board\"").unwrap(),
        "alerts are above the board"
    );
    let (_, page) = board.get("/", "maros-uptd-ppa:head").await;
    assert!(
        page.contains(&marker),
        "a party to the referral sees its alert"
    );
    let (_, page) = board.get("/", "polres-maros:head").await;
    assert!(!page.contains(&marker), "another agency does not");
    let (_, page) = board.get(&format!("/referrals/{id}"), COORDINATOR).await;
    assert!(page.contains("id=\"referral-alerts\"") && page.contains(&marker));
    // The referral itself goes on from its last good record.
    let (_, page) = board.get("/", COORDINATOR).await;
    assert!(row_of(&page, &id).is_some(), "{page}");

    // A record of a format this dashboard does not read (a newer writer's): an alert with the
    // record check's sentence, never skipped in silence.
    let seq = refbus_testkit::hostile::publish_raw(
        &board.system.nats.url(),
        &subject,
        br#"{"format":2,"events":[]}"#.to_vec(),
    )
    .await
    .unwrap();
    let marker = format!("data-seq=\"{seq}\" data-problem=\"format\"");
    loop {
        let message = live.next(&mut board.served).await;
        if message.event == "alerts" && message.data.contains(&marker) {
            assert!(
                message.data.contains(&format!(
                    "{subject} (stream sequence {seq}): event record format 2 is unknown; \
                     this refbus reads format 1; upgrade this reader before the writers"
                )),
                "{}",
                message.data
            );
            break;
        }
    }
    let (_, page) = board.get("/", COORDINATOR).await;
    assert!(row_of(&page, &id).is_some(), "{page}");
    board.assert_no_identity_served();
}

/// The events stream's configuration changed by hand, as an administrator would.
async fn alter_stream(board: &Board, max_age: Duration) {
    let name = board.system.nats.stream_settings().name;
    refbus_testkit::hostile::alter_stream(&board.system.nats.url(), &name, |config| {
        config.max_age = max_age;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_altered_under_the_dashboard_is_shown_above_every_page_until_put_right() {
    let mut board = Board::start().await;
    let dinsos = board.system.agency("maros-dinsos").await;
    let id = send(&dinsos, "stream-1", v1::Priority::Urgent).await;
    board.applied(&id).await;
    let mut live = board.live("/events", "maros-dinsos:head", &[]).await;
    assert_eq!(live.next(&mut board.served).await.event, "board");
    let (_, page) = board.get("/", COORDINATOR).await;
    assert!(!page.contains("stream-alert"), "as configured: no warning");

    // An administrator adds an age limit to save disk: events older than 30 days would go.
    alter_stream(&board, Duration::from_secs(30 * 24 * 3600)).await;
    let difference = "max_age is 2592000s, refbus needs 0";
    let pushed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let message = live.next(&mut board.served).await;
            if message.event == "alerts" && message.data.contains("stream-alert") {
                return message.data;
            }
        }
    })
    .await
    .expect("the warning is pushed to open boards within 30 s");
    assert!(pushed.contains(difference), "{pushed}");
    assert_eq!(stream_differences(&board).await, Some(1.0));
    // Every viewer, on every page, above the rest; the board goes on.
    for (path, viewer) in [
        ("/", COORDINATOR),
        ("/", "polres-maros:head"),
        ("/agencies", "maros-dinsos:head"),
        (format!("/referrals/{id}").as_str(), COORDINATOR),
    ] {
        let (status, page) = board.get(path, viewer).await;
        assert_eq!(status, 200);
        let warning = page
            .find("class=\"stream-alert\"")
            .unwrap_or_else(|| panic!("{path}: {page}"));
        assert!(page[warning..].contains(difference), "{path}");
        assert!(
            warning < page.find("<main>").unwrap(),
            "{path}: above the page"
        );
    }
    let (_, page) = board.get("/", COORDINATOR).await;
    assert!(row_of(&page, &id).is_some(), "the board goes on: {page}");

    // Put right: the warning goes, live and on the pages.
    alter_stream(&board, Duration::ZERO).await;
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let message = live.next(&mut board.served).await;
            if message.event == "alerts" && !message.data.contains("stream-alert") {
                return;
            }
        }
    })
    .await
    .expect("the warning's end is pushed within 30 s");
    let (_, page) = board.get("/", COORDINATOR).await;
    assert!(!page.contains("stream-alert"), "{page}");
    assert_eq!(stream_differences(&board).await, Some(0.0));
    board.assert_no_identity_served();
}

/// The dashboard's `refbus_dashboard_stream_differences` as its metrics serve it now.
async fn stream_differences(board: &Board) -> Option<f64> {
    let scraped = refbus_metrics::scrape(board.metrics).await.unwrap().body;
    refbus_metrics::sample(&scraped, "refbus_dashboard_stream_differences", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_started_later_rebuilds_and_its_rows_move_with_time_alone() {
    // No router: whatever changes on the board below, the dashboard's own clock did it.
    let mut board = Board::start_with(false).await;
    let dinsos = board.system.agency("maros-dinsos").await;
    let id = send(&dinsos, "rebuild-1", v1::Priority::Urgent).await;
    board.applied(&id).await;

    // A dashboard started now finds the referral in its rebuild.
    board.start_dashboard().await;
    let (_, page) = board.get("/", COORDINATOR).await;
    let row = row_of(&page, &id).expect("rebuilt from the bus");
    assert!(row.contains("data-state=\"on_track\""), "{row}");

    // Past the first warning point (50% of 4 minutes) the row turns at risk on the open feed,
    // then breached at the deadline, though nothing was recorded.
    let stored = board.system.stored_messages().await;
    let mut live = board.live("/events", COORDINATOR, &[]).await;
    assert_eq!(live.next(&mut board.served).await.event, "board");
    board.clock.advance_by(Duration::from_secs(121));
    live.row(&mut board.served, &id, &["at_risk"]).await;
    board.clock.advance_by(Duration::from_secs(120));
    let row = live.row(&mut board.served, &id, &["breached"]).await;
    assert!(row.data.contains(">-0:00:01<"), "{}", row.data);
    assert_eq!(
        board.system.stored_messages().await,
        stored,
        "the dashboard writes nothing"
    );
    board.assert_no_identity_served();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_language_switch_is_remembered_in_a_cookie() {
    let mut board = Board::start().await;
    let (_, page) = board.get("/", COORDINATOR).await;
    assert!(page.contains("<html lang=\"id\">") && page.contains("Papan eskalasi"));
    assert!(
        page.contains("href=\"/?lang=en\" data-lang=\"en\""),
        "the switch keeps the page"
    );

    let response = board
        .request("/?state=at_risk&lang=en", COORDINATOR, &[])
        .await;
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("lang=en;"), "{cookie}");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let page = String::from_utf8(body.to_vec()).unwrap();
    assert!(page.contains("<html lang=\"en\">") && page.contains("Escalation board"));
    assert!(
        page.contains("href=\"/?state=at_risk&#38;lang=id\" data-lang=\"id\""),
        "the way back keeps the filters: {page}"
    );

    // The cookie alone keeps English on the next page.
    let response = board
        .request("/agencies", COORDINATOR, &[("cookie", "lang=en")])
        .await;
    assert!(response.headers().get("set-cookie").is_none());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let page = String::from_utf8(body.to_vec()).unwrap();
    assert!(page.contains("Agency load") && page.contains("Breached this week"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_counts_connected_boards_and_held_referrals_in_its_metrics() {
    let mut board = Board::start().await;
    let dinsos = board.system.agency("maros-dinsos").await;
    let id = send(&dinsos, "metrics-1", v1::Priority::Urgent).await;
    board.applied(&id).await;
    let gauge = |body: &str, name: &str| refbus_metrics::sample(body, name, &[]);
    let before = refbus_metrics::scrape(board.metrics).await.unwrap().body;
    assert_eq!(
        gauge(&before, "refbus_dashboard_board_clients_connected"),
        Some(0.0)
    );
    assert_eq!(gauge(&before, "refbus_dashboard_referrals_held"), Some(1.0));
    assert_eq!(
        gauge(&before, "refbus_dashboard_indicators_referrals"),
        Some(1.0)
    );

    let mut live = board.live("/events", COORDINATOR, &[]).await;
    live.next(&mut board.served).await;
    let open = refbus_metrics::scrape(board.metrics).await.unwrap().body;
    assert_eq!(
        gauge(&open, "refbus_dashboard_board_clients_connected"),
        Some(1.0)
    );

    // A closed board is counted out once the server notices (its next message fails).
    drop(live);
    let second = send(&dinsos, "metrics-2", v1::Priority::Urgent).await;
    board.applied(&second).await;
    let mut scraped = String::new();
    for _ in 0..200 {
        scraped = refbus_metrics::scrape(board.metrics).await.unwrap().body;
        if gauge(&scraped, "refbus_dashboard_board_clients_connected") == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        gauge(&scraped, "refbus_dashboard_board_clients_connected"),
        Some(0.0),
        "{scraped}"
    );
    assert_eq!(
        gauge(&scraped, "refbus_dashboard_referrals_held"),
        Some(2.0)
    );
    assert_eq!(
        gauge(&scraped, "refbus_dashboard_indicators_referrals"),
        Some(2.0)
    );
    assert!(gauge(&scraped, "refbus_dashboard_records_applied_total").is_some_and(|n| n >= 2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_the_snapshot_reads_again_only_what_changed_and_refuses_an_altered_one() {
    use refbus_core::signature::{Signer, SigningKey};
    let mut board = Board::start_with(false).await;
    let dinsos = board.system.agency("maros-dinsos").await;
    let first = send(&dinsos, "snapshot-1", v1::Priority::Urgent).await;
    board.applied(&first).await;
    let dir =
        std::env::temp_dir().join(format!("refbus-dashboard-snapshot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = SigningKey::from_seed(&[3; 32], Signer::Router);
    let written = dir.join("written");
    board
        .start_dashboard_with(Some((written.clone(), key.clone())))
        .await;
    // The dashboard writes its snapshot once it serves (renamed into place whole).
    while !written.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bytes = std::fs::read(&written).unwrap();
    let second = send(&dinsos, "snapshot-2", v1::Priority::Emergency).await;
    board.applied(&second).await;

    let applied =
        |body: &str| refbus_metrics::sample(body, "refbus_dashboard_records_applied_total", &[]);
    // From the snapshot: the first referral is in it, only the second is read again.
    let kept = dir.join("kept");
    std::fs::write(&kept, &bytes).unwrap();
    board.start_dashboard_with(Some((kept, key.clone()))).await;
    let (_, page) = board.get("/", COORDINATOR).await;
    assert!(row_of(&page, &first).is_some() && row_of(&page, &second).is_some());
    let scraped = refbus_metrics::scrape(board.metrics).await.unwrap().body;
    assert_eq!(applied(&scraped), Some(1.0), "{scraped}");
    // The snapshot holds the board, not the indicators: those read every referral beside the
    // live feed, so the page soon counts both referrals again (bounded wait, not a timing).
    let mut counted = 0;
    for _ in 0..200 {
        let (_, csv) = board.get("/indicators.csv", COORDINATOR).await;
        counted = referrals_sent(&csv);
        if counted == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counted, 2, "the indicators after a start from the snapshot");
    // And the metric an operator watches for that read says so too.
    let scraped = refbus_metrics::scrape(board.metrics).await.unwrap().body;
    assert_eq!(
        refbus_metrics::sample(&scraped, "refbus_dashboard_indicators_referrals", &[]),
        Some(2.0),
        "{scraped}"
    );

    // An altered snapshot, or one signed with another key: not used, every referral read.
    let mut altered_bytes = bytes.clone();
    let middle = altered_bytes.len() / 2;
    altered_bytes[middle] ^= 1;
    // A newer dashboard's snapshot (format 2 in its first line): refused by its format, loudly,
    // and rebuilt from the bus like the others.
    let mut newer = bytes.clone();
    let line_end = newer.iter().position(|&byte| byte == b'\n').unwrap();
    newer[line_end - 1] = b'2';
    for (name, content, key) in [
        ("altered", altered_bytes, key.clone()),
        ("newer format", newer, key.clone()),
        (
            "foreign",
            bytes,
            SigningKey::from_seed(&[4; 32], Signer::Router),
        ),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, &content).unwrap();
        board.start_dashboard_with(Some((path, key))).await;
        let (_, page) = board.get("/", COORDINATOR).await;
        assert!(row_of(&page, &first).is_some() && row_of(&page, &second).is_some());
        let scraped = refbus_metrics::scrape(board.metrics).await.unwrap().body;
        assert_eq!(applied(&scraped), Some(2.0), "{name}: {scraped}");
    }
    // Best effort: the last dashboard still runs and may be writing its snapshot in `dir`.
    let _ = std::fs::remove_dir_all(&dir);
}

/// The referrals the indicators CSV counts on the senders' side (one category each here).
fn referrals_sent(csv: &str) -> u64 {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let column = |name: &str| header.iter().position(|c| *c == name).unwrap();
    let (table, side, referrals) = (column("table"), column("side"), column("referrals"));
    lines
        .map(|line| line.split(',').collect::<Vec<_>>())
        .filter(|cells| cells[table] == "referrals" && cells[side] == "sender")
        .map(|cells| cells[referrals].parse::<u64>().unwrap())
        .sum()
}
