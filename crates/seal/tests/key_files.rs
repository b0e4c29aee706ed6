//! Secret key files: written for the owner only, never overwritten, read back whole.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use refbus_core::AgencyId;
use refbus_seal::{KeyError, KeyFileError, KeyPair, SecretKey, secret_key_file_name};

#[test]
fn a_secret_key_file_is_private_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let agency = AgencyId::new("maros-dinsos").unwrap();
    let path = dir.path().join(secret_key_file_name(&agency));
    assert!(path.ends_with("maros-dinsos.key"));

    let pair = KeyPair::generate();
    pair.write_secret(&path).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text, format!("{}\n", pair.secret().to_base64().as_str()));

    let secret = SecretKey::from_file(&path).unwrap();
    assert_eq!(secret.public_key(), pair.public());
}

#[test]
fn an_existing_file_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("maros-dinsos.key");
    let first = KeyPair::generate();
    first.write_secret(&path).unwrap();

    let error = KeyPair::generate().write_secret(&path).unwrap_err();
    assert!(
        matches!(&error, KeyFileError::AlreadyExists { path: reported } if reported == &path),
        "{error}"
    );
    assert!(error.to_string().contains("never overwrites"), "{error}");
    assert_eq!(
        SecretKey::from_file(&path).unwrap().public_key(),
        first.public()
    );
}

#[test]
fn unreadable_or_wrong_files_say_why() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing.key");
    assert!(matches!(
        SecretKey::from_file(&missing),
        Err(KeyFileError::Read { .. })
    ));

    let public_instead = dir.path().join("public.key");
    write_private(&public_instead, "definitely not base64\n");
    assert!(matches!(
        SecretKey::from_file(&public_instead),
        Err(KeyFileError::Invalid {
            source: KeyError::NotBase64 { .. },
            ..
        })
    ));

    let short = dir.path().join("short.key");
    write_private(&short, "AAAA\n");
    let error = SecretKey::from_file(&short).unwrap_err();
    assert!(
        matches!(
            &error,
            KeyFileError::Invalid {
                source: KeyError::WrongLength { found: 3, .. },
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("short.key"), "{error}");

    let huge = dir.path().join("huge.key");
    write_private(&huge, &"A".repeat(1 << 20));
    assert!(matches!(
        SecretKey::from_file(&huge),
        Err(KeyFileError::TooLarge { .. })
    ));

    let no_dir = dir.path().join("no-such-dir").join("x.key");
    assert!(matches!(
        KeyPair::generate().write_secret(&no_dir),
        Err(KeyFileError::Write { .. })
    ));
}

/// Writes `text` to `path` readable by its owner only, as a key file must be.
fn write_private(path: &std::path::Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn a_key_file_others_may_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("maros-dinsos.key");
    KeyPair::generate().write_secret(&path).unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660, 0o700 | 0o004] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let error = SecretKey::from_file(&path).unwrap_err();
        assert!(
            matches!(&error, KeyFileError::Exposed { mode: found, .. } if *found == mode),
            "mode {mode:o}: {error}"
        );
        let message = error.to_string();
        assert!(message.contains("chmod 600"), "{message}");
        assert!(message.contains("maros-dinsos.key"), "{message}");
    }
    // Signing keys are read the same way.
    let signing = dir.path().join("maros-dinsos.sign.key");
    let signer = refbus_core::signature::Signer::Agency(AgencyId::new("maros-dinsos").unwrap());
    refbus_seal::signing::write_new_signing_key(&signing, signer.clone()).unwrap();
    fs::set_permissions(&signing, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        refbus_seal::signing::read_signing_key(&signing, signer.clone()),
        Err(KeyFileError::Exposed { .. })
    ));
    fs::set_permissions(&signing, fs::Permissions::from_mode(0o400)).unwrap();
    assert!(refbus_seal::signing::read_signing_key(&signing, signer).is_ok());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(SecretKey::from_file(&path).is_ok());
}
