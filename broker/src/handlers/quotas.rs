//! AlterClientQuotas: the native request in (from an administrator, or a broker
//! forwarding a Kafka client's to the controller's node), [`crate::services::quotas`]
//! changes them, one outcome per entry out.

use sluice_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse, QuotaResult};
use sluice_protocol::ErrorCode;

use crate::cluster::image::quotas::QuotaChange;
use crate::error::ApiError;
use crate::security::Principal;
use crate::services::quotas::ClientQuotas;

/// Sets and removes client quotas.
pub async fn alter(
    service: &ClientQuotas,
    principal: &Principal,
    request: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let changes = request
        .entries
        .iter()
        .map(|e| {
            QuotaChange::from_wire(e).map_err(|why| ApiError::new(ErrorCode::InvalidRequest, why))
        })
        .collect();
    let outcomes = service
        .alter(principal, changes, request.validate_only)
        .await;
    AlterClientQuotasResponse {
        results: outcomes
            .into_iter()
            .map(|outcome| QuotaResult {
                error_code: outcome.as_ref().err().map_or(ErrorCode::None, |e| e.code),
                error_message: outcome.as_ref().err().and_then(|e| e.wire_message()),
            })
            .collect(),
    }
}
