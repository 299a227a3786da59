//! The built-in web console (`GET /`): one static page embedded in the binary
//! (`console.html`, no build step), which polls two read-only JSON endpoints of this
//! broker:
//!
//! - `GET /api/overview`: the cluster as this broker's metadata image has it (brokers
//!   with state and role; topics with each partition's leader, replicas, ISR, and the log
//!   start and high watermark of the replicas hosted here), and the consumer groups this
//!   broker coordinates (state, generation, members and assignments, lag in records and
//!   seconds, as `/metrics`).
//! - `GET /api/records?topic=T&partition=P&offset=O[&max=N]`: up to N (at most
//!   [`RECORDS_MAX`]) records of a partition hosted here from offset O, below its high
//!   watermark: key and value as text when UTF-8, else hex, headers, timestamp.
//!
//! The lag-over-time chart is drawn by the page from its own polls (the last hour, kept in
//! the browser's memory); the broker keeps no history. Blocking: reads logs and takes
//! group locks; call from the blocking pool.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};
use sluice_protocol::batch::Batches;
use sluice_protocol::{BrokerId, Offset, PartitionId};
use sluice_storage::{Clock, SystemClock};

use crate::broker::Broker;
use crate::groups::group::MemberAssignment;
use crate::partition::Partition;

/// The console's page.
pub const PAGE: &str = include_str!("console.html");
/// Most records one `/api/records` answer holds.
pub const RECORDS_MAX: usize = 100;
/// Most log bytes one `/api/records` answer reads.
const RECORDS_READ_BYTES: u32 = 1 << 20;

/// The local replica of `topic`'s partition `index`, if hosted here.
fn hosted(broker: &Broker, topic: &str, index: PartitionId) -> Option<Arc<Partition>> {
    broker
        .topics
        .get(topic)
        .and_then(|t| t.partitions.get(&index).cloned())
}

/// `/api/overview`.
pub fn overview(broker: &Broker) -> Value {
    let image = broker.cluster.image();
    let controller = broker.cluster.controller_id();
    let voters = broker.cluster.voters();
    let brokers: Vec<Value> = image
        .brokers
        .values()
        .map(|b| {
            let role = if Some(b.id) == controller {
                "controller"
            } else if voters.contains(&b.id) {
                "voter"
            } else {
                "broker"
            };
            let address = b
                .listener(crate::cluster::image::NATIVE_LISTENER)
                .map(|l| format!("{}:{}", l.host, l.port));
            json!({
                "id": b.id.0,
                "address": address,
                "state": if b.fenced { "fenced" } else { "active" },
                "role": role,
            })
        })
        .collect();
    let topics: Vec<Value> = image
        .topics
        .iter()
        .map(|(name, topic)| {
            let partitions: Vec<Value> = topic
                .partitions
                .iter()
                .map(|p| {
                    let local = hosted(broker, name, p.index);
                    json!({
                        "partition": p.index.0,
                        "leader": p.leader.0,
                        "leader_epoch": p.leader_epoch.0,
                        "replicas": ids(&p.replicas),
                        "isr": ids(&p.isr),
                        "log_start_offset": local.as_ref().map(|l| l.log_start_offset().0),
                        "high_watermark": local.as_ref().map(|l| l.high_watermark().0),
                    })
                })
                .collect();
            json!({"name": name, "partitions": partitions})
        })
        .collect();
    json!({
        "node_id": broker.config.node_id.0,
        "cluster_id": image.cluster_id,
        "controller": controller.map(|c| c.0),
        "brokers": brokers,
        "topics": topics,
        "groups": groups(broker),
    })
}

fn ids(ids: &[BrokerId]) -> Vec<i32> {
    ids.iter().map(|b| b.0).collect()
}

/// The groups coordinated here, with members and lag.
fn groups(broker: &Broker) -> Vec<Value> {
    let now_ms = SystemClock.now_ms();
    let mut out = Vec::new();
    for shard in broker.groups.loaded_shards() {
        for group in shard.groups() {
            let group = group.blocking_lock();
            let members: Vec<Value> = group
                .describe_members()
                .into_iter()
                .map(|m| {
                    let assignment = match &m.assignment {
                        MemberAssignment::Partitions(topics) => topics
                            .iter()
                            .flat_map(|t| {
                                t.partitions
                                    .iter()
                                    .map(move |p| json!({"topic": t.topic, "partition": p.0}))
                            })
                            .collect(),
                        MemberAssignment::Opaque(_) => Vec::new(),
                    };
                    json!({
                        "member_id": m.member_id,
                        "client_id": m.client_id,
                        "client_host": m.client_host,
                        "assignment": assignment,
                    })
                })
                .collect();
            let lag: Vec<Value> = group
                .all_committed()
                .iter()
                .take(super::LAG_SERIES_MAX)
                .map(|((topic, index), committed)| {
                    let offset = committed.value.offset;
                    let (records, seconds) = match hosted(broker, topic, *index) {
                        Some(p) => {
                            let (r, s) = super::partition_lag(&p, offset, now_ms);
                            (Some(r), Some(s))
                        }
                        None => (None, None),
                    };
                    json!({
                        "topic": topic,
                        "partition": index.0,
                        "committed": offset.0,
                        "lag_records": records,
                        "lag_seconds": seconds,
                    })
                })
                .collect();
            out.push(json!({
                "group": group.id(),
                "state": group.state().name(),
                "generation": group.generation(),
                "members": members,
                "lag": lag,
            }));
        }
    }
    out.sort_by(|a, b| a["group"].as_str().cmp(&b["group"].as_str()));
    out
}

/// `/api/records`: the query's records, or a message saying what is wrong.
pub fn records(broker: &Broker, query: &str) -> Result<Value, String> {
    let param = |key: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| percent_decode(v))
    };
    let topic = param("topic").ok_or("give ?topic=T&partition=P&offset=O")?;
    let number = |key: &str, default: Option<i64>| -> Result<i64, String> {
        match param(key) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("{key} must be a number, not {v:?}")),
            None => default.ok_or(format!("give {key}=N")),
        }
    };
    let index = i32::try_from(number("partition", None)?).map_err(|_| "bad partition")?;
    let offset = Offset(number("offset", Some(0))?);
    let max = usize::try_from(number("max", Some(20))?)
        .unwrap_or(0)
        .clamp(1, RECORDS_MAX);
    let partition = hosted(broker, &topic, PartitionId(index))
        .ok_or(format!("{topic}-{index} is not hosted on this broker"))?;
    let high_watermark = partition.high_watermark();
    let from = offset.max(partition.log_start_offset());
    let bytes = if from < high_watermark {
        partition
            .read_log(from, RECORDS_READ_BYTES, high_watermark)
            .map_err(|e| e.message)?
    } else {
        Bytes::new()
    };
    let mut out = Vec::new();
    'batches: for batch in Batches::new(bytes) {
        let batch = batch.map_err(|e| e.to_string())?;
        let records = batch.records().map_err(|e| e.to_string())?;
        for record in records {
            let record = record.map_err(|e| e.to_string())?;
            if record.offset < from {
                continue;
            }
            if out.len() >= max {
                break 'batches;
            }
            out.push(json!({
                "offset": record.offset.0,
                "timestamp": record.timestamp,
                "key": record.key.as_deref().map(shown),
                "value": record.value.as_deref().map(shown),
                "headers": record.headers.iter().map(|h| json!({
                    "key": shown(&h.key),
                    "value": h.value.as_deref().map(shown),
                })).collect::<Vec<_>>(),
            }));
        }
    }
    Ok(json!({
        "topic": topic,
        "partition": index,
        "log_start_offset": partition.log_start_offset().0,
        "high_watermark": high_watermark.0,
        "records": out,
    }))
}

/// Bytes as the console shows them: the text when UTF-8, else hex.
fn shown(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => json!({"text": text}),
        Err(_) => json!({"hex": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()}),
    }
}

/// `%XX` and `+` of a query value.
fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| Some(hex(bytes[i + 1])? * 16 + hex(bytes[i + 2])?))
            .flatten();
        match (bytes[i], escaped) {
            (_, Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b'+', None) => out.push(b' '),
            (b, None) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn bytes_show_as_text_or_hex() {
        assert_eq!(shown(b"pizza"), json!({"text": "pizza"}));
        assert_eq!(shown(&[0xff, 0x00]), json!({"hex": "ff00"}));
    }
}
