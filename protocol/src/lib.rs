//! `sluice-protocol` turns bytes into typed values and back, and does nothing else: no
//! sockets, no files, no runtime. It holds the Kafka RecordBatch v2 codec that the wire and
//! the disk share (`batch`), the frame codec of the native protocol (`frame`), the request
//! and response messages (`messages`), and the one `ErrorCode` enum that broker and client
//! agree on (`error_code`). Every decoder is total: it returns an [`Error`] for any input it
//! cannot accept and never panics or allocates more than its input could hold.

pub mod batch;
pub mod compression;
pub mod control;
mod error;
pub mod error_code;
pub mod frame;
pub mod group_log;
pub mod messages;
mod records;
pub mod scram;
pub mod txn_log;
pub mod types;
pub mod varint;
pub mod wire;

pub use error::Error;
pub use error_code::ErrorCode;
pub use frame::FrameCodec;
pub use messages::Acks;
pub use messages::{
    decode_request, ApiKey, Request, RequestError, RequestHeader, Response, ResponseHeader,
};
pub use records::{FileSlice, Records};
pub use types::{BrokerId, LeaderEpoch, Offset, PartitionId};

/// Result of every fallible codec function in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
