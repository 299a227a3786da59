//! ACLs as the client sees them ([`crate::Admin::add_acls`]): Kafka's model. An ACL allows or
//! denies a principal an operation on a topic, a group or the cluster, named literally
//! (`*` for all) or by prefix. The broker enforces them when it runs with `--authorizer on`.

use std::fmt;

use sluice_protocol::messages::AclEntry;

/// What an ACL is about.
///
/// ```
/// use sluice_client::{Acl, AclOperation, AclResource};
/// // Every group whose name starts with "billing-" may be joined by bob.
/// let acl = Acl {
///     prefixed: true,
///     ..Acl::allow("User:bob", AclOperation::Read, AclResource::Group("billing-".into()))
/// };
/// assert_eq!(acl.to_string(), "allow User:bob read group billing- (prefixed)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AclResource {
    /// A topic, or every topic (`*`), or those starting with it (prefixed).
    Topic(String),
    /// A consumer group, likewise.
    Group(String),
    /// The cluster: topic creation, users and ACLs.
    Cluster,
    /// A transactional id, likewise: a transactional producer needs Write on its id.
    TransactionalId(String),
}

/// An operation an ACL allows or denies.
///
/// ```
/// use sluice_client::{Acl, AclOperation, AclResource};
/// let acl = Acl::allow("User:mallory", AclOperation::All, AclResource::Cluster).deny();
/// assert_eq!(acl.to_string(), "deny User:mallory all cluster");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclOperation {
    /// Every operation.
    All,
    /// Consume; join, commit to and read a group.
    Read,
    /// Produce.
    Write,
    /// Create topics.
    Create,
    /// Delete topics or groups.
    Delete,
    /// Change topic configs; users and ACLs (on the cluster).
    Alter,
    /// See topics and groups; users and ACLs (on the cluster). Implied by Read, Write,
    /// Delete and Alter.
    Describe,
}

const OPERATIONS: [(AclOperation, &str, i8); 7] = [
    (AclOperation::All, "all", 2),
    (AclOperation::Read, "read", 3),
    (AclOperation::Write, "write", 4),
    (AclOperation::Create, "create", 5),
    (AclOperation::Delete, "delete", 6),
    (AclOperation::Alter, "alter", 7),
    (AclOperation::Describe, "describe", 8),
];

impl AclOperation {
    /// The lower-case name (`read`).
    pub fn name(self) -> &'static str {
        OPERATIONS
            .iter()
            .find(|(op, _, _)| *op == self)
            .map_or("?", |(_, n, _)| n)
    }

    /// The operation named `name` (case-insensitive).
    ///
    /// ```
    /// use sluice_client::AclOperation;
    /// assert_eq!(AclOperation::from_name("Write"), Some(AclOperation::Write));
    /// ```
    pub fn from_name(name: &str) -> Option<AclOperation> {
        OPERATIONS
            .iter()
            .find(|(_, n, _)| n.eq_ignore_ascii_case(name))
            .map(|(op, _, _)| *op)
    }

    fn code(self) -> i8 {
        OPERATIONS
            .iter()
            .find(|(op, _, _)| *op == self)
            .map_or(0, |(_, _, c)| *c)
    }
}

/// One ACL.
///
/// ```
/// use sluice_client::{Acl, AclOperation, AclResource};
/// let acl = Acl::allow("User:alice", AclOperation::Write, AclResource::Topic("orders".into()));
/// assert_eq!(acl.to_string(), "allow User:alice write topic orders");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    /// `User:NAME`, or `User:*` for everyone.
    pub principal: String,
    /// Allow (`true`) or deny.
    pub allow: bool,
    /// The operation.
    pub operation: AclOperation,
    /// The resource.
    pub resource: AclResource,
    /// Whether the resource name is a prefix.
    pub prefixed: bool,
}

impl Acl {
    /// An ACL allowing `principal` to do `operation` on `resource` (literal name).
    pub fn allow(principal: &str, operation: AclOperation, resource: AclResource) -> Acl {
        Acl {
            principal: principal.to_owned(),
            allow: true,
            operation,
            resource,
            prefixed: false,
        }
    }

    /// The same ACL, denying.
    pub fn deny(self) -> Acl {
        Acl {
            allow: false,
            ..self
        }
    }

    pub(crate) fn to_entry(&self) -> AclEntry {
        let (resource_type, resource_name) = match &self.resource {
            AclResource::Topic(name) => (2, name.clone()),
            AclResource::Group(name) => (3, name.clone()),
            AclResource::Cluster => (4, "kafka-cluster".to_owned()),
            AclResource::TransactionalId(name) => (5, name.clone()),
        };
        AclEntry {
            resource_type,
            resource_name,
            pattern_type: if self.prefixed { 4 } else { 3 },
            principal: self.principal.clone(),
            operation: self.operation.code(),
            permission_type: if self.allow { 3 } else { 2 },
        }
    }

    /// The ACL of a wire entry; `None` for one this client cannot show (an operation it
    /// does not know, such as the brokers' cluster action).
    pub(crate) fn from_entry(entry: &AclEntry) -> Option<Acl> {
        let resource = match entry.resource_type {
            2 => AclResource::Topic(entry.resource_name.clone()),
            3 => AclResource::Group(entry.resource_name.clone()),
            4 => AclResource::Cluster,
            5 => AclResource::TransactionalId(entry.resource_name.clone()),
            _ => return None,
        };
        let operation = OPERATIONS
            .iter()
            .find(|(_, _, c)| *c == entry.operation)
            .map(|(op, _, _)| *op)?;
        Some(Acl {
            principal: entry.principal.clone(),
            allow: entry.permission_type == 3,
            operation,
            resource,
            prefixed: entry.pattern_type == 4,
        })
    }
}

impl fmt::Display for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let permission = if self.allow { "allow" } else { "deny" };
        let prefixed = if self.prefixed { " (prefixed)" } else { "" };
        let resource = match &self.resource {
            AclResource::Topic(name) => format!("topic {name}{prefixed}"),
            AclResource::Group(name) => format!("group {name}{prefixed}"),
            AclResource::Cluster => "cluster".to_owned(),
            AclResource::TransactionalId(name) => format!("transactional id {name}{prefixed}"),
        };
        write!(
            f,
            "{permission} {} {} {resource}",
            self.principal,
            self.operation.name()
        )
    }
}
