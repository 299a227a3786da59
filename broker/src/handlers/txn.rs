//! Transactions: AddPartitionsToTxn, AddOffsetsToTxn, EndTxn and VerifyTxn (brokers only)
//! to [`crate::txn::coordinator`] (TxnOffsetCommit goes to the group coordinator, in
//! `groups`), and WriteTxnMarkers (brokers only) to [`crate::txn::markers`]; native
//! requests in, native responses out.

use sluice_protocol::control::{ControlMarker, ControlType};
use sluice_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, EndTxnRequest,
    TopicPartitionResults, TxnResponse, VerifyTxnRequest, VerifyTxnResponse,
    WritableTxnMarkerResult, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use sluice_protocol::ErrorCode;

use super::partition_result;
use crate::broker::Broker;
use crate::error::ApiError;
use crate::security::Principal;
use crate::services::{map_topics, TopicItems};
use crate::txn::coordinator::Transactions;
use crate::txn::markers::{self, MarkerRequest};

/// AddPartitionsToTxn: per-partition outcomes.
pub async fn add_partitions_to_txn(
    txns: &Transactions,
    principal: &Principal,
    request: AddPartitionsToTxnRequest,
) -> Result<AddPartitionsToTxnResponse, ApiError> {
    let topics = request.topics.into_iter().map(TopicItems::from).collect();
    let added = txns
        .add_partitions(
            principal,
            &request.transactional_id,
            request.producer_id,
            request.producer_epoch,
            topics,
        )
        .await?;
    Ok(AddPartitionsToTxnResponse {
        topics: map_topics(added, partition_result, |name, partitions| {
            TopicPartitionResults { name, partitions }
        }),
    })
}

/// VerifyTxn: is each partition in the producer's ongoing transaction (a leader asks,
/// KIP-890)?
pub async fn verify_txn(
    txns: &Transactions,
    request: VerifyTxnRequest,
) -> Result<VerifyTxnResponse, ApiError> {
    let verified = txns
        .verify(
            &request.transactional_id,
            request.producer_id,
            request.producer_epoch,
            request.topics,
        )
        .await?;
    Ok(VerifyTxnResponse {
        topics: map_topics(verified, partition_result, |name, partitions| {
            TopicPartitionResults { name, partitions }
        }),
    })
}

/// EndTxn: commit or abort.
pub async fn end_txn(
    txns: &Transactions,
    principal: &Principal,
    request: EndTxnRequest,
) -> TxnResponse {
    let ended = txns
        .end_txn(
            principal,
            &request.transactional_id,
            request.producer_id,
            request.producer_epoch,
            request.committed,
        )
        .await;
    txn_response(ended)
}

/// AddOffsetsToTxn: the group's offsets partition joins the transaction.
pub async fn add_offsets_to_txn(
    txns: &Transactions,
    principal: &Principal,
    request: AddOffsetsToTxnRequest,
) -> TxnResponse {
    let added = txns
        .add_offsets(
            principal,
            &request.transactional_id,
            request.producer_id,
            request.producer_epoch,
            &request.group_id,
        )
        .await;
    txn_response(added)
}

fn txn_response(outcome: Result<(), ApiError>) -> TxnResponse {
    match outcome {
        Ok(()) => TxnResponse {
            error_code: ErrorCode::None,
            error_message: None,
        },
        Err(e) => TxnResponse {
            error_code: e.code,
            error_message: e.wire_message(),
        },
    }
}

/// Writes the markers of a WriteTxnMarkers request.
pub async fn write_txn_markers(
    broker: &Broker,
    request: WriteTxnMarkersRequest,
) -> Result<WriteTxnMarkersResponse, ApiError> {
    let asked = request
        .markers
        .into_iter()
        .map(|m| MarkerRequest {
            producer_id: m.producer_id,
            producer_epoch: m.producer_epoch,
            marker: ControlMarker {
                kind: ControlType::ending(m.committed),
                coordinator_epoch: m.coordinator_epoch,
            },
            topics: m.topics.into_iter().map(TopicItems::from).collect(),
        })
        .collect();
    let image = broker.cluster.image();
    let results = markers::write_markers(&broker.topics, &broker.groups, &image, asked).await?;
    Ok(WriteTxnMarkersResponse {
        markers: results
            .into_iter()
            .map(|r| WritableTxnMarkerResult {
                producer_id: r.producer_id,
                topics: map_topics(r.topics, partition_result, |name, partitions| {
                    TopicPartitionResults { name, partitions }
                }),
            })
            .collect(),
    })
}
