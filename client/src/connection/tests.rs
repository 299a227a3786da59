//! The connection layer against a tiny fake broker on 127.0.0.1:0 that speaks the protocol
//! crate: pipelining, correlation, dead connections, bad frames, timeouts.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use sluice_protocol::messages::{MetadataRequest, MetadataResponse, MetadataTopic};
use sluice_protocol::{decode_request, BrokerId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder;

use super::*;

/// A fake broker's view of one connection: read requests, write raw frames.
pub(crate) struct FakeConnection {
    socket: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
}

impl FakeConnection {
    /// The next request, or `None` at EOF.
    pub(crate) async fn read_request(&mut self) -> Option<(RequestHeader, Request)> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf).expect("valid frame") {
                return Some(decode_request(frame).expect("valid request"));
            }
            if self.socket.read_buf(&mut self.buf).await.ok()? == 0 {
                return None;
            }
        }
    }

    /// Writes a successful response to the request with `correlation_id`.
    pub(crate) async fn respond(&mut self, correlation_id: u32, response: &Response) {
        let mut payload = BytesMut::new();
        response.encode(correlation_id, &mut payload).unwrap();
        self.write_frame(&payload).await;
    }

    /// Writes a response that fails the whole request.
    pub(crate) async fn respond_error(
        &mut self,
        correlation_id: u32,
        code: ErrorCode,
        message: &str,
    ) {
        let mut payload = BytesMut::new();
        Response::encode_error(correlation_id, code, Some(message), &mut payload).unwrap();
        self.write_frame(&payload).await;
    }

    /// Writes `payload` with its length prefix.
    pub(crate) async fn write_frame(&mut self, payload: &[u8]) {
        let mut frame = BytesMut::new();
        frame.put_u32(payload.len() as u32);
        frame.put_slice(payload);
        self.write_raw(&frame).await;
    }

    /// Writes bytes as they are.
    pub(crate) async fn write_raw(&mut self, bytes: &[u8]) {
        self.socket.write_all(bytes).await.unwrap();
    }
}

/// Listens on 127.0.0.1:0; returns the address and a way to accept connections.
pub(crate) async fn fake_broker() -> (String, TcpListener) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    (listener.local_addr().unwrap().to_string(), listener)
}

pub(crate) async fn accept(listener: &TcpListener) -> FakeConnection {
    let (socket, _) = listener.accept().await.unwrap();
    FakeConnection {
        socket,
        buf: BytesMut::new(),
        codec: FrameCodec::default(),
    }
}

fn config() -> ConnectionConfig {
    ConnectionConfig {
        client_id: "test".into(),
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        max_frame_bytes: 1024 * 1024,
        max_in_flight: 8,
        sasl: None,
        tls: None,
    }
}

/// A Metadata request naming one topic, so each response can be told apart.
fn metadata_request(topic: &str) -> Request {
    Request::Metadata(MetadataRequest {
        topics: Some(vec![topic.to_owned()]),
        allow_auto_topic_creation: false,
    })
}

/// The answer that names the same topic as the request.
fn echo(request: &Request) -> Response {
    let Request::Metadata(m) = request else {
        panic!("unexpected {request:?}")
    };
    Response::Metadata(MetadataResponse {
        cluster_id: "c".into(),
        controller_id: BrokerId(1),
        brokers: vec![],
        topics: m
            .topics
            .iter()
            .flatten()
            .map(|name| MetadataTopic {
                error_code: ErrorCode::None,
                error_message: None,
                name: name.clone(),
                is_internal: false,
                replication_factor: 1,
                configs: vec![],
                partitions: vec![],
            })
            .collect(),
    })
}

fn topic_of(response: &Response) -> String {
    match response {
        Response::Metadata(m) => m.topics[0].name.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

/// Sends `n` requests at once on one connection while the fake broker collects all of them
/// before answering in the order `order` gives; every caller must get its own answer.
async fn check_pipelining(
    n: usize,
    order: impl FnOnce(&mut Vec<(RequestHeader, Request)>) + Send + 'static,
) {
    let (addr, listener) = fake_broker().await;
    let server = tokio::spawn(async move {
        let mut conn = accept(&listener).await;
        let mut requests = Vec::new();
        while requests.len() < n {
            requests.push(conn.read_request().await.expect("request"));
        }
        order(&mut requests);
        for (header, request) in requests {
            conn.respond(header.correlation_id, &echo(&request)).await;
        }
        conn
    });
    let connection = Arc::new(Connection::connect(&addr, config()).await.unwrap());
    let callers: Vec<_> = (0..n)
        .map(|i| {
            let connection = connection.clone();
            tokio::spawn(async move {
                let response = connection.send(&metadata_request(&format!("t{i}"))).await;
                (i, response)
            })
        })
        .collect();
    for caller in callers {
        let (i, response) = caller.await.unwrap();
        assert_eq!(topic_of(&response.unwrap()), format!("t{i}"));
    }
    let _conn = server.await.unwrap();
    assert!(!connection.is_dead());
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    check_pipelining(8, |_| {}).await;
}

#[tokio::test]
async fn responses_are_matched_by_correlation_id() {
    check_pipelining(8, |requests| requests.reverse()).await;
}

#[tokio::test]
async fn more_requests_than_the_in_flight_bound_all_complete() {
    // 8 in flight at most; the server answers each as it arrives.
    let (addr, listener) = fake_broker().await;
    tokio::spawn(async move {
        let mut conn = accept(&listener).await;
        while let Some((header, request)) = conn.read_request().await {
            conn.respond(header.correlation_id, &echo(&request)).await;
        }
    });
    let connection = Arc::new(Connection::connect(&addr, config()).await.unwrap());
    let callers: Vec<_> = (0..50)
        .map(|i| {
            let connection = connection.clone();
            tokio::spawn(async move { connection.send(&metadata_request(&format!("t{i}"))).await })
        })
        .collect();
    for (i, caller) in callers.into_iter().enumerate() {
        assert_eq!(topic_of(&caller.await.unwrap().unwrap()), format!("t{i}"));
    }
}

#[tokio::test]
async fn a_dropped_connection_fails_in_flight_requests_with_a_retriable_error() {
    let (addr, listener) = fake_broker().await;
    tokio::spawn(async move {
        let mut conn = accept(&listener).await;
        conn.read_request().await.unwrap();
        conn.read_request().await.unwrap();
        drop(conn); // closes without answering
    });
    let connection = Arc::new(Connection::connect(&addr, config()).await.unwrap());
    let (ra, rb) = (metadata_request("a"), metadata_request("b"));
    let (a, b) = tokio::join!(connection.send(&ra), connection.send(&rb));
    for result in [a, b] {
        let e = result.unwrap_err();
        assert!(e.is_retriable(), "{e}");
        assert!(matches!(e, Error::Network { .. }), "{e}");
        assert!(e.to_string().contains("closed the connection"), "{e}");
    }
    assert!(connection.is_dead());
    // Later requests fail fast rather than hanging.
    let e = connection.send(&metadata_request("c")).await.unwrap_err();
    assert!(matches!(e, Error::Network { .. }), "{e}");
}

#[tokio::test]
async fn an_oversized_response_closes_the_connection_with_a_clear_error() {
    let (addr, listener) = fake_broker().await;
    tokio::spawn(async move {
        let mut conn = accept(&listener).await;
        conn.read_request().await.unwrap();
        conn.write_raw(&(1u32 << 30).to_be_bytes()).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let connection = Connection::connect(&addr, config()).await.unwrap();
    let e = connection.send(&metadata_request("a")).await.unwrap_err();
    assert!(e.to_string().contains("exceeds the maximum"), "{e}");
    assert!(connection.is_dead());
}

#[tokio::test]
async fn a_garbage_response_closes_the_connection() {
    let (addr, listener) = fake_broker().await;
    tokio::spawn(async move {
        let mut conn = accept(&listener).await;
        let (header, _) = conn.read_request().await.unwrap();
        // The right correlation id, then a body that is not a Metadata response.
        let mut payload = header.correlation_id.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0, 0, 0xff, 0xff, 1, 2, 3]);
        conn.write_frame(&payload).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let connection = Connection::connect(&addr, config()).await.unwrap();
    let e = connection.send(&metadata_request("a")).await.unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e}");
    assert!(
        e.to_string().contains("undecodable Metadata response"),
        "{e}"
    );
    assert!(connection.is_dead());
}

#[tokio::test]
async fn a_response_to_no_request_closes_the_connection() {
    let (addr, listener) = fake_broker().await;
    tokio::spawn(async move {
        let mut conn = accept(&listener).await;
        conn.read_request().await.unwrap();
        conn.write_frame(&[0xde, 0xad, 0xbe, 0xef, 0, 0]).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let connection = Connection::connect(&addr, config()).await.unwrap();
    let e = connection.send(&metadata_request("a")).await.unwrap_err();
    assert!(e.to_string().contains("which no request carried"), "{e}");
    assert!(e.is_retriable());
}

#[tokio::test]
async fn a_top_level_error_becomes_a_broker_error() {
    let (addr, listener) = fake_broker().await;
    tokio::spawn(async move {
        let mut conn = accept(&listener).await;
        let (header, _) = conn.read_request().await.unwrap();
        conn.respond_error(
            header.correlation_id,
            ErrorCode::UnsupportedVersion,
            "no such api",
        )
        .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let connection = Connection::connect(&addr, config()).await.unwrap();
    let e = connection.send(&metadata_request("a")).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UnsupportedVersion));
    assert_eq!(
        e.to_string(),
        "Metadata request failed: no such api; upgrade the broker or use a matching client"
    );
    // The stream is still in sync, so the connection lives on.
    assert!(!connection.is_dead());
}

#[tokio::test]
async fn a_request_without_an_answer_times_out_and_closes_the_connection() {
    let (addr, listener) = fake_broker().await;
    tokio::spawn(async move {
        let mut conn = accept(&listener).await;
        // A broker that reads but never answers (hung, or its host gone).
        while conn.read_request().await.is_some() {}
    });
    let config = ConnectionConfig {
        request_timeout: Duration::from_millis(200),
        ..config()
    };
    let connection = Arc::new(Connection::connect(&addr, config).await.unwrap());
    let other = {
        let connection = connection.clone();
        // Waits longer than the first request, so the first one's timeout ends it.
        tokio::spawn(async move {
            connection
                .send_with_timeout(&metadata_request("other"), Duration::from_secs(60))
                .await
        })
    };
    let e = connection
        .send(&metadata_request("slow"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(e.is_retriable() && e.needs_metadata_refresh());
    assert!(connection.is_dead());
    // The request pending beside it fails at once, and says why.
    let e = tokio::time::timeout(Duration::from_secs(30), other)
        .await
        .expect("failed when the connection closed")
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::Network { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("no response to a Metadata request within 200 ms"),
        "{e}"
    );
}

#[tokio::test]
async fn an_answer_to_an_abandoned_request_is_dropped_and_the_connection_lives_on() {
    let (addr, listener) = fake_broker().await;
    tokio::spawn(async move {
        let mut conn = accept(&listener).await;
        let (first, request) = conn.read_request().await.unwrap();
        let (second, request2) = conn.read_request().await.unwrap();
        // Answer the first only after the client stopped waiting for it, then the second.
        conn.respond(first.correlation_id, &echo(&request)).await;
        conn.respond(second.correlation_id, &echo(&request2)).await;
        let _ = conn.read_request().await;
    });
    let connection = Connection::connect(&addr, config()).await.unwrap();
    {
        // A caller that gives up (a hedged metadata request that lost, a dropped future).
        let request = metadata_request("abandoned");
        let abandoned = connection.send(&request);
        tokio::pin!(abandoned);
        assert!(futures_poll_once(abandoned.as_mut()).await.is_none());
    }
    let response = connection.send(&metadata_request("next")).await.unwrap();
    assert_eq!(topic_of(&response), "next");
    assert!(!connection.is_dead());
}

/// Polls a future once (so a request is registered and queued), then gives it up.
async fn futures_poll_once<F: std::future::Future + Unpin>(mut f: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut f).poll(cx) {
        std::task::Poll::Ready(out) => std::task::Poll::Ready(Some(out)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

#[tokio::test]
async fn connecting_to_a_closed_port_says_what_to_do() {
    let (addr, listener) = fake_broker().await;
    drop(listener);
    let e = match Connection::connect(&addr, config()).await {
        Err(e) => e,
        Ok(_) => panic!("connected to a closed port"),
    };
    assert_eq!(
        e.to_string(),
        format!("cannot connect to {addr}: connection refused; is sluice-broker running there?")
    );
}

#[tokio::test]
async fn a_request_over_the_frame_limit_is_refused_before_sending() {
    let (addr, listener) = fake_broker().await;
    tokio::spawn(async move {
        let _conn = accept(&listener).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let config = ConnectionConfig {
        max_frame_bytes: 64,
        ..config()
    };
    let connection = Connection::connect(&addr, config).await.unwrap();
    let e = connection
        .send(&metadata_request(&"x".repeat(100)))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("exceeds the maximum frame of 64 bytes"),
        "{e}"
    );
    assert!(!connection.is_dead());
}

/// Pieces reach the other end whole and in order through a pipe that takes a few bytes a
/// write, so vectored writes end inside pieces and between them.
#[tokio::test]
async fn pieces_are_written_whole_and_in_order_through_partial_writes() {
    let pieces: Vec<Bytes> = [3, 10_000, 1, 5_000, 0, 70_000]
        .iter()
        .enumerate()
        .map(|(i, &n)| Bytes::from((0..n).map(|j| (i * 31 + j) as u8).collect::<Vec<u8>>()))
        .collect();
    let expected = pieces.concat();
    let (mut writer, mut reader) = tokio::io::duplex(7);
    let read = tokio::spawn(async move {
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        got
    });
    let mut queue = Pieces::default();
    pieces.into_iter().for_each(|p| queue.push_bytes(p));
    write_pieces(&mut writer, &mut queue).await.unwrap();
    assert!(queue.is_empty());
    drop(writer);
    assert_eq!(read.await.unwrap(), expected);
}
