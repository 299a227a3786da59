//! `failover-bench`: how long a partition is unwritable when its leader dies.
//!
//! Starts three real brokers on 127.0.0.1 (all controller voters, default settings),
//! creates a topic with one partition, replication factor 3 and min.insync.replicas 2,
//! then `--runs` times: SIGKILLs the partition's leader and measures the time from the
//! kill to the first acks=all produce acknowledged by the new leader (the client finds it
//! through its own metadata refreshes and retries, as an application's would). The killed
//! broker is restarted and the ISR waited for before the next run. Prints one Markdown row
//! per run (and whether the killed node was also the active controller, which adds a
//! controller election to the failover), then the median and the worst.
//!
//! Run: `cargo run --release -p sluice-integration-tests --bin failover-bench -- --runs 10`

use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_client::{
    Acks, Admin, Client, ClientConfig, NewTopic, PartitionId, Producer, ProducerConfig,
    ProducerRecord,
};
use sluice_integration_tests::TestCluster;

fn main() {
    let mut runs = 10;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => {
                runs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--runs N (a number)")
            }
            other => {
                eprintln!("error: unknown argument {other:?}; usage: failover-bench [--runs N]");
                std::process::exit(2);
            }
        }
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut cluster = TestCluster::start(3, dir.path(), &[]);
    let bootstrap = cluster.bootstrap();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt
        .block_on(Client::connect(ClientConfig {
            bootstrap: bootstrap.split(',').map(str::to_string).collect(),
            ..ClientConfig::default()
        }))
        .expect("connect");
    rt.block_on(
        Admin::new(client.clone())
            .create_topic(NewTopic::new("failover", 1, 3).config("min.insync.replicas", "2")),
    )
    .expect("create topic");
    cluster.wait_isr("failover", 3);
    // The producer's background task is spawned on the runtime.
    let _runtime = rt.enter();
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::ZERO,
            ..ProducerConfig::default()
        },
    );
    let produce = |value: &str| {
        rt.block_on(async {
            let record = ProducerRecord::new("failover", Bytes::from(value.to_string()))
                .partition(PartitionId(0));
            let delivery = producer.send(record).await?;
            delivery.await
        })
    };
    produce("warm-up").expect("a produce before any failure");
    println!("| run | killed leader | was controller | SIGKILL to first acks=all ack (ms) |");
    println!("|---|---|---|---|");
    let mut times = Vec::new();
    for run in 1..=runs {
        let leader = cluster.leader("failover", 0) as i32;
        let controller = cluster
            .describe()
            .and_then(|d| d["controller"]["leader"].as_i64())
            .unwrap_or(-1) as i32;
        let killed_at = Instant::now();
        cluster.node(leader).kill();
        let acked = produce(&format!("run-{run}"));
        let elapsed = killed_at.elapsed();
        match acked {
            Ok(_) => {
                times.push(elapsed);
                println!(
                    "| {run} | {leader} | {} | {} |",
                    if leader == controller { "yes" } else { "no" },
                    elapsed.as_millis()
                );
            }
            Err(e) => println!("| {run} | {leader} | - | failed: {e} |"),
        }
        cluster.node(leader).restart();
        cluster.wait_isr("failover", 3);
    }
    times.sort();
    if let (Some(median), Some(worst)) = (times.get(times.len() / 2), times.last()) {
        println!(
            "\nmedian {} ms, worst {} ms over {} runs",
            median.as_millis(),
            worst.as_millis(),
            times.len()
        );
    }
}
