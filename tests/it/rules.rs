//! The Prometheus rules shipped in deploy/prometheus/: valid for a real
//! promtool, their unit tests pass, and every series they read is one
//! modelwatch exports.

use std::process::Command;

use crate::common::testbed_bin;

fn deploy(path: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/prometheus")
        .join(path)
}

fn promtool(args: &[&str]) {
    let out = Command::new(testbed_bin("promtool"))
        .args(args)
        .current_dir(deploy(""))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_backend_rules_pass_promtool_check_and_their_unit_tests() {
    promtool(&["check", "rules", "modelwatch-rules.yml"]);
    promtool(&["test", "rules", "modelwatch-rules.test.yml"]);
}

#[test]
fn the_backend_rules_read_only_series_modelwatch_exports() {
    let text = std::fs::read_to_string(deploy("modelwatch-rules.yml")).unwrap();
    let exported: Vec<String> = modelwatch::telemetry::names::ALL
        .iter()
        .map(modelwatch::telemetry::prometheus_name)
        .collect();
    let re = regex::Regex::new(r"\b((?:modelwatch|gen_ai|http_server)_[a-z_]+)").unwrap();
    let mut checked = 0;
    for m in re.captures_iter(&text) {
        let name = &m[1];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        // Recording rules' own names (level:metric:operations) contain colons; their middle part is not a series.
        if text.contains(&format!(":{name}:")) {
            continue;
        }
        // Label names (gen_ai.request.model as a label) are not series.
        if name == "gen_ai_request_model" {
            continue;
        }
        assert!(
            exported.iter().any(|e| e == base),
            "{name} is not a series modelwatch exports"
        );
        checked += 1;
    }
    assert!(checked >= 6, "{checked}");
}
