//! The injector's settings: what the injected sidecar looks like. Read from a
//! YAML file (the Helm chart renders it into a ConfigMap); unknown keys and bad
//! values are refused at start with the key, the value and what is accepted.

use std::path::Path;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Volume};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// The default sidecar image: this build's version.
pub fn default_image() -> String {
    format!(
        "ghcr.io/modelwatch/modelwatch:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// What the injector puts into a pod.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct InjectorConfig {
    /// The sidecar's image (`modelwatch.io/image` overrides it per pod).
    pub image: String,
    /// `IfNotPresent`, `Always` or `Never`.
    pub image_pull_policy: String,
    /// `true`: an init container with `restartPolicy: Always` (Kubernetes 1.29+),
    /// which starts before the model and lets Jobs complete. `false`: a regular
    /// container (older clusters); Job pods are then left alone.
    pub native_sidecar: bool,
    /// The sidecar's proxy port; it carries the name of the model's port.
    pub proxy_port: i32,
    /// The sidecar's admin port (metrics, health, status), named `mw-admin`.
    pub admin_port: i32,
    /// Where a model server is moved when the sidecar takes its port number
    /// (the first port from here up that nothing in the pod uses).
    pub moved_port: i32,
    /// Requests and limits (`modelwatch.io/cpu-request` etc. override them).
    pub resources: ResourceRequirements,
    /// The user and group the sidecar runs as (never root).
    pub run_as_user: i64,
    /// Size limit of the emptyDir that holds the embedded store.
    pub store_size_limit: String,
    /// A volume to use for the store instead of the emptyDir (its name is replaced).
    pub store_volume: Option<Volume>,
    /// Extra environment for every sidecar (e.g. OTEL_EXPORTER_OTLP_ENDPOINT).
    pub env: Vec<EnvVar>,
    /// `text` or `json`: the sidecar's log format.
    pub log_format: String,
    /// Add `prometheus.io/scrape`, `prometheus.io/port` and `prometheus.io/path`
    /// annotations for annotation-based scraping, when the pod has none.
    pub prometheus_annotations: bool,
}

impl Default for InjectorConfig {
    fn default() -> Self {
        let q = |s: &str| Quantity(s.to_string());
        InjectorConfig {
            image: default_image(),
            image_pull_policy: "IfNotPresent".into(),
            native_sidecar: true,
            proxy_port: 17080,
            admin_port: 17090,
            moved_port: 17100,
            resources: ResourceRequirements {
                requests: Some([("cpu".into(), q("50m")), ("memory".into(), q("64Mi"))].into()),
                limits: Some([("memory".into(), q("256Mi"))].into()),
                ..Default::default()
            },
            run_as_user: 65532,
            store_size_limit: "256Mi".into(),
            store_volume: None,
            env: Vec::new(),
            log_format: "json".into(),
            prometheus_annotations: true,
        }
    }
}

fn invalid(key: &str, value: impl ToString, accepted: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.to_string(),
        accepted: accepted.into(),
    }
}

/// A Kubernetes quantity (`250m`, `64Mi`, `1.5`, `2e3`).
pub fn is_quantity(s: &str) -> bool {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
            .expect("quantity pattern")
    })
    .is_match(s)
}

impl InjectorConfig {
    /// Reads and validates a YAML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Parses and validates YAML text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: InjectorConfig = if text.trim().is_empty() {
            InjectorConfig::default()
        } else {
            let de = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Parse {
                file: origin.into(),
                key: e.path().to_string(),
                message: e.into_inner().to_string(),
            })?
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks values that the types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.image.trim().is_empty() || self.image.contains(char::is_whitespace) {
            return Err(invalid(
                "image",
                &self.image,
                "an image reference, e.g. ghcr.io/modelwatch/modelwatch:0.1.0",
            ));
        }
        if !["IfNotPresent", "Always", "Never"].contains(&self.image_pull_policy.as_str()) {
            return Err(invalid(
                "image_pull_policy",
                &self.image_pull_policy,
                "IfNotPresent, Always or Never",
            ));
        }
        for (key, port) in [
            ("proxy_port", self.proxy_port),
            ("admin_port", self.admin_port),
            ("moved_port", self.moved_port),
        ] {
            if !(1..=65535).contains(&port) {
                return Err(invalid(key, port, "a port from 1 to 65535"));
            }
        }
        if self.proxy_port == self.admin_port {
            return Err(invalid(
                "admin_port",
                self.admin_port,
                "a port other than proxy_port",
            ));
        }
        if self.moved_port == self.proxy_port || self.moved_port == self.admin_port {
            return Err(invalid(
                "moved_port",
                self.moved_port,
                "a port other than proxy_port and admin_port",
            ));
        }
        if self.run_as_user <= 0 {
            return Err(invalid(
                "run_as_user",
                self.run_as_user,
                "a user id above 0 (the sidecar never runs as root)",
            ));
        }
        if !is_quantity(&self.store_size_limit) {
            return Err(invalid(
                "store_size_limit",
                &self.store_size_limit,
                "a Kubernetes quantity, e.g. 256Mi",
            ));
        }
        for (kind, map) in [
            ("requests", &self.resources.requests),
            ("limits", &self.resources.limits),
        ] {
            for (name, q) in map.iter().flatten() {
                if !is_quantity(&q.0) {
                    return Err(invalid(
                        &format!("resources.{kind}.{name}"),
                        &q.0,
                        "a Kubernetes quantity, e.g. 100m or 128Mi",
                    ));
                }
            }
        }
        if !["text", "json"].contains(&self.log_format.as_str()) {
            return Err(invalid("log_format", &self.log_format, "text or json"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_key() {
        InjectorConfig::default().validate().unwrap();
        let e = InjectorConfig::from_yaml("proxy_port: 0", "x").unwrap_err();
        assert!(e.to_string().contains("`proxy_port`"), "{e}");
        let e = InjectorConfig::from_yaml("imagePullPolicy: Always", "x").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = InjectorConfig::from_yaml("resources: {limits: {memory: lots}}", "x").unwrap_err();
        assert!(e.to_string().contains("resources.limits.memory"), "{e}");
        let e = InjectorConfig::from_yaml("admin_port: 17080", "x").unwrap_err();
        assert!(e.to_string().contains("other than proxy_port"), "{e}");
    }

    #[test]
    fn quantities() {
        for ok in ["1", "250m", "64Mi", "1.5", "2e3", ".5", "1Gi"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "lots", "1 Gi", "1GB", "Mi"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}
