//! How a broker reaches the active controller: the Raft leader its own metadata log names
//! (every node is a voter or a learner, so every node knows it), or, before it knows one,
//! each voter in turn. On the controller itself the call is local. NOT_CONTROLLER and
//! connection failures are retried until the deadline: a controller election takes about
//! a second.

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::{BrokerId, ErrorCode, Request, Response};
use tokio::time::Instant;

use super::controller::Controller;
use super::peer::{PeerConnection, PeerError};
use super::raft::{NodeId, Raft};
use crate::config::BrokerConfig;
use crate::error::ApiError;

/// Pause between attempts while no controller answers.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// How long one call waits while the quorum has no leader at all before it gives up with
/// an account of which voters answered: the client retries (NOT_CONTROLLER is retriable)
/// and can tell its user what it waits for, instead of one request going silent for its
/// whole timeout. An election normally takes about a second.
const NO_LEADER_WAIT: Duration = Duration::from_secs(3);

/// A connection to whichever node is the active controller.
pub struct ControllerClient {
    config: BrokerConfig,
    raft: Raft,
    /// This node's controller logic, when it is a voter.
    local: Option<Arc<Controller>>,
    /// The connection in use and the address it goes to.
    connection: tokio::sync::Mutex<Option<(String, PeerConnection)>>,
}

impl ControllerClient {
    /// A client for this node.
    pub fn new(
        config: BrokerConfig,
        raft: Raft,
        local: Option<Arc<Controller>>,
    ) -> ControllerClient {
        ControllerClient {
            config,
            raft,
            local,
            connection: tokio::sync::Mutex::new(None),
        }
    }

    /// Where the active controller is: `None` for this node, else its id and address.
    fn target(&self, attempt: usize) -> Option<(BrokerId, String)> {
        let me = self.config.node_id.0 as NodeId;
        let leader = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            m.current_leader.map(|id| {
                let address = m
                    .membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| n.addr.clone());
                (id, address)
            })
        };
        match leader {
            Some((id, _)) if id == me && self.local.is_some() => None,
            Some((id, Some(address))) => Some((BrokerId(id as i32), address)),
            _ => {
                let voters = &self.config.voters;
                let voter = &voters[attempt % voters.len()];
                (voter.id != self.config.node_id || self.local.is_none())
                    .then(|| (voter.id, voter.address.clone()))
            }
        }
    }

    /// Sends a controller request and returns the answer, retrying NOT_CONTROLLER and
    /// unreachable controllers until `timeout` passes.
    pub async fn call(&self, request: Request, timeout: Duration) -> Result<Response, ApiError> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut attempt = 0;
        let mut voters = VoterReplies::default();
        loop {
            let target = self.target(attempt);
            let outcome = match &target {
                None => match &self.local {
                    Some(local) => local.handle(request.clone()).await,
                    None => unreachable!("target is None only with a local controller"),
                },
                Some((id, address)) => self.remote(*id, address, request.clone(), deadline).await,
            };
            attempt += 1;
            let asked = target.map_or(self.config.node_id, |(id, _)| id);
            voters.record(asked, &outcome);
            match outcome {
                Err(e) if retriable(&e) && Instant::now() + RETRY_BACKOFF < deadline => {
                    tracing::debug!("controller request failed ({}); retrying", e.message);
                    if self.leader().is_none() && start.elapsed() >= NO_LEADER_WAIT {
                        return Err(voters.no_leader(&self.config));
                    }
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                other => return other,
            }
        }
    }

    /// The Raft leader this node knows of, if any.
    fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    async fn remote(
        &self,
        id: BrokerId,
        address: &str,
        request: Request,
        deadline: Instant,
    ) -> Result<Response, ApiError> {
        let mut connection = self.connection.lock().await;
        if connection.as_ref().is_none_or(|(a, _)| a != address) {
            *connection = Some((
                address.to_string(),
                PeerConnection::new(id, address, super::peer_config(&self.config)),
            ));
        }
        let (_, peer) = connection.as_mut().expect("set above");
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        // A controller that hangs (SIGSTOP, a cut link) would hold the call for all of
        // `left`, seconds after the quorum elected another: give up on it once this node's
        // metadata log names a new leader, and retry there.
        let answer = tokio::select! {
            answer = peer.call(request, left) => answer,
            () = leader_other_than(self.raft.metrics(), id) => {
                // The answer may still arrive on that socket: never read it.
                *connection = None;
                return Err(ApiError::new(
                    ErrorCode::NotController,
                    format!(
                        "broker {id} stopped being the controller while the request waited; \
                         retrying at the new one"
                    ),
                ));
            }
        };
        answer.map_err(|e| match e {
            PeerError::Api { code, message } => ApiError::new(code, message),
            other => ApiError::new(
                ErrorCode::NetworkException,
                format!("controller at {address} unreachable: {other}"),
            ),
        })
    }
}

/// Returns once `metrics` names a Raft leader other than `id` (not while there is none:
/// `id` may yet win the election under way).
async fn leader_other_than(
    mut metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, openraft::BasicNode>>,
    id: BrokerId,
) {
    let moved = |m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>| {
        m.current_leader
            .is_some_and(|leader| leader != id.0 as NodeId)
    };
    if metrics.wait_for(moved).await.is_err() {
        // The Raft node stopped: the call's own deadline decides.
        std::future::pending::<()>().await;
    }
}

fn retriable(e: &ApiError) -> bool {
    matches!(
        e.code,
        ErrorCode::NotController | ErrorCode::NetworkException | ErrorCode::RequestTimedOut
    )
}

/// Which voters answered a controller call's attempts (anything, even "not the
/// controller", counts): the account of a quorum without a leader.
#[derive(Default)]
struct VoterReplies {
    answered: std::collections::BTreeSet<i32>,
}

impl VoterReplies {
    fn record(&mut self, voter: BrokerId, outcome: &Result<Response, ApiError>) {
        if !matches!(outcome, Err(e) if e.code == ErrorCode::NetworkException) {
            self.answered.insert(voter.0);
        }
    }

    /// NOT_CONTROLLER saying the quorum has no leader, which voters do not answer and how
    /// many a leader needs.
    fn no_leader(&self, config: &BrokerConfig) -> ApiError {
        let n_voters = config.voters.len();
        let silent: Vec<String> = config
            .voters
            .iter()
            .map(|v| v.id.0)
            .filter(|id| !self.answered.contains(id))
            .map(|id| id.to_string())
            .collect();
        let needed = n_voters / 2 + 1;
        let account = if silent.is_empty() {
            format!(
                "all {n_voters} voters answer, so an election should end shortly; if it \
                 does not, check the voters' logs"
            )
        } else {
            format!(
                "{} of its {n_voters} voters answer (not {}) and a leader needs {needed}; \
                 start the missing voters or check the network between them",
                n_voters - silent.len(),
                silent.join(", ")
            )
        };
        ApiError::new(
            ErrorCode::NotController,
            format!("the controller quorum has no leader: {account}"),
        )
    }
}
