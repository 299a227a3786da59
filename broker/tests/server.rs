//! Black-box tests of the broker's server on 127.0.0.1:0, speaking the native protocol with
//! raw frames (no client library), so the broker's side of every contract is pinned here:
//! admin, produce/fetch/list-offsets, long polls, pipelining, bad input, shutdown.

mod common;

use common::*;

/// A fetch of more than `SEND_FROM_FILE_MIN_BYTES` of just-written (page-cached) batches is
/// answered from the segment file (`sendfile`): every record comes back, in order, from
/// the start and from the middle of a batch.
#[tokio::test]
async fn a_large_fetch_sent_from_the_segment_file_returns_every_record() {
    let broker = TestBroker::fresh().await;
    let mut c = broker.connect().await;
    assert_eq!(c.create("big", 1, &[]).await, ErrorCode::None);
    let sent: Vec<String> = (0..400)
        .map(|i| format!("{i:04}{}", "v".repeat(996)))
        .collect();
    for chunk in sent.chunks(50) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let done = c
            .produce_records("big", batch(&chunk, 1_700_000_000_000))
            .await;
        assert_eq!(done.error_code, ErrorCode::None);
    }
    let fetched = c.fetch("big", 0, 0, 0).await;
    assert!(fetched.records.len() >= sluice_storage::SEND_FROM_FILE_MIN_BYTES);
    assert_eq!(values(fetched.records, 0), sent);
    let from_middle = c.fetch("big", 0, 123, 0).await;
    assert_eq!(values(from_middle.records, 123), sent[123..]);
}

#[tokio::test]
async fn produce_then_fetch_and_list_offsets() {
    let broker = TestBroker::fresh().await;
    let mut c = broker.connect().await;
    assert_eq!(c.create("orders", 2, &[]).await, ErrorCode::None);
    let first = c.produce("orders", 1, &["a", "b"]).await;
    assert_eq!(
        (first.error_code, first.base_offset),
        (ErrorCode::None, Offset(0))
    );
    let second = c.produce("orders", 1, &["c"]).await;
    assert_eq!(second.base_offset, Offset(2));
    let fetched = c.fetch("orders", 1, 1, 0).await;
    assert_eq!(fetched.error_code, ErrorCode::None);
    assert_eq!(fetched.high_watermark, Offset(3));
    assert_eq!(values(fetched.records, 1), ["b", "c"]);
    assert_eq!(
        c.list_offset("orders", 1, EARLIEST_TIMESTAMP).await.offset,
        Offset(0)
    );
    assert_eq!(
        c.list_offset("orders", 1, LATEST_TIMESTAMP).await.offset,
        Offset(3)
    );
    assert_eq!(
        c.list_offset("orders", 1, 1_700_000_000_000).await.offset,
        Offset(0)
    );
    assert_eq!(
        c.list_offset("orders", 1, 1_800_000_000_000).await.offset,
        Offset(-1)
    );
    assert_eq!(
        c.list_offset("orders", 0, LATEST_TIMESTAMP).await.offset,
        Offset(0)
    );
    let beyond = c.fetch("orders", 1, 4, 0).await;
    assert_eq!(beyond.error_code, ErrorCode::OffsetOutOfRange);
    broker.shutdown().await;
}

#[tokio::test]
async fn topic_admin_errors_name_the_problem() {
    let broker = TestBroker::fresh().await;
    let mut c = broker.connect().await;
    assert_eq!(c.create("t", 1, &[]).await, ErrorCode::None);
    assert_eq!(c.create("t", 1, &[]).await, ErrorCode::TopicAlreadyExists);
    assert_eq!(
        c.create("bad name", 1, &[]).await,
        ErrorCode::InvalidTopicException
    );
    assert_eq!(c.create("u", 0, &[]).await, ErrorCode::InvalidPartitions);
    assert_eq!(
        c.create("u", 1, &[("colour", "red")]).await,
        ErrorCode::InvalidConfig
    );
    let missing = c.produce("nope", 0, &["x"]).await;
    assert_eq!(missing.error_code, ErrorCode::UnknownTopicOrPartition);
    assert!(missing.error_message.unwrap().contains("\"nope\""));
    let no_partition = c.produce("t", 5, &["x"]).await;
    assert_eq!(no_partition.error_code, ErrorCode::UnknownTopicOrPartition);
    let Response::Metadata(m) = c
        .call(Request::Metadata(MetadataRequest {
            topics: Some(vec!["t".into(), "nope".into()]),
            allow_auto_topic_creation: false,
        }))
        .await
    else {
        panic!()
    };
    assert_eq!(m.topics[0].partitions.len(), 1);
    assert_eq!(m.topics[1].error_code, ErrorCode::UnknownTopicOrPartition);
    let Response::DeleteTopics(d) = c
        .call(Request::DeleteTopics(DeleteTopicsRequest {
            topic_names: vec!["t".into(), "nope".into()],
            timeout_ms: 1000,
        }))
        .await
    else {
        panic!()
    };
    assert_eq!(d.responses[0].error_code, ErrorCode::None);
    assert_eq!(
        d.responses[1].error_code,
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(
        c.produce("t", 0, &["x"]).await.error_code,
        ErrorCode::UnknownTopicOrPartition
    );
    // Re-creating a deleted topic starts it empty.
    assert_eq!(c.create("t", 1, &[]).await, ErrorCode::None);
    assert_eq!(c.produce("t", 0, &["x"]).await.base_offset, Offset(0));
    broker.shutdown().await;
}

#[tokio::test]
async fn a_long_poll_wakes_when_data_arrives() {
    let broker = TestBroker::fresh().await;
    let mut consumer = broker.connect().await;
    let mut producer = broker.connect().await;
    assert_eq!(producer.create("lp", 1, &[]).await, ErrorCode::None);
    // A 60 s long poll: the produce below must end it, not the timeout.
    let id = consumer.send(&fetch_request("lp", 0, 0, 60_000)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    producer.produce("lp", 0, &["wake"]).await;
    let answer = tokio::time::timeout(Duration::from_secs(30), consumer.recv(ApiKey::Fetch, id))
        .await
        .expect("the long poll ended when data arrived");
    let Some(Response::Fetch(r)) = answer.1 else {
        panic!()
    };
    assert_eq!(
        values(r.topics[0].partitions[0].records.clone(), 0),
        ["wake"]
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let broker = TestBroker::fresh().await;
    let mut c = broker.connect().await;
    assert_eq!(c.create("pipe", 1, &[]).await, ErrorCode::None);
    // A long poll first, then quick requests behind it: answers still come in order.
    let slow = c.send(&fetch_request("pipe", 0, 0, 300)).await;
    let mut quick = Vec::new();
    for i in 0..20 {
        let v = format!("v{i}");
        quick.push(c.send(&produce_request("pipe", 0, &[&v], ACKS_ALL)).await);
    }
    let (h, _) = c.recv(ApiKey::Fetch, slow).await;
    assert_eq!(h.error_code, ErrorCode::None);
    for (i, id) in quick.into_iter().enumerate() {
        let (_, body) = c.recv(ApiKey::Produce, id).await;
        let Some(Response::Produce(r)) = body else {
            panic!()
        };
        assert_eq!(r.topics[0].partitions[0].base_offset, Offset(i as i64));
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn an_answer_is_not_held_back_by_a_long_poll_queued_behind_it() {
    let broker = TestBroker::fresh().await;
    let mut c = broker.connect().await;
    assert_eq!(c.create("busy", 2, &[]).await, ErrorCode::None);
    // A 200 ms long poll, then a 60 s one, in one write: the first answer must reach the
    // client while the second still waits (the 30 s bound only catches a hang).
    let short = c.send(&fetch_request("busy", 0, 0, 200)).await;
    let _long = c.send(&fetch_request("busy", 1, 0, 60_000)).await;
    let (header, _) = tokio::time::timeout(Duration::from_secs(30), c.recv(ApiKey::Fetch, short))
        .await
        .expect("the first answer was sent while the long poll behind it waited");
    assert_eq!(header.error_code, ErrorCode::None);
    broker.shutdown().await;
}

#[tokio::test]
async fn acks_zero_gets_no_response_but_is_written() {
    let broker = TestBroker::fresh().await;
    let mut c = broker.connect().await;
    assert_eq!(c.create("fire", 1, &[]).await, ErrorCode::None);
    c.send(&produce_request("fire", 0, &["and-forget"], ACKS_NONE))
        .await;
    // The next response on the connection is the fetch's: acks=0 got none.
    let fetched = c.fetch("fire", 0, 0, 10_000).await;
    assert_eq!(values(fetched.records, 0), ["and-forget"]);
    broker.shutdown().await;
}

#[tokio::test]
async fn bad_input_fails_only_its_connection() {
    let broker = TestBroker::fresh().await;
    let mut good = broker.connect().await;
    assert_eq!(good.create("safe", 1, &[]).await, ErrorCode::None);

    // An unknown api key: an error response, and the connection stays usable.
    let mut c = broker.connect().await;
    let mut payload = BytesMut::new();
    RequestHeader {
        api_key: 4242,
        api_version: 0,
        correlation_id: 77,
        client_id: "x".into(),
    }
    .encode(&mut payload)
    .unwrap();
    c.stream
        .write_all(&(payload.len() as u32).to_be_bytes())
        .await
        .unwrap();
    c.stream.write_all(&payload).await.unwrap();
    let mut frame = c.read_frame().await.unwrap();
    assert_eq!(frame.get_u32(), 77);
    assert_eq!(
        ErrorCode::from_i16(frame.get_i16()),
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(c.create("still-works", 1, &[]).await, ErrorCode::None);

    // A malformed body: an error response with the correlation id.
    let mut payload = BytesMut::new();
    RequestHeader::new(ApiKey::Produce, 9, "x")
        .encode(&mut payload)
        .unwrap();
    payload.extend_from_slice(&[0xff; 3]);
    c.stream
        .write_all(&(payload.len() as u32).to_be_bytes())
        .await
        .unwrap();
    c.stream.write_all(&payload).await.unwrap();
    let mut frame = c.read_frame().await.unwrap();
    assert_eq!(frame.get_u32(), 9);
    assert_eq!(
        ErrorCode::from_i16(frame.get_i16()),
        ErrorCode::InvalidRequest
    );

    // A 4 GiB length prefix: the connection closes without buffering anything.
    let mut huge = broker.connect().await;
    huge.stream
        .write_all(&u32::MAX.to_be_bytes())
        .await
        .unwrap();
    huge.stream
        .write_all(&[0, 3, 0, 0, 0, 0, 0, 5])
        .await
        .unwrap();
    {
        let mut frame = huge
            .read_frame()
            .await
            .expect("MESSAGE_TOO_LARGE is answered before the close");
        assert_eq!(frame.get_u32(), 5);
        assert_eq!(
            ErrorCode::from_i16(frame.get_i16()),
            ErrorCode::MessageTooLarge
        );
    }
    assert!(
        huge.read_frame().await.is_none(),
        "closed after a too-large frame"
    );

    // Garbage bytes and a truncated frame: closed.
    let mut garbage = broker.connect().await;
    garbage
        .stream
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    // "GET " reads as a 1.2 GB length: refused (with an answer, as its "header" parses).
    if let Some(mut frame) = garbage.read_frame().await {
        frame.advance(4);
        assert_eq!(
            ErrorCode::from_i16(frame.get_i16()),
            ErrorCode::MessageTooLarge
        );
    }
    assert!(garbage.read_frame().await.is_none());
    let mut truncated = broker.connect().await;
    truncated
        .stream
        .write_all(&[0, 0, 0, 100, 1, 2, 3])
        .await
        .unwrap();
    truncated.stream.shutdown().await.unwrap();
    assert!(truncated.read_frame().await.is_none());

    // The first client never noticed.
    assert_eq!(
        good.produce("safe", 0, &["ok"]).await.error_code,
        ErrorCode::None
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_restart_keeps_topics_configs_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path(), &[]).await;
    let mut c = broker.connect().await;
    assert_eq!(
        c.create("keep", 3, &[("retention.ms", "3600000")]).await,
        ErrorCode::None
    );
    c.produce("keep", 2, &["x", "y"]).await;
    broker.shutdown().await;

    let broker = TestBroker::start(dir.path(), &[]).await;
    let mut c = broker.connect().await;
    let Response::Metadata(m) = c
        .call(Request::Metadata(MetadataRequest {
            topics: None,
            allow_auto_topic_creation: false,
        }))
        .await
    else {
        panic!()
    };
    assert_eq!(m.topics.len(), 1);
    assert_eq!(m.topics[0].partitions.len(), 3);
    assert!(m.topics[0]
        .configs
        .iter()
        .any(|c| c.name == "retention.ms" && c.value == "3600000"));
    assert_eq!(
        values(c.fetch("keep", 2, 0, 0).await.records, 0),
        ["x", "y"]
    );
    assert_eq!(c.produce("keep", 2, &["z"]).await.base_offset, Offset(2));
    broker.shutdown().await;
}

#[tokio::test]
async fn describe_cluster_lists_this_node_as_its_own_quorum() {
    let broker = TestBroker::fresh().await;
    let mut c = broker.connect().await;
    let Response::DescribeCluster(d) = c
        .call(Request::DescribeCluster(DescribeClusterRequest {
            include_fenced_brokers: true,
        }))
        .await
    else {
        panic!()
    };
    assert_eq!(d.voters, vec![sluice_protocol::BrokerId(1)]);
    assert_eq!(d.brokers.len(), 1);
    assert_eq!(d.brokers[0].port, broker.addr.port());
    assert!(!d.cluster_id.is_empty());
    broker.shutdown().await;
}

#[tokio::test]
async fn a_fetch_response_stays_within_its_max_bytes_after_the_first_batch() {
    let broker = TestBroker::fresh().await;
    let mut c = broker.connect().await;
    assert_eq!(c.create("big", 2, &[]).await, ErrorCode::None);
    let value = "v".repeat(600 << 10);
    for partition in 0..2 {
        assert_eq!(
            c.produce("big", partition, &[&value]).await.error_code,
            ErrorCode::None
        );
    }
    let partitions = (0..2)
        .map(|p| FetchPartition {
            partition: PartitionId(p),
            current_leader_epoch: LeaderEpoch(-1),
            fetch_offset: Offset(0),
            partition_max_bytes: 1 << 20,
        })
        .collect();
    let Response::Fetch(r) = c
        .call(Request::Fetch(FetchRequest {
            max_wait_ms: 0,
            min_bytes: 1,
            max_bytes: 1 << 20,
            isolation_level: IsolationLevel::ReadUncommitted,
            topics: vec![FetchTopic {
                topic: "big".into(),
                partitions,
            }],
        }))
        .await
    else {
        panic!()
    };
    let sizes: Vec<usize> = r.topics[0]
        .partitions
        .iter()
        .map(|p| p.records.len())
        .collect();
    assert!(
        sizes[0] > 600 << 10,
        "the first partition returns its batch: {sizes:?}"
    );
    assert_eq!(
        sizes[1], 0,
        "the second batch would exceed max_bytes: {sizes:?}"
    );
    assert_eq!(r.topics[0].partitions[1].high_watermark, Offset(1));
    broker.shutdown().await;
}
