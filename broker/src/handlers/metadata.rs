//! ApiVersions, Metadata and DescribeCluster: what a client asks first and after every
//! NOT_LEADER_OR_FOLLOWER. Answered from this node's metadata image, which every node
//! holds whole (it is a voter or a learner of the metadata log).

use std::sync::Arc;

use sluice_protocol::messages::{
    ApiVersionRange, ApiVersionsResponse, ConfigEntry, DescribeClusterBroker,
    DescribeClusterResponse, MetadataBroker, MetadataPartition, MetadataRequest, MetadataResponse,
    MetadataTopic,
};
use sluice_protocol::{BrokerId, ErrorCode};

use super::SERVED;
use crate::broker::Broker;
use crate::cluster::image::{BrokerMeta, MetadataImage, TopicMeta, NATIVE_LISTENER};
use crate::error::ApiError;
use crate::topics::effective_topic_configs;

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

/// A broker's native address.
fn native_address(broker: &BrokerMeta) -> (String, u16) {
    broker
        .listener(NATIVE_LISTENER)
        .map_or((String::new(), 0), |l| (l.host.clone(), l.port))
}

/// Brokers (the unfenced ones), the controller, and the requested topics (all when
/// `topics` is null).
pub fn metadata(broker: &Arc<Broker>, request: MetadataRequest) -> MetadataResponse {
    let image = broker.cluster.image();
    let topics = match request.topics {
        None => image
            .topics
            .iter()
            .map(|(name, meta)| describe(broker, &image, name, meta))
            .collect(),
        Some(names) => names
            .into_iter()
            .map(|name| match image.topics.get(&name) {
                Some(meta) => describe(broker, &image, &name, meta),
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
        cluster_id: image.cluster_id.clone(),
        controller_id: broker.cluster.controller_id().unwrap_or(BrokerId(-1)),
        brokers: image
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| {
                let (host, port) = native_address(b);
                MetadataBroker {
                    broker_id: b.id,
                    host,
                    port,
                    rack: b.rack.clone(),
                }
            })
            .collect(),
        topics,
    }
}

fn describe(broker: &Broker, image: &MetadataImage, name: &str, meta: &TopicMeta) -> MetadataTopic {
    let fenced = |id: &BrokerId| image.brokers.get(id).is_none_or(|b| b.fenced);
    MetadataTopic {
        error_code: ErrorCode::None,
        error_message: None,
        name: name.to_string(),
        is_internal: name.starts_with("__"),
        replication_factor: meta.replication_factor as i16,
        configs: effective_topic_configs(&broker.config, &meta.configs)
            .into_iter()
            .map(|(name, value)| ConfigEntry { name, value })
            .collect(),
        partitions: meta
            .partitions
            .iter()
            .map(|p| MetadataPartition {
                error_code: if p.leader.0 < 0 {
                    ErrorCode::LeaderNotAvailable
                } else {
                    ErrorCode::None
                },
                error_message: None,
                partition: p.index,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                offline_replicas: p.replicas.iter().copied().filter(fenced).collect(),
            })
            .collect(),
    }
}

/// The cluster: every registered broker (fenced too), the controller quorum and its leader.
pub fn describe_cluster(broker: &Arc<Broker>) -> DescribeClusterResponse {
    let image = broker.cluster.image();
    DescribeClusterResponse {
        cluster_id: image.cluster_id.clone(),
        controller_id: broker.cluster.controller_id().unwrap_or(BrokerId(-1)),
        voters: broker.cluster.voters().to_vec(),
        brokers: image
            .brokers
            .values()
            .map(|b| {
                let (host, port) = native_address(b);
                DescribeClusterBroker {
                    broker_id: b.id,
                    host,
                    port,
                    fenced: b.fenced,
                }
            })
            .collect(),
    }
}
