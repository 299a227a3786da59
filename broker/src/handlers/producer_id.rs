//! InitProducerId: the native request in, [`crate::services::producer_ids`] hands out an
//! id (the transaction coordinator, for a transactional id), the native response out.

use sluice_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};
use sluice_protocol::ErrorCode;

use crate::security::Principal;
use crate::services::producer_ids::{InitProducer, ProducerIds};
use crate::txn::coordinator::Transactions;

/// A producer id and epoch.
pub async fn init_producer_id(
    service: &ProducerIds,
    txns: &Transactions,
    principal: &Principal,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let answer = match request.transactional_id {
        Some(id) => {
            let claimed =
                (request.producer_id >= 0).then_some((request.producer_id, request.producer_epoch));
            txns.init_producer_id(principal, &id, claimed, request.transaction_timeout_ms)
                .await
        }
        None => {
            let asked = InitProducer {
                transactional_id: None,
                producer_id: request.producer_id,
                producer_epoch: request.producer_epoch,
            };
            service.init(principal, &asked).await
        }
    };
    match answer {
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
