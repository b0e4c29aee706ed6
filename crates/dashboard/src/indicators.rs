//! Indicators for planning on the dashboard: the core's fold ([`refbus_core::indicators`]) kept
//! beside the board's projection, its page with charts drawn as SVG by the server, and its CSV.
//!
//! The projection forgets closed referrals after eight days; planners need every referral of
//! the year. So the indicators have their own accumulator, fed by the same checked records as
//! the projection (the rebuild's last checked record of every referral, then each record the
//! live feed checks): a summary per referral, never its state, never anything sealed.
//!
//! ```text
//! /indicators        the page: ?from=YYYY-MM &to=YYYY-MM &agency= (coordinator only) &lang=
//! /indicators.csv    the same period and agency, every dimension, as CSV
//! ```
//!
//! Who sees what: the coordinator (Tim Terpadu, Bappeda) every agency, or one with `?agency=`;
//! anyone else her own agency only (another agency's `?agency=` is 403).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use refbus_bus::replay::Replayed;
use refbus_bus::{Bus, ReadError, Verifier, subjects};
use refbus_core::AgencyId;
use refbus_core::demographics::{AgeBand, Sex};
use refbus_core::indicators::{
    self, Dimension, Indicators, Month, Query as IndicatorQuery, Report,
};
use refbus_operators::CsrfToken;

use crate::local::Lang;
use crate::web::{self, Context, Page};
use crate::{Shared, Viewer};

// === reading the stream ===

/// Folds the last checked record of every referral the stream holds now into `observe`
/// (`Bus::latest_checked`: the read of the dashboard's and the router's rebuilds); how many
/// referrals it read. A summary is a function of its referral's state alone
/// ([`Indicators::observe`]), so this gives the figures [`replay`] gives, for one read per
/// referral instead of one per event: what `refbus indicators` does unless asked to check every
/// record, and what the dashboard does after a start from its snapshot.
pub async fn read_latest(
    bus: &Bus,
    verifier: &Verifier,
    mut observe: impl FnMut(&refbus_core::Referral),
) -> Result<u64, ReadError> {
    let mut latest = bus
        .latest_checked(verifier, vec![subjects::ALL_REFERRALS.to_owned()])
        .await?;
    let mut count = 0u64;
    while let Some(stored) = latest.next().await {
        observe(&stored?.record.state);
        count += 1;
    }
    Ok(count)
}

/// The indicators of a whole stream, and how many records the read took in.
#[derive(Debug, Default)]
pub struct Read {
    pub indicators: Indicators,
    /// Records that passed the check (one per referral for [`latest`]).
    pub records: u64,
    /// Messages that failed it (named in the log; never counted in the figures). Counted by
    /// [`replay`] only: [`latest`] reads past a referral's failing last record to the last that
    /// passes, as every reader of the current state does.
    pub refused: u64,
}

/// [`read_latest`] into indicators of their own: what `refbus indicators` reports.
pub async fn latest(bus: &Bus, verifier: &Verifier) -> Result<Read, ReadError> {
    let registry = verifier.registry().clone();
    let mut indicators = Indicators::default();
    let records = read_latest(bus, verifier, |state| indicators.observe(&registry, state)).await?;
    Ok(Read {
        indicators,
        records,
        refused: 0,
    })
}

/// The indicators of a whole stream, every record read through `Bus::replay` (checked against
/// its predecessor), folding each verified state: `refbus indicators --every-record`, slower
/// than [`latest`] by the number of events per referral, and counting the records that fail.
pub async fn replay(bus: &Bus, verifier: &Verifier) -> Result<Read, ReadError> {
    let registry = verifier.registry().clone();
    let mut replay = Read::default();
    let mut records = bus
        .replay(verifier, vec![subjects::ALL_REFERRALS.to_owned()])
        .await?
        .boxed();
    while let Some(item) = records.next().await {
        match item? {
            Replayed::Record(stored) => {
                replay.records += 1;
                replay.indicators.observe(&registry, &stored.record.state);
            }
            Replayed::Refused {
                seq,
                subject,
                failure,
            } => {
                replay.refused += 1;
                tracing::warn!(
                    seq,
                    subject,
                    "indicators: a record fails the check: {failure}"
                );
            }
        }
    }
    Ok(replay)
}

// === the page ===

/// The page's own texts, in both languages.
pub(crate) struct Texts {
    pub(crate) title: &'static str,
    pub(crate) from: &'static str,
    pub(crate) to: &'static str,
    pub(crate) agency: &'static str,
    pub(crate) all_agencies: &'static str,
    pub(crate) show: &'static str,
    pub(crate) download: &'static str,
    pub(crate) by_agency: &'static str,
    pub(crate) side: &'static str,
    pub(crate) sender: &'static str,
    pub(crate) recipient: &'static str,
    pub(crate) referrals: &'static str,
    pub(crate) accepted: &'static str,
    pub(crate) rejected: &'static str,
    pub(crate) rerouted: &'static str,
    pub(crate) completed: &'static str,
    pub(crate) open: &'static str,
    pub(crate) acknowledge: &'static str,
    pub(crate) complete: &'static str,
    pub(crate) median: &'static str,
    pub(crate) by_person: &'static str,
    pub(crate) sex: &'static str,
    pub(crate) age_band: &'static str,
    pub(crate) female: &'static str,
    pub(crate) male: &'static str,
    pub(crate) unknown: &'static str,
    pub(crate) by_month: &'static str,
    pub(crate) clocks: &'static str,
    pub(crate) clock: &'static str,
    pub(crate) instances: &'static str,
    pub(crate) met: &'static str,
    pub(crate) missed: &'static str,
    pub(crate) pending: &'static str,
    pub(crate) compliance: &'static str,
    pub(crate) breaches: &'static str,
    pub(crate) escalations: &'static str,
    pub(crate) level: &'static str,
    pub(crate) notes: &'static str,
    pub(crate) none: &'static str,
}

static ID: Texts = Texts {
    title: "Indikator perencanaan",
    from: "Dari bulan",
    to: "Sampai bulan",
    agency: "Instansi",
    all_agencies: "Semua instansi",
    show: "Tampilkan",
    download: "Unduh CSV (semua dimensi)",
    by_agency: "Per instansi",
    side: "Sebagai",
    sender: "pengirim",
    recipient: "penerima",
    referrals: "Rujukan",
    accepted: "Diterima",
    rejected: "Ditolak",
    rerouted: "Dialihkan",
    completed: "Selesai",
    open: "Masih berjalan",
    acknowledge: "Waktu tanggap",
    complete: "Waktu selesai",
    median: "median / p90",
    by_person: "Menurut jenis kelamin dan kelompok umur",
    sex: "Jenis kelamin",
    age_band: "Kelompok umur",
    female: "Perempuan",
    male: "Laki-laki",
    unknown: "Tidak diketahui",
    by_month: "Rujukan per bulan",
    clocks: "Kepatuhan standar waktu (termasuk UU TPKS)",
    clock: "Jam layanan",
    instances: "Kejadian",
    met: "Tepat waktu",
    missed: "Terlambat",
    pending: "Berjalan",
    compliance: "Kepatuhan",
    breaches: "Pelanggaran tercatat",
    escalations: "Eskalasi per tingkat",
    level: "tingkat",
    notes: "Bulan rujukan dihitung dari tanggal dibuat (zona waktu pengirim). Kepatuhan = tepat \
            waktu / (tepat waktu + terlambat); jam yang masih berjalan belum dihitung. Jam \
            dihitung untuk instansi yang bertanggung jawab. Tanpa identitas: hanya jenis \
            kelamin dan kelompok umur.",
    none: "Belum ada rujukan pada periode ini.",
};

static EN: Texts = Texts {
    title: "Planning indicators",
    from: "From month",
    to: "To month",
    agency: "Agency",
    all_agencies: "All agencies",
    show: "Show",
    download: "Download CSV (every dimension)",
    by_agency: "Per agency",
    side: "As",
    sender: "sender",
    recipient: "recipient",
    referrals: "Referrals",
    accepted: "Accepted",
    rejected: "Rejected",
    rerouted: "Rerouted",
    completed: "Completed",
    open: "Open",
    acknowledge: "Time to acknowledge",
    complete: "Time to complete",
    median: "median / p90",
    by_person: "By sex and age band",
    sex: "Sex",
    age_band: "Age band",
    female: "Female",
    male: "Male",
    unknown: "Unknown",
    by_month: "Referrals per month",
    clocks: "Service standard compliance (UU TPKS included)",
    clock: "Clock",
    instances: "Instances",
    met: "Met",
    missed: "Missed",
    pending: "Running",
    compliance: "Compliance",
    breaches: "Breaches recorded",
    escalations: "Escalations by level",
    level: "level",
    notes: "A referral counts in the month it was created (the sender's time zone). Compliance \
            = met / (met + missed); clocks still running are not counted yet. A clock counts \
            for the agency responsible for it. No identity: sex and age band only.",
    none: "No referrals in this period.",
};

fn texts(lang: Lang) -> &'static Texts {
    match lang {
        Lang::Id => &ID,
        Lang::En => &EN,
    }
}

pub(crate) struct AgencyRowView {
    pub(crate) agency: String,
    pub(crate) side: &'static str,
    pub(crate) referrals: u64,
    pub(crate) accepted: u64,
    pub(crate) rejected: u64,
    pub(crate) rerouted: u64,
    pub(crate) completed: u64,
    pub(crate) open: u64,
    pub(crate) acknowledge: String,
    pub(crate) complete: String,
}

pub(crate) struct PersonRowView {
    pub(crate) band: &'static str,
    pub(crate) female: u64,
    pub(crate) male: u64,
    pub(crate) unknown: u64,
}

pub(crate) struct ClockRowView {
    pub(crate) clock: String,
    pub(crate) title: String,
    pub(crate) basis: String,
    pub(crate) statutory: bool,
    pub(crate) instances: u64,
    pub(crate) met: u64,
    pub(crate) missed: u64,
    pub(crate) pending: u64,
    pub(crate) compliance: String,
    pub(crate) breaches: u64,
    pub(crate) escalations: String,
}

pub(crate) struct AgencyOption {
    pub(crate) value: String,
    pub(crate) label: String,
    pub(crate) selected: bool,
}

#[derive(Template)]
#[template(path = "indicators.html")]
pub(crate) struct IndicatorsPage {
    pub(crate) page: Page,
    pub(crate) it: &'static Texts,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) may_choose_agency: bool,
    pub(crate) agencies: Vec<AgencyOption>,
    pub(crate) csv_url: String,
    pub(crate) empty: bool,
    pub(crate) by_agency: Vec<AgencyRowView>,
    pub(crate) by_person: Vec<PersonRowView>,
    pub(crate) person_chart: String,
    pub(crate) month_chart: String,
    pub(crate) clocks: Vec<ClockRowView>,
    pub(crate) clock_chart: String,
}

/// What a request asks: the period and the agency, after the role rule.
struct Asked {
    from: Option<Month>,
    to: Option<Month>,
    agency: Option<AgencyId>,
}

/// Reads `?from=&to=&agency=`; `Err` is the status to answer (400 for a malformed value, 403
/// for another agency asked by someone who is not the coordinator).
fn asked(params: &[(String, String)], viewer: &Viewer) -> Result<Asked, StatusCode> {
    let month = |name| {
        web::param(params, name)
            .map(|text| Month::parse(text).ok_or(StatusCode::BAD_REQUEST))
            .transpose()
    };
    let agency = web::param(params, "agency")
        .map(|text| AgencyId::new(text).map_err(|_| StatusCode::BAD_REQUEST))
        .transpose()?;
    let agency = if viewer.sees_everything() {
        agency
    } else {
        match agency {
            Some(agency) if agency != viewer.agency => return Err(StatusCode::FORBIDDEN),
            _ => Some(viewer.agency.clone()),
        }
    };
    Ok(Asked {
        from: month("from")?,
        to: month("to")?,
        agency,
    })
}

impl Asked {
    fn query(&self, by: &[Dimension]) -> IndicatorQuery {
        IndicatorQuery {
            by: by.to_vec(),
            from: self.from,
            to: self.to,
            agency: self.agency.clone(),
        }
    }
}

fn report(shared: &Shared, asked: &Asked, by: &[Dimension]) -> Report {
    let now = shared.clock.now();
    shared
        .indicators
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .report(now, &asked.query(by))
}

fn times(times: &indicators::Times) -> String {
    match (times.median, times.p90) {
        (Some(median), Some(p90)) => format!(
            "{} / {}",
            refbus_core::time::format_duration(median),
            refbus_core::time::format_duration(p90)
        ),
        _ => "–".to_owned(),
    }
}

pub(crate) async fn page(
    State(shared): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    csrf: Option<Extension<CsrfToken>>,
    uri: axum::http::Uri,
    Query(params): web::Params,
    headers: HeaderMap,
) -> Response {
    let (lang, remember) = web::language(&params, &headers);
    let asked = match asked(&params, &viewer) {
        Ok(asked) => asked,
        Err(StatusCode::FORBIDDEN) => {
            return web::error_page(StatusCode::FORBIDDEN, lang.texts().forbidden);
        }
        Err(status) => return web::error_page(status, lang.texts().bad_request),
    };
    let it = texts(lang);
    let context = Context::of(&shared, &viewer, lang, csrf.as_ref());
    let page = context.page(it.title.to_owned(), "indicators", &uri, &params);
    let registry = shared.verifier.registry();

    let by_agency: Vec<AgencyRowView> = report(&shared, &asked, &[Dimension::Agency])
        .referrals
        .into_iter()
        .filter_map(|row| {
            let (agency, side) = row.key.agency?;
            let f = row.figures;
            Some(AgencyRowView {
                agency: agency.to_string(),
                side: match side {
                    refbus_core::referral::Party::Sender => it.sender,
                    refbus_core::referral::Party::Recipient => it.recipient,
                },
                referrals: f.referrals,
                accepted: f.accepted,
                rejected: f.rejected,
                rerouted: f.rerouted,
                completed: f.completed,
                open: f.open,
                acknowledge: times(&f.acknowledge),
                complete: times(&f.complete),
            })
        })
        .collect();

    let mut people: BTreeMap<AgeBand, [u64; 3]> = BTreeMap::new();
    for row in report(&shared, &asked, &[Dimension::Sex, Dimension::AgeBand]).referrals {
        let (Some(sex), Some(band)) = (row.key.sex, row.key.age_band) else {
            continue;
        };
        let column = match sex {
            Sex::Female => 0,
            Sex::Male => 1,
            Sex::Unknown => 2,
        };
        people.entry(band).or_default()[column] += row.figures.referrals;
    }
    let by_person: Vec<PersonRowView> = AgeBand::ALL
        .into_iter()
        .map(|band| {
            let [female, male, unknown] = people.get(&band).copied().unwrap_or_default();
            PersonRowView {
                band: if band == AgeBand::Unknown {
                    it.unknown
                } else {
                    band.as_str()
                },
                female,
                male,
                unknown,
            }
        })
        .collect();
    let person_chart = grouped_bars(
        it.by_person,
        &by_person
            .iter()
            .map(|row| (row.band.to_owned(), [row.female, row.male, row.unknown]))
            .collect::<Vec<_>>(),
        [it.female, it.male, it.unknown],
    );

    let months: Vec<(String, u64)> = report(&shared, &asked, &[Dimension::Month])
        .referrals
        .into_iter()
        .filter_map(|row| Some((row.key.month?.to_string(), row.figures.referrals)))
        .collect();
    let month_chart = bars(it.by_month, &months);

    let titles = indicators::clock_titles(registry);
    let clocks: Vec<ClockRowView> = report(&shared, &asked, &[])
        .clocks
        .into_iter()
        .map(|row| {
            let (title, basis) = titles.get(&row.clock).cloned().unwrap_or_default();
            let basis = basis.unwrap_or_default();
            let f = &row.figures;
            ClockRowView {
                clock: row.clock.to_string(),
                // A clock set by a law (Undang-Undang, e.g. UU 12/2022 TPKS) is marked as such.
                statutory: basis.contains("UU "),
                title,
                basis,
                instances: f.instances,
                met: f.met,
                missed: f.missed,
                pending: f.pending,
                compliance: percent(f.compliance_permille()),
                breaches: f.breaches,
                escalations: f
                    .escalations
                    .iter()
                    .map(|(level, count)| format!("{} {level}: {count}", it.level))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })
        .collect();
    let clock_chart = percent_bars(
        it.compliance,
        &report(&shared, &asked, &[])
            .clocks
            .iter()
            .map(|row| (row.clock.to_string(), row.figures.compliance_permille()))
            .collect::<Vec<_>>(),
    );

    let agencies = registry
        .agencies
        .values()
        .map(|agency| AgencyOption {
            value: agency.id.to_string(),
            label: agency.name.clone(),
            selected: asked.agency.as_ref() == Some(&agency.id),
        })
        .collect();
    let from = asked.from.map(|m| m.to_string()).unwrap_or_default();
    let to = asked.to.map(|m| m.to_string()).unwrap_or_default();
    let csv_url = format!(
        "/indicators.csv?from={from}&to={to}&agency={}",
        asked
            .agency
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    let template = IndicatorsPage {
        page,
        it,
        from,
        to,
        may_choose_agency: viewer.sees_everything(),
        agencies,
        csv_url,
        empty: by_agency.is_empty(),
        by_agency,
        by_person,
        person_chart,
        month_chart,
        clocks,
        clock_chart,
    };
    web::with_language(web::render(&template), lang, remember)
}

/// The CSV of every dimension for the asked period and agency (see
/// [`refbus_core::indicators::csv`]).
pub(crate) async fn csv(
    State(shared): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Query(params): web::Params,
    headers: HeaderMap,
) -> Response {
    let (lang, _) = web::language(&params, &headers);
    let asked = match asked(&params, &viewer) {
        Ok(asked) => asked,
        Err(StatusCode::FORBIDDEN) => {
            return web::error_page(StatusCode::FORBIDDEN, lang.texts().forbidden);
        }
        Err(status) => return web::error_page(status, lang.texts().bad_request),
    };
    let body = indicators::csv(&report(&shared, &asked, &Dimension::ALL));
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"refbus-indicators.csv\"",
            ),
        ],
        body,
    )
        .into_response()
}

// === charts: SVG drawn here, no chart service, no script ===

const WIDTH: u32 = 640;
const BAR_HEIGHT: u32 = 22;
const LABEL_WIDTH: u32 = 170;
const COLOURS: [&str; 3] = ["#b4367a", "#2f6fb0", "#9a9a9a"];

fn percent(permille: Option<u64>) -> String {
    permille.map_or_else(|| "–".to_owned(), |p| format!("{}.{}%", p / 10, p % 10))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn svg_open(out: &mut String, title: &str, height: u32) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" role=\"img\" \
         viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\" \
         aria-label=\"{title}\"><title>{title}</title>",
        title = escape(title)
    );
}

fn scale(value: u64, max: u64) -> u64 {
    let room = u64::from(WIDTH - LABEL_WIDTH - 60);
    (value * room).checked_div(max).unwrap_or(0)
}

/// One horizontal bar per label, its value written after it.
fn bars(title: &str, rows: &[(String, u64)]) -> String {
    let height = BAR_HEIGHT * u32::try_from(rows.len()).unwrap_or(0) + 8;
    let max = rows.iter().map(|(_, v)| *v).max().unwrap_or(0);
    let mut out = String::new();
    svg_open(&mut out, title, height);
    for (index, (label, value)) in rows.iter().enumerate() {
        let y = BAR_HEIGHT * u32::try_from(index).unwrap_or(0) + 4;
        let width = scale(*value, max);
        let _ = write!(
            out,
            "<g class=\"bar\" data-label=\"{label}\" data-value=\"{value}\">\
             <text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{label}</text>\
             <rect x=\"{LABEL_WIDTH}\" y=\"{y}\" width=\"{width}\" height=\"{h}\" fill=\"{fill}\"/>\
             <text x=\"{vx}\" y=\"{ty}\">{value}</text></g>",
            label = escape(label),
            lx = LABEL_WIDTH - 6,
            ty = y + 15,
            h = BAR_HEIGHT - 6,
            fill = COLOURS[1],
            vx = u64::from(LABEL_WIDTH) + width + 6,
        );
    }
    out.push_str("</svg>");
    out
}

/// Per label, three bars side by side (female, male, unknown), with a legend.
fn grouped_bars(title: &str, rows: &[(String, [u64; 3])], legend: [&str; 3]) -> String {
    let group = BAR_HEIGHT * 3;
    let height = group * u32::try_from(rows.len()).unwrap_or(0) + 30;
    let max = rows
        .iter()
        .flat_map(|(_, values)| values.iter().copied())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    svg_open(&mut out, title, height);
    for (index, name) in legend.iter().enumerate() {
        let x = LABEL_WIDTH + 130 * u32::try_from(index).unwrap_or(0);
        let _ = write!(
            out,
            "<rect x=\"{x}\" y=\"4\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"15\">{}</text>",
            COLOURS[index],
            x + 16,
            escape(name)
        );
    }
    for (index, (label, values)) in rows.iter().enumerate() {
        let top = group * u32::try_from(index).unwrap_or(0) + 26;
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            LABEL_WIDTH - 6,
            top + BAR_HEIGHT + 12,
            escape(label)
        );
        for (column, value) in values.iter().enumerate() {
            let y = top + (BAR_HEIGHT - 2) * u32::try_from(column).unwrap_or(0);
            let width = scale(*value, max);
            let _ = write!(
                out,
                "<g class=\"bar\" data-label=\"{} {}\" data-value=\"{value}\">\
                 <rect x=\"{LABEL_WIDTH}\" y=\"{y}\" width=\"{width}\" height=\"{}\" fill=\"{}\"/>\
                 <text x=\"{}\" y=\"{}\">{value}</text></g>",
                escape(label),
                escape(legend[column]),
                BAR_HEIGHT - 6,
                COLOURS[column],
                u64::from(LABEL_WIDTH) + width + 6,
                y + 14,
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// One bar per clock, its length the compliance (0-100%); `–` when nothing was decided yet.
fn percent_bars(title: &str, rows: &[(String, Option<u64>)]) -> String {
    let height = BAR_HEIGHT * u32::try_from(rows.len()).unwrap_or(0) + 8;
    let mut out = String::new();
    svg_open(&mut out, title, height);
    for (index, (label, permille)) in rows.iter().enumerate() {
        let y = BAR_HEIGHT * u32::try_from(index).unwrap_or(0) + 4;
        let width = scale(permille.unwrap_or(0), 1000);
        let full = scale(1000, 1000);
        let _ = write!(
            out,
            "<g class=\"bar\" data-label=\"{label}\" data-value=\"{value}\">\
             <text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{label}</text>\
             <rect x=\"{LABEL_WIDTH}\" y=\"{y}\" width=\"{full}\" height=\"{h}\" fill=\"#eee\"/>\
             <rect x=\"{LABEL_WIDTH}\" y=\"{y}\" width=\"{width}\" height=\"{h}\" fill=\"{fill}\"/>\
             <text x=\"{vx}\" y=\"{ty}\">{value}</text></g>",
            label = escape(label),
            value = percent(*permille),
            lx = LABEL_WIDTH - 6,
            ty = y + 15,
            h = BAR_HEIGHT - 6,
            fill = COLOURS[1],
            vx = u64::from(LABEL_WIDTH) + full + 6,
        );
    }
    out.push_str("</svg>");
    out
}
