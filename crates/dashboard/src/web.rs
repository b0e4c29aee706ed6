//! The HTTP side: the board, the per-agency load, a referral's timeline, the live feed (SSE) and
//! the two static files, rendered with compiled templates (askama) from the projection.
//!
//! Routes (all `GET`; each reads the [`Viewer`] from the request's extensions):
//!
//! ```text
//! /                      the board; filters ?agency= &service= &priority= &clock= &state=
//! /agencies              per-agency load
//! /referrals/{id}        a referral's timeline (403 if the viewer may not see it)
//! POST /referrals/{id}/acknowledge   form clock=&level=: acknowledge an escalation through
//!                        the viewer's agency's adapter (see `act`); 303 to / when recorded
//! /indicators            planning indicators with SVG charts (see `indicators`)
//! /indicators.csv        the same as CSV
//! /events                the live feed of the board (same filters; Last-Event-ID or ?since=)
//! /static/board.js       countdowns and the live feed, hand-written, no build step
//! /static/board.css
//! ```
//!
//! `?lang=en` or `?lang=id` switches the language and remembers it in a cookie.

use std::convert::Infallible;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chrono_tz::Tz;
use futures::StreamExt;
use refbus_bus::subjects;
use refbus_core::event::Change;
use refbus_core::ids::{ClockId, ServiceId};
use refbus_core::referral::Priority;
use refbus_core::{AgencyId, ReferralId, Timestamp};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::local::{self, Lang, Texts};
use crate::projection::{Alert, Filters, PAGE_ROWS, Row, RowState};
use crate::{Shared, Update, Viewer};
use refbus_operators::{CsrfToken, SessionEnd};

pub(crate) fn routes(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/", get(board))
        .route("/agencies", get(load))
        .route("/referrals/{id}", get(timeline))
        .route(
            "/referrals/{id}/acknowledge",
            axum::routing::post(acknowledge),
        )
        .route("/indicators", get(crate::indicators::page))
        .route("/indicators.csv", get(crate::indicators::csv))
        .route("/events", get(events))
        .route("/static/board.js", get(script))
        .route("/static/board.css", get(style))
        .with_state(shared)
}

// === request context ===

pub(crate) type Params = Query<Vec<(String, String)>>;

pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(key, value)| key == name && !value.is_empty())
        .map(|(_, value)| value.as_str())
}

/// The language: `?lang=` first (remembered in a cookie), then the cookie, then Indonesian.
pub(crate) fn language(params: &[(String, String)], headers: &HeaderMap) -> (Lang, bool) {
    if let Some(lang) = param(params, "lang").and_then(Lang::parse) {
        return (lang, true);
    }
    let from_cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix("lang="))
        .find_map(Lang::parse);
    (from_cookie.unwrap_or(Lang::Id), false)
}

pub(crate) fn with_language(mut response: Response, lang: Lang, remember: bool) -> Response {
    if remember
        && let Ok(cookie) = HeaderValue::from_str(&format!(
            "lang={}; Path=/; Max-Age=31536000; SameSite=Lax",
            lang.code()
        ))
    {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Parses the board's filters; the name of a value that is not valid.
fn filters(params: &[(String, String)]) -> Result<Filters, &'static str> {
    Ok(Filters {
        agency: param(params, "agency")
            .map(|v| AgencyId::new(v).map_err(|_| "agency"))
            .transpose()?,
        service: param(params, "service")
            .map(|v| ServiceId::new(v).map_err(|_| "service"))
            .transpose()?,
        priority: param(params, "priority")
            .map(|v| Priority::parse(v).ok_or("priority"))
            .transpose()?,
        clock: param(params, "clock")
            .map(|v| ClockId::new(v).map_err(|_| "clock"))
            .transpose()?,
        state: param(params, "state")
            .map(|v| RowState::parse(v).ok_or("state"))
            .transpose()?,
    })
}

/// Which page of the board (`?page=`, from 0): a board shows [`PAGE_ROWS`] rows at a time, so
/// a page never renders a million rows.
fn page_number(params: &[(String, String)]) -> usize {
    param(params, "page")
        .and_then(|page| page.parse::<usize>().ok())
        .unwrap_or(0)
        .min(1_000_000)
}

/// `uri` with its `page` parameter set to `number`.
fn next_page_url(uri: &axum::http::Uri, params: &[(String, String)], number: usize) -> String {
    let mut query: Vec<String> = params
        .iter()
        .filter(|(key, _)| key != "page")
        .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
        .collect();
    query.push(format!("page={number}"));
    format!("{}?{}", uri.path(), query.join("&"))
}

/// The viewer's agency's time zone (Indonesia's central zone if the registry does not know it).
fn zone(shared: &Shared, viewer: &Viewer) -> Tz {
    shared
        .verifier
        .registry()
        .agency(&viewer.agency)
        .map_or(chrono_tz::Asia::Makassar, |agency| {
            agency.working_hours.time_zone
        })
}

pub(crate) fn error_page(status: StatusCode, text: &str) -> Response {
    let text = escape(text);
    (
        status,
        Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{status}</title></head>\
             <body><p id=\"error\" data-status=\"{}\">{text}</p><p><a href=\"/\">refbus</a></p></body></html>",
            status.as_u16()
        )),
    )
        .into_response()
}

/// `text` safe inside HTML.
fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

pub(crate) fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(err) => {
            tracing::error!("dashboard: rendering a page: {err}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

// === view models: what templates print, all text ===

pub(crate) struct Page {
    pub(crate) t: &'static Texts,
    pub(crate) lang: &'static str,
    pub(crate) title: String,
    pub(crate) active: &'static str,
    pub(crate) viewer: String,
    pub(crate) viewer_agency: String,
    pub(crate) role: &'static str,
    pub(crate) zone: String,
    pub(crate) lang_id_url: String,
    pub(crate) lang_en_url: String,
    pub(crate) alerts: Vec<AlertView>,
    /// Each way the events stream differs from its configuration (empty: as configured).
    pub(crate) stream: Vec<String>,
    pub(crate) server_now: i64,
    pub(crate) event_id: String,
    pub(crate) csrf: String,
}

pub(crate) struct AlertView {
    pub(crate) seq: u64,
    pub(crate) subject: String,
    pub(crate) referral: String,
    pub(crate) problem: String,
    pub(crate) detail: String,
    pub(crate) at: String,
}

pub(crate) struct RowView {
    pub(crate) id: String,
    pub(crate) sender: String,
    pub(crate) recipient: String,
    pub(crate) service: String,
    pub(crate) priority: String,
    pub(crate) priority_label: &'static str,
    pub(crate) categories: String,
    pub(crate) status: String,
    pub(crate) state: &'static str,
    pub(crate) state_label: &'static str,
    pub(crate) clock: String,
    pub(crate) clock_title: String,
    /// Milliseconds since the epoch, empty while paused.
    pub(crate) deadline_ms: String,
    pub(crate) deadline_text: String,
    pub(crate) countdown: String,
    pub(crate) sort: i64,
    pub(crate) level: String,
    pub(crate) notified: String,
    pub(crate) now_ms: i64,
    /// The escalation the viewer may acknowledge from the board (empty: no button).
    pub(crate) ack_clock: String,
    pub(crate) ack_level: String,
    pub(crate) ack_label: &'static str,
}

pub(crate) struct Opt {
    pub(crate) value: String,
    pub(crate) label: String,
    pub(crate) selected: bool,
}

/// The escalation `viewer` may acknowledge on `row` from the board: her role acts, her agency
/// was notified, and the dashboard acts for it.
fn acknowledgeable(shared: &Shared, viewer: &Viewer, row: &Row) -> Option<(String, String)> {
    if !viewer.role.may_act() || !shared.acting().is_some_and(|a| a.acts_for(&viewer.agency)) {
        return None;
    }
    row.acknowledgeable_by(&viewer.agency)
        .map(|(clock, level)| (clock.to_string(), level.to_string()))
}

fn row_view(
    row: &Row,
    lang: Lang,
    tz: Tz,
    now: Timestamp,
    ack: Option<(String, String)>,
) -> RowView {
    let t = lang.texts();
    let view = &row.clock;
    let (ack_clock, ack_level) = ack.unwrap_or_default();
    RowView {
        ack_clock,
        ack_level,
        ack_label: t.acknowledge,
        id: row.id.to_string(),
        sender: row.sender.to_string(),
        recipient: row.recipient.to_string(),
        service: row.service.to_string(),
        priority: row.priority.as_str().to_owned(),
        priority_label: lang.priority(row.priority),
        categories: row.categories.join(", "),
        status: row.status.as_str().to_owned(),
        state: row.state.as_str(),
        state_label: lang.state(row.state),
        clock: view.clock.to_string(),
        clock_title: view.title.clone(),
        deadline_ms: view
            .deadline
            .map(|d| d.as_millis().to_string())
            .unwrap_or_default(),
        deadline_text: view
            .deadline
            .map_or_else(|| t.paused.to_owned(), |d| local::format_time(tz, d)),
        countdown: view.deadline.map_or_else(
            || t.paused.to_owned(),
            |d| local::countdown(d.as_millis() - now.as_millis()),
        ),
        sort: row.sort_key(),
        level: row
            .clock
            .level
            .map(|level| level.to_string())
            .unwrap_or_default(),
        notified: row
            .clock
            .notified
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        now_ms: now.as_millis(),
    }
}

fn alert_view(alert: &Alert, tz: Tz) -> AlertView {
    let notice = &alert.notice;
    AlertView {
        seq: notice.stream_seq,
        subject: notice.subject.clone(),
        referral: notice
            .referral_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        problem: notice.problem.as_str().to_owned(),
        detail: notice.detail.clone(),
        at: local::format_time(tz, notice.at),
    }
}

/// `uri` with its `lang` parameter set to `lang`.
fn switch_url(uri: &axum::http::Uri, params: &[(String, String)], lang: Lang) -> String {
    let mut query: Vec<String> = params
        .iter()
        .filter(|(key, _)| key != "lang")
        .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
        .collect();
    query.push(format!("lang={}", lang.code()));
    format!("{}?{}", uri.path(), query.join("&"))
}

/// Percent-encodes a query component (the values are slugs; anything else is encoded).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn event_id(shared: &Shared, version: u64) -> String {
    format!("{}.{version}", shared.epoch)
}

pub(crate) struct Context<'a> {
    shared: &'a Shared,
    viewer: &'a Viewer,
    lang: Lang,
    tz: Tz,
    now: Timestamp,
    /// The session's CSRF token, for the page's forms (empty where no login layer runs).
    csrf: String,
}

impl<'a> Context<'a> {
    /// What every page of a request shares: who asks, in which language and zone, now.
    pub(crate) fn of(
        shared: &'a Shared,
        viewer: &'a Viewer,
        lang: Lang,
        csrf: Option<&Extension<CsrfToken>>,
    ) -> Context<'a> {
        Context {
            shared,
            viewer,
            lang,
            tz: zone(shared, viewer),
            now: shared.clock.now(),
            csrf: csrf
                .map(|token| token.as_str().to_owned())
                .unwrap_or_default(),
        }
    }

    pub(crate) fn page(
        &self,
        title: String,
        active: &'static str,
        uri: &axum::http::Uri,
        params: &[(String, String)],
    ) -> Page {
        let projection = self.shared.read();
        Page {
            t: self.lang.texts(),
            lang: self.lang.code(),
            title,
            active,
            viewer: self.viewer.username.to_string(),
            viewer_agency: self.viewer.agency.to_string(),
            role: self.viewer.role.as_str(),
            zone: local::zone_label(self.tz, self.now),
            lang_id_url: switch_url(uri, params, Lang::Id),
            lang_en_url: switch_url(uri, params, Lang::En),
            alerts: projection
                .alerts(self.viewer)
                .into_iter()
                .map(|alert| alert_view(alert, self.tz))
                .collect(),
            stream: self.shared.stream_differences(),
            server_now: self.now.as_millis(),
            event_id: event_id(self.shared, projection.version()),
            csrf: self.csrf.clone(),
        }
    }
}

// === templates ===

#[derive(Template)]
#[template(path = "board.html")]
pub(crate) struct BoardPage {
    pub(crate) page: Page,
    pub(crate) rows: Vec<RowView>,
    /// The next page of the board (empty on the last).
    pub(crate) more_url: String,
    pub(crate) agencies: Vec<Opt>,
    pub(crate) services: Vec<Opt>,
    pub(crate) priorities: Vec<Opt>,
    pub(crate) clocks: Vec<Opt>,
    pub(crate) states: Vec<Opt>,
}

#[derive(Template)]
#[template(path = "rows.html")]
pub(crate) struct RowsFragment {
    pub(crate) rows: Vec<RowView>,
}

#[derive(Template)]
#[template(path = "row_alone.html")]
pub(crate) struct RowFragment {
    pub(crate) row: RowView,
}

#[derive(Template)]
#[template(path = "alerts_alone.html")]
pub(crate) struct AlertsFragment {
    pub(crate) page: Page,
}

pub(crate) struct LoadView {
    pub(crate) agency: String,
    pub(crate) name: String,
    pub(crate) zone: String,
    pub(crate) open: usize,
    pub(crate) awaiting_acceptance: usize,
    pub(crate) at_risk: usize,
    pub(crate) breached_today: usize,
    pub(crate) breached_this_week: usize,
    pub(crate) reroutes_pending: usize,
}

#[derive(Template)]
#[template(path = "load.html")]
pub(crate) struct LoadPage {
    pub(crate) page: Page,
    pub(crate) loads: Vec<LoadView>,
}

pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) stream_seq: u64,
    pub(crate) kind: &'static str,
    pub(crate) label: String,
    pub(crate) at: String,
    pub(crate) author: String,
    pub(crate) details: String,
}

#[derive(Template)]
#[template(path = "timeline.html")]
pub(crate) struct TimelinePage {
    pub(crate) page: Page,
    pub(crate) id: String,
    pub(crate) sender: String,
    pub(crate) recipient: String,
    pub(crate) service: String,
    pub(crate) priority_label: &'static str,
    pub(crate) status: String,
    pub(crate) entries: Vec<Entry>,
    pub(crate) referral_alerts: Vec<AlertView>,
}

// === handlers ===

async fn board(
    State(shared): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    csrf: Option<Extension<CsrfToken>>,
    uri: axum::http::Uri,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    let (lang, remember) = language(&params, &headers);
    let Ok(filters) = filters(&params) else {
        return error_page(StatusCode::BAD_REQUEST, lang.texts().bad_request);
    };
    let number = page_number(&params);
    let context = Context::of(&shared, &viewer, lang, csrf.as_ref());
    let page = context.page(lang.texts().board.to_owned(), "board", &uri, &params);
    let (rows, more) = shared.read().board(
        &viewer,
        &filters,
        context.now,
        number * PAGE_ROWS,
        PAGE_ROWS,
    );
    let more_url = if more {
        next_page_url(&uri, &params, number + 1)
    } else {
        String::new()
    };
    let rows = rows
        .iter()
        .map(|row| {
            let ack = acknowledgeable(&shared, &viewer, row);
            row_view(row, lang, context.tz, context.now, ack)
        })
        .collect();
    let registry = shared.verifier.registry();
    let opt = |value: String, label: String, selected: bool| Opt {
        value,
        label,
        selected,
    };
    let mut clocks: Vec<ClockId> = registry
        .policies
        .iter()
        .flat_map(|policy| policy.clocks.iter().map(|clock| clock.id.clone()))
        .collect();
    clocks.sort();
    clocks.dedup();
    let template = BoardPage {
        page,
        rows,
        more_url,
        agencies: registry
            .agencies
            .values()
            .map(|a| {
                opt(
                    a.id.to_string(),
                    a.name.clone(),
                    filters.agency.as_ref() == Some(&a.id),
                )
            })
            .collect(),
        services: registry
            .services
            .values()
            .map(|s| {
                opt(
                    s.id.to_string(),
                    s.name.clone(),
                    filters.service.as_ref() == Some(&s.id),
                )
            })
            .collect(),
        priorities: Priority::ALL
            .into_iter()
            .map(|p| {
                opt(
                    p.as_str().to_owned(),
                    lang.priority(p).to_owned(),
                    filters.priority == Some(p),
                )
            })
            .collect(),
        clocks: clocks
            .into_iter()
            .map(|c| {
                let selected = filters.clock.as_ref() == Some(&c);
                opt(c.to_string(), c.to_string(), selected)
            })
            .collect(),
        states: RowState::ALL
            .into_iter()
            .map(|s| {
                opt(
                    s.as_str().to_owned(),
                    lang.state(s).to_owned(),
                    filters.state == Some(s),
                )
            })
            .collect(),
    };
    with_language(render(&template), lang, remember)
}

async fn load(
    State(shared): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    csrf: Option<Extension<CsrfToken>>,
    uri: axum::http::Uri,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    let (lang, remember) = language(&params, &headers);
    let context = Context::of(&shared, &viewer, lang, csrf.as_ref());
    let page = context.page(lang.texts().load.to_owned(), "load", &uri, &params);
    let registry = shared.verifier.registry().clone();
    let now = context.now;
    let agency_zone = |agency: &AgencyId| {
        registry
            .agency(agency)
            .map_or(chrono_tz::Asia::Makassar, |a| a.working_hours.time_zone)
    };
    let loads = shared
        .read()
        .load(&viewer, now, |agency| {
            local::day_and_week_start(agency_zone(agency), now)
        })
        .into_iter()
        .map(|(agency, load)| LoadView {
            name: registry
                .agency(&agency)
                .map_or_else(String::new, |a| a.name.clone()),
            zone: local::zone_label(agency_zone(&agency), now),
            agency: agency.to_string(),
            open: load.open,
            awaiting_acceptance: load.awaiting_acceptance,
            at_risk: load.at_risk,
            breached_today: load.breached_today,
            breached_this_week: load.breached_this_week,
            reroutes_pending: load.reroutes_pending,
        })
        .collect();
    with_language(render(&LoadPage { page, loads }), lang, remember)
}

async fn timeline(
    State(shared): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    csrf: Option<Extension<CsrfToken>>,
    uri: axum::http::Uri,
    Path(id): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    let (lang, remember) = language(&params, &headers);
    let t = lang.texts();
    // Someone who may not see every referral learns nothing from an id: unknown and
    // not-theirs answer alike.
    let hidden = || {
        if viewer.sees_everything() {
            error_page(StatusCode::NOT_FOUND, t.not_found)
        } else {
            error_page(StatusCode::FORBIDDEN, t.forbidden)
        }
    };
    let Ok(id) = ReferralId::parse(&id) else {
        return hidden();
    };
    let held = {
        let projection = shared.read();
        projection
            .visible(&id, &viewer)
            .zip(projection.subject(&id))
    };
    if let Some((false, _)) = held {
        return error_page(StatusCode::FORBIDDEN, t.forbidden);
    }
    let subject = match held {
        Some((_, subject)) => Some(subject),
        None => match shared
            .bus
            .checked_subjects(&shared.verifier, &subjects::referral_pattern(&id))
            .await
        {
            Ok(found) => found.into_iter().next(),
            Err(err) => {
                tracing::warn!("dashboard: finding a referral: {err}");
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
        },
    };
    let Some(subject) = subject else {
        return hidden();
    };
    let history = match shared.bus.checked_history(&shared.verifier, &subject).await {
        Ok(history) => history,
        Err(err) => {
            tracing::warn!("dashboard: reading a referral's history: {err}");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let Some(last) = history.last() else {
        return hidden();
    };
    let state = &last.record.state;
    if !viewer.may_see_referral(state) {
        return error_page(StatusCode::FORBIDDEN, t.forbidden);
    }
    let context = Context::of(&shared, &viewer, lang, csrf.as_ref());
    let page = context.page(format!("{} {id}", t.timeline), "timeline", &uri, &params);
    let tz = context.tz;
    let entries = history
        .iter()
        .map(|stored| {
            let event = &stored.record.event;
            Entry {
                seq: event.seq,
                stream_seq: stored.seq,
                kind: event.change.kind(),
                label: lang.change(event.change.kind()),
                at: local::format_time(tz, event.at),
                author: match &event.actor {
                    refbus_core::Actor::Router => t.router.to_owned(),
                    actor => actor.describe(),
                },
                details: details(&event.change, tz),
            }
        })
        .collect();
    let referral_alerts = shared
        .read()
        .alerts_about(&id)
        .into_iter()
        .map(|alert| alert_view(alert, tz))
        .collect();
    let template = TimelinePage {
        page,
        id: id.to_string(),
        sender: state.sender().to_string(),
        recipient: state.recipient().to_string(),
        service: state.creation.service.to_string(),
        priority_label: lang.priority(state.creation.priority),
        status: state.status.as_str().to_owned(),
        entries,
        referral_alerts,
    };
    with_language(render(&template), lang, remember)
}

/// What an event says beyond its kind: codes, clocks, agencies and times; never a sealed field.
fn details(change: &Change, tz: Tz) -> String {
    let time = |at: &Timestamp| local::format_time(tz, *at);
    match change {
        Change::Created(creation) => {
            let mut text = format!(
                "{} → {}, {}, {}",
                creation.sender, creation.recipient, creation.service, creation.priority
            );
            if !creation.categories.is_empty() {
                let categories: Vec<String> = creation
                    .categories
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                text.push_str(&format!(" [{}]", categories.join(", ")));
            }
            if let Some(parent) = creation.parent {
                text.push_str(&format!(" ← {parent}"));
            }
            text
        }
        Change::Rejected { reason }
        | Change::PutOnHold { reason }
        | Change::CancellationRequested { reason }
        | Change::CancellationDeclined { reason }
        | Change::Cancelled { reason }
        | Change::Failed { reason }
        | Change::EnteredInError { reason } => reason.code.to_string(),
        Change::Completed { outcome } => outcome.code.to_string(),
        Change::AppointmentScheduled { at, .. } => time(at),
        Change::NoShowRecorded { appointment_at } => time(appointment_at),
        Change::ClockWarning {
            clock,
            permille,
            deadline,
            ..
        } => format!("{clock}: {}% → {}", permille / 10, time(deadline)),
        Change::ClockBreached { clock, deadline } => format!("{clock}: {}", time(deadline)),
        Change::Escalated {
            clock,
            level,
            repetition,
            action,
            notified,
            ..
        } => {
            let notified: Vec<String> = notified
                .iter()
                .map(|n| format!("{} ({})", n.agency, n.role))
                .collect();
            let action = match action {
                refbus_core::escalation::Action::Notify => "notify",
                refbus_core::escalation::Action::Reroute => "reroute",
            };
            format!(
                "{clock} level {level}.{repetition} ({action}) → {}",
                notified.join(", ")
            )
        }
        Change::EscalationAcknowledged { clock, level } => format!("{clock} level {level}"),
        Change::RerouteRequested { to, .. } => format!("→ {to}"),
        Change::Rerouted { child, to } => format!("→ {to} ({child})"),
        Change::IntegrityAlert {
            stream_seq,
            problem,
        } => format!("stream seq {stream_seq}: {problem}"),
        Change::Received
        | Change::Accepted
        | Change::Started
        | Change::NoteAdded { .. }
        | Change::Resumed
        | Change::CancellationConfirmed => String::new(),
    }
}

/// The board's live feed for this viewer and these filters. Each message's id is
/// `<process epoch>.<projection version>`; a browser reconnecting with the id it last saw (the
/// `Last-Event-ID` header, or `?since=` from the page) and missing nothing gets no snapshot;
/// any other gets the whole board first (`board`), then `row` / `remove` / `alerts` messages
/// as they happen.
async fn events(
    State(shared): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    session_end: Option<Extension<SessionEnd>>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    let (lang, _) = language(&params, &headers);
    let Ok(filters) = filters(&params) else {
        return error_page(StatusCode::BAD_REQUEST, lang.texts().bad_request);
    };
    let page = page_number(&params);
    let seen = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| param(&params, "since").map(str::to_owned));
    // Subscribed before the snapshot is taken, so no change falls between the two.
    let mut updates = shared.updates.subscribe();
    let mut closing = shared.closing.subscribe();
    let (tx, rx) = mpsc::channel::<SseEvent>(64);
    let tz = zone(&shared, &viewer);
    // The feed ends with the operator's session (logout, account removed or changed).
    let ended: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match session_end {
        Some(Extension(end)) => Box::pin(end.ended()),
        None => Box::pin(std::future::pending()),
    };
    tokio::spawn(async move {
        let _connected = shared.metrics.board_connected();
        let mut ended = ended;
        let feed = Feed {
            shared: &shared,
            viewer: &viewer,
            filters: &filters,
            page,
            lang,
            tz,
        };
        let current = event_id(&shared, shared.read().version());
        let first = if seen.as_deref() == Some(current.as_str()) {
            // Nothing missed: a comment opens the stream.
            SseEvent::default().comment("up to date")
        } else {
            feed.snapshot()
        };
        if tx.send(first).await.is_err() {
            return;
        }
        loop {
            let message = tokio::select! {
                _ = closing.wait_for(|closing| *closing) => return,
                () = &mut ended => return,
                update = updates.recv() => match update {
                    Ok(Update::Referral { version, id }) => feed.row(version, &id),
                    Ok(Update::Alerts { version }) => Some(feed.alerts(version)),
                    Ok(Update::Ready { .. }) => None,
                    // Too far behind to replay: the whole board again.
                    Err(RecvError::Lagged(_)) => Some(feed.snapshot()),
                    Err(RecvError::Closed) => return,
                },
            };
            if let Some(message) = message
                && tx.send(message).await.is_err()
            {
                return;
            }
        }
    });
    Sse::new(ReceiverStream::new(rx).map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response()
}

struct Feed<'a> {
    shared: &'a Shared,
    viewer: &'a Viewer,
    filters: &'a Filters,
    /// The board page the feed's snapshots show (its rows change live, whatever the page).
    page: usize,
    lang: Lang,
    tz: Tz,
}

impl Feed<'_> {
    fn snapshot(&self) -> SseEvent {
        let now = self.shared.clock.now();
        let projection = self.shared.read();
        let rows = projection
            .board(
                self.viewer,
                self.filters,
                now,
                self.page * PAGE_ROWS,
                PAGE_ROWS,
            )
            .0
            .iter()
            .map(|row| {
                let ack = acknowledgeable(self.shared, self.viewer, row);
                row_view(row, self.lang, self.tz, now, ack)
            })
            .collect();
        let html = RowsFragment { rows }.render().unwrap_or_default();
        SseEvent::default()
            .event("board")
            .id(event_id(self.shared, projection.version()))
            .data(html)
    }

    /// The referral's row as this viewer sees it now, or its removal; nothing about a referral
    /// the viewer may not see (not even that it changed).
    fn row(&self, version: u64, id: &ReferralId) -> Option<SseEvent> {
        let now = self.shared.clock.now();
        let projection = self.shared.read();
        if !projection.visible(id, self.viewer)? {
            return None;
        }
        let message = SseEvent::default().id(event_id(self.shared, version));
        Some(
            match projection
                .row(id, self.viewer, now)
                .filter(|row| self.filters.matches(row))
            {
                Some(row) => {
                    let ack = acknowledgeable(self.shared, self.viewer, &row);
                    let html = RowFragment {
                        row: row_view(&row, self.lang, self.tz, now, ack),
                    }
                    .render()
                    .unwrap_or_default();
                    message.event("row").data(html)
                }
                None => message.event("remove").data(id.to_string()),
            },
        )
    }

    fn alerts(&self, version: u64) -> SseEvent {
        let projection = self.shared.read();
        let alerts = projection
            .alerts(self.viewer)
            .into_iter()
            .map(|alert| alert_view(alert, self.tz))
            .collect();
        drop(projection);
        let page = Page {
            t: self.lang.texts(),
            lang: self.lang.code(),
            title: String::new(),
            active: "",
            viewer: String::new(),
            viewer_agency: String::new(),
            role: "",
            zone: String::new(),
            lang_id_url: String::new(),
            lang_en_url: String::new(),
            alerts,
            stream: self.shared.stream_differences(),
            server_now: 0,
            event_id: String::new(),
            csrf: String::new(),
        };
        SseEvent::default()
            .event("alerts")
            .id(event_id(self.shared, version))
            .data(AlertsFragment { page }.render().unwrap_or_default())
    }
}

#[derive(serde::Deserialize)]
struct AckForm {
    clock: String,
    level: u32,
}

/// Acknowledges an escalation as the viewer, through her agency's adapter (which checks,
/// signs and records it, or refuses). The dashboard refuses first what it knows the viewer may
/// not do: a role that cannot act, a referral she may not see.
async fn acknowledge(
    State(shared): State<Arc<Shared>>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<AckForm>,
) -> Response {
    let (lang, _) = language(&[], &headers);
    let t = lang.texts();
    let visible = ReferralId::parse(&id)
        .ok()
        .is_some_and(|id| shared.read().visible(&id, &viewer).unwrap_or(false));
    if !visible || !viewer.role.may_act() {
        return error_page(StatusCode::FORBIDDEN, t.forbidden);
    }
    let Some(acting) = shared.acting() else {
        return error_page(StatusCode::FORBIDDEN, t.forbidden);
    };
    match acting
        .acknowledge(&viewer, &id, &form.clock, form.level)
        .await
    {
        Ok(()) => axum::response::Redirect::to("/").into_response(),
        Err(status) => {
            tracing::info!(
                referral = %id,
                code = ?status.code(),
                "dashboard: an acknowledgement was refused: {}",
                status.message()
            );
            let http = match status.code() {
                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
                    StatusCode::FORBIDDEN
                }
                tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
                tonic::Code::NotFound => StatusCode::NOT_FOUND,
                tonic::Code::FailedPrecondition
                | tonic::Code::AlreadyExists
                | tonic::Code::Aborted => StatusCode::CONFLICT,
                _ => StatusCode::BAD_GATEWAY,
            };
            // The adapter's refusals say what is wrong in metadata terms only.
            error_page(http, &format!("{}: {}", t.refused, status.message()))
        }
    }
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../static/board.js"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../static/board.css"),
    )
}
