//! The error answer to a decoded request, item by item: every topic, partition, group or
//! resource the request named gets `code`, as Kafka's `getErrorResponse` of each request
//! does, so a client sees an error for each thing it asked about (where a response has
//! only per-item errors, an empty answer would leave the client waiting on nothing).

use kafka_protocol::messages::*;

/// Fills `response` (the api's default response) with one errored item per item of
/// `request`. Apis whose responses have no item list are left as they are.
pub(super) fn fill(request: &RequestKind, version: i16, code: i16, response: &mut ResponseKind) {
    match (request, response) {
        (RequestKind::Produce(request), ResponseKind::Produce(response)) => {
            response.responses = request
                .topic_data
                .iter()
                .map(|topic| {
                    let partitions = topic.partition_data.iter().map(|p| {
                        produce_response::PartitionProduceResponse::default()
                            .with_index(p.index)
                            .with_error_code(code)
                            .with_base_offset(-1)
                    });
                    produce_response::TopicProduceResponse::default()
                        .with_name(topic.name.clone())
                        .with_partition_responses(partitions.collect())
                })
                .collect();
        }
        (RequestKind::Fetch(request), ResponseKind::Fetch(response)) => {
            response.responses = request
                .topics
                .iter()
                .map(|topic| {
                    let partitions = topic.partitions.iter().map(|p| {
                        fetch_response::PartitionData::default()
                            .with_partition_index(p.partition)
                            .with_error_code(code)
                            .with_high_watermark(-1)
                    });
                    fetch_response::FetchableTopicResponse::default()
                        .with_topic(topic.topic.clone())
                        .with_partitions(partitions.collect())
                })
                .collect();
        }
        (RequestKind::ListOffsets(request), ResponseKind::ListOffsets(response)) => {
            response.topics = request
                .topics
                .iter()
                .map(|topic| {
                    let partitions = topic.partitions.iter().map(|p| {
                        list_offsets_response::ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code)
                    });
                    list_offsets_response::ListOffsetsTopicResponse::default()
                        .with_name(topic.name.clone())
                        .with_partitions(partitions.collect())
                })
                .collect();
        }
        (
            RequestKind::OffsetForLeaderEpoch(request),
            ResponseKind::OffsetForLeaderEpoch(response),
        ) => {
            response.topics = request
                .topics
                .iter()
                .map(|topic| {
                    let partitions = topic.partitions.iter().map(|p| {
                        offset_for_leader_epoch_response::EpochEndOffset::default()
                            .with_partition(p.partition)
                            .with_error_code(code)
                    });
                    offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default()
                        .with_topic(topic.topic.clone())
                        .with_partitions(partitions.collect())
                })
                .collect();
        }
        (RequestKind::Metadata(request), ResponseKind::Metadata(response)) => {
            // No topics asked (or all of them, null): nothing to attach the error to.
            response.topics = request
                .topics
                .iter()
                .flatten()
                .map(|topic| {
                    // A topic asked by id has no name; names are nullable from v12 only.
                    let name = topic
                        .name
                        .clone()
                        .or_else(|| (version < 12).then(|| TopicName(Default::default())));
                    metadata_response::MetadataResponseTopic::default()
                        .with_name(name)
                        .with_topic_id(topic.topic_id)
                        .with_error_code(code)
                })
                .collect();
        }
        (RequestKind::OffsetCommit(request), ResponseKind::OffsetCommit(response)) => {
            response.topics = request
                .topics
                .iter()
                .map(|topic| {
                    let partitions = topic.partitions.iter().map(|p| {
                        offset_commit_response::OffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code)
                    });
                    offset_commit_response::OffsetCommitResponseTopic::default()
                        .with_name(topic.name.clone())
                        .with_partitions(partitions.collect())
                })
                .collect();
        }
        (RequestKind::OffsetFetch(request), ResponseKind::OffsetFetch(response)) => {
            if version >= 8 {
                response.groups = request
                    .groups
                    .iter()
                    .map(|group| {
                        offset_fetch_response::OffsetFetchResponseGroup::default()
                            .with_group_id(group.group_id.clone())
                            .with_error_code(code)
                    })
                    .collect();
            } else if version < 2 {
                // v0-v1 have no top-level code: every partition asked carries it.
                response.topics = request
                    .topics
                    .iter()
                    .flatten()
                    .map(|topic| {
                        let partitions = topic.partition_indexes.iter().map(|&index| {
                            offset_fetch_response::OffsetFetchResponsePartition::default()
                                .with_partition_index(index)
                                .with_committed_offset(-1)
                                .with_error_code(code)
                        });
                        offset_fetch_response::OffsetFetchResponseTopic::default()
                            .with_name(topic.name.clone())
                            .with_partitions(partitions.collect())
                    })
                    .collect();
            }
        }
        (RequestKind::FindCoordinator(request), ResponseKind::FindCoordinator(response)) => {
            if version >= 4 {
                response.coordinators = request
                    .coordinator_keys
                    .iter()
                    .map(|key| {
                        find_coordinator_response::Coordinator::default()
                            .with_key(key.clone())
                            .with_node_id(BrokerId(-1))
                            .with_port(-1)
                            .with_error_code(code)
                    })
                    .collect();
            } else {
                response.node_id = BrokerId(-1);
                response.port = -1;
            }
        }
        (RequestKind::DescribeGroups(request), ResponseKind::DescribeGroups(response)) => {
            response.groups = request
                .groups
                .iter()
                .map(|group| {
                    describe_groups_response::DescribedGroup::default()
                        .with_group_id(group.clone())
                        .with_error_code(code)
                })
                .collect();
        }
        (RequestKind::DeleteGroups(request), ResponseKind::DeleteGroups(response)) => {
            response.results = request
                .groups_names
                .iter()
                .map(|group| {
                    delete_groups_response::DeletableGroupResult::default()
                        .with_group_id(group.clone())
                        .with_error_code(code)
                })
                .collect();
        }
        (RequestKind::CreateTopics(request), ResponseKind::CreateTopics(response)) => {
            response.topics = request
                .topics
                .iter()
                .map(|topic| {
                    create_topics_response::CreatableTopicResult::default()
                        .with_name(topic.name.clone())
                        .with_error_code(code)
                })
                .collect();
        }
        (RequestKind::CreateAcls(request), ResponseKind::CreateAcls(response)) => {
            response.results = request
                .creations
                .iter()
                .map(|_| create_acls_response::AclCreationResult::default().with_error_code(code))
                .collect();
        }
        (RequestKind::DeleteAcls(request), ResponseKind::DeleteAcls(response)) => {
            response.filter_results = request
                .filters
                .iter()
                .map(|_| {
                    delete_acls_response::DeleteAclsFilterResult::default().with_error_code(code)
                })
                .collect();
        }
        (
            RequestKind::AlterUserScramCredentials(request),
            ResponseKind::AlterUserScramCredentials(response),
        ) => {
            let mut users: Vec<&kafka_protocol::protocol::StrBytes> = Vec::new();
            let names = request
                .deletions
                .iter()
                .map(|d| &d.name)
                .chain(request.upsertions.iter().map(|u| &u.name));
            for name in names {
                if !users.contains(&name) {
                    users.push(name);
                }
            }
            response.results = users
                .into_iter()
                .map(|user| {
                    alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default(
                    )
                    .with_user(user.clone())
                    .with_error_code(code)
                })
                .collect();
        }
        (RequestKind::DeleteRecords(request), ResponseKind::DeleteRecords(response)) => {
            response.topics = request
                .topics
                .iter()
                .map(|topic| {
                    let partitions = topic.partitions.iter().map(|p| {
                        delete_records_response::DeleteRecordsPartitionResult::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code)
                            .with_low_watermark(-1)
                    });
                    delete_records_response::DeleteRecordsTopicResult::default()
                        .with_name(topic.name.clone())
                        .with_partitions(partitions.collect())
                })
                .collect();
        }
        (RequestKind::AlterClientQuotas(request), ResponseKind::AlterClientQuotas(response)) => {
            response.entries = request
                .entries
                .iter()
                .map(|entry| {
                    let entity = entry.entity.iter().map(|e| {
                        alter_client_quotas_response::EntityData::default()
                            .with_entity_type(e.entity_type.clone())
                            .with_entity_name(e.entity_name.clone())
                    });
                    alter_client_quotas_response::EntryData::default()
                        .with_error_code(code)
                        .with_entity(entity.collect())
                })
                .collect();
        }
        (RequestKind::DescribeProducers(request), ResponseKind::DescribeProducers(response)) => {
            response.topics = request
                .topics
                .iter()
                .map(|topic| {
                    let partitions = topic.partition_indexes.iter().map(|&p| {
                        describe_producers_response::PartitionResponse::default()
                            .with_partition_index(p)
                            .with_error_code(code)
                    });
                    describe_producers_response::TopicResponse::default()
                        .with_name(topic.name.clone())
                        .with_partitions(partitions.collect())
                })
                .collect();
        }
        (
            RequestKind::DescribeTransactions(request),
            ResponseKind::DescribeTransactions(response),
        ) => {
            response.transaction_states = request
                .transactional_ids
                .iter()
                .map(|id| {
                    describe_transactions_response::TransactionState::default()
                        .with_transactional_id(id.clone())
                        .with_error_code(code)
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1)
                        .with_transaction_start_time_ms(-1)
                })
                .collect();
        }
        (RequestKind::WriteTxnMarkers(request), ResponseKind::WriteTxnMarkers(response)) => {
            response.markers = request
                .markers
                .iter()
                .map(|marker| {
                    let topics = marker.topics.iter().map(|topic| {
                        let partitions = topic.partition_indexes.iter().map(|&p| {
                            write_txn_markers_response::WritableTxnMarkerPartitionResult::default()
                                .with_partition_index(p)
                                .with_error_code(code)
                        });
                        write_txn_markers_response::WritableTxnMarkerTopicResult::default()
                            .with_name(topic.name.clone())
                            .with_partitions(partitions.collect())
                    });
                    write_txn_markers_response::WritableTxnMarkerResult::default()
                        .with_producer_id(marker.producer_id)
                        .with_topics(topics.collect())
                })
                .collect();
        }
        (RequestKind::CreatePartitions(request), ResponseKind::CreatePartitions(response)) => {
            response.results = request
                .topics
                .iter()
                .map(|topic| {
                    create_partitions_response::CreatePartitionsTopicResult::default()
                        .with_name(topic.name.clone())
                        .with_error_code(code)
                })
                .collect();
        }
        (RequestKind::DeleteTopics(request), ResponseKind::DeleteTopics(response)) => {
            response.responses = request
                .topic_names
                .iter()
                .map(|name| {
                    delete_topics_response::DeletableTopicResult::default()
                        .with_name(Some(name.clone()))
                        .with_error_code(code)
                })
                .collect();
        }
        (RequestKind::DescribeConfigs(request), ResponseKind::DescribeConfigs(response)) => {
            response.results = request
                .resources
                .iter()
                .map(|resource| {
                    describe_configs_response::DescribeConfigsResult::default()
                        .with_resource_type(resource.resource_type)
                        .with_resource_name(resource.resource_name.clone())
                        .with_error_code(code)
                })
                .collect();
        }
        (
            RequestKind::IncrementalAlterConfigs(request),
            ResponseKind::IncrementalAlterConfigs(response),
        ) => {
            response.responses = request
                .resources
                .iter()
                .map(|resource| {
                    incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_resource_type(resource.resource_type)
                        .with_resource_name(resource.resource_name.clone())
                        .with_error_code(code)
                })
                .collect();
        }
        (RequestKind::AlterConfigs(request), ResponseKind::AlterConfigs(response)) => {
            response.responses = request
                .resources
                .iter()
                .map(|resource| {
                    alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_resource_type(resource.resource_type)
                        .with_resource_name(resource.resource_name.clone())
                        .with_error_code(code)
                })
                .collect();
        }
        _ => {}
    }
}
