//! How much memory the dashboard's projection and planning indicators hold for `N` open
//! referrals (default 1,000,100, as `refbus bench dashboard`), apart from the allocator's
//! retention and the rebuild's transient buffers that make a running dashboard's resident size
//! vary between runs.
//!
//! `cargo run --release -p refbus-bench --example projection_memory [-- N]`: builds the states
//! of `N` referrals of the bench's mix (kept, so they count in neither figure), then the
//! projection, then the indicators, and prints the growth of the resident size at each step.
//! The allocator is mimalloc, as in the `refbus` binary, told to give freed pages back at once
//! (`MIMALLOC_PURGE_DELAY=0`; the example starts itself again with it when it is not set): what
//! each step frees then leaves the resident size, so its growth is what the step holds, with
//! mimalloc's rounding to size classes (at most an eighth).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use refbus_bench::histories::{MIX, Writer};
use refbus_core::Timestamp;
use refbus_core::indicators::Indicators;
use refbus_dashboard::Projection;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    // mimalloc reads its options when it starts, before `main`.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        let status = std::process::Command::new(std::env::current_exe().expect("this example"))
            .args(std::env::args_os().skip(1))
            .env("MIMALLOC_PURGE_DELAY", "0")
            .status()
            .expect("this example, started again");
        std::process::exit(status.code().unwrap_or(1));
    }
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
    // As the dashboard's rebuild does: the indexes are built once, at its end.
    projection.defer_indexes();
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
    let line = |what: &str, grown: f64| {
        println!("{what:<11} {:>10} ({:>3.0} B each)", mib(grown), per(grown));
    };
    println!("{count} open referrals of the bench's mix, resident size grown by:");
    line("projection", with_projection - before);
    line("indicators", with_both - with_projection);
    line("together", with_both - before);
    assert_eq!((projection.len(), indicators.len()), (count, count));
}
