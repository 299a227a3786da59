//! Metadata and DescribeCluster over the Kafka protocol: [`crate::services::admin`]'s
//! cluster view with the brokers' Kafka addresses. A Metadata request that allows it
//! creates missing topics with the broker's defaults (`auto_create_topics`, on by default
//! as in Kafka). Topic ids are derived from the cluster id and the topic's creation index,
//! so every broker gives a topic the same id and a re-created topic a new one.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId as KafkaBrokerId, DescribeClusterRequest, DescribeClusterResponse,
    MetadataRequest, MetadataResponse, ResponseKind,
};
use sluice_protocol::BrokerId;
use uuid::Uuid;

use super::{codec, kafka_error, kafka_str, topic_name};
use crate::cluster::image::KAFKA_LISTENER;
use crate::security::Principal;
use crate::services::admin::Admin;

/// DescribeCluster's endpoint type for brokers (the only one a broker answers for).
const ENDPOINT_BROKERS: i8 = 1;
/// Kafka's UNSUPPORTED_ENDPOINT_TYPE.
const UNSUPPORTED_ENDPOINT_TYPE: i16 = 119;

/// A topic's Kafka id: the cluster id's hash and the topic's creation index.
pub fn topic_id(cluster_id: &str, id: u64) -> Uuid {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = cluster_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    // Never the nil id, which means "no id" on the wire.
    Uuid::from_u64_pair(hash | 1, id)
}

/// Metadata: the brokers with a Kafka listener, this broker as the "controller" (any
/// broker forwards topic administration to the active controller, as KRaft brokers do),
/// and the topics asked (all when the list is null, or empty before v1).
pub async fn metadata(
    service: &Admin,
    principal: &Principal,
    request: MetadataRequest,
    version: i16,
    node_id: BrokerId,
) -> ResponseKind {
    let image = service.image();
    let asked: Option<Vec<String>> = match request.topics {
        None => None,
        Some(topics) if topics.is_empty() && version == 0 => None,
        Some(topics) => Some(
            topics
                .into_iter()
                .map(|t| match t.name {
                    Some(name) => name.0.to_string(),
                    // v10+: a topic named by id only.
                    None => image
                        .topics
                        .iter()
                        .find(|(_, meta)| topic_id(&image.cluster_id, meta.id) == t.topic_id)
                        .map(|(name, _)| name.clone())
                        .unwrap_or_default(),
                })
                .collect(),
        ),
    };
    // Before v4 a Metadata request always allowed auto-creation.
    let auto_create = version < 4 || request.allow_auto_topic_creation;
    let view = service
        .cluster_view(principal, KAFKA_LISTENER, asked, auto_create, false)
        .await;
    let brokers = view
        .brokers
        .iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(KafkaBrokerId(b.id.0))
                .with_host(kafka_str(b.host.clone()))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.clone().map(kafka_str))
        })
        .collect();
    let topics = view
        .topics
        .into_iter()
        .map(|(name, described)| {
            let topic = MetadataResponseTopic::default().with_name(Some(topic_name(name.clone())));
            match described {
                Ok(t) => topic
                    .with_topic_id(topic_id(&view.cluster_id, t.id))
                    .with_is_internal(t.is_internal)
                    .with_partitions(
                        t.partitions
                            .into_iter()
                            .map(|p| {
                                let code = p.error.as_ref().map_or(0, |e| {
                                    codec::kafka_error_code_for(ApiKey::Metadata, e.code)
                                });
                                MetadataResponsePartition::default()
                                    .with_error_code(code)
                                    .with_partition_index(p.partition.0)
                                    .with_leader_id(KafkaBrokerId(p.leader.0))
                                    .with_leader_epoch(p.leader_epoch.0)
                                    .with_replica_nodes(ids(&p.replicas))
                                    .with_isr_nodes(ids(&p.isr))
                                    .with_offline_replicas(ids(&p.offline_replicas))
                            })
                            .collect(),
                    ),
                Err(e) => topic.with_error_code(kafka_error(ApiKey::Metadata, &e).0),
            }
        })
        .collect();
    ResponseKind::Metadata(
        MetadataResponse::default()
            .with_brokers(brokers)
            .with_cluster_id(Some(kafka_str(view.cluster_id)))
            .with_controller_id(KafkaBrokerId(node_id.0))
            .with_topics(topics),
    )
}

/// DescribeCluster: the brokers with a Kafka listener (fenced ones too when asked, v2+).
pub async fn describe_cluster(
    service: &Admin,
    principal: &Principal,
    request: DescribeClusterRequest,
    node_id: BrokerId,
) -> ResponseKind {
    if request.endpoint_type != ENDPOINT_BROKERS {
        return ResponseKind::DescribeCluster(
            DescribeClusterResponse::default()
                .with_error_code(UNSUPPORTED_ENDPOINT_TYPE)
                .with_error_message(Some(kafka_str(
                    "sluice brokers describe brokers only (endpoint type 1)",
                ))),
        );
    }
    let view = service
        .cluster_view(
            principal,
            KAFKA_LISTENER,
            Some(Vec::new()),
            false,
            request.include_fenced_brokers,
        )
        .await;
    let brokers = view
        .brokers
        .into_iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(KafkaBrokerId(b.id.0))
                .with_host(kafka_str(b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.map(kafka_str))
                .with_is_fenced(b.fenced)
        })
        .collect();
    ResponseKind::DescribeCluster(
        DescribeClusterResponse::default()
            .with_cluster_id(kafka_str(view.cluster_id))
            .with_controller_id(KafkaBrokerId(node_id.0))
            .with_brokers(brokers),
    )
}

fn ids(ids: &[BrokerId]) -> Vec<KafkaBrokerId> {
    ids.iter().map(|id| KafkaBrokerId(id.0)).collect()
}
