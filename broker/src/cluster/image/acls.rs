//! The ACLs of the metadata image (issue 22): Kafka's model, as data. Who decides with
//! them is `crate::security::acl::Authorizer`.

use serde::{Deserialize, Serialize};

/// What an ACL is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResourceType {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// The cluster (topic creation, users, ACLs, broker-to-broker apis).
    Cluster,
    /// A transactional id: using it (InitProducerId, the transaction apis, transactional
    /// produce) needs Write on it, finding its coordinator Describe (Kafka's).
    TransactionalId,
}

/// How an ACL's resource name matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PatternType {
    /// The name itself (`*`: every resource of the type).
    Literal,
    /// Every name that starts with it.
    Prefixed,
}

/// An operation on a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operation {
    /// Every operation.
    All,
    /// Consume from a topic; join, commit to and read a group.
    Read,
    /// Produce to a topic.
    Write,
    /// Create a topic (on the topic, or on the cluster for any topic).
    Create,
    /// Delete a topic or a group.
    Delete,
    /// Change a topic's configs; change users and ACLs (on the cluster).
    Alter,
    /// See a topic, a group, or users and ACLs (on the cluster).
    Describe,
    /// The broker-to-broker apis (replication, Raft, the controller's): brokers only.
    ClusterAction,
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    /// Denies, whatever else allows.
    Deny,
    /// Allows, unless something denies.
    Allow,
}

/// One ACL.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    /// The resource's type.
    pub resource_type: ResourceType,
    /// The resource's name (`kafka-cluster` for the cluster, as Kafka names it).
    pub resource_name: String,
    /// How the name matches.
    pub pattern_type: PatternType,
    /// `User:alice`, or `User:*` for everyone.
    pub principal: String,
    /// The operation.
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
}

/// The cluster resource's name (Kafka's).
pub const CLUSTER_RESOURCE: &str = "kafka-cluster";

impl Operation {
    /// Every operation but `All`, by name.
    pub const NAMED: [Operation; 7] = [
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Alter,
        Operation::Describe,
        Operation::ClusterAction,
    ];

    /// The lower-case name (`read`), as the CLI takes it.
    pub fn name(self) -> &'static str {
        match self {
            Operation::All => "all",
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Create => "create",
            Operation::Delete => "delete",
            Operation::Alter => "alter",
            Operation::Describe => "describe",
            Operation::ClusterAction => "cluster_action",
        }
    }

    /// Whether an ACL for `self` covers a request for `wanted`.
    pub fn covers(self, wanted: Operation) -> bool {
        self == Operation::All
            || self == wanted
            || (wanted == Operation::Describe
                && matches!(
                    self,
                    Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
                ))
    }
}

impl AclBinding {
    /// Whether the ACL is about the resource of `resource_type` named `name`.
    pub fn matches_resource(&self, resource_type: ResourceType, name: &str) -> bool {
        if self.resource_type != resource_type {
            return false;
        }
        match self.pattern_type {
            PatternType::Literal => self.resource_name == "*" || self.resource_name == name,
            PatternType::Prefixed => name.starts_with(&self.resource_name),
        }
    }

    /// Whether the ACL is about `principal` (`User:alice`).
    pub fn matches_principal(&self, principal: &str) -> bool {
        self.principal == "User:*" || self.principal == principal
    }

    /// Checks a new ACL: a principal `User:NAME`, a name, no prefixed `*`, a cluster ACL
    /// on the cluster's name.
    pub fn validate(&self) -> Result<(), String> {
        let Some(name) = self.principal.strip_prefix("User:") else {
            return Err(format!(
                "principal {:?} is not User:NAME (or User:* for everyone)",
                self.principal
            ));
        };
        if name.is_empty() {
            return Err("the principal User: has no name".into());
        }
        if self.resource_name.is_empty() {
            return Err("the resource name is empty".into());
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_RESOURCE {
            return Err(format!("the cluster resource is named {CLUSTER_RESOURCE}"));
        }
        if self.operation == Operation::ClusterAction && self.resource_type != ResourceType::Cluster
        {
            return Err("cluster_action applies to the cluster only".into());
        }
        Ok(())
    }
}

/// Kafka's numbers for the ACL fields (AclEntry on the wire, Kafka's ACL apis).
pub mod kafka_codes {
    use super::{Operation, PatternType, Permission, ResourceType};

    /// Resource type: 2 topic, 3 group, 4 cluster, 5 transactional id.
    pub fn resource_type(t: ResourceType) -> i8 {
        match t {
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
        }
    }

    /// The resource type of Kafka's number.
    pub fn to_resource_type(code: i8) -> Option<ResourceType> {
        [
            ResourceType::Topic,
            ResourceType::Group,
            ResourceType::Cluster,
            ResourceType::TransactionalId,
        ]
        .into_iter()
        .find(|t| resource_type(*t) == code)
    }

    /// Pattern type: 3 literal, 4 prefixed.
    pub fn pattern_type(t: PatternType) -> i8 {
        match t {
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }

    /// The pattern type of Kafka's number.
    pub fn to_pattern_type(code: i8) -> Option<PatternType> {
        [PatternType::Literal, PatternType::Prefixed]
            .into_iter()
            .find(|t| pattern_type(*t) == code)
    }

    /// Operation: 2 all, 3 read, 4 write, 5 create, 6 delete, 7 alter, 8 describe, 9
    /// cluster action.
    pub fn operation(op: Operation) -> i8 {
        match op {
            Operation::All => 2,
            Operation::Read => 3,
            Operation::Write => 4,
            Operation::Create => 5,
            Operation::Delete => 6,
            Operation::Alter => 7,
            Operation::Describe => 8,
            Operation::ClusterAction => 9,
        }
    }

    /// The operation of Kafka's number.
    pub fn to_operation(code: i8) -> Option<Operation> {
        std::iter::once(Operation::All)
            .chain(Operation::NAMED)
            .find(|op| operation(*op) == code)
    }

    /// Permission: 2 deny, 3 allow.
    pub fn permission(p: Permission) -> i8 {
        match p {
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }

    /// The permission of Kafka's number.
    pub fn to_permission(code: i8) -> Option<Permission> {
        [Permission::Deny, Permission::Allow]
            .into_iter()
            .find(|p| permission(*p) == code)
    }
}

impl AclBinding {
    /// The ACL as the wire carries it.
    pub fn to_entry(&self) -> sluice_protocol::messages::AclEntry {
        sluice_protocol::messages::AclEntry {
            resource_type: kafka_codes::resource_type(self.resource_type),
            resource_name: self.resource_name.clone(),
            pattern_type: kafka_codes::pattern_type(self.pattern_type),
            principal: self.principal.clone(),
            operation: kafka_codes::operation(self.operation),
            permission_type: kafka_codes::permission(self.permission),
        }
    }

    /// The ACL the wire carries, or what is wrong with its numbers.
    pub fn from_entry(entry: &sluice_protocol::messages::AclEntry) -> Result<AclBinding, String> {
        let bad = |what: &str, code: i8| format!("{what} {code} is not one sluice has");
        Ok(AclBinding {
            resource_type: kafka_codes::to_resource_type(entry.resource_type)
                .ok_or_else(|| bad("resource type", entry.resource_type))?,
            resource_name: entry.resource_name.clone(),
            pattern_type: kafka_codes::to_pattern_type(entry.pattern_type)
                .ok_or_else(|| bad("pattern type", entry.pattern_type))?,
            principal: entry.principal.clone(),
            operation: kafka_codes::to_operation(entry.operation)
                .ok_or_else(|| bad("operation", entry.operation))?,
            permission: kafka_codes::to_permission(entry.permission_type)
                .ok_or_else(|| bad("permission", entry.permission_type))?,
        })
    }
}
