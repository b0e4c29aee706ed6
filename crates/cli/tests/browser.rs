//! `refbus up --demo` as an operator checks it, in a real headless Chromium: the board at the
//! printed URL shows the simulated agencies' referrals arriving and their clocks running late,
//! live, without a reload. The router's clock runs 60 times faster (`--clock-speed`), so the
//! demonstration's minutes pass in seconds.

mod common;

use refbus_testkit::browser::Browser;

/// Starts `refbus up --demo` (a referral a second, pretended time 60 times as fast) and
/// returns it with the dashboard's URL.
fn start_demo(data_dir: &std::path::Path) -> (common::up::Up, String) {
    let (child, lines) = common::up::start_up(
        data_dir,
        &["--demo", "--demo-every", "1", "--clock-speed", "60"],
    );
    let url = lines
        .iter()
        .find_map(|line| line.trim().strip_prefix("dashboard"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no dashboard URL in {lines:?}"));
    (child, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_board_behind_a_login_runs_late_live_and_refuses_posts_without_csrf() {
    let data = tempfile::tempdir().unwrap();
    let (up, url) = start_demo(data.path());
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let browser = Browser::start("cli_up_demo").await.unwrap();
    // The board asks for a login first: the coordinator's, which up made and listed.
    browser.open(&url).await.unwrap();
    browser
        .wait_for("form[action='/login'] #password")
        .await
        .unwrap();
    let logins = std::fs::read_to_string(data.path().join("dashboard-logins.txt")).unwrap();
    let password = logins
        .lines()
        .find_map(|line| line.strip_prefix("koordinator "))
        .and_then(|rest| rest.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("no coordinator login in {logins}"))
        .to_owned();
    browser
        .execute(
            "document.getElementById('username').value = arguments[0];\n\
             document.getElementById('password').value = arguments[1];\n\
             document.querySelector(\"form[action='/login']\").submit(); return true;",
            vec!["koordinator".into(), password.into()],
        )
        .await
        .unwrap();
    browser.wait_for("table#board").await.unwrap();
    browser
        .wait_for_script("return document.getElementById('live-status').dataset.status === 'live';")
        .await
        .unwrap();
    browser
        .execute("window.refbusTestLoads = 1; return true;", Vec::new())
        .await
        .unwrap();

    // The simulated agencies' referrals arrive, and their clocks (2 to 10 demonstration
    // minutes, 2 to 10 seconds here) run late: at risk, then breached or escalated.
    // (On a loaded machine a referral may pass through "at risk" between two looks; the
    // dashboard's own tests check that state on a manual clock.)
    browser.wait_for("#board-rows tr.referral").await.unwrap();
    browser
        .wait_for(
            "#board-rows tr.referral[data-state='escalated'], \
             #board-rows tr.referral[data-state='breached']",
        )
        .await
        .unwrap();
    let loads = browser
        .execute("return window.refbusTestLoads || null;", Vec::new())
        .await
        .unwrap();
    assert_eq!(loads, serde_json::json!(1), "the board was reloaded");
    browser.screenshot("board").await.unwrap();

    // A form posted without the session's CSRF token (as another site would make the
    // browser send it) is refused before the dashboard acts; with the token from the page the
    // same request passes that check and is judged on its merits (no such escalation).
    let id = browser
        .execute(
            "return document.querySelector('#board-rows tr.referral').dataset.referral;",
            Vec::new(),
        )
        .await
        .unwrap();
    let id = id.as_str().unwrap().to_owned();
    browser
        .execute(
            "const post = (body) => fetch('/referrals/' + arguments[0] + '/acknowledge', \
               { method: 'POST', body: new URLSearchParams(body), redirect: 'manual' }) \
               .then(response => response.status);\n\
             post({ clock: 'no_such_clock', level: '1' }).then(status => { window.withoutToken = status; });\n\
             const csrf = document.querySelector('meta[name=\"csrf-token\"]').content;\n\
             post({ clock: 'no_such_clock', level: '1', csrf }).then(status => { window.withToken = status; });\n\
             return true;",
            vec![id.into()],
        )
        .await
        .unwrap();
    browser
        .wait_for_script(
            "return window.withoutToken !== undefined && window.withToken !== undefined;",
        )
        .await
        .unwrap();
    let statuses = browser
        .execute(
            "return [window.withoutToken, window.withToken];",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(statuses[0], serde_json::json!(403), "{statuses}");
    assert_ne!(statuses[1], serde_json::json!(403), "{statuses}");

    // Logging out ends the session: the board asks for a login again.
    browser.click("#logout button").await.unwrap();
    browser
        .wait_for("form[action='/login'] #password")
        .await
        .unwrap();
    browser.open(&url).await.unwrap();
    browser
        .wait_for("form[action='/login'] #password")
        .await
        .unwrap();

    browser.close().await.unwrap();
    drop(up);
}
