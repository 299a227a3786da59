//! AlterClientQuotas and DescribeClientQuotas: the native requests in (an alteration from
//! an administrator, or from a broker forwarding a Kafka client's to the controller's
//! node), [`crate::services::quotas`] changes or lists them, the native responses out.

use sluice_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse, QuotaEntry, QuotaResult, QuotaValue,
};
use sluice_protocol::ErrorCode;

use crate::cluster::image::quotas::QuotaChange;
use crate::error::ApiError;
use crate::security::Principal;
use crate::services::quotas::{ClientQuotas, QuotaFilter};

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

/// Lists the quotas the filter selects.
pub fn describe(
    service: &ClientQuotas,
    principal: &Principal,
    request: DescribeClientQuotasRequest,
) -> Result<DescribeClientQuotasResponse, ApiError> {
    let components = request
        .components
        .iter()
        .map(|c| (c.entity_type.as_str(), c.match_type, c.name.as_deref()));
    let filter = QuotaFilter::from_components(components, request.strict)?;
    let entries = service
        .describe(principal, &filter)?
        .into_iter()
        .map(|q| QuotaEntry {
            entity: q.entity.to_wire(),
            values: q
                .values
                .iter()
                .map(|(key, rate)| QuotaValue {
                    key: key.name().to_owned(),
                    value: i64::try_from(*rate).unwrap_or(i64::MAX),
                })
                .collect(),
        })
        .collect();
    Ok(DescribeClientQuotasResponse { entries })
}
