//! The short fault campaign CI runs: `refbus chaos` for a minute with kill -9 and
//! SIGSTOP/SIGCONT of nats-server nodes, routers, adapters and the notary, then its checker. The command's
//! exit status is its verdict; the results file says what was injected and checked, so that a
//! campaign that injected nothing or did nothing cannot pass.
//!
//! Partitions and clock jumps are left out here: partitions need root and network namespaces,
//! which CI may not grant, and both lengthen recovery beyond a minute's run. The long
//! documented campaign injects every kind (docs/RELIABILITY.md, with its "Findings").

mod common;

#[test]
fn a_short_campaign_of_kills_and_pauses_loses_and_duplicates_nothing() {
    let out = tempfile::tempdir().expect("a temporary directory");
    let nats_server =
        refbus_testkit::nats_server_binary().expect("nats-server (scripts/install-tools.sh)");
    let output = common::command(&[])
        .args([
            "chaos",
            "--duration",
            "60s",
            "--seed",
            "12",
            "--faults",
            "kill,pause",
        ])
        .args(["--quiet", "20s", "--create-every-ms", "1500"])
        .arg("--out")
        .arg(out.path())
        .arg("--nats-server")
        .arg(&nats_server)
        .output()
        .expect("running refbus chaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        // Kept for whoever investigates: the components' logs, the workload's and nemesis's
        // records, the checker's results (a failure under CI's load is not reproduced on
        // demand).
        let kept = out.keep();
        panic!(
            "refbus chaos failed ({}); its directory is kept at {}:\n{stdout}\n{stderr}",
            output.status,
            kept.display()
        );
    }
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("results.json")).expect("results.json"),
    )
    .expect("results.json is JSON");
    let check = &results["check"];
    let faults = results["faults"].as_array().expect("faults");
    assert!(!faults.is_empty(), "no fault was injected:\n{stdout}");
    for fault in faults {
        assert!(
            ["kill", "pause"].contains(&fault["kind"].as_str().unwrap_or_default()),
            "{fault}"
        );
    }
    assert!(
        check["ok"].as_u64().unwrap_or(0) > 0,
        "no operation succeeded:\n{stdout}"
    );
    assert!(
        check["items_recorded"].as_u64().unwrap_or(0) > 0,
        "no clock fell due:\n{stdout}"
    );
    assert_eq!(check["lost"], serde_json::json!([]), "{stdout}");
    assert_eq!(check["duplicated"], serde_json::json!([]), "{stdout}");
    assert_eq!(check["missing"], 0, "{stdout}");
    assert_eq!(check["audit_passed"], true, "{stdout}");
    assert!(stdout.contains("| **PASS** |"), "{stdout}");
}
