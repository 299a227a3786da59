//! ApiVersions, Metadata and DescribeCluster: what a client asks first and after every
//! NOT_LEADER_OR_FOLLOWER, answered from [`crate::services::admin`]'s cluster view with
//! the brokers' native addresses.

use sluice_protocol::messages::{
    ApiVersionRange, ApiVersionsResponse, ConfigEntry, DescribeClusterBroker,
    DescribeClusterResponse, MetadataBroker, MetadataPartition, MetadataRequest, MetadataResponse,
    MetadataTopic,
};
use sluice_protocol::ErrorCode;

use super::SERVED;
use crate::cluster::image::NATIVE_LISTENER;
use crate::security::Principal;
use crate::services::admin::Admin;

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

/// Brokers (the unfenced ones), the controller, and the requested topics (all when
/// `topics` is null). The native protocol never creates topics on a Metadata request.
pub async fn metadata(
    service: &Admin,
    principal: &Principal,
    request: MetadataRequest,
) -> MetadataResponse {
    let view = service
        .cluster_view(principal, NATIVE_LISTENER, request.topics, false, false)
        .await;
    MetadataResponse {
        cluster_id: view.cluster_id,
        controller_id: view.controller_id,
        brokers: view
            .brokers
            .into_iter()
            .map(|b| MetadataBroker {
                broker_id: b.id,
                host: b.host,
                port: b.port,
                rack: b.rack,
            })
            .collect(),
        topics: view
            .topics
            .into_iter()
            .map(|(name, described)| match described {
                Ok(topic) => MetadataTopic {
                    error_code: ErrorCode::None,
                    error_message: None,
                    name,
                    is_internal: topic.is_internal,
                    replication_factor: topic.replication_factor,
                    configs: topic
                        .configs
                        .into_iter()
                        .map(|(name, value)| ConfigEntry { name, value })
                        .collect(),
                    partitions: topic
                        .partitions
                        .into_iter()
                        .map(|p| MetadataPartition {
                            error_code: p.error.as_ref().map_or(ErrorCode::None, |e| e.code),
                            error_message: None,
                            partition: p.partition,
                            leader: p.leader,
                            leader_epoch: p.leader_epoch,
                            replicas: p.replicas,
                            isr: p.isr,
                            offline_replicas: p.offline_replicas,
                        })
                        .collect(),
                },
                Err(e) => MetadataTopic {
                    error_code: e.code,
                    error_message: e.wire_message(),
                    name,
                    is_internal: false,
                    replication_factor: -1,
                    configs: Vec::new(),
                    partitions: Vec::new(),
                },
            })
            .collect(),
    }
}

/// The cluster: every registered broker (fenced too), the controller quorum and its leader.
pub async fn describe_cluster(service: &Admin, principal: &Principal) -> DescribeClusterResponse {
    let view = service
        .cluster_view(principal, NATIVE_LISTENER, Some(Vec::new()), false, true)
        .await;
    DescribeClusterResponse {
        cluster_id: view.cluster_id,
        controller_id: view.controller_id,
        voters: view.voters,
        brokers: view
            .brokers
            .into_iter()
            .map(|b| DescribeClusterBroker {
                broker_id: b.id,
                host: b.host,
                port: b.port,
                fenced: b.fenced,
            })
            .collect(),
    }
}
