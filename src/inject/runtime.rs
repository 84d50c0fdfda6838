//! Model servers whose listening port is a setting, and how to move one.
//!
//! Renaming the model's port puts modelwatch in the path only for Services
//! that target the port's name. KServe's RawDeployment Services target the
//! predictor's port by number, Knative's queue-proxy (KServe Serverless)
//! forwards to it by number, and an unnamed port can only be addressed by
//! number. There the injector moves the model server to another port, by
//! rewriting the flag or environment variable that sets it, and modelwatch
//! listens on the number the Service, the queue-proxy and the clients use.
//!
//! `detect` reads a container (image, command, arguments, environment) and
//! says which server it runs: the setting that moves its REST port and its
//! gRPC port, the REST port it listens on when nothing sets it, and the ports
//! it binds without declaring them, which the moved port must avoid.

use k8s_openapi::api::core::v1::{Container, EnvVar};

/// How a server's port is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    /// A command-line flag: `--port=N` or `--port N`, also inside a
    /// `sh -c` script.
    Flag(String),
    /// An environment variable; `{port}` in the template stands for the number.
    Env { name: String, template: String },
    /// The flag where the command line has it, else the variable (servers
    /// whose flag takes its default from the environment: TGI's `PORT`,
    /// llama.cpp's `LLAMA_ARG_PORT`).
    FlagOrEnv(String, String),
}

impl Setting {
    fn flag(f: &str) -> Setting {
        Setting::Flag(f.into())
    }

    fn env(name: &str) -> Setting {
        Setting::Env {
            name: name.into(),
            template: "{port}".into(),
        }
    }

    /// Parses the `modelwatch.io/model-port-arg` form: `--flag`, `env:NAME`
    /// or `env:NAME=template with {port}`.
    pub fn parse(s: &str) -> Option<Setting> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("env:") {
            let (name, template) = match rest.split_once('=') {
                Some((n, t)) if t.contains("{port}") => (n, t),
                Some(_) => return None,
                None => (rest, "{port}"),
            };
            let ok_name = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            return ok_name.then(|| Setting::Env {
                name: name.into(),
                template: template.into(),
            });
        }
        let ok_flag = s.starts_with('-')
            && s.len() > 1
            && !s.contains('=')
            && !s.contains(char::is_whitespace)
            && !s.trim_start_matches('-').is_empty();
        ok_flag.then(|| Setting::Flag(s.into()))
    }

    /// How the setting reads in a message.
    pub fn describe(&self) -> String {
        match self {
            Setting::Flag(f) => f.clone(),
            Setting::Env { name, .. } => format!("env {name}"),
            Setting::FlagOrEnv(f, e) => format!("{f} (or env {e})"),
        }
    }
}

/// A model server the injector can move.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub name: &'static str,
    /// Moves the REST port.
    pub http: Setting,
    /// Moves the gRPC port, where the server has one.
    pub grpc: Option<Setting>,
    /// The REST port when nothing sets it.
    pub default_port: i32,
    /// Ports it binds without declaring them: the setting that changes each
    /// (its current value is read) and the default.
    pub undeclared: Vec<(Setting, i32)>,
}

/// What `detect` found in a container.
#[derive(Debug, Clone)]
pub enum Detected {
    Movable(Runtime),
    /// A server whose port is not a flag or variable the injector can set.
    Unmovable {
        name: &'static str,
        advice: String,
    },
    Unknown,
}

/// The container's image and command line, lower-cased, to look for a
/// server's name in.
fn haystack(c: &Container) -> (String, String) {
    (
        c.image.as_deref().unwrap_or("").to_ascii_lowercase(),
        command_line(c).join(" ").to_ascii_lowercase(),
    )
}

fn has_env(c: &Container, name: &str) -> bool {
    c.env.iter().flatten().any(|e| e.name == name)
}

/// The KServe Python model servers (`kserve.ModelServer`): sklearn, xgboost,
/// lightgbm, pmml, paddle, huggingface and custom predictors.
const KSERVE_PYTHON_IMAGES: &[&str] = &[
    "sklearnserver",
    "xgbserver",
    "lgbserver",
    "pmmlserver",
    "paddleserver",
    "huggingfaceserver",
    "kserve-",
];

/// Which server the container runs. The sources of each row:
/// KServe's `python/kserve/kserve/model_server.py` (`--http_port` 8080,
/// `--grpc_port` 8081) and `config/runtimes/*.yaml`; MLServer's
/// `mlserver/settings.py` (`MLSERVER_HTTP_PORT` 8080, `MLSERVER_GRPC_PORT`
/// 8081, `MLSERVER_METRICS_PORT` 8082); `tritonserver --help` (`--http-port`
/// 8000, `--grpc-port` 8001, `--metrics-port` 8002); vLLM's
/// `vllm/entrypoints/openai/cli_args.py` (`--port` 8000); TGI's launcher
/// (`--port`, env `PORT`, 80 in its image); llama.cpp's `common/arg.cpp`
/// (`--port`, env `LLAMA_ARG_PORT`, 8080); TF Serving's
/// `model_servers/main.cc` (`--rest_api_port` 8501, `--port` 8500 for gRPC);
/// OpenVINO Model Server's `--rest_port` and `--port` (KServe's
/// `config/runtimes/kserve-ovms.yaml`). Servers that take `--model_name` but
/// are not KServe's (TF Serving, OpenVINO) are matched before KServe's.
pub fn detect(c: &Container) -> Detected {
    let (image, words) = haystack(c);
    let runs = |s: &str| image.contains(s) || words.contains(s);
    if runs("torchserve") {
        return Detected::Unmovable {
            name: "TorchServe",
            advice: "TorchServe reads its address from config.properties (inference_address); \
                     set enable_envvars_config=true there and annotate \
                     modelwatch.io/model-port-arg: env:TS_INFERENCE_ADDRESS=http://0.0.0.0:{port}"
                .into(),
        };
    }
    if runs("tritonserver") {
        return Detected::Movable(Runtime {
            name: "Triton",
            http: Setting::flag("--http-port"),
            grpc: Some(Setting::flag("--grpc-port")),
            default_port: 8000,
            undeclared: vec![
                (Setting::flag("--grpc-port"), 8001),
                (Setting::flag("--metrics-port"), 8002),
            ],
        });
    }
    if has_env(c, "MLSERVER_HTTP_PORT") || runs("mlserver") {
        return Detected::Movable(Runtime {
            name: "MLServer",
            http: Setting::env("MLSERVER_HTTP_PORT"),
            grpc: Some(Setting::env("MLSERVER_GRPC_PORT")),
            default_port: 8080,
            undeclared: vec![
                (Setting::env("MLSERVER_GRPC_PORT"), 8081),
                (Setting::env("MLSERVER_METRICS_PORT"), 8082),
            ],
        });
    }
    // TF Serving takes --model_name too (KServe's tensorflow-serving runtime).
    if runs("tensorflow/serving")
        || runs("tensorflow_model_server")
        || words.contains("--rest_api_port")
    {
        return Detected::Movable(Runtime {
            name: "TF Serving",
            http: Setting::flag("--rest_api_port"),
            grpc: Some(Setting::flag("--port")),
            default_port: 8501,
            undeclared: vec![(Setting::flag("--port"), 8500)],
        });
    }
    // OpenVINO Model Server (KServe's kserve-ovms runtime) takes
    // --model_name too; REST on --rest_port, gRPC on --port.
    if runs("openvino/model_server") || runs("ovms") || words.contains("--rest_port") {
        return Detected::Movable(Runtime {
            name: "OpenVINO Model Server",
            http: Setting::flag("--rest_port"),
            grpc: Some(Setting::flag("--port")),
            default_port: 8888,
            undeclared: vec![(Setting::flag("--port"), 9000)],
        });
    }
    if words.contains("--http_port")
        || words.contains("--model_name")
        || KSERVE_PYTHON_IMAGES.iter().any(|i| image.contains(i))
    {
        return Detected::Movable(Runtime {
            name: "KServe model server",
            http: Setting::flag("--http_port"),
            grpc: Some(Setting::flag("--grpc_port")),
            default_port: 8080,
            undeclared: vec![(Setting::flag("--grpc_port"), 8081)],
        });
    }
    if runs("text-generation-inference") || runs("text-generation-launcher") {
        return Detected::Movable(Runtime {
            name: "TGI",
            http: Setting::FlagOrEnv("--port".into(), "PORT".into()),
            grpc: None,
            default_port: 80,
            undeclared: Vec::new(),
        });
    }
    if runs("llama.cpp") || runs("llama-server") || runs("llama-cpp") {
        return Detected::Movable(Runtime {
            name: "llama.cpp server",
            http: Setting::FlagOrEnv("--port".into(), "LLAMA_ARG_PORT".into()),
            grpc: None,
            default_port: 8080,
            undeclared: Vec::new(),
        });
    }
    if runs("vllm") {
        return Detected::Movable(Runtime {
            name: "vLLM",
            http: Setting::flag("--port"),
            grpc: None,
            default_port: 8000,
            undeclared: Vec::new(),
        });
    }
    Detected::Unknown
}

/// `(^|\s)--flag(=|\s+)(\d+)` in a shell script.
fn flag_in_script(flag: &str) -> regex::Regex {
    regex::Regex::new(&format!(
        r"(^|\s){}(=|[ \t]+)([0-9]+)\b",
        regex::escape(flag)
    ))
    .expect("flag pattern")
}

/// The flag's value in a list of words: `--f=N`, `--f N`, or inside a script.
fn flag_value(words: &[String], flag: &str) -> Option<i32> {
    let script = flag_in_script(flag);
    for (i, w) in words.iter().enumerate() {
        if w == flag {
            return words.get(i + 1).and_then(|v| v.trim().parse().ok());
        }
        if let Some(v) = w.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
            return v.trim().parse().ok();
        }
        if w.contains(char::is_whitespace) {
            if let Some(c) = script.captures(w) {
                return c[3].parse().ok();
            }
        }
    }
    None
}

/// Sets the flag's value wherever it appears; how many places it changed.
fn set_flag_in(words: &mut [String], flag: &str, port: i32) -> usize {
    let script = flag_in_script(flag);
    let mut changed = 0;
    let mut i = 0;
    while i < words.len() {
        if words[i] == flag && i + 1 < words.len() {
            words[i + 1] = port.to_string();
            changed += 1;
            i += 1;
        } else if words[i].starts_with(&format!("{flag}=")) {
            words[i] = format!("{flag}={port}");
            changed += 1;
        } else if words[i].contains(char::is_whitespace) && script.is_match(&words[i]) {
            words[i] = script
                .replace_all(&words[i], format!("${{1}}{flag}${{2}}{port}"))
                .into_owned();
            changed += 1;
        }
        i += 1;
    }
    changed
}

fn command_line(c: &Container) -> Vec<String> {
    c.command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .cloned()
        .collect()
}

/// Whether the command is `sh -c '…'` (or bash, dash, ash).
fn is_shell(c: &Container) -> bool {
    let line = command_line(c);
    let shell = line.first().is_some_and(|w| {
        let base = w.rsplit('/').next().unwrap_or(w);
        ["sh", "bash", "dash", "ash", "zsh"].contains(&base)
    });
    shell && line.iter().any(|w| w.starts_with('-') && w.contains('c'))
}

fn env_value(c: &Container, name: &str) -> Option<String> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

/// The port the setting gives now, if it gives one.
pub fn current(c: &Container, s: &Setting) -> Option<i32> {
    let from_env = |name: &str, template: &str| {
        let v = env_value(c, name)?;
        let (before, after) = template.split_once("{port}")?;
        v.strip_prefix(before)?.strip_suffix(after)?.parse().ok()
    };
    match s {
        Setting::Flag(f) => flag_value(&command_line(c), f),
        Setting::Env { name, template } => from_env(name, template),
        Setting::FlagOrEnv(f, e) => {
            flag_value(&command_line(c), f).or_else(|| from_env(e, "{port}"))
        }
    }
}

fn set_env(c: &mut Container, name: &str, value: String) {
    let env = c.env.get_or_insert_with(Vec::new);
    match env.iter_mut().find(|e| e.name == name) {
        Some(e) => {
            e.value = Some(value);
            e.value_from = None;
        }
        None => env.push(EnvVar {
            name: name.into(),
            value: Some(value),
            ..Default::default()
        }),
    }
}

/// Sets the server's port to `port`. Err: why it cannot be set.
pub fn apply(c: &mut Container, s: &Setting, port: i32) -> Result<(), String> {
    match s {
        Setting::Env { name, template } => {
            set_env(c, name, template.replace("{port}", &port.to_string()));
            Ok(())
        }
        Setting::FlagOrEnv(f, e) => {
            if flag_value(&command_line(c), f).is_some() {
                apply(c, &Setting::Flag(f.clone()), port)
            } else {
                set_env(c, e, port.to_string());
                Ok(())
            }
        }
        Setting::Flag(f) => {
            let mut changed = 0;
            if let Some(cmd) = c.command.as_mut() {
                changed += set_flag_in(cmd, f, port);
            }
            if let Some(args) = c.args.as_mut() {
                changed += set_flag_in(args, f, port);
            }
            if changed > 0 {
                return Ok(());
            }
            if is_shell(c) {
                return Err(format!(
                    "its command is a shell script that does not set {f} to a number"
                ));
            }
            if c.command.is_none() && c.args.is_none() {
                return Err(format!(
                    "it sets no command or args, so the image's own command runs and {f} cannot be added to it"
                ));
            }
            c.args
                .get_or_insert_with(Vec::new)
                .push(format!("{f}={port}"));
            Ok(())
        }
    }
}

/// The ports the server binds without declaring them, as set now.
pub fn undeclared_ports(c: &Container, rt: &Runtime) -> Vec<i32> {
    rt.undeclared
        .iter()
        .map(|(s, default)| current(c, s).unwrap_or(*default))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(json: serde_json::Value) -> Container {
        serde_json::from_value(json).unwrap()
    }

    fn movable(c: &Container) -> Runtime {
        match detect(c) {
            Detected::Movable(rt) => rt,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kserve_python_server_moves_by_its_flag() {
        let mut c = container(serde_json::json!({
            "name": "kserve-container", "image": "kserve/sklearnserver:v0.14.0",
            "args": ["--model_name=iris", "--model_dir=/mnt/models", "--http_port=8080"]
        }));
        let rt = movable(&c);
        assert_eq!(current(&c, &rt.http), Some(8080));
        assert_eq!(undeclared_ports(&c, &rt), vec![8081]);
        apply(&mut c, &rt.http, 17100).unwrap();
        assert_eq!(c.args.as_ref().unwrap()[2], "--http_port=17100");
        // Without the flag (the server's default): appended to the args.
        let mut c = container(serde_json::json!({
            "name": "kserve-container", "image": "kserve/sklearnserver:v0.14.0",
            "args": ["--model_name=iris", "--model_dir=/mnt/models"]
        }));
        apply(&mut c, &rt.http, 17100).unwrap();
        assert_eq!(c.args.as_ref().unwrap()[2], "--http_port=17100");
    }

    #[test]
    fn flags_in_two_words_and_in_shell_scripts() {
        // KServe's vLLM runtime: the port is inside a bash -c script.
        let mut c = container(serde_json::json!({
            "name": "kserve-container", "image": "kserve/vllmserver:latest",
            "command": ["bash", "-c", "export MODEL=${MODEL_DIR}\nvllm serve ${MODEL} --host 0.0.0.0 --port 8000 $@\n", "bash"]
        }));
        let rt = movable(&c);
        assert_eq!(rt.name, "vLLM");
        assert_eq!(current(&c, &rt.http), Some(8000));
        apply(&mut c, &rt.http, 17100).unwrap();
        assert!(c.command.as_ref().unwrap()[2].contains("--host 0.0.0.0 --port 17100 $@"));
        // `--port 8000` as two words; `--port-file` is another flag.
        let mut c = container(serde_json::json!({
            "name": "vllm", "image": "vllm/vllm-openai:v0.6.3",
            "args": ["--model", "m", "--port-file", "x", "--port", "8000"]
        }));
        apply(&mut c, &Setting::flag("--port"), 17100).unwrap();
        assert_eq!(
            c.args.unwrap(),
            ["--model", "m", "--port-file", "x", "--port", "17100"]
        );
        // A script that does not set it, and a container that runs the
        // image's own command: refused, with the reason.
        let mut c = container(serde_json::json!({
            "name": "m", "image": "vllm/vllm-openai", "command": ["sh", "-c", "exec vllm serve m"]
        }));
        assert!(apply(&mut c, &Setting::flag("--port"), 1)
            .unwrap_err()
            .contains("shell script"));
        let mut c = container(serde_json::json!({"name": "m", "image": "vllm/vllm-openai"}));
        assert!(apply(&mut c, &Setting::flag("--port"), 1)
            .unwrap_err()
            .contains("image's own command"));
    }

    #[test]
    fn environment_settings() {
        let mut c = container(serde_json::json!({
            "name": "kserve-container", "image": "docker.io/seldonio/mlserver:1.7.1",
            "env": [{"name": "MLSERVER_HTTP_PORT", "value": "8080"}, {"name": "MLSERVER_GRPC_PORT", "value": "9000"}]
        }));
        let rt = movable(&c);
        assert_eq!(rt.name, "MLServer");
        assert_eq!(undeclared_ports(&c, &rt), vec![9000, 8082]);
        apply(&mut c, &rt.http, 17100).unwrap();
        assert_eq!(
            env_value(&c, "MLSERVER_HTTP_PORT").as_deref(),
            Some("17100")
        );
        // TGI: the flag where given, else the environment its flag reads.
        let mut c = container(serde_json::json!({
            "name": "tgi", "image": "ghcr.io/huggingface/text-generation-inference:2.4",
            "args": ["--model-id", "m"]
        }));
        let rt = movable(&c);
        apply(&mut c, &rt.http, 17100).unwrap();
        assert_eq!(env_value(&c, "PORT").as_deref(), Some("17100"));
        assert_eq!(c.args.unwrap(), ["--model-id", "m"]);
        // A template (TorchServe's address, by annotation).
        let s = Setting::parse("env:TS_INFERENCE_ADDRESS=http://0.0.0.0:{port}").unwrap();
        let mut c = container(serde_json::json!({"name": "ts", "image": "pytorch/torchserve"}));
        apply(&mut c, &s, 17100).unwrap();
        assert_eq!(current(&c, &s), Some(17100));
        assert!(matches!(detect(&c), Detected::Unmovable { .. }));
    }

    #[test]
    fn triton_tf_serving_and_llama_cpp() {
        // KServe's Triton runtime: REST and gRPC flags, metrics undeclared.
        let mut c = container(serde_json::json!({
            "name": "kserve-container", "image": "nvcr.io/nvidia/tritonserver:24.08-py3",
            "args": ["tritonserver", "--model-store=/mnt/models", "--grpc-port=9000", "--http-port=8080"]
        }));
        let rt = movable(&c);
        assert_eq!(rt.name, "Triton");
        assert_eq!(undeclared_ports(&c, &rt), vec![9000, 8002]);
        apply(&mut c, rt.grpc.as_ref().unwrap(), 17101).unwrap();
        apply(&mut c, &rt.http, 17100).unwrap();
        assert_eq!(
            c.args.as_ref().unwrap()[2..],
            ["--grpc-port=17101", "--http-port=17100"]
        );
        // TF Serving: --rest_api_port appended; --port is its gRPC port.
        let mut c = container(serde_json::json!({
            "name": "tfs", "image": "tensorflow/serving:2.17.0",
            "args": ["--model_name=half_plus_two", "--model_base_path=/models/half_plus_two"]
        }));
        let rt = movable(&c);
        assert_eq!((rt.name, rt.default_port), ("TF Serving", 8501));
        assert_eq!(undeclared_ports(&c, &rt), vec![8500]);
        apply(&mut c, &rt.http, 17100).unwrap();
        assert_eq!(c.args.as_ref().unwrap()[2], "--rest_api_port=17100");
        // llama.cpp's server image with no --port: its variable.
        let mut c = container(serde_json::json!({
            "name": "llama", "image": "ghcr.io/ggml-org/llama.cpp:server",
            "args": ["-m", "/models/m.gguf"]
        }));
        let rt = movable(&c);
        apply(&mut c, &rt.http, 17100).unwrap();
        assert_eq!(env_value(&c, "LLAMA_ARG_PORT").as_deref(), Some("17100"));
        // KServe's OpenVINO runtime: not a KServe Python server, though it
        // takes --model_name.
        let mut c = container(serde_json::json!({
            "name": "kserve-container", "image": "openvino/model_server:2024.4",
            "args": ["--model_name=m", "--port=8001", "--rest_port=8888", "--model_path=/mnt/models"]
        }));
        let rt = movable(&c);
        assert_eq!(rt.name, "OpenVINO Model Server");
        assert_eq!(undeclared_ports(&c, &rt), vec![8001]);
        apply(&mut c, &rt.http, 17100).unwrap();
        assert_eq!(c.args.as_ref().unwrap()[2], "--rest_port=17100");
        assert!(!c.args.unwrap().iter().any(|a| a.starts_with("--http_port")));
        // An unknown image.
        let c = container(serde_json::json!({"name": "m", "image": "example/model:1"}));
        assert!(matches!(detect(&c), Detected::Unknown));
    }

    #[test]
    fn annotation_forms() {
        assert_eq!(Setting::parse("--port"), Some(Setting::flag("--port")));
        assert_eq!(Setting::parse("env:PORT"), Some(Setting::env("PORT")));
        for bad in [
            "port",
            "--port=8080",
            "env:",
            "env:1X",
            "env:A=no-placeholder",
            "--",
            "- -x",
        ] {
            assert_eq!(Setting::parse(bad), None, "{bad}");
        }
    }
}
