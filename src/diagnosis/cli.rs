//! `modelwatch diagnose`: asks a running sidecar's admin server for its
//! diagnosis and prints it for a person (or as JSON).

use std::time::Duration;

use clap::Args;

/// Flags of `diagnose`.
#[derive(Debug, Args, Clone)]
pub struct DiagnoseArgs {
    /// The sidecar's admin address.
    #[arg(long, default_value = "http://127.0.0.1:17090")]
    pub admin: String,
    /// Only this model.
    #[arg(long)]
    pub model: Option<String>,
    /// Only this model version.
    #[arg(long)]
    pub version: Option<String>,
    /// A quality window (default: the first of `quality.windows`).
    #[arg(long)]
    pub window: Option<String>,
    /// Print the answer of `/v1/diagnose` as it came.
    #[arg(long)]
    pub json: bool,
}

/// The URL of the diagnosis the flags ask for.
pub fn url(args: &DiagnoseArgs) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("model", &args.model),
        ("version", &args.version),
        ("window", &args.window),
    ] {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    let q = q.finish();
    let base = args.admin.trim_end_matches('/');
    if q.is_empty() {
        format!("{base}/v1/diagnose")
    } else {
        format!("{base}/v1/diagnose?{q}")
    }
}

pub fn run(args: DiagnoseArgs) -> Result<(), String> {
    let url = url(&args);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let client = crate::outbound::client_no_pool(&Default::default());
    let (status, body) = rt.block_on(crate::outbound::get_answer(
        &client,
        &url,
        16 << 20,
        Duration::from_secs(10),
    ))?;
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
        format!("{url}: HTTP {status}, not a diagnosis (is this modelwatch's admin port?)")
    })?;
    if !status.is_success() {
        let reason = v["error"]["message"].as_str().unwrap_or("no reason given");
        return Err(format!("{url}: HTTP {status}: {reason}"));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", render(&v));
    }
    Ok(())
}

/// The diagnoses as text: a verdict line per model version, its scores,
/// its findings best first, and what was missing.
pub fn render(v: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let list = v["diagnoses"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        out.push_str("no model seen yet: nothing to diagnose\n");
    }
    for d in list {
        let version = d["model_version"].as_str().unwrap_or("");
        let _ = writeln!(
            out,
            "{}{}{} (window {}): {}",
            d["model"].as_str().unwrap_or(""),
            if version.is_empty() { "" } else { " " },
            version,
            d["window"].as_str().unwrap_or(""),
            d["verdict"].as_str().unwrap_or("")
        );
        let _ = writeln!(out, "  {}", d["summary"].as_str().unwrap_or(""));
        if let Some(s) = d["scores"].as_object() {
            let scores: Vec<String> = s
                .iter()
                .map(|(k, v)| format!("{k} {:.2}", v.as_f64().unwrap_or(0.0)))
                .collect();
            let _ = writeln!(out, "  scores: {}", scores.join(", "));
        }
        for f in d["findings"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  [{} {:.2}] {}: {}",
                f["cause"].as_str().unwrap_or(""),
                f["score"].as_f64().unwrap_or(0.0),
                f["kind"].as_str().unwrap_or(""),
                f["summary"].as_str().unwrap_or("")
            );
        }
        for m in d["missing"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "  missing: {}", m.as_str().unwrap_or(""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_and_the_text() {
        let args = DiagnoseArgs {
            admin: "http://127.0.0.1:17090/".into(),
            model: Some("bc".into()),
            version: Some("v 2".into()),
            window: None,
            json: false,
        };
        assert_eq!(
            url(&args),
            "http://127.0.0.1:17090/v1/diagnose?model=bc&version=v+2"
        );
        let v = serde_json::json!({"diagnoses": [{
            "model": "bc", "model_version": "v2", "window": "5m", "verdict": "model",
            "summary": "version v2 was first seen in the window",
            "scores": {"data": 0.0, "environment": 0.0, "model": 0.9},
            "findings": [{"cause": "model", "score": 0.9, "kind": "version", "summary": "v2 is worse"}],
            "missing": ["no drift reference for this model yet"]}]});
        assert_eq!(
            render(&v),
            "bc v2 (window 5m): model\n  version v2 was first seen in the window\n  scores: data 0.00, environment 0.00, model 0.90\n  [model 0.90] version: v2 is worse\n  missing: no drift reference for this model yet\n"
        );
        assert_eq!(
            render(&serde_json::json!({"diagnoses": []})),
            "no model seen yet: nothing to diagnose\n"
        );
    }
}
