//! [`Browser`]: a real headless Chromium driven over WebDriver, for the dashboard's browser tests.
//!
//! Each [`Browser`] spawns its own `chromedriver` on a free loopback port (`--port=0`, the port
//! read from its log, as [`NatsServer`] reads nats-server's), with a temporary Chromium profile,
//! and talks to it with `fantoccini` over plain HTTP on loopback (no TLS stack: the driver is
//! never remote). Dropping it kills chromedriver and every browser process it started, and
//! removes the profile. chromedriver's log (with Chromium's messages) is quoted in errors and
//! available from [`Browser::driver_log`].
//!
//! The binaries are Debian's `chromium` and `chromium-driver`, installed pinned by
//! `scripts/install-tools.sh`; `$REFBUS_CHROMIUM` and `$REFBUS_CHROMEDRIVER` override the default
//! paths `/usr/bin/chromium` and `/usr/bin/chromedriver`.
//!
//! Waiting: every `wait_*` helper polls the page until its condition holds or a generous
//! deadline passes (30 s by default: the machine may be busy compiling), so tests never assert
//! on how long something took. On a timeout the helper saves a screenshot next to the test's
//! others and names it in the error.
//!
//! ```no_run
//! # async fn example() -> Result<(), refbus_testkit::browser::BrowserError> {
//! use refbus_testkit::browser::Browser;
//!
//! let browser = Browser::start("board_shows_breach").await?;
//! browser.open("http://127.0.0.1:8080/").await?;
//! let status = browser.wait_for_text("#status", "live").await?;
//! browser.screenshot("board").await?; // target/browser-screenshots/board_shows_breach/board.png
//! browser.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`NatsServer`]: crate::NatsServer

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::error::{CmdError, NewSessionError};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tempfile::TempDir;

pub use fantoccini;

/// The variable naming the Chromium binary; default [`DEFAULT_CHROMIUM`].
pub const CHROMIUM_ENV: &str = "REFBUS_CHROMIUM";
/// The variable naming the chromedriver binary; default [`DEFAULT_CHROMEDRIVER`].
pub const CHROMEDRIVER_ENV: &str = "REFBUS_CHROMEDRIVER";
/// Where Debian's `chromium` package puts the browser.
pub const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
/// Where Debian's `chromium-driver` package puts the driver.
pub const DEFAULT_CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a `wait_*` helper waits by default. Generous, because the two cores may be busy
/// compiling; a test that passes only waits as long as the page needs.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// A desktop window, the size screenshots for the documentation are taken at.
pub const DESKTOP: (u32, u32) = (1280, 900);
/// A phone held upright (the CSS viewport of a common mid-range Android phone).
pub const PHONE: (u32, u32) = (390, 844);

/// How long chromedriver may take to say it listens.
const DRIVER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The pause between two looks at the page while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How often the harness looks at chromedriver's log while it starts.
const DRIVER_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// What chromedriver logs once it accepts sessions, followed by the port.
const DRIVER_READY_LINE: &str = "ChromeDriver was started successfully on port";
/// Lines of chromedriver's log quoted in an error.
const LOG_TAIL_LINES: usize = 30;

/// An error of the browser harness.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// A binary the harness needs does not exist.
    #[error(
        "{what} not found at {path} (set by ${variable} or its default): run \
         scripts/install-tools.sh as root (it installs Debian's chromium and chromium-driver, \
         pinned), or set ${variable} to the binary"
    )]
    BinaryNotFound {
        /// "chromium" or "chromedriver".
        what: &'static str,
        /// Where the harness looked.
        path: PathBuf,
        /// The variable that overrides the path.
        variable: &'static str,
    },

    /// A file or directory could not be created, written or removed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What the harness was doing.
        what: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// chromedriver could not be started.
    #[error("could not start {binary}: {source}")]
    Spawn {
        /// The binary that was run.
        binary: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// chromedriver exited or did not say it listens in time.
    #[error("chromedriver did not start ({problem}); its output ends with:\n{log}")]
    DriverNotReady {
        /// Exited, or timed out.
        problem: String,
        /// The end of its output.
        log: String,
    },

    /// chromedriver refused to start a browser session (a missing library, mismatched versions).
    #[error(
        "chromedriver could not start Chromium: {source}; chromedriver's log ends with:\n{log}"
    )]
    Session {
        /// fantoccini's error.
        #[source]
        source: Box<NewSessionError>,
        /// The end of chromedriver's log file.
        log: String,
    },

    /// A WebDriver command failed.
    #[error("WebDriver command failed while {doing}: {source}")]
    Command {
        /// What the harness was doing.
        doing: String,
        /// fantoccini's error.
        #[source]
        source: Box<CmdError>,
    },

    /// A condition did not hold before the deadline.
    #[error(
        "waited {waited:?} for {what}; last seen: {last}; screenshot: {}",
        screenshot.as_ref().map_or_else(|| "none".to_owned(), |path| path.display().to_string())
    )]
    Timeout {
        /// The condition.
        what: String,
        /// How long the harness waited.
        waited: Duration,
        /// What the page showed at the last look (or the last error).
        last: String,
        /// The page at the deadline, if a screenshot could be taken.
        screenshot: Option<PathBuf>,
    },
}

fn command_error(doing: impl Into<String>) -> impl FnOnce(CmdError) -> BrowserError {
    let doing = doing.into();
    move |source| BrowserError::Command {
        doing,
        source: Box::new(source),
    }
}

// === impl BrowserBuilder ===

/// Options for a [`Browser`]: window size, language, wait deadline.
#[derive(Debug, Clone)]
pub struct BrowserBuilder {
    test: String,
    window: (u32, u32),
    language: Option<String>,
    wait: Duration,
}

impl BrowserBuilder {
    /// The initial window size in CSS pixels; [`DESKTOP`] by default.
    pub fn window_size(mut self, width: u32, height: u32) -> BrowserBuilder {
        self.window = (width, height);
        self
    }

    /// The browser's language (`--lang` and the `Accept-Language` it sends), e.g. `"en-US"`;
    /// Chromium's default otherwise.
    pub fn language(mut self, language: impl Into<String>) -> BrowserBuilder {
        self.language = Some(language.into());
        self
    }

    /// How long the `wait_*` helpers wait; [`DEFAULT_WAIT`] by default.
    pub fn wait_timeout(mut self, wait: Duration) -> BrowserBuilder {
        self.wait = wait;
        self
    }

    /// Spawns chromedriver, starts Chromium through it and returns once a blank page is open.
    pub async fn start(self) -> Result<Browser, BrowserError> {
        let chromium = binary(CHROMIUM_ENV, DEFAULT_CHROMIUM, "chromium")?;
        let chromedriver = binary(CHROMEDRIVER_ENV, DEFAULT_CHROMEDRIVER, "chromedriver")?;
        let screenshots = screenshot_dir(&self.test)?;
        let profile = tempfile::Builder::new()
            .prefix("refbus-chromium-")
            .tempdir()
            .map_err(|source| BrowserError::Io {
                what: "creating a temporary Chromium profile in",
                path: env::temp_dir(),
                source,
            })?;
        // Spawning and waiting for the port block; the caller's runtime keeps running meanwhile.
        let log_path = profile.path().join("chromedriver.log");
        let driver = {
            let (binary, log_path) = (chromedriver.clone(), log_path.clone());
            tokio::task::spawn_blocking(move || ChromeDriver::spawn_retrying(&binary, &log_path))
                .await
                .map_err(|join| BrowserError::Spawn {
                    binary: chromedriver,
                    source: io::Error::other(join.to_string()),
                })??
        };
        let capabilities = capabilities(&chromium, profile.path(), &self);
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url())
            .await
            .map_err(|source| BrowserError::Session {
                source: Box::new(source),
                log: log_tail(&log_path),
            })?;
        let browser = Browser {
            client,
            wait: self.wait,
            screenshots,
            timeouts: AtomicUsize::new(0),
            driver,
            _profile: profile,
        };
        // `--window-size` is not enough: a new window is at least 500 px wide, so a phone's
        // width is set again through WebDriver, which headless Chromium honours exactly.
        let (width, height) = self.window;
        browser.set_window_size(width, height).await?;
        Ok(browser)
    }
}

/// The W3C capabilities of a headless Chromium with its own throw-away profile.
fn capabilities(
    chromium: &Path,
    profile: &Path,
    options: &BrowserBuilder,
) -> serde_json::Map<String, Value> {
    let (width, height) = options.window;
    let mut args = vec![
        "--headless=new".to_owned(),
        // Tests run as root in containers, where Chromium's sandbox cannot start.
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        // Containers often have a small /dev/shm; a full one crashes renderers.
        "--disable-dev-shm-usage".to_owned(),
        format!("--window-size={width},{height}"),
        format!("--user-data-dir={}", profile.display()),
        "--no-first-run".to_owned(),
        "--no-default-browser-check".to_owned(),
        // The tests talk to loopback only. Chromium's own background traffic (updates, safe
        // browsing, metrics) is switched off, and anything else is sent to a proxy on a closed
        // loopback port, so no request leaves the machine. Loopback addresses bypass any
        // proxy in Chromium by default (its implicit bypass rules), so the tests' pages load.
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--disable-domain-reliability".to_owned(),
        "--disable-client-side-phishing-detection".to_owned(),
        "--no-pings".to_owned(),
        "--proxy-server=127.0.0.1:9".to_owned(),
        "--disable-features=Translate,OptimizationHints,MediaRouter".to_owned(),
    ];
    let mut prefs = serde_json::Map::new();
    if let Some(language) = &options.language {
        args.push(format!("--lang={language}"));
        prefs.insert("intl.accept_languages".to_owned(), json!(language));
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".to_owned(), json!("chrome"));
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chromium.display().to_string(),
            "args": args,
            "prefs": prefs,
        }),
    );
    capabilities
}

// === impl Browser ===

/// A headless Chromium for one test, with helpers that wait instead of sleeping.
///
/// Dropping it kills chromedriver and the browser (call [`Browser::close`] to end the session
/// politely first) and removes its profile directory. Screenshots stay in
/// `target/browser-screenshots/<test>/`.
#[derive(Debug)]
pub struct Browser {
    client: Client,
    wait: Duration,
    screenshots: PathBuf,
    /// Numbers the screenshots taken on timeouts.
    timeouts: AtomicUsize,
    driver: ChromeDriver,
    /// Removed after the browser is gone (fields drop in order).
    _profile: TempDir,
}

impl Browser {
    /// A browser with the default options, whose screenshots go to
    /// `target/browser-screenshots/<test>/` (emptied first).
    pub async fn start(test: &str) -> Result<Browser, BrowserError> {
        Browser::builder(test).start().await
    }

    /// Options for a browser; `test` names the screenshot directory.
    pub fn builder(test: &str) -> BrowserBuilder {
        BrowserBuilder {
            test: test.to_owned(),
            window: DESKTOP,
            language: None,
            wait: DEFAULT_WAIT,
        }
    }

    /// The fantoccini client, for what the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The directory this test's screenshots are saved in.
    pub fn screenshot_dir(&self) -> &Path {
        &self.screenshots
    }

    /// Chromium's temporary profile directory (removed on drop); every browser process of this
    /// `Browser` names it on its command line.
    pub fn profile_dir(&self) -> &Path {
        self._profile.path()
    }

    /// The end of chromedriver's log (its own and Chromium's messages), for diagnostics.
    pub fn driver_log(&self) -> String {
        log_tail(&self.driver.log_path)
    }

    /// Navigates to `url` and waits until the page has loaded.
    pub async fn open(&self, url: &str) -> Result<(), BrowserError> {
        self.client
            .goto(url)
            .await
            .map_err(command_error(format!("opening {url}")))
    }

    /// The page's current URL.
    pub async fn current_url(&self) -> Result<String, BrowserError> {
        self.client
            .current_url()
            .await
            .map(String::from)
            .map_err(command_error("reading the current URL"))
    }

    /// The current DOM serialised as HTML, as bytes (what the page shows now, including what
    /// scripts added; not the bytes the server sent).
    pub async fn page_source(&self) -> Result<Vec<u8>, BrowserError> {
        self.client
            .source()
            .await
            .map(String::into_bytes)
            .map_err(command_error("reading the page source"))
    }

    /// Runs `script` as the body of a function with `args` as `arguments`, and returns what it
    /// returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value, BrowserError> {
        self.client
            .execute(script, args)
            .await
            .map_err(command_error(format!("executing {script:?}")))
    }

    /// Resizes the window to `width` x `height` CSS pixels.
    pub async fn set_window_size(&self, width: u32, height: u32) -> Result<(), BrowserError> {
        self.client
            .set_window_size(width, height)
            .await
            .map_err(command_error(format!("resizing to {width}x{height}")))
    }

    /// Resizes the window to a phone held upright ([`PHONE`]).
    pub async fn phone(&self) -> Result<(), BrowserError> {
        self.set_window_size(PHONE.0, PHONE.1).await
    }

    /// Saves a PNG of the visible page as `<screenshot_dir>/<name>.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf, BrowserError> {
        let png = self
            .client
            .screenshot()
            .await
            .map_err(command_error(format!("taking screenshot {name}")))?;
        let path = self.screenshots.join(format!("{name}.png"));
        fs::write(&path, png).map_err(|source| BrowserError::Io {
            what: "writing screenshot",
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// The first element matching the CSS `selector`, now (no waiting).
    pub async fn find(&self, selector: &str) -> Result<Element, BrowserError> {
        self.client
            .find(Locator::Css(selector))
            .await
            .map_err(command_error(format!("finding {selector}")))
    }

    /// Every element matching the CSS `selector`, now (no waiting).
    pub async fn find_all(&self, selector: &str) -> Result<Vec<Element>, BrowserError> {
        self.client
            .find_all(Locator::Css(selector))
            .await
            .map_err(command_error(format!("finding all {selector}")))
    }

    /// The visible text of the first element matching `selector`, now (no waiting).
    pub async fn text(&self, selector: &str) -> Result<String, BrowserError> {
        let element = self.find(selector).await?;
        element
            .text()
            .await
            .map_err(command_error(format!("reading the text of {selector}")))
    }

    /// Waits until an element matches `selector`, and returns it.
    pub async fn wait_for(&self, selector: &str) -> Result<Element, BrowserError> {
        self.wait_until(&format!("an element {selector}"), async || {
            match self.client.find(Locator::Css(selector)).await {
                Ok(element) => Ok(Ok(element)),
                Err(error) if error.is_no_such_element() => Ok(Err("no such element".to_owned())),
                Err(error) => Err(error),
            }
        })
        .await
    }

    /// Waits until the first element matching `selector` shows text containing `needle`, and
    /// returns its whole text.
    pub async fn wait_for_text(
        &self,
        selector: &str,
        needle: &str,
    ) -> Result<String, BrowserError> {
        self.wait_for_text_where(
            &format!("{selector} to show {needle:?}"),
            selector,
            |text| text.contains(needle),
        )
        .await
    }

    /// Waits until the first element matching `selector` shows text other than `before`, and
    /// returns the new text.
    pub async fn wait_for_text_change(
        &self,
        selector: &str,
        before: &str,
    ) -> Result<String, BrowserError> {
        self.wait_for_text_where(
            &format!("{selector} to change from {before:?}"),
            selector,
            |text| text != before,
        )
        .await
    }

    /// Waits until the first element matching `selector` shows text for which `accept` holds,
    /// and returns that text. `what` describes the condition in a timeout error.
    pub async fn wait_for_text_where(
        &self,
        what: &str,
        selector: &str,
        accept: impl Fn(&str) -> bool,
    ) -> Result<String, BrowserError> {
        self.wait_until(what, async || {
            let element = match self.client.find(Locator::Css(selector)).await {
                Ok(element) => element,
                Err(error) if error.is_no_such_element() => {
                    return Ok(Err(format!("no element {selector}")));
                }
                Err(error) => return Err(error),
            };
            match element.text().await {
                Ok(text) if accept(&text) => Ok(Ok(text)),
                Ok(text) => Ok(Err(format!("{selector} shows {text:?}"))),
                // Replaced by a live update between finding and reading: look again.
                Err(error) if error.is_stale_element_reference() => {
                    Ok(Err(format!("{selector} was replaced while being read")))
                }
                Err(error) => Err(error),
            }
        })
        .await
    }

    /// Waits until the JavaScript expression `expression` (the body of a function, so it must
    /// `return` something) returns a value other than `null`, `undefined` or `false`, and
    /// returns that value.
    pub async fn wait_for_script(&self, expression: &str) -> Result<Value, BrowserError> {
        self.wait_until(
            &format!("script {expression:?} to return a value"),
            async || {
                let value = self.client.execute(expression, Vec::new()).await?;
                match value {
                    Value::Null | Value::Bool(false) => Ok(Err(format!("it returned {value}"))),
                    value => Ok(Ok(value)),
                }
            },
        )
        .await
    }

    /// Waits until the element matching `selector` exists and clicks it.
    pub async fn click(&self, selector: &str) -> Result<(), BrowserError> {
        let element = self.wait_for(selector).await?;
        element
            .click()
            .await
            .map_err(command_error(format!("clicking {selector}")))
    }

    /// Polls `probe` until it returns `Ok(Ok(value))` or the wait deadline passes. `Ok(Err(why))`
    /// means "not yet" and `why` is quoted if the wait times out; `Err` is a failed WebDriver
    /// command and ends the wait at once.
    pub async fn wait_until<T>(
        &self,
        what: &str,
        mut probe: impl AsyncFnMut() -> Result<Result<T, String>, CmdError>,
    ) -> Result<T, BrowserError> {
        let started = Instant::now();
        let deadline = started + self.wait;
        loop {
            let last = match probe().await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(why)) => why,
                Err(error) => return Err(command_error(format!("waiting for {what}"))(error)),
            };
            if Instant::now() >= deadline {
                let number = self.timeouts.fetch_add(1, Ordering::Relaxed);
                let screenshot = self.screenshot(&format!("timeout-{number}")).await.ok();
                return Err(BrowserError::Timeout {
                    what: what.to_owned(),
                    waited: started.elapsed(),
                    last,
                    screenshot,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Ends the WebDriver session (Chromium exits), then stops chromedriver.
    pub async fn close(self) -> Result<(), BrowserError> {
        let Browser { client, driver, .. } = self;
        let closed = client
            .close()
            .await
            .map_err(command_error("closing the session"));
        drop(driver);
        closed
    }
}

// === impl ChromeDriver ===

/// A chromedriver process on a free loopback port, in its own process group so that killing
/// the group also ends the Chromium processes it started.
///
/// Its output goes to a log file, not a pipe: Chromium inherits chromedriver's stdout and
/// stderr, so a pipe drained by the harness would stay open as long as any browser process
/// did, and waiting for its end could hang.
#[derive(Debug)]
struct ChromeDriver {
    child: Child,
    port: u16,
    log_path: PathBuf,
}

impl ChromeDriver {
    /// [`ChromeDriver::spawn`], again up to twice when the port it chose was taken: with
    /// `--port=0` it takes a free IPv6 port and then listens on the same number over IPv4, where
    /// another test's server may hold it ("Address already in use").
    fn spawn_retrying(binary: &Path, log_path: &Path) -> Result<ChromeDriver, BrowserError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match ChromeDriver::spawn(binary, log_path) {
                Err(BrowserError::DriverNotReady { log, .. })
                    if attempt < 3 && log.contains("Address already in use") =>
                {
                    let _ = fs::remove_file(log_path);
                }
                result => return result,
            }
        }
    }

    fn spawn(binary: &Path, log_path: &Path) -> Result<ChromeDriver, BrowserError> {
        let mut log_arg = OsString::from("--log-path=");
        log_arg.push(log_path);
        let child = Command::new(binary)
            .arg("--port=0")
            .arg(log_arg)
            .arg("--log-level=INFO")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|source| BrowserError::Spawn {
                binary: binary.to_path_buf(),
                source,
            })?;
        // From here on, dropping `driver` kills the process group.
        let mut driver = ChromeDriver {
            child,
            port: 0,
            log_path: log_path.to_path_buf(),
        };
        let deadline = Instant::now() + DRIVER_READY_TIMEOUT;
        loop {
            let log = fs::read_to_string(log_path).unwrap_or_default();
            if let Some(line) = log.lines().find(|line| line.contains(DRIVER_READY_LINE)) {
                driver.port = ready_port(line).ok_or_else(|| BrowserError::DriverNotReady {
                    problem: format!("no port in {line:?}"),
                    log: log_tail(log_path),
                })?;
                return Ok(driver);
            }
            let exited = driver.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                return Err(BrowserError::DriverNotReady {
                    problem: exited.map_or_else(
                        || format!("not listening within {DRIVER_READY_TIMEOUT:?}"),
                        |status| format!("it exited ({status})"),
                    ),
                    log: log_tail(log_path),
                });
            }
            std::thread::sleep(DRIVER_POLL_INTERVAL);
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The group's id is chromedriver's pid (`process_group(0)`); Chromium's processes stay
        // in it. Its crash handlers leave the group but exit once the browser is gone.
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        // Fails only if it was already reaped; then `wait` returns at once.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port at the end of chromedriver's "started successfully on port 41235." line.
fn ready_port(line: &str) -> Option<u16> {
    line.split_whitespace()
        .last()?
        .trim_end_matches('.')
        .parse()
        .ok()
}

/// The last lines of a log file, or why it cannot be read.
fn log_tail(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(error) => format!("({}: {error})", path.display()),
    }
}

/// `$variable` if set and non-empty, else `default`; an error naming the install script if the
/// file does not exist.
fn binary(
    variable: &'static str,
    default: &str,
    what: &'static str,
) -> Result<PathBuf, BrowserError> {
    let path = env::var_os(variable)
        .filter(|value| !value.is_empty())
        .map_or_else(|| PathBuf::from(default), PathBuf::from);
    if path.is_file() {
        Ok(path)
    } else {
        Err(BrowserError::BinaryNotFound {
            what,
            path,
            variable,
        })
    }
}

/// `<target>/browser-screenshots/<test>/`, emptied, so it holds only this run's pictures. The
/// target directory is `$CARGO_TARGET_DIR` when set, else the workspace's `target/`.
fn screenshot_dir(test: &str) -> Result<PathBuf, BrowserError> {
    let target = env::var_os("CARGO_TARGET_DIR")
        .filter(|value| !value.is_empty())
        .map_or_else(
            || crate::binary::workspace_root().join("target"),
            PathBuf::from,
        );
    let dir = target.join("browser-screenshots").join(test);
    match fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(BrowserError::Io {
                what: "emptying the screenshot directory",
                path: dir,
                source,
            });
        }
    }
    fs::create_dir_all(&dir).map_err(|source| BrowserError::Io {
        what: "creating the screenshot directory",
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_port_from_the_ready_line() {
        assert_eq!(
            ready_port("ChromeDriver was started successfully on port 41235."),
            Some(41235)
        );
        assert_eq!(
            ready_port("ChromeDriver was started successfully on port"),
            None
        );
    }

    #[test]
    fn a_missing_binary_names_the_install_script() {
        let error = binary(
            "REFBUS_TESTKIT_NO_SUCH_VARIABLE",
            "/nonexistent/chromium",
            "chromium",
        )
        .expect_err("missing");
        let message = error.to_string();
        assert!(message.contains("scripts/install-tools.sh"), "{message}");
        assert!(message.contains("/nonexistent/chromium"), "{message}");
    }
}
