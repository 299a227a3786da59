//! The node's identity in its data directory (`node.json`, like Kafka's `meta.properties`):
//! which node id owns the directory and which cluster it joined. The cluster metadata
//! itself lives in the controller's Raft log (`cluster`), not here.
//!
//! Why keep an identity file: a data directory started under another `--node-id` would
//! otherwise present another node's replicas as its own, and a node moved to another
//! cluster would bring foreign data into it. Both are refused at start.
//!
//! [`DataDirLock`] is the other guard of a data directory: one process at a time, for its
//! whole life (Kafka's `.lock`). Two brokers writing one directory interleave their
//! segments and the controller's log, and acknowledged records are lost.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_protocol::BrokerId;

use crate::error::BrokerError;

/// Name of the identity file in the data directory.
pub const NODE_FILE: &str = "node.json";
/// The metadata file of sluice before clustering; refused, never deleted.
const LEGACY_METADATA_FILE: &str = "metadata.json";
/// Identifies the file's format; checked on load.
const FORMAT: &str = "sluice-node";
/// The format version this build reads and writes.
const VERSION: u32 = 1;

/// Who owns a data directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// `sluice-node`, so a stray JSON file is not mistaken for it.
    pub format: String,
    /// The format version.
    pub version: u32,
    /// The node that owns this data directory; a different `--node-id` is refused.
    pub node_id: BrokerId,
    /// The cluster this node joined; empty until its first registration.
    pub cluster_id: String,
}

/// The identity file of a data directory.
#[derive(Clone, Debug)]
pub struct NodeFile {
    path: PathBuf,
}

impl NodeFile {
    /// The identity file of `data_dir`.
    pub fn new(data_dir: &Path) -> NodeFile {
        NodeFile {
            path: data_dir.join(NODE_FILE),
        }
    }

    /// Loads the identity, creating it for `node_id` on a fresh directory; refuses a
    /// directory that belongs to another node or was written by sluice before clustering.
    pub fn load_or_create(&self, node_id: BrokerId) -> Result<NodeIdentity, BrokerError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let legacy = dir.join(LEGACY_METADATA_FILE);
        if legacy.exists() {
            return Err(BrokerError::DataDir(format!(
                "{} was written by a sluice version without clustering, whose metadata this \
                 version does not read; start with an empty --data-dir (move this one away)",
                dir.display()
            )));
        }
        let identity = match fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str::<NodeIdentity>(&text)
                .ok()
                .filter(|i| i.format == FORMAT && i.version == VERSION)
                .ok_or_else(|| {
                    BrokerError::DataDir(format!(
                        "{} is not a sluice node identity file (format {FORMAT:?} version \
                         {VERSION}); restore it or start with an empty --data-dir",
                        self.path.display()
                    ))
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = NodeIdentity {
                    format: FORMAT.into(),
                    version: VERSION,
                    node_id,
                    cluster_id: String::new(),
                };
                self.store(&identity)?;
                identity
            }
            Err(e) => return Err(BrokerError::io("read", &self.path, e)),
        };
        if identity.node_id != node_id {
            return Err(BrokerError::DataDir(format!(
                "{} belongs to node {}, but this is node {node_id}; start with --node-id {} or \
                 use another --data-dir",
                dir.display(),
                identity.node_id,
                identity.node_id
            )));
        }
        Ok(identity)
    }

    /// Writes the identity atomically and durably.
    pub fn store(&self, identity: &NodeIdentity) -> Result<(), BrokerError> {
        let text = serde_json::to_vec_pretty(identity).expect("identity serializes");
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&text)?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            let dir = self.path.parent().unwrap_or(Path::new("."));
            fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| BrokerError::io("write", &self.path, e))
    }
}

/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = ".lock";

/// An exclusive `flock` on `<data_dir>/.lock`, held for the life of the process that took
/// it (or until dropped). The kernel drops it when the process dies, however it dies, so a
/// SIGKILLed broker never leaves a stale lock; the file itself stays and only says which
/// process held it last.
#[derive(Debug)]
pub struct DataDirLock {
    _file: fs::File,
}

impl DataDirLock {
    /// Creates `data_dir` if needed and locks it, before anything in it is read or
    /// written. Refuses at once (no waiting) if another process holds it, naming the
    /// directory and, when the lock file says, the other process.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, BrokerError> {
        fs::create_dir_all(data_dir)
            .map_err(|e| BrokerError::io("create data directory", data_dir, e))?;
        let path = data_dir.join(LOCK_FILE);
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| BrokerError::io("open the lock file", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path)
                    .ok()
                    .and_then(|text| text.trim().parse::<u32>().ok())
                    .map(|pid| format!(" (process {pid})"))
                    .unwrap_or_default();
                return Err(BrokerError::DataDir(format!(
                    "{} is in use by another sluice-broker{holder}; stop that broker first, or \
                     give this one another --data-dir",
                    data_dir.display()
                )));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(BrokerError::io("lock", &path, e));
            }
        }
        // Under the lock: record who holds it, for the next process's error message.
        let mut record = || -> std::io::Result<()> {
            file.set_len(0)?;
            file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
            file.sync_data()
        };
        record().map_err(|e| BrokerError::io("write", &path, e))?;
        Ok(DataDirLock { _file: file })
    }
}

/// 16 random bytes from the OS, hex: cluster ids.
pub fn random_id() -> String {
    hex(&random_bytes())
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 16 random bytes from the OS: ids that tell clusters and process runs apart.
pub fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    let random = fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if random.is_err() {
        // No /dev/urandom: time and pid still tell two runs apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = (nanos ^ (u128::from(std::process::id()) << 64)).to_be_bytes();
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_then_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = NodeFile::new(dir.path());
        let mut identity = file.load_or_create(BrokerId(2)).unwrap();
        assert_eq!(identity.node_id, BrokerId(2));
        identity.cluster_id = random_id();
        file.store(&identity).unwrap();
        assert_eq!(file.load_or_create(BrokerId(2)).unwrap(), identity);
        let err = file.load_or_create(BrokerId(3)).unwrap_err();
        assert!(err.to_string().contains("belongs to node 2"), "{err}");
    }

    #[test]
    fn a_locked_data_dir_is_refused_until_the_lock_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let lock = DataDirLock::acquire(&data).unwrap();
        // A second open file description conflicts even in the same process.
        let err = DataDirLock::acquire(&data).unwrap_err().to_string();
        assert!(err.contains(&data.display().to_string()), "{err}");
        assert!(
            err.contains(&format!("process {}", std::process::id())),
            "{err}"
        );
        drop(lock);
        DataDirLock::acquire(&data).unwrap();
    }

    #[test]
    fn a_pre_clustering_data_dir_is_refused_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(LEGACY_METADATA_FILE), "{}").unwrap();
        let err = NodeFile::new(dir.path())
            .load_or_create(BrokerId(1))
            .unwrap_err();
        assert!(err.to_string().contains("without clustering"), "{err}");
        assert!(dir.path().join(LEGACY_METADATA_FILE).exists());
    }
}
