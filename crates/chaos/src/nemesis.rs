//! The nemesis: faults on a schedule drawn from the seed, one at a time, each logged with its
//! start and end. Between faults it waits until the cluster is healthy again, so that at most
//! one of the three nodes is ever down or cut off: the fault model an R3 stream promises to
//! survive (losing two of three is unavailability, not a test of durability).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Mutex, watch};

use crate::rng::Rng;
use crate::workload::now_ms;
use crate::{Components, FaultKind};

/// One fault, as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    /// What it hit: `n2`, `router-r1`, `adapter-maros-dinsos`, `n1|n2,n3` (a partition).
    pub target: String,
    pub detail: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

impl Fault {
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.end_ms.saturating_sub(self.start_ms))
    }
}

/// Runs faults until `stop`; returns them.
pub async fn run(
    components: Arc<Mutex<Components>>,
    kinds: Vec<FaultKind>,
    mut rng: Rng,
    mut stop: watch::Receiver<bool>,
) -> Vec<Fault> {
    let mut faults = Vec::new();
    if kinds.is_empty() {
        let _ = stop.wait_for(|stop| *stop).await;
        return faults;
    }
    loop {
        let calm = rng.millis(3_000, 10_000);
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            () = tokio::time::sleep(calm) => {}
        }
        // Never a second node down: wait for the cluster (bounded: a cluster that does not
        // recover is itself what the checker will report).
        let _ = crate::wait_healthy(&components, Duration::from_secs(60)).await;
        let kind = *rng.pick(&kinds);
        let hold = match kind {
            FaultKind::Partition => rng.millis(5_000, 20_000),
            _ => rng.millis(2_000, 12_000),
        };
        let fault = inject(&components, kind, hold, &mut rng, &mut stop).await;
        match fault {
            Ok(fault) => {
                println!(
                    "chaos: fault {:<9} {:<28} {:>6} ms  {}",
                    format!("{:?}", fault.kind).to_lowercase(),
                    fault.target,
                    fault.end_ms - fault.start_ms,
                    fault.detail
                );
                faults.push(fault);
            }
            Err(err) => eprintln!("chaos: a {kind:?} fault could not be injected: {err:#}"),
        }
    }
    faults
}

/// Injects one fault, holds it for `hold` (or until `stop`), and heals it.
async fn inject(
    components: &Arc<Mutex<Components>>,
    kind: FaultKind,
    hold: Duration,
    rng: &mut Rng,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<Fault> {
    let start_ms = now_ms();
    let wait = async {
        let mut stop = stop.clone();
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => {}
            () = tokio::time::sleep(hold) => {}
        }
    };
    let (target, detail) = match kind {
        FaultKind::Kill => {
            let target = pick_process(components, rng).await;
            components.lock().await.by_name(&target)?.kill().await?;
            wait.await;
            components.lock().await.by_name(&target)?.start()?;
            (target, "kill -9, restarted after the hold".to_owned())
        }
        FaultKind::Pause => {
            let target = pick_process(components, rng).await;
            components.lock().await.by_name(&target)?.pause()?;
            wait.await;
            components.lock().await.by_name(&target)?.resume()?;
            (target, "SIGSTOP, SIGCONT after the hold".to_owned())
        }
        FaultKind::Partition => {
            let links = if rng.chance(50) {
                // One node cut off from both others.
                let node = 1 + rng.below(3) as usize;
                crate::net::pairs()
                    .into_iter()
                    .filter(|(a, b)| *a == node || *b == node)
                    .collect::<Vec<_>>()
            } else {
                vec![*rng.pick(&crate::net::pairs())]
            };
            let target = links
                .iter()
                .map(|(a, b)| format!("n{a}-n{b}"))
                .collect::<Vec<_>>()
                .join(",");
            {
                let components = components.lock().await;
                for (a, b) in &links {
                    components.network.set_link(*a, *b, false).await?;
                }
            }
            wait.await;
            let components = components.lock().await;
            for (a, b) in &links {
                components.network.set_link(*a, *b, true).await?;
            }
            (
                target,
                "links between nodes down (clients reach every node)".to_owned(),
            )
        }
        FaultKind::Clock => {
            let index = rng.below(components.lock().await.routers.len() as u64) as usize;
            let seconds = i64::try_from(5 + rng.below(26)).unwrap_or(5);
            let jump = if rng.chance(50) { seconds } else { -seconds };
            let name = {
                let mut components = components.lock().await;
                let start = crate::rfc3339_in(jump);
                let router = components.router_mut(index)?;
                let mut args = router.args().to_vec();
                args.extend([
                    "--clock-start".to_owned(),
                    start,
                    "--clock-speed".to_owned(),
                    "1".to_owned(),
                ]);
                router.kill().await?;
                router.set_args(args);
                router.start()?;
                router.name.clone()
            };
            wait.await;
            let mut components = components.lock().await;
            let base = components.router_args(index);
            let router = components.router_mut(index)?;
            router.kill().await?;
            router.set_args(base);
            router.start()?;
            (
                name,
                format!(
                    "clock {jump:+} s (restarted on the jumped clock, then on the system clock)"
                ),
            )
        }
    };
    Ok(Fault {
        kind,
        target,
        detail,
        start_ms,
        end_ms: now_ms(),
    })
}

/// A node, a router, an adapter or the notary, evenly by kind. The notary is in the draw
/// because its log is durable state too: killed between writing its tiles and its checkpoint,
/// or paused while the stream grows, it must resume without a false alarm of tampering and its
/// log must still pass the audit at the end.
async fn pick_process(components: &Arc<Mutex<Components>>, rng: &mut Rng) -> String {
    let components = components.lock().await;
    let group = match rng.below(4) {
        0 => &components.nodes,
        1 => &components.routers,
        2 => &components.adapters,
        _ => std::slice::from_ref(&components.notary),
    };
    group[rng.below(group.len() as u64) as usize].name.clone()
}
