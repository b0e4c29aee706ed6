//! What the board says and how it tells time: Bahasa Indonesia by default, English on request,
//! every instant in the viewer's agency's time zone with WIB, WITA or WIT beside it.

use chrono::{Datelike, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use refbus_core::Timestamp;
use refbus_core::referral::Priority;

use crate::projection::RowState;

/// The board's languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Id,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::Id => "id",
            Lang::En => "en",
        }
    }

    pub fn parse(text: &str) -> Option<Lang> {
        match text {
            "id" => Some(Lang::Id),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    pub fn texts(self) -> &'static Texts {
        match self {
            Lang::Id => &ID,
            Lang::En => &EN,
        }
    }
}

/// Every fixed text of the pages, in one language.
#[derive(Debug)]
pub struct Texts {
    pub board: &'static str,
    pub load: &'static str,
    pub indicators: &'static str,
    pub timeline: &'static str,
    pub live_connecting: &'static str,
    pub live_ok: &'static str,
    pub live_lost: &'static str,
    pub signed_in_as: &'static str,
    pub sign_out: &'static str,
    pub times_in: &'static str,
    pub time_to_breach: &'static str,
    pub state: &'static str,
    pub service: &'static str,
    pub priority: &'static str,
    pub categories: &'static str,
    pub sender: &'static str,
    pub recipient: &'static str,
    pub clock: &'static str,
    pub deadline: &'static str,
    pub level: &'static str,
    pub notified: &'static str,
    pub status: &'static str,
    pub agency: &'static str,
    pub any: &'static str,
    pub apply: &'static str,
    pub clear: &'static str,
    pub empty: &'static str,
    /// The link to the board's next page.
    pub more: &'static str,
    pub paused: &'static str,
    pub alerts: &'static str,
    pub alert_record: &'static str,
    /// Above everything, while the events stream is not as configured (it can lose events).
    pub stream_altered: &'static str,
    pub open: &'static str,
    pub awaiting_acceptance: &'static str,
    pub at_risk: &'static str,
    pub breached_today: &'static str,
    pub breached_this_week: &'static str,
    pub reroutes_pending: &'static str,
    pub at: &'static str,
    pub event: &'static str,
    pub author: &'static str,
    pub details: &'static str,
    pub router: &'static str,
    pub forbidden: &'static str,
    pub not_found: &'static str,
    pub bad_request: &'static str,
    pub acknowledge: &'static str,
    pub refused: &'static str,
}

pub static ID: Texts = Texts {
    board: "Papan eskalasi",
    load: "Beban per instansi",
    indicators: "Indikator perencanaan",
    timeline: "Linimasa rujukan",
    live_connecting: "Menghubungkan…",
    live_ok: "Langsung",
    live_lost: "Koneksi terputus, menyambung ulang…",
    signed_in_as: "Masuk sebagai",
    sign_out: "Keluar",
    times_in: "Waktu dalam",
    time_to_breach: "Sisa waktu",
    state: "Keadaan",
    service: "Layanan",
    priority: "Prioritas",
    categories: "Kategori",
    sender: "Pengirim",
    recipient: "Penerima",
    clock: "Jam layanan",
    deadline: "Tenggat",
    level: "Level",
    notified: "Diberi tahu",
    status: "Status",
    agency: "Instansi",
    any: "Semua",
    apply: "Terapkan",
    clear: "Hapus filter",
    empty: "Tidak ada rujukan terbuka dengan jam berjalan.",
    more: "Berikutnya",
    paused: "Dijeda",
    alerts: "Peringatan integritas",
    stream_altered: "Aliran peristiwa tidak lagi diatur seperti yang dibutuhkan refbus: peristiwa rujukan bisa hilang. Beri tahu administrator.",
    alert_record: "Catatan ditolak pada urutan",
    open: "Terbuka",
    awaiting_acceptance: "Menunggu diterima",
    at_risk: "Berisiko",
    breached_today: "Terlambat hari ini",
    breached_this_week: "Terlambat minggu ini",
    reroutes_pending: "Pengalihan tertunda",
    at: "Waktu",
    event: "Peristiwa",
    author: "Oleh",
    details: "Rincian",
    router: "router (jam otomatis)",
    forbidden: "Anda tidak berwenang melihat ini.",
    not_found: "Tidak ditemukan.",
    bad_request: "Permintaan tidak sah",
    acknowledge: "Tanggapi eskalasi",
    refused: "Adapter instansi menolak",
};

pub static EN: Texts = Texts {
    board: "Escalation board",
    load: "Agency load",
    indicators: "Planning indicators",
    timeline: "Referral timeline",
    live_connecting: "Connecting…",
    live_ok: "Live",
    live_lost: "Connection lost, reconnecting…",
    signed_in_as: "Signed in as",
    sign_out: "Sign out",
    times_in: "Times in",
    time_to_breach: "Time to breach",
    state: "State",
    service: "Service",
    priority: "Priority",
    categories: "Categories",
    sender: "Sender",
    recipient: "Recipient",
    clock: "Clock",
    deadline: "Deadline",
    level: "Level",
    notified: "Notified",
    status: "Status",
    agency: "Agency",
    any: "Any",
    apply: "Apply",
    clear: "Clear filters",
    empty: "No open referral with a running clock.",
    more: "More",
    paused: "Paused",
    alerts: "Integrity alerts",
    stream_altered: "The events stream is no longer configured as refbus needs: referral events can be lost. Tell the administrator.",
    alert_record: "Record refused at stream sequence",
    open: "Open",
    awaiting_acceptance: "Awaiting acceptance",
    at_risk: "At risk",
    breached_today: "Breached today",
    breached_this_week: "Breached this week",
    reroutes_pending: "Reroutes pending",
    at: "Time",
    event: "Event",
    author: "By",
    details: "Details",
    router: "router (automatic clock)",
    forbidden: "You may not see this.",
    not_found: "Not found.",
    bad_request: "Bad request",
    acknowledge: "Acknowledge",
    refused: "The agency's adapter refused",
};

impl Lang {
    pub fn state(self, state: RowState) -> &'static str {
        match (self, state) {
            (Lang::Id, RowState::OnTrack) => "Sesuai jadwal",
            (Lang::Id, RowState::AtRisk) => "Berisiko",
            (Lang::Id, RowState::Breached) => "Terlambat",
            (Lang::Id, RowState::Escalated) => "Dieskalasi, belum ditanggapi",
            (Lang::En, RowState::OnTrack) => "On track",
            (Lang::En, RowState::AtRisk) => "At risk",
            (Lang::En, RowState::Breached) => "Breached",
            (Lang::En, RowState::Escalated) => "Escalated, not acknowledged",
        }
    }

    pub fn priority(self, priority: Priority) -> &'static str {
        match (self, priority) {
            (Lang::Id, Priority::Emergency) => "Darurat",
            (Lang::Id, Priority::Urgent) => "Mendesak",
            (Lang::Id, Priority::Routine) => "Rutin",
            (Lang::En, Priority::Emergency) => "Emergency",
            (Lang::En, Priority::Urgent) => "Urgent",
            (Lang::En, Priority::Routine) => "Routine",
        }
    }

    /// A change's name for people (`kind` as [`refbus_core::Change::kind`] gives it).
    pub fn change(self, kind: &str) -> String {
        let (id, en) = match kind {
            "created" => ("Rujukan dibuat", "Referral created"),
            "received" => ("Diterima sistem penerima", "Received"),
            "accepted" => ("Disetujui", "Accepted"),
            "rejected" => ("Ditolak", "Rejected"),
            "started" => ("Layanan dimulai", "Service started"),
            "appointment_scheduled" => ("Jadwal temu dibuat", "Appointment scheduled"),
            "no_show_recorded" => ("Tidak hadir", "No-show recorded"),
            "note_added" => ("Catatan ditambahkan", "Note added"),
            "put_on_hold" => ("Ditunda", "Put on hold"),
            "resumed" => ("Dilanjutkan", "Resumed"),
            "cancellation_requested" => ("Pembatalan diminta", "Cancellation requested"),
            "cancellation_confirmed" => ("Pembatalan dikonfirmasi", "Cancellation confirmed"),
            "cancellation_declined" => ("Pembatalan ditolak", "Cancellation declined"),
            "cancelled" => ("Dibatalkan", "Cancelled"),
            "completed" => ("Selesai", "Completed"),
            "failed" => ("Gagal", "Failed"),
            "entered_in_error" => ("Salah input", "Entered in error"),
            "clock_warning" => ("Peringatan jam", "Clock warning"),
            "clock_breached" => ("Tenggat terlampaui", "Clock breached"),
            "escalated" => ("Eskalasi", "Escalated"),
            "escalation_acknowledged" => ("Eskalasi ditanggapi", "Escalation acknowledged"),
            "reroute_requested" => ("Pengalihan diminta", "Reroute requested"),
            "rerouted" => ("Dialihkan", "Rerouted"),
            "integrity_alert" => ("Peringatan integritas", "Integrity alert"),
            other => (other, other),
        };
        match self {
            Lang::Id => id.to_owned(),
            Lang::En => en.to_owned(),
        }
    }
}

/// Indonesia's zone names by UTC offset (WIB +7, WITA +8, WIT +9); the zone's own
/// abbreviation elsewhere.
pub fn zone_label(tz: Tz, at: Timestamp) -> String {
    let utc = Utc
        .timestamp_millis_opt(at.as_millis())
        .single()
        .unwrap_or_default();
    let offset = tz.offset_from_utc_datetime(&utc.naive_utc());
    match offset.fix().local_minus_utc() {
        25_200 => "WIB".to_owned(),
        28_800 => "WITA".to_owned(),
        32_400 => "WIT".to_owned(),
        _ => chrono_tz::OffsetName::abbreviation(&offset)
            .unwrap_or(tz.name())
            .to_owned(),
    }
}

/// `at` in `tz`, as `dd/mm/yyyy HH:MM:SS WITA`.
pub fn format_time(tz: Tz, at: Timestamp) -> String {
    let Some(utc) = Utc.timestamp_millis_opt(at.as_millis()).single() else {
        return at.to_string();
    };
    format!(
        "{} {}",
        utc.with_timezone(&tz).format("%d/%m/%Y %H:%M:%S"),
        zone_label(tz, at)
    )
}

/// When `now`'s day and week (from Monday) began in `tz`.
pub fn day_and_week_start(tz: Tz, now: Timestamp) -> (Timestamp, Timestamp) {
    let Some(utc) = Utc.timestamp_millis_opt(now.as_millis()).single() else {
        return (now, now);
    };
    let local = utc.with_timezone(&tz).date_naive();
    let start_of = |date: chrono::NaiveDate| {
        date.and_hms_opt(0, 0, 0)
            .and_then(|midnight| tz.from_local_datetime(&midnight).earliest())
            .map_or(now, |start| {
                Timestamp::from_millis(start.timestamp_millis())
            })
    };
    let monday = local - chrono::Duration::days(i64::from(local.weekday().num_days_from_monday()));
    (start_of(local), start_of(monday))
}

/// A duration as `H:MM:SS` (hours may exceed 24), signed: `-0:01:05` once past.
pub fn countdown(millis: i64) -> String {
    let sign = if millis < 0 { "-" } else { "" };
    let seconds = millis.unsigned_abs() / 1000;
    format!(
        "{sign}{}:{:02}:{:02}",
        seconds / 3600,
        (seconds / 60) % 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indonesian_zones_are_named_as_people_name_them() {
        let at = Timestamp::parse_rfc3339("2026-03-02T01:00:00Z").unwrap();
        assert_eq!(zone_label(chrono_tz::Asia::Jakarta, at), "WIB");
        assert_eq!(zone_label(chrono_tz::Asia::Makassar, at), "WITA");
        assert_eq!(zone_label(chrono_tz::Asia::Jayapura, at), "WIT");
        assert_eq!(
            format_time(chrono_tz::Asia::Makassar, at),
            "02/03/2026 09:00:00 WITA"
        );
    }

    #[test]
    fn a_day_and_a_week_start_at_local_midnight() {
        // Wednesday 4 March 2026, 01:30 WITA is Tuesday 17:30 UTC.
        let now = Timestamp::parse_rfc3339("2026-03-03T17:30:00Z").unwrap();
        let (day, week) = day_and_week_start(chrono_tz::Asia::Makassar, now);
        assert_eq!(
            day,
            Timestamp::parse_rfc3339("2026-03-04T00:00:00+08:00").unwrap()
        );
        assert_eq!(
            week,
            Timestamp::parse_rfc3339("2026-03-02T00:00:00+08:00").unwrap()
        );
    }

    #[test]
    fn countdowns_are_signed() {
        assert_eq!(countdown(3_723_000), "1:02:03");
        assert_eq!(countdown(-65_000), "-0:01:05");
    }
}
