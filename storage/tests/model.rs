//! Model-based property test: random sequences of appends, reads, rolls, truncations,
//! retention, flushes, runways of zeros written ahead and (clean or unclean) reopens keep
//! the log equal to a model, a plain Vec of the batches it should hold, and its files
//! nothing but those batches beside the active segment's runway.

mod common;

use std::path::Path;

use bytes::{Bytes, BytesMut};
use common::*;
use proptest::prelude::*;
use sluice_protocol::batch::{set_base_offset, set_partition_leader_epoch, Batches};
use sluice_protocol::{LeaderEpoch, Offset};
use sluice_storage::{LogConfig, PartitionLog};

#[derive(Clone, Debug)]
enum Op {
    Append {
        n_records: usize,
        value_len: usize,
        new_epoch: bool,
    },
    Read {
        at: prop::sample::Index,
        max_bytes: u32,
        below_hw: prop::sample::Index,
    },
    Roll,
    Truncate {
        at: prop::sample::Index,
    },
    DeleteBefore {
        at: prop::sample::Index,
    },
    /// DeleteRecords: the log start moves to any offset up to the end.
    AdvanceStart {
        at: prop::sample::Index,
    },
    Flush,
    Runway,
    Reopen {
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..6, 0usize..300, prop::bool::weighted(0.1))
            .prop_map(|(n_records, value_len, new_epoch)| Op::Append { n_records, value_len, new_epoch }),
        3 => (any::<prop::sample::Index>(), 1u32..3000, any::<prop::sample::Index>())
            .prop_map(|(at, max_bytes, below_hw)| Op::Read { at, max_bytes, below_hw }),
        1 => Just(Op::Roll),
        1 => any::<prop::sample::Index>().prop_map(|at| Op::Truncate { at }),
        1 => any::<prop::sample::Index>().prop_map(|at| Op::DeleteBefore { at }),
        1 => any::<prop::sample::Index>().prop_map(|at| Op::AdvanceStart { at }),
        1 => Just(Op::Flush),
        2 => Just(Op::Runway),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

/// What the log should hold: its start offset and its batches with the bytes the leader
/// stamped.
struct Model {
    start: i64,
    batches: Vec<(i64, i64, Bytes)>,
    epoch: i32,
}

impl Model {
    fn end(&self) -> i64 {
        self.batches.last().map_or(self.start, |b| b.1 + 1)
    }
}

fn config(segment_bytes_max: u32, index_interval_bytes: u32) -> LogConfig {
    LogConfig {
        segment_bytes_max,
        index_interval_bytes,
        max_open_sealed_segments: 2,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn check_equal(dir: &Path, log: &PartitionLog, model: &Model) -> Result<(), TestCaseError> {
    let file_bytes: u64 = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    prop_assert_eq!(
        file_bytes,
        log.size_bytes() + log.runway_bytes(),
        "the .log files hold the batches and the active segment's runway"
    );
    prop_assert_eq!(log.log_start_offset().0, model.start);
    prop_assert_eq!(log.log_end_offset().0, model.end());
    let got: Vec<Bytes> = read_all(log, 700)
        .into_iter()
        .map(|b| b.into_bytes())
        .collect();
    let want: Vec<Bytes> = model.batches.iter().map(|b| b.2.clone()).collect();
    prop_assert_eq!(got, want);
    Ok(())
}

/// The base offsets of the segments in `dir`, from their files' names.
fn segment_bases(dir: &Path) -> Vec<i64> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .filter_map(|p| p.file_stem()?.to_str()?.parse().ok())
        .collect()
}

fn run(dir: &Path, ops: Vec<Op>, cfg: LogConfig) -> Result<(), TestCaseError> {
    let clock = clock();
    let mut log = Some(open(dir, cfg.clone(), &clock));
    let mut model = Model {
        start: 0,
        batches: Vec::new(),
        epoch: 0,
    };
    for (step, op) in ops.into_iter().enumerate() {
        let l = log.as_mut().unwrap();
        match op {
            Op::Append {
                n_records,
                value_len,
                new_epoch,
            } => {
                if new_epoch {
                    model.epoch += 1;
                }
                let raw = batch(
                    &format!("s{step}"),
                    n_records,
                    value_len,
                    1_700_000_000_000 + step as i64,
                );
                let info = l.append(raw.clone(), LeaderEpoch(model.epoch)).unwrap();
                prop_assert_eq!(info.base_offset.0, model.end());
                let mut stamped = BytesMut::from(&raw[..]);
                set_base_offset(&mut stamped, info.base_offset);
                set_partition_leader_epoch(&mut stamped, LeaderEpoch(model.epoch));
                model
                    .batches
                    .push((info.base_offset.0, info.last_offset.0, stamped.freeze()));
            }
            Op::Read {
                at,
                max_bytes,
                below_hw,
            } => {
                let span = (model.end() - model.start + 1) as usize;
                let offset = model.start + at.index(span) as i64;
                let hw = model.start + below_hw.index(span) as i64;
                let bytes = l.read(Offset(offset), max_bytes, Offset(hw)).unwrap();
                // The same batches for an answer, with the last offset.
                let slice = l
                    .read_records(Offset(offset), max_bytes, Offset(hw))
                    .unwrap();
                match &slice {
                    Some(slice) => prop_assert_eq!(&slice.records.to_bytes().unwrap(), &bytes),
                    None => prop_assert!(bytes.is_empty()),
                }
                let got: Vec<Bytes> = Batches::new(bytes)
                    .map(|b| b.unwrap().into_bytes())
                    .collect();
                let first = model.batches.iter().position(|b| b.1 >= offset);
                if let (Some(first_got), Some(i)) = (got.first(), first) {
                    prop_assert_eq!(
                        first_got,
                        &model.batches[i].2,
                        "read starts at the batch holding {}",
                        offset
                    );
                    for (k, g) in got.iter().enumerate() {
                        prop_assert_eq!(g, &model.batches[i + k].2);
                        prop_assert!(model.batches[i + k].1 < hw, "never past the high watermark");
                    }
                    let total: usize = got.iter().map(|g| g.len()).sum();
                    prop_assert!(got.len() == 1 || total <= max_bytes as usize);
                    let last = &model.batches[i + got.len() - 1];
                    prop_assert_eq!(slice.map(|s| s.last_offset.0), Some(last.1));
                    // As many as fit: the next batch crosses the HW, does not fit, or is in
                    // the next segment (a read stays in one).
                    if let Some(next) = model.batches.get(i + got.len()) {
                        prop_assert!(
                            next.1 >= hw
                                || total + next.2.len() > max_bytes as usize
                                || segment_bases(dir).contains(&next.0),
                            "the read stopped before batch {}..={} for no reason",
                            next.0,
                            next.1
                        );
                    }
                } else if let Some(i) = first {
                    // Empty only when the batch holding the offset crosses the HW.
                    prop_assert!(got.is_empty() && model.batches[i].1 >= hw);
                } else {
                    prop_assert!(got.is_empty(), "nothing to read at the log end");
                }
            }
            Op::Roll => l.roll().unwrap(),
            Op::Truncate { at } => {
                if model.end() > model.start {
                    let offset =
                        model.start + 1 + at.index((model.end() - model.start) as usize) as i64;
                    l.truncate_to(Offset(offset)).unwrap();
                    // The log ends where the batch holding `offset` began, which may be
                    // below a start moved inside it: the start comes down with it.
                    if let Some(cut) = model.batches.iter().find(|b| b.1 >= offset) {
                        model.start = model.start.min(cut.0);
                    }
                    model.batches.retain(|b| b.1 < offset);
                    prop_assert_eq!(l.log_end_offset().0, model.end());
                }
            }
            Op::DeleteBefore { at } => {
                let offset =
                    model.start + at.index((model.end() - model.start + 1) as usize) as i64;
                l.delete_before(Offset(offset)).unwrap();
                let new_start = l.log_start_offset().0;
                prop_assert!(
                    new_start >= model.start && (new_start <= offset || new_start == model.start)
                );
                prop_assert!(
                    new_start == model.start
                        || new_start == model.end()
                        || model.batches.iter().any(|b| b.0 == new_start)
                );
                model.batches.retain(|b| b.1 >= new_start);
                model.start = new_start;
            }
            Op::AdvanceStart { at } => {
                let offset =
                    model.start + at.index((model.end() - model.start + 1) as usize) as i64;
                l.advance_log_start(Offset(offset))
                    .unwrap()
                    .delete()
                    .unwrap();
                // Reads start at the batch holding the new start: it stays.
                model.start = offset;
                model.batches.retain(|b| b.1 >= offset);
            }
            Op::Runway => {
                let before = l.runway_bytes();
                if l.extend_runway().unwrap().is_some() {
                    prop_assert!(l.runway_bytes() > before);
                }
            }
            Op::Flush => {
                l.flush().unwrap();
                prop_assert_eq!(l.flushed_offset().0, model.end());
            }
            Op::Reopen { clean } => {
                let l = log.take().unwrap();
                if clean {
                    l.close().unwrap();
                } else {
                    drop(l);
                }
                let reopened = open(dir, cfg.clone(), &clock);
                prop_assert!(reopened.recovery_report().truncated.is_none());
                log = Some(reopened);
            }
        }
        check_equal(dir, log.as_ref().unwrap(), &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(
        ops in proptest::collection::vec(op(), 1..40),
        segment_bytes_max in 1800u32..5000,
        index_interval_bytes in 1u32..600,
    ) {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), ops, config(segment_bytes_max, index_interval_bytes))?;
    }
}
