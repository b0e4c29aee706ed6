//! The read path: one referral, a filtered list, and the agency's inbox as a live stream.

use std::pin::Pin;

use data_encoding::BASE64URL_NOPAD;
use futures::{Stream, StreamExt};
use refbus_bus::{Item, subjects};
use refbus_core::clock::ClockView;
use refbus_core::referral::Party;
use refbus_core::{Event, Referral, ReferralId, Timestamp};
use refbus_proto::convert::{self, FieldError, ListQuery};
use refbus_proto::v1;
use tokio::sync::OwnedSemaphorePermit;
use tonic::Status;

use crate::write::{Access, Loaded};
use crate::{Adapter, keys, status};

/// The inbox as gRPC streams it.
pub(crate) type InboxStream =
    Pin<Box<dyn Stream<Item = Result<v1::WatchInboxResponse, Status>> + Send>>;

impl Adapter {
    /// How an agency system sees `state` now: clocks computed, sealed data opened if this
    /// agency may.
    pub(crate) fn view(&self, state: &Referral) -> v1::Referral {
        self.view_opening(state, &keys::opener(&self.inner.keyring, state.id))
    }

    /// [`Adapter::view`], opening sealed data with `opener`.
    pub(crate) fn view_opening(
        &self,
        state: &Referral,
        opener: &convert::Opener<'_>,
    ) -> v1::Referral {
        let (views, policies): (Vec<ClockView>, Vec<_>) =
            refbus_core::clock::views(&self.inner.registry, state, self.now())
                .into_iter()
                .unzip();
        convert::referral_view(state, &views, &policies, opener)
    }

    pub(crate) fn event_view(&self, event: &Event) -> v1::Event {
        let opener = keys::opener(&self.inner.keyring, event.referral_id);
        convert::event_view(event, &opener)
    }

    /// A referral with its identity and creation note (kept in its first event only).
    pub(crate) async fn get(&self, id: &ReferralId) -> Result<v1::Referral, Status> {
        let Some(Loaded { stored, access }) = self.load(id).await? else {
            return Err(status::not_found(&id.to_string()));
        };
        let mut state = stored.record.state;
        if access == Access::Party {
            let first = self
                .inner
                .bus
                .checked_creation(&self.inner.verifier, &stored.subject)
                .await
                .map_err(|err| status::read(&err))?;
            if let Some(first) = first {
                state.creation.identity = first.record.state.creation.identity;
                state.creation.note = first.record.state.creation.note;
            }
        }
        Ok(self.view(&state))
    }

    /// Referrals this agency sent or received, newest first, a page at a time. The page token
    /// names the last referral of the previous page, so new referrals never shift later pages,
    /// and the filters it was given for: with other filters it would silently skip or repeat
    /// referrals, so it is refused.
    pub(crate) async fn list(
        &self,
        query: &ListQuery,
    ) -> Result<v1::ListReferralsResponse, Status> {
        let agency = &self.inner.agency;
        let filters = match query.side {
            Some(Party::Sender) => vec![subjects::sent_by(agency)],
            Some(Party::Recipient) => vec![subjects::received_by(agency)],
            None => vec![subjects::received_by(agency), subjects::sent_by(agency)],
        };
        let given_for = filters_digest(query);
        let after = query
            .page_token
            .as_deref()
            .map(|token| parse_page_token(token, &given_for))
            .transpose()?;
        let verifier = self.inner.verifier.clone();
        let mut states: Vec<Referral> = self
            .inner
            .bus
            .latest_checked(&verifier, filters)
            .await
            .map_err(|err| status::read(&err))?
            .filter_map(|stored| std::future::ready(stored.ok().map(|stored| stored.record.state)))
            .filter(|state| std::future::ready(query.matches(state, agency)))
            .collect()
            .await;
        states.sort_by_key(|state| std::cmp::Reverse(page_key(state)));
        let start = after.map_or(0, |after| {
            states.partition_point(|state| page_key(state) >= after)
        });
        let page: Vec<&Referral> = states.iter().skip(start).take(query.page_size).collect();
        let next_page_token = if start + page.len() < states.len() {
            page.last()
                .map(|last| page_token(page_key(last), &given_for))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(v1::ListReferralsResponse {
            referrals: page.into_iter().map(|state| self.view(state)).collect(),
            next_page_token,
        })
    }

    /// The inbox from `cursor` on: every event of referrals this agency sent or received, and
    /// every notice for it, in order, then live.
    ///
    /// Each open stream holds one of the adapter's `max_inbox_streams` slots until it ends or
    /// its client goes away; past the limit the call is refused before anything is opened. A
    /// stream that has had nothing to send for `inbox_idle_timeout` ends with `UNAVAILABLE`.
    pub(crate) async fn watch(&self, cursor: &str) -> Result<InboxStream, Status> {
        let slot = self
            .inner
            .inbox_streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| status::too_many_inbox_streams(self.inner.options.max_inbox_streams))?;
        let after = match parse_cursor(cursor)? {
            // The stream's last sequence now: a cursor like any other, so everything stored
            // after this call is sent, and nothing before it.
            Cursor::Now => self
                .inner
                .bus
                .last_sequence()
                .await
                .map_err(|err| status::read(&err))?,
            Cursor::After(seq) => seq,
        };
        let items = self
            .inner
            .bus
            .watch(
                &self.inner.verifier,
                subjects::inbox(&self.inner.agency),
                after,
            )
            .await
            .map_err(|err| status::read(&err))?;
        let adapter = self.clone();
        let idle = self.inner.options.inbox_idle_timeout;
        let stream = tokio_stream::StreamExt::timeout(items, idle).map(move |item| match item {
            Ok(Ok(item)) => Ok(v1::WatchInboxResponse {
                item: Some(adapter.inbox_item(item)),
            }),
            Ok(Err(err)) => Err(status::read(&err)),
            Err(_elapsed) => Err(status::inbox_idle(idle)),
        });
        Ok(until_stopping(
            Box::pin(stream),
            self.inner.stopping.subscribe(),
            slot,
        ))
    }

    fn inbox_item(&self, item: Item) -> v1::InboxItem {
        let cursor = item.seq().to_string();
        let item = match item {
            Item::Event(stored) => {
                v1::inbox_item::Item::Event(self.event_view(&stored.record.event))
            }
            Item::Notice(stored) => {
                v1::inbox_item::Item::Notice(convert::notice_view(&stored.record))
            }
            Item::Integrity(stored) => v1::inbox_item::Item::IntegrityNotice(
                convert::integrity_notice_view(&stored.record),
            ),
        };
        v1::InboxItem {
            cursor,
            item: Some(item),
        }
    }
}

/// `items` until the adapter stops, then `UNAVAILABLE` and the end: an inbox stream never ends
/// by itself, and the server's graceful shutdown would wait for it for ever. The stream also
/// ends after its first error (a bus failure, the idle timeout). `slot` is held while the
/// stream is open, and given back before its last status is sent: a client that saw its
/// stream end can open another at once.
fn until_stopping(
    items: InboxStream,
    stopping: tokio::sync::watch::Receiver<bool>,
    slot: OwnedSemaphorePermit,
) -> InboxStream {
    Box::pin(futures::stream::unfold(
        Some((items, stopping, slot)),
        |open| async move {
            let (mut items, mut stopping, slot) = open?;
            let next = tokio::select! {
                // Stopping first: a stream opened during the shutdown ends at once.
                biased;
                _ = stopping.wait_for(|stop| *stop) => None,
                item = items.next() => Some(item),
            };
            match next {
                None => Some((Err(status::shutting_down()), None)),
                Some(Some(Ok(item))) => Some((Ok(item), Some((items, stopping, slot)))),
                // The last item: everything the stream holds (its consumer, its slot) goes now.
                Some(Some(Err(status))) => Some((Err(status), None)),
                Some(None) => None,
            }
        },
    ))
}

/// Where a client asks its inbox to start.
enum Cursor {
    /// After this stream sequence (0: from the beginning).
    After(u64),
    /// After whatever is stored when the call is made.
    Now,
}

/// The cursor that starts an inbox at the current end of the stream, for a client that wants
/// no history.
const CURSOR_NOW: &str = "now";

/// A cursor is the stream sequence of the last item the client saw; empty for the beginning,
/// [`CURSOR_NOW`] for the end.
fn parse_cursor(cursor: &str) -> Result<Cursor, Status> {
    if cursor.is_empty() {
        return Ok(Cursor::After(0));
    }
    if cursor == CURSOR_NOW {
        return Ok(Cursor::Now);
    }
    cursor.parse().map(Cursor::After).map_err(|_| {
        status::field(&FieldError::new(
            "cursor",
            format!(
                "`{cursor}` is not a cursor this adapter gave; send the cursor of the last item received, none to start from the beginning, or `{CURSOR_NOW}` to start from now"
            ),
        ))
    })
}

type PageKey = (Timestamp, ReferralId);

fn page_key(state: &Referral) -> PageKey {
    (state.created_at, state.id)
}

/// A short digest of the query's filters (not its page size, which may change between pages):
/// FNV-1a over a canonical text, stable across adapters and restarts. It only tells a token's
/// filters apart, it protects nothing (the filters are applied to every page anyway).
fn filters_digest(query: &ListQuery) -> String {
    let mut statuses: Vec<String> = query.statuses.iter().map(ToString::to_string).collect();
    // The statuses are a set: their order does not change the list.
    statuses.sort();
    statuses.dedup();
    let millis = |at: Option<Timestamp>| at.map(|at| at.as_millis().to_string());
    let text = format!(
        "side={:?}|statuses={}|service={}|after={}|before={}|case={}",
        query.side,
        statuses.join(","),
        query
            .service
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        millis(query.created_after).unwrap_or_default(),
        millis(query.created_before).unwrap_or_default(),
        query
            .case_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    );
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

fn page_token((created_at, id): PageKey, filters: &str) -> String {
    BASE64URL_NOPAD.encode(format!("{}:{id}:{filters}", created_at.as_millis()).as_bytes())
}

fn parse_page_token(token: &str, filters: &str) -> Result<PageKey, Status> {
    let invalid = || {
        status::field(&FieldError::new(
            "page_token",
            "not a token this adapter gave; start from the first page",
        ))
    };
    let text = BASE64URL_NOPAD
        .decode(token.as_bytes())
        .map_err(|_| invalid())?;
    let text = String::from_utf8(text).map_err(|_| invalid())?;
    let mut parts = text.splitn(3, ':');
    let (Some(millis), Some(id), Some(given_for)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let millis = millis.parse().map_err(|_| invalid())?;
    let id = ReferralId::parse(id).map_err(|_| invalid())?;
    if given_for != filters {
        return Err(status::field(&FieldError::new(
            "page_token",
            "it was given for other filters; start from the first page",
        )));
    }
    Ok((Timestamp::from_millis(millis), id))
}
