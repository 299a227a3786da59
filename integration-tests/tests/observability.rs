//! The HTTP admin listener of real brokers (issue 21): `/health`, `/ready`, and
//! `/metrics` scraped while records are produced and consumed through the CLI: counters
//! move by exactly what was sent, a stopped group's lag rises in records and seconds and
//! falls to 0 once it catches up (also through `sluice group lag`), and a killed follower
//! shows as an under-replicated partition on the leader.
//!
//! Every wait polls with a generous bound that only turns a hang into a failure; none
//! measures how fast anything happens.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_integration_tests::{
    cli_ok, free_addr, http_get, scrape, wait_until, BrokerProcess, TestCluster,
};

/// Bound of every wait.
const SETTLE: Duration = Duration::from_secs(60);

/// The value of `series` in a scrape, 0 when absent (a counter not yet moved).
fn value(metrics: &BTreeMap<String, f64>, series: &str) -> f64 {
    metrics.get(series).copied().unwrap_or(0.0)
}

/// `n` distinct lines.
fn lines(prefix: &str, n: usize) -> String {
    (0..n).map(|i| format!("{prefix}-{i}\n")).collect()
}

#[test]
fn health_and_metrics_count_exactly_what_was_produced_and_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    let http = broker.http_addr();
    assert_eq!(http_get(http, "/health").unwrap(), (200, "ok\n".into()));
    assert_eq!(http_get(http, "/ready").unwrap().0, 200);
    assert_eq!(http_get(http, "/nothing").unwrap().0, 404);

    cli_ok(&b, &["topic", "create", "counted", "-p", "3"], "");
    let before = scrape(http);
    let input = lines("record", 100);
    cli_ok(&b, &["produce", "counted"], &input);
    let after_produce = scrape(http);
    let produced = r#"sluice_produced_records_total{topic="counted"}"#;
    assert_eq!(
        value(&after_produce, produced) - value(&before, produced),
        100.0
    );
    assert!(
        value(
            &after_produce,
            r#"sluice_produced_bytes_total{topic="counted"}"#
        ) > 0.0
    );
    assert!(value(&after_produce, r#"sluice_requests_total{api="produce"}"#) >= 1.0);
    assert!(
        value(
            &after_produce,
            r#"sluice_request_duration_seconds_count{api="produce"}"#
        ) >= 1.0
    );
    // Acks=all under fsync: the records went through group commits.
    assert!(value(&after_produce, "sluice_fsync_records_sum") >= 100.0);
    assert_eq!(value(&after_produce, "sluice_partitions_led") as i64, 3);
    assert_eq!(value(&after_produce, "sluice_controller_active"), 1.0);

    let consumed = cli_ok(
        &b,
        &["consume", "counted", "--from-beginning", "-n", "100"],
        "",
    );
    assert_eq!(consumed.lines().count(), 100);
    let after_consume = scrape(http);
    let fetched = r#"sluice_fetched_records_total{topic="counted"}"#;
    assert_eq!(value(&after_consume, fetched), 100.0);
    assert_eq!(
        value(
            &after_consume,
            r#"sluice_fetched_bytes_total{topic="counted"}"#
        ),
        value(
            &after_consume,
            r#"sluice_produced_bytes_total{topic="counted"}"#
        )
    );
    let log_bytes: f64 = (0..3)
        .map(|p| {
            value(
                &after_consume,
                &format!(r#"sluice_log_size_bytes{{topic="counted",partition="{p}"}}"#),
            )
        })
        .sum();
    assert_eq!(
        log_bytes,
        value(
            &after_consume,
            r#"sluice_produced_bytes_total{topic="counted"}"#
        )
    );
}

/// The lag series of group `g` on partition 0 of `topic`: (records, seconds).
fn lag(http: std::net::SocketAddr, topic: &str) -> (f64, f64) {
    let metrics = scrape(http);
    let labels = format!(r#"{{group="g",topic="{topic}",partition="0"}}"#);
    (
        value(
            &metrics,
            &format!("sluice_consumer_group_lag_records{labels}"),
        ),
        value(
            &metrics,
            &format!("sluice_consumer_group_lag_seconds{labels}"),
        ),
    )
}

#[test]
fn lag_rises_while_a_group_is_stopped_and_falls_to_zero_once_it_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    let http = broker.http_addr();
    cli_ok(&b, &["topic", "create", "lagging", "-p", "1"], "");
    cli_ok(&b, &["produce", "lagging"], &lines("first", 10));
    let group = ["consume", "lagging", "--group", "g", "--from-beginning"];
    cli_ok(&b, &[&group[..], &["-n", "10"]].concat(), "");
    wait_until("the group's commit in the lag", SETTLE, || {
        lag(http, "lagging") == (0.0, 0.0)
    });
    // A new member's first JoinGroup is refused with MEMBER_ID_REQUIRED (KIP-394).
    assert!(
        value(
            &scrape(http),
            r#"sluice_request_errors_total{api="join_group",error_code="MEMBER_ID_REQUIRED"}"#
        ) >= 1.0
    );

    // The group is stopped; five more records arrive.
    cli_ok(&b, &["produce", "lagging"], &lines("second", 5));
    let mut seconds = 0.0;
    wait_until("5 records of lag, some time old", SETTLE, || {
        let (records, s) = lag(http, "lagging");
        seconds = s;
        records == 5.0 && s > 0.0
    });
    wait_until("the lag in seconds to grow", SETTLE, || {
        lag(http, "lagging").1 > seconds
    });
    let json: serde_json::Value =
        serde_json::from_str(&cli_ok(&b, &["group", "lag", "g", "--format", "json"], "")).unwrap();
    let row = &json[0];
    assert_eq!(row["topic"], "lagging");
    assert_eq!(row["partition"], 0);
    assert_eq!(row["committed"], 10);
    assert_eq!(row["log_end"], 15);
    assert_eq!(row["lag_records"], 5);
    assert!(row["lag_seconds"].as_f64().unwrap() > 0.0, "{json}");

    // It catches up.
    cli_ok(&b, &[&group[..], &["-n", "5"]].concat(), "");
    wait_until("the lag back to 0", SETTLE, || {
        lag(http, "lagging") == (0.0, 0.0)
    });
    let json: serde_json::Value =
        serde_json::from_str(&cli_ok(&b, &["group", "lag", "g", "--format", "json"], "")).unwrap();
    assert_eq!(json[0]["lag_records"], 0, "{json}");
    assert_eq!(json[0]["lag_seconds"], 0.0, "{json}");
}

#[test]
fn a_killed_follower_shows_as_an_under_replicated_partition_on_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(3, dir.path(), &[]);
    let b = cluster.bootstrap();
    cli_ok(
        &b,
        &["topic", "create", "replicated", "-p", "1", "-r", "3"],
        "",
    );
    cluster.wait_isr("replicated", 3);
    let leader = cluster.leader("replicated", 0);
    let leader_http = cluster.node(leader).http_addr();
    let under = "sluice_partitions_under_replicated";
    wait_until("no under-replicated partition", SETTLE, || {
        value(&scrape(leader_http), under) == 0.0
    });
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.node(follower).kill();
    wait_until(
        "an under-replicated partition on the leader",
        SETTLE,
        || value(&scrape(leader_http), under) >= 1.0,
    );
    cluster.node(follower).restart();
    cluster.wait_isr("replicated", 3);
    wait_until("no under-replicated partition again", SETTLE, || {
        value(&scrape(leader_http), under) == 0.0
    });
    cluster.stop_all();
}

#[test]
fn ready_is_503_until_the_broker_registers_and_health_is_200_throughout() {
    let dir = tempfile::tempdir().unwrap();
    // Node 2 joins a quorum whose only voter, node 1, is not running yet: it serves but
    // cannot register.
    let voter = free_addr([127, 0, 0, 1].into());
    let voters = format!("1@{voter}");
    let broker = BrokerProcess::start(
        &dir.path().join("n2"),
        &["--node-id", "2", "--voters", &voters],
    );
    let http = broker.http_addr();
    assert_eq!(http_get(http, "/health").unwrap().0, 200);
    let (status, body) = http_get(http, "/ready").unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(value(&scrape(http), "sluice_broker_ready"), 0.0);

    let _controller = BrokerProcess::start_at(
        voter,
        &dir.path().join("n1"),
        &["--node-id", "1", "--voters", &voters],
    );
    wait_until("node 2 ready", SETTLE, || {
        http_get(http, "/ready").is_ok_and(|(status, _)| status == 200)
    });
    assert_eq!(http_get(http, "/health").unwrap().0, 200);
    assert_eq!(value(&scrape(http), "sluice_broker_ready"), 1.0);
}

#[test]
fn the_console_serves_its_page_the_cluster_the_groups_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    let http = broker.http_addr();
    cli_ok(&b, &["topic", "create", "orders", "-p", "1"], "");
    cli_ok(
        &b,
        &["produce", "orders", "--key-separator", ":"],
        "alice:pizza\nbob:sushi\n",
    );
    cli_ok(
        &b,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--from-beginning",
            "-n",
            "1",
        ],
        "",
    );

    let (status, page) = http_get(http, "/").unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("<title>sluice console</title>"), "{page}");

    let (status, overview) = http_get(http, "/api/overview").unwrap();
    assert_eq!(status, 200, "{overview}");
    let overview: serde_json::Value = serde_json::from_str(&overview).unwrap();
    assert_eq!(overview["brokers"][0]["state"], "active");
    assert_eq!(overview["brokers"][0]["role"], "controller");
    let orders = overview["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orders")
        .expect("topic orders in the overview");
    assert_eq!(orders["partitions"][0]["high_watermark"], 2);
    let billing = &overview["groups"][0];
    assert_eq!(billing["group"], "billing");
    assert_eq!(billing["lag"][0]["committed"], 1);
    assert_eq!(billing["lag"][0]["lag_records"], 1);

    let (status, records) =
        http_get(http, "/api/records?topic=orders&partition=0&offset=1").unwrap();
    assert_eq!(status, 200, "{records}");
    let records: serde_json::Value = serde_json::from_str(&records).unwrap();
    assert_eq!(
        records["records"],
        serde_json::json!([{"offset": 1, "timestamp": records["records"][0]["timestamp"],
            "key": {"text": "bob"}, "value": {"text": "sushi"}, "headers": []}])
    );
    let (status, refusal) = http_get(http, "/api/records?topic=nothing&partition=0").unwrap();
    assert_eq!(status, 400);
    assert!(refusal.contains("not hosted"), "{refusal}");
}

/// Headless Chromium (`$CHROMIUM`, else `chromium` on the PATH), or `None` after saying
/// why the test skips. Under CI (`CI=true`) a missing browser fails: `.ci/run` installs
/// Debian's `chromium`.
fn chromium(test: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("CHROMIUM").map_or_else(|| "chromium".into(), Into::into);
    let found = std::process::Command::new(&path)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    match found {
        true => Some(path),
        false if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: no headless Chromium at {path:?} (under CI .ci/run installs it)")
        }
        false => {
            eprintln!("SKIPPED {test}: no Chromium at {path:?}; apt-get install chromium");
            None
        }
    }
}

#[test]
fn a_headless_browser_shows_the_topic_and_the_group_in_the_console() {
    let Some(chromium) = chromium("console in a browser") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    cli_ok(&b, &["topic", "create", "browsed-topic", "-p", "2"], "");
    cli_ok(&b, &["produce", "browsed-topic"], &lines("seen", 4));
    cli_ok(
        &b,
        &[
            "consume",
            "browsed-topic",
            "--group",
            "browsed-group",
            "--from-beginning",
            "-n",
            "1",
        ],
        "",
    );
    let url = format!("http://{}/", broker.http_addr());
    // The page fills itself from /api/overview after loading: the virtual time budget lets
    // its fetch and scripts run before the DOM is dumped.
    let mut child = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("chromium").display()
        ))
        .arg("--dump-dom")
        .arg(&url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().expect("chromium's stdout");
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut dom).map(|_| dom)
    });
    let deadline = std::time::Instant::now() + SETTLE;
    while child.try_wait().expect("wait for chromium").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within {SETTLE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let dom = reader
        .join()
        .expect("reader thread")
        .expect("chromium's output");
    assert!(dom.contains("<td>browsed-topic</td>"), "{dom}");
    assert!(dom.contains("<b>browsed-group</b>"), "{dom}");
    assert!(dom.contains(r#"<td class="active">active</td>"#), "{dom}");
}
