//! A leader dies under a running producer, and nothing acknowledged is lost.
//!
//! ```sh
//! cargo run -p sluice-client --example failover
//! ```
//!
//! Always on an in-process cluster of three brokers (it kills one). A topic with three
//! replicas and `min.insync.replicas=2` takes a stream of acks=all records; a third of the
//! way in, the partition's leader is killed (as abruptly as SIGKILL). The producer's
//! pending records fail over to the new leader on their own; the example then reads the
//! partition back and checks that every record is there exactly once and in order, and
//! restarts the dead broker, which catches up and rejoins the in-sync replicas.
//!
//! What it shows: application code does nothing special for a failover. The producer
//! refreshes its metadata and retries within `delivery_timeout`; being idempotent (the
//! default) it neither duplicates nor reorders a record it had to resend.

mod common;

use std::time::{Duration, Instant};

use common::BoxError;
use sluice_client::{
    Client, ClientConfig, Consumer, ConsumerConfig, NewTopic, OffsetSpec, PartitionId, Producer,
    ProducerConfig, ProducerRecord,
};
use sluice_testkit::Cluster;

const TOPIC: &str = "payments";
const N_RECORDS: usize = 600;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    run().await
}

async fn run() -> Result<(), BoxError> {
    let mut cluster = Cluster::start(3).await?;
    let config = ClientConfig {
        bootstrap: cluster.bootstrap_servers(),
        ..ClientConfig::default()
    };
    let client = Client::connect(config).await?;
    // Three copies; an acknowledged record is on disk on at least two brokers.
    let topic = NewTopic::new(TOPIC, 1, 3).config("min.insync.replicas", "2");
    common::ensure_topic(&client, topic).await?;

    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut deliveries = Vec::with_capacity(N_RECORDS);
    let mut killed = None;
    for i in 0..N_RECORDS {
        let record = ProducerRecord::new(TOPIC, format!("payment {i}")).partition(PartitionId(0));
        deliveries.push(producer.send(record).await?);
        if i == N_RECORDS / 3 {
            // Let what was sent so far be acknowledged by the first leader, then kill it
            // while the rest is being sent.
            producer.flush().await;
            let leader = leader(&client).await?;
            cluster.kill(leader).await;
            println!(
                "killed broker {leader}, the leader of {TOPIC}/0, after {} records",
                i + 1
            );
            killed = Some((leader, Instant::now()));
        }
    }
    for delivery in deliveries {
        delivery.await?;
    }
    let (dead, killed_at) = killed.ok_or("the leader was never killed")?;
    println!(
        "all {N_RECORDS} records acknowledged, the last {:?} after the kill; broker {} leads now",
        killed_at.elapsed(),
        leader(&client).await?
    );

    let values = read_all(&client).await?;
    let expected: Vec<String> = (0..N_RECORDS).map(|i| format!("payment {i}")).collect();
    if values != expected {
        return Err(format!(
            "the partition holds {} records, not each of the {N_RECORDS} once in order",
            values.len()
        )
        .into());
    }
    println!("{TOPIC}/0 holds every record once, in order");

    cluster.restart(dead).await?;
    let n_in_sync = wait_in_sync(&client, 3).await?;
    println!("broker {dead} restarted; {n_in_sync} replicas are in sync again");
    Ok(())
}

/// The current leader of partition 0, from fresh metadata, once there is one.
async fn leader(client: &Client) -> Result<i32, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let topic = client.refresh_topic(TOPIC).await?;
        let leader = topic.partition(PartitionId(0))?.leader;
        if leader.0 >= 0 {
            return Ok(leader.0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{TOPIC}/0 has no leader after 30 s").into())
}

/// Waits until `n` replicas of partition 0 are in sync; how many are.
async fn wait_in_sync(client: &Client, n: usize) -> Result<usize, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let topic = client.refresh_topic(TOPIC).await?;
        let n_in_sync = topic.partition(PartitionId(0))?.isr.len();
        if n_in_sync >= n {
            return Ok(n_in_sync);
        }
        if Instant::now() >= deadline {
            return Err(format!("{n_in_sync} of {n} replicas in sync after 30 s").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every value of partition 0, in offset order.
async fn read_all(client: &Client) -> Result<Vec<String>, BoxError> {
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    consumer
        .assign(vec![(
            TOPIC.to_owned(),
            PartitionId(0),
            OffsetSpec::Earliest,
        )])
        .await?;
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while values.len() < N_RECORDS && Instant::now() < deadline {
        for record in consumer.poll(Duration::from_millis(500)).await? {
            let value = record.value.unwrap_or_default();
            values.push(String::from_utf8_lossy(&value).into_owned());
        }
    }
    // Anything past the records sent would be a duplicate; look for it briefly.
    values.extend(
        consumer
            .poll(Duration::from_millis(200))
            .await?
            .into_iter()
            .map(|r| String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned()),
    );
    Ok(values)
}

#[cfg(test)]
mod tests {
    /// CI runs the example as `cargo run --example failover` does.
    #[tokio::test(flavor = "multi_thread")]
    async fn nothing_acknowledged_is_lost() {
        super::run().await.unwrap();
    }
}
