//! The checker, after healing and a quiet period: reads every referral event off the bus and
//! compares it with the workload's log, then runs `refbus audit verify` (the real command).
//!
//! - **lost**: an operation answered `ok` whose request_id is on no event;
//! - **duplicated**: a request_id on more than one event (an unknown outcome retried twice
//!   recorded), or a router item (warning, breach, escalation level and repetition, reroute
//!   request) recorded more than once for a referral;
//! - **wrong answers**: an operation answered with a definite refusal whose request_id is
//!   nevertheless recorded (the API promises a refused call changes nothing);
//! - **stale answers**: an operation refused NOT_FOUND although its referral's creation was
//!   stored (JetStream's time) before the operation started, or an acknowledgement refused
//!   INVALID_ARGUMENT for want of the escalation it acknowledges (the workload acknowledges
//!   only escalations its inbox delivered, so they were stored): a stored write the answering
//!   read did not see. Nothing is lost or duplicated by it (the refused operation
//!   wrote nothing), so it does not fail the verdict, but it is an error reaching an agency
//!   system and is counted (docs/RELIABILITY.md, "Findings");
//! - **late**: a router item stored more than `slack` plus the duration of every fault
//!   overlapping it after it fell due (JetStream's storage time, not the router's claim, so
//!   that a jumped clock cannot hide lateness);
//! - **missing**: an item due and never recorded, as `refbus audit verify` decides it from the
//!   events (its tolerance: slack plus the longest fault plus the quiet period);
//! - `refbus audit verify` (records, hash chains, stream sequences, clocks, the notary's
//!   Merkle log) must exit 0.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use refbus_bus::{Bus, ConnectOptions, EventRecord, StreamSettings, subjects};
use refbus_core::event::Change;
use serde::Serialize;

use crate::nemesis::Fault;
use crate::workload::{Op, Outcome};

/// What the checker needs besides the logs.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub refbus: &'a Path,
    pub config: &'a Path,
    pub keys: &'a Path,
    pub urls: &'a str,
    pub log_dir: &'a Path,
    pub slack: Duration,
    pub quiet: Duration,
    /// When the writers stopped (RFC 3339): the audit's horizon.
    pub now: &'a str,
}

/// A router item recorded later than its allowance.
#[derive(Debug, Clone, Serialize)]
pub struct Late {
    pub referral: String,
    pub key: String,
    pub due_ms: i64,
    pub stored_ms: i64,
    pub lateness_ms: i64,
    pub allowed_ms: i64,
}

/// The checker's findings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Check {
    pub operations: usize,
    pub ok: usize,
    pub failed: usize,
    /// Still unknown when the campaign gave up retrying.
    pub unknown: usize,
    /// Operations that had an unknown outcome at least once and were retried.
    pub retried_after_unknown: usize,
    /// Of the operations still unknown, how many the bus holds (once).
    pub unknown_recorded: usize,
    pub events_read: u64,
    pub referrals: usize,
    /// request_ids of `ok` operations not on the bus.
    pub lost: Vec<String>,
    /// request_ids or `<referral> <item>` recorded more than once.
    pub duplicated: Vec<String>,
    /// request_ids refused with a definite status yet recorded.
    pub wrong_answers: Vec<String>,
    /// Operations refused NOT_FOUND on a referral whose creation was stored before they
    /// started, and acknowledgements refused for want of an escalation their inbox delivered:
    /// definite answers from a read that did not see a stored write.
    pub stale_answers: Vec<String>,
    /// Router items recorded (warnings, breaches, escalations, reroute requests).
    pub items_recorded: usize,
    pub late: Vec<Late>,
    /// Items recorded before they were due by JetStream's clock (a router on a clock jumped
    /// forward): not a loss, reported for reading.
    pub early: usize,
    pub max_lateness_ms: i64,
    /// Items due and never recorded (`refbus audit verify`'s clock check).
    pub missing: usize,
    /// Records `refbus audit verify` refuses (forged, out of their referral's chain...).
    pub refused_records: usize,
    pub audit_passed: bool,
    pub audit_exit: Option<i32>,
    pub audit_tolerance_s: u64,
    /// `refbus audit verify`'s problems by check (and clock finding).
    pub audit_problems: BTreeMap<String, usize>,
    pub audit_first_problems: Vec<String>,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.wrong_answers.is_empty()
            && self.late.is_empty()
            && self.missing == 0
            && self.audit_passed
    }
}

/// Connects to the cluster as the campaign's reader (no credentials: the campaign's nodes
/// run without authentication), creating the R3 stream if it is not there yet.
pub async fn connect(urls: &str) -> anyhow::Result<Bus> {
    let (options, settings) = cluster(urls);
    Ok(Bus::connect(&options, &settings).await?)
}

/// [`connect`] as the routers' start connects: the stream checked and the router's signed
/// statement of it stored with the key in `router_key_file`, so that adapters started beside
/// the routers do not race them to it (an adapter refuses to start without one).
pub async fn connect_as_router(urls: &str, router_key_file: &Path) -> anyhow::Result<Bus> {
    let key = refbus_seal::signing::read_signing_key(
        router_key_file,
        refbus_core::signature::Signer::Router,
    )?;
    let (options, settings) = cluster(urls);
    Ok(Bus::connect_attesting(&options, &settings, &key).await?)
}

/// The campaign's connection (no credentials: its nodes run without authentication) and its
/// R3 stream.
fn cluster(urls: &str) -> (ConnectOptions, StreamSettings) {
    let options = ConnectOptions::new(urls.split(',').map(str::trim))
        .with_insecure_plaintext(true)
        .with_name("refbus-chaos");
    let settings = StreamSettings {
        replicas: 3,
        ..StreamSettings::default()
    };
    (options, settings)
}

/// Checks the campaign.
pub async fn check(inputs: &Inputs<'_>, ops: &[Op], faults: &[Fault]) -> anyhow::Result<Check> {
    let mut check = Check {
        operations: ops.len(),
        ok: ops.iter().filter(|op| op.outcome == Outcome::Ok).count(),
        failed: ops
            .iter()
            .filter(|op| op.outcome == Outcome::Failed)
            .count(),
        unknown: ops
            .iter()
            .filter(|op| op.outcome == Outcome::Unknown)
            .count(),
        retried_after_unknown: ops.iter().filter(|op| op.was_unknown).count(),
        ..Check::default()
    };

    // The audit first: the records it refuses are not part of any referral.
    let refused = audit(inputs, faults, &mut check).await?;
    check.refused_records = refused.len();

    // Every referral event on the bus: request_ids and router items counted.
    let bus = connect(inputs.urls)
        .await
        .context("connecting the checker")?;
    let mut requests: HashMap<String, usize> = HashMap::new();
    // Request ids with at least one event the audit believes.
    let mut believed = HashSet::new();
    let mut items: HashMap<(String, String), Vec<(i64, i64)>> = HashMap::new();
    let mut referrals = std::collections::HashSet::new();
    // When each referral's creation was stored (JetStream's clock).
    let mut created: HashMap<String, i64> = HashMap::new();
    let mut messages = bus
        .messages(vec![subjects::ALL_REFERRALS.to_owned()], 1)
        .await
        .context("reading the stream")?;
    while let Some(message) = messages.next().await {
        let message = message.context("reading the stream")?;
        check.events_read += 1;
        let Ok(record) = EventRecord::decode(&message.payload) else {
            continue;
        };
        let event = record.event;
        referrals.insert(event.referral_id.to_string());
        if event.seq == 1 {
            created
                .entry(event.referral_id.to_string())
                .or_insert(message.stored_at.as_millis());
        }
        if let Some(request) = &event.request_id {
            *requests.entry(request.to_string()).or_default() += 1;
            if !refused.contains(&message.seq) {
                believed.insert(request.to_string());
            }
        }
        if let Some((key, due)) = item(&event.change) {
            items
                .entry((event.referral_id.to_string(), key))
                .or_default()
                .push((due.as_millis(), message.stored_at.as_millis()));
        }
    }
    check.referrals = referrals.len();

    let mut duplicated = compare_ops(ops, &requests, &believed, &mut check);
    check.stale_answers = stale_answers(ops, &created);

    for ((referral, key), records) in &items {
        check.items_recorded += 1;
        if records.len() > 1 {
            duplicated.push(format!("{referral} {key} x{}", records.len()));
        }
        let (due, stored) = records[0];
        let lateness = stored - due;
        if lateness < -1000 {
            check.early += 1;
        }
        check.max_lateness_ms = check.max_lateness_ms.max(lateness);
        let allowed = allowance(due, stored, inputs.slack, faults);
        if lateness > allowed {
            check.late.push(Late {
                referral: referral.clone(),
                key: key.clone(),
                due_ms: due,
                stored_ms: stored,
                lateness_ms: lateness,
                allowed_ms: allowed,
            });
        }
    }
    duplicated.sort();
    check.duplicated = duplicated;

    Ok(check)
}

/// Compares the operations with the request_ids found on the bus (how many events carry
/// each, and which have an event the audit believes): fills `lost` (an `ok` operation with no
/// event, or only events on records the record check refuses: readers never see them),
/// `wrong_answers` and `unknown_recorded`; returns the request_ids on more than one event.
fn compare_ops(
    ops: &[Op],
    requests: &HashMap<String, usize>,
    believed: &HashSet<String>,
    check: &mut Check,
) -> Vec<String> {
    for op in ops {
        let count = requests.get(&op.request_id).copied().unwrap_or(0);
        match op.outcome {
            Outcome::Ok if count == 0 => check.lost.push(op.request_id.clone()),
            Outcome::Ok if !believed.contains(&op.request_id) => check.lost.push(format!(
                "{} ({} {}: stored only on records the audit refuses)",
                op.request_id, op.kind, op.referral_id
            )),
            Outcome::Failed if count > 0 => check
                .wrong_answers
                .push(format!("{} ({}: {})", op.request_id, op.kind, op.detail)),
            Outcome::Unknown if count > 0 => check.unknown_recorded += 1,
            _ => {}
        }
    }
    requests
        .iter()
        .filter(|(_, count)| **count > 1)
        .map(|(request, count)| format!("{request} x{count}"))
        .collect()
}

/// The operations refused NOT_FOUND although their referral's creation was stored before
/// they started (`created`: referral -> storage time in ms).
fn stale_answers(ops: &[Op], created: &HashMap<String, i64>) -> Vec<String> {
    let unseen_escalation = ops
        .iter()
        .filter(|op| {
            op.outcome == Outcome::Failed
                && op.kind == "acknowledge"
                && op.detail.starts_with("InvalidArgument")
                && op.detail.contains("has no escalation")
        })
        .map(|op| {
            format!(
                "{} (acknowledge by {}: {})",
                op.request_id, op.agency, op.detail
            )
        });
    ops.iter()
        .filter(|op| op.outcome == Outcome::Failed && op.detail.starts_with("NotFound"))
        .filter_map(|op| {
            let at = *created.get(&op.referral_id)?;
            let started = i64::try_from(op.started_ms).unwrap_or(i64::MAX);
            (at < started).then(|| {
                format!(
                    "{} ({} by {}, {}: created {} ms before it started)",
                    op.request_id,
                    op.kind,
                    op.agency,
                    op.referral_id,
                    started - at
                )
            })
        })
        .chain(unseen_escalation)
        .collect()
}

/// The router item an event records, with when it was due: the key the audit uses too
/// (`<clock>.warning.<permille>`, `<clock>.breach`, `<clock>.level.<level>.<repetition>`,
/// `reroute`).
fn item(change: &Change) -> Option<(String, refbus_core::Timestamp)> {
    match change {
        Change::ClockWarning {
            clock,
            permille,
            due_at,
            ..
        } => Some((format!("{clock}.warning.{permille}"), *due_at)),
        Change::ClockBreached { clock, deadline } => Some((format!("{clock}.breach"), *deadline)),
        Change::Escalated {
            clock,
            level,
            repetition,
            due_at,
            ..
        } => Some((format!("{clock}.level.{level}.{repetition}"), *due_at)),
        Change::RerouteRequested { due_at, .. } => Some(("reroute".to_owned(), *due_at)),
        _ => None,
    }
}

/// How late an item due at `due` and stored at `stored` may be: `slack`, plus the duration
/// of every fault that overlaps the time from `slack` before it fell due to when it was stored
/// (a fault just before the due time delays it too: a router restarting, a raft election).
fn allowance(due: i64, stored: i64, slack: Duration, faults: &[Fault]) -> i64 {
    let slack = i64::try_from(slack.as_millis()).unwrap_or(i64::MAX);
    let from = due - slack;
    let overlapping: i64 = faults
        .iter()
        .filter(|fault| {
            let (start, end) = (fault.start_ms as i64, fault.end_ms as i64);
            start <= stored && end >= from
        })
        .map(|fault| fault.end_ms.saturating_sub(fault.start_ms) as i64)
        .sum();
    slack + overlapping
}

/// Runs `refbus audit verify --json` over the stream and the notary's log; returns the stream
/// sequences of the records it refuses.
async fn audit(
    inputs: &Inputs<'_>,
    faults: &[Fault],
    check: &mut Check,
) -> anyhow::Result<HashSet<u64>> {
    let longest = faults.iter().map(Fault::duration).max().unwrap_or_default();
    let tolerance = inputs.slack + longest + inputs.quiet;
    check.audit_tolerance_s = tolerance.as_secs();
    let args: Vec<String> = vec![
        "audit".into(),
        "verify".into(),
        "--json".into(),
        "--config".into(),
        inputs.config.display().to_string(),
        "--public-keys".into(),
        inputs.keys.display().to_string(),
        "--nats".into(),
        inputs.urls.to_owned(),
        "--insecure-nats-plaintext".into(),
        "--stream-replicas".into(),
        "3".into(),
        "--now".into(),
        inputs.now.to_owned(),
        "--tolerance".into(),
        tolerance.as_secs().to_string(),
        "--log".into(),
        inputs.log_dir.display().to_string(),
        "--notary-key".into(),
        inputs.keys.join("notary.vkey").display().to_string(),
    ];
    let output = tokio::process::Command::new(inputs.refbus)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("running refbus audit verify")?;
    check.audit_exit = output.status.code();
    check.audit_passed = output.status.success();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    let problems = report["problems"].as_array().cloned().unwrap_or_default();
    let mut refused = HashSet::new();
    for problem in &problems {
        if problem["check"] == "record"
            && let Some(seq) = problem["seq"].as_u64()
        {
            refused.insert(seq);
        }
        let mut name = problem["check"].as_str().unwrap_or("unknown").to_owned();
        if let Some(finding) = problem["finding"]["finding"].as_str() {
            if finding == "missing" {
                check.missing += 1;
            }
            name = format!("{name}.{finding}");
        }
        *check.audit_problems.entry(name).or_default() += 1;
        if check.audit_first_problems.len() < 20 {
            check.audit_first_problems.push(problem.to_string());
        }
    }
    if !check.audit_passed && problems.is_empty() {
        check.audit_first_problems.push(format!(
            "refbus audit verify exited {:?}: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" / ")
        ));
    }
    Ok(refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FaultKind;

    fn fault(start_ms: u64, end_ms: u64) -> Fault {
        Fault {
            kind: FaultKind::Kill,
            target: "router-r1".to_owned(),
            detail: String::new(),
            start_ms,
            end_ms,
        }
    }

    fn op(request_id: &str, outcome: Outcome) -> Op {
        Op {
            kind: "note",
            agency: "maros-dinsos".to_owned(),
            request_id: request_id.to_owned(),
            referral_id: String::new(),
            outcome,
            detail: String::new(),
            attempts: 1,
            was_unknown: false,
            started_ms: 0,
            ended_ms: 0,
        }
    }

    #[test]
    fn lost_duplicated_and_wrong_answers_are_told_apart() {
        let ops = [
            op("kept", Outcome::Ok),
            op("lost", Outcome::Ok),
            op("refused-yet-recorded", Outcome::Failed),
            op("refused", Outcome::Failed),
            op("unknown-recorded", Outcome::Unknown),
            op("unknown-twice", Outcome::Unknown),
        ];
        let requests: HashMap<String, usize> = [
            ("kept", 1),
            ("refused-yet-recorded", 1),
            ("unknown-recorded", 1),
            ("unknown-twice", 2),
            ("forked", 1),
        ]
        .into_iter()
        .map(|(key, count)| (key.to_owned(), count))
        .collect();
        let believed: HashSet<String> = requests
            .keys()
            .filter(|key| *key != "forked")
            .cloned()
            .collect();
        let mut check = Check::default();
        let ops = [&ops[..], &[op("forked", Outcome::Ok)]].concat();
        let duplicated = compare_ops(&ops, &requests, &believed, &mut check);
        assert_eq!(check.lost.len(), 2);
        assert_eq!(check.lost[0], "lost");
        assert!(
            check.lost[1].starts_with("forked (note"),
            "{:?}",
            check.lost
        );
        assert_eq!(check.wrong_answers.len(), 1);
        assert!(check.wrong_answers[0].starts_with("refused-yet-recorded"));
        assert_eq!(check.unknown_recorded, 2);
        assert_eq!(duplicated, ["unknown-twice x2"]);
        assert!(!check.passed());
    }

    #[test]
    fn a_not_found_on_a_referral_created_before_the_call_is_a_stale_answer() {
        let mut stale = op("note-after", Outcome::Failed);
        stale.referral_id = "R1".to_owned();
        stale.detail = "NotFound: referral R1 does not exist".to_owned();
        stale.started_ms = 5_000;
        // The same answer before the creation was stored is right, and so is any other
        // refusal.
        let mut early = stale.clone();
        early.request_id = "note-before".to_owned();
        early.started_ms = 1_000;
        let mut other = stale.clone();
        other.request_id = "note-refused".to_owned();
        other.detail = "FailedPrecondition: closed".to_owned();
        let mut unseen = op("ack", Outcome::Failed);
        unseen.kind = "acknowledge";
        unseen.detail =
            "InvalidArgument: level: clock c of this referral has no escalation at level 1"
                .to_owned();
        let created: HashMap<String, i64> = [("R1".to_owned(), 2_000)].into_iter().collect();
        let found = stale_answers(&[stale, early, other, unseen], &created);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("note-after (note"), "{found:?}");
        assert!(found[1].starts_with("ack (acknowledge"), "{found:?}");
    }

    #[test]
    fn an_item_is_allowed_the_slack_plus_each_fault_overlapping_it() {
        let slack = Duration::from_secs(5);
        // No fault: the slack alone.
        assert_eq!(allowance(100_000, 120_000, slack, &[]), 5_000);
        // A 10 s fault while the item was due, and one long before it (not counted).
        let faults = [fault(98_000, 108_000), fault(10_000, 20_000)];
        assert_eq!(allowance(100_000, 120_000, slack, &faults), 15_000);
        // A fault ending within the slack before the due time counts (a router rebuilding).
        assert_eq!(
            allowance(100_000, 101_000, slack, &[fault(90_000, 96_000)]),
            11_000
        );
    }
}
