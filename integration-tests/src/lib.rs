//! A harness for tests over real processes: start the `sluice-broker` binary on a free
//! 127.0.0.1 port with its own data directory, stop it with SIGTERM or SIGKILL, restart it
//! on the same port and data, and run the `sluice` CLI against it.
//!
//! The binaries come from the workspace's target directory (`cargo test --workspace`
//! builds them); when one is missing, the harness builds it once with cargo.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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

/// The path of a workspace binary (`sluice-broker`, `sluice`), built if missing.
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

/// A free port on 127.0.0.1 (bound and released; another process could take it first, so
/// brokers are started with a retry).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A `sluice-broker` process.
pub struct BrokerProcess {
    child: Option<Child>,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Extra flags it was started with.
    pub args: Vec<String>,
    log_path: PathBuf,
    paused: bool,
}

impl BrokerProcess {
    /// Starts a broker on a free port with `data_dir` and waits until it answers.
    pub fn start(data_dir: &Path, args: &[&str]) -> BrokerProcess {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        BrokerProcess::start_at(addr, data_dir, args)
    }

    /// Starts a broker listening on `addr` with `data_dir` and waits until it answers.
    pub fn start_at(addr: SocketAddr, data_dir: &Path, args: &[&str]) -> BrokerProcess {
        let mut broker = BrokerProcess {
            child: None,
            addr,
            data_dir: data_dir.to_path_buf(),
            args: args.iter().map(|s| s.to_string()).collect(),
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
            if answers_api_versions(self.addr) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "sluice-broker did not answer within {START_TIMEOUT:?}:\n{}",
            self.log()
        );
    }

    /// The broker's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) with a pid we spawned and still own; no memory is involved.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// SIGKILL: the process dies at once, with whatever is only in its memory.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: a graceful shutdown. Returns the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("broker running");
        child.wait().expect("wait for sluice-broker")
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
}

/// A cluster of `sluice-broker` processes on 127.0.0.1: node ids 1..=n, every node a
/// controller voter, each with its own port and data directory under `dir`.
pub struct TestCluster {
    /// The brokers, node `i + 1` at index `i`.
    pub brokers: Vec<BrokerProcess>,
}

impl TestCluster {
    /// Starts `n` nodes with `extra` flags each and waits until all are registered and
    /// unfenced (active).
    pub fn start(n: usize, dir: &Path, extra: &[&str]) -> TestCluster {
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap())
            .collect();
        let voters = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}@{a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let brokers = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let id = (i + 1).to_string();
                let mut args = vec!["--node-id", id.as_str(), "--voters", voters.as_str()];
                args.extend_from_slice(extra);
                BrokerProcess::start_at(*addr, &dir.join(format!("n{}", i + 1)), &args)
            })
            .collect();
        let cluster = TestCluster { brokers };
        cluster.wait_active(n);
        cluster
    }

    /// Every node's address, for clients (dead ones included: clients skip them).
    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(|b| b.bootstrap())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The broker with node id `id`.
    pub fn node(&mut self, id: i32) -> &mut BrokerProcess {
        &mut self.brokers[(id - 1) as usize]
    }

    /// A CLI command's JSON output, asked of the nodes that serve (not killed or paused);
    /// `None` if it failed.
    fn cli_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let serving: Vec<String> = self
            .brokers
            .iter()
            .filter(|b| b.is_serving())
            .map(|b| b.bootstrap())
            .collect();
        let mut args = args.to_vec();
        args.extend(["--format", "json"]);
        let output = cli(&serving.join(","), &args, "");
        if !output.status.success() {
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }

    /// `sluice cluster describe --format json` from any serving node.
    pub fn describe(&self) -> Option<serde_json::Value> {
        self.cli_json(&["cluster", "describe"])
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

    /// The leader of `topic`'s partition, as the metadata says (-1: none).
    pub fn leader(&self, topic: &str, partition: i64) -> i64 {
        self.describe_topic(topic)
            .and_then(|d| d["partitions"][partition as usize]["leader"].as_i64())
            .unwrap_or(-1)
    }

    /// Waits until every partition of `topic` has `n` in-sync replicas.
    pub fn wait_isr(&self, topic: &str, n: usize) {
        wait_until(
            &format!("ISR of {n} on every partition of {topic}"),
            Duration::from_secs(90),
            || {
                self.describe_topic(topic).is_some_and(|d| {
                    d["partitions"].as_array().is_some_and(|ps| {
                        ps.iter()
                            .all(|p| p["isr"].as_array().is_some_and(|isr| isr.len() == n))
                    })
                })
            },
        );
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a broker at `addr` answers an ApiVersions request.
fn answers_api_versions(addr: SocketAddr) -> bool {
    use sluice_protocol::messages::ApiVersionsRequest;
    use sluice_protocol::{ApiKey, Request, RequestHeader};
    use std::io::Read;
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
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

/// Runs the `sluice` CLI against `bootstrap` with `stdin` as its input.
pub fn cli(bootstrap: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(bin("sluice"))
        .arg("--bootstrap")
        .arg(bootstrap)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sluice");
    let mut input = child.stdin.take().expect("stdin");
    let text = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let output = child.wait_with_output().expect("wait for sluice");
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
