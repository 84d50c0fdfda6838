//! TensorBoard event files read by TensorBoard's own EventAccumulator (PyPI
//! `tensorboard`): the scalars must be those of `/v1/status`, and every write
//! must be there (record counts), per model version.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::models::{bc_data, fixtures, infer_versions, mlserver_versions, send_labels, testbed};

fn read_events(dir: &std::path::Path) -> Value {
    let python = testbed().join("venvs/tensorboard/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/testbed.sh install",
        python.display()
    );
    let out = Command::new(python)
        .arg(fixtures().join("tensorboard_read.py"))
        .arg(dir)
        .output()
        .unwrap();
    stdout_json(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_files_hold_the_status_figures_per_model_version() {
    let (x, y) = bc_data();
    let server = mlserver_versions(&[("bc", "v1", "bc"), ("bc", "v2", "bc-weak")]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
tensorboard:
  enabled: true
  dir: {}
  interval: 2s
quality:
  refresh_interval: 100ms
  windows: [1h]
  min_samples: 30
drift:
  window: 100
  min_samples: 50
  refresh_interval: 100ms
  live_reference_rows: 100
protocol:
  models:
    - name: bc
      class_names: [malignant, benign]
      label_output: predict
      scores_output: predict_proba
"#,
        dir.path().display()
    );
    let mw = Modelwatch::start(Options::new(server.url("")).config(&config)).await;
    infer_versions(&mw, &x, &["v1", "v2"], 50).await;
    for v in ["v1", "v2"] {
        send_labels(&mw, "bc", v, 5, &y[..250]).await;
    }
    // The figures have settled and been written: the newest event of each run
    // carries exactly the scalars of the current status.
    eventually("figures written", Duration::from_secs(60), || async {
        let s = mw.status().await;
        let want = modelwatch::tensorboard::scalars(&s);
        let runs = s["tensorboard"]["runs"].as_array()?;
        let ok = want.len() == 2
            && runs.len() == 2
            && runs.iter().all(|r| r["records"].as_u64() >= Some(3))
            && want
                .values()
                .all(|r| r.contains_key("quality/1h/accuracy") && r.contains_key("drift/share"))
            && runs.iter().all(|r| {
                let last: BTreeMap<String, f64> =
                    serde_json::from_value(r["last"].clone()).unwrap();
                want.get(r["run"].as_str().unwrap()) == Some(&last)
            });
        ok.then_some(())
    })
    .await;

    // Read between two writes (the same record counts before and after the
    // read; a write every 2 s leaves room for TensorBoard's start-up).
    let (status, read) = eventually("a quiet read", Duration::from_secs(60), || async {
        let before = mw.status().await;
        let read = tokio::task::spawn_blocking({
            let d = dir.path().to_path_buf();
            move || read_events(&d)
        })
        .await
        .unwrap();
        let after = mw.status().await;
        (before["tensorboard"] == after["tensorboard"]).then_some((after, read))
    })
    .await;
    let want = modelwatch::tensorboard::scalars(&status);
    let runs = status["tensorboard"]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(want.len(), 2, "{want:?}");
    assert_eq!(status["tensorboard"]["errors"], 0);
    for r in runs {
        let run = r["run"].as_str().unwrap();
        let tags = read[run]
            .as_object()
            .unwrap_or_else(|| panic!("TensorBoard has no run {run}: {read}"));
        // Record counts: every write is an event with steps 1..=records of
        // this run (runs appear when their model version is first seen).
        let steps: BTreeSet<i64> = tags
            .values()
            .flat_map(|v| v.as_array().unwrap().iter().map(|e| e[0].as_i64().unwrap()))
            .collect();
        assert_eq!(
            steps.len() as u64,
            r["records"].as_u64().unwrap(),
            "{run}: events vs records"
        );
        assert_eq!(*steps.last().unwrap(), r["last_step"].as_i64().unwrap());
        // The newest values are the status figures (stored as 32-bit floats).
        let last = r["last_step"].as_i64().unwrap();
        for (tag, v) in &want[run] {
            let events = tags
                .get(tag.as_str())
                .and_then(|t| t.as_array())
                .unwrap_or_else(|| panic!("{run}: no tag {tag}"));
            let at = events
                .iter()
                .find(|e| e[0].as_i64() == Some(last))
                .unwrap_or_else(|| panic!("{run} {tag}: no event at step {last}"));
            let got = at[1].as_f64().unwrap();
            assert!(
                (got - v).abs() <= 1e-6 * v.abs().max(1.0),
                "{run} {tag}: TensorBoard {got}, status {v}"
            );
        }
        println!("{run}: {} tags, {} events", tags.len(), r["records"]);
    }
    let v1 = want["bc/v1"]["quality/1h/accuracy"];
    let v2 = want["bc/v2"]["quality/1h/accuracy"];
    assert!(v1 > v2, "the weak model is the less accurate: {v1} vs {v2}");
}
