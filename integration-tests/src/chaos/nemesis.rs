//! The nemesis of the chaos tests (issue 8): a seeded schedule of faults, one at a time and
//! always on a minority (one node or one link of three), each held for a while and then
//! ended (restart, resume, heal). `SLUICE_CHAOS_SEED` reproduces a schedule,
//! `SLUICE_CHAOS_SECS` lengthens a run.

use std::time::{Duration, Instant};

use super::harness::ChaosCluster;
use super::history::Recorder;

/// A small seeded generator (xorshift64*): the schedule depends on the seed alone.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `range`.
    pub fn pick(&mut self, range: std::ops::Range<u64>) -> u64 {
        range.start + self.next_u64() % (range.end - range.start)
    }
}

/// One fault at a time, always on a minority (one node or one link of three).
#[derive(Clone, Copy, Debug)]
pub enum Fault {
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
    /// A fault drawn from `rng`, on one of `nodes` nodes (and one of `partitions`
    /// partitions of the topic the run damages).
    pub fn random(rng: &mut Rng, nodes: i32, partitions: i32) -> Fault {
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

    /// Puts the fault in force (`topic`: whose segments a damaging fault cuts or flips).
    pub fn start(self, cluster: &mut ChaosCluster, topic: &str) {
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

    /// Ends the fault: restart, resume or heal.
    pub fn end(self, cluster: &mut ChaosCluster) {
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
pub fn seed() -> u64 {
    match std::env::var("SLUICE_CHAOS_SEED") {
        Ok(seed) => seed.parse().expect("SLUICE_CHAOS_SEED must be a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// How long the nemesis runs: `SLUICE_CHAOS_SECS`, else `default_secs` (CI-sized).
pub fn nemesis_time(default_secs: u64) -> Duration {
    let secs = std::env::var("SLUICE_CHAOS_SECS")
        .ok()
        .map(|s| {
            s.parse()
                .expect("SLUICE_CHAOS_SECS must be a number of seconds")
        })
        .unwrap_or(default_secs);
    Duration::from_secs(secs)
}

/// Runs the nemesis on `cluster` for `duration`: faults drawn from `rng` (a damaging one
/// cuts or flips the newest segment of one of `partitions` partitions of `topic`), each
/// held 1.5-5 s, 1-3 s apart, printed and recorded in `recorder`; every fault is ended
/// before it returns (links healed too). Returns how many faults ran.
pub fn run(
    cluster: &mut ChaosCluster,
    rng: &mut Rng,
    duration: Duration,
    (topic, partitions): (&str, i32),
    recorder: &Recorder,
) -> usize {
    let mut faults = 0;
    let until = Instant::now() + duration;
    let nodes = cluster.n_nodes() as i32;
    while Instant::now() < until {
        let fault = Fault::random(rng, nodes, partitions);
        eprintln!("chaos: {:>6.1}s {fault:?}", recorder.now_us() as f64 / 1e6);
        fault.start(cluster, topic);
        let id = recorder.fault_start(format!("{fault:?}"));
        std::thread::sleep(Duration::from_millis(rng.pick(1500..5000)));
        fault.end(cluster);
        recorder.fault_end(id);
        faults += 1;
        std::thread::sleep(Duration::from_millis(rng.pick(1000..3000)));
    }
    cluster.heal_all();
    recorder.heal_all();
    faults
}
