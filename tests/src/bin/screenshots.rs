//! Saves a screenshot of each of the dashboard's main views, for `docs/`:
//! signs in to a running coordinator's dashboard with a token and captures
//! the overview, a swarm (with its dependency graph), the task list, a
//! task, the workers, the dead letters and the audit log in headless Chromium (see `scripts/screenshots`, which starts a
//! stack for it).
//!
//! Usage: `screenshots DASHBOARD_URL TOKEN_FILE OUT_DIR`

use std::path::PathBuf;

use anyhow::{Context, bail};
use base64::Engine;
use hive_tests::browser::Browser;
use serde_json::json;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [site, token_file, out] = args.as_slice() else {
        bail!("usage: screenshots DASHBOARD_URL TOKEN_FILE OUT_DIR");
    };
    let site = site.trim_end_matches('/');
    let token = std::fs::read_to_string(token_file).with_context(|| format!("read {token_file}"))?;
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out)?;

    let browser = Browser::launch().await;
    let size = json!({ "width": 1280, "height": 860, "deviceScaleFactor": 1, "mobile": false });
    browser.call("Emulation.setDeviceMetricsOverride", size).await;
    browser.open(&format!("{site}/login")).await;
    browser.sign_in(token.trim()).await;
    browser.wait_live().await;
    save(&browser, &out, "overview").await?;

    let swarm = browser.eval("document.querySelector('tr[data-swarm] a')?.getAttribute('href')").await;
    if let Some(swarm) = swarm.as_str() {
        browser.open(&format!("{site}{swarm}")).await;
        save(&browser, &out, "swarm").await?;
    }
    browser.open(&format!("{site}/tasks")).await;
    save(&browser, &out, "tasks").await?;
    browser.open(&format!("{site}/tasks?status=succeeded")).await;
    let task = browser.eval("document.querySelector('#tasks a')?.getAttribute('href')").await;
    if let Some(task) = task.as_str() {
        browser.open(&format!("{site}{task}")).await;
        save(&browser, &out, "task").await?;
    }
    for (name, path) in [("workers", "/workers"), ("dead-letters", "/dead"), ("audit", "/audit")] {
        browser.open(&format!("{site}{path}")).await;
        save(&browser, &out, name).await?;
    }
    Ok(())
}

/// Writes the page as `OUT/NAME.png`.
async fn save(browser: &Browser, out: &std::path::Path, name: &str) -> anyhow::Result<()> {
    let shot = browser.call("Page.captureScreenshot", json!({ "format": "png" })).await;
    let data = shot["data"].as_str().context("no screenshot data")?;
    let path = out.join(format!("{name}.png"));
    std::fs::write(&path, base64::engine::general_purpose::STANDARD.decode(data)?)?;
    eprintln!("saved {}", path.display());
    Ok(())
}
