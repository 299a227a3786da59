//! `sluice consume`: a topic's records to standard output, one per line.

use std::time::{Duration, Instant};

use sluice_client::{Client, Consumer, ConsumerConfig, OffsetSpec, PartitionId};

use crate::args::{ConsumeArgs, Format};
use crate::{render, write_stdout, CliResult};

/// How long one poll waits when no `--timeout-ms` bounds it; only sets how often Ctrl-C
/// and the record limit are checked between records.
const IDLE_POLL: Duration = Duration::from_secs(1);

pub async fn run(client: Client, args: ConsumeArgs, format: Format) -> CliResult {
    let topic = client
        .topic_metadata(&args.topic)
        .await
        .map_err(|e| e.to_string())?;
    let spec = match (args.offset, args.from_beginning) {
        (Some(offset), _) => OffsetSpec::Offset(offset),
        (None, true) => OffsetSpec::Earliest,
        (None, false) => OffsetSpec::Latest,
    };
    let partitions: Vec<PartitionId> = match args.partition {
        Some(p) => vec![PartitionId(p)],
        None => topic.partitions.iter().map(|p| p.partition).collect(),
    };
    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    consumer
        .assign(
            partitions
                .into_iter()
                .map(|p| (args.topic.clone(), p, spec))
                .collect(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let idle_timeout = args.timeout_ms.map(Duration::from_millis);
    let max = args.max_messages.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let mut out = Vec::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while printed < max {
        let wait = match idle_timeout {
            Some(t) => match t.checked_sub(last_record.elapsed()) {
                Some(left) if !left.is_zero() => left.min(IDLE_POLL),
                _ => break,
            },
            None => IDLE_POLL,
        };
        let records = tokio::select! {
            records = consumer.poll(wait) => records.map_err(|e| e.to_string())?,
            _ = &mut ctrl_c => {
                eprintln!("processed {printed} records");
                break;
            }
        };
        if records.is_empty() {
            continue;
        }
        last_record = Instant::now();
        out.clear();
        for record in records.iter().take((max - printed) as usize) {
            match format {
                Format::Text => {
                    render::record_text(record, args.key_separator.as_deref(), &mut out)
                }
                Format::Json => {
                    out.extend_from_slice(render::record_json(record).to_string().as_bytes());
                    out.push(b'\n');
                }
            }
            printed += 1;
        }
        // Flush per batch so pipes see records promptly.
        write_stdout(&out)?;
    }
    Ok(())
}
