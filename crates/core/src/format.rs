//! Record formats: the version every stored record carries, and the one decision whether this
//! build reads it.
//!
//! Every kind of record refbus stores (events and notices on the stream, index entries, the
//! snapshot files, the audit's resume file, the operators' accounts file) carries a format
//! version, written by every writer. A reader knows a list of versions per kind; anything else
//! is refused with [`UnknownFormat`], a sentence naming the record, the version found and the
//! versions known, never guessed at. Records written before versions were recorded carry none:
//! they are format 1, and say so ([`check`] takes `None` as 1).
//!
//! How a future format is introduced (readers first, a window in which both are read, writers
//! last; the stream is never rewritten): docs/ARCHITECTURE.md, "Record formats and versions".

/// The JSON field (or TOML key) that holds a record's format.
pub const FIELD: &str = "format";

/// A kind of stored record, with the formats this build writes and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// An event record on a referral's subject (`{"event":…,"format":1,"hash":…}`).
    Event,
    /// An escalation notice to a third agency.
    Notice,
    /// An integrity notice to the coordinator.
    IntegrityNotice,
    /// An entry of the creation index (`refbus.v1.idx.*`).
    IndexEntry,
    /// The router's signed snapshot of its timers.
    RouterSnapshot,
    /// The dashboard's signed snapshot of its projection.
    DashboardSnapshot,
    /// The audit's `--resume` file.
    AuditResume,
    /// The operators' accounts file.
    OperatorAccounts,
    /// An entry (leaf) of the notary's Merkle log: its first byte.
    LogEntry,
}

impl RecordKind {
    /// What the record is called in messages.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Event => "event record",
            RecordKind::Notice => "escalation notice",
            RecordKind::IntegrityNotice => "integrity notice",
            RecordKind::IndexEntry => "index entry",
            RecordKind::RouterSnapshot => "router timers snapshot",
            RecordKind::DashboardSnapshot => "dashboard projection snapshot",
            RecordKind::AuditResume => "audit resume file",
            RecordKind::OperatorAccounts => "operators' accounts file",
            RecordKind::LogEntry => "log entry",
        }
    }

    /// The format every writer of this build writes.
    pub fn written(self) -> u64 {
        1
    }

    /// The formats this build reads, oldest first. A new format is added here (and to its
    /// decoder) one release before any writer writes it.
    pub fn known(self) -> &'static [u64] {
        &[1]
    }
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A record of a format this build does not read: where it is, what it is, what it says, and
/// what would have been read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {}", self.sentence())]
pub struct UnknownFormat {
    pub kind: RecordKind,
    /// The format the record carries.
    pub found: u64,
    /// The record: `<subject> (stream sequence <n>)`, or a file's path.
    pub at: String,
}

impl UnknownFormat {
    /// The refusal without the record's place (for a reader that names it its own way, as a
    /// file's line).
    pub fn sentence(&self) -> String {
        format!(
            "{} format {} is unknown; this refbus reads format {}; upgrade this reader before \
             the writers (docs/ARCHITECTURE.md, \"Record formats and versions\")",
            self.kind,
            self.found,
            known_list(self.kind.known())
        )
    }
}

/// The format of a record of `kind` that carries `found` (`None`: written before formats were
/// recorded, which is format 1), if this build reads it; `at` names the record for the refusal.
pub fn check(
    kind: RecordKind,
    found: Option<u64>,
    at: impl FnOnce() -> String,
) -> Result<u64, UnknownFormat> {
    let found = found.unwrap_or(1);
    if kind.known().contains(&found) {
        Ok(found)
    } else {
        Err(UnknownFormat {
            kind,
            found,
            at: at(),
        })
    }
}

/// Where a record on the stream is, as refusals name it.
pub fn on_stream(subject: &str, seq: u64) -> String {
    format!("{subject} (stream sequence {seq})")
}

/// The first line of a file whose format is named there (the snapshots): `<title> v<n>\n`.
pub fn first_line(title: &str, version: u64) -> String {
    format!("{title} v{version}\n")
}

/// The format the first line of `bytes` names for `title` (`<title> v<digits>\n`); `None` if
/// the file does not start with such a line (not a file of this kind at all).
pub fn read_first_line(bytes: &[u8], title: &str) -> Option<u64> {
    let rest = bytes.strip_prefix(title.as_bytes())?.strip_prefix(b" v")?;
    let end = rest.iter().position(|&byte| byte == b'\n')?;
    let digits = std::str::from_utf8(&rest[..end]).ok()?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `1`, `1 or 2`, `1, 2 or 3`.
fn known_list(known: &[u64]) -> String {
    match known {
        [] => "none".to_owned(),
        [only] => only.to_string(),
        [rest @ .., last] => format!(
            "{} or {last}",
            rest.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_without_a_format_is_format_1() {
        assert_eq!(check(RecordKind::Event, None, String::new), Ok(1));
        assert_eq!(check(RecordKind::Event, Some(1), String::new), Ok(1));
    }

    #[test]
    fn an_unknown_format_is_refused_with_where_what_and_what_is_known() {
        let refused = check(RecordKind::IndexEntry, Some(2), || {
            on_stream("refbus.v1.idx.a.b", 7)
        })
        .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "refbus.v1.idx.a.b (stream sequence 7): index entry format 2 is unknown; this \
             refbus reads format 1; upgrade this reader before the writers \
             (docs/ARCHITECTURE.md, \"Record formats and versions\")"
        );
        assert_eq!(known_list(&[1, 2, 3]), "1, 2 or 3");
    }

    #[test]
    fn a_first_line_names_its_format() {
        let line = first_line("refbus router timers", 1);
        assert_eq!(line, "refbus router timers v1\n");
        let file = [line.as_bytes(), b"\x00\x01"].concat();
        assert_eq!(read_first_line(&file, "refbus router timers"), Some(1));
        assert_eq!(
            read_first_line(b"refbus router timers v12\n", "refbus router timers"),
            Some(12)
        );
        for other in [
            &b"refbus router timers v\n"[..],
            b"refbus router timers vx\n",
            b"something",
            b"refbus router timers v1",
        ] {
            assert_eq!(read_first_line(other, "refbus router timers"), None);
        }
    }
}
