//! The cluster metadata this node knows, and where it is kept.
//!
//! [`MetadataImage`] is the whole picture: cluster id, topics, their partitions with leader,
//! leader epoch, replicas and ISR, and each topic's config overrides. On a single node it is
//! persisted by [`MetadataFile`], a JSON document written atomically (temp file, fsync,
//! rename, fsync of the directory) after every change and before the change is
//! acknowledged. With clustering, the same image becomes the state machine of the
//! controller's Raft log; the rest of the broker only reads images and asks for changes.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_protocol::{BrokerId, LeaderEpoch, PartitionId};

use crate::error::BrokerError;

/// Name of the metadata file in the data directory.
pub const METADATA_FILE: &str = "metadata.json";
/// Identifies the file's format; checked on load.
const FORMAT: &str = "sluice-metadata";
/// The format version this build reads and writes.
const VERSION: u32 = 1;

/// Everything the broker knows about the cluster's topics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// `sluice-metadata`, so a stray JSON file is not mistaken for metadata.
    pub format: String,
    /// The format version.
    pub version: u32,
    /// Chosen when the cluster first starts; never changes.
    pub cluster_id: String,
    /// The node that owns this data directory; a different `--node-id` is refused.
    pub node_id: BrokerId,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMeta>,
}

/// One topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// Replicas per partition.
    pub replication_factor: u16,
    /// Config overrides given at creation (`retention.ms` ...), validated.
    pub configs: BTreeMap<String, String>,
    /// Partitions by index, 0..n.
    pub partitions: Vec<PartitionMeta>,
}

/// One partition's placement and leadership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    /// The partition's index.
    pub index: PartitionId,
    /// The leader, or -1.
    pub leader: BrokerId,
    /// Bumped on every leader change.
    pub leader_epoch: LeaderEpoch,
    /// Assigned replicas, preferred leader first.
    pub replicas: Vec<BrokerId>,
    /// In-sync replicas.
    pub isr: Vec<BrokerId>,
}

impl MetadataImage {
    /// An empty image for a new cluster.
    pub fn new(cluster_id: String, node_id: BrokerId) -> MetadataImage {
        MetadataImage {
            format: FORMAT.into(),
            version: VERSION,
            cluster_id,
            node_id,
            topics: BTreeMap::new(),
        }
    }
}

/// The metadata image of a single node, persisted in the data directory.
#[derive(Clone, Debug)]
pub struct MetadataFile {
    path: PathBuf,
}

impl MetadataFile {
    /// The metadata file of `data_dir`.
    pub fn new(data_dir: &Path) -> MetadataFile {
        MetadataFile {
            path: data_dir.join(METADATA_FILE),
        }
    }

    /// Loads the image, or `None` on a fresh data directory.
    pub fn load(&self) -> Result<Option<MetadataImage>, BrokerError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(BrokerError::io("read", &self.path, e)),
        };
        let image: MetadataImage = serde_json::from_str(&text).map_err(|e| {
            BrokerError::DataDir(format!(
                "{} is not valid sluice metadata ({e}); restore it from a backup or move the \
                 data directory away to start empty",
                self.path.display()
            ))
        })?;
        if image.format != FORMAT || image.version != VERSION {
            return Err(BrokerError::DataDir(format!(
                "{} has format {:?} version {}, but this build reads {FORMAT:?} version \
                 {VERSION}; use a sluice version that wrote it",
                self.path.display(),
                image.format,
                image.version
            )));
        }
        Ok(Some(image))
    }

    /// Writes the image atomically and durably: after this returns, a crash leaves either
    /// the new image or (never) a torn one.
    pub fn store(&self, image: &MetadataImage) -> Result<(), BrokerError> {
        let text = serde_json::to_vec_pretty(image).expect("metadata serializes");
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

/// A cluster id: 16 random bytes from the OS, hex. Unique enough to tell clusters apart.
pub fn new_cluster_id() -> String {
    let mut bytes = [0u8; 16];
    let random = fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if random.is_err() {
        // No /dev/urandom: time and pid still tell two clusters apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = (nanos ^ (u128::from(std::process::id()) << 64)).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let file = MetadataFile::new(dir.path());
        assert_eq!(file.load().unwrap(), None);
        let mut image = MetadataImage::new(new_cluster_id(), BrokerId(1));
        image.topics.insert(
            "orders".into(),
            TopicMeta {
                replication_factor: 1,
                configs: [("retention.ms".to_string(), "1000".to_string())].into(),
                partitions: vec![PartitionMeta {
                    index: PartitionId(0),
                    leader: BrokerId(1),
                    leader_epoch: LeaderEpoch(0),
                    replicas: vec![BrokerId(1)],
                    isr: vec![BrokerId(1)],
                }],
            },
        );
        file.store(&image).unwrap();
        assert_eq!(file.load().unwrap(), Some(image));
    }

    #[test]
    fn a_foreign_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(METADATA_FILE), "{\"hello\": 1}").unwrap();
        let err = MetadataFile::new(dir.path()).load().unwrap_err();
        assert!(
            err.to_string().contains("not valid sluice metadata"),
            "{err}"
        );
    }
}
