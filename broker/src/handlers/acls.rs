//! CreateAcls, DeleteAcls and DescribeAcls: the native requests in,
//! [`crate::services::acls`] changes or lists ACLs, the native responses out.

use sluice_protocol::messages::{
    AclResult, CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use sluice_protocol::ErrorCode;

use crate::error::ApiError;
use crate::security::acl::AclBinding;
use crate::security::Principal;
use crate::services::acls::Acls;

/// Adds ACLs, all or none.
pub async fn create(
    service: &Acls,
    principal: &Principal,
    request: CreateAclsRequest,
) -> CreateAclsResponse {
    let n = request.creations.len();
    let outcome = change(service, principal, &request.creations, true).await;
    CreateAclsResponse {
        results: results(n, outcome),
    }
}

/// Removes ACLs, all or none.
pub async fn delete(
    service: &Acls,
    principal: &Principal,
    request: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let n = request.deletions.len();
    let outcome = change(service, principal, &request.deletions, false).await;
    DeleteAclsResponse {
        results: results(n, outcome),
    }
}

async fn change(
    service: &Acls,
    principal: &Principal,
    entries: &[sluice_protocol::messages::AclEntry],
    create: bool,
) -> Result<(), ApiError> {
    let acls = entries
        .iter()
        .map(AclBinding::from_entry)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|why| ApiError::new(ErrorCode::InvalidRequest, why))?;
    service.change(principal, acls, create).await
}

fn results(n: usize, outcome: Result<(), ApiError>) -> Vec<AclResult> {
    (0..n)
        .map(|_| AclResult {
            error_code: outcome.as_ref().err().map_or(ErrorCode::None, |e| e.code),
            error_message: outcome.as_ref().err().and_then(|e| e.wire_message()),
        })
        .collect()
}

/// Lists ACLs.
pub fn describe(
    service: &Acls,
    principal: &Principal,
    request: DescribeAclsRequest,
) -> Result<DescribeAclsResponse, ApiError> {
    let acls = service.list(principal, request.principal.as_deref())?;
    Ok(DescribeAclsResponse {
        acls: acls.iter().map(AclBinding::to_entry).collect(),
    })
}
