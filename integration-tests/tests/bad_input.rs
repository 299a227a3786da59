//! Bad input over raw TCP to the real broker: garbage bytes, a 4 GiB length prefix, a
//! truncated frame, an unknown api key. Each gets an error response or a closed connection,
//! and the broker keeps serving everyone else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use sluice_integration_tests::{cli_ok, BrokerProcess};

fn connect(broker: &BrokerProcess) -> TcpStream {
    let stream = TcpStream::connect(broker.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// Reads one response frame, or `None` once the broker closed the connection.
fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut payload).ok()?;
    Some(payload)
}

/// (correlation id, error code) of a response payload.
fn header(payload: &[u8]) -> (u32, i16) {
    (
        u32::from_be_bytes(payload[..4].try_into().unwrap()),
        i16::from_be_bytes(payload[4..6].try_into().unwrap()),
    )
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

#[test]
fn bad_input_fails_only_the_offending_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let bootstrap = broker.bootstrap();
    cli_ok(&bootstrap, &["topic", "create", "safe"], "");

    // Unknown api key 4242: an UNSUPPORTED_VERSION (35) answer; the connection stays open.
    let mut c = connect(&broker);
    let mut request = vec![0x10, 0x92, 0, 0, 0, 0, 0, 42, 0, 1, b'x'];
    c.write_all(&frame(&request)).unwrap();
    let answer = read_frame(&mut c).expect("an error response");
    assert_eq!(header(&answer), (42, 35));
    // The same connection still serves a well-formed request (ApiVersions, key 18).
    request = vec![0, 18, 0, 0, 0, 0, 0, 43, 0, 1, b'x', 0, 0, 0, 0];
    c.write_all(&frame(&request)).unwrap();
    assert_eq!(header(&read_frame(&mut c).unwrap()), (43, 0));

    // A 4 GiB length prefix: refused before anything is buffered, then closed.
    let mut huge = connect(&broker);
    huge.write_all(&u32::MAX.to_be_bytes()).unwrap();
    huge.write_all(&[0, 0, 0, 0, 0, 0, 0, 7]).unwrap();
    {
        let answer = read_frame(&mut huge).expect("MESSAGE_TOO_LARGE is answered before the close");
        assert_eq!(header(&answer), (7, 10), "MESSAGE_TOO_LARGE");
    }
    assert!(read_frame(&mut huge).is_none(), "closed");

    // Garbage: closed.
    let mut garbage = connect(&broker);
    garbage
        .write_all(&[0xde, 0xad, 0xbe, 0xef].repeat(64))
        .unwrap();
    while read_frame(&mut garbage).is_some() {}

    // A truncated frame, then the client goes away: the broker just drops it.
    let mut truncated = connect(&broker);
    truncated.write_all(&[0, 0, 1, 0, 0, 3, 0]).unwrap();
    truncated.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(read_frame(&mut truncated).is_none());

    // Everyone else is still served.
    cli_ok(&bootstrap, &["produce", "safe"], "still here\n");
    let out = cli_ok(
        &bootstrap,
        &[
            "consume",
            "safe",
            "--from-beginning",
            "-n",
            "1",
            "--timeout-ms",
            "10000",
        ],
        "",
    );
    assert_eq!(out.trim(), "still here");
}

/// A Raft request meant for another node (brokers of two clusters on one host, or voters
/// lists that disagree) is refused with an error naming both nodes, before the local Raft
/// sees it; the broker goes on serving as the quorum's only voter.
#[test]
fn a_raft_request_for_another_node_is_refused() {
    use sluice_integration_tests::checks::{client, runtime};
    use sluice_protocol::messages::{RaftPreVoteRequest, RaftVoteRequest};
    use sluice_protocol::{BrokerId, ErrorCode, Request};

    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path(), &[]);
    broker.wait_ready();
    let rt = runtime();
    let client = rt.block_on(client(&broker.bootstrap()));
    let misdirected = [
        Request::RaftVote(RaftVoteRequest {
            target: BrokerId(2),
            payload: bytes::Bytes::from_static(b"{}"),
        }),
        Request::RaftPreVote(RaftPreVoteRequest {
            target: BrokerId(2),
            payload: bytes::Bytes::from_static(b"{}"),
        }),
    ];
    for request in misdirected {
        let api = request.api_key().name();
        let err = rt.block_on(client.send(BrokerId(1), request)).unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{api}: {err}");
        assert!(
            err.to_string()
                .contains(&format!("a {api} for node 2 reached node 1")),
            "{err}"
        );
    }
    cli_ok(
        &broker.bootstrap(),
        &["topic", "create", "still-serving"],
        "",
    );
}
