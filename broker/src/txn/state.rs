//! The transaction coordinator's rules for one transactional id (Kafka's
//! TransactionMetadata), without I/O: given the id's state ([`TxnValue`], as the last
//! record of `__transaction_state` holds it) and a request, the state to write next, or
//! the error to answer. The coordinator writes the new state with acks=all and adopts it
//! only once it is replicated, as the group coordinator does with its records.
//!
//! ```text
//!   InitProducerId            AddPartitionsToTxn           EndTxn(commit)
//!  ----------------> Empty -----------------------> Ongoing ----------------> PrepareCommit
//!                      ^                             |   |                      | markers
//!                      |                     EndTxn(abort), timeout            v  written
//!                      |                             v                     CompleteCommit
//!                      +--- next AddPartitions -- PrepareAbort -> markers -> CompleteAbort
//! ```
//!
//! Fencing is by producer epoch: each InitProducerId bumps it, and so does an abort the
//! coordinator starts on its own (a timed-out transaction, or one left open by a
//! producer that re-initialised), so the markers carry an epoch newer than any the old
//! producer instance can write with, and every partition fences it.

use sluice_protocol::messages::TopicPartitions;
use sluice_protocol::txn_log::{TxnState, TxnValue};
use sluice_protocol::ErrorCode;

use crate::error::ApiError;

/// Longest transaction timeout a producer may ask for (Kafka's
/// `transaction.max.timeout.ms` default, 15 minutes).
pub const TRANSACTION_TIMEOUT_MAX_MS: i32 = 15 * 60 * 1000;

/// What an InitProducerId does to a transactional id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Init {
    /// Write this state and answer with its producer id and epoch.
    Ready(TxnValue),
    /// An open transaction of an older instance must be aborted first: write this
    /// PrepareAbort (epoch bumped), send its markers, and answer CONCURRENT_TRANSACTIONS
    /// (the producer retries, and gets its epoch once the abort completed).
    AbortFirst(TxnValue),
}

/// InitProducerId for a transactional id in state `current` (`None`: never seen, or
/// expired). `claimed` is the producer id and epoch a running producer sends to have its
/// epoch bumped (KIP-360, after an error it can recover from); they must be the id's
/// current ones, so a fenced instance cannot fence its successor in turn. A new instance
/// sends none. `new_producer_id` is called when a fresh id is needed: first use, or an
/// epoch that would overflow.
pub fn init_producer_id(
    id: &str,
    current: Option<&TxnValue>,
    claimed: Option<(i64, i16)>,
    timeout_ms: i32,
    now_ms: i64,
    new_producer_id: impl FnOnce() -> Result<i64, ApiError>,
) -> Result<Init, ApiError> {
    if let Some((producer_id, epoch)) = claimed {
        check_producer(id, current, producer_id, epoch)?;
    }
    if timeout_ms <= 0 || timeout_ms > TRANSACTION_TIMEOUT_MAX_MS {
        return Err(ApiError::new(
            ErrorCode::InvalidTransactionTimeout,
            format!(
                "transaction timeout {timeout_ms} ms for {id:?} is outside 1..={} ms \
                 (transaction.max.timeout.ms); lower transaction.timeout.ms",
                TRANSACTION_TIMEOUT_MAX_MS
            ),
        ));
    }
    let Some(current) = current else {
        return Ok(Init::Ready(TxnValue {
            producer_id: new_producer_id()?,
            producer_epoch: 0,
            timeout_ms,
            state: TxnState::Empty,
            partitions: Vec::new(),
            started_ms: -1,
            updated_ms: now_ms,
        }));
    };
    match current.state {
        TxnState::PrepareCommit | TxnState::PrepareAbort => Err(completing(id, current)),
        TxnState::Ongoing => Ok(Init::AbortFirst(TxnValue {
            state: TxnState::PrepareAbort,
            updated_ms: now_ms,
            ..bumped(
                current,
                current.producer_id,
                current.producer_epoch.checked_add(1).unwrap_or(-1),
            )?
        })),
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
            let (producer_id, epoch) = if current.producer_epoch >= i16::MAX - 1 {
                // Kafka's rule: an exhausted epoch starts a new producer id.
                (new_producer_id()?, 0)
            } else {
                (current.producer_id, current.producer_epoch + 1)
            };
            Ok(Init::Ready(TxnValue {
                timeout_ms,
                state: TxnState::Empty,
                partitions: Vec::new(),
                started_ms: -1,
                updated_ms: now_ms,
                ..bumped(current, producer_id, epoch)?
            }))
        }
    }
}

/// A KIP-360 bump retried after its answer was lost: the producer claims the epoch it
/// bumped from, and the id is still as that bump left it (its epoch one higher, no
/// transaction begun). `bumped_from` is what the id's last InitProducerId claimed, if it
/// was such a bump (kept in memory only, as Kafka's `lastProducerEpoch`): the instance
/// that held that epoch is the one retrying, since every epoch belongs to one instance.
/// Answer with the current id and epoch, writing nothing; `None`: not a retry.
pub fn retried_bump(
    current: Option<&TxnValue>,
    claimed: Option<(i64, i16)>,
    bumped_from: Option<(i64, i16)>,
) -> Option<&TxnValue> {
    let (producer_id, epoch) = claimed?;
    let current = current?;
    let retry = bumped_from == claimed
        && current.producer_id == producer_id
        && Some(current.producer_epoch) == epoch.checked_add(1)
        && current.state == TxnState::Empty;
    retry.then_some(current)
}

fn bumped(current: &TxnValue, producer_id: i64, epoch: i16) -> Result<TxnValue, ApiError> {
    if epoch < 0 {
        return Err(ApiError::new(
            ErrorCode::UnknownServerError,
            "the producer epoch overflowed",
        ));
    }
    Ok(TxnValue {
        producer_id,
        producer_epoch: epoch,
        ..current.clone()
    })
}

/// Checks that a request's producer id and epoch are the transactional id's current ones.
pub fn check_producer<'a>(
    id: &str,
    current: Option<&'a TxnValue>,
    producer_id: i64,
    epoch: i16,
) -> Result<&'a TxnValue, ApiError> {
    let Some(current) = current.filter(|c| c.producer_id == producer_id) else {
        return Err(ApiError::new(
            ErrorCode::InvalidProducerIdMapping,
            format!(
                "producer id {producer_id} is not the one transactional id {id:?} has (it \
                 expired, or another instance took it over); initialise the producer again"
            ),
        ));
    };
    if epoch < current.producer_epoch {
        return Err(ApiError::new(
            ErrorCode::ProducerFenced,
            format!(
                "producer {producer_id} epoch {epoch} of transactional id {id:?} is fenced \
                 by epoch {}: a newer instance initialised, or the coordinator aborted the \
                 transaction on timeout; close this producer",
                current.producer_epoch
            ),
        ));
    }
    if epoch > current.producer_epoch {
        return Err(ApiError::new(
            ErrorCode::InvalidProducerEpoch,
            format!(
                "producer {producer_id} sent epoch {epoch} for transactional id {id:?}, newer \
                 than its epoch {}; initialise the producer again",
                current.producer_epoch
            ),
        ));
    }
    Ok(current)
}

/// AddPartitionsToTxn (and AddOffsetsToTxn, whose partition is the group's
/// `__consumer_offsets` partition): the transaction is open, with `partitions` in it. The
/// same partitions again change nothing (`None`: nothing to write).
pub fn add_partitions(
    id: &str,
    current: Option<&TxnValue>,
    producer_id: i64,
    epoch: i16,
    partitions: &[TopicPartitions],
    now_ms: i64,
) -> Result<Option<TxnValue>, ApiError> {
    let current = check_producer(id, current, producer_id, epoch)?;
    match current.state {
        TxnState::PrepareCommit | TxnState::PrepareAbort => Err(completing(id, current)),
        TxnState::Ongoing if contains_all(&current.partitions, partitions) => Ok(None),
        TxnState::Ongoing => Ok(Some(TxnValue {
            partitions: union(&current.partitions, partitions),
            updated_ms: now_ms,
            ..current.clone()
        })),
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
            Ok(Some(TxnValue {
                state: TxnState::Ongoing,
                partitions: union(&[], partitions),
                started_ms: now_ms,
                updated_ms: now_ms,
                ..current.clone()
            }))
        }
    }
}

/// VerifyTxn (KIP-890): the partitions of the producer's ongoing transaction, which a
/// leader checks a partition against before a batch begins the transaction there; none
/// when no transaction is ongoing (a batch that arrives after its transaction ended, or
/// that the producer never added). A transaction whose markers are being written is
/// CONCURRENT_TRANSACTIONS: asked again once they are, the answer is final.
pub fn ongoing_partitions<'a>(
    id: &str,
    current: Option<&'a TxnValue>,
    producer_id: i64,
    epoch: i16,
) -> Result<&'a [TopicPartitions], ApiError> {
    let current = check_producer(id, current, producer_id, epoch)?;
    match current.state {
        TxnState::Ongoing => Ok(&current.partitions),
        TxnState::PrepareCommit | TxnState::PrepareAbort => Err(completing(id, current)),
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => Ok(&[]),
    }
}

/// What an EndTxn does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Write this Prepare state, send the markers, then write its completion.
    Prepare(TxnValue),
    /// The same end was asked before and has completed (a retry): answer at once.
    AlreadyDone,
}

/// EndTxn: commit or abort the open transaction.
pub fn end_txn(
    id: &str,
    current: Option<&TxnValue>,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    now_ms: i64,
) -> Result<End, ApiError> {
    let current = check_producer(id, current, producer_id, epoch)?;
    let done = if commit {
        TxnState::CompleteCommit
    } else {
        TxnState::CompleteAbort
    };
    match current.state {
        TxnState::Ongoing => Ok(End::Prepare(TxnValue {
            state: if commit {
                TxnState::PrepareCommit
            } else {
                TxnState::PrepareAbort
            },
            updated_ms: now_ms,
            ..current.clone()
        })),
        TxnState::PrepareCommit | TxnState::PrepareAbort => Err(completing(id, current)),
        state if state == done => Ok(End::AlreadyDone),
        // Aborting a transaction with no partitions is a no-op (a producer may abort after
        // a failed send that never reached AddPartitionsToTxn).
        TxnState::Empty if !commit => Ok(End::AlreadyDone),
        state => Err(ApiError::new(
            ErrorCode::InvalidTxnState,
            format!(
                "transactional id {id:?} has no open transaction to {} (its state is {state:?}); \
                 begin a transaction and send to it first",
                if commit { "commit" } else { "abort" }
            ),
        )),
    }
}

/// The state once every marker of a Prepare state is written: complete, with no
/// partitions and no transaction running.
pub fn completed(prepared: &TxnValue, now_ms: i64) -> TxnValue {
    let state = match prepared.state {
        TxnState::PrepareCommit => TxnState::CompleteCommit,
        TxnState::PrepareAbort => TxnState::CompleteAbort,
        other => other,
    };
    TxnValue {
        state,
        partitions: Vec::new(),
        started_ms: -1,
        updated_ms: now_ms,
        ..prepared.clone()
    }
}

/// A transaction open longer than its timeout is aborted by the coordinator, in a bumped
/// epoch so the producer that left it is fenced everywhere. `None` when it has time left
/// (or is not open).
pub fn timed_out(current: &TxnValue, now_ms: i64) -> Option<TxnValue> {
    if current.state != TxnState::Ongoing
        || now_ms - current.started_ms <= i64::from(current.timeout_ms)
    {
        return None;
    }
    let epoch = current.producer_epoch.checked_add(1)?;
    Some(TxnValue {
        producer_epoch: epoch,
        state: TxnState::PrepareAbort,
        updated_ms: now_ms,
        ..current.clone()
    })
}

/// How long a transactional id may go unused before the coordinator forgets it (Kafka's
/// `transactional.id.expiration.ms` default, 7 days): its producer id and epoch go with
/// it, and a producer that comes back later starts afresh.
pub const TRANSACTIONAL_ID_EXPIRATION_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// Whether `current` has gone unused past [`TRANSACTIONAL_ID_EXPIRATION_MS`] with no
/// transaction open or ending: the coordinator then writes its tombstone.
pub fn expired(current: &TxnValue, now_ms: i64) -> bool {
    matches!(
        current.state,
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
    ) && now_ms - current.updated_ms > TRANSACTIONAL_ID_EXPIRATION_MS
}

fn completing(id: &str, current: &TxnValue) -> ApiError {
    ApiError::new(
        ErrorCode::ConcurrentTransactions,
        format!(
            "transactional id {id:?} is still writing the markers of its {} (state {:?}); \
             retry shortly",
            if current.state == TxnState::PrepareCommit {
                "commit"
            } else {
                "abort"
            },
            current.state
        ),
    )
}

fn contains_all(have: &[TopicPartitions], asked: &[TopicPartitions]) -> bool {
    asked.iter().all(|t| {
        have.iter()
            .find(|h| h.topic == t.topic)
            .is_some_and(|h| t.partitions.iter().all(|p| h.partitions.contains(p)))
    })
}

/// `have` plus `asked`, each topic once with its partitions sorted.
fn union(have: &[TopicPartitions], asked: &[TopicPartitions]) -> Vec<TopicPartitions> {
    let mut out: std::collections::BTreeMap<&str, std::collections::BTreeSet<_>> =
        std::collections::BTreeMap::new();
    for t in have.iter().chain(asked) {
        out.entry(&t.topic)
            .or_default()
            .extend(t.partitions.iter().copied());
    }
    out.into_iter()
        .map(|(topic, partitions)| TopicPartitions {
            topic: topic.to_owned(),
            partitions: partitions.into_iter().collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
