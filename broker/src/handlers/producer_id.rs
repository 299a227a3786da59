//! InitProducerId: the native request in, [`crate::services::producer_ids`] hands out an
//! id, the native response out.

use sluice_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};
use sluice_protocol::ErrorCode;

use crate::security::Principal;
use crate::services::producer_ids::{InitProducer, ProducerIds};

/// A producer id and epoch.
pub async fn init_producer_id(
    service: &ProducerIds,
    principal: &Principal,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let asked = InitProducer {
        transactional_id: request.transactional_id,
        producer_id: request.producer_id,
        producer_epoch: request.producer_epoch,
    };
    match service.init(principal, &asked).await {
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
