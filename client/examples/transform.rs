//! Consume, transform, produce: reads a topic as a consumer group member, writes each
//! record's value in upper case to another topic under the same key, and commits the input
//! only once the output is acknowledged.
//!
//! ```sh
//! cargo run -p sluice-client --example transform -- INPUT OUTPUT GROUP
//! ```
//!
//! Against the cluster in `SLUICE_BOOTSTRAP`, or an in-process one when it is unset (with
//! no arguments it then fills `orders`, transforms it into `orders-upper`, and checks the
//! output). It stops once no input has arrived for 5 s.
//!
//! What it shows: the order "produce, wait for the acknowledgements, then commit" makes the
//! pipeline at least once. A crash after the output is written but before the commit
//! makes the next member transform those records again (duplicates in the output, never
//! a gap); committing first could lose them. Keys are kept, so all of one key's records
//! land in one output partition, in their input order.

mod common;

use std::time::Duration;

use common::{BoxError, Target};
use sluice_client::{
    Client, Consumer, ConsumerConfig, GroupConfig, NewTopic, OffsetReset, OffsetSpec, PartitionId,
    Producer, ProducerConfig, ProducerRecord,
};

/// Run from the command line, the pipeline stops after this long without input.
const IDLE_STOP: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let target = Target::from_env(1).await?;
    run(&target, std::env::args().skip(1).collect()).await
}

async fn run(target: &Target, args: Vec<String>) -> Result<(), BoxError> {
    match args.as_slice() {
        [input, output, group] => {
            let n = transform(&target.client, input, output, group, None).await?;
            println!("transformed {n} records of {input} into {output}");
        }
        [] if target.embedded.is_some() => demo(&target.client).await?,
        _ => return Err("usage: transform INPUT OUTPUT GROUP".into()),
    }
    Ok(())
}

/// The transformation of one value.
fn upper_case(value: &[u8]) -> Vec<u8> {
    value.to_ascii_uppercase()
}

/// Transforms `input` into `output` as a member of `group` until `stop_after` records were
/// done or no input arrived for [`IDLE_STOP`]; the number transformed.
async fn transform(
    client: &Client,
    input: &str,
    output: &str,
    group: &str,
    stop_after: Option<u64>,
) -> Result<u64, BoxError> {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut consumer = Consumer::with_group(
        client.clone(),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
        // Commits are the pipeline's, after the output is safe; none behind its back.
        GroupConfig {
            enable_auto_commit: false,
            ..GroupConfig::new(group)
        },
    )?;
    consumer.subscribe([input])?;
    let mut n_done = 0u64;
    let mut last_input = tokio::time::Instant::now();
    while stop_after.is_none_or(|n| n_done < n) && last_input.elapsed() < IDLE_STOP {
        let records = consumer.poll(Duration::from_millis(500)).await?;
        if records.is_empty() {
            continue;
        }
        last_input = tokio::time::Instant::now();
        let mut deliveries = Vec::with_capacity(records.len());
        for record in &records {
            let value = upper_case(record.value.as_deref().unwrap_or_default());
            let mut out = ProducerRecord::new(output, value);
            if let Some(key) = &record.key {
                out = out.key(key.clone());
            }
            deliveries.push(producer.send(out).await?);
        }
        // Every output record of this poll is on disk before its input is committed.
        for delivery in deliveries {
            delivery.await?;
        }
        consumer.commit().await?;
        n_done += records.len() as u64;
    }
    consumer.close().await?;
    producer.close().await;
    Ok(n_done)
}

/// Fills `orders` with 200 records, transforms them into `orders-upper`, and checks that
/// the output holds each input value in upper case.
async fn demo(client: &Client) -> Result<(), BoxError> {
    common::ensure_topic(client, NewTopic::new("orders", 2, 1)).await?;
    common::ensure_topic(client, NewTopic::new("orders-upper", 1, 1)).await?;
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut expected = Vec::new();
    for i in 0..200 {
        let value = format!("order {i} for customer {}", i % 5);
        expected.push(value.to_uppercase());
        let key = format!("customer {}", i % 5);
        producer
            .send(ProducerRecord::new("orders", value).key(key))
            .await?;
    }
    producer.flush().await;

    let n_done = transform(client, "orders", "orders-upper", "enricher", Some(200)).await?;
    println!("transformed {n_done} records of orders into orders-upper");

    let mut reader = Consumer::new(client.clone(), ConsumerConfig::default());
    let start = vec![(
        "orders-upper".to_owned(),
        PartitionId(0),
        OffsetSpec::Earliest,
    )];
    reader.assign(start).await?;
    let mut output = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while output.len() < expected.len() && tokio::time::Instant::now() < deadline {
        for record in reader.poll(Duration::from_secs(1)).await? {
            let value = record.value.unwrap_or_default();
            output.push(String::from_utf8_lossy(&value).into_owned());
        }
    }
    // The input's two partitions were read concurrently, so only the set is fixed.
    output.sort();
    expected.sort();
    if output != expected {
        return Err("orders-upper does not hold every order in upper case, once".into());
    }
    println!(
        "orders-upper holds all {} orders in upper case",
        output.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    /// CI runs the example as `cargo run --example transform` does with no arguments.
    #[tokio::test(flavor = "multi_thread")]
    async fn transforms_orders() {
        let target = super::Target::embedded(1).await.unwrap();
        super::run(&target, Vec::new()).await.unwrap();
    }
}
