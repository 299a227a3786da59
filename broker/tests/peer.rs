//! `PeerConnection` against the real broker server on 127.0.0.1:0: broker-to-broker calls
//! use the same listener and codec as clients, so the server's side of that contract is
//! pinned here (the fake peer of the unit tests shares the protocol crate with both ends).

use std::time::Duration;

use clap::Parser;
use sluice_broker::cluster::peer::{PeerConfig, PeerConnection, PeerError};
use sluice_broker::{config, Broker, ConfigLayer};
use sluice_protocol::messages::{ApiVersionsRequest, MetadataRequest};
use sluice_protocol::{ApiKey, BrokerId, Request, Response};
use tokio::net::TcpListener;

#[tokio::test]
async fn a_peer_connection_talks_to_a_real_broker() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let argv = [
        "sluice-broker",
        "--listen",
        &addr,
        "--data-dir",
        &dir.path().display().to_string(),
    ];
    let config = config::resolve(ConfigLayer::try_parse_from(argv).unwrap()).unwrap();
    let broker = Broker::open(config).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sluice_broker::run(broker, listener, async {
        let _ = stopped.await;
    }));

    let timeout = Duration::from_secs(5);
    let mut peer = PeerConnection::new(
        BrokerId(1),
        &addr,
        PeerConfig::new(2, Duration::from_secs(1), 1 << 20),
    );
    let request = Request::ApiVersions(ApiVersionsRequest {
        client_software_name: "sluice-broker".into(),
        client_software_version: env!("CARGO_PKG_VERSION").into(),
    });
    match peer.call(request, timeout).await.unwrap() {
        Response::ApiVersions(r) => {
            assert!(r
                .api_keys
                .iter()
                .any(|k| k.api_key == ApiKey::Metadata as u16));
        }
        other => panic!("not an ApiVersions answer: {other:?}"),
    }
    let request = Request::Metadata(MetadataRequest {
        topics: Some(Vec::new()),
        allow_auto_topic_creation: false,
    });
    assert!(matches!(
        peer.call(request, timeout).await.unwrap(),
        Response::Metadata(_)
    ));
    assert!(peer.is_connected());

    // A broker that shut down closed the connection; the next call dials and is refused.
    stop.send(()).unwrap();
    server.await.unwrap();
    for expected in ["connection to broker", "cannot connect to broker"] {
        let request = Request::ApiVersions(ApiVersionsRequest {
            client_software_name: "sluice-broker".into(),
            client_software_version: env!("CARGO_PKG_VERSION").into(),
        });
        let err = peer.call(request, timeout).await.unwrap_err();
        assert!(
            matches!(err, PeerError::Io { .. } | PeerError::Connect { .. }),
            "{err}"
        );
        assert!(err.to_string().starts_with(expected), "{err}");
        assert!(err.is_retriable());
    }
}
