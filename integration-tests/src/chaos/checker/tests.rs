//! "Show that the checker can fail": for each kind of anomaly a small hand-built history
//! holding exactly that anomaly, which the checker must report (and nothing else); a
//! clean history with retries, unknown and failed outcomes, seeks and rebalances that it
//! must pass; and the availability figures.

use super::*;
use crate::chaos::history::{CommittedOffset, FaultId, NemesisEvent};

const TOPIC: &str = "t";
const GROUP: &str = "g";

/// Builds a history op by op; each op is 1 ms after the previous one unless `at` says.
#[derive(Default)]
struct Build {
    ops: Vec<Op>,
    now_us: u64,
    next_attempt: u64,
    next_fault: u64,
}

fn group() -> ConsumerMode {
    ConsumerMode::Group {
        group: GROUP.to_owned(),
    }
}

impl Build {
    fn tick(&mut self) -> u64 {
        self.now_us += 1_000;
        self.now_us
    }

    /// The next op happens at `t_us`.
    fn at(&mut self, t_us: u64) -> &mut Build {
        self.now_us = t_us - 1_000;
        self
    }

    fn attempt(&mut self, value: &str, idempotent: bool, outcome: ProduceOutcome) -> &mut Build {
        let invoke_us = self.tick();
        let id = self.next_attempt;
        self.next_attempt += 1;
        self.ops.push(Op::Produce(ProduceAttempt {
            id: crate::chaos::history::AttemptId(id),
            producer: "p0".to_owned(),
            idempotent,
            topic: TOPIC.to_owned(),
            partition: None,
            value: value.to_owned(),
            invoke_us,
            complete_us: Some(invoke_us + 500),
            outcome,
        }));
        self
    }

    fn ok(&mut self, value: &str, partition: i32, offset: i64) -> &mut Build {
        self.attempt(value, true, ok(partition, offset))
    }

    fn unknown(&mut self, value: &str) -> &mut Build {
        let outcome = ProduceOutcome::Unknown {
            error: "no response within 5000 ms".to_owned(),
        };
        self.attempt(value, true, outcome)
    }

    fn failed(&mut self, value: &str) -> &mut Build {
        let outcome = ProduceOutcome::Failed {
            error: "record too large".to_owned(),
        };
        self.attempt(value, true, outcome)
    }

    fn poll(
        &mut self,
        consumer: &str,
        mode: ConsumerMode,
        records: &[(i32, i64, &str)],
    ) -> &mut Build {
        let time_us = self.tick();
        let records = records
            .iter()
            .map(|(p, o, v)| ReadRecord {
                topic: TOPIC.to_owned(),
                partition: PartitionId(*p),
                offset: Offset(*o),
                value: (*v).to_owned(),
            })
            .collect();
        self.ops.push(Op::Poll(Poll {
            consumer: consumer.to_owned(),
            mode,
            time_us,
            records,
        }));
        self
    }

    /// A poll by an assigned consumer.
    fn read(&mut self, consumer: &str, records: &[(i32, i64, &str)]) -> &mut Build {
        self.poll(consumer, ConsumerMode::Assign, records)
    }

    /// A poll by a member of `GROUP`.
    fn member_read(&mut self, consumer: &str, records: &[(i32, i64, &str)]) -> &mut Build {
        self.poll(consumer, group(), records)
    }

    fn seek(&mut self, consumer: &str, partition: i32, offset: i64) -> &mut Build {
        let time_us = self.tick();
        self.ops.push(Op::Seek(Seek {
            consumer: consumer.to_owned(),
            time_us,
            topic: TOPIC.to_owned(),
            partition: PartitionId(partition),
            offset: Some(Offset(offset)),
        }));
        self
    }

    /// A commit sent now and answered `duration_us` later.
    fn commit_taking(
        &mut self,
        consumer: &str,
        partition: i32,
        offset: i64,
        duration_us: u64,
        outcome: CommitOutcome,
    ) -> &mut Build {
        let invoke_us = self.tick();
        self.ops.push(Op::Commit(Commit {
            consumer: consumer.to_owned(),
            group: GROUP.to_owned(),
            invoke_us,
            complete_us: invoke_us + duration_us,
            offsets: vec![CommittedOffset {
                topic: TOPIC.to_owned(),
                partition: PartitionId(partition),
                offset: Offset(offset),
            }],
            outcome,
        }));
        self
    }

    fn commit(&mut self, consumer: &str, partition: i32, offset: i64) -> &mut Build {
        self.commit_taking(consumer, partition, offset, 500, CommitOutcome::Ok)
    }

    fn nemesis(&mut self, nemesis: Nemesis) {
        let time_us = self.tick();
        self.ops
            .push(Op::Nemesis(NemesisEvent { time_us, nemesis }));
    }

    fn fault(&mut self, what: &str) -> FaultId {
        let fault = FaultId(self.next_fault);
        self.next_fault += 1;
        let what = what.to_owned();
        self.nemesis(Nemesis::FaultStart { fault, what });
        fault
    }

    fn history(&self) -> History {
        History::new(self.ops.clone())
    }
}

fn ok(partition: i32, offset: i64) -> ProduceOutcome {
    ProduceOutcome::Ok {
        partition: PartitionId(partition),
        offset: Offset(offset),
    }
}

/// A config with these final log end offsets: (partition, offset).
fn log_ends(ends: &[(i32, i64)]) -> CheckConfig {
    CheckConfig {
        log_end_offsets: ends
            .iter()
            .map(|(p, o)| (PartitionKey::new(TOPIC, PartitionId(*p)), Offset(*o)))
            .collect(),
        ..CheckConfig::default()
    }
}

/// Checks `b`'s history and asserts that it holds exactly `expected` anomalies per kind.
fn check_expect(b: &Build, config: &CheckConfig, expected: &[(AnomalyKind, usize)]) -> Report {
    let report = check(&b.history(), config);
    let found: Vec<(AnomalyKind, usize)> = report
        .anomalies
        .iter()
        .map(|(k, list)| (*k, list.len()))
        .collect();
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(found, expected, "report:\n{report}");
    // Display shows every kind found, and does not panic on any evidence.
    let text = report.to_string();
    for (kind, _) in &expected {
        assert!(text.contains(kind.name()), "{kind} missing in:\n{text}");
    }
    report
}

#[test]
fn a_clean_history_with_retries_unknowns_seeks_and_rebalances_passes() {
    let mut b = Build::default();
    let kill = b.fault("SIGKILL node 1");
    b.ok("v0", 0, 0).ok("v1", 0, 1);
    // A timeout whose record was written anyway, one whose record was not, a retry
    // with a new value, and a record refused before it was sent.
    b.unknown("v2")
        .unknown("v3")
        .ok("v3-retry", 0, 3)
        .failed("v4");
    b.nemesis(Nemesis::FaultEnd { fault: kill });
    b.attempt("w0", false, ok(1, 0))
        .ok("w1", 1, 1)
        .ok("w2", 1, 2);
    b.fault("cut 1<->2");
    b.nemesis(Nemesis::HealAll);
    // An assigned consumer reads everything, seeks back and reads again.
    b.seek("a", 0, 0).read("a", &[(0, 0, "v0"), (0, 1, "v1")]);
    b.read("a", &[(0, 2, "v2"), (0, 3, "v3-retry")]);
    b.seek("a", 0, 1).read("a", &[(0, 1, "v1"), (0, 2, "v2")]);
    b.seek("a", 1, 0)
        .read("a", &[(1, 0, "w0"), (1, 1, "w1"), (1, 2, "w2")]);
    // Group members: m1 reads and commits, then m2 takes partition 0 over from the
    // commit, re-reading one record m1 read but did not commit.
    b.member_read("m1", &[(0, 0, "v0"), (0, 1, "v1"), (1, 0, "w0")]);
    b.commit("m1", 0, 1).commit("m1", 1, 1);
    b.member_read("m2", &[(0, 1, "v1"), (0, 2, "v2"), (0, 3, "v3-retry")]);
    b.commit("m2", 0, 4);
    b.member_read("m1", &[(1, 1, "w1"), (1, 2, "w2")])
        .commit("m1", 1, 3);
    let report = check_expect(&b, &log_ends(&[(0, 4), (1, 3)]), &[]);
    assert!(report.is_ok());
    assert!(report.unread.is_empty());
    let c = report.counts;
    assert_eq!((c.attempts, c.ok, c.failed, c.unknown), (9, 6, 1, 2));
    assert_eq!(
        (c.values_read, c.commits_ok, c.faults, c.heals),
        (7, 4, 2, 1)
    );
    assert!(report
        .to_string()
        .starts_with("chaos check ok: 0 anomalies"));
}

#[test]
fn an_acknowledged_write_nobody_read_while_others_read_past_it_is_lost() {
    let mut b = Build::default();
    b.ok("v0", 0, 0).ok("v1", 0, 1).read("a", &[(0, 1, "v1")]);
    let report = check_expect(&b, &CheckConfig::default(), &[(AnomalyKind::LostWrite, 1)]);
    let Anomaly::LostWrite { attempt, because } = &report.of_kind(AnomalyKind::LostWrite)[0] else {
        unreachable!()
    };
    assert_eq!(attempt.value, "v0");
    assert!(matches!(because, LostBecause::ReadAtOrPast(r) if r.record.offset == Offset(1)));
}

#[test]
fn an_acknowledged_write_beyond_the_final_log_end_is_lost() {
    let mut b = Build::default();
    b.ok("v0", 0, 0).ok("v1", 0, 1).read("a", &[(0, 0, "v0")]);
    let report = check_expect(&b, &log_ends(&[(0, 1)]), &[(AnomalyKind::LostWrite, 1)]);
    assert!(matches!(
        &report.of_kind(AnomalyKind::LostWrite)[0],
        Anomaly::LostWrite {
            because: LostBecause::BeyondLogEnd { log_end: Offset(1) },
            ..
        }
    ));
}

#[test]
fn an_acknowledged_write_below_the_log_end_that_nobody_reached_is_unread_not_lost() {
    let mut b = Build::default();
    b.ok("v0", 0, 0).ok("v1", 0, 1).read("a", &[(0, 0, "v0")]);
    let report = check_expect(&b, &log_ends(&[(0, 2)]), &[]);
    assert!(report.is_ok());
    assert_eq!(report.unread.len(), 1);
    assert_eq!(report.unread[0].value, "v1");
    assert!(report
        .to_string()
        .contains("unread: 1 acknowledged records"));
}

#[test]
fn unknown_outcomes_are_never_lost_and_may_be_read() {
    let mut b = Build::default();
    b.unknown("u0").ok("v1", 0, 1).unknown("u2").unknown("u3");
    // u0 was not written, u2 was (at 0), u3 was not; consumers read past all of them.
    b.seek("a", 0, 0).read("a", &[(0, 0, "u2"), (0, 1, "v1")]);
    let report = check_expect(&b, &log_ends(&[(0, 2)]), &[]);
    assert!(report.unread.is_empty());
}

#[test]
fn a_definitely_failed_write_that_was_read_is_reported() {
    let mut b = Build::default();
    b.failed("f0").read("a", &[(0, 0, "f0")]);
    check_expect(
        &b,
        &log_ends(&[(0, 1)]),
        &[(AnomalyKind::FailedWriteRead, 1)],
    );
}

#[test]
fn a_failed_attempt_retried_with_the_same_value_may_be_read() {
    let mut b = Build::default();
    b.failed("v0").unknown("v0").read("a", &[(0, 0, "v0")]);
    check_expect(&b, &log_ends(&[(0, 1)]), &[]);
}

#[test]
fn a_value_at_two_offsets_from_an_idempotent_producer_is_a_duplicate() {
    let mut b = Build::default();
    b.ok("v0", 0, 0).read("a", &[(0, 0, "v0"), (0, 1, "v0")]);
    let report = check_expect(&b, &log_ends(&[(0, 2)]), &[(AnomalyKind::Duplicate, 1)]);
    let Anomaly::Duplicate { reads, .. } = &report.of_kind(AnomalyKind::Duplicate)[0] else {
        unreachable!()
    };
    assert_eq!(reads.len(), 2);
}

#[test]
fn duplicates_not_covered_by_idempotence_are_their_own_kind_and_may_be_tolerated() {
    let mut b = Build::default();
    // A producer without idempotence, and a value the workload sent twice.
    b.attempt("v0", false, ok(0, 0))
        .unknown("v1")
        .ok("v1", 0, 2);
    b.read(
        "a",
        &[(0, 0, "v0"), (0, 1, "v1"), (0, 2, "v1"), (0, 3, "v0")],
    );
    let mut config = log_ends(&[(0, 4)]);
    let report = check_expect(&b, &config, &[(AnomalyKind::DuplicateUnprotected, 2)]);
    assert!(!report.is_ok());
    config.tolerated.insert(AnomalyKind::DuplicateUnprotected);
    let report = check(&b.history(), &config);
    assert!(report.is_ok());
    assert!(report.to_string().contains("tolerated"));
}

#[test]
fn two_values_read_at_one_offset_are_inconsistent() {
    let mut b = Build::default();
    b.unknown("u0").unknown("u1");
    b.read("a", &[(0, 0, "u0")]).read("b", &[(0, 0, "u1")]);
    check_expect(
        &b,
        &log_ends(&[(0, 1)]),
        &[(AnomalyKind::InconsistentOffset, 1)],
    );
}

#[test]
fn a_read_that_contradicts_an_acknowledgement_is_inconsistent_and_the_write_lost() {
    let mut b = Build::default();
    b.ok("v0", 0, 0).unknown("u1").read("a", &[(0, 0, "u1")]);
    let report = check_expect(
        &b,
        &log_ends(&[(0, 1)]),
        &[
            (AnomalyKind::InconsistentOffset, 1),
            (AnomalyKind::LostWrite, 1),
        ],
    );
    let Anomaly::InconsistentOffset { acked, reads, .. } =
        &report.of_kind(AnomalyKind::InconsistentOffset)[0]
    else {
        unreachable!()
    };
    assert_eq!((acked.len(), reads.len()), (1, 1));
}

#[test]
fn a_value_read_only_away_from_its_acknowledged_offset_is_reported() {
    let mut b = Build::default();
    b.ok("v0", 0, 5).read("a", &[(0, 6, "v0")]);
    check_expect(
        &b,
        &log_ends(&[(0, 7)]),
        &[(AnomalyKind::AckedOffsetChanged, 1)],
    );
}

#[test]
fn an_assigned_consumer_reading_backwards_without_a_seek_is_non_monotonic() {
    let mut b = Build::default();
    b.ok("v0", 0, 0).ok("v1", 0, 1);
    b.read("a", &[(0, 0, "v0"), (0, 1, "v1")])
        .read("a", &[(0, 1, "v1")]);
    check_expect(
        &b,
        &log_ends(&[(0, 2)]),
        &[(AnomalyKind::NonMonotonicPoll, 1)],
    );
}

#[test]
fn an_assigned_consumer_reading_below_its_seek_is_non_monotonic() {
    let mut b = Build::default();
    b.ok("v0", 0, 0).ok("v1", 0, 1);
    b.seek("a", 0, 1).read("a", &[(0, 0, "v0"), (0, 1, "v1")]);
    let report = check_expect(
        &b,
        &log_ends(&[(0, 2)]),
        &[(AnomalyKind::NonMonotonicPoll, 1)],
    );
    assert!(matches!(
        &report.of_kind(AnomalyKind::NonMonotonicPoll)[0],
        Anomaly::NonMonotonicPoll {
            previous: Position::Seek(_),
            ..
        }
    ));
}

#[test]
fn group_members_may_go_back_to_the_committed_offset() {
    let mut b = Build::default();
    b.ok("v0", 0, 0).ok("v1", 0, 1);
    b.member_read("m", &[(0, 0, "v0"), (0, 1, "v1")])
        .member_read("m", &[(0, 0, "v0")]);
    check_expect(&b, &log_ends(&[(0, 2)]), &[]);
}

#[test]
fn an_assigned_consumer_jumping_over_an_existing_offset_skips_it() {
    let mut b = Build::default();
    b.ok("v0", 0, 0).ok("v1", 0, 1).ok("v2", 0, 2);
    b.read("a", &[(0, 0, "v0")]).read("a", &[(0, 2, "v2")]);
    b.read("b", &[(0, 0, "v0"), (0, 1, "v1"), (0, 2, "v2")]);
    let report = check_expect(
        &b,
        &log_ends(&[(0, 3)]),
        &[(AnomalyKind::SkippedOffsets, 1)],
    );
    let Anomaly::SkippedOffsets { skipped, .. } = &report.of_kind(AnomalyKind::SkippedOffsets)[0]
    else {
        unreachable!()
    };
    assert_eq!(skipped, &[Offset(1)]);
}

#[test]
fn an_assigned_consumer_starting_past_its_seek_skips() {
    let mut b = Build::default();
    b.ok("v0", 0, 0).ok("v1", 0, 1);
    b.seek("a", 0, 0).read("a", &[(0, 1, "v1")]);
    b.read("b", &[(0, 0, "v0")]);
    check_expect(
        &b,
        &log_ends(&[(0, 2)]),
        &[(AnomalyKind::SkippedOffsets, 1)],
    );
}

#[test]
fn offsets_nobody_knows_of_are_not_skipped() {
    // Offset 1 was written by an unknown attempt nobody read: the checker cannot know
    // that it exists.
    let mut b = Build::default();
    b.ok("v0", 0, 0).unknown("u1").ok("v2", 0, 2);
    b.seek("a", 0, 0).read("a", &[(0, 0, "v0"), (0, 2, "v2")]);
    check_expect(&b, &log_ends(&[(0, 3)]), &[]);
}

#[test]
fn a_group_member_jumping_over_a_record_nobody_read_skips_it_and_loses_it() {
    let mut b = Build::default();
    b.ok("v0", 0, 0).ok("v1", 0, 1).ok("v2", 0, 2);
    b.member_read("m", &[(0, 0, "v0")])
        .member_read("m", &[(0, 2, "v2")]);
    check_expect(
        &b,
        &log_ends(&[(0, 3)]),
        &[
            (AnomalyKind::SkippedOffsets, 1),
            (AnomalyKind::LostWrite, 1),
        ],
    );
}

#[test]
fn a_group_member_starting_past_the_committed_offset_skips() {
    let mut b = Build::default();
    b.ok("v0", 0, 0).ok("v1", 0, 1).ok("v2", 0, 2);
    b.member_read("m1", &[(0, 0, "v0")]).commit("m1", 0, 1);
    b.member_read("m2", &[(0, 2, "v2")]);
    let report = check_expect(
        &b,
        &log_ends(&[(0, 3)]),
        &[
            (AnomalyKind::SkippedOffsets, 1),
            (AnomalyKind::LostWrite, 1),
        ],
    );
    assert!(matches!(
        &report.of_kind(AnomalyKind::SkippedOffsets)[0],
        Anomaly::SkippedOffsets {
            previous: Position::Committed {
                offset: Offset(1),
                commit: Some(_)
            },
            ..
        }
    ));
}

#[test]
fn a_group_member_starting_past_a_record_someone_read_is_not_a_skip() {
    // By definition: under a group only records nobody ever read count as skipped.
    let mut b = Build::default();
    b.ok("v0", 0, 0).ok("v1", 0, 1).ok("v2", 0, 2);
    b.member_read("m1", &[(0, 0, "v0"), (0, 1, "v1")])
        .commit("m1", 0, 1);
    b.member_read("m2", &[(0, 2, "v2")]);
    check_expect(&b, &log_ends(&[(0, 3)]), &[]);
}

#[test]
fn a_group_member_starting_past_offset_zero_without_a_commit_skips() {
    let mut b = Build::default();
    b.ok("v0", 0, 0).ok("v1", 0, 1);
    b.member_read("m", &[(0, 1, "v1")]);
    check_expect(
        &b,
        &log_ends(&[(0, 2)]),
        &[
            (AnomalyKind::SkippedOffsets, 1),
            (AnomalyKind::LostWrite, 1),
        ],
    );
}

#[test]
fn a_commit_below_an_earlier_completed_one_went_backwards() {
    let mut b = Build::default();
    b.commit("m1", 0, 5).commit("m2", 0, 3).commit("m2", 0, 7);
    let report = check_expect(
        &b,
        &CheckConfig::default(),
        &[(AnomalyKind::CommitWentBackwards, 1)],
    );
    let Anomaly::CommitWentBackwards {
        earlier_offset,
        later_offset,
        ..
    } = &report.of_kind(AnomalyKind::CommitWentBackwards)[0]
    else {
        unreachable!()
    };
    assert_eq!((*earlier_offset, *later_offset), (Offset(5), Offset(3)));
}

#[test]
fn overlapping_failed_and_other_partitions_commits_are_not_ordered() {
    let mut b = Build::default();
    // The first commit is answered after the second was sent: no order between them.
    b.commit_taking("m1", 0, 5, 10_000, CommitOutcome::Ok);
    b.commit("m2", 0, 3);
    let failed = CommitOutcome::Failed {
        error: "fenced".to_owned(),
    };
    b.commit("m1", 1, 9)
        .commit_taking("m2", 1, 4, 500, failed)
        .commit("m2", 1, 9);
    check_expect(&b, &CheckConfig::default(), &[]);
}

#[test]
fn a_value_nobody_sent_is_unexpected() {
    let mut b = Build::default();
    b.read("a", &[(0, 0, "ghost")]);
    check_expect(
        &b,
        &log_ends(&[(0, 1)]),
        &[(AnomalyKind::UnexpectedValue, 1)],
    );
}

#[test]
fn availability_counts_attempts_per_fault_window_and_second_and_recovery_after_heal() {
    let mut b = Build::default();
    b.at(100_000).ok("v0", 0, 0);
    let kill = b.at(1_000_000).fault("SIGKILL node 1");
    b.at(1_100_000).unknown("u1").at(1_200_000).unknown("u2");
    b.at(1_500_000).fault("cut 2<->3");
    b.at(1_600_000).ok("v3", 0, 1);
    b.at(2_000_000).nemesis(Nemesis::FaultEnd { fault: kill });
    b.at(2_100_000).unknown("u4");
    b.at(3_000_000).nemesis(Nemesis::HealAll);
    b.at(3_100_000).member_read("m", &[]);
    b.at(3_200_000)
        .member_read("m", &[(0, 0, "v0"), (0, 1, "v3")]);
    b.at(3_300_000).ok("v5", 0, 2);
    b.at(4_100_000).read("a", &[(0, 2, "v5")]);
    let report = check_expect(&b, &log_ends(&[(0, 3)]), &[]);
    let a = &report.availability;
    assert_eq!(a.overall, Rate { attempts: 6, ok: 3 });
    assert_eq!(a.during_faults, Rate { attempts: 4, ok: 1 });
    assert_eq!(a.outside_faults, Rate { attempts: 2, ok: 2 });
    assert_eq!(a.during_faults.fraction(), Some(0.25));
    let windows: Vec<_> = a
        .windows
        .iter()
        .map(|w| (w.what.as_str(), w.end_us, w.produces))
        .collect();
    assert_eq!(
        windows,
        [
            (
                "SIGKILL node 1",
                Some(2_000_000),
                Rate { attempts: 3, ok: 1 }
            ),
            ("cut 2<->3", Some(3_000_000), Rate { attempts: 2, ok: 1 }),
        ]
    );
    let seconds: Vec<_> = a
        .per_second
        .iter()
        .map(|s| (s.second, s.produces, s.faulted))
        .collect();
    assert_eq!(
        seconds,
        [
            (0, Rate { attempts: 1, ok: 1 }, false),
            (1, Rate { attempts: 3, ok: 1 }, true),
            (2, Rate { attempts: 1, ok: 0 }, true),
            (3, Rate { attempts: 1, ok: 1 }, false),
        ]
    );
    assert_eq!(a.unavailable_seconds_during_faults(), 1);
    assert_eq!(
        a.recoveries,
        [Recovery {
            heal_us: 3_000_000,
            first_produce_ok_after_us: Some(300_500),
            first_records_polled_after_us: Some(200_000),
        }]
    );
    let text = report.to_string();
    assert!(text.contains("25.0% (1/4) during faults"), "{text}");
    assert!(text.contains("first produce ok after 0.300500s"), "{text}");
}

#[test]
fn the_report_lists_counts_first_and_at_most_n_pieces_of_evidence_per_kind() {
    let mut b = Build::default();
    for i in 0..8 {
        b.read("a", &[(0, i, &format!("ghost-{i}"))]);
    }
    b.commit("m", 0, 5).commit("m", 0, 4);
    let config = CheckConfig {
        evidence_shown_per_kind: 3,
        ..CheckConfig::default()
    };
    let report = check_expect(
        &b,
        &config,
        &[
            (AnomalyKind::UnexpectedValue, 8),
            (AnomalyKind::CommitWentBackwards, 1),
        ],
    );
    let text = report.to_string();
    let first_line = text.lines().next().unwrap();
    assert_eq!(
        first_line,
        "chaos check FAILED: 9 anomalies (commit went backwards: 1; unexpected value: 8)"
    );
    assert_eq!(text.matches("never sent:").count(), 3, "{text}");
    assert!(text.contains("... and 5 more"), "{text}");
    assert!(text.contains("t/0 went from 5 back to 4"), "{text}");
}

#[test]
fn every_kind_at_once_is_reported_with_its_evidence() {
    let mut b = Build::default();
    // Partition 0: lost (v1), duplicate (v0 at 0 and 3), skip by "a" (over 2).
    b.ok("v0", 0, 0).ok("v1", 0, 1).ok("v2", 0, 2);
    b.read("a", &[(0, 0, "v0")])
        .read("a", &[(0, 2, "v2"), (0, 3, "v0")]);
    // Partition 1: a failed write read, two values at one offset, a backwards read, an
    // acknowledgement that moved, a duplicate without idempotence, a value nobody sent.
    b.failed("f0").unknown("u1").unknown("u2").ok("v3", 1, 3);
    b.attempt("n0", false, ok(1, 5));
    b.read("b", &[(1, 0, "f0"), (1, 1, "u1")]);
    b.read("c", &[(1, 1, "u2")]).read("c", &[(1, 0, "f0")]);
    b.read("d", &[(1, 4, "v3"), (1, 5, "n0"), (1, 6, "n0")]);
    b.read("e", &[(1, 7, "ghost")]);
    b.commit("m", 0, 3).commit("m", 0, 2);
    let report = check_expect(
        &b,
        &log_ends(&[(0, 4), (1, 8)]),
        &[
            (AnomalyKind::LostWrite, 1),
            (AnomalyKind::FailedWriteRead, 1),
            (AnomalyKind::Duplicate, 1),
            (AnomalyKind::DuplicateUnprotected, 1),
            (AnomalyKind::InconsistentOffset, 1),
            (AnomalyKind::AckedOffsetChanged, 1),
            (AnomalyKind::NonMonotonicPoll, 1),
            (AnomalyKind::SkippedOffsets, 1),
            (AnomalyKind::CommitWentBackwards, 1),
            (AnomalyKind::UnexpectedValue, 1),
        ],
    );
    println!("{report}");
}
