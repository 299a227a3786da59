//! `failover-bench`: how long a partition is unwritable when its leader fails, as a
//! distribution per kind of failure, and whether any acknowledged record was lost.
//!
//! Starts a [`ChaosCluster`] of three controller voters (nodes 1-3) and one broker that is
//! not a voter (node 4), every inter-broker link through a proxy. Each trial creates a
//! topic of four partitions (each node leads one), replication factor 3 and
//! min.insync.replicas 2, picks the partition led by the node the case names, and runs a
//! producer on it (acks=all, idempotent, linger 0, one record every 2 ms). Then it
//! injects the case's failure into that node:
//!
//! - `kill-*`: SIGKILL; `stop-*`: SIGSTOP (a hung process, its sockets open);
//!   `cut-*`: every link between the node and the other brokers blackholed (clients still
//!   reach it);
//! - `*-controller`: the node is the active controller; `*-voter`: a voter that is not;
//!   `*-broker`: the broker-only node.
//!
//! The failover time is from the failure to the acknowledgement of the first record
//! *sent* after it: what a producing application sees. Steps are timed too: when the
//! surviving nodes' logs first name a new active controller (controller cases), when the
//! controller logs the fence, and when a surviving node's metadata first names another
//! leader. After the trial the node is brought back (restart, SIGCONT, heal), the ISR
//! waited for, and the partition read from its start: every acknowledged record must be
//! there at its acknowledged offset.
//!
//! Prints a Markdown table per case (p50, p90, p99, max; each step's median; records lost)
//! on stdout, one line per trial on stderr.
//!
//! Run: `bench/failover.sh`, or
//! `cargo run --release -p sluice-integration-tests --bin failover-bench -- --trials 20`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sluice_client::{
    Acks, Admin, Client, ClientConfig, Consumer, ConsumerConfig, NewTopic, OffsetSpec, PartitionId,
    Producer, ProducerConfig, ProducerRecord,
};
use sluice_integration_tests::chaos::harness::ChaosCluster;
use sluice_integration_tests::wait_until;

/// Voters, then brokers that are not voters.
const VOTERS: usize = 3;
const NODES: usize = 4;
/// A record every this often.
const SEND_EVERY: Duration = Duration::from_millis(2);
/// A trial whose first acknowledgement after the failure takes longer failed.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Kill,
    Stop,
    Cut,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Controller,
    Voter,
    Broker,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Case {
    fault: Fault,
    role: Role,
}

impl Case {
    const ALL: [&'static str; 9] = [
        "kill-controller",
        "kill-voter",
        "kill-broker",
        "stop-controller",
        "stop-voter",
        "stop-broker",
        "cut-controller",
        "cut-voter",
        "cut-broker",
    ];

    fn parse(name: &str) -> Option<Case> {
        let (fault, role) = name.split_once('-')?;
        let fault = match fault {
            "kill" => Fault::Kill,
            "stop" => Fault::Stop,
            "cut" => Fault::Cut,
            _ => return None,
        };
        let role = match role {
            "controller" => Role::Controller,
            "voter" => Role::Voter,
            "broker" => Role::Broker,
            _ => return None,
        };
        Some(Case { fault, role })
    }

    fn name(&self) -> String {
        let fault = match self.fault {
            Fault::Kill => "kill",
            Fault::Stop => "stop",
            Fault::Cut => "cut",
        };
        let role = match self.role {
            Role::Controller => "controller",
            Role::Voter => "voter",
            Role::Broker => "broker",
        };
        format!("{fault}-{role}")
    }
}

/// What one trial measured (ms from the failure).
#[derive(Default, Debug)]
struct Trial {
    /// First acknowledgement of a record sent after the failure; `None`: none in time.
    failover: Option<u128>,
    /// A new active controller named in a survivor's log.
    elected: Option<u128>,
    /// The controller logged the fence of the failed node.
    fenced: Option<u128>,
    /// A survivor's metadata names another leader.
    moved: Option<u128>,
    /// Acknowledged records missing from the partition afterwards.
    lost: usize,
    acknowledged: usize,
}

fn main() {
    let mut trials = 20;
    let mut keep = false;
    let mut cases: Vec<Case> = Case::ALL.iter().filter_map(|c| Case::parse(c)).collect();
    let mut args = std::env::args().skip(1);
    let usage = "usage: failover-bench [--trials N] [--cases CASE,CASE...] [--keep] (cases: kill|stop|cut - controller|voter|broker; --keep: keep the brokers' data and logs)";
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--trials" => {
                trials = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| fail(usage))
            }
            "--cases" => {
                let list = args.next().unwrap_or_else(|| fail(usage));
                cases = list
                    .split(',')
                    .map(|c| {
                        Case::parse(c.trim())
                            .unwrap_or_else(|| fail(&format!("unknown case {c:?}; {usage}")))
                    })
                    .collect();
            }
            "--keep" => keep = true,
            other => fail(&format!("unknown argument {other:?}; {usage}")),
        }
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut cluster = ChaosCluster::start_with_brokers(VOTERS, NODES - VOTERS, dir.path(), &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut results: BTreeMap<Case, Vec<Trial>> = BTreeMap::new();
    let mut topic_index = 0;
    for round in 1..=trials {
        // Cases interleaved, so a slow phase of the machine spreads over all of them.
        for case in &cases {
            topic_index += 1;
            let topic = format!("failover-{topic_index}");
            let trial = run_trial(&rt, &mut cluster, *case, &topic);
            eprintln!(
                "{} trial {round}: failover {} ms, elected {:?}, fenced {:?}, moved {:?}, acknowledged {}, lost {}",
                case.name(),
                trial.failover.map_or("-".into(), |t| t.to_string()),
                trial.elected,
                trial.fenced,
                trial.moved,
                trial.acknowledged,
                trial.lost
            );
            results.entry(*case).or_default().push(trial);
        }
    }
    println!(
        "| case | trials | p50 ms | p90 ms | p99 ms | max ms | failed | elected p50 | fenced p50 | moved p50 | acknowledged | lost |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (case, trials) in &results {
        let times: Vec<u128> = trials.iter().filter_map(|t| t.failover).collect();
        let failed = trials.len() - times.len();
        let step = |f: fn(&Trial) -> Option<u128>| {
            let v: Vec<u128> = trials.iter().filter_map(f).collect();
            quantile(&v, 0.5).map_or("-".into(), |q| q.to_string())
        };
        let q = |p| quantile(&times, p).map_or("-".into(), |q| q.to_string());
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            case.name(),
            trials.len(),
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0),
            failed,
            step(|t| t.elected),
            step(|t| t.fenced),
            step(|t| t.moved),
            trials.iter().map(|t| t.acknowledged).sum::<usize>(),
            trials.iter().map(|t| t.lost).sum::<usize>(),
        );
    }
    cluster.stop_all();
    if keep {
        eprintln!("brokers' data and logs kept in {}", dir.keep().display());
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2);
}

/// The `p` quantile (nearest rank) of `values`.
fn quantile(values: &[u128], p: f64) -> Option<u128> {
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
    v.get(rank - 1).copied()
}

/// An acknowledged or failed record: (sequence, sent, acknowledged at and offset).
struct Sent {
    seq: u64,
    sent: Instant,
    acked: Option<(Instant, i64)>,
}

fn run_trial(
    rt: &tokio::runtime::Runtime,
    cluster: &mut ChaosCluster,
    case: Case,
    topic: &str,
) -> Trial {
    let bootstrap = cluster.bootstrap();
    let client = rt
        .block_on(Client::connect(ClientConfig {
            bootstrap: bootstrap.split(',').map(str::to_string).collect(),
            ..ClientConfig::default()
        }))
        .expect("connect");
    rt.block_on(
        Admin::new(client.clone())
            .create_topic(NewTopic::new(topic, NODES as i32, 3).config("min.insync.replicas", "2")),
    )
    .expect("create topic");
    cluster.cluster().wait_isr(topic, 3);
    let controller = cluster.cluster().controller() as i32;
    let target = match case.role {
        Role::Controller => controller,
        Role::Voter => (1..=VOTERS as i32)
            .find(|id| *id != controller)
            .expect("a voter that is not the controller"),
        Role::Broker => NODES as i32,
    };
    let metadata = cluster
        .cluster()
        .topic_metadata(topic)
        .expect("topic metadata");
    let partition = metadata
        .partitions
        .iter()
        .find(|p| p.leader.0 == target)
        .map(|p| p.partition)
        .unwrap_or_else(|| panic!("node {target} leads no partition of {topic}"));
    let survivors = cluster.others(target);

    // The producer: a record every SEND_EVERY, acknowledgements recorded.
    let _guard = rt.enter();
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::ZERO,
            delivery_timeout: Duration::from_secs(60),
            ..ProducerConfig::default()
        },
    );
    let log: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let sender = {
        let log = Arc::clone(&log);
        let topic = topic.to_string();
        rt.spawn(async move {
            let mut deliveries = tokio::task::JoinSet::new();
            let mut ticker = tokio::time::interval(SEND_EVERY);
            let mut seq = 0u64;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stop_rx.wait_for(|s| *s) => break,
                }
                let record = ProducerRecord::new(topic.as_str(), Bytes::from(seq.to_string()))
                    .partition(partition);
                let index = {
                    let mut log = log.lock().unwrap();
                    log.push(Sent {
                        seq,
                        sent: Instant::now(),
                        acked: None,
                    });
                    log.len() - 1
                };
                seq += 1;
                match producer.send(record).await {
                    Ok(delivery) => {
                        let log = Arc::clone(&log);
                        deliveries.spawn(async move {
                            if let Ok(meta) = delivery.await {
                                log.lock().unwrap()[index].acked =
                                    Some((Instant::now(), meta.offset));
                            }
                        });
                    }
                    Err(e) => eprintln!("send failed: {e}"),
                }
            }
            while deliveries.join_next().await.is_some() {}
        })
    };
    let acked = |log: &Arc<Mutex<Vec<Sent>>>| {
        log.lock()
            .unwrap()
            .iter()
            .filter(|s| s.acked.is_some())
            .count()
    };
    wait_until(
        "acknowledgements before the failure",
        Duration::from_secs(30),
        || acked(&log) >= 50,
    );

    // The failure.
    let wall0 = SystemTime::now();
    let t0 = Instant::now();
    match case.fault {
        Fault::Kill => cluster.kill(target),
        Fault::Stop => cluster.pause(target),
        Fault::Cut => cluster.isolate(target),
    }
    let mut trial = Trial::default();
    let watcher = {
        let bootstrap: Vec<String> = survivors
            .iter()
            .map(|id| cluster.node(*id).bootstrap())
            .collect();
        let topic = topic.to_string();
        rt.spawn(async move {
            let client = Client::connect(ClientConfig {
                bootstrap,
                ..ClientConfig::default()
            })
            .await
            .ok()?;
            loop {
                if let Ok(m) = client.refresh_topic(&topic).await {
                    if m.partition(partition)
                        .is_ok_and(|p| p.leader.0 != target && p.leader.0 >= 0)
                    {
                        return Some(t0.elapsed().as_millis());
                    }
                }
                if t0.elapsed() > GIVE_UP_AFTER {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let first_ack_after = || {
        log.lock()
            .unwrap()
            .iter()
            .filter(|s| s.sent > t0)
            .find_map(|s| s.acked.map(|(at, _)| at.duration_since(t0).as_millis()))
    };
    let deadline = t0 + GIVE_UP_AFTER;
    while Instant::now() < deadline {
        if let Some(t) = first_ack_after() {
            trial.failover = Some(t);
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    trial.moved = rt.block_on(watcher).ok().flatten();
    std::thread::sleep(Duration::from_millis(200));
    let _ = stop_tx.send(true);

    // Back to health, then count what was kept.
    match case.fault {
        Fault::Kill => cluster.restart(target),
        Fault::Stop => cluster.resume(target),
        Fault::Cut => cluster.heal_all(),
    }
    rt.block_on(sender).expect("sender");
    let logs: Vec<String> = survivors.iter().map(|id| cluster.node(*id).log()).collect();
    trial.elected = match case.role {
        Role::Controller => first_log_line_after(&logs, wall0, |l| {
            l.contains("is the active controller (term")
        }),
        _ => None,
    };
    let fence_mark = format!("broker={target}");
    trial.fenced = first_log_line_after(&logs, wall0, |l| {
        l.contains("fencing it") && l.contains(&fence_mark)
    });
    cluster.cluster().wait_isr(topic, 3);
    let log = std::mem::take(&mut *log.lock().unwrap());
    trial.acknowledged = log.iter().filter(|s| s.acked.is_some()).count();
    let stored = rt.block_on(read_partition(client.clone(), topic, partition));
    trial.lost = log
        .iter()
        .filter_map(|s| s.acked.map(|(_, offset)| (s.seq, offset)))
        .filter(|(seq, offset)| stored.get(offset) != Some(seq))
        .count();
    if trial.lost > 0 {
        eprintln!(
            "LOST {} acknowledged records in {topic}/{}",
            trial.lost, partition.0
        );
    }
    let _ = rt.block_on(Admin::new(client).delete_topic(topic));
    trial
}

/// Every record of the partition, offset -> sequence number.
async fn read_partition(client: Client, topic: &str, partition: PartitionId) -> BTreeMap<i64, u64> {
    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    consumer
        .assign(vec![(topic.to_string(), partition, OffsetSpec::Earliest)])
        .await
        .expect("assign");
    let mut stored = BTreeMap::new();
    loop {
        let records = consumer.poll(Duration::from_secs(2)).await.expect("poll");
        if records.is_empty() {
            return stored;
        }
        for r in records {
            let seq = r
                .value
                .as_deref()
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse().ok());
            if let Some(seq) = seq {
                stored.insert(r.offset, seq);
            }
        }
    }
}

/// Milliseconds from `start` to the first line of any of `logs` (tracing's RFC 3339 UTC
/// timestamps) that matches and is later than `start`.
fn first_log_line_after(
    logs: &[String],
    start: SystemTime,
    matches: impl Fn(&str) -> bool,
) -> Option<u128> {
    let start_us = start.duration_since(UNIX_EPOCH).ok()?.as_micros() as i128;
    logs.iter()
        .flat_map(|log| log.lines())
        .filter(|line| matches(line))
        .filter_map(timestamp_us)
        .filter(|t| *t >= start_us)
        .min()
        .map(|t| ((t - start_us) / 1000) as u128)
}

/// A log line's leading `YYYY-MM-DDTHH:MM:SS.ffffffZ` as µs since the Unix epoch.
fn timestamp_us(line: &str) -> Option<i128> {
    let stamp = line.split_whitespace().next()?;
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (h, min, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let micros: i64 = format!("{frac:0<6}")[..6].parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + h * 3600 + min * 60 + s;
    Some(i128::from(seconds) * 1_000_000 + i128::from(micros))
}
