//! Shared by the notary's tests: a notary started in the background on a system's bus, and
//! the helpers to write events and read its log.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use refbus_bus::Bus;
use refbus_e2e::{System, create_request};
use refbus_notary::note::{KeyKind, NoteKey, notary_verifier};
use refbus_notary::verify::Trust;
use refbus_notary::{Notary, NotaryError, Settings, Stats};

pub const ORIGIN: &str = "refbus.test/log";

/// A notary started in the background, stopped with `stop`.
pub struct Running {
    pub stats: Arc<Stats>,
    pub url: String,
    /// Where its metrics are served.
    pub metrics: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<Result<(), NotaryError>>,
}

impl Running {
    pub async fn stop(self) -> Result<(), NotaryError> {
        let _ = self.stop.send(());
        self.task.await.unwrap()
    }

    /// Waits until a checkpoint covers `size` messages; fails after 20 s without it.
    pub async fn covers(&self, size: u64) {
        for _ in 0..400 {
            if self.stats.checkpointed.load(Ordering::Relaxed) >= size {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no checkpoint covers {size} messages (at {})",
            self.stats.checkpointed.load(Ordering::Relaxed)
        );
    }
}

pub async fn start(bus: Bus, key: &NoteKey, dir: &Path) -> Running {
    start_every(bus, key, dir, Duration::from_millis(100)).await
}

/// A notary signing a checkpoint every `interval` when its log grew.
pub async fn start_every(bus: Bus, key: &NoteKey, dir: &Path, interval: Duration) -> Running {
    start_rechecking(
        bus,
        key,
        dir,
        interval,
        refbus_bus::statement::RECHECK_EVERY,
    )
    .await
}

/// A notary signing a checkpoint every `interval` when its log grew and checking the events
/// stream's settings again every `stream_recheck_every`.
pub async fn start_rechecking(
    bus: Bus,
    key: &NoteKey,
    dir: &Path,
    interval: Duration,
    stream_recheck_every: Duration,
) -> Running {
    let key = NoteKey::from_secret_text(&key.secret_text(), KeyKind::Notary).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stats = Arc::new(Stats::default());
    let endpoint = refbus_metrics::Endpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let metrics = endpoint.address().unwrap();
    let notary = Notary {
        bus,
        key,
        settings: Settings {
            dir: dir.to_owned(),
            origin: ORIGIN.to_owned(),
            interval,
            metrics: Some(endpoint),
            stream_recheck_every,
        },
        stats: stats.clone(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(notary.run(Some(listener), async move {
        let _ = stopped.await;
    }));
    Running {
        stats,
        url,
        metrics,
        stop,
        task,
    }
}

pub fn trust(key: &NoteKey) -> Trust {
    Trust {
        origin: ORIGIN.to_owned(),
        notary: notary_verifier(&key.verifier_key()).unwrap(),
        witnesses: Vec::new(),
        quorum: 0,
    }
}

pub async fn create(system: &mut System, ids: std::ops::Range<u32>) {
    let dinsos = system.agency("maros-dinsos").await;
    for i in ids {
        dinsos
            .create(create_request(
                &format!("notary-{i:04}"),
                "maros-uptd-ppa",
                "shelter",
            ))
            .await;
    }
}

pub fn log_dir() -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    (temp, dir)
}
