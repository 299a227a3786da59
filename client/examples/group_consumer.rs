//! A consumer group member that commits what it has processed: at-least-once consumption.
//!
//! ```sh
//! cargo run -p sluice-client --example group_consumer -- TOPIC GROUP
//! ```
//!
//! Against the cluster in `SLUICE_BOOTSTRAP`, or an in-process one when it is unset (with
//! no arguments it then produces 300 records to a topic of 3 partitions, consumes them as
//! group `billing`, and shows that a new member of the group resumes after them). It
//! stops once no record has arrived for 5 s. Run it twice at once on the same group and
//! the group shares the topic's partitions between the two.
//!
//! What it shows: with `enable_auto_commit: false`, `commit` after the records of a poll
//! are processed stores "processed up to here" in the group; a member that dies before
//! committing leaves those records to be delivered again to the member that takes over its
//! partitions (at least once, never lost). `poll_event` tells a member when its partitions
//! are revoked or assigned in a rebalance.

mod common;

use std::time::Duration;

use common::{BoxError, Target};
use sluice_client::{
    Admin, Client, Consumer, ConsumerConfig, ConsumerEvent, GroupConfig, NewTopic, OffsetReset,
    Producer, ProducerConfig, ProducerRecord, TopicPartition,
};

/// A member run from the command line stops after this long without a record.
const IDLE_STOP: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let target = Target::from_env(1).await?;
    run(&target, std::env::args().skip(1).collect()).await
}

async fn run(target: &Target, args: Vec<String>) -> Result<(), BoxError> {
    match args.as_slice() {
        [topic, group] => {
            let n_records = consume(&target.client, topic, group, None, IDLE_STOP).await?;
            println!("group {group}: processed and committed {n_records} records of {topic}");
        }
        [] if target.embedded.is_some() => demo(&target.client).await?,
        _ => return Err("usage: group_consumer TOPIC GROUP".into()),
    }
    Ok(())
}

/// Processes records of `topic` as a member of `group`, committing after each poll, until
/// `stop_after` records were processed or none arrived for `idle_stop` (counted from the
/// last assignment); the number processed.
async fn consume(
    client: &Client,
    topic: &str,
    group: &str,
    stop_after: Option<u64>,
    idle_stop: Duration,
) -> Result<u64, BoxError> {
    let config = ConsumerConfig {
        // Where a partition the group has never committed starts.
        auto_offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let group_config = GroupConfig {
        enable_auto_commit: false,
        ..GroupConfig::new(group)
    };
    let mut consumer = Consumer::with_group(client.clone(), config, group_config)?;
    consumer.subscribe([topic])?;
    let mut n_processed = 0u64;
    let mut idle_since = tokio::time::Instant::now();
    while stop_after.is_none_or(|n| n_processed < n) && idle_since.elapsed() < idle_stop {
        match consumer.poll_event(Duration::from_millis(500)).await? {
            ConsumerEvent::Records(records) if records.is_empty() => {}
            ConsumerEvent::Records(records) => {
                for record in &records {
                    process(record.value.as_deref().unwrap_or_default());
                }
                n_processed += records.len() as u64;
                idle_since = tokio::time::Instant::now();
                // Processed: store the positions after these records in the group.
                consumer.commit().await?;
            }
            ConsumerEvent::PartitionsAssigned(partitions) => {
                eprintln!("assigned {}", list(&partitions));
                idle_since = tokio::time::Instant::now();
            }
            // Everything polled before a revocation was committed above already.
            ConsumerEvent::PartitionsRevoked(partitions) => {
                eprintln!("revoked {}", list(&partitions));
            }
            // This member's session expired: its partitions may be another's by now, so
            // it must not commit for them; the next poll rejoins the group.
            ConsumerEvent::PartitionsLost(partitions) => eprintln!("lost {}", list(&partitions)),
        }
    }
    // Leave the group at once, rather than when the session times out, so its partitions
    // go to the other members now.
    consumer.close().await?;
    Ok(n_processed)
}

fn list(partitions: &[TopicPartition]) -> String {
    let names: Vec<String> = partitions.iter().map(ToString::to_string).collect();
    names.join(", ")
}

/// The application's work on one record.
fn process(value: &[u8]) {
    std::hint::black_box(value);
}

/// Produces 300 records, consumes them as group `billing`, and checks that the group
/// committed all of them: a new member finds nothing left, and the lag is 0.
async fn demo(client: &Client) -> Result<(), BoxError> {
    common::ensure_topic(client, NewTopic::new("orders", 3, 1)).await?;
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for i in 0..300 {
        let record =
            ProducerRecord::new("orders", format!("order {i}")).key(format!("customer {}", i % 7));
        producer.send(record).await?;
    }
    producer.flush().await;

    let n_processed = consume(client, "orders", "billing", Some(300), IDLE_STOP).await?;
    println!("group billing processed and committed {n_processed} records");
    // A new member (the first one left): it starts after the committed records.
    let n_again = consume(client, "orders", "billing", None, Duration::from_secs(1)).await?;
    let partitions = Admin::new(client.clone()).group_lag("billing").await?;
    let committed: i64 = partitions.iter().map(|p| p.offsets.committed).sum();
    let lag: i64 = partitions.iter().map(|p| p.offsets.lag).sum();
    println!(
        "a new member of billing found {n_again} records left; the group committed {committed} \
         records over {} partitions, lag {lag}",
        partitions.len()
    );
    if n_processed != 300 || n_again != 0 || committed != 300 || lag != 0 {
        return Err("the group did not resume after its committed offsets".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// CI runs the example as `cargo run --example group_consumer` does with no arguments.
    #[tokio::test(flavor = "multi_thread")]
    async fn consumes_commits_and_resumes() {
        let target = super::Target::embedded(1).await.unwrap();
        super::run(&target, Vec::new()).await.unwrap();
    }
}
