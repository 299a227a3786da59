//! Consumer groups, the client side: finding a group's coordinator and talking to it
//! (`coordinator`), membership (`membership`: join, sync, heartbeats, leave), committed
//! offsets (`offsets`: commit and fetch), and group administration (`admin`, methods of
//! [`crate::Admin`]). The group-managed [`crate::Consumer`] drives them from `poll`
//! (see `consumer/group.rs`).
//!
//! The protocol is Kafka's "classic" group protocol with the assignment computed by the
//! coordinator (DESIGN §1): a member joins with its subscribed topics and the single
//! protocol `server`, and SyncGroup hands it its partitions. Rebalances are eager: before
//! a member rejoins it gives up every partition (committing first), so two members never
//! consume one partition in one generation.

mod admin;
pub(crate) mod coordinator;
mod membership;
mod offsets;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pub use admin::{
    GroupDescription, GroupListing, GroupMember, GroupPartitionLag, GroupPartitionOffset,
    ResetTarget,
};
pub(crate) use coordinator::Coordinator;
pub(crate) use membership::{
    join, leave, Generation, JoinOutcome, MemberParams, Rejoin, RejoinSignal, SharedMemberId,
};
pub(crate) use offsets::{commit, fetch_committed, CommitOffsets};

use crate::error::{Error, Result};

/// Settings of a group-managed consumer ([`crate::Consumer::with_group`]).
///
/// ```
/// use std::time::Duration;
/// use sluice_client::GroupConfig;
/// let group = GroupConfig {
///     enable_auto_commit: false,
///     ..GroupConfig::new("billing")
/// };
/// assert_eq!(group.session_timeout, Duration::from_secs(10));
/// assert!(group.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// The group's id: consumers with the same id share the subscribed topics' partitions
    /// and its committed offsets.
    pub group_id: String,
    /// The coordinator removes a member it has not heard from (heartbeats) for this long,
    /// and gives its partitions to the others. Default 10 s.
    pub session_timeout: Duration,
    /// How often the background heartbeat tells the coordinator this member is alive (and
    /// learns that a rebalance started). At most a third of `session_timeout`. Default 1 s.
    pub heartbeat_interval: Duration,
    /// How long the coordinator waits for every member to rejoin during a rebalance; a
    /// member that does not call `poll` within it is removed from the group. Default 60 s.
    pub rebalance_timeout: Duration,
    /// Whether `poll` commits the positions of the records it returned every
    /// `auto_commit_interval`, before partitions are revoked, and `close` before leaving.
    /// Default true.
    pub enable_auto_commit: bool,
    /// How often auto-commit commits. Default 5 s.
    pub auto_commit_interval: Duration,
}

impl GroupConfig {
    /// The defaults for group `group_id`.
    pub fn new(group_id: impl Into<String>) -> GroupConfig {
        GroupConfig {
            group_id: group_id.into(),
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            rebalance_timeout: Duration::from_secs(60),
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
        }
    }

    /// Refuses settings the protocol cannot carry or that defeat themselves: an empty
    /// group id, timeouts that do not fit in an `i32` of milliseconds, a heartbeat
    /// interval above a third of the session timeout (two lost heartbeats would expire
    /// the session), a zero auto-commit interval.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidArgument(reason));
        if self.group_id.is_empty() {
            return invalid("the group id is empty; name the consumer group".to_owned());
        }
        for (name, value) in [
            ("session_timeout", self.session_timeout),
            ("rebalance_timeout", self.rebalance_timeout),
        ] {
            if value.is_zero() || i32::try_from(value.as_millis()).is_err() {
                return invalid(format!("{name} must be between 1 ms and {} ms", i32::MAX));
            }
        }
        if self.heartbeat_interval.is_zero()
            || self.heartbeat_interval.saturating_mul(3) > self.session_timeout
        {
            return invalid(format!(
                "heartbeat_interval ({} ms) must be above zero and at most a third of session_timeout ({} ms)",
                self.heartbeat_interval.as_millis(),
                self.session_timeout.as_millis()
            ));
        }
        if self.enable_auto_commit && self.auto_commit_interval.is_zero() {
            return invalid("auto_commit_interval must be above zero".to_owned());
        }
        Ok(())
    }
}

/// Milliseconds of a validated timeout, for the wire.
/// An assignment as the wire carries it (partitions by topic) as sorted, distinct
/// partitions.
pub(crate) fn flatten_assignment(
    assignment: Vec<sluice_protocol::messages::TopicPartitions>,
) -> Vec<crate::TopicPartition> {
    let mut flat: Vec<crate::TopicPartition> = assignment
        .into_iter()
        .flat_map(|t| {
            t.partitions
                .into_iter()
                .map(move |p| crate::TopicPartition::new(t.topic.clone(), p))
        })
        .collect();
    flat.sort();
    flat.dedup();
    flat
}

pub(crate) fn millis_i32(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// A spawned task that is aborted when its handle is dropped: the group's background work
/// (a join, heartbeats, a commit) must not outlive the consumer that started it.
#[derive(Debug)]
pub(crate) struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T: Send + 'static> AbortOnDrop<T> {
    /// Spawns `future` on the current runtime.
    pub fn spawn(future: impl Future<Output = T> + Send + 'static) -> AbortOnDrop<T> {
        AbortOnDrop(tokio::spawn(future))
    }
}

impl<T> AbortOnDrop<T> {
    /// Whether the task has finished (awaiting it then returns at once).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = T;

    /// The task's output. A panic in the task is resumed here; the task is never
    /// cancelled other than by dropping this handle, so cancellation cannot be observed.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match Pin::new(&mut self.0).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(output)) => Poll::Ready(output),
            Poll::Ready(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Poll::Ready(Err(e)) => panic!("a group task was cancelled while awaited: {e}"),
        }
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        let check = |config: GroupConfig, ok: bool| {
            assert_eq!(config.validate().is_ok(), ok, "{config:?}");
        };
        check(GroupConfig::new("g"), true);
        check(GroupConfig::new(""), false);
        check(
            GroupConfig {
                heartbeat_interval: Duration::from_secs(4),
                ..GroupConfig::new("g")
            },
            false,
        );
        check(
            GroupConfig {
                session_timeout: Duration::from_millis(300),
                heartbeat_interval: Duration::from_millis(100),
                ..GroupConfig::new("g")
            },
            true,
        );
        check(
            GroupConfig {
                rebalance_timeout: Duration::from_secs(u64::MAX / 4),
                ..GroupConfig::new("g")
            },
            false,
        );
        check(
            GroupConfig {
                auto_commit_interval: Duration::ZERO,
                ..GroupConfig::new("g")
            },
            false,
        );
    }
}
