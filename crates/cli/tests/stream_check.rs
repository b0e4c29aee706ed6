//! The events stream as configured, or nothing, through the production commands: a stream an
//! administrator altered so that it would lose events stops every component, each with the
//! same precise message, and none of them changes it or writes to it.
//!
//! The adapters learn of it from the router: an adapter's NATS user may not ask for the
//! stream's information, since that answer can list every subject, that is every referral's
//! parties (docs/ARCHITECTURE.md, "Reads an agency's permissions can confine"). The router
//! stores its signed statement of every check, a refusal included, and `refbus adapter`
//! refuses to start on a statement that lists differences, or on none.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use refbus_bus::{Bus, StreamSettings};
use refbus_testkit::{NatsServer, free_port};

/// Runs `refbus args` in the repository's root with `stdin`, and returns what it did once it
/// ended; a command still running after a minute is killed and fails the test (a component
/// that does not refuse would serve for ever).
fn refbus(args: &[&str], stdin: &str) -> Output {
    use std::io::Write as _;
    let mut child = common::command(args)
        .env("REFBUS_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the refbus binary runs");
    // A refusal may come before the input is read: a closed pipe is not the test's failure.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let pid = child.id();
    let (done, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output().unwrap()));
    match ended.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output,
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("refbus {args:?} still ran after a minute on an altered stream");
        }
    }
}

fn succeeded(output: &Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_altered_to_keep_one_event_per_referral_stops_every_component_that_can_see_it() {
    let nats = NatsServer::start().unwrap();
    let url = nats.url();
    let settings = StreamSettings::default();
    // The stream as refbus makes it, then altered by hand with the administrator's rights: a
    // per-subject limit would keep only each referral's last event.
    drop(Bus::connect(&url, &settings).await.unwrap());
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let mut altered = js
        .get_stream(&settings.name)
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    altered.max_messages_per_subject = 1;
    js.update_stream(altered.clone()).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let keys = path("keys");
    std::fs::create_dir(&keys).unwrap();
    succeeded(&refbus(&["keys", "generate-router", "--out", &keys], ""));
    succeeded(&refbus(
        &[
            "keys",
            "generate-notary",
            "--name",
            "refbus.maros.example/log",
            "--out",
            &path("notary.key"),
        ],
        "",
    ));
    succeeded(&refbus(
        &[
            "dashboard",
            "user",
            "add",
            "--accounts",
            &path("operators.toml"),
            "--username",
            "koordinator",
            "--agency",
            "maros-bappeda",
            "--role",
            "coordinator",
        ],
        "correct horse battery\n",
    ));

    let signing_key = format!("{keys}/router.sign.key");
    let (log, notary_key, accounts) = (path("log"), path("notary.key"), path("operators.toml"));
    let notary_listen = format!("127.0.0.1:{}", free_port());
    let dashboard_listen = format!("127.0.0.1:{}", free_port());
    // An adapter, as an agency deploys it (keys of its own, plaintext on loopback for the
    // test): started before any router has checked the stream, it refuses and says why.
    succeeded(&refbus(
        &[
            "keys",
            "generate",
            "--agency",
            "maros-dinsos",
            "--out",
            &keys,
        ],
        "",
    ));
    let adapter_listen = format!("127.0.0.1:{}", free_port());
    let adapter_key = format!("{keys}/maros-dinsos.key");
    let adapter: Vec<&str> = vec![
        "adapter",
        "--agency",
        "maros-dinsos",
        "--insecure-plaintext",
        "--listen",
        &adapter_listen,
        "--key",
        &adapter_key,
        "--public-keys",
        &keys,
    ];
    let mut first = adapter.clone();
    first.extend(["--nats", &url]);
    let output = refbus(&first, "");
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains("no router has checked the stream REFBUS_EVENTS yet")
            && said.contains("start the router first"),
        "{said}"
    );

    // The router runs first, as in a deployment; the adapter after it, on its statement.
    let components: [(&str, Vec<&str>); 6] = [
        (
            "router",
            vec![
                "router",
                "--signing-key",
                &signing_key,
                "--public-keys",
                &keys,
            ],
        ),
        (
            "notary",
            vec![
                "notary",
                "--dir",
                &log,
                "--key",
                &notary_key,
                "--listen",
                &notary_listen,
            ],
        ),
        (
            "dashboard",
            vec![
                "dashboard",
                "--accounts",
                &accounts,
                "--insecure-plaintext-cookies",
                "--listen",
                &dashboard_listen,
                "--public-keys",
                &keys,
            ],
        ),
        ("audit verify", vec!["audit", "verify"]),
        ("indicators", vec!["indicators", "--public-keys", &keys]),
        ("adapter", adapter),
    ];
    let expected = "max_msgs_per_subject is 1, refbus needs -1 (unlimited: every event of a \
                    referral is kept)";
    for (component, args) in components {
        let mut args = args;
        args.extend(["--nats", &url]);
        let output = refbus(&args, "");
        let said = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{component} must refuse to run:\n{said}"
        );
        assert!(
            said.contains(&settings.name) && said.contains(expected),
            "{component} must name the stream and the difference:\n{said}"
        );
    }

    // The adapter said it on the router's word, which only the router can sign.
    let said = String::from_utf8_lossy(&refbus(&first, "").stderr).into_owned();
    assert!(
        said.contains("the router's check of the stream REFBUS_EVENTS at "),
        "{said}"
    );

    // Nobody "repaired" the stream (that would hide what was done to it), nor wrote to it.
    let mut stream = js.get_stream(&settings.name).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config, altered, "a refused stream is left as it was");
    assert_eq!(info.state.messages, 0, "nothing was written");
}
