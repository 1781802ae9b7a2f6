//! A headless Chromium driven over WebDriver: `chromedriver` on a free port, one
//! [`fantoccini`] session, a throwaway profile.

use std::ops::Deref;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tempfile::TempDir;

use crate::process::{
    kill_and_wait, log_len, log_since, log_stdio, log_tail, signal_group, temp_dir, wait_group_gone,
};
use crate::{find_binary, free_port};

/// How long chromedriver may take to answer `/status`.
const DRIVER_DEADLINE: Duration = Duration::from_secs(20);
/// How long Chromium may take to start and open the session.
const SESSION_DEADLINE: Duration = Duration::from_secs(60);
/// How long the killed Chromium processes may take to disappear.
const GONE_DEADLINE: Duration = Duration::from_secs(5);
/// Pause between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How many ports are tried when another process grabs chromedriver's.
const START_ATTEMPTS: usize = 5;

/// How the browser is set up.
#[derive(Clone, Debug)]
pub struct BrowserOptions {
    /// Run the pages' scripts (off: the page as a browser without JavaScript shows it).
    pub javascript: bool,
    /// Size of the page's viewport (what a screenshot shows) in CSS pixels.
    pub window: (u32, u32),
    /// The system prefers a dark theme (`prefers-color-scheme: dark`).
    pub dark: bool,
    /// The system asks for less motion (`prefers-reduced-motion: reduce`).
    pub reduced_motion: bool,
    /// The browser's languages, as it sends them in `Accept-Language` (e.g. `de-DE,de`);
    /// `None`: Chromium's default.
    pub languages: Option<String>,
}

impl Default for BrowserOptions {
    fn default() -> BrowserOptions {
        BrowserOptions {
            javascript: true,
            window: (1280, 900),
            dark: false,
            reduced_motion: false,
            languages: None,
        }
    }
}

/// A headless Chromium with one WebDriver session, which the test drives through
/// [`fantoccini::Client`] (this type derefs to it).
///
/// `chromedriver` runs on a free port of 127.0.0.1 in its own process group, and starts
/// Chromium with a profile in a temp dir, flags for running as root in a container
/// (`--no-sandbox`, `--disable-dev-shm-usage`) and without any traffic of its own
/// (`--disable-background-networking` and friends). On drop the whole process group,
/// chromedriver and every Chromium process, is killed, and the profile removed.
#[derive(Debug)]
pub struct Browser {
    client: Client,
    driver: Option<Child>,
    log: PathBuf,
    _dir: TempDir,
}

impl Browser {
    /// A browser with JavaScript, showing pages at 1280x900.
    ///
    /// # Errors
    ///
    /// When Chromium or chromedriver is not installed (the message says `apt-get install
    /// chromium chromium-driver`), or when either does not start in time (the error includes
    /// the end of chromedriver's log).
    pub async fn start() -> anyhow::Result<Browser> {
        Browser::start_with(BrowserOptions::default()).await
    }

    /// A browser set up as `options` says. Errors as [`Browser::start`].
    pub async fn start_with(options: BrowserOptions) -> anyhow::Result<Browser> {
        let chromium = find_binary("chromium")?;
        let chromedriver = find_binary("chromedriver")?;
        let dir = temp_dir("browser")?;
        let log = dir.path().join("chromedriver.log");

        let mut attempt = 1;
        let (driver, port) = loop {
            let port = free_port();
            match spawn_driver(&chromedriver, port, &log).await {
                Ok(driver) => break (driver, port),
                Err(DriverError::PortInUse(e)) if attempt < START_ATTEMPTS => {
                    tracing::debug!(port, "chromedriver port taken, retrying: {e:#}");
                    attempt += 1;
                }
                Err(DriverError::PortInUse(e) | DriverError::Failed(e)) => return Err(e),
            }
        };
        // From here on, dropping `browser` stops chromedriver.
        let mut browser = Browser {
            client: match connect(&chromium, port, dir.path(), &options).await {
                Ok(client) => client,
                Err(e) => {
                    let mut driver = driver;
                    stop(&mut driver);
                    return Err(e.context(log_tail(&log)));
                }
            },
            driver: Some(driver),
            log,
            _dir: dir,
        };
        if let Err(e) = browser.size_viewport(options.window).await {
            let tail = log_tail(&browser.log);
            browser.kill();
            return Err(e.context(format!("cannot size the window\n{tail}")));
        }
        Ok(browser)
    }

    /// Sizes the window so that the page gets `width` x `height` CSS pixels: a headless
    /// window counts its (invisible) frame, which is measured from inside the page. A page
    /// must be open (the first one is `about:blank`).
    ///
    /// # Errors
    ///
    /// When the browser refuses the size.
    pub async fn size_viewport(&self, (width, height): (u32, u32)) -> anyhow::Result<()> {
        self.client.set_window_size(width, height).await?;
        let inner = self
            .client
            .execute("return [window.innerWidth, window.innerHeight];", vec![])
            .await?;
        let inner: Vec<u32> = serde_json::from_value(inner)?;
        let [inner_width, inner_height] = inner[..] else {
            anyhow::bail!("the page's size is {inner:?}");
        };
        if (inner_width, inner_height) != (width, height) {
            let outer = |want: u32, got: u32| (2 * want).saturating_sub(got);
            self.client
                .set_window_size(outer(width, inner_width), outer(height, inner_height))
                .await?;
        }
        Ok(())
    }

    /// The WebDriver client (also reachable through `Deref`).
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Saves a PNG of the current window's viewport at `path`, creating its directory.
    ///
    /// # Errors
    ///
    /// When the browser cannot take it or the file cannot be written.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let png = self
            .client
            .screenshot()
            .await
            .context("the browser took no screenshot")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(path, png).with_context(|| format!("cannot write {}", path.display()))
    }

    /// The end of chromedriver's log, for failure messages.
    #[must_use]
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Ends the session politely (Chromium closes its windows), then stops chromedriver.
    ///
    /// # Errors
    ///
    /// When chromedriver does not answer; everything is stopped all the same.
    pub async fn quit(mut self) -> anyhow::Result<()> {
        let closed = self.client.clone().close().await;
        self.kill();
        closed.context("the WebDriver session did not end cleanly")
    }

    fn kill(&mut self) {
        if let Some(mut driver) = self.driver.take() {
            stop(&mut driver);
        }
    }
}

impl Deref for Browser {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills chromedriver's whole process group (Chromium's processes are in it), reaps
/// chromedriver, and waits (a few seconds at most) until every Chromium process is gone.
fn stop(driver: &mut Child) {
    let group = driver.id();
    signal_group(group, "KILL");
    kill_and_wait(driver);
    if !wait_group_gone(group, GONE_DEADLINE) {
        tracing::warn!(group, "Chromium processes outlived SIGKILL");
    }
}

/// Why chromedriver did not come up.
enum DriverError {
    PortInUse(anyhow::Error),
    Failed(anyhow::Error),
}

/// Starts chromedriver on `port` and waits until it answers `/status`.
async fn spawn_driver(binary: &Path, port: u16, log: &Path) -> Result<Child, DriverError> {
    let failed = |e: anyhow::Error| DriverError::Failed(e);
    let offset = log_len(log);
    let (stdout, stderr) = log_stdio(log).map_err(failed)?;
    let mut child = Command::new(binary)
        .arg(format!("--port={port}"))
        // Its own process group: Chromium's processes join it, and go with it on drop.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("cannot spawn {}", binary.display()))
        .map_err(failed)?;
    tracing::debug!(port, pid = child.id(), "started chromedriver");

    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + DRIVER_DEADLINE;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let said = log_since(log, offset);
            let error = anyhow::anyhow!(
                "chromedriver on port {port} exited during startup ({status})\n{}",
                said.trim()
            );
            return Err(if said.contains("in use") || said.contains("bind") {
                DriverError::PortInUse(error)
            } else {
                DriverError::Failed(error)
            });
        }
        if let Ok(Ok(answer)) =
            tokio::time::timeout(Duration::from_secs(2), crate::http::get(addr, "/status")).await
            && answer.status.is_success()
            && answer.body.contains("\"ready\":true")
        {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            stop(&mut child);
            return Err(failed(anyhow::anyhow!(
                "chromedriver on port {port} was not ready within {DRIVER_DEADLINE:?}\n{}",
                log_tail(log)
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Opens the WebDriver session: Chromium, headless, with a profile under `dir`.
async fn connect(
    chromium: &Path,
    port: u16,
    dir: &Path,
    options: &BrowserOptions,
) -> anyhow::Result<Client> {
    let profile = dir.join("profile");
    let (width, height) = options.window;
    let mut args = vec![
        "--headless=new".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--no-default-browser-check".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-extensions".into(),
        "--password-store=basic".into(),
        format!("--user-data-dir={}", profile.display()),
        format!("--window-size={width},{height}"),
    ];
    if options.dark {
        args.push("--force-dark-mode".into());
    }
    if options.reduced_motion {
        args.push("--force-prefers-reduced-motion".into());
    }
    let mut prefs = serde_json::Map::new();
    if let Some(languages) = &options.languages {
        args.push(format!("--accept-lang={languages}"));
        prefs.insert("intl.accept_languages".into(), json!(languages));
    }
    if !options.javascript {
        args.push("--blink-settings=scriptEnabled=false".into());
        prefs.insert(
            "profile.managed_default_content_settings.javascript".into(),
            json!(2),
        );
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": chromium, "args": args, "prefs": prefs }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let mut builder = ClientBuilder::new(HttpConnector::new());
    builder.capabilities(capabilities);
    let session = builder.connect(&url);
    match tokio::time::timeout(SESSION_DEADLINE, session).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!(
            "chromedriver could not start {} (is it the same version as chromedriver?)",
            chromium.display()
        ))),
        Err(_) => anyhow::bail!(
            "{} did not open a WebDriver session within {SESSION_DEADLINE:?}",
            chromium.display()
        ),
    }
}
