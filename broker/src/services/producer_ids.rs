//! InitProducerId: ids for idempotent producers, handed out from blocks this broker takes
//! from the controller (AllocateProducerIds), so ids are unique across the cluster with
//! one controller round trip per block rather than per producer.

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::messages::AllocateProducerIdsRequest;
use sluice_protocol::{BrokerId, ErrorCode, Request, Response};

use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::security::acl::Authorizer;
use crate::security::Principal;

/// How long a block request may wait for the controller.
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(10);

/// The ids left in this broker's current block: `next..end`.
#[derive(Debug, Default)]
struct ProducerIdBlock {
    next: i64,
    end: i64,
}

/// What InitProducerId asks, in service terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitProducer {
    /// A transactional id: refused here (the native listener asks the transaction
    /// coordinator, `crate::txn`, instead).
    pub transactional_id: Option<String>,
    /// The producer's current id, or -1 for a new producer.
    pub producer_id: i64,
    /// The producer's current epoch, or -1.
    pub producer_epoch: i16,
}

/// The producer id service.
pub struct ProducerIds {
    node_id: BrokerId,
    cluster: Arc<Cluster>,
    authorizer: Arc<Authorizer>,
    /// The ids left in the block taken from the controller. An async lock: taking a new
    /// block awaits the controller, and the next caller must wait for that block.
    block: tokio::sync::Mutex<ProducerIdBlock>,
}

impl ProducerIds {
    /// Ids for broker `node_id`, from blocks of `cluster`'s controller.
    pub fn new(
        node_id: BrokerId,
        cluster: Arc<Cluster>,
        authorizer: Arc<Authorizer>,
    ) -> ProducerIds {
        ProducerIds {
            node_id,
            cluster,
            authorizer,
            block: Default::default(),
        }
    }

    /// A producer id and epoch 0 for a new producer; the same id with the next epoch for a
    /// producer that asks to bump its own (KIP-360: after it lost track of its sequences).
    pub async fn init(
        &self,
        principal: &Principal,
        request: &InitProducer,
    ) -> Result<(i64, i16), ApiError> {
        // Kafka's KIP-679: an idempotent producer needs Write on some topic.
        if !self.authorizer.may_write_somewhere(principal) {
            tracing::info!(%principal, "denied a producer id: no Write on any topic");
            return Err(ApiError::new(
                ErrorCode::ClusterAuthorizationFailed,
                format!(
                    "{principal} may not write to any topic, so it gets no producer id; an \
                     administrator can allow writes with sluice acl add"
                ),
            ));
        }
        if request.transactional_id.is_some() {
            // Both listeners send these to the transaction coordinator (`crate::txn`); one
            // that reaches this service is a listener's bug.
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "a transactional id's producer id comes from its transaction coordinator",
            ));
        }
        if request.producer_id >= 0
            && request.producer_epoch >= 0
            && request.producer_epoch < i16::MAX
        {
            return Ok((request.producer_id, request.producer_epoch + 1));
        }
        Ok((self.new_id().await?, 0))
    }

    /// A producer id no one has had: the next of this broker's block (a new block from the
    /// controller when it is used up). The transaction coordinator takes its ids here too.
    pub async fn new_id(&self) -> Result<i64, ApiError> {
        let mut block = self.block.lock().await;
        if block.next >= block.end {
            *block = self.allocate().await?;
        }
        let id = block.next;
        block.next += 1;
        Ok(id)
    }

    async fn allocate(&self) -> Result<ProducerIdBlock, ApiError> {
        let request = Request::AllocateProducerIds(AllocateProducerIdsRequest {
            broker_id: self.node_id,
            broker_epoch: self.cluster.broker_epoch(),
        });
        match self
            .cluster
            .client
            .call(request, CONTROLLER_TIMEOUT)
            .await?
        {
            Response::AllocateProducerIds(r) if r.error_code == ErrorCode::None => {
                Ok(ProducerIdBlock {
                    next: r.producer_id_start,
                    end: r.producer_id_start + i64::from(r.producer_id_len),
                })
            }
            Response::AllocateProducerIds(r) => Err(ApiError::new(
                // Retriable for the producer: the broker registers again, or a controller
                // is elected.
                ErrorCode::CoordinatorNotAvailable,
                format!(
                    "no producer ids from the controller yet ({}: {}); retry shortly",
                    r.error_code.name(),
                    r.error_message.unwrap_or_default()
                ),
            )),
            other => Err(ApiError::new(
                ErrorCode::UnknownServerError,
                format!(
                    "the controller answered AllocateProducerIds with {:?}",
                    other.api_key()
                ),
            )),
        }
    }
}
