//! Transactions (issue 26): the transaction coordinator's rules ([`state`]) and the
//! leaders' side of its marker writes ([`markers`], WriteTxnMarkers). The
//! coordinator itself (one per `__transaction_state` partition this broker leads, as
//! [`crate::groups`] is for `__consumer_offsets`) and its apis are the next steps.

pub mod coordinator;
pub mod markers;
pub mod state;
