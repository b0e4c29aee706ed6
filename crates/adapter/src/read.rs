//! The read path: one referral, a filtered list, and the agency's inbox as a live stream.

use std::pin::Pin;

use data_encoding::BASE64URL_NOPAD;
use futures::{Stream, StreamExt};
use refbus_bus::{Item, subjects};
use refbus_core::clock::ClockView;
use refbus_core::referral::Party;
use refbus_core::{AgencyId, Event, Referral, ReferralId, Timestamp};
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

    /// The receipt of event `event_seq` of a referral this agency sent or received: the
    /// notary's inclusion proof of its stored message (asked over the bus), with the message.
    /// An agency only notified of the referral is answered as if it did not exist.
    pub(crate) async fn receipt(
        &self,
        id: &ReferralId,
        event_seq: u64,
    ) -> Result<v1::GetReceiptResponse, Status> {
        let Some(Loaded {
            stored,
            access: Access::Party,
        }) = self.load(id).await?
        else {
            return Err(status::not_found(&id.to_string()));
        };
        let bus = &self.inner.bus;
        let history = bus
            .raw_history(&stored.subject)
            .await
            .map_err(|err| status::read(&err))?;
        // The stored message of that event: the first on the referral's subject that decodes
        // as a record of it (a look-alike written later is not the event; the record check
        // is the holder's to run on the bytes, docs/AUDIT.md).
        let message = history
            .into_iter()
            .find(|message| {
                refbus_bus::EventRecord::decode(&message.payload).is_ok_and(|record| {
                    record.event.seq == event_seq && record.event.referral_id == *id
                })
            })
            .ok_or_else(|| status::no_such_event(&id.to_string(), event_seq))?;
        match bus.request_log_proof(message.seq).await {
            Ok(refbus_bus::ProofAnswer::Proof(proof)) => Ok(v1::GetReceiptResponse {
                tlog_proof: String::from_utf8_lossy(&proof).into_owned(),
                stream_sequence: message.seq,
                subject: message.subject,
                record: message.payload.to_vec(),
            }),
            Ok(refbus_bus::ProofAnswer::NotYet) => Err(status::receipt_not_yet()),
            Ok(refbus_bus::ProofAnswer::Unknown) => {
                Err(status::no_such_event(&id.to_string(), event_seq))
            }
            Err(_) => Err(status::no_notary()),
        }
    }

    /// Referrals this agency sent or received, newest first, a page at a time, in bounded
    /// work: the referrals are read from the creation index (see `refbus_bus::index`), each
    /// through the record check, and a call examines at most [`LIST_SCAN_LIMIT`] of them, so a
    /// page filtered down to few matches may hold fewer than `page_size` referrals (even none)
    /// and still give a token for the next. The page token holds each index chain's position,
    /// so new referrals never shift later pages, and the filters it was given for: with other
    /// filters it would silently skip or repeat referrals, so it is refused.
    pub(crate) async fn list(
        &self,
        query: &ListQuery,
    ) -> Result<v1::ListReferralsResponse, Status> {
        let agency = &self.inner.agency;
        let pairs = self.index_pairs(query.side);
        let given_for = filters_digest(query, &pairs);
        let positions = query
            .page_token
            .as_deref()
            .map(|token| parse_page_token(token, &given_for, pairs.len()))
            .transpose()?;
        let read = |err: refbus_bus::ReadError| status::read(&err);
        let mut listing = self
            .inner
            .bus
            .listing(&self.inner.verifier, pairs, positions);
        let mut page: Vec<Referral> = Vec::new();
        let mut shown = std::collections::HashSet::new();
        let mut scanned = 0;
        while page.len() < query.page_size && scanned < LIST_SCAN_LIMIT {
            let Some(listed) = listing.next().await.map_err(read)? else {
                break;
            };
            scanned += 1;
            let Some(stored) = listed.stored else {
                continue;
            };
            let state = stored.record.state;
            // An entry written twice (a create retried after the duplicate window) is shown once.
            if query.matches(&state, agency) && shown.insert(state.id) {
                page.push(state);
            }
        }
        let next_page_token = if listing.has_more().await.map_err(read)? {
            page_token(&listing.positions(), &given_for)
        } else {
            String::new()
        };
        Ok(v1::ListReferralsResponse {
            referrals: page.iter().map(|state| self.view(state)).collect(),
            next_page_token,
        })
    }

    /// The index chains (recipient, sender) an agency's listing reads for `side`: one per other
    /// agency of the registry and direction, in a fixed order (the registry's), so a page
    /// token's positions mean the same to every adapter of the agency.
    fn index_pairs(&self, side: Option<Party>) -> Vec<(AgencyId, AgencyId)> {
        let agency = &self.inner.agency;
        let others = self
            .inner
            .registry
            .agencies
            .keys()
            .filter(|other| *other != agency);
        let mut pairs = Vec::new();
        if side != Some(Party::Sender) {
            pairs.extend(others.clone().map(|other| (agency.clone(), other.clone())));
        }
        if side != Some(Party::Recipient) {
            pairs.extend(others.map(|other| (other.clone(), agency.clone())));
        }
        pairs
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
            .watch_traced(
                &self.inner.verifier,
                subjects::inbox(&self.inner.agency),
                after,
            )
            .await
            .map_err(|err| status::read(&err))?;
        let adapter = self.clone();
        let idle = self.inner.options.inbox_idle_timeout;
        let stream = tokio_stream::StreamExt::timeout(items, idle).map(move |item| match item {
            Ok(Ok((item, trace))) => Ok(v1::WatchInboxResponse {
                item: Some(
                    crate::trace::delivery(trace, &item).in_scope(|| adapter.inbox_item(item)),
                ),
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

/// The most referrals one ListReferrals call examines (reads and checks): the bound on its
/// work, whatever the agency's number of referrals and however narrow its filters.
pub(crate) const LIST_SCAN_LIMIT: usize = 500;

/// A short digest of the query's filters (not its page size, which may change between pages)
/// and of the index chains they read: FNV-1a over a canonical text, stable across adapters and
/// restarts. It only tells a token's
/// filters apart, it protects nothing (the filters are applied to every page anyway).
fn filters_digest(query: &ListQuery, pairs: &[(AgencyId, AgencyId)]) -> String {
    let mut statuses: Vec<String> = query.statuses.iter().map(ToString::to_string).collect();
    // The statuses are a set: their order does not change the list.
    statuses.sort();
    statuses.dedup();
    let millis = |at: Option<Timestamp>| at.map(|at| at.as_millis().to_string());
    let chains: Vec<String> = pairs
        .iter()
        .map(|(recipient, sender)| format!("{recipient}>{sender}"))
        .collect();
    let text = format!(
        "side={:?}|statuses={}|service={}|after={}|before={}|case={}|chains={}",
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
        chains.join(","),
    );
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

fn page_token(positions: &[u64], filters: &str) -> String {
    let positions: Vec<String> = positions.iter().map(ToString::to_string).collect();
    BASE64URL_NOPAD.encode(format!("{}:{filters}", positions.join(",")).as_bytes())
}

/// The index positions a token holds, provided it was given for these filters and chains.
fn parse_page_token(token: &str, filters: &str, chains: usize) -> Result<Vec<u64>, Status> {
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
    let (positions, given_for) = text.split_once(':').ok_or_else(invalid)?;
    let positions = positions
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|_| invalid())?;
    if given_for != filters {
        return Err(status::field(&FieldError::new(
            "page_token",
            "it was given for other filters; start from the first page",
        )));
    }
    if positions.len() != chains {
        return Err(invalid());
    }
    Ok(positions)
}
