//! The checker of a chaos run's [`History`], in the spirit of Jepsen's Kafka queue
//! checker: [`check`] reads the whole history and reports every anomaly it finds, each
//! with the operations that show it, plus availability figures.
//!
//! # Definitions
//!
//! A *position* is a (topic, partition, offset). An offset of a partition is *known to
//! exist* when some attempt was acknowledged there or some consumer read a record there.
//! A value is *read* when any poll of any consumer returned it. Unknown outcomes are never
//! evidence against the broker: an unknown attempt may have been written or not, and
//! either is fine.
//!
//! - **Lost write** ([`AnomalyKind::LostWrite`]): an attempt acknowledged at (p, o) whose
//!   value no consumer ever read anywhere, although either some consumer read p at an
//!   offset ≥ o (it went past the record, or found another value at o), or o is at or
//!   beyond p's final log end offset (read after healing, given in
//!   [`CheckConfig::log_end_offsets`]: the log no longer reaches the record). An
//!   acknowledged value that is not read and not provably lost (o below the final log end
//!   and nobody read that far) is *unread*: not an anomaly, but a sign that the final
//!   drain stopped early; the report lists those in [`Report::unread`].
//! - **Failed write was read** ([`AnomalyKind::FailedWriteRead`]): a value read although
//!   every attempt of it failed definitely (refused before it was sent).
//! - **Duplicate** ([`AnomalyKind::Duplicate`]): a value read at two or more different
//!   positions, its only attempt made by an idempotent producer: idempotence must prevent
//!   it. When the producer was not idempotent, or the workload sent the value more than
//!   once, the kind is [`AnomalyKind::DuplicateUnprotected`]: an at-least-once retry may
//!   cause it, and [`CheckConfig::tolerated`] may list it.
//! - **Inconsistent offset** ([`AnomalyKind::InconsistentOffset`]): two different values
//!   at one position, from any two of: the reads there, and the acknowledgements of
//!   attempts there.
//! - **Acknowledged offset changed** ([`AnomalyKind::AckedOffsetChanged`]): a value
//!   acknowledged at (p, o) and read, but never at (p, o): the record moved, or the
//!   acknowledgement lied.
//! - **Non-monotonic poll** ([`AnomalyKind::NonMonotonicPoll`]): under
//!   [`ConsumerMode::Assign`], a consumer read p at offset o after reading p at o' ≥ o
//!   with no seek of p in between, or read below the offset its last seek of p set (a
//!   seek with an unknown offset restarts the checks). Group members are not checked: a
//!   rebalance moves a member back to the group's committed offset.
//! - **Skipped offsets** ([`AnomalyKind::SkippedOffsets`]): a consumer's read of p at o
//!   from position s, where s is one past the consumer's previous read of p or the offset
//!   of its seek of p, whichever came later. Under [`ConsumerMode::Assign`]: offsets known
//!   to exist lie in [s, o). Under [`ConsumerMode::Group`]: offsets known to exist and
//!   read by nobody, ever, lie in [s, o); for a member's first read of p, s is the
//!   group's latest successful commit for p completed before the poll (0 without one: the
//!   workload must reset to the earliest offset). Offsets that exist and nobody read were
//!   acknowledged, so a group skip always comes with the lost writes it explains. (A
//!   member's read after a rebalance may legitimately jump past records another member
//!   read and committed; hence the "nobody, ever" under a group.)
//! - **Commit went backwards** ([`AnomalyKind::CommitWentBackwards`]): a successful commit
//!   of (group, p) at offset c, sent after another successful commit of (group, p)
//!   completed, whose offset is lower than that of the latest (by completion) such
//!   commit. Commits that overlap in time are not ordered, and failed commits are ignored.
//! - **Unexpected value** ([`AnomalyKind::UnexpectedValue`]): a value read that no attempt
//!   sent.
//!
//! # Availability
//!
//! A fault window lasts from a [`Nemesis::FaultStart`] to its [`Nemesis::FaultEnd`] or the
//! next [`Nemesis::HealAll`] (or the end of the history). A produce attempt counts in the
//! window, and in the second, in which it was sent; it succeeded when it was acknowledged.
//! The report gives the fraction of successful attempts overall, during faults (sent in
//! any window), outside them, per window and per second, and, after each heal-all, how
//! long until an attempt was acknowledged and until a poll returned records.
//!
//! # What the workload must record for the checks to bite
//!
//! Each consumer name is one task, whose polls and seeks are taken in time order. An
//! assigned consumer records a seek with its position after `assign` (else its first
//! read of each partition is unchecked); group members reset to the earliest offset.
//! After healing, consumers drain every partition to its log end offset, read then and
//! passed in [`CheckConfig::log_end_offsets`]; [`Report::unread`] is empty when the drain
//! was complete.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use sluice_protocol::{Offset, PartitionId};

use super::history::{
    fmt_us, Commit, CommitOutcome, ConsumerMode, History, Nemesis, Op, PartitionKey, Poll,
    ProduceAttempt, ProduceOutcome, ReadRecord, Seek,
};

/// What the checker must be told besides the history.
#[derive(Clone, Debug)]
pub struct CheckConfig {
    /// Each partition's log end offset, read after healing everything: an acknowledged
    /// offset at or beyond it was lost. A partition missing here is judged by the reads
    /// alone.
    pub log_end_offsets: BTreeMap<PartitionKey, Offset>,
    /// Kinds reported (counted, with evidence) without failing [`Report::is_ok`]: for
    /// example [`AnomalyKind::DuplicateUnprotected`] in a run with idempotence off.
    pub tolerated: BTreeSet<AnomalyKind>,
    /// How many anomalies of each kind the report's `Display` shows with their evidence.
    pub evidence_shown_per_kind: usize,
}

impl Default for CheckConfig {
    fn default() -> CheckConfig {
        CheckConfig {
            log_end_offsets: BTreeMap::new(),
            tolerated: BTreeSet::new(),
            evidence_shown_per_kind: 5,
        }
    }
}

/// The kinds of anomalies; see the module documentation for their definitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnomalyKind {
    /// Acknowledged, never read, and provably not just unread.
    LostWrite,
    /// Definitely failed, yet read.
    FailedWriteRead,
    /// Read at two positions although sent once by an idempotent producer.
    Duplicate,
    /// Read at two positions; not covered by idempotence.
    DuplicateUnprotected,
    /// Two values at one position.
    InconsistentOffset,
    /// Read, but never at its acknowledged position.
    AckedOffsetChanged,
    /// An assigned consumer read a partition backwards.
    NonMonotonicPoll,
    /// A consumer's reads jumped over records.
    SkippedOffsets,
    /// A group's committed offset went down.
    CommitWentBackwards,
    /// Read, never sent.
    UnexpectedValue,
}

impl AnomalyKind {
    /// Every kind, in the report's order.
    pub const ALL: [AnomalyKind; 10] = [
        AnomalyKind::LostWrite,
        AnomalyKind::FailedWriteRead,
        AnomalyKind::Duplicate,
        AnomalyKind::DuplicateUnprotected,
        AnomalyKind::InconsistentOffset,
        AnomalyKind::AckedOffsetChanged,
        AnomalyKind::NonMonotonicPoll,
        AnomalyKind::SkippedOffsets,
        AnomalyKind::CommitWentBackwards,
        AnomalyKind::UnexpectedValue,
    ];

    /// The kind's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::LostWrite => "lost write",
            AnomalyKind::FailedWriteRead => "failed write was read",
            AnomalyKind::Duplicate => "duplicate (idempotent producer)",
            AnomalyKind::DuplicateUnprotected => "duplicate (not covered by idempotence)",
            AnomalyKind::InconsistentOffset => "inconsistent offset",
            AnomalyKind::AckedOffsetChanged => "acknowledged offset changed",
            AnomalyKind::NonMonotonicPoll => "non-monotonic poll",
            AnomalyKind::SkippedOffsets => "skipped offsets",
            AnomalyKind::CommitWentBackwards => "commit went backwards",
            AnomalyKind::UnexpectedValue => "unexpected value",
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A record as one consumer read it: the evidence of a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadEvidence {
    /// The consumer.
    pub consumer: String,
    /// Its mode.
    pub mode: ConsumerMode,
    /// When the poll returned.
    pub poll_us: u64,
    /// The record.
    pub record: ReadRecord,
}

impl fmt::Display for ReadEvidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) read {:?} at {}/{} offset {} in a poll at {}",
            self.consumer,
            self.mode,
            self.record.value,
            self.record.topic,
            self.record.partition,
            self.record.offset,
            fmt_us(self.poll_us)
        )
    }
}

/// Why an acknowledged write is lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LostBecause {
    /// A consumer read the partition at or past the acknowledged offset (the read of the
    /// highest offset).
    ReadAtOrPast(ReadEvidence),
    /// The partition's final log end offset is at or below the acknowledged offset.
    BeyondLogEnd {
        /// The final log end offset.
        log_end: Offset,
    },
}

/// Where a consumer's position was before a read, for skips and non-monotonic polls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Position {
    /// Just after the consumer's previous read of the partition.
    AfterRead(ReadEvidence),
    /// Where a seek put it.
    Seek(Seek),
    /// A group member's first read of the partition: the group's committed offset then.
    Committed {
        /// The offset the member should have started at.
        offset: Offset,
        /// The commit that set it; `None` when there was none (offset 0).
        commit: Option<Commit>,
    },
}

impl Position {
    fn offset(&self) -> Option<Offset> {
        match self {
            Position::AfterRead(read) => Some(read.record.offset.plus(1)),
            Position::Seek(seek) => seek.offset,
            Position::Committed { offset, .. } => Some(*offset),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::AfterRead(read) => write!(f, "after: {read}"),
            Position::Seek(seek) => write!(f, "after: {seek}"),
            Position::Committed {
                offset,
                commit: Some(commit),
            } => write!(f, "starting at committed offset {offset}: {commit}"),
            Position::Committed {
                offset,
                commit: None,
            } => write!(f, "starting at offset {offset}: nothing committed"),
        }
    }
}

/// One anomaly and its evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// See [`AnomalyKind::LostWrite`].
    LostWrite {
        /// The acknowledged attempt.
        attempt: ProduceAttempt,
        /// Why it is lost rather than unread.
        because: LostBecause,
    },
    /// See [`AnomalyKind::FailedWriteRead`].
    FailedWriteRead {
        /// The value's attempts, all failed.
        attempts: Vec<ProduceAttempt>,
        /// Its first read at each position.
        reads: Vec<ReadEvidence>,
    },
    /// See [`AnomalyKind::Duplicate`] and [`AnomalyKind::DuplicateUnprotected`].
    Duplicate {
        /// Whether idempotence should have prevented it.
        idempotent: bool,
        /// The value's attempts.
        attempts: Vec<ProduceAttempt>,
        /// Its first read at each position.
        reads: Vec<ReadEvidence>,
    },
    /// See [`AnomalyKind::InconsistentOffset`].
    InconsistentOffset {
        /// The partition.
        partition: PartitionKey,
        /// The offset.
        offset: Offset,
        /// The attempts acknowledged there.
        acked: Vec<ProduceAttempt>,
        /// The first read there of each value.
        reads: Vec<ReadEvidence>,
    },
    /// See [`AnomalyKind::AckedOffsetChanged`].
    AckedOffsetChanged {
        /// The acknowledged attempt.
        attempt: ProduceAttempt,
        /// Its value's first read at each position.
        reads: Vec<ReadEvidence>,
    },
    /// See [`AnomalyKind::NonMonotonicPoll`].
    NonMonotonicPoll {
        /// Where the consumer was.
        previous: Position,
        /// The read at or below it.
        next: ReadEvidence,
    },
    /// See [`AnomalyKind::SkippedOffsets`].
    SkippedOffsets {
        /// Where the consumer was.
        previous: Position,
        /// The read past the skipped offsets.
        next: ReadEvidence,
        /// The offsets known to exist (under a group: and never read) it went past.
        skipped: Vec<Offset>,
    },
    /// See [`AnomalyKind::CommitWentBackwards`].
    CommitWentBackwards {
        /// The partition.
        partition: PartitionKey,
        /// The latest successful commit completed before `later` was sent.
        earlier: Commit,
        /// The commit with the lower offset.
        later: Commit,
        /// `earlier`'s offset for the partition.
        earlier_offset: Offset,
        /// `later`'s offset for the partition.
        later_offset: Offset,
    },
    /// See [`AnomalyKind::UnexpectedValue`].
    UnexpectedValue {
        /// The value's first read at each position.
        reads: Vec<ReadEvidence>,
    },
}

impl Anomaly {
    /// The anomaly's kind.
    pub fn kind(&self) -> AnomalyKind {
        match self {
            Anomaly::LostWrite { .. } => AnomalyKind::LostWrite,
            Anomaly::FailedWriteRead { .. } => AnomalyKind::FailedWriteRead,
            Anomaly::Duplicate {
                idempotent: true, ..
            } => AnomalyKind::Duplicate,
            Anomaly::Duplicate {
                idempotent: false, ..
            } => AnomalyKind::DuplicateUnprotected,
            Anomaly::InconsistentOffset { .. } => AnomalyKind::InconsistentOffset,
            Anomaly::AckedOffsetChanged { .. } => AnomalyKind::AckedOffsetChanged,
            Anomaly::NonMonotonicPoll { .. } => AnomalyKind::NonMonotonicPoll,
            Anomaly::SkippedOffsets { .. } => AnomalyKind::SkippedOffsets,
            Anomaly::CommitWentBackwards { .. } => AnomalyKind::CommitWentBackwards,
            Anomaly::UnexpectedValue { .. } => AnomalyKind::UnexpectedValue,
        }
    }
}

/// Writes `items` as evidence lines under an anomaly's summary.
fn evidence_lines<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    for item in items {
        write!(f, "\n      {item}")?;
    }
    Ok(())
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::LostWrite { attempt, because } => {
                write!(f, "{attempt} was never read")?;
                match because {
                    LostBecause::ReadAtOrPast(read) => write!(f, "\n      yet {read}"),
                    LostBecause::BeyondLogEnd { log_end } => {
                        write!(f, "\n      and the final log end offset is {log_end}")
                    }
                }
            }
            Anomaly::FailedWriteRead { attempts, reads }
            | Anomaly::Duplicate {
                attempts, reads, ..
            } => {
                let value = reads.first().map(|r| r.record.value.as_str());
                write!(f, "value {:?}:", value.unwrap_or(""))?;
                evidence_lines(f, attempts)?;
                evidence_lines(f, reads)
            }
            Anomaly::InconsistentOffset {
                partition,
                offset,
                acked,
                reads,
            } => {
                write!(f, "{partition} offset {offset} holds different values:")?;
                evidence_lines(f, acked)?;
                evidence_lines(f, reads)
            }
            Anomaly::AckedOffsetChanged { attempt, reads } => {
                write!(f, "{attempt}, but it was read elsewhere only:")?;
                evidence_lines(f, reads)
            }
            Anomaly::NonMonotonicPoll { previous, next } => {
                write!(f, "{next}\n      {previous}")
            }
            Anomaly::SkippedOffsets {
                previous,
                next,
                skipped,
            } => {
                write!(f, "{next}, skipping {}", fmt_offsets(skipped))?;
                write!(f, "\n      {previous}")
            }
            Anomaly::CommitWentBackwards {
                partition,
                earlier,
                later,
                earlier_offset,
                later_offset,
            } => {
                write!(
                    f,
                    "{partition} went from {earlier_offset} back to {later_offset}:"
                )?;
                evidence_lines(f, &[earlier, later])
            }
            Anomaly::UnexpectedValue { reads } => {
                write!(f, "never sent:")?;
                evidence_lines(f, reads)
            }
        }
    }
}

/// `3 offsets (5, 6, 9)`, at most 10 of them listed.
fn fmt_offsets(offsets: &[Offset]) -> String {
    const SHOWN: usize = 10;
    let mut listed: Vec<String> = offsets.iter().take(SHOWN).map(|o| o.to_string()).collect();
    if offsets.len() > SHOWN {
        listed.push("...".to_owned());
    }
    format!("{} offset(s) ({})", offsets.len(), listed.join(", "))
}

/// Attempts, and how many succeeded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rate {
    /// Produce attempts.
    pub attempts: u64,
    /// Of which acknowledged.
    pub ok: u64,
}

impl Rate {
    /// `ok / attempts`, or `None` without attempts.
    pub fn fraction(&self) -> Option<f64> {
        (self.attempts > 0).then(|| self.ok as f64 / self.attempts as f64)
    }

    fn add(&mut self, ok: bool) {
        self.attempts += 1;
        self.ok += u64::from(ok);
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.fraction() {
            Some(x) => write!(f, "{:.1}% ({}/{})", x * 100.0, self.ok, self.attempts),
            None => write!(f, "- (no attempts)"),
        }
    }
}

/// A fault's window and the produce attempts sent in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultWindow {
    /// The fault, as the nemesis described it.
    pub what: String,
    /// When it began.
    pub start_us: u64,
    /// When it ended; `None` when it never did.
    pub end_us: Option<u64>,
    /// The attempts sent in the window.
    pub produces: Rate,
}

/// One second of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecondRate {
    /// Seconds since time 0.
    pub second: u64,
    /// The attempts sent in it.
    pub produces: Rate,
    /// Whether a fault window overlaps it.
    pub faulted: bool,
}

/// How long the system took to serve again after a heal-all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// When everything was healed.
    pub heal_us: u64,
    /// Until the first acknowledgement after it; `None`: none came.
    pub first_produce_ok_after_us: Option<u64>,
    /// Until the first poll after it that returned records; `None`: none did.
    pub first_records_polled_after_us: Option<u64>,
}

/// Availability figures of the produce attempts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Availability {
    /// Every attempt.
    pub overall: Rate,
    /// Attempts sent while some fault was in place.
    pub during_faults: Rate,
    /// Attempts sent while none was.
    pub outside_faults: Rate,
    /// Per fault, in the order they began.
    pub windows: Vec<FaultWindow>,
    /// Per second with attempts, in order.
    pub per_second: Vec<SecondRate>,
    /// Per heal-all, in order.
    pub recoveries: Vec<Recovery>,
}

impl Availability {
    /// Seconds overlapping a fault in which attempts were sent and none succeeded.
    pub fn unavailable_seconds_during_faults(&self) -> usize {
        self.per_second
            .iter()
            .filter(|s| s.faulted && s.produces.attempts > 0 && s.produces.ok == 0)
            .count()
    }
}

/// How much the history holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Produce attempts.
    pub attempts: u64,
    /// Acknowledged ones.
    pub ok: u64,
    /// Definitely failed ones.
    pub failed: u64,
    /// Ones with an unknown outcome.
    pub unknown: u64,
    /// Polls recorded.
    pub polls: u64,
    /// Records those polls returned.
    pub records_read: u64,
    /// Distinct values read.
    pub values_read: u64,
    /// Seeks.
    pub seeks: u64,
    /// Successful commits.
    pub commits_ok: u64,
    /// Failed commits.
    pub commits_failed: u64,
    /// Faults started.
    pub faults: u64,
    /// Heal-alls.
    pub heals: u64,
}

/// What [`check`] found.
#[derive(Clone, Debug)]
pub struct Report {
    /// How much the history holds.
    pub counts: Counts,
    /// Every anomaly, by kind; kinds without any are absent.
    pub anomalies: BTreeMap<AnomalyKind, Vec<Anomaly>>,
    /// Acknowledged attempts neither read nor provably lost: the final drain stopped
    /// before them. Not anomalies, but the check says nothing about them.
    pub unread: Vec<ProduceAttempt>,
    /// Availability figures.
    pub availability: Availability,
    /// Kinds that do not fail [`Report::is_ok`] (from the config).
    pub tolerated: BTreeSet<AnomalyKind>,
    /// How many anomalies per kind `Display` shows.
    pub evidence_shown_per_kind: usize,
}

impl Report {
    /// No anomaly of a kind that is not tolerated.
    pub fn is_ok(&self) -> bool {
        self.anomalies
            .keys()
            .all(|kind| self.tolerated.contains(kind))
    }

    /// How many anomalies of `kind` were found.
    pub fn count(&self, kind: AnomalyKind) -> usize {
        self.anomalies.get(&kind).map_or(0, Vec::len)
    }

    /// The anomalies of `kind`.
    pub fn of_kind(&self, kind: AnomalyKind) -> &[Anomaly] {
        self.anomalies.get(&kind).map_or(&[], Vec::as_slice)
    }

    /// How many anomalies in all.
    pub fn total(&self) -> usize {
        self.anomalies.values().map(Vec::len).sum()
    }

    fn fmt_summary(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.is_ok() { "ok" } else { "FAILED" };
        write!(f, "chaos check {verdict}: {} anomalies", self.total())?;
        let counts: Vec<String> = self
            .anomalies
            .iter()
            .map(|(kind, list)| {
                let note = if self.tolerated.contains(kind) {
                    ", tolerated"
                } else {
                    ""
                };
                format!("{kind}: {}{note}", list.len())
            })
            .collect();
        if !counts.is_empty() {
            write!(f, " ({})", counts.join("; "))?;
        }
        let c = &self.counts;
        write!(
            f,
            "\nhistory: {} produce attempts ({} ok, {} failed, {} unknown); {} polls \
             returned {} records ({} distinct values); {} seeks; {} commits ok, {} failed; \
             {} faults, {} heal-alls",
            c.attempts,
            c.ok,
            c.failed,
            c.unknown,
            c.polls,
            c.records_read,
            c.values_read,
            c.seeks,
            c.commits_ok,
            c.commits_failed,
            c.faults,
            c.heals
        )?;
        if !self.unread.is_empty() {
            write!(
                f,
                "\nunread: {} acknowledged records neither read nor provably lost (the \
                 drain stopped early), first: {}",
                self.unread.len(),
                self.unread[0]
            )?;
        }
        Ok(())
    }

    fn fmt_availability(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.availability;
        write!(
            f,
            "\navailability: produces ok {} overall, {} during faults, {} outside faults; \
             {} faulted seconds without a successful produce",
            a.overall,
            a.during_faults,
            a.outside_faults,
            a.unavailable_seconds_during_faults()
        )?;
        for r in &a.recoveries {
            let after =
                |d: Option<u64>| d.map_or("never".to_owned(), |d| format!("after {}", fmt_us(d)));
            write!(
                f,
                "\nrecovery after the heal at {}: first produce ok {}, first records polled {}",
                fmt_us(r.heal_us),
                after(r.first_produce_ok_after_us),
                after(r.first_records_polled_after_us)
            )?;
        }
        for w in &a.windows {
            let end = w.end_us.map_or("the end".to_owned(), fmt_us);
            write!(
                f,
                "\nfault {} from {} to {end}: produces ok {}",
                w.what,
                fmt_us(w.start_us),
                w.produces
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_summary(f)?;
        self.fmt_availability(f)?;
        for (kind, list) in &self.anomalies {
            write!(f, "\n{kind} ({}):", list.len())?;
            for anomaly in list.iter().take(self.evidence_shown_per_kind) {
                write!(f, "\n  - {anomaly}")?;
            }
            if list.len() > self.evidence_shown_per_kind {
                let more = list.len() - self.evidence_shown_per_kind;
                write!(f, "\n  ... and {more} more")?;
            }
        }
        Ok(())
    }
}

/// Checks `history`: every anomaly with its evidence, and availability figures.
pub fn check(history: &History, config: &CheckConfig) -> Report {
    let index = Index::build(history);
    let mut anomalies = Vec::new();
    let mut unread = Vec::new();
    check_values(&index, config, &mut anomalies, &mut unread);
    check_offsets(&index, &mut anomalies);
    check_consumers(&index, &mut anomalies);
    check_commits(&index, &mut anomalies);
    let mut by_kind: BTreeMap<AnomalyKind, Vec<Anomaly>> = BTreeMap::new();
    for anomaly in anomalies {
        by_kind.entry(anomaly.kind()).or_default().push(anomaly);
    }
    Report {
        counts: index.counts(),
        anomalies: by_kind,
        unread,
        availability: availability(&index),
        tolerated: config.tolerated.clone(),
        evidence_shown_per_kind: config.evidence_shown_per_kind,
    }
}

/// A partition, borrowed from the history.
type Pk<'a> = (&'a str, PartitionId);

fn pk_owned(pk: Pk<'_>) -> PartitionKey {
    PartitionKey::new(pk.0, pk.1)
}

/// One record one poll returned.
#[derive(Clone, Copy)]
struct Read<'a> {
    poll: &'a Poll,
    record: &'a ReadRecord,
}

impl<'a> Read<'a> {
    fn pk(&self) -> Pk<'a> {
        (self.record.topic.as_str(), self.record.partition)
    }

    fn evidence(&self) -> ReadEvidence {
        ReadEvidence {
            consumer: self.poll.consumer.clone(),
            mode: self.poll.mode.clone(),
            poll_us: self.poll.time_us,
            record: self.record.clone(),
        }
    }
}

/// What the history says about one position.
#[derive(Default)]
struct AtOffset<'a> {
    /// The attempts acknowledged here.
    acked: Vec<&'a ProduceAttempt>,
    /// The first read here of each distinct value, in history order.
    reads: Vec<Read<'a>>,
}

/// The history's ops sorted into the shapes the checks need.
struct Index<'a> {
    attempts: Vec<&'a ProduceAttempt>,
    /// Polls and seeks per consumer, in time order (history order for equal times).
    consumers: BTreeMap<&'a str, Vec<ConsumerOp<'a>>>,
    /// Every read, per value, in time order.
    reads_by_value: HashMap<&'a str, Vec<Read<'a>>>,
    attempts_by_value: HashMap<&'a str, Vec<&'a ProduceAttempt>>,
    /// Every known position, per partition.
    offsets: BTreeMap<Pk<'a>, BTreeMap<Offset, AtOffset<'a>>>,
    /// Per partition, the read of the highest offset.
    highest_read: HashMap<Pk<'a>, Read<'a>>,
    commits: Vec<&'a Commit>,
    nemesis: Vec<(u64, &'a Nemesis)>,
    polls: Vec<&'a Poll>,
    seeks: u64,
}

/// A consumer's op.
#[derive(Clone, Copy)]
enum ConsumerOp<'a> {
    Poll(&'a Poll),
    Seek(&'a Seek),
}

impl ConsumerOp<'_> {
    fn time_us(&self) -> u64 {
        match self {
            ConsumerOp::Poll(p) => p.time_us,
            ConsumerOp::Seek(s) => s.time_us,
        }
    }
}

impl<'a> Index<'a> {
    fn build(history: &'a History) -> Index<'a> {
        let mut index = Index {
            attempts: Vec::new(),
            consumers: BTreeMap::new(),
            reads_by_value: HashMap::new(),
            attempts_by_value: HashMap::new(),
            offsets: BTreeMap::new(),
            highest_read: HashMap::new(),
            commits: Vec::new(),
            nemesis: Vec::new(),
            polls: Vec::new(),
            seeks: 0,
        };
        for op in &history.ops {
            match op {
                Op::Produce(a) => index.add_attempt(a),
                Op::Poll(p) => {
                    index.polls.push(p);
                    let ops = index.consumers.entry(p.consumer.as_str()).or_default();
                    ops.push(ConsumerOp::Poll(p));
                }
                Op::Seek(s) => {
                    index.seeks += 1;
                    let ops = index.consumers.entry(s.consumer.as_str()).or_default();
                    ops.push(ConsumerOp::Seek(s));
                }
                Op::Commit(c) => index.commits.push(c),
                Op::Nemesis(n) => index.nemesis.push((n.time_us, &n.nemesis)),
            }
        }
        // Stable sorts: equal times keep the history's order.
        index.polls.sort_by_key(|p| p.time_us);
        index.nemesis.sort_by_key(|(t, _)| *t);
        for ops in index.consumers.values_mut() {
            ops.sort_by_key(ConsumerOp::time_us);
        }
        let polls = index.polls.clone();
        for poll in polls {
            for record in &poll.records {
                index.add_read(Read { poll, record });
            }
        }
        index
    }

    fn add_attempt(&mut self, attempt: &'a ProduceAttempt) {
        self.attempts.push(attempt);
        let by_value = self.attempts_by_value.entry(attempt.value.as_str());
        by_value.or_default().push(attempt);
        if let ProduceOutcome::Ok { partition, offset } = attempt.outcome {
            let pk = (attempt.topic.as_str(), partition);
            let at = self
                .offsets
                .entry(pk)
                .or_default()
                .entry(offset)
                .or_default();
            at.acked.push(attempt);
        }
    }

    fn add_read(&mut self, read: Read<'a>) {
        let pk = read.pk();
        let value = read.record.value.as_str();
        self.reads_by_value.entry(value).or_default().push(read);
        let at = self
            .offsets
            .entry(pk)
            .or_default()
            .entry(read.record.offset)
            .or_default();
        if !at.reads.iter().any(|r| r.record.value == value) {
            at.reads.push(read);
        }
        let highest = self.highest_read.entry(pk).or_insert(read);
        if read.record.offset > highest.record.offset {
            *highest = read;
        }
    }

    fn counts(&self) -> Counts {
        let mut counts = Counts {
            attempts: self.attempts.len() as u64,
            polls: self.polls.len() as u64,
            records_read: self.polls.iter().map(|p| p.records.len() as u64).sum(),
            values_read: self.reads_by_value.len() as u64,
            seeks: self.seeks,
            ..Counts::default()
        };
        for a in &self.attempts {
            match a.outcome {
                ProduceOutcome::Ok { .. } => counts.ok += 1,
                ProduceOutcome::Failed { .. } => counts.failed += 1,
                ProduceOutcome::Unknown { .. } => counts.unknown += 1,
            }
        }
        for c in &self.commits {
            match c.outcome {
                CommitOutcome::Ok => counts.commits_ok += 1,
                CommitOutcome::Failed { .. } => counts.commits_failed += 1,
            }
        }
        for (_, n) in &self.nemesis {
            match n {
                Nemesis::FaultStart { .. } => counts.faults += 1,
                Nemesis::HealAll => counts.heals += 1,
                Nemesis::FaultEnd { .. } => {}
            }
        }
        counts
    }

    /// Offsets of `pk` known to exist in `range`.
    fn known_in(
        &self,
        pk: Pk<'a>,
        range: std::ops::Range<Offset>,
        unread_only: bool,
    ) -> Vec<Offset> {
        let Some(offsets) = self.offsets.get(&pk) else {
            return Vec::new();
        };
        if range.start >= range.end {
            return Vec::new();
        }
        offsets
            .range(range)
            .filter(|(_, at)| !unread_only || at.reads.is_empty())
            .map(|(o, _)| *o)
            .collect()
    }
}

/// The checks per value: lost, failed but read, duplicate, acknowledged offset changed,
/// unexpected; and the unread acknowledged values.
fn check_values(
    index: &Index<'_>,
    config: &CheckConfig,
    out: &mut Vec<Anomaly>,
    unread: &mut Vec<ProduceAttempt>,
) {
    let mut values: Vec<&str> = index
        .attempts_by_value
        .keys()
        .chain(index.reads_by_value.keys())
        .copied()
        .collect();
    values.sort_unstable();
    values.dedup();
    for value in values {
        let attempts = index
            .attempts_by_value
            .get(value)
            .map_or(&[][..], Vec::as_slice);
        let reads = index
            .reads_by_value
            .get(value)
            .map_or(&[][..], Vec::as_slice);
        check_value(index, config, attempts, reads, out, unread);
    }
}

fn check_value(
    index: &Index<'_>,
    config: &CheckConfig,
    attempts: &[&ProduceAttempt],
    reads: &[Read<'_>],
    out: &mut Vec<Anomaly>,
    unread: &mut Vec<ProduceAttempt>,
) {
    // The first read of the value at each position, in position order.
    let mut positions: BTreeMap<(Pk<'_>, Offset), Read<'_>> = BTreeMap::new();
    for read in reads {
        positions
            .entry((read.pk(), read.record.offset))
            .or_insert(*read);
    }
    let evidence: Vec<ReadEvidence> = positions.values().map(Read::evidence).collect();
    let owned = || attempts.iter().map(|a| (*a).clone()).collect::<Vec<_>>();
    if attempts.is_empty() {
        out.push(Anomaly::UnexpectedValue { reads: evidence });
        return;
    }
    let all_failed = attempts
        .iter()
        .all(|a| matches!(a.outcome, ProduceOutcome::Failed { .. }));
    if !reads.is_empty() && all_failed {
        out.push(Anomaly::FailedWriteRead {
            attempts: owned(),
            reads: evidence.clone(),
        });
    }
    if positions.len() >= 2 {
        out.push(Anomaly::Duplicate {
            idempotent: attempts.len() == 1 && attempts[0].idempotent,
            attempts: owned(),
            reads: evidence.clone(),
        });
    }
    for attempt in attempts {
        let ProduceOutcome::Ok { partition, offset } = attempt.outcome else {
            continue;
        };
        let pk = (attempt.topic.as_str(), partition);
        if reads.is_empty() {
            match lost_because(index, config, pk, offset) {
                Some(because) => out.push(Anomaly::LostWrite {
                    attempt: (*attempt).clone(),
                    because,
                }),
                None => unread.push((*attempt).clone()),
            }
        } else if !positions.contains_key(&(pk, offset)) {
            out.push(Anomaly::AckedOffsetChanged {
                attempt: (*attempt).clone(),
                reads: evidence.clone(),
            });
        }
    }
}

/// Why a write acknowledged at `offset` of `pk` and never read is lost, or `None` when
/// it may just be unread.
fn lost_because(
    index: &Index<'_>,
    config: &CheckConfig,
    pk: Pk<'_>,
    offset: Offset,
) -> Option<LostBecause> {
    if let Some(read) = index.highest_read.get(&pk) {
        if read.record.offset >= offset {
            return Some(LostBecause::ReadAtOrPast(read.evidence()));
        }
    }
    let log_end = *config.log_end_offsets.get(&pk_owned(pk))?;
    (offset >= log_end).then_some(LostBecause::BeyondLogEnd { log_end })
}

/// Two values at one position.
fn check_offsets(index: &Index<'_>, out: &mut Vec<Anomaly>) {
    for (pk, offsets) in &index.offsets {
        for (offset, at) in offsets {
            let values: BTreeSet<&str> = at
                .acked
                .iter()
                .map(|a| a.value.as_str())
                .chain(at.reads.iter().map(|r| r.record.value.as_str()))
                .collect();
            if values.len() >= 2 {
                out.push(Anomaly::InconsistentOffset {
                    partition: pk_owned(*pk),
                    offset: *offset,
                    acked: at.acked.iter().map(|a| (*a).clone()).collect(),
                    reads: at.reads.iter().map(Read::evidence).collect(),
                });
            }
        }
    }
}

/// Each consumer's reads in order: non-monotonic polls and skipped offsets.
fn check_consumers(index: &Index<'_>, out: &mut Vec<Anomaly>) {
    let commits = CommitLog::build(index);
    for ops in index.consumers.values() {
        // Per partition, where the consumer is: the last read or seek.
        let mut positions: HashMap<Pk<'_>, Position> = HashMap::new();
        for op in ops {
            match op {
                ConsumerOp::Seek(seek) => {
                    let pk = (seek.topic.as_str(), seek.partition);
                    positions.insert(pk, Position::Seek((*seek).clone()));
                }
                ConsumerOp::Poll(poll) => {
                    for record in &poll.records {
                        let read = Read { poll, record };
                        let previous = positions.remove(&read.pk());
                        let anomaly = match &poll.mode {
                            ConsumerMode::Assign => check_assigned_read(index, previous, read),
                            ConsumerMode::Group { group } => {
                                check_member_read(index, &commits, group, previous, read)
                            }
                        };
                        out.extend(anomaly);
                        positions.insert(read.pk(), Position::AfterRead(read.evidence()));
                    }
                }
            }
        }
    }
}

/// An assigned consumer's read after `previous`: at or below it is non-monotonic, past
/// offsets known to exist is a skip.
fn check_assigned_read(
    index: &Index<'_>,
    previous: Option<Position>,
    read: Read<'_>,
) -> Option<Anomaly> {
    let previous = previous?;
    let expected = previous.offset()?;
    let offset = read.record.offset;
    if offset < expected {
        return Some(Anomaly::NonMonotonicPoll {
            previous,
            next: read.evidence(),
        });
    }
    let skipped = index.known_in(read.pk(), expected..offset, false);
    (!skipped.is_empty()).then(|| Anomaly::SkippedOffsets {
        previous,
        next: read.evidence(),
        skipped,
    })
}

/// A group member's read after `previous` (or, on its first read of the partition, the
/// group's committed offset): past offsets that exist and nobody read is a skip.
fn check_member_read(
    index: &Index<'_>,
    commits: &CommitLog<'_>,
    group: &str,
    previous: Option<Position>,
    read: Read<'_>,
) -> Option<Anomaly> {
    let previous = previous.unwrap_or_else(|| {
        let commit = commits.latest_before(group, read.pk(), read.poll.time_us);
        Position::Committed {
            offset: commit.map_or(Offset(0), |(offset, _)| offset),
            commit: commit.map(|(_, c)| c.clone()),
        }
    });
    let expected = previous.offset()?;
    let skipped = index.known_in(read.pk(), expected..read.record.offset, true);
    (!skipped.is_empty()).then(|| Anomaly::SkippedOffsets {
        previous,
        next: read.evidence(),
        skipped,
    })
}

/// One partition's offset in one successful commit.
#[derive(Clone, Copy)]
struct Committed<'a> {
    offset: Offset,
    commit: &'a Commit,
}

/// Successful commits per (group, partition), in order of completion.
struct CommitLog<'a> {
    by_partition: HashMap<(&'a str, Pk<'a>), Vec<Committed<'a>>>,
}

impl<'a> CommitLog<'a> {
    fn build(index: &Index<'a>) -> CommitLog<'a> {
        let mut by_partition: HashMap<(&str, Pk<'_>), Vec<Committed<'_>>> = HashMap::new();
        for commit in &index.commits {
            if commit.outcome != CommitOutcome::Ok {
                continue;
            }
            for c in &commit.offsets {
                let key = (commit.group.as_str(), (c.topic.as_str(), c.partition));
                by_partition.entry(key).or_default().push(Committed {
                    offset: c.offset,
                    commit,
                });
            }
        }
        for list in by_partition.values_mut() {
            list.sort_by_key(|c| c.commit.complete_us);
        }
        CommitLog { by_partition }
    }

    /// The latest successful commit of `pk` by `group` completed strictly before `t_us`.
    fn latest_before(&self, group: &str, pk: Pk<'_>, t_us: u64) -> Option<(Offset, &'a Commit)> {
        let list = self.by_partition.get(&(group, pk))?;
        let n = list.partition_point(|c| c.commit.complete_us < t_us);
        let latest = list.get(n.checked_sub(1)?)?;
        Some((latest.offset, latest.commit))
    }
}

/// Each successful commit against the latest one completed before it was sent.
fn check_commits(index: &Index<'_>, out: &mut Vec<Anomaly>) {
    let log = CommitLog::build(index);
    let mut keys: Vec<_> = log.by_partition.keys().copied().collect();
    keys.sort_unstable();
    for (group, pk) in keys {
        for later in &log.by_partition[&(group, pk)] {
            let Some((earlier_offset, earlier)) =
                log.latest_before(group, pk, later.commit.invoke_us)
            else {
                continue;
            };
            if later.offset < earlier_offset {
                out.push(Anomaly::CommitWentBackwards {
                    partition: pk_owned(pk),
                    earlier: earlier.clone(),
                    later: later.commit.clone(),
                    earlier_offset,
                    later_offset: later.offset,
                });
            }
        }
    }
}

/// The fault windows of the history, in the order they began.
fn fault_windows(index: &Index<'_>) -> Vec<FaultWindow> {
    let mut windows: Vec<FaultWindow> = Vec::new();
    // Open windows: fault id -> index in `windows`.
    let mut open = BTreeMap::new();
    for (t, nemesis) in &index.nemesis {
        match nemesis {
            Nemesis::FaultStart { fault, what } => {
                open.insert(*fault, windows.len());
                windows.push(FaultWindow {
                    what: what.clone(),
                    start_us: *t,
                    end_us: None,
                    produces: Rate::default(),
                });
            }
            Nemesis::FaultEnd { fault } => {
                if let Some(i) = open.remove(fault) {
                    windows[i].end_us = Some(*t);
                }
            }
            Nemesis::HealAll => {
                for (_, i) in std::mem::take(&mut open) {
                    windows[i].end_us = Some(*t);
                }
            }
        }
    }
    windows
}

fn availability(index: &Index<'_>) -> Availability {
    let mut windows = fault_windows(index);
    let in_window = |w: &FaultWindow, t: u64| w.start_us <= t && w.end_us.is_none_or(|e| t < e);
    let mut a = Availability::default();
    let mut seconds: BTreeMap<u64, Rate> = BTreeMap::new();
    for attempt in &index.attempts {
        let ok = matches!(attempt.outcome, ProduceOutcome::Ok { .. });
        let t = attempt.invoke_us;
        a.overall.add(ok);
        seconds.entry(t / 1_000_000).or_default().add(ok);
        let mut faulted = false;
        for w in windows.iter_mut().filter(|w| in_window(w, t)) {
            w.produces.add(ok);
            faulted = true;
        }
        if faulted {
            a.during_faults.add(ok);
        } else {
            a.outside_faults.add(ok);
        }
    }
    a.per_second = seconds
        .into_iter()
        .map(|(second, produces)| {
            let (start, end) = (second * 1_000_000, (second + 1) * 1_000_000);
            let faulted = windows
                .iter()
                .any(|w| w.start_us < end && w.end_us.is_none_or(|e| e > start));
            SecondRate {
                second,
                produces,
                faulted,
            }
        })
        .collect();
    a.recoveries = recoveries(index);
    a.windows = windows;
    a
}

/// After each heal-all: until the first acknowledgement and the first records polled.
fn recoveries(index: &Index<'_>) -> Vec<Recovery> {
    let heals = index
        .nemesis
        .iter()
        .filter(|(_, n)| matches!(n, Nemesis::HealAll))
        .map(|(t, _)| *t);
    heals
        .map(|heal_us| {
            let first_ok = index
                .attempts
                .iter()
                .filter(|a| matches!(a.outcome, ProduceOutcome::Ok { .. }))
                .filter_map(|a| a.complete_us)
                .filter(|t| *t >= heal_us)
                .min();
            let first_polled = index
                .polls
                .iter()
                .filter(|p| !p.records.is_empty() && p.time_us >= heal_us)
                .map(|p| p.time_us)
                .min();
            Recovery {
                heal_us,
                first_produce_ok_after_us: first_ok.map(|t| t - heal_us),
                first_records_polled_after_us: first_polled.map(|t| t - heal_us),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
