//! This broker's life in the cluster: it registers with the active controller (a new
//! incarnation id per process run, so the controller can tell a restart from a retry),
//! then heartbeats every `heartbeat_interval_ms`. The controller keeps it fenced until its
//! metadata has caught up with its registration; unfenced, it may lead and join ISRs.
//! A heartbeat refused as stale (the controller fenced this registration) registers again.
//! During a graceful shutdown the heartbeat asks the controller to move this broker's
//! leaderships away, and the answer says when that is done.

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::messages::{
    BrokerHeartbeatRequest, BrokerRegistrationRequest, Listener, ReplicaLogEnd, ReplicaRef,
};
use sluice_protocol::{ErrorCode, Request, Response};

use crate::broker::Broker;
use crate::cluster::client::ControllerClient;
use crate::cluster::image::{KAFKA_LISTENER, NATIVE_LISTENER};

/// Pause between failed registrations.
const REGISTER_BACKOFF: Duration = Duration::from_millis(300);

/// Registers and heartbeats until shutdown.
pub async fn run(broker: Arc<Broker>) {
    let cluster = &broker.cluster;
    // Heartbeats get their own connection: its closing tells the controller this broker
    // may be gone (see `controller::Controller::connection_lost`).
    let heartbeats = ControllerClient::new(
        broker.config.clone(),
        cluster.raft.clone(),
        cluster.controller.clone(),
    );
    let incarnation_id = crate::data_dir::random_bytes();
    let mut orphans_removed = false;
    'register: while !broker.is_stopping() {
        let epoch = match register(&broker, incarnation_id).await {
            Some(epoch) => epoch,
            None => {
                tokio::time::sleep(REGISTER_BACKOFF).await;
                continue;
            }
        };
        cluster.set_broker_epoch(epoch);
        broker.note_registered();
        let mut ticker = tokio::time::interval(broker.config.heartbeat_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = broker.stopping();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            let want_shutdown = broker.shutdown_requested();
            // The reconciled index, not the applied one: the controller unfences this
            // broker once it is caught up, and by then every replica it hosts must be open
            // and its damage in `damaged` below (read after the index, so it is complete).
            let reconciled = broker.reconciled_index();
            let damaged = broker.topics.unreported_damage();
            let request = Request::BrokerHeartbeat(BrokerHeartbeatRequest {
                broker_id: broker.config.node_id,
                broker_epoch: epoch,
                current_metadata_offset: reconciled as i64,
                want_fence: false,
                want_shutdown,
                damaged: damaged
                    .iter()
                    .map(|(topic, partition)| ReplicaRef {
                        topic: topic.clone(),
                        partition: *partition,
                    })
                    .collect(),
                log_ends: log_ends_awaited(&broker),
            });
            let answer = heartbeats
                .call(request, broker.config.session_timeout())
                .await;
            let answer = match answer {
                Ok(Response::BrokerHeartbeat(answer)) => answer,
                Ok(other) => {
                    tracing::warn!("unexpected heartbeat answer {:?}", other.api_key());
                    continue;
                }
                Err(e) => {
                    tracing::debug!("heartbeat failed: {}", e.message);
                    if want_shutdown {
                        broker.no_controller_for_shutdown();
                    }
                    continue;
                }
            };
            match answer.error_code {
                ErrorCode::None => {}
                ErrorCode::StaleBrokerEpoch | ErrorCode::BrokerIdNotRegistered => {
                    tracing::warn!(
                        "the controller no longer knows this registration ({}); registering \
                         again",
                        answer.error_message.unwrap_or_default()
                    );
                    broker.set_fenced(true);
                    continue 'register;
                }
                code => {
                    tracing::debug!("heartbeat refused: {code:?} {:?}", answer.error_message);
                    continue;
                }
            }
            if !damaged.is_empty() {
                // The controller recorded it before answering.
                broker.topics.damage_reported(&damaged);
            }
            broker.set_fenced(answer.is_fenced);
            if !answer.is_fenced && !orphans_removed {
                orphans_removed = true;
                remember_cluster_id(&broker);
                // Caught up with the controller: directories the image does not assign to
                // this broker are leftovers (topics deleted while it was down, creations
                // cut by a crash).
                let image = cluster.image();
                let b = Arc::clone(&broker);
                let _ = tokio::task::spawn_blocking(move || b.topics.remove_orphans(&image)).await;
            }
            if want_shutdown && answer.should_shutdown {
                broker.grant_shutdown();
            }
        }
    }
}

/// The log ends of the hosted replicas whose partitions await a longest-log election.
fn log_ends_awaited(broker: &Broker) -> Vec<ReplicaLogEnd> {
    let image = broker.cluster.image();
    let mut ends = Vec::new();
    for (name, topic, meta) in image.partitions_on(broker.config.node_id) {
        if !meta.awaiting_log_ends {
            continue;
        }
        let Some(partition) = broker
            .topics
            .get(name)
            .filter(|hosted| hosted.id == topic.id)
            .and_then(|topic| topic.partitions.get(&meta.index).cloned())
        else {
            continue;
        };
        let state = partition.follower_fetch_state();
        ends.push(ReplicaLogEnd {
            topic: name.to_string(),
            partition: meta.index,
            partition_epoch: meta.partition_epoch,
            last_epoch: state.last_fetched_epoch,
            log_end: state.fetch_offset,
        });
    }
    ends
}

/// The listeners this broker advertises: the native one at `host:port`, and the Kafka one
/// when it is on.
fn listeners(broker: &Broker, host: String, port: u16) -> Vec<Listener> {
    let mut listeners = vec![Listener {
        name: NATIVE_LISTENER.into(),
        host,
        port,
    }];
    let kafka = broker
        .kafka_address()
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)));
    if let Some((host, port)) = kafka {
        listeners.push(Listener {
            name: KAFKA_LISTENER.into(),
            host,
            port,
        });
    }
    listeners
}

/// One registration attempt; the broker epoch, or `None` to retry.
async fn register(broker: &Broker, incarnation_id: [u8; 16]) -> Option<i64> {
    let (host, port) = broker
        .config
        .advertise
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.parse().unwrap_or(0)))?;
    let cluster_id = broker
        .identity
        .lock()
        .expect("identity lock")
        .0
        .cluster_id
        .clone();
    let request = Request::BrokerRegistration(BrokerRegistrationRequest {
        broker_id: broker.config.node_id,
        cluster_id,
        incarnation_id,
        listeners: listeners(broker, host, port),
        rack: broker.config.rack.clone(),
    });
    match broker
        .cluster
        .client
        .call(request, Duration::from_secs(5))
        .await
    {
        Ok(Response::BrokerRegistration(r)) if r.error_code == ErrorCode::None => {
            tracing::info!(epoch = r.broker_epoch, "registered with the controller");
            Some(r.broker_epoch)
        }
        Ok(Response::BrokerRegistration(r)) => {
            tracing::error!(
                "the controller refused the registration: {}",
                r.error_message
                    .unwrap_or_else(|| format!("{:?}", r.error_code))
            );
            None
        }
        Ok(other) => {
            tracing::warn!("unexpected registration answer {:?}", other.api_key());
            None
        }
        Err(e) => {
            tracing::debug!("registration failed: {}", e.message);
            None
        }
    }
}

/// Saves the cluster id in the node identity file once the node has joined, so it can
/// never join another cluster with this data.
fn remember_cluster_id(broker: &Broker) {
    let cluster_id = broker.cluster.image().cluster_id.clone();
    if cluster_id.is_empty() {
        return;
    }
    let mut identity = broker.identity.lock().expect("identity lock");
    if identity.0.cluster_id == cluster_id {
        return;
    }
    identity.0.cluster_id = cluster_id;
    if let Err(e) = identity.1.store(&identity.0) {
        tracing::warn!("could not save the cluster id: {e}");
    }
}
