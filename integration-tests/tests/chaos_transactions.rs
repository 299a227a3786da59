//! The chaos suite's transactional workload (issue 26): an exactly-once
//! consume-transform-produce pipeline (`sluice_integration_tests::chaos::pipeline`) runs on
//! three brokers while the seeded nemesis kills, pauses, partitions and damages them; then
//! everything heals, the processors drain the input, and the checker must find every input
//! record with exactly one committed output, nothing aborted read committed, the group's
//! offsets at the input's ends and no transaction left hanging.
//!
//! `SLUICE_CHAOS_SEED` reproduces a run's schedule, `SLUICE_CHAOS_SECS` lengthens it.

use std::time::Duration;

use sluice_client::{Admin, Client, ClientConfig, NewTopic};
use sluice_integration_tests::chaos::harness::ChaosCluster;
use sluice_integration_tests::chaos::history::Recorder;
use sluice_integration_tests::chaos::nemesis::{self, nemesis_time, seed, Rng};
use sluice_integration_tests::chaos::pipeline::{Pipeline, PipelineConfig};
use sluice_integration_tests::checks::runtime;

#[test]
fn a_transactional_pipeline_is_exactly_once_under_a_random_nemesis() {
    let seed = seed();
    let duration = nemesis_time(25);
    eprintln!("chaos: seed {seed} (SLUICE_CHAOS_SEED={seed} reproduces the schedule), nemesis for {duration:?}");
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ChaosCluster::start(3, dir.path(), &[]);
    let rt = runtime();
    let config = PipelineConfig::new("pipeline-in", "pipeline-out", 3);
    let client = rt
        .block_on(Client::connect(ClientConfig {
            bootstrap: cluster.bootstrap().split(',').map(str::to_owned).collect(),
            ..ClientConfig::default()
        }))
        .unwrap();
    for topic in [&config.input, &config.output] {
        rt.block_on(Admin::new(client.clone()).create_topic(
            NewTopic::new(topic.as_str(), config.partitions, 3).config("min.insync.replicas", "2"),
        ))
        .unwrap();
        cluster.cluster().wait_isr(topic, 3);
    }
    let pipeline = Pipeline::start(&rt, &cluster.bootstrap(), config.clone());
    let recorder = Recorder::new();
    std::thread::sleep(Duration::from_secs(3));
    let mut rng = Rng::new(seed);
    let faults = nemesis::run(
        &mut cluster,
        &mut rng,
        duration,
        (&config.output, config.partitions),
        &recorder,
    );
    for topic in [&config.input, &config.output] {
        cluster.cluster().wait_isr(topic, 3);
    }
    let report = pipeline.finish(&rt, Duration::from_secs(120));
    eprintln!("chaos: seed {seed}, {faults} faults\n{report}");
    if !report.is_ok() {
        cluster.stop_all();
        let data = dir.keep();
        panic!(
            "chaos: pipeline anomalies (seed {seed}); the brokers' data in {}\n{report}",
            data.display()
        );
    }
    assert!(
        report.inputs > 0
            && report.transactions_committed > 0
            && report.transactions_aborted > 0
            && report.transactions_abandoned > 0
            && report.outputs_written > report.outputs_committed,
        "the run exercised commits, aborts and abandoned transactions: {report}"
    );
    cluster.stop_all();
}
