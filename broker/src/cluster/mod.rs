//! The cluster layer: the controller quorum's replicated metadata (an openraft Raft group
//! of the `--voters`, every other broker a learner), the metadata image every node applies,
//! and the active controller's logic (registrations, heartbeats and fencing, ISR changes,
//! topic placement).
//!
//! - [`image`]: the metadata image and the commands of the metadata log, applied
//!   deterministically on every node (pure: no I/O, no clock).
//! - [`raft`]: openraft's type configuration for sluice.
//! - [`store`]: openraft's log storage and state machine, durable in `<data_dir>/controller`
//!   (log, vote and log pointers, snapshots; the image is rebuilt from the latest snapshot
//!   and the committed log at start).

pub mod image;
pub mod raft;
pub mod store;
