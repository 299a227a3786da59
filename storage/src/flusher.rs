//! Group-commit fsyncs on threads of their own, so that async code never blocks on a disk.
//!
//! An appender asks for a flush ([`SharedLog::request_flush`]) right after its append; an
//! idle flusher thread takes the log at once and fsyncs everything appended until then,
//! and appends that arrive meanwhile ask again and are covered by the next fsync. Waiters
//! await [`SharedLog::durable`], which the fsync covering them wakes. A flush therefore
//! starts the moment the disk is idle and a write is pending, never on a timer, and an
//! acknowledgement costs no thread of its own: before, each waiter held a blocking thread
//! (N waiters, N threads and two thread hand-offs each), which at 100,000 small records/s
//! was most of the broker's context switches (BENCHMARKS.md, "Acknowledgement latency").

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use crate::shared::SharedLog;

/// The flusher threads a [`Flusher`] starts unless told otherwise: enough for fsyncs of
/// several partitions to overlap (the disk's queue, and the filesystem's journal, can
/// batch them), few enough to be nothing when idle.
pub const DEFAULT_FLUSH_THREADS: usize = 8;

/// A pool of threads that run the group-commit fsyncs of the logs that ask. Cheap to
/// clone; every log holds a clone, and the threads stop once every clone is gone.
#[derive(Clone)]
pub struct Flusher {
    owner: Arc<Owner>,
}

/// Stops the threads when the last [`Flusher`] handle goes.
struct Owner {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Mutex<Queue>,
    more: Condvar,
}

struct Queue {
    /// Logs waiting for a flusher thread, each at most once (while it is `scheduled`).
    logs: VecDeque<Arc<SharedLog>>,
    stopping: bool,
}

impl Flusher {
    /// Starts `threads` flusher threads (at least one).
    pub fn start(threads: usize) -> std::io::Result<Flusher> {
        let inner = Arc::new(Inner {
            queue: Mutex::new(Queue {
                logs: VecDeque::new(),
                stopping: false,
            }),
            more: Condvar::new(),
        });
        for i in 0..threads.max(1) {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new()
                .name(format!("sluice-flush-{i}"))
                .spawn(move || inner.run())?;
        }
        Ok(Flusher {
            owner: Arc::new(Owner { inner }),
        })
    }

    /// The process-wide flusher of logs opened without one: started on first use with
    /// [`DEFAULT_FLUSH_THREADS`] threads.
    pub fn global() -> Flusher {
        static GLOBAL: OnceLock<Flusher> = OnceLock::new();
        GLOBAL
            .get_or_init(|| Flusher::start(DEFAULT_FLUSH_THREADS).expect("start flusher threads"))
            .clone()
    }

    /// Queues `log` for a flush. The caller has marked it scheduled. The log holds a
    /// clone of this flusher, so its threads are running.
    pub(crate) fn submit(&self, log: &Arc<SharedLog>) {
        self.owner.inner.lock().logs.push_back(Arc::clone(log));
        self.owner.inner.more.notify_one();
    }
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher")
            .field("queued", &self.owner.inner.lock().logs.len())
            .finish()
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.inner.lock().stopping = true;
        self.inner.more.notify_all();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().expect("flusher queue poisoned")
    }

    /// One flusher thread: flushes queued logs in turn; exits once every handle is gone
    /// (no log is left to queue).
    fn run(&self) {
        loop {
            let log = {
                let mut queue = self.lock();
                loop {
                    if let Some(log) = queue.logs.pop_front() {
                        break log;
                    }
                    if queue.stopping {
                        return;
                    }
                    queue = self.more.wait(queue).expect("flusher queue poisoned");
                }
            };
            if log.run_queued_flush() {
                // Asked again during the fsync: behind the others. Alone, this thread
                // takes it straight back, with no hand-off to another thread.
                self.lock().logs.push_back(log);
            }
        }
    }
}
