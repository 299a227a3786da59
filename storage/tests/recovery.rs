//! Crash recovery: a log reopened after an unclean stop, with its newest segment cut at
//! every byte of its last batch, a byte flipped inside a batch, or its indexes deleted or
//! damaged, keeps everything before the damage and nothing after, and says so.

mod common;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use common::*;
use sluice_protocol::{LeaderEpoch, Offset};
use sluice_storage::LogConfig;

fn files_with(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

fn cut_file(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Appends 10 batches (offsets 0..40) without closing: an unclean stop. Returns the byte
/// positions where each batch starts in the single segment.
fn crashed_log(dir: &Path, config: LogConfig) -> Vec<u64> {
    let clock = clock();
    let mut log = open(dir, config, &clock);
    let mut starts = Vec::new();
    for i in 0..10 {
        starts.push(log.size_bytes());
        log.append(
            batch(&format!("b{i}"), 4, 30, 1_700_000_000_000 + i),
            LeaderEpoch(1 + i as i32 / 5),
        )
        .unwrap();
    }
    starts.push(log.size_bytes());
    starts
}

#[test]
fn cut_at_every_byte_of_the_last_batch() {
    let template = tempfile::tempdir().unwrap();
    let starts = crashed_log(template.path(), LogConfig::default());
    let (last_start, end) = (starts[9], starts[10]);
    let template_bytes = fs::read(&files_with(template.path(), "log")[0]).unwrap();
    for cut in last_start..end {
        let dir = tempfile::tempdir().unwrap();
        for f in fs::read_dir(template.path()).unwrap() {
            let f = f.unwrap();
            fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
        }
        cut_file(&files_with(dir.path(), "log")[0], cut);
        let log = open(dir.path(), LogConfig::default(), &clock());
        assert_eq!(log.log_end_offset(), Offset(36), "cut at byte {cut}");
        assert_eq!(read_all(&log, 1 << 20).len(), 9, "cut at byte {cut}");
        let report = log.recovery_report();
        assert!(!report.clean_shutdown);
        // A tail of zeros alone (the batch's base offset begins with them) is what the
        // runway leaves: cut without a report. Anything else torn is reported.
        if template_bytes[last_start as usize..cut as usize]
            .iter()
            .any(|&b| b != 0)
        {
            let cut = report.truncated.clone().expect("a torn tail is reported");
            assert_eq!(cut.file.extension().unwrap(), "log");
            assert_eq!(u64::from(cut.position), last_start);
        }
        // Epoch 2 started at offset 20 and survives; nothing claims offsets past the end.
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(2)),
            Some((LeaderEpoch(2), Offset(36)))
        );
    }
}

#[test]
fn a_flipped_byte_cuts_from_the_damaged_batch_on() {
    for victim in [0usize, 4, 9] {
        let dir = tempfile::tempdir().unwrap();
        let starts = crashed_log(dir.path(), LogConfig::default());
        let path = files_with(dir.path(), "log")[0].clone();
        let mut bytes = fs::read(&path).unwrap();
        let at = (starts[victim] + 40) as usize; // inside the CRC-covered header
        bytes[at] ^= 0x40;
        fs::write(&path, bytes).unwrap();
        let log = open(dir.path(), LogConfig::default(), &clock());
        assert_eq!(
            log.log_end_offset(),
            Offset(4 * victim as i64),
            "damage in batch {victim}"
        );
        assert_eq!(read_all(&log, 1 << 20).len(), victim);
        let cut = log.recovery_report().truncated.clone().unwrap();
        assert_eq!(u64::from(cut.position), starts[victim]);
        assert!(cut.reason.contains("CRC"), "{}", cut.reason);
    }
}

#[test]
fn damage_in_an_older_segment_drops_the_segments_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), small_config(), &clock);
    fill(&mut log, 60, 4, 100, 1);
    let n_segments = log.segment_count();
    drop(log); // unclean: the recovery point is where open() left it, offset 0
    let logs = files_with(dir.path(), "log");
    assert_eq!(logs.len(), n_segments);
    let mut bytes = fs::read(&logs[1]).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 1;
    fs::write(&logs[1], bytes).unwrap();
    let log = open(dir.path(), small_config(), &clock);
    let report = log.recovery_report().clone();
    assert_eq!(report.segments_deleted, n_segments - 2);
    assert_eq!(log.segment_count(), 2);
    let batches = read_all(&log, 1 << 20);
    assert_eq!(
        batches.last().unwrap().header().next_offset(),
        log.log_end_offset()
    );
    assert!(files_with(dir.path(), "log").len() == 2);
}

#[test]
fn a_clean_restart_skips_the_rescan_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), small_config(), &clock);
    fill(&mut log, 60, 4, 100, 3);
    let before = offsets(&read_all(&log, 1 << 20));
    log.close().unwrap();
    let mut log = open(dir.path(), small_config(), &clock);
    let report = log.recovery_report();
    assert!(report.clean_shutdown);
    assert_eq!(report.segments_rescanned, 0);
    assert_eq!(offsets(&read_all(&log, 1 << 20)), before);
    // The reopened active segment takes appends and indexes them.
    fill(&mut log, 5, 4, 100, 3);
    assert_eq!(log.log_end_offset(), Offset(260));
    drop(log);
    let log = open(dir.path(), small_config(), &clock);
    assert!(!log.recovery_report().clean_shutdown);
    assert_eq!(read_all(&log, 300).len(), 65);
}

#[test]
fn deleted_or_damaged_indexes_are_rebuilt() {
    for clean in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let clock = clock();
        let mut log = open(dir.path(), small_config(), &clock);
        fill(&mut log, 60, 4, 100, 1);
        let before = offsets(&read_all(&log, 1 << 20));
        let by_time = log.offset_for_timestamp(1_700_000_000_030).unwrap();
        if clean {
            log.close().unwrap();
        } else {
            log.flush().unwrap();
            drop(log);
        }
        let indexes = files_with(dir.path(), "index");
        let time_indexes = files_with(dir.path(), "timeindex");
        fs::remove_file(&indexes[0]).unwrap();
        fs::write(&indexes[1], b"garbage!").unwrap();
        let mut t = fs::read(&time_indexes[2]).unwrap();
        t.truncate(t.len() - 3);
        fs::write(&time_indexes[2], t).unwrap();
        let mut index = fs::read(&indexes[3]).unwrap();
        index[10] ^= 0xff; // an entry out of order
        fs::write(&indexes[3], index).unwrap();

        let log = open(dir.path(), small_config(), &clock);
        assert!(
            log.recovery_report().segments_rescanned >= 4,
            "clean={clean}"
        );
        assert!(log.recovery_report().truncated.is_none());
        assert_eq!(offsets(&read_all(&log, 1 << 20)), before);
        for offset in 0..log.log_end_offset().0 {
            let bytes = log.read(Offset(offset), 1, Offset(i64::MAX)).unwrap();
            let batch = sluice_protocol::batch::RecordBatch::validate(bytes).unwrap();
            assert!(
                batch.header().base_offset.0 <= offset && offset <= batch.header().last_offset().0
            );
        }
        assert_eq!(
            log.offset_for_timestamp(1_700_000_000_030).unwrap(),
            by_time
        );
        assert!(files_with(dir.path(), "index").len() == log.segment_count());
    }
}

#[test]
fn a_lost_epoch_checkpoint_is_rebuilt_from_the_batches() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), small_config(), &clock);
    fill(&mut log, 10, 4, 100, 1);
    fill(&mut log, 10, 4, 100, 7);
    let entries = log.epoch_entries().to_vec();
    log.close().unwrap();
    fs::remove_file(dir.path().join("leader-epoch-checkpoint")).unwrap();
    let log = open(dir.path(), small_config(), &clock);
    assert_eq!(log.epoch_entries(), entries.as_slice());
}

/// The length of the single `.log` file in `dir`.
fn log_file_len(dir: &Path) -> u64 {
    fs::metadata(&files_with(dir, "log")[0]).unwrap().len()
}

#[test]
fn the_runway_of_zeros_is_no_damage_and_appends_overwrite_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    fill(&mut log, 3, 4, 30, 1);
    assert!(log.extend_runway().unwrap().is_some());
    let runway = log.runway_bytes();
    assert!(runway >= 256 << 10, "{runway}");
    assert_eq!(log_file_len(dir.path()), log.size_bytes() + runway);
    // Appends go into the runway: the file does not grow.
    fill(&mut log, 4, 4, 30, 1);
    assert_eq!(
        log_file_len(dir.path()),
        log.size_bytes() + log.runway_bytes()
    );
    assert!(log.runway_bytes() < runway);
    let before = offsets(&read_all(&log, 1 << 20));
    drop(log); // unclean: the runway is still there

    let mut log = open(dir.path(), LogConfig::default(), &clock);
    let report = log.recovery_report().clone();
    assert!(!report.clean_shutdown);
    assert_eq!(
        report.truncated, None,
        "zeros never written over are not damage"
    );
    assert_eq!(offsets(&read_all(&log, 1 << 20)), before);
    assert_eq!(log_file_len(dir.path()), log.size_bytes());
    assert!(log.extend_runway().unwrap().is_some());
    let size = log.size_bytes();
    log.close().unwrap();
    // A clean close leaves batches only, and the next open trusts the file's length.
    assert_eq!(log_file_len(dir.path()), size);
    let log = open(dir.path(), LogConfig::default(), &clock);
    assert!(log.recovery_report().clean_shutdown);
    assert_eq!(log.recovery_report().segments_rescanned, 0);
    assert_eq!(offsets(&read_all(&log, 1 << 20)), before);
}

#[test]
fn a_batch_torn_inside_the_runway_is_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    fill(&mut log, 3, 4, 30, 1);
    log.extend_runway().unwrap();
    let last_start = log.size_bytes();
    fill(&mut log, 1, 4, 30, 1);
    let end = log.size_bytes();
    drop(log);
    // The last batch's second half never reached the disk: zeros, as the runway had.
    let path = files_with(dir.path(), "log")[0].clone();
    let mut bytes = fs::read(&path).unwrap();
    let half = ((last_start + end) / 2) as usize;
    bytes[half..end as usize].fill(0);
    fs::write(&path, bytes).unwrap();

    let log = open(dir.path(), LogConfig::default(), &clock);
    assert_eq!(log.log_end_offset(), Offset(12));
    let cut = log
        .recovery_report()
        .truncated
        .clone()
        .expect("a torn batch is damage");
    assert_eq!(u64::from(cut.position), last_start);
    assert_eq!(log_file_len(dir.path()), last_start);
}

#[test]
fn zeros_at_the_end_of_an_older_segment_are_damage() {
    // Only the last segment has a runway (sealing cuts it): zeros after an older
    // segment's batches mean its end never reached the disk, and what follows goes.
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), small_config(), &clock);
    fill(&mut log, 60, 4, 100, 1);
    let n_segments = log.segment_count();
    drop(log);
    let logs = files_with(dir.path(), "log");
    let file = OpenOptions::new().append(true).open(&logs[1]).unwrap();
    std::io::Write::write_all(&mut &file, &[0u8; 4096]).unwrap();
    let log = open(dir.path(), small_config(), &clock);
    let report = log.recovery_report().clone();
    assert!(report.truncated.is_some());
    assert_eq!(report.segments_deleted, n_segments - 2);
    assert_eq!(log.segment_count(), 2);
}
