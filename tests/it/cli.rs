//! The command line as a user meets it: --version, check-config, bad config at
//! start, and the demo.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn modelwatch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_modelwatch"));
    for (k, _) in std::env::vars() {
        if k.starts_with("MODELWATCH_") || k.starts_with("OTEL_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn version() {
    let out = modelwatch().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("modelwatch {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_prints_the_effective_config() {
    let (_d, path) = temp_file(
        "ok.yaml",
        "proxy:\n  upstream: http://127.0.0.1:8001\nsampling:\n  rate: 0.5\n",
    );
    let out = modelwatch()
        .args(["check-config", path.to_str().unwrap()])
        .env("OTEL_SERVICE_NAME", "iris")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("upstream: http://127.0.0.1:8001"), "{text}");
    assert!(text.contains("rate: 0.5"), "{text}");
    assert!(text.contains("service_name: iris"), "{text}");
}

#[test]
fn bad_config_is_refused_with_key_value_and_what_is_accepted() {
    for (yaml, env, wants) in [
        (
            "proxy:\n  lisen: 0.0.0.0:1\n",
            None,
            vec!["proxy.lisen", "unknown field", "listen"],
        ),
        (
            "proxy:\n  listen: 0.0.0.0\n",
            None,
            vec!["proxy.listen", "0.0.0.0", "IP address and port"],
        ),
        (
            "proxy:\n  upstream: localhost:8000\n",
            None,
            vec!["proxy.upstream", "localhost:8000", "https:// URL"],
        ),
        (
            "sampling:\n  rate: 1.01\n",
            None,
            vec!["sampling.rate", "1.01", "from 0 to 1"],
        ),
        (
            "",
            Some(("MODELWATCH_SAMPLE_RATE", "7")),
            vec!["sampling.rate", "7"],
        ),
        (
            "",
            Some(("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem")),
            vec![
                "telemetry.otlp.tls.ca_file",
                "/nonexistent/ca.pem",
                "readable PEM",
            ],
        ),
        (
            "telemetry:\n  otlp:\n    tls:\n      cert_file: /etc/hostname\n",
            None,
            vec!["telemetry.otlp.tls.key_file", "private key"],
        ),
        (
            "admin:\n  tls:\n    cert_file: /etc/hostname\n    key_file: /etc/hostname\n",
            None,
            vec!["admin.tls.cert_file", "/etc/hostname"],
        ),
        (
            "proxy:\n  upstream: https://127.0.0.1:8443\n  upstream_tls:\n    server_name: 'not a name'\n",
            None,
            vec!["proxy.upstream_tls.server_name", "not a name", "a DNS name or an IP address"],
        ),
        (
            "alerts:\n  webhooks:\n    - name: hook\n      url: https://hooks:8443/x\n      bearer_token_file: /nonexistent/token\n  rules:\n    - {name: A, figure: modelwatch.upstream.up, below: 1}\n",
            None,
            vec!["bearer_token_file", "/nonexistent/token"],
        ),
    ] {
        let (_d, path) = temp_file("bad.yaml", yaml);
        let mut cmd = modelwatch();
        cmd.args(["check-config", path.to_str().unwrap()]);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{yaml}");
        let err = String::from_utf8_lossy(&out.stderr);
        for want in wants {
            assert!(err.contains(want), "{yaml:?}: {err:?} lacks {want:?}");
        }
    }
    // `run` refuses the same way, before binding anything.
    let (_d, path) = temp_file("bad.yaml", "sampling:\n  rate: 2\n");
    let out = modelwatch()
        .args(["run", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sampling.rate"));
    // Flags override the file.
    let out = modelwatch()
        .args([
            "run",
            "--config",
            path.to_str().unwrap(),
            "--upstream",
            "nope",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = modelwatch()
        .args([
            "run",
            "--listen",
            &addr,
            "--admin-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("proxy.listen") && err.contains(&addr), "{err}");
}

/// Runs `modelwatch run` with `config` on free ports, expects it to refuse
/// to start, and returns what it wrote to stderr.
fn refused_at_start(config: &std::path::Path) -> String {
    let out = modelwatch()
        .args(["run", "--config", config.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_store_that_cannot_be_opened_is_a_clear_error() {
    let (_dir, path) = temp_file("m.yaml", "quality:\n  store_path: /dev/null/quality.redb\n");
    let err = refused_at_start(&path);
    assert!(
        err.contains("quality.store_path") && err.contains("/dev/null/quality.redb"),
        "{err}"
    );
}

#[test]
fn a_corrupt_or_newer_profile_is_refused_at_start() {
    for (text, wants) in [
        ("{\"format\": \"modelwatch-profile\", \"version\": 1, \"rows\": 3, \"features\": [{\"name\": ", "not a modelwatch profile"),
        ("{\"format\": \"modelwatch-profile\", \"version\": 99, \"rows\": 3, \"features\": []}", "newer modelwatch"),
    ] {
        let (_d1, profile) = temp_file("p.json", text);
        let (_d2, config) = temp_file(
            "m.yaml",
            &format!("drift:\n  profiles:\n    bc: {}\n", profile.display()),
        );
        let err = refused_at_start(&config);
        assert!(
            err.contains(wants) && err.contains(profile.to_str().unwrap()) && err.contains("drift.profiles"),
            "{err}"
        );
    }
    let out = modelwatch()
        .args([
            "profile",
            "--input",
            "data.parquet",
            "--output",
            "/tmp/x.json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("accepted: .csv, .jsonl"));
}

#[test]
fn demo_runs_and_shows_traffic() {
    let out = modelwatch()
        .args([
            "demo",
            "--duration",
            "6s",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--admin-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("/metrics"), "{stdout}");
    assert!(stdout.contains("upstream up: true"), "{stdout}");
    let sent: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("demo finished: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("summary line");
    assert!(sent > 20, "{stdout}");
}

/// `modelwatch demo --config FILE`: the docs' ECS example on the demo's
/// traffic; a bad key in the file is refused with its name.
#[test]
fn demo_takes_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let ecs = dir.path().join("ecs.ndjson");
    let config = dir.path().join("demo.yaml");
    std::fs::write(
        &config,
        format!(
            "ecs_logs:\n  enabled: true\n  output: {}\npayload_logs:\n  enabled: true\n",
            ecs.display()
        ),
    )
    .unwrap();
    let args = |c: &std::path::Path| {
        vec![
            "demo".to_string(),
            "--duration".into(),
            "6s".into(),
            "--listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--admin-listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--config".into(),
            c.display().to_string(),
        ]
    };
    let out = modelwatch().args(args(&config)).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = std::fs::read_to_string(&ecs).unwrap_or_default();
    let records = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.to_string().contains("demo-classifier"))
        .count();
    assert!(
        records > 0,
        "no ECS lines of the demo's classifier in {lines}"
    );

    std::fs::write(&config, "alerts:\n  rulez: []\n").unwrap();
    let out = modelwatch().args(args(&config)).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("rulez"), "{stderr}");
}

/// Fails on a JSON object with a key twice (log shippers keep only one).
fn assert_unique_keys(line: &str) {
    struct Unique;
    impl<'de> serde::Deserialize<'de> for Unique {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Unique, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Unique;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Unique, A::Error> {
                    let mut seen = std::collections::HashSet::new();
                    while let Some(k) = map.next_key::<String>()? {
                        if !seen.insert(k.clone()) {
                            return Err(serde::de::Error::custom(format!("key {k} twice")));
                        }
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                    Ok(Unique)
                }
            }
            d.deserialize_map(V)
        }
    }
    if let Err(e) = serde_json::from_str::<Unique>(line) {
        panic!("{e}: {line}");
    }
}

/// Text logs written to a file or a pipe carry no colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_to_a_file_have_no_colour_codes() {
    let up = TestUpstream::start().await;
    let mw = Modelwatch::start(Options::new(up.url())).await;
    let log = mw.log_text();
    assert!(log.contains("modelwatch started"), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escape codes in {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let up = TestUpstream::start().await;
    let mw = Modelwatch::start(Options::new(up.url()).env("MODELWATCH_LOG_FORMAT", "json")).await;
    let _ = http().get(mw.url("/headers")).send().await.unwrap();
    let log = mw.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        assert_unique_keys(line);
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(log.contains("modelwatch started"));
    // The readiness line names the upstream once, beside the tracing target.
    let ready = log
        .lines()
        .find(|l| l.contains("model server is reachable"))
        .unwrap_or_else(|| panic!("no readiness line in {log}"));
    let v: serde_json::Value = serde_json::from_str(ready).unwrap();
    assert_eq!(v["upstream"], up.url(), "{ready}");
    assert_eq!(v["target"], "modelwatch::admin::readiness", "{ready}");
}

/// SIGHUP (what config reloaders send) never ends modelwatch: traffic flows
/// on, not one request fails, and the log says what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_is_never_an_exit() {
    let up = TestUpstream::start().await;
    let mut mw = Modelwatch::start(Options::new(up.url())).await;
    let pid = mw.child.as_ref().unwrap().id();
    let url = mw.url("/headers");
    let load = tokio::spawn(async move {
        let client = http();
        let mut failed = 0;
        for _ in 0..300 {
            match client.get(&url).send().await {
                Ok(r) if r.status() == 200 => {
                    let _ = r.bytes().await;
                }
                _ => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        failed
    });
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    assert_eq!(load.await.unwrap(), 0, "requests failed around SIGHUP");
    assert!(
        mw.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "modelwatch exited on SIGHUP"
    );
    let log = mw.log_text();
    assert_eq!(log.matches("SIGHUP received").count(), 3, "{log}");
    assert!(mw.terminate().success());
}
