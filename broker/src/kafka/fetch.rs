//! Fetch, ListOffsets, OffsetForLeaderEpoch and DeleteRecords over the Kafka protocol, on
//! [`crate::services::fetch`] and [`crate::services::offsets`]. Incremental fetch sessions
//! (KIP-227) are declined: every answer carries session id 0, which tells a client to keep
//! sending full fetches; a client that names a session gets FETCH_SESSION_ID_NOT_FOUND and
//! starts over. read_committed fetches (v4+) stop at the last stable offset and carry the
//! aborted transactions their records overlap.

use std::time::Duration;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    ApiKey, DeleteRecordsRequest, DeleteRecordsResponse, FetchRequest, FetchResponse,
    ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, ProducerId, ResponseKind,
};
use sluice_protocol::messages::IsolationLevel;
use sluice_protocol::{LeaderEpoch, Offset, PartitionId, Records};

use super::codec::{self, InFile};
use super::{every_partition_failed, kafka_error, topic_name};
use crate::security::Principal;
use crate::services::fetch::{self, Fetch, FetchPartition};
use crate::services::offsets::{DeleteQuery, EpochQuery, OffsetQuery, Offsets};
use crate::services::{map_topics, TopicItems};

/// Kafka's FETCH_SESSION_ID_NOT_FOUND.
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;

/// Fetch: records below each partition's high watermark, long-polled. With the answer, the
/// record batches it sends from their segment files (the answer holds their stand-ins).
/// The bytes of batches in a Fetch answer: those it holds and those sent from files.
pub fn answer_bytes(body: &ResponseKind, in_files: &[InFile]) -> usize {
    let held = match body {
        ResponseKind::Fetch(r) => r
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .filter_map(|p| p.records.as_ref())
            .map(|r| r.len())
            .sum(),
        _ => 0,
    };
    let from_files: usize = in_files.iter().map(|f| f.slice.len()).sum();
    held + from_files
}

pub async fn fetch(
    service: &Fetch,
    principal: &Principal,
    request: FetchRequest,
    version: i16,
) -> (ResponseKind, Vec<InFile>) {
    if request.session_id != 0 {
        // No session was ever created here (every answer says session 0).
        let response = FetchResponse::default().with_error_code(FETCH_SESSION_ID_NOT_FOUND);
        return (ResponseKind::Fetch(response), Vec::new());
    }
    let asked = fetch::FetchRequest {
        max_wait: Duration::from_millis(request.max_wait_ms.max(0) as u64),
        min_bytes: request.min_bytes.max(0) as u64,
        // Before v3 the response had no overall limit: each partition's counts.
        max_bytes: if version >= 3 {
            request.max_bytes.max(0) as u32
        } else {
            u32::MAX
        },
        topics: request
            .topics
            .into_iter()
            .map(|t| TopicItems {
                topic: t.topic.0.to_string(),
                partitions: t
                    .partitions
                    .into_iter()
                    .map(|p| FetchPartition {
                        partition: PartitionId(p.partition),
                        fetch_offset: Offset(p.fetch_offset),
                        partition_max_bytes: p.partition_max_bytes.max(0) as u32,
                        current_leader_epoch: LeaderEpoch(p.current_leader_epoch),
                    })
                    .collect(),
            })
            .collect(),
        // Before v4 there were no transactions: every record was committed.
        isolation: if version >= 4 {
            isolation_level(request.isolation_level)
        } else {
            IsolationLevel::ReadUncommitted
        },
        principal: principal.clone(),
    };
    let topics = match service.fetch(asked).await {
        Ok(topics) => topics,
        Err(e) => {
            let code = codec::kafka_error_code_for(ApiKey::Fetch, e.code);
            let mut response = FetchResponse::default();
            if version >= 7 {
                response.error_code = code;
            }
            return (ResponseKind::Fetch(response), Vec::new());
        }
    };
    let mut in_files = Vec::new();
    let responses = map_topics(
        topics,
        |p| {
            let data = PartitionData::default()
                .with_partition_index(p.partition.0)
                .with_high_watermark(p.high_watermark.0)
                .with_last_stable_offset(p.last_stable_offset.0)
                .with_log_start_offset(p.log_start_offset.0)
                .with_aborted_transactions(Some(
                    p.aborted
                        .iter()
                        .map(|&(producer_id, first_offset)| {
                            AbortedTransaction::default()
                                .with_producer_id(ProducerId(producer_id))
                                .with_first_offset(first_offset.0)
                        })
                        .collect(),
                ));
            match p.outcome {
                Ok(Records::Memory(records)) => data.with_records(Some(records)),
                Ok(Records::File(slice)) => {
                    let in_file = InFile::new(slice);
                    let stand_in = in_file.stand_in.clone();
                    in_files.push(in_file);
                    data.with_records(Some(stand_in))
                }
                Err(e) => data
                    .with_error_code(kafka_error(ApiKey::Fetch, &e).0)
                    .with_records(Some(Default::default())),
            }
        },
        |name, partitions| {
            FetchableTopicResponse::default()
                .with_topic(topic_name(name))
                .with_partitions(partitions)
        },
    );
    let response = FetchResponse::default().with_responses(responses);
    (ResponseKind::Fetch(response), in_files)
}

/// ListOffsets: earliest (-2), latest (-1: the high watermark, or under read_committed the
/// last stable offset) or the first offset at a time.
pub async fn list_offsets(
    service: &Offsets,
    principal: &Principal,
    request: ListOffsetsRequest,
    version: i16,
) -> ResponseKind {
    // read_committed came with v2.
    let isolation = if version >= 2 {
        isolation_level(request.isolation_level)
    } else {
        IsolationLevel::ReadUncommitted
    };
    let queries: Vec<TopicItems<OffsetQuery>> = request
        .topics
        .iter()
        .map(|t| TopicItems {
            topic: t.name.0.to_string(),
            partitions: t
                .partitions
                .iter()
                .map(|p| OffsetQuery {
                    partition: PartitionId(p.partition_index),
                    timestamp: p.timestamp,
                    current_leader_epoch: LeaderEpoch(p.current_leader_epoch),
                    isolation,
                })
                .collect(),
        })
        .collect();
    let found = service.list_offsets(principal, queries.clone()).await;
    let topics = match found {
        Ok(found) => found,
        Err(e) => every_partition_failed(queries, e),
    };
    let topics = map_topics(
        topics,
        |p| {
            let partition =
                ListOffsetsPartitionResponse::default().with_partition_index(p.partition.0);
            match p.outcome {
                Ok(found) => {
                    let partition = partition
                        .with_timestamp(found.timestamp)
                        .with_offset(found.offset.0);
                    // The leader epoch is in the answer from v4 on.
                    if version >= 4 {
                        partition.with_leader_epoch(found.leader_epoch.0)
                    } else {
                        partition
                    }
                }
                Err(e) => partition
                    .with_error_code(kafka_error(ApiKey::ListOffsets, &e).0)
                    .with_timestamp(-1)
                    .with_offset(-1),
            }
        },
        |name, partitions| {
            ListOffsetsTopicResponse::default()
                .with_name(topic_name(name))
                .with_partitions(partitions)
        },
    );
    ResponseKind::ListOffsets(ListOffsetsResponse::default().with_topics(topics))
}

/// DeleteRecords: each partition's leader deletes the records below the offset asked (-1:
/// below the high watermark), and the answer waits, up to the request's timeout, until the
/// in-sync replicas have too; its low watermark is their lowest log start.
pub async fn delete_records(
    service: &Offsets,
    principal: &Principal,
    request: DeleteRecordsRequest,
) -> ResponseKind {
    let queries: Vec<TopicItems<DeleteQuery>> = request
        .topics
        .iter()
        .map(|t| TopicItems {
            topic: t.name.0.to_string(),
            partitions: t
                .partitions
                .iter()
                .map(|p| DeleteQuery {
                    partition: PartitionId(p.partition_index),
                    offset: p.offset,
                })
                .collect(),
        })
        .collect();
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64);
    let deleted = service
        .delete_records(principal, queries.clone(), timeout)
        .await;
    let topics = match deleted {
        Ok(deleted) => deleted,
        Err(e) => every_partition_failed(queries, e),
    };
    let topics = map_topics(
        topics,
        |p| {
            let partition =
                DeleteRecordsPartitionResult::default().with_partition_index(p.partition.0);
            match p.outcome {
                Ok(low_watermark) => partition.with_low_watermark(low_watermark.0),
                Err(e) => partition
                    .with_error_code(kafka_error(ApiKey::DeleteRecords, &e).0)
                    .with_low_watermark(-1),
            }
        },
        |name, partitions| {
            DeleteRecordsTopicResult::default()
                .with_name(topic_name(name))
                .with_partitions(partitions)
        },
    );
    ResponseKind::DeleteRecords(DeleteRecordsResponse::default().with_topics(topics))
}

/// OffsetForLeaderEpoch: where an epoch ends in the leader's log (a consumer's check for
/// a truncated log after a leader change, KIP-320).
pub async fn offset_for_leader_epoch(
    service: &Offsets,
    principal: &Principal,
    request: OffsetForLeaderEpochRequest,
) -> ResponseKind {
    let queries: Vec<TopicItems<EpochQuery>> = request
        .topics
        .iter()
        .map(|t| TopicItems {
            topic: t.topic.0.to_string(),
            partitions: t
                .partitions
                .iter()
                .map(|p| EpochQuery {
                    partition: PartitionId(p.partition),
                    current_leader_epoch: LeaderEpoch(p.current_leader_epoch),
                    leader_epoch: LeaderEpoch(p.leader_epoch),
                })
                .collect(),
        })
        .collect();
    let topics = match service.epoch_ends(principal, queries.clone()).await {
        Ok(ends) => ends,
        Err(e) => every_partition_failed(queries, e),
    };
    let topics = map_topics(
        topics,
        |p| {
            let end = EpochEndOffset::default().with_partition(p.partition.0);
            match p.outcome {
                Ok(found) => end
                    .with_leader_epoch(found.leader_epoch.0)
                    .with_end_offset(found.end_offset.0),
                Err(e) => end
                    .with_error_code(kafka_error(ApiKey::OffsetForLeaderEpoch, &e).0)
                    .with_leader_epoch(-1)
                    .with_end_offset(-1),
            }
        },
        |name, partitions| {
            OffsetForLeaderTopicResult::default()
                .with_topic(topic_name(name))
                .with_partitions(partitions)
        },
    );
    ResponseKind::OffsetForLeaderEpoch(OffsetForLeaderEpochResponse::default().with_topics(topics))
}

/// Kafka's isolation level byte: 1 is read_committed, anything else read_uncommitted.
fn isolation_level(wire: i8) -> IsolationLevel {
    if wire == 1 {
        IsolationLevel::ReadCommitted
    } else {
        IsolationLevel::ReadUncommitted
    }
}
