//! openraft's network over the native protocol: the sending side ([`Network`], a
//! [`RaftNetworkFactory`], and its per-target [`NetworkClient`]) and the serving side
//! ([`serve_vote`], [`serve_append_entries`], [`serve_install_snapshot`]) that the request
//! handlers call.
//!
//! Each openraft request travels as the opaque payload of `RaftVote`, `RaftAppendEntries`
//! or `RaftInstallSnapshot`, serialised with serde_json; the answer's payload is the remote
//! Raft's whole `Result`, so a refusal by the remote Raft (a fatal error, a snapshot
//! mismatch) comes back as [`RPCError::RemoteError`] exactly as openraft expects. Why
//! JSON: the metadata log's entries are JSON-friendly already, only brokers of the same
//! build talk Raft to each other, and the messages are small next to the frame limit
//! (snapshot chunks aside; see [`NetworkClient`]).
//!
//! Errors the transport meets become the [`RPCError`] whose retry behaviour fits:
//! a peer that cannot be dialled, that closes or resets the connection, or that answers
//! with a top-level error (it does not serve Raft, or not yet), is `Unreachable`, so
//! openraft backs off before trying it again (100 ms, the heartbeat interval, doubling to
//! 500 ms); an unreadable answer is `Network`; no answer within the RPC's soft TTL is
//! `Timeout`. Why a dropped connection backs off: openraft resends at once after a
//! `Network` error, so a peer that accepts connections and closes them (a broker going
//! down behind a TCP proxy or load balancer) drew thousands of RPCs a second, each
//! logged, each a new connection (found by the chaos harness of issue 8).
//! openraft retries unreachable peers for as long as they are down, so transport failures
//! are logged at debug; only answers that reveal a bug or a version mismatch warn.

use std::time::Duration;

use bytes::Bytes;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice_protocol::messages::{
    RaftAppendEntriesRequest, RaftAppendEntriesResponse, RaftInstallSnapshotRequest,
    RaftInstallSnapshotResponse, RaftVoteRequest, RaftVoteResponse,
};
use sluice_protocol::{ApiKey, BrokerId, ErrorCode, Request, Response};

use super::peer::{PeerConfig, PeerConnection, PeerError};
use super::raft::{NodeId, Raft, TypeConfig};
use crate::error::ApiError;

/// An RPC's error, as openraft's network returns it.
type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

/// Creates a [`NetworkClient`] per target node for openraft. Holds only settings: every
/// client dials its own connection.
#[derive(Clone, Debug)]
pub struct Network {
    node_id: NodeId,
    peer: PeerConfig,
}

impl Network {
    /// The network of node `node_id`, whose connections to the other voters follow
    /// `peer` ([`crate::cluster::peer_config`]).
    pub fn new(node_id: NodeId, peer: PeerConfig) -> Network {
        Network { node_id, peer }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = NetworkClient;

    /// A client for `target` at `node.addr`; it dials on its first RPC (openraft asks for
    /// clients of nodes that may be down).
    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> NetworkClient {
        NetworkClient {
            id: self.node_id,
            target,
            target_node: node.clone(),
            peer: PeerConnection::new(BrokerId(target as i32), &node.addr, self.peer.clone()),
        }
    }
}

/// openraft's RPCs to one target node, over one [`PeerConnection`] to its native listener.
/// openraft keeps one client per replication stream and makes one per election, and sends
/// one RPC at a time on each, which is what a sequential connection serves.
///
/// Snapshot chunks travel as JSON too, where a byte costs up to four characters: openraft's
/// `snapshot_max_chunk_size` must stay under a quarter of `max_frame_bytes` (3 MiB, the
/// default, fits the default 16 MiB). A chunk that does not fit fails the snapshot
/// transfer with an error that says so.
#[derive(Debug)]
pub struct NetworkClient {
    /// This node (openraft's `Timeout` names it).
    id: NodeId,
    target: NodeId,
    target_node: BasicNode,
    peer: PeerConnection,
}

impl RaftNetwork<TypeConfig> for NetworkClient {
    /// The pauses before retrying an unreachable peer: the first at the next heartbeat,
    /// then doubling to openraft's default of 500 ms.
    fn backoff(&self) -> Backoff {
        Backoff::new(unreachable_backoff())
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        let n_entries = rpc.entries.len() as u64;
        let payload = self.encode(RPCTypes::AppendEntries, &rpc)?;
        let request = Request::RaftAppendEntries(RaftAppendEntriesRequest {
            target: BrokerId(self.target as i32),
            payload,
        });
        let answer = match self.send(request, &option).await {
            Ok(answer) => answer,
            Err(PeerError::RequestTooLarge { bytes, max, .. }) if n_entries > 1 => {
                // openraft sends fewer entries at once and retries at once.
                tracing::debug!(
                    peer = self.target,
                    "{n_entries} entries make a {bytes}-byte request; splitting"
                );
                let hint = (n_entries * u64::from(max) / bytes).clamp(1, n_entries - 1);
                return Err(PayloadTooLarge::new_entries_hint(hint).into());
            }
            Err(e) => return Err(self.rpc_error(RPCTypes::AppendEntries, e)),
        };
        self.decode_answer(RPCTypes::AppendEntries, &answer)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        let payload = self.encode(RPCTypes::InstallSnapshot, &rpc)?;
        let request = Request::RaftInstallSnapshot(RaftInstallSnapshotRequest {
            target: BrokerId(self.target as i32),
            payload,
        });
        let answer = match self.send(request, &option).await {
            Ok(answer) => answer,
            Err(e @ PeerError::RequestTooLarge { .. }) => {
                // Retrying cannot help: the chunk size is openraft's configuration.
                let message = format!(
                    "{e}; snapshot chunks travel as JSON, up to 4 bytes per byte: keep \
                     openraft's snapshot_max_chunk_size under a quarter of max_frame_bytes"
                );
                tracing::warn!(peer = self.target, "{message}");
                return Err(network_error(message));
            }
            Err(e) => return Err(self.rpc_error(RPCTypes::InstallSnapshot, e)),
        };
        self.decode_answer(RPCTypes::InstallSnapshot, &answer)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        let payload = self.encode(RPCTypes::Vote, &rpc)?;
        let request = Request::RaftVote(RaftVoteRequest {
            target: BrokerId(self.target as i32),
            payload,
        });
        let answer = self
            .send(request, &option)
            .await
            .map_err(|e| self.rpc_error(RPCTypes::Vote, e))?;
        self.decode_answer(RPCTypes::Vote, &answer)
    }
}

// The helpers return openraft's `RPCError`, large as it is, because the trait's methods
// return it anyway.
#[allow(clippy::result_large_err)]
impl NetworkClient {
    /// Serialises an openraft request into a payload.
    fn encode<E: std::error::Error>(
        &self,
        action: RPCTypes,
        rpc: &impl Serialize,
    ) -> Result<Bytes, RpcError<E>> {
        to_payload(rpc).map_err(|e| {
            // Every openraft message serialises; a failure is a bug, not the peer's doing.
            tracing::error!(peer = self.target, "cannot serialise a Raft {action}: {e}");
            network_error(format!("cannot serialise the {action} request: {e}"))
        })
    }

    /// Sends one Raft request within the RPC's soft TTL, so that it ends on its own
    /// (and its connection is dropped cleanly) before openraft cancels it at the hard TTL.
    /// Returns the answer's payload.
    async fn send(&mut self, request: Request, option: &RPCOption) -> Result<Bytes, PeerError> {
        let result = self.peer.call(request, option.soft_ttl()).await;
        result.and_then(|response| match response {
            Response::RaftVote(r) => Ok(r.payload),
            Response::RaftAppendEntries(r) => Ok(r.payload),
            Response::RaftInstallSnapshot(r) => Ok(r.payload),
            // The connection decodes the answer as the request's api, so this is a bug.
            other => Err(PeerError::Protocol {
                addr: self.peer.addr().to_owned(),
                api: other.api_key().name(),
                reason: "a non-Raft answer to a Raft request".to_owned(),
            }),
        })
    }

    /// The openraft error for a failed call: see the module doc for why each maps where
    /// it does.
    fn rpc_error<E: std::error::Error>(&self, action: RPCTypes, error: PeerError) -> RpcError<E> {
        let (peer, addr) = (self.target, self.peer.addr());
        if error.is_retriable() {
            tracing::debug!(peer, addr, "Raft {action} failed: {error}");
        } else {
            tracing::warn!(peer, addr, "Raft {action} failed: {error}");
        }
        match error {
            PeerError::Connect { .. } | PeerError::Io { .. } | PeerError::Api { .. } => {
                RPCError::Unreachable(Unreachable::new(&error))
            }
            PeerError::Timeout { timeout, .. } => RPCError::Timeout(Timeout {
                action,
                id: self.id,
                target: self.target,
                timeout,
            }),
            PeerError::Protocol { .. }
            | PeerError::RequestTooLarge { .. }
            | PeerError::Encode { .. } => RPCError::Network(NetworkError::new(&error)),
        }
    }

    /// Decodes the remote Raft's `Result` from an answer's payload.
    fn decode_answer<T, E>(&self, action: RPCTypes, payload: &[u8]) -> Result<T, RpcError<E>>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let remote: Result<T, RaftError<NodeId, E>> =
            serde_json::from_slice(payload).map_err(|e| {
                let (peer, addr) = (self.target, self.peer.addr());
                tracing::warn!(peer, addr, "garbled Raft {action} answer: {e}");
                network_error(format!(
                    "node {peer} ({addr}) sent a garbled {action} answer: {e}; check that all brokers run the same version"
                ))
            })?;
        remote.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.target_node.clone(),
                e,
            ))
        })
    }
}

/// The longest pause before retrying an unreachable peer (openraft's default).
const UNREACHABLE_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// The pauses before each retry of an unreachable peer: the Raft heartbeat interval,
/// doubling up to [`UNREACHABLE_BACKOFF_MAX`].
fn unreachable_backoff() -> impl Iterator<Item = Duration> + Send + 'static {
    std::iter::successors(Some(super::RAFT_HEARTBEAT_INTERVAL), |pause| {
        Some((*pause * 2).min(UNREACHABLE_BACKOFF_MAX))
    })
}

fn network_error<E: std::error::Error>(message: String) -> RpcError<E> {
    RPCError::Network(NetworkError::from(AnyError::error(message)))
}

pub(super) fn to_payload(value: &impl Serialize) -> serde_json::Result<Bytes> {
    serde_json::to_vec(value).map(Bytes::from)
}

/// Decodes an openraft request from a request payload; a bad one fails the request with
/// INVALID_REQUEST.
pub(super) fn from_payload<T: DeserializeOwned>(
    api: ApiKey,
    payload: &[u8],
) -> Result<T, ApiError> {
    serde_json::from_slice(payload).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "undecodable {} payload: {e}; check that all brokers run the same version",
                api.name()
            ),
        )
    })
}

/// Serialises the local Raft's `Result` as an answer payload.
pub(super) fn answer_payload(api: ApiKey, result: &impl Serialize) -> Result<Bytes, ApiError> {
    to_payload(result).map_err(|e| {
        ApiError::new(
            ErrorCode::UnknownServerError,
            format!("cannot serialise the {} answer: {e}", api.name()),
        )
    })
}

/// Refuses a Raft request meant for another node: two clusters' brokers on one host, or
/// voters lists that disagree, would otherwise have a broker answer votes and accept
/// entries of a quorum it is not in.
pub(super) fn check_target(raft: &Raft, target: BrokerId, api: ApiKey) -> Result<(), ApiError> {
    let me = raft.metrics().borrow().id;
    if target.0 as NodeId == me {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::InvalidRequest,
        format!(
            "a {} for node {} reached node {me}: check that every broker's --voters gives \
             each voter's own address",
            api.name(),
            target.0
        ),
    ))
}

/// Serves a peer's RaftVote: hands the vote request to the local Raft and answers with its
/// `Result`. Only an undecodable payload fails the request itself.
pub async fn serve_vote(
    raft: &Raft,
    request: RaftVoteRequest,
) -> Result<RaftVoteResponse, ApiError> {
    check_target(raft, request.target, ApiKey::RaftVote)?;
    let rpc: VoteRequest<NodeId> = from_payload(ApiKey::RaftVote, &request.payload)?;
    let result = raft.vote(rpc).await;
    Ok(RaftVoteResponse {
        payload: answer_payload(ApiKey::RaftVote, &result)?,
    })
}

/// Serves a peer's RaftAppendEntries (replication and heartbeats), like [`serve_vote`].
pub async fn serve_append_entries(
    raft: &Raft,
    request: RaftAppendEntriesRequest,
) -> Result<RaftAppendEntriesResponse, ApiError> {
    check_target(raft, request.target, ApiKey::RaftAppendEntries)?;
    let rpc: AppendEntriesRequest<TypeConfig> =
        from_payload(ApiKey::RaftAppendEntries, &request.payload)?;
    let result = raft.append_entries(rpc).await;
    Ok(RaftAppendEntriesResponse {
        payload: answer_payload(ApiKey::RaftAppendEntries, &result)?,
    })
}

/// Serves one chunk of a peer's snapshot, like [`serve_vote`]. The local Raft assembles the
/// chunks itself (one transfer at a time) and installs the snapshot after the last one.
pub async fn serve_install_snapshot(
    raft: &Raft,
    request: RaftInstallSnapshotRequest,
) -> Result<RaftInstallSnapshotResponse, ApiError> {
    check_target(raft, request.target, ApiKey::RaftInstallSnapshot)?;
    let rpc: InstallSnapshotRequest<TypeConfig> =
        from_payload(ApiKey::RaftInstallSnapshot, &request.payload)?;
    let result = raft.install_snapshot(rpc).await;
    Ok(RaftInstallSnapshotResponse {
        payload: answer_payload(ApiKey::RaftInstallSnapshot, &result)?,
    })
}

#[cfg(test)]
mod tests;
