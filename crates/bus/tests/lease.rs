//! Leases in a JetStream key-value bucket against a real nats-server: one holder at a time,
//! kept only by its holder, free again once given back.

use std::time::Duration;

use refbus_bus::{Bus, StreamSettings};
use refbus_testkit::NatsServer;

#[tokio::test]
async fn a_lease_has_one_holder_until_given_back() {
    let nats = NatsServer::start().unwrap();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let ttl = Duration::from_secs(600);
    let a = bus.leases("TEST_LEASES", ttl, "a").await.unwrap();
    let b = bus.leases("TEST_LEASES", ttl, "b").await.unwrap();

    let held = a.claim("partition.0").await.unwrap().expect("a free key");
    assert_eq!(b.claim("partition.0").await.unwrap(), None);
    assert_eq!(
        b.held("partition.").await.unwrap(),
        [("partition.0".to_owned(), "a".to_owned())]
    );

    // Renewed by its holder; the revision it replaced no longer renews (someone wrote since).
    let renewed = a.renew(&held).await.unwrap().expect("still a's");
    assert_eq!(a.renew(&held).await.unwrap(), None);

    // Given back: free for another at once, and the old holder's lease is gone.
    a.release(renewed.clone()).await.unwrap();
    assert!(b.held("partition.").await.unwrap().is_empty());
    let taken = b.claim("partition.0").await.unwrap().expect("given back");
    assert_eq!(a.renew(&renewed).await.unwrap(), None);
    // Giving back a lease already lost leaves the new holder's alone.
    a.release(renewed).await.unwrap();
    assert_eq!(
        a.held("partition.").await.unwrap(),
        [("partition.0".to_owned(), "b".to_owned())]
    );
    assert!(b.renew(&taken).await.unwrap().is_some());
}

// Expiry (the server ages a lease out when it is not renewed) is exercised where it matters:
// `a_router_partition_taken_over_after_its_router_is_killed_records_each_item_exactly_once`
// in crates/router/tests/router.rs, which waits for the survivors' claims, not for time.
