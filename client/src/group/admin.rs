//! Group administration, as methods of [`Admin`]: what `sluice group ...` calls.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sluice_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, IsolationLevel, ListGroupsRequest,
    ResetOffsetsPartition, ResetOffsetsRequest, ResetOffsetsTopic, EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
};
use sluice_protocol::{BrokerId, ErrorCode, Offset, PartitionId, Request, Response};

use super::coordinator::{group_error, COORDINATOR_BACKOFF};
use super::membership::coordinator_code;
use super::{fetch_committed, Coordinator};
use crate::admin::{DESCRIBE_LOOKUP_ATTEMPTS, DESCRIBE_LOOKUP_TIMEOUT};
use crate::backoff::Jitter;
use crate::client::unexpected;
use crate::error::{Error, Result};
use crate::{Admin, Consumer, ConsumerConfig, OffsetReset, OffsetSpec, TopicPartition};

/// Tries of asking every broker for its groups: with the coordinator backoff, about 6.5 s
/// of waits, enough for a dead broker to be fenced and its groups to move.
const LIST_ATTEMPTS: u32 = 10;

/// A group as `sluice group list` shows it.
///
/// ```no_run
/// # async fn demo(admin: sluice_client::Admin) -> sluice_client::Result<()> {
/// for g in admin.list_groups().await? {
///     println!("{} {} {} members", g.group, g.state, g.members);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupListing {
    /// The group's id.
    pub group: String,
    /// Its state: `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable`, `Dead`.
    pub state: String,
    /// Its number of members.
    pub members: i32,
    /// Its protocol type (`consumer`), or empty for a group that only has offsets.
    pub protocol_type: String,
    /// The broker coordinating it.
    pub coordinator: BrokerId,
}

/// A member of a described group ([`GroupDescription::members`]).
///
/// ```no_run
/// # async fn demo(admin: sluice_client::Admin) -> sluice_client::Result<()> {
/// for member in admin.describe_group("billing").await?.members {
///     let partitions: Vec<String> = member.assignment.iter().map(|tp| tp.to_string()).collect();
///     println!("{} ({}) owns {}", member.member_id, member.client_host, partitions.join(", "));
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMember {
    /// The member's id (given by the coordinator).
    pub member_id: String,
    /// The client id it connected with.
    pub client_id: String,
    /// The host it connected from.
    pub client_host: String,
    /// The topics it subscribes to.
    pub subscription: Vec<String>,
    /// The partitions assigned to it in the current generation, sorted.
    pub assignment: Vec<TopicPartition>,
}

/// A group's state and members, as `sluice group describe` shows them.
///
/// ```no_run
/// # async fn demo(admin: sluice_client::Admin) -> sluice_client::Result<()> {
/// let group = admin.describe_group("billing").await?;
/// for m in &group.members {
///     println!("{} owns {:?}", m.member_id, m.assignment);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group's id.
    pub group: String,
    /// Its state: `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable`.
    pub state: String,
    /// Its protocol type (`consumer`), or empty.
    pub protocol_type: String,
    /// The protocol of the current generation (`server`), or empty.
    pub protocol: String,
    /// The current generation.
    pub generation: i32,
    /// The members, by member id.
    pub members: Vec<GroupMember>,
    /// The broker coordinating it.
    pub coordinator: BrokerId,
}

/// A partition's committed offset and lag, as `sluice group describe` shows them.
///
/// ```no_run
/// # async fn demo(admin: sluice_client::Admin) -> sluice_client::Result<()> {
/// for p in admin.group_offsets("billing", &[]).await? {
///     println!("{} committed {} of {}: {} behind", p.partition, p.committed, p.log_end, p.lag);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupPartitionOffset {
    /// The partition.
    pub partition: TopicPartition,
    /// The group's committed offset, or -1 when it has none.
    pub committed: i64,
    /// The partition's log end for consumers (high watermark), or -1 when its leader
    /// could not be asked.
    pub log_end: i64,
    /// Records the group has yet to consume (`log_end - committed`, at least 0), or -1
    /// when either is unknown.
    pub lag: i64,
}

/// A partition's lag in records and in time, as `sluice group lag` shows it.
///
/// ```no_run
/// # async fn demo(admin: sluice_client::Admin) -> sluice_client::Result<()> {
/// let behind: i64 = admin.group_lag("billing").await?.iter().map(|p| p.offsets.lag.max(0)).sum();
/// println!("group billing is {behind} records behind");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct GroupPartitionLag {
    /// The committed offset, log end and lag in records.
    pub offsets: GroupPartitionOffset,
    /// How old the next record the group has not consumed is, from its timestamp, in
    /// seconds: 0 when the group is caught up, -1 when it could not be read in time.
    pub lag_seconds: f64,
}

/// How long [`Admin::group_lag`] waits to read the next unconsumed record of the lagging
/// partitions.
const LAG_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Where [`Admin::reset_offsets`] moves a group's offsets.
///
/// ```no_run
/// # async fn demo(admin: sluice_client::Admin) -> sluice_client::Result<()> {
/// use sluice_client::ResetTarget;
/// // Reprocess everything still in the log (the group's consumers must be stopped).
/// for (partition, offset) in admin.reset_offsets("billing", "orders", ResetTarget::Earliest).await? {
///     println!("orders/{partition} -> {offset}");
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetTarget {
    /// Each partition's first offset still in the log.
    Earliest,
    /// Each partition's log end (high watermark): skip everything produced so far.
    Latest,
    /// This offset in every partition, moved into the log's range (log start to log end)
    /// where it falls outside it, as Kafka's tool does.
    Offset(i64),
}

/// `log_end - committed`, at least 0, or -1 when either is unknown.
pub(crate) fn lag(committed: i64, log_end: i64) -> i64 {
    if committed < 0 || log_end < 0 {
        -1
    } else {
        (log_end - committed).max(0)
    }
}

impl Admin {
    /// Every consumer group of the cluster, sorted by id. ListGroups lists only the groups
    /// a broker coordinates, so every live broker is asked; a broker that cannot answer is
    /// asked again (after a metadata refresh: a dead broker is fenced and its groups move)
    /// until all have answered once in the same round, then the answers are merged.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let mut jitter = Jitter::new();
        let mut tries = 1;
        loop {
            match self.list_groups_once().await {
                Err(e) if e.is_retriable() && tries < LIST_ATTEMPTS => {
                    tracing::debug!(error = %e, tries, "listing groups failed; retrying");
                    tokio::time::sleep(COORDINATOR_BACKOFF.delay(tries, &mut jitter)).await;
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    async fn list_groups_once(&self) -> Result<Vec<GroupListing>> {
        let (_, _, brokers) = self.client().brokers().await?;
        let mut asks = tokio::task::JoinSet::new();
        for broker in brokers {
            let client = self.client().clone();
            asks.spawn(async move {
                let request = Request::ListGroups(ListGroupsRequest {
                    states_filter: Vec::new(),
                });
                (broker.id, client.send(broker.id, request).await)
            });
        }
        let mut groups: BTreeMap<String, GroupListing> = BTreeMap::new();
        while let Some(joined) = asks.join_next().await {
            let (broker, result) = match joined {
                Ok(answer) => answer,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("a ListGroups task was cancelled: {e}"),
            };
            let response = match result? {
                Response::ListGroups(r) => r,
                other => return Err(unexpected("ListGroups", &other)),
            };
            if response.error_code != ErrorCode::None {
                let context = format!("listing the groups of broker {broker}");
                return Err(group_error(
                    &context,
                    response.error_code,
                    response.error_message,
                ));
            }
            for g in response.groups {
                // A group moving between coordinators may show twice; one is enough.
                groups.entry(g.group_id.clone()).or_insert(GroupListing {
                    group: g.group_id,
                    state: g.group_state,
                    members: g.n_members,
                    protocol_type: g.protocol_type,
                    coordinator: broker,
                });
            }
        }
        Ok(groups.into_values().collect())
    }

    /// A group's state, generation and members with their assignments, from its
    /// coordinator. [`Error::UnknownGroup`] when the group does not exist.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let coordinator = Coordinator::new(self.client().clone(), group);
        let request = Request::DescribeGroups(DescribeGroupsRequest {
            groups: vec![group.to_owned()],
        });
        let context = format!("describing group \"{group}\"");
        let described = coordinator
            .call(request, self.request_timeout(), self.deadline(), |r| {
                let r = match r {
                    Response::DescribeGroups(r) => r,
                    other => return Err(unexpected("DescribeGroups", &other)),
                };
                let g = r
                    .groups
                    .into_iter()
                    .find(|g| g.group_id == group)
                    .ok_or_else(|| Error::Protocol {
                        addr: "the group coordinator".to_owned(),
                        reason: format!("the DescribeGroups response has no group \"{group}\""),
                    })?;
                coordinator_code(&context, g.error_code, &g.error_message)?;
                Ok(g)
            })
            .await?;
        match described.error_code {
            ErrorCode::None if described.group_state != "Dead" => {}
            ErrorCode::None | ErrorCode::GroupIdNotFound => {
                return Err(Error::UnknownGroup {
                    group: group.to_owned(),
                })
            }
            code => return Err(group_error(&context, code, described.error_message)),
        }
        let mut members: Vec<GroupMember> = described
            .members
            .into_iter()
            .map(|m| {
                let assignment = super::flatten_assignment(m.assignment);
                GroupMember {
                    member_id: m.member_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    subscription: m.subscription,
                    assignment,
                }
            })
            .collect();
        members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
        Ok(GroupDescription {
            group: described.group_id,
            state: described.group_state,
            protocol_type: described.protocol_type,
            protocol: described.protocol_name,
            generation: described.generation_id,
            members,
            coordinator: coordinator.broker().unwrap_or(BrokerId::NONE),
        })
    }

    /// The group's committed offsets, of every partition it has one for.
    pub async fn committed_offsets(&self, group: &str) -> Result<BTreeMap<TopicPartition, i64>> {
        let coordinator = Coordinator::new(self.client().clone(), group);
        fetch_committed(&coordinator, None, self.deadline(), false).await
    }

    /// Committed offset, log end and lag of every partition the group has committed an
    /// offset for, as [`Admin::group_offsets`], with the lag in seconds: how old the next
    /// record the group has not consumed is (its timestamp against this machine's clock),
    /// read from the partition's leader like any consumer read.
    pub async fn group_lag(&self, group: &str) -> Result<Vec<GroupPartitionLag>> {
        let offsets = self.group_offsets(group, &[]).await?;
        let lagging: Vec<(String, PartitionId, OffsetSpec)> = offsets
            .iter()
            .filter(|o| o.lag > 0)
            .map(|o| {
                let tp = &o.partition;
                (
                    tp.topic.clone(),
                    tp.partition,
                    OffsetSpec::Offset(o.committed),
                )
            })
            .collect();
        let timestamps = if lagging.is_empty() {
            BTreeMap::new()
        } else {
            self.next_record_timestamps(lagging).await
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Ok(offsets
            .into_iter()
            .map(|offsets| {
                let lag_seconds = match offsets.lag {
                    0 => 0.0,
                    lag if lag < 0 => -1.0,
                    _ => timestamps
                        .get(&offsets.partition)
                        .map_or(-1.0, |ts| (now_ms - ts).max(0) as f64 / 1000.0),
                };
                GroupPartitionLag {
                    offsets,
                    lag_seconds,
                }
            })
            .collect())
    }

    /// The timestamp of the record at each given offset (or the first after it), read
    /// with a consumer of its own within [`LAG_READ_TIMEOUT`]; partitions it could not
    /// read are left out.
    async fn next_record_timestamps(
        &self,
        partitions: Vec<(String, PartitionId, OffsetSpec)>,
    ) -> BTreeMap<TopicPartition, i64> {
        let config = ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::new(self.client().clone(), config);
        let wanted = partitions.len();
        let mut found = BTreeMap::new();
        if let Err(e) = consumer.assign(partitions).await {
            tracing::warn!("cannot read the next records for the lag in seconds: {e}");
            return found;
        }
        let deadline = Instant::now() + LAG_READ_TIMEOUT;
        while found.len() < wanted {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            match consumer.poll(left).await {
                Ok(records) => {
                    for record in records {
                        found
                            .entry(TopicPartition::new(&record.topic, record.partition))
                            .or_insert(record.timestamp_ms);
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot read the next records for the lag in seconds: {e}");
                    break;
                }
            }
        }
        found
    }

    /// Committed offset, log end and lag of every partition the group has committed an
    /// offset for, plus those in `assigned` (the members' assignments, which may have no
    /// commit yet), sorted. Log ends are asked of each partition's leader; one that cannot
    /// be asked shows as -1.
    pub async fn group_offsets(
        &self,
        group: &str,
        assigned: &[TopicPartition],
    ) -> Result<Vec<GroupPartitionOffset>> {
        let committed = self.committed_offsets(group).await?;
        let partitions: BTreeSet<TopicPartition> = committed
            .keys()
            .cloned()
            .chain(assigned.iter().cloned())
            .collect();
        let mut by_topic: BTreeMap<&str, Vec<(PartitionId, i64)>> = BTreeMap::new();
        for tp in &partitions {
            by_topic
                .entry(&tp.topic)
                .or_default()
                .push((tp.partition, LATEST_TIMESTAMP));
        }
        let mut log_ends: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        for (topic, lookups) in by_topic {
            let found = match self
                .client()
                .list_offsets_bounded(
                    topic,
                    &lookups,
                    DESCRIBE_LOOKUP_ATTEMPTS,
                    Some(DESCRIBE_LOOKUP_TIMEOUT),
                    IsolationLevel::ReadUncommitted,
                )
                .await
            {
                Ok(found) => found,
                // A topic deleted since the group committed: its log ends are unknown.
                Err(Error::UnknownTopic { .. } | Error::UnknownPartition { .. }) => continue,
                Err(e) if e.is_retriable() => continue,
                Err(e) => return Err(e),
            };
            for (partition, offset) in found {
                match offset {
                    Ok(o) => {
                        log_ends.insert(TopicPartition::new(topic, partition), o);
                    }
                    Err(e) => {
                        tracing::warn!(topic, %partition, error = %e, "log end lookup failed")
                    }
                }
            }
        }
        Ok(partitions
            .into_iter()
            .map(|tp| {
                let committed = committed.get(&tp).copied().unwrap_or(-1);
                let log_end = log_ends.get(&tp).copied().unwrap_or(-1);
                GroupPartitionOffset {
                    partition: tp,
                    committed,
                    log_end,
                    lag: lag(committed, log_end),
                }
            })
            .collect())
    }

    /// Overwrites the group's committed offsets for every partition of `topic`, and
    /// returns the offsets stored, by partition. Earliest and latest are looked up first
    /// (ListOffsets); an explicit offset is moved into each partition's range. Refused
    /// with [`Error::GroupNotEmpty`] while the group has members: they would overwrite
    /// the reset with their next commit.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: ResetTarget,
    ) -> Result<Vec<(PartitionId, i64)>> {
        let offsets = self.reset_targets(topic, to).await?;
        let coordinator = Coordinator::new(self.client().clone(), group);
        let request = Request::ResetOffsets(ResetOffsetsRequest {
            group_id: group.to_owned(),
            topics: vec![ResetOffsetsTopic {
                name: topic.to_owned(),
                partitions: offsets
                    .iter()
                    .map(|&(partition, offset)| ResetOffsetsPartition {
                        partition,
                        offset: Offset(offset),
                    })
                    .collect(),
            }],
        });
        let context = format!("resetting the offsets of group \"{group}\" for topic \"{topic}\"");
        coordinator
            .call(request, self.request_timeout(), self.deadline(), |r| {
                let r = match r {
                    Response::ResetOffsets(r) => r,
                    other => return Err(unexpected("ResetOffsets", &other)),
                };
                coordinator_code(&context, r.error_code, &r.error_message)?;
                match r.error_code {
                    ErrorCode::None => {}
                    ErrorCode::NonEmptyGroup => {
                        return Err(Error::GroupNotEmpty {
                            group: group.to_owned(),
                        })
                    }
                    code => return Err(group_error(&context, code, r.error_message)),
                }
                for t in r.topics {
                    for p in t.partitions {
                        if p.error_code == ErrorCode::None {
                            continue;
                        }
                        // A coordinator error here is retried like a group-level one
                        // (`call` looks at the code).
                        let context = format!("{context}, partition {}", p.partition);
                        return Err(group_error(&context, p.error_code, p.error_message));
                    }
                }
                Ok(())
            })
            .await?;
        Ok(offsets)
    }

    /// The offsets `to` means in each partition of `topic`.
    async fn reset_targets(&self, topic: &str, to: ResetTarget) -> Result<Vec<(PartitionId, i64)>> {
        let metadata = self.client().refresh_topic(topic).await?;
        let partitions: Vec<PartitionId> =
            metadata.partitions.iter().map(|p| p.partition).collect();
        let lookup = |timestamp: i64| {
            let lookups: Vec<(PartitionId, i64)> =
                partitions.iter().map(|&p| (p, timestamp)).collect();
            async move {
                let found = self.client().list_offsets(topic, &lookups).await?;
                found
                    .into_iter()
                    .map(|(p, offset)| offset.map(|o| (p, o)))
                    .collect::<Result<Vec<(PartitionId, i64)>>>()
            }
        };
        match to {
            ResetTarget::Earliest => lookup(EARLIEST_TIMESTAMP).await,
            ResetTarget::Latest => lookup(LATEST_TIMESTAMP).await,
            ResetTarget::Offset(offset) => {
                let starts = lookup(EARLIEST_TIMESTAMP).await?;
                let ends: BTreeMap<PartitionId, i64> =
                    lookup(LATEST_TIMESTAMP).await?.into_iter().collect();
                Ok(starts
                    .into_iter()
                    .map(|(p, start)| {
                        let end = ends.get(&p).copied().unwrap_or(start).max(start);
                        (p, offset.clamp(start, end))
                    })
                    .collect())
            }
        }
    }

    /// Deletes a group with no members, and its committed offsets.
    /// [`Error::GroupNotEmpty`] while it has members, [`Error::UnknownGroup`] when it does
    /// not exist.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let coordinator = Coordinator::new(self.client().clone(), group);
        let request = Request::DeleteGroups(DeleteGroupsRequest {
            group_ids: vec![group.to_owned()],
        });
        let context = format!("deleting group \"{group}\"");
        let result = coordinator
            .call(request, self.request_timeout(), self.deadline(), |r| {
                let r = match r {
                    Response::DeleteGroups(r) => r,
                    other => return Err(unexpected("DeleteGroups", &other)),
                };
                let result = r
                    .results
                    .into_iter()
                    .find(|g| g.group_id == group)
                    .ok_or_else(|| Error::Protocol {
                        addr: "the group coordinator".to_owned(),
                        reason: format!("the DeleteGroups response has no group \"{group}\""),
                    })?;
                coordinator_code(&context, result.error_code, &result.error_message)?;
                Ok(result)
            })
            .await?;
        match result.error_code {
            ErrorCode::None => Ok(()),
            // An earlier try whose answer was lost may have deleted it.
            ErrorCode::GroupIdNotFound if coordinator.answers_lost() > 0 => Ok(()),
            ErrorCode::GroupIdNotFound => Err(Error::UnknownGroup {
                group: group.to_owned(),
            }),
            ErrorCode::NonEmptyGroup => Err(Error::GroupNotEmpty {
                group: group.to_owned(),
            }),
            code => Err(group_error(&context, code, result.error_message)),
        }
    }

    fn request_timeout(&self) -> Duration {
        self.client().config().request_timeout
    }

    /// How long a group admin request is retried while its coordinator moves or loads.
    fn deadline(&self) -> Option<Instant> {
        Some(Instant::now() + self.request_timeout())
    }
}

#[cfg(test)]
mod tests {
    use super::lag;

    #[test]
    fn lag_is_unknown_without_both_ends() {
        assert_eq!(lag(3, 10), 7);
        assert_eq!(lag(12, 10), 0);
        assert_eq!(lag(-1, 10), -1);
        assert_eq!(lag(3, -1), -1);
    }
}
