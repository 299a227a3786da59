//! `sluice produce`: standard input to a topic, one record per line.

use std::time::Duration;

use bytes::Bytes;
use sluice_client::{
    Acks, Client, CompressionConfig, DeliveryFuture, Error, PartitionId, Producer, ProducerConfig,
    ProducerRecord,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::args::{AcksArg, ProduceArgs};
use crate::CliResult;

/// Deliveries awaited in order by a counting task; bounded so that a fast stdin waits for
/// acknowledgements instead of queueing without end (the producer's buffer bounds bytes).
const DELIVERIES_QUEUED_MAX: usize = 4096;

/// Splits a line (without its newline) into key and value at the first `separator`; a
/// line without the separator is all value, with no key.
pub fn split_line(line: &[u8], separator: Option<&[u8]>) -> (Option<Bytes>, Bytes) {
    if let Some(sep) = separator.filter(|s| !s.is_empty()) {
        if let Some(at) = line.windows(sep.len()).position(|w| w == sep) {
            let key = Bytes::copy_from_slice(&line[..at]);
            let value = Bytes::copy_from_slice(&line[at + sep.len()..]);
            return (Some(key), value);
        }
    }
    (None, Bytes::copy_from_slice(line))
}

/// Strips a trailing `\n`, then a trailing `\r`.
pub fn strip_newline(mut line: &[u8]) -> &[u8] {
    if let Some(rest) = line.strip_suffix(b"\n") {
        line = rest;
    }
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `sluice produce`: each line of standard input is a record. The producer stops at the
/// first record that fails (`stop_after_failure`), so each partition's log holds a prefix
/// of the lines sent to it; reading stops too, what is in flight is waited for, and the
/// error says which lines are in the log and where to resend from.
pub async fn run(client: Client, args: ProduceArgs) -> CliResult {
    let acks = match args.acks {
        AcksArg::None => Acks::None,
        AcksArg::Leader => Acks::Leader,
        AcksArg::All => Acks::All,
    };
    let compression = CompressionConfig::new(args.compression, args.compression_level)
        .map_err(|e| format!("--compression-level: {e}"))?;
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks,
            enable_idempotence: args.enable_idempotence,
            stop_after_failure: true,
            batch_bytes_max: args.batch_bytes,
            compression,
            delivery_timeout: Duration::from_millis(args.timeout_ms),
            request_timeout: ProducerConfig::default()
                .request_timeout
                .min(Duration::from_millis(args.timeout_ms)),
            ..ProducerConfig::default()
        },
    );
    let (deliveries, to_count) = mpsc::channel::<(u64, DeliveryFuture)>(DELIVERIES_QUEUED_MAX);
    let counter = tokio::spawn(count_deliveries(to_count));
    let sent = send_lines(&producer, &args, deliveries).await;
    producer.close().await;
    let mut tally = counter
        .await
        .map_err(|e| format!("the delivery counter failed: {e}"))?;
    match sent {
        Sent::All => {}
        Sent::Refused(line, e) => tally.fail(line, e),
        Sent::InputError(e) => {
            return Err(match tally.first_failure {
                None => format!("{e}; the first {} lines were acknowledged", tally.prefix),
                Some(_) => format!("{e}; {}", tally.report()),
            })
        }
    }
    match tally.first_failure {
        None => Ok(()),
        Some(_) => Err(tally.report()),
    }
}

/// How reading and sending the input ended.
enum Sent {
    /// Every line read was handed to the producer (standard input ended, or the producer
    /// stopped after a failure, which its delivery reports).
    All,
    /// The producer refused this line at once (too large for the topic, say).
    Refused(u64, Error),
    /// Standard input could not be read.
    InputError(String),
}

/// Reads standard input line by line and sends each line as a record, handing its
/// delivery, numbered from 1, to the counter.
async fn send_lines(
    producer: &Producer,
    args: &ProduceArgs,
    deliveries: mpsc::Sender<(u64, DeliveryFuture)>,
) -> Sent {
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let mut stdin = BufReader::with_capacity(64 * 1024, tokio::io::stdin());
    let mut line = Vec::new();
    let mut line_no = 0u64;
    let mut warned_no_separator = false;
    loop {
        line.clear();
        match stdin.read_until(b'\n', &mut line).await {
            Ok(0) => return Sent::All,
            Ok(_) => {}
            Err(e) => return Sent::InputError(format!("cannot read standard input: {e}")),
        }
        let (key, value) = split_line(strip_newline(&line), separator);
        if separator.is_some() && key.is_none() && !warned_no_separator {
            eprintln!("warning: a line without the key separator was sent with no key");
            warned_no_separator = true;
        }
        let record = ProducerRecord {
            topic: args.topic.clone(),
            partition: args.partition.map(PartitionId),
            key,
            value: Some(value),
            headers: Vec::new(),
            timestamp_ms: None,
        };
        line_no += 1;
        match producer.send(record).await {
            Ok(delivery) => {
                if deliveries.send((line_no, delivery)).await.is_err() {
                    return Sent::All;
                }
            }
            // An earlier line failed: its delivery says so.
            Err(Error::StoppedAfterFailure { .. }) => return Sent::All,
            Err(e) => return Sent::Refused(line_no, e),
        }
    }
}

/// Most line numbers listed of lines acknowledged after the first failure.
const LATER_LINES_LISTED_MAX: usize = 10;

/// What the deliveries say, in input order.
#[derive(Debug, Default)]
struct Tally {
    /// Lines 1..=prefix were acknowledged.
    prefix: u64,
    /// The first line that failed, and why.
    first_failure: Option<(u64, Error)>,
    /// Lines after the first failure that were acknowledged anyway (on other partitions,
    /// in flight when it failed): how many, and the first few. Never of the failed line's
    /// partition unless that line's own outcome is unknown: the producer stops.
    later_acknowledged: u64,
    later_lines: Vec<u64>,
}

impl Tally {
    fn acknowledged(&mut self, line: u64) {
        if self.first_failure.is_none() {
            self.prefix = line;
        } else {
            self.later_acknowledged += 1;
            if self.later_lines.len() < LATER_LINES_LISTED_MAX {
                self.later_lines.push(line);
            }
        }
    }

    fn fail(&mut self, line: u64, error: Error) {
        if self
            .first_failure
            .as_ref()
            .is_none_or(|(first, _)| line < *first)
        {
            self.first_failure = Some((line, error));
        }
    }

    /// Which lines are in the log and where to resend from.
    fn report(&self) -> String {
        let Some((line, error)) = &self.first_failure else {
            return format!("all {} lines were acknowledged", self.prefix);
        };
        let error = Explained(error);
        if *line == 1 && self.later_acknowledged == 0 && !may_be_written(error.0) {
            // Nothing is in the log: the error alone says it.
            return error.to_string();
        }
        let acknowledged = match line - 1 {
            0 => "no line was acknowledged".to_string(),
            1 => "the first line was acknowledged".to_string(),
            n => format!("the first {n} lines were acknowledged"),
        };
        let mut report =
            format!("line {line} failed: {error}; {acknowledged}; resend from line {line}");
        if may_be_written(error.0) {
            report.push_str(&format!(
                " (line {line} itself may be in the log: its delivery timed out after it was sent)"
            ));
        }
        if self.later_acknowledged > 0 {
            let listed: Vec<String> = self.later_lines.iter().map(u64::to_string).collect();
            let more = if self.later_acknowledged > listed.len() as u64 {
                ", ..."
            } else {
                ""
            };
            report.push_str(&format!(
                "; {} later lines were acknowledged too and are in the log, on other partitions (lines {}{more}): resending them duplicates them",
                self.later_acknowledged,
                listed.join(", ")
            ));
        }
        report
    }
}

/// A producer error as the CLI user can act on it: the library names its own settings
/// (`batch_bytes_max`), the CLI its flags and commands.
struct Explained<'e>(&'e Error);

impl std::fmt::Display for Explained<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Error::RecordTooLarge { size, max, limit } => {
                let what_to_do = match *limit {
                    "batch_bytes_max" => "raise --batch-bytes or send a smaller record",
                    "buffer_bytes_max" => "send a smaller record",
                    _ => "raise it with `sluice topic alter TOPIC -c segment.bytes=BYTES` or send a smaller record",
                };
                let limit = match *limit {
                    "batch_bytes_max" => "--batch-bytes",
                    "buffer_bytes_max" => "the producer's buffer",
                    other => other,
                };
                write!(
                    f,
                    "a record of {size} bytes does not fit in {limit} ({max} bytes); {what_to_do}"
                )
            }
            other => write!(f, "{other}"),
        }
    }
}

/// Whether a failed record may be in the log all the same: its delivery timed out after a
/// request with it was sent, so the leader may have written it.
fn may_be_written(error: &Error) -> bool {
    matches!(error, Error::DeliveryTimeout { attempts, .. } if *attempts > 0)
}

/// Awaits the deliveries in input order.
async fn count_deliveries(mut deliveries: mpsc::Receiver<(u64, DeliveryFuture)>) -> Tally {
    let mut tally = Tally::default();
    let mut progress = crate::progress::Progress::on_terminal("acknowledged");
    let mut done = 0;
    while let Some((line, delivery)) = deliveries.recv().await {
        match delivery.await {
            Ok(_) => tally.acknowledged(line),
            Err(e) => tally.fail(line, e),
        }
        done += 1;
        progress.update(done);
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_lose_their_newline_and_one_carriage_return() {
        assert_eq!(strip_newline(b"abc\n"), b"abc");
        assert_eq!(strip_newline(b"abc\r\n"), b"abc");
        assert_eq!(strip_newline(b"abc"), b"abc");
        assert_eq!(strip_newline(b"abc\r\r\n"), b"abc\r");
        assert_eq!(strip_newline(b"\n"), b"");
    }

    #[test]
    fn the_first_separator_splits_key_from_value() {
        let check = |line: &[u8], sep: Option<&str>, key: Option<&str>, value: &str| {
            let (k, v) = split_line(line, sep.map(str::as_bytes));
            assert_eq!(k.as_deref(), key.map(str::as_bytes), "{line:?}");
            assert_eq!(&v[..], value.as_bytes(), "{line:?}");
        };
        check(b"a|1", Some("|"), Some("a"), "1");
        check(b"a|1|2", Some("|"), Some("a"), "1|2");
        check(b"|v", Some("|"), Some(""), "v");
        check(b"k::v", Some("::"), Some("k"), "v");
        check(b"no separator", Some("|"), None, "no separator");
        check(b"a|1", None, None, "a|1");
    }
}
