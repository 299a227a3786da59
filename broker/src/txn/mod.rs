//! Transactions (issue 26): the transaction coordinator ([`coordinator`], one shard per
//! `__transaction_state` partition this broker leads, as [`crate::groups`] is for
//! `__consumer_offsets`) and its rules ([`state`]), the leaders' side of its marker writes
//! ([`markers`], WriteTxnMarkers), and the leaders' check with it before a batch begins a
//! transaction in a partition ([`verify`], KIP-890).

pub mod coordinator;
pub mod markers;
pub mod state;
pub mod verify;
