//! The status page (`GET /` on the admin port) in a real browser: headless
//! Chromium loads it from a modelwatch in front of MLServer (two versions of a
//! classifier, labelled, one drifting, an alert firing), runs its script, and
//! must show the model, its versions and their figures with no console error.
//! The screenshot is kept in target/screenshots/status-page.png.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::models::{bc_data, infer_versions, mlserver_versions, send_labels};

pub fn chromium() -> PathBuf {
    let p = PathBuf::from("/usr/bin/chromium");
    assert!(
        p.exists(),
        "{} is missing: run scripts/testbed.sh browser (Debian package chromium)",
        p.display()
    );
    p
}

/// Runs headless Chromium on `url` with `extra` (--dump-dom, --screenshot=…);
/// returns (stdout, stderr).
pub fn headless(url: &str, extra: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,1650",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Lines where the page's console spoke (errors, uncaught exceptions).
pub fn console_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_model_in_a_real_browser() {
    let (x, y) = bc_data();
    let server = mlserver_versions(&[("bc", "v1", "bc"), ("bc", "v2", "bc-weak")]).await;
    let config = r#"
admin:
  history_interval: 200ms
quality:
  refresh_interval: 200ms
  windows: [1h]
  min_samples: 30
drift:
  window: 100
  min_samples: 50
  refresh_interval: 200ms
  live_reference_rows: 100
resources:
  interval: 300ms
alerts:
  evaluation_interval: 300ms
  rules:
    - name: CandidateAccuracyLow
      figure: modelwatch.quality.accuracy
      match: {model: bc, model_version: v2, window: 1h}
      below: 0.9
      severity: warning
protocol:
  models:
    - name: bc
      class_names: [malignant, benign]
      label_output: predict
      scores_output: predict_proba
"#;
    let mw = Modelwatch::start(Options::new(server.url("")).config(config)).await;
    infer_versions(&mw, &x, &["v1", "v2"], 40).await;
    for v in ["v1", "v2"] {
        send_labels(&mw, "bc", v, 5, &y[..200]).await;
    }
    let status: Value = eventually("figures and history", Duration::from_secs(30), || async {
        let s = mw.status().await;
        let accuracies = s["quality"]["models"]
            .as_array()?
            .iter()
            .filter(|m| m["windows"][0]["accuracy"].is_f64())
            .count();
        let h = mw.admin_json("/v1/status/history").await;
        let points = h["points"].as_array()?.len();
        let firing = s["alerts"]["rules"][0]["firing"].as_u64()?;
        (accuracies == 2 && points >= 5 && firing == 1).then_some(s)
    })
    .await;

    // The page itself: one self-contained document.
    let resp = http().get(mw.admin_url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(resp.headers().contains_key("content-security-policy"));
    // The SVG namespace is a name, not something loaded.
    let html = resp
        .text()
        .await
        .unwrap()
        .replace("\"http://www.w3.org/2000/svg\"", "");
    for external in ["http://", "https://", "//cdn", "<link rel=\"stylesheet\""] {
        assert!(
            !html.contains(external),
            "the page loads something from outside: {external}"
        );
    }

    let url = mw.admin_url("/");
    let (dom, stderr) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || headless(&url, &["--dump-dom"])
    })
    .await
    .unwrap();
    assert!(
        console_lines(&stderr).is_empty(),
        "console: {:?}",
        console_lines(&stderr)
    );
    assert!(
        dom.contains("data-state=\"ok\""),
        "the script did not render:\n{dom}"
    );
    assert!(dom.contains("model server up"), "{dom}");
    for needle in [
        "bc",
        "v1",
        "v2",
        "CandidateAccuracyLow",
        "firing",
        "polyline",
        // The diagnosis section: v2 is the worse version.
        "version v2 was first seen in the window (after v1): accuracy",
    ] {
        assert!(dom.contains(needle), "the page lacks {needle}");
    }
    // The accuracies shown are the status figures, as the page formats them.
    for m in status["quality"]["models"].as_array().unwrap() {
        let a = m["windows"][0]["accuracy"].as_f64().unwrap();
        let shown = format!("{:.1} %", 100.0 * a);
        assert!(
            dom.contains(&shown),
            "accuracy {shown} of {} not shown",
            m["model_version"]
        );
    }

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let arg = format!("--screenshot={}", shot.display());
    let (_, stderr) = tokio::task::spawn_blocking(move || headless(&url, &[&arg]))
        .await
        .unwrap();
    assert!(
        console_lines(&stderr).is_empty(),
        "console: {:?}",
        console_lines(&stderr)
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert_eq!(&png[1..4], b"PNG");
    assert!(
        png.len() > 20_000,
        "the screenshot is nearly empty: {} bytes",
        png.len()
    );
    println!("screenshot: {}", shot.display());
}
