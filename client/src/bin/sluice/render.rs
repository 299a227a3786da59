//! How `sluice` prints: aligned text tables and the JSON shapes of `shared/INTERFACES.md`.
//! Pure functions from library values to strings, so they are tested without a broker.

use serde_json::{json, Value};
use sluice_client::{BrokerId, ClusterDescription, TopicDescription, TopicInfo};

/// Columns separated by two spaces, each as wide as its widest cell; no trailing spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn ids(ids: &[BrokerId]) -> String {
    ids.iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn id_values(ids: &[BrokerId]) -> Vec<i32> {
    ids.iter().map(|id| id.0).collect()
}

/// `topic list`.
pub fn topic_list_text(topics: &[TopicInfo]) -> String {
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.partitions.to_string(),
                t.replication_factor.to_string(),
                if t.internal { "yes" } else { "" }.to_owned(),
            ]
        })
        .collect();
    table(
        &["TOPIC", "PARTITIONS", "REPLICATION-FACTOR", "INTERNAL"],
        &rows,
    )
}

/// `topic list --format json`.
pub fn topic_list_json(topics: &[TopicInfo]) -> Value {
    Value::Array(
        topics
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "partitions": t.partitions,
                    "replication_factor": t.replication_factor,
                    "internal": t.internal,
                })
            })
            .collect(),
    )
}

/// `topic describe`: a summary line like `kafka-topics --describe`, then one row per
/// partition.
pub fn topic_describe_text(t: &TopicDescription) -> String {
    let configs = if t.config.is_empty() {
        "-".to_owned()
    } else {
        t.config
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = format!(
        "Topic: {}  Partitions: {}  ReplicationFactor: {}  Configs: {}\n",
        t.name,
        t.partitions.len(),
        t.replication_factor,
        configs
    );
    let offset = |o: i64| if o < 0 { "-".to_owned() } else { o.to_string() };
    let rows: Vec<Vec<String>> = t
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                if p.leader == BrokerId::NONE {
                    "none".to_owned()
                } else {
                    p.leader.to_string()
                },
                p.leader_epoch.to_string(),
                ids(&p.replicas),
                ids(&p.isr),
                offset(p.log_start_offset),
                offset(p.high_watermark),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "PARTITION",
            "LEADER",
            "EPOCH",
            "REPLICAS",
            "ISR",
            "LOG-START",
            "HIGH-WATERMARK",
        ],
        &rows,
    ));
    out
}

/// `topic describe --format json`.
pub fn topic_describe_json(t: &TopicDescription) -> Value {
    json!({
        "name": t.name,
        "internal": t.internal,
        "replication_factor": t.replication_factor,
        "partitions": t.partitions.iter().map(|p| json!({
            "partition": p.partition.0,
            "leader": p.leader.0,
            "leader_epoch": p.leader_epoch.0,
            "replicas": id_values(&p.replicas),
            "isr": id_values(&p.isr),
            "log_start_offset": p.log_start_offset,
            "high_watermark": p.high_watermark,
        })).collect::<Vec<_>>(),
        "config": t.config,
    })
}

fn broker_state(fenced: bool) -> &'static str {
    if fenced {
        "fenced"
    } else {
        "active"
    }
}

/// `cluster describe`.
pub fn cluster_text(c: &ClusterDescription) -> String {
    let controller = match c.controller {
        Some(id) => id.to_string(),
        None => "none (no quorum leader)".to_owned(),
    };
    let mut out = format!(
        "Cluster: {}\nController: {}  Voters: {}\n",
        c.cluster_id,
        controller,
        if c.voters.is_empty() {
            "-".to_owned()
        } else {
            ids(&c.voters)
        }
    );
    let rows: Vec<Vec<String>> = c
        .brokers
        .iter()
        .map(|b| {
            vec![
                b.id.to_string(),
                b.address.clone(),
                broker_state(b.fenced).to_owned(),
                if Some(b.id) == c.controller {
                    "controller"
                } else if c.voters.contains(&b.id) {
                    "voter"
                } else {
                    ""
                }
                .to_owned(),
            ]
        })
        .collect();
    out.push_str(&table(&["ID", "ADDRESS", "STATE", "ROLE"], &rows));
    out
}

/// `cluster describe --format json`.
pub fn cluster_json(c: &ClusterDescription) -> Value {
    json!({
        "cluster_id": c.cluster_id,
        "controller": {
            "leader": c.controller.map(|id| id.0),
            "voters": id_values(&c.voters),
        },
        "brokers": c.brokers.iter().map(|b| json!({
            "id": b.id.0,
            "address": b.address,
            "state": broker_state(b.fenced),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_client::{BrokerDescription, LeaderEpoch, PartitionDescription, PartitionId};

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["orders".to_owned(), "3".to_owned(), "".to_owned()],
            vec!["a".to_owned(), "12".to_owned(), "yes".to_owned()],
        ];
        assert_eq!(
            table(&["TOPIC", "PARTITIONS", "X"], &rows),
            "TOPIC   PARTITIONS  X\norders  3\na       12          yes\n"
        );
    }

    fn description() -> TopicDescription {
        TopicDescription {
            name: "t1".into(),
            internal: false,
            replication_factor: 3,
            partitions: vec![PartitionDescription {
                partition: PartitionId(0),
                leader: BrokerId(2),
                leader_epoch: LeaderEpoch(4),
                replicas: vec![BrokerId(2), BrokerId(1), BrokerId(3)],
                isr: vec![BrokerId(2), BrokerId(1)],
                log_start_offset: 0,
                high_watermark: 17,
            }],
            config: [("retention.ms".to_owned(), "1000".to_owned())].into(),
        }
    }

    #[test]
    fn topic_describe() {
        assert_eq!(
            topic_describe_text(&description()),
            "Topic: t1  Partitions: 1  ReplicationFactor: 3  Configs: retention.ms=1000\n\
             PARTITION  LEADER  EPOCH  REPLICAS  ISR  LOG-START  HIGH-WATERMARK\n\
             0          2       4      2,1,3     2,1  0          17\n"
        );
        let j = topic_describe_json(&description());
        assert_eq!(j["name"], "t1");
        assert_eq!(j["config"]["retention.ms"], "1000");
        assert_eq!(
            j["partitions"][0],
            json!({"partition": 0, "leader": 2, "leader_epoch": 4, "replicas": [2, 1, 3],
                   "isr": [2, 1], "log_start_offset": 0, "high_watermark": 17})
        );
    }

    #[test]
    fn topic_list() {
        let topics = vec![TopicInfo {
            name: "t".into(),
            partitions: 2,
            replication_factor: 1,
            internal: false,
        }];
        assert_eq!(
            topic_list_json(&topics),
            json!([{"name": "t", "partitions": 2, "replication_factor": 1, "internal": false}])
        );
        assert_eq!(
            topic_list_text(&topics),
            "TOPIC  PARTITIONS  REPLICATION-FACTOR  INTERNAL\nt      2           1\n"
        );
    }

    #[test]
    fn cluster() {
        let c = ClusterDescription {
            cluster_id: "abc".into(),
            controller: Some(BrokerId(1)),
            voters: vec![BrokerId(1)],
            brokers: vec![
                BrokerDescription {
                    id: BrokerId(1),
                    address: "127.0.0.1:9700".into(),
                    fenced: false,
                },
                BrokerDescription {
                    id: BrokerId(2),
                    address: "127.0.0.1:9701".into(),
                    fenced: true,
                },
            ],
        };
        assert_eq!(
            cluster_json(&c),
            json!({"cluster_id": "abc", "controller": {"leader": 1, "voters": [1]},
                   "brokers": [{"id": 1, "address": "127.0.0.1:9700", "state": "active"},
                               {"id": 2, "address": "127.0.0.1:9701", "state": "fenced"}]})
        );
        assert_eq!(
            cluster_text(&c),
            "Cluster: abc\nController: 1  Voters: 1\n\
             ID  ADDRESS         STATE   ROLE\n\
             1   127.0.0.1:9700  active  controller\n\
             2   127.0.0.1:9701  fenced\n"
        );
    }
}
