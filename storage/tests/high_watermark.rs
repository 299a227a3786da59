//! The high-watermark checkpoint: what the owner checkpoints comes back on open, capped at
//! the log end that recovery kept; a truncation lowers it before anything can be appended
//! at the cut offsets; a missing or damaged file is the log start and never an error.

mod common;

use std::fs::{self, OpenOptions};
use std::path::Path;
use std::sync::Arc;

use common::*;
use sluice_protocol::Offset;
use sluice_storage::{Clock, PartitionLog};

const FILE: &str = "high-watermark-checkpoint";

/// A log of 10 batches of 4 records (offsets 0..40) in `dir`, starting at `start`.
fn log_of_40(dir: &Path, start: i64) -> PartitionLog {
    let mut log = open(dir, small_config(), &clock());
    if start > 0 {
        log.truncate_fully_and_start_at(Offset(start)).unwrap();
    }
    fill(&mut log, 10, 4, 30, 1);
    log
}

fn reopen(dir: &Path) -> PartitionLog {
    open(dir, small_config(), &clock())
}

#[test]
fn a_checkpointed_high_watermark_comes_back_after_a_clean_or_unclean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_of_40(dir.path(), 0);
    assert_eq!(log.checkpointed_high_watermark(), Offset(0), "none yet");
    log.checkpoint_high_watermark(Offset(24)).unwrap();
    assert_eq!(log.checkpointed_high_watermark(), Offset(24));
    log.close().unwrap();
    let mut log = reopen(dir.path());
    assert_eq!(log.checkpointed_high_watermark(), Offset(24));
    log.checkpoint_high_watermark(Offset(32)).unwrap();
    drop(log); // unclean
    assert_eq!(reopen(dir.path()).checkpointed_high_watermark(), Offset(32));
}

#[test]
fn a_high_watermark_past_the_log_end_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_of_40(dir.path(), 0);
    log.checkpoint_high_watermark(Offset(1000)).unwrap();
    assert_eq!(log.checkpointed_high_watermark(), Offset(40));
    drop(log);
    assert_eq!(reopen(dir.path()).checkpointed_high_watermark(), Offset(40));
}

#[test]
fn recovery_that_cuts_below_the_high_watermark_caps_it_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_of_40(dir.path(), 0);
    log.checkpoint_high_watermark(Offset(40)).unwrap();
    let segment = log.dir().join("00000000000000000000.log");
    let one_batch = log.size_bytes() / 10;
    let segments = log.segment_count();
    drop(log); // unclean
    assert_eq!(segments, 1, "the test cuts the only segment");
    let len = fs::metadata(&segment).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - one_batch / 2)
        .unwrap();
    let mut log = reopen(dir.path());
    assert_eq!(log.log_end_offset(), Offset(36), "the torn batch is cut");
    assert_eq!(log.checkpointed_high_watermark(), Offset(36));
    // Other records land at 36..40 now; a restart must not count them as committed.
    fill(&mut log, 1, 4, 30, 2);
    drop(log);
    assert_eq!(reopen(dir.path()).checkpointed_high_watermark(), Offset(36));
}

#[test]
fn a_truncation_lowers_the_high_watermark_before_later_appends() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_of_40(dir.path(), 0);
    log.checkpoint_high_watermark(Offset(40)).unwrap();
    log.truncate_to(Offset(20)).unwrap();
    assert_eq!(log.checkpointed_high_watermark(), Offset(20));
    fill(&mut log, 5, 4, 30, 2);
    assert_eq!(log.log_end_offset(), Offset(40));
    drop(log); // unclean, before any new checkpoint
    assert_eq!(reopen(dir.path()).checkpointed_high_watermark(), Offset(20));

    let mut log = reopen(dir.path());
    log.truncate_fully_and_start_at(Offset(100)).unwrap();
    assert_eq!(
        log.checkpointed_high_watermark(),
        Offset(100),
        "not below the start"
    );
    drop(log);
    assert_eq!(
        reopen(dir.path()).checkpointed_high_watermark(),
        Offset(100)
    );
}

/// Damages the checkpoint of a log of offsets `start..start + 40` checkpointed at
/// `start + 24` with `damage`, and checks the reopened log starts at its log start.
fn check_damaged(start: i64, what: &str, damage: impl Fn(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_of_40(dir.path(), start);
    log.checkpoint_high_watermark(Offset(start + 24)).unwrap();
    drop(log);
    damage(&dir.path().join(FILE));
    let log = PartitionLog::open(dir.path(), small_config(), clock() as Arc<dyn Clock>)
        .unwrap_or_else(|e| panic!("{what}: a damaged checkpoint stopped the open: {e}"));
    assert_eq!(
        log.checkpointed_high_watermark(),
        Offset(start),
        "{what}: the high watermark starts at the log start"
    );
    assert_eq!(
        log.log_end_offset(),
        Offset(start + 40),
        "{what}: the log is whole"
    );
}

/// Writes `content` with a right checksum.
fn with_crc(content: &[u8], p: &Path) {
    let mut bytes = content.to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(content).to_be_bytes());
    fs::write(p, bytes).unwrap();
}

#[test]
fn a_missing_or_damaged_checkpoint_is_the_log_start() {
    type Damage = fn(&Path);
    let flip: Damage = |p| {
        let mut bytes = fs::read(p).unwrap();
        bytes[9] ^= 0x01;
        fs::write(p, bytes).unwrap();
    };
    let cut: Damage = |p| {
        let bytes = fs::read(p).unwrap();
        fs::write(p, &bytes[..bytes.len() - 3]).unwrap();
    };
    let empty: Damage = |p| fs::write(p, b"").unwrap();
    let missing: Damage = |p| fs::remove_file(p).unwrap();
    // Right checksums around the wrong content: another version, another file's magic,
    // a body of the wrong size.
    let version: Damage = |p| {
        let mut content = fs::read(p).unwrap();
        content.truncate(content.len() - 4);
        content[4] = 2;
        with_crc(&content, p);
    };
    let magic: Damage = |p| with_crc(b"SLRP\x01\0\0\0\0\0\0\0\x18", p);
    let size: Damage = |p| with_crc(b"SLHW\x01\0\0\0\x18", p);
    for start in [0, 100] {
        for (what, damage) in [
            ("a flipped byte", flip),
            ("a torn file", cut),
            ("an empty file", empty),
            ("no file", missing),
            ("a newer version", version),
            ("another format", magic),
            ("a short body", size),
        ] {
            check_damaged(start, what, damage);
        }
    }
}
