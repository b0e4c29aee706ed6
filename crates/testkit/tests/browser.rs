//! The browser harness against a real headless Chromium: a page served by this test process
//! receives server-sent events and shows them without a reload; screenshots are saved; a wait
//! for something that never comes fails with a screenshot instead of hanging.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::response::Html;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;
use refbus_testkit::browser::{Browser, BrowserError, PHONE};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>harness</title>
<style>body { font: 18px sans-serif; margin: 2em } #status { color: #05a }</style></head>
<body>
<h1>Live feed</h1>
<p id="status">connecting</p>
<ul id="events"></ul>
<script>
  // Set once per page load: still there after an update proves the page was not reloaded.
  window.harnessLoads = (window.harnessLoads || 0) + 1;
  const source = new EventSource("/events");
  source.onopen = () => { document.getElementById("status").textContent = "connected"; };
  source.addEventListener("update", (message) => {
    const item = document.createElement("li");
    item.textContent = message.data;
    document.getElementById("events").appendChild(item);
    document.getElementById("status").textContent = "updated: " + message.data;
  });
</script>
</body>
</html>
"#;

/// Serves the page and its event stream on a free loopback port; returns the page's URL and the
/// sender that pushes events to every open page.
async fn serve() -> (String, broadcast::Sender<String>) {
    let (updates, _) = broadcast::channel::<String>(16);
    let sender = updates.clone();
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/events",
            get(move || {
                // Subscribed before the response headers go out, so once the page's `onopen`
                // fired, every later send reaches it.
                let receiver = updates.subscribe();
                async move { Sse::new(events(receiver)).keep_alive(KeepAlive::default()) }
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/"), sender)
}

fn events(receiver: broadcast::Receiver<String>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(data) => {
                    return Some((Ok(Event::default().event("update").data(data)), receiver));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_update_appears_without_reload_and_is_screenshotted() {
    let (url, updates) = serve().await;
    let browser = Browser::start("testkit_sse_update")
        .await
        .expect("start Chromium");
    browser.open(&url).await.expect("open the page");
    browser
        .wait_for_text("#status", "connected")
        .await
        .expect("the event stream opens");
    assert!(
        browser
            .find_all("#events li")
            .await
            .expect("list")
            .is_empty()
    );

    updates
        .send("referral 7f3a breached".to_owned())
        .expect("the page is subscribed");
    let status = browser
        .wait_for_text("#status", "updated:")
        .await
        .expect("the pushed update appears");
    assert_eq!(status, "updated: referral 7f3a breached");

    // The same page load: the marker set at load is still 1, so no reload happened.
    let loads = browser
        .execute("return window.harnessLoads;", Vec::new())
        .await
        .expect("read the marker");
    assert_eq!(loads, serde_json::json!(1));
    let source = browser.page_source().await.expect("page source");
    let source = String::from_utf8(source).expect("UTF-8 page");
    assert!(
        source.contains("<li>referral 7f3a breached</li>"),
        "{source}"
    );

    let desktop = browser.screenshot("desktop").await.expect("screenshot");
    let png = std::fs::read(&desktop).expect("read screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG: {}",
        desktop.display()
    );
    assert!(desktop.starts_with(browser.screenshot_dir()));
    assert!(
        desktop.ends_with("testkit_sse_update/desktop.png"),
        "{}",
        desktop.display()
    );

    // A second update, after a resize to a phone, also arrives in place.
    browser.phone().await.expect("phone size");
    let width = browser
        .execute("return window.innerWidth;", Vec::new())
        .await
        .expect("width");
    assert_eq!(width, serde_json::json!(PHONE.0));
    updates
        .send("referral 7f3a acknowledged".to_owned())
        .expect("still subscribed");
    browser
        .wait_for_text_change("#status", &status)
        .await
        .expect("the second update appears");
    let items = browser.find_all("#events li").await.expect("list");
    assert_eq!(items.len(), 2);
    browser.screenshot("phone").await.expect("phone screenshot");

    browser.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_text_that_never_comes_fails_with_a_screenshot() {
    let (url, _updates) = serve().await;
    let browser = Browser::builder("testkit_wait_timeout")
        .wait_timeout(Duration::from_millis(500))
        .start()
        .await
        .expect("start Chromium");
    browser.open(&url).await.expect("open the page");
    let error = browser
        .wait_for_text("#status", "this text is never shown")
        .await
        .expect_err("nothing pushes that text");
    let BrowserError::Timeout {
        last, screenshot, ..
    } = &error
    else {
        panic!("expected a timeout, got {error}");
    };
    assert!(last.contains("#status shows"), "{last}");
    let screenshot = screenshot.as_ref().expect("a screenshot at the deadline");
    assert!(screenshot.is_file(), "{}", screenshot.display());
    assert!(error.to_string().contains("timeout-0.png"), "{error}");
}

/// The processes whose command line mentions `needle`, read from /proc.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_browser_ends_every_chromium_process() {
    let (url, _updates) = serve().await;
    let browser = Browser::start("testkit_cleanup")
        .await
        .expect("start Chromium");
    browser.open(&url).await.expect("open the page");
    let profile = browser.profile_dir().display().to_string();
    assert!(
        !processes_mentioning(&profile).is_empty(),
        "Chromium runs with its profile {profile}"
    );

    // As a panicking test would: no polite close, just the drop.
    drop(browser);
    // SIGKILL is delivered at once; the kernel may take a moment to tear the processes down.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = processes_mentioning(&profile);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running after the drop: {left:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !std::path::Path::new(&profile).exists(),
        "the profile is removed"
    );
}
