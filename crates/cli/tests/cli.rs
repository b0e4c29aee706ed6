//! The `refbus` binary as administrators run it: exit codes and what it prints.

mod common;

use std::path::PathBuf;

use common::{refbus, stderr, stdout};

fn deploy(file: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/config")
        .join(file)
        .display()
        .to_string()
}

/// A line of `text` that contains every one of `parts`.
fn line_with<'t>(text: &'t str, parts: &[&str]) -> &'t str {
    text.lines()
        .find(|line| parts.iter().all(|part| line.contains(part)))
        .unwrap_or_else(|| panic!("no line with {parts:?} in:\n{text}"))
}

#[test]
fn config_check_accepts_the_maros_default() {
    for file in ["refbus.toml", "demo.toml"] {
        let path = deploy(file);
        let output = refbus(&["config", "check", &path]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}{}",
            stdout(&output),
            stderr(&output)
        );
        let text = stdout(&output);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.starts_with(&format!(
                "{path}: valid: 8 agencies, 13 services, 1 policy version ("
            )),
            "{text}"
        );
    }
}

#[test]
fn config_check_prints_every_problem_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("refbus.toml");
    let text = std::fs::read_to_string(deploy("refbus.toml"))
        .unwrap()
        .replace(
            "include = [\"agencies.toml\"]",
            "include = [\"agencies.toml\"]\ncolour = \"blue\"",
        )
        .replace("target = \"72h\"", "target = \"72 hours please\"")
        .replace(
            "escalation = \"statutory\"\n\n[[policy.clock]]\nid = \"tpks_pasal_42\"",
            "escalation = \"statutry\"\n\n[[policy.clock]]\nid = \"tpks_pasal_42\"",
        );
    std::fs::write(&main, &text).unwrap();
    std::fs::copy(deploy("agencies.toml"), dir.path().join("agencies.toml")).unwrap();
    std::fs::create_dir(dir.path().join("holidays")).unwrap();
    std::fs::copy(
        deploy("holidays/2026.toml"),
        dir.path().join("holidays/2026.toml"),
    )
    .unwrap();

    let path = main.display().to_string();
    let output = refbus(&["config", "check", &path]);
    assert_eq!(output.status.code(), Some(1));
    let report = stdout(&output);
    let line_of = |needle: &str| text[..text.find(needle).unwrap()].matches('\n').count() + 1;
    let colour = line_with(&report, &["unknown key `colour` in [deployment]"]);
    assert!(
        colour.starts_with(&format!("{path}:{}:1: ", line_of("colour"))),
        "{colour}"
    );
    let target = line_with(&report, &["\"72 hours please\" is not a duration"]);
    assert!(
        target.starts_with(&format!("{path}:{}:10: ", line_of("72 hours please"))),
        "{target}"
    );
    line_with(
        &report,
        &[
            "escalates with \"statutry\"",
            "(did you mean \"statutory\"?)",
        ],
    );
    let last = report.lines().last().unwrap();
    assert_eq!(
        last,
        format!("{path}: invalid: 3 problems found, nothing loaded")
    );
}

#[test]
fn config_check_reports_a_missing_file() {
    let output = refbus(&["config", "check", "/nonexistent/refbus.toml"]);
    assert_eq!(output.status.code(), Some(1));
    line_with(
        &stdout(&output),
        &["/nonexistent/refbus.toml: cannot read the configuration file"],
    );
}

#[test]
fn explain_puts_a_friday_afternoon_routine_deadline_on_monday() {
    let config = deploy("refbus.toml");
    let output = refbus(&[
        "clock",
        "explain",
        "--config",
        &config,
        "--service",
        "social_assistance",
        "--priority",
        "routine",
        "--recipient",
        "maros-dinsos",
        "--sender",
        "puskesos-bontoa",
        "--start",
        "2026-03-06 15:00",
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    line_with(
        &text,
        &[
            "Clock acknowledge_routine",
            "Acknowledge a routine referral",
        ],
    );
    line_with(
        &text,
        &["8h of working time, on the working hours of maros-dinsos"],
    );
    line_with(
        &text,
        &[
            "starts:",
            "Fri 2026-03-06 15:00 WITA (2026-03-06T07:00:00Z)",
        ],
    );
    // 1.5 h left on Friday (until 16:30), none at the weekend, 6.5 h from Monday 07:30.
    line_with(
        &text,
        &[
            "Mon 2026-03-09 10:00 WITA (2026-03-09T02:00:00Z)",
            "warning at 50%",
        ],
    );
    line_with(
        &text,
        &["Mon 2026-03-09 14:00 WITA (2026-03-09T06:00:00Z)", "BREACH"],
    );
    line_with(
        &text,
        &[
            "Mon 2026-03-09 14:00 WITA",
            "level 1: notify maros-dinsos supervisor (Kepala Bidang Rehabilitasi Sosial)",
        ],
    );
    line_with(
        &text,
        &[
            "Mon 2026-03-09 16:00 WITA",
            "level 2: notify maros-bappeda coordinator",
            "maros-dinsos head",
        ],
    );
    line_with(
        &text,
        &["Tue 2026-03-10 13:30 WITA", "level 3: reroute impossible"],
    );
    line_with(
        &text,
        &["Clock reroute_pending", "Carry out a requested reroute"],
    );
    line_with(
        &text,
        &["when the referral reaches reroute_requested (not yet"],
    );
}

#[test]
fn explain_runs_tpks_pasal_41_from_the_victims_report() {
    let config = deploy("refbus.toml");
    let output = refbus(&[
        "clock",
        "explain",
        "--config",
        &config,
        "--service",
        "police_report",
        "--priority",
        "urgent",
        "--recipient",
        "polres-maros",
        "--sender",
        "maros-uptd-ppa",
        "--category",
        "sexual_violence",
        "--start",
        "2026-03-06T15:00:00+08:00",
        "--case-reported-at",
        "2026-03-05 09:00",
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    line_with(&text, &["Clock tpks_pasal_41", "3 x 24 hours"]);
    line_with(&text, &["basis:", "UU 12/2022 (TPKS) Pasal 41"]);
    line_with(&text, &["72h on the wall clock (24x7)"]);
    line_with(&text, &["responsible:", "maros-uptd-ppa, the sender"]);
    line_with(
        &text,
        &[
            "starts:",
            "Thu 2026-03-05 09:00 WITA (2026-03-05T01:00:00Z)",
            "when the person reported",
        ],
    );
    line_with(&text, &["stops on:", "received, accepted; never paused"]);
    line_with(
        &text,
        &["Sun 2026-03-08 09:00 WITA (2026-03-08T01:00:00Z)", "BREACH"],
    );
    line_with(
        &text,
        &[
            "Sun 2026-03-08 09:00 WITA",
            "level 3: notify maros-bappeda coordinator",
            "maros-uptd-ppa head (Kepala UPTD PPA)",
        ],
    );
    line_with(
        &text,
        &["Sun 2026-03-08 12:00 WITA", "level 3, repeat 3 of 3"],
    );
    line_with(&text, &["Clock acknowledge_urgent"]);
    assert!(!text.contains("tpks_pasal_42"), "{text}");
}

#[test]
fn explain_refuses_bad_flags_with_exit_status_2() {
    let config = deploy("refbus.toml");
    let base = [
        "clock",
        "explain",
        "--config",
        config.as_str(),
        "--priority",
        "emergency",
    ];
    let run = |extra: &[&str]| refbus(&[base.as_slice(), extra].concat());

    let output = run(&["--service", "shelter", "--recipient", "polres-marros"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output).trim(),
        "refbus: --recipient: no agency \"polres-marros\" in the configuration (did you mean \"polres-maros\"?)"
    );

    let output = run(&["--service", "shelter", "--recipient", "polres-maros"]);
    assert_eq!(output.status.code(), Some(2));
    line_with(
        &stderr(&output),
        &["polres-maros does not offer shelter; offered by: maros-dinsos, maros-uptd-ppa"],
    );

    let output = run(&[
        "--service",
        "shelter",
        "--recipient",
        "maros-uptd-ppa",
        "--start",
        "next friday",
    ]);
    assert_eq!(output.status.code(), Some(2));
    line_with(
        &stderr(&output),
        &["--start: \"next friday\" is not a time"],
    );

    let output = run(&[
        "--service",
        "police_report",
        "--recipient",
        "polres-maros",
        "--start",
        "2026-03-06 15:00",
        "--case-reported-at",
        "2026-03-07 15:00",
    ]);
    assert_eq!(output.status.code(), Some(2));
    line_with(
        &stderr(&output),
        &["refbus would refuse this referral: case_reported_at"],
    );

    let output = refbus(&[
        "clock",
        "explain",
        "--config",
        &config,
        "--service",
        "shelter",
        "--priority",
        "soon",
        "--recipient",
        "maros-uptd-ppa",
    ]);
    assert_eq!(output.status.code(), Some(2));
    line_with(&stderr(&output), &["invalid value 'soon' for '--priority"]);
}

#[test]
fn config_check_warns_when_the_holidays_do_not_cover_the_working_hours_clocks_started_today() {
    let path = deploy("refbus.toml");
    // 20 December 2026: slrt_resolution (14 working days, escalations 8 working hours more)
    // runs into January 2027, and deploy/config has holidays for 2026 only.
    let late = refbus(&["config", "check", &path, "--today", "2026-12-20"]);
    assert_eq!(
        late.status.code(),
        Some(0),
        "still valid: {}",
        stderr(&late)
    );
    let late_stderr = stderr(&late);
    let warning = line_with(&late_stderr, &["WARNING", "no holiday file for 2027"]);
    assert!(
        warning.contains(
            "working-day clocks will count 1 January 2027 (New Year's Day) and every other holiday of 2027 as a working day"
        ),
        "{warning}"
    );
    assert!(warning.contains("slrt_resolution"), "{warning}");

    let covered = refbus(&["config", "check", &path, "--today", "2026-03-02"]);
    assert_eq!(covered.status.code(), Some(0));
    assert!(
        !stderr(&covered).contains("holiday"),
        "no holiday warning while 2026 covers the clocks: {}",
        stderr(&covered)
    );
}

#[test]
fn config_check_warns_when_writers_have_no_public_signing_key() {
    // The shipped registry lists no signing keys yet: every deployment makes its own.
    let output = refbus(&["config", "check", &deploy("refbus.toml")]);
    assert_eq!(output.status.code(), Some(0));
    let stderr = stderr(&output);
    let warning = line_with(&stderr, &["WARNING", "no public signing key for"]);
    assert!(
        warning.contains("maros-dinsos") && warning.contains("the router"),
        "{warning}"
    );
}

#[test]
fn certs_make_a_ca_that_config_check_validates_warns_about_and_refuses_once_expired() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(deploy("")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    std::fs::create_dir(dir.path().join("holidays")).unwrap();
    std::fs::copy(
        PathBuf::from(deploy("holidays/2026.toml")),
        dir.path().join("holidays/2026.toml"),
    )
    .unwrap();
    let tls = dir.path().join("tls");
    let made = refbus(&[
        "certs",
        "ca",
        "--dir",
        tls.to_str().unwrap(),
        "--days",
        "20",
    ]);
    assert_eq!(made.status.code(), Some(0), "{}", stderr(&made));
    line_with(&stdout(&made), &["[[deployment.client_ca]]"]);
    let again = refbus(&["certs", "ca", "--dir", tls.to_str().unwrap()]);
    assert_ne!(again.status.code(), Some(0), "a CA is never replaced");
    line_with(&stderr(&again), &["a CA exists already"]);

    let main = dir.path().join("refbus.toml");
    let path = main.to_str().unwrap();
    let before = refbus(&["config", "check", path]);
    line_with(
        &stderr(&before),
        &["WARNING", "no client CA", "maros-dinsos"],
    );
    let mut text = std::fs::read_to_string(&main).unwrap();
    text.push_str("\n[[deployment.client_ca]]\nfile = \"tls/ca.pem\"\n");
    std::fs::write(&main, text).unwrap();

    let soon = refbus(&["config", "check", path]);
    assert_eq!(
        soon.status.code(),
        Some(0),
        "{}{}",
        stdout(&soon),
        stderr(&soon)
    );
    assert!(!stderr(&soon).contains("no client CA"), "{}", stderr(&soon));
    line_with(&stderr(&soon), &["WARNING", "client CA", "within 30 days"]);

    let later = (time::OffsetDateTime::now_utc() + time::Duration::days(60)).date();
    let expired = refbus(&["config", "check", path, "--today", &later.to_string()]);
    assert_eq!(expired.status.code(), Some(1), "{}", stdout(&expired));
    line_with(&stdout(&expired), &["invalid", "client CA", "expired"]);

    // A file that is not a CA certificate is refused where it is named.
    std::fs::write(tls.join("ca.pem"), "not a certificate").unwrap();
    let broken = refbus(&["config", "check", path]);
    assert_eq!(broken.status.code(), Some(1));
    line_with(&stdout(&broken), &["refbus.toml:", "client CA"]);
}

#[test]
fn the_adapter_serves_mutual_tls_unless_told_insecure_and_plaintext_only_on_loopback() {
    let base = [
        "adapter",
        "--agency",
        "maros-dinsos",
        "--key",
        "/nonexistent/maros-dinsos.key",
    ];
    let neither = refbus(&base);
    assert_eq!(neither.status.code(), Some(2), "{}", stderr(&neither));
    line_with(&stderr(&neither), &["--tls-cert"]);

    let mut open = base.to_vec();
    open.extend(["--insecure-plaintext", "--listen", "0.0.0.0:50051"]);
    let open = refbus(&open);
    assert_eq!(open.status.code(), Some(2), "{}", stderr(&open));
    line_with(&stderr(&open), &["--insecure-plaintext", "loopback only"]);
}

#[test]
fn the_dashboard_needs_an_accounts_file_and_plaintext_cookies_only_on_loopback() {
    let config = deploy("demo.toml");
    let without = refbus(&["dashboard", "--config", &config]);
    assert_eq!(without.status.code(), Some(2), "{}", stderr(&without));
    assert!(
        stderr(&without).contains("--accounts"),
        "{}",
        stderr(&without)
    );
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("operators.toml");
    std::fs::write(&accounts, "").unwrap();
    std::fs::set_permissions(
        &accounts,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let public = refbus(&[
        "dashboard",
        "--config",
        &config,
        "--accounts",
        accounts.to_str().unwrap(),
        "--insecure-plaintext-cookies",
        "--listen",
        "0.0.0.0:0",
    ]);
    assert_eq!(public.status.code(), Some(2), "{}", stderr(&public));
    assert!(stderr(&public).contains("loopback"), "{}", stderr(&public));
}

#[test]
fn a_router_refuses_more_partitions_than_the_permissions_protect() {
    // Refused before anything starts (no NATS is named): the shipped permissions keep readers
    // from the consumers of 1 to 12 partitions only.
    for count in ["0", "13"] {
        let output = refbus(&["router", "--partitions", count]);
        assert_eq!(output.status.code(), Some(2), "{count}");
        line_with(&stderr(&output), &["--partitions", count, "not in 1..=12"]);
    }
}
