//! The cluster layer: the controller quorum's replicated metadata (an openraft Raft group
//! of the `--voters`, every other broker a learner), the metadata image every node applies,
//! and the active controller's logic (registrations, heartbeats and fencing, ISR changes,
//! topic placement).
//!
//! - [`image`]: the metadata image and the commands of the metadata log, applied
//!   deterministically on every node (pure: no I/O, no clock).
//! - [`raft`]: openraft's type configuration for sluice.
//! - [`peer`]: a sequential request/response connection to another broker over the native
//!   protocol (Raft messages now; replica fetch, heartbeats and forwarding later).
//! - [`network`]: openraft's network over [`peer`] connections, and the serving side of
//!   the Raft apis for the request handlers.

pub mod image;
pub mod network;
pub mod peer;
pub mod raft;

#[cfg(test)]
pub(crate) mod testing;
