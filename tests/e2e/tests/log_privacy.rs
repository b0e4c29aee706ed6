//! Identity and note plaintext never reach a log line or a `{:?}`: a run through the adapters
//! with every log of every crate captured at TRACE (creates, a refused create, notes, gets,
//! lists, an inbox), then the captured bytes are searched for each plaintext value.
//!
//! The subscriber is global (the adapters' tasks, tonic's and async-nats's run on any thread),
//! so this file is its own test binary.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use futures::StreamExt;
use refbus_e2e::{System, create_request, identity};
use refbus_proto::v1;
use tonic::Code;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Everything logged in this test binary.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("a test thread panicked while logging"))?
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

/// Captures every event and span (with their fields) of every crate, at every level.
fn capture() -> Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            tracing_subscriber::fmt()
                .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
                .with_span_events(FmtSpan::NEW | FmtSpan::CLOSE)
                .with_ansi(false)
                .with_writer(captured.clone())
                .init();
            captured
        })
        .clone()
}

/// A birth date that is not a date: refused, and never echoed.
const MALFORMED_BIRTH_DATE: &str = "1999-02-31";
const NOTE: &str = "Pelaku masih tinggal serumah dengan korban";

/// Every plaintext value of the run: identity fields, notes.
fn secrets() -> Vec<String> {
    let person = identity("Siti Contoh Korban");
    let creation = create_request("x", "maros-uptd-ppa", "shelter");
    vec![
        person.full_name,
        person.nik,
        person.birth_date,
        person.address,
        person.phone,
        person.narrative,
        person.guardian_name,
        creation.note,
        NOTE.to_owned(),
        MALFORMED_BIRTH_DATE.to_owned(),
    ]
}

fn assert_holds_no_secret(what: &str, text: &[u8], secrets: &[String]) {
    for secret in secrets {
        assert!(
            !text
                .windows(secret.len())
                .any(|window| window == secret.as_bytes()),
            "{what} shows `{secret}`"
        );
    }
}

#[tokio::test]
async fn no_log_line_of_a_run_holds_identity_or_note_plaintext() {
    let captured = capture();
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let uptd = system.agency("maros-uptd-ppa").await;

    let id = dinsos
        .create(create_request("log-1", "maros-uptd-ppa", "shelter"))
        .await;
    dinsos
        .client()
        .add_note(dinsos.request(v1::AddNoteRequest {
            request_id: "log-note".into(),
            referral_id: id.clone(),
            note: NOTE.into(),
            sealed_note: None,
        }))
        .await
        .unwrap();

    let mut malformed = create_request("log-2", "maros-uptd-ppa", "shelter");
    if let Some(v1::create_referral_request::Person::Identity(person)) = &mut malformed.person {
        person.birth_date = MALFORMED_BIRTH_DATE.into();
    }
    let refused = dinsos
        .client()
        .create_referral(dinsos.request(malformed))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().starts_with("identity.birth_date: "),
        "the refusal names the field: {}",
        refused.message()
    );
    assert!(
        !refused.message().contains(MALFORMED_BIRTH_DATE),
        "the refusal echoes the value: {}",
        refused.message()
    );

    for system in [&dinsos, &uptd] {
        let got = system
            .client()
            .get_referral(system.request(v1::GetReferralRequest {
                referral_id: id.clone(),
            }))
            .await
            .unwrap()
            .into_inner()
            .referral
            .unwrap();
        // The plaintext was really there to leak: the parties see it.
        assert_eq!(got.identity.unwrap().full_name, "Siti Contoh Korban");
        let listed = system
            .client()
            .list_referrals(system.request(v1::ListReferralsRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.referrals.len(), 1);
    }
    let items: Vec<_> = uptd
        .client()
        .watch_inbox(uptd.request(v1::WatchInboxRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .take(2)
        .map(|item| item.unwrap())
        .collect()
        .await;
    assert_eq!(items.len(), 2, "the creation and the note");

    // Stop the adapters, so that what they log on the way out is captured too.
    let agencies: Vec<_> = system.adapters.keys().cloned().collect();
    for agency in agencies {
        system.stop_adapter(&agency).await;
    }

    let logged = captured.bytes();
    let text = String::from_utf8_lossy(&logged);
    // The capture works: the adapter's own lines are in it (the refusal names the field).
    assert!(text.contains("identity.birth_date"), "nothing captured");
    assert!(text.contains("refbus_adapter"), "nothing captured");
    assert_holds_no_secret("the log", &logged, &secrets());
}

#[tokio::test]
async fn debug_output_of_requests_answers_and_records_holds_no_identity() {
    let secrets = secrets();
    // Identity: every field of an identity is hidden by its Debug. (Notes are plain strings
    // in the generated request types and show in their Debug; no log line prints a request,
    // which the test above checks at TRACE.)
    let identity_values = &secrets[..7];
    let request = create_request("debug-1", "maros-uptd-ppa", "shelter");
    assert_holds_no_secret(
        "a CreateReferralRequest's Debug",
        format!("{request:?}").as_bytes(),
        identity_values,
    );

    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let created = dinsos
        .client()
        .create_referral(dinsos.request(request))
        .await
        .unwrap();
    assert_holds_no_secret(
        "a CreateReferralResponse's Debug",
        format!("{created:?}").as_bytes(),
        identity_values,
    );

    // The core's types hold identity and notes sealed only: nothing in them is plaintext.
    let bus = system.bus().await;
    let id = created.into_inner().referral.unwrap().referral_id;
    let pattern =
        refbus_bus::subjects::referral_pattern(&refbus_core::ReferralId::parse(&id).unwrap());
    let subject = bus.last_subject(&pattern).await.unwrap().unwrap();
    let creation = bus
        .checked_creation(&system.verifier(), &subject)
        .await
        .unwrap()
        .unwrap();
    assert!(creation.record.state.creation.identity.is_some());
    assert_holds_no_secret(
        "a stored creation's Debug",
        format!("{creation:?}").as_bytes(),
        &secrets,
    );
    assert_holds_no_secret(
        "a referral state's Debug",
        format!("{:?}", creation.record.state).as_bytes(),
        &secrets,
    );
}
