//! Produce over the Kafka protocol: [`crate::services::produce`] appends in request order
//! and waits for durability and the ISR; batches are stored as the client built them.

use std::time::Duration;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, ResponseKind};
use sluice_protocol::PartitionId;

use super::{kafka_error, topic_name};
use crate::error::ApiError;
use crate::partition::{parse_acks, Acks};
use crate::security::Principal;
use crate::services::produce::{self, Produce};
use crate::services::{map_topics, PartitionOutcome, TopicItems};

/// A produce whose batches are in the logs.
pub struct Appended(produce::Appended);

/// The ordered phase: appends every partition's batches. A request refused as a whole
/// (bad acks) is answered at once with every partition's error.
pub async fn start(
    service: &Produce,
    principal: &Principal,
    request: ProduceRequest,
    _version: i16,
) -> Result<Appended, kafka_protocol::messages::ResponseKind> {
    let refused = |e: ApiError, request: &ProduceRequest| {
        let topics = request
            .topic_data
            .iter()
            .map(|t| TopicItems {
                topic: t.name.0.to_string(),
                partitions: t
                    .partition_data
                    .iter()
                    .map(|p| PartitionOutcome {
                        partition: PartitionId(p.index),
                        outcome: Err(e.clone()),
                    })
                    .collect(),
            })
            .collect();
        response(topics)
    };
    let acks = match parse_acks(request.acks) {
        Ok(acks) => acks,
        Err(e) => return Err(refused(e, &request)),
    };
    let asked = produce::ProduceRequest {
        // v3+: a transactional producer's id, which a batch that begins its transaction in
        // a partition is verified with.
        transactional_id: request.transactional_id.map(|id| id.0.to_string()),
        acks,
        timeout: Duration::from_millis(request.timeout_ms.max(0) as u64),
        topics: request
            .topic_data
            .into_iter()
            .map(|t| TopicItems {
                topic: t.name.0.to_string(),
                partitions: t
                    .partition_data
                    .into_iter()
                    .map(|p| (PartitionId(p.index), p.records.unwrap_or_default()))
                    .collect(),
            })
            .collect(),
        principal: principal.clone(),
    };
    match service.append(asked).await {
        Ok(appended) => Ok(Appended(appended)),
        Err(e) => Err(response(vec![TopicItems {
            topic: String::new(),
            partitions: vec![PartitionOutcome {
                partition: PartitionId(-1),
                outcome: Err(e),
            }],
        }])),
    }
}

/// The completion phase: every partition's outcome, or no answer at all for acks=0;
/// with the time the client is throttled for (over its quota).
pub async fn finish(appended: Appended, throttled: Duration) -> Option<ResponseKind> {
    let acks = appended.0.acks();
    let topics = Produce::complete(appended.0).await;
    (acks != Acks::None).then(|| {
        let mut answer = response(topics);
        if let ResponseKind::Produce(r) = &mut answer {
            r.throttle_time_ms = super::throttle_ms(throttled);
        }
        answer
    })
}

fn response(
    topics: Vec<TopicItems<PartitionOutcome<crate::services::produce::Produced>>>,
) -> ResponseKind {
    let responses = map_topics(
        topics,
        |p| {
            let partition = PartitionProduceResponse::default().with_index(p.partition.0);
            match p.outcome {
                Ok(produced) => partition
                    .with_base_offset(produced.base_offset.0)
                    .with_log_append_time_ms(produced.log_append_time_ms.unwrap_or(-1))
                    .with_log_start_offset(produced.log_start_offset.0),
                Err(e) => {
                    let (code, message) = kafka_error(ApiKey::Produce, &e);
                    partition
                        .with_error_code(code)
                        .with_error_message(message)
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(-1)
                }
            }
        },
        |name, partitions| {
            TopicProduceResponse::default()
                .with_name(topic_name(name))
                .with_partition_responses(partitions)
        },
    );
    ResponseKind::Produce(ProduceResponse::default().with_responses(responses))
}
