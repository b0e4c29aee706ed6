//! `refbus indicators` as a process over a real nats-server: the table and the CSV hold the
//! figures worked out by hand for a small stream, the filters work, bad flags exit 2, and no
//! identity can appear (the stream holds none in the clear; the output holds only ids, codes
//! and numbers).

#![allow(
    clippy::unwrap_used,
    reason = "a test: a broken setup must fail loudly"
)]

mod common;

use common::repo_root;

use std::path::Path;
use std::time::Duration;

use refbus_bus::{Append, Bus, Idempotency, StreamSettings};
use refbus_core::command::Request;
use refbus_core::demographics::{AgeBand, Sex};
use refbus_core::ids::OperatorId;
use refbus_core::referral::{Consent, Creation, Priority, Referral};
use refbus_core::{Actor, AgencyId, Command as CoreCommand, Registry, RequestId, Timestamp};
use refbus_seal::signing::SigningKeys;
use refbus_testkit::NatsServer;

/// 09:00 WITA on Monday 2 March 2026.
const T0: &str = "2026-03-02T09:00:00+08:00";

fn agency(text: &str) -> AgencyId {
    AgencyId::new(text).unwrap()
}

/// Records `command` by `by` at `at` on `state` (or creates), appended after `read_seq`.
#[allow(
    clippy::too_many_arguments,
    reason = "a test helper spelling out one write"
)]
async fn write(
    bus: &Bus,
    registry: &Registry,
    keys: &SigningKeys,
    state: Option<&Referral>,
    command: CoreCommand,
    by: &str,
    request_id: &str,
    at: Timestamp,
    read_seq: u64,
) -> (Referral, u64) {
    let request_id = RequestId::new(request_id).unwrap();
    let request = Request {
        command,
        actor: Actor::Agency {
            agency: agency(by),
            system: None,
            operator: OperatorId::new("op").unwrap(),
        },
        request_id: Some(request_id.clone()),
    };
    let recorded = refbus_core::record(registry, state, &request, at).unwrap();
    let by = agency(by);
    let (appended, _) = bus
        .append(
            &keys.agency(&by),
            Append::after(
                recorded.event,
                &recorded.state,
                read_seq,
                Idempotency::Request {
                    agency: &by,
                    request_id: &request_id,
                },
            ),
        )
        .await
        .unwrap();
    (recorded.state, appended.seq)
}

fn creation(sex: Sex, age_band: AgeBand, child: bool) -> CoreCommand {
    CoreCommand::Create(Box::new(Creation {
        case_id: "MRS-IND".parse().unwrap(),
        sender: agency("maros-dinsos"),
        recipient: agency("maros-uptd-ppa"),
        service: "psychological_counselling".parse().unwrap(),
        priority: Priority::Emergency,
        categories: vec!["domestic_violence".parse().unwrap()],
        child,
        consent: Consent {
            services: true,
            disclose_to_agencies: true,
            override_justification: None,
        },
        case_reported_at: None,
        identity: None,
        note: None,
        policy_version: "2026-01".parse().unwrap(),
        parent: None,
        sex,
        age_band,
    }))
}

fn indicators(nats: &str, keys: &Path, extra: &[&str]) -> std::process::Output {
    common::command(&[])
        .args(["indicators", "--nats", nats, "--pretended-time"])
        .arg("--public-keys")
        .arg(keys)
        .args(extra)
        .env("REFBUS_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_and_the_csv_hold_the_hand_worked_figures() {
    let nats = NatsServer::start().unwrap();
    let registry = refbus_config::load(repo_root().join("deploy/config/refbus.toml")).unwrap();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let keys = SigningKeys::generate(&registry);
    let keys_dir = tempfile::tempdir().unwrap();
    keys.write_files(keys_dir.path()).unwrap();
    let t0 = Timestamp::parse_rfc3339(T0).unwrap();

    // Three emergency referrals Dinsos -> UPTD PPA at T0 (acknowledge clock: 1 hour):
    // A female 13-17 (a child), accepted at T0+90s: ack 90 s, clock met.
    // B male 25-59, never answered: missed once the hour passed.
    // C of unknown sex and age, never answered: missed too.
    let (a, seq) = write(
        &bus,
        &registry,
        &keys,
        None,
        creation(Sex::Female, AgeBand::From13To17, true),
        "maros-dinsos",
        "ind-a",
        t0,
        0,
    )
    .await;
    write(
        &bus,
        &registry,
        &keys,
        Some(&a),
        CoreCommand::Accept,
        "maros-uptd-ppa",
        "ind-a-accept",
        t0.plus(Duration::from_secs(90)),
        seq,
    )
    .await;
    for (name, sex, band) in [
        ("ind-b", Sex::Male, AgeBand::From25To59),
        ("ind-c", Sex::Unknown, AgeBand::Unknown),
    ] {
        write(
            &bus,
            &registry,
            &keys,
            None,
            creation(sex, band, false),
            "maros-dinsos",
            name,
            t0,
            0,
        )
        .await;
    }
    let at = t0.plus(Duration::from_secs(2 * 3600)).to_rfc3339();
    let url = nats.url();

    // The table, by sex and age band, two hours later.
    let out = indicators(
        &url,
        keys_dir.path(),
        &["--at", &at, "--by", "sex,age_band"],
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |start: &str| {
        table
            .lines()
            .find(|line| line.starts_with(start))
            .unwrap_or_else(|| panic!("no {start:?} row in:\n{table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    // rows, referrals, accepted, rejected, rerouted, completed, open, ack median, ack p90, ...
    assert_eq!(&line("female 13-17")[2..8], ["1", "1", "0", "0", "0", "1"]);
    let ninety = refbus_core::time::format_duration(Duration::from_secs(90));
    let female = table
        .lines()
        .find(|l| l.starts_with("female 13-17"))
        .unwrap();
    assert!(
        female.contains(&ninety),
        "ack median and p90 {ninety}: {female}"
    );
    assert_eq!(&line("male 25-59")[2..8], ["1", "0", "0", "0", "0", "1"]);
    assert_eq!(
        &line("unknown unknown")[2..8],
        ["1", "0", "0", "0", "0", "1"]
    );
    // The clock table: per sex and band, acknowledge_emergency met for A, missed for B and C.
    assert!(
        table.lines().any(|l| l.starts_with("female 13-17")
            && l.contains("acknowledge_emergency")
            && l.contains("100.0%")),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("male 25-59")
            && l.contains("acknowledge_emergency")
            && l.contains("0.0%")),
        "{table}"
    );

    // The CSV on standard output, every dimension: one referral row per referral here.
    let out = indicators(&url, keys_dir.path(), &["--at", &at, "--csv", "-"]);
    assert!(out.status.success());
    let csv = String::from_utf8(out.stdout.clone()).unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert!(lines[0].starts_with(
        "table,month,agency,side,service,priority,category,sex,age_band,clock,referrals"
    ));
    // Each referral on its sender's and its recipient's row: 6 referral rows; its one clock
    // on UPTD PPA's (the recipient answers for acknowledging): 3 clock rows.
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("referrals,")).count(),
        6
    );
    assert_eq!(lines.iter().filter(|l| l.starts_with("clock,")).count(), 3);
    assert!(lines.contains(
        &"referrals,2026-03,maros-uptd-ppa,recipient,psychological_counselling,emergency,domestic_violence,female,13-17,,1,1,0,0,0,1,1,90,90,0,,,,,,,,,"
    ), "{csv}");
    assert!(lines.contains(
        &"clock,2026-03,maros-uptd-ppa,recipient,psychological_counselling,emergency,domestic_violence,male,25-59,acknowledge_emergency,,,,,,,,,,,,,1,0,1,0,0.0,0,0"
    ), "{csv}");

    // Each referral's last record (three), or every record checked against its predecessor
    // (four): the same figures.
    let said = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        said(&out).contains("3 referrals from 3 checked records (the last of each referral) at"),
        "{}",
        said(&out)
    );
    let every = || {
        indicators(
            &url,
            keys_dir.path(),
            &["--at", &at, "--csv", "-", "--every-record"],
        )
    };
    let out = every();
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(String::from_utf8(out.stdout.clone()).unwrap(), csv);
    assert!(
        said(&out).contains("3 referrals from 4 checked records at"),
        "{}",
        said(&out)
    );

    // A message that is no record, stored last on A's subject: the last-record read goes back
    // to A's last record that passes and counts the same; every record checked counts the same
    // figures, says one record failed, and exits 1.
    let client = async_nats::connect(nats.url()).await.unwrap();
    async_nats::jetstream::new(client)
        .publish(
            refbus_bus::subjects::referral(
                &agency("maros-uptd-ppa"),
                &agency("maros-dinsos"),
                &a.id,
            ),
            "not a record".into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let out = indicators(&url, keys_dir.path(), &["--at", &at, "--csv", "-"]);
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(String::from_utf8(out.stdout.clone()).unwrap(), csv);
    let out = every();
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert_eq!(String::from_utf8(out.stdout.clone()).unwrap(), csv);
    assert!(
        said(&out).contains("1 records failed the record check and are not counted"),
        "{}",
        said(&out)
    );

    // To a file, filtered to a period with nothing: the header alone.
    let file = keys_dir.path().join("out.csv");
    let out = indicators(
        &url,
        keys_dir.path(),
        &["--csv", file.to_str().unwrap(), "--from", "2026-04"],
    );
    assert!(out.status.success());
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written.lines().count(), 1, "{written}");
    // Polres had no part: nothing.
    let out = indicators(
        &url,
        keys_dir.path(),
        &["--agency", "polres-maros", "--csv", "-"],
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);

    // Bad flags: usage errors, exit 2, nothing read.
    for bad in [
        vec!["--from", "2026-3"],
        vec!["--agency", "maros-nowhere"],
        vec!["--by", "name"],
    ] {
        let out = indicators(&url, keys_dir.path(), &bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(out.stdout.is_empty(), "{bad:?}");
    }
}
