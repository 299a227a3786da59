//! The recorder from many threads, the outcome rules, and the JSON-lines round trip.

use std::collections::BTreeSet;
use std::thread;

use super::*;

fn invocation(producer: &str, value: &str) -> ProduceInvocation {
    ProduceInvocation {
        producer: producer.to_owned(),
        idempotent: true,
        topic: "t".to_owned(),
        partition: None,
        value: value.to_owned(),
    }
}

fn record(partition: i32, offset: i64, value: &str) -> ReadRecord {
    ReadRecord {
        topic: "t".to_owned(),
        partition: PartitionId(partition),
        offset: Offset(offset),
        value: value.to_owned(),
    }
}

/// A history with one op of every kind and every variant.
fn every_op() -> History {
    let recorder = Recorder::new();
    let ok = recorder.produce_invoked(invocation("p0", "v0"));
    let failed = recorder.produce_invoked(invocation("p0", "v1"));
    let _never_completed = recorder.produce_invoked(invocation("p1", "v2"));
    recorder.produce_completed(
        ok,
        ProduceOutcome::Ok {
            partition: PartitionId(1),
            offset: Offset(7),
        },
    );
    recorder.produce_completed(
        failed,
        ProduceOutcome::Failed {
            error: "record too large".to_owned(),
        },
    );
    let group = ConsumerMode::Group {
        group: "g".to_owned(),
    };
    recorder.poll_records("c0", &group, vec![record(1, 7, "v0")]);
    recorder.poll_records("c1", &ConsumerMode::Assign, vec![]);
    recorder.seek("c1", "t", PartitionId(1), Some(Offset(3)));
    recorder.seek("c1", "t", PartitionId(2), None);
    let fault = recorder.fault_start("SIGKILL node 2");
    let t = recorder.now_us();
    let offsets = vec![CommittedOffset {
        topic: "t".to_owned(),
        partition: PartitionId(1),
        offset: Offset(8),
    }];
    recorder.commit("c0", "g", t, offsets.clone(), CommitOutcome::Ok);
    let failed_commit = CommitOutcome::Failed {
        error: "coordinator moved".to_owned(),
    };
    recorder.commit("c0", "g", t, offsets, failed_commit);
    recorder.fault_end(fault);
    recorder.heal_all();
    recorder.history()
}

#[test]
fn the_recorder_completes_attempts_in_place_and_keeps_unfinished_ones_unknown() {
    let history = every_op();
    let attempts: Vec<&ProduceAttempt> = history
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Produce(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(attempts.len(), 3);
    assert_eq!(
        attempts.iter().map(|a| a.id).collect::<Vec<_>>(),
        [AttemptId(0), AttemptId(1), AttemptId(2)]
    );
    assert_eq!(
        attempts[0].acked(),
        Some((PartitionKey::new("t", PartitionId(1)), Offset(7)))
    );
    assert!(attempts[0].complete_us.unwrap() >= attempts[0].invoke_us);
    assert!(matches!(attempts[1].outcome, ProduceOutcome::Failed { .. }));
    assert_eq!(attempts[2].complete_us, None);
    assert!(matches!(
        attempts[2].outcome,
        ProduceOutcome::Unknown { .. }
    ));
}

#[test]
fn json_lines_round_trip_every_op() {
    let history = every_op();
    let text = history.to_json_lines();
    assert_eq!(text.lines().count(), history.ops.len());
    let back = History::from_json_lines(&text).unwrap();
    assert_eq!(back, history);
}

#[test]
fn json_lines_are_readable_and_errors_name_the_line() {
    let line = r#"{"op":"poll","consumer":"c0","mode":"group","group":"g","time_us":5,"records":[{"topic":"t","partition":0,"offset":3,"value":"v"}]}"#;
    let history = History::from_json_lines(&format!("\n{line}\n")).unwrap();
    assert_eq!(
        history.ops,
        [Op::Poll(Poll {
            consumer: "c0".to_owned(),
            mode: ConsumerMode::Group {
                group: "g".to_owned()
            },
            time_us: 5,
            records: vec![record(0, 3, "v")],
        })]
    );
    let err = History::from_json_lines(&format!("{line}\n{{\"op\":\"nope\"}}\n")).unwrap_err();
    assert_eq!(err.line, 2);
}

#[test]
fn the_recorder_takes_ops_from_many_threads_in_time_order() {
    let recorder = Recorder::new();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let recorder = recorder.clone();
            thread::spawn(move || {
                for i in 0..250 {
                    let handle = recorder.produce_invoked(invocation("p", &format!("{t}-{i}")));
                    recorder.produce_completed(
                        handle,
                        ProduceOutcome::Unknown {
                            error: "timeout".to_owned(),
                        },
                    );
                    recorder.poll_records("c", &ConsumerMode::Assign, vec![]);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let history = recorder.history();
    assert_eq!(history.ops.len(), 2000);
    let mut ids = BTreeSet::new();
    let mut last_time = 0;
    for op in &history.ops {
        let time = match op {
            Op::Produce(a) => {
                assert!(ids.insert(a.id), "attempt id {} twice", a.id);
                assert!(a.complete_us.is_some());
                a.invoke_us
            }
            Op::Poll(p) => p.time_us,
            other => panic!("unexpected op {other:?}"),
        };
        assert!(time >= last_time, "ops out of time order");
        last_time = time;
    }
}

#[test]
fn send_errors_are_failed_and_delivery_errors_unknown() {
    let error = ClientError::ProducerClosed;
    assert!(matches!(
        ProduceOutcome::from_send_error(&error),
        ProduceOutcome::Failed { .. }
    ));
    assert!(matches!(
        ProduceOutcome::from_delivery(&Err(ClientError::ProducerClosed)),
        ProduceOutcome::Unknown { .. }
    ));
    let meta = |offset| RecordMetadata {
        topic: "t".to_owned(),
        partition: PartitionId(2),
        offset,
        timestamp_ms: 0,
    };
    assert_eq!(
        ProduceOutcome::from_delivery(&Ok(meta(9))),
        ProduceOutcome::Ok {
            partition: PartitionId(2),
            offset: Offset(9)
        }
    );
    assert!(matches!(
        ProduceOutcome::from_delivery(&Ok(meta(-1))),
        ProduceOutcome::Unknown { .. }
    ));
}
