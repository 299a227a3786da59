//! Real Kafka clients that nobody here wrote, for `tests/kafka_clients.rs`: where they
//! are and how to run them with a deadline.
//!
//! - The Python clients (kafka-python, confluent-kafka) live in a venv: `$SLUICE_KAFKA_VENV`,
//!   else `target/kafka-venv` in the workspace. `integration-tests/kafka-clients/install.sh`
//!   (which `.ci/run` calls) creates it with the pinned versions of `requirements.txt`.
//! - kcat is `$KCAT`, else `kcat` on the `PATH` (Debian's package).
//! - The scripts in `integration-tests/kafka-clients/` print one JSON summary as the last
//!   line of stdout (`"ok": true` and what they checked, or `"ok": false` with `"error"`
//!   and `"step"`).
//!
//! A missing tool skips a test with a printed reason on a developer's machine, and fails
//! it under CI (`CI=true`), where `.ci/run` must have installed everything.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long one client script may run before it is killed (the scripts' own watchdog is
/// 90 s; this is the backstop).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(150);

/// The directory of the client scripts.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka-clients")
}

/// A script in [`scripts_dir`].
pub fn script(name: &str) -> PathBuf {
    scripts_dir().join(name)
}

/// The directory `$var` names, else `target/<name>` in the workspace (where install.sh
/// puts the clients).
fn install_dir(var: &str, name: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
                .join(name)
        },
        PathBuf::from,
    )
}

/// The venv of the Python clients: `$SLUICE_KAFKA_VENV`, else `target/kafka-venv` in the
/// workspace.
pub fn venv_dir() -> PathBuf {
    install_dir("SLUICE_KAFKA_VENV", "kafka-venv")
}

/// Where kafkajs is unpacked (`node_modules/kafkajs` under it): `$SLUICE_KAFKA_NODE`, else
/// `target/kafka-node` in the workspace. `kafkajs_client.js` looks in the same place.
pub fn node_dir() -> PathBuf {
    install_dir("SLUICE_KAFKA_NODE", "kafka-node")
}

/// `node`, once it has shown it loads kafkajs from [`node_dir`]; else why not.
pub fn kafkajs() -> Result<PathBuf, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let module = node_dir().join("node_modules").join("kafkajs");
            let node = PathBuf::from("node");
            let load = format!("require({:?})", module.display().to_string());
            match Command::new(&node).args(["-e", &load]).output() {
                Ok(output) if output.status.success() => Ok(node),
                Ok(output) => {
                    let stderr = String::from_utf8_lossy(&output.stderr);
                    // Node's first line is where it failed; the error is further down.
                    let error = stderr
                        .lines()
                        .find(|l| l.contains("Error"))
                        .unwrap_or_else(|| stderr.trim());
                    Err(format!(
                        "node cannot load kafkajs from {} ({}); run \
                         integration-tests/kafka-clients/install.sh",
                        module.display(),
                        error.trim()
                    ))
                }
                Err(e) => Err(format!(
                    "no node ({e}); run integration-tests/kafka-clients/install.sh"
                )),
            }
        })
        .clone()
}

/// The venv's python, once it has shown it imports the Python clients; else why not.
pub fn python_clients() -> Result<PathBuf, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let python = venv_dir().join("bin").join("python");
            let check = "import kafka, confluent_kafka, aiokafka";
            let output = Command::new(&python)
                .args(["-c", check])
                .output()
                .map_err(|e| {
                    format!(
                        "no Python venv at {} ({e}); run integration-tests/kafka-clients/install.sh",
                        python.display()
                    )
                })?;
            if !output.status.success() {
                return Err(format!(
                    "{} cannot import kafka, confluent_kafka and aiokafka: {}; run \
                     integration-tests/kafka-clients/install.sh",
                    python.display(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
            Ok(python)
        })
        .clone()
}

/// kcat (`$KCAT`, else `kcat` on the PATH), once `kcat -V` has run; else why not.
pub fn kcat() -> Result<PathBuf, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let kcat = PathBuf::from(std::env::var_os("KCAT").unwrap_or_else(|| "kcat".into()));
            match Command::new(&kcat).arg("-V").output() {
                Ok(output) if output.status.success() => Ok(kcat),
                Ok(output) => Err(format!("`{} -V` exited {}", kcat.display(), output.status)),
                Err(e) => Err(format!(
                    "no kcat ({}: {e}); apt-get install kcat, or run \
                     integration-tests/kafka-clients/install.sh",
                    kcat.display()
                )),
            }
        })
        .clone()
}

/// `tool`, or `None` after printing why `test` skips. Under CI (`CI=true`) a missing tool
/// is a failure instead: `.ci/run` installs them all.
pub fn require(test: &str, tool: Result<PathBuf, String>) -> Option<PathBuf> {
    match tool {
        Ok(path) => Some(path),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: {why} (under CI every Kafka client must be installed)")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

/// What a client script did.
#[derive(Debug)]
pub struct ClientRun {
    /// The command line, for messages.
    pub command: String,
    /// Its exit status (`None`: killed at the deadline).
    pub status: Option<ExitStatus>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// The JSON object on the last non-empty line of stdout, if there is one.
    pub summary: Option<serde_json::Value>,
}

impl ClientRun {
    /// The summary of a run that succeeded (exit 0, `"ok": true`); otherwise panics with
    /// the summary's error and the end of stderr, then `context` (a broker log, say).
    pub fn expect_ok(self, context: &str) -> serde_json::Value {
        let ok = self.status.is_some_and(|s| s.success())
            && self.summary.as_ref().is_some_and(|s| s["ok"] == true);
        if ok {
            return self.summary.expect("checked above");
        }
        let status = self.status.map_or_else(
            || format!("killed after {CLIENT_TIMEOUT:?}"),
            |s| s.to_string(),
        );
        panic!(
            "{} failed ({status})\nsummary: {}\n--- stderr (end) ---\n{}\n--- context (end) ---\n{}",
            self.command,
            self.summary
                .as_ref()
                .map_or_else(|| "none".to_string(), |s| s.to_string()),
            tail(&self.stderr, 6000),
            tail(context, 6000),
        );
    }
}

/// The last `max_bytes` (about) of `text`.
fn tail(text: &str, max_bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(max_bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Runs `program args`, killing it after `timeout`; returns what it did.
pub fn run_client(program: &Path, args: &[String], timeout: Duration) -> ClientRun {
    use std::os::unix::process::CommandExt;
    let command = format!("{} {}", program.display(), args.join(" "));
    // Its own process group, so the deadline also ends what it started (kcat).
    let mut child = Command::new(program)
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {command}: {e}"));
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for a client") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // SAFETY: kill(2) on the process group of a child we spawned and still own.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    let summary = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str(l).ok());
    ClientRun {
        command,
        status,
        stdout,
        stderr,
        summary,
    }
}

/// Reads a pipe to its end on a thread, so a chatty child never blocks on a full pipe.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
