//! A transactional producer ([`ProducerConfig::transactional_id`], issue 26): Kafka's
//! `TransactionManager`, on the same batching and sending as an idempotent producer.
//!
//! - [`Producer::init_transactions`] finds the id's transaction coordinator and gets the
//!   id's producer id and a new epoch (InitProducerId), which fences every older instance
//!   of the id and has the coordinator abort what one left open.
//! - [`Producer::begin_transaction`], then `send`: the first record for a partition in the
//!   transaction waits for AddPartitionsToTxn before it is appended, so a batch reaches a
//!   leader only once its partition is in the transaction; batches carry the
//!   transactional bit.
//! - [`Producer::send_offsets_to_transaction`]: a consumer group's offsets in the same
//!   transaction (AddOffsetsToTxn to the transaction coordinator, TxnOffsetCommit to the
//!   group's), counted only if it commits: consume-transform-produce exactly once.
//! - [`Producer::commit_transaction`] flushes, and commits (EndTxn) only if every record of
//!   the transaction was acknowledged; otherwise the transaction can only be aborted.
//!   [`Producer::abort_transaction`] fails what was not sent, waits for what is in flight,
//!   aborts (EndTxn), then bumps the producer's epoch (InitProducerId with its id and
//!   epoch, KIP-360), so no late batch of the aborted transaction can ever be written in
//!   the next one, and every partition's sequence starts again.
//!
//! The producer never bumps its epoch on its own in the middle of a transaction (an
//! idempotent producer does, after a batch with an unknown outcome): the coordinator would
//! abort the open transaction behind the user's back. Such a batch makes the transaction
//! abortable instead.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, InitProducerIdRequest,
    OffsetCommitPartition, OffsetCommitTopic, TopicPartitions, TxnOffsetCommitRequest,
};
use sluice_protocol::{ErrorCode, LeaderEpoch, Offset, PartitionId, Request, Response};

use super::{Producer, ProducerRecord, Shared};
use crate::accumulator::ProducerIdentity;
use crate::client::{unexpected, Client};
use crate::error::{Error, Result};
use crate::group::coordinator::Coordinator;
use crate::TopicPartition;

/// Where a transactional producer is.
#[derive(Clone, Debug)]
enum Phase {
    /// `init_transactions` has not succeeded yet.
    Uninitialised,
    /// Between transactions.
    Ready,
    /// A transaction is open.
    Open,
    /// The open transaction cannot commit (a record failed, a partition could not be
    /// added): it must be aborted.
    Abortable(Error),
    /// The producer is fenced (or the id taken over): nothing more can be done with it.
    Fatal(Error),
}

/// The open transaction's partitions and groups, and where the producer is.
#[derive(Debug)]
struct Session {
    phase: Phase,
    identity: Option<ProducerIdentity>,
    partitions: BTreeSet<TopicPartition>,
    groups: BTreeSet<String>,
    /// The producer's count of failed records when the transaction began.
    failed_at_begin: u64,
}

/// A transactional producer's state, in the producer's [`Shared`].
pub(super) struct Transaction {
    id: String,
    coordinator: Coordinator,
    session: Mutex<Session>,
    /// Serialises the requests that change the transaction (adding partitions, ending it),
    /// so two `send`s adding the same partition ask once.
    calls: tokio::sync::Mutex<()>,
    /// The group coordinators offsets were sent to, by group.
    groups: Mutex<HashMap<String, Arc<Coordinator>>>,
}

impl Transaction {
    pub(super) fn new(client: Client, id: String) -> Transaction {
        Transaction {
            coordinator: Coordinator::transactions(client, id.clone()),
            id,
            session: Mutex::new(Session {
                phase: Phase::Uninitialised,
                identity: None,
                partitions: BTreeSet::new(),
                groups: BTreeSet::new(),
                failed_at_begin: 0,
            }),
            calls: tokio::sync::Mutex::new(()),
            groups: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks that a transaction is open (for `send` and `send_offsets_to_transaction`).
    fn check_open(&self) -> Result<()> {
        match &self.lock().phase {
            Phase::Open => Ok(()),
            phase => Err(self.not_open(phase)),
        }
    }

    fn not_open(&self, phase: &Phase) -> Error {
        match phase {
            Phase::Uninitialised => Error::InvalidArgument(format!(
                "transactional producer \"{}\" is not initialised; call init_transactions \
                 first",
                self.id
            )),
            Phase::Ready => Error::InvalidArgument(format!(
                "transactional producer \"{}\" has no open transaction; call \
                 begin_transaction first",
                self.id
            )),
            Phase::Open => Error::InvalidArgument(format!(
                "transactional producer \"{}\" already has an open transaction; commit or \
                 abort it first",
                self.id
            )),
            Phase::Abortable(e) => abortable(e),
            Phase::Fatal(e) => e.clone(),
        }
    }

    /// The transaction can no longer commit.
    pub(super) fn make_abortable(&self, error: &Error) {
        let mut session = self.lock();
        if matches!(session.phase, Phase::Open) {
            session.phase = Phase::Abortable(error.clone());
        }
    }

    /// Puts `error` in force: fencing errors end the producer, others its transaction.
    fn fail(&self, error: Error) -> Error {
        let mut session = self.lock();
        if fencing(&error) {
            session.phase = Phase::Fatal(error.clone());
        } else if matches!(session.phase, Phase::Open) {
            session.phase = Phase::Abortable(error.clone());
        }
        error
    }

    /// Adds the partitions of `tps` not in the open transaction yet, all in one
    /// AddPartitionsToTxn request, as Kafka's producer does.
    pub(super) async fn add_partitions(
        &self,
        tps: &[TopicPartition],
        timeout: Duration,
    ) -> Result<()> {
        self.check_open()?;
        let missing = |tps: &[TopicPartition]| -> BTreeSet<TopicPartition> {
            let session = self.lock();
            tps.iter()
                .filter(|tp| !session.partitions.contains(*tp))
                .cloned()
                .collect()
        };
        if missing(tps).is_empty() {
            return Ok(());
        }
        let _turn = self.calls.lock().await;
        let missing = missing(tps);
        if missing.is_empty() {
            return Ok(());
        }
        let identity = self.identity()?;
        let mut topics: Vec<TopicPartitions> = Vec::new();
        for tp in &missing {
            match topics.last_mut() {
                Some(last) if last.topic == tp.topic => last.partitions.push(tp.partition),
                _ => topics.push(TopicPartitions {
                    topic: tp.topic.clone(),
                    partitions: vec![tp.partition],
                }),
            }
        }
        let request = Request::AddPartitionsToTxn(AddPartitionsToTxnRequest {
            transactional_id: self.id.clone(),
            producer_id: identity.producer_id,
            producer_epoch: identity.epoch,
            topics,
        });
        let named = missing
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let context = format!("adding {named} to the transaction of \"{}\"", self.id);
        let added = self
            .coordinator
            .call(
                request,
                timeout,
                Some(Instant::now() + timeout),
                |answer| match answer {
                    // Every partition asked for is in the transaction, or the call failed:
                    // the first refusal is the error (the coordinator answers the others
                    // OPERATION_NOT_ATTEMPTED).
                    Response::AddPartitionsToTxn(r) => missing.iter().try_for_each(|tp| {
                        let result = r
                            .topics
                            .iter()
                            .filter(|t| t.name == tp.topic)
                            .flat_map(|t| &t.partitions)
                            .find(|p| p.partition == tp.partition);
                        match result {
                            Some(p) if p.error_code == ErrorCode::None => Ok(()),
                            Some(p) => Err(Error::broker(
                                context.clone(),
                                p.error_code,
                                p.error_message.clone(),
                            )),
                            None => Err(Error::Protocol {
                                addr: "the transaction coordinator".to_owned(),
                                reason: format!("AddPartitionsToTxn has no result for {tp}"),
                            }),
                        }
                    }),
                    other => Err(unexpected("AddPartitionsToTxn", &other)),
                },
            )
            .await;
        match added {
            Ok(()) => {
                self.lock().partitions.extend(missing);
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn identity(&self) -> Result<ProducerIdentity> {
        self.lock()
            .identity
            .ok_or_else(|| self.not_open(&Phase::Uninitialised))
    }

    /// InitProducerId for the transactional id: a new instance's (`claim` none), or the
    /// running producer's bump of its own epoch.
    async fn init_producer_id(
        &self,
        claim: Option<ProducerIdentity>,
        transaction_timeout: Duration,
        timeout: Duration,
    ) -> Result<ProducerIdentity> {
        let request = Request::InitProducerId(InitProducerIdRequest {
            transactional_id: Some(self.id.clone()),
            transaction_timeout_ms: i32::try_from(transaction_timeout.as_millis())
                .unwrap_or(i32::MAX),
            producer_id: claim.map_or(-1, |c| c.producer_id),
            producer_epoch: claim.map_or(-1, |c| c.epoch),
        });
        let context = format!("initialising transactional producer \"{}\"", self.id);
        self.coordinator
            .call(
                request,
                timeout,
                Some(Instant::now() + timeout),
                |answer| match answer {
                    Response::InitProducerId(r) if r.error_code != ErrorCode::None => Err(
                        Error::broker(context.clone(), r.error_code, r.error_message),
                    ),
                    Response::InitProducerId(r) => Ok(ProducerIdentity {
                        producer_id: r.producer_id,
                        epoch: r.producer_epoch,
                    }),
                    other => Err(unexpected("InitProducerId", &other)),
                },
            )
            .await
    }

    /// EndTxn, retried while the coordinator moves or finishes the previous transaction.
    async fn end(&self, commit: bool, timeout: Duration) -> Result<()> {
        let identity = self.identity()?;
        let request = Request::EndTxn(EndTxnRequest {
            transactional_id: self.id.clone(),
            producer_id: identity.producer_id,
            producer_epoch: identity.epoch,
            committed: commit,
        });
        let context = format!(
            "{} the transaction of \"{}\"",
            if commit { "committing" } else { "aborting" },
            self.id
        );
        self.call_coded(request, context, timeout).await
    }

    /// Sends a request answered with an error code alone (EndTxn, AddOffsetsToTxn) to the
    /// coordinator, retried while it moves, loads or ends the previous transaction.
    async fn call_coded(&self, request: Request, context: String, timeout: Duration) -> Result<()> {
        let api = request.api_key().name();
        self.coordinator
            .call(request, timeout, Some(Instant::now() + timeout), |answer| {
                let r = match answer {
                    Response::EndTxn(r) | Response::AddOffsetsToTxn(r) => r,
                    other => return Err(unexpected(api, &other)),
                };
                match r.error_code {
                    ErrorCode::None => Ok(()),
                    code => Err(Error::broker(context.clone(), code, r.error_message)),
                }
            })
            .await
    }

    /// The coordinator of `group`, kept for the next transactions.
    fn group_coordinator(&self, client: &Client, group: &str) -> Arc<Coordinator> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            groups
                .entry(group.to_owned())
                .or_insert_with(|| Arc::new(Coordinator::new(client.clone(), group))),
        )
    }
}

impl Producer {
    fn transaction(&self) -> Result<&Transaction> {
        self.handle.shared.txn.as_ref().ok_or_else(|| {
            Error::InvalidArgument(
                "this producer has no transactional_id; set ProducerConfig::transactional_id \
                 to use transactions"
                    .to_owned(),
            )
        })
    }

    /// Initialises a transactional producer: gets the transactional id's producer id and a
    /// new epoch from its coordinator. Every older instance of the id is fenced from then
    /// on, and a transaction one left open is aborted first (this waits for that). Call
    /// once, before the first transaction.
    pub async fn init_transactions(&self) -> Result<()> {
        let shared = &self.handle.shared;
        let txn = self.transaction()?;
        if !shared.config.is_idempotent() {
            return Err(Error::InvalidArgument(
                "a transactional producer needs acks=all and enable_idempotence".to_owned(),
            ));
        }
        let _turn = txn.calls.lock().await;
        if !matches!(txn.lock().phase, Phase::Uninitialised) {
            return Err(Error::InvalidArgument(format!(
                "transactional producer \"{}\" is initialised already",
                txn.id
            )));
        }
        let identity = txn
            .init_producer_id(
                None,
                shared.config.transaction_timeout,
                shared.config.delivery_timeout,
            )
            .await?;
        tracing::debug!(id = %txn.id, ?identity, "transactional producer initialised");
        shared.lock().accumulator.set_identity(identity);
        let mut session = txn.lock();
        session.identity = Some(identity);
        session.phase = Phase::Ready;
        Ok(())
    }

    /// Opens a transaction: the records sent and offsets sent from now until
    /// `commit_transaction` or `abort_transaction` are committed or aborted together.
    pub fn begin_transaction(&self) -> Result<()> {
        let txn = self.transaction()?;
        let mut session = txn.lock();
        match &session.phase {
            Phase::Ready => {
                session.phase = Phase::Open;
                session.partitions.clear();
                session.groups.clear();
                session.failed_at_begin = self.handle.shared.failed.load(Ordering::Acquire);
                Ok(())
            }
            phase => Err(txn.not_open(phase)),
        }
    }

    /// Commits a consumer group's offsets in the open transaction: `offsets` are the next
    /// offsets to consume (the consumer's positions), as with a consumer's commit. They
    /// count only if the transaction commits; a read_committed consumer of the group that
    /// resumes meanwhile waits for the transaction to end. `member` is the consuming
    /// member's generation and id ([`crate::Consumer::group_generation`]): with it the
    /// commit is refused once the group has moved on without that member (KIP-447), so a
    /// processor that lost its partitions in a rebalance cannot commit their offsets over
    /// the new owner's; `None` for offsets managed outside group membership.
    pub async fn send_offsets_to_transaction(
        &self,
        group: &str,
        member: Option<(i32, String)>,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<()> {
        let shared = &self.handle.shared;
        let txn = self.transaction()?;
        txn.check_open()?;
        let identity = txn.identity()?;
        let timeout = shared.config.request_timeout;
        let _turn = txn.calls.lock().await;
        if !txn.lock().groups.contains(group) {
            let request = Request::AddOffsetsToTxn(AddOffsetsToTxnRequest {
                transactional_id: txn.id.clone(),
                producer_id: identity.producer_id,
                producer_epoch: identity.epoch,
                group_id: group.to_owned(),
            });
            let context = format!(
                "adding group \"{group}\" to the transaction of \"{}\"",
                txn.id
            );
            txn.call_coded(request, context, timeout)
                .await
                .map_err(|e| txn.fail(e))?;
            txn.lock().groups.insert(group.to_owned());
        }
        let mut topics: Vec<OffsetCommitTopic> = Vec::new();
        for (tp, offset) in offsets {
            let partition = OffsetCommitPartition {
                partition: tp.partition,
                committed_offset: Offset(*offset),
                committed_leader_epoch: LeaderEpoch(-1),
                committed_metadata: None,
            };
            match topics.iter_mut().find(|t| t.name == tp.topic) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(OffsetCommitTopic {
                    name: tp.topic.clone(),
                    partitions: vec![partition],
                }),
            }
        }
        let request = Request::TxnOffsetCommit(TxnOffsetCommitRequest {
            transactional_id: txn.id.clone(),
            group_id: group.to_owned(),
            producer_id: identity.producer_id,
            producer_epoch: identity.epoch,
            generation_id: member.as_ref().map_or(-1, |(generation, _)| *generation),
            member_id: member.map(|(_, id)| id).unwrap_or_default(),
            topics,
        });
        let context = format!("committing offsets of group \"{group}\" in a transaction");
        let coordinator = txn.group_coordinator(&shared.client, group);
        let committed = coordinator
            .call(
                request,
                timeout,
                Some(Instant::now() + timeout),
                |answer| match answer {
                    Response::TxnOffsetCommit(r) => {
                        let failed = r
                            .topics
                            .iter()
                            .flat_map(|t| t.partitions.iter().map(move |p| (&t.name, p)))
                            .find(|(_, p)| p.error_code != ErrorCode::None);
                        match failed {
                            None => Ok(()),
                            Some((topic, p)) => Err(Error::broker(
                                format!("{context} ({topic}/{})", p.partition),
                                p.error_code,
                                p.error_message.clone(),
                            )),
                        }
                    }
                    other => Err(unexpected("TxnOffsetCommit", &other)),
                },
            )
            .await;
        committed.map_err(|e| txn.fail(e))
    }

    /// Commits the open transaction: sends everything buffered, waits for every record to
    /// be acknowledged, then has the coordinator commit. If a record of the transaction
    /// failed, nothing is committed: the error says so, and the transaction must be
    /// aborted. A fenced producer's error is final: close it.
    pub async fn commit_transaction(&self) -> Result<()> {
        let shared = &self.handle.shared;
        let txn = self.transaction()?;
        txn.check_open()?;
        self.flush().await;
        let _turn = txn.calls.lock().await;
        let failed = shared.failed.load(Ordering::Acquire);
        {
            let session = txn.lock();
            match &session.phase {
                Phase::Open if failed == session.failed_at_begin => {}
                Phase::Open => {
                    drop(session);
                    let error = Error::InvalidArgument(format!(
                        "{} record(s) of the transaction failed",
                        failed - txn.lock().failed_at_begin
                    ));
                    txn.make_abortable(&error);
                    return Err(abortable(&error));
                }
                phase => return Err(txn.not_open(phase)),
            }
        }
        let empty = {
            let session = txn.lock();
            session.partitions.is_empty() && session.groups.is_empty()
        };
        if !empty {
            txn.end(true, shared.config.delivery_timeout)
                .await
                .map_err(|e| txn.fail(e))?;
        }
        txn.lock().phase = Phase::Ready;
        Ok(())
    }

    /// Aborts the open (or abortable) transaction: records not sent yet fail with
    /// [`Error::TransactionAborted`], those in flight are waited for, the coordinator
    /// writes the abort markers, and the producer's epoch is bumped, so nothing of the
    /// aborted transaction can be written after it.
    pub async fn abort_transaction(&self) -> Result<()> {
        let shared = &self.handle.shared;
        let txn = self.transaction()?;
        match &txn.lock().phase {
            Phase::Open | Phase::Abortable(_) => {}
            phase => return Err(txn.not_open(phase)),
        }
        let unsent = {
            let mut state = shared.lock();
            let mut unsent = state.accumulator.take_unsent();
            unsent.extend(state.accumulator.take_blocked());
            unsent
        };
        shared.fail_unsent(unsent, &Error::TransactionAborted);
        self.flush().await;
        let _turn = txn.calls.lock().await;
        let sent_anything = {
            let session = txn.lock();
            !(session.partitions.is_empty() && session.groups.is_empty())
        };
        if sent_anything {
            let timeout = shared.config.delivery_timeout;
            txn.end(false, timeout).await.map_err(|e| txn.fail(e))?;
            let identity = txn.identity()?;
            let bumped = txn
                .init_producer_id(Some(identity), shared.config.transaction_timeout, timeout)
                .await
                .map_err(|e| txn.fail(e))?;
            tracing::debug!(id = %txn.id, ?bumped, "epoch bumped after an abort");
            shared.lock().accumulator.set_identity(bumped);
            txn.lock().identity = Some(bumped);
        }
        txn.lock().phase = Phase::Ready;
        Ok(())
    }

    /// The partition a transactional record goes to is added to the transaction before the
    /// record is appended.
    pub(super) async fn add_to_transaction(&self, tp: &TopicPartition) -> Result<()> {
        match &self.handle.shared.txn {
            Some(txn) => {
                txn.add_partitions(
                    std::slice::from_ref(tp),
                    self.handle.shared.config.request_timeout,
                )
                .await
            }
            None => Ok(()),
        }
    }

    /// [`Producer::add_to_transaction`] for the partitions of `records` (their partitions
    /// in `chosen`), in one request.
    pub(super) async fn add_to_transactions(
        &self,
        records: &[ProducerRecord],
        chosen: &[PartitionId],
    ) -> Result<()> {
        let Some(txn) = &self.handle.shared.txn else {
            return Ok(());
        };
        let mut tps: Vec<TopicPartition> = Vec::new();
        for (record, &partition) in records.iter().zip(chosen) {
            if !tps
                .iter()
                .any(|tp| tp.partition == partition && tp.topic == record.topic)
            {
                tps.push(TopicPartition::new(&record.topic, partition));
            }
        }
        txn.add_partitions(&tps, self.handle.shared.config.request_timeout)
            .await
    }

    /// Whether `send` must check the transaction: the producer is transactional.
    pub(super) fn transactional(&self) -> Option<&Transaction> {
        self.handle.shared.txn.as_ref()
    }
}

impl Shared {
    /// A transactional producer whose batch needs a new epoch mid-transaction (its outcome
    /// is unknown, or the leader refused it out of order): the batches waiting for it fail
    /// and the transaction becomes abortable; `abort_transaction` bumps the epoch.
    pub(super) fn fail_blocked_transaction(&self) {
        let Some(txn) = &self.txn else { return };
        let blocked = self.lock().accumulator.take_blocked();
        if blocked.is_empty() {
            return;
        }
        let error = Error::InvalidArgument(
            "a batch's outcome is unknown or its partition's sequence broke, which needs a new \
             producer epoch"
                .to_owned(),
        );
        txn.make_abortable(&error);
        self.fail_unsent(blocked, &abortable(&error));
    }
}

/// Errors after which the producer can do nothing more.
fn fencing(error: &Error) -> bool {
    match error {
        Error::ProducerFenced { .. } => true,
        Error::Broker { code, .. } => matches!(
            code,
            ErrorCode::ProducerFenced
                | ErrorCode::InvalidProducerEpoch
                | ErrorCode::InvalidProducerIdMapping
                | ErrorCode::TransactionCoordinatorFenced
                | ErrorCode::TransactionalIdAuthorizationFailed
        ),
        _ => false,
    }
}

/// The error of an operation refused because the transaction must be aborted.
fn abortable(cause: &Error) -> Error {
    Error::TransactionAbortable {
        reason: cause.to_string(),
    }
}
