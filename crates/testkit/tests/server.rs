//! The single-server harness against a real nats-server: JetStream works, crashes keep
//! fsynced data, and the handle cleans up after itself.

use std::error::Error;

use async_nats::jetstream::{self, stream};
use refbus_testkit::NatsServer;

type TestResult = Result<(), Box<dyn Error>>;

fn referral_stream() -> stream::Config {
    stream::Config {
        name: "REFERRALS".to_owned(),
        subjects: vec!["refbus.v1.ref.>".to_owned()],
        ..Default::default()
    }
}

const SUBJECT: &str = "refbus.v1.ref.maros-dp3a.maros-dinsos.r-0001";

#[tokio::test]
async fn stream_round_trip_on_a_fresh_server() -> TestResult {
    let server = NatsServer::start()?;
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    assert!(server.pid().is_some());

    let client = async_nats::connect(server.url()).await?;
    let js = jetstream::new(client);
    let stream = js.create_stream(referral_stream()).await?;

    let first = js.publish(SUBJECT, "created".into()).await?.await?;
    let second = js.publish(SUBJECT, "accepted".into()).await?.await?;
    assert_eq!((first.stream.as_str(), first.sequence), ("REFERRALS", 1));
    assert_eq!(second.sequence, 2);

    let stored = stream.get_raw_message(1).await?;
    assert_eq!(stored.subject.as_str(), SUBJECT);
    assert_eq!(stored.payload.as_ref(), b"created");
    Ok(())
}

#[tokio::test]
async fn acknowledged_message_survives_a_crash_with_sync_always() -> TestResult {
    let mut server = NatsServer::builder().sync_always(true).start()?;
    let varz: serde_json::Value = serde_json::from_str(&server.monitor("/varz")?)?;
    assert_eq!(varz["jetstream"]["config"]["sync_always"], true);

    let client = async_nats::connect(server.url()).await?;
    let js = jetstream::new(client);
    js.create_stream(referral_stream()).await?;
    let ack = js.publish(SUBJECT, "created".into()).await?.await?;
    assert_eq!(ack.sequence, 1);
    drop(js);

    let port = server.port();
    let first_pid = server.pid();
    server.kill()?;
    assert_eq!(server.pid(), None);
    server.restart()?;
    assert_eq!(server.port(), port, "a restart keeps the port clients know");
    assert_ne!(server.pid(), first_pid);

    let js = jetstream::new(async_nats::connect(server.url()).await?);
    let mut stream = js.get_stream("REFERRALS").await?;
    assert_eq!(stream.info().await?.state.messages, 1);
    let stored = stream.get_raw_message(1).await?;
    assert_eq!(stored.payload.as_ref(), b"created");

    let next = js.publish(SUBJECT, "accepted".into()).await?.await?;
    assert_eq!(next.sequence, 2, "the stream continues where it was");
    Ok(())
}

#[tokio::test]
async fn supplied_store_dir_is_kept_for_the_next_server() -> TestResult {
    let store = tempfile::tempdir()?;
    {
        let server = NatsServer::builder()
            .store_dir(store.path())
            .sync_always(true)
            .start()?;
        assert_eq!(server.store_dir(), store.path());
        let js = jetstream::new(async_nats::connect(server.url()).await?);
        js.create_stream(referral_stream()).await?;
        js.publish(SUBJECT, "created".into()).await?.await?;
    }
    assert!(store.path().join("jetstream").is_dir());

    let server = NatsServer::builder().store_dir(store.path()).start()?;
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    let mut stream = js.get_stream("REFERRALS").await?;
    assert_eq!(stream.info().await?.state.messages, 1);
    Ok(())
}

#[test]
fn drop_kills_the_process_and_removes_the_temporary_store() -> TestResult {
    let server = NatsServer::start()?;
    let store = server.store_dir().to_path_buf();
    let monitor = server.monitor_url();
    assert!(store.is_dir());
    assert!(
        server
            .log()
            .iter()
            .any(|line| line.contains("Server is ready"))
    );
    drop(server);

    assert!(!store.exists(), "{} is left behind", store.display());
    let port: u16 = monitor.rsplit(':').next().unwrap_or_default().parse()?;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server still answers after drop"
    );
    Ok(())
}

#[test]
fn a_bad_configuration_fails_with_the_server_log() {
    let result = NatsServer::builder()
        .extra_config("this is { not a valid")
        .start();
    let Err(error) = result else {
        panic!("a server with a broken configuration started");
    };
    let message = error.to_string();
    assert!(message.contains("exited"), "{message}");
}

#[tokio::test]
async fn included_files_sit_next_to_the_configuration_and_survive_a_restart() -> TestResult {
    // Two levels, as a deployment writes them: the main file includes the users, which
    // include the secret they reference (variables do not cross an include).
    let mut server = NatsServer::builder()
        .config_file("secrets.conf", "SECRET: \"s3cret\"\n")
        .config_file(
            "users.conf",
            "include \"secrets.conf\"\n\
             authorization { users = [ { user: \"reader\", password: $SECRET } ] }\n",
        )
        .extra_config("include \"users.conf\"")
        .start()?;
    let refused = async_nats::connect(server.url()).await;
    assert!(refused.is_err(), "a client without the password got in");
    let options =
        || async_nats::ConnectOptions::with_user_and_password("reader".into(), "s3cret".into());
    options().connect(server.url()).await?.flush().await?;

    server.restart()?;
    options().connect(server.url()).await?.flush().await?;
    Ok(())
}
