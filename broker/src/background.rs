//! The work every node runs in the background, spawned once the listeners are bound:
//! applying each new metadata image to the hosted replicas (and starting the replica
//! fetchers it calls for), this broker's registration and heartbeats ([`crate::lifecycle`]),
//! the controller's session checks (on voters), ISR upkeep ([`crate::replication`]), the
//! group coordinator's ticker, and partition maintenance: recovery-point checkpoints,
//! retention, the log cleaner (compaction), and the background flush of `replicated`
//! durability. Everything ends when shutdown begins.
//!
//! Why not in `broker.rs`: `Broker` is the state these tasks share; the tasks import it,
//! and it imports none of them, so the module graph has no cycle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_storage::{Clock, StorageError, SystemClock, Throttle};

use crate::broker::Broker;
use crate::config::DurabilityMode;
use crate::metrics::Metrics;
use crate::partition::Partition;
use crate::replication::Replication;

/// Spawns the background work of `broker`. The handle is the metadata applier's, which
/// ends, once shutdown begins, only after the replica fetchers it started have: awaited
/// before the logs close, so no fetcher holds or writes a log while it closes.
pub fn spawn(broker: &Arc<Broker>) -> tokio::task::JoinHandle<()> {
    let applier = tokio::spawn(apply_metadata(Arc::clone(broker)));
    tokio::spawn(crate::lifecycle::run(Arc::clone(broker)));
    if let Some(controller) = &broker.cluster.controller {
        tokio::spawn(Arc::clone(controller).run(broker.stopping()));
    }
    tokio::spawn(crate::replication::maintain_isr(Arc::clone(broker)));
    let image_of = Arc::clone(broker);
    tokio::spawn(
        Arc::clone(&broker.groups).run(move || image_of.cluster.image(), broker.stopping()),
    );
    tokio::spawn(Arc::clone(&broker.services.txns).run(broker.stopping()));
    spawn_maintenance(broker);
    applier
}

/// Applies every new metadata image to the hosted replicas (opening, deleting and
/// re-roling them on a blocking thread), then starts fetchers for new leaders and moves
/// the group coordinator's shards with the leadership of `__consumer_offsets` and the
/// transaction coordinator's with that of `__transaction_state`.
async fn apply_metadata(broker: Arc<Broker>) {
    let replication = Replication::default();
    let mut applied = broker.cluster.applied();
    let mut stopping = broker.stopping();
    loop {
        let (index, image) = {
            let a = applied.borrow_and_update();
            (a.index, Arc::clone(&a.image))
        };
        // Leaderships count only from images that hold this run's registration.
        let epoch = broker.cluster.broker_epoch();
        let may_lead = epoch >= 0 && index >= epoch as u64;
        let topics = Arc::clone(&broker.topics);
        let image_for_topics = Arc::clone(&image);
        let done =
            tokio::task::spawn_blocking(move || topics.reconcile(&image_for_topics, may_lead))
                .await;
        if let Err(e) = done {
            tracing::error!("applying metadata to the replicas failed: {e}");
        }
        broker.topics.mark_reconciled(index);
        replication.start_fetchers(&broker);
        broker.groups.on_image(&image, |index| {
            let topic = broker
                .topics
                .get(sluice_protocol::group_log::OFFSETS_TOPIC)?;
            topic.partitions.get(&index).cloned()
        });
        broker.services.txns.on_image(&image, |index| {
            let topic = broker
                .topics
                .get(sluice_protocol::txn_log::TRANSACTION_STATE_TOPIC)?;
            topic.partitions.get(&index).cloned()
        });
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { break },
            _ = broker.registered() => {}
            _ = stopping.wait_for(|s| *s) => break,
        }
    }
    replication.stop_fetchers().await;
}

fn spawn_maintenance(broker: &Arc<Broker>) {
    let every = |period: Duration, job: fn(&Partition)| {
        tokio::spawn(run_periodically(Arc::clone(broker), period, job))
    };
    every(broker.config.checkpoint_interval(), checkpoint);
    every(broker.config.retention_check_interval(), apply_retention);
    tokio::spawn(run_cleaner(Arc::clone(broker)));
    if broker.config.durability == DurabilityMode::Replicated {
        every(
            Duration::from_millis(broker.config.flush_interval_ms.max(1)),
            background_flush,
        );
    }
}

/// A ticker whose next tick is `period` from now (the immediate first one is taken), and
/// which waits a whole period after a late tick rather than catching up.
async fn ticker(period: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    ticker
}

/// Runs `job` over every hosted partition every `period`, on the blocking pool, until
/// shutdown begins.
async fn run_periodically(broker: Arc<Broker>, period: Duration, job: fn(&Partition)) {
    let mut stopping = broker.stopping();
    let mut ticker = ticker(period).await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        let partitions = broker.topics.all_partitions();
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

/// The log cleaner: every `log_cleaner_interval_ms`, one pass over the hosted replicas of
/// compacted topics, one at a time on one blocking thread (Kafka's default of one cleaner
/// thread), each cleaned when its dirty ratio calls for it. The I/O of a pass shares one
/// budget (`log_cleaner_io_bytes_per_sec`), so the cleaner takes a bounded share of the
/// disk from producers and consumers. A run in progress stops at shutdown and changes
/// nothing (its files are removed).
async fn run_cleaner(broker: Arc<Broker>) {
    let mut stopping = broker.stopping();
    let stop = Arc::new(AtomicBool::new(false));
    let mut ticker = ticker(broker.config.log_cleaner_interval()).await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        let partitions = broker.topics.all_partitions();
        let bytes_per_sec = broker.config.log_cleaner_io_bytes_per_sec;
        let map_bytes =
            usize::try_from(broker.config.log_cleaner_dedupe_buffer_bytes).unwrap_or(usize::MAX);
        let stop_pass = Arc::clone(&stop);
        let metrics = Arc::clone(&broker.metrics);
        let pass = tokio::task::spawn_blocking(move || {
            let mut throttle = Throttle::new(Some(bytes_per_sec), Some(stop_pass));
            for partition in partitions {
                clean(&partition, map_bytes, &mut throttle, &metrics);
            }
        });
        tokio::pin!(pass);
        let finished = tokio::select! {
            ran = &mut pass => Some(ran),
            _ = stopping.wait_for(|s| *s) => None,
        };
        let Some(ran) = finished else {
            // Shutdown: the run in progress stops at its next read or write, before the
            // logs close.
            stop.store(true, Ordering::Relaxed);
            let _ = pass.await;
            return;
        };
        if let Err(e) = ran {
            tracing::error!("log cleaner pass failed: {e}");
        }
    }
}

/// One cleaner run over one replica, logged and counted.
fn clean(partition: &Partition, map_bytes: usize, throttle: &mut Throttle, metrics: &Metrics) {
    let started = std::time::Instant::now();
    let ran = partition.clean_log(false, map_bytes, throttle);
    if let Ok(Some(report)) = &ran {
        metrics.cleaned(report, started.elapsed());
    }
    match ran {
        Ok(None) => {}
        Ok(Some(report)) if report.swapped => tracing::info!(
            partition = %partition.name(),
            "log cleaner: {} segment(s), {} -> {} bytes, {} record(s) removed, swapped in {:.1} ms",
            report.segments_replaced,
            report.bytes_before,
            report.bytes_after,
            report.records_removed,
            report.swap_micros as f64 / 1000.0
        ),
        Ok(Some(_)) => tracing::info!(
            partition = %partition.name(),
            "log cleaner: the log changed during the run (retention or truncation); it runs again next time"
        ),
        Err(StorageError::CleanerStopped { .. }) => {}
        Err(e) => {
            let retry = partition.cleaner_retry_in().unwrap_or_default();
            tracing::warn!(
                partition = %partition.name(),
                "log cleaner failed: {e}; it tries this partition again in {} s",
                retry.as_secs()
            )
        }
    }
}

/// How long an idle producer's sequences are kept (Kafka's
/// `transactional.id.expiration.ms` default, which also bounds idempotent producers).
const PRODUCER_ID_EXPIRATION_MS: i64 = 7 * 24 * 3600 * 1000;

/// A checkpoint of one partition (recovery point and producer state).
fn checkpoint(partition: &Partition) {
    partition.checkpoint(SystemClock.now_ms() - PRODUCER_ID_EXPIRATION_MS);
}

/// Retention of one partition.
fn apply_retention(partition: &Partition) {
    partition.apply_retention();
}

/// The background flush of one partition (`replicated` durability).
fn background_flush(partition: &Partition) {
    partition.background_flush();
}
