//! The in-process cluster against the real client: it forms, takes acks=all writes,
//! survives the kill of a partition leader with nothing acknowledged lost, and a killed
//! node restarts with its data.

use std::time::Duration;

use bytes::Bytes;
use sluice_client::{
    Acks, Admin, Client, ClientConfig, Consumer, ConsumerConfig, NewTopic, OffsetSpec, PartitionId,
    Producer, ProducerConfig, ProducerRecord,
};
use sluice_testkit::Cluster;

async fn client(bootstrap: &str) -> Client {
    Client::connect(ClientConfig {
        bootstrap: bootstrap.split(',').map(str::to_string).collect(),
        ..ClientConfig::default()
    })
    .await
    .expect("client connects")
}

async fn produce(client: &Client, values: &[&str]) -> Vec<i64> {
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::All,
            ..ProducerConfig::default()
        },
    );
    let mut offsets = Vec::new();
    for value in values {
        let record =
            ProducerRecord::new("t", Bytes::from(value.to_string())).partition(PartitionId(0));
        let delivered = producer
            .send(record)
            .await
            .expect("queued")
            .await
            .expect("acknowledged");
        offsets.push(delivered.offset);
    }
    offsets
}

async fn read_all(client: &Client, n: usize) -> Vec<String> {
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    consumer
        .assign(vec![("t".into(), PartitionId(0), OffsetSpec::Earliest)])
        .await
        .unwrap();
    let mut read = Vec::new();
    while read.len() < n {
        for r in consumer.poll(Duration::from_secs(1)).await.unwrap() {
            read.push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned());
        }
    }
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_the_kill_of_a_leader_and_its_restart() {
    let mut cluster = Cluster::start(3).await.expect("cluster starts");
    assert_eq!(cluster.node_ids(), vec![1, 2, 3]);
    let all = client(&cluster.bootstrap()).await;
    Admin::new(all.clone())
        .create_topic(NewTopic::new("t", 1, 3).config("min.insync.replicas", "2"))
        .await
        .expect("topic created");
    let before = produce(&all, &["a", "b", "c"]).await;

    let leader = all
        .refresh_topic("t")
        .await
        .unwrap()
        .partition(PartitionId(0))
        .unwrap()
        .leader
        .0;
    cluster.kill(leader).await;
    assert!(!cluster.is_running(leader));
    let survivors = client(&cluster.bootstrap()).await;
    let after = produce(&survivors, &["d", "e"]).await;
    assert!(
        after[0] > *before.last().unwrap(),
        "{before:?} then {after:?}"
    );

    cluster
        .restart(leader)
        .await
        .expect("the killed node restarts");
    assert!(cluster.is_running(leader));
    let again = client(&cluster.address(leader).unwrap().to_string()).await;
    assert_eq!(read_all(&again, 5).await, ["a", "b", "c", "d", "e"]);
}
