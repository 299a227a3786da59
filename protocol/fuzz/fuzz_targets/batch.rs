//! Fuzz target `batch`: arbitrary bytes as back-to-back record batches (what a consumer
//! reads from a fetch response) and as one batch handed to validation (what the broker does
//! per produce). Neither may panic; a batch that validates must decode its records without
//! panicking, and its records must stay inside the batch's offsets. A third pass fixes up
//! the length, magic and CRC first, because random bytes almost never carry a valid CRC and
//! the record decoder behind it would otherwise go unexplored.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_protocol::batch::{compute_crc, Batches, RecordBatch, HEADER_LEN, LOG_OVERHEAD};

fn exercise(batch: &RecordBatch) {
    let header = *batch.header();
    if let Ok(records) = batch.records() {
        for record in records.flatten() {
            assert!(record.offset >= header.base_offset);
            assert!(record.offset.0 <= header.base_offset.0.saturating_add(i64::from(i32::MAX)));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(batch) = RecordBatch::validate(bytes.clone()) {
        exercise(&batch);
    }
    for batch in Batches::new(bytes).flatten() {
        exercise(&batch);
    }
    if data.len() >= HEADER_LEN {
        let mut fixed = data.to_vec();
        let batch_length = (fixed.len() - LOG_OVERHEAD) as i32;
        fixed[8..12].copy_from_slice(&batch_length.to_be_bytes());
        fixed[16] = 2;
        let crc = compute_crc(&fixed);
        fixed[17..21].copy_from_slice(&crc.to_be_bytes());
        if let Ok(batch) = RecordBatch::validate(Bytes::from(fixed)) {
            exercise(&batch);
        }
    }
});
