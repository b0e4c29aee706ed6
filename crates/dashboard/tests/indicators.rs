//! Planning indicators through the production path: agencies' systems create, accept, reject,
//! complete and reroute referrals over gRPC through their adapters, the router records the
//! demonstration clocks' warnings, breaches and escalations on a manual clock, and the figures
//! read back (the stream replayed through the record check, and the dashboard's live page and
//! CSV) are exactly those worked out by hand below. No identity is ever served.

#![allow(
    clippy::unwrap_used,
    reason = "a test: a broken setup must fail loudly"
)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use refbus_core::demographics::{AgeBand, Sex};
use refbus_core::indicators::{self, Dimension, Query, Report};
use refbus_core::referral::Party;
use refbus_core::{AgencyId, Timestamp};
use refbus_dashboard::{Dashboard, Update};
use refbus_e2e::{AgencySystem, System, create_request, demo_registry};
use refbus_proto::v1;
use refbus_router::{Activity, Clock as _, ManualClock, Options};
use refbus_testkit::NatsServer;
use tokio::sync::broadcast;

/// 09:00 WITA on Monday 2 March 2026.
const T0: &str = "2026-03-02T09:00:00+08:00";
const COORDINATOR: &str = "maros-bappeda:coordinator";
const POLICE_HEAD: &str = "polres-maros:head";

/// A clock row: clock, instances, met, missed, pending, compliance, warnings, breaches and
/// escalations by level.
type ClockLine = (
    String,
    u64,
    u64,
    u64,
    u64,
    Option<u64>,
    u64,
    u64,
    Vec<(u16, u64)>,
);
/// An agency row: agency, side, referrals, accepted, rejected, rerouted, completed, open, and
/// the median and p90 seconds to acknowledge.
type AgencyLine = (
    String,
    Party,
    u64,
    u64,
    u64,
    u64,
    u64,
    u64,
    Option<u64>,
    Option<u64>,
);
/// Sex, age band, referrals, and the median and p90 seconds to acknowledge.
type PersonLine = (Sex, AgeBand, u64, Option<u64>, Option<u64>);

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

async fn get(addr: SocketAddr, path: &str, viewer: &str) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", "localhost")
        .header("x-test-viewer", viewer)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// Waits until the router recorded every `(referral, key)` (in any order).
async fn recorded_all(activity: &mut broadcast::Receiver<Activity>, wanted: &[(&str, &str)]) {
    let mut missing: HashSet<(String, String)> = wanted
        .iter()
        .map(|(id, key)| ((*id).to_owned(), (*key).to_owned()))
        .collect();
    while !missing.is_empty() {
        let next = tokio::time::timeout(Duration::from_secs(20), activity.recv())
            .await
            .unwrap_or_else(|_| panic!("never recorded: {missing:?}"))
            .unwrap();
        if let Activity::Recorded { referral, key, .. } = next {
            missing.remove(&(referral.to_string(), key));
        }
    }
}

fn request_id(tag: &str) -> String {
    format!("ind-{tag}")
}

async fn accept(system: &AgencySystem, id: &str, tag: &str) {
    system
        .client()
        .accept_referral(system.request(v1::AcceptReferralRequest {
            request_id: request_id(tag),
            referral_id: id.to_owned(),
        }))
        .await
        .unwrap();
}

fn agency(text: &str) -> AgencyId {
    AgencyId::new(text).unwrap()
}

fn report(indicators: &indicators::Indicators, now: Timestamp, by: &[Dimension]) -> Report {
    indicators.report(
        now,
        &Query {
            by: by.to_vec(),
            ..Query::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indicators_match_the_figures_worked_out_by_hand() {
    let clock = ManualClock::new(Timestamp::parse_rfc3339(T0).unwrap());
    let mut system = System::with_registry(NatsServer::start().unwrap(), demo_registry()).await;
    system.use_clock(Arc::new(clock.clone()));
    let router = system.router(
        system.bus().await,
        Arc::new(clock.clone()),
        Options::default(),
    );
    let mut activity = router.activity();
    tokio::spawn(router.run(std::future::pending()));
    while !matches!(activity.recv().await.unwrap(), Activity::Ready { .. }) {}
    let dashboard = Dashboard::new(
        system.bus().await,
        system.verifier(),
        Arc::new(clock.clone()),
    );
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

    let dinsos = system.agency("maros-dinsos").await;
    let dp3a = system.agency("maros-dp3a").await;
    let uptd = system.agency("maros-uptd-ppa").await;
    let police = system.agency("polres-maros").await;
    let t0 = Timestamp::parse_rfc3339(T0).unwrap();

    // The scenario (demonstration clocks, in minutes; T0 = 09:00 WITA, 2026-03-02):
    // R1 Dinsos -> UPTD PPA, counselling, urgent, [sexual_violence], child; the identity
    //    (female, born 2012-03-05: 13 on the report day) gives female, 13-17.
    //    Accepted at T0+1m (ack 60 s), completed at T0+2m (complete 120 s).
    let mut r1 = create_request("ind-r1", "maros-uptd-ppa", "psychological_counselling");
    r1.priority = v1::Priority::Urgent.into();
    let r1 = dinsos.create(r1).await;
    // R2 Dinsos -> UPTD PPA, counselling, emergency, [domestic_violence], adult, anonymous,
    //    stated male, 25-59. Its 2-minute acknowledge clock runs late: warnings at T0+1m and
    //    T0+1m30s, level 1 at 50% (T0+1m), breach and level 2 at T0+2m, level 2 again at
    //    T0+2m30s; accepted at T0+2m40s (ack 160 s, clock missed).
    let mut r2 = create_request("ind-r2", "maros-uptd-ppa", "psychological_counselling");
    r2.priority = v1::Priority::Emergency.into();
    r2.categories = vec!["domestic_violence".to_owned()];
    r2.child = false;
    r2.person = None;
    r2.sex = v1::Sex::Male.into();
    r2.age_band = v1::AgeBand::AgeBand25To59.into();
    let r2 = dinsos.create(r2).await;
    // R3 Dinsos -> Polres, police report, urgent, [sexual_violence, child_abuse], the same
    //    child (female, 13-17), reported at T0-1m: the UU TPKS Pasal 41 clock (6 minutes in the
    //    demo, the sender answers for it) runs from T0-1m; its 50% (warning and statutory level
    //    1) at T0+2m; the acknowledge clock's 50% warning at T0+2m. Rejected at T0+2m50s (ack
    //    170 s): both clocks stop within target (met).
    let mut r3 = create_request("ind-r3", "polres-maros", "police_report");
    r3.priority = v1::Priority::Urgent.into();
    r3.categories = vec!["sexual_violence".to_owned(), "child_abuse".to_owned()];
    r3.case_reported_at = Some(prost_types::Timestamp {
        seconds: t0.as_millis() / 1000 - 60,
        nanos: 0,
    });
    let r3 = dinsos.create(r3).await;
    // R4 DP3A -> UPTD PPA, case management, routine, no category, adult, anonymous, stated
    //    female, 60+; rerouted by DP3A to Dinsos at T0 (its acknowledge clock started and
    //    stopped at T0: met). R5 is the child: DP3A -> Dinsos, same metadata, created at T0;
    //    its 5-minute acknowledge clock gives a warning at T0+2m30s and still runs at the end.
    let mut r4 = create_request("ind-r4", "maros-uptd-ppa", "case_management");
    r4.priority = v1::Priority::Routine.into();
    r4.categories = Vec::new();
    r4.child = false;
    r4.person = None;
    r4.note = String::new();
    r4.sex = v1::Sex::Female.into();
    r4.age_band = v1::AgeBand::AgeBand60AndOver.into();
    let r4 = dp3a.create(r4).await;
    let rerouted = dp3a
        .client()
        .reroute_referral(dp3a.request(v1::RerouteReferralRequest {
            request_id: request_id("r4-reroute"),
            referral_id: r4.clone(),
            to: "maros-dinsos".to_owned(),
            note: String::new(),
            sealed_note: None,
            sealed_identity: None,
        }))
        .await
        .unwrap()
        .into_inner();
    let r5 = rerouted.child_referral.unwrap().referral_id;

    clock.advance_by(Duration::from_secs(60));
    recorded_all(
        &mut activity,
        &[
            (&r2, "acknowledge_emergency.warning.500"),
            (&r2, "acknowledge_emergency.level.1.0"),
        ],
    )
    .await;
    accept(&uptd, &r1, "r1-accept").await;
    clock.advance_by(Duration::from_secs(30));
    recorded_all(&mut activity, &[(&r2, "acknowledge_emergency.warning.750")]).await;
    clock.advance_by(Duration::from_secs(30));
    recorded_all(
        &mut activity,
        &[
            (&r2, "acknowledge_emergency.breach"),
            (&r2, "acknowledge_emergency.level.2.0"),
            (&r3, "acknowledge_urgent.warning.500"),
            (&r3, "tpks_pasal_41.warning.500"),
            (&r3, "tpks_pasal_41.level.1.0"),
        ],
    )
    .await;
    uptd.client()
        .complete_referral(uptd.request(v1::CompleteReferralRequest {
            request_id: request_id("r1-complete"),
            referral_id: r1.clone(),
            outcome: Some(v1::Outcome {
                code: "service_provided".to_owned(),
                note: String::new(),
                sealed_note: None,
            }),
        }))
        .await
        .unwrap();
    clock.advance_by(Duration::from_secs(30));
    recorded_all(
        &mut activity,
        &[
            (&r2, "acknowledge_emergency.level.2.1"),
            (&r5, "acknowledge_routine.warning.500"),
        ],
    )
    .await;
    clock.advance_by(Duration::from_secs(10));
    accept(&uptd, &r2, "r2-accept").await;
    clock.advance_by(Duration::from_secs(10));
    police
        .client()
        .reject_referral(police.request(v1::RejectReferralRequest {
            request_id: request_id("r3-reject"),
            referral_id: r3.clone(),
            reason: refbus_e2e::reason("outside_area", ""),
        }))
        .await
        .unwrap();
    let now = clock.now();
    assert_eq!(now, t0.plus(Duration::from_secs(170)));

    // === the stream replayed through the record check ===
    let replay = refbus_dashboard::indicators::replay(&system.bus().await, &system.verifier())
        .await
        .unwrap();
    assert_eq!(replay.refused, 0);
    assert_eq!(replay.indicators.len(), 5);
    let ind = &replay.indicators;
    // Each referral's last checked record alone (what `refbus indicators` reads by default, and
    // the dashboard after a start from its snapshot): the same figures, by every dimension.
    let latest = refbus_dashboard::indicators::latest(&system.bus().await, &system.verifier())
        .await
        .unwrap();
    assert_eq!(latest.records, 5);
    assert!(replay.records > 10, "{} records", replay.records);
    assert_eq!(
        report(&latest.indicators, now, &Dimension::ALL),
        report(ind, now, &Dimension::ALL)
    );

    // Totals: 5 referrals; accepted R1, R2; rejected R3; rerouted R4; completed R1; open R2, R5.
    // Times to acknowledge 60, 160, 170 s: median rank ceil(1.5) = 2 -> 160 s, p90 rank
    // ceil(2.7) = 3 -> 170 s. Time to complete: 120 s alone.
    let total = report(ind, now, &[]);
    let all = &total.referrals[0].figures;
    assert_eq!(total.referrals.len(), 1);
    assert_eq!(
        (
            all.referrals,
            all.accepted,
            all.rejected,
            all.rerouted,
            all.completed,
            all.open
        ),
        (5, 2, 1, 1, 1, 2)
    );
    assert_eq!(all.acknowledge.count, 3);
    assert_eq!(all.acknowledge.median, Some(Duration::from_secs(160)));
    assert_eq!(all.acknowledge.p90, Some(Duration::from_secs(170)));
    assert_eq!(all.complete.count, 1);
    assert_eq!(all.complete.median, Some(Duration::from_secs(120)));

    // Clocks (all referrals): acknowledge_urgent R1 met, R3 met (warning 1); acknowledge_emergency
    // R2 missed (warnings 2, breach 1, level 1 once, level 2 twice); tpks_pasal_41 R3 met
    // (warning 1, level 1 once); acknowledge_routine R4 met, R5 pending (warning 1).
    let clocks: Vec<ClockLine> = total
        .clocks
        .iter()
        .map(|row| {
            let f = &row.figures;
            (
                row.clock.to_string(),
                f.instances,
                f.met,
                f.missed,
                f.pending,
                f.compliance_permille(),
                f.warnings,
                f.breaches,
                f.escalations.iter().map(|(l, n)| (*l, *n)).collect(),
            )
        })
        .collect();
    assert_eq!(
        clocks,
        vec![
            (
                "acknowledge_emergency".to_owned(),
                1,
                0,
                1,
                0,
                Some(0),
                2,
                1,
                vec![(1, 1), (2, 2)]
            ),
            (
                "acknowledge_routine".to_owned(),
                2,
                1,
                0,
                1,
                Some(1000),
                1,
                0,
                vec![]
            ),
            (
                "acknowledge_urgent".to_owned(),
                2,
                2,
                0,
                0,
                Some(1000),
                1,
                0,
                vec![]
            ),
            (
                "tpks_pasal_41".to_owned(),
                1,
                1,
                0,
                0,
                Some(1000),
                1,
                0,
                vec![(1, 1)]
            ),
        ]
    );

    // Per agency and side. Dinsos sent R1, R2, R3 (accepted 2, rejected 1, completed 1, open
    // R2; acks 60, 160, 170) and received R5 (open). DP3A sent R4, R5 (rerouted 1, open 1).
    // UPTD PPA received R1, R2, R4 (accepted 2, rerouted 1, completed 1, open 1; acks 60, 160:
    // median rank 1 -> 60 s, p90 rank ceil(1.8) = 2 -> 160 s). Polres received R3 (rejected).
    let by_agency = report(ind, now, &[Dimension::Agency]);
    let rows: Vec<AgencyLine> = by_agency
        .referrals
        .iter()
        .map(|row| {
            let (agency, side) = row.key.agency.clone().unwrap();
            let f = &row.figures;
            (
                agency.to_string(),
                side,
                f.referrals,
                f.accepted,
                f.rejected,
                f.rerouted,
                f.completed,
                f.open,
                f.acknowledge.median.map(|d| d.as_secs()),
                f.acknowledge.p90.map(|d| d.as_secs()),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "maros-dinsos".into(),
                Party::Sender,
                3,
                2,
                1,
                0,
                1,
                1,
                Some(160),
                Some(170)
            ),
            (
                "maros-dinsos".into(),
                Party::Recipient,
                1,
                0,
                0,
                0,
                0,
                1,
                None,
                None
            ),
            (
                "maros-dp3a".into(),
                Party::Sender,
                2,
                0,
                0,
                1,
                0,
                1,
                None,
                None
            ),
            (
                "maros-uptd-ppa".into(),
                Party::Recipient,
                3,
                2,
                0,
                1,
                1,
                1,
                Some(60),
                Some(160)
            ),
            (
                "polres-maros".into(),
                Party::Recipient,
                1,
                0,
                1,
                0,
                0,
                0,
                Some(170),
                Some(170)
            ),
        ]
    );
    // Clocks count for the agency that answers for them: UPTD PPA (recipient) R1 urgent met,
    // R2 emergency missed, R4 routine met; Polres R3 urgent met; Dinsos as sender the TPKS
    // clock of R3 (met), as recipient R5's routine clock (pending).
    let clock_owners: Vec<(String, Party, String, u64, u64, u64)> = by_agency
        .clocks
        .iter()
        .map(|row| {
            let (agency, side) = row.key.agency.clone().unwrap();
            let f = &row.figures;
            (
                agency.to_string(),
                side,
                row.clock.to_string(),
                f.met,
                f.missed,
                f.pending,
            )
        })
        .collect();
    assert_eq!(
        clock_owners,
        vec![
            (
                "maros-dinsos".into(),
                Party::Sender,
                "tpks_pasal_41".into(),
                1,
                0,
                0
            ),
            (
                "maros-dinsos".into(),
                Party::Recipient,
                "acknowledge_routine".into(),
                0,
                0,
                1
            ),
            (
                "maros-uptd-ppa".into(),
                Party::Recipient,
                "acknowledge_emergency".into(),
                0,
                1,
                0
            ),
            (
                "maros-uptd-ppa".into(),
                Party::Recipient,
                "acknowledge_routine".into(),
                1,
                0,
                0
            ),
            (
                "maros-uptd-ppa".into(),
                Party::Recipient,
                "acknowledge_urgent".into(),
                1,
                0,
                0
            ),
            (
                "polres-maros".into(),
                Party::Recipient,
                "acknowledge_urgent".into(),
                1,
                0,
                0
            ),
        ]
    );

    // By sex and age band: female 13-17 R1, R3 (acks 60, 170: median 60, p90 170); male 25-59
    // R2; female 60+ R4 and its child R5 (the metadata carried over by the reroute).
    let people: Vec<PersonLine> = report(ind, now, &[Dimension::Sex, Dimension::AgeBand])
        .referrals
        .iter()
        .map(|row| {
            let f = &row.figures;
            (
                row.key.sex.unwrap(),
                row.key.age_band.unwrap(),
                f.referrals,
                f.acknowledge.median.map(|d| d.as_secs()),
                f.acknowledge.p90.map(|d| d.as_secs()),
            )
        })
        .collect();
    assert_eq!(
        people,
        vec![
            (Sex::Female, AgeBand::From13To17, 2, Some(60), Some(170)),
            (Sex::Female, AgeBand::From60, 2, None, None),
            (Sex::Male, AgeBand::From25To59, 1, Some(160), Some(160)),
        ]
    );

    // By category: a referral counts once per category: sexual_violence R1, R3; child_abuse R3;
    // domestic_violence R2; none R4, R5 (so 6 counts for 5 referrals).
    let categories: Vec<(String, u64)> = report(ind, now, &[Dimension::Category])
        .referrals
        .iter()
        .map(|row| {
            let category = row.key.category.clone().unwrap();
            (
                category.map_or_else(|| "(none)".to_owned(), |c| c.to_string()),
                row.figures.referrals,
            )
        })
        .collect();
    assert_eq!(
        categories,
        vec![
            ("(none)".to_owned(), 2),
            ("child_abuse".to_owned(), 1),
            ("domestic_violence".to_owned(), 1),
            ("sexual_violence".to_owned(), 2),
        ]
    );
    // All in March 2026 (WITA); a period that excludes it has nothing.
    let march = report(ind, now, &[Dimension::Month]);
    assert_eq!(march.referrals.len(), 1);
    assert_eq!(march.referrals[0].key.month.unwrap().to_string(), "2026-03");
    let april = ind.report(
        now,
        &Query {
            from: indicators::Month::parse("2026-04"),
            ..Query::default()
        },
    );
    assert!(april.referrals.is_empty() && april.clocks.is_empty());
    // Polres alone: its one referral, and only the clock it answers for (not Dinsos's TPKS).
    let polres = ind.report(
        now,
        &Query {
            agency: Some(agency("polres-maros")),
            ..Query::default()
        },
    );
    assert_eq!(polres.referrals[0].figures.referrals, 1);
    assert_eq!(
        polres
            .clocks
            .iter()
            .map(|row| row.clock.to_string())
            .collect::<Vec<_>>(),
        vec!["acknowledge_urgent"]
    );

    // === the dashboard: the same figures, live ===
    loop {
        if let Update::Referral { id, .. } = updates.recv().await.unwrap()
            && id.to_string() == r3
        {
            break;
        }
    }
    let (status, csv) = get(addr, "/indicators.csv", COORDINATOR).await;
    assert_eq!(status, 200);
    assert_eq!(csv, indicators::csv(&report(ind, now, &Dimension::ALL)));
    assert!(csv.starts_with("table,month,agency,side,service,priority,category,sex,age_band,"));
    assert!(csv.contains(
        "referrals,2026-03,maros-dinsos,sender,psychological_counselling,emergency,domestic_violence,male,25-59,,1,1,0,0,0,1,1,160,160,0,"
    ));

    let (status, page) = get(addr, "/indicators", COORDINATOR).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("Indikator perencanaan"),
        "Indonesian by default"
    );
    assert!(page.contains("data-agency=\"polres-maros\" data-side=\"penerima\""));
    assert!(page.contains("<svg"), "charts are drawn by the server");
    assert!(page.contains("data-label=\"13-17 Perempuan\" data-value=\"2\""));
    assert!(page.contains("data-label=\"tpks_pasal_41\" data-value=\"100.0%\""));
    assert!(page.contains("class=\"indicator-clock statutory\" data-clock=\"tpks_pasal_41\""));
    let (_, english) = get(addr, "/indicators?lang=en", COORDINATOR).await;
    assert!(english.contains("Planning indicators") && english.contains("Female"));

    // Polres's head sees Polres only; another agency's figures are 403.
    let (status, own) = get(addr, "/indicators", POLICE_HEAD).await;
    assert_eq!(status, 200);
    assert!(own.contains("data-agency=\"polres-maros\""));
    assert!(!own.contains("data-agency=\"maros-dinsos\""));
    for path in [
        "/indicators?agency=maros-uptd-ppa",
        "/indicators.csv?agency=maros-uptd-ppa",
    ] {
        let (status, body) = get(addr, path, POLICE_HEAD).await;
        assert_eq!(status, 403, "{path}");
        assert!(!body.contains("maros-uptd-ppa,"), "{path}");
    }
    let (status, _) = get(addr, "/indicators?from=2026-3", COORDINATOR).await;
    assert_eq!(status, 400);
    let (_, own_csv) = get(addr, "/indicators.csv", POLICE_HEAD).await;
    assert_eq!(
        own_csv,
        indicators::csv(&ind.report(
            now,
            &Query {
                by: Dimension::ALL.to_vec(),
                agency: Some(agency("polres-maros")),
                ..Query::default()
            }
        ))
    );

    // No byte served holds the person's identity.
    let person = refbus_e2e::identity("Siti Contoh Korban");
    for body in [&csv, &page, &english, &own, &own_csv] {
        for secret in [
            person.full_name.as_str(),
            person.nik.as_str(),
            person.address.as_str(),
            person.phone.as_str(),
            person.narrative.as_str(),
            person.guardian_name.as_str(),
            person.birth_date.as_str(),
            "Anak perlu rumah aman malam ini.",
        ] {
            assert!(!body.contains(secret), "identity served: {secret:?}");
        }
    }
}
