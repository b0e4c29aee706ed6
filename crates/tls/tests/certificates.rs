//! Certificates made by `certs` and judged by the `ClientAuthority`: who is authenticated, who
//! is not and why, and the files' modes.

use refbus_tls::certs::{Ca, Issued, Validity, self_signed_client};
use refbus_tls::{ClientAuthority, Expiry, Refusal, SystemIdentity, expiry};
use rustls::pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;

fn der(issued: &Issued) -> Vec<CertificateDer<'static>> {
    refbus_tls::certs::certificates_from_pem(&issued.certificate_pem).unwrap()
}

fn ca_der(ca: &Ca) -> Vec<u8> {
    refbus_tls::certs::certificates_from_pem(ca.certificate_pem()).unwrap()[0].to_vec()
}

#[test]
fn each_agency_trusts_its_own_cas_and_each_refusal_says_why() {
    let now = OffsetDateTime::now_utc();
    let year = Validity::days_from(now, 365);
    let dinsos_ca = Ca::generate("dinsos CA", year).unwrap();
    let rsud_ca = Ca::generate("rsud CA", year).unwrap();
    let dinsos = [ca_der(&dinsos_ca)];
    let rsud = [ca_der(&rsud_ca)];
    let authority = ClientAuthority::new([("dinsos", &dinsos[..]), ("rsud", &rsud[..])]).unwrap();
    let at = UnixTime::now();
    let sikasus = SystemIdentity::new("dinsos", "sikasus");

    let valid = dinsos_ca.issue_client(&sikasus, year).unwrap();
    assert_eq!(
        authority.authenticate(Some(&der(&valid)), at).unwrap().0,
        sikasus
    );
    let other = rsud_ca
        .issue_client(&SystemIdentity::new("rsud", "simrs"), year)
        .unwrap();
    assert_eq!(
        authority.authenticate(Some(&der(&other)), at).unwrap().0,
        SystemIdentity::new("rsud", "simrs"),
        "valid for its own agency: the adapter decides it is not its agency"
    );
    assert_eq!(
        authority.authenticate(None, at),
        Err(Refusal::NoCertificate)
    );
    assert_eq!(
        authority.authenticate(Some(&[]), at),
        Err(Refusal::NoCertificate)
    );

    let expired = dinsos_ca
        .issue_client(
            &sikasus,
            Validity {
                not_before: now - time::Duration::days(60),
                not_after: now - time::Duration::days(1),
            },
        )
        .unwrap();
    let refused = authority
        .authenticate(Some(&der(&expired)), at)
        .unwrap_err();
    assert!(refused.to_string().contains("expired"), "{refused}");

    let forged = self_signed_client(&sikasus, year).unwrap();
    let refused = authority.authenticate(Some(&der(&forged)), at).unwrap_err();
    assert!(
        matches!(&refused, Refusal::Invalid { identity, .. } if identity == &sikasus),
        "{refused}"
    );

    // rsud's CA cannot vouch for a system of dinsos.
    let crossed = rsud_ca.issue_client(&sikasus, year).unwrap();
    let refused = authority
        .authenticate(Some(&der(&crossed)), at)
        .unwrap_err();
    assert!(
        refused.to_string().contains("not issued by a CA"),
        "{refused}"
    );

    let stranger = dinsos_ca
        .issue_client(&SystemIdentity::new("bpbd", "x"), year)
        .unwrap();
    assert_eq!(
        authority.authenticate(Some(&der(&stranger)), at),
        Err(Refusal::UnknownAgency("bpbd".to_owned()))
    );

    // A server certificate names no system.
    let server = dinsos_ca
        .issue_server(&["localhost".to_owned()], year)
        .unwrap();
    assert!(matches!(
        authority.authenticate(Some(&der(&server)), at),
        Err(Refusal::NoIdentity(_))
    ));
}

#[test]
fn expiry_warns_thirty_days_ahead_and_knows_an_expired_certificate() {
    let now = OffsetDateTime::now_utc();
    let ca = Ca::generate("ca", Validity::days_from(now, 365)).unwrap();
    let end = |days| {
        let issued = ca
            .issue_server(&["localhost".to_owned()], Validity::days_from(now, days))
            .unwrap();
        expiry(&der(&issued)[0], now).unwrap()
    };
    assert!(matches!(end(90), Expiry::Valid { .. }));
    assert!(matches!(end(29), Expiry::EndsSoon { .. }));
    assert!(matches!(end(-1), Expiry::Expired { .. }));
}

#[test]
fn private_keys_are_written_for_their_owner_only_and_refused_otherwise() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    let ca = Ca::generate("ca", Validity::days_from(now, 365)).unwrap();
    let issued = ca
        .issue_client(
            &SystemIdentity::new("dinsos", "sikasus"),
            Validity::days_from(now, 30),
        )
        .unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("c.key"));
    issued.write(&cert, &key).unwrap();
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&cert), 0o644);
    refbus_tls::read_private_key(&key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = refbus_tls::read_private_key(&key).unwrap_err();
    assert!(
        refused.to_string().contains("readable by others"),
        "{refused}"
    );
}
