//! What a live reload may change: the keys that differ between two configs,
//! which of them a running modelwatch applies in place, and the config that is
//! then in force (the new values of live keys, the running values of the
//! others until a restart).

use serde_json::Value;

use super::Config;

/// Settings a reload applies without a restart (a key matches when it is one
/// of these or lies under one). Everything else (listeners, the upstream, the
/// stores, queue and memory bounds, exporters) needs a restart, and a reload
/// that changes it says so.
pub const LIVE_KEYS: &[&str] = &[
    "alerts",
    "sampling.rate",
    "protocol",
    "drift.profiles",
    "drift.ranges",
    "drift.numeric_method",
    "drift.categorical_method",
    "drift.large_sample",
    "drift.p_value_threshold",
    "drift.distance_threshold",
    "drift.correction",
    "drift.dataset_share",
    "drift.min_samples",
    "drift.refresh_interval",
    "quality.windows",
    "quality.min_samples",
    "quality.refresh_interval",
    "quality.label_ttl",
    "quality.early_label_ttl",
    "quality.sync_interval",
    "payload_logs.content",
    "payload_logs.redact_builtin",
    "payload_logs.redact_patterns",
    "payload_logs.max_record_bytes",
    "rollout.gate",
];

/// Whether `key` (dotted, e.g. `alerts.rules`) is applied by a reload.
pub fn is_live(key: &str) -> bool {
    LIVE_KEYS
        .iter()
        .any(|p| key == *p || (key.starts_with(p) && key.as_bytes().get(p.len()) == Some(&b'.')))
}

/// The dotted keys whose values differ. Maps are compared key by key, lists
/// as a whole (a changed rule list is one change of `alerts.rules`).
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let old = serde_json::to_value(old).expect("config serializes");
    let new = serde_json::to_value(new).expect("config serializes");
    let mut out = Vec::new();
    diff("", &old, &new, &mut out);
    out
}

fn diff(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) if !is_map_setting(path) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff(
                    &child,
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if old != new => out.push(path.to_string()),
        _ => {}
    }
}

/// Settings whose value is a map of the user's own keys (model names, header
/// names): one setting, compared whole.
fn is_map_setting(path: &str) -> bool {
    matches!(
        path,
        "drift.profiles"
            | "drift.ranges"
            | "telemetry.otlp.headers"
            | "telemetry.resource_attributes"
            | "quality.kafka.properties"
    )
}

/// The config in force after a reload from `running` to `loaded`: `loaded`
/// with every key that needs a restart set back to its running value.
pub fn in_force(running: &Config, loaded: &Config, restart: &[String]) -> Config {
    if restart.is_empty() {
        return loaded.clone();
    }
    let old = serde_json::to_value(running).expect("config serializes");
    let mut new = serde_json::to_value(loaded).expect("config serializes");
    for key in restart {
        let pointer = format!("/{}", key.replace('.', "/"));
        let value = old.pointer(&pointer).cloned().unwrap_or(Value::Null);
        if let Some(slot) = new.pointer_mut(&pointer) {
            *slot = value;
        }
    }
    serde_json::from_value(new).expect("a mix of two valid configs deserializes")
}

/// A hash of the config in force (SHA-256 of its canonical YAML, the first
/// 48 bits: exact as a float gauge), as `alertmanager_config_hash` is.
pub fn hash(config: &Config) -> u64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(config.to_yaml().as_bytes());
    let mut b = [0u8; 8];
    b[2..].copy_from_slice(&digest[..6]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Config {
        Config::from_yaml(text, "test").unwrap()
    }

    #[test]
    fn live_keys_match_on_segment_boundaries() {
        assert!(is_live("alerts.rules"));
        assert!(is_live("sampling.rate"));
        assert!(!is_live("sampling.rate_limit"));
        assert!(!is_live("sampling.queue_capacity"));
        assert!(is_live("rollout.gate.alpha"));
        assert!(!is_live("rollout.shadow.upstream"));
        assert!(!is_live("proxy.listen"));
    }

    #[test]
    fn changed_keys_are_leaves_lists_and_maps_whole() {
        let a = yaml("sampling: {rate: 1.0}\ndrift: {profiles: {a: /x}}\nalerts:\n  rules:\n    - {name: A, figure: modelwatch.upstream.up, below: 1}\n");
        let b = yaml("sampling: {rate: 0.5}\ndrift: {profiles: {a: /y, b: /z}}\nproxy: {listen: '127.0.0.1:1'}\nalerts:\n  rules:\n    - {name: A, figure: modelwatch.upstream.up, below: 2}\n");
        assert_eq!(
            changed_keys(&a, &b),
            vec![
                "alerts.rules",
                "drift.profiles",
                "proxy.listen",
                "sampling.rate"
            ]
        );
        assert!(changed_keys(&a, &a.clone()).is_empty());
    }

    #[test]
    fn keys_that_need_a_restart_keep_their_running_value() {
        let a = yaml("proxy: {listen: '127.0.0.1:1'}\nsampling: {rate: 1.0, queue_capacity: 10}\n");
        let b =
            yaml("proxy: {listen: '127.0.0.1:2'}\nsampling: {rate: 0.25, queue_capacity: 20}\n");
        let changed = changed_keys(&a, &b);
        let restart: Vec<String> = changed.into_iter().filter(|k| !is_live(k)).collect();
        assert_eq!(restart, vec!["proxy.listen", "sampling.queue_capacity"]);
        let c = in_force(&a, &b, &restart);
        assert_eq!(c.proxy.listen, "127.0.0.1:1");
        assert_eq!(c.sampling.queue_capacity, 10);
        assert_eq!(c.sampling.rate, 0.25);
        assert!(changed_keys(&c, &b).iter().all(|k| restart.contains(k)));
    }

    #[test]
    fn the_hash_follows_the_config() {
        let a = yaml("sampling: {rate: 1.0}\n");
        let b = yaml("sampling: {rate: 0.5}\n");
        assert_eq!(hash(&a), hash(&a.clone()));
        assert_ne!(hash(&a), hash(&b));
        assert!(hash(&a) < 1 << 48);
    }
}
