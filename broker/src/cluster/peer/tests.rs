//! `PeerConnection` against a fake peer on 127.0.0.1:0: answers, top-level errors, and every
//! way the transport fails, each followed by a call that must work again.

use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::messages::{
    ApiVersionRange, ApiVersionsRequest, ApiVersionsResponse, RaftVoteRequest,
};
use sluice_protocol::{BrokerId, ErrorCode, Request, Response};

use super::{PeerConfig, PeerConnection, PeerError};
use crate::cluster::testing::{frame, FakePeer, Reply};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The id of the peer the tests dial.
const PEER: BrokerId = BrokerId(2);

fn config() -> PeerConfig {
    PeerConfig::new(7, Duration::from_secs(1), 1 << 20)
}

fn api_versions_request() -> Request {
    Request::ApiVersions(ApiVersionsRequest {
        client_software_name: "sluice-broker".into(),
        client_software_version: "test".into(),
    })
}

/// An ApiVersions answer that names the request it answers (`n`), so a test can tell
/// whose answer it got.
fn answer(n: usize) -> Reply {
    Reply::Respond(Response::ApiVersions(ApiVersionsResponse {
        api_keys: vec![ApiVersionRange {
            api_key: n as u16,
            min_version: 0,
            max_version: 0,
        }],
    }))
}

/// Which request an answer of [`answer`] was for.
fn answered(response: Response) -> usize {
    match response {
        Response::ApiVersions(r) => r.api_keys[0].api_key as usize,
        other => panic!("not an ApiVersions answer: {other:?}"),
    }
}

/// A fake peer that replies `first` to the first request and answers every later one.
async fn peer_failing_once(first: fn() -> Reply) -> FakePeer {
    FakePeer::start(move |n, _, _| if n == 0 { first() } else { answer(n) }).await
}

#[tokio::test]
async fn answers_on_one_lazily_dialled_connection() {
    let peer = FakePeer::start(|n, header, request| {
        assert_eq!(header.client_id, "sluice-broker-7");
        assert_eq!(header.correlation_id, n as u32 + 1);
        assert!(matches!(request, Request::ApiVersions(_)));
        answer(n)
    })
    .await;
    let mut connection = PeerConnection::new(PEER, &peer.addr, config());
    assert!(!connection.is_connected());
    assert_eq!(peer.connections(), 0);
    for n in 0..3 {
        let response = connection.call(api_versions_request(), TIMEOUT).await;
        assert_eq!(answered(response.unwrap()), n);
    }
    assert!(connection.is_connected());
    assert_eq!(peer.connections(), 1);
}

#[tokio::test]
async fn closed_connection_fails_then_the_next_call_redials() {
    let peer = peer_failing_once(|| Reply::Close).await;
    let mut connection = PeerConnection::new(PEER, &peer.addr, config());
    let err = connection
        .call(api_versions_request(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::Io { .. }), "{err}");
    assert!(err.is_retriable());
    // What a proxy in front of a dead broker does: the controller fences on it.
    assert!(err.shows_peer_gone(), "{err}");
    assert!(err.to_string().contains("closed the connection"), "{err}");
    assert!(!connection.is_connected());
    let response = connection.call(api_versions_request(), TIMEOUT).await;
    assert_eq!(answered(response.unwrap()), 1);
    assert_eq!(peer.connections(), 2);
}

#[tokio::test]
async fn slow_peer_times_out_then_the_next_call_redials() {
    let peer = peer_failing_once(|| Reply::Hang).await;
    let mut connection = PeerConnection::new(PEER, &peer.addr, config());
    let started = std::time::Instant::now();
    let err = connection
        .call(api_versions_request(), Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::Timeout { .. }), "{err}");
    assert!(err.is_retriable());
    // A hung or cut-off broker: silence is no evidence it is gone.
    assert!(!err.shows_peer_gone(), "{err}");
    assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
    assert!(!connection.is_connected());
    let response = connection.call(api_versions_request(), TIMEOUT).await;
    assert_eq!(answered(response.unwrap()), 1);
    assert_eq!(peer.connections(), 2);
}

#[tokio::test]
async fn top_level_error_is_an_api_error_and_keeps_the_connection() {
    let peer = peer_failing_once(|| {
        Reply::Error(ErrorCode::NotController, "node 3 is the controller".into())
    })
    .await;
    let mut connection = PeerConnection::new(PEER, &peer.addr, config());
    let err = connection
        .call(api_versions_request(), TIMEOUT)
        .await
        .unwrap_err();
    match &err {
        PeerError::Api { code, message } => {
            assert_eq!(*code, ErrorCode::NotController);
            assert_eq!(message, "node 3 is the controller");
        }
        other => panic!("expected an api error, got {other:?}"),
    }
    assert!(err.is_retriable());
    assert!(!err.shows_peer_gone(), "{err}");
    assert_eq!(err.to_string(), "NOT_CONTROLLER: node 3 is the controller");
    assert!(connection.is_connected());
    let response = connection.call(api_versions_request(), TIMEOUT).await;
    assert_eq!(answered(response.unwrap()), 1);
    assert_eq!(peer.connections(), 1);
}

#[tokio::test]
async fn refused_connection_is_a_retriable_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let mut connection = PeerConnection::new(PEER, &addr, config());
    let err = connection
        .call(api_versions_request(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PeerError::Connect { refused: true, .. }),
        "{err}"
    );
    assert!(err.is_retriable());
    assert!(err.shows_peer_gone(), "{err}");
    assert!(err.to_string().contains(&addr), "{err}");
}

#[tokio::test]
async fn unusable_answers_are_protocol_errors_and_drop_the_connection() {
    /// The raw bytes a broken peer sends instead of the answer to correlation id 1, and
    /// what the error must say.
    async fn check(raw: Vec<u8>, expected: &str) {
        let raw = Bytes::from(raw);
        let peer = FakePeer::start(move |n, _, _| {
            if n == 0 {
                Reply::Raw(raw.clone())
            } else {
                answer(n)
            }
        })
        .await;
        let mut connection = PeerConnection::new(PEER, &peer.addr, config());
        let err = connection
            .call(api_versions_request(), TIMEOUT)
            .await
            .unwrap_err();
        assert!(matches!(err, PeerError::Protocol { .. }), "{err}");
        assert!(!err.is_retriable());
        assert!(err.to_string().contains(expected), "{err}");
        assert!(!connection.is_connected());
        let response = connection.call(api_versions_request(), TIMEOUT).await;
        assert_eq!(answered(response.unwrap()), 1);
    }

    // Correlation id 9, error NONE, no message, an empty ApiVersions body.
    let wrong_id = [0, 0, 0, 9, 0, 0, 0xff, 0xff, 0, 0, 0, 0];
    check(frame(&wrong_id), "correlation id 9, the request 1").await;
    // Correlation id 1, error NONE, no message, then a truncated array count.
    check(frame(&[0, 0, 0, 1, 0, 0, 0xff, 0xff, 0]), "truncated").await;
    check(frame(&[0, 0]), "truncated").await;
    // A header announcing a frame over the 1 MiB maximum.
    check(vec![0x7f, 0, 0, 0], "exceeds the maximum").await;
}

#[tokio::test]
async fn oversized_request_is_refused_before_anything_is_sent() {
    let peer = FakePeer::start(|n, _, _| answer(n)).await;
    let mut connection = PeerConnection::new(
        PEER,
        &peer.addr,
        PeerConfig::new(7, Duration::from_secs(1), 64),
    );
    let request = Request::RaftVote(RaftVoteRequest {
        target: PEER,
        payload: Bytes::from(vec![b'x'; 100]),
    });
    let err = connection.call(request, TIMEOUT).await.unwrap_err();
    assert!(
        matches!(err, PeerError::RequestTooLarge { max: 64, .. }),
        "{err}"
    );
    assert!(!err.is_retriable());
    assert_eq!(peer.connections(), 0);
}

#[tokio::test]
async fn a_cancelled_call_never_hands_its_late_answer_to_the_next() {
    let peer =
        peer_failing_once(|| Reply::After(Duration::from_millis(300), Box::new(answer(0)))).await;
    let mut connection = PeerConnection::new(PEER, &peer.addr, config());
    // The caller gives up before the answer (as openraft does at an RPC's hard TTL).
    let cancelled = tokio::time::timeout(
        Duration::from_millis(50),
        connection.call(api_versions_request(), TIMEOUT),
    )
    .await;
    assert!(cancelled.is_err());
    assert!(!connection.is_connected());
    let response = connection.call(api_versions_request(), TIMEOUT).await;
    assert_eq!(answered(response.unwrap()), 1);
    assert_eq!(peer.connections(), 2);
}

#[tokio::test]
async fn an_override_replaces_the_peers_own_address() {
    let peer = FakePeer::start(|n, _, _| answer(n)).await;
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let own_address = unused.local_addr().unwrap().to_string();
    drop(unused);
    let mut config = config();
    config.overrides.insert(PEER, peer.addr.clone());
    let mut overridden = PeerConnection::new(PEER, &own_address, config.clone());
    assert_eq!(overridden.addr(), peer.addr);
    let response = overridden.call(api_versions_request(), TIMEOUT).await;
    assert_eq!(answered(response.unwrap()), 0);
    // Another broker keeps its own address.
    let other = PeerConnection::new(BrokerId(3), &own_address, config);
    assert_eq!(other.addr(), own_address);
}

#[tokio::test]
async fn sockets_are_bound_to_the_configured_local_ip() {
    // Any 127.0.0.0/8 address is loopback on Linux, so the peer sees a distinct source.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut config = config();
    config.bind_ip = Some("127.0.0.2".parse().unwrap());
    let mut connection = PeerConnection::new(PEER, &addr, config);
    let call = tokio::spawn(async move {
        // Nobody answers: the call times out once the socket is accepted.
        connection
            .call(api_versions_request(), Duration::from_millis(200))
            .await
    });
    let (_socket, from) = listener.accept().await.unwrap();
    assert_eq!(from.ip().to_string(), "127.0.0.2");
    assert!(matches!(
        call.await.unwrap(),
        Err(PeerError::Timeout { .. })
    ));
}

#[test]
fn a_loopback_bind_ip_is_not_used_for_other_hosts() {
    let check = |bind_ip: Option<&str>, target: &str, expected: Option<&str>| {
        let mut config = config();
        config.bind_ip = bind_ip.map(|ip| ip.parse().unwrap());
        let local = config.bind_address(target.parse().unwrap());
        assert_eq!(
            local.map(|a| a.to_string()),
            expected.map(str::to_string),
            "{bind_ip:?} -> {target}"
        );
    };
    check(None, "127.0.0.1:9", None);
    check(Some("127.0.0.3"), "127.0.0.1:9", Some("127.0.0.3:0"));
    check(Some("10.1.2.3"), "10.1.2.4:9", Some("10.1.2.3:0"));
    check(Some("127.0.0.3"), "10.1.2.4:9", None);
    check(Some("10.1.2.3"), "[::1]:9", None);
}
