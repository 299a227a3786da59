//! `sluice consume`: a topic's records to standard output, one per line; with `--group`,
//! as a member of a consumer group that commits exactly what it printed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_client::{
    Client, Consumer, ConsumerConfig, ConsumerEvent, ConsumerRecord, GroupConfig, OffsetReset,
    OffsetSpec, PartitionId, TopicPartition,
};

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
    if let Some(group) = args.group.clone() {
        return run_group(client, args, group, format).await;
    }
    let spec = match (args.offset, args.from_beginning) {
        (Some(offset), _) => OffsetSpec::Offset(offset),
        (None, true) => OffsetSpec::Earliest,
        (None, false) => OffsetSpec::Latest,
    };
    let partitions: Vec<PartitionId> = match args.partition {
        Some(p) => vec![PartitionId(p)],
        None => topic.partitions.iter().map(|p| p.partition).collect(),
    };
    let config = ConsumerConfig {
        isolation_level: args.isolation_level.level(),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client, config);
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
    let mut printer = Printer::new(&args, format);
    let mut last_record = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while !printer.done() {
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
                printer.progress.clear();
                eprintln!("processed {} records", printer.printed);
                break;
            }
        };
        if records.is_empty() {
            continue;
        }
        last_record = Instant::now();
        printer.print(&records)?;
    }
    Ok(())
}

/// Prints records in the chosen format up to `--max-messages`, and remembers, per
/// partition, the offset after the last record printed (what a group commits).
struct Printer<'a> {
    format: Format,
    key_separator: Option<&'a str>,
    max: u64,
    printed: u64,
    /// Per partition, the offset after the last record printed and not committed yet.
    to_commit: BTreeMap<TopicPartition, i64>,
    /// Per partition, the first record returned by a poll but not printed (the limit cut
    /// it off): the consumer's position is past it, a commit must not be.
    unprinted: BTreeMap<TopicPartition, i64>,
    out: Vec<u8>,
    /// How many were printed, on stderr while stdout goes to a file or a pipe.
    progress: crate::progress::Progress,
}

impl<'a> Printer<'a> {
    fn new(args: &'a ConsumeArgs, format: Format) -> Printer<'a> {
        Printer {
            format,
            key_separator: args.key_separator.as_deref(),
            max: args.max_messages.unwrap_or(u64::MAX),
            printed: 0,
            to_commit: BTreeMap::new(),
            unprinted: BTreeMap::new(),
            out: Vec::new(),
            progress: crate::progress::Progress::beside_stdout("read"),
        }
    }

    fn done(&self) -> bool {
        self.printed >= self.max
    }

    /// Prints as many of `records` as the limit allows, flushed at once so pipes see them
    /// promptly.
    fn print(&mut self, records: &[ConsumerRecord]) -> CliResult {
        self.out.clear();
        let room = usize::try_from(self.max - self.printed).unwrap_or(usize::MAX);
        for record in records.iter().take(room) {
            match self.format {
                Format::Text => render::record_text(record, self.key_separator, &mut self.out),
                Format::Json => {
                    self.out
                        .extend_from_slice(render::record_json(record).to_string().as_bytes());
                    self.out.push(b'\n');
                }
            }
            self.printed += 1;
            let tp = TopicPartition::new(record.topic.clone(), record.partition);
            self.to_commit.insert(tp, record.offset + 1);
        }
        for record in records.iter().skip(room) {
            let tp = TopicPartition::new(record.topic.clone(), record.partition);
            self.unprinted.entry(tp).or_insert(record.offset);
        }
        self.progress.update(self.printed);
        write_stdout(&self.out)
    }

    /// Takes the offsets to commit of `partitions`: per partition the consumer's position
    /// (after the last record a poll returned, or where it started: Kafka's consumer
    /// commits the position of every partition it has positioned, so a partition it
    /// printed nothing from is not started at the end by the group's next member), but
    /// never past a record the limit kept from being printed.
    fn take(
        &mut self,
        consumer: &Consumer,
        partitions: &[TopicPartition],
    ) -> BTreeMap<TopicPartition, i64> {
        partitions
            .iter()
            .filter_map(|tp| {
                let printed = self.to_commit.remove(tp);
                let position = consumer
                    .position(&tp.topic, tp.partition)
                    .filter(|p| *p >= 0);
                let offset = self.unprinted.remove(tp).or(position).or(printed)?;
                Some((tp.clone(), offset))
            })
            .collect()
    }
}

/// `consume --group`: joins the group, starts where it committed (else at the earliest
/// record with `--from-beginning`, else at the end), and commits, for every partition it
/// was assigned and positioned, the offset after the last record it printed, or where it
/// started when it printed none: before its partitions move to another member in a
/// rebalance, and before it leaves the group on exit. Auto-commit is off, so nothing
/// fetched but not printed is committed.
///
/// `--timeout-ms` counts only while the consumer is a member: the join (which waits for
/// the group's other members) does not use it up. A join that does not complete within
/// the rebalance timeout plus the session timeout is an error.
async fn run_group(client: Client, args: ConsumeArgs, group: String, format: Format) -> CliResult {
    if args.partition.is_some() || args.offset.is_some() {
        return Err(
            "--partition and --offset cannot be used with --group: the group assigns the partitions and resumes from its committed offsets"
                .to_owned(),
        );
    }
    let config = ConsumerConfig {
        auto_offset_reset: if args.from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        },
        isolation_level: args.isolation_level.level(),
        ..ConsumerConfig::default()
    };
    let group_config = GroupConfig {
        enable_auto_commit: false,
        ..GroupConfig::new(group.clone())
    };
    let join_wait = group_config.rebalance_timeout + group_config.session_timeout;
    let mut consumer =
        Consumer::with_group(client, config, group_config).map_err(|e| e.to_string())?;
    consumer
        .subscribe([args.topic.clone()])
        .map_err(|e| e.to_string())?;
    let mut printer = Printer::new(&args, format);
    let consumed = consume_as_member(&mut consumer, &args, &group, join_wait, &mut printer).await;
    let committed = commit_printed(&mut consumer, &mut printer).await;
    let closed = consumer.close().await.map_err(|e| e.to_string());
    consumed.and(committed).and(closed)
}

/// The consume loop of a group member; returns when the limit, the idle timeout or
/// Ctrl-C ends it, with what was printed and not yet committed left in `printer`.
async fn consume_as_member(
    consumer: &mut Consumer,
    args: &ConsumeArgs,
    group: &str,
    join_wait: Duration,
    printer: &mut Printer<'_>,
) -> CliResult {
    let idle_timeout = args.timeout_ms.map(Duration::from_millis);
    // Since when the consumer has been a member with nothing printed (None while joining),
    // and since when it has been joining.
    let mut idle_since: Option<Instant> = None;
    let mut joining_since = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while !printer.done() {
        let wait = match (idle_since, idle_timeout) {
            (Some(since), Some(t)) => match t.checked_sub(since.elapsed()) {
                Some(left) if !left.is_zero() => left.min(IDLE_POLL),
                _ => break,
            },
            (None, _) if joining_since.elapsed() >= join_wait => {
                return Err(format!(
                    "could not join consumer group \"{group}\" within {} s; check that the brokers are up (sluice cluster describe)",
                    join_wait.as_secs()
                ));
            }
            _ => IDLE_POLL,
        };
        let event = tokio::select! {
            event = consumer.poll_event(wait) => event.map_err(|e| e.to_string())?,
            _ = &mut ctrl_c => {
                printer.progress.clear();
                eprintln!("processed {} records", printer.printed);
                break;
            }
        };
        match event {
            ConsumerEvent::Records(records) if records.is_empty() => {}
            ConsumerEvent::Records(records) => {
                idle_since = Some(Instant::now());
                printer.print(&records)?;
            }
            ConsumerEvent::PartitionsRevoked(partitions) => {
                // Still ours until the next poll: commit what was printed from them.
                let offsets = printer.take(consumer, &partitions);
                if let Err(e) = consumer.commit_offsets(offsets).await {
                    eprintln!("warning: could not commit before the rebalance: {e}");
                }
                (idle_since, joining_since) = (None, Instant::now());
            }
            ConsumerEvent::PartitionsLost(partitions) => {
                let lost = partitions
                    .iter()
                    .filter(|tp| {
                        printer.unprinted.remove(*tp);
                        printer.to_commit.remove(*tp).is_some()
                    })
                    .count();
                if lost > 0 {
                    eprintln!(
                        "warning: the group went on without this consumer; records it printed from {} partition(s) were not committed and will be delivered again",
                        partitions.len()
                    );
                }
                (idle_since, joining_since) = (None, Instant::now());
            }
            ConsumerEvent::PartitionsAssigned(_) => idle_since = Some(Instant::now()),
        }
    }
    Ok(())
}

/// Commits the offsets after the records printed from the partitions the consumer still
/// owns.
async fn commit_printed(consumer: &mut Consumer, printer: &mut Printer<'_>) -> CliResult {
    let owned = consumer.assignment();
    let offsets = printer.take(consumer, &owned);
    if !printer.to_commit.is_empty() {
        eprintln!(
            "warning: records printed from {} partition(s) this consumer no longer owns were not committed",
            printer.to_commit.len()
        );
    }
    consumer
        .commit_offsets(offsets)
        .await
        .map_err(|e| format!("the printed records' offsets were not committed: {e}"))
}
