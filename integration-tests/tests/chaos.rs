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

/// A small seeded generator (xorshift64*): the schedule depends on the seed alone.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `range`.
    fn pick(&mut self, range: std::ops::Range<u64>) -> u64 {
        range.start + self.next() % (range.end - range.start)
    }
}

/// One fault at a time, always on a minority (one node or one link of three).
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGKILL, then a restart when the fault ends.
    Kill(i32),
    /// SIGKILL, cut the tail of the newest segment of one partition, restart.
    KillAndTruncate(i32, i32),
    /// SIGKILL, flip bytes at the end of the newest segment of one partition, restart.
    KillAndCorrupt(i32, i32),
    /// SIGSTOP, then SIGCONT.
    Pause(i32),
    /// Cut every link of a node (clients still reach it).
    Isolate(i32),
    /// Cut the links between two nodes.
    Cut(i32, i32),
}

impl Fault {
    fn random(rng: &mut Rng, nodes: i32, partitions: i32) -> Fault {
        let node = rng.pick(1..nodes as u64 + 1) as i32;
        let partition = rng.pick(0..partitions as u64) as i32;
        match rng.pick(0..6) {
            0 => Fault::Kill(node),
            1 => Fault::KillAndTruncate(node, partition),
            2 => Fault::KillAndCorrupt(node, partition),
            3 => Fault::Pause(node),
            4 => Fault::Isolate(node),
            _ => Fault::Cut(node, node % nodes + 1),
        }
    }

    fn start(self, cluster: &mut ChaosCluster, topic: &str) {
        match self {
            Fault::Kill(n) => cluster.kill(n),
            Fault::KillAndTruncate(n, p) => {
                cluster.kill(n);
                cluster.truncate_newest_segment(n, topic, p, 100);
            }
            Fault::KillAndCorrupt(n, p) => {
                cluster.kill(n);
                cluster.corrupt_newest_segment(n, topic, p, 16);
            }
            Fault::Pause(n) => cluster.pause(n),
            Fault::Isolate(n) => cluster.isolate(n),
            Fault::Cut(a, b) => cluster.cut(a, b),
        }
    }

    fn end(self, cluster: &mut ChaosCluster) {
        match self {
            Fault::Kill(n) | Fault::KillAndTruncate(n, _) | Fault::KillAndCorrupt(n, _) => {
                cluster.restart(n)
            }
            Fault::Pause(n) => cluster.resume(n),
            Fault::Isolate(_) | Fault::Cut(..) => cluster.heal_all(),
        }
    }
}

/// The seed of this run: `SLUICE_CHAOS_SEED`, else the clock.
fn seed() -> u64 {
    match std::env::var("SLUICE_CHAOS_SEED") {
        Ok(seed) => seed.parse().expect("SLUICE_CHAOS_SEED must be a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// How long the nemesis runs: `SLUICE_CHAOS_SECS`, else a CI-sized 40 s.
fn nemesis_time() -> Duration {
    let secs = std::env::var("SLUICE_CHAOS_SECS")
        .ok()
        .map(|s| {
            s.parse()
                .expect("SLUICE_CHAOS_SECS must be a number of seconds")
        })
        .unwrap_or(40);
    Duration::from_secs(secs)
}

#[test]
fn nothing_acknowledged_is_lost_duplicated_or_reordered_under_a_random_nemesis() {
    let seed = seed();
    let duration = nemesis_time();
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
    let mut faults = 0;
    let until = std::time::Instant::now() + duration;
    std::thread::sleep(Duration::from_secs(2));
    while std::time::Instant::now() < until {
        let fault = Fault::random(&mut rng, 3, partitions);
        eprintln!("chaos: {:>6.1}s {fault:?}", recorder.now_us() as f64 / 1e6);
        fault.start(&mut cluster, topic);
        let id = recorder.fault_start(format!("{fault:?}"));
        std::thread::sleep(Duration::from_millis(rng.pick(1500..5000)));
        fault.end(&mut cluster);
        recorder.fault_end(id);
        faults += 1;
        std::thread::sleep(Duration::from_millis(rng.pick(1000..3000)));
    }
    cluster.heal_all();
    recorder.heal_all();
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
