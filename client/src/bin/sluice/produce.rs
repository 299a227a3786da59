//! `sluice produce`: standard input to a topic, one record per line.

use bytes::Bytes;
use sluice_client::{
    Acks, Client, DeliveryFuture, Error, PartitionId, Producer, ProducerConfig, ProducerRecord,
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

pub async fn run(client: Client, args: ProduceArgs) -> CliResult {
    let acks = match args.acks {
        AcksArg::None => Acks::None,
        AcksArg::Leader => Acks::Leader,
        AcksArg::All => Acks::All,
    };
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks,
            enable_idempotence: args.enable_idempotence,
            ..ProducerConfig::default()
        },
    );
    let (deliveries, mut to_count) = mpsc::channel::<DeliveryFuture>(DELIVERIES_QUEUED_MAX);
    let counter = tokio::spawn(async move {
        let mut acknowledged = 0u64;
        let mut first_error: Option<Error> = None;
        while let Some(delivery) = to_count.recv().await {
            match delivery.await {
                Ok(_) => acknowledged += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        (acknowledged, first_error)
    });
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let mut stdin = BufReader::with_capacity(64 * 1024, tokio::io::stdin());
    let mut line = Vec::new();
    let mut total = 0u64;
    let mut warned_no_separator = false;
    let mut send_error = None;
    loop {
        line.clear();
        match stdin.read_until(b'\n', &mut line).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                send_error = Some(format!("cannot read standard input: {e}"));
                break;
            }
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
            value,
            headers: Vec::new(),
            timestamp_ms: None,
        };
        total += 1;
        match producer.send(record).await {
            Ok(delivery) => {
                if deliveries.send(delivery).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                send_error = Some(e.to_string());
                break;
            }
        }
    }
    producer.close().await;
    drop(deliveries);
    let (acknowledged, first_error) = counter
        .await
        .map_err(|e| format!("the delivery counter failed: {e}"))?;
    let failure = send_error.or(first_error.map(|e| e.to_string()));
    match failure {
        None if acknowledged == total => Ok(()),
        None => Err(format!(
            "{acknowledged} of {total} records were acknowledged"
        )),
        Some(e) if total <= 1 && acknowledged == 0 => Err(e),
        Some(e) => Err(format!(
            "{acknowledged} of {total} records were acknowledged; the first failure: {e}"
        )),
    }
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
