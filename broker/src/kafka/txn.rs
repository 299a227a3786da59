//! A Kafka transactional producer's requests to its transaction coordinator, on
//! [`crate::txn::coordinator`]: AddPartitionsToTxn (v0-3, one transaction per request: v4+
//! batches transactions for brokers verifying partitions, KIP-890), AddOffsetsToTxn (v0-3)
//! and EndTxn (v0-3). InitProducerId and FindCoordinator with a transactional id are in
//! `admin` and `groups`, and TxnOffsetCommit, which goes to the group's coordinator, in
//! `groups`.
//!
//! And the operators' view of transactions (KIP-664, `kafka-transactions.sh`):
//! ListTransactions (v0-1; v2's id pattern is a Java regex), DescribeTransactions (v0),
//! DescribeProducers (v0) and WriteTxnMarkers (v1, aborts only) from a client.

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    list_transactions_response, AddOffsetsToTxnRequest, AddOffsetsToTxnResponse,
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, DescribeProducersRequest,
    DescribeProducersResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, ListTransactionsRequest, ListTransactionsResponse, ProducerId,
    ResponseKind, TopicName, TransactionalId, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use sluice_protocol::control::{ControlMarker, ControlType};
use sluice_protocol::txn_log::TxnState;
use sluice_protocol::PartitionId;

use super::{every_partition_failed, kafka_error, kafka_error_at, kafka_str, topic_name};
use crate::security::Principal;
use crate::services::offsets::Offsets;
use crate::services::{map_topics, TopicItems};
use crate::txn::coordinator::{Transactions, TxnFilter};
use crate::txn::markers::{MarkerRequest, MarkerResult};

/// AddPartitionsToTxn: each partition's outcome (a refusal of the whole request is every
/// partition's).
pub async fn add_partitions_to_txn(
    txns: &Transactions,
    principal: &Principal,
    request: AddPartitionsToTxnRequest,
    version: i16,
) -> ResponseKind {
    let code_of =
        |e: &crate::error::ApiError| kafka_error_at(ApiKey::AddPartitionsToTxn, version, e).0;
    let topics: Vec<TopicItems<PartitionId>> = request
        .v3_and_below_topics
        .iter()
        .map(|t| topic_partitions(&t.name, &t.partitions))
        .collect();
    let added = txns
        .add_partitions(
            principal,
            &request.v3_and_below_transactional_id,
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
            topics.clone(),
        )
        .await;
    let codes: Vec<TopicItems<(PartitionId, i16)>> = match added {
        Ok(added) => map_topics(
            added,
            |p| {
                let code = p.outcome.map_or_else(|e| code_of(&e), |()| 0);
                (p.partition, code)
            },
            |topic, partitions| TopicItems { topic, partitions },
        ),
        Err(e) => {
            let code = code_of(&e);
            map_topics(
                topics,
                |p| (p, code),
                |topic, partitions| TopicItems { topic, partitions },
            )
        }
    };
    let results = codes
        .into_iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(topic_name(t.topic))
                .with_results_by_partition(
                    t.partitions
                        .into_iter()
                        .map(|(p, code)| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p.0)
                                .with_partition_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    ResponseKind::AddPartitionsToTxn(
        AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results),
    )
}

/// EndTxn: commit or abort.
pub async fn end_txn(
    txns: &Transactions,
    principal: &Principal,
    request: EndTxnRequest,
    version: i16,
) -> ResponseKind {
    let ended = txns
        .end_txn(
            principal,
            &request.transactional_id,
            request.producer_id.0,
            request.producer_epoch,
            request.committed,
        )
        .await;
    let response = EndTxnResponse::default();
    ResponseKind::EndTxn(match ended {
        Ok(()) => response,
        Err(e) => response.with_error_code(kafka_error_at(ApiKey::EndTxn, version, &e).0),
    })
}

/// AddOffsetsToTxn: the group's offsets partition joins the transaction.
pub async fn add_offsets_to_txn(
    txns: &Transactions,
    principal: &Principal,
    request: AddOffsetsToTxnRequest,
    version: i16,
) -> ResponseKind {
    let added = txns
        .add_offsets(
            principal,
            &request.transactional_id,
            request.producer_id.0,
            request.producer_epoch,
            &request.group_id,
        )
        .await;
    let response = AddOffsetsToTxnResponse::default();
    ResponseKind::AddOffsetsToTxn(match added {
        Ok(()) => response,
        Err(e) => response.with_error_code(kafka_error_at(ApiKey::AddOffsetsToTxn, version, &e).0),
    })
}

/// ListTransactions: the ids this broker coordinates. Filters by state name, producer id
/// and (v1) how long the transaction has been open; a state name sluice does not know is
/// named back in `unknown_state_filters`, as Kafka does.
pub async fn list_transactions(
    txns: &Transactions,
    principal: &Principal,
    request: ListTransactionsRequest,
) -> ResponseKind {
    let mut unknown = Vec::new();
    let mut states = Vec::new();
    for name in &request.state_filters {
        match TxnState::from_name(name) {
            Some(state) => states.push(state),
            None => unknown.push(name.clone()),
        }
    }
    let response = ListTransactionsResponse::default().with_unknown_state_filters(unknown.clone());
    // A filter naming only unknown states selects nothing (Kafka's answer, too).
    if states.is_empty() && !unknown.is_empty() {
        return ResponseKind::ListTransactions(response);
    }
    let filter = TxnFilter {
        states,
        producer_ids: request.producer_id_filters.iter().map(|p| p.0).collect(),
        open_longer_than_ms: (request.duration_filter >= 0).then_some(request.duration_filter),
    };
    ResponseKind::ListTransactions(match txns.list(principal, &filter).await {
        Ok(listed) => response.with_transaction_states(
            listed
                .into_iter()
                .map(|(id, value)| {
                    list_transactions_response::TransactionState::default()
                        .with_transactional_id(TransactionalId(kafka_str(id)))
                        .with_producer_id(ProducerId(value.producer_id))
                        .with_transaction_state(kafka_str(value.state.name()))
                })
                .collect(),
        ),
        Err(e) => response.with_error_code(kafka_error(ApiKey::ListTransactions, &e).0),
    })
}

/// DescribeTransactions: each id's state, from its coordinator.
pub async fn describe_transactions(
    txns: &Transactions,
    principal: &Principal,
    request: DescribeTransactionsRequest,
) -> ResponseKind {
    let ids = request
        .transactional_ids
        .iter()
        .map(|id| id.0.to_string())
        .collect();
    let described = txns.describe(principal, ids).await;
    let states = described
        .into_iter()
        .map(|(id, outcome)| {
            let state =
                TransactionState::default().with_transactional_id(TransactionalId(kafka_str(id)));
            match outcome {
                Ok(value) => state
                    .with_transaction_state(kafka_str(value.state.name()))
                    .with_transaction_timeout_ms(value.timeout_ms)
                    .with_transaction_start_time_ms(value.started_ms)
                    .with_producer_id(ProducerId(value.producer_id))
                    .with_producer_epoch(value.producer_epoch)
                    .with_topics(
                        value
                            .partitions
                            .into_iter()
                            .map(|t| {
                                TopicData::default()
                                    .with_topic(topic_name(t.topic))
                                    .with_partitions(t.partitions.iter().map(|p| p.0).collect())
                            })
                            .collect(),
                    ),
                Err(e) => state
                    .with_error_code(kafka_error(ApiKey::DescribeTransactions, &e).0)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_start_time_ms(-1),
            }
        })
        .collect();
    ResponseKind::DescribeTransactions(
        DescribeTransactionsResponse::default().with_transaction_states(states),
    )
}

/// DescribeProducers: the producers each asked replica here remembers.
pub async fn describe_producers(
    offsets: &Offsets,
    principal: &Principal,
    request: DescribeProducersRequest,
) -> ResponseKind {
    let asked: Vec<TopicItems<PartitionId>> = request
        .topics
        .iter()
        .map(|t| topic_partitions(&t.name, &t.partition_indexes))
        .collect();
    let topics = match offsets.describe_producers(principal, asked.clone()).await {
        Ok(described) => described,
        Err(e) => every_partition_failed(asked, e),
    };
    let topics = map_topics(
        topics,
        |p| {
            let partition = PartitionResponse::default().with_partition_index(p.partition.0);
            match p.outcome {
                Ok(producers) => partition.with_active_producers(
                    producers
                        .into_iter()
                        .map(|producer| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(producer.producer_id))
                                .with_producer_epoch(producer.epoch.into())
                                .with_last_sequence(producer.last_sequence)
                                .with_last_timestamp(producer.last_timestamp)
                                .with_coordinator_epoch(producer.coordinator_epoch)
                                .with_current_txn_start_offset(
                                    producer.txn_start_offset.map_or(-1, |o| o.0),
                                )
                        })
                        .collect(),
                ),
                Err(e) => {
                    let (code, message) = kafka_error(ApiKey::DescribeProducers, &e);
                    partition.with_error_code(code).with_error_message(message)
                }
            }
        },
        |name, partitions| {
            TopicResponse::default()
                .with_name(topic_name(name))
                .with_partitions(partitions)
        },
    );
    ResponseKind::DescribeProducers(DescribeProducersResponse::default().with_topics(topics))
}

/// WriteTxnMarkers from a client: an operator aborting a transaction left open in some
/// partitions (the partition leaders here write the markers).
pub async fn write_txn_markers(
    txns: &Transactions,
    principal: &Principal,
    request: WriteTxnMarkersRequest,
) -> ResponseKind {
    let asked: Vec<MarkerRequest> = request
        .markers
        .iter()
        .map(|m| MarkerRequest {
            producer_id: m.producer_id.0,
            producer_epoch: m.producer_epoch,
            marker: ControlMarker {
                kind: ControlType::ending(m.transaction_result),
                coordinator_epoch: m.coordinator_epoch,
            },
            topics: m
                .topics
                .iter()
                .map(|t| topic_partitions(&t.name, &t.partition_indexes))
                .collect(),
        })
        .collect();
    let results = match txns.write_markers(principal, asked.clone()).await {
        Ok(written) => written,
        Err(e) => asked
            .into_iter()
            .map(|m| MarkerResult {
                producer_id: m.producer_id,
                topics: every_partition_failed(m.topics, e.clone()),
            })
            .collect(),
    };
    let markers = results
        .into_iter()
        .map(|r| {
            WritableTxnMarkerResult::default()
                .with_producer_id(ProducerId(r.producer_id))
                .with_topics(map_topics(
                    r.topics,
                    |p| {
                        let code = p
                            .outcome
                            .map_or_else(|e| kafka_error(ApiKey::WriteTxnMarkers, &e).0, |()| 0);
                        WritableTxnMarkerPartitionResult::default()
                            .with_partition_index(p.partition.0)
                            .with_error_code(code)
                    },
                    |name, partitions| {
                        WritableTxnMarkerTopicResult::default()
                            .with_name(topic_name(name))
                            .with_partitions(partitions)
                    },
                ))
        })
        .collect();
    ResponseKind::WriteTxnMarkers(WriteTxnMarkersResponse::default().with_markers(markers))
}

/// A topic's partitions named in a request, as the services take them.
fn topic_partitions(name: &TopicName, indexes: &[i32]) -> TopicItems<PartitionId> {
    TopicItems {
        topic: name.0.to_string(),
        partitions: indexes.iter().copied().map(PartitionId).collect(),
    }
}
