//! Errors of the broker: start-up failures (`BrokerError`) and the typed outcome of a request
//! on one partition or topic (`ApiError`, an [`ErrorCode`] and a message for the client).

use sluice_protocol::ErrorCode;
use sluice_storage::StorageError;

/// Why the broker could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The configuration is invalid; the message names the setting.
    #[error("configuration: {0}")]
    Config(String),
    /// A file of the data directory could not be used.
    #[error("{what} {path}: {source}; check the path and its permissions")]
    Io {
        /// What was being done ("create data directory").
        what: &'static str,
        /// The path involved.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The data directory holds state this node must not use.
    #[error("data directory: {0}")]
    DataDir(String),
    /// A partition log could not be opened.
    #[error("partition {partition}: {source}")]
    Storage {
        /// `topic-partition`.
        partition: String,
        /// What storage said.
        source: StorageError,
    },
    /// The listener could not bind.
    #[error("cannot listen on {address}: {source}; is another broker running there?")]
    Bind {
        /// The address.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl BrokerError {
    /// An I/O error on `path` while doing `what`.
    pub fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> BrokerError {
        BrokerError::Io {
            what,
            path: path.display().to_string(),
            source,
        }
    }
}

/// A request's failure on one item (partition, topic): what the client gets back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The protocol error code.
    pub code: ErrorCode,
    /// What went wrong and what to do, for a human.
    pub message: String,
}

impl ApiError {
    /// An error with a specific message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// UNKNOWN_TOPIC_OR_PARTITION naming the topic.
    pub fn unknown_topic(topic: &str) -> ApiError {
        ApiError::new(
            ErrorCode::UnknownTopicOrPartition,
            format!("topic {topic:?} does not exist"),
        )
    }

    /// UNKNOWN_TOPIC_OR_PARTITION naming the partition.
    pub fn unknown_partition(topic: &str, partition: i32, n_partitions: usize) -> ApiError {
        ApiError::new(
            ErrorCode::UnknownTopicOrPartition,
            format!(
                "topic {topic:?} has no partition {partition} (it has {n_partitions}: 0..{n_partitions})"
            ),
        )
    }

    /// The message, as the optional wire field.
    pub fn wire_message(&self) -> Option<String> {
        Some(self.message.clone())
    }
}

impl From<StorageError> for ApiError {
    /// Storage failures become the codes Kafka clients know, with storage's message (which
    /// already says what to do, such as "free space ... then retry").
    fn from(e: StorageError) -> ApiError {
        let code = match &e {
            StorageError::DiskFull { .. } => ErrorCode::DiskFull,
            StorageError::InvalidBatch(_) => ErrorCode::CorruptMessage,
            StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            StorageError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
            StorageError::StaleLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
            StorageError::NonContiguousAppend { .. } => ErrorCode::UnknownServerError,
            StorageError::Deleted { .. } => ErrorCode::UnknownTopicOrPartition,
            _ => ErrorCode::KafkaStorageError,
        };
        ApiError::new(code, e.to_string())
    }
}
