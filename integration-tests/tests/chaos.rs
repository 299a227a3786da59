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
use sluice_integration_tests::chaos::history::Recorder;
use sluice_integration_tests::chaos::workload::{Workload, WorkloadConfig};
use sluice_integration_tests::TestCluster;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

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
