//! Debian's Chromium, headless, driven through chromedriver's W3C WebDriver protocol (plain
//! HTTP and JSON, so no WebDriver crate), for `bench dashboard`'s time from navigation to a
//! page's content. The moment is taken inside the page, so WebDriver's own round trips are
//! not in the figure.

use super::ports::free_loopback_port;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Installed in every new document before the page's own scripts: a `MutationObserver` that
/// notes, in `window.__fleethubBench`, the first moment `#page` holds a finished render (the
/// router takes `aria-busy` off its container once the page's data is drawn; a route that
/// draws nothing, "Not found", puts an `h1` straight in `#page`), then the end of the frame that
/// painted it (a task queued from `requestAnimationFrame` runs after that frame's paint). An
/// error box drawn instead of content is noted with its text.
const OBSERVER: &str = r#"
(() => {
  const mark = { content: null, painted: null, error: null };
  window.__fleethubBench = mark;
  const look = () => {
    if (mark.content !== null) return;
    const page = document.getElementById("page");
    if (!page) return;
    const done = page.querySelector(":scope > div:not([aria-busy])") || page.querySelector(":scope > h1");
    if (!done) return;
    mark.content = performance.now();
    const error = page.querySelector(".error:not([hidden])");
    if (error) mark.error = error.textContent;
    observer.disconnect();
    requestAnimationFrame(() => setTimeout(() => { mark.painted = performance.now(); }, 0));
  };
  const observer = new MutationObserver(look);
  observer.observe(document, { childList: true, subtree: true, attributes: true, attributeFilter: ["aria-busy"] });
})();
"#;

/// Waits (inside the page) for the observer's marks and answers them.
const WAIT_FOR_MARK: &str = r#"
const done = arguments[arguments.length - 1];
const poll = () => {
  const mark = window.__fleethubBench;
  if (mark && mark.painted !== null) done(mark); else setTimeout(poll, 10);
};
poll();
"#;

/// Signs in with a policy's name and key as the sign-in form does; answers the HTTP status.
const SIGN_IN: &str = r#"
const done = arguments[arguments.length - 1];
fetch("/dashboard/session", { method: "POST", credentials: "same-origin",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ policy: arguments[0], key: arguments[1] }) })
  .then((r) => done(r.status), (e) => done(String(e)));
"#;

/// One page load as the page itself timed it, in milliseconds from the start of navigation.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// The page's content is in the document.
    pub content_ms: f64,
    /// The frame that shows it has been painted.
    pub painted_ms: f64,
}

/// A chromedriver child and one headless Chromium session in it.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    /// `http://127.0.0.1:{port}`.
    base: String,
    /// `{base}/session/{id}`.
    session: String,
}

/// The first of `names` found on PATH.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Chromium and chromedriver, when both are installed; otherwise what to install.
pub fn find() -> Result<(PathBuf, PathBuf), String> {
    match (
        on_path(&["chromium", "chromium-browser"]),
        on_path(&["chromedriver"]),
    ) {
        (Some(chromium), Some(driver)) => Ok((chromium, driver)),
        _ => Err("chromium and chromedriver are not both on PATH \
                  (apt-get install chromium chromium-driver, as scripts/test.sh does)"
            .into()),
    }
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless Chromium session with
    /// a laptop-sized window. The hub's certificate chains to its own CA, which this throwaway
    /// profile does not know: the browser accepts it (the connection is still TLS), and, as for
    /// any certificate error, Chromium then keeps nothing in its HTTP cache, so every load
    /// fetches the page's assets again.
    pub async fn start(chromium: &Path, driver: &Path) -> Result<Browser> {
        let port = free_loopback_port()?;
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", driver.display()))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?;
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            driver: child,
            http,
            base: base.clone(),
            session: String::new(),
        };
        browser.wait_ready(&base).await?;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1280,900", "--ignore-certificate-errors"],
            },
        }}});
        let created = call(
            &browser.http,
            reqwest::Method::POST,
            &format!("{base}/session"),
            Some(&capabilities),
        )
        .await
        .context("opening a Chromium session")?;
        let id = created["sessionId"]
            .as_str()
            .context("chromedriver answered no sessionId")?;
        browser.session = format!("{base}/session/{id}");
        browser
            .command(
                reqwest::Method::POST,
                "/timeouts",
                json!({"script": 120_000, "pageLoad": 120_000}),
            )
            .await?;
        // chromedriver passes DevTools commands through: the observer is in place in each new
        // document before app.js runs.
        browser
            .command(
                reqwest::Method::POST,
                "/goog/cdp/execute",
                json!({"cmd": "Page.addScriptToEvaluateOnNewDocument", "params": {"source": OBSERVER}}),
            )
            .await
            .context("installing the page observer")?;
        Ok(browser)
    }

    async fn wait_ready(&mut self, base: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.driver.try_wait()? {
                bail!("chromedriver exited ({status}) before it listened");
            }
            if let Ok(reply) = self.http.get(format!("{base}/status")).send().await {
                if let Ok(body) = reply.json::<Value>().await {
                    if body["value"]["ready"] == json!(true) {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not answer on {base} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value> {
        call(
            &self.http,
            method,
            &format!("{}{path}", self.session),
            Some(&body),
        )
        .await
    }

    /// Navigates and waits for the document's load event.
    pub async fn go(&self, url: &str) -> Result<()> {
        self.command(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await
            .with_context(|| format!("opening {url}"))?;
        Ok(())
    }

    async fn script(&self, source: &str, args: Value) -> Result<Value> {
        self.command(
            reqwest::Method::POST,
            "/execute/async",
            json!({"script": source, "args": args}),
        )
        .await
    }

    /// Signs the browser in to the dashboard at `base` with a policy's name and key.
    pub async fn sign_in(&self, base: &str, policy: &str, key: &str) -> Result<()> {
        self.go(&format!("{base}/")).await?;
        let status = self.script(SIGN_IN, json!([policy, key])).await?;
        if status != json!(200) {
            bail!("signing in to the dashboard as {policy} answered {status}");
        }
        Ok(())
    }

    /// Loads `url` afresh (from a blank page, so the document, its assets and the app all load
    /// again, as when a person opens a link) and answers when the page showed its content.
    pub async fn load(&self, url: &str) -> Result<Load> {
        self.go("about:blank").await?;
        self.go(url).await?;
        let mark = self.script(WAIT_FOR_MARK, json!([])).await?;
        if let Some(error) = mark["error"].as_str() {
            bail!("{url} showed an error instead of its content: {error}");
        }
        let ms = |key: &str| {
            mark[key]
                .as_f64()
                .with_context(|| format!("the page noted no {key} time: {mark}"))
        };
        Ok(Load {
            content_ms: ms("content")?,
            painted_ms: ms("painted")?,
        })
    }

    /// Ends the Chromium session and chromedriver, letting chromedriver remove the throwaway
    /// profile before it exits (a killed chromedriver leaves it in the temporary directory).
    pub async fn quit(mut self) {
        let _ = self.http.delete(&self.session).send().await;
        let _ = self
            .http
            .get(format!("{}/shutdown", self.base))
            .send()
            .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.driver.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop_driver();
    }

    fn stop_driver(&mut self) {
        if let Ok(None) = self.driver.try_wait() {
            let _ = self.driver.kill();
            let _ = self.driver.wait();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop_driver();
    }
}

/// One WebDriver call; answers its `value`, or fails with the driver's error and message.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
) -> Result<Value> {
    let mut request = http.request(method.clone(), url);
    if let Some(body) = body {
        request = request.json(body);
    }
    let reply = request
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = reply.status();
    let body: Value = reply
        .json()
        .await
        .with_context(|| format!("{method} {url}: not JSON"))?;
    let value = body["value"].clone();
    if !status.is_success() {
        bail!(
            "chromedriver: {method} {url} answered {status}: {} ({})",
            value["error"].as_str().unwrap_or("error"),
            value["message"]
                .as_str()
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or_default()
        );
    }
    Ok(value)
}
