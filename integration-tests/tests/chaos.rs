//! The chaos suite (issue 8): a workload of idempotent acks=all producers, group members
//! and assigned consumers runs against real brokers while a seeded nemesis breaks the
//! cluster; then everything heals, the consumers drain, and the Jepsen-style checker
//! (`sluice_integration_tests::chaos::checker`) must find no anomaly.
//!
//! `SLUICE_CHAOS_SEED` reproduces a run, `SLUICE_CHAOS_SECS` lengthens it; every run
//! prints its seed and the checker's report, and a failed run leaves its history as JSON
//! lines next to the report.

use std::time::Duration;

use sluice_client::{Admin, Client, ClientConfig, NewTopic};
use sluice_integration_tests::chaos::checker::{check, CheckConfig};
use sluice_integration_tests::chaos::harness::ChaosCluster;
use sluice_integration_tests::chaos::history::Recorder;
use sluice_integration_tests::chaos::nemesis::{self, nemesis_time, seed, Rng};
use sluice_integration_tests::chaos::workload::{Workload, WorkloadConfig};
use sluice_integration_tests::checks::runtime;
use sluice_integration_tests::TestCluster;

#[test]
fn a_fault_free_run_has_no_anomalies() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(3, dir.path(), &[]);
    let rt = runtime();
    let client = rt
        .block_on(Client::connect(ClientConfig {
            bootstrap: cluster.bootstrap().split(',').map(str::to_owned).collect(),
            ..ClientConfig::default()
        }))
        .unwrap();
    rt.block_on(Admin::new(client).create_topic(NewTopic::new("calm", 4, 3)))
        .unwrap();
    cluster.wait_isr("calm", 3);
    let recorder = Recorder::new();
    let workload = Workload::start(
        &rt,
        &cluster.bootstrap(),
        WorkloadConfig::new("calm", 4),
        &recorder,
    );
    std::thread::sleep(Duration::from_secs(5));
    let ends = workload.finish(&rt, Duration::from_secs(60));
    let report = check(
        &recorder.history(),
        &CheckConfig {
            log_end_offsets: ends,
            ..CheckConfig::default()
        },
    );
    eprintln!("{report}");
    assert!(report.is_ok(), "{report}");
}

#[test]
fn nothing_acknowledged_is_lost_duplicated_or_reordered_under_a_random_nemesis() {
    let seed = seed();
    let duration = nemesis_time(40);
    eprintln!("chaos: seed {seed} (SLUICE_CHAOS_SEED={seed} reproduces the schedule), nemesis for {duration:?}");
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ChaosCluster::start(3, dir.path(), &[]);
    let rt = runtime();
    let topic = "chaos";
    let partitions = 4;
    let client = rt
        .block_on(Client::connect(ClientConfig {
            bootstrap: cluster.bootstrap().split(',').map(str::to_owned).collect(),
            ..ClientConfig::default()
        }))
        .unwrap();
    rt.block_on(
        Admin::new(client)
            .create_topic(NewTopic::new(topic, partitions, 3).config("min.insync.replicas", "2")),
    )
    .unwrap();
    cluster.cluster().wait_isr(topic, 3);
    let recorder = Recorder::new();
    let workload = Workload::start(
        &rt,
        &cluster.bootstrap(),
        WorkloadConfig::new(topic, partitions),
        &recorder,
    );

    let mut rng = Rng::new(seed);
    std::thread::sleep(Duration::from_secs(2));
    let faults = nemesis::run(
        &mut cluster,
        &mut rng,
        duration,
        (topic, partitions),
        &recorder,
    );
    cluster.cluster().wait_isr(topic, 3);
    let ends = workload.finish(&rt, Duration::from_secs(120));
    let history = recorder.history();
    let report = check(
        &history,
        &CheckConfig {
            log_end_offsets: ends,
            ..CheckConfig::default()
        },
    );
    eprintln!("chaos: seed {seed}, {faults} faults\n{report}");
    if !report.is_ok() {
        let path =
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chaos-{seed}.jsonl"));
        std::fs::write(&path, history.to_json_lines()).unwrap();
        // Keep the brokers' data (stopped, so the files are final) for the post-mortem.
        cluster.stop_all();
        let data = dir.keep();
        panic!(
            "chaos: anomalies (seed {seed}); history in {}, the brokers' data in {}\n{report}",
            path.display(),
            data.display()
        );
    }
    cluster.stop_all();
}
