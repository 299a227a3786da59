//! Consumer groups: finding the coordinator, membership (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup) and group administration (DescribeGroups, ListGroups, DeleteGroups).
//!
//! Why JoinGroup carries both subscribed topics and opaque protocol metadata: sluice
//! assigns partitions on the coordinator from the subscriptions (DESIGN §1), while the
//! protocols list and member metadata keep the door open to hosting a Kafka "classic" group
//! whose leader runs its own assignor and sends the result in SyncGroup.

use bytes::Bytes;

use crate::error_code::ErrorCode;
use crate::types::BrokerId;
use crate::wire::{wire_enum_i8, wire_struct};

use super::TopicPartitions;

wire_enum_i8! {
    /// What a coordinator is looked up for.
    pub enum CoordinatorType {
        /// A consumer group; the key is the group id.
        Group = 0,
        /// A transactional producer; the key is the transactional id.
        Transaction = 1,
    }
}

wire_struct! {
    /// Finds the coordinator of a group (or transactional id).
    pub struct FindCoordinatorRequest {
        /// The group id or transactional id.
        pub key: String,
        /// What the key names.
        pub key_type: CoordinatorType,
    }
}

wire_struct! {
    /// The coordinator's address.
    pub struct FindCoordinatorResponse {
        /// NONE, or why no coordinator is available (COORDINATOR_NOT_AVAILABLE...).
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// The coordinator's broker id, or -1.
        pub node_id: BrokerId,
        /// Its host.
        pub host: String,
        /// Its port.
        pub port: u16,
    }
}

wire_struct! {
    /// One group protocol a member supports (an assignor name and its metadata).
    pub struct JoinGroupProtocol {
        /// The protocol's name (`range`, `roundrobin`, or sluice's `server`).
        pub name: String,
        /// Protocol-specific metadata (for Kafka consumers, the subscription).
        pub metadata: Bytes,
    }
}

wire_struct! {
    /// Joins (or rejoins) a group.
    pub struct JoinGroupRequest {
        /// The group.
        pub group_id: String,
        /// The member is removed if the coordinator hears nothing for this long (ms).
        pub session_timeout_ms: i32,
        /// Longest time the coordinator waits for members to rejoin during a rebalance (ms).
        pub rebalance_timeout_ms: i32,
        /// The member's id; empty on the first join.
        pub member_id: String,
        /// A static member's instance id, if any.
        pub group_instance_id: Option<String>,
        /// The kind of group (`consumer`).
        pub protocol_type: String,
        /// Topics the member subscribes to (used by server-side assignment).
        pub subscribed_topics: Vec<String>,
        /// Protocols the member supports, in order of preference.
        pub protocols: Vec<JoinGroupProtocol>,
    }
}

wire_struct! {
    /// A member of the group, as sent to the group's leader.
    pub struct JoinGroupMember {
        /// The member's id.
        pub member_id: String,
        /// Its static instance id, if any.
        pub group_instance_id: Option<String>,
        /// Its metadata for the chosen protocol.
        pub metadata: Bytes,
    }
}

wire_struct! {
    /// The result of joining.
    pub struct JoinGroupResponse {
        /// NONE, or why the join failed (MEMBER_ID_REQUIRED, UNKNOWN_MEMBER_ID...).
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// The new generation of the group.
        pub generation_id: i32,
        /// The group's protocol type.
        pub protocol_type: Option<String>,
        /// The protocol chosen for this generation.
        pub protocol_name: Option<String>,
        /// The member id of the group's leader.
        pub leader: String,
        /// This member's id (assigned by the coordinator on the first join).
        pub member_id: String,
        /// Every member, for the leader only; empty for the others.
        pub members: Vec<JoinGroupMember>,
    }
}

wire_struct! {
    /// A classic group leader's assignment for one member.
    pub struct SyncGroupAssignment {
        /// The member.
        pub member_id: String,
        /// The assignment, in the protocol's format.
        pub assignment: Bytes,
    }
}

wire_struct! {
    /// Completes a rebalance and fetches this member's assignment.
    pub struct SyncGroupRequest {
        /// The group.
        pub group_id: String,
        /// The generation from JoinGroup.
        pub generation_id: i32,
        /// The member's id.
        pub member_id: String,
        /// Its static instance id, if any.
        pub group_instance_id: Option<String>,
        /// A classic leader's assignments; empty for followers and server-side assignment.
        pub assignments: Vec<SyncGroupAssignment>,
    }
}

wire_struct! {
    /// This member's assignment.
    pub struct SyncGroupResponse {
        /// NONE, or why the sync failed (REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION...).
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// The partitions this member consumes in this generation.
        pub assignment: Vec<TopicPartitions>,
    }
}

wire_struct! {
    /// Keeps a member's session alive.
    pub struct HeartbeatRequest {
        /// The group.
        pub group_id: String,
        /// The member's generation.
        pub generation_id: i32,
        /// The member's id.
        pub member_id: String,
        /// Its static instance id, if any.
        pub group_instance_id: Option<String>,
    }
}

wire_struct! {
    /// The heartbeat's outcome; REBALANCE_IN_PROGRESS tells the member to rejoin.
    pub struct HeartbeatResponse {
        /// NONE, or what the member must do.
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
    }
}

wire_struct! {
    /// A member leaving.
    pub struct LeavingMember {
        /// The member's id.
        pub member_id: String,
        /// Its static instance id, if any.
        pub group_instance_id: Option<String>,
        /// Why it leaves, for the coordinator's log.
        pub reason: Option<String>,
    }
}

wire_struct! {
    /// Removes members from a group (triggering a rebalance).
    pub struct LeaveGroupRequest {
        /// The group.
        pub group_id: String,
        /// The members leaving.
        pub members: Vec<LeavingMember>,
    }
}

wire_struct! {
    /// The outcome for one leaving member.
    pub struct LeavingMemberResponse {
        /// The member's id.
        pub member_id: String,
        /// Its static instance id, if any.
        pub group_instance_id: Option<String>,
        /// NONE, or why it could not leave (UNKNOWN_MEMBER_ID...).
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
    }
}

wire_struct! {
    /// Outcome of a LeaveGroup request.
    pub struct LeaveGroupResponse {
        /// NONE, or a group-level error.
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// One entry per leaving member.
        pub members: Vec<LeavingMemberResponse>,
    }
}

wire_struct! {
    /// Describes groups.
    pub struct DescribeGroupsRequest {
        /// The groups to describe.
        pub groups: Vec<String>,
    }
}

wire_struct! {
    /// A member of a described group.
    pub struct DescribedGroupMember {
        /// The member's id.
        pub member_id: String,
        /// Its static instance id, if any.
        pub group_instance_id: Option<String>,
        /// The client id it connected with.
        pub client_id: String,
        /// The host it connected from.
        pub client_host: String,
        /// The topics it subscribes to.
        pub subscription: Vec<String>,
        /// The partitions assigned to it in the current generation.
        pub assignment: Vec<TopicPartitions>,
    }
}

wire_struct! {
    /// One described group.
    pub struct DescribedGroup {
        /// NONE, or why it could not be described (NOT_COORDINATOR...).
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// The group's id.
        pub group_id: String,
        /// Its state: `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable`, `Dead`.
        pub group_state: String,
        /// Its protocol type (`consumer`), or empty.
        pub protocol_type: String,
        /// The protocol of the current generation, or empty.
        pub protocol_name: String,
        /// The current generation.
        pub generation_id: i32,
        /// The members.
        pub members: Vec<DescribedGroupMember>,
    }
}

wire_struct! {
    /// Descriptions of the requested groups.
    pub struct DescribeGroupsResponse {
        /// One entry per requested group.
        pub groups: Vec<DescribedGroup>,
    }
}

wire_struct! {
    /// Lists the groups a coordinator hosts.
    pub struct ListGroupsRequest {
        /// Only groups in these states; empty means all.
        pub states_filter: Vec<String>,
    }
}

wire_struct! {
    /// One listed group.
    pub struct ListedGroup {
        /// The group's id.
        pub group_id: String,
        /// Its protocol type.
        pub protocol_type: String,
        /// Its state.
        pub group_state: String,
        /// Its number of members.
        pub n_members: i32,
    }
}

wire_struct! {
    /// The groups this coordinator hosts.
    pub struct ListGroupsResponse {
        /// NONE, or why they could not be listed (COORDINATOR_LOAD_IN_PROGRESS...).
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// The groups.
        pub groups: Vec<ListedGroup>,
    }
}

wire_struct! {
    /// Deletes empty groups and their committed offsets.
    pub struct DeleteGroupsRequest {
        /// The groups to delete.
        pub group_ids: Vec<String>,
    }
}

wire_struct! {
    /// The outcome for one group.
    pub struct DeletableGroupResult {
        /// The group's id.
        pub group_id: String,
        /// NONE, or why it was not deleted (NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND...).
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
    }
}

wire_struct! {
    /// Per-group outcomes of a DeleteGroups request.
    pub struct DeleteGroupsResponse {
        /// One entry per requested group.
        pub results: Vec<DeletableGroupResult>,
    }
}
