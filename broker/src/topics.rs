//! The topics and partition replicas hosted on this broker, kept in step with the cluster
//! metadata image ([`Topics::reconcile`]), plus topic validation (names, configs) and the
//! per-topic configuration that becomes each log's `LogConfig`.
//!
//! The image is the truth: the controller's Raft log decides which topics exist and which
//! brokers hold their replicas. This module opens a log for every partition the image
//! assigns to this broker, hands each its role (leader or follower, epoch, ISR), and
//! retires and removes the logs of deleted topics. Lookups on the produce and fetch paths
//! only take a short read lock on the map of hosted topics.
//!
//! A topic has an id (the log index of its creation). Each partition directory holds a
//! `partition.metadata` file naming it, so a topic deleted and created again under the same
//! name while this broker was down is recognised: the old replica is wiped, never mistaken
//! for the new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sluice_protocol::{BrokerId, ErrorCode, PartitionId};
use sluice_storage::{Clock, FlushObserver, PartitionLog, SharedLog};

use crate::cluster::image::{MetadataImage, PartitionMeta, TopicMeta};
use crate::config::BrokerConfig;
use crate::error::{ApiError, BrokerError};
use crate::partition::{Assignment, Partition};
use crate::topic_config::{replica_log_config, validate_topic_name};

/// The file in each partition directory that names the topic id it belongs to.
const PARTITION_METADATA_FILE: &str = "partition.metadata";
/// The first line of that file: our format, version 1.
const PARTITION_METADATA_MAGIC: &str = "sluice-partition-metadata 1";
/// A file in a partition directory whose recovery cut data off, kept until the controller
/// has been told (so a crash before then cannot make the damage forgotten).
const DAMAGE_MARKER_FILE: &str = "damaged";

/// A topic with replicas on this broker.
pub struct Topic {
    /// The topic's name.
    pub name: Arc<str>,
    /// Its id: the metadata log index of its creation.
    pub id: u64,
    /// The partitions whose replicas are on this broker, by index.
    pub partitions: BTreeMap<PartitionId, Arc<Partition>>,
    /// The config overrides the replicas run with (altered ones are applied on reconcile).
    configs: std::sync::Mutex<BTreeMap<String, String>>,
}

/// Every topic with replicas on this broker.
pub struct Topics {
    config: BrokerConfig,
    clock: Arc<dyn Clock>,
    /// Told of every group-commit fsync of the hosted logs (the broker's metrics).
    flush_observer: Option<Arc<dyn FlushObserver>>,
    /// Hosted topics by name. Held only to look up or swap entries, never across an await
    /// or a file operation.
    live: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serializes reconciliations (they open and remove files).
    reconciling: std::sync::Mutex<()>,
    /// Replicas opened damaged (recovery cut data off) that the controller has not been
    /// told about yet.
    damaged: std::sync::Mutex<Vec<(String, PartitionId)>>,
    /// The metadata index the hosted replicas last reconciled with: every replica the
    /// image at that index gives this broker is open and has its role.
    reconciled: tokio::sync::watch::Sender<u64>,
}

impl Topics {
    /// Prepares the data directory; partitions open when the first image is reconciled.
    pub fn open(
        config: &BrokerConfig,
        clock: Arc<dyn Clock>,
        flush_observer: Option<Arc<dyn FlushObserver>>,
    ) -> Result<Topics, BrokerError> {
        let data_dir = &config.data_dir;
        std::fs::create_dir_all(topics_dir(data_dir))
            .map_err(|e| BrokerError::io("create data directory", data_dir, e))?;
        Ok(Topics {
            config: config.clone(),
            clock,
            flush_observer,
            live: RwLock::new(BTreeMap::new()),
            reconciling: std::sync::Mutex::new(()),
            damaged: std::sync::Mutex::new(Vec::new()),
            reconciled: tokio::sync::watch::channel(0).0,
        })
    }

    /// The replicas reflect the metadata image at `index`.
    pub fn mark_reconciled(&self, index: u64) {
        self.reconciled.send_replace(index);
    }

    /// The metadata index the hosted replicas last reconciled with.
    pub fn reconciled_index(&self) -> u64 {
        *self.reconciled.borrow()
    }

    /// Waits until the hosted replicas reflect the metadata at `index` or later, or
    /// `timeout` passes.
    pub async fn wait_reconciled(&self, index: u64, timeout: std::time::Duration) {
        let mut reconciled = self.reconciled.subscribe();
        let _ = tokio::time::timeout(timeout, reconciled.wait_for(|r| *r >= index)).await;
    }

    /// A hosted topic by name.
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.live.read().expect("topics lock").get(name).cloned()
    }

    /// A hosted partition replica. A topic the image does not have is
    /// UNKNOWN_TOPIC_OR_PARTITION; a partition with no replica here is
    /// NOT_LEADER_OR_FOLLOWER (the client's metadata is stale).
    pub fn partition(
        &self,
        image: &MetadataImage,
        topic: &str,
        index: PartitionId,
    ) -> Result<Arc<Partition>, ApiError> {
        let meta = image
            .topics
            .get(topic)
            .ok_or_else(|| ApiError::unknown_topic(topic))?;
        let Some(partition_meta) = meta.partition(index) else {
            return Err(ApiError::unknown_partition(
                topic,
                index.0,
                meta.partitions.len(),
            ));
        };
        self.get(topic)
            .filter(|t| t.id == meta.id)
            .and_then(|t| t.partitions.get(&index).cloned())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotLeaderOrFollower,
                    format!(
                        "this broker has no replica of {topic}-{} (its leader is broker {}); \
                         refresh metadata and retry",
                        index.0, partition_meta.leader
                    ),
                )
            })
    }

    /// The replicas opened damaged that the controller has not been told about. Every
    /// replica of an image is opened before [`Topics::reconcile`] returns, so a caller that
    /// reads this after a reconciliation sees the damage of every replica it opened.
    pub fn unreported_damage(&self) -> Vec<(String, PartitionId)> {
        self.damaged.lock().expect("damage lock").clone()
    }

    /// The controller recorded the damage of `reported`: forget it, and its markers.
    pub fn damage_reported(&self, reported: &[(String, PartitionId)]) {
        self.damaged
            .lock()
            .expect("damage lock")
            .retain(|replica| !reported.contains(replica));
        for (topic, index) in reported {
            let marker =
                partition_dir(&self.config.data_dir, topic, *index).join(DAMAGE_MARKER_FILE);
            match std::fs::remove_file(&marker) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %marker.display(), "cannot remove: {e}"),
            }
        }
    }

    /// Every hosted partition replica.
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        let live = self.live.read().expect("topics lock");
        live.values()
            .flat_map(|t| t.partitions.values().cloned())
            .collect()
    }

    /// Brings the hosted replicas in line with `image` (blocking: opens, recovers and
    /// removes logs): topics gone from the image (or re-created with another id) are
    /// retired and their files removed; new topics with replicas here get logs; every
    /// replica takes the role the image gives it, but leads only if `may_lead` (the image
    /// holds this run's registration; see [`assignment`]). A partition that fails to open
    /// is logged and skipped (the others still serve); the next image retries it.
    pub fn reconcile(&self, image: &MetadataImage, may_lead: bool) {
        let _one_at_a_time = self.reconciling.lock().expect("reconcile lock");
        let node = self.config.node_id;
        let gone: Vec<Arc<Topic>> = {
            let mut live = self.live.write().expect("topics lock");
            let names: Vec<String> = live
                .iter()
                .filter(|(name, topic)| image.topics.get(*name).map(|t| t.id) != Some(topic.id))
                .map(|(name, _)| name.clone())
                .collect();
            names.iter().filter_map(|n| live.remove(n)).collect()
        };
        for topic in gone {
            for partition in topic.partitions.values() {
                partition.mark_deleted();
                remove_dir(&partition_dir(
                    &self.config.data_dir,
                    &topic.name,
                    partition.index(),
                ));
            }
            tracing::info!(topic = %topic.name, "deleted topic");
        }
        for (name, meta) in &image.topics {
            match self.get(name) {
                Some(topic) => {
                    let topic = self.remove_moved_replicas(topic, meta);
                    for (index, partition) in &topic.partitions {
                        if let Some(p) = meta.partition(*index) {
                            partition.apply_assignment(&assignment(p, node, may_lead));
                        }
                    }
                    self.apply_configs(&topic, meta);
                    self.open_added_partitions(&topic, meta, may_lead);
                }
                None if meta.partitions.iter().any(|p| p.replicas.contains(&node)) => {
                    let mut damaged = Vec::new();
                    let opened = self.open_topic(name, meta, may_lead, &mut damaged);
                    self.damaged.lock().expect("damage lock").extend(damaged);
                    match opened {
                        Ok(topic) => {
                            self.live
                                .write()
                                .expect("topics lock")
                                .insert(name.clone(), Arc::new(topic));
                        }
                        Err((partition, e)) => log_unopened(&partition, &e),
                    }
                }
                None => {}
            }
        }
    }

    /// Opens every partition log of a topic that the image places here; on failure names the
    /// partition.
    fn open_topic(
        &self,
        name: &str,
        meta: &TopicMeta,
        may_lead: bool,
        damaged: &mut Vec<(String, PartitionId)>,
    ) -> Result<Topic, (String, sluice_storage::StorageError)> {
        let name: Arc<str> = Arc::from(name);
        let partitions = self.open_partitions(&name, meta, may_lead, |_| true, damaged)?;
        Ok(Topic {
            name,
            id: meta.id,
            partitions,
            configs: std::sync::Mutex::new(meta.configs.clone()),
        })
    }

    /// Opens the partition logs of a topic that the image places here and `wanted` picks; on
    /// failure names the partition. Replicas whose recovery cut data off go to `damaged`.
    fn open_partitions(
        &self,
        name: &Arc<str>,
        meta: &TopicMeta,
        may_lead: bool,
        wanted: impl Fn(PartitionId) -> bool,
        damaged: &mut Vec<(String, PartitionId)>,
    ) -> Result<BTreeMap<PartitionId, Arc<Partition>>, (String, sluice_storage::StorageError)> {
        let (config, clock, flush_observer) = (&self.config, &self.clock, &self.flush_observer);
        let bad_metadata = |reason: String| {
            (
                name.to_string(),
                sluice_storage::StorageError::BadFile {
                    path: config.data_dir.join("controller"),
                    what: "topic in the cluster metadata",
                    reason,
                },
            )
        };
        // The name becomes a directory path: never trust it without the rule.
        validate_topic_name(name).map_err(|e| bad_metadata(e.message))?;
        let (log_config, min_insync) =
            replica_log_config(config, name, &meta.configs).map_err(|e| bad_metadata(e.message))?;
        let node = config.node_id;
        let mut partitions = BTreeMap::new();
        for p in meta
            .partitions
            .iter()
            .filter(|p| p.replicas.contains(&node) && wanted(p.index))
        {
            let dir = partition_dir(&config.data_dir, name, p.index);
            let label = format!("{name}-{}", p.index.0);
            let io = |what: &'static str, e: std::io::Error| {
                (
                    label.clone(),
                    sluice_storage::StorageError::io(what, &dir, e),
                )
            };
            match read_topic_id(&dir) {
                Some(id) if id != meta.id => {
                    tracing::info!(
                        partition = %label,
                        "removing the replica of an older topic with this name (id {id}, now {})",
                        meta.id
                    );
                    std::fs::remove_dir_all(&dir).map_err(|e| io("remove", e))?;
                }
                _ => {}
            }
            std::fs::create_dir_all(&dir).map_err(|e| io("create", e))?;
            write_topic_id(&dir, meta.id).map_err(|e| io("write", e))?;
            let log = PartitionLog::open(&dir, log_config.clone(), clock.clone())
                .map_err(|e| (label.clone(), e))?;
            let report = log.recovery_report();
            let marker = dir.join(DAMAGE_MARKER_FILE);
            if let Some(cut) = &report.truncated {
                tracing::warn!(
                    partition = %label,
                    "recovered: cut {} at byte {} ({}); the controller will not let this \
                     replica lead on its own before the others report their logs",
                    cut.file.display(),
                    cut.position,
                    cut.reason
                );
                write_durably(&marker, cut.reason.as_bytes()).map_err(|e| io("write", e))?;
            }
            if marker.exists() {
                damaged.push((name.to_string(), p.index));
            }
            let partition = Partition::new(
                name.clone(),
                p.index,
                node,
                SharedLog::with_observer(log, flush_observer.clone()),
                &assignment(p, node, may_lead),
                min_insync,
            );
            partitions.insert(p.index, Arc::new(partition));
        }
        Ok(partitions)
    }

    /// Opens the replicas of partitions added to a hosted topic (CreatePartitions) that the
    /// image places here, and hosts the topic with them from now on. A partition that fails
    /// to open is logged; the next image retries it.
    fn open_added_partitions(&self, topic: &Topic, meta: &TopicMeta, may_lead: bool) {
        let node = self.config.node_id;
        let added = meta
            .partitions
            .iter()
            .any(|p| p.replicas.contains(&node) && !topic.partitions.contains_key(&p.index));
        if !added {
            return;
        }
        let mut damaged = Vec::new();
        let opened = self.open_partitions(
            &topic.name,
            meta,
            may_lead,
            |index| !topic.partitions.contains_key(&index),
            &mut damaged,
        );
        self.damaged.lock().expect("damage lock").extend(damaged);
        match opened {
            Ok(added) => {
                let mut partitions = topic.partitions.clone();
                for index in added.keys() {
                    tracing::info!(topic = %topic.name, partition = index.0, "added partition");
                }
                partitions.extend(added);
                self.host_with(topic, partitions);
            }
            Err((partition, e)) => log_unopened(&partition, &e),
        }
    }

    /// Closes and deletes this broker's replicas of `topic` that the image no longer places
    /// here (a reassignment moved them, and completed only once the replicas that stay
    /// were in sync); the topic as it is then.
    fn remove_moved_replicas(&self, topic: Arc<Topic>, meta: &TopicMeta) -> Arc<Topic> {
        let node = self.config.node_id;
        let moved: Vec<PartitionId> = topic
            .partitions
            .keys()
            .copied()
            .filter(|i| {
                meta.partition(*i)
                    .is_some_and(|p| !p.replicas.contains(&node))
            })
            .collect();
        if moved.is_empty() {
            return topic;
        }
        let mut partitions = topic.partitions.clone();
        for index in &moved {
            if let Some(partition) = partitions.remove(index) {
                partition.mark_moved();
            }
            remove_dir(&partition_dir(&self.config.data_dir, &topic.name, *index));
            tracing::info!(
                topic = %topic.name,
                partition = index.0,
                "replica reassigned to other brokers: deleted here"
            );
        }
        self.host_with(&topic, partitions)
    }

    /// Hosts `topic` with `partitions` instead of its own (added or moved away) from now
    /// on: the same name, id and configs.
    fn host_with(
        &self,
        topic: &Topic,
        partitions: BTreeMap<PartitionId, Arc<Partition>>,
    ) -> Arc<Topic> {
        let hosted = Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions,
            configs: std::sync::Mutex::new(
                topic.configs.lock().expect("topic configs lock").clone(),
            ),
        });
        self.live
            .write()
            .expect("topics lock")
            .insert(topic.name.to_string(), Arc::clone(&hosted));
        hosted
    }

    /// Gives the replicas of `topic` the configs the image has for it, if they changed
    /// (`IncrementalAlterConfigs`): new segment and retention limits, `min.insync.replicas`.
    fn apply_configs(&self, topic: &Topic, meta: &TopicMeta) {
        let mut current = topic.configs.lock().expect("topic configs lock");
        if *current == meta.configs {
            return;
        }
        match replica_log_config(&self.config, &topic.name, &meta.configs) {
            Ok((log, min_insync)) => {
                for partition in topic.partitions.values() {
                    partition.reconfigure(log.clone(), min_insync);
                }
                tracing::info!(topic = %topic.name, configs = ?meta.configs, "configs changed");
                *current = meta.configs.clone();
            }
            // The controller validated them with the same rules: only a newer broker's
            // config key could be refused here.
            Err(e) => tracing::error!(topic = %topic.name, "cannot apply configs: {}", e.message),
        }
    }

    /// Removes partition directories the image does not assign to this broker: left by a
    /// deletion or a creation that a crash interrupted, or by topics deleted while this
    /// broker was down. Call only with an image that is caught up with the controller,
    /// or a directory of a topic this broker has not heard of yet would go.
    pub fn remove_orphans(&self, image: &MetadataImage) {
        let _one_at_a_time = self.reconciling.lock().expect("reconcile lock");
        let node = self.config.node_id;
        let dir = topics_dir(&self.config.data_dir);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            // A replica open here is never an orphan: a reconcile with an image newer than
            // `image` may have opened it (a partition moved here meanwhile).
            let live = name.rsplit_once('-').is_some_and(|(topic, index)| {
                let index = index.parse().ok().map(PartitionId);
                self.get(topic)
                    .zip(index)
                    .is_some_and(|(t, i)| t.partitions.contains_key(&i))
            });
            if live {
                continue;
            }
            let owned = name.rsplit_once('-').is_some_and(|(topic, index)| {
                let index: Option<usize> = index.parse().ok();
                let meta = image.topics.get(topic);
                let assigned = meta
                    .zip(index)
                    .and_then(|(meta, i)| meta.partitions.get(i))
                    .is_some_and(|p| p.replicas.contains(&node));
                assigned && meta.is_some_and(|m| read_topic_id(&entry.path()) == Some(m.id))
            });
            if !owned {
                tracing::info!(
                    "removing {}: no topic on this broker owns it",
                    entry.path().display()
                );
                remove_dir(&entry.path());
            }
        }
    }

    /// Flushes and closes every log cleanly (graceful shutdown), so the next start skips
    /// recovery, with its HW checkpointed. A log something still holds is flushed and
    /// checkpointed instead. Blocking.
    pub fn close_all(&self) {
        let topics = std::mem::take(&mut *self.live.write().expect("topics lock"));
        let partitions: Vec<Arc<Partition>> = topics
            .values()
            .flat_map(|t| t.partitions.values().cloned())
            .collect();
        drop(topics);
        for partition in partitions {
            let name = partition.name();
            // The next start replays nothing to rebuild the producer state, and starts
            // from the HW this replica knew.
            if let Err(e) = partition.snapshot_producers(i64::MIN) {
                tracing::warn!(partition = %name, "producer state snapshot failed: {e}");
            }
            partition.checkpoint_high_watermark();
            let log = match Arc::try_unwrap(partition) {
                Ok(partition) => partition.into_log(),
                Err(shared) => Arc::clone(shared.log()),
            };
            let outcome = match Arc::try_unwrap(log) {
                Ok(log) => log.close(),
                Err(log) => {
                    // A task that outlived the shutdown's drain still holds it (an ISR
                    // change or a group write in flight, or a flusher thread); neither
                    // appends any more, so a flush, the runway cut and a checkpoint leave it
                    // as clean as a close.
                    tracing::debug!(partition = %name, "log still in use at shutdown; flushing it");
                    log.quiesce()
                }
            };
            if let Err(e) = outcome {
                tracing::error!(partition = %name, "closing log: {e}");
            }
        }
    }
}

/// A partition's leadership and ISR as replica `node` takes them. Unless `may_lead`, a
/// leadership of `node` is held back (the replica has no leader): a restarted broker's
/// own metadata may still make it the leader its previous run was, and until its
/// registration is applied (which fences that run and moves its leaderships) it must not
/// act on that: its log may have lost a tail its followers hold, and followers truncate to
/// what their leader says its epoch holds. The chaos suite lost acknowledged records so.
pub fn assignment(meta: &PartitionMeta, node: BrokerId, may_lead: bool) -> Assignment {
    let leader = match meta.leader == node && !may_lead {
        true => BrokerId::NONE,
        false => meta.leader,
    };
    Assignment {
        leader,
        leader_epoch: meta.leader_epoch,
        partition_epoch: meta.partition_epoch,
        replicas: meta.replicas.clone(),
        isr: meta.isr.clone(),
    }
}

/// `<data_dir>/topics`.
pub fn topics_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("topics")
}

/// `<data_dir>/topics/<topic>-<partition>` (DESIGN §5).
pub fn partition_dir(data_dir: &Path, topic: &str, index: PartitionId) -> PathBuf {
    topics_dir(data_dir).join(format!("{topic}-{}", index.0))
}

fn log_unopened(partition: &str, e: &sluice_storage::StorageError) {
    tracing::error!(
        partition = %partition,
        "cannot open the replica: {e}; it stays unavailable on this broker until it can be \
         opened"
    );
}

/// The topic id a partition directory belongs to, if it says.
fn read_topic_id(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(PARTITION_METADATA_FILE)).ok()?;
    let mut lines = text.lines();
    if lines.next()? != PARTITION_METADATA_MAGIC {
        return None;
    }
    lines.next()?.strip_prefix("topic_id: ")?.parse().ok()
}

/// Writes the topic id into a partition directory, durably, unless it is already there.
fn write_topic_id(dir: &Path, id: u64) -> std::io::Result<()> {
    if read_topic_id(dir) == Some(id) {
        return Ok(());
    }
    write_durably(
        &dir.join(PARTITION_METADATA_FILE),
        format!("{PARTITION_METADATA_MAGIC}\ntopic_id: {id}\n").as_bytes(),
    )
}

/// Writes `path` whole or not at all (a temporary file renamed over it) and syncs it and
/// its directory.
fn write_durably(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::error!("removing {}: {e}; remove it by hand", dir.display());
        }
    }
}
