//! ApiVersions, Metadata and DescribeCluster: what a client asks first and after every
//! NOT_LEADER_OR_FOLLOWER. A single node leads everything and is its own controller.

use std::sync::Arc;

use sluice_protocol::messages::{
    ApiVersionRange, ApiVersionsResponse, ConfigEntry, DescribeClusterBroker,
    DescribeClusterResponse, MetadataBroker, MetadataPartition, MetadataRequest, MetadataResponse,
    MetadataTopic,
};
use sluice_protocol::{BrokerId, ErrorCode};

use super::SERVED;
use crate::broker::Broker;
use crate::error::ApiError;
use crate::topics::Topic;

/// The apis this broker serves, each with its version range.
pub fn api_versions() -> ApiVersionsResponse {
    ApiVersionsResponse {
        api_keys: SERVED
            .iter()
            .map(|api| ApiVersionRange {
                api_key: *api as u16,
                min_version: api.min_version(),
                max_version: api.max_version(),
            })
            .collect(),
    }
}

/// The advertised address split into host and port (validated at start-up).
fn advertised(broker: &Broker) -> (String, u16) {
    let advertise = &broker.config.advertise;
    let (host, port) = advertise
        .rsplit_once(':')
        .expect("advertise is HOST:PORT (validated by config)");
    (host.to_string(), port.parse().unwrap_or(0))
}

/// Brokers, the controller, and the requested topics (all when `topics` is null).
pub fn metadata(broker: &Arc<Broker>, request: MetadataRequest) -> MetadataResponse {
    let (host, port) = advertised(broker);
    let topics = match request.topics {
        None => broker.topics.list().iter().map(|t| describe(t)).collect(),
        Some(names) => names
            .into_iter()
            .map(|name| match broker.topics.get(&name) {
                Some(topic) => describe(&topic),
                None => {
                    let e = ApiError::unknown_topic(&name);
                    MetadataTopic {
                        error_code: e.code,
                        error_message: e.wire_message(),
                        name,
                        is_internal: false,
                        replication_factor: -1,
                        configs: Vec::new(),
                        partitions: Vec::new(),
                    }
                }
            })
            .collect(),
    };
    MetadataResponse {
        cluster_id: broker.topics.cluster_id().to_string(),
        controller_id: broker.config.node_id,
        brokers: vec![MetadataBroker {
            broker_id: broker.config.node_id,
            host,
            port,
            rack: None,
        }],
        topics,
    }
}

fn describe(topic: &Topic) -> MetadataTopic {
    MetadataTopic {
        error_code: ErrorCode::None,
        error_message: None,
        name: topic.name.to_string(),
        is_internal: topic.name.starts_with("__"),
        replication_factor: topic.meta.replication_factor as i16,
        configs: topic
            .effective_configs
            .iter()
            .map(|(name, value)| ConfigEntry {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        partitions: topic
            .meta
            .partitions
            .iter()
            .zip(&topic.partitions)
            .map(|(meta, live)| MetadataPartition {
                error_code: ErrorCode::None,
                error_message: None,
                partition: meta.index,
                leader: meta.leader,
                leader_epoch: live.leader_epoch(),
                replicas: meta.replicas.clone(),
                isr: meta.isr.clone(),
                offline_replicas: Vec::new(),
            })
            .collect(),
    }
}

/// The cluster: this node, its controller quorum (the configured voters).
pub fn describe_cluster(broker: &Arc<Broker>) -> DescribeClusterResponse {
    let (host, port) = advertised(broker);
    DescribeClusterResponse {
        cluster_id: broker.topics.cluster_id().to_string(),
        controller_id: broker.config.node_id,
        voters: broker
            .config
            .voters
            .iter()
            .map(|v| v.id)
            .collect::<Vec<BrokerId>>(),
        brokers: vec![DescribeClusterBroker {
            broker_id: broker.config.node_id,
            host,
            port,
            fenced: false,
        }],
    }
}
