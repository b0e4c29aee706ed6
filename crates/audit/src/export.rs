//! Exports: `jsonl` (the stored messages exactly as stored, so the file verifies offline with
//! the same checks), `csv` (one row per referral) and `fhir` (an HL7 FHIR R4 Bundle of Task
//! resources). Filters select referrals: an agency (sender or recipient), a creation period,
//! a service, a current status.
//!
//! Never identity: JSONL carries the stored bytes, where identity and notes are sealed for
//! their agencies; CSV and FHIR are made from [`Summary`] alone (codes, agencies, times).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;

use futures::StreamExt;
use refbus_bus::{Bus, Replayed, StoredMessage, StreamState, Verifier, subjects};
use refbus_core::referral::Priority;
use refbus_core::{AgencyId, Referral, Status, Timestamp};
use serde::{Deserialize, Serialize};

use crate::replay::Summary;
use crate::verify::VerifyError;

/// Which referrals an export holds. Every filter given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filters {
    /// Sender or recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agency: Option<AgencyId>,
    /// Created at or after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Timestamp>,
    /// Created before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The current status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        *self == Filters::default()
    }

    pub fn matches(&self, state: &Referral) -> bool {
        self.agency
            .as_ref()
            .is_none_or(|agency| state.sender() == agency || state.recipient() == agency)
            && self.from.is_none_or(|from| state.created_at >= from)
            && self.to.is_none_or(|to| state.created_at < to)
            && self
                .service
                .as_ref()
                .is_none_or(|service| state.creation.service.as_str() == service)
            && self.status.is_none_or(|status| state.status == status)
    }
}

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Csv,
    Fhir,
}

impl Format {
    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "jsonl" => Some(Format::Jsonl),
            "csv" => Some(Format::Csv),
            "fhir" => Some(Format::Fhir),
            _ => None,
        }
    }
}

/// JetStream's figures, as a JSONL export records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamFigures {
    pub first_seq: u64,
    pub last_seq: u64,
    pub messages: u64,
    pub deleted: u64,
}

impl From<StreamState> for StreamFigures {
    fn from(state: StreamState) -> StreamFigures {
        StreamFigures {
            first_seq: state.first_seq,
            last_seq: state.last_seq,
            messages: state.messages,
            deleted: state.deleted,
        }
    }
}

impl From<StreamFigures> for StreamState {
    fn from(figures: StreamFigures) -> StreamState {
        StreamState {
            first_seq: figures.first_seq,
            last_seq: figures.last_seq,
            messages: figures.messages,
            deleted: figures.deleted,
        }
    }
}

/// The first line of a JSONL export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The format's version.
    pub refbus_export: u32,
    pub filters: Filters,
    /// The stream's figures when exported (an export of the whole stream only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamFigures>,
}

impl Header {
    /// Whether the export holds every message of the stream up to its last sequence.
    pub fn whole_stream(&self) -> bool {
        self.filters.is_empty() && self.stream.is_some()
    }
}

/// One stored message as a JSONL line. The payload is the stored bytes: as a JSON string when
/// they are UTF-8 (every refbus record is), in base64 otherwise (a corrupt message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Line {
    seq: u64,
    subject: String,
    stored_at: Timestamp,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
}

const FORMAT_VERSION: u32 = 1;

fn line_of(message: &StoredMessage) -> Line {
    let (payload, payload_base64) = match std::str::from_utf8(&message.payload) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (None, Some(data_encoding::BASE64.encode(&message.payload))),
    };
    Line {
        seq: message.seq,
        subject: message.subject.clone(),
        stored_at: message.stored_at,
        headers: message.headers.clone(),
        payload,
        payload_base64,
    }
}

/// A JSONL line back into the stored message it records.
pub fn parse_line(text: &str) -> Result<StoredMessage, String> {
    let line: Line = serde_json::from_str(text).map_err(|err| err.to_string())?;
    let payload = match (line.payload, line.payload_base64) {
        (Some(text), None) => bytes::Bytes::from(text.into_bytes()),
        (None, Some(encoded)) => data_encoding::BASE64
            .decode(encoded.as_bytes())
            .map_err(|err| format!("payload_base64: {err}"))?
            .into(),
        _ => return Err("exactly one of payload and payload_base64 is expected".to_owned()),
    };
    Ok(StoredMessage {
        seq: line.seq,
        subject: line.subject,
        stored_at: line.stored_at,
        headers: line.headers,
        payload,
    })
}

/// Reads the header line of a JSONL export.
pub(crate) fn read_header(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    path: &Path,
) -> Result<Header, VerifyError> {
    let error = |message: String| VerifyError::Export(format!("{}:1: {message}", path.display()));
    let first = lines
        .next()
        .ok_or_else(|| error("empty file, not a refbus export".to_owned()))?
        .map_err(|err| error(err.to_string()))?;
    let header: Header = serde_json::from_str(&first)
        .map_err(|err| error(format!("not the header of a refbus export: {err}")))?;
    if header.refbus_export != FORMAT_VERSION {
        return Err(error(format!(
            "export format {}, this refbus reads {FORMAT_VERSION}",
            header.refbus_export
        )));
    }
    Ok(header)
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading the stream: {0}")]
    Bus(#[from] refbus_bus::ReadError),
    #[error("writing the export: {0}")]
    Write(#[from] std::io::Error),
}

/// Every referral's last verified state, in order of creation, by subject.
async fn final_states(
    bus: &Bus,
    verifier: &Verifier,
) -> Result<Vec<(String, Referral)>, ExportError> {
    let mut order: Vec<String> = Vec::new();
    let mut states: HashMap<String, Referral> = HashMap::new();
    let mut replayed = bus
        .replay(verifier, vec![subjects::ALL_REFERRALS.to_owned()])
        .await?;
    while let Some(item) = replayed.next().await {
        if let Replayed::Record(stored) = item? {
            if !states.contains_key(&stored.subject) {
                order.push(stored.subject.clone());
            }
            states.insert(stored.subject, stored.record.state.into_snapshot());
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|subject| states.remove(&subject).map(|state| (subject, state)))
        .collect())
}

/// Writes the export of the referrals `filters` selects to `out`; how many referrals (JSONL:
/// and messages) it holds.
pub async fn export(
    bus: &Bus,
    verifier: &Verifier,
    filters: &Filters,
    format: Format,
    now: Timestamp,
    out: &mut (impl Write + Send),
) -> Result<Exported, ExportError> {
    match format {
        Format::Jsonl => export_jsonl(bus, verifier, filters, out).await,
        Format::Csv | Format::Fhir => {
            let selected: Vec<Summary> = final_states(bus, verifier)
                .await?
                .iter()
                .filter(|(_, state)| filters.matches(state))
                .map(|(_, state)| Summary::of(state))
                .collect();
            if format == Format::Csv {
                write_csv(&selected, out)?;
            } else {
                serde_json::to_writer_pretty(&mut *out, &fhir_bundle(&selected, now))
                    .map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
            }
            Ok(Exported {
                referrals: selected.len(),
                messages: 0,
            })
        }
    }
}

/// What an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    pub referrals: usize,
    pub messages: u64,
}

async fn export_jsonl(
    bus: &Bus,
    verifier: &Verifier,
    filters: &Filters,
    out: &mut (impl Write + Send),
) -> Result<Exported, ExportError> {
    let whole = filters.is_empty();
    // The whole stream: its figures first, then every message up to its last sequence, on
    // every subject (notices and index entries too), so the offline check sees any gap.
    let (stream, selected, read_filters) = if whole {
        let state = bus.stream_state().await?;
        (Some(state), None, Vec::new())
    } else {
        let selected: HashSet<String> = final_states(bus, verifier)
            .await?
            .into_iter()
            .filter(|(_, state)| filters.matches(state))
            .map(|(subject, _)| subject)
            .collect();
        (
            None,
            Some(selected),
            vec![subjects::ALL_REFERRALS.to_owned()],
        )
    };
    let header = Header {
        refbus_export: FORMAT_VERSION,
        filters: filters.clone(),
        stream: stream.map(Into::into),
    };
    serde_json::to_writer(&mut *out, &header).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    let last = stream.map_or(u64::MAX, |state| state.last_seq);
    let mut messages = bus.messages(read_filters, 1).await?;
    let mut written = 0;
    let mut referrals = HashSet::new();
    while let Some(message) = messages.next().await {
        let message = message?;
        if message.seq > last {
            break;
        }
        if let Some(selected) = &selected
            && !selected.contains(&message.subject)
        {
            continue;
        }
        if message.subject.starts_with("refbus.v1.ref.") {
            referrals.insert(message.subject.clone());
        }
        serde_json::to_writer(&mut *out, &line_of(&message)).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        written += 1;
    }
    Ok(Exported {
        referrals: referrals.len(),
        messages: written,
    })
}

// === CSV ===

const CSV_COLUMNS: [&str; 17] = [
    "referral_id",
    "case_id",
    "sender",
    "recipient",
    "service",
    "priority",
    "status",
    "reason",
    "outcome",
    "created_at",
    "updated_at",
    "events",
    "parent",
    "children",
    "warnings",
    "breaches",
    "escalations",
];

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

fn write_csv(rows: &[Summary], out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "{}", CSV_COLUMNS.join(","))?;
    for row in rows {
        let fields = [
            row.referral.to_string(),
            row.case.to_string(),
            row.sender.to_string(),
            row.recipient.to_string(),
            row.service.clone(),
            row.priority.as_str().to_owned(),
            row.status.as_str().to_owned(),
            row.reason.clone().unwrap_or_default(),
            row.outcome.clone().unwrap_or_default(),
            row.created_at.to_rfc3339(),
            row.updated_at.to_rfc3339(),
            row.events.to_string(),
            row.parent.map(|id| id.to_string()).unwrap_or_default(),
            row.children
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            row.warnings.to_string(),
            row.breaches.to_string(),
            row.escalations.to_string(),
        ];
        let line: Vec<String> = fields.iter().map(|field| csv_field(field)).collect();
        writeln!(out, "{}", line.join(","))?;
    }
    Ok(())
}

// === FHIR ===

/// Where refbus's own codes live in FHIR codings.
pub const FHIR_SYSTEM: &str = "https://refbus.id/fhir/CodeSystem";

/// The FHIR R4 `Task.status` of a referral status (DESIGN.md section 2: the life cycle follows
/// FHIR Task). refbus's finer statuses map to the FHIR status that holds them, and keep their
/// own code in `businessStatus`: `cancel_requested` is still the work it was (the status it
/// left, `in-progress` if unknown), `rerouted` ended the task at this recipient (`cancelled`).
pub fn fhir_status(status: Status, resume_to: Option<Status>) -> &'static str {
    match status {
        Status::Requested => "requested",
        Status::Received => "received",
        Status::Accepted => "accepted",
        Status::InProgress => "in-progress",
        Status::OnHold => "on-hold",
        Status::CancelRequested => match resume_to {
            Some(Status::CancelRequested) | None => "in-progress",
            Some(previous) => fhir_status(previous, None),
        },
        Status::Completed => "completed",
        Status::Rejected => "rejected",
        Status::Failed => "failed",
        Status::Cancelled | Status::Rerouted => "cancelled",
        Status::EnteredInError => "entered-in-error",
    }
}

/// FHIR's request priority: emergency is `stat`.
pub fn fhir_priority(priority: Priority) -> &'static str {
    match priority {
        Priority::Emergency => "stat",
        Priority::Urgent => "urgent",
        Priority::Routine => "routine",
    }
}

fn coding(system: &str, code: &str) -> serde_json::Value {
    serde_json::json!({
        "coding": [{ "system": format!("{FHIR_SYSTEM}/{system}"), "code": code }],
        "text": code,
    })
}

/// A referral id as a UUID (its 16 bytes), for the Bundle entry's `fullUrl`.
fn uuid_of(id: &refbus_core::ReferralId) -> String {
    let hex = data_encoding::HEXLOWER.encode(id.as_bytes());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// One referral as an R4 Task.
pub fn fhir_task(summary: &Summary) -> serde_json::Value {
    let mut task = serde_json::json!({
        "resourceType": "Task",
        "id": summary.referral.to_string(),
        "identifier": [{ "system": "urn:refbus:referral", "value": summary.referral.to_string() }],
        "groupIdentifier": { "system": "urn:refbus:case", "value": summary.case.to_string() },
        // `resume_to` is not in the summary: a cancel request maps to in-progress.
        "status": fhir_status(summary.status, None),
        "businessStatus": coding("referral-status", summary.status.as_str()),
        "intent": "order",
        "priority": fhir_priority(summary.priority),
        "code": coding("service", &summary.service),
        "authoredOn": summary.created_at.to_rfc3339(),
        "lastModified": summary.updated_at.to_rfc3339(),
        "requester": { "reference": format!("Organization/{}", summary.sender) },
        "owner": { "reference": format!("Organization/{}", summary.recipient) },
    });
    if let Some(object) = task.as_object_mut() {
        if let Some(parent) = summary.parent {
            object.insert(
                "partOf".to_owned(),
                serde_json::json!([{ "reference": format!("Task/{parent}") }]),
            );
        }
        if let Some(reason) = &summary.reason {
            object.insert("statusReason".to_owned(), coding("reason", reason));
        }
        if let Some(outcome) = &summary.outcome {
            object.insert(
                "output".to_owned(),
                serde_json::json!([{
                    "type": { "text": "outcome" },
                    "valueCodeableConcept": coding("outcome", outcome),
                }]),
            );
        }
    }
    task
}

/// An R4 Bundle (type `collection`) of one Task per referral.
pub fn fhir_bundle(rows: &[Summary], now: Timestamp) -> serde_json::Value {
    let entries: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "fullUrl": format!("urn:uuid:{}", uuid_of(&row.referral)),
                "resource": fhir_task(row),
            })
        })
        .collect();
    serde_json::json!({
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": now.to_rfc3339(),
        "entry": entries,
    })
}
