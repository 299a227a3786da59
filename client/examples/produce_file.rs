//! Produces a text file to a topic, one record per line, and waits until the cluster has
//! acknowledged every line.
//!
//! ```sh
//! cargo run -p sluice-client --example produce_file -- FILE TOPIC
//! ```
//!
//! Against the cluster in `SLUICE_BOOTSTRAP`, or an in-process one when it is unset (with
//! no arguments it then produces this example's own source to `lines` and reads it back).
//!
//! What it shows: `send` queues a record and returns a [`DeliveryFuture`] at once, so the
//! producer batches many records per request; the futures say when each record is on disk.
//! Keeping every future until the end bounds nothing; the producer itself bounds its
//! buffer (`ProducerConfig::buffer_bytes_max`): `send` waits when it is full.

mod common;

use std::time::Duration;

use common::{BoxError, Target};
use sluice_client::{
    Client, Consumer, ConsumerConfig, DeliveryFuture, NewTopic, OffsetSpec, PartitionId, Producer,
    ProducerConfig, ProducerRecord,
};
use tokio::io::AsyncBufReadExt;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let target = Target::from_env(1).await?;
    run(&target, std::env::args().skip(1).collect()).await
}

async fn run(target: &Target, args: Vec<String>) -> Result<(), BoxError> {
    match args.as_slice() {
        [file, topic] => {
            let n_lines = produce_file(&target.client, file, topic).await?;
            println!("produced {n_lines} lines of {file} to {topic}");
        }
        [] if target.embedded.is_some() => {
            let file = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/produce_file.rs");
            common::ensure_topic(&target.client, NewTopic::new("lines", 1, 1)).await?;
            let n_lines = produce_file(&target.client, file, "lines").await?;
            // Read the topic back: every line, in order.
            let expected: Vec<String> = std::fs::read_to_string(file)?
                .lines()
                .map(str::to_owned)
                .collect();
            let read = read_values(&target.client, "lines", n_lines).await?;
            if read != expected {
                return Err("the topic does not hold the file's lines in order".into());
            }
            println!("produced {n_lines} lines to \"lines\" and read them back in order");
        }
        _ => return Err("usage: produce_file FILE TOPIC".into()),
    }
    Ok(())
}

/// Sends each line of `file` as a record to `topic` and waits for every acknowledgement;
/// the number of lines.
async fn produce_file(client: &Client, file: &str, topic: &str) -> Result<u64, BoxError> {
    // The defaults: acks=all and idempotence, so a line resent after a lost answer is
    // written once; records to one partition keep their order through retries.
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut lines = tokio::io::BufReader::new(tokio::fs::File::open(file).await?).lines();
    let mut deliveries: Vec<DeliveryFuture> = Vec::new();
    while let Some(line) = lines.next_line().await? {
        // No key: the producer spreads records over the partitions (sticky batches). With
        // a key, every record of that key goes to one partition, in order.
        deliveries.push(producer.send(ProducerRecord::new(topic, line)).await?);
    }
    let n_lines = deliveries.len() as u64;
    for delivery in deliveries {
        // An error here is final: the producer has already retried what can be retried
        // within `delivery_timeout`.
        delivery.await?;
    }
    producer.close().await;
    Ok(n_lines)
}

/// The values of the first `n` records of partition 0 of `topic`, as text.
async fn read_values(client: &Client, topic: &str, n: u64) -> Result<Vec<String>, BoxError> {
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    consumer
        .assign(vec![(
            topic.to_owned(),
            PartitionId(0),
            OffsetSpec::Earliest,
        )])
        .await?;
    let mut values = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (values.len() as u64) < n && tokio::time::Instant::now() < deadline {
        for record in consumer.poll(Duration::from_secs(1)).await? {
            let value = record.value.unwrap_or_default();
            values.push(String::from_utf8_lossy(&value).into_owned());
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    /// CI runs the example as `cargo run --example produce_file` does with no arguments.
    #[tokio::test(flavor = "multi_thread")]
    async fn produces_its_own_source_and_reads_it_back() {
        let target = super::Target::embedded(1).await.unwrap();
        super::run(&target, Vec::new()).await.unwrap();
    }
}
