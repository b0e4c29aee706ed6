//! Message headers: CloudEvents binary mode (`ce-*`), W3C trace context, and refbus's own.
//!
//! CloudEvents' NATS binding (binary mode, spec main branch) maps each context attribute to a
//! header `ce-<attribute>` with percent-encoded values; the payload is the event data. Any
//! CloudEvents-aware consumer can route refbus events without parsing them.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};
use refbus_core::{Actor, Event};

/// The stream sequence of the previous event of the same referral (0 for the first). Lets a
/// reader fetch the state an event was decided on with one direct read.
pub const PREV_SEQ: &str = "Refbus-Prev-Seq";
/// What a message is: `event` or `notice`.
pub const KIND: &str = "Refbus-Kind";
/// JetStream's optimistic concurrency check, set by every refbus writer: the server stores the
/// message only if the last message on its subject is at this stream sequence (0: none). It
/// stays on the stored message, so it is JetStream's own proof of what the message followed.
pub const EXPECTED_LAST_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
/// Makes JetStream run that check on another subject (nats-server 2.11 and later): a message
/// carrying it proves nothing about its own subject.
pub const EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";

/// The stream sequence JetStream verified was the last on a stored message's own subject when it
/// stored the message, from its headers (`header` looks one up by name); `None` if its writer
/// asked for no such check, or for one on another subject.
///
/// A writer sets the header, but JetStream refuses a message whose claim is false: a message
/// with `Some(n)` was stored when `n` was the last on its subject, so nothing lies between them.
/// This is how a reader of a referral's last record knows that record directly follows the one
/// it names as its predecessor (a creation: that it was the first on its subject).
pub fn stored_after<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<u64> {
    if header(EXPECTED_LAST_SUBJECT_SEQ_SUBJECT).is_some() {
        return None;
    }
    header(EXPECTED_LAST_SUBJECT_SEQ)?.trim().parse().ok()
}

/// [`stored_after`] of a message's header map.
pub fn stored_after_in(headers: Option<&HeaderMap>) -> Option<u64> {
    let headers = headers?;
    stored_after(|name| headers.get(name).map(|value| value.as_str()))
}

/// The `Nats-Msg-Id` a message was stored under, if any.
pub fn message_id_in(headers: Option<&HeaderMap>) -> Option<String> {
    headers?
        .get(async_nats::header::NATS_MESSAGE_ID)
        .map(|value| value.as_str().to_owned())
}

/// The CloudEvents `type` of an event.
pub fn event_type(event: &Event) -> String {
    change_type(event.change.kind())
}

/// The CloudEvents `type` of events of one kind of change (`reroute_requested`); its `.v<n>`
/// suffix is the record's format (`refbus_core::format`).
pub fn change_type(kind: &str) -> String {
    format!(
        "org.refbus.referral.{kind}.v{}",
        refbus_core::format::RecordKind::Event.written()
    )
}

/// Whether a CloudEvents `type` says a record of this kind of change, of any format: a reader
/// that skips other kinds by their type must not skip a format it does not know in silence
/// (it reads it, and the record check refuses it loudly).
pub fn is_change_type(value: &str, kind: &str) -> bool {
    value
        .strip_prefix("org.refbus.referral.")
        .and_then(|rest| rest.strip_prefix(kind))
        .and_then(|rest| rest.strip_prefix(".v"))
        .is_some_and(|version| !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()))
}

/// The CloudEvents `source`: who wrote the event.
pub fn event_source(event: &Event) -> String {
    match &event.actor {
        Actor::Agency { agency, .. } => format!("/refbus/agencies/{agency}"),
        Actor::Router => "/refbus/router".to_owned(),
    }
}

/// Adds the CloudEvents binary-mode headers for `event`.
pub fn insert_cloudevent(headers: &mut HeaderMap, event: &Event) {
    let attributes = [
        ("ce-specversion", "1.0".to_owned()),
        ("ce-id", event.id()),
        ("ce-source", event_source(event)),
        ("ce-type", event_type(event)),
        ("ce-subject", event.referral_id.to_string()),
        ("ce-time", event.at.to_rfc3339()),
        ("ce-datacontenttype", "application/json".to_owned()),
        ("ce-refbuscaseid", event.case_id.to_string()),
        ("ce-refbusseq", event.seq.to_string()),
    ];
    for (name, value) in attributes {
        headers.insert(name, percent_encode(&value).as_str());
    }
}

/// Percent-encodes a header value as the CloudEvents NATS binding requires: space, `"`, `%`
/// and every byte outside printable ASCII become `%XY`.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if (0x21..=0x7e).contains(&byte) && byte != b'"' && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Reverses [`percent_encode`]; invalid escapes are kept as written.
pub fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                index += 3;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A CloudEvents attribute of a received message, decoded.
pub fn cloudevent_attribute(headers: &HeaderMap, attribute: &str) -> Option<String> {
    headers
        .get(format!("ce-{attribute}").as_str())
        .map(|value| percent_decode(value.as_str()))
}

// === trace context ===

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Writes the current span's W3C trace context (`traceparent`, `tracestate`) into `headers`,
/// through the globally installed propagator (none installed: nothing written).
pub fn inject_trace_context(headers: &mut HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
}

/// The trace context a message was published in, for a consumer span to link or parent to.
pub fn extract_trace_context(headers: &HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_expected_sequence_checked_on_the_messages_own_subject_proves_what_it_follows() {
        let lookup = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| *value)
            }
        };
        assert_eq!(
            stored_after(lookup(&[(EXPECTED_LAST_SUBJECT_SEQ, "0")])),
            Some(0)
        );
        assert_eq!(
            stored_after(lookup(&[(EXPECTED_LAST_SUBJECT_SEQ, "42")])),
            Some(42)
        );
        assert_eq!(stored_after(lookup(&[])), None);
        assert_eq!(
            stored_after(lookup(&[(EXPECTED_LAST_SUBJECT_SEQ, "x")])),
            None
        );
        // Checked against another subject: it says nothing about this one.
        assert_eq!(
            stored_after(lookup(&[
                (EXPECTED_LAST_SUBJECT_SEQ, "0"),
                (EXPECTED_LAST_SUBJECT_SEQ_SUBJECT, "refbus.v1.ref.a.b.empty"),
            ])),
            None
        );
        assert_eq!(stored_after_in(None), None);
    }

    #[test]
    fn a_change_type_of_any_format_is_the_kind_it_names() {
        assert!(is_change_type(
            &change_type("reroute_requested"),
            "reroute_requested"
        ));
        assert!(is_change_type(
            "org.refbus.referral.reroute_requested.v2",
            "reroute_requested"
        ));
        assert!(!is_change_type(
            "org.refbus.referral.accepted.v1",
            "reroute_requested"
        ));
        assert!(!is_change_type(
            "org.refbus.referral.reroute_requested.v",
            "reroute_requested"
        ));
        assert!(!is_change_type(
            "org.refbus.referral.reroute_requested_x.v1",
            "reroute_requested"
        ));
    }

    #[test]
    fn percent_encoding_follows_the_binding() {
        assert_eq!(percent_encode("/refbus/router"), "/refbus/router");
        assert_eq!(percent_encode("a b\"%é"), "a%20b%22%25%C3%A9");
        assert_eq!(percent_decode("a%20b%22%25%C3%A9"), "a b\"%é");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
