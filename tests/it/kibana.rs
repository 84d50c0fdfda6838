//! ECS JSON lines (ecs_logs) from a real modelwatch in front of MLServer:
//! sampled requests, an alert, drift and environment events; and the Kibana
//! saved objects of deploy/kibana/, which may reference only fields that this
//! captured output contains.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::models::{bc_data, mlserver_versions, oip_infer, send_labels};

fn kql_fields(query: &str) -> Vec<String> {
    let re = regex::Regex::new(r#"([A-Za-z0-9_.@]+)\s*:"#).unwrap();
    re.captures_iter(query).map(|c| c[1].to_string()).collect()
}

/// Every field a saved object names: columns, sort, query and filters.
fn referenced_fields(obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let a = &obj["attributes"];
    for c in a["columns"].as_array().into_iter().flatten() {
        out.push(c.as_str().unwrap().to_string());
    }
    for s in a["sort"].as_array().into_iter().flatten() {
        out.push(s[0].as_str().unwrap().to_string());
    }
    if let Some(src) = a["kibanaSavedObjectMeta"]["searchSourceJSON"].as_str() {
        let src: Value = serde_json::from_str(src).expect("searchSourceJSON is JSON");
        if let Some(q) = src["query"]["query"].as_str() {
            out.extend(kql_fields(q));
        }
        for f in src["filter"].as_array().into_iter().flatten() {
            if let Some(k) = f["meta"]["key"].as_str() {
                out.push(k.to_string());
            }
        }
    }
    if let Some(t) = a["timeFieldName"].as_str() {
        out.push(t.to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_lines_feed_the_kibana_objects() {
    let (x, y) = bc_data();
    let server = mlserver_versions(&[("bc", "v1", "bc")]).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("modelwatch.ecs.ndjson");
    let config = format!(
        r#"
ecs_logs:
  enabled: true
  output: {}
quality:
  refresh_interval: 100ms
  windows: [1h]
  min_samples: 30
drift:
  window: 100
  min_samples: 50
  refresh_interval: 100ms
  live_reference_rows: 100
alerts:
  evaluation_interval: 200ms
  rules:
    - name: AccuracyBelowPerfect
      figure: modelwatch.quality.accuracy
      match: {{model: bc, window: 1h}}
      below: 0.999
      severity: warning
      annotations:
        summary: "accuracy of {{{{ labels.model }}}} is {{{{ value }}}}"
protocol:
  models:
    - name: bc
      class_names: [malignant, benign]
      label_output: predict
      scores_output: predict_proba
"#,
        out.display()
    );
    let mw = Modelwatch::start(
        Options::new(server.url(""))
            .config(&config)
            .env("K8S_POD_NAME", "bc-7d9f8b6c5d-x2x9k")
            .env("K8S_NAMESPACE_NAME", "models")
            .env("K8S_NODE_NAME", "gpu-node-3"),
    )
    .await;
    // 100 reference rows, then 100 shifted ones: drift; then labels: an alert.
    for i in 0..40 {
        let rows: Vec<Vec<f64>> = x[i * 5..(i + 1) * 5]
            .iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .map(|(j, v)| if i >= 20 && j < 10 { v * 1.6 } else { *v })
                    .collect()
            })
            .collect();
        oip_infer(
            &mw.url("/v2/models/bc/infer"),
            &rows,
            Some(&format!("r-{i}")),
        )
        .await;
    }
    eventually("predictions stored", Duration::from_secs(30), || async {
        let q = mw.admin_json("/v1/quality").await;
        (q["stored"].as_u64() == Some(200)).then_some(())
    })
    .await;
    send_labels(&mw, "bc", "r", 5, &y[..200]).await;

    let wanted = [
        "modelwatch.inference",
        "modelwatch.alert",
        "modelwatch.drift",
        "modelwatch.environment.change",
    ];
    let lines: Vec<Value> = eventually(
        "every kind of event written",
        Duration::from_secs(30),
        || async {
            let text = std::fs::read_to_string(&out).ok()?;
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
                .collect();
            let actions: BTreeSet<&str> = lines
                .iter()
                .filter_map(|l| l["event.action"].as_str())
                .collect();
            wanted.iter().all(|w| actions.contains(w)).then_some(lines)
        },
    )
    .await;

    // Every line is an ECS document.
    let mut fields = BTreeSet::new();
    for l in &lines {
        let o = l.as_object().unwrap();
        let ts = o["@timestamp"].as_str().unwrap();
        humantime::parse_rfc3339(ts).unwrap_or_else(|e| panic!("@timestamp {ts}: {e}"));
        assert_eq!(o["ecs.version"], "8.11.0");
        assert!(["info", "warn", "error", "debug"].contains(&o["log.level"].as_str().unwrap()));
        assert!(o["message"].as_str().is_some_and(|m| !m.is_empty()), "{l}");
        assert!(["event", "alert"].contains(&o["event.kind"].as_str().unwrap()));
        assert_eq!(o["service.name"], "modelwatch");
        assert_eq!(o["orchestrator.namespace"], "models");
        assert_eq!(o["orchestrator.resource.name"], "bc-7d9f8b6c5d-x2x9k");
        assert_eq!(o["host.name"], "gpu-node-3");
        fields.extend(o.keys().cloned());
    }
    let by = |action: &str| lines.iter().find(|l| l["event.action"] == action).unwrap();
    let inference = by("modelwatch.inference");
    assert!(
        inference["http.response.status_code"].is_i64(),
        "{inference}"
    );
    assert_eq!(inference["modelwatch.model"], "bc");
    let alert = by("modelwatch.alert");
    assert_eq!(alert["event.kind"], "alert");
    let drift = by("modelwatch.drift");
    assert!(
        drift["modelwatch.drift.features"]
            .as_str()
            .is_some_and(|f| !f.is_empty()),
        "{drift}"
    );
    println!(
        "captured {} lines; fields: {}",
        lines.len(),
        fields.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    for a in wanted {
        println!("{a}: {}", by(a));
    }

    // The saved objects (generated by deploy/kibana/generate.py).
    let check = std::process::Command::new("python3")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/kibana/generate.py"))
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/kibana/modelwatch.ndjson");
    let text = std::fs::read_to_string(&path).unwrap();
    let objects: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: not NDJSON ({e}): {l}", path.display()))
        })
        .collect();
    let ids: BTreeSet<(String, String)> = objects
        .iter()
        .map(|o| {
            (
                o["type"].as_str().unwrap().to_string(),
                o["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(ids.len(), objects.len(), "ids repeat");
    let types: BTreeSet<&str> = objects
        .iter()
        .map(|o| o["type"].as_str().unwrap())
        .collect();
    for t in ["index-pattern", "search", "dashboard"] {
        assert!(types.contains(t), "no {t}");
    }
    for o in &objects {
        assert!(
            o["attributes"]["title"]
                .as_str()
                .is_some_and(|t| !t.is_empty()),
            "{o}"
        );
        assert!(
            o["coreMigrationVersion"].is_string() || o["typeMigrationVersion"].is_string(),
            "{o}"
        );
        for r in o["references"].as_array().into_iter().flatten() {
            let key = (
                r["type"].as_str().unwrap().to_string(),
                r["id"].as_str().unwrap().to_string(),
            );
            assert!(
                ids.contains(&key),
                "{} references {key:?}, which the file lacks",
                o["id"]
            );
        }
        for f in referenced_fields(o) {
            assert!(
                fields.contains(&f),
                "{} {} names the field {f:?}, which modelwatch's ECS output does not contain",
                o["type"],
                o["id"]
            );
        }
        if o["type"] == "dashboard" {
            let panels: Value =
                serde_json::from_str(o["attributes"]["panelsJSON"].as_str().unwrap()).unwrap();
            let refs: BTreeSet<&str> = o["references"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap())
                .collect();
            for p in panels.as_array().unwrap() {
                // Kibana 8 names a panel's reference "<panelIndex>:<panelRefName>".
                let name = format!(
                    "{}:{}",
                    p["panelIndex"].as_str().unwrap(),
                    p["panelRefName"].as_str().unwrap()
                );
                assert!(
                    refs.contains(name.as_str()),
                    "panel without a reference: {p}"
                );
            }
        }
    }
    // The KQL that docs/kibana.md and docs/alerts.md tell people to type
    // names only fields the ECS lines carry (event.action, not event.name).
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/kibana.md"))
        .unwrap()
        + &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/alerts.md")).unwrap();
    let kql = regex::Regex::new(r#"`(event\.[a-z_]+: [^`\n]*)`"#).unwrap();
    let mut checked = 0;
    for c in kql.captures_iter(&docs) {
        for f in kql_fields(&c[1]) {
            assert!(
                fields.contains(&f),
                "the docs' KQL `{}` names {f:?}, which the ECS output lacks",
                &c[1]
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "the docs' KQL examples were not found");
}
