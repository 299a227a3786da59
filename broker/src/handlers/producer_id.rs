//! InitProducerId: ids for idempotent producers, handed out from blocks this broker takes
//! from the controller (AllocateProducerIds), so ids are unique across the cluster with
//! one controller round trip per block rather than per producer.

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::messages::{
    AllocateProducerIdsRequest, InitProducerIdRequest, InitProducerIdResponse,
};
use sluice_protocol::{ErrorCode, Request, Response};

use crate::broker::Broker;
use crate::error::ApiError;

/// How long a block request may wait for the controller.
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(10);

/// The ids left in this broker's current block: `next..end`.
#[derive(Debug, Default)]
pub struct ProducerIdBlock {
    next: i64,
    end: i64,
}

/// A producer id and epoch 0 for a new producer; the same id with the next epoch for a
/// producer that asks to bump its own (KIP-360: after it lost track of its sequences).
pub async fn init_producer_id(
    broker: &Arc<Broker>,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    match assign(broker, &request).await {
        Ok((producer_id, producer_epoch)) => InitProducerIdResponse {
            error_code: ErrorCode::None,
            error_message: None,
            producer_id,
            producer_epoch,
        },
        Err(e) => InitProducerIdResponse {
            error_code: e.code,
            error_message: e.wire_message(),
            producer_id: -1,
            producer_epoch: -1,
        },
    }
}

async fn assign(
    broker: &Arc<Broker>,
    request: &InitProducerIdRequest,
) -> Result<(i64, i16), ApiError> {
    if request.transactional_id.is_some() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "transactions are not supported by this version of sluice; use an idempotent \
             producer (no transactional id)",
        ));
    }
    if request.producer_id >= 0 && request.producer_epoch >= 0 && request.producer_epoch < i16::MAX
    {
        return Ok((request.producer_id, request.producer_epoch + 1));
    }
    let mut block = broker.producer_ids.lock().await;
    if block.next >= block.end {
        *block = allocate(broker).await?;
    }
    let id = block.next;
    block.next += 1;
    Ok((id, 0))
}

async fn allocate(broker: &Arc<Broker>) -> Result<ProducerIdBlock, ApiError> {
    let request = Request::AllocateProducerIds(AllocateProducerIdsRequest {
        broker_id: broker.config.node_id,
        broker_epoch: broker.cluster.broker_epoch(),
    });
    match broker
        .cluster
        .client
        .call(request, CONTROLLER_TIMEOUT)
        .await?
    {
        Response::AllocateProducerIds(r) if r.error_code == ErrorCode::None => {
            Ok(ProducerIdBlock {
                next: r.producer_id_start,
                end: r.producer_id_start + i64::from(r.producer_id_len),
            })
        }
        Response::AllocateProducerIds(r) => Err(ApiError::new(
            // Retriable for the producer: the broker registers again, or a controller is
            // elected.
            ErrorCode::CoordinatorNotAvailable,
            format!(
                "no producer ids from the controller yet ({}: {}); retry shortly",
                r.error_code.name(),
                r.error_message.unwrap_or_default()
            ),
        )),
        other => Err(ApiError::new(
            ErrorCode::UnknownServerError,
            format!(
                "the controller answered AllocateProducerIds with {:?}",
                other.api_key()
            ),
        )),
    }
}
