//! A harness for tests over real processes: start the `sluice-broker` binary on a free
//! 127.0.0.1 port with its own data directory, stop it with SIGTERM or SIGKILL, restart it
//! on the same port and data, and run the `sluice` CLI against it.
//!
//! The binaries come from the workspace's target directory (`cargo test --workspace`
//! builds them); when one is missing, the harness builds it once with cargo.
//!
//! A broker's Kafka-protocol listener is off unless a test asks for it
//! ([`BrokerProcess::start_with_kafka`], [`TestCluster::start_with_kafka`]): then it gets
//! its own free port, so no two test brokers fight over Kafka's default 9092.
//!
//! Every broker's HTTP admin listener (`/metrics`, `/health`, `/ready`) is on a port the
//! kernel picks (`--http-listen IP:0`), so no two test brokers fight over its default 9644
//! either; [`BrokerProcess::http_addr`] reads the bound address from the broker's log, and
//! [`http_get`] and [`scrape`] query it.
//!
//! [`checks`] holds what cluster tests share above the processes: a producer workload that
//! records acknowledgements and errors, and the checks of what was acknowledged and of the
//! replicas' bytes. [`chaos`] is the fault-injection harness: a cluster whose every
//! inter-broker link goes through a fault-injecting proxy. [`kafka`] finds and runs the
//! real Kafka clients (kafka-python, confluent-kafka, kcat) of `tests/kafka_clients.rs`.

pub mod chaos;
pub mod checks;
pub mod kafka;
pub mod tls;

use std::collections::HashSet;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sluice_client::{BrokerId, Client, ClientConfig, PartitionId, TopicMetadata};

/// How long a broker may take to start answering.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The directory holding the workspace's binaries: a test executable lives in
/// `target/<profile>/deps/`, the binaries (and this crate's own, like `failover-bench`)
/// in `target/<profile>/`.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable dir");
    if dir.ends_with("deps") {
        dir.parent().expect("profile dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The path of a workspace binary (`sluice-broker`, `sluice`, `sluice-bench`), built if
/// missing.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let path = bin_dir().join(name);
    if !path.exists() {
        BUILT.get_or_init(|| {
            let release = bin_dir().ends_with("release");
            let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cargo.args([
                "build",
                "--bins",
                "-p",
                "sluice-broker",
                "-p",
                "sluice-client",
                "-p",
                "sluice-bench",
            ]);
            if release {
                cargo.arg("--release");
            }
            let status = cargo.status().expect("run cargo build for the binaries");
            assert!(status.success(), "cargo build of the binaries failed");
        });
    }
    assert!(
        path.exists(),
        "{} missing; run `cargo build --bins`",
        path.display()
    );
    path
}

/// How long one HTTP request to a test broker may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET path` from the HTTP listener at `addr`: the status code and the body. Plain
/// HTTP/1.1 over a std socket (the broker closes the connection after each answer).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::Read;
    let mut socket = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    socket.set_read_timeout(Some(HTTP_TIMEOUT))?;
    socket.set_write_timeout(Some(HTTP_TIMEOUT))?;
    write!(
        socket,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    socket.read_to_string(&mut answer)?;
    let bad = || std::io::Error::other(format!("not an HTTP answer: {answer:?}"));
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(bad)?;
    let body = answer.split_once("\r\n\r\n").ok_or_else(bad)?.1.to_string();
    Ok((status, body))
}

/// Scrapes `/metrics` at `addr`: every sample by its series (`name{labels}` as the broker
/// writes it, or the bare name), e.g. `sluice_produced_records_total{topic="t"}`.
///
/// # Panics
/// If the scrape fails or is not 200.
pub fn scrape(addr: SocketAddr) -> std::collections::BTreeMap<String, f64> {
    let (status, body) =
        http_get(addr, "/metrics").unwrap_or_else(|e| panic!("scrape {addr}/metrics: {e}"));
    assert_eq!(status, 200, "GET /metrics answered {status}: {body}");
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// A free port on 127.0.0.1 (see [`free_addr`]).
pub fn free_port() -> u16 {
    free_addr([127, 0, 0, 1].into()).port()
}

/// An address with a free port on `ip`: bound and released, and never handed out before
/// by this process, whatever the IP; taken below the kernel's ephemeral range when it can
/// be.
///
/// Why the memory: tests run in parallel threads, and the kernel picks a released port
/// again at random. Two tests given one port both started a broker on it: the second
/// broker could not bind and exited, but the harness's readiness check had already been
/// answered by the first test's broker on that port, and the second test waited out its
/// cluster start (60 s) for a node that was gone. A port a test released (a node killed to
/// be restarted on the same address) is likewise not given to another test.
///
/// Why below the ephemeral range: every outgoing connection takes a source port from that
/// range, so a port picked there and released could be taken by the connection of a node
/// started a moment earlier before its own node bound it (CI once saw a cluster's third
/// node fail with "Address already in use" that way). The kernel never hands out ports
/// below the range on its own; another process can still bind one, and then the broker
/// fails to bind and its log, printed when the test fails, says so.
pub fn free_addr(ip: IpAddr) -> SocketAddr {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let mut handed_out = HANDED_OUT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(ephemeral_low) = ephemeral_range_low().filter(|low| *low > FIXED_PORTS_FROM + 1000)
    {
        use std::hash::{BuildHasher, Hasher};
        let span = u64::from(ephemeral_low - FIXED_PORTS_FROM);
        for attempt in 0u64..1000 {
            let mut random = std::collections::hash_map::RandomState::new().build_hasher();
            random.write_u64(attempt);
            let port = FIXED_PORTS_FROM + (random.finish() % span) as u16;
            if handed_out.contains(&port) {
                continue;
            }
            if TcpListener::bind((ip, port)).is_ok() {
                handed_out.insert(port);
                return SocketAddr::new(ip, port);
            }
        }
    }
    // Ports refused are held until a fresh one is found, so the kernel cannot offer them
    // again meanwhile.
    let mut refused = Vec::new();
    loop {
        let listener = TcpListener::bind((ip, 0))
            .unwrap_or_else(|e| panic!("bind an ephemeral port on {ip}: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the address of an ephemeral port on {ip}: {e}"));
        if handed_out.insert(addr.port()) {
            return addr;
        }
        refused.push(listener);
    }
}

/// The lowest port [`free_addr`] picks below the ephemeral range (above the well-known and
/// most registered service ports).
const FIXED_PORTS_FROM: u16 = 20_000;

/// The first port of the kernel's ephemeral range (`ip_local_port_range`), if readable.
fn ephemeral_range_low() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether a test broker opens its Kafka-protocol listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KafkaListener {
    /// `--kafka-listen off`: the default, so test brokers never take port 9092.
    #[default]
    Off,
    /// `--kafka-listen 127.0.0.1:PORT` on a free port of the harness's choosing.
    FreePort,
}

/// Whether this tree's `sluice-broker` has the `--kafka-listen` flag (its `--help` says
/// so); asked once per test process.
///
/// Why: the harness passes `--kafka-listen off` to every broker, and a broker without the
/// flag would refuse to start. Once the Kafka listener has landed, this guard and its
/// uses can go: pass the flag unconditionally.
pub fn broker_has_kafka_listener() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        let help = Command::new(bin("sluice-broker"))
            .arg("--help")
            .output()
            .expect("run sluice-broker --help");
        String::from_utf8_lossy(&help.stdout).contains("--kafka-listen")
    })
}

/// A `sluice-broker` process.
pub struct BrokerProcess {
    child: Option<Child>,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The address of its Kafka-protocol listener, when the test asked for one.
    pub kafka_addr: Option<SocketAddr>,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Extra flags it was started with.
    pub args: Vec<String>,
    /// How the harness reaches its native listener when it serves TLS.
    pub client_tls: Option<tls::ClientTls>,
    /// How the harness reaches its Kafka listener when it serves TLS.
    pub kafka_client_tls: Option<tls::ClientTls>,
    log_path: PathBuf,
    paused: bool,
}

impl BrokerProcess {
    /// Starts a broker on a free port with `data_dir` and waits until it answers. Its
    /// Kafka listener is off.
    pub fn start(data_dir: &Path, args: &[&str]) -> BrokerProcess {
        BrokerProcess::start_at(free_addr([127, 0, 0, 1].into()), data_dir, args)
    }

    /// Starts a broker on a free port with its Kafka listener on another free port
    /// ([`BrokerProcess::kafka_bootstrap`]), and waits until both answer.
    pub fn start_with_kafka(data_dir: &Path, args: &[&str]) -> BrokerProcess {
        BrokerProcess::start_at_with(
            free_addr([127, 0, 0, 1].into()),
            KafkaListener::FreePort,
            data_dir,
            args,
        )
    }

    /// Starts a broker listening on `addr` with `data_dir` and waits until it answers. Its
    /// Kafka listener is off.
    pub fn start_at(addr: SocketAddr, data_dir: &Path, args: &[&str]) -> BrokerProcess {
        BrokerProcess::start_at_with(addr, KafkaListener::Off, data_dir, args)
    }

    /// Starts a broker listening on `addr`, its Kafka listener as `kafka` says, and waits
    /// until it answers (on both listeners).
    ///
    /// # Panics
    /// If `kafka` asks for a listener this tree's broker does not have.
    pub fn start_at_with(
        addr: SocketAddr,
        kafka: KafkaListener,
        data_dir: &Path,
        args: &[&str],
    ) -> BrokerProcess {
        BrokerProcess::start_tls(addr, kafka, data_dir, args, None)
    }

    /// As [`BrokerProcess::start_at_with`]; the harness reaches its listeners with
    /// `client_tls` when given (the flags in `args` must make them serve TLS).
    pub fn start_tls(
        addr: SocketAddr,
        kafka: KafkaListener,
        data_dir: &Path,
        args: &[&str],
        client_tls: Option<tls::ClientTls>,
    ) -> BrokerProcess {
        let kafka_tls = client_tls.clone();
        BrokerProcess::start_tls_per_listener(addr, kafka, data_dir, args, client_tls, kafka_tls)
    }

    /// As [`BrokerProcess::start_tls`], with the native and the Kafka listener reached each
    /// its own way (`--native-tls` and `--kafka-tls` in `args` may differ).
    pub fn start_tls_per_listener(
        addr: SocketAddr,
        kafka: KafkaListener,
        data_dir: &Path,
        args: &[&str],
        client_tls: Option<tls::ClientTls>,
        kafka_client_tls: Option<tls::ClientTls>,
    ) -> BrokerProcess {
        let kafka_addr = match kafka {
            KafkaListener::Off => None,
            KafkaListener::FreePort => {
                assert!(
                    broker_has_kafka_listener(),
                    "this test needs the Kafka-protocol listener, but `sluice-broker --help` \
                     does not mention --kafka-listen: it has not landed in this tree"
                );
                Some(free_addr(addr.ip()))
            }
        };
        let mut broker = BrokerProcess {
            child: None,
            addr,
            kafka_addr,
            data_dir: data_dir.to_path_buf(),
            args: args.iter().map(|s| s.to_string()).collect(),
            client_tls,
            kafka_client_tls,
            log_path: data_dir.with_extension("broker.log"),
            paused: false,
        };
        broker.spawn();
        broker
    }

    /// The bootstrap string for clients.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// The bootstrap string for Kafka clients: its Kafka listener's address.
    ///
    /// # Panics
    /// If it was started without a Kafka listener.
    pub fn kafka_bootstrap(&self) -> String {
        self.kafka_addr
            .expect("started without a Kafka listener: use start_with_kafka")
            .to_string()
    }

    /// The `--kafka-listen` flag for this broker: its address, or `off`; none with a
    /// broker that does not know the flag (see [`broker_has_kafka_listener`]).
    fn kafka_listen_args(&self) -> Vec<String> {
        match self.kafka_addr {
            Some(addr) => vec!["--kafka-listen".into(), addr.to_string()],
            None if broker_has_kafka_listener() => vec!["--kafka-listen".into(), "off".into()],
            None => Vec::new(),
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open broker log");
        let child = Command::new(bin("sluice-broker"))
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(self.kafka_listen_args())
            .arg("--http-listen")
            .arg(SocketAddr::new(self.addr.ip(), 0).to_string())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sluice-broker");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls until the broker answers a request, or panics with its log.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "sluice-broker exited with {status} at start:\n{}",
                    self.log()
                );
            }
            let kafka_tls = self.kafka_client_tls.as_ref();
            if answers_api_versions(self.addr, self.client_tls.as_ref())
                && self
                    .kafka_addr
                    .is_none_or(|addr| answers_kafka_api_versions(addr, kafka_tls))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "sluice-broker did not answer within {START_TIMEOUT:?}:\n{}",
            self.log()
        );
    }

    /// The address of its HTTP admin listener in its current run, from its log (the broker
    /// binds port 0 and logs what it got before it answers any request).
    ///
    /// # Panics
    /// If the log names none (a test that passed `--http-listen off`).
    pub fn http_addr(&self) -> SocketAddr {
        const MARK: &str = "HTTP admin (/metrics, /health, /ready): listening on ";
        let log = self.log();
        log.lines()
            .rev()
            .find_map(|line| {
                let at = line.find(MARK)?;
                line[at + MARK.len()..].trim().parse().ok()
            })
            .unwrap_or_else(|| panic!("the broker's log names no HTTP listener:\n{log}"))
    }

    /// The broker's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends `signal` to the process, if it runs.
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) with a pid we spawned and still own; no memory is involved.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// SIGKILL: the process dies at once, with whatever is only in its memory (paused or
    /// not).
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// SIGTERM and wait: a graceful shutdown (of a paused process, once resumed). Returns
    /// the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        if self.paused {
            self.resume();
        }
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }

    /// Waits until the process exits (after a signal sent with [`BrokerProcess::signal`]).
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("broker running");
        let status = child.wait().expect("wait for sluice-broker");
        self.paused = false;
        status
    }

    /// Starts the broker again on the same port and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the broker before restarting it");
        self.spawn();
    }

    /// Whether the process is running (not killed or terminated by the harness).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process is running and not paused: it answers requests.
    pub fn is_serving(&self) -> bool {
        self.is_running() && !self.paused
    }

    /// SIGSTOP: the process freezes (a long GC pause, a hung disk), its sockets stay open.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    /// SIGCONT: a paused process goes on.
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    /// The directory of its replica of `topic`'s partition (which may not exist).
    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.data_dir
            .join("topics")
            .join(format!("{topic}-{partition}"))
    }

    /// The newest `.log` segment of its replica of `topic`'s partition, if it has one.
    pub fn newest_segment(&self, topic: &str, partition: i32) -> Option<PathBuf> {
        let entries = std::fs::read_dir(self.partition_dir(topic, partition)).ok()?;
        // Segment names are zero-padded base offsets, so the newest sorts last.
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .max()
    }

    /// Cuts the last `bytes` bytes (at most all) of the newest segment of `topic`'s
    /// partition, as a crash in the middle of a write would leave it. The broker must be
    /// stopped. `None` if it has no replica there or the segment is empty.
    pub fn truncate_newest_segment(
        &self,
        topic: &str,
        partition: i32,
        bytes: u64,
    ) -> Option<SegmentDamage> {
        self.damage_newest_segment(topic, partition, bytes, |file, len, cut| {
            file.set_len(len - cut)
        })
    }

    /// Flips (XOR 0xFF) the last `bytes` bytes (at most all) of the newest segment of
    /// `topic`'s partition, as a bad disk would. The broker must be stopped. `None` if it
    /// has no replica there or the segment is empty.
    ///
    /// Recovery finds the damage by the batches' CRCs when it rescans the segment, which
    /// it does after an unclean stop (SIGKILL); after a graceful stop it trusts the
    /// segment's batches and checks only their headers.
    pub fn corrupt_newest_segment(
        &self,
        topic: &str,
        partition: i32,
        bytes: u64,
    ) -> Option<SegmentDamage> {
        use std::io::{Read, Seek, SeekFrom};
        self.damage_newest_segment(topic, partition, bytes, |file, len, n| {
            let mut tail = vec![0u8; n as usize];
            file.seek(SeekFrom::Start(len - n))?;
            file.read_exact(&mut tail)?;
            tail.iter_mut().for_each(|b| *b ^= 0xff);
            file.seek(SeekFrom::Start(len - n))?;
            file.write_all(&tail)?;
            file.sync_all()
        })
    }

    /// Applies `damage(file, length, n)` to the last `n = min(bytes, length)` bytes of the
    /// newest segment's batches (`length` is where they end: a runway of zeros the broker
    /// wrote ahead may follow, see [`segment_batches_end`]).
    fn damage_newest_segment(
        &self,
        topic: &str,
        partition: i32,
        bytes: u64,
        damage: impl FnOnce(&mut std::fs::File, u64, u64) -> std::io::Result<()>,
    ) -> Option<SegmentDamage> {
        assert!(
            !self.is_running(),
            "stop the broker before damaging its segments"
        );
        let path = self.newest_segment(topic, partition)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let length = segment_batches_end(&path);
        let n = bytes.min(length);
        if n == 0 {
            return None;
        }
        damage(&mut file, length, n).unwrap_or_else(|e| panic!("damage {}: {e}", path.display()));
        Some(SegmentDamage {
            file: path,
            length_before: length,
            position: length - n,
        })
    }
}

/// Where the record batches of the segment file at `path` end: the file's length, unless
/// the broker wrote a runway of zeros ahead of its active segment's last batch (the
/// batches' length fields are followed until one cannot be a batch or runs past the file).
pub fn segment_batches_end(path: &Path) -> u64 {
    segment_batches(path).len() as u64
}

/// The record batches of the segment file at `path`, without the runway of zeros a
/// running broker may have written after the last (see [`segment_batches_end`]).
pub fn segment_batches(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    bytes.truncate(batches_end(&bytes));
    bytes
}

/// [`segment_batches_end`] of a segment file's bytes.
pub fn batches_end(bytes: &[u8]) -> usize {
    let mut at = 0usize;
    while let Ok(Some(len)) = sluice_protocol::batch::peek_total_len(&bytes[at..]) {
        let end = at + len as usize;
        if end > bytes.len() {
            break;
        }
        at = end;
    }
    at
}

/// Where a segment file was damaged ([`BrokerProcess::truncate_newest_segment`],
/// [`BrokerProcess::corrupt_newest_segment`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentDamage {
    /// The `.log` file.
    pub file: PathBuf,
    /// Where its batches ended before the damage (a runway of zeros may follow them).
    pub length_before: u64,
    /// Where the damage starts: everything from here to the old end was cut or flipped.
    pub position: u64,
}

/// A cluster of `sluice-broker` processes on 127.0.0.1: node ids 1..=n, each with its own
/// port and data directory under `dir`; the nodes it starts with are the controller
/// voters, nodes added later ([`TestCluster::add_node`]) are not.
pub struct TestCluster {
    /// The brokers, node `i + 1` at index `i`.
    pub brokers: Vec<BrokerProcess>,
    /// The `--voters` list every node is started with.
    voters: String,
    /// Whether every node, added ones included, opens a Kafka listener.
    kafka: KafkaListener,
    /// Where the nodes' data directories are.
    dir: PathBuf,
    /// How the harness and its CLI calls reach TLS listeners, when the nodes serve TLS.
    pub client_tls: Option<tls::ClientTls>,
}

impl TestCluster {
    /// Starts `n` nodes with `extra` flags each and waits until all are registered and
    /// unfenced (active).
    pub fn start(n: usize, dir: &Path, extra: &[&str]) -> TestCluster {
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap())
            .collect();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        TestCluster::start_at(&addrs, dir, |_| extra.clone())
    }

    /// As [`TestCluster::start`], every node (and every node added later) with a Kafka
    /// listener on a free port of its own ([`TestCluster::kafka_bootstrap`]).
    pub fn start_with_kafka(n: usize, dir: &Path, extra: &[&str]) -> TestCluster {
        let addrs: Vec<SocketAddr> = (0..n).map(|_| free_addr([127, 0, 0, 1].into())).collect();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        TestCluster::start_at_with(&addrs, dir, KafkaListener::FreePort, |_| extra.clone())
    }

    /// Starts node `i + 1` listening on `addrs[i]` with the flags `flags(i + 1)`, and
    /// waits until all are registered and unfenced (active). Their Kafka listeners are off.
    pub fn start_at(
        addrs: &[SocketAddr],
        dir: &Path,
        flags: impl Fn(i32) -> Vec<String>,
    ) -> TestCluster {
        TestCluster::start_at_with(addrs, dir, KafkaListener::Off, flags)
    }

    /// As [`TestCluster::start_at`], with every node's Kafka listener as `kafka` says.
    pub fn start_at_with(
        addrs: &[SocketAddr],
        dir: &Path,
        kafka: KafkaListener,
        flags: impl Fn(i32) -> Vec<String>,
    ) -> TestCluster {
        TestCluster::start_at_with_voters(addrs, addrs.len(), dir, kafka, flags)
    }

    /// As [`TestCluster::start_at_with`], with only the first `n_voters` nodes controller
    /// voters; the others join as brokers.
    pub fn start_at_with_voters(
        addrs: &[SocketAddr],
        n_voters: usize,
        dir: &Path,
        kafka: KafkaListener,
        flags: impl Fn(i32) -> Vec<String>,
    ) -> TestCluster {
        TestCluster::start_tls(addrs, n_voters, dir, kafka, None, flags)
    }

    /// As [`TestCluster::start_at_with_voters`]; the harness reaches the nodes with
    /// `client_tls` when given (`flags` must make their listeners serve TLS).
    pub fn start_tls(
        addrs: &[SocketAddr],
        n_voters: usize,
        dir: &Path,
        kafka: KafkaListener,
        client_tls: Option<tls::ClientTls>,
        flags: impl Fn(i32) -> Vec<String>,
    ) -> TestCluster {
        let voters = addrs[..n_voters]
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}@{a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = TestCluster {
            brokers: Vec::new(),
            voters,
            kafka,
            dir: dir.to_path_buf(),
            client_tls,
        };
        for (i, addr) in addrs.iter().enumerate() {
            let flags = flags(i as i32 + 1);
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            cluster.start_node(*addr, &flags);
        }
        cluster.wait_active(addrs.len());
        cluster
    }

    /// Starts node `len + 1` at `addr` with the cluster's `--voters` and `extra` flags.
    fn start_node(&mut self, addr: SocketAddr, extra: &[&str]) -> i32 {
        let id = self.brokers.len() as i32 + 1;
        let id_arg = id.to_string();
        let mut args = vec![
            "--node-id",
            id_arg.as_str(),
            "--voters",
            self.voters.as_str(),
        ];
        args.extend_from_slice(extra);
        let data_dir = self.dir.join(format!("n{id}"));
        self.brokers.push(BrokerProcess::start_tls(
            addr,
            self.kafka,
            &data_dir,
            &args,
            self.client_tls.clone(),
        ));
        id
    }

    /// Starts one more node with the same `--voters` list, which does not name it: it
    /// joins as a broker and a learner of the metadata log, not a voter. Returns its id.
    pub fn add_node(&mut self, extra: &[&str]) -> i32 {
        let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        self.start_node(addr, extra)
    }

    /// Stops every node, checking that each shut down cleanly: nodes 3.. at once with
    /// SIGTERM, then node 2, then node 1 with SIGKILL. Paused nodes are resumed first.
    ///
    /// Why this order: a graceful stop waits for the controller to confirm its controlled
    /// shutdown. With three voters, while 1 and 2 run the others' confirmations have a
    /// quorum, and while node 1 runs, node 2's has; the last node standing has none, so it
    /// would wait out `shutdown_timeout_ms` (10 s) and is killed instead. Nothing is
    /// written by then, and SIGKILL loses no page cache, so node 1's `.log` files hold the
    /// same bytes either way.
    pub fn stop_all(&mut self) {
        for broker in &mut self.brokers {
            if broker.is_running() && !broker.is_serving() {
                broker.resume();
            }
        }
        let n = self.brokers.len();
        for wave in [2.min(n)..n, 1.min(n)..2.min(n)] {
            for broker in &mut self.brokers[wave.clone()] {
                broker.signal(libc::SIGTERM);
            }
            for broker in &mut self.brokers[wave] {
                if broker.is_running() {
                    assert!(
                        broker.wait_exit().success(),
                        "graceful stop:\n{}",
                        broker.log()
                    );
                }
            }
        }
        if let Some(first) = self.brokers.first_mut() {
            first.kill();
        }
    }

    /// Every node's address, for clients (dead ones included: clients skip them).
    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(|b| b.bootstrap())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client addresses of the nodes `ids`, comma-separated.
    pub fn bootstrap_of(&self, ids: &[i32]) -> String {
        self.addresses(ids).join(",")
    }

    /// Every node's Kafka listener address, for Kafka clients.
    ///
    /// # Panics
    /// If the cluster was started without Kafka listeners.
    pub fn kafka_bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(|b| b.kafka_bootstrap())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The broker with node id `id`.
    pub fn node(&mut self, id: i32) -> &mut BrokerProcess {
        &mut self.brokers[(id - 1) as usize]
    }

    /// The ids of the nodes that serve (not killed or paused).
    pub fn serving(&self) -> Vec<i32> {
        (1..=self.brokers.len() as i32)
            .filter(|&id| self.brokers[(id - 1) as usize].is_serving())
            .collect()
    }

    /// The client addresses of the nodes `ids`.
    fn addresses(&self, ids: &[i32]) -> Vec<String> {
        ids.iter()
            .map(|&id| self.brokers[(id - 1) as usize].bootstrap())
            .collect()
    }

    /// A CLI command's JSON output, asked of the nodes that serve (not killed or paused);
    /// `None` if it failed.
    fn cli_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        self.cli_json_from(&self.serving(), args)
    }

    /// A CLI command's JSON output, asked of the nodes `ids` only; `None` if it failed.
    fn cli_json_from(&self, ids: &[i32], args: &[&str]) -> Option<serde_json::Value> {
        let mut args = args.to_vec();
        args.extend(["--format", "json"]);
        let tls_args = self.tls_args();
        args.extend(tls_args.iter().map(String::as_str));
        let output = cli(&self.addresses(ids).join(","), &args, "");
        if !output.status.success() {
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }

    /// The CLI's TLS flags for this cluster (none when it is plain).
    pub fn tls_args(&self) -> Vec<String> {
        self.client_tls
            .as_ref()
            .map(tls::ClientTls::cli_args)
            .unwrap_or_default()
    }

    /// `sluice cluster describe --format json` from any serving node.
    pub fn describe(&self) -> Option<serde_json::Value> {
        self.cli_json(&["cluster", "describe"])
    }

    /// `sluice cluster describe --format json` from one of the nodes `ids` only: the
    /// cluster as they see it (a partitioned node's view may be stale).
    pub fn describe_from(&self, ids: &[i32]) -> Option<serde_json::Value> {
        self.cli_json_from(ids, &["cluster", "describe"])
    }

    /// The controller (the metadata log's Raft leader) as a serving node sees it; -1 if
    /// none is known.
    pub fn controller(&self) -> i64 {
        self.controller_from(&self.serving())
    }

    /// The controller as one of the nodes `ids` sees it; -1 if none is known.
    pub fn controller_from(&self, ids: &[i32]) -> i64 {
        self.describe_from(ids)
            .and_then(|d| d["controller"]["leader"].as_i64())
            .unwrap_or(-1)
    }

    /// Broker `id`'s state in `cluster describe` ("active", "fenced"), if it is listed.
    pub fn broker_state(&self, id: i32) -> Option<String> {
        self.broker_state_from(&self.serving(), id)
    }

    /// Broker `id`'s state as one of the nodes `ids` sees it.
    pub fn broker_state_from(&self, ids: &[i32], id: i32) -> Option<String> {
        let described = self.describe_from(ids)?;
        described["brokers"]
            .as_array()?
            .iter()
            .find(|b| b["id"].as_i64() == Some(i64::from(id)))
            .and_then(|b| b["state"].as_str().map(str::to_string))
    }

    /// Waits until `n` brokers are active (registered and unfenced).
    pub fn wait_active(&self, n: usize) {
        wait_until(&format!("{n} active brokers"), START_TIMEOUT, || {
            self.describe().is_some_and(|d| {
                d["brokers"]
                    .as_array()
                    .is_some_and(|b| b.iter().filter(|b| b["state"] == "active").count() == n)
            })
        });
    }

    /// `sluice topic describe TOPIC --format json` from any serving node.
    pub fn describe_topic(&self, topic: &str) -> Option<serde_json::Value> {
        self.cli_json(&["topic", "describe", topic])
    }

    /// `topic`'s metadata (leaders, leader epochs, replicas, ISRs) as a serving node has
    /// it, through the client library; `None` if no serving node answered. Unlike
    /// `topic describe` it asks no partition leader for offsets, so a paused leader does
    /// not hold it up for a request timeout.
    pub fn topic_metadata(&self, topic: &str) -> Option<Arc<TopicMetadata>> {
        self.topic_metadata_from(&self.serving(), topic)
    }

    /// `topic`'s metadata as one of the nodes `ids` has it (see
    /// [`TestCluster::topic_metadata`]); `None` if none of them answered.
    pub fn topic_metadata_from(&self, ids: &[i32], topic: &str) -> Option<Arc<TopicMetadata>> {
        let bootstrap = self.addresses(ids);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let client = Client::connect(ClientConfig {
                bootstrap,
                request_timeout: Duration::from_secs(10),
                connect_timeout: Duration::from_secs(2),
                tls: self.client_tls.as_ref().map(tls::ClientTls::library),
                ..ClientConfig::default()
            })
            .await
            .ok()?;
            client.refresh_topic(topic).await.ok()
        })
    }

    /// The leader of `topic`'s partition, as the metadata says (-1: none).
    pub fn leader(&self, topic: &str, partition: i32) -> i32 {
        self.partition_state(topic, partition)
            .map_or(-1, |(leader, _, _)| leader)
    }

    /// The leader, leader epoch and ISR of `topic`'s partition, as the metadata says.
    pub fn partition_state(&self, topic: &str, partition: i32) -> Option<(i32, i32, Vec<i32>)> {
        let metadata = self.topic_metadata(topic)?;
        let p = metadata.partition(PartitionId(partition)).ok()?;
        Some((
            p.leader.0,
            p.leader_epoch.0,
            p.isr.iter().map(|b| b.0).collect(),
        ))
    }

    /// Waits until every partition of `topic` has `n` in-sync replicas.
    pub fn wait_isr(&self, topic: &str, n: usize) {
        self.wait_every_isr(&format!("ISR of {n}"), topic, |isr| isr.len() == n);
    }

    /// Waits until node `id` is in the ISR of every partition of `topic`.
    pub fn wait_in_every_isr(&self, topic: &str, id: i32) {
        self.wait_every_isr(&format!("node {id} in the ISR"), topic, |isr| {
            isr.contains(&BrokerId(id))
        });
    }

    /// Waits until node `id` is in the ISR of no partition of `topic`.
    pub fn wait_out_of_every_isr(&self, topic: &str, id: i32) {
        self.wait_every_isr(&format!("node {id} out of the ISR"), topic, |isr| {
            !isr.contains(&BrokerId(id))
        });
    }

    /// Waits until the ISR of every partition of `topic` passes `check`.
    fn wait_every_isr(&self, what: &str, topic: &str, check: impl Fn(&[BrokerId]) -> bool) {
        wait_until(
            &format!("{what} on every partition of {topic}"),
            Duration::from_secs(90),
            || {
                self.topic_metadata(topic)
                    .is_some_and(|t| t.partitions.iter().all(|p| check(&p.isr)))
            },
        );
    }
}

impl Drop for BrokerProcess {
    /// Kills the broker; when a test is failing, prints the end of its log first, since
    /// the log is in the test's temporary directory and goes with it.
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!(
                "--- the last {} lines of {} ---\n{}",
                tail.len(),
                self.log_path.display(),
                tail.join("\n")
            );
        }
    }
}

/// How much of a broker's log a failing test prints.
const LOG_TAIL_LINES: usize = 80;

/// Whether a broker at `addr` answers an ApiVersions request.
fn answers_api_versions(addr: SocketAddr, tls: Option<&tls::ClientTls>) -> bool {
    use sluice_protocol::messages::ApiVersionsRequest;
    use sluice_protocol::{ApiKey, Request, RequestHeader};
    use std::io::Read;
    let Some(mut stream) = tls::connect(addr, tls) else {
        return false;
    };
    let request = Request::ApiVersions(ApiVersionsRequest {
        client_software_name: "harness".into(),
        client_software_version: "0".into(),
    });
    let mut payload = bytes::BytesMut::new();
    let header = RequestHeader::new(ApiKey::ApiVersions, 1, "harness");
    if request.encode(&header, &mut payload).is_err() {
        return false;
    }
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    let mut len = [0u8; 4];
    stream.write_all(&frame).is_ok() && stream.read_exact(&mut len).is_ok()
}

/// Whether a Kafka-protocol listener at `addr` answers an ApiVersions v0 request (the
/// version every Kafka broker answers, built by hand so the check depends on no client)
/// with the same correlation id and no error.
fn answers_kafka_api_versions(addr: SocketAddr, tls: Option<&tls::ClientTls>) -> bool {
    use std::io::Read;
    const API_VERSIONS: i16 = 18;
    const CORRELATION_ID: i32 = 0x5a11ce;
    let Some(mut stream) = tls::connect(addr, tls) else {
        return false;
    };
    let client_id = b"harness";
    let mut request = Vec::new();
    request.extend_from_slice(&API_VERSIONS.to_be_bytes());
    request.extend_from_slice(&0i16.to_be_bytes()); // api_version
    request.extend_from_slice(&CORRELATION_ID.to_be_bytes());
    request.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    request.extend_from_slice(client_id);
    let mut frame = (request.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&request);
    // The response starts: length (4), correlation id (4), error code (2).
    let mut head = [0u8; 10];
    stream.write_all(&frame).is_ok()
        && stream.read_exact(&mut head).is_ok()
        && head[4..8] == CORRELATION_ID.to_be_bytes()
        && head[8..10] == [0, 0]
}

/// Runs the `sluice` CLI against `bootstrap` with `stdin` as its input.
pub fn cli(bootstrap: &str, args: &[&str], stdin: &str) -> Output {
    cli_with_env(bootstrap, args, stdin, &[])
}

/// [`cli`] with environment variables set (`SLUICE_SASL_PASSWORD`...).
pub fn cli_with_env(bootstrap: &str, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    run_with_stdin(
        Command::new(bin("sluice"))
            .arg("--bootstrap")
            .arg(bootstrap)
            .args(args)
            .envs(env.iter().copied()),
        stdin,
    )
}

/// Runs `command` with `stdin` as its input (written from another thread, so a child that
/// answers before reading it all cannot deadlock) and returns its status and output.
pub fn run_with_stdin(command: &mut Command, stdin: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    let text = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let output = child.wait_with_output().expect("wait for the child");
    let _ = writer.join();
    output
}

/// Runs the CLI and returns its stdout, panicking with stderr if it failed.
pub fn cli_ok(bootstrap: &str, args: &[&str], stdin: &str) -> String {
    let output = cli(bootstrap, args, stdin);
    assert!(
        output.status.success(),
        "sluice {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// Polls `condition` every 20 ms until it holds, or panics after `timeout` with `what`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without the memory, 500 draws from the kernel's ~14,000 odd ephemeral ports would
    /// repeat one about nine times over.
    #[test]
    fn free_addr_never_hands_out_a_port_twice() {
        let mut seen = HashSet::new();
        for _ in 0..500 {
            let port = free_port();
            assert!(seen.insert(port), "port {port} handed out twice");
        }
    }
}
