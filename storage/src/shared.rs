//! A [`PartitionLog`] shared between threads, with group commit.
//!
//! Appends write under the log's write lock (a page-cache copy, microseconds); waiting for
//! durability happens outside it. One fsync at a time runs per log: a [`crate::FlushJob`]
//! covering everything appended so far, run without any lock, that wakes everyone it
//! covered. Appends that arrive meanwhile queue behind it and are covered together by the
//! next fsync, so N concurrent appenders cost far fewer than N fsyncs (BENCHMARKS.md
//! measures how many fewer). Who runs the fsync: async callers ask the log's
//! [`Flusher`] ([`SharedLog::request_flush`]) and await [`SharedLog::durable`]; a blocking
//! caller of [`SharedLog::wait_durable`] runs it itself when no one else is.
//!
//! Every mutation goes through this type so the group-commit state stays true: a
//! truncation (or a failed fsync, which truncates the unflushed tail) starts a new
//! *generation*, and a waiter from an older generation fails instead of being acknowledged
//! by some later fsync of different data at the same offsets.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::{LeaderEpoch, Offset};

use crate::error::{Result, StorageError};
use crate::flusher::Flusher;
use crate::log::{AppendInfo, PartitionLog};
use crate::Durability;

/// Group-commit state, guarded by `SharedLog::flush_state`.
struct FlushState {
    /// Every offset below this is durable.
    flushed: Offset,
    /// A flusher is running a job right now.
    in_progress: bool,
    /// Bumped whenever appended-but-unflushed data is cut off.
    generation: u64,
    /// Why the last generation ended, for the waiters it failed.
    cut_reason: String,
    /// fsyncs run so far, for measurements.
    fsyncs: u64,
    /// The log is in its flusher's queue or being flushed by a flusher thread.
    scheduled: bool,
    /// A flush was asked for while `scheduled`: the flusher thread runs another after the
    /// one it runs (cleared before each, so an append during it sets it again).
    dirty: bool,
    /// Async waiters: the end offset each waits for, and how to wake it. Woken by the
    /// fsync that covers it, or all at once when their generation ends.
    waiters: Vec<(Offset, Waker)>,
}

/// Told of every group-commit fsync a [`SharedLog`] runs: how long it took and how many
/// records it made durable. The seam through which an owner measures the disk; storage
/// itself keeps no metrics and knows nothing of how they are exported.
pub trait FlushObserver: Send + Sync {
    /// A flush job covering `records` records ran for `elapsed` (successfully or not).
    fn flushed(&self, elapsed: Duration, records: u64);
}

/// A partition log for concurrent use: appends, reads and durable waits from many threads.
pub struct SharedLog {
    dir: PathBuf,
    /// The log. Mutations take the write lock; reads share the read lock.
    /// Lock order: `log` before `flush_state`, never the reverse.
    log: RwLock<PartitionLog>,
    /// Group commit: who flushes, how far it got, which generation is current.
    flush_state: Mutex<FlushState>,
    flushed_cv: Condvar,
    durability: Durability,
    /// A flusher thread is writing or syncing the runway ([`SharedLog::extend_runway`]).
    extending_runway: AtomicBool,
    /// Set (under the log's write lock) by [`SharedLog::quiesce`]: no runway any more.
    runway_closed: AtomicBool,
    /// Set (under the log's write lock) when the log is deleted: every later mutation fails
    /// and flushes write nothing, so a deleted log never writes into a directory that a new
    /// log of the same name may own by then.
    retired: AtomicBool,
    /// Told of each flush job, if the owner asked.
    observer: Option<Arc<dyn FlushObserver>>,
    /// Runs the fsyncs async waiters ask for.
    flusher: Flusher,
    /// Why an fsync of this log failed, the first time one did (see
    /// [`SharedLog::fsync_failure`]).
    fsync_failure: OnceLock<String>,
}

/// A ticket to wait for: the end offset of an append, in the generation it was made.
#[derive(Clone, Copy, Debug)]
pub struct DurableTicket {
    end: Offset,
    generation: u64,
}

impl DurableTicket {
    /// The offset below which everything is durable once the ticket resolves.
    pub fn end(&self) -> Offset {
        self.end
    }
}

impl SharedLog {
    /// Shares `log`; its configured durability decides what `append` waits for.
    pub fn new(log: PartitionLog) -> SharedLog {
        SharedLog::with_observer(log, None)
    }

    /// As [`SharedLog::new`], telling `observer` of every flush job.
    pub fn with_observer(log: PartitionLog, observer: Option<Arc<dyn FlushObserver>>) -> SharedLog {
        SharedLog {
            observer,
            dir: log.dir().to_path_buf(),
            durability: log.config().durability,
            flush_state: Mutex::new(FlushState {
                flushed: log.flushed_offset(),
                in_progress: false,
                generation: 0,
                cut_reason: String::new(),
                fsyncs: 0,
                scheduled: false,
                dirty: false,
                waiters: Vec::new(),
            }),
            log: RwLock::new(log),
            flushed_cv: Condvar::new(),
            retired: AtomicBool::new(false),
            extending_runway: AtomicBool::new(false),
            runway_closed: AtomicBool::new(false),
            flusher: Flusher::global(),
            fsync_failure: OnceLock::new(),
        }
    }

    /// Runs this log's requested fsyncs on `flusher` instead of the process-wide one.
    pub fn with_flusher(mut self, flusher: Flusher) -> SharedLog {
        self.flusher = flusher;
        self
    }

    fn state(&self) -> MutexGuard<'_, FlushState> {
        self.flush_state.lock().expect("flush state poisoned")
    }

    /// Appends as leader; under `Fsync` durability returns only once the batch is on disk.
    pub fn append(&self, batch: Bytes, leader_epoch: LeaderEpoch) -> Result<AppendInfo> {
        let (info, ticket) = self.append_no_wait(batch, leader_epoch)?;
        if self.durability == Durability::Fsync {
            self.wait_durable(ticket)?;
        }
        Ok(info)
    }

    /// Appends as leader without waiting; wait on the ticket for durability.
    pub fn append_no_wait(
        &self,
        batch: Bytes,
        leader_epoch: LeaderEpoch,
    ) -> Result<(AppendInfo, DurableTicket)> {
        let mut log = self.write();
        self.check_not_retired()?;
        let info = log.append(batch, leader_epoch)?;
        Ok((info, self.ticket(&info)))
    }

    /// Appends `batches` as leader under one hold of the log's lock, without waiting; the
    /// info spans them all. With `block` false it appends nothing and returns `Ok(None)`
    /// when another thread holds the log: the caller, on an async worker that must not
    /// wait for a lock (a cleaner swap can hold it for tens of ms), retries on a thread
    /// that may. A failure after some batches leaves those appended, as separate appends
    /// would.
    pub fn append_batches_no_wait(
        &self,
        batches: Vec<Bytes>,
        leader_epoch: LeaderEpoch,
        block: bool,
    ) -> Result<Option<(AppendInfo, DurableTicket)>> {
        let Some(mut log) = self.write_if(block) else {
            return Ok(None);
        };
        self.check_not_retired()?;
        let mut all: Option<AppendInfo> = None;
        for batch in batches {
            let info = log.append(batch, leader_epoch)?;
            all = Some(match all {
                None => info,
                Some(first) => AppendInfo {
                    base_offset: first.base_offset,
                    last_offset: info.last_offset,
                    max_timestamp: first.max_timestamp.max(info.max_timestamp),
                },
            });
        }
        let info = all.ok_or_else(|| {
            StorageError::io(
                "append",
                &self.dir,
                std::io::Error::other("an append of no batches"),
            )
        })?;
        Ok(Some((info, self.ticket(&info))))
    }

    /// Appends fetched batches as a follower, without waiting for durability. With
    /// `block` false it appends nothing and returns `Ok(None)` when another thread holds
    /// the log (see [`SharedLog::append_batches_no_wait`]).
    pub fn append_as_follower(
        &self,
        batches: Bytes,
        block: bool,
    ) -> Result<Option<(AppendInfo, DurableTicket)>> {
        let Some(mut log) = self.write_if(block) else {
            return Ok(None);
        };
        self.check_not_retired()?;
        let info = log.append_as_follower(batches)?;
        Ok(Some((info, self.ticket(&info))))
    }

    /// The write lock; with `block` false only when no other thread holds the log.
    fn write_if(&self, block: bool) -> Option<RwLockWriteGuard<'_, PartitionLog>> {
        if block {
            return Some(self.write());
        }
        match self.log.try_write() {
            Ok(log) => Some(log),
            Err(std::sync::TryLockError::WouldBlock) => None,
            Err(std::sync::TryLockError::Poisoned(_)) => panic!("log lock poisoned"),
        }
    }

    /// A ticket for offsets below `end` that are in the log already (a producer resent a
    /// batch the log has): waiting on it waits until they are durable.
    pub fn ticket_for(&self, end: Offset) -> DurableTicket {
        let _log = self.read();
        DurableTicket {
            end,
            generation: self.state().generation,
        }
    }

    /// A ticket for everything in the log now.
    pub fn ticket_for_log_end(&self) -> DurableTicket {
        let log = self.read();
        DurableTicket {
            end: log.log_end_offset(),
            generation: self.state().generation,
        }
    }

    /// The ticket for an append just made; call it with the log still locked, so no
    /// truncation can slip between the append and reading the generation.
    fn ticket(&self, info: &AppendInfo) -> DurableTicket {
        DurableTicket {
            end: info.last_offset.plus(1),
            generation: self.state().generation,
        }
    }

    /// Retires the log before its files are deleted: waits for every operation holding
    /// the log, then fails all later mutations with [`StorageError::Deleted`], makes
    /// flushes write nothing, and fails waiters for data not yet durable.
    pub fn retire(&self) {
        let log = self.write();
        self.retired.store(true, Ordering::Release);
        self.cut(&log, "the log was deleted".into());
    }

    /// Whether [`SharedLog::retire`] ran. Checked under the log lock, it is final.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    fn check_not_retired(&self) -> Result<()> {
        if self.is_retired() {
            return Err(StorageError::Deleted {
                path: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Truncates to `offset` (see [`PartitionLog::truncate_to`]); waiters for cut data fail.
    pub fn truncate_to(&self, offset: Offset) -> Result<()> {
        let mut log = self.write();
        self.check_not_retired()?;
        let result = log.truncate_to(offset);
        self.cut(&log, format!("the log was truncated to offset {offset}"));
        result
    }

    /// Empties the log and restarts it at `offset`; waiters for cut data fail.
    pub fn truncate_fully_and_start_at(&self, offset: Offset) -> Result<()> {
        let mut log = self.write();
        self.check_not_retired()?;
        let result = log.truncate_fully_and_start_at(offset);
        self.cut(
            &log,
            format!("the log was emptied and restarted at offset {offset}"),
        );
        result
    }

    /// Records, under the log lock, that data past the log's flushed offset may be gone.
    fn cut(&self, log: &PartitionLog, reason: String) {
        let mut state = self.state();
        state.flushed = state.flushed.min(log.flushed_offset());
        state.generation += 1;
        state.cut_reason = reason;
        let waiters = std::mem::take(&mut state.waiters);
        drop(state);
        self.flushed_cv.notify_all();
        waiters.into_iter().for_each(|(_, waker)| waker.wake());
    }

    /// Why a waiter of an ended generation fails.
    fn cut_error(&self, state: &FlushState) -> StorageError {
        StorageError::io(
            "fsync",
            &self.dir,
            std::io::Error::other(format!(
                "appended data was not made durable: {}",
                state.cut_reason
            )),
        )
    }

    /// Blocks until the ticket's offsets are on disk, fsyncing if no one else is. Fails if
    /// the data was cut off (truncation, or a failed fsync) before it became durable.
    pub fn wait_durable(&self, ticket: DurableTicket) -> Result<()> {
        let mut state = self.state();
        loop {
            if state.generation != ticket.generation {
                return Err(self.cut_error(&state));
            }
            if state.flushed >= ticket.end {
                return Ok(());
            }
            if state.in_progress {
                state = self.flushed_cv.wait(state).expect("flush state poisoned");
                continue;
            }
            state.in_progress = true;
            drop(state);
            let outcome = self.flush_once();
            state = self.state();
            state.in_progress = false;
            state.fsyncs += 1;
            let mut covered = Vec::new();
            if let Ok(flushed) = outcome {
                state.flushed = state.flushed.max(flushed);
                let flushed = state.flushed;
                state.waiters.retain(|(end, waker)| {
                    let done = *end <= flushed;
                    if done {
                        covered.push(waker.clone());
                    }
                    !done
                });
            }
            self.flushed_cv.notify_all();
            if !covered.is_empty() {
                drop(state);
                covered.into_iter().for_each(Waker::wake);
                state = self.state();
            }
            outcome?;
        }
    }

    /// Resolves once the ticket's offsets are on disk, or fails as
    /// [`SharedLog::wait_durable`] does; never blocks. The fsync is run by this log's
    /// flusher: ask for it with [`SharedLog::request_flush`] right after the append, so it
    /// starts before anyone awaits (awaiting asks too).
    pub fn durable(self: &Arc<Self>, ticket: DurableTicket) -> impl Future<Output = Result<()>> {
        let log = Arc::clone(self);
        std::future::poll_fn(move |cx| log.poll_durable(ticket, cx))
    }

    fn poll_durable(
        self: &Arc<Self>,
        ticket: DurableTicket,
        cx: &mut Context<'_>,
    ) -> Poll<Result<()>> {
        let mut state = self.state();
        if state.generation != ticket.generation {
            return Poll::Ready(Err(self.cut_error(&state)));
        }
        if state.flushed >= ticket.end {
            return Poll::Ready(Ok(()));
        }
        match state
            .waiters
            .iter_mut()
            .find(|(_, w)| w.will_wake(cx.waker()))
        {
            Some((end, _)) => *end = (*end).min(ticket.end),
            None => state.waiters.push((ticket.end, cx.waker().clone())),
        }
        drop(state);
        // Asked even when a flush is running: it may have begun before these offsets were
        // appended, and then only a flush asked for after it covers them. When the append
        // asked already, this costs a lock, or one flush turn that finds nothing to do.
        self.request_flush();
        Poll::Pending
    }

    /// Asks this log's flusher for an fsync of everything appended so far. Cheap; call it
    /// after every append whose durability someone awaits. A log is with one flusher
    /// thread at a time: asked while it is, that thread flushes again after its fsync.
    pub fn request_flush(self: &Arc<Self>) {
        let submit = {
            let mut state = self.state();
            state.dirty = true;
            !std::mem::replace(&mut state.scheduled, true)
        };
        if submit {
            self.flusher.submit(self);
        }
    }

    /// A flusher thread's turn with this log: everything appended until now goes to disk.
    /// Returns whether more was asked for meanwhile (the thread queues the log again, behind
    /// the others, so one busy log cannot starve them). A failure reaches the waiters
    /// through the generation the failed fsync cut.
    pub(crate) fn run_queued_flush(&self) -> bool {
        self.state().dirty = false;
        if let Err(e) = self.flush() {
            tracing::debug!(log = %self.dir.display(), "requested flush failed: {e}");
        }
        let mut state = self.state();
        if state.dirty {
            return true;
        }
        state.scheduled = false;
        drop(state);
        // Nothing is waiting for the disk now: the moment to write ahead. A flush asked for
        // meanwhile goes to another flusher thread, beside this one.
        self.extend_runway();
        false
    }

    /// Writes zeros ahead of the active segment's end when few are left, then fdatasyncs
    /// them, so that the next appends' fsyncs overwrite blocks the file has and commit no
    /// journal ([`PartitionLog::extend_runway`]). The fdatasync goes through a descriptor
    /// opened for it: an error it saw would be reported to it alone, so the group commit's
    /// own descriptor still sees any write-back failure of the log's data. A failure here
    /// only means no runway.
    fn extend_runway(&self) {
        if self.durability != Durability::Fsync
            || self.fsync_failure.get().is_some()
            || !self.read().runway_wanted()
            || self.extending_runway.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let written = {
            let mut log = self.write();
            match self.check_not_retired() {
                Ok(()) if self.runway_closed.load(Ordering::Acquire) => Ok(None),
                Ok(()) => log.extend_runway(),
                Err(e) => Err(e),
            }
        };
        let synced = match written {
            Ok(Some(path)) => std::fs::File::open(&path)
                .and_then(|file| file.sync_data())
                .map_err(|e| StorageError::io("fsync", &path, e)),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = synced {
            tracing::debug!(log = %self.dir.display(), "no runway written ahead: {e}");
        }
        self.extending_runway.store(false, Ordering::Release);
    }

    /// One flush job: everything appended until now. On failure the unflushed tail is cut
    /// off: its pages may never reach the disk, so it must not be read back or acked.
    fn flush_once(&self) -> Result<Offset> {
        let job = {
            let mut log = self.write();
            self.check_not_retired()?;
            log.begin_flush()
        };
        let Some(job) = job else {
            return Ok(self.read().flushed_offset());
        };
        let started = Instant::now();
        let result = job.run();
        let mut log = self.write();
        if let Some(observer) = &self.observer {
            let records = job.up_to().0.saturating_sub(log.flushed_offset().0);
            observer.flushed(started.elapsed(), records.max(0) as u64);
        }
        // Completing writes the recovery point by path: not into a deleted log's directory.
        self.check_not_retired()?;
        match result.and_then(|()| log.complete_flush(&job)) {
            Ok(()) => Ok(log.flushed_offset()),
            Err(e) => {
                let flushed = log.flushed_offset();
                tracing::error!(
                    "fsync failed ({e}); truncating the unflushed tail at offset {flushed}"
                );
                if let Err(cut) = log.truncate_to(flushed) {
                    tracing::error!("could not truncate after a failed fsync: {cut}");
                }
                let _ = self.fsync_failure.set(e.to_string());
                self.cut(&log, format!("fsync failed: {e}"));
                Err(e)
            }
        }
    }

    /// Flushes whatever is unflushed now (the background flush of `Replicated` durability).
    pub fn flush(&self) -> Result<()> {
        self.wait_durable(self.ticket_for_log_end())
    }

    /// Why an fsync of this log failed, if one ever did (the first failure). The failed
    /// fsync cut the unflushed tail off; whoever waited for it got the error, but under
    /// `Replicated` durability no one waits, and readers may already have seen the cut
    /// records, so the owner has to stop serving the log (whichever thread ran the fsync:
    /// a flusher's or its own).
    pub fn fsync_failure(&self) -> Option<&str> {
        self.fsync_failure.get().map(String::as_str)
    }

    /// Every offset below this is on disk.
    pub fn flushed_offset(&self) -> Offset {
        self.state().flushed
    }

    /// fsyncs run so far by group commit.
    pub fn fsync_count(&self) -> u64 {
        self.state().fsyncs
    }

    /// Shared access for reads and lookups.
    pub fn read(&self) -> RwLockReadGuard<'_, PartitionLog> {
        self.log.read().expect("log lock poisoned")
    }

    /// Shared access, when no thread holds (or waits for) the write lock.
    pub fn try_read(&self) -> Option<RwLockReadGuard<'_, PartitionLog>> {
        match self.log.try_read() {
            Ok(log) => Some(log),
            Err(std::sync::TryLockError::WouldBlock) => None,
            Err(std::sync::TryLockError::Poisoned(_)) => panic!("log lock poisoned"),
        }
    }

    /// Exclusive access for mutations that do not cut data: roll, retention, checkpoint.
    pub fn write(&self) -> RwLockWriteGuard<'_, PartitionLog> {
        self.log.write().expect("log lock poisoned")
    }

    /// What [`SharedLog::close`] does for a log that something else still holds (a graceful
    /// shutdown that cannot take it back): flushes, cuts the runway for good and
    /// checkpoints the recovery point, so the files hold batches only and the next open
    /// rescans nothing it need not. Appends may still come; they are flushed as ever.
    pub fn quiesce(&self) -> Result<()> {
        self.flush()?;
        let mut log = self.write();
        self.runway_closed.store(true, Ordering::Release);
        log.cut_runway()?;
        log.checkpoint()
    }

    /// Closes the log cleanly.
    pub fn close(self) -> Result<()> {
        self.log.into_inner().expect("log lock poisoned").close()
    }
}
