//! Authorization (issue 22): Kafka's ACL model. An ACL allows or denies a principal an
//! operation on resources: a topic, a group, a transactional id or the cluster, named literally (`orders`, or
//! `*` for every resource of the type) or by prefix (`orders.`). ACLs live in the metadata
//! image, so every broker decides alike; the [`Authorizer`] answers from the image of the
//! moment, so a new ACL applies to the next request.
//!
//! The rules are Kafka's `AclAuthorizer`'s: with the authorizer on, what no ACL allows is
//! denied (`allow.everyone.if.no.acl.found=false`); a matching deny wins over any allow;
//! Read, Write, Delete and Alter each imply Describe; `All` matches every operation;
//! superusers (`--superusers`) are allowed everything. With the authorizer off everything is
//! allowed, today's behaviour.

use std::fmt;
use std::sync::Arc;

use sluice_protocol::ErrorCode;

use super::Principal;
pub use crate::cluster::image::acls::{
    AclBinding, Operation, PatternType, Permission, ResourceType, CLUSTER_RESOURCE,
};
use crate::cluster::image::MetadataImage;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// A resource a request acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource<'a> {
    /// A topic.
    Topic(&'a str),
    /// A group.
    Group(&'a str),
    /// The cluster.
    Cluster,
    /// A transactional id.
    TransactionalId(&'a str),
}

impl<'a> Resource<'a> {
    fn resource_name(self) -> &'a str {
        match self {
            Resource::Topic(name) | Resource::Group(name) | Resource::TransactionalId(name) => name,
            Resource::Cluster => CLUSTER_RESOURCE,
        }
    }

    fn resource_type(self) -> ResourceType {
        match self {
            Resource::Topic(_) => ResourceType::Topic,
            Resource::Group(_) => ResourceType::Group,
            Resource::Cluster => ResourceType::Cluster,
            Resource::TransactionalId(_) => ResourceType::TransactionalId,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Resource::Topic(_) => "topic",
            Resource::Group(_) => "group",
            Resource::Cluster => "cluster",
            Resource::TransactionalId(_) => "transactional id",
        }
    }

    fn code(self) -> ErrorCode {
        match self {
            Resource::Topic(_) => ErrorCode::TopicAuthorizationFailed,
            Resource::Group(_) => ErrorCode::GroupAuthorizationFailed,
            Resource::Cluster => ErrorCode::ClusterAuthorizationFailed,
            Resource::TransactionalId(_) => ErrorCode::TransactionalIdAuthorizationFailed,
        }
    }
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Topic(name) | Resource::Group(name) | Resource::TransactionalId(name) => {
                write!(f, "{} {name:?}", self.name())
            }
            Resource::Cluster => f.write_str("the cluster"),
        }
    }
}

/// Decides what a principal may do.
pub struct Authorizer {
    enabled: bool,
    superusers: Vec<Principal>,
    image: Arc<dyn Fn() -> Arc<MetadataImage> + Send + Sync>,
    metrics: Arc<Metrics>,
}

impl Authorizer {
    /// An authorizer that enforces the image's ACLs when `enabled`, with `superusers`
    /// allowed everything.
    pub fn new(
        enabled: bool,
        superusers: Vec<Principal>,
        image: Arc<dyn Fn() -> Arc<MetadataImage> + Send + Sync>,
        metrics: Arc<Metrics>,
    ) -> Authorizer {
        Authorizer {
            enabled,
            superusers,
            image,
            metrics,
        }
    }

    /// Whether ACLs are enforced.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `principal` may do `operation` on `resource`.
    pub fn allows(
        &self,
        principal: &Principal,
        operation: Operation,
        resource: Resource<'_>,
    ) -> bool {
        if !self.enabled || principal.is_internal() || self.superusers.contains(principal) {
            return true;
        }
        decide(&(self.image)().acls, principal, operation, resource)
    }

    /// [`Authorizer::allows`], or the refusal a client gets: the resource type's
    /// AUTHORIZATION_FAILED naming the operation and the resource. A denial is logged
    /// (principal, operation, resource) at INFO.
    pub fn check(
        &self,
        principal: &Principal,
        operation: Operation,
        resource: Resource<'_>,
    ) -> Result<(), ApiError> {
        if self.allows(principal, operation, resource) {
            return Ok(());
        }
        tracing::info!(%principal, operation = operation.name(), %resource, "denied");
        self.metrics.denied(operation.name(), resource.name());
        Err(ApiError::new(
            resource.code(),
            format!(
                "{principal} may not {} {resource}; an administrator can allow it with sluice acl add",
                operation.name()
            ),
        ))
    }

    /// Whether `principal` may write to some topic (an idempotent producer's id needs it,
    /// as Kafka's KIP-679 has it).
    pub fn may_write_somewhere(&self, principal: &Principal) -> bool {
        if !self.enabled || principal.is_internal() || self.superusers.contains(principal) {
            return true;
        }
        let image = (self.image)();
        image.acls.iter().any(|acl| {
            acl.permission == Permission::Allow
                && acl.resource_type == ResourceType::Topic
                && acl.operation.covers(Operation::Write)
                && acl.operation != Operation::Describe
                && acl.matches_principal(principal.as_str())
        })
    }
}

/// Kafka's decision over `acls`: a matching deny wins; else a matching allow allows; else
/// denied.
pub fn decide(
    acls: &std::collections::BTreeSet<AclBinding>,
    principal: &Principal,
    operation: Operation,
    resource: Resource<'_>,
) -> bool {
    let matching = acls.iter().filter(|acl| {
        acl.matches_principal(principal.as_str())
            && acl.matches_resource(resource.resource_type(), resource.resource_name())
    });
    let mut allowed = false;
    for acl in matching {
        match acl.permission {
            // A deny of Describe does not deny Read: only what the deny names (or All).
            Permission::Deny if acl.operation == Operation::All || acl.operation == operation => {
                return false
            }
            Permission::Allow if acl.operation.covers(operation) => allowed = true,
            _ => {}
        }
    }
    allowed
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn acl(
        permission: Permission,
        principal: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
        pattern_type: PatternType,
    ) -> AclBinding {
        AclBinding {
            resource_type,
            resource_name: name.into(),
            pattern_type,
            principal: principal.into(),
            operation,
            permission,
        }
    }

    #[test]
    fn kafkas_rules() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let acls: BTreeSet<AclBinding> = [
            acl(Allow, "User:alice", Write, Topic, "orders", Literal),
            acl(Allow, "User:alice", Read, Topic, "logs.", Prefixed),
            acl(Deny, "User:alice", Read, Topic, "logs.secret", Literal),
            acl(Allow, "User:*", Describe, Topic, "public", Literal),
            acl(Allow, "User:bob", All, Group, "*", Literal),
        ]
        .into_iter()
        .collect();
        let alice = Principal::user("alice");
        let bob = Principal::user("bob");
        let can = |p: &Principal, op, r| decide(&acls, p, op, r);
        assert!(can(&alice, Write, Resource::Topic("orders")));
        assert!(
            can(&alice, Describe, Resource::Topic("orders")),
            "Write implies Describe"
        );
        assert!(
            !can(&alice, Read, Resource::Topic("orders")),
            "nothing allows it"
        );
        assert!(
            !can(&alice, Write, Resource::Topic("orders2")),
            "literal is exact"
        );
        assert!(can(&alice, Read, Resource::Topic("logs.app")), "prefixed");
        assert!(
            !can(&alice, Read, Resource::Topic("logs.secret")),
            "deny wins"
        );
        assert!(
            can(&alice, Describe, Resource::Topic("logs.secret")),
            "only Read denied"
        );
        assert!(
            can(&bob, Describe, Resource::Topic("public")),
            "User:* is everyone"
        );
        assert!(!can(&bob, Read, Resource::Topic("public")));
        assert!(
            can(&bob, Delete, Resource::Group("any")),
            "All on every group"
        );
        assert!(!can(&bob, Create, Resource::Cluster));
    }

    #[test]
    fn a_transactional_id_is_a_resource_of_its_own() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let acls: BTreeSet<AclBinding> = [
            acl(Allow, "User:app", Write, Topic, "*", Literal),
            acl(Allow, "User:app", Write, TransactionalId, "etl-", Prefixed),
            acl(
                Deny,
                "User:app",
                Write,
                TransactionalId,
                "etl-billing",
                Literal,
            ),
        ]
        .into_iter()
        .collect();
        let app = Principal::user("app");
        let can = |op, r| decide(&acls, &app, op, r);
        assert!(can(Write, Resource::TransactionalId("etl-1")));
        assert!(
            can(Describe, Resource::TransactionalId("etl-1")),
            "Write implies Describe (FindCoordinator)"
        );
        assert!(!can(Write, Resource::TransactionalId("etl-billing")));
        assert!(
            !can(Write, Resource::TransactionalId("other")),
            "Write on every topic is not Write on every id"
        );
        let e = ApiError::new(Resource::TransactionalId("x").code(), "");
        assert_eq!(e.code, ErrorCode::TransactionalIdAuthorizationFailed);
        assert_eq!(
            Resource::TransactionalId("x").to_string(),
            "transactional id \"x\""
        );
    }

    #[test]
    fn superusers_and_a_disabled_authorizer_allow_everything() {
        let image = Arc::new(MetadataImage::default());
        let images = Arc::new(move || Arc::clone(&image));
        let metrics = Metrics::new();
        let on = Authorizer::new(
            true,
            vec![Principal::user("admin")],
            images.clone(),
            Arc::clone(&metrics),
        );
        assert!(on.allows(
            &Principal::user("admin"),
            Operation::Alter,
            Resource::Cluster
        ));
        let e = on
            .check(
                &Principal::user("eve"),
                Operation::Read,
                Resource::Topic("t"),
            )
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::TopicAuthorizationFailed);
        assert!(
            e.message.contains("User:eve may not read topic \"t\""),
            "{e:?}"
        );
        let off = Authorizer::new(false, Vec::new(), images, metrics);
        assert!(off.allows(&Principal::user("eve"), Operation::Alter, Resource::Cluster));
    }

    #[test]
    fn bad_acls_are_refused() {
        let mut a = acl(
            Permission::Allow,
            "alice",
            Operation::Read,
            ResourceType::Topic,
            "t",
            PatternType::Literal,
        );
        assert!(a.validate().unwrap_err().contains("User:NAME"));
        a.principal = "User:alice".into();
        assert!(a.validate().is_ok());
        a.operation = Operation::ClusterAction;
        assert!(a.validate().is_err());
    }
}
