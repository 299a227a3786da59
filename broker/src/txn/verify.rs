//! The leader's side of KIP-890 (part 1): before a transactional batch begins its
//! producer's transaction in a partition, the produce service asks the transactional id's
//! coordinator whether the partition is in the producer's ongoing transaction. The
//! coordinator is the leader of `__transaction_state` partition `hash(id) % n`: this
//! broker's own [`Transactions`] when it leads it, else another broker, asked with VerifyTxn
//! (a sluice-only broker api) over a [`PeerConnection`].
//!
//! The answers become the produce's: a partition not in the transaction is
//! INVALID_TXN_STATE; a coordinator that is loading, moved, busy completing the
//! transaction or out of reach is NOT_ENOUGH_REPLICAS, which every client retries, as
//! Kafka's `ReplicaManager` does; PRODUCER_FENCED is INVALID_PRODUCER_EPOCH, what producers
//! expect from a produce.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_protocol::group_log::coordinator_partition;
use sluice_protocol::messages::{TopicPartitions, VerifyTxnRequest};
use sluice_protocol::txn_log::TRANSACTION_STATE_TOPIC;
use sluice_protocol::{BrokerId, ErrorCode, Request, Response};

use super::coordinator::Transactions;
use crate::cluster::image::{MetadataImage, NATIVE_LISTENER};
use crate::cluster::peer::{PeerConfig, PeerConnection, PeerError};
use crate::config::BrokerConfig;
use crate::error::ApiError;
use crate::services::admin::Admin;
use crate::services::produce::{TxnVerifier, Verified};
use crate::services::{map_topics, PartitionOutcome, TopicItems};

/// How long a produce's ordered phase waits for another broker's VerifyTxn answer.
const VERIFY_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept per coordinator broker (one is in use per produce that waits
/// for an answer; more are dialled when several wait at once, and dropped after).
const IDLE_PEERS_MAX: usize = 4;

/// Verifies with the coordinator of each transactional id, here or on another broker.
pub struct Verifier {
    node_id: BrokerId,
    admin: Admin,
    txns: Arc<Transactions>,
    peer: PeerConfig,
    /// Idle connections to other brokers, at most [`IDLE_PEERS_MAX`] each; taken for a
    /// call and given back after it. Never held across an await.
    idle: Mutex<HashMap<BrokerId, Vec<PeerConnection>>>,
}

impl Verifier {
    /// Asks `txns` when this broker coordinates the id, other brokers as `config` says to
    /// dial them; `admin` gives the metadata that says who coordinates what.
    pub fn new(config: &BrokerConfig, admin: Admin, txns: Arc<Transactions>) -> Verifier {
        Verifier {
            node_id: config.node_id,
            admin,
            txns,
            peer: crate::cluster::peer_config(config),
            idle: Mutex::new(HashMap::new()),
        }
    }

    async fn verify_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<TopicPartitions>,
    ) -> Verified {
        let image = self.admin.image();
        let answer = match coordinator_of(&image, id) {
            Err(e) => Err(e),
            Ok(coordinator) if coordinator == self.node_id => {
                self.txns.verify(id, producer_id, epoch, partitions).await
            }
            Ok(coordinator) => {
                let request = VerifyTxnRequest {
                    transactional_id: id.to_owned(),
                    producer_id,
                    producer_epoch: epoch,
                    topics: partitions,
                };
                self.verify_remote(&image, coordinator, request).await
            }
        };
        answer
            .map(|topics| {
                map_topics(
                    topics,
                    |p| PartitionOutcome {
                        partition: p.partition,
                        outcome: p.outcome.map_err(|e| for_produce(id, e)),
                    },
                    |topic, partitions| TopicItems { topic, partitions },
                )
            })
            .map_err(|e| for_produce(id, e))
    }

    /// VerifyTxn to broker `coordinator`.
    async fn verify_remote(
        &self,
        image: &MetadataImage,
        coordinator: BrokerId,
        request: VerifyTxnRequest,
    ) -> Result<Vec<TopicItems<PartitionOutcome<()>>>, ApiError> {
        let Some(address) = image
            .broker_address(coordinator, NATIVE_LISTENER)
            .map(|l| l.address())
        else {
            return Err(ApiError::new(
                ErrorCode::CoordinatorNotAvailable,
                format!("broker {coordinator} has no address yet"),
            ));
        };
        let mut peer = self.take_peer(coordinator, &address);
        let answer = peer
            .call(Request::VerifyTxn(request), VERIFY_CALL_TIMEOUT)
            .await;
        self.give_back(coordinator, peer);
        let answer = answer.map_err(|e| match e {
            PeerError::Api { code, message } => ApiError::new(code, message),
            other => ApiError::new(
                ErrorCode::NetworkException,
                format!("VerifyTxn to broker {coordinator}: {other}"),
            ),
        })?;
        let Response::VerifyTxn(r) = answer else {
            return Err(ApiError::new(
                ErrorCode::UnknownServerError,
                format!(
                    "broker {coordinator} answered VerifyTxn with {:?}",
                    answer.api_key()
                ),
            ));
        };
        Ok(crate::services::outcomes_from_wire(r.topics))
    }

    /// An idle connection to `broker` at `address`, or a new one.
    fn take_peer(&self, broker: BrokerId, address: &str) -> PeerConnection {
        let dial = self.peer.dial_address(broker, address);
        let mut idle = self.idle.lock().expect("idle peers lock");
        let list = idle.entry(broker).or_default();
        // The broker moved: its old connections lead nowhere.
        list.retain(|p| p.addr() == dial);
        list.pop()
            .unwrap_or_else(|| PeerConnection::new(broker, address, self.peer.clone()))
    }

    fn give_back(&self, broker: BrokerId, peer: PeerConnection) {
        let mut idle = self.idle.lock().expect("idle peers lock");
        let list = idle.entry(broker).or_default();
        if list.len() < IDLE_PEERS_MAX {
            list.push(peer);
        }
    }
}

impl TxnVerifier for Verifier {
    fn verify<'a>(
        &'a self,
        transactional_id: &'a str,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<TopicPartitions>,
    ) -> Pin<Box<dyn Future<Output = Verified> + Send + 'a>> {
        Box::pin(self.verify_partitions(transactional_id, producer_id, epoch, partitions))
    }
}

/// The broker that coordinates transactional id `id`: the leader of its
/// `__transaction_state` partition.
fn coordinator_of(image: &MetadataImage, id: &str) -> Result<BrokerId, ApiError> {
    let Some(topic) = image.topics.get(TRANSACTION_STATE_TOPIC) else {
        return Err(ApiError::new(
            ErrorCode::CoordinatorNotAvailable,
            format!("{TRANSACTION_STATE_TOPIC} does not exist (yet)"),
        ));
    };
    let index = coordinator_partition(id, topic.partitions.len() as u32);
    match topic.partition(index).map(|p| p.leader) {
        Some(leader) if leader != BrokerId::NONE => Ok(leader),
        _ => Err(ApiError::new(
            ErrorCode::CoordinatorNotAvailable,
            format!(
                "{TRANSACTION_STATE_TOPIC}-{} has no leader right now",
                index.0
            ),
        )),
    }
}

/// A coordinator's answer as the produce gives it: Kafka's mapping (`ReplicaManager`), so
/// clients retry what a retry can change and stop at what it cannot.
fn for_produce(id: &str, e: ApiError) -> ApiError {
    match e.code {
        ErrorCode::NotCoordinator
        | ErrorCode::CoordinatorLoadInProgress
        | ErrorCode::CoordinatorNotAvailable
        | ErrorCode::ConcurrentTransactions
        | ErrorCode::NetworkException
        | ErrorCode::RequestTimedOut => ApiError::new(
            ErrorCode::NotEnoughReplicas,
            format!(
                "could not verify with the transaction coordinator of {id:?} that the \
                 partition is in the producer's transaction ({}: {}); nothing was written: \
                 retry",
                e.code.name(),
                e.message
            ),
        ),
        ErrorCode::ProducerFenced => ApiError::new(ErrorCode::InvalidProducerEpoch, e.message),
        _ => e,
    }
}
