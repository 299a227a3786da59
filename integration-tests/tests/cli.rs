//! The `sluice` CLI against a real broker: the INTERFACES.md contract for topic, produce,
//! consume and cluster commands, text and JSON, and its errors.

use sluice_integration_tests::{cli, cli_ok, BrokerProcess};

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

/// `sluice topic alter` (IncrementalAlterConfigs through the controller): set keys, remove
/// them back to the broker default, refuse bad values whole; the replicas run with the new
/// limits at once (a segment.bytes lowered below a batch refuses that batch).
#[test]
fn topic_alter_sets_and_removes_configs() {
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
}
