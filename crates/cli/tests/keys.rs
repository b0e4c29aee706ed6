//! `refbus keys` as administrators run it: the registry lines it prints carry fingerprints that
//! `config check` verifies, rotation keeps the old key, and a secret key file others may read
//! stops every component at start.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Process, refbus, repo_root, router_start, text};

/// The printed line that starts with `key = `.
fn printed<'t>(output: &'t str, key: &str) -> &'t str {
    output
        .lines()
        .find(|line| line.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no `{key} = ` line in:\n{output}"))
}

/// A copy of the shipped registry in `dir`, with `lines` added to maros-dinsos's table.
fn registry_with(dir: &Path, lines: &str) -> String {
    let deploy = repo_root().join("deploy/config");
    std::fs::copy(deploy.join("refbus.toml"), dir.join("refbus.toml")).unwrap();
    std::fs::create_dir_all(dir.join("holidays")).unwrap();
    std::fs::copy(
        deploy.join("holidays/2026.toml"),
        dir.join("holidays/2026.toml"),
    )
    .unwrap();
    let agencies = std::fs::read_to_string(deploy.join("agencies.toml"))
        .unwrap()
        .replacen(
            "id = \"maros-dinsos\"",
            &format!("id = \"maros-dinsos\"\n{lines}"),
            1,
        );
    std::fs::write(dir.join("agencies.toml"), agencies).unwrap();
    dir.join("refbus.toml").display().to_string()
}

#[test]
fn the_printed_fingerprints_are_verified_by_config_check() {
    let keys = tempfile::tempdir().unwrap();
    let out = keys.path().to_str().unwrap();
    let generated = refbus(&["keys", "generate", "--agency", "maros-dinsos", "--out", out]);
    assert!(generated.status.success(), "{}", text(&generated));
    let generated = text(&generated);
    let backup = refbus(&[
        "keys",
        "generate-backup",
        "--agency",
        "maros-dinsos",
        "--out",
        out,
    ]);
    assert!(backup.status.success(), "{}", text(&backup));
    let backup = text(&backup);
    let lines = [
        printed(&generated, "public_key"),
        printed(&generated, "signing_keys"),
        printed(&backup, "backup_public_key"),
    ]
    .join("\n");

    let dir = tempfile::tempdir().unwrap();
    let main = registry_with(dir.path(), &lines);
    let checked = refbus(&["config", "check", &main]);
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked));

    // The backup key's fingerprint given to the online key: reported where it stands.
    let online = printed(&generated, "public_key");
    let backup_line = printed(&backup, "backup_public_key");
    let backup_fingerprint = backup_line
        .trim_end_matches('"')
        .rsplit(' ')
        .next()
        .unwrap();
    let online_key = online.split('"').nth(1).unwrap().split(' ').next().unwrap();
    let wrong = format!("public_key = \"{online_key} {backup_fingerprint}\"");
    let main = registry_with(dir.path(), &format!("{wrong}\n{backup_line}"));
    let checked = refbus(&["config", "check", &main]);
    assert_eq!(checked.status.code(), Some(1), "{}", text(&checked));
    let report = text(&checked);
    let agencies = dir.path().join("agencies.toml").display().to_string();
    let problem = report
        .lines()
        .find(|line| line.contains("does not match the key"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        problem.starts_with(&format!("{agencies}:181:")),
        "{problem}"
    );
    assert!(problem.contains(backup_fingerprint), "{problem}");
}

#[test]
fn rotation_keeps_the_old_keys_and_an_exposed_key_stops_the_adapter_and_the_router() {
    let keys = tempfile::tempdir().unwrap();
    let dir = keys.path();
    let out = dir.to_str().unwrap();
    assert!(
        refbus(&["keys", "generate", "--agency", "maros-dinsos", "--out", out])
            .status
            .success()
    );
    let old_public = std::fs::read_to_string(dir.join("maros-dinsos.pub")).unwrap();
    let rotated = refbus(&["keys", "rotate", "--agency", "maros-dinsos", "--dir", out]);
    assert!(rotated.status.success(), "{}", text(&rotated));
    let printed_text = text(&rotated);
    let new_public = std::fs::read_to_string(dir.join("maros-dinsos.pub")).unwrap();
    assert_ne!(old_public, new_public);
    assert!(printed(&printed_text, "public_key").contains(new_public.trim()));
    // Two signing keys listed: the new one first, then the old one.
    let signing = printed(&printed_text, "signing_keys");
    assert_eq!(signing.matches('"').count(), 4, "{signing}");
    let mut retired: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".old.key"))
        .collect();
    retired.sort();
    assert_eq!(retired.len(), 2, "{retired:?}");
    assert!(retired[0].starts_with("maros-dinsos.") && !retired[0].contains(".sign."));
    assert!(retired[1].starts_with("maros-dinsos.sign."));
    for name in &retired {
        let mode = std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }

    // A key file others may read: the adapter stops before it connects to anything.
    let key = dir.join("maros-dinsos.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let adapter = refbus(&[
        "adapter",
        "--agency",
        "maros-dinsos",
        "--config",
        "deploy/config/refbus.toml",
        "--key",
        key.to_str().unwrap(),
        "--public-keys",
        out,
        "--nats",
        "nats://127.0.0.1:9",
        "--insecure-plaintext",
    ]);
    assert_eq!(adapter.status.code(), Some(1), "{}", text(&adapter));
    let message = text(&adapter);
    assert!(message.contains("others may read (mode 0644)"), "{message}");
    assert!(message.contains("chmod 600"), "{message}");
    assert!(!message.contains("connecting to NATS"), "{message}");

    // An earlier key others may read stops it too: every key file is checked.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let earlier = dir.join(&retired[0]);
    std::fs::set_permissions(&earlier, std::fs::Permissions::from_mode(0o640)).unwrap();
    let adapter = refbus(&[
        "adapter",
        "--agency",
        "maros-dinsos",
        "--config",
        "deploy/config/refbus.toml",
        "--key",
        key.to_str().unwrap(),
        "--public-keys",
        out,
        "--nats",
        "nats://127.0.0.1:9",
        "--insecure-plaintext",
    ]);
    assert_eq!(adapter.status.code(), Some(1), "{}", text(&adapter));
    assert!(text(&adapter).contains("mode 0640"), "{}", text(&adapter));

    // A signing key the readers do not list (rotated, registry not yet changed): refused too.
    std::fs::set_permissions(&earlier, std::fs::Permissions::from_mode(0o600)).unwrap();
    let old_signing = signing
        .split('"')
        .nth(3)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    std::fs::write(
        dir.join("maros-dinsos.sign.pub"),
        format!("{old_signing}\n"),
    )
    .unwrap();
    let adapter = refbus(&[
        "adapter",
        "--agency",
        "maros-dinsos",
        "--config",
        "deploy/config/refbus.toml",
        "--key",
        key.to_str().unwrap(),
        "--public-keys",
        out,
        "--nats",
        "nats://127.0.0.1:9",
        "--insecure-plaintext",
    ]);
    assert_eq!(adapter.status.code(), Some(1), "{}", text(&adapter));
    assert!(
        text(&adapter).contains("is not among the signing keys listed for agency:maros-dinsos"),
        "{}",
        text(&adapter)
    );

    // The router's signing key likewise.
    assert!(
        refbus(&["keys", "generate-router", "--out", out])
            .status
            .success()
    );
    let router_key = dir.join("router.sign.key");
    std::fs::set_permissions(&router_key, std::fs::Permissions::from_mode(0o604)).unwrap();
    let router = refbus(&[
        "router",
        "--config",
        "deploy/config/refbus.toml",
        "--signing-key",
        router_key.to_str().unwrap(),
        "--nats",
        "nats://127.0.0.1:9",
    ]);
    assert_eq!(router.status.code(), Some(1), "{}", text(&router));
    assert!(text(&router).contains("chmod 600"), "{}", text(&router));
}

/// Starts `refbus adapter` for `agency` with the keys in `keys`; its address once it serves.
fn start_adapter(nats: &str, keys: &Path, agency: &str) -> (Process, String) {
    use std::io::BufRead as _;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut child = common::command(&[
        "adapter",
        "--agency",
        agency,
        "--config",
        "deploy/config/demo.toml",
    ])
    // Plaintext on loopback: this test is about keys, not transport.
    .args([
        "--nats",
        nats,
        "--listen",
        &listen,
        "--insecure-plaintext",
        "--key",
    ])
    .arg(keys.join(format!("{agency}.key")))
    .arg("--public-keys")
    .arg(keys)
    .env("REFBUS_LOG", "info")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the adapter serves");
        if line.contains("adapter serving") {
            break;
        }
    }
    std::thread::spawn(move || for _ in rx {});
    (Process(child), listen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_opens_a_referral_with_the_backup_key_alone() {
    use refbus_proto::v1;
    let nats = refbus_testkit::NatsServer::start().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let out = keys.path().to_str().unwrap();
    for agency in ["maros-dinsos", "maros-uptd-ppa"] {
        assert!(
            refbus(&["keys", "generate", "--agency", agency, "--out", out])
                .status
                .success()
        );
    }
    // UPTD PPA's head made a backup key; its public half sits beside the public keys.
    let offline = tempfile::tempdir().unwrap();
    let backup = refbus(&[
        "keys",
        "generate-backup",
        "--agency",
        "maros-uptd-ppa",
        "--out",
        offline.path().to_str().unwrap(),
    ]);
    assert!(backup.status.success(), "{}", text(&backup));
    std::fs::copy(
        offline.path().join("maros-uptd-ppa.backup.pub"),
        keys.path().join("maros-uptd-ppa.backup.pub"),
    )
    .unwrap();

    // The stream made and checked before the adapters start, as the router's start does in a
    // deployment: an adapter may neither create it nor read its settings.
    router_start::check_stream_as_the_router(&nats.url(), keys.path()).await;
    let (_dinsos_process, dinsos) = start_adapter(&nats.url(), keys.path(), "maros-dinsos");
    let mut client =
        v1::referral_service_client::ReferralServiceClient::connect(format!("http://{dinsos}"))
            .await
            .unwrap();
    let justification = "Korban tidak sadar di RSUD Salewangang malam ini";
    let mut request = tonic::Request::new(v1::CreateReferralRequest {
        request_id: "recover-1".into(),
        recipient: "maros-uptd-ppa".into(),
        case_id: "MRS-REC-1".into(),
        service: "psychological_counselling".into(),
        priority: v1::Priority::Urgent.into(),
        consent: Some(v1::Consent {
            services: false,
            disclose_to_agencies: true,
            override_justification: justification.into(),
            sealed_override_justification: None,
        }),
        person: Some(v1::create_referral_request::Person::Identity(
            v1::ClientIdentity {
                full_name: "Orang Contoh Pemulihan".into(),
                nik: "7309014506900001".into(),
                ..Default::default()
            },
        )),
        note: "Catatan rahasia".into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "x-refbus-operator",
        "operator@maros-dinsos".parse().unwrap(),
    );
    let id = client
        .create_referral(request)
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap()
        .referral_id;

    // The online key is lost: UPTD PPA's administrator recovers with the backup key alone.
    std::fs::remove_file(keys.path().join("maros-uptd-ppa.key")).unwrap();
    let opened = offline.path().join("recovered.jsonl");
    let args = [
        "keys",
        "recover",
        "--agency",
        "maros-uptd-ppa",
        "--backup-key",
        offline
            .path()
            .join("maros-uptd-ppa.backup.key")
            .to_str()
            .unwrap(),
        "--referral",
        &id,
        "--out",
        opened.to_str().unwrap(),
        "--config",
        "deploy/config/demo.toml",
        "--public-keys",
        out,
        "--nats",
        &nats.url(),
    ]
    .map(str::to_owned);
    let recovered = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refbus(&args)
    })
    .await
    .unwrap();
    assert!(recovered.status.success(), "{}", text(&recovered));
    assert!(
        text(&recovered).contains("opened 3 sealed payloads"),
        "{}",
        text(&recovered)
    );
    let mode = std::fs::metadata(&opened).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&opened)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let find = |key: &str| {
        lines
            .iter()
            .find_map(|line| line["opened"].get(key).cloned())
            .unwrap_or_else(|| panic!("no {key} in {lines:?}"))
    };
    assert_eq!(find("identity")["full_name"], "Orang Contoh Pemulihan");
    assert_eq!(find("identity")["nik"], "7309014506900001");
    assert_eq!(find("note"), "Catatan rahasia");
    assert_eq!(find("consent_override_justification"), justification);

    // It never overwrites: a second run with the same output refuses.
    let again = refbus(&[
        "keys",
        "recover",
        "--agency",
        "maros-uptd-ppa",
        "--backup-key",
        offline
            .path()
            .join("maros-uptd-ppa.backup.key")
            .to_str()
            .unwrap(),
        "--referral",
        &id,
        "--out",
        opened.to_str().unwrap(),
        "--config",
        "deploy/config/demo.toml",
        "--nats",
        &nats.url(),
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again).contains("must not exist yet"),
        "{}",
        text(&again)
    );
}
