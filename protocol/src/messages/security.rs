//! Authentication and its administration: SaslHandshake and SaslAuthenticate (a
//! connection logs in, Kafka's exchange: the mechanism first, then its messages as opaque
//! bytes), AlterUserScramCredentials and DescribeUserScramCredentials (SCRAM users, kept
//! in the cluster metadata). The SCRAM messages themselves are `crate::scram`'s.

use bytes::Bytes;

use crate::error_code::ErrorCode;
use crate::wire::wire_struct;

wire_struct! {
    /// A connection names the SASL mechanism it will log in with.
    pub struct SaslHandshakeRequest {
        /// `SCRAM-SHA-256`, `SCRAM-SHA-512` or `PLAIN`.
        pub mechanism: String,
    }
}

wire_struct! {
    /// Whether the mechanism is offered, and which are.
    pub struct SaslHandshakeResponse {
        /// NONE, UNSUPPORTED_SASL_MECHANISM or ILLEGAL_SASL_STATE.
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// The mechanisms this listener offers.
        pub mechanisms: Vec<String>,
    }
}

wire_struct! {
    /// One message of the mechanism's exchange.
    pub struct SaslAuthenticateRequest {
        /// The mechanism's bytes (a SCRAM message, or PLAIN's `\0user\0password`).
        pub auth_bytes: Bytes,
    }
}

wire_struct! {
    /// The server's next message of the exchange.
    pub struct SaslAuthenticateResponse {
        /// NONE, SASL_AUTHENTICATION_FAILED or ILLEGAL_SASL_STATE.
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// The mechanism's bytes.
        pub auth_bytes: Bytes,
        /// How long the session may last, in milliseconds (0: as long as the connection).
        pub session_lifetime_ms: i64,
    }
}

wire_struct! {
    /// A user's credential of one mechanism to remove.
    pub struct ScramCredentialDeletion {
        /// The user.
        pub name: String,
        /// `SCRAM-SHA-256` or `SCRAM-SHA-512`.
        pub mechanism: String,
    }
}

wire_struct! {
    /// A user's credential of one mechanism to create or replace. The client salts the
    /// password (PBKDF2 with the mechanism's HMAC), so the password never travels.
    pub struct ScramCredentialUpsertion {
        /// The user.
        pub name: String,
        /// `SCRAM-SHA-256` or `SCRAM-SHA-512`.
        pub mechanism: String,
        /// PBKDF2 iterations (4096 to 16384).
        pub iterations: i32,
        /// The salt.
        pub salt: Bytes,
        /// `Hi(password, salt, iterations)`.
        pub salted_password: Bytes,
    }
}

wire_struct! {
    /// Creates, replaces or removes SCRAM credentials.
    pub struct AlterUserScramCredentialsRequest {
        /// Credentials to remove.
        pub deletions: Vec<ScramCredentialDeletion>,
        /// Credentials to create or replace.
        pub upsertions: Vec<ScramCredentialUpsertion>,
    }
}

wire_struct! {
    /// The outcome for one user.
    pub struct AlterUserScramCredentialsResult {
        /// The user.
        pub user: String,
        /// NONE, or why the change was refused.
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
    }
}

wire_struct! {
    /// One outcome per deletion and upsertion, in request order.
    pub struct AlterUserScramCredentialsResponse {
        /// The outcomes.
        pub results: Vec<AlterUserScramCredentialsResult>,
    }
}

wire_struct! {
    /// Lists SCRAM users.
    pub struct DescribeUserScramCredentialsRequest {
        /// The users to describe, or null for all.
        pub users: Option<Vec<String>>,
    }
}

wire_struct! {
    /// A mechanism a user has a credential for.
    pub struct CredentialInfo {
        /// `SCRAM-SHA-256` or `SCRAM-SHA-512`.
        pub mechanism: String,
        /// Its PBKDF2 iterations.
        pub iterations: i32,
    }
}

wire_struct! {
    /// One user.
    pub struct DescribedUser {
        /// The user.
        pub user: String,
        /// NONE, or RESOURCE_NOT_FOUND for a named user that has no credential.
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// Its credentials (never the keys).
        pub credentials: Vec<CredentialInfo>,
    }
}

wire_struct! {
    /// The users.
    pub struct DescribeUserScramCredentialsResponse {
        /// One entry per user, sorted by name.
        pub users: Vec<DescribedUser>,
    }
}

wire_struct! {
    /// One ACL, in Kafka's numbers: resource type (2 topic, 3 group, 4 cluster), pattern
    /// type (3 literal, 4 prefixed), operation (2 all, 3 read, 4 write, 5 create, 6
    /// delete, 7 alter, 8 describe, 9 cluster action), permission (2 deny, 3 allow).
    pub struct AclEntry {
        /// The resource's type.
        pub resource_type: i8,
        /// The resource's name (`kafka-cluster` for the cluster; `*` for every one).
        pub resource_name: String,
        /// Literal or prefixed.
        pub pattern_type: i8,
        /// `User:NAME`, or `User:*`.
        pub principal: String,
        /// The operation.
        pub operation: i8,
        /// Allow or deny.
        pub permission_type: i8,
    }
}

wire_struct! {
    /// Adds ACLs.
    pub struct CreateAclsRequest {
        /// The ACLs.
        pub creations: Vec<AclEntry>,
    }
}

wire_struct! {
    /// The outcome of one ACL change.
    pub struct AclResult {
        /// NONE, or why the ACL was refused.
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
    }
}

wire_struct! {
    /// One outcome per ACL, in request order.
    pub struct CreateAclsResponse {
        /// The outcomes.
        pub results: Vec<AclResult>,
    }
}

wire_struct! {
    /// Removes ACLs, each exactly as it was added.
    pub struct DeleteAclsRequest {
        /// The ACLs.
        pub deletions: Vec<AclEntry>,
    }
}

wire_struct! {
    /// One outcome per ACL, in request order.
    pub struct DeleteAclsResponse {
        /// The outcomes.
        pub results: Vec<AclResult>,
    }
}

wire_struct! {
    /// Lists every ACL.
    pub struct DescribeAclsRequest {
        /// Only the ACLs of this principal, or null for all.
        pub principal: Option<String>,
    }
}

wire_struct! {
    /// The ACLs.
    pub struct DescribeAclsResponse {
        /// Every ACL (of the principal asked about), sorted.
        pub acls: Vec<AclEntry>,
    }
}
