//! Kubernetes delivery without a cluster: the injection webhook over TLS
//! (tests/k8s/admission_table.py posts API-server-shaped AdmissionReviews,
//! applies the patches with the jsonpatch package and validates the pods with
//! kubernetes-validate --strict), and the Helm chart rendered by the real helm
//! binary for several value sets (tests/k8s/chart_check.py validates every
//! manifest).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::models::testbed;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn k8s_python() -> PathBuf {
    let p = testbed().join("venvs/k8s/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/testbed.sh k8s",
        p.display()
    );
    p
}

/// A CA, and two serving certificates for 127.0.0.1 signed by it.
fn certificates(dir: &Path) {
    test_ca(dir);
    for name in ["tls", "new"] {
        server_certificate(dir, name, "DNS:localhost,IP:127.0.0.1");
    }
    std::fs::copy(dir.join("tls.crt"), dir.join("legacy.crt")).unwrap();
    std::fs::copy(dir.join("tls.key"), dir.join("legacy.key")).unwrap();
}

struct Webhook {
    child: Child,
    port: u16,
    metrics_port: u16,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        send_sigterm(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_webhook(dir: &Path, cert: &str, key: &str, config: Option<&str>) -> Webhook {
    let port = free_port();
    let metrics_port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_modelwatch"));
    cmd.arg("inject-webhook")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .args([
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--reload-interval",
            "1s",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("webhook-{port}.log"))).unwrap());
    if let Some(c) = config {
        let path = dir.join(format!("injector-{port}.yaml"));
        std::fs::write(&path, c).unwrap();
        cmd.arg("--config").arg(path);
    }
    let child = cmd.spawn().expect("start modelwatch inject-webhook");
    let hook = Webhook {
        child,
        port,
        metrics_port,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_err() {
        assert!(Instant::now() < deadline, "the webhook did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    hook
}

fn run_python(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(k8s_python())
        .args(args)
        .output()
        .expect("run the k8s venv's python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn injection_webhook_patches_a_table_of_pods_into_valid_pods() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let native = start_webhook(dir.path(), "tls.crt", "tls.key", None);
    let legacy = start_webhook(
        dir.path(),
        "legacy.crt",
        "legacy.key",
        Some("native_sidecar: false\n"),
    );
    let script = root().join("tests/k8s/admission_table.py");
    let d = dir.path();
    let native_url = format!("https://127.0.0.1:{}/mutate", native.port);
    let legacy_url = format!("https://127.0.0.1:{}/mutate", legacy.port);
    let metrics_url = format!("http://127.0.0.1:{}/metrics", native.metrics_port);
    let out = run_python(&[
        script.as_os_str(),
        "--native".as_ref(),
        native_url.as_ref(),
        "--legacy".as_ref(),
        legacy_url.as_ref(),
        "--ca".as_ref(),
        d.join("ca.crt").as_os_str(),
        "--reload".as_ref(),
        d.join("tls.crt").as_os_str(),
        d.join("tls.key").as_os_str(),
        d.join("new.crt").as_os_str(),
        d.join("new.key").as_os_str(),
        "--metrics".as_ref(),
        metrics_url.as_ref(),
    ]);
    println!("{out}");
    assert!(out.contains("error paths passed"), "{out}");
    drop(legacy);
    drop(native);
}

#[test]
fn injector_refuses_a_bad_config_and_a_missing_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, cfg) = temp_file("injector.yaml", "proxy_port: 17090\nadmin_port: 17090\n");
    let out = Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args([
            "inject-webhook",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(&cfg)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`admin_port`") && err.contains("17090"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args([
            "inject-webhook",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(["--tls-cert", "missing.crt", "--tls-key", "missing.key"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("missing.crt"), "{err}");
}

#[test]
fn helm_chart_renders_valid_manifests_for_every_value_set() {
    let helm = testbed().join("k8s/bin/helm");
    assert!(
        helm.exists(),
        "{} is missing: run scripts/testbed.sh k8s",
        helm.display()
    );
    let script = root().join("tests/k8s/chart_check.py");
    let chart = root().join("helm/modelwatch");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_modelwatch"));
    let promtool = testbed_bin("promtool");
    let out = run_python(&[
        script.as_os_str(),
        "--helm".as_ref(),
        helm.as_os_str(),
        "--chart".as_ref(),
        chart.as_os_str(),
        "--modelwatch".as_ref(),
        bin.as_os_str(),
        "--promtool".as_ref(),
        promtool.as_os_str(),
    ]);
    println!("{out}");
    assert!(out.contains("valid manifests for every value set"), "{out}");
}

#[test]
fn the_chart_carries_the_same_prometheus_rules_as_deploy() {
    let chart =
        std::fs::read_to_string(root().join("helm/modelwatch/files/modelwatch-rules.yml")).unwrap();
    let deploy =
        std::fs::read_to_string(root().join("deploy/prometheus/modelwatch-rules.yml")).unwrap();
    assert!(
        chart == deploy,
        "helm/modelwatch/files/modelwatch-rules.yml differs from deploy/prometheus/modelwatch-rules.yml: copy the latter over the former"
    );
}

#[test]
fn deploy_manifests_are_valid_and_route_through_the_sidecar() {
    let script = root().join("tests/k8s/deploy_check.py");
    let deploy = root().join("deploy");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_modelwatch"));
    let out = run_python(&[
        script.as_os_str(),
        "--deploy".as_ref(),
        deploy.as_os_str(),
        "--modelwatch".as_ref(),
        bin.as_os_str(),
    ]);
    println!("{out}");
    assert!(out.contains("deploy/ manifests are valid"), "{out}");
}

/// What hadolint would catch that matters here (hadolint is not in the
/// registries this project installs from): pinned bases, a multi-stage build,
/// a non-root final user, exec-form entrypoint, and the build command that
/// scripts/image-build-check.sh runs in CI.
#[test]
fn dockerfile_builds_with_the_ci_command_and_runs_as_non_root() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let froms: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "not a multi-stage build: {froms:?}");
    for f in &froms {
        let image = f.split_whitespace().nth(1).unwrap();
        let tag = image.rsplit('/').next().unwrap();
        assert!(
            tag.contains(':') && !tag.ends_with(":latest"),
            "base image not pinned by tag: {f}"
        );
    }
    let final_stage: Vec<&str> = lines
        .iter()
        .copied()
        .skip_while(|l| *l != *froms.last().unwrap())
        .collect();
    let user = final_stage
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the final stage sets USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric USER");
    assert!(uid > 0, "the image runs as root");
    assert!(
        final_stage.iter().any(|l| l.starts_with("ENTRYPOINT [\"")),
        "ENTRYPOINT is not in exec form"
    );
    assert!(
        lines.contains(&"RUN cargo build --release --locked --bin modelwatch"),
        "the build stage's cargo command changed: keep it --locked and building the modelwatch binary"
    );
    let check = std::fs::read_to_string(root().join("scripts/test.sh")).unwrap();
    assert!(
        check.contains("scripts/image-build-check.sh"),
        "CI no longer builds the image's binary"
    );
    // The Helm chart and the injector default to the image this builds.
    let values = std::fs::read_to_string(root().join("helm/modelwatch/values.yaml")).unwrap();
    assert!(values.contains("repository: ghcr.io/modelwatch/modelwatch"));
    assert!(
        modelwatch::inject::config::default_image().starts_with("ghcr.io/modelwatch/modelwatch:")
    );
    let chart = std::fs::read_to_string(root().join("helm/modelwatch/Chart.yaml")).unwrap();
    assert!(
        chart.contains(&format!("appVersion: \"{}\"", env!("CARGO_PKG_VERSION"))),
        "Chart.yaml appVersion differs from the crate version"
    );
}
