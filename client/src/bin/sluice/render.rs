//! How `sluice` prints: aligned text tables and the JSON shapes of `shared/INTERFACES.md`.
//! Pure functions from library values to strings, so they are tested without a broker.

use serde_json::{json, Value};
use sluice_client::{
    BrokerId, ClusterDescription, GroupDescription, GroupListing, GroupPartitionLag,
    GroupPartitionOffset, PartitionId, TopicDescription, TopicInfo, TopicPartition,
};

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
    // -1: the leader could not be asked (down, or being elected); JSON keeps the -1.
    let offset = |o: i64| {
        if o < 0 {
            "unavailable".to_owned()
        } else {
            o.to_string()
        }
    };
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

/// `group list`.
pub fn group_list_text(groups: &[GroupListing]) -> String {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                g.group.clone(),
                g.state.clone(),
                g.members.to_string(),
                g.coordinator.to_string(),
            ]
        })
        .collect();
    table(&["GROUP", "STATE", "MEMBERS", "COORDINATOR"], &rows)
}

/// `group list --format json`.
pub fn group_list_json(groups: &[GroupListing]) -> Value {
    Value::Array(
        groups
            .iter()
            .map(|g| {
                json!({
                    "group": g.group,
                    "state": g.state,
                    "members": g.members,
                    "protocol_type": g.protocol_type,
                    "coordinator": g.coordinator.0,
                })
            })
            .collect(),
    )
}

/// The member that owns `tp` in the description, if any.
fn owner<'a>(g: &'a GroupDescription, tp: &TopicPartition) -> Option<&'a str> {
    g.members
        .iter()
        .find(|m| m.assignment.contains(tp))
        .map(|m| m.member_id.as_str())
}

/// `group describe`: a summary line, the members with their partitions, then each
/// partition's committed offset, log end, lag and owner (`-` where unknown or none).
pub fn group_describe_text(g: &GroupDescription, offsets: &[GroupPartitionOffset]) -> String {
    let mut out = format!(
        "Group: {}  State: {}  Generation: {}  Members: {}  Coordinator: {}\n",
        g.group,
        g.state,
        g.generation,
        g.members.len(),
        g.coordinator
    );
    if !g.members.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = g
            .members
            .iter()
            .map(|m| {
                let assignment = if m.assignment.is_empty() {
                    "-".to_owned()
                } else {
                    m.assignment
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                };
                vec![
                    m.member_id.clone(),
                    m.client_id.clone(),
                    m.client_host.clone(),
                    assignment,
                ]
            })
            .collect();
        out.push_str(&table(
            &["MEMBER-ID", "CLIENT-ID", "HOST", "ASSIGNMENT"],
            &rows,
        ));
    }
    if !offsets.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = offsets
            .iter()
            .map(|o| {
                vec![
                    o.partition.topic.clone(),
                    o.partition.partition.to_string(),
                    known(o.committed),
                    known(o.log_end),
                    known(o.lag),
                    owner(g, &o.partition).unwrap_or("-").to_owned(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "TOPIC",
                "PARTITION",
                "COMMITTED",
                "LOG-END",
                "LAG",
                "MEMBER-ID",
            ],
            &rows,
        ));
    }
    out
}

/// `group describe --format json`; unknown offsets are -1, as in `topic describe`.
pub fn group_describe_json(g: &GroupDescription, offsets: &[GroupPartitionOffset]) -> Value {
    let partition = |tp: &TopicPartition| json!({"topic": tp.topic, "partition": tp.partition.0});
    json!({
        "group": g.group,
        "state": g.state,
        "generation": g.generation,
        "protocol_type": g.protocol_type,
        "protocol": g.protocol,
        "coordinator": g.coordinator.0,
        "members": g.members.iter().map(|m| json!({
            "member_id": m.member_id,
            "client_id": m.client_id,
            "client_host": m.client_host,
            "subscription": m.subscription,
            "assignment": m.assignment.iter().map(partition).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "offsets": offsets.iter().map(|o| json!({
            "topic": o.partition.topic,
            "partition": o.partition.partition.0,
            "committed": o.committed,
            "log_end": o.log_end,
            "lag": o.lag,
            "member_id": owner(g, &o.partition),
        })).collect::<Vec<_>>(),
    })
}

/// `group lag`: one row per partition; unknown figures are `-`.
pub fn group_lag_text(lags: &[GroupPartitionLag]) -> String {
    let rows: Vec<Vec<String>> = lags
        .iter()
        .map(|l| {
            let o = &l.offsets;
            vec![
                o.partition.topic.clone(),
                o.partition.partition.to_string(),
                known(o.committed),
                known(o.log_end),
                known(o.lag),
                if l.lag_seconds < 0.0 {
                    "-".to_owned()
                } else {
                    format!("{:.3}", l.lag_seconds)
                },
            ]
        })
        .collect();
    table(
        &[
            "TOPIC",
            "PARTITION",
            "COMMITTED",
            "LOG-END",
            "LAG-RECORDS",
            "LAG-SECONDS",
        ],
        &rows,
    )
}

/// `group lag --format json`: unknown figures are -1.
pub fn group_lag_json(lags: &[GroupPartitionLag]) -> Value {
    Value::Array(
        lags.iter()
            .map(|l| {
                json!({
                    "topic": l.offsets.partition.topic,
                    "partition": l.offsets.partition.partition.0,
                    "committed": l.offsets.committed,
                    "log_end": l.offsets.log_end,
                    "lag_records": l.offsets.lag,
                    "lag_seconds": l.lag_seconds,
                })
            })
            .collect(),
    )
}

/// `group reset-offsets`.
pub fn group_reset_text(group: &str, topic: &str, offsets: &[(PartitionId, i64)]) -> String {
    let mut out = format!("reset the offsets of group \"{group}\" for topic \"{topic}\"\n");
    let rows: Vec<Vec<String>> = offsets
        .iter()
        .map(|(p, o)| vec![p.to_string(), o.to_string()])
        .collect();
    out.push_str(&table(&["PARTITION", "NEW-OFFSET"], &rows));
    out
}

/// `group reset-offsets --format json`.
pub fn group_reset_json(group: &str, topic: &str, offsets: &[(PartitionId, i64)]) -> Value {
    json!({
        "group": group,
        "topic": topic,
        "offsets": offsets.iter().map(|(p, o)| json!({"partition": p.0, "offset": o})).collect::<Vec<_>>(),
    })
}

/// An offset for a table: `-` where none is known (negative).
fn known(offset: i64) -> String {
    if offset < 0 {
        "-".to_owned()
    } else {
        offset.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_client::{BrokerDescription, GroupMember, LeaderEpoch, PartitionDescription};

    fn group() -> (GroupDescription, Vec<GroupPartitionOffset>) {
        let tp = |p| TopicPartition::new("g1", PartitionId(p));
        let member = |id: &str, partitions: &[i32]| GroupMember {
            member_id: id.into(),
            client_id: "sluice-cli".into(),
            client_host: "127.0.0.1".into(),
            subscription: vec!["g1".into()],
            assignment: partitions.iter().map(|&p| tp(p)).collect(),
        };
        let description = GroupDescription {
            group: "grp".into(),
            state: "Stable".into(),
            protocol_type: "consumer".into(),
            protocol: "server".into(),
            generation: 3,
            members: vec![member("m-a", &[0, 2]), member("m-b", &[1])],
            coordinator: BrokerId(2),
        };
        let offset = |p, committed, log_end, lag| GroupPartitionOffset {
            partition: tp(p),
            committed,
            log_end,
            lag,
        };
        let offsets = vec![
            offset(0, 4, 10, 6),
            offset(1, -1, 3, -1),
            offset(2, 7, -1, -1),
        ];
        (description, offsets)
    }

    #[test]
    fn group_describe() {
        let (description, offsets) = group();
        assert_eq!(
            group_describe_text(&description, &offsets),
            "Group: grp  State: Stable  Generation: 3  Members: 2  Coordinator: 2\n\
             \n\
             MEMBER-ID  CLIENT-ID   HOST       ASSIGNMENT\n\
             m-a        sluice-cli  127.0.0.1  g1/0,g1/2\n\
             m-b        sluice-cli  127.0.0.1  g1/1\n\
             \n\
             TOPIC  PARTITION  COMMITTED  LOG-END  LAG  MEMBER-ID\n\
             g1     0          4          10       6    m-a\n\
             g1     1          -          3        -    m-b\n\
             g1     2          7          -        -    m-a\n"
        );
        let j = group_describe_json(&description, &offsets);
        assert_eq!(
            (&j["group"], &j["state"], &j["generation"]),
            (&json!("grp"), &json!("Stable"), &json!(3))
        );
        assert_eq!(
            j["members"][0]["assignment"],
            json!([{"topic": "g1", "partition": 0}, {"topic": "g1", "partition": 2}])
        );
        assert_eq!(j["members"][1]["member_id"], "m-b");
        assert_eq!(
            j["offsets"][1],
            json!({"topic": "g1", "partition": 1, "committed": -1, "log_end": 3, "lag": -1, "member_id": "m-b"})
        );
    }

    #[test]
    fn group_lag() {
        let (_, offsets) = group();
        let lags: Vec<GroupPartitionLag> = offsets
            .into_iter()
            .zip([2.5, -1.0, -1.0])
            .map(|(offsets, lag_seconds)| GroupPartitionLag {
                offsets,
                lag_seconds,
            })
            .collect();
        assert_eq!(
            group_lag_text(&lags),
            "TOPIC  PARTITION  COMMITTED  LOG-END  LAG-RECORDS  LAG-SECONDS\n\
             g1     0          4          10       6            2.500\n\
             g1     1          -          3        -            -\n\
             g1     2          7          -        -            -\n"
        );
        assert_eq!(
            group_lag_json(&lags)[0],
            json!({"topic": "g1", "partition": 0, "committed": 4, "log_end": 10, "lag_records": 6, "lag_seconds": 2.5})
        );
    }

    #[test]
    fn an_empty_group_has_no_member_table() {
        let (mut description, offsets) = group();
        description.members.clear();
        description.state = "Empty".into();
        let text = group_describe_text(&description, &offsets[..1]);
        assert_eq!(
            text,
            "Group: grp  State: Empty  Generation: 3  Members: 0  Coordinator: 2\n\
             \n\
             TOPIC  PARTITION  COMMITTED  LOG-END  LAG  MEMBER-ID\n\
             g1     0          4          10       6    -\n"
        );
        assert_eq!(group_describe_json(&description, &[])["members"], json!([]));
    }

    #[test]
    fn group_list_and_reset() {
        let groups = vec![GroupListing {
            group: "grp".into(),
            state: "Empty".into(),
            members: 0,
            protocol_type: "consumer".into(),
            coordinator: BrokerId(1),
        }];
        assert_eq!(
            group_list_text(&groups),
            "GROUP  STATE  MEMBERS  COORDINATOR\ngrp    Empty  0        1\n"
        );
        let j = group_list_json(&groups);
        assert_eq!(
            (&j[0]["group"], &j[0]["state"], &j[0]["members"]),
            (&json!("grp"), &json!("Empty"), &json!(0))
        );
        let offsets = [(PartitionId(0), 0), (PartitionId(1), 12)];
        assert_eq!(
            group_reset_text("grp", "g1", &offsets),
            "reset the offsets of group \"grp\" for topic \"g1\"\nPARTITION  NEW-OFFSET\n0          0\n1          12\n"
        );
        assert_eq!(
            group_reset_json("grp", "g1", &offsets)["offsets"][1],
            json!({"partition": 1, "offset": 12})
        );
    }

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
    fn topic_describe_with_a_partition_whose_leader_is_down_or_being_elected() {
        let mut t = description();
        let mut down = t.partitions[0].clone();
        down.partition = PartitionId(1);
        down.leader = BrokerId(3);
        down.isr = vec![BrokerId(3)];
        down.log_start_offset = -1;
        down.high_watermark = -1;
        let mut electing = down.clone();
        electing.partition = PartitionId(2);
        electing.leader = BrokerId::NONE;
        electing.isr = vec![];
        t.partitions.extend([down, electing]);
        assert_eq!(
            topic_describe_text(&t),
            "Topic: t1  Partitions: 3  ReplicationFactor: 3  Configs: retention.ms=1000\n\
             PARTITION  LEADER  EPOCH  REPLICAS  ISR  LOG-START    HIGH-WATERMARK\n\
             0          2       4      2,1,3     2,1  0            17\n\
             1          3       4      2,1,3     3    unavailable  unavailable\n\
             2          none    4      2,1,3          unavailable  unavailable\n"
        );
        let j = topic_describe_json(&t);
        assert_eq!(
            j["partitions"][2],
            json!({"partition": 2, "leader": -1, "leader_epoch": 4, "replicas": [2, 1, 3],
                   "isr": [], "log_start_offset": -1, "high_watermark": -1})
        );
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

    #[test]
    fn a_three_voter_cluster_after_its_controller_failed_over() {
        // Voters 1-3 and a broker-only node 4; node 1 was fenced and 2 leads the quorum.
        let broker = |id: i32, fenced: bool| BrokerDescription {
            id: BrokerId(id),
            address: format!("10.0.0.{id}:9700"),
            fenced,
        };
        let c = ClusterDescription {
            cluster_id: "prod".into(),
            controller: Some(BrokerId(2)),
            voters: vec![BrokerId(1), BrokerId(2), BrokerId(3)],
            brokers: vec![
                broker(1, true),
                broker(2, false),
                broker(3, false),
                broker(4, false),
            ],
        };
        assert_eq!(
            cluster_json(&c),
            json!({"cluster_id": "prod", "controller": {"leader": 2, "voters": [1, 2, 3]},
                   "brokers": [{"id": 1, "address": "10.0.0.1:9700", "state": "fenced"},
                               {"id": 2, "address": "10.0.0.2:9700", "state": "active"},
                               {"id": 3, "address": "10.0.0.3:9700", "state": "active"},
                               {"id": 4, "address": "10.0.0.4:9700", "state": "active"}]})
        );
        assert_eq!(
            cluster_text(&c),
            "Cluster: prod\nController: 2  Voters: 1,2,3\n\
             ID  ADDRESS        STATE   ROLE\n\
             1   10.0.0.1:9700  fenced  voter\n\
             2   10.0.0.2:9700  active  controller\n\
             3   10.0.0.3:9700  active  voter\n\
             4   10.0.0.4:9700  active\n"
        );
        // During a quorum election there is no controller: JSON says null.
        let electing = ClusterDescription {
            controller: None,
            ..c
        };
        assert_eq!(cluster_json(&electing)["controller"]["leader"], Value::Null);
        assert!(cluster_text(&electing).contains("Controller: none (no quorum leader)"));
    }
}

/// Standard base64 (RFC 4648, with padding), for record bytes that are not UTF-8.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Key and value as JSON strings: UTF-8 text when both are valid UTF-8, else both in
/// base64 and `true` for the `"encoding":"base64"` field. Null stays null.
fn encode_pair(key: Option<&[u8]>, value: Option<&[u8]>) -> (Value, Value, bool) {
    let utf8 = |b: Option<&[u8]>| b.is_none_or(|b| std::str::from_utf8(b).is_ok());
    let as_base64 = !(utf8(key) && utf8(value));
    let encode = |b: Option<&[u8]>| match b {
        None => Value::Null,
        Some(b) if as_base64 => Value::String(base64(b)),
        Some(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
    };
    (encode(key), encode(value), as_base64)
}

/// One record of `consume --format json`:
/// `{"topic","partition","offset","timestamp","key","value","headers"}`, plus
/// `"encoding":"base64"` when key and value are given in base64 (either was not UTF-8).
/// Headers are `[{"key","value"}]` under the same rule, each with its own `encoding`.
pub fn record_json(record: &sluice_client::ConsumerRecord) -> Value {
    let (key, value, as_base64) = encode_pair(record.key.as_deref(), record.value.as_deref());
    let headers: Vec<Value> = record
        .headers
        .iter()
        .map(|h| {
            let (k, v, b64) = encode_pair(Some(&h.key), h.value.as_deref());
            let mut header = json!({ "key": k, "value": v });
            if b64 {
                header["encoding"] = json!("base64");
            }
            header
        })
        .collect();
    let mut out = json!({
        "topic": record.topic,
        "partition": record.partition.0,
        "offset": record.offset,
        "timestamp": record.timestamp_ms,
        "key": key,
        "value": value,
        "headers": headers,
    });
    if as_base64 {
        out["encoding"] = json!("base64");
    }
    out
}

/// One record of `consume` in text: the value, or `key SEP value` with a key separator;
/// bytes as they are, `null` for a missing key or value (as Kafka's console consumer).
pub fn record_text(
    record: &sluice_client::ConsumerRecord,
    key_separator: Option<&str>,
    out: &mut Vec<u8>,
) {
    let null = |b: &Option<bytes::Bytes>| -> Vec<u8> {
        b.as_deref()
            .map_or_else(|| b"null".to_vec(), <[u8]>::to_vec)
    };
    if let Some(sep) = key_separator {
        out.extend_from_slice(&null(&record.key));
        out.extend_from_slice(sep.as_bytes());
    }
    out.extend_from_slice(&null(&record.value));
    out.push(b'\n');
}

#[cfg(test)]
mod record_tests {
    use super::*;
    use bytes::Bytes;
    use sluice_client::{ConsumerRecord, PartitionId, RecordHeader};

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected, "{input}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    fn record(key: Option<&[u8]>, value: Option<&[u8]>) -> ConsumerRecord {
        ConsumerRecord {
            topic: "t".into(),
            partition: PartitionId(1),
            offset: 7,
            timestamp_ms: 1_700_000_000_000,
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            headers: vec![],
        }
    }

    #[test]
    fn utf8_records_are_text() {
        assert_eq!(
            record_json(&record(Some(b"k"), Some("v\u{e9}".as_bytes()))),
            json!({"topic": "t", "partition": 1, "offset": 7, "timestamp": 1_700_000_000_000i64,
                   "key": "k", "value": "v\u{e9}", "headers": []})
        );
        let j = record_json(&record(None, Some(b"v")));
        assert_eq!((j["key"].clone(), j.get("encoding")), (Value::Null, None));
    }

    #[test]
    fn other_bytes_are_base64() {
        let j = record_json(&record(Some(b"k"), Some(&[0xff, 0x00])));
        assert_eq!(
            (&j["key"], &j["value"], &j["encoding"]),
            (&json!("aw=="), &json!("/wA="), &json!("base64"))
        );
        let j = record_json(&record(None, Some(&[0xc3])));
        assert_eq!(
            (&j["key"], &j["value"], &j["encoding"]),
            (&Value::Null, &json!("ww=="), &json!("base64"))
        );
    }

    #[test]
    fn headers_follow_the_same_rule() {
        let mut r = record(None, Some(b"v"));
        r.headers = vec![
            RecordHeader {
                key: Bytes::from_static(b"h"),
                value: Some(Bytes::from_static(b"x")),
            },
            RecordHeader {
                key: Bytes::from_static(b"bin"),
                value: Some(Bytes::from_static(&[0x80])),
            },
            RecordHeader {
                key: Bytes::from_static(b"none"),
                value: None,
            },
        ];
        assert_eq!(
            record_json(&r)["headers"],
            json!([{"key": "h", "value": "x"}, {"key": "Ymlu", "value": "gA==", "encoding": "base64"},
                   {"key": "none", "value": null}])
        );
    }

    #[test]
    fn text_lines() {
        let mut out = Vec::new();
        record_text(&record(Some(b"k"), Some(b"v")), None, &mut out);
        record_text(&record(Some(b"k"), Some(b"v")), Some("="), &mut out);
        record_text(&record(None, Some(b"v")), Some("\t"), &mut out);
        assert_eq!(out, b"v\nk=v\nnull\tv\n");
    }
}
