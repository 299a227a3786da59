//! Topic administration and producer ids over the Kafka protocol: CreateTopics,
//! DeleteTopics, CreatePartitions, DescribeConfigs, IncrementalAlterConfigs, AlterConfigs and InitProducerId, on
//! [`crate::services::admin`] and [`crate::services::producer_ids`].

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::elect_leaders_response::{
    PartitionResult as ElectLeadersPartitionResult, ReplicaElectionResult,
};
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    alter_client_quotas_response, alter_configs_response, alter_partition_reassignments_response,
    describe_client_quotas_response, list_partition_reassignments_response,
    AlterClientQuotasRequest, AlterClientQuotasResponse, AlterConfigsRequest, AlterConfigsResponse,
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey,
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    DescribeLogDirsRequest, DescribeLogDirsResponse, DescribeQuorumRequest, DescribeQuorumResponse,
    ElectLeadersRequest, ElectLeadersResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, InitProducerIdRequest, InitProducerIdResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, ProducerId,
    ResponseKind,
};
use sluice_protocol::messages::{QuotaAlteration, QuotaEntityComponent, QuotaOp};
use sluice_protocol::{BrokerId, ErrorCode, PartitionId};

use super::metadata::topic_id;
use super::{every_partition_failed, kafka_error, kafka_error_at, kafka_str, topic_name};
use crate::cluster::image::quotas::QuotaChange;
use crate::error::ApiError;
use crate::security::Principal;
use crate::services::admin::{Admin, ConfigChange, Fallback, TopicConfig};
use crate::services::producer_ids::{InitProducer, ProducerIds};
use crate::services::quotas::{ClientQuotas, QuotaFilter};
use crate::services::{map_topics, TopicItems};
use crate::topic_config::{config_type, ConfigType, NewTopic};
use crate::txn::coordinator::Transactions;

/// DescribeConfigs' resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// DescribeConfigs' config source of a topic's own setting.
const SOURCE_TOPIC: i8 = 1;
/// DescribeConfigs' resource type of a broker.
const RESOURCE_BROKER: i8 = 4;
/// DescribeConfigs' config source of a broker's setting from its startup configuration.
const SOURCE_STATIC_BROKER: i8 = 4;
/// DescribeConfigs' config source of a default.
const SOURCE_DEFAULT: i8 = 5;
/// IncrementalAlterConfigs' operation: set the value.
const OPERATION_SET: i8 = 0;
/// IncrementalAlterConfigs' operation: delete the topic's own value.
const OPERATION_DELETE: i8 = 1;

/// CreateTopics through the controller, each topic answered on its own.
pub async fn create_topics(
    service: &Admin,
    principal: &Principal,
    request: CreateTopicsRequest,
    version: i16,
) -> ResponseKind {
    let mut refused: BTreeMap<String, ApiError> = BTreeMap::new();
    let mut topics = Vec::new();
    let mut order = Vec::new();
    for t in request.topics {
        let name = t.name.0.to_string();
        order.push(name.clone());
        let assignment = t
            .assignments
            .into_iter()
            .map(|a| {
                let brokers = a.broker_ids.into_iter().map(|b| BrokerId(b.0)).collect();
                (PartitionId(a.partition_index), brokers)
            })
            .collect();
        let mut configs = BTreeMap::new();
        let mut null_config = None;
        for c in t.configs {
            match c.value {
                Some(value) => {
                    configs.insert(c.name.to_string(), value.to_string());
                }
                None => null_config = Some(c.name.to_string()),
            }
        }
        if let Some(key) = null_config {
            refused.insert(
                name,
                ApiError::new(
                    ErrorCode::InvalidConfig,
                    format!("config {key} has no value; give it one or leave it out"),
                ),
            );
            continue;
        }
        topics.push(NewTopic {
            name,
            partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            configs,
            assignment,
        });
    }
    let created = service
        .create_topics(principal, topics, request.validate_only)
        .await;
    let image = service.image();
    let results = in_request_order(order, refused, created)
        .into_iter()
        .map(|(name, outcome)| {
            let result = CreatableTopicResult::default().with_name(topic_name(name.clone()));
            match outcome {
                Ok((partitions, replication_factor)) => {
                    let mut result = result
                        .with_num_partitions(partitions as i32)
                        .with_replication_factor(replication_factor as i16);
                    if let Some(meta) = image.topics.get(&name) {
                        result.topic_id = topic_id(&image.cluster_id, meta.id);
                    }
                    // The configs in effect are part of the answer from v5 on.
                    if version >= 5 {
                        let configs = service.topic_configs(principal, &name).unwrap_or_default();
                        result.configs = Some(
                            configs
                                .into_iter()
                                .map(|c| {
                                    CreatableTopicConfigs::default()
                                        .with_config_source(config_source(&c, false))
                                        .with_name(kafka_str(c.name))
                                        .with_value(Some(kafka_str(c.value)))
                                })
                                .collect(),
                        );
                    }
                    result
                }
                Err(e) => {
                    let (code, message) = kafka_error(ApiKey::CreateTopics, &e);
                    result
                        .with_error_code(code)
                        .with_error_message(message)
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                }
            }
        })
        .collect();
    ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(results))
}

/// Each topic of `order` (the request's, repeats included) with its outcome: refused
/// before it reached the service, or the service's (`done`). A topic named twice gets
/// INVALID_REQUEST the second time.
fn in_request_order<T>(
    order: Vec<String>,
    mut refused: BTreeMap<String, ApiError>,
    done: Vec<(String, Result<T, ApiError>)>,
) -> Vec<(String, Result<T, ApiError>)> {
    let mut done: BTreeMap<String, Result<T, ApiError>> = done.into_iter().collect();
    order
        .into_iter()
        .map(|name| {
            let outcome = match refused.remove(&name) {
                Some(e) => Err(e),
                None => done.remove(&name).unwrap_or_else(|| {
                    Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("topic {name:?} appears twice in one request"),
                    ))
                }),
            };
            (name, outcome)
        })
        .collect()
}

/// CreatePartitions through the controller, each topic answered on its own. sluice places
/// the new replicas itself: a topic given a replica assignment is refused.
pub async fn create_partitions(
    service: &Admin,
    principal: &Principal,
    request: CreatePartitionsRequest,
) -> ResponseKind {
    let mut refused = BTreeMap::new();
    let mut order = Vec::new();
    let mut topics = Vec::new();
    for t in request.topics {
        let name = t.name.0.to_string();
        order.push(name.clone());
        if t.assignments.is_some_and(|a| !a.is_empty()) {
            refused.insert(
                name,
                ApiError::new(
                    ErrorCode::InvalidReplicaAssignment,
                    "sluice places replicas itself; ask for the partition count without a \
                     replica assignment",
                ),
            );
            continue;
        }
        topics.push((name, t.count));
    }
    let grown = service
        .create_partitions(principal, topics, request.validate_only)
        .await;
    let results = in_request_order(order, refused, grown)
        .into_iter()
        .map(|(name, outcome)| {
            let result = CreatePartitionsTopicResult::default().with_name(topic_name(name));
            match outcome {
                Ok(()) => result,
                Err(e) => {
                    let (code, message) = kafka_error(ApiKey::CreatePartitions, &e);
                    result.with_error_code(code).with_error_message(message)
                }
            }
        })
        .collect();
    ResponseKind::CreatePartitions(CreatePartitionsResponse::default().with_results(results))
}

/// DeleteTopics through the controller (by name), each topic answered on its own.
pub async fn delete_topics(
    service: &Admin,
    principal: &Principal,
    request: DeleteTopicsRequest,
    _version: i16,
) -> ResponseKind {
    let names: Vec<String> = request
        .topic_names
        .into_iter()
        .map(|n| n.0.to_string())
        .collect();
    let deleted = service.delete_topics(principal, names).await;
    let responses = deleted
        .into_iter()
        .map(|(name, outcome)| {
            let result = DeletableTopicResult::default().with_name(Some(topic_name(name)));
            match outcome {
                Ok(()) => result,
                Err(e) => {
                    let (code, message) = kafka_error(ApiKey::DeleteTopics, &e);
                    result.with_error_code(code).with_error_message(message)
                }
            }
        })
        .collect();
    ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(responses))
}

/// DescribeConfigs of topics (every key sluice knows with the value in effect, marked as
/// the topic's own setting or a default) and of this broker (its settings under Kafka's
/// names, read-only: they are flags and the config file). Other resources are refused per
/// resource.
pub fn describe_configs(
    service: &Admin,
    principal: &Principal,
    request: DescribeConfigsRequest,
) -> ResponseKind {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let name = resource.resource_name.as_str();
            let described = match resource.resource_type {
                RESOURCE_TOPIC => service.topic_configs(principal, name),
                RESOURCE_BROKER => service.broker_configs(principal, name).map(|configs| {
                    configs
                        .into_iter()
                        .map(|(name, value)| TopicConfig {
                            name: name.to_string(),
                            value,
                            is_override: false,
                            fallback: None,
                        })
                        .collect()
                }),
                other => Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "sluice describes the configs of topics (resource type 2) and brokers \
                         (4), not of resource type {other}"
                    ),
                )),
            };
            let broker = resource.resource_type == RESOURCE_BROKER;
            match described {
                Ok(configs) => {
                    let wanted = |name: &str| {
                        resource
                            .configuration_keys
                            .as_ref()
                            .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
                    };
                    result.with_configs(
                        configs
                            .into_iter()
                            .filter(|c| wanted(&c.name))
                            .map(|c| described_config(c, broker, request.include_synonyms))
                            .collect(),
                    )
                }
                Err(e) => {
                    let (code, message) = kafka_error(ApiKey::DescribeConfigs, &e);
                    result.with_error_code(code).with_error_message(message)
                }
            }
        })
        .collect();
    ResponseKind::DescribeConfigs(DescribeConfigsResponse::default().with_results(results))
}

/// IncrementalAlterConfigs of topics: each topic's changes together, through the
/// controller (set and delete; append and subtract are for list configs, which sluice has
/// none of). Other resources (brokers) are refused per resource.
pub async fn incremental_alter_configs(
    service: &Admin,
    principal: &Principal,
    request: IncrementalAlterConfigsRequest,
) -> ResponseKind {
    let asked = request
        .resources
        .iter()
        .map(|resource| {
            let changes = topic_changes(resource)?;
            Ok((resource.resource_name.to_string(), changes))
        })
        .collect();
    let mut outcomes = per_resource(asked, |topics| {
        service.alter_topic_configs(principal, topics, request.validate_only)
    })
    .await
    .into_iter();
    let responses = request
        .resources
        .into_iter()
        .map(|resource| {
            let response = AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name);
            match outcomes.next().flatten() {
                None => response,
                Some(e) => {
                    let (code, message) = kafka_error(ApiKey::IncrementalAlterConfigs, &e);
                    response.with_error_code(code).with_error_message(message)
                }
            }
        })
        .collect();
    ResponseKind::IncrementalAlterConfigs(
        IncrementalAlterConfigsResponse::default().with_responses(responses),
    )
}

/// AlterConfigs, Kafka's older non-incremental form (kafka-python's `alter_configs` and
/// Sarama's `AlterConfig` send it): each topic's own configs become exactly the ones
/// given, every other key back to the broker's default, all together through the
/// controller. Other resources (brokers) are refused per resource.
pub async fn alter_configs(
    service: &Admin,
    principal: &Principal,
    request: AlterConfigsRequest,
) -> ResponseKind {
    let asked = request
        .resources
        .iter()
        .map(|resource| {
            check_topic_resource(resource.resource_type)?;
            let configs = resource
                .configs
                .iter()
                .map(|c| match &c.value {
                    Some(value) => Ok((c.name.to_string(), value.to_string())),
                    None => Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!(
                            "config {} has no value: AlterConfigs sets every config it names \
                             (leave a key out to put it back to the broker's default)",
                            c.name.as_str()
                        ),
                    )),
                })
                .collect::<Result<BTreeMap<_, _>, _>>()?;
            Ok((resource.resource_name.to_string(), configs))
        })
        .collect();
    let mut outcomes = per_resource(asked, |topics| {
        service.replace_topic_configs(principal, topics, request.validate_only)
    })
    .await
    .into_iter();
    let responses = request
        .resources
        .into_iter()
        .map(|resource| {
            let response = alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name);
            match outcomes.next().flatten() {
                None => response,
                Some(e) => {
                    let (code, message) = kafka_error(ApiKey::AlterConfigs, &e);
                    response.with_error_code(code).with_error_message(message)
                }
            }
        })
        .collect();
    ResponseKind::AlterConfigs(AlterConfigsResponse::default().with_responses(responses))
}

/// Runs `alter` on the resources that could be asked for (`Ok((topic, what))`), and gives
/// each resource's error in request order: its own refusal, or the service's outcome.
async fn per_resource<T, F>(
    asked: Vec<Result<(String, T), ApiError>>,
    alter: impl FnOnce(Vec<(String, T)>) -> F,
) -> Vec<Option<ApiError>>
where
    F: std::future::Future<Output = crate::services::admin::PerTopic<()>>,
{
    let mut errors: Vec<Option<ApiError>> = Vec::with_capacity(asked.len());
    let mut topics = Vec::new();
    let mut at = Vec::new();
    for (i, resource) in asked.into_iter().enumerate() {
        match resource {
            Ok(topic) => {
                at.push(i);
                topics.push(topic);
                errors.push(None);
            }
            Err(e) => errors.push(Some(e)),
        }
    }
    if !topics.is_empty() {
        for (i, (_, outcome)) in at.into_iter().zip(alter(topics).await) {
            errors[i] = outcome.err();
        }
    }
    errors
}

/// Refuses a config resource that is not a topic: broker settings are flags.
fn check_topic_resource(resource_type: i8) -> Result<(), ApiError> {
    if resource_type == RESOURCE_TOPIC {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::InvalidRequest,
        format!(
            "sluice alters the configs of topics (resource type 2), not of resource type \
             {resource_type}; broker settings are flags and the config file"
        ),
    ))
}

/// A topic resource's changes, or why they cannot be made.
fn topic_changes(resource: &AlterConfigsResource) -> Result<Vec<ConfigChange>, ApiError> {
    check_topic_resource(resource.resource_type)?;
    resource
        .configs
        .iter()
        .map(|c| match c.config_operation {
            OPERATION_SET => Ok(ConfigChange {
                name: c.name.to_string(),
                value: Some(c.value.as_ref().map(|v| v.to_string()).unwrap_or_default()),
            }),
            OPERATION_DELETE => Ok(ConfigChange {
                name: c.name.to_string(),
                value: None,
            }),
            other => Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "config operation {other} on {} is not supported: sluice's topic configs \
                     take SET (0) and DELETE (1), none is a list",
                    c.name.as_str()
                ),
            )),
        })
        .collect()
}

/// InitProducerId: an id for an idempotent producer, or the next epoch of its own; a
/// transactional id's from its transaction coordinator.
pub async fn init_producer_id(
    service: &ProducerIds,
    txns: &Transactions,
    principal: &Principal,
    request: InitProducerIdRequest,
    version: i16,
) -> ResponseKind {
    let answer = match request.transactional_id {
        Some(id) => {
            // v3+ carries the running producer's id and epoch when it asks for a bump.
            let claimed = (request.producer_id.0 >= 0)
                .then_some((request.producer_id.0, request.producer_epoch));
            txns.init_producer_id(principal, &id, claimed, request.transaction_timeout_ms)
                .await
        }
        None => {
            let asked = InitProducer {
                transactional_id: None,
                producer_id: request.producer_id.0,
                producer_epoch: request.producer_epoch,
            };
            service.init(principal, &asked).await
        }
    };
    let response = match answer {
        Ok((id, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch),
        Err(e) => InitProducerIdResponse::default()
            .with_error_code(kafka_error_at(ApiKey::InitProducerId, version, &e).0)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    };
    ResponseKind::InitProducerId(response)
}

/// Where a config's value comes from: a broker's own configuration, the topic's setting,
/// the broker config it falls back to, or a default.
fn config_source(config: &TopicConfig, broker: bool) -> i8 {
    match &config.fallback {
        _ if broker => SOURCE_STATIC_BROKER,
        _ if config.is_override => SOURCE_TOPIC,
        Some(fallback) => fallback_source(fallback),
        None => SOURCE_DEFAULT,
    }
}

fn fallback_source(fallback: &Fallback) -> i8 {
    if fallback.configured {
        SOURCE_STATIC_BROKER
    } else {
        SOURCE_DEFAULT
    }
}

/// One config as DescribeConfigs shows it: where its value comes from (the topic, the
/// broker's configuration, or a default), its type (v3+), and with `synonyms` the chain
/// Kafka's tools print (`kafka-configs.sh --describe --all`): the topic's own value, then
/// the broker config it falls back to.
fn described_config(
    config: TopicConfig,
    broker: bool,
    synonyms: bool,
) -> DescribeConfigsResourceResult {
    let source = config_source(&config, broker);
    let synonym = |name: &str, value: &str, source: i8| {
        DescribeConfigsSynonym::default()
            .with_name(kafka_str(name))
            .with_value(Some(kafka_str(value)))
            .with_source(source)
    };
    let mut chain = Vec::new();
    if synonyms {
        if broker || config.is_override {
            chain.push(synonym(&config.name, &config.value, source));
        }
        if let Some(fallback) = &config.fallback {
            chain.push(synonym(
                fallback.name,
                &fallback.value,
                fallback_source(fallback),
            ));
        }
    }
    let config_type = match config_type(&config.name) {
        Some(ConfigType::Boolean) => 1,
        Some(ConfigType::String) => 2,
        Some(ConfigType::Int) => 3,
        Some(ConfigType::Short) => 4,
        Some(ConfigType::Long) => 5,
        Some(ConfigType::Double) => 6,
        Some(ConfigType::List) => 7,
        None => 0,
    };
    DescribeConfigsResourceResult::default()
        .with_name(kafka_str(config.name))
        .with_value(Some(kafka_str(config.value)))
        .with_read_only(broker)
        .with_config_source(source)
        .with_synonyms(chain)
        .with_config_type(config_type)
}

/// DescribeLogDirs: this broker's one data directory with the replicas in it (every
/// hosted replica, or those asked for), their sizes, and (v4) the file system's size and
/// free bytes. Refused whole (CLUSTER_AUTHORIZATION_FAILED) without Describe on the cluster.
pub fn describe_log_dirs(
    service: &Admin,
    principal: &Principal,
    request: DescribeLogDirsRequest,
) -> ResponseKind {
    let wanted: Option<Vec<(String, Vec<PartitionId>)>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| {
                let partitions = t.partitions.into_iter().map(PartitionId).collect();
                (t.topic.0.to_string(), partitions)
            })
            .collect()
    });
    let response = match service.log_dir(principal, wanted.as_deref()) {
        Ok(dir) => {
            let mut topics: Vec<DescribeLogDirsTopic> = Vec::new();
            for replica in dir.replicas {
                let partition = DescribeLogDirsPartition::default()
                    .with_partition_index(replica.partition.0)
                    .with_partition_size(replica.size_bytes as i64)
                    .with_offset_lag(replica.offset_lag);
                match topics.last_mut() {
                    Some(t) if t.name.0.as_str() == replica.topic => t.partitions.push(partition),
                    _ => topics.push(
                        DescribeLogDirsTopic::default()
                            .with_name(topic_name(replica.topic))
                            .with_partitions(vec![partition]),
                    ),
                }
            }
            let result = DescribeLogDirsResult::default()
                .with_log_dir(kafka_str(dir.path))
                .with_topics(topics)
                .with_total_bytes(dir.total_bytes)
                .with_usable_bytes(dir.usable_bytes);
            DescribeLogDirsResponse::default().with_results(vec![result])
        }
        Err(e) => {
            let (code, _) = kafka_error(ApiKey::DescribeLogDirs, &e);
            DescribeLogDirsResponse::default().with_error_code(code)
        }
    };
    ResponseKind::DescribeLogDirs(response)
}

/// AlterPartitionReassignments (`kafka-reassign-partitions.sh --execute`, admin clients):
/// moves begun or cancelled through the controller, per partition. v1's
/// `allow_replication_factor_change = false` refuses a target of another size
/// (INVALID_REPLICATION_FACTOR), as Kafka does.
pub async fn alter_partition_reassignments(
    service: &Admin,
    principal: &Principal,
    request: AlterPartitionReassignmentsRequest,
    version: i16,
) -> ResponseKind {
    let image = service.image();
    let keep_factor = version >= 1 && !request.allow_replication_factor_change;
    let mut refused: Vec<(String, PartitionId, ApiError)> = Vec::new();
    let mut asked: Vec<TopicItems<(PartitionId, Option<Vec<BrokerId>>)>> = Vec::new();
    for t in &request.topics {
        let topic = t.name.to_string();
        let mut partitions = Vec::new();
        for p in &t.partitions {
            let index = PartitionId(p.partition_index);
            let target: Option<Vec<BrokerId>> = p
                .replicas
                .as_ref()
                .map(|r| r.iter().map(|b| BrokerId(b.0)).collect());
            let current = image
                .partition(&topic, index)
                .map(|meta| meta.original_replicas().len());
            match (&target, current) {
                (Some(target), Some(n)) if keep_factor && target.len() != n => refused.push((
                    topic.clone(),
                    index,
                    ApiError::new(
                        ErrorCode::InvalidReplicationFactor,
                        format!(
                            "{topic}-{}: the target has {} replicas, the partition {n}; \
                             allow the replication factor to change to move it there",
                            index.0,
                            target.len()
                        ),
                    ),
                )),
                _ => partitions.push((index, target)),
            }
        }
        asked.push(TopicItems { topic, partitions });
    }
    let response = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(request.allow_replication_factor_change);
    let moved = match service.reassign_partitions(principal, asked).await {
        Ok(moved) => moved,
        Err(e) => {
            let (code, message) = kafka_error(ApiKey::AlterPartitionReassignments, &e);
            return ResponseKind::AlterPartitionReassignments(
                response.with_error_code(code).with_error_message(message),
            );
        }
    };
    // Looked up per partition asked: maps, not a scan of every outcome each time.
    // A partition named twice: its first refusal and outcome, as the scans these replace
    // found (collecting in reverse keeps the first).
    let refused: HashMap<(&str, PartitionId), &ApiError> = refused
        .iter()
        .rev()
        .map(|(t, p, e)| ((t.as_str(), *p), e))
        .collect();
    let moved: HashMap<(&str, PartitionId), &Result<(), ApiError>> = moved
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| ((t.topic.as_str(), p.partition), &p.outcome))
        })
        .rev()
        .collect();
    let outcome_of = |topic: &str, index: PartitionId| -> Result<(), ApiError> {
        if let Some(e) = refused.get(&(topic, index)) {
            return Err((*e).clone());
        }
        moved.get(&(topic, index)).map_or_else(
            || {
                Err(ApiError::new(
                    ErrorCode::UnknownServerError,
                    format!("no outcome for {topic}-{}", index.0),
                ))
            },
            |outcome| (*outcome).clone(),
        )
    };
    let responses = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let result = alter_partition_reassignments_response::ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    match outcome_of(&t.name, PartitionId(p.partition_index)) {
                        Ok(()) => result,
                        Err(e) => {
                            let (code, message) =
                                kafka_error(ApiKey::AlterPartitionReassignments, &e);
                            result.with_error_code(code).with_error_message(message)
                        }
                    }
                })
                .collect();
            alter_partition_reassignments_response::ReassignableTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ResponseKind::AlterPartitionReassignments(response.with_responses(responses))
}

/// The metadata log's name in Kafka (DescribeQuorum asks about its one partition).
const METADATA_TOPIC: &str = "__cluster_metadata";

/// DescribeQuorum (`kafka-metadata-quorum.sh describe --status|--replication`): the
/// controller quorum's metadata log, from the active controller; v2's nodes are the
/// voters' advertised listeners.
pub async fn describe_quorum(
    service: &Admin,
    principal: &Principal,
    request: DescribeQuorumRequest,
) -> ResponseKind {
    use kafka_protocol::messages::describe_quorum_response::{
        Listener, Node, PartitionData, ReplicaState, TopicData,
    };
    let response = DescribeQuorumResponse::default();
    // As Kafka's raft client: only a request for exactly the metadata log's one partition
    // is answered; any other gets UNKNOWN_TOPIC_OR_PARTITION on each partition it names (a
    // repeated __cluster_metadata-0 would otherwise copy the voters and observers again).
    let partitions_asked: usize = request.topics.iter().map(|t| t.partitions.len()).sum();
    let answerable = request.topics.len() == 1 && partitions_asked == 1;
    let quorum = match service.describe_quorum(principal, true).await {
        Ok(quorum) => quorum,
        Err(e) => {
            let (code, message) = kafka_error(ApiKey::DescribeQuorum, &e);
            return ResponseKind::DescribeQuorum(
                response.with_error_code(code).with_error_message(message),
            );
        }
    };
    let replicas = |rs: &[(BrokerId, i64)]| -> Vec<ReplicaState> {
        rs.iter()
            .map(|(id, log_end)| {
                ReplicaState::default()
                    .with_replica_id(kafka_protocol::messages::BrokerId(id.0))
                    .with_log_end_offset(*log_end)
                    .with_last_fetch_timestamp(-1)
                    .with_last_caught_up_timestamp(-1)
            })
            .collect()
    };
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let data = PartitionData::default().with_partition_index(p.partition_index);
                    if !answerable
                        || t.topic_name.as_str() != METADATA_TOPIC
                        || p.partition_index != 0
                    {
                        return data
                            .with_error_code(ErrorCode::UnknownTopicOrPartition.code())
                            .with_leader_id(kafka_protocol::messages::BrokerId(-1));
                    }
                    data.with_leader_id(kafka_protocol::messages::BrokerId(quorum.leader.0))
                        .with_leader_epoch(i32::try_from(quorum.term).unwrap_or(i32::MAX))
                        .with_high_watermark(quorum.high_watermark)
                        .with_current_voters(replicas(&quorum.voters))
                        .with_observers(replicas(&quorum.observers))
                })
                .collect();
            TopicData::default()
                .with_topic_name(t.topic_name.clone())
                .with_partitions(partitions)
        })
        .collect();
    let image = service.image();
    let nodes = quorum
        .voters
        .iter()
        .filter_map(|(id, _)| image.brokers.get(id))
        .map(|broker| {
            Node::default()
                .with_node_id(kafka_protocol::messages::BrokerId(broker.id.0))
                .with_listeners(
                    broker
                        .listeners
                        .iter()
                        .map(|l| {
                            Listener::default()
                                .with_name(kafka_str(l.name.clone()))
                                .with_host(kafka_str(l.host.clone()))
                                .with_port(l.port)
                        })
                        .collect(),
                )
        })
        .collect();
    ResponseKind::DescribeQuorum(response.with_topics(topics).with_nodes(nodes))
}

/// ListPartitionReassignments (`kafka-reassign-partitions.sh --verify`, admin consoles):
/// the moves under way, of the partitions asked or all.
pub fn list_partition_reassignments(
    service: &Admin,
    principal: &Principal,
    request: ListPartitionReassignmentsRequest,
) -> ResponseKind {
    let wanted: Option<Vec<TopicItems<PartitionId>>> = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .map(|t| TopicItems {
                topic: t.name.to_string(),
                partitions: t
                    .partition_indexes
                    .iter()
                    .copied()
                    .map(PartitionId)
                    .collect(),
            })
            .collect()
    });
    let response = ListPartitionReassignmentsResponse::default();
    let ids = |ids: Vec<BrokerId>| -> Vec<kafka_protocol::messages::BrokerId> {
        ids.into_iter()
            .map(|b| kafka_protocol::messages::BrokerId(b.0))
            .collect()
    };
    ResponseKind::ListPartitionReassignments(
        match service.reassignments(principal, wanted.as_deref()) {
            Ok(ongoing) => response.with_topics(map_topics(
                ongoing,
                |r| {
                    list_partition_reassignments_response::OngoingPartitionReassignment::default()
                        .with_partition_index(r.partition.0)
                        .with_replicas(ids(r.replicas))
                        .with_adding_replicas(ids(r.adding))
                        .with_removing_replicas(ids(r.removing))
                },
                |name, partitions| {
                    list_partition_reassignments_response::OngoingTopicReassignment::default()
                        .with_name(topic_name(name))
                        .with_partitions(partitions)
                },
            )),
            Err(e) => {
                let (code, message) = kafka_error(ApiKey::ListPartitionReassignments, &e);
                response.with_error_code(code).with_error_message(message)
            }
        },
    )
}

/// DescribeClientQuotas (`kafka-configs.sh --describe --entity-type users|clients`, admin
/// consoles): the quotas whose entities the filter selects.
pub fn describe_client_quotas(
    service: &ClientQuotas,
    principal: &Principal,
    request: DescribeClientQuotasRequest,
) -> ResponseKind {
    let response = DescribeClientQuotasResponse::default();
    let components = request
        .components
        .iter()
        .map(|c| (c.entity_type.as_str(), c.match_type, c._match.as_deref()));
    let described = QuotaFilter::from_components(components, request.strict)
        .and_then(|f| service.describe(principal, &f));
    ResponseKind::DescribeClientQuotas(match described {
        Ok(quotas) => response.with_entries(Some(
            quotas
                .into_iter()
                .map(|q| {
                    let entity = q.entity.to_wire().into_iter().map(|c| {
                        describe_client_quotas_response::EntityData::default()
                            .with_entity_type(kafka_str(c.entity_type))
                            .with_entity_name(c.name.map(kafka_str))
                    });
                    describe_client_quotas_response::EntryData::default()
                        .with_entity(entity.collect())
                        .with_values(
                            q.values
                                .iter()
                                .map(|(key, rate)| {
                                    describe_client_quotas_response::ValueData::default()
                                        .with_key(kafka_str(key.name()))
                                        .with_value(*rate as f64)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )),
        Err(e) => {
            let (code, message) = kafka_error(ApiKey::DescribeClientQuotas, &e);
            response.with_error_code(code).with_error_message(message)
        }
    })
}

/// AlterClientQuotas (`kafka-configs.sh --alter --entity-type users|clients`): each
/// entry's changes, through the controller; an entry sluice cannot make is refused with
/// why (Kafka's rates are doubles: sluice's, like Kafka's checks of them, whole bytes).
pub async fn alter_client_quotas(
    service: &ClientQuotas,
    principal: &Principal,
    request: AlterClientQuotasRequest,
) -> ResponseKind {
    let changes = request
        .entries
        .iter()
        .map(|entry| {
            let ops = entry
                .ops
                .iter()
                .map(|op| {
                    let value = op.value;
                    if !op.remove && (value.fract() != 0.0 || !value.is_finite()) {
                        return Err(ApiError::new(
                            ErrorCode::InvalidRequest,
                            format!(
                                "{} must be a whole number of bytes per second, not {value}",
                                op.key
                            ),
                        ));
                    }
                    Ok(QuotaOp {
                        key: op.key.to_string(),
                        value: value as i64,
                        remove: op.remove,
                    })
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            let alteration = QuotaAlteration {
                entity: entry
                    .entity
                    .iter()
                    .map(|e| QuotaEntityComponent {
                        entity_type: e.entity_type.to_string(),
                        name: e.entity_name.as_ref().map(|n| n.to_string()),
                    })
                    .collect(),
                ops,
            };
            QuotaChange::from_wire(&alteration)
                .map_err(|why| ApiError::new(ErrorCode::InvalidRequest, why))
        })
        .collect();
    let outcomes = service
        .alter(principal, changes, request.validate_only)
        .await;
    let entries = request
        .entries
        .into_iter()
        .zip(outcomes)
        .map(|(entry, outcome)| {
            let result = alter_client_quotas_response::EntryData::default().with_entity(
                entry
                    .entity
                    .into_iter()
                    .map(|e| {
                        alter_client_quotas_response::EntityData::default()
                            .with_entity_type(e.entity_type)
                            .with_entity_name(e.entity_name)
                    })
                    .collect(),
            );
            match outcome {
                Ok(()) => result,
                Err(e) => {
                    let (code, message) = kafka_error(ApiKey::AlterClientQuotas, &e);
                    result.with_error_code(code).with_error_message(message)
                }
            }
        })
        .collect();
    ResponseKind::AlterClientQuotas(AlterClientQuotasResponse::default().with_entries(entries))
}

/// ElectLeaders' election type of a preferred leader election.
const ELECTION_PREFERRED: i8 = 0;

/// ElectLeaders (`kafka-leader-election.sh`): preferred elections through the controller,
/// each partition answered (ELECTION_NOT_NEEDED where its preferred replica leads
/// already). Unclean elections are refused per partition: sluice elects a replica outside
/// the ISR only on its own, where a topic allows it.
pub async fn elect_leaders(
    service: &Admin,
    principal: &Principal,
    request: ElectLeadersRequest,
    version: i16,
) -> ResponseKind {
    let asked: Option<Vec<TopicItems<PartitionId>>> = request.topic_partitions.map(|topics| {
        topics
            .into_iter()
            .map(|t| TopicItems {
                topic: t.topic.0.to_string(),
                partitions: t.partitions.into_iter().map(PartitionId).collect(),
            })
            .collect()
    });
    let outcome = match version >= 1 && request.election_type != ELECTION_PREFERRED {
        true => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "sluice runs preferred leader elections only (election type 0); a replica outside \
             the ISR leads only where its topic sets unclean.leader.election.enable",
        )),
        false => service.elect_leaders(principal, asked.clone()).await,
    };
    let (top, topics) = match outcome {
        Ok(topics) => (Ok(()), topics),
        Err(e) => {
            let topics = every_partition_failed(asked.unwrap_or_default(), e.clone());
            (Err(e), topics)
        }
    };
    let results = map_topics(
        topics,
        |p| {
            let result = ElectLeadersPartitionResult::default().with_partition_id(p.partition.0);
            match p.outcome {
                Ok(()) => result,
                Err(e) => {
                    let (code, message) = kafka_error(ApiKey::ElectLeaders, &e);
                    result.with_error_code(code).with_error_message(message)
                }
            }
        },
        |name, partitions| {
            ReplicaElectionResult::default()
                .with_topic(topic_name(name))
                .with_partition_result(partitions)
        },
    );
    let mut response = ElectLeadersResponse::default().with_replica_election_results(results);
    if let Err(e) = top {
        response.error_code = kafka_error(ApiKey::ElectLeaders, &e).0;
    }
    ResponseKind::ElectLeaders(response)
}
