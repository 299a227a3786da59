//! Partition reassignment (Kafka's KIP-455): moving a partition's replicas to other
//! brokers without losing a record. A reassignment to `target` first adds the target's new
//! replicas (`adding`) beside the old ones: `replicas` is the target, then the replicas it
//! drops (`removing`), so the preferred leader is the target's first. The added replicas
//! copy the log from the leader like any follower, and the leader takes each into the ISR
//! once it has caught up (AlterPartition). When every added replica is in the ISR, the
//! reassignment completes in the same command: `replicas` becomes the target, the removed
//! replicas leave the ISR, and a leader being removed hands the leadership to the first
//! target replica in the ISR. Every committed record is on every ISR member, so it is on
//! the new leader and on every replica that stays; the removed replicas' brokers then
//! delete their copies (`Topics::reconcile`).
//!
//! A cancellation goes back to the replicas the partition had before (`replicas` without
//! `adding`). An added replica never wins an unclean election (its log may be a prefix).

use sluice_protocol::{BrokerId, ErrorCode, PartitionId};

use super::{is_active, placement, BrokerMeta, CommandResult, MetadataImage, PartitionMeta};

/// The registered brokers, by id.
type Brokers = std::collections::BTreeMap<BrokerId, BrokerMeta>;

impl PartitionMeta {
    /// The replicas it had before its reassignment began (its replicas without one).
    pub fn original_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|b| !self.adding.contains(b))
            .collect()
    }

    /// The replicas its reassignment moves it to (its replicas without one).
    pub fn target_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|b| !self.removing.contains(b))
            .collect()
    }

    /// Whether a reassignment is under way.
    pub fn is_reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// Begins moving to `target` (or replaces the reassignment under way), keeping the ISR
    /// members that stay replicas.
    fn start_reassignment(&mut self, target: &[BrokerId], brokers: &Brokers) {
        let original = self.original_replicas();
        self.adding = target
            .iter()
            .copied()
            .filter(|b| !original.contains(b))
            .collect();
        self.removing = original
            .iter()
            .copied()
            .filter(|b| !target.contains(b))
            .collect();
        let mut replicas = target.to_vec();
        replicas.extend(self.removing.iter().copied());
        self.set_replicas(replicas, brokers);
    }

    /// Goes back to the replicas it had before its reassignment; a leader the reassignment
    /// added hands over to an original replica in sync.
    fn cancel_reassignment(&mut self, brokers: &Brokers) {
        let original = self.original_replicas();
        self.adding.clear();
        self.removing.clear();
        self.set_replicas(original, brokers);
    }

    /// New replicas, keeping the ISR members among them (some, as
    /// [`MetadataImage::check_reassignment`] made sure); a leader that is no longer a
    /// replica hands over to the first in sync that can lead. The partition epoch moves, so
    /// an AlterPartition based on the old replicas is refused.
    fn set_replicas(&mut self, replicas: Vec<BrokerId>, brokers: &Brokers) {
        if replicas == self.replicas {
            return;
        }
        let isr = self.isr_within(&replicas);
        let leader = if self.leader == BrokerId::NONE || replicas.contains(&self.leader) {
            self.leader
        } else {
            placement::elect_leader(&replicas, &isr, |b| is_active(brokers, b))
        };
        self.change_replicas(replicas, leader, isr);
    }

    /// The ISR members among `replicas`, in ISR order.
    fn isr_within(&self, replicas: &[BrokerId]) -> Vec<BrokerId> {
        self.isr
            .iter()
            .copied()
            .filter(|b| replicas.contains(b))
            .collect()
    }

    /// Takes `replicas`, `leader` and `isr`, moving the partition epoch even when the
    /// leader and ISR stay, so an AlterPartition based on the old replicas is refused.
    fn change_replicas(&mut self, replicas: Vec<BrokerId>, leader: BrokerId, isr: Vec<BrokerId>) {
        self.replicas = replicas;
        let epoch = self.partition_epoch;
        self.change(leader, isr);
        if self.partition_epoch == epoch {
            self.partition_epoch += 1;
        }
    }

    /// Completes the reassignment if every added replica is in the ISR and a target replica
    /// can lead: the target becomes the replicas, the removed ones leave the ISR, and the
    /// leadership moves to a target replica if a removed one holds it.
    pub(super) fn complete_reassignment(&mut self, brokers: &Brokers) {
        if !self.is_reassigning()
            || self.leader == BrokerId::NONE
            || self.awaiting_log_ends
            || !self.adding.iter().all(|b| self.isr.contains(b))
        {
            return;
        }
        let target = self.target_replicas();
        let isr = self.isr_within(&target);
        let leader = if target.contains(&self.leader) {
            self.leader
        } else {
            placement::elect_leader(&target, &isr, |b| is_active(brokers, b))
        };
        if leader == BrokerId::NONE {
            return; // No target replica can lead yet: wait for one.
        }
        self.adding.clear();
        self.removing.clear();
        self.change_replicas(target, leader, isr);
    }
}

impl MetadataImage {
    /// Whether `topic`'s `partition` may be reassigned to `target` (`None`: may its
    /// reassignment be cancelled), or why not.
    pub fn check_reassignment(
        &self,
        topic: &str,
        partition: PartitionId,
        target: Option<&[BrokerId]>,
    ) -> Result<(), (ErrorCode, String)> {
        let name = format!("{topic}-{}", partition.0);
        let Some(meta) = self.partition(topic, partition) else {
            return Err((
                ErrorCode::UnknownTopicOrPartition,
                format!("{name} does not exist"),
            ));
        };
        let Some(target) = target else {
            if !meta.is_reassigning() {
                return Err((
                    ErrorCode::NoReassignmentInProgress,
                    format!("{name} is not being reassigned; nothing to cancel"),
                ));
            }
            let original = meta.original_replicas();
            let kept = meta.isr_within(&original);
            let leads = meta.leader == BrokerId::NONE
                || original.contains(&meta.leader)
                || kept.iter().any(|b| is_active(&self.brokers, *b));
            if kept.is_empty() || !leads {
                return Err((
                    ErrorCode::InvalidReplicaAssignment,
                    format!(
                        "no original replica of {name} is in sync and able to lead; let the \
                         reassignment finish instead of cancelling it"
                    ),
                ));
            }
            return Ok(());
        };
        // Before the quadratic distinctness check: a target can name no more brokers than
        // are registered.
        if target.len() > self.brokers.len() {
            return Err((
                ErrorCode::InvalidReplicaAssignment,
                format!(
                    "{name}: {} target replicas, but {} brokers are registered; sluice \
                     cluster describe lists the brokers",
                    target.len(),
                    self.brokers.len()
                ),
            ));
        }
        let distinct = target
            .iter()
            .enumerate()
            .all(|(i, b)| !target[..i].contains(b));
        if target.is_empty() || !distinct {
            return Err((
                ErrorCode::InvalidReplicaAssignment,
                format!("{name}: the target replicas must be distinct brokers, at least one"),
            ));
        }
        if let Some(b) = target.iter().find(|b| !self.brokers.contains_key(b)) {
            return Err((
                ErrorCode::InvalidReplicaAssignment,
                format!(
                    "{name}: broker {b} is not registered; sluice cluster describe lists the \
                     brokers"
                ),
            ));
        }
        if meta.leader == BrokerId::NONE || meta.awaiting_log_ends {
            return Err((
                ErrorCode::LeaderNotAvailable,
                format!("{name} has no leader now; reassign it once it has one"),
            ));
        }
        // The leader stays a replica until the reassignment completes (then it hands over):
        // only a leader added by the reassignment under way could be dropped by a new one.
        if !target.contains(&meta.leader) && !meta.original_replicas().contains(&meta.leader) {
            return Err((
                ErrorCode::InvalidReplicaAssignment,
                format!(
                    "{name}: its leader {} was added by the reassignment under way and is not \
                     in the new target; let that reassignment finish first",
                    meta.leader
                ),
            ));
        }
        Ok(())
    }

    /// The partitions being reassigned, by topic and index.
    pub fn reassignments(&self) -> Vec<(&str, &PartitionMeta)> {
        self.topics
            .iter()
            .flat_map(|(name, t)| t.partitions.iter().map(move |p| (name.as_str(), p)))
            .filter(|(_, p)| p.is_reassigning())
            .collect()
    }

    pub(super) fn reassign_partitions(
        &mut self,
        topic: &str,
        partitions: &[(PartitionId, Option<Vec<BrokerId>>)],
    ) -> CommandResult {
        for (index, target) in partitions {
            if self
                .check_reassignment(topic, *index, target.as_deref())
                .is_err()
            {
                continue;
            }
            let brokers = &self.brokers;
            let partition = self
                .topics
                .get_mut(topic)
                .and_then(|t| t.partition_mut(*index))
                .expect("check_reassignment found it");
            match target {
                Some(target) => partition.start_reassignment(target, brokers),
                None => partition.cancel_reassignment(brokers),
            }
        }
        CommandResult::Done
    }

    /// Completes every reassignment that can complete now.
    pub(super) fn complete_reassignments(&mut self) {
        let brokers = &self.brokers;
        for topic in self.topics.values_mut() {
            for partition in &mut topic.partitions {
                partition.complete_reassignment(brokers);
            }
        }
    }
}
