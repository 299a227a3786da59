//! The node's shared state ([`Broker`]): configuration, the cluster (metadata log,
//! controller), the hosted topics, replication, and the shutdown signals; plus the
//! background work every node runs: applying metadata images to the hosted replicas,
//! checkpoints, retention, and the background flush of `replicated` durability.

use std::sync::Arc;
use std::time::Duration;

use sluice_storage::{Clock, SystemClock};
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::config::{BrokerConfig, DurabilityMode};
use crate::error::BrokerError;
use crate::groups::group::GroupTimings;
use crate::groups::GroupCoordinator;
use crate::metadata::{DataDirLock, NodeFile, NodeIdentity};
use crate::partition::Partition;
use crate::replication::Replication;
use crate::services::Services;
use crate::topics::Topics;

/// Everything a request handler may use. Shared by every connection as `Arc<Broker>`.
pub struct Broker {
    /// The effective configuration.
    pub config: BrokerConfig,
    /// The metadata log, the controller and the way to it.
    pub cluster: Arc<Cluster>,
    /// Topics and partition replicas hosted here.
    pub topics: Arc<Topics>,
    /// Replica fetchers and ISR maintenance.
    pub replication: Replication,
    /// The consumer groups of the `__consumer_offsets` partitions led here.
    pub groups: Arc<GroupCoordinator>,
    /// The services the listeners' handlers call.
    pub services: Arc<Services>,
    /// Who owns the data directory, and the cluster it joined.
    pub identity: std::sync::Mutex<(NodeIdentity, NodeFile)>,
    /// The address Kafka clients connect to, once the Kafka listener is bound; registered
    /// with the controller as the `kafka` listener.
    kafka_address: std::sync::OnceLock<String>,
    /// This process's exclusive lock on the data directory, released by
    /// [`Broker::release_data_dir`] once everything in it is closed.
    data_dir_lock: std::sync::Mutex<Option<DataDirLock>>,
    /// Wakes the metadata application when this broker (re)registers: leaderships held
    /// back until then may be taken.
    registered: tokio::sync::Notify,
    /// `Some(fenced)` once registered: whether the controller fences this broker.
    fenced: watch::Sender<Option<bool>>,
    /// Graceful shutdown asked the controller to move leaderships away...
    shutdown_requested: watch::Sender<bool>,
    /// ...and the controller confirmed it.
    shutdown_granted: watch::Sender<bool>,
    /// `true` once shutdown began: long polls end, connections stop reading.
    stopping: watch::Sender<bool>,
}

impl Broker {
    /// Opens the data directory and starts the metadata log. Partitions open when the
    /// first metadata image is applied ([`Broker::spawn_background`]).
    pub async fn open(config: BrokerConfig) -> Result<Arc<Broker>, BrokerError> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (lock, topics, identity) = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || {
                // First of all: nothing in the directory is read or written unlocked.
                let lock = DataDirLock::acquire(&config.data_dir)?;
                let file = NodeFile::new(&config.data_dir);
                let identity = file.load_or_create(config.node_id)?;
                let topics = Topics::open(&config, clock)?;
                Ok::<_, BrokerError>((lock, topics, (identity, file)))
            })
            .await
            .map_err(|e| BrokerError::DataDir(format!("opening the data directory: {e}")))??
        };
        let cluster = Arc::new(Cluster::start(&config).await?);
        let topics = Arc::new(topics);
        let timings = GroupTimings {
            initial_delay: Duration::from_millis(config.group_initial_rebalance_delay_ms),
        };
        let groups = Arc::new(GroupCoordinator::new(config.node_id, timings));
        let stopping = watch::channel(false).0;
        let services = Arc::new(Services::new(
            &config,
            &cluster,
            &topics,
            &groups,
            stopping.subscribe(),
        ));
        Ok(Arc::new(Broker {
            groups,
            services,
            config,
            cluster,
            topics,
            replication: Replication::default(),
            identity: std::sync::Mutex::new(identity),
            data_dir_lock: std::sync::Mutex::new(Some(lock)),
            kafka_address: std::sync::OnceLock::new(),
            registered: tokio::sync::Notify::new(),
            fenced: watch::channel(None).0,
            shutdown_requested: watch::channel(false).0,
            shutdown_granted: watch::channel(false).0,
            stopping,
        }))
    }

    /// Records the address Kafka clients connect to (call before the broker registers).
    pub fn set_kafka_address(&self, address: String) {
        let _ = self.kafka_address.set(address);
    }

    /// The address Kafka clients connect to, when the Kafka listener is on.
    pub fn kafka_address(&self) -> Option<&str> {
        self.kafka_address.get().map(String::as_str)
    }

    /// Whether the cluster is this node alone (the default): it then waits to be ready
    /// before it serves, as a single process would.
    pub fn is_single_node(&self) -> bool {
        self.config.voters.len() == 1 && self.config.is_voter()
    }

    /// Waits until this broker is registered, unfenced, and its replicas reconciled with
    /// the metadata applied then, or `timeout` passes. Returns whether it got there.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let ready = async {
            let mut fenced = self.fenced.subscribe();
            if fenced.wait_for(|f| *f == Some(false)).await.is_err() {
                return;
            }
            let index = self.cluster.applied_index();
            self.topics.wait_reconciled(index, Duration::MAX).await;
        };
        tokio::time::timeout(timeout, ready).await.is_ok()
    }

    /// This broker registered (again): re-applies the metadata, so leaderships held back
    /// until the registration are taken.
    pub fn note_registered(&self) {
        self.registered.notify_one();
    }

    /// The metadata index the hosted replicas last reconciled with: every replica the
    /// image at that index gives this broker is open.
    pub fn reconciled_index(&self) -> u64 {
        self.topics.reconciled_index()
    }

    /// Waits until the hosted replicas reflect the applied metadata at `index` or later.
    pub async fn wait_reconciled(&self, index: u64, timeout: Duration) {
        self.topics.wait_reconciled(index, timeout).await;
    }

    /// Records whether the controller fences this broker.
    pub fn set_fenced(&self, fenced: bool) {
        self.fenced.send_replace(Some(fenced));
    }

    /// Whether graceful shutdown asked to move leaderships away.
    pub fn shutdown_requested(&self) -> bool {
        *self.shutdown_requested.borrow()
    }

    /// The controller moved this broker's leaderships away: it may stop.
    pub fn grant_shutdown(&self) {
        self.shutdown_granted.send_replace(true);
    }

    /// The first step of a graceful shutdown (DESIGN §7): asks the controller, through the
    /// next heartbeat, to move this broker's leaderships to other in-sync replicas, and
    /// waits for that (at most `timeout`) while still serving, so producers that retry
    /// see NOT_LEADER_OR_FOLLOWER and move on, not errors.
    pub async fn controlled_shutdown(&self, timeout: Duration) {
        if *self.fenced.borrow() != Some(false) {
            return;
        }
        let node = self.config.node_id;
        if !self
            .cluster
            .image()
            .active_brokers()
            .iter()
            .any(|b| *b != node)
        {
            // The last broker up (or a single node): no one can take its leaderships, and
            // with the others gone the controller may have no quorum to confirm.
            tracing::info!("no other active broker to move leaderships to; shutting down");
            return;
        }
        self.shutdown_requested.send_replace(true);
        let mut granted = self.shutdown_granted.subscribe();
        let confirmed = tokio::time::timeout(timeout, granted.wait_for(|g| *g))
            .await
            .is_ok();
        match confirmed {
            true => {
                // Let the local replicas take their new roles before connections close.
                let index = self.cluster.applied_index();
                self.wait_reconciled(index, Duration::from_secs(1)).await;
                tracing::info!("leaderships moved; shutting down")
            }
            false => tracing::warn!("the controller did not confirm the controlled shutdown in {timeout:?}; shutting down anyway"),
        }
    }

    /// A receiver that turns `true` when shutdown begins.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Begins shutdown: long polls return, connections stop reading new requests.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    /// Spawns the background work: metadata application, registration and heartbeats,
    /// the controller's session checks, replication upkeep, and partition maintenance.
    /// Everything ends when shutdown begins.
    pub fn spawn_background(self: &Arc<Broker>) {
        tokio::spawn(Arc::clone(self).apply_metadata());
        tokio::spawn(crate::cluster::lifecycle::run(Arc::clone(self)));
        if let Some(controller) = &self.cluster.controller {
            tokio::spawn(Arc::clone(controller).run(self.stopping()));
        }
        tokio::spawn(crate::replication::maintain_isr(Arc::clone(self)));
        let broker = Arc::clone(self);
        tokio::spawn(Arc::clone(&self.groups).run(move || broker.cluster.image(), self.stopping()));
        self.spawn_maintenance();
    }

    /// Applies every new metadata image to the hosted replicas (opening, deleting and
    /// re-roling them on a blocking thread), then starts fetchers for new leaders.
    async fn apply_metadata(self: Arc<Self>) {
        let mut applied = self.cluster.applied();
        let mut stopping = self.stopping();
        loop {
            let (index, image) = {
                let a = applied.borrow_and_update();
                (a.index, Arc::clone(&a.image))
            };
            // Leaderships count only from images that hold this run's registration.
            let epoch = self.cluster.broker_epoch();
            let may_lead = epoch >= 0 && index >= epoch as u64;
            let broker = Arc::clone(&self);
            let image_for_topics = Arc::clone(&image);
            let done = tokio::task::spawn_blocking(move || {
                broker.topics.reconcile(&image_for_topics, may_lead)
            })
            .await;
            if let Err(e) = done {
                tracing::error!("applying metadata to the replicas failed: {e}");
            }
            self.topics.mark_reconciled(index);
            self.replication.start_fetchers(&self);
            self.groups.on_image(&image, |index| {
                let topic = self.topics.get(sluice_protocol::group_log::OFFSETS_TOPIC)?;
                topic.partitions.get(&index).cloned()
            });
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { return },
                _ = self.registered.notified() => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }

    fn spawn_maintenance(self: &Arc<Broker>) {
        let every = |period: Duration, job: fn(&Partition)| {
            let broker = Arc::clone(self);
            tokio::spawn(async move { broker.run_periodically(period, job).await })
        };
        every(self.config.checkpoint_interval(), checkpoint);
        every(self.config.retention_check_interval(), apply_retention);
        if self.config.durability == DurabilityMode::Replicated {
            every(
                Duration::from_millis(self.config.flush_interval_ms.max(1)),
                background_flush,
            );
        }
    }

    async fn run_periodically(&self, period: Duration, job: fn(&Partition)) {
        let mut stopping = self.stopping();
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            let partitions = self.topics.all_partitions();
            let ran = tokio::task::spawn_blocking(move || {
                for partition in partitions {
                    job(&partition);
                }
            })
            .await;
            if let Err(e) = ran {
                tracing::error!("maintenance task failed: {e}");
            }
        }
    }

    /// Flushes and closes every log (the end of a graceful shutdown). Blocking.
    pub fn close(&self) {
        self.topics.close_all();
    }

    /// Releases the data directory's lock, once its logs and the metadata log are closed,
    /// so that another broker (or this one, restarted in the same process) may open it.
    pub fn release_data_dir(&self) {
        self.data_dir_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

/// How long an idle producer's sequences are kept (Kafka's
/// `transactional.id.expiration.ms` default, which also bounds idempotent producers).
const PRODUCER_ID_EXPIRATION_MS: i64 = 7 * 24 * 3600 * 1000;

/// Writes the recovery point, bounding the rescan after a crash; snapshots the producer
/// state, bounding its rebuild. Skips deleted partitions
/// under the log lock, so nothing is written into the directory of a deleted topic.
fn checkpoint(partition: &Partition) {
    let mut log = partition.log().write();
    if partition.is_deleted() {
        return;
    }
    if let Err(e) = log.checkpoint() {
        tracing::warn!(partition = %partition.name(), "checkpoint failed: {e}");
    }
    drop(log);
    let expire_before = SystemClock.now_ms() - PRODUCER_ID_EXPIRATION_MS;
    if let Err(e) = partition.snapshot_producers(expire_before) {
        tracing::warn!(partition = %partition.name(), "producer state snapshot failed: {e}");
    }
}

/// Deletes whole segments past retention, never at or above the HW.
fn apply_retention(partition: &Partition) {
    let high_watermark = partition.high_watermark();
    let mut log = partition.log().write();
    if partition.is_deleted() {
        return;
    }
    match log.apply_retention(high_watermark) {
        Ok(0) => {}
        Ok(n) => tracing::info!(partition = %partition.name(), "retention deleted {n} segment(s)"),
        Err(e) => tracing::warn!(partition = %partition.name(), "retention failed: {e}"),
    }
}

/// The background flush of `replicated` durability. The HW is already the log end there,
/// so a flush makes nothing newly visible; a failed one takes the partition offline.
fn background_flush(partition: &Partition) {
    if partition.is_deleted() {
        return;
    }
    match partition.log().flush() {
        Ok(()) => {}
        Err(_) if partition.log().is_retired() => {}
        Err(e) => partition.take_offline(format!("a background fsync failed: {e}")),
    }
}
