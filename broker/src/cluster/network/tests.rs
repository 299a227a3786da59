//! openraft's messages through the payload (serde round trips), and [`NetworkClient`]
//! against a fake peer: answers, remote Raft errors, and the transport failures, each
//! mapped to the [`RPCError`] openraft's retry logic expects.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{Fatal, InstallSnapshotError, RPCError, RaftError, SnapshotMismatch};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    AnyError, BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta,
    SnapshotSegmentId, StorageIOError, StoredMembership, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice_protocol::messages::{
    RaftAppendEntriesResponse, RaftInstallSnapshotResponse, RaftVoteResponse,
};
use sluice_protocol::{ApiKey, BrokerId, ErrorCode, Request, Response};

use super::{from_payload, to_payload, Network, NetworkClient, RpcError};
use crate::cluster::image::MetadataCommand;
use crate::cluster::peer::PeerConfig;
use crate::cluster::raft::{NodeId, TypeConfig};
use crate::cluster::testing::{FakePeer, Reply};

fn log_id(term: u64, node: NodeId, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn voters() -> Membership<NodeId, BasicNode> {
    let nodes: BTreeMap<NodeId, BasicNode> = [1, 2, 3, 4]
        .into_iter()
        .map(|id| (id, BasicNode::new(format!("broker-{id}:9092"))))
        .collect();
    // Node 4 is a learner: in `nodes`, not in the voter set.
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
}

fn entries() -> Vec<Entry<TypeConfig>> {
    vec![
        Entry {
            log_id: log_id(1, 1, 1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(1, 1, 2),
            payload: EntryPayload::Membership(voters()),
        },
        Entry {
            log_id: log_id(1, 1, 3),
            payload: EntryPayload::Normal(MetadataCommand::Bootstrap {
                cluster_id: "c-4f2a".into(),
            }),
        },
    ]
}

fn append_entries() -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: Some(log_id(1, 1, 0)),
        entries: entries(),
        leader_commit: Some(log_id(1, 1, 2)),
    }
}

fn snapshot_chunk() -> InstallSnapshotRequest<TypeConfig> {
    InstallSnapshotRequest {
        vote: Vote::new_committed(2, 1),
        meta: SnapshotMeta {
            last_log_id: Some(log_id(2, 1, 40)),
            last_membership: StoredMembership::new(Some(log_id(1, 1, 2)), voters()),
            snapshot_id: "2-1-40-7".into(),
        },
        offset: 4096,
        data: (0..=255).collect(),
        done: false,
    }
}

fn stopped<E>() -> RaftError<NodeId, E> {
    RaftError::Fatal(Fatal::Stopped)
}

fn disk_failed<E>() -> RaftError<NodeId, E> {
    let io = StorageIOError::write_logs(AnyError::error("No space left on device"));
    RaftError::Fatal(Fatal::StorageError(io.into()))
}

/// A value survives the payload: serialised by one broker, deserialised by another. The
/// openraft messages do not all implement `PartialEq`; their `Debug` shows every field.
fn check<T: Serialize + DeserializeOwned + Debug>(value: T) {
    let payload = to_payload(&value).unwrap();
    let back: T = from_payload(ApiKey::RaftAppendEntries, &payload).unwrap();
    assert_eq!(format!("{back:?}"), format!("{value:?}"));
}

#[test]
fn raft_messages_round_trip_through_the_payload() {
    check(VoteRequest::new(Vote::new(3, 2), Some(log_id(2, 1, 17))));
    check(VoteRequest::<NodeId>::new(Vote::new(1, 2), None));
    let granted = VoteResponse {
        vote: Vote::new(3, 2),
        vote_granted: true,
        last_log_id: Some(log_id(2, 1, 17)),
    };
    check::<Result<VoteResponse<NodeId>, RaftError<NodeId>>>(Ok(granted));
    check::<Result<VoteResponse<NodeId>, RaftError<NodeId>>>(Err(stopped()));
    check::<Result<VoteResponse<NodeId>, RaftError<NodeId>>>(Err(disk_failed()));

    check(append_entries());
    check(AppendEntriesRequest::<TypeConfig> {
        entries: Vec::new(),
        ..append_entries()
    });
    for response in [
        AppendEntriesResponse::Success,
        AppendEntriesResponse::PartialSuccess(Some(log_id(1, 1, 2))),
        AppendEntriesResponse::Conflict,
        AppendEntriesResponse::HigherVote(Vote::new(4, 3)),
    ] {
        check::<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>>(Ok(response));
    }

    check(snapshot_chunk());
    let mismatch = InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
        expect: SnapshotSegmentId {
            id: "2-1-40-7".into(),
            offset: 0,
        },
        got: SnapshotSegmentId {
            id: "2-1-40-7".into(),
            offset: 4096,
        },
    });
    type SnapshotResult =
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;
    check::<SnapshotResult>(Ok(InstallSnapshotResponse {
        vote: Vote::new_committed(2, 1),
    }));
    check::<SnapshotResult>(Err(RaftError::APIError(mismatch)));
}

#[test]
fn undecodable_payload_is_an_invalid_request() {
    let err = from_payload::<VoteRequest<NodeId>>(ApiKey::RaftVote, b"{\"vote\":").unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidRequest);
    assert!(
        err.message.starts_with("undecodable RaftVote payload"),
        "{}",
        err.message
    );
}

const TTL: Duration = Duration::from_secs(5);

async fn client_of(addr: &str, max_frame_bytes: u32) -> NetworkClient {
    let mut network = Network::new(
        1,
        PeerConfig::new(1, Duration::from_secs(1), max_frame_bytes),
    );
    network.new_client(2, &BasicNode::new(addr)).await
}

/// A fake peer answering every Raft request with `answer` (serialised), after checking
/// the request decodes and names node 2, the target of [`client_of`]'s client.
async fn peer_answering<T: Serialize + Send + Sync + 'static>(answer: T) -> FakePeer {
    let payload = to_payload(&answer).unwrap();
    FakePeer::start(move |_, _, request| {
        let payload = payload.clone();
        Reply::Respond(match request {
            Request::RaftVote(r) => {
                assert_eq!(r.target, BrokerId(2));
                from_payload::<VoteRequest<NodeId>>(ApiKey::RaftVote, &r.payload).unwrap();
                Response::RaftVote(RaftVoteResponse { payload })
            }
            Request::RaftAppendEntries(r) => {
                assert_eq!(r.target, BrokerId(2));
                let rpc: AppendEntriesRequest<TypeConfig> =
                    from_payload(ApiKey::RaftAppendEntries, &r.payload).unwrap();
                assert_eq!(format!("{rpc:?}"), format!("{:?}", append_entries()));
                Response::RaftAppendEntries(RaftAppendEntriesResponse { payload })
            }
            Request::RaftInstallSnapshot(r) => {
                assert_eq!(r.target, BrokerId(2));
                let rpc: InstallSnapshotRequest<TypeConfig> =
                    from_payload(ApiKey::RaftInstallSnapshot, &r.payload).unwrap();
                assert_eq!(rpc, snapshot_chunk());
                Response::RaftInstallSnapshot(RaftInstallSnapshotResponse { payload })
            }
            other => panic!("not a Raft request: {other:?}"),
        })
    })
    .await
}

async fn vote(client: &mut NetworkClient, ttl: Duration) -> Result<VoteResponse<NodeId>, RpcError> {
    let rpc = VoteRequest::new(Vote::new(3, 1), Some(log_id(2, 1, 17)));
    client.vote(rpc, RPCOption::new(ttl)).await
}

#[tokio::test]
async fn every_rpc_carries_its_answer() {
    let granted = VoteResponse {
        vote: Vote::new(3, 1),
        vote_granted: true,
        last_log_id: None,
    };
    let peer = peer_answering(Ok::<_, RaftError<NodeId>>(granted.clone())).await;
    let mut client = client_of(&peer.addr, 1 << 20).await;
    assert_eq!(vote(&mut client, TTL).await.unwrap(), granted);

    let peer = peer_answering(Ok::<AppendEntriesResponse<NodeId>, RaftError<NodeId>>(
        AppendEntriesResponse::Conflict,
    ))
    .await;
    let mut client = client_of(&peer.addr, 1 << 20).await;
    let answer = client.append_entries(append_entries(), RPCOption::new(TTL));
    assert_eq!(answer.await.unwrap(), AppendEntriesResponse::Conflict);

    let installed = || InstallSnapshotResponse {
        vote: Vote::new_committed(2, 1),
    };
    let peer = peer_answering(Ok::<_, RaftError<NodeId, InstallSnapshotError>>(installed())).await;
    let mut client = client_of(&peer.addr, 1 << 20).await;
    let answer = client.install_snapshot(snapshot_chunk(), RPCOption::new(TTL));
    assert_eq!(answer.await.unwrap(), installed());
    assert_eq!(peer.connections(), 1);
}

#[tokio::test]
async fn a_remote_raft_error_is_a_remote_error_naming_the_target() {
    let peer = peer_answering(Err::<VoteResponse<NodeId>, _>(stopped::<
        openraft::error::Infallible,
    >()))
    .await;
    let mut client = client_of(&peer.addr, 1 << 20).await;
    match vote(&mut client, TTL).await.unwrap_err() {
        RPCError::RemoteError(remote) => {
            assert_eq!(remote.target, 2);
            assert_eq!(remote.target_node, Some(BasicNode::new(&peer.addr)));
            assert_eq!(remote.source, stopped());
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
}

/// What a vote gets from a peer that replies `reply` (then answers nothing else).
async fn vote_against(reply: fn() -> Reply, ttl: Duration) -> RpcError {
    let peer = FakePeer::start(move |_, _, _| reply()).await;
    let mut client = client_of(&peer.addr, 1 << 20).await;
    vote(&mut client, ttl).await.unwrap_err()
}

#[tokio::test]
async fn transport_failures_map_to_the_rpc_error_openraft_retries_by() {
    let garbled = || {
        Reply::Respond(Response::RaftVote(RaftVoteResponse {
            payload: Bytes::from_static(b"not json"),
        }))
    };
    let err = vote_against(garbled, TTL).await;
    assert!(matches!(err, RPCError::Network(_)), "{err:?}");
    assert!(err.to_string().contains("garbled Vote answer"), "{err}");

    // A peer that drops the connection is backed off from too: openraft resends at once
    // after a Network error, which made a peer that accepts and closes connections (a
    // broker down behind a proxy) draw thousands of RPCs a second.
    let closes = || Reply::Close;
    let err = vote_against(closes, TTL).await;
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    assert!(err.to_string().contains("closed the connection"), "{err}");

    // A peer that does not serve Raft (yet) is backed off from, like one that is down.
    let refuses = || Reply::Error(ErrorCode::UnsupportedVersion, "no Raft here".into());
    let err = vote_against(refuses, TTL).await;
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    assert!(err.to_string().contains("no Raft here"), "{err}");

    // The call ends at the soft TTL (3/4 of the hard one), before openraft cancels it.
    let hangs = || Reply::Hang;
    match vote_against(hangs, Duration::from_millis(200)).await {
        RPCError::Timeout(timeout) => {
            assert_eq!(timeout.action, RPCTypes::Vote);
            assert_eq!((timeout.id, timeout.target), (1, 2));
            assert_eq!(timeout.timeout, Duration::from_millis(150));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let mut client = client_of(&addr, 1 << 20).await;
    let err = vote(&mut client, TTL).await.unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
}

#[tokio::test]
async fn append_entries_over_the_frame_limit_asks_openraft_to_split() {
    let one = AppendEntriesRequest {
        entries: vec![entries().swap_remove(1)],
        ..append_entries()
    };
    // Too small for the one membership entry, so too small for the three entries too.
    let max_frame_bytes = (to_payload(&one).unwrap().len() / 2) as u32;
    let peer = FakePeer::start(|_, _, request| panic!("nothing may be sent: {request:?}")).await;
    let mut client = client_of(&peer.addr, max_frame_bytes).await;
    let err = client
        .append_entries(append_entries(), RPCOption::new(TTL))
        .await
        .unwrap_err();
    match err {
        RPCError::PayloadTooLarge(too_large) => {
            assert_eq!(too_large.action(), RPCTypes::AppendEntries);
            assert!((1..3).contains(&too_large.entries_hint()), "{too_large}");
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    // One entry cannot be split: a plain network error that names the limit.
    let err = client
        .append_entries(one, RPCOption::new(TTL))
        .await
        .unwrap_err();
    assert!(matches!(err, RPCError::Network(_)), "{err:?}");
    let limit = format!("maximum frame of {max_frame_bytes} bytes");
    assert!(err.to_string().contains(&limit), "{err}");
    assert_eq!(peer.connections(), 0);
}

#[tokio::test]
async fn a_snapshot_chunk_over_the_frame_limit_names_the_setting_to_change() {
    let peer = FakePeer::start(|_, _, request| panic!("nothing may be sent: {request:?}")).await;
    let mut client = client_of(&peer.addr, 512).await;
    let err = client
        .install_snapshot(snapshot_chunk(), RPCOption::new(TTL))
        .await
        .unwrap_err();
    assert!(matches!(err, RPCError::Network(_)), "{err:?}");
    assert!(err.to_string().contains("snapshot_max_chunk_size"), "{err}");
    assert_eq!(peer.connections(), 0);
}

#[test]
fn an_unreachable_peer_is_retried_at_the_next_heartbeat_then_less_often() {
    let pauses: Vec<u128> = super::unreachable_backoff()
        .take(5)
        .map(|d| d.as_millis())
        .collect();
    assert_eq!(pauses, [100, 200, 400, 500, 500]);
}
