//! The node's shared state ([`Broker`]): configuration, topics, and the shutdown signal;
//! plus the background maintenance every partition needs (checkpoints, retention, the
//! background flush of `replicated` durability).

use std::sync::Arc;
use std::time::Duration;

use sluice_storage::{Clock, SystemClock};
use tokio::sync::watch;

use crate::config::{BrokerConfig, DurabilityMode};
use crate::error::BrokerError;
use crate::partition::Partition;
use crate::topics::Topics;

/// Everything a request handler may use. Shared by every connection as `Arc<Broker>`.
pub struct Broker {
    /// The effective configuration.
    pub config: BrokerConfig,
    /// Topics and their partitions.
    pub topics: Topics,
    /// `true` once shutdown began: long polls end, connections stop reading.
    stopping: watch::Sender<bool>,
}

impl Broker {
    /// Opens the data directory (recovering partitions after a crash) on a blocking thread.
    pub async fn open(config: BrokerConfig) -> Result<Arc<Broker>, BrokerError> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let topics = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || Topics::open(&config, clock))
                .await
                .map_err(|e| BrokerError::DataDir(format!("opening the data directory: {e}")))??
        };
        Ok(Arc::new(Broker {
            config,
            topics,
            stopping: watch::channel(false).0,
        }))
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

    /// Spawns the periodic maintenance tasks; they end when shutdown begins.
    pub fn spawn_maintenance(self: &Arc<Broker>) {
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
}

/// Writes the recovery point, bounding the rescan after a crash. Skips deleted partitions
/// under the log lock, so nothing is written into the directory of a deleted topic.
fn checkpoint(partition: &Partition) {
    let mut log = partition.log().write();
    if partition.is_deleted() {
        return;
    }
    if let Err(e) = log.checkpoint() {
        tracing::warn!(partition = %partition.name(), "checkpoint failed: {e}");
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
