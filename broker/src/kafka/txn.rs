//! A Kafka transactional producer's requests to its transaction coordinator, on
//! [`crate::txn::coordinator`]: AddPartitionsToTxn (v0-3, one transaction per request: v4+
//! batches transactions for brokers verifying partitions, KIP-890), AddOffsetsToTxn (v0-3)
//! and EndTxn (v0-3). InitProducerId and FindCoordinator with a transactional id are in
//! `admin` and `groups`, and TxnOffsetCommit, which goes to the group's coordinator, in
//! `groups`.

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, ApiKey, EndTxnRequest, EndTxnResponse, ResponseKind,
};
use sluice_protocol::PartitionId;

use super::{kafka_error_at, topic_name};
use crate::security::Principal;
use crate::services::{map_topics, TopicItems};
use crate::txn::coordinator::Transactions;

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
        .map(|t| TopicItems {
            topic: t.name.0.to_string(),
            partitions: t.partitions.iter().copied().map(PartitionId).collect(),
        })
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
