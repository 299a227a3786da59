//! ACL administration (issue 22): ACLs are added and removed through the active
//! controller's metadata log (all of a request's ACLs in one command), listed from this
//! broker's image. Changing them needs Alter on the cluster, listing them Describe.

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::messages::{CreateAclsRequest, DeleteAclsRequest};
use sluice_protocol::{ErrorCode, Request, Response};

use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::security::acl::{AclBinding, Authorizer, Operation, Resource};
use crate::security::Principal;

/// How long a change waits for the controller.
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a change waits to show in this broker's image.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The ACL service.
pub struct Acls {
    cluster: Arc<Cluster>,
    authorizer: Arc<Authorizer>,
}

impl Acls {
    /// ACLs of `cluster`'s metadata, guarded by `authorizer`.
    pub fn new(cluster: Arc<Cluster>, authorizer: Arc<Authorizer>) -> Acls {
        Acls {
            cluster,
            authorizer,
        }
    }

    /// Adds `acls` (`create`) or removes them, all or none; this broker's image shows the
    /// change before the answer, so the next request here is judged by it. No ACLs is no
    /// change, asked of nobody.
    pub async fn change(
        &self,
        principal: &Principal,
        acls: Vec<AclBinding>,
        create: bool,
    ) -> Result<(), ApiError> {
        if acls.is_empty() {
            return Ok(());
        }
        self.authorizer
            .check(principal, Operation::Alter, Resource::Cluster)?;
        let entries = acls.iter().map(AclBinding::to_entry).collect();
        let request = if create {
            Request::CreateAcls(CreateAclsRequest { creations: entries })
        } else {
            Request::DeleteAcls(DeleteAclsRequest { deletions: entries })
        };
        let results = match self
            .cluster
            .client
            .call(request, CONTROLLER_TIMEOUT)
            .await?
        {
            Response::CreateAcls(r) => r.results,
            Response::DeleteAcls(r) => r.results,
            other => return Err(super::controller_answered(other.api_key())),
        };
        if let Some(r) = results
            .into_iter()
            .find(|r| r.error_code != ErrorCode::None)
        {
            return Err(ApiError::new(
                r.error_code,
                r.error_message.unwrap_or_default(),
            ));
        }
        self.cluster
            .wait_for_image(APPLY_TIMEOUT, |image| {
                acls.iter().all(|acl| image.acls.contains(acl) == create)
            })
            .await;
        for acl in &acls {
            tracing::info!(%principal, ?acl, "{} ACL", if create { "added" } else { "removed" });
        }
        Ok(())
    }

    /// Every ACL, or those of `of` (`User:alice`), sorted.
    pub fn list(
        &self,
        principal: &Principal,
        of: Option<&str>,
    ) -> Result<Vec<AclBinding>, ApiError> {
        self.authorizer
            .check(principal, Operation::Describe, Resource::Cluster)?;
        Ok(self
            .cluster
            .image()
            .acls
            .iter()
            .filter(|acl| of.is_none_or(|p| acl.principal == p))
            .cloned()
            .collect())
    }
}
