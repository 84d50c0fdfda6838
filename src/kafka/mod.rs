//! The Kafka backend of model quality, for a fleet of replicas.
//!
//! Sidecars produce every sampled prediction to the predictions topic and
//! every label sent to `POST /v1/feedback` to the labels topic, both keyed by
//! the request id (so that a prediction and its labels land in the same
//! partition, also when a Java client produces the labels: the partitioner is
//! `murmur2_random`, the Java client's). `modelwatch joiner` consumes both
//! topics as one consumer group and joins them with the same quality engine
//! the embedded backend uses, one store per partition.
//!
//! - [`records`]: the JSON record formats (documented in docs/fleet.md);
//! - [`producer`]: the sidecar side, off the request path, with an on-disk
//!   outbox while Kafka cannot take records;
//! - [`joiner`]: the consumer side.

pub mod joiner;
pub mod producer;
pub mod records;

use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

/// Resolves a property value: `${file:PATH}` is the file's content (one
/// trailing newline removed), `${env:NAME}` the variable's value; anything
/// else is the value itself.
pub fn resolve_property(name: &str, value: &str) -> Result<String, String> {
    let inner = value.strip_prefix("${").and_then(|v| v.strip_suffix('}'));
    match inner {
        Some(v) if v.starts_with("file:") => {
            let path = &v["file:".len()..];
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{name}: cannot read {path}: {e}"))?;
            Ok(text
                .strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text)
                .to_string())
        }
        Some(v) if v.starts_with("env:") => {
            let var = &v["env:".len()..];
            std::env::var(var).map_err(|_| format!("{name}: the variable {var} is not set"))
        }
        Some(_) => Err(format!(
            "{name}: a reference is ${{file:PATH}} or ${{env:NAME}}"
        )),
        None => Ok(value.to_string()),
    }
}

/// Whether a property holds a secret (its value is never shown).
pub fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("password") || n.contains("secret") || n.contains("key.pem") || n.ends_with("token")
}

/// The librdkafka client settings: bootstrap, client id, then the
/// pass-through properties (secrets resolved).
pub fn client_config(k: &KafkaConfig) -> Result<ClientConfig, String> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", k.bootstrap.trim())
        .set("client.id", &k.client_id)
        // librdkafka's own log lines go to `tracing` at their level.
        .set("log.connection.close", "false");
    for (name, value) in &k.properties {
        c.set(name, resolve_property(name, value)?);
    }
    Ok(c)
}

/// Topic metadata: the partition count of each topic, `None` when missing.
pub fn partition_counts(
    client: &rdkafka::client::Client<impl rdkafka::client::ClientContext>,
    topics: &[&str],
    timeout: std::time::Duration,
) -> Result<Vec<Option<usize>>, rdkafka::error::KafkaError> {
    let md = client.fetch_metadata(None, timeout)?;
    Ok(topics
        .iter()
        .map(|t| {
            md.topics()
                .iter()
                .find(|m| m.name() == *t && m.error().is_none())
                .map(|m| m.partitions().len())
                .filter(|n| *n > 0)
        })
        .collect())
}

/// Creates the topics that are missing (`quality.kafka.create_topics`). The
/// state topic is compacted.
pub async fn create_topics(k: &KafkaConfig, topics: &[&str]) -> Result<(), String> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<_> = client_config(k)?
        .create()
        .map_err(|e| format!("kafka admin client: {e}"))?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            let topic = NewTopic::new(
                t,
                k.partitions,
                TopicReplication::Fixed(k.replication_factor),
            );
            if *t == k.state_topic {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let results = admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .map_err(|e| format!("creating topics: {e}"))?;
    for r in results {
        match r {
            Ok(t) => tracing::info!(topic = %t, partitions = k.partitions, "kafka topic created"),
            Err((t, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %t, "kafka topic exists")
            }
            Err((t, e)) => return Err(format!("creating topic {t}: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_references_are_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "hunter2\n").unwrap();
        assert_eq!(
            resolve_property("sasl.password", &format!("${{file:{}}}", f.display())).unwrap(),
            "hunter2"
        );
        assert_eq!(resolve_property("acks", "all").unwrap(), "all");
        let e =
            resolve_property("sasl.password", "${env:MODELWATCH_TEST_SURELY_UNSET}").unwrap_err();
        assert!(e.contains("MODELWATCH_TEST_SURELY_UNSET"), "{e}");
        assert!(resolve_property("x", "${vault:a}").is_err());
        assert!(is_secret("sasl.password") && is_secret("ssl.key.password"));
        assert!(!is_secret("security.protocol"));
    }
}
