use super::*;

fn stamp(epoch: i16, first_seq: i32, n: i32) -> Stamp {
    Stamp {
        producer_id: 7,
        epoch,
        first_seq,
        last_seq: add_seq(first_seq, n - 1),
        max_timestamp: 1_000,
        transactional: false,
    }
}

/// Checks and records like a leader: the offsets of an appended batch follow `next`.
fn write(states: &mut ProducerStates, s: Stamp, next: &mut i64) -> Result<Verdict, ApiError> {
    let verdict = states.check(&s)?;
    if verdict == Verdict::Append {
        let n = i64::from(s.last_seq.wrapping_sub(s.first_seq)) + 1;
        states.record(&s, Offset(*next), Offset(*next + n - 1), 1_000);
        *next += n;
    }
    Ok(verdict)
}

#[test]
fn a_resent_batch_gets_its_original_offsets() {
    let mut states = ProducerStates::default();
    let mut next = 0;
    assert_eq!(
        write(&mut states, stamp(0, 0, 3), &mut next).unwrap(),
        Verdict::Append
    );
    assert_eq!(
        write(&mut states, stamp(0, 3, 2), &mut next).unwrap(),
        Verdict::Append
    );
    match write(&mut states, stamp(0, 0, 3), &mut next).unwrap() {
        Verdict::Duplicate(meta) => {
            assert_eq!((meta.base_offset, meta.last_offset), (Offset(0), Offset(2)))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(next, 5, "nothing written twice");
}

#[test]
fn a_gap_in_the_sequence_is_out_of_order() {
    let mut states = ProducerStates::default();
    let mut next = 0;
    write(&mut states, stamp(0, 0, 3), &mut next).unwrap();
    let err = write(&mut states, stamp(0, 5, 1), &mut next).unwrap_err();
    assert_eq!(err.code, ErrorCode::OutOfOrderSequenceNumber);
    assert!(err.message.contains("expected 3"), "{}", err.message);
}

#[test]
fn an_unknown_producer_starts_at_sequence_zero() {
    let mut states = ProducerStates::default();
    let mut next = 0;
    // A pipelined batch that arrives before the producer's first one here (which the
    // leader refused, or which went to another leader) is not taken.
    let err = write(&mut states, stamp(0, 3, 1), &mut next).unwrap_err();
    assert_eq!(err.code, ErrorCode::OutOfOrderSequenceNumber);
    assert!(
        err.message.contains("must have sequence 0"),
        "{}",
        err.message
    );
    assert_eq!(
        write(&mut states, stamp(0, 0, 3), &mut next).unwrap(),
        Verdict::Append
    );
    assert_eq!(
        write(&mut states, stamp(0, 3, 1), &mut next).unwrap(),
        Verdict::Append
    );
}

#[test]
fn an_older_epoch_is_fenced_and_a_new_one_starts_at_zero() {
    let mut states = ProducerStates::default();
    let mut next = 0;
    write(&mut states, stamp(1, 0, 2), &mut next).unwrap();
    let fenced = write(&mut states, stamp(0, 2, 1), &mut next).unwrap_err();
    assert_eq!(fenced.code, ErrorCode::InvalidProducerEpoch);
    let bad_start = write(&mut states, stamp(2, 4, 1), &mut next).unwrap_err();
    assert_eq!(bad_start.code, ErrorCode::OutOfOrderSequenceNumber);
    assert_eq!(
        write(&mut states, stamp(2, 0, 1), &mut next).unwrap(),
        Verdict::Append
    );
    assert_eq!(states.get(7).unwrap().epoch, 2);
}

#[test]
fn only_the_last_five_batches_are_remembered() {
    let mut states = ProducerStates::default();
    let mut next = 0;
    for seq in 0..7 {
        write(&mut states, stamp(0, seq, 1), &mut next).unwrap();
    }
    assert_eq!(states.get(7).unwrap().batches.len(), BATCHES_KEPT);
    // Within the window: a duplicate. Before it: a gap, never a second write.
    assert!(matches!(
        write(&mut states, stamp(0, 2, 1), &mut next),
        Ok(Verdict::Duplicate(_))
    ));
    assert_eq!(
        write(&mut states, stamp(0, 1, 1), &mut next)
            .unwrap_err()
            .code,
        ErrorCode::OutOfOrderSequenceNumber
    );
}

#[test]
fn sequences_wrap_after_i32_max() {
    let mut states = ProducerStates::default();
    let mut next = 0;
    // A producer that has written 2^31 - 1 records here already.
    states.record(&stamp(0, i32::MAX - 6, 5), Offset(0), Offset(4), 1_000);
    write(&mut states, stamp(0, i32::MAX - 1, 2), &mut next).unwrap();
    assert_eq!(states.get(7).unwrap().batches[1].last_seq, i32::MAX);
    assert_eq!(
        write(&mut states, stamp(0, 0, 1), &mut next).unwrap(),
        Verdict::Append
    );
}

#[test]
fn idle_producers_expire() {
    let mut states = ProducerStates::default();
    let mut next = 0;
    write(&mut states, stamp(0, 0, 1), &mut next).unwrap();
    assert_eq!(states.expire(500), 0);
    assert_eq!(states.expire(2_000), 1);
    assert!(states.is_empty());
}

#[test]
fn recorded_batches_come_from_their_headers() {
    use sluice_protocol::batch::{set_base_offset, BatchBuilder, ProducerStamp};
    let mut builder = BatchBuilder::with_capacity(
        ProducerStamp {
            producer_id: 7,
            producer_epoch: 3,
            base_sequence: 10,
        },
        0,
    );
    builder.append(1_000, None, Some(b"a"), &[]);
    builder.append(1_000, None, Some(b"b"), &[]);
    let mut batch = builder.build().to_vec();
    set_base_offset(&mut batch, Offset(40));
    let mut plain = BatchBuilder::new();
    plain.append(1_000, None, Some(b"c"), &[]);
    let mut records = batch.clone();
    records.extend_from_slice(&plain.build());
    let mut states = ProducerStates::default();
    states.record_batches(&Bytes::from(records), 1_000);
    assert_eq!(states.len(), 1);
    let entry = states.get(7).unwrap();
    assert_eq!(entry.epoch, 3);
    assert_eq!(
        entry.batches[0],
        BatchMeta {
            first_seq: 10,
            last_seq: 11,
            base_offset: Offset(40),
            last_offset: Offset(41),
        }
    );
}

#[test]
fn the_snapshot_is_versioned_and_checksummed_and_an_old_json_one_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut states = ProducerStates::default();
    let mut next = 0;
    write(&mut states, stamp(0, 0, 3), &mut next).unwrap();

    // An earlier build's JSON snapshot is read when there is no versioned one.
    let legacy = dir.path().join(LEGACY_SNAPSHOT_FILE);
    let json = serde_json::to_vec(&SnapshotRef {
        offset: Offset(3),
        states: &states,
    })
    .unwrap();
    std::fs::write(&legacy, json).unwrap();
    let loaded = Snapshot::load(dir.path()).expect("the legacy snapshot");
    assert_eq!(loaded.offset, Offset(3));

    // Saving writes the versioned file and retires the legacy one.
    states.save(dir.path(), Offset(3)).unwrap();
    assert!(!legacy.exists());
    let file = dir.path().join(SNAPSHOT_FILE);
    assert_eq!(&std::fs::read(&file).unwrap()[..5], b"SLPS\x01");
    assert_eq!(Snapshot::load(dir.path()).unwrap().offset, Offset(3));

    // A damaged snapshot is ignored (the log has everything it had), not trusted.
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&file, bytes).unwrap();
    assert!(Snapshot::load(dir.path()).is_none());
    Snapshot::remove(dir.path());
    assert!(!file.exists());
}

/// `aborted_between` (a binary search over the aborts in marker order) answers as a scan
/// of every abort would, for every range of offsets, with transactions of three producers
/// interleaved, committed and aborted.
#[test]
fn aborted_between_finds_what_a_scan_of_every_abort_finds() {
    let mut states = ProducerStates::default();
    let mut aborted_model: Vec<(i64, Offset, Offset)> = Vec::new();
    let mut open: HashMap<i64, Offset> = HashMap::new();
    let mut seq: HashMap<i64, i32> = HashMap::new();
    let mut rng = 0x9e37_79b9_u64;
    let mut offset = 0i64;
    while offset < 300 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let producer = (rng % 3) as i64;
        if open.contains_key(&producer) && rng.is_multiple_of(4) {
            let kind = if rng.is_multiple_of(8) {
                ControlType::Commit
            } else {
                ControlType::Abort
            };
            let marker = ControlMarker {
                kind,
                coordinator_epoch: 0,
            };
            states.record_marker(producer, 0, marker, Offset(offset), 1_000);
            let first = open.remove(&producer).unwrap();
            if kind == ControlType::Abort {
                aborted_model.push((producer, first, Offset(offset)));
            }
            offset += 1;
            continue;
        }
        let n = 1 + (rng % 3) as i32;
        let first_seq = *seq.get(&producer).unwrap_or(&0);
        let s = Stamp {
            producer_id: producer,
            transactional: true,
            ..stamp(0, first_seq, n)
        };
        states.record(&s, Offset(offset), Offset(offset + i64::from(n) - 1), 1_000);
        open.entry(producer).or_insert(Offset(offset));
        seq.insert(producer, first_seq + n);
        offset += i64::from(n);
    }
    assert!(aborted_model.len() > 10, "{aborted_model:?}");
    for from in 0..offset {
        for to in from..offset {
            let mut expected: Vec<(i64, Offset)> = aborted_model
                .iter()
                .filter(|&&(_, first, marker)| first.0 <= to && marker.0 >= from)
                .map(|&(p, first, _)| (p, first))
                .collect();
            let mut got = states.aborted_between(Offset(from), Offset(to));
            expected.sort();
            got.sort();
            assert_eq!(got, expected, "{from}..={to}");
        }
    }
}
