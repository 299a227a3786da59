//! Deleting segment files without stalling the fsyncs beside them.
//!
//! Unlinking a large file at once frees all of its blocks together, and on a filesystem
//! that discards freed blocks (ext4 mounted with `discard`, common on SSDs and virtual
//! disks) the discards queue ahead of other writes: every log's group-commit fdatasync
//! then waits for them (measured: one stalled fdatasync of 13-26 ms per 100 MB segment
//! deleted, against none when the file is cut down in steps first; BENCHMARKS.md).
//! RocksDB's `DeleteScheduler` deletes in steps for the same reason.
//!
//! So a log hands the segments it removes here, renamed with [`DELETED_SUFFIX`] (no longer
//! part of the log, durably, the moment the directory is synced). A background thread
//! removes them after [`DELETE_DELAY`] (Kafka's `file.delete.delay.ms`: a read still sending
//! from the file finishes first), each cut down by [`DELETE_STEP_BYTES`] at a time with a
//! pause between steps, then unlinked. Files left behind by a crash are removed when their
//! log is opened again ([`crate::PartitionLog`]'s recovery).

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Appended to the name of a segment file removed from its log and waiting for deletion.
pub(crate) const DELETED_SUFFIX: &str = ".deleted";
/// How long a removed segment's files stay before they are deleted.
pub(crate) const DELETE_DELAY: Duration = Duration::from_secs(10);
/// How much of a file one step cuts off.
pub(crate) const DELETE_STEP_BYTES: u64 = 8 << 20;
/// The pause between two steps (8 MiB every 10 ms: a 1 GiB segment takes ~1.3 s).
pub(crate) const DELETE_STEP_PAUSE: Duration = Duration::from_millis(10);

/// Files to delete once `not_before` has passed.
struct Job {
    paths: Vec<PathBuf>,
    not_before: Instant,
}

/// Deletes `paths` (already renamed out of their log) in the background, after `delay`.
pub(crate) fn delete_later(paths: Vec<PathBuf>, delay: Duration) {
    static QUEUE: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    let job = Job {
        paths,
        not_before: Instant::now() + delay,
    };
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("sluice-deleter".into())
            .spawn(move || {
                // Jobs come in deadline order (one delay for all; none for what a log's
                // open found left over, which then waits behind the others).
                for job in rx {
                    std::thread::sleep(job.not_before.saturating_duration_since(Instant::now()));
                    remove_all(&job.paths);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("no background deleter thread ({e}): removed segments are deleted by whoever removes them, without the delay");
        }
        tx
    });
    if let Err(mpsc::SendError(job)) = queue.send(job) {
        // No deleter thread: delete now, in steps still.
        remove_all(&job.paths);
    }
}

/// [`remove_in_steps`] for each of `paths`. A panic on one (a bug) must not keep the
/// others, or the deleter's later jobs, from going.
fn remove_all(paths: &[PathBuf]) {
    for path in paths {
        let step = std::panic::AssertUnwindSafe(|| {
            remove_in_steps(path, DELETE_STEP_BYTES, DELETE_STEP_PAUSE)
        });
        if std::panic::catch_unwind(step).is_err() {
            tracing::error!(path = %path.display(), "the deleter panicked on a file; it stays until its log is opened again");
        }
    }
}

/// Cuts `path` down by `step` bytes at a time, pausing `pause` between steps, then unlinks
/// it. A file already gone is fine; any other failure is logged (the file then waits for
/// the next open of its log).
pub(crate) fn remove_in_steps(path: &std::path::Path, step: u64, pause: Duration) {
    let cut = || -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        let mut len = file.metadata()?.len();
        while len > step {
            len -= step;
            file.set_len(len)?;
            std::thread::sleep(pause);
        }
        Ok(())
    };
    let removed = cut().and_then(|()| std::fs::remove_file(path));
    match removed {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), "deleting a removed segment's file: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_cut_down_in_steps_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.log.deleted");
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        remove_in_steps(&path, 4096, Duration::ZERO);
        assert!(!path.exists());
        // Gone already: nothing to do, nothing to say.
        remove_in_steps(&path, 4096, Duration::ZERO);
    }

    #[test]
    fn files_handed_over_are_deleted_after_the_delay() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..3)
            .map(|i| {
                let path = dir.path().join(format!("{i}.deleted"));
                std::fs::write(&path, b"x").unwrap();
                path
            })
            .collect();
        delete_later(paths.clone(), Duration::ZERO);
        let deadline = Instant::now() + Duration::from_secs(30);
        while paths.iter().any(|p| p.exists()) {
            assert!(
                Instant::now() < deadline,
                "the deleter did not delete {paths:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
