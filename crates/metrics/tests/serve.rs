//! The exposition server over a real socket: content type, body, other paths, shutdown.

use std::net::SocketAddr;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use refbus_metrics::{Endpoint, Exposition, sample, scrape};

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

#[tokio::test]
async fn metrics_are_served_in_the_prometheus_text_format_with_its_content_type() {
    let mut registry = Registry::with_prefix("refbus_test");
    let calls = Family::<Vec<(String, String)>, Counter>::default();
    registry.register("calls", "Calls by method", calls.clone());
    let refreshed = Gauge::<i64>::default();
    registry.register("refreshed", "Set before each scrape", refreshed.clone());
    calls
        .get_or_create(&vec![("method".to_owned(), "Get".to_owned())])
        .inc_by(3);
    let scrapes = refreshed.clone();
    let exposition = Exposition::new(registry).refreshed_by(move || {
        let scrapes = scrapes.clone();
        async move {
            scrapes.inc();
        }
    });
    let endpoint = Endpoint::bind(loopback()).unwrap();
    let address = endpoint.address().unwrap();
    let server = refbus_metrics::spawn(exposition, &endpoint).unwrap();

    let first = scrape(address).await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(
        first.content_type,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(
        first
            .body
            .contains("# TYPE refbus_test_calls_total counter")
    );
    assert_eq!(
        sample(&first.body, "refbus_test_calls_total", &[("method", "Get")]),
        Some(3.0)
    );
    assert_eq!(
        sample(&first.body, "refbus_test_calls_total", &[("method", "Put")]),
        None
    );
    assert_eq!(sample(&first.body, "refbus_test_refreshed", &[]), Some(1.0));
    let second = scrape(address).await.unwrap();
    assert_eq!(
        sample(&second.body, "refbus_test_refreshed", &[]),
        Some(2.0)
    );

    let elsewhere = refbus_metrics::get(address, "/").await.unwrap();
    assert_eq!(elsewhere.status, 404);
    assert!(!elsewhere.body.contains("refbus_test"));

    // Stopping returns once the server's task has ended.
    server.stop().await;
}
