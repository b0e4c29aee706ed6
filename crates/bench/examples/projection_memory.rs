//! How much memory the dashboard's projection and planning indicators hold for `N` open
//! referrals (default 1,000,100, as `refbus bench dashboard`), apart from the allocator's
//! retention and the rebuild's transient buffers that make a running dashboard's resident size
//! vary between runs.
//!
//! `cargo run --release -p refbus-bench --example projection_memory [-- N]`: builds the states
//! of `N` referrals of the bench's mix (kept, so they count in neither figure), then the
//! projection, then the indicators, and prints the growth of the resident size of each step
//! (the system allocator, which returns nothing meanwhile: each step only allocates).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use refbus_bench::histories::{MIX, Writer};
use refbus_core::Timestamp;
use refbus_core::indicators::Indicators;
use refbus_dashboard::Projection;

/// This process's resident size, in bytes (`/proc/self/statm`, pages of 4 KiB).
fn resident() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .expect("statm's second field");
    pages * 4096.0
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / 1_048_576.0)
}

fn main() {
    let count: usize = std::env::args().nth(1).map_or(1_000_100, |arg| {
        arg.parse().expect("N, a number of referrals")
    });
    let registry =
        Arc::new(refbus_config::load("deploy/config/refbus.toml").expect("the Maros registry"));
    let writer = Writer::new(registry.clone(), "memory");
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    let now = Timestamp::from_millis(i64::try_from(since_epoch.as_millis()).expect("ms fit"));
    let states: Vec<refbus_core::Referral> = (0..count)
        .map(|index| {
            writer
                .create(&MIX[index % MIX.len()], index, now)
                .expect("a create of the mix")
                .1
        })
        .collect();
    let before = resident();
    let mut projection = Projection::new(registry.clone());
    for (seq, state) in (1..).zip(&states) {
        projection.apply(seq, state);
    }
    projection.shrink();
    let with_projection = resident();
    let mut indicators = Indicators::new();
    for state in &states {
        indicators.observe(&registry, state);
    }
    let with_both = resident();
    let per = |bytes: f64| bytes / f64::from(u32::try_from(count).unwrap_or(u32::MAX));
    println!(
        "{count} open referrals: projection {} ({:.0} B each), indicators {} ({:.0} B each), together {}",
        mib(with_projection - before),
        per(with_projection - before),
        mib(with_both - with_projection),
        per(with_both - with_projection),
        mib(with_both - before),
    );
    assert_eq!((projection.len(), indicators.len()), (count, count));
}
