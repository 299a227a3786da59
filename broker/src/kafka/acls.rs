//! ACL administration over the Kafka protocol: CreateAcls, DescribeAcls and DeleteAcls
//! (`kafka-acls.sh`, the admin clients' `create_acls` / `describe_acls` / `delete_acls`),
//! on [`crate::services::acls`]. Kafka's bindings and filters are translated to sluice's
//! ACLs, which are Kafka's model without hosts: a binding for a host other than `*` is
//! refused, and every ACL is described with host `*`. Operations sluice does not decide by
//! (IDEMPOTENT_WRITE, DESCRIBE_CONFIGS, ALTER_CONFIGS, the token ones) are refused too,
//! each binding with its own error.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    ApiKey, CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;

use super::{kafka_error, kafka_str};
use crate::cluster::image::acls::kafka_codes;
use crate::error::ApiError;
use crate::security::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};
use crate::security::Principal;
use crate::services::acls::Acls;

/// A filter field's "any value" (resource type, pattern type, operation, permission).
const ANY: i8 = 1;
/// A pattern-type filter's "every ACL that applies to the named resource".
const MATCH: i8 = 2;
/// The only host sluice's ACLs have.
const ANY_HOST: &str = "*";

/// CreateAcls: each binding added, or refused with its reason. The valid ones go to the
/// controller in one change, so they are added together or not at all.
pub async fn create_acls(
    service: &Acls,
    principal: &Principal,
    request: CreateAclsRequest,
) -> ResponseKind {
    let parsed: Vec<Result<AclBinding, ApiError>> = request
        .creations
        .iter()
        .map(|c| {
            binding(
                c.resource_type,
                c.resource_name.as_str(),
                c.resource_pattern_type,
                c.principal.as_str(),
                c.host.as_str(),
                c.operation,
                c.permission_type,
            )
        })
        .collect();
    let valid: Vec<AclBinding> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
    let changed = service.change(principal, valid, true).await;
    let results = parsed
        .into_iter()
        .map(|p| {
            let result = AclCreationResult::default();
            match p.and(changed.clone()) {
                Ok(()) => result,
                Err(e) => {
                    let (code, message) = kafka_error(ApiKey::CreateAcls, &e);
                    result.with_error_code(code).with_error_message(message)
                }
            }
        })
        .collect();
    ResponseKind::CreateAcls(CreateAclsResponse::default().with_results(results))
}

/// DescribeAcls: the ACLs the filter matches, grouped by resource pattern.
pub fn describe_acls(
    service: &Acls,
    principal: &Principal,
    request: DescribeAclsRequest,
) -> ResponseKind {
    let filter = Filter::parse(
        request.resource_type_filter,
        request.resource_name_filter.as_ref().map(StrBytes::as_str),
        request.pattern_type_filter,
        request.principal_filter.as_ref().map(StrBytes::as_str),
        request.host_filter.as_ref().map(StrBytes::as_str),
        request.operation,
        request.permission_type,
    );
    let listed = filter.and_then(|filter| {
        let acls = service.list(principal, None)?;
        Ok(acls.into_iter().filter(|acl| filter.matches(acl)).collect())
    });
    let response = match listed {
        Ok(acls) => DescribeAclsResponse::default().with_resources(by_resource(acls)),
        Err(e) => {
            let (code, message) = kafka_error(ApiKey::DescribeAcls, &e);
            DescribeAclsResponse::default()
                .with_error_code(code)
                .with_error_message(message)
        }
    };
    ResponseKind::DescribeAcls(response)
}

/// DeleteAcls: every ACL any filter matches goes, in one change; each filter's result
/// lists the ACLs it matched.
pub async fn delete_acls(
    service: &Acls,
    principal: &Principal,
    request: DeleteAclsRequest,
) -> ResponseKind {
    let current = service.list(principal, None);
    let matched: Vec<Result<Vec<AclBinding>, ApiError>> = request
        .filters
        .iter()
        .map(|f| {
            let filter = Filter::parse(
                f.resource_type_filter,
                f.resource_name_filter.as_ref().map(StrBytes::as_str),
                f.pattern_type_filter,
                f.principal_filter.as_ref().map(StrBytes::as_str),
                f.host_filter.as_ref().map(StrBytes::as_str),
                f.operation,
                f.permission_type,
            )?;
            let current = current.as_ref().map_err(Clone::clone)?;
            Ok(current
                .iter()
                .filter(|acl| filter.matches(acl))
                .cloned()
                .collect())
        })
        .collect();
    let mut doomed: Vec<AclBinding> = matched.iter().flatten().flatten().cloned().collect();
    doomed.sort();
    doomed.dedup();
    let removed = service.change(principal, doomed, false).await;
    let results = matched
        .into_iter()
        .map(|m| {
            let result = DeleteAclsFilterResult::default();
            match m.and_then(|acls| removed.clone().map(|()| acls)) {
                Ok(acls) => result.with_matching_acls(acls.iter().map(matching_acl).collect()),
                Err(e) => {
                    let (code, message) = kafka_error(ApiKey::DeleteAcls, &e);
                    result.with_error_code(code).with_error_message(message)
                }
            }
        })
        .collect();
    ResponseKind::DeleteAcls(DeleteAclsResponse::default().with_filter_results(results))
}

/// A Kafka ACL binding as sluice's ACL, or why it cannot be one.
fn binding(
    resource_type: i8,
    resource_name: &str,
    pattern_type: i8,
    principal: &str,
    host: &str,
    operation: i8,
    permission: i8,
) -> Result<AclBinding, ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::InvalidRequest, message);
    if host != ANY_HOST {
        return Err(invalid(format!(
            "sluice's ACLs apply from every host; use host \"*\", not {host:?}"
        )));
    }
    let acl = AclBinding {
        resource_type: kafka_codes::to_resource_type(resource_type).ok_or_else(|| {
            invalid(format!(
                "resource type {resource_type} is not one sluice decides by: use topic (2), \
                 group (3), cluster (4) or transactional id (5)"
            ))
        })?,
        resource_name: resource_name.to_owned(),
        pattern_type: kafka_codes::to_pattern_type(pattern_type).ok_or_else(|| {
            invalid(format!(
                "pattern type {pattern_type} cannot be added: use literal (3) or prefixed (4)"
            ))
        })?,
        principal: principal.to_owned(),
        operation: kafka_codes::to_operation(operation).ok_or_else(|| {
            invalid(format!(
                "operation {operation} is not one sluice decides by: use all, read, write, \
                 create, delete, alter, describe or cluster_action (Write covers idempotent \
                 produce, Describe and Alter a topic's configs)"
            ))
        })?,
        permission: kafka_codes::to_permission(permission).ok_or_else(|| {
            invalid(format!(
                "permission {permission} cannot be added: use allow (3) or deny (2)"
            ))
        })?,
    };
    acl.validate().map_err(invalid)?;
    Ok(acl)
}

/// A DescribeAcls or DeleteAcls filter: `None` fields match anything.
struct Filter {
    resource_type: Option<ResourceType>,
    resource_name: Option<String>,
    /// `None` for ANY; `Some(None)` for MATCH; else the pattern type itself.
    pattern_type: Option<Option<PatternType>>,
    principal: Option<String>,
    /// A host other than `*` matches nothing: sluice's ACLs have none.
    matches_host: bool,
    operation: Option<Operation>,
    permission: Option<Permission>,
}

impl Filter {
    fn parse(
        resource_type: i8,
        resource_name: Option<&str>,
        pattern_type: i8,
        principal: Option<&str>,
        host: Option<&str>,
        operation: i8,
        permission: i8,
    ) -> Result<Filter, ApiError> {
        Ok(Filter {
            resource_type: any_or(
                resource_type,
                kafka_codes::to_resource_type,
                "resource type",
            )?,
            resource_name: resource_name.map(str::to_owned),
            pattern_type: match pattern_type {
                ANY => None,
                MATCH => Some(None),
                code => Some(Some(
                    kafka_codes::to_pattern_type(code)
                        .ok_or_else(|| unknown_in_filter("pattern type", code))?,
                )),
            },
            principal: principal.map(str::to_owned),
            matches_host: host.is_none_or(|h| h == ANY_HOST),
            operation: any_or(operation, kafka_codes::to_operation, "operation")?,
            permission: any_or(permission, kafka_codes::to_permission, "permission")?,
        })
    }

    /// Kafka's `AclBindingFilter.matches`.
    fn matches(&self, acl: &AclBinding) -> bool {
        let resource = self.resource_type.is_none_or(|t| t == acl.resource_type)
            && match (&self.pattern_type, &self.resource_name) {
                // MATCH: the ACLs that apply to the resource named.
                (Some(None), Some(name)) => acl.matches_resource(acl.resource_type, name),
                (Some(None), None) => true,
                (pattern, name) => {
                    pattern.is_none_or(|p| p == Some(acl.pattern_type))
                        && name.as_ref().is_none_or(|n| *n == acl.resource_name)
                }
            };
        resource
            && self.matches_host
            && self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.operation.is_none_or(|o| o == acl.operation)
            && self.permission.is_none_or(|p| p == acl.permission)
    }
}

/// A filter field: `None` for ANY, else the value of Kafka's number.
fn any_or<T>(code: i8, parse: fn(i8) -> Option<T>, what: &str) -> Result<Option<T>, ApiError> {
    match code {
        ANY => Ok(None),
        code => parse(code)
            .map(Some)
            .ok_or_else(|| unknown_in_filter(what, code)),
    }
}

fn unknown_in_filter(what: &str, code: i8) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidRequest,
        format!("a filter's {what} {code} is not one sluice knows"),
    )
}

/// ACLs grouped by their resource pattern, as DescribeAcls answers.
fn by_resource(acls: Vec<AclBinding>) -> Vec<DescribeAclsResource> {
    let mut grouped: BTreeMap<(ResourceType, String, PatternType), Vec<AclDescription>> =
        BTreeMap::new();
    for acl in acls {
        grouped
            .entry((
                acl.resource_type,
                acl.resource_name.clone(),
                acl.pattern_type,
            ))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(kafka_str(acl.principal))
                    .with_host(StrBytes::from_static_str(ANY_HOST))
                    .with_operation(kafka_codes::operation(acl.operation))
                    .with_permission_type(kafka_codes::permission(acl.permission)),
            );
    }
    grouped
        .into_iter()
        .map(|((resource_type, name, pattern_type), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(kafka_codes::resource_type(resource_type))
                .with_resource_name(kafka_str(name))
                .with_pattern_type(kafka_codes::pattern_type(pattern_type))
                .with_acls(acls)
        })
        .collect()
}

fn matching_acl(acl: &AclBinding) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_resource_type(kafka_codes::resource_type(acl.resource_type))
        .with_resource_name(kafka_str(acl.resource_name.clone()))
        .with_pattern_type(kafka_codes::pattern_type(acl.pattern_type))
        .with_principal(kafka_str(acl.principal.clone()))
        .with_host(StrBytes::from_static_str(ANY_HOST))
        .with_operation(kafka_codes::operation(acl.operation))
        .with_permission_type(kafka_codes::permission(acl.permission))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        resource_type: ResourceType,
        name: &str,
        pattern: PatternType,
        op: Operation,
    ) -> AclBinding {
        AclBinding {
            resource_type,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: "User:bob".into(),
            operation: op,
            permission: Permission::Allow,
        }
    }

    fn filter(resource_type: i8, name: Option<&str>, pattern: i8, host: Option<&str>) -> Filter {
        Filter::parse(
            resource_type,
            name,
            pattern,
            Some("User:bob"),
            host,
            ANY,
            ANY,
        )
        .unwrap()
    }

    #[test]
    fn filters_match_as_kafkas_acl_binding_filters() {
        let literal = acl(
            ResourceType::Topic,
            "orders",
            PatternType::Literal,
            Operation::Read,
        );
        let wildcard = acl(
            ResourceType::Topic,
            "*",
            PatternType::Literal,
            Operation::Read,
        );
        let prefixed = acl(
            ResourceType::Topic,
            "ord",
            PatternType::Prefixed,
            Operation::Write,
        );
        let group = acl(
            ResourceType::Group,
            "orders",
            PatternType::Literal,
            Operation::Read,
        );
        let all = [&literal, &wildcard, &prefixed, &group];
        let matched = |f: Filter| -> Vec<&AclBinding> {
            all.iter().copied().filter(|a| f.matches(a)).collect()
        };
        // ANY of everything.
        assert_eq!(matched(filter(ANY, None, ANY, None)).len(), 4);
        // A topic's ACLs by exact pattern: the literal one only.
        assert_eq!(matched(filter(2, Some("orders"), 3, None)), [&literal]);
        // MATCH: every ACL that applies to topic "orders".
        assert_eq!(
            matched(filter(2, Some("orders"), MATCH, None)),
            [&literal, &wildcard, &prefixed]
        );
        // ANY pattern type with a name: that name exactly, whatever its pattern.
        assert_eq!(matched(filter(2, Some("ord"), ANY, None)), [&prefixed]);
        // A host other than "*" matches nothing: sluice's ACLs have no host.
        assert!(matched(filter(ANY, None, ANY, Some("10.0.0.1"))).is_empty());
        assert_eq!(matched(filter(ANY, None, ANY, Some("*"))).len(), 4);
        // Another principal, operation or permission narrows it.
        let f = Filter::parse(ANY, None, ANY, Some("User:alice"), None, ANY, ANY).unwrap();
        assert!(matched(f).is_empty());
        let f = Filter::parse(ANY, None, ANY, None, None, 4, ANY).unwrap();
        assert_eq!(matched(f), [&prefixed]);
        let f = Filter::parse(ANY, None, ANY, None, None, ANY, 2).unwrap();
        assert!(matched(f).is_empty());
        assert!(Filter::parse(9, None, ANY, None, None, ANY, ANY).is_err());
    }

    #[test]
    fn bindings_sluice_cannot_decide_by_are_refused_with_what_to_use() {
        let bind = |host: &str, op: i8, pattern: i8| {
            binding(2, "orders", pattern, "User:bob", host, op, 3)
        };
        assert_eq!(
            bind("*", 3, 3).unwrap(),
            acl(
                ResourceType::Topic,
                "orders",
                PatternType::Literal,
                Operation::Read
            )
        );
        let refused = |e: Result<AclBinding, ApiError>| e.unwrap_err().message;
        assert!(refused(bind("10.0.0.1", 3, 3)).contains("use host \"*\""));
        // IDEMPOTENT_WRITE (12): Write covers it in sluice, as in Kafka 3+.
        assert!(refused(bind("*", 12, 3)).contains("Write covers idempotent produce"));
        assert!(refused(bind("*", 3, MATCH)).contains("literal (3) or prefixed (4)"));
        assert!(refused(binding(2, "t", 3, "bob", "*", 3, 3)).contains("User:NAME"));
    }
}
