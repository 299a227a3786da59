//! The `sluice` CLI against a real broker: the INTERFACES.md contract for topic, produce,
//! consume and cluster commands, text and JSON, and its errors.

use std::io::Write;
use std::time::Duration;

use sluice_integration_tests::{cli, cli_ok, wait_until, BrokerProcess};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn topic_commands_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    let out = cli_ok(
        &b,
        &[
            "topic",
            "create",
            "orders",
            "-p",
            "3",
            "-c",
            "retention.ms=60000",
        ],
        "",
    );
    assert!(out.contains("orders"), "{out}");

    let list = json(&cli_ok(&b, &["topic", "list", "--format", "json"], ""));
    assert_eq!(list[0]["name"], "orders");
    assert_eq!(list[0]["partitions"], 3);
    assert_eq!(list[0]["replication_factor"], 1);
    assert!(cli_ok(&b, &["topic", "list"], "").contains("orders"));

    let described = json(&cli_ok(
        &b,
        &["topic", "describe", "orders", "--format", "json"],
        "",
    ));
    assert_eq!(described["config"]["retention.ms"], "60000");
    for (i, p) in described["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(p["partition"], i);
        assert_eq!(p["leader"], 1);
        assert_eq!(p["replicas"], serde_json::json!([1]));
        assert_eq!(p["isr"], serde_json::json!([1]));
        assert_eq!(p["high_watermark"], 0);
    }

    let cluster = json(&cli_ok(
        &b,
        &["cluster", "describe", "--format", "json"],
        "",
    ));
    assert_eq!(cluster["controller"]["leader"], 1);
    assert_eq!(cluster["brokers"][0]["address"], b.as_str());
    assert_eq!(cluster["brokers"][0]["state"], "active");

    cli_ok(&b, &["topic", "delete", "orders"], "");
    let out = cli(&b, &["topic", "describe", "orders"], "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("\"orders\""),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[test]
fn produce_and_consume_records_keys_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    cli_ok(&b, &["topic", "create", "events", "-p", "2"], "");
    cli_ok(
        &b,
        &["produce", "events", "--key-separator", ":"],
        "user-1:login\nuser-1:logout\r\n",
    );
    cli_ok(
        &b,
        &["produce", "events", "--partition", "1", "--acks", "1"],
        "plain\n",
    );

    let lines = cli_ok(
        &b,
        &[
            "consume",
            "events",
            "--from-beginning",
            "-n",
            "3",
            "--timeout-ms",
            "10000",
            "--format",
            "json",
        ],
        "",
    );
    let records: Vec<serde_json::Value> = lines.lines().map(json).collect();
    assert_eq!(records.len(), 3);
    let keyed: Vec<_> = records.iter().filter(|r| r["key"] == "user-1").collect();
    assert_eq!(keyed.len(), 2, "{records:?}");
    assert_eq!(
        keyed[0]["partition"], keyed[1]["partition"],
        "same key, same partition"
    );
    let values: Vec<_> = keyed.iter().map(|r| r["value"].as_str().unwrap()).collect();
    assert_eq!(values, ["login", "logout"], "order kept, \\r stripped");

    // --partition with --offset starts exactly there.
    let out = cli_ok(
        &b,
        &[
            "consume",
            "events",
            "--partition",
            "1",
            "--offset",
            "0",
            "--timeout-ms",
            "3000",
        ],
        "",
    );
    assert!(out.lines().any(|l| l == "plain"), "{out}");

    // The timeout ends a consume that gets nothing new.
    let out = cli_ok(&b, &["consume", "events", "--timeout-ms", "500"], "");
    assert_eq!(out, "", "starts at the end by default");
}

#[test]
fn failures_exit_non_zero_and_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    let out = cli(&b, &["produce", "missing"], "a\nb\n");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"missing\"") && stderr.contains("does not exist"),
        "{stderr}"
    );

    for args in [
        &["topic", "create", "bad name"][..],
        &["topic", "create", "x", "-r", "3"],
        &["topic", "create", "x", "-c", "no.such.key=1"],
        &["consume", "x", "--group", "g"],
    ] {
        let out = cli(&b, args, "");
        assert!(!out.status.success(), "{args:?} must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }
    let out = cli("127.0.0.1:1", &["topic", "list"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is sluice-broker running"));
}

/// What a user reads after a wrong turn: one line, the specifics once, what to do with
/// the commands and flags that exist; no Rust names (`BrokerId(1)`, `ProducerConfig`).
#[test]
fn errors_say_what_happened_and_what_to_do_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    cli_ok(&b, &["topic", "create", "t"], "");
    let check = |args: &[&str], stdin: &str, expected: &str| {
        let out = cli(&b, args, stdin);
        assert!(!out.status.success(), "{args:?} must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end(), expected, "{args:?}");
        said_once(&stderr);
    };
    check(
        &["topic", "create", "t"],
        "",
        "error: creating topic \"t\": topic \"t\" already exists; pick another name or use \
         the existing topic",
    );
    check(
        &["topic", "delete", "nosuch"],
        "",
        "error: topic \"nosuch\" does not exist; sluice topic list shows the topics",
    );
    check(
        &["topic", "delete", "__consumer_offsets"],
        "",
        "error: deleting topic \"__consumer_offsets\": __consumer_offsets is internal: it \
         holds every consumer group's committed offsets; delete groups with `sluice group \
         delete` instead",
    );
    check(
        &["topic", "create", "x", "-r", "3"],
        "",
        "error: creating topic \"x\": replication factor 3 needs 3 brokers, but only broker 1 \
         is available; add brokers or use a smaller --replication-factor",
    );
    check(
        &["topic", "create", "x", "-c", "segment.bytes=1"],
        "",
        "error: creating topic \"x\": config segment.bytes=\"1\" is invalid: expected an \
         integer of at least 4096; correct it and try again",
    );
    let big = format!("{}\n", "a".repeat(2_000_000));
    check(
        &["produce", "t"],
        &big,
        "error: a record of 2000087 bytes does not fit in --batch-bytes (1048576 bytes); raise \
         --batch-bytes or send a smaller record",
    );
}

/// Normal operation logs nothing above INFO: a single node used with a consumer group
/// (so `__consumer_offsets` exists and is led here), stopped cleanly, restarted, used and
/// stopped again.
#[test]
fn a_clean_stop_and_restart_log_nothing_above_info() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    cli_ok(&b, &["topic", "create", "t", "-p", "2"], "");
    for round in 0..2 {
        cli_ok(&b, &["produce", "t"], "a\nb\nc\n");
        let consumed = cli_ok(
            &b,
            &[
                "consume",
                "t",
                "--group",
                "g",
                "--from-beginning",
                "-n",
                "3",
            ],
            "",
        );
        assert_eq!(consumed.lines().count(), 3, "round {round}: {consumed}");
        assert!(broker.terminate().success(), "round {round}");
        if round == 0 {
            broker.restart();
        }
    }
    let log = broker.log();
    let loud: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(loud.is_empty(), "{}", loud.join("\n"));
}

/// `topic create --help` names every topic config the broker knows (the keys `topic
/// describe` shows with their values), and `sluice --help` is about the CLI.
#[test]
fn help_lists_every_topic_config_key() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    cli_ok(&b, &["topic", "create", "t"], "");
    let described = json(&cli_ok(
        &b,
        &["topic", "describe", "t", "--format", "json"],
        "",
    ));
    let help = cli_ok(&b, &["topic", "create", "--help"], "");
    let keys: Vec<&String> = described["config"].as_object().unwrap().keys().collect();
    assert!(!keys.is_empty());
    for key in keys {
        assert!(help.contains(key.as_str()), "{key} missing from: {help}");
    }
    let about = cli_ok(&b, &["--help"], "");
    assert!(
        about.starts_with("Command-line client of the sluice log broker"),
        "{about}"
    );
}

/// Fails if a clause ("; "-separated) of a message appears twice in it.
fn said_once(stderr: &str) {
    for line in stderr.lines() {
        let clauses: Vec<&str> = line.split("; ").map(str::trim).collect();
        for (i, clause) in clauses.iter().enumerate() {
            assert!(
                !clauses[i + 1..].contains(clause),
                "\"{clause}\" said twice: {line}"
            );
        }
        assert!(
            !line.contains("BrokerId(") && !line.contains("Config::"),
            "a Rust name in: {line}"
        );
    }
}

/// No silent waits: a produce that cannot be acknowledged (fewer in-sync replicas than
/// min.insync.replicas) says on stderr what it waits for while it retries, and gives up
/// after --timeout-ms.
#[test]
fn produce_says_what_it_waits_for_and_gives_up_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    cli_ok(
        &b,
        &["topic", "create", "m", "-c", "min.insync.replicas=2"],
        "",
    );
    let out = cli(&b, &["produce", "m", "--timeout-ms", "3000"], "hello\n");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut lines = stderr.lines();
    let waiting = lines.next().unwrap_or_default();
    assert!(
        waiting.starts_with(
            "waiting: producing to m/0: m-0 has 1 in-sync replica (broker 1), \
             fewer than min.insync.replicas=2"
        ) && waiting.ends_with("retrying for up to 3 s"),
        "{stderr}"
    );
    let error = lines.next().unwrap_or_default();
    assert!(
        error.starts_with("error: line 1 failed: record for m/0 not acknowledged within 3000 ms"),
        "{stderr}"
    );
    assert_eq!(lines.next(), None, "{stderr}");
    said_once(waiting);
}

/// An admin command without a controller quorum says so while it waits, then fails after
/// its --timeout-ms naming the voters that do not answer.
#[test]
fn admin_commands_without_a_quorum_say_so_and_give_up() {
    use sluice_integration_tests::free_addr;
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<_> = (0..3).map(|_| free_addr([127, 0, 0, 1].into())).collect();
    let voters = format!("1@{},2@{},3@{}", addrs[0], addrs[1], addrs[2]);
    // The missing voters' addresses stay taken, by listeners that close every connection
    // (as a host with nothing listening refuses it): left free, a broker of a test running
    // alongside could get one of them and answer node 1's Raft votes.
    for addr in &addrs[1..] {
        let listener = std::net::TcpListener::bind(addr).expect("hold a missing voter's address");
        std::thread::spawn(move || {
            for connection in listener.incoming() {
                drop(connection);
            }
        });
    }
    let broker = BrokerProcess::start_at(
        addrs[0],
        &dir.path().join("data"),
        &["--node-id", "1", "--voters", &voters],
    );
    let out = cli(
        &broker.bootstrap(),
        &["topic", "create", "x", "--timeout-ms", "4000"],
        "",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = "creating topic \"x\": the controller quorum has no leader: 1 of its 3 \
                    voters answer (not 2, 3) and a leader needs 2; start the missing voters or \
                    check the network between them";
    assert!(
        stderr.starts_with(&format!("waiting: {expected}; retrying for up to")),
        "{stderr}"
    );
    assert!(
        stderr.ends_with(&format!("error: {expected}\n")),
        "{stderr}"
    );
}

/// `sluice topic delete-records`: a partition's records below an offset go, consumers start
/// there, -1 deletes every committed record of every partition, past the high watermark is
/// refused.
#[test]
fn topic_delete_records_moves_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    cli_ok(&b, &["topic", "create", "dr", "-p", "2"], "");
    let lines =
        |from: usize, to: usize| -> String { (from..to).map(|i| format!("v{i}\n")).collect() };
    cli_ok(&b, &["produce", "dr", "--partition", "0"], &lines(0, 10));
    cli_ok(&b, &["produce", "dr", "--partition", "1"], &lines(0, 6));
    let out = cli_ok(
        &b,
        &["topic", "delete-records", "dr", "--offset", "4", "-p", "0"],
        "",
    );
    assert_eq!(out, "dr/0: records below 4 deleted\n");
    let described = json(&cli_ok(
        &b,
        &["topic", "describe", "dr", "--format", "json"],
        "",
    ));
    assert_eq!(described["partitions"][0]["log_start_offset"], 4);
    assert_eq!(described["partitions"][1]["log_start_offset"], 0);
    // The ten records went in one batch: the consumer skips what is below the start.
    let read = cli_ok(
        &b,
        &[
            "consume",
            "dr",
            "--partition",
            "0",
            "--from-beginning",
            "--timeout-ms",
            "2000",
        ],
        "",
    );
    assert_eq!(read, lines(4, 10));
    let all = json(&cli_ok(
        &b,
        &[
            "topic",
            "delete-records",
            "dr",
            "--offset",
            "-1",
            "--format",
            "json",
        ],
        "",
    ));
    assert_eq!(
        all,
        serde_json::json!([
            {"partition": 0, "low_watermark": 10},
            {"partition": 1, "low_watermark": 6}
        ])
    );
    let past = cli(
        &b,
        &[
            "topic",
            "delete-records",
            "dr",
            "--offset",
            "100",
            "-p",
            "0",
        ],
        "",
    );
    assert!(!past.status.success());
    let stderr = String::from_utf8_lossy(&past.stderr);
    assert!(stderr.contains("high watermark 10"), "{stderr}");
    // A group's commit creates __consumer_offsets, whose records are not for deleting.
    cli_ok(
        &b,
        &["consume", "dr", "--group", "g", "--timeout-ms", "500"],
        "",
    );
    let internal = cli(
        &b,
        &[
            "topic",
            "delete-records",
            "__consumer_offsets",
            "--offset",
            "-1",
            "-p",
            "0",
        ],
        "",
    );
    assert!(!internal.status.success());
    let stderr = String::from_utf8_lossy(&internal.stderr);
    assert!(stderr.contains("is internal"), "{stderr}");
}

/// `sluice topic alter` (IncrementalAlterConfigs through the controller): set keys, remove
/// them back to the broker default, refuse bad values whole; the replicas run with the new
/// limits at once (a segment.bytes lowered below a batch refuses that batch).
#[test]
fn topic_alter_sets_and_removes_configs_and_adds_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    cli_ok(
        &b,
        &["topic", "create", "alt", "-c", "retention.ms=60000"],
        "",
    );
    let config = |key: &str| {
        let described = json(&cli_ok(
            &b,
            &["topic", "describe", "alt", "--format", "json"],
            "",
        ));
        described["config"][key]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let default_segment = config("segment.bytes");

    cli_ok(
        &b,
        &[
            "topic",
            "alter",
            "alt",
            "-c",
            "segment.bytes=4096",
            "--delete-config",
            "retention.ms",
        ],
        "",
    );
    assert_eq!(config("segment.bytes"), "4096");
    assert_eq!(
        config("retention.ms"),
        "604800000",
        "back to the broker default"
    );
    // The live limit: a batch over 4096 bytes no longer fits a segment.
    let big = format!("{}\n", "x".repeat(8000));
    let refused = cli(&b, &["produce", "alt"], &big);
    assert!(
        !refused.status.success(),
        "an 8 KB record fits a 4 KiB segment?"
    );

    let bad = cli(
        &b,
        &[
            "topic",
            "alter",
            "alt",
            "-c",
            "segment.bytes=1",
            "-c",
            "retention.ms=5",
        ],
        "",
    );
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("segment.bytes"), "{stderr}");
    assert_eq!(
        config("retention.ms"),
        "604800000",
        "nothing of a refused alter applies"
    );

    cli_ok(
        &b,
        &["topic", "alter", "alt", "--delete-config", "segment.bytes"],
        "",
    );
    assert_eq!(config("segment.bytes"), default_segment);
    let missing = cli(
        &b,
        &["topic", "alter", "nosuch", "-c", "retention.ms=1"],
        "",
    );
    assert!(!missing.status.success());

    // Partitions: added, never removed; the coordinators' topics keep theirs.
    let grown = json(&cli_ok(
        &b,
        &["topic", "alter", "alt", "-p", "3", "--format", "json"],
        "",
    ));
    assert_eq!(
        grown,
        serde_json::json!({"altered": "alt", "partitions": 3})
    );
    let described = json(&cli_ok(
        &b,
        &["topic", "describe", "alt", "--format", "json"],
        "",
    ));
    assert_eq!(described["partitions"].as_array().unwrap().len(), 3);
    let shrink = cli(&b, &["topic", "alter", "alt", "-p", "2"], "");
    assert!(!shrink.status.success());
    let stderr = String::from_utf8_lossy(&shrink.stderr);
    assert!(
        stderr.contains("has 3 partitions and cannot have fewer"),
        "{stderr}"
    );
    let internal = cli(
        &b,
        &["topic", "alter", "__consumer_offsets", "-p", "100"],
        "",
    );
    assert!(!internal.status.success());
    let stderr = String::from_utf8_lossy(&internal.stderr);
    assert!(stderr.contains("is internal"), "{stderr}");
}

/// The high watermark of each partition of `topic`, from `topic describe`.
fn high_watermarks(bootstrap: &str, topic: &str) -> Vec<i64> {
    let described = json(&cli_ok(
        bootstrap,
        &["topic", "describe", topic, "--format", "json"],
        "",
    ));
    described["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["high_watermark"].as_i64().unwrap())
        .collect()
}

/// Issue 19, item 1: a topic whose segment.bytes (64 KiB) is below the producer's batch
/// size still takes every record of a large input: the producer sizes its batches by the
/// topic's limit (and would split a batch the leader refused as too large).
#[test]
fn produce_fits_batches_to_a_small_segment_size() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    cli_ok(
        &b,
        &[
            "topic",
            "create",
            "kf",
            "-p",
            "2",
            "-c",
            "segment.bytes=65536",
        ],
        "",
    );
    // About 3 MB: the CLI reads far more than 64 KiB within one linger, so batches
    // sized by the producer's own 1 MiB limit would be refused.
    let padding = "p".repeat(80);
    let input: String = (0..30_000)
        .map(|i| format!("key-{}|value-{i}-{padding}\n", i % 97))
        .collect();
    cli_ok(&b, &["produce", "kf", "--key-separator", "|"], &input);
    assert_eq!(high_watermarks(&b, "kf").iter().sum::<i64>(), 30_000);
    let out = cli_ok(
        &b,
        &[
            "consume",
            "kf",
            "--from-beginning",
            "-n",
            "30000",
            "--timeout-ms",
            "10000",
            "--format",
            "json",
        ],
        "",
    );
    // Each key's values in input order, each once.
    let mut per_key: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for record in out.lines().map(json) {
        let value = record["value"].as_str().unwrap();
        let n: u64 = value
            .strip_prefix("value-")
            .and_then(|v| v.split('-').next())
            .unwrap()
            .parse()
            .unwrap();
        per_key
            .entry(record["key"].as_str().unwrap().to_owned())
            .or_default()
            .push(n);
    }
    for (key, values) in &per_key {
        let expected: Vec<u64> = values
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<u64>>()
            .into_iter()
            .collect();
        assert_eq!(values, &expected, "{key}: in order, once each");
    }
    assert_eq!(per_key.values().map(Vec::len).sum::<usize>(), 30_000);
}

/// The values of every record of single-partition `topic`, in offset order.
fn values(bootstrap: &str, topic: &str, n: usize) -> Vec<String> {
    let out = cli_ok(
        bootstrap,
        &[
            "consume",
            topic,
            "--from-beginning",
            "-n",
            &n.to_string(),
            "--timeout-ms",
            "5000",
        ],
        "",
    );
    out.lines().map(str::to_owned).collect()
}

/// Issue 19, item 2: `sluice produce` keeps the log a prefix of its input. A line that
/// fails stops it: nothing after that line is written, and stderr says how many leading
/// lines are in the log and where to resend from. Two failures: a line the producer
/// refuses at once (larger than the topic's segment.bytes), and one the leader refuses
/// after the topic's limit was lowered under a running `produce` (its metadata is stale,
/// so the batch is sent, refused, split down to the line, and the line fails alone).
#[test]
fn produce_stops_at_the_first_failed_line_and_says_where_to_resend_from() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    let big = "x".repeat(8000);

    cli_ok(
        &b,
        &["topic", "create", "pa", "-c", "segment.bytes=4096"],
        "",
    );
    let mut input: Vec<String> = (1..=600).map(|i| format!("v{i}")).collect();
    input[300] = big.clone();
    let out = cli(&b, &["produce", "pa"], &(input.join("\n") + "\n"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the first 300 lines were acknowledged; resend from line 301"),
        "{stderr}"
    );
    assert_eq!(
        values(&b, "pa", 600),
        input[..300],
        "the log is the first 300 lines"
    );

    cli_ok(&b, &["topic", "create", "pb"], "");
    let mut produce = std::process::Command::new(sluice_integration_tests::bin("sluice"))
        .args(["--bootstrap", &b, "produce", "pb"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = produce.stdin.take().unwrap();
    let first: String = (1..=500).map(|i| format!("v{i}\n")).collect();
    stdin.write_all(first.as_bytes()).unwrap();
    stdin.flush().unwrap();
    wait_until(
        "the first 500 lines in the log",
        Duration::from_secs(30),
        || high_watermarks(&b, "pb") == [500],
    );
    cli_ok(
        &b,
        &["topic", "alter", "pb", "-c", "segment.bytes=4096"],
        "",
    );
    let rest: String = std::iter::once(big)
        .chain((502..=1000).map(|i| format!("v{i}")))
        .map(|line| line + "\n")
        .collect();
    stdin.write_all(rest.as_bytes()).unwrap();
    drop(stdin);
    let out = produce.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 501 failed")
            && stderr.contains("the first 500 lines were acknowledged; resend from line 501"),
        "{stderr}"
    );
    let expected: Vec<String> = (1..=500).map(|i| format!("v{i}")).collect();
    assert_eq!(values(&b, "pb", 1000), expected, "nothing after line 500");
}

/// Issue 19, item 3: `consume --group --from-beginning -n N` that printed from only some of
/// its six partitions still commits where it started on the others, so the group's next
/// `consume` (without --from-beginning) reads the rest of the topic, not from the end.
#[test]
fn a_group_consume_commits_the_position_of_every_assigned_partition() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    cli_ok(&b, &["topic", "create", "g", "-p", "6"], "");
    let input: String = (0..1200).map(|i| format!("k{i}|{i}\n")).collect();
    cli_ok(&b, &["produce", "g", "--key-separator", "|"], &input);
    assert!(
        high_watermarks(&b, "g").iter().all(|&hw| hw > 0),
        "every partition has records"
    );
    let consume = |args: &[&str]| {
        let mut all = vec!["consume", "g", "--group", "G1"];
        all.extend_from_slice(args);
        cli_ok(&b, &all, "")
    };
    let first = consume(&["--from-beginning", "-n", "400"]);
    assert_eq!(first.lines().count(), 400);
    let rest = consume(&["--timeout-ms", "3000"]);
    let mut seen: Vec<u32> = first
        .lines()
        .chain(rest.lines())
        .map(|v| v.parse().unwrap())
        .collect();
    seen.sort();
    assert_eq!(seen, (0..1200).collect::<Vec<u32>>(), "each record once");
}

#[test]
fn quota_commands_set_list_remove_and_hold_back_a_producer_over_its_quota() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    let out = cli_ok(
        &b,
        &[
            "quota",
            "set",
            "--client-id",
            "sluice-cli",
            "--producer-byte-rate",
            "50000",
        ],
        "",
    );
    assert_eq!(out, "set client-id=sluice-cli producer_byte_rate=50000\n");
    cli_ok(
        &b,
        &[
            "quota",
            "set",
            "--default-user",
            "--consumer-byte-rate",
            "1048576",
        ],
        "",
    );
    let listed = json(&cli_ok(&b, &["quota", "list", "--format", "json"], ""));
    assert_eq!(
        listed,
        serde_json::json!([
            {"user": null, "client_id": "sluice-cli", "quotas": {"producer_byte_rate": 50000}},
            {"user": "<default>", "client_id": null, "quotas": {"consumer_byte_rate": 1048576}},
        ])
    );
    // 600 KB from client id sluice-cli: over 50 KB/s across the 10 s window.
    cli_ok(&b, &["topic", "create", "q"], "");
    let value = "x".repeat(1000);
    let input: String = (0..600).map(|_| format!("{value}\n")).collect();
    cli_ok(&b, &["produce", "q"], &input);
    let metrics = sluice_integration_tests::scrape(broker.http_addr());
    let throttles = metrics
        .get(r#"sluice_quota_throttles_total{quota="producer_byte_rate"}"#)
        .copied()
        .unwrap_or(0.0);
    assert!(throttles >= 1.0, "no producer throttled: {metrics:?}");
    let read = cli_ok(
        &b,
        &["consume", "q", "--from-beginning", "--timeout-ms", "5000"],
        "",
    );
    assert_eq!(read.lines().count(), 600, "every record was written");
    // Refusals: no rate, two names for one component, a rate of zero.
    for bad in [
        &["quota", "set", "--user", "a"][..],
        &[
            "quota",
            "set",
            "--user",
            "a",
            "--default-user",
            "--producer-byte-rate",
            "1",
        ],
        &["quota", "set", "--user", "a", "--producer-byte-rate", "0"],
    ] {
        assert!(!cli(&b, bad, "").status.success(), "{bad:?}");
    }
    let out = cli_ok(&b, &["quota", "remove", "--client-id", "sluice-cli"], "");
    assert_eq!(
        out,
        "removed producer_byte_rate and consumer_byte_rate of client-id=sluice-cli\n"
    );
    cli_ok(&b, &["quota", "remove", "--default-user"], "");
    assert_eq!(cli_ok(&b, &["quota", "list"], ""), "");
}
