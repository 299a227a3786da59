//! Topics: creation (name and config validation, one log per partition), deletion (files
//! removed), lookup, and the per-topic configuration that becomes each log's `LogConfig`.
//!
//! Changes are serialized by one async mutex that also owns the persisted
//! [`MetadataImage`]; lookups on the produce and fetch paths only take a short read lock on
//! the map of live topics, never that mutex.
//!
//! Crash safety: a creation opens the logs first and persists the image second; a deletion
//! persists first and removes files second. Either way a crash in between leaves only
//! directories the image does not name, and start-up removes those.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sluice_protocol::{ErrorCode, LeaderEpoch, PartitionId};
use sluice_storage::{Clock, LogConfig, PartitionLog, SharedLog};

use crate::config::BrokerConfig;
use crate::error::{ApiError, BrokerError};
use crate::metadata::{new_cluster_id, MetadataFile, MetadataImage, PartitionMeta, TopicMeta};
use crate::partition::Partition;

/// Most partitions one topic may have: each active segment preallocates its index files.
pub const PARTITIONS_MAX: i32 = 1024;
/// Longest topic name (Kafka's limit).
pub const TOPIC_NAME_LEN_MAX: usize = 249;

/// The topic config keys sluice understands, with what each means.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "min.insync.replicas",
];

/// A live topic: its metadata and its partitions.
pub struct Topic {
    /// The topic's name.
    pub name: Arc<str>,
    /// Its metadata as persisted.
    pub meta: TopicMeta,
    /// Effective configuration, every key of [`TOPIC_CONFIG_KEYS`].
    pub effective_configs: BTreeMap<String, String>,
    /// Partitions by index.
    pub partitions: Vec<Arc<Partition>>,
}

/// A request to create a topic, in service terms.
#[derive(Clone, Debug)]
pub struct NewTopic {
    /// The name.
    pub name: String,
    /// Partitions, or -1 for the broker default.
    pub partitions: i32,
    /// Replication factor, or -1 for the broker default.
    pub replication_factor: i16,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
}

/// Every topic of this broker.
pub struct Topics {
    config: BrokerConfig,
    clock: Arc<dyn Clock>,
    /// Live topics by name. Held only to look up or swap entries, never across an await.
    live: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serializes topic creation and deletion; owns the persisted image.
    admin: tokio::sync::Mutex<(MetadataImage, MetadataFile)>,
    cluster_id: String,
}

impl Topics {
    /// Loads the metadata of `config.data_dir` (creating a new cluster on a fresh one),
    /// opens every partition log (recovering after a crash) and removes directories of
    /// deleted topics. Blocking: call before serving.
    pub fn open(config: &BrokerConfig, clock: Arc<dyn Clock>) -> Result<Topics, BrokerError> {
        let data_dir = &config.data_dir;
        std::fs::create_dir_all(topics_dir(data_dir))
            .map_err(|e| BrokerError::io("create data directory", data_dir, e))?;
        let file = MetadataFile::new(data_dir);
        let image = match file.load()? {
            Some(image) => image,
            None => {
                let image = MetadataImage::new(new_cluster_id(), config.node_id);
                file.store(&image)?;
                tracing::info!(cluster_id = %image.cluster_id, "initialized a new cluster");
                image
            }
        };
        if image.node_id != config.node_id {
            return Err(BrokerError::DataDir(format!(
                "{} belongs to node {}, but this is node {}; start with --node-id {} or use \
                 another --data-dir",
                data_dir.display(),
                image.node_id,
                config.node_id,
                image.node_id
            )));
        }
        let mut live = BTreeMap::new();
        for (name, meta) in &image.topics {
            let topic = open_topic(config, &clock, name, meta).map_err(|(partition, e)| {
                BrokerError::Storage {
                    partition,
                    source: e,
                }
            })?;
            live.insert(name.clone(), Arc::new(topic));
        }
        remove_orphan_dirs(data_dir, &image)?;
        Ok(Topics {
            config: config.clone(),
            clock,
            live: RwLock::new(live),
            cluster_id: image.cluster_id.clone(),
            admin: tokio::sync::Mutex::new((image, file)),
        })
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// A live topic by name.
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.live.read().expect("topics lock").get(name).cloned()
    }

    /// Every live topic, by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        self.live
            .read()
            .expect("topics lock")
            .values()
            .cloned()
            .collect()
    }

    /// A partition, or UNKNOWN_TOPIC_OR_PARTITION saying what exists.
    pub fn partition(&self, topic: &str, index: PartitionId) -> Result<Arc<Partition>, ApiError> {
        let found = self
            .get(topic)
            .ok_or_else(|| ApiError::unknown_topic(topic))?;
        usize::try_from(index.0)
            .ok()
            .and_then(|i| found.partitions.get(i))
            .cloned()
            .ok_or_else(|| ApiError::unknown_partition(topic, index.0, found.partitions.len()))
    }

    /// Every partition of every live topic.
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        let live = self.live.read().expect("topics lock");
        live.values()
            .flat_map(|t| t.partitions.iter().cloned())
            .collect()
    }

    /// Creates a topic (or, with `validate_only`, checks that it could be). Returns its
    /// partition count and replication factor.
    pub async fn create(
        &self,
        request: NewTopic,
        validate_only: bool,
    ) -> Result<(i32, i16), ApiError> {
        validate_topic_name(&request.name)?;
        let partitions = match request.partitions {
            -1 => self.config.default_partitions as i32,
            n if (1..=PARTITIONS_MAX).contains(&n) => n,
            n => {
                return Err(ApiError::new(
                    ErrorCode::InvalidPartitions,
                    format!("a topic needs 1 to {PARTITIONS_MAX} partitions, not {n}"),
                ))
            }
        };
        let replication_factor = match request.replication_factor {
            -1 => self.config.default_replication_factor as i16,
            1 => 1,
            n => {
                return Err(ApiError::new(
                    ErrorCode::InvalidReplicationFactor,
                    format!(
                        "replication factor {n} is not possible: this cluster has 1 broker; \
                         use --replication-factor 1 or add brokers"
                    ),
                ))
            }
        };
        topic_log_config(&self.config, &request.configs)?;
        let mut admin = self.admin.lock().await;
        if admin.0.topics.contains_key(&request.name) {
            return Err(ApiError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic {:?} already exists", request.name),
            ));
        }
        if validate_only {
            return Ok((partitions, replication_factor));
        }
        let node = self.config.node_id;
        let meta = TopicMeta {
            replication_factor: replication_factor as u16,
            configs: request.configs,
            partitions: (0..partitions)
                .map(|i| PartitionMeta {
                    index: PartitionId(i),
                    leader: node,
                    leader_epoch: LeaderEpoch(0),
                    replicas: vec![node],
                    isr: vec![node],
                })
                .collect(),
        };
        let (config, clock, name) = (self.config.clone(), self.clock.clone(), request.name);
        let opened = {
            let (name, meta) = (name.clone(), meta.clone());
            tokio::task::spawn_blocking(move || {
                let topic = open_topic(&config, &clock, &name, &meta);
                if topic.is_err() {
                    remove_topic_dirs(&config.data_dir, &name, meta.partitions.len());
                }
                topic
            })
            .await
            .map_err(|e| ApiError::new(ErrorCode::UnknownServerError, e.to_string()))?
        };
        let topic = opened.map_err(|(partition, e)| {
            let mut err = ApiError::from(e);
            err.message = format!("creating partition {partition}: {}", err.message);
            err
        })?;
        admin.0.topics.insert(name.clone(), meta);
        if let Err(e) = self.persist(&admin).await {
            admin.0.topics.remove(&name);
            remove_topic_dirs(&self.config.data_dir, &name, partitions as usize);
            return Err(e);
        }
        self.live
            .write()
            .expect("topics lock")
            .insert(name.clone(), Arc::new(topic));
        tracing::info!(topic = %name, partitions, "created topic");
        Ok((partitions, replication_factor))
    }

    /// Deletes a topic and its files. In-flight requests on it fail with
    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub async fn delete(&self, name: &str) -> Result<(), ApiError> {
        let mut admin = self.admin.lock().await;
        let Some(meta) = admin.0.topics.remove(name) else {
            return Err(ApiError::unknown_topic(name));
        };
        if let Err(e) = self.persist(&admin).await {
            admin.0.topics.insert(name.to_string(), meta);
            return Err(e);
        }
        let topic = self.live.write().expect("topics lock").remove(name);
        let data_dir = self.config.data_dir.clone();
        let name = name.to_string();
        let n_partitions = meta.partitions.len();
        tokio::task::spawn_blocking(move || {
            for partition in topic.iter().flat_map(|t| t.partitions.iter()) {
                partition.mark_deleted();
            }
            remove_topic_dirs(&data_dir, &name, n_partitions);
            tracing::info!(topic = %name, "deleted topic");
        })
        .await
        .map_err(|e| ApiError::new(ErrorCode::UnknownServerError, e.to_string()))
    }

    async fn persist(&self, admin: &(MetadataImage, MetadataFile)) -> Result<(), ApiError> {
        let (image, file) = (admin.0.clone(), admin.1.clone());
        let stored = tokio::task::spawn_blocking(move || file.store(&image))
            .await
            .map_err(|e| ApiError::new(ErrorCode::UnknownServerError, e.to_string()))?;
        stored.map_err(|e| {
            let disk_full = matches!(&e, BrokerError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::StorageFull);
            let code = if disk_full {
                ErrorCode::DiskFull
            } else {
                ErrorCode::KafkaStorageError
            };
            ApiError::new(code, format!("cannot save topic metadata: {e}"))
        })
    }

    /// Flushes and closes every log cleanly (graceful shutdown), so the next start skips
    /// recovery. A log something still holds is flushed and checkpointed instead. Blocking.
    pub fn close_all(&self) {
        let topics = std::mem::take(&mut *self.live.write().expect("topics lock"));
        let partitions: Vec<Arc<Partition>> = topics
            .values()
            .flat_map(|t| t.partitions.iter().cloned())
            .collect();
        drop(topics);
        for partition in partitions {
            let name = partition.name();
            let log = match Arc::try_unwrap(partition) {
                Ok(partition) => partition.into_log(),
                Err(shared) => Arc::clone(shared.log()),
            };
            let outcome = match Arc::try_unwrap(log) {
                Ok(log) => log.close(),
                Err(log) => {
                    tracing::warn!(partition = %name, "log still in use at shutdown; flushing it");
                    log.flush().and_then(|()| log.write().checkpoint())
                }
            };
            if let Err(e) = outcome {
                tracing::error!(partition = %name, "closing log: {e}");
            }
        }
    }
}

/// `<data_dir>/topics`.
pub fn topics_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("topics")
}

/// `<data_dir>/topics/<topic>-<partition>` (DESIGN §5).
pub fn partition_dir(data_dir: &Path, topic: &str, index: PartitionId) -> PathBuf {
    topics_dir(data_dir).join(format!("{topic}-{}", index.0))
}

/// Opens every partition log of a topic; on failure names the partition.
fn open_topic(
    config: &BrokerConfig,
    clock: &Arc<dyn Clock>,
    name: &str,
    meta: &TopicMeta,
) -> Result<Topic, (String, sluice_storage::StorageError)> {
    let bad_metadata = |reason: String| {
        (
            name.to_string(),
            sluice_storage::StorageError::BadFile {
                path: config.data_dir.join(crate::metadata::METADATA_FILE),
                what: "topic in the metadata",
                reason,
            },
        )
    };
    // The name becomes a directory path: never trust it from disk without the rule.
    validate_topic_name(name).map_err(|e| bad_metadata(e.message))?;
    let (log_config, min_insync) =
        topic_log_config(config, &meta.configs).map_err(|e| bad_metadata(e.message))?;
    let name: Arc<str> = Arc::from(name);
    let mut partitions = Vec::with_capacity(meta.partitions.len());
    for p in &meta.partitions {
        let dir = partition_dir(&config.data_dir, &name, p.index);
        let label = format!("{name}-{}", p.index.0);
        let log = PartitionLog::open(&dir, log_config.clone(), clock.clone())
            .map_err(|e| (label.clone(), e))?;
        let report = log.recovery_report();
        if let Some(cut) = &report.truncated {
            tracing::warn!(
                partition = %label,
                "recovered: cut {} at byte {} ({})",
                cut.file.display(),
                cut.position,
                cut.reason
            );
        }
        partitions.push(Arc::new(Partition::new(
            name.clone(),
            p.index,
            SharedLog::new(log),
            p.leader_epoch,
            min_insync,
        )));
    }
    let effective_configs = effective_configs(&log_config, min_insync);
    Ok(Topic {
        name,
        meta: meta.clone(),
        effective_configs,
        partitions,
    })
}

fn remove_topic_dirs(data_dir: &Path, name: &str, n_partitions: usize) {
    for i in 0..n_partitions {
        let dir = partition_dir(data_dir, name, PartitionId(i as i32));
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::error!("removing {}: {e}; remove it by hand", dir.display());
            }
        }
    }
}

/// Removes partition directories that no topic of the image owns: left by a deletion or a
/// creation that a crash interrupted.
fn remove_orphan_dirs(data_dir: &Path, image: &MetadataImage) -> Result<(), BrokerError> {
    let dir = topics_dir(data_dir);
    let entries = std::fs::read_dir(&dir).map_err(|e| BrokerError::io("list", &dir, e))?;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        let owned = name.rsplit_once('-').is_some_and(|(topic, index)| {
            let index: Option<usize> = index.parse().ok();
            image
                .topics
                .get(topic)
                .zip(index)
                .is_some_and(|(meta, i)| i < meta.partitions.len())
        });
        if !owned {
            tracing::info!("removing {}: no topic owns it", entry.path().display());
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::error!("removing {}: {e}", entry.path().display());
            }
        }
    }
    Ok(())
}

/// Kafka's rule: 1 to 249 of `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), ApiError> {
    let invalid = |why: &str| {
        Err(ApiError::new(
            ErrorCode::InvalidTopicException,
            format!("topic name {name:?} is invalid: {why}"),
        ))
    };
    if name.is_empty() || name.len() > TOPIC_NAME_LEN_MAX {
        return invalid("it must have 1 to 249 characters");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are not allowed");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return invalid("use only letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// The log configuration and `min.insync.replicas` of a topic: broker defaults overridden
/// by the topic's configs. Unknown keys and bad values are INVALID_CONFIG.
pub fn topic_log_config(
    config: &BrokerConfig,
    overrides: &BTreeMap<String, String>,
) -> Result<(LogConfig, u16), ApiError> {
    let mut log = LogConfig {
        segment_bytes_max: config.segment_bytes,
        retention_ms: (config.retention_ms >= 0).then_some(config.retention_ms),
        retention_bytes: u64::try_from(config.retention_bytes).ok(),
        durability: config.storage_durability(),
        ..LogConfig::default()
    };
    let mut min_insync = config.min_insync_replicas;
    for (key, value) in overrides {
        let bad = |expect: &str| {
            ApiError::new(
                ErrorCode::InvalidConfig,
                format!("config {key}={value:?} is invalid: expected {expect}"),
            )
        };
        let int = |min: i64| -> Result<i64, ApiError> {
            value
                .parse::<i64>()
                .ok()
                .filter(|v| *v >= min)
                .ok_or_else(|| bad(&format!("an integer of at least {min}")))
        };
        match key.as_str() {
            "retention.ms" => log.retention_ms = Some(int(-1)?).filter(|v| *v >= 0),
            "retention.bytes" => log.retention_bytes = u64::try_from(int(-1)?).ok(),
            "segment.bytes" => {
                log.segment_bytes_max =
                    u32::try_from(int(4096)?).map_err(|_| bad("at most 4294967295 (4 GiB)"))?
            }
            "segment.ms" => log.segment_ms_max = int(1)?,
            "min.insync.replicas" => {
                min_insync = u16::try_from(int(1)?).map_err(|_| bad("at most 65535"))?
            }
            _ => {
                return Err(ApiError::new(
                    ErrorCode::InvalidConfig,
                    format!(
                        "unknown topic config {key:?}; known configs: {}",
                        TOPIC_CONFIG_KEYS.join(", ")
                    ),
                ))
            }
        }
    }
    Ok((log, min_insync))
}

/// Every known config key with the value in effect for a topic.
fn effective_configs(log: &LogConfig, min_insync: u16) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "retention.ms".to_string(),
            log.retention_ms.unwrap_or(-1).to_string(),
        ),
        (
            "retention.bytes".to_string(),
            log.retention_bytes.map_or(-1, |b| b as i64).to_string(),
        ),
        (
            "segment.bytes".to_string(),
            log.segment_bytes_max.to_string(),
        ),
        ("segment.ms".to_string(), log.segment_ms_max.to_string()),
        ("min.insync.replicas".to_string(), min_insync.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka() {
        for ok in ["orders", "a", "a.b_c-d", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "ü", "a/b", &"x".repeat(250)] {
            let err = validate_topic_name(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidTopicException, "{bad}");
        }
    }

    #[test]
    fn topic_configs_override_defaults_and_refuse_unknown_keys() {
        let config = BrokerConfig::default();
        let overrides = BTreeMap::from([
            ("retention.ms".to_string(), "-1".to_string()),
            ("segment.bytes".to_string(), "65536".to_string()),
            ("min.insync.replicas".to_string(), "2".to_string()),
        ]);
        let (log, min_insync) = topic_log_config(&config, &overrides).unwrap();
        assert_eq!(log.retention_ms, None);
        assert_eq!(log.segment_bytes_max, 65536);
        assert_eq!(min_insync, 2);
        for (key, value) in [
            ("retention.ms", "soon"),
            ("segment.bytes", "1"),
            ("nope", "1"),
        ] {
            let overrides = BTreeMap::from([(key.to_string(), value.to_string())]);
            let err = topic_log_config(&config, &overrides).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidConfig, "{key}");
            assert!(err.message.contains(key), "{}", err.message);
        }
    }
}
