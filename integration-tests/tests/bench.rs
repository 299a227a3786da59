//! `sluice-bench` against a real broker, as its user meets it: a record too large fails at
//! once with an error in sluice-bench's own terms, `consume --num-records N` counts
//! exactly N, a consume run reports no latency it did not measure, and progress shows
//! done/total.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_integration_tests::{bin, cli_ok, BrokerProcess};

/// Longer than any run here takes, and well below the producer's 120 s delivery timeout,
/// so that a run that waits for a record it can never send fails the test instead of
/// passing late.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `sluice-bench` against `bootstrap`; kills it and panics after [`RUN_DEADLINE`].
fn bench(bootstrap: &str, args: &[&str]) -> Output {
    let mut child = Command::new(bin("sluice-bench"))
        .arg("--bootstrap")
        .arg(bootstrap)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sluice-bench");
    // Drain both pipes while waiting, so a chatty run cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let deadline = Instant::now() + RUN_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for sluice-bench") {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().expect("kill sluice-bench");
            child.wait().expect("reap sluice-bench");
            let stderr = String::from_utf8_lossy(&err_reader.join().expect("stderr")).into_owned();
            panic!("sluice-bench {args:?} still running after {RUN_DEADLINE:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().expect("stdout"),
        stderr: err_reader.join().expect("stderr"),
    }
}

/// Runs `sluice-bench`, asserts it succeeded, and returns (stdout's last line, stderr).
fn bench_ok(bootstrap: &str, args: &[&str]) -> (String, String) {
    let output = bench(bootstrap, args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "sluice-bench {args:?} failed: {stderr}"
    );
    let stdout = String::from_utf8(output.stdout).expect("utf-8 output");
    let summary = stdout.lines().last().unwrap_or_default().to_string();
    (summary, stderr)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts a failed run: non-zero exit, nothing on stdout, and stderr's last line the one
/// `error: ...` line, which contains every one of `says` and none of `never`; only
/// progress lines at 0 records come before it. Returns the error line.
fn check_fails(output: &Output, says: &[&str], never: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "must fail; stderr: {stderr}");
    assert!(output.stdout.is_empty(), "no summary for a failed run");
    let lines: Vec<&str> = stderr.lines().collect();
    let (error, before) = lines.split_last().expect("an error line");
    assert!(error.starts_with("error: "), "{stderr}");
    for line in before {
        assert!(
            line.contains(" 0/"),
            "only progress at 0 before the error: {stderr}"
        );
    }
    for text in says {
        assert!(error.contains(text), "{error:?} should say {text:?}");
    }
    for text in never {
        assert!(!error.contains(text), "{error:?} should not say {text:?}");
    }
    error.to_string()
}

/// Asserts stderr holds progress lines of `total` records only, each `done/total records
/// (pct%)` with the right percentage, the last at 100%.
fn check_progress(stderr: &str, total: u64) {
    let suffix = format!("/{total} records (");
    let mut last = None;
    for line in stderr.lines() {
        let at = line
            .find(&suffix)
            .unwrap_or_else(|| panic!("not a progress line: {line:?}"));
        let done: u64 = line[..at]
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no done count in {line:?}"));
        let pct = &line[at + suffix.len()..];
        let pct: u64 = pct[..pct.find("%)").expect("percent")].parse().unwrap();
        assert_eq!(pct, done * 100 / total, "{line:?}");
        last = Some(done);
    }
    assert_eq!(
        last,
        Some(total),
        "the last progress line shows all done: {stderr}"
    );
}

#[test]
fn a_record_larger_than_a_batch_or_a_segment_fails_at_once_in_sluice_bench_terms() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();

    // Larger than the producer's default batch (1 MiB).
    let args = [
        "produce",
        "--topic",
        "t",
        "--partitions",
        "1",
        "--num-records",
        "10",
        "--record-size",
        "2000000",
    ];
    let error = check_fails(
        &bench(&b, &args),
        &["--batch-bytes", "--record-size"],
        &["batch_bytes_max", "ProducerConfig"],
    );
    // The flag it names is the way out.
    let (summary, _) = bench_ok(
        &b,
        &[&args[..], &["--batch-bytes", "4000000", "--format", "json"]].concat(),
    );
    assert_eq!(json(&summary)["records"], 10, "after {error:?}");

    // Larger than the topic's segment.bytes: the error gives the command that raises it.
    cli_ok(
        &b,
        &[
            "topic",
            "create",
            "small",
            "-p",
            "1",
            "-c",
            "segment.bytes=100000",
        ],
        "",
    );
    let args = [
        "produce",
        "--topic",
        "small",
        "--num-records",
        "5",
        "--record-size",
        "200000",
    ];
    let error = check_fails(
        &bench(&b, &args),
        &[
            "sluice topic alter small -c segment.bytes=",
            "--record-size",
        ],
        &["batch_bytes_max"],
    );
    let command = error
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no command in {error:?}"));
    let alter: Vec<&str> = command.split(' ').skip(1).collect();
    cli_ok(&b, &alter, "");
    let (summary, _) = bench_ok(&b, &[&args[..], &["--format", "json"]].concat());
    assert_eq!(json(&summary)["records"], 5, "after {command:?}");
}

#[test]
fn consume_counts_exactly_n_reports_no_latency_and_progress_shows_done_of_total() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    let topic = ["--topic", "bt", "--partitions", "3"];

    let (summary, stderr) = bench_ok(
        &b,
        &[
            &["produce"][..],
            &topic,
            &[
                "--num-records",
                "3000",
                "--record-size",
                "100",
                "--format",
                "json",
            ],
        ]
        .concat(),
    );
    let produced = json(&summary);
    assert_eq!(
        (produced["records"].as_u64(), produced["bytes"].as_u64()),
        (Some(3000), Some(300_000))
    );
    assert!(
        produced["latency_ms"]["max"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0),
        "{produced}"
    );
    check_progress(&stderr, 3000);

    // N ends inside a batch (batches of a partition hold far more than a few records).
    let (summary, stderr) = bench_ok(
        &b,
        &[
            &["consume"][..],
            &topic,
            &["--num-records", "1234", "--format", "json"],
        ]
        .concat(),
    );
    let consumed = json(&summary);
    assert_eq!(consumed["records"], 1234, "{consumed}");
    assert_eq!(consumed["bytes"], 123_400, "{consumed}");
    // INTERFACES.md's summary has latency_ms with its four keys; consume measures none.
    assert_eq!(
        consumed["latency_ms"],
        serde_json::json!({"p50": null, "p99": null, "p999": null, "max": null}),
        "{consumed}"
    );
    check_progress(&stderr, 1234);

    let (summary, stderr) = bench_ok(
        &b,
        &[&["consume"][..], &topic, &["--num-records", "1234"]].concat(),
    );
    assert!(
        summary.starts_with("1234 records, 123400 bytes in "),
        "{summary}"
    );
    assert!(!summary.contains("latency"), "{summary}");
    assert!(!stderr.contains("p99"), "{stderr}");

    // A group's committed position is after the records counted, not after the last poll:
    // two runs of 1234 and 1766 read the 3000 records exactly.
    for (n, committed) in [(1234, 1234), (1766, 3000)] {
        let (summary, _) = bench_ok(
            &b,
            &[
                &["consume"][..],
                &topic,
                &[
                    "--group",
                    "g",
                    "--num-records",
                    &n.to_string(),
                    "--format",
                    "json",
                ],
            ]
            .concat(),
        );
        assert_eq!(json(&summary)["records"], n, "{summary}");
        assert_eq!(committed_sum(&b, "g"), committed);
    }

    // e2e measures a latency, and reports it.
    let (summary, stderr) = bench_ok(
        &b,
        &[
            &["e2e"][..],
            &topic,
            &[
                "--num-records",
                "500",
                "--record-size",
                "100",
                "--format",
                "json",
            ],
        ]
        .concat(),
    );
    let e2e = json(&summary);
    assert_eq!(e2e["records"], 500, "{e2e}");
    assert!(
        e2e["latency_ms"]["max"].as_f64().is_some_and(|ms| ms > 0.0),
        "{e2e}"
    );
    check_progress(&stderr, 500);
}

/// The sum of `group`'s committed offsets over its partitions.
fn committed_sum(bootstrap: &str, group: &str) -> i64 {
    let described = json(&cli_ok(
        bootstrap,
        &["group", "describe", group, "--format", "json"],
        "",
    ));
    described["offsets"]
        .as_array()
        .unwrap_or_else(|| panic!("{described}"))
        .iter()
        .map(|o| o["committed"].as_i64().unwrap_or(0))
        .sum()
}
