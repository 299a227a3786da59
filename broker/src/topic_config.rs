//! What a topic may be: Kafka's name rule, the partition and replication limits, the
//! per-topic config keys sluice understands and how they become a storage `LogConfig`.
//! Pure rules over the broker's configuration, shared by the controller (which validates
//! creations), the admin service and the replicas (`topics`), so none of them has a copy.

use std::collections::BTreeMap;

use sluice_protocol::group_log::OFFSETS_TOPIC;
use sluice_protocol::messages::{ConfigEntry, CreatableTopic, ReplicaAssignment};
use sluice_protocol::{BrokerId, ErrorCode, PartitionId};
use sluice_storage::{CleanupPolicy, LogConfig};

use crate::config::BrokerConfig;
use crate::error::ApiError;

/// Most partitions one topic may have: each active segment preallocates its index files.
pub use crate::config::PARTITIONS_MAX;
/// Longest topic name (Kafka's limit).
pub const TOPIC_NAME_LEN_MAX: usize = 249;
/// The topic config keys sluice understands.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "min.insync.replicas",
    "unclean.leader.election.enable",
    "compression.type",
    "cleanup.policy",
    "delete.retention.ms",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.type",
    "max.message.bytes",
    "index.interval.bytes",
    "segment.index.bytes",
];

/// Kafka topic configs sluice takes so that tools copying or setting them work, whose
/// values change nothing here, with Kafka's defaults (what DescribeConfigs shows when a
/// topic does not set them). Each is checked as Kafka checks it, and a value that would
/// ask for something sluice does not do is refused ([`check_compat_config`]).
const COMPAT_CONFIGS: &[(&str, &str)] = &[
    ("compression.gzip.level", "-1"),
    ("compression.lz4.level", "9"),
    ("compression.zstd.level", "3"),
    ("file.delete.delay.ms", "60000"),
    ("flush.messages", "9223372036854775807"),
    ("flush.ms", "9223372036854775807"),
    ("follower.replication.throttled.replicas", ""),
    ("leader.replication.throttled.replicas", ""),
    ("local.retention.bytes", "-2"),
    ("local.retention.ms", "-2"),
    ("preallocate", "false"),
    ("remote.storage.enable", "false"),
    ("segment.jitter.ms", "0"),
];

/// What kind of value a config takes: Kafka's `ConfigDef` types, which its DescribeConfigs
/// (v3+) reports so that consoles can render and check values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigType {
    Boolean,
    String,
    Int,
    Short,
    Long,
    Double,
    List,
}

/// The type of the topic or broker config `name` as Kafka declares it, for every name
/// sluice describes; `None` for any other.
pub fn config_type(name: &str) -> Option<ConfigType> {
    use ConfigType::*;
    Some(match name {
        "unclean.leader.election.enable"
        | "preallocate"
        | "remote.storage.enable"
        | "auto.create.topics.enable"
        | "auto.leader.rebalance.enable" => Boolean,
        "compression.type" | "message.timestamp.type" | "broker.rack" => String,
        "cleanup.policy"
        | "follower.replication.throttled.replicas"
        | "leader.replication.throttled.replicas" => List,
        "min.cleanable.dirty.ratio" => Double,
        "segment.bytes"
        | "min.insync.replicas"
        | "max.message.bytes"
        | "index.interval.bytes"
        | "segment.index.bytes"
        | "compression.gzip.level"
        | "compression.lz4.level"
        | "compression.zstd.level"
        | "broker.id"
        | "node.id"
        | "broker.session.timeout.ms"
        | "default.replication.factor"
        | "group.initial.rebalance.delay.ms"
        | "group.max.session.timeout.ms"
        | "group.min.session.timeout.ms"
        | "log.segment.bytes"
        | "message.max.bytes"
        | "num.partitions"
        | "offsets.topic.num.partitions"
        | "offsets.topic.segment.bytes"
        | "socket.request.max.bytes" => Int,
        "retention.ms"
        | "retention.bytes"
        | "segment.ms"
        | "delete.retention.ms"
        | "min.compaction.lag.ms"
        | "max.compaction.lag.ms"
        | "message.timestamp.after.max.ms"
        | "message.timestamp.before.max.ms"
        | "file.delete.delay.ms"
        | "flush.messages"
        | "flush.ms"
        | "local.retention.bytes"
        | "local.retention.ms"
        | "segment.jitter.ms"
        | "leader.imbalance.check.interval.seconds"
        | "log.cleaner.backoff.ms"
        | "log.retention.check.interval.ms"
        | "log.retention.bytes"
        | "log.retention.ms"
        | "replica.lag.time.max.ms" => Long,
        _ => return None,
    })
}

/// The broker config a topic config falls back to when the topic does not set it (Kafka's
/// `LogConfig` synonyms, which DescribeConfigs lists when asked), if it has one.
pub fn broker_synonym(topic_key: &str) -> Option<&'static str> {
    Some(match topic_key {
        "retention.ms" => "log.retention.ms",
        "retention.bytes" => "log.retention.bytes",
        "segment.bytes" => "log.segment.bytes",
        "segment.ms" => "log.roll.ms",
        "segment.jitter.ms" => "log.roll.jitter.ms",
        "segment.index.bytes" => "log.index.size.max.bytes",
        "index.interval.bytes" => "log.index.interval.bytes",
        "min.insync.replicas" => "min.insync.replicas",
        "unclean.leader.election.enable" => "unclean.leader.election.enable",
        "compression.type" => "compression.type",
        "compression.gzip.level" => "compression.gzip.level",
        "compression.lz4.level" => "compression.lz4.level",
        "compression.zstd.level" => "compression.zstd.level",
        "cleanup.policy" => "log.cleanup.policy",
        "delete.retention.ms" => "log.cleaner.delete.retention.ms",
        "min.cleanable.dirty.ratio" => "log.cleaner.min.cleanable.ratio",
        "min.compaction.lag.ms" => "log.cleaner.min.compaction.lag.ms",
        "max.compaction.lag.ms" => "log.cleaner.max.compaction.lag.ms",
        "message.timestamp.after.max.ms" => "log.message.timestamp.after.max.ms",
        "message.timestamp.before.max.ms" => "log.message.timestamp.before.max.ms",
        "message.timestamp.type" => "log.message.timestamp.type",
        "max.message.bytes" => "message.max.bytes",
        "file.delete.delay.ms" => "log.segment.delete.delay.ms",
        "flush.messages" => "log.flush.interval.messages",
        "flush.ms" => "log.flush.interval.ms",
        "preallocate" => "log.preallocate",
        "local.retention.bytes" => "log.local.retention.bytes",
        "local.retention.ms" => "log.local.retention.ms",
        _ => return None,
    })
}

/// The one `compression.type` a topic takes: `producer` (Kafka's default), batches stored
/// as the producer compressed them. The broker never recompresses.
pub const COMPRESSION_TYPE_PRODUCER: &str = "producer";

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
    /// Each partition's replicas placed by the user (preferred leader first), as the
    /// request gave them; empty lets the controller place them.
    pub assignment: Vec<(PartitionId, Vec<BrokerId>)>,
}

impl NewTopic {
    /// A topic of a native CreateTopics request.
    pub fn from_wire(topic: CreatableTopic) -> NewTopic {
        NewTopic {
            name: topic.name,
            partitions: topic.num_partitions,
            replication_factor: topic.replication_factor,
            configs: topic
                .configs
                .into_iter()
                .map(|c| (c.name, c.value))
                .collect(),
            assignment: topic
                .assignments
                .into_iter()
                .map(|a| (a.partition, a.broker_ids))
                .collect(),
        }
    }

    /// The topic as a native CreateTopics request carries it.
    pub fn to_wire(self) -> CreatableTopic {
        CreatableTopic {
            name: self.name,
            num_partitions: self.partitions,
            replication_factor: self.replication_factor,
            configs: self
                .configs
                .into_iter()
                .map(|(name, value)| ConfigEntry { name, value })
                .collect(),
            assignments: self
                .assignment
                .into_iter()
                .map(|(partition, broker_ids)| ReplicaAssignment {
                    partition,
                    broker_ids,
                })
                .collect(),
        }
    }

    /// The user's assignment in partition order, `None` when there is none. Call after
    /// [`validate_new_topic`], which checks the partitions are 0 to n - 1.
    pub fn placed(&self) -> Option<Vec<Vec<BrokerId>>> {
        if self.assignment.is_empty() {
            return None;
        }
        let mut ordered = self.assignment.clone();
        ordered.sort_by_key(|(p, _)| *p);
        Some(ordered.into_iter().map(|(_, brokers)| brokers).collect())
    }
}

/// Checks a topic creation before it is proposed to the controller: the name, the counts
/// (defaults filled in) and the configs. Returns the partition count and replication
/// factor to create. Whether there are enough brokers is decided when the creation is
/// applied, against the brokers active then.
pub fn validate_new_topic(
    config: &BrokerConfig,
    request: &NewTopic,
) -> Result<(u32, u16), ApiError> {
    validate_topic_name(&request.name)?;
    if !request.assignment.is_empty() {
        let mut indexes: Vec<i32> = request.assignment.iter().map(|(p, _)| p.0).collect();
        indexes.sort();
        if indexes.iter().enumerate().any(|(i, p)| *p != i as i32) {
            return Err(ApiError::new(
                ErrorCode::InvalidReplicaAssignment,
                format!("the assignment names partitions {indexes:?}; name 0 to n - 1, each once"),
            ));
        }
        let placed = request.placed().unwrap_or_default();
        let counts = check_assignment(&placed, request.partitions, request.replication_factor)?;
        topic_log_config(config, &request.configs)?;
        return Ok(counts);
    }
    let partitions = match request.partitions {
        -1 => config.default_partitions as i32,
        n => n,
    };
    if !(1..=PARTITIONS_MAX).contains(&partitions) {
        return Err(ApiError::new(
            ErrorCode::InvalidPartitions,
            format!("a topic needs 1 to {PARTITIONS_MAX} partitions, not {partitions}"),
        ));
    }
    let replication_factor = match request.replication_factor {
        -1 => config.default_replication_factor as i16,
        n => n,
    };
    if replication_factor < 1 {
        return Err(ApiError::new(
            ErrorCode::InvalidReplicationFactor,
            format!("replication factor {replication_factor} is invalid: use 1 or more"),
        ));
    }
    topic_log_config(config, &request.configs)?;
    Ok((partitions as u32, replication_factor as u16))
}

/// Checks a replica assignment given by the user: partitions 1 to the limit, each with the
/// same number of distinct brokers, agreeing with `partitions` and `replication_factor`
/// where those are not -1. Returns the partition count and replication factor.
pub fn check_assignment(
    assignment: &[Vec<BrokerId>],
    partitions: i32,
    replication_factor: i16,
) -> Result<(u32, u16), ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::InvalidReplicaAssignment, message);
    let n = assignment.len();
    if !(1..=PARTITIONS_MAX as usize).contains(&n) {
        return Err(invalid(format!(
            "the assignment places {n} partitions; give it 1 to {PARTITIONS_MAX}"
        )));
    }
    let rf = assignment[0].len();
    for (p, replicas) in assignment.iter().enumerate() {
        let mut distinct = replicas.clone();
        distinct.sort();
        distinct.dedup();
        if replicas.is_empty() || distinct.len() != replicas.len() || replicas.len() != rf {
            let ids: Vec<String> = replicas.iter().map(BrokerId::to_string).collect();
            return Err(invalid(format!(
                "the assignment gives partition {p} brokers [{}]; give every partition the \
                 same number ({rf}) of distinct brokers",
                ids.join(", ")
            )));
        }
        if let Some(bad) = replicas.iter().find(|b| b.0 < 0) {
            return Err(invalid(format!(
                "the assignment gives partition {p} broker {bad}; broker ids are 0 or more"
            )));
        }
    }
    if (partitions != -1 && partitions as usize != n)
        || (replication_factor != -1 && replication_factor as usize != rf)
    {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "the assignment places {n} partitions of {rf} replicas, but the request asks for \
                 {partitions} partitions of {replication_factor}; give -1 for both (or the \
                 assignment's numbers)"
            ),
        ));
    }
    Ok((n as u32, rf as u16))
}

/// What a coordinator's internal topic holds, if `name` is one (`__consumer_offsets`,
/// `__transaction_state`): no producer writes them, and administrators may not delete,
/// grow or trim them.
pub fn internal_topic(name: &str) -> Option<&'static str> {
    match name {
        OFFSETS_TOPIC => Some("it holds every consumer group's committed offsets"),
        sluice_protocol::txn_log::TRANSACTION_STATE_TOPIC => {
            Some("it holds every transactional producer's state")
        }
        _ => None,
    }
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
        max_message_bytes: config.max_frame_bytes,
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
            // Read by the controller when it elects leaders; only checked here.
            "unclean.leader.election.enable" => {
                if value != "true" && value != "false" {
                    return Err(bad("true or false"));
                }
            }
            "compression.type" => check_compression_type(value)?,
            "cleanup.policy" => {
                log.cleanup_policy = parse_cleanup_policy(value)
                    .ok_or_else(|| bad("delete, compact or compact,delete"))?
            }
            "delete.retention.ms" => log.delete_retention_ms = int(0)?,
            "min.cleanable.dirty.ratio" => {
                log.min_cleanable_dirty_ratio = value
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| bad("a number from 0 to 1"))?
            }
            "min.compaction.lag.ms" => log.min_compaction_lag_ms = int(0)?,
            "max.compaction.lag.ms" => log.max_compaction_lag_ms = int(1)?,
            "message.timestamp.after.max.ms" => log.message_timestamp_after_max_ms = int(0)?,
            "message.timestamp.before.max.ms" => log.message_timestamp_before_max_ms = int(0)?,
            "max.message.bytes" => {
                log.max_message_bytes = u32::try_from(int(0)?)
                    .map_err(|_| bad(&format!("an integer from 0 to {}", u32::MAX)))?
            }
            "message.timestamp.type" => {
                log.log_append_time = match value.as_str() {
                    "CreateTime" => false,
                    "LogAppendTime" => true,
                    _ => return Err(bad("CreateTime or LogAppendTime")),
                }
            }
            "index.interval.bytes" => {
                log.index_interval_bytes =
                    u32::try_from(int(0)?).map_err(|_| bad("at most 4294967295"))?
            }
            // The most an index may hold: a full one rolls the segment early.
            "segment.index.bytes" => {
                log.index_bytes_max = u32::try_from(int(4)?)
                    .ok()
                    .filter(|b| *b <= i32::MAX as u32)
                    .ok_or_else(|| bad("an integer from 4 to 2147483647"))?
            }
            _ if COMPAT_CONFIGS.iter().any(|(k, _)| k == key) => {
                check_compat_config(config, key, value)?
            }
            _ => {
                let compat: Vec<&str> = COMPAT_CONFIGS.iter().map(|(k, _)| *k).collect();
                return Err(ApiError::new(
                    ErrorCode::InvalidConfig,
                    format!(
                        "unknown topic config {key:?}; known configs: {}, and, accepted for \
                         Kafka's tools with no effect here, {}",
                        TOPIC_CONFIG_KEYS.join(", "),
                        compat.join(", ")
                    ),
                ));
            }
        }
    }
    Ok((log, min_insync))
}

/// A value of one of [`COMPAT_CONFIGS`]: Kafka's type and range, and nothing sluice would
/// have to do differently. The compression levels matter only where a broker recompresses,
/// which sluice never does; the flush settings only where fsyncs are not already made
/// before every acknowledgement (under `replicated` durability a topic cannot ask for its
/// own); throttling and tiered storage exist only at their off values; the rest
/// (preallocation, the delay before deleting a file, segment roll jitter) tune Kafka's
/// storage where sluice's decides for itself.
fn check_compat_config(config: &BrokerConfig, key: &str, value: &str) -> Result<(), ApiError> {
    let bad = |expect: &str| {
        ApiError::new(
            ErrorCode::InvalidConfig,
            format!("config {key}={value:?} is invalid: {expect}"),
        )
    };
    let in_range = |min: i64, max: i64| {
        value
            .parse::<i64>()
            .ok()
            .filter(|v| (min..=max).contains(v))
            .map(|_| ())
            .ok_or_else(|| bad(&format!("expected an integer from {min} to {max}")))
    };
    match key {
        "compression.gzip.level" => match value {
            "-1" => Ok(()),
            _ => in_range(1, 9),
        },
        "compression.lz4.level" => in_range(1, 17),
        "compression.zstd.level" => in_range(-131072, 22),
        "file.delete.delay.ms" | "segment.jitter.ms" => in_range(0, i64::MAX),
        "preallocate" => match value {
            "true" | "false" => Ok(()),
            _ => Err(bad("expected true or false")),
        },
        "flush.messages" | "flush.ms" => {
            in_range(if key == "flush.ms" { 0 } else { 1 }, i64::MAX)?;
            let default = value == "9223372036854775807";
            match (config.durability, default) {
                (crate::config::DurabilityMode::Replicated, false) => Err(bad(
                    "this broker runs with durability replicated, which fsyncs in the \
                     background, and a topic cannot ask for its own flushes; run the brokers \
                     with --durability fsync (every acknowledged batch is on disk, more than \
                     any flush setting asks)",
                )),
                _ => Ok(()),
            }
        }
        "leader.replication.throttled.replicas" | "follower.replication.throttled.replicas" => {
            match value {
                "" => Ok(()),
                _ => Err(bad(
                    "replication throttling is not supported; leave it empty",
                )),
            }
        }
        "local.retention.ms" | "local.retention.bytes" => match value {
            "-2" => Ok(()),
            _ => Err(bad(
                "tiered storage is not supported; leave it at -2 (the topic's retention)",
            )),
        },
        "remote.storage.enable" => match value {
            "false" => Ok(()),
            _ => Err(bad("tiered storage is not supported; leave it false")),
        },
        _ => Ok(()),
    }
}

/// `cleanup.policy`: Kafka's values, the two policies in either order.
fn parse_cleanup_policy(value: &str) -> Option<CleanupPolicy> {
    let mut parts: Vec<&str> = value.split(',').map(str::trim).collect();
    parts.sort_unstable();
    match parts.as_slice() {
        ["delete"] => Some(CleanupPolicy::Delete),
        ["compact"] => Some(CleanupPolicy::Compact),
        ["compact", "delete"] => Some(CleanupPolicy::CompactDelete),
        _ => None,
    }
}

/// The log configuration a replica of `topic` runs with: [`topic_log_config`], except
/// that `__consumer_offsets` is always compacted. It is created with
/// `cleanup.policy=compact`; one created by an earlier build, without the key, is
/// compacted too (it is internal: its records are keyed commits and group metadata, and
/// only the latest of each key means anything).
pub fn replica_log_config(
    config: &BrokerConfig,
    topic: &str,
    overrides: &BTreeMap<String, String>,
) -> Result<(LogConfig, u16), ApiError> {
    let (mut log, min_insync) = topic_log_config(config, overrides)?;
    if topic == OFFSETS_TOPIC && !log.cleanup_policy.compacts() {
        log.cleanup_policy = CleanupPolicy::Compact;
    }
    Ok((log, min_insync))
}

/// `compression.type`: only `producer`. Kafka's other values (a codec, or `uncompressed`)
/// make its broker recompress every batch to that codec; sluice stores and serves the bytes
/// the producer sent (no re-encoding on the hot path), so it refuses them with the way to
/// get the same result.
fn check_compression_type(value: &str) -> Result<(), ApiError> {
    if value == COMPRESSION_TYPE_PRODUCER {
        return Ok(());
    }
    let known = ["uncompressed", "none", "gzip", "snappy", "lz4", "zstd"];
    let reason = if known.contains(&value) {
        format!(
            "recompression on the broker is not supported: sluice stores batches as the \
             producer compressed them; leave compression.type at producer and set the codec \
             on the producers (sluice produce --compression {}, Kafka clients' \
             compression.type)",
            if value == "uncompressed" {
                "none"
            } else {
                value
            }
        )
    } else {
        "expected producer (the only value sluice supports)".to_string()
    };
    Err(ApiError::new(
        ErrorCode::InvalidConfig,
        format!("config compression.type={value:?} is invalid: {reason}"),
    ))
}

/// Every known config key with the value in effect for a topic with these overrides.
pub fn effective_topic_configs(
    config: &BrokerConfig,
    overrides: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let Ok((log, min_insync)) = topic_log_config(config, overrides) else {
        return overrides.clone();
    };
    let mut configs = effective_configs(&log, min_insync);
    for (key, default) in COMPAT_CONFIGS {
        let value = overrides.get(*key).map_or(*default, String::as_str);
        configs.insert(key.to_string(), value.to_string());
    }
    configs.insert(
        "unclean.leader.election.enable".to_string(),
        overrides
            .get("unclean.leader.election.enable")
            .cloned()
            .unwrap_or_else(|| "false".to_string()),
    );
    configs.insert(
        "compression.type".to_string(),
        COMPRESSION_TYPE_PRODUCER.to_string(),
    );
    configs
}

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
        (
            "cleanup.policy".to_string(),
            log.cleanup_policy.name().to_string(),
        ),
        (
            "delete.retention.ms".to_string(),
            log.delete_retention_ms.to_string(),
        ),
        (
            "min.cleanable.dirty.ratio".to_string(),
            log.min_cleanable_dirty_ratio.to_string(),
        ),
        (
            "min.compaction.lag.ms".to_string(),
            log.min_compaction_lag_ms.to_string(),
        ),
        (
            "max.compaction.lag.ms".to_string(),
            log.max_compaction_lag_ms.to_string(),
        ),
        (
            "message.timestamp.after.max.ms".to_string(),
            log.message_timestamp_after_max_ms.to_string(),
        ),
        (
            "message.timestamp.before.max.ms".to_string(),
            log.message_timestamp_before_max_ms.to_string(),
        ),
        (
            "max.message.bytes".to_string(),
            log.max_message_bytes.to_string(),
        ),
        (
            "index.interval.bytes".to_string(),
            log.index_interval_bytes.to_string(),
        ),
        (
            "segment.index.bytes".to_string(),
            log.index_bytes_max.to_string(),
        ),
        (
            "message.timestamp.type".to_string(),
            if log.log_append_time {
                "LogAppendTime"
            } else {
                "CreateTime"
            }
            .to_string(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_described_config_has_kafkas_type_and_topic_configs_their_broker_synonym() {
        let config = BrokerConfig::default();
        for key in effective_topic_configs(&config, &BTreeMap::new()).keys() {
            assert!(config_type(key).is_some(), "{key} has no type");
            let no_synonym = [
                "remote.storage.enable",
                "leader.replication.throttled.replicas",
                "follower.replication.throttled.replicas",
            ];
            assert_eq!(
                broker_synonym(key).is_some(),
                !no_synonym.contains(&key.as_str()),
                "{key}'s synonym"
            );
        }
        for (key, _) in config.kafka_broker_configs() {
            assert!(
                config_type(key).is_some(),
                "broker config {key} has no type"
            );
        }
    }

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

    #[test]
    fn kafkas_other_topic_configs_are_taken_where_they_change_nothing_here() {
        let fsync = BrokerConfig::default();
        let replicated = BrokerConfig {
            durability: crate::config::DurabilityMode::Replicated,
            ..BrokerConfig::default()
        };
        let check = |config: &BrokerConfig, key: &str, value: &str| {
            let overrides = BTreeMap::from([(key.to_string(), value.to_string())]);
            topic_log_config(config, &overrides).map(|_| ())
        };
        // What Kafka's tools copy from a topic at its defaults.
        for (key, default) in COMPAT_CONFIGS {
            assert!(check(&replicated, key, default).is_ok(), "{key}={default}");
        }
        // Every acknowledged batch is fsynced already: any flush setting is met.
        assert!(check(&fsync, "flush.messages", "1").is_ok());
        assert!(check(&fsync, "flush.ms", "1000").is_ok());
        let refused = |config, key, value| check(config, key, value).unwrap_err().message;
        assert!(refused(&replicated, "flush.ms", "1000").contains("--durability fsync"));
        assert!(refused(&fsync, "remote.storage.enable", "true").contains("tiered storage"));
        assert!(refused(&fsync, "local.retention.ms", "1000").contains("tiered storage"));
        assert!(
            refused(&fsync, "leader.replication.throttled.replicas", "0:1").contains("throttling")
        );
        assert!(refused(&fsync, "compression.zstd.level", "99").contains("-131072 to 22"));
        assert!(refused(&fsync, "preallocate", "yes").contains("true or false"));
        // The index settings are sluice's own.
        let overrides = BTreeMap::from([
            ("segment.index.bytes".to_string(), "65536".to_string()),
            ("index.interval.bytes".to_string(), "1024".to_string()),
        ]);
        let (log, _) = topic_log_config(&fsync, &overrides).unwrap();
        assert_eq!(
            (log.index_bytes_max, log.index_interval_bytes),
            (65536, 1024)
        );
        // DescribeConfigs shows them all, the topic's own where it sets one.
        let shown = effective_topic_configs(
            &fsync,
            &BTreeMap::from([("flush.ms".to_string(), "1000".to_string())]),
        );
        assert_eq!(shown["flush.ms"], "1000");
        assert_eq!(shown["preallocate"], "false");
        assert_eq!(shown["segment.index.bytes"], "10485760");
        assert!(refused(&fsync, "nope", "1").contains("accepted for Kafka's tools"));
    }

    #[test]
    fn compaction_configs_are_checked_and_become_the_log_config() {
        let config = BrokerConfig::default();
        let with = |pairs: &[(&str, &str)]| {
            let overrides = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            topic_log_config(&config, &overrides)
        };
        let (log, _) = with(&[]).unwrap();
        assert_eq!(log.cleanup_policy, CleanupPolicy::Delete);
        assert_eq!(log.delete_retention_ms, 24 * 3600 * 1000);
        assert_eq!(log.min_cleanable_dirty_ratio, 0.5);
        for (value, policy) in [
            ("delete", CleanupPolicy::Delete),
            ("compact", CleanupPolicy::Compact),
            ("compact,delete", CleanupPolicy::CompactDelete),
            ("delete,compact", CleanupPolicy::CompactDelete),
        ] {
            assert_eq!(
                with(&[("cleanup.policy", value)]).unwrap().0.cleanup_policy,
                policy
            );
        }
        let (log, _) = with(&[
            ("delete.retention.ms", "1000"),
            ("min.cleanable.dirty.ratio", "0.1"),
            ("min.compaction.lag.ms", "60000"),
        ])
        .unwrap();
        assert_eq!(
            (
                log.delete_retention_ms,
                log.min_cleanable_dirty_ratio,
                log.min_compaction_lag_ms
            ),
            (1000, 0.1, 60000)
        );
        for (key, value) in [
            ("cleanup.policy", "forever"),
            ("cleanup.policy", "compact,compact"),
            ("delete.retention.ms", "-5"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("min.compaction.lag.ms", "soon"),
        ] {
            let err = with(&[(key, value)]).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidConfig, "{key}={value}");
            assert!(err.message.contains(key), "{}", err.message);
        }
        // The internal topic is compacted whatever an older build created it with.
        let old = BTreeMap::from([("retention.ms".to_string(), "-1".to_string())]);
        let (log, _) = replica_log_config(&config, OFFSETS_TOPIC, &old).unwrap();
        assert_eq!(log.cleanup_policy, CleanupPolicy::Compact);
        let (log, _) = replica_log_config(&config, "orders", &old).unwrap();
        assert_eq!(log.cleanup_policy, CleanupPolicy::Delete);
        let effective = effective_topic_configs(&config, &BTreeMap::new());
        assert_eq!(effective["cleanup.policy"], "delete");
    }

    #[test]
    fn timestamp_configs_are_checked_and_described_with_kafkas_defaults() {
        let config = BrokerConfig::default();
        let with = |key: &str, value: &str| {
            topic_log_config(
                &config,
                &BTreeMap::from([(key.to_string(), value.to_string())]),
            )
        };
        let effective = effective_topic_configs(&config, &BTreeMap::new());
        assert_eq!(effective["message.timestamp.after.max.ms"], "3600000");
        assert_eq!(
            effective["message.timestamp.before.max.ms"],
            i64::MAX.to_string(),
            "unbounded, as in Kafka"
        );
        assert_eq!(effective["message.timestamp.type"], "CreateTime");
        assert_eq!(
            effective["max.message.bytes"],
            config.max_frame_bytes.to_string(),
            "the frame limit bounds a batch anyway"
        );
        let (log, _) = with("max.message.bytes", "1048588").unwrap();
        assert_eq!(log.max_message_bytes, 1_048_588);
        assert!(with("max.message.bytes", "-1").is_err());
        let (log, _) = with("message.timestamp.type", "LogAppendTime").unwrap();
        assert!(log.log_append_time);
        let err = with("message.timestamp.type", "logappendtime").unwrap_err();
        assert!(
            err.message.contains("CreateTime or LogAppendTime"),
            "{}",
            err.message
        );
        let (log, _) = with("message.timestamp.before.max.ms", "86400000").unwrap();
        assert_eq!(log.message_timestamp_before_max_ms, 86_400_000);
        for value in ["-1", "a day"] {
            let err = with("message.timestamp.before.max.ms", value).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidConfig, "{value}");
            assert!(err.message.contains("at least 0"), "{}", err.message);
        }
    }

    #[test]
    fn compression_type_is_producer_only_and_other_values_say_why() {
        let config = BrokerConfig::default();
        let with = |value: &str| {
            let overrides = BTreeMap::from([("compression.type".to_string(), value.to_string())]);
            topic_log_config(&config, &overrides)
        };
        assert!(with("producer").is_ok());
        for codec in ["gzip", "snappy", "lz4", "zstd", "uncompressed"] {
            let err = with(codec).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidConfig);
            assert!(
                err.message
                    .contains("recompression on the broker is not supported"),
                "{}",
                err.message
            );
        }
        assert!(with("brotli")
            .unwrap_err()
            .message
            .contains("expected producer"));
        let effective = effective_topic_configs(&config, &BTreeMap::new());
        assert_eq!(effective["compression.type"], "producer");
    }
}
